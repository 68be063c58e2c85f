//! Removing trees off the serve loop. A destroyed container's depot dir,
//! an unused layer and a killed unpack's temp dir hold as many files as
//! their owner made (a container's writes; an image's up to
//! `image_max_entries`): removing 200,000 took the single-threaded helper
//! 16 s, and no other tenant was served meanwhile. `discard` renames the
//! tree into `depot/.trash` (one rename: its name is free at once); one
//! forked child at a time, the remover, empties the trash. A destroy waits
//! up to `WAIT` for it, so a small tree is gone when destroy returns.
//!
//! Why safe: the remover keeps only the trash dirfd and stderr (every other
//! fd closed: no connection or socket of the helper lives on in it) and
//! removes only entries beneath that dirfd, never following a symlink
//! (`fs::remove_tree`), under the helper's seccomp filter. What it could
//! not remove stays in the trash until the next remover.

use crate::fs;
use nix::errno::Errno;
use nix::fcntl::RenameFlags;
use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The trash, an entry of the depot (not a valid handle: it starts with '.').
pub const TRASH_DIR: &str = ".trash";
/// How long a destroy waits for the remover.
pub const WAIT: Duration = Duration::from_millis(500);

/// Cheap to clone: every clone shares the one remover.
#[derive(Clone)]
pub struct Trash(Rc<Inner>);

struct Inner {
    dir: OwnedFd,
    /// For unique names in the trash.
    next: Cell<u64>,
    /// The remover's pidfd, while there is one.
    remover: RefCell<Option<OwnedFd>>,
    /// Something was put in the trash since the remover started.
    pending: Cell<bool>,
}

impl Trash {
    /// Open depot/.trash (made when missing); what an earlier run left in
    /// it is removed by the first remover.
    pub fn open(depot: BorrowedFd) -> Result<Trash, String> {
        fs::mkdir_at(depot, TRASH_DIR, 0o700, true).map_err(|e| format!("mkdir .trash: {e}"))?;
        let dir = fs::open_dir(depot, TRASH_DIR).map_err(|e| format!("open .trash: {e}"))?;
        let trash = Trash(Rc::new(Inner {
            dir,
            next: Cell::new(0),
            remover: RefCell::new(None),
            pending: Cell::new(true),
        }));
        trash.tick();
        Ok(trash)
    }

    /// Remove `name` beneath `parent` (on the depot's filesystem): moved
    /// into the trash at once, removed by the remover; waits up to `wait`
    /// for the trash to be empty. An error only when it could not be moved.
    pub fn discard(&self, parent: BorrowedFd, name: &str, wait: Duration) -> Result<(), String> {
        let t = &self.0;
        loop {
            t.next.set(t.next.get() + 1);
            let target = format!("{}-{}", std::process::id(), t.next.get());
            match nix::fcntl::renameat2(
                Some(parent.as_raw_fd()),
                name,
                Some(t.dir.as_raw_fd()),
                target.as_str(),
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => break,
                Err(Errno::ENOENT) => return Ok(()),
                // Left by an earlier helper that had our pid.
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(format!("moving {name} into the trash: {e}")),
            }
        }
        t.pending.set(true);
        self.tick();
        if let Some(pidfd) = t.remover.borrow().as_ref() {
            crate::spawn::pidfd_wait_exit(pidfd.as_fd(), wait);
        }
        Ok(())
    }

    /// Start a remover if the trash has new entries and none runs (called
    /// from every turn of the serve loop, and by `discard`).
    pub fn tick(&self) {
        let t = &self.0;
        let running = t
            .remover
            .borrow()
            .as_ref()
            .is_some_and(|pidfd| !crate::spawn::pidfd_wait_exit(pidfd.as_fd(), Duration::ZERO));
        if running || !t.pending.get() {
            return;
        }
        t.remover.replace(None);
        // SAFETY: the helper is single-threaded, so the child is a complete
        // copy with no lock held by a thread that does not exist; the child
        // never returns from its branch (it _exits).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: dup2 and close_range act on this child's own fds only;
            // from here it holds stdin/out/err and the trash dirfd (as 3).
            let ok = unsafe {
                libc::dup2(t.dir.as_raw_fd(), 3) == 3
                    && libc::close_range(4, libc::c_uint::MAX, 0) == 0
            } && empty();
            // SAFETY: _exit ends the child without running the parent's
            // destructors.
            unsafe { libc::_exit(i32::from(!ok)) };
        }
        if pid < 0 {
            log_error!("grove-helper: forking the trash remover: {}", Errno::last());
            return;
        }
        t.pending.set(false);
        // Our unreaped child: its pid cannot have been recycled yet.
        match crate::spawn::pidfd_open(pid) {
            Ok(pidfd) => {
                t.remover.replace(Some(pidfd));
            }
            Err(e) => log_warn!("grove-helper: pidfd of the trash remover: {e}"),
        }
    }
}

/// In the remover: remove every entry of fd 3 until there is none. A mount
/// point may be busy for a moment while a container's mount namespace dies.
fn empty() -> bool {
    // SAFETY: fd 3 is the trash dirfd the child placed there and keeps.
    let dir = unsafe { BorrowedFd::borrow_raw(3) };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let names = match fs::list_dir(dir) {
            Ok(names) if names.is_empty() => return true,
            Ok(names) => names,
            Err(e) => {
                log_warn!("grove-helper: reading the trash: {e}");
                return false;
            }
        };
        for name in names {
            let name = name.to_string_lossy();
            match fs::remove_tree(dir, &name) {
                Ok(()) => {}
                Err(Errno::EBUSY) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(e) => {
                    log_warn!("grove-helper: removing trash/{name}: {e}");
                    return false;
                }
            }
        }
    }
}
