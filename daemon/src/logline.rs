//! How the daemons' log lines look, wherever stderr goes. Shared by
//! grove-helper (whose whole logger this is), groved and grove-garden
//! (which format through `tracing`, using the style chosen here; see
//! logging.rs).
//!
//! - **journald** (systemd connected stderr to the journal: JOURNAL_STREAM
//!   names the device and inode of fd 2): each line starts with its
//!   sd-daemon(3) priority, `<3>` error, `<4>` warning, `<6>` info, `<7>`
//!   debug, and carries neither timestamp nor colour (the journal records
//!   both itself).
//! - **a terminal**: a UTC timestamp and a coloured level (unless NO_COLOR
//!   is set).
//! - **anything else** (a file, a pipe): the timestamp and the level, no
//!   colour codes.

use std::fmt;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    /// The syslog priority journald files the line under (sd-daemon(3)).
    pub fn priority(self) -> u8 {
        match self {
            Level::Error => 3,
            Level::Warn => 4,
            Level::Info => 6,
            Level::Debug => 7,
        }
    }

    /// As `tracing`'s formatter writes it: five characters, right-aligned.
    fn label(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => " WARN",
            Level::Info => " INFO",
            Level::Debug => "DEBUG",
        }
    }

    /// ANSI colours as `tracing`'s formatter uses them.
    fn colour(self) -> &'static str {
        match self {
            Level::Error => "\x1b[31m",
            Level::Warn => "\x1b[33m",
            Level::Info => "\x1b[32m",
            Level::Debug => "\x1b[34m",
        }
    }

    /// A level variable's value (`GROVE_HELPER_LOG=debug`).
    pub fn parse(value: &str) -> Option<Level> {
        match value.trim().to_ascii_lowercase().as_str() {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" | "trace" => Some(Level::Debug),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `<N>` priority prefixes, no timestamp, no colour.
    Journal,
    /// Timestamp and coloured level.
    Terminal,
    /// Timestamp and level.
    Plain,
}

impl Style {
    /// How this process's stderr wants its lines (see the module docs).
    pub fn detect() -> Style {
        // SAFETY: fstat and isatty only read fd 2's metadata into `st`.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let stat_ok = unsafe { libc::fstat(2, &mut st) } == 0;
        if stat_ok {
            if let Ok(value) = std::env::var("JOURNAL_STREAM") {
                if journal_stream_is(&value, st.st_dev as u64, st.st_ino as u64) {
                    return Style::Journal;
                }
            }
        }
        let terminal = unsafe { libc::isatty(2) } == 1;
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if terminal && !no_colour {
            Style::Terminal
        } else {
            Style::Plain
        }
    }
}

/// Whether JOURNAL_STREAM's `DEVICE:INODE` (decimal, as systemd sets it)
/// names this stream: a daemon whose stderr was redirected elsewhere
/// keeps the variable but not the stream.
pub fn journal_stream_is(value: &str, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.trim().split_once(':') else {
        return false;
    };
    d.parse::<u64>().ok() == Some(dev) && i.parse::<u64>().ok() == Some(ino)
}

/// `t` in RFC 3339, UTC, with microseconds: the form `tracing`'s
/// formatter writes, so the three daemons' files read alike.
pub fn timestamp(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since.subsec_micros()
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// One log record as the bytes written to stderr, ending in a newline.
/// Under journald every line of a multi-line message gets the priority,
/// or the journal would file its continuation lines as info.
pub fn format(style: Style, level: Level, at: SystemTime, message: &str) -> String {
    let message = message.trim_end_matches('\n');
    match style {
        Style::Journal => message
            .split('\n')
            .map(|line| format!("<{}>{line}\n", level.priority()))
            .collect(),
        Style::Plain => format!("{} {} {message}\n", timestamp(at), level.label()),
        Style::Terminal => format!(
            "\x1b[2m{}\x1b[0m {}{}\x1b[0m {message}\n",
            timestamp(at),
            level.colour(),
            level.label()
        ),
    }
}

struct Logger {
    style: Style,
    max: Level,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// Log at most `max` in the style stderr calls for. Call it once, early;
/// a line logged before it gets the detected style at info.
pub fn init(max: Level) {
    let _ = LOGGER.set(Logger {
        style: Style::detect(),
        max,
    });
}

/// The style chosen by `init` (or detected now, without it); groved and
/// grove-garden format `tracing`'s events in it.
#[allow(dead_code)] // not by the helper
pub fn style() -> Style {
    logger().style
}

fn logger() -> &'static Logger {
    LOGGER.get_or_init(|| Logger {
        style: Style::detect(),
        max: Level::Info,
    })
}

/// Write one record to stderr in one write(2) (children of the helper log
/// to the same stream, and lines must not interleave).
pub fn emit(level: Level, message: fmt::Arguments) {
    let logger = logger();
    if level > logger.max {
        return;
    }
    let line = format(logger.style, level, SystemTime::now(), &message.to_string());
    let _ = std::io::stderr().write_all(line.as_bytes());
}

#[macro_export]
macro_rules! log_error {
    ($($arg:tt)*) => { $crate::logline::emit($crate::logline::Level::Error, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)*) => { $crate::logline::emit($crate::logline::Level::Warn, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! log_info {
    ($($arg:tt)*) => { $crate::logline::emit($crate::logline::Level::Info, format_args!($($arg)*)) };
}
#[macro_export]
macro_rules! log_debug {
    ($($arg:tt)*) => { $crate::logline::emit($crate::logline::Level::Debug, format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs: u64, micros: u64| {
            timestamp(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        // date -u -d @951782400: a leap day.
        assert_eq!(at(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(at(1_709_251_199, 999_999), "2024-02-29T23:59:59.999999Z");
        assert_eq!(at(1_735_689_600, 0), "2025-01-01T00:00:00.000000Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000000Z");
    }

    #[test]
    fn journal_lines_carry_priorities_and_nothing_else() {
        let at = UNIX_EPOCH;
        assert_eq!(
            format(Style::Journal, Level::Warn, at, "a\nb\n"),
            "<4>a\n<4>b\n"
        );
        assert_eq!(format(Style::Journal, Level::Error, at, "x"), "<3>x\n");
        assert_eq!(format(Style::Journal, Level::Info, at, "x"), "<6>x\n");
        assert_eq!(format(Style::Journal, Level::Debug, at, "x"), "<7>x\n");
        assert_eq!(
            format(Style::Plain, Level::Info, at, "ready"),
            "1970-01-01T00:00:00.000000Z  INFO ready\n"
        );
        let plain = format(Style::Plain, Level::Error, at, "x");
        assert!(!plain.contains('\x1b'), "{plain:?}");
        let coloured = format(Style::Terminal, Level::Error, at, "x");
        assert!(coloured.contains("\x1b[31mERROR\x1b[0m"), "{coloured:?}");
    }

    #[test]
    fn journal_stream_must_name_this_stream() {
        assert!(journal_stream_is("8:1234", 8, 1234));
        assert!(journal_stream_is("8:1234\n", 8, 1234));
        assert!(!journal_stream_is("8:1235", 8, 1234));
        assert!(!journal_stream_is("9:1234", 8, 1234));
        assert!(!journal_stream_is("", 8, 1234));
        assert!(!journal_stream_is("8", 8, 1234));
        assert!(!journal_stream_is("x:y", 8, 1234));
    }

    #[test]
    fn level_names() {
        assert_eq!(Level::parse("DEBUG"), Some(Level::Debug));
        assert_eq!(Level::parse("warn"), Some(Level::Warn));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Debug > Level::Info && Level::Error < Level::Warn);
    }
}
