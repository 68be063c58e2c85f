//! Integration tests: start the built grove-helper as root with a policy of
//! its own (temp dirs, a cgroup parent named after this test process) and
//! speak the raw protocol to it. Run as root on a cgroup v1 (hybrid) host.
//!
//! The container tests use a throwaway static "wshd" compiled into the test's
//! temp dir: it prints what it sees inside the container to its log and sleeps.

use grove_schema::helper::{
    decode_response, encode_request, ContainerState, CpuQuota, DiskLimit, DiskScope, ErrorKind,
    HostPath, Limits, Request, Response, RootfsSource, MAX_DATAGRAM, PROTOCOL_VERSION,
};
use grove_schema::Handle;
use nix::sys::socket::{
    connect, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CONTROLLERS: [&str; 8] = [
    "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio",
];
static COUNTER: AtomicUsize = AtomicUsize::new(0);

const SLEEPER: &str = r#"
use std::io::Write;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let fd3 = std::fs::read_link("/proc/self/fd/3").map(|p| p.display().to_string()).unwrap_or_default();
    let mut dev: Vec<String> = std::fs::read_dir("/dev").map(|d| d.filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned()).collect()).unwrap_or_default();
    dev.sort();
    let mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
        .lines().filter_map(|l| l.split(' ').nth(4).map(String::from)).collect();
    let env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default().replace('\n', ";");
    println!("pid={} args=[{}] hostname={} fd3={} busybox={} env=[{}] dev=[{}] mounts=[{}] cgroup=[{}]",
        std::process::id(), args.join(" "), host.trim(), fd3, std::path::Path::new("/bin/busybox").exists(),
        env.join(","), dev.join(","), mounts.join(","), cgroup);
    std::io::stdout().flush().ok();
    loop { std::thread::sleep(std::time::Duration::from_secs(3600)); }
}
"#;

struct Fixture {
    dir: PathBuf,
    cgroup_parent: String,
    /// This fixture's bridge and nftables table (kernel-global names, so
    /// unique per fixture), and its /24 pool in 10.253.0.0/16.
    net_name: String,
    pool: String,
    /// Its NetIn port range.
    ports: String,
    helper: Option<Child>,
    log: Arc<Mutex<String>>,
    /// The depot is a loop-mounted btrfs of this fixture's own.
    btrfs: bool,
}

impl Fixture {
    /// A temp dir with a busybox rootfs, a policy and (if `real_wshd`) the
    /// sleeper as wshd; the helper is started and ready.
    fn new(server_user: &str, real_wshd: bool) -> Fixture {
        Fixture::with_depot(server_user, real_wshd, false)
    }

    /// `btrfs`: the depot is a fresh btrfs (a sparse 1 GiB image file,
    /// loop-mounted, quotas enabled) instead of a directory of /tmp.
    fn with_depot(server_user: &str, real_wshd: bool, btrfs: bool) -> Fixture {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(format!("/tmp/grove-helper-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rootfs/busybox/bin")).unwrap();
        let k = (std::process::id() as usize * 7 + n) % 250;
        let mut f = Fixture {
            cgroup_parent: format!("grove-test-{}-{n}", std::process::id()),
            net_name: format!("ht{}x{n}", std::process::id() % 100_000),
            ports: format!("{}-{}", 30000 + k * 100, 30000 + k * 100 + 99),
            pool: format!("10.253.{k}.0/24"),
            dir,
            helper: None,
            log: Arc::new(Mutex::new(String::new())),
            btrfs,
        };
        let d = f.dir.clone();
        if btrfs {
            let img = d.join("depot.btrfs");
            let depot = d.join("depot");
            std::fs::create_dir_all(&depot).unwrap();
            std::fs::File::create(&img)
                .unwrap()
                .set_len(1 << 30)
                .unwrap();
            for args in [
                vec!["mkfs.btrfs", "-q", img.to_str().unwrap()],
                vec![
                    "mount",
                    "-o",
                    "loop",
                    img.to_str().unwrap(),
                    depot.to_str().unwrap(),
                ],
                vec!["btrfs", "quota", "enable", depot.to_str().unwrap()],
            ] {
                let out = Command::new(args[0])
                    .args(&args[1..])
                    .output()
                    .unwrap_or_else(|e| {
                        panic!("{}: {e} (./dev setup installs btrfs-progs)", args[0])
                    });
                assert!(
                    out.status.success(),
                    "{args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        std::fs::copy("/bin/busybox", d.join("rootfs/busybox/bin/busybox")).unwrap();
        std::os::unix::fs::symlink("busybox", d.join("rootfs/busybox/bin/sh")).unwrap();
        let wshd = if real_wshd {
            std::fs::write(d.join("sleeper.rs"), SLEEPER).unwrap();
            let out = Command::new("rustc")
                .args(["-C", "target-feature=+crt-static", "-O", "-o"])
                .arg(d.join("sleeper"))
                .arg(d.join("sleeper.rs"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "building the sleeper: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The helper runs wshd as root: it must be root's, 0755.
            std::fs::set_permissions(d.join("sleeper"), std::fs::Permissions::from_mode(0o755))
                .unwrap();
            d.join("sleeper")
        } else {
            PathBuf::from("/bin/true")
        };
        let policy = format!(
            "# test policy\nserver_user = \"{server_user}\"\nsocket = \"{d}/helper.sock\"\n\
             depot = \"{d}/depot\"\nruntime_dir = \"{d}/run\"\ndefault_rootfs = \"{d}/rootfs/busybox\"\n\
             rootfs_allow = [\"{d}/rootfs\"]\nwshd = \"{w}\"\ncgroup_parent = \"{cg}\"\n\
             max_containers = 2\nuplinks = \"none\"\nbridge = \"{net}\"\nnft_table = \"{net}\"\n\
             pool = \"{pool}\"\nport_range = \"{ports}\"\n",
            d = d.display(),
            w = wshd.display(),
            cg = f.cgroup_parent,
            net = f.net_name,
            pool = f.pool,
            ports = f.ports,
        );
        std::fs::write(d.join("policy.conf"), policy).unwrap();
        std::fs::set_permissions(
            d.join("policy.conf"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        f.start();
        f
    }

    fn start(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_grove-helper"))
            .arg("--policy")
            .arg(self.dir.join("policy.conf"))
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut l = log.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        self.helper = Some(child);
        let pid = self.helper.as_ref().unwrap().id();
        self.wait_for(&format!("pid {pid})"), "the helper's ready line");
    }

    fn wait_for(&mut self, needle: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log.lock().unwrap().contains(needle) {
            if let Some(status) = self
                .helper
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "helper exited with {status} waiting for {what}:\n{}",
                    self.log.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("helper.sock")
    }

    fn connect(&self) -> OwnedFd {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        connect(fd.as_raw_fd(), &UnixAddr::new(&self.socket()).unwrap()).unwrap();
        fd
    }

    fn call(&self, r: &Request) -> Response {
        let fd = self.connect();
        send(&fd, &encode_request(r), &[]);
        recv(&fd).expect("a response")
    }

    fn cgroup(&self, controller: &str, handle: &str) -> PathBuf {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&self.cgroup_parent)
            .join(handle)
    }

    /// Host mounts that involve this fixture's dir (other tests on the host
    /// may mount elsewhere at the same time).
    fn my_mounts(&self) -> Vec<String> {
        let me = self.dir.display().to_string();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&me))
            .map(String::from)
            .collect()
    }

    fn stop_helper(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.helper.take().unwrap();
        // SAFETY: signalling the helper process this fixture started, by its pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        child.wait().unwrap()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut c) = self.helper.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Kill what the helper started (the processes in our own cgroups), then
        // remove the cgroups and the temp dir.
        for ctl in CONTROLLERS {
            let parent = Path::new("/sys/fs/cgroup")
                .join(ctl)
                .join(&self.cgroup_parent);
            let Ok(entries) = std::fs::read_dir(&parent) else {
                continue;
            };
            for e in entries.flatten().filter(|e| e.path().is_dir()) {
                for _ in 0..100 {
                    let procs =
                        std::fs::read_to_string(e.path().join("cgroup.procs")).unwrap_or_default();
                    if procs.trim().is_empty() {
                        break;
                    }
                    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        // SAFETY: these processes were started by this test's helper.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                for _ in 0..100 {
                    if std::fs::remove_dir(e.path()).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = std::fs::remove_dir(&parent);
        }
        // The bridge and tables this fixture's helper made (by their unique
        // names; containers' veths went with their netns).
        let _ = Command::new("ip")
            .args(["link", "del", &self.net_name])
            .stderr(Stdio::null())
            .status();
        for family in ["inet", "bridge"] {
            let _ = Command::new("nft")
                .args(["delete", "table", family, &self.net_name])
                .stderr(Stdio::null())
                .status();
        }
        if self.btrfs {
            // The loop device goes with the last unmount (mount -o loop sets autoclear).
            for _ in 0..50 {
                let ok = Command::new("umount")
                    .arg(self.dir.join("depot"))
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        for _ in 0..50 {
            if std::fs::remove_dir_all(&self.dir).is_ok() || !self.dir.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn send(fd: &OwnedFd, bytes: &[u8], fds: &[RawFd]) {
    let iov = [std::io::IoSlice::new(bytes)];
    let cmsgs = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsgs };
    sendmsg::<()>(fd.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).unwrap();
}

/// The next response, or None at EOF.
fn recv(fd: &OwnedFd) -> Option<Response> {
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let n = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(30_000u16)).unwrap();
    assert_eq!(n, 1, "no response within 30 s");
    let mut buf = vec![0u8; 256 * 1024];
    let n = nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    if n == 0 {
        return None;
    }
    Some(decode_response(&buf[..n]).unwrap())
}

fn error_kind(r: Response) -> ErrorKind {
    match r {
        Response::Error(e) => e.kind,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn h(s: &str) -> Handle {
    Handle::new(s).unwrap()
}

fn ping_works(f: &Fixture) {
    assert_eq!(
        f.call(&Request::Ping),
        Response::Pong {
            version: PROTOCOL_VERSION
        }
    );
}

/// Raw postcard bytes of CreateContainer with an unchecked handle and the default rootfs.
fn raw_create(handle: &str) -> Vec<u8> {
    let mut b = vec![PROTOCOL_VERSION as u8, 1, handle.len() as u8];
    b.extend_from_slice(handle.as_bytes());
    b.push(0);
    b.extend_from_slice(&[0; 7]); // Limits::default(): seven Nones
    b.push(0); // ip: None
    b.push(0); // privileged: false
    b.push(0); // binds: none
    b
}

#[test]
fn protocol_violations_end_only_that_conversation() {
    let f = Fixture::new("root", false);
    ping_works(&f);
    assert_eq!(
        raw_create("ok-handle"),
        encode_request(&Request::CreateContainer {
            handle: h("ok-handle"),
            rootfs: RootfsSource::Default,
            limits: Limits::default(),
            ip: None,
            privileged: false,
            binds: Vec::new(),
        })
    );
    let create = encode_request(&Request::CreateContainer {
        handle: h("abc"),
        rootfs: RootfsSource::HostDir(HostPath::new("/srv/x").unwrap()),
        limits: Limits::default(),
        ip: None,
        privileged: false,
        binds: Vec::new(),
    });
    let cases: Vec<(&str, Vec<u8>, ErrorKind)> = vec![
        ("garbage", vec![0xff; 10], ErrorKind::Malformed),
        (
            "truncated",
            create[..create.len() - 2].to_vec(),
            ErrorKind::Malformed,
        ),
        (
            "unknown variant",
            vec![PROTOCOL_VERSION as u8, 200],
            ErrorKind::Malformed,
        ),
        (
            "trailing byte",
            vec![PROTOCOL_VERSION as u8, 0, 0],
            ErrorKind::Malformed,
        ),
        (
            "longer than the buffer",
            vec![0; MAX_DATAGRAM + 100],
            ErrorKind::Malformed,
        ),
        (
            "one byte too long",
            vec![0; MAX_DATAGRAM + 1],
            ErrorKind::Malformed,
        ),
        ("handle with /", raw_create("a/b"), ErrorKind::Malformed),
        ("handle ..", raw_create(".."), ErrorKind::Malformed),
        ("other version", vec![9, 0], ErrorKind::UnsupportedVersion),
    ];
    for (what, bytes, kind) in cases {
        let fd = f.connect();
        send(&fd, &bytes, &[]);
        assert_eq!(error_kind(recv(&fd).unwrap()), kind, "{what}");
        assert_eq!(
            recv(&fd),
            None,
            "{what}: the helper must close the connection"
        );
        ping_works(&f);
    }

    // Several requests on one connection, and several connections at once.
    let a = f.connect();
    let b = f.connect();
    for _ in 0..3 {
        send(&a, &encode_request(&Request::Ping), &[]);
        send(&b, &encode_request(&Request::ListContainers), &[]);
        assert_eq!(
            recv(&a),
            Some(Response::Pong {
                version: PROTOCOL_VERSION
            })
        );
        assert_eq!(recv(&b), Some(Response::Containers(vec![])));
    }

    // Received fds are closed: the pipe's read end sees EOF once our copy
    // and the helper's copy of the write end are gone.
    let (r, w) = nix::unistd::pipe().unwrap();
    send(&a, &encode_request(&Request::Ping), &[w.as_raw_fd()]);
    drop(w);
    assert_eq!(
        recv(&a),
        Some(Response::Pong {
            version: PROTOCOL_VERSION
        })
    );
    let mut buf = [0u8; 1];
    assert_eq!(
        nix::unistd::read(r.as_raw_fd(), &mut buf).unwrap(),
        0,
        "the helper kept a passed fd open"
    );
    // More than MAX_FDS fds: refused.
    let fds: Vec<RawFd> = vec![r.as_raw_fd(); 5];
    send(&b, &encode_request(&Request::Ping), &fds);
    assert_eq!(error_kind(recv(&b).unwrap()), ErrorKind::Malformed);
    assert_eq!(recv(&b), None);

    // Policy and state refusals are ordinary answers.
    let host_dir = |p: &str| Request::CreateContainer {
        handle: h("c1"),
        rootfs: RootfsSource::HostDir(HostPath::new(p).unwrap()),
        limits: Limits::default(),
        ip: None,
        privileged: false,
        binds: Vec::new(),
    };
    match f.call(&host_dir("/etc")) {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::PolicyRefused);
            assert!(
                e.message.contains("/etc") && e.message.contains(&f.dir.display().to_string()),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    let missing = format!("{}/rootfs/missing", f.dir.display());
    match f.call(&host_dir(&missing)) {
        Response::Error(e) => assert!(e.message.contains(&missing), "{}", e.message),
        other => panic!("{other:?}"),
    }
    // A symlink beneath the allowlisted dir is not followed out of it.
    std::os::unix::fs::symlink("/etc", f.dir.join("rootfs/sneaky")).unwrap();
    let sneaky = format!("{}/rootfs/sneaky", f.dir.display());
    // (The request named it: the fault is the request's.)
    assert_eq!(
        error_kind(f.call(&host_dir(&sneaky))),
        ErrorKind::InvalidValue
    );
    assert_eq!(
        error_kind(f.call(&Request::DestroyContainer { handle: h("nope") })),
        ErrorKind::NotFound
    );
    assert!(!f.dir.join("depot/c1").exists());
    ping_works(&f);
}

#[test]
fn another_uid_is_refused_and_the_helper_keeps_serving() {
    let f = Fixture::new("nobody", false);
    for _ in 0..2 {
        let fd = f.connect();
        match recv(&fd) {
            Some(Response::Error(e)) => {
                assert_eq!(e.kind, ErrorKind::PolicyRefused);
                assert!(
                    e.message
                        .contains("uid 0 is not grove-helper's server uid 65534"),
                    "{}",
                    e.message
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(recv(&fd), None);
    }
    let md = std::fs::metadata(f.socket()).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (0, 65534, 0o660));
}

#[test]
fn bad_policies_stop_the_helper() {
    let dir = PathBuf::from(format!("/tmp/grove-helper-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |policy: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_grove-helper"))
            .arg("--policy")
            .arg(policy)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&dir.join("absent.conf"));
    assert_eq!(code, Some(1));
    assert!(err.contains("absent.conf"), "{err}");
    let p = dir.join("writable.conf");
    std::fs::write(&p, "server_user = \"root\"\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, err) = run(&p);
    assert_eq!(code, Some(1));
    assert!(err.contains("not writable by group or others"), "{err}");
    let p = dir.join("unknown.conf");
    std::fs::write(&p, "server_user = \"root\"\nfrobnicate = \"yes\"\n").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, err) = run(&p);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("line 2") && err.contains("frobnicate"),
        "{err}"
    );
    // A bad value, a key set twice, and the old unquoted `key = value`
    // syntax each stop it with a message naming the key.
    for (name, text, needle) in [
        ("badvalue.conf", "max_containers = 0\n", "max_containers"),
        (
            "twice.conf",
            "server_user = \"root\"\nserver_user = \"grove\"\n",
            "server_user",
        ),
        ("unquoted.conf", "server_user = root\n", "server_user"),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (code, err) = run(&p);
        assert_eq!(code, Some(1), "{name}: {err}");
        assert!(err.contains(needle), "{name}: {err}");
    }
    // wshd runs as root in every container: whoever can write it is root
    // there, so it gets the policy's ownership rule.
    let wshd_policy = |name: &str, wshd: &Path| {
        let p = dir.join(name);
        std::fs::write(
            &p,
            format!(
                "server_user = \"root\"\ncgroup_parent = \"never-made\"\nwshd = \"{}\"\n",
                wshd.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    };
    let w = dir.join("wshd-0666");
    std::fs::copy("/bin/true", &w).unwrap();
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o666)).unwrap();
    let (code, err) = run(&wshd_policy("w1.conf", &w));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(
            "wshd-0666 must be a regular file owned by root and not writable by group or others"
        ) && err.contains("mode 666"),
        "{err}"
    );
    let w = dir.join("wshd-nobody");
    std::fs::copy("/bin/true", &w).unwrap();
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&w, Some(65534), Some(65534)).unwrap();
    let (code, err) = run(&wshd_policy("w2.conf", &w));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("must be a regular file owned by root") && err.contains("uid 65534"),
        "{err}"
    );
    let w = dir.join("wshd-link");
    std::os::unix::fs::symlink("/bin/true", &w).unwrap();
    let (code, err) = run(&wshd_policy("w3.conf", &w));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("wshd-link") && err.contains("ELOOP"), "{err}");
    assert!(
        !Path::new("/sys/fs/cgroup/pids/never-made").exists(),
        "the helper touched the host before checking wshd"
    );
    let (code, err) = {
        let out = Command::new(env!("CARGO_BIN_EXE_grove-helper"))
            .arg("--bogus")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(1));
    assert!(err.contains("usage"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn wshd_log(f: &Fixture, handle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(f.dir.join("depot").join(handle).join("wshd.log"))
            .unwrap_or_default();
        if log.contains('\n') {
            return log;
        }
        assert!(Instant::now() < deadline, "wshd of {handle} wrote nothing");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pid_alive(pid: i32) -> bool {
    // A zombie is not alive for our purposes.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

fn assert_gone(f: &Fixture, handle: &str, pid: i32) {
    assert!(!f.dir.join("depot").join(handle).exists(), "depot dir left");
    assert!(
        !f.dir.join("run").join(format!("{handle}.sock")).exists(),
        "socket left"
    );
    for c in CONTROLLERS {
        assert!(!f.cgroup(c, handle).exists(), "cgroup {c} left");
    }
    assert!(!pid_alive(pid), "wshd {pid} still alive");
}

fn create(f: &Fixture, handle: &str) -> i32 {
    create_with(f, handle, Limits::default())
}

fn create_with(f: &Fixture, handle: &str, limits: Limits) -> i32 {
    match f.call(&Request::CreateContainer {
        handle: h(handle),
        rootfs: RootfsSource::Default,
        limits,
        ip: None,
        privileged: false,
        binds: Vec::new(),
    }) {
        Response::Created { wshd_pid, .. } => wshd_pid,
        other => panic!("create {handle}: {other:?}\n{}", f.log.lock().unwrap()),
    }
}

#[test]
fn create_and_destroy_a_container() {
    let f = Fixture::new("root", true);
    let mounts_before = f.my_mounts();
    let pid = create(&f, "c1");
    assert!(pid > 0);

    let log = wshd_log(&f, "c1");
    for want in [
        "pid=1 ",
        // The server (root here) is not mapped into the container's user
        // namespace: wshd is told the overflow uid it will see.
        "args=[wshd --socket-fd 3 --server-uid 65534]",
        "hostname=c1 ",
        "fd3=socket:",
        "busybox=true",
        "container=grove",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "dev=[fd,full,null,ptmx,pts,random,shm,stderr,stdin,stdout,tty,urandom,zero]",
        // Masked and read-only kernel files, then /dev.
        "mounts=[/,/proc,/sys,/dev,/proc/acpi,/proc/keys,/proc/timer_list,/sys/firmware,\
         /proc/bus,/proc/fs,/proc/irq,/proc/sys,/dev/null,/dev/zero,/dev/full,/dev/random,\
         /dev/urandom,/dev/tty,/dev/pts,/dev/shm]",
        "memory:/;",
    ] {
        assert!(log.contains(want), "wshd log lacks {want:?}:\n{log}");
    }
    assert_eq!(f.my_mounts(), mounts_before, "the host mount table changed");
    let pidfile = std::fs::read_to_string(f.dir.join("depot/c1/wshd.pid")).unwrap();
    assert_eq!(pidfile.trim(), pid.to_string());
    for c in CONTROLLERS {
        let procs = std::fs::read_to_string(f.cgroup(c, "c1").join("cgroup.procs")).unwrap();
        assert!(procs.lines().any(|l| l == pid.to_string()), "{c}: {procs}");
    }
    let sock = std::fs::symlink_metadata(f.dir.join("run/c1.sock")).unwrap();
    assert_eq!((sock.uid(), sock.mode() & 0o777), (0, 0o600));
    let run = std::fs::metadata(f.dir.join("run")).unwrap();
    assert_eq!(run.mode() & 0o777, 0o710);
    let depot = std::fs::metadata(f.dir.join("depot")).unwrap();
    assert_eq!(depot.mode() & 0o777, 0o700);

    // Writes go to the container's upper dir, not the shared rootfs.
    assert!(!f.dir.join("rootfs/busybox/proc").exists());
    assert!(f.dir.join("depot/c1/layer/upper/proc").is_dir());

    assert_eq!(
        error_kind(f.call(&Request::CreateContainer {
            handle: h("c1"),
            rootfs: RootfsSource::Default,
            limits: Limits::default(),
            ip: None,
            privileged: false,
            binds: Vec::new(),
        })),
        ErrorKind::AlreadyExists
    );
    match f.call(&Request::ListContainers) {
        Response::Containers(list) => {
            assert_eq!(list.len(), 1);
            assert_eq!(
                (list[0].handle.as_str(), &list[0].state, list[0].wshd_pid),
                ("c1", &ContainerState::Running, pid)
            );
        }
        other => panic!("{other:?}"),
    }

    // The limit (max_containers = 2 in the test policy).
    let pid2 = create(&f, "c2");
    assert_eq!(
        error_kind(f.call(&Request::CreateContainer {
            handle: h("c3"),
            rootfs: RootfsSource::Default,
            limits: Limits::default(),
            ip: None,
            privileged: false,
            binds: Vec::new(),
        })),
        ErrorKind::LimitExceeded
    );

    assert_eq!(
        f.call(&Request::DestroyContainer { handle: h("c1") }),
        Response::Destroyed
    );
    assert_gone(&f, "c1", pid);
    assert_eq!(
        error_kind(f.call(&Request::DestroyContainer { handle: h("c1") })),
        ErrorKind::NotFound
    );
    assert_eq!(
        f.call(&Request::DestroyContainer { handle: h("c2") }),
        Response::Destroyed
    );
    assert_gone(&f, "c2", pid2);
    assert_eq!(f.my_mounts(), mounts_before);
    assert_eq!(
        f.call(&Request::ListContainers),
        Response::Containers(vec![])
    );
}

#[test]
fn a_failed_create_leaves_nothing_behind() {
    let f = Fixture::new("root", true);
    // A rootfs whose proc is a symlink to a host path: the helper must refuse
    // to mount through it, and roll every step back.
    let bad = f.dir.join("rootfs/bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::os::unix::fs::symlink("/tmp", bad.join("proc")).unwrap();
    let r = f.call(&Request::CreateContainer {
        handle: h("bad1"),
        rootfs: RootfsSource::HostDir(HostPath::new(bad.to_str().unwrap()).unwrap()),
        limits: Limits::default(),
        ip: None,
        privileged: false,
        binds: Vec::new(),
    });
    match r {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::System);
            assert!(e.message.contains("proc"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert_gone(&f, "bad1", 0);
    assert_eq!(
        f.call(&Request::ListContainers),
        Response::Containers(vec![])
    );
    // And the same handle works afterwards.
    let pid = create(&f, "bad1");
    assert_eq!(
        f.call(&Request::DestroyContainer { handle: h("bad1") }),
        Response::Destroyed
    );
    assert_gone(&f, "bad1", pid);
}

#[test]
fn a_restarted_helper_recovers_its_containers() {
    let mut f = Fixture::new("root", true);
    let pid1 = create(&f, "r1");
    let pid2 = create(&f, "r2");
    wshd_log(&f, "r1");
    let status = f.stop_helper(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
    assert!(!f.socket().exists(), "SIGTERM must remove the socket");
    assert!(
        pid_alive(pid1) && pid_alive(pid2),
        "containers must survive the helper"
    );

    // SAFETY: r2's wshd was started by this test's helper; kill it
    // so the new helper finds r2 Stopped.
    unsafe { libc::kill(pid2, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid2) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    f.start();
    match f.call(&Request::ListContainers) {
        Response::Containers(list) => {
            let states: Vec<(&str, ContainerState, i32)> = list
                .iter()
                .map(|c| (c.handle.as_str(), c.state.clone(), c.wshd_pid))
                .collect();
            assert_eq!(
                states,
                vec![
                    ("r1", ContainerState::Running, pid1),
                    ("r2", ContainerState::Stopped, 0)
                ]
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        f.call(&Request::DestroyContainer { handle: h("r1") }),
        Response::Destroyed
    );
    assert_gone(&f, "r1", pid1);
    assert_eq!(
        f.call(&Request::DestroyContainer { handle: h("r2") }),
        Response::Destroyed
    );
    assert_gone(&f, "r2", pid2);
}

#[test]
fn a_wshd_that_dies_leaves_its_container_stopped() {
    let f = Fixture::new("root", true);
    let pid = create(&f, "s1");
    wshd_log(&f, "s1");
    // SAFETY: this wshd was started by this test's helper.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f.call(&Request::ListContainers) {
            Response::Containers(list) if list[0].state == ContainerState::Stopped => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "s1 never became Stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        f.call(&Request::DestroyContainer { handle: h("s1") }),
        Response::Destroyed
    );
    assert_gone(&f, "s1", pid);
}

#[test]
fn refused_peers_cannot_crowd_out_the_server() {
    let f = Fixture::new("root", false);
    // 40 connections whose SO_PEERCRED says uid 65534 (a member of the
    // socket's group that is not the server uid): a forked child connects
    // them after setuid and exits; we keep the connected sockets open and
    // never read, so every one of them wants to linger.
    let socks: Vec<OwnedFd> = (0..40)
        .map(|_| {
            socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .unwrap()
        })
        .collect();
    let addr = UnixAddr::new(&f.socket()).unwrap();
    let raw: Vec<RawFd> = socks.iter().map(|s| s.as_raw_fd()).collect();
    // SAFETY: after fork the child only makes raw syscalls (setuid,
    // connect, _exit) on memory prepared before the fork: no allocation,
    // no locks.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => unsafe {
            // Keep gid 0 (the socket's group here) and drop the uid.
            if libc::syscall(libc::SYS_setuid, 65534) != 0 {
                libc::_exit(2);
            }
            for fd in &raw {
                use nix::sys::socket::SockaddrLike;
                if libc::connect(*fd, addr.as_ptr().cast(), addr.len()) != 0 {
                    libc::_exit(3);
                }
            }
            libc::_exit(0);
        },
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
    // Our own connection queues behind all 40: by the time the helper
    // accepts it, it has refused them all, and must still serve us.
    for _ in 0..3 {
        ping_works(&f);
    }
    // The refusals reach the log through a reader thread of this test,
    // which a loaded machine may run late: wait for them (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let log = loop {
        let log = f.log.lock().unwrap().clone();
        if log.contains("uid=65534 refused") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(log.contains("uid=65534 refused"), "{log}");
    assert!(!log.contains("connections are open"), "{log}");
    drop(socks);
}

#[test]
fn destroy_kills_and_removes_nested_cgroups() {
    let f = Fixture::new("root", true);
    let pid = create(&f, "n1");
    wshd_log(&f, "n1");
    // What container root could do after mounting cgroupfs in its cgroup
    // namespace: nested cgroups below its own, a process in the deepest,
    // and a frozen nested freezer cgroup.
    // Thawed, killed and reaped however the test ends (a frozen task
    // ignores SIGKILL until thawed).
    struct Sleeper(Child, PathBuf);
    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = std::fs::write(&self.1, "THAWED");
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut sleeper = Sleeper(
        Command::new("sleep")
            .arg("1000")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        f.cgroup("freezer", "n1").join("a/b/c/freezer.state"),
    );
    for c in ["pids", "memory", "freezer"] {
        let deep = f.cgroup(c, "n1").join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::create_dir_all(f.cgroup(c, "n1").join("a/sibling")).unwrap();
        std::fs::write(deep.join("cgroup.procs"), sleeper.0.id().to_string()).unwrap();
    }
    std::fs::write(
        f.cgroup("freezer", "n1").join("a/b/c/freezer.state"),
        "FROZEN",
    )
    .unwrap();
    assert_eq!(
        f.call(&Request::DestroyContainer { handle: h("n1") }),
        Response::Destroyed,
        "{}",
        f.log.lock().unwrap()
    );
    let status = sleeper.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert_gone(&f, "n1", pid);
}

/// The next response and the fds attached to it.
fn recv_fds(fd: &OwnedFd) -> (Response, Vec<OwnedFd>) {
    use std::os::fd::FromRawFd;
    let mut buf = vec![0u8; 256 * 1024];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 8]);
    let msg = nix::sys::socket::recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    let mut fds = Vec::new();
    for c in msg.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(r) = c {
            // SAFETY: the kernel just installed these fds for us.
            fds.extend(r.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
        }
    }
    let n = msg.bytes;
    (decode_response(&buf[..n]).unwrap(), fds)
}

fn read_cg(f: &Fixture, ctl: &str, handle: &str, file: &str) -> String {
    std::fs::read_to_string(f.cgroup(ctl, handle).join(file))
        .unwrap()
        .trim()
        .to_string()
}

/// The v1 files behind the limits of `handle`.
fn v1_limits(f: &Fixture, handle: &str) -> [String; 6] {
    [
        read_cg(f, "memory", handle, "memory.limit_in_bytes"),
        read_cg(f, "cpu", handle, "cpu.shares"),
        read_cg(f, "cpu", handle, "cpu.cfs_quota_us"),
        read_cg(f, "cpu", handle, "cpu.cfs_period_us"),
        read_cg(f, "pids", handle, "pids.max"),
        read_cg(f, "cpuset", handle, "cpuset.cpus"),
    ]
}

/// A host process that waits for a line on stdin, then runs `script`
/// (python); the test moves it into cgroups in between. Killed on drop.
struct Probe(Child);

impl Probe {
    fn new(script: &str) -> Probe {
        let code = format!("import sys, os\nsys.stdin.readline()\n{script}");
        Probe(
            Command::new("/usr/bin/python3")
                .args(["-c", &code])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    fn enter(&self, f: &Fixture, handle: &str, ctls: &[&str]) {
        for c in ctls {
            std::fs::write(
                f.cgroup(c, handle).join("cgroup.procs"),
                self.0.id().to_string(),
            )
            .unwrap();
        }
    }

    fn go(mut self) -> (Option<i32>, String) {
        use std::io::{Read, Write};
        self.0.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut out = String::new();
        self.0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let status = self.0.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        (status.signal(), out)
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const MIB: u64 = 1 << 20;

#[test]
fn limits_are_applied_at_create_changed_and_read_back() {
    let f = Fixture::new("root", true);
    let limits = Limits {
        memory_bytes: Some(64 * MIB),
        cpu_shares: Some(512),
        cpu_quota: Some(CpuQuota {
            period_us: 100_000,
            quota_us: 50_000,
        }),
        pids_max: Some(50),
        cpuset: Some("0".into()),
        disk: None,
        bandwidth: None,
    };
    let pid = create_with(&f, "l1", limits.clone());
    wshd_log(&f, "l1");
    assert_eq!(
        v1_limits(&f, "l1"),
        ["67108864", "512", "50000", "100000", "50", "0"].map(String::from)
    );
    assert_eq!(
        f.call(&Request::GetLimits { handle: h("l1") }),
        Response::Limits(limits.clone())
    );

    // The device allowlist, exactly.
    let mut list: Vec<String> =
        std::fs::read_to_string(f.cgroup("devices", "l1").join("devices.list"))
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
    list.sort();
    let mut want = vec![
        "c 1:3 rwm",
        "c 1:5 rwm",
        "c 1:7 rwm",
        "c 1:8 rwm",
        "c 1:9 rwm",
        "c 5:0 rwm",
        "c 5:2 rwm",
        "c 136:* rwm",
    ];
    want.sort();
    assert_eq!(list, want);
    // A process in the container's devices cgroup may open /dev/null but
    // neither another device nor a device node it makes.
    let probe = Probe::new(
        "def t(f):\n    try:\n        f()\n        return 'ok'\n    except OSError as e:\n        return str(e.errno)\n\
         print(t(lambda: os.close(os.open('/dev/null', os.O_RDWR))), t(lambda: os.close(os.open('/dev/kmsg', os.O_RDONLY))), \
         t(lambda: os.mknod('/tmp/grove-helper-mknod-%d' % os.getpid(), 0o600 | 0o020000, os.makedev(1, 11))), flush=True)\n",
    );
    probe.enter(&f, "l1", &["devices"]);
    let (_, out) = probe.go();
    assert_eq!(out.trim(), format!("ok {} {}", libc::EPERM, libc::EPERM));

    // SetLimits changes them.
    let new = Limits {
        memory_bytes: Some(128 * MIB),
        cpu_shares: Some(1024),
        cpu_quota: Some(CpuQuota {
            period_us: 200_000,
            quota_us: u64::MAX,
        }),
        pids_max: Some(100),
        cpuset: Some("0-1".into()),
        disk: None,
        bandwidth: None,
    };
    assert_eq!(
        f.call(&Request::SetLimits {
            handle: h("l1"),
            limits: new
        }),
        Response::LimitsSet
    );
    assert_eq!(
        v1_limits(&f, "l1"),
        ["134217728", "1024", "-1", "200000", "100", "0-1"].map(String::from)
    );
    match f.call(&Request::GetLimits { handle: h("l1") }) {
        Response::Limits(l) => {
            assert_eq!(l.cpu_quota, None, "quota -1 is no quota");
            assert_eq!((l.memory_bytes, l.pids_max), (Some(128 * MIB), Some(100)));
        }
        other => panic!("{other:?}"),
    }

    // A bad field refuses the whole request: the memory change is not applied.
    let before = v1_limits(&f, "l1");
    match f.call(&Request::SetLimits {
        handle: h("l1"),
        limits: Limits {
            memory_bytes: Some(256 * MIB),
            cpu_shares: Some(1),
            ..Limits::default()
        },
    }) {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::InvalidValue);
            assert!(
                e.message.contains("cpu_shares 1") && e.message.contains("2..=262144"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(v1_limits(&f, "l1"), before);
    for bad in [
        Limits {
            memory_bytes: Some(0),
            ..Limits::default()
        },
        Limits {
            pids_max: Some(0),
            ..Limits::default()
        },
        Limits {
            cpuset: Some("0-63".into()),
            ..Limits::default()
        },
        Limits {
            cpu_quota: Some(CpuQuota {
                period_us: 100,
                quota_us: 1000,
            }),
            ..Limits::default()
        },
    ] {
        assert_eq!(
            error_kind(f.call(&Request::SetLimits {
                handle: h("l1"),
                limits: bad.clone()
            })),
            ErrorKind::InvalidValue,
            "{bad:?}"
        );
        assert_eq!(v1_limits(&f, "l1"), before);
    }

    // A limit below current usage: two processes, pids_max 1.
    let probe = Probe::new("");
    probe.enter(&f, "l1", &["pids"]);
    let current: u64 = read_cg(&f, "pids", "l1", "pids.current").parse().unwrap();
    assert!(current >= 2, "{current}");
    match f.call(&Request::SetLimits {
        handle: h("l1"),
        limits: Limits {
            pids_max: Some(1),
            ..Limits::default()
        },
    }) {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::InvalidState);
            assert!(
                e.message
                    .contains(&format!("below current usage {current}")),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    drop(probe);
    assert_eq!(v1_limits(&f, "l1"), before);

    // Stats.
    match f.call(&Request::GetStats { handle: h("l1") }) {
        Response::Stats(s) => {
            assert!(s.pids_current >= 1, "{s:?}");
            assert_eq!(s.pids_max, Some(100));
            assert!(s.memory_usage_bytes > 0, "{s:?}");
            assert!(s.memory_stat.iter().any(|(k, _)| k == "rss"), "{s:?}");
            assert!(s.cpu_usage_ns > 0, "{s:?}");
            assert!(
                s.cpu_user_ns + s.cpu_system_ns <= s.cpu_usage_ns + 100_000_000,
                "{s:?}"
            );
            assert_eq!(s.oom_kills, 0);
        }
        other => panic!("{other:?}"),
    }

    // Unknown handles.
    for r in [
        Request::GetLimits { handle: h("nope") },
        Request::SetLimits {
            handle: h("nope"),
            limits: Limits::default(),
        },
        Request::GetStats { handle: h("nope") },
        Request::WatchOom { handle: h("nope") },
    ] {
        assert_eq!(error_kind(f.call(&r)), ErrorKind::NotFound, "{r:?}");
    }

    assert_eq!(
        f.call(&Request::DestroyContainer { handle: h("l1") }),
        Response::Destroyed
    );
    assert_gone(&f, "l1", pid);
}

#[test]
fn the_oom_watch_fires_on_an_oom_kill() {
    let f = Fixture::new("root", true);
    let pid = create_with(
        &f,
        "o1",
        Limits {
            memory_bytes: Some(32 * MIB),
            ..Limits::default()
        },
    );
    wshd_log(&f, "o1");
    let conn = f.connect();
    send(
        &conn,
        &encode_request(&Request::WatchOom { handle: h("o1") }),
        &[],
    );
    let (response, fds) = recv_fds(&conn);
    assert_eq!(response, Response::OomWatch);
    assert_eq!(fds.len(), 1, "exactly one fd");
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fds[0].as_raw_fd())).unwrap();
    assert_eq!(link.to_string_lossy(), "anon_inode:[eventfd]");
    let ready = |ms: u16| {
        let mut p = [nix::poll::PollFd::new(
            fds[0].as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut p, nix::poll::PollTimeout::from(ms)).unwrap() == 1
    };
    assert!(!ready(0), "readable before any OOM");

    // A process in the container's memory cgroup that wants 256 MiB.
    let probe = Probe::new("b = bytearray(256 << 20)\nprint('survived', flush=True)\n");
    probe.enter(&f, "o1", &["memory"]);
    let (signal, out) = probe.go();
    assert_eq!(signal, Some(libc::SIGKILL), "{out}");
    assert!(ready(10_000), "the OOM watch did not fire");
    let mut count = [0u8; 8];
    assert_eq!(
        nix::unistd::read(fds[0].as_raw_fd(), &mut count).unwrap(),
        8
    );
    assert!(u64::from_ne_bytes(count) >= 1);
    match f.call(&Request::GetStats { handle: h("o1") }) {
        Response::Stats(s) => assert!(s.oom_kills >= 1, "{s:?}"),
        other => panic!("{other:?}"),
    }
    assert!(pid_alive(pid), "wshd itself was not the victim");
    assert_eq!(
        f.call(&Request::DestroyContainer { handle: h("o1") }),
        Response::Destroyed
    );
    assert_gone(&f, "o1", pid);
}

#[test]
fn a_bad_limit_fails_the_create_and_leaves_nothing() {
    let f = Fixture::new("root", true);
    for (limits, kind) in [
        (
            Limits {
                cpu_shares: Some(1),
                ..Limits::default()
            },
            ErrorKind::InvalidValue,
        ),
        // Valid on its own; refused once the parent's cpuset is read, with
        // the cgroups already made: the rollback removes them.
        (
            Limits {
                memory_bytes: Some(64 * MIB),
                cpuset: Some("4095".into()),
                ..Limits::default()
            },
            ErrorKind::InvalidValue,
        ),
    ] {
        let r = f.call(&Request::CreateContainer {
            handle: h("b1"),
            rootfs: RootfsSource::Default,
            limits: limits.clone(),
            ip: None,
            privileged: false,
            binds: Vec::new(),
        });
        assert_eq!(error_kind(r), kind, "{limits:?}");
        assert_gone(&f, "b1", 0);
        assert_eq!(
            f.call(&Request::ListContainers),
            Response::Containers(vec![])
        );
    }
    // Stopped containers: limits read, not set; no OOM watch.
    let pid = create(&f, "b1");
    wshd_log(&f, "b1");
    // SAFETY: this wshd was started by this test's helper.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f.call(&Request::ListContainers) {
            Response::Containers(list) if list[0].state == ContainerState::Stopped => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "b1 never became Stopped");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(matches!(
        f.call(&Request::GetLimits { handle: h("b1") }),
        Response::Limits(_)
    ));
    assert_eq!(
        error_kind(f.call(&Request::SetLimits {
            handle: h("b1"),
            limits: Limits::default()
        })),
        ErrorKind::InvalidState
    );
    assert_eq!(
        error_kind(f.call(&Request::WatchOom { handle: h("b1") })),
        ErrorKind::InvalidState
    );
    assert_eq!(
        f.call(&Request::DestroyContainer { handle: h("b1") }),
        Response::Destroyed
    );
}

/// Write `mib` MiB of zeros to `path` (fsync'd); the errno of the first
/// failed write, with the bytes written before it.
fn write_mib(path: &Path, mib: u64) -> (Option<i32>, u64) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; MIB as usize];
    let mut written = 0;
    for _ in 0..mib {
        if let Err(e) = file.write_all(&chunk) {
            return (e.raw_os_error(), written);
        }
        written += MIB;
    }
    match file.sync_all() {
        Err(e) => (e.raw_os_error(), written),
        Ok(()) => (None, written),
    }
}

fn btrfs_cmd(args: &[&str]) -> String {
    let out = Command::new("btrfs").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "btrfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn disk_limit_of(f: &Fixture, handle: &str) -> Option<DiskLimit> {
    match f.call(&Request::GetLimits { handle: h(handle) }) {
        Response::Limits(l) => l.disk,
        other => panic!("{other:?}"),
    }
}

#[test]
fn disk_limits_are_btrfs_qgroups_on_a_subvolume_per_container() {
    let f = Fixture::with_depot("root", true, true);
    assert!(
        f.log.lock().unwrap().contains("with quotas"),
        "{}",
        f.log.lock().unwrap()
    );
    let depot = f.dir.join("depot");
    let d = depot.to_str().unwrap();
    let limit = |bytes, scope| DiskLimit {
        bytes,
        inodes: 0,
        scope,
    };
    let pid = create_with(
        &f,
        "d1",
        Limits {
            disk: Some(limit(50 * MIB, DiskScope::Total)),
            ..Limits::default()
        },
    );
    wshd_log(&f, "d1");
    // The writable layer is a subvolume's root, and the limit is its qgroup's.
    let layer = depot.join("d1/layer");
    assert_eq!(std::fs::metadata(&layer).unwrap().ino(), 256);
    assert!(btrfs_cmd(&["subvolume", "list", d]).contains("path d1/layer"));
    assert_eq!(
        disk_limit_of(&f, "d1"),
        Some(limit(50 * MIB, DiskScope::Total))
    );

    // The kernel refuses writes past the limit, to root on the host too.
    let (errno, written) = write_mib(&layer.join("upper/big"), 100);
    assert_eq!(errno, Some(libc::EDQUOT), "wrote {written} bytes");
    assert!(
        (40 * MIB..=50 * MIB).contains(&written),
        "{written} bytes got through a 50 MiB limit"
    );
    btrfs_cmd(&["filesystem", "sync", d]);
    match f.call(&Request::GetStats { handle: h("d1") }) {
        Response::Stats(s) => {
            let u = s.disk.expect("disk usage on btrfs");
            assert!(u.exclusive_bytes >= written, "{u:?}");
            assert!(u.referenced_bytes <= 51 * MIB, "{u:?}");
        }
        other => panic!("{other:?}"),
    }

    // Raised, in the other scope: the bigger write goes through.
    assert_eq!(
        f.call(&Request::SetLimits {
            handle: h("d1"),
            limits: Limits {
                disk: Some(limit(300 * MIB, DiskScope::Exclusive)),
                ..Limits::default()
            },
        }),
        Response::LimitsSet
    );
    assert_eq!(
        disk_limit_of(&f, "d1"),
        Some(limit(300 * MIB, DiskScope::Exclusive))
    );
    assert_eq!(write_mib(&layer.join("upper/big"), 100), (None, 100 * MIB));

    // All or nothing: a bad cgroup value leaves the disk limit as it was.
    for bad in [
        Limits {
            disk: Some(limit(10 * MIB, DiskScope::Total)),
            cpuset: Some("0-8000".into()),
            ..Limits::default()
        },
        Limits {
            disk: Some(limit(1, DiskScope::Total)),
            ..Limits::default()
        },
    ] {
        assert_eq!(
            error_kind(f.call(&Request::SetLimits {
                handle: h("d1"),
                limits: bad
            })),
            ErrorKind::InvalidValue
        );
        assert_eq!(
            disk_limit_of(&f, "d1"),
            Some(limit(300 * MIB, DiskScope::Exclusive))
        );
    }

    // A create that fails after the subvolume was made leaves none behind.
    let bad = f.dir.join("rootfs/bad");
    std::fs::create_dir_all(&bad).unwrap();
    std::os::unix::fs::symlink("/tmp", bad.join("proc")).unwrap();
    let r = f.call(&Request::CreateContainer {
        handle: h("bad1"),
        rootfs: RootfsSource::HostDir(HostPath::new(bad.to_str().unwrap()).unwrap()),
        limits: Limits {
            disk: Some(limit(20 * MIB, DiskScope::Total)),
            ..Limits::default()
        },
        ip: None,
        privileged: false,
        binds: Vec::new(),
    });
    assert!(matches!(r, Response::Error(_)), "{r:?}");
    assert!(!depot.join("bad1").exists());
    assert!(!btrfs_cmd(&["subvolume", "list", d]).contains("bad1"));

    // Destroy deletes the subvolume; the kernel drops its qgroup once the
    // subvolume is cleaned up.
    let id = btrfs_cmd(&["inspect-internal", "rootid", layer.to_str().unwrap()]);
    let id = id.trim().to_string();
    assert_eq!(
        f.call(&Request::DestroyContainer { handle: h("d1") }),
        Response::Destroyed
    );
    assert_gone(&f, "d1", pid);
    assert!(!btrfs_cmd(&["subvolume", "list", d]).contains("d1"));
    btrfs_cmd(&["subvolume", "sync", d]);
    let qgroups = btrfs_cmd(&["qgroup", "show", d]);
    assert!(
        !qgroups.lines().any(|l| l.starts_with(&format!("0/{id} "))),
        "qgroup 0/{id} left:\n{qgroups}"
    );
}

#[test]
fn disk_limits_without_quotas_are_refused_with_the_reason() {
    // The fixture's depot is under /tmp: no btrfs, and no project quotas
    // (ext4 or tmpfs without them, here and in the guest).
    let f = Fixture::new("root", true);
    assert!(
        f.log
            .lock()
            .unwrap()
            .contains("disk limits are unavailable")
            && f.log.lock().unwrap().contains("prjquota"),
        "{}",
        f.log.lock().unwrap()
    );
    match f.call(&Request::CreateContainer {
        handle: h("n1"),
        rootfs: RootfsSource::Default,
        limits: Limits {
            disk: Some(DiskLimit {
                bytes: 50 * MIB,
                inodes: 0,
                scope: DiskScope::Exclusive,
            }),
            ..Limits::default()
        },
        ip: None,
        privileged: false,
        binds: Vec::new(),
    }) {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::PolicyRefused);
            assert!(
                e.message.contains("disk limits are unavailable") && e.message.contains("prjquota"),
                "{}",
                e.message
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(!f.dir.join("depot/n1").exists());
    // Without a limit the container works, on a plain layer directory, and
    // reports no disk figures rather than made-up ones.
    let pid = create(&f, "n1");
    assert!(f.dir.join("depot/n1/layer/upper").is_dir());
    assert_eq!(disk_limit_of(&f, "n1"), None);
    match f.call(&Request::GetStats { handle: h("n1") }) {
        Response::Stats(s) => assert_eq!(s.disk, None),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        error_kind(f.call(&Request::SetLimits {
            handle: h("n1"),
            limits: Limits {
                disk: Some(DiskLimit {
                    bytes: 50 * MIB,
                    inodes: 0,
                    scope: DiskScope::Total,
                }),
                ..Limits::default()
            },
        })),
        ErrorKind::PolicyRefused
    );
    assert_eq!(
        f.call(&Request::DestroyContainer { handle: h("n1") }),
        Response::Destroyed
    );
    assert_gone(&f, "n1", pid);
}
