//! The forward-proxy test kit: a loopback DNS server Envoy's DNS cache asks (no `/etc/hosts`), a
//! test CA made with `rcgen`, and TLS upstreams (rustls + hyper) with certificates from it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio_rustls::rustls;

/// A UDP DNS server on 127.0.0.1 answering `A` queries for the names it was given (NXDOMAIN for
/// every other name, an empty answer for other types).
pub struct Dns {
    /// Its port.
    pub port: u16,
    names: Arc<Mutex<BTreeMap<String, Ipv4Addr>>>,
    queries: Arc<AtomicU64>,
}

impl Dns {
    /// Start with `names` (lower-case, no trailing dot).
    pub fn start(names: &[(&str, Ipv4Addr)]) -> Dns {
        let map: BTreeMap<String, Ipv4Addr> = names.iter().map(|(n, a)| (n.to_ascii_lowercase(), *a)).collect();
        let names = Arc::new(Mutex::new(map));
        let queries = Arc::new(AtomicU64::new(0));
        let sock = crate::rt().block_on(tokio::net::UdpSocket::bind("127.0.0.1:0")).unwrap();
        let port = sock.local_addr().unwrap().port();
        let (n, q) = (Arc::clone(&names), Arc::clone(&queries));
        crate::rt().spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((len, from)) = sock.recv_from(&mut buf).await else { continue };
                q.fetch_add(1, Ordering::SeqCst);
                let table = n.lock().map(|m| m.clone()).unwrap_or_default();
                if let Some(answer) = dns_answer(buf.get(..len).unwrap_or(&[]), &table) {
                    let _ = sock.send_to(&answer, from).await;
                }
            }
        });
        Dns { port, names, queries }
    }

    /// Add or change a name.
    pub fn set(&self, name: &str, addr: Ipv4Addr) {
        self.names.lock().unwrap().insert(name.to_ascii_lowercase(), addr);
    }

    /// Queries received so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }
}

/// The answer to one DNS query (RFC 1035 §4), or `None` for what is not a single-question query.
fn dns_answer(q: &[u8], table: &BTreeMap<String, Ipv4Addr>) -> Option<Vec<u8>> {
    if q.len() < 12 || q.get(4..6)? != [0, 1] {
        return None;
    }
    // The question: labels, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let l = *q.get(i)? as usize;
        i += 1;
        if l == 0 {
            break;
        }
        if l > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + l)?).to_ascii_lowercase());
        i += l;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question = q.get(12..i + 4)?;
    let name = labels.join(".");
    let found = table.get(&name);
    let mut out = Vec::new();
    out.extend_from_slice(q.get(0..2)?); // id
    let rcode = if found.is_some() { 0 } else { 3 }; // NXDOMAIN for unknown names
    out.extend_from_slice(&[0x81 | (q.get(2)? & 0x01), 0x80 | rcode]); // QR, AA, RD echoed; RA
    let ancount: u16 = if qtype == 1 && found.is_some() { 1 } else { 0 };
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&ancount.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    if let (1, Some(addr)) = (ancount, found) {
        out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]); // name ptr, A, IN, TTL 5 s
        out.extend_from_slice(&addr.octets());
    }
    Some(out)
}

/// A test certificate authority (rcgen) and the PEM file that holds its certificate.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// `<target>/e2e/<name>.pem`: the CA certificate, for clients and Envoy to trust.
    pub pem_file: PathBuf,
}

impl TestCa {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, format!("missiongate test CA {name}"));
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        let dir = crate::repo_root().join("target/e2e");
        std::fs::create_dir_all(&dir).unwrap();
        let pem_file = dir.join(format!("{}-{}.pem", name, crate::rand_id("")));
        std::fs::write(&pem_file, cert.pem()).unwrap();
        TestCa { cert, key, pem_file }
    }

    /// A leaf certificate for `names` and its key, in PEM.
    pub fn leaf_pem(&self, names: &[&str]) -> (String, String) {
        let p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf certificate for `names` and its PKCS#8 key (DER).
    pub fn leaf(&self, names: &[&str]) -> (Vec<u8>, Vec<u8>) {
        let p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }
}

/// A request as an upstream saw it: method, URI (path and query), body.
pub type Seen = (String, String, Vec<u8>);

/// An HTTPS echo upstream on 127.0.0.1 (rustls, HTTP/1.1), serving a certificate for `names`.
pub struct TlsUpstream {
    /// Its port.
    pub port: u16,
    hits: Arc<AtomicU64>,
    requests: Arc<Mutex<Vec<Seen>>>,
}

impl TlsUpstream {
    /// Start with a certificate for `names` from `ca`.
    pub fn start(ca: &TestCa, names: &[&str]) -> TlsUpstream {
        let (cert, key) = ca.leaf(names);
        TlsUpstream::start_with(cert, key)
    }

    /// Start on a given loopback port (the demo's), with a certificate for `names` from `ca`.
    pub fn start_on(ca: &TestCa, names: &[&str], port: u16) -> TlsUpstream {
        let (cert, key) = ca.leaf(names);
        TlsUpstream::start_with_on(cert, key, port)
    }

    /// Start with a certificate and key from PEM files (e.g. made by `captive-portal gateway-ca`).
    pub fn start_pem(cert: &std::path::Path, key: &std::path::Path) -> TlsUpstream {
        use rustls::pki_types::pem::PemObject;
        let cert = rustls::pki_types::CertificateDer::from_pem_file(cert).unwrap();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_file(key).unwrap();
        TlsUpstream::start_with(cert.to_vec(), key.secret_pkcs8_der().to_vec())
    }

    /// Start with a DER certificate and PKCS#8 key.
    pub fn start_with(cert: Vec<u8>, key: Vec<u8>) -> TlsUpstream {
        TlsUpstream::start_with_on(cert, key, 0)
    }

    /// Start with a DER certificate and PKCS#8 key on `port` (0: an ephemeral one).
    pub fn start_with_on(cert: Vec<u8>, key: Vec<u8>, port: u16) -> TlsUpstream {
        // ring (no C toolchain or cmake needed); its provider lacks the post-quantum key exchange,
        // which this loopback test server does not need.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(rustls::pki_types::PrivatePkcs8KeyDer::from(key)),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = crate::rt().block_on(tokio::net::TcpListener::bind(("127.0.0.1", port))).unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(AtomicU64::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (h, r) = (Arc::clone(&hits), Arc::clone(&requests));
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: bytes::Bytes| {
                let (h, r) = (Arc::clone(&h), Arc::clone(&r));
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    if let Ok(mut v) = r.lock() {
                        v.push((method.to_string(), uri.to_string(), body.to_vec()));
                    }
                    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                    let auth = headers.contains_key("authorization");
                    axum::Json(serde_json::json!({
                        "upstream": "tls-echo", "method": method.as_str(), "uri": uri.to_string(), "host": host,
                        "authorization_forwarded": auth, "body_len": body.len(),
                    }))
                }
            },
        );
        crate::rt().spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let svc = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        TlsUpstream { port, hits, requests }
    }

    /// Requests that reached it (completed TLS handshake and HTTP request).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Every request (method, URI, body) received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.requests.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// The project's Python with `requests` (`.venv/bin/python`, made by `make tools`).
pub fn python_with_requests() -> PathBuf {
    let py = crate::repo_root().join(".venv/bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import requests"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "{} has no `requests`: run `make python-requests` (make test does it)", py.display());
    py
}

/// The hosts the shipped config inspects (one filter chain each in the `inspect` listener).
pub const INSPECTED: &[&str] = &["api.partner.example"];

/// A gateway CA for this test process: a directory with `ca.pem` and `<host>.pem`/`<host>.key.pem`
/// for every inspected host, what `captive-portal gateway-ca` writes to `envoy/gateway-ca/`.
pub fn gateway_ca() -> &'static (PathBuf, PathBuf) {
    static CA: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let ca = TestCa::new("gateway-ca");
        let dir = crate::repo_root().join("target/e2e").join(crate::rand_id("gateway-ca-"));
        std::fs::create_dir_all(&dir).unwrap();
        for h in INSPECTED {
            let (cert, key) = ca.leaf_pem(&[h]);
            std::fs::write(dir.join(format!("{h}.pem")), cert).unwrap();
            std::fs::write(dir.join(format!("{h}.key.pem")), key).unwrap();
        }
        let pem = dir.join("ca.pem");
        std::fs::copy(&ca.pem_file, &pem).unwrap();
        (dir, pem)
    })
}
