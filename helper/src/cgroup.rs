//! Cgroups: one trait over the drivers, detection from statfs, and the v1
//! driver (hybrid and legacy hosts). The v2 driver arrives with the limits
//! work; until then a unified host is refused at start-up.
//!
//! Each controller's parent cgroup (<root>/<controller>/<cgroup_parent>) is
//! opened once at start-up; per-container work is relative to that dirfd
//! with the validated handle as the only request-derived component.

use crate::fs;
use grove_schema::Handle;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC, TMPFS_MAGIC};
use nix::unistd::{Pid, UnlinkatFlags};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub trait Cgroups {
    /// Driver name for logs ("v1").
    fn name(&self) -> &'static str;
    /// Create the container's cgroups; on failure nothing is left behind.
    fn create(&self, handle: &Handle) -> Result<(), String>;
    /// Move `pid` into every one of the container's cgroups.
    fn enter(&self, handle: &Handle, pid: i32) -> Result<(), String>;
    /// The processes in the container's cgroup.
    fn procs(&self, handle: &Handle) -> Result<Vec<i32>, String>;
    /// Freeze the cgroup, SIGKILL every process in it, thaw it.
    fn kill_all(&self, handle: &Handle) -> Result<(), String>;
    /// Remove the container's cgroups (absent ones are fine).
    fn remove(&self, handle: &Handle) -> Result<(), String>;
}

pub const ROOT: &str = "/sys/fs/cgroup";
/// The v1 controllers a container gets, when the host mounts them.
pub const V1_CONTROLLERS: [&str; 8] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio",
];

/// Look at how the host mounts cgroups and build the matching driver.
pub fn detect(parent: &str) -> Result<Box<dyn Cgroups>, String> {
    let st = statfs(ROOT).map_err(|e| format!("statfs {ROOT}: {e}"))?;
    let t = st.filesystem_type();
    if t == CGROUP2_SUPER_MAGIC {
        return Err(
            "cgroup v2 (unified) hosts are not supported yet: the v2 driver arrives with the limits issue".into(),
        );
    }
    if t != TMPFS_MAGIC {
        return Err(format!(
            "{ROOT} is neither cgroup2 nor a tmpfs of v1 hierarchies"
        ));
    }
    Ok(Box::new(V1::open(parent)?))
}

struct Controller {
    name: &'static str,
    /// <root>/<name>/<cgroup_parent>, opened at start-up.
    parent: OwnedFd,
}

pub struct V1 {
    controllers: Vec<Controller>,
}

fn err(what: &str, e: Errno) -> String {
    format!("{what}: {e}")
}

impl V1 {
    /// Open every mounted v1 controller and make sure our parent cgroup
    /// exists in each (cpuset needs cpus and mems before it takes tasks).
    fn open(parent: &str) -> Result<V1, String> {
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
            if seen_devs.contains(&dev) {
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
            controllers.push(Controller {
                name,
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

/// Write a cgroup control file (no temp file: cgroupfs files are knobs).
fn write_cg(dir: std::os::fd::BorrowedFd, file: &str, value: &str) -> Result<(), Errno> {
    let fd = fs::openat(Some(dir), file, OFlag::O_WRONLY | OFlag::O_NOFOLLOW, 0)?;
    fs::write_all(fd.as_raw_fd(), value.as_bytes())
}

impl Cgroups for V1 {
    fn name(&self) -> &'static str {
        "v1"
    }

    fn create(&self, handle: &Handle) -> Result<(), String> {
        for (i, c) in self.controllers.iter().enumerate() {
            let made =
                fs::mkdir_at(c.parent.as_fd(), handle.as_str(), 0o755, false).and_then(|()| {
                    if c.name == "cpuset" {
                        let fd = fs::open_dir(c.parent.as_fd(), handle.as_str())?;
                        copy_cpuset(c.parent.as_fd(), fd.as_fd()).map_err(|_| Errno::EINVAL)?;
                    }
                    Ok(())
                });
            if let Err(e) = made {
                // Undo what this call made, in reverse.
                for done in self.controllers[..=i].iter().rev() {
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

    fn procs(&self, handle: &Handle) -> Result<Vec<i32>, String> {
        let c = self.first();
        let text = match fs::read_file_at(c.parent.as_fd(), &format!("{handle}/cgroup.procs")) {
            Ok(t) => t,
            Err(Errno::ENOENT) => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}/{handle}/cgroup.procs: {e}", c.name)),
        };
        text.lines()
            .map(|l| {
                l.trim()
                    .parse::<i32>()
                    .map_err(|e| format!("cgroup.procs line {l:?}: {e}"))
            })
            .collect()
    }

    fn kill_all(&self, handle: &Handle) -> Result<(), String> {
        // Frozen tasks cannot exit, so a pid read from cgroup.procs while the
        // cgroup is frozen still names the same process when we signal it:
        // no pid reuse can make us kill a stranger.
        let freezer = match self.freezer() {
            Some(f) => Some(
                fs::open_dir(f.parent.as_fd(), handle.as_str()).map_err(|e| err("freezer", e))?,
            ),
            None => None,
        };
        if let Some(f) = &freezer {
            write_cg(f.as_fd(), "freezer.state", "FROZEN").map_err(|e| err("freeze", e))?;
            let deadline = Instant::now() + Duration::from_millis(500);
            while Instant::now() < deadline {
                match fs::read_file_at(f.as_fd(), "freezer.state") {
                    Ok(s) if s.trim() == "FROZEN" => break,
                    _ => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
        let result = self.procs(handle).map(|pids| {
            for pid in pids {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        });
        if let Some(f) = &freezer {
            write_cg(f.as_fd(), "freezer.state", "THAWED").map_err(|e| err("thaw", e))?;
        }
        result
    }

    fn remove(&self, handle: &Handle) -> Result<(), String> {
        for c in &self.controllers {
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                match nix::unistd::unlinkat(
                    Some(c.parent.as_raw_fd()),
                    handle.as_str(),
                    UnlinkatFlags::RemoveDir,
                ) {
                    Ok(()) | Err(Errno::ENOENT) => break,
                    // The last tasks may still be leaving the cgroup.
                    Err(Errno::EBUSY) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => return Err(format!("rmdir cgroup {}/{handle}: {e}", c.name)),
                }
            }
        }
        Ok(())
    }
}
