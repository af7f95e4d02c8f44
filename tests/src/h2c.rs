//! Cleartext HTTP/2 with prior knowledge (RFC 9113 §3.3) through the `h2` crate: a real HTTP/2
//! client that can send what HTTP/1.1 cannot, a trailers frame after the body, and any bytes in a
//! header value (obs-text is legal on the wire; only NUL, CR and LF are not).

use bytes::Bytes;
use std::time::Duration;

use crate::http::Response;

/// One HTTP/2 request.
#[derive(Debug, Clone)]
pub struct H2Req {
    /// Method.
    pub method: String,
    /// `:path` (must be a valid URI path and query for the `http` crate).
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// Regular header fields (lower-case names), any bytes but NUL, CR, LF in the values.
    pub headers: Vec<(String, Vec<u8>)>,
    /// DATA frames, in order (a pause before every one after the first).
    pub chunks: Vec<Vec<u8>>,
    /// A trailers HEADERS frame ending the stream, when set.
    pub trailers: Option<Vec<(String, Vec<u8>)>>,
    /// Pause between DATA frames.
    pub pause: Duration,
}

impl H2Req {
    /// `METHOD path` to `api.partner.example`.
    pub fn new(method: &str, path: &str) -> H2Req {
        H2Req {
            method: method.into(),
            path: path.into(),
            authority: "api.partner.example".into(),
            headers: Vec::new(),
            chunks: Vec::new(),
            trailers: None,
            pause: Duration::ZERO,
        }
    }

    /// Add a header field.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> H2Req {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }
}

fn header_map(fields: &[(String, Vec<u8>)]) -> Result<http::HeaderMap, String> {
    let mut m = http::HeaderMap::new();
    for (k, v) in fields {
        let name = http::header::HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header name {k}: {e}"))?;
        let value = http::HeaderValue::from_bytes(v).map_err(|e| format!("header value of {k}: {e}"))?;
        m.append(name, value);
    }
    Ok(m)
}

fn build(req: &H2Req) -> Result<http::Request<()>, String> {
    let uri = format!("http://{}{}", req.authority, req.path);
    let mut builder = http::Request::builder().method(req.method.as_str()).uri(uri.as_str());
    for (k, v) in header_map(&req.headers)?.iter() {
        builder = builder.header(k, v);
    }
    builder.body(()).map_err(|e| format!("request: {e}"))
}

/// One HTTP/2 connection to Envoy (so one Envoy worker): several requests can share it.
#[derive(Clone)]
pub struct H2Conn {
    send: h2::client::SendRequest<Bytes>,
}

impl H2Conn {
    /// Connect to 127.0.0.1:port and do the HTTP/2 handshake.
    pub async fn open(port: u16) -> Result<H2Conn, String> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let (send, conn) = h2::client::handshake(tcp).await.map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(H2Conn { send })
    }

    /// Send a request and read the whole answer (20 s at most). A reset stream is an `Err`.
    pub async fn send(&self, req: &H2Req) -> Result<Response, String> {
        tokio::time::timeout(Duration::from_secs(20), self.exchange(req))
            .await
            .map_err(|_| "no answer within 20 s".to_owned())?
    }

    /// Send the head and any DATA frames without ending the stream, wait for `until`, then reset
    /// the stream (`RST_STREAM CANCEL`): a client that gives up while the gateway waits.
    pub async fn abandon(&self, req: &H2Req, until: impl std::future::Future<Output = ()>) -> Result<(), String> {
        let request = build(req)?;
        let mut send = self.send.clone().ready().await.map_err(|e| format!("h2 not ready: {e}"))?;
        let (_response, mut stream) = send.send_request(request, false).map_err(|e| format!("send headers: {e}"))?;
        for c in &req.chunks {
            stream.send_data(Bytes::copy_from_slice(c), false).map_err(|e| format!("send data: {e}"))?;
        }
        until.await;
        stream.send_reset(h2::Reason::CANCEL);
        Ok(())
    }

    async fn exchange(&self, req: &H2Req) -> Result<Response, String> {
        let request = build(req)?;
        let mut send = self.send.clone().ready().await.map_err(|e| format!("h2 not ready: {e}"))?;
        let end_at_headers = req.chunks.is_empty() && req.trailers.is_none();
        let (response, mut stream) =
            send.send_request(request, end_at_headers).map_err(|e| format!("send headers: {e}"))?;
        // A server may answer before the request is complete and then close the stream (RFC 9113
        // §8.1): sending stops there, and the answer already received is read.
        let mut unsent = None;
        for (i, c) in req.chunks.iter().enumerate() {
            if i > 0 && !req.pause.is_zero() {
                tokio::time::sleep(req.pause).await;
            }
            let last = i + 1 == req.chunks.len() && req.trailers.is_none();
            if let Err(e) = stream.send_data(Bytes::copy_from_slice(c), last) {
                unsent = Some(format!("send data: {e}"));
                break;
            }
        }
        if let (Some(t), None) = (&req.trailers, &unsent) {
            if let Err(e) = stream.send_trailers(header_map(t)?) {
                unsent = Some(format!("send trailers: {e}"));
            }
        }
        let response = response.await.map_err(|e| match &unsent {
            Some(u) => format!("{u}; stream: {e}"),
            None => format!("stream: {e}"),
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let mut body_stream = response.into_body();
        let mut body = Vec::new();
        while let Some(chunk) = body_stream.data().await {
            let chunk = chunk.map_err(|e| format!("body: {e}"))?;
            let _ = body_stream.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        Ok(Response { status, headers, body })
    }
}

/// Send one request on a fresh connection (blocking).
pub fn send(port: u16, req: &H2Req) -> Result<Response, String> {
    crate::rt().block_on(async {
        let c = H2Conn::open(port).await?;
        c.send(req).await
    })
}
