//! How groved reaches registries: HTTPS with the system's CA store (plus a
//! registry's own CA from `registry_ca`), plain HTTP for
//! `insecure_registries`, through `HTTPS_PROXY`/`HTTP_PROXY` unless
//! `NO_PROXY` names the host. Everything is read at start-up, before
//! groved confines itself (Landlock lets it read none of these files
//! later): a changed CA file or proxy takes a restart.

use crate::image_config::ImageConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where distributions keep the system's CA bundle (Debian/Ubuntu,
/// Fedora/RHEL, openSUSE, Alpine/Arch), unless `SSL_CERT_FILE` names one.
const SYSTEM_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// What every pull needs to reach a registry; cheap to share.
pub struct Net {
    insecure: Vec<String>,
    /// Trusting the system's CAs.
    default_tls: Arc<ClientConfig>,
    /// Trusting the system's CAs and the registry's own (`registry_ca`).
    host_tls: HashMap<String, Arc<ClientConfig>>,
    proxies: Proxies,
    /// Where the roots came from, for errors.
    pub roots_from: String,
}

impl Net {
    /// Read the CA store, the `registry_ca` files and the proxy variables;
    /// an error names the file or variable.
    pub fn load(insecure: &[String], images: &ImageConfig) -> Result<Net, String> {
        Net::load_with(insecure, images, &|name| std::env::var(name).ok())
    }

    pub fn load_with(
        insecure: &[String],
        images: &ImageConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Net, String> {
        let (system, roots_from) = system_roots(env)?;
        let mut host_tls = HashMap::new();
        for (host, path) in &images.ca {
            let mut roots = system.clone();
            let certs = read_pem_certs(path).map_err(|e| format!("registry_ca {host}: {e}"))?;
            for (i, cert) in certs.into_iter().enumerate() {
                roots.add(cert).map_err(|e| {
                    format!(
                        "registry_ca {host}: {} certificate {}: {e}",
                        path.display(),
                        i + 1
                    )
                })?;
            }
            host_tls.insert(host.clone(), client_config(roots)?);
        }
        Ok(Net {
            insecure: insecure.to_vec(),
            default_tls: client_config(system)?,
            host_tls,
            proxies: Proxies::from_env(env)?,
            roots_from,
        })
    }

    pub fn is_insecure(&self, host: &str) -> bool {
        self.insecure.iter().any(|h| h == host)
    }

    /// `https` or, for `insecure_registries`, `http`.
    pub fn scheme(&self, host: &str) -> &'static str {
        if self.is_insecure(host) {
            "http"
        } else {
            "https"
        }
    }

    /// An HTTP client for URLs on `host` (`host[:port]` as in the URL).
    pub fn agent(&self, host: &str) -> Result<ureq::Agent, String> {
        let insecure = self.is_insecure(host);
        let tls = self.host_tls.get(host).unwrap_or(&self.default_tls).clone();
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(15))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(60))
            .https_only(!insecure)
            .tls_config(tls)
            .user_agent(concat!("groved/", env!("CARGO_PKG_VERSION")));
        let scheme = self.scheme(host);
        if let Some(proxy) = self.proxies.for_host(scheme, host) {
            let p = ureq::Proxy::new(proxy).map_err(|e| format!("proxy {proxy}: {e}"))?;
            builder = builder.proxy(p);
        }
        Ok(builder.build())
    }

    /// An HTTP client for any URL (a token realm): its host decides.
    pub fn agent_for_url(&self, url: &str) -> Result<ureq::Agent, String> {
        let rest = url
            .split_once("://")
            .map(|(_, r)| r)
            .ok_or_else(|| format!("{url:?} is not a URL"))?;
        let host = rest.split(['/', '?']).next().unwrap_or("");
        self.agent(host)
    }

    /// The proxy a URL on `host` goes through, for messages.
    pub fn proxy_of(&self, host: &str) -> Option<&str> {
        self.proxies.for_host(self.scheme(host), host)
    }
}

fn client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// The system's CA certificates: `SSL_CERT_FILE`, else the first bundle
/// of `SYSTEM_BUNDLES` there is, else (a host without one) the Mozilla
/// roots built into groved. Certificates a bundle holds that rustls
/// cannot use are skipped, as OpenSSL would.
fn system_roots(env: &dyn Fn(&str) -> Option<String>) -> Result<(RootCertStore, String), String> {
    let named = env("SSL_CERT_FILE").filter(|v| !v.is_empty());
    let bundle: Option<PathBuf> = match &named {
        Some(path) => Some(path.into()),
        None => SYSTEM_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists()),
    };
    let Some(bundle) = bundle else {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        return Ok((roots, "the Mozilla roots built into groved".into()));
    };
    let certs = read_pem_certs(&bundle).map_err(|e| match &named {
        Some(_) => format!("SSL_CERT_FILE: {e}"),
        None => e,
    })?;
    let mut roots = RootCertStore::empty();
    let (added, _skipped) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "{}: no usable CA certificate in it",
            bundle.display()
        ));
    }
    Ok((roots, bundle.display().to_string()))
}

/// `HTTPS_PROXY`, `HTTP_PROXY` (or `ALL_PROXY`) and `NO_PROXY`, in upper
/// or lower case (lower wins, as in curl).
#[derive(Debug, Default, PartialEq, Eq)]
struct Proxies {
    https: Option<String>,
    http: Option<String>,
    no_proxy: Vec<String>,
}

impl Proxies {
    fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Proxies, String> {
        fn var<'a>(
            env: &dyn Fn(&str) -> Option<String>,
            name: &'a str,
        ) -> Option<(&'a str, String)> {
            env(&name.to_ascii_lowercase())
                .or_else(|| env(name))
                .filter(|v| !v.trim().is_empty())
                .map(|v| (name, v.trim().to_string()))
        }
        let proxy = |name: &str| -> Result<Option<String>, String> {
            let Some((name, value)) = var(env, name).or_else(|| var(env, "ALL_PROXY")) else {
                return Ok(None);
            };
            let url = if value.contains("://") {
                value.clone()
            } else {
                format!("http://{value}")
            };
            if !url.starts_with("http://") {
                return Err(format!(
                    "{name}={value:?}: only http:// proxies are supported (HTTPS goes through \
                     them with CONNECT)"
                ));
            }
            ureq::Proxy::new(&url).map_err(|e| format!("{name}={value:?}: {e}"))?;
            Ok(Some(url))
        };
        Ok(Proxies {
            https: proxy("HTTPS_PROXY")?,
            http: proxy("HTTP_PROXY")?,
            no_proxy: var(env, "NO_PROXY")
                .map(|(_, v)| {
                    v.split(',')
                        .map(|e| e.trim().to_ascii_lowercase())
                        .filter(|e| !e.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// The proxy for `scheme://host[:port]`, unless NO_PROXY exempts it.
    fn for_host(&self, scheme: &str, host: &str) -> Option<&str> {
        let proxy = if scheme == "https" {
            self.https.as_deref()
        } else {
            self.http.as_deref()
        }?;
        (!self.exempt(host)).then_some(proxy)
    }

    /// NO_PROXY entries: `*`; a host name, which covers its subdomains
    /// (a leading `.` is the same); an IP address or an IPv4 CIDR range;
    /// any of these with `:port` to exempt that port only.
    fn exempt(&self, host_port: &str) -> bool {
        let (host, port) = split_port(host_port);
        let host = host.to_ascii_lowercase();
        self.no_proxy.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            let (name, entry_port) = split_port(entry);
            if entry_port.is_some() && entry_port != port {
                return false;
            }
            if let Some((net, bits)) = name.split_once('/') {
                return match (
                    host.parse::<IpAddr>(),
                    net.parse::<IpAddr>(),
                    bits.parse::<u32>(),
                ) {
                    (Ok(IpAddr::V4(h)), Ok(IpAddr::V4(n)), Ok(bits)) if bits <= 32 => {
                        let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                        u32::from(h) & mask == u32::from(n) & mask
                    }
                    _ => false,
                };
            }
            let name = name.trim_start_matches('.');
            host == name || host.ends_with(&format!(".{name}"))
        })
    }
}

/// `host:port`, `[v6]:port`, `host` → (host without brackets, port).
fn split_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (s, None),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (s, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(vars: &[(&str, &str)]) -> Result<Proxies, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Proxies::from_env(&|name| vars.get(name).cloned())
    }

    #[test]
    fn proxies_follow_the_variables_and_no_proxy() {
        let p = proxies(&[
            ("HTTPS_PROXY", "127.0.0.1:3128"),
            ("http_proxy", "http://127.0.0.1:3129"),
            (
                "NO_PROXY",
                "internal.example, .corp.example,10.1.0.0/16,127.0.0.1:5000,[::1]",
            ),
        ])
        .unwrap();
        assert_eq!(
            p.for_host("https", "registry.example"),
            Some("http://127.0.0.1:3128")
        );
        assert_eq!(
            p.for_host("http", "registry.example"),
            Some("http://127.0.0.1:3129")
        );
        for exempt in [
            "internal.example",
            "reg.internal.example:443",
            "x.corp.example",
            "10.1.2.3:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
        ] {
            assert_eq!(p.for_host("https", exempt), None, "{exempt}");
        }
        for proxied in ["notinternal.example", "10.2.0.1", "127.0.0.1:5001"] {
            assert!(p.for_host("https", proxied).is_some(), "{proxied}");
        }
        let all = proxies(&[("ALL_PROXY", "http://127.0.0.1:1"), ("no_proxy", "*")]).unwrap();
        assert_eq!(all.https.as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(all.for_host("https", "anything"), None);
        assert_eq!(proxies(&[]).unwrap(), Proxies::default());
        let e = proxies(&[("HTTPS_PROXY", "https://p:1")]).unwrap_err();
        assert!(e.contains("HTTPS_PROXY") && e.contains("http://"), "{e}");
    }

    #[test]
    fn the_system_store_is_ssl_cert_file_or_a_bundle() {
        let dir = std::env::temp_dir().join(format!("grove-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e =
            system_roots(&|name| (name == "SSL_CERT_FILE").then(|| empty.display().to_string()))
                .unwrap_err();
        assert!(
            e.contains("SSL_CERT_FILE") && e.contains("empty.pem"),
            "{e}"
        );
        let (roots, from) = system_roots(&|_| None).unwrap();
        assert!(!roots.is_empty(), "{from}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
