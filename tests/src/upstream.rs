//! The demo/test upstream: echoes what reached it, so tests can prove a request got through.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, Uri};
use axum::Router;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A running upstream.
pub struct Upstream {
    /// Its port.
    pub port: u16,
    hits: Arc<AtomicU64>,
    uris: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Upstream {
    /// Start on an ephemeral port (or `port`).
    pub fn start(port: Option<u16>) -> Upstream {
        let hits = Arc::new(AtomicU64::new(0));
        let h = Arc::clone(&hits);
        let uris = Arc::new(std::sync::Mutex::new(Vec::new()));
        let u = Arc::clone(&uris);
        let listener = crate::rt().block_on(tokio::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))).unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let h = Arc::clone(&h);
            let u = Arc::clone(&u);
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if let Ok(mut v) = u.lock() {
                    v.push(uri.to_string());
                }
                let hs: serde_json::Map<String, serde_json::Value> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_str().unwrap_or("").to_owned())))
                    .collect();
                axum::Json(serde_json::json!({
                    "upstream": "echo", "method": method.as_str(), "uri": uri.to_string(),
                    "headers": hs, "body_len": body.len(),
                    "body_sha256": missiongate_wire::b64::encode(<sha2::Sha256 as sha2::Digest>::digest(&body)),
                }))
            }
        });
        crate::rt().spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream { port, hits, uris }
    }
    /// How many requests for this URI (path and query) reached the upstream.
    pub fn seen(&self, uri: &str) -> usize {
        self.uris.lock().map(|v| v.iter().filter(|x| *x == uri).count()).unwrap_or(0)
    }

    /// Every URI (path and query) received so far, in order.
    pub fn uris(&self) -> Vec<String> {
        self.uris.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Requests received so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}
