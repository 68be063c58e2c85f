//! Connecting a SOCK_SEQPACKET unix socket from async code.
//!
//! A unix socket's non-blocking connect either connects at once or fails
//! with EAGAIN when the listener's accept queue is full; nothing is ever "in
//! progress". tokio-seqpacket's `connect` takes EAGAIN for a connection under
//! way and hands back an unconnected socket, so the connect is done here,
//! retrying with a short backoff while the queue is full.

use nix::sys::socket::{
    connect as connect_fd, socket, AddressFamily, SockFlag, SockType, UnixAddr,
};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;
use tokio_seqpacket::UnixSeqpacket;

/// How long to keep trying while the accept queue is full.
const PATIENCE: Duration = Duration::from_secs(10);

pub async fn connect(path: &Path) -> std::io::Result<UnixSeqpacket> {
    let address = UnixAddr::new(path)?;
    let mut delay = Duration::from_millis(1);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        match connect_fd(fd.as_raw_fd(), &address) {
            Ok(()) => return UnixSeqpacket::try_from(fd),
            Err(nix::errno::Errno::EAGAIN) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
