//! Bind mounts into containers: host directories beneath the helper
//! policy's `bind_allow` and paths of the container's own rootfs, made
//! nosuid and nodev (and read-only unless asked otherwise), never through a
//! symlink; refusals leave nothing behind.

use grove_client::api::bind_mount::{Mode, Origin};
use grove_tests::*;
use std::os::unix::fs::PermissionsExt;

struct Bind<'a> {
    src: &'a str,
    dst: &'a str,
    rw: bool,
    inside: bool,
}

async fn create_with_binds(
    client: &grove_client::Client,
    handle: &str,
    binds: &[Bind<'_>],
) -> Result<grove_client::api::container::Client, grove_client::Error> {
    let mut request = client.grove.create_request();
    let mut spec = request.get().init_spec();
    spec.set_handle(handle);
    let mut list = spec.init_bind_mounts(binds.len() as u32);
    for (i, b) in binds.iter().enumerate() {
        let mut m = list.reborrow().get(i as u32);
        m.set_src_path(b.src);
        m.set_dst_path(b.dst);
        m.set_mode(if b.rw { Mode::Rw } else { Mode::Ro });
        m.set_origin(if b.inside {
            Origin::Container
        } else {
            Origin::Host
        });
    }
    Ok(request.send().promise.await?.get()?.get_container()?)
}

/// The mount options of the mount at `point`, from the container's
/// /proc/self/mountinfo.
async fn mount_options(c: &grove_client::api::container::Client, point: &str) -> String {
    let (_, info, _) = exec(c, "cat", &["/proc/self/mountinfo"]).await;
    info.lines()
        .find(|l| l.split_whitespace().nth(4) == Some(point))
        .and_then(|l| l.split_whitespace().nth(5))
        .unwrap_or_else(|| panic!("no mount at {point}:\n{info}"))
        .to_string()
}

#[test]
fn host_and_container_paths_are_bound_nosuid_nodev_and_read_only_unless_asked() {
    let dir = std::path::PathBuf::from(TEST_ROOT).join(format!("binds-{}", std::process::id()));
    let shared = dir.join("shared");
    std::fs::create_dir_all(shared.join("data")).unwrap();
    std::fs::create_dir_all(shared.join("rw")).unwrap();
    std::fs::write(shared.join("data/hello"), "hello from the host\n").unwrap();
    // World-writable: container root is an unprivileged host uid.
    std::fs::set_permissions(shared.join("rw"), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::os::unix::fs::symlink("/etc", shared.join("sneaky")).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());

    let env = TestEnv::start_with_policy("", &format!("bind_allow = {}", shared.display()));
    let data = shared.join("data").display().to_string();
    let rw = shared.join("rw").display().to_string();
    let sneaky = shared.join("sneaky").display().to_string();
    let env = &env;
    let data_for_cli = data.clone();
    env.run(|client| async move {
        let c = create_with_binds(
            &client,
            "binds",
            &[
                Bind {
                    src: &data,
                    dst: "/mnt/data",
                    rw: false,
                    inside: false,
                },
                Bind {
                    src: &rw,
                    dst: "/mnt/rw",
                    rw: true,
                    inside: false,
                },
                Bind {
                    src: "/etc",
                    dst: "/mnt/etc",
                    rw: false,
                    inside: true,
                },
            ],
        )
        .await
        .unwrap();
        let (st, out, _) = exec(&c, "cat", &["/mnt/data/hello"]).await;
        assert_eq!((st, out.as_str()), (0, "hello from the host\n"));
        let (st, _, err) = exec(&c, "touch", &["/mnt/data/new"]).await;
        assert_ne!(st, 0);
        assert!(err.contains("Read-only"), "{err}");
        let (st, _, err) = exec(&c, "sh", &["-c", "echo written > /mnt/rw/out"]).await;
        assert_eq!(st, 0, "{err}");
        assert_eq!(
            std::fs::read_to_string(shared.join("rw/out")).unwrap(),
            "written\n"
        );
        let (st, out, _) = exec(&c, "cat", &["/mnt/etc/passwd"]).await;
        assert!(st == 0 && out.contains("root:"), "{out}");
        for (point, ro) in [("/mnt/data", true), ("/mnt/rw", false), ("/mnt/etc", true)] {
            let opts = mount_options(&c, point).await;
            let flags: Vec<&str> = opts.split(',').collect();
            assert!(
                flags.contains(&"nosuid") && flags.contains(&"nodev"),
                "{point}: {opts}"
            );
            assert_eq!(flags.contains(&"ro"), ro, "{point}: {opts}");
        }

        // Refusals: each names the bind, and nothing is left.
        for (binds, code, needle) in [
            (
                vec![Bind {
                    src: "/etc",
                    dst: "/mnt/x",
                    rw: false,
                    inside: false,
                }],
                "policyRefused",
                "bind_allow",
            ),
            (
                vec![Bind {
                    src: &data,
                    dst: "/proc/x",
                    rw: false,
                    inside: false,
                }],
                "invalidSpec",
                "/proc",
            ),
            (
                vec![Bind {
                    src: &sneaky,
                    dst: "/mnt/x",
                    rw: false,
                    inside: false,
                }],
                "invalidSpec",
                "symlink",
            ),
            (
                vec![Bind {
                    src: "/etc/passwd",
                    dst: "/linuxrc/x",
                    rw: false,
                    inside: true,
                }],
                "internal",
                "linuxrc",
            ),
            (
                vec![Bind {
                    src: "/etc/passwd",
                    dst: "/linuxrc",
                    rw: false,
                    inside: true,
                }],
                "internal",
                "linuxrc",
            ),
            (
                vec![Bind {
                    src: "/../etc",
                    dst: "/mnt/x",
                    rw: false,
                    inside: true,
                }],
                "invalidSpec",
                "bindMounts[0].srcPath",
            ),
        ] {
            let e = create_with_binds(&client, "refused", &binds)
                .await
                .err()
                .unwrap();
            assert!(e.is(code) && e.message.contains(needle), "{e}");
        }
        assert_eq!(client.list(&[]).await.unwrap(), ["binds"]);
        assert!(!env.depot.join("refused").exists());
    });
    // The CLI: --bind (read-only unless :rw), --bind-inside, --privileged.
    let ok = |args: &[&str]| run_cli_ok(env, args);
    ok(&[
        "create",
        "--handle",
        "cli-bind",
        "--bind",
        &format!("{data_for_cli}:/srv/data"),
        "--bind-inside",
        "/etc:/srv/etc:rw",
    ]);
    assert_eq!(
        ok(&["run", "cli-bind", "--", "cat", "/srv/data/hello"]),
        "hello from the host\n"
    );
    let out = run_cli(
        env,
        &["create", "--handle", "cli-priv", "--privileged"],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_privileged"));
    let out = run_cli(env, &["create", "--bind", "relative:/x"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SRC:DST"));
}

/// A bind of /proc or /sys (the container's own, with --bind-inside, or
/// the host's, even beneath bind_allow) would show procfs or sysfs without
/// the container's masks and read-only /proc/sys: refused, naming the
/// source and the filesystem, and nothing is left.
#[test]
fn kernel_filesystems_are_refused_as_bind_sources() {
    let env = TestEnv::start_with_policy("", "bind_allow = \"/proc, /sys\"");
    let env = &env;
    // The host's cgroup2 hierarchy: /sys/fs/cgroup/unified on a hybrid host.
    let unified = std::path::Path::new("/sys/fs/cgroup/unified");
    let cgroup2 = if unified.is_dir() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    env.run(|client| async move {
        for (src, inside, fs) in [
            ("/proc", true, "procfs"),
            ("/proc/sys", true, "procfs"),
            ("/proc/1", false, "procfs"),
            ("/proc/sys/kernel", false, "procfs"),
            ("/sys", true, "sysfs"),
            ("/sys/kernel", true, "sysfs"),
            ("/sys/kernel", false, "sysfs"),
            (cgroup2, false, "cgroup2"),
        ] {
            let bind = Bind {
                src,
                dst: "/mnt/k",
                rw: true,
                inside,
            };
            let e = create_with_binds(&client, "kernel-fs", &[bind])
                .await
                .err()
                .unwrap_or_else(|| panic!("{src} (inside: {inside}) was bound"));
            assert!(
                e.message.contains(src)
                    && e.message.contains(fs)
                    && e.message.contains("may not be bound"),
                "{src} (inside: {inside}): {e}"
            );
        }
        assert!(client.list(&[]).await.unwrap().is_empty());
        assert!(!env.depot.join("kernel-fs").exists());
        // An ordinary directory of the container still binds.
        create_with_binds(
            &client,
            "plain",
            &[Bind {
                src: "/etc",
                dst: "/mnt/etc",
                rw: false,
                inside: true,
            }],
        )
        .await
        .unwrap();
    });
    let out = run_cli(env, &["create", "--bind-inside", "/proc:/mnt/p:rw"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/proc") && err.contains("procfs"), "{err}");
}
