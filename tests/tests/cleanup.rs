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
