//! The `grove` CLI against a real groved: each subcommand's output and exit
//! status, and one clear line on error.

use grove_client::Command;
use grove_tests::*;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_subcommand_works_and_errors_are_one_line() {
    let env = TestEnv::start();
    let ok = |args: &[&str]| run_cli_ok(&env, args);
    assert_eq!(ok(&["ping"]), "ok\n");
    assert!(ok(&["capacity"]).contains("max_containers: 100"));
    assert_eq!(
        ok(&[
            "create",
            "--handle",
            "cli",
            "--property",
            "team=a",
            "--env",
            "GREETING=hi"
        ]),
        "cli\n"
    );
    assert_eq!(ok(&["list"]), "cli\n");
    assert_eq!(ok(&["list", "--property", "team=b"]), "");
    let info = ok(&["info", "cli"]);
    assert!(
        info.contains("state: active") && info.contains("property: team=a"),
        "{info}"
    );

    let out = run_cli(
        &env,
        &[
            "run",
            "cli",
            "--",
            "sh",
            "-c",
            "echo $GREETING; echo err >&2; exit 3",
        ],
        None,
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (Some(3), "hi\n".into(), "err\n".into())
    );
    let out = run_cli(&env, &["run", "cli", "--", "sh", "-c", "kill -9 $$"], None);
    assert_eq!(
        out.status.code(),
        Some(137),
        "128 + SIGKILL, as a shell reports it"
    );
    let out = run_cli(
        &env,
        &["run", "-i", "cli", "--", "tr", "a-z", "A-Z"],
        Some(b"shout\n"),
    );
    assert_eq!(text(&out.stdout), "SHOUT\n");
    let out = run_cli(
        &env,
        &[
            "run",
            "--rlimit",
            "nofile=77",
            "--user",
            "user",
            "cli",
            "--",
            "sh",
            "-c",
            "ulimit -n; id -u",
        ],
        None,
    );
    assert_eq!(text(&out.stdout), "77\n1000\n");

    // attach: to a process started elsewhere, with its retained output.
    block_on(async {
        let client = env.connect().await;
        let container = client.lookup("cli").await.unwrap();
        let mut command = Command::new("sh", &["-c", "echo kept; exit 4"]);
        command.id = "bg".into();
        let mut request = container.run_request();
        command.fill(request.get().init_spec()).unwrap();
        request.get().init_io();
        let process = request
            .send()
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_process()
            .unwrap();
        process.wait_request().send().promise.await.unwrap();
    });
    let out = run_cli(&env, &["attach", "cli", "bg"], None);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(4), "kept\n".into())
    );

    // Limits and metrics.
    assert_eq!(
        ok(&[
            "limit",
            "cli",
            "--memory",
            "64M",
            "--cpu-shares",
            "256",
            "--cpu-quota",
            "20000/100000",
            "--pids",
            "40"
        ]),
        ""
    );
    let limits = ok(&["limits", "cli"]);
    for line in [
        "memory_bytes: 64MiB",
        "cpu_shares: 256",
        "cpu_quota: 20000/100000",
        "pids_max: 40",
    ] {
        assert!(limits.contains(line), "{line} in {limits}");
    }
    assert_eq!(
        ok(&[
            "limit",
            "cli",
            "--disk",
            "100M",
            "--disk-scope",
            "exclusive"
        ]),
        ""
    );
    assert!(ok(&["limits", "cli"]).contains("disk_bytes: 100MiB (exclusive)"));
    assert!(ok(&["limits", "cli"]).contains("disk_inodes: none (exclusive)"));
    // An inode limit reaches the helper, which says why btrfs cannot have
    // it; a scope on its own is refused by the CLI.
    let out = run_cli(&env, &["limit", "cli", "--limit-disk-inodes", "1000"], None);
    assert!(
        !out.status.success() && text(&out.stderr).contains("btrfs qgroups count no inodes"),
        "{}",
        text(&out.stderr)
    );
    let out = run_cli(&env, &["limit", "cli", "--disk-scope", "total"], None);
    assert!(
        !out.status.success() && text(&out.stderr).contains("--disk-scope needs"),
        "{}",
        text(&out.stderr)
    );
    assert!(ok(&["limits", "cli"]).contains("disk_bytes: 100MiB (exclusive)"));
    let metrics = ok(&["metrics", "cli"]);
    assert!(metrics.contains("disk_exclusive_bytes: "), "{metrics}");
    assert!(
        metrics.contains("pids_max: 40") && metrics.contains("memory_usage: "),
        "{metrics}"
    );
    let out = run_cli(&env, &["limit", "cli", "--cpu-shares", "1"], None);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("cpu_shares"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        ok(&[
            "create",
            "--handle",
            "cli-limited",
            "--memory",
            "32M",
            "--pids",
            "10"
        ]),
        "cli-limited\n"
    );
    assert!(ok(&["limits", "cli-limited"]).contains("pids_max: 10"));
    assert_eq!(ok(&["destroy", "cli-limited"]), "");
    assert!(run_cli(&env, &["stop", "--kill", "cli"], None)
        .status
        .success());
    assert!(ok(&["info", "cli"]).contains("state: stopped"));
    for (args, message) in [
        (
            vec!["info", "nope"],
            "grove: unknown handle: nope (containerNotFound)\n",
        ),
        (
            vec!["run", "cli", "--", "true"],
            "grove: container cli is stopped (invalidState)\n",
        ),
        (
            vec!["attach", "cli", "nope"],
            "grove: unknown process: nope (processNotFound)\n",
        ),
    ] {
        let out = run_cli(&env, &args, None);
        assert_eq!(out.status.code(), Some(125), "{args:?}");
        assert_eq!(text(&out.stderr), message, "{args:?}");
    }
    assert_eq!(ok(&["destroy", "cli"]), "");
    assert_eq!(ok(&["list"]), "");
    let out = std::process::Command::new(bin_dir().join("grove"))
        .args(["--socket", "/nonexistent/grove.sock", "ping"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "one line: {}",
        text(&out.stderr)
    );
}

/// `grove` with this env's socket, as a child that runs on (for a process
/// to signal or stop while the CLI waits on it).
fn spawn_cli(env: &TestEnv, args: &[&str]) -> std::process::Child {
    std::process::Command::new(bin_dir().join("grove"))
        .arg("--socket")
        .arg(&env.socket)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running grove")
}

fn json(out: &str) -> serde_json::Value {
    assert_eq!(
        out.lines().count(),
        1,
        "one JSON document on one line: {out}"
    );
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Wait until `grove info` lists the process as running.
fn wait_running(env: &TestEnv, handle: &str, id: &str) {
    eventually(&format!("process {id} runs in {handle}"), || {
        let info = json(&run_cli_ok(env, &["--json", "info", handle]));
        info["process_ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == id)
    });
}

/// A host TCP server on `ip`: each connection is read to its end and
/// answered with "hello-from-host".
fn host_server(ip: std::net::Ipv4Addr) -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(10)));
            let _ = stream.read_to_end(&mut Vec::new());
            let _ = stream.write_all(b"hello-from-host");
        }
    });
    port
}

#[test]
fn create_flags_are_in_force_and_json_reports_them() {
    let env = TestEnv::start();
    let ok = |args: &[&str]| run_cli_ok(&env, args);
    let host_port = host_server(env.gateway);
    let rule = format!("tcp,network={},port={host_port}", env.gateway);
    let created = ok(&[
        "--json",
        "create",
        "--handle",
        "made",
        "--limit-memory",
        "64M",
        "--limit-pids",
        "20",
        "--limit-cpu",
        "512",
        "--net-out",
        &rule,
        "--net-out",
        "icmp,icmp-type=8",
        "--property",
        "team=a",
        "--property",
        "tier=web",
        "--grace-time",
        "600",
    ]);
    assert_eq!(json(&created), serde_json::json!({ "handle": "made" }));
    // The old flag names still work.
    assert_eq!(
        ok(&[
            "create",
            "--handle",
            "plain",
            "--memory",
            "32M",
            "--pids",
            "10",
            "--cpu-shares",
            "256",
            "--property",
            "team=b",
        ]),
        "plain\n"
    );

    let limits = ok(&["limits", "made"]);
    for line in ["memory_bytes: 64MiB", "pids_max: 20", "cpu_shares: 512"] {
        assert!(limits.lines().any(|l| l == line), "{line} in {limits}");
    }
    let limits = json(&ok(&["--json", "limits", "made"]));
    assert_eq!(limits["memory"]["limit_in_bytes"], 64 << 20);
    assert_eq!(limits["pid"]["max"], 20);
    assert_eq!(limits["cpu"]["weight"], 512);
    assert_eq!(limits["bandwidth"]["rate_in_bytes_per_second"], 0);
    assert_eq!(limits["disk"]["scope"], "total");
    let limits = json(&ok(&["--json", "limits", "plain"]));
    assert_eq!(
        (
            &limits["memory"]["limit_in_bytes"],
            &limits["pid"]["max"],
            &limits["cpu"]["weight"]
        ),
        (
            &serde_json::json!(32 << 20),
            &serde_json::json!(10),
            &serde_json::json!(256)
        )
    );

    let info = json(&ok(&["--json", "info", "made"]));
    assert_eq!(info["handle"], "made");
    assert_eq!(info["state"], "active");
    assert_eq!(
        info["properties"],
        serde_json::json!({ "team": "a", "tier": "web" })
    );
    assert!(info["container_ip"].as_str().unwrap().starts_with("10."));
    assert!(info["process_ids"].as_array().unwrap().is_empty());

    // The create's rules are in force: "made" reaches the host's port and
    // pings the gateway; "plain", without rules, does neither.
    let reach = |handle: &str| {
        let script = format!("echo hi | timeout 5 nc {} {host_port}", env.gateway);
        run_cli(&env, &["run", handle, "--", "sh", "-c", &script], None)
    };
    let out = reach("made");
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "hello-from-host".into()),
        "{}",
        text(&out.stderr)
    );
    let out = reach("plain");
    assert!(
        !out.status.success() && !text(&out.stdout).contains("hello-from-host"),
        "no rule, no egress"
    );
    let ping = format!("ping -c 1 -W 2 {}", env.gateway);
    let out = run_cli(&env, &["run", "made", "--", "sh", "-c", &ping], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // list --property: every given pair must match.
    assert_eq!(ok(&["list", "--property", "team=a"]), "made\n");
    assert_eq!(
        ok(&["list", "--property", "team=a", "--property", "tier=web"]),
        "made\n"
    );
    assert_eq!(
        ok(&["list", "--property", "team=a", "--property", "tier=db"]),
        ""
    );
    let mut all: Vec<String> = ok(&["list"]).lines().map(str::to_string).collect();
    all.sort();
    assert_eq!(all, ["made", "plain"]);
    assert_eq!(
        json(&ok(&["--json", "list", "--property", "team=b"])),
        serde_json::json!({ "handles": ["plain"] })
    );

    // The rest of --json: ping, capacity, metrics, net-in.
    assert_eq!(
        json(&ok(&["--json", "ping"])),
        serde_json::json!({ "ok": true })
    );
    let capacity = json(&ok(&["capacity", "--json"]));
    assert_eq!(capacity["max_containers"], 100);
    assert!(capacity["memory_in_bytes"].as_u64().unwrap() > 0);
    let metrics = json(&ok(&["--json", "metrics", "made"]));
    assert_eq!(metrics["pid"]["max"], 20);
    assert!(
        metrics["memory"]["usage"].as_u64().unwrap() > 0,
        "{metrics}"
    );
    assert!(metrics["memory"]["stat"].as_object().unwrap().len() > 5);
    assert!(metrics["age_seconds"].as_f64().unwrap() > 0.0);
    let port = (env.ports.0 + 1).to_string();
    let mapped = json(&ok(&[
        "--json",
        "net-in",
        "made",
        "--host-port",
        &port,
        "--container-port",
        "80",
    ]));
    assert_eq!(
        mapped,
        serde_json::json!({ "host_port": env.ports.0 + 1, "container_port": 80 })
    );
    let info = json(&ok(&["--json", "info", "made"]));
    assert_eq!(
        info["mapped_ports"],
        serde_json::json!([{ "host_port": env.ports.0 + 1, "container_port": 80 }])
    );

    // A bad rule is a usage error, before anything is created.
    let out = run_cli(
        &env,
        &["create", "--handle", "bad", "--net-out", "tcp,port=x"],
        None,
    );
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--net-out"));
    assert!(!ok(&["list"]).contains("bad"));
}

#[test]
fn signal_stop_kill_and_properties() {
    let env = TestEnv::start();
    let ok = |args: &[&str]| run_cli_ok(&env, args);
    ok(&["create", "--handle", "sig", "--property", "team=a"]);

    // signal: a long sleep run by a `grove run` that waits on it.
    let waiting = spawn_cli(
        &env,
        &["run", "--id", "sleeper", "sig", "--", "sleep", "300"],
    );
    wait_running(&env, "sig", "sleeper");
    assert_eq!(ok(&["signal", "sig", "sleeper", "TERM"]), "");
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 15), "{}", text(&out.stderr));
    let out = run_cli(&env, &["attach", "sig", "sleeper"], None);
    assert_eq!(out.status.code(), Some(143), "attach reports the same");
    // By number, at a process started through the API and never waited on.
    block_on(async {
        let client = env.connect().await;
        let container = client.lookup("sig").await.unwrap();
        let mut command = Command::new("sleep", &["300"]);
        command.id = "bg".into();
        let mut request = container.run_request();
        command.fill(request.get().init_spec()).unwrap();
        request.get().init_io();
        request.send().promise.await.unwrap();
    });
    wait_running(&env, "sig", "bg");
    ok(&["signal", "sig", "bg", "9"]);
    assert_eq!(
        run_cli(&env, &["attach", "sig", "bg"], None).status.code(),
        Some(137)
    );
    for (args, code, needle) in [
        (
            vec!["signal", "sig", "nope", "TERM"],
            125,
            "(processNotFound)",
        ),
        (
            vec!["signal", "nope", "x", "TERM"],
            125,
            "(containerNotFound)",
        ),
        (vec!["signal", "sig", "bg", "STOP"], 125, "TERM"),
    ] {
        let out = run_cli(&env, &args, None);
        assert_eq!(out.status.code(), Some(code), "{args:?}");
        assert!(text(&out.stderr).contains(needle), "{}", text(&out.stderr));
    }

    // properties: list, get, set, remove.
    assert_eq!(ok(&["properties", "sig"]), "team=a\n");
    assert_eq!(ok(&["properties", "sig", "set", "tier", "web"]), "");
    assert_eq!(ok(&["properties", "sig", "get", "tier"]), "web\n");
    assert_eq!(ok(&["properties", "sig", "set", "team", "b"]), "");
    assert_eq!(
        json(&ok(&["--json", "properties", "sig"])),
        serde_json::json!({ "team": "b", "tier": "web" })
    );
    assert_eq!(
        json(&ok(&["--json", "properties", "sig", "get", "team"])),
        serde_json::json!({ "name": "team", "value": "b" })
    );
    assert_eq!(ok(&["list", "--property", "tier=web"]), "sig\n");
    assert_eq!(ok(&["properties", "sig", "remove", "tier"]), "");
    assert_eq!(ok(&["properties", "sig"]), "team=b\n");
    let out = run_cli(&env, &["properties", "sig", "get", "tier"], None);
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("tier"), "{}", text(&out.stderr));

    // stop --kill: at once, even for a process that ignores SIGTERM
    // (a plain stop would wait 10 s for it).
    let stubborn = spawn_cli(
        &env,
        &[
            "run",
            "--id",
            "stubborn",
            "sig",
            "--",
            "sh",
            "-c",
            "trap '' TERM; sleep 300",
        ],
    );
    wait_running(&env, "sig", "stubborn");
    let started = std::time::Instant::now();
    assert_eq!(ok(&["stop", "--kill", "sig"]), "");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "stop --kill took {:?}",
        started.elapsed()
    );
    let out = stubborn.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
    let info = json(&ok(&["--json", "info", "sig"]));
    assert_eq!(info["state"], "stopped");
    assert!(info["process_ids"].as_array().unwrap().is_empty());
}

#[test]
fn stream_in_and_out_with_files() {
    let env = TestEnv::start();
    let ok = |args: &[&str]| run_cli_ok(&env, args);
    ok(&["create", "--handle", "files"]);
    let dir = env.root.join("cli-files");
    std::fs::create_dir_all(&dir).unwrap();
    let tar_in = dir.join("in.tar");
    let mut builder = tar::Builder::new(Vec::new());
    let content = b"hello from a file\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(content.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_cksum();
    builder
        .append_data(&mut header, "hello.txt", &content[..])
        .unwrap();
    std::fs::write(&tar_in, builder.into_inner().unwrap()).unwrap();

    let tar_in = tar_in.to_str().unwrap();
    assert_eq!(
        ok(&["stream-in", "files", "--path", "/tmp/in", "-f", tar_in]),
        ""
    );
    assert_eq!(
        ok(&["run", "files", "--", "cat", "/tmp/in/hello.txt"]),
        "hello from a file\n"
    );
    let tar_out = dir.join("out.tar");
    let out_path = tar_out.to_str().unwrap();
    assert_eq!(
        ok(&[
            "stream-out",
            "files",
            "--path",
            "/tmp/in/hello.txt",
            "--file",
            out_path
        ]),
        "",
        "the tar goes to the file, not stdout"
    );
    let mut archive = tar::Archive::new(std::fs::File::open(&tar_out).unwrap());
    let entries: Vec<(String, Vec<u8>)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (name, data)
        })
        .collect();
    assert_eq!(entries, [("hello.txt".to_string(), content.to_vec())]);
    // "-" is stdin / stdout.
    let out = run_cli(
        &env,
        &["stream-in", "files", "--path", "/tmp/again", "-f", "-"],
        Some(&std::fs::read(tar_in).unwrap()),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_cli(
        &env,
        &[
            "stream-out",
            "files",
            "--path",
            "/tmp/again/hello.txt",
            "-f",
            "-",
        ],
        None,
    );
    assert_eq!(out.stdout, std::fs::read(&tar_out).unwrap());
    // No meter when stderr is not a terminal.
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));

    // Failures: a missing input file, an unreadable path (the output file
    // is not left behind).
    let missing = dir.join("missing.tar");
    let out = run_cli(
        &env,
        &[
            "stream-in",
            "files",
            "--path",
            "/tmp/x",
            "-f",
            missing.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("missing.tar"),
        "{}",
        text(&out.stderr)
    );
    let bad = dir.join("bad.tar");
    let out = run_cli(
        &env,
        &[
            "stream-out",
            "files",
            "--path",
            "/nope",
            "-f",
            bad.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(text(&out.stderr).contains("/nope"), "{}", text(&out.stderr));
    assert!(!bad.exists(), "a failed stream-out leaves no file");
}

#[test]
fn exit_codes_completions_and_help() {
    let env = TestEnv::start();
    let ok = |args: &[&str]| run_cli_ok(&env, args);
    ok(&["create", "--handle", "codes"]);
    let code = |args: &[&str]| run_cli(&env, args, None).status.code();
    assert_eq!(code(&["run", "codes", "--", "sh", "-c", "exit 7"]), Some(7));
    assert_eq!(code(&["run", "codes", "--", "true"]), Some(0));
    let out = run_cli(&env, &["info", "no-such"], None);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        text(&out.stderr),
        "grove: unknown handle: no-such (containerNotFound)\n"
    );
    assert_eq!(code(&["destroy", "no-such"]), Some(125));
    // podman's 127: the executable cannot be found.
    let out = run_cli(&env, &["run", "codes", "no-such-program"], None);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).ends_with("(executableNotFound)\n"),
        "{}",
        text(&out.stderr)
    );
    // A process's own 125 or 127 is its own, as with podman.
    assert_eq!(code(&["run", "codes", "sh", "-c", "exit 125"]), Some(125));
    for bad in [
        vec!["info", "codes", "--bogus"],
        vec!["no-such-subcommand"],
        vec!["create", "--limit-memory", "lots"],
        vec!["limit", "codes"],
        vec!["run", "codes"],
        vec!["completions", "tcsh"],
    ] {
        let out = run_cli(&env, &bad, None);
        assert_eq!(
            out.status.code(),
            Some(125),
            "{bad:?}: {}",
            text(&out.stderr)
        );
        assert!(text(&out.stderr).starts_with("error: "), "{bad:?}");
    }

    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&["completions", shell]);
        assert!(
            script.contains("grove") && script.contains("GROVE_COMPLETE"),
            "{shell}: {script}"
        );
    }
    let help = ok(&["--help"]);
    for needle in [
        "Exit status",
        "128+N",
        "125",
        "127",
        "--json",
        "--bytes",
        "Connection:",
        "completions",
        "signal",
        "inspect",
        "stats",
        "[aliases: ps, ls]",
        "[alias: exec]",
    ] {
        assert!(help.contains(needle), "{needle} in {help}");
    }
    let help = ok(&["create", "--help"]);
    for needle in [
        "--image <URI>",
        "--limit-memory",
        "[alias: --memory]",
        "--limit-bandwidth",
        "--net-out <RULE>",
        "Example: --limit-pids 100",
    ] {
        assert!(help.contains(needle), "{needle} in {help}");
    }
}

/// An image in a local registry: the busybox rootfs plus /image-marker,
/// with FROM_IMAGE=yes in its config's Env; returns its docker:// URI.
fn push_test_image(env: &TestEnv, reg: &grove_tests::registry::Registry) -> String {
    use grove_tests::oci::sha;
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", &env.rootfs).unwrap();
    let marker = b"from the image\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(marker.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "image-marker", &marker[..]).unwrap();
    let layer = b.into_inner().unwrap();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["FROM_IMAGE=yes", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha(&layer))]}
    }))
    .unwrap();
    let repo = "cli/busybox";
    let layer_digest = reg.push_blob(repo, &layer);
    let config_digest = reg.push_blob(repo, &config);
    let media_type = "application/vnd.oci.image.manifest.v1+json";
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer.len()}]
    }))
    .unwrap();
    reg.push_manifest(repo, "v1", media_type, &manifest);
    format!("docker://{}/{repo}:v1", reg.addr)
}

#[test]
fn create_image_pulls_with_progress_and_credentials() {
    let reg = grove_tests::registry::Registry::start(
        std::env::temp_dir().join(format!("grove-cli-registry-{}", std::process::id())),
    );
    let env = TestEnv::start_with(&format!("insecure_registries = {}\n", reg.addr));
    let uri = push_test_image(&env, &reg);
    // Credentials from the environment go with a pull (this registry asks
    // for none), and are left out of anything else.
    let grove = |args: &[&str]| {
        std::process::Command::new(bin_dir().join("grove"))
            .arg("--socket")
            .arg(&env.socket)
            .args(args)
            .env("GROVE_IMAGE_USERNAME", "ci")
            .env("GROVE_IMAGE_PASSWORD", "secret")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = grove(&["create", "--handle", "pulled", "--image", &uri]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "pulled\n");
    // Not a terminal: one summary line instead of a bar.
    assert!(
        text(&out.stderr).starts_with("pulled "),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        run_cli_ok(
            &env,
            &[
                "run",
                "pulled",
                "--",
                "sh",
                "-c",
                "cat /image-marker; echo $FROM_IMAGE"
            ]
        ),
        "from the image\nyes\n"
    );
    let out = grove(&["create", "--handle", "plain"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Given as flags they always go: groved refuses them for a non-pull.
    let out = run_cli(
        &env,
        &[
            "create",
            "--image",
            "oci:/nonexistent",
            "--image-username",
            "ci",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(
        text(&out.stderr).contains("spec.image.username")
            && text(&out.stderr).contains("(invalidSpec)"),
        "{}",
        text(&out.stderr)
    );
    let out = run_cli(
        &env,
        &["create", "--image", "oci:/x", "--rootfs", "/y"],
        None,
    );
    assert_eq!(
        out.status.code(),
        Some(125),
        "an image or a rootfs, not both"
    );
    let mut handles: Vec<String> = run_cli_ok(&env, &["list"])
        .lines()
        .map(str::to_string)
        .collect();
    handles.sort();
    assert_eq!(handles, ["plain", "pulled"]);
}

/// The shell's candidates for the word at the end of `words` (grove's bash
/// completion, as bash runs it on Tab).
fn bash_completes(env: &TestEnv, words: &[&str]) -> Vec<String> {
    let script = run_cli_ok(env, &["completions", "bash"]);
    let mut line = vec![
        "grove".to_string(),
        "--socket".into(),
        env.socket.display().to_string(),
    ];
    line.extend(words.iter().map(|w| w.to_string()));
    let quoted: Vec<String> = line.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "{script}\nCOMP_WORDS=({})\nCOMP_CWORD={}\nCOMP_TYPE=9\n_clap_complete_grove grove '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        quoted.join(" "),
        line.len() - 1,
        line[line.len() - 1],
        line[line.len() - 2],
    );
    // The script calls `grove` from PATH, as an installed one would be.
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .args(["--norc", "-c", &program])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut got: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    got.sort();
    got
}

#[test]
fn podman_users_find_their_commands() {
    let env = TestEnv::start();
    let ok = |args: &[&str]| run_cli_ok(&env, args);
    let port = (env.ports.0 + 2).to_string();
    let mapping = format!("{port}:80");
    ok(&[
        "create",
        "--handle",
        "pod-a",
        "-e",
        "FROM_CREATE=yes",
        "--net-in",
        &mapping,
        "--limit-memory",
        "64M",
    ]);
    ok(&["create", "--handle", "pod-b"]);

    // exec, -e/-u/-w, no `--`; -e NAME takes our value.
    let out = std::process::Command::new(bin_dir().join("grove"))
        .arg("--socket")
        .arg(&env.socket)
        .args([
            "exec",
            "-e",
            "X=1",
            "-e",
            "FROM_HOST",
            "-u",
            "user",
            "-w",
            "/tmp",
            "pod-a",
        ])
        .args([
            "sh",
            "-c",
            "echo $X $FROM_HOST $FROM_CREATE $(pwd) $(id -u)",
        ])
        .env("FROM_HOST", "carried")
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "1 carried yes /tmp 1000\n",
        "{}",
        text(&out.stderr)
    );

    // ps / ls / list --long: the table, and its JSON.
    let table = ok(&["ps", "--long"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        ["HANDLE", "STATE", "IP", "PORTS", "PROCESSES", "AGE"]
    );
    let row_a = lines.iter().find(|l| l.starts_with("pod-a ")).unwrap();
    let cells: Vec<&str> = row_a.split_whitespace().collect();
    assert_eq!(cells[1], "active");
    assert!(cells[2].starts_with("10."), "{row_a}");
    assert_eq!(cells[3], format!("{port}->80"));
    assert_eq!(cells[4], "0");
    assert!(
        cells[5].ends_with('s') || cells[5].ends_with('m'),
        "{row_a}"
    );
    assert!(ok(&["ls"]).contains("pod-b"));
    let long = json(&ok(&["--json", "list", "-l", "--property", "nope=x"]));
    assert_eq!(long, serde_json::json!({ "containers": [] }));
    let long = json(&ok(&["--json", "ls", "-la"]));
    let a = long["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["handle"] == "pod-a")
        .unwrap()
        .clone();
    assert_eq!(a["state"], "active");
    assert_eq!(a["mapped_ports"][0]["container_port"], 80);
    assert!(a["age_seconds"].as_f64().unwrap() >= 0.0);

    // Sizes: human by default, raw with --bytes; JSON always raw.
    assert!(ok(&["limits", "pod-a"])
        .lines()
        .any(|l| l == "memory_bytes: 64MiB"));
    assert!(ok(&["--bytes", "limits", "pod-a"])
        .lines()
        .any(|l| l == "memory_bytes: 67108864"));
    let metrics = ok(&["metrics", "pod-a"]);
    let usage = metrics
        .lines()
        .find(|l| l.starts_with("memory_usage: "))
        .unwrap();
    assert!(usage.ends_with("iB") || usage.ends_with('B'), "{usage}");
    let raw = ok(&["metrics", "pod-a", "--bytes"]);
    let usage = raw
        .lines()
        .find(|l| l.starts_with("memory_usage: "))
        .unwrap();
    assert!(
        usage["memory_usage: ".len()..].parse::<u64>().is_ok(),
        "{usage}"
    );

    // inspect: one array; a missing handle is reported after it (125).
    let described: serde_json::Value =
        serde_json::from_str(&ok(&["inspect", "pod-a", "pod-b"])).unwrap();
    assert_eq!(described.as_array().unwrap().len(), 2);
    assert_eq!(described[0]["handle"], "pod-a");
    assert_eq!(described[0]["limits"]["memory"]["limit_in_bytes"], 64 << 20);
    assert_eq!(described[1]["state"], "active");
    let out = run_cli(&env, &["--json", "inspect", "pod-b", "nope"], None);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(json(&text(&out.stdout)).as_array().unwrap().len(), 1);
    assert!(
        text(&out.stderr).contains("(containerNotFound)"),
        "{}",
        text(&out.stderr)
    );

    // Shell completion of handles (and of subcommands).
    // An empty word offers the flags too (clap's way); the values are the
    // handles.
    let offered = bash_completes(&env, &["info", ""]);
    let values: Vec<&String> = offered.iter().filter(|c| !c.starts_with('-')).collect();
    assert_eq!(values, ["pod-a", "pod-b"], "{offered:?}");
    assert!(offered.contains(&"--json".to_string()), "{offered:?}");
    assert_eq!(
        bash_completes(&env, &["rm", "-f", "pod-"]),
        ["pod-a", "pod-b"]
    );
    assert_eq!(bash_completes(&env, &["insp"]), ["inspect"]);

    // rm: a container running a process needs -f (2); a missing one is 1
    // (unless -i); the worst wins.
    let id = ok(&["run", "-d", "pod-b", "sleep", "300"]);
    let id = id.trim();
    assert!(!id.is_empty());
    ok(&["create", "--handle", "pod-c"]);
    let out = run_cli(&env, &["rm", "pod-c", "pod-b", "nope"], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "pod-c\n");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("pod-b has running processes ({id})")),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown handle: nope (containerNotFound)"),
        "{stderr}"
    );
    assert_eq!(run_cli(&env, &["rm", "nope"], None).status.code(), Some(1));
    assert_eq!(ok(&["rm", "-i", "nope"]), "");
    assert_eq!(
        json(&ok(&["--json", "rm", "-f", "pod-b"])),
        serde_json::json!({ "removed": ["pod-b"] })
    );
    ok(&["create", "--handle", "pod-d"]);
    let mut removed: Vec<String> = ok(&["rm", "-a"]).lines().map(str::to_string).collect();
    removed.sort();
    assert_eq!(removed, ["pod-a", "pod-d"]);
    assert_eq!(ok(&["list"]), "");
}

#[test]
fn logs_top_and_stats() {
    let env = TestEnv::start();
    let ok = |args: &[&str]| run_cli_ok(&env, args);
    ok(&["create", "--handle", "obs", "--limit-memory", "64M"]);

    // logs: what is waiting, and no more: it returns while the process
    // runs on, and what it printed is gone from the pipe.
    let id = ok(&[
        "run",
        "-d",
        "obs",
        "sh",
        "-c",
        "echo one; echo two >&2; exec sleep 300",
    ]);
    let id = id.trim().to_string();
    let (mut out, mut err) = (String::new(), String::new());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !(out.contains("one") && err.contains("two")) {
        assert!(
            std::time::Instant::now() < deadline,
            "logs showed {out:?} {err:?}"
        );
        let got = run_cli(&env, &["logs", "obs", &id], None);
        assert_eq!(got.status.code(), Some(0), "{}", text(&got.stderr));
        out.push_str(&text(&got.stdout));
        err.push_str(&text(&got.stderr));
    }
    assert_eq!(
        (out.as_str(), err.as_str()),
        ("one\n", "two\n"),
        "each line once"
    );
    let got = run_cli(&env, &["logs", "obs", &id], None);
    assert_eq!((got.status.code(), got.stdout.len()), (Some(0), 0));
    wait_running(&env, "obs", &id);

    // top: every process, with the API process each belongs to, its
    // children included; pid 1 is the container's init.
    ok(&[
        "run",
        "-d",
        "--id",
        "tree",
        "obs",
        "sh",
        "-c",
        "sleep 301 & wait",
    ]);
    let mut top = serde_json::Value::Null;
    eventually("top shows sleep 301", || {
        top = json(&ok(&["--json", "top", "obs"]));
        top["processes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["command"] == "sleep 301")
    });
    let processes = top["processes"].as_array().unwrap();
    let find = |command: &str| {
        processes
            .iter()
            .find(|p| p["command"] == command)
            .unwrap_or_else(|| panic!("{command} in {top}"))
    };
    assert_eq!(find("sleep 300")["process_id"], id.as_str());
    assert_eq!(find("sleep 301")["process_id"], "tree");
    assert_eq!(find("sh -c sleep 301 & wait")["process_id"], "tree");
    assert_eq!(
        find("sleep 301")["parent_pid"],
        find("sh -c sleep 301 & wait")["pid"]
    );
    let init = processes.iter().find(|p| p["pid"] == 1).unwrap();
    assert_eq!(init["process_id"], "");
    assert_eq!(find("sleep 300")["user"], "root");
    assert_eq!(top["truncated"], false);
    let table = ok(&["top", "obs"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["PID", "PPID", "USER", "STATE", "TIME", "ELAPSED", "RSS", "PROCESS", "COMMAND"]
    );
    let row = table.lines().find(|l| l.ends_with(" sleep 300")).unwrap();
    assert!(row.contains(&format!(" {id} ")), "{row}");

    // logs -f: the rest, until the process ends.
    let id = ok(&["run", "-d", "obs", "sh", "-c", "echo a; sleep 1; echo b"]);
    let out = run_cli(&env, &["logs", "-f", "obs", id.trim()], None);
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "a\nb\n".into())
    );

    // stats: once, from bulkMetrics.
    let stats = json(&ok(&["--json", "stats", "--no-stream", "obs"]));
    let row = &stats["containers"][0];
    assert_eq!(row["handle"], "obs");
    assert_eq!(row["memory_limit"], 64 << 20);
    assert!(row["memory_usage"].as_u64().unwrap() > 0, "{stats}");
    assert!(row["pids"].as_u64().unwrap() >= 3, "{stats}");
    let table = ok(&["stats", "--no-stream"]);
    assert!(table.starts_with("HANDLE"), "{table}");
    assert!(table.lines().nth(1).unwrap().contains("/ 64MiB"), "{table}");
    let out = run_cli(&env, &["stats", "--no-stream", "nope"], None);
    assert_eq!(out.status.code(), Some(125));
    // Live without a terminal: one table after another.
    let mut live = spawn_cli(&env, &["stats", "--interval", "1", "obs"]);
    let mut stdout = live.stdout.take().unwrap();
    let mut seen = String::new();
    while seen.matches("HANDLE").count() < 2 {
        let mut buffer = [0u8; 4096];
        let n = std::io::Read::read(&mut stdout, &mut buffer).unwrap();
        assert!(n > 0, "stats ended: {seen}");
        seen.push_str(&text(&buffer[..n]));
    }
    live.kill().unwrap();
    live.wait().unwrap();
    assert!(seen.contains("\n\nHANDLE"), "{seen}");
}
