//! ext4 and XFS disk limits: project quotas. Each container's writable
//! layer directory gets a project id of its own, with the PROJINHERIT flag,
//! before its upper and work dirs are made in it, so everything the
//! container writes (through overlayfs, whose upper and work dirs these
//! are) belongs to that project; the kernel counts the project's bytes and
//! inodes and fails writes and new files past its hard limits with EDQUOT
//! (XFS: ENOSPC, a full project looking like a full filesystem).
//! overlayfs writes with its mounter's credentials minus CAP_SYS_RESOURCE,
//! so a container cannot pass the limit through the helper's privilege.
//!
//! A project id is taken from the Grove range (`PROJECTS`): one whose quota
//! shows no usage and no limits, i.e. no live container's (its layer dir
//! alone counts one inode) and no removed container's whose files are still
//! in the trash. Two helpers on one filesystem could pick the same id at
//! once: after setting it, the layer must be the project's only inode, or
//! another id is taken.
//!
//! Calls: FS_IOC_FSGETXATTR/FSSETXATTR (linux/fs.h) on the layer's fd, and
//! quotactl_fd(2) (Linux 5.14) on the depot's fd with Q_GETQUOTA,
//! Q_SETQUOTA and Q_XGETQSTATV on PRJQUOTA (linux/quota.h, dqblk_xfs.h).
//! The generic interface counts limits in 1 KiB blocks (QIF_DQBLKSIZE) and
//! usage in bytes; XFS rounds limits up to its block size. So the limit a
//! client set is also recorded (`disk-limit`), and read back as it was set
//! while the kernel's limits are the ones it made.

use super::{client_limit, unavailable, ImageSize, LAYER};
use crate::fs;
use grove_schema::helper::{DiskLimit, DiskScope, DiskUsage, ErrorKind, HelperError};
use nix::errno::Errno;
use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The project ids Grove hands out. Far above what quota tools number
/// projects from (1), so an administrator's own projects are not taken;
/// an id with usage or limits is skipped anyway.
pub const PROJECTS: std::ops::Range<u32> = 1_000_000_000..1_001_000_000;
/// The limit a client set, in a container's depot dir: "scope bytes inodes".
const LIMIT_FILE: &str = "disk-limit";
/// How many ids one allocation tries before giving up.
const TRIES: u32 = 4096;

const PRJQUOTA: u32 = 2;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const Q_XGETQSTATV: u32 = (b'X' as u32) << 8 | 8;
/// QCMD(cmd, type) of linux/quota.h.
pub const fn qcmd(cmd: u32, kind: u32) -> u32 {
    (cmd << 8) | (kind & 0xff)
}
/// The three quotactl_fd commands the helper makes (and its seccomp
/// filter allows).
pub const COMMANDS: [u32; 3] = [
    qcmd(Q_GETQUOTA, PRJQUOTA),
    qcmd(Q_SETQUOTA, PRJQUOTA),
    qcmd(Q_XGETQSTATV, PRJQUOTA),
];
const QIF_BLIMITS: u32 = 1;
const QIF_ILIMITS: u32 = 4;
/// The unit of if_dqblk's block limits.
const QIF_DQBLKSIZE: u64 = 1024;
const FS_QSTATV_VERSION1: i8 = 1;
const FS_QUOTA_PDQ_ACCT: u16 = 1 << 4;
const FS_QUOTA_PDQ_ENFD: u16 = 1 << 5;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;
/// _IOR('X', 31, struct fsxattr) and _IOW('X', 32, struct fsxattr).
const FS_IOC_FSGETXATTR: u64 = 2 << 30 | 28 << 16 | (b'X' as u64) << 8 | 31;
const FS_IOC_FSSETXATTR: u64 = 1 << 30 | 28 << 16 | (b'X' as u64) << 8 | 32;

/// struct if_dqblk.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}
/// struct fs_qfilestatv.
#[repr(C)]
#[derive(Default)]
struct QfileStatv {
    ino: u64,
    nblks: u64,
    nextents: u32,
    pad: u32,
}
/// struct fs_quota_statv.
#[repr(C)]
#[derive(Default)]
struct QuotaStatv {
    version: i8,
    pad1: u8,
    flags: u16,
    incoredqs: u32,
    uquota: QfileStatv,
    gquota: QfileStatv,
    pquota: QfileStatv,
    btimelimit: i32,
    itimelimit: i32,
    rtbtimelimit: i32,
    bwarnlimit: u16,
    iwarnlimit: u16,
    rtbwarnlimit: u16,
    pad3: u16,
    pad4: u32,
    pad2: [u64; 7],
}
/// struct fsxattr.
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
const _: () = assert!(std::mem::size_of::<IfDqblk>() == 72);
const _: () = assert!(std::mem::size_of::<QuotaStatv>() == 160);
const _: () = assert!(std::mem::size_of::<FsXattr>() == 28);

/// quotactl_fd(fd, cmd, id, addr).
///
/// # Safety
/// `addr` must point at a live value of the struct `cmd` reads or fills.
unsafe fn quotactl<T>(fd: BorrowedFd, cmd: u32, id: u32, addr: *mut T) -> Result<(), Errno> {
    // SAFETY: forwarded to the caller's contract above.
    let r = unsafe { libc::syscall(libc::SYS_quotactl_fd, fd.as_raw_fd(), cmd, id, addr) };
    Errno::result(r).map(|_| ())
}

/// Project `id`'s quota. An id XFS has no record of (ENOENT) has none.
/// Why safe: Q_GETQUOTA only reports.
fn get_quota(fd: BorrowedFd, id: u32) -> Result<IfDqblk, Errno> {
    let mut q = IfDqblk::default();
    // SAFETY: q is a live if_dqblk (size checked above), which the kernel fills.
    match unsafe { quotactl(fd, qcmd(Q_GETQUOTA, PRJQUOTA), id, &mut q) } {
        Ok(()) => Ok(q),
        Err(Errno::ENOENT) => Ok(IfDqblk::default()),
        Err(e) => Err(e),
    }
}

/// Set project `id`'s hard limits to a layer limit (None, or 0 for a
/// kind: none), with no soft limits.
/// Why safe: the id is the project of a layer the helper made for this
/// container; a limit only makes the kernel refuse that project more room.
fn set_quota(fd: BorrowedFd, id: u32, limit: Option<DiskLimit>) -> Result<(), Errno> {
    let (bytes, inodes) = limit.map_or((0, 0), |l| (l.bytes, l.inodes));
    let mut q = IfDqblk {
        bhardlimit: bytes.div_ceil(QIF_DQBLKSIZE),
        ihardlimit: inodes,
        valid: QIF_BLIMITS | QIF_ILIMITS,
        ..IfDqblk::default()
    };
    // SAFETY: q is a live if_dqblk, which the kernel reads.
    unsafe { quotactl(fd, qcmd(Q_SETQUOTA, PRJQUOTA), id, &mut q) }
}

/// Does the kernel hold the limits `layer` makes? Block limits are rounded
/// up to 1 KiB, and by XFS to its block size (`block`).
fn holds(q: &IfDqblk, layer: &DiskLimit, block: u64) -> bool {
    let kib = layer.bytes.div_ceil(QIF_DQBLKSIZE);
    q.ihardlimit == layer.inodes
        && q.bhardlimit >= kib
        && q.bhardlimit.saturating_mul(QIF_DQBLKSIZE) < kib * QIF_DQBLKSIZE + block.max(1)
}

/// A recorded client limit, "total|exclusive bytes inodes".
fn parse_record(s: &str) -> Option<DiskLimit> {
    let mut f = s.split_whitespace();
    let scope = match f.next()? {
        "total" => DiskScope::Total,
        "exclusive" => DiskScope::Exclusive,
        _ => return None,
    };
    let bytes = f.next()?.parse().ok()?;
    let inodes = f.next()?.parse().ok()?;
    f.next().is_none().then_some(DiskLimit {
        bytes,
        inodes,
        scope,
    })
}

fn format_record(l: &DiskLimit) -> String {
    let scope = match l.scope {
        DiskScope::Total => "total",
        DiskScope::Exclusive => "exclusive",
    };
    format!("{scope} {} {}\n", l.bytes, l.inodes)
}

fn system(handle: &str, what: &str, e: Errno) -> HelperError {
    HelperError::new(ErrorKind::System, format!("{what} for {handle}: {e}"))
}

/// The depot's ext4 or XFS.
pub struct Quotas {
    /// "ext4" or "XFS", for messages.
    pub fs: String,
    /// The depot's path, for messages.
    path: String,
    /// The depot, for quotactl_fd (any fd on the filesystem does).
    depot: Option<OwnedFd>,
    /// The filesystem's block size (statfs f_bsize).
    block: u64,
    /// Where the next allocation starts looking.
    next: Cell<u32>,
}

impl Quotas {
    pub fn new(depot: BorrowedFd, path: &str, fs: String) -> Quotas {
        let block = nix::sys::statfs::fstatfs(depot)
            .map(|s| s.block_size() as u64)
            .unwrap_or(4096);
        // Helpers on one filesystem start apart (see the module comment).
        let span = PROJECTS.end - PROJECTS.start;
        Quotas {
            fs,
            path: path.to_string(),
            depot: depot.try_clone_to_owned().ok(),
            block,
            next: Cell::new(std::process::id().wrapping_mul(7919) % span),
        }
    }

    fn fd(&self) -> Result<BorrowedFd<'_>, HelperError> {
        self.depot
            .as_ref()
            .map(|f| f.as_fd())
            .ok_or_else(|| unavailable("the depot could not be held open"))
    }

    /// Are project quotas counted and enforced on the depot now?
    pub fn check(&self) -> Result<(), HelperError> {
        let remedy = if self.fs == "ext4" {
            "mount it with -o prjquota; ext4 also needs the quota and project features \
             (mkfs.ext4 -O quota,project, or tune2fs -O quota,project while unmounted)"
        } else {
            "mount it with -o prjquota"
        };
        let mut s = QuotaStatv {
            version: FS_QSTATV_VERSION1,
            ..QuotaStatv::default()
        };
        // SAFETY: s is a live fs_quota_statv (size checked above) with its
        // version set, which the kernel fills. Why safe: it only reports.
        let r = unsafe { quotactl(self.fd()?, qcmd(Q_XGETQSTATV, PRJQUOTA), 0, &mut s) };
        let (path, fs) = (&self.path, &self.fs);
        match r {
            Ok(()) if s.flags & FS_QUOTA_PDQ_ACCT != 0 && s.flags & FS_QUOTA_PDQ_ENFD != 0 => {
                Ok(())
            }
            Ok(()) if s.flags & FS_QUOTA_PDQ_ACCT != 0 => Err(unavailable(&format!(
                "the depot {path} is on {fs} with project quotas counted but not enforced \
                 ({remedy})"
            ))),
            Ok(()) | Err(Errno::ESRCH) => Err(unavailable(&format!(
                "the depot {path} is on {fs} without project quotas ({remedy})"
            ))),
            Err(Errno::ENOSYS) | Err(Errno::EOPNOTSUPP) => Err(unavailable(&format!(
                "the depot {path} is on {fs}, and this kernel has no quota support for it \
                 (quotactl_fd: {}); with a kernel that has (CONFIG_QUOTA, Linux 5.14 or \
                 later), {remedy}",
                r.unwrap_err()
            ))),
            Err(e) => Err(unavailable(&format!(
                "the depot {path} is on {fs}; reading its quota state: {e}"
            ))),
        }
    }

    /// Give a new layer dir a project of its own (see the module comment).
    pub fn assign_project(&self, layer: BorrowedFd) -> Result<(), HelperError> {
        let fd = self.fd()?;
        let span = PROJECTS.end - PROJECTS.start;
        let err = |what: &str, e: Errno| {
            HelperError::new(ErrorKind::System, format!("{what} of the layer: {e}"))
        };
        for _ in 0..TRIES {
            let n = self.next.get();
            self.next.set((n + 1) % span);
            let id = PROJECTS.start + n;
            let q = get_quota(fd, id).map_err(|e| err(&format!("quota of project {id}"), e))?;
            let used = q.curinodes != 0 || q.curspace != 0;
            let limited = q.bhardlimit | q.bsoftlimit | q.ihardlimit | q.isoftlimit != 0;
            if used || limited {
                continue;
            }
            set_project(layer, id).map_err(|e| err(&format!("setting project {id}"), e))?;
            let q = get_quota(fd, id).map_err(|e| err(&format!("quota of project {id}"), e))?;
            if q.curinodes == 1 {
                return Ok(());
            }
        }
        Err(HelperError::new(
            ErrorKind::LimitExceeded,
            format!(
                "no free project id among the {TRIES} tried in {}..{} on the depot's {}",
                PROJECTS.start, PROJECTS.end, self.fs
            ),
        ))
    }

    /// The layer's project id; refused when it has none of Grove's (a
    /// container made while the depot had no project quotas).
    fn project(&self, dir: BorrowedFd, handle: &str) -> Result<u32, HelperError> {
        let layer = fs::open_dir(dir, LAYER).map_err(|e| system(handle, "writable layer", e))?;
        let id = get_project(layer.as_fd()).map_err(|e| system(handle, "FS_IOC_FSGETXATTR", e))?;
        if PROJECTS.contains(&id) {
            Ok(id)
        } else {
            Err(unavailable(&format!(
                "the writable layer of {handle} has no project of its own (project {id}): it \
                 was made while the depot had no project quotas"
            )))
        }
    }

    /// The limit in force, as the client set it: the recorded one while the
    /// kernel holds the limits it made; else what the kernel holds (an
    /// exclusive one: the image's size is not in it).
    fn read_limit(
        &self,
        dir: BorrowedFd,
        handle: &str,
        id: u32,
        image: ImageSize,
    ) -> Result<Option<DiskLimit>, HelperError> {
        let q = get_quota(self.fd()?, id).map_err(|e| system(handle, "Q_GETQUOTA", e))?;
        if q.bhardlimit == 0 && q.ihardlimit == 0 {
            return Ok(None);
        }
        let recorded = fs::read_file_at(dir, LIMIT_FILE)
            .ok()
            .and_then(|s| parse_record(&s));
        if let Some(client) = recorded {
            if let Ok(layer) = super::layer_limit(client, image) {
                if holds(&q, &layer, self.block) {
                    return Ok(Some(client));
                }
            }
        }
        Ok(Some(client_limit(
            DiskLimit {
                bytes: q.bhardlimit.saturating_mul(QIF_DQBLKSIZE),
                inodes: q.ihardlimit,
                scope: DiskScope::Exclusive,
            },
            image,
        )))
    }

    /// Record the client's limit (or its absence).
    fn record(&self, dir: BorrowedFd, client: Option<DiskLimit>) -> Result<(), Errno> {
        match client {
            Some(l) => fs::write_file_at(dir, LIMIT_FILE, format_record(&l).as_bytes(), 0o600),
            None => match nix::unistd::unlinkat(
                Some(dir.as_raw_fd()),
                LIMIT_FILE,
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            ) {
                Ok(()) | Err(Errno::ENOENT) => Ok(()),
                Err(e) => Err(e),
            },
        }
    }

    /// Set the limits: the kernel's from `layer`, the record from `client`;
    /// returns the client's view of the limit it replaces.
    pub fn set_limit(
        &self,
        dir: BorrowedFd,
        handle: &str,
        image: ImageSize,
        client: DiskLimit,
        layer: DiskLimit,
    ) -> Result<Option<DiskLimit>, HelperError> {
        let fd = self.fd()?;
        let id = self.project(dir, handle)?;
        let old = self.read_limit(dir, handle, id, image)?;
        set_quota(fd, id, Some(layer))
            .map_err(|e| system(handle, &format!("Q_SETQUOTA of project {id}"), e))?;
        if let Err(e) = self.record(dir, Some(client)) {
            let old_layer = old.map(|l| super::layer_limit(l, image).unwrap_or(l));
            if let Err(r) = set_quota(fd, id, old_layer) {
                log_error!("grove-helper: {handle}: restoring project {id}'s limits: {r}");
            }
            return Err(system(handle, "recording the disk limit", e));
        }
        Ok(old)
    }

    pub fn restore_limit(
        &self,
        dir: BorrowedFd,
        handle: &str,
        client: Option<DiskLimit>,
        layer: Option<DiskLimit>,
    ) -> Result<(), HelperError> {
        let id = self.project(dir, handle)?;
        set_quota(self.fd()?, id, layer)
            .map_err(|e| system(handle, &format!("restoring project {id}'s limits"), e))?;
        self.record(dir, client)
            .map_err(|e| system(handle, "recording the disk limit", e))
    }

    pub fn limit(
        &self,
        dir: BorrowedFd,
        handle: &str,
        image: ImageSize,
    ) -> Result<Option<DiskLimit>, HelperError> {
        let id = self.project(dir, handle)?;
        self.read_limit(dir, handle, id, image)
    }

    /// The project's usage now; the image's size added for the referenced
    /// figures.
    pub fn usage(
        &self,
        dir: BorrowedFd,
        handle: &str,
        image: ImageSize,
    ) -> Result<DiskUsage, HelperError> {
        let id = self.project(dir, handle)?;
        let q = get_quota(self.fd()?, id).map_err(|e| system(handle, "Q_GETQUOTA", e))?;
        Ok(DiskUsage {
            referenced_bytes: q.curspace.saturating_add(image.bytes),
            exclusive_bytes: q.curspace,
            referenced_inodes: q.curinodes.saturating_add(image.inodes),
            exclusive_inodes: q.curinodes,
        })
    }

    /// Clear the project's limits (the container is going).
    pub fn release(&self, dir: BorrowedFd, handle: &str) -> Result<(), HelperError> {
        let id = match self.project(dir, handle) {
            Ok(id) => id,
            Err(e) if e.kind == ErrorKind::PolicyRefused => return Ok(()),
            Err(e) => return Err(e),
        };
        set_quota(self.fd()?, id, None)
            .map_err(|e| system(handle, &format!("clearing project {id}'s limits"), e))
    }
}

/// The project id of `dir`.
/// Why safe: FS_IOC_FSGETXATTR only reports the inode's attributes.
fn get_project(dir: BorrowedFd) -> Result<u32, Errno> {
    let mut x = FsXattr::default();
    // SAFETY: x is a live struct fsxattr (size checked above), which the
    // kernel fills.
    Errno::result(unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSGETXATTR as _, &mut x) })?;
    Ok(x.projid)
}

/// Put `dir` (an empty layer dir the helper just made) in project `id`,
/// with PROJINHERIT so what is made in it inherits the project.
/// Why safe: it changes only that directory's project and flag (its other
/// attributes are written back as read).
fn set_project(dir: BorrowedFd, id: u32) -> Result<(), Errno> {
    let mut x = FsXattr::default();
    // SAFETY: as in get_project.
    Errno::result(unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSGETXATTR as _, &mut x) })?;
    x.projid = id;
    x.xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: x is a live struct fsxattr, which the kernel reads.
    Errno::result(unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSSETXATTR as _, &mut x) })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_the_linux_headers() {
        // Values from the kernel headers (printf("%#x", ...)).
        assert_eq!(qcmd(Q_GETQUOTA, PRJQUOTA), 0x8000_0702);
        assert_eq!(qcmd(Q_SETQUOTA, PRJQUOTA), 0x8000_0802);
        assert_eq!(qcmd(Q_XGETQSTATV, PRJQUOTA), 0x0058_0802);
        assert_eq!(FS_IOC_FSGETXATTR, 0x801c_581f);
        assert_eq!(FS_IOC_FSSETXATTR, 0x401c_5820);
        assert_eq!(std::mem::offset_of!(IfDqblk, valid), 64);
        assert_eq!(std::mem::offset_of!(QuotaStatv, pquota), 56);
        assert_eq!(std::mem::offset_of!(FsXattr, projid), 12);
    }

    #[test]
    fn the_record_is_the_client_limit_and_nothing_else() {
        let l = DiskLimit {
            bytes: 52_428_801,
            inodes: 1000,
            scope: DiskScope::Total,
        };
        assert_eq!(parse_record(&format_record(&l)), Some(l));
        let e = DiskLimit {
            scope: DiskScope::Exclusive,
            ..l
        };
        assert_eq!(parse_record(&format_record(&e)), Some(e));
        for bad in [
            "",
            "total 1",
            "total 1 2 3",
            "both 1 2",
            "total x 2",
            "total -1 2",
        ] {
            assert_eq!(parse_record(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_kernel_holds_a_limit_rounded_up_to_its_units() {
        let layer = DiskLimit {
            bytes: 1_048_577,
            inodes: 50,
            scope: DiskScope::Exclusive,
        };
        let q = |kib, inodes| IfDqblk {
            bhardlimit: kib,
            ihardlimit: inodes,
            ..IfDqblk::default()
        };
        // ext4: to the KiB; XFS: to its 4 KiB block.
        assert!(holds(&q(1025, 50), &layer, 4096));
        assert!(holds(&q(1028, 50), &layer, 4096));
        assert!(!holds(&q(1029, 50), &layer, 4096));
        assert!(!holds(&q(1024, 50), &layer, 4096));
        assert!(!holds(&q(1025, 51), &layer, 4096));
        let none = DiskLimit {
            bytes: 0,
            inodes: 0,
            scope: DiskScope::Exclusive,
        };
        assert!(holds(&q(0, 0), &none, 4096));
    }
}
