//! The image cache's operations on groved's side: a create from a
//! registry image (pulled into the cache only when the cache lacks it),
//! `Images.pull/list/inspect/remove/prune` (rpc/images.rs), and the GC
//! after pulls, after destroys and every `image_gc_interval`.

use super::catalog::{cache_name, ImageRecord};
use super::gc::{self, ImageView, LayerView, Policy, Victim};
use super::{now, Lease};
use crate::containers::{Container, Grove};
use crate::error::{ApiError, ApiResult, Code};
use crate::registry::{self, pull, Event, PullError};
use grove_schema::api_capnp::pull_progress;
use grove_schema::auth_file::Login;
use grove_schema::helper::{self, HostPath, LayerId, LayerInfo, Request, Response, RootfsSource};
use grove_schema::image_ref::Reference;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

/// A registry image to create from: the URI as the spec gave it, parsed,
/// the login, and whom to tell how the download advances.
pub struct Pull<'a> {
    pub uri: &'a str,
    pub reference: Reference,
    pub login: Option<Login>,
    pub progress: Option<pull_progress::Client>,
}

/// What a `remove` or `prune` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Each image's label: "digest name, name…".
    pub images: Vec<String>,
    pub layers: Vec<String>,
    pub freed_bytes: u64,
}

/// One cached image as `list` shows it.
pub struct Summary {
    pub record: ImageRecord,
    pub downloaded_bytes: u64,
    pub unpacked_bytes: u64,
    pub containers: u32,
}

/// A config's process settings, for `inspect`.
#[derive(serde::Deserialize, Default)]
pub struct ProcessConfig {
    #[serde(rename = "Env", default)]
    pub env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    pub working_dir: Option<String>,
    #[serde(rename = "User", default)]
    pub user: Option<String>,
    #[serde(rename = "Entrypoint", default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    pub cmd: Option<Vec<String>>,
}

pub struct Detail {
    pub summary: Summary,
    pub process: ProcessConfig,
    /// Unpacked layers by id (hex), with their bytes.
    pub unpacked: BTreeMap<String, u64>,
}

fn pull_error(e: PullError) -> ApiError {
    match e {
        PullError::Invalid(m) => ApiError::new(Code::InvalidSpec, m),
        PullError::Unavailable(m) => ApiError::new(Code::ServiceUnavailable, m),
    }
}

/// Relay a pull's events to the client's PullProgress, newest first: the
/// events that piled up while a call was under way are folded into one.
/// A client without `blob` gets `update` alone; one that stops listening
/// stops getting either (the pull goes on).
async fn report(
    sink: pull_progress::Client,
    mut events: tokio::sync::mpsc::UnboundedReceiver<Event>,
) {
    let mut blobs_ok = true;
    while let Some(first) = events.recv().await {
        let mut total = None;
        let mut blobs: Vec<(String, u64, u64, bool)> = Vec::new();
        let mut take = |event: Event| match event {
            Event::Total { done, total: t } => total = Some((done, t)),
            Event::Blob {
                digest,
                done,
                total,
                cached,
            } => match blobs.iter_mut().find(|b| b.0 == digest) {
                Some(b) => *b = (digest, done, total, cached),
                None => blobs.push((digest, done, total, cached)),
            },
        };
        take(first);
        while let Ok(event) = events.try_recv() {
            take(event);
        }
        if blobs_ok {
            for (digest, done, total, cached) in blobs {
                let mut request = sink.blob_request();
                let mut p = request.get();
                p.set_digest(&digest);
                p.set_bytes_done(done);
                p.set_bytes_total(total);
                p.set_cached(cached);
                if let Err(e) = request.send().promise.await {
                    // A client without `blob` (unimplemented) still gets
                    // `update`.
                    tracing::debug!(error = %e, "PullProgress.blob");
                    blobs_ok = false;
                    break;
                }
            }
        }
        if let Some((done, total)) = total {
            let mut request = sink.update_request();
            request.get().set_bytes_done(done);
            request.get().set_bytes_total(total);
            if request.send().await.is_err() {
                return;
            }
        }
    }
}

impl Grove {
    /// The cached image `r` names, pulled first when the cache lacks it
    /// (or `refresh`: a tag is asked of the registry again), leased against
    /// the GC.
    pub async fn cached_image(
        self: &Rc<Self>,
        uri: &str,
        r: &Reference,
        login: Option<Login>,
        progress: Option<pull_progress::Client>,
        refresh: bool,
    ) -> ApiResult<(ImageRecord, Lease)> {
        let images = self.images.clone();
        let name = cache_name(r);
        // One pull of a name at a time: the second finds the first's.
        let lock = images.pull_lock(&name);
        let _pulling = lock.lock().await;
        if !refresh {
            if let Some(record) = self.usable(&name).await {
                let lease = images.lease(&record.digest);
                tracing::info!(image = uri, digest = %record.digest, "from the image cache");
                if let Some(sink) = progress {
                    // Everything is cached: one report saying so.
                    let (sender, events) = tokio::sync::mpsc::unbounded_channel();
                    let p = registry::Progress::new(Some(sender));
                    let sizes: Vec<(String, u64)> = std::iter::once(&record.config)
                        .chain(record.layers.iter().map(|l| &l.blob))
                        .map(|b| (b.digest.clone(), b.size))
                        .collect();
                    let total = sizes.iter().map(|(_, s)| s).sum();
                    for (digest, size) in &sizes {
                        p.blob(digest, *size, *size, true);
                    }
                    p.start(total, total);
                    drop(p);
                    report(sink, events).await;
                }
                return Ok((record, lease));
            }
        }
        tracing::info!(image = uri, "pulling");
        let (sender, events) = tokio::sync::mpsc::unbounded_channel::<Event>();
        let reporter = progress.map(|sink| tokio::task::spawn_local(report(sink, events)));
        let (net, config, auth_file, blobs) = (
            images.net.clone(),
            images.config.clone(),
            images.auth_file.clone(),
            images.blobs.clone(),
        );
        let (owned_uri, reference) = (uri.to_string(), r.clone());
        let pulled = tokio::task::spawn_blocking(move || {
            let progress = registry::Progress::new(Some(sender));
            let request = pull::Request {
                uri: &owned_uri,
                reference: &reference,
                login,
                auth_file: auth_file.as_deref().map(Vec::as_slice),
            };
            pull::pull(&net, &config, &request, &blobs, &progress)
        })
        .await
        .map_err(ApiError::internal)?;
        if let Some(reporter) = reporter {
            let _ = reporter.await;
        }
        let pulled = pulled.map_err(pull_error)?;
        let mut record = pulled.record;
        let t = now();
        record.pulled_at = t;
        record.last_used = t;
        let digest = record.digest.clone();
        let lease = images.lease(&digest);
        {
            let mut catalog = images.catalog.borrow_mut();
            catalog.insert(record, name.clone());
            catalog
                .save()
                .map_err(|e| ApiError::internal(format!("saving the image catalog: {e}")))?;
        }
        let record = images
            .catalog
            .borrow()
            .get(&digest)
            .cloned()
            .ok_or_else(|| ApiError::internal("the image left the catalog"))?;
        tracing::info!(
            image = uri,
            %digest,
            downloaded = pulled.downloaded,
            source = %record.source,
            pulled_since_start = registry::pulled_bytes(),
            "pulled"
        );
        if pulled.downloaded > 0 {
            self.gc_soon();
        }
        Ok((record, lease))
    }

    /// The record `name` leads to, if its manifest and config are in the
    /// cache and check out and every layer blob is there at its size (the
    /// helper checks the layers it unpacks against their digests).
    async fn usable(&self, name: &str) -> Option<ImageRecord> {
        let record = self.images.catalog.borrow().by_name(name).cloned()?;
        let blobs = self.images.blobs.clone();
        let check = record.clone();
        let whole = tokio::task::spawn_blocking(move || {
            let docs = [&check.digest, &check.config.digest];
            let docs_ok = docs
                .iter()
                .all(|d| matches!(blobs.read_verified(&d["sha256:".len()..]), Ok(Some(_))));
            docs_ok
                && check
                    .layers
                    .iter()
                    .all(|l| blobs.size_of(&l.blob.digest["sha256:".len()..]) == Some(l.blob.size))
        })
        .await
        .unwrap_or(false);
        if !whole {
            tracing::warn!(image = name, digest = %record.digest, "cached image incomplete or corrupt; pulling again");
        }
        whole.then_some(record)
    }

    /// Create `container` from a cached image: an OCI layout of hard links
    /// to its blobs in the downloads dir, which the helper unpacks from
    /// (checking every digest again) and groved removes afterwards.
    pub async fn build_from_cache(
        &self,
        container: &Container,
        record: &ImageRecord,
        limits: helper::Limits,
        net: &crate::containers::NetSpec,
        isolation: &crate::containers::Isolation,
    ) -> ApiResult<()> {
        let downloads = self.config.state_dir.join("downloads");
        let blobs = self.images.blobs.clone();
        let r = record.clone();
        let dir = tokio::task::spawn_blocking(move || layout(&blobs, &r, &downloads))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::internal(format!("laying out the cached image: {e}")))?;
        let rootfs = match dir.to_str().map(HostPath::new) {
            Some(Ok(path)) => Ok(RootfsSource::OciLayout {
                dir: path,
                tag: helper::ImageTag::new("latest").expect("latest is a valid tag"),
            }),
            _ => Err(ApiError::internal(format!(
                "download dir {} is not a valid path",
                dir.display()
            ))),
        };
        container.record.borrow_mut().image_digest = record.digest.clone();
        let built = match rootfs {
            Ok(rootfs) => self.build(container, rootfs, limits, net, isolation).await,
            Err(e) => Err(e),
        };
        let removed = tokio::task::spawn_blocking(move || {
            std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))
        })
        .await;
        if let Ok(Err(e)) = removed {
            tracing::warn!(error = %e, "removing an image layout");
        }
        built
    }

    /// A create from a registry image: from the cache (pulled first when
    /// needed). When the helper refuses a cached blob (it rotted on disk),
    /// the cache drops what does not check out and pulls again, once.
    pub async fn create_from_registry(
        self: &Rc<Self>,
        container: &Container,
        pull: Pull<'_>,
        limits: helper::Limits,
        net: &crate::containers::NetSpec,
        isolation: &crate::containers::Isolation,
    ) -> ApiResult<()> {
        let Pull {
            uri,
            reference,
            login,
            progress,
        } = pull;
        let r = &reference;
        let (record, lease) = self
            .cached_image(uri, r, login.clone(), progress, false)
            .await?;
        let built = self
            .build_from_cache(container, &record, limits.clone(), net, isolation)
            .await;
        let (record, _lease) = match built {
            Err(e) if e.code == Code::InvalidSpec && self.drop_corrupt(&record).await > 0 => {
                drop(lease);
                tracing::warn!(image = uri, "cached blobs were corrupt; pulling again");
                let (record, lease) = self.cached_image(uri, r, login, None, true).await?;
                self.build_from_cache(container, &record, limits, net, isolation)
                    .await?;
                (record, lease)
            }
            Err(e) => return Err(e),
            Ok(()) => (record, lease),
        };
        self.images.touch(&record.digest);
        Ok(())
    }

    /// Check every blob of an image against its digest, removing those
    /// that fail; answers how many did.
    async fn drop_corrupt(&self, record: &ImageRecord) -> usize {
        let blobs = self.images.blobs.clone();
        let hexes = record.blob_hexes();
        tokio::task::spawn_blocking(move || {
            let mut bad = 0;
            for hex in hexes {
                if blobs.size_of(&hex).is_some() && !blobs.verify(&hex, None) {
                    tracing::warn!(blob = %hex, "cached blob does not match its digest; removed");
                    let _ = blobs.remove(&hex);
                    bad += 1;
                }
            }
            bad
        })
        .await
        .unwrap_or(0)
    }

    /// Containers (not being destroyed) per image digest.
    fn image_users(&self) -> BTreeMap<String, u32> {
        let mut users = BTreeMap::new();
        for c in self.all_containers() {
            let digest = c.record.borrow().image_digest.clone();
            if !digest.is_empty() {
                *users.entry(digest).or_insert(0) += 1;
            }
        }
        users
    }

    /// Every unpacked layer in the helper's store.
    pub async fn helper_layers(&self) -> ApiResult<Vec<LayerInfo>> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            match self
                .helper
                .call(&Request::ListLayers {
                    after: after.clone(),
                })
                .await?
            {
                Response::Layers { layers, more } => {
                    after = layers.last().map(|l| l.id.clone());
                    all.extend(layers);
                    if !more || after.is_none() {
                        return Ok(all);
                    }
                }
                other => {
                    return Err(ApiError::internal(format!(
                        "unexpected answer to ListLayers: {other:?}"
                    )))
                }
            }
        }
    }

    fn summaries(&self, layers: &[LayerInfo]) -> Vec<Summary> {
        let users = self.image_users();
        let unpacked: BTreeMap<&str, u64> =
            layers.iter().map(|l| (l.id.as_str(), l.bytes)).collect();
        let catalog = self.images.catalog.borrow();
        catalog
            .all()
            .map(|r| Summary {
                downloaded_bytes: r
                    .blob_hexes()
                    .iter()
                    .filter_map(|h| self.images.blobs.size_of(h))
                    .sum(),
                unpacked_bytes: r
                    .layer_ids()
                    .iter()
                    .filter_map(|id| unpacked.get(id.as_str()))
                    .sum(),
                containers: users.get(&r.digest).copied().unwrap_or(0),
                record: r.clone(),
            })
            .collect()
    }

    pub async fn image_list(&self) -> ApiResult<(Vec<Summary>, Vec<LayerInfo>)> {
        let layers = self.helper_layers().await?;
        Ok((self.summaries(&layers), layers))
    }

    pub async fn image_inspect(&self, name: &str) -> ApiResult<Detail> {
        let digest = self.resolve_image(name)?;
        let layers = self.helper_layers().await?;
        let summary = self
            .summaries(&layers)
            .into_iter()
            .find(|s| s.record.digest == digest)
            .ok_or_else(|| ApiError::new(Code::InvalidSpec, format!("image {name}: gone")))?;
        let config_hex = summary.record.config.digest["sha256:".len()..].to_string();
        let config = self
            .images
            .blobs
            .read_verified(&config_hex)
            .map_err(|e| ApiError::new(Code::InvalidSpec, format!("image {name}: {e}")))?
            .unwrap_or_default();
        #[derive(serde::Deserialize, Default)]
        struct Outer {
            #[serde(default)]
            config: Option<ProcessConfig>,
        }
        let process = serde_json::from_slice::<Outer>(&config)
            .ok()
            .and_then(|o| o.config)
            .unwrap_or_default();
        Ok(Detail {
            summary,
            process,
            unpacked: layers
                .into_iter()
                .map(|l| (l.id.to_string(), l.bytes))
                .collect(),
        })
    }

    fn resolve_image(&self, name: &str) -> ApiResult<String> {
        self.images
            .catalog
            .borrow()
            .resolve(name)
            .map(|r| r.digest.clone())
            .map_err(|e| ApiError::invalid("name", e))
    }

    /// `Images.pull`: into the cache, a tag asked of the registry again.
    pub async fn image_pull(
        self: &Rc<Self>,
        uri: &str,
        login: Option<Login>,
        progress: Option<pull_progress::Client>,
    ) -> ApiResult<Summary> {
        let r = grove_schema::image_ref::parse_name(uri)
            .map_err(|e| ApiError::invalid("image.uri", e))?;
        let (record, _lease) = self.cached_image(uri, &r, login, progress, true).await?;
        let layers = self.helper_layers().await.unwrap_or_default();
        self.summaries(&layers)
            .into_iter()
            .find(|s| s.record.digest == record.digest)
            .ok_or_else(|| ApiError::internal("the pulled image left the catalog"))
    }

    /// `Images.remove`: an image no container uses.
    pub async fn image_remove(&self, name: &str) -> ApiResult<Removed> {
        let _gc = self.images.gc_lock.lock().await;
        let digest = self.resolve_image(name)?;
        let users = self.image_users().get(&digest).copied().unwrap_or(0);
        if users > 0 || self.images.leased(&digest) {
            let handles: Vec<String> = self
                .all_containers()
                .iter()
                .filter(|c| c.record.borrow().image_digest == digest)
                .map(|c| c.handle.to_string())
                .collect();
            return Err(ApiError::new(
                Code::InvalidState,
                format!(
                    "image {name} ({digest}) is in use by {}",
                    if handles.is_empty() {
                        "a create under way".to_string()
                    } else {
                        handles.join(", ")
                    }
                ),
            ));
        }
        let layers = self.helper_layers().await?;
        let mut removed = Removed::default();
        self.remove_victims(&[Victim::Image(digest)], &layers, &mut removed)
            .await;
        Ok(removed)
    }

    /// `Images.prune`: the GC policy now, or (`all`) every image and layer
    /// no container uses.
    pub async fn image_prune(&self, all: bool) -> ApiResult<Removed> {
        let _gc = self.images.gc_lock.lock().await;
        self.collect_images(all).await
    }

    /// One GC pass (the caller holds `gc_lock`).
    async fn collect_images(&self, all: bool) -> ApiResult<Removed> {
        let layers = self.helper_layers().await?;
        let users = self.image_users();
        let blob_sizes: BTreeMap<String, u64> = self.images.blobs.list().into_iter().collect();
        let views: Vec<ImageView> = self
            .images
            .catalog
            .borrow()
            .all()
            .map(|r| ImageView {
                digest: r.digest.clone(),
                named: !r.names.is_empty(),
                in_use: users.contains_key(&r.digest) || self.images.leased(&r.digest),
                last_used: r.last_used,
                blobs: r.blob_hexes(),
                layers: r.layer_ids(),
            })
            .collect();
        let layer_views: Vec<LayerView> = layers
            .iter()
            .map(|l| LayerView {
                id: l.id.to_string(),
                bytes: l.bytes,
                containers: l.containers,
                last_used: l.last_used,
            })
            .collect();
        let policy = Policy {
            max_bytes: self.images.config.max_bytes,
            max_age: self.images.config.max_age,
            all,
        };
        let victims = gc::plan(&views, &layer_views, &blob_sizes, policy, now());
        let mut removed = Removed::default();
        self.remove_victims(&victims, &layers, &mut removed).await;
        // Blobs no record names (a crash between a download and the
        // catalog), unless a pull, whose blobs are not named yet, is on.
        if !self.images.pulling() {
            let named = self.images.catalog.borrow().blobs_named();
            for (hex, _) in self.images.blobs.list() {
                if !named.contains(&hex) {
                    removed.freed_bytes += self.images.blobs.remove(&hex).unwrap_or(0);
                }
            }
        }
        if !removed.images.is_empty() || !removed.layers.is_empty() {
            tracing::info!(
                images = removed.images.len(),
                layers = removed.layers.len(),
                freed = removed.freed_bytes,
                all,
                "image GC"
            );
        }
        Ok(removed)
    }

    /// Remove images (their names, the blobs and unpacked layers no other
    /// cached image names) and layers.
    async fn remove_victims(
        &self,
        victims: &[Victim],
        layers: &[LayerInfo],
        removed: &mut Removed,
    ) {
        let in_store: BTreeMap<&str, &LayerInfo> =
            layers.iter().map(|l| (l.id.as_str(), l)).collect();
        for victim in victims {
            let layer_ids: Vec<String> = match victim {
                Victim::Layer(id) => vec![id.clone()],
                Victim::Image(digest) => {
                    let Some(record) = self.images.catalog.borrow_mut().remove(digest) else {
                        continue;
                    };
                    let (named_blobs, named_layers): (BTreeSet<String>, BTreeSet<String>) = {
                        let catalog = self.images.catalog.borrow();
                        (
                            catalog.blobs_named(),
                            catalog.all().flat_map(|r| r.layer_ids()).collect(),
                        )
                    };
                    for hex in record.blob_hexes() {
                        if !named_blobs.contains(&hex) {
                            match self.images.blobs.remove(&hex) {
                                Ok(n) => removed.freed_bytes += n,
                                Err(e) => {
                                    tracing::warn!(blob = %hex, error = %e, "removing a cached blob")
                                }
                            }
                        }
                    }
                    removed.images.push(record.label());
                    record
                        .layer_ids()
                        .into_iter()
                        .filter(|id| !named_layers.contains(id))
                        .collect()
                }
            };
            for id in layer_ids {
                let Some(info) = in_store.get(id.as_str()) else {
                    continue;
                };
                if info.containers > 0 {
                    continue;
                }
                let Ok(layer) = LayerId::new(id.clone()) else {
                    continue;
                };
                match self.helper.call(&Request::RemoveLayer { id: layer }).await {
                    Ok(Response::LayerRemoved { bytes }) => {
                        removed.freed_bytes += bytes;
                        removed.layers.push(format!("sha256:{id}"));
                    }
                    Ok(other) => tracing::warn!(layer = %id, answer = ?other, "RemoveLayer"),
                    // In use after all, an unpack under way, layer_gc off:
                    // a later pass tries again.
                    Err(e) => tracing::info!(layer = %id, error = %e, "layer kept"),
                }
            }
        }
        if let Err(e) = self.images.catalog.borrow().save() {
            tracing::warn!(error = %e, "saving the image catalog");
        }
    }

    /// A container from an image is gone: the image's last use is now, and
    /// the GC may have work.
    pub fn image_released(&self, digest: &str) {
        if digest.is_empty() {
            return;
        }
        self.images.touch(digest);
        self.gc_soon();
    }

    /// Ask for a GC pass soon, off the caller's path (`image_gc_loop`).
    pub fn gc_soon(&self) {
        self.images.gc_wanted.notify_one();
    }

    /// The GC passes: when asked (after pulls and destroys) and every
    /// `image_gc_interval` seconds (0: only when asked).
    pub async fn image_gc_loop(self: Rc<Self>) {
        let every = self.images.config.gc_interval;
        let mut ticks = tokio::time::interval(Duration::from_secs(every.max(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.images.gc_wanted.notified() => {}
                _ = ticks.tick(), if every > 0 => {}
            }
            let _gc = self.images.gc_lock.lock().await;
            if let Err(e) = self.collect_images(false).await {
                tracing::warn!(error = %e, "image GC");
            }
        }
    }
}

/// An OCI layout in a new dir beneath `downloads`: the image's manifest as
/// the one entry of index.json, and its blobs as hard links to the cache's.
fn layout(
    blobs: &super::blobs::Blobs,
    r: &ImageRecord,
    downloads: &Path,
) -> std::io::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(downloads)?;
    let dir = downloads.join(format!("image-{:016x}", rand::random::<u64>()));
    let result = (|| {
        let blob_dir = dir.join("blobs/sha256");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&blob_dir)?;
        for hex in r.blob_hexes() {
            let to = blob_dir.join(&hex);
            if !to.exists() {
                blobs.link(&hex, &to)?;
            }
        }
        let manifest_size = blobs.size_of(&r.digest["sha256:".len()..]).unwrap_or(0);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": r.media_type,
                "digest": r.digest,
                "size": manifest_size,
            }]
        });
        std::fs::write(dir.join("index.json"), index.to_string())?;
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
    })();
    match result {
        Ok(()) => Ok(dir),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}
