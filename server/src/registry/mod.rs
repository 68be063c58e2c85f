//! Pulling images from registries (Docker Registry HTTP API v2) into
//! groved's blob cache (`crate::images`), from which the helper unpacks
//! them like any `oci:` image (verifying every digest again itself).
//!
//! - `net`: TLS roots (system store, `registry_ca`), proxies, clients;
//! - `http`: one registry or mirror, with its authentication;
//! - `pull`: manifests, indexes and blobs, mirrors first.
//!
//! Everything here is blocking and works on plain data only; groved runs it
//! in `tokio::task::spawn_blocking`. The helper never does network I/O.

pub mod http;
pub mod net;
pub mod pull;

use std::cell::Cell;
use std::sync::atomic::AtomicU64;

/// Bytes groved has downloaded from registries since it started (every
/// blob byte received, verified or not): for a metrics endpoint to read.
pub static PULLED_BYTES: AtomicU64 = AtomicU64::new(0);

/// How many bytes groved has pulled from registries since it started.
pub fn pulled_bytes() -> u64 {
    PULLED_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullError {
    /// The image reference, the image or the registry's answer is wrong.
    Invalid(String),
    /// The registry could not be reached or failed.
    Unavailable(String),
}

impl PullError {
    fn message(&self) -> &str {
        match self {
            PullError::Invalid(m) | PullError::Unavailable(m) => m,
        }
    }
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// What a pull reports as it goes; the receiver is groved's runtime side,
/// which tells the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Bytes of all the image's blobs done (cached ones included) and in all.
    Total { done: u64, total: u64 },
    /// One blob's progress.
    Blob {
        digest: String,
        done: u64,
        total: u64,
        cached: bool,
    },
}

pub struct Progress {
    sender: Option<tokio::sync::mpsc::UnboundedSender<Event>>,
    done: Cell<u64>,
    total: Cell<u64>,
}

impl Progress {
    pub fn new(sender: Option<tokio::sync::mpsc::UnboundedSender<Event>>) -> Progress {
        Progress {
            sender,
            done: 0.into(),
            total: 0.into(),
        }
    }

    fn send(&self, event: Event) {
        if let Some(sender) = &self.sender {
            let _ = sender.send(event);
        }
    }

    /// The image's blobs add up to `total` bytes, `done` of them cached.
    pub fn start(&self, total: u64, done: u64) {
        self.total.set(total);
        self.done.set(done);
        self.report();
    }

    pub fn advance(&self, more: u64) {
        self.done.set(self.done.get() + more);
        self.report();
    }

    fn report(&self) {
        let done = self.done.get();
        self.send(Event::Total {
            done,
            total: self.total.get().max(done),
        });
    }

    pub fn blob(&self, digest: &str, done: u64, total: u64, cached: bool) {
        self.send(Event::Blob {
            digest: digest.to_string(),
            done,
            total,
            cached,
        });
    }
}
