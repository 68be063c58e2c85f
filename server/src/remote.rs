//! Remote clients: groved's API on TCP as well (`listen_tcp`), off by
//! default. The TCP listener serves the same bootstrap capability as the
//! unix socket.
//!
//! - **Mutual TLS** (`tls_cert`, `tls_key`, `tls_client_ca`; required off
//!   loopback, see config.rs): rustls with its `ring` provider. A client
//!   must present a certificate that chains to `tls_client_ca`; the
//!   handshake completes before a byte of it reaches the RPC system, and a
//!   failed or slow (`HANDSHAKE_TIMEOUT`) one closes the connection. At most
//!   `MAX_HANDSHAKES` run at once: further connections are closed at once.
//! - **Plain TCP** on a loopback address without the `tls_*` keys: every
//!   local user can then use the API, unlike the unix socket, whose mode
//!   lets only groved's group in.
//!
//! The certificate files are read and checked at start-up and the listener
//! is bound then too, before groved confines itself (its Landlock ruleset
//! grants no TCP bind, its seccomp allowlist no `listen`); accepting and
//! TLS need nothing beyond what serving already uses.

use crate::config::Tls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at once; a connection beyond them is closed
/// at once (a flood of idle connections cannot hold groved's fds).
pub const MAX_HANDSHAKES: usize = 64;

/// The certificates of a PEM file (`key` names the config key in errors).
fn read_certs(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no PEM certificate (\"-----BEGIN CERTIFICATE-----\") in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
fn read_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{key} {}: no PEM private key in it", path.display())
        }
        e => format!("{key} {}: {e}", path.display()),
    })
}

/// Read and check the `tls_*` files: groved's chain and key (which must
/// match), and the client CAs. Errors name the key and the file.
pub fn server_config(tls: &Tls) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs("tls_cert", &tls.cert)?;
    let key = read_key("tls_key", &tls.key)?;
    let mut roots = RootCertStore::empty();
    for (n, ca) in read_certs("tls_client_ca", &tls.client_ca)?
        .into_iter()
        .enumerate()
    {
        roots.add(ca).map_err(|e| {
            format!(
                "tls_client_ca {}: certificate {}: {e}",
                tls.client_ca.display(),
                n + 1
            )
        })?;
    }
    // Client certificates are required (no allow_unauthenticated).
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("tls_client_ca {}: {e}", tls.client_ca.display()))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "tls_cert {} with tls_key {}: {e}",
                tls.cert.display(),
                tls.key.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// The TCP listener and what each connection goes through before RPC.
pub struct Remote {
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    handshakes: Rc<Cell<usize>>,
}

/// A connection ready for RPC: over TLS, or plain (loopback only).
pub enum Connection {
    Tls(Box<TlsStream<TcpStream>>),
    Plain(TcpStream),
}

impl Remote {
    /// Bind `address` (before groved confines itself). `tls`: from
    /// `server_config`; `None` only on loopback (config.rs checks).
    pub fn bind(address: SocketAddr, tls: Option<Arc<ServerConfig>>) -> Result<Remote, String> {
        let listener = std::net::TcpListener::bind(address)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std)
            .map_err(|e| format!("listen_tcp: binding {address}: {e}"))?;
        Ok(Remote {
            listener,
            acceptor: tls.map(TlsAcceptor::from),
            handshakes: Rc::new(Cell::new(0)),
        })
    }

    /// The bound address (the port the kernel picked for port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    pub fn tls(&self) -> bool {
        self.acceptor.is_some()
    }

    /// The next TCP connection (not yet through TLS: see `establish`).
    pub async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        self.listener.accept().await
    }

    /// Take `stream` through the TLS handshake (unless plain), then hand
    /// it to `serve`, in a task of its own so that a slow client holds up
    /// no other. A failed handshake closes the connection.
    pub fn establish(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        serve: impl FnOnce(Connection) + 'static,
    ) {
        if let Err(e) = tune(&stream) {
            tracing::debug!(%peer, error = %e, "tuning a TCP connection");
        }
        let Some(acceptor) = self.acceptor.clone() else {
            tracing::debug!(%peer, "TCP client connected (plain, loopback)");
            serve(Connection::Plain(stream));
            return;
        };
        if self.handshakes.get() >= MAX_HANDSHAKES {
            tracing::warn!(
                %peer,
                "{MAX_HANDSHAKES} TLS handshakes in progress: connection closed"
            );
            return;
        }
        let handshakes = self.handshakes.clone();
        handshakes.set(handshakes.get() + 1);
        tokio::task::spawn_local(async move {
            let result = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            handshakes.set(handshakes.get() - 1);
            match result {
                Ok(Ok(tls)) => {
                    let client = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .map(|cert| hex(&Sha256::digest(cert.as_ref())))
                        .unwrap_or_default();
                    tracing::info!(%peer, client_cert_sha256 = %client, "TLS client connected");
                    serve(Connection::Tls(Box::new(tls)));
                }
                Ok(Err(e)) => {
                    tracing::warn!(%peer, error = %e, "TLS handshake failed: connection closed")
                }
                Err(_) => tracing::warn!(
                    %peer,
                    "no TLS handshake within {} s: connection closed",
                    HANDSHAKE_TIMEOUT.as_secs()
                ),
            }
        });
    }
}

/// No Nagle delay (RPC is request and answer), and keepalives, so that a
/// client that vanished from the network lets go of what it held after a
/// few minutes rather than hours.
pub fn tune(stream: &impl AsFd) -> nix::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    let fd = stream.as_fd();
    setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    setsockopt(&fd, sockopt::KeepAlive, &true)?;
    setsockopt(&fd, sockopt::TcpKeepIdle, &60)?;
    setsockopt(&fd, sockopt::TcpKeepInterval, &15)?;
    setsockopt(&fd, sockopt::TcpKeepCount, &4)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(dir: &Path) -> Tls {
        Tls {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: dir.join("ca.pem"),
        }
    }

    #[test]
    fn unreadable_or_empty_files_are_named() {
        let dir = std::env::temp_dir().join(format!("grove-remote-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = tls(&dir);
        let err = server_config(&files).unwrap_err();
        assert!(err.starts_with("tls_cert "), "{err}");
        assert!(err.contains("cert.pem"), "{err}");
        std::fs::write(&files.cert, "not PEM\n").unwrap();
        let err = server_config(&files).unwrap_err();
        assert!(err.contains("no PEM certificate"), "{err}");
        std::fs::write(
            &files.cert,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = server_config(&files).unwrap_err();
        assert!(err.starts_with("tls_key "), "{err}");
        std::fs::write(
            &files.key,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = server_config(&files).unwrap_err();
        assert!(err.contains("no PEM private key"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
