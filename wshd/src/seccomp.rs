//! The seccomp filter every process wshd starts for a client runs under:
//! an allowlist in the spirit of Docker's default profile (moby's
//! `profiles/seccomp/default.json`) for a container without CAP_SYS_ADMIN,
//! CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_TIME, … (see `confine::KEEP`).
//!
//! `RULES` gives every x86_64 system call the kernel has (`x86_64::TABLE`)
//! one verdict and a reason: allowed; allowed unless an argument is
//! dangerous; refused with EPERM (what Docker answers, and what a caller
//! takes as "not permitted here"); or ENOSYS, as if the kernel lacked it.
//! A number no rule names — a call newer than the table, such as whatever
//! the next kernel adds — fails with ENOSYS, so new kernel code is out of
//! reach until someone reviews it and libcs fall back to older calls (they
//! fall back on ENOSYS, but take EPERM as a real refusal).
//!
//! Only x86_64 is handled: a system call made through another ABI (i386's
//! `int 0x80`) kills the process, and the x32 ABI (numbers with bit 30,
//! whose audit arch is also x86_64) answers ENOSYS, as on kernels built
//! without x32: its numbers are above every named one.
//!
//! `compile` turns the table into a binary search over number intervals.

mod compile;
mod x86_64;

use std::sync::OnceLock;

/// A condition on one argument (its low 32 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Any of these bits is set.
    AnyBitOf(&'static [u32]),
    /// It equals this value.
    Is(u32),
    /// It is none of these values.
    NoneOf(&'static [u32]),
}

/// What the filter does with a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    /// Allowed, unless argument `arg` (0-based) meets `when`: then it fails
    /// with `errno`.
    AllowUnless {
        arg: u8,
        when: When,
        errno: i32,
    },
    /// Always fails with this errno.
    Deny(i32),
}

/// Some system calls, by name, and why they get `action`.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub calls: &'static [&'static str],
    pub action: Action,
    pub reason: &'static str,
}

/// What a number no rule names answers.
pub const DEFAULT_ERRNO: i32 = libc::ENOSYS;

const fn allow(calls: &'static [&'static str], reason: &'static str) -> Rule {
    Rule {
        calls,
        action: Action::Allow,
        reason,
    }
}

/// Refused with EPERM.
const fn refuse(calls: &'static [&'static str], reason: &'static str) -> Rule {
    Rule {
        calls,
        action: Action::Deny(libc::EPERM),
        reason,
    }
}

/// Answered ENOSYS, as a kernel without the call would.
const fn absent(calls: &'static [&'static str], reason: &'static str) -> Rule {
    Rule {
        calls,
        action: Action::Deny(libc::ENOSYS),
        reason,
    }
}

const fn unless(
    call: &'static [&'static str],
    arg: u8,
    when: When,
    errno: i32,
    reason: &'static str,
) -> Rule {
    Rule {
        calls: call,
        action: Action::AllowUnless { arg, when, errno },
        reason,
    }
}

/// The namespace flags of clone(2) (Docker's mask 0x7E020000). CLONE_NEWTIME
/// is not among them: in clone's flags its bit is part of the exit signal.
const CLONE_NAMESPACES: &[u32] = &[
    libc::CLONE_NEWNS as u32,
    libc::CLONE_NEWCGROUP as u32,
    libc::CLONE_NEWUTS as u32,
    libc::CLONE_NEWIPC as u32,
    libc::CLONE_NEWUSER as u32,
    libc::CLONE_NEWPID as u32,
    libc::CLONE_NEWNET as u32,
];

/// The personas Docker allows: PER_LINUX, PER_LINUX32, UNAME26,
/// UNAME26 | PER_LINUX32, and 0xffffffff (a query).
const SAFE_PERSONAS: &[u32] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The socket families a container gets (socket's and socketpair's first
/// argument): unix, IPv4, IPv6, netlink (ip, getaddrinfo, ss) and packet
/// (CAP_NET_RAW is in Docker's set: tcpdump, arping, DHCP clients), all
/// confined to the container's network namespace.
const SOCKET_FAMILIES: &[u32] = &[
    libc::AF_UNIX as u32,
    libc::AF_INET as u32,
    libc::AF_INET6 as u32,
    libc::AF_NETLINK as u32,
    libc::AF_PACKET as u32,
];

/// ioctl's TIOCSTI: push a byte into a terminal's input queue.
const TIOCSTI: u32 = libc::TIOCSTI as u32;

/// Every x86_64 system call, by what the filter does with it. Unless an
/// entry says otherwise, Docker's default profile decides the same for a
/// container with Docker's default capabilities.
#[rustfmt::skip]
pub const RULES: &[Rule] = &[
    // ---------------------------------------------------------------- allowed
    allow(
        &[
            "read", "write", "open", "openat", "openat2", "creat", "close", "close_range",
            "lseek", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev", "preadv2",
            "pwritev2", "stat", "fstat", "lstat", "newfstatat", "statx", "statfs", "fstatfs",
            "access", "faccessat", "faccessat2", "dup", "dup2", "dup3", "fcntl", "flock",
            "fsync", "fdatasync", "sync", "syncfs", "sync_file_range", "truncate", "ftruncate",
            "fallocate", "fadvise64", "readahead", "getdents", "getdents64", "getcwd", "chdir",
            "fchdir", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "link",
            "linkat", "unlink", "unlinkat", "symlink", "symlinkat", "readlink", "readlinkat",
            "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
            "umask", "utime", "utimes", "futimesat", "utimensat", "setxattr", "lsetxattr",
            "fsetxattr", "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr",
            "flistxattr", "removexattr", "lremovexattr", "fremovexattr",
        ],
        "files and directories: they reach what the container's mounts, file modes and \
         capabilities let them",
    ),
    allow(
        &["pipe", "pipe2", "sendfile", "splice", "tee", "vmsplice", "copy_file_range"],
        "pipes and copies between descriptors the process holds",
    ),
    allow(
        &[
            "poll", "ppoll", "select", "pselect6", "epoll_create", "epoll_create1", "epoll_ctl",
            "epoll_wait", "epoll_pwait", "epoll_pwait2", "eventfd", "eventfd2", "signalfd",
            "signalfd4", "timerfd_create", "timerfd_settime", "timerfd_gettime", "inotify_init",
            "inotify_init1", "inotify_add_watch", "inotify_rm_watch", "fanotify_mark",
        ],
        "waiting for descriptors and events (fanotify_mark needs a group from fanotify_init, \
         which is refused)",
    ),
    allow(
        &["io_setup", "io_destroy", "io_submit", "io_cancel", "io_getevents", "io_pgetevents"],
        "Linux AIO (databases use it; io_uring is refused below)",
    ),
    allow(
        &[
            "brk", "mmap", "munmap", "mremap", "mprotect", "msync", "mincore", "madvise",
            "remap_file_pages", "mlock", "mlock2", "munlock", "mlockall", "munlockall",
            "memfd_create", "memfd_secret", "membarrier", "pkey_alloc", "pkey_free",
            "pkey_mprotect", "map_shadow_stack", "mseal",
        ],
        "the process's own memory (locking is bounded by RLIMIT_MEMLOCK and the memory \
         cgroup; map_shadow_stack is glibc's CET support, mseal only takes rights away)",
    ),
    allow(
        &[
            "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending",
            "rt_sigtimedwait", "rt_sigsuspend", "rt_sigqueueinfo", "rt_tgsigqueueinfo",
            "sigaltstack", "pause", "restart_syscall", "kill", "tkill", "tgkill", "pidfd_open",
            "pidfd_send_signal",
        ],
        "signals: only to processes of the container's PID namespace, by the usual uid and \
         CAP_KILL rules",
    ),
    allow(
        &[
            "fork", "vfork", "execve", "execveat", "exit", "exit_group", "wait4", "waitid",
            "getpid", "getppid", "gettid", "set_tid_address", "set_robust_list",
            "get_robust_list", "futex", "futex_waitv", "futex_wake", "futex_wait",
            "futex_requeue", "rseq", "arch_prctl", "set_thread_area", "get_thread_area",
            "modify_ldt", "prctl", "process_mrelease", "seccomp",
        ],
        "processes and threads: start-up of glibc and musl (TLS, robust futexes, rseq), \
         prctl (its privileged options check capabilities), more seccomp filters (they can \
         only refuse more); clone's namespace flags are checked below",
    ),
    allow(
        &[
            "getuid", "geteuid", "getresuid", "getgid", "getegid", "getresgid", "getgroups",
            "setuid", "setreuid", "setresuid", "setfsuid", "setgid", "setregid", "setresgid",
            "setfsgid", "setgroups", "capget", "capset", "getpgid", "getpgrp", "setpgid",
            "getsid", "setsid",
        ],
        "credentials, sessions, process groups: changing ids needs CAP_SETUID/CAP_SETGID, \
         which only the container's root has, over its own user namespace; capset cannot \
         exceed the bounding set",
    ),
    allow(
        &[
            "sched_yield", "sched_setparam", "sched_getparam", "sched_setscheduler",
            "sched_getscheduler", "sched_get_priority_max", "sched_get_priority_min",
            "sched_rr_get_interval", "sched_setaffinity", "sched_getaffinity", "sched_setattr",
            "sched_getattr", "getpriority", "setpriority", "ioprio_get", "ioprio_set",
            "getrlimit", "setrlimit", "prlimit64", "getrusage", "times", "getcpu",
        ],
        "scheduling and resource limits (raising them needs CAP_SYS_NICE or \
         CAP_SYS_RESOURCE, which containers lack; the cgroup bounds CPU and CPU sets)",
    ),
    allow(
        &[
            "time", "gettimeofday", "clock_gettime", "clock_getres", "clock_nanosleep",
            "nanosleep", "alarm", "getitimer", "setitimer", "timer_create", "timer_settime",
            "timer_gettime", "timer_getoverrun", "timer_delete",
        ],
        "reading clocks, sleeping, timers (setting a clock is refused below)",
    ),
    allow(
        &["uname", "sysinfo", "getrandom"],
        "system information (uname gives the container's UTS namespace) and randomness",
    ),
    allow(
        &[
            "connect", "accept", "accept4", "bind", "listen", "shutdown", "getsockname",
            "getpeername", "setsockopt", "getsockopt", "sendto", "recvfrom", "sendmsg",
            "recvmsg", "sendmmsg", "recvmmsg",
        ],
        "sockets, in the container's network namespace (their families are checked at \
         socket and socketpair, below)",
    ),
    allow(
        &[
            "shmget", "shmat", "shmdt", "shmctl", "semget", "semop", "semtimedop", "semctl",
            "msgget", "msgsnd", "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend",
            "mq_timedreceive", "mq_notify", "mq_getsetattr",
        ],
        "System V and POSIX IPC, in the container's IPC namespace",
    ),
    allow(
        &["chroot"],
        "CAP_SYS_CHROOT is in Docker's set; the container's root is its mount namespace's, \
         so no chroot climbs above it",
    ),
    allow(
        &["mknod", "mknodat"],
        "CAP_MKNOD is in Docker's set; the device allowlist and nodev mounts decide what a \
         node opens (in a user namespace the kernel refuses device nodes outright)",
    ),
    allow(
        &["landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"],
        "Landlock: a process sandboxing itself, unprivileged",
    ),
    allow(
        &["uretprobe", "uprobe"],
        "the kernel's probe trampolines call them in a process the host traces; from \
         anywhere else they fail or raise SIGILL (recent kernels let them past seccomp \
         filters anyway)",
    ),
    // ------------------------------------------------- allowed, arguments checked
    unless(
        &["clone"],
        0,
        When::AnyBitOf(CLONE_NAMESPACES),
        libc::EPERM,
        "a CLONE_NEW* flag creates namespaces, as unshare does",
    ),
    unless(
        &["personality"],
        0,
        When::NoneOf(SAFE_PERSONAS),
        libc::EPERM,
        "other personas change kernel behaviour (e.g. ADDR_NO_RANDOMIZE turns ASLR off)",
    ),
    unless(
        &["socket", "socketpair"],
        0,
        When::NoneOf(SOCKET_FAMILIES),
        libc::EAFNOSUPPORT,
        "other families (AF_VSOCK reaches the hypervisor and the host past the network \
         namespace; AF_XDP maps NIC rings; AF_ALG, AF_RDS, AF_TIPC, AF_CAN, AF_KEY, … are \
         rarely used kernel code that socket() would load as modules) answer as on a \
         kernel built without them (stricter than Docker, which refuses only AF_VSOCK)",
    ),
    unless(
        &["ioctl"],
        1,
        When::Is(TIOCSTI),
        libc::EPERM,
        "TIOCSTI types into a terminal: a user's process could type commands into a root \
         shell's terminal it shares (su); Linux >= 6.2 can refuse it host-wide \
         (dev.tty.legacy_tiocsti=0); stricter than Docker",
    ),
    // ------------------------------------------------------- refused: EPERM
    refuse(&["mount"], "mounts could cover or expose the container's files"),
    refuse(&["umount2"], "unmounting could uncover what a mount hides (/proc, /dev)"),
    refuse(&["pivot_root"], "changes the root of the mount namespace"),
    refuse(
        &["open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr"],
        "the new mount API: clones, attaches, creates and reconfigures mounts",
    ),
    refuse(
        &["open_by_handle_at"],
        "opens any file by handle, bypassing the path walk (the shocker escape; \
         CAP_DAC_READ_SEARCH)",
    ),
    refuse(
        &["name_to_handle_at"],
        "makes the handles open_by_handle_at takes (stricter than Docker, which allows it)",
    ),
    refuse(&["quotactl", "quotactl_fd"], "filesystem quota administration"),
    refuse(
        &["unshare"],
        "new namespaces, a user namespace above all, grant capabilities over new kernel \
         interfaces",
    ),
    refuse(&["setns"], "joins other namespaces"),
    refuse(
        &["init_module", "finit_module", "delete_module"],
        "loads and unloads kernel modules (CAP_SYS_MODULE)",
    ),
    refuse(&["kexec_load", "kexec_file_load"], "replaces the running kernel (CAP_SYS_BOOT)"),
    refuse(&["reboot"], "reboots the host or its PID namespace (CAP_SYS_BOOT)"),
    refuse(
        &["bpf"],
        "eBPF programs and maps: kernel attack surface (CAP_SYS_ADMIN / CAP_BPF)",
    ),
    refuse(
        &["perf_event_open"],
        "performance monitoring: leaks kernel and host information (CAP_PERFMON)",
    ),
    refuse(&["lookup_dcookie"], "profiling lookups of kernel paths (CAP_SYS_ADMIN)"),
    refuse(
        &["userfaultfd"],
        "stalls kernel page faults at will, a staple of kernel race exploits",
    ),
    refuse(
        &["io_uring_setup", "io_uring_enter", "io_uring_register"],
        "io_uring: a large kernel attack surface past seccomp's view (stricter than Docker; \
         containerd refuses it)",
    ),
    refuse(&["swapon", "swapoff"], "host swap configuration (CAP_SYS_ADMIN)"),
    refuse(&["acct"], "process accounting to a file, host-wide (CAP_SYS_PACCT)"),
    refuse(
        &["syslog"],
        "the kernel log: host information, kernel addresses (CAP_SYSLOG)",
    ),
    refuse(&["iopl", "ioperm"], "raw I/O port access (CAP_SYS_RAWIO)"),
    refuse(&["settimeofday", "clock_settime"], "sets the host's clock (CAP_SYS_TIME)"),
    refuse(
        &["adjtimex", "clock_adjtime"],
        "tunes the host's clock (stricter than Docker, which allows the read-only use)",
    ),
    refuse(
        &["sethostname", "setdomainname"],
        "the container's host and domain names are set by Grove (CAP_SYS_ADMIN)",
    ),
    refuse(&["vhangup"], "hangs up the terminal (CAP_SYS_TTY_CONFIG)"),
    refuse(
        &["add_key", "request_key", "keyctl"],
        "the kernel keyring is not namespaced",
    ),
    refuse(
        &["ptrace"],
        "tracing other processes (stricter than Docker, which allows it on Linux >= 4.8)",
    ),
    refuse(
        &["process_vm_readv", "process_vm_writev"],
        "reads and writes another process's memory, as ptrace",
    ),
    refuse(&["kcmp"], "compares kernel objects of other processes, as ptrace"),
    refuse(&["pidfd_getfd"], "takes file descriptors from other processes, as ptrace"),
    refuse(&["process_madvise"], "advises on another process's memory, as ptrace"),
    refuse(
        &["mbind", "set_mempolicy", "get_mempolicy", "set_mempolicy_home_node"],
        "NUMA memory policy (CAP_SYS_NICE)",
    ),
    refuse(
        &["migrate_pages", "move_pages"],
        "moves other processes' pages between NUMA nodes",
    ),
    refuse(
        &["fanotify_init"],
        "filesystem-wide access notification and permission events (CAP_SYS_ADMIN)",
    ),
    // ------------------------------------------------------- absent: ENOSYS
    absent(
        &["clone3"],
        "its flags are in memory seccomp cannot read; libcs fall back to clone on ENOSYS",
    ),
    absent(
        &["uselib", "ustat", "sysfs", "_sysctl"],
        "obsolete (a.out libraries, old statistics, binary sysctl); no libc calls them",
    ),
    absent(
        &[
            "create_module", "get_kernel_syms", "query_module", "nfsservctl", "getpmsg",
            "putpmsg", "afs_syscall", "tuxcall", "security", "vserver", "epoll_ctl_old",
            "epoll_wait_old",
        ],
        "removed from Linux or never implemented: the kernel answers ENOSYS itself",
    ),
    absent(
        &["cachestat"],
        "page-cache state of files: a side channel on other tenants' use of shared files",
    ),
    absent(
        &["statmount", "listmount"],
        "mounts by id (6.8); /proc/self/mountinfo says the same for the container's own",
    ),
    absent(
        &["lsm_get_self_attr", "lsm_set_self_attr", "lsm_list_modules"],
        "security-module attributes (6.8); /proc/self/attr serves the same",
    ),
    absent(
        &["setxattrat", "getxattrat", "listxattrat", "removexattrat"],
        "extended attributes relative to a directory fd (6.13): new code no libc needs yet \
         (the *xattr calls above do the same)",
    ),
    absent(
        &["open_tree_attr"],
        "the new mount API (6.15): clones mount trees with new attributes",
    ),
    absent(
        &["file_getattr", "file_setattr"],
        "inode flags and project ids by path (6.17): new code; the FS_IOC_FSGETXATTR ioctl \
         does the same",
    ),
];

/// Every named call's number and action, sorted by number; an error names
/// a call that is unknown on x86_64 or has two rules.
pub fn resolve() -> Result<Vec<(u32, Action)>, String> {
    let mut calls = Vec::new();
    for rule in RULES {
        for name in rule.calls {
            let nr =
                x86_64::number(name).ok_or_else(|| format!("{name}: not an x86_64 system call"))?;
            calls.push((nr, *name, rule.action));
        }
    }
    calls.sort_by_key(|c| c.0);
    for pair in calls.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(format!("{} has two rules", pair[1].1));
        }
    }
    for (_, name, action) in &calls {
        if let Action::AllowUnless { arg, .. } = action {
            if *arg > 5 {
                return Err(format!("{name}: argument {arg} does not exist (0..=5)"));
            }
        }
    }
    Ok(calls.into_iter().map(|(nr, _, a)| (nr, a)).collect())
}

/// Compiles `RULES` into one BPF program.
pub fn build() -> Result<Vec<libc::sock_filter>, String> {
    compile::compile(&resolve()?, compile::ret_errno(DEFAULT_ERRNO))
}

/// The compiled program, built once (wshd builds it at start-up, so a
/// broken table stops wshd at once rather than its first spawn).
pub fn program() -> &'static [libc::sock_filter] {
    static PROGRAM: OnceLock<Vec<libc::sock_filter>> = OnceLock::new();
    PROGRAM.get_or_init(|| build().expect("the seccomp table compiles (unit-tested)"))
}

/// Installs `program` on the calling thread. Needs no_new_privs (or
/// CAP_SYS_ADMIN). Async-signal-safe: no allocation.
pub fn install(program: &[libc::sock_filter]) -> std::io::Result<()> {
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: seccomp reads a sock_fprog and the instructions it points at,
    // both live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn errno_name(e: i32) -> String {
    match e {
        libc::EPERM => "EPERM".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::EAFNOSUPPORT => "EAFNOSUPPORT".into(),
        _ => format!("errno {e}"),
    }
}

fn hex(vs: &[u32]) -> String {
    let vs: Vec<String> = vs.iter().map(|v| format!("{v:#x}")).collect();
    vs.join(", ")
}

/// The policy as a reviewer reads it (`wshd --policy`): each rule's verdict
/// and reason, then its calls.
pub fn describe() -> String {
    let mut out = format!(
        "seccomp: allowlist (x86_64 only: i386 calls kill the process; x32 calls and every \
         number not named below: {})\n",
        errno_name(DEFAULT_ERRNO)
    );
    for rule in RULES {
        let verdict = match rule.action {
            Action::Allow => "allowed".to_string(),
            Action::Deny(e) => format!("refused, {}", errno_name(e)),
            Action::AllowUnless { arg, when, errno } => {
                let when = match when {
                    When::AnyBitOf(bits) => format!("has any of {}", hex(bits)),
                    When::Is(v) => format!("= {v:#x}"),
                    When::NoneOf(vs) => format!("is none of {}", hex(vs)),
                };
                format!("allowed, but {} when arg{arg} {when}", errno_name(errno))
            }
        };
        out.push_str(&format!("  {verdict}: {}\n", rule.reason));
        let mut line = String::from("     ");
        for name in rule.calls {
            if line.len() + name.len() > 90 {
                out.push_str(&line);
                out.push('\n');
                line = String::from("     ");
            }
            line.push(' ');
            line.push_str(name);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// One line for wshd's log: the program's size and what it decides.
pub fn summary(program: &[libc::sock_filter]) -> String {
    let count = |f: fn(&Action) -> bool| -> usize {
        RULES
            .iter()
            .filter(|r| f(&r.action))
            .map(|r| r.calls.len())
            .sum()
    };
    format!(
        "seccomp filter: {} instructions; {} system calls allowed, {} with argument checks, \
         {} refused (EPERM), {} absent (ENOSYS), any other number ENOSYS",
        program.len(),
        count(|a| *a == Action::Allow),
        count(|a| matches!(a, Action::AllowUnless { .. })),
        count(|a| *a == Action::Deny(libc::EPERM)),
        count(|a| *a == Action::Deny(libc::ENOSYS)),
    )
}

#[cfg(test)]
pub mod tests {
    use super::compile::{ret_errno, AUDIT_ARCH_X86_64};
    use super::*;
    use crate::confine::tests::{errno, in_child};

    /// `struct seccomp_data`.
    pub struct Data {
        pub nr: i32,
        pub arch: u32,
        pub args: [u64; 6],
    }

    impl Data {
        pub fn call(nr: i64, arg0: u64) -> Data {
            Data::with(nr, [arg0, 0, 0, 0, 0, 0])
        }

        pub fn with(nr: i64, args: [u64; 6]) -> Data {
            Data {
                nr: nr as i32,
                arch: AUDIT_ARCH_X86_64,
                args,
            }
        }
    }

    /// Runs the program as the kernel's seccomp would (grove_schema's
    /// interpreter; an instruction outside seccomp's subset fails closed),
    /// with the number of instructions it took.
    pub fn run_counted(program: &[libc::sock_filter], data: &Data) -> (u32, usize) {
        let insns: Vec<grove_schema::bpf::Insn> = program
            .iter()
            .map(|i| grove_schema::bpf::Insn {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        grove_schema::bpf::run_counted(&insns, data.arch, data.nr as u32, data.args)
    }

    pub fn run(program: &[libc::sock_filter], data: &Data) -> u32 {
        run_counted(program, data).0
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    fn eperm() -> u32 {
        ret_errno(libc::EPERM)
    }

    fn enosys() -> u32 {
        ret_errno(libc::ENOSYS)
    }

    fn nr(name: &str) -> i64 {
        i64::from(x86_64::number(name).unwrap_or_else(|| panic!("{name}")))
    }

    /// Argument words that exercise no check (and some that would, on
    /// calls without checks).
    const ARGS: [u64; 4] = [0, 1, 0x7E02_0000, u64::MAX];

    #[test]
    fn every_x86_64_call_has_exactly_one_rule() {
        let resolved = resolve().unwrap();
        assert_eq!(resolved.len(), x86_64::TABLE.len(), "calls without a rule");
        for rule in RULES {
            assert!(!rule.reason.is_empty() && !rule.calls.is_empty());
        }
    }

    #[test]
    fn every_rule_gives_its_verdict() {
        let p = build().unwrap();
        for rule in RULES {
            for name in rule.calls {
                for a in ARGS {
                    let got = run(&p, &Data::with(nr(name), [a; 6]));
                    let want = match rule.action {
                        Action::Allow => ALLOW,
                        Action::Deny(e) => ret_errno(e),
                        Action::AllowUnless { .. } => continue,
                    };
                    assert_eq!(got, want, "{name} with args {a:#x}");
                }
            }
        }
    }

    #[test]
    fn unlisted_numbers_fail_with_enosys() {
        let p = build().unwrap();
        let named: std::collections::HashSet<u32> =
            x86_64::TABLE.iter().map(|(nr, _)| *nr).collect();
        // The gap x86_64 leaves, and everything above the table: calls a
        // later kernel adds.
        let mut unnamed: Vec<u32> = (0..1024).filter(|n| !named.contains(n)).collect();
        unnamed.extend([4096, 0x3fff_ffff, 0x7fff_ffff, 0x8000_0000, u32::MAX]);
        assert!(unnamed.contains(&337) && unnamed.contains(&470) && unnamed.contains(&499));
        for n in unnamed {
            for a in ARGS {
                assert_eq!(run(&p, &Data::call(n.into(), a)), enosys(), "syscall {n}");
            }
        }
        // Calls this kernel has that the table leaves out on purpose.
        for (name, number) in [
            ("open_tree_attr", 467),
            ("file_getattr", 468),
            ("file_setattr", 469),
        ] {
            assert_eq!(nr(name), number);
            assert_eq!(run(&p, &Data::call(number, 0)), enosys(), "{name}");
        }
    }

    /// What glibc, musl and Rust's std call at start-up and in ordinary
    /// work (dynamic loading, threads, stdio, sockets, time).
    #[test]
    #[rustfmt::skip]
    fn what_libcs_need_is_allowed() {
        let p = build().unwrap();
        for name in [
            "execve", "brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq",
            "prlimit64", "mmap", "mprotect", "munmap", "openat", "newfstatat", "fstat", "statx",
            "read", "pread64", "close", "getrandom", "rt_sigaction", "rt_sigprocmask",
            "rt_sigreturn", "sigaltstack", "futex", "madvise", "sched_getaffinity", "poll",
            "ioctl", "faccessat2", "epoll_pwait2", "close_range", "membarrier", "pidfd_open",
            "pidfd_send_signal", "getdents64", "wait4", "pipe2", "dup3", "fcntl", "exit_group",
            "clock_gettime", "clock_nanosleep", "uname", "getcwd", "vfork", "fork", "chroot",
            "setuid", "capset", "prctl", "seccomp", "mknodat", "fchmodat2",
        ] {
            for a in ARGS.into_iter().take(2) {
                assert_eq!(run(&p, &Data::call(nr(name), a)), ALLOW, "{name}({a})");
            }
        }
    }

    #[test]
    #[rustfmt::skip]
    fn io_uring_and_the_dangerous_calls_stay_refused_with_eperm() {
        let p = build().unwrap();
        for name in [
            "io_uring_setup", "io_uring_enter", "io_uring_register", "mount", "umount2",
            "unshare", "setns", "ptrace", "bpf", "keyctl", "open_by_handle_at", "kexec_load",
            "init_module", "userfaultfd", "perf_event_open", "pidfd_getfd",
        ] {
            assert_eq!(run(&p, &Data::call(nr(name), 0)), eperm(), "{name}");
        }
    }

    #[test]
    fn clone_is_denied_only_with_namespace_flags() {
        let p = build().unwrap();
        let sigchld = libc::SIGCHLD as u64;
        for &flag in CLONE_NAMESPACES {
            let flags = u64::from(flag) | sigchld;
            assert_eq!(
                run(&p, &Data::call(libc::SYS_clone, flags)),
                eperm(),
                "clone({flags:#x})"
            );
        }
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        let vfork = (libc::CLONE_VM | libc::CLONE_VFORK) as u64 | sigchld;
        let fork = (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64 | sigchld;
        for flags in [sigchld, thread, vfork, fork] {
            assert_eq!(
                run(&p, &Data::call(libc::SYS_clone, flags)),
                ALLOW,
                "clone({flags:#x})"
            );
        }
        assert_eq!(run(&p, &Data::call(libc::SYS_clone3, 0)), enosys());
    }

    #[test]
    fn personality_socket_and_ioctl_arguments() {
        let p = build().unwrap();
        for &v in SAFE_PERSONAS {
            let d = Data::call(libc::SYS_personality, v.into());
            assert_eq!(run(&p, &d), ALLOW, "personality({v:#x})");
        }
        for v in [0x0040000u64, 0x0400000, 0x0008_0000 | 0x8, 1] {
            let d = Data::call(libc::SYS_personality, v);
            assert_eq!(run(&p, &d), eperm(), "personality({v:#x})");
        }
        let eafnosupport = ret_errno(libc::EAFNOSUPPORT);
        for call in [libc::SYS_socket, libc::SYS_socketpair] {
            for family in [
                libc::AF_UNIX,
                libc::AF_INET,
                libc::AF_INET6,
                libc::AF_NETLINK,
                libc::AF_PACKET,
            ] {
                let d = Data::call(call, family as u64);
                assert_eq!(run(&p, &d), ALLOW, "{call}({family})");
            }
            // AF_XDP is 44; AF_VSOCK 40, AF_ALG 38, AF_RDS 21, AF_TIPC 30.
            for family in [44u64, 40, 38, 21, 30, 29, 15, 0, 46, 255, 0x1_0000_0002] {
                let d = Data::call(call, family);
                if family == 0x1_0000_0002 {
                    // The kernel reads an int: this is AF_INET.
                    assert_eq!(run(&p, &d), ALLOW);
                } else {
                    assert_eq!(run(&p, &d), eafnosupport, "{call}({family})");
                }
            }
        }
        let tiocsti = Data::with(libc::SYS_ioctl, [0, TIOCSTI.into(), 0, 0, 0, 0]);
        assert_eq!(run(&p, &tiocsti), eperm());
        for cmd in [
            libc::TCGETS,
            libc::TIOCGWINSZ,
            libc::FIONREAD,
            libc::TIOCSCTTY,
        ] {
            let d = Data::with(libc::SYS_ioctl, [0, cmd, 0, 0, 0, 0]);
            assert_eq!(run(&p, &d), ALLOW, "ioctl({cmd:#x})");
        }
    }

    #[test]
    fn other_abis_are_refused() {
        let p = build().unwrap();
        // x32: the same audit arch, numbers with bit 30.
        for nr in [libc::SYS_mount, libc::SYS_read, libc::SYS_unshare] {
            let x32 = nr | 0x4000_0000;
            assert_eq!(run(&p, &Data::call(x32, 0)), enosys(), "x32 {nr}");
        }
        // i386 (int 0x80): killed.
        let mut d = Data::call(libc::SYS_read, 0);
        d.arch = 3 | 0x4000_0000; // AUDIT_ARCH_I386
        assert_eq!(run(&p, &d), libc::SECCOMP_RET_KILL_PROCESS);
    }

    /// The shape is a binary search: no call takes more than the prelude,
    /// one comparison per level of a balanced tree over the intervals, and
    /// its leaf (at most a load, five comparisons, a return).
    #[test]
    fn every_call_takes_a_logarithmic_path() {
        let p = build().unwrap();
        let intervals = compile::interval_count(&resolve().unwrap(), enosys());
        let depth = usize::BITS - (intervals - 1).leading_zeros();
        let bound = 4 + 2 * depth as usize + 8;
        let mut worst = 0;
        for n in 0..1024 {
            for a in ARGS {
                let (_, steps) = run_counted(&p, &Data::with(n, [a; 6]));
                worst = worst.max(steps);
            }
        }
        assert!(worst <= bound, "{worst} instructions > {bound}");
        println!(
            "{} instructions, {intervals} intervals, depth {depth}, worst path {worst}",
            p.len()
        );
    }

    #[test]
    fn the_policy_text_names_every_rule() {
        let text = describe();
        for rule in RULES {
            assert!(text.contains(rule.reason), "{}", rule.reason);
            for name in rule.calls {
                assert!(text.contains(&format!(" {name}")), "{name}");
            }
        }
        assert!(summary(program()).contains(&format!("{} instructions", program().len())));
    }

    /// Runs `f` in a forked child under no_new_privs and the filter; its
    /// result is the child's exit code. `f` must not allocate (the test
    /// harness has other threads).
    fn under_the_filter(f: impl FnOnce() -> i32) -> i32 {
        let program = program();
        in_child(|| {
            // SAFETY: prctl with integer arguments; _exit ends the child.
            unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    libc::_exit(100);
                }
            }
            if install(program).is_err() {
                return 101;
            }
            f()
        })
    }

    /// The kernel's answers under the installed filter: calls newer than
    /// the table (this kernel has 467..=469) and unused numbers fail with
    /// ENOSYS, AF_XDP with EAFNOSUPPORT; what the table allows works.
    #[test]
    fn the_kernel_answers_as_the_table_says() {
        let code = under_the_filter(|| {
            // SAFETY: refused before they touch memory, or given no pointers.
            unsafe {
                for (i, n) in [467i64, 468, 469, 470, 499, 400].into_iter().enumerate() {
                    if libc::syscall(n, 0, 0, 0, 0, 0, 0) != -1 || errno() != libc::ENOSYS {
                        return 10 + i as i32;
                    }
                }
                if libc::socket(44, libc::SOCK_RAW, 0) != -1 || errno() != libc::EAFNOSUPPORT {
                    return 20;
                }
                let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                if fd < 0 || libc::close(fd) != 0 {
                    return 21;
                }
                let mut pair = [0; 2];
                if libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) != 0 {
                    return 22;
                }
                if libc::syscall(libc::SYS_clone3, 0, 0) != -1 || errno() != libc::ENOSYS {
                    return 23;
                }
                if libc::syscall(libc::SYS_io_uring_setup, 1, 0) != -1 || errno() != libc::EPERM {
                    return 24;
                }
                if libc::personality(0xffff_ffff) < 0 {
                    return 25;
                }
                if libc::ioctl(pair[0], libc::TIOCSTI, c"x".as_ptr()) != -1
                    || errno() != libc::EPERM
                {
                    return 26;
                }
            }
            0
        });
        assert_eq!(code, 0, "the confined child failed check {code}");
    }

    /// Dynamically linked glibc programs of the host start and work under
    /// the filter: loader, threads (clone3 falls back to clone), pipes,
    /// job control, files, time.
    #[test]
    fn host_programs_run_under_the_filter() {
        let script = "set -e; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; \
            ls / >/dev/null; date >/dev/null; id -u >/dev/null; \
            printf 'b\\na\\n' | sort | uniq | wc -l > \"$d/n\"; \
            sleep 0.1 & wait; ln -s n \"$d/l\"; chmod 600 \"$d/n\"; \
            test \"$(cat \"$d/l\")\" = 2; \
            if command -v perl >/dev/null; then perl -e 'pipe(R,W); if (fork) { wait } else { exit 0 }'; fi; \
            grep -q '^Seccomp:.2' /proc/self/status; echo done";
        let sh = c"/bin/sh";
        let script = std::ffi::CString::new(script).unwrap();
        let argv = [
            sh.as_ptr(),
            c"-c".as_ptr(),
            script.as_ptr(),
            std::ptr::null(),
        ];
        let mut out = [0 as libc::c_int; 2];
        // SAFETY: a plain pipe.
        assert_eq!(unsafe { libc::pipe(out.as_mut_ptr()) }, 0);
        let code = under_the_filter(|| {
            // SAFETY: argv is NUL-terminated and outlives the exec.
            unsafe {
                libc::dup2(out[1], 1);
                libc::execv(sh.as_ptr(), argv.as_ptr());
            }
            102
        });
        // SAFETY: our own pipe ends.
        unsafe { libc::close(out[1]) };
        // SAFETY: out[0] is ours; File takes it over.
        let mut reader = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(out[0]) };
        let mut text = String::new();
        std::io::Read::read_to_string(&mut reader, &mut text).unwrap();
        assert_eq!((code, text.as_str()), (0, "done\n"));
    }

    #[test]
    fn the_cached_program_is_the_built_one() {
        let built = build().unwrap();
        let cached = program();
        assert_eq!(built.len(), cached.len());
        for (a, b) in built.iter().zip(cached) {
            assert_eq!((a.code, a.jt, a.jf, a.k), (b.code, b.jt, b.jf, b.k));
        }
    }
}
