//! The OOM killer's order inside a container: wshd (PID 1, whose death
//! ends the container) goes last. grove-helper lowers wshd's oom_score_adj
//! to -941 before exec when the host lets it (lowering needs
//! CAP_SYS_RESOURCE in the host's user namespace, which wshd lacks); every
//! process wshd starts is put `GAP` above wshd's value (at most the
//! kernel's 1000) before it runs, so the container's own processes go
//! first: 58 when wshd is at -941, 999 when the host let nothing be
//! lowered. Raising needs no privilege; going back below 0 does (the
//! helper leaves wshd's floor, which its processes fork, at 0).
//!
//! A gap of 999 thousandths of the container's memory limit outweighs any
//! difference in resident memory between wshd and another process, so
//! the killer takes wshd only when no other process is left.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// How far above wshd's oom_score_adj its processes are put.
pub const GAP: i32 = 999;
/// The kernel's largest oom_score_adj.
const MAX: i32 = 1000;

/// What each process wshd starts sets its oom_score_adj to, prepared at
/// start (children allocate nothing).
pub struct ChildScore {
    /// The container's /proc, opened at start (before anything of the
    /// container runs, so a process that later mounts over /proc cannot
    /// misdirect the write).
    proc_dir: OwnedFd,
    value: [u8; 8],
    len: usize,
}

/// The value for wshd's processes given wshd's own.
pub fn child_value(own: i32) -> i32 {
    own.saturating_add(GAP).min(MAX)
}

impl ChildScore {
    /// `None` when wshd is already at the kernel's maximum (nothing is
    /// above it).
    pub fn prepare() -> std::io::Result<Option<ChildScore>> {
        let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")?
            .trim()
            .parse()
            .map_err(std::io::Error::other)?;
        let value = child_value(own);
        if value <= own {
            return Ok(None);
        }
        let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
        // SAFETY: open with a NUL-terminated literal; returns a new fd or -1.
        let fd = unsafe { libc::open(c"/proc".as_ptr(), flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let text = value.to_string();
        let mut bytes = [0u8; 8];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Ok(Some(ChildScore {
            // SAFETY: a fresh fd that nothing else owns.
            proc_dir: unsafe { OwnedFd::from_raw_fd(fd) },
            value: bytes,
            len: text.len(),
        }))
    }

    /// What a child needs: raw, for `raise_self`.
    pub fn raw(&self) -> RawChildScore {
        use std::os::fd::AsRawFd;
        RawChildScore {
            proc_dir: self.proc_dir.as_raw_fd(),
            value: self.value,
            len: self.len,
        }
    }
}

/// `ChildScore` as a child uses it (no ownership).
#[derive(Clone, Copy)]
pub struct RawChildScore {
    proc_dir: RawFd,
    value: [u8; 8],
    len: usize,
}

impl RawChildScore {
    /// Set the calling process's oom_score_adj. Async-signal-safe and
    /// allocation-free (it runs in a vfork child): raw system calls on
    /// memory prepared before. Must run while the process is still the
    /// container's root (its /proc files belong to it while it is not
    /// dumpable).
    ///
    /// # Safety
    /// The `ChildScore` it came from must still be open.
    pub unsafe fn raise_self(&self) -> bool {
        let fd = libc::openat(
            self.proc_dir,
            c"self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return false;
        }
        let ok = libc::write(fd, self.value.as_ptr().cast(), self.len) == self.len as isize;
        libc::close(fd);
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_go_well_above_wshd() {
        assert_eq!(child_value(-999), 0);
        assert_eq!(child_value(0), 999);
        assert_eq!(child_value(-500), 499);
        assert_eq!(child_value(300), 1000);
        assert_eq!(child_value(1000), 1000);
        assert_eq!(child_value(-1000), -1);
    }
}
