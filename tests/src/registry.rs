//! A real Docker registry (Debian's `docker-registry`, distribution 2.8) for
//! the registry-pull tests: started on 127.0.0.1 at a free port with its
//! storage in a temp dir, killed by pid and removed on drop. Images are
//! pushed to it with the HTTP API v2, from the test's own code.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    dir: PathBuf,
    child: Option<Child>,
}

/// A port nobody listens on right now (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Registry {
    /// Start a registry in `dir` (which is removed on drop).
    pub fn start(dir: PathBuf) -> Registry {
        assert!(
            std::path::Path::new(REGISTRY_BIN).exists(),
            "no {REGISTRY_BIN} (./dev setup installs the docker-registry package)"
        );
        fs::create_dir_all(dir.join("storage")).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n\
                 http:\n  addr: {addr}\n",
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
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ureq::get(&r.url("/v2/")).call().is_ok() {
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
        format!("http://{}{path}", self.addr)
    }

    /// Upload a blob (POST then PUT ?digest=); returns `sha256:<hex>`.
    pub fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = format!("sha256:{}", sha(bytes));
        let resp = ureq::post(&self.url(&format!("/v2/{repo}/blobs/uploads/")))
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
        let resp = ureq::put(&format!("{location}{sep}digest={digest}"))
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
        let resp = ureq::put(&self.url(&format!("/v2/{repo}/manifests/{reference}")))
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
}

pub fn sha(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
