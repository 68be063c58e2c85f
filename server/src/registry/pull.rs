//! Pulling one image into the blob cache: its manifest (through an index
//! to the host's platform), config and layers, from the registry's
//! mirrors first and then the registry itself. Each blob is checked
//! against its digest (and size) while it downloads; blobs the cache has
//! whole are not downloaded again.

use super::http::{read_document, Session};
use super::net::Net;
use super::{Progress, PullError, PULLED_BYTES};
use crate::image_config::ImageConfig;
use crate::images::blobs::{digest_hex, hex_of, sha256_hex, Blobs};
use crate::images::catalog::{BlobRef, ImageRecord, LayerRef};
use grove_schema::auth_file::Login;
use grove_schema::image_ref::{host_platform, Reference};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Most index levels followed.
const MAX_INDEX_DEPTH: usize = 4;

/// Who to ask for the image, and with which login.
pub struct Request<'a> {
    /// The URI as the client gave it, for messages.
    pub uri: &'a str,
    pub reference: &'a Reference,
    /// The client's login, for the registry itself (never sent to mirrors).
    pub login: Option<Login>,
    /// `registry_auth_file`'s contents, for the registry and each mirror.
    pub auth_file: Option<&'a [u8]>,
}

/// What a pull brought: the record to catalog (without names or times) and
/// how many bytes it downloaded.
pub struct Pulled {
    pub record: ImageRecord,
    pub downloaded: u64,
}

/// Pull from each source in turn (mirrors, then the registry unless
/// `registry_fallback` is off) until one serves the whole image. The error
/// is the last source's, naming the others' too.
pub fn pull(
    net: &Net,
    config: &ImageConfig,
    request: &Request,
    blobs: &Blobs,
    progress: &Progress,
) -> Result<Pulled, PullError> {
    let r = request.reference;
    let mirrors = config.mirrors_of(&r.host);
    let mut sources: Vec<(String, String, bool)> = mirrors
        .iter()
        .map(|m| {
            let repo = if m.prefix.is_empty() {
                r.repo.clone()
            } else {
                format!("{}/{}", m.prefix, r.repo)
            };
            (m.host.clone(), repo, true)
        })
        .collect();
    if mirrors.is_empty() || config.fallback {
        sources.push((r.host.clone(), r.repo.clone(), false));
    }
    let mut failures: Vec<String> = Vec::new();
    let mut last = None;
    for (host, repo, is_mirror) in sources {
        let from_file = request.auth_file.and_then(|file| {
            let at = Reference {
                host: host.clone(),
                repo: repo.clone(),
                tag: String::new(),
                digest: None,
            };
            match grove_schema::auth_file::lookup(file, &at) {
                Ok(login) => login,
                Err(e) => {
                    tracing::warn!(error = %e, "registry_auth_file");
                    None
                }
            }
        });
        let login = if is_mirror {
            from_file
        } else {
            request.login.clone().or(from_file)
        };
        let context = format!("image {}: ", request.uri);
        let result = Session::new(net, &host, &repo, login, context)
            .and_then(|mut session| pull_from(&mut session, r, blobs, progress));
        match result {
            Ok(mut pulled) => {
                pulled.record.source = if is_mirror {
                    format!("{host}/{repo} (mirror of {})", r.host)
                } else {
                    format!("{host}/{repo}")
                };
                if !failures.is_empty() {
                    tracing::info!(image = request.uri, tried = ?failures, "pulled after other sources failed");
                }
                return Ok(pulled);
            }
            Err(e) => {
                tracing::warn!(image = request.uri, source = %host, error = %e, "pull failed");
                failures.push(format!(
                    "{}{host}: {e}",
                    if is_mirror { "mirror " } else { "" }
                ));
                last = Some(e);
            }
        }
    }
    let last = last.expect("at least one source is tried");
    if failures.len() < 2 {
        return Err(last);
    }
    let others = failures[..failures.len() - 1].join("; ");
    Err(match last {
        PullError::Invalid(m) => PullError::Invalid(format!("{m} (tried first: {others})")),
        PullError::Unavailable(m) => PullError::Unavailable(format!("{m} (tried first: {others})")),
    })
}

#[derive(serde::Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    platform: Option<PlatformJson>,
}

#[derive(serde::Deserialize)]
struct PlatformJson {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: String,
}

impl PlatformJson {
    fn shown(&self) -> String {
        if self.variant.is_empty() {
            format!("{}/{}", self.os, self.architecture)
        } else {
            format!("{}/{}/{}", self.os, self.architecture, self.variant)
        }
    }
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

/// A manifest or an index: an index lists `manifests`.
#[derive(serde::Deserialize)]
struct Probe {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

#[derive(serde::Deserialize, Default)]
struct Config {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    rootfs: RootFs,
}

#[derive(serde::Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// Fetch a manifest (or index) by tag or digest: its bytes and media type.
fn manifest(
    s: &mut Session,
    repo_shown: &str,
    reference: &str,
) -> Result<(Vec<u8>, String), PullError> {
    let url = format!("{}/manifests/{reference}", s.base);
    let accept = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(", ");
    let sep = if reference.starts_with("sha256:") {
        '@'
    } else {
        ':'
    };
    let what = format!("manifest {repo_shown}{sep}{reference}");
    let resp = s.get(&url, &accept, &what)?;
    let content_type = resp.content_type().to_string();
    let bytes = read_document(resp).map_err(|e| s.unavailable(format!("{what}: {e}")))?;
    if let Some(hex) = reference.strip_prefix("sha256:") {
        let got = sha256_hex(&bytes);
        if got != hex {
            return Err(s.invalid(format!(
                "manifest sha256:{hex} has sha256:{got} from {}; the download is corrupt",
                s.host
            )));
        }
    }
    let probe: Probe = serde_json::from_slice(&bytes)
        .map_err(|e| s.invalid(format!("{what} is not JSON: {e}")))?;
    // A manifest's own mediaType wins over the Content-Type header.
    let media_type = match (probe.media_type.is_empty(), probe.manifests.is_some()) {
        (false, _) => probe.media_type,
        (true, true) => OCI_INDEX.to_string(),
        (true, false) if content_type.is_empty() => OCI_MANIFEST.to_string(),
        (true, false) => content_type,
    };
    Ok((bytes, media_type))
}

fn pull_from(
    s: &mut Session,
    r: &Reference,
    blobs: &Blobs,
    progress: &Progress,
) -> Result<Pulled, PullError> {
    let repo_shown = r.repo.clone();
    let (mut bytes, mut media_type) = manifest(s, &repo_shown, r.manifest_ref())?;
    let host = host_platform();
    let mut depth = 0;
    while media_type == OCI_INDEX || media_type == DOCKER_LIST {
        depth += 1;
        if depth > MAX_INDEX_DEPTH {
            return Err(s.invalid(format!(
                "image indexes nested deeper than {MAX_INDEX_DEPTH} levels are refused"
            )));
        }
        let index: Probe = serde_json::from_slice(&bytes)
            .map_err(|e| s.invalid(format!("the image index: {e}")))?;
        let entries = index.manifests.unwrap_or_default();
        let chosen = entries
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| host.accepts(&p.os, &p.architecture, &p.variant))
            })
            .ok_or_else(|| {
                let platforms: Vec<String> = entries
                    .iter()
                    .filter_map(|m| m.platform.as_ref())
                    .map(PlatformJson::shown)
                    .collect();
                s.invalid(format!(
                    "the image index has no manifest for this host's platform {host} \
                     (platforms: {})",
                    if platforms.is_empty() {
                        "none given".to_string()
                    } else {
                        platforms.join(", ")
                    }
                ))
            })?;
        digest_hex(&chosen.digest).map_err(|e| s.invalid(e))?;
        let digest = chosen.digest.clone();
        (bytes, media_type) = manifest(s, &repo_shown, &digest)?;
    }
    if media_type != OCI_MANIFEST && media_type != DOCKER_MANIFEST {
        return Err(s.invalid(format!(
            "unsupported manifest media type {media_type:?} (supported: {OCI_MANIFEST}, \
             {DOCKER_MANIFEST}, and {OCI_INDEX} / {DOCKER_LIST})"
        )));
    }
    let manifest: Manifest =
        serde_json::from_slice(&bytes).map_err(|e| s.invalid(format!("the manifest: {e}")))?;
    if manifest.schema_version != 2 {
        return Err(s.invalid(format!(
            "manifest schemaVersion {} is not supported",
            manifest.schema_version
        )));
    }
    if !manifest.media_type.is_empty() && manifest.media_type != media_type {
        return Err(s.invalid(format!(
            "the manifest says it is {:?} but was served as {media_type:?}",
            manifest.media_type
        )));
    }
    for l in &manifest.layers {
        if !grove_schema::helper::LAYER_MEDIA_TYPES.contains(&l.media_type.as_str()) {
            return Err(s.invalid(format!(
                "layer {} has unsupported media type {:?} (supported: {})",
                l.digest,
                l.media_type,
                grove_schema::helper::LAYER_MEDIA_TYPES.join(", ")
            )));
        }
    }
    let manifest_hex = sha256_hex(&bytes);
    blobs
        .put(&manifest_hex, &bytes)
        .map_err(|e| s.unavailable(format!("caching the manifest: {e}")))?;

    // Blobs the cache has whole count as done from the start.
    let mut wanted: Vec<(&str, &Descriptor)> = vec![("config", &manifest.config)];
    wanted.extend(manifest.layers.iter().map(|l| ("layer", l)));
    let mut cached = BTreeSet::new();
    for (_, d) in &wanted {
        let hex = digest_hex(&d.digest).map_err(|e| s.invalid(e))?;
        if blobs.verify(hex, d.size) {
            cached.insert(hex.to_string());
        }
    }
    let total: u64 = wanted.iter().filter_map(|(_, d)| d.size).sum();
    let already: u64 = wanted
        .iter()
        .filter(|(_, d)| cached.contains(&d.digest["sha256:".len()..]))
        .filter_map(|(_, d)| d.size)
        .sum();
    // Each blob's first event before any total: a client that takes
    // done = total for the end has heard of every blob by then.
    for (_, d) in &wanted {
        let size = d.size.unwrap_or(0);
        let hex = &d.digest["sha256:".len()..];
        let cached = cached.contains(hex);
        progress.blob(&d.digest, if cached { size } else { 0 }, size, cached);
    }
    progress.start(total, already);
    let mut downloaded = 0;
    for (kind, d) in &wanted {
        let hex = &d.digest["sha256:".len()..];
        if !cached.contains(hex) {
            downloaded += download(s, kind, d, blobs, progress)?;
        }
    }
    let config_hex = &manifest.config.digest["sha256:".len()..];
    let config_bytes = blobs
        .read_verified(config_hex)
        .map_err(|e| s.invalid(e))?
        .ok_or_else(|| s.unavailable("the config blob vanished from the cache"))?;
    let config: Config =
        serde_json::from_slice(&config_bytes).map_err(|e| s.invalid(format!("the config: {e}")))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(s.invalid(format!(
            "the config names {} diff ids for {} layers",
            config.rootfs.diff_ids.len(),
            manifest.layers.len()
        )));
    }
    for d in &config.rootfs.diff_ids {
        digest_hex(d).map_err(|e| s.invalid(format!("the config's diff ids: {e}")))?;
    }
    let blob_ref = |d: &Descriptor| BlobRef {
        digest: d.digest.clone(),
        size: d.size.unwrap_or(0),
        media_type: d.media_type.clone(),
    };
    let record = ImageRecord {
        digest: format!("sha256:{manifest_hex}"),
        media_type,
        names: BTreeSet::new(),
        platform: if config.os.is_empty() {
            String::new()
        } else {
            format!("{}/{}", config.os, config.architecture)
        },
        config: blob_ref(&manifest.config),
        layers: manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(d, diff_id)| LayerRef {
                blob: blob_ref(d),
                diff_id: diff_id.clone(),
            })
            .collect(),
        source: String::new(),
        pulled_at: 0,
        last_used: 0,
    };
    Ok(Pulled { record, downloaded })
}

/// Download one blob into the cache, checking its sha256 (and size) while
/// it streams; answers the bytes downloaded.
fn download(
    s: &mut Session,
    kind: &str,
    d: &Descriptor,
    blobs: &Blobs,
    progress: &Progress,
) -> Result<u64, PullError> {
    let hex = digest_hex(&d.digest).map_err(|e| s.invalid(e))?.to_string();
    let url = format!("{}/blobs/{}", s.base, d.digest);
    let resp = s.get(&url, "", &format!("{kind} blob {}", d.digest))?;
    let (partial, file) = blobs
        .partial(&hex)
        .map_err(|e| s.unavailable(format!("caching {kind} blob {}: {e}", d.digest)))?;
    let size = d.size.unwrap_or(0);
    let mut done = 0u64;
    let copied = copy_verified(resp.into_reader(), file, &hex, d.size, &mut |n| {
        done += n;
        PULLED_BYTES.fetch_add(n, Ordering::Relaxed);
        progress.blob(&d.digest, done, size.max(done), false);
        progress.advance(n);
    });
    match copied {
        Ok(n) => {
            blobs
                .commit(&partial, &hex)
                .map_err(|e| s.unavailable(format!("caching {kind} blob {}: {e}", d.digest)))?;
            Ok(n)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(match e {
                CopyError::Io(e) => s.unavailable(format!(
                    "downloading {kind} blob {} from {}: {e}",
                    d.digest, s.host
                )),
                CopyError::Mismatch(e) => {
                    s.invalid(format!("{kind} blob {} from {}: {e}", d.digest, s.host))
                }
            })
        }
    }
}

#[derive(Debug)]
pub enum CopyError {
    Io(std::io::Error),
    Mismatch(String),
}

/// Copy `from` into `to`, hashing as it goes; the result must have sha256
/// `hex` and, when given, `size` bytes. Answers the bytes copied.
pub fn copy_verified(
    mut from: impl Read,
    mut to: impl Write,
    hex: &str,
    size: Option<u64>,
    advanced: &mut dyn FnMut(u64),
) -> Result<u64, CopyError> {
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
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_verify_digest_and_size() {
        let data = b"hello".as_slice();
        let hex = sha256_hex(data);
        let mut out = Vec::new();
        assert_eq!(
            copy_verified(data, &mut out, &hex, Some(5), &mut |_| {}).unwrap(),
            5
        );
        assert_eq!(out, data);
        for (want_hex, size) in [
            ("0".repeat(64), None),
            (hex.clone(), Some(4)),
            (hex.clone(), Some(6)),
        ] {
            assert!(matches!(
                copy_verified(data, Vec::new(), &want_hex, size, &mut |_| {}),
                Err(CopyError::Mismatch(_))
            ));
        }
    }
}
