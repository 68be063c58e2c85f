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
        "memory_bytes: 67108864",
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
    assert!(ok(&["limits", "cli"]).contains("disk_bytes: 104857600 (exclusive)"));
    let metrics = ok(&["metrics", "cli"]);
    assert!(metrics.contains("disk_exclusive_bytes: "), "{metrics}");
    assert!(
        metrics.contains("pids_max: 40") && metrics.contains("memory_usage: "),
        "{metrics}"
    );
    let out = run_cli(&env, &["limit", "cli", "--cpu-shares", "1"], None);
    assert_eq!(out.status.code(), Some(1));
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
        (vec!["info", "nope"], "grove: unknown handle: nope\n"),
        (
            vec!["run", "cli", "--", "true"],
            "grove: container cli is stopped\n",
        ),
        (
            vec!["attach", "cli", "nope"],
            "grove: unknown process: nope\n",
        ),
    ] {
        let out = run_cli(&env, &args, None);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(text(&out.stderr), message, "{args:?}");
    }
    assert_eq!(ok(&["destroy", "cli"]), "");
    assert_eq!(ok(&["list"]), "");
    let out = std::process::Command::new(bin_dir().join("grove"))
        .args(["--socket", "/nonexistent/grove.sock", "ping"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "one line: {}",
        text(&out.stderr)
    );
}
