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
        let live: HashSet<String> = all_host_namespaces();
        let leaked: Vec<_> = namespaces.intersection(&live).collect();
        assert!(leaked.is_empty(), "namespaces still alive: {leaked:?}");
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_other_process(pid),
                "wshd {pid} is gone"
            );
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

/// A pid can be reused by an unrelated process; such a process is not wshd.
fn is_other_process(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .map(|c| !c.starts_with("wshd"))
        .unwrap_or(true)
}
