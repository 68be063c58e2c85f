//! Per-user kernel budgets (issue 23, item 1). The kernel counts some
//! resources per user — inotify instances and watches, POSIX message queue
//! bytes — and charges each use to the user in its namespace *and* to the
//! owner of that user namespace in every ancestor. A container's user
//! namespace used to be owned by host root, so one container that spent
//! such a budget to the end left every other container and every root
//! process on the host (systemd, udev and grove-helper use inotify) with
//! EMFILE. Now each container's user namespace is owned by a host uid of
//! its own (the helper's `userns::owner_uid`): a container spends only its
//! own budget.
//!
//! Each test has container A spend a budget completely (grove-escape
//! `budget spend …`, held until A is destroyed), then checks that
//! container B and this test process (host root) can still get one.

use grove_client::{api, Chunk, Command};
use grove_tests::*;
use std::ffi::CString;
use std::os::fd::AsRawFd;

const DIR: &str = "/opt/budget";

/// grove-escape, statically linked, streamed into DIR of a new container.
async fn container_with_budget_tool(
    client: &grove_client::Client,
    handle: &str,
) -> api::container::Client {
    let (container, _) = create(client, handle, "").await.unwrap();
    stream_in_escape(&container, DIR).await.unwrap();
    container
}

/// Start `budget spend WHAT ARGS…` in the container and wait for its
/// report: (how many it got, the errno that stopped it). The process keeps
/// what it got until the container is destroyed.
async fn spend(container: &api::container::Client, args: &[&str]) -> (Started, u64, i32) {
    let mut argv = vec!["budget", "spend"];
    argv.extend_from_slice(args);
    let mut started = start(
        container,
        &Command::new(&format!("{DIR}/grove-escape"), &argv),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let line = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(120), started.stdout.recv()).await
        {
            Ok(Some(Chunk::Data(d))) => out.extend(d),
            other => panic!(
                "budget spend {args:?} ended without a report ({other:?}): {}",
                String::from_utf8_lossy(&out)
            ),
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(line) = text.lines().find(|l| l.starts_with("SPENT ")) {
            if text.contains('\n') {
                break line.to_string();
            }
        }
    };
    // SPENT <what> <count> errno=<N>
    let fields: Vec<&str> = line.split_whitespace().collect();
    let count = fields[2].parse().unwrap();
    let errno = fields[3].trim_start_matches("errno=").parse().unwrap();
    println!("container A: {line}");
    (started, count, errno)
}

/// `budget try WHAT ARGS…` in the container: its TRY line.
async fn try_in(container: &api::container::Client, args: &[&str]) -> String {
    let mut argv = vec!["budget", "try"];
    argv.extend_from_slice(args);
    let (status, out, err) = exec(container, &format!("{DIR}/grove-escape"), &argv).await;
    assert_eq!(status, 0, "budget try {args:?}: {out}{err}");
    out.trim().to_string()
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The host uid owning the user namespace of the container's wshd.
fn owner_of(env: &TestEnv, handle: &str) -> u32 {
    let pid = std::fs::read_to_string(env.depot.join(handle).join("wshd.pid")).unwrap();
    let ns = std::fs::File::open(format!("/proc/{}/ns/user", pid.trim())).unwrap();
    let mut uid: libc::uid_t = 0;
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer.
    let rc = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) };
    assert_eq!(
        rc,
        0,
        "NS_GET_OWNER_UID: {}",
        std::io::Error::last_os_error()
    );
    uid
}

fn sysctl(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn each_container_s_user_namespace_has_an_owner_of_its_own() {
    // The test policy's userns_base (TestEnv) and the ids above it.
    let mut env = TestEnv::start();
    let (a, b) = env.run(|client| async move {
        create(&client, "owner-a", "").await.unwrap();
        create(&client, "owner-b", "").await.unwrap();
        ("owner-a", "owner-b")
    });
    let (oa, ob) = (owner_of(&env, a), owner_of(&env, b));
    println!("owners: {a} {oa}, {b} {ob}");
    assert_ne!(oa, 0, "{a}'s user namespace is owned by root");
    assert_ne!(ob, 0, "{b}'s user namespace is owned by root");
    assert_ne!(oa, ob, "two containers share an owner");
    // Not one of the containers' own ids either (userns_base..+65536).
    let map = std::fs::read_to_string(format!(
        "/proc/{}/uid_map",
        std::fs::read_to_string(env.depot.join(a).join("wshd.pid"))
            .unwrap()
            .trim()
    ))
    .unwrap();
    let base: u32 = map.split_whitespace().nth(1).unwrap().parse().unwrap();
    for o in [oa, ob] {
        assert!(
            o >= base + 65536,
            "owner {o} inside the id range from {base}"
        );
    }
    // A restarted helper finds the owners of running containers again and
    // gives a new container another one.
    env.restart_helper();
    let c = env.run(|client| async move {
        create(&client, "owner-c", "").await.unwrap();
        "owner-c"
    });
    let oc = owner_of(&env, c);
    assert!(oc != oa && oc != ob && oc != 0, "{oc} vs {oa}, {ob}");
}

#[test]
fn one_container_spending_its_inotify_instances_leaves_others_theirs() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let a = container_with_budget_tool(&client, "inotify-a").await;
        let b = container_with_budget_tool(&client, "inotify-b").await;
        let (_held, count, errno) = spend(&a, &["inotify-instances"]).await;
        assert_eq!(
            errno,
            libc::EMFILE,
            "A stopped at {count} for another reason"
        );
        // A had the whole per-user budget to itself, none of it spent by
        // host root's own instances.
        let max = sysctl("/proc/sys/fs/inotify/max_user_instances");
        assert_eq!(
            count, max,
            "A got {count} instances of max_user_instances {max}"
        );
        assert_eq!(
            try_in(&b, &["inotify-instance"]).await,
            "TRY inotify-instance ok"
        );
        // SAFETY: inotify_init1 takes flags only; the fd is closed at once.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        assert!(fd >= 0, "host root's inotify_init1: errno {}", last_errno());
        // SAFETY: our own fd.
        unsafe { libc::close(fd) };
    });
}

#[test]
fn one_container_spending_its_inotify_watches_leaves_others_theirs() {
    let env = TestEnv::start();
    let file = env.root.join("watched");
    std::fs::write(&file, b"").unwrap();
    env.run(|client| async move {
        let a = container_with_budget_tool(&client, "watch-a").await;
        let b = container_with_budget_tool(&client, "watch-b").await;
        // Enough files that 128 instances watching each exceed the limit.
        let max = sysctl("/proc/sys/fs/inotify/max_user_watches");
        let files = (max / 128 + 2).to_string();
        let (_held, count, errno) = spend(&a, &["inotify-watches", "/tmp/w", &files]).await;
        assert_eq!(
            errno,
            libc::ENOSPC,
            "A stopped at {count} watches for another reason"
        );
        assert_eq!(
            count, max,
            "A got {count} watches of max_user_watches {max}"
        );
        assert_eq!(
            try_in(&b, &["inotify-watch", "/etc/passwd"]).await,
            "TRY inotify-watch ok"
        );
        let path = CString::new(file.to_str().unwrap()).unwrap();
        // SAFETY: inotify_init1 takes flags; inotify_add_watch a
        // NUL-terminated path; the fd is closed at once.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_CLOEXEC);
            assert!(fd >= 0, "host root's inotify_init1: errno {}", last_errno());
            let w = libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_MODIFY);
            let e = last_errno();
            libc::close(fd);
            assert!(w >= 0, "host root's inotify_add_watch: errno {e}");
        }
    });
}

#[test]
fn one_container_spending_its_message_queue_bytes_leaves_others_theirs() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let a = container_with_budget_tool(&client, "mqueue-a").await;
        let b = container_with_budget_tool(&client, "mqueue-b").await;
        let (_held, count, errno) = spend(&a, &["mqueues"]).await;
        assert_eq!(
            errno,
            libc::EMFILE,
            "A stopped at {count} queues for another reason"
        );
        assert!(count >= 1, "A got no queue at all");
        assert_eq!(try_in(&b, &["mqueue"]).await, "TRY mqueue ok");
        // Host root, in the host's IPC namespace.
        let name = CString::new(format!("grove-budget-host-{}", std::process::id())).unwrap();
        // SAFETY: a NUL-terminated name, flags, a mode and a NULL attr;
        // the queue is closed and unlinked at once.
        unsafe {
            let fd = libc::syscall(
                libc::SYS_mq_open,
                name.as_ptr(),
                libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC,
                0o600,
                std::ptr::null::<libc::mq_attr>(),
            );
            let e = last_errno();
            if fd >= 0 {
                libc::close(fd as i32);
                libc::syscall(libc::SYS_mq_unlink, name.as_ptr());
            }
            assert!(fd >= 0, "host root's mq_open: errno {e}");
        }
    });
}
