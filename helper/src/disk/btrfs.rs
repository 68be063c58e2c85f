//! btrfs disk limits: each container's writable layer is a subvolume of
//! its own, `depot/<handle>/layer`, so its qgroup 0/<subvolume id> counts
//! exactly the container's writes and a qgroup limit makes the kernel fail
//! writes past it with EDQUOT. An exclusive-scope limit is the qgroup's
//! max_excl; a total-scope one its max_rfer (what `layer_limit` leaves once
//! the image is counted). btrfs qgroups count no inodes: inode limits are
//! refused.
//!
//! Everything here is an ioctl on a directory fd the helper opened beneath
//! its depot (never a path from a request, never btrfs-progs), or a read of
//! the filesystem's own sysfs qgroup files. The ioctl layouts are those of
//! linux/btrfs.h; each call says why it is safe next to it.

use super::{client_limit, unavailable, ImageSize};
use crate::fs;
use grove_schema::helper::{DiskLimit, DiskScope, DiskUsage, ErrorKind, HelperError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::statfs::{fstatfs, BTRFS_SUPER_MAGIC};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

const BTRFS_IOCTL_MAGIC: u64 = 0x94;
/// The inode number of every subvolume's root directory.
const BTRFS_FIRST_FREE_OBJECTID: u64 = 256;
const BTRFS_QGROUP_LIMIT_MAX_RFER: u64 = 1;
const BTRFS_QGROUP_LIMIT_MAX_EXCL: u64 = 2;
/// A limit value of all ones clears that limit (fs/btrfs/qgroup.c CLEAR_VALUE).
const CLEAR_VALUE: u64 = u64::MAX;

/// _IOC(dir, 0x94, nr, size) as asm-generic/ioctl.h builds it.
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (BTRFS_IOCTL_MAGIC << 8) | nr
}
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// struct btrfs_ioctl_vol_args.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}
/// struct btrfs_ioctl_ino_lookup_args.
#[repr(C)]
struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}
/// struct btrfs_ioctl_fs_info_args.
#[repr(C)]
struct FsInfoArgs {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    nodesize: u32,
    sectorsize: u32,
    clone_alignment: u32,
    csum_type: u16,
    csum_size: u16,
    flags: u64,
    generation: u64,
    metadata_uuid: [u8; 16],
    reserved: [u8; 944],
}
/// struct btrfs_ioctl_qgroup_limit_args (with struct btrfs_qgroup_limit inlined).
#[repr(C)]
struct QgroupLimitArgs {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<InoLookupArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<FsInfoArgs>() == 1024);
const _: () = assert!(std::mem::size_of::<QgroupLimitArgs>() == 48);

const BTRFS_IOC_SUBVOL_CREATE: u64 = ioc(IOC_WRITE, 14, std::mem::size_of::<VolArgs>());
const BTRFS_IOC_INO_LOOKUP: u64 = ioc(
    IOC_READ | IOC_WRITE,
    18,
    std::mem::size_of::<InoLookupArgs>(),
);
const BTRFS_IOC_FS_INFO: u64 = ioc(IOC_READ, 31, std::mem::size_of::<FsInfoArgs>());
const BTRFS_IOC_QGROUP_LIMIT: u64 = ioc(IOC_READ, 43, std::mem::size_of::<QgroupLimitArgs>());

/// ioctl(fd, request, arg) for a struct the caller owns.
///
/// # Safety
/// `arg` must point at a live value of exactly the layout and size that
/// `request` encodes, which the kernel may read and write.
unsafe fn ioctl<T>(fd: BorrowedFd, request: u64, arg: *mut T) -> Result<(), Errno> {
    // SAFETY: forwarded to the caller's contract above.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    Errno::result(r).map(|_| ())
}

/// Is this fd on a btrfs filesystem?
pub fn is_btrfs(fd: BorrowedFd) -> Result<bool, Errno> {
    Ok(fstatfs(fd)?.filesystem_type() == BTRFS_SUPER_MAGIC)
}

/// Create the subvolume `name` beneath the directory `parent`.
/// Why safe: the kernel creates a new, empty subvolume as one new entry of
/// `parent` (EEXIST if the name is taken; no path is walked, `name` is a
/// constant single component); it owns nothing outside that entry.
pub fn create_subvolume(parent: BorrowedFd, name: &str) -> Result<(), Errno> {
    if name.is_empty() || name.len() >= 4088 || name.contains('/') || name.contains('\0') {
        return Err(Errno::EINVAL);
    }
    let mut args = VolArgs {
        fd: 0,
        name: [0; 4088],
    };
    args.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: args is a live btrfs_ioctl_vol_args (size checked above) with
    // a NUL-terminated name; the kernel only reads it.
    unsafe { ioctl(parent, BTRFS_IOC_SUBVOL_CREATE, &mut args) }
}

/// The id of the subvolume whose root directory `dir` is, or None when
/// `dir` is an ordinary directory (not a subvolume's root).
/// Why safe: INO_LOOKUP of the subvolume root only reports the tree id.
pub fn subvolume_id(dir: BorrowedFd) -> Result<Option<u64>, Errno> {
    let st = nix::sys::stat::fstat(dir.as_raw_fd())?;
    if st.st_ino != BTRFS_FIRST_FREE_OBJECTID || !is_btrfs(dir)? {
        return Ok(None);
    }
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: BTRFS_FIRST_FREE_OBJECTID,
        name: [0; 4080],
    };
    // SAFETY: args is a live btrfs_ioctl_ino_lookup_args (size checked
    // above); the kernel fills treeid and name within it.
    unsafe { ioctl(dir, BTRFS_IOC_INO_LOOKUP, &mut args)? };
    Ok(Some(args.treeid))
}

/// The filesystem's UUID as /sys/fs/btrfs names it.
/// Why safe: FS_INFO only reports about the filesystem.
fn fsid(fd: BorrowedFd) -> Result<String, Errno> {
    // SAFETY: all-zero is a valid FsInfoArgs (plain integers and arrays).
    let mut args: FsInfoArgs = unsafe { std::mem::zeroed() };
    // SAFETY: args is a live btrfs_ioctl_fs_info_args (size checked above).
    unsafe { ioctl(fd, BTRFS_IOC_FS_INFO, &mut args)? };
    let h: Vec<String> = args.fsid.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

/// Set (or clear, with None) the limit of qgroup 0/`id`; the other scope's
/// limit is cleared, so one limit is in force at a time.
///
/// `fd` must be on the same filesystem but *outside* the limited subvolume
/// (the depot dir): the ioctl starts a transaction whose metadata
/// reservation is charged to the fd's subvolume, so through the layer's own
/// fd a qgroup already over its limit could never be raised again (EDQUOT).
/// Why safe: the qgroup is the one of a subvolume the helper created for
/// this container (its id read from the layer's own fd); a limit only makes
/// the kernel refuse writes into that subvolume.
/// For a total-scope limit the caller passes what is left for writes.
fn qgroup_limit(fd: BorrowedFd, id: u64, limit: Option<DiskLimit>) -> Result<(), Errno> {
    let (rfer, excl) = match limit {
        None => (CLEAR_VALUE, CLEAR_VALUE),
        Some(DiskLimit {
            bytes,
            scope: DiskScope::Total,
            ..
        }) => (bytes, CLEAR_VALUE),
        Some(DiskLimit {
            bytes,
            scope: DiskScope::Exclusive,
            ..
        }) => (CLEAR_VALUE, bytes),
    };
    let mut args = QgroupLimitArgs {
        qgroupid: id,
        flags: BTRFS_QGROUP_LIMIT_MAX_RFER | BTRFS_QGROUP_LIMIT_MAX_EXCL,
        max_rfer: rfer,
        max_excl: excl,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    // SAFETY: args is a live btrfs_ioctl_qgroup_limit_args (size checked
    // above); the kernel only reads it.
    unsafe { ioctl(fd, BTRFS_IOC_QGROUP_LIMIT, &mut args) }
}

/// The depot's btrfs, with quotas (or not: see `check`).
pub struct Qgroups {
    /// /sys/fs/btrfs/<uuid>, whose qgroups/ dir exists while quotas are
    /// enabled.
    sysfs: OwnedFd,
    pub uuid: String,
}

/// A container's writable layer as the limit code sees it.
struct Layer {
    /// Held so the subvolume stays the one whose id we read.
    _fd: OwnedFd,
    /// Its qgroup is 0/id.
    id: u64,
}

impl Qgroups {
    pub fn open(depot: BorrowedFd) -> Result<Qgroups, String> {
        let uuid = fsid(depot).map_err(|e| format!("BTRFS_IOC_FS_INFO on the depot: {e}"))?;
        let path = format!("/sys/fs/btrfs/{uuid}");
        match fs::openat(None, &path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0) {
            Ok(sysfs) => Ok(Qgroups { sysfs, uuid }),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }

    pub fn check(&self) -> Result<(), HelperError> {
        match fs::read_file_at(self.sysfs.as_fd(), "qgroups/enabled") {
            Ok(s) if s.trim() == "1" => Ok(()),
            _ => Err(unavailable(&format!(
                "quotas are not enabled on the depot's btrfs {} \
                 (enable them with: btrfs quota enable <depot>)",
                self.uuid
            ))),
        }
    }

    /// Refuse what qgroups cannot limit: inodes.
    pub fn supports(limit: &DiskLimit) -> Result<(), HelperError> {
        if limit.inodes != 0 {
            return Err(HelperError::new(
                ErrorKind::InvalidValue,
                format!(
                    "disk.inodes {}: btrfs qgroups count no inodes, and the depot is on btrfs, \
                     so only byte limits can be had (give 0 inodes, or put the depot on ext4 or \
                     XFS with project quotas)",
                    limit.inodes
                ),
            ));
        }
        if limit.bytes == 0 {
            return Err(HelperError::new(
                ErrorKind::InvalidValue,
                "disk.bytes 0: on btrfs a disk limit is a byte limit; give bytes",
            ));
        }
        Ok(())
    }

    /// The container's layer (opened without following symlinks) and its
    /// qgroup id; refused when the layer is not a subvolume (a container
    /// made while the depot was elsewhere).
    fn layer(&self, dir: BorrowedFd, handle: &str) -> Result<Layer, HelperError> {
        let sys = |what: &str, e: Errno| {
            HelperError::new(ErrorKind::System, format!("{what} of {handle}: {e}"))
        };
        let layer = fs::open_dir(dir, super::LAYER).map_err(|e| sys("writable layer", e))?;
        match subvolume_id(layer.as_fd()).map_err(|e| sys("subvolume id", e))? {
            Some(id) => Ok(Layer { _fd: layer, id }),
            None => Err(unavailable(&format!(
                "the writable layer of {handle} is not a btrfs subvolume"
            ))),
        }
    }

    fn qgroup_file(&self, id: u64, file: &str) -> Result<u64, HelperError> {
        let path = format!("qgroups/0_{id}/{file}");
        let text = fs::read_file_at(self.sysfs.as_fd(), &path).map_err(|e| {
            HelperError::new(
                ErrorKind::System,
                format!("reading /sys/fs/btrfs/…/{path}: {e}"),
            )
        })?;
        text.trim().parse().map_err(|e| {
            HelperError::new(
                ErrorKind::System,
                format!("/sys/fs/btrfs/…/{path}: {text:?}: {e}"),
            )
        })
    }

    /// The limit in force on the layer's qgroup (as the layer holds it).
    fn read_limit(&self, layer: &Layer) -> Result<Option<DiskLimit>, HelperError> {
        let id = layer.id;
        let flags = self.qgroup_file(id, "limit_flags")?;
        let limit = |bytes, scope| DiskLimit {
            bytes,
            inodes: 0,
            scope,
        };
        Ok(if flags & BTRFS_QGROUP_LIMIT_MAX_RFER != 0 {
            Some(limit(
                self.qgroup_file(id, "max_referenced")?,
                DiskScope::Total,
            ))
        } else if flags & BTRFS_QGROUP_LIMIT_MAX_EXCL != 0 {
            Some(limit(
                self.qgroup_file(id, "max_exclusive")?,
                DiskScope::Exclusive,
            ))
        } else {
            None
        })
    }

    /// Set the layer's limit (`layer_limit` of the client's); returns the
    /// client's view of the limit it replaces.
    pub fn set_limit(
        &self,
        depot: BorrowedFd,
        dir: BorrowedFd,
        handle: &str,
        image: ImageSize,
        layer_limit: DiskLimit,
    ) -> Result<Option<DiskLimit>, HelperError> {
        let layer = self.layer(dir, handle)?;
        let id = layer.id;
        let old = self.read_limit(&layer)?.map(|l| client_limit(l, image));
        qgroup_limit(depot, id, Some(layer_limit)).map_err(|e| {
            HelperError::new(
                ErrorKind::System,
                format!("BTRFS_IOC_QGROUP_LIMIT on qgroup 0/{id}: {e}"),
            )
        })?;
        Ok(old)
    }

    /// Put back a layer limit `set_limit` replaced.
    pub fn restore_limit(
        &self,
        depot: BorrowedFd,
        dir: BorrowedFd,
        handle: &str,
        layer_limit: Option<DiskLimit>,
    ) -> Result<(), HelperError> {
        let id = self.layer(dir, handle)?.id;
        qgroup_limit(depot, id, layer_limit).map_err(|e| {
            HelperError::new(
                ErrorKind::System,
                format!("restoring the limit of qgroup 0/{id}: {e}"),
            )
        })
    }

    /// The limit in force, as the client set it.
    pub fn limit(
        &self,
        dir: BorrowedFd,
        handle: &str,
        image: ImageSize,
    ) -> Result<Option<DiskLimit>, HelperError> {
        let layer = self.layer(dir, handle)?;
        Ok(self.read_limit(&layer)?.map(|l| client_limit(l, image)))
    }

    /// The layer's usage, the image's bytes added to what it references.
    pub fn usage(
        &self,
        dir: BorrowedFd,
        handle: &str,
        image: ImageSize,
    ) -> Result<DiskUsage, HelperError> {
        let layer = self.layer(dir, handle)?;
        Ok(DiskUsage {
            referenced_bytes: self
                .qgroup_file(layer.id, "referenced")?
                .saturating_add(image.bytes),
            exclusive_bytes: self.qgroup_file(layer.id, "exclusive")?,
            referenced_inodes: 0,
            exclusive_inodes: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_btrfs_h() {
        // Values from the kernel headers (printf("%#lx", BTRFS_IOC_...)).
        assert_eq!(BTRFS_IOC_SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(BTRFS_IOC_INO_LOOKUP, 0xd000_9412);
        assert_eq!(BTRFS_IOC_FS_INFO, 0x8400_941f);
        assert_eq!(BTRFS_IOC_QGROUP_LIMIT, 0x8030_942b);
    }

    #[test]
    fn qgroups_refuse_inode_limits_by_name() {
        let e = Qgroups::supports(&DiskLimit {
            bytes: 1 << 20,
            inodes: 100,
            scope: DiskScope::Total,
        })
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidValue);
        assert!(
            e.message.contains("btrfs qgroups count no inodes"),
            "{}",
            e.message
        );
        Qgroups::supports(&DiskLimit {
            bytes: 1 << 20,
            inodes: 0,
            scope: DiskScope::Exclusive,
        })
        .unwrap();
    }
}
