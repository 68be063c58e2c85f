//! Destroy leaves nothing behind: after 50 containers are created, used and
//! destroyed, no mount, cgroup, link, nft element, namespace, socket or
//! file of theirs remains (tests/src/leaks.rs lists what is checked).

use grove_client::{api, Command, ContainerSpec};
use grove_tests::leaks::{self, Baseline};
use grove_tests::*;
use std::collections::HashSet;

#[test]
fn fifty_containers_leave_no_trace() {
    let env = TestEnv::start();
    let baseline = Baseline::take(&env);
    assert!(
        baseline.env.is_empty(),
        "a fresh env is clean: {:?}",
        baseline.env
    );
    let env_ref = &env;
    let (namespaces, pids) = block_on(async move {
        let client = env_ref.connect().await;
        let mut namespaces = HashSet::new();
        let mut pids = Vec::new();
        for i in 0..50 {
            let handle = format!("c{i:02}");
            let container = if i % 10 == 0 {
                // Some with limits, a NetIn mapping and a NetOut rule, so
                // their cgroup settings, DNAT element and egress chain
                // must go too.
                let spec = ContainerSpec {
                    handle: handle.clone(),
                    memory_limit_bytes: Some(64 << 20),
                    pids_max: Some(64),
                    net_out: vec![grove_client::NetOutRule::new(
                        api::net_out_rule::Protocol::Tcp,
                    )],
                    ..ContainerSpec::default()
                };
                let container = client.create(&spec).await.unwrap();
                container.net_in(0, 8080).await.unwrap();
                let out = container
                    .exec(&Command::new("echo", &[&handle]))
                    .await
                    .unwrap();
                assert_eq!(
                    (out.status, out.stdout),
                    (0, format!("{handle}\n").into_bytes())
                );
                container
            } else {
                client
                    .create(&ContainerSpec {
                        handle: handle.clone(),
                        ..ContainerSpec::default()
                    })
                    .await
                    .unwrap()
            };
            assert_eq!(container.handle(), handle);
            let wshd = env_ref.container_pids(&handle);
            assert_eq!(wshd.len(), 1, "{handle}: {wshd:?}");
            namespaces.extend(namespaces_of(wshd[0]).into_iter().map(|(_, ns)| ns));
            pids.extend(wshd);
        }
        assert_eq!(
            namespaces.len(),
            50 * 6,
            "every container has six namespaces of its own"
        );
        // The checks see what a live container has (they would miss a
        // leak if they saw nothing).
        let live = leaks::env_leaks(env_ref);
        // Container mounts live in the containers' mount namespaces, not
        // the host's, so "mount " is not among them.
        let missing: Vec<_> = [
            "cgroup ",
            "link ",
            "nft inet",
            "nft bridge",
            "depot entry",
            "btrfs subvolume",
            "wshd socket",
            "groved record",
            "process ",
        ]
        .into_iter()
        .filter(|what| !live.iter().any(|l| l.starts_with(what)))
        .collect();
        assert!(
            missing.is_empty(),
            "live containers do not show as {missing:?} leftovers; seen: {:#?}",
            &live[..live.len().min(40)]
        );
        assert_eq!(client.list(&[]).await.unwrap().len(), 50);
        for i in 0..50 {
            client.destroy(&format!("c{i:02}")).await.unwrap();
        }
        assert!(client.list(&[]).await.unwrap().is_empty());
        (namespaces, pids)
    });

    baseline.assert_no_leaks(&env);
    // Namespace inode numbers are reused, so a match alone proves
    // nothing: a leak is a live process holding one of them that is (or
    // was) part of this test's containers.
    let leaked: Vec<_> = processes_in_namespaces(&namespaces)
        .into_iter()
        .filter(|pid| leaks::belongs_to(&env, *pid))
        .collect();
    assert!(
        leaked.is_empty(),
        "processes still in the containers' namespaces: {leaked:?}"
    );
    for pid in pids {
        assert!(!leaks::belongs_to(&env, pid), "wshd {pid} is gone");
    }
}

/// Host processes in any of the given namespaces.
fn processes_in_namespaces(namespaces: &HashSet<String>) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|pid| {
            namespaces_of(*pid)
                .iter()
                .any(|(_, ns)| namespaces.contains(ns))
        })
        .collect()
}

/// A destroy removes the container's files off the helper's serve loop.
/// A tenant's writable layer holds as many files as it made (200,000 empty
/// files here, as a process of the container could write them; a million
/// took the helper over a minute to remove), and the helper used to remove
/// them before it answered anyone else. Now the depot dir is moved into
/// depot/.trash and a child of the helper removes it: the destroy is
/// answered, and so is another container's metrics (the helper's
/// GetStats), while the files are still being removed.
#[test]
fn a_destroy_of_a_container_with_many_files_does_not_hold_the_helper() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        create(&client, "many", "").await.unwrap();
        let (other, _) = create(&client, "other", "").await.unwrap();
        let upper = env.depot.join("many/layer/upper");
        assert!(upper.is_dir(), "{}", upper.display());
        for d in 0..200 {
            let dir = upper.join(format!("d{d}"));
            std::fs::create_dir(&dir).unwrap();
            for f in 0..1000 {
                std::fs::File::create(dir.join(f.to_string())).unwrap();
            }
        }
        let trash = env.depot.join(leaks::TRASH_DIR);
        let in_trash = || std::fs::read_dir(&trash).map(|d| d.count()).unwrap_or(0);
        client.destroy("many").await.unwrap();
        assert!(!env.depot.join("many").exists(), "the handle's dir is gone");
        other.metrics_request().send().promise.await.unwrap();
        assert_eq!(
            in_trash(),
            1,
            "the destroy and the metrics were answered only once the files were removed\n{}",
            env.logs()
        );
        // The child finishes the removal.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        while in_trash() > 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the trash was never emptied"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        client.destroy("other").await.unwrap();
        leaks::assert_no_leaks(env);
    });
}
