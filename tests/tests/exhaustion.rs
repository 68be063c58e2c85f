//! Exhaustion: the IP pool, the NetIn port range, the maximum number of
//! containers (groved's and the helper's), the disk of groved's records and
//! the queue of requests waiting for grove-helper. Each runs out with an
//! error that names what ran out, leaves nothing half-made, and recovers
//! fully once something is freed.

use grove_client::{Client, ContainerSpec, Error, ErrorCode};
use grove_tests::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn spec(handle: &str) -> ContainerSpec {
    ContainerSpec {
        handle: handle.into(),
        ..ContainerSpec::default()
    }
}

/// `result` failed with `code` and a message naming `words`.
fn assert_refused<T>(result: Result<T, Error>, code: ErrorCode, words: &[&str], what: &str) {
    let Err(e) = result else {
        panic!("{what}: accepted");
    };
    assert_eq!(e.kind(), code, "{what}: {e}");
    let message = e.to_string();
    for w in words {
        assert!(
            message.contains(w),
            "{what}: {message:?} does not say {w:?}"
        );
    }
    println!("{what}: {message}");
}

/// Nothing of the refused container `handle` exists.
fn assert_not_made(env: &TestEnv, handle: &str) {
    for parent in env.cgroup_parents() {
        assert!(
            !parent.join(handle).exists(),
            "{handle}: cgroup {} was left",
            parent.display()
        );
    }
    assert!(!env.depot.join(handle).exists(), "{handle}: depot dir left");
    assert!(
        !env.wshd_dir.join(format!("{handle}.sock")).exists(),
        "{handle}: wshd socket left"
    );
    assert!(
        !env.root
            .join(format!("server/containers/{handle}.json"))
            .exists(),
        "{handle}: record left"
    );
}

async fn make(client: &Client, handle: &str) -> grove_client::Container {
    client
        .create(&spec(handle))
        .await
        .unwrap_or_else(|e| panic!("create {handle}: {e}"))
}

#[test]
fn the_ip_pool_runs_out_and_comes_back() {
    // A /30 holds one container: network, gateway, one, broadcast.
    let env = TestEnv::start_with_options(EnvOptions {
        pool_prefix: Some(30),
        ..EnvOptions::default()
    });
    let env_ref = &env;
    env.run(|client| async move {
        make(&client, "first").await;
        assert_refused(
            client.create(&spec("second")).await,
            ErrorCode::LimitExceeded,
            &["IP pool", "exhausted"],
            "a create past the pool",
        );
        assert_not_made(env_ref, "second");
        assert_eq!(client.list(&[]).await.unwrap(), vec!["first".to_string()]);
        client.destroy("first").await.unwrap();
        let second = make(&client, "second").await;
        let out = second
            .exec(&grove_client::Command::new("echo", &["ok"]))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"ok\n");
        client.destroy("second").await.unwrap();
    });
}

#[test]
fn the_port_range_runs_out_and_comes_back() {
    let env = TestEnv::start_with_options(EnvOptions {
        port_count: Some(2),
        ..EnvOptions::default()
    });
    env.run(|client| async move {
        let a = make(&client, "a").await;
        let b = make(&client, "b").await;
        let first = a.net_in(0, 80).await.unwrap();
        a.net_in(0, 81).await.unwrap();
        assert_refused(
            b.net_in(0, 80).await,
            ErrorCode::LimitExceeded,
            &["port range", "exhausted"],
            "a NetIn past the range",
        );
        assert!(b.info().await.unwrap().mapped_ports.is_empty());
        client.destroy("a").await.unwrap();
        // Both of a's ports are free again; the same host port can be named.
        let again = b.net_in(first.0, 80).await.unwrap();
        assert_eq!(again.0, first.0);
        b.net_in(0, 81).await.unwrap();
        client.destroy("b").await.unwrap();
    });
}

#[test]
fn groved_s_maximum_of_containers_refuses_then_admits() {
    let env = TestEnv::start_with("max_containers = 2");
    let env_ref = &env;
    env.run(|client| async move {
        assert_eq!(client.capacity().await.unwrap().max_containers, 2);
        make(&client, "a").await;
        make(&client, "b").await;
        assert_refused(
            client.create(&spec("c")).await,
            ErrorCode::LimitExceeded,
            &["maximum of 2"],
            "groved's maximum",
        );
        assert_not_made(env_ref, "c");
        client.destroy("a").await.unwrap();
        make(&client, "c").await;
    });
}

#[test]
fn the_helper_s_maximum_of_containers_refuses_then_admits() {
    // groved would take 100; the helper's policy takes 2.
    let env = TestEnv::start_with_policy("", "max_containers = 2");
    let env_ref = &env;
    env.run(|client| async move {
        make(&client, "a").await;
        make(&client, "b").await;
        assert_refused(
            client.create(&spec("c")).await,
            ErrorCode::LimitExceeded,
            &["grove-helper"],
            "the helper's maximum",
        );
        assert_not_made(env_ref, "c");
        assert_eq!(client.list(&[]).await.unwrap().len(), 2);
        client.destroy("b").await.unwrap();
        make(&client, "c").await;
    });
}

/// A small tmpfs mounted over groved's records dir, unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path) -> SmallDisk {
        let (uid, gid) = grove_user();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size=64k,mode=0700,uid={uid},gid={gid}"))
            .arg("tmpfs")
            .arg(dir)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs on {}", dir.display());
        SmallDisk { dir: dir.into() }
    }

    /// Fill it up: write until ENOSPC.
    fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.dir.join("filler")).unwrap();
        let block = vec![0u8; 4096];
        while file.write_all(&block).is_ok() {}
        file.sync_all().ok();
    }

    fn free(&self) {
        std::fs::remove_file(self.dir.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.dir, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn a_full_records_disk_refuses_creates_but_not_destroys() {
    let env = TestEnv::start();
    let records = env.root.join("server/containers");
    let disk = SmallDisk::mount(&records);
    let (env_ref, disk_ref) = (&env, &disk);
    env.run(|client| async move {
        let disk = disk_ref;
        make(&client, "before").await;
        disk.fill();
        assert_refused(
            client.create(&spec("during")).await,
            ErrorCode::Internal,
            &["saving the container record", "No space left on device"],
            "a create on a full disk",
        );
        assert_not_made(env_ref, "during");
        // A destroy frees, so a full disk must not stop it.
        client.destroy("before").await.unwrap();
        assert_not_made(env_ref, "before");
        disk.free();
        let after = make(&client, "after").await;
        let out = after
            .exec(&grove_client::Command::new("echo", &["ok"]))
            .await
            .unwrap();
        assert_eq!(out.stdout, b"ok\n");
        client.destroy("after").await.unwrap();
        let left: Vec<_> = std::fs::read_dir(&records).unwrap().flatten().collect();
        assert!(left.is_empty(), "records dir: {left:?}");
    });
    drop(disk);
}

/// SIGCONT for a stopped helper, whatever happens.
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0 as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
    }
}

#[test]
fn a_full_helper_queue_refuses_at_once_and_drains() {
    const LIMIT: usize = 3;
    const EXTRA: usize = 4;
    let env = TestEnv::start_with("helper_queue_limit = 3");
    let helper = nix::unistd::Pid::from_raw(env.helper_pid() as i32);
    let env_ref = &env;
    env.run(|client| async move {
        make(&client, "old").await;
        // A stopped helper answers nothing: requests pile up in groved.
        nix::sys::signal::kill(helper, nix::sys::signal::Signal::SIGSTOP).unwrap();
        let resume = Continue(helper.as_raw() as u32);
        let client = std::rc::Rc::new(client);
        let creates: Vec<_> = (0..LIMIT + EXTRA)
            .map(|i| {
                let client = client.clone();
                tokio::task::spawn_local(async move {
                    client.create(&spec(&format!("new{i}"))).await.map(|_| ())
                })
            })
            .collect();
        // The requests past the limit are refused without waiting.
        let deadline = Instant::now() + Duration::from_secs(10);
        while creates.iter().filter(|c| c.is_finished()).count() < EXTRA {
            assert!(
                Instant::now() < deadline,
                "no create was refused\n{}",
                env_ref.logs()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A destroy is never refused for a full queue: it waits its turn.
        let destroy = {
            let client = client.clone();
            tokio::task::spawn_local(async move { client.destroy("old").await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!destroy.is_finished(), "the destroy was not queued");
        // Those past the limit ended; those queued cannot while the helper
        // is stopped. (groved's own upkeep may hold a place in the queue
        // too, so one more may have been refused.)
        let finished: Vec<usize> = (0..creates.len())
            .filter(|i| creates[*i].is_finished())
            .collect();
        assert!(
            (EXTRA..=EXTRA + 1).contains(&finished.len()),
            "{} of {} creates ended with the helper stopped",
            finished.len(),
            creates.len()
        );
        drop(resume);
        let mut made = Vec::new();
        for (i, create) in creates.into_iter().enumerate() {
            match create.await.unwrap() {
                Ok(()) => {
                    assert!(
                        !finished.contains(&i),
                        "new{i} was made with the helper stopped"
                    );
                    made.push(format!("new{i}"));
                }
                Err(e) => {
                    assert!(finished.contains(&i), "new{i} waited, then failed: {e}");
                    assert_eq!(e.kind(), ErrorCode::ServiceUnavailable, "{e}");
                    assert!(e.to_string().contains("busy"), "{e}");
                }
            }
        }
        assert_eq!(
            made.len(),
            LIMIT + EXTRA - finished.len(),
            "the queued creates are served"
        );
        destroy.await.unwrap().unwrap();
        let mut listed = client.list(&[]).await.unwrap();
        listed.sort();
        assert_eq!(listed, made);
        for handle in listed {
            client.destroy(&handle).await.unwrap();
        }
    });
}
