//! The contract every cgroup driver keeps (v1 for hybrid and legacy hosts,
//! v2 for unified ones) and the constants both use.

use grove_schema::helper::{ErrorKind, HelperError, Limits, Stats};
use grove_schema::Handle;
use std::os::fd::OwnedFd;

pub trait Cgroups {
    /// Driver name for logs ("v1").
    fn name(&self) -> &'static str;
    /// Create the container's cgroups; on failure nothing is left behind.
    fn create(&self, handle: &Handle) -> Result<(), String>;
    /// Move `pid` into every one of the container's cgroups.
    fn enter(&self, handle: &Handle, pid: i32) -> Result<(), String>;
    /// The processes in the container's cgroup and every cgroup below it.
    fn procs(&self, handle: &Handle) -> Result<Vec<i32>, String>;
    /// Freeze the cgroup, SIGKILL every process in it and below it, thaw it.
    fn kill_all(&self, handle: &Handle) -> Result<(), String>;
    /// Remove the container's cgroups and any below them (absent ones are fine).
    fn remove(&self, handle: &Handle) -> Result<(), String>;
    /// Validate `limits` (each field on its own, then against current usage
    /// and the parent's cpuset) and write them: all of them or none.
    fn set_limits(&self, handle: &Handle, limits: &Limits) -> Result<(), HelperError>;
    /// The limits in force (None: no limit). `recorded_shares`: the
    /// cpu_shares last set, which v2 reports while cpu.weight still
    /// matches it (v2 keeps a weight, and many shares give one weight).
    fn get_limits(&self, handle: &Handle, recorded_shares: Option<u64>) -> Result<Limits, String>;
    /// Resource usage.
    fn stats(&self, handle: &Handle) -> Result<Stats, String>;
    /// An fd that becomes ready when the kernel OOM-kills in the container
    /// (v1: an eventfd, readable; v2: memory.events, POLLPRI).
    fn oom_watch(&self, handle: &Handle) -> Result<OwnedFd, String>;
    /// Restrict the container to the devices its minimal /dev holds. Called
    /// at create, before wshd starts.
    fn apply_device_allowlist(&self, handle: &Handle) -> Result<(), String>;
}

/// The devices a container may open or mknod (v1 devices cgroup): the
/// nodes of its minimal /dev and its own devpts instance.
pub const DEVICE_ALLOWLIST: [&str; 8] = [
    "c 1:3 rwm",   // null
    "c 1:5 rwm",   // zero
    "c 1:7 rwm",   // full
    "c 1:8 rwm",   // random
    "c 1:9 rwm",   // urandom
    "c 5:0 rwm",   // tty
    "c 5:2 rwm",   // ptmx
    "c 136:* rwm", // pts
];

pub const ROOT: &str = "/sys/fs/cgroup";

pub(crate) fn system(msg: String) -> HelperError {
    HelperError::new(ErrorKind::System, msg)
}
