//! The pull progress bar `grove create` shows for docker:// images, on
//! stderr: redrawn in place on a terminal, one summary line otherwise.

use grove_client::api::pull_progress;
use std::cell::Cell;
use std::io::{IsTerminal, Write};
use std::rc::Rc;

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

#[cfg(test)]
mod tests {
    use super::render;

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
