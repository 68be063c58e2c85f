//! The layer store's bookkeeping: which unpacked layers a container has
//! used, when last, and how big they are; listing them and removing one on
//! groved's request (groved's image GC decides which; see README "Image
//! cache"). A layer no container ever used (what a failed create left) is
//! removed by the helper itself (`Helper::collect_layers`).
//!
//! `depot/.layers/used/<id>` is a layer's stamp: written when a container
//! using it is created and again when it is destroyed (so its mtime is
//! the last use), holding the layer's size, "<bytes> <inodes>\n". Ids come
//! from readdir of the helper's own store, or from a request as a
//! validated `LayerId` (64 hex digits: one path component).

use crate::disk::ImageSize;
use crate::fs;
use crate::image::{self, ALGO_DIR, LAYERS_DIR};
use grove_schema::helper::{ErrorKind, HelperError, LayerId, LayerInfo, LAYERS_PER_PAGE};
use nix::errno::Errno;
use nix::fcntl::AtFlags;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// The stamps, beside the store (`.layers/sha256`).
pub const USED_DIR: &str = "used";

fn system(what: &str, e: impl std::fmt::Display) -> HelperError {
    HelperError::new(ErrorKind::System, format!("{what}: {e}"))
}

/// Open depot/.layers/used, creating it (and .layers) when `create`;
/// `None` when it does not exist and may not be made.
fn open_used(depot: BorrowedFd, create: bool) -> Result<Option<OwnedFd>, HelperError> {
    if create {
        fs::mkdir_at(depot, LAYERS_DIR, 0o700, true).map_err(|e| system("mkdir .layers", e))?;
    }
    let layers = match fs::open_dir(depot, LAYERS_DIR) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) if !create => return Ok(None),
        Err(e) => return Err(system("open .layers", e)),
    };
    if create {
        fs::mkdir_at(layers.as_fd(), USED_DIR, 0o700, true)
            .map_err(|e| system("mkdir .layers/used", e))?;
    }
    match fs::open_dir(layers.as_fd(), USED_DIR) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) if !create => Ok(None),
        Err(e) => Err(system("open .layers/used", e)),
    }
}

/// Note a use of layer `id` now, with its size.
pub fn stamp(depot: BorrowedFd, id: &str, size: ImageSize) -> Result<(), HelperError> {
    let used = open_used(depot, true)?.ok_or_else(|| system(".layers/used", "missing"))?;
    let text = format!("{} {}\n", size.bytes, size.inodes);
    fs::write_file_at(used.as_fd(), id, text.as_bytes(), 0o600)
        .map_err(|e| system(&format!("stamping layer {id}"), e))
}

/// A layer's stamp: when it was last used (Unix seconds) and its size.
pub struct Stamp {
    pub last_used: u64,
    pub size: ImageSize,
}

fn read_stamp(used: BorrowedFd, id: &str) -> Option<Stamp> {
    let st =
        nix::sys::stat::fstatat(Some(used.as_raw_fd()), id, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    let text = fs::read_file_at(used, id).ok()?;
    let mut words = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    let (Some(Some(bytes)), Some(Some(inodes))) = (words.next(), words.next()) else {
        return None;
    };
    Some(Stamp {
        last_used: u64::try_from(st.st_mtime).unwrap_or(0),
        size: ImageSize { bytes, inodes },
    })
}

/// The stamps of every stamped layer.
pub fn stamps(depot: BorrowedFd) -> Result<BTreeMap<String, Stamp>, HelperError> {
    let Some(used) = open_used(depot, false)? else {
        return Ok(BTreeMap::new());
    };
    let mut out = BTreeMap::new();
    for name in fs::list_dir(used.as_fd()).map_err(|e| system("reading .layers/used", e))? {
        let name = name.to_string_lossy().into_owned();
        if image::is_layer_id(&name) {
            if let Some(s) = read_stamp(used.as_fd(), &name) {
                out.insert(name, s);
            }
        }
    }
    Ok(out)
}

/// The ids of the complete layers in the store (temp dirs left out), sorted.
pub fn ids(depot: BorrowedFd) -> Result<Vec<String>, HelperError> {
    let store = match fs::open_dir(depot, LAYERS_DIR)
        .and_then(|layers| fs::open_dir(layers.as_fd(), ALGO_DIR))
    {
        Ok(store) => store,
        Err(Errno::ENOENT) => return Ok(Vec::new()),
        Err(e) => return Err(system("open the layer store", e)),
    };
    let mut ids: Vec<String> = fs::list_dir(store.as_fd())
        .map_err(|e| system("reading the layer store", e))?
        .into_iter()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| image::is_layer_id(n))
        .collect();
    ids.sort();
    Ok(ids)
}

/// One page of the store after `after`: each layer with its stamp (or,
/// unstamped, the size `measured` knows, else 0) and how many containers
/// use it.
pub fn page(
    depot: BorrowedFd,
    after: Option<&LayerId>,
    users: &BTreeMap<String, u32>,
    measured: &dyn Fn(&str) -> Option<ImageSize>,
) -> Result<(Vec<LayerInfo>, bool), HelperError> {
    let stamps = stamps(depot)?;
    let ids: Vec<String> = ids(depot)?
        .into_iter()
        .filter(|id| after.is_none_or(|a| id.as_str() > a.as_str()))
        .collect();
    let more = ids.len() > LAYERS_PER_PAGE;
    let layers = ids
        .into_iter()
        .take(LAYERS_PER_PAGE)
        .map(|id| {
            let stamp = stamps.get(&id);
            let size = stamp
                .map(|s| s.size)
                .or_else(|| measured(&id))
                .unwrap_or_default();
            LayerInfo {
                containers: users.get(&id).copied().unwrap_or(0),
                last_used: stamp.map_or(0, |s| s.last_used),
                bytes: size.bytes,
                inodes: size.inodes,
                id: LayerId::new(id).expect("a store name checked by is_layer_id"),
            }
        })
        .collect();
    Ok((layers, more))
}

/// Remove a layer (its tree through the trash) and its stamp; answers the
/// bytes its stamp recorded. The caller has checked that no container
/// uses it.
pub fn remove(
    depot: BorrowedFd,
    id: &LayerId,
    trash: &crate::trash::Trash,
) -> Result<u64, HelperError> {
    let store = image::open_store(depot)?;
    match nix::sys::stat::fstatat(
        Some(store.as_raw_fd()),
        id.as_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(_) => {}
        Err(Errno::ENOENT) => {
            return Err(HelperError::new(
                ErrorKind::NotFound,
                format!("no layer {id} in the layer store"),
            ))
        }
        Err(e) => return Err(system(&format!("layer {id}"), e)),
    }
    let bytes = match open_used(depot, false)? {
        Some(used) => read_stamp(used.as_fd(), id.as_str()).map_or(0, |s| s.size.bytes),
        None => 0,
    };
    trash
        .discard(store.as_fd(), id.as_str(), std::time::Duration::ZERO)
        .map_err(|e| system(&format!("removing layer {id}"), e))?;
    forget(depot, id.as_str());
    log_info!("grove-helper: layer {id} removed ({bytes} bytes)");
    Ok(bytes)
}

/// Remove a layer's stamp (the layer is gone).
pub fn forget(depot: BorrowedFd, id: &str) {
    if let Ok(Some(used)) = open_used(depot, false) {
        match nix::unistd::unlinkat(
            Some(used.as_raw_fd()),
            id,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => log_warn!("grove-helper: removing the stamp of layer {id}: {e}"),
        }
    }
}

/// Stamps whose layer is gone (removed by hand, or an interrupted removal).
pub fn forget_orphans(depot: BorrowedFd) {
    let (Ok(stamps), Ok(ids)) = (stamps(depot), ids(depot)) else {
        return;
    };
    for id in stamps.keys() {
        if ids.binary_search(id).is_err() {
            forget(depot, id);
        }
    }
}
