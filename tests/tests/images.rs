//! Container images on the real kernel: OCI layouts and docker-archive
//! tarballs built here at test time from the busybox rootfs, unpacked once
//! into the depot's layer store and stacked as overlayfs lower dirs; and
//! the same image pushed to a local `docker-registry` and pulled from it
//! (`docker://`).

use grove_client::{api, Client};
use grove_tests::oci::*;
use grove_tests::registry::{fake_registry, free_port, Registry};
use grove_tests::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Append an entry whose name (and link name) are written raw, unchecked,
/// so a test can build hostile layers.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    name: &str,
    link: &str,
    data: &[u8],
) {
    let mut h = header(kind, data.len() as u64, 0o644);
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
    b.append_data(&mut h, name, data).unwrap();
}

fn dir(b: &mut tar::Builder<Vec<u8>>, name: &str) {
    let mut h = header(tar::EntryType::Directory, 0, 0o755);
    b.append_data(&mut h, name, &[][..]).unwrap();
}

/// Layer 1: the whole busybox rootfs, plus /opt/old.
fn base_layer(rootfs: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", rootfs).unwrap();
    dir(&mut b, "opt");
    file(&mut b, "opt/old", b"old\n");
    b.into_inner().unwrap()
}

/// Layer 2: adds /etc/motd-grove, whites out /etc/os-release, makes /opt
/// opaque (with /opt/work and /opt/new in it).
fn top_layer() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    dir(&mut b, "etc");
    file(&mut b, "etc/motd-grove", b"hello from layer 2\n");
    file(&mut b, "etc/.wh.os-release", b"");
    dir(&mut b, "opt");
    file(&mut b, "opt/.wh..wh..opq", b"");
    dir(&mut b, "opt/work");
    file(&mut b, "opt/new", b"new\n");
    b.into_inner().unwrap()
}

/// Write an OCI layout at `dir`: layer 0 gzip-compressed, the others not.
fn write_oci(dir: &Path, layers: &[Vec<u8>], tag: &str) -> Oci {
    write_oci_as(dir, layers, tag, None)
}

/// `write_oci`, with the media type of the top layer's descriptor replaced
/// when `top_media_type` is given.
fn write_oci_as(dir: &Path, layers: &[Vec<u8>], tag: &str, top_media_type: Option<&str>) -> Oci {
    let mut raw = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (blob, mut media_type) = if i == 0 {
            (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (l.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        if i + 1 == layers.len() {
            media_type = top_media_type.unwrap_or(media_type);
        }
        raw.push(RawLayer {
            blob,
            media_type: media_type.into(),
            diff_id: sha(l),
        });
    }
    write_oci_raw(dir, &raw, tag)
}

fn write_docker_archive(path: &Path, layers: &[Vec<u8>]) {
    let raw: Vec<RawLayer> = layers
        .iter()
        .map(|l| RawLayer {
            blob: l.clone(),
            media_type: String::new(),
            diff_id: sha(l),
        })
        .collect();
    write_docker_archive_raw(path, &raw);
}

fn write_docker_archive_raw(path: &Path, layers: &[RawLayer]) {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let cfg = config(&diff_ids);
    let cfg_name = format!("{}.json", sha(&cfg));
    let mut b = tar::Builder::new(Vec::new());
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("l{i}/layer.tar");
        dir(&mut b, &format!("l{i}"));
        file(&mut b, &name, &l.blob);
        names.push(name);
    }
    file(&mut b, &cfg_name, &cfg);
    let manifest = serde_json::to_vec(&serde_json::json!([
        {"Config": cfg_name, "RepoTags": ["grove/test:v1"], "Layers": names}
    ]))
    .unwrap();
    file(&mut b, "manifest.json", &manifest);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, b.into_inner().unwrap()).unwrap();
}

/// The busybox rootfs as a gzip layer.
fn base_raw(rootfs: &Path) -> RawLayer {
    let l = base_layer(rootfs);
    RawLayer {
        blob: gzip(&l),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        diff_id: sha(&l),
    }
}

fn standard_image(env: &TestEnv) -> Oci {
    write_oci(
        &env.images_dir().join("busybox-oci"),
        &[base_layer(&env.rootfs), top_layer()],
        "v1",
    )
}

fn store(env: &TestEnv) -> PathBuf {
    env.depot.join(".layers/sha256")
}

fn store_entries(env: &TestEnv) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(store(env)) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

async fn create_image(
    client: &Client,
    handle: &str,
    uri: &str,
) -> Result<api::container::Client, grove_client::Error> {
    let mut request = client.grove.create_request();
    let mut spec = request.get().init_spec();
    spec.set_handle(handle);
    spec.init_image().set_uri(uri);
    Ok(request.send().promise.await?.get()?.get_container()?)
}

async fn sh(c: &api::container::Client, script: &str) -> (i32, String, String) {
    exec(c, "/bin/sh", &["-c", script]).await
}

#[test]
fn an_oci_image_runs_with_its_layers_whiteouts_and_defaults_and_shares_its_layers() {
    let env = TestEnv::start();
    let image = standard_image(&env);
    let uri = format!("oci:{}:v1", image.dir.display());
    let env = &env;
    env.run(|client| async move {
        let c = create_image(&client, "img-a", &uri).await.unwrap();
        let (st, out, err) = sh(&c, "cat /etc/motd-grove").await;
        assert_eq!((st, out.as_str()), (0, "hello from layer 2\n"), "{err}");
        assert_eq!(sh(&c, "test -e /etc/passwd").await.0, 0, "layer 1 is there");
        assert_ne!(
            sh(&c, "test -e /etc/os-release").await.0,
            0,
            "the whited-out file is gone"
        );
        let (_, out, _) = sh(&c, "ls /opt").await;
        assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["new", "work"]);
        // The image config's defaults.
        assert_eq!(sh(&c, "id -u").await.1.trim(), "1000");
        assert_eq!(sh(&c, "pwd").await.1.trim(), "/opt/work");
        assert_eq!(sh(&c, "echo $FOO").await.1.trim(), "bar");
        // The process's own settings still win.
        let cmd = grove_client::Command {
            user: "root".into(),
            dir: "/".into(),
            env: vec!["FOO=baz".into()],
            ..grove_client::Command::new("/bin/sh", &["-c", "id -u; pwd; echo $FOO"])
        };
        let (_, out, _) = exec_command(&c, &cmd).await;
        assert_eq!(out, "0\n/\nbaz\n");

        // Both layers unpacked, once.
        let layers = store_entries(env);
        assert_eq!(layers.len(), 2, "{layers:?}");
        // A second container (through spec.rootfs this time) shares them.
        let (c2, _) = create(&client, "img-b", &uri).await.unwrap();
        assert_eq!(sh(&c2, "cat /etc/motd-grove").await.0, 0);
        assert_eq!(store_entries(env), layers, "no new layer dirs");
        let list = |h: &str| fs::read_to_string(env.depot.join(h).join("layers")).unwrap();
        assert_eq!(list("img-a"), list("img-b"));
        assert_eq!(
            list("img-a").lines().collect::<Vec<_>>().len(),
            2,
            "both containers use the same two layer dirs"
        );
        // Writes go to the container's own layer, not the shared one.
        let write = grove_client::Command {
            user: "root".into(),
            ..grove_client::Command::new("/bin/sh", &["-c", "echo x > /etc/motd-grove"])
        };
        assert_eq!(exec_command(&c, &write).await.0, 0);
        assert_eq!(sh(&c, "cat /etc/motd-grove").await.1, "x\n");
        assert_eq!(
            sh(&c2, "cat /etc/motd-grove").await.1,
            "hello from layer 2\n"
        );

        // Destroying them keeps the layers (a cache, until the GC or a
        // prune removes them).
        client.destroy("img-a").await.unwrap();
        assert_eq!(store_entries(env), layers);
        client.destroy("img-b").await.unwrap();
        assert_eq!(store_entries(env), layers);
        let pruned = image_api::prune(&client, true).await.unwrap();
        assert_eq!(pruned.layers.len(), 2, "{pruned:?}");
        assert!(store_entries(env).is_empty(), "{:?}", store_entries(env));
    });
}

#[test]
fn a_docker_archive_of_the_same_image_works() {
    let env = TestEnv::start();
    let path = env.images_dir().join("busybox.tar");
    write_docker_archive(&path, &[base_layer(&env.rootfs), top_layer()]);
    let uri = format!("docker-archive:{}", path.display());
    let for_api = uri.clone();
    env.run(|client| async move {
        let c = create_image(&client, "archive", &for_api).await.unwrap();
        let (st, out, _) = sh(&c, "cat /etc/motd-grove; id -u; pwd; echo $FOO").await;
        assert_eq!(st, 0);
        assert_eq!(out, "hello from layer 2\n1000\n/opt/work\nbar\n");
        assert_ne!(sh(&c, "test -e /etc/os-release").await.0, 0);
    });
    // The CLI takes an image wherever it takes a rootfs.
    let out = run_cli(
        &env,
        &["create", "--handle", "cli-image", "--rootfs", &uri],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_cli(
        &env,
        &["run", "cli-image", "--", "cat", "/etc/motd-grove"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from layer 2\n");
}

#[test]
fn a_corrupt_blob_is_refused_and_nothing_is_kept() {
    let env = TestEnv::start();
    let image = standard_image(&env);
    let blob = image.dir.join("blobs/sha256").join(&image.layer_blobs[1]);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[600] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let uri = format!("oci:{}:v1", image.dir.display());
    let env = &env;
    env.run(|client| async move {
        let e = create_image(&client, "corrupt", &uri).await.err().unwrap();
        assert!(e.is("invalidSpec"), "{e}");
        assert!(
            e.message.contains(&image.layer_blobs[1])
                && e.message.contains(image.dir.to_str().unwrap()),
            "names the image and the blob: {e}"
        );
        assert!(client.list(&[]).await.unwrap().is_empty());
        assert!(store_entries(env).is_empty(), "{:?}", store_entries(env));
        assert!(!env.depot.join("corrupt").exists());
    });
}

#[test]
fn bad_image_references_get_clear_errors() {
    let env = TestEnv::start();
    let image = standard_image(&env);
    let outside = env.root.join("not-images/img");
    write_oci(&outside, &[top_layer()], "v1");
    let d = image.dir.display().to_string();
    let env = &env;
    env.run(|client| async move {
        for (uri, code, needle) in [
            ("ftp:/x".to_string(), "invalidSpec", "unknown scheme"),
            (
                "docker://127.0.0.1:1/Upper/case:1".to_string(),
                "invalidSpec",
                "not a valid repository",
            ),
            (
                "docker:127.0.0.1:1/x:1".to_string(),
                "invalidSpec",
                "docker://[HOST",
            ),
            (format!("oci:{d}:nope"), "invalidSpec", "nope"),
            (format!("oci:{d}"), "invalidSpec", "latest"),
            (
                format!("oci:{}:v1", outside.display()),
                "policyRefused",
                "image_allow",
            ),
            (
                format!("docker-archive:{d}/missing.tar"),
                "invalidSpec",
                "missing.tar",
            ),
        ] {
            let e = create_image(&client, "bad", &uri).await.err().unwrap();
            assert!(e.is(code), "{uri}: {e}");
            assert!(e.message.contains(needle), "{uri}: {e}");
        }
        assert!(client.list(&[]).await.unwrap().is_empty());
        assert!(store_entries(env).is_empty());
    });
}

#[test]
fn layers_that_escape_are_refused_and_write_nothing_outside() {
    let env = TestEnv::start();
    let victim = env.root.join("victim");
    fs::create_dir_all(&victim).unwrap();
    let base = base_layer(&env.rootfs);

    let mut b = tar::Builder::new(Vec::new());
    raw_entry(
        &mut b,
        tar::EntryType::Regular,
        "../../escape",
        "",
        b"pwned",
    );
    let dotdot = write_oci(
        &env.images_dir().join("dotdot"),
        &[base.clone(), b.into_inner().unwrap()],
        "v1",
    );

    let mut b = tar::Builder::new(Vec::new());
    raw_entry(
        &mut b,
        tar::EntryType::Symlink,
        "link",
        victim.to_str().unwrap(),
        b"",
    );
    raw_entry(&mut b, tar::EntryType::Regular, "link/pwned", "", b"pwned");
    let through = write_oci(
        &env.images_dir().join("through"),
        &[base, b.into_inner().unwrap()],
        "v1",
    );

    let env = &env;
    env.run(|client| async move {
        let e = create_image(
            &client,
            "dotdot",
            &format!("oci:{}:v1", dotdot.dir.display()),
        )
        .await
        .err()
        .unwrap();
        assert!(e.is("invalidSpec") && e.message.contains("refused"), "{e}");
        let e = create_image(
            &client,
            "through",
            &format!("oci:{}:v1", through.dir.display()),
        )
        .await
        .err()
        .unwrap();
        assert!(e.is("invalidSpec") && e.message.contains("symlink"), "{e}");
        assert!(!victim.join("pwned").exists());
        assert!(fs::read_dir(&victim).unwrap().next().is_none());
        for p in [
            env.depot.join("escape"),
            env.depot.join(".layers/escape"),
            env.root.join("escape"),
        ] {
            assert!(!p.exists(), "{}", p.display());
        }
        assert!(store_entries(env).is_empty(), "{:?}", store_entries(env));
        assert!(client.list(&[]).await.unwrap().is_empty());
    });
}

#[test]
fn truncated_layers_and_unsupported_media_types_get_clear_errors_and_leave_nothing() {
    let env = TestEnv::start();
    let base = base_layer(&env.rootfs);
    // A layer whose tar stops in the middle of a file's data; its digests
    // are those of the truncated bytes, so only the tar reader can tell.
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "big", &vec![7u8; 64 * 1024]);
    let full = b.into_inner().unwrap();
    let truncated = full[..20 * 1024].to_vec();
    let cut = write_oci(
        &env.images_dir().join("truncated"),
        &[base.clone(), truncated],
        "v1",
    );
    let odd = write_oci_as(
        &env.images_dir().join("odd"),
        &[base, top_layer()],
        "v1",
        Some("application/x-grove-made-up"),
    );
    let env = &env;
    env.run(|client| async move {
        let uri = format!("oci:{}:v1", cut.dir.display());
        let e = create_image(&client, "cut", &uri).await.err().unwrap();
        assert!(e.is("invalidSpec"), "{e}");
        assert!(
            e.message.contains(&uri) && e.message.contains(&cut.layer_blobs[1]),
            "names the image and the layer: {e}"
        );
        for (image, media_type) in [(&odd, "application/x-grove-made-up")] {
            let uri = format!("oci:{}:v1", image.dir.display());
            let e = create_image(&client, "typed", &uri).await.err().unwrap();
            assert!(e.is("invalidSpec"), "{e}");
            assert!(
                e.message.contains(&uri)
                    && e.message.contains(media_type)
                    && e.message.contains("not supported"),
                "names the image and the media type: {e}"
            );
        }
        // Nothing half-made: no container, no layer (the base layer of the
        // truncated image was unpacked, then collected), no temp dir.
        assert!(client.list(&[]).await.unwrap().is_empty());
        assert!(store_entries(env).is_empty(), "{:?}", store_entries(env));
        for h in ["cut", "typed"] {
            assert!(!env.depot.join(h).exists(), "{h}");
        }
    });
}

#[test]
fn two_creates_of_the_same_image_at_once_unpack_it_once() {
    let env = TestEnv::start();
    let image = standard_image(&env);
    let uri = format!("oci:{}:v1", image.dir.display());
    let env = &env;
    env.run(|client| async move {
        let (a, b) = futures::join!(
            create_image(&client, "twin-a", &uri),
            create_image(&client, "twin-b", &uri)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        for c in [&a, &b] {
            let (st, out, _) = sh(c, "cat /etc/motd-grove").await;
            assert_eq!((st, out.as_str()), (0, "hello from layer 2\n"));
        }
        // The store holds the image's two layers once, and no temp dir.
        assert_eq!(store_entries(env).len(), 2, "{:?}", store_entries(env));
        // The helper's account: one create unpacked both, the other none.
        let log = env.logs();
        let name = format!("image {uri}: 2 layers");
        assert_eq!(
            log.matches(&format!("{name}, 2 unpacked now")).count(),
            1,
            "{log}"
        );
        assert_eq!(
            log.matches(&format!("{name}, 0 unpacked now")).count(),
            1,
            "{log}"
        );
        for h in ["twin-a", "twin-b"] {
            client.destroy(h).await.unwrap();
        }
        assert_eq!(
            store_entries(env).len(),
            2,
            "kept: {:?}",
            store_entries(env)
        );
        image_api::prune(&client, true).await.unwrap();
        assert!(store_entries(env).is_empty(), "{:?}", store_entries(env));
    });
}

/// Whether the layer store holds a temp dir: an unpack is under way.
fn unpacking(env: &TestEnv) -> bool {
    store_entries(env).iter().any(|n| n.starts_with("tmp-"))
}

#[test]
fn a_gzip_bomb_over_image_max_bytes_is_refused_naming_the_bound_and_leaves_nothing() {
    // 32 MiB of zeros in ~35 KiB of gzip, over a bound of 8 MiB.
    let env = TestEnv::start_with_policy("", "image_max_bytes = 8388608\n");
    let layers = [base_raw(&env.rootfs), zeros_layer(32, true)];
    let oci = write_oci_raw(&env.images_dir().join("bomb-oci"), &layers, "v1");
    let archive = env.images_dir().join("bomb.tar");
    write_docker_archive_raw(&archive, &layers);
    let env = &env;
    env.run(|client| async move {
        // OCI layers are checked by their compressed digest, so the bomb
        // goes off while unpacking; a docker-archive's are decompressed to
        // be checked, so there it goes off before.
        for uri in [
            format!("oci:{}:v1", oci.dir.display()),
            format!("docker-archive:{}", archive.display()),
        ] {
            let e = create_image(&client, "bomb", &uri).await.err().unwrap();
            assert!(e.is("limitExceeded"), "{uri}: {e}");
            assert!(
                e.message.contains(&uri)
                    && e.message.contains("image_max_bytes")
                    && e.message.contains("8388608"),
                "names the image, the bound and its value: {e}"
            );
            assert!(client.list(&[]).await.unwrap().is_empty());
            assert!(store_entries(env).is_empty(), "{:?}", store_entries(env));
            assert!(!env.depot.join("bomb").exists());
        }
    });
}

#[test]
fn an_image_over_image_max_entries_is_refused_naming_the_bound_and_leaves_nothing() {
    let env = TestEnv::start_with_policy("", "image_max_entries = 10000\n");
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..10_001 {
        file(&mut b, &format!("f{i}"), b"");
    }
    let many = b.into_inner().unwrap();
    let image = write_oci(
        &env.images_dir().join("many"),
        &[base_layer(&env.rootfs), many],
        "v1",
    );
    let uri = format!("oci:{}:v1", image.dir.display());
    let env = &env;
    env.run(|client| async move {
        let e = create_image(&client, "many", &uri).await.err().unwrap();
        assert!(e.is("limitExceeded"), "{e}");
        assert!(
            e.message.contains(&uri)
                && e.message.contains("image_max_entries")
                && e.message.contains("10000"),
            "names the image, the bound and its value: {e}"
        );
        assert!(client.list(&[]).await.unwrap().is_empty());
        assert!(store_entries(env).is_empty(), "{:?}", store_entries(env));
        assert!(!env.depot.join("many").exists());
    });
}

/// Entries deep down long paths: each directory on an entry's path was
/// looked up again for every entry (an openat each), so entries
/// alternating between two paths 1,500 directories deep cost 150 s for
/// 20,000 of them (a 722 KB gzip) within every bound, and such an image
/// held every other image create (groved sends them one at a time) up to
/// `image_unpack_timeout`. Now the unpacker keeps the previous entry's
/// directories open and counts each lookup against `image_max_entries`:
/// the alternating layer is refused naming the bound, while the same
/// entries in one deep directory (how a tar lists a tree) pass.
#[test]
fn entries_alternating_between_deep_paths_count_their_lookups() {
    let env = TestEnv::start_with_policy("", "image_max_entries = 10000\n");
    let layer = |alternate: bool| {
        let mut b = tar::Builder::new(Vec::new());
        for i in 0..150 {
            let dir = if alternate && i % 2 == 1 { "b/" } else { "a/" };
            file(&mut b, &format!("{}f{i}", dir.repeat(100)), b"");
        }
        b.into_inner().unwrap()
    };
    let sorted = write_oci(
        &env.images_dir().join("sorted"),
        &[base_layer(&env.rootfs), layer(false)],
        "v1",
    );
    let alternating = write_oci(
        &env.images_dir().join("alternating"),
        &[base_layer(&env.rootfs), layer(true)],
        "v1",
    );
    let sorted = format!("oci:{}:v1", sorted.dir.display());
    let alternating = format!("oci:{}:v1", alternating.dir.display());
    let env = &env;
    env.run(|client| async move {
        create_image(&client, "sorted", &sorted).await.unwrap();
        client.destroy("sorted").await.unwrap();
        let e = create_image(&client, "alternating", &alternating)
            .await
            .err()
            .expect("15,000 lookups are over the bound of 10000");
        assert!(e.is("limitExceeded"), "{e}");
        assert!(
            e.message.contains("image_max_entries") && e.message.contains("10000"),
            "names the bound and its value: {e}"
        );
        assert!(client.list(&[]).await.unwrap().is_empty());
        leaks::assert_no_leaks(env);
    });
}

#[test]
fn an_unpack_past_image_unpack_timeout_is_killed_naming_the_bound_and_leaves_nothing() {
    let env = TestEnv::start_with_policy("", "image_unpack_timeout = 1\n");
    // 8 GiB of zeros (8 MB of gzip): unpacking it takes far longer than
    // the bound of 1 s (its made-up diff id would fail the create at the
    // end, with another error).
    let image = write_oci_raw(
        &env.images_dir().join("slow"),
        &[base_raw(&env.rootfs), zeros_layer(8 << 10, false)],
        "v1",
    );
    let uri = format!("oci:{}:v1", image.dir.display());
    let env = &env;
    env.run(|client| async move {
        let e = create_image(&client, "slow", &uri).await.err().unwrap();
        assert!(e.is("limitExceeded"), "{e}");
        assert!(
            e.message.contains(&uri)
                && e.message.contains("image_unpack_timeout")
                && e.message.contains("1 s"),
            "names the image, the bound and its value: {e}"
        );
        assert!(client.list(&[]).await.unwrap().is_empty());
        assert!(store_entries(env).is_empty(), "{:?}", store_entries(env));
        // The container from a rootfs dir is unaffected.
        create(&client, "after", "").await.unwrap();
        client.destroy("after").await.unwrap();
    });
}

#[test]
fn a_long_name_bomb_is_stopped_by_the_unpackers_memory_bound() {
    let env = TestEnv::start();
    // A GNU long-name entry of 512 MiB (512 KB of gzip): the tar reader
    // holds a long name whole in memory, so without a bound the unpacker
    // would take that much of the host's memory (and a bigger one more).
    let image = write_oci_raw(
        &env.images_dir().join("long-name"),
        &[
            base_raw(&env.rootfs),
            zeros_entry_layer(tar::EntryType::GNULongName, 512, false),
        ],
        "v1",
    );
    let uri = format!("oci:{}:v1", image.dir.display());
    let env = &env;
    env.run(|client| async move {
        let e = create_image(&client, "long", &uri).await.err().unwrap();
        assert!(e.is("limitExceeded"), "{e}");
        assert!(
            e.message.contains(&uri) && e.message.contains("256 MiB of memory"),
            "names the image and the bound: {e}"
        );
        assert!(client.list(&[]).await.unwrap().is_empty());
        assert!(store_entries(env).is_empty(), "{:?}", store_entries(env));
    });
}

#[test]
fn the_helper_serves_other_requests_while_an_image_unpacks() {
    let env = TestEnv::start();
    let small = standard_image(&env);
    // 64 MiB of zeros on the busybox layer: allowed, and seconds to unpack
    // (in a debug build), where the other requests take milliseconds.
    let big = write_oci_raw(
        &env.images_dir().join("big"),
        &[base_raw(&env.rootfs), zeros_layer(64, true)],
        "v1",
    );
    let small_uri = format!("oci:{}:v1", small.dir.display());
    let big_uri = format!("oci:{}:v1", big.dir.display());
    let env = &env;
    env.run(|client| async move {
        let a = create_image(&client, "small", &small_uri).await.unwrap();
        let small_layers = store_entries(env);
        let creating = create_image(&client, "big", &big_uri);
        let others = async {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while !unpacking(env) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no unpack began\n{}",
                    env.logs()
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            // While the big image unpacks: the other container's metrics
            // (the helper's GetStats), its destroy (whose clean-up of what
            // failed creates leave must spare the unpack under way), and a
            // create from a rootfs dir.
            a.metrics_request().send().promise.await.unwrap();
            client.destroy("small").await.unwrap();
            create(&client, "dir", "").await.unwrap();
            client.destroy("dir").await.unwrap();
            // All answered before the unpack was done.
            assert!(
                unpacking(env),
                "the unpack is over (the other requests waited for it, or the \
                 layer GC removed its temp dir)\n{}",
                env.logs()
            );
        };
        let (big, ()) = futures::join!(creating, others);
        let big = big.unwrap();
        let (st, out, _) = sh(&big, "wc -c < /zeros").await;
        assert_eq!((st, out.trim()), (0, "67108864"));
        // The small image's layers stay (a cache), beside the big one's
        // top layer (the busybox layer is shared).
        let left = store_entries(env);
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(
            small_layers.iter().all(|l| left.contains(l)),
            "{small_layers:?} {left:?}"
        );
        client.destroy("big").await.unwrap();
        image_api::prune(&client, true).await.unwrap();
        assert!(store_entries(env).is_empty(), "{:?}", store_entries(env));
    });
}

#[test]
fn a_total_disk_limit_counts_the_image_and_an_exclusive_one_only_the_writes() {
    const MIB: u64 = 1 << 20;
    let env = TestEnv::start();
    env.assert_depot_on_btrfs();
    // An image of busybox plus a 24 MiB file (zeros: a tiny gzip blob, but
    // 24 MiB of blocks once unpacked).
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "ballast", &vec![0u8; 24 << 20]);
    let image = write_oci(
        &env.images_dir().join("ballast"),
        &[base_layer(&env.rootfs), b.into_inner().unwrap()],
        "v1",
    );
    let uri = format!("oci:{}:v1", image.dir.display());
    env.run(|client| async move {
        let limit = |c: &api::container::Client, bytes: u64, exclusive: bool| {
            let mut r = c.limit_disk_request();
            let mut l = r.get().init_limits();
            l.set_byte_hard(bytes);
            l.set_scope(if exclusive {
                api::disk_limits::Scope::Exclusive
            } else {
                api::disk_limits::Scope::Total
            });
            r.send().promise
        };
        let current = |c: &api::container::Client| {
            let r = c.current_disk_limits_request().send().promise;
            async move {
                let r = r.await.unwrap();
                let l = r.get().unwrap().get_limits().unwrap();
                (l.get_byte_hard(), l.get_scope().unwrap())
            }
        };
        let mut request = client.grove.create_request();
        let mut spec = request.get().init_spec();
        spec.set_handle("ballast");
        spec.reborrow().init_image().set_uri(&uri);
        let mut disk = spec.init_limits().init_disk();
        disk.set_byte_hard(40 * MIB);
        disk.set_scope(api::disk_limits::Scope::Total);
        let c = request
            .send()
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_container()
            .unwrap();
        assert_eq!(
            current(&c).await,
            (40 * MIB, api::disk_limits::Scope::Total)
        );
        // The image counts toward total usage from the start, not toward
        // the exclusive figure.
        let m = c.metrics_request().send().promise.await.unwrap();
        let d = m.get().unwrap().get_metrics().unwrap().get_disk().unwrap();
        assert!(
            (24 * MIB..30 * MIB).contains(&d.get_total_bytes_used()),
            "total {}",
            d.get_total_bytes_used()
        );
        assert!(
            d.get_exclusive_bytes_used() < MIB,
            "exclusive {}",
            d.get_exclusive_bytes_used()
        );

        // 40 MiB in all, 24+ of them the image: a 30 MiB write stops short.
        let (st, _, err) = sh(&c, "dd if=/dev/zero of=/tmp/w bs=1M count=30").await;
        assert_ne!(st, 0, "{err}");
        assert!(err.contains("quota") || err.contains("space"), "{err}");
        let (_, out, _) = sh(&c, "wc -c </tmp/w; rm /tmp/w; sync").await;
        let wrote: u64 = out.trim().parse().unwrap();
        assert!((8 * MIB..=16 * MIB).contains(&wrote), "wrote {wrote}");

        // A total limit the image alone fills is refused, naming its size;
        // the limit in force stays.
        let e = grove_client::Error::from(limit(&c, 20 * MIB, false).await.err().unwrap());
        assert!(
            e.is("invalidSpec") && e.message.contains("image's") && e.message.contains("bytes"),
            "{e}"
        );
        assert_eq!(
            current(&c).await,
            (40 * MIB, api::disk_limits::Scope::Total)
        );

        // The same 40 MiB as an exclusive limit leaves the image out.
        limit(&c, 40 * MIB, true).await.unwrap();
        assert_eq!(
            current(&c).await,
            (40 * MIB, api::disk_limits::Scope::Exclusive)
        );
        let (st, _, err) = sh(&c, "dd if=/dev/zero of=/tmp/w bs=1M count=30").await;
        assert_eq!(st, 0, "{err}");
        client.destroy("ballast").await.unwrap();
    });
}

// ---------------------------------------------------------------- registry

static NEXT_REGISTRY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn start_registry() -> Registry {
    let n = NEXT_REGISTRY.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Registry::start(std::env::temp_dir().join(format!("grove-registry-{}-{n}", std::process::id())))
}

fn push_image(
    reg: &Registry,
    repo: &str,
    tag: &str,
    layers: &[Vec<u8>],
    arch: &str,
) -> (Vec<u8>, String) {
    reg.push_image(repo, tag, layers, arch)
}

fn push_index(reg: &Registry, repo: &str, tag: &str, entries: &[(&[u8], &str, &str)]) {
    reg.push_index(repo, tag, entries);
}

fn downloads_left(env: &TestEnv) -> Vec<String> {
    match fs::read_dir(env.downloads_dir()) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[test]
fn a_registry_image_is_pulled_by_tag_by_digest_and_through_an_index() {
    let reg = start_registry();
    let env = TestEnv::start_with(&format!("insecure_registries = {}\n", reg.addr));
    let layers = [base_layer(&env.rootfs), top_layer()];
    let (amd64, amd64_digest) = push_image(&reg, "test/busybox", "v1", &layers, "amd64");
    // An arm64 image whose only file would make the amd64 checks fail.
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "arm64-only", b"arm\n");
    let (arm64, arm64_digest) = push_image(
        &reg,
        "test/busybox",
        "arm64",
        &[b.into_inner().unwrap()],
        "arm64",
    );
    push_index(
        &reg,
        "test/busybox",
        "multi",
        &[
            (&arm64, &arm64_digest, "arm64"),
            (&amd64, &amd64_digest, "amd64"),
        ],
    );
    let base = format!("docker://{}/test/busybox", reg.addr);
    let cli_uri = format!("{base}:v1");
    let env = &env;
    env.run(|client| async move {
        let c = create_image(&client, "pulled", &format!("{base}:v1"))
            .await
            .unwrap();
        let (st, out, err) = sh(&c, "cat /etc/motd-grove").await;
        assert_eq!((st, out.as_str()), (0, "hello from layer 2\n"), "{err}");
        assert_eq!(sh(&c, "test -e /etc/passwd").await.0, 0, "layer 1 is there");
        assert_ne!(sh(&c, "test -e /etc/os-release").await.0, 0, "whited out");
        let (_, out, _) = sh(&c, "ls /opt").await;
        assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["new", "work"]);
        assert_eq!(sh(&c, "id -u").await.1.trim(), "1000");
        assert_eq!(sh(&c, "pwd").await.1.trim(), "/opt/work");
        assert_eq!(sh(&c, "echo $FOO").await.1.trim(), "bar");
        let layers = store_entries(env);
        assert_eq!(layers.len(), 2, "{layers:?}");
        assert!(downloads_left(env).is_empty(), "{:?}", downloads_left(env));

        // By digest: the same layers; the pull reports its progress.
        let (progress, mut updates) = Recorder::new();
        let mut request = client.grove.create_request();
        let mut spec = request.get().init_spec();
        spec.set_handle("by-digest");
        spec.reborrow()
            .init_image()
            .set_uri(format!("{base}@{amd64_digest}"));
        spec.set_pull_progress(capnp_rpc::new_client(progress));
        let c2 = request
            .send()
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_container()
            .unwrap();
        let mut seen = Vec::new();
        while let Ok(update) = updates.try_recv() {
            seen.push(update);
        }
        let (done, total) = *seen.last().expect("progress updates arrived");
        assert!(total > 1 << 20 && done == total, "ends complete: {seen:?}");
        assert!(
            seen.windows(2).all(|w| w[0].0 <= w[1].0),
            "done only grows: {seen:?}"
        );
        assert_eq!(sh(&c2, "cat /etc/motd-grove").await.0, 0);
        assert_eq!(store_entries(env), layers);

        // Through an index with arm64 and amd64: amd64 is chosen.
        let c3 = create_image(&client, "multi", &format!("{base}:multi"))
            .await
            .unwrap();
        assert_eq!(sh(&c3, "cat /etc/motd-grove").await.0, 0);
        assert_ne!(sh(&c3, "test -e /arm64-only").await.0, 0);
        assert_eq!(store_entries(env), layers, "the arm64 layer was not pulled");

        assert!(downloads_left(env).is_empty(), "{:?}", downloads_left(env));

        for h in ["pulled", "by-digest", "multi"] {
            client.destroy(h).await.unwrap();
        }
        image_api::prune(&client, true).await.unwrap();
        assert!(store_entries(env).is_empty());
    });
    // The CLI pulls too, with a progress line on stderr.
    let out = run_cli(
        env,
        &["create", "--handle", "cli-pull", "--rootfs", &cli_uri],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("pulled "), "{stderr}");
}

#[test]
fn registry_failures_get_clear_errors_and_leave_nothing() {
    let reg = start_registry();
    let dead = format!("127.0.0.1:{}", free_port());
    let env = TestEnv::start_with(&format!("insecure_registries = {}, {dead}\n", reg.addr));
    let layers = [base_layer(&env.rootfs), top_layer()];
    let (arm64, arm64_digest) = push_image(&reg, "test/busybox", "arm", &layers, "arm64");
    push_index(
        &reg,
        "test/busybox",
        "armonly",
        &[(&arm64, &arm64_digest, "arm64")],
    );
    let base = format!("docker://{}/test/busybox", reg.addr);
    let env = &env;
    env.run(|client| async move {
        for (uri, code, needles) in [
            (
                format!("{base}:v9"),
                "invalidSpec",
                &["v9", "not found"][..],
            ),
            (
                format!("{base}@sha256:{}", "0".repeat(64)),
                "invalidSpec",
                &["not found"][..],
            ),
            (
                format!("docker://{}/nothing/here:v1", reg.addr),
                "invalidSpec",
                &["nothing/here", "not found"][..],
            ),
            (
                format!("{base}:armonly"),
                "invalidSpec",
                &["linux/amd64", "linux/arm64"][..],
            ),
            (
                format!("docker://{dead}/test/busybox:v1"),
                "serviceUnavailable",
                &["unreachable", dead.as_str()][..],
            ),
        ] {
            let e = create_image(&client, "bad", &uri).await.err().unwrap();
            assert!(e.is(code), "{uri}: {e}");
            assert!(e.message.contains(&uri), "names the image: {e}");
            for needle in needles {
                assert!(e.message.contains(needle), "{uri}: {needle:?} in {e}");
            }
        }
        assert!(client.list(&[]).await.unwrap().is_empty());
        assert!(store_entries(env).is_empty());
        assert!(downloads_left(env).is_empty(), "{:?}", downloads_left(env));
    });
}

#[test]
fn a_registry_not_named_insecure_gets_no_plain_http() {
    let reg = start_registry();
    let env = TestEnv::start();
    let layers = [base_layer(&env.rootfs), top_layer()];
    push_image(&reg, "test/busybox", "v1", &layers, "amd64");
    let uri = format!("docker://{}/test/busybox:v1", reg.addr);
    let env = &env;
    env.run(|client| async move {
        let e = create_image(&client, "plain", &uri).await.err().unwrap();
        assert!(e.is("serviceUnavailable"), "{e}");
        assert!(
            e.message.contains(&uri)
                && e.message.contains("https://")
                && e.message.contains("insecure_registries"),
            "{e}"
        );
        assert!(client.list(&[]).await.unwrap().is_empty());
        assert!(store_entries(env).is_empty());
        assert!(downloads_left(env).is_empty());
    });
}

#[test]
fn bearer_token_auth_works_and_a_corrupt_blob_is_refused() {
    let base_tar = base_layer(&default_rootfs());
    let layers = [gzip(&base_tar), top_layer()];
    let diff_ids = vec![sha(&base_tar), sha(&layers[1])];
    let cfg = config(&diff_ids);
    let mut routes = std::collections::HashMap::new();
    let repo = "/v2/test/busybox";
    let mut descs = Vec::new();
    for (l, mt) in layers.iter().zip([
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar",
    ]) {
        let d = format!("sha256:{}", sha(l));
        routes.insert(
            format!("{repo}/blobs/{d}"),
            ("application/octet-stream".into(), l.clone()),
        );
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": l.len()}));
    }
    let cfg_d = format!("sha256:{}", sha(&cfg));
    routes.insert(
        format!("{repo}/blobs/{cfg_d}"),
        ("application/octet-stream".into(), cfg.clone()),
    );
    const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    let manifest = |config: serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config,
            "layers": descs
        }))
        .unwrap()
    };
    routes.insert(
        format!("{repo}/manifests/v1"),
        (
            DOCKER_MANIFEST.into(),
            manifest(
                serde_json::json!({"mediaType": "application/vnd.docker.container.image.v1+json",
                                        "digest": cfg_d, "size": cfg.len()}),
            ),
        ),
    );
    // "corrupt": its config blob is served with other bytes than its digest.
    let mut evil = cfg.clone();
    evil[0] = b' ';
    let good_d = cfg_d.clone();
    let bad_d = format!("sha256:{}", sha(b"some other config"));
    routes.insert(
        format!("{repo}/blobs/{bad_d}"),
        ("application/octet-stream".into(), evil),
    );
    routes.insert(
        format!("{repo}/manifests/corrupt"),
        (
            DOCKER_MANIFEST.into(),
            manifest(
                serde_json::json!({"mediaType": "application/vnd.docker.container.image.v1+json",
                                        "digest": bad_d, "size": cfg.len()}),
            ),
        ),
    );
    let fake = fake_registry(routes);
    let env = TestEnv::start_with(&format!("insecure_registries = {}\n", fake.addr));
    let base = format!("docker://{}/test/busybox", fake.addr);
    let env = &env;
    let fake = &fake;
    env.run(|client| async move {
        // Without credentials the token service refuses.
        let e = create_image(&client, "anon", &format!("{base}:v1"))
            .await
            .err()
            .unwrap();
        assert!(e.is("invalidSpec") && e.message.contains("token"), "{e}");

        let with_login = |handle: &str, uri: String| {
            let mut request = client.grove.create_request();
            let mut spec = request.get().init_spec();
            spec.set_handle(handle);
            let mut image = spec.init_image();
            image.set_uri(&uri);
            image.set_username("alice");
            image.set_password("s3cret");
            request.send().promise
        };
        let c = with_login("authed", format!("{base}:v1"))
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_container()
            .unwrap();
        let (st, out, err) = sh(&c, "cat /etc/motd-grove; echo $FOO").await;
        assert_eq!(
            (st, out.as_str()),
            (0, "hello from layer 2\nbar\n"),
            "{err}"
        );
        let queries = fake.token_queries.lock().unwrap().clone();
        assert!(
            queries
                .iter()
                .any(|q| q.contains("service=fake") && q.contains("scope=repository")),
            "{queries:?}"
        );

        let e = match with_login("corrupt", format!("{base}:corrupt")).await {
            Ok(_) => panic!("a corrupt config blob was accepted"),
            Err(e) => grove_client::Error::from(e),
        };
        assert!(e.is("invalidSpec"), "{e}");
        assert!(
            e.message.contains(&format!("{base}:corrupt")) && e.message.contains(&bad_d),
            "names the image and the blob: {e}"
        );
        assert!(!e.message.contains(&good_d));
        assert_eq!(client.list(&[]).await.unwrap(), ["authed"]);
        assert!(downloads_left(env).is_empty(), "{:?}", downloads_left(env));
        client.destroy("authed").await.unwrap();
        image_api::prune(&client, true).await.unwrap();
        assert!(store_entries(env).is_empty());
    });
}

/// A PullProgress that records every update.
struct Recorder(tokio::sync::mpsc::UnboundedSender<(u64, u64)>);

impl Recorder {
    fn new() -> (Recorder, tokio::sync::mpsc::UnboundedReceiver<(u64, u64)>) {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        (Recorder(sender), receiver)
    }
}

impl api::pull_progress::Server for Recorder {
    async fn update(
        self: std::rc::Rc<Self>,
        params: api::pull_progress::UpdateParams,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let _ = self.0.send((p.get_bytes_done(), p.get_bytes_total()));
        Ok(())
    }
}
