//! wshd's log: one line per event on stderr, which grove-helper points at
//! a file on the host (depot/<handle>/wshd.log), outside the container's
//! disk limit. The container decides how many events there are (each
//! orphan wshd reaps is one), so the log is bounded here, in wshd, whose
//! memory and fds no process of the container can reach (wshd is not
//! dumpable, and they lack CAP_SYS_PTRACE):
//!
//! * a rate: a burst of `BURST` lines, then `RATE` a second; the lines
//!   dropped are counted, and the next line written says how many;
//! * a size: past `CAP` bytes the file is emptied and starts again with a
//!   line that says so, so it never holds more than `CAP` bytes, the
//!   newest ones;
//! * a line is at most `MAX_LINE` bytes.
//!
//! Callers never log a process's argv, env, path or directory, nor the
//! text of an error answer that may quote them: they carry secrets.

use std::sync::Mutex;
use std::time::Instant;

/// Most bytes the log file holds.
pub const CAP: u64 = 1 << 20;
/// Lines written at once before the rate applies.
const BURST: f64 = 200.0;
/// Lines a second, after the burst.
const RATE: f64 = 20.0;
/// Longest line (longer ones are cut).
const MAX_LINE: usize = 512;

/// The limits' state (a pure value: `admit` is given the time).
pub struct Limiter {
    cap: u64,
    tokens: f64,
    last: Option<Instant>,
    dropped: u64,
    /// Bytes in the file (`None` until first measured).
    written: Option<u64>,
}

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Drop,
    /// Write `text`; empty the file first when `truncate`.
    Write {
        truncate: bool,
        text: String,
    },
}

impl Limiter {
    pub const fn new(cap: u64) -> Limiter {
        Limiter {
            cap,
            tokens: BURST,
            last: None,
            dropped: 0,
            written: None,
        }
    }

    /// Decide about `line` at `now`; `size` measures the file once (for a
    /// log that already holds something).
    pub fn admit(&mut self, now: Instant, line: &str, size: impl FnOnce() -> u64) -> Action {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64() * RATE;
            self.tokens = (self.tokens + refill).min(BURST);
        }
        self.last = Some(now);
        if self.tokens < 1.0 {
            self.dropped += 1;
            return Action::Drop;
        }
        self.tokens -= 1.0;
        let mut text = String::new();
        if self.dropped > 0 {
            text.push_str(&format!(
                "wshd: {} lines dropped (more than {RATE} a second)\n",
                self.dropped
            ));
            self.dropped = 0;
        }
        let mut end = line.len().min(MAX_LINE);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        text.push_str("wshd: ");
        text.push_str(&line[..end]);
        if end < line.len() {
            text.push_str(" [cut]");
        }
        text.push('\n');
        let written = *self.written.get_or_insert_with(size);
        let truncate = written + text.len() as u64 > self.cap;
        if truncate {
            text.insert_str(
                0,
                &format!(
                    "wshd: log emptied at {written} bytes (its cap is {}); older lines dropped\n",
                    self.cap
                ),
            );
            self.written = Some(0);
        }
        self.written = Some(self.written.unwrap_or(0) + text.len() as u64);
        Action::Write { truncate, text }
    }
}

static LOG: Mutex<Limiter> = Mutex::new(Limiter::new(CAP));

/// Write one line to stderr, within the limits.
pub fn line(args: std::fmt::Arguments) {
    let line = args.to_string();
    let size = || {
        // SAFETY: fstat fills the stat it is given.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        match unsafe { libc::fstat(2, &mut st) } {
            0 => st.st_size as u64,
            _ => 0,
        }
    };
    let action = match LOG.lock() {
        Ok(mut limiter) => limiter.admit(Instant::now(), &line, size),
        Err(_) => return,
    };
    let Action::Write { truncate, text } = action else {
        return;
    };
    if truncate {
        // SAFETY: ftruncate on our own stderr; the file is opened O_APPEND,
        // so the next write lands at its new end.
        unsafe { libc::ftruncate(2, 0) };
    }
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn text(a: Action) -> Option<(bool, String)> {
        match a {
            Action::Drop => None,
            Action::Write { truncate, text } => Some((truncate, text)),
        }
    }

    #[test]
    fn a_burst_then_the_rate_and_a_count_of_what_was_dropped() {
        let mut l = Limiter::new(u64::MAX / 2);
        let t0 = Instant::now();
        let mut written = 0;
        for _ in 0..1000 {
            if l.admit(t0, "reaped orphan pid 7", || 0) != Action::Drop {
                written += 1;
            }
        }
        assert_eq!(written, BURST as usize);
        // One second later: RATE more lines, the first saying how many
        // were dropped.
        let t1 = t0 + Duration::from_secs(1);
        let (_, first) = text(l.admit(t1, "next", || 0)).unwrap();
        assert_eq!(
            first,
            format!(
                "wshd: {} lines dropped (more than {RATE} a second)\nwshd: next\n",
                1000 - BURST as usize
            )
        );
        let more = (1..100)
            .filter(|_| l.admit(t1, "x", || 0) != Action::Drop)
            .count();
        assert_eq!(more, RATE as usize - 1);
    }

    #[test]
    fn the_file_never_holds_more_than_the_cap() {
        let cap = 1000;
        let mut l = Limiter::new(cap);
        let mut t = Instant::now();
        let mut file = 300u64; // what the file held already
        let mut truncations = 0;
        for i in 0..5000 {
            t += Duration::from_millis(100); // within the rate
            if let Some((truncate, text)) = text(l.admit(t, &format!("line {i}"), || 300)) {
                if truncate {
                    file = 0;
                    truncations += 1;
                    assert!(text.starts_with("wshd: log emptied at "), "{text}");
                }
                file += text.len() as u64;
                assert!(file <= cap, "{file} after line {i}");
            }
        }
        assert!(truncations > 10);
    }

    #[test]
    fn long_lines_are_cut() {
        let mut l = Limiter::new(CAP);
        let long = "é".repeat(MAX_LINE);
        let (_, t) = text(l.admit(Instant::now(), &long, || 0)).unwrap();
        assert!(
            t.len() < MAX_LINE + 40 && t.ends_with(" [cut]\n"),
            "{}",
            t.len()
        );
    }
}
