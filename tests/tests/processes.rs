//! Running processes: live streaming, exit codes and signals, stdin, users,
//! and a client that goes away mid-stream.

use grove_client::{api, channel_sink, Chunk, Command};
use grove_tests::*;
use std::time::Duration;

#[test]
fn output_arrives_while_the_process_runs() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (container, _) = create(&client, "live", "").await.unwrap();
        let script = "echo ready; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo finished";
        let mut started = start(&container, &Command::new("sh", &["-c", script]))
            .await
            .unwrap();
        // The first line arrives although the process cannot exit until we
        // let it: output is streamed, not collected at exit.
        assert_eq!(
            started.stdout.recv().await,
            Some(Chunk::Data(b"ready\n".to_vec()))
        );
        let info = container.info_request().send().promise.await.unwrap();
        assert_eq!(
            info.get()
                .unwrap()
                .get_info()
                .unwrap()
                .get_process_ids()
                .unwrap()
                .len(),
            1
        );
        let (status, _, _) = exec(&container, "touch", &["/tmp/go"]).await;
        assert_eq!(status, 0);
        assert_eq!(wait(&started.process).await.unwrap(), 0);
        let (rest, done) = drain(&mut started.stdout);
        assert_eq!((rest.as_slice(), done), (&b"finished\n"[..], true));
    });
}

#[test]
fn exit_codes_and_signals() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (container, _) = create(&client, "codes", "").await.unwrap();
        for code in [0, 1, 3, 42, 255] {
            let (status, _, _) = exec(&container, "sh", &["-c", &format!("exit {code}")]).await;
            assert_eq!(status, code);
        }
        // Killed by a signal: minus the signal number, distinct from exit 137.
        let (status, _, _) = exec(&container, "sh", &["-c", "kill -9 $$"]).await;
        assert_eq!(status, -9);
        let (status, _, _) = exec(&container, "sh", &["-c", "exit 137"]).await;
        assert_eq!(status, 137);

        for (sig, number) in [
            (api::Signal::Terminate, 15),
            (api::Signal::Kill, 9),
            (api::Signal::Interrupt, 2),
            (api::Signal::Hangup, 1),
            (api::Signal::User1, 10),
        ] {
            let started = start(&container, &Command::new("sleep", &["100"]))
                .await
                .unwrap();
            grove_tests::signal(&started.process, sig).await;
            assert_eq!(wait(&started.process).await.unwrap(), -number);
            // Signalling an exited process is a clear error.
            let mut request = started.process.signal_request();
            request.get().set_signal(api::Signal::Kill);
            let e = grove_client::Error::from(request.send().promise.await.err().unwrap());
            assert!(e.is("invalidState"), "{e}");
        }
    });
}

#[test]
fn executables_users_dirs_and_env() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let mut create_request = client.grove.create_request();
        let mut spec = create_request.get().init_spec();
        spec.set_handle("users");
        spec.reborrow().init_env(2).set(0, "FROM_CONTAINER=c");
        spec.reborrow()
            .get_env()
            .unwrap()
            .set(1, "SHADOWED=container");
        let container = create_request
            .send()
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_container()
            .unwrap();

        let e = start(&container, &Command::new("/bin/no-such-thing", &[]))
            .await
            .err()
            .unwrap();
        assert!(e.is("executableNotFound"), "{e}");
        let e = start(&container, &Command::new("no-such-thing", &[]))
            .await
            .err()
            .unwrap();
        assert!(e.is("executableNotFound"), "{e}");

        let (_, out, _) = exec(&container, "id", &[]).await;
        assert!(out.starts_with("uid=0(root) gid=0(root)"), "{out}");

        let mut as_user = Command::new("sh", &["-c", "id -u; id -g; id -G; pwd; echo $HOME $USER"]);
        as_user.user = "user".into();
        let (status, out, err) = exec_command(&container, &as_user).await;
        assert_eq!(status, 0, "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "1000");
        assert_eq!(lines[1], "1000");
        assert!(
            lines[2].split(' ').any(|g| g == "50"),
            "supplementary group staff: {}",
            lines[2]
        );
        assert_eq!(lines[3], "/home/user");
        assert_eq!(lines[4], "/home/user user");

        let mut numeric = Command::new("sh", &["-c", "id -u; id -g"]);
        numeric.user = "4242:4343".into();
        let (_, out, _) = exec_command(&container, &numeric).await;
        assert_eq!(out, "4242\n4343\n");

        let mut unknown = Command::new("true", &[]);
        unknown.user = "nobody-here".into();
        let e = start(&container, &unknown).await.err().unwrap();
        assert!(
            e.is("invalidSpec") && e.message.contains("nobody-here"),
            "{e}"
        );

        let mut with_env = Command::new("sh", &["-c", "echo $FROM_CONTAINER $SHADOWED $OWN; pwd"]);
        with_env.env = vec!["SHADOWED=process".into(), "OWN=o".into()];
        with_env.dir = "/tmp/work/dir".into();
        let (_, out, _) = exec_command(&container, &with_env).await;
        assert_eq!(out, "c process o\n/tmp/work/dir\n");

        let mut bad_env = Command::new("true", &[]);
        bad_env.env = vec!["NOEQUALS".into()];
        let e = start(&container, &bad_env).await.err().unwrap();
        assert!(
            e.is("invalidSpec") && e.message.contains("spec.env[0]"),
            "{e}"
        );

        let mut first = Command::new("sleep", &["100"]);
        first.id = "twice".into();
        let running = start(&container, &first).await.unwrap();
        let e = start(&container, &first).await.err().unwrap();
        assert!(e.is("invalidSpec") && e.message.contains("twice"), "{e}");
        signal(&running.process, api::Signal::Kill).await;
    });
}

#[test]
fn stdin_is_binary_safe_and_done_closes_it() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (container, _) = create(&client, "stdin", "").await.unwrap();
        let mut started = start_with(&container, &Command::new("cat", &[]), true)
            .await
            .unwrap();
        let stdin = stdin_of(&started.process).await;
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
        for chunk in payload.chunks(10_000) {
            let mut request = stdin.write_request();
            request.get().set_data(chunk);
            request.send().await.unwrap();
        }
        stdin.done_request().send().promise.await.unwrap();
        assert_eq!(wait(&started.process).await.unwrap(), 0);
        let (out, done) = drain(&mut started.stdout);
        assert!(done);
        assert_eq!(out, payload);

        // Without openStdin, the process reads end-of-file at once.
        let (status, out, _) = exec(&container, "sh", &["-c", "cat; echo eof"]).await;
        assert_eq!((status, out.as_str()), (0, "eof\n"));
        let started = start(&container, &Command::new("true", &[])).await.unwrap();
        let e = started
            .process
            .stdin_request()
            .send()
            .promise
            .await
            .err()
            .unwrap();
        assert!(grove_client::Error::from(e).is("invalidState"));
    });
}

#[test]
fn a_client_leaving_mid_stream_harms_neither_groved_nor_the_process() {
    let env = TestEnv::start();
    let groved_pid = env.groved_pid();
    block_on(async {
        let first = env.connect().await;
        let (container, _) = create(&first, "leaver", "").await.unwrap();
        let script =
            "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; touch /tmp/finished";
        let mut started = start(&container, &Command::new("sh", &["-c", script]))
            .await
            .unwrap();
        // Take some output, then vanish without a word.
        assert!(matches!(started.stdout.recv().await, Some(Chunk::Data(_))));
        drop(started);
        drop(container);
        first.close().await;

        let second = env.connect().await;
        second.ping().await.unwrap();
        let container = second.lookup("leaver").await.unwrap();
        let mut finished = false;
        for _ in 0..200 {
            let (status, _, _) = exec(&container, "test", &["-e", "/tmp/finished"]).await;
            if status == 0 {
                finished = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(finished, "the process ran to its end after its client left");
        assert!(
            std::path::Path::new(&format!("/proc/{groved_pid}")).exists(),
            "groved is still running"
        );
    });
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Run `command` with no stream attached and wait for it; its id.
async fn run_detached(container: &api::container::Client, id: &str, command: &str) -> i32 {
    let mut request = container.run_request();
    let mut spec = Command::new("sh", &["-c", command]);
    spec.id = id.to_string();
    spec.fill(request.get().init_spec()).unwrap();
    let process = request.send().pipeline.get_process();
    wait(&process).await.unwrap()
}

/// The pipes of a finished process nobody attached to are let go as soon
/// as nothing can come of them (empty, every writer gone): hundreds of them
/// used up the per-user pipe budget and left new processes page-sized
/// pipes. Output still in a pipe is kept for a later attach.
#[test]
fn finished_processes_do_not_hold_empty_pipes() {
    let env = TestEnv::start();
    let groved = env.groved_pid();
    env.run(|client| async move {
        let (c, _) = create(&client, "pipes", "").await.unwrap();
        assert_eq!(run_detached(&c, "warm", "true").await, 0);
        let before = open_fds(groved);
        for i in 0..40 {
            assert_eq!(run_detached(&c, &format!("quiet-{i}"), "true").await, 0);
        }
        let after = open_fds(groved);
        assert!(
            after < before + 10,
            "groved went from {before} to {after} open fds over 40 silent processes"
        );
        // Output nobody read yet stays for whoever attaches.
        assert_eq!(run_detached(&c, "talker", "echo kept").await, 0);
        let (sink, mut output) = channel_sink();
        let mut request = c.attach_request();
        request.get().set_process_id("talker");
        request.get().init_io().set_stdout(sink);
        let process = request.send().pipeline.get_process();
        assert_eq!(wait(&process).await.unwrap(), 0);
        let (data, done) = drain(&mut output);
        assert_eq!(
            (String::from_utf8_lossy(&data).as_ref(), done),
            ("kept\n", true)
        );
        // A drained one can still be attached to: it ends at once.
        let (sink, mut output) = channel_sink();
        let mut request = c.attach_request();
        request.get().set_process_id("quiet-0");
        request.get().init_io().set_stdout(sink);
        let process = request.send().pipeline.get_process();
        assert_eq!(wait(&process).await.unwrap(), 0);
        assert_eq!(output.recv().await, Some(Chunk::Done));
    });
}

/// Runs `sh -c script` `runs` times, one after the other; each must print
/// `hi` and exit 0. How many waits answered before both streams were done.
async fn waits_before_done(container: &api::container::Client, script: &str, runs: usize) -> usize {
    let mut early = 0;
    for _ in 0..runs {
        let mut started = start(container, &Command::new("sh", &["-c", script]))
            .await
            .unwrap();
        assert_eq!(wait(&started.process).await.unwrap(), 0, "{script}");
        let (out, out_done) = drain(&mut started.stdout);
        let (_, err_done) = drain(&mut started.stderr);
        assert_eq!(String::from_utf8_lossy(&out), "hi\n", "{script}");
        early += usize::from(!(out_done && err_done));
    }
    early
}

/// A process may leave one behind that holds its output pipes for a
/// moment: busybox `timeout` forks a watcher with them, which redirects
/// them to /dev/null only once it runs (a flake: under load `wait` in a
/// `timeout 5 wget` answered before the streams' `done`). `wait` gives such
/// a leftover a moment to let go, so the streams end first.
#[test]
fn wait_outlasts_a_leftover_that_soon_lets_go_of_the_output() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (c, _) = create(&client, "leftover", "").await.unwrap();
        // Deterministic: the backgrounded subshell holds the pipes for 50 ms
        // after the shell exits.
        let early = waits_before_done(&c, "echo hi; (sleep 0.05) & exit 0", 5).await;
        assert_eq!(
            early, 0,
            "of 5 waits, {early} answered before the streams ended"
        );
        // The case met: `timeout`'s watcher, which two busy loops in the
        // container keep from running for a while (without the grace, 11
        // to 56 waits in 100 answered early).
        let mut hogs = Vec::new();
        for _ in 0..2 {
            let hog = "exec >/dev/null 2>&1; while :; do :; done";
            hogs.push(start(&c, &Command::new("sh", &["-c", hog])).await.unwrap());
        }
        let early = waits_before_done(&c, "timeout 5 echo hi", 100).await;
        for hog in &hogs {
            grove_tests::signal(&hog.process, api::Signal::Kill).await;
        }
        assert_eq!(
            early, 0,
            "of 100 waits, {early} answered before the streams ended"
        );
    });
}

/// The grace is short: a leftover that keeps the output pipes open does not
/// hold `wait`, which answers once the output written so far has arrived;
/// the streams end when the leftover lets go.
#[test]
fn a_leftover_keeping_the_output_open_does_not_hold_wait() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (c, _) = create(&client, "keeper", "").await.unwrap();
        let script = "echo hi; (sleep 2) & exit 3";
        let mut started = start(&c, &Command::new("sh", &["-c", script]))
            .await
            .unwrap();
        assert_eq!(wait(&started.process).await.unwrap(), 3);
        let (out, done) = drain(&mut started.stdout);
        assert_eq!(
            (String::from_utf8_lossy(&out).as_ref(), done),
            ("hi\n", false)
        );
        assert_eq!(started.stdout.recv().await, Some(Chunk::Done));
        assert_eq!(started.stderr.recv().await, Some(Chunk::Done));
    });
}
