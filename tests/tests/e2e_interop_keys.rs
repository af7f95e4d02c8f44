//! Issue 18 items 1 and 5 end to end: the real Envoy with the built filter, the stand-in authority
//! serving RS256 and PS256 tokens from a JWKS that mixes EC and RSA keys (one of them too short), an
//! algorithm-confusion attempt, and a key replaced under its `kid` while Envoy runs.

use missiongate_tests::authority::{Authority, Signer};
use missiongate_tests::envoy::{Envoy, Opts};
use missiongate_tests::http::{assert_denied, Req, Response};
use missiongate_tests::rand_id;
use serde_json::json;
use std::time::{Duration, Instant};

fn get(envoy: &Envoy, path: &str, token: &str) -> Response {
    Req::new("GET", path).bearer(token).send(envoy.port)
}

fn invalid_token(r: &Response, reason: &str) {
    assert_denied(r, 401, reason);
    let www = r.header("www-authenticate").unwrap();
    assert!(www.starts_with("Bearer realm=\"missiongate\", error=\"invalid_token\""), "{www}");
}

/// A fresh active Mission's access-token claims.
fn claims(auth: &Authority) -> serde_json::Value {
    let id = rand_id("msn_");
    auth.set_mission(&id, "active");
    auth.claims(&id)
}

fn wait_log(envoy: &Envoy, needle: &str) {
    let start = Instant::now();
    while !envoy.logs().contains(needle) {
        assert!(start.elapsed() < Duration::from_secs(15), "no {needle:?} in the Envoy log");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rs256_ps256_mixed_jwks_alg_confusion_and_a_replaced_key() {
    let up = missiongate_tests::upstream::Upstream::start(None);
    let auth = Authority::start();
    // The JWKS: the authority's EC key k1 (it signs the Mission Status answers), an RSA key of
    // 2048 bits without `alg` (RS256 and PS256), and a 1024-bit RSA key, which must be refused.
    let rsa = Signer::rsa("rsa-1", "a2048", "RS256");
    let short = Signer::rsa("rsa-short", "short1024", "RS256");
    auth.publish_extra(rsa.clone());
    auth.publish_extra(short.clone());
    let mut envoy = Envoy::start(up.port, auth.port, Opts::default());

    // RS256 and PS256 tokens verify; so does the EC token of the same set.
    let r = get(&envoy, "/v1/invoices", &rsa.sign("at+jwt", &claims(&auth)));
    assert_eq!(r.status, 200, "RS256: {}", r.text());
    let r = get(&envoy, "/v1/invoices", &rsa.with_alg("PS256").sign("at+jwt", &claims(&auth)));
    assert_eq!(r.status, 200, "PS256: {}", r.text());
    let r = get(&envoy, "/v1/invoices", &auth.token(&claims(&auth)));
    assert_eq!(r.status, 200, "ES256: {}", r.text());

    // The 1024-bit key was refused at load (logged and counted): its valid signature is not enough.
    wait_log(&envoy, "JWKS key \"rsa-short\" refused: RSA modulus shorter than 2048 bits");
    assert!(envoy.wait_counter("wasmcustom.missiongate.jwks.key_refused", 1) >= 1);
    invalid_token(&get(&envoy, "/v1/invoices", &short.sign("at+jwt", &claims(&auth))), "unknown_key");

    // Algorithm confusion: an RS256 header naming the EC key k1, signed with the RSA key.
    let confused = rsa.sign_raw_header(&json!({"alg": "RS256", "typ": "at+jwt", "kid": "k1"}), &claims(&auth));
    invalid_token(&get(&envoy, "/v1/invoices", &confused), "alg_not_allowed");
    // And the reverse: an ES256 header naming the RSA key.
    let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    h.typ = Some("at+jwt".into());
    h.kid = Some("rsa-1".into());
    let confused = auth.signer().sign_with_header(h, &claims(&auth));
    invalid_token(&get(&envoy, "/v1/invoices", &confused), "alg_not_allowed");

    // The authority restarts and makes a new key under the same kid. Past the refetch interval
    // (1 s in the shipped config), the first token of the new key costs exactly one JWKS fetch.
    let replaced = Signer::rsa("rsa-1", "b2048", "RS256");
    auth.replace_key("rsa-1", replaced.clone());
    std::thread::sleep(Duration::from_millis(1200));
    let before = auth.jwks_requests();
    let r = get(&envoy, "/v1/invoices", &replaced.sign("at+jwt", &claims(&auth)));
    assert_eq!(r.status, 200, "replaced key: {}", r.text());
    assert_eq!(auth.jwks_requests(), before + 1, "one refetch for the replaced key");
    // The next token of the new key (PS256 this time) verifies with no fetch at all.
    let r = get(&envoy, "/v1/invoices", &replaced.with_alg("PS256").sign("at+jwt", &claims(&auth)));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(auth.jwks_requests(), before + 1);
    // A token of the old key is now a bad signature (after its own, rate-limited chance).
    std::thread::sleep(Duration::from_millis(1200));
    invalid_token(&get(&envoy, "/v1/invoices", &rsa.sign("at+jwt", &claims(&auth))), "bad_signature");
    assert_eq!(auth.jwks_requests(), before + 2, "a refused signature refetches once, no more");
    invalid_token(&get(&envoy, "/v1/invoices", &rsa.sign("at+jwt", &claims(&auth))), "bad_signature");
    assert_eq!(auth.jwks_requests(), before + 2, "rate-limited: no second refetch within the interval");
    assert!(envoy.alive());
}
