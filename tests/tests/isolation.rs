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
        for parent in env_ref.cgroup_parents() {
            assert!(
                parent.join("ns-a").is_dir(),
                "{} has the container's cgroup",
                parent.display()
            );
        }
    });
}

/// Host uid of a process, from /proc/<pid>/status (real uid).
fn host_uid(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn create_privileged(
    client: &grove_client::Client,
    handle: &str,
) -> Result<grove_client::api::container::Client, grove_client::Error> {
    let mut request = client.grove.create_request();
    let mut spec = request.get().init_spec();
    spec.set_handle(handle);
    spec.set_privileged(true);
    Ok(request.send().promise.await?.get()?.get_container()?)
}

#[test]
fn containers_run_in_a_user_namespace_and_privileged_ones_need_the_policy() {
    // Default policy: container root is host uid userns_base; privileged
    // containers are refused.
    let default_env = TestEnv::start();
    let env = &default_env;
    env.run(|client| async move {
        let (container, _) = create(&client, "userns", "").await.unwrap();
        let (_, map, _) = exec(&container, "cat", &["/proc/self/uid_map"]).await;
        let fields: Vec<&str> = map.split_whitespace().collect();
        assert_eq!(fields, ["0", "1000000000", "65536"], "{map}");
        let (_, id, _) = exec(&container, "id", &["-u"]).await;
        assert_eq!(id.trim(), "0");
        let wshd = env.container_pids("userns")[0];
        assert_eq!(host_uid(wshd), 1_000_000_000, "wshd is no host root");
        // Its files still belong to its root: the image below is idmapped,
        // its writes land owned by the mapped uid.
        let (status, out, err) = exec(
            &container,
            "sh",
            &[
                "-c",
                "touch /new && stat -c '%u %g' / /bin/busybox /new /dev",
            ],
        )
        .await;
        assert_eq!((status, out.as_str()), (0, "0 0\n0 0\n0 0\n0 0\n"), "{err}");
        let e = create_privileged(&client, "priv").await.err().unwrap();
        assert!(
            e.is("policyRefused") && e.message.contains("allow_privileged"),
            "{e}"
        );
        assert_eq!(client.list(&[]).await.unwrap(), ["userns"]);
    });
    drop(default_env);

    // A policy that allows them: no user namespace, root is host root.
    let env = TestEnv::start_with_policy("", "allow_privileged = on");
    let env = &env;
    env.run(|client| async move {
        let container = create_privileged(&client, "priv").await.unwrap();
        let (_, map, _) = exec(&container, "cat", &["/proc/self/uid_map"]).await;
        let fields: Vec<&str> = map.split_whitespace().collect();
        assert_eq!(fields, ["0", "0", "4294967295"], "{map}");
        assert_eq!(host_uid(env.container_pids("priv")[0]), 0);
    });
}

/// The root mount's super options, as the container's mountinfo shows them.
async fn root_mount_options(client: &grove_client::Client, handle: &str) -> String {
    let (container, _) = create(client, handle, "").await.unwrap();
    let (status, mounts, _) = exec(&container, "cat", &["/proc/self/mountinfo"]).await;
    assert_eq!(status, 0);
    let root = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no root mount: {mounts}"))
        .to_string();
    let (_, options) = root.split_once(" - ").expect("a mountinfo line");
    client.destroy(handle).await.unwrap();
    options.to_string()
}

/// Writable layers are overlays mounted `volatile` by default (no sync of
/// what dies with the container); `volatile_layers = false` turns it off.
#[test]
fn writable_layers_are_volatile_unless_the_policy_says_otherwise() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let options = root_mount_options(&client, "vol-default").await;
        assert!(options.starts_with("overlay "), "{options}");
        assert!(options.contains("volatile"), "{options}");
    });
    let env = TestEnv::start_with_policy("", "volatile_layers = false");
    env.run(|client| async move {
        let options = root_mount_options(&client, "vol-off").await;
        assert!(options.starts_with("overlay "), "{options}");
        assert!(!options.contains("volatile"), "{options}");
    });
}
