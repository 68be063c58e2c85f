//! A compromised groved: this test talks to the helper as the `grove` uid
//! (the only uid the helper serves), with crafted requests the typed API
//! would never build (raw postcard bytes), abusive datagrams and control
//! messages, and requests in the wrong state. Each must be refused with the
//! right error kind, the helper must keep serving (a Ping answers on a new
//! connection), and the host must not change: its mount table, links,
//! nftables ruleset (the env's own table only as the accepted requests
//! explain), the depot, and the files of / and /etc a request could aim at.

use grove_schema::helper::{
    decode_response, encode_request, Envelope, ErrorKind, HelperError, Limits, Request, Response,
    RootfsSource, MAX_DATAGRAM, MAX_RESPONSE, PROTOCOL_VERSION,
};
use grove_schema::net::{IcmpMatch, Protocol};
use grove_schema::Handle;
use grove_tests::*;
use serde::Serialize;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

// ------------------------------------------------------------ raw requests

/// `Request` with every validated field as its raw form, variant for
/// variant in the same order, so postcard encodes both alike (checked in
/// `the_raw_mirror_encodes_like_the_schema`).
#[allow(dead_code)]
#[derive(Serialize, Clone)]
enum Raw {
    Ping,
    CreateContainer {
        handle: String,
        rootfs: RawRootfs,
        limits: Limits,
        ip: Option<Ipv4Addr>,
        privileged: bool,
        /// Always empty here (an empty list encodes alike for any type).
        binds: Vec<u8>,
    },
    DestroyContainer {
        handle: String,
    },
    ListContainers,
    SetLimits {
        handle: String,
        limits: Limits,
    },
    GetLimits {
        handle: String,
    },
    GetStats {
        handle: String,
    },
    WatchOom {
        handle: String,
    },
    NetIn {
        handle: String,
        host_port: u16,
        container_port: u16,
    },
    NetOut {
        handle: String,
        rules: Vec<RawRule>,
    },
    GetNetwork {
        handle: String,
    },
}

#[allow(dead_code)]
#[derive(Serialize, Clone)]
enum RawRootfs {
    Default,
    HostDir(String),
    OciLayout { dir: String, tag: String },
    DockerArchive { path: String },
}

#[derive(Serialize, Clone)]
struct RawRule {
    protocol: Protocol,
    networks: Vec<(Ipv4Addr, Ipv4Addr)>,
    ports: Vec<(u16, u16)>,
    icmp: Option<IcmpMatch>,
    log: bool,
}

fn raw(body: &Raw) -> Vec<u8> {
    raw_version(PROTOCOL_VERSION, body)
}

fn raw_version(version: u16, body: &Raw) -> Vec<u8> {
    postcard::to_allocvec(&Envelope { version, body }).unwrap()
}

fn create_raw(handle: &str, rootfs: RawRootfs, ip: Option<Ipv4Addr>) -> Raw {
    Raw::CreateContainer {
        handle: handle.into(),
        rootfs,
        limits: Limits::default(),
        ip,
        privileged: false,
        binds: Vec::new(),
    }
}

fn rule(protocol: Protocol) -> RawRule {
    RawRule {
        protocol,
        networks: vec![],
        ports: vec![],
        icmp: None,
        log: false,
    }
}

fn net_out(handle: &str, rules: Vec<RawRule>) -> Raw {
    Raw::NetOut {
        handle: handle.into(),
        rules,
    }
}

// ------------------------------------------------------------ connection

/// A connection to the helper as the `grove` uid.
struct Conn(OwnedFd);

impl Conn {
    fn open(env: &TestEnv) -> Conn {
        let (uid, gid) = grove_user();
        Conn(helper_connect_as(&env.helper_socket, uid, gid).expect("connecting as grove"))
    }

    fn send(&self, bytes: &[u8]) -> nix::Result<usize> {
        self.send_with(bytes, &[], None)
    }

    /// sendmsg with `fds` in one SCM_RIGHTS message and/or an
    /// SCM_CREDENTIALS message.
    fn send_with(
        &self,
        bytes: &[u8],
        fds: &[RawFd],
        creds: Option<nix::sys::socket::UnixCredentials>,
    ) -> nix::Result<usize> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let iov = [std::io::IoSlice::new(bytes)];
        let mut cmsgs = Vec::new();
        if !fds.is_empty() {
            cmsgs.push(ControlMessage::ScmRights(fds));
        }
        if let Some(c) = &creds {
            cmsgs.push(ControlMessage::ScmCredentials(c));
        }
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &iov,
            &cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
    }

    /// The next datagram, None when the helper hung up (or 10 s passed).
    fn recv(&self) -> Option<Vec<u8>> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(10_000u16)) {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
        let mut buf = vec![0u8; MAX_RESPONSE];
        match nix::sys::socket::recv(
            self.0.as_raw_fd(),
            &mut buf,
            nix::sys::socket::MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                buf.truncate(n);
                Some(buf)
            }
        }
    }

    fn answer(&self) -> Response {
        let bytes = self.recv().expect("the helper answers");
        decode_response(&bytes).expect("a decodable answer")
    }

    fn ask(&self, bytes: &[u8]) -> Response {
        self.send(bytes).expect("send");
        self.answer()
    }

    fn ask_typed(&self, request: &Request) -> Response {
        self.ask(&encode_request(request))
    }

    /// True once the helper has closed this connection.
    fn is_closed(&self) -> bool {
        // Drain whatever is left; a hang-up reads as None.
        for _ in 0..8 {
            if self.recv().is_none() {
                return true;
            }
        }
        false
    }
}

fn error_of(response: Response, what: &str) -> HelperError {
    match response {
        Response::Error(e) => e,
        other => panic!("{what}: accepted with {other:?}, must be refused"),
    }
}

/// The response is an error of `kind` whose message contains `needle`
/// ("" = any message, but one).
fn expect_error(response: Response, kind: ErrorKind, what: &str, needle: &str) -> HelperError {
    let e = error_of(response, what);
    assert_eq!(e.kind, kind, "{what}: {e}");
    assert!(!e.message.is_empty(), "{what}: an error without a message");
    assert!(
        e.message.contains(needle),
        "{what}: {e} (expected {needle:?})"
    );
    println!("refused {what}: {e}");
    e
}

/// A new connection answers Ping.
fn assert_serving(env: &TestEnv) {
    let conn = Conn::open(env);
    match conn.ask_typed(&Request::Ping) {
        Response::Pong { version } => assert_eq!(version, PROTOCOL_VERSION),
        other => panic!("Ping after abuse: {other:?}\n{}", env.logs()),
    }
}

fn list(conn: &Conn) -> Vec<(String, grove_schema::helper::ContainerState, i32)> {
    match conn.ask_typed(&Request::ListContainers) {
        Response::Containers(c) => c
            .into_iter()
            .map(|s| (s.handle.as_str().to_string(), s.state, s.wshd_pid))
            .collect(),
        other => panic!("ListContainers: {other:?}"),
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Everything a test compares before and after: the host and the env's
/// own network and depot.
struct Before {
    host: HostSnapshot,
    ports: Vec<String>,
    table: Option<String>,
    depot: Vec<String>,
}

impl Before {
    fn take(env: &TestEnv) -> Before {
        Before {
            host: HostSnapshot::take(),
            ports: env.bridge_ports(),
            table: env.nft_table_text(),
            depot: tree_names(&env.depot),
        }
    }

    fn assert_unchanged(&self, env: &TestEnv, what: &str) {
        let mut changes = HostSnapshot::take().changes_since(&self.host);
        if env.bridge_ports() != self.ports {
            changes.push(format!(
                "bridge ports {:?} -> {:?}",
                self.ports,
                env.bridge_ports()
            ));
        }
        if env.nft_table_text() != self.table {
            changes.push(format!(
                "the env's nft table changed:\n{:?}\n->\n{:?}",
                self.table,
                env.nft_table_text()
            ));
        }
        let depot = tree_names(&env.depot);
        if depot != self.depot {
            changes.push(format!("depot {:?} -> {depot:?}", self.depot));
        }
        assert!(
            changes.is_empty(),
            "{what} changed the host:\n{}\n{}",
            changes.join("\n"),
            env.logs()
        );
    }
}

// ------------------------------------------------------------ tests

#[test]
fn the_raw_mirror_encodes_like_the_schema() {
    assert_eq!(raw(&Raw::Ping), encode_request(&Request::Ping));
    let typed = Request::CreateContainer {
        handle: Handle::new("mirror").unwrap(),
        rootfs: RootfsSource::HostDir(
            grove_schema::helper::HostPath::new("/var/lib/grove/rootfs/busybox").unwrap(),
        ),
        limits: Limits {
            memory_bytes: Some(1 << 30),
            ..Limits::default()
        },
        ip: Some(Ipv4Addr::new(10, 1, 2, 3)),
        privileged: true,
        binds: Vec::new(),
    };
    let mirrored = Raw::CreateContainer {
        handle: "mirror".into(),
        rootfs: RawRootfs::HostDir("/var/lib/grove/rootfs/busybox".into()),
        limits: Limits {
            memory_bytes: Some(1 << 30),
            ..Limits::default()
        },
        ip: Some(Ipv4Addr::new(10, 1, 2, 3)),
        privileged: true,
        binds: Vec::new(),
    };
    assert_eq!(raw(&mirrored), encode_request(&typed));
    let typed = Request::NetOut {
        handle: Handle::new("m").unwrap(),
        rules: vec![grove_schema::net::NetOutRule::new(
            Protocol::Tcp,
            vec![grove_schema::net::IpRange::new(
                Ipv4Addr::new(1, 2, 3, 4),
                Ipv4Addr::new(1, 2, 3, 9),
            )
            .unwrap()],
            vec![grove_schema::net::PortRange::new(80, 443).unwrap()],
            None,
            true,
        )
        .unwrap()],
    };
    let mirrored = net_out(
        "m",
        vec![RawRule {
            protocol: Protocol::Tcp,
            networks: vec![(Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(1, 2, 3, 9))],
            ports: vec![(80, 443)],
            icmp: None,
            log: true,
        }],
    );
    assert_eq!(raw(&mirrored), encode_request(&typed));
}

/// Everything that must not decode: each ends its connection (a protocol
/// violation) after one error of the right kind.
#[test]
fn undecodable_requests_are_refused_and_end_the_connection() {
    let env = TestEnv::start();
    let before = Before::take(&env);
    let handle = |h: &str| Raw::DestroyContainer { handle: h.into() };
    let host_dir = |p: &str| raw(&create_raw("ok", RawRootfs::HostDir(p.into()), None));
    let mut cases: Vec<(String, Vec<u8>, ErrorKind)> = Vec::new();
    let mut add = |what: &str, bytes: Vec<u8>, kind: ErrorKind| {
        cases.push((what.to_string(), bytes, kind));
    };
    use ErrorKind::{Malformed, UnsupportedVersion};
    for h in [
        "../x",
        "..",
        "a/b",
        "/etc",
        "",
        ".hidden",
        "-rf",
        "a\0b",
        "caf\u{e9}",
        "a b",
        &"a".repeat(65),
    ] {
        add(&format!("Destroy handle {h:?}"), raw(&handle(h)), Malformed);
    }
    add(
        "GetStats handle ../../etc",
        raw(&Raw::GetStats {
            handle: "../../etc".into(),
        }),
        Malformed,
    );
    add(
        "NetIn handle ..",
        raw(&Raw::NetIn {
            handle: "..".into(),
            host_port: 1,
            container_port: 1,
        }),
        Malformed,
    );
    add(
        "Create handle ../../../tmp/x",
        raw(&create_raw("../../../tmp/x", RawRootfs::Default, None)),
        Malformed,
    );
    for p in [
        "relative/dir",
        "/var/lib/grove/rootfs/../../../etc",
        "/var/lib/grove/rootfs/./busybox",
        "/var/lib/grove//rootfs/busybox",
        "/var/lib/grove/rootfs/busybox/..",
        "/x\0/etc",
        "",
    ] {
        add(&format!("HostDir {p:?}"), host_dir(p), Malformed);
    }
    add(
        "HostDir of 1100 bytes",
        host_dir(&format!("/{}", "a/".repeat(550))),
        Malformed,
    );
    add(
        "OciLayout tag ../x",
        raw(&create_raw(
            "ok",
            RawRootfs::OciLayout {
                dir: env.images_dir().display().to_string(),
                tag: "../x".into(),
            },
            None,
        )),
        Malformed,
    );
    add(
        "OciLayout dir with ..",
        raw(&create_raw(
            "ok",
            RawRootfs::OciLayout {
                dir: format!("{}/../../../etc", env.images_dir().display()),
                tag: "latest".into(),
            },
            None,
        )),
        Malformed,
    );
    add(
        "DockerArchive path with ..",
        raw(&create_raw(
            "ok",
            RawRootfs::DockerArchive {
                path: format!("{}/../../../etc/shadow", env.images_dir().display()),
            },
            None,
        )),
        Malformed,
    );
    // NetOut rules the constructors refuse.
    let icmp_ports = RawRule {
        ports: vec![(1, 65535)],
        ..rule(Protocol::Icmp)
    };
    let all_ports = RawRule {
        ports: vec![(22, 22)],
        ..rule(Protocol::All)
    };
    let udp_log = RawRule {
        log: true,
        ..rule(Protocol::Udp)
    };
    let tcp_icmp = RawRule {
        icmp: Some(IcmpMatch {
            icmp_type: 8,
            code: None,
        }),
        ..rule(Protocol::Tcp)
    };
    let backwards = RawRule {
        networks: vec![(Ipv4Addr::new(10, 0, 0, 9), Ipv4Addr::new(10, 0, 0, 1))],
        ..rule(Protocol::Tcp)
    };
    let port_zero = RawRule {
        ports: vec![(0, 80)],
        ..rule(Protocol::Tcp)
    };
    let ports_backwards = RawRule {
        ports: vec![(443, 80)],
        ..rule(Protocol::Udp)
    };
    let too_many_ranges = RawRule {
        networks: vec![(Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(1, 1, 1, 1)); 33],
        ..rule(Protocol::Tcp)
    };
    for (what, r) in [
        ("NetOut icmp with ports", icmp_ports),
        ("NetOut all with ports", all_ports),
        ("NetOut udp with log", udp_log),
        ("NetOut tcp with an ICMP type", tcp_icmp),
        ("NetOut IP range ending before it starts", backwards),
        ("NetOut port 0", port_zero),
        ("NetOut port range ending before it starts", ports_backwards),
        ("NetOut rule with 33 networks", too_many_ranges),
    ] {
        add(what, raw(&net_out("any", vec![r])), Malformed);
    }
    // Framing.
    let ping = raw(&Raw::Ping);
    let mut trailing = ping.clone();
    trailing.push(0);
    add("Ping with a trailing byte", trailing, Malformed);
    let mut unknown = ping.clone();
    *unknown.last_mut().unwrap() = 200;
    add("unknown request variant 200", unknown, Malformed);
    let mut unknown = ping.clone();
    *unknown.last_mut().unwrap() = 11;
    add("unknown request variant 11", unknown, Malformed);
    let create = raw(&create_raw(
        "truncated",
        RawRootfs::HostDir(env.rootfs.display().to_string()),
        None,
    ));
    add(
        "a truncated CreateContainer",
        create[..create.len() / 2].to_vec(),
        Malformed,
    );
    add(
        "a CreateContainer without its last byte",
        create[..create.len() - 1].to_vec(),
        Malformed,
    );
    add("garbage 0xff × 100", vec![0xff; 100], Malformed);
    let mut garbage = ping[..1].to_vec();
    garbage.extend((0..300u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    add("garbage after a valid version", garbage, Malformed);
    add(
        "a datagram of MAX_DATAGRAM + 1 bytes",
        vec![0; MAX_DATAGRAM + 1],
        Malformed,
    );
    add("a datagram of 64 KiB", vec![2; 64 * 1024], Malformed);
    for v in [0u16, 1, PROTOCOL_VERSION + 1, u16::MAX] {
        add(
            &format!("protocol version {v}"),
            raw_version(v, &Raw::Ping),
            UnsupportedVersion,
        );
    }

    for (what, bytes, kind) in &cases {
        let conn = Conn::open(&env);
        expect_error(conn.ask(bytes), *kind, what, "");
        assert!(
            conn.is_closed(),
            "{what}: the connection stays open after a protocol violation"
        );
    }
    assert_serving(&env);
    let conn = Conn::open(&env);
    assert!(list(&conn).is_empty(), "nothing was created");
    before.assert_unchanged(&env, "undecodable requests");
}

/// Well-formed requests the policy forbids: refused with PolicyRefused (or
/// the error of the step that refused), on a connection that keeps serving.
#[test]
fn rootfs_and_image_paths_outside_the_policy_are_refused() {
    let env = TestEnv::start();
    let tag = format!("grove-escape-{}", std::process::id());
    // Symlinks inside the allowed directories that lead out of them.
    let rootfs_allow = env.rootfs.parent().unwrap().to_path_buf();
    let rootfs_link = rootfs_allow.join(format!("{tag}-to-root"));
    let images = env.images_dir();
    std::fs::create_dir_all(&images).unwrap();
    std::os::unix::fs::symlink("/", &rootfs_link).unwrap();
    std::os::unix::fs::symlink("/etc", images.join("to-etc")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", images.join("shadow.tar")).unwrap();
    let cleanup = scopeguard(rootfs_link.clone());
    let before = Before::take(&env);
    let conn = Conn::open(&env);
    let image_sibling = format!("{}-evil", images.display());
    let cases: Vec<(String, RawRootfs, Option<ErrorKind>)> = vec![
        (
            "rootfs /".into(),
            RawRootfs::HostDir("/".into()),
            Some(ErrorKind::PolicyRefused),
        ),
        (
            "rootfs /etc".into(),
            RawRootfs::HostDir("/etc".into()),
            Some(ErrorKind::PolicyRefused),
        ),
        (
            "rootfs /root".into(),
            RawRootfs::HostDir("/root".into()),
            Some(ErrorKind::PolicyRefused),
        ),
        (
            "rootfs the parent of rootfs_allow".into(),
            RawRootfs::HostDir(rootfs_allow.parent().unwrap().display().to_string()),
            Some(ErrorKind::PolicyRefused),
        ),
        (
            "rootfs a sibling sharing rootfs_allow's prefix".into(),
            RawRootfs::HostDir(format!("{}-evil", rootfs_allow.display())),
            Some(ErrorKind::PolicyRefused),
        ),
        (
            "rootfs the depot".into(),
            RawRootfs::HostDir(env.depot.display().to_string()),
            Some(ErrorKind::PolicyRefused),
        ),
        (
            "rootfs a symlink to / inside rootfs_allow".into(),
            RawRootfs::HostDir(rootfs_link.display().to_string()),
            None,
        ),
        (
            "rootfs /etc through a symlink inside rootfs_allow".into(),
            RawRootfs::HostDir(rootfs_link.join("etc").display().to_string()),
            None,
        ),
        (
            "image layout /etc".into(),
            RawRootfs::OciLayout {
                dir: "/etc".into(),
                tag: "latest".into(),
            },
            Some(ErrorKind::PolicyRefused),
        ),
        (
            "image layout /".into(),
            RawRootfs::OciLayout {
                dir: "/".into(),
                tag: "latest".into(),
            },
            Some(ErrorKind::PolicyRefused),
        ),
        (
            "docker archive /etc/shadow".into(),
            RawRootfs::DockerArchive {
                path: "/etc/shadow".into(),
            },
            Some(ErrorKind::PolicyRefused),
        ),
        (
            "docker archive in a sibling sharing image_allow's prefix".into(),
            RawRootfs::DockerArchive {
                path: format!("{image_sibling}/x.tar"),
            },
            Some(ErrorKind::PolicyRefused),
        ),
        (
            "docker archive the rootfs dir (outside image_allow)".into(),
            RawRootfs::DockerArchive {
                path: env.rootfs.join("bin/busybox").display().to_string(),
            },
            Some(ErrorKind::PolicyRefused),
        ),
        (
            "image layout through a symlink to /etc inside image_allow".into(),
            RawRootfs::OciLayout {
                dir: images.join("to-etc").display().to_string(),
                tag: "latest".into(),
            },
            None,
        ),
        (
            "docker archive that is a symlink to /etc/shadow inside image_allow".into(),
            RawRootfs::DockerArchive {
                path: images.join("shadow.tar").display().to_string(),
            },
            None,
        ),
    ];
    for (i, (what, rootfs, kind)) in cases.into_iter().enumerate() {
        let response = conn.ask(&raw(&create_raw(&format!("pol-{i}"), rootfs, None)));
        match kind {
            Some(kind) => {
                expect_error(response, kind, &what, "not beneath an allowed directory");
            }
            None => {
                // Refused while opening (openat2 without symlinks): the kind
                // is the opening step's.
                let e = error_of(response, &what);
                assert!(e.message.contains("symlink"), "{what}: {e}");
                println!("refused {what}: {e}");
            }
        }
    }
    // A container without a user namespace: the policy does not allow it.
    expect_error(
        conn.ask(&raw(&Raw::CreateContainer {
            handle: "pol-privileged".into(),
            rootfs: RawRootfs::Default,
            limits: Limits::default(),
            ip: None,
            privileged: true,
            binds: Vec::new(),
        })),
        ErrorKind::PolicyRefused,
        "a privileged container (allow_privileged = off)",
        "allow_privileged",
    );
    // Policy refusals are not protocol violations: the same connection
    // still serves, and nothing was made.
    assert!(list(&conn).is_empty(), "no container exists");
    before.assert_unchanged(&env, "policy refusals");
    drop(cleanup);
    assert_serving(&env);
}

/// Removes a path when dropped (the test's symlinks outside the env).
struct Cleanup(std::path::PathBuf);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
fn scopeguard(path: std::path::PathBuf) -> Cleanup {
    Cleanup(path)
}

fn created(response: Response, what: &str) -> (i32, Ipv4Addr) {
    match response {
        Response::Created {
            wshd_pid, network, ..
        } => (wshd_pid, network.ip),
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn addresses_and_ports_outside_the_policy_are_refused() {
    let env = TestEnv::start();
    let conn = Conn::open(&env);
    let ip = env.pool_ip(10);
    let (_, got) = created(
        conn.ask(&raw(&create_raw("net-a", RawRootfs::Default, Some(ip)))),
        "create net-a",
    );
    assert_eq!(got, ip);
    let mapping = match conn.ask(&raw(&Raw::NetIn {
        handle: "net-a".into(),
        host_port: env.ports.0,
        container_port: 80,
    })) {
        Response::NetIn(m) => m,
        other => panic!("a NetIn in range: {other:?}"),
    };
    assert_eq!(mapping.host_port, env.ports.0);
    let before = Before::take(&env);
    let broadcast = Ipv4Addr::from(u32::from(env.pool_base) | (u32::MAX >> env.pool_prefix));
    for (what, ip) in [
        ("an address outside the pool", Ipv4Addr::new(8, 8, 8, 8)),
        ("127.0.0.1", Ipv4Addr::LOCALHOST),
        ("the pool's network address", env.pool_ip(0)),
        ("the gateway", env.gateway),
        ("the pool's broadcast address", broadcast),
        ("the next /24's first address", env.pool_ip(256)),
        ("a taken address", ip),
        ("0.0.0.0", Ipv4Addr::UNSPECIFIED),
        ("255.255.255.255", Ipv4Addr::BROADCAST),
    ] {
        expect_error(
            conn.ask(&raw(&create_raw("net-b", RawRootfs::Default, Some(ip)))),
            ErrorKind::InvalidValue,
            &format!("create with {what} ({ip})"),
            &ip.to_string(),
        );
    }
    for (what, port) in [
        ("below the range", env.ports.0 - 1),
        ("above the range", env.ports.1 + 1),
        ("ssh", 22),
        ("65535", 65535),
        ("already mapped", env.ports.0),
    ] {
        expect_error(
            conn.ask(&raw(&Raw::NetIn {
                handle: "net-a".into(),
                host_port: port,
                container_port: 22,
            })),
            ErrorKind::InvalidValue,
            &format!("NetIn host port {what} ({port})"),
            &format!("hostPort {port}"),
        );
    }
    expect_error(
        conn.ask(&raw(&Raw::NetIn {
            handle: "no-such".into(),
            host_port: env.ports.0 + 1,
            container_port: 80,
        })),
        ErrorKind::NotFound,
        "NetIn on an unknown handle",
        "no container",
    );
    expect_error(
        conn.ask(&raw(&net_out("no-such", vec![rule(Protocol::All)]))),
        ErrorKind::NotFound,
        "NetOut on an unknown handle",
        "no container",
    );
    assert_eq!(
        list(&conn).iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["net-a"]
    );
    before.assert_unchanged(&env, "refused addresses and ports");
    // The per-container bound (after the snapshot: these rules are
    // accepted): eight full requests fill it, one more rule is refused.
    for i in 0..8 {
        match conn.ask(&raw(&net_out("net-a", vec![rule(Protocol::Tcp); 64]))) {
            Response::NetOutAdded => {}
            other => panic!("NetOut batch {i} of 64 rules: {other:?}"),
        }
    }
    expect_error(
        conn.ask(&raw(&net_out("net-a", vec![rule(Protocol::Tcp)]))),
        ErrorKind::LimitExceeded,
        "the 513th NetOut rule (more than a container may hold)",
        "512",
    );
    assert!(matches!(
        conn.ask(&raw(&Raw::DestroyContainer {
            handle: "net-a".into()
        })),
        Response::Destroyed
    ));
    assert_serving(&env);
}

/// schema::net::MAX_RULES says one NetOut request carries at most 64 rules;
/// a compromised groved is not bound by groved's own check.
#[test]
fn a_netout_request_of_more_than_max_rules_is_refused() {
    let env = TestEnv::start();
    let conn = Conn::open(&env);
    created(
        conn.ask(&raw(&create_raw("rules", RawRootfs::Default, None))),
        "create",
    );
    let n = grove_schema::net::MAX_RULES + 1;
    let rules: Vec<RawRule> = (0..n)
        .map(|i| RawRule {
            networks: vec![(
                Ipv4Addr::new(192, 0, 2, i as u8),
                Ipv4Addr::new(192, 0, 2, i as u8),
            )],
            ..rule(Protocol::Tcp)
        })
        .collect();
    let bytes = raw(&net_out("rules", rules));
    assert!(bytes.len() <= MAX_DATAGRAM);
    let response = conn.ask(&bytes);
    let _ = conn.ask(&raw(&Raw::DestroyContainer {
        handle: "rules".into(),
    }));
    let e = error_of(response, &format!("NetOut of {n} rules (MAX_RULES is 64)"));
    println!("refused {n} rules: {e}");
}

#[test]
fn abusive_datagrams_and_descriptors_are_refused() {
    let env = TestEnv::start();
    let before = Before::take(&env);
    let helper = env.helper_pid();
    let pong = |r: Response, what: &str| match r {
        Response::Pong { .. } => {}
        other => panic!("{what}: {other:?}"),
    };
    let ping = raw(&Raw::Ping);
    let conn = Conn::open(&env);
    pong(conn.ask(&ping), "a first Ping");
    let fds_before = open_fds(helper);
    let (r, w) = nix::unistd::pipe().unwrap();
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let shadow = std::fs::File::open("/etc/shadow").unwrap();
    // Descriptors no request takes are closed, and the request is served.
    conn.send_with(&ping, &[r.as_raw_fd()], None).unwrap();
    pong(conn.answer(), "Ping with one fd");
    conn.send_with(
        &ping,
        &[
            r.as_raw_fd(),
            w.as_raw_fd(),
            devnull.as_raw_fd(),
            shadow.as_raw_fd(),
        ],
        None,
    )
    .unwrap();
    pong(conn.answer(), "Ping with four fds");
    assert_eq!(open_fds(helper), fds_before, "the helper kept received fds");
    // More than MAX_FDS: refused, connection ended.
    let five = [
        r.as_raw_fd(),
        w.as_raw_fd(),
        devnull.as_raw_fd(),
        shadow.as_raw_fd(),
        r.as_raw_fd(),
    ];
    conn.send_with(&ping, &five, None).unwrap();
    expect_error(
        conn.answer(),
        ErrorKind::Malformed,
        "Ping with five fds",
        "fds",
    );
    assert!(conn.is_closed(), "five fds: the connection stays open");
    // Far more than fit the helper's control buffer: MSG_CTRUNC.
    let conn = Conn::open(&env);
    let many: Vec<RawFd> = (0..200)
        .map(|i| {
            if i % 2 == 0 {
                r.as_raw_fd()
            } else {
                w.as_raw_fd()
            }
        })
        .collect();
    conn.send_with(&ping, &many, None).unwrap();
    expect_error(
        conn.answer(),
        ErrorKind::Malformed,
        "Ping with 200 fds",
        "truncated",
    );
    assert!(conn.is_closed(), "200 fds: the connection stays open");
    // Only fds and no bytes.
    let conn = Conn::open(&env);
    conn.send_with(&[], &[r.as_raw_fd()], None).unwrap();
    expect_error(
        conn.answer(),
        ErrorKind::Malformed,
        "a datagram of fds and no bytes",
        "",
    );
    assert!(conn.is_closed());
    // SCM_CREDENTIALS: the helper does not ask for them (no SO_PASSCRED),
    // so they either never arrive or are refused as a foreign control
    // message; either way the peer stays what SO_PEERCRED said.
    let conn = Conn::open(&env);
    let creds = nix::sys::socket::UnixCredentials::new();
    match conn.send_with(&ping, &[], Some(creds)) {
        Ok(_) => match conn.answer() {
            Response::Pong { .. } => {
                println!("SCM_CREDENTIALS: not delivered (no SO_PASSCRED), Ping served")
            }
            Response::Error(e) => {
                assert_eq!(e.kind, ErrorKind::Malformed, "{e}");
                println!("refused SCM_CREDENTIALS: {e}");
            }
            other => panic!("SCM_CREDENTIALS: {other:?}"),
        },
        Err(e) => println!("SCM_CREDENTIALS: the kernel refused to send them: {e}"),
    }
    // An empty datagram reads as a hang-up: the helper closes quietly.
    let conn = Conn::open(&env);
    conn.send(&[]).unwrap();
    assert!(
        conn.is_closed(),
        "an empty datagram: the connection stays open"
    );
    // A peer that never reads its answers loses its connection; it cannot
    // stall the helper.
    let conn = Conn::open(&env);
    for _ in 0..5000 {
        if conn.send(&ping).is_err() {
            break;
        }
    }
    assert_serving(&env);
    drop(conn);
    // Too many connections: refused past the limit, served again after.
    let conns: Vec<Conn> = (0..24).map(|_| Conn::open(&env)).collect();
    let mut refused = 0;
    for c in &conns {
        if c.send(&ping).is_err() {
            refused += 1;
            continue;
        }
        match c.recv().map(|b| decode_response(&b)) {
            Some(Ok(Response::Pong { .. })) => {}
            Some(Ok(Response::Error(e))) => {
                assert_eq!(e.kind, ErrorKind::LimitExceeded, "{e}");
                refused += 1;
            }
            _ => refused += 1,
        }
    }
    assert!(refused > 0, "24 connections were all served");
    drop(conns);
    std::thread::sleep(Duration::from_millis(300));
    assert_serving(&env);
    drop((r, w, devnull, shadow));
    // Refused peers linger up to 2 s before the helper closes them.
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while open_fds(helper) > fds_before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        open_fds(helper) <= fds_before,
        "the helper holds {} fds, {} before",
        open_fds(helper),
        fds_before
    );
    before.assert_unchanged(&env, "abusive datagrams");
}

#[test]
fn requests_in_the_wrong_state_are_refused() {
    let env = TestEnv::start();
    let conn = Conn::open(&env);
    let (wshd, _) = created(
        conn.ask(&raw(&create_raw("st-1", RawRootfs::Default, None))),
        "create st-1",
    );
    expect_error(
        conn.ask(&raw(&create_raw("st-1", RawRootfs::Default, None))),
        ErrorKind::AlreadyExists,
        "create st-1 again",
        "exists",
    );
    // Out-of-range limits on a running container.
    for (what, limits) in [
        (
            "cpu_shares 0",
            Limits {
                cpu_shares: Some(0),
                ..Limits::default()
            },
        ),
        (
            "cpuset 0-1000000",
            Limits {
                cpuset: Some("0-1000000".into()),
                ..Limits::default()
            },
        ),
        (
            "cpuset ../../tasks",
            Limits {
                cpuset: Some("../../tasks".into()),
                ..Limits::default()
            },
        ),
        (
            "cpu quota period 0",
            Limits {
                cpu_quota: Some(grove_schema::helper::CpuQuota {
                    period_us: 0,
                    quota_us: 1000,
                }),
                ..Limits::default()
            },
        ),
    ] {
        expect_error(
            conn.ask(&raw(&Raw::SetLimits {
                handle: "st-1".into(),
                limits,
            })),
            ErrorKind::InvalidValue,
            &format!("SetLimits {what}"),
            "",
        );
    }
    // Stop it behind the helper's back: kill its wshd.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(wshd),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while list(&conn)
        .iter()
        .any(|c| c.0 == "st-1" && c.1 != grove_schema::helper::ContainerState::Stopped)
    {
        assert!(std::time::Instant::now() < deadline, "st-1 never stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = Before::take(&env);
    let h = || "st-1".to_string();
    for (what, request) in [
        (
            "SetLimits on a stopped container",
            Raw::SetLimits {
                handle: h(),
                limits: Limits {
                    pids_max: Some(10),
                    ..Limits::default()
                },
            },
        ),
        (
            "WatchOom on a stopped container",
            Raw::WatchOom { handle: h() },
        ),
        (
            "NetIn on a stopped container",
            Raw::NetIn {
                handle: h(),
                host_port: 0,
                container_port: 80,
            },
        ),
        (
            "NetOut on a stopped container",
            net_out("st-1", vec![rule(Protocol::All)]),
        ),
    ] {
        expect_error(
            conn.ask(&raw(&request)),
            ErrorKind::InvalidState,
            what,
            "running",
        );
    }
    // Reading a stopped container's cgroups is allowed.
    assert!(matches!(
        conn.ask(&raw(&Raw::GetLimits { handle: h() })),
        Response::Limits(_)
    ));
    before.assert_unchanged(&env, "requests on a stopped container");
    assert!(matches!(
        conn.ask(&raw(&Raw::DestroyContainer { handle: h() })),
        Response::Destroyed
    ));
    for (what, request) in [
        ("Destroy twice", Raw::DestroyContainer { handle: h() }),
        (
            "SetLimits after destroy",
            Raw::SetLimits {
                handle: h(),
                limits: Limits::default(),
            },
        ),
        ("GetStats after destroy", Raw::GetStats { handle: h() }),
        ("GetNetwork after destroy", Raw::GetNetwork { handle: h() }),
        ("WatchOom after destroy", Raw::WatchOom { handle: h() }),
        (
            "NetIn after destroy",
            Raw::NetIn {
                handle: h(),
                host_port: 0,
                container_port: 0,
            },
        ),
    ] {
        expect_error(
            conn.ask(&raw(&request)),
            ErrorKind::NotFound,
            what,
            "no container",
        );
    }
    assert!(list(&conn).is_empty());
    assert!(
        !env.depot.join("st-1").exists(),
        "the destroyed container's depot directory is gone"
    );
    assert_serving(&env);
}

/// A compromised groved that starts image unpacks on connection after
/// connection: the third at once is refused naming the bound; a create
/// whose image unpacks holds its handle (Creating: another create of it is
/// refused, and so is its destroy) while the helper serves the rest; an
/// unpacking child that dies fails its create and leaves nothing.
#[test]
fn unpacks_beyond_the_most_at_once_are_refused_and_an_unpacking_create_holds_its_handle() {
    use grove_schema::helper::ContainerState;
    let env = TestEnv::start();
    // 8 GiB of zeros (8 MB of gzip): minutes of unpacking; the children
    // are killed below long before (so its diff id is never checked).
    let slow = grove_tests::oci::write_oci_raw(
        &env.images_dir().join("slow"),
        &[grove_tests::oci::zeros_layer(8 << 10, false)],
        "v1",
    );
    let image = || RawRootfs::OciLayout {
        dir: slow.dir.display().to_string(),
        tag: "v1".into(),
    };
    let ctl = Conn::open(&env);
    // Wait until the helper lists `handle` as Creating.
    let creating = |handle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let l = list(&ctl);
            if let Some(c) = l.iter().find(|c| c.0 == handle) {
                assert_eq!((&c.1, c.2), (&ContainerState::Creating, 0), "{l:?}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{handle} never listed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let first = Conn::open(&env);
    first.send(&raw(&create_raw("u-1", image(), None))).unwrap();
    creating("u-1");
    expect_error(
        ctl.ask(&raw(&create_raw("u-1", RawRootfs::Default, None))),
        ErrorKind::AlreadyExists,
        "create u-1 while its image unpacks",
        "exists",
    );
    expect_error(
        ctl.ask(&raw(&Raw::DestroyContainer {
            handle: "u-1".into(),
        })),
        ErrorKind::InvalidState,
        "destroy u-1 while its image unpacks",
        "still being created",
    );
    let second = Conn::open(&env);
    second
        .send(&raw(&create_raw("u-2", image(), None)))
        .unwrap();
    creating("u-2");
    let third = Conn::open(&env);
    expect_error(
        third.ask(&raw(&create_raw("u-3", image(), None))),
        ErrorKind::LimitExceeded,
        "a third unpack at once",
        "2 images are being unpacked",
    );
    // A container from a rootfs dir meanwhile.
    created(
        ctl.ask(&raw(&create_raw("u-dir", RawRootfs::Default, None))),
        "create u-dir",
    );
    // Kill the unpacking children (the helper's children whose log line
    // names them): their creates fail, and leave nothing.
    let helper = env.helper_pid() as i32;
    let log = env.logs();
    let children: Vec<i32> = log
        .lines()
        .filter_map(|l| l.split_once(": unpacking in child ").map(|(_, p)| p))
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    assert_eq!(children.len(), 2, "{log}");
    for pid in children {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let ppid: i32 = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ppid, helper, "{pid} is the helper's child");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    for (conn, handle) in [(&first, "u-1"), (&second, "u-2")] {
        expect_error(
            conn.answer(),
            ErrorKind::System,
            &format!("create {handle} whose unpacking child was killed"),
            "without a report",
        );
    }
    let handles: Vec<String> = list(&ctl).into_iter().map(|c| c.0).collect();
    assert_eq!(handles, ["u-dir"]);
    let store = env.depot.join(".layers/sha256");
    let left: Vec<_> = std::fs::read_dir(&store).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    match ctl.ask(&raw(&Raw::DestroyContainer {
        handle: "u-dir".into(),
    })) {
        Response::Destroyed => {}
        other => panic!("destroy u-dir: {other:?}"),
    }
}

/// A create from an image is answered once the image is unpacked; if its
/// creator hung up meanwhile, no one knows of the container (a groved
/// restarted meanwhile saw it Creating and could not destroy it), so the
/// helper destroys it itself.
#[test]
fn a_create_whose_creator_hung_up_during_the_unpack_is_undone() {
    let env = TestEnv::start();
    let image = grove_tests::oci::write_oci_raw(
        &env.images_dir().join("small"),
        &[grove_tests::oci::dir_layer(&env.rootfs)],
        "v1",
    );
    let gone = Conn::open(&env);
    gone.send(&raw(&create_raw(
        "hung-up",
        RawRootfs::OciLayout {
            dir: image.dir.display().to_string(),
            tag: "v1".into(),
        },
        None,
    )))
    .unwrap();
    // The datagram is queued; the helper reads it after the hang-up.
    drop(gone);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !env
        .logs()
        .contains("hung-up: its creator hung up; destroying it")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the create was never undone\n{}",
            env.logs()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ctl = Conn::open(&env);
    assert!(list(&ctl).is_empty(), "{}", env.logs());
    assert!(!env.depot.join("hung-up").exists());
}
