//! The v1 driver (hybrid and legacy hosts): one cgroup per mounted
//! controller hierarchy, each under <root>/<controller>/<cgroup_parent>.

use super::driver::{system, Cgroups, DEVICE_ALLOWLIST, ROOT};
use super::tree::{err, kill_listed, read_max, read_pids, read_u64, walk, write_cg};
use crate::fs;
use crate::limits::{self, Current, Write};
use grove_schema::helper::{CpuQuota, HelperError, Limits, Stats};
use grove_schema::Handle;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::statfs::{statfs, CGROUP_SUPER_MAGIC};
use nix::unistd::UnlinkatFlags;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// The v1 controllers a container gets, when the host mounts them.
pub const V1_CONTROLLERS: [&str; 8] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio",
];

struct Controller {
    name: &'static str,
    /// Every controller name this hierarchy serves (co-mounted ones, such
    /// as cpu and cpuacct, share one).
    names: Vec<&'static str>,
    /// <root>/<name>/<cgroup_parent>, opened at start-up.
    parent: OwnedFd,
}

pub struct V1 {
    controllers: Vec<Controller>,
}

impl V1 {
    /// Open every mounted v1 controller and make sure our parent cgroup
    /// exists in each (cpuset needs cpus and mems before it takes tasks).
    pub(super) fn open(parent: &str, total_pids: u64) -> Result<V1, String> {
        let root = fs::openat(None, ROOT, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
            .map_err(|e| err(ROOT, e))?;
        let mut controllers = Vec::new();
        let mut seen_devs = Vec::new();
        for name in V1_CONTROLLERS {
            let path = format!("{ROOT}/{name}");
            match statfs(path.as_str()) {
                Ok(s) if s.filesystem_type() == CGROUP_SUPER_MAGIC => {}
                _ => continue, // not mounted: the container goes without it
            }
            // Co-mounted controllers (cpu,cpuacct) are one hierarchy: use it once.
            let ctl_root = fs::openat(
                Some(root.as_fd()),
                name,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                0,
            )
            .map_err(|e| err(&path, e))?;
            let dev = nix::sys::stat::fstat(ctl_root.as_raw_fd())
                .map_err(|e| err(&path, e))?
                .st_dev;
            if let Some(i) = seen_devs.iter().position(|d| *d == dev) {
                let c: &mut Controller = &mut controllers[i];
                c.names.push(name);
                continue;
            }
            seen_devs.push(dev);
            fs::mkdir_at(ctl_root.as_fd(), parent, 0o755, true)
                .map_err(|e| err(&format!("{path}/{parent}"), e))?;
            let parent_fd = fs::open_dir(ctl_root.as_fd(), parent)
                .map_err(|e| err(&format!("{path}/{parent}"), e))?;
            if name == "cpuset" {
                copy_cpuset(ctl_root.as_fd(), parent_fd.as_fd())
                    .map_err(|e| format!("{path}/{parent}: {e}"))?;
            }
            if name == "pids" {
                // Why safe: it only bounds the helper's own parent cgroup.
                write_cg(parent_fd.as_fd(), "pids.max", &total_pids.to_string())
                    .map_err(|e| err(&format!("{path}/{parent}/pids.max"), e))?;
            }
            controllers.push(Controller {
                name,
                names: vec![name],
                parent: parent_fd,
            });
        }
        if controllers.is_empty() {
            return Err(format!("no cgroup v1 controller is mounted under {ROOT}"));
        }
        Ok(V1 { controllers })
    }

    fn first(&self) -> &Controller {
        // Prefer pids (it exists to count processes); any hierarchy holds them all.
        self.controllers
            .iter()
            .find(|c| c.name == "pids")
            .unwrap_or(&self.controllers[0])
    }

    fn freezer(&self) -> Option<&Controller> {
        self.controllers.iter().find(|c| c.name == "freezer")
    }
}

/// A new cpuset cgroup starts with empty cpus and mems and refuses tasks
/// until they are set: copy them from the level above if empty.
fn copy_cpuset(from: std::os::fd::BorrowedFd, to: std::os::fd::BorrowedFd) -> Result<(), String> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let current = fs::read_file_at(to, file).map_err(|e| err(file, e))?;
        if current.trim().is_empty() {
            let value = fs::read_file_at(from, file).map_err(|e| err(file, e))?;
            write_cg(to, file, value.trim()).map_err(|e| err(file, e))?;
        }
    }
    Ok(())
}

/// Nanoseconds per USER_HZ tick (v1 cpuacct.stat counts ticks).
fn ns_per_tick() -> u64 {
    // SAFETY: sysconf only reads a constant of the C library.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        1_000_000_000 / hz as u64
    } else {
        10_000_000 // USER_HZ is 100 on every Linux architecture
    }
}

impl V1 {
    /// The hierarchy serving controller `name`, if mounted.
    fn ctl(&self, name: &str) -> Option<&Controller> {
        self.controllers.iter().find(|c| c.names.contains(&name))
    }

    /// The container's cgroup in controller `name`: an error if the
    /// controller is not mounted or the cgroup does not exist.
    fn dir(&self, name: &str, handle: &Handle) -> Result<(OwnedFd, String), String> {
        let c = self
            .ctl(name)
            .ok_or_else(|| format!("the {name} cgroup controller is not mounted on this host"))?;
        let fd = self
            .open_container(c, handle)?
            .ok_or_else(|| format!("{name}/{handle}: the container's cgroup is missing"))?;
        Ok((fd, format!("{name}/{handle}")))
    }

    /// The container's cgroup in `name`, or None if that controller is not
    /// mounted (its limits then read as none and its stats as zero).
    fn dir_opt(&self, name: &str, handle: &Handle) -> Result<Option<OwnedFd>, String> {
        match self.ctl(name) {
            None => Ok(None),
            Some(_) => self.dir(name, handle).map(|(fd, _)| Some(fd)),
        }
    }

    /// The container's cgroup in controller `c`; None if it does not exist.
    fn open_container(&self, c: &Controller, handle: &Handle) -> Result<Option<OwnedFd>, String> {
        match fs::open_dir(c.parent.as_fd(), handle.as_str()) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(format!("{}/{handle}: {e}", c.name)),
        }
    }
}

impl Cgroups for V1 {
    fn name(&self) -> &'static str {
        "v1"
    }

    fn create(&self, handle: &Handle) -> Result<(), String> {
        // Only cgroups this call made are undone: a same-named cgroup that
        // was already there is not ours to remove.
        let mut made: Vec<&Controller> = Vec::new();
        for c in &self.controllers {
            let result = fs::mkdir_at(c.parent.as_fd(), handle.as_str(), 0o755, false)
                .map(|()| made.push(c))
                .and_then(|()| {
                    if c.name == "cpuset" {
                        let fd = fs::open_dir(c.parent.as_fd(), handle.as_str())?;
                        copy_cpuset(c.parent.as_fd(), fd.as_fd()).map_err(|_| Errno::EINVAL)?;
                    }
                    Ok(())
                });
            if let Err(e) = result {
                for done in made.iter().rev() {
                    let _ = nix::unistd::unlinkat(
                        Some(done.parent.as_raw_fd()),
                        handle.as_str(),
                        UnlinkatFlags::RemoveDir,
                    );
                }
                return Err(format!("mkdir cgroup {}/{handle}: {e}", c.name));
            }
        }
        Ok(())
    }

    fn enter(&self, handle: &Handle, pid: i32) -> Result<(), String> {
        for c in &self.controllers {
            let dir =
                fs::open_dir(c.parent.as_fd(), handle.as_str()).map_err(|e| err(c.name, e))?;
            write_cg(dir.as_fd(), "cgroup.procs", &pid.to_string())
                .map_err(|e| format!("{}/{handle}/cgroup.procs: {e}", c.name))?;
        }
        Ok(())
    }

    /// Every process in the container's cgroup or any cgroup below it (any
    /// one hierarchy holds every process of the container).
    fn procs(&self, handle: &Handle) -> Result<Vec<i32>, String> {
        let c = self.first();
        let Some(top) = self.open_container(c, handle)? else {
            return Ok(Vec::new());
        };
        let mut all = Vec::new();
        walk(top.as_fd(), None, &mut |dir| {
            match read_pids(dir) {
                Ok(p) => all.extend(p),
                Err(Errno::ENOENT) => {} // removed meanwhile
                Err(e) => return Err(format!("{}/{handle}: cgroup.procs: {e}", c.name)),
            }
            Ok(())
        })?;
        Ok(all)
    }

    fn kill_all(&self, handle: &Handle) -> Result<(), String> {
        // Freezing the container's freezer cgroup freezes every cgroup below
        // it too, so nothing forks while we kill.
        let freezer = match self.freezer() {
            Some(f) => self.open_container(f, handle)?,
            None => None,
        };
        if let Some(f) = &freezer {
            write_cg(f.as_fd(), "freezer.state", "FROZEN").map_err(|e| err("freeze", e))?;
            // Checked after 0.25, 0.5, 1 … 32 ms: freezing usually takes
            // well under a millisecond.
            let deadline = Instant::now() + Duration::from_millis(500);
            let mut pause = Duration::from_micros(250);
            while Instant::now() < deadline {
                match fs::read_file_at(f.as_fd(), "freezer.state") {
                    Ok(s) if s.trim() == "FROZEN" => break,
                    _ => std::thread::sleep(pause),
                }
                pause = (pause * 2).min(Duration::from_millis(32));
            }
        }
        let c = self.first();
        let result = match self.open_container(c, handle)? {
            Some(top) => walk(top.as_fd(), None, &mut |dir| {
                kill_listed(dir).map_err(|e| format!("{}/{handle}: kill: {e}", c.name))
            }),
            None => Ok(()),
        };
        if let Some(f) = &freezer {
            // Frozen tasks die only once thawed. Thaw the container's
            // cgroup, then every cgroup below (container root may have
            // frozen one of its own).
            write_cg(f.as_fd(), "freezer.state", "THAWED").map_err(|e| err("thaw", e))?;
            walk(f.as_fd(), None, &mut |dir| {
                let _ = write_cg(dir, "freezer.state", "THAWED");
                Ok(())
            })?;
        }
        result
    }

    fn remove(&self, handle: &Handle) -> Result<(), String> {
        for c in &self.controllers {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let Some(top) = self.open_container(c, handle)? else {
                    break;
                };
                // Nested cgroups first, deepest first.
                walk(top.as_fd(), Some(deadline), &mut |_| Ok(()))
                    .map_err(|e| format!("{}/{handle}: {e}", c.name))?;
                drop(top);
                match nix::unistd::unlinkat(
                    Some(c.parent.as_raw_fd()),
                    handle.as_str(),
                    UnlinkatFlags::RemoveDir,
                ) {
                    Ok(()) | Err(Errno::ENOENT) => break,
                    // The last tasks may still be leaving, or a cgroup
                    // appeared below after the walk: walk again.
                    Err(Errno::EBUSY) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => return Err(format!("rmdir cgroup {}/{handle}: {e}", c.name)),
                }
            }
        }
        Ok(())
    }

    fn set_limits(&self, handle: &Handle, l: &Limits) -> Result<(), HelperError> {
        limits::validate(l, limits::host_ram())?;
        // Open every cgroup the request touches before reading or writing anything.
        let need = |name: &str, wanted: bool| -> Result<Option<(OwnedFd, String)>, HelperError> {
            if wanted {
                self.dir(name, handle).map(Some).map_err(system)
            } else {
                Ok(None)
            }
        };
        let memory = need("memory", l.memory_bytes.is_some())?;
        let cpu = need("cpu", l.cpu_shares.is_some() || l.cpu_quota.is_some())?;
        let pids = need("pids", l.pids_max.is_some())?;
        let cpuset = need("cpuset", l.cpuset.is_some())?;

        let mut cur = Current::default();
        if let Some((d, _)) = &memory {
            // The working set: page cache the kernel would reclaim does
            // not count against a lower limit.
            let usage = read_u64(d.as_fd(), "memory.usage_in_bytes").map_err(system)?;
            let stat = fs::read_file_at(d.as_fd(), "memory.stat")
                .map_err(|e| system(format!("memory.stat: {e}")))?;
            let inactive = limits::keyed(&stat, "total_inactive_file").unwrap_or(0);
            cur.memory_usage = Some(usage.saturating_sub(inactive));
        }
        if let Some((d, _)) = &pids {
            cur.pids_current = Some(read_u64(d.as_fd(), "pids.current").map_err(system)?);
        }
        if cpuset.is_some() {
            let parent = self.ctl("cpuset").map(|c| c.parent.as_fd());
            if let Some(p) = parent {
                cur.parent_cpus = Some(
                    fs::read_file_at(p, "cpuset.cpus")
                        .map_err(|e| system(format!("the parent cgroup's cpuset.cpus: {e}")))?,
                );
            }
        }
        limits::check_current(l, &cur)?;

        let mut writes = Vec::new();
        fn push<'a>(
            writes: &mut Vec<Write<'a>>,
            d: &'a Option<(OwnedFd, String)>,
            file: &'static str,
            value: String,
        ) {
            if let Some((fd, where_)) = d {
                writes.push(Write {
                    dir: fd.as_fd(),
                    where_: where_.clone(),
                    file,
                    value,
                });
            }
        }
        let mut add = |d, file, value| push(&mut writes, d, file, value);
        if let Some(c) = &l.cpuset {
            add(&cpuset, "cpuset.cpus", c.clone());
        }
        if let Some(m) = l.memory_bytes {
            add(&memory, "memory.limit_in_bytes", m.to_string());
        }
        if let Some(s) = l.cpu_shares {
            add(&cpu, "cpu.shares", s.to_string());
        }
        if let Some(q) = l.cpu_quota {
            add(&cpu, "cpu.cfs_period_us", q.period_us.to_string());
            let quota = if q.quota_us == u64::MAX {
                "-1".to_string() // no quota
            } else {
                q.quota_us.to_string()
            };
            add(&cpu, "cpu.cfs_quota_us", quota);
        }
        if let Some(p) = l.pids_max {
            add(&pids, "pids.max", p.to_string());
        }
        limits::apply(&writes)
    }

    fn get_limits(&self, handle: &Handle, _: Option<u64>) -> Result<Limits, String> {
        // v1 keeps cpu.shares itself: what it reads is what was set.
        let mut l = Limits::default();
        if let Some(d) = self.dir_opt("memory", handle)? {
            let m = read_u64(d.as_fd(), "memory.limit_in_bytes")?;
            l.memory_bytes = (m < limits::UNLIMITED_MEMORY).then_some(m);
        }
        if let Some(d) = self.dir_opt("cpu", handle)? {
            l.cpu_shares = Some(read_u64(d.as_fd(), "cpu.shares")?);
            let text = fs::read_file_at(d.as_fd(), "cpu.cfs_quota_us")
                .map_err(|e| err("cpu.cfs_quota_us", e))?;
            let quota: i64 = text
                .trim()
                .parse()
                .map_err(|_| format!("cpu.cfs_quota_us: {:?} is not a number", text.trim()))?;
            if quota >= 0 {
                l.cpu_quota = Some(CpuQuota {
                    period_us: read_u64(d.as_fd(), "cpu.cfs_period_us")?,
                    quota_us: quota as u64,
                });
            }
        }
        if let Some(d) = self.dir_opt("pids", handle)? {
            l.pids_max = read_max(d.as_fd(), "pids.max")?;
        }
        if let Some(d) = self.dir_opt("cpuset", handle)? {
            let c =
                fs::read_file_at(d.as_fd(), "cpuset.cpus").map_err(|e| err("cpuset.cpus", e))?;
            l.cpuset = Some(c.trim().to_string()).filter(|c| !c.is_empty());
        }
        Ok(l)
    }

    fn stats(&self, handle: &Handle) -> Result<Stats, String> {
        let mut s = Stats::default();
        if let Some(d) = self.dir_opt("memory", handle)? {
            s.memory_usage_bytes = read_u64(d.as_fd(), "memory.usage_in_bytes")?;
            let stat =
                fs::read_file_at(d.as_fd(), "memory.stat").map_err(|e| err("memory.stat", e))?;
            s.memory_stat = limits::parse_flat_keyed(&stat);
            let oom = fs::read_file_at(d.as_fd(), "memory.oom_control")
                .map_err(|e| err("memory.oom_control", e))?;
            s.oom_kills = limits::keyed(&oom, "oom_kill").unwrap_or(0);
        }
        if let Some(d) = self.dir_opt("cpuacct", handle)? {
            s.cpu_usage_ns = read_u64(d.as_fd(), "cpuacct.usage")?;
            let stat =
                fs::read_file_at(d.as_fd(), "cpuacct.stat").map_err(|e| err("cpuacct.stat", e))?;
            let tick = ns_per_tick();
            s.cpu_user_ns = limits::keyed(&stat, "user")
                .unwrap_or(0)
                .saturating_mul(tick);
            s.cpu_system_ns = limits::keyed(&stat, "system")
                .unwrap_or(0)
                .saturating_mul(tick);
        }
        if let Some(d) = self.dir_opt("pids", handle)? {
            s.pids_current = read_u64(d.as_fd(), "pids.current")?;
            s.pids_max = read_max(d.as_fd(), "pids.max")?;
        }
        Ok(s)
    }

    fn oom_watch(&self, handle: &Handle) -> Result<OwnedFd, String> {
        let (dir, where_) = self.dir("memory", handle)?;
        // SAFETY: eventfd takes no pointers; it returns a new fd or -1.
        let efd = Errno::result(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })
            .map_err(|e| err("eventfd", e))?;
        // SAFETY: eventfd just returned this fd; nothing else owns it.
        let efd = unsafe { OwnedFd::from_raw_fd(efd) };
        // Why safe: read-only, of the container's own memory.oom_control,
        // and only long enough to register the eventfd on it.
        let oc = fs::openat(
            Some(dir.as_fd()),
            "memory.oom_control",
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW,
            0,
        )
        .map_err(|e| format!("{where_}/memory.oom_control: {e}"))?;
        // Why safe: this registers a notification; the eventfd handed to
        // groved is a counter and gives no access to the cgroup itself.
        write_cg(
            dir.as_fd(),
            "cgroup.event_control",
            &format!("{} {}", efd.as_raw_fd(), oc.as_raw_fd()),
        )
        .map_err(|e| format!("{where_}/cgroup.event_control: {e}"))?;
        drop(oc);
        Ok(efd)
    }

    fn apply_device_allowlist(&self, handle: &Handle) -> Result<(), String> {
        let (dir, where_) = self.dir("devices", handle)?;
        // Why safe: it only narrows what the container may open or mknod;
        // deny everything first (the cgroup has no children yet, which "a"
        // requires), then allow the minimal /dev one rule per write.
        write_cg(dir.as_fd(), "devices.deny", "a")
            .map_err(|e| format!("{where_}/devices.deny: {e}"))?;
        for rule in DEVICE_ALLOWLIST {
            write_cg(dir.as_fd(), "devices.allow", rule)
                .map_err(|e| format!("{where_}/devices.allow {rule:?}: {e}"))?;
        }
        Ok(())
    }
}
