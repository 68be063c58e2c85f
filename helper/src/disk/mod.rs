//! Disk limits on each container's writable layer (`depot/<handle>/layer`,
//! which holds the overlayfs upper and work dirs), by the depot's
//! filesystem, decided at start-up from its statfs magic:
//!
//! - btrfs: the layer is a subvolume with a qgroup limit (btrfs.rs); bytes
//!   only, btrfs qgroups count no inodes.
//! - ext4 and XFS: the layer carries a project id that everything made in
//!   it inherits, with project quota limits on bytes and inodes
//!   (project.rs).
//! - anything else: every disk-limit request is refused with the reason.
//!
//! The two scopes: `Exclusive` limits the container's own writes. `Total`
//! limits image + writes: the image below the layer is shared read-only by
//! every container of it, so it cannot be charged to one container;
//! instead its size (bytes and inodes, measured once at create:
//! `image-bytes`, `image-inodes`) is taken off the limit and the layer gets
//! the rest (`layer_limit`). Reading back adds it again.
//!
//! Everything is done on fds the helper opened beneath its depot, never
//! on a path from a request.

pub mod btrfs;
pub mod project;

use crate::fs;
use grove_schema::helper::{
    DiskLimit, DiskScope, DiskUsage, ErrorKind, HelperError, MIN_WRITABLE_INODES,
};
use nix::errno::Errno;
use nix::sys::statfs::fstatfs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The name of the writable layer inside a container's depot dir.
pub const LAYER: &str = "layer";
/// The size of the container's image (bytes allocated on disk), in its
/// depot dir; absent (0) for containers made before it was recorded.
pub const IMAGE_BYTES: &str = "image-bytes";
/// The number of the image's inodes, in its depot dir; absent (0) for
/// containers made before it was recorded.
pub const IMAGE_INODES: &str = "image-inodes";
/// The least room a total-scope limit must leave for the container's writes.
const MIN_WRITABLE: u64 = 1 << 20;

/// What a container's image occupies beneath its writable layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageSize {
    pub bytes: u64,
    pub inodes: u64,
}

/// Record the image's size in a new container's depot dir.
pub fn record_image_size(dir: BorrowedFd, size: ImageSize) -> Result<(), Errno> {
    fs::write_file_at(
        dir,
        IMAGE_BYTES,
        format!("{}\n", size.bytes).as_bytes(),
        0o600,
    )?;
    fs::write_file_at(
        dir,
        IMAGE_INODES,
        format!("{}\n", size.inodes).as_bytes(),
        0o600,
    )
}

fn sys(handle: &str, what: &str, e: impl std::fmt::Display) -> HelperError {
    HelperError::new(ErrorKind::System, format!("{what} of {handle}: {e}"))
}

/// The image size recorded in a container's depot dir (`dir`).
fn image_size(dir: BorrowedFd, handle: &str) -> Result<ImageSize, HelperError> {
    let read = |name: &str| match fs::read_file_at(dir, name) {
        Ok(s) => s.trim().parse().map_err(|_| {
            HelperError::new(
                ErrorKind::System,
                format!("{name} of {handle} holds {s:?}, not a number"),
            )
        }),
        Err(Errno::ENOENT) => Ok(0),
        Err(e) => Err(sys(handle, name, e)),
    };
    Ok(ImageSize {
        bytes: read(IMAGE_BYTES)?,
        inodes: read(IMAGE_INODES)?,
    })
}

/// The limit the layer gets for the limit a client asked for: a total-scope
/// limit covers the image too, so the layer gets what is left once the
/// image is counted; a limit that leaves less than 1 MiB (or
/// MIN_WRITABLE_INODES inodes) for writes is refused with both sizes.
/// 0 (no limit of that kind) stays 0.
pub fn layer_limit(limit: DiskLimit, image: ImageSize) -> Result<DiskLimit, HelperError> {
    if limit.scope == DiskScope::Exclusive {
        return Ok(limit);
    }
    let left = |what: &str, want: u64, image: u64, min: u64, unit: &str| match want {
        0 => Ok(0),
        _ => match want.checked_sub(image) {
            Some(left) if left >= min => Ok(left),
            _ => Err(HelperError::new(
                ErrorKind::InvalidValue,
                format!(
                    "disk.{what} {want} with scope total must exceed the image's \
                     {image} {what} by at least {min} {unit} for the container's own writes"
                ),
            )),
        },
    };
    Ok(DiskLimit {
        bytes: left("bytes", limit.bytes, image.bytes, MIN_WRITABLE, "(1 MiB)")?,
        inodes: left(
            "inodes",
            limit.inodes,
            image.inodes,
            MIN_WRITABLE_INODES,
            "inodes",
        )?,
        scope: limit.scope,
    })
}

/// The client's view of a limit the layer holds (`layer_limit` undone).
pub fn client_limit(layer: DiskLimit, image: ImageSize) -> DiskLimit {
    match layer.scope {
        DiskScope::Exclusive => layer,
        DiskScope::Total => DiskLimit {
            bytes: match layer.bytes {
                0 => 0,
                b => b.saturating_add(image.bytes),
            },
            inodes: match layer.inodes {
                0 => 0,
                i => i.saturating_add(image.inodes),
            },
            scope: DiskScope::Total,
        },
    }
}

/// What the depot supports, decided at start-up.
pub enum Disk {
    Btrfs(btrfs::Qgroups),
    Project(project::Quotas),
    /// Disk limits cannot be had; the reason, for logs and refusals.
    Unavailable(String),
}

/// A read a backend refuses (a layer made while the depot had no limits)
/// is no figure rather than an error.
fn refused_as_none<T>(got: Result<T, HelperError>) -> Result<Option<T>, HelperError> {
    match got {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind == ErrorKind::PolicyRefused => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn unavailable(why: &str) -> HelperError {
    HelperError::new(
        ErrorKind::PolicyRefused,
        format!("disk limits are unavailable: {why}"),
    )
}

/// What the fix is, for a refusal.
const REMEDY: &str = "put the depot on btrfs with quotas enabled (btrfs quota enable), or on \
     ext4 or XFS mounted with -o prjquota (ext4 also needs the quota and project features: \
     mkfs.ext4 -O quota,project, or tune2fs -O quota,project while unmounted)";

/// A filesystem's name from its statfs magic, for messages.
fn fs_name(magic: i64) -> String {
    match magic {
        0x9123_683e => "btrfs".into(),
        0xef53 => "ext4".into(),
        0x5846_5342 => "XFS".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794c_7630 => "overlayfs".into(),
        0x6969 => "NFS".into(),
        0x2fc1_2fc1 => "ZFS".into(),
        0xf2f5_2010 => "F2FS".into(),
        m => format!("a filesystem with statfs magic {m:#x}"),
    }
}

impl Disk {
    pub fn detect(depot: BorrowedFd, depot_path: &str) -> Disk {
        let magic = match fstatfs(depot) {
            Ok(st) => st.filesystem_type().0,
            Err(e) => return Disk::Unavailable(format!("statfs of the depot: {e}")),
        };
        let name = fs_name(magic);
        match magic {
            0x9123_683e => match btrfs::Qgroups::open(depot) {
                Ok(q) => Disk::Btrfs(q),
                Err(why) => Disk::Unavailable(why),
            },
            0xef53 | 0x5846_5342 => Disk::Project(project::Quotas::new(depot, depot_path, name)),
            _ => Disk::Unavailable(format!(
                "the depot {depot_path} is on {name}, which has no quotas Grove uses: {REMEDY}"
            )),
        }
    }

    /// For the start-up log line.
    pub fn describe(&self) -> String {
        match (self, self.check()) {
            (Disk::Btrfs(q), Ok(())) => format!("btrfs {} with quotas", q.uuid),
            (Disk::Project(q), Ok(())) => format!("{} with project quotas", q.fs),
            (Disk::Unavailable(why), _) => format!("disk limits are unavailable: {why}"),
            (_, Err(e)) => e.message,
        }
    }

    /// Can a disk limit be set now? Quotas can be switched off and on while
    /// the helper runs, so this is asked at every request.
    pub fn check(&self) -> Result<(), HelperError> {
        match self {
            Disk::Unavailable(why) => Err(unavailable(why)),
            Disk::Btrfs(q) => q.check(),
            Disk::Project(q) => q.check(),
        }
    }

    /// Can this limit be had here? Checked before a create changes anything.
    pub fn check_limit(&self, limit: &DiskLimit) -> Result<(), HelperError> {
        self.check()?;
        if let Disk::Btrfs(_) = self {
            btrfs::Qgroups::supports(limit)?;
        }
        Ok(())
    }

    /// Make the container's writable layer beneath its depot dir: a
    /// subvolume on btrfs, a directory with a project of its own on
    /// ext4/XFS (with quotas on), a plain directory elsewhere.
    pub fn make_layer(&self, dir: BorrowedFd) -> Result<(), HelperError> {
        let made = match self {
            Disk::Btrfs(_) => btrfs::create_subvolume(dir, LAYER),
            _ => fs::mkdir_at(dir, LAYER, 0o755, false),
        };
        made.map_err(|e| HelperError::new(ErrorKind::System, format!("create the layer: {e}")))?;
        match self {
            Disk::Project(q) if q.check().is_ok() => {
                let layer = fs::open_dir(dir, LAYER).map_err(|e| {
                    HelperError::new(ErrorKind::System, format!("open the layer: {e}"))
                })?;
                q.assign_project(layer.as_fd())
            }
            _ => Ok(()),
        }
    }

    /// The container's depot dir and the image size recorded in it.
    fn open(depot: BorrowedFd, handle: &str) -> Result<(OwnedFd, ImageSize), HelperError> {
        let dir = fs::open_dir(depot, handle).map_err(|e| sys(handle, "depot dir", e))?;
        let image = image_size(dir.as_fd(), handle)?;
        Ok((dir, image))
    }

    /// Set the container's limit; returns the limit it replaces (for an
    /// all-or-nothing caller to put back).
    pub fn set_limit(
        &self,
        depot: BorrowedFd,
        handle: &str,
        limit: DiskLimit,
    ) -> Result<Option<DiskLimit>, HelperError> {
        self.check_limit(&limit)?;
        let (dir, image) = Disk::open(depot, handle)?;
        let layer = layer_limit(limit, image)?;
        match self {
            Disk::Btrfs(q) => q.set_limit(depot, dir.as_fd(), handle, image, layer),
            Disk::Project(q) => q.set_limit(dir.as_fd(), handle, image, limit, layer),
            Disk::Unavailable(why) => Err(unavailable(why)),
        }
    }

    /// Put back a limit `set_limit` replaced.
    pub fn restore_limit(
        &self,
        depot: BorrowedFd,
        handle: &str,
        old: Option<DiskLimit>,
    ) -> Result<(), HelperError> {
        let (dir, image) = Disk::open(depot, handle)?;
        // What was read back always leaves room (it was set that way).
        let layer = old.map(|l| layer_limit(l, image).unwrap_or(l));
        match self {
            Disk::Btrfs(q) => q.restore_limit(depot, dir.as_fd(), handle, layer),
            Disk::Project(q) => q.restore_limit(dir.as_fd(), handle, old, layer),
            Disk::Unavailable(why) => Err(unavailable(why)),
        }
    }

    /// The limit in force, as the client set it; None when there is none
    /// or none can be had.
    pub fn limit(&self, depot: BorrowedFd, handle: &str) -> Result<Option<DiskLimit>, HelperError> {
        if self.check().is_err() {
            return Ok(None);
        }
        let (dir, image) = Disk::open(depot, handle)?;
        let got = match self {
            Disk::Btrfs(q) => q.limit(dir.as_fd(), handle, image),
            Disk::Project(q) => q.limit(dir.as_fd(), handle, image),
            Disk::Unavailable(_) => Ok(None),
        };
        Ok(refused_as_none(got)?.flatten())
    }

    /// The layer's usage (the image's size included in the referenced
    /// figures); None when it cannot be measured here.
    pub fn usage(&self, depot: BorrowedFd, handle: &str) -> Result<Option<DiskUsage>, HelperError> {
        if self.check().is_err() {
            return Ok(None);
        }
        let (dir, image) = Disk::open(depot, handle)?;
        refused_as_none(match self {
            Disk::Btrfs(q) => q.usage(dir.as_fd(), handle, image),
            Disk::Project(q) => q.usage(dir.as_fd(), handle, image),
            Disk::Unavailable(_) => return Ok(None),
        })
    }

    /// Before a container's depot dir goes: clear its project's limits (a
    /// btrfs qgroup goes with its subvolume). The files, in the trash until
    /// removed, keep the project's usage above 0, so the id is not handed
    /// out again before they are gone.
    pub fn release(&self, depot: BorrowedFd, handle: &str) -> Result<(), HelperError> {
        let Disk::Project(q) = self else {
            return Ok(());
        };
        let dir = match fs::open_dir(depot, handle) {
            Ok(dir) => dir,
            Err(Errno::ENOENT) => return Ok(()),
            Err(e) => return Err(sys(handle, "depot dir", e)),
        };
        q.release(dir.as_fd(), handle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::OFlag;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_total_limit_leaves_the_layer_what_the_image_does_not_use() {
        let image = ImageSize {
            bytes: 10 * MIB,
            inodes: 400,
        };
        let total = DiskLimit {
            bytes: 50 * MIB,
            inodes: 1000,
            scope: DiskScope::Total,
        };
        let layer = layer_limit(total, image).unwrap();
        assert_eq!((layer.bytes, layer.inodes), (40 * MIB, 600));
        assert_eq!(client_limit(layer, image), total);
        // Exclusive: as asked.
        let excl = DiskLimit {
            scope: DiskScope::Exclusive,
            ..total
        };
        assert_eq!(layer_limit(excl, image).unwrap(), excl);
        assert_eq!(client_limit(excl, image), excl);
        // No limit of a kind stays none.
        let bytes_only = DiskLimit { inodes: 0, ..total };
        let layer = layer_limit(bytes_only, image).unwrap();
        assert_eq!(layer.inodes, 0);
        assert_eq!(client_limit(layer, image), bytes_only);
    }

    #[test]
    fn a_total_limit_must_leave_room_for_writes() {
        let image = ImageSize {
            bytes: 10 * MIB,
            inodes: 400,
        };
        let limit = |bytes, inodes| DiskLimit {
            bytes,
            inodes,
            scope: DiskScope::Total,
        };
        let e = layer_limit(limit(10 * MIB, 0), image).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidValue);
        assert!(e.message.contains("disk.bytes"), "{}", e.message);
        assert!(e.message.contains(&(10 * MIB).to_string()), "{}", e.message);
        layer_limit(limit(11 * MIB, 0), image).unwrap();
        let e = layer_limit(limit(0, 400 + MIN_WRITABLE_INODES - 1), image).unwrap_err();
        assert!(
            e.message.contains("disk.inodes") && e.message.contains("400"),
            "{}",
            e.message
        );
        layer_limit(limit(0, 400 + MIN_WRITABLE_INODES), image).unwrap();
        // Smaller than the image: refused, not wrapped around.
        assert!(layer_limit(limit(0, 1), image).is_err());
    }

    #[test]
    fn filesystems_are_named_in_refusals() {
        assert_eq!(fs_name(0xef53), "ext4");
        assert_eq!(fs_name(0x5846_5342), "XFS");
        assert_eq!(fs_name(0x1234), "a filesystem with statfs magic 0x1234");
    }

    #[test]
    fn a_depot_without_quotas_refuses_limits_with_the_reason() {
        // /proc: a filesystem that can have no quotas on any host.
        let dir = fs::openat(None, "/proc", OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0).unwrap();
        let d = Disk::detect(dir.as_fd(), "/proc");
        let e = d.check().unwrap_err();
        assert_eq!(e.kind, ErrorKind::PolicyRefused);
        assert!(
            e.message
                .contains("/proc is on a filesystem with statfs magic 0x9fa0")
                && e.message.contains("prjquota"),
            "{}",
            e.message
        );
        assert_eq!(d.limit(dir.as_fd(), "x").unwrap(), None);
        assert_eq!(d.usage(dir.as_fd(), "x").unwrap(), None);
    }
}
