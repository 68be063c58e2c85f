//! Starting wshd as PID 1 of a new container: a sealed copy of the wshd
//! binary, clone(2) into new namespaces, the child's setup (mounts,
//! pivot_root, fds) and execveat of the sealed copy.

use crate::fs;
use grove_schema::Handle;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, SigmaskHow, Signal};
use nix::sys::statfs::{
    FsType, BPF_FS_MAGIC, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, DEBUGFS_MAGIC, PROC_SUPER_MAGIC,
    SECURITYFS_MAGIC, SELINUX_MAGIC, SYSFS_MAGIC, TRACEFS_MAGIC,
};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Copy the wshd binary into a sealed memfd. Containers exec wshd from this
/// memfd, so their /proc/1/exe is the memfd: sealed against writes, it
/// cannot be used to overwrite the host's wshd (the runc CVE-2019-5736 shape).
///
/// wshd runs as root in every container, so whoever can write the file
/// could become root there: like the policy, it must be a regular file
/// owned by root and not writable by group or others. The checks are made
/// with fstat on the very fd that is read (O_NOFOLLOW: not through a
/// symlink in the last component).
pub fn seal_wshd(path: &std::path::Path) -> Result<OwnedFd, String> {
    let fail = |e: Errno| format!("wshd {}: {e}", path.display());
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(fail)?;
    // SAFETY: open just returned this fd; nothing else owns it.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let st = nix::sys::stat::fstat(file.as_raw_fd()).map_err(fail)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || st.st_uid != 0 || st.st_mode & 0o022 != 0 {
        return Err(format!(
            "wshd {} must be a regular file owned by root and not writable by group or others \
             (it is uid {} mode {:o})",
            path.display(),
            st.st_uid,
            st.st_mode & 0o7777
        ));
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("wshd {}: {e}", path.display()))?;
    let name = c"grove-wshd";
    let flags = libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC;
    // SAFETY: name is a NUL-terminated literal; memfd_create only reads it.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | libc::MFD_EXEC) };
    if fd < 0 && Errno::last() == Errno::EINVAL {
        // Kernels before 6.3 know no MFD_EXEC; their memfds are executable.
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    let fd = Errno::result(fd).map_err(|e| format!("memfd_create: {e}"))?;
    // SAFETY: memfd_create just returned this fd; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    fs::write_all(fd.as_raw_fd(), &bytes)
        .map_err(|e| format!("writing wshd into its memfd: {e}"))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // F_SEAL_WRITE answers EBUSY while the kernel still holds a page of the
    // file pinned (reclaim or migration under memory pressure): try again
    // for a while before giving up.
    let mut tries = 0;
    loop {
        // SAFETY: fcntl F_ADD_SEALS on an fd we own takes an int argument.
        match Errno::result(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) }) {
            Ok(_) => break,
            Err(Errno::EBUSY) if tries < 50 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(format!("sealing the wshd memfd: {e}")),
        }
    }
    Ok(fd)
}

/// Everything the child needs, opened by the parent beforehand.
pub struct Spawn<'a> {
    pub handle: &'a Handle,
    /// The policy's depot path, and the container's depot dir as the parent
    /// made it (its `upper`, `work` and `rootfs` entries are the overlay's).
    pub depot_path: &'a str,
    pub container_dir: BorrowedFd<'a>,
    /// The overlay's lower layers.
    pub lower: Lower<'a>,
    pub log: BorrowedFd<'a>,
    pub socket: BorrowedFd<'a>,
    pub wshd: BorrowedFd<'a>,
    pub server_uid: u32,
    /// None: a privileged container (no user namespace). Filled in by the
    /// spawner, which makes the namespaces (see `userns_base`).
    pub userns: Option<UserNs<'a>>,
    /// Some: the container gets a user namespace with this mapping.
    pub userns_base: Option<u32>,
    /// The host uid that owns that user namespace (`userns::owner_uid`).
    pub userns_owner: u32,
    /// Bind mounts into the container (checked against the policy).
    pub binds: &'a [grove_schema::helper::BindMount],
    /// Mount the overlay with `volatile` (see the policy's volatile_layers).
    pub volatile: bool,
}

/// The container's own namespaces made beforehand (see userns.rs).
pub struct UserNs<'a> {
    /// Its user namespace (ids mapped to the policy's range); also maps
    /// the idmapped layers.
    pub user: BorrowedFd<'a>,
    /// A network namespace owned by that user namespace.
    pub net: BorrowedFd<'a>,
}

/// What lies beneath the container's writable layer.
pub enum Lower<'a> {
    /// A policy-approved rootfs directory: its path, and the directory the
    /// parent opened.
    Dir { path: &'a str, fd: BorrowedFd<'a> },
    /// Image layers in depot/.layers/sha256, by id (64 hex digits, checked
    /// by the parent), top to bottom.
    Layers(&'a [String]),
}

pub struct Child {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// How long the child may take from clone to exec.
const SETUP_TIMEOUT_MS: u16 = 10_000;

/// wshd's oom_score_adj: -941, not -1000: -1000 makes a task unkillable,
/// and a container whose memory is held by tmpfs pages (/dev/shm) with
/// only wshd left to kill would then stay at its limit for ever, every
/// allocation failing; at -941 wshd goes last, after every process of the
/// container (wshd puts theirs 999 above its own, before exec), and its
/// death frees the container's tmpfs with its mount namespace.
///
/// It is set through the legacy /proc/<pid>/oom_adj (-16, which the
/// kernel scales to -941), never by writing oom_score_adj itself: a write
/// there by a holder of CAP_SYS_RESOURCE also sets the task's
/// oom_score_adj_min, the floor down to which it may lower its value
/// without privilege, and every process forks that floor. With wshd's
/// value written there (or the helper's, -500 under its systemd unit),
/// any process of a container could put itself at -999, below every
/// process of the host in the host's OOM order.
pub const WSHD_OOM_SCORE_ADJ: i32 = -941;
const WSHD_OOM_ADJ: &str = "-16";

/// Clone wshd's process into new namespaces and wait until it has exec'd.
/// `enter_cgroups` runs in the parent between clone and the child's setup.
pub fn spawn(
    s: &Spawn,
    enter_cgroups: impl FnOnce(i32) -> Result<(), String>,
) -> Result<Child, String> {
    // Prepare every string before clone so the child mostly makes syscalls.
    let argv = [
        CString::new("wshd"),
        CString::new("--socket-fd"),
        CString::new("3"),
        CString::new("--server-uid"),
        // Inside a user namespace the server's uid is not mapped: wshd sees
        // its connections as coming from the overflow uid.
        CString::new(match s.userns {
            Some(_) => overflow_uid().to_string(),
            None => s.server_uid.to_string(),
        }),
    ]
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| e.to_string())?;
    let mut envp = vec![
        c"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
        c"container=grove".to_owned(),
    ];
    // The fault-injection tests arm wshd's crash points through the
    // helper's environment (debug builds only; see grove_schema::fault).
    if let Some(points) = grove_schema::fault::armed_points() {
        let entry = format!("{}={points}", grove_schema::fault::CRASH_AT_ENV);
        envp.push(CString::new(entry).map_err(|e| e.to_string())?);
    }
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;

    // An unprivileged container joins the network namespace made for it.
    let new_net = if s.userns.is_some() {
        0
    } else {
        libc::CLONE_NEWNET
    };
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | new_net
        | libc::SIGCHLD;
    // SAFETY: clone without CLONE_VM and with a null stack behaves like
    // fork(2): the child runs on a copy-on-write copy of this process. The
    // helper is single-threaded, so no lock can be held by a thread that
    // does not exist in the child; the child never returns from this branch
    // (it execs or _exits), so no destructor of the parent's state runs twice.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if ret == 0 {
        drop(go_w);
        drop(err_r);
        // Keep the report pipe above the fds 0-4 the child sets up for wshd.
        // SAFETY: F_DUPFD_CLOEXEC duplicates an fd we hold into a new one >= 10.
        let report_fd = unsafe { libc::fcntl(err_w.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            child(s, &go_r, &argv, &envp)
        }));
        let msg = match outcome {
            Ok(Err(msg)) => msg,
            Ok(Ok(())) => "exec: returned".to_string(),
            Err(_) => "child setup panicked".to_string(),
        };
        let _ = fs::write_all(
            if report_fd >= 0 {
                report_fd
            } else {
                err_w.as_raw_fd()
            },
            msg.as_bytes(),
        );
        // SAFETY: _exit ends the child at once, without running the parent's
        // atexit handlers or destructors.
        unsafe { libc::_exit(1) };
    }
    let pid = Errno::result(ret).map_err(|e| format!("clone: {e}"))? as i32;
    drop(go_r);
    drop(err_w);
    let fail = |msg: String| {
        // The child is ours and unreaped, so its pid cannot be recycled yet.
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
        Err(msg)
    };
    let pidfd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => return fail(format!("pidfd_open: {e}")),
    };
    if let Err(e) = enter_cgroups(pid) {
        return fail(e);
    }
    // wshd is its container's OOM killer's last choice: killing it kills
    // the container (see WSHD_OOM_SCORE_ADJ). Why safe: it changes only our
    // own unreaped child (its pid cannot be recycled). First its floor
    // goes to 0 (a write of oom_score_adj with CAP_SYS_RESOURCE sets it),
    // then its value down through oom_adj (which leaves the floor): no
    // process of the container may go below 0. A host that refuses
    // lowering (no CAP_SYS_RESOURCE) leaves wshd at our own value.
    let write = |file: &str, value: &str| std::fs::write(format!("/proc/{pid}/{file}"), value);
    let own = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap_or_default();
    if let Err(e) = write("oom_score_adj", "0").and_then(|()| write("oom_adj", WSHD_OOM_ADJ)) {
        let _ = write("oom_score_adj", own.trim());
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| log_warn!("grove-helper: wshd's oom_score_adj = {WSHD_OOM_SCORE_ADJ}: {e}; wshd keeps the helper's value (and its processes go 999 above it)"));
    }
    if let Err(e) = fs::write_all(go_w.as_raw_fd(), b"g") {
        return fail(format!("releasing the child: {e}"));
    }
    drop(go_w);
    // The child reports "step: error" and exits, or exec closes the pipe.
    let mut report = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let mut fds = [PollFd::new(err_r.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(SETUP_TIMEOUT_MS)) {
            Ok(0) => return fail("container setup did not finish within 10 s".into()),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return fail(format!("poll: {e}")),
        }
        match nix::unistd::read(err_r.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) if report.len() < 4096 => report.extend_from_slice(&buf[..n]),
            Ok(_) | Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
            Err(e) => return fail(format!("reading the child's report: {e}")),
        }
    }
    if !report.is_empty() {
        return fail(String::from_utf8_lossy(&report).into_owned());
    }
    Ok(Child { pid, pidfd })
}

/// Open files a container starts with, soft and hard: systemd's default
/// for every service (DefaultLimitNOFILE=1024:524288), i.e. what a program
/// gets on the same host outside Grove. 1024 soft, because select() breaks
/// on fds above 1023; 524288 hard, so a program that needs more raises its
/// own soft limit (the Go runtime does so by itself). Not the helper's own
/// (its unit's LimitNOFILE=65536, or whatever the shell that started it
/// had), which wshd and so every container process would inherit.
pub const CONTAINER_NOFILE: (u64, u64) = (1024, 524_288);

/// Give wshd, and through it every process of the container, the
/// container's rlimits instead of the helper's. Only RLIMIT_NOFILE: the
/// helper's unit sets no other (systemd's and the kernel's defaults stand).
/// Why safe: it changes this child's own limits only; raising the hard
/// limit needs CAP_SYS_RESOURCE, held here, before the user namespace.
fn container_rlimits() -> Result<(), String> {
    use nix::sys::resource::{setrlimit, Resource};
    let (soft, hard) = CONTAINER_NOFILE;
    // fs.nr_open below 524288 (the default is 1048576) refuses the hard
    // limit: keep the current hard limit then, with the soft one lowered.
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard)
        .or_else(|_| {
            let (_, cur_hard) = nix::sys::resource::getrlimit(Resource::RLIMIT_NOFILE)?;
            setrlimit(Resource::RLIMIT_NOFILE, soft.min(cur_hard), cur_hard)
        })
        .map_err(|e| format!("setrlimit RLIMIT_NOFILE: {e}"))
}

/// The uid the kernel shows for an id a user namespace does not map.
fn overflow_uid() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/overflowuid")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65534)
}

pub fn pidfd_open(pid: i32) -> Result<OwnedFd, Errno> {
    // SAFETY: pidfd_open takes two integers and returns a new fd or -1.
    let fd = Errno::result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: pidfd_open just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Wait up to `timeout` for the process behind `pidfd` to exit (a pidfd
/// polls readable then). True if it has.
pub fn pidfd_wait_exit(pidfd: BorrowedFd, timeout: std::time::Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Err(Errno::EINTR) => continue,
            _ => return false,
        }
    }
}

pub fn pidfd_kill(pidfd: BorrowedFd) -> Result<(), Errno> {
    pidfd_signal(pidfd, libc::SIGKILL)
}

pub fn pidfd_signal(pidfd: BorrowedFd, signal: libc::c_int) -> Result<(), Errno> {
    // SAFETY: pidfd_send_signal with a null siginfo is kill(2) by pidfd; a
    // pidfd names exactly one process, never a recycled pid.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<u8>(),
            0,
        )
    };
    Errno::result(r).map(drop)
}

/// Both fds name the same inode.
fn same_inode(a: BorrowedFd, b: BorrowedFd) -> Result<(), Errno> {
    let (x, y) = (
        nix::sys::stat::fstat(a.as_raw_fd())?,
        nix::sys::stat::fstat(b.as_raw_fd())?,
    );
    if (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino) {
        Ok(())
    } else {
        Err(Errno::EXDEV)
    }
}

fn fd_path(fd: RawFd) -> String {
    format!("/proc/self/fd/{fd}")
}

fn step<T>(what: &str, r: Result<T, Errno>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Filesystems (statfs f_type, linux/magic.h) that are kernel interfaces,
/// never bind sources: a bind of /proc or /sys (host's or the container's
/// own) would be an unmasked, writable view past the container's masks.
const KERNEL_FS: [(FsType, &str); 14] = [
    (PROC_SUPER_MAGIC, "procfs"),
    (SYSFS_MAGIC, "sysfs"),
    (DEBUGFS_MAGIC, "debugfs"),
    (TRACEFS_MAGIC, "tracefs"),
    (SECURITYFS_MAGIC, "securityfs"),
    (CGROUP_SUPER_MAGIC, "cgroupfs"),
    (CGROUP2_SUPER_MAGIC, "cgroup2"),
    (BPF_FS_MAGIC, "bpffs"),
    (SELINUX_MAGIC, "selinuxfs"),
    // Not named by nix: linux/magic.h.
    (FsType(0x6265_6570), "configfs"),
    (FsType(0xde5e_81e4), "efivarfs"),
    (FsType(0x6165_676c), "pstore"),
    (FsType(0x4249_4e4d), "binfmt_misc"),
    (FsType(0x6573_5543), "fusectl"),
];

/// Bind-mount `b` into the container whose root is `root` (before
/// pivot_root). The source is opened without following any symlink: a host
/// path absolutely (the policy approved its components), a container path
/// with openat2 RESOLVE_BENEATH the container's root. The destination's
/// directories are made one component at a time beneath the root, never
/// through a symlink. Sources on a kernel filesystem (KERNEL_FS) are
/// refused. After mounting, the mount is made nosuid and nodev
/// (and read-only when asked), and checked: the destination must now be
/// the source's inode with those flags in force.
fn bind_into(root: BorrowedFd, b: &grove_schema::helper::BindMount) -> Result<(), String> {
    use grove_schema::helper::BindOrigin;
    let what = format!("bind {} → {}", b.src.as_str(), b.dst.as_str());
    let src = match b.origin {
        BindOrigin::Host => fs::open_path_no_symlinks(b.src.as_str()),
        BindOrigin::Container => {
            let rel: Vec<&str> = b.src.components().collect();
            let rel = if rel.is_empty() {
                ".".to_string()
            } else {
                rel.join("/")
            };
            fs::open_path_beneath(root, &rel)
        }
    }
    .map_err(|e| format!("{what}: source: {e}"))?;
    let fs_type = step(&what, nix::sys::statfs::fstatfs(&src))?.filesystem_type();
    if let Some((_, name)) = KERNEL_FS.iter().find(|(m, _)| *m == fs_type) {
        return Err(format!(
            "{what}: the source is on {name}, which may not be bound: its files are the \
             kernel's own interfaces, and a bind would show them without the container's \
             masks and read-only /proc and /sys"
        ));
    }
    let st = step(&what, nix::sys::stat::fstat(src.as_raw_fd()))?;
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let comps: Vec<&str> = b.dst.components().collect();
    let Some((last, parents)) = comps.split_last() else {
        return Err(format!("{what}: the destination may not be /"));
    };
    let mut dir = step(&what, fs::open_path_dir(root, "."))?;
    for c in parents {
        step(&what, fs::mkdir_at(dir.as_fd(), c, 0o755, true))?;
        dir = step(&what, fs::open_path_dir(dir.as_fd(), c))?;
    }
    let open_target = |dir: BorrowedFd| {
        if is_dir {
            fs::open_path_dir(dir, last)
        } else {
            fs::openat(Some(dir), last, OFlag::O_PATH | OFlag::O_NOFOLLOW, 0)
        }
    };
    if is_dir {
        step(&what, fs::mkdir_at(dir.as_fd(), last, 0o755, true))?;
    } else {
        match fs::openat(
            Some(dir.as_fd()),
            last,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK,
            0o644,
        ) {
            Ok(_) => {}
            Err(e) => return Err(format!("{what}: destination: {e}")),
        }
    }
    let target = open_target(dir.as_fd()).map_err(|e| format!("{what}: destination: {e}"))?;
    step(
        &what,
        mount(
            Some(fd_path(src.as_raw_fd()).as_str()),
            fd_path(target.as_raw_fd()).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ),
    )?;
    // Opened again, the name leads into the new mount.
    let mounted = open_target(dir.as_fd()).map_err(|e| format!("{what}: {e}"))?;
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if b.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    step(
        &format!("{what}: remount"),
        mount(
            None::<&str>,
            fd_path(mounted.as_raw_fd()).as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        ),
    )?;
    let mounted = open_target(dir.as_fd()).map_err(|e| format!("{what}: {e}"))?;
    step(
        &format!("{what}: check"),
        same_inode(mounted.as_fd(), src.as_fd()),
    )?;
    let vfs = step(
        &format!("{what}: check"),
        nix::sys::statvfs::fstatvfs(&mounted),
    )?;
    use nix::sys::statvfs::FsFlags;
    let mut want = FsFlags::ST_NOSUID | FsFlags::ST_NODEV;
    if b.read_only {
        want |= FsFlags::ST_RDONLY;
    }
    if !vfs.flags().contains(want) {
        return Err(format!(
            "{what}: the mount has flags {:?}, not {want:?}",
            vfs.flags()
        ));
    }
    Ok(())
}

/// The last step before exec for an unprivileged container: join its user
/// namespace and become its uid and gid 0 (host ids userns_base).
fn enter_user_namespace(user: BorrowedFd) -> Result<(), String> {
    step(
        "join the user namespace",
        nix::sched::setns(user, CloneFlags::CLONE_NEWUSER),
    )?;
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    step(
        "setresgid 0",
        nix::unistd::setresgid(root_gid, root_gid, root_gid),
    )?;
    step("setgroups", nix::unistd::setgroups(&[]))?;
    step(
        "setresuid 0",
        nix::unistd::setresuid(root_uid, root_uid, root_uid),
    )?;
    Ok(())
}

/// /proc and /sys entries that expose the host's kernel (memory, keys,
/// timers, devices) or let root change it: hidden (an empty read-only
/// tmpfs over a directory, /dev/null over a file), as Docker and runc do.
const MASKED: [&str; 11] = [
    "proc/acpi",
    "proc/asound",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// /proc entries left visible but read-only: kernel tunables (sys), the
/// magic SysRq trigger, interrupt affinities, bus and filesystem knobs.
const READ_ONLY: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Mask and write-protect the kernel files above, beneath the container's
/// fresh /proc and /sys (kernel filesystems just mounted by this child, so
/// no name in them can be a symlink the container made). Every mount goes
/// through an O_PATH fd opened without following symlinks.
fn mask_kernel_files(root: BorrowedFd) -> Result<(), String> {
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    for path in MASKED {
        let st = match nix::sys::stat::fstatat(
            Some(root.as_raw_fd()),
            path,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue, // not on this kernel
            Err(e) => return Err(format!("stat {path}: {e}")),
        };
        let fd = step(
            &format!("open {path}"),
            fs::openat(Some(root), path, OFlag::O_PATH | OFlag::O_NOFOLLOW, 0),
        )?;
        let target = fd_path(fd.as_raw_fd());
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            step(
                &format!("mask {path}"),
                mount(
                    Some("tmpfs"),
                    target.as_str(),
                    Some("tmpfs"),
                    ro,
                    Some("size=0"),
                ),
            )?;
        } else {
            step(
                &format!("mask {path}"),
                mount(
                    Some("/dev/null"),
                    target.as_str(),
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                ),
            )?;
        }
    }
    for path in READ_ONLY {
        let fd = match fs::openat(Some(root), path, OFlag::O_PATH | OFlag::O_NOFOLLOW, 0) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(format!("open {path}: {e}")),
        };
        let target = fd_path(fd.as_raw_fd());
        step(
            &format!("bind {path}"),
            mount(
                Some(target.as_str()),
                target.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            ),
        )?;
        // Opened again, the name now leads into the bind mount just made.
        let bound = step(
            &format!("open {path}"),
            fs::openat(Some(root), path, OFlag::O_PATH | OFlag::O_NOFOLLOW, 0),
        )?;
        step(
            &format!("make {path} read-only"),
            mount(
                None::<&str>,
                fd_path(bound.as_raw_fd()).as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | ro,
                None::<&str>,
            ),
        )?;
    }
    Ok(())
}

/// The child: PID 1 of the new PID namespace, alone in its new mount, UTS,
/// IPC and network namespaces. Returns only on failure.
fn child(s: &Spawn, go: &OwnedFd, argv: &[CString], envp: &[CString]) -> Result<(), String> {
    // The helper blocks signals for its signalfd and ignores SIGPIPE; wshd
    // starts with a clean slate.
    step(
        "sigprocmask",
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None),
    )?;
    // SAFETY: restoring the default disposition installs no handler.
    step("SIGPIPE", unsafe {
        nix::sys::signal::signal(Signal::SIGPIPE, nix::sys::signal::SigHandler::SigDfl)
    })?;

    container_rlimits()?;

    let mut b = [0u8; 1];
    if step(
        "waiting for the parent",
        nix::unistd::read(go.as_raw_fd(), &mut b),
    )? != 1
    {
        return Err("waiting for the parent: it gave up".into());
    }
    if let Some(userns) = &s.userns {
        // Before sysfs is mounted, which shows the mounter's network.
        step(
            "join the network namespace",
            nix::sched::setns(userns.net, CloneFlags::CLONE_NEWNET),
        )?;
    }
    // Now in the container's cgroups: a new cgroup namespace rooted there.
    step(
        "unshare cgroup namespace",
        unshare(CloneFlags::CLONE_NEWCGROUP),
    )?;
    // Nothing below may propagate back to the host's mount table.
    step(
        "make / private",
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )?;
    // overlayfs accepts only layers reached through this mount namespace,
    // and the parent's fds reach the host's: look the directories up again
    // (the same paths name the same mounts in the copy), and check by inode
    // that they are the very directories the parent created and approved.
    let depot = step(
        "open the depot",
        fs::openat(None, s.depot_path, OFlag::O_PATH | OFlag::O_DIRECTORY, 0),
    )?;
    let dir = step(
        "open the depot dir",
        fs::open_path_dir(depot.as_fd(), s.handle.as_str()),
    )?;
    step(
        "check the depot dir",
        same_inode(dir.as_fd(), s.container_dir),
    )?;
    let lower: Vec<OwnedFd> = match &s.lower {
        Lower::Dir { path, fd } => {
            let lower = step("open the rootfs", fs::open_dir_no_symlinks(path))?;
            step("check the rootfs", same_inode(lower.as_fd(), *fd))?;
            vec![lower]
        }
        Lower::Layers(ids) => {
            let layers = step(
                "open the layer store",
                fs::open_path_dir(depot.as_fd(), crate::image::LAYERS_DIR),
            )?;
            let store = step(
                "open the layer store",
                fs::open_path_dir(layers.as_fd(), crate::image::ALGO_DIR),
            )?;
            ids.iter()
                .map(|id| {
                    step(
                        &format!("open layer {id}"),
                        fs::open_path_dir(store.as_fd(), id),
                    )
                })
                .collect::<Result<_, _>>()?
        }
    };
    // In a user namespace the layers are seen through idmapped copies
    // mounted on depot/<handle>/lower/<n> (in this mount namespace only),
    // so their owners appear shifted into the container's range.
    let lower = match &s.userns {
        None => lower,
        Some(userns) => {
            step(
                "mkdir lower",
                fs::mkdir_at(dir.as_fd(), "lower", 0o700, true),
            )?;
            let at = step("open lower", fs::open_path_dir(dir.as_fd(), "lower"))?;
            let mut mapped = Vec::new();
            for (i, fd) in lower.iter().enumerate() {
                let name = i.to_string();
                step(
                    &format!("mkdir lower/{i}"),
                    fs::mkdir_at(at.as_fd(), &name, 0o700, true),
                )?;
                let target = step(
                    &format!("open lower/{i}"),
                    fs::open_path_dir(at.as_fd(), &name),
                )?;
                step(
                    &format!("idmapped layer {i}"),
                    crate::userns::idmapped_bind(fd.as_fd(), target.as_fd(), userns.user),
                )?;
                // Opened again, the name leads into the idmapped mount.
                mapped.push(step(
                    &format!("open lower/{i}"),
                    fs::open_path_dir(at.as_fd(), &name),
                )?);
            }
            mapped
        }
    };
    let lowerdir = lower
        .iter()
        .map(|fd| fd_path(fd.as_raw_fd()))
        .collect::<Vec<_>>()
        .join(":");
    let layer = step(
        "open the writable layer",
        fs::open_path_dir(dir.as_fd(), crate::disk::LAYER),
    )?;
    let upper = step("open upper", fs::open_path_dir(layer.as_fd(), "upper"))?;
    let work = step("open work", fs::open_path_dir(layer.as_fd(), "work"))?;
    let mount_point = step("open rootfs", fs::open_path_dir(dir.as_fd(), "rootfs"))?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}{}",
        lowerdir,
        fd_path(upper.as_raw_fd()),
        fd_path(work.as_raw_fd()),
        if s.volatile { ",volatile" } else { "" }
    );
    // nodev: a device node in an image or written by container root is
    // never usable from the rootfs (the container's /dev is Grove's own
    // tmpfs and binds), whatever the device cgroup says.
    step(
        "mount overlay",
        mount(
            Some("overlay"),
            fd_path(mount_point.as_raw_fd()).as_str(),
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(data.as_str()),
        ),
    )?;
    // Looking up "rootfs" again crosses into the overlay just mounted on it.
    let root = step("open the overlay", fs::open_dir(dir.as_fd(), "rootfs"))?;
    let vfs = step("check the overlay", nix::sys::statvfs::fstatvfs(&root))?;
    if !vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_NODEV) {
        return Err("check the overlay: it is not mounted nodev".into());
    }
    drop((depot, dir, layer, lower, upper, work, mount_point));
    step(
        "chdir into the overlay",
        nix::unistd::fchdir(root.as_raw_fd()),
    )?;

    // proc, sys and dev: real directories of the rootfs, opened O_NOFOLLOW
    // and mounted on through their fd, so a symlink in an image cannot aim
    // a mount at the host.
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    // /dev and /dev/shm belong to the container's root.
    let owner = match s.userns_base {
        Some(base) => format!(",uid={base},gid={base}"),
        None => String::new(),
    };
    let dev_data = format!("mode=0755,size=65536k{owner}");
    let shm_data = format!("mode=1777{owner}");
    let mounts: [(&str, &str, MsFlags, Option<&str>); 3] = [
        ("proc", "proc", nosuid_nodev_noexec, None),
        (
            "sys",
            "sysfs",
            nosuid_nodev_noexec | MsFlags::MS_RDONLY,
            None,
        ),
        (
            "dev",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some(dev_data.as_str()),
        ),
    ];
    for (dir, fstype, flags, data) in mounts {
        step(
            &format!("mkdir {dir}"),
            fs::mkdir_at(root.as_fd(), dir, 0o755, true),
        )?;
        let fd = step(&format!("open {dir}"), fs::open_path_dir(root.as_fd(), dir))?;
        step(
            &format!("mount {fstype} on {dir}"),
            mount(
                Some(fstype),
                fd_path(fd.as_raw_fd()).as_str(),
                Some(fstype),
                flags,
                data,
            ),
        )?;
    }
    mask_kernel_files(root.as_fd())?;
    let dev = step("open dev", fs::open_dir(root.as_fd(), "dev"))?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let f = step(
            &format!("create dev/{node}"),
            fs::openat(
                Some(dev.as_fd()),
                node,
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                0o666,
            ),
        )?;
        let host = format!("/dev/{node}");
        step(
            &format!("bind {host}"),
            mount(
                Some(host.as_str()),
                fd_path(f.as_raw_fd()).as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
        )?;
    }
    step(
        "mkdir dev/pts",
        fs::mkdir_at(dev.as_fd(), "pts", 0o755, false),
    )?;
    let pts = step("open dev/pts", fs::open_path_dir(dev.as_fd(), "pts"))?;
    step(
        "mount devpts",
        mount(
            Some("devpts"),
            fd_path(pts.as_raw_fd()).as_str(),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        ),
    )?;
    step(
        "mkdir dev/shm",
        fs::mkdir_at(dev.as_fd(), "shm", 0o1777, false),
    )?;
    let shm = step("open dev/shm", fs::open_path_dir(dev.as_fd(), "shm"))?;
    step(
        "mount dev/shm",
        mount(
            Some("shm"),
            fd_path(shm.as_raw_fd()).as_str(),
            Some("tmpfs"),
            nosuid_nodev_noexec,
            Some(shm_data.as_str()),
        ),
    )?;
    for (target, name) in [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ] {
        step(
            &format!("symlink dev/{name}"),
            nix::unistd::symlinkat(target, Some(dev.as_raw_fd()), name),
        )?;
    }
    drop((dev, pts, shm));

    for b in s.binds {
        bind_into(root.as_fd(), b)?;
    }
    step("sethostname", nix::unistd::sethostname(s.handle.as_str()))?;

    // Stack the old root under the new one and detach it: afterwards no
    // path in this mount namespace leads to the host's filesystem.
    step("pivot_root", nix::unistd::pivot_root(".", "."))?;
    step("detach the old root", umount2(".", MntFlags::MNT_DETACH))?;
    step("chdir /", nix::unistd::chdir("/"))?;
    drop(root);

    if let Some(userns) = &s.userns {
        enter_user_namespace(userns.user)?;
    }

    // fds 0-4 as wshd expects them; everything else closes at exec.
    let null = step(
        "open /dev/null",
        fs::openat(None, "/dev/null", OFlag::O_RDWR, 0),
    )?;
    let high = |fd: RawFd| {
        // SAFETY: F_DUPFD_CLOEXEC duplicates an fd we hold into a new one >= 10.
        step(
            "dup",
            Errno::result(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) }),
        )
    };
    // First move every source above 9 so no dup2 below overwrites a source.
    let sources = [
        high(null.as_raw_fd())?,
        high(s.log.as_raw_fd())?,
        high(s.log.as_raw_fd())?,
        high(s.socket.as_raw_fd())?,
        high(s.wshd.as_raw_fd())?,
    ];
    for (target, src) in sources.iter().enumerate() {
        step("dup2", nix::unistd::dup2(*src, target as RawFd))?;
    }
    // Mark, not close, the rest: the error pipe must stay open until exec.
    // SAFETY: close_range only changes fd flags of this process.
    step(
        "close_range",
        Errno::result(unsafe {
            libc::close_range(
                5,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_int,
            )
        }),
    )?;
    step(
        "execveat wshd",
        nix::unistd::execveat(Some(4), c"", argv, envp, nix::fcntl::AtFlags::AT_EMPTY_PATH),
    )?;
    Ok(())
}
