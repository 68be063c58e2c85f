//! Removing trees off the serve loop. A destroyed container's depot dir,
//! an unused layer and a killed unpack's temp dir hold as many files as
//! their owner made (a container's writes; an image's up to
//! `image_max_entries`): removing a million took the single-threaded
//! helper over a minute, and no other tenant was served meanwhile.
//! `discard` renames the tree into `depot/.trash` (one rename: its name is
//! free at once) and a forked child removes it; the caller waits `WAIT`
//! for the child, so a small tree is gone when it returns, as before.
//!
//! Why safe: the child keeps only the trash dirfd and stderr (every other
//! fd closed: no connection or socket of the helper lives on in it),
//! removes only the one entry it was given beneath that dirfd, never
//! following a symlink (`fs::remove_tree`), under the helper's seccomp
//! filter. What a child could not remove stays in the trash until the
//! next start-up empties it.

use crate::fs;
use nix::errno::Errno;
use nix::fcntl::RenameFlags;
use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// The trash, an entry of the depot (not a valid handle: it starts with '.').
pub const TRASH_DIR: &str = ".trash";
/// How long `discard` waits for its child before leaving it to finish alone.
const WAIT: Duration = Duration::from_millis(500);

pub struct Trash {
    dir: OwnedFd,
    /// For unique names in the trash.
    next: Cell<u64>,
}

impl Trash {
    /// Open depot/.trash (made when missing) and remove what an earlier
    /// run left in it, in the background.
    pub fn open(depot: BorrowedFd) -> Result<Trash, String> {
        fs::mkdir_at(depot, TRASH_DIR, 0o700, true).map_err(|e| format!("mkdir .trash: {e}"))?;
        let dir = fs::open_dir(depot, TRASH_DIR).map_err(|e| format!("open .trash: {e}"))?;
        let trash = Trash {
            dir,
            next: Cell::new(0),
        };
        for name in fs::list_dir(trash.dir.as_fd()).map_err(|e| format!("reading .trash: {e}"))? {
            let _ = trash.remove(&name.to_string_lossy(), Duration::ZERO);
        }
        Ok(trash)
    }

    /// Another handle on the same trash (for an unpack's cleanup).
    pub fn try_clone(&self) -> std::io::Result<Trash> {
        Ok(Trash {
            dir: self.dir.try_clone()?,
            next: Cell::new(0),
        })
    }

    /// Remove `name` beneath `parent` (on the depot's filesystem): moved
    /// into the trash at once, removed by a child. An error only when it
    /// could not be moved, or the child failed within `WAIT`.
    pub fn discard(&self, parent: BorrowedFd, name: &str) -> Result<(), String> {
        let target = loop {
            self.next.set(self.next.get() + 1);
            let target = format!("{}-{}", std::process::id(), self.next.get());
            match nix::fcntl::renameat2(
                Some(parent.as_raw_fd()),
                name,
                Some(self.dir.as_raw_fd()),
                target.as_str(),
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => break target,
                Err(Errno::ENOENT) => return Ok(()),
                // Left by an earlier helper that had our pid.
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(format!("moving {name} into the trash: {e}")),
            }
        };
        self.remove(&target, WAIT)
    }

    /// Fork a child that removes the trash entry `name`; wait up to `wait`.
    fn remove(&self, name: &str, wait: Duration) -> Result<(), String> {
        // SAFETY: the helper is single-threaded, so the child is a complete
        // copy with no lock held by a thread that does not exist; the child
        // never returns from its branch (it _exits).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: dup2 and close_range act on this child's own fds only;
            // from here it holds stdin/out/err and the trash dirfd (as 3).
            let ok = unsafe {
                libc::dup2(self.dir.as_raw_fd(), 3) == 3
                    && libc::close_range(4, libc::c_uint::MAX, 0) == 0
            } && remove_tree_busy(name);
            // SAFETY: _exit ends the child without running the parent's
            // destructors.
            unsafe { libc::_exit(i32::from(!ok)) };
        }
        if pid < 0 {
            return Err(format!("fork: {}", Errno::last()));
        }
        // Our unreaped child: its pid cannot have been recycled yet.
        let pidfd = crate::spawn::pidfd_open(pid).map_err(|e| format!("pidfd_open: {e}"))?;
        if !crate::spawn::pidfd_wait_exit(pidfd.as_fd(), wait) {
            // Still removing: `Helper::reap` reaps it.
            eprintln!("grove-helper: removing trash/{name} in child {pid}");
            return Ok(());
        }
        match nix::sys::wait::waitid(
            nix::sys::wait::Id::PIDFd(pidfd.as_fd()),
            nix::sys::wait::WaitPidFlag::WEXITED,
        ) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(status) => Err(format!(
                "removing trash/{name} failed ({status:?}; see the log above)"
            )),
            Err(e) => Err(format!("waiting for the removal of trash/{name}: {e}")),
        }
    }
}

/// In the child: remove fd 3's entry `name`. A mount point may be busy for
/// a moment while a container's mount namespace dies.
fn remove_tree_busy(name: &str) -> bool {
    // SAFETY: fd 3 is the trash dirfd the child placed there and keeps.
    let dir = unsafe { BorrowedFd::borrow_raw(3) };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match fs::remove_tree(dir, name) {
            Ok(()) => return true,
            Err(Errno::EBUSY) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            Err(e) => {
                eprintln!("grove-helper: removing trash/{name}: {e}");
                return false;
            }
        }
    }
}
