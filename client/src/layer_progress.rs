//! `grove image pull`'s progress on stderr: on a terminal one line per
//! blob (each layer and the config), redrawn in place —
//!
//! ```text
//! sha256:3e5acae5a135  [##########          ]   1.1 MiB / 2.2 MiB
//! sha256:c98c92469940  cached                          4.0 KiB
//! ```
//!
//! — and otherwise one line per blob when it is done, then a summary.

use grove_client::api::pull_progress;
use std::cell::RefCell;
use std::io::{IsTerminal, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

const WIDTH: u64 = 20;
/// The lines are redrawn at most this often (and once at the end).
const EVERY: Duration = Duration::from_millis(100);

#[derive(Clone, Debug, PartialEq, Eq)]
struct Blob {
    digest: String,
    done: u64,
    total: u64,
    cached: bool,
    /// Its completion was printed (not on a terminal).
    reported: bool,
}

pub struct LayerProgress {
    tty: bool,
    state: RefCell<State>,
}

#[derive(Default)]
struct State {
    blobs: Vec<Blob>,
    /// Lines drawn last time (to move back over them).
    drawn: usize,
    last_draw: Option<Instant>,
    finished: bool,
}

fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

/// One blob's line on a terminal.
fn line(b: &Blob) -> String {
    let name = short(&b.digest);
    if b.cached {
        return format!("{name}  cached {:>29}", crate::image_cmd::size(b.total));
    }
    let filled = (b.done.min(b.total) * WIDTH)
        .checked_div(b.total)
        .unwrap_or(WIDTH);
    let state = if b.total > 0 && b.done >= b.total {
        "done"
    } else {
        ""
    };
    format!(
        "{name}  [{}{}] {:>9} / {:<9} {state}",
        "#".repeat(filled as usize),
        " ".repeat((WIDTH - filled) as usize),
        crate::image_cmd::size(b.done),
        crate::image_cmd::size(b.total)
    )
    .trim_end()
    .to_string()
}

impl LayerProgress {
    pub fn new() -> LayerProgress {
        LayerProgress {
            tty: std::io::stderr().is_terminal(),
            state: RefCell::new(State::default()),
        }
    }

    fn draw(&self, state: &mut State, force: bool) {
        let now = Instant::now();
        if !force
            && state
                .last_draw
                .is_some_and(|t| now.duration_since(t) < EVERY)
        {
            return;
        }
        state.last_draw = Some(now);
        let mut err = std::io::stderr();
        let mut out = String::new();
        if state.drawn > 0 {
            // Back to the first line drawn last time.
            out.push_str(&format!("\x1b[{}A", state.drawn));
        }
        for b in &state.blobs {
            out.push_str(&format!("\r{}\x1b[K\n", line(b)));
        }
        state.drawn = state.blobs.len();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }

    /// Not on a terminal: a line for each blob that just completed.
    fn report(&self, state: &mut State) {
        let mut err = std::io::stderr();
        for b in state.blobs.iter_mut() {
            if !b.reported && b.total > 0 && b.done >= b.total {
                b.reported = true;
                let what = if b.cached { "cached" } else { "pulled" };
                let _ = writeln!(
                    err,
                    "{}: {what} {}",
                    short(&b.digest),
                    crate::image_cmd::size(b.total)
                );
            }
        }
    }
}

impl pull_progress::Server for LayerProgress {
    async fn update(
        self: Rc<Self>,
        params: pull_progress::UpdateParams,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let (done, total) = (p.get_bytes_done(), p.get_bytes_total());
        let mut state = self.state.borrow_mut();
        if total > 0 && done >= total && !state.finished {
            state.finished = true;
            if self.tty {
                self.draw(&mut state, true);
            } else {
                self.report(&mut state);
            }
            let cached: u64 = state
                .blobs
                .iter()
                .filter(|b| b.cached)
                .map(|b| b.total)
                .sum();
            let _ = writeln!(
                std::io::stderr(),
                "pulled {} ({} downloaded, {} cached)",
                crate::image_cmd::size(total),
                crate::image_cmd::size(total.saturating_sub(cached)),
                crate::image_cmd::size(cached)
            );
        }
        Ok(())
    }

    async fn blob(
        self: Rc<Self>,
        params: pull_progress::BlobParams,
        _: pull_progress::BlobResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let digest = p.get_digest()?.to_string().map_err(capnp::Error::from)?;
        let update = Blob {
            digest: digest.clone(),
            done: p.get_bytes_done(),
            total: p.get_bytes_total(),
            cached: p.get_cached(),
            reported: false,
        };
        let mut state = self.state.borrow_mut();
        match state.blobs.iter_mut().find(|b| b.digest == digest) {
            Some(b) => {
                let reported = b.reported;
                *b = Blob { reported, ..update };
            }
            None => state.blobs.push(update),
        }
        if self.tty {
            self.draw(&mut state, false);
        } else {
            self.report(&mut state);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_each_blob() {
        let b = |done, total, cached| Blob {
            digest: format!("sha256:{}", "ab".repeat(32)),
            done,
            total,
            cached,
            reported: false,
        };
        assert_eq!(
            line(&b(1 << 20, 2 << 20, false)),
            format!(
                "sha256:abababababab  [{}{}]   1.0 MiB / 2.0 MiB",
                "#".repeat(10),
                " ".repeat(10)
            )
        );
        assert!(line(&b(2 << 20, 2 << 20, false)).ends_with("2.0 MiB / 2.0 MiB   done"));
        assert!(line(&b(0, 300, false)).ends_with("  0 B / 300 B"));
        assert!(line(&b(4096, 4096, true)).starts_with("sha256:abababababab  cached"));
        assert!(line(&b(4096, 4096, true)).ends_with("4.0 KiB"));
    }
}
