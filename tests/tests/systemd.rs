//! Under systemd: both daemons speak sd_notify(3) to a NOTIFY_SOCKET the
//! test binds (READY=1 once they serve, STATUS= lines, WATCHDOG=1 at half
//! of WATCHDOG_USEC, STOPPING=1 on SIGTERM), and both take their listening
//! socket from systemd-socket-activate (socket activation) and refuse one
//! of the wrong type with a message that names the unit setting.

use grove_schema::helper::{self, Request, Response};
use grove_tests::*;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Where the tests make their own sockets and directories.
const RUN: &str = "/run/grove-test";

fn unique(what: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "sd{}x{}-{what}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Every line of every datagram `sock` receives, with when it arrived.
fn collect(sock: UnixDatagram) -> Receiver<(Instant, String)> {
    let (tx, rx) = channel();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        let end = Instant::now() + Duration::from_secs(300);
        while Instant::now() < end {
            let Ok(n) = sock.recv(&mut buf) else {
                continue;
            };
            let now = Instant::now();
            for line in String::from_utf8_lossy(&buf[..n]).lines() {
                if tx.send((now, line.to_string())).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The next line that satisfies `wanted`, within `timeout`; the lines
/// before it are returned too.
fn next_line(
    rx: &Receiver<(Instant, String)>,
    what: &str,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> (Instant, String, Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) if wanted(&line) => return (at, line, skipped),
            Ok((_, line)) => skipped.push(line),
            Err(_) => panic!("no {what} within {timeout:?}; got {skipped:?}"),
        }
    }
}

/// Ping the helper over `fd` (a connection as the server uid).
fn helper_ping(fd: &OwnedFd) -> Response {
    nix::sys::socket::send(
        fd.as_raw_fd(),
        &helper::encode_request(&Request::Ping),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let tv = nix::sys::time::TimeVal::new(30, 0);
    nix::sys::socket::setsockopt(fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv).unwrap();
    let mut buf = vec![0u8; helper::MAX_RESPONSE];
    let n = nix::sys::socket::recv(
        fd.as_raw_fd(),
        &mut buf,
        nix::sys::socket::MsgFlags::empty(),
    )
    .expect("the helper's answer");
    helper::decode_response(&buf[..n]).unwrap()
}

#[test]
fn both_daemons_notify_systemd() {
    std::fs::create_dir_all(RUN).unwrap();
    // The helper's NOTIFY_SOCKET is a path (root reaches it); groved's is
    // abstract, as systemd's may be: it is connected before Landlock's
    // abstract-socket scope applies.
    let helper_path = Path::new(RUN).join(unique("notify.sock"));
    let _ = std::fs::remove_file(&helper_path);
    let helper_rx = collect(UnixDatagram::bind(&helper_path).unwrap());
    let name = unique("notify");
    let groved_rx = collect(
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap(),
    );
    let watchdog = ("WATCHDOG_USEC".to_string(), "2000000".to_string());
    let mut env = TestEnv::start_with_options(EnvOptions {
        helper_env: vec![
            ("NOTIFY_SOCKET".into(), helper_path.display().to_string()),
            watchdog.clone(),
        ],
        groved_env: vec![("NOTIFY_SOCKET".into(), format!("@{name}")), watchdog],
        ..EnvOptions::default()
    });
    let _ = std::fs::remove_file(&helper_path);

    // READY=1 (with its STATUS=) once each serves: the socket works then.
    let (_, _, before) = next_line(
        &helper_rx,
        "READY=1 from the helper",
        Duration::from_secs(20),
        |l| l == "READY=1",
    );
    assert!(
        before.iter().all(|l| l.starts_with("WATCHDOG=")),
        "{before:?}"
    );
    let (uid, gid) = grove_user();
    let conn = helper_connect_as(&env.helper_socket, uid, gid).unwrap();
    assert!(
        matches!(helper_ping(&conn), Response::Pong { .. }),
        "the helper answers once ready"
    );
    drop(conn);
    next_line(
        &helper_rx,
        "the helper's STATUS",
        Duration::from_secs(5),
        |l| l == "STATUS=serving, 0 containers",
    );
    next_line(
        &groved_rx,
        "READY=1 from groved",
        Duration::from_secs(20),
        |l| l == "READY=1",
    );
    env.run(|client| async move { client.ping().await.unwrap() });
    next_line(&groved_rx, "groved's STATUS", Duration::from_secs(5), |l| {
        l == "STATUS=serving, 0 containers"
    });

    // WATCHDOG=1 every second (WATCHDOG_USEC / 2), from both.
    for (who, rx) in [("groved", &groved_rx), ("the helper", &helper_rx)] {
        let mut times = Vec::new();
        while times.len() < 4 {
            let (at, _, _) = next_line(rx, "WATCHDOG=1", Duration::from_secs(3), |l| {
                l == "WATCHDOG=1"
            });
            times.push(at);
        }
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap > Duration::from_millis(600) && gap < Duration::from_millis(1600),
                "{who}: WATCHDOG=1 {gap:?} after the last"
            );
        }
    }

    // STATUS= follows the number of containers.
    let rootfs = String::new();
    env.run(|client| async move {
        create(&client, "sd-status", &rootfs).await.unwrap();
    });
    next_line(
        &groved_rx,
        "groved's new STATUS",
        Duration::from_secs(5),
        |l| l == "STATUS=serving, 1 container",
    );
    next_line(
        &helper_rx,
        "the helper's new STATUS",
        Duration::from_secs(5),
        |l| l == "STATUS=serving, 1 container",
    );
    env.run(|client| async move { client.destroy("sd-status").await.unwrap() });

    // STOPPING=1 on SIGTERM.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(env.groved_pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    next_line(
        &groved_rx,
        "STOPPING=1 from groved",
        Duration::from_secs(10),
        |l| l == "STOPPING=1",
    );
    env.stop_helper();
    next_line(
        &helper_rx,
        "STOPPING=1 from the helper",
        Duration::from_secs(10),
        |l| l == "STOPPING=1",
    );
}

/// systemd-socket-activate: Debian's `systemd` package has it in /usr/bin.
fn socket_activate() -> PathBuf {
    [
        "/usr/bin/systemd-socket-activate",
        "/lib/systemd/systemd-socket-activate",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("systemd-socket-activate (Debian package systemd; ./dev setup installs it)")
}

/// `program args` under systemd-socket-activate listening at `socket`
/// (`kind`: "" for stream, or "--seqpacket" / "--datagram"), as `user`
/// (uid, gid) or root, logging to `log`. The socket node is made
/// root:grove 0660.
fn activated(
    kind: &str,
    fdname: &str,
    socket: &Path,
    program: &Path,
    args: &[&str],
    user: Option<(u32, u32)>,
    log: &Path,
) -> Child {
    let out = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap()
    };
    let mut cmd = Command::new(socket_activate());
    if !kind.is_empty() {
        cmd.arg(kind);
    }
    cmd.arg(format!("--fdname={fdname}"))
        .arg("-l")
        .arg(socket)
        .arg(program)
        .args(args)
        .env("GROVED_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(out())
        .stderr(out());
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((uid, gid)) = user {
                use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
                setgroups(&[Gid::from_raw(gid)])?;
                setgid(Gid::from_raw(gid))?;
                setuid(Uid::from_raw(uid))?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn().expect("starting systemd-socket-activate");
    // Listening, not merely bound: systemd-socket-activate binds, then
    // listens, and a connection between the two is refused and so starts
    // nothing (the guest lane once saw a test wait 20 s for a daemon that
    // was never started). Connecting to check would start the daemon.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening(socket) {
        assert!(
            Instant::now() < deadline,
            "{} never listened",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // As SocketGroup=grove, SocketMode=0660 would make it.
    std::os::unix::fs::chown(socket, Some(0), Some(grove_user().1)).unwrap();
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o660)).unwrap();
    child
}

/// Whether a unix socket is bound at `path` and listening: /proc/net/unix
/// lists it with the __SO_ACCEPTCON flag (00010000) once listen(2) ran.
fn listening(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let path = path.to_string_lossy();
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8 && fields[7] == path && fields[3] == "00010000"
    })
}

/// Wait up to 20 s for `child` to exit; its status.
fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A directory of this test's own in the tests' run dir, root:grove 1770
/// like an env's.
fn own_dir(what: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new(RUN).join(unique(what));
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(0), Some(grove_user().1)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1770)).unwrap();
    dir
}

#[test]
fn the_helper_serves_on_a_socket_systemd_passed() {
    let mut env = TestEnv::start();
    // The env's own helper goes (and removes its socket); one started by
    // systemd-socket-activate on the same path takes over.
    env.stop_helper();
    assert!(!env.helper_socket.exists());
    let policy = env.root.join("helper-policy.conf");
    let child = activated(
        "--seqpacket",
        "helper",
        &env.helper_socket,
        &bin_dir().join("grove-helper"),
        &["--policy", policy.to_str().unwrap()],
        None,
        &env.root.join("helper.log"),
    );
    env.adopt_helper(child);
    // The first connection starts it; it answers once it has started.
    let (uid, gid) = grove_user();
    let conn = helper_connect_as(&env.helper_socket, uid, gid).unwrap();
    assert!(
        matches!(helper_ping(&conn), Response::Pong { .. }),
        "{}",
        env.logs()
    );
    drop(conn);
    assert!(env.logs().contains("(socket-activated)"), "{}", env.logs());
    // groved's requests reach it too.
    let rootfs = String::new();
    env.run(|client| async move {
        let (container, _) = create(&client, "activated", &rootfs).await.unwrap();
        assert_eq!(exec(&container, "true", &[]).await.0, 0);
        client.destroy("activated").await.unwrap();
    });
    // The socket is systemd's: a stopping helper leaves it.
    env.stop_helper();
    assert!(
        env.helper_socket.exists(),
        "the helper removed systemd's socket"
    );
}

#[test]
fn groved_serves_on_a_socket_systemd_passed() {
    let mut env = TestEnv::start();
    // The env's own groved goes (and removes its socket); one started by
    // systemd-socket-activate on the same path takes over.
    env.stop_groved();
    assert!(!env.socket.exists());
    let config = env.root.join("groved.conf");
    let child = activated(
        "",
        "api",
        &env.socket,
        &bin_dir().join("groved"),
        &["--config", config.to_str().unwrap()],
        Some(grove_user()),
        &env.root.join("groved.log"),
    );
    env.adopt_groved(child);
    let rootfs = String::new();
    env.run(|client| async move {
        client.ping().await.unwrap();
        let (container, _) = create(&client, "activated", &rootfs).await.unwrap();
        assert_eq!(exec(&container, "true", &[]).await.0, 0);
        client.destroy("activated").await.unwrap();
    });
    assert!(env.logs().contains("socket-activated"), "{}", env.logs());
    // The socket is systemd's: a stopping groved leaves it.
    env.stop_groved();
    assert!(env.socket.exists(), "groved removed systemd's socket");
}

#[test]
fn a_socket_of_the_wrong_type_is_refused_clearly() {
    let (uid, gid) = grove_user();
    let dir = own_dir("wrong");
    // grove-helper on a stream socket: refused before it reads its policy.
    let socket = dir.join("helper.sock");
    let log = dir.join("helper.log");
    let mut child = activated(
        "",
        "helper",
        &socket,
        &bin_dir().join("grove-helper"),
        &["--policy", "/nonexistent/policy.conf"],
        None,
        &log,
    );
    let _ = std::os::unix::net::UnixStream::connect(&socket);
    assert!(!wait_exit(&mut child).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("fd 3 is a SOCK_STREAM socket")
            && text.contains("grove-helper needs a listening AF_UNIX SOCK_SEQPACKET socket")
            && text.contains("ListenSequentialPacket="),
        "{text}"
    );
    // groved on a SOCK_SEQPACKET socket.
    let socket = dir.join("api.sock");
    let log = dir.join("groved.log");
    let mut child = activated(
        "--seqpacket",
        "api",
        &socket,
        &bin_dir().join("groved"),
        &[],
        Some((uid, gid)),
        &log,
    );
    let trigger = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::SeqPacket,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    let _ = nix::sys::socket::connect(
        trigger.as_raw_fd(),
        &nix::sys::socket::UnixAddr::new(&socket).unwrap(),
    );
    assert!(!wait_exit(&mut child).success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("fd 3 is a SOCK_SEQPACKET socket")
            && text.contains("groved needs a listening AF_UNIX SOCK_STREAM socket")
            && text.contains("ListenStream="),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The cgroup v2 path of a process ("0::/system.slice/x.service").
fn v2_cgroup_of(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        .expect("a cgroup v2 line")
}

/// Containers go into grove-containers.service's cgroup only when the
/// helper is grove-helper.service (the guest lane's walk-through checks
/// that). Any other helper (this harness, ./dev up) keeps them at
/// /sys/fs/cgroup/<cgroup_parent> on v2 and says why in its log.
#[test]
fn a_helper_that_is_not_grove_helper_service_says_where_its_containers_go() {
    let env = TestEnv::start();
    let env = &env;
    let logs = env.logs();
    if !cgroup_v2() {
        assert!(logs.contains("cgroups v1"), "{logs}");
        assert!(!logs.contains("containers' cgroups in"), "{logs}");
        return;
    }
    let own = v2_cgroup_of(&env.helper_pid().to_string());
    let parent = env.cgroup_dir("pids");
    assert!(
        logs.contains(&format!(
            "grove-helper: containers' cgroups in {} (the helper does not run as \
             grove-helper.service: its cgroup is {own})",
            parent.display()
        )),
        "{logs}"
    );
    env.run(|client| async move {
        create(&client, "placed", "").await.unwrap();
        assert!(parent.join("placed").is_dir());
        assert!(!env.container_pids("placed").is_empty());
        client.destroy("placed").await.unwrap();
    });
}

/// Removes the keeper test's cgroups (killing what is left in them), even
/// on failure.
struct KeeperCgroups(PathBuf);

impl Drop for KeeperCgroups {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("cgroup.kill"), "1");
        for dir in ["grove/c1", "grove", "supervisor", ""] {
            let d = self.0.join(dir);
            let deadline = Instant::now() + Duration::from_secs(5);
            while d.exists() && std::fs::remove_dir(&d).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Start `cmd` in the cgroup `dir` (it moves itself there before exec).
fn spawn_in(cmd: &mut Command, dir: &Path) -> Child {
    let procs = std::ffi::CString::new(dir.join("cgroup.procs").to_str().unwrap()).unwrap();
    // SAFETY: only open/write/close between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    cmd.stdin(Stdio::null()).spawn().expect("spawn")
}

/// `grove-helper --keep-containers`, grove-containers.service's main
/// process, outside that unit's cgroup refuses to run; inside one (on v2:
/// a cgroup of that name below the test's own) it moves itself into
/// <unit>/supervisor, and on SIGTERM stops what is in the unit's other
/// cgroups: SIGTERM first, no wait for PID 1 of a PID namespace (which
/// ignores it), cgroup.kill for the rest, long before the grace is over.
#[test]
fn the_containers_keeper_stops_its_units_processes_quickly() {
    let keeper = || {
        let mut c = Command::new(bin_dir().join("grove-helper"));
        c.args(["--keep-containers", "--grace", "10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    // In any cgroup but grove-containers.service's (the test's own) it
    // refuses: at stop it kills everything below its unit.
    let out = keeper().output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("--keep-containers is the main process of grove-containers.service"),
        "{err}"
    );
    if !cgroup_v2() {
        return;
    }
    // A cgroup of that name below the test's own (which systemd delegated
    // to the guest lane's unit), used by this test alone.
    let own = v2_cgroup_of("self");
    let unit = PathBuf::from(format!("/sys/fs/cgroup{own}/grove-containers.service"));
    std::fs::create_dir(&unit).unwrap();
    let guard = KeeperCgroups(unit.clone());
    let mut k = spawn_in(&mut keeper(), &unit);
    let kpid = k.id().to_string();
    let supervisor = unit.join("supervisor/cgroup.procs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&supervisor).is_ok_and(|s| s.lines().any(|l| l == kpid)) {
        assert!(
            Instant::now() < deadline,
            "the keeper never moved to supervisor"
        );
        assert!(k.try_wait().unwrap().is_none(), "the keeper exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    let c1 = unit.join("grove/c1");
    std::fs::create_dir_all(&c1).unwrap();
    // One process that ends on SIGTERM; a shell whose child is PID 1 of a
    // new PID namespace, which ignores it.
    let mut plain = spawn_in(Command::new("sleep").arg("1000"), &c1);
    let mut sh = Command::new("sh");
    sh.args(["-c", "sleep 1000 & wait"]);
    // SAFETY: one system call between fork and exec.
    unsafe {
        sh.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWPID) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut ns = spawn_in(&mut sh, &c1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(c1.join("cgroup.procs"))
        .unwrap()
        .lines()
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "the namespace's PID 1 never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let start = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(k.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = k.wait_with_output().unwrap();
    let took = start.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}: {err}");
    assert!(
        err.contains("stopped in") && err.contains("(0 processes left)"),
        "{err}"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(plain.wait().unwrap().signal(), Some(libc::SIGTERM));
    // The shell got SIGTERM; its child, PID 1, was left to cgroup.kill.
    assert_eq!(ns.wait().unwrap().signal(), Some(libc::SIGTERM));
    assert_eq!(
        std::fs::read_to_string(c1.join("cgroup.procs")).unwrap(),
        ""
    );
    drop(guard);
    assert!(!unit.exists());
}

/// A service manager may stop a daemon the moment it has started. groved
/// and grove-garden stopped right after their socket first accepts a
/// connection exit cleanly (status 0, not killed by SIGTERM's default
/// action) and remove the socket they made. Their signal handlers were once
/// installed after the bind, and the guest lane caught groved dying there.
#[test]
fn daemons_stopped_as_soon_as_they_answer_exit_cleanly_and_remove_their_sockets() {
    let mut env = TestEnv::start();
    // This test starts groved itself, on the env's config and socket.
    env.stop_groved();
    let (uid, gid) = grove_user();
    let garden_socket = env.run_dir.join("garden-stop.sock");
    let log = env.root.join("stop-race.log");
    let daemons: [(&str, Vec<std::ffi::OsString>, &Path); 2] = [
        (
            "groved",
            vec!["--config".into(), env.root.join("groved.conf").into()],
            &env.socket,
        ),
        (
            "grove-garden",
            vec![
                "--listen".into(),
                garden_socket.clone().into(),
                "--grove-socket".into(),
                env.socket.clone().into(),
            ],
            &garden_socket,
        ),
    ];
    // groved is needed by grove-garden only to answer later, not to start.
    for (name, args, socket) in &daemons {
        // Each round retries the race; with the handlers installed first
        // there is no race left to lose.
        for round in 0..20 {
            let out = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            let mut cmd = Command::new(bin_dir().join(name));
            cmd.args(args)
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out);
            as_user(&mut cmd, uid, gid);
            let mut child = cmd.spawn().expect("starting the daemon");
            // Connect as fast as possible: the first moment it answers.
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::os::unix::net::UnixStream::connect(socket).is_err() {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "{name} exited:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                assert!(Instant::now() < deadline, "{name} did not listen");
            }
            let status = stop_child(child);
            assert!(
                status.success(),
                "round {round}: {name} stopped right after it answered: {status}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            assert!(!socket.exists(), "round {round}: {name} left its socket");
        }
    }
}
