//! groved's and grove-garden's log: `tracing` events on stderr, in the style logline.rs picks for
//! it — `<N>` priorities for journald, a timestamp and a level otherwise,
//! colour only on a terminal. `GROVED_LOG` (`GROVE_GARDEN_LOG`) is an
//! EnvFilter (`debug`, `info,groved::containers=debug`); default `info`.

use crate::logline::{self, Style};
use std::io::Write;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// What a registry client (ureq) logs below info names the URLs it
/// fetches, redirects included, and a registry redirects blobs to
/// storage URLs whose query carries a signature: a credential. groved
/// never logs those, whatever the filter asks for.
const NEVER_BELOW_INFO: &[&str] = &["ureq"];

/// Set up the log. Call it first thing, before any thread exists.
pub fn init(variable: &str) {
    // Lines written without `tracing` (systemd.rs) share the style.
    logline::init(logline::Level::Debug);
    let (mut filter, refused) = match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(e) => (
                EnvFilter::new("info"),
                Some(format!("{variable}={value:?}: {e}")),
            ),
        },
        _ => (EnvFilter::new("info"), None),
    };
    for target in NEVER_BELOW_INFO {
        filter = filter.add_directive(
            format!("{target}=info")
                .parse()
                .expect("a target and a level make a directive"),
        );
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match logline::style() {
        Style::Journal => builder
            .without_time()
            .with_level(false)
            .with_ansi(false)
            .with_writer(JournalWriter)
            .init(),
        Style::Terminal => builder.with_ansi(true).with_writer(std::io::stderr).init(),
        Style::Plain => builder.with_ansi(false).with_writer(std::io::stderr).init(),
    }
    if let Some(refused) = refused {
        tracing::warn!("{refused}; logging at info");
    }
}

/// stderr for journald: each event's lines prefixed with the priority of
/// its level (sd-daemon(3)).
struct JournalWriter;

impl<'a> MakeWriter<'a> for JournalWriter {
    type Writer = JournalEvent;

    fn make_writer(&'a self) -> JournalEvent {
        JournalEvent::new(logline::Level::Info)
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> JournalEvent {
        JournalEvent::new(level_of(meta.level()))
    }
}

fn level_of(level: &tracing::Level) -> logline::Level {
    match *level {
        tracing::Level::ERROR => logline::Level::Error,
        tracing::Level::WARN => logline::Level::Warn,
        tracing::Level::INFO => logline::Level::Info,
        _ => logline::Level::Debug,
    }
}

/// One event, collected and written whole (one write(2)) when dropped.
struct JournalEvent {
    level: logline::Level,
    text: Vec<u8>,
}

impl JournalEvent {
    fn new(level: logline::Level) -> JournalEvent {
        JournalEvent {
            level,
            text: Vec::new(),
        }
    }
}

impl Write for JournalEvent {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.text.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for JournalEvent {
    fn drop(&mut self) {
        if self.text.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.text);
        let line = logline::format(
            Style::Journal,
            self.level,
            std::time::SystemTime::now(),
            &text,
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}
