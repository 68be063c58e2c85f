//! Progress on stderr: the pull progress bar `grove create` shows for
//! docker:// images (redrawn in place on a terminal, one summary line
//! otherwise), and the byte meter of `grove stream-in` / `stream-out`
//! (on a terminal only, once a stream has run for a while).

use grove_client::api::pull_progress;
use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

const WIDTH: u64 = 30;

pub struct Bar {
    tty: bool,
    /// Last (done, total) reported, for the summary line.
    last: Cell<(u64, u64)>,
}

impl Bar {
    pub fn new() -> Bar {
        Bar {
            tty: std::io::stderr().is_terminal(),
            last: Cell::new((0, 0)),
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// One rendering of the bar, e.g. "pulling [######        ] 12.0/30.5 MiB".
pub fn render(done: u64, total: u64) -> String {
    // Nothing to pull (total 0) counts as complete.
    let filled = (done.min(total) * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH);
    format!(
        "pulling [{}{}] {:.1}/{:.1} MiB",
        "#".repeat(filled as usize),
        " ".repeat((WIDTH - filled) as usize),
        mib(done),
        mib(total)
    )
}

impl pull_progress::Server for Bar {
    async fn update(
        self: Rc<Self>,
        params: pull_progress::UpdateParams,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let (done, total) = (params.get_bytes_done(), params.get_bytes_total());
        self.last.set((done, total));
        let mut err = std::io::stderr();
        if self.tty {
            let _ = write!(err, "\r{}", render(done, total));
            if total > 0 && done >= total {
                let _ = writeln!(err);
            }
        } else if total > 0 && done >= total {
            let _ = writeln!(err, "pulled {:.1} MiB", mib(total));
        }
        let _ = err.flush();
        Ok(())
    }
}

/// A stream shorter than this draws no meter.
const METER_DELAY: Duration = Duration::from_millis(500);
/// The meter is redrawn at most this often.
const METER_EVERY: Duration = Duration::from_millis(100);

/// Counts the bytes of a stream and, when stderr is a terminal and the
/// stream lasts, draws "LABEL [###   ] 12.0/30.5 MiB  4.2 MiB/s" (or
/// "LABEL 12.0 MiB  4.2 MiB/s" when the size is unknown) in place.
pub struct Meter {
    label: &'static str,
    total: Option<u64>,
    tty: bool,
    start: Instant,
    bytes: Cell<u64>,
    drawn: Cell<Option<Instant>>,
}

impl Meter {
    pub fn new(label: &'static str, total: Option<u64>) -> Meter {
        Meter {
            label,
            total,
            tty: std::io::stderr().is_terminal(),
            start: Instant::now(),
            bytes: Cell::new(0),
            drawn: Cell::new(None),
        }
    }

    pub fn add(&self, n: usize) {
        self.bytes.set(self.bytes.get() + n as u64);
        if !self.tty {
            return;
        }
        let now = Instant::now();
        let due = match self.drawn.get() {
            None => now.duration_since(self.start) >= METER_DELAY,
            Some(last) => now.duration_since(last) >= METER_EVERY,
        };
        if due {
            self.draw(now);
        }
    }

    /// The last drawing, ended by a newline (when anything was drawn).
    pub fn finish(&self) {
        if self.drawn.get().is_some() {
            self.draw(Instant::now());
            let _ = writeln!(std::io::stderr());
        }
    }

    fn draw(&self, now: Instant) {
        self.drawn.set(Some(now));
        let line = render_stream(
            self.label,
            self.bytes.get(),
            self.total,
            now.duration_since(self.start),
        );
        let mut err = std::io::stderr();
        // \x1b[K: clear what a longer earlier drawing left.
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
    }
}

/// One rendering of a stream's meter.
pub fn render_stream(label: &str, bytes: u64, total: Option<u64>, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        mib(bytes) / seconds
    } else {
        0.0
    };
    match total {
        Some(total) if total > 0 => {
            let filled = (bytes.min(total) * WIDTH) / total;
            format!(
                "{label} [{}{}] {:.1}/{:.1} MiB  {rate:.1} MiB/s",
                "#".repeat(filled as usize),
                " ".repeat((WIDTH - filled) as usize),
                mib(bytes),
                mib(total)
            )
        }
        _ => format!("{label} {:.1} MiB  {rate:.1} MiB/s", mib(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::{render, render_stream};
    use std::time::Duration;

    #[test]
    fn the_stream_meter_shows_bytes_and_rate() {
        assert_eq!(
            render_stream("streaming out", 10 << 20, None, Duration::from_secs(2)),
            "streaming out 10.0 MiB  5.0 MiB/s"
        );
        assert_eq!(
            render_stream(
                "streaming in",
                15 << 20,
                Some(30 << 20),
                Duration::from_secs(3)
            ),
            format!(
                "streaming in [{}{}] 15.0/30.0 MiB  5.0 MiB/s",
                "#".repeat(15),
                " ".repeat(15)
            )
        );
        assert_eq!(
            render_stream("streaming in", 0, Some(0), Duration::ZERO),
            "streaming in 0.0 MiB  0.0 MiB/s"
        );
    }

    #[test]
    fn the_bar_fills_with_the_bytes() {
        assert_eq!(
            render(0, 100 << 20),
            format!("pulling [{}] 0.0/100.0 MiB", " ".repeat(30))
        );
        assert_eq!(
            render(50 << 20, 100 << 20),
            format!(
                "pulling [{}{}] 50.0/100.0 MiB",
                "#".repeat(15),
                " ".repeat(15)
            )
        );
        assert!(render(100 << 20, 100 << 20).starts_with(&format!("pulling [{}]", "#".repeat(30))));
    }
}
