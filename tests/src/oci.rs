//! Images built at test time: OCI layouts from layers given as bytes
//! (tests/tests/images.rs builds its images with these), and gzip bombs.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// sha256 in hex.
pub fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A tar header owned by root, mtime 0.
pub fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// One gzip member.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// One zstd frame (ruzstd's encoder, as fast as it goes).
pub fn zstd(data: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
}

/// An image config with these diff ids and test defaults (Env FOO=bar,
/// WorkingDir /opt/work, User user).
pub fn config(diff_ids: &[String]) -> Vec<u8> {
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

pub struct Oci {
    pub dir: PathBuf,
    /// Blob digests (hex) of the layers, bottom to top.
    pub layer_blobs: Vec<String>,
}

/// A layer as an image carries it.
pub struct RawLayer {
    /// The bytes of its blob (compressed or not).
    pub blob: Vec<u8>,
    pub media_type: String,
    /// sha256 hex of the uncompressed tar.
    pub diff_id: String,
}

/// Write an OCI layout at `dir` with these layers, tagged `tag`.
pub fn write_oci_raw(dir: &Path, layers: &[RawLayer], tag: &str) -> Oci {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let h = sha(bytes);
        fs::write(blobs.join(&h), bytes).unwrap();
        h
    };
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.clone()).collect();
    let mut descs = Vec::new();
    let mut layer_blobs = Vec::new();
    for l in layers {
        let h = put(&l.blob);
        descs.push(serde_json::json!({"mediaType": l.media_type, "digest": format!("sha256:{h}"), "size": l.blob.len()}));
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

/// A gzip bomb: a layer of one file of `mib` MiB of zeros, compressed as
/// one gzip member per MiB (a valid multi-member stream, ~1 KiB per MiB,
/// cheap to make however large). Its diff id is computed only when `hash`
/// (hashing GiBs in a debug build is slow); else it is made up, for tests
/// that stop the unpack before it would be checked.
pub fn zeros_layer(mib: u64, hash: bool) -> RawLayer {
    zeros_entry_layer(tar::EntryType::Regular, mib, hash)
}

/// `zeros_layer` with an entry of another type (e.g. a GNU long name).
pub fn zeros_entry_layer(kind: tar::EntryType, mib: u64, hash: bool) -> RawLayer {
    const MIB: usize = 1 << 20;
    let mut h = header(kind, mib << 20, 0o644);
    h.set_path("zeros").unwrap();
    h.set_cksum();
    let zeros = vec![0u8; MIB];
    let chunk = gzip(&zeros);
    // The tar: the header, the data (a whole number of blocks), two zero
    // blocks at the end.
    let tail = [0u8; 1024];
    let mut blob = gzip(h.as_bytes());
    let mut hasher = Sha256::new();
    hasher.update(h.as_bytes());
    for _ in 0..mib {
        blob.extend_from_slice(&chunk);
        if hash {
            hasher.update(&zeros);
        }
    }
    blob.extend_from_slice(&gzip(&tail));
    hasher.update(tail);
    let diff_id = if hash {
        hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    } else {
        "0".repeat(64)
    };
    RawLayer {
        blob,
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        diff_id,
    }
}

/// A gzip layer holding the tree at `dir` (e.g. the busybox rootfs).
pub fn dir_layer(dir: &Path) -> RawLayer {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", dir).unwrap();
    let tar = b.into_inner().unwrap();
    RawLayer {
        blob: gzip(&tar),
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        diff_id: sha(&tar),
    }
}
