//! Processes in depth: rlimits, ttys and window changes, every signal,
//! 64 MiB of binary stdin, attach with retained output and several readers,
//! a groved restart under running processes, many processes at once, stop's
//! grace period, and a client that stops reading.

use futures::future::join_all;
use grove_client::{api, channel_sink, Chunk, Client, Command};
use grove_tests::*;
use std::rc::Rc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

/// Wait (bounded) until a file exists in the container.
async fn wait_for_file(container: &api::container::Client, path: &str) {
    for _ in 0..400 {
        if exec(container, "test", &["-e", path]).await.0 == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never appeared");
}

/// Read from a channel until `needle` has arrived (bounded), returning all.
async fn read_until(receiver: &mut UnboundedReceiver<Chunk>, needle: &str) -> String {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&seen).contains(needle) {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(Chunk::Data(d))) => seen.extend(d),
            Ok(Some(Chunk::Done)) | Ok(None) => break,
            Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&seen).into_owned();
    assert!(text.contains(needle), "waited for {needle:?}, got {text:?}");
    text
}

/// Everything a channel receives until `done`.
async fn read_all(receiver: &mut UnboundedReceiver<Chunk>) -> Vec<u8> {
    let mut seen = Vec::new();
    while let Some(chunk) = receiver.recv().await {
        match chunk {
            Chunk::Data(d) => seen.extend(d),
            Chunk::Done => break,
        }
    }
    seen
}

async fn attach(
    container: &api::container::Client,
    id: &str,
) -> Result<
    (
        api::process::Client,
        UnboundedReceiver<Chunk>,
        UnboundedReceiver<Chunk>,
    ),
    grove_client::Error,
> {
    let (stdout_sink, stdout) = channel_sink();
    let (stderr_sink, stderr) = channel_sink();
    let mut request = container.attach_request();
    request.get().set_process_id(id);
    let mut io = request.get().init_io();
    io.set_stdout(stdout_sink);
    io.set_stderr(stderr_sink);
    let response = request.send().promise.await?;
    Ok((response.get()?.get_process()?, stdout, stderr))
}

/// Run with no output streams attached (the output stays in the pipe).
async fn start_detached(
    container: &api::container::Client,
    command: &Command,
) -> api::process::Client {
    let mut request = container.run_request();
    command.fill(request.get().init_spec()).unwrap();
    request.get().init_io();
    request
        .send()
        .promise
        .await
        .unwrap()
        .get()
        .unwrap()
        .get_process()
        .unwrap()
}

#[test]
fn rlimits_apply_and_bad_ones_are_refused() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (container, _) = create(&client, "rlimits", "").await.unwrap();
        let mut limited = Command::new("sh", &["-c", "ulimit -n; ulimit -c; ulimit -s"]);
        limited.rlimits = vec![
            ("nofile".into(), 123),
            ("core".into(), 0),
            ("stack".into(), 4 << 20),
        ];
        let (status, out, err) = exec_command(&container, &limited).await;
        assert_eq!(status, 0, "{err}");
        assert_eq!(out, "123\n0\n4096\n");
        let mut impossible = Command::new("true", &[]);
        impossible.rlimits = vec![("nofile".into(), u64::MAX - 1)];
        let e = start(&container, &impossible).await.err().unwrap();
        assert!(e.message.to_lowercase().contains("nofile"), "{e}");
    });
}

#[test]
fn a_tty_process_has_a_real_terminal_that_resizes() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (container, _) = create(&client, "tty", "").await.unwrap();
        let mut probe = Command::new(
            "sh",
            &["-c", "tty; [ -t 0 ] && echo interactive; stty size"],
        );
        probe.tty = Some((80, 24));
        let (status, out, _) = exec_command(&container, &probe).await;
        assert_eq!(status, 0, "{out}");
        assert!(out.contains("/dev/pts/"), "{out:?}");
        assert!(out.contains("interactive"), "{out:?}");
        assert!(out.contains("24 80"), "{out:?}");

        // setTty resizes it; the process sees SIGWINCH and the new size.
        let mut shell = Command::new(
            "sh",
            &[
                "-c",
                "trap 'stty size' WINCH; echo ready; while :; do sleep 0.05; done",
            ],
        );
        shell.tty = Some((80, 24));
        let mut started = start(&container, &shell).await.unwrap();
        read_until(&mut started.stdout, "ready").await;
        let mut resize = started.process.set_tty_request();
        resize.get().init_window_size().set_columns(100);
        resize.get().get_window_size().unwrap().set_rows(40);
        resize.send().promise.await.unwrap();
        read_until(&mut started.stdout, "40 100").await;
        signal(&started.process, api::Signal::Kill).await;
        assert_eq!(wait(&started.process).await.unwrap(), -9);

        // Keystrokes reach it through stdin, echoed by the terminal.
        let mut reader = Command::new("sh", &["-c", "read line; echo got:$line"]);
        reader.tty = Some((80, 24));
        let mut started = start_with(&container, &reader, true).await.unwrap();
        let stdin = started.process.stdin_request().send().pipeline.get_stream();
        let mut write = stdin.write_request();
        write.get().set_data(b"hello\r");
        write.send().await.unwrap();
        assert_eq!(wait(&started.process).await.unwrap(), 0);
        let out = String::from_utf8_lossy(&read_all(&mut started.stdout).await).into_owned();
        assert!(out.contains("got:hello"), "{out:?}");

        // Closing a terminal's stdin sends end-of-file (^D).
        let mut eof = Command::new("sh", &["-c", "cat > /dev/null; echo eof-seen"]);
        eof.tty = Some((80, 24));
        let mut started = start_with(&container, &eof, true).await.unwrap();
        let stdin = stdin_of(&started.process).await;
        stdin.done_request().send().promise.await.unwrap();
        assert_eq!(wait(&started.process).await.unwrap(), 0);
        let out = String::from_utf8_lossy(&read_all(&mut started.stdout).await).into_owned();
        assert!(out.contains("eof-seen"), "{out:?}");

        // A process without a tty cannot be resized.
        let plain = start(&container, &Command::new("true", &[])).await.unwrap();
        let mut resize = plain.process.set_tty_request();
        resize.get().init_window_size().set_columns(10);
        resize.get().get_window_size().unwrap().set_rows(10);
        let e = grove_client::Error::from(resize.send().promise.await.err().unwrap());
        assert!(e.is("invalidState"), "{e}");
    });
}

#[test]
fn every_signal_reaches_the_process() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (container, _) = create(&client, "signals", "").await.unwrap();
        for (sig, number) in [
            (api::Signal::Terminate, 15),
            (api::Signal::Kill, 9),
            (api::Signal::Interrupt, 2),
            (api::Signal::Hangup, 1),
            (api::Signal::Quit, 3),
            (api::Signal::User1, 10),
            (api::Signal::User2, 12),
        ] {
            // sleep keeps every default disposition: the signal ends it.
            let started = start(&container, &Command::new("sleep", &["100"]))
                .await
                .unwrap();
            signal(&started.process, sig).await;
            assert_eq!(
                wait(&started.process).await.unwrap(),
                -number,
                "signal {number}"
            );
        }
        // WINCH does not kill; the process sees it.
        let script =
            "trap 'echo got-winch; exit 0' WINCH; echo ready; while :; do sleep 0.05; done";
        let mut started = start(&container, &Command::new("sh", &["-c", script]))
            .await
            .unwrap();
        read_until(&mut started.stdout, "ready").await;
        signal(&started.process, api::Signal::WindowChange).await;
        assert_eq!(wait(&started.process).await.unwrap(), 0);
        let (out, _) = drain(&mut started.stdout);
        assert!(String::from_utf8_lossy(&out).contains("got-winch"));
    });
}

#[test]
fn sixty_four_mebibytes_of_random_stdin_come_back_intact() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (container, _) = create(&client, "bigstdin", "").await.unwrap();
        let mut payload = vec![0u8; 64 << 20];
        let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
        std::io::Read::read_exact(&mut urandom, &mut payload).unwrap();
        let mut started = start_with(&container, &Command::new("cat", &[]), true)
            .await
            .unwrap();
        let stdin = stdin_of(&started.process).await;
        let collector =
            tokio::task::spawn_local(async move { read_all(&mut started.stdout).await });
        for chunk in payload.chunks(256 << 10) {
            let mut request = stdin.write_request();
            request.get().set_data(chunk);
            request.send().await.unwrap();
        }
        stdin.done_request().send().promise.await.unwrap();
        assert_eq!(wait(&started.process).await.unwrap(), 0);
        let echoed = collector.await.unwrap();
        assert_eq!(echoed.len(), payload.len());
        assert!(echoed == payload, "the bytes that came back differ");
    });
}

#[test]
fn attach_gets_retained_output_and_several_readers_share_the_stream() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (container, _) = create(&client, "attach", "").await.unwrap();
        let mut talker = Command::new(
            "sh",
            &["-c", "echo early; echo early-err >&2; touch /tmp/wrote; while [ ! -e /tmp/go ]; do sleep 0.02; done; echo late; exit 5"],
        );
        talker.id = "talker".into();
        start_detached(&container, &talker).await;
        wait_for_file(&container, "/tmp/wrote").await;

        // The first reader gets what was written while nobody listened.
        let (first, mut first_out, mut first_err) = attach(&container, "talker").await.unwrap();
        read_until(&mut first_out, "early").await;
        read_until(&mut first_err, "early-err").await;
        let (second, mut second_out, _) = attach(&container, "talker").await.unwrap();
        assert_eq!(exec(&container, "touch", &["/tmp/go"]).await.0, 0);
        assert_eq!(wait(&first).await.unwrap(), 5);
        assert_eq!(wait(&second).await.unwrap(), 5);
        let rest = String::from_utf8_lossy(&read_all(&mut first_out).await).into_owned();
        assert!(rest.contains("late"), "{rest:?}");
        let seen = String::from_utf8_lossy(&read_all(&mut second_out).await).into_owned();
        assert!(seen.contains("late") && !seen.contains("early"), "{seen:?}");

        // A late attacher still gets the exit status, and an ended stream.
        let (late, mut late_out, _) = attach(&container, "talker").await.unwrap();
        assert_eq!(wait(&late).await.unwrap(), 5);
        assert!(read_all(&mut late_out).await.is_empty());

        let e = attach(&container, "no-such-process").await.err().unwrap();
        assert!(e.is("processNotFound"), "{e}");
    });
}

#[test]
fn output_beyond_the_buffer_holds_the_process_back_and_is_never_dropped() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (container, _) = create(&client, "backpressure", "").await.unwrap();
        // 3 MiB, more than the 1 MiB kept while nobody reads.
        let mut writer = Command::new("sh", &["-c", "head -c 3145728 /dev/urandom | od -An -v -tx1 | head -c 3145728; touch /tmp/all-written"]);
        writer.id = "writer".into();
        start_detached(&container, &writer).await;
        // It cannot finish while nobody reads: the process is held back.
        wait_for_file(&container, "/proc/1").await;
        let mut blocked = false;
        for _ in 0..200 {
            let (_, out, _) = exec(&container, "sh", &["-c", "cat /proc/[0-9]*/wchan 2>/dev/null | tr '\\0' '\\n'"]).await;
            if out.contains("pipe_write") || out.contains("pipe_wait") {
                blocked = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(blocked, "the writer blocks on a full pipe");
        assert_ne!(exec(&container, "test", &["-e", "/tmp/all-written"]).await.0, 0);

        let (process, mut out, _) = attach(&container, "writer").await.unwrap();
        let collector = tokio::task::spawn_local(async move { read_all(&mut out).await });
        assert_eq!(wait(&process).await.unwrap(), 0);
        let data = collector.await.unwrap();
        assert_eq!(data.len(), 3145728, "every byte arrives, none dropped");
    });
}

#[test]
fn processes_and_their_unread_output_survive_a_groved_kill() {
    let mut env = TestEnv::start();
    block_on(async {
        let client = env.connect().await;
        let (container, _) = create(&client, "survivor", "").await.unwrap();
        let script =
            "i=0; while [ $i -lt 500 ]; do echo line-$i; i=$((i+1)); done; touch /tmp/half; \
                      while [ ! -e /tmp/go ]; do sleep 0.02; done; echo after-restart; exit 7";
        let mut survivor = Command::new("sh", &["-c", script]);
        survivor.id = "survivor".into();
        start_detached(&container, &survivor).await;
        wait_for_file(&container, "/tmp/half").await;
        client.close().await;
    });
    env.kill_and_restart_groved();
    block_on(async {
        let client = env.connect().await;
        let container = client.lookup("survivor").await.unwrap();
        let ids = running_process_ids(&container).await;
        assert_eq!(
            ids,
            vec!["survivor".to_string()],
            "the process is known again"
        );
        let (process, mut out, _) = attach(&container, "survivor").await.unwrap();
        let collector = tokio::task::spawn_local(async move { read_all(&mut out).await });
        assert_eq!(exec(&container, "touch", &["/tmp/go"]).await.0, 0);
        assert_eq!(wait(&process).await.unwrap(), 7);
        let text = String::from_utf8(collector.await.unwrap()).unwrap();
        let expected: String =
            (0..500).map(|i| format!("line-{i}\n")).collect::<String>() + "after-restart\n";
        assert_eq!(
            text, expected,
            "nothing written before the restart was lost"
        );
        // New processes run too.
        assert_eq!(exec(&container, "true", &[]).await.0, 0);
    });
}

#[test]
fn two_hundred_concurrent_processes_exit_right_and_leave_no_zombie() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (container, _) = create(&client, "many", "").await.unwrap();
        let runs = (0..200).map(|i| {
            let container = container.clone();
            async move {
                let code = i % 256;
                let (status, out, _) = exec(
                    &container,
                    "sh",
                    // The orphan (reaped by wshd: no zombie may remain)
                    // never holds the output pipe, not even between its
                    // fork and its redirection (the subshell lets go of
                    // the pipe before it forks), or `wait` would by design
                    // answer before the streams end.
                    &[
                        "-c",
                        &format!("echo {i}; (exec >/dev/null 2>&1; sleep 0.01 &); exit {code}"),
                    ],
                )
                .await;
                (i, code, status, out)
            }
        });
        for (i, code, status, out) in join_all(runs).await {
            assert_eq!(status, code, "process {i}");
            assert_eq!(out, format!("{i}\n"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (_, states, _) = exec(
            &container,
            "sh",
            &["-c", "cat /proc/[0-9]*/stat 2>/dev/null"],
        )
        .await;
        let zombies: Vec<&str> = states
            .lines()
            .filter(|l| l.split(") ").nth(1).is_some_and(|r| r.starts_with('Z')))
            .collect();
        assert!(zombies.is_empty(), "zombies: {zombies:?}");
    });
}

#[test]
fn stop_terms_then_kills_after_the_grace_period() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (container, _) = create(&client, "stopper", "").await.unwrap();
        let mut polite = start(
            &container,
            &Command::new("sh", &["-c", "echo ready; exec sleep 100"]),
        )
        .await
        .unwrap();
        let mut stubborn = start(
            &container,
            &Command::new(
                "sh",
                &[
                    "-c",
                    "trap '' TERM; echo ready; while :; do sleep 0.05; done",
                ],
            ),
        )
        .await
        .unwrap();
        read_until(&mut polite.stdout, "ready").await;
        read_until(&mut stubborn.stdout, "ready").await;
        let began = std::time::Instant::now();
        let mut stop = container.stop_request();
        stop.get().set_kill(false);
        stop.send().promise.await.unwrap();
        assert_eq!(wait(&polite.process).await.unwrap(), -15);
        assert_eq!(wait(&stubborn.process).await.unwrap(), -9);
        assert!(
            began.elapsed() >= Duration::from_secs(9),
            "SIGKILL came only after the grace period"
        );
        let info = container.info_request().send().promise.await.unwrap();
        assert_eq!(
            info.get().unwrap().get_info().unwrap().get_state().unwrap(),
            "stopped"
        );
        let e = start(&container, &Command::new("true", &[]))
            .await
            .err()
            .unwrap();
        assert!(e.is("invalidState"), "{e}");
        client.destroy("stopper").await.unwrap();
    });
}

/// A stream whose client never takes what it is given.
struct Stalled;

impl api::byte_stream::Server for Stalled {
    async fn write(self: Rc<Self>, _: api::byte_stream::WriteParams) -> Result<(), capnp::Error> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

#[test]
fn a_client_that_stops_reading_does_not_grow_groved() {
    let env = TestEnv::start();
    let groved = env.groved_pid();
    let env_ref = &env;
    block_on(async move {
        let client: Client = env_ref.connect().await;
        let (container, _) = create(&client, "stalled", "").await.unwrap();
        let mut request = container.run_request();
        Command::new("head", &["-c", "500000000", "/dev/zero"])
            .fill(request.get().init_spec())
            .unwrap();
        request
            .get()
            .init_io()
            .set_stdout(capnp_rpc::new_client(Stalled));
        let process = request
            .send()
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_process()
            .unwrap();
        // Wait until the writer is held back by the full pipe.
        let mut blocked = false;
        for _ in 0..400 {
            let pids = env_ref.container_pids("stalled");
            if pids.iter().any(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with("head"))
                    && std::fs::read_to_string(format!("/proc/{pid}/wchan"))
                        .is_ok_and(|w| w.contains("pipe"))
            }) {
                blocked = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(blocked, "head blocks on the pipe");
        let status = std::fs::read_to_string(format!("/proc/{groved}/status")).unwrap();
        let rss_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        assert!(
            rss_kib < 64 * 1024,
            "groved's memory stays bounded: {rss_kib} KiB"
        );
        signal(&process, api::Signal::Kill).await;
    });
}
