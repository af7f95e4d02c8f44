//! The filter holds every undecided request and survives every byte (issue 10, items 1 and 2),
//! against the real Envoy with the shipped listener:
//!
//! - over cleartext HTTP/2 (prior knowledge, the `h2` crate), a request that ends with trailers
//!   while the filter waits for the issuer's keys, Mission Status, the PDP or the rest of a bound
//!   body never reaches the upstream before the decision, and gets the decision's answer;
//! - header values that are not UTF-8 (obs-text over raw HTTP/1.1, any byte over HTTP/2) in ten
//!   different headers are answered by each header's grammar, and afterwards both workers still
//!   serve and the Wasm VM never failed.

use bytes::Bytes;
use missiongate_tests::authority::Gate;
use missiongate_tests::envoy::Opts;
use missiongate_tests::http::Req;
use missiongate_tests::world::WithPdp;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;

type World = WithPdp;

/// Envoy with the shipped config and `concurrency` workers; its PDP is the stand-in PDP. The
/// callout timeouts are raised from the shipped 1 s to 5 s: these tests hold a dependency's answer
/// while they look, and on a loaded machine the look may take longer than 1 s. What a timeout does
/// is tested in `e2e_pdp` and `e2e_tokens`.
fn world(concurrency: u32) -> World {
    let replace = vec![("\"timeout_ms\": 1000".to_owned(), "\"timeout_ms\": 5000".to_owned())];
    WithPdp::start(Opts { concurrency, replace, ..Opts::default() })
}

/// An HTTP/2 answer.
#[derive(Debug)]
struct H2Response {
    status: u16,
    body: Vec<u8>,
}

impl H2Response {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// One request over a fresh cleartext HTTP/2 connection: headers, then each chunk as a DATA
/// frame, then (when given) trailers ending the stream.
async fn h2_send(
    port: u16,
    method: &str,
    path: &str,
    headers: Vec<(&'static str, Vec<u8>)>,
    chunks: Vec<Vec<u8>>,
    trailers: Option<Vec<(&'static str, &'static str)>>,
) -> H2Response {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut client = client.ready().await.unwrap();
    let mut req = http::Request::builder().method(method).uri(format!("http://api.partner.example{path}"));
    for (k, v) in headers {
        req = req.header(k, http::HeaderValue::from_bytes(&v).unwrap());
    }
    let end_now = chunks.is_empty() && trailers.is_none();
    let (resp, mut send) = client.send_request(req.body(()).unwrap(), end_now).unwrap();
    let n = chunks.len();
    for (i, c) in chunks.into_iter().enumerate() {
        let last = i + 1 == n && trailers.is_none();
        send.send_data(Bytes::from(c), last).unwrap();
    }
    if let Some(t) = trailers {
        let mut map = http::HeaderMap::new();
        for (k, v) in t {
            map.insert(k, http::HeaderValue::from_static(v));
        }
        send.send_trailers(map).unwrap();
    }
    let resp = resp.await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let c = chunk.unwrap();
        let _ = body.flow_control().release_capacity(c.len());
        out.extend_from_slice(&c);
    }
    H2Response { status, body: out }
}

fn bearer(token: &str) -> (&'static str, Vec<u8>) {
    ("authorization", format!("Bearer {token}").into_bytes())
}

/// Send `req` in the background with `gate` (in front of the dependency it will wait on) closed.
/// Once the request has reached the gate, and a moment more in which a wrongly released request
/// would reach the upstream, the upstream must not have seen `path` again and no answer may have come;
/// then the gate opens and the answer is returned. Nothing here races a clock: the dependency
/// answers only when the test lets it.
fn held(
    w: &World,
    path: &str,
    gate: &Gate,
    req: impl std::future::Future<Output = H2Response> + Send + 'static,
) -> H2Response {
    let before = w.up.seen(path);
    gate.close();
    let task = missiongate_tests::rt().spawn(req);
    let asked = gate.wait_for_arrival(Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    let seen = w.up.seen(path);
    let finished = task.is_finished();
    gate.open();
    assert!(asked, "{path}: the dependency was never asked");
    assert_eq!(seen, before, "{path}: the undecided request reached the upstream");
    assert!(!finished, "{path}: answered before the dependency did");
    let r = missiongate_tests::rt().block_on(async {
        tokio::time::timeout(Duration::from_secs(30), task).await.expect("an answer once the dependency answered")
    });
    r.unwrap()
}

fn reason(r: &H2Response) -> String {
    r.json()["reason"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn h2_trailers_never_push_an_undecided_request_through() {
    let w = world(1);
    let (authority, pdp) = (w.auth.gate(), w.pdp.gate());
    let trailers = || Some(vec![("x-checksum", "abc")]);

    // 1. Waiting for Mission Status (a Mission not seen yet; the authority, held, says revoked).
    let (mission, token) = w.auth.active_token();
    w.auth.set_mission(&mission, "revoked");
    let path = "/v1/hold-status";
    let r = held(
        &w,
        path,
        &authority,
        h2_send(w.envoy.port, "POST", path, vec![bearer(&token)], vec![b"a".to_vec()], trailers()),
    );
    assert_eq!((r.status, reason(&r).as_str()), (401, "mission_inactive"), "{r:?}");
    assert_eq!(w.up.seen(path), 0);

    // 2. Waiting for the issuer's keys (a new kid), then Mission Status: allowed once both came.
    // An unknown kid is refetched only when the last JWKS fetch is `jwks_min_refetch_seconds` (1 s,
    // counted in whole seconds) old; before that it is refused at once. Let that pass first.
    std::thread::sleep(Duration::from_millis(2100));
    let signer = w.auth.rotate("k-hold");
    let (mission, _) = w.auth.active_token();
    let token = signer.sign("at+jwt", &w.auth.claims(&mission));
    let path = "/v1/hold-keys";
    let r = held(
        &w,
        path,
        &authority,
        h2_send(w.envoy.port, "POST", path, vec![bearer(&token)], vec![b"b".to_vec()], trailers()),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(w.up.seen(path), 1);

    // 3. Waiting for the PDP (outside the Authority Set): a held refusal is the answer.
    let (_, token) = w.auth.active_token();
    w.pdp.answer(json!({"decision": false, "context": {"reason": "held"}}));
    let path = "/v2/hold-pdp";
    let r = held(
        &w,
        path,
        &pdp,
        h2_send(w.envoy.port, "POST", path, vec![bearer(&token)], vec![b"c".to_vec()], trailers()),
    );
    assert_eq!((r.status, reason(&r).as_str()), (403, "pdp_denied"), "{r:?}");
    assert_eq!(w.up.seen(path), 0);

    // 4. The body of a bound call, ended by trailers: the trailers complete it, the PDP (held)
    // decides on its digest, and the permit forwards exactly that body.
    let (_, token) = w.auth.active_token();
    w.pdp.answer(json!({"decision": true, "context": {"evaluation_id": missiongate_tests::rand_id("eval_")}}));
    let body = br#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#;
    let (a, b) = body.split_at(20);
    let path = "/v1/payments";
    let headers = vec![bearer(&token), ("content-type", b"application/json".to_vec())];
    let port = w.envoy.port;
    let r = held(&w, path, &pdp, h2_send(port, "POST", path, headers, vec![a.to_vec(), b.to_vec()], trailers()));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(w.up.seen(path), 1);
    let echoed = r.json();
    assert_eq!(echoed["body_len"], body.len(), "{echoed}");
    let asked = w.pdp.requests();
    let digest =
        asked.last().unwrap()["action"]["properties"]["parameter_digest"].as_str().unwrap_or_default().to_owned();
    assert!(digest.starts_with("sha-256:"), "the PDP was asked about the whole body: {asked:?}");

    // 5. The same with a refusal: nothing reaches the upstream, ever.
    let (_, token) = w.auth.active_token();
    w.pdp.answer(json!({"decision": false, "context": {"reason": "no"}}));
    let headers = vec![bearer(&token), ("content-type", b"application/json".to_vec())];
    let before = w.up.seen(path);
    let r = held(&w, path, &pdp, h2_send(port, "POST", path, headers, vec![a.to_vec(), b.to_vec()], trailers()));
    assert_eq!((r.status, reason(&r).as_str()), (403, "pdp_denied"), "{r:?}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.up.seen(path), before, "a refused bound call reached the upstream");
    w.envoy.assert_healthy();
}

/// A raw HTTP/1.1 request; returns (status, body).
fn raw(port: u16, head: &[u8], body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.windows(4).position(|w| w == b"\r\n\r\n").map(|i| out[i + 4..].to_vec()).unwrap_or_default();
    (status, body)
}

fn head_with(method: &str, path: &str, token: Option<&str>, name: &str, value: &[u8], len: usize) -> Vec<u8> {
    let mut h = format!("{method} {path} HTTP/1.1\r\nHost: api.partner.example\r\nConnection: close\r\n").into_bytes();
    if let Some(t) = token {
        h.extend_from_slice(format!("Authorization: Bearer {t}\r\n").as_bytes());
    }
    h.extend_from_slice(name.as_bytes());
    h.extend_from_slice(b": ");
    h.extend_from_slice(value);
    h.extend_from_slice(format!("\r\nContent-Length: {len}\r\n\r\n").as_bytes());
    h
}

fn reason_of(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).ok().and_then(|v| v["reason"].as_str().map(str::to_owned)).unwrap_or_default()
}

#[test]
fn non_utf8_header_values_are_answered_by_grammar_and_the_vm_survives() {
    let w = world(2);
    let (_, token) = w.auth.active_token();
    let obs: &[u8] = b"caf\xe9 \x80\xff";
    let port = w.envoy.port;
    // (header, token sent, expected status, expected reason)
    let cases: [(&str, bool, u16, &str); 10] = [
        ("Authorization", false, 401, "token_malformed"),
        ("DPoP", true, 401, "invalid_dpop_proof"),
        ("Content-Type", true, 200, ""),
        ("User-Agent", true, 200, ""),
        ("Accept", true, 200, ""),
        ("Accept-Language", true, 200, ""),
        ("Cookie", true, 200, ""),
        ("Referer", true, 200, ""),
        ("X-Note", true, 200, ""),
        ("Idempotency-Key", true, 200, ""),
    ];
    for (i, (name, with_token, status, why)) in cases.iter().enumerate() {
        let path = format!("/v1/bytes-{i}");
        let value: Vec<u8> =
            if *name == "Authorization" { [b"Bearer ".as_slice(), obs].concat() } else { obs.to_vec() };
        let head = head_with("GET", &path, with_token.then_some(token.as_str()), name, &value, 0);
        let (got, body) = raw(port, &head, b"");
        assert_eq!(got, *status, "{name}: {}", String::from_utf8_lossy(&body));
        if *status != 200 {
            assert_eq!(reason_of(&body), *why, "{name}");
            assert_eq!(w.up.seen(&path), 0, "{name}: refused but forwarded");
        } else {
            assert_eq!(w.up.seen(&path), 1, "{name}");
        }
    }
    // On a bound call, a Content-Type that is not UTF-8 cannot be bound: 400, nothing forwarded.
    let body = br#"{"amount":"1.00"}"#;
    let head = head_with("POST", "/v1/payments", Some(&token), "Content-Type", b"application/json; q=\xe9", body.len());
    let (got, answer) = raw(port, &head, body);
    assert_eq!(
        (got, reason_of(&answer).as_str()),
        (400, "body_not_canonicalizable"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(w.up.seen("/v1/payments"), 0);
    // Over HTTP/2, any byte: Authorization and DPoP by their grammar, others ignored.
    let rt = missiongate_tests::rt();
    let r = rt.block_on(h2_send(
        port,
        "GET",
        "/v1/h2-bytes",
        vec![("authorization", b"Bearer \xff\xfe".to_vec())],
        vec![],
        None,
    ));
    assert_eq!((r.status, reason(&r).as_str()), (401, "token_malformed"), "{r:?}");
    let r = rt.block_on(h2_send(
        port,
        "GET",
        "/v1/h2-bytes",
        vec![bearer(&token), ("x-any", b"\x80\x81\xfe".to_vec())],
        vec![],
        None,
    ));
    assert_eq!(r.status, 200, "{r:?}");

    // Both workers still serve: refusals (no credentials) carry each VM's own decision-id prefix.
    let mut workers = std::collections::HashSet::new();
    for _ in 0..60 {
        let r = Req::new("GET", "/v1/who").header("Host", "api.partner.example").send(port);
        assert_eq!(r.status, 401, "{}", r.text());
        if let Some(id) = r.worker() {
            workers.insert(id);
        }
        if workers.len() == 2 {
            break;
        }
    }
    assert_eq!(workers.len(), 2, "both workers answer: {workers:?}");
    let r = Req::new("GET", "/v1/after").header("Host", "api.partner.example").bearer(&token).send(port);
    assert_eq!(r.status, 200, "{}", r.text());
    w.envoy.assert_healthy();
}
