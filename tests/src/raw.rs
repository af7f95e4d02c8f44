//! Byte-exact HTTP/1.1 on both sides of Envoy, for the adversarial tests: a client that writes
//! hand-made bytes (obs-text in header values and in the request target, backslashes, chunked
//! bodies with trailers, pauses between chunks) and an upstream that records exactly what Envoy
//! forwarded (request target, headers, body, and when the request head arrived).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http::Response;

/// How a request body is framed on the wire.
#[derive(Debug, Clone, Default)]
pub enum Body {
    /// No body, no framing header.
    #[default]
    None,
    /// `Content-Length` framing.
    Length(Vec<u8>),
    /// `Transfer-Encoding: chunked`: these chunks (a pause before every chunk after the first),
    /// then the last chunk and these trailer fields.
    Chunked { chunks: Vec<Vec<u8>>, trailers: Vec<(String, Vec<u8>)>, pause: Duration },
}

/// A raw HTTP/1.1 request: every byte of the target and the header values is the caller's.
#[derive(Debug, Clone)]
pub struct RawReq {
    /// Method.
    pub method: String,
    /// Request target, as sent.
    pub target: Vec<u8>,
    /// Header fields in order (no `Host` is added: the caller sends it).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Body,
}

impl RawReq {
    /// `METHOD target` with `Host: api.partner.example`.
    pub fn new(method: &str, target: impl Into<Vec<u8>>) -> RawReq {
        RawReq {
            method: method.into(),
            target: target.into(),
            headers: vec![("Host".into(), b"api.partner.example".to_vec())],
            body: Body::None,
        }
    }

    /// Add a header field (any bytes in the value).
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> RawReq {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replace every field of this name (case-insensitive) by one with this value.
    pub fn set_header(mut self, name: &str, value: impl Into<Vec<u8>>) -> RawReq {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.header(name, value)
    }

    /// The body.
    pub fn body(mut self, b: Body) -> RawReq {
        self.body = b;
        self
    }

    /// The bytes of the request head.
    pub fn head(&self) -> Vec<u8> {
        let mut h = Vec::new();
        h.extend_from_slice(self.method.as_bytes());
        h.push(b' ');
        h.extend_from_slice(&self.target);
        h.extend_from_slice(b" HTTP/1.1\r\n");
        for (k, v) in &self.headers {
            h.extend_from_slice(k.as_bytes());
            h.extend_from_slice(b": ");
            h.extend_from_slice(v);
            h.extend_from_slice(b"\r\n");
        }
        match &self.body {
            Body::None => {}
            Body::Length(b) => h.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes()),
            Body::Chunked { .. } => h.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        }
        h.extend_from_slice(b"Connection: close\r\n\r\n");
        h
    }

    /// Send to 127.0.0.1:port and read the answer (20 s at most).
    pub fn send(&self, port: u16) -> std::io::Result<Response> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_nodelay(true)?;
        s.write_all(&self.head())?;
        match &self.body {
            Body::None => {}
            Body::Length(b) => s.write_all(b)?,
            Body::Chunked { chunks, trailers, pause } => {
                for (i, c) in chunks.iter().enumerate() {
                    if i > 0 && !pause.is_zero() {
                        s.flush()?;
                        std::thread::sleep(*pause);
                    }
                    s.write_all(format!("{:x}\r\n", c.len()).as_bytes())?;
                    s.write_all(c)?;
                    s.write_all(b"\r\n")?;
                }
                let mut end = b"0\r\n".to_vec();
                for (k, v) in trailers {
                    end.extend_from_slice(k.as_bytes());
                    end.extend_from_slice(b": ");
                    end.extend_from_slice(v);
                    end.extend_from_slice(b"\r\n");
                }
                end.extend_from_slice(b"\r\n");
                s.write_all(&end)?;
            }
        }
        s.flush()?;
        read_response(&mut BufReader::new(s), &self.method)
    }
}

fn line(r: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut l = Vec::new();
    r.read_until(b'\n', &mut l)?;
    while l.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        l.pop();
    }
    Ok(l)
}

/// Read one HTTP/1.1 response (header values decoded lossily).
pub fn read_response(r: &mut impl BufRead, method: &str) -> std::io::Result<Response> {
    let status_line = line(r)?;
    let status: u16 =
        String::from_utf8_lossy(&status_line).split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(
            || std::io::Error::other(format!("bad status line {:?}", String::from_utf8_lossy(&status_line))),
        )?;
    let mut headers = Vec::new();
    loop {
        let l = line(r)?;
        if l.is_empty() {
            break;
        }
        let l = String::from_utf8_lossy(&l).into_owned();
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v): &(String, String)| v.clone());
    let mut body = Vec::new();
    if method == "HEAD" || status == 204 || status == 304 {
        // no body
    } else if let Some(len) = get("content-length") {
        let n: usize = len.parse().map_err(|_| std::io::Error::other("content-length"))?;
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let l = line(r)?;
            let n = usize::from_str_radix(String::from_utf8_lossy(&l).trim(), 16)
                .map_err(|_| std::io::Error::other("chunk size"))?;
            if n == 0 {
                while !line(r)?.is_empty() {}
                break;
            }
            let mut c = vec![0; n];
            r.read_exact(&mut c)?;
            body.extend_from_slice(&c);
            line(r)?;
        }
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response { status, headers, body })
}

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When its head arrived (before its body).
    pub at: Instant,
    /// Method.
    pub method: String,
    /// Request target, byte for byte.
    pub target: Vec<u8>,
    /// Header fields (names lower-cased), values byte for byte.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
    /// Whether the whole body arrived.
    pub complete: bool,
}

impl Seen {
    /// First value of a header.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_slice())
    }
    /// The target as text (lossy).
    pub fn target_text(&self) -> String {
        String::from_utf8_lossy(&self.target).into_owned()
    }
}

/// An upstream that records every request byte for byte and answers `200` with a small JSON body.
pub struct RawUpstream {
    /// Its port.
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl RawUpstream {
    /// Start on an ephemeral port.
    pub fn start() -> RawUpstream {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let listener = crate::rt().block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0))).unwrap();
        let port = listener.local_addr().unwrap().port();
        let s = Arc::clone(&seen);
        crate::rt().spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let _ = serve_conn(conn, s).await;
                });
            }
        });
        RawUpstream { port, seen }
    }

    /// Everything received so far.
    pub fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The requests that carried `x-case: <marker>`.
    pub fn marked(&self, marker: &str) -> Vec<Seen> {
        self.all().into_iter().filter(|s| s.header("x-case") == Some(marker.as_bytes())).collect()
    }
}

async fn serve_conn(conn: tokio::net::TcpStream, seen: Arc<Mutex<Vec<Seen>>>) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut r = tokio::io::BufReader::new(conn);
    async fn line<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
        let mut l = Vec::new();
        if r.read_until(b'\n', &mut l).await? == 0 {
            return Ok(None);
        }
        while l.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            l.pop();
        }
        Ok(Some(l))
    }
    loop {
        let Some(request_line) = line(&mut r).await? else { return Ok(()) };
        if request_line.is_empty() {
            continue;
        }
        let at = Instant::now();
        let mut parts = request_line.splitn(3, |b| *b == b' ');
        let method = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
        let target = parts.next().unwrap_or_default().to_vec();
        let mut headers = Vec::new();
        loop {
            let Some(l) = line(&mut r).await? else { return Ok(()) };
            if l.is_empty() {
                break;
            }
            if let Some(i) = l.iter().position(|b| *b == b':') {
                let name = String::from_utf8_lossy(&l[..i]).trim().to_ascii_lowercase();
                let mut v = &l[i + 1..];
                while v.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                    v = &v[1..];
                }
                headers.push((name, v.to_vec()));
            }
        }
        let idx = {
            let mut g = seen.lock().unwrap();
            g.push(Seen {
                at,
                method: method.clone(),
                target,
                headers: headers.clone(),
                body: Vec::new(),
                complete: false,
            });
            g.len() - 1
        };
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| String::from_utf8_lossy(v).into_owned());
        let mut body = Vec::new();
        if get("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
            loop {
                let Some(l) = line(&mut r).await? else { return Ok(()) };
                let size = String::from_utf8_lossy(&l);
                let size = size.split(';').next().unwrap_or("").trim();
                let n = usize::from_str_radix(size, 16).map_err(|_| std::io::Error::other("chunk size"))?;
                if n == 0 {
                    loop {
                        match line(&mut r).await? {
                            None => return Ok(()),
                            Some(l) if l.is_empty() => break,
                            Some(_) => {}
                        }
                    }
                    break;
                }
                let mut c = vec![0; n];
                r.read_exact(&mut c).await?;
                body.extend_from_slice(&c);
                line(&mut r).await?;
            }
        } else if let Some(n) = get("content-length").and_then(|v| v.trim().parse::<usize>().ok()) {
            body.resize(n, 0);
            r.read_exact(&mut body).await?;
        }
        let target_text = {
            let mut g = seen.lock().unwrap();
            let e = &mut g[idx];
            e.body = body;
            e.complete = true;
            e.target_text()
        };
        let answer = serde_json::json!({"upstream": "raw", "target": target_text}).to_string();
        let close = get("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n",
            answer.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        let w = r.get_mut();
        w.write_all(head.as_bytes()).await?;
        w.write_all(answer.as_bytes()).await?;
        w.flush().await?;
        if close {
            return Ok(());
        }
    }
}
