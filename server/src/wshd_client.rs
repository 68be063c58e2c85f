//! groved's side of the wshd protocol: a connection per operation to the
//! container's wshd socket; answers may carry file descriptors.

use crate::error::{ApiError, ApiResult, Code};
use crate::seqpacket;
use grove_schema::wshd::{self, ErrorKind, Request, Response, WshdError};
use std::io::IoSliceMut;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_seqpacket::ancillary::OwnedAncillaryMessage;
use tokio_seqpacket::UnixSeqpacket;

pub struct WshdConnection {
    socket: UnixSeqpacket,
    path: PathBuf,
}

impl WshdConnection {
    pub async fn connect(path: &Path) -> ApiResult<WshdConnection> {
        let socket = seqpacket::connect(path)
            .await
            .map_err(|e| unavailable(path, e))?;
        Ok(WshdConnection {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// Send a request and read its answer with the fds attached to it.
    pub async fn call(&self, request: &Request) -> ApiResult<(Response, Vec<OwnedFd>)> {
        self.call_answer(request).await?.map_err(from_wshd_error)
    }

    /// As `call`, with wshd's own error kept as wshd sent it.
    async fn call_answer(&self, request: &Request) -> ApiResult<Answer> {
        self.socket
            .send(&wshd::encode(request))
            .await
            .map_err(|e| unavailable(&self.path, e))?;
        let mut buffer = vec![0u8; wshd::MAX_DATAGRAM + 1];
        let mut ancillary = [0u8; 256];
        let (info, messages) = self
            .socket
            .recv_vectored_with_ancillary(&mut [IoSliceMut::new(&mut buffer)], &mut ancillary)
            .await
            .map_err(|e| unavailable(&self.path, e))?;
        let mut fds = Vec::new();
        for message in messages.into_messages() {
            if let OwnedAncillaryMessage::FileDescriptors(received) = message {
                fds.extend(received);
            }
        }
        if info.bytes_read() == 0 {
            return Err(unavailable(&self.path, "wshd closed the connection"));
        }
        if info.truncated() || info.ancillary_truncated() {
            return Err(ApiError::internal("truncated answer from wshd"));
        }
        let response = wshd::decode::<Response>(&buffer[..info.bytes_read()])
            .map_err(|e| ApiError::internal(format!("undecodable answer from wshd: {e}")))?;
        match response {
            Response::Error(e) => Ok(Err(e)),
            other => Ok(Ok((other, fds))),
        }
    }
}

/// wshd's answer: a response with its fds, or wshd's error.
pub type Answer = Result<(Response, Vec<OwnedFd>), WshdError>;

/// How long wshd may take to answer anything but `Wait`.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// One request on a fresh connection. Every request but `Wait` (answered
/// when the process exits) must be answered within ANSWER_TIMEOUT, so a
/// container that wedges its wshd cannot hang groved.
pub async fn call(path: &Path, request: &Request) -> ApiResult<(Response, Vec<OwnedFd>)> {
    call_answer(path, request).await?.map_err(from_wshd_error)
}

/// As `call`, with wshd's own error kept as wshd sent it (for a caller
/// that gives one of its kinds a meaning of its own).
pub async fn call_answer(path: &Path, request: &Request) -> ApiResult<Answer> {
    let exchange = async {
        WshdConnection::connect(path)
            .await?
            .call_answer(request)
            .await
    };
    if matches!(request, Request::Wait { .. }) {
        return exchange.await;
    }
    tokio::time::timeout(ANSWER_TIMEOUT, exchange)
        .await
        .map_err(|_| {
            unavailable(
                path,
                format!("no answer within {} s", ANSWER_TIMEOUT.as_secs()),
            )
        })?
}

fn unavailable(path: &Path, e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        Code::ServiceUnavailable,
        format!("wshd at {}: {e}", path.display()),
    )
}

fn from_wshd_error(e: WshdError) -> ApiError {
    let code = match e.kind {
        ErrorKind::DuplicateId | ErrorKind::InvalidSpec | ErrorKind::UnknownUser => {
            Code::InvalidSpec
        }
        ErrorKind::ProcessNotFound => Code::ProcessNotFound,
        ErrorKind::ExecutableNotFound => Code::ExecutableNotFound,
        ErrorKind::Malformed | ErrorKind::UnsupportedVersion | ErrorKind::System => Code::Internal,
    };
    ApiError::new(code, e.message)
}
