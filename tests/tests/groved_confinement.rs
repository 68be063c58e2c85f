//! groved confines itself once it is up: no capabilities, no_new_privs, a
//! seccomp allowlist (mode 2) and a Landlock ruleset, and it still does its
//! whole job: capacity, create, run, streamIn/streamOut, stop, destroy,
//! restart, and a clean shutdown that unlinks its socket. What Landlock
//! denies (any file outside groved's own) is checked by the unit tests in
//! server/src/sandbox.rs, in a confined child; a Landlock domain is not
//! visible from outside the process.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use grove_client::{api, channel_sink};
use grove_tests::*;

/// The `Name:\tvalue` lines of /proc/<pid>/status.
fn status_of(pid: u32) -> HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("groved's /proc status")
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(status: &'a HashMap<String, String>, name: &str) -> &'a str {
    status
        .get(name)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {name} in {status:?}"))
}

const NO_CAPS: &str = "0000000000000000";

/// The kernel's Landlock ABI (0: none).
fn landlock_abi() -> i64 {
    // SAFETY: landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    // only returns a number.
    let abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    abi.max(0)
}

/// Wait until groved serves: it confines itself before it accepts its
/// first connection (its socket accepts connections into the backlog
/// earlier).
fn wait_until_serving(env: &TestEnv) {
    env.run(|client| async move {
        client.ping().await.unwrap();
    });
}

fn assert_confined(env: &TestEnv) {
    wait_until_serving(env);
    let status = status_of(env.groved_pid());
    assert_eq!(field(&status, "NoNewPrivs"), "1", "{status:?}");
    assert_eq!(field(&status, "Seccomp"), "2", "seccomp filter mode");
    let filters: u32 = field(&status, "Seccomp_filters").parse().unwrap();
    assert!(filters >= 1, "{status:?}");
    for caps in ["CapEff", "CapPrm", "CapAmb", "CapInh"] {
        assert_eq!(field(&status, caps), NO_CAPS, "{caps}");
    }
    let logs = env.logs();
    assert!(logs.contains("groved confined"), "{logs}");
    assert!(logs.contains("seccomp allowlist of"), "{logs}");
    if landlock_abi() >= 7 {
        assert!(
            logs.contains("landlock fully enforced"),
            "this kernel has Landlock ABI {}: every right groved handles is enforced\n{logs}",
            landlock_abi()
        );
    }
}

/// groved's exit status as waitpid would report it, once it has exited
/// (a zombie: the harness reaps it later).
fn exit_status_when_gone(pid: u32) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("groved's stat");
        // Fields after the command name: state is field 3, exit_code 52.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        if fields[0] == "Z" {
            return fields[52 - 3].parse().unwrap();
        }
        assert!(Instant::now() < deadline, "groved did not exit: {stat}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn sh(container: &api::container::Client, script: &str) -> (i32, String, String) {
    exec(container, "sh", &["-c", script]).await
}

#[test]
fn groved_serves_confined_and_stops_cleanly() {
    let mut env = TestEnv::start();
    assert_confined(&env);

    env.run(|client| async move {
        // capacity: /proc/meminfo and the state dir's filesystem.
        let response = client
            .grove
            .capacity_request()
            .send()
            .promise
            .await
            .unwrap();
        let capacity = response.get().unwrap().get_capacity().unwrap();
        assert!(capacity.get_memory_in_bytes() > 0);
        assert!(capacity.get_disk_in_bytes() > 0);

        // create: /etc/resolv.conf, the helper, the record in the state dir.
        let (container, _) = create(&client, "confined-1", "").await.unwrap();
        let (status, out, err) = sh(&container, "echo hello; echo oops >&2; exit 3").await;
        assert_eq!(
            (status, out.as_str(), err.as_str()),
            (3, "hello\n", "oops\n")
        );

        // streamIn and streamOut relay through groved.
        stream_in_tar(
            &container,
            "/tmp/in",
            "",
            &tar_of("note.txt", b"through groved"),
        )
        .await
        .unwrap();
        let (status, out, _) = sh(&container, "cat /tmp/in/note.txt").await;
        assert_eq!((status, out.as_str()), (0, "through groved"));
        let (sink, mut receiver) = channel_sink();
        let mut request = container.stream_out_request();
        request.get().set_path("/tmp/in/note.txt");
        request.get().set_sink(sink);
        request.send().promise.await.unwrap();
        let (data, done) = drain(&mut receiver);
        assert!(done);
        let mut archive = tar::Archive::new(data.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["note.txt"]);

        // stop: wshd signals; groved records the state.
        let mut stop = container.stop_request();
        stop.get().set_kill(true);
        stop.send().promise.await.unwrap();
    });

    // A restarted groved reads its records back and confines itself again.
    env.kill_and_restart_groved();
    assert_confined(&env);
    env.run(|client| async move {
        assert_eq!(client.list(&[]).await.unwrap(), ["confined-1"]);
        client.destroy("confined-1").await.unwrap();
        assert!(client.list(&[]).await.unwrap().is_empty());
    });

    // SIGTERM: groved unlinks its socket (a Landlock right on that
    // directory) and exits 0, not killed by its own filter.
    let pid = env.groved_pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(exit_status_when_gone(pid), 0, "{}", env.logs());
    assert!(!env.socket.exists(), "groved left its socket behind");
    assert!(env.logs().contains("groved stopped"));
}

#[test]
fn confine_off_leaves_groved_unconfined_but_without_capabilities() {
    let env = TestEnv::start_with("confine = off\n");
    wait_until_serving(&env);
    let status = status_of(env.groved_pid());
    assert_eq!(field(&status, "Seccomp"), "0");
    assert_eq!(field(&status, "NoNewPrivs"), "0");
    assert_eq!(field(&status, "CapEff"), NO_CAPS);
    assert!(env.logs().contains("confine = off"));
}
