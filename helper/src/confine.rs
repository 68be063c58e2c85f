//! What grove-helper gives up right after start-up: capabilities it never
//! uses (from its bounding set too, so nothing it starts — nft, tc, the
//! image unpacker, privileged containers' wshd — can regain them), and the
//! system calls no part of Grove needs (a seccomp filter).
//!
//! The filter is an allowlist for the helper's main process (the one that
//! reads groved's requests) and what it starts after start-up (the image
//! unpacker, nft, tc). Containers are not among those: seccomp filters pass
//! to every child, and a container's first process needs mount,
//! pivot_root and setns, so containers are started by the spawner, forked
//! before this filter (spawner.rs); wshd gives container processes their
//! own Docker-like filter.

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};
use std::collections::BTreeMap;

/// Capabilities the helper keeps (its own work, and the ceiling for what it
/// starts), each with why:
pub const KEEP: [(u32, &str); 20] = [
    (0, "CAP_CHOWN: container layers, sockets, image files"),
    (1, "CAP_DAC_OVERRIDE: the depot, cgroup files, image layers"),
    (2, "CAP_DAC_READ_SEARCH: reading image files of any mode"),
    (3, "CAP_FOWNER: modes and times of unpacked files"),
    (4, "CAP_FSETID: set-gid bits of unpacked files"),
    (5, "CAP_KILL: killing containers' processes"),
    (6, "CAP_SETGID: gid maps; wshd switching groups"),
    (7, "CAP_SETUID: uid maps; wshd switching users"),
    (
        8,
        "CAP_SETPCAP: dropping bounding capabilities (unpacker, wshd)",
    ),
    (
        9,
        "CAP_LINUX_IMMUTABLE: removing chattr +i files at destroy",
    ),
    (10, "CAP_NET_BIND_SERVICE: in containers' default set"),
    (12, "CAP_NET_ADMIN: links, addresses, routes, nftables, tc"),
    (13, "CAP_NET_RAW: in containers' default set"),
    (18, "CAP_SYS_CHROOT: in containers' default set"),
    (
        19,
        "CAP_SYS_PTRACE: /proc/<wshd>/ns of a container's mapped root",
    ),
    (
        21,
        "CAP_SYS_ADMIN: namespaces, mounts, pivot_root, btrfs ioctls",
    ),
    (
        24,
        "CAP_SYS_RESOURCE: wshd's 1 MiB output pipes in privileged containers",
    ),
    (27, "CAP_MKNOD: device nodes and whiteouts of image layers"),
    (29, "CAP_AUDIT_WRITE: in containers' default set"),
    (31, "CAP_SETFCAP: file capabilities of image files"),
];

/// The highest capability number this code knows (CAP_CHECKPOINT_RESTORE).
const LAST_CAP: u32 = 40;

/// One word of the calling thread's capability sets (linux/capability.h,
/// version 3): `capget` and `capset` take two, capabilities 0–31 and 32–63.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapData {
    pub effective: u32,
    pub permitted: u32,
    pub inheritable: u32,
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

fn cap_header() -> CapHeader {
    CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0, // the calling thread
    }
}

/// The calling thread's capability sets.
pub fn capget() -> Result<[CapData; 2], nix::errno::Errno> {
    let mut header = cap_header();
    let mut sets = [CapData::default(); 2];
    // SAFETY: capget writes two CapData entries into `sets`, which has room
    // for exactly two; the header is a live struct.
    nix::errno::Errno::result(unsafe {
        libc::syscall(libc::SYS_capget, &mut header, sets.as_mut_ptr())
    })?;
    Ok(sets)
}

/// Set the calling thread's capability sets.
pub fn capset(sets: &[CapData; 2]) -> Result<(), nix::errno::Errno> {
    let mut header = cap_header();
    // SAFETY: capset reads the header and two CapData entries, both live
    // for the call.
    nix::errno::Errno::result(unsafe {
        libc::syscall(libc::SYS_capset, &mut header, sets.as_ptr())
    })
    .map(drop)
}

/// Drop every capability not in KEEP from the bounding set, and from the
/// effective, permitted and inheritable sets. Capabilities the running
/// kernel does not know are skipped (EINVAL).
pub fn drop_capabilities() -> Result<(), String> {
    let keep = |cap: u32| KEEP.iter().any(|(c, _)| *c == cap);
    for cap in (0..=LAST_CAP).filter(|c| !keep(*c)) {
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            return Err(format!(
                "dropping capability {cap} from the bounding set: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    let mut mask = [0u32; 2];
    for (cap, _) in KEEP {
        mask[(cap / 32) as usize] |= 1 << (cap % 32);
    }
    let mut current = capget().map_err(|e| format!("capget: {e}"))?;
    for (i, d) in current.iter_mut().enumerate() {
        d.effective &= mask[i];
        d.permitted &= mask[i];
        d.inheritable = 0;
    }
    capset(&current).map_err(|e| format!("capset: {e}"))?;
    Ok(())
}

/// System calls that must never enter ALLOWED, with why (checked by the
/// tests; containers' own filter denies them too).
#[cfg(test)]
const DENIED: [(i64, &str); 27] = [
    (libc::SYS_kexec_load, "replaces the running kernel"),
    (libc::SYS_kexec_file_load, "replaces the running kernel"),
    (libc::SYS_init_module, "loads kernel code"),
    (libc::SYS_finit_module, "loads kernel code"),
    (libc::SYS_delete_module, "unloads kernel code"),
    (libc::SYS_reboot, "reboots the host"),
    (libc::SYS_swapon, "changes the host's swap"),
    (libc::SYS_swapoff, "changes the host's swap"),
    (libc::SYS_acct, "process accounting of the whole host"),
    (libc::SYS_bpf, "loads programs into the kernel"),
    (
        libc::SYS_perf_event_open,
        "observes the whole host; a frequent kernel attack surface",
    ),
    (libc::SYS_userfaultfd, "a common aid to kernel exploits"),
    (libc::SYS_keyctl, "the kernel keyring is not namespaced"),
    (libc::SYS_add_key, "the kernel keyring is not namespaced"),
    (
        libc::SYS_request_key,
        "the kernel keyring is not namespaced",
    ),
    (
        libc::SYS_open_by_handle_at,
        "opens files by handle, past any mount (shocker)",
    ),
    (
        libc::SYS_name_to_handle_at,
        "the other half of open_by_handle_at",
    ),
    (libc::SYS_iopl, "raw I/O port access"),
    (libc::SYS_ioperm, "raw I/O port access"),
    (libc::SYS_settimeofday, "the host's clock"),
    (libc::SYS_clock_settime, "the host's clock"),
    (libc::SYS_clock_adjtime, "the host's clock"),
    (libc::SYS_adjtimex, "the host's clock"),
    (libc::SYS_syslog, "the kernel log"),
    (libc::SYS_lookup_dcookie, "kernel profiling internals"),
    (libc::SYS_uselib, "obsolete loader entry"),
    (
        libc::SYS_quotactl,
        "filesystem quotas (btrfs qgroups use ioctls)",
    ),
];

/// What the helper's main process — and what it starts after start-up:
/// the image unpacker, nft and tc — may call; anything else fails with
/// EPERM. Measured with `strace -ff` over the whole integration suite (85
/// distinct calls), plus calls of the same families the suite did not
/// happen to reach (`linkat` for hard links in layers, `mremap`, …), and `restart_syscall`, which the kernel itself issues when a
/// stop (a debugger attaching, SIGSTOP/SIGCONT) interrupts a sleeping call, and
/// epoll_ctl/epoll_wait for the set of wshd pidfds, and quotactl_fd for
/// project quotas (its three commands only): 113 in all. What
/// is *not* here is the point: no mount, umount2, pivot_root, chroot,
/// unshare, open_tree/move_mount/mount_setattr, ptrace, process_vm_*,
/// setuid/setgid, kexec, module loading, bpf, perf_event_open, keyctl,
/// userfaultfd, open_by_handle_at (those that containers need are the
/// spawner's, see spawner.rs).
pub const ALLOWED: [(i64, &str); 113] = [
    // I/O on fds it holds
    (libc::SYS_read, "io"),
    (libc::SYS_write, "io"),
    (libc::SYS_pread64, "io"),
    (libc::SYS_pwrite64, "io"),
    (libc::SYS_readv, "io"),
    (libc::SYS_writev, "io"),
    (libc::SYS_lseek, "io"),
    (libc::SYS_close, "io"),
    (libc::SYS_close_range, "io"),
    (libc::SYS_dup, "io"),
    (libc::SYS_dup2, "io"),
    (libc::SYS_dup3, "io"),
    (libc::SYS_fcntl, "io"),
    (
        libc::SYS_ioctl,
        "btrfs subvolumes and qgroups, inode flags and project ids, FIONREAD",
    ),
    (libc::SYS_pipe2, "io"),
    (libc::SYS_poll, "the serve loop"),
    (libc::SYS_epoll_ctl, "the set of containers' wshd pidfds"),
    (libc::SYS_epoll_wait, "the set of containers' wshd pidfds"),
    (libc::SYS_ppoll, "io"),
    (libc::SYS_pselect6, "tc"),
    (libc::SYS_fsync, "records"),
    (libc::SYS_fdatasync, "records"),
    (libc::SYS_syncfs, "unpacked layers"),
    (libc::SYS_ftruncate, "io"),
    // files beneath its dirfds
    (libc::SYS_openat, "files"),
    (libc::SYS_openat2, "RESOLVE_NO_SYMLINKS opens"),
    (libc::SYS_newfstatat, "files"),
    (libc::SYS_fstat, "files"),
    (libc::SYS_statx, "files"),
    (libc::SYS_statfs, "files"),
    (libc::SYS_fstatfs, "btrfs detection"),
    (libc::SYS_getdents64, "directory walks"),
    (libc::SYS_mkdir, "files"),
    (libc::SYS_mkdirat, "files"),
    (libc::SYS_mknodat, "whiteouts and image devices"),
    (libc::SYS_symlinkat, "image symlinks"),
    (libc::SYS_linkat, "image hard links"),
    (libc::SYS_unlink, "files"),
    (libc::SYS_unlinkat, "files"),
    (libc::SYS_renameat, "records"),
    (libc::SYS_renameat2, "records"),
    (libc::SYS_readlink, "files"),
    (libc::SYS_readlinkat, "files"),
    (libc::SYS_access, "dynamic loader (nft, tc)"),
    (libc::SYS_faccessat, "files"),
    (libc::SYS_faccessat2, "files"),
    (libc::SYS_fchmod, "files"),
    (libc::SYS_fchmodat, "files"),
    (libc::SYS_fchown, "files"),
    (libc::SYS_fchownat, "files"),
    (libc::SYS_utimensat, "image mtimes"),
    (libc::SYS_fsetxattr, "image xattrs, overlay opaque"),
    (
        libc::SYS_quotactl_fd,
        "project quotas on the depot: Q_GETQUOTA, Q_SETQUOTA, Q_XGETQSTATV only (checked)",
    ),
    (libc::SYS_umask, "socket modes"),
    (libc::SYS_getcwd, "std"),
    (libc::SYS_memfd_create, "the sealed wshd"),
    // memory
    (libc::SYS_brk, "memory"),
    (libc::SYS_mmap, "memory"),
    (libc::SYS_munmap, "memory"),
    (libc::SYS_mremap, "memory"),
    (libc::SYS_mprotect, "memory"),
    (libc::SYS_madvise, "memory"),
    // sockets: its own, netlink for links and (in nft and tc) rules
    (libc::SYS_socket, "AF_UNIX and AF_NETLINK only (checked)"),
    (libc::SYS_socketpair, "io"),
    (libc::SYS_bind, "netlink, its socket"),
    (libc::SYS_listen, "its socket"),
    (libc::SYS_accept4, "groved's connections"),
    (libc::SYS_connect, "netlink"),
    (libc::SYS_getsockname, "netlink"),
    (libc::SYS_getsockopt, "SO_PEERCRED"),
    (libc::SYS_setsockopt, "netlink, timeouts"),
    (libc::SYS_sendto, "netlink"),
    (libc::SYS_recvfrom, "netlink"),
    (libc::SYS_sendmsg, "SCM_RIGHTS"),
    (libc::SYS_recvmsg, "SCM_RIGHTS"),
    (libc::SYS_shutdown, "refused peers"),
    // processes it starts (unpacker, nft, tc) and its containers' wshd
    (
        libc::SYS_clone,
        "fork and vfork: no namespace flags (checked)",
    ),
    (libc::SYS_execve, "nft and tc by absolute path"),
    (libc::SYS_wait4, "its children"),
    (libc::SYS_waitid, "its children"),
    (libc::SYS_kill, "its unpacker; cgroup kill"),
    (libc::SYS_pidfd_open, "containers' wshd"),
    (libc::SYS_pidfd_send_signal, "destroy"),
    (
        libc::SYS_setns,
        "a netlink socket in a container's netns: CLONE_NEWNET only (checked)",
    ),
    (libc::SYS_capget, "the unpacker's capabilities"),
    (libc::SYS_capset, "the unpacker's capabilities"),
    (
        libc::SYS_prctl,
        "bounding set, no_new_privs, names: those options only (checked)",
    ),
    (libc::SYS_prlimit64, "dynamic loader"),
    // signals, time, identity, exit
    (libc::SYS_rt_sigaction, "signals"),
    (libc::SYS_rt_sigprocmask, "signals"),
    (libc::SYS_rt_sigreturn, "signals"),
    (libc::SYS_restart_syscall, "a call resumed after a stop"),
    (libc::SYS_sigaltstack, "std"),
    (libc::SYS_signalfd4, "the serve loop"),
    (libc::SYS_eventfd2, "OOM watches"),
    (libc::SYS_clock_gettime, "time"),
    (libc::SYS_clock_nanosleep, "waits"),
    (libc::SYS_nanosleep, "waits"),
    (libc::SYS_getrandom, "std"),
    (libc::SYS_getpid, "ids"),
    (libc::SYS_gettid, "ids"),
    (libc::SYS_getuid, "ids"),
    (libc::SYS_geteuid, "ids"),
    (libc::SYS_sysinfo, "host RAM for limits"),
    (libc::SYS_futex, "std"),
    (libc::SYS_sched_getaffinity, "std"),
    (libc::SYS_set_tid_address, "loader"),
    (libc::SYS_set_robust_list, "loader"),
    (libc::SYS_rseq, "loader"),
    (libc::SYS_arch_prctl, "loader"),
    (libc::SYS_exit, "exit"),
    (libc::SYS_exit_group, "exit"),
    (
        libc::SYS_seccomp,
        "installing the second filter; a filter only restricts",
    ),
];

/// The compiled filters, in the order they are installed: the allowlist
/// (ALLOWED, with its argument checks, runs; anything else EPERM; another
/// architecture's calls are refused), then one that answers ENOSYS to
/// clone3, whose flags cannot be inspected, so that libc falls back to
/// clone (of two errno answers the kernel gives the later filter's).
pub fn programs() -> Result<Vec<BpfProgram>, String> {
    use seccompiler::{SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond};
    let cond = |arg: u8, op: Op, value: u64| {
        Cond::new(arg, Len::Dword, op, value).map_err(|e| format!("seccomp condition: {e}"))
    };
    let one_of = |arg: u8, values: &[u64]| -> Result<Vec<SeccompRule>, String> {
        values
            .iter()
            .map(|v| SeccompRule::new(vec![cond(arg, Op::Eq, *v)?]).map_err(|e| e.to_string()))
            .collect()
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (nr, _) in ALLOWED {
        rules.insert(nr, Vec::new());
    }
    rules.insert(
        libc::SYS_socket,
        one_of(0, &[libc::AF_UNIX as u64, libc::AF_NETLINK as u64])?,
    );
    rules.insert(libc::SYS_setns, one_of(1, &[libc::CLONE_NEWNET as u64])?);
    rules.insert(
        libc::SYS_quotactl_fd,
        one_of(1, &crate::disk::project::COMMANDS.map(u64::from))?,
    );
    rules.insert(
        libc::SYS_prctl,
        one_of(
            0,
            &[
                libc::PR_CAPBSET_READ as u64,
                libc::PR_CAPBSET_DROP as u64,
                libc::PR_CAP_AMBIENT as u64,
                libc::PR_SET_NO_NEW_PRIVS as u64,
                libc::PR_GET_NO_NEW_PRIVS as u64,
                libc::PR_SET_NAME as u64,
                libc::PR_GET_NAME as u64,
                libc::PR_GET_DUMPABLE as u64,
                libc::PR_SET_DUMPABLE as u64,
            ],
        )?,
    );
    rules.insert(
        libc::SYS_clone,
        vec![
            SeccompRule::new(vec![cond(0, Op::MaskedEq(CLONE_NAMESPACES), 0)?])
                .map_err(|e| e.to_string())?,
        ],
    );
    let allow = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    let allow: BpfProgram = allow
        .try_into()
        .map_err(|e| format!("compiling the seccomp filter: {e}"))?;
    let clone3: BpfProgram = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?
    .try_into()
    .map_err(|e| format!("compiling the seccomp filter: {e}"))?;
    Ok(vec![allow, clone3])
}

/// The namespace flags of clone(2).
const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u64;

/// Install the filter on the helper (single-threaded, so on all of it).
/// seccompiler sets no_new_privs first; it passes to everything the helper
/// starts, which is intended: container processes get it from wshd anyway,
/// and nothing the helper runs relies on set-uid bits or file capabilities.
pub fn install_seccomp() -> Result<(), String> {
    for program in programs()? {
        seccompiler::apply_filter(&program)
            .map_err(|e| format!("installing the seccomp filter: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_capabilities_are_distinct_and_known() {
        let mut caps: Vec<u32> = KEEP.iter().map(|(c, _)| *c).collect();
        caps.sort();
        caps.dedup();
        assert_eq!(caps.len(), KEEP.len());
        assert!(caps.iter().all(|c| *c <= LAST_CAP));
        // Never kept: module loading, raw I/O, the clock, BPF, perf.
        for banned in [16, 17, 25, 38, 39] {
            assert!(!caps.contains(&banned), "{banned}");
        }
    }

    /// The kernel's verdict over the filters (installed in order): the
    /// most restrictive action; of two errno answers, the later filter's.
    fn verdict(programs: &[BpfProgram], nr: i64, args: [u64; 6]) -> u32 {
        let mut best: Option<u32> = None;
        for p in programs {
            let insns: Vec<grove_schema::bpf::Insn> = p
                .iter()
                .map(|i| grove_schema::bpf::Insn {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect();
            let v = grove_schema::bpf::seccomp_verdict(&insns, nr, args);
            let rank = |x: u32| (x & 0xffff_0000) as i32; // lower = stricter
            best = Some(match best {
                Some(b) if rank(b) < rank(v) => b,
                _ => v,
            });
        }
        best.unwrap()
    }

    #[test]
    fn the_compiled_filters_are_the_table() {
        let programs = programs().unwrap();
        let eperm = grove_schema::bpf::errno(libc::EPERM as u32);
        let allow = grove_schema::bpf::ALLOW;
        // Everything listed without an argument check runs.
        let checked = [
            libc::SYS_socket,
            libc::SYS_setns,
            libc::SYS_prctl,
            libc::SYS_clone,
            libc::SYS_quotactl_fd,
        ];
        for (nr, why) in ALLOWED.iter().filter(|(nr, _)| !checked.contains(nr)) {
            assert_eq!(verdict(&programs, *nr, [0; 6]), allow, "{nr} ({why})");
        }
        // Nothing else does.
        let listed: Vec<i64> = ALLOWED.iter().map(|(nr, _)| *nr).collect();
        for nr in 0..500 {
            if !listed.contains(&nr) && nr != libc::SYS_clone3 {
                assert_eq!(verdict(&programs, nr, [0; 6]), eperm, "{nr}");
            }
        }
        for (nr, why) in DENIED {
            assert_eq!(verdict(&programs, nr, [0; 6]), eperm, "{nr} ({why})");
        }
        for nr in [
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pivot_root,
            libc::SYS_unshare,
            libc::SYS_chroot,
            libc::SYS_ptrace,
            libc::SYS_process_vm_readv,
            libc::SYS_setuid,
            libc::SYS_open_tree,
            libc::SYS_move_mount,
            libc::SYS_mount_setattr,
        ] {
            assert_eq!(verdict(&programs, nr, [0; 6]), eperm, "{nr}");
        }
        // The argument checks.
        let sock =
            |family: i32| verdict(&programs, libc::SYS_socket, [family as u64, 0, 0, 0, 0, 0]);
        assert_eq!(sock(libc::AF_UNIX), allow);
        assert_eq!(sock(libc::AF_NETLINK), allow);
        assert_eq!(sock(libc::AF_INET), eperm);
        assert_eq!(sock(libc::AF_PACKET), eperm);
        let setns = |t: i32| verdict(&programs, libc::SYS_setns, [3, t as u64, 0, 0, 0, 0]);
        assert_eq!(setns(libc::CLONE_NEWNET), allow);
        assert_eq!(setns(libc::CLONE_NEWUSER), eperm);
        assert_eq!(setns(libc::CLONE_NEWNS), eperm);
        assert_eq!(setns(0), eperm);
        let clone = |f: i32| verdict(&programs, libc::SYS_clone, [f as u64, 0, 0, 0, 0, 0]);
        assert_eq!(clone(libc::SIGCHLD), allow);
        assert_eq!(
            clone(libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD),
            allow
        );
        for ns in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ] {
            assert_eq!(clone(ns | libc::SIGCHLD), eperm, "{ns:#x}");
        }
        assert_eq!(
            verdict(&programs, libc::SYS_clone3, [0; 6]),
            grove_schema::bpf::errno(libc::ENOSYS as u32)
        );
        let quota = |cmd: u32| {
            verdict(
                &programs,
                libc::SYS_quotactl_fd,
                [3, cmd as u64, 0, 0, 0, 0],
            )
        };
        for cmd in crate::disk::project::COMMANDS {
            assert_eq!(quota(cmd), allow, "{cmd:#x}");
        }
        // Q_QUOTAON and Q_QUOTAOFF (of project quotas), Q_SETQUOTA of user quotas.
        for cmd in [0x8000_0202, 0x8000_0302, 0x8000_0800] {
            assert_eq!(quota(cmd), eperm, "{cmd:#x}");
        }
        let prctl = |o: i32| verdict(&programs, libc::SYS_prctl, [o as u64, 0, 0, 0, 0, 0]);
        assert_eq!(prctl(libc::PR_CAPBSET_DROP), allow);
        assert_eq!(prctl(libc::PR_SET_MM), eperm);
        assert_eq!(prctl(libc::PR_SET_SECUREBITS), eperm);
    }
}
