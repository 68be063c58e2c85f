//! Hostile clients: too many calls at once, calls whose answers are never
//! read, a thousand idle connections, clients that vanish mid-create or
//! mid-stream, and well-framed messages with bad RPC content. Each harms
//! only its own connection, groved's memory stays bounded (the figures are
//! printed: `-- --nocapture`), and nothing leaks.
//!
//! Several tests speak the RPC protocol by hand on a raw socket (capnp's
//! rpc.capnp messages), to do what a well-behaved client library never
//! would.

use capnp_rpc::rpc_capnp::{message, return_};
use grove_client::{api, channel_sink, Chunk, Command};
use grove_tests::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

const GROVE: u64 = <api::grove::Client as capnp::traits::HasTypeId>::TYPE_ID;
const PING: u16 = 0;
const CREATE: u16 = 2;
const MIB: u64 = 1024;

// ------------------------------------------------------------ helpers

/// groved's resident set and its peak (VmRSS, VmHWM), in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The "Max open files" line of a process's limits.
fn nofile(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("")
        .split_whitespace()
        .skip(3)
        .take(2)
        .collect::<Vec<_>>()
        .join(" soft, ")
        + " hard"
}

/// One RPC message, framed.
fn frame(build: impl FnOnce(message::Builder<'_>)) -> Vec<u8> {
    let mut m = capnp::message::Builder::new_default();
    build(m.init_root());
    capnp::serialize::write_message_to_words(&m)
}

fn bootstrap(question: u32) -> Vec<u8> {
    frame(|m| m.init_bootstrap().set_question_id(question))
}

/// A call on the bootstrap capability (question 0, pipelined: it need not
/// have been answered yet).
fn call_grove(
    question: u32,
    interface: u64,
    method: u16,
    params: impl FnOnce(capnp::any_pointer::Builder<'_>),
) -> Vec<u8> {
    frame(|m| {
        let mut call = m.init_call();
        call.set_question_id(question);
        call.set_interface_id(interface);
        call.set_method_id(method);
        call.reborrow()
            .init_target()
            .init_promised_answer()
            .set_question_id(0);
        params(call.init_params().get_content());
    })
}

fn ping(question: u32) -> Vec<u8> {
    call_grove(question, GROVE, PING, |_| {})
}

fn create_call(question: u32, handle: &str) -> Vec<u8> {
    call_grove(question, GROVE, CREATE, |content| {
        let params: api::grove::create_params::Builder = content.init_as();
        params.init_spec().set_handle(handle);
    })
}

/// How groved answered a question.
#[derive(Debug, PartialEq)]
enum Answer {
    Results,
    Exception(String),
}

/// The next message from groved that is a Return: (question, answer).
/// None at end of stream.
fn next_return(stream: &mut UnixStream) -> Option<(u32, Answer)> {
    let mut options = capnp::message::ReaderOptions::new();
    options.traversal_limit_in_words(None);
    loop {
        let reader = capnp::serialize::try_read_message(&mut *stream, options).ok()??;
        let root: message::Reader = reader.get_root().unwrap();
        if let Ok(message::Return(ret)) = root.which() {
            let ret = ret.unwrap();
            let answer = match ret.which().unwrap() {
                return_::Exception(e) => {
                    Answer::Exception(e.unwrap().get_reason().unwrap().to_string().unwrap())
                }
                _ => Answer::Results,
            };
            return Some((ret.get_answer_id(), answer));
        }
    }
}

/// Whether groved closes `stream` within 10 s (reading what it sends).
fn closed_by_groved(stream: &mut UnixStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Raise this test process's soft fd limit to its hard one.
fn raise_own_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

// ------------------------------------------------------------ calls in flight

/// A connection may have `max_calls_in_flight` calls being served; one
/// more, on any of its capabilities or pipelined, fails at once with
/// limitExceeded; other connections are not affected; once calls end the
/// connection serves again.
#[test]
fn calls_beyond_the_cap_fail_at_once_and_the_connection_recovers() {
    let env = TestEnv::start_with("max_calls_in_flight = 4");
    let env = &env;
    block_on(async move {
        let client = env.connect().await;
        let (container, handle) = create(&client, "capped", "").await.unwrap();
        let started = start(&container, &Command::new("sleep", &["600"]))
            .await
            .unwrap();
        let process = started.process.clone();
        let id = process
            .id_request()
            .send()
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_id()
            .unwrap()
            .to_string()
            .unwrap();
        // Four calls that last until the process ends.
        let waits: Vec<_> = (0..4)
            .map(|_| process.wait_request().send().promise)
            .collect();
        let limit = |e: grove_client::Error, what: &str| {
            assert!(e.is("limitExceeded"), "{what}: {e}");
            assert!(
                e.message
                    .contains("too many calls in flight on this connection (4)"),
                "{what}: {e}"
            );
        };
        limit(client.ping().await.unwrap_err(), "ping on the bootstrap");
        limit(
            container
                .info_request()
                .send()
                .promise
                .await
                .map(|_| ())
                .unwrap_err()
                .into(),
            "info on a container",
        );
        let mut lookup = client.grove.lookup_request();
        lookup.get().set_handle(&handle);
        let pipelined = lookup
            .send()
            .pipeline
            .get_container()
            .handle_request()
            .send()
            .promise
            .await;
        limit(
            pipelined.map(|_| ()).unwrap_err().into(),
            "a pipelined call",
        );
        // Another connection has its own count: it ends the process.
        let other = env.connect().await;
        other.ping().await.unwrap();
        let mut attach = other.lookup(&handle).await.unwrap().attach_request();
        attach.get().set_process_id(&id);
        attach.get().init_io();
        let attached = attach.send().promise.await.unwrap();
        signal(
            &attached.get().unwrap().get_process().unwrap(),
            api::Signal::Kill,
        )
        .await;
        for w in waits {
            let status = w.await.unwrap().get().unwrap().get_exit_status();
            assert_eq!(status, -9);
        }
        // The first connection serves again.
        client.ping().await.unwrap();
        let (status, out, _) = exec(&container, "echo", &["again"]).await;
        assert_eq!((status, out.as_str()), (0, "again\n"));
        client.destroy(&handle).await.unwrap();
    });
    grove_tests::leaks::assert_no_leaks(env);
}

// ------------------------------------------------------------ never reading

/// A client that pipelines calls as fast as it can and never reads the
/// answers: groved stops reading it once about 1 MiB of answers wait
/// (the client's writes block), its memory stays bounded, other clients
/// are served meanwhile, and once the client reads, every call is answered
/// (those beyond the cap with limitExceeded).
#[test]
fn a_client_that_never_reads_its_answers_is_no_longer_read() {
    let env = TestEnv::start();
    let pid = env.groved_pid();
    env.run(|client| async move { client.ping().await.unwrap() });
    let (rss_before, hwm_before) = memory_kib(pid);

    let mut stream = UnixStream::connect(&env.socket).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&bootstrap(0)).unwrap();
    // 2,048 pings a batch, until a write blocks for 5 s; 64 MiB of calls
    // (about 760,000) without that means groved kept reading.
    let mut next = 1u32;
    let mut written = 0usize;
    let pending = loop {
        let mut batch = Vec::new();
        for _ in 0..2048 {
            batch.extend(ping(next));
            next += 1;
        }
        let mut done = 0;
        while done < batch.len() {
            match stream.write(&batch[done..]) {
                Ok(n) => done += n,
                // A signal to the test process (the harness's children
                // exiting) cuts a blocked write short: write on.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    break
                }
                Err(e) => panic!("writing calls: {e}"),
            }
        }
        written += done;
        if done < batch.len() {
            break batch[done..].to_vec();
        }
        assert!(
            written < 64 << 20,
            "groved read {written} bytes of calls whose answers nobody read"
        );
    };
    let calls = next - 1;
    let (rss_stalled, hwm_stalled) = memory_kib(pid);
    println!(
        "never-reading client: {calls} pings pipelined, {} KiB written before groved stopped reading",
        written / 1024
    );
    println!(
        "groved memory: before {rss_before} KiB (peak {hwm_before} KiB); \
         with the client stalled {rss_stalled} KiB (peak {hwm_stalled} KiB)"
    );
    assert!(
        hwm_stalled < hwm_before + 100 * MIB,
        "groved's peak grew from {hwm_before} to {hwm_stalled} KiB"
    );
    // Others are served meanwhile.
    env.run(|client| async move {
        client.ping().await.unwrap();
        assert!(client.list(&[]).await.unwrap().is_empty());
    });
    // The client reads at last: every call is answered.
    let mut writer = stream.try_clone().unwrap();
    writer.set_write_timeout(None).unwrap();
    let finishing = std::thread::spawn(move || writer.write_all(&pending).unwrap());
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let (mut served, mut refused) = (0u32, 0u32);
    let mut bootstrapped = false;
    while served + refused < calls || !bootstrapped {
        let (question, answer) = next_return(&mut stream).expect("groved answers every call");
        match answer {
            _ if question == 0 => bootstrapped = true,
            Answer::Results => served += 1,
            Answer::Exception(reason) => {
                assert!(
                    reason.contains(
                        "[limitExceeded] too many calls in flight on this connection (1024)"
                    ),
                    "{reason}"
                );
                refused += 1;
            }
        }
    }
    finishing.join().unwrap();
    let (rss_after, hwm_after) = memory_kib(pid);
    println!(
        "all {calls} answered: {served} served, {refused} refused (cap 1024); \
         groved after {rss_after} KiB (peak {hwm_after} KiB)"
    );
    assert!(served >= 1024, "{served} pings were served");
    assert!(hwm_after < hwm_before + 100 * MIB);
}

// ------------------------------------------------------------ connections

/// 1,000 idle connections (and 100 that bootstrapped and never read the
/// answer) cost groved little, and a normal client is served meanwhile.
#[test]
fn a_thousand_idle_connections() {
    raise_own_fd_limit();
    let env = TestEnv::start();
    let pid = env.groved_pid();
    env.run(|client| async move { client.ping().await.unwrap() });
    let (rss_before, _) = memory_kib(pid);
    let fds_before = open_fds(pid);
    let mut idle: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&env.socket).unwrap())
        .collect();
    for _ in 0..100 {
        let mut s = UnixStream::connect(&env.socket).unwrap();
        s.write_all(&bootstrap(0)).unwrap();
        idle.push(s);
    }
    // groved has accepted them all once it holds their fds.
    // (Less one or two: the connection of the ping above may still have
    // been open when `fds_before` was counted.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while open_fds(pid) + 2 < fds_before + 1100 {
        assert!(
            std::time::Instant::now() < deadline,
            "groved holds {} fds, {fds_before} before the 1,100 connections; \
             RLIMIT_NOFILE {}\n{}",
            open_fds(pid),
            nofile(pid),
            env.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let env_ref = &env;
    block_on(async move {
        let client = env_ref.connect().await;
        client.ping().await.unwrap();
        let (container, handle) = create(&client, "among-idle", "").await.unwrap();
        let (status, out, _) = exec(&container, "echo", &["served"]).await;
        assert_eq!((status, out.as_str()), (0, "served\n"));
        client.destroy(&handle).await.unwrap();
    });
    let (rss_idle, hwm_idle) = memory_kib(pid);
    println!(
        "groved with 1,100 idle connections: {rss_idle} KiB (before {rss_before} KiB, \
         peak {hwm_idle} KiB); {} fds open; RLIMIT_NOFILE {}",
        open_fds(pid),
        nofile(pid)
    );
    assert!(
        rss_idle < rss_before + 100 * MIB,
        "{rss_before} -> {rss_idle} KiB"
    );
    drop(idle);
    eventually("groved closed the idle connections", || {
        open_fds(pid) < fds_before + 10
    });
    grove_tests::leaks::assert_no_leaks(&env);
}

/// Beyond `max_connections` a new connection is closed at once (logged);
/// once one closes, a new one is served.
#[test]
fn connections_beyond_max_connections_are_closed() {
    let env = TestEnv::start_with("max_connections = 10");
    let mut open = Vec::new();
    let refused = loop {
        let mut s = UnixStream::connect(&env.socket).unwrap();
        // A refused connection may be closed before the request is written.
        match s.write_all(&bootstrap(0)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => break s,
            Err(e) => panic!("writing the bootstrap request: {e}"),
        }
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        match next_return(&mut s) {
            Some((0, _)) => open.push(s),
            None => break s,
            Some(other) => panic!("{other:?}"),
        }
        assert!(open.len() <= 10, "more than max_connections were served");
    };
    drop(refused);
    assert!(
        open.len() >= 5,
        "only {} connections were served",
        open.len()
    );
    eventually("groved logged the refusal", || {
        env.logs()
            .contains("max_connections client connections open")
    });
    open.clear();
    env.run(|client| async move { client.ping().await.unwrap() });
}

// ------------------------------------------------------------ vanishing clients

/// A client that closes its connection right after sending create (after
/// various delays): each container is afterwards either fully there
/// (listed, runs a process, destroyed cleanly) or absent, and nothing leaks.
#[test]
fn clients_vanishing_mid_create_leave_whole_containers_or_none() {
    let env = TestEnv::start();
    let delays = [0u64, 1, 5, 20, 50, 100, 250, 500];
    for (i, delay) in delays.iter().enumerate() {
        let mut s = UnixStream::connect(&env.socket).unwrap();
        let mut bytes = bootstrap(0);
        bytes.extend(create_call(1, &format!("vanish-{i}")));
        s.write_all(&bytes).unwrap();
        std::thread::sleep(Duration::from_millis(*delay));
        drop(s);
    }
    let env_ref = &env;
    block_on(async move {
        let client = env_ref.connect().await;
        // Until every create has ended one way or the other: a container
        // being created has a depot dir but is not listed, so the listed
        // handles equal the depot's entries once none is under way (held
        // for a second: a create may still wait in groved for the helper).
        let depot = |env: &TestEnv| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(&env.depot)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("vanish-"))
                .collect();
            names.sort();
            names
        };
        let mut settled = Vec::new();
        let mut stable_since = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut listed = client.list(&[]).await.unwrap();
            listed.sort();
            if listed == depot(env_ref) && listed == settled {
                let since = *stable_since.get_or_insert_with(std::time::Instant::now);
                if since.elapsed() >= Duration::from_secs(1) {
                    break;
                }
            } else {
                stable_since = None;
            }
            settled = listed;
            assert!(
                std::time::Instant::now() < deadline,
                "the creates did not settle: listed {settled:?}, depot {:?}",
                depot(env_ref)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "after {} vanished creates, {} containers exist: {settled:?}",
            delays.len(),
            settled.len()
        );
        for h in &settled {
            let container = client.lookup(h).await.unwrap();
            let (status, out, _) = exec(&container, "echo", &[h]).await;
            assert_eq!((status, out), (0, format!("{h}\n")));
            client.destroy(h).await.unwrap();
        }
        assert!(client.list(&[]).await.unwrap().is_empty());
    });
    grove_tests::leaks::assert_no_leaks(&env);
}

/// A client that goes away in the middle of a streamIn (a large tar), a
/// streamOut, or while a process's output streams to it: the container
/// keeps working, no stray process (wshd's tar child) stays in it, and a
/// later attach gets the process's output.
#[test]
fn clients_vanishing_mid_stream_leave_the_container_working() {
    let env = TestEnv::start();
    let env_ref = &env;
    let handle = "streams";
    block_on(async move {
        let client = env_ref.connect().await;
        let (container, _) = create(&client, handle, "").await.unwrap();
        let (status, _, err) = exec(
            &container,
            "dd",
            &["if=/dev/zero", "of=/big", "bs=1048576", "count=32"],
        )
        .await;
        assert_eq!(status, 0, "{err}");
    });
    let only_wshd = || {
        eventually("only wshd is left in the container", || {
            env_ref.container_pids(handle).len() == 1
        })
    };
    // streamIn: 8 MiB of a 32 MiB tar, then gone.
    block_on(async move {
        let client = env_ref.connect().await;
        let container = client.lookup(handle).await.unwrap();
        let tar = tar_of("in.bin", &vec![7u8; 32 << 20]);
        let sink = open_stream_in(&container, "/", "").await.unwrap();
        for chunk in tar.chunks(256 * 1024).take(32) {
            let mut write = sink.write_request();
            write.get().set_data(chunk);
            write.send().await.unwrap();
        }
    });
    only_wshd();
    // streamOut: read about 1 MiB of /big, then gone.
    block_on(async move {
        let client = env_ref.connect().await;
        let container = client.lookup(handle).await.unwrap();
        let (sink, mut chunks) = channel_sink();
        let mut request = container.stream_out_request();
        request.get().set_path("/big");
        request.get().set_sink(sink);
        let _call = request.send();
        let mut got = 0;
        while got < 1 << 20 {
            match chunks.recv().await {
                Some(Chunk::Data(d)) => got += d.len(),
                other => panic!("streamOut ended early: {other:?}"),
            }
        }
    });
    only_wshd();
    // Output: a process writing without end, its client gone mid-stream.
    let id = block_on(async move {
        let client = env_ref.connect().await;
        let container = client.lookup(handle).await.unwrap();
        let mut command = Command::new("sh", &["-c", "while true; do echo tick; done"]);
        command.id = "ticker".into();
        let mut started = start(&container, &command).await.unwrap();
        let mut got = 0;
        while got < 1 << 20 {
            match started.stdout.recv().await {
                Some(Chunk::Data(d)) => got += d.len(),
                other => panic!("output ended early: {other:?}"),
            }
        }
        command.id
    });
    block_on(async move {
        let client = env_ref.connect().await;
        let container = client.lookup(handle).await.unwrap();
        // Still working, and a new attach gets the output.
        let (status, out, _) = exec(&container, "echo", &["ok"]).await;
        assert_eq!((status, out.as_str()), (0, "ok\n"));
        let (sink, mut output) = channel_sink();
        let mut attach = container.attach_request();
        attach.get().set_process_id(&id);
        attach.get().init_io().set_stdout(sink);
        let process = attach
            .send()
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_process()
            .unwrap();
        match output.recv().await {
            Some(Chunk::Data(d)) => assert!(String::from_utf8_lossy(&d).contains("tick")),
            other => panic!("attach got {other:?}"),
        }
        signal(&process, api::Signal::Kill).await;
        assert_eq!(wait(&process).await.unwrap(), -9);
        // A whole streamOut works after the one cut short.
        let (sink, mut chunks) = channel_sink();
        let mut request = container.stream_out_request();
        request.get().set_path("/big");
        request.get().set_sink(sink);
        request.send().promise.await.unwrap();
        let mut got = 0;
        while let Some(Chunk::Data(d)) = chunks.recv().await {
            got += d.len();
        }
        assert!(got > 32 << 20, "a tar of the 32 MiB file: {got} bytes");
    });
    only_wshd();
    block_on(async move {
        let client = env_ref.connect().await;
        client.destroy(handle).await.unwrap();
    });
    grove_tests::leaks::assert_no_leaks(&env);
}

// ------------------------------------------------------------ bad RPC content

/// Well-framed messages with bad RPC content: a call to an interface or a
/// method groved does not have is answered with an error and the
/// connection serves on; a message type groved does not know is answered
/// "unimplemented"; protocol violations (a Return for a question never
/// asked, a Release of an export that does not exist, a call to a
/// capability never exported) end that connection only.
#[test]
fn bad_rpc_content_errors_or_ends_only_its_connection() {
    let env = TestEnv::start();
    // Answered with errors; the connection then serves a ping.
    let mut s = UnixStream::connect(&env.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bytes = bootstrap(0);
    bytes.extend(call_grove(1, 0x1234_5678_9abc_def0, 0, |_| {}));
    bytes.extend(call_grove(2, GROVE, 999, |_| {}));
    // A create whose params are not a CreateParams struct (a text).
    bytes.extend(call_grove(3, GROVE, CREATE, |mut content| {
        content.set_as("not a spec").unwrap()
    }));
    bytes.extend(ping(4));
    s.write_all(&bytes).unwrap();
    let mut answers = std::collections::BTreeMap::new();
    while answers.len() < 5 {
        let (q, a) = next_return(&mut s).expect("an answer");
        answers.insert(q, a);
    }
    for q in [1, 2, 3] {
        assert!(
            matches!(&answers[&q], Answer::Exception(_)),
            "{q}: {:?}",
            answers[&q]
        );
    }
    assert_eq!(answers[&4], Answer::Results, "the connection serves on");
    // A message of an unknown type: groved says so and serves on.
    let mut unknown = capnp::message::Builder::new_default();
    {
        // rpc.capnp's Message is a union of pointers; discriminant 200
        // names no member.
        let root: capnp::any_pointer::Builder = unknown.init_root();
        let mut s: message::Builder = root.init_as();
        s.reborrow().init_abort(); // a shape; then clobber the discriminant
    }
    let mut raw = capnp::serialize::write_message_to_words(&unknown);
    // Segment table (8 bytes), root pointer (8), then the struct's data
    // word, whose first 16 bits are the union discriminant.
    raw[16] = 200;
    raw[17] = 0;
    s.write_all(&raw).unwrap();
    s.write_all(&ping(5)).unwrap();
    loop {
        let (q, a) = next_return(&mut s).expect("groved serves on");
        if q == 5 {
            assert_eq!(a, Answer::Results);
            break;
        }
    }
    drop(s);
    // Protocol violations end their connection.
    let violations: [(&str, Vec<u8>); 3] = [
        (
            "a Return for a question never asked",
            frame(|m| {
                let mut ret = m.init_return();
                ret.set_answer_id(777);
                ret.init_results();
            }),
        ),
        (
            "a Release of an unknown export",
            frame(|m| {
                let mut release = m.init_release();
                release.set_id(4242);
                release.set_reference_count(1);
            }),
        ),
        (
            "a call to a capability never exported",
            frame(|m| {
                let mut call = m.init_call();
                call.set_question_id(1);
                call.set_interface_id(GROVE);
                call.reborrow().init_target().set_imported_cap(999);
                call.init_params();
            }),
        ),
    ];
    for (what, bytes) in violations {
        let mut s = UnixStream::connect(&env.socket).unwrap();
        let mut all = bootstrap(0);
        all.extend(bytes);
        s.write_all(&all).unwrap();
        assert!(
            closed_by_groved(&mut s),
            "{what}: the connection stays open"
        );
    }
    env.run(|client| async move {
        client.ping().await.unwrap();
        let (c, h) = create(&client, "after-bad-rpc", "").await.unwrap();
        assert_eq!(exec(&c, "true", &[]).await.0, 0);
        client.destroy(&h).await.unwrap();
    });
}
