//! groved confines itself once it is up: after its config (and the TLS
//! files of `listen_tcp`) is read, its API socket and TCP listener bound,
//! its records loaded, the helper asked and the processes taken over, and
//! before it serves its first client.
//!
//! - **Capabilities.** groved must hold none: `check_no_capabilities` runs at
//!   start-up and refuses a groved whose effective, permitted or ambient set
//!   is not empty (unless it runs as root with `--allow-root`, for debugging).
//! - **no_new_privs**, required for the rest and kept for life.
//! - **Landlock** (`landlock_rules`): from then on groved may open files only
//!   in its state dir (records and registry downloads), read the handful of
//!   host files name resolution and `capacity` read, and unlink its own API
//!   socket at shutdown. It may not bind any TCP port (the `listen_tcp`
//!   listener is bound before and only accepts after), signal a process
//!   outside its own domain or connect to an abstract unix socket made
//!   outside it. Best effort: an older kernel enforces what it knows.
//! - **seccomp** (`ALLOWED`): an allowlist of the syscalls groved makes once
//!   serving; anything else kills the process (SIGSYS). Two refinements
//!   answer with an error instead (`REFUSED`): `clone3` (so libc falls back
//!   to `clone`, whose flags the allowlist can check: threads only) and
//!   executable mappings.
//!
//! `confine = off` in groved's config skips Landlock and seccomp (debugging).

use crate::config::Config;
use landlock::{
    make_bitflags, Access, AccessFs, AccessNet, BitFlags, LandlockStatus, PathBeneath, PathFd,
    Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The Landlock ABI the rules below were written for and tested on (Linux
/// 6.15+; tested on 6.18). Rights of later ABIs are not handled, so they
/// stay unrestricted until someone adds them here and tests them — e.g.
/// ABI 9's `ResolveUnix` (connecting to pathname unix sockets), for which
/// `landlock_rules` already names the helper's and wshd's socket dirs.
const LANDLOCK_ABI: ABI = ABI::V7;

/// What groved needs to know to confine itself.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub state_dir: PathBuf,
    pub listen: PathBuf,
    pub helper_socket: PathBuf,
    pub wshd_socket_dir: PathBuf,
    /// `metrics_listen`'s unix socket, removed when groved stops.
    pub metrics_socket: Option<PathBuf>,
}

/// One Landlock rule: `access` beneath `path`.
#[derive(Debug)]
pub struct FsRule {
    pub path: PathBuf,
    pub access: BitFlags<AccessFs>,
    /// A missing required path is an error; a missing optional one (an
    /// /etc file this host does not have) is skipped.
    pub required: bool,
}

/// What `Sandbox::apply` put in force, for the log.
#[derive(Debug)]
pub struct Report {
    /// Every handled Landlock right is enforced (the kernel knows ABI 7+).
    pub landlock_full: bool,
    pub landlock: String,
    /// How many syscalls the seccomp allowlist names (0: no filter).
    pub seccomp_syscalls: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "landlock {}; seccomp allowlist of {} syscalls, anything else kills groved",
            self.landlock, self.seccomp_syscalls
        )
    }
}

/// Files and directories: what groved may do in its state dir.
const STATE_DIR_ACCESS: BitFlags<AccessFs> = make_bitflags!(AccessFs::{
    ReadFile | ReadDir | WriteFile | Truncate | MakeReg | MakeDir | RemoveFile | RemoveDir | Refer
});

/// Host files read while serving: /etc/resolv.conf (each container's DNS
/// default, read at create) and what glibc's getaddrinfo reads to resolve
/// a registry's name.
const NAME_SERVICE_FILES: &[&str] = &[
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
];

impl Sandbox {
    pub fn for_config(config: &Config) -> Sandbox {
        Sandbox {
            state_dir: config.state_dir.clone(),
            listen: config.listen.clone(),
            helper_socket: config.helper_socket.clone(),
            wshd_socket_dir: config.wshd_socket_dir.clone(),
            metrics_socket: match &config.metrics_listen {
                Some(crate::config::MetricsListen::Unix(path)) => Some(path.clone()),
                _ => None,
            },
        }
    }

    /// Every path groved may still use once confined, with what it may do.
    pub fn landlock_rules(&self) -> Vec<FsRule> {
        let rule = |path: &Path, access: BitFlags<AccessFs>, required: bool| FsRule {
            path: path.to_path_buf(),
            access,
            required,
        };
        let parent = |path: &Path| path.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut rules = vec![
            // Container records, registry downloads (written, renamed,
            // removed), the stats of its filesystem.
            rule(&self.state_dir, STATE_DIR_ACCESS, true),
            // groved unlinks its API socket when it stops.
            rule(&parent(&self.listen), AccessFs::RemoveFile.into(), true),
            // Connecting to the helper's and each wshd's socket (ABI 9+;
            // at LANDLOCK_ABI unix connects are not restricted, so these
            // two rules are dropped before they reach the kernel). The
            // directories, not the sockets: the helper and the containers
            // come and go, and a rule holds an inode.
            rule(
                &parent(&self.helper_socket),
                AccessFs::ResolveUnix.into(),
                false,
            ),
            rule(&self.wshd_socket_dir, AccessFs::ResolveUnix.into(), false),
            // `capacity` reports the host's memory.
            rule(Path::new("/proc/meminfo"), AccessFs::ReadFile.into(), true),
            rule(
                Path::new("/dev/null"),
                AccessFs::ReadFile | AccessFs::WriteFile,
                false,
            ),
            rule(Path::new("/dev/urandom"), AccessFs::ReadFile.into(), false),
        ];
        // And `metrics_listen`'s socket.
        if let Some(socket) = &self.metrics_socket {
            rules.push(rule(&parent(socket), AccessFs::RemoveFile.into(), true));
        }
        for file in NAME_SERVICE_FILES {
            let path = Path::new(file);
            rules.push(rule(path, AccessFs::ReadFile.into(), false));
            // A resolv.conf that is a symlink (systemd-resolved, resolvconf)
            // is rewritten by rename beside its target: a rule on the file
            // would keep the old inode, so the target's directory is
            // readable too — unless that is / or /etc itself.
            let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if let (true, Ok(target)) = (is_link, std::fs::canonicalize(path)) {
                let dir = parent(&target);
                if dir != Path::new("/") && dir != Path::new("/etc") {
                    rules.push(rule(&dir, AccessFs::ReadFile.into(), false));
                }
            }
        }
        rules
    }

    /// Confine the calling process for good. It must be single-threaded
    /// (Landlock before ABI 8 restricts the calling thread only).
    pub fn apply(&self) -> Result<Report, String> {
        let threads = std::fs::read_dir("/proc/self/task")
            .map_err(|e| format!("/proc/self/task: {e}"))?
            .count();
        if threads != 1 {
            return Err(format!(
                "groved has {threads} threads; it must confine itself while it has one"
            ));
        }
        set_no_new_privs()?;
        let (landlock_full, landlock) = self.apply_landlock()?;
        let seccomp_syscalls = apply_seccomp()?;
        Ok(Report {
            landlock_full,
            landlock,
            seccomp_syscalls,
        })
    }

    fn apply_landlock(&self) -> Result<(bool, String), String> {
        let err = |e: landlock::RulesetError| format!("landlock: {e}");
        let handled = AccessFs::from_all(LANDLOCK_ABI);
        // TCP: bind is handled and granted nowhere (groved's listeners, the
        // unix socket and `listen_tcp`'s, are bound before this); connect
        // is not handled, as registries may be on any port of any host.
        let mut ruleset = Ruleset::default()
            .handle_access(handled)
            .map_err(err)?
            .handle_access(AccessNet::BindTcp)
            .map_err(err)?
            // groved signals nothing (wshd signals processes) and uses
            // no abstract unix socket.
            .scope(Scope::from_all(LANDLOCK_ABI))
            .map_err(err)?
            .create()
            .map_err(err)?;
        for rule in self.landlock_rules() {
            let access = rule.access & handled;
            if access.is_empty() {
                continue;
            }
            match PathFd::new(&rule.path) {
                Ok(fd) => {
                    ruleset = ruleset
                        .add_rule(PathBeneath::new(fd, access))
                        .map_err(err)?
                }
                Err(e) if rule.required => {
                    return Err(format!("landlock: {}: {e}", rule.path.display()))
                }
                Err(_) => {}
            }
        }
        let status = ruleset.restrict_self().map_err(err)?;
        let abi = match status.landlock {
            LandlockStatus::Available { effective_abi, .. } => {
                format!("ABI {}", effective_abi as i32)
            }
            LandlockStatus::NotEnabled => "not enabled in this kernel".into(),
            LandlockStatus::NotImplemented => "not built into this kernel".into(),
        };
        Ok(match status.ruleset {
            RulesetStatus::FullyEnforced => (true, format!("fully enforced ({abi})")),
            RulesetStatus::PartiallyEnforced => (false, format!("partially enforced ({abi})")),
            RulesetStatus::NotEnforced => (false, format!("not enforced ({abi})")),
        })
    }
}

fn set_no_new_privs() -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if rc != 0 {
        return Err(format!(
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Refuse a groved that holds capabilities: `status` is the text of
/// /proc/self/status.
pub fn check_no_capabilities(status: &str) -> Result<(), String> {
    let mut seen = 0;
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if !matches!(key, "CapEff" | "CapPrm" | "CapAmb") {
            continue;
        }
        seen += 1;
        let bits = u64::from_str_radix(value.trim(), 16)
            .map_err(|_| format!("/proc/self/status: unreadable {key}: {value:?}"))?;
        if bits != 0 {
            return Err(format!(
                "groved holds capabilities ({key} {bits:#x}); run it as the unprivileged \
                 `grove` user without capabilities (privileged steps belong to grove-helper)"
            ));
        }
    }
    if seen != 3 {
        return Err("/proc/self/status lacks CapEff, CapPrm or CapAmb".into());
    }
    Ok(())
}

/// How a syscall's arguments are checked (32-bit comparisons: every
/// argument checked below is an int or flags in the low word).
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    Any,
    /// Argument `index` is one of these values.
    Is(u8, &'static [u64]),
    /// `argument[index] & mask == value`.
    Masked(u8, u64, u64),
    /// Argument `index` is groved's own pid (tgkill: signal itself only).
    OwnPid(u8),
    /// socket(): AF_UNIX, AF_INET or AF_INET6, or AF_NETLINK with
    /// NETLINK_ROUTE (glibc's getaddrinfo asks the kernel for the host's
    /// addresses to sort several answers).
    SocketFamilies,
}

#[derive(Debug, Clone, Copy)]
pub struct Syscall {
    pub nr: i64,
    pub name: &'static str,
    pub arg: Arg,
}

/// A group of allowed syscalls and why groved needs them.
pub struct Group {
    pub why: &'static str,
    pub syscalls: &'static [Syscall],
}

/// A syscall answered with an error instead of being run.
pub struct Refusal {
    pub syscall: Syscall,
    pub errno: i32,
    pub why: &'static str,
}

macro_rules! sys {
    ($name:ident) => {
        sys!($name, Arg::Any)
    };
    ($name:ident, $arg:expr) => {
        Syscall {
            nr: syscall_numbers::$name,
            name: stringify!($name),
            arg: $arg,
        }
    };
}

/// The syscall numbers, under their names (libc's `SYS_` constants).
#[cfg(target_arch = "x86_64")]
#[allow(non_upper_case_globals)]
mod syscall_numbers {
    pub use libc::{
        SYS_accept4 as accept4, SYS_bind as bind, SYS_brk as brk,
        SYS_clock_gettime as clock_gettime, SYS_clock_nanosleep as clock_nanosleep,
        SYS_clone as clone, SYS_clone3 as clone3, SYS_close as close, SYS_connect as connect,
        SYS_epoll_ctl as epoll_ctl, SYS_epoll_wait as epoll_wait, SYS_exit as exit,
        SYS_exit_group as exit_group, SYS_fcntl as fcntl, SYS_fsync as fsync, SYS_futex as futex,
        SYS_getdents64 as getdents64, SYS_getpeername as getpeername, SYS_getpid as getpid,
        SYS_getrandom as getrandom, SYS_getsockname as getsockname, SYS_getsockopt as getsockopt,
        SYS_gettid as gettid, SYS_gettimeofday as gettimeofday, SYS_ioctl as ioctl,
        SYS_linkat as linkat, SYS_lseek as lseek, SYS_madvise as madvise, SYS_mkdir as mkdir,
        SYS_mmap as mmap, SYS_mprotect as mprotect, SYS_mremap as mremap, SYS_munmap as munmap,
        SYS_newfstatat as newfstatat, SYS_openat as openat, SYS_poll as poll, SYS_prctl as prctl,
        SYS_read as read, SYS_recvfrom as recvfrom, SYS_recvmsg as recvmsg, SYS_rename as rename,
        SYS_restart_syscall as restart_syscall, SYS_rmdir as rmdir, SYS_rseq as rseq,
        SYS_rt_sigaction as rt_sigaction, SYS_rt_sigprocmask as rt_sigprocmask,
        SYS_rt_sigreturn as rt_sigreturn, SYS_sched_getaffinity as sched_getaffinity,
        SYS_sched_yield as sched_yield, SYS_sendmmsg as sendmmsg, SYS_sendmsg as sendmsg,
        SYS_sendto as sendto, SYS_set_robust_list as set_robust_list, SYS_setsockopt as setsockopt,
        SYS_shutdown as shutdown, SYS_sigaltstack as sigaltstack, SYS_socket as socket,
        SYS_statfs as statfs, SYS_statx as statx, SYS_tgkill as tgkill, SYS_uname as uname,
        SYS_unlink as unlink, SYS_unlinkat as unlinkat, SYS_write as write, SYS_writev as writev,
    };
}

/// clone() flags every thread shares (glibc and musl pass them all), and
/// the namespace flags none may carry: a clone that passes is a thread of
/// groved, never a new process.
const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// The seccomp allowlist: every syscall groved makes once it serves,
/// measured with `strace -f` over the integration suite, plus the few that
/// name resolution for a registry host needs (the suite's registries are
/// numeric 127.0.0.1). What it may do with files and TCP is Landlock's
/// business; this list narrows the kernel surface groved can reach.
#[cfg(target_arch = "x86_64")]
pub const ALLOWED: &[Group] = &[
    Group {
        why: "the event loop (tokio, epoll), its timers and wake-ups",
        syscalls: &[
            sys!(epoll_wait),
            sys!(epoll_ctl),
            sys!(poll),
            sys!(futex),
            sys!(sched_yield),
            sys!(restart_syscall),
            sys!(clock_gettime),
            sys!(gettimeofday),
            sys!(clock_nanosleep),
        ],
    },
    Group {
        why: "memory (the allocator, thread stacks); see REFUSED for executable mappings",
        syscalls: &[
            sys!(brk),
            sys!(mmap),
            sys!(munmap),
            sys!(mremap),
            sys!(mprotect),
            sys!(madvise),
        ],
    },
    Group {
        why:
            "files: records, the image cache and image layouts in the state dir, /etc/resolv.conf, \
              /proc/meminfo (Landlock decides which), pipes and sockets from wshd",
        syscalls: &[
            sys!(openat),
            sys!(close),
            sys!(read),
            // std's File::read_to_end asks for the position (SEEK_CUR).
            sys!(lseek),
            sys!(write),
            sys!(writev),
            sys!(newfstatat),
            sys!(statx),
            sys!(statfs),
            sys!(getdents64),
            sys!(mkdir),
            sys!(rename),
            // Image layouts for the helper: hard links to cached blobs.
            sys!(linkat),
            sys!(unlink),
            sys!(unlinkat),
            sys!(rmdir),
            sys!(fsync),
            sys!(
                fcntl,
                Arg::Is(
                    1,
                    &[
                        libc::F_GETFD as u64,
                        libc::F_SETFD as u64,
                        libc::F_GETFL as u64,
                        libc::F_SETFL as u64,
                        libc::F_DUPFD_CLOEXEC as u64,
                    ]
                )
            ),
            // Non-blocking mode (std, tokio) and bytes waiting in a pipe.
            sys!(ioctl, Arg::Is(1, &[libc::FIONBIO, libc::FIONREAD])),
        ],
    },
    Group {
        why: "sockets: clients (accept on the unix socket and listen_tcp's listener, \
              TCP_NODELAY and keepalives), the helper and wshd (unix, SCM_RIGHTS), \
              registries (TCP) and name resolution (UDP, netlink); no listen",
        syscalls: &[
            sys!(socket, Arg::SocketFamilies),
            sys!(connect),
            sys!(accept4),
            sys!(sendto),
            sys!(recvfrom),
            sys!(sendmsg),
            sys!(recvmsg),
            sys!(sendmmsg),
            sys!(shutdown),
            sys!(getsockname),
            sys!(getpeername),
            sys!(setsockopt),
            sys!(getsockopt),
            // getaddrinfo binds its netlink socket; a TCP bind is refused
            // by Landlock, and no socket can listen.
            sys!(bind),
        ],
    },
    Group {
        why: "threads (spawn_blocking for registry pulls) and signals",
        syscalls: &[
            sys!(
                clone,
                Arg::Masked(0, THREAD_FLAGS | NAMESPACE_FLAGS, THREAD_FLAGS)
            ),
            sys!(clone3),
            sys!(set_robust_list),
            sys!(rseq),
            sys!(sched_getaffinity),
            sys!(prctl, Arg::Is(0, &[libc::PR_SET_NAME as u64])),
            sys!(sigaltstack),
            sys!(rt_sigaction),
            sys!(rt_sigprocmask),
            sys!(rt_sigreturn),
            sys!(gettid),
            sys!(getpid),
            // abort() signals its own thread.
            sys!(tgkill, Arg::OwnPid(0)),
            sys!(exit),
            sys!(exit_group),
        ],
    },
    Group {
        why: "randomness (download names, rustls) and the resolver's host name",
        syscalls: &[sys!(getrandom), sys!(uname)],
    },
];

#[cfg(not(target_arch = "x86_64"))]
pub const ALLOWED: &[Group] = &[];

/// Refinements of the allowlist: these calls (allowed there) fail with
/// `errno` instead.
#[cfg(target_arch = "x86_64")]
pub const REFUSED: &[Refusal] = &[
    Refusal {
        syscall: sys!(clone3),
        errno: libc::ENOSYS,
        why: "its flags live in memory seccomp cannot read: libc then uses clone, \
              whose flags the allowlist checks",
    },
    Refusal {
        syscall: sys!(
            mmap,
            Arg::Masked(2, libc::PROT_EXEC as u64, libc::PROT_EXEC as u64)
        ),
        errno: libc::EPERM,
        why: "no new executable memory (an NSS module glibc would dlopen fails to load; \
              resolution goes on with the next source)",
    },
    Refusal {
        syscall: sys!(
            mprotect,
            Arg::Masked(2, libc::PROT_EXEC as u64, libc::PROT_EXEC as u64)
        ),
        errno: libc::EPERM,
        why: "no new executable memory",
    },
];

#[cfg(not(target_arch = "x86_64"))]
pub const REFUSED: &[Refusal] = &[];

/// How many syscalls the allowlist names.
pub fn allowed_count() -> usize {
    ALLOWED.iter().map(|g| g.syscalls.len()).sum()
}

fn conditions(arg: Arg, pid: u32) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let eq = |index: u8, value: u64| {
        SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
    };
    Ok(match arg {
        Arg::Any => Vec::new(),
        Arg::Is(index, values) => values
            .iter()
            .map(|&v| SeccompRule::new(vec![eq(index, v)?]))
            .collect::<Result<_, _>>()?,
        Arg::Masked(index, mask, value) => vec![SeccompRule::new(vec![SeccompCondition::new(
            index,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(mask),
            value,
        )?])?],
        Arg::OwnPid(index) => vec![SeccompRule::new(vec![eq(index, pid as u64)?])?],
        Arg::SocketFamilies => {
            let mut rules = Vec::new();
            for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
                rules.push(SeccompRule::new(vec![eq(0, family as u64)?])?);
            }
            rules.push(SeccompRule::new(vec![
                eq(0, libc::AF_NETLINK as u64)?,
                eq(2, libc::NETLINK_ROUTE as u64)?,
            ])?);
            rules
        }
    })
}

/// The BPF programs, in the order they must be installed: the refusals
/// first (installing a filter is itself a syscall the allowlist refuses),
/// the allowlist last. `pid` is groved's own (tgkill).
pub fn seccomp_programs(pid: u32) -> Result<Vec<BpfProgram>, String> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| format!("seccomp: {e:?}"))?;
    let err = |e: seccompiler::BackendError| format!("seccomp: {e}");
    let mut programs = Vec::new();
    let mut by_errno: BTreeMap<i32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
    for refusal in REFUSED {
        let rules = conditions(refusal.syscall.arg, pid).map_err(err)?;
        by_errno
            .entry(refusal.errno)
            .or_default()
            .entry(refusal.syscall.nr)
            .or_default()
            .extend(rules);
    }
    for (errno, rules) in by_errno {
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
            arch,
        )
        .map_err(err)?;
        programs.push(filter.try_into().map_err(err)?);
    }
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for syscall in ALLOWED.iter().flat_map(|g| g.syscalls) {
        let previous = rules.insert(syscall.nr, conditions(syscall.arg, pid).map_err(err)?);
        if previous.is_some() {
            return Err(format!("seccomp: {} is listed twice", syscall.name));
        }
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )
    .map_err(err)?;
    programs.push(filter.try_into().map_err(err)?);
    Ok(programs)
}

fn apply_seccomp() -> Result<usize, String> {
    if ALLOWED.is_empty() {
        tracing::warn!("no seccomp allowlist for this architecture: none applied");
        return Ok(0);
    }
    for group in ALLOWED {
        let names: Vec<&str> = group.syscalls.iter().map(|s| s.name).collect();
        tracing::debug!(
            why = group.why,
            syscalls = names.join(" "),
            "seccomp allows"
        );
    }
    for refusal in REFUSED {
        let name = refusal.syscall.name;
        tracing::debug!(
            why = refusal.why,
            errno = refusal.errno,
            "seccomp refuses {name}"
        );
    }
    for program in seccomp_programs(std::process::id())? {
        seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("seccomp: {e}"))?;
    }
    Ok(allowed_count())
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use seccompiler::sock_filter;

    const RET_ACTION_FULL: u32 = 0xffff_0000;
    const KILL_PROCESS: u32 = 0x8000_0000;
    const ALLOW: u32 = 0x7fff_0000;
    const ERRNO: u32 = 0x0005_0000;
    const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
    const PID: u32 = 4242;

    /// The kernel's verdict over every installed filter (grove_schema's
    /// interpreter runs each): the most restrictive action wins.
    fn verdict(programs: &[BpfProgram], arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        programs
            .iter()
            .map(|p| {
                let insns: Vec<grove_schema::bpf::Insn> = p
                    .iter()
                    .map(|i: &sock_filter| grove_schema::bpf::Insn {
                        code: i.code,
                        jt: i.jt,
                        jf: i.jf,
                        k: i.k,
                    })
                    .collect();
                grove_schema::bpf::run(&insns, arch, nr as u32, args)
            })
            .min_by_key(|&ret| (ret & RET_ACTION_FULL) as i32)
            .unwrap()
    }

    fn check(nr: i64, args: [u64; 6]) -> u32 {
        let programs = seccomp_programs(PID).unwrap();
        verdict(&programs, AUDIT_ARCH_X86_64, nr, args)
    }

    fn with(index: u8, value: u64) -> [u64; 6] {
        let mut args = [0; 6];
        args[index as usize] = value;
        args
    }

    fn refused(nr: i64, args: [u64; 6]) -> Option<i32> {
        REFUSED.iter().find_map(|r| {
            let hit = r.syscall.nr == nr
                && match r.syscall.arg {
                    Arg::Any => true,
                    Arg::Masked(i, mask, value) => args[i as usize] & mask == value,
                    other => panic!("refusal with {other:?} not modelled"),
                };
            hit.then_some(r.errno)
        })
    }

    /// Allowed unless a refusal turns it into an errno.
    fn expect_allowed(s: &Syscall, args: [u64; 6]) {
        let expected = match refused(s.nr, args) {
            Some(errno) => ERRNO | errno as u32,
            None => ALLOW,
        };
        assert_eq!(check(s.nr, args), expected, "{} {args:?}", s.name);
    }

    fn expect_killed(name: &str, nr: i64, args: [u64; 6]) {
        assert_eq!(check(nr, args), KILL_PROCESS, "{name} {args:?}");
    }

    #[test]
    fn the_filter_is_the_table() {
        let listed: Vec<i64> = ALLOWED
            .iter()
            .flat_map(|g| g.syscalls)
            .map(|s| s.nr)
            .collect();
        for s in ALLOWED.iter().flat_map(|g| g.syscalls) {
            match s.arg {
                Arg::Any => expect_allowed(s, [0; 6]),
                Arg::Is(i, values) => {
                    for &v in values {
                        expect_allowed(s, with(i, v));
                    }
                    let other = values.iter().max().unwrap() + 1;
                    expect_killed(s.name, s.nr, with(i, other));
                }
                Arg::Masked(i, mask, value) => {
                    expect_allowed(s, with(i, value));
                    expect_allowed(s, with(i, value | !mask));
                    let lowest = mask & mask.wrapping_neg();
                    expect_killed(s.name, s.nr, with(i, value ^ lowest));
                    // Every bit the mask checks matters.
                    for bit in 0..32 {
                        if mask & (1 << bit) != 0 {
                            expect_killed(s.name, s.nr, with(i, value ^ (1 << bit)));
                        }
                    }
                }
                Arg::OwnPid(i) => {
                    expect_allowed(s, with(i, PID as u64));
                    expect_killed(s.name, s.nr, with(i, PID as u64 + 1));
                    expect_killed(s.name, s.nr, with(i, 1));
                }
                Arg::SocketFamilies => {
                    for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
                        expect_allowed(s, with(0, family as u64));
                    }
                    let netlink = [
                        libc::AF_NETLINK as u64,
                        0,
                        libc::NETLINK_ROUTE as u64,
                        0,
                        0,
                        0,
                    ];
                    expect_allowed(s, netlink);
                    let audit = [
                        libc::AF_NETLINK as u64,
                        0,
                        libc::NETLINK_AUDIT as u64,
                        0,
                        0,
                        0,
                    ];
                    expect_killed("socket(AF_NETLINK, NETLINK_AUDIT)", s.nr, audit);
                    expect_killed("socket(AF_PACKET)", s.nr, with(0, libc::AF_PACKET as u64));
                    expect_killed("socket(AF_VSOCK)", s.nr, with(0, libc::AF_VSOCK as u64));
                }
            }
        }
        // Everything else is killed, whatever its arguments.
        for nr in 0..600 {
            if !listed.contains(&nr) {
                expect_killed(&format!("syscall {nr}"), nr, [0; 6]);
                expect_killed(&format!("syscall {nr}"), nr, [u64::MAX; 6]);
            }
        }
        assert_eq!(listed.len(), allowed_count());
    }

    #[test]
    fn dangerous_syscalls_kill() {
        for (name, nr) in [
            ("mount", libc::SYS_mount),
            ("umount2", libc::SYS_umount2),
            ("ptrace", libc::SYS_ptrace),
            ("execve", libc::SYS_execve),
            ("execveat", libc::SYS_execveat),
            ("kexec_load", libc::SYS_kexec_load),
            ("init_module", libc::SYS_init_module),
            ("bpf", libc::SYS_bpf),
            ("unshare", libc::SYS_unshare),
            ("setns", libc::SYS_setns),
            ("fork", libc::SYS_fork),
            ("vfork", libc::SYS_vfork),
            ("kill", libc::SYS_kill),
            ("listen", libc::SYS_listen),
            ("chmod", libc::SYS_chmod),
            ("setuid", libc::SYS_setuid),
            ("keyctl", libc::SYS_keyctl),
            ("userfaultfd", libc::SYS_userfaultfd),
            ("io_uring_setup", libc::SYS_io_uring_setup),
            ("perf_event_open", libc::SYS_perf_event_open),
            ("process_vm_writev", libc::SYS_process_vm_writev),
            ("landlock_restrict_self", libc::SYS_landlock_restrict_self),
            ("seccomp", libc::SYS_seccomp),
        ] {
            expect_killed(name, nr, [0; 6]);
        }
        // A thread, not a process: clone without CLONE_THREAD (fork) or
        // with a new namespace.
        expect_killed(
            "clone(SIGCHLD)",
            libc::SYS_clone,
            with(0, libc::SIGCHLD as u64),
        );
        let thread = 0x3d0f00; // glibc's pthread_create
        assert_eq!(check(libc::SYS_clone, with(0, thread)), ALLOW);
        let newnet = thread | libc::CLONE_NEWNET as u64;
        expect_killed("clone(CLONE_NEWNET)", libc::SYS_clone, with(0, newnet));
        // Other architectures' numbering and the x32 ABI.
        let i386 = 3 | 0x4000_0000;
        assert_eq!(
            verdict(
                &seccomp_programs(PID).unwrap(),
                i386,
                libc::SYS_read,
                [0; 6]
            ),
            KILL_PROCESS
        );
        expect_killed("x32 read", libc::SYS_read | 0x4000_0000, [0; 6]);
    }

    #[test]
    fn refusals_answer_with_errno() {
        assert_eq!(check(libc::SYS_clone3, [0; 6]), ERRNO | libc::ENOSYS as u32);
        let rwx = (libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        assert_eq!(
            check(libc::SYS_mmap, with(2, rwx)),
            ERRNO | libc::EPERM as u32
        );
        assert_eq!(
            check(libc::SYS_mprotect, with(2, rwx)),
            ERRNO | libc::EPERM as u32
        );
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        assert_eq!(check(libc::SYS_mmap, with(2, rw)), ALLOW);
        assert_eq!(
            check(libc::SYS_mprotect, with(2, libc::PROT_NONE as u64)),
            ALLOW
        );
    }

    #[test]
    fn capabilities_must_be_empty() {
        let status = |eff: &str, prm: &str, amb: &str| {
            format!(
                "Name:\tgroved\nCapInh:\t0000000000000000\nCapPrm:\t{prm}\nCapEff:\t{eff}\n\
                 CapBnd:\t000001ffffffffff\nCapAmb:\t{amb}\nNoNewPrivs:\t0\n"
            )
        };
        let zero = "0000000000000000";
        assert!(check_no_capabilities(&status(zero, zero, zero)).is_ok());
        let err = check_no_capabilities(&status("0000000000000400", zero, zero)).unwrap_err();
        assert!(err.contains("CapEff"), "{err}");
        assert!(check_no_capabilities(&status(zero, "0000000000000001", zero)).is_err());
        assert!(check_no_capabilities(&status(zero, zero, "0000000000000001")).is_err());
        assert!(check_no_capabilities("Name:\tgroved\n").is_err());
    }

    /// Run `body` in a forked child (single-threaded, so the confinement
    /// covers all of it) and return how it ended.
    fn in_child(body: impl FnOnce() -> Result<(), String>) -> nix::sys::wait::WaitStatus {
        use nix::unistd::{fork, ForkResult};
        // SAFETY: the child only runs `body` and then _exits; glibc's
        // allocator is fork-safe, and the child never returns to the
        // test harness.
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
                    Ok(Ok(())) => 0,
                    Ok(Err(message)) => {
                        let line = format!("sandbox child: {message}\n");
                        // SAFETY: writing a buffer we own to stderr.
                        unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
                        1
                    }
                    Err(_) => 2,
                };
                // SAFETY: ends the child without running the parent's
                // destructors or atexit handlers.
                unsafe { libc::_exit(code) }
            }
            ForkResult::Parent { child } => nix::sys::wait::waitpid(child, None).expect("waitpid"),
        }
    }

    struct Dirs {
        root: PathBuf,
        sandbox: Sandbox,
    }

    impl Dirs {
        fn new(name: &str) -> Dirs {
            let root =
                std::env::temp_dir().join(format!("grove-sandbox-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            let run = root.join("run");
            std::fs::create_dir_all(run.join("wshd")).unwrap();
            std::fs::create_dir_all(root.join("state")).unwrap();
            Dirs {
                sandbox: Sandbox {
                    state_dir: root.join("state"),
                    listen: run.join("grove.sock"),
                    helper_socket: run.join("helper.sock"),
                    wshd_socket_dir: run.join("wshd"),
                    metrics_socket: None,
                },
                root,
            }
        }
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn denied<T: std::fmt::Debug>(what: &str, result: std::io::Result<T>) -> Result<(), String> {
        match result {
            Err(e) if e.raw_os_error() == Some(libc::EACCES) => Ok(()),
            other => Err(format!("{what}: expected EACCES, got {other:?}")),
        }
    }

    fn ok<T>(what: &str, result: std::io::Result<T>) -> Result<T, String> {
        result.map_err(|e| format!("{what}: {e}"))
    }

    #[test]
    fn confined_child_keeps_to_its_rules() {
        use std::io::{Read, Write};
        let dirs = Dirs::new("rules");
        let sandbox = dirs.sandbox.clone();
        // Made before confinement, as the helper and wshd make theirs.
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_addr = tcp.local_addr().unwrap();
        // groved's own listen_tcp listener is bound before too.
        let listener = tcp.try_clone().unwrap();
        let wshd_path = sandbox.wshd_socket_dir.join("c1.sock");
        let wshd = std::os::unix::net::UnixListener::bind(&wshd_path).unwrap();
        std::fs::write(&sandbox.listen, b"").unwrap();
        let outside = dirs.root.join("outside");
        let status = in_child(move || {
            let report = sandbox.apply()?;
            if report.seccomp_syscalls != allowed_count() {
                return Err(format!("{report}"));
            }
            // Threads still start (clone3 answered ENOSYS, clone checked).
            let joined = std::thread::spawn(|| 7).join();
            if joined.ok() != Some(7) {
                return Err("a thread did not run".into());
            }
            // The state dir: create, write, rename, list, remove.
            let dir = sandbox.state_dir.join("downloads/tmp-1");
            ok("mkdir", std::fs::create_dir_all(&dir))?;
            ok("write", std::fs::write(dir.join("blob"), b"layer"))?;
            let done = sandbox.state_dir.join("downloads/1");
            ok("rename", std::fs::rename(&dir, &done))?;
            let mut text = String::new();
            ok("open", std::fs::File::open(done.join("blob")))?
                .read_to_string(&mut text)
                .map_err(|e| e.to_string())?;
            ok("remove", std::fs::remove_dir_all(&done))?;
            ok(
                "statvfs",
                nix::sys::statvfs::statvfs(&sandbox.state_dir).map_err(Into::into),
            )?;
            // Host files it reads.
            ok("/proc/meminfo", std::fs::read_to_string("/proc/meminfo"))?;
            if Path::new("/etc/resolv.conf").exists() {
                ok(
                    "/etc/resolv.conf",
                    std::fs::read_to_string("/etc/resolv.conf"),
                )?;
            }
            // Its own sockets: connect to wshd; unlink the API socket.
            ok(
                "connect wshd",
                std::os::unix::net::UnixStream::connect(&wshd_path),
            )?;
            ok("unlink API socket", std::fs::remove_file(&sandbox.listen))?;
            // A registry over TCP, found by name.
            let mut stream = ok("connect TCP", std::net::TcpStream::connect(tcp_addr))?;
            ok("send", stream.write_all(b"GET /v2/ HTTP/1.1\r\n\r\n"))?;
            // A remote client on a listener bound before confinement:
            // accepted, tuned as groved tunes it, read from.
            let (mut accepted, _) = ok("accept TCP", listener.accept())?;
            ok(
                "tune TCP",
                crate::remote::tune(&accepted).map_err(Into::into),
            )?;
            let mut request = [0u8; 4];
            ok("read TCP", accepted.read_exact(&mut request))?;
            use std::net::ToSocketAddrs;
            ok("resolve localhost", ("localhost", 80).to_socket_addrs())?;
            if !report.landlock_full {
                eprintln!("Landlock is not fully enforced here: {report}");
                return Ok(());
            }
            // Everything else: denied.
            denied("/etc/passwd", std::fs::File::open("/etc/passwd"))?;
            denied("/etc/shadow", std::fs::File::open("/etc/shadow"))?;
            denied("write outside", std::fs::write(&outside, b"x"))?;
            denied("mkdir outside", std::fs::create_dir(&outside))?;
            denied(
                "create in the wshd dir",
                std::fs::write(sandbox.wshd_socket_dir.join("x"), b""),
            )?;
            denied("list /", std::fs::read_dir("/"))?;
            denied("TCP bind", std::net::TcpListener::bind("127.0.0.1:0"))?;
            // No executable memory.
            // SAFETY: an anonymous mapping, unmapped if it was made.
            let map = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if map != libc::MAP_FAILED {
                return Err("an executable mapping was made".into());
            }
            Ok(())
        });
        drop((tcp, wshd));
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(status.pid().unwrap(), 0),
            "the confined child failed (see its stderr above)"
        );
        assert!(!dirs.root.join("outside").exists());
    }

    /// Answer DNS queries on `socket`: A queries with 127.0.0.3 and
    /// 127.0.0.4, anything else with no records. Returns how many it
    /// answered once `stop` is set.
    fn dns_responder(
        socket: std::net::UdpSocket,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> std::thread::JoinHandle<usize> {
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(50)))
            .unwrap();
        std::thread::spawn(move || {
            let mut answered = 0;
            let mut buf = [0u8; 512];
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let query = &buf[..n];
                // The question: labels from byte 12 to a zero byte, then
                // type and class.
                let mut end = 12;
                while end < n && query[end] != 0 {
                    end += 1 + query[end] as usize;
                }
                let end = end + 5;
                if n < 12 || end > n {
                    continue;
                }
                let qtype = u16::from_be_bytes([query[end - 4], query[end - 3]]);
                let addresses: &[[u8; 4]] = if qtype == 1 {
                    &[[127, 0, 0, 3], [127, 0, 0, 4]]
                } else {
                    &[]
                };
                let mut reply = query[..2].to_vec();
                reply.extend([0x81, 0x80, 0, 1, 0, addresses.len() as u8, 0, 0, 0, 0]);
                reply.extend(&query[12..end]);
                for a in addresses {
                    reply.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                    reply.extend(a);
                }
                let _ = socket.send_to(&reply, peer);
                answered += 1;
            }
            answered
        })
    }

    /// A registry's name resolved over DNS by the confined child: glibc's
    /// resolver reads /etc/resolv.conf, queries over UDP, and sorts several
    /// answers with a netlink socket and UDP connects — all within the
    /// allowlist. Needs root (a private mount namespace to point
    /// /etc/resolv.conf and /etc/hosts at test files, port 53); skipped
    /// otherwise.
    #[test]
    fn confined_child_resolves_a_name_over_dns() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dirs = Dirs::new("dns");
        let server = "127.0.0.77";
        let Ok(socket) = std::net::UdpSocket::bind((server, 53)) else {
            eprintln!("skipped: {server}:53 is taken");
            return;
        };
        let resolv = dirs.root.join("resolv.conf");
        std::fs::write(
            &resolv,
            format!("nameserver {server}\noptions timeout:2 attempts:2\n"),
        )
        .unwrap();
        let hosts = dirs.root.join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let responder = dns_responder(socket, stop.clone());
        let sandbox = dirs.sandbox.clone();
        let status = in_child(move || {
            use nix::mount::{mount, MsFlags};
            let none: Option<&str> = None;
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("unshare: {e}"))?;
            mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
                .map_err(|e| format!("private /: {e}"))?;
            for (file, target) in [(&resolv, "/etc/resolv.conf"), (&hosts, "/etc/hosts")] {
                mount(Some(file.as_path()), target, none, MsFlags::MS_BIND, none)
                    .map_err(|e| format!("bind {target}: {e}"))?;
            }
            sandbox.apply()?;
            use std::net::ToSocketAddrs;
            let mut found: Vec<std::net::SocketAddr> = ok(
                "resolve registry.grove.test",
                ("registry.grove.test", 5000).to_socket_addrs(),
            )?
            .collect();
            found.sort();
            let want: Vec<std::net::SocketAddr> = vec![
                "127.0.0.3:5000".parse().unwrap(),
                "127.0.0.4:5000".parse().unwrap(),
            ];
            if found != want {
                return Err(format!("resolved {found:?}, expected {want:?}"));
            }
            Ok(())
        });
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let answered = responder.join().unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(status.pid().unwrap(), 0),
            "the confined child failed to resolve (see its stderr above)"
        );
        assert!(answered >= 1, "the child never asked the DNS server");
    }

    #[test]
    fn an_unlisted_syscall_kills_the_confined_child() {
        let dirs = Dirs::new("kill");
        let sandbox = dirs.sandbox.clone();
        let status = in_child(move || {
            sandbox.apply()?;
            // SAFETY: ptrace(PTRACE_TRACEME) has no memory arguments; the
            // filter kills the child before it runs.
            unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
            Err("ptrace did not kill the child".into())
        });
        match status {
            nix::sys::wait::WaitStatus::Signaled(_, signal, _) => {
                assert_eq!(signal, nix::sys::signal::Signal::SIGSYS)
            }
            other => panic!("expected death by SIGSYS, got {other:?}"),
        }
    }
}
