//! Run, Attach and the output streams: Garden's hijacked connections.
//!
//! Run (`POST /containers/:handle/processes`, 201) and Attach (`GET
//! …/processes/:pid`, 200) answer a head, then keep the connection: the
//! server writes `{"process_id","stream_id"}`, the client sends
//! newline-delimited transport.ProcessPayloads (stdin data, stdin end, tty
//! size, signal) and the server ends with `{"process_id","exit_status"}`
//! (or `"error"`) and closes (server/request_handling.go streamInput and
//! streamProcess). The client fetches stdout and stderr on two more
//! connections, `…/attaches/:streamid/stdout|stderr`, raw bytes until the
//! server closes them.
//!
//! In Grove terms: run starts the process with no output streams (its
//! output waits in its pipes), and each output connection is a Grove
//! `attach` of that one stream, so nothing is buffered here and nothing is
//! dropped: a slow or late client holds the process back (Garden instead
//! drops what its 4000-chunk buffers cannot hold).

use crate::api::{container, read_json};
use crate::errors::GardenError;
use crate::http::{self, Request};
use crate::server::{write_hijack_error, Conn, Ctx};
use crate::sink::{self, Piece};
use crate::translate;
use crate::wire::{self, ProcessPayload};
use grove_client::api;
use std::rc::Rc;
use tokio::io::AsyncWriteExt;

/// The longest payload line taken: Garden's client sends stdin in pieces of
/// at most 32 KiB, which JSON escaping can make six times longer.
const MAX_PAYLOAD: usize = 1 << 20;

pub async fn run(ctx: &Rc<Ctx>, conn: &mut Conn, req: &mut Request, handle: &str) {
    let spec: wire::ProcessSpec = match read_json(conn, req).await {
        Ok(s) => s,
        Err(e) => {
            write_hijack_error(conn, &e).await;
            return;
        }
    };
    let started = async {
        let c = container(ctx, handle).await?;
        let mut r = c.run_request();
        translate::process_spec(&spec, r.get().init_spec())?;
        // Stdin stays open for the session's payloads; stdout and stderr
        // are fetched by the output connections.
        r.get().init_io().set_open_stdin(true);
        let process = r.send().pipeline.get_process();
        let id = process_id(ctx, &process, handle, &spec.id).await?;
        Ok::<_, GardenError>((process, id))
    };
    match started.await {
        Ok((process, id)) => session(ctx, conn, handle, process, id, 201).await,
        Err(e) => {
            write_hijack_error(conn, &e).await;
        }
    }
}

pub async fn attach(ctx: &Rc<Ctx>, conn: &mut Conn, req: &mut Request, handle: &str, pid: &str) {
    // Garden's client sends an empty body; take (and bound) whatever comes.
    if let Err(e) = conn.reader.body(&mut req.body, http::MAX_JSON_BODY).await {
        write_hijack_error(conn, &crate::api::http_error(e)).await;
        return;
    }
    let attached = async {
        let c = container(ctx, handle).await?;
        let mut r = c.attach_request();
        r.get().set_process_id(pid);
        r.get().init_io();
        let process = r.send().pipeline.get_process();
        let id = process_id(ctx, &process, handle, pid).await?;
        Ok::<_, GardenError>((process, id))
    };
    match attached.await {
        Ok((process, id)) => session(ctx, conn, handle, process, id, 200).await,
        Err(e) => {
            write_hijack_error(conn, &e).await;
        }
    }
}

async fn process_id(
    ctx: &Ctx,
    process: &api::process::Client,
    handle: &str,
    asked: &str,
) -> Result<String, GardenError> {
    let g = &ctx.grove;
    let resp = process
        .id_request()
        .send()
        .promise
        .await
        .map_err(|e| g.fail(e, handle, asked))?;
    resp.get()
        .and_then(|r| r.get_id())
        .map_err(|e| g.fail(e, handle, asked))?
        .to_string()
        .map_err(|e| GardenError::internal(e.to_string()))
}

async fn write_payload(conn: &mut http::BoxWrite, payload: &ProcessPayload) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(payload).map_err(std::io::Error::other)?;
    line.push(b'\n');
    conn.write_all(&line).await?;
    conn.flush().await
}

/// Releases the session's stream id (it lingers a minute) however the
/// session ends.
struct StreamId<'a> {
    ctx: &'a Ctx,
    id: String,
}

impl Drop for StreamId<'_> {
    fn drop(&mut self) {
        self.ctx.streams.borrow_mut().close(&self.id);
    }
}

async fn session(
    ctx: &Rc<Ctx>,
    conn: &mut Conn,
    handle: &str,
    process: api::process::Client,
    id: String,
    status: u16,
) {
    let stream = StreamId {
        ctx,
        id: ctx.streams.borrow_mut().open(handle, &id),
    };
    let first = ProcessPayload {
        process_id: id.clone(),
        stream_id: stream.id.clone(),
        ..Default::default()
    };
    let mut stdin = Stdin {
        stream: process.stdin_request().send().pipeline.get_stream(),
        open: true,
    };
    if http::write_hijack_head(&mut conn.writer, status, "application/json")
        .await
        .is_err()
        || write_payload(&mut conn.writer, &first).await.is_err()
    {
        // Gone before the session began: as if it ended at once.
        stdin.close();
        return;
    }
    let Conn { reader, writer } = conn;
    let mut input = Input {
        process: &process,
        stdin,
        accepting: true,
    };
    let ended = tokio::select! {
        status = process.wait_request().send().promise => Some(status),
        _ = input.run(reader) => None,
    };
    // Garden closes the process's stdin when the session ends either way.
    input.stdin.close();
    match ended {
        Some(Ok(resp)) => {
            let status = resp.get().map(|r| r.get_exit_status()).unwrap_or(-1);
            let payload = ProcessPayload {
                process_id: id.clone(),
                // Grove says -N for "killed by signal N"; Garden's clients
                // get the shell's 128+N (what Guardian reports).
                exit_status: Some(grove_client::shell_exit_code(status)),
                ..Default::default()
            };
            let _ = write_payload(writer, &payload).await;
        }
        Some(Err(e)) => {
            let e = ctx.grove.fail(e, handle, &id);
            let payload = ProcessPayload {
                process_id: id.clone(),
                error: Some(e.message),
                ..Default::default()
            };
            let _ = write_payload(writer, &payload).await;
        }
        // The client went away: the process runs on, its output waits in
        // its pipes for an attach.
        None => tracing::debug!(process = %id, "run/attach client went away"),
    }
    let _ = writer.shutdown().await;
}

struct Stdin {
    stream: api::byte_stream::Client,
    open: bool,
}

impl Stdin {
    async fn write(&mut self, data: &[u8]) {
        if !self.open {
            return;
        }
        let mut w = self.stream.write_request();
        w.get().set_data(data);
        if let Err(e) = w.send().await {
            // A process that closed its stdin, or an attach to a process
            // whose stdin an earlier session closed: Garden ignores it too.
            tracing::debug!(error = %e, "writing stdin");
            self.open = false;
        }
    }

    fn close(&mut self) {
        if std::mem::take(&mut self.open) {
            let done = self.stream.done_request().send().promise;
            tokio::task::spawn_local(async move {
                let _ = done.await;
            });
        }
    }
}

struct Input<'a> {
    process: &'a api::process::Client,
    stdin: Stdin,
    /// Garden stops acting on payloads after one it does not know.
    accepting: bool,
}

impl Input<'_> {
    /// Act on the client's payloads until its connection ends (end of file,
    /// or a line that is not a payload: Garden's decoder fails there too).
    async fn run(&mut self, reader: &mut http::Reader) {
        loop {
            let line = match reader.next_line(MAX_PAYLOAD).await {
                Ok(Some(line)) => line,
                _ => return,
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(payload) = serde_json::from_slice::<ProcessPayload>(&line) else {
                return;
            };
            if !self.accepting {
                continue;
            }
            self.act(payload).await;
        }
    }

    async fn act(&mut self, payload: ProcessPayload) {
        if let Some(tty) = payload.tty {
            if let Some(size) = tty.window_size {
                let (columns, rows) = translate::window(Some(size));
                let mut r = self.process.set_tty_request();
                let mut w = r.get().init_window_size();
                w.set_columns(columns);
                w.set_rows(rows);
                if let Err(e) = r.send().promise.await {
                    tracing::debug!(error = %e, "set tty");
                }
            }
        } else if payload.source.is_some() {
            match payload.data {
                Some(data) => self.stdin.write(data.as_bytes()).await,
                None => self.stdin.close(),
            }
        } else if let Some(signal) = payload.signal {
            let signal = match signal {
                0 => api::Signal::Terminate,
                1 => api::Signal::Kill,
                _ => {
                    self.stdin.close();
                    self.accepting = false;
                    return;
                }
            };
            let mut r = self.process.signal_request();
            r.get().set_signal(signal);
            if let Err(e) = r.send().promise.await {
                tracing::debug!(error = %e, "signal");
            }
        } else {
            self.stdin.close();
            self.accepting = false;
        }
    }
}

/// `GET …/processes/:pid/attaches/:streamid/stdout|stderr`: a Grove attach
/// of that one stream, relayed raw until it ends or the client goes.
pub async fn output(
    ctx: &Rc<Ctx>,
    conn: &mut Conn,
    handle: &str,
    pid: &str,
    sid: &str,
    stderr: bool,
) {
    if !ctx.streams.borrow_mut().valid(sid, handle, pid) {
        // Garden answers 200 and an empty stream for an unknown stream id,
        // which a client cannot tell from a process with no output.
        let e = GardenError::process_not_found(pid);
        write_hijack_error(conn, &e).await;
        return;
    }
    let (sink, mut pieces) = sink::bounded(4);
    let attached = async {
        let c = container(ctx, handle).await?;
        let mut r = c.attach_request();
        r.get().set_process_id(pid);
        let mut io = r.get().init_io();
        if stderr {
            io.set_stderr(sink);
        } else {
            io.set_stdout(sink);
        }
        let process = r.send().pipeline.get_process();
        process_id(ctx, &process, handle, pid).await?;
        Ok::<_, GardenError>(process)
    };
    let _process = match attached.await {
        Ok(p) => p,
        Err(e) => {
            write_hijack_error(conn, &e).await;
            return;
        }
    };
    if http::write_hijack_head(&mut conn.writer, 200, "application/octet-stream")
        .await
        .is_err()
    {
        return;
    }
    let Conn { reader, writer } = conn;
    loop {
        tokio::select! {
            piece = pieces.recv() => match piece {
                Some(Piece::Data(data)) => {
                    if writer.write_all(&data).await.is_err() || writer.flush().await.is_err() {
                        break;
                    }
                }
                Some(Piece::Done) | None => break,
            },
            // The client hung up: stop now, not at the next write, so the
            // next attach gets what this one would have lost.
            _ = reader.closed() => break,
        }
    }
    let _ = writer.shutdown().await;
}
