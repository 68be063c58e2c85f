//! User namespaces: every container's processes run in a user namespace
//! whose ids 0..65535 map to the host range `userns_base..+65536` of the
//! helper's policy, so root in a container is an unprivileged user on the
//! host.
//!
//! How a container gets there: first the helper makes the container's user
//! namespace (maps written by the helper: only a process privileged over
//! the parent namespace may) and a network namespace owned by it
//! (`make_namespaces`). The container's first process is cloned by host
//! root into new mount, PID, UTS, IPC and cgroup namespaces, joins that
//! network namespace and builds the root filesystem as host root; the
//! image layers below the writable layer are *idmapped* mounts
//! (mount_setattr MOUNT_ATTR_IDMAP) through the container's user namespace,
//! so a file owned by host uid N appears owned by `userns_base + N` and
//! hence by N inside the container, without copying or chowning the shared
//! layers. Last, right before it execs wshd, the process joins the user
//! namespace and becomes its uid and gid 0.
//!
//! So the container's mount, UTS and IPC namespaces stay owned by the
//! host's user namespace (root in the container cannot mount or rename its
//! host), while its network namespace is its own (it may bind low ports,
//! ping, and configure its interfaces — the helper's bridge table still
//! drops frames with another container's source address).

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Ids each container has: 0..65535.
pub const ID_COUNT: u32 = 65536;

/// The line written to uid_map and gid_map.
pub fn map_line(base: u32) -> String {
    format!("0 {base} {ID_COUNT}\n")
}

/// Write the uid and gid maps of process `pid`'s user namespace.
/// Why safe: the maps name only the policy's range; the kernel accepts one
/// write per map and only from a process privileged over the parent
/// namespace (the helper).
pub fn write_maps(pid: i32, base: u32) -> Result<(), String> {
    let line = map_line(base);
    for map in ["uid_map", "gid_map"] {
        let path = format!("/proc/{pid}/{map}");
        std::fs::write(&path, &line).map_err(|e| format!("{path}: {e}"))?;
    }
    Ok(())
}

/// A new container's user namespace (ids mapped to the policy's range) and
/// a network namespace owned by it, held by fd. Made by a short-lived
/// child: it unshares a user namespace, waits for the helper to write the
/// maps, unshares a network namespace (as root of its user namespace, so
/// that namespace belongs to it) and pauses; the helper opens both and
/// kills it.
pub struct Namespaces {
    pub user: OwnedFd,
    pub net: OwnedFd,
}

pub fn make_namespaces(base: u32) -> Result<Namespaces, String> {
    if base == 0 || base.checked_add(ID_COUNT).is_none() {
        return Err(format!(
            "userns_base {base} must be at least 1 and leave room for {ID_COUNT} ids"
        ));
    }
    let pipe =
        || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (up_r, up_w) = pipe()?;
    let (down_r, down_w) = pipe()?;
    // SAFETY: the helper is single-threaded, so the child is a complete
    // copy; it only unshares, reads and writes a byte, and pauses until it
    // is killed (it never returns from its branch).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(up_r);
        drop(down_w);
        let mut b = [0u8; 1];
        let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok()
            && nix::unistd::write(&up_w, b"u").is_ok()
            && matches!(nix::unistd::read(down_r.as_raw_fd(), &mut b), Ok(1))
            && nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok();
        let _ = nix::unistd::write(&up_w, if ok { b"n" } else { b"e" });
        loop {
            // SAFETY: pause only waits for a signal.
            unsafe { libc::pause() };
        }
    }
    if pid < 0 {
        return Err(format!("fork: {}", Errno::last()));
    }
    drop(up_w);
    drop(down_r);
    let child = Pid::from_raw(pid);
    let result = (|| {
        let mut b = [0u8; 1];
        let read = |b: &mut [u8; 1]| nix::unistd::read(up_r.as_raw_fd(), b);
        if !matches!(read(&mut b), Ok(1)) || b[0] != b'u' {
            return Err("the child could not unshare a user namespace".to_string());
        }
        write_maps(pid, base)?;
        nix::unistd::write(&down_w, b"m").map_err(|e| format!("pipe: {e}"))?;
        if !matches!(read(&mut b), Ok(1)) || b[0] != b'n' {
            return Err("the child could not unshare a network namespace".to_string());
        }
        let open = |ns: &str| {
            crate::fs::openat(
                None,
                &format!("/proc/{pid}/ns/{ns}"),
                nix::fcntl::OFlag::O_RDONLY,
                0,
            )
            .map_err(|e| format!("open the new {ns} namespace: {e}"))
        };
        Ok(Namespaces {
            user: open("user")?,
            net: open("net")?,
        })
    })();
    // Our unreaped child: its pid cannot have been recycled.
    let _ = kill(child, Signal::SIGKILL);
    let _ = waitpid(child, None);
    result
}

const OPEN_TREE_CLONE: u32 = 1;
const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const MOVE_MOUNT_F_EMPTY_PATH: u32 = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: u32 = 0x40;

/// struct mount_attr.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Put an idmapped, nodev copy of the directory `src` (an O_PATH fd) on
/// the directory `target` (an O_PATH fd), mapped through `userns`. Runs in the
/// container's mount namespace before its root is pivoted.
/// Why safe: the copy is a new, detached mount of a directory the helper
/// opened and checked; the mapping only changes how its owners appear; it
/// is attached only at a directory of the container's own depot dir.
pub fn idmapped_bind(src: BorrowedFd, target: BorrowedFd, userns: BorrowedFd) -> Result<(), Errno> {
    // SAFETY: open_tree reads an empty, NUL-terminated path and flags; it
    // returns a new fd for a detached copy of the mount at `src`.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            src.as_raw_fd(),
            c"".as_ptr(),
            (OPEN_TREE_CLONE | libc::AT_EMPTY_PATH as u32 | libc::O_CLOEXEC as u32) as libc::c_uint,
        )
    };
    let tree = Errno::result(tree)? as i32;
    // SAFETY: open_tree just returned this fd; nothing else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(tree) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads a live struct mount_attr of the size
    // given and an empty path relative to the tree fd.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    // SAFETY: move_mount reads two empty paths relative to the two fds.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    })
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_name_the_policy_range() {
        assert_eq!(map_line(1_000_000_000), "0 1000000000 65536\n");
        assert!(make_namespaces(0).is_err());
        assert!(make_namespaces(u32::MAX - 10).is_err());
    }
}
