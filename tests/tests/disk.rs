//! Disk limits on the real kernel: each container's writable layer is a
//! btrfs subvolume whose qgroup limit the kernel enforces (EDQUOT). The test
//! envs' depots live on the btrfs `./dev setup` mounts at /var/lib/grove-test.

use grove_client::{api, Client};
use grove_tests::*;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

#[derive(Clone, Copy, Default)]
struct Disk {
    inode_hard: u64,
    byte_soft: u64,
    byte_hard: u64,
    exclusive: bool,
}

fn fill(d: Disk, mut b: api::disk_limits::Builder<'_>) {
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

/// (byteHard, byteSoft, exclusive scope)
async fn disk_limits(c: &api::container::Client) -> (u64, u64, bool) {
    let r = c
        .current_disk_limits_request()
        .send()
        .promise
        .await
        .unwrap();
    let l = r.get().unwrap().get_limits().unwrap();
    (
        l.get_byte_hard(),
        l.get_byte_soft(),
        l.get_scope().unwrap() == api::disk_limits::Scope::Exclusive,
    )
}

/// (totalBytesUsed, exclusiveBytesUsed)
async fn disk_usage(c: &api::container::Client) -> (u64, u64) {
    let r = c.metrics_request().send().promise.await.unwrap();
    let d = r.get().unwrap().get_metrics().unwrap().get_disk().unwrap();
    (d.get_total_bytes_used(), d.get_exclusive_bytes_used())
}

fn subvolumes() -> String {
    let out = std::process::Command::new("btrfs")
        .args(["subvolume", "list", TEST_ROOT])
        .output()
        .expect("btrfs (./dev setup installs btrfs-progs)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_disk_limit_from_the_spec_is_enforced_measured_and_raised() {
    let env = TestEnv::start();
    env.assert_depot_on_btrfs();
    let name = env.name.clone();
    env.run(|client| async move {
        let c = create_with_disk(
            &client,
            "disk",
            Disk {
                byte_hard: 50 * MIB,
                exclusive: true,
                ..Disk::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(disk_limits(&c).await, (50 * MIB, 50 * MIB, true));
        assert!(
            subvolumes().contains(&format!("{name}/depot/disk/layer")),
            "{}",
            subvolumes()
        );

        // Past the limit the write fails inside the container.
        let (status, _, err) = exec(
            &c,
            "dd",
            &["if=/dev/zero", "of=/tmp/big", "bs=1M", "count=100"],
        )
        .await;
        assert_ne!(status, 0, "{err}");
        assert!(err.contains("quota") || err.contains("space"), "{err}");
        let (_, out, _) = exec(&c, "sh", &["-c", "wc -c </tmp/big; rm /tmp/big"]).await;
        let got: u64 = out.trim().parse().unwrap();
        assert!((40 * MIB..=50 * MIB).contains(&got), "{got} bytes written");

        // Below it, it works; metrics see it once btrfs has committed.
        let (status, _, err) = exec(
            &c,
            "sh",
            &["-c", "dd if=/dev/zero of=/tmp/ten bs=1M count=10 && sync"],
        )
        .await;
        assert_eq!(status, 0, "{err}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (total, exclusive) = disk_usage(&c).await;
            if exclusive >= 10 * MIB && total >= 10 * MIB {
                assert!(total < 20 * MIB, "{total}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "metrics report {total}/{exclusive} bytes after writing 10 MiB"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        // Raised (and in the other scope), a bigger write goes through.
        limit_disk(
            &c,
            Disk {
                byte_hard: 200 * MIB,
                ..Disk::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(disk_limits(&c).await, (200 * MIB, 200 * MIB, false));
        let (status, _, err) = exec(
            &c,
            "dd",
            &["if=/dev/zero", "of=/tmp/big", "bs=1M", "count=100"],
        )
        .await;
        assert_eq!(status, 0, "{err}");

        // btrfs has no inode limits and no soft limits: clear refusals, and
        // the limit in force stays as it was.
        for (bad, field) in [
            (
                Disk {
                    inode_hard: 1000,
                    ..Disk::default()
                },
                "inode",
            ),
            (
                Disk {
                    byte_soft: 10 * MIB,
                    ..Disk::default()
                },
                "soft",
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
        assert_eq!(disk_limits(&c).await, (200 * MIB, 200 * MIB, false));

        // Destroy removes the subvolume.
        client.destroy("disk").await.unwrap();
        assert!(!subvolumes().contains(&name), "{}", subvolumes());
    });
}

#[test]
fn an_inode_limit_in_the_spec_fails_the_create() {
    let env = TestEnv::start();
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
            e.is("invalidSpec") && e.message.contains("btrfs has no inode limits"),
            "{e}"
        );
        assert!(client.list(&[]).await.unwrap().is_empty());
    });
}
