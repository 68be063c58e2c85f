//! Writes the kept seed corpus, fuzz/corpus/<target>/: valid encodings of
//! every request (and wshd response) variant, and event sequences for the
//! state machine. `./dev fuzz` runs it before fuzzing; it owns those
//! directories (files it no longer generates are removed), so a protocol
//! change shows up as a diff there.
//!
//!     cargo run --manifest-path fuzz/Cargo.toml --example seeds -- fuzz/corpus
//!
//! The `match`es without a wildcard make this fail to compile when a
//! variant is added, so the seeds keep covering every one.

use grove_schema::helper::{
    self, CpuQuota, DiskLimit, DiskScope, HostPath, ImageTag, LayerId, Limits, RootfsSource,
};
use grove_schema::net::{Bandwidth, IcmpMatch, IpRange, NetOutRule, PortRange, Protocol};
use grove_schema::wshd::{self, ExitStatus, ProcessSummary, Rlimit, SpawnSpec, WindowSize};
use grove_schema::Handle;
use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

fn handle(s: &str) -> Handle {
    Handle::new(s).unwrap()
}

fn path(s: &str) -> HostPath {
    HostPath::new(s).unwrap()
}

fn full_limits() -> Limits {
    Limits {
        memory_bytes: Some(256 << 20),
        cpu_shares: Some(512),
        cpu_quota: Some(CpuQuota {
            period_us: 100_000,
            quota_us: 50_000,
        }),
        pids_max: Some(64),
        cpuset: Some("0-1,3".into()),
        disk: Some(DiskLimit {
            bytes: 64 << 20,
            inodes: 0,
            scope: DiskScope::Total,
        }),
        bandwidth: Some(Bandwidth {
            rate_bytes_per_sec: 1 << 20,
            burst_bytes: 64 << 10,
        }),
    }
}

fn helper_name(r: &helper::Request) -> &'static str {
    use helper::Request::*;
    match r {
        Ping => "ping",
        CreateContainer { .. } => "create",
        DestroyContainer { .. } => "destroy",
        ListContainers => "list",
        SetLimits { .. } => "set-limits",
        GetLimits { .. } => "get-limits",
        GetStats { .. } => "get-stats",
        WatchOom { .. } => "watch-oom",
        WatchExit { .. } => "watch-exit",
        NetIn { .. } => "net-in",
        NetOut { .. } => "net-out",
        GetNetwork { .. } => "get-network",
        ListLayers { .. } => "list-layers",
        RemoveLayer { .. } => "remove-layer",
    }
}

fn helper_requests() -> Vec<helper::Request> {
    use helper::Request::*;
    let create = |rootfs, limits, ip| CreateContainer {
        handle: handle("web-1"),
        rootfs,
        limits,
        ip,
        privileged: false,
        binds: Vec::new(),
    };
    let range = |a, b| IpRange::new(a, b).unwrap();
    let ports = |a, b| PortRange::new(a, b).unwrap();
    vec![
        Ping,
        create(RootfsSource::Default, Limits::default(), None),
        create(
            RootfsSource::HostDir(path("/var/lib/grove/rootfs/busybox")),
            full_limits(),
            Some(Ipv4Addr::new(10, 254, 0, 7)),
        ),
        create(
            RootfsSource::OciLayout {
                dir: path("/var/lib/grove/server/downloads/x"),
                tag: ImageTag::new("v1.0_rc-1").unwrap(),
            },
            Limits {
                memory_bytes: Some(1 << 30),
                disk: Some(DiskLimit {
                    bytes: 1 << 30,
                    inodes: 100_000,
                    scope: DiskScope::Exclusive,
                }),
                ..Limits::default()
            },
            None,
        ),
        create(
            RootfsSource::DockerArchive {
                path: path("/srv/images/busybox.tar"),
            },
            Limits::default(),
            None,
        ),
        CreateContainer {
            handle: handle("privileged"),
            rootfs: RootfsSource::Default,
            limits: Limits::default(),
            ip: None,
            privileged: true,
            binds: Vec::new(),
        },
        CreateContainer {
            handle: handle("binds"),
            rootfs: RootfsSource::Default,
            limits: Limits::default(),
            ip: None,
            privileged: false,
            binds: vec![
                helper::BindMount {
                    src: path("/srv/shared/data"),
                    origin: helper::BindOrigin::Host,
                    dst: path("/mnt/data"),
                    read_only: true,
                },
                helper::BindMount {
                    src: path("/etc"),
                    origin: helper::BindOrigin::Container,
                    dst: path("/mnt/etc"),
                    read_only: false,
                },
            ],
        },
        DestroyContainer {
            handle: handle("web-1"),
        },
        ListContainers,
        SetLimits {
            handle: handle("a"),
            limits: full_limits(),
        },
        SetLimits {
            handle: handle("a"),
            limits: Limits {
                cpu_quota: Some(CpuQuota {
                    period_us: 1000,
                    quota_us: u64::MAX,
                }),
                ..Limits::default()
            },
        },
        GetLimits {
            handle: handle("a"),
        },
        GetStats {
            handle: handle("A.b_c-9"),
        },
        WatchOom {
            handle: handle("a"),
        },
        WatchExit {
            handle: handle("a"),
        },
        NetIn {
            handle: handle("a"),
            host_port: 0,
            container_port: 8080,
        },
        NetIn {
            handle: handle("a"),
            host_port: 60001,
            container_port: 0,
        },
        NetOut {
            handle: handle("a"),
            rules: vec![
                NetOutRule::new(Protocol::All, vec![], vec![], None, false).unwrap(),
                NetOutRule::new(
                    Protocol::Tcp,
                    vec![
                        range(Ipv4Addr::new(10, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 255)),
                        range(Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(8, 8, 8, 8)),
                    ],
                    vec![ports(80, 80), ports(8000, 8999)],
                    None,
                    true,
                )
                .unwrap(),
                NetOutRule::new(Protocol::Udp, vec![], vec![ports(53, 53)], None, false).unwrap(),
                NetOutRule::new(
                    Protocol::Icmp,
                    vec![],
                    vec![],
                    Some(IcmpMatch {
                        icmp_type: 8,
                        code: Some(0),
                    }),
                    false,
                )
                .unwrap(),
            ],
        },
        GetNetwork {
            handle: handle("a"),
        },
        ListLayers { after: None },
        ListLayers {
            after: Some(LayerId::new("f".repeat(64)).unwrap()),
        },
        RemoveLayer {
            id: LayerId::new("0123456789abcdef".repeat(4)).unwrap(),
        },
    ]
}

fn wshd_request_name(r: &wshd::Request) -> &'static str {
    use wshd::Request::*;
    match r {
        Ping => "ping",
        Spawn(_) => "spawn",
        Wait { .. } => "wait",
        Signal { .. } => "signal",
        SignalAll { .. } => "signal-all",
        CloseStdin { .. } => "close-stdin",
        Release { .. } => "release",
        List => "list",
        Reattach { .. } => "reattach",
        SetWindowSize { .. } => "set-window-size",
        StreamIn { .. } => "stream-in",
        StreamOut { .. } => "stream-out",
        StreamWait { .. } => "stream-wait",
        Top => "top",
    }
}

fn wshd_requests() -> Vec<wshd::Request> {
    use wshd::Request::*;
    let id = || "p1".to_string();
    vec![
        Ping,
        Spawn(SpawnSpec {
            id: id(),
            path: "/bin/sh".into(),
            args: vec!["-c".into(), "echo hi".into()],
            env: vec!["A=b".into(), "PATH=/bin".into()],
            dir: Some("/tmp".into()),
            user: Some("1000:1000".into()),
            open_stdin: true,
            tty: Some(WindowSize {
                columns: 80,
                rows: 24,
            }),
            rlimits: vec![(Rlimit::Nofile, 1024), (Rlimit::Core, 0)],
        }),
        Spawn(SpawnSpec {
            id: id(),
            path: "echo".into(),
            args: vec![],
            env: vec![],
            dir: None,
            user: None,
            open_stdin: false,
            tty: None,
            rlimits: vec![],
        }),
        Wait { id: id() },
        Signal {
            id: id(),
            signal: 15,
        },
        SignalAll { signal: 9 },
        CloseStdin { id: id() },
        Release { id: id() },
        List,
        Reattach { id: id() },
        SetWindowSize {
            id: id(),
            size: WindowSize {
                columns: 132,
                rows: 50,
            },
        },
        StreamIn {
            path: "/root/in".into(),
            user: Some("nobody".into()),
        },
        StreamOut {
            path: "/etc/".into(),
            user: None,
        },
        StreamWait { id: 7 },
        Top,
    ]
}

fn wshd_response_name(r: &wshd::Response) -> &'static str {
    use wshd::Response::*;
    match r {
        Pong => "pong",
        Spawned { .. } => "spawned",
        Attached { .. } => "attached",
        Exited(_) => "exited",
        Ok => "ok",
        Processes(_) => "processes",
        StreamStarted { .. } => "stream-started",
        StreamFinished => "stream-finished",
        Error(_) => "error",
        Top { .. } => "top",
    }
}

fn wshd_responses() -> Vec<wshd::Response> {
    use wshd::Response::*;
    vec![
        Pong,
        Spawned { pid: 42 },
        Attached {
            pid: 42,
            tty: true,
            stdin: false,
            exit: Some(ExitStatus::Signal(9)),
        },
        Exited(ExitStatus::Code(0)),
        Exited(ExitStatus::Signal(15)),
        Ok,
        Processes(vec![
            ProcessSummary {
                id: "p1".into(),
                pid: 42,
                tty: false,
                exit: None,
            },
            ProcessSummary {
                id: "p2".into(),
                pid: 43,
                tty: true,
                exit: Some(ExitStatus::Code(1)),
            },
        ]),
        StreamStarted { id: 3 },
        StreamFinished,
        Error(wshd::WshdError::new(
            wshd::ErrorKind::ProcessNotFound,
            "no process has id p9",
        )),
        Top {
            processes: vec![
                wshd::ProcessStatus {
                    pid: 1,
                    ppid: 0,
                    uid: 0,
                    user: Some("root".into()),
                    state: 'S',
                    cpu_millis: 10,
                    elapsed_millis: 60_000,
                    rss_bytes: 4 << 20,
                    command: "/wshd --socket-fd 3".into(),
                    process_id: None,
                },
                wshd::ProcessStatus {
                    pid: 7,
                    ppid: 1,
                    uid: 1000,
                    user: None,
                    state: 'R',
                    cpu_millis: 0,
                    elapsed_millis: 5,
                    rss_bytes: 0,
                    command: "[kworker]".into(),
                    process_id: Some("p1".into()),
                },
            ],
            truncated: true,
        },
    ]
}

/// Event sequences for helper_state: (container index, event index) byte
/// pairs, event indexes as in its EVENTS table.
fn state_sequences() -> Vec<(&'static str, Vec<u8>)> {
    const CREATE: u8 = 0;
    const CREATED: u8 = 1;
    const CREATE_FAILED: u8 = 2;
    const DESTROY: u8 = 3;
    const DESTROYED: u8 = 4;
    const DESTROY_FAILED: u8 = 5;
    const WSHD_EXITED: u8 = 6;
    const SET_LIMITS: u8 = 7;
    const GET_LIMITS: u8 = 8;
    const GET_STATS: u8 = 9;
    const WATCH_OOM: u8 = 10;
    const NETWORK: u8 = 11;
    let on = |c: u8, events: &[u8]| events.iter().flat_map(|&e| [c, e]).collect::<Vec<u8>>();
    let lifecycle = [
        CREATE,
        CREATED,
        SET_LIMITS,
        GET_LIMITS,
        GET_STATS,
        WATCH_OOM,
        NETWORK,
        WSHD_EXITED,
        GET_STATS,
        DESTROY,
        DESTROY_FAILED,
        DESTROY,
        DESTROYED,
    ];
    let mut interleaved = Vec::new();
    for pair in on(0, &lifecycle).chunks(2).zip(on(1, &lifecycle).chunks(2)) {
        interleaved.extend_from_slice(pair.0);
        interleaved.extend_from_slice(pair.1);
    }
    vec![
        ("lifecycle", on(0, &lifecycle)),
        (
            "create-failed-then-again",
            on(2, &[CREATE, DESTROY, CREATE_FAILED, CREATE, CREATED]),
        ),
        (
            "destroy-twice",
            on(3, &[CREATE, CREATED, DESTROY, DESTROY, CREATE, DESTROYED]),
        ),
        (
            "no-container",
            on(
                1,
                &[
                    CREATED,
                    CREATE_FAILED,
                    DESTROY,
                    DESTROYED,
                    DESTROY_FAILED,
                    WSHD_EXITED,
                    SET_LIMITS,
                    GET_LIMITS,
                    GET_STATS,
                    WATCH_OOM,
                    NETWORK,
                ],
            ),
        ),
        ("interleaved", interleaved),
    ]
}

/// Make `dir` hold exactly `files` (name → bytes).
/// Connections as Garden's clients open them: JSON routes with and
/// without bodies, keep-alive, a chunked streamIn, a run with its payload
/// lines after the head.
fn garden_connections() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("ping", b"GET /ping HTTP/1.1\r\nHost: api\r\n\r\n".to_vec()),
        (
            "create_keep_alive",
            b"POST /containers HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\nContent-Length: 31\r\n\r\n{\"handle\":\"a\",\"properties\":{}}\n\
              GET /containers?owner=x&a+b=c%20d HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"
                .to_vec(),
        ),
        (
            "stream_in_chunked",
            b"PUT /containers/a/files?destination=%2Ftmp HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n5\r\nhello\r\n3;ext=1\r\nabc\r\n0\r\nTrailer: x\r\n\r\n"
                .to_vec(),
        ),
        (
            "run_payloads",
            b"POST /containers/a/processes HTTP/1.1\r\nHost: api\r\nContent-Length: 15\r\n\r\n{\"path\":\"cat\"}\n{\"process_id\":\"p\",\"source\":0,\"data\":\"hi\"}\n{\"process_id\":\"p\",\"source\":0}\n{\"signal\":1}\n"
                .to_vec(),
        ),
        (
            "attach_stdout",
            b"GET /containers/a/processes/p/attaches/3/stdout HTTP/1.1\r\nHost: api\r\n\r\n"
                .to_vec(),
        ),
    ]
}

fn write_dir(dir: &Path, files: BTreeMap<String, Vec<u8>>) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !files.contains_key(&name) {
            fs::remove_file(entry.path())?;
        }
    }
    for (name, bytes) in files {
        let p = dir.join(&name);
        if fs::read(&p).ok().as_deref() != Some(&bytes[..]) {
            fs::write(&p, &bytes)?;
        }
    }
    Ok(())
}

/// Numbered file names: "<name>-<n>".
fn named<T>(
    items: Vec<T>,
    name: impl Fn(&T) -> &'static str,
    encode: impl Fn(&T) -> Vec<u8>,
) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut seen = BTreeMap::<&str, usize>::new();
    for item in &items {
        let n = seen.entry(name(item)).or_default();
        *n += 1;
        out.insert(format!("{}-{}", name(item), n), encode(item));
    }
    out
}

fn main() -> std::io::Result<()> {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/corpus").into());
    let root = Path::new(&root);

    let helper = named(helper_requests(), helper_name, |r| {
        let bytes = helper::encode_request(r);
        assert!(bytes.len() <= helper::MAX_DATAGRAM);
        assert_eq!(&helper::decode_request(&bytes).unwrap(), r);
        bytes
    });
    let wshd_req = named(wshd_requests(), wshd_request_name, |r| {
        let bytes = wshd::encode(r);
        assert_eq!(&wshd::decode::<wshd::Request>(&bytes).unwrap(), r);
        bytes
    });
    let wshd_resp = named(wshd_responses(), wshd_response_name, |r| {
        let bytes = wshd::encode(r);
        assert_eq!(&wshd::decode::<wshd::Response>(&bytes).unwrap(), r);
        bytes
    });
    let state = state_sequences()
        .into_iter()
        .map(|(n, b)| (n.to_string(), b))
        .collect();
    let garden = garden_connections()
        .into_iter()
        .map(|(n, b)| (n.to_string(), b))
        .collect();

    for (target, files) in [
        ("helper_request", helper),
        ("wshd_request", wshd_req),
        ("wshd_response", wshd_resp),
        ("helper_state", state),
        ("garden_http", garden),
    ] {
        let n = files.len();
        write_dir(&root.join(target), files)?;
        println!("{n:3} seeds in {}", root.join(target).display());
    }
    Ok(())
}
