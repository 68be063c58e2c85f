//! The cgroup v2 (unified) driver: one hierarchy. Under systemd the
//! containers live in the delegated cgroup of grove-containers.service, a
//! unit of their own next to grove-helper.service (same slice), so that
//! neither a restart of the helper nor of groved touches them, and stopping
//! that unit (host shutdown) stops them (keeper.rs). Its main process,
//! `grove-helper --keep-containers`, sits in the leaf <unit>/supervisor
//! (v2 allows processes only in leaves of a cgroup that hands controllers
//! down); the helper enables the controllers in <unit>/cgroup.subtree_control
//! and puts each container at <unit>/<cgroup_parent>/<handle>, where
//! `systemd-cgls` shows it. A helper that is not grove-helper.service (run
//! by hand, by the test harness, under an init that is not systemd) uses
//! <root>/<cgroup_parent>, as on v1, and logs why.
//! The root directory is a parameter so the driver can be tested against
//! a fake tree of plain files on hosts that are not unified.
//!
//! Devices: v2 has no devices controller; access is controlled by a BPF
//! program attached to the cgroup (BPF_CGROUP_DEVICE, devices.rs), with the
//! same allowlist as v1's devices.allow. `enter` attaches it, in the
//! spawner, before the container's first process joins the cgroup.

use super::driver::{system, Cgroups};
use super::tree::{err, kill_listed, read_max, read_pids, read_u64, walk, write_cg};
use crate::fs;
use crate::limits::{self, Current, Write};
use grove_schema::helper::{CpuQuota, HelperError, Limits, Stats};
use grove_schema::Handle;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::UnlinkatFlags;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// Controllers a container's cgroup must have, and those it may have.
const REQUIRED: [&str; 3] = ["cpu", "memory", "pids"];
const OPTIONAL: [&str; 2] = ["cpuset", "io"];

/// The leaf of the delegated cgroup the helper (and what it forks) lives in.
pub const SUPERVISOR: &str = "supervisor";

/// v1's memory.stat reports "no limit" as this (LONG_MAX rounded down to a
/// page); v2's memory.max says "max". Garden reports the v1 figure.
const V1_UNLIMITED: u64 = 9_223_372_036_854_771_712;

pub struct V2 {
    /// The containers' parent cgroup, opened at start-up.
    parent: OwnedFd,
    /// Whether cpuset is enabled for the containers.
    cpuset: bool,
}

/// The unit the helper runs as under systemd, and the unit its containers
/// live in: a sibling in the same slice.
pub const HELPER_UNIT: &str = "grove-helper.service";
pub const CONTAINERS_UNIT: &str = "grove-containers.service";

/// Where the containers' parent cgroup goes (below the v2 root).
#[derive(Debug, PartialEq, Eq)]
pub enum Home {
    /// <root>/<cgroup_parent>: not grove-helper.service.
    Root { why: String },
    /// <root><unit>/<cgroup_parent>: grove-containers.service's cgroup,
    /// its keeper in <unit>/supervisor.
    Delegated { unit: String },
}

/// A process's cgroup, from /proc/<pid>/cgroup: the path of the v2 line
/// ("0::/system.slice/grove-helper.service").
pub fn own_cgroup(proc_self_cgroup: &str) -> Result<String, String> {
    let path = proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or("/proc/self/cgroup has no cgroup v2 line (\"0::/path\")")?;
    if !path.starts_with('/') || path.split('/').any(|c| c == "..") {
        return Err(format!("/proc/self/cgroup: {path:?} is not a cgroup path"));
    }
    Ok(path.to_string())
}

/// Decide where containers go, given the helper's own cgroup and whether
/// a cgroup is marked delegated (systemd sets trusted.delegate=1 on the
/// cgroup of a unit with Delegate=yes). As grove-helper.service, the
/// containers unit must be there: an error says how to get it, rather than
/// containers silently landing outside every unit.
pub fn choose(own: &str, delegated: &dyn Fn(&str) -> bool) -> Result<Home, String> {
    let Some(slice) = own.strip_suffix(&format!("/{HELPER_UNIT}")) else {
        return Ok(Home::Root {
            why: format!("the helper does not run as {HELPER_UNIT}: its cgroup is {own}"),
        });
    };
    let unit = format!("{slice}/{CONTAINERS_UNIT}");
    if !delegated(&unit) {
        return Err(format!(
            "{HELPER_UNIT} keeps its containers in {CONTAINERS_UNIT}, but {unit} is not a \
             delegated cgroup: is {CONTAINERS_UNIT} installed and running (Delegate=yes, \
             in the same slice)? `systemctl start {CONTAINERS_UNIT}`"
        ));
    }
    Ok(Home::Delegated { unit })
}

/// Whether systemd marked the cgroup at `path` (absolute) delegated.
pub fn is_delegated(path: &str) -> bool {
    let Ok(p) = std::ffi::CString::new(path) else {
        return false;
    };
    ["trusted.delegate", "user.delegate"].iter().any(|name| {
        let name = std::ffi::CString::new(*name).unwrap_or_default();
        let mut v = [0u8; 4];
        // SAFETY: NUL-terminated path and name; the kernel writes at most
        // v.len() bytes into v.
        let n =
            unsafe { libc::getxattr(p.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        n == 1 && v[0] == b'1'
    })
}

/// Make `controllers` (those `dir` has) available to `dir`'s children by
/// writing "+name" to its cgroup.subtree_control, unless already there.
/// Returns the ones enabled.
fn enable(dir: BorrowedFd, what: &str, controllers: &[&str]) -> Result<Vec<String>, String> {
    let have = fs::read_file_at(dir, "cgroup.controllers")
        .map_err(|e| format!("{what}/cgroup.controllers: {e}"))?;
    let on = fs::read_file_at(dir, "cgroup.subtree_control")
        .map_err(|e| format!("{what}/cgroup.subtree_control: {e}"))?;
    let mut enabled = Vec::new();
    for c in controllers {
        if !have.split_whitespace().any(|h| h == *c) {
            continue;
        }
        if !on.split_whitespace().any(|h| h == *c) {
            // Why safe: it only lets child cgroups use a controller.
            write_cg(dir, "cgroup.subtree_control", &format!("+{c}"))
                .map_err(|e| format!("{what}/cgroup.subtree_control +{c}: {e}"))?;
        }
        enabled.push(c.to_string());
    }
    Ok(enabled)
}

impl V2 {
    /// Open the containers' home below `root` (see `Home`), make sure
    /// <home>/<parent> exists and hands the controllers containers need
    /// down to its children; its pids.max becomes `total_pids`.
    pub fn open(root: &str, home: &Home, parent: &str, total_pids: u64) -> Result<V2, String> {
        let base_path = match home {
            Home::Root { .. } => root.to_string(),
            Home::Delegated { unit, .. } => format!("{root}{unit}"),
        };
        let base = fs::openat(None, &base_path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
            .map_err(|e| err(&base_path, e))?;
        let all: Vec<&str> = REQUIRED.iter().chain(&OPTIONAL).copied().collect();
        enable(base.as_fd(), &base_path, &all).map_err(|e| match home {
            // v2 refuses controllers for children of a cgroup with processes.
            Home::Delegated { .. } => format!(
                "{e} (the unit's own cgroup must hold no process: its main process is \
                 `grove-helper --keep-containers`, which moves into {SUPERVISOR})"
            ),
            Home::Root { .. } => e,
        })?;
        fs::mkdir_at(base.as_fd(), parent, 0o755, true)
            .map_err(|e| err(&format!("{base_path}/{parent}"), e))?;
        let parent_fd = fs::open_dir(base.as_fd(), parent)
            .map_err(|e| err(&format!("{base_path}/{parent}"), e))?;
        let on = enable(parent_fd.as_fd(), &format!("{base_path}/{parent}"), &all)?;
        if let Some(missing) = REQUIRED.iter().find(|c| !on.iter().any(|o| o == *c)) {
            return Err(format!(
                "{base_path}/{parent}: the {missing} controller is not available (cgroup.controllers); \
                 delegate it to grove-helper"
            ));
        }
        // Why safe: it only bounds the helper's own parent cgroup.
        write_cg(parent_fd.as_fd(), "pids.max", &total_pids.to_string())
            .map_err(|e| err(&format!("{base_path}/{parent}/pids.max"), e))?;
        match home {
            Home::Root { why } => log_info!(
                "grove-helper: containers' cgroups in {base_path}/{parent} ({why})"
            ),
            Home::Delegated { .. } => log_info!(
                "grove-helper: containers' cgroups in {base_path}/{parent} (delegated to {CONTAINERS_UNIT})"
            ),
        }
        Ok(V2 {
            parent: parent_fd,
            cpuset: on.iter().any(|o| o == "cpuset"),
        })
    }

    /// The container's cgroup; None if it does not exist.
    fn open_container(&self, handle: &Handle) -> Result<Option<OwnedFd>, String> {
        match fs::open_dir(self.parent.as_fd(), handle.as_str()) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(format!("{handle}: {e}")),
        }
    }

    fn dir(&self, handle: &Handle) -> Result<OwnedFd, String> {
        self.open_container(handle)?
            .ok_or_else(|| format!("{handle}: the container's cgroup is missing"))
    }
}

/// cpu.max: "max <period>" or "<quota> <period>".
fn parse_cpu_max(text: &str) -> Result<Option<CpuQuota>, String> {
    let bad = || format!("cpu.max: {:?} is not \"quota period\"", text.trim());
    let (q, p) = text.trim().split_once(' ').ok_or_else(bad)?;
    let period_us = p.parse().map_err(|_| bad())?;
    match q {
        "max" => Ok(None),
        q => Ok(Some(CpuQuota {
            period_us,
            quota_us: q.parse().map_err(|_| bad())?,
        })),
    }
}

impl Cgroups for V2 {
    fn name(&self) -> &'static str {
        "v2"
    }

    fn create(&self, handle: &Handle) -> Result<(), String> {
        // A same-named cgroup that was already there is not ours: EEXIST.
        fs::mkdir_at(self.parent.as_fd(), handle.as_str(), 0o755, false)
            .map_err(|e| format!("mkdir cgroup {handle}: {e}"))
    }

    fn enter(&self, handle: &Handle, pid: i32) -> Result<(), String> {
        let dir = self.dir(handle)?;
        crate::devices::attach(dir.as_fd()).map_err(|e| format!("{handle}: {e}"))?;
        write_cg(dir.as_fd(), "cgroup.procs", &pid.to_string())
            .map_err(|e| format!("{handle}/cgroup.procs: {e}"))
    }

    fn procs(&self, handle: &Handle) -> Result<Vec<i32>, String> {
        let Some(top) = self.open_container(handle)? else {
            return Ok(Vec::new());
        };
        let mut all = Vec::new();
        walk(top.as_fd(), None, &mut |dir| {
            match read_pids(dir) {
                Ok(p) => all.extend(p),
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(format!("{handle}: cgroup.procs: {e}")),
            }
            Ok(())
        })?;
        Ok(all)
    }

    fn kill_all(&self, handle: &Handle) -> Result<(), String> {
        let Some(top) = self.open_container(handle)? else {
            return Ok(());
        };
        // cgroup.kill (5.14+) SIGKILLs the whole subtree atomically, forks
        // in flight included. Older kernels: signal pidfds, as v1 does (the
        // caller repeats until the cgroup is empty).
        match write_cg(top.as_fd(), "cgroup.kill", "1") {
            Ok(()) => Ok(()),
            Err(Errno::ENOENT) => walk(top.as_fd(), None, &mut |dir| {
                kill_listed(dir).map_err(|e| format!("{handle}: kill: {e}"))
            }),
            Err(e) => Err(format!("{handle}/cgroup.kill: {e}")),
        }
    }

    fn remove(&self, handle: &Handle) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let Some(top) = self.open_container(handle)? else {
                return Ok(());
            };
            walk(top.as_fd(), Some(deadline), &mut |_| Ok(()))
                .map_err(|e| format!("{handle}: {e}"))?;
            drop(top);
            match nix::unistd::unlinkat(
                Some(self.parent.as_raw_fd()),
                handle.as_str(),
                UnlinkatFlags::RemoveDir,
            ) {
                Ok(()) | Err(Errno::ENOENT) => return Ok(()),
                Err(Errno::EBUSY) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(format!("rmdir cgroup {handle}: {e}")),
            }
        }
    }

    fn set_limits(&self, handle: &Handle, l: &Limits) -> Result<(), HelperError> {
        limits::validate(l, limits::host_ram())?;
        if l.cpuset.is_some() && !self.cpuset {
            return Err(system(
                "cpuset: the cpuset controller is not delegated to grove-helper".into(),
            ));
        }
        let dir = self.dir(handle).map_err(system)?;
        let d = dir.as_fd();
        let mut cur = Current::default();
        if l.memory_bytes.is_some() {
            // The working set: page cache the kernel would reclaim does
            // not count against a lower limit.
            let usage = read_u64(d, "memory.current").map_err(system)?;
            let stat = fs::read_file_at(d, "memory.stat")
                .map_err(|e| system(format!("memory.stat: {e}")))?;
            let inactive = limits::keyed(&stat, "inactive_file").unwrap_or(0);
            cur.memory_usage = Some(usage.saturating_sub(inactive));
        }
        if l.pids_max.is_some() {
            cur.pids_current = Some(read_u64(d, "pids.current").map_err(system)?);
        }
        if l.cpuset.is_some() {
            let p = fs::read_file_at(self.parent.as_fd(), "cpuset.cpus.effective")
                .map_err(|e| system(format!("the parent cgroup's cpuset.cpus.effective: {e}")))?;
            cur.parent_cpus = Some(p);
        }
        limits::check_current(l, &cur)?;

        let mut writes = Vec::new();
        let mut add = |file: &'static str, value: String| {
            writes.push(Write {
                dir: d,
                where_: handle.to_string(),
                file,
                value,
            })
        };
        if let Some(c) = &l.cpuset {
            add("cpuset.cpus", c.clone());
        }
        if let Some(m) = l.memory_bytes {
            add("memory.max", m.to_string());
        }
        if let Some(s) = l.cpu_shares {
            add("cpu.weight", limits::shares_to_weight(s).to_string());
        }
        if let Some(q) = l.cpu_quota {
            let value = if q.quota_us == u64::MAX {
                format!("max {}", q.period_us)
            } else {
                format!("{} {}", q.quota_us, q.period_us)
            };
            add("cpu.max", value);
        }
        if let Some(p) = l.pids_max {
            add("pids.max", p.to_string());
        }
        limits::apply(&writes)
    }

    fn get_limits(&self, handle: &Handle, recorded_shares: Option<u64>) -> Result<Limits, String> {
        let dir = self.dir(handle)?;
        let d = dir.as_fd();
        let cpu_max = fs::read_file_at(d, "cpu.max").map_err(|e| err("cpu.max", e))?;
        let cpuset = if self.cpuset {
            let c = fs::read_file_at(d, "cpuset.cpus").map_err(|e| err("cpuset.cpus", e))?;
            // Empty: the parent's CPUs, i.e. no limit of its own.
            Some(c.trim().to_string()).filter(|c| !c.is_empty())
        } else {
            None
        };
        Ok(Limits {
            memory_bytes: read_max(d, "memory.max")?,
            cpu_shares: Some(limits::reported_shares(
                read_u64(d, "cpu.weight")?,
                recorded_shares,
            )),
            cpu_quota: parse_cpu_max(&cpu_max)?,
            pids_max: read_max(d, "pids.max")?,
            cpuset,
            disk: None,      // the depot's qgroup, filled in by the caller
            bandwidth: None, // tc on the veth, likewise
        })
    }

    fn stats(&self, handle: &Handle) -> Result<Stats, String> {
        let dir = self.dir(handle)?;
        let d = dir.as_fd();
        let read = |f: &str| fs::read_file_at(d, f).map_err(|e| err(f, e));
        let cpu = read("cpu.stat")?;
        let usec = |k: &str| limits::keyed(&cpu, k).unwrap_or(0).saturating_mul(1000);
        // memory.stat's own names; groved adds v1's (cache, rss, total_*).
        // Two v1 figures are files of their own on v2: swap in use
        // (memory.swap.current, absent without swap accounting) and the
        // limit (memory.max).
        let mut memory_stat = limits::parse_flat_keyed(&read("memory.stat")?);
        if let Ok(swap) = read_u64(d, "memory.swap.current") {
            memory_stat.push(("swap".into(), swap));
        }
        let limit = read_max(d, "memory.max")?.unwrap_or(V1_UNLIMITED);
        memory_stat.push(("hierarchical_memory_limit".into(), limit));
        Ok(Stats {
            memory_usage_bytes: read_u64(d, "memory.current")?,
            memory_stat,
            cpu_usage_ns: usec("usage_usec"),
            cpu_user_ns: usec("user_usec"),
            cpu_system_ns: usec("system_usec"),
            pids_current: read_u64(d, "pids.current")?,
            pids_max: read_max(d, "pids.max")?,
            oom_kills: limits::keyed(&read("memory.events")?, "oom_kill").unwrap_or(0),
            disk: None, // the depot's qgroup, filled in by the caller
            net: Default::default(),
        })
    }

    fn oom_watch(&self, handle: &Handle) -> Result<OwnedFd, String> {
        let dir = self.dir(handle)?;
        // Why safe: read-only, the container's own memory.events; the
        // kernel signals POLLPRI on it when a counter changes.
        fs::openat(
            Some(dir.as_fd()),
            "memory.events",
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
            0,
        )
        .map_err(|e| format!("{handle}/memory.events: {e}"))
    }

    /// No devices controller on v2: the BPF program `enter` attaches (in
    /// the spawner, whose calls are not filtered; this runs in the main
    /// process, which may not call bpf) is the allowlist.
    fn apply_device_allowlist(&self, _handle: &Handle) -> Result<(), String> {
        Ok(())
    }
}

/// These tests run the v2 driver against a fake cgroup v2 tree: plain files
/// named like the kernel's, in a temp dir (this host is v1 "hybrid", so the
/// real v2 files are not available). They check what is written and parsed,
/// not the kernel's reaction to it.
#[cfg(test)]
mod tests {
    use super::*;
    use grove_schema::helper::ErrorKind;
    use std::path::{Path, PathBuf};

    struct Tree {
        root: PathBuf,
        immutable: Option<PathBuf>,
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            if let Some(p) = self.immutable.take() {
                set_immutable(&p, false);
            }
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    const FS_IMMUTABLE_FL: libc::c_int = 0x10;

    fn set_immutable(path: &Path, on: bool) {
        let f = std::fs::File::open(path).unwrap();
        let mut flags: libc::c_int = 0;
        // SAFETY: FS_IOC_GETFLAGS writes one int to a live c_int.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
        assert_eq!(r, 0, "lsattr {}", path.display());
        if on {
            flags |= FS_IMMUTABLE_FL;
        } else {
            flags &= !FS_IMMUTABLE_FL;
        }
        // SAFETY: FS_IOC_SETFLAGS reads one int from a live c_int.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) };
        assert_eq!(r, 0, "chattr {}", path.display());
    }

    fn write(p: &Path, s: &str) {
        std::fs::write(p, s).unwrap();
    }

    fn read(p: &Path) -> String {
        std::fs::read_to_string(p).unwrap()
    }

    /// A fake root with parent "grove" and a container "c1" created through
    /// the driver, then given the files the kernel would make.
    fn tree(name: &str) -> (Tree, V2, PathBuf) {
        let root = PathBuf::from(format!(
            "/tmp/grove-helper-v2-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("grove")).unwrap();
        write(
            &root.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        );
        write(
            &root.join("cgroup.subtree_control"),
            "cpuset cpu io memory pids\n",
        );
        let parent = root.join("grove");
        write(
            &parent.join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        );
        write(
            &parent.join("cgroup.subtree_control"),
            "cpu io memory pids\n",
        );
        write(&parent.join("cpuset.cpus.effective"), "0-3\n");
        write(&parent.join("pids.max"), "max\n");
        let t = Tree {
            root: root.clone(),
            immutable: None,
        };
        let v2 = V2::open(root.to_str().unwrap(), &at_root(), "grove", 5000).unwrap();
        assert!(v2.cpuset);
        assert_eq!(read(&parent.join("pids.max")), "5000");
        // The driver enabled cpuset (the only one missing) for the children.
        assert_eq!(read(&parent.join("cgroup.subtree_control")), "+cpuset");
        let c1 = Handle::new("c1").unwrap();
        v2.create(&c1).unwrap();
        let d = parent.join("c1");
        for (f, v) in [
            ("memory.max", "max\n"),
            ("memory.current", "8388608\n"),
            ("memory.stat", "anon 4096\nfile 8192\nkernel 0\n"),
            ("memory.swap.current", "12288\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 7\noom 2\noom_kill 2\noom_group_kill 0\n",
            ),
            ("cpu.weight", "100\n"),
            ("cpu.max", "max 100000\n"),
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 0\n",
            ),
            ("pids.max", "max\n"),
            ("pids.current", "3\n"),
            ("cpuset.cpus", "\n"),
            ("cgroup.procs", ""),
        ] {
            write(&d.join(f), v);
        }
        (t, v2, d)
    }

    fn c1() -> Handle {
        Handle::new("c1").unwrap()
    }

    fn at_root() -> Home {
        Home::Root { why: "test".into() }
    }

    #[test]
    fn limits_are_written_in_v2_format_and_read_back() {
        let (_t, v2, d) = tree("limits");
        assert_eq!(
            v2.get_limits(&c1(), None).unwrap(),
            Limits {
                memory_bytes: None,
                // No CPU limit: weight 100, reported as v1's default.
                cpu_shares: Some(1024),
                cpu_quota: None,
                pids_max: None,
                cpuset: None,
                disk: None,
                bandwidth: None,
            }
        );
        let want = Limits {
            memory_bytes: Some(64 << 20),
            cpu_shares: Some(512),
            cpu_quota: Some(CpuQuota {
                period_us: 100_000,
                quota_us: 50_000,
            }),
            pids_max: Some(50),
            cpuset: Some("0,2-3".into()),
            disk: None,
            bandwidth: None,
        };
        v2.set_limits(&c1(), &want).unwrap();
        assert_eq!(read(&d.join("memory.max")), "67108864");
        assert_eq!(read(&d.join("cpu.weight")), "59");
        assert_eq!(read(&d.join("cpu.max")), "50000 100000");
        assert_eq!(read(&d.join("pids.max")), "50");
        assert_eq!(read(&d.join("cpuset.cpus")), "0,2-3");
        // With the record of what was asked (the helper keeps it in the
        // container's depot dir), exactly that; without, the largest shares
        // value of weight 59.
        assert_eq!(v2.get_limits(&c1(), Some(512)).unwrap(), want);
        let got = v2.get_limits(&c1(), None).unwrap();
        assert_eq!(
            got,
            Limits {
                cpu_shares: Some(limits::weight_to_shares(59)),
                ..want.clone()
            }
        );
        assert_eq!(limits::shares_to_weight(got.cpu_shares.unwrap()), 59);
        for shares in [2, 3, 100, 1000, 1024, 1025, 10_000, 262_144] {
            let l = Limits {
                cpu_shares: Some(shares),
                ..Limits::default()
            };
            v2.set_limits(&c1(), &l).unwrap();
            let read_back = v2.get_limits(&c1(), Some(shares)).unwrap().cpu_shares;
            assert_eq!(read_back, Some(shares));
        }
        // Removing the quota keeps the period.
        v2.set_limits(
            &c1(),
            &Limits {
                cpu_quota: Some(CpuQuota {
                    period_us: 20_000,
                    quota_us: u64::MAX,
                }),
                ..Limits::default()
            },
        )
        .unwrap();
        assert_eq!(read(&d.join("cpu.max")), "max 20000");
        assert_eq!(v2.get_limits(&c1(), None).unwrap().cpu_quota, None);
    }

    #[test]
    fn bad_values_and_limits_below_usage_change_nothing() {
        let (_t, v2, d) = tree("refuse");
        let before = |f: &str| read(&d.join(f));
        let (mem, pids) = (before("memory.max"), before("pids.max"));
        for (l, kind) in [
            (
                Limits {
                    memory_bytes: Some(64 << 20),
                    cpu_shares: Some(1),
                    ..Limits::default()
                },
                ErrorKind::InvalidValue,
            ),
            (
                Limits {
                    memory_bytes: Some(4 << 20), // below memory.current (8 MiB)
                    ..Limits::default()
                },
                ErrorKind::InvalidState,
            ),
            (
                Limits {
                    memory_bytes: Some(64 << 20),
                    pids_max: Some(2), // below pids.current (3)
                    ..Limits::default()
                },
                ErrorKind::InvalidState,
            ),
            (
                Limits {
                    cpuset: Some("4".into()), // not in the parent's 0-3
                    ..Limits::default()
                },
                ErrorKind::InvalidValue,
            ),
        ] {
            let e = v2.set_limits(&c1(), &l).unwrap_err();
            assert_eq!(e.kind, kind, "{l:?}: {}", e.message);
            assert_eq!(
                (before("memory.max"), before("pids.max")),
                (mem.clone(), pids.clone())
            );
        }
        let e = v2
            .set_limits(
                &c1(),
                &Limits {
                    pids_max: Some(2),
                    ..Limits::default()
                },
            )
            .unwrap_err();
        assert_eq!(e.message, "pids_max 2 is below current usage 3");
        let unknown = Handle::new("nope").unwrap();
        assert!(v2
            .get_limits(&unknown, None)
            .unwrap_err()
            .contains("missing"));
    }

    #[test]
    fn a_failed_write_restores_the_earlier_ones() {
        let (mut t, v2, d) = tree("restore");
        // pids.max is written last; immutable, it can be read but not written.
        set_immutable(&d.join("pids.max"), true);
        t.immutable = Some(d.join("pids.max"));
        let e = v2
            .set_limits(
                &c1(),
                &Limits {
                    memory_bytes: Some(64 << 20),
                    cpu_shares: Some(512),
                    cpu_quota: Some(CpuQuota {
                        period_us: 100_000,
                        quota_us: 50_000,
                    }),
                    pids_max: Some(50),
                    cpuset: Some("1".into()),
                    disk: None,
                    bandwidth: None,
                },
            )
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::System);
        assert!(
            e.message.contains("pids.max") && e.message.contains("restored"),
            "{}",
            e.message
        );
        assert_eq!(read(&d.join("memory.max")), "max");
        assert_eq!(read(&d.join("cpu.weight")), "100");
        assert_eq!(read(&d.join("cpu.max")), "max 100000");
        assert_eq!(read(&d.join("cpuset.cpus")), "");
        assert_eq!(read(&d.join("pids.max")), "max\n");
    }

    #[test]
    fn stats_and_the_oom_watch_come_from_the_v2_files() {
        let (_t, v2, d) = tree("stats");
        let s = v2.stats(&c1()).unwrap();
        assert_eq!(
            s,
            Stats {
                memory_usage_bytes: 8 << 20,
                memory_stat: vec![
                    ("anon".into(), 4096),
                    ("file".into(), 8192),
                    ("kernel".into(), 0),
                    // Files of their own on v2, under their v1 names.
                    ("swap".into(), 12288),
                    ("hierarchical_memory_limit".into(), V1_UNLIMITED),
                ],
                cpu_usage_ns: 1_500_000,
                cpu_user_ns: 1_000_000,
                cpu_system_ns: 500_000,
                pids_current: 3,
                pids_max: None,
                oom_kills: 2,
                disk: None,
                net: Default::default(),
            }
        );
        write(&d.join("pids.max"), "50\n");
        write(&d.join("memory.max"), "67108864\n");
        std::fs::remove_file(d.join("memory.swap.current")).unwrap();
        let s = v2.stats(&c1()).unwrap();
        assert_eq!(s.pids_max, Some(50));
        // No swap accounting: no swap figure, rather than a made-up 0.
        assert_eq!(
            &s.memory_stat[3..],
            &[("hierarchical_memory_limit".to_string(), 64 << 20)]
        );
        // The watch is memory.events itself, opened read-only.
        let fd = v2.oom_watch(&c1()).unwrap();
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
        assert_eq!(link, d.join("memory.events"));
        // SAFETY: F_GETFL on an fd we own.
        let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(fl & libc::O_ACCMODE, libc::O_RDONLY);
        // Kill writes cgroup.kill; no devices controller to write.
        write(&d.join("cgroup.kill"), "0");
        v2.kill_all(&c1()).unwrap();
        assert_eq!(read(&d.join("cgroup.kill")), "1");
        v2.apply_device_allowlist(&c1()).unwrap();
    }

    #[test]
    fn a_parent_without_required_controllers_is_refused() {
        let root = PathBuf::from(format!("/tmp/grove-helper-v2-bare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("grove")).unwrap();
        let _t = Tree {
            root: root.clone(),
            immutable: None,
        };
        write(&root.join("cgroup.controllers"), "cpu io\n");
        write(&root.join("cgroup.subtree_control"), "cpu io\n");
        write(&root.join("grove/cgroup.controllers"), "cpu io\n");
        write(&root.join("grove/cgroup.subtree_control"), "cpu\n");
        let e = V2::open(root.to_str().unwrap(), &at_root(), "grove", 5000)
            .err()
            .unwrap();
        assert!(e.contains("memory controller is not available"), "{e}");
    }

    #[test]
    fn the_helpers_own_cgroup_is_the_v2_line_of_proc_self_cgroup() {
        let hybrid =
            "9:name=systemd:/system.slice/x.service\n4:memory:/\n0::/system.slice/x.service\n";
        assert_eq!(own_cgroup(hybrid).unwrap(), "/system.slice/x.service");
        assert_eq!(own_cgroup("0::/\n").unwrap(), "/");
        assert!(own_cgroup("4:memory:/\n")
            .unwrap_err()
            .contains("no cgroup v2 line"));
        assert!(own_cgroup("0::/a/../b\n")
            .unwrap_err()
            .contains("not a cgroup path"));
        assert!(own_cgroup("0::relative\n").is_err());
    }

    #[test]
    fn containers_go_to_the_containers_unit_next_to_the_helpers() {
        let helper = "/system.slice/grove-helper.service";
        let unit = "/system.slice/grove-containers.service";
        let delegated = |p: &str| p == unit;
        let nothing = |_: &str| false;
        // systemd started us as grove-helper.service, the containers unit runs.
        assert_eq!(
            choose(helper, &delegated),
            Ok(Home::Delegated { unit: unit.into() })
        );
        // Its sibling in another slice too.
        assert_eq!(
            choose("/grove.slice/grove-helper.service", &|p: &str| p
                == "/grove.slice/grove-containers.service"),
            Ok(Home::Delegated {
                unit: "/grove.slice/grove-containers.service".into()
            })
        );
        // As grove-helper.service without the containers unit: an error
        // that names it, not containers outside every unit.
        let e = choose(helper, &nothing).unwrap_err();
        assert!(
            e.contains(unit) && e.contains("systemctl start grove-containers.service"),
            "{e}"
        );
        // Anything else (./dev up, the test harness, a CI runner's unit,
        // another init): the root, and the log says why.
        for own in [
            "/",
            "/user.slice/user-0.slice/session-1.scope",
            "/system.slice/grove-lane.service",
            "/system.slice/grove-helper.service/supervisor",
        ] {
            let Ok(Home::Root { why }) = choose(own, &delegated) else {
                panic!("{own} is not grove-helper.service");
            };
            assert!(
                why.contains("does not run as grove-helper.service"),
                "{why}"
            );
            assert!(why.contains(own), "{why}");
        }
    }

    /// A fake v2 tree shaped like systemd's (plain files in a temp dir;
    /// this host is hybrid): the controllers are enabled at the containers
    /// unit and the parent goes below it.
    #[test]
    fn the_containers_unit_gets_the_controllers_and_the_containers() {
        let root = PathBuf::from(format!("/tmp/grove-helper-v2-deleg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let _t = Tree {
            root: root.clone(),
            immutable: None,
        };
        let unit = root.join("system.slice/grove-containers.service");
        std::fs::create_dir_all(unit.join(SUPERVISOR)).unwrap();
        std::fs::create_dir_all(unit.join("grove")).unwrap();
        let all = "cpuset cpu io memory pids\n";
        for d in [&unit, &unit.join("grove")] {
            write(&d.join("cgroup.controllers"), all);
            write(&d.join("cgroup.subtree_control"), "");
        }
        write(&unit.join("grove/pids.max"), "max\n");
        let home = Home::Delegated {
            unit: "/system.slice/grove-containers.service".into(),
        };
        let v2 = V2::open(root.to_str().unwrap(), &home, "grove", 77).unwrap();
        assert!(v2.cpuset);
        // Each "+name" write truncates the plain file: the last one stays.
        assert_eq!(read(&unit.join("cgroup.subtree_control")), "+io");
        assert_eq!(read(&unit.join("grove/pids.max")), "77");
        v2.create(&c1()).unwrap();
        assert!(unit.join("grove/c1").is_dir());
    }

    /// Removes a cgroup made on the real hierarchy, even on failure.
    struct RealCgroup(PathBuf);

    impl Drop for RealCgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }

    fn real_v2_root() -> &'static str {
        use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
        ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .find(|p| statfs(*p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC))
            .expect("a cgroup2 hierarchy is mounted")
    }

    /// On the real kernel (the host's cgroup2 hierarchy, controller-less
    /// /sys/fs/cgroup/unified here): systemd's delegation mark is a
    /// trusted.delegate xattr on the cgroup, which cgroupfs keeps.
    #[test]
    fn delegation_marks_are_read_from_the_real_hierarchy() {
        let root = real_v2_root();
        let rel = format!("/grove-deleg-test-{}", std::process::id());
        let cg = RealCgroup(PathBuf::from(format!("{root}{rel}")));
        std::fs::create_dir(&cg.0).unwrap();
        let path = cg.0.to_str().unwrap();
        assert!(!is_delegated(path));
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let (p, name) = (c(path), c("trusted.delegate"));
        // SAFETY: NUL-terminated path and name, a one-byte value.
        let r = unsafe { libc::setxattr(p.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
        assert_eq!(r, 0, "setxattr: {}", std::io::Error::last_os_error());
        assert!(is_delegated(path));
        // SAFETY: as above, a different one-byte value.
        unsafe { libc::setxattr(p.as_ptr(), name.as_ptr(), b"0".as_ptr().cast(), 1, 0) };
        assert!(!is_delegated(path));

        drop(cg);
    }

    /// A forked child that waits until `enter` has moved it, then opens
    /// each node read-only and mknods each (path, mode, dev); the errnos
    /// (0: it worked), in that order.
    fn probe(
        enter: &dyn Fn(i32) -> Result<(), String>,
        opens: &[&Path],
        mknods: &[(&Path, libc::mode_t, libc::dev_t)],
    ) -> Vec<u8> {
        use std::ffi::CString;
        use std::io::Read;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
        let opens: Vec<CString> = opens.iter().map(|p| c(p)).collect();
        let mknods: Vec<(CString, libc::mode_t, libc::dev_t)> =
            mknods.iter().map(|(p, m, d)| (c(p), *m, *d)).collect();
        let (go_r, go_w) = nix::unistd::pipe().unwrap();
        let (out_r, out_w) = nix::unistd::pipe().unwrap();
        // SAFETY: the child makes only raw system calls (no allocation, no
        // lock) and ends with _exit, so forking a multi-threaded test
        // process is sound.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let mut b = [0u8; 1];
            // SAFETY: raw system calls on fds and NUL-terminated paths this
            // process holds; errno is read from its thread-local location.
            unsafe {
                libc::read(go_r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
                let errno = || *libc::__errno_location() as u8;
                for p in &opens {
                    let fd = libc::open(
                        p.as_ptr(),
                        libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
                    );
                    let r = if fd < 0 { errno() } else { 0 };
                    libc::close(fd);
                    libc::write(out_w.as_raw_fd(), (&r as *const u8).cast(), 1);
                }
                for (p, mode, dev) in &mknods {
                    let r = if libc::mknod(p.as_ptr(), *mode, *dev) < 0 {
                        errno()
                    } else {
                        0
                    };
                    libc::unlink(p.as_ptr());
                    libc::write(out_w.as_raw_fd(), (&r as *const u8).cast(), 1);
                }
                libc::_exit(0);
            }
        }
        drop((go_r, out_w));
        let entered = enter(pid);
        nix::unistd::write(&go_w, b"g").unwrap();
        drop(go_w);
        let mut out = Vec::new();
        std::fs::File::from(out_r).read_to_end(&mut out).unwrap();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        entered.unwrap();
        out
    }

    /// Removes the test's cgroups and node directory, even on failure.
    struct Real {
        v2: V2,
        parent: PathBuf,
        nodes: PathBuf,
        handles: Vec<Handle>,
    }

    impl Drop for Real {
        fn drop(&mut self) {
            for h in &self.handles {
                let _ = self.v2.remove(h);
            }
            let _ = std::fs::remove_dir(&self.parent);
            let _ = std::fs::remove_dir_all(&self.nodes);
        }
    }

    /// On the real kernel, not a fake tree: a device program needs a
    /// cgroup2 directory but no controller, so the test uses the host's
    /// cgroup2 hierarchy (on this hybrid host /sys/fs/cgroup/unified, which
    /// has no controllers). The same probe runs in a cgroup without the
    /// program (every node opens) and in one `enter` attached it to.
    #[test]
    fn enter_attaches_a_device_program_that_enforces_the_v1_allowlist() {
        use nix::sys::stat::makedev;
        use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC};
        let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
            .into_iter()
            .find(|p| statfs(*p).is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC))
            .expect("a cgroup2 hierarchy is mounted");
        let id = std::process::id();
        let parent = PathBuf::from(format!("{root}/grove-devtest-{id}"));
        std::fs::create_dir(&parent).unwrap();
        // Device nodes on a filesystem mounted without nodev (/tmp here).
        let nodes = PathBuf::from(format!("/var/tmp/grove-devtest-{id}"));
        let real = Real {
            v2: V2 {
                parent: fs::openat(None, parent.to_str().unwrap(), OFlag::O_RDONLY, 0).unwrap(),
                cpuset: false,
            },
            parent,
            nodes: nodes.clone(),
            handles: vec![
                Handle::new("plain").unwrap(),
                Handle::new("guarded").unwrap(),
            ],
        };
        std::fs::create_dir_all(&nodes).unwrap();
        let vfs = nix::sys::statvfs::statvfs(&nodes).unwrap();
        assert!(!vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_NODEV));
        // The first block device the host lists (opened read-only, never read).
        let parts = std::fs::read_to_string("/proc/partitions").unwrap();
        let (bmaj, bmin) = parts
            .lines()
            .skip(2)
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.parse::<u64>().ok()?,
                    f.get(1)?.parse::<u64>().ok()?,
                ))
            })
            .expect("a block device in /proc/partitions");
        let chr = nix::sys::stat::SFlag::S_IFCHR;
        let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
        let node = |name: &str, kind, maj, min| {
            let p = nodes.join(name);
            nix::sys::stat::mknod(&p, kind, mode, makedev(maj, min)).unwrap();
            p
        };
        let null = node("null", chr, 1, 3);
        let pts = node("pts9", chr, 136, 9);
        let kmsg = node("kmsg", chr, 1, 11);
        let disk = node("disk", nix::sys::stat::SFlag::S_IFBLK, bmaj, bmin);
        let opens = [
            null.as_path(),
            pts.as_path(),
            kmsg.as_path(),
            disk.as_path(),
        ];
        let (new_null, new_mem) = (nodes.join("new-null"), nodes.join("new-mem"));
        let ifchr = libc::S_IFCHR | 0o600;
        let mknods = [
            (new_null.as_path(), ifchr, libc::makedev(1, 3)),
            (new_mem.as_path(), ifchr, libc::makedev(1, 1)),
        ];
        let [plain, guarded] = [&real.handles[0], &real.handles[1]];
        real.v2.create(plain).unwrap();
        real.v2.create(guarded).unwrap();
        let without = probe(
            &|pid| {
                let dir = real.v2.dir(plain)?;
                write_cg(dir.as_fd(), "cgroup.procs", &pid.to_string()).map_err(|e| e.to_string())
            },
            &opens,
            &mknods,
        );
        // pts9 may not exist as a pty (ENXIO); it is the cgroup's verdict
        // that counts, and without a program there is none.
        assert_eq!(without.len(), 6);
        assert!(
            without.iter().all(|e| *e as i32 != libc::EPERM),
            "{without:?}"
        );
        assert_eq!(
            (without[0], without[2], without[3], without[4], without[5]),
            (0, 0, 0, 0, 0)
        );
        let with = probe(&|pid| real.v2.enter(guarded, pid), &opens, &mknods);
        let eperm = libc::EPERM as u8;
        assert_eq!(with[0], 0, "/dev/null's device is allowed: {with:?}");
        assert_ne!(with[1], eperm, "pts devices are allowed: {with:?}");
        assert_eq!(
            (with[2], with[3]),
            (eperm, eperm),
            "kmsg and the disk: {with:?}"
        );
        assert_eq!(
            (with[4], with[5]),
            (0, eperm),
            "mknod 1:3 and 1:1: {with:?}"
        );
        // Nothing can be attached below it (it was attached without flags).
        let below = real.v2.dir(guarded).unwrap();
        fs::mkdir_at(below.as_fd(), "nested", 0o755, false).unwrap();
        let nested = fs::open_dir(below.as_fd(), "nested").unwrap();
        let e = crate::devices::attach(nested.as_fd()).unwrap_err();
        assert!(e.contains("ATTACH") && e.contains("EPERM"), "{e}");
        drop(real);
    }
}
