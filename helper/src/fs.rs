//! Directory-fd-relative file helpers. Everything a request can influence is
//! reached from a directory fd the helper opened itself, one validated
//! component at a time, never following symlinks.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

pub type Result<T> = std::result::Result<T, Errno>;

/// openat(2) returning an owned fd; O_CLOEXEC is always added.
pub fn openat(dir: Option<BorrowedFd>, path: &str, flags: OFlag, mode: u32) -> Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        dir.map(|d| d.as_raw_fd()),
        path,
        flags | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode),
    )?;
    // SAFETY: openat just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Open a directory beneath `dir` without following a symlink in its last
/// component (a single component, so in any component).
/// The name may be any bytes (a readdir result), not only UTF-8.
pub fn open_dir<P: ?Sized + nix::NixPath>(dir: BorrowedFd, name: &P) -> Result<OwnedFd> {
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Like `open_dir`, but an O_PATH fd: usable as a mount source or target
/// through /proc/self/fd/N, and as a base for *at calls.
pub fn open_path_dir(dir: BorrowedFd, name: &str) -> Result<OwnedFd> {
    openat(
        Some(dir),
        name,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        0,
    )
}

/// openat2(2) of an absolute path with RESOLVE_NO_SYMLINKS and
/// RESOLVE_NO_MAGICLINKS, as an O_PATH directory: no component of the path
/// can redirect the lookup, so what the policy checked by components is
/// what gets opened.
pub fn open_dir_no_symlinks(path: &str) -> Result<OwnedFd> {
    open_no_symlinks(path, libc::O_PATH | libc::O_DIRECTORY)
}

/// Like `open_dir_no_symlinks`, for a file to read (O_RDONLY|O_NOCTTY|
/// O_NONBLOCK, so a FIFO or tty cannot block or become ours).
pub fn open_file_no_symlinks(path: &str) -> Result<OwnedFd> {
    open_no_symlinks(path, libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK)
}

fn open_no_symlinks(path: &str, flags: libc::c_int) -> Result<OwnedFd> {
    openat2(None, path, flags, 0)
}

/// An O_PATH fd (file or directory) of an absolute host path, no component
/// of which may be a symlink.
pub fn open_path_no_symlinks(path: &str) -> Result<OwnedFd> {
    open_no_symlinks(path, libc::O_PATH)
}

/// An O_PATH fd of `path` (relative) strictly beneath the directory `dir`:
/// openat2 with RESOLVE_BENEATH (no `..` out, no absolute path),
/// RESOLVE_NO_SYMLINKS and RESOLVE_NO_MAGICLINKS.
pub fn open_path_beneath(dir: BorrowedFd, path: &str) -> Result<OwnedFd> {
    openat2(Some(dir), path, libc::O_PATH, libc::RESOLVE_BENEATH)
}

fn openat2(
    dir: Option<BorrowedFd>,
    path: &str,
    flags: libc::c_int,
    resolve: u64,
) -> Result<OwnedFd> {
    let cpath = CString::new(path).map_err(|_| Errno::EINVAL)?;
    // SAFETY: open_how is plain old data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: cpath is NUL-terminated and `how` is a valid open_how of the
    // size we pass; the kernel only reads both.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd()),
            cpath.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    let fd = Errno::result(fd)?;
    // SAFETY: openat2 just returned this fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// mkdirat beneath `dir`; an existing entry is an error unless `exist_ok`
/// (and then it must be a real directory, not a symlink to one).
pub fn mkdir_at(dir: BorrowedFd, name: &str, mode: u32, exist_ok: bool) -> Result<()> {
    match nix::sys::stat::mkdirat(Some(dir.as_raw_fd()), name, Mode::from_bits_truncate(mode)) {
        Err(Errno::EEXIST) if exist_ok => {
            let st =
                nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                Ok(())
            } else {
                Err(Errno::ENOTDIR)
            }
        }
        r => r,
    }
}

/// Write a whole small file beneath `dir`: to a temp name, then rename, so
/// a crash of the helper leaves the old file or the new one. Not fsynced:
/// these files describe a container (its wshd, network, layers), which a
/// power loss ends anyway, and recovery takes an unreadable one for a
/// stopped container; an fsync on btrfs cost about a millisecond each,
/// four times per create. (Unpacked layers, which outlive reboots, are
/// synced: see image.rs.)
pub fn write_file_at(dir: BorrowedFd, name: &str, data: &[u8], mode: u32) -> Result<()> {
    let tmp = format!("{name}.tmp");
    let _ = nix::unistd::unlinkat(
        Some(dir.as_raw_fd()),
        tmp.as_str(),
        UnlinkatFlags::NoRemoveDir,
    );
    let fd = openat(
        Some(dir),
        &tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
        mode,
    )?;
    write_all(fd.as_raw_fd(), data)?;
    drop(fd);
    nix::fcntl::renameat(
        Some(dir.as_raw_fd()),
        tmp.as_str(),
        Some(dir.as_raw_fd()),
        name,
    )
}

pub fn write_all(fd: RawFd, mut data: &[u8]) -> Result<()> {
    while !data.is_empty() {
        // SAFETY: the caller keeps fd open for the duration of this call.
        let n = nix::unistd::write(unsafe { BorrowedFd::borrow_raw(fd) }, data)?;
        if n == 0 {
            return Err(Errno::EIO);
        }
        data = &data[n..];
    }
    Ok(())
}

/// Read a small file beneath `dir` (at most 64 KiB).
pub fn read_file_at(dir: BorrowedFd, path: &str) -> Result<String> {
    let fd = openat(Some(dir), path, OFlag::O_RDONLY | OFlag::O_NOFOLLOW, 0)?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
        if out.len() > 64 * 1024 {
            return Err(Errno::EFBIG);
        }
    }
    String::from_utf8(out).map_err(|_| Errno::EILSEQ)
}

/// Entry names of a directory as raw bytes, without "." and ".." (a
/// container may create names that are not UTF-8).
pub fn list_dir(dir: BorrowedFd) -> Result<Vec<CString>> {
    // Dir owns and closes the fd it reads, so give it its own.
    let own = openat(Some(dir), ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?;
    let d = nix::dir::Dir::from_fd(own.into_raw_fd())?;
    let mut names = Vec::new();
    for entry in d {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

/// Deepest directory level `remove_tree` holds open at once; deeper
/// directories are moved up to the top of the tree first.
const MAX_DEPTH: usize = 64;

/// Inode flags (linux/fs.h) that make an entry impossible to remove, and
/// that container root can set on its upper layer with chattr.
const FS_IMMUTABLE_FL: libc::c_int = 0x10;
const FS_APPEND_FL: libc::c_int = 0x20;

/// Clear the immutable and append-only flags of the inode `fd` refers to.
/// Errors (a filesystem without flags) are left to the unlink that follows.
fn clear_undeletable_flags(fd: RawFd) {
    let mut flags: libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one int to the pointer we pass, which
    // points at a live c_int; the fd is held open by the caller.
    if unsafe { libc::ioctl(fd, libc::FS_IOC_GETFLAGS, &mut flags) } != 0 {
        return;
    }
    if flags & (FS_IMMUTABLE_FL | FS_APPEND_FL) != 0 {
        flags &= !(FS_IMMUTABLE_FL | FS_APPEND_FL);
        // SAFETY: FS_IOC_SETFLAGS reads one int from a live c_int. Why safe:
        // it only clears the two flags that stop us removing an inode we are
        // about to remove anyway, inside a tree being deleted.
        unsafe { libc::ioctl(fd, libc::FS_IOC_SETFLAGS, &flags) };
    }
}

/// unlinkat, and on EPERM (chattr +i or +a) clear the entry's flags and try
/// once more. Only regular files and directories are opened for that (the
/// only kinds chattr handles): opening a device node could have effects of
/// its own. O_NOFOLLOW|O_NONBLOCK|O_NOCTTY: never a symlink, never a
/// blocking open, never a controlling tty.
fn unlink_entry(dir: RawFd, name: &CStr, how: UnlinkatFlags) -> Result<()> {
    match nix::unistd::unlinkat(Some(dir), name, how) {
        Err(Errno::EPERM) => {}
        r => return r,
    }
    let st = nix::sys::stat::fstatat(Some(dir), name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFDIR {
        return Err(Errno::EPERM);
    }
    let fd = nix::fcntl::openat(
        Some(dir),
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat just returned this fd; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    clear_undeletable_flags(fd.as_raw_fd());
    drop(fd);
    nix::unistd::unlinkat(Some(dir), name, how)
}

/// One level of the walk: an open directory stream, read once from start to
/// end (a cursor), and the directory's name in the level above.
struct Level {
    entries: nix::dir::OwningIter,
    name: CString,
    /// This pass over the directory saw an entry, so it needs one more pass
    /// to be sure it is empty (removing entries while reading a directory
    /// may make readdir skip some on some filesystems).
    saw_entry: bool,
}

/// Open `name` beneath `dir` as a new level: O_NOFOLLOW, so a symlink is
/// never followed; O_DIRECTORY, so only a real directory is descended into.
/// Its own immutable/append-only flags are cleared, or its entries could
/// not be removed.
fn open_level(dir: RawFd, name: &CStr) -> Result<Level> {
    let d = nix::dir::Dir::openat(
        Some(dir),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    clear_undeletable_flags(d.as_raw_fd());
    Ok(Level {
        entries: d.into_iter(),
        name: name.to_owned(),
        saw_entry: false,
    })
}

/// What to do with the entry just read.
enum Step {
    Next,
    Descend(CString),
    Rescan,
    Pop,
}

/// Remove `name` beneath `parent` and everything in it, never following a
/// symlink: every directory is opened with O_NOFOLLOW relative to its parent
/// fd, and entries are removed with unlinkat, which never follows symlinks.
///
/// A container controls what is inside its upper dir (symlinks to host
/// paths, very deep or very wide trees, immutable files), so the walk is an
/// iterative depth-first one that keeps one open directory stream per level
/// and unlinks entries as it reads them: time is linear in the number of
/// entries, memory is MAX_DEPTH streams and names. A directory deeper than
/// MAX_DEPTH is renamed to the top of the tree being removed (same
/// filesystem, still inside the tree, RENAME_NOREPLACE so a leftover of an
/// earlier pass is never clobbered nor blocks us) and handled from there.
pub fn remove_tree(parent: BorrowedFd, name: &str) -> Result<()> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    let top = match open_level(parent.as_raw_fd(), &name) {
        Ok(level) => level,
        Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
            return unlink_entry(parent.as_raw_fd(), &name, UnlinkatFlags::NoRemoveDir)
        }
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut stack = vec![top];
    let mut moved = 0u64;
    while !stack.is_empty() {
        let depth = stack.len();
        let top_fd = stack[0].entries.as_raw_fd();
        let Some(level) = stack.last_mut() else { break };
        let dir_fd = level.entries.as_raw_fd();
        let step = match level.entries.next() {
            None if level.saw_entry => Step::Rescan,
            None => Step::Pop,
            Some(entry) => {
                let entry = entry?;
                let entry_name = entry.file_name();
                if entry_name == c"." || entry_name == c".." {
                    Step::Next
                } else {
                    level.saw_entry = true;
                    let is_dir = entry.file_type() == Some(nix::dir::Type::Directory);
                    let entry_name = entry_name.to_owned();
                    if !is_dir {
                        match unlink_entry(dir_fd, &entry_name, UnlinkatFlags::NoRemoveDir) {
                            Ok(()) | Err(Errno::ENOENT) => Step::Next,
                            // No d_type from this filesystem: a directory after all.
                            Err(Errno::EISDIR) => Step::Descend(entry_name),
                            Err(e) => return Err(e),
                        }
                    } else {
                        Step::Descend(entry_name)
                    }
                }
            }
        };
        match step {
            Step::Next => {}
            Step::Rescan => {
                // Read the directory again from its start, through a fresh
                // stream on the same directory.
                let again = open_level(dir_fd, c".")?;
                level.entries = again.entries;
                level.saw_entry = false;
            }
            Step::Descend(entry) if depth >= MAX_DEPTH => {
                match unlink_entry(dir_fd, &entry, UnlinkatFlags::RemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => continue,
                    Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                // Too deep to hold open: move it to the top level, where
                // the top's next pass finds it.
                loop {
                    moved += 1;
                    let new_name = format!(".grove-deep-{moved}");
                    match nix::fcntl::renameat2(
                        Some(dir_fd),
                        entry.as_c_str(),
                        Some(top_fd),
                        new_name.as_str(),
                        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
                    ) {
                        Ok(()) => break,
                        Err(Errno::EEXIST) => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            Step::Descend(entry) => match open_level(dir_fd, &entry) {
                Ok(next) => stack.push(next),
                Err(Errno::ENOENT) => {}
                // Not a directory (after all): an ordinary entry.
                Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
                    match unlink_entry(dir_fd, &entry, UnlinkatFlags::NoRemoveDir) {
                        Ok(()) | Err(Errno::ENOENT) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            },
            Step::Pop => {
                // This level is empty now: remove it from the level above.
                let Some(done) = stack.pop() else { break };
                drop(done.entries);
                let above = stack
                    .last()
                    .map_or(parent.as_raw_fd(), |l| l.entries.as_raw_fd());
                match unlink_entry(above, &done.name, UnlinkatFlags::RemoveDir) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// Deepest directory level `tree_size` descends into.
const MAX_SIZE_DEPTH: usize = 128;

/// Bytes allocated on disk (st_blocks × 512) by the tree beneath `dir`, and
/// its inodes, the directory itself included, each inode counted once (hard
/// links share one). Never follows a symlink: directories are opened with O_NOFOLLOW
/// relative to their parent, everything else is lstat'ed. The trees it
/// measures are the helper's own layer store and policy-approved rootfs
/// dirs; directories deeper than MAX_SIZE_DEPTH levels are counted but not
/// descended into, so a pathological tree is undercounted, never walked
/// without bound.
pub fn tree_size(dir: BorrowedFd) -> Result<(u64, u64)> {
    use std::collections::HashSet;
    let top = nix::dir::Dir::openat(
        Some(dir.as_raw_fd()),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let st = nix::sys::stat::fstat(top.as_raw_fd())?;
    let mut total = st.st_blocks as u64 * 512;
    let mut inodes = 1u64;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = vec![top.into_iter()];
    while let Some(level) = stack.last_mut() {
        let fd = level.as_raw_fd();
        let Some(entry) = level.next() else {
            stack.pop();
            continue;
        };
        let entry = entry?;
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let st = match nix::sys::stat::fstatat(Some(fd), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed while we walk (a layer GC cannot run meanwhile: the
            // helper is single-threaded; a host rootfs may change).
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(e),
        };
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        if !is_dir && st.st_nlink > 1 && !seen.insert((st.st_dev as u64, st.st_ino as u64)) {
            continue;
        }
        total += st.st_blocks as u64 * 512;
        inodes += 1;
        if is_dir && stack.len() < MAX_SIZE_DEPTH {
            let name = name.to_owned();
            let sub = nix::dir::Dir::openat(
                Some(fd),
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )?;
            stack.push(sub.into_iter());
        }
    }
    Ok((total, inodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn tree_size_counts_allocated_bytes_and_inodes_once_per_inode_and_follows_no_symlink() {
        let base = std::path::PathBuf::from(format!(
            "/tmp/grove-helper-size-test-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&base);
        let tree = base.join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/data"), vec![7u8; 1 << 20]).unwrap();
        std::fs::hard_link(tree.join("a/b/data"), tree.join("link")).unwrap();
        // 8 MiB outside the tree, reachable only through a symlink.
        std::fs::write(base.join("outside"), vec![1u8; 8 << 20]).unwrap();
        std::os::unix::fs::symlink(base.join("outside"), tree.join("escape")).unwrap();
        let dir = openat(
            None,
            tree.to_str().unwrap(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            0,
        )
        .unwrap();
        let (bytes, inodes) = tree_size(dir.as_fd()).unwrap();
        std::fs::remove_dir_all(&base).unwrap();
        // The 1 MiB file once (not twice for its hard link, not the 8 MiB
        // behind the symlink), plus a few directory and symlink blocks.
        assert!(
            ((1 << 20)..(1 << 20) + 64 * 1024).contains(&bytes),
            "{bytes} bytes"
        );
        // tree, a, a/b, the file (once), the symlink.
        assert_eq!(inodes, 5);
    }

    #[test]
    fn remove_tree_removes_deep_trees_and_never_follows_symlinks() {
        let base =
            std::path::PathBuf::from(format!("/tmp/grove-helper-fs-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let victim = base.join("victim");
        std::fs::create_dir_all(victim.join("keep")).unwrap();
        std::fs::write(victim.join("keep/file"), "x").unwrap();
        // A tree deeper than MAX_DEPTH, with symlinks to the outside on the way.
        let mut p = base.join("tree");
        for i in 0..(MAX_DEPTH * 2 + 5) {
            p = p.join(format!("d{i}"));
        }
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("leaf"), "x").unwrap();
        // Leftovers of an earlier, failed pass hold the first rename targets.
        for i in 1..=2 {
            std::fs::create_dir_all(base.join(format!("tree/.grove-deep-{i}/x"))).unwrap();
        }
        std::os::unix::fs::symlink(&victim, base.join("tree/d0/link")).unwrap();
        std::os::unix::fs::symlink(victim.join("keep"), p.join("link")).unwrap();
        std::os::unix::fs::symlink(&victim, base.join("top-link")).unwrap();
        let dir = openat(
            None,
            base.to_str().unwrap(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            0,
        )
        .unwrap();
        remove_tree(dir.as_fd(), "tree").unwrap();
        remove_tree(dir.as_fd(), "top-link").unwrap();
        remove_tree(dir.as_fd(), "absent").unwrap();
        assert!(!base.join("tree").exists() && !base.join("top-link").exists());
        assert!(victim.join("keep/file").exists(), "a symlink was followed");
        std::fs::remove_dir_all(&base).unwrap();
    }

    fn set_flags(path: &std::path::Path, flags: libc::c_int) {
        let f = std::fs::File::open(path).unwrap();
        let mut now: libc::c_int = 0;
        // SAFETY: FS_IOC_GETFLAGS writes one int to a live c_int.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut now) };
        assert_eq!(r, 0, "lsattr {}: {}", path.display(), Errno::last());
        let flags = now | flags;
        // SAFETY: FS_IOC_SETFLAGS reads one int from a live c_int.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) };
        assert_eq!(r, 0, "chattr {}: {}", path.display(), Errno::last());
    }

    #[test]
    fn remove_tree_is_linear_and_removes_immutable_files() {
        let base =
            std::path::PathBuf::from(format!("/tmp/grove-helper-fs-wide-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let tree = base.join("tree");
        std::fs::create_dir_all(&tree).unwrap();
        // 5k non-empty directories side by side: quadratic in the old walk.
        for i in 0..5_000 {
            let d = tree.join(format!("d{i}"));
            std::fs::create_dir(&d).unwrap();
            std::fs::write(d.join("f"), "x").unwrap();
        }
        // chattr +i on a file, +a on a file, +i on a directory with a file.
        std::fs::create_dir_all(tree.join("d7/locked")).unwrap();
        std::fs::write(tree.join("d7/immutable"), "x").unwrap();
        std::fs::write(tree.join("d7/append-only"), "x").unwrap();
        std::fs::write(tree.join("d7/locked/inner"), "x").unwrap();
        set_flags(&tree.join("d7/immutable"), FS_IMMUTABLE_FL);
        set_flags(&tree.join("d7/append-only"), FS_APPEND_FL);
        set_flags(&tree.join("d7/locked"), FS_IMMUTABLE_FL);
        assert_eq!(
            std::fs::remove_file(tree.join("d7/immutable"))
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EPERM),
            "the test filesystem must honour chattr +i"
        );
        let dir = openat(
            None,
            base.to_str().unwrap(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            0,
        )
        .unwrap();
        remove_tree(dir.as_fd(), "tree").unwrap();
        assert!(!tree.exists());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
