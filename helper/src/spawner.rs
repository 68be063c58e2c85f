//! The spawner: a process the helper forks at start-up, before it confines
//! itself, whose only job is to start containers (spawn.rs: clone into
//! namespaces, mounts, pivot_root, exec wshd) when the helper asks.
//!
//! Why a separate process: seccomp filters pass to every child and cannot
//! be lifted, and a container's first process needs mount, pivot_root,
//! setns and the rest — as does, through it, everything in the container.
//! So the helper's main process, the one that reads groved's requests,
//! confines itself to an allowlist *without* those calls, and leaves them
//! to the spawner, which talks only to the helper over a socketpair made
//! before the fork (nobody else holds either end) and does nothing but
//! build the container the request describes. The request carries what
//! the main process validated; the fds it attaches (the container's depot
//! dir, its log and socket, the rootfs dir, its namespaces) were opened by
//! the main process. The spawner answers with wshd's pid and a pidfd, and
//! reaps wshd when it exits.

use crate::cgroup::Cgroups;
use crate::spawn::{self, Lower, Spawn, UserNs};
use grove_schema::helper::BindMount;
use grove_schema::Handle;
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use serde::{Deserialize, Serialize};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The largest request (binds carry paths of up to 1 KiB each).
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Serialize, Deserialize)]
enum LowerSpec {
    /// fds[3] is the rootfs directory.
    Dir {
        path: String,
    },
    Layers(Vec<String>),
}

#[derive(Serialize, Deserialize)]
struct Request {
    handle: Handle,
    depot_path: String,
    lower: LowerSpec,
    server_uid: u32,
    /// Some: a user namespace with this mapping (and a network namespace
    /// owned by it), made here.
    userns_base: Option<u32>,
    /// The host uid owning that user namespace.
    userns_owner: u32,
    binds: Vec<BindMount>,
    volatile: bool,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    /// wshd's pid; its pidfd is attached.
    Started(i32),
    Failed(String),
}

pub struct Spawner {
    sock: OwnedFd,
}

fn send(sock: BorrowedFd, bytes: &[u8], fds: &[RawFd]) -> Result<(), Errno> {
    let iov = [IoSlice::new(bytes)];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None).map(drop)
}

/// One message and the fds that came with it (closed on drop).
fn receive(sock: BorrowedFd) -> Result<(Vec<u8>, Vec<OwnedFd>), Errno> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cmsg = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            // SAFETY: the kernel just installed these fds in this process
            // for us; nothing else owns them.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC)
    {
        return Err(Errno::EMSGSIZE);
    }
    let n = msg.bytes;
    buf.truncate(n);
    Ok((buf, fds))
}

impl Spawner {
    /// Fork the spawner. `wshd` and `cgroups` are what it needs of the
    /// helper; `close` are fds of the helper's it must not keep (the
    /// listening socket, the depot and runtime dirs). The helper must still
    /// be single-threaded and unconfined.
    pub fn start(
        wshd: &OwnedFd,
        cgroups: &dyn Cgroups,
        close: &[RawFd],
    ) -> Result<Spawner, String> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("socketpair: {e}"))?;
        // SAFETY: the helper is single-threaded at start-up, so the child is
        // a complete copy; it never returns from its branch (it loops until
        // the helper's end closes, then _exits).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop(ours);
            for fd in close {
                // SAFETY: these are the helper's fds, which this copy of
                // the process never uses; closing them only drops its
                // references (the helper keeps its own).
                unsafe { libc::close(*fd) };
            }
            serve(theirs.as_fd(), wshd.as_fd(), cgroups);
            // SAFETY: _exit ends the spawner without running the helper's
            // destructors.
            unsafe { libc::_exit(0) };
        }
        if pid < 0 {
            return Err(format!("fork: {}", Errno::last()));
        }
        drop(theirs);
        log_info!("grove-helper: spawner started (pid {pid})");
        Ok(Spawner { sock: ours })
    }

    /// Start a container as `s` describes (see spawn::spawn).
    pub fn spawn(&self, s: &Spawn) -> Result<spawn::Child, String> {
        let mut fds: Vec<RawFd> = vec![
            s.container_dir.as_raw_fd(),
            s.log.as_raw_fd(),
            s.socket.as_raw_fd(),
        ];
        let lower = match &s.lower {
            Lower::Dir { path, fd } => {
                fds.push(fd.as_raw_fd());
                LowerSpec::Dir {
                    path: path.to_string(),
                }
            }
            Lower::Layers(ids) => {
                // A placeholder keeps the namespaces' places fixed.
                fds.push(s.container_dir.as_raw_fd());
                LowerSpec::Layers(ids.to_vec())
            }
        };
        let request = Request {
            handle: s.handle.clone(),
            depot_path: s.depot_path.to_string(),
            lower,
            server_uid: s.server_uid,
            userns_base: s.userns_base,
            userns_owner: s.userns_owner,
            binds: s.binds.to_vec(),
            volatile: s.volatile,
        };
        let bytes = postcard::to_allocvec(&request).map_err(|e| format!("spawner request: {e}"))?;
        send(self.sock.as_fd(), &bytes, &fds).map_err(|e| format!("asking the spawner: {e}"))?;
        let (answer, mut got) =
            receive(self.sock.as_fd()).map_err(|e| format!("the spawner's answer: {e}"))?;
        match postcard::from_bytes::<Reply>(&answer) {
            Ok(Reply::Started(pid)) if got.len() == 1 => Ok(spawn::Child {
                pid,
                pidfd: got.remove(0),
            }),
            Ok(Reply::Failed(e)) => Err(e),
            _ => Err("the spawner's answer is malformed".into()),
        }
    }
}

/// The spawner's loop: one request, one answer, until the helper goes.
fn serve(sock: BorrowedFd, wshd: BorrowedFd, cgroups: &dyn Cgroups) {
    loop {
        reap();
        // Wait for a request, waking now and then to reap exited wshds.
        let mut fds = [nix::poll::PollFd::new(sock, nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let (bytes, fds) = match receive(sock) {
            Ok((b, _)) if b.is_empty() => return, // the helper closed its end
            Ok(x) => x,
            Err(_) => return,
        };
        let reply = match postcard::from_bytes::<Request>(&bytes) {
            Ok(r) => start_one(r, &fds, wshd, cgroups),
            Err(e) => Err(format!("malformed spawner request: {e}")),
        };
        let (reply, pidfd) = match reply {
            Ok(child) => (Reply::Started(child.pid), Some(child.pidfd)),
            Err(e) => (Reply::Failed(e), None),
        };
        let bytes = postcard::to_allocvec(&reply).unwrap_or_default();
        let attach: Vec<RawFd> = pidfd.iter().map(|f| f.as_raw_fd()).collect();
        if send(sock, &bytes, &attach).is_err() {
            return;
        }
    }
}

fn start_one(
    r: Request,
    fds: &[OwnedFd],
    wshd: BorrowedFd,
    cgroups: &dyn Cgroups,
) -> Result<spawn::Child, String> {
    if fds.len() != 4 {
        return Err(format!("spawner: {} fds, not 4", fds.len()));
    }
    // The container's own user namespace and a network namespace owned by
    // it, made here: unshare is not among what the helper's main process
    // may call.
    let namespaces = match r.userns_base {
        Some(base) => Some(crate::userns::make_namespaces(base, r.userns_owner)?),
        None => None,
    };
    let lower = match &r.lower {
        LowerSpec::Dir { path } => Lower::Dir {
            path,
            fd: fds[3].as_fd(),
        },
        LowerSpec::Layers(ids) => Lower::Layers(ids),
    };
    let spec = Spawn {
        handle: &r.handle,
        depot_path: &r.depot_path,
        container_dir: fds[0].as_fd(),
        lower,
        log: fds[1].as_fd(),
        socket: fds[2].as_fd(),
        wshd,
        server_uid: r.server_uid,
        userns_base: r.userns_base,
        userns_owner: r.userns_owner,
        userns: namespaces.as_ref().map(|n| UserNs {
            user: n.user.as_fd(),
            net: n.net.as_fd(),
        }),
        binds: &r.binds,
        volatile: r.volatile,
    };
    spawn::spawn(&spec, |pid| cgroups.enter(&r.handle, pid))
}

/// Reap every exited child (the wshds this process started).
fn reap() {
    while let Ok(status) = waitpid(None::<nix::unistd::Pid>, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
