//! Remote clients: groved's API over TCP (groved's `listen_tcp`), with
//! mutual TLS.
//!
//! groved refuses a TLS client without a certificate from its
//! `tls_client_ca`; plain TCP is served only on a loopback address without
//! TLS configured. With TLS 1.3 a refused certificate shows on the first
//! request rather than at connect (the handshake completes on the client's
//! side before groved has checked it): that request fails with groved's
//! TLS alert in its message ("received fatal alert: ...").
//!
//! ```no_run
//! # async fn example() -> grove_client::Result<()> {
//! use grove_client::remote::{connect_tcp, Tls};
//! let tls = Tls {
//!     ca: "/etc/grove/tls/ca.pem".into(),
//!     cert: "/etc/grove/tls/client.pem".into(),
//!     key: "/etc/grove/tls/client.key".into(),
//!     server_name: None,
//! };
//! let client = connect_tcp("grove.example.net:7070", Some(&tls)).await?;
//! client.ping().await?;
//! # Ok(())
//! # }
//! ```

use crate::{Client, Error, Result};
use futures::AsyncReadExt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// How long the TCP connect and the TLS handshake may take, each.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client's side of mutual TLS: PEM files, read at each connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// The CA certificate(s) groved's certificate must chain to (only
    /// these are trusted, not the system's roots).
    pub ca: PathBuf,
    /// This client's certificate chain, its own certificate first; it
    /// must chain to groved's `tls_client_ca`.
    pub cert: PathBuf,
    /// The private key of `cert` (PKCS#8, PKCS#1 or SEC1 PEM).
    pub key: PathBuf,
    /// The name groved's certificate must carry. `None`: the host part of
    /// the address (an IP address is matched as one).
    pub server_name: Option<String>,
}

impl Tls {
    /// The TLS settings from optional parts, as a command line gives them:
    /// `None` when none of `ca`, `cert` and `key` is given, an error naming
    /// the missing ones when only some are (mutual TLS takes all three).
    pub fn from_parts(
        ca: Option<PathBuf>,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        server_name: Option<String>,
    ) -> Result<Option<Tls>> {
        match (ca, cert, key) {
            (Some(ca), Some(cert), Some(key)) => Ok(Some(Tls {
                ca,
                cert,
                key,
                server_name,
            })),
            (None, None, None) => Ok(None),
            (ca, cert, key) => {
                let missing: Vec<&str> = [
                    ("CA", ca.is_none()),
                    ("certificate", cert.is_none()),
                    ("key", key.is_none()),
                ]
                .iter()
                .filter(|(_, missing)| *missing)
                .map(|(name, _)| *name)
                .collect();
                Err(invalid(format!(
                    "TLS needs a CA, a client certificate and its key, all three; the {} {} missing",
                    missing.join(" and the "),
                    if missing.len() == 1 { "is" } else { "are" }
                )))
            }
        }
    }

    /// The rustls configuration: `ca` as the only trust anchors, `cert`
    /// and `key` as the client's certificate. Errors name the file.
    pub fn client_config(&self) -> Result<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for (n, ca) in read_certs("CA", &self.ca)?.into_iter().enumerate() {
            roots.add(ca).map_err(|e| {
                invalid(format!(
                    "TLS CA {}: certificate {}: {e}",
                    self.ca.display(),
                    n + 1
                ))
            })?;
        }
        let chain = read_certs("certificate", &self.cert)?;
        let key = read_key(&self.key)?;
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| {
                invalid(format!(
                    "TLS certificate {} with key {}: {e}",
                    self.cert.display(),
                    self.key.display()
                ))
            })
    }
}

/// Connect to groved's TCP listener at `address` (`HOST:PORT`, `[IPv6]:PORT`
/// for an IPv6 address), over mutual TLS with `tls`, or plain TCP with
/// `None` (which groved serves on loopback only). Must be called inside a
/// `LocalSet`, like `Client::connect`.
pub async fn connect_tcp(address: &str, tls: Option<&Tls>) -> Result<Client> {
    let unavailable = |what: String| Error {
        code: "serviceUnavailable".into(),
        message: format!("cannot connect to groved at {address}: {what}"),
    };
    // The TLS files first: a mistake there is the caller's to fix.
    let tls = match tls {
        Some(tls) => {
            let name = tls
                .server_name
                .clone()
                .unwrap_or_else(|| host_of(address).to_string());
            let name = ServerName::try_from(name.clone()).map_err(|_| {
                invalid(format!(
                    "TLS server name {name:?} is not a DNS name or an IP address"
                ))
            })?;
            Some((tls.client_config()?, name))
        }
        None => None,
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| unavailable(format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| unavailable(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    match tls {
        None => {
            let (reader, writer) = stream.compat().split();
            Ok(Client::over(reader, writer))
        }
        Some((config, name)) => {
            let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, stream))
                .await
                .map_err(|_| {
                    unavailable(format!(
                        "no TLS handshake within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| unavailable(format!("TLS handshake: {e}")))?;
            let (reader, writer) = stream.compat().split();
            Ok(Client::over(reader, writer))
        }
    }
}

/// The host part of `HOST:PORT` or `[IPv6]:PORT` (brackets removed).
fn host_of(address: &str) -> &str {
    if let Some(rest) = address.strip_prefix('[') {
        if let Some((host, _)) = rest.split_once(']') {
            return host;
        }
    }
    address.rsplit_once(':').map_or(address, |(host, _)| host)
}

fn invalid(message: String) -> Error {
    Error {
        code: "invalidSpec".into(),
        message,
    }
}

fn read_certs(what: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem =
        std::fs::read(path).map_err(|e| invalid(format!("TLS {what} {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("TLS {what} {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "TLS {what} {}: no PEM certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let pem =
        std::fs::read(path).map_err(|e| invalid(format!("TLS key {}: {e}", path.display())))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => invalid(format!(
            "TLS key {}: no PEM private key in it",
            path.display()
        )),
        e => invalid(format!("TLS key {}: {e}", path.display())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("grove.example.net:7070"), "grove.example.net");
        assert_eq!(host_of("127.0.0.1:7070"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7070"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
        let ip = ServerName::try_from(host_of("[::1]:7070").to_string()).unwrap();
        assert!(matches!(ip, ServerName::IpAddress(_)));
    }

    #[test]
    fn all_three_or_none() {
        assert_eq!(Tls::from_parts(None, None, None, None).unwrap(), None);
        let err = Tls::from_parts(Some("/ca".into()), None, Some("/k".into()), None).unwrap_err();
        assert_eq!(err.code, "invalidSpec");
        assert!(err.message.contains("the certificate is missing"), "{err}");
        let err = Tls::from_parts(Some("/ca".into()), None, None, None).unwrap_err();
        assert!(
            err.message
                .contains("the certificate and the key are missing"),
            "{err}"
        );
        let tls = Tls::from_parts(
            Some("/ca".into()),
            Some("/c".into()),
            Some("/k".into()),
            Some("grove".into()),
        )
        .unwrap()
        .unwrap();
        assert_eq!(tls.server_name.as_deref(), Some("grove"));
    }

    #[test]
    fn files_are_named() {
        let tls = Tls {
            ca: "/nonexistent/ca.pem".into(),
            cert: "/nonexistent/c.pem".into(),
            key: "/nonexistent/k.pem".into(),
            server_name: None,
        };
        let err = tls.client_config().unwrap_err();
        assert!(err.message.contains("/nonexistent/ca.pem"), "{err}");
    }
}
