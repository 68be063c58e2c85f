//! What a container's processes may no longer do: every process wshd starts
//! (run, and the streamIn/streamOut children) has at most Docker's default
//! capabilities, no_new_privs and wshd's seccomp filter; it cannot mount,
//! make namespaces, reconfigure the network, or reach into wshd (PID 1)
//! through ptrace-guarded /proc files. wshd itself keeps its capabilities
//! and is not under its own filter.

use std::collections::HashMap;

use grove_client::{api, Command};
use grove_tests::*;

/// Docker's default capability set, as /proc/<pid>/status prints it.
const DOCKER_CAPS: &str = "00000000a80425fb";
const NO_CAPS: &str = "0000000000000000";

/// The `Name:\tvalue` lines of a /proc/<pid>/status text.
fn status_fields(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn assert_fields(fields: &HashMap<String, String>, want: &[(&str, &str)], who: &str) {
    for (name, value) in want {
        assert_eq!(
            fields.get(*name).map(String::as_str),
            Some(*value),
            "{who}: {name} (all: {fields:?})"
        );
    }
}

/// The status of the process `command` runs as (its own /proc/self).
async fn own_status(container: &api::container::Client, user: &str) -> HashMap<String, String> {
    let mut command = Command::new("cat", &["/proc/self/status"]);
    command.user = user.into();
    let (status, out, err) = exec_command(container, &command).await;
    assert_eq!(status, 0, "cat /proc/self/status as {user:?}: {err}");
    status_fields(&out)
}

/// An error message for EPERM or EACCES (busybox words EPERM from mount as
/// "permission denied (are you root?)").
fn is_refusal(err: &str) -> bool {
    let err = err.to_lowercase();
    err.contains("permission denied") || err.contains("operation not permitted")
}

async fn sh(container: &api::container::Client, script: &str) -> (i32, String, String) {
    exec(container, "sh", &["-c", script]).await
}

#[test]
fn processes_are_confined_and_cannot_reach_pid_one() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (c, _) = create(&client, "hard-proc", "").await.unwrap();

        // Root: Docker's set in every set but inheritable and ambient.
        let root = own_status(&c, "").await;
        assert_fields(
            &root,
            &[
                ("CapInh", NO_CAPS),
                ("CapPrm", DOCKER_CAPS),
                ("CapEff", DOCKER_CAPS),
                ("CapBnd", DOCKER_CAPS),
                ("CapAmb", NO_CAPS),
                ("NoNewPrivs", "1"),
                ("Seccomp", "2"),
            ],
            "root",
        );
        // Another user: no capabilities at all, the same bounding set.
        let user = own_status(&c, "user").await;
        assert_fields(
            &user,
            &[
                ("Uid", "1000\t1000\t1000\t1000"),
                ("CapInh", NO_CAPS),
                ("CapPrm", NO_CAPS),
                ("CapEff", NO_CAPS),
                ("CapBnd", DOCKER_CAPS),
                ("CapAmb", NO_CAPS),
                ("NoNewPrivs", "1"),
                ("Seccomp", "2"),
            ],
            "user",
        );

        // Refused as root, each for its own reason: the seccomp filter
        // (mount, unshare, user namespaces in particular, which the kernel
        // would otherwise grant anyone), the missing capabilities
        // (CAP_NET_ADMIN, CAP_SYS_ADMIN), ptrace access to PID 1 (setns
        // needs /proc/1/ns/*).
        let refused = [
            "mount -t tmpfs x /mnt",
            "mount --bind /bin /mnt",
            "umount /proc",
            "unshare -U true",
            "unshare -m true",
            "unshare -n true",
            "unshare -p -f true",
            "nsenter -t 1 -m true",
            "ip addr add 192.0.2.1/32 dev lo",
            "ip link set lo down",
            "hostname elsewhere",
        ];
        let script: String = refused
            .iter()
            .map(|cmd| format!("{cmd} 2>/dev/null; echo \"$?\"\n"))
            .collect();
        let (status, out, err) = sh(&c, &script).await;
        assert_eq!(status, 0, "{err}");
        let codes: Vec<&str> = out.lines().collect();
        assert_eq!(codes.len(), refused.len(), "{out}");
        for (cmd, code) in refused.iter().zip(&codes) {
            assert_ne!(*code, "0", "{cmd:?} succeeded inside a container");
        }
        let (_, _, err) = sh(&c, "mount -t tmpfs x /mnt").await;
        assert!(is_refusal(&err), "mount: {err}");
        let (_, _, err) = sh(&c, "unshare -U true").await;
        assert!(is_refusal(&err), "unshare -U: {err}");
        let (_, host, _) = sh(&c, "hostname").await;
        assert_eq!(host, "hard-proc\n", "the hostname is unchanged");

        // What Docker's set keeps still works: chroot (CAP_SYS_CHROOT),
        // chown (CAP_CHOWN), a safe persona (linux32). (mknod, CAP_MKNOD,
        // is the device allowlist's business: see limits.rs.)
        let (status, out, err) = sh(
            &c,
            "chroot / true && touch /tmp/f && chown 1000:1000 /tmp/f \
             && stat -c %u /tmp/f && linux32 uname -m",
        )
        .await;
        assert_eq!(status, 0, "{out}{err}");
        assert_eq!(out, "1000\ni686\n");

        // PID 1 is wshd, with capabilities its root does not have: every
        // /proc file guarded by ptrace access is closed to the container's
        // root, while its own are open.
        for script in [
            "cat /proc/1/environ",
            "cat /proc/1/mem",
            "cat /proc/1/exe",
            "ls /proc/1/root/",
            "ls /proc/1/cwd/",
            "echo x > /proc/1/fd/1",
        ] {
            let (status, _, err) = sh(&c, script).await;
            assert_ne!(status, 0, "{script:?} succeeded in the container");
            assert!(is_refusal(&err), "{script:?}: {err}");
        }
        let (status, out, err) = sh(
            &c,
            "tr '\\0' '\\n' < /proc/self/environ; cat /proc/1/cmdline",
        )
        .await;
        assert_eq!(status, 0, "{err}");
        assert!(out.contains("PATH="), "own environ: {out}");
        assert!(out.contains("wshd"), "/proc/1 is visible: {out}");
    });
}

#[test]
fn stream_children_are_confined_and_wshd_is_not() {
    let env = TestEnv::start();
    let env_ref = &env;
    env.run(|client| async move {
        let (c, handle) = create(&client, "hard-stream", "").await.unwrap();
        let before = env_ref.container_pids(&handle);
        assert_eq!(before.len(), 1, "only wshd: {before:?}");
        let wshd = before[0];

        // A streamIn whose data has not come yet: its child waits, as root.
        let sink = open_stream_in(&c, "/tmp/in", "").await.unwrap();
        let child = env_ref
            .container_pids(&handle)
            .into_iter()
            .find(|&p| p != wshd)
            .expect("the streamIn child");
        let status = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap();
        let child_fields = status_fields(&status);
        assert_fields(
            &child_fields,
            &[
                ("CapInh", NO_CAPS),
                ("CapPrm", DOCKER_CAPS),
                ("CapEff", DOCKER_CAPS),
                ("CapBnd", DOCKER_CAPS),
                ("CapAmb", NO_CAPS),
                ("NoNewPrivs", "1"),
                ("Seccomp", "2"),
            ],
            "the streamIn child",
        );
        // An empty archive ends it.
        let mut write = sink.write_request();
        write.get().set_data(&[0u8; 1024]);
        write.send().await.unwrap();
        sink.done_request().send().promise.await.unwrap();
        let (status, _, err) = exec(&c, "test", &["-d", "/tmp/in"]).await;
        assert_eq!(status, 0, "streamIn created its directory: {err}");

        // wshd itself keeps its capabilities, and is not under its own
        // filter: its children add one filter to whatever wshd runs under
        // (the helper's confinement of wshd, if any).
        let status = std::fs::read_to_string(format!("/proc/{wshd}/status")).unwrap();
        let fields = status_fields(&status);
        assert_ne!(fields["CapEff"], DOCKER_CAPS, "wshd keeps its capabilities");
        // ... but its bounding set, which its children inherit, is already
        // theirs (dropped once at start-up).
        assert_eq!(fields["CapBnd"], DOCKER_CAPS, "wshd's bounding set");
        let filters = |f: &HashMap<String, String>| -> Option<u32> {
            f.get("Seccomp_filters").map(|n| n.parse().unwrap())
        };
        // (Seccomp_filters is shown since Linux 5.9.)
        if let (Some(theirs), Some(mine)) = (filters(&child_fields), filters(&fields)) {
            assert_eq!(theirs, mine + 1, "wshd's filter is its children's only");
        }
    });
}

/// A field of /proc/<pid>/status.
fn proc_status(pid: i32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

fn parent_of(pid: i32) -> i32 {
    proc_status(pid, "PPid").parse().unwrap()
}

#[test]
fn the_helper_is_confined_and_containers_come_from_its_spawner() {
    let env = TestEnv::start();
    let helper = env.helper_pid() as i32;
    // The helper's main process: its two filters (the allowlist and the
    // clone3 answer), no_new_privs, and only the capabilities it keeps.
    assert_eq!(proc_status(helper, "Seccomp"), "2");
    assert_eq!(proc_status(helper, "Seccomp_filters"), "2");
    assert_eq!(proc_status(helper, "NoNewPrivs"), "1");
    // What confine.rs keeps, less what this host's bounding set lacks (this
    // development VM has no CAP_SYS_RESOURCE; a systemd host has it).
    let ours = u64::from_str_radix(&proc_status(std::process::id() as i32, "CapBnd"), 16).unwrap();
    let kept = format!("{:016x}", 0xa92c_37ff_u64 & ours);
    assert_eq!(proc_status(helper, "CapBnd"), kept);
    assert_eq!(proc_status(helper, "CapEff"), kept);
    let env = &env;
    let kept = &kept;
    env.run(|client| async move {
        create(&client, "spawned", "").await.unwrap();
        // wshd's parent is the spawner, the helper's child, forked before
        // the helper confined itself (so it can mount and pivot_root).
        let wshd = env.container_pids("spawned")[0];
        let spawner = parent_of(wshd);
        assert_ne!(spawner, helper);
        assert_eq!(parent_of(spawner), helper);
        assert_eq!(proc_status(spawner, "Seccomp"), "0");
        // ...but after it dropped the capabilities nothing uses.
        assert_eq!(&proc_status(spawner, "CapBnd"), kept);
    });
}

/// A stop and continue (a debugger attaching, an operator's SIGSTOP) makes
/// the kernel resume the daemons' sleeping calls with `restart_syscall`;
/// their seccomp allowlists must let it through, or they die of it.
#[test]
fn the_daemons_survive_being_stopped_and_continued() {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let env = TestEnv::start();
    for round in 0..3 {
        for pid in [env.helper_pid(), env.groved_pid()] {
            let pid = Pid::from_raw(pid as i32);
            kill(pid, Signal::SIGSTOP).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
            kill(pid, Signal::SIGCONT).unwrap();
        }
        // Both answer (groved asks the helper on create and destroy).
        env.run(|client| async move {
            let handle = format!("stopped-{round}");
            create(&client, &handle, "").await.unwrap();
            client.destroy(&handle).await.unwrap();
        });
    }
    for pid in [env.helper_pid(), env.groved_pid()] {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} died:\n{}",
            env.logs()
        );
    }
}

/// A rootfs (a copy of the default one, beneath its own dir) holding a
/// device node outside /dev: /null2, /dev/null's numbers (1:3), which the
/// device cgroup allows. Made by host root at set-up (a container's root
/// could not mknod it); removed on drop.
struct NodeRootfs {
    dir: std::path::PathBuf,
}

impl NodeRootfs {
    fn new() -> NodeRootfs {
        let dir = std::path::PathBuf::from(TEST_ROOT).join(format!("nodev-{}", std::process::id()));
        let rootfs = dir.join("rootfs");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let made = NodeRootfs { dir };
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(default_rootfs())
            .arg(&rootfs)
            .status()
            .unwrap();
        assert!(status.success());
        nix::sys::stat::mknod(
            &rootfs.join("null2"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        made
    }

    fn rootfs(&self) -> String {
        self.dir.join("rootfs").display().to_string()
    }
}

impl Drop for NodeRootfs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The options of the mount at `point`, from the container's mountinfo.
async fn mount_options(c: &api::container::Client, point: &str) -> Vec<String> {
    let (_, info, _) = exec(c, "cat", &["/proc/self/mountinfo"]).await;
    info.lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some(point))
        .and_then(|l| l.split_whitespace().nth(5))
        .unwrap_or_else(|| panic!("no mount at {point}:\n{info}"))
        .split(',')
        .map(str::to_string)
        .collect()
}

/// The root filesystem (image layers or a rootfs dir, under the writable
/// layer) is mounted nodev: a device node in it cannot be opened even when
/// the device cgroup allows its numbers, in an unprivileged container and
/// in a privileged one (whose root can also mknod such a node, into the
/// writable layer, and cannot open that either). On cgroup v2 hosts this is
/// what kept an image's node for the host disk closed before the device
/// program came.
#[test]
fn device_nodes_in_the_root_filesystem_cannot_be_opened() {
    let rootfs = NodeRootfs::new();
    let allow = format!(
        "rootfs_allow = \"{}\"\nallow_privileged = on",
        rootfs.dir.display()
    );
    let env = TestEnv::start_with_policy("", &allow);
    let path = rootfs.rootfs();
    env.run(|client| async move {
        for privileged in [false, true] {
            let mut request = client.grove.create_request();
            let mut spec = request.get().init_spec();
            spec.set_handle(if privileged { "nodev-priv" } else { "nodev" });
            spec.set_rootfs(&path);
            spec.set_privileged(privileged);
            let response = request.send().promise.await.unwrap();
            let c = response.get().unwrap().get_container().unwrap();
            let who = if privileged {
                "privileged"
            } else {
                "unprivileged"
            };
            let (status, out, err) =
                sh(&c, "ls -ln /null2; head -c 1 /null2; echo \"open: $?\"").await;
            assert_eq!(status, 0, "{who}: {err}");
            assert!(out.contains("open: 1"), "{who}: /null2 opened: {out}{err}");
            assert!(is_refusal(&err), "{who}: {err}");
            // The container's own /dev/null (Grove's bind) still works.
            let (status, _, err) =
                sh(&c, "echo x > /dev/null && head -c 1 /dev/zero >/dev/null").await;
            assert_eq!(status, 0, "{who}: {err}");
            let root = mount_options(&c, "/").await;
            assert!(root.iter().any(|o| o == "nodev"), "{who}: / is {root:?}");
            if privileged {
                let (status, out, err) = sh(
                    &c,
                    "mknod /tmp/null3 c 1 3 && echo made; head -c 1 /tmp/null3; echo \"open: $?\"",
                )
                .await;
                assert_eq!(status, 0, "{err}");
                assert!(
                    out.contains("made") && out.contains("open: 1"),
                    "{out}{err}"
                );
                assert!(is_refusal(&err), "{err}");
            }
        }
    });
}

/// /dev/shm is nosuid, nodev and noexec: a binary copied there cannot run.
#[test]
fn dev_shm_is_noexec() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (c, _) = create(&client, "shm-noexec", "").await.unwrap();
        let (status, out, err) = sh(
            &c,
            "cp /bin/busybox /dev/shm/true && chmod 755 /dev/shm/true && echo copied; \
             /dev/shm/true; echo \"exec: $?\"; cp /bin/busybox /tmp/true && /tmp/true && echo tmp-ran",
        )
        .await;
        assert_eq!(status, 0, "{err}");
        assert!(out.contains("copied"), "{out}{err}");
        assert!(!out.contains("exec: 0"), "a binary ran from /dev/shm: {out}{err}");
        assert!(is_refusal(&err), "{err}");
        assert!(out.contains("tmp-ran"), "the same binary runs elsewhere: {out}{err}");
        let opts = mount_options(&c, "/dev/shm").await;
        for want in ["nosuid", "nodev", "noexec"] {
            assert!(opts.iter().any(|o| o == want), "/dev/shm is {opts:?}");
        }
    });
}
