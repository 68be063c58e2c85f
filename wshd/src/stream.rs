//! StreamIn and StreamOut: a tar archive extracted into, or written from,
//! the container's filesystem by a forked child that has taken the user's
//! identity. wshd is PID 1 after pivot_root, so "/" is the container's root
//! and nothing outside the container can be named, let alone written; the
//! child runs with the user's uid, gids and (for a non-root user) no
//! capabilities, so the container's permissions apply to every entry.
//!
//! The child is a copy of wshd made by fork. It never touches wshd's tokio
//! runtime: it closes every fd but its own two, does blocking I/O only and
//! ends in `_exit`. It reports twice on a pipe: once when the path and user
//! checked out (or why not), which wshd waits for before it answers, and
//! once at the end (success or the error), which wshd reads after reaping it.
//!
//! Before it takes the user's identity the child is confined as every
//! process wshd starts (confine.rs): at most Docker's capabilities,
//! no_new_privs, the seccomp filter; and, like wshd, it is not dumpable, so
//! the container's processes cannot ptrace it or read its /proc files.

use std::ffi::CString;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use grove_schema::wshd::{ErrorKind, ExitStatus, WshdError};
use nix::fcntl::OFlag;

use crate::confine;
use crate::seccomp;
use crate::spawn::output_pipe;
use crate::users::ResolvedUser;

/// Which way the archive goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn verb(self) -> &'static str {
        match self {
            Direction::In => "streamIn",
            Direction::Out => "streamOut",
        }
    }
}

/// A started stream: the child, groved's end of the data pipe, and wshd's
/// end of the report pipe (for the final report).
pub struct Started {
    pub pid: i32,
    pub data: OwnedFd,
    pub report: OwnedFd,
}

/// Longest message a report carries (the rest is cut).
const MAX_MESSAGE: usize = 4000;

const REPORT_OK: u8 = 0;
const REPORT_INVALID: u8 = 1;
const REPORT_SYSTEM: u8 = 2;

/// Bytes read or written to the pipe at once.
const IO_BUFFER: usize = 256 * 1024;

fn invalid(msg: impl Into<String>) -> WshdError {
    WshdError::new(ErrorKind::InvalidSpec, msg)
}

fn system(msg: impl Into<String>) -> WshdError {
    WshdError::new(ErrorKind::System, msg)
}

/// Checks the request's path: absolute, no NUL, no "..". Lexically only;
/// the child resolves it as the user.
pub fn check_path(verb: &str, path: &str) -> Result<(), WshdError> {
    if !path.starts_with('/') {
        return Err(invalid(format!(
            "{verb} {path:?}: the path must be absolute"
        )));
    }
    if path.contains('\0') {
        return Err(invalid(format!("{verb} {path:?}: the path contains a NUL")));
    }
    if Path::new(path)
        .components()
        .any(|c| c == Component::ParentDir)
    {
        return Err(invalid(format!(
            "{verb} {path:?}: the path may not contain \"..\""
        )));
    }
    Ok(())
}

/// For StreamOut: the directory the entries are named from and the name of
/// the first entry, as Garden splits it (filepath.Split): "/a/b" gives
/// ("/a", "b"); "/a/b/" gives ("/a/b", ".") (the directory's contents).
pub fn split_out_path(path: &str) -> (PathBuf, PathBuf) {
    let (dir, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("/", path),
    };
    let dir = if dir.len() > 1 {
        dir.trim_end_matches('/')
    } else {
        dir
    };
    let dir = if dir.is_empty() { "/" } else { dir };
    let name = if name.is_empty() { "." } else { name };
    (PathBuf::from(dir), PathBuf::from(name))
}

/// Why a stream failed: the message with the error's whole chain.
fn chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// A failure in the child: InvalidSpec unless the system is at fault
/// (out of space or quota, I/O error, out of memory).
fn classify(e: &std::io::Error, msg: String) -> WshdError {
    let mut errno = e.raw_os_error();
    let mut source: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|r| r as _);
    while errno.is_none() {
        let Some(s) = source else { break };
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            errno = io.raw_os_error();
        }
        source = s.source();
    }
    match errno {
        Some(libc::ENOSPC | libc::EDQUOT | libc::EIO | libc::ENOMEM | libc::EFBIG) => system(msg),
        _ => invalid(msg),
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), WshdError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| system(format!("pipe2: {e}")))
}

/// Forks the child for `path` as `user`, and waits for its first report:
/// an error there (bad path, no permission) is returned and the child
/// reaped. Must run on wshd's only thread; the caller registers the pid
/// before its next await, so the reaper cannot miss it.
pub fn start(
    dir: Direction,
    path: &str,
    user: &ResolvedUser,
    fds: ChildFds,
) -> Result<Started, WshdError> {
    let verb = dir.verb();
    check_path(verb, path)?;
    let cpath = CString::new(path).map_err(|_| invalid("the path contains a NUL"))?;
    let (data_r, data_w) = output_pipe()?;
    let (report_r, report_w) = pipe()?;
    let (mine, theirs) = match dir {
        Direction::In => (data_w, data_r),
        Direction::Out => (data_r, data_w),
    };
    let job = Job {
        dir,
        path: PathBuf::from(path),
        cpath,
        user: user.clone(),
    };
    // SAFETY: wshd runs a current-thread runtime and no other threads, so
    // the child is a copy of a single-threaded process: no lock is held by
    // a thread that does not exist there, and allocating is safe. The child
    // never returns into wshd's code (it ends in _exit) and never touches
    // the runtime.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(system(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if pid == 0 {
        // SAFETY: see above; this never returns.
        unsafe { child(&job, theirs.as_raw_fd(), report_w.as_raw_fd(), fds) }
    }
    drop((theirs, report_w));
    match read_report(&report_r) {
        Ok(Ok(())) => Ok(Started {
            pid,
            data: mine,
            report: report_r,
        }),
        Ok(Err(e)) => {
            reap_now(pid);
            Err(e)
        }
        Err(why) => {
            // SAFETY: kill on our own, not yet reaped child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let status = reap_now(pid);
            Err(system(format!(
                "{verb} {path}: the child ended before it was ready ({why}; {status:?})"
            )))
        }
    }
}

/// Waits for a child the reaper does not know yet.
fn reap_now(pid: i32) -> Option<ExitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 {
            return if libc::WIFEXITED(status) {
                Some(ExitStatus::Code(libc::WEXITSTATUS(status)))
            } else if libc::WIFSIGNALED(status) {
                Some(ExitStatus::Signal(libc::WTERMSIG(status)))
            } else {
                None
            };
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> Result<usize, String> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(format!("reading its report: {e}")),
        }
    }
    Ok(got)
}

/// One report from the child: `Ok(result)`, or `Err` when the pipe ended
/// (or broke) before a whole report.
pub fn read_report(fd: &OwnedFd) -> Result<Result<(), WshdError>, String> {
    let mut head = [0u8; 5];
    if read_full(fd, &mut head)? < head.len() {
        return Err("no report".into());
    }
    let len = u32::from_ne_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_MESSAGE + 4 {
        return Err(format!("a report of {len} bytes"));
    }
    let mut msg = vec![0u8; len];
    if read_full(fd, &mut msg)? < len {
        return Err("a cut report".into());
    }
    let msg = String::from_utf8_lossy(&msg).into_owned();
    Ok(match head[0] {
        REPORT_OK => Ok(()),
        REPORT_INVALID => Err(invalid(msg)),
        _ => Err(system(msg)),
    })
}

/// The outcome of a stream whose child has exited: its final report.
pub fn outcome(
    dir: Direction,
    path: &str,
    report: &OwnedFd,
    status: ExitStatus,
) -> Result<(), WshdError> {
    match read_report(report) {
        Ok(Ok(())) if status == ExitStatus::Code(0) => Ok(()),
        Ok(Ok(())) => Err(system(format!(
            "{} {path}: the child exited with {status:?} after reporting success",
            dir.verb()
        ))),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(system(format!(
            "{} {path}: interrupted ({})",
            dir.verb(),
            match status {
                ExitStatus::Signal(s) => format!("killed by signal {s}"),
                ExitStatus::Code(c) => format!("exited with {c} without a report"),
            }
        ))),
    }
}

/// wshd's fds a stream child uses before it closes them.
#[derive(Clone, Copy)]
pub struct ChildFds {
    /// Its stdout and stderr (wshd's own are its log, on the host).
    pub devnull: RawFd,
    /// Its oom_score_adj, above wshd's (see oom.rs).
    pub oom: Option<crate::oom::RawChildScore>,
}

/// What the child does, prepared before fork.
struct Job {
    dir: Direction,
    path: PathBuf,
    cpath: CString,
    user: ResolvedUser,
}

/// Writes one report frame; a failure here cannot be reported anywhere.
fn write_report(fd: RawFd, result: &Result<(), WshdError>) {
    let (kind, msg) = match result {
        Ok(()) => (REPORT_OK, ""),
        Err(e) if e.kind == ErrorKind::InvalidSpec || e.kind == ErrorKind::UnknownUser => {
            (REPORT_INVALID, e.message.as_str())
        }
        Err(e) => (REPORT_SYSTEM, e.message.as_str()),
    };
    let mut end = msg.len().min(MAX_MESSAGE);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    let msg = &msg.as_bytes()[..end];
    let mut frame = Vec::with_capacity(5 + msg.len());
    frame.push(kind);
    frame.extend_from_slice(&(msg.len() as u32).to_ne_bytes());
    frame.extend_from_slice(msg);
    let mut rest = &frame[..];
    while !rest.is_empty() {
        // SAFETY: write from a valid buffer to our own fd.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n > 0 {
            rest = &rest[n as usize..];
        } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        } else {
            return;
        }
    }
}

/// Closes every fd from 3 up but `keep`.
unsafe fn close_all_but(keep: &[RawFd]) {
    let mut keep: Vec<RawFd> = keep.to_vec();
    keep.sort_unstable();
    let mut from: u32 = 3;
    for &fd in &keep {
        let fd = fd as u32;
        if fd > from {
            libc::syscall(libc::SYS_close_range, from, fd - 1, 0u32);
        }
        from = from.max(fd + 1);
    }
    libc::syscall(libc::SYS_close_range, from, u32::MAX, 0u32);
}

unsafe fn child(job: &Job, data: RawFd, report: RawFd, fds: ChildFds) -> ! {
    // wshd ignores some signals; the child gets the defaults back, but keeps
    // ignoring SIGPIPE so that a reader going away is an error it reports.
    for sig in 1..65 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    // wshd's stdout and stderr are its log, a host file: not this child's.
    for fd in [1, 2] {
        libc::dup2(fds.devnull, fd);
    }
    // Above wshd in the OOM killer's order (before the user switch: the
    // container's root owns the /proc files of this undumpable child).
    if let Some(score) = &fds.oom {
        if !score.raise_self() {
            let e = std::io::Error::last_os_error();
            write_report(report, &Err(system(format!("raising oom_score_adj: {e}"))));
            libc::_exit(1);
        }
    }
    // Nothing of wshd's (its sockets, other processes' pipes) stays open here.
    close_all_but(&[data, report]);
    let result = std::panic::catch_unwind(|| {
        // SAFETY: `data` is ours alone from here on (the others are closed).
        let data = File::from_raw_fd(data);
        run(job, data, report)
    });
    let result = result.unwrap_or_else(|_| Err(system(format!("{}: panicked", job.dir.verb()))));
    let code = i32::from(result.is_err());
    if result.is_err() {
        write_report(report, &result);
    }
    libc::_exit(code)
}

/// The child's work: become the user, check the path, report, then move the
/// archive. Returns the final result (reported by the caller on error).
fn run(job: &Job, data: File, report: RawFd) -> Result<(), WshdError> {
    let verb = job.dir.verb();
    let path = job.path.display().to_string();
    let setup = become_user(&job.user).and_then(|()| match job.dir {
        Direction::In => prepare_in(job),
        Direction::Out => prepare_out(job),
    });
    write_report(report, &setup.as_ref().map(|_| ()).map_err(Clone::clone));
    let Ok(dst) = setup else {
        // Reported already; exit 1 without a second report.
        // SAFETY: _exit ends the child at once.
        unsafe { libc::_exit(1) };
    };
    let result = match job.dir {
        Direction::In => extract(data, &dst),
        Direction::Out => archive(data, job),
    };
    match result {
        Ok(()) => {
            write_report(report, &Ok(()));
            Ok(())
        }
        Err(e) => Err(classify(&e, format!("{verb} {path}: {}", chain(&e)))),
    }
}

/// Takes the user's identity under the same confinement as a spawned
/// process (see confine.rs): Docker's capability set at most, no_new_privs
/// and the seccomp filter, installed before the child touches the path.
fn become_user(user: &ResolvedUser) -> Result<(), WshdError> {
    confine::drop_bounding().map_err(|e| system(format!("dropping capabilities: {e}")))?;
    // SAFETY: plain system calls on valid memory.
    let ok = unsafe {
        libc::setgroups(user.groups.len(), user.groups.as_ptr()) == 0
            && libc::setgid(user.gid) == 0
            && libc::setuid(user.uid) == 0
    };
    if !ok {
        return Err(system(format!(
            "switching to uid {} gid {} groups {:?}: {}",
            user.uid,
            user.gid,
            user.groups,
            std::io::Error::last_os_error()
        )));
    }
    confine::set_capabilities().map_err(|e| system(format!("dropping capabilities: {e}")))?;
    confine::no_new_privs().map_err(|e| system(format!("setting no_new_privs: {e}")))?;
    seccomp::install(seccomp::program())
        .map_err(|e| system(format!("installing the seccomp filter: {e}")))
}

fn io_invalid(verb: &str, path: &Path, what: &str, e: std::io::Error) -> WshdError {
    classify(&e, format!("{verb} {}: {what}: {e}", path.display()))
}

/// StreamIn: create the destination as the user when missing (Garden does),
/// check it is a directory the user may enter; the canonical path.
fn prepare_in(job: &Job) -> Result<PathBuf, WshdError> {
    let verb = job.dir.verb();
    let path = &job.path;
    std::fs::create_dir_all(path).map_err(|e| {
        io_invalid(
            verb,
            path,
            &format!("creating the directory as uid {}", job.user.uid),
            e,
        )
    })?;
    let meta = std::fs::metadata(path).map_err(|e| io_invalid(verb, path, "stat", e))?;
    if !meta.is_dir() {
        return Err(invalid(format!(
            "{verb} {}: not a directory",
            path.display()
        )));
    }
    // SAFETY: access on a valid C string.
    if unsafe { libc::access(job.cpath.as_ptr(), libc::X_OK) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(io_invalid(
            verb,
            path,
            &format!("entering the directory as uid {}", job.user.uid),
            e,
        ));
    }
    path.canonicalize()
        .map_err(|e| io_invalid(verb, path, "resolving the path", e))
}

/// StreamOut: the path must exist and be readable by the user.
fn prepare_out(job: &Job) -> Result<PathBuf, WshdError> {
    let verb = job.dir.verb();
    let path = &job.path;
    let as_user = format!("as uid {}", job.user.uid);
    let meta = std::fs::symlink_metadata(path).map_err(|e| io_invalid(verb, path, "stat", e))?;
    if meta.is_dir() {
        std::fs::read_dir(path)
            .map_err(|e| io_invalid(verb, path, &format!("reading the directory {as_user}"), e))?;
    } else if meta.is_file() {
        File::open(path).map_err(|e| io_invalid(verb, path, &format!("opening {as_user}"), e))?;
    }
    Ok(path.clone())
}

/// Reports whether its reader reached end of file.
struct EofReader<R> {
    inner: R,
    eof: bool,
    total: u64,
}

impl<R: Read> Read for EofReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.eof = true;
        }
        self.total += n as u64;
        Ok(n)
    }
}

fn other(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

/// Extracts the archive on `data` into `dst` (canonical). Entries with an
/// absolute path or a ".." are refused; tar-rs's `unpack_in` checks that
/// each entry's parent resolves inside `dst` (so nothing is written through
/// a symlink that leads out of it) and replaces rather than writes through
/// an existing file or symlink. Directories are unpacked last, as
/// `Archive::unpack` does, so a read-only directory does not stop its own
/// entries. Ownership is kept only for root (anyone else cannot chown).
fn extract(data: File, dst: &Path) -> std::io::Result<()> {
    let is_root = nix::unistd::geteuid().is_root();
    let reader = EofReader {
        inner: BufReader::with_capacity(IO_BUFFER, data),
        eof: false,
        total: 0,
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(is_root);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    let unpacked = (|| -> std::io::Result<()> {
        let mut directories = Vec::new();
        for entry in archive.entries()? {
            let mut entry = entry?;
            let name = entry.path()?.into_owned();
            let shown = name.display().to_string();
            if name.has_root() {
                return Err(other(format!(
                    "entry {shown:?}: absolute paths are refused"
                )));
            }
            if name.components().any(|c| c == Component::ParentDir) {
                return Err(other(format!("entry {shown:?}: \"..\" is refused")));
            }
            if entry.header().entry_type().is_hard_link() {
                if let Some(target) = entry.link_name()? {
                    if target.has_root() || target.components().any(|c| c == Component::ParentDir) {
                        return Err(other(format!(
                            "entry {shown:?}: a hard link to {:?} is refused",
                            target.display().to_string()
                        )));
                    }
                }
            }
            if entry.header().entry_type().is_dir() {
                directories.push(entry);
                continue;
            }
            if !entry.unpack_in(dst)? {
                return Err(other(format!("entry {shown:?} was refused")));
            }
        }
        // Deepest first, so a directory's mode is set after its children.
        directories.reverse();
        for mut dir in directories {
            let shown = String::from_utf8_lossy(&dir.path_bytes()).into_owned();
            if !dir.unpack_in(dst)? {
                return Err(other(format!("entry {shown:?} was refused")));
            }
        }
        Ok(())
    })();
    let reader = archive.into_inner();
    if let Err(e) = unpacked {
        if reader.eof {
            return Err(std::io::Error::new(
                e.kind(),
                format!(
                    "{}: the tar ended after {} bytes (truncated?)",
                    chain(&e),
                    reader.total
                ),
            ));
        }
        return Err(e);
    }
    if reader.eof && reader.total > 0 {
        // The entries ended with the input, not with the end-of-archive
        // blocks: the archive was cut short.
        return Err(other(format!(
            "the tar ends after {} bytes without its end-of-archive blocks (truncated?)",
            reader.total
        )));
    }
    // Take what follows the end blocks (padding), so the writer does not see
    // a broken pipe.
    let mut rest = reader.inner;
    std::io::copy(&mut rest, &mut std::io::sink())?;
    Ok(())
}

/// Yields exactly `size` bytes: the file's first `size` bytes, then zeros
/// when it shrank meanwhile (as GNU tar does), so the archive stays whole.
struct Exact<R> {
    inner: std::io::Take<R>,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let mut n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            buf[..max].fill(0);
            n = max;
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Writes a tar of `job.path` to `data`, entries named from its parent.
fn archive(data: File, job: &Job) -> std::io::Result<()> {
    let (_, name) = split_out_path(&job.path.to_string_lossy());
    let mut builder = tar::Builder::new(BufWriter::with_capacity(IO_BUFFER, data));
    builder.follow_symlinks(false);
    append(&mut builder, &job.path, &name)?;
    let mut out = builder.into_inner()?;
    out.flush()
}

fn with_path(e: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Appends `src` under `name`, and a directory's contents after it (sorted
/// by name, symlinks not followed). Sockets are skipped, as GNU tar does.
fn append<W: Write>(builder: &mut tar::Builder<W>, src: &Path, name: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(src).map_err(|e| with_path(e, "stat", src))?;
    let ft = meta.file_type();
    if ft.is_socket() {
        return Ok(());
    }
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
    if ft.is_file() {
        let file = File::open(src).map_err(|e| with_path(e, "opening", src))?;
        // The size of the open file, not of whatever the path names now.
        let size = file
            .metadata()
            .map_err(|e| with_path(e, "stat", src))?
            .size();
        header.set_size(size);
        let reader = Exact {
            inner: file.take(size),
            remaining: size,
        };
        builder
            .append_data(&mut header, name, reader)
            .map_err(|e| with_path(e, "reading", src))?;
    } else if ft.is_symlink() {
        let target = std::fs::read_link(src).map_err(|e| with_path(e, "readlink", src))?;
        header.set_size(0);
        builder.append_link(&mut header, name, &target)?;
    } else if ft.is_dir() {
        header.set_size(0);
        builder.append_data(&mut header, name, std::io::empty())?;
        let mut children: Vec<_> = std::fs::read_dir(src)
            .map_err(|e| with_path(e, "reading the directory", src))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(|e| with_path(e, "reading the directory", src))?;
        children.sort();
        for child in children {
            append(builder, &src.join(&child), &name.join(&child))?;
        }
    } else {
        // FIFOs and device nodes: a header only (set_metadata_in_mode set
        // the type; the device numbers follow).
        if ft.is_char_device() || ft.is_block_device() {
            let rdev = meta.rdev();
            header.set_device_major(libc::major(rdev))?;
            header.set_device_minor(libc::minor(rdev))?;
        }
        header.set_size(0);
        builder.append_data(&mut header, name, std::io::empty())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_paths_split_like_garden() {
        let s = |p: &str| {
            let (d, n) = split_out_path(p);
            (d.display().to_string(), n.display().to_string())
        };
        assert_eq!(s("/a/b"), ("/a".into(), "b".into()));
        assert_eq!(s("/a/b/"), ("/a/b".into(), ".".into()));
        assert_eq!(s("/a"), ("/".into(), "a".into()));
        assert_eq!(s("/"), ("/".into(), ".".into()));
    }

    #[test]
    fn paths_are_checked() {
        assert!(check_path("streamIn", "/a/b").is_ok());
        for bad in ["", "a/b", "/a/../b", "/a\0b"] {
            let e = check_path("streamIn", bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidSpec, "{bad:?}");
        }
    }

    #[test]
    fn exact_pads_a_shrunk_file() {
        let mut r = Exact {
            inner: (&b"abc"[..]).take(5),
            remaining: 5,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
    }

    #[test]
    fn reports_round_trip() {
        let (r, w) = pipe().unwrap();
        write_report(w.as_raw_fd(), &Ok(()));
        write_report(w.as_raw_fd(), &Err(invalid("bad: é".repeat(2000))));
        drop(w);
        assert_eq!(read_report(&r).unwrap(), Ok(()));
        let e = read_report(&r).unwrap().unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidSpec);
        assert!(e.message.len() <= MAX_MESSAGE);
        assert!(read_report(&r).is_err());
    }
}
