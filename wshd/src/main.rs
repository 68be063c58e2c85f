//! wshd: PID 1 inside each Grove container.
//!
//! It accepts groved's connections on an already listening SOCK_SEQPACKET
//! socket (fd 3, bound by grove-helper), spawns processes (on pipes of
//! `OUTPUT_BUFFER` bytes, or on a pseudo-terminal whose output a relay task
//! copies into such a pipe), hands groved the parent ends of their stdio
//! (keeping copies of its own, which `Reattach` hands out again), reaps
//! every child and remembers exit statuses until they are released. It
//! also moves tar archives in and out of the container (`stream`), each in
//! a child that has taken the user's identity. Every process it starts for
//! a client is confined before it runs (`confine`, `seccomp`): Docker's
//! default capabilities at most, no_new_privs, a seccomp filter. The
//! protocol is `grove_schema::wshd`.

/// One line per event on stderr (grove-helper points it at a log file on
/// the host), within the bounds of `logging`. Never argv, env or paths.
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::logging::line(format_args!($($arg)*))
    };
}

mod confine;
mod logging;
mod oom;
mod relay;
mod seccomp;
mod spawn;
mod stream;
mod top;
mod users;
mod wire;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;

use grove_schema::wshd::{
    decode, encode, ErrorKind, ExitStatus, ProcessSummary, Request, Response, SpawnSpec, WshdError,
    MAX_DATAGRAM,
};

use crate::relay::AbortOnDrop;
use tokio::sync::watch;

use crate::wire::Conn;

const USAGE: &str = "\
usage: wshd --socket-fd FD --server-uid UID
       wshd --policy

PID 1 of a Grove container. FD is a bound, listening SOCK_SEQPACKET unix
socket; only UID (and uid 0) may talk to it. Logs go to stderr.
--policy prints the capabilities and the seccomp policy of the processes
wshd starts, and exits.";

/// `wshd --policy`: the confinement, as a reviewer reads it.
fn print_policy() {
    println!("capabilities kept (bounding set; effective and permitted for root):");
    for k in confine::KEEP {
        println!("  {:<22} {}", k.name, k.why);
    }
    println!("capability mask: {:#018x}", confine::KEEP_MASK);
    println!("no_new_privs: set");
    print!("{}", seccomp::describe());
}

struct Args {
    socket_fd: RawFd,
    server_uid: u32,
}

fn parse_args(args: &[String]) -> Result<Option<Args>, String> {
    let mut socket_fd = None;
    let mut server_uid = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--socket-fd" | "--server-uid" => {
                let value = match inline {
                    Some(v) => v,
                    None => it.next().cloned().ok_or(format!("{flag} needs a value"))?,
                };
                if flag == "--socket-fd" {
                    let fd: RawFd = value
                        .parse()
                        .map_err(|_| format!("--socket-fd {value:?}: not an fd"))?;
                    if fd < 3 {
                        return Err(format!("--socket-fd {fd}: must be 3 or above"));
                    }
                    socket_fd = Some(fd);
                } else {
                    server_uid = Some(
                        value
                            .parse()
                            .map_err(|_| format!("--server-uid {value:?}: not a uid"))?,
                    );
                }
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(Args {
        socket_fd: socket_fd.ok_or("--socket-fd is required")?,
        server_uid: server_uid.ok_or("--server-uid is required")?,
    }))
}

/// wshd's own copies of a process's output fds, kept until Release (or
/// until they are drained: see `Output::Drained`).
enum Output {
    Pipes {
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// The process exited and everything it wrote has been read: wshd's
    /// copies were closed (every fd wshd holds is copied and closed again
    /// by each spawn, so hundreds of finished processes' pipes made
    /// spawning slower). A reattach gets fresh pipes at end of file, which
    /// read exactly like the drained ones.
    Drained,
    Tty {
        output: OwnedFd,
        master: OwnedFd,
        /// The relay from `master` to `output`'s pipe, ended on Release.
        _relay: AbortOnDrop,
    },
}

/// The read end of a pipe whose write end is closed: end of file at once.
fn pipe_at_eof() -> std::io::Result<OwnedFd> {
    let (read, _write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok(read)
}

/// Whether a pipe's read end will never yield another byte: every writer
/// has closed it (POLLHUP) and nothing is left in it.
fn drained(fd: &OwnedFd) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    let hung_up = matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP));
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut pending) };
    hung_up && r == 0 && pending == 0
}

impl State {
    /// Close wshd's copies of the output of exited processes whose pipes
    /// are drained (see `Output::Drained`).
    fn close_drained_outputs(&mut self) {
        for p in self.procs.values_mut() {
            if p.status().is_none() {
                continue;
            }
            if let Output::Pipes { stdout, stderr } = &p.output {
                if drained(stdout) && drained(stderr) {
                    p.output = Output::Drained;
                }
            }
        }
    }
}

/// A process wshd started.
struct Proc {
    pid: i32,
    exit: watch::Sender<Option<ExitStatus>>,
    output: Output,
    /// wshd's copy of the fd groved writes input to (the stdin pipe's write
    /// end, or a copy of the terminal's master), kept until CloseStdin.
    stdin: Option<OwnedFd>,
}

impl Proc {
    fn status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    fn tty(&self) -> bool {
        matches!(self.output, Output::Tty { .. })
    }

    /// Copies of the parent-side fds, in the protocol's order: stdout,
    /// stderr, stdin (pipes); output, master (tty). stdin only while open.
    fn dup_fds(&self) -> std::io::Result<Vec<OwnedFd>> {
        let mut fds = match &self.output {
            Output::Pipes { stdout, stderr } => vec![stdout.try_clone()?, stderr.try_clone()?],
            Output::Tty { output, .. } => vec![output.try_clone()?],
            Output::Drained => vec![pipe_at_eof()?, pipe_at_eof()?],
        };
        if let Some(stdin) = &self.stdin {
            fds.push(stdin.try_clone()?);
        }
        Ok(fds)
    }
}

/// A tar stream in progress (or finished, not yet waited for).
struct Stream {
    dir: stream::Direction,
    path: String,
    pid: i32,
    exit: watch::Sender<Option<ExitStatus>>,
    /// wshd's end of the child's report pipe (its final report).
    report: OwnedFd,
}

struct State {
    procs: BTreeMap<String, Proc>,
    /// Running processes by pid, for the reaper.
    running: HashMap<i32, String>,
    streams: BTreeMap<u64, Stream>,
    /// Stream children by pid, for the reaper.
    stream_pids: HashMap<i32, u64>,
    next_stream: u64,
    /// `Top` scan children by pid, for the reaper.
    scan_pids: std::collections::HashSet<i32>,
    devnull: OwnedFd,
    /// The oom_score_adj of the processes wshd starts (see oom.rs).
    oom: Option<oom::ChildScore>,
    server_uid: u32,
}

type Shared = Rc<RefCell<State>>;

fn err(kind: ErrorKind, msg: impl Into<String>) -> Response {
    Response::Error(WshdError::new(kind, msg))
}

fn not_found(id: &str) -> Response {
    err(
        ErrorKind::ProcessNotFound,
        format!("no process has id {id:?}"),
    )
}

fn check_signal(signal: i32) -> Result<(), Response> {
    if (1..=64).contains(&signal) {
        Ok(())
    } else {
        Err(err(
            ErrorKind::InvalidSpec,
            format!("signal {signal}: must be 1..=64"),
        ))
    }
}

/// Collects every exited child (no zombies, orphans included) and records
/// the statuses of the ones wshd started.
fn reap(state: &Shared) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            if pid < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return; // 0: children remain but none exited; ECHILD: none left
        }
        let exit = if libc::WIFEXITED(status) {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        } else if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            continue;
        };
        let mut st = state.borrow_mut();
        if st.scan_pids.remove(&pid) {
            if exit != ExitStatus::Code(0) {
                log!("top scan (pid {pid}) ended: {exit:?}");
            }
            continue;
        }
        if let Some(id) = st.stream_pids.remove(&pid) {
            match st.streams.get(&id) {
                Some(s) => {
                    log!("stream {id} (pid {pid}) ended: {exit:?}");
                    s.exit.send_replace(Some(exit));
                }
                None => log!("reaped abandoned stream {id} (pid {pid}): {exit:?}"),
            }
            continue;
        }
        match st.running.remove(&pid) {
            Some(id) => {
                log!("process {id:?} (pid {pid}) exited: {exit:?}");
                if let Some(p) = st.procs.get(&id) {
                    p.exit.send_replace(Some(exit));
                }
            }
            None => log!("reaped orphan pid {pid}: {exit:?}"),
        }
    }
}

/// What a request gets: an answer now (with fds), or one later (when a
/// process or a stream's child exits).
enum Reply {
    Now(Response, Vec<OwnedFd>),
    Later(Pin<Box<dyn Future<Output = Response>>>),
}

fn do_stream(state: &Shared, dir: stream::Direction, path: String, user: Option<String>) -> Reply {
    let now = |r: Response| Reply::Now(r, Vec::new());
    let (passwd, groups) = users::load();
    let user = match users::resolve(user.as_deref(), &passwd, &groups) {
        Ok(u) => u,
        Err(e) => return now(err(e.kind, format!("{} {path}: {}", dir.verb(), e.message))),
    };
    let fds = {
        let st = state.borrow();
        stream::ChildFds {
            devnull: st.devnull.as_raw_fd(),
            oom: st.oom.as_ref().map(oom::ChildScore::raw),
        }
    };
    let started = match stream::start(dir, &path, &user, fds) {
        Ok(s) => s,
        Err(e) => return now(Response::Error(e)),
    };
    let mut st = state.borrow_mut();
    let id = st.next_stream;
    st.next_stream += 1;
    log!(
        "stream {id}: {} as uid {} gid {} (pid {})",
        dir.verb(),
        user.uid,
        user.gid,
        started.pid
    );
    // Registered before the next await, so the reaper cannot miss it.
    st.stream_pids.insert(started.pid, id);
    st.streams.insert(
        id,
        Stream {
            dir,
            path,
            pid: started.pid,
            exit: watch::Sender::new(None),
            report: started.report,
        },
    );
    Reply::Now(Response::StreamStarted { id }, vec![started.data])
}

/// The answer to StreamWait for a stream whose child has exited; forgets it.
fn stream_result(state: &Shared, id: u64) -> Response {
    let Some(s) = state.borrow_mut().streams.remove(&id) else {
        return err(ErrorKind::ProcessNotFound, format!("no stream has id {id}"));
    };
    let Some(status) = *s.exit.borrow() else {
        return err(ErrorKind::System, format!("stream {id} has not ended"));
    };
    match stream::outcome(s.dir, &s.path, &s.report, status) {
        Ok(()) => Response::StreamFinished,
        Err(e) => Response::Error(e),
    }
}

fn stream_wait(state: &Shared, id: u64) -> Reply {
    let mut rx = {
        let st = state.borrow();
        let Some(s) = st.streams.get(&id) else {
            return Reply::Now(
                err(ErrorKind::ProcessNotFound, format!("no stream has id {id}")),
                Vec::new(),
            );
        };
        if s.exit.borrow().is_some() {
            drop(st);
            return Reply::Now(stream_result(state, id), Vec::new());
        }
        s.exit.subscribe()
    };
    let state = state.clone();
    Reply::Later(Box::pin(async move {
        match rx.wait_for(Option::is_some).await {
            Ok(_) => stream_result(&state, id),
            Err(_) => err(
                ErrorKind::ProcessNotFound,
                format!("stream {id} was dropped"),
            ),
        }
    }))
}

/// The streams a connection started: when it closes, the unfinished ones
/// are killed and every one of them forgotten.
struct OwnedStreams {
    state: Shared,
    ids: Vec<u64>,
}

impl Drop for OwnedStreams {
    fn drop(&mut self) {
        let mut st = self.state.borrow_mut();
        for id in self.ids.drain(..) {
            let Some(s) = st.streams.remove(&id) else {
                continue;
            };
            if s.exit.borrow().is_none() {
                // SAFETY: kill has no memory effects. The pid is still ours:
                // the reaper records every exit in the stream before the pid
                // can be reused, and none is recorded.
                unsafe { libc::kill(s.pid, libc::SIGKILL) };
                log!("stream {id}: its connection closed; killed pid {}", s.pid);
            }
        }
    }
}

fn do_spawn(state: &Shared, spec: SpawnSpec) -> Result<Reply, Response> {
    grove_schema::fault::crash_point("wshd.run.received");
    spawn::check_id(&spec.id).map_err(Response::Error)?;
    if state.borrow().procs.contains_key(&spec.id) {
        return Err(err(
            ErrorKind::DuplicateId,
            format!("a process with id {:?} exists", spec.id),
        ));
    }
    let (passwd, groups) = users::load();
    let user = users::resolve(spec.user.as_deref(), &passwd, &groups).map_err(Response::Error)?;
    let prepared = spawn::prepare(&spec, user).map_err(Response::Error)?;
    state.borrow_mut().close_drained_outputs();
    let child = {
        let st = state.borrow();
        let oom = st.oom.as_ref().map(oom::ChildScore::raw);
        spawn::spawn(&prepared, st.devnull.as_fd(), oom).map_err(Response::Error)?
    };
    let pid = child.pid;
    // Should anything fail from here on, the process is killed and the
    // reaper collects it as an orphan.
    let kill = |msg: String| {
        // SAFETY: kill on our own, not yet reaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        err(ErrorKind::System, msg)
    };
    let output = match child.io {
        spawn::Io::Pipes { stdout, stderr } => Output::Pipes { stdout, stderr },
        spawn::Io::Tty {
            output,
            master,
            relay_out,
            relay_master,
        } => {
            let relay = relay::start(relay_master, relay_out)
                .map_err(|e| kill(format!("starting the terminal relay: {e}")))?;
            Output::Tty {
                output,
                master,
                _relay: AbortOnDrop(relay),
            }
        }
    };
    let proc = Proc {
        pid,
        exit: watch::Sender::new(None),
        output,
        stdin: child.stdin,
    };
    // Copies to send (wshd keeps the originals).
    let fds = proc.dup_fds().map_err(|e| kill(format!("dup: {e}")))?;
    // Never the path, argv, env or dir: they may carry secrets.
    log!(
        "spawned {:?} (pid {pid}){} as uid {} gid {}",
        spec.id,
        if proc.tty() { " on a terminal" } else { "" },
        prepared.user.uid,
        prepared.user.gid,
    );
    // Registered before the next await, so the reaper cannot miss it.
    let mut st = state.borrow_mut();
    st.running.insert(pid, spec.id.clone());
    st.procs.insert(spec.id, proc);
    grove_schema::fault::crash_point("wshd.run.spawned");
    Ok(Reply::Now(Response::Spawned { pid }, fds))
}

fn handle(state: &Shared, req: Request) -> Reply {
    let now = |r: Response| Reply::Now(r, Vec::new());
    match req {
        Request::Ping => now(Response::Pong),
        Request::Spawn(spec) => do_spawn(state, spec).unwrap_or_else(now),
        Request::Wait { id } => {
            let st = state.borrow();
            match st.procs.get(&id) {
                None => now(not_found(&id)),
                Some(p) => match p.status() {
                    Some(s) => now(Response::Exited(s)),
                    None => {
                        let mut rx = p.exit.subscribe();
                        Reply::Later(Box::pin(async move {
                            match rx.wait_for(Option::is_some).await {
                                Ok(s) => Response::Exited(s.expect("waited for Some")),
                                Err(_) => {
                                    err(ErrorKind::ProcessNotFound, "the process was released")
                                }
                            }
                        }))
                    }
                },
            }
        }
        Request::Signal { id, signal } => {
            if let Err(r) = check_signal(signal) {
                return now(r);
            }
            let st = state.borrow();
            let Some(p) = st.procs.get(&id) else {
                return now(not_found(&id));
            };
            if p.status().is_some() {
                return now(Response::Ok);
            }
            // SAFETY: kill has no memory effects. The pid is still ours: it
            // is only reaped (and reusable) after it leaves `running`.
            if unsafe { libc::kill(p.pid, signal) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return now(err(
                        ErrorKind::System,
                        format!("kill {} {signal}: {e}", p.pid),
                    ));
                }
            }
            log!("sent signal {signal} to {id:?} (pid {})", p.pid);
            now(Response::Ok)
        }
        Request::SignalAll { signal } => {
            if let Err(r) = check_signal(signal) {
                return now(r);
            }
            // SAFETY: as above. As PID 1 of its namespace, kill(-1) reaches
            // every process in the container but wshd itself.
            if unsafe { libc::kill(-1, signal) } != 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ESRCH) {
                    return now(err(ErrorKind::System, format!("kill -1 {signal}: {e}")));
                }
            }
            log!("sent signal {signal} to every process");
            now(Response::Ok)
        }
        Request::CloseStdin { id } => {
            let mut st = state.borrow_mut();
            let Some(p) = st.procs.get_mut(&id) else {
                return now(not_found(&id));
            };
            // For a tty, only the extra copy of the master that was handed
            // out for input: the terminal stays open. A terminal has no
            // end-of-file of its own, so send the EOF character (^D), which
            // a reader in canonical mode takes as end of input.
            if p.tty() {
                if let Some(master) = &p.stdin {
                    let _ = nix::unistd::write(master, &[0x04]);
                }
            }
            p.stdin = None;
            now(Response::Ok)
        }
        Request::Reattach { id } => {
            let st = state.borrow();
            let Some(p) = st.procs.get(&id) else {
                return now(not_found(&id));
            };
            match p.dup_fds() {
                Ok(fds) => Reply::Now(
                    Response::Attached {
                        pid: p.pid,
                        tty: p.tty(),
                        stdin: p.stdin.is_some(),
                        exit: p.status(),
                    },
                    fds,
                ),
                Err(e) => now(err(ErrorKind::System, format!("dup: {e}"))),
            }
        }
        Request::SetWindowSize { id, size } => {
            let st = state.borrow();
            let Some(p) = st.procs.get(&id) else {
                return now(not_found(&id));
            };
            let Output::Tty { master, .. } = &p.output else {
                return now(err(
                    ErrorKind::InvalidSpec,
                    format!("process {id:?} has no terminal"),
                ));
            };
            match spawn::set_window_size(master, size) {
                Ok(()) => now(Response::Ok),
                Err(e) => now(err(
                    ErrorKind::System,
                    format!("TIOCSWINSZ {}x{}: {e}", size.columns, size.rows),
                )),
            }
        }
        Request::Release { id } => {
            let mut st = state.borrow_mut();
            match st.procs.get(&id).map(Proc::status) {
                None => now(not_found(&id)),
                Some(None) => now(err(
                    ErrorKind::InvalidSpec,
                    format!(
                        "process {id:?} is still running; only exited processes can be released"
                    ),
                )),
                Some(Some(_)) => {
                    st.procs.remove(&id);
                    log!("released {id:?}");
                    now(Response::Ok)
                }
            }
        }
        Request::List => {
            let st = state.borrow();
            let list = st
                .procs
                .iter()
                .map(|(id, p)| ProcessSummary {
                    id: id.clone(),
                    pid: p.pid,
                    tty: p.tty(),
                    exit: p.status(),
                })
                .collect();
            now(Response::Processes(list))
        }
        Request::StreamIn { path, user } => do_stream(state, stream::Direction::In, path, user),
        Request::StreamOut { path, user } => do_stream(state, stream::Direction::Out, path, user),
        Request::StreamWait { id } => stream_wait(state, id),
        Request::Top => {
            let spawned = state.borrow().running.clone();
            match top::start(spawned) {
                Ok(scan) => {
                    // Registered before the next await: the reaper cannot
                    // miss it.
                    state.borrow_mut().scan_pids.insert(scan.pid);
                    Reply::Later(Box::pin(scan.answer()))
                }
                Err(e) => now(Response::Error(e)),
            }
        }
    }
}

/// A request as the log shows it: never a process's path, argv, env or
/// dir, nor a stream's path (they may carry secrets).
fn describe(req: &Request) -> String {
    match req {
        Request::Spawn(s) => format!("Spawn {:?}", s.id),
        Request::StreamIn { user, .. } => format!("StreamIn user {user:?}"),
        Request::StreamOut { user, .. } => format!("StreamOut user {user:?}"),
        other => format!("{other:?}"),
    }
}

async fn send(conn: &Conn, resp: &Response, fds: &[OwnedFd]) -> bool {
    let mut bytes = encode(resp);
    if bytes.len() > MAX_DATAGRAM {
        bytes = encode(&err(
            ErrorKind::System,
            format!("answer of {} bytes exceeds {MAX_DATAGRAM}", bytes.len()),
        ));
    }
    match conn.send(&bytes, fds).await {
        Ok(()) => true,
        Err(e) => {
            log!("sending an answer: {e}");
            false
        }
    }
}

async fn serve(state: Shared, conn: Conn) {
    let cred = match conn.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            log!("SO_PEERCRED: {e}");
            return;
        }
    };
    let server_uid = state.borrow().server_uid;
    // As PID 1 of a container, wshd serves only peers outside its PID
    // namespace (the kernel reports their pid as 0): never a process of
    // the container, whatever uid it has. In a user namespace the server
    // (and host root) appear as the overflow uid, which the helper passes
    // as --server-uid.
    let outside = std::process::id() != 1 || cred.pid == 0;
    if !outside || (cred.uid != 0 && cred.uid != server_uid) {
        log!(
            "refused a connection from uid {} (pid {})",
            cred.uid,
            cred.pid
        );
        let msg = format!(
            "uid {} may not talk to wshd; only {server_uid} and 0 may",
            cred.uid
        );
        // Take the peer's request first (for a while): closing a socket with
        // unread data resets the connection, and the peer would never see
        // why it was refused.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn.recv()).await;
        send(&conn, &err(ErrorKind::System, msg), &[]).await;
        return;
    }
    let mut owned = OwnedStreams {
        state: state.clone(),
        ids: Vec::new(),
    };
    loop {
        let bytes = match conn.recv().await {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(wire::RecvError::Refused(e)) => {
                log!("refused a datagram: {e}");
                send(&conn, &Response::Error(e), &[]).await;
                return;
            }
            Err(wire::RecvError::Io(e)) => {
                log!("recvmsg: {e}");
                return;
            }
        };
        let req = match decode::<Request>(&bytes) {
            Ok(r) => r,
            Err(e) => {
                log!("refused a request: {:?}", e.kind);
                send(&conn, &Response::Error(e), &[]).await;
                return;
            }
        };
        log!("request: {}", describe(&req));
        let (resp, fds) = match handle(&state, req) {
            Reply::Now(r, fds) => (r, fds),
            Reply::Later(answer) => {
                tokio::select! {
                    r = answer => (r, Vec::new()),
                    () = conn.closed_or_spoke() => {
                        // One request at a time: hang-up or a new request
                        // before the answer ends the connection.
                        return;
                    }
                }
            }
        };
        // The kind only: an error's text may quote the request.
        if let Response::Error(e) = &resp {
            log!("answer: {:?} error", e.kind);
        }
        if let Response::StreamStarted { id } = resp {
            owned.ids.push(id);
        }
        if !send(&conn, &resp, &fds).await {
            return;
        }
    }
}

async fn run(state: Shared, listener: wire::Listener) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            log!("cannot watch SIGCHLD: {e}");
            std::process::exit(1);
        }
    };
    let reaper_state = state.clone();
    tokio::task::spawn_local(async move {
        loop {
            reap(&reaper_state);
            sigchld.recv().await;
        }
    });
    loop {
        match listener.accept().await {
            Ok(conn) => {
                tokio::task::spawn_local(serve(state.clone(), conn));
            }
            Err(e) => {
                log!("accept: {e}");
                // EMFILE and friends: do not spin.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The signals wshd ignores: only the helper ends wshd (with SIGKILL).
/// Each child wshd starts sets them back to SIG_DFL (ignored dispositions
/// survive exec); every other disposition is the default already.
pub const IGNORED_SIGNALS: [libc::c_int; 4] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGPIPE];

fn setup_process() {
    // Dispositions inherited from whoever started wshd go back to the
    // default, once here rather than in every child.
    for sig in 1..65 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: installs SIG_DFL, no handler code.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
    for sig in IGNORED_SIGNALS {
        // SAFETY: installs SIG_IGN, no handler code.
        if unsafe { libc::signal(sig, libc::SIG_IGN) } == libc::SIG_ERR {
            log!("ignoring signal {sig}: {}", std::io::Error::last_os_error());
        }
    }
    // The bounding set every process wshd starts inherits: dropped once
    // here (wshd keeps its own effective and permitted capabilities, and
    // never execs); each child checks it again (see spawn.rs).
    if let Err(e) = confine::drop_bounding() {
        log!("dropping the capability bounding set: {e}");
    }
    // Nothing wshd inherited may leak into the container's processes.
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r != 0 {
        log!("close_range: {}", std::io::Error::last_os_error());
    }
    if let Err(e) = std::env::set_current_dir("/") {
        log!("chdir /: {e}");
    }
    // The container's root has fewer capabilities than wshd, so it cannot
    // ptrace wshd anyway; not being dumpable also covers the children wshd
    // forks until their exec (see confine::not_dumpable).
    if let Err(e) = confine::not_dumpable() {
        log!("PR_SET_DUMPABLE 0: {e}");
        std::process::exit(1);
    }
    // Built now, so a broken filter stops wshd at start rather than its
    // first spawn.
    let program = seccomp::program();
    log!("{}", seccomp::summary(program));
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv == ["--policy"] {
        print_policy();
        return;
    }
    let args = match parse_args(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("wshd: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    setup_process();
    // SAFETY: the caller handed us this fd; nothing else in wshd owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(args.socket_fd) };
    let devnull = match spawn::open_devnull() {
        Ok(fd) => fd,
        Err(e) => {
            log!("no /dev/null and no fd 0: {e}");
            std::process::exit(1);
        }
    };
    // Refuse to run anything rather than run it at wshd's OOM priority.
    let oom = match oom::ChildScore::prepare() {
        Ok(d) => d,
        Err(e) => {
            log!("oom_score_adj: {e}");
            std::process::exit(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log!("tokio runtime: {e}");
            std::process::exit(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = match wire::Listener::new(sock) {
            Ok(l) => l,
            Err(e) => {
                log!("fd {}: {e}", args.socket_fd);
                std::process::exit(1);
            }
        };
        log!(
            "started as pid {} on fd {} for uid {}",
            std::process::id(),
            listener.as_raw_fd(),
            args.server_uid
        );
        let state = Rc::new(RefCell::new(State {
            procs: BTreeMap::new(),
            running: HashMap::new(),
            streams: BTreeMap::new(),
            stream_pids: HashMap::new(),
            next_stream: 1,
            scan_pids: Default::default(),
            devnull,
            oom,
            server_uid: args.server_uid,
        }));
        grove_schema::fault::crash_point("wshd.start");
        run(state, listener).await
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn args() {
        let a = p(&["--socket-fd", "3", "--server-uid", "1000"])
            .unwrap()
            .unwrap();
        assert_eq!((a.socket_fd, a.server_uid), (3, 1000));
        let a = p(&["--server-uid=7", "--socket-fd=5"]).unwrap().unwrap();
        assert_eq!((a.socket_fd, a.server_uid), (5, 7));
        assert!(p(&["--help"]).unwrap().is_none());
        assert!(p(&["--socket-fd", "3"]).is_err());
        assert!(p(&["--socket-fd", "1", "--server-uid", "0"]).is_err());
        assert!(p(&["--socket-fd", "x", "--server-uid", "0"]).is_err());
        assert!(p(&["--bogus"]).is_err());
    }

    #[test]
    fn signals() {
        assert!(check_signal(1).is_ok() && check_signal(64).is_ok());
        assert!(check_signal(0).is_err() && check_signal(65).is_err() && check_signal(-9).is_err());
    }
}
