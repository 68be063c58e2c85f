//! One client connection: read a request, route it, answer, and keep the
//! connection for the next request (HTTP/1.1 keep-alive) unless it was
//! hijacked, asked to close, or left part of its body unread.

use crate::errors::GardenError;
use crate::grove::Grove;
use crate::http::{self, BodyState, BoxRead, BoxWrite, HttpError, Reader};
use crate::routes::{self, Route};
use crate::streams::Streams;
use crate::{api, files, process};
use std::cell::RefCell;
use std::rc::Rc;
use tokio::io::AsyncWriteExt;

/// How long a request head may take to arrive.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// What is read of an unread body before an early error answer (net/http
/// discards up to 256 KiB too).
const DISCARD: usize = 256 * 1024;
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Ctx {
    pub grove: Grove,
    pub streams: RefCell<Streams>,
}

pub struct Conn {
    pub reader: Reader,
    pub writer: BoxWrite,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Keep,
    Close,
}

/// Garden's error body with its status.
pub async fn write_error(conn: &mut Conn, e: &GardenError, keep_alive: bool) -> Outcome {
    if e.status >= 500 || e.status == 400 {
        tracing::info!(status = e.status, kind = e.kind, error = %e.for_log(), "request failed");
    }
    match http::write_json(&mut conn.writer, e.status, &e.body(), keep_alive).await {
        Ok(()) if keep_alive => Outcome::Keep,
        _ => Outcome::Close,
    }
}

/// An error answer on a route Garden's client hijacks (run, attach,
/// stdout, stderr): its httputil.ClientConn turns any response marked
/// `Connection: close` into ErrPersistEOF and loses the body (and with it
/// the error's Type), so the head says nothing of closing; the connection
/// is closed afterwards all the same.
pub async fn write_hijack_error(conn: &mut Conn, e: &GardenError) -> Outcome {
    write_error(conn, e, true).await;
    Outcome::Close
}

pub async fn serve(ctx: Rc<Ctx>, read: BoxRead, write: BoxWrite) {
    let mut conn = Conn {
        reader: Reader::new(read),
        writer: write,
    };
    loop {
        // A client gets a minute for each request head (Garden's server has
        // ReadHeaderTimeout), idle keep-alive time included: a connection
        // that sends nothing does not hold a slot for ever.
        let head = tokio::time::timeout(HEAD_TIMEOUT, conn.reader.read_head()).await;
        let mut req = match head {
            Err(_elapsed) => break,
            Ok(Ok(Some(req))) => req,
            Ok(Ok(None)) | Ok(Err(HttpError::Io(_))) => break,
            Ok(Err(e)) => {
                write_error(&mut conn, &api::http_error(e), false).await;
                break;
            }
        };
        if req.expect_continue
            && req.body != BodyState::Done
            && http::write_continue(&mut conn.writer).await.is_err()
        {
            break;
        }
        let outcome = match routes::route(&req.method, &req.segments) {
            Err(e) => write_error(&mut conn, &e, req.keep_alive).await,
            Ok(route) => dispatch(&ctx, &mut conn, &mut req, route).await,
        };
        // A body left unread cannot be told from the next request.
        if outcome == Outcome::Close || !req.keep_alive || req.body != BodyState::Done {
            break;
        }
    }
    let _ = conn.writer.shutdown().await;
}

async fn dispatch(ctx: &Rc<Ctx>, conn: &mut Conn, req: &mut Request, route: Route) -> Outcome {
    let answer = match route {
        Route::Run(h) => {
            process::run(ctx, conn, req, &h).await;
            return Outcome::Close;
        }
        Route::Attach(h, pid) => {
            process::attach(ctx, conn, req, &h, &pid).await;
            return Outcome::Close;
        }
        Route::Output(h, pid, sid, stderr) => {
            process::output(ctx, conn, &h, &pid, &sid, stderr).await;
            return Outcome::Close;
        }
        Route::StreamOut(h) => return files::stream_out(ctx, conn, req, &h).await,
        Route::StreamIn(h) => files::stream_in(ctx, conn, req, &h).await,
        other => api::handle(ctx, conn, req, other).await,
    };
    match answer {
        Ok(value) => match http::write_json(&mut conn.writer, 200, &value, req.keep_alive).await {
            Ok(()) => Outcome::Keep,
            Err(_) => Outcome::Close,
        },
        Err(e) => {
            // An answer before the whole body was read (a streamIn that
            // failed early): read on a little first, as net/http does, so
            // a client still sending is more likely to get the answer than
            // a broken pipe. The connection ends after it either way.
            discard_body(conn, req).await;
            let keep = req.keep_alive && req.body == BodyState::Done;
            write_error(conn, &e, keep).await
        }
    }
}

/// Read and drop up to `DISCARD` bytes of what is left of a request's
/// body, for at most `DISCARD_TIME`.
async fn discard_body(conn: &mut Conn, req: &mut Request) {
    let mut left = DISCARD;
    let reading = async {
        while left > 0 {
            match conn
                .reader
                .body_chunk(&mut req.body, left.min(64 * 1024))
                .await
            {
                Ok(Some(piece)) => left = left.saturating_sub(piece.len()),
                _ => break,
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_TIME, reading).await;
}

use crate::http::Request;
