//! Cgroups: one trait over the drivers (driver.rs), detection from statfs
//! (here), the v1 driver (v1.rs, hybrid and legacy hosts), the v2 driver
//! (v2.rs, unified hosts), and the tree walks both share (tree.rs). Nothing
//! in the drivers or the walks refers back here.
//!
//! Each controller's parent cgroup (<root>/<controller>/<cgroup_parent>) is
//! opened once at start-up; per-container work is relative to that dirfd
//! with the validated handle as the only request-derived component, and the
//! file names are constants of this crate: the helper writes cgroup files
//! only under its own cgroup_parent.

mod driver;
mod tree;
mod v1;
pub mod v2;

pub use driver::{Cgroups, DEVICE_ALLOWLIST, ROOT};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};
pub(crate) use tree::{read_pids, signal_listed, walk, write_cg};
use v1::V1;
use v2::{choose, is_delegated, own_cgroup, V2};

/// Look at how the host mounts cgroups and build the matching driver.
/// `total_pids` becomes the parent cgroup's pids.max: all containers
/// together can have no more processes.
pub fn detect(parent: &str, total_pids: u64) -> Result<Box<dyn Cgroups>, String> {
    let st = statfs(ROOT).map_err(|e| format!("statfs {ROOT}: {e}"))?;
    let t = st.filesystem_type();
    if t == CGROUP2_SUPER_MAGIC {
        let text = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("/proc/self/cgroup: {e}"))?;
        let home = choose(&own_cgroup(&text)?, &|p| {
            is_delegated(&format!("{ROOT}{p}"))
        })?;
        return Ok(Box::new(V2::open(ROOT, &home, parent, total_pids)?));
    }
    if t != TMPFS_MAGIC {
        return Err(format!(
            "{ROOT} is neither cgroup2 nor a tmpfs of v1 hierarchies"
        ));
    }
    Ok(Box::new(V1::open(parent, total_pids)?))
}
