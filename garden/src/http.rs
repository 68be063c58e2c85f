//! A small HTTP/1.1 layer: just what Garden's clients use. Request heads
//! are parsed with httparse (bounded in size and header count), bodies are
//! read incrementally (Content-Length or chunked), responses are written
//! whole (JSON), chunked (streamOut) or raw on a hijacked connection (run,
//! attach, the stdout/stderr streams), which is why this is not a general
//! HTTP server crate: Garden's server answers and then keeps the socket
//! (net/http's Hijacker), with no 101 Upgrade.

use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest request head (request line and headers) taken.
pub const MAX_HEAD: usize = 16 * 1024;
/// The most headers a request may have.
pub const MAX_HEADERS: usize = 64;
/// The largest JSON request body taken (specs, rules, properties).
pub const MAX_JSON_BODY: usize = 1 << 20;
/// The longest chunk-size line or trailer line of a chunked body.
const MAX_CHUNK_LINE: usize = 1024;

pub type BoxRead = Box<dyn AsyncRead + Unpin>;
pub type BoxWrite = Box<dyn AsyncWrite + Unpin>;

/// Why a request could not be read.
#[derive(Debug)]
pub enum HttpError {
    /// Malformed: answer 400 and close.
    Bad(String),
    /// Too large: answer with this status (413 or 431) and close.
    TooLarge(u16, String),
    /// The connection broke: just close.
    Io(io::Error),
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> HttpError {
        HttpError::Io(e)
    }
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path's segments, percent-decoded ("/containers/a/info" →
    /// ["containers", "a", "info"]).
    pub segments: Vec<String>,
    /// The query's pairs, form-decoded, in order.
    pub query: Vec<(String, String)>,
    pub body: BodyState,
    /// HTTP/1.1 without `Connection: close`.
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl Request {
    /// The first value of a query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How much of a request body is left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyState {
    /// Content-Length: this many bytes still to come.
    Length(u64),
    /// Transfer-Encoding: chunked; bytes left in the current chunk.
    Chunked { left: u64, started: bool },
    /// Nothing (more) to read.
    Done,
}

/// The reading side of a connection, with its buffer (what was read past
/// a request head is the start of its body, or of hijacked payloads).
pub struct Reader {
    inner: BoxRead,
    buf: Vec<u8>,
    pos: usize,
}

impl Reader {
    pub fn new(inner: BoxRead) -> Reader {
        Reader {
            inner,
            buf: Vec::with_capacity(8192),
            pos: 0,
        }
    }

    fn buffered(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Read more into the buffer; 0 at end of file.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self.inner.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next request head; `None` when the peer closed the connection
    /// between requests.
    pub async fn read_head(&mut self) -> Result<Option<Request>, HttpError> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut request = httparse::Request::new(&mut headers);
            match request.parse(self.buffered()) {
                Ok(httparse::Status::Complete(len)) => {
                    let parsed = parse_request(&request)?;
                    self.consume(len);
                    return Ok(Some(parsed));
                }
                Ok(httparse::Status::Partial) => {}
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(HttpError::TooLarge(
                        431,
                        format!("more than {MAX_HEADERS} headers"),
                    ))
                }
                Err(e) => return Err(HttpError::Bad(format!("malformed request head: {e}"))),
            }
            if self.buffered().len() >= MAX_HEAD {
                return Err(HttpError::TooLarge(
                    431,
                    format!("request head longer than {MAX_HEAD} bytes"),
                ));
            }
            if self.fill().await? == 0 {
                if self.buffered().is_empty() {
                    return Ok(None);
                }
                return Err(HttpError::Bad(
                    "connection closed inside a request head".into(),
                ));
            }
        }
    }

    /// The next piece of the body (at most `max` bytes); `None` at its end.
    pub async fn body_chunk(
        &mut self,
        body: &mut BodyState,
        max: usize,
    ) -> Result<Option<Vec<u8>>, HttpError> {
        loop {
            match body {
                BodyState::Done => return Ok(None),
                BodyState::Length(0) => {
                    *body = BodyState::Done;
                    return Ok(None);
                }
                BodyState::Length(left) => {
                    if self.buffered().is_empty() && self.fill().await? == 0 {
                        return Err(HttpError::Bad("connection closed inside a body".into()));
                    }
                    let n = self.buffered().len().min(max).min(*left as usize);
                    let data = self.buffered()[..n].to_vec();
                    self.consume(n);
                    *left -= n as u64;
                    return Ok(Some(data));
                }
                BodyState::Chunked { left: 0, started } => {
                    // End of a chunk's data: its CRLF, then the next size.
                    if *started {
                        let line = self.line(MAX_CHUNK_LINE).await?;
                        if !line.is_empty() {
                            return Err(HttpError::Bad("chunk data longer than its size".into()));
                        }
                    }
                    let line = self.line(MAX_CHUNK_LINE).await?;
                    // Hex digits only (from_str_radix alone takes a sign),
                    // then an optional extension.
                    let size = std::str::from_utf8(&line)
                        .ok()
                        .map(|l| l.split(';').next().unwrap_or(""))
                        .filter(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
                        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
                        .ok_or_else(|| HttpError::Bad("malformed chunk size".into()))?;
                    if size == 0 {
                        // Trailers (ignored) up to the empty line.
                        for _ in 0..MAX_HEADERS {
                            if self.line(MAX_CHUNK_LINE).await?.is_empty() {
                                *body = BodyState::Done;
                                return Ok(None);
                            }
                        }
                        return Err(HttpError::Bad("too many trailers".into()));
                    }
                    *body = BodyState::Chunked {
                        left: size,
                        started: true,
                    };
                }
                BodyState::Chunked { left, .. } => {
                    if self.buffered().is_empty() && self.fill().await? == 0 {
                        return Err(HttpError::Bad("connection closed inside a chunk".into()));
                    }
                    let n = self.buffered().len().min(max).min(*left as usize);
                    let data = self.buffered()[..n].to_vec();
                    self.consume(n);
                    *left -= n as u64;
                    return Ok(Some(data));
                }
            }
        }
    }

    /// A whole body of at most `limit` bytes.
    pub async fn body(&mut self, body: &mut BodyState, limit: usize) -> Result<Vec<u8>, HttpError> {
        if let BodyState::Length(n) = body {
            if *n > limit as u64 {
                return Err(HttpError::TooLarge(
                    413,
                    format!("body of {n} bytes; at most {limit} taken"),
                ));
            }
        }
        let mut out = Vec::new();
        while let Some(chunk) = self.body_chunk(body, 64 * 1024).await? {
            out.extend_from_slice(&chunk);
            if out.len() > limit {
                return Err(HttpError::TooLarge(
                    413,
                    format!("body longer than {limit} bytes"),
                ));
            }
        }
        Ok(out)
    }

    /// One line without its CRLF (or LF), at most `max` bytes.
    async fn line(&mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        match self.next_line(max).await? {
            Some(line) => Ok(line),
            None => Err(HttpError::Bad(
                "connection closed inside a chunked body".into(),
            )),
        }
    }

    /// One newline-terminated line without its line end; `None` at end of
    /// file (a last line without newline counts as a line). Used for
    /// chunk sizes and for Garden's newline-delimited JSON payloads.
    pub async fn next_line(&mut self, max: usize) -> Result<Option<Vec<u8>>, HttpError> {
        let mut scanned = 0;
        loop {
            if let Some(i) = self.buffered()[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i;
                let mut line = self.buffered()[..end].to_vec();
                self.consume(end + 1);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            scanned = self.buffered().len();
            if scanned > max {
                return Err(HttpError::TooLarge(
                    413,
                    format!("line longer than {max} bytes"),
                ));
            }
            if self.fill().await? == 0 {
                if self.buffered().is_empty() {
                    return Ok(None);
                }
                let line = self.buffered().to_vec();
                let n = line.len();
                self.consume(n);
                return Ok(Some(line));
            }
        }
    }

    /// Wait until the peer closes its side (or sends anything, which a
    /// stream connection's peer never does): used to notice a client that
    /// went away from a connection we only write to.
    pub async fn closed(&mut self) {
        loop {
            match self.fill().await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    // Ignore what comes; bound the buffer.
                    let n = self.buffered().len();
                    self.consume(n);
                }
            }
        }
    }
}

fn parse_request(request: &httparse::Request<'_, '_>) -> Result<Request, HttpError> {
    let method = request.method.unwrap_or("").to_string();
    let target = request.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if !path.starts_with('/') {
        return Err(HttpError::Bad(format!(
            "request target {target:?} is not an absolute path"
        )));
    }
    let segments = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect::<Result<Vec<_>, _>>()
        .map_err(HttpError::Bad)?;
    let query = parse_query(query).map_err(HttpError::Bad)?;
    let minor = request.version.unwrap_or(1);
    let mut keep_alive = minor >= 1;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    for h in request.headers.iter() {
        let value = std::str::from_utf8(h.value)
            .map_err(|_| HttpError::Bad(format!("header {} is not UTF-8", h.name)))?
            .trim();
        if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only: parse alone would take "+5".
            let n = Some(value)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| HttpError::Bad(format!("bad Content-Length {value:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::Bad("conflicting Content-Length headers".into()));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if value.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if !value.eq_ignore_ascii_case("identity") {
                return Err(HttpError::Bad(format!(
                    "Transfer-Encoding {value:?} is not supported (only chunked)"
                )));
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    // Both framings at once is a smuggling attempt (RFC 9112 6.3): refuse.
    if chunked && length.is_some() {
        return Err(HttpError::Bad(
            "both Content-Length and Transfer-Encoding given".into(),
        ));
    }
    let body = if chunked {
        BodyState::Chunked {
            left: 0,
            started: false,
        }
    } else {
        match length {
            Some(n) => BodyState::Length(n),
            None => BodyState::Done,
        }
    };
    Ok(Request {
        method,
        segments,
        query,
        body,
        keep_alive,
        expect_continue,
    })
}

/// Decode %XX escapes (and, in a query, `+` as a space).
pub fn percent_decode(s: &str, form: bool) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if form => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

fn parse_query(query: &str) -> Result<Vec<(String, String)>, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A whole JSON response. Go's json.Encoder ends its output with a newline;
/// so does this (Garden's transport.WriteMessage).
pub async fn write_json(
    w: &mut BoxWrite,
    status: u16,
    value: &serde_json::Value,
    keep_alive: bool,
) -> io::Result<()> {
    let mut body = serde_json::to_vec(value).map_err(io::Error::other)?;
    body.push(b'\n');
    let head =
        format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        reason(status),
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" }
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(&body);
    w.write_all(&out).await?;
    w.flush().await
}

/// The head of a response whose connection is hijacked afterwards, as
/// Garden's Go server sends it: net/http flushes the head on Hijack with
/// `Transfer-Encoding: chunked` (HTTP/1.1, no length), and the payloads
/// then follow raw, unchunked. Garden's client reads the head with
/// httputil.ClientConn, which fails (ErrPersistEOF) on a response marked
/// `Connection: close` or without framing, so the head has neither.
pub async fn write_hijack_head(
    w: &mut BoxWrite,
    status: u16,
    content_type: &str,
) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n",
        reason(status)
    );
    w.write_all(head.as_bytes()).await?;
    w.flush().await
}

/// The head of a chunked response (streamOut).
pub async fn write_chunked_head(
    w: &mut BoxWrite,
    content_type: &str,
    keep_alive: bool,
) -> io::Result<()> {
    let head =
        format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n{}\r\n",
        if keep_alive { "" } else { "Connection: close\r\n" }
    );
    w.write_all(head.as_bytes()).await?;
    w.flush().await
}

/// One chunk of a chunked body (never empty: that would end it).
pub async fn write_chunk(w: &mut BoxWrite, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    w.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    w.write_all(data).await?;
    w.write_all(b"\r\n").await?;
    w.flush().await
}

/// The end of a chunked body.
pub async fn write_last_chunk(w: &mut BoxWrite) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n").await?;
    w.flush().await
}

pub async fn write_continue(w: &mut BoxWrite) -> io::Result<()> {
    w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(bytes: &'static [u8]) -> Reader {
        Reader::new(Box::new(bytes))
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn heads_bodies_and_keep_alive() {
        run(async {
            let mut r = reader(
                b"PUT /containers/a%2Fb/properties/k?x=1&y=a+b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /ping HTTP/1.1\r\nConnection: close\r\n\r\n",
            );
            let mut req = r.read_head().await.unwrap().unwrap();
            assert_eq!(req.segments, ["containers", "a/b", "properties", "k"]);
            assert_eq!(req.query("y"), Some("a b"));
            assert!(req.keep_alive);
            assert_eq!(r.body(&mut req.body, 100).await.unwrap(), b"hello");
            let req = r.read_head().await.unwrap().unwrap();
            assert_eq!(req.segments, ["ping"]);
            assert!(!req.keep_alive);
            assert!(r.read_head().await.unwrap().is_none());
        });
    }

    #[test]
    fn chunked_bodies() {
        run(async {
            let mut r =
                reader(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n");
            let mut req = r.read_head().await.unwrap().unwrap();
            assert_eq!(r.body(&mut req.body, 100).await.unwrap(), b"abcde");
            // Not hex, a sign, a space: each refused.
            for size in [&b"zz"[..], b"+a", b" 3"] {
                let mut bytes = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                bytes.extend_from_slice(size);
                bytes.extend_from_slice(b"\r\nabc\r\n0\r\n\r\n");
                let mut r = Reader::new(Box::new(std::io::Cursor::new(bytes)));
                let mut req = r.read_head().await.unwrap().unwrap();
                assert!(
                    matches!(r.body(&mut req.body, 100).await, Err(HttpError::Bad(_))),
                    "chunk size {size:?}"
                );
            }
        });
    }

    #[test]
    fn refusals() {
        run(async {
            let mut r = reader(
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            assert!(matches!(r.read_head().await, Err(HttpError::Bad(_))));
            let mut r = reader(b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello");
            assert!(matches!(r.read_head().await, Err(HttpError::Bad(_))));
            let mut r = reader(b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n");
            let mut req = r.read_head().await.unwrap().unwrap();
            assert!(matches!(
                r.body(&mut req.body, 10).await,
                Err(HttpError::TooLarge(413, _))
            ));
            let mut r = reader(b"GARBAGE\r\n\r\n");
            assert!(matches!(r.read_head().await, Err(HttpError::Bad(_))));
            assert!(percent_decode("%zz", false).is_err());
        });
    }
}
