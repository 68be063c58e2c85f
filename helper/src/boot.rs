//! Containers do not survive a reboot, but their depot dirs, addresses and
//! records do. The helper notes the boot it runs in (the kernel's boot id)
//! in the depot; at start-up, when the depot was last used in an earlier
//! boot, every container it recovered from there is destroyed (its depot
//! dir, disk quota, address), each with a log line, before the helper
//! serves. Within one boot a restarted helper finds the id unchanged and
//! takes its containers over as before. (groved does the same with its
//! records: server/src/containers.rs.)

use crate::container::Helper;
use crate::fs;
use grove_schema::helper::Request;
use nix::unistd::UnlinkatFlags;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// In the depot; a name no handle can have (handles start with a letter,
/// digit or '_').
pub const BOOT_ID_FILE: &str = ".boot_id";
const KERNEL_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

/// The kernel's id of this boot.
pub fn current() -> Result<String, String> {
    let id =
        std::fs::read_to_string(KERNEL_BOOT_ID).map_err(|e| format!("{KERNEL_BOOT_ID}: {e}"))?;
    Ok(id.trim().to_string())
}

/// The boot the depot was last used in, if it says.
fn recorded(depot: BorrowedFd) -> Option<String> {
    let id = fs::read_file_at(depot, BOOT_ID_FILE).ok()?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty())
}

/// After `recover`: destroy the containers of an earlier boot, then record
/// this one. A container that cannot be destroyed stays, stopped (groved's
/// reconcile asks again: it drops its own records of an earlier boot and
/// destroys what the helper holds without a record).
pub fn clean_earlier(helper: &mut Helper, now: &str) -> Result<(), String> {
    let depot = helper.depot.as_fd();
    match recorded(depot) {
        Some(then) if then != now => {
            let handles: Vec<_> = helper.containers.keys().cloned().collect();
            log_warn!(
                "grove-helper: the depot was last used in boot {then}; this is boot {now}: destroying its {} containers",
                handles.len()
            );
            for handle in handles {
                let request = Request::DestroyContainer {
                    handle: handle.clone(),
                };
                match helper.handle(request) {
                    Ok(_) => log_info!(
                        "grove-helper: {handle}: from an earlier boot ({then}): destroyed"
                    ),
                    Err(e) => log_error!(
                        "grove-helper: {handle}: from an earlier boot ({then}): destroy failed, left stopped: {}",
                        e.message
                    ),
                }
            }
        }
        Some(_) => return Ok(()),
        // A new depot, or one from before boot ids: nothing to compare.
        None => {}
    }
    // On a full disk the note of an earlier boot goes instead (an unlink
    // needs no space): a stale one would have a later start take this
    // boot's containers for an earlier one's.
    let depot = helper.depot.as_fd();
    if let Err(e) = fs::write_file_at(depot, BOOT_ID_FILE, now.as_bytes(), 0o600) {
        match nix::unistd::unlinkat(
            Some(depot.as_raw_fd()),
            BOOT_ID_FILE,
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {
                log_warn!("grove-helper: writing the depot's {BOOT_ID_FILE}: {e}")
            }
            Err(r) => {
                return Err(format!(
                    "writing the depot's {BOOT_ID_FILE}: {e}; removing it: {r}"
                ))
            }
        }
    }
    Ok(())
}
