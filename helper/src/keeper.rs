//! `grove-helper --keep-containers`: the main process of
//! grove-containers.service, the unit whose delegated cgroup holds every
//! container (cgroup/v2.rs). It holds the unit up and does nothing else
//! until the unit stops:
//!
//! - start: move itself into the leaf <unit>/supervisor (a cgroup that
//!   hands controllers down to children may hold no process itself; the
//!   helper enables them), then READY=1;
//! - stop (`systemctl stop`, host shutdown): SIGTERM to every process of
//!   every container, up to `grace` for them to exit, then cgroup.kill of
//!   what is left (each container's wshd among it: PID 1 of its PID
//!   namespace, it ignores SIGTERM), and exit once the cgroups are empty.
//!
//! It runs as root but touches only its own unit's cgroup, found from
//! /proc/self/cgroup (and refuses to run in any cgroup not named
//! grove-containers.service); it reads no request and no policy.

use crate::cgroup::v2::{own_cgroup, CONTAINERS_UNIT, SUPERVISOR};
use crate::cgroup::{read_pids, signal_listed, walk, write_cg, ROOT};
use crate::fs;
use crate::systemd::{Notifier, NotifyState};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{SigSet, Signal};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// The grace containers get by default between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
/// How long the killed cgroups may take to empty.
const KILL_WAIT: Duration = Duration::from_secs(5);

pub fn run(grace: Duration, notifier: &Notifier) -> Result<(), String> {
    // Blocked before anything else, so a stop that comes early waits for sigwait.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.thread_block()
        .map_err(|e| format!("blocking SIGTERM: {e}"))?;

    let text = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let own = own_cgroup(&text)?;
    let unit = own.strip_suffix(&format!("/{SUPERVISOR}")).unwrap_or(&own);
    // At stop it kills everything below its unit: only ever in that unit.
    if !unit.ends_with(&format!("/{CONTAINERS_UNIT}")) {
        return Err(format!(
            "--keep-containers is the main process of {CONTAINERS_UNIT}; \
             it runs in {own}, not in that unit's cgroup"
        ));
    }
    let unit_path = format!("{ROOT}{unit}");
    let unit_dir = fs::openat(None, &unit_path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)
        .map_err(|e| format!("{unit_path}: {e}"))?;
    if own == unit {
        // Why safe: it moves only this process, within its own unit.
        fs::mkdir_at(unit_dir.as_fd(), SUPERVISOR, 0o755, true)
            .map_err(|e| format!("{unit_path}/{SUPERVISOR}: {e}"))?;
        let sup = fs::open_dir(unit_dir.as_fd(), SUPERVISOR)
            .map_err(|e| format!("{unit_path}/{SUPERVISOR}: {e}"))?;
        write_cg(sup.as_fd(), "cgroup.procs", &std::process::id().to_string())
            .map_err(|e| format!("{unit_path}/{SUPERVISOR}/cgroup.procs: {e}"))?;
    }
    log_info!(
        "grove-containers: holding {unit_path} (this process in {SUPERVISOR}); on stop: SIGTERM, {} s grace, then kill",
        grace.as_secs_f32()
    );
    notifier.notify(&[
        NotifyState::Ready,
        NotifyState::Status("holding the containers' cgroups"),
    ]);
    let signal = stop.wait().map_err(|e| format!("sigwait: {e}"))?;
    notifier.notify(&[NotifyState::Stopping]);
    stop_containers(unit_dir.as_fd(), &unit_path, grace, signal)
}

/// The cgroups below the unit that hold containers: all but the supervisor leaf.
fn tops(unit: BorrowedFd) -> Result<Vec<(String, OwnedFd)>, String> {
    let mut out = Vec::new();
    for name in fs::list_dir(unit).map_err(|e| format!("reading the unit's cgroup: {e}"))? {
        let name = name.to_string_lossy().into_owned();
        if name == SUPERVISOR {
            continue;
        }
        // Cgroups are the only directories in cgroupfs.
        if let Ok(fd) = fs::open_dir(unit, name.as_str()) {
            out.push((name, fd));
        }
    }
    Ok(out)
}

/// Every process below `tops`, with whether it is PID 1 of a PID
/// namespace (a container's wshd, or a nested init).
fn processes(tops: &[(String, OwnedFd)]) -> Vec<(i32, bool)> {
    let mut all = Vec::new();
    for (_, top) in tops {
        let _ = walk(top.as_fd(), None, &mut |dir| {
            all.extend(read_pids(dir).unwrap_or_default());
            Ok(())
        });
    }
    all.into_iter().map(|p| (p, is_ns_init(p))).collect()
}

/// Whether `pid` is PID 1 of its own PID namespace: the last field of
/// NSpid in /proc/<pid>/status is 1.
fn is_ns_init(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("NSpid:"))
                .and_then(|l| l.split_whitespace().last().map(|v| v == "1"))
        })
        .unwrap_or(false)
}

fn stop_containers(
    unit: BorrowedFd,
    unit_path: &str,
    grace: Duration,
    signal: Signal,
) -> Result<(), String> {
    let start = Instant::now();
    let tops = tops(unit)?;
    let before = processes(&tops);
    let inits = before.iter().filter(|(_, init)| *init).count();
    log_info!(
        "grove-containers: {signal}: stopping {} processes ({inits} of them PID 1 of a container) below {unit_path}",
        before.len()
    );
    for (_, top) in &tops {
        let _ = walk(top.as_fd(), None, &mut |dir| {
            let _ = signal_listed(dir, libc::SIGTERM);
            Ok(())
        });
    }
    // Until only the namespaces' PID 1s are left (they ignore SIGTERM) or the grace is over.
    let mut left = before.len() - inits;
    while left > 0 && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(20));
        left = processes(&tops).iter().filter(|(_, init)| !init).count();
    }
    log_info!(
        "grove-containers: after {:.2} s, {left} processes ignored SIGTERM; killing what is left",
        start.elapsed().as_secs_f32()
    );
    for (name, top) in &tops {
        // 5.14+; older kernels: SIGKILL by pidfd, cgroup by cgroup.
        match write_cg(top.as_fd(), "cgroup.kill", "1") {
            Ok(()) => {}
            Err(Errno::ENOENT) => {
                let _ = walk(top.as_fd(), None, &mut |dir| {
                    let _ = signal_listed(dir, libc::SIGKILL);
                    Ok(())
                });
            }
            Err(e) => log_warn!("grove-containers: {unit_path}/{name}/cgroup.kill: {e}"),
        }
    }
    let deadline = Instant::now() + KILL_WAIT;
    let mut remaining = processes(&tops).len();
    while remaining > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        remaining = processes(&tops).len();
    }
    log_info!(
        "grove-containers: stopped in {:.2} s ({remaining} processes left)",
        start.elapsed().as_secs_f32()
    );
    if remaining > 0 {
        return Err(format!(
            "{remaining} processes below {unit_path} survived cgroup.kill"
        ));
    }
    Ok(())
}
