//! The OOM killer's order inside a container. grove-helper set wshd's
//! oom_score_adj to -999 before exec (lowering needs CAP_SYS_RESOURCE in
//! the host's user namespace, which wshd lacks), so wshd is the OOM
//! killer's last choice: its death ends the whole container. Every process
//! wshd starts is set back to `CHILD_SCORE_ADJ` before it runs, so the
//! container's own processes go first. Raising a value needs no privilege.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The oom_score_adj of the processes wshd starts: the kernel's default.
pub const CHILD_SCORE_ADJ: &[u8] = b"0";

/// A dirfd of the container's /proc, opened at start (before anything of
/// the container runs, so a process that later mounts over /proc cannot
/// misdirect the write), when wshd's own value is below 0 and its children
/// must be raised; `None` when they need nothing (the host did not let the
/// helper lower wshd's value).
pub fn proc_dir_if_lowered() -> std::io::Result<Option<OwnedFd>> {
    let own: i32 = std::fs::read_to_string("/proc/self/oom_score_adj")?
        .trim()
        .parse()
        .map_err(std::io::Error::other)?;
    if own >= 0 {
        return Ok(None);
    }
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC;
    // SAFETY: open with a NUL-terminated literal; returns a new fd or -1.
    let fd = unsafe { libc::open(c"/proc".as_ptr(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(Some(fd))
}

/// Set the calling process's oom_score_adj to `CHILD_SCORE_ADJ` through
/// `proc_dir`. Async-signal-safe and allocation-free (it runs in a vfork
/// child): raw system calls on memory prepared before. Must run while the
/// process is still the container's root (its /proc files belong to it
/// while it is not dumpable).
///
/// # Safety
/// `proc_dir` must be an open fd of a procfs of the caller's PID namespace.
pub unsafe fn raise_self(proc_dir: RawFd) -> bool {
    let fd = libc::openat(
        proc_dir,
        c"self/oom_score_adj".as_ptr(),
        libc::O_WRONLY | libc::O_CLOEXEC,
    );
    if fd < 0 {
        return false;
    }
    let n = CHILD_SCORE_ADJ.len();
    let ok = libc::write(fd, CHILD_SCORE_ADJ.as_ptr().cast(), n) == n as isize;
    libc::close(fd);
    ok
}
