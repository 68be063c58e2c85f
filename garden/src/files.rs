//! StreamIn (`PUT /containers/:handle/files?user=&destination=`, a tar
//! body) and StreamOut (`GET …/files?user=&source=`, a tar answer). Both
//! stream: the request body goes to groved's ByteStream a piece at a time
//! under Cap'n Proto flow control, and groved's tar comes back as a chunked
//! response through a small bounded channel, so neither is ever held whole.

use crate::api::{container, http_error};
use crate::errors::GardenError;
use crate::http::{self, Request};
use crate::server::{write_error, Conn, Ctx, Outcome};
use crate::sink::{self, Piece};
use serde_json::{json, Value};

/// The most bytes sent to groved in one write.
const PIECE: usize = 256 * 1024;

pub async fn stream_in(
    ctx: &Ctx,
    conn: &mut Conn,
    req: &mut Request,
    handle: &str,
) -> Result<Value, GardenError> {
    let g = &ctx.grove;
    let c = container(ctx, handle).await?;
    let mut r = c.stream_in_request();
    r.get().set_path(req.query("destination").unwrap_or(""));
    r.get().set_user(req.query("user").unwrap_or(""));
    let tar = r.send().pipeline.get_sink();
    while let Some(piece) = conn
        .reader
        .body_chunk(&mut req.body, PIECE)
        .await
        .map_err(http_error)?
    {
        let mut w = tar.write_request();
        w.get().set_data(&piece);
        w.send().await.map_err(|e| g.fail(e, handle, ""))?;
    }
    tar.done_request()
        .send()
        .promise
        .await
        .map_err(|e| g.fail(e, handle, ""))?;
    Ok(json!({}))
}

pub async fn stream_out(ctx: &Ctx, conn: &mut Conn, req: &Request, handle: &str) -> Outcome {
    let g = &ctx.grove;
    let keep = if req.keep_alive {
        Outcome::Keep
    } else {
        Outcome::Close
    };
    let c = match container(ctx, handle).await {
        Ok(c) => c,
        Err(e) => return write_error(conn, &e, req.keep_alive).await,
    };
    let (tar, mut pieces) = sink::bounded(4);
    let mut r = c.stream_out_request();
    r.get().set_path(req.query("source").unwrap_or(""));
    r.get().set_user(req.query("user").unwrap_or(""));
    r.get().set_sink(tar);
    let call = r.send().promise;
    tokio::pin!(call);
    let mut answered = false;
    let mut started = false;
    loop {
        tokio::select! {
            biased;
            piece = pieces.recv() => match piece {
                Some(Piece::Data(data)) => {
                    if !started {
                        started = true;
                        if http::write_chunked_head(&mut conn.writer, "application/x-tar", req.keep_alive).await.is_err() {
                            return Outcome::Close;
                        }
                    }
                    if http::write_chunk(&mut conn.writer, &data).await.is_err() {
                        return Outcome::Close;
                    }
                }
                Some(Piece::Done) => {
                    if !started
                        && http::write_chunked_head(&mut conn.writer, "application/x-tar", req.keep_alive).await.is_err()
                    {
                        return Outcome::Close;
                    }
                    if http::write_last_chunk(&mut conn.writer).await.is_err() {
                        return Outcome::Close;
                    }
                    return keep;
                }
                None => {
                    // The sink went away without `done`: the call failed.
                    let e = if answered { None } else { (&mut call).await.err() };
                    return fail(conn, req, started, e.map(|e| g.fail(e, handle, ""))).await;
                }
            },
            res = &mut call, if !answered => match res {
                // `done` reached the channel before groved answered.
                Ok(_) => answered = true,
                Err(e) => return fail(conn, req, started, Some(g.fail(e, handle, ""))).await,
            },
        }
    }
}

/// Before the first byte: Garden's error body. After it: cut the
/// connection without the last chunk, so the client sees a truncated body
/// rather than a short tar that looks whole (Garden's server ends the
/// chunked body normally there).
async fn fail(conn: &mut Conn, req: &Request, started: bool, e: Option<GardenError>) -> Outcome {
    let e = e.unwrap_or_else(|| GardenError::internal("streamOut ended without its end"));
    tracing::info!(error = %e.for_log(), "streamOut failed");
    if started {
        Outcome::Close
    } else {
        write_error(conn, &e, req.keep_alive).await
    }
}
