//! The seccomp filter every process wshd starts for a client runs under,
//! modelled on Docker's default profile (moby's `profiles/seccomp/default.json`)
//! for a container without CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE,
//! CAP_SYS_TIME, … (see `confine::KEEP`).
//!
//! Docker's profile is an allowlist (unknown system calls fail with EPERM);
//! this one is the same decision written the other way round: every system
//! call is allowed except those in `DENIED`, which are the x86_64 system
//! calls Docker's profile does not allow such a container, plus io_uring
//! (see its entry). Allowing by default keeps system calls newer than this
//! table working (libcs fall back only on ENOSYS, and treat EPERM from an
//! unknown call as a real refusal), at the price that a new dangerous call
//! must be added here.
//!
//! Only x86_64 is handled: a system call made through another ABI (i386's
//! `int 0x80`) kills the process, and the x32 ABI (numbers with
//! `__X32_SYSCALL_BIT`, whose audit arch is also x86_64, so a filter that
//! compares numbers would not see `mount` in `0x40000000 | 165`) answers
//! ENOSYS, as on kernels built without x32.
//!
//! The program is generated here from the table: a prelude (arch, x32),
//! then a binary search over the denied numbers, each leaf comparing at
//! most four. A flat chain of comparisons (what seccompiler emits) cost
//! each spawned process ~0.4 ms at install, when the kernel runs the
//! filter for every system call number to find the ones it always
//! allows; the tree cost a tenth of that.

use std::sync::OnceLock;

/// When a denial applies, judged on the system call's first argument (its
/// low 32 bits: every argument checked here is an int or a flag word whose
/// upper half the kernel ignores).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// Any of these bits is set.
    AnyBitOf(&'static [u32]),
    /// It equals this value.
    Is(u32),
    /// It is none of these values.
    NoneOf(&'static [u32]),
}

/// One denied system call.
#[derive(Debug, Clone, Copy)]
pub struct Denial {
    pub name: &'static str,
    pub nr: i64,
    pub when: When,
    /// The error it fails with: EPERM, or ENOSYS where a caller should fall
    /// back to an older call.
    pub errno: i32,
    pub reason: &'static str,
}

// Numbers the libc crate does not name on x86_64 (removed from the kernel;
// still reserved, so still worth refusing).
const SYS_CREATE_MODULE: i64 = 174;
const SYS_GET_KERNEL_SYMS: i64 = 177;
const SYS_QUERY_MODULE: i64 = 178;

/// The x32 ABI's marker in a system call number.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// `AUDIT_ARCH_X86_64` (linux/audit.h).
pub const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

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

/// AF_VSOCK.
const AF_VSOCK: u32 = 40;

macro_rules! deny {
    ($name:ident, $reason:expr) => {
        deny!($name, When::Always, $reason)
    };
    ($name:ident, $when:expr, $reason:expr) => {
        Denial {
            name: stringify!($name),
            nr: paste_nr!($name),
            when: $when,
            errno: libc::EPERM,
            reason: $reason,
        }
    };
}

macro_rules! paste_nr {
    (create_module) => {
        SYS_CREATE_MODULE
    };
    (get_kernel_syms) => {
        SYS_GET_KERNEL_SYMS
    };
    (query_module) => {
        SYS_QUERY_MODULE
    };
    ($name:ident) => {
        sys::$name
    };
}

/// `libc::SYS_*` under their plain names, for `deny!`.
#[allow(non_upper_case_globals)]
mod sys {
    pub use libc::{
        SYS__sysctl as _sysctl, SYS_acct as acct, SYS_add_key as add_key, SYS_adjtimex as adjtimex,
        SYS_afs_syscall as afs_syscall, SYS_bpf as bpf, SYS_clock_adjtime as clock_adjtime,
        SYS_clock_settime as clock_settime, SYS_clone as clone, SYS_clone3 as clone3,
        SYS_delete_module as delete_module, SYS_fanotify_init as fanotify_init,
        SYS_finit_module as finit_module, SYS_fsconfig as fsconfig, SYS_fsmount as fsmount,
        SYS_fsopen as fsopen, SYS_fspick as fspick, SYS_get_mempolicy as get_mempolicy,
        SYS_getpmsg as getpmsg, SYS_init_module as init_module,
        SYS_io_uring_enter as io_uring_enter, SYS_io_uring_register as io_uring_register,
        SYS_io_uring_setup as io_uring_setup, SYS_ioperm as ioperm, SYS_iopl as iopl,
        SYS_kcmp as kcmp, SYS_kexec_file_load as kexec_file_load, SYS_kexec_load as kexec_load,
        SYS_keyctl as keyctl, SYS_lookup_dcookie as lookup_dcookie, SYS_mbind as mbind,
        SYS_migrate_pages as migrate_pages, SYS_mount as mount, SYS_mount_setattr as mount_setattr,
        SYS_move_mount as move_mount, SYS_move_pages as move_pages,
        SYS_name_to_handle_at as name_to_handle_at, SYS_nfsservctl as nfsservctl,
        SYS_open_by_handle_at as open_by_handle_at, SYS_open_tree as open_tree,
        SYS_perf_event_open as perf_event_open, SYS_personality as personality,
        SYS_pidfd_getfd as pidfd_getfd, SYS_pivot_root as pivot_root,
        SYS_process_madvise as process_madvise, SYS_process_vm_readv as process_vm_readv,
        SYS_process_vm_writev as process_vm_writev, SYS_ptrace as ptrace, SYS_putpmsg as putpmsg,
        SYS_quotactl as quotactl, SYS_quotactl_fd as quotactl_fd, SYS_reboot as reboot,
        SYS_request_key as request_key, SYS_security as security,
        SYS_set_mempolicy as set_mempolicy, SYS_set_mempolicy_home_node as set_mempolicy_home_node,
        SYS_setdomainname as setdomainname, SYS_sethostname as sethostname, SYS_setns as setns,
        SYS_settimeofday as settimeofday, SYS_socket as socket, SYS_swapoff as swapoff,
        SYS_swapon as swapon, SYS_sysfs as sysfs, SYS_syslog as syslog, SYS_tuxcall as tuxcall,
        SYS_umount2 as umount2, SYS_unshare as unshare, SYS_uselib as uselib,
        SYS_userfaultfd as userfaultfd, SYS_ustat as ustat, SYS_vhangup as vhangup,
        SYS_vserver as vserver,
    };
}

/// Every system call the filter refuses, and why. Unless an entry says
/// otherwise, Docker's default profile refuses it too (for a container
/// without the capability named).
pub const DENIED: &[Denial] = &[
    // Mounts and the filesystem tree (CAP_SYS_ADMIN in Docker).
    deny!(mount, "mounts could cover or expose the container's files"),
    deny!(umount2, "unmounting could uncover what a mount hides (/proc, /dev)"),
    deny!(pivot_root, "changes the root of the mount namespace"),
    deny!(move_mount, "new mount API: attaches mounts"),
    deny!(open_tree, "new mount API: clones mount trees"),
    deny!(fsopen, "new mount API: creates filesystem contexts"),
    deny!(fsconfig, "new mount API: configures filesystem contexts"),
    deny!(fsmount, "new mount API: creates mounts"),
    deny!(fspick, "new mount API: reconfigures existing mounts"),
    deny!(mount_setattr, "new mount API: changes mount flags (e.g. read-only)"),
    deny!(
        open_by_handle_at,
        "opens any file by handle, bypassing the path walk (the shocker escape; CAP_DAC_READ_SEARCH)"
    ),
    deny!(
        name_to_handle_at,
        "makes the handles open_by_handle_at takes (stricter than Docker, which allows it)"
    ),
    deny!(quotactl, "filesystem quota administration"),
    deny!(quotactl_fd, "filesystem quota administration"),
    deny!(nfsservctl, "kernel NFS server control (removed in Linux 3.1)"),
    deny!(sysfs, "obsolete filesystem-type query"),
    deny!(ustat, "obsolete filesystem statistics by device number"),
    deny!(uselib, "obsolete shared-library loader (a.out)"),
    // Namespaces (CAP_SYS_ADMIN in Docker).
    deny!(
        unshare,
        "new namespaces, a user namespace above all, grant capabilities over new kernel interfaces"
    ),
    deny!(setns, "joins other namespaces"),
    deny!(
        clone,
        When::AnyBitOf(CLONE_NAMESPACES),
        "clone with a CLONE_NEW* flag creates namespaces, as unshare does"
    ),
    Denial {
        name: "clone3",
        nr: sys::clone3,
        when: When::Always,
        errno: libc::ENOSYS,
        reason: "its flags are in memory seccomp cannot read; ENOSYS makes libcs fall back to clone",
    },
    // Kernel code and the machine.
    deny!(init_module, "loads kernel modules (CAP_SYS_MODULE)"),
    deny!(finit_module, "loads kernel modules (CAP_SYS_MODULE)"),
    deny!(delete_module, "unloads kernel modules (CAP_SYS_MODULE)"),
    deny!(create_module, "obsolete module call (CAP_SYS_MODULE)"),
    deny!(get_kernel_syms, "obsolete module call: kernel symbols"),
    deny!(query_module, "obsolete module call: kernel symbols"),
    deny!(kexec_load, "replaces the running kernel (CAP_SYS_BOOT)"),
    deny!(kexec_file_load, "replaces the running kernel (CAP_SYS_BOOT)"),
    deny!(reboot, "reboots the host or its PID namespace (CAP_SYS_BOOT)"),
    deny!(bpf, "eBPF programs and maps: kernel attack surface (CAP_SYS_ADMIN / CAP_BPF)"),
    deny!(
        perf_event_open,
        "performance monitoring: leaks kernel and host information (CAP_PERFMON)"
    ),
    deny!(
        lookup_dcookie,
        "profiling (oprofile) lookups of kernel paths (CAP_SYS_ADMIN)"
    ),
    deny!(
        userfaultfd,
        "stalls kernel page faults at will, a staple of kernel race exploits"
    ),
    deny!(
        io_uring_setup,
        "io_uring: a large kernel attack surface (stricter than Docker; containerd refuses it)"
    ),
    deny!(io_uring_enter, "io_uring (see io_uring_setup)"),
    deny!(io_uring_register, "io_uring (see io_uring_setup)"),
    deny!(swapon, "host swap configuration (CAP_SYS_ADMIN)"),
    deny!(swapoff, "host swap configuration (CAP_SYS_ADMIN)"),
    deny!(acct, "process accounting to a file, host-wide (CAP_SYS_PACCT)"),
    deny!(syslog, "the kernel log: host information, kernel addresses (CAP_SYSLOG)"),
    deny!(_sysctl, "obsolete binary sysctl interface"),
    deny!(iopl, "raw I/O port access (CAP_SYS_RAWIO)"),
    deny!(ioperm, "raw I/O port access (CAP_SYS_RAWIO)"),
    // Clocks and host identity (not namespaced).
    deny!(settimeofday, "sets the host's clock (CAP_SYS_TIME)"),
    deny!(clock_settime, "sets the host's clock (CAP_SYS_TIME)"),
    deny!(
        adjtimex,
        "tunes the host's clock (stricter than Docker, which allows the read-only use)"
    ),
    deny!(
        clock_adjtime,
        "tunes the host's clock (stricter than Docker, which allows the read-only use)"
    ),
    deny!(sethostname, "the container's hostname is set by Grove (CAP_SYS_ADMIN)"),
    deny!(setdomainname, "the container's domain name is set by Grove (CAP_SYS_ADMIN)"),
    deny!(vhangup, "hangs up the terminal (CAP_SYS_TTY_CONFIG)"),
    // Keys (not namespaced).
    deny!(add_key, "the kernel keyring is not namespaced"),
    deny!(request_key, "the kernel keyring is not namespaced"),
    deny!(keyctl, "the kernel keyring is not namespaced"),
    // Other processes (CAP_SYS_PTRACE in Docker).
    deny!(
        ptrace,
        "tracing other processes (stricter than Docker, which allows it on Linux >= 4.8)"
    ),
    deny!(process_vm_readv, "reads another process's memory, as ptrace"),
    deny!(process_vm_writev, "writes another process's memory, as ptrace"),
    deny!(kcmp, "compares kernel objects of other processes, as ptrace"),
    deny!(pidfd_getfd, "takes file descriptors from other processes, as ptrace"),
    deny!(process_madvise, "advises on another process's memory, as ptrace"),
    // Memory placement (CAP_SYS_NICE in Docker).
    deny!(mbind, "NUMA memory policy (CAP_SYS_NICE)"),
    deny!(set_mempolicy, "NUMA memory policy (CAP_SYS_NICE)"),
    deny!(get_mempolicy, "NUMA memory policy (CAP_SYS_NICE)"),
    deny!(set_mempolicy_home_node, "NUMA memory policy (CAP_SYS_NICE)"),
    deny!(migrate_pages, "moves other processes' pages between NUMA nodes"),
    deny!(move_pages, "moves other processes' pages between NUMA nodes"),
    // Notification of every file access (CAP_SYS_ADMIN).
    deny!(fanotify_init, "filesystem-wide access notification and permission events"),
    // Arguments Docker checks.
    deny!(
        personality,
        When::NoneOf(SAFE_PERSONAS),
        "other personas change kernel behaviour (e.g. ADDR_NO_RANDOMIZE turns ASLR off)"
    ),
    deny!(
        socket,
        When::Is(AF_VSOCK),
        "AF_VSOCK reaches the hypervisor and the host, past the network namespace"
    ),
    // Reserved numbers that Linux never implemented.
    deny!(getpmsg, "not implemented by Linux"),
    deny!(putpmsg, "not implemented by Linux"),
    deny!(afs_syscall, "not implemented by Linux"),
    deny!(tuxcall, "not implemented by Linux"),
    deny!(security, "not implemented by Linux"),
    deny!(vserver, "not implemented by Linux"),
];

// Classic BPF (linux/bpf_common.h, linux/filter.h).
/// BPF_LD | BPF_W | BPF_ABS.
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JGE_K: u16 = 0x05 | 0x30;
const BPF_JSET_K: u16 = 0x05 | 0x40;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`: the number, the arch, and the low
/// half of the first argument (little-endian).
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const DATA_ARG0_LOW: u32 = 16;
/// At most this many numbers are compared one after another at a leaf of
/// the search tree.
const LEAF: usize = 4;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

/// A jump offset, or an error if the program outgrew 8-bit jumps.
fn offset(n: usize) -> Result<u8, String> {
    u8::try_from(n).map_err(|_| format!("a jump of {n} instructions does not fit classic BPF"))
}

/// What a matched number runs: its verdict, judged on the first argument
/// where the entry says so. Always ends in a return.
fn verdict(d: &Denial) -> Result<Vec<libc::sock_filter>, String> {
    let deny = stmt(BPF_RET_K, errno(d.errno));
    let allow = stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW);
    let arg = stmt(BPF_LD_W_ABS, DATA_ARG0_LOW);
    Ok(match d.when {
        When::Always => vec![deny],
        When::AnyBitOf(bits) => {
            let mask = bits.iter().fold(0, |m, b| m | b);
            vec![arg, jump(BPF_JSET_K, mask, 0, 1), deny, allow]
        }
        When::Is(v) => vec![arg, jump(BPF_JEQ_K, v, 0, 1), deny, allow],
        When::NoneOf(values) => {
            let mut code = vec![arg];
            for (i, v) in values.iter().enumerate() {
                // Past the remaining comparisons and the deny: to allow.
                code.push(jump(BPF_JEQ_K, *v, offset(values.len() - i)?, 0));
            }
            code.extend([deny, allow]);
            code
        }
    })
}

/// A binary search over `entries` (sorted by number; the number in A):
/// O(log n) comparisons per system call, for the kernel at every call and
/// when it works out, at install time, which calls the filter always
/// allows (a flat chain made that ~0.4 ms per spawned process).
fn search(entries: &[&Denial]) -> Result<Vec<libc::sock_filter>, String> {
    if entries.len() <= LEAF {
        let mut code = Vec::new();
        for d in entries {
            let body = verdict(d)?;
            let nr = u32::try_from(d.nr).map_err(|_| format!("{}: bad number", d.name))?;
            code.push(jump(BPF_JEQ_K, nr, 0, offset(body.len())?));
            code.extend(body);
        }
        code.push(stmt(BPF_RET_K, libc::SECCOMP_RET_ALLOW));
        return Ok(code);
    }
    let (low, high) = entries.split_at(entries.len() / 2);
    let left = search(low)?;
    let right = search(high)?;
    let pivot = u32::try_from(high[0].nr).map_err(|_| format!("{}: bad number", high[0].name))?;
    let mut code = vec![jump(BPF_JGE_K, pivot, offset(left.len())?, 0)];
    code.extend(left);
    code.extend(right);
    Ok(code)
}

/// Compiles `DENIED` into one BPF program: wrong arch → kill; x32 →
/// ENOSYS; then a binary search over the table's numbers.
pub fn build() -> Result<Vec<libc::sock_filter>, String> {
    let mut program = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JEQ_K, AUDIT_ARCH_X86_64, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, DATA_NR),
        jump(BPF_JGE_K, X32_SYSCALL_BIT, 0, 1),
        stmt(BPF_RET_K, errno(libc::ENOSYS)),
    ];
    let mut entries: Vec<&Denial> = DENIED.iter().collect();
    entries.sort_by_key(|d| d.nr);
    for pair in entries.windows(2) {
        if pair[0].nr == pair[1].nr {
            return Err(format!("{} is listed twice", pair[1].name));
        }
    }
    for d in &entries {
        if d.errno != libc::EPERM && !(d.errno == libc::ENOSYS && d.when == When::Always) {
            return Err(format!(
                "{}: errno {} with {:?} is not supported",
                d.name, d.errno, d.when
            ));
        }
    }
    program.extend(search(&entries)?);
    if program.len() > libc::BPF_MAXINSNS as usize {
        return Err(format!(
            "the seccomp program has {} instructions, more than {}",
            program.len(),
            libc::BPF_MAXINSNS
        ));
    }
    Ok(program)
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

#[cfg(test)]
pub mod tests {
    use super::*;

    /// `struct seccomp_data`.
    pub struct Data {
        pub nr: i32,
        pub arch: u32,
        pub args: [u64; 6],
    }

    impl Data {
        pub fn call(nr: i64, arg0: u64) -> Data {
            Data {
                nr: nr as i32,
                arch: AUDIT_ARCH_X86_64,
                args: [arg0, 0, 0, 0, 0, 0],
            }
        }
    }

    /// Runs the program as the kernel's seccomp would (grove_schema's
    /// interpreter; an instruction outside seccomp's subset fails closed).
    pub fn run(program: &[libc::sock_filter], data: &Data) -> u32 {
        let insns: Vec<grove_schema::bpf::Insn> = program
            .iter()
            .map(|i| grove_schema::bpf::Insn {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        grove_schema::bpf::run(&insns, data.arch, data.nr as u32, data.args)
    }

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;

    fn eperm() -> u32 {
        errno(libc::EPERM)
    }

    fn enosys() -> u32 {
        errno(libc::ENOSYS)
    }

    #[test]
    fn every_unconditional_entry_is_denied_with_its_errno() {
        let p = build().unwrap();
        for d in DENIED.iter().filter(|d| d.when == When::Always) {
            for arg0 in [0, 1, u64::MAX] {
                assert_eq!(
                    run(&p, &Data::call(d.nr, arg0)),
                    errno(d.errno),
                    "{} ({}) with arg0 {arg0:#x}",
                    d.name,
                    d.nr
                );
            }
        }
    }

    #[test]
    fn the_table_is_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for d in DENIED {
            assert!(seen.insert(d.nr), "{} twice", d.name);
            assert!(!d.reason.is_empty(), "{} has a reason", d.name);
            assert!(d.nr >= 0 && d.nr < 1024, "{}", d.name);
        }
        // The numbers are x86_64's.
        assert_eq!(seen.len(), DENIED.len());
        let nr = |name: &str| DENIED.iter().find(|d| d.name == name).unwrap().nr;
        assert_eq!(nr("mount"), 165);
        assert_eq!(nr("clone3"), 435);
        assert_eq!(nr("create_module"), 174);
        assert_eq!(nr("query_module"), 178);
        assert!(
            !seen.contains(&libc::SYS_chroot),
            "chroot stays (CAP_SYS_CHROOT)"
        );
    }

    #[test]
    fn nothing_outside_the_table_is_denied() {
        let p = build().unwrap();
        for nr in 0..1024i64 {
            if DENIED.iter().any(|d| d.nr == nr) {
                continue;
            }
            assert_eq!(run(&p, &Data::call(nr, 0)), ALLOW, "syscall {nr}");
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_chroot,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_capset,
            libc::SYS_prctl,
            libc::SYS_seccomp,
            libc::SYS_setuid,
            libc::SYS_chown,
            libc::SYS_mknodat,
            libc::SYS_exit_group,
        ] {
            assert_eq!(run(&p, &Data::call(nr, 0)), ALLOW, "syscall {nr}");
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
        assert_eq!(
            run(&p, &Data::call(libc::SYS_clone, 0x7E02_0000 | sigchld)),
            eperm()
        );
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
    fn personality_and_socket_arguments() {
        let p = build().unwrap();
        for &v in SAFE_PERSONAS {
            assert_eq!(
                run(&p, &Data::call(libc::SYS_personality, v.into())),
                ALLOW,
                "personality({v:#x})"
            );
        }
        for v in [0x0040000u64, 0x0400000, 0x0008_0000 | 0x8, 1] {
            assert_eq!(
                run(&p, &Data::call(libc::SYS_personality, v)),
                eperm(),
                "personality({v:#x})"
            );
        }
        assert_eq!(
            run(&p, &Data::call(libc::SYS_socket, AF_VSOCK.into())),
            eperm()
        );
        for domain in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ] {
            assert_eq!(
                run(&p, &Data::call(libc::SYS_socket, domain as u64)),
                ALLOW,
                "socket({domain})"
            );
        }
    }

    #[test]
    fn other_abis_are_refused() {
        let p = build().unwrap();
        // x32: the same audit arch, numbers with bit 30.
        for nr in [libc::SYS_mount, libc::SYS_read, libc::SYS_unshare] {
            let x32 = nr | i64::from(X32_SYSCALL_BIT);
            assert_eq!(run(&p, &Data::call(x32, 0)), enosys(), "x32 {nr}");
        }
        // i386 (int 0x80): killed.
        let mut d = Data::call(libc::SYS_read, 0);
        d.arch = 3 | 0x4000_0000; // AUDIT_ARCH_I386
        assert_eq!(run(&p, &d), libc::SECCOMP_RET_KILL_PROCESS);
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
