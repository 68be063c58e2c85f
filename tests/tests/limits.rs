//! Resource limits and metrics on the real kernel (cgroup v1 here): memory
//! with OOM events, CPU shares and quota, pids, cpuset, the device
//! allowlist, current* readers, all-or-nothing changes, metrics.

use grove_client::{api, Client, Command};
use grove_tests::*;
use std::time::{Duration, Instant};

struct Spec {
    memory: u64,
    shares: u64,
    quota: (u64, u64),
    cpuset: &'static str,
    pids: u64,
}

const NONE: Spec = Spec {
    memory: 0,
    shares: 0,
    quota: (0, 0),
    cpuset: "",
    pids: 0,
};

async fn create_limited(
    client: &Client,
    handle: &str,
    s: Spec,
) -> Result<api::container::Client, grove_client::Error> {
    let mut request = client.grove.create_request();
    let mut spec = request.get().init_spec();
    spec.set_handle(handle);
    let mut limits = spec.init_limits();
    limits.reborrow().init_memory().set_limit_in_bytes(s.memory);
    limits.reborrow().init_pid().set_max(s.pids);
    let mut cpu = limits.init_cpu();
    cpu.set_weight(s.shares);
    cpu.set_quota_micros(s.quota.0);
    cpu.set_quota_period_micros(s.quota.1);
    cpu.set_cpuset(s.cpuset);
    Ok(request.send().promise.await?.get()?.get_container()?)
}

async fn memory_limit(c: &api::container::Client) -> u64 {
    let r = c
        .current_memory_limits_request()
        .send()
        .promise
        .await
        .unwrap();
    r.get().unwrap().get_limits().unwrap().get_limit_in_bytes()
}

async fn pid_limit(c: &api::container::Client) -> u64 {
    let r = c.current_pid_limits_request().send().promise.await.unwrap();
    r.get().unwrap().get_limits().unwrap().get_max()
}

async fn cpu_limits(c: &api::container::Client) -> (u64, u64, u64, String) {
    let r = c.current_cpu_limits_request().send().promise.await.unwrap();
    let l = r.get().unwrap().get_limits().unwrap();
    (
        l.get_weight(),
        l.get_quota_micros(),
        l.get_quota_period_micros(),
        l.get_cpuset().unwrap().to_string().unwrap(),
    )
}

/// The container's state as info reports it.
async fn state(c: &api::container::Client) -> String {
    let r = c.info_request().send().promise.await.unwrap();
    let state = r.get().unwrap().get_info().unwrap().get_state().unwrap();
    state.to_string().unwrap()
}

async fn events(c: &api::container::Client) -> Vec<String> {
    let r = c.info_request().send().promise.await.unwrap();
    r.get()
        .unwrap()
        .get_info()
        .unwrap()
        .get_events()
        .unwrap()
        .iter()
        .map(|e| e.unwrap().to_string().unwrap())
        .collect()
}

async fn cpu_usage_ns(c: &api::container::Client) -> u64 {
    let r = c.metrics_request().send().promise.await.unwrap();
    r.get()
        .unwrap()
        .get_metrics()
        .unwrap()
        .get_cpu()
        .unwrap()
        .get_usage_nanos()
}

#[test]
fn limits_from_the_spec_are_in_force_before_the_first_process() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let spec = Spec {
            memory: 64 << 20,
            shares: 512,
            quota: (50_000, 100_000),
            cpuset: "0",
            pids: 50,
        };
        let container = create_limited(&client, "spec-limits", spec).await.unwrap();
        assert_eq!(memory_limit(&container).await, 64 << 20);
        assert_eq!(pid_limit(&container).await, 50);
        assert_eq!(
            cpu_limits(&container).await,
            (512, 50_000, 100_000, "0".to_string())
        );
        let (status, out, _) = exec(
            &container,
            "sh",
            &["-c", "grep Cpus_allowed_list /proc/self/status"],
        )
        .await;
        assert_eq!(status, 0);
        assert!(out.trim_end().ends_with("\t0"), "{out:?}");
        // A bad limit in the spec fails the create and leaves nothing.
        let bad = Spec { shares: 1, ..NONE };
        let e = create_limited(&client, "bad-limits", bad)
            .await
            .err()
            .unwrap();
        assert!(e.is("invalidSpec") && e.message.contains("shares"), "{e}");
        assert_eq!(client.list(&[]).await.unwrap(), vec!["spec-limits"]);
    });
}

#[test]
fn memory_limit_oom_kills_and_the_event_is_kept() {
    let mut env = TestEnv::start();
    block_on(async {
        let client = env.connect().await;
        let container = create_limited(
            &client,
            "oom",
            Spec {
                memory: 32 << 20,
                ..NONE
            },
        )
        .await
        .unwrap();
        assert!(events(&container).await.is_empty());
        // dd allocates its 128 MiB buffer and touches it: over the limit.
        let (status, _, _) = exec(
            &container,
            "dd",
            &["if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
        )
        .await;
        assert_eq!(status, -9, "the kernel's OOM killer ends it with SIGKILL");
        let deadline = Instant::now() + Duration::from_secs(10);
        while events(&container).await.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(events(&container).await, vec!["Out of memory".to_string()]);
        // Below-limit work still runs.
        assert_eq!(
            exec(
                &container,
                "dd",
                &["if=/dev/zero", "of=/dev/null", "bs=1M", "count=4"]
            )
            .await
            .0,
            0
        );
    });
    // The event is persisted with the container.
    env.kill_and_restart_groved();
    block_on(async {
        let client = env.connect().await;
        let container = client.lookup("oom").await.unwrap();
        assert_eq!(events(&container).await, vec!["Out of memory".to_string()]);
    });
}

#[test]
fn a_cpu_quota_holds_a_busy_loop_near_half_a_cpu() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let container = create_limited(&client, "quota", NONE).await.unwrap();
        let mut limit = container.limit_cpu_request();
        let mut cpu = limit.get().init_limits();
        cpu.set_quota_micros(50_000);
        cpu.set_quota_period_micros(100_000);
        limit.send().promise.await.unwrap();
        let busy = start(
            &container,
            &Command::new("sh", &["-c", "while :; do :; done"]),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (used0, t0) = (cpu_usage_ns(&container).await, Instant::now());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (used1, t1) = (cpu_usage_ns(&container).await, Instant::now());
        let share = (used1 - used0) as f64 / (t1 - t0).as_nanos() as f64;
        assert!(
            (0.4..=0.6).contains(&share),
            "a 0.5 CPU quota gave {share:.3} CPU"
        );
        signal(&busy.process, api::Signal::Kill).await;
    });
}

#[test]
fn pids_max_contains_a_fork_bomb() {
    let env = TestEnv::start();
    let env_ref = &env;
    env.run(|client| async move {
        let container = create_limited(&client, "bomb", Spec { pids: 20, ..NONE })
            .await
            .unwrap();
        let mut forker = start(
            &container,
            &Command::new(
                "sh",
                &[
                    "-c",
                    "i=0; while [ $i -lt 30 ]; do sleep 1 & i=$((i+1)); done; wait",
                ],
            ),
        )
        .await
        .unwrap();
        wait(&forker.process).await.unwrap();
        let (err, _) = drain(&mut forker.stderr);
        let err = String::from_utf8_lossy(&err);
        assert!(
            err.contains("fork"),
            "forking past the limit fails: {err:?}"
        );
        // A fork bomb stays inside its limit, and the host answers.
        let bomb = start(
            &container,
            &Command::new("sh", &["-c", "b() { b | b & }; b; sleep 5"]),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(env_ref.container_pids("bomb").len() <= 20);
        let began = Instant::now();
        assert!(std::process::Command::new("true")
            .status()
            .unwrap()
            .success());
        assert!(
            began.elapsed() < Duration::from_secs(5),
            "the host stays responsive"
        );
        let mut stop = container.stop_request();
        stop.get().set_kill(true);
        stop.send().promise.await.unwrap();
        assert!(wait(&bomb.process).await.is_ok());
    });
}

#[test]
fn only_allowlisted_devices_can_be_used() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let container = create_limited(&client, "devices", NONE).await.unwrap();
        let (status, _, _) = exec(
            &container,
            "sh",
            &[
                "-c",
                "echo x > /dev/null && head -c 1 /dev/urandom > /dev/null",
            ],
        )
        .await;
        assert_eq!(status, 0);
        let (status, _, err) = exec(&container, "mknod", &["/tmp/disk", "b", "8", "0"]).await;
        assert_ne!(status, 0, "a block device cannot be created: {err}");
        let (status, _, err) = exec(
            &container,
            "sh",
            &["-c", "mknod /tmp/mem c 1 1 && head -c 1 /tmp/mem"],
        )
        .await;
        assert_ne!(status, 0, "/dev/mem's device is not allowed: {err}");
        // Root in an unprivileged container (a user namespace) may create no
        // device node at all, not even an allowlisted one: the kernel wants
        // CAP_MKNOD in the host's user namespace. (The cgroup allowlist
        // still stands behind it.)
        let (status, _, err) = exec(&container, "mknod", &["/tmp/null2", "c", "1", "3"]).await;
        assert_ne!(status, 0, "mknod in a user namespace: {err}");
        assert!(err.contains("not permitted"), "{err}");
    });
}

#[test]
fn changes_are_all_or_nothing_and_bad_values_are_refused() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let container = create_limited(
            &client,
            "changes",
            Spec {
                shares: 256,
                ..NONE
            },
        )
        .await
        .unwrap();
        let mut limit = container.limit_memory_request();
        limit.get().init_limits().set_limit_in_bytes(128 << 20);
        limit.send().promise.await.unwrap();
        assert_eq!(memory_limit(&container).await, 128 << 20);
        let mut limit = container.limit_pids_request();
        limit.get().init_limits().set_max(64);
        limit.send().promise.await.unwrap();
        assert_eq!(pid_limit(&container).await, 64);

        // A good shares value with a bad cpuset: neither applies.
        let mut limit = container.limit_cpu_request();
        let mut cpu = limit.get().init_limits();
        cpu.set_weight(1024);
        cpu.set_cpuset("999");
        let e = grove_client::Error::from(limit.send().promise.await.err().unwrap());
        assert!(e.is("invalidSpec") && e.message.contains("cpuset"), "{e}");
        assert_eq!(cpu_limits(&container).await.0, 256);

        // Below current usage.
        let sleepers = start(
            &container,
            &Command::new("sh", &["-c", "sleep 100 & sleep 100"]),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut limit = container.limit_pids_request();
        limit.get().init_limits().set_max(1);
        let e = grove_client::Error::from(limit.send().promise.await.err().unwrap());
        assert!(e.is("invalidState") && e.message.contains("current"), "{e}");
        assert_eq!(pid_limit(&container).await, 64);
        let mut limit = container.limit_memory_request();
        limit.get().init_limits().set_limit_in_bytes(4096);
        let e = grove_client::Error::from(limit.send().promise.await.err().unwrap());
        assert!(e.is("invalidSpec"), "{e}");
        assert_eq!(memory_limit(&container).await, 128 << 20);
        // Nothing given.
        let e = grove_client::Error::from(
            container
                .limit_cpu_request()
                .send()
                .promise
                .await
                .err()
                .unwrap(),
        );
        assert!(e.is("invalidSpec"), "{e}");
        signal(&sleepers.process, api::Signal::Kill).await;
    });
}

#[test]
fn metrics_and_bulk_metrics() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let container = create_limited(&client, "metered", Spec { pids: 30, ..NONE })
            .await
            .unwrap();
        assert_eq!(
            exec(
                &container,
                "sh",
                &["-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"]
            )
            .await
            .0,
            0
        );
        let response = container.metrics_request().send().promise.await.unwrap();
        let m = response.get().unwrap().get_metrics().unwrap();
        let memory = m.get_memory().unwrap();
        assert!(memory.get_usage() > 0);
        let fields: Vec<String> = memory
            .get_stat()
            .unwrap()
            .iter()
            .map(|s| s.get_name().unwrap().to_string().unwrap())
            .collect();
        for field in ["cache", "rss", "total_rss", "pgfault"] {
            assert!(
                fields.iter().any(|f| f == field),
                "memory.stat has {field}: {fields:?}"
            );
        }
        let cpu = m.get_cpu().unwrap();
        assert!(cpu.get_usage_nanos() > 0 && cpu.get_user_nanos() + cpu.get_system_nanos() > 0);
        let pid = m.get_pid().unwrap();
        assert!(pid.get_current() >= 1);
        assert_eq!(pid.get_max(), 30);
        assert!(m.get_age_seconds() > 0.0);

        let mut request = client.grove.bulk_metrics_request();
        let mut handles = request.get().init_handles(2);
        handles.set(0, "metered");
        handles.set(1, "absent");
        let response = request.send().promise.await.unwrap();
        let results = response.get().unwrap().get_results().unwrap();
        use grove_client::api::metrics_result::Which;
        assert!(matches!(results.get(0).which().unwrap(), Which::Metrics(_)));
        match results.get(1).which().unwrap() {
            Which::Error(e) => assert_eq!(
                e.unwrap().to_str().unwrap(),
                "[containerNotFound] unknown handle: absent"
            ),
            Which::Metrics(_) => panic!("no metrics for an absent container"),
        }
    });
}

/// Start a subshell forking up to `tries` 30-second sleeps, printing the
/// count after each; it stops at the first fork the kernel refuses. Its
/// output goes to a file (the sleeps keep theirs open), printed once it
/// is done. Returns how many sleeps it started and what it printed.
async fn fork_until_refused(container: &api::container::Client, tries: u32) -> (u32, String) {
    let script = format!(
        "(n=0; while [ $n -lt {tries} ]; do sleep 30 & n=$((n+1)); echo $n; done) \
         >/tmp/forks 2>&1 </dev/null; cat /tmp/forks"
    );
    let (_, out, _) = exec(container, "sh", &["-c", &script]).await;
    let started = out
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .unwrap_or(0);
    (started, out)
}

fn read_cg(path: std::path::PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

/// A container created without a pids limit gets the policy's
/// default_pids_limit (here 16: its 17th task is refused); one with a
/// limit of its own keeps it; and the parent cgroup's total_pids_limit
/// (here 40) holds all of them together, whatever their own limits say.
#[test]
fn the_policy_s_default_pids_limit_and_total_cap_hold() {
    let env = TestEnv::start_with_policy("", "default_pids_limit = 16\ntotal_pids_limit = 40");
    let env_ref = &env;
    assert_eq!(read_cg(env.cgroup_dir("pids").join("pids.max")), "40");
    env.run(|client| async move {
        let pids =
            |handle: &str, file: &str| read_cg(env_ref.cgroup_dir("pids").join(handle).join(file));
        let small = create_limited(&client, "default-pids", NONE).await.unwrap();
        assert_eq!(pids("default-pids", "pids.max"), "16");
        assert_eq!(pid_limit(&small).await, 16);
        let before: u32 = pids("default-pids", "pids.current").parse().unwrap();
        let (started, err) = fork_until_refused(&small, 30).await;
        assert!(err.contains("fork"), "{err}");
        // wshd (and what else was there), the shell, the subshell and its
        // sleeps: 16.
        assert_eq!(
            before + 2 + started,
            16,
            "{started} sleeps after {before} tasks"
        );
        assert_eq!(
            pids("default-pids", "pids.current"),
            (before + started).to_string()
        );

        // A larger limit of its own (Garden's limitPids) is kept, but the
        // parent's cap of 40 counts the first container's tasks too.
        let big = create_limited(&client, "big-pids", Spec { pids: 100, ..NONE })
            .await
            .unwrap();
        assert_eq!(pids("big-pids", "pids.max"), "100");
        assert_eq!(pid_limit(&big).await, 100);
        let (started, err) = fork_until_refused(&big, 60).await;
        assert!(err.contains("fork"), "{err}");
        let total: u32 = read_cg(env_ref.cgroup_dir("pids").join("pids.current"))
            .parse()
            .unwrap();
        assert!(
            total <= 40 && started < 40,
            "{total} tasks in all, {started} in big-pids"
        );
        assert!(
            total >= 38,
            "the cap, not the container's limit, stopped it: {total}"
        );
        // Lowering and raising through the API still works.
        let mut limit = big.limit_pids_request();
        limit.get().init_limits().set_max(200);
        limit.send().promise.await.unwrap();
        assert_eq!(pid_limit(&big).await, 200);
        for c in [&small, &big] {
            let mut stop = c.stop_request();
            stop.get().set_kill(true);
            stop.send().promise.await.unwrap();
        }
    });
}

/// wshd's host pid, from the helper's pid file in the container's depot dir.
fn wshd_pid(env: &TestEnv, handle: &str) -> i32 {
    let text = std::fs::read_to_string(env.depot.join(handle).join("wshd.pid")).unwrap();
    text.trim().parse().unwrap()
}

fn oom_score_adj(pid: i32) -> i32 {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Whether the process has CAP_SYS_RESOURCE (bit 24) in its effective set.
fn has_sys_resource(pid: u32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap();
    u64::from_str_radix(eff.trim(), 16).unwrap() & (1 << 24) != 0
}

/// Issue 17, item 9: tmpfs pages filling a container's memory limit made
/// the OOM killer pick wshd (PID 1), which took the whole container. wshd
/// is now its last choice: the helper lowers wshd's oom_score_adj to -999
/// where the host lets it (CAP_SYS_RESOURCE; this machine's root lacks
/// it, so there wshd keeps the helper's value), and the processes wshd
/// starts go 999 above wshd. The writer is killed; wshd and the container
/// live on.
#[test]
fn at_the_memory_limit_the_oom_killer_takes_a_process_and_never_wshd() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let spec = Spec {
            memory: 64 << 20,
            ..NONE
        };
        let container = create_limited(&client, "shmfill", spec).await.unwrap();
        let wshd = wshd_pid(env, "shmfill");
        let helper = env.helper_pid();
        let lowest = if has_sys_resource(helper) {
            -941
        } else {
            oom_score_adj(helper as i32)
        };
        assert_eq!(
            oom_score_adj(wshd),
            lowest,
            "wshd is as low as the host allows"
        );
        // Its processes (as the container's root and as another user) are
        // 999 above it.
        let above = (lowest + 999).min(1000).to_string();
        for user in ["", "1000"] {
            let mut command = Command::new("cat", &["/proc/self/oom_score_adj"]);
            command.user = user.into();
            let (status, out, err) = exec_command(&container, &command).await;
            assert_eq!(
                (status, out.trim()),
                (0, above.as_str()),
                "user {user:?}: {err}"
            );
        }
        // None of them may put itself below 0, the host's default (wshd's
        // floor is 0 however low its value: a process forks its floor).
        for user in ["", "1000"] {
            let mut command = Command::new("sh", &["-c", "echo -1 > /proc/self/oom_score_adj"]);
            command.user = user.into();
            let (status, _, err) = exec_command(&container, &command).await;
            assert_ne!(status, 0, "user {user:?} went below 0: {err}");
        }
        // A bystander, and the writer: 80 MiB of tmpfs pages against 64 MiB.
        let mut command = Command::new("sleep", &["1000"]);
        command.id = "bystander".into();
        let bystander = start(&container, &command).await.unwrap();
        let (status, _, err) = exec(
            &container,
            "dd",
            &["if=/dev/zero", "of=/dev/shm/x", "bs=1M", "count=80"],
        )
        .await;
        assert_eq!(status, -9, "the OOM killer ends the writer: {err}");
        // wshd lives, and the container still runs processes.
        assert_eq!(wshd_pid(env, "shmfill"), wshd);
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(wshd), None).is_ok(),
            "wshd was killed"
        );
        assert!(env.container_pids("shmfill").contains(&wshd));
        let (status, _, err) = exec(&container, "rm", &["/dev/shm/x"]).await;
        assert_eq!(status, 0, "{err}");
        let (status, out, _) = exec(&container, "echo", &["alive"]).await;
        assert_eq!((status, out.as_str()), (0, "alive\n"));
        assert_eq!(state(&container).await, "active");
        let deadline = Instant::now() + Duration::from_secs(10);
        while events(&container).await.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(events(&container).await, vec!["Out of memory".to_string()]);
        signal(&bystander.process, api::Signal::Kill).await;
        client.destroy("shmfill").await.unwrap();
    });
}

/// When the OOM killer does take wshd, every pending wait ends at once
/// with an error that says the init was killed out of memory, and info
/// says stopped, with the event. (To make it choose wshd, the test puts
/// the writer at wshd's oom_score_adj from the host, lower than a process
/// of the container may go itself; then the killer weighs memory alone, of
/// which wshd has more than a small dd.)
#[test]
fn an_oom_killed_wshd_ends_the_waits_and_says_out_of_memory() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let spec = Spec {
            memory: 64 << 20,
            ..NONE
        };
        let container = create_limited(&client, "initoom", spec).await.unwrap();
        let wshd_pid = wshd_pid(env, "initoom");
        let wshd = oom_score_adj(wshd_pid);
        let script = "while [ ! -e /tmp/go ]; do sleep 0.1; done; exec dd if=/dev/zero of=/dev/shm/x bs=4k count=20480";
        let writer = start(&container, &Command::new("sh", &["-c", script]))
            .await
            .unwrap();
        // The shell (its loop's sleeps come and go) before it execs dd.
        for pid in env.container_pids("initoom") {
            if pid != wshd_pid {
                let _ = std::fs::write(format!("/proc/{pid}/oom_score_adj"), wshd.to_string());
            }
        }
        let (status, _, err) = exec(&container, "touch", &["/tmp/go"]).await;
        assert_eq!(status, 0, "{err}");
        let result = tokio::time::timeout(Duration::from_secs(60), wait(&writer.process))
            .await
            .expect("the wait ended");
        let e = result.expect_err("its init was killed, so it has no exit status");
        assert!(e.is("invalidState"), "{e}");
        assert!(
            e.message
                .contains("init process (wshd) was killed: out of memory"),
            "{e}"
        );
        assert_eq!(state(&container).await, "stopped");
        let events = events(&container).await;
        assert!(
            events.contains(&"Stopped: its init process (wshd) was killed: out of memory".to_string()),
            "{events:?}"
        );
        client.destroy("initoom").await.unwrap();
    });
}

/// Issue 18: containers inherited grove-helper.service's LimitNOFILE=65536
/// (the harness starts the helper with it too, or with the test's own hard
/// limit where that is lower). A container starts with systemd's default
/// for a service instead: 1024 soft (select() breaks above 1023), 524288
/// hard (a program that needs more raises its own) — or the helper's hard
/// limit on a host whose root may not raise it (no CAP_SYS_RESOURCE).
#[test]
fn a_container_gets_the_hosts_default_open_file_limit_not_the_helpers() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let helper = std::fs::read_to_string(format!("/proc/{}/limits", env.helper_pid())).unwrap();
        let nofile = |limits: &str| -> Vec<String> {
            let line = limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .unwrap_or_else(|| panic!("no open-file line in {limits}"));
            line.split_whitespace()
                .skip(3)
                .take(2)
                .map(str::to_string)
                .collect()
        };
        let h = helper_nofile().to_string();
        assert_eq!(
            nofile(&helper),
            [h.as_str(), h.as_str()],
            "the helper's, as its unit sets it"
        );
        let hard = if has_sys_resource(env.helper_pid()) {
            "524288"
        } else {
            h.as_str()
        };
        let container = create_limited(&client, "nofile", NONE).await.unwrap();
        let (status, out, err) = exec(&container, "cat", &["/proc/self/limits"]).await;
        assert_eq!(status, 0, "{err}");
        assert_eq!(nofile(&out), ["1024", hard]);
        let wshd = wshd_pid(env, "nofile");
        let wshd_limits = std::fs::read_to_string(format!("/proc/{wshd}/limits")).unwrap();
        assert_eq!(nofile(&wshd_limits), ["1024", hard]);
    });
}
