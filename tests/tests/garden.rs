//! grove-garden against the real stack: a real helper and groved
//! (TestEnv) and grove-garden started here as the `grove` user, driven by
//! an independent Garden client (grove_tests::garden_client) over its unix
//! socket. Every Garden route is exercised: the JSON routes, error bodies,
//! run/attach with stdin, tty, signals and a reconnect, and a 100 MiB tar
//! through streamIn and streamOut.

use grove_tests::garden_client::{esc, Garden};
use grove_tests::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// grove-garden as the `grove` user, pointed at the env's groved; killed
/// by its pid when dropped.
struct GardenProcess {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl GardenProcess {
    fn start(env: &TestEnv) -> GardenProcess {
        GardenProcess::start_with(env, &[], false)
    }

    /// With extra arguments; `activated`: under systemd-socket-activate
    /// (socket activation), which binds the socket and passes it.
    fn start_with(env: &TestEnv, extra: &[&str], activated: bool) -> GardenProcess {
        let socket = env.run_dir.join(if activated {
            "garden-sa.sock"
        } else {
            "garden.sock"
        });
        let log = env.root.join("garden.log");
        let file = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap()
        };
        let (uid, gid) = grove_user();
        let mut cmd = if activated {
            let mut c = Command::new("/usr/bin/systemd-socket-activate");
            c.arg("--fdname=garden")
                .arg("-l")
                .arg(&socket)
                .arg(bin_dir().join("grove-garden"));
            c
        } else {
            let mut c = Command::new(bin_dir().join("grove-garden"));
            c.arg("--listen").arg(&socket);
            c
        };
        cmd.args(extra)
            .arg("--grove-socket")
            .arg(&env.socket)
            .env("GROVE_GARDEN_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(file())
            .stderr(file());
        as_user(&mut cmd, uid, gid);
        let mut child = cmd.spawn().expect("starting grove-garden");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "grove-garden exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "grove-garden did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        GardenProcess { child, socket, log }
    }

    fn client(&self) -> Garden {
        Garden::new(&self.socket)
    }

    /// Peak resident memory (VmHWM) in KiB.
    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }
}

impl Drop for GardenProcess {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- garden.log\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

fn create(g: &Garden, spec: Value) -> String {
    let r = g.json("POST", "/containers", &spec).ok();
    // Garden's answer has the Go field name as its key.
    r.json()["Handle"].as_str().expect("Handle").to_string()
}

fn assert_error(r: &grove_tests::garden_client::Response, status: u16, kind: &str) -> Value {
    assert_eq!(
        r.status,
        status,
        "expected {status} {kind}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json();
    assert_eq!(body["Type"], kind, "{body}");
    body
}

#[test]
fn garden_json_routes_and_errors() {
    let env = TestEnv::start();
    let garden = GardenProcess::start(&env);
    let g = garden.client();

    // Ping and capacity.
    assert_eq!(g.get("/ping").ok().json(), json!({}));
    let cap = g.get("/capacity").ok().json();
    assert!(cap["memory_in_bytes"].as_u64().unwrap() > 0, "{cap}");
    assert!(cap["max_containers"].as_u64().unwrap() > 0, "{cap}");

    // Create with limits, env, properties, netin, netout and a grace time.
    let (lo, hi) = env.ports;
    let web = create(
        &g,
        json!({
            "handle": "garden-web",
            "grace_time": 3_600_000_000_000u64,
            "env": ["FOO=bar"],
            "properties": {"app": "web", "team": "blue"},
            "limits": {
                "memory_limits": {"limit_in_bytes": 64u64 << 20},
                "cpu_limits": {"limit_in_shares": 512},
                "pid_limits": {"max": 100},
                "bandwidth_limits": {"rate": 1_000_000, "burst": 100_000},
            },
            "netin": [{"host_port": lo, "container_port": 8080}],
            "netout_rules": [{"protocol": 1, "networks": [{"start": "10.0.0.1", "end": "10.0.0.9"}],
                              "ports": [{"start": 80, "end": 81}]}],
        }),
    );
    assert_eq!(web, "garden-web");
    let db = create(&g, json!({"properties": {"app": "db"}}));
    assert!(!db.is_empty());

    // The same handle again is a plain (500) error.
    let dup = g.json("POST", "/containers", &json!({"handle": "garden-web"}));
    assert_error(&dup, 500, "");

    // List with a property query (AND), and without.
    let all = g.get("/containers").ok().json();
    let handles: Vec<&str> = all["Handles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert!(
        handles.contains(&"garden-web") && handles.contains(&db.as_str()),
        "{all}"
    );
    let webs = g.get("/containers?app=web&team=blue").ok().json();
    assert_eq!(webs["Handles"], json!(["garden-web"]));
    let none = g.get("/containers?app=web&team=red").ok().json();
    assert_eq!(none["Handles"], json!([]));

    // Info: Go field names, properties, the netin mapping.
    let info = g.get("/containers/garden-web/info").ok().json();
    assert_eq!(info["State"], "active", "{info}");
    assert!(
        env.in_pool(info["ContainerIP"].as_str().unwrap().parse().unwrap()),
        "{info}"
    );
    assert_eq!(info["Properties"]["team"], "blue");
    assert_eq!(
        info["MappedPorts"],
        json!([{"HostPort": lo, "ContainerPort": 8080}]),
        "{info}"
    );

    // Current limits.
    let mem = g.get("/containers/garden-web/limits/memory").ok().json();
    assert_eq!(mem["limit_in_bytes"], 64u64 << 20);
    let cpu = g.get("/containers/garden-web/limits/cpu").ok().json();
    assert_eq!(cpu["limit_in_shares"], 512, "{cpu}");
    let bw = g.get("/containers/garden-web/limits/bandwidth").ok().json();
    assert_eq!(bw["rate"], 1_000_000, "{bw}");
    assert_eq!(bw["burst"], 100_000, "{bw}");
    let disk = g.get("/containers/garden-web/limits/disk").ok().json();
    assert!(disk.is_object(), "{disk}");

    // NetIn: host port 0 takes one from the pool; container port 0 = host.
    let netin = g
        .json(
            "POST",
            "/containers/garden-web/net/in",
            &json!({"handle": "garden-web", "host_port": 0, "container_port": 9090}),
        )
        .ok()
        .json();
    let host = netin["host_port"].as_u64().unwrap() as u16;
    assert!((lo..=hi).contains(&host) && host != lo, "{netin}");
    assert_eq!(netin["container_port"], 9090);
    let same = g
        .json(
            "POST",
            "/containers/garden-web/net/in",
            &json!({"host_port": hi}),
        )
        .ok()
        .json();
    assert_eq!(same, json!({"host_port": hi, "container_port": hi}));
    let info = g.get("/containers/garden-web/info").ok().json();
    assert_eq!(info["MappedPorts"].as_array().unwrap().len(), 3, "{info}");

    // NetOut and BulkNetOut; a bad protocol is refused.
    g.json(
        "POST",
        "/containers/garden-web/net/out",
        &json!({"protocol": 2, "networks": [{"start": "10.1.0.1"}], "ports": [{"start": 53, "end": 53}]}),
    )
    .ok();
    g.json(
        "POST",
        "/containers/garden-web/net/out/bulk",
        &json!([{"protocol": 3, "icmps": {"type": 8, "code": 0}}, {"protocol": 1, "log": true}]),
    )
    .ok();
    let bad = g.json(
        "POST",
        "/containers/garden-web/net/out",
        &json!({"protocol": 9}),
    );
    assert_error(&bad, 400, "");
    let nft = env.nft_table_text().expect("the env's nft table");
    assert!(
        nft.contains("10.1.0.1"),
        "the NetOut rule is in force:\n{nft}"
    );

    // Grace time: a bare duration in nanoseconds.
    assert_eq!(
        g.json(
            "PUT",
            "/containers/garden-web/grace_time",
            &json!(7_200_000_000_000u64)
        )
        .ok()
        .json(),
        json!({})
    );

    // Properties: get all, get one, set, remove.
    let props = g.get("/containers/garden-web/properties").ok().json();
    assert_eq!(props, json!({"app": "web", "team": "blue"}));
    g.json(
        "PUT",
        &format!("/containers/garden-web/properties/{}", esc("a key/1")),
        &json!({"value": "v 1"}),
    )
    .ok();
    let one = g
        .get(&format!(
            "/containers/garden-web/properties/{}",
            esc("a key/1")
        ))
        .ok()
        .json();
    assert_eq!(one, json!({"value": "v 1"}));
    g.request("DELETE", "/containers/garden-web/properties/team", None)
        .ok();
    let props = g.get("/containers/garden-web/properties").ok().json();
    assert_eq!(props, json!({"app": "web", "a key/1": "v 1"}));
    assert_error(&g.get("/containers/garden-web/properties/team"), 500, "");

    // Metrics, bulk info and bulk metrics (an unknown handle has its Err).
    let m = g.get("/containers/garden-web/metrics").ok().json();
    assert!(m["MemoryStat"]["TotalUsageTowardLimit"].is_u64(), "{m}");
    assert!(m["CPUStat"]["Usage"].is_u64(), "{m}");
    assert!(m["PidStat"]["Max"].as_u64() == Some(100), "{m}");
    assert!(m["Age"].as_i64().unwrap() > 0, "Age in ns: {m}");
    let bulk = g
        .get(&format!(
            "/containers/bulk_info?handles=garden-web,{db},nope"
        ))
        .ok()
        .json();
    assert_eq!(bulk["garden-web"]["Info"]["State"], "active", "{bulk}");
    assert_eq!(bulk["garden-web"]["Err"], Value::Null);
    assert_eq!(bulk[db.as_str()]["Info"]["Properties"]["app"], "db");
    assert_eq!(
        bulk["nope"]["Err"]["Type"], "ContainerNotFoundError",
        "{bulk}"
    );
    assert_eq!(bulk["nope"]["Err"]["Handle"], "nope");
    let bulk = g
        .get("/containers/bulk_metrics?handles=garden-web,nope")
        .ok()
        .json();
    assert!(
        bulk["garden-web"]["Metrics"]["MemoryStat"].is_object(),
        "{bulk}"
    );
    assert_eq!(bulk["garden-web"]["Err"], Value::Null);
    assert_eq!(bulk["nope"]["Err"]["Type"], "ContainerNotFoundError");

    // Error bodies: unknown handle on every kind of route → 404.
    for (method, path) in [
        ("GET", "/containers/nope/info"),
        ("GET", "/containers/nope/metrics"),
        ("GET", "/containers/nope/properties"),
        ("GET", "/containers/nope/limits/memory"),
        ("DELETE", "/containers/nope"),
        ("GET", "/containers/nope/processes/p1"),
    ] {
        let body = assert_error(
            &g.request(method, path, None),
            404,
            "ContainerNotFoundError",
        );
        assert_eq!(body["Handle"], "nope");
        assert_eq!(body["Message"], "unknown handle: nope");
    }
    let r = g.json("PUT", "/containers/nope/stop", &json!({"kill": false}));
    assert_error(&r, 404, "ContainerNotFoundError");
    // Malformed bodies, unknown routes, bad methods, malformed HTTP.
    let r = g.request("POST", "/containers", Some(b"{not json"));
    let body = assert_error(&r, 400, "");
    assert!(body["Message"].as_str().unwrap().contains("JSON"), "{body}");
    assert_error(&g.get("/nope"), 404, "");
    assert_error(&g.request("POST", "/ping", None), 405, "");
    {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&garden.socket).unwrap();
        s.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
    }

    // Keep-alive: several requests on one connection.
    let answers = g.pipelined(&[
        ("GET", "/ping"),
        ("GET", "/containers/garden-web/info"),
        ("GET", "/ping"),
    ]);
    assert_eq!(
        answers.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 200]
    );

    // Stop (kill): state "stopped"; then destroy, twice.
    g.json("PUT", "/containers/garden-web/stop", &json!({"kill": true}))
        .ok();
    let info = g.get("/containers/garden-web/info").ok().json();
    assert_eq!(info["State"], "stopped");
    assert_eq!(
        g.request("DELETE", "/containers/garden-web", None)
            .ok()
            .json(),
        json!({})
    );
    assert_error(
        &g.request("DELETE", "/containers/garden-web", None),
        404,
        "ContainerNotFoundError",
    );
    g.request("DELETE", &format!("/containers/{db}"), None).ok();
    assert_eq!(g.get("/containers").ok().json()["Handles"], json!([]));
}

#[test]
fn garden_tcp_socket_activation_and_refusals() {
    let env = TestEnv::start();
    let (uid, gid) = grove_user();
    let refused = |args: &[&str], user: bool| -> String {
        let mut cmd = Command::new(bin_dir().join("grove-garden"));
        cmd.args(args).arg("--grove-socket").arg(&env.socket);
        if user {
            as_user(&mut cmd, uid, gid);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "grove-garden {args:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // No authentication in Garden's protocol: off loopback only when told.
    let sock = env.run_dir.join("refused.sock");
    let sock = sock.to_str().unwrap();
    let port = env.ports.0 + 90;
    let err = refused(
        &["--listen", sock, "--listen-tcp", &format!("0.0.0.0:{port}")],
        true,
    );
    assert!(err.contains("allow_unauthenticated_remote"), "{err}");
    // No privilege needed, none taken.
    let err = refused(&["--listen", sock], false);
    assert!(err.contains("refusing to run as root"), "{err}");

    // TCP on loopback, next to the unix socket.
    let addr = format!("127.0.0.1:{port}");
    let garden = GardenProcess::start_with(&env, &["--listen-tcp", &addr], false);
    {
        use std::io::{Read, Write};
        // start_with waited for the unix socket; the TCP listener may come
        // a moment later (the guest lane's emulated CPU once lost that race).
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut tcp = loop {
            match std::net::TcpStream::connect(&addr) {
                Ok(tcp) => break tcp,
                Err(e) if Instant::now() > deadline => panic!("grove-garden on TCP: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        tcp.write_all(b"GET /ping HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n{}\n"), "{out:?}");
    }
    assert_eq!(garden.client().get("/ping").ok().json(), json!({}));
    drop(garden);

    // Socket activation: the socket systemd passed is used and left.
    let garden = GardenProcess::start_with(&env, &[], true);
    let g = garden.client();
    let h = create(&g, json!({}));
    let (status, out, _) = g.exec(&h, &json!({"path": "echo", "args": ["activated"]}), None);
    assert_eq!((status, out.as_slice()), (0, &b"activated\n"[..]));
    let socket = garden.socket.clone();
    drop(garden);
    assert!(socket.exists(), "grove-garden removed systemd's socket");
}

#[test]
fn garden_reconnects_after_groved_restarts() {
    let mut env = TestEnv::start();
    let garden = GardenProcess::start(&env);
    let g = garden.client();
    let h = create(&g, json!({"handle": "survivor"}));
    env.kill_and_restart_groved();
    // The request that finds the old connection dead says so (Garden's
    // ServiceUnavailableError); the next one connects again.
    let first = g.get("/ping");
    if first.status != 200 {
        assert_error(&first, 500, "ServiceUnavailableError");
    }
    assert_eq!(g.get("/ping").ok().json(), json!({}));
    let info = g.get(&format!("/containers/{h}/info")).ok().json();
    assert_eq!(info["State"], "active", "{info}");
    let (status, out, _) = g.exec(&h, &json!({"path": "echo", "args": ["again"]}), None);
    assert_eq!((status, out.as_slice()), (0, &b"again\n"[..]));
}

#[test]
fn garden_run_attach_tty_and_signals() {
    let env = TestEnv::start();
    let garden = GardenProcess::start(&env);
    let g = garden.client();
    let h = create(&g, json!({"handle": "garden-run", "env": ["FOO=bar"]}));

    // Stdin echoed through cat; stdout and stderr on their own streams.
    let (status, out, err) = g.exec(
        &h,
        &json!({"path": "cat", "image": {}, "rlimits": {}}),
        Some("hello garden\n"),
    );
    assert_eq!(
        (status, out.as_slice(), err.as_slice()),
        (0, &b"hello garden\n"[..], &b""[..])
    );
    let (status, out, err) = g.exec(
        &h,
        &json!({"path": "sh", "args": ["-c", "echo $FOO; echo oops >&2; exit 3"], "env": ["BAZ=1"]}),
        None,
    );
    assert_eq!(status, 3);
    assert_eq!(out, b"bar\n");
    assert_eq!(err, b"oops\n");

    // tty: a resize reaches the process before its stdin does.
    let mut s = g
        .run(
            &h,
            &json!({"path": "sh", "args": ["-c", "read x; stty size"],
                    "tty": {"window_size": {"columns": 80, "rows": 24}}}),
        )
        .expect("run with a tty");
    assert_eq!(
        s.status, 201,
        "run answers 201 Created, as Garden's server does"
    );
    let out = g
        .output(&h, &s.process_id, &s.stream_id, "stdout")
        .expect("stdout");
    let out = std::thread::spawn(move || out.read_to_end());
    let id = s.process_id.clone();
    s.send(json!({"process_id": id, "tty": {"window_size": {"columns": 123, "rows": 45}}}));
    s.stdin("go\n");
    assert_eq!(s.exit_status(), 0);
    let out = String::from_utf8(out.join().unwrap()).unwrap();
    assert!(out.contains("45 123"), "stty size saw the resize: {out:?}");

    // Signal: terminate a sleep (Garden's client gets 128 + SIGTERM).
    let mut s = g
        .run(&h, &json!({"path": "sleep", "args": ["1000"]}))
        .expect("run sleep");
    let id = s.process_id.clone();
    s.send(json!({"process_id": id, "signal": 0}));
    assert_eq!(s.exit_status(), 143);
    let mut s = g
        .run(&h, &json!({"path": "sleep", "args": ["1000"]}))
        .expect("run sleep");
    s.send(json!({"signal": 1}));
    assert_eq!(s.exit_status(), 137);

    // Attach after a reconnect: a process with our id prints a line, its
    // client goes away, a new connection attaches by id and gets the rest
    // and the exit status.
    let script = "echo one; while [ ! -e /tmp/go ]; do sleep 1; done; echo two; exit 7";
    let s = g
        .run(
            &h,
            &json!({"id": "garden-proc-1", "path": "sh", "args": ["-c", script]}),
        )
        .expect("run");
    assert_eq!(s.process_id, "garden-proc-1");
    let mut out = g
        .output(&h, &s.process_id, &s.stream_id, "stdout")
        .expect("stdout");
    assert_eq!(out.read_line(), "one\n");
    drop(out);
    drop(s);
    let info = g.get(&format!("/containers/{h}/info")).ok().json();
    assert!(
        info["ProcessIDs"]
            .as_array()
            .unwrap()
            .contains(&json!("garden-proc-1")),
        "the process outlived its client: {info}"
    );
    let mut s = g.attach(&h, "garden-proc-1").expect("attach");
    assert_eq!(s.status, 200);
    assert_eq!(s.process_id, "garden-proc-1");
    let out = g
        .output(&h, "garden-proc-1", &s.stream_id, "stdout")
        .expect("stdout");
    let err = g
        .output(&h, "garden-proc-1", &s.stream_id, "stderr")
        .expect("stderr");
    let out = std::thread::spawn(move || out.read_to_end());
    let (status, _, _) = g.exec(&h, &json!({"path": "touch", "args": ["/tmp/go"]}), None);
    assert_eq!(status, 0);
    assert_eq!(s.exit_status(), 7);
    assert_eq!(out.join().unwrap(), b"two\n");
    assert_eq!(err.read_to_end(), b"");

    // Unknown process, unknown stream id, unknown executable.
    let r = g.attach(&h, "no-such-process").err().expect("an error");
    let body = assert_error(&r, 404, "ProcessNotFoundError");
    assert_eq!(body["ProcessID"], "no-such-process");
    let r = g
        .output(&h, "garden-proc-1", "not-a-stream", "stdout")
        .err()
        .expect("an error");
    assert_error(&r, 404, "ProcessNotFoundError");
    let r = g
        .run(&h, &json!({"path": "/no/such/binary"}))
        .err()
        .expect("an error");
    assert_error(&r, 500, "ExecutableNotFoundError");
    let r = g
        .run("nope", &json!({"path": "true"}))
        .err()
        .expect("an error");
    assert_error(&r, 404, "ContainerNotFoundError");
    // What Grove cannot do is a typed refusal, never a fake success.
    let r = g
        .run(
            &h,
            &json!({"path": "true", "limits": {"memory_limits": {"limit_in_bytes": 1 << 20}}}),
        )
        .err()
        .expect("an error");
    let body = assert_error(&r, 500, "NotImplementedError");
    assert!(
        body["Message"]
            .as_str()
            .unwrap()
            .contains("per-process limits"),
        "{body}"
    );
}

/// A deterministic pseudo-random byte stream (xorshift).
struct Noise {
    state: u64,
    left: u64,
}

impl Read for Noise {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[test]
fn garden_stream_in_and_out_100_mib() {
    let env = TestEnv::start();
    let garden = GardenProcess::start(&env);
    let g = garden.client();
    let h = create(&g, json!({"handle": "garden-files"}));
    // 100 MiB, or GROVE_TEST_BIG_STREAM_MIB (the guest lane streams less).
    let size_mib: u64 = std::env::var("GROVE_TEST_BIG_STREAM_MIB")
        .map(|v| {
            v.trim()
                .parse()
                .expect("GROVE_TEST_BIG_STREAM_MIB is a number")
        })
        .unwrap_or(100);
    assert!(size_mib >= 32, "the RSS check needs at least 32 MiB");
    let size: u64 = size_mib << 20;

    // A tar of one file of `size` bytes, built as it is sent (header, data, padding
    // and the two zero blocks), hashing the data on the way.
    let mut header = tar::Header::new_gnu();
    header.set_path("big.bin").unwrap();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    let mut expected = Sha256::new();
    let mut noise = Noise {
        state: 0x9e3779b97f4a7c15,
        left: size,
    };
    let mut data = Vec::new();
    (&mut noise).take(size).read_to_end(&mut data).unwrap();
    expected.update(&data);
    let tail = vec![0u8; 1024];
    let mut tar_stream = std::io::Cursor::new(header.as_bytes().to_vec())
        .chain(std::io::Cursor::new(data))
        .chain(std::io::Cursor::new(tail));
    let start = Instant::now();
    let r = g.stream_in(&h, "", "/data", &mut tar_stream);
    let took_in = start.elapsed();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let expected = expected.finalize();

    let (status, out, _) = g.exec(
        &h,
        &json!({"path": "sh", "args": ["-c", "wc -c < /data/big.bin"]}),
        None,
    );
    assert_eq!(status, 0);
    assert_eq!(String::from_utf8(out).unwrap().trim(), size.to_string());

    // Out again, into a file, then the file's content from the tar.
    let got = env.root.join("garden-out.tar");
    let mut file = std::fs::File::create(&got).unwrap();
    let start = Instant::now();
    let r = g.stream_out(&h, "", "/data/big.bin", &mut file);
    let took_out = start.elapsed();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    drop(file);
    let mut archive = tar::Archive::new(std::fs::File::open(&got).unwrap());
    let mut found = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("big.bin") {
            let mut hash = Sha256::new();
            std::io::copy(&mut entry, &mut hash).unwrap();
            assert_eq!(
                hash.finalize(),
                expected,
                "the file came back byte for byte"
            );
            found = true;
        }
    }
    assert!(found, "big.bin is in the streamed-out tar");
    let _ = std::fs::remove_file(&got);
    let rss = garden.peak_rss_kib();
    println!(
        "garden {size_mib} MiB: stream in {:.2}s, stream out {:.2}s, grove-garden peak RSS {} KiB",
        took_in.as_secs_f64(),
        took_out.as_secs_f64(),
        rss
    );
    // Neither direction was held whole in memory (grove-garden's own
    // footprint is about 16 MiB).
    let bound_kib = (64 * 1024).min(size / 1024 * 3 / 4);
    assert!(
        rss < bound_kib,
        "grove-garden's peak RSS {rss} KiB (bound {bound_kib} KiB)"
    );

    // Errors: a missing source before any byte is Garden's error body; an
    // unknown handle is 404; a garbage tar fails the stream-in.
    let r = g.stream_out(&h, "", "/no/such/path", &mut std::io::sink());
    assert_error(&r, 500, "");
    let r = g.stream_out("nope", "", "/data", &mut std::io::sink());
    assert_error(&r, 404, "ContainerNotFoundError");
    let r = g.stream_in(&h, "", "/data", &mut std::io::Cursor::new(vec![7u8; 4096]));
    assert_error(&r, 500, "");
    let r = g.stream_in(
        "nope",
        "",
        "/data",
        &mut std::io::Cursor::new(vec![0u8; 1024]),
    );
    assert_error(&r, 404, "ContainerNotFoundError");
}

/// groved's property bounds reach Garden clients as Garden errors: a 100
/// KB property name in a create (the review's), a 2 KB one in a URL, a
/// 100 KB value; nothing is created or set.
#[test]
fn garden_property_names_and_values_are_bounded() {
    let env = TestEnv::start();
    let garden = GardenProcess::start(&env);
    let g = garden.client();
    let long = "k".repeat(100 * 1024);
    let r = g.json(
        "POST",
        "/containers",
        &json!({"handle": "props", "properties": {long.as_str(): "v"}}),
    );
    let body = assert_error(&r, 500, "");
    let msg = body["Message"].as_str().unwrap();
    assert!(
        msg.contains("[invalidSpec] spec.properties") && msg.contains("at most 1024 bytes"),
        "{msg}"
    );
    assert_eq!(g.get("/containers").ok().json()["Handles"], json!([]));
    create(&g, json!({"handle": "props"}));
    let put = |name: &str, value: &str| {
        g.json(
            "PUT",
            &format!("/containers/props/properties/{}", esc(name)),
            &json!({ "value": value }),
        )
    };
    for (name, value, needle) in [
        ("k".repeat(2000), "v".to_string(), "at most 1024 bytes"),
        (
            "k".to_string(),
            "v".repeat(100 * 1024),
            "at most 65536 bytes",
        ),
    ] {
        let body = assert_error(&put(&name, &value), 500, "");
        let msg = body["Message"].as_str().unwrap();
        assert!(
            msg.contains("[invalidSpec]") && msg.contains(needle),
            "{msg}"
        );
    }
    assert_eq!(g.get("/containers/props/properties").ok().json(), json!({}));
    put("k", "v").ok();
}

/// Issue 17, item 9: Garden's Process.Wait (a run session waiting for the
/// exit status) ends with an error naming the container's init when its
/// wshd is killed, instead of waiting for ever; info then says stopped.
#[test]
fn garden_process_wait_ends_when_the_container_s_init_is_killed() {
    let env = TestEnv::start();
    let garden = GardenProcess::start(&env);
    let g = garden.client();
    let h = create(&g, json!({"handle": "garden-initkill"}));
    let mut s = g
        .run(
            &h,
            &json!({"id": "garden-sleeper", "path": "sleep", "args": ["1000"]}),
        )
        .expect("run sleep");
    let info = g.get(&format!("/containers/{h}/info")).ok().json();
    assert_eq!(info["ProcessIDs"], json!(["garden-sleeper"]), "{info}");
    let pid: i32 = std::fs::read_to_string(env.depot.join(&h).join("wshd.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // (The session's socket gives up after 120 s: a wait that hangs fails.)
    let error = loop {
        let p = s.next_payload().expect("a payload before the session ends");
        assert!(p.get("exit_status").is_none(), "no exit status: {p}");
        if let Some(e) = p.get("error") {
            break e.as_str().unwrap().to_string();
        }
    };
    assert!(error.contains("init process (wshd)"), "{error}");
    let info = g.get(&format!("/containers/{h}/info")).ok().json();
    assert_eq!(info["State"], "stopped", "{info}");
    g.request("DELETE", &format!("/containers/{h}"), None).ok();
}

/// Garden's Docker Hub URIs (`docker:///busybox`, with and without a
/// `#tag`) reach groved as Docker Hub's library repository; here Docker
/// Hub is a mirror on 127.0.0.1 (no fallback, and groved's proxies point
/// at a closed loopback port: nothing leaves the host).
#[test]
fn garden_docker_hub_uris_pull_from_a_docker_io_mirror() {
    use grove_tests::registry::{free_port, Registry};
    let mirror = Registry::start(
        std::env::temp_dir().join(format!("grove-garden-mirror-{}", std::process::id())),
    );
    let dead = format!("http://127.0.0.1:{}", free_port());
    let env = TestEnv::start_with_options(EnvOptions {
        groved_extra: format!(
            "insecure_registries = {m}\nregistry_mirrors = \"docker.io={m}\"\nregistry_fallback = false\n",
            m = mirror.addr
        ),
        groved_env: vec![
            ("HTTPS_PROXY".into(), dead.clone()),
            ("HTTP_PROXY".into(), dead),
            ("NO_PROXY".into(), "127.0.0.1".into()),
        ],
        ..EnvOptions::default()
    });
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", &env.rootfs).unwrap();
    let base = b.into_inner().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let text = b"from docker hub\n";
    let mut h = grove_tests::oci::header(tar::EntryType::Regular, text.len() as u64, 0o644);
    b.append_data(&mut h, "hub-marker", &text[..]).unwrap();
    let top = b.into_inner().unwrap();
    for tag in ["latest", "1.36"] {
        mirror.push_image(
            "library/busybox",
            tag,
            &[base.clone(), top.clone()],
            "amd64",
        );
    }
    let garden = GardenProcess::start(&env);
    let g = garden.client();
    for (handle, rootfs) in [
        ("hub-plain", "docker:///busybox"),
        ("hub-tagged", "docker:///busybox#1.36"),
        ("hub-library", "docker:///library/busybox#latest"),
    ] {
        let h = create(&g, json!({"handle": handle, "rootfs": rootfs}));
        let (status, out, err) = g.exec(
            &h,
            &json!({"path": "cat", "args": ["/hub-marker"], "user": "root"}),
            None,
        );
        assert_eq!(
            (status, String::from_utf8_lossy(&out).into_owned()),
            (0, "from docker hub\n".to_string()),
            "{rootfs}: {}",
            String::from_utf8_lossy(&err)
        );
        g.request("DELETE", &format!("/containers/{h}"), None).ok();
    }
}
