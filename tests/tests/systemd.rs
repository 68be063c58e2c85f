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
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            socket.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // As SocketGroup=grove, SocketMode=0660 would make it.
    std::os::unix::fs::chown(socket, Some(0), Some(grove_user().1)).unwrap();
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o660)).unwrap();
    child
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
