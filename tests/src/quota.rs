//! Project quotas as the kernel reports them, for the disk-limit tests on
//! ext4 and XFS: a directory's project id (FS_IOC_FSGETXATTR) and a
//! project's limits and usage (quotactl_fd Q_GETQUOTA), read directly so
//! the tests check the kernel's state, not the helper's account of it.

use std::os::fd::AsRawFd;
use std::path::Path;

/// struct if_dqblk (linux/quota.h).
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct Dqblk {
    /// In 1 KiB blocks.
    pub bhardlimit: u64,
    pub bsoftlimit: u64,
    /// Bytes.
    pub curspace: u64,
    pub ihardlimit: u64,
    pub isoftlimit: u64,
    pub curinodes: u64,
    pub btime: u64,
    pub itime: u64,
    pub valid: u32,
}

/// struct fsxattr (linux/fs.h).
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

const FS_IOC_FSGETXATTR: u64 = 0x801c_581f;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;
/// QCMD(Q_GETQUOTA, PRJQUOTA).
const GETQUOTA_PRJ: u32 = 0x8000_0702;
/// QCMD(Q_XGETQSTATV, PRJQUOTA).
const XGETQSTATV_PRJ: u32 = 0x0058_0802;

/// The project id of `dir` and whether new entries inherit it.
pub fn project_of(dir: &Path) -> std::io::Result<(u32, bool)> {
    let f = std::fs::File::open(dir)?;
    let mut x = FsXattr::default();
    // SAFETY: x is a live struct fsxattr (28 bytes), which the kernel fills.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR as _, &mut x) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((x.projid, x.xflags & FS_XFLAG_PROJINHERIT != 0))
}

/// Project `id`'s quota on the filesystem of `on` (XFS answers ENOENT for
/// a project it has no record of: all zero).
pub fn project_quota(on: &Path, id: u32) -> std::io::Result<Dqblk> {
    let f = std::fs::File::open(on)?;
    let mut q = Dqblk::default();
    // SAFETY: q is a live if_dqblk (72 bytes), which the kernel fills.
    let r = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            f.as_raw_fd(),
            GETQUOTA_PRJ,
            id,
            &mut q as *mut Dqblk,
        )
    };
    match r {
        0 => Ok(q),
        _ => match std::io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ENOENT) => Ok(Dqblk::default()),
            e => Err(e),
        },
    }
}

/// Why the filesystem at `dir` cannot serve the project-quota tests, or
/// None when it can: it must be its own mount (the guest lane mounts ext4
/// and XFS there with -o prjquota) with project quotas counted and
/// enforced.
pub fn unusable(dir: &Path) -> Option<String> {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(dir.to_str().unwrap_or("")));
    if !mounted {
        return Some(format!("{} is not a mount point", dir.display()));
    }
    let f = match std::fs::File::open(dir) {
        Ok(f) => f,
        Err(e) => return Some(format!("{}: {e}", dir.display())),
    };
    // struct fs_quota_statv: 160 bytes, qs_version (1) first, qs_flags at 2.
    let mut statv = [0u8; 160];
    statv[0] = 1;
    // SAFETY: statv has the size of struct fs_quota_statv, which the
    // kernel fills.
    let r = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            f.as_raw_fd(),
            XGETQSTATV_PRJ,
            0,
            statv.as_mut_ptr(),
        )
    };
    if r != 0 {
        return Some(format!(
            "{}: no project quota state ({})",
            dir.display(),
            std::io::Error::last_os_error()
        ));
    }
    let flags = u16::from_ne_bytes([statv[2], statv[3]]);
    // FS_QUOTA_PDQ_ACCT | FS_QUOTA_PDQ_ENFD
    (flags & 0x30 != 0x30).then(|| {
        format!(
            "{}: project quotas not counted and enforced (flags {flags:#x})",
            dir.display()
        )
    })
}
