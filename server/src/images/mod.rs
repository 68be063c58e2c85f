//! groved's image cache (README "Image cache"): registry images pulled
//! into `<state_dir>/images` (blobs.rs, catalog.rs) and unpacked by the
//! helper into the depot's layer store at their first create; both kept
//! until `grove image rm`/`prune` or the GC policy (gc.rs) removes them.
//! service.rs has the operations, which also talk to the helper.

pub mod blobs;
pub mod catalog;
pub mod gc;
pub mod service;

use crate::config::Config;
use crate::image_config::ImageConfig;
use crate::registry::net::Net;
use blobs::Blobs;
use catalog::Catalog;
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::rc::Rc;
use std::sync::Arc;

pub struct Images {
    pub blobs: Blobs,
    pub catalog: RefCell<Catalog>,
    pub net: Arc<Net>,
    pub config: Arc<ImageConfig>,
    /// `registry_auth_file`'s contents, read at start-up.
    pub auth_file: Option<Arc<Vec<u8>>>,
    /// Images (by digest) a create is using: the GC leaves them.
    leases: RefCell<HashMap<String, usize>>,
    /// Pulls under way (their blobs are not in the catalog yet: the GC
    /// leaves unnamed blobs alone meanwhile), one per cache name.
    pulls: RefCell<HashMap<String, Rc<tokio::sync::Mutex<()>>>>,
    /// One GC pass at a time.
    pub gc_lock: tokio::sync::Mutex<()>,
    /// Wakes the GC loop (`Grove::gc_soon`).
    pub gc_wanted: tokio::sync::Notify,
}

impl Images {
    /// Open the cache and read what reaching registries needs (CA files,
    /// the auth file, proxy variables): before groved confines itself.
    pub fn open(config: &Config) -> Result<Images, String> {
        let dir = config.state_dir.join("images");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let blobs = Blobs::open(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let net = Net::load(&config.insecure_registries, &config.images)?;
        let auth_file = match &config.images.auth_file {
            Some(path) => {
                let bytes = std::fs::read(path)
                    .map_err(|e| format!("registry_auth_file {}: {e}", path.display()))?;
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map_err(|e| format!("registry_auth_file {}: {e}", path.display()))?;
                Some(Arc::new(bytes))
            }
            None => None,
        };
        let catalog = Catalog::load(&dir);
        tracing::info!(
            images = catalog.all().count(),
            roots = %net.roots_from,
            "image cache opened"
        );
        Ok(Images {
            blobs,
            catalog: RefCell::new(catalog),
            net: Arc::new(net),
            config: Arc::new(config.images.clone()),
            auth_file,
            leases: RefCell::new(HashMap::new()),
            pulls: RefCell::new(HashMap::new()),
            gc_lock: tokio::sync::Mutex::new(()),
            gc_wanted: tokio::sync::Notify::new(),
        })
    }

    /// Hold `digest` against the GC until the lease is dropped.
    pub fn lease(self: &Rc<Self>, digest: &str) -> Lease {
        *self
            .leases
            .borrow_mut()
            .entry(digest.to_string())
            .or_insert(0) += 1;
        Lease {
            images: self.clone(),
            digest: digest.to_string(),
        }
    }

    pub fn leased(&self, digest: &str) -> bool {
        self.leases.borrow().get(digest).is_some_and(|n| *n > 0)
    }

    /// The lock that makes pulls of one name wait for each other.
    pub fn pull_lock(&self, name: &str) -> Rc<tokio::sync::Mutex<()>> {
        let mut pulls = self.pulls.borrow_mut();
        // Locks nobody holds or waits for go (one per name ever pulled
        // would pile up).
        pulls.retain(|_, m| Rc::strong_count(m) > 1);
        pulls
            .entry(name.to_string())
            .or_insert_with(|| Rc::new(tokio::sync::Mutex::new(())))
            .clone()
    }

    /// Whether a pull is under way.
    pub fn pulling(&self) -> bool {
        self.pulls.borrow().values().any(|m| m.try_lock().is_err())
    }

    /// Note a use of an image now and save the catalog.
    pub fn touch(&self, digest: &str) {
        let mut catalog = self.catalog.borrow_mut();
        if let Some(r) = catalog.get_mut(digest) {
            r.last_used = now();
        }
        if let Err(e) = catalog.save() {
            tracing::warn!(error = %e, "saving the image catalog");
        }
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub struct Lease {
    images: Rc<Images>,
    digest: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut leases = self.images.leases.borrow_mut();
        if let Some(n) = leases.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                leases.remove(&self.digest);
            }
        }
    }
}
