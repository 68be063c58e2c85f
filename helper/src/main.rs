//! grove-helper: Grove's small root helper. It performs the privileged steps
//! of creating and destroying containers for groved, which runs unprivileged
//! and is treated as possibly compromised: every request is decoded into a
//! closed enum, checked against the helper's own root-owned policy, and
//! carried out on paths the helper derives itself from dirfds it opened.
//!
//! Single-threaded and synchronous: one request at a time, in order.
//!
//!   grove-helper [--policy PATH]
//!   grove-helper --keep-containers [--grace SECONDS]   (keeper.rs)
//!
//! It logs to stderr (logline.rs), at most the level GROVE_HELPER_LOG names
//! (error, warn, info, debug; default info).

// The log macros (log_info! and the rest) for every module below, and the
// modules the three daemons share (crate::logline, crate::systemd).
#[macro_use]
extern crate grove_daemon;
use grove_daemon::{logline, systemd};

mod boot;
mod cgroup;
mod confine;
mod container;
mod devices;
mod disk;
mod fs;
mod image;
mod keeper;
mod layers;
mod limits;
mod net;
mod policy;
mod server;
mod spawn;
mod spawner;
mod state;
mod trash;
mod userns;
mod zstd;

use nix::sys::socket::{
    bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{Gid, Uid};
use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The variable naming the most detailed level the helper logs.
const LOG_VARIABLE: &str = "GROVE_HELPER_LOG";

fn main() {
    if let Err(e) = run() {
        log_error!("grove-helper: {e}");
        std::process::exit(1);
    }
}

/// Start the logger at GROVE_HELPER_LOG's level (read before the
/// environment is cleared); an unknown level stops the helper.
fn init_logging() -> Result<(), String> {
    let level = match std::env::var(LOG_VARIABLE) {
        Err(_) => logline::Level::Info,
        Ok(value) if value.is_empty() => logline::Level::Info,
        Ok(value) => logline::Level::parse(&value)
            .ok_or_else(|| format!("{LOG_VARIABLE}={value:?}: want error, warn, info or debug"))?,
    };
    logline::init(level);
    Ok(())
}

fn usage() -> String {
    "usage: grove-helper [--policy PATH]\n       grove-helper --keep-containers [--grace SECONDS]\n\n\
     Without --policy it reads /etc/grove/helper-policy.conf, or uses its embedded\n\
     defaults when that file does not exist. GROVE_HELPER_LOG (error, warn, info,\n\
     debug; default info) sets what it logs."
        .to_string()
}

/// What this process is.
#[derive(Debug, PartialEq)]
enum Run {
    /// The helper, with its policy.
    Serve(Option<PathBuf>),
    /// grove-containers.service's main process (keeper.rs).
    Keep(std::time::Duration),
}

fn parse_args(args: Vec<std::ffi::OsString>) -> Result<Run, String> {
    let mut policy = None;
    let mut keep = false;
    let mut grace = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("--policy") if policy.is_none() => {
                policy =
                    Some(PathBuf::from(it.next().ok_or_else(|| {
                        format!("--policy needs a path\n{}", usage())
                    })?))
            }
            Some("--keep-containers") => keep = true,
            Some("--grace") if grace.is_none() => {
                let v = it.next().unwrap_or_default();
                let secs: u64 = v
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .filter(|s| *s <= 3600)
                    .ok_or_else(|| format!("--grace needs whole seconds, 0 to 3600, not {v:?}"))?;
                grace = Some(std::time::Duration::from_secs(secs));
            }
            Some("-h") | Some("--help") => {
                println!("{}", usage());
                std::process::exit(0);
            }
            _ => return Err(format!("unexpected argument {a:?}\n{}", usage())),
        }
    }
    match (keep, policy, grace) {
        (true, None, grace) => Ok(Run::Keep(grace.unwrap_or(keeper::DEFAULT_GRACE))),
        (false, policy, None) => Ok(Run::Serve(policy)),
        (true, Some(_), _) => Err(format!("--keep-containers takes no policy\n{}", usage())),
        (false, _, Some(_)) => Err(format!("--grace goes with --keep-containers\n{}", usage())),
    }
}

/// Start from a known process state, whatever started us. The `keep` fds
/// from 3 on are systemd's (socket activation); every other fd from 3 up
/// is closed.
fn sanitize_process(keep: usize) -> Result<(), String> {
    // SAFETY: close_range only closes fds; nothing in this process holds one
    // >= 3 yet (std opens none before main) but systemd's sockets.
    if unsafe { libc::close_range(3 + keep as libc::c_uint, libc::c_uint::MAX, 0) } != 0 {
        return Err(format!("close_range: {}", std::io::Error::last_os_error()));
    }
    // Crash points (debug builds) are read before the environment goes.
    grove_schema::fault::arm();
    for (k, _) in std::env::vars_os() {
        std::env::remove_var(k);
    }
    // SAFETY: SIG_IGN installs no handler code.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigIgn,
        )
    }
    .map_err(|e| format!("SIGPIPE: {e}"))?;
    umask(Mode::from_bits_truncate(0o022));
    Ok(())
}

/// Create the directories above `path` (0755) when missing.
fn create_parent(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(parent) => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| format!("{}: {e}", parent.display())),
        None => Ok(()),
    }
}

/// Create `path` if missing and open it, then make it root:`gid` `mode`
/// through the fd (never by path, so nothing can be swapped in between).
fn own_dir(path: &str, gid: u32, mode: u32) -> Result<OwnedFd, String> {
    let p = Path::new(path);
    create_parent(p)?;
    match std::fs::DirBuilder::new().mode(0o700).create(p) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            return Err(format!("{path}: {e}"))
        }
        _ => {}
    }
    let fd = fs::openat(
        None,
        path,
        nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_DIRECTORY
            | nix::fcntl::OFlag::O_NOFOLLOW,
        0,
    )
    .map_err(|e| format!("{path}: {e}"))?;
    nix::unistd::fchown(
        fd.as_raw_fd(),
        Some(Uid::from_raw(0)),
        Some(Gid::from_raw(gid)),
    )
    .map_err(|e| format!("chown {path}: {e}"))?;
    nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode))
        .map_err(|e| format!("chmod {path}: {e}"))?;
    Ok(fd)
}

/// The helper's own socket: root:<server gid> 0660, so only root and the
/// server's group can connect, and SO_PEERCRED then narrows it to one uid.
fn listen_at(path: &str, gid: u32) -> Result<OwnedFd, String> {
    let p = Path::new(path);
    create_parent(p)?;
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("removing stale {path}: {e}"))
        }
        _ => {}
    }
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let addr = UnixAddr::new(path).map_err(|e| format!("socket path {path}: {e}"))?;
    // The umask makes the node 0660 from its first moment.
    let old = umask(Mode::from_bits_truncate(0o117));
    let bound = bind(fd.as_raw_fd(), &addr);
    umask(old);
    bound.map_err(|e| format!("bind {path}: {e}"))?;
    nix::unistd::fchownat(
        None,
        path,
        Some(Uid::from_raw(0)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| format!("chown {path}: {e}"))?;
    listen(&fd, Backlog::new(16).map_err(|e| format!("listen: {e}"))?)
        .map_err(|e| format!("listen {path}: {e}"))?;
    Ok(fd)
}

fn run() -> Result<(), String> {
    // The log's variables and systemd's first: sanitize_process clears
    // the environment.
    init_logging()?;
    let mut systemd = systemd::capture()?;
    sanitize_process(systemd.passed_fds())?;
    // A socket unit of the wrong type is refused before anything happens.
    let activated = systemd.take_listener(
        "grove-helper",
        "helper",
        SockType::SeqPacket,
        "ListenSequentialPacket=",
    )?;
    let mode = parse_args(std::env::args_os().skip(1).collect())?;
    let policy_path = match mode {
        Run::Serve(policy) => policy,
        Run::Keep(grace) => {
            let notifier = systemd::Notifier::connect("grove-containers", &systemd);
            return keeper::run(grace, &notifier);
        }
    };
    let policy = policy::load(policy_path.as_deref())?;
    if let Err(e) = std::fs::metadata(policy.conf.default_rootfs.as_str()) {
        log_warn!(
            "grove-helper: default_rootfs {}: {e}; creates that name no rootfs or image \
             fail until it exists (`./dev install` builds one with scripts/build-rootfs.sh)",
            policy.conf.default_rootfs.as_str()
        );
    }
    // Check and seal wshd before touching anything on the host.
    let wshd = spawn::seal_wshd(&policy.wshd)?;
    let boot_id = boot::current()?;
    let cgroups = cgroup::detect(&policy.conf.cgroup_parent, policy.conf.total_pids_limit())?;
    let depot = own_dir(policy.conf.depot.as_str(), 0, 0o700)?;
    let runtime = own_dir(policy.conf.runtime_dir.as_str(), policy.server_gid, 0o710)?;
    let disk = disk::Disk::detect(std::os::fd::AsFd::as_fd(&depot), policy.conf.depot.as_str());
    let network = net::Network::init(policy.conf.net.clone(), runtime.as_fd())?;
    // The capabilities nothing in Grove uses go first, from the bounding
    // set too, so the spawner and every container lack them as well.
    confine::drop_capabilities()?;
    // Forked before the seccomp filter: see spawner.rs.
    let mut foreign = vec![depot.as_raw_fd(), runtime.as_raw_fd()];
    foreign.extend(activated.as_ref().map(|fd| fd.as_raw_fd()));
    let spawner = spawner::Spawner::start(&wshd, cgroups.as_ref(), &foreign)?;
    // After the fork, so the spawner holds no copy; before the filter.
    let notifier = systemd::Notifier::connect("grove-helper", &systemd);
    let signals = server::signals()?;
    // A socket systemd passed is systemd's: it made it (SocketUser=,
    // SocketGroup=, SocketMode= in grove-helper.socket) and keeps it.
    let (listener, socket_path, remove_on_exit) = match activated {
        Some(fd) => {
            let path = systemd::bound_path(fd.as_fd());
            (fd, format!("{path} (socket-activated)"), None)
        }
        None => {
            let path = policy.conf.socket.as_str().to_string();
            (
                listen_at(&path, policy.server_gid)?,
                path.clone(),
                Some(path),
            )
        }
    };
    let trash = trash::Trash::open(depot.as_fd())?;
    let mut helper = container::Helper {
        policy,
        cgroups,
        depot,
        runtime,
        disk,
        wshd,
        containers: BTreeMap::new(),
        image_sizes: HashMap::new(),
        net: network,
        spawner,
        exits: nix::sys::epoll::Epoll::new(nix::sys::epoll::EpollCreateFlags::EPOLL_CLOEXEC)
            .map_err(|e| format!("epoll_create1: {e}"))?,
        unpacking: 0,
        gc_deferred: false,
        trash,
    };
    helper.recover()?;
    boot::clean_earlier(&mut helper, &boot_id)?;
    helper.net.rebuild_rules()?;
    // Everything the helper opens at start-up is open: from here on its
    // main process may make only the system calls of its allowlist.
    confine::install_seccomp()?;
    helper.collect_layers();
    log_info!(
        "grove-helper: ready on {socket_path} (server uid {}, cgroups {}, disk: {}, network: bridge {} pool {}/{} ports {}-{} table {}, {} containers recovered, pid {})",
        helper.policy.server_uid,
        helper.cgroups.name(),
        helper.disk.describe(),
        helper.net.conf.bridge,
        helper.net.conf.pool.0,
        helper.net.conf.pool.1,
        helper.net.conf.port_range.0,
        helper.net.conf.port_range.1,
        helper.net.conf.nft_table,
        helper.containers.len(),
        std::process::id()
    );
    if notifier.enabled() {
        log_info!(
            "grove-helper: notifying systemd (watchdog: {:?})",
            notifier.watchdog_interval()
        );
    }
    notifier.notify(&[
        systemd::NotifyState::Ready,
        systemd::NotifyState::Status(&server::status(&helper)),
    ]);
    server::serve(
        &mut helper,
        listener,
        signals,
        remove_on_exit.as_deref(),
        &notifier,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Run, String> {
        parse_args(a.iter().map(|s| s.into()).collect())
    }

    #[test]
    fn the_keeper_and_the_helper_take_their_own_arguments() {
        assert_eq!(args(&[]), Ok(Run::Serve(None)));
        assert_eq!(args(&["--policy", "/p"]), Ok(Run::Serve(Some("/p".into()))));
        assert_eq!(
            args(&["--keep-containers"]),
            Ok(Run::Keep(keeper::DEFAULT_GRACE))
        );
        assert_eq!(
            args(&["--keep-containers", "--grace", "12"]),
            Ok(Run::Keep(std::time::Duration::from_secs(12)))
        );
        for bad in [
            &["--keep-containers", "--policy", "/p"][..],
            &["--grace", "3"],
            &["--keep-containers", "--grace", "x"],
            &["--keep-containers", "--grace", "3601"],
            &["--keep-containers", "--grace"],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }
}
