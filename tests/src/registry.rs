//! Registries for the registry-pull tests, all on 127.0.0.1:
//! - `Registry`: a real Docker registry (Debian's `docker-registry`,
//!   distribution 2.8) at a free port with its storage in a temp dir,
//!   over plain HTTP or (`start_tls`) HTTPS with a certificate made by
//!   the test; killed by pid and removed on drop. Images are pushed to it
//!   with the HTTP API v2, from the test's own code.
//! - `FakeRegistry`: a minimal registry of fixed routes that wants a
//!   bearer token from its own token realm, which wants basic auth.
//! - `ConnectProxy`: a tiny HTTP CONNECT proxy that tunnels only to
//!   127.0.0.1 and notes each tunnel's target.

use crate::oci::{config, gzip, sha};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    dir: PathBuf,
    child: Option<Child>,
    scheme: &'static str,
    agent: ureq::Agent,
}

/// A port nobody listens on right now (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// TLS for `Registry::start_tls`: the server's certificate chain and key
/// (PEM) and the CA (PEM) that clients must trust.
pub struct RegistryTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl Registry {
    /// Start a registry in `dir` (which is removed on drop).
    pub fn start(dir: PathBuf) -> Registry {
        Registry::start_with(dir, None, None)
    }

    /// Start a registry at `addr` (`127.0.0.1:PORT`), for a groved that was
    /// configured with it before it existed (the benchmarks).
    pub fn start_at(dir: PathBuf, addr: &str) -> Registry {
        assert!(addr.starts_with("127.0.0.1:"), "loopback only: {addr}");
        Registry::start_with(dir, None, Some(addr))
    }

    /// Start a registry serving HTTPS with `tls`.
    pub fn start_tls(dir: PathBuf, tls: &RegistryTls) -> Registry {
        Registry::start_with(dir, Some(tls), None)
    }

    fn start_with(dir: PathBuf, tls: Option<&RegistryTls>, addr: Option<&str>) -> Registry {
        assert!(
            std::path::Path::new(REGISTRY_BIN).exists(),
            "no {REGISTRY_BIN} (./dev setup installs the docker-registry package)"
        );
        fs::create_dir_all(dir.join("storage")).unwrap();
        let addr = addr.map_or_else(|| format!("127.0.0.1:{}", free_port()), str::to_string);
        let mut tls_lines = String::new();
        let mut agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30));
        if let Some(t) = tls {
            fs::write(dir.join("cert.pem"), &t.cert_pem).unwrap();
            fs::write(dir.join("key.pem"), &t.key_pem).unwrap();
            tls_lines = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            );
            let mut roots = rustls::RootCertStore::empty();
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(t.ca_pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            agent = agent.tls_config(Arc::new(config));
        }
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n{tls_lines}",
                dir.join("storage").display()
            ),
        )
        .unwrap();
        let log = fs::File::create(dir.join("registry.log")).unwrap();
        let child = std::process::Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting docker-registry");
        let mut r = Registry {
            addr,
            dir,
            child: Some(child),
            scheme: if tls.is_some() { "https" } else { "http" },
            agent: agent.build(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if r.agent.get(&r.url("/v2/")).call().is_ok() {
                break;
            }
            if let Some(status) = r.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "docker-registry exited ({status}): {}",
                    fs::read_to_string(r.dir.join("registry.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not answer on {}",
                r.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Stop it now (by pid); its storage stays until drop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Upload a blob (POST then PUT ?digest=); returns `sha256:<hex>`.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = format!("sha256:{}", sha(bytes));
        let resp = self
            .agent
            .post(&self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .call()
            .expect("starting a blob upload");
        assert_eq!(resp.status(), 202);
        let location = resp
            .header("Location")
            .expect("upload Location")
            .to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            self.url(&location)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .agent
            .put(&format!("{location}{sep}digest={digest}"))
            .set("Content-Type", "application/octet-stream")
            .send_bytes(bytes)
            .expect("finishing a blob upload");
        assert_eq!(resp.status(), 201);
        digest
    }

    /// PUT a manifest (or index) under `reference`; returns its digest.
    pub fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let resp = self
            .agent
            .put(&self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .set("Content-Type", media_type)
            .send_bytes(bytes);
        match resp {
            Ok(r) => assert_eq!(r.status(), 201),
            Err(ureq::Error::Status(code, r)) => panic!(
                "pushing manifest {repo}:{reference}: HTTP {code}: {}",
                r.into_string().unwrap_or_default()
            ),
            Err(e) => panic!("pushing manifest {repo}:{reference}: {e}"),
        }
        format!("sha256:{}", sha(bytes))
    }

    /// Push an image (layer 0 gzip-compressed, the others as given by
    /// `compress`) with a config for `arch`; returns the manifest's bytes
    /// and digest.
    pub fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layers: &[Vec<u8>],
        arch: &str,
    ) -> (Vec<u8>, String) {
        let blobs: Vec<(Vec<u8>, &str)> = layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if i == 0 {
                    (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
                } else {
                    (l.clone(), "application/vnd.oci.image.layer.v1.tar")
                }
            })
            .collect();
        self.push_image_blobs(repo, tag, layers, &blobs, arch)
    }

    /// Push an image whose layers (uncompressed, for the diff ids) are
    /// carried as the given blobs with their media types.
    pub fn push_image_blobs(
        &self,
        repo: &str,
        tag: &str,
        layers: &[Vec<u8>],
        blobs: &[(Vec<u8>, &str)],
        arch: &str,
    ) -> (Vec<u8>, String) {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
        let mut cfg: serde_json::Value = serde_json::from_slice(&config(&diff_ids)).unwrap();
        cfg["architecture"] = arch.into();
        let cfg = serde_json::to_vec(&cfg).unwrap();
        let mut descs = Vec::new();
        for (bytes, mt) in blobs {
            let digest = self.push_blob(repo, bytes);
            descs.push(serde_json::json!({"mediaType": mt, "digest": digest, "size": bytes.len()}));
        }
        let cfg_digest = self.push_blob(repo, &cfg);
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cfg_digest, "size": cfg.len()},
            "layers": descs
        }))
        .unwrap();
        let digest = self.push_manifest(repo, tag, OCI_MANIFEST, &manifest);
        (manifest, digest)
    }

    /// Push an OCI index under `tag` naming the given (manifest, digest, arch).
    pub fn push_index(&self, repo: &str, tag: &str, entries: &[(&[u8], &str, &str)]) -> String {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(bytes, digest, arch)| {
                serde_json::json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": bytes.len(),
                    "platform": {"os": "linux", "architecture": arch}
                })
            })
            .collect();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": manifests
        }))
        .unwrap();
        self.push_manifest(repo, tag, OCI_INDEX, &index)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A minimal fake registry on 127.0.0.1 (one GET per connection) that
/// wants a bearer token from its own `/token` realm, which wants basic auth
/// `alice:s3cret`. Serves `routes` (path → content type, body). Its thread
/// ends with the test process.
pub struct FakeRegistry {
    pub addr: String,
    pub token_queries: Arc<Mutex<Vec<String>>>,
}

pub fn fake_registry(routes: std::collections::HashMap<String, (String, Vec<u8>)>) -> FakeRegistry {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let token_queries = Arc::new(Mutex::new(Vec::new()));
    let queries = token_queries.clone();
    let realm = format!("http://{addr}/token");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            let mut auth = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        auth = v.trim().to_string();
                    }
                }
            }
            let target = first.split_whitespace().nth(1).unwrap_or("").to_string();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let (status, headers, ctype, body): (&str, String, String, Vec<u8>) = if path
                == "/token"
            {
                queries.lock().unwrap().push(query.to_string());
                if auth == "Basic YWxpY2U6czNjcmV0" {
                    let body = br#"{"token":"tok-123"}"#.to_vec();
                    ("200 OK", String::new(), "application/json".into(), body)
                } else {
                    (
                        "401 Unauthorized",
                        String::new(),
                        "text/plain".into(),
                        b"no".to_vec(),
                    )
                }
            } else if auth != "Bearer tok-123" {
                let challenge = format!(
                    "WWW-Authenticate: Bearer realm=\"{realm}\",service=\"fake\",scope=\"repository:test/busybox:pull\"\r\n"
                );
                (
                    "401 Unauthorized",
                    challenge,
                    "text/plain".into(),
                    b"auth".to_vec(),
                )
            } else if let Some((ctype, body)) = routes.get(path) {
                ("200 OK", String::new(), ctype.clone(), body.clone())
            } else {
                (
                    "404 Not Found",
                    String::new(),
                    "text/plain".into(),
                    b"none".to_vec(),
                )
            };
            let head = format!(
                "HTTP/1.1 {status}\r\n{headers}Content-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    FakeRegistry {
        addr,
        token_queries,
    }
}

/// A tiny HTTP CONNECT proxy on 127.0.0.1: it tunnels to 127.0.0.1 only
/// (anything else is answered 403) and notes every CONNECT target.
pub struct ConnectProxy {
    pub addr: String,
    pub targets: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    pub fn start() -> ConnectProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let targets = Arc::new(Mutex::new(Vec::new()));
        let seen = targets.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let seen = seen.clone();
                std::thread::spawn(move || tunnel(client, &seen));
            }
        });
        ConnectProxy { addr, targets }
    }

    pub fn targets(&self) -> Vec<String> {
        self.targets.lock().unwrap().clone()
    }
}

fn tunnel(mut client: TcpStream, seen: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let mut words = first.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    seen.lock().unwrap().push(format!("{method} {target}"));
    if method != "CONNECT" || !target.starts_with("127.0.0.1:") {
        let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let Ok(upstream) = TcpStream::connect(target) else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        return;
    };
    let _ = client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
    // Whatever the reader buffered past the head belongs to the tunnel.
    let buffered = reader.buffer().to_vec();
    let mut up_write = upstream.try_clone().unwrap();
    let _ = up_write.write_all(&buffered);
    let mut up_read = upstream;
    let mut client_read = client.try_clone().unwrap();
    let forward = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut up_write);
        let _ = up_write.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut up_read, &mut client);
    let _ = client.shutdown(std::net::Shutdown::Write);
    let _ = forward.join();
}
