//! The peers Grove is measured against, run as the Debian packages ship
//! them: runc and crun on an OCI bundle this harness writes, bubblewrap on
//! the same rootfs directory.

use crate::stats::Samples;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// A peer binary, if installed (found on PATH).
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// An OCI bundle whose config runs `args` on `rootfs` (read-only) with
/// the same cgroup limits Grove's lifecycle round asks for, and pid,
/// network, ipc, uts and mount namespaces (runc's defaults).
pub struct Bundle {
    pub dir: PathBuf,
}

impl Bundle {
    /// `cgroup_parent` None: no cgroup limits (crun on a hybrid host).
    pub fn write(
        dir: &Path,
        rootfs: &Path,
        args: &[&str],
        cgroup_parent: Option<&str>,
    ) -> Result<Bundle, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut config = config(rootfs, args, cgroup_parent.unwrap_or("-"));
        if cgroup_parent.is_none() {
            let linux = config["linux"]
                .as_object_mut()
                .ok_or("the bundle's linux section")?;
            linux.remove("cgroupsPath");
            linux.insert(
                "resources".into(),
                json!({"devices": [{"allow": false, "access": "rwm"}]}),
            );
        }
        let text = serde_json::to_string_pretty(&config).map_err(|e| e.to_string())?;
        std::fs::write(dir.join("config.json"), text)
            .map_err(|e| format!("{}/config.json: {e}", dir.display()))?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
        })
    }
}

fn config(rootfs: &Path, args: &[&str], cgroup_parent: &str) -> Value {
    let mounts = json!([
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]);
    let caps = json!([
        "CAP_AUDIT_WRITE",
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_MKNOD",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
        "CAP_SETFCAP",
        "CAP_SETGID",
        "CAP_SETPCAP",
        "CAP_SETUID",
        "CAP_SYS_CHROOT"
    ]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": true},
        "hostname": "bench",
        "mounts": mounts,
        "linux": {
            "cgroupsPath": format!("/{cgroup_parent}/runc"),
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "memory": {"limit": crate::MEMORY_LIMIT},
                "cpu": {"shares": crate::CPU_WEIGHT},
                "pids": {"limit": crate::PIDS_MAX}
            },
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// Run `command` to completion; an error names it, its status and what
/// it wrote to stderr.
pub fn run(command: &mut Command) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("{command:?}: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said: Vec<&str> = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        return Err(format!(
            "{}: {} ({})",
            command.get_program().to_string_lossy(),
            out.status,
            said.join(" / ")
        ));
    }
    Ok(())
}

/// Time `rounds` runs of the command `make(i)` builds.
pub fn time_rounds(
    rounds: usize,
    mut make: impl FnMut(usize) -> Command,
) -> Result<Samples, String> {
    let mut samples = Samples::default();
    for i in 0..rounds {
        let mut command = make(i);
        let start = Instant::now();
        run(&mut command)?;
        samples.push(start.elapsed());
    }
    Ok(samples)
}

/// `<runtime> run` of a fresh container on `bundle`, `rounds` times. The
/// runtime deletes the container when its process exits.
pub fn oci_run(
    runtime: &Path,
    bundle: &Bundle,
    rounds: usize,
    prefix: &str,
) -> Result<Samples, String> {
    time_rounds(rounds, |i| {
        let mut c = Command::new(runtime);
        c.arg("run")
            .arg("--bundle")
            .arg(&bundle.dir)
            .arg(format!("{prefix}-{}-{i}", std::process::id()));
        c
    })
}

/// `runc exec <id> /bin/true` in one long-running container, `rounds`
/// times. The container is started detached and removed afterwards.
pub fn runc_exec(runc: &Path, bundle: &Bundle, rounds: usize) -> Result<Samples, String> {
    let id = format!("grove-bench-exec-{}", std::process::id());
    // Its process keeps the stdio it is given: none of them may be a pipe
    // `run` would wait on.
    let status = Command::new(runc)
        .args(["run", "--detach", "--bundle"])
        .arg(&bundle.dir)
        .arg(&id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("runc run --detach: {e}"))?;
    if !status.success() {
        return Err(format!("runc run --detach: {status}"));
    }
    let result = time_rounds(rounds, |_| {
        let mut c = Command::new(runc);
        c.args(["exec", &id, "/bin/true"]);
        c
    });
    let _ = run(Command::new(runc).args(["delete", "--force", &id]));
    result
}

/// `bwrap --unshare-all` of /bin/true on `rootfs`, `rounds` times.
pub fn bwrap(bwrap: &Path, rootfs: &Path, rounds: usize) -> Result<Samples, String> {
    time_rounds(rounds, |_| {
        let mut c = Command::new(bwrap);
        c.arg("--unshare-all")
            .arg("--die-with-parent")
            .arg("--ro-bind")
            .arg(rootfs)
            .arg("/")
            .args(["--proc", "/proc", "--dev", "/dev", "/bin/true"]);
        c
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_asks_for_the_same_limits_as_grove() {
        let c = config(Path::new("/r"), &["/bin/true"], "p");
        assert_eq!(c["root"]["path"], "/r");
        assert_eq!(c["root"]["readonly"], true);
        assert_eq!(c["process"]["args"][0], "/bin/true");
        let r = &c["linux"]["resources"];
        assert_eq!(r["memory"]["limit"], crate::MEMORY_LIMIT);
        assert_eq!(r["pids"]["limit"], crate::PIDS_MAX);
        assert_eq!(r["cpu"]["shares"], crate::CPU_WEIGHT);
        assert_eq!(c["linux"]["cgroupsPath"], "/p/runc");
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "network", "ipc", "uts", "mount"]);
    }
}
