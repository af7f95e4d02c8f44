//! A raw HTTP/1.1 client: the tests need full control (duplicate headers, 64 KiB headers, CONNECT,
//! chunked bodies), which convenient clients normalise away.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// First header value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    /// All values of a header.
    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
    /// Body as JSON.
    /// The refusing worker's id in a problem+json `decision_id` (`<per-VM random prefix>-<seq>`):
    /// each Envoy worker runs its own Wasm VM with its own prefix, so two different prefixes mean two
    /// different workers answered.
    pub fn worker(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v["decision_id"].as_str()?.rsplit_once('-').map(|(prefix, _)| prefix.to_owned())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A request builder.
#[derive(Debug, Clone)]
pub struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    chunks: Option<Vec<Vec<u8>>>,
}

impl Req {
    /// `METHOD target` (origin-form path, or an absolute URI for a proxy).
    pub fn new(method: &str, target: &str) -> Req {
        Req { method: method.into(), target: target.into(), headers: Vec::new(), body: None, chunks: None }
    }
    /// Add a header (duplicates allowed).
    pub fn header(mut self, k: &str, v: &str) -> Req {
        self.headers.push((k.into(), v.into()));
        self
    }
    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Req {
        self.header("Authorization", &format!("Bearer {token}"))
    }
    /// A body with Content-Length.
    pub fn body(mut self, b: impl Into<Vec<u8>>) -> Req {
        self.body = Some(b.into());
        self
    }
    /// A chunked body sent as these chunks.
    pub fn chunked(mut self, chunks: Vec<Vec<u8>>) -> Req {
        self.chunks = Some(chunks);
        self
    }
    /// Send to 127.0.0.1:port and read the response.
    pub fn send(&self, port: u16) -> Response {
        self.try_send(port).unwrap_or_else(|e| panic!("request to :{port} failed: {e}"))
    }
    /// Send, reporting I/O errors.
    pub fn try_send(&self, port: u16) -> std::io::Result<Response> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        let has_host = self.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host"));
        if !has_host {
            head.push_str("Host: api.partner.example\r\n");
        }
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = &self.body {
            head.push_str(&format!("Content-Length: {}\r\n", b.len()));
        } else if self.chunks.is_some() {
            head.push_str("Transfer-Encoding: chunked\r\n");
        }
        head.push_str("Connection: close\r\n\r\n");
        s.write_all(head.as_bytes())?;
        if let Some(b) = &self.body {
            s.write_all(b)?;
        }
        if let Some(chunks) = &self.chunks {
            for c in chunks {
                s.write_all(format!("{:x}\r\n", c.len()).as_bytes())?;
                s.write_all(c)?;
                s.write_all(b"\r\n")?;
                s.flush()?;
                std::thread::sleep(Duration::from_millis(2));
            }
            s.write_all(b"0\r\n\r\n")?;
        }
        read_response(&mut BufReader::new(s), &self.method)
    }
}

fn read_response(r: &mut impl BufRead, method: &str) -> std::io::Result<Response> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l)?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v): &(String, String)| v.clone());
    let mut body = Vec::new();
    if method == "HEAD" || status == 204 || status == 304 || (method == "CONNECT" && status == 200) {
        // no body
    } else if let Some(len) = get("content-length") {
        let n: usize = len.parse().map_err(|_| std::io::Error::other("content-length"))?;
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut l = String::new();
            r.read_line(&mut l)?;
            let n = usize::from_str_radix(l.trim(), 16).map_err(|_| std::io::Error::other("chunk size"))?;
            if n == 0 {
                let mut end = String::new();
                r.read_line(&mut end)?;
                break;
            }
            let mut c = vec![0; n];
            r.read_exact(&mut c)?;
            body.extend_from_slice(&c);
            let mut crlf = String::new();
            r.read_line(&mut crlf)?;
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response { status, headers, body })
}

/// Panics unless `r` is the filter's `application/problem+json` denial (SPEC §5) with this status
/// and reason: `type`, `title`, `detail` present, and no token material echoed.
pub fn assert_denied(r: &Response, status: u16, reason: &str) {
    assert_eq!(r.status, status, "expected {status} {reason}, got {} {}", r.status, r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let b = r.json();
    assert_eq!(b["reason"], reason, "{b}");
    assert_eq!(b["status"], status);
    assert!(b["type"].as_str().unwrap().ends_with(reason));
    assert!(b["title"].is_string() && b["detail"].is_string());
    assert!(!r.text().contains("eyJ"), "response leaks a token: {}", r.text());
}

/// Open a CONNECT tunnel through the proxy. Returns the CONNECT response and, on 200, the tunnel.
pub fn connect(port: u16, target: &str, headers: &[(&str, &str)]) -> (Response, Option<TcpStream>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let resp = read_response(&mut reader, "CONNECT").unwrap();
    if resp.status == 200 {
        (resp, Some(s))
    } else {
        (resp, None)
    }
}

/// Send a plain HTTP/1.1 request over an open stream (a tunnel) and read the answer.
pub fn over(stream: TcpStream, req: &str) -> Response {
    let mut s = stream;
    s.write_all(req.as_bytes()).unwrap();
    read_response(&mut BufReader::new(s), "GET").unwrap()
}

/// The path (and query) of an absolute URL.
pub fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("/").to_owned()
}
