//! What every process wshd starts for a client (a `run` process, a
//! streamIn/streamOut child) gives up before it runs the client's code:
//! capabilities beyond Docker's default set, the right to gain privileges
//! on exec (no_new_privs), and the system calls `seccomp::RULES` refuses.
//!
//! The order matters and is the same everywhere:
//! 1. `drop_bounding` while still wshd's root (dropping from the bounding
//!    set needs CAP_SETPCAP), which also clears the ambient set;
//! 2. the switch to the user's uid and gids (a non-root user's permitted and
//!    effective sets are emptied by setuid itself);
//! 3. `set_capabilities`: effective = permitted = `KEEP` (intersected with
//!    what the process still has: nothing, for a non-root user),
//!    inheritable empty;
//! 4. `no_new_privs`;
//! 5. the seccomp filter (`seccomp::install`), last, right before exec, so
//!    it never constrains wshd itself.
//!
//! Everything here is async-signal-safe: it runs between fork and exec.

/// One capability wshd's children keep, and why.
pub struct Kept {
    pub cap: u32,
    pub name: &'static str,
    pub why: &'static str,
}

/// Docker's default capability set (moby's `DefaultCapabilities`): the
/// bounding set of every process wshd starts, and the effective and
/// permitted sets of its root processes. Everything else (CAP_SYS_ADMIN,
/// CAP_NET_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE, CAP_SYS_RAWIO,
/// CAP_DAC_READ_SEARCH, CAP_SYS_RESOURCE, …) is gone for good.
pub const KEEP: &[Kept] = &[
    Kept {
        cap: 0,
        name: "CAP_CHOWN",
        why: "root chowns files in its own container (package installs, streamIn's ownerships)",
    },
    Kept {
        cap: 1,
        name: "CAP_DAC_OVERRIDE",
        why: "root reads and writes the container's files whatever their modes",
    },
    Kept {
        cap: 3,
        name: "CAP_FOWNER",
        why: "root chmods, utimes and unlinks in sticky directories on files it does not own",
    },
    Kept {
        cap: 4,
        name: "CAP_FSETID",
        why: "keeps setuid/setgid bits when root writes or chowns a file (streamIn, installs)",
    },
    Kept {
        cap: 5,
        name: "CAP_KILL",
        why: "root signals the container's processes of other users (it sees only its PID namespace)",
    },
    Kept {
        cap: 6,
        name: "CAP_SETGID",
        why: "su, login and daemons drop to other groups",
    },
    Kept {
        cap: 7,
        name: "CAP_SETUID",
        why: "su, login and daemons drop to other users",
    },
    Kept {
        cap: 8,
        name: "CAP_SETPCAP",
        why: "root drops capabilities from its own bounding set (it cannot add any)",
    },
    Kept {
        cap: 10,
        name: "CAP_NET_BIND_SERVICE",
        why: "servers bind ports below 1024 in the container's network namespace",
    },
    Kept {
        cap: 13,
        name: "CAP_NET_RAW",
        why: "ping and other raw/packet sockets, in the container's own network namespace; \
              forged source addresses are dropped by the helper's bridge table",
    },
    Kept {
        cap: 18,
        name: "CAP_SYS_CHROOT",
        why: "chroot (build tools, some daemons); it cannot leave the container's root",
    },
    Kept {
        cap: 27,
        name: "CAP_MKNOD",
        why: "mknod for image contents; opening a device is still up to the cgroup device allowlist",
    },
    Kept {
        cap: 29,
        name: "CAP_AUDIT_WRITE",
        why: "login, su and sshd write audit records (or fail)",
    },
    Kept {
        cap: 31,
        name: "CAP_SETFCAP",
        why: "root sets file capabilities on the container's files (they grant nothing beyond this set)",
    },
];

/// `KEEP` as a bit mask (0xa80425fb, Docker's CapBnd).
pub const KEEP_MASK: u64 = {
    let mut mask = 0u64;
    let mut i = 0;
    while i < KEEP.len() {
        mask |= 1 << KEEP[i].cap;
        i += 1;
    }
    mask
};

fn last_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Drops every capability outside `KEEP` from the bounding set, and clears
/// the ambient set. Needs CAP_SETPCAP (wshd's root has it); a capability
/// already gone from the bounding set is skipped.
pub fn drop_bounding() -> std::io::Result<()> {
    for cap in 0..64u32 {
        if KEEP_MASK & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let present = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong, 0, 0, 0) };
        if present < 0 {
            // EINVAL: past the last capability this kernel knows.
            break;
        }
        if present == 0 {
            continue;
        }
        // SAFETY: as above.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
            return Err(last_error());
        }
    }
    // SAFETY: as above. EINVAL (a kernel without ambient capabilities, before
    // 4.3) means there is nothing to clear.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if r != 0 && last_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(last_error());
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The calling thread's (effective, permitted, inheritable) sets.
pub fn get_capabilities() -> std::io::Result<(u64, u64, u64)> {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget reads a v3 header and writes two data structs of the
    // layout linux/capability.h defines, all live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Err(last_error());
    }
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(data[0].effective, data[1].effective),
        join(data[0].permitted, data[1].permitted),
        join(data[0].inheritable, data[1].inheritable),
    ))
}

/// Sets effective = permitted = `KEEP` ∩ permitted, inheritable = ∅. For a
/// root process that is Docker's set; for any other user, whose setuid
/// emptied permitted, it is nothing. Inheritable stays empty as in Docker
/// since CVE-2022-24769 (so file-inheritable capabilities grant nothing).
pub fn set_capabilities() -> std::io::Result<()> {
    let (_, permitted, _) = get_capabilities()?;
    let keep = permitted & KEEP_MASK;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: keep as u32,
            permitted: keep as u32,
            inheritable: 0,
        },
        CapData {
            effective: (keep >> 32) as u32,
            permitted: (keep >> 32) as u32,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads a v3 header and two data structs of the layout
    // linux/capability.h defines, both live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            data.as_ptr(),
        )
    };
    if r != 0 {
        return Err(last_error());
    }
    Ok(())
}

/// PR_SET_NO_NEW_PRIVS: exec never grants privileges again (setuid and
/// setgid bits, file capabilities); also what lets an unprivileged process
/// install a seccomp filter.
pub fn no_new_privs() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(last_error());
    }
    Ok(())
}

/// PR_SET_DUMPABLE 0: only a process with CAP_SYS_PTRACE may ptrace this
/// one or open its /proc files that need ptrace access (mem, environ, fd,
/// root, …). wshd sets it on itself, so its children are born with it and
/// keep it until their exec, which resets it: a container process cannot
/// attach to a child in the window between its capability drop and its
/// seccomp filter.
pub fn not_dumpable() -> std::io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(last_error());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn keep_is_dockers_set() {
        assert_eq!(KEEP_MASK, 0xa804_25fb);
        assert_eq!(KEEP.len(), 14);
        let mut caps: Vec<u32> = KEEP.iter().map(|k| k.cap).collect();
        caps.dedup();
        assert_eq!(caps.len(), KEEP.len(), "sorted, no duplicates");
        assert!(KEEP.iter().all(|k| !k.why.is_empty()));
    }

    /// Runs `f` in a forked child (raw syscalls only there) and returns its
    /// exit code.
    pub(crate) fn in_child(f: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only makes system calls and ends in _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let code = f();
            // SAFETY: ends the child.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        libc::WEXITSTATUS(status)
    }

    pub(crate) fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// The whole sequence on this kernel, as root: the sets, no_new_privs and
    /// the filter's answers. (Skipped when the tests do not run as root.)
    #[test]
    fn a_confined_root_child() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: not root");
            return;
        }
        let program = crate::seccomp::program();
        let code = in_child(|| {
            if drop_bounding().is_err() {
                return 10;
            }
            if set_capabilities().is_err() {
                return 11;
            }
            if no_new_privs().is_err() {
                return 12;
            }
            if crate::seccomp::install(program).is_err() {
                return 13;
            }
            match get_capabilities() {
                Ok((e, p, i)) if e == KEEP_MASK && p == KEEP_MASK && i == 0 => {}
                _ => return 14,
            }
            for cap in 0..64u32 {
                // SAFETY: prctl with integer arguments only.
                let r = unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap as libc::c_ulong) };
                if r < 0 {
                    break;
                }
                if (r == 1) != (KEEP_MASK & (1 << cap) != 0) {
                    return 15;
                }
            }
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } != 1 {
                return 16;
            }
            // SAFETY: these calls are refused before they touch memory.
            unsafe {
                let none = std::ptr::null::<libc::c_char>();
                if libc::syscall(libc::SYS_mount, none, none, none, 0, none) != -1
                    || errno() != libc::EPERM
                {
                    return 17;
                }
                if libc::unshare(libc::CLONE_NEWUSER) != -1 || errno() != libc::EPERM {
                    return 18;
                }
                if libc::syscall(libc::SYS_clone3, none, 0) != -1 || errno() != libc::ENOSYS {
                    return 19;
                }
                if libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0) != -1
                    || errno() != libc::EPERM
                {
                    return 20;
                }
                // Still allowed: chroot (CAP_SYS_CHROOT), getpid.
                if libc::getpid() <= 0 {
                    return 21;
                }
            }
            0
        });
        assert_eq!(code, 0, "the confined child failed check {code}");
    }

    #[test]
    fn a_confined_non_root_child_has_no_capabilities() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: not root");
            return;
        }
        let code = in_child(|| {
            if drop_bounding().is_err() {
                return 10;
            }
            // SAFETY: plain system calls.
            if unsafe { libc::setgid(4242) != 0 || libc::setuid(4242) != 0 } {
                return 11;
            }
            if set_capabilities().is_err() {
                return 12;
            }
            match get_capabilities() {
                Ok((0, 0, 0)) => 0,
                _ => 13,
            }
        });
        assert_eq!(code, 0, "the confined child failed check {code}");
    }
}
