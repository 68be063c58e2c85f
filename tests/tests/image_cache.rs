//! groved's image cache and how it reaches registries, against local
//! registries on 127.0.0.1 only (tests/src/registry.rs): a second create
//! of a cached image downloads nothing (the registry is stopped by then);
//! layers stay after the last container until the GC policy (age, size),
//! `prune` or `rm` removes them, never while a container uses them;
//! Docker Hub's short names through a `docker.io` mirror; mirrors before
//! the registry; HTTPS with a CA made here (`registry_ca`, or the system
//! store through SSL_CERT_FILE), through a CONNECT proxy unless NO_PROXY
//! says otherwise; logins from auth.json; zstd layers and nested indexes;
//! a cached blob that rotted is found and pulled again; and
//! `grove image pull|ls|inspect|rm|prune`, with the per-layer progress
//! drawn on a real pty.

use grove_client::{api, Client};
use grove_tests::image_api;
use grove_tests::oci::*;
use grove_tests::registry::{fake_registry, free_port, ConnectProxy, Registry, RegistryTls};
use grove_tests::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn scratch(what: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "grove-{what}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ))
}

fn start_registry() -> Registry {
    Registry::start(scratch("registry"))
}

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]) {
    let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
    b.append_data(&mut h, name, data).unwrap();
}

/// The busybox rootfs as one layer.
fn busybox_layer(rootfs: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", rootfs).unwrap();
    b.into_inner().unwrap()
}

/// A layer with one file, /marker, holding `text` (and the config's
/// working directory, /opt/work).
fn marker_layer(text: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for d in ["opt", "opt/work"] {
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        b.append_data(&mut h, d, &[][..]).unwrap();
    }
    file(&mut b, "marker", text.as_bytes());
    b.into_inner().unwrap()
}

fn store_entries(env: &TestEnv) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(env.depot.join(".layers/sha256")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

fn cached_blobs(env: &TestEnv) -> Vec<String> {
    match fs::read_dir(env.root.join("server/images/blobs/sha256")) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
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

async fn marker(c: &api::container::Client) -> String {
    let (st, out, err) = exec(c, "/bin/cat", &["/marker"]).await;
    assert_eq!(st, 0, "{err}");
    out
}

#[test]
fn a_second_create_of_a_cached_image_downloads_nothing_and_layers_outlive_their_containers() {
    let mut reg = start_registry();
    let env = TestEnv::start_with(&format!("insecure_registries = {}\n", reg.addr));
    let layers = [busybox_layer(&env.rootfs), marker_layer("cached\n")];
    let (_, digest) = reg.push_image("test/cached", "v1", &layers, "amd64");
    let uri = format!("docker://{}/test/cached:v1", reg.addr);
    let (uri, addr) = (&uri, &reg.addr.clone());
    let env = &env;
    env.run(|client| async move {
        let first = create_image(&client, "first", uri).await.unwrap();
        assert_eq!(marker(&first).await, "cached\n");
        let layers_now = store_entries(env);
        assert_eq!(layers_now.len(), 2, "{layers_now:?}");
        client.destroy("first").await.unwrap();
        // The last container is gone; its layers and blobs stay.
        assert_eq!(store_entries(env), layers_now);
        let (images, layers) = image_api::list(&client).await.unwrap();
        assert_eq!(images.len(), 1, "{images:?}");
        assert_eq!(images[0].digest, digest);
        assert_eq!(images[0].containers, 0);
        assert!(images[0].downloaded_bytes > 1 << 20, "{images:?}");
        assert!(images[0].unpacked_bytes > 1 << 20, "{images:?}");
        assert_eq!(layers.len(), 2, "{layers:?}");
        assert!(
            layers.iter().all(|l| l.last_used > 0 && l.bytes > 0),
            "{layers:?}"
        );
        assert_eq!(
            images[0].names,
            [format!("{addr}/test/cached:v1")],
            "{images:?}"
        );
    });
    // The registry goes away: the cache serves the image, downloading
    // nothing (there is nothing to download from).
    reg.stop();
    env.run(|client| async move {
        let second = create_image(&client, "second", uri).await.unwrap();
        assert_eq!(marker(&second).await, "cached\n");
        let (images, _) = image_api::list(&client).await.unwrap();
        assert_eq!(images[0].containers, 1, "{images:?}");
        // In use: neither rm nor prune --all removes it.
        let e = image_api::remove(&client, uri).await.unwrap_err();
        assert!(e.is("invalidState") && e.message.contains("second"), "{e}");
        let pruned = image_api::prune(&client, true).await.unwrap();
        assert!(
            pruned.images.is_empty() && pruned.layers.is_empty(),
            "{pruned:?}"
        );
        assert_eq!(store_entries(env).len(), 2);
        client.destroy("second").await.unwrap();
        // Unused now: rm removes its blobs and layers.
        let removed = image_api::remove(&client, uri).await.unwrap();
        assert_eq!(removed.images.len(), 1, "{removed:?}");
        assert_eq!(removed.layers.len(), 2, "{removed:?}");
        assert!(removed.freed_bytes > 2 << 20, "{removed:?}");
        assert!(store_entries(env).is_empty(), "{:?}", store_entries(env));
        assert!(cached_blobs(env).is_empty(), "{:?}", cached_blobs(env));
        // And the image is really gone from the cache: with the registry
        // down, a create cannot get it.
        let e = create_image(&client, "third", uri).await.err().unwrap();
        assert!(
            e.is("serviceUnavailable") && e.message.contains("unreachable"),
            "{e}"
        );
    });
    assert!(
        env.logs().contains("from the image cache"),
        "{}",
        env.logs()
    );
}

#[test]
fn the_gc_removes_images_by_age_and_by_size_but_never_one_in_use() {
    let reg = start_registry();
    // Aged out after 2 s of disuse, checked every second.
    let env = TestEnv::start_with(&format!(
        "insecure_registries = {}\nimage_cache_max_age = 2\nimage_gc_interval = 1\n",
        reg.addr
    ));
    let base = busybox_layer(&env.rootfs);
    reg.push_image(
        "test/kept",
        "v1",
        &[base.clone(), marker_layer("kept\n")],
        "amd64",
    );
    reg.push_image(
        "test/aged",
        "v1",
        &[base.clone(), marker_layer("aged\n")],
        "amd64",
    );
    let kept = format!("docker://{}/test/kept:v1", reg.addr);
    let aged = format!("docker://{}/test/aged:v1", reg.addr);
    let (kept, aged, addr) = (&kept, &aged, &reg.addr);
    let env = &env;
    env.run(|client| async move {
        let k = create_image(&client, "kept", kept).await.unwrap();
        create_image(&client, "aged", aged).await.unwrap();
        assert_eq!(store_entries(env).len(), 3, "busybox and two markers");
        client.destroy("aged").await.unwrap();
        // Waiting for the policy, with a generous bound against a hang.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (images, _) = image_api::list(&client).await.unwrap();
            if images.len() == 1 {
                assert_eq!(images[0].names, [format!("{addr}/test/kept:v1")]);
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{images:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The aged image's own layer went; the shared busybox layer and
        // the kept image's stay while its container lives (older than
        // the bound by now).
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(store_entries(env).len(), 2, "{:?}", store_entries(env));
        assert_eq!(marker(&k).await, "kept\n");
        client.destroy("kept").await.unwrap();
    });
    let logs = env.logs();
    assert!(logs.contains("image GC"), "{logs}");

    // By size: a bound every image exceeds; the GC after a destroy
    // removes the image at once, and never while its container lives.
    let env = TestEnv::start_with(&format!(
        "insecure_registries = {}\nimage_cache_max_bytes = 1\nimage_cache_max_age = 0\n",
        reg.addr
    ));
    let env = &env;
    env.run(|client| async move {
        let c = create_image(&client, "sized", kept).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (images, _) = image_api::list(&client).await.unwrap();
        assert_eq!(images.len(), 1, "in use, over the bound: kept");
        assert_eq!(marker(&c).await, "kept\n");
        client.destroy("sized").await.unwrap();
        eventually("the GC removes the image once unused", || {
            store_entries(env).is_empty() && cached_blobs(env).is_empty()
        });
        let (images, layers) = image_api::list(&client).await.unwrap();
        assert!(
            images.is_empty() && layers.is_empty(),
            "{images:?} {layers:?}"
        );
    });
}

/// groved's env for a test that must never leave loopback even if it
/// failed: every proxied request goes to a closed port on 127.0.0.1, and
/// NO_PROXY lets only 127.0.0.1 through directly.
fn loopback_only(extra: Vec<(String, String)>) -> Vec<(String, String)> {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let mut env = vec![
        ("HTTPS_PROXY".to_string(), dead.clone()),
        ("HTTP_PROXY".to_string(), dead),
        ("NO_PROXY".to_string(), "127.0.0.1".to_string()),
    ];
    env.extend(extra);
    env
}

#[test]
fn docker_hub_short_names_come_from_a_docker_io_mirror() {
    let mirror = start_registry();
    let env = TestEnv::start_with_options(EnvOptions {
        // The mirror alone: no fallback to Docker Hub itself, and no way
        // out but to 127.0.0.1 besides.
        groved_extra: format!(
            "insecure_registries = {m}\nregistry_mirrors = \"docker.io={m}\"\nregistry_fallback = false\n",
            m = mirror.addr
        ),
        groved_env: loopback_only(Vec::new()),
        ..EnvOptions::default()
    });
    let layers = [
        busybox_layer(&env.rootfs),
        marker_layer("from the hub mirror\n"),
    ];
    let (_, digest) = mirror.push_image("library/busybox", "latest", &layers, "amd64");
    let env = &env;
    env.run(|client| async move {
        for (handle, uri) in [
            ("garden-form", "docker:///busybox".to_string()),
            ("short", "docker://busybox".to_string()),
            (
                "long",
                "docker://docker.io/library/busybox:latest".to_string(),
            ),
            (
                "tag-and-digest",
                format!("docker://busybox:latest@{digest}"),
            ),
        ] {
            let c = create_image(&client, handle, &uri).await.unwrap();
            assert_eq!(marker(&c).await, "from the hub mirror\n", "{uri}");
        }
        let (images, _) = image_api::list(&client).await.unwrap();
        assert_eq!(images.len(), 1, "one image: {images:?}");
        assert_eq!(images[0].digest, digest);
        assert!(
            images[0]
                .names
                .contains(&"registry-1.docker.io/library/busybox:latest".to_string()),
            "{images:?}"
        );
        // An image the mirror lacks: no fallback, and the error says which
        // source failed.
        let e = create_image(&client, "missing", "docker://alpine")
            .await
            .err()
            .unwrap();
        assert!(e.is("invalidSpec"), "{e}");
        assert!(
            e.message.contains("library/alpine") && e.message.contains(&mirror.addr),
            "{e}"
        );
    });
}

#[test]
fn mirrors_are_tried_first_then_the_registry() {
    let upstream = start_registry();
    let mirror = start_registry();
    let dead = format!("127.0.0.1:{}", free_port());
    let env = TestEnv::start_with_options(EnvOptions {
        groved_extra: format!(
            "insecure_registries = [\"{u}\", \"{m}\", \"{dead}\"]\n\
             registry_mirrors = [\"{u}={dead}\", \"{u}={m}\"]\n",
            u = upstream.addr,
            m = mirror.addr
        ),
        groved_env: loopback_only(Vec::new()),
        ..EnvOptions::default()
    });
    let base = busybox_layer(&env.rootfs);
    // v1 on the mirror only (the upstream's v1 would say "upstream").
    mirror.push_image(
        "team/app",
        "v1",
        &[base.clone(), marker_layer("mirror\n")],
        "amd64",
    );
    upstream.push_image(
        "team/app",
        "v1",
        &[base.clone(), marker_layer("upstream\n")],
        "amd64",
    );
    upstream.push_image(
        "team/app",
        "v2",
        &[base, marker_layer("v2 upstream\n")],
        "amd64",
    );
    let uri = |tag: &str| format!("docker://{}/team/app:{tag}", upstream.addr);
    let env = &env;
    env.run(|client| async move {
        // The dead mirror, then the live one, which has v1.
        let c = create_image(&client, "v1", &uri("v1")).await.unwrap();
        assert_eq!(marker(&c).await, "mirror\n");
        // v2: neither mirror has it; the registry does.
        let c = create_image(&client, "v2", &uri("v2")).await.unwrap();
        assert_eq!(marker(&c).await, "v2 upstream\n");
    });
    let out = run_cli_ok(env, &["image", "inspect", &uri("v1")]);
    assert!(
        out.contains(&format!(
            "source: {}/team/app (mirror of {})",
            mirror.addr, upstream.addr
        )),
        "{out}"
    );
    let out = run_cli_ok(env, &["image", "inspect", &uri("v2")]);
    assert!(
        out.contains(&format!("source: {}/team/app\n", upstream.addr)),
        "{out}"
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it, made now.
fn test_pki() -> RegistryTls {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Grove registry test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    RegistryTls {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem: ca_cert.pem(),
    }
}

#[test]
fn https_registries_with_their_own_ca_and_a_connect_proxy() {
    let pki = test_pki();
    let reg = Registry::start_tls(scratch("tls-registry"), &pki);
    let proxy = ConnectProxy::start();
    let ca_dir = scratch("ca");
    fs::create_dir_all(&ca_dir).unwrap();
    let ca_file = ca_dir.join("ca.pem");
    fs::write(&ca_file, &pki.ca_pem).unwrap();
    let layers = [
        busybox_layer(&default_rootfs()),
        marker_layer("over https\n"),
    ];
    reg.push_image("secure/app", "v1", &layers, "amd64");
    let uri = format!("docker://{}/secure/app:v1", reg.addr);
    let proxied = |no_proxy: &str| {
        vec![
            ("HTTPS_PROXY".to_string(), format!("http://{}", proxy.addr)),
            ("NO_PROXY".to_string(), no_proxy.to_string()),
        ]
    };

    // The system store does not know the test's CA: refused, naming it.
    let env = TestEnv::start();
    let e = env.run(|client| {
        let uri = uri.clone();
        async move {
            create_image(&client, "untrusted", &uri)
                .await
                .err()
                .unwrap()
        }
    });
    assert!(e.is("serviceUnavailable"), "{e}");
    assert!(
        e.message.contains(&reg.addr) && e.message.contains("registry_ca"),
        "{e}"
    );
    drop(env);

    // registry_ca trusts it; HTTPS_PROXY carries the connection through
    // the proxy as a CONNECT tunnel.
    let env = TestEnv::start_with_options(EnvOptions {
        groved_extra: format!("registry_ca = \"{}={}\"\n", reg.addr, ca_file.display()),
        groved_env: proxied("example.invalid"),
        ..EnvOptions::default()
    });
    env.run(|client| {
        let uri = uri.clone();
        async move {
            let c = create_image(&client, "trusted", &uri).await.unwrap();
            assert_eq!(marker(&c).await, "over https\n");
        }
    });
    let targets = proxy.targets();
    assert!(
        !targets.is_empty()
            && targets
                .iter()
                .all(|t| *t == format!("CONNECT {}", reg.addr)),
        "{targets:?}"
    );
    drop(env);

    // NO_PROXY names the registry: straight there. SSL_CERT_FILE points
    // the system store at a bundle holding the CA: trusted without
    // registry_ca.
    let before = proxy.targets().len();
    let env = TestEnv::start_with_options(EnvOptions {
        groved_env: {
            let mut e = proxied("127.0.0.1");
            e.push(("SSL_CERT_FILE".to_string(), ca_file.display().to_string()));
            e
        },
        ..EnvOptions::default()
    });
    env.run(|client| {
        let uri = uri.clone();
        async move {
            let c = create_image(&client, "direct", &uri).await.unwrap();
            assert_eq!(marker(&c).await, "over https\n");
        }
    });
    assert_eq!(proxy.targets().len(), before, "{:?}", proxy.targets());
    drop(env);
    let _ = fs::remove_dir_all(&ca_dir);
}

/// An image behind the fake registry's login (alice:s3cret): its routes.
fn private_image() -> std::collections::HashMap<String, (String, Vec<u8>)> {
    let layers = [busybox_layer(&default_rootfs()), marker_layer("private\n")];
    let blobs = [gzip(&layers[0]), layers[1].clone()];
    let cfg = config(&layers.iter().map(|l| sha(l)).collect::<Vec<_>>());
    let repo = "/v2/test/busybox";
    let mut routes = std::collections::HashMap::new();
    let mut descs = Vec::new();
    for (b, mt) in blobs.iter().zip([
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar",
    ]) {
        let d = format!("sha256:{}", sha(b));
        routes.insert(
            format!("{repo}/blobs/{d}"),
            ("application/octet-stream".into(), b.clone()),
        );
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": b.len()}));
    }
    let cfg_d = format!("sha256:{}", sha(&cfg));
    routes.insert(
        format!("{repo}/blobs/{cfg_d}"),
        ("application/octet-stream".into(), cfg.clone()),
    );
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_d, "size": cfg.len()},
        "layers": descs
    }))
    .unwrap();
    routes.insert(
        format!("{repo}/manifests/v1"),
        (
            "application/vnd.oci.image.manifest.v1+json".into(),
            manifest,
        ),
    );
    routes
}

fn auth_json(host: &str, login: &str) -> String {
    let b64 = grove_schema::auth_file::base64_encode(login.as_bytes());
    format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{b64}\"}}}}}}")
}

#[test]
fn logins_come_from_auth_json_for_the_cli_and_for_groved() {
    let fake = fake_registry(private_image());
    let uri = format!("docker://{}/test/busybox:v1", fake.addr);
    let dir = scratch("auth");
    fs::create_dir_all(&dir).unwrap();
    let (uid, gid) = grove_user();
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    let good = dir.join("auth.json");
    fs::write(&good, auth_json(&fake.addr, "alice:s3cret")).unwrap();
    std::os::unix::fs::chown(&good, Some(uid), Some(gid)).unwrap();
    let wrong = dir.join("wrong.json");
    fs::write(&wrong, auth_json(&fake.addr, "alice:nope")).unwrap();

    // The CLI: no login, a wrong one, then the right one from the file
    // REGISTRY_AUTH_FILE names (and from --authfile).
    let env = TestEnv::start_with(&format!("insecure_registries = {}\n", fake.addr));
    let pull = |file: Option<&Path>, args: &[&str]| {
        let mut cmd = std::process::Command::new(bin_dir().join("grove"));
        cmd.arg("--socket").arg(&env.socket).args(["image", "pull"]);
        cmd.args(args).arg(&uri);
        cmd.env_remove("GROVE_IMAGE_USERNAME")
            .env_remove("GROVE_IMAGE_PASSWORD");
        cmd.env("HOME", &dir)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DOCKER_CONFIG");
        match file {
            Some(f) => cmd.env("REGISTRY_AUTH_FILE", f),
            None => cmd.env_remove("REGISTRY_AUTH_FILE"),
        };
        cmd.output().unwrap()
    };
    let out = pull(None, &[]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no credentials were given"),
        "{out:?}"
    );
    let out = pull(Some(&wrong), &[]);
    assert!(!out.status.success(), "{out:?}");
    let out = pull(Some(&good), &[]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{}/test/busybox:v1", fake.addr))
    );
    let out = pull(None, &["--authfile", good.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    // Docker's config.json in $HOME/.docker works too.
    fs::create_dir_all(dir.join(".docker")).unwrap();
    fs::copy(&good, dir.join(".docker/config.json")).unwrap();
    let out = pull(None, &[]);
    assert!(out.status.success(), "{out:?}");
    drop(env);

    // groved's registry_auth_file: a create through the API with no login.
    let env = TestEnv::start_with(&format!(
        "insecure_registries = {}\nregistry_auth_file = \"{}\"\n",
        fake.addr,
        good.display()
    ));
    env.run(|client| {
        let uri = uri.clone();
        async move {
            let c = create_image(&client, "authed", &uri).await.unwrap();
            assert_eq!(marker(&c).await, "private\n");
        }
    });
    assert!(
        fake.token_queries.lock().unwrap().len() >= 3,
        "{:?}",
        fake.token_queries.lock().unwrap()
    );
    drop(env);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn zstd_layers_and_nested_indexes_unpack() {
    let reg = start_registry();
    let env = TestEnv::start_with(&format!("insecure_registries = {}\n", reg.addr));
    let base = busybox_layer(&env.rootfs);
    let top = marker_layer("zstd\n");
    // From a registry: both layers zstd-compressed.
    let zstd_type = "application/vnd.oci.image.layer.v1.tar+zstd";
    let blobs = [(zstd(&base), zstd_type), (zstd(&top), zstd_type)];
    reg.push_image_blobs(
        "test/zstd",
        "v1",
        &[base.clone(), top.clone()],
        &blobs,
        "amd64",
    );
    // An OCI layout whose index.json names an index of an arm64 and an
    // amd64 (this host's) image, the top layer zstd.
    let dir = env.images_dir().join("nested");
    let arm = marker_layer("arm64\n");
    let amd = write_oci_raw(
        &dir,
        &[
            RawLayer {
                blob: gzip(&base),
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                diff_id: sha(&base),
            },
            RawLayer {
                blob: zstd(&top),
                media_type: zstd_type.into(),
                diff_id: sha(&top),
            },
        ],
        "amd",
    );
    let arm_image = write_oci_raw(
        &dir.join("arm"),
        &[RawLayer {
            blob: arm.clone(),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            diff_id: sha(&arm),
        }],
        "arm",
    );
    nest(&dir, &amd, &arm_image);
    let layout = format!("oci:{}:multi", dir.display());
    let uri = format!("docker://{}/test/zstd:v1", reg.addr);
    let env = &env;
    env.run(|client| async move {
        let c = create_image(&client, "zstd", &uri).await.unwrap();
        assert_eq!(marker(&c).await, "zstd\n");
        let c = create_image(&client, "nested", &layout).await.unwrap();
        assert_eq!(
            marker(&c).await,
            "zstd\n",
            "the amd64 image, not the arm64 one"
        );
    });
}

/// Make `dir`'s index.json name, as tag "multi", an index blob listing the
/// amd64 image of `amd` and the arm64 image of `arm` (whose blobs are
/// copied into `dir`).
fn nest(dir: &Path, amd: &Oci, arm: &Oci) {
    let manifest_of = |o: &Oci| -> serde_json::Value {
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(o.dir.join("index.json")).unwrap()).unwrap();
        index["manifests"][0].clone()
    };
    for entry in fs::read_dir(arm.dir.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(
            entry.path(),
            dir.join("blobs/sha256").join(entry.file_name()),
        )
        .unwrap();
    }
    let mut amd_desc = manifest_of(amd);
    let mut arm_desc = manifest_of(arm);
    for (d, arch) in [(&mut amd_desc, "amd64"), (&mut arm_desc, "arm64")] {
        d.as_object_mut().unwrap().remove("annotations");
        d["platform"] = serde_json::json!({"os": "linux", "architecture": arch});
    }
    let inner = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [arm_desc, amd_desc]
    }))
    .unwrap();
    let h = sha(&inner);
    fs::write(dir.join("blobs/sha256").join(&h), &inner).unwrap();
    let outer = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{h}"),
            "size": inner.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"}
        }]
    });
    fs::write(dir.join("index.json"), outer.to_string()).unwrap();
}

#[test]
fn a_cached_blob_that_rotted_is_found_and_pulled_again() {
    let reg = start_registry();
    let env = TestEnv::start_with(&format!("insecure_registries = {}\n", reg.addr));
    let layers = [busybox_layer(&env.rootfs), marker_layer("healed\n")];
    reg.push_image("test/rot", "v1", &layers, "amd64");
    let uri = format!("docker://{}/test/rot:v1", reg.addr);
    let top_blob = sha(&layers[1]);
    let env = &env;
    env.run(|client| async move {
        // Pulled, not unpacked yet; then the top layer's blob rots (same
        // size, other bytes).
        image_api::pull(&client, &uri).await.unwrap();
        let path = env.root.join("server/images/blobs/sha256").join(&top_blob);
        let mut bytes = fs::read(&path).unwrap();
        bytes[100] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let c = create_image(&client, "healed", &uri).await.unwrap();
        assert_eq!(marker(&c).await, "healed\n");
        assert_eq!(sha(&fs::read(&path).unwrap()), top_blob, "pulled again");
    });
    let logs = env.logs();
    assert!(
        logs.contains("cached blobs were corrupt; pulling again"),
        "{logs}"
    );
}

#[test]
fn the_cli_pulls_lists_inspects_removes_and_prunes() {
    let reg = start_registry();
    let env = TestEnv::start_with(&format!("insecure_registries = {}\n", reg.addr));
    let layers = [busybox_layer(&env.rootfs), marker_layer("cli\n")];
    let (_, digest) = reg.push_image("test/cli", "v1", &layers, "amd64");
    let name = format!("{}/test/cli:v1", reg.addr);

    // Not a terminal: a line per blob, then a summary; the digest and
    // name on stdout.
    let out = run_cli(&env, &["image", "pull", &name], None);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, format!("{digest} {name}\n"));
    for l in &layers[1..] {
        assert!(
            stderr.contains(&format!("sha256:{}: pulled", &sha(l)[..12])),
            "{stderr}"
        );
    }
    assert!(
        stderr.contains("pulled ") && stderr.contains("downloaded"),
        "{stderr}"
    );

    // On a terminal (a real pty, through script(1)): a line per layer,
    // redrawn in place; everything cached on a second pull.
    let pty = |args: &str| -> String {
        let out = std::process::Command::new("script")
            .args([
                "-qec",
                &format!(
                    "{} --socket {} {args}",
                    bin_dir().join("grove").display(),
                    env.socket.display()
                ),
                "/dev/null",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = pty(&format!("image pull {name}"));
    for l in &layers[1..] {
        let short = format!("sha256:{}  cached", &sha(l)[..12]);
        assert!(shown.contains(&short), "{shown}");
    }
    assert!(shown.contains("\x1b[K"), "drawn in place: {shown:?}");
    run_cli_ok(&env, &["image", "rm", &name]);
    let shown = pty(&format!("image pull {name}"));
    for l in &layers[1..] {
        let done = format!("sha256:{}  [{}]", &sha(l)[..12], "#".repeat(20));
        assert!(shown.contains(&done) && shown.contains(" done"), "{shown}");
    }
    let moved_up = shown.split("\x1b[").skip(1).any(|s| {
        s.split_once('A')
            .is_some_and(|(n, _)| n.parse::<u32>().is_ok())
    });
    assert!(moved_up, "redrawn over its earlier lines: {shown:?}");

    // ls: one row per name, with sizes; --layers once unpacked.
    let ls = run_cli_ok(&env, &["image", "ls"]);
    assert!(ls.starts_with("NAME"), "{ls}");
    assert!(
        ls.contains(&name) && ls.contains(&digest["sha256:".len()..][..12]),
        "{ls}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run_cli_ok(&env, &["--json", "image", "ls"])).unwrap();
    assert_eq!(json["images"][0]["digest"], digest.as_str());
    assert!(json["images"][0]["downloaded_bytes"].as_u64().unwrap() > 1 << 20);
    run_cli_ok(
        &env,
        &[
            "create",
            "--handle",
            "cli-img",
            "--image",
            &format!("docker://{name}"),
        ],
    );
    let ls = run_cli_ok(&env, &["image", "ls", "--layers"]);
    assert!(
        ls.contains("LAYER") && ls.contains(&sha(&layers[1])[..12]),
        "{ls}"
    );

    // inspect, by name and by a digest prefix.
    let shown = run_cli_ok(
        &env,
        &["image", "inspect", &digest["sha256:".len()..][..16]],
    );
    for needle in [
        format!("digest: {digest}"),
        format!("names: {name}"),
        "platform: linux/amd64".to_string(),
        "env: FOO=bar".to_string(),
        "working dir: /opt/work".to_string(),
        "containers: 1".to_string(),
        format!("diff id sha256:{}", sha(&layers[1])),
    ] {
        assert!(shown.contains(&needle), "{needle} in {shown}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&run_cli_ok(&env, &["--json", "image", "inspect", &name])).unwrap();
    assert_eq!(json["layers"][1]["unpacked"], true, "{json}");

    // rm: refused while the container lives; prune keeps it too.
    let out = run_cli(&env, &["image", "rm", &name], None);
    // 125: Grove's error (podman's convention; README "The CLI").
    assert_eq!(out.status.code(), Some(125));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cli-img (invalidState)"),
        "{out:?}"
    );
    run_cli_ok(&env, &["destroy", "cli-img"]);
    let pruned = run_cli_ok(&env, &["image", "prune", "--all"]);
    assert!(
        pruned.contains(&format!("removed image {digest} {name}")),
        "{pruned}"
    );
    assert!(
        pruned.contains("removed layer sha256:") && pruned.contains("freed "),
        "{pruned}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run_cli_ok(&env, &["--json", "image", "ls"])).unwrap();
    assert_eq!(json, serde_json::json!({"images": [], "layers": []}));
    let out = run_cli(&env, &["image", "inspect", "busybox"], None);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no cached image is named registry-1.docker.io/library/busybox:latest"),
        "{out:?}"
    );
}

/// One request to the helper on a connection of the `grove` uid (as a
/// compromised groved would send it), and its answer.
fn helper_call(
    conn: &std::os::fd::OwnedFd,
    request: &grove_schema::helper::Request,
) -> grove_schema::helper::Response {
    use nix::sys::socket::{recv, send, MsgFlags};
    use std::os::fd::AsRawFd;
    let bytes = grove_schema::helper::encode_request(request);
    send(conn.as_raw_fd(), &bytes, MsgFlags::empty()).unwrap();
    let mut buf = vec![0u8; grove_schema::helper::MAX_RESPONSE];
    let n = recv(conn.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
    grove_schema::helper::decode_response(&buf[..n]).unwrap()
}

#[test]
fn the_helper_removes_no_layer_a_container_uses_whoever_asks() {
    use grove_schema::helper::{ErrorKind, LayerId, Request, Response};
    let layer = marker_layer("in use\n");
    // The image in an env's images dir: its oci: URI.
    let write = |env: &TestEnv| {
        let base = busybox_layer(&env.rootfs);
        let image = write_oci_raw(
            &env.images_dir().join("used"),
            &[
                RawLayer {
                    blob: gzip(&base),
                    media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                    diff_id: sha(&base),
                },
                RawLayer {
                    blob: layer.clone(),
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    diff_id: sha(&layer),
                },
            ],
            "v1",
        );
        format!("oci:{}:v1", image.dir.display())
    };
    let env = TestEnv::start();
    let uri = write(&env);
    env.run(|client| {
        let uri = uri.clone();
        async move { create_image(&client, "user", &uri).await.unwrap() }
    });
    let (uid, gid) = grove_user();
    let conn = helper_connect_as(&env.helper_socket, uid, gid).unwrap();
    let id = LayerId::new(sha(&layer)).unwrap();
    match helper_call(&conn, &Request::ListLayers { after: None }) {
        Response::Layers { layers, more } => {
            assert!(!more);
            let ours = layers.iter().find(|l| l.id == id).expect("listed");
            assert_eq!(ours.containers, 1, "{layers:?}");
            assert!(ours.last_used > 0 && ours.bytes > 0, "{layers:?}");
        }
        other => panic!("{other:?}"),
    }
    match helper_call(&conn, &Request::RemoveLayer { id: id.clone() }) {
        Response::Error(e) => {
            assert_eq!(e.kind, ErrorKind::InvalidState);
            assert!(e.message.contains("in use by user"), "{}", e.message);
        }
        other => panic!("a layer in use was removed: {other:?}"),
    }
    let absent = LayerId::new("0".repeat(64)).unwrap();
    match helper_call(&conn, &Request::RemoveLayer { id: absent }) {
        Response::Error(e) => assert_eq!(e.kind, ErrorKind::NotFound),
        other => panic!("{other:?}"),
    }
    assert_eq!(store_entries(&env).len(), 2);
    env.run(|client| async move { client.destroy("user").await.unwrap() });
    match helper_call(&conn, &Request::RemoveLayer { id: id.clone() }) {
        Response::LayerRemoved { bytes } => assert!(bytes > 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(store_entries(&env).len(), 1, "{:?}", store_entries(&env));
    drop(conn);
    drop(env);

    // layer_gc off: the helper removes nothing, whoever asks.
    let env = TestEnv::start_with_policy("", "layer_gc = false");
    let uri = write(&env);
    env.run(|client| {
        let uri = uri.clone();
        async move {
            create_image(&client, "kept", &uri).await.unwrap();
            client.destroy("kept").await.unwrap();
            let e = image_api::prune(&client, true).await;
            // groved's pass asks, the helper refuses, the layers stay.
            assert!(e.is_ok(), "{e:?}");
        }
    });
    assert_eq!(store_entries(&env).len(), 2);
    let conn = helper_connect_as(&env.helper_socket, uid, gid).unwrap();
    match helper_call(&conn, &Request::RemoveLayer { id }) {
        Response::Error(e) => assert_eq!(e.kind, ErrorKind::PolicyRefused, "{}", e.message),
        other => panic!("{other:?}"),
    }
}
