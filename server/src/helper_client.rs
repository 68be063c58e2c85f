//! groved's side of the grove-helper protocol: SOCK_SEQPACKET connections
//! with one request in flight on each. Creates from an image have a
//! connection of their own: the helper answers them once the image is
//! unpacked, and serves the other connection meanwhile.

use crate::error::{ApiError, ApiResult, Code};
use grove_schema::helper::{self, ErrorKind, HelperError, Request, Response};
use std::cell::Cell;
use std::io::IoSliceMut;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use tokio::sync::{Mutex, Notify};
use tokio_seqpacket::ancillary::OwnedAncillaryMessage;
use tokio_seqpacket::UnixSeqpacket;

/// Requests never refused for a full queue: a destroy frees what the
/// others wait for, and groved's own upkeep (reconcile, its health check,
/// an OOM or exit watch of a container just made) must not be lost to a burst of
/// client requests. All are quick for the helper.
fn always_queued(request: &Request) -> bool {
    matches!(
        request,
        Request::DestroyContainer { .. }
            | Request::ListContainers
            | Request::Ping
            | Request::WatchOom { .. }
            | Request::WatchExit { .. }
    )
}

/// How a request refused for a full queue begins (see `never_sent`).
const BUSY: &str = "grove-helper is busy";

/// Whether `e` refused a request before it was sent (a full queue): the
/// helper cannot have acted on it, so there is nothing to roll back.
pub fn never_sent(e: &ApiError) -> bool {
    e.code == Code::ServiceUnavailable && e.message.starts_with(BUSY)
}

/// Whether the helper may answer `request` only after an image unpack.
fn unpacks(request: &Request) -> bool {
    matches!(
        request,
        Request::CreateContainer {
            rootfs: helper::RootfsSource::OciLayout { .. }
                | helper::RootfsSource::DockerArchive { .. },
            ..
        }
    )
}

pub struct HelperClient {
    path: PathBuf,
    /// The connections: [0] for every request but creates from an image,
    /// [1] for those (one at a time: the helper unpacks an image once, and
    /// a second create of it then finds its layers). Each is `None` until
    /// its first call, and after any failure: a call whose future is
    /// dropped midway takes the connection with it, so an answer can never
    /// be read by the wrong caller.
    connections: [Mutex<Option<UnixSeqpacket>>; 2],
    /// Told whenever a connection to the helper was found broken (the
    /// helper exited or restarted): groved then waits for it to answer
    /// again and reconciles (see `Grove::watch_helper`).
    pub lost: Notify,
    /// Requests sent or waiting to be (`helper_queue_limit` bounds them).
    outstanding: Cell<usize>,
    queue_limit: usize,
}

/// Counts a request as outstanding while it lives.
struct Outstanding<'a>(&'a Cell<usize>);

impl Drop for Outstanding<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl HelperClient {
    pub fn new(path: PathBuf, queue_limit: usize) -> HelperClient {
        HelperClient {
            path,
            connections: [Mutex::new(None), Mutex::new(None)],
            lost: Notify::new(),
            outstanding: Cell::new(0),
            queue_limit,
        }
    }

    /// Requests sent to the helper or waiting to be: its queue depth.
    pub fn in_flight(&self) -> usize {
        self.outstanding.get()
    }

    pub async fn call(&self, request: &Request) -> ApiResult<Response> {
        self.call_with_fds(request)
            .await
            .map(|(response, _)| response)
    }

    /// A request whose answer may carry file descriptors.
    pub async fn call_with_fds(&self, request: &Request) -> ApiResult<(Response, Vec<OwnedFd>)> {
        let waiting = self.outstanding.get();
        if waiting >= self.queue_limit && !always_queued(request) {
            return Err(ApiError::new(
                Code::ServiceUnavailable,
                format!(
                    "{BUSY}: {waiting} requests are waiting for it \
                     (helper_queue_limit); try again"
                ),
            ));
        }
        self.outstanding.set(waiting + 1);
        let _outstanding = Outstanding(&self.outstanding);
        let mut slot = self.connections[usize::from(unpacks(request))].lock().await;
        let request = helper::encode_request(request);
        let socket = match slot.take() {
            // A kept connection whose helper has gone refuses the send
            // (EPIPE): nothing was delivered, so a new connection to a
            // restarted helper may carry the request.
            Some(socket) if socket.send(&request).await.is_ok() => socket,
            kept => {
                if kept.is_some() {
                    self.lost.notify_one();
                }
                let socket = crate::seqpacket::connect(&self.path)
                    .await
                    .map_err(|e| self.unavailable(e))?;
                socket.send(&request).await.map_err(|e| self.broken(e))?;
                socket
            }
        };
        let mut buffer = vec![0u8; helper::MAX_RESPONSE + 1];
        let mut ancillary = [0u8; 128];
        let (info, messages) = socket
            .recv_vectored_with_ancillary(&mut [IoSliceMut::new(&mut buffer)], &mut ancillary)
            .await
            .map_err(|e| self.broken(e))?;
        let mut fds = Vec::new();
        for message in messages.into_messages() {
            if let OwnedAncillaryMessage::FileDescriptors(received) = message {
                fds.extend(received);
            }
        }
        if info.bytes_read() == 0 {
            return Err(self.broken("the helper closed the connection"));
        }
        let response = helper::decode_response(&buffer[..info.bytes_read()]).map_err(|e| {
            ApiError::internal(format!("undecodable answer from grove-helper: {e}"))
        })?;
        *slot = Some(socket);
        match response {
            Response::Error(e) => Err(from_helper_error(e)),
            other => Ok((other, fds)),
        }
    }

    /// A connection that broke under a request: the helper may have died
    /// while it worked on it.
    fn broken(&self, e: impl std::fmt::Display) -> ApiError {
        self.lost.notify_one();
        self.unavailable(e)
    }

    fn unavailable(&self, e: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            Code::ServiceUnavailable,
            format!("grove-helper at {}: {e}", self.path.display()),
        )
    }
}

fn from_helper_error(e: HelperError) -> ApiError {
    let code = match e.kind {
        ErrorKind::PolicyRefused => Code::PolicyRefused,
        ErrorKind::InvalidValue => Code::InvalidSpec,
        ErrorKind::NotFound => Code::ContainerNotFound,
        ErrorKind::AlreadyExists => Code::HandleTaken,
        ErrorKind::InvalidState => Code::InvalidState,
        ErrorKind::LimitExceeded => Code::LimitExceeded,
        ErrorKind::Malformed | ErrorKind::UnsupportedVersion => Code::Internal,
        ErrorKind::System => Code::Internal,
    };
    ApiError::new(code, format!("grove-helper: {}", e.message))
}
