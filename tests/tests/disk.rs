//! Disk limits on the real kernel, the same checks on each filesystem the
//! helper can limit: btrfs (the writable layer is a subvolume with a qgroup
//! limit; `./dev setup` mounts one at /var/lib/grove-test), and ext4 and XFS
//! (the layer has a project of its own with project quota limits; the guest
//! lane mounts them with -o prjquota at /var/lib/grove-test-ext4 and
//! /var/lib/grove-test-xfs). Where such a mount is absent the ext4/XFS test
//! says SKIPPED and why, on stderr, uncaptured. A depot on a filesystem
//! without quotas gets a refusal that names it and the remedy.

use grove_client::{api, Client};
use grove_tests::leaks::Baseline;
use grove_tests::quota;
use grove_tests::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Disk {
    inode_soft: u64,
    inode_hard: u64,
    byte_soft: u64,
    byte_hard: u64,
    exclusive: bool,
}

fn fill(d: Disk, mut b: api::disk_limits::Builder<'_>) {
    b.set_inode_soft(d.inode_soft);
    b.set_inode_hard(d.inode_hard);
    b.set_byte_soft(d.byte_soft);
    b.set_byte_hard(d.byte_hard);
    b.set_scope(if d.exclusive {
        api::disk_limits::Scope::Exclusive
    } else {
        api::disk_limits::Scope::Total
    });
}

async fn create_with_disk(
    client: &Client,
    handle: &str,
    d: Disk,
) -> Result<api::container::Client, grove_client::Error> {
    let mut request = client.grove.create_request();
    let mut spec = request.get().init_spec();
    spec.set_handle(handle);
    fill(d, spec.init_limits().init_disk());
    Ok(request.send().promise.await?.get()?.get_container()?)
}

async fn limit_disk(c: &api::container::Client, d: Disk) -> Result<(), grove_client::Error> {
    let mut request = c.limit_disk_request();
    fill(d, request.get().init_limits());
    request.send().promise.await?;
    Ok(())
}

/// The limits in force as currentDiskLimits reports them.
async fn disk_limits(c: &api::container::Client) -> Disk {
    let r = c
        .current_disk_limits_request()
        .send()
        .promise
        .await
        .unwrap();
    let l = r.get().unwrap().get_limits().unwrap();
    Disk {
        inode_soft: l.get_inode_soft(),
        inode_hard: l.get_inode_hard(),
        byte_soft: l.get_byte_soft(),
        byte_hard: l.get_byte_hard(),
        exclusive: l.get_scope().unwrap() == api::disk_limits::Scope::Exclusive,
    }
}

/// A limit as it must read back: the soft limits equal the hard ones.
fn read_back(d: Disk) -> Disk {
    Disk {
        inode_soft: d.inode_hard,
        byte_soft: d.byte_hard,
        ..d
    }
}

#[derive(Debug, Clone, Copy)]
struct Usage {
    total_bytes: u64,
    exclusive_bytes: u64,
    total_inodes: u64,
    exclusive_inodes: u64,
}

async fn disk_usage(c: &api::container::Client) -> Usage {
    let r = c.metrics_request().send().promise.await.unwrap();
    let d = r.get().unwrap().get_metrics().unwrap().get_disk().unwrap();
    Usage {
        total_bytes: d.get_total_bytes_used(),
        exclusive_bytes: d.get_exclusive_bytes_used(),
        total_inodes: d.get_total_inodes_used(),
        exclusive_inodes: d.get_exclusive_inodes_used(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fs {
    Btrfs,
    Ext4,
    Xfs,
}

impl Fs {
    fn projects(self) -> bool {
        self != Fs::Btrfs
    }

    /// Does this error output show the limit biting? EDQUOT ("Disk quota
    /// exceeded"); XFS reports a full project as ENOSPC, as if the
    /// directory tree were a filesystem of its own.
    fn over_limit(self, err: &str) -> bool {
        match self {
            Fs::Xfs => err.contains("No space left on device"),
            _ => err.contains("Disk quota exceeded"),
        }
    }
}

/// Print why a test did nothing, past libtest's output capture, so the
/// log shows it.
fn skipped(test: &str, why: &str) {
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// A test env whose depot is on `fs`; None (SKIPPED printed) when this
/// host has no such mount with project quotas.
fn env_on(fs: Fs, test: &str) -> Option<TestEnv> {
    let dir = match fs {
        Fs::Btrfs => {
            let env = TestEnv::start();
            env.assert_depot_on_btrfs();
            return Some(env);
        }
        Fs::Ext4 => "/var/lib/grove-test-ext4",
        Fs::Xfs => "/var/lib/grove-test-xfs",
    };
    if let Some(why) = quota::unusable(Path::new(dir)) {
        skipped(
            test,
            &format!("{why} (the guest lane mounts it with -o prjquota: ./dev test-guest)"),
        );
        return None;
    }
    let env = TestEnv::start_with_options(EnvOptions {
        root_parent: Some(PathBuf::from(dir)),
        ..EnvOptions::default()
    });
    assert!(
        env.logs().contains("with project quotas"),
        "the helper reports no project quotas on {dir}:\n{}",
        env.logs()
    );
    Some(env)
}

fn subvolumes() -> String {
    let out = std::process::Command::new("btrfs")
        .args(["subvolume", "list", TEST_ROOT])
        .output()
        .expect("btrfs (./dev setup installs btrfs-progs)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Make files f1..fN in /tmp until one fails; how many were made, and the
/// shell's error output. (`true`, not `:`: a failed redirection of a
/// special builtin would end the shell.)
async fn make_files(c: &api::container::Client, n: u64) -> (u64, String) {
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do i=$((i+1)); true >/tmp/f$i || break; done; \
         ls /tmp | grep -c '^f[0-9]'"
    );
    let (_, out, err) = exec(c, "sh", &["-c", &script]).await;
    (
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{out:?} {err}")),
        err,
    )
}

async fn remove_files(c: &api::container::Client) {
    let (status, _, err) = exec(c, "sh", &["-c", "rm -f /tmp/f*"]).await;
    assert_eq!(status, 0, "{err}");
}

/// Write `mib` MiB to /tmp/big; the exit status, the bytes written (the
/// file is removed again) and dd's error output.
async fn write_mib(c: &api::container::Client, mib: u64) -> (i32, u64, String) {
    let (status, _, err) = exec(
        c,
        "dd",
        &[
            "if=/dev/zero",
            "of=/tmp/big",
            "bs=1M",
            &format!("count={mib}"),
        ],
    )
    .await;
    // sync: btrfs counts at its commits.
    let (_, out, _) = exec(c, "sh", &["-c", "wc -c </tmp/big; rm /tmp/big; sync"]).await;
    (status, out.trim().parse().unwrap(), err)
}

/// Poll the metrics until `ok` holds (btrfs counts at its commits).
async fn usage_until(c: &api::container::Client, what: &str, ok: impl Fn(&Usage) -> bool) -> Usage {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let u = disk_usage(c).await;
        if ok(&u) {
            return u;
        }
        assert!(Instant::now() < deadline, "{what}: metrics report {u:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The checks every filesystem gets.
fn disk_limits_hold(fs: Fs, test: &str) {
    let Some(env) = env_on(fs, test) else {
        return;
    };
    let baseline = Baseline::take(&env);
    let layer = env.depot.join("disk/layer");
    let name = env.name.clone();
    let depot = env.depot.clone();
    env.run(|client| async move {
        // An exclusive byte limit from the spec, soft = hard as Garden
        // clients send it; read back exactly.
        let first = Disk {
            byte_soft: 50 * MIB,
            byte_hard: 50 * MIB,
            exclusive: true,
            ..Disk::default()
        };
        let c = create_with_disk(&client, "disk", first).await.unwrap();
        assert_eq!(disk_limits(&c).await, read_back(first));
        let project = if fs.projects() {
            // The layer has a project of its own, which its upper dir (where
            // the container's writes go) inherits.
            let (id, inherit) = quota::project_of(&layer).unwrap();
            assert!(id >= 1_000_000_000 && inherit, "project {id} {inherit}");
            assert_eq!(quota::project_of(&layer.join("upper")).unwrap(), (id, true));
            let q = quota::project_quota(&depot, id).unwrap();
            assert_eq!((q.bhardlimit, q.ihardlimit), (50 * 1024, 0), "{q:?}");
            Some(id)
        } else {
            assert!(
                subvolumes().contains(&format!("{name}/depot/disk/layer")),
                "{}",
                subvolumes()
            );
            None
        };

        // Past the limit the write fails inside the container.
        let (status, got, err) = write_mib(&c, 100).await;
        assert_ne!(status, 0, "{err}");
        assert!(fs.over_limit(&err), "{err}");
        assert!((40 * MIB..=50 * MIB).contains(&got), "{got} bytes written");

        // Below it, it works; the metrics see it (btrfs: once committed).
        let before = disk_usage(&c).await;
        let (status, _, err) = exec(
            &c,
            "sh",
            &["-c", "dd if=/dev/zero of=/tmp/ten bs=1M count=10 && sync"],
        )
        .await;
        assert_eq!(status, 0, "{err}");
        let u = usage_until(&c, "after writing 10 MiB", |u| {
            u.exclusive_bytes >= 10 * MIB
        })
        .await;
        assert!(u.exclusive_bytes < 16 * MIB, "{u:?}");
        // Total = the image + the container's writes.
        assert!(u.total_bytes > u.exclusive_bytes, "{u:?}");
        if fs.projects() {
            // Project quotas count inodes, at once and exactly: one file more.
            assert_eq!(u.exclusive_inodes, before.exclusive_inodes + 1, "{u:?}");
            let image_inodes = u.total_inodes - u.exclusive_inodes;
            assert!(image_inodes > 10, "the busybox rootfs has inodes: {u:?}");
            let (made, _) = make_files(&c, 20).await;
            assert_eq!(made, 20);
            let v = disk_usage(&c).await;
            assert_eq!(v.exclusive_inodes, u.exclusive_inodes + 20, "{v:?}");
            assert_eq!(v.total_inodes, v.exclusive_inodes + image_inodes, "{v:?}");
            remove_files(&c).await;
            let q = quota::project_quota(&depot, project.unwrap()).unwrap();
            assert_eq!(q.curinodes, disk_usage(&c).await.exclusive_inodes);
        } else {
            assert_eq!((u.total_inodes, u.exclusive_inodes), (0, 0), "{u:?}");
        }
        let (status, _, err) = exec(&c, "sh", &["-c", "rm /tmp/ten && sync"]).await;
        assert_eq!(status, 0, "{err}");

        // Raised, in total scope, to a size no filesystem counts in (1 byte
        // past 200 MiB): read back exactly; a 100 MiB write goes through.
        let raised = Disk {
            byte_hard: 200 * MIB + 1,
            ..Disk::default()
        };
        limit_disk(&c, raised).await.unwrap();
        assert_eq!(disk_limits(&c).await, read_back(raised));
        let (status, got, err) = write_mib(&c, 100).await;
        assert_eq!((status, got), (0, 100 * MIB), "{err}");

        // Total scope counts the image: a limit of the image's size plus
        // 20 MiB leaves the container 20 MiB; an exclusive one of the same
        // size does not count the image.
        let u = usage_until(&c, "after removing the files", |u| {
            u.exclusive_bytes < 2 * MIB
        })
        .await;
        let image_bytes = u.total_bytes - u.exclusive_bytes;
        assert!(image_bytes > MIB, "{u:?}");
        let total = Disk {
            byte_hard: image_bytes + u.exclusive_bytes + 20 * MIB,
            ..Disk::default()
        };
        limit_disk(&c, total).await.unwrap();
        assert_eq!(disk_limits(&c).await, read_back(total));
        let (status, got, err) = write_mib(&c, 100).await;
        assert_ne!(status, 0, "{err}");
        assert!((10 * MIB..=20 * MIB).contains(&got), "{got} bytes written");
        // The kernel's limit (KiB; XFS rounds up to its 4 KiB blocks).
        let kernel_kib = || {
            quota::project_quota(&depot, project.unwrap())
                .unwrap()
                .bhardlimit
        };
        let near =
            |kib: u64, bytes: u64| (bytes.div_ceil(1024)..bytes.div_ceil(1024) + 4).contains(&kib);
        if fs.projects() {
            let kib = kernel_kib();
            assert!(near(kib, total.byte_hard - image_bytes), "{kib} KiB");
        }
        let exclusive = Disk {
            exclusive: true,
            ..total
        };
        limit_disk(&c, exclusive).await.unwrap();
        assert_eq!(disk_limits(&c).await, read_back(exclusive));
        if fs.projects() {
            let kib = kernel_kib();
            assert!(near(kib, exclusive.byte_hard), "{kib} KiB");
        }

        if fs.projects() {
            // An inode limit: exclusive, 10 above what the layer holds, so
            // exactly 10 more files can be made.
            let used = disk_usage(&c).await.exclusive_inodes;
            let inodes = Disk {
                inode_hard: used + 10,
                byte_hard: 100 * MIB,
                exclusive: true,
                ..Disk::default()
            };
            limit_disk(&c, inodes).await.unwrap();
            assert_eq!(disk_limits(&c).await, read_back(inodes));
            let (made, err) = make_files(&c, 30).await;
            assert_eq!(made, 10, "{err}");
            assert!(fs.over_limit(&err), "{err}");
            remove_files(&c).await;
            // The same in total scope: the image's inodes count too.
            let u = disk_usage(&c).await;
            let total = Disk {
                inode_hard: u.total_inodes + 10,
                inode_soft: u.total_inodes + 10,
                byte_hard: 0,
                exclusive: false,
                ..Disk::default()
            };
            limit_disk(&c, total).await.unwrap();
            assert_eq!(disk_limits(&c).await, read_back(total));
            let (made, err) = make_files(&c, 30).await;
            assert_eq!(made, 10, "{err}");
            remove_files(&c).await;
            // Too small to leave the container any: refused, naming both.
            let e = limit_disk(
                &c,
                Disk {
                    inode_hard: u.total_inodes - u.exclusive_inodes,
                    ..Disk::default()
                },
            )
            .await
            .unwrap_err();
            assert!(
                e.is("invalidSpec") && e.message.contains("disk.inodes"),
                "{e}"
            );
            assert_eq!(disk_limits(&c).await, read_back(total));
        } else {
            // btrfs counts no inodes: a clear refusal, the limit unchanged.
            let e = limit_disk(
                &c,
                Disk {
                    inode_hard: 1000,
                    byte_hard: 100 * MIB,
                    ..Disk::default()
                },
            )
            .await
            .unwrap_err();
            assert!(
                e.is("invalidSpec") && e.message.contains("btrfs qgroups count no inodes"),
                "{e}"
            );
            assert_eq!(disk_limits(&c).await, read_back(exclusive));
        }

        // A soft limit of its own and a byte limit below 1 MiB: refused,
        // the limit in force unchanged.
        let kept = disk_limits(&c).await;
        for (bad, field) in [
            (
                Disk {
                    byte_soft: 10 * MIB,
                    byte_hard: 20 * MIB,
                    ..Disk::default()
                },
                "byteSoft",
            ),
            (
                Disk {
                    inode_soft: 10,
                    inode_hard: 1000,
                    byte_hard: 20 * MIB,
                    ..Disk::default()
                },
                "inodeSoft",
            ),
            (
                Disk {
                    byte_hard: 1000,
                    ..Disk::default()
                },
                "disk.bytes",
            ),
        ] {
            let e = limit_disk(&c, bad).await.unwrap_err();
            assert!(e.is("invalidSpec") && e.message.contains(field), "{e}");
        }
        assert_eq!(disk_limits(&c).await, kept);

        // Destroy leaves no limit behind: btrfs drops the subvolume (and
        // its qgroup), the project's limits are cleared.
        client.destroy("disk").await.unwrap();
        match project {
            Some(id) => {
                let q = quota::project_quota(&depot, id).unwrap();
                assert_eq!(
                    (q.bhardlimit, q.bsoftlimit, q.ihardlimit, q.isoftlimit),
                    (0, 0, 0, 0),
                    "{q:?}"
                );
            }
            None => assert!(!subvolumes().contains(&name), "{}", subvolumes()),
        }
    });
    baseline.assert_no_leaks(&env);
}

#[test]
fn disk_limits_hold_on_btrfs() {
    disk_limits_hold(Fs::Btrfs, "disk_limits_hold_on_btrfs");
}

#[test]
fn disk_limits_hold_on_ext4() {
    disk_limits_hold(Fs::Ext4, "disk_limits_hold_on_ext4");
}

#[test]
fn disk_limits_hold_on_xfs() {
    disk_limits_hold(Fs::Xfs, "disk_limits_hold_on_xfs");
}

#[test]
fn an_inode_limit_in_the_spec_fails_the_create_on_btrfs() {
    let env = TestEnv::start();
    env.assert_depot_on_btrfs();
    env.run(|client| async move {
        let e = create_with_disk(
            &client,
            "inodes",
            Disk {
                inode_hard: 100,
                byte_hard: 50 * MIB,
                ..Disk::default()
            },
        )
        .await
        .err()
        .unwrap();
        assert!(
            e.is("invalidSpec") && e.message.contains("btrfs qgroups count no inodes"),
            "{e}"
        );
        assert!(client.list(&[]).await.unwrap().is_empty());
    });
    assert!(
        std::fs::read_dir(&env.depot)
            .unwrap()
            .flatten()
            .all(|e| e.file_name().to_string_lossy().starts_with('.')),
        "the refused create left a depot entry"
    );
}

#[test]
fn a_depot_without_quotas_refuses_disk_limits_naming_the_filesystem() {
    // On the host's root filesystem: no btrfs, and no project quotas
    // (here the kernel has no ext4 quota support; in the guest the root
    // ext4 is made without the quota features).
    let parent = PathBuf::from("/var/lib/grove-test-plain");
    std::fs::create_dir_all(&parent).unwrap();
    let st = nix::sys::statfs::statfs(&parent).unwrap();
    assert_ne!(
        st.filesystem_type(),
        nix::sys::statfs::BTRFS_SUPER_MAGIC,
        "{} must be on a filesystem without quotas",
        parent.display()
    );
    assert!(
        quota::unusable(&parent).is_some(),
        "{} has project quotas",
        parent.display()
    );
    let name = match st.filesystem_type().0 {
        0xef53 => "ext4",
        0x5846_5342 => "XFS",
        0x0102_1994 => "tmpfs",
        _ => "",
    };
    let env = TestEnv::start_with_options(EnvOptions {
        root_parent: Some(parent.clone()),
        ..EnvOptions::default()
    });
    let depot = env.depot.display().to_string();
    assert!(
        env.logs().contains("disk limits are unavailable"),
        "{}",
        env.logs()
    );
    let baseline = Baseline::take(&env);
    env.run(|client| async move {
        let e = create_with_disk(
            &client,
            "limited",
            Disk {
                byte_hard: 50 * MIB,
                ..Disk::default()
            },
        )
        .await
        .err()
        .unwrap();
        assert!(e.is("policyRefused"), "{e}");
        for part in [
            "disk limits are unavailable",
            depot.as_str(),
            name,
            "prjquota",
        ] {
            assert!(e.message.contains(part), "{part:?} missing: {e}");
        }
        assert!(client.list(&[]).await.unwrap().is_empty());
        // Without a limit a container works and reports no disk figures.
        let c = create_with_disk(&client, "plain", Disk::default())
            .await
            .unwrap();
        assert_eq!(disk_limits(&c).await, Disk::default());
        let u = disk_usage(&c).await;
        assert_eq!(
            (
                u.total_bytes,
                u.exclusive_bytes,
                u.total_inodes,
                u.exclusive_inodes
            ),
            (0, 0, 0, 0)
        );
        let e = limit_disk(
            &c,
            Disk {
                inode_hard: 100,
                ..Disk::default()
            },
        )
        .await
        .unwrap_err();
        assert!(e.is("policyRefused") && e.message.contains(name), "{e}");
        client.destroy("plain").await.unwrap();
    });
    baseline.assert_no_leaks(&env);
    drop(env);
    // Only ours: other runs may share the directory.
    let _ = std::fs::remove_dir(&parent);
}
