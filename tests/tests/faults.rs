//! Fault injection: grove-helper, groved and wshd are killed at each step
//! of create, run and destroy, by crash points armed through the
//! environment (`GROVE_CRASH_AT`, debug builds only; see
//! `grove_schema::fault`). After the killed daemon is started again the
//! system must converge on its own: the container either exists and works
//! (or, when its wshd was the one killed, exists, says why it cannot run
//! anything, and destroys cleanly), or is fully gone. Either way, once
//! everything is destroyed nothing is left: no cgroup, mount, veth, set
//! element, NetIn rule, depot entry, socket, record or process, and every
//! address of the pool and every NetIn port can be handed out again.

use grove_client::{Client, Command, ContainerSpec, ErrorCode};
use grove_tests::leaks::Baseline;
use grove_tests::*;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Daemon {
    Helper,
    Groved,
    Wshd,
}

/// The step of the script that meets the crash point.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Step {
    Create,
    Run,
    Destroy,
}

const VICTIM: &str = "victim";
/// A /29: the network address, the gateway, five containers, broadcast.
const POOL_PREFIX: u8 = 29;
const POOL_CONTAINERS: usize = 5;
const PORTS: u16 = 3;

/// Kill `daemon` at `point` during the create → netIn → run → destroy
/// script, restart it, and check the system converges without leaks.
fn crash_and_converge(point: &str, daemon: Daemon, step: Step) {
    let armed = vec![("GROVE_CRASH_AT".to_string(), point.to_string())];
    let mut options = EnvOptions {
        pool_prefix: Some(POOL_PREFIX),
        port_count: Some(PORTS),
        ..EnvOptions::default()
    };
    match daemon {
        // The helper hands its crash points on to the wshd it starts.
        Daemon::Helper | Daemon::Wshd => options.helper_env = armed,
        Daemon::Groved => options.groved_env = armed,
    }
    let mut env = TestEnv::start_with_options(options);
    let baseline = Baseline::take(&env);

    // The script, until the step that meets the crash point fails.
    let failed_at = block_on(script(&env));
    assert_eq!(
        failed_at,
        Some(step),
        "{point}: the script should fail at {step:?}\n{}",
        env.logs()
    );

    // The killed daemon died of the crash point, and starts again unarmed.
    match daemon {
        Daemon::Helper => {
            let status = wait_exit(|| env.helper_exit(), "the helper");
            assert_killed(status, point);
            env.set_helper_env(Vec::new());
            env.restart_helper();
        }
        Daemon::Groved => {
            let status = wait_exit(|| env.groved_exit(), "groved");
            assert_killed(status, point);
            env.set_groved_env(Vec::new());
            env.start_groved();
        }
        Daemon::Wshd => {
            assert!(env.helper_exit().is_none() && env.groved_exit().is_none());
            // wshd's own log goes with its depot dir. Killed at start, it
            // fails the create (the helper's or groved's part of it, and
            // the rollback may reach the helper before it notices the exit);
            // killed later, the helper logs the exit of a wshd it did not
            // kill.
            let observed = |logs: &str| match step {
                // (Before the helper attached the network, its netns is
                // found gone with it.)
                Step::Create => logs.lines().any(|l| {
                    l.contains("create failed")
                        && l.contains(VICTIM)
                        && (l.contains("wshd") || l.contains("netns"))
                }),
                _ => logs.contains(&format!("{VICTIM}: wshd (pid")),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while !observed(&env.logs()) {
                assert!(
                    Instant::now() < deadline,
                    "{point}: wshd's death not observed\n{}",
                    env.logs()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            // Nothing to restart; disarm new wshds by restarting the helper
            // cleanly (SIGTERM), which recovers the containers it had.
            env.set_helper_env(Vec::new());
            env.restart_helper();
        }
    }
    assert!(
        env.logs()
            .contains(&format!("crash point {point}: SIGKILL"))
            || daemon == Daemon::Wshd,
        "{point}: not met\n{}",
        env.logs()
    );

    // Converged: the victim works, or says it cannot (its wshd is gone),
    // or is fully gone.
    block_on(converged(&env, point, daemon));
    // Nothing of it remains once destroyed, and every address and port
    // can be handed out again.
    baseline.assert_no_leaks(&env);
    block_on(fill_pool_and_ports(&env, point));
    baseline.assert_no_leaks(&env);
}

/// create (with a NetIn port), run, destroy: the first step that fails.
async fn script(env: &TestEnv) -> Option<Step> {
    let Ok(client) = Client::connect(&env.socket).await else {
        return Some(Step::Create);
    };
    let spec = ContainerSpec {
        handle: VICTIM.into(),
        ..ContainerSpec::default()
    };
    let container = match client.create(&spec).await {
        Ok(c) => c,
        Err(_) => return Some(Step::Create),
    };
    if container.net_in(0, 8080).await.is_err() {
        return Some(Step::Create);
    }
    match container.exec(&Command::new("echo", &["hi"])).await {
        Ok(out) if out.status == 0 && out.stdout == b"hi\n" => {}
        _ => return Some(Step::Run),
    }
    match client.destroy(VICTIM).await {
        Ok(()) => None,
        Err(_) => Some(Step::Destroy),
    }
}

/// Killed at once: by SIGKILL, or by its seccomp filter's SIGSYS where
/// the filter refuses kill (groved's), which is just as abrupt.
fn assert_killed(status: std::process::ExitStatus, point: &str) {
    assert!(
        matches!(status.signal(), Some(libc::SIGKILL) | Some(libc::SIGSYS)),
        "{point}: {status}"
    );
}

fn wait_exit(
    mut exited: impl FnMut() -> Option<std::process::ExitStatus>,
    what: &str,
) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = exited() {
            return status;
        }
        assert!(Instant::now() < deadline, "{what} did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The system converges (within 15 s: a restarted helper is reconciled
/// with in the background) on one of: the victim is gone, kernel objects
/// and all; it exists and runs a process; its wshd was killed, and it
/// refuses to run with InvalidState and says it is stopped. Then it is
/// destroyed.
async fn converged(env: &TestEnv, point: &str, daemon: Daemon) {
    let client = env.connect().await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last;
    loop {
        let listed = client.list(&[]).await.unwrap().contains(&VICTIM.into());
        let in_kernel =
            env.cgroup_dir("pids").join(VICTIM).exists() || env.depot.join(VICTIM).exists();
        last = format!("listed {listed}, cgroup or depot dir {in_kernel}");
        if !listed && !in_kernel {
            println!("{point}: converged: the victim is gone");
            return;
        }
        // (A lookup may miss it: a reconcile may be destroying it.)
        if let Some(container) = match listed {
            true => client.container(VICTIM).await.ok(),
            false => None,
        } {
            match container.exec(&Command::new("echo", &["again"])).await {
                Ok(out) if out.status == 0 && out.stdout == b"again\n" => {
                    println!("{point}: converged: the victim exists and works");
                    break;
                }
                Ok(out) => last = format!("{last}; echo: {out:?}"),
                Err(e) if daemon == Daemon::Wshd && e.kind() == ErrorCode::InvalidState => {
                    let info = container.info().await.unwrap();
                    assert_eq!(info.state, "stopped", "{point}: {info:?}");
                    println!("{point}: converged: the victim exists, stopped: {e}");
                    break;
                }
                Err(e) => last = format!("{last}; echo: {e}"),
            }
        }
        assert!(
            Instant::now() < deadline,
            "{point}: not converged after 15 s: {last}\n{}",
            env.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.destroy(VICTIM).await.unwrap();
    assert!(client.list(&[]).await.unwrap().is_empty());
}

/// Every address of the pool and every NetIn port is free: as many
/// containers as the pool holds, all the ports mapped, all destroyed.
async fn fill_pool_and_ports(env: &TestEnv, point: &str) {
    let client = env.connect().await;
    let mut containers = Vec::new();
    for i in 0..POOL_CONTAINERS {
        let spec = ContainerSpec {
            handle: format!("fill{i}"),
            ..ContainerSpec::default()
        };
        let c = client
            .create(&spec)
            .await
            .unwrap_or_else(|e| panic!("{point}: address {i} of the pool: {e}"));
        containers.push(c);
    }
    let spec = ContainerSpec {
        handle: "one-too-many".into(),
        ..ContainerSpec::default()
    };
    assert!(
        client.create(&spec).await.is_err(),
        "{point}: the pool holds {POOL_CONTAINERS}"
    );
    for p in 0..PORTS {
        containers[0]
            .net_in(0, 8080 + p as u32)
            .await
            .unwrap_or_else(|e| panic!("{point}: port {p}: {e}"));
    }
    let out = containers[0]
        .exec(&Command::new("echo", &["ok"]))
        .await
        .unwrap();
    assert_eq!(out.stdout, b"ok\n", "{point}");
    for i in 0..POOL_CONTAINERS {
        client.destroy(&format!("fill{i}")).await.unwrap();
    }
}

macro_rules! fault {
    ($name:ident, $point:literal, $daemon:ident, $step:ident) => {
        #[test]
        fn $name() {
            crash_and_converge($point, Daemon::$daemon, Step::$step);
        }
    };
}

fault!(helper_create_layer, "helper.create.layer", Helper, Create);
fault!(
    helper_create_cgroups,
    "helper.create.cgroups",
    Helper,
    Create
);
fault!(helper_create_socket, "helper.create.socket", Helper, Create);
fault!(helper_create_wshd, "helper.create.wshd", Helper, Create);
fault!(
    helper_create_pidfile,
    "helper.create.pidfile",
    Helper,
    Create
);
fault!(helper_create_veth, "helper.create.veth", Helper, Create);
fault!(
    helper_create_firewall,
    "helper.create.firewall",
    Helper,
    Create
);
fault!(helper_create_done, "helper.create.done", Helper, Create);
fault!(
    helper_destroy_killed,
    "helper.destroy.killed",
    Helper,
    Destroy
);
fault!(
    helper_destroy_cgroups,
    "helper.destroy.cgroups",
    Helper,
    Destroy
);
fault!(
    helper_destroy_depot,
    "helper.destroy.depot",
    Helper,
    Destroy
);
fault!(helper_destroy_done, "helper.destroy.done", Helper, Destroy);
fault!(
    groved_create_reserved,
    "groved.create.reserved",
    Groved,
    Create
);
fault!(groved_create_helper, "groved.create.helper", Groved, Create);
fault!(groved_create_saved, "groved.create.saved", Groved, Create);
fault!(groved_run_spawned, "groved.run.spawned", Groved, Run);
fault!(groved_run_adopted, "groved.run.adopted", Groved, Run);
fault!(
    groved_destroy_marked,
    "groved.destroy.marked",
    Groved,
    Destroy
);
fault!(
    groved_destroy_helper,
    "groved.destroy.helper",
    Groved,
    Destroy
);
fault!(wshd_start, "wshd.start", Wshd, Create);
fault!(wshd_run_received, "wshd.run.received", Wshd, Run);
fault!(wshd_run_spawned, "wshd.run.spawned", Wshd, Run);
