//! What operators reach for first (issue 19), against the real daemons:
//!
//! - **Logs**: the three daemons' stderr as a file (timestamps and levels,
//!   no colour codes), as a terminal (a real pty: coloured levels) and as
//!   journald's stream (JOURNAL_STREAM naming the file's device and inode:
//!   `<N>` priorities, no timestamps); and no process argv or env, no
//!   registry credential or signed URL and no Garden request body in any
//!   daemon's log, at debug level.
//! - **Metrics**: groved's Prometheus endpoint, off by default, on a unix
//!   socket or loopback TCP; every scrape parses as the text format and its
//!   numbers move as creates, destroys, processes, an OOM kill, a pull and
//!   a stalled helper make them.
//! - **Config**: each daemon reads its file in /etc/grove when no flag names
//!   one (in a private mount namespace whose /etc is an overlay, so the
//!   host's /etc is never touched), and a malformed one stops it with an
//!   error naming the file.

use grove_client::{api, Client, Command, ContainerSpec};
use grove_tests::garden_client::Garden;
use grove_tests::oci::{config, dir_layer, sha};
use grove_tests::*;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn append_to(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

/// Wait (at most 60 s, against hangs) until `ok` holds.
fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "after 60 s still not: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A line of a daemon's plain log: an RFC 3339 UTC timestamp with
/// microseconds, then its level, as `tracing` writes them.
fn timestamped(line: &str) -> bool {
    let b = line.as_bytes();
    if b.len() < 34 {
        return false;
    }
    let digits = |from: usize, to: usize| b[from..to].iter().all(u8::is_ascii_digit);
    digits(0, 4)
        && b[4] == b'-'
        && digits(5, 7)
        && b[7] == b'-'
        && digits(8, 10)
        && b[10] == b'T'
        && digits(11, 13)
        && b[13] == b':'
        && digits(14, 16)
        && b[16] == b':'
        && digits(17, 19)
        && b[19] == b'.'
        && digits(20, 26)
        && &line[26..28] == "Z "
        && ["ERROR ", " WARN ", " INFO ", "DEBUG "]
            .iter()
            .any(|level| line[28..].starts_with(level))
}

/// A line for journald: `<N>` with N a syslog priority the daemons use.
fn journal_line(line: &str) -> bool {
    ["<3>", "<4>", "<6>", "<7>"]
        .iter()
        .any(|p| line.starts_with(p))
}

/// `text` without ANSI escape sequences (CSI … letter) and carriage
/// returns (a pty turns "\n" into "\r\n").
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// "DEVICE:INODE" of a file, as systemd writes JOURNAL_STREAM.
fn journal_stream_of(path: &Path) -> String {
    let meta = std::fs::metadata(path).unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

/// grove-helper on the env's policy, its stderr (and stdout) to `stderr`.
fn helper_command(env: &TestEnv, stderr: Stdio) -> std::process::Command {
    let mut helper = std::process::Command::new(bin_dir().join("grove-helper"));
    helper
        .arg("--policy")
        .arg(env.root.join("helper-policy.conf"))
        .env("GROVE_HELPER_LOG", "debug")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    helper
}

/// groved as `grove` on the env's config, its stderr to `stderr`.
fn groved_command(env: &TestEnv, stderr: Stdio) -> std::process::Command {
    let (uid, gid) = grove_user();
    let mut groved = std::process::Command::new(bin_dir().join("groved"));
    groved
        .arg("--config")
        .arg(env.root.join("groved.conf"))
        .env("GROVED_LOG", "debug")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    as_user(&mut groved, uid, gid);
    groved
}

/// grove-garden as `grove`, serving `socket` for the env's groved.
fn garden_command(env: &TestEnv, socket: &Path, stderr: Stdio) -> std::process::Command {
    let (uid, gid) = grove_user();
    let mut garden = std::process::Command::new(bin_dir().join("grove-garden"));
    garden
        .arg("--listen")
        .arg(socket)
        .arg("--grove-socket")
        .arg(&env.socket)
        .env("GROVE_GARDEN_LOG", "debug")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    as_user(&mut garden, uid, gid);
    garden
}

/// A process this test started, killed by its pid when dropped.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for_socket(child: &mut Child, socket: &Path, log: &dyn Fn() -> String) {
    wait_until("the daemon's socket", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the daemon exited ({status}):\n{}", log());
        }
        std::os::unix::net::UnixStream::connect(socket).is_ok()
    });
}

/// Create a container, run a process to its end in it, destroy it: the
/// daemons each log a few lines of every level they use.
async fn some_work(client: &Client, handle: &str) {
    let spec = ContainerSpec {
        handle: handle.into(),
        ..ContainerSpec::default()
    };
    client.create(&spec).await.unwrap();
    let c = client.lookup(handle).await.unwrap();
    assert_eq!(exec(&c, "true", &[]).await.0, 0);
    client.destroy(handle).await.unwrap();
}

// ---------------------------------------------------------------- log styles

#[test]
fn in_a_file_every_line_has_a_timestamp_and_a_level_and_no_colour() {
    let env = TestEnv::start();
    env.run(|client| async move { some_work(&client, "plain-log").await });
    for (name, daemon) in [("helper.log", "grove-helper"), ("groved.log", "groved")] {
        let text = read(&env.root.join(name));
        assert!(!text.contains('\x1b'), "colour codes in {name}:\n{text}");
        assert!(text.lines().count() > 5, "{name}:\n{text}");
        for line in text.lines() {
            assert!(timestamped(line), "{name}: {line:?}");
        }
        for level in [" INFO ", "DEBUG "] {
            assert!(
                text.lines()
                    .any(|l| l[28..].starts_with(&format!("{level}{daemon}"))),
                "no {level:?} line of {daemon} in {name}:\n{text}"
            );
        }
    }
    let helper = read(&env.root.join("helper.log"));
    assert!(helper.contains(" INFO grove-helper: ready on"), "{helper}");
    // Questions the helper answers are debug lines, changes info.
    assert!(helper.contains("DEBUG grove-helper: uid="), "{helper}");
    assert!(
        helper.contains(" INFO grove-helper: uid=") && helper.contains("CreateContainer"),
        "{helper}"
    );
}

#[test]
fn journald_gets_priorities_and_no_timestamps() {
    let mut env = TestEnv::start();
    // The helper, then groved, started again with stderr to a file that
    // JOURNAL_STREAM names, as systemd starts them with StandardError=journal.
    env.stop_helper();
    let _ = std::fs::remove_file(&env.helper_socket);
    let helper_log = env.root.join("journal-helper.log");
    let file = append_to(&helper_log);
    let mut helper = helper_command(&env, file.into());
    helper.env("JOURNAL_STREAM", journal_stream_of(&helper_log));
    let mut child = helper.spawn().unwrap();
    wait_until("the helper's ready line", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the helper exited ({status}):\n{}", read(&helper_log));
        }
        read(&helper_log).contains("grove-helper: ready on")
    });
    env.adopt_helper(child);

    env.stop_groved();
    let groved_log = env.root.join("journal-groved.log");
    let file = append_to(&groved_log);
    let mut groved = groved_command(&env, file.into());
    groved.env("JOURNAL_STREAM", journal_stream_of(&groved_log));
    let mut child = groved.spawn().unwrap();
    wait_for_socket(&mut child, &env.socket, &|| read(&groved_log));
    env.adopt_groved(child);

    // grove-garden twice: with JOURNAL_STREAM naming its stderr, and with
    // one naming another file (a redirected daemon keeps the variable but
    // not the stream: plain lines then).
    let garden_log = env.root.join("journal-garden.log");
    let file = append_to(&garden_log);
    let socket = env.run_dir.join("garden-journal.sock");
    let mut garden = garden_command(&env, &socket, file.into());
    garden.env("JOURNAL_STREAM", journal_stream_of(&garden_log));
    let mut garden = Owned(garden.spawn().unwrap());
    wait_for_socket(&mut garden.0, &socket, &|| read(&garden_log));
    let other_log = env.root.join("not-journal-garden.log");
    let file = append_to(&other_log);
    let other_socket = env.run_dir.join("garden-plain.sock");
    let mut other = garden_command(&env, &other_socket, file.into());
    other.env("JOURNAL_STREAM", journal_stream_of(&garden_log));
    let mut other = Owned(other.spawn().unwrap());
    wait_for_socket(&mut other.0, &other_socket, &|| read(&other_log));
    // A request: grove-garden connects to groved and says so.
    assert_eq!(Garden::new(&socket).get("/ping").status, 200);

    env.run(|client| async move { some_work(&client, "journal-log").await });
    drop(garden);
    drop(other);

    for (path, daemon) in [
        (&helper_log, "grove-helper"),
        (&groved_log, "groved"),
        (&garden_log, "grove_garden"),
    ] {
        let text = read(path);
        assert!(!text.contains('\x1b'), "colour codes:\n{text}");
        assert!(text.lines().count() >= 3, "{text}");
        for line in text.lines() {
            assert!(journal_line(line), "{}: {line:?}", path.display());
            assert!(!timestamped(&line[3..]), "a timestamp: {line:?}");
        }
        assert!(
            text.contains(&format!("<6>{daemon}")),
            "no info line of {daemon}:\n{text}"
        );
        if daemon != "grove_garden" {
            assert!(
                text.contains(&format!("<7>{daemon}")),
                "no debug line of {daemon}:\n{text}"
            );
        }
    }
    assert!(read(&helper_log).contains("<6>grove-helper: ready on"));
    let other = read(&other_log);
    assert!(other.lines().count() > 1, "{other}");
    for line in other.lines() {
        assert!(timestamped(line), "{line:?}");
    }
}

/// What arrives on a pty's master side, read by a thread until every
/// slave fd is closed.
struct Pty {
    output: Arc<Mutex<Vec<u8>>>,
    slave: Option<std::os::fd::OwnedFd>,
}

impl Pty {
    fn open() -> Pty {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        let mut master = std::fs::File::from(pty.master);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // EIO once no process holds the slave side.
            while let Ok(n) = master.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        Pty {
            output,
            slave: Some(pty.slave),
        }
    }

    /// The slave side, for one process's stderr (our copy goes with it).
    fn take_slave(&mut self) -> Stdio {
        self.slave.take().expect("one process per pty").into()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }
}

#[test]
fn on_a_terminal_levels_are_coloured() {
    let mut env = TestEnv::start();
    env.stop_helper();
    let _ = std::fs::remove_file(&env.helper_socket);
    let mut helper_pty = Pty::open();
    let mut child = helper_command(&env, helper_pty.take_slave())
        .spawn()
        .unwrap();
    wait_until("the helper's ready line", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the helper exited ({status}):\n{}", helper_pty.text());
        }
        helper_pty.text().contains("grove-helper: ready on")
    });
    env.adopt_helper(child);
    env.stop_groved();
    let mut groved_pty = Pty::open();
    let mut child = groved_command(&env, groved_pty.take_slave())
        .spawn()
        .unwrap();
    wait_for_socket(&mut child, &env.socket, &|| groved_pty.text());
    env.adopt_groved(child);
    env.run(|client| async move { some_work(&client, "tty-log").await });
    wait_until("groved's line of the destroy", || {
        groved_pty.text().contains("container destroyed")
    });
    for (pty, daemon) in [(&helper_pty, "grove-helper"), (&groved_pty, "groved")] {
        let raw = pty.text();
        // Green INFO, blue DEBUG, as `tracing` colours them.
        assert!(raw.contains("\x1b[32m INFO\x1b[0m"), "{daemon}: {raw:?}");
        assert!(raw.contains("\x1b[34mDEBUG\x1b[0m"), "{daemon}: {raw:?}");
        let plain = strip_ansi(&raw);
        for line in plain.lines() {
            assert!(timestamped(line), "{daemon}: {line:?}");
        }
    }
}

// ---------------------------------------------------------------- a fake registry

/// Basic auth and the bearer token a fake registry wants.
#[derive(Clone)]
struct Auth {
    user: String,
    password: String,
    token: String,
}

/// A registry on 127.0.0.1 (one request per connection) serving `routes`
/// (path → content type, body). With `auth`, everything but its token
/// realm wants the bearer token, which the realm gives for the basic
/// credentials. With `signature`, blobs are redirected to a "signed" URL
/// (as registries redirect to object storage) that carries it in its query,
/// on this registry or on `storage` (e.g. a port where nothing listens).
struct FakeRegistry {
    addr: String,
    /// The paths asked for, in order.
    requests: Arc<Mutex<Vec<String>>>,
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn fake_registry(
    routes: HashMap<String, (String, Vec<u8>)>,
    auth: Option<Auth>,
    signature: Option<String>,
    storage: Option<String>,
) -> FakeRegistry {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let realm = format!("http://{addr}/token");
    let base = storage.unwrap_or_else(|| format!("http://{addr}"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut authorization = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        authorization = v.trim().to_string();
                    }
                }
            }
            let target = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            seen.lock().unwrap().push(path.to_string());
            let not_found = || ("404 Not Found", String::new(), b"none".to_vec());
            let (status, headers, body): (&str, String, Vec<u8>) = if path == "/token" {
                match &auth {
                    Some(a)
                        if authorization
                            == format!(
                                "Basic {}",
                                base64(format!("{}:{}", a.user, a.password).as_bytes())
                            ) =>
                    {
                        let body = json!({ "token": a.token }).to_string().into_bytes();
                        ("200 OK", String::new(), body)
                    }
                    _ => ("401 Unauthorized", String::new(), b"no".to_vec()),
                }
            } else if let Some(digest) = path.strip_prefix("/signed/") {
                // The storage side checks its signature, not the token.
                let wanted = format!("X-Amz-Signature={}", signature.clone().unwrap_or_default());
                match routes
                    .iter()
                    .find(|(p, _)| p.ends_with(&format!("/blobs/{digest}")))
                {
                    Some((_, (_, body))) if query.contains(&wanted) => {
                        ("200 OK", String::new(), body.clone())
                    }
                    _ => ("403 Forbidden", String::new(), b"signature".to_vec()),
                }
            } else if auth
                .as_ref()
                .is_some_and(|a| authorization != format!("Bearer {}", a.token))
            {
                let challenge = format!(
                    "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\",\
                     scope=\"repository:test/app:pull\"\r\n"
                );
                ("401 Unauthorized", challenge, b"auth".to_vec())
            } else if let (Some(sig), Some((_, digest))) = (&signature, path.split_once("/blobs/"))
            {
                let location = format!(
                    "Location: {base}/signed/{digest}?X-Amz-Expires=300&X-Amz-Signature={sig}\r\n"
                );
                ("307 Temporary Redirect", location, Vec::new())
            } else if let Some((content_type, body)) = routes.get(path) {
                (
                    "200 OK",
                    format!("Content-Type: {content_type}\r\n"),
                    body.clone(),
                )
            } else {
                not_found()
            };
            let head = format!(
                "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    FakeRegistry { addr, requests }
}

/// A runnable image (the busybox rootfs as one layer) as a registry
/// serves it under `/v2/test/app/…:v1`; and the bytes of its two blobs.
fn image_routes() -> (HashMap<String, (String, Vec<u8>)>, u64) {
    let layer = dir_layer(&default_rootfs());
    let cfg = config(std::slice::from_ref(&layer.diff_id));
    let layer_digest = format!("sha256:{}", sha(&layer.blob));
    let cfg_digest = format!("sha256:{}", sha(&cfg));
    const MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "digest": cfg_digest,
            "size": cfg.len()
        },
        "layers": [{
            "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
            "digest": layer_digest,
            "size": layer.blob.len()
        }]
    });
    let blob_bytes = (cfg.len() + layer.blob.len()) as u64;
    let mut routes = HashMap::new();
    let octets = "application/octet-stream".to_string();
    routes.insert(
        "/v2/test/app/manifests/v1".to_string(),
        (MANIFEST.to_string(), manifest.to_string().into_bytes()),
    );
    routes.insert(
        format!("/v2/test/app/blobs/{layer_digest}"),
        (octets.clone(), layer.blob),
    );
    routes.insert(format!("/v2/test/app/blobs/{cfg_digest}"), (octets, cfg));
    (routes, blob_bytes)
}

/// A create from a registry image, with credentials when given.
async fn create_pulled(
    client: &Client,
    handle: &str,
    uri: &str,
    login: Option<(&str, &str)>,
) -> Result<api::container::Client, grove_client::Error> {
    let mut request = client.grove.create_request();
    let mut spec = request.get().init_spec();
    spec.set_handle(handle);
    let mut image = spec.init_image();
    image.set_uri(uri);
    if let Some((user, password)) = login {
        image.set_username(user);
        image.set_password(password);
    }
    Ok(request.send().promise.await?.get()?.get_container()?)
}

// ---------------------------------------------------------------- secrets

#[test]
fn no_argv_env_or_credentials_reach_the_daemons_logs() {
    let secret = |what: &str| format!("grove-secret-{what}-{}", std::process::id());
    let auth = Auth {
        user: "alice".into(),
        password: secret("password"),
        token: secret("token"),
    };
    let signature = secret("signature");
    let (routes, _) = image_routes();
    let registry = fake_registry(
        routes.clone(),
        Some(auth.clone()),
        Some(signature.clone()),
        None,
    );
    // One whose storage is down: the pull fails on the signed URL itself.
    let lost_signature = secret("unreachable-signature");
    let unreachable = format!("http://127.0.0.1:{}", registry::free_port());
    let dead_storage = fake_registry(
        routes,
        None,
        Some(lost_signature.clone()),
        Some(unreachable),
    );
    let env = TestEnv::start_with(&format!(
        "insecure_registries = [{}, {}]\n",
        toml_string(&registry.addr),
        toml_string(&dead_storage.addr)
    ));
    let dead_uri = format!("docker://{}/test/app:v1", dead_storage.addr);
    let uri = format!("docker://{}/test/app:v1", registry.addr);
    let container_env = secret("container-env");
    let argv = secret("argv");
    let process_env = secret("process-env");
    let executable = format!("/{}", secret("executable"));
    let bad_env = secret("malformed-env");
    let wrong_password = secret("wrong-password");
    let mut wshd_logs = String::new();
    {
        let env = &env;
        let (uri, dead_uri, auth) = (&uri, &dead_uri, &auth);
        let (container_env, argv, process_env, executable, bad_env, wrong_password) = (
            &container_env,
            &argv,
            &process_env,
            &executable,
            &bad_env,
            &wrong_password,
        );
        let wshd_logs = &mut wshd_logs;
        env.run(|client| async move {
            let spec = ContainerSpec {
                handle: "secrets".into(),
                env: vec![format!("CONTAINER_SECRET={container_env}")],
                ..ContainerSpec::default()
            };
            client.create(&spec).await.unwrap();
            let c = client.lookup("secrets").await.unwrap();
            let mut command = Command::new("sh", &["-c", &format!("echo {argv} $PROCESS_SECRET")]);
            command.env = vec![format!("PROCESS_SECRET={process_env}")];
            let (status, out, _) = exec_command(&c, &command).await;
            assert_eq!(
                (status, out.trim()),
                (0, format!("{argv} {process_env}").as_str())
            );
            // Refusals that quote what they refuse.
            let e = start(&c, &Command::new(executable, &[argv.as_str()]))
                .await
                .err()
                .expect("no such executable");
            assert!(e.message.contains(executable.as_str()), "{e}");
            let mut command = Command::new("true", &[]);
            command.env = vec![bad_env.clone()];
            assert!(start(&c, &command).await.is_err());
            let refused = ContainerSpec {
                handle: "secrets-refused".into(),
                env: vec![bad_env.clone()],
                ..ContainerSpec::default()
            };
            assert!(client.create(&refused).await.is_err());
            // A pull with the wrong password, one whose storage is down, and
            // one with credentials (a token, a redirect to a signed URL). In
            // that order: once pulled, the image's name and blobs are in
            // groved's cache, which serves them without asking a registry
            // (README, Images).
            let login = (auth.user.as_str(), auth.password.as_str());
            let e = create_pulled(
                &client,
                "secrets-denied",
                uri,
                Some(("alice", wrong_password)),
            )
            .await
            .err()
            .expect("the wrong password is refused");
            assert!(e.message.contains("token"), "{e}");
            // (The same blobs: before they are cached, by digest.)
            let e = create_pulled(&client, "secrets-lost", dead_uri, None)
                .await
                .err()
                .expect("the storage is down");
            assert!(e.is("serviceUnavailable"), "{e}");
            create_pulled(&client, "secrets-pulled", uri, Some(login))
                .await
                .unwrap();
            for handle in ["secrets", "secrets-pulled"] {
                wshd_logs.push_str(&read(&env.depot.join(handle).join("wshd.log")));
            }
        });
    }
    let requests = registry.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|p| p.starts_with("/signed/")),
        "the blobs came from the signed URLs: {requests:?}"
    );

    // The same through grove-garden, a Garden client's JSON included.
    let garden_log = env.root.join("garden.log");
    let socket = env.run_dir.join("garden.sock");
    let mut garden = Owned(
        garden_command(&env, &socket, append_to(&garden_log).into())
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&mut garden.0, &socket, &|| read(&garden_log));
    let g = Garden::new(&socket);
    let garden_env = secret("garden-container-env");
    let garden_argv = secret("garden-argv");
    let garden_process_env = secret("garden-process-env");
    let garden_executable = format!("/{}", secret("garden-executable"));
    let garden_json = secret("garden-json");
    let garden_password = secret("garden-password");
    g.json(
        "POST",
        "/containers",
        &json!({"handle": "garden-secrets", "env": [format!("G={garden_env}")]}),
    )
    .ok();
    let (status, out, _) = g.exec(
        "garden-secrets",
        &json!({"path": "sh", "args": ["-c", format!("echo {garden_argv} $P")],
                "env": [format!("P={garden_process_env}")]}),
        None,
    );
    assert_eq!(status, 0);
    assert!(String::from_utf8_lossy(&out).contains(&garden_argv));
    let r = g
        .run(
            "garden-secrets",
            &json!({"path": garden_executable, "args": [garden_argv]}),
        )
        .err()
        .expect("no such executable");
    assert_eq!(r.status, 500);
    let r = g.json(
        "POST",
        "/containers",
        &json!({"handle": "garden-bad", "limits": {"memory_limits": {"limit_in_bytes": garden_json}}}),
    );
    assert_eq!(r.status, 400);
    let r = g.json(
        "POST",
        "/containers",
        &json!({"handle": "garden-pull", "image": {
            // A tag not in groved's cache, so the registry is asked (and
            // refuses the password).
            "uri": format!("docker://{}/test/app#not-cached", registry.addr),
            "username": "alice", "password": garden_password}}),
    );
    assert_eq!(r.status, 500, "{}", String::from_utf8_lossy(&r.body));
    wshd_logs.push_str(&read(&env.depot.join("garden-secrets").join("wshd.log")));
    assert_eq!(
        g.request("DELETE", "/containers/garden-secrets", None)
            .status,
        200
    );
    drop(garden);
    env.run(|client| async move {
        client.destroy("secrets").await.unwrap();
        client.destroy("secrets-pulled").await.unwrap();
    });

    let logs = [
        ("helper.log", read(&env.root.join("helper.log"))),
        ("groved.log", read(&env.root.join("groved.log"))),
        ("garden.log", read(&garden_log)),
        ("wshd.log", wshd_logs),
    ];
    // The logs are not empty of what happened: the runs, the pulls and
    // the failed requests are there, only not what they carried.
    let all: String = logs.iter().map(|(_, text)| text.as_str()).collect();
    for expected in [
        "process started",
        "pulling",
        "request failed",
        "CreateContainer",
    ] {
        assert!(all.contains(expected), "no {expected:?} in the logs");
    }
    let basic = base64(format!("alice:{}", auth.password).as_bytes());
    let wrong_basic = base64(format!("alice:{wrong_password}").as_bytes());
    let garden_basic = base64(format!("alice:{garden_password}").as_bytes());
    for secret in [
        &container_env,
        &argv,
        &process_env,
        &executable,
        &bad_env,
        &auth.password,
        &auth.token,
        &signature,
        &lost_signature,
        &wrong_password,
        &basic,
        &wrong_basic,
        &garden_env,
        &garden_argv,
        &garden_process_env,
        &garden_executable,
        &garden_json,
        &garden_password,
        &garden_basic,
    ] {
        for (name, text) in &logs {
            if let Some(at) = text.find(secret.as_str()) {
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
                panic!("{name} holds {secret:?}:\n{}", &text[line_start..line_end]);
            }
        }
    }
}

// ---------------------------------------------------------------- /etc/grove

/// Run `argv` in a private mount namespace whose /etc is an overlay on the
/// host's (changes go to a tmpfs) and whose /etc/grove holds exactly the
/// files of `dir`; as `as_grove` the grove user.
fn with_etc_grove(
    dir: &Path,
    scratch: &Path,
    as_grove: bool,
    argv: &[PathBuf],
) -> std::process::Command {
    std::fs::create_dir_all(scratch).unwrap();
    let script = r#"set -e
scratch=$1; files=$2; shift 2
mount -t tmpfs -o mode=0700 grove-etc "$scratch"
mkdir "$scratch/upper" "$scratch/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$scratch/upper,workdir=$scratch/work" /etc
rm -rf /etc/grove
mkdir -m 0755 /etc/grove
cp -p "$files"/* /etc/grove/ 2>/dev/null || true
exec "$@""#;
    let mut command = std::process::Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(scratch)
        .arg(dir);
    if as_grove {
        let (uid, gid) = grove_user();
        command.args([
            "setpriv".to_string(),
            format!("--reuid={uid}"),
            format!("--regid={gid}"),
            "--clear-groups".to_string(),
            "--".to_string(),
        ]);
    }
    command.args(argv);
    command
}

fn write_files(dir: &Path, files: &[(&str, &str)]) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// Run a daemon that should refuse its config; its status and output.
fn refused(mut command: std::process::Command) -> (std::process::ExitStatus, String) {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Owned(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the daemon did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut output = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    (status, output)
}

#[test]
fn without_a_flag_each_daemon_reads_its_file_in_etc_grove() {
    let etc_grove = || tree_names(Path::new("/etc/grove"));
    let host_before = (Path::new("/etc/grove").exists(), etc_grove());
    let mut env = TestEnv::start();
    let bins = bin_dir();
    let scratch = env.root.join("etc-scratch");

    // Malformed files stop each daemon with the file's name and line.
    let bad = env.root.join("etc-bad");
    write_files(
        &bad,
        &[
            ("groved.conf", "max_containers = \"lots\"\n"),
            ("garden.conf", "max_connections = 0\n"),
            ("helper-policy.conf", "mtu = 1\n"),
        ],
    );
    let cases: [(&str, bool, &str); 3] = [
        (
            "groved",
            true,
            "/etc/grove/groved.conf: line 1: max_containers",
        ),
        (
            "grove-garden",
            true,
            "/etc/grove/garden.conf: line 1: max_connections",
        ),
        (
            "grove-helper",
            false,
            "policy /etc/grove/helper-policy.conf: line 1: mtu",
        ),
    ];
    for (daemon, as_grove, message) in cases {
        let (status, output) = refused(with_etc_grove(
            &bad,
            &scratch,
            as_grove,
            &[bins.join(daemon)],
        ));
        assert!(!status.success(), "{daemon}: {output}");
        assert!(output.contains(message), "{daemon}: {output}");
        assert!(output.contains("ERROR"), "{daemon}: {output}");
    }

    // grove-garden without a file: its defaults, said in its log (the
    // flags name its sockets).
    let empty = env.root.join("etc-empty");
    write_files(&empty, &[]);
    let garden_log = env.root.join("etc-garden.log");
    let socket = env.run_dir.join("garden-etc.sock");
    let mut garden = with_etc_grove(
        &empty,
        &scratch,
        true,
        &[
            bins.join("grove-garden"),
            "--listen".into(),
            socket.clone(),
            "--grove-socket".into(),
            env.socket.clone(),
        ],
    );
    garden.stdin(Stdio::null()).stderr(append_to(&garden_log));
    let mut child = Owned(garden.spawn().unwrap());
    wait_for_socket(&mut child.0, &socket, &|| read(&garden_log));
    assert!(
        read(&garden_log).contains("no /etc/grove/garden.conf: the embedded defaults"),
        "{}",
        read(&garden_log)
    );
    drop(child);

    // Good files, and no flags at all: each daemon serves where its file
    // says (the env's sockets, not the defaults in /run/grove).
    let good = env.root.join("etc-good");
    let garden_socket = env.run_dir.join("garden-etc-good.sock");
    write_files(
        &good,
        &[
            ("groved.conf", &read(&env.root.join("groved.conf"))),
            (
                "helper-policy.conf",
                &read(&env.root.join("helper-policy.conf")),
            ),
            (
                "garden.conf",
                &format!(
                    "listen = {}\ngrove_socket = {}\n",
                    toml_string(&garden_socket.display().to_string()),
                    toml_string(&env.socket.display().to_string())
                ),
            ),
        ],
    );
    env.stop_groved();
    env.stop_helper();
    let _ = std::fs::remove_file(&env.helper_socket);
    let helper_log = env.root.join("etc-helper.log");
    let mut helper = with_etc_grove(&good, &scratch, false, &[bins.join("grove-helper")]);
    helper
        .env("GROVE_HELPER_LOG", "debug")
        .stdin(Stdio::null())
        .stderr(append_to(&helper_log));
    let mut child = helper.spawn().unwrap();
    let ready = format!("grove-helper: ready on {}", env.helper_socket.display());
    wait_until("the helper's ready line", || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the helper exited ({status}):\n{}", read(&helper_log));
        }
        read(&helper_log).contains(&ready)
    });
    env.adopt_helper(child);
    assert!(read(&helper_log).contains("grove-helper: policy from /etc/grove/helper-policy.conf"));

    let groved_log = env.root.join("etc-groved.log");
    let mut groved = with_etc_grove(&good, &scratch, true, &[bins.join("groved")]);
    groved.stdin(Stdio::null()).stderr(append_to(&groved_log));
    let mut child = groved.spawn().unwrap();
    wait_for_socket(&mut child, &env.socket, &|| read(&groved_log));
    env.adopt_groved(child);
    assert!(read(&groved_log).contains("configuration from /etc/grove/groved.conf"));

    let mut garden = with_etc_grove(&good, &scratch, true, &[bins.join("grove-garden")]);
    garden.stdin(Stdio::null()).stderr(append_to(&garden_log));
    let mut child = Owned(garden.spawn().unwrap());
    wait_for_socket(&mut child.0, &garden_socket, &|| read(&garden_log));
    assert!(read(&garden_log).contains("configuration from /etc/grove/garden.conf"));
    // The three answer each other: Garden → groved → grove-helper.
    let g = Garden::new(&garden_socket);
    g.json("POST", "/containers", &json!({"handle": "etc-made"}))
        .ok();
    assert_eq!(
        g.request("DELETE", "/containers/etc-made", None).status,
        200
    );
    drop(child);
    // The host's /etc is as it was.
    assert_eq!((Path::new("/etc/grove").exists(), etc_grove()), host_before);
}

// ---------------------------------------------------------------- metrics

/// An HTTP/1.1 request over `stream`; (status line, head, body).
fn http(mut stream: impl Read + Write, request: &str) -> (String, String, String) {
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    let status = head.lines().next().unwrap_or("").to_string();
    (status, head.to_string(), body.to_string())
}

fn scrape(socket: &Path) -> String {
    let stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (status, head, body) = http(stream, "GET /metrics HTTP/1.1\r\nHost: grove\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK", "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// Label names and values, sorted.
type Labels = Vec<(String, String)>;

/// One sample: metric name and labels.
type Series = (String, Labels);

/// Parse `text` as Prometheus's text exposition format 0.0.4, strictly:
/// every sample belongs to a family declared by `# TYPE` before it, the
/// lines of a family are contiguous, no series twice, names and labels
/// well-formed, values numbers, and each histogram's buckets cumulative
/// and ending in `le="+Inf"` equal to its `_count`.
fn parse_exposition(text: &str) -> Result<BTreeMap<Series, f64>, String> {
    let name_ok = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let label_ok = |n: &str| name_ok(n) && !n.contains(':');
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut done: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut samples = BTreeMap::new();
    let mut order: Vec<Series> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.trim_start().splitn(3, ' ').collect();
            match words.as_slice() {
                ["TYPE", name, kind] => {
                    if !name_ok(name) {
                        return Err(at("bad metric name".into()));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(kind) {
                        return Err(at(format!("unknown type {kind}")));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("a second TYPE".into()));
                    }
                }
                ["HELP", name, ..] if !name_ok(name) => return Err(at("bad metric name".into())),
                _ => {}
            }
            continue;
        }
        // name{labels} value
        let (series, value) = match line.find('{') {
            Some(_) => {
                let close = line.rfind('}').ok_or_else(|| at("no }".into()))?;
                (&line[..=close], line[close + 1..].trim())
            }
            None => {
                let (name, value) = line.split_once(' ').ok_or_else(|| at("no value".into()))?;
                (name, value.trim())
            }
        };
        let (name, labels_text) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.strip_suffix('}').unwrap_or(rest)),
            None => (series, ""),
        };
        if !name_ok(name) {
            return Err(at("bad metric name".into()));
        }
        let mut labels = Vec::new();
        let mut rest = labels_text;
        while !rest.is_empty() {
            let (label, after) = rest
                .split_once("=\"")
                .ok_or_else(|| at("bad label".into()))?;
            if !label_ok(label) {
                return Err(at(format!("bad label name {label:?}")));
            }
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        _ => return Err(at("bad escape".into())),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => return Err(at("unterminated label value".into())),
                }
            };
            labels.push((label.to_string(), value));
            rest = after[end + 1..].trim_start_matches(',');
        }
        labels.sort();
        let number = match value.split(' ').next().unwrap_or("") {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse::<f64>().map_err(|_| at(format!("value {v:?}")))?,
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name)
            .to_string();
        if !types.contains_key(&family) {
            return Err(at(format!("no TYPE for {family} before it")));
        }
        if current.as_deref() != Some(family.as_str()) {
            if done.contains(&family) {
                return Err(at(format!("{family}'s lines are not together")));
            }
            if let Some(previous) = current.replace(family.clone()) {
                done.push(previous);
            }
        }
        let key = (name.to_string(), labels);
        if samples.insert(key.clone(), number).is_some() {
            return Err(at("a series twice".into()));
        }
        order.push(key);
    }
    // Histograms.
    for (family, _) in types.iter().filter(|(_, kind)| *kind == "histogram") {
        let bucket = format!("{family}_bucket");
        let mut groups: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        for (name, labels) in order.iter().filter(|(name, _)| *name == bucket) {
            let le = labels
                .iter()
                .find(|(l, _)| l == "le")
                .ok_or_else(|| format!("{bucket} without le"))?;
            let le = match le.1.as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().map_err(|_| format!("{bucket}: le {v:?}"))?,
            };
            let others: Vec<_> = labels.iter().filter(|(l, _)| l != "le").cloned().collect();
            let value = samples[&(name.clone(), labels.clone())];
            groups.entry(others).or_default().push((le, value));
        }
        for (labels, buckets) in groups {
            for pair in buckets.windows(2) {
                if !(pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1) {
                    return Err(format!("{bucket}{labels:?}: not cumulative: {buckets:?}"));
                }
            }
            let last = buckets.last().unwrap();
            let count = samples
                .get(&(format!("{family}_count"), labels.clone()))
                .ok_or_else(|| format!("{family}_count{labels:?} missing"))?;
            if last.0 != f64::INFINITY || last.1 != *count {
                return Err(format!(
                    "{bucket}{labels:?}: +Inf bucket {last:?}, count {count}"
                ));
            }
            if !samples.contains_key(&(format!("{family}_sum"), labels.clone())) {
                return Err(format!("{family}_sum{labels:?} missing"));
            }
        }
    }
    Ok(samples)
}

/// A scrape's value of `name` with `labels` (0 for a series not there
/// fails: every series groved serves is always there).
fn value(samples: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    *samples
        .get(&(name.to_string(), labels.clone()))
        .unwrap_or_else(|| panic!("no {name}{labels:?} in {samples:?}"))
}

fn metrics(socket: &Path) -> BTreeMap<Series, f64> {
    let text = scrape(socket);
    parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Restart the env's groved with `lines` added to its config.
fn restart_groved_with(env: &mut TestEnv, lines: &str) {
    let config = env.root.join("groved.conf");
    let mut text = read(&config);
    text.push_str(lines);
    std::fs::write(&config, text).unwrap();
    env.stop_groved();
    env.start_groved();
}

/// SIGSTOP a process; SIGCONT when dropped.
struct Stopped(i32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let pid = pid as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .unwrap();
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

#[test]
fn metrics_move_with_creates_destroys_processes_oom_kills_pulls_and_the_helper_queue() {
    let (routes, blob_bytes) = image_routes();
    let registry = fake_registry(routes, None, None, None);
    let mut env = TestEnv::start();
    assert!(
        !read(&env.root.join("groved.log")).contains("metrics on"),
        "metrics are off by default"
    );
    // In a directory of its own, beneath neither the API socket's nor the
    // state dir (whose Landlock rules would cover it): confined, groved may
    // remove the socket there only by the rule for it.
    let metrics_dir = env.root.join("metrics");
    std::fs::create_dir(&metrics_dir).unwrap();
    let (uid, gid) = grove_user();
    std::os::unix::fs::chown(&metrics_dir, Some(uid), Some(gid)).unwrap();
    let socket = metrics_dir.join("metrics.sock");
    restart_groved_with(
        &mut env,
        &format!(
            "metrics_listen = {}\ninsecure_registries = {}\n",
            toml_string(&socket.display().to_string()),
            toml_string(&registry.addr)
        ),
    );
    assert!(read(&env.root.join("groved.log"))
        .contains(&format!("metrics on unix socket {}", socket.display())));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "group grove may scrape, others not");

    // groved's start-up work asks the helper too (the image GC's first
    // round lists the layers): the baseline is taken once that is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let scraped = metrics(&socket);
        if value(&scraped, "grove_helper_requests_in_flight", &[]) == 0.0
            || Instant::now() > deadline
        {
            break scraped;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for state in ["creating", "active", "stopping", "stopped", "destroying"] {
        assert_eq!(value(&first, "grove_containers", &[("state", state)]), 0.0);
    }
    for result in ["ok", "error"] {
        assert_eq!(
            value(
                &first,
                "grove_container_creates_total",
                &[("result", result)]
            ),
            0.0
        );
    }
    assert_eq!(value(&first, "grove_oom_kills_total", &[]), 0.0);
    assert_eq!(value(&first, "grove_pull_bytes_total", &[]), 0.0);
    assert_eq!(value(&first, "grove_helper_requests_in_flight", &[]), 0.0);
    assert_eq!(value(&first, "grove_helper_queue_limit", &[]), 256.0);
    // groved's own memory, as the kernel counts it.
    let rss = value(&first, "process_resident_memory_bytes", &[]);
    let status = read(&PathBuf::from(format!("/proc/{}/status", env.groved_pid())));
    let vm_rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        rss > 0.5 * vm_rss_kib * 1024.0 && rss < 2.0 * vm_rss_kib * 1024.0,
        "RSS {rss} B, /proc says {vm_rss_kib} kB"
    );
    assert!(value(&first, "process_virtual_memory_bytes", &[]) >= rss);

    let uri = format!("docker://{}/test/app:v1", registry.addr);
    let helper_pid = env.helper_pid();
    let (envr, socketr) = (&env, &socket);
    envr.run(|client| async move {
        // A pull: its blobs' bytes, counted as they are read.
        create_pulled(&client, "pulled", &uri, None).await.unwrap();
        let m = metrics(socketr);
        assert_eq!(value(&m, "grove_pull_bytes_total", &[]), blob_bytes as f64);

        let spec = ContainerSpec {
            handle: "busy".into(),
            ..ContainerSpec::default()
        };
        client.create(&spec).await.unwrap();
        let oom = ContainerSpec {
            handle: "oom".into(),
            memory_limit_bytes: Some(32 << 20),
            ..ContainerSpec::default()
        };
        client.create(&oom).await.unwrap();
        assert!(create(&client, "bad/handle", "").await.is_err());
        let busy = client.lookup("busy").await.unwrap();
        assert_eq!(exec(&busy, "true", &[]).await.0, 0);
        let sleeper = start(&busy, &Command::new("sleep", &["600"]))
            .await
            .unwrap();
        let m = metrics(socketr);
        assert_eq!(value(&m, "grove_containers", &[("state", "active")]), 3.0);
        assert_eq!(
            value(&m, "grove_container_creates_total", &[("result", "ok")]),
            3.0
        );
        assert_eq!(
            value(&m, "grove_container_creates_total", &[("result", "error")]),
            1.0
        );
        let ok = [("result", "ok")];
        assert_eq!(
            value(&m, "grove_container_create_duration_seconds_count", &ok),
            3.0
        );
        assert!(value(&m, "grove_container_create_duration_seconds_sum", &ok) > 0.0);
        assert_eq!(value(&m, "grove_processes_started_total", &[]), 2.0);
        assert_eq!(value(&m, "grove_processes", &[("state", "running")]), 1.0);
        assert_eq!(value(&m, "grove_processes", &[("state", "exited")]), 1.0);

        // An OOM kill.
        let oom = client.lookup("oom").await.unwrap();
        let (status, _, _) = exec(
            &oom,
            "dd",
            &["if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"],
        )
        .await;
        assert_eq!(status, -9, "the kernel's OOM killer ends it");
        let deadline = Instant::now() + Duration::from_secs(30);
        while value(&metrics(socketr), "grove_oom_kills_total", &[]) < 1.0 {
            assert!(Instant::now() < deadline, "no OOM kill counted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The helper's queue: with the helper stopped, a create waits.
        let stopped = Stopped::new(helper_pid);
        let waiting = {
            let mut request = client.grove.create_request();
            request.get().init_spec().set_handle("queued");
            let answer = request.send().promise;
            tokio::task::spawn_local(async move { answer.await.map(|_| ()) })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // (Another request may be in flight first — the guest lane saw
        // one before the create registered: wait for both.)
        loop {
            let m = metrics(socketr);
            let in_flight = value(&m, "grove_helper_requests_in_flight", &[]);
            let creating = value(&m, "grove_containers", &[("state", "creating")]);
            if in_flight >= 1.0 && creating == 1.0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the create never waited: {in_flight} requests in flight, {creating} creating"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(stopped);
        waiting.await.unwrap().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while value(&metrics(socketr), "grove_helper_requests_in_flight", &[]) != 0.0 {
            assert!(Instant::now() < deadline, "requests stay in flight");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // Destroys, and one of a container that is not there.
        drop(sleeper);
        for handle in ["busy", "oom", "pulled", "queued"] {
            client.destroy(handle).await.unwrap();
        }
        assert!(client.destroy("busy").await.is_err());
        let m = metrics(socketr);
        for state in ["creating", "active", "stopping", "stopped", "destroying"] {
            assert_eq!(value(&m, "grove_containers", &[("state", state)]), 0.0);
        }
        assert_eq!(
            value(&m, "grove_container_destroys_total", &[("result", "ok")]),
            4.0
        );
        assert_eq!(
            value(&m, "grove_container_destroys_total", &[("result", "error")]),
            1.0
        );
        assert_eq!(
            value(&m, "grove_container_destroy_duration_seconds_count", &ok),
            4.0
        );
        assert_eq!(value(&m, "grove_processes", &[("state", "running")]), 0.0);
        assert_eq!(value(&m, "grove_processes", &[("state", "exited")]), 0.0);
        assert!(value(&m, "grove_oom_kills_total", &[]) >= 1.0);
        assert_eq!(value(&m, "grove_processes_started_total", &[]), 3.0);
    });
    // Confined groved may remove its metrics socket when it stops.
    env.stop_groved();
    assert!(!socket.exists(), "the metrics socket outlived groved");
}

#[test]
fn metrics_on_loopback_tcp_answer_get_metrics_only() {
    let mut env = TestEnv::start();
    restart_groved_with(&mut env, "metrics_listen = \"127.0.0.1:0\"\n");
    let log = read(&env.root.join("groved.log"));
    let address = log
        .lines()
        .find_map(|l| l.split("metrics on http://").nth(1))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
        .to_string();
    let ask = |request: &str| {
        let stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        http(stream, request)
    };
    let (status, _, body) = ask("GET /metrics HTTP/1.1\r\nHost: grove\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let samples = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(
        value(&samples, "grove_containers", &[("state", "active")]),
        0.0
    );
    let (status, _, _) = ask("GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _, _) = ask("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    let (status, _, _) = ask("hello\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    // The API still answers beside it.
    env.run(|client| async move { some_work(&client, "tcp-metrics").await });
}

#[test]
fn the_parser_catches_what_prometheus_refuses() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n\
                # TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
    parse_exposition(good).unwrap();
    for bad in [
        "a 1\n",                                                    // no TYPE
        "# TYPE a gauge\na 1",                                      // no newline at the end
        "# TYPE a gauge\na one\n",                                  // not a number
        "# TYPE a gauge\na 1\na 2\n",                               // a series twice
        "# TYPE a gauge\n# TYPE b gauge\na 1\nb 1\na{x=\"1\"} 1\n", // a family split
        "# TYPE a gauge\na{1x=\"1\"} 1\n",                          // a bad label name
        "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 3\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted: {bad:?}");
    }
}

// ---------------------------------------------------------------- install

/// `./dev install` twice (an upgrade), `./dev uninstall`, `./dev install`,
/// `./dev uninstall --purge`, with an operator's edit to each config file
/// made after the first install: the edits survive all but the purge. In a
/// private mount namespace whose /etc, /usr/local and /var/lib/grove are
/// overlays on the host's (changes go to a tmpfs) and where systemd does
/// not seem to run: the host, its units included, is untouched.
#[test]
fn the_install_keeps_edited_config_on_upgrade_and_uninstall() {
    let dev = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dev");
    let scratch = PathBuf::from(TEST_ROOT).join(format!("install-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let etc_before = tree_names(Path::new("/etc/grove"));
    let script = r#"set -eu
scratch=$1; dev=$2
mount -t tmpfs -o mode=0700 grove-install "$scratch"
for dir in /etc /usr/local /var/lib/grove; do
    layer=$scratch/$(echo "$dir" | tr / _)
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layer/upper,workdir=$layer/work" "$dir"
done
rm -rf /etc/grove
# Not this host's systemd: with /run/systemd/system hidden, ./dev neither
# reloads nor disables (stops) the host's units.
if [ -d /run/systemd ]; then mount -t tmpfs -o mode=0755 grove-no-systemd /run/systemd; fi
state() { # what of the install is there, one word each
    for f in helper-policy.conf groved.conf garden.conf; do
        if [ ! -e "/etc/grove/$f" ]; then echo "$f:absent"
        elif grep -q '^# edited by the operator' "/etc/grove/$f"; then echo "$f:edited"
        else echo "$f:default"; fi
    done
    [ -x /usr/local/libexec/grove/groved ] && echo "groved:installed" || echo "groved:absent"
}
"$dev" install >/dev/null
echo "== installed"; state
for f in helper-policy.conf groved.conf garden.conf; do
    echo '# edited by the operator' >>"/etc/grove/$f"
done
"$dev" install >/dev/null
echo "== upgraded"; state
"$dev" uninstall >/dev/null
echo "== uninstalled"; state
"$dev" install >/dev/null
echo "== installed again"; state
"$dev" uninstall --purge >/dev/null
echo "== purged"; state
"#;
    let output = std::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&scratch)
        .arg(&dev)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&scratch);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let confs = ["helper-policy.conf", "groved.conf", "garden.conf"];
    let expect = |step: &str, conf: &str, binary: &str| {
        let mut lines = vec![format!("== {step}")];
        lines.extend(confs.iter().map(|f| format!("{f}:{conf}")));
        lines.push(format!("groved:{binary}"));
        lines.join("\n")
    };
    let wanted = [
        expect("installed", "default", "installed"),
        expect("upgraded", "edited", "installed"),
        expect("uninstalled", "edited", "absent"),
        expect("installed again", "edited", "installed"),
        expect("purged", "absent", "absent"),
    ]
    .join("\n");
    assert_eq!(text.trim(), wanted);
    assert_eq!(
        tree_names(Path::new("/etc/grove")),
        etc_before,
        "the host's /etc/grove"
    );
}
