//! The socket loop: one listening SOCK_SEQPACKET socket, a few connections
//! from the server uid, one request and one response per datagram. A peer
//! that breaks the protocol gets one error and loses its connection; the
//! helper goes on serving everyone else.
//!
//! A create from an image answers later: its unpack runs in a child, and
//! the loop polls that child's report pipe in place of the connection
//! (which sends nothing more until answered: groved has one request in
//! flight per connection) while it serves the others.

use crate::container::{Handled, Helper, PendingCreate};
use crate::logline::Level;
use crate::systemd::{Notifier, NotifyState};
use grove_schema::helper::{
    decode_request, encode_response, ErrorKind, HelperError, Response, MAX_DATAGRAM, MAX_FDS,
};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    accept4, getsockopt, sendmsg, shutdown, sockopt, ControlMessage, MsgFlags, Shutdown, SockFlag,
};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// Most connections served at once (groved needs one or two). Only
/// accepted connections of the server uid count.
const MAX_CONNECTIONS: usize = 16;
/// Most refused connections kept lingering at once; past that a refused
/// peer is hung up on at once. Kept apart from MAX_CONNECTIONS so refused
/// peers (any member of the socket's group) cannot crowd out the server.
const MAX_LINGERING: usize = 16;
/// How long a refused peer has to read its error before we hang up.
const LINGER: Duration = Duration::from_secs(2);

struct Conn {
    fd: OwnedFd,
    uid: u32,
    /// Set once the peer was refused: its error is sent and our side shut
    /// down for writing; what it still sends is read and dropped until it
    /// hangs up or the deadline passes. Closing at once with its datagrams
    /// unread would make the kernel reset the connection, and the peer
    /// could lose the error that says why.
    closing: Option<Instant>,
    /// A create of this peer waiting for its image's unpack.
    waiting: Option<Waiting>,
}

struct Waiting {
    create: Box<PendingCreate>,
    /// For the log line written when it is answered.
    summary: String,
    start: Instant,
}

impl Conn {
    fn refuse(fd: OwnedFd, uid: u32, error: HelperError) -> Conn {
        reply(&fd, uid, &Response::Error(error), &[]);
        let _ = shutdown(fd.as_raw_fd(), Shutdown::Write);
        Conn {
            fd,
            uid,
            closing: Some(Instant::now() + LINGER),
            waiting: None,
        }
    }
}

/// What one received datagram turned out to be.
enum Received {
    Eof,
    Nothing,
    Datagram(Vec<u8>),
    Refused(HelperError),
}

/// Block the signals we handle and read them from a signalfd in the poll
/// loop instead: no async handlers, no races with the loop.
pub fn signals() -> Result<SignalFd, String> {
    let mut mask = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))
}

/// The STATUS= line systemd shows for the helper.
pub fn status(helper: &Helper) -> String {
    let n = helper.containers.len();
    format!("serving, {n} container{}", if n == 1 { "" } else { "s" })
}

/// Serve until SIGTERM or SIGINT; then remove `remove_on_exit` (the
/// socket the helper bound itself; none when systemd passed it).
pub fn serve(
    helper: &mut Helper,
    listener: OwnedFd,
    signals: SignalFd,
    remove_on_exit: Option<&str>,
    notifier: &Notifier,
) -> Result<(), String> {
    let mut conns: Vec<Conn> = Vec::new();
    let watchdog = notifier.watchdog_interval();
    let mut next_watchdog = Instant::now();
    let mut last_status = status(helper);
    loop {
        helper.reap();
        // The watchdog is fed from this loop: a helper stuck in a request
        // misses it (requests are short; image unpacks run beside the
        // loop; see systemd/README.md on WatchdogSec=).
        let mut timeout = Duration::from_millis(1000);
        if let Some(interval) = watchdog {
            let now = Instant::now();
            if now >= next_watchdog {
                notifier.notify(&[NotifyState::Watchdog]);
                next_watchdog = now + interval;
            }
            timeout = timeout.min(next_watchdog.saturating_duration_since(now));
        }
        let current = status(helper);
        if current != last_status {
            notifier.notify(&[NotifyState::Status(&current)]);
            last_status = current;
        }
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        // A connection waiting for an unpack: its child's report pipe.
        fds.extend(conns.iter().map(|c| match &c.waiting {
            Some(w) => PollFd::new(w.create.unpack.fd(), PollFlags::POLLIN),
            None => PollFd::new(c.fd.as_fd(), PollFlags::POLLIN),
        }));
        // Wake for the nearest unpack deadline too.
        let now = Instant::now();
        for w in conns.iter().filter_map(|c| c.waiting.as_ref()) {
            timeout = timeout.min(w.create.unpack.deadline().saturating_duration_since(now));
        }
        // Last, so connections keep their indices: a wshd exit wakes the
        // loop, and `reap` at its top marks the container.
        fds.push(PollFd::new(helper.exits.0.as_fd(), PollFlags::POLLIN));
        // At most 1000 ms, so the conversion cannot fail.
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::from(1000u16));
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);

        if ready[0] {
            while let Ok(Some(info)) = signals.read_signal() {
                let sig = info.ssi_signo as i32;
                if sig == libc::SIGTERM || sig == libc::SIGINT {
                    // Containers keep running; a new helper recovers them.
                    notifier.notify(&[NotifyState::Stopping]);
                    if let Some(path) = remove_on_exit {
                        let _ = std::fs::remove_file(path);
                    }
                    log_info!("grove-helper: signal {sig}: exiting; containers keep running");
                    return Ok(());
                }
            }
        }
        // Serve connections first (by index, from the back, so removal is
        // safe); replace a refused one by its lingering form.
        let now = Instant::now();
        for i in (0..conns.len()).rev() {
            match conns[i].closing {
                Some(deadline) if (ready[2 + i] && drain_one(&conns[i])) || now > deadline => {
                    drop(conns.remove(i))
                }
                Some(_) => {}
                None if ready[2 + i] || conns[i].waiting.is_some() => {
                    match serve_one(helper, &mut conns[i], now) {
                        Outcome::Continue => {}
                        Outcome::Close => drop(conns.remove(i)),
                        Outcome::Refuse(e) => {
                            let conn = conns.remove(i);
                            conns.push(Conn::refuse(conn.fd, conn.uid, e));
                        }
                    }
                }
                None => {}
            }
        }
        if ready[1] {
            accept(&listener, helper.policy.server_uid, &mut conns);
        }
    }
}

fn accept(listener: &OwnedFd, server_uid: u32, conns: &mut Vec<Conn>) {
    let fd = match accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
        // SAFETY: accept4 just returned this fd; nothing else owns it.
        Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
        Err(e) => {
            log_warn!("grove-helper: accept: {e}");
            return;
        }
    };
    // SO_PEERCRED is the kernel's record of who connected: it cannot be forged.
    let uid = match getsockopt(&fd, sockopt::PeerCredentials) {
        Ok(cred) => cred.uid(),
        Err(e) => {
            log_warn!("grove-helper: SO_PEERCRED: {e}");
            return;
        }
    };
    let serving = conns.iter().filter(|c| c.closing.is_none()).count();
    let lingering = conns.len() - serving;
    let refusal = if uid != server_uid {
        log_warn!("grove-helper: uid={uid} refused: not the server uid {server_uid}");
        Some(HelperError::new(
            ErrorKind::PolicyRefused,
            format!("uid {uid} is not grove-helper's server uid {server_uid}"),
        ))
    } else if serving >= MAX_CONNECTIONS {
        log_warn!("grove-helper: uid={uid} refused: {MAX_CONNECTIONS} connections are open");
        Some(HelperError::new(
            ErrorKind::LimitExceeded,
            format!("{MAX_CONNECTIONS} connections are open"),
        ))
    } else {
        None
    };
    match refusal {
        // Lingering connections are bounded too: past MAX_LINGERING, a
        // refused peer is simply hung up on.
        Some(e) if lingering < MAX_LINGERING => conns.push(Conn::refuse(fd, uid, e)),
        Some(_) => drop(fd),
        None => conns.push(Conn {
            fd,
            uid,
            closing: None,
            waiting: None,
        }),
    }
}

/// Read and drop one datagram from a refused peer; true once it hung up.
fn drain_one(conn: &Conn) -> bool {
    matches!(receive(conn.fd.as_raw_fd()), Received::Eof)
}

/// What serving one datagram means for the conversation.
enum Outcome {
    Continue,
    /// The peer hung up, or cannot be answered.
    Close,
    /// A protocol violation ends the conversation (OpenSSH monitor style),
    /// once the peer is told why.
    Refuse(HelperError),
}

/// Serve the connection's next datagram, or go on with its waiting create
/// (whose report pipe was readable, or whose deadline may have passed).
fn serve_one(helper: &mut Helper, conn: &mut Conn, now: Instant) -> Outcome {
    if let Some(w) = conn.waiting.as_mut() {
        let Some(prepared) = w.create.unpack.advance(now) else {
            return Outcome::Continue;
        };
        let Some(w) = conn.waiting.take() else {
            return Outcome::Continue;
        };
        let handle = w.create.handle().clone();
        let result = helper.finish_create(*w.create, prepared);
        let created = result.is_ok();
        let outcome = answer(conn, &w.summary, w.start, result);
        if created && matches!(outcome, Outcome::Close) {
            // The peer hung up while the image unpacked: no one knows of
            // this container (a groved restarted meanwhile could not
            // destroy it while it was Creating), so it goes.
            log_warn!("grove-helper: {handle}: its creator hung up; destroying it");
            if let Err(e) =
                helper.handle(grove_schema::helper::Request::DestroyContainer { handle })
            {
                log_error!(
                    "grove-helper: destroying an unanswered create: {}",
                    e.message
                );
            }
        }
        return outcome;
    }
    let bytes = match receive(conn.fd.as_raw_fd()) {
        Received::Eof => return Outcome::Close,
        Received::Nothing => return Outcome::Continue,
        Received::Refused(e) => {
            log_warn!(
                "grove-helper: uid={} refused datagram: {}",
                conn.uid,
                e.message
            );
            return Outcome::Refuse(e);
        }
        Received::Datagram(b) => b,
    };
    let request = match decode_request(&bytes) {
        Ok(r) => r,
        Err(e) => {
            log_warn!("grove-helper: uid={} bad request: {e}", conn.uid);
            return Outcome::Refuse(e);
        }
    };
    let start = Instant::now();
    let summary = describe(&request);
    match helper.handle(request) {
        Ok(Handled::Unpacking(create)) => {
            conn.waiting = Some(Waiting {
                create,
                summary,
                start,
            });
            Outcome::Continue
        }
        Ok(Handled::Reply(r)) => answer(conn, &summary, start, Ok(r)),
        Err(e) => answer(conn, &summary, start, Err(e)),
    }
}

/// Log the outcome of a request and send its answer.
fn answer(
    conn: &Conn,
    summary: &str,
    start: Instant,
    result: Result<crate::container::Reply, HelperError>,
) -> Outcome {
    let (response, fds) = match result {
        Ok(r) => (r.response, r.fds),
        Err(e) => (Response::Error(e), Vec::new()),
    };
    let (level, outcome) = match &response {
        Response::Error(e) => (Level::Warn, format!("error {:?}: {}", e.kind, e.message)),
        // Questions that change nothing (groved asks some every second
        // while a client watches stats) are debug lines when answered.
        _ if is_query(summary) => (Level::Debug, "ok".to_string()),
        _ => (Level::Info, "ok".to_string()),
    };
    crate::logline::emit(
        level,
        format_args!(
            "grove-helper: uid={} {summary} {outcome} {}ms",
            conn.uid,
            start.elapsed().as_millis()
        ),
    );
    // Our copies of the attached fds close once the datagram is sent (or
    // not): the peer then holds the only ones.
    if reply(&conn.fd, conn.uid, &response, &fds) {
        Outcome::Continue
    } else {
        Outcome::Close
    }
}

/// Whether a request `describe`d as `summary` only asks (its answer
/// changes nothing in the helper or on the host).
fn is_query(summary: &str) -> bool {
    const QUERIES: [&str; 7] = [
        "Ping",
        "ListContainers",
        "GetStats",
        "GetLimits",
        "GetNetwork",
        "WatchOom",
        "WatchExit",
    ];
    let name = summary.split(' ').next().unwrap_or("");
    QUERIES.contains(&name)
}

fn describe(r: &grove_schema::helper::Request) -> String {
    use grove_schema::helper::{Request::*, RootfsSource};
    match r {
        Ping => "Ping".into(),
        ListContainers => "ListContainers".into(),
        CreateContainer {
            handle,
            rootfs: RootfsSource::Default,
            limits,
            ip,
            privileged,
            binds,
        } => format!("CreateContainer handle={handle} rootfs=default limits={limits:?} ip={ip:?} privileged={privileged} binds={binds:?}"),
        CreateContainer {
            handle,
            rootfs: RootfsSource::HostDir(p),
            limits,
            ip,
            privileged,
            binds,
        } => {
            format!(
                "CreateContainer handle={handle} rootfs={} limits={limits:?} ip={ip:?} privileged={privileged} binds={binds:?}",
                p.as_str()
            )
        }
        CreateContainer {
            handle,
            rootfs: RootfsSource::OciLayout { dir, tag },
            limits,
            ip,
            privileged,
            binds,
        } => format!(
            "CreateContainer handle={handle} rootfs=oci:{}:{} limits={limits:?} ip={ip:?} privileged={privileged} binds={binds:?}",
            dir.as_str(),
            tag.as_str()
        ),
        CreateContainer {
            handle,
            rootfs: RootfsSource::DockerArchive { path },
            limits,
            ip,
            privileged,
            binds,
        } => format!(
            "CreateContainer handle={handle} rootfs=docker-archive:{} limits={limits:?} ip={ip:?} privileged={privileged} binds={binds:?}",
            path.as_str()
        ),
        DestroyContainer { handle } => format!("DestroyContainer handle={handle}"),
        SetLimits { handle, limits } => format!("SetLimits handle={handle} limits={limits:?}"),
        GetLimits { handle } => format!("GetLimits handle={handle}"),
        GetStats { handle } => format!("GetStats handle={handle}"),
        WatchOom { handle } => format!("WatchOom handle={handle}"),
        WatchExit { handle } => format!("WatchExit handle={handle}"),
        NetIn {
            handle,
            host_port,
            container_port,
        } => format!("NetIn handle={handle} host_port={host_port} container_port={container_port}"),
        NetOut { handle, rules } => format!("NetOut handle={handle} rules={rules:?}"),
        GetNetwork { handle } => format!("GetNetwork handle={handle}"),
        ListLayers { after } => format!("ListLayers after={after:?}"),
        RemoveLayer { id } => format!("RemoveLayer id={id}"),
    }
}

/// Send one response datagram, with `fds` attached in one SCM_RIGHTS
/// message if there are any. Never blocks: a peer that does not read its
/// responses loses its connection rather than stalling the helper.
fn reply(fd: &OwnedFd, uid: u32, response: &Response, fds: &[OwnedFd]) -> bool {
    let bytes = encode_response(response);
    let iov = [std::io::IoSlice::new(&bytes)];
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    // Why safe: only fds the request's handler made for this peer are
    // attached (today: WatchOom's eventfd or memory.events, WatchExit's
    // pidfd of wshd).
    match sendmsg::<()>(
        fd.as_raw_fd(),
        &iov,
        cmsgs,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        None,
    ) {
        Ok(_) => true,
        Err(e) => {
            log_warn!("grove-helper: uid={uid} send: {e}; closing the connection");
            false
        }
    }
}

/// recvmsg one datagram into a buffer one byte larger than any valid one,
/// with room for one fd more than allowed. Every fd that arrives is closed
/// (no request takes fds yet); anything but SCM_RIGHTS, or truncation of
/// the data or the control part, is refused.
fn receive(fd: RawFd) -> Received {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    // u64 elements keep the control buffer aligned for cmsghdr.
    // SAFETY: CMSG_SPACE is a pure size computation.
    let cmsg_len =
        unsafe { libc::CMSG_SPACE(((MAX_FDS + 1) * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut cmsg = vec![0u64; cmsg_len.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    msg.msg_controllen = cmsg.len() * 8;
    // SAFETY: msg points at buffers that live until the end of this
    // function, with their true lengths; MSG_CMSG_CLOEXEC keeps received fds
    // from ever leaking into a child.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT) };
    if n < 0 {
        return match Errno::last() {
            Errno::EAGAIN | Errno::EINTR => Received::Nothing,
            _ => Received::Eof,
        };
    }
    // Take ownership of every received fd first, so each is closed however
    // we leave this function.
    let mut received: Vec<OwnedFd> = Vec::new();
    let mut other_cmsg = None;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel just
    // filled, bounded by msg.msg_controllen, which the kernel set.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let header = &*c;
            if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c) as *const RawFd;
                let len = (header.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    received.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            } else {
                other_cmsg = Some((header.cmsg_level, header.cmsg_type));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let refuse = |why: String| Received::Refused(HelperError::new(ErrorKind::Malformed, why));
    if msg.msg_flags & libc::MSG_TRUNC != 0 {
        return refuse(format!("datagram is longer than {} bytes", buf.len()));
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return refuse(format!("control data truncated (more than {MAX_FDS} fds?)"));
    }
    if let Some((level, ty)) = other_cmsg {
        return refuse(format!(
            "control message level {level} type {ty}; only SCM_RIGHTS is accepted"
        ));
    }
    if received.len() > MAX_FDS {
        return refuse(format!(
            "{} fds in one datagram; at most {MAX_FDS} are allowed",
            received.len()
        ));
    }
    if n == 0 && received.is_empty() {
        return Received::Eof;
    }
    drop(received);
    buf.truncate(n as usize);
    Received::Datagram(buf)
}
