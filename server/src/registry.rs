//! Pulling images from a registry (Docker Registry HTTP API v2) into an OCI
//! image layout on local disk, which the helper then unpacks like any
//! `oci:` image (verifying every digest again itself).
//!
//! Everything here is blocking and works on plain data only; groved runs it
//! in `tokio::task::spawn_blocking`. The helper never does network I/O.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Manifests and token answers are small; anything bigger is refused.
const MAX_DOCUMENT: u64 = 4 << 20;
const DOCKER_HUB: &str = "registry-1.docker.io";

/// A parsed `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`.
    pub host: String,
    pub repo: String,
    /// A tag, or `sha256:<64 hex>`.
    pub reference: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullError {
    /// The image reference, the image or the registry's answer is wrong.
    Invalid(String),
    /// The registry could not be reached or failed.
    Unavailable(String),
}

impl PullError {
    fn message(&self) -> &str {
        match self {
            PullError::Invalid(m) | PullError::Unavailable(m) => m,
        }
    }
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Credentials for the registry's token service (spec.image.username/password).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Parse what follows `docker:` (`//HOST[:PORT]/REPO[:TAG|@DIGEST]`). A
/// first component without `.` or `:` (and not `localhost`) names a Docker
/// Hub repository.
pub fn parse(rest: &str) -> Result<Reference, String> {
    let body = rest
        .strip_prefix("//")
        .ok_or_else(|| "a registry image is docker://HOST[:PORT]/REPO[:TAG|@DIGEST]".to_string())?;
    let (name, reference) = if let Some((n, d)) = body.split_once('@') {
        let hex = d
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("digest {d:?} is not sha256:<64 hex digits>"))?;
        if !is_hex64(hex) {
            return Err(format!("digest {d:?} is not sha256:<64 hex digits>"));
        }
        (n, d.to_string())
    } else {
        match body.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, t.to_string()),
            _ => (body, "latest".to_string()),
        }
    };
    if reference.is_empty()
        || (!reference.starts_with("sha256:")
            && (reference.len() > 128
                || !reference
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))))
    {
        return Err(format!("{reference:?} is not a valid tag"));
    }
    let (first, remainder) = name
        .split_once('/')
        .ok_or_else(|| format!("{name:?} names no repository (docker://HOST[:PORT]/REPO)"))?;
    let (host, repo) = if first.contains('.') || first.contains(':') || first == "localhost" {
        (first.to_string(), remainder.to_string())
    } else {
        (DOCKER_HUB.to_string(), name.to_string())
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
    {
        return Err(format!("{host:?} is not a valid registry host"));
    }
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && c != "."
            && c != ".."
    };
    if repo.is_empty() || !repo.split('/').all(component_ok) {
        return Err(format!(
            "{repo:?} is not a valid repository (lowercase letters, digits, . _ - and /)"
        ));
    }
    Ok(Reference {
        host,
        repo,
        reference,
    })
}

/// Pull `reference` and write it as an OCI image layout (one manifest, for
/// linux/amd64, without a tag annotation) into a new directory beneath
/// `downloads`, which is returned. The layout is written to a temp
/// directory first and renamed when complete.
pub fn pull(
    uri: &str,
    reference: &Reference,
    insecure: bool,
    credentials: &Credentials,
    downloads: &Path,
    progress: &Progress,
) -> Result<PathBuf, PullError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(downloads)
        .map_err(|e| PullError::Unavailable(format!("creating {}: {e}", downloads.display())))?;
    let name = format!("{:016x}", rand::random::<u64>());
    let tmp = downloads.join(format!("tmp-{name}"));
    let result = Puller::new(uri, reference, insecure, credentials, progress).run(&tmp);
    match result {
        Ok(()) => {
            let done = downloads.join(&name);
            fs::rename(&tmp, &done).map_err(|e| {
                let _ = fs::remove_dir_all(&tmp);
                PullError::Unavailable(format!("image {uri}: renaming the download: {e}"))
            })?;
            Ok(done)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Remove temp and finished downloads left by an earlier groved.
pub fn clean_downloads(downloads: &Path) {
    let Ok(entries) = fs::read_dir(downloads) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Err(e) = fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "removing a stale download");
        }
    }
}

struct Puller<'a> {
    uri: &'a str,
    r: &'a Reference,
    base: String,
    insecure: bool,
    credentials: &'a Credentials,
    agent: ureq::Agent,
    /// The `Authorization` header value, once a challenge was answered.
    auth: Option<String>,
    progress: &'a Progress,
}

/// Blob bytes read from registries since groved started (its metrics).
pub static PULLED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Where a pull reports its bytes (done, total); the receiver is groved's
/// runtime side, which tells the client.
pub struct Progress {
    sender: Option<tokio::sync::mpsc::UnboundedSender<(u64, u64)>>,
    done: std::cell::Cell<u64>,
    total: std::cell::Cell<u64>,
}

impl Progress {
    pub fn new(sender: Option<tokio::sync::mpsc::UnboundedSender<(u64, u64)>>) -> Progress {
        Progress {
            sender,
            done: 0.into(),
            total: 0.into(),
        }
    }

    fn set_total(&self, total: u64) {
        self.total.set(total);
        self.report(0);
    }

    fn report(&self, more: u64) {
        PULLED_BYTES.fetch_add(more, std::sync::atomic::Ordering::Relaxed);
        self.done.set(self.done.get() + more);
        if let Some(sender) = &self.sender {
            let _ = sender.send((self.done.get(), self.total.get().max(self.done.get())));
        }
    }
}

#[derive(serde::Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(serde::Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

#[derive(serde::Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

#[derive(serde::Deserialize)]
struct Manifest {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(serde::Deserialize)]
struct MediaTypeOnly {
    #[serde(rename = "mediaType", default)]
    media_type: String,
}

impl<'a> Puller<'a> {
    fn new(
        uri: &'a str,
        r: &'a Reference,
        insecure: bool,
        credentials: &'a Credentials,
        progress: &'a Progress,
    ) -> Puller<'a> {
        let scheme = if insecure { "http" } else { "https" };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(60))
            .https_only(!insecure)
            .user_agent(concat!("groved/", env!("CARGO_PKG_VERSION")))
            .build();
        Puller {
            uri,
            r,
            base: format!("{scheme}://{}/v2/{}", r.host, r.repo),
            insecure,
            credentials,
            agent,
            auth: None,
            progress,
        }
    }

    fn invalid(&self, why: impl std::fmt::Display) -> PullError {
        PullError::Invalid(format!("image {}: {why}", self.uri))
    }

    fn unavailable(&self, why: impl std::fmt::Display) -> PullError {
        PullError::Unavailable(format!("image {}: {why}", self.uri))
    }

    fn transport(&self, e: ureq::Transport) -> PullError {
        let hint = if self.insecure {
            String::new()
        } else {
            format!(
                " (groved talks HTTPS to registries; plain HTTP only to those its \
                 insecure_registries names, which {} is not)",
                self.r.host
            )
        };
        self.unavailable(format!(
            "registry {} unreachable{}: {e}{hint}",
            self.r.host,
            if self.insecure { "" } else { " over HTTPS" }
        ))
    }

    /// GET `url`, answering one authentication challenge.
    fn get(&mut self, url: &str, accept: &str, what: &str) -> Result<ureq::Response, PullError> {
        let mut challenged = false;
        loop {
            let mut req = self.agent.get(url);
            if !accept.is_empty() {
                req = req.set("Accept", accept);
            }
            if let Some(auth) = &self.auth {
                req = req.set("Authorization", auth);
            }
            match req.call() {
                Ok(resp) => return Ok(resp),
                Err(ureq::Error::Status(401, resp)) if !challenged => {
                    challenged = true;
                    let challenge = resp.header("WWW-Authenticate").unwrap_or("").to_string();
                    self.authenticate(&challenge)?;
                }
                Err(ureq::Error::Status(401, _)) => {
                    return Err(self.invalid(format!(
                        "the registry refused access to {what} (401 Unauthorized{})",
                        if self.credentials.username.is_empty() {
                            "; no credentials were given"
                        } else {
                            " with the given credentials"
                        }
                    )))
                }
                Err(ureq::Error::Status(403, _)) => {
                    return Err(self.invalid(format!("access to {what} is forbidden (403)")))
                }
                Err(ureq::Error::Status(404, _)) => {
                    return Err(self.invalid(format!("{what} not found in the registry (404)")))
                }
                Err(ureq::Error::Status(code, resp)) => {
                    let body = resp.into_string().unwrap_or_default();
                    let body: String = body.chars().take(200).collect();
                    let err = format!("GET {what}: HTTP {code} {}", body.trim());
                    return Err(if code >= 500 || code == 429 {
                        self.unavailable(err)
                    } else {
                        self.invalid(err)
                    });
                }
                Err(ureq::Error::Transport(t)) => return Err(self.transport(t)),
            }
        }
    }

    /// Answer a `WWW-Authenticate` challenge: Bearer (fetch a token from
    /// its realm, with basic auth when credentials were given) or Basic.
    fn authenticate(&mut self, challenge: &str) -> Result<(), PullError> {
        let (scheme, params) = challenge.trim().split_once(' ').unwrap_or((challenge, ""));
        let params = parse_challenge(params);
        let basic = (!self.credentials.username.is_empty()).then(|| {
            format!(
                "Basic {}",
                base64(
                    format!(
                        "{}:{}",
                        self.credentials.username, self.credentials.password
                    )
                    .as_bytes()
                )
            )
        });
        if scheme.eq_ignore_ascii_case("basic") {
            return match basic {
                Some(b) => {
                    self.auth = Some(b);
                    Ok(())
                }
                None => Err(self.invalid(
                    "the registry asks for basic authentication and no credentials were given",
                )),
            };
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(self.invalid(format!(
                "the registry asks for unsupported authentication {challenge:?}"
            )));
        }
        let realm = params
            .iter()
            .find(|(k, _)| k == "realm")
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.invalid("the registry's Bearer challenge names no realm"))?;
        let plain_ok = self.insecure && realm.starts_with("http://");
        if !realm.starts_with("https://") && !plain_ok {
            return Err(self.invalid(format!("the registry's token realm {realm:?} is not HTTPS")));
        }
        let mut req = self.agent.get(&realm);
        for key in ["service", "scope"] {
            if let Some((_, v)) = params.iter().find(|(k, _)| k == key) {
                req = req.query(key, v);
            }
        }
        if !params.iter().any(|(k, _)| k == "scope") {
            req = req.query("scope", &format!("repository:{}:pull", self.r.repo));
        }
        if let Some(b) = &basic {
            req = req.set("Authorization", b);
        }
        let resp = match req.call() {
            Ok(resp) => resp,
            Err(ureq::Error::Status(code, _)) => {
                return Err(self.invalid(format!(
                    "the token service {realm} refused a token (HTTP {code})"
                )))
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(self.unavailable(format!("token service {realm} unreachable: {t}")))
            }
        };
        let body = read_document(resp).map_err(|e| self.unavailable(format!("token: {e}")))?;
        #[derive(serde::Deserialize)]
        struct Token {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
        }
        let t: Token = serde_json::from_slice(&body)
            .map_err(|e| self.invalid(format!("the token service's answer: {e}")))?;
        let token = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        if token.is_empty() {
            return Err(self.invalid("the token service's answer holds no token"));
        }
        self.auth = Some(format!("Bearer {token}"));
        Ok(())
    }

    /// Fetch a manifest (or index) by tag or digest: its bytes and media type.
    fn manifest(&mut self, reference: &str) -> Result<(Vec<u8>, String), PullError> {
        let url = format!("{}/manifests/{reference}", self.base);
        let accept = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(", ");
        let sep = if reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        let what = format!("manifest {}{sep}{reference}", self.r.repo);
        let resp = self.get(&url, &accept, &what)?;
        let content_type = resp.content_type().to_string();
        let bytes = read_document(resp).map_err(|e| self.unavailable(format!("{what}: {e}")))?;
        if let Some(hex) = reference.strip_prefix("sha256:") {
            let got = hex_of(&Sha256::digest(&bytes));
            if got != hex {
                return Err(self.invalid(format!(
                    "manifest sha256:{hex} has sha256:{got}; the download is corrupt"
                )));
            }
        }
        let declared: MediaTypeOnly = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(format!("{what} is not JSON: {e}")))?;
        // A manifest's own mediaType wins over the Content-Type header.
        let media_type = if declared.media_type.is_empty() {
            content_type
        } else {
            declared.media_type
        };
        Ok((bytes, media_type))
    }

    fn run(&mut self, dir: &Path) -> Result<(), PullError> {
        let reference = self.r.reference.clone();
        let (mut bytes, mut media_type) = self.manifest(&reference)?;
        if media_type == OCI_INDEX || media_type == DOCKER_LIST {
            let index: Index = serde_json::from_slice(&bytes)
                .map_err(|e| self.invalid(format!("the image index: {e}")))?;
            let platforms: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|m| m.platform.as_ref())
                .map(|p| format!("{}/{}", p.os, p.architecture))
                .collect();
            let chosen = index
                .manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .ok_or_else(|| {
                    self.invalid(format!(
                        "the image index has no linux/amd64 manifest (platforms: {})",
                        if platforms.is_empty() {
                            "none".to_string()
                        } else {
                            platforms.join(", ")
                        }
                    ))
                })?;
            let digest = chosen.digest.clone();
            check_digest(&digest).map_err(|e| self.invalid(e))?;
            (bytes, media_type) = self.manifest(&digest)?;
        }
        if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
            return Err(self.invalid(format!(
                "unsupported manifest media type {media_type:?} (supported: {OCI_MANIFEST}, \
                 {DOCKER_MANIFEST}, and {OCI_INDEX} / {DOCKER_LIST} for linux/amd64)"
            )));
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(format!("the manifest: {e}")))?;
        if manifest.schema_version != 2 {
            return Err(self.invalid(format!(
                "manifest schemaVersion {} is not supported",
                manifest.schema_version
            )));
        }
        if !manifest.media_type.is_empty() && manifest.media_type != media_type {
            return Err(self.invalid(format!(
                "the manifest says it is {:?} but was served as {media_type:?}",
                manifest.media_type
            )));
        }
        for l in &manifest.layers {
            if !grove_schema::helper::LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()) {
                return Err(self.invalid(format!(
                    "layer {} has unsupported media type {:?} (supported: {})",
                    l.digest,
                    l.media_type,
                    grove_schema::helper::LAYER_MEDIA_TYPES.join(", ")
                )));
            }
        }

        let blobs = dir.join("blobs/sha256");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&blobs)
            .map_err(|e| self.unavailable(format!("creating {}: {e}", blobs.display())))?;
        let uri = self.uri;
        let write = |path: PathBuf, data: &[u8]| {
            fs::write(&path, data).map_err(|e| {
                PullError::Unavailable(format!("image {uri}: writing {}: {e}", path.display()))
            })
        };
        let manifest_hex = hex_of(&Sha256::digest(&bytes));
        write(blobs.join(&manifest_hex), &bytes)?;
        let mut wanted = vec![("config", &manifest.config)];
        wanted.extend(manifest.layers.iter().map(|l| ("layer", l)));
        self.progress
            .set_total(wanted.iter().filter_map(|(_, d)| d.size).sum());
        for (kind, d) in wanted {
            self.blob(kind, d, &blobs)?;
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{
                "mediaType": media_type,
                "digest": format!("sha256:{manifest_hex}"),
                "size": bytes.len(),
            }]
        });
        write(dir.join("index.json"), index.to_string().as_bytes())?;
        write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(())
    }

    /// Download one blob into `blobs/<hex>`, checking its sha256 (and size)
    /// while it streams.
    fn blob(&mut self, kind: &str, d: &Descriptor, blobs: &Path) -> Result<(), PullError> {
        let hex = check_digest(&d.digest).map_err(|e| self.invalid(e))?;
        let path = blobs.join(hex);
        if path.exists() {
            return Ok(());
        }
        let url = format!("{}/blobs/{}", self.base, d.digest);
        let resp = self.get(&url, "", &format!("{kind} blob {}", d.digest))?;
        let partial = blobs.join(format!(".partial-{hex}"));
        let file = fs::File::create(&partial)
            .map_err(|e| self.unavailable(format!("creating {}: {e}", partial.display())))?;
        let progress = self.progress;
        let copied = copy_verified(resp.into_reader(), file, hex, d.size, &|n| {
            progress.report(n)
        });
        match copied {
            Ok(()) => fs::rename(&partial, &path)
                .map_err(|e| self.unavailable(format!("renaming {}: {e}", partial.display()))),
            Err(CopyError::Io(e)) => {
                let _ = fs::remove_file(&partial);
                Err(self.unavailable(format!("downloading {kind} blob {}: {e}", d.digest)))
            }
            Err(CopyError::Mismatch(e)) => {
                let _ = fs::remove_file(&partial);
                Err(self.invalid(format!("{kind} blob {}: {e}", d.digest)))
            }
        }
    }
}

fn check_digest(digest: &str) -> Result<&str, String> {
    match digest.strip_prefix("sha256:") {
        Some(h) if is_hex64(h) => Ok(h),
        _ => Err(format!("digest {digest:?} is not sha256:<64 hex digits>")),
    }
}

#[derive(Debug)]
enum CopyError {
    Io(std::io::Error),
    Mismatch(String),
}

/// Copy `from` into `to`, hashing as it goes; the result must have sha256
/// `hex` and, when given, `size` bytes.
fn copy_verified(
    mut from: impl Read,
    mut to: impl Write,
    hex: &str,
    size: Option<u64>,
    advanced: &dyn Fn(u64),
) -> Result<(), CopyError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Io(e)),
        };
        total += n as u64;
        if let Some(size) = size {
            if total > size {
                return Err(CopyError::Mismatch(format!(
                    "the registry sent more than the {size} bytes the manifest gives"
                )));
            }
        }
        hasher.update(&buf[..n]);
        to.write_all(&buf[..n]).map_err(CopyError::Io)?;
        advanced(n as u64);
    }
    to.flush().map_err(CopyError::Io)?;
    let got = hex_of(&hasher.finalize());
    if got != hex {
        return Err(CopyError::Mismatch(format!(
            "the download has sha256:{got}; the blob is corrupt"
        )));
    }
    if let Some(size) = size {
        if total != size {
            return Err(CopyError::Mismatch(format!(
                "the download has {total} bytes, the manifest says {size}"
            )));
        }
    }
    Ok(())
}

fn read_document(resp: ureq::Response) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(MAX_DOCUMENT + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        return Err(format!("larger than {MAX_DOCUMENT} bytes"));
    }
    Ok(bytes)
}

/// `key="value",key=value` pairs of a `WWW-Authenticate` challenge.
fn parse_challenge(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            match quoted.find('"') {
                Some(end) => (&quoted[..end], &quoted[end + 1..]),
                None => (quoted, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        out.push((key, value.to_string()));
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let r = parse("//127.0.0.1:5000/test/busybox:v1").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str(), r.reference.as_str()),
            ("127.0.0.1:5000", "test/busybox", "v1")
        );
        let r = parse("//reg.example/a/b").unwrap();
        assert_eq!(r.reference, "latest");
        let d = format!("sha256:{}", "a".repeat(64));
        let r = parse(&format!("//localhost:1/x@{d}")).unwrap();
        assert_eq!(
            (r.host.as_str(), r.reference.as_str()),
            ("localhost:1", d.as_str())
        );
        let r = parse("//library/busybox:1").unwrap();
        assert_eq!(
            (r.host.as_str(), r.repo.as_str()),
            (DOCKER_HUB, "library/busybox")
        );
        assert!(parse("127.0.0.1:5000/x").is_err());
        assert!(parse("//127.0.0.1:5000").is_err());
        assert!(parse("//127.0.0.1:5000/X:v1").is_err());
        assert!(parse("//127.0.0.1:5000/x/../y:v1").is_err());
        assert!(parse("//127.0.0.1:5000/x@sha256:abc").is_err());
        assert!(parse("//127.0.0.1:5000/x:a?b").is_err());
    }

    #[test]
    fn copies_verify_digest_and_size() {
        let data = b"hello".as_slice();
        let hex = hex_of(&Sha256::digest(data));
        let mut out = Vec::new();
        copy_verified(data, &mut out, &hex, Some(5), &|_| {}).unwrap();
        assert_eq!(out, data);
        assert!(matches!(
            copy_verified(data, Vec::new(), &"0".repeat(64), None, &|_| {}),
            Err(CopyError::Mismatch(_))
        ));
        assert!(matches!(
            copy_verified(data, Vec::new(), &hex, Some(4), &|_| {}),
            Err(CopyError::Mismatch(_))
        ));
        assert!(matches!(
            copy_verified(data, Vec::new(), &hex, Some(6), &|_| {}),
            Err(CopyError::Mismatch(_))
        ));
    }

    #[test]
    fn challenges_and_base64() {
        let p = parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(
            p,
            vec![
                ("realm".into(), "https://auth.example/token".into()),
                ("service".into(), "registry.example".into()),
                ("scope".into(), "repository:a/b:pull".into()),
            ]
        );
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
