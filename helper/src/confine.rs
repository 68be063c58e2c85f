//! What grove-helper gives up right after start-up: capabilities it never
//! uses (from its bounding set too, so nothing it starts — nft, tc, the
//! image unpacker, privileged containers' wshd — can regain them), and the
//! system calls no part of Grove needs (a seccomp filter).
//!
//! Why a deny list and not an allowlist: seccomp filters are inherited by
//! every child and cannot be removed, and the helper's children include
//! every container's PID 1. A helper allowlist would be a ceiling on what
//! any container may do; so the helper's own filter denies only what
//! nothing in Grove needs, and wshd adds the containers' (much longer)
//! Docker-like filter on top of it for their processes. An allowlist for
//! the helper alone needs container spawning moved into a process forked
//! before the filter (see SECURITY.md, "not yet").

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
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut current = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    let mut header = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    // SAFETY: capget writes two Data entries into `current`, which has room
    // for exactly two; the header is a live struct.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, current.as_mut_ptr()) } != 0 {
        return Err(format!("capget: {}", std::io::Error::last_os_error()));
    }
    for (i, d) in current.iter_mut().enumerate() {
        d.effective &= mask[i];
        d.permitted &= mask[i];
        d.inheritable = 0;
    }
    // SAFETY: capset reads the header and two Data entries.
    if unsafe { libc::syscall(libc::SYS_capset, &mut header, current.as_ptr()) } != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// System calls nothing in Grove uses — not the helper, not its tools, and
/// not containers (whose own filter denies them too) — with why each goes.
pub const DENIED: [(i64, &str); 27] = [
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

/// The compiled deny-list program: EPERM for DENIED, everything else
/// allowed; system calls of another architecture are refused too.
pub fn program() -> Result<BpfProgram, String> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(nr, _)| (*nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e| format!("compiling the seccomp filter: {e}"))
}

/// Install the filter on the helper (single-threaded, so on all of it).
/// seccompiler sets no_new_privs first; it passes to everything the helper
/// starts, which is intended: container processes get it from wshd anyway,
/// and nothing the helper runs relies on set-uid bits or file capabilities.
pub fn install_seccomp() -> Result<(), String> {
    let program = program()?;
    seccompiler::apply_filter(&program).map_err(|e| format!("installing the seccomp filter: {e}"))
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

    #[test]
    fn the_compiled_filter_denies_exactly_the_table() {
        let program: Vec<grove_schema::bpf::Insn> = program()
            .unwrap()
            .iter()
            .map(|i| grove_schema::bpf::Insn {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect();
        let verdict = |nr: i64| grove_schema::bpf::seccomp_verdict(&program, nr, [0; 6]);
        for (nr, why) in DENIED {
            assert_eq!(
                verdict(nr),
                grove_schema::bpf::errno(libc::EPERM as u32),
                "{nr} ({why})"
            );
        }
        // What the helper, its tools and containers need stays allowed.
        for nr in [
            libc::SYS_mount,
            libc::SYS_pivot_root,
            libc::SYS_setns,
            libc::SYS_unshare,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_execve,
            libc::SYS_openat2,
            libc::SYS_ioctl,
            libc::SYS_ptrace,
            libc::SYS_mount_setattr,
        ] {
            assert_eq!(verdict(nr), grove_schema::bpf::ALLOW, "{nr}");
        }
    }
}
