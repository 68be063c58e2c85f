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

/// The host uid that owns the user namespace of the container in owner
/// slot `slot` (0..max_containers): the uids right above the containers'
/// id range, one per live container, so that what the kernel counts per
/// user is counted per container (`act_as_owner`).
pub fn owner_uid(base: u32, slot: u32) -> u32 {
    base + ID_COUNT + slot
}

/// Whether the containers' ids and `max_containers` owner uids above them
/// fit below u32::MAX (the overflow uid stays outside).
pub fn owner_range_fits(base: u32, max_containers: usize) -> bool {
    u32::try_from(max_containers)
        .ok()
        .and_then(|n| base.checked_add(ID_COUNT)?.checked_add(n))
        .is_some_and(|end| end < u32::MAX - 1)
}

/// The host uid owning the user namespace of process `pid` (the kernel's
/// own record: ioctl NS_GET_OWNER_UID).
pub fn namespace_owner(pid: i32) -> Result<u32, Errno> {
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704; // _IO(0xb7, 0x4)
    let fd = crate::fs::openat(
        None,
        &format!("/proc/{pid}/ns/user"),
        nix::fcntl::OFlag::O_RDONLY,
        0,
    )?;
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) })?;
    Ok(uid)
}

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

/// A new container's user namespace (ids mapped to the policy's range, owned
/// by host uid `owner`: `act_as_owner`) and a network namespace owned by it,
/// held by fd. Made by a short-lived child: it unshares a user namespace, waits for the helper to write the
/// maps, unshares a network namespace (as root of its user namespace, so
/// that namespace belongs to it) and pauses; the helper opens both and
/// kills it.
pub struct Namespaces {
    pub user: OwnedFd,
    pub net: OwnedFd,
}

/// Make the calling process (a short-lived child of host root) act as
/// host uid and gid `owner` — one of its own per container
/// (`owner_uid`) — so that the user namespace it creates next is *owned*
/// by that uid rather than by root.
///
/// Why: the kernel charges what it counts per user (inotify instances and
/// watches, POSIX message queue bytes, user namespaces, …) to the user in
/// the namespace and then to the namespace's owner in each ancestor. With
/// root as owner, one container's inotify instances or message queues used
/// up host root's budget — systemd's, udev's, the helper's — and every
/// other container's. Owned by a uid of its own, a container spends only
/// that uid's budget (SECURITY.md "Per-user kernel limits").
///
/// Only the effective ids change (the real and saved ids stay 0, so the
/// permitted capabilities stay), and the effective capabilities the euid
/// change cleared are raised again: some kernels let only a process with
/// CAP_SYS_ADMIN create a user namespace (Debian's
/// kernel.unprivileged_userns_clone=0, Ubuntu's AppArmor restriction).
fn act_as_owner(owner: u32) -> Result<(), Errno> {
    nix::unistd::setgroups(&[])?;
    nix::unistd::setresgid(
        nix::unistd::Gid::from_raw(0),
        nix::unistd::Gid::from_raw(owner),
        nix::unistd::Gid::from_raw(0),
    )?;
    nix::unistd::setresuid(
        nix::unistd::Uid::from_raw(0),
        nix::unistd::Uid::from_raw(owner),
        nix::unistd::Uid::from_raw(0),
    )?;
    raise_effective_capabilities()
}

/// Effective capabilities := permitted ones.
fn raise_effective_capabilities() -> Result<(), Errno> {
    let mut sets = crate::confine::capget()?;
    for d in sets.iter_mut() {
        d.effective = d.permitted;
    }
    crate::confine::capset(&sets)
}

pub fn make_namespaces(base: u32, owner: u32) -> Result<Namespaces, String> {
    if base == 0 || base.checked_add(ID_COUNT).is_none() {
        return Err(format!(
            "userns_base {base} must be at least 1 and leave room for {ID_COUNT} ids"
        ));
    }
    if owner == 0 || (base..base + ID_COUNT).contains(&owner) {
        return Err(format!(
            "the owner uid {owner} of a container's user namespace must be neither root nor \
             one of the containers' ids"
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
        if act_as_owner(owner).is_err() {
            let _ = nix::unistd::write(&up_w, b"o");
            // SAFETY: _exit ends the child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(1) };
        }
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
        match read(&mut b) {
            Ok(1) if b[0] == b'u' => {}
            Ok(1) if b[0] == b'o' => {
                return Err(format!(
                    "the child could not act as uid {owner} (the owner of the container's user namespace)"
                ))
            }
            _ => return Err("the child could not unshare a user namespace".to_string()),
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
        assert!(make_namespaces(0, 5).is_err());
        assert!(make_namespaces(u32::MAX - 10, 5).is_err());
        // Neither root nor a container id may own the namespace.
        assert!(make_namespaces(1_000_000_000, 0).is_err());
        assert!(make_namespaces(1_000_000_000, 1_000_000_007).is_err());
    }

    #[test]
    fn owners_sit_above_the_container_range() {
        assert_eq!(owner_uid(1_000_000_000, 0), 1_000_065_536);
        assert_eq!(owner_uid(1_000_000_000, 1023), 1_000_066_559);
        assert!(owner_range_fits(1_000_000_000, 1024));
        assert!(!owner_range_fits(u32::MAX - ID_COUNT - 10, 1024));
    }
}
