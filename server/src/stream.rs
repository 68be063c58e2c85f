//! streamIn and streamOut: tar archives into and out of a container.
//!
//! wshd does the filesystem work inside the container, in a child that has
//! taken the user's identity (see grove_schema::wshd). groved only moves
//! bytes: for streamIn, from the client's ByteStream into the pipe the child
//! extracts from; for streamOut, from the pipe the child writes the tar to
//! into the client's ByteStream, one awaited write at a time (Cap'n Proto
//! flow control), then `done`. Each stream holds one wshd connection for
//! its whole life: wshd kills a stream whose connection closes, so a client
//! that goes away mid-stream leaves nothing running.

use crate::containers::{Container, Phase};
use crate::error::{ApiError, ApiResult, Code};
use crate::process::async_fd;
use crate::wshd_client::WshdConnection;
use grove_schema::api_capnp::byte_stream;
use grove_schema::wshd::{Request, Response};
use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// Most bytes read from the pipe at once (and sent in one write).
const CHUNK: usize = 256 * 1024;

/// How long wshd may take to start a stream (it checks the path first).
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn check_request(container: &Container, path: &str) -> ApiResult<()> {
    match container.phase() {
        Phase::Active | Phase::Stopping | Phase::Stopped => {}
        Phase::Creating | Phase::Destroying => {
            return Err(ApiError::not_found(container.handle.as_str()))
        }
    }
    if path.is_empty() {
        return Err(ApiError::invalid("path", "empty"));
    }
    if !path.starts_with('/') {
        return Err(ApiError::invalid(
            "path",
            format!("{path:?} is not an absolute path"),
        ));
    }
    if path.contains('\0') {
        return Err(ApiError::invalid(
            "path",
            format!("{path:?} contains a NUL"),
        ));
    }
    Ok(())
}

/// Ask wshd to start a stream; its answer carries one fd.
async fn start(container: &Container, request: Request) -> ApiResult<(Stream, OwnedFd)> {
    let exchange = async {
        let conn = WshdConnection::connect(&container.wshd_socket).await?;
        let (response, fds) = conn.call(&request).await?;
        Ok::<_, ApiError>((conn, response, fds))
    };
    let (conn, response, fds) = tokio::time::timeout(START_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            ApiError::new(
                Code::ServiceUnavailable,
                format!(
                    "wshd of {} did not start the stream within {} s",
                    container.handle,
                    START_TIMEOUT.as_secs()
                ),
            )
        })??;
    let Response::StreamStarted { id } = response else {
        return Err(ApiError::internal(format!(
            "unexpected answer to a stream request: {response:?}"
        )));
    };
    let mut fds = fds.into_iter();
    let (Some(fd), None) = (fds.next(), fds.next()) else {
        return Err(ApiError::internal(
            "wshd did not pass exactly one fd with StreamStarted",
        ));
    };
    Ok((Stream { conn, id }, fd))
}

/// One stream in wshd, on its own connection.
struct Stream {
    conn: WshdConnection,
    id: u64,
}

impl Stream {
    /// The child's outcome, once it has exited.
    async fn wait(&self) -> ApiResult<()> {
        match self.conn.call(&Request::StreamWait { id: self.id }).await? {
            (Response::StreamFinished, _) => Ok(()),
            (other, _) => Err(ApiError::internal(format!(
                "unexpected answer to StreamWait: {other:?}"
            ))),
        }
    }
}

/// streamIn: the ByteStream the client writes the tar to.
pub async fn stream_in(
    container: &Rc<Container>,
    path: String,
    user: String,
) -> ApiResult<TarSink> {
    check_request(container, &path)?;
    let mut sink = open_sink(container, path, user).await?;
    sink.container = Some(container.clone());
    Ok(sink)
}

/// Extract a whole archive held in memory into the directory `path`, as
/// root: groved's own files in a container (/etc/hosts, ...). Works while
/// the container is still being created.
pub async fn put_archive(container: &Container, path: &str, archive: &[u8]) -> ApiResult<()> {
    let sink = open_sink(container, path.to_string(), String::new()).await?;
    for chunk in archive.chunks(CHUNK) {
        sink.write(chunk).await?;
    }
    sink.finish().await
}

async fn open_sink(container: &Container, path: String, user: String) -> ApiResult<TarSink> {
    let request = Request::StreamIn {
        path: path.clone(),
        user: Some(user).filter(|u| !u.is_empty()),
    };
    let (stream, fd) = start(container, request).await?;
    tracing::info!(handle = %container.handle, %path, stream = stream.id, "streamIn started");
    Ok(TarSink {
        stream,
        pipe: RefCell::new(Some(Rc::new(async_fd(fd)?))),
        outcome: RefCell::new(None),
        container: None,
        handle: container.handle.to_string(),
        path,
    })
}

/// The client's end of a streamIn: writes go into the pipe wshd's child
/// extracts from; `done` closes it and answers with the extraction's
/// outcome. Dropped without `done`, the pipe closes early and the child
/// fails on the cut archive (and wshd forgets it with the connection).
pub struct TarSink {
    stream: Stream,
    pipe: RefCell<Option<Rc<AsyncFd<OwnedFd>>>>,
    /// The outcome, once known (a write that found the child gone asks).
    outcome: RefCell<Option<ApiResult<()>>>,
    /// A client's streamIn: a write or done that a destroy overtook (it
    /// killed wshd under the extraction) answers as if the destroy had come
    /// first, like every other call (`Container::overtaken`).
    container: Option<Rc<Container>>,
    handle: String,
    path: String,
}

impl TarSink {
    async fn write(&self, mut data: &[u8]) -> ApiResult<()> {
        if let Some(outcome) = self.outcome.borrow().clone() {
            return match outcome {
                Ok(()) => Err(self.finished()),
                Err(e) => Err(e),
            };
        }
        let pipe = self.pipe.borrow().clone().ok_or_else(|| self.finished())?;
        while !data.is_empty() {
            let mut guard = pipe.writable().await.map_err(ApiError::internal)?;
            match guard.try_io(|fd| {
                nix::unistd::write(fd.get_ref().as_fd(), data).map_err(std::io::Error::from)
            }) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EPIPE) => {
                    // The child stopped reading: it failed (or the archive
                    // ended before the data did). Its error is the answer.
                    drop(guard);
                    let outcome = self.finish().await;
                    return match outcome {
                        Ok(()) => Err(ApiError::invalid(
                            "data",
                            format!("streamIn {}: bytes after the end of the tar", self.path),
                        )),
                        Err(e) => Err(e),
                    };
                }
                Ok(Err(e)) => {
                    return Err(ApiError::internal(format!(
                        "streamIn {}: writing to the extractor: {e}",
                        self.path
                    )))
                }
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Close the pipe (end of the archive) and get the child's outcome.
    async fn finish(&self) -> ApiResult<()> {
        if let Some(outcome) = self.outcome.borrow().clone() {
            return outcome;
        }
        self.pipe.borrow_mut().take();
        let outcome = self.stream.wait().await;
        match &outcome {
            Ok(()) => tracing::info!(handle = %self.handle, path = %self.path, "streamIn finished"),
            Err(e) => {
                tracing::info!(handle = %self.handle, path = %self.path, error = %e, "streamIn failed")
            }
        }
        *self.outcome.borrow_mut() = Some(outcome.clone());
        outcome
    }

    fn finished(&self) -> ApiError {
        ApiError::new(
            Code::InvalidState,
            format!("streamIn {}: the stream is finished", self.path),
        )
    }
}

impl byte_stream::Server for TarSink {
    async fn write(self: Rc<Self>, params: byte_stream::WriteParams) -> Result<(), capnp::Error> {
        let data = params.get()?.get_data()?;
        TarSink::write(&self, data)
            .await
            .map_err(|e| self.overtaken(e))?;
        Ok(())
    }

    async fn done(
        self: Rc<Self>,
        _: byte_stream::DoneParams,
        _: byte_stream::DoneResults,
    ) -> Result<(), capnp::Error> {
        self.finish().await.map_err(|e| self.overtaken(e))?;
        Ok(())
    }
}

impl TarSink {
    fn overtaken(&self, e: ApiError) -> ApiError {
        match &self.container {
            Some(container) => container.overtaken(e),
            None => e,
        }
    }
}

/// streamOut: a tar of `path` into `sink`, then `done`. Answers once the
/// client's sink has taken everything (and `done`), or with the error; on
/// an error, `done` is not sent.
pub async fn stream_out(
    container: &Container,
    path: String,
    user: String,
    sink: byte_stream::Client,
) -> ApiResult<()> {
    check_request(container, &path)?;
    let request = Request::StreamOut {
        path: path.clone(),
        user: Some(user).filter(|u| !u.is_empty()),
    };
    let (stream, fd) = start(container, request).await?;
    tracing::info!(handle = %container.handle, %path, stream = stream.id, "streamOut started");
    let pipe = async_fd(fd)?;
    let mut buffer = vec![0u8; CHUNK];
    let mut sent: u64 = 0;
    loop {
        let mut guard = pipe.readable().await.map_err(ApiError::internal)?;
        let read = guard.try_io(|fd| {
            nix::unistd::read(fd.get_ref().as_raw_fd(), &mut buffer).map_err(std::io::Error::from)
        });
        let n = match read {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                return Err(ApiError::internal(format!(
                    "streamOut {path}: reading the tar: {e}"
                )))
            }
            Err(_would_block) => continue,
        };
        drop(guard);
        let mut request = sink.write_request();
        request.get().set_data(&buffer[..n]);
        // Resolves when flow control lets another write go.
        request.send().await.map_err(|e| {
            ApiError::new(
                Code::ServiceUnavailable,
                format!("streamOut {path}: the client's sink failed: {}", e.extra),
            )
        })?;
        sent += n as u64;
    }
    drop(pipe);
    if let Err(e) = stream.wait().await {
        tracing::info!(handle = %container.handle, %path, error = %e, "streamOut failed");
        return Err(e);
    }
    sink.done_request().send().promise.await.map_err(|e| {
        ApiError::new(
            Code::ServiceUnavailable,
            format!(
                "streamOut {path}: the client's sink failed at done: {}",
                e.extra
            ),
        )
    })?;
    tracing::info!(handle = %container.handle, %path, bytes = sent, "streamOut finished");
    Ok(())
}
