//! Directory-fd-relative file helpers. Everything a request can influence is
//! reached from a directory fd the helper opened itself, one validated
//! component at a time, never following symlinks.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

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
pub fn open_dir(dir: BorrowedFd, name: &str) -> Result<OwnedFd> {
    openat(
        Some(dir),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        0,
    )
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
    let cpath = CString::new(path).map_err(|_| Errno::EINVAL)?;
    // SAFETY: open_how is plain old data; all-zero is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: cpath is NUL-terminated and `how` is a valid open_how of the
    // size we pass; the kernel only reads both.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
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

/// Write a whole small file beneath `dir`: to a temp name, fsync, rename, so
/// a crash leaves the old file or the new one.
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
    nix::unistd::fsync(fd.as_raw_fd())?;
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

/// Remove `name` beneath `parent` and everything in it, never following a
/// symlink: every directory is opened with O_NOFOLLOW relative to its parent
/// fd, and entries are removed with unlinkat, which never follows symlinks.
/// A container controls what is inside its upper dir (symlinks to host
/// paths, very deep trees), so the walk is iterative and holds at most
/// MAX_DEPTH fds; a deeper directory is renamed to the top of the tree being
/// removed (same filesystem, still inside the tree) and handled from there.
pub fn remove_tree(parent: BorrowedFd, name: &str) -> Result<()> {
    let top = match open_dir(parent, name) {
        Ok(fd) => fd,
        Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
            return nix::unistd::unlinkat(
                Some(parent.as_raw_fd()),
                name,
                UnlinkatFlags::NoRemoveDir,
            )
        }
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    };
    let top_name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // Each level: its fd and its name in the level above.
    let mut stack: Vec<(OwnedFd, CString)> = vec![(top, top_name)];
    let mut moved = 0u64;
    while let Some((dir, _)) = stack.last() {
        let dir_fd = dir.as_raw_fd();
        let mut descend = None;
        for entry in list_dir(dir.as_fd())? {
            match nix::unistd::unlinkat(Some(dir_fd), entry.as_c_str(), UnlinkatFlags::NoRemoveDir)
            {
                Ok(()) | Err(Errno::ENOENT) => continue,
                Err(Errno::EISDIR) => {}
                Err(e) => return Err(e),
            }
            match nix::unistd::unlinkat(Some(dir_fd), entry.as_c_str(), UnlinkatFlags::RemoveDir) {
                Ok(()) | Err(Errno::ENOENT) => continue,
                Err(Errno::ENOTEMPTY) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            if stack.len() >= MAX_DEPTH {
                moved += 1;
                let new_name = format!(".grove-deep-{moved}");
                nix::fcntl::renameat(
                    Some(dir_fd),
                    entry.as_c_str(),
                    Some(stack[0].0.as_raw_fd()),
                    new_name.as_str(),
                )?;
                continue;
            }
            descend = Some(entry);
            break;
        }
        match descend {
            Some(entry) => {
                let fd = nix::fcntl::openat(
                    Some(dir_fd),
                    entry.as_c_str(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                // SAFETY: openat just returned this fd; nothing else owns it.
                stack.push((unsafe { OwnedFd::from_raw_fd(fd) }, entry));
            }
            None => {
                // This level is empty now: remove it from the level above.
                let Some((_, done)) = stack.pop() else { break };
                let above = stack
                    .last()
                    .map_or(parent.as_raw_fd(), |(fd, _)| fd.as_raw_fd());
                match nix::unistd::unlinkat(Some(above), done.as_c_str(), UnlinkatFlags::RemoveDir)
                {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
