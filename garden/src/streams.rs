//! Stream bookkeeping, grove-garden's only state: each run/attach session
//! hands its client a stream id, and the client fetches the process's
//! stdout and stderr on separate connections by that id
//! (`/containers/:handle/processes/:pid/attaches/:streamid/stdout`).
//! As Garden's streamer does (server/streamer), an id stays valid while
//! its session lasts and for a minute after, so a client that connects its
//! output late still gets it.

use rand::RngCore;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long an id outlives its session (Garden's streamer: one minute).
pub const LINGER: Duration = Duration::from_secs(60);

struct Entry {
    handle: String,
    process: String,
    /// None while the session runs.
    expires: Option<Instant>,
}

#[derive(Default)]
pub struct Streams {
    entries: HashMap<String, Entry>,
}

impl Streams {
    /// A new id for a session about `process` in `handle`. Random rather
    /// than Garden's counter, so that ids cannot be guessed.
    pub fn open(&mut self, handle: &str, process: &str) -> String {
        self.expire();
        let mut bytes = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut bytes);
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.entries.insert(
            id.clone(),
            Entry {
                handle: handle.to_string(),
                process: process.to_string(),
                expires: None,
            },
        );
        id
    }

    /// The session ended: the id lingers, then goes.
    pub fn close(&mut self, id: &str) {
        if let Some(e) = self.entries.get_mut(id) {
            e.expires = Some(Instant::now() + LINGER);
        }
        self.expire();
    }

    /// Whether `id` is a live id of `process` in `handle`.
    pub fn valid(&mut self, id: &str, handle: &str, process: &str) -> bool {
        self.expire();
        self.entries
            .get(id)
            .is_some_and(|e| e.handle == handle && e.process == process)
    }

    fn expire(&mut self) {
        let now = Instant::now();
        self.entries
            .retain(|_, e| e.expires.is_none_or(|t| t > now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_one_process() {
        let mut s = Streams::default();
        let id = s.open("h", "p");
        assert!(s.valid(&id, "h", "p"));
        assert!(!s.valid(&id, "h", "q"));
        assert!(!s.valid("nope", "h", "p"));
        s.close(&id);
        assert!(s.valid(&id, "h", "p"), "an id lingers after its session");
    }
}
