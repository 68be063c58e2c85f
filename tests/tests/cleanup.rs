//! Destroy leaves nothing behind: after 50 containers are created, used and
//! destroyed, no mount, cgroup, namespace, socket or file of theirs remains.

use grove_tests::*;
use std::collections::HashSet;

#[test]
fn fifty_containers_leave_no_trace() {
    let env = TestEnv::start();
    let mounts_before = host_mount_points();
    let env_ref = &env;
    block_on(async move {
        let client = env_ref.connect().await;
        let mut namespaces = HashSet::new();
        let mut pids = Vec::new();
        for i in 0..50 {
            let handle = format!("c{i:02}");
            let (container, _) = create(&client, &handle, "").await.unwrap();
            if i % 10 == 0 {
                let (status, out, _) = exec(&container, "echo", &[&handle]).await;
                assert_eq!((status, out), (0, format!("{handle}\n")));
            }
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
        assert_eq!(client.list(&[]).await.unwrap().len(), 50);
        for i in 0..50 {
            client.destroy(&format!("c{i:02}")).await.unwrap();
        }
        assert!(client.list(&[]).await.unwrap().is_empty());

        assert_eq!(
            host_mount_points(),
            mounts_before,
            "no mount is left on the host"
        );
        for controller in CONTROLLERS {
            let children: Vec<_> = std::fs::read_dir(env_ref.cgroup_dir(controller))
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.file_name())
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                children.is_empty(),
                "{controller}: cgroups left: {children:?}"
            );
        }
        // Namespace inode numbers are reused, so a match alone proves
        // nothing: a leak is a live process holding one of them that is
        // (or was) part of this test's containers.
        let holders = processes_in_namespaces(&namespaces);
        let leaked: Vec<_> = holders
            .iter()
            .filter(|pid| belongs_to(**pid, &env_ref.name))
            .collect();
        assert!(
            leaked.is_empty(),
            "processes still in the containers' namespaces: {leaked:?}"
        );
        for pid in pids {
            assert!(!belongs_to(pid, &env_ref.name), "wshd {pid} is gone");
        }
        let depot: Vec<_> = std::fs::read_dir(&env_ref.depot)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(depot.is_empty(), "depot entries left: {depot:?}");
        let sockets: Vec<_> = std::fs::read_dir(&env_ref.wshd_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(sockets.is_empty(), "wshd sockets left: {sockets:?}");
        let records: Vec<_> = std::fs::read_dir(env_ref.root.join("server/containers"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(records.is_empty(), "records left: {records:?}");
    });
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

/// Whether a live process is wshd or sits in this test's cgroups (a pid
/// reused by an unrelated process is neither).
fn belongs_to(pid: i32, cgroup_parent: &str) -> bool {
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    cmdline.starts_with("wshd\0") || cgroups.contains(&format!("/{cgroup_parent}/"))
}
