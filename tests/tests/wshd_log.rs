//! wshd's log (issue 17, item 6): a file on the host, outside the
//! container's disk limit, that the container's activity writes to. A
//! container that makes thousands of orphans a second gets a few lines a
//! second into it, and nothing a client sends wshd (a process's argv, env,
//! path, dir; a stream's path) reaches it.

use grove_client::{api, channel_sink, Command};
use grove_tests::*;
use std::time::{Duration, Instant};

/// The container's wshd log, on the host.
fn log_of(env: &TestEnv, handle: &str) -> String {
    std::fs::read_to_string(env.depot.join(handle).join("wshd.log")).unwrap_or_default()
}

/// wshd's rate (wshd/src/logging.rs): a burst, then lines a second.
const BURST: usize = 200;
const RATE: usize = 20;
/// wshd's size cap.
const CAP: u64 = 1 << 20;

async fn make(client: &grove_client::Client, handle: &str) -> api::container::Client {
    let spec = grove_client::ContainerSpec {
        handle: handle.into(),
        ..grove_client::ContainerSpec::default()
    };
    client.create(&spec).await.unwrap();
    client.lookup(handle).await.unwrap()
}

/// An unprivileged user in the container double-forks `ORPHANS` times:
/// each grandchild is reparented to wshd, which reaps it. Each used to be
/// a line on the host (2.9 MB per 10 s from one container); now the log
/// grows by at most the rate's worth of lines (each written line may carry
/// one more that counts the lines dropped), and stays below its cap.
#[test]
fn an_orphan_flood_writes_a_bounded_log() {
    const ORPHANS: usize = 5000;
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let c = make(&client, "orphans").await;
        let before = log_of(env, "orphans").lines().count();
        let started = Instant::now();
        let script =
            format!("i=0; while [ $i -lt {ORPHANS} ]; do (sleep 0 </dev/null >/dev/null 2>&1 &); i=$((i+1)); done; echo $i");
        let mut command = Command::new("sh", &["-c", &script]);
        command.user = "1000".into();
        let (status, out, err) = exec_command(&c, &command).await;
        assert_eq!(
            (status, out.trim()),
            (0, ORPHANS.to_string().as_str()),
            "{err}"
        );
        // The last orphans are reaped, and a token is back for the count.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (status, _, _) = exec(&c, "true", &[]).await;
        assert_eq!(status, 0);
        let elapsed = started.elapsed().as_secs() as usize + 1;
        let log = log_of(env, "orphans");
        let grew = log.lines().count() - before;
        let bound = 2 * (BURST + RATE * elapsed);
        assert!(
            bound < ORPHANS,
            "the flood took {elapsed} s: too slow to tell a bounded log from one line per orphan"
        );
        assert!(
            grew <= bound,
            "{grew} new lines for {ORPHANS} orphans in {elapsed} s (at most {bound})"
        );
        assert!(
            log.contains("lines dropped"),
            "the dropped lines are counted"
        );
        assert!((log.len() as u64) <= CAP, "{} bytes", log.len());
        println!(
            "{ORPHANS} orphans in {elapsed} s: the log grew by {grew} lines, to {} bytes",
            log.len()
        );
        client.destroy("orphans").await.unwrap();
    });
}

/// A run's argv, env, path and dir, and a stream's path, carry secrets:
/// none reaches wshd's log, also when the run fails.
#[test]
fn no_secret_a_client_sends_reaches_wshd_s_log() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let c = make(&client, "secrets").await;
        let secret = format!(
            "s3cr3t{}x{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut command = Command::new("echo", &[&format!("--password={secret}")]);
        command.env = vec![format!("TOKEN={secret}")];
        command.dir = format!("/tmp/d-{secret}");
        command.id = "with-secrets".into();
        let (status, out, _) = exec_command(&c, &command).await;
        assert_eq!(
            (status, out.trim()),
            (0, format!("--password={secret}").as_str())
        );
        // A path that does not exist: the error answer quotes it.
        let missing = Command::new(&format!("/bin/{secret}"), &[&secret]);
        let e = start(&c, &missing).await.err().expect("no such executable");
        assert!(e.message.contains(&secret), "the client is told: {e}");
        // A stream in and out of a path with the secret in it.
        let dir = format!("/tmp/s-{secret}");
        stream_in_tar(&c, &dir, "", &tar_of("f", b"x"))
            .await
            .unwrap();
        let mut out = c.stream_out_request();
        out.get().set_path(&dir);
        let (sink, _received) = channel_sink();
        out.get().set_sink(sink);
        out.send().promise.await.unwrap();
        let log = log_of(env, "secrets");
        assert!(log.contains("spawned \"with-secrets\""), "{log}");
        assert!(
            !log.contains(&secret),
            "the secret is in wshd's log:\n{log}"
        );
        client.destroy("secrets").await.unwrap();
    });
}
