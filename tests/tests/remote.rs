//! Remote clients: groved's API on TCP (`listen_tcp`) with mutual TLS,
//! against certificates made here with rcgen (a CA, a server certificate
//! for localhost and 127.0.0.1, a client certificate, and a second,
//! unrelated CA with a client certificate of its own). A client with a
//! valid certificate gets the whole API; one without a certificate, with
//! one from the other CA, or speaking plain TCP gets no answer. Plain TCP
//! on loopback without TLS works; a non-loopback listen_tcp without TLS
//! stops groved at start-up. Traffic goes to 127.0.0.1 only, and no test
//! that succeeds binds anything but loopback.

use grove_client::remote::{connect_tcp, Tls};
use grove_client::Client;
use grove_tests::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Certificates and keys in a directory of the test's own, removed on drop.
struct Pki {
    dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, format!("Grove test CA {name}"));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params, KeyPair::generate().unwrap())
}

/// A certificate for `names` with `usage`, signed by `issuer`: (PEM, key PEM).
fn leaf(
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).unwrap();
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().cloned().unwrap_or_default(),
    );
    params.extended_key_usages = vec![usage];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    /// ca.pem, server.pem + server.key (groved's, readable by `grove`
    /// only), client.pem + client.key, other-ca.pem, other-client.pem +
    /// other-client.key.
    fn new() -> Pki {
        let dir = Path::new(TEST_ROOT).join(format!(
            "tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pki = Pki { dir };
        let (ca_params, ca_key) = ca("one");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let (other_params, other_key) = ca("two");
        let other_cert = other_params.self_signed(&other_key).unwrap();
        let other = Issuer::new(other_params, other_key);
        let server = leaf(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        );
        let client = leaf(
            &["client-one"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &issuer,
        );
        let stranger = leaf(&["client-two"], ExtendedKeyUsagePurpose::ClientAuth, &other);
        let (uid, gid) = grove_user();
        pki.write("ca.pem", &ca_cert.pem(), 0o644);
        pki.write("other-ca.pem", &other_cert.pem(), 0o644);
        pki.write("server.pem", &server.0, 0o644);
        pki.write("server.key", &server.1, 0o600);
        chown(pki.path("server.key"), Some(uid), Some(gid)).unwrap();
        pki.write("client.pem", &client.0, 0o644);
        pki.write("client.key", &client.1, 0o600);
        pki.write("other-client.pem", &stranger.0, 0o644);
        pki.write("other-client.key", &stranger.1, 0o600);
        pki
    }

    fn write(&self, name: &str, text: &str, mode: u32) {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// groved's config lines: TLS on a port of 127.0.0.1 the kernel picks.
    fn groved_config(&self) -> String {
        format!(
            "listen_tcp = \"127.0.0.1:0\"\ntls_cert = {}\ntls_key = {}\ntls_client_ca = {}\n",
            toml_string(&self.arg("server.pem")),
            toml_string(&self.arg("server.key")),
            toml_string(&self.arg("ca.pem")),
        )
    }

    /// A client's TLS settings: trusting `ca`, presenting `cert`.
    fn tls(&self, ca: &str, cert: &str) -> Tls {
        Tls {
            ca: self.path(ca),
            cert: self.path(&format!("{cert}.pem")),
            key: self.path(&format!("{cert}.key")),
            server_name: None,
        }
    }
}

/// The address groved's TCP listener is bound at, from its log.
fn tcp_address(env: &TestEnv) -> String {
    let logs = env.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("groved listening on TCP at "))
        .unwrap_or_else(|| panic!("groved logged no TCP listener\n{logs}"));
    let rest = line.split("groved listening on TCP at ").nth(1).unwrap();
    let address: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    assert!(address.starts_with("127.0.0.1:"), "{line}");
    address
}

/// Create a container over `client`, run `echo` in it and check its output.
async fn create_and_run(client: &Client, greeting: &str) {
    let (container, handle) = create(client, "", "").await.expect("create over TCP");
    let (status, stdout, stderr) = exec(&container, "echo", &[greeting]).await;
    assert_eq!(
        (status, stdout.as_str(), stderr.as_str()),
        (0, format!("{greeting}\n").as_str(), "")
    );
    client.destroy(&handle).await.expect("destroy over TCP");
}

/// Whatever a refused client does, its first request gets no answer: the
/// connection fails or closes (never an answer, never a hang).
async fn assert_refused(what: &str, connected: grove_client::Result<Client>) {
    let client = match connected {
        Err(e) => {
            eprintln!("{what}: refused at connect: {e}");
            return;
        }
        Ok(client) => client,
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), client.ping())
        .await
        .unwrap_or_else(|_| panic!("{what}: ping neither answered nor failed"));
    let err = answer.expect_err(&format!("{what}: groved answered"));
    eprintln!("{what}: refused at the first request: {err}");
}

/// A TLS client that trusts groved's CA but presents no certificate.
async fn connect_without_certificate(pki: &Pki, address: &str) -> grove_client::Result<Client> {
    use futures::AsyncReadExt;
    use tokio_util::compat::TokioAsyncReadCompatExt;
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(pki.path("ca.pem")).unwrap();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    match tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, stream)
        .await
    {
        Ok(tls) => {
            let (reader, writer) = tls.compat().split();
            Ok(Client::over(reader, writer))
        }
        Err(e) => Err(grove_client::Error {
            code: "serviceUnavailable".into(),
            message: format!("TLS handshake: {e}"),
        }),
    }
}

/// Cap'n Proto bytes to the TLS port: what comes back is no RPC answer,
/// at most a TLS alert record, and the connection closes.
async fn plain_bytes_get_no_answer(address: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    // A one-segment message (segment table, then a 2-word segment), as
    // a plain Cap'n Proto client's bootstrap call starts.
    let mut frame = vec![0u8, 0, 0, 0, 2, 0, 0, 0];
    frame.extend([0u8; 16]);
    stream.write_all(&frame).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut reply))
        .await
        .expect("groved closes the connection")
        .ok();
    assert!(
        reply.is_empty() || reply[0] == 0x15,
        "expected nothing or a TLS alert, got {reply:02x?}"
    );
}

#[test]
fn a_client_with_a_certificate_gets_the_api_over_tls() {
    let pki = Pki::new();
    let env = TestEnv::start_with(&pki.groved_config());
    let address = tcp_address(&env);
    let logs = env.logs();
    assert!(logs.contains("mutual TLS"), "{logs}");
    block_on(async {
        // The server's name: its IP address (the host of the address), or
        // a DNS name its certificate carries.
        let tls = pki.tls("ca.pem", "client");
        let client = connect_tcp(&address, Some(&tls)).await.expect("connect");
        client.ping().await.expect("ping over TLS");
        create_and_run(&client, "hello over TLS").await;
        client.close().await;
        let by_name = Tls {
            server_name: Some("localhost".into()),
            ..pki.tls("ca.pem", "client")
        };
        let client = connect_tcp(&address, Some(&by_name))
            .await
            .expect("connect");
        client
            .ping()
            .await
            .expect("ping over TLS, server name localhost");
        // The client checks groved's certificate too.
        let wrong_name = Tls {
            server_name: Some("grove.example".into()),
            ..pki.tls("ca.pem", "client")
        };
        let err = connect_tcp(&address, Some(&wrong_name))
            .await
            .err()
            .expect("a server certificate for another name is refused");
        assert_eq!(err.code, "serviceUnavailable", "{err}");
        let err = connect_tcp(&address, Some(&pki.tls("other-ca.pem", "client")))
            .await
            .err()
            .expect("a server certificate from an untrusted CA is refused");
        assert!(err.message.contains("TLS handshake"), "{err}");
    });
    assert!(env.logs().contains("TLS client connected"));

    // The CLI: --address and the --tls-* options (run_cli adds --socket,
    // which --address overrides).
    let tls_args = |cert: &str| -> Vec<String> {
        vec![
            "--address".into(),
            address.clone(),
            "--tls-ca".into(),
            pki.arg("ca.pem"),
            "--tls-cert".into(),
            pki.arg(&format!("{cert}.pem")),
            "--tls-key".into(),
            pki.arg(&format!("{cert}.key")),
        ]
    };
    let cli = |cert: &str, args: &[&str]| {
        let mut all = tls_args(cert);
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run_cli(&env, &all, None)
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let out = cli("client", &["ping"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\n");
    let out = cli("client", &["create", "--handle", "remote-cli"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "remote-cli\n");
    let out = cli(
        "client",
        &[
            "run",
            "remote-cli",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(
        (out.status.code(), text(&out.stdout), text(&out.stderr)),
        (Some(3), "out\n".to_string(), "err\n".to_string())
    );
    // A certificate from the other CA: refused (so the CLI did use TCP).
    let out = cli("other-client", &["ping"]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // Some TLS options but not all three: a clear error, no connection.
    let out = run_cli(
        &env,
        &[
            "--address",
            &address,
            "--tls-ca",
            &pki.arg("ca.pem"),
            "ping",
        ],
        None,
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("certificate and the key are missing"),
        "{stderr}"
    );
    // The same from the environment.
    let out = std::process::Command::new(bin_dir().join("grove"))
        .args(["destroy", "remote-cli"])
        .env("GROVE_SOCKET", "/nonexistent/grove.sock")
        .env("GROVE_ADDRESS", &address)
        .env("GROVE_TLS_CA", pki.path("ca.pem"))
        .env("GROVE_TLS_CERT", pki.path("client.pem"))
        .env("GROVE_TLS_KEY", pki.path("client.key"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn clients_without_a_valid_certificate_are_refused() {
    let pki = Pki::new();
    let env = TestEnv::start_with(&pki.groved_config());
    let address = tcp_address(&env);
    block_on(async {
        // A client that connects and says nothing: closed once the
        // handshake time (10 s) is up; checked last.
        let mut silent = tokio::net::TcpStream::connect(&address).await.unwrap();
        let since = std::time::Instant::now();
        assert_refused(
            "no client certificate",
            connect_without_certificate(&pki, &address).await,
        )
        .await;
        assert_refused(
            "a client certificate from another CA",
            connect_tcp(&address, Some(&pki.tls("ca.pem", "other-client"))).await,
        )
        .await;
        // A client certificate made by the CA groved trusts, but with
        // another key: the handshake proves possession, so no.
        let stolen = Tls {
            key: pki.path("other-client.key"),
            ..pki.tls("ca.pem", "client")
        };
        match connect_tcp(&address, Some(&stolen)).await {
            Err(e) => assert_eq!(e.code, "invalidSpec", "{e}"),
            Ok(client) => assert_refused("a key that is not the certificate's", Ok(client)).await,
        }
        assert_refused("plain TCP", connect_tcp(&address, None).await).await;
        plain_bytes_get_no_answer(&address).await;
        // Through all that, groved still serves a valid client, and its
        // unix socket.
        let client = connect_tcp(&address, Some(&pki.tls("ca.pem", "client")))
            .await
            .expect("connect");
        client
            .ping()
            .await
            .expect("a valid client after the refusals");
        env.connect().await.ping().await.unwrap();
        use tokio::io::AsyncReadExt;
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), silent.read_to_end(&mut reply))
            .await
            .expect("groved closes a connection without a handshake")
            .ok();
        assert!(reply.is_empty(), "{reply:02x?}");
        assert!(
            since.elapsed() >= Duration::from_secs(9),
            "{:?}",
            since.elapsed()
        );
    });
    // groved may log the timeout just after it has closed the connection.
    eventually("groved logged the handshake timeout", || {
        env.logs().contains("no TLS handshake within 10 s")
    });
    let logs = env.logs();
    assert!(logs.contains("TLS handshake failed"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn plain_tcp_on_loopback_without_tls() {
    let env = TestEnv::start_with("listen_tcp = \"127.0.0.1:0\"\n");
    let address = tcp_address(&env);
    let logs = env.logs();
    assert!(logs.contains("every local user can use the API"), "{logs}");
    block_on(async {
        let client = connect_tcp(&address, None).await.expect("connect");
        client.ping().await.expect("ping over plain TCP");
        create_and_run(&client, "hello over TCP").await;
    });
    let out = run_cli(&env, &["--address", &address, "ping"], None);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
}

/// Run groved (as `grove`) with `config`; it must exit at start-up, failing:
/// returns its stderr.
fn groved_fails_with(dir: &Path, config: &str) -> String {
    let path = dir.join("groved.conf");
    std::fs::write(&path, config).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (uid, gid) = grove_user();
    let mut groved = std::process::Command::new(bin_dir().join("groved"));
    groved
        .arg("--config")
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    as_user(&mut groved, uid, gid);
    let child = groved.spawn().expect("starting groved");
    let pid = child.id();
    let (done, wait) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let out = match wait.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // Still running: stop it (by pid) and fail.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("groved did not stop at start-up with:\n{config}");
        }
    };
    assert!(!out.status.success(), "groved started with:\n{config}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn groved_refuses_tcp_configs_it_cannot_serve_safely() {
    let pki = Pki::new();
    let socket = pki.path("never.sock").display().to_string();
    let base = format!(
        "listen = {}\nstate_dir = {}\n",
        toml_string(&socket),
        toml_string(&pki.dir.display().to_string())
    );
    // Off loopback without TLS: refused before anything is bound (a
    // documentation address, which no host here has).
    let err = groved_fails_with(
        &pki.dir,
        &format!("{base}listen_tcp = \"192.0.2.1:7070\"\n"),
    );
    assert!(err.contains("listen_tcp"), "{err}");
    assert!(err.contains("not a loopback address"), "{err}");
    assert!(err.contains("tls_cert"), "{err}");
    // Some of the TLS keys but not all.
    let err = groved_fails_with(
        &pki.dir,
        &format!(
            "{base}listen_tcp = \"127.0.0.1:0\"\ntls_cert = {}\n",
            toml_string(&pki.arg("server.pem"))
        ),
    );
    assert!(err.contains("tls_key, tls_client_ca are missing"), "{err}");
    // Files that are not there, or do not fit: named at start-up.
    let tls = |cert: &str, key: &str, ca: &str| {
        format!(
            "{base}listen_tcp = \"127.0.0.1:0\"\ntls_cert = {}\ntls_key = {}\ntls_client_ca = {}\n",
            toml_string(&pki.arg(cert)),
            toml_string(&pki.arg(key)),
            toml_string(&pki.arg(ca))
        )
    };
    let err = groved_fails_with(&pki.dir, &tls("server.pem", "missing.key", "ca.pem"));
    assert!(
        err.contains("tls_key") && err.contains("missing.key"),
        "{err}"
    );
    let err = groved_fails_with(&pki.dir, &tls("server.pem", "server.key", "server.key"));
    assert!(err.contains("tls_client_ca"), "{err}");
    // Readable by root only: groved (as grove) cannot read a client key.
    let err = groved_fails_with(&pki.dir, &tls("server.pem", "client.key", "ca.pem"));
    assert!(
        err.contains("tls_key") && err.contains("client.key"),
        "{err}"
    );
    // A key that is not the certificate's.
    std::fs::set_permissions(
        pki.path("client.key"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = groved_fails_with(&pki.dir, &tls("server.pem", "client.key", "ca.pem"));
    assert!(err.contains("tls_cert") && err.contains("tls_key"), "{err}");
    assert!(
        !Path::new(&socket).exists(),
        "groved got as far as its socket"
    );
}
