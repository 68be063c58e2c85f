//! The image GC's decision, as a pure function of what the cache holds
//! (service.rs gathers it and carries the plan out). Candidates are the
//! cached images no container (and no create under way) uses, and the
//! unpacked layers no container uses that belong to no cached image (from
//! `oci:` and `docker-archive:` images). Least recently used first, a
//! candidate goes when:
//!
//! - `all` (`grove image prune --all`), or
//! - it is an image no name leads to any more (its tag moved on), or
//! - it was last used more than `max_age` seconds ago (0: no bound), or
//! - the cache (downloaded blobs and unpacked layers) is over `max_bytes`
//!   (0: no bound) — until it no longer is.
//!
//! What a container uses is never a candidate, so the cache may stay over
//! `max_bytes` while containers hold it.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
pub struct ImageView {
    pub digest: String,
    pub named: bool,
    pub in_use: bool,
    pub last_used: u64,
    /// Blob hexes and layer ids it names.
    pub blobs: Vec<String>,
    pub layers: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct LayerView {
    pub id: String,
    pub bytes: u64,
    pub containers: u32,
    /// 0: never used (the helper removes such layers itself).
    pub last_used: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_bytes: u64,
    pub max_age: u64,
    pub all: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Victim {
    Image(String),
    Layer(String),
}

/// What to remove, in order.
pub fn plan(
    images: &[ImageView],
    layers: &[LayerView],
    blob_sizes: &BTreeMap<String, u64>,
    policy: Policy,
    now: u64,
) -> Vec<Victim> {
    let layer_bytes: BTreeMap<&str, &LayerView> =
        layers.iter().map(|l| (l.id.as_str(), l)).collect();
    let mut total: u64 =
        blob_sizes.values().sum::<u64>() + layers.iter().map(|l| l.bytes).sum::<u64>();
    // How many images name each blob and layer: an image frees only what
    // it alone names.
    let mut blob_users: BTreeMap<&str, usize> = BTreeMap::new();
    let mut layer_users: BTreeMap<&str, usize> = BTreeMap::new();
    for i in images {
        for b in i.blobs.iter().collect::<BTreeSet<_>>() {
            *blob_users.entry(b).or_insert(0) += 1;
        }
        for l in i.layers.iter().collect::<BTreeSet<_>>() {
            *layer_users.entry(l).or_insert(0) += 1;
        }
    }
    // (dangling first, last used, victim, bytes it frees)
    let mut candidates: Vec<(bool, u64, Victim, u64)> = Vec::new();
    for i in images.iter().filter(|i| !i.in_use) {
        let blobs: u64 = i
            .blobs
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|b| blob_users.get(b.as_str()) == Some(&1))
            .filter_map(|b| blob_sizes.get(b))
            .sum();
        let unpacked: u64 = i
            .layers
            .iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|l| layer_users.get(l.as_str()) == Some(&1))
            .filter_map(|l| layer_bytes.get(l.as_str()))
            .filter(|l| l.containers == 0)
            .map(|l| l.bytes)
            .sum();
        candidates.push((
            i.named,
            i.last_used,
            Victim::Image(i.digest.clone()),
            blobs + unpacked,
        ));
    }
    for l in layers {
        if l.containers == 0 && l.last_used > 0 && !layer_users.contains_key(l.id.as_str()) {
            candidates.push((true, l.last_used, Victim::Layer(l.id.clone()), l.bytes));
        }
    }
    candidates.sort();
    let mut out = Vec::new();
    for (named, last_used, victim, bytes) in candidates {
        let old = policy.max_age > 0 && now.saturating_sub(last_used) > policy.max_age;
        let over = policy.max_bytes > 0 && total > policy.max_bytes;
        if policy.all || !named || old || over {
            total = total.saturating_sub(bytes);
            out.push(victim);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(d: &str, last_used: u64, blobs: &[&str], layers: &[&str]) -> ImageView {
        ImageView {
            digest: d.into(),
            named: true,
            in_use: false,
            last_used,
            blobs: blobs.iter().map(|s| s.to_string()).collect(),
            layers: layers.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn layer(id: &str, bytes: u64, containers: u32, last_used: u64) -> LayerView {
        LayerView {
            id: id.into(),
            bytes,
            containers,
            last_used,
        }
    }

    fn sizes(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    const NONE: Policy = Policy {
        max_bytes: 0,
        max_age: 0,
        all: false,
    };

    #[test]
    fn old_images_and_layers_go_and_used_ones_stay() {
        let mut used = image("used", 0, &["u"], &["lu"]);
        used.in_use = true;
        let images = [
            image("old", 10, &["o"], &["lo"]),
            image("new", 990, &["n"], &["ln"]),
            used,
        ];
        let layers = [
            layer("lo", 5, 0, 10),
            layer("ln", 5, 0, 990),
            layer("lu", 5, 1, 0),
            layer("archive", 5, 0, 20),
            layer("failed", 5, 0, 0),
        ];
        let blobs = sizes(&[("o", 1), ("n", 1), ("u", 1)]);
        let aged = Policy {
            max_age: 100,
            ..NONE
        };
        assert_eq!(
            plan(&images, &layers, &blobs, aged, 1000),
            [Victim::Image("old".into()), Victim::Layer("archive".into())]
        );
        assert!(plan(&images, &layers, &blobs, NONE, 1000).is_empty());
        let all = Policy { all: true, ..NONE };
        assert_eq!(
            plan(&images, &layers, &blobs, all, 1000),
            [
                Victim::Image("old".into()),
                Victim::Layer("archive".into()),
                Victim::Image("new".into())
            ]
        );
    }

    #[test]
    fn over_the_size_bound_the_least_recently_used_go_until_under() {
        let images = [
            image("a", 1, &["a", "shared"], &["la"]),
            image("b", 2, &["b", "shared"], &["lb"]),
            image("c", 3, &["c"], &["lc"]),
        ];
        let layers = [
            layer("la", 100, 0, 1),
            layer("lb", 100, 0, 2),
            layer("lc", 100, 0, 3),
        ];
        let blobs = sizes(&[("a", 10), ("b", 10), ("c", 10), ("shared", 50)]);
        // 380 in all: removing a frees 110 (the shared blob stays), b 110.
        let bound = |max_bytes| Policy { max_bytes, ..NONE };
        assert_eq!(
            plan(&images, &layers, &blobs, bound(300), 9),
            [Victim::Image("a".into())]
        );
        assert_eq!(
            plan(&images, &layers, &blobs, bound(200), 9),
            [Victim::Image("a".into()), Victim::Image("b".into())]
        );
        assert!(plan(&images, &layers, &blobs, bound(380), 9).is_empty());
    }

    #[test]
    fn images_no_name_leads_to_go_first() {
        let mut dangling = image("d", 50, &["d"], &[]);
        dangling.named = false;
        let images = [image("named", 1, &["n"], &[]), dangling];
        assert_eq!(
            plan(&images, &[], &sizes(&[("n", 1), ("d", 1)]), NONE, 100),
            [Victim::Image("d".into())]
        );
    }
}
