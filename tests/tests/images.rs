//! Container images on the real kernel: OCI layouts and docker-archive
//! tarballs built here at test time from the busybox rootfs, unpacked once
//! into the depot's layer store and stacked as overlayfs lower dirs.

use grove_client::{api, Client};
use grove_tests::*;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

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

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn config(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["FOO=bar", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/opt/work",
            "User": "user"
        },
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|d| format!("sha256:{d}")).collect::<Vec<_>>()
        }
    }))
    .unwrap()
}

struct Oci {
    dir: PathBuf,
    /// Blob digests (hex) of the layers, bottom to top.
    layer_blobs: Vec<String>,
}

/// Write an OCI layout at `dir`: layer 0 gzip-compressed, the others not.
fn write_oci(dir: &Path, layers: &[Vec<u8>], tag: &str) -> Oci {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let h = sha(bytes);
        fs::write(blobs.join(&h), bytes).unwrap();
        h
    };
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let mut descs = Vec::new();
    let mut layer_blobs = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let (bytes, mt) = if i == 0 {
            (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
        } else {
            (l.clone(), "application/vnd.oci.image.layer.v1.tar")
        };
        let h = put(&bytes);
        descs.push(serde_json::json!({"mediaType": mt, "digest": format!("sha256:{h}"), "size": bytes.len()}));
        layer_blobs.push(h);
    }
    let cfg = config(&diff_ids);
    let cfg_h = put(&cfg);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{cfg_h}"), "size": cfg.len()},
        "layers": descs
    }))
    .unwrap();
    let m_h = put(&manifest);
    fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{m_h}"),
                "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag}
            }]
        }))
        .unwrap(),
    )
    .unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    Oci {
        dir: dir.to_path_buf(),
        layer_blobs,
    }
}

fn write_docker_archive(path: &Path, layers: &[Vec<u8>]) {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let cfg = config(&diff_ids);
    let cfg_name = format!("{}.json", sha(&cfg));
    let mut b = tar::Builder::new(Vec::new());
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("l{i}/layer.tar");
        dir(&mut b, &format!("l{i}"));
        file(&mut b, &name, l);
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

        // Destroying one keeps the layers; destroying the last collects them.
        client.destroy("img-a").await.unwrap();
        assert_eq!(store_entries(env), layers);
        client.destroy("img-b").await.unwrap();
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
                "docker://example.com/busybox:1".to_string(),
                "notImplemented",
                "registry",
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
