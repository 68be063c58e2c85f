//! groved reconciles its records with the helper when it starts: a record
//! whose container the helper no longer has is kept and marked lost; a
//! container the helper has without a record is destroyed.

use grove_schema::helper::{decode_response, encode_request, Request, Response};
use grove_schema::Handle;
use grove_tests::*;

/// Ask the helper directly, as groved's uid.
fn ask_helper(env: &TestEnv, request: &Request) -> Response {
    let (uid, gid) = grove_user();
    let fd = helper_connect_as(&env.helper_socket, uid, gid).expect("connecting as grove");
    nix::unistd::write(&fd, &encode_request(request)).expect("send");
    let mut buf = vec![0u8; 256 * 1024];
    let n = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf).expect("recv");
    decode_response(&buf[..n]).expect("a decodable answer")
}

#[test]
fn a_restarted_groved_marks_lost_containers_and_destroys_unrecorded_ones() {
    let mut env = TestEnv::start();
    block_on(async {
        let client = env.connect().await;
        for h in ["kept", "gone", "orphan"] {
            create(&client, h, "").await.unwrap();
        }
    });
    env.stop_groved();
    // While groved is down: the helper loses "gone" (as after a reboot),
    // and groved's record of "orphan" is lost (as after a crash mid-create).
    let gone = Request::DestroyContainer {
        handle: Handle::new("gone").unwrap(),
    };
    assert!(matches!(ask_helper(&env, &gone), Response::Destroyed));
    std::fs::remove_file(env.root.join("server/containers/orphan.json")).unwrap();
    env.start_groved();

    let env = &env;
    env.run(|client| async move {
        assert_eq!(client.list(&[]).await.unwrap(), ["gone", "kept"]);
        let events = |h: &'static str| {
            let client = &client;
            async move {
                let c = client.lookup(h).await.unwrap();
                let info = c.info_request().send().promise.await.unwrap();
                let events: Vec<String> = info
                    .get()
                    .unwrap()
                    .get_info()
                    .unwrap()
                    .get_events()
                    .unwrap()
                    .iter()
                    .map(|e| e.unwrap().to_string().unwrap())
                    .collect();
                events
            }
        };
        assert!(
            events("gone").await.iter().any(|e| e.starts_with("Lost")),
            "{:?}",
            events("gone").await
        );
        assert!(events("kept").await.is_empty());
        // The unrecorded container is gone from the helper and the host.
        match ask_helper(env, &Request::ListContainers) {
            Response::Containers(list) => {
                let names: Vec<String> = list.iter().map(|c| c.handle.to_string()).collect();
                assert!(!names.contains(&"orphan".to_string()), "{names:?}");
                assert!(names.contains(&"kept".to_string()), "{names:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!env.depot.join("orphan").exists());
        assert!(env.logs().contains("no record of"), "{}", env.logs());
        // A lost container can still be destroyed, which drops its record.
        client.destroy("gone").await.unwrap();
        assert_eq!(client.list(&[]).await.unwrap(), ["kept"]);
        // The kept one still works.
        let c = client.lookup("kept").await.unwrap();
        let (status, out, _) = exec(&c, "echo", &["alive"]).await;
        assert_eq!((status, out.as_str()), (0, "alive\n"));
    });
}

/// A groved that starts while the helper is down reconciles as soon as
/// the helper answers: the unrecorded container goes, the recorded one
/// keeps working.
#[test]
fn a_groved_started_before_the_helper_reconciles_once_it_answers() {
    let mut env = TestEnv::start();
    block_on(async {
        let client = env.connect().await;
        for h in ["kept", "orphan"] {
            create(&client, h, "").await.unwrap();
        }
    });
    env.stop_groved();
    std::fs::remove_file(env.root.join("server/containers/orphan.json")).unwrap();
    env.stop_helper();
    env.start_groved();
    assert!(
        env.logs().contains("does not answer yet"),
        "groved met a helper: {}",
        env.logs()
    );
    env.restart_helper();
    let names = || match ask_helper(&env, &Request::ListContainers) {
        Response::Containers(list) => list
            .iter()
            .map(|c| c.handle.to_string())
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while names().contains(&"orphan".to_string()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphan outlived the helper's return: {}",
            env.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(names(), ["kept"]);
    env.run(|client| async move {
        assert_eq!(client.list(&[]).await.unwrap(), ["kept"]);
        let c = client.lookup("kept").await.unwrap();
        let (status, out, _) = exec(&c, "echo", &["alive"]).await;
        assert_eq!((status, out.as_str()), (0, "alive\n"));
    });
}

/// Everything a container has, as the CLI shows it.
fn snapshot(env: &TestEnv, handle: &str) -> (String, String) {
    let info = run_cli_ok(env, &["info", handle]);
    let limits = run_cli_ok(env, &["limits", handle]);
    (info, limits)
}

#[test]
fn killing_the_helper_and_groved_loses_no_container_process_address_rule_limit_or_property() {
    let mut env = TestEnv::start();
    let port = env.ports.0 + 7;
    run_cli_ok(
        &env,
        &[
            "create",
            "--handle",
            "keep",
            "--net-in",
            &format!("{port}:8080"),
            "--memory",
            "64M",
            "--pids",
            "50",
            "--bandwidth",
            "1M:64K",
            "--property",
            "team=a",
        ],
    );
    let gateway = env.gateway.to_string();
    run_cli_ok(
        &env,
        &[
            "net-out",
            "keep",
            "--protocol",
            "icmp",
            "--network",
            &gateway,
        ],
    );
    let before = snapshot(&env, "keep");
    assert!(
        before.0.contains(&format!("mapped_port: {port}:8080")),
        "{}",
        before.0
    );
    // A process that runs across both restarts.
    block_on(async {
        let client = env.connect().await;
        let c = client.lookup("keep").await.unwrap();
        let mut command = grove_client::Command::new("sleep", &["1000"]);
        command.id = "long".into();
        start(&c, &command).await.unwrap();
    });

    // kill -9 the helper, then groved; start both again.
    let helper = env.helper_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    env.restart_helper();
    env.kill_and_restart_groved();

    let after = snapshot(&env, "keep");
    assert_eq!(before.1, after.1, "limits");
    for line in before.0.lines().filter(|l| !l.starts_with("processes")) {
        assert!(after.0.contains(line), "{line:?} lost:\n{}", after.0);
    }
    assert!(
        after.0.contains("long"),
        "the process is still running:\n{}",
        after.0
    );
    let env = &env;
    env.run(|client| async move {
        let c = client.lookup("keep").await.unwrap();
        // The NetOut rule: ping to the gateway still works; the
        // process is still there to attach to.
        let (status, out, err) = exec(&c, "ping", &["-c", "1", "-W", "2", &gateway]).await;
        assert_eq!(status, 0, "{out}{err}");
        // Other destinations stay denied (an unused address of the pool:
        // traffic to it could only ever reach the test's own bridge).
        let unused = env.pool_ip(250).to_string();
        let (status, _, err) = exec(&c, "ping", &["-c", "1", "-W", "1", &unused]).await;
        assert_ne!(status, 0, "{err}");
        let table = env.nft_table_text().unwrap();
        assert!(table.contains(&format!("{port} : ")), "{table}");
    });
}

/// After a reboot the depot and groved's records still name containers
/// whose processes and cgroups are gone. Both daemons note the boot they
/// run in (the kernel's boot id) and, when they start in a later one,
/// destroy what the earlier boot left, with a log line each: nothing is
/// left for an operator to destroy by hand. A restart within one boot keeps
/// its containers. The reboot is simulated: the containers' processes are
/// killed while both daemons are down, and both notes are set to another
/// boot's id.
#[test]
fn containers_of_an_earlier_boot_are_destroyed_when_the_daemons_start() {
    let mut env = TestEnv::start();
    block_on(async {
        let client = env.connect().await;
        for h in ["old1", "old2"] {
            create(&client, h, "").await.unwrap();
        }
    });
    let depot_note = env.depot.join(".boot_id");
    let records = env.root.join("server/containers");
    let this_boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    // Both daemons noted this boot when they started.
    assert_eq!(
        std::fs::read_to_string(&depot_note).unwrap(),
        this_boot.trim()
    );
    assert_eq!(
        std::fs::read_to_string(records.join("boot_id")).unwrap(),
        this_boot.trim()
    );
    env.stop_groved();
    env.stop_helper();
    for h in ["old1", "old2"] {
        for pid in env.container_pids(h) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !env.container_pids(h).is_empty() {
            assert!(std::time::Instant::now() < deadline, "{h} does not die");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    let earlier = "0b0b0b0b-0000-4000-8000-000000000000";
    std::fs::write(&depot_note, earlier).unwrap();
    std::fs::write(records.join("boot_id"), earlier).unwrap();
    env.restart_helper();
    env.start_groved();

    let logs = env.logs();
    for h in ["old1", "old2"] {
        assert!(
            logs.contains(&format!(
                "grove-helper: {h}: from an earlier boot ({earlier}): destroyed"
            )),
            "{logs}"
        );
        assert!(!env.depot.join(h).exists(), "depot/{h} is left");
        assert!(
            !records.join(format!("{h}.json")).exists(),
            "{h}'s record is left"
        );
    }
    assert!(
        logs.contains("container of an earlier boot: destroying it"),
        "{logs}"
    );
    assert_eq!(
        std::fs::read_to_string(&depot_note).unwrap(),
        this_boot.trim()
    );
    assert_eq!(
        std::fs::read_to_string(records.join("boot_id")).unwrap(),
        this_boot.trim()
    );
    block_on(async {
        let client = env.connect().await;
        assert!(client.list(&[]).await.unwrap().is_empty());
        create(&client, "new", "").await.unwrap();
    });
    // Restarts within this boot keep the container.
    env.stop_groved();
    env.restart_helper();
    env.start_groved();
    assert!(env.depot.join("new").exists());
    env.run(|client| async move {
        assert_eq!(client.list(&[]).await.unwrap(), ["new"]);
        let c = client.lookup("new").await.unwrap();
        let (status, out, _) = exec(&c, "echo", &["alive"]).await;
        assert_eq!((status, out.as_str()), (0, "alive\n"));
    });
}
