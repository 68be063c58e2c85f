//! The blob cache: `<state_dir>/images/blobs/sha256/<hex>`, each file a
//! manifest, config or layer blob named by its sha256. A blob enters only
//! whole and verified (downloaded to `.partial-…`, hashed while it
//! streams, renamed into place); whatever reads one back checks it again
//! (small documents here, layers in the helper's unpacker), so a blob that
//! rotted on disk is refused, never used.

use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Largest document (manifest, config) read whole.
pub const MAX_DOCUMENT: u64 = 4 << 20;

pub fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_of(&Sha256::digest(bytes))
}

/// The hex of a `sha256:<64 hex>` digest, or why it is not one.
pub fn digest_hex(digest: &str) -> Result<&str, String> {
    match digest.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            Ok(h)
        }
        _ => Err(format!("digest {digest:?} is not sha256:<64 hex digits>")),
    }
}

#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
}

impl Blobs {
    /// Open (creating, mode 0700) `<images>/blobs/sha256`, and remove the
    /// partial downloads an earlier groved left.
    pub fn open(images: &Path) -> io::Result<Blobs> {
        let dir = images.join("blobs/sha256");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let blobs = Blobs { dir };
        for entry in fs::read_dir(&blobs.dir)?.flatten() {
            if entry.file_name().to_string_lossy().starts_with('.') {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(blobs)
    }

    pub fn path(&self, hex: &str) -> PathBuf {
        self.dir.join(hex)
    }

    /// The blob's size, if the cache has it.
    pub fn size_of(&self, hex: &str) -> Option<u64> {
        fs::symlink_metadata(self.path(hex))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Whether the cache has the blob whole: `size` bytes (when given)
    /// whose sha256 is `hex`. Reads it all.
    pub fn verify(&self, hex: &str, size: Option<u64>) -> bool {
        if size.is_some_and(|s| self.size_of(hex) != Some(s)) {
            return false;
        }
        let Ok(mut file) = File::open(self.path(hex)) else {
            return false;
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        hex_of(&hasher.finalize()) == hex
    }

    /// A small blob's bytes, checked against its digest; `Ok(None)` when
    /// the cache does not have it, an error when it is corrupt.
    pub fn read_verified(&self, hex: &str) -> Result<Option<Vec<u8>>, String> {
        let file = match File::open(self.path(hex)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cached blob sha256:{hex}: {e}")),
        };
        let mut bytes = Vec::new();
        file.take(MAX_DOCUMENT + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cached blob sha256:{hex}: {e}"))?;
        if bytes.len() as u64 > MAX_DOCUMENT || sha256_hex(&bytes) != hex {
            return Err(format!(
                "cached blob sha256:{hex} does not match its digest (removed; pull again)"
            ));
        }
        Ok(Some(bytes))
    }

    /// Store bytes the caller has checked to have sha256 `hex`.
    pub fn put(&self, hex: &str, bytes: &[u8]) -> io::Result<()> {
        let (partial, mut file) = self.partial(hex)?;
        let written = file.write_all(bytes).and_then(|()| file.flush());
        drop(file);
        match written {
            Ok(()) => self.commit(&partial, hex),
            Err(e) => {
                let _ = fs::remove_file(&partial);
                Err(e)
            }
        }
    }

    /// A new file to download blob `hex` into (unique: two pulls of one
    /// blob at once each have their own).
    pub fn partial(&self, hex: &str) -> io::Result<(PathBuf, File)> {
        let path = self
            .dir
            .join(format!(".partial-{hex}-{:016x}", rand::random::<u64>()));
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
    }

    /// Move a complete, verified partial download into place.
    pub fn commit(&self, partial: &Path, hex: &str) -> io::Result<()> {
        fs::rename(partial, self.path(hex)).inspect_err(|_| {
            let _ = fs::remove_file(partial);
        })
    }

    /// Remove a blob; answers the bytes it held (0 when it was not there).
    pub fn remove(&self, hex: &str) -> io::Result<u64> {
        let size = self.size_of(hex).unwrap_or(0);
        match fs::remove_file(self.path(hex)) {
            Ok(()) => Ok(size),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Put blob `hex` at `to` as a hard link (the same file: nothing is
    /// copied, and removing the cache's name leaves this one working).
    pub fn link(&self, hex: &str, to: &Path) -> io::Result<()> {
        fs::hard_link(self.path(hex), to)
    }

    /// Every blob the cache holds, with its size.
    pub fn list(&self) -> Vec<(String, u64)> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let meta = e.metadata().ok()?;
                (digest_hex(&format!("sha256:{name}")).is_ok() && meta.is_file())
                    .then_some((name, meta.len()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_enter_whole_and_are_checked_when_read() {
        let dir = std::env::temp_dir().join(format!("grove-blobs-{}", std::process::id()));
        let blobs = Blobs::open(&dir).unwrap();
        let data = b"{\"hello\":1}";
        let hex = sha256_hex(data);
        assert_eq!(blobs.read_verified(&hex).unwrap(), None);
        blobs.put(&hex, data).unwrap();
        assert!(blobs.verify(&hex, Some(data.len() as u64)));
        assert!(!blobs.verify(&hex, Some(3)));
        assert_eq!(blobs.read_verified(&hex).unwrap().unwrap(), data);
        assert_eq!(blobs.list(), vec![(hex.clone(), data.len() as u64)]);
        // A blob that rotted on disk is refused.
        fs::write(blobs.path(&hex), b"{\"hello\":2}").unwrap();
        assert!(!blobs.verify(&hex, None));
        assert!(blobs
            .read_verified(&hex)
            .unwrap_err()
            .contains("does not match"));
        // Partials left behind go at the next open.
        let (partial, _) = blobs.partial(&hex).unwrap();
        assert!(partial.exists());
        Blobs::open(&dir).unwrap();
        assert!(!partial.exists());
        assert_eq!(blobs.remove(&hex).unwrap(), 11);
        assert_eq!(blobs.remove(&hex).unwrap(), 0);
        fs::remove_dir_all(&dir).unwrap();
    }
}
