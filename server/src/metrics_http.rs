//! The metrics endpoint (`metrics_listen`): `GET /metrics` over HTTP/1.x
//! on a loopback TCP address or a unix socket, one request per connection.
//!
//! It is bound at start-up, before groved confines itself (Landlock grants
//! no bind afterwards), and serves what metrics.rs renders. No request
//! reaches the rest of groved: a scrape only reads counters. At most
//! `MAX_SCRAPES` connections are served at once and each has
//! `REQUEST_TIMEOUT` to send its request head, so a stuck scraper holds
//! a few fds at most.

use crate::config::MetricsListen;
use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Connections served at once; one beyond them is closed at once.
const MAX_SCRAPES: usize = 16;
/// How long a client may take to send its request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a request head may hold.
const MAX_HEAD: usize = 8 * 1024;

/// Prometheus's text format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix {
        listener: tokio::net::UnixListener,
        path: PathBuf,
    },
}

impl Listener {
    /// Bind `at` (a unix socket replaces a stale one, like the API's).
    pub fn bind(at: &MetricsListen) -> Result<Listener, String> {
        match at {
            MetricsListen::Tcp(address) => {
                let std_listener = std::net::TcpListener::bind(address)
                    .map_err(|e| format!("metrics_listen: binding {address}: {e}"))?;
                std_listener
                    .set_nonblocking(true)
                    .map_err(|e| format!("metrics_listen: {e}"))?;
                tokio::net::TcpListener::from_std(std_listener)
                    .map(Listener::Tcp)
                    .map_err(|e| format!("metrics_listen: {e}"))
            }
            MetricsListen::Unix(path) => {
                let socket = crate::api_socket::ApiSocket::open(None, path)
                    .map_err(|e| format!("metrics_listen: {e}"))?;
                Ok(Listener::Unix {
                    listener: socket.listener,
                    path: socket.path,
                })
            }
        }
    }

    /// Where it listens, for the log.
    pub fn describe(&self) -> String {
        match self {
            Listener::Tcp(listener) => match listener.local_addr() {
                Ok(address) => format!("http://{address}/metrics"),
                Err(e) => format!("TCP ({e})"),
            },
            Listener::Unix { path, .. } => format!("unix socket {}, /metrics", path.display()),
        }
    }

    /// The unix socket to remove when groved stops.
    pub fn socket_path(&self) -> Option<&std::path::Path> {
        match self {
            Listener::Tcp(_) => None,
            Listener::Unix { path, .. } => Some(path),
        }
    }
}

/// Serve scrapes for ever; `render` makes each answer's body.
pub async fn serve(listener: Listener, render: impl Fn() -> String + 'static) {
    let render = Rc::new(render);
    let open = Rc::new(Cell::new(0usize));
    loop {
        let accepted: std::io::Result<Box<dyn Stream>> = match &listener {
            Listener::Tcp(l) => l
                .accept()
                .await
                .map(|(s, _)| Box::new(s) as Box<dyn Stream>),
            Listener::Unix { listener: l, .. } => l
                .accept()
                .await
                .map(|(s, _)| Box::new(s) as Box<dyn Stream>),
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accept on metrics_listen");
                // Out of fds, say: not a busy loop meanwhile.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.get() >= MAX_SCRAPES {
            tracing::debug!("{MAX_SCRAPES} metrics connections open: one closed");
            continue;
        }
        open.set(open.get() + 1);
        let (render, open) = (render.clone(), open.clone());
        tokio::task::spawn_local(async move {
            answer(stream, &*render).await;
            open.set(open.get() - 1);
        });
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}

/// Read one request head and answer it; the connection then closes.
async fn answer(mut stream: Box<dyn Stream>, render: &dyn Fn() -> String) {
    let head = match tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(head)) => head,
        _ => return,
    };
    let (status, body) = match route(&head) {
        Route::Metrics => ("200 OK", render()),
        Route::NotFound => ("404 Not Found", "metrics are at /metrics\n".to_string()),
        Route::BadMethod => ("405 Method Not Allowed", "only GET\n".to_string()),
        Route::Malformed => ("400 Bad Request", "not an HTTP request\n".to_string()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    };
    // A scraper that stops reading does not hold the connection for ever.
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, write).await;
}

/// The request head, up to its blank line; None if the client closed or
/// sent more than MAX_HEAD first.
async fn read_head(stream: &mut Box<dyn Stream>) -> Option<String> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let n = stream.read(&mut buffer).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buffer[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Some(String::from_utf8_lossy(&head).into_owned());
        }
        if head.len() > MAX_HEAD {
            return None;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics,
    NotFound,
    BadMethod,
    Malformed,
}

fn route(head: &str) -> Route {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Route::Malformed;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::Malformed;
    }
    if method != "GET" {
        return Route::BadMethod;
    }
    let path = target.split('?').next().unwrap_or("");
    if path == "/metrics" {
        Route::Metrics
    } else {
        Route::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics
        );
        assert_eq!(route("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), Route::Metrics);
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(route("POST /metrics HTTP/1.1\r\n\r\n"), Route::BadMethod);
        assert_eq!(route("hello\r\n\r\n"), Route::Malformed);
        assert_eq!(route("GET /metrics SPDY\r\n\r\n"), Route::Malformed);
    }
}
