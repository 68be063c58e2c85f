//! A Garden client for the tests, written from Garden's protocol (routes,
//! JSON shapes, hijacked run/attach connections, output streams by stream
//! id) as cloudfoundry/garden's Go client speaks it, over raw HTTP/1.1 on a
//! unix socket. Deliberately independent of grove-garden's code: blocking
//! std sockets, its own request writer and response parser.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Garden {
    pub socket: PathBuf,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// 2xx, else panic with the body.
    pub fn ok(self) -> Response {
        assert!(
            (200..300).contains(&self.status),
            "status {}: {}",
            self.status,
            String::from_utf8_lossy(&self.body)
        );
        self
    }
}

/// Percent-encode a path segment or query value.
pub fn esc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Read a response head: status and headers.
fn read_head(r: &mut impl BufRead) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    r.read_line(&mut line).expect("reading the status line");
    let mut parts = line.split_whitespace();
    assert_eq!(parts.next(), Some("HTTP/1.1"), "status line {line:?}");
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).expect("a status");
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).expect("reading a header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("a header line");
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    (status, headers)
}

/// What Garden's Go client demands of the head of a run, attach, stdout
/// or stderr answer: it reads it with httputil.ClientConn, whose Read
/// reports ErrPersistEOF (and loses the response) when the response is
/// marked `Connection: close` or its body has no framing (neither a
/// Content-Length nor chunked) -- so the hijack never happens, or an error
/// answer's Type is lost.
fn assert_client_conn_accepts(status: u16, headers: &[(String, String)]) {
    let close = header(headers, "Connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    assert!(
        !close,
        "{status}: `Connection: close` would make Go's ClientConn fail: {headers:?}"
    );
    let chunked =
        header(headers, "Transfer-Encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = header(headers, "Content-Length").is_some();
    assert!(
        chunked || length,
        "{status}: a body without framing would make Go's ClientConn fail: {headers:?}"
    );
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Copy a response body (by Content-Length, chunked, or to end of file) to
/// `out`.
fn read_body(r: &mut impl BufRead, headers: &[(String, String)], out: &mut impl Write) {
    if header(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut line = String::new();
        loop {
            line.clear();
            r.read_line(&mut line).expect("a chunk size");
            let size = usize::from_str_radix(line.trim(), 16).expect("a hex chunk size");
            if size == 0 {
                line.clear();
                r.read_line(&mut line).unwrap();
                assert_eq!(line, "\r\n", "the end of a chunked body");
                return;
            }
            std::io::copy(&mut r.by_ref().take(size as u64), out).unwrap();
            let mut crlf = [0u8; 2];
            r.read_exact(&mut crlf).expect("a chunk's CRLF");
            assert_eq!(&crlf, b"\r\n");
        }
    } else if let Some(n) = header(headers, "content-length") {
        let n: u64 = n.parse().unwrap();
        let copied = std::io::copy(&mut r.by_ref().take(n), out).unwrap();
        assert_eq!(copied, n, "a body shorter than its Content-Length");
    } else {
        std::io::copy(r, out).unwrap();
    }
}

/// A hijacked run/attach connection: newline-delimited JSON both ways.
pub struct Session {
    pub status: u16,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    pub process_id: String,
    pub stream_id: String,
}

impl Session {
    /// The next payload from the server; None at end of file.
    pub fn next_payload(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).expect("a JSON payload line")),
        }
    }

    /// Send a payload. Best effort, as Garden's client: a process that
    /// already exited may have had its connection closed; its exit status
    /// is still there to read.
    pub fn send(&mut self, payload: Value) {
        let mut line = serde_json::to_vec(&payload).unwrap();
        line.push(b'\n');
        let _ = self.writer.write_all(&line);
    }

    pub fn stdin(&mut self, data: &str) {
        let id = self.process_id.clone();
        self.send(serde_json::json!({"process_id": id, "source": 0, "data": data}));
    }

    pub fn close_stdin(&mut self) {
        let id = self.process_id.clone();
        self.send(serde_json::json!({"process_id": id, "source": 0}));
    }

    /// Payloads until the exit status (Garden's client skips others).
    pub fn exit_status(&mut self) -> i64 {
        while let Some(p) = self.next_payload() {
            if let Some(e) = p.get("error") {
                panic!("process error payload: {e}");
            }
            if let Some(s) = p.get("exit_status") {
                return s.as_i64().expect("an integer exit status");
            }
        }
        panic!("the connection ended without an exit status");
    }
}

/// A stdout or stderr stream connection, after its 200 head.
pub struct Output {
    reader: BufReader<UnixStream>,
}

impl Output {
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("reading output");
        line
    }

    pub fn read_to_end(mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.reader.read_to_end(&mut out).expect("reading output");
        out
    }
}

impl Garden {
    pub fn new(socket: &Path) -> Garden {
        Garden {
            socket: socket.to_path_buf(),
        }
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.socket).expect("connecting to grove-garden");
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        s
    }

    fn head(method: &str, path: &str, body: Option<&[u8]>, extra: &str) -> Vec<u8> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: api\r\n{extra}");
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        if let Some(b) = body {
            out.extend_from_slice(b);
        }
        out
    }

    /// One request on its own connection (as Garden's client does:
    /// DisableKeepAlives).
    pub fn request(&self, method: &str, path: &str, body: Option<&[u8]>) -> Response {
        let mut s = self.connect();
        s.write_all(&Garden::head(method, path, body, "Connection: close\r\n"))
            .unwrap();
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r);
        let mut body = Vec::new();
        read_body(&mut r, &headers, &mut body);
        Response {
            status,
            headers,
            body,
        }
    }

    /// Several requests on one kept-alive connection.
    pub fn pipelined(&self, requests: &[(&str, &str)]) -> Vec<Response> {
        let mut s = self.connect();
        let mut r = BufReader::new(s.try_clone().unwrap());
        requests
            .iter()
            .map(|(method, path)| {
                s.write_all(&Garden::head(method, path, None, "")).unwrap();
                let (status, headers) = read_head(&mut r);
                let mut body = Vec::new();
                read_body(&mut r, &headers, &mut body);
                Response {
                    status,
                    headers,
                    body,
                }
            })
            .collect()
    }

    pub fn get(&self, path: &str) -> Response {
        self.request("GET", path, None)
    }

    pub fn json(&self, method: &str, path: &str, body: &Value) -> Response {
        self.request(method, path, Some(&serde_json::to_vec(body).unwrap()))
    }

    /// StreamIn: a tar body sent chunked from `tar`, `piece` bytes a chunk.
    pub fn stream_in(&self, handle: &str, user: &str, dest: &str, tar: &mut impl Read) -> Response {
        let mut s = self.connect();
        let path = format!(
            "/containers/{}/files?user={}&destination={}",
            esc(handle),
            esc(user),
            esc(dest)
        );
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: api\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = tar.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            s.write_all(format!("{n:x}\r\n").as_bytes()).unwrap();
            s.write_all(&buf[..n]).unwrap();
            s.write_all(b"\r\n").unwrap();
        }
        s.write_all(b"0\r\n\r\n").unwrap();
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r);
        let mut body = Vec::new();
        read_body(&mut r, &headers, &mut body);
        Response {
            status,
            headers,
            body,
        }
    }

    /// StreamOut: the tar copied into `out`; the status and headers (the
    /// body too when it is an error).
    pub fn stream_out(
        &self,
        handle: &str,
        user: &str,
        source: &str,
        out: &mut impl Write,
    ) -> Response {
        let mut s = self.connect();
        let path = format!(
            "/containers/{}/files?user={}&source={}",
            esc(handle),
            esc(user),
            esc(source)
        );
        s.write_all(&Garden::head("GET", &path, None, "Connection: close\r\n"))
            .unwrap();
        let mut r = BufReader::new(s);
        let (status, headers) = read_head(&mut r);
        let mut body = Vec::new();
        if status == 200 {
            read_body(&mut r, &headers, out);
        } else {
            read_body(&mut r, &headers, &mut body);
        }
        Response {
            status,
            headers,
            body,
        }
    }

    /// A run or attach: Err(the error response) or the hijacked session
    /// after its first payload.
    fn hijack(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Session, Response> {
        let mut s = self.connect();
        s.write_all(&Garden::head(method, path, body, "")).unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let (status, headers) = read_head(&mut reader);
        assert_client_conn_accepts(status, &headers);
        if !(200..300).contains(&status) {
            let mut body = Vec::new();
            read_body(&mut reader, &headers, &mut body);
            return Err(Response {
                status,
                headers,
                body,
            });
        }
        let mut session = Session {
            status,
            reader,
            writer: s,
            process_id: String::new(),
            stream_id: String::new(),
        };
        let first = session.next_payload().expect("the first payload");
        session.process_id = first["process_id"].as_str().expect("process_id").into();
        session.stream_id = first["stream_id"].as_str().expect("stream_id").into();
        Ok(session)
    }

    pub fn run(&self, handle: &str, spec: &Value) -> Result<Session, Response> {
        self.hijack(
            "POST",
            &format!("/containers/{}/processes", esc(handle)),
            Some(&serde_json::to_vec(spec).unwrap()),
        )
    }

    pub fn attach(&self, handle: &str, process: &str) -> Result<Session, Response> {
        self.hijack(
            "GET",
            &format!("/containers/{}/processes/{}", esc(handle), esc(process)),
            None,
        )
    }

    /// The stdout (or stderr) connection of a session's stream id.
    pub fn output(
        &self,
        handle: &str,
        process: &str,
        stream: &str,
        which: &str,
    ) -> Result<Output, Response> {
        let mut s = self.connect();
        let path = format!(
            "/containers/{}/processes/{}/attaches/{}/{which}",
            esc(handle),
            esc(process),
            esc(stream)
        );
        s.write_all(&Garden::head("GET", &path, None, "")).unwrap();
        let mut reader = BufReader::new(s);
        let (status, headers) = read_head(&mut reader);
        assert_client_conn_accepts(status, &headers);
        if status != 200 {
            let mut body = Vec::new();
            read_body(&mut reader, &headers, &mut body);
            return Err(Response {
                status,
                headers,
                body,
            });
        }
        Ok(Output { reader })
    }

    /// Run to the end with stdin: (exit status, stdout, stderr).
    pub fn exec(&self, handle: &str, spec: &Value, stdin: Option<&str>) -> (i64, Vec<u8>, Vec<u8>) {
        let mut session = self.run(handle, spec).unwrap_or_else(|r| {
            panic!(
                "run {spec}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )
        });
        let (pid, sid) = (session.process_id.clone(), session.stream_id.clone());
        let out = self.output(handle, &pid, &sid, "stdout").expect("stdout");
        let err = self.output(handle, &pid, &sid, "stderr").expect("stderr");
        let out = std::thread::spawn(move || out.read_to_end());
        let err = std::thread::spawn(move || err.read_to_end());
        if let Some(data) = stdin {
            session.stdin(data);
        }
        session.close_stdin();
        let status = session.exit_status();
        (status, out.join().unwrap(), err.join().unwrap())
    }
}
