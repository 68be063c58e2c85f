//! What the image cache holds: one record per pulled image (by the digest
//! of its platform manifest), the names that lead to it, its blobs and
//! when it was last used. Kept in `<state_dir>/images/images.json`,
//! written whole to a temp file and renamed (a crash leaves the old file
//! or the new one; blobs no record names are removed by the next GC).

use grove_schema::image_ref::{self, Reference};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A blob an image names: digest, bytes, media type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    pub blob: BlobRef,
    /// `sha256:<hex>` of the uncompressed tar, from the config.
    pub diff_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The platform manifest's digest, `sha256:<hex>`.
    pub digest: String,
    pub media_type: String,
    /// `host/repo:tag` for a tag pulled, `host/repo@sha256:…` for a digest
    /// pulled (an index's digest, for a multi-platform image).
    pub names: BTreeSet<String>,
    /// `os/architecture` from the config.
    pub platform: String,
    pub config: BlobRef,
    pub layers: Vec<LayerRef>,
    /// The registry or mirror it came from.
    pub source: String,
    /// Unix seconds.
    pub pulled_at: u64,
    /// Unix seconds: pulled, or a container from it made or destroyed.
    pub last_used: u64,
}

impl ImageRecord {
    /// The hex of every blob it names (manifest, config, layers).
    pub fn blob_hexes(&self) -> Vec<String> {
        std::iter::once(&self.digest)
            .chain(std::iter::once(&self.config.digest))
            .chain(self.layers.iter().map(|l| &l.blob.digest))
            .filter_map(|d| d.strip_prefix("sha256:"))
            .map(str::to_string)
            .collect()
    }

    /// The diff ids' hex (the unpacked layers' ids in the helper's store).
    pub fn layer_ids(&self) -> Vec<String> {
        self.layers
            .iter()
            .filter_map(|l| l.diff_id.strip_prefix("sha256:"))
            .map(str::to_string)
            .collect()
    }

    /// How it is shown: its names, or its digest when it has none.
    pub fn label(&self) -> String {
        if self.names.is_empty() {
            self.digest.clone()
        } else {
            format!(
                "{} {}",
                self.digest,
                self.names.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        }
    }
}

/// The name a reference's cache entry goes by: its digest name when it
/// has a digest (the tag beside a digest only names it), else its tag name.
pub fn cache_name(r: &Reference) -> String {
    match &r.digest {
        Some(d) => format!("{}/{}@{d}", r.host, r.repo),
        None => format!("{}/{}:{}", r.host, r.repo, r.tag),
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    images: Vec<ImageRecord>,
}

pub struct Catalog {
    path: PathBuf,
    images: BTreeMap<String, ImageRecord>,
}

impl Catalog {
    /// Load `images.json` (a missing file is an empty cache; an unreadable
    /// one is reported and the cache starts empty: its blobs go at the
    /// next GC).
    pub fn load(dir: &Path) -> Catalog {
        let path = dir.join("images.json");
        let images = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                Ok(f) => f
                    .images
                    .into_iter()
                    .map(|r| (r.digest.clone(), r))
                    .collect(),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable image catalog; starting empty");
                    BTreeMap::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable image catalog; starting empty");
                BTreeMap::new()
            }
        };
        Catalog { path, images }
    }

    pub fn save(&self) -> std::io::Result<()> {
        let file = File {
            images: self.images.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, &self.path)
    }

    pub fn get(&self, digest: &str) -> Option<&ImageRecord> {
        self.images.get(digest)
    }

    pub fn get_mut(&mut self, digest: &str) -> Option<&mut ImageRecord> {
        self.images.get_mut(digest)
    }

    pub fn all(&self) -> impl Iterator<Item = &ImageRecord> {
        self.images.values()
    }

    /// The image a name leads to.
    pub fn by_name(&self, name: &str) -> Option<&ImageRecord> {
        self.images.values().find(|r| r.names.contains(name))
    }

    /// Add or refresh a record, giving it `name` (taken from any other
    /// record that had it: a tag moves to the image it names now).
    pub fn insert(&mut self, mut record: ImageRecord, name: String) {
        for other in self.images.values_mut() {
            other.names.remove(&name);
        }
        if let Some(old) = self.images.remove(&record.digest) {
            record.names.extend(old.names);
            record.pulled_at = record.pulled_at.max(old.pulled_at);
        }
        record.names.insert(name);
        self.images.insert(record.digest.clone(), record);
    }

    pub fn remove(&mut self, digest: &str) -> Option<ImageRecord> {
        self.images.remove(digest)
    }

    /// The image a user's name for it leads to: a reference (`busybox`,
    /// `host/repo:tag`, `docker://…`, with Docker Hub's short names), a
    /// manifest digest, or 12 or more of its hex digits.
    pub fn resolve(&self, query: &str) -> Result<&ImageRecord, String> {
        let hex = query.strip_prefix("sha256:").unwrap_or(query);
        if hex.len() >= 12 && hex.len() <= 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let matches: Vec<&ImageRecord> = self
                .images
                .values()
                .filter(|r| r.digest["sha256:".len()..].starts_with(&hex))
                .collect();
            match matches.as_slice() {
                [one] => return Ok(one),
                [] => {}
                _ => return Err(format!("{query:?} names more than one cached image")),
            }
        }
        let r = image_ref::parse_name(query).map_err(|e| format!("{query:?}: {e}"))?;
        self.by_name(&cache_name(&r))
            .ok_or_else(|| format!("no cached image is named {}", cache_name(&r)))
    }

    /// The hex of every blob some record names.
    pub fn blobs_named(&self) -> BTreeSet<String> {
        self.images.values().flat_map(|r| r.blob_hexes()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8, layers: &[u8]) -> ImageRecord {
        let d = |b: u8| format!("sha256:{}", format!("{b:02x}").repeat(32));
        ImageRecord {
            digest: d(n),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            names: BTreeSet::new(),
            platform: "linux/amd64".into(),
            config: BlobRef {
                digest: d(n + 100),
                size: 10,
                media_type: String::new(),
            },
            layers: layers
                .iter()
                .map(|l| LayerRef {
                    blob: BlobRef {
                        digest: d(*l),
                        size: 100,
                        media_type: String::new(),
                    },
                    diff_id: d(l + 50),
                })
                .collect(),
            source: "reg".into(),
            pulled_at: 1,
            last_used: 1,
        }
    }

    #[test]
    fn names_move_and_lookups_resolve() {
        let dir = std::env::temp_dir().join(format!("grove-catalog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut c = Catalog::load(&dir);
        let name = "registry-1.docker.io/library/busybox:latest".to_string();
        c.insert(record(1, &[10, 11]), name.clone());
        c.insert(record(2, &[10, 12]), name.clone());
        assert!(c.get(&record(1, &[]).digest).unwrap().names.is_empty());
        for query in [
            "busybox",
            "docker:///busybox",
            "docker.io/library/busybox:latest",
            "020202020202",
            &record(2, &[]).digest,
        ] {
            assert_eq!(
                c.resolve(query).unwrap().digest,
                record(2, &[]).digest,
                "{query}"
            );
        }
        assert!(c.resolve("alpine").unwrap_err().contains("library/alpine"));
        assert_eq!(c.blobs_named().len(), 2 + 2 + 3);
        c.save().unwrap();
        let again = Catalog::load(&dir);
        assert_eq!(again.all().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
