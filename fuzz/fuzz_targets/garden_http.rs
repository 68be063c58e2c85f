//! grove-garden's HTTP/1.1 request reader (`garden/src/http.rs`), the part
//! of grove-garden anyone who can connect talks to first.
//!
//! Input: the bytes a client sends on one connection. The target reads it
//! as grove-garden's serve loop does: request heads, each body to its end
//! (chunked or Content-Length), pipelined requests after it, and Garden's
//! newline-delimited payload lines on what is left. Invariants: nothing
//! panics; a parsed head keeps within the documented bounds (header count,
//! no empty or '/'-free segment rules broken by decoding); no body yields
//! more bytes than the input holds; a body piece never exceeds what was
//! asked for; every read ends (the input is finite and never pending).
#![no_main]

// grove-garden is a binary crate, so its HTTP module is compiled in here
// directly (it depends only on std, tokio's I/O traits, httparse and
// serde_json).
#[allow(dead_code)]
#[path = "../../garden/src/http.rs"]
mod http;

use http::{BodyState, HttpError, Reader};
use libfuzzer_sys::fuzz_target;
use std::future::Future;
use std::task::{Context, Poll, Waker};

/// Poll a future over an in-memory input to its end: such reads never
/// wait, so a Pending would be a bug of the reader (or of this target).
fn finish<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a read over an in-memory input waited"),
    }
}

fuzz_target!(|data: &[u8]| {
    let total = data.len();
    let mut reader = Reader::new(Box::new(std::io::Cursor::new(data.to_vec())));
    let mut body_bytes = 0usize;
    // Requests until the input ends or one is refused (then the serve
    // loop answers and closes).
    for _ in 0..64 {
        let mut request = match finish(reader.read_head()) {
            Ok(Some(r)) => r,
            Ok(None) | Err(HttpError::Io(_)) => return,
            Err(HttpError::Bad(_)) | Err(HttpError::TooLarge(..)) => break,
        };
        assert!(!request.method.is_empty());
        loop {
            const ASKED: usize = 4096;
            match finish(reader.body_chunk(&mut request.body, ASKED)) {
                Ok(Some(piece)) => {
                    assert!(piece.len() <= ASKED, "a piece larger than asked for");
                    body_bytes += piece.len();
                    assert!(body_bytes <= total, "more body than input");
                }
                Ok(None) => {
                    assert!(request.body == BodyState::Done);
                    break;
                }
                Err(_) => return,
            }
        }
    }
    // What a hijacked run/attach connection reads next: payload lines.
    for _ in 0..64 {
        match finish(reader.next_line(1 << 20)) {
            Ok(Some(line)) => assert!(line.len() <= total),
            _ => return,
        }
    }
});
