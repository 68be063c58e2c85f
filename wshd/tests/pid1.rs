//! Runs the real wshd as PID 1 of a new PID namespace (`unshare --pid --fork
//! --mount-proc`, so /proc inside shows only that namespace) and talks the
//! wshd protocol to it. Needs root (unshare) and the host user `nobody`.
//! The host's own /etc/passwd and /etc/group serve as "the container's".

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use grove_schema::wshd::{
    decode, encode, ErrorKind, ExitStatus, ProcessSummary, Request, Response, Rlimit, SpawnSpec,
    WindowSize, MAX_DATAGRAM, OUTPUT_BUFFER,
};
use nix::sys::socket::{
    bind, connect, listen, recvmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily, Backlog,
    ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrLike, UnixAddr,
};
use nix::sys::time::TimeVal;

const WSHD: &str = env!("CARGO_BIN_EXE_wshd");

/// One wshd in its own PID namespace; killed (by pid) and cleaned up on drop.
struct Wshd {
    dir: PathBuf,
    sock: PathBuf,
    log: PathBuf,
    unshare: Child,
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("wshd-it-{}-{n}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

impl Wshd {
    fn start(tag: &str) -> Wshd {
        Wshd::start_for(tag, 0)
    }

    fn start_for(tag: &str, server_uid: u32) -> Wshd {
        Wshd::start_with(tag, server_uid, None)
    }

    /// With `static_wshd`, wshd runs chrooted in a minimal busybox rootfs
    /// (built under the temp dir: /bin/busybox and its links, /etc/passwd,
    /// /etc/group, /wshd; no /dev, /proc or /tmp).
    fn start_with(tag: &str, server_uid: u32, static_wshd: Option<&str>) -> Wshd {
        let dir = temp_dir(tag);
        let sock = dir.join("wshd.sock");
        let log = dir.join("wshd.log");
        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(listener.as_raw_fd(), &UnixAddr::new(&sock).unwrap()).unwrap();
        listen(&listener, Backlog::new(16).unwrap()).unwrap();
        let log_file = File::create(&log).unwrap();
        let raw = listener.as_raw_fd();
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork"]);
        match static_wshd {
            None => cmd.args(["--mount-proc", WSHD]),
            Some(bin) => cmd.arg("--root").arg(make_rootfs(&dir, bin)).arg("/wshd"),
        };
        cmd.args(["--socket-fd", "3", "--server-uid"])
            .arg(server_uid.to_string())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        // SAFETY: dup2 and fcntl are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                let r = if raw == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(raw, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let unshare = cmd.spawn().expect("unshare");
        drop(listener);
        let w = Wshd {
            dir,
            sock,
            log,
            unshare,
        };
        assert_eq!(
            w.ask(&Request::Ping).0,
            Response::Pong,
            "log: {}",
            w.log_text()
        );
        w
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// wshd's pid on the host: unshare's only child.
    fn host_pid(&self) -> Option<i32> {
        let p = self.unshare.id();
        let s = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).ok()?;
        s.split_whitespace().next()?.parse().ok()
    }

    fn connect(&self) -> Client {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(30, 0)).unwrap();
        connect(fd.as_raw_fd(), &UnixAddr::new(&self.sock).unwrap()).unwrap();
        Client { fd }
    }

    /// One request on a fresh connection.
    fn ask(&self, req: &Request) -> (Response, Vec<OwnedFd>) {
        self.connect().ask(req)
    }

    fn spawn(&self, spec: SpawnSpec) -> (Response, Vec<OwnedFd>) {
        self.ask(&Request::Spawn(spec))
    }

    fn wait(&self, id: &str) -> Response {
        self.ask(&Request::Wait { id: id.into() }).0
    }

    fn list(&self) -> Vec<ProcessSummary> {
        match self.ask(&Request::List).0 {
            Response::Processes(p) => p,
            other => panic!("List: {other:?}"),
        }
    }
}

impl Drop for Wshd {
    fn drop(&mut self) {
        // Killing PID 1 of the namespace kills everything in it.
        // unshare then reaps it and exits.
        match self.host_pid() {
            // SAFETY: kill on a pid we started (unshare's child).
            Some(pid) => unsafe {
                libc::kill(pid, libc::SIGKILL);
            },
            None => {
                let _ = self.unshare.kill();
            }
        }
        let _ = self.unshare.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_rootfs(dir: &std::path::Path, wshd: &str) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "home"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    for tool in ["sh", "id", "cat", "echo", "pwd", "sleep", "ls"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    std::fs::copy(wshd, root.join("wshd")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nvcap:x:2000:2000::/home/vcap:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nvcap:x:2000:\nextra:x:3000:vcap\n",
    )
    .unwrap();
    root
}

/// The static wshd: $WSHD_STATIC_BIN, or the test's own wshd when it was
/// built with crt-static; `None` (test skipped) otherwise.
fn static_wshd() -> Option<String> {
    let bin = std::env::var("WSHD_STATIC_BIN").unwrap_or_else(|_| WSHD.to_string());
    let bytes = std::fs::read(&bin).ok()?;
    // An ELF64 with a PT_INTERP program header is dynamically linked.
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(bytes[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    let dynamic = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) == 3
    });
    if dynamic {
        eprintln!("skipped: {bin} is dynamically linked (set WSHD_STATIC_BIN to a static wshd)");
        return None;
    }
    Some(bin)
}

struct Client {
    fd: OwnedFd,
}

impl Client {
    fn send_raw(&self, bytes: &[u8]) {
        sendmsg::<UnixAddr>(
            self.fd.as_raw_fd(),
            &[std::io::IoSlice::new(bytes)],
            &[],
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
        .unwrap();
    }

    fn recv(&self) -> (Response, Vec<OwnedFd>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut cmsg = nix::cmsg_space!([RawFd; 3]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = loop {
            match recvmsg::<UnixAddr>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                r => break r.expect("recvmsg (timeout?)"),
            }
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(r) = c {
                // SAFETY: fresh fds from the kernel.
                fds.extend(r.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
            }
        }
        let n = msg.bytes;
        assert!(n > 0, "wshd hung up");
        (decode(&buf[..n]).unwrap(), fds)
    }

    fn ask(&self, req: &Request) -> (Response, Vec<OwnedFd>) {
        self.send_raw(&encode(req));
        self.recv()
    }
}

fn spec(id: &str, path: &str, args: &[&str]) -> SpawnSpec {
    SpawnSpec {
        id: id.into(),
        path: path.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        dir: None,
        user: None,
        open_stdin: false,
        tty: None,
        rlimits: vec![],
    }
}

fn read_all(fd: OwnedFd) -> String {
    let mut s = String::new();
    File::from(fd).read_to_string(&mut s).unwrap();
    s
}

fn error_kind(r: &Response) -> ErrorKind {
    match r {
        Response::Error(e) => e.kind,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn spawned(r: (Response, Vec<OwnedFd>), nfds: usize) -> (i32, Vec<OwnedFd>) {
    match r {
        (Response::Spawned { pid }, fds) => {
            assert_eq!(fds.len(), nfds);
            (pid, fds)
        }
        (other, _) => panic!("expected Spawned, got {other:?}"),
    }
}

#[test]
fn exit_code_and_output() {
    let w = Wshd::start("exit");
    let (pid, fds) = spawned(
        w.spawn(spec(
            "p1",
            "/bin/sh",
            &["-c", "echo out; echo err >&2; exit 3"],
        )),
        2,
    );
    assert!(pid > 1);
    let mut fds = fds.into_iter();
    let (out, err) = (fds.next().unwrap(), fds.next().unwrap());
    assert_eq!(read_all(out), "out\n");
    assert_eq!(read_all(err), "err\n");
    assert_eq!(w.wait("p1"), Response::Exited(ExitStatus::Code(3)));
    // The status stays for late callers until Release.
    assert_eq!(w.wait("p1"), Response::Exited(ExitStatus::Code(3)));
    assert_eq!(
        w.list(),
        [ProcessSummary {
            id: "p1".into(),
            pid,
            tty: false,
            exit: Some(ExitStatus::Code(3))
        }]
    );
    assert_eq!(
        error_kind(&w.spawn(spec("p1", "/bin/true", &[])).0),
        ErrorKind::DuplicateId
    );
    assert_eq!(w.ask(&Request::Release { id: "p1".into() }).0, Response::Ok);
    assert_eq!(error_kind(&w.wait("p1")), ErrorKind::ProcessNotFound);
    assert!(w.list().is_empty());
    // The id is free again; several requests on one connection; PATH search.
    let c = w.connect();
    spawned(c.ask(&Request::Spawn(spec("p1", "true", &[]))), 2);
    assert_eq!(
        c.ask(&Request::Wait { id: "p1".into() }).0,
        Response::Exited(ExitStatus::Code(0))
    );
    assert_eq!(c.ask(&Request::Ping).0, Response::Pong);
}

#[test]
fn environment_and_dir() {
    let w = Wshd::start("env");
    let mut s = spec("env", "sh", &["-c", "echo $HOME $USER $PATH $FOO; pwd"]);
    s.env = vec!["FOO=bar=baz".into()];
    let (_, fds) = spawned(w.spawn(s), 2);
    let out = read_all(fds.into_iter().next().unwrap());
    let home = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("root:")
                .map(|r| r.split(':').nth(4).unwrap().to_string())
        })
        .unwrap();
    assert_eq!(
        out,
        format!(
            "{home} root /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin bar=baz\n{home}\n"
        )
    );
    assert_eq!(w.wait("env"), Response::Exited(ExitStatus::Code(0)));
}

#[test]
fn killed_by_signal_and_signal_rules() {
    let w = Wshd::start("signal");
    spawned(w.spawn(spec("sleeper", "sleep", &["100"])), 2);
    // A waiter on its own connection, answered when the process dies.
    let waiter = w.connect();
    waiter.send_raw(&encode(&Request::Wait {
        id: "sleeper".into(),
    }));
    // A waiter that hangs up does not disturb anything.
    let abandoned = w.connect();
    abandoned.send_raw(&encode(&Request::Wait {
        id: "sleeper".into(),
    }));
    drop(abandoned);
    let release = w
        .ask(&Request::Release {
            id: "sleeper".into(),
        })
        .0;
    assert_eq!(error_kind(&release), ErrorKind::InvalidSpec);
    for bad in [0, 65, -9] {
        let r = w
            .ask(&Request::Signal {
                id: "sleeper".into(),
                signal: bad,
            })
            .0;
        assert_eq!(error_kind(&r), ErrorKind::InvalidSpec, "signal {bad}");
    }
    let r = w
        .ask(&Request::Signal {
            id: "nobody-here".into(),
            signal: 9,
        })
        .0;
    assert_eq!(error_kind(&r), ErrorKind::ProcessNotFound);
    assert_eq!(
        w.ask(&Request::Signal {
            id: "sleeper".into(),
            signal: 9
        })
        .0,
        Response::Ok
    );
    assert_eq!(waiter.recv().0, Response::Exited(ExitStatus::Signal(9)));
    assert_eq!(w.ask(&Request::Ping).0, Response::Pong);
    // Signalling an exited process is fine.
    assert_eq!(
        w.ask(&Request::Signal {
            id: "sleeper".into(),
            signal: 9
        })
        .0,
        Response::Ok
    );
}

#[test]
fn stdin_pipe_and_close_stdin() {
    let w = Wshd::start("stdin");
    let mut s = spec("cat", "cat", &[]);
    s.open_stdin = true;
    let (_, fds) = spawned(w.spawn(s), 3);
    let mut fds = fds.into_iter();
    let (out, _err, stdin) = (
        fds.next().unwrap(),
        fds.next().unwrap(),
        fds.next().unwrap(),
    );
    let mut out = File::from(out);
    let mut stdin = File::from(stdin);
    stdin.write_all(b"hello\n").unwrap();
    let mut buf = [0u8; 6];
    out.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello\n");
    stdin.write_all(b"more").unwrap();
    drop(stdin);
    // wshd still holds a write end: cat sees no EOF yet.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.list()[0].exit, None);
    assert_eq!(
        w.ask(&Request::CloseStdin { id: "cat".into() }).0,
        Response::Ok
    );
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "more");
    assert_eq!(w.wait("cat"), Response::Exited(ExitStatus::Code(0)));
    let r = w.ask(&Request::CloseStdin { id: "dog".into() }).0;
    assert_eq!(error_kind(&r), ErrorKind::ProcessNotFound);
}

#[test]
fn refusals() {
    let w = Wshd::start("refuse");
    let (r, fds) = w.spawn(spec("x", "no-such-program", &[]));
    assert!(fds.is_empty());
    assert_eq!(error_kind(&r), ErrorKind::ExecutableNotFound);
    assert!(format!("{r:?}").contains("no-such-program"), "{r:?}");
    let r = w.spawn(spec("x", "/no/such/program", &[])).0;
    assert_eq!(error_kind(&r), ErrorKind::ExecutableNotFound);
    assert!(format!("{r:?}").contains("/no/such/program"), "{r:?}");
    let r = w.spawn(spec("x", "/etc/passwd", &[])).0; // not executable
    assert_eq!(error_kind(&r), ErrorKind::ExecutableNotFound);
    let mut s = spec("x", "/bin/true", &[]);
    s.user = Some("no-such-user-here".into());
    assert_eq!(error_kind(&w.spawn(s).0), ErrorKind::UnknownUser);
    let mut s = spec("x", "/bin/true", &[]);
    s.env = vec!["NOEQUALS".into()];
    assert_eq!(error_kind(&w.spawn(s).0), ErrorKind::InvalidSpec);
    assert_eq!(
        error_kind(&w.spawn(spec("", "/bin/true", &[])).0),
        ErrorKind::InvalidSpec
    );
    let long = "x".repeat(grove_schema::wshd::MAX_PROCESS_ID + 1);
    assert_eq!(
        error_kind(&w.spawn(spec(&long, "/bin/true", &[])).0),
        ErrorKind::InvalidSpec
    );
    // Nothing was registered by the failures.
    assert!(w.list().is_empty());
    for req in [
        Request::Wait { id: "ghost".into() },
        Request::Release { id: "ghost".into() },
        Request::CloseStdin { id: "ghost".into() },
        Request::Reattach { id: "ghost".into() },
        Request::SetWindowSize {
            id: "ghost".into(),
            size: WindowSize {
                columns: 80,
                rows: 24,
            },
        },
        Request::Signal {
            id: "ghost".into(),
            signal: 15,
        },
    ] {
        assert_eq!(
            error_kind(&w.ask(&req).0),
            ErrorKind::ProcessNotFound,
            "{req:?}"
        );
    }
    // Garbage and a wrong version are answered, then the connection ends.
    let c = w.connect();
    c.send_raw(b"\x01\xff\xff\xff");
    assert_eq!(error_kind(&c.recv().0), ErrorKind::Malformed);
    let c = w.connect();
    c.send_raw(&[9, 0]);
    assert_eq!(error_kind(&c.recv().0), ErrorKind::UnsupportedVersion);
    // Still serving.
    assert_eq!(w.ask(&Request::Ping).0, Response::Pong);
}

#[test]
fn user_switch() {
    let w = Wshd::start("user");
    let home = w.dir.join("home/nobody");
    let mut s = spec("id", "sh", &["-c", "id -u; id -g; pwd; echo $USER"]);
    s.user = Some("nobody".into());
    s.dir = Some(home.to_str().unwrap().into());
    let (_, fds) = spawned(w.spawn(s), 2);
    let out = read_all(fds.into_iter().next().unwrap());
    let nobody = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("nobody:")
                .map(|r| r.split(':').nth(1).unwrap().to_string())
        })
        .unwrap();
    let gid = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("nobody:")
                .map(|r| r.split(':').nth(2).unwrap().to_string())
        })
        .unwrap();
    assert_eq!(
        out,
        format!("{nobody}\n{gid}\n{}\nnobody\n", home.display())
    );
    assert_eq!(w.wait("id"), Response::Exited(ExitStatus::Code(0)));
    // The working directory was created and given to the user.
    for d in [w.dir.join("home"), home.clone()] {
        let m = std::fs::metadata(&d).unwrap();
        assert_eq!(m.uid().to_string(), nobody, "{}", d.display());
    }
    // A numeric uid:gid that /etc/passwd does not know.
    let mut s = spec("num", "sh", &["-c", "id -u; id -g; echo $HOME"]);
    s.user = Some("4242:4343".into());
    s.dir = Some(w.dir.to_str().unwrap().into());
    let (_, fds) = spawned(w.spawn(s), 2);
    assert_eq!(read_all(fds.into_iter().next().unwrap()), "4242\n4343\n/\n");
}

#[test]
fn orphans_are_reaped() {
    let w = Wshd::start("orphan");
    spawned(
        w.spawn(spec("parent", "sh", &["-c", "sleep 0.1 & exit 0"])),
        2,
    );
    assert_eq!(w.wait("parent"), Response::Exited(ExitStatus::Code(0)));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        // Every process of the namespace, and its state (after the last ')').
        let id = format!("ps-{}", deadline.elapsed().as_nanos());
        let probe = spec(
            &id,
            "sh",
            &["-c", "for f in /proc/[0-9]*/stat; do cat $f; echo; done"],
        );
        let (_, fds) = spawned(w.spawn(probe), 2);
        let out = read_all(fds.into_iter().next().unwrap());
        assert_eq!(w.wait(&id), Response::Exited(ExitStatus::Code(0)));
        let states: Vec<(String, String)> = out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (head, tail) = l.rsplit_once(')').unwrap();
                (
                    head.to_string(),
                    tail.split_whitespace().next().unwrap().to_string(),
                )
            })
            .collect();
        assert!(
            states.iter().any(|(h, _)| h.starts_with("1 (wshd")),
            "{out}"
        );
        let sleeping = states.iter().any(|(h, _)| h.contains("(sleep"));
        let zombies: Vec<_> = states.iter().filter(|(_, s)| s == "Z").collect();
        if !sleeping && zombies.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "zombies left: {zombies:?}\n{out}"
        );
    }
    assert!(
        w.log_text().contains("reaped orphan pid"),
        "{}",
        w.log_text()
    );
}

/// `Top`: every process of the namespace from its /proc, each with the
/// spawned process it is or descends from; the scan child itself is not
/// listed and leaves nothing behind.
#[test]
fn top_lists_the_processes_and_whose_they_are() {
    let w = Wshd::start("top");
    let (shell, _) = spawned(w.spawn(spec("web", "sh", &["-c", "sleep 100 & wait"])), 2);
    let (lone, _) = spawned(w.spawn(spec("lone", "sleep", &["101"])), 2);
    let deadline = Instant::now() + Duration::from_secs(10);
    let processes = loop {
        let processes = match w.ask(&Request::Top).0 {
            Response::Top {
                processes,
                truncated,
            } => {
                assert!(!truncated);
                processes
            }
            other => panic!("Top: {other:?}"),
        };
        if processes.iter().any(|p| p.command == "sleep 100") {
            break processes;
        }
        assert!(Instant::now() < deadline, "{processes:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let find = |command: &str| {
        processes
            .iter()
            .find(|p| p.command == command)
            .unwrap_or_else(|| panic!("{command} in {processes:?}"))
    };
    let init = processes.iter().find(|p| p.pid == 1).expect("wshd itself");
    assert!(init.command.contains("wshd"), "{init:?}");
    assert_eq!(init.process_id, None);
    let sh = find("sh -c sleep 100 & wait");
    assert_eq!((sh.pid, sh.ppid), (shell, 1));
    assert_eq!(sh.process_id.as_deref(), Some("web"));
    let child = find("sleep 100");
    assert_eq!(child.ppid, shell);
    assert_eq!(child.process_id.as_deref(), Some("web"), "a descendant");
    let sleeper = find("sleep 101");
    assert_eq!(sleeper.pid, lone);
    assert_eq!(sleeper.process_id.as_deref(), Some("lone"));
    assert_eq!((sleeper.uid, sleeper.user.as_deref()), (0, Some("root")));
    assert!(sleeper.rss_bytes > 0 && sleeper.elapsed_millis < 60_000);
    assert!(matches!(sleeper.state, 'S' | 'R'), "{sleeper:?}");
    // The four listed are all there is: wshd, sh and its sleep, the lone
    // sleep; no scan child.
    assert_eq!(processes.len(), 4, "{processes:?}");
    assert!(!w.log_text().contains("top scan"), "{}", w.log_text());
    assert!(!w.log_text().contains("reaped orphan"), "{}", w.log_text());
}

#[test]
fn signal_all_and_sigterm_to_wshd() {
    let w = Wshd::start("sigall");
    spawned(w.spawn(spec("a", "sleep", &["100"])), 2);
    spawned(w.spawn(spec("b", "sh", &["-c", "sleep 100; exit 0"])), 2);
    // wshd ignores SIGTERM sent to it.
    let pid = w.host_pid().expect("wshd host pid");
    // SAFETY: kill on the wshd we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(w.ask(&Request::Ping).0, Response::Pong);
    let bad = w.ask(&Request::SignalAll { signal: 0 }).0;
    assert_eq!(error_kind(&bad), ErrorKind::InvalidSpec);
    assert_eq!(w.ask(&Request::SignalAll { signal: 15 }).0, Response::Ok);
    assert_eq!(w.wait("a"), Response::Exited(ExitStatus::Signal(15)));
    assert_eq!(w.wait("b"), Response::Exited(ExitStatus::Signal(15)));
    assert_eq!(w.ask(&Request::Ping).0, Response::Pong);
}

/// A peer that is neither the server uid nor root gets an error and no service.
#[test]
fn other_uids_are_refused() {
    let w = Wshd::start_for("peer", 4242);
    std::fs::set_permissions(&w.sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(30, 0)).unwrap();
    let addr = UnixAddr::new(&w.sock).unwrap();
    let ping = encode(&Request::Ping);
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    // The connecting side runs as uid 65534 in a forked child, which only
    // makes raw system calls (this test process has other threads).
    // SAFETY: see above; the child ends in _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        // SAFETY: raw syscalls on prepared memory, then _exit.
        unsafe {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(10);
            }
            if libc::connect(fd.as_raw_fd(), addr.as_ptr().cast(), addr.len()) != 0 {
                libc::_exit(11);
            }
            libc::send(fd.as_raw_fd(), ping.as_ptr().cast(), ping.len(), 0);
            let mut buf = [0u8; 4096];
            let n = libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
            if n > 0 {
                libc::write(wr.as_raw_fd(), buf.as_ptr().cast(), n as usize);
            }
            libc::_exit(0);
        }
    }
    drop(wr);
    let mut answer = Vec::new();
    File::from(rd).read_to_end(&mut answer).unwrap();
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(libc::WEXITSTATUS(status), 0);
    let r: Response = decode(&answer).unwrap();
    assert_eq!(error_kind(&r), ErrorKind::System);
    assert!(format!("{r:?}").contains("uid 65534"), "{r:?}");
    // Root may still talk.
    assert_eq!(w.ask(&Request::Ping).0, Response::Pong);
    assert!(
        w.log_text().contains("refused a connection from uid 65534"),
        "{}",
        w.log_text()
    );
}

/// The static binary in a bare busybox rootfs: it needs nothing there but
/// /etc/passwd and /etc/group (no /dev/null, no /proc).
#[test]
fn static_wshd_in_busybox_rootfs() {
    let Some(bin) = static_wshd() else { return };
    if !std::path::Path::new("/bin/busybox").exists() {
        eprintln!("skipped: no /bin/busybox");
        return;
    }
    let w = Wshd::start_with("rootfs", 0, Some(&bin));
    let mut s = spec(
        "id",
        "sh",
        &["-c", "id -u; id -G; pwd; echo $HOME $USER $PATH; cat"],
    );
    s.user = Some("vcap".into());
    let (_, fds) = spawned(w.spawn(s), 2);
    let out = read_all(fds.into_iter().next().unwrap());
    assert_eq!(
        out,
        "2000\n2000 3000\n/home/vcap\n/home/vcap vcap /usr/local/bin:/usr/bin:/bin\n"
    );
    assert_eq!(w.wait("id"), Response::Exited(ExitStatus::Code(0)));
    let m = std::fs::metadata(w.dir.join("rootfs/home/vcap")).unwrap();
    assert_eq!((m.uid(), m.gid()), (2000, 2000));
    let r = w.spawn(spec("x", "bash", &[])).0;
    assert_eq!(error_kind(&r), ErrorKind::ExecutableNotFound);
}

#[test]
fn help() {
    let out = Command::new(WSHD).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--socket-fd"));
    let out = Command::new(WSHD).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Waits (at most 20 s) until `fd` is readable.
fn wait_readable(fd: &impl AsRawFd) {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, 20_000) };
    assert!(n > 0, "nothing to read within 20 s");
}

/// Reads until end-of-file, failing when nothing arrives for 20 s.
fn read_to_eof(fd: OwnedFd) -> String {
    let mut f = File::from(fd);
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        wait_readable(&f);
        match f.read(&mut buf).unwrap() {
            0 => return String::from_utf8(out).unwrap(),
            n => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads until the output contains `needle`; returns everything read.
fn read_until(f: &mut File, needle: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(needle) {
        wait_readable(f);
        let n = f.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "EOF before {needle:?}: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).unwrap()
}

fn tty_spec(id: &str, script: &str, columns: u16, rows: u16) -> SpawnSpec {
    let mut s = spec(id, "sh", &["-c", script]);
    s.tty = Some(WindowSize { columns, rows });
    s
}

fn attached(r: (Response, Vec<OwnedFd>)) -> (Response, Vec<OwnedFd>) {
    match &r.0 {
        Response::Attached { tty, stdin, .. } => {
            let want = if *tty { 1 } else { 2 } + usize::from(*stdin);
            assert_eq!(r.1.len(), want, "{:?}", r.0);
        }
        other => panic!("expected Attached, got {other:?}"),
    }
    r
}

/// Output waits in the 1 MiB pipe while nobody reads.
#[test]
fn output_pipes_hold_a_mebibyte() {
    let w = Wshd::start("bigpipe");
    const N: usize = 900 * 1024;
    let script = format!("yes 0123456789abcde | head -c {N}; yes err | head -c {N} >&2");
    let (_, fds) = spawned(w.spawn(spec("big", "sh", &["-c", &script])), 2);
    for fd in &fds {
        // SAFETY: fcntl on an fd we own.
        let size = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
        assert_eq!(size as usize, OUTPUT_BUFFER);
    }
    // Nothing was read, yet the process could write everything and exit.
    assert_eq!(w.wait("big"), Response::Exited(ExitStatus::Code(0)));
    let mut fds = fds.into_iter();
    let out = read_to_eof(fds.next().unwrap());
    assert_eq!(out.len(), N);
    assert_eq!(out, "0123456789abcde\n".repeat(N / 16));
    let err = read_to_eof(fds.next().unwrap());
    assert_eq!(err, "err\n".repeat(N / 4));
    // A terminal's output goes through a pipe of the same size (the
    // terminal turns each "\n" into "\r\n": 956 KiB).
    let script = format!("yes 0123456789abcde | head -c {N}");
    let (_, fds) = spawned(w.spawn(tty_spec("tty", &script, 80, 24)), 1);
    assert_eq!(w.wait("tty"), Response::Exited(ExitStatus::Code(0)));
    let out = read_to_eof(fds.into_iter().next().unwrap());
    assert_eq!(out, "0123456789abcde\r\n".repeat(N / 16));
}

#[test]
fn rlimits() {
    let w = Wshd::start("rlimit");
    let mut s = spec("ul", "sh", &["-c", "ulimit -n; ulimit -c; ulimit -Hn"]);
    s.rlimits = vec![(Rlimit::Nofile, 123), (Rlimit::Core, 0)];
    s.user = Some("nobody".into());
    s.dir = Some(w.dir.to_str().unwrap().into());
    let (_, fds) = spawned(w.spawn(s), 2);
    assert_eq!(
        read_to_eof(fds.into_iter().next().unwrap()),
        "123\n0\n123\n"
    );
    assert_eq!(w.wait("ul"), Response::Exited(ExitStatus::Code(0)));
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut s = spec("bad", "true", &[]);
    s.rlimits = vec![(Rlimit::Core, 0), (Rlimit::Nofile, nr_open + 1)];
    let (r, fds) = w.spawn(s);
    assert!(fds.is_empty());
    assert_eq!(error_kind(&r), ErrorKind::InvalidSpec);
    assert!(format!("{r:?}").contains("Nofile"), "{r:?}");
    assert_eq!(w.list().len(), 1);
}

#[test]
fn tty_basics() {
    let w = Wshd::start("tty");
    let script = "tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-ttys; stty size; \
                  echo to-stderr >&2; exit 7";
    let (pid, fds) = spawned(w.spawn(tty_spec("t", script, 80, 24)), 1);
    let out = read_to_eof(fds.into_iter().next().unwrap());
    let lines: Vec<&str> = out.split("\r\n").collect();
    assert!(lines[0].starts_with("/dev/pts/"), "{out:?}");
    assert_eq!(
        lines[1..],
        ["all-ttys", "24 80", "to-stderr", ""],
        "{out:?}"
    );
    assert_eq!(w.wait("t"), Response::Exited(ExitStatus::Code(7)));
    assert_eq!(
        w.list(),
        [ProcessSummary {
            id: "t".into(),
            pid,
            tty: true,
            exit: Some(ExitStatus::Code(7))
        }]
    );
}

#[test]
fn tty_window_size() {
    let w = Wshd::start("winch");
    let script = "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.05; done";
    let (_, fds) = spawned(w.spawn(tty_spec("t", script, 80, 24)), 1);
    let mut out = File::from(fds.into_iter().next().unwrap());
    read_until(&mut out, "ready\r\n");
    let size = WindowSize {
        columns: 100,
        rows: 40,
    };
    let r = w.ask(&Request::SetWindowSize {
        id: "t".into(),
        size,
    });
    assert_eq!(r.0, Response::Ok);
    assert_eq!(read_to_eof(out.into()), "40 100\r\n");
    assert_eq!(w.wait("t"), Response::Exited(ExitStatus::Code(0)));
    // A process without a terminal has no window.
    spawned(w.spawn(spec("p", "true", &[])), 2);
    let r = w.ask(&Request::SetWindowSize {
        id: "p".into(),
        size,
    });
    assert_eq!(error_kind(&r.0), ErrorKind::InvalidSpec);
}

#[test]
fn tty_input_and_close_stdin() {
    let w = Wshd::start("ttyin");
    let mut s = tty_spec(
        "t",
        "read line; echo \"got:$line\"; read line; echo \"then:$line\"",
        80,
        24,
    );
    s.open_stdin = true;
    let (_, fds) = spawned(w.spawn(s), 2);
    let mut fds = fds.into_iter();
    let (out, master) = (fds.next().unwrap(), fds.next().unwrap());
    let mut out = File::from(out);
    let mut master = File::from(master);
    master.write_all(b"hello\n").unwrap();
    // Echoed by the terminal, then read by the shell.
    assert_eq!(
        read_until(&mut out, "got:hello\r\n"),
        "hello\r\ngot:hello\r\n"
    );
    // CloseStdin sends the terminal's EOF character (^D) and drops wshd's
    // copy of the master; the terminal itself stays open.
    assert_eq!(
        w.ask(&Request::CloseStdin { id: "t".into() }).0,
        Response::Ok
    );
    let (r, _fds) = attached(w.ask(&Request::Reattach { id: "t".into() }));
    assert!(matches!(
        r,
        Response::Attached {
            tty: true,
            stdin: false,
            ..
        }
    ));
    // The second `read` sees end of file.
    drop(master);
    assert_eq!(read_to_eof(out.into()), "then:\r\n");
    assert_eq!(w.wait("t"), Response::Exited(ExitStatus::Code(0)));
}

#[test]
fn tty_as_another_user() {
    let w = Wshd::start("ttyuser");
    let mut s = tty_spec("t", "id -u; echo via-path > \"$(tty)\"", 80, 24);
    s.user = Some("4242:4343".into());
    s.dir = Some(w.dir.to_str().unwrap().into());
    let (_, fds) = spawned(w.spawn(s), 1);
    assert_eq!(
        read_to_eof(fds.into_iter().next().unwrap()),
        "4242\r\nvia-path\r\n"
    );
    assert_eq!(w.wait("t"), Response::Exited(ExitStatus::Code(0)));
}

#[test]
fn reattach() {
    let w = Wshd::start("reattach");
    let mut s = spec(
        "p",
        "sh",
        &["-c", "echo one; echo two >&2; read x; echo got:$x"],
    );
    s.open_stdin = true;
    let (pid, fds) = spawned(w.spawn(s), 3);
    drop(fds); // as if groved restarted
    let (r, fds) = attached(w.ask(&Request::Reattach { id: "p".into() }));
    assert_eq!(
        r,
        Response::Attached {
            pid,
            tty: false,
            stdin: true,
            exit: None
        }
    );
    let mut fds = fds.into_iter();
    let (out, err, stdin) = (
        fds.next().unwrap(),
        fds.next().unwrap(),
        fds.next().unwrap(),
    );
    File::from(stdin).write_all(b"x\n").unwrap();
    assert_eq!(read_to_eof(out), "one\ngot:x\n");
    assert_eq!(read_to_eof(err), "two\n");
    assert_eq!(w.wait("p"), Response::Exited(ExitStatus::Code(0)));

    // After the exit: the buffered output and the status.
    let (pid, fds) = spawned(
        w.spawn(spec(
            "q",
            "sh",
            &["-c", "echo buffered; echo e >&2; exit 4"],
        )),
        2,
    );
    drop(fds);
    assert_eq!(w.wait("q"), Response::Exited(ExitStatus::Code(4)));
    let (r, fds) = attached(w.ask(&Request::Reattach { id: "q".into() }));
    assert_eq!(
        r,
        Response::Attached {
            pid,
            tty: false,
            stdin: false,
            exit: Some(ExitStatus::Code(4))
        }
    );
    let mut fds = fds.into_iter();
    assert_eq!(read_to_eof(fds.next().unwrap()), "buffered\n");
    assert_eq!(read_to_eof(fds.next().unwrap()), "e\n");

    // The same on a terminal.
    let (pid, fds) = spawned(
        w.spawn(tty_spec("t", "echo tty-buffered; exit 2", 80, 24)),
        1,
    );
    drop(fds);
    assert_eq!(w.wait("t"), Response::Exited(ExitStatus::Code(2)));
    let (r, fds) = attached(w.ask(&Request::Reattach { id: "t".into() }));
    assert_eq!(
        r,
        Response::Attached {
            pid,
            tty: true,
            stdin: false,
            exit: Some(ExitStatus::Code(2))
        }
    );
    assert_eq!(
        read_to_eof(fds.into_iter().next().unwrap()),
        "tty-buffered\r\n"
    );

    // Released or unknown: not found.
    assert_eq!(w.ask(&Request::Release { id: "q".into() }).0, Response::Ok);
    for id in ["q", "ghost"] {
        let r = w.ask(&Request::Reattach { id: id.into() }).0;
        assert_eq!(error_kind(&r), ErrorKind::ProcessNotFound, "{id}");
    }
}

/// wshd's host pid: the child of the `unshare` that started it.
fn wshd_pid(w: &Wshd) -> u32 {
    let id = w.unshare.id();
    let children = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap();
    children.split_whitespace().next().unwrap().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// wshd's fd count once it is `want` (wshd closes a client's connection
/// just after answering it, so give it a moment), or what it is after 2 s.
fn open_fds_settled(pid: u32, want: usize) -> usize {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let n = open_fds(pid);
        if n == want || std::time::Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Once an exited process's output has all been read, wshd lets go of its
/// copies of the pipes (the next spawn checks), so finished processes do
/// not pile up descriptors; a reattach then reads end of file at once.
/// Output nobody has read is kept.
#[test]
fn drained_output_is_let_go_and_unread_output_kept() {
    let w = Wshd::start("drained");
    let pid = wshd_pid(&w);
    let (_, fds) = spawned(
        w.spawn(spec("read", "sh", &["-c", "echo hi; echo e >&2"])),
        2,
    );
    let mut fds = fds.into_iter();
    assert_eq!(read_to_eof(fds.next().unwrap()), "hi\n");
    assert_eq!(read_to_eof(fds.next().unwrap()), "e\n");
    assert_eq!(w.wait("read"), Response::Exited(ExitStatus::Code(0)));
    // Once the last Wait's connection is closed: the same count three
    // times running.
    let before = {
        let mut seen = (open_fds(pid), 0);
        while seen.1 < 3 {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let n = open_fds(pid);
            seen = if n == seen.0 { (n, seen.1 + 1) } else { (n, 0) };
        }
        seen.0
    };
    // This spawn lets go of "read"'s two drained pipes and keeps its own.
    let (_, unread) = spawned(w.spawn(spec("unread", "sh", &["-c", "echo kept"])), 2);
    drop(unread); // as if groved restarted before reading
    assert_eq!(w.wait("unread"), Response::Exited(ExitStatus::Code(0)));
    assert_eq!(
        open_fds_settled(pid, before),
        before,
        "log: {}",
        w.log_text()
    );
    // The next keeps "unread"'s: nobody read them.
    let (_, fds) = spawned(w.spawn(spec("next", "true", &[])), 2);
    drop(fds);
    assert_eq!(w.wait("next"), Response::Exited(ExitStatus::Code(0)));
    assert_eq!(
        open_fds_settled(pid, before + 2),
        before + 2,
        "log: {}",
        w.log_text()
    );

    let (r, fds) = attached(w.ask(&Request::Reattach { id: "read".into() }));
    assert!(
        matches!(
            r,
            Response::Attached {
                exit: Some(ExitStatus::Code(0)),
                stdin: false,
                ..
            }
        ),
        "{r:?}"
    );
    let mut fds = fds.into_iter();
    assert_eq!(read_to_eof(fds.next().unwrap()), "");
    assert_eq!(read_to_eof(fds.next().unwrap()), "");
    let (_, fds) = attached(w.ask(&Request::Reattach {
        id: "unread".into(),
    }));
    assert_eq!(read_to_eof(fds.into_iter().next().unwrap()), "kept\n");
}
