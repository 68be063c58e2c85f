//! Turning a `SpawnSpec` into a running process: the environment, the
//! executable's path, the working directory, resource limits, the pipes or
//! the pseudo-terminal, and fork + exec. Between the two the child gives up
//! what the client's code must not have (confine.rs, seccomp.rs).

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use grove_schema::wshd::{
    ErrorKind, Rlimit, SpawnSpec, WindowSize, WshdError, MAX_PROCESS_ID, OUTPUT_BUFFER,
};
use nix::fcntl::OFlag;
use nix::sys::resource::Resource;

use crate::confine;
use crate::users::ResolvedUser;

pub const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const USER_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

fn invalid(msg: impl Into<String>) -> WshdError {
    WshdError::new(ErrorKind::InvalidSpec, msg)
}

fn system(msg: impl Into<String>) -> WshdError {
    WshdError::new(ErrorKind::System, msg)
}

pub fn check_id(id: &str) -> Result<(), WshdError> {
    if id.is_empty() {
        return Err(invalid("process id is empty"));
    }
    if id.len() > MAX_PROCESS_ID {
        return Err(invalid(format!(
            "process id is {} bytes; at most {MAX_PROCESS_ID} are allowed",
            id.len()
        )));
    }
    Ok(())
}

/// The spec's environment, checked, plus HOME, USER (when the user has a
/// name) and PATH when the spec does not set them.
pub fn build_env(spec_env: &[String], user: &ResolvedUser) -> Result<Vec<String>, WshdError> {
    let mut env = Vec::with_capacity(spec_env.len() + 3);
    for entry in spec_env {
        match entry.split_once('=') {
            Some((name, _)) if !name.is_empty() && !entry.contains('\0') => env.push(entry.clone()),
            _ => {
                return Err(invalid(format!(
                    "env entry {entry:?}: expected NAME=value with a non-empty NAME and no NUL"
                )))
            }
        }
    }
    let has = |env: &[String], name: &str| {
        env.iter()
            .any(|e| e.split_once('=').is_some_and(|(n, _)| n == name))
    };
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", user.home));
    }
    if let Some(name) = &user.name {
        if !has(&env, "USER") {
            env.push(format!("USER={name}"));
        }
    }
    if !has(&env, "PATH") {
        env.push(format!(
            "PATH={}",
            if user.uid == 0 { ROOT_PATH } else { USER_PATH }
        ));
    }
    Ok(env)
}

/// The value of PATH in a final environment (the first entry, as getenv
/// would see it).
pub fn env_path(env: &[String]) -> &str {
    env.iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("")
}

fn is_executable_file(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A path with a '/' is used as is (exec reports whether it exists);
/// a bare name is searched in `path_var`, relative entries (an empty one
/// is ".") being taken from `cwd`, the process's working directory.
pub fn find_executable(path: &str, path_var: &str, cwd: &Path) -> Result<PathBuf, WshdError> {
    if path.is_empty() {
        return Err(invalid("path is empty"));
    }
    if path.contains('/') {
        return Ok(PathBuf::from(path));
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = cwd.join(dir).join(path);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(WshdError::new(
        ErrorKind::ExecutableNotFound,
        format!("executable {path:?} not found in PATH {path_var:?}"),
    ))
}

/// `mkdir -p dir`; every directory it creates is chowned to uid:gid
/// (existing ones are left alone).
pub fn ensure_dir(dir: &Path, uid: u32, gid: u32) -> Result<(), WshdError> {
    let mut cur = PathBuf::from("/");
    for comp in dir.components().skip(1) {
        cur.push(comp);
        match std::fs::metadata(&cur) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(invalid(format!(
                    "working directory {}: {} is not a directory",
                    dir.display(),
                    cur.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(system(format!("stat {}: {e}", cur.display()))),
        }
        match std::fs::create_dir(&cur) {
            Ok(()) => {
                std::os::unix::fs::lchown(&cur, Some(uid), Some(gid))
                    .map_err(|e| system(format!("chown {} to {uid}:{gid}: {e}", cur.display())))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(system(format!("mkdir {}: {e}", cur.display()))),
        }
    }
    Ok(())
}

/// Everything the child needs, prepared before fork (the child allocates
/// nothing).
pub struct Prepared {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub dir: CString,
    pub user: ResolvedUser,
    pub open_stdin: bool,
    pub tty: Option<WindowSize>,
    pub rlimits: Vec<(Rlimit, u64)>,
}

/// The setrlimit resource of a protocol `Rlimit`.
pub fn resource(r: Rlimit) -> Resource {
    match r {
        Rlimit::As => Resource::RLIMIT_AS,
        Rlimit::Core => Resource::RLIMIT_CORE,
        Rlimit::Cpu => Resource::RLIMIT_CPU,
        Rlimit::Data => Resource::RLIMIT_DATA,
        Rlimit::Fsize => Resource::RLIMIT_FSIZE,
        Rlimit::Locks => Resource::RLIMIT_LOCKS,
        Rlimit::Memlock => Resource::RLIMIT_MEMLOCK,
        Rlimit::Msgqueue => Resource::RLIMIT_MSGQUEUE,
        Rlimit::Nice => Resource::RLIMIT_NICE,
        Rlimit::Nofile => Resource::RLIMIT_NOFILE,
        Rlimit::Nproc => Resource::RLIMIT_NPROC,
        Rlimit::Rss => Resource::RLIMIT_RSS,
        Rlimit::Rtprio => Resource::RLIMIT_RTPRIO,
        Rlimit::Sigpending => Resource::RLIMIT_SIGPENDING,
        Rlimit::Stack => Resource::RLIMIT_STACK,
    }
}

fn cstring(what: &str, s: &str) -> Result<CString, WshdError> {
    CString::new(s).map_err(|_| invalid(format!("{what} {s:?} contains a NUL byte")))
}

/// Validates the spec and prepares the process: user, env, dir, path.
/// Creates the working directory.
pub fn prepare(spec: &SpawnSpec, user: ResolvedUser) -> Result<Prepared, WshdError> {
    let env = build_env(&spec.env, &user)?;
    let dir = spec.dir.clone().unwrap_or_else(|| user.home.clone());
    if !dir.starts_with('/') {
        return Err(invalid(format!("dir {dir:?} is not an absolute path")));
    }
    let dir_c = cstring("dir", &dir)?;
    let argv0 = cstring("path", &spec.path)?;
    let mut argv = vec![argv0];
    for a in &spec.args {
        argv.push(cstring("argument", a)?);
    }
    let envp = env
        .iter()
        .map(|e| cstring("env entry", e))
        .collect::<Result<Vec<_>, _>>()?;
    ensure_dir(Path::new(&dir), user.uid, user.gid)?;
    let exe = find_executable(&spec.path, env_path(&env), Path::new(&dir))?;
    let path = CString::new(exe.into_os_string().into_encoded_bytes())
        .map_err(|_| invalid("path contains a NUL byte"))?;
    Ok(Prepared {
        path,
        argv,
        envp,
        dir: dir_c,
        user,
        open_stdin: spec.open_stdin,
        tty: spec.tty,
        rlimits: spec.rlimits.clone(),
    })
}

/// wshd's ends of a started process's output.
pub enum Io {
    /// stdout and stderr pipes (read ends).
    Pipes { stdout: OwnedFd, stderr: OwnedFd },
    /// A pseudo-terminal whose output the relay copies into a pipe.
    Tty {
        /// The read end of the output pipe.
        output: OwnedFd,
        /// The terminal's master, kept for TIOCSWINSZ until Release.
        master: OwnedFd,
        /// For the relay: the output pipe's write end and its own master.
        relay_out: OwnedFd,
        relay_master: OwnedFd,
    },
}

/// A started process and wshd's ends of its stdio.
pub struct Child {
    pub pid: i32,
    pub io: Io,
    /// With `open_stdin`: the stdin pipe's write end, or a copy of the
    /// terminal's master.
    pub stdin: Option<OwnedFd>,
}

// Where the child failed, reported through the error pipe.
const STAGE_SETUP: i32 = 1;
const STAGE_CREDS: i32 = 2;
const STAGE_CHDIR: i32 = 3;
const STAGE_EXEC: i32 = 4;
const STAGE_RLIMIT: i32 = 5;
const STAGE_CTTY: i32 = 6;
const STAGE_CAPS: i32 = 7;
const STAGE_NNP: i32 = 8;
const STAGE_SECCOMP: i32 = 9;
const STAGE_OOM: i32 = 10;

/// The child's report: stage, errno, detail (the index of a failed rlimit).
const REPORT_LEN: usize = 12;

fn pipe() -> Result<(OwnedFd, OwnedFd), WshdError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| system(format!("pipe2: {e}")))
}

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// A pipe for a process's output, holding `OUTPUT_BUFFER` bytes when the
/// kernel allows it. In a user namespace wshd lacks CAP_SYS_RESOURCE, and
/// the kernel's budget of pipe pages per user (fs.pipe-user-pages-soft,
/// shared by every container, whose ids are one host range) can refuse a
/// larger pipe: then the pipe keeps the default size (64 KiB), which only
/// means less output is held before the process blocks.
pub fn output_pipe() -> Result<(OwnedFd, OwnedFd), WshdError> {
    let (r, w) = pipe()?;
    // SAFETY: fcntl on an fd we own; no memory is passed.
    let got = unsafe {
        libc::fcntl(
            w.as_raw_fd(),
            libc::F_SETPIPE_SZ,
            OUTPUT_BUFFER as libc::c_int,
        )
    };
    if got < 0 {
        let e = last_error();
        if e.raw_os_error() != Some(libc::EPERM) {
            return Err(system(format!("fcntl F_SETPIPE_SZ {OUTPUT_BUFFER}: {e}")));
        }
    }
    Ok((r, w))
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, WshdError> {
    fd.try_clone().map_err(|e| system(format!("dup: {e}")))
}

/// Sets a terminal's window size (the kernel sends SIGWINCH to its
/// foreground process group when it changes).
pub fn set_window_size(master: &OwnedFd, size: WindowSize) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: size.rows,
        ws_col: size.columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(last_error());
    }
    Ok(())
}

/// A new pseudo-terminal of `size`; the slave belongs to `uid`, mode 0620.
fn open_pty(size: WindowSize, uid: u32) -> Result<(OwnedFd, OwnedFd), WshdError> {
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = nix::fcntl::open("/dev/ptmx", flags, nix::sys::stat::Mode::empty())
        .map_err(|e| system(format!("open /dev/ptmx: {e}")))?;
    // SAFETY: open returned a fresh fd that nothing else owns.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int from a valid pointer.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } != 0 {
        return Err(system(format!("unlockpt: {}", last_error())));
    }
    // The slave of this very master, without a path lookup (Linux 4.13);
    // else through /dev/pts.
    // SAFETY: TIOCGPTPEER takes open flags and returns a new fd.
    let peer = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags.bits()) };
    let slave = if peer >= 0 {
        // SAFETY: a fresh fd that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(peer) }
    } else {
        let mut n: libc::c_uint = 0;
        // SAFETY: TIOCGPTN writes one unsigned int to a valid pointer.
        if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } != 0 {
            return Err(system(format!("ptsname: {}", last_error())));
        }
        let path = format!("/dev/pts/{n}");
        let fd = nix::fcntl::open(path.as_str(), flags, nix::sys::stat::Mode::empty())
            .map_err(|e| system(format!("open {path}: {e}")))?;
        // SAFETY: a fresh fd that nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    set_window_size(&master, size)
        .map_err(|e| system(format!("TIOCSWINSZ {}x{}: {e}", size.columns, size.rows)))?;
    // As runc does: the process's user may reopen its terminal.
    nix::unistd::fchown(slave.as_raw_fd(), Some(uid.into()), None)
        .map_err(|e| system(format!("chown the terminal to uid {uid}: {e}")))?;
    nix::sys::stat::fchmod(
        slave.as_raw_fd(),
        nix::sys::stat::Mode::from_bits_truncate(0o620),
    )
    .map_err(|e| system(format!("chmod 0620 the terminal: {e}")))?;
    Ok((master, slave))
}

/// Forks and execs. `devnull` is the process's stdin unless `open_stdin`
/// (or a tty); `oom`: the child's oom_score_adj, set before exec (see
/// oom.rs). Errors before exec are reported synchronously (the
/// child writes them to a close-on-exec pipe), and a child that failed is
/// reaped here.
///
/// Must run on wshd's only thread, before the reaper gets a chance to run
/// (the caller registers the pid before its next await).
pub fn spawn(
    p: &Prepared,
    devnull: BorrowedFd<'_>,
    oom: Option<crate::oom::RawChildScore>,
) -> Result<Child, WshdError> {
    // The child's ends, closed in the parent after fork.
    let mut child_ends: Vec<OwnedFd> = Vec::new();
    let (io, stdin, stdio, ctty) = match p.tty {
        None => {
            let (out_r, out_w) = output_pipe()?;
            let (err_r, err_w) = output_pipe()?;
            let (in_r, in_w) = if p.open_stdin {
                let (r, w) = pipe()?;
                (Some(r), Some(w))
            } else {
                (None, None)
            };
            let stdio = [
                in_r.as_ref().map_or(devnull.as_raw_fd(), |r| r.as_raw_fd()),
                out_w.as_raw_fd(),
                err_w.as_raw_fd(),
            ];
            child_ends.extend([out_w, err_w]);
            child_ends.extend(in_r);
            let io = Io::Pipes {
                stdout: out_r,
                stderr: err_r,
            };
            (io, in_w, stdio, None)
        }
        Some(size) => {
            let (master, slave) = open_pty(size, p.user.uid)?;
            let (out_r, out_w) = output_pipe()?;
            let relay_master = dup(&master)?;
            let stdin = if p.open_stdin {
                Some(dup(&master)?)
            } else {
                None
            };
            let s = slave.as_raw_fd();
            child_ends.push(slave);
            let io = Io::Tty {
                output: out_r,
                master,
                relay_out: out_w,
                relay_master,
            };
            (io, stdin, [s, s, s], Some(s))
        }
    };
    let (report_r, report_w) = pipe()?;

    let mut argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = p.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let groups: Vec<libc::gid_t> = p.user.groups.clone();
    let rlimits: Vec<(Resource, u64)> = p.rlimits.iter().map(|&(r, v)| (resource(r), v)).collect();
    let filter = crate::seccomp::program();

    let setup = ChildSetup {
        argv: &argv,
        envp: &envp,
        groups: &groups,
        rlimits: &rlimits,
        stdio,
        ctty,
        report: report_w.as_raw_fd(),
        filter,
        oom,
    };
    let pid = vfork_child(p, &setup)?;
    drop((child_ends, report_w));

    let mut buf = [0u8; REPORT_LEN];
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(report_r.as_raw_fd(), &mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    }
    if got == 0 {
        return Ok(Child { pid, io, stdin });
    }
    // The child failed before exec: reap it now (the reaper does not know it).
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid on our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r >= 0 || last_error().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    let word = |i: usize| i32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let (stage, errno, detail) = (word(0), word(4), word(8));
    let err = std::io::Error::from_raw_os_error(errno);
    let path = p.path.to_string_lossy();
    Err(match stage {
        STAGE_EXEC
            if matches!(
                errno,
                libc::ENOENT | libc::EACCES | libc::ENOTDIR | libc::ENOEXEC | libc::ELOOP
            ) =>
        {
            WshdError::new(
                ErrorKind::ExecutableNotFound,
                format!("executable {path:?}: {err}"),
            )
        }
        STAGE_EXEC => system(format!("execve {path:?}: {err}")),
        STAGE_CHDIR => system(format!(
            "chdir {:?} as uid {}: {err}",
            p.dir.to_string_lossy(),
            p.user.uid
        )),
        STAGE_CREDS => system(format!(
            "switching to uid {} gid {} groups {:?}: {err}",
            p.user.uid, p.user.gid, p.user.groups
        )),
        STAGE_RLIMIT => {
            let (limit, value) = usize::try_from(detail)
                .ok()
                .and_then(|i| p.rlimits.get(i))
                .map_or(("?".to_string(), 0), |(r, v)| (format!("{r:?}"), *v));
            let msg = format!("rlimit {limit} = {value} (setrlimit, soft = hard): {err}");
            match errno {
                libc::EPERM => invalid(format!(
                    "{msg}: above the system's maximum or the hard limit wshd may grant"
                )),
                libc::EINVAL => invalid(msg),
                _ => system(msg),
            }
        }
        STAGE_CTTY => system(format!("making the terminal the controlling one: {err}")),
        STAGE_CAPS => system(format!("dropping capabilities: {err}")),
        STAGE_NNP => system(format!("setting no_new_privs: {err}")),
        STAGE_SECCOMP => system(format!("installing the seccomp filter: {err}")),
        STAGE_OOM => system(format!("raising oom_score_adj above wshd's: {err}")),
        _ => system(format!("setting up the child: {err}")),
    })
}

/// Places `src` on `dst` without close-on-exec.
unsafe fn move_fd(src: RawFd, dst: RawFd) -> bool {
    if src == dst {
        libc::fcntl(dst, libc::F_SETFD, 0) == 0
    } else {
        libc::dup2(src, dst) == dst
    }
}

/// The child's stack. The parent waits (CLONE_VFORK) until the child has
/// exec'd or exited, so it lives on the parent's heap for that long only.
const CHILD_STACK: usize = 256 * 1024;

/// Start the child with clone(CLONE_VM | CLONE_VFORK), as posix_spawn
/// does: the child borrows wshd's memory instead of a copy of its page
/// tables, and wshd's next writes take no copy-on-write faults (a fork
/// of wshd cost ~0.1–0.2 ms per process, twice the rest of a spawn).
/// Returns once the child has exec'd or exited.
///
/// The child shares wshd's memory until then, so (besides what `child`
/// already keeps to: async-signal-safe calls on memory prepared before)
/// it writes nothing of wshd's but its own stack and errno, changes its
/// credentials with raw system calls (glibc's wrappers would try to
/// reach wshd's other threads), and runs with every signal blocked until
/// its dispositions are the defaults: wshd's handlers must not run in it.
fn vfork_child(p: &Prepared, setup: &ChildSetup<'_>) -> Result<i32, WshdError> {
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` points at the pair below, alive until the parent
        // resumes, which is after this child has exec'd or exited.
        let (p, setup) = unsafe { &*(arg as *const (&Prepared, &ChildSetup<'_>)) };
        // SAFETY: see vfork_child; never returns.
        unsafe { child(p, setup) }
    }
    let mut stack = vec![0u8; CHILD_STACK];
    // The stack grows down from its (16-byte aligned) top.
    let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
    let arg: (&Prepared, &ChildSetup<'_>) = (p, setup);
    // SAFETY: plain signal mask changes on this thread.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: the child runs `entry` on its own stack and ends in execve or
    // _exit; CLONE_VFORK keeps this thread (and so `arg`, `stack` and what
    // they point at) still until then.
    let pid = unsafe {
        libc::clone(
            entry,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &arg as *const _ as *mut libc::c_void,
        )
    };
    let clone_error = last_error();
    // SAFETY: restores this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(stack);
    if pid < 0 {
        return Err(system(format!("clone: {clone_error}")));
    }
    Ok(pid)
}

/// What the child uses, prepared before fork.
struct ChildSetup<'a> {
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    groups: &'a [libc::gid_t],
    rlimits: &'a [(Resource, u64)],
    /// Sources of fds 0, 1 and 2.
    stdio: [RawFd; 3],
    /// The terminal to make the controlling one.
    ctty: Option<RawFd>,
    report: RawFd,
    /// The seccomp program (`seccomp::program`), installed right before exec.
    filter: &'a [libc::sock_filter],
    /// The child's oom_score_adj, above wshd's (oom.rs).
    oom: Option<crate::oom::RawChildScore>,
}

unsafe fn child(p: &Prepared, c: &ChildSetup<'_>) -> ! {
    let fail = |stage: i32, detail: i32| -> ! {
        let errno = *libc::__errno_location();
        let mut msg = [0u8; REPORT_LEN];
        msg[..4].copy_from_slice(&stage.to_ne_bytes());
        msg[4..8].copy_from_slice(&errno.to_ne_bytes());
        msg[8..].copy_from_slice(&detail.to_ne_bytes());
        libc::write(c.report, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    };
    let fail_with = |stage: i32, e: std::io::Error| -> ! {
        *libc::__errno_location() = e.raw_os_error().unwrap_or(0);
        fail(stage, 0)
    };
    // wshd ignores a few signals and handles SIGCHLD; every other
    // disposition is the default. Ignored ones would survive exec, and
    // wshd's handler must not run in this child: back to the defaults
    // (this child's own copy of the table), then unblock (see
    // vfork_child).
    for sig in crate::IGNORED_SIGNALS {
        libc::signal(sig, libc::SIG_DFL);
    }
    libc::signal(libc::SIGCHLD, libc::SIG_DFL);
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    if libc::setsid() < 0 {
        fail(STAGE_SETUP, 0);
    }
    if let Some(tty) = c.ctty {
        if libc::ioctl(tty, libc::TIOCSCTTY, 0) != 0 {
            fail(STAGE_CTTY, 0);
        }
    }
    for (dst, src) in c.stdio.iter().enumerate() {
        if !move_fd(*src, dst as RawFd) {
            fail(STAGE_SETUP, 0);
        }
    }
    // Above wshd in the OOM killer's order, while still the container's
    // root (who owns its /proc files).
    if let Some(score) = &c.oom {
        if !score.raise_self() {
            fail(STAGE_OOM, 0);
        }
    }
    // Close every other fd inherited from wshd now rather than at exec:
    // among them are the write ends of other processes' output pipes,
    // which, held until this child execs, would keep their readers from
    // seeing end of file after those processes exit. Only the report
    // pipe stays (close-on-exec).
    let report = c.report as libc::c_uint;
    if report > 3 {
        libc::close_range(3, report - 1, 0);
    }
    libc::close_range(report + 1, libc::c_uint::MAX, 0);
    // Before the user switch: raising a hard limit needs CAP_SYS_RESOURCE.
    for (i, &(resource, value)) in c.rlimits.iter().enumerate() {
        if nix::sys::resource::setrlimit(resource, value, value).is_err() {
            fail(STAGE_RLIMIT, i as i32);
        }
    }
    // The confinement (see confine.rs for the order): the bounding set
    // while still wshd's root, the user, the sets, no_new_privs, and the
    // seccomp filter last, right before exec.
    if let Err(e) = confine::drop_bounding() {
        fail_with(STAGE_CAPS, e);
    }
    // Raw system calls: glibc's wrappers would signal wshd's other
    // threads, whose memory this child shares (see vfork_child).
    if libc::syscall(libc::SYS_setgroups, c.groups.len(), c.groups.as_ptr()) != 0
        || libc::syscall(libc::SYS_setgid, p.user.gid) != 0
        || libc::syscall(libc::SYS_setuid, p.user.uid) != 0
    {
        fail(STAGE_CREDS, 0);
    }
    if let Err(e) = confine::set_capabilities() {
        fail_with(STAGE_CAPS, e);
    }
    if let Err(e) = confine::no_new_privs() {
        fail_with(STAGE_NNP, e);
    }
    if libc::chdir(p.dir.as_ptr()) != 0 {
        fail(STAGE_CHDIR, 0);
    }
    if let Err(e) = crate::seccomp::install(c.filter) {
        fail_with(STAGE_SECCOMP, e);
    }
    libc::execve(p.path.as_ptr(), c.argv.as_ptr(), c.envp.as_ptr());
    fail(STAGE_EXEC, 0)
}

/// Opens /dev/null for stdin, or, if the rootfs has none, duplicates fd 0
/// (which grove-helper opened on /dev/null).
pub fn open_devnull() -> std::io::Result<OwnedFd> {
    match nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    ) {
        // SAFETY: open returned a fresh fd that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(_) => {
            // SAFETY: fd 0 is open for the life of the process.
            let zero = unsafe { BorrowedFd::borrow_raw(0) };
            zero.try_clone_to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn user(uid: u32, name: Option<&str>) -> ResolvedUser {
        ResolvedUser {
            name: name.map(String::from),
            uid,
            gid: uid,
            groups: vec![uid],
            home: if uid == 0 {
                "/root".into()
            } else {
                "/home/u".into()
            },
        }
    }

    #[test]
    fn env_defaults_for_root_and_others() {
        let env = build_env(&[], &user(0, Some("root"))).unwrap();
        assert_eq!(
            env,
            ["HOME=/root", "USER=root", &format!("PATH={ROOT_PATH}")]
        );
        let env = build_env(&["A=b=c".into()], &user(1000, Some("alice"))).unwrap();
        assert_eq!(
            env,
            [
                "A=b=c",
                "HOME=/home/u",
                "USER=alice",
                &format!("PATH={USER_PATH}")
            ]
        );
        let env = build_env(&[], &user(4242, None)).unwrap();
        assert_eq!(env, ["HOME=/home/u", &format!("PATH={USER_PATH}")]);
    }

    #[test]
    fn env_keeps_given_values() {
        let given: Vec<String> = vec![
            "PATH=/x".into(),
            "HOME=/h".into(),
            "USER=me".into(),
            "EMPTY=".into(),
        ];
        let env = build_env(&given, &user(0, Some("root"))).unwrap();
        assert_eq!(env, given);
        assert_eq!(env_path(&env), "/x");
    }

    #[test]
    fn env_rejects_bad_entries() {
        for bad in ["NOEQUALS", "=value", "A=b\0c"] {
            let e = build_env(&[bad.into()], &user(0, None)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::InvalidSpec, "{bad:?}");
        }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("wshd-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn path_search() {
        let d = tempdir("path");
        let (a, b) = (d.join("a"), d.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let write = |p: &Path, mode: u32| {
            std::fs::write(p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(&a.join("tool"), 0o644); // not executable: skipped
        write(&b.join("tool"), 0o755);
        write(&a.join("first"), 0o755);
        write(&b.join("first"), 0o755);
        std::fs::create_dir(b.join("adir")).unwrap(); // a directory: skipped
        let path_var = format!("{}:{}", a.display(), b.display());
        let cwd = Path::new("/");
        assert_eq!(
            find_executable("tool", &path_var, cwd).unwrap(),
            b.join("tool")
        );
        assert_eq!(
            find_executable("first", &path_var, cwd).unwrap(),
            a.join("first")
        );
        let e = find_executable("adir", &path_var, cwd).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ExecutableNotFound);
        let e = find_executable("missing", &path_var, cwd).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ExecutableNotFound);
        assert!(e.message.contains("missing"), "{}", e.message);
        // Relative PATH entries are taken from the working directory.
        assert_eq!(
            find_executable("tool", "b", &d).unwrap(),
            d.join("b").join("tool")
        );
        // A path with a slash is used as is.
        assert_eq!(
            find_executable("./x/y", &path_var, cwd).unwrap(),
            PathBuf::from("./x/y")
        );
        assert_eq!(
            find_executable("", &path_var, cwd).unwrap_err().kind,
            ErrorKind::InvalidSpec
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ensure_dir_creates_and_chowns_only_new_dirs() {
        let d = tempdir("dir");
        let before = std::fs::metadata(&d).unwrap();
        let target = d.join("x/y/z");
        ensure_dir(&target, 4242, 4343).unwrap();
        for p in [d.join("x"), d.join("x/y"), target.clone()] {
            let m = std::fs::metadata(&p).unwrap();
            assert!(m.is_dir());
            assert_eq!((m.uid(), m.gid()), (4242, 4343), "{}", p.display());
        }
        let after = std::fs::metadata(&d).unwrap();
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        ensure_dir(&target, 4242, 4343).unwrap(); // idempotent
        std::fs::write(d.join("file"), "").unwrap();
        assert_eq!(
            ensure_dir(&d.join("file/sub"), 0, 0).unwrap_err().kind,
            ErrorKind::InvalidSpec
        );
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ids() {
        assert!(check_id("p1").is_ok());
        assert!(check_id("").is_err());
        assert!(check_id(&"x".repeat(MAX_PROCESS_ID)).is_ok());
        assert!(check_id(&"x".repeat(MAX_PROCESS_ID + 1)).is_err());
    }
}
