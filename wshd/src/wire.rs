//! SOCK_SEQPACKET I/O on tokio's reactor: accept, one datagram in (no fds,
//! no truncation), one datagram out (with SCM_RIGHTS fds).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use grove_schema::wshd::{ErrorKind, WshdError, MAX_DATAGRAM, MAX_FDS};
use nix::errno::Errno;
use nix::sys::socket::{
    accept4, getsockopt, recv, recvmsg, sendmsg, sockopt, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType, UnixAddr,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?;
    fcntl(
        fd.as_raw_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

pub struct Listener {
    fd: AsyncFd<OwnedFd>,
}

impl Listener {
    /// Takes a bound, listening SOCK_SEQPACKET socket.
    pub fn new(fd: OwnedFd) -> std::io::Result<Listener> {
        let ty = getsockopt(&fd, sockopt::SockType)?;
        if ty != SockType::SeqPacket {
            return Err(std::io::Error::other(format!(
                "not a SOCK_SEQPACKET socket ({ty:?})"
            )));
        }
        if !getsockopt(&fd, sockopt::AcceptConn)? {
            return Err(std::io::Error::other("socket is not listening"));
        }
        set_nonblocking(&fd)?;
        // SAFETY: an OwnedFd stays open and keeps its number until dropped,
        // which is when the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }?;
        Ok(Listener { fd })
    }

    pub fn as_raw_fd(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    pub async fn accept(&self) -> std::io::Result<Conn> {
        loop {
            let mut guard = self.fd.readable().await?;
            match accept4(
                self.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                // SAFETY: accept4 returned a fresh fd that nothing else owns.
                Ok(fd) => return Conn::new(unsafe { OwnedFd::from_raw_fd(fd) }),
                Err(Errno::EAGAIN) => guard.clear_ready(),
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

pub enum RecvError {
    /// The peer broke the framing rules; answer with this, then hang up.
    Refused(WshdError),
    Io(std::io::Error),
}

pub struct PeerCred {
    pub uid: u32,
    pub pid: i32,
}

pub struct Conn {
    fd: AsyncFd<OwnedFd>,
}

impl Conn {
    fn new(fd: OwnedFd) -> std::io::Result<Conn> {
        // SAFETY: as for the listener.
        Ok(Conn {
            fd: unsafe { AsyncFd::register(fd) }?,
        })
    }

    fn raw(&self) -> RawFd {
        self.fd.get_ref().as_raw_fd()
    }

    pub fn peer_cred(&self) -> std::io::Result<PeerCred> {
        let c = getsockopt(self.fd.get_ref(), sockopt::PeerCredentials)?;
        Ok(PeerCred {
            uid: c.uid(),
            pid: c.pid(),
        })
    }

    /// One datagram; `None` at end of stream. Truncated datagrams and
    /// datagrams carrying control messages (fds are closed) are refused.
    pub async fn recv(&self) -> Result<Option<Vec<u8>>, RecvError> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        loop {
            let mut guard = self.fd.readable().await.map_err(RecvError::Io)?;
            let mut iov = [IoSliceMut::new(&mut buf)];
            let res = recvmsg::<UnixAddr>(
                self.raw(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let msg = match res {
                Ok(m) => m,
                Err(Errno::EAGAIN) => {
                    guard.clear_ready();
                    continue;
                }
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(RecvError::Io(e.into())),
            };
            let (n, flags) = (msg.bytes, msg.flags);
            let mut had_cmsg = false;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    had_cmsg = true;
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for fd in fds {
                            // SAFETY: the kernel just installed these fds for us.
                            drop(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
            }
            let refuse =
                |m: String| Err(RecvError::Refused(WshdError::new(ErrorKind::Malformed, m)));
            if flags.contains(MsgFlags::MSG_TRUNC) {
                return refuse(format!("datagram larger than {MAX_DATAGRAM} bytes"));
            }
            if flags.contains(MsgFlags::MSG_CTRUNC) || had_cmsg {
                return refuse("requests carry no control messages or fds".into());
            }
            if n == 0 {
                return Ok(None);
            }
            buf.truncate(n);
            return Ok(Some(buf));
        }
    }

    /// Sends one datagram with `fds` attached.
    pub async fn send(&self, bytes: &[u8], fds: &[OwnedFd]) -> std::io::Result<()> {
        let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let cmsgs = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &cmsgs };
        loop {
            let mut guard = self.fd.writable().await?;
            let iov = [IoSlice::new(bytes)];
            match sendmsg::<UnixAddr>(
                self.raw(),
                &iov,
                cmsgs,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(Errno::EAGAIN) => guard.clear_ready(),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Resolves when the peer hangs up or sends something (while an answer
    /// is pending, both end the connection).
    pub async fn closed_or_spoke(&self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return;
            };
            let mut b = [0u8; 1];
            match recv(
                self.raw(),
                &mut b,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT,
            ) {
                Err(Errno::EAGAIN) => guard.clear_ready(),
                Err(Errno::EINTR) => continue,
                _ => return,
            }
        }
    }
}
