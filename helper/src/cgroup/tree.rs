//! Walking, reading and emptying a cgroup tree through directory fds:
//! what both drivers do the same way (v1 once per controller hierarchy).

use crate::fs;
use crate::spawn;
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::UnlinkatFlags;
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

pub(crate) fn err(what: &str, e: Errno) -> String {
    format!("{what}: {e}")
}

pub(crate) use crate::limits::write_cg;

/// Deepest nesting below a container's cgroup that kill and removal follow
/// (one open directory per level). Container root can mount cgroupfs in
/// its cgroup namespace and nest deeper; destroy then fails with an error
/// that says so, rather than missing processes or spinning on EBUSY.
const MAX_NESTING: usize = 32;

/// Call `visit` on the cgroup `top` and on every cgroup below it, parents
/// before children; with `remove`, rmdir every cgroup below `top` once its
/// own subtree is done, so deepest first (v1 refuses to rmdir a cgroup with
/// children or tasks). Every directory is opened beneath the one above it
/// (O_NOFOLLOW|O_DIRECTORY, from a name readdir returned), never by path;
/// one directory stream is kept per level, so a wide tree is read once.
pub(crate) fn walk(
    top: BorrowedFd,
    remove: Option<Instant>,
    visit: &mut dyn FnMut(BorrowedFd) -> Result<(), String>,
) -> Result<(), String> {
    visit(top)?;
    let own = fs::open_dir(top, ".").map_err(|e| err("open cgroup", e))?;
    let first = Dir::from(own).map_err(|e| err("open cgroup", e))?;
    let mut stack: Vec<(nix::dir::OwningIter, CString)> =
        vec![(first.into_iter(), CString::default())];
    while let Some((entries, _)) = stack.last_mut() {
        let dir_fd = entries.as_raw_fd();
        match entries.next() {
            Some(entry) => {
                let entry = entry.map_err(|e| err("reading a cgroup directory", e))?;
                let name = entry.file_name();
                // Child cgroups are the only directories in cgroupfs.
                if entry.file_type() != Some(Type::Directory) || name == c"." || name == c".." {
                    continue;
                }
                if stack.len() > MAX_NESTING {
                    return Err(format!(
                        "cgroups are nested more than {MAX_NESTING} levels deep below the container's"
                    ));
                }
                let name = name.to_owned();
                // SAFETY: dir_fd belongs to the stream on top of the stack,
                // which stays open (and unmoved) until this borrow ends.
                let above = unsafe { BorrowedFd::borrow_raw(dir_fd) };
                let dir = match fs::open_dir(above, name.as_c_str()) {
                    Ok(d) => d,
                    Err(Errno::ENOENT) => continue, // removed meanwhile
                    Err(e) => return Err(err("open nested cgroup", e)),
                };
                visit(dir.as_fd())?;
                let d = Dir::from(dir).map_err(|e| err("open nested cgroup", e))?;
                stack.push((d.into_iter(), name));
            }
            None => {
                let Some((done, name)) = stack.pop() else {
                    break;
                };
                drop(done);
                if let (Some(deadline), Some((above, _))) = (remove, stack.last()) {
                    rmdir_wait(above.as_raw_fd(), &name, deadline)
                        .map_err(|e| format!("rmdir nested cgroup {name:?}: {e}"))?;
                }
            }
        }
    }
    Ok(())
}

/// rmdir a cgroup, waiting while its last tasks are still leaving it.
pub(crate) fn rmdir_wait(dir: RawFd, name: &CStr, deadline: Instant) -> Result<(), Errno> {
    loop {
        match nix::unistd::unlinkat(Some(dir), name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(e),
        }
    }
}

/// The pids listed in one cgroup's cgroup.procs (tgids; v1 lists only the
/// cgroup's own tasks, not its descendants'). Streamed, without a size cap:
/// the list is bounded by pid_max.
pub(crate) fn read_pids(dir: BorrowedFd) -> Result<Vec<i32>, Errno> {
    let fd = fs::openat(
        Some(dir),
        "cgroup.procs",
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
        0,
    )?;
    let mut pids = Vec::new();
    let mut partial: Option<i32> = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        };
        for &b in &buf[..n] {
            match b {
                b'0'..=b'9' => {
                    let v = partial.unwrap_or(0);
                    let v = v
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(i32::from(b - b'0')))
                        .ok_or(Errno::ERANGE)?;
                    partial = Some(v);
                }
                b'\n' => pids.extend(partial.take()),
                _ => return Err(Errno::EINVAL),
            }
        }
    }
    pids.extend(partial);
    Ok(pids)
}

/// SIGKILL the processes listed in one cgroup (see `signal_listed`).
pub(crate) fn kill_listed(dir: BorrowedFd) -> Result<(), Errno> {
    signal_listed(dir, libc::SIGKILL)
}

/// Send `signal` to the processes listed in one cgroup without ever signalling a
/// recycled pid: open a pidfd for each listed pid, then read the list again
/// and signal only pidfds whose pid is still listed. A pidfd names one
/// process for good; if its pid is listed after the pidfd was opened, then
/// either that process is in this cgroup, or it has exited and the signal
/// goes nowhere. In batches, to stay well below the fd limit.
pub(crate) fn signal_listed(dir: BorrowedFd, signal: libc::c_int) -> Result<(), Errno> {
    let pids = match read_pids(dir) {
        Err(Errno::ENOENT) => return Ok(()),
        r => r?,
    };
    for batch in pids.chunks(256) {
        let fds: Vec<(i32, OwnedFd)> = batch
            .iter()
            .filter_map(|&p| spawn::pidfd_open(p).ok().map(|fd| (p, fd)))
            .collect();
        if fds.is_empty() {
            continue;
        }
        let mut still = match read_pids(dir) {
            Err(Errno::ENOENT) => return Ok(()), // the cgroup is gone
            r => r?,
        };
        still.sort_unstable();
        for (pid, fd) in fds {
            if still.binary_search(&pid).is_ok() {
                let _ = spawn::pidfd_signal(fd.as_fd(), signal);
            }
        }
    }
    Ok(())
}

/// Read a small cgroup file and parse it as one number.
pub(crate) fn read_u64(dir: BorrowedFd, file: &str) -> Result<u64, String> {
    let text = fs::read_file_at(dir, file).map_err(|e| err(file, e))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{file}: {:?} is not a number", text.trim()))
}

/// pids.max: "max" is no limit.
pub(crate) fn read_max(dir: BorrowedFd, file: &str) -> Result<Option<u64>, String> {
    let text = fs::read_file_at(dir, file).map_err(|e| err(file, e))?;
    match text.trim() {
        "max" => Ok(None),
        t => t
            .parse()
            .map(Some)
            .map_err(|_| format!("{file}: {t:?} is neither a number nor \"max\"")),
    }
}
