//! groved's configuration keys for registries and the image cache (see
//! README "Configuration"); `config.rs` hands each of these keys here.

use grove_schema::conf::Entry;
use grove_schema::image_ref::canonical_host;
use std::path::PathBuf;

/// The keys this module reads.
pub const KEYS: [&str; 7] = [
    "image_cache_max_bytes",
    "image_cache_max_age",
    "image_gc_interval",
    "registry_mirrors",
    "registry_fallback",
    "registry_ca",
    "registry_auth_file",
];

/// Where `registry_auth_file` points by default (read when it exists).
pub const DEFAULT_AUTH_FILE: &str = "/etc/grove/auth.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// The cache (downloaded blobs and unpacked layers together) is
    /// trimmed to this many bytes, least recently used images first
    /// (`image_cache_max_bytes`, default 10 GiB; 0: no bound).
    pub max_bytes: u64,
    /// Images and layers unused for this many seconds go
    /// (`image_cache_max_age`, default 7 days; 0: no bound).
    pub max_age: u64,
    /// Seconds between automatic GC passes (`image_gc_interval`, default
    /// 600; 0: only after pulls and destroys).
    pub gc_interval: u64,
    /// Mirrors tried before a registry, in order, by the registry's
    /// canonical host (`registry_mirrors = ["docker.io=mirror:5000"]`).
    pub mirrors: Vec<(String, Mirror)>,
    /// After every mirror failed, try the registry itself
    /// (`registry_fallback`, default true; false for air-gapped hosts).
    pub fallback: bool,
    /// Extra CA certificates (PEM) a registry's or mirror's certificate
    /// may chain to, by `host[:port]` (`registry_ca = ["reg:5443=/etc/…"]`).
    pub ca: Vec<(String, PathBuf)>,
    /// Logins for registries, containers-auth.json format
    /// (`registry_auth_file`; default /etc/grove/auth.json when it exists).
    pub auth_file: Option<PathBuf>,
}

/// A registry mirror: `host[:port]` and an optional repository prefix
/// (`mirror.example/dockerhub` serves `library/busybox` as
/// `dockerhub/library/busybox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub host: String,
    pub prefix: String,
}

impl std::fmt::Display for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            f.write_str(&self.host)
        } else {
            write!(f, "{}/{}", self.host, self.prefix)
        }
    }
}

impl Default for ImageConfig {
    fn default() -> ImageConfig {
        ImageConfig {
            max_bytes: 10 << 30,
            max_age: 7 * 24 * 3600,
            gc_interval: 600,
            mirrors: Vec::new(),
            fallback: true,
            ca: Vec::new(),
            auth_file: std::path::Path::new(DEFAULT_AUTH_FILE)
                .exists()
                .then(|| DEFAULT_AUTH_FILE.into()),
        }
    }
}

fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// The `REGISTRY=VALUE` items of a list key.
fn pairs<'a>(key: &str, value: &'a str) -> Result<Vec<(String, &'a str)>, String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let (registry, rest) = item
                .split_once('=')
                .filter(|(r, v)| valid_host(r) && !v.is_empty())
                .ok_or_else(|| {
                    format!("{key}: {item:?} is not REGISTRY=VALUE (e.g. \"docker.io=…\")")
                })?;
            Ok((canonical_host(registry), rest))
        })
        .collect()
}

impl ImageConfig {
    /// Take one of `KEYS`; the error names the key and what is wrong.
    pub fn set(&mut self, entry: &Entry) -> Result<(), String> {
        let number = |what: &str| {
            entry
                .value
                .parse::<u64>()
                .map_err(|_| format!("{} must be {what}, not {:?}", entry.key, entry.value))
        };
        match entry.key.as_str() {
            "image_cache_max_bytes" => self.max_bytes = number("a number of bytes")?,
            "image_cache_max_age" => self.max_age = number("a number of seconds")?,
            "image_gc_interval" => self.gc_interval = number("a number of seconds")?,
            "registry_fallback" => {
                self.fallback = entry.flag().ok_or_else(|| {
                    format!(
                        "registry_fallback must be true or false, not {:?}",
                        entry.value
                    )
                })?
            }
            "registry_mirrors" => {
                self.mirrors = pairs("registry_mirrors", &entry.value)?
                    .into_iter()
                    .map(|(registry, mirror)| {
                        let (host, prefix) = mirror.split_once('/').unwrap_or((mirror, ""));
                        let prefix = prefix.trim_matches('/');
                        if !valid_host(host)
                            || mirror.contains("://")
                            || prefix.split('/').any(|c| c == "." || c == "..")
                        {
                            return Err(format!(
                                "registry_mirrors: {mirror:?} is not HOST[:PORT][/PREFIX] \
                                 (no scheme: insecure_registries decides HTTP or HTTPS)"
                            ));
                        }
                        Ok((
                            registry,
                            Mirror {
                                host: host.to_string(),
                                prefix: prefix.to_string(),
                            },
                        ))
                    })
                    .collect::<Result<_, _>>()?
            }
            "registry_ca" => {
                self.ca = pairs("registry_ca", &entry.value)?
                    .into_iter()
                    .map(|(registry, path)| {
                        if path.starts_with('/') {
                            Ok((registry, PathBuf::from(path)))
                        } else {
                            Err(format!("registry_ca: {path:?} is not an absolute path"))
                        }
                    })
                    .collect::<Result<_, _>>()?
            }
            "registry_auth_file" => {
                self.auth_file = if entry.value.is_empty() {
                    None
                } else {
                    Some(entry.absolute_path()?)
                }
            }
            other => return Err(format!("{other} is not an image key")),
        }
        Ok(())
    }

    /// The mirrors of a registry (by its canonical host), in order.
    pub fn mirrors_of(&self, registry: &str) -> Vec<Mirror> {
        self.mirrors
            .iter()
            .filter(|(r, _)| r == registry)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<ImageConfig, String> {
        let mut c = ImageConfig::default();
        for entry in grove_schema::conf::parse(text).map_err(|e| e.to_string())? {
            c.set(&entry)?;
        }
        Ok(c)
    }

    #[test]
    fn mirrors_ca_and_gc_keys() {
        let c = parsed(
            "registry_mirrors = [\"docker.io=127.0.0.1:5001\", \"docker.io=mirror.example/hub\", \
             \"quay.io=q.example:5000\"]\nregistry_ca = \"127.0.0.1:5443=/etc/grove/ca.pem\"\n\
             image_cache_max_bytes = 1048576\nimage_cache_max_age = 0\nregistry_fallback = false\n\
             registry_auth_file = \"\"\n",
        )
        .unwrap();
        assert_eq!(
            c.mirrors_of("registry-1.docker.io")
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>(),
            ["127.0.0.1:5001", "mirror.example/hub"]
        );
        assert_eq!(c.mirrors_of("quay.io")[0].host, "q.example:5000");
        assert_eq!(
            c.ca,
            [("127.0.0.1:5443".into(), "/etc/grove/ca.pem".into())]
        );
        assert_eq!((c.max_bytes, c.max_age, c.fallback), (1 << 20, 0, false));
        assert_eq!(c.auth_file, None);
        let d = ImageConfig::default();
        assert_eq!(
            (d.max_bytes, d.max_age, d.gc_interval),
            (10 << 30, 604800, 600)
        );
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, says) in [
            ("registry_mirrors = \"docker.io\"", "REGISTRY=VALUE"),
            ("registry_mirrors = \"docker.io=https://m\"", "no scheme"),
            ("registry_ca = \"reg:1=ca.pem\"", "absolute"),
            ("image_cache_max_bytes = \"lots\"", "image_cache_max_bytes"),
            ("registry_fallback = 3", "registry_fallback"),
            ("registry_auth_file = \"auth.json\"", "absolute"),
        ] {
            let e = parsed(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
