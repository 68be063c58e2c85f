//! Disk limits: each container's writable layer (the overlayfs upper and
//! work dirs) is a btrfs subvolume of its own, `depot/<handle>/layer`, so
//! its qgroup 0/<subvolume id> counts exactly the container's writes and a
//! qgroup limit makes the kernel fail writes past it with EDQUOT.
//!
//! The two scopes: `Exclusive` limits the container's own writes (max_excl
//! of the layer's qgroup). `Total` limits image + writes: the image below
//! the layer is shared read-only by every container of it, so it cannot be
//! charged to one qgroup; instead its size, measured once at create
//! (`depot/<handle>/image-bytes`), is taken off the limit, and the layer gets
//! max_rfer = limit − image size. Reading back adds it again, and the
//! total usage reported is image size + the layer's referenced bytes.
//!
//! Everything here is an ioctl on a directory fd the helper opened beneath
//! its depot (never a path from a request, never btrfs-progs), or a read of
//! the filesystem's own sysfs qgroup files. The ioctl layouts are those of
//! linux/btrfs.h; each call says why it is safe next to it.
//!
//! On a depot that is not btrfs, or a btrfs without quotas, the layer is a
//! plain directory (or an unlimited subvolume) and every disk-limit request
//! is refused with the reason; nothing pretends to limit.

use crate::fs;
use grove_schema::helper::{DiskLimit, DiskScope, DiskUsage, ErrorKind, HelperError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::statfs::{fstatfs, BTRFS_SUPER_MAGIC};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The name of the writable layer inside a container's depot dir.
pub const LAYER: &str = "layer";
/// The size of the container's image (bytes allocated on disk), in its
/// depot dir; absent (0) for containers made before it was recorded.
pub const IMAGE_BYTES: &str = "image-bytes";
/// The least room a total-scope limit must leave for the container's writes.
const MIN_WRITABLE: u64 = 1 << 20;

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
        }) => (bytes, CLEAR_VALUE),
        Some(DiskLimit {
            bytes,
            scope: DiskScope::Exclusive,
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

/// A container's writable layer as the limit code sees it.
struct Layer {
    /// Held so the subvolume stays the one whose id we read.
    _fd: OwnedFd,
    /// Its qgroup is 0/id.
    id: u64,
    /// The size of the image beneath it, recorded at create.
    image_bytes: u64,
}

impl Layer {
    /// The limit to give the kernel for the limit a client asked for: a
    /// total-scope limit covers the image too, so the layer gets what is
    /// left once the image is counted; a limit that leaves less than 1 MiB
    /// for writes is refused with both sizes.
    fn kernel_limit(&self, limit: DiskLimit) -> Result<DiskLimit, HelperError> {
        match limit.scope {
            DiskScope::Exclusive => Ok(limit),
            DiskScope::Total => match limit.bytes.checked_sub(self.image_bytes) {
                Some(left) if left >= MIN_WRITABLE => Ok(DiskLimit {
                    bytes: left,
                    scope: DiskScope::Total,
                }),
                _ => Err(HelperError::new(
                    ErrorKind::InvalidValue,
                    format!(
                        "disk.bytes {} with scope total must exceed the image's size ({} bytes) \
                         by at least 1 MiB for the container's own writes",
                        limit.bytes, self.image_bytes
                    ),
                )),
            },
        }
    }
}

/// What the depot supports, decided at start-up.
pub enum Disk {
    /// The depot is on btrfs; `sysfs` is /sys/fs/btrfs/<uuid>, whose
    /// qgroups/ dir exists while quotas are enabled.
    Btrfs { sysfs: OwnedFd, uuid: String },
    /// Disk limits cannot be had; the reason, for logs and refusals.
    Unavailable(String),
}

fn unavailable(why: &str) -> HelperError {
    HelperError::new(
        ErrorKind::PolicyRefused,
        format!("disk limits are unavailable: {why}"),
    )
}

impl Disk {
    pub fn detect(depot: BorrowedFd, depot_path: &str) -> Disk {
        match is_btrfs(depot) {
            Ok(true) => {}
            Ok(false) => {
                return Disk::Unavailable(format!(
                    "the depot {depot_path} is not on btrfs (this kernel has no ext4/XFS \
                     project quotas; put the depot on a btrfs filesystem with quotas enabled)"
                ))
            }
            Err(e) => return Disk::Unavailable(format!("statfs of the depot: {e}")),
        }
        let uuid = match fsid(depot) {
            Ok(u) => u,
            Err(e) => return Disk::Unavailable(format!("BTRFS_IOC_FS_INFO on the depot: {e}")),
        };
        let path = format!("/sys/fs/btrfs/{uuid}");
        match fs::openat(None, &path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0) {
            Ok(sysfs) => Disk::Btrfs { sysfs, uuid },
            Err(e) => Disk::Unavailable(format!("{path}: {e}")),
        }
    }

    /// For the start-up log line.
    pub fn describe(&self) -> String {
        match self {
            Disk::Btrfs { uuid, .. } => match self.check() {
                Ok(()) => format!("btrfs {uuid} with quotas"),
                Err(e) => e.message,
            },
            Disk::Unavailable(why) => format!("disk limits unavailable: {why}"),
        }
    }

    /// Can a disk limit be set now? Quotas can be switched off and on while
    /// the helper runs, so this is asked at every request.
    pub fn check(&self) -> Result<(), HelperError> {
        match self {
            Disk::Unavailable(why) => Err(unavailable(why)),
            Disk::Btrfs { sysfs, uuid } => {
                match fs::read_file_at(sysfs.as_fd(), "qgroups/enabled") {
                    Ok(s) if s.trim() == "1" => Ok(()),
                    _ => Err(unavailable(&format!(
                        "quotas are not enabled on the depot's btrfs {uuid} \
                         (enable them with: btrfs quota enable <depot>)"
                    ))),
                }
            }
        }
    }

    /// Make the container's writable layer beneath its depot dir: a
    /// subvolume on btrfs, a plain directory elsewhere.
    pub fn make_layer(&self, dir: BorrowedFd) -> Result<(), Errno> {
        match self {
            Disk::Btrfs { .. } => create_subvolume(dir, LAYER),
            Disk::Unavailable(_) => fs::mkdir_at(dir, LAYER, 0o755, false),
        }
    }

    /// The container's layer (opened without following symlinks), its
    /// qgroup id and its image's size; refused when limits are unavailable
    /// or the layer is not a subvolume (a container made while the depot
    /// was elsewhere).
    fn layer(&self, depot: BorrowedFd, handle: &str) -> Result<Layer, HelperError> {
        self.check()?;
        let sys = |what: &str, e: Errno| {
            HelperError::new(ErrorKind::System, format!("{what} of {handle}: {e}"))
        };
        let dir = fs::open_dir(depot, handle).map_err(|e| sys("depot dir", e))?;
        let image_bytes = match fs::read_file_at(dir.as_fd(), IMAGE_BYTES) {
            Ok(s) => s.trim().parse().map_err(|_| {
                HelperError::new(
                    ErrorKind::System,
                    format!("{IMAGE_BYTES} of {handle} holds {s:?}, not a number"),
                )
            })?,
            Err(Errno::ENOENT) => 0,
            Err(e) => return Err(sys(IMAGE_BYTES, e)),
        };
        let layer = fs::open_dir(dir.as_fd(), LAYER).map_err(|e| sys("writable layer", e))?;
        match subvolume_id(layer.as_fd()).map_err(|e| sys("subvolume id", e))? {
            Some(id) => Ok(Layer {
                _fd: layer,
                id,
                image_bytes,
            }),
            None => Err(unavailable(&format!(
                "the writable layer of {handle} is not a btrfs subvolume"
            ))),
        }
    }

    fn qgroup_file(&self, id: u64, file: &str) -> Result<u64, HelperError> {
        let Disk::Btrfs { sysfs, .. } = self else {
            return Err(unavailable("the depot is not on btrfs"));
        };
        let path = format!("qgroups/0_{id}/{file}");
        let text = fs::read_file_at(sysfs.as_fd(), &path).map_err(|e| {
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

    /// The limit in force, as the client set it (a total-scope limit with
    /// the image's size added back).
    fn read_limit(&self, layer: &Layer) -> Result<Option<DiskLimit>, HelperError> {
        let id = layer.id;
        let flags = self.qgroup_file(id, "limit_flags")?;
        Ok(if flags & BTRFS_QGROUP_LIMIT_MAX_RFER != 0 {
            Some(DiskLimit {
                bytes: self
                    .qgroup_file(id, "max_referenced")?
                    .saturating_add(layer.image_bytes),
                scope: DiskScope::Total,
            })
        } else if flags & BTRFS_QGROUP_LIMIT_MAX_EXCL != 0 {
            Some(DiskLimit {
                bytes: self.qgroup_file(id, "max_exclusive")?,
                scope: DiskScope::Exclusive,
            })
        } else {
            None
        })
    }

    /// Set the container's limit; returns the limit it replaces (for an
    /// all-or-nothing caller to put back).
    pub fn set_limit(
        &self,
        depot: BorrowedFd,
        handle: &str,
        limit: DiskLimit,
    ) -> Result<Option<DiskLimit>, HelperError> {
        let layer = self.layer(depot, handle)?;
        let id = layer.id;
        let old = self.read_limit(&layer)?;
        let kernel = layer.kernel_limit(limit)?;
        qgroup_limit(depot, id, Some(kernel)).map_err(|e| {
            HelperError::new(
                ErrorKind::System,
                format!("BTRFS_IOC_QGROUP_LIMIT on qgroup 0/{id}: {e}"),
            )
        })?;
        Ok(old)
    }

    /// Put back a limit `set_limit` replaced.
    pub fn restore_limit(
        &self,
        depot: BorrowedFd,
        handle: &str,
        old: Option<DiskLimit>,
    ) -> Result<(), HelperError> {
        let layer = self.layer(depot, handle)?;
        let id = layer.id;
        // What read_limit reported is always at least the image's size.
        let old = old.map(|l| layer.kernel_limit(l).unwrap_or(l));
        qgroup_limit(depot, id, old).map_err(|e| {
            HelperError::new(
                ErrorKind::System,
                format!("restoring the limit of qgroup 0/{id}: {e}"),
            )
        })
    }

    /// The limit in force; None when there is none or none can be had.
    pub fn limit(&self, depot: BorrowedFd, handle: &str) -> Result<Option<DiskLimit>, HelperError> {
        match self.layer(depot, handle) {
            Ok(layer) => self.read_limit(&layer),
            Err(e) if e.kind == ErrorKind::PolicyRefused => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The layer's usage; None when it cannot be measured here.
    pub fn usage(&self, depot: BorrowedFd, handle: &str) -> Result<Option<DiskUsage>, HelperError> {
        match self.layer(depot, handle) {
            Ok(layer) => Ok(Some(DiskUsage {
                referenced_bytes: self
                    .qgroup_file(layer.id, "referenced")?
                    .saturating_add(layer.image_bytes),
                exclusive_bytes: self.qgroup_file(layer.id, "exclusive")?,
            })),
            Err(e) if e.kind == ErrorKind::PolicyRefused => Ok(None),
            Err(e) => Err(e),
        }
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
    fn a_depot_off_btrfs_refuses_limits_with_the_reason() {
        let dir = fs::openat(None, "/proc", OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0).unwrap();
        let d = Disk::detect(dir.as_fd(), "/proc");
        let e = d.check().unwrap_err();
        assert_eq!(e.kind, ErrorKind::PolicyRefused);
        assert!(e.message.contains("not on btrfs"), "{}", e.message);
        assert_eq!(d.limit(dir.as_fd(), "x").unwrap(), None);
        assert_eq!(d.usage(dir.as_fd(), "x").unwrap(), None);
    }
}
