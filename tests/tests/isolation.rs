//! What a container sees: wshd as PID 1, none of the host's processes or
//! mounts, its own hostname — and the host's mount table left untouched.

use grove_tests::*;

#[test]
fn pid_one_is_wshd_and_host_processes_are_invisible() {
    let env = TestEnv::start();
    let helper_pid = env.helper_pid();
    env.run(|client| async move {
        let (container, _) = create(&client, "iso-pid", "").await.unwrap();
        let (status, cmdline, _) = exec(&container, "cat", &["/proc/1/cmdline"]).await;
        assert_eq!(status, 0);
        assert_eq!(
            cmdline.split('\0').next(),
            Some("wshd"),
            "PID 1 runs wshd: {cmdline:?}"
        );

        // The PID namespace holds wshd, this shell and its ls: nothing else.
        let (status, pids, _) = exec(&container, "sh", &["-c", "ls /proc | grep '^[0-9]*$'"]).await;
        assert_eq!(status, 0);
        let pids: Vec<u32> = pids.lines().map(|l| l.parse().unwrap()).collect();
        assert!(pids.contains(&1));
        assert!(
            pids.len() <= 4,
            "only the container's processes are visible: {pids:?}"
        );
        // A fresh PID namespace numbers from 1: no host pid shows through.
        assert!(pids.iter().all(|&p| p < 100), "container pids: {pids:?}");
        // A host pid the container must not reach: the helper's.
        let (status, _, _) = exec(&container, "kill", &["-0", &helper_pid.to_string()]).await;
        assert_ne!(status, 0, "the helper's pid is not visible inside");
    });
}

#[test]
fn the_container_has_its_own_mounts_and_the_host_table_is_unchanged() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let before = host_mount_points();
        let (container, _) = create(&client, "iso-mnt", "").await.unwrap();
        assert_eq!(
            host_mount_points(),
            before,
            "creating a container adds no mount to the host"
        );

        let (status, mounts, _) = exec(&container, "cat", &["/proc/self/mountinfo"]).await;
        assert_eq!(status, 0);
        let points: Vec<&str> = mounts.lines().filter_map(|l| l.split(' ').nth(4)).collect();
        for expected in ["/", "/proc", "/dev", "/dev/pts", "/dev/shm", "/sys"] {
            assert!(
                points.contains(&expected),
                "{expected} is mounted: {points:?}"
            );
        }
        for point in &points {
            assert!(
                *point == "/"
                    || ["/proc", "/dev", "/sys"]
                        .iter()
                        .any(|p| point.starts_with(p)),
                "unexpected mount {point} (host mounts must not leak in)"
            );
        }
        let (_, root_line, _) = exec(
            &container,
            "sh",
            &["-c", "grep ' / / ' /proc/self/mountinfo"],
        )
        .await;
        assert!(
            root_line.contains("overlay"),
            "the root is an overlay: {root_line}"
        );

        // The old root is gone: no host file is reachable.
        let (_, out, _) = exec(&container, "ls", &["/"]).await;
        assert!(!out.lines().any(|l| l == "work" || l == "oldroot"), "{out}");

        // Writes land in the container's own layer, not in the shared rootfs.
        let (status, _, _) = exec(&container, "sh", &["-c", "echo mine > /etc/only-here"]).await;
        assert_eq!(status, 0);
        assert!(!default_rootfs().join("etc/only-here").exists());

        // The minimal /dev works.
        let (status, out, _) = exec(
            &container,
            "sh",
            &["-c", "head -c 4 /dev/zero | wc -c; ls /dev"],
        )
        .await;
        assert_eq!(status, 0);
        assert!(out.starts_with("4\n"), "{out}");
        for node in [
            "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
        ] {
            assert!(out.lines().any(|l| l == node), "/dev/{node} exists: {out}");
        }
    });
}

#[test]
fn hostname_is_the_handle() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (container, _) = create(&client, "named-box", "").await.unwrap();
        let (status, out, _) = exec(&container, "hostname", &[]).await;
        assert_eq!((status, out.as_str()), (0, "named-box\n"));
        let host = nix::unistd::gethostname().unwrap();
        assert_ne!(
            host.to_str().unwrap(),
            "named-box",
            "the host's hostname is untouched"
        );
    });
}

#[test]
fn containers_get_their_own_namespaces_and_cgroups() {
    let env = TestEnv::start();
    let env_ref = &env;
    env.run(|client| async move {
        create(&client, "ns-a", "").await.unwrap();
        let pids = env_ref.container_pids("ns-a");
        assert_eq!(
            pids.len(),
            1,
            "only wshd runs in a fresh container: {pids:?}"
        );
        let mine = namespaces_of(std::process::id() as i32);
        let theirs = namespaces_of(pids[0]);
        assert_eq!(theirs.len(), 6);
        for ((kind, ns), (_, host_ns)) in theirs.iter().zip(mine.iter()) {
            assert_ne!(ns, host_ns, "{kind} namespace is the container's own");
        }
        for controller in CONTROLLERS {
            assert!(
                env_ref.cgroup_dir(controller).join("ns-a").is_dir(),
                "{controller} cgroup exists"
            );
        }
    });
}
