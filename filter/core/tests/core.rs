//! The decision core, driven through its public API the way the proxy-wasm host drives it.
//!
//! Every test runs natively (`cargo test -p missiongate-core`) and compiled to
//! wasm32-unknown-unknown under wasm-bindgen-test (`make test-wasm-core`, Node.js runs it). No RNG
//! and no clock: keys come from fixed secret bytes (RFC 6979 ECDSA and Ed25519 sign
//! deterministically), and every `now` is a constant.

// Test helpers (outside `#[test]` functions, where clippy.toml already allows these) fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::rc::Rc;

use missiongate_core::decision::{Evidence, Response};
use missiongate_core::{Attempts, Authz, Config, Engine, Need, Outcome, ReplayGuard, Request};
use missiongate_wire::claims::EVENT_MISSION_LIFECYCLE_CHANGE as EVENT_MISSION_STATE;
use missiongate_wire::jose::{Alg, SigningKey};
use missiongate_wire::{b64, time};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// ------------------------------------------------------------------------- fixtures -----------

/// Configured issuer of access tokens that is not a Mission state authority.
use common::*;

const OTHER_AS: &str = "https://tokens.example";
const HOST: &str = "api.partner.example";
const ORIGIN: &str = "https://api.partner.example";
const MISSION: &str = "msn_7Qx";
const RETRY_AFTER: u32 = 7;

fn as_ed_key() -> SigningKey {
    SigningKey::from_secret_bytes(Alg::EdDsa, &[0x22; 32]).unwrap()
}
fn other_as_key() -> SigningKey {
    SigningKey::from_secret_bytes(Alg::Es256, &[0x33; 32]).unwrap()
}
/// Not in any JWKS.
fn rogue_key() -> SigningKey {
    SigningKey::from_secret_bytes(Alg::Es256, &[0x44; 32]).unwrap()
}
/// The agent's DPoP keys.
fn dpop_ed_key() -> SigningKey {
    SigningKey::from_secret_bytes(Alg::EdDsa, &[0x55; 32]).unwrap()
}
fn dpop_p256_key() -> SigningKey {
    SigningKey::from_secret_bytes(Alg::Es256, &[0x66; 32]).unwrap()
}

fn config_json() -> Value {
    json!({
        "issuers": [
            {
                "issuer": AS,
                "jwks": {"keys": [as_key().public_jwk(Some("k1")), as_ed_key().public_jwk(Some("k2"))]},
                "mission_authority": {
                    "status": {"cluster": "authority", "authority": "as.example", "path": "/mission/status"},
                    "events": {"cluster": "authority", "authority": "as.example", "path": "/events"},
                    "audience": GATEWAY_AUD,
                    "max_staleness_seconds": 600,
                    "retry_after_seconds": RETRY_AFTER
                }
            },
            {
                "issuer": OTHER_AS,
                "jwks": {"keys": [other_as_key().public_jwk(Some("o1"))]}
            }
        ],
        "max_token_lifetime_seconds": 3600,
        "destinations": [{
            "authority": HOST,
            "origin": ORIGIN,
            "operations": [{"method": "POST", "path": "/v1/payments", "action": "payments.create"}]
        }]
    })
}

fn engine_with(config: &Value) -> Engine {
    let config = Config::parse(config.to_string().as_bytes()).unwrap();
    Engine::new(Rc::new(config), missiongate_core::Seeds { nonce: [7; 32], ids: [8; 32] })
}

fn engine() -> Engine {
    engine_with(&config_json())
}

/// A replay store that cannot be reached.
struct BrokenGuard;

impl ReplayGuard for BrokenGuard {
    fn remember(&mut self, _: &str, _: i64, _: i64) -> Result<bool, String> {
        Err("shared data unavailable".into())
    }
}

fn sign(key: &SigningKey, kid: &str, typ: &str, claims: &Value) -> String {
    key.sign_compact(&json!({"alg": key.alg().name(), "typ": typ, "kid": kid}), claims)
}

fn token_claims() -> Value {
    json!({
        "iss": AS,
        "sub": "user-1",
        "client_id": "agent-7",
        "aud": ORIGIN,
        "iat": NOW - 10,
        "exp": NOW + 600,
        "jti": "tok-1",
        "mission": {"id": MISSION, "issuer": AS, "authority_hash": "sha-256:AAAA"},
        "authorization_details": [
            {"type": "mission_resource_access", "resource": "https://api.partner.example/v1",
             "resource_match": "prefix", "actions": ["http.get", "payments.*"]},
            {"type": "mission_resource_access", "resource": "https://api.partner.example/limited",
             "actions": ["http.*"], "constraints": {"max_amount": {"amount": "100.00", "currency": "USD"}}}
        ]
    })
}

fn token_from(claims: &Value) -> String {
    sign(&as_key(), "k1", "at+jwt", claims)
}

fn token() -> String {
    token_from(&token_claims())
}

/// `token_claims()` with `edit` applied.
fn token_with(edit: impl FnOnce(&mut Value)) -> String {
    let mut c = token_claims();
    edit(&mut c);
    token_from(&c)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn get<'a>(path: &'a str, authorization: &'a str) -> Request<'a> {
    req("GET", path, Authz::One(authorization))
}

fn req<'a>(method: &'a str, path: &'a str, authorization: Authz<'a>) -> Request<'a> {
    Request { method, scheme: "https", authority: HOST, path, authorization, dpop: None, dpop_count: 0 }
}

fn decide(e: &mut Engine, r: &Request<'_>) -> Outcome {
    e.decide(r, NOW, Attempts::default(), &mut MapGuard::default())
}

/// A signed Mission Status answer.
fn status_jws(nonce: &str, mission: Value) -> String {
    let claims =
        json!({"iss": AS, "aud": GATEWAY_AUD, "nonce": nonce, "iat": NOW, "exp": NOW + 60, "mission": mission});
    sign(&as_key(), "k1", "mission-status-response+jwt", &claims)
}

fn status_mission(state: &str, version: u64) -> Value {
    json!({"id": MISSION, "issuer": AS, "state": state, "version": version, "fresh_until": time::format_rfc3339(NOW + 300)})
}

/// Ask for and answer Mission Status with `body` (built from the nonce the engine chose).
fn answer_status(e: &mut Engine, status: Option<u16>, body: impl FnOnce(&str) -> String) -> Option<usize> {
    let (_callout, nonce) = e.status_callout(0, MISSION).unwrap();
    let body = body(&nonce);
    e.on_status(0, MISSION, &nonce, status, body.as_bytes(), NOW).refetch_keys
}

/// A `mission.lifecycle-change` event (signals draft) about the fixture's Mission.
fn lifecycle(state: &str, version: u64) -> Value {
    json!({"mission": {"id": MISSION, "issuer": AS}, "state": state, "prior_state": "active", "version": version,
           "committed_at": time::format_rfc3339(NOW - 1), "expires_at": time::format_rfc3339(NOW + 3600)})
}

fn set_state(e: &mut Engine, state: &str, version: u64) {
    assert_eq!(answer_status(e, Some(200), |n| status_jws(n, status_mission(state, version))), None);
}

/// An engine whose cache holds the Mission as `active` (version 1).
fn active_engine() -> Engine {
    let mut e = engine();
    set_state(&mut e, "active", 1);
    e
}

fn expect_allow(o: Outcome) -> Evidence {
    match o {
        Outcome::Allow(ev) => ev,
        other => panic!("expected Allow, got {other:?}"),
    }
}

fn expect_need(o: Outcome) -> Need {
    match o {
        Outcome::Need(n) => n,
        other => panic!("expected Need, got {other:?}"),
    }
}

/// A rendered denial, parsed.
struct Denied {
    resp: Response,
    body: Value,
    ev: Evidence,
}

impl Denied {
    fn header(&self, name: &str) -> Option<&str> {
        self.resp.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
    fn headers(&self, name: &str) -> Vec<&str> {
        self.resp.headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }
    fn www(&self) -> &str {
        self.header("www-authenticate").unwrap_or_else(|| panic!("no WWW-Authenticate in {:?}", self.resp.headers))
    }
}

fn expect_deny(o: Outcome, reason: &str, status: u16) -> Denied {
    let (resp, ev) = match o {
        Outcome::Deny(resp, ev) => (resp, ev),
        other => panic!("expected Deny({reason}), got {other:?}"),
    };
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["reason"], reason, "body {body}");
    assert_eq!(resp.status, status, "body {body}");
    assert_eq!(body["status"], status);
    assert_eq!(body["type"], format!("https://missiongate.dev/problems/{reason}"));
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    assert_eq!(body["decision_id"].as_str(), Some(ev.decision_id.as_str()));
    assert_eq!(ev.decision.as_str(), "deny");
    assert_eq!(ev.reason.as_str(), reason);
    assert_eq!(ev.status, status);
    let d = Denied { resp, body, ev };
    assert_eq!(d.header("content-type"), Some("application/problem+json"));
    assert_eq!(d.header("cache-control"), Some("no-store"));
    d
}

/// SPEC §5 row 2: `Bearer error="invalid_token"` plus the DPoP algorithms challenge.
fn expect_invalid_token(o: Outcome, reason: &str) -> Denied {
    let d = expect_deny(o, reason, 401);
    assert!(
        d.www().starts_with("Bearer realm=\"missiongate\", error=\"invalid_token\", error_description=\""),
        "{}",
        d.www()
    );
    assert_eq!(d.headers("www-authenticate").get(1).copied(), Some("DPoP algs=\"ES256 EdDSA\""));
    d
}

fn expect_bad_dpop(o: Outcome, reason: &str) -> Denied {
    let d = expect_deny(o, reason, 401);
    assert!(d.www().starts_with("DPoP realm=\"missiongate\", error=\"invalid_dpop_proof\""), "{}", d.www());
    d
}

/// Decide for a token on an engine whose Mission is active (reason checks that run after state).
fn decide_active(token: &str) -> Outcome {
    let mut e = active_engine();
    decide(&mut e, &get("/v1/invoices", &bearer(token)))
}

/// Decide for a token on a fresh engine (token checks come before Mission state).
fn decide_fresh(token: &str) -> Outcome {
    let mut e = engine();
    decide(&mut e, &get("/v1/invoices", &bearer(token)))
}

/// HMAC-SHA-256 (RFC 2104), to forge an HS256 token keyed with the public key's bytes.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let inner = Sha256::new().chain_update(k.map(|b| b ^ 0x36)).chain_update(msg).finalize();
    Sha256::new().chain_update(k.map(|b| b ^ 0x5c)).chain_update(inner).finalize().to_vec()
}

fn unsigned(header: &Value, claims: &Value, sig: &[u8]) -> String {
    format!("{}.{}.{}", b64::encode(header.to_string()), b64::encode(claims.to_string()), b64::encode(sig))
}

// ------------------------------------------------------------------------- happy path ---------

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn valid_token_needs_status_then_allows_then_hot_path() {
    let mut e = engine();
    let t = token();
    let auth = bearer(&t);
    let r = get("/v1/invoices?status=open", &auth);

    assert_eq!(expect_need(decide(&mut e, &r)), Need::Status(0, MISSION.to_owned()));

    let (callout, nonce) = e.status_callout(0, MISSION).unwrap();
    assert_eq!(callout.cluster, "authority");
    let h = |name: &str| callout.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(h(":method").as_deref(), Some("POST"));
    assert_eq!(h(":path").as_deref(), Some("/mission/status"));
    assert_eq!(h(":authority").as_deref(), Some("as.example"));
    assert_eq!(h("content-type").as_deref(), Some("application/x-www-form-urlencoded"));
    let form = String::from_utf8(callout.body.clone()).unwrap();
    assert_eq!(form, format!("mission_id={MISSION}&audience=https%3A%2F%2Fgateway.example&nonce={nonce}"));
    assert!(nonce.len() >= 22, "nonce of at least 128 bits: {nonce}");
    assert_ne!(e.status_callout(0, MISSION).unwrap().1, nonce, "every request gets a fresh nonce");

    let body = status_jws(&nonce, status_mission("active", 1));
    assert_eq!(e.on_status(0, MISSION, &nonce, Some(200), body.as_bytes(), NOW).refetch_keys, None);

    let attempts = Attempts { status: true, ..Attempts::default() };
    let ev = expect_allow(e.decide(&r, NOW, attempts, &mut MapGuard::default()));
    assert_eq!(ev.decision.as_str(), "allow");
    assert_eq!(ev.reason.as_str(), "allowed");
    assert_eq!(ev.status, 200);
    assert_eq!(ev.mission_id.as_deref(), Some(MISSION));
    assert_eq!(ev.mission_issuer.as_deref(), Some(AS));
    assert_eq!(ev.authority_hash.as_deref(), Some("sha-256:AAAA"));
    assert_eq!(ev.jti.as_deref(), Some("tok-1"));
    assert_eq!(ev.destination.as_deref(), Some(ORIGIN));
    assert_eq!(ev.action.as_deref(), Some("http.get"));
    assert!(!ev.to_json().contains(&t), "evidence never holds the token");

    // Hot path: cached token and cached state, no callout.
    for i in 1..=3 {
        let ev = expect_allow(decide(&mut e, &r));
        assert_ne!(ev.decision_id, "", "decision {i}");
    }
    let counters: HashMap<String, u64> = e.take_counters().into_iter().collect();
    assert_eq!(counters.get("decision.allowed"), Some(&4));
    assert_eq!(counters.get("token_cache.hit"), Some(&4));
    assert_eq!(counters.get("token_cache.miss"), Some(&1));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn ed25519_token_and_typ_variants_allow() {
    let claims = token_claims();
    let ed = sign(&as_ed_key(), "k2", "at+jwt", &claims);
    expect_allow(decide_active(&ed));
    let long_typ = sign(&as_key(), "k1", "application/at+jwt", &claims);
    expect_allow(decide_active(&long_typ));
    // Scheme is case-insensitive.
    let mut e = active_engine();
    expect_allow(decide(&mut e, &get("/v1/invoices", &format!("bEaReR {}", token()))));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn status_is_not_trusted_past_fresh_until() {
    let mut e = active_engine();
    let t = token();
    let auth = bearer(&t);
    let r = get("/v1/invoices", &auth);
    expect_allow(e.decide(&r, NOW + 299, Attempts::default(), &mut MapGuard::default()));
    assert_eq!(
        expect_need(e.decide(&r, NOW + 300, Attempts::default(), &mut MapGuard::default())),
        Need::Status(0, MISSION.to_owned())
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn status_is_not_trusted_past_max_staleness() {
    let mut e = engine();
    let mut m = status_mission("active", 1);
    m["fresh_until"] = json!(time::format_rfc3339(NOW + 86_400));
    assert_eq!(answer_status(&mut e, Some(200), |n| status_jws(n, m)), None);
    let t = token();
    let auth = bearer(&t);
    let r = get("/v1/invoices", &auth);
    // max_staleness_seconds is 600 in the config.
    expect_allow(e.decide(&r, NOW + 599, Attempts::default(), &mut MapGuard::default()));
    assert_eq!(
        expect_need(e.decide(&r, NOW + 600, Attempts::default(), &mut MapGuard::default())),
        Need::Status(0, MISSION.to_owned())
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn implicit_destination_uses_the_request_origin() {
    // A host the config does not list: origin from :scheme and :authority, default port removed.
    let mut c = token_claims();
    c["aud"] = json!("https://files.example");
    c["authorization_details"] = json!([{"type": "mission_resource_access", "resource": "https://files.example/", "resource_match": "prefix", "actions": ["http.get"]}]);
    let t = token_from(&c);
    let auth = bearer(&t);
    let mut e = active_engine();
    for authority in ["files.example", "FILES.example:443"] {
        let r = Request { authority, ..get("/a/b", &auth) };
        let ev = expect_allow(decide(&mut e, &r));
        assert_eq!(ev.destination.as_deref(), Some("https://files.example"));
    }
    let r = Request { authority: "files.example:8443", ..get("/a/b", &auth) };
    expect_invalid_token(decide(&mut e, &r), "wrong_audience");
    let r = Request { authority: "user@files.example", ..get("/a/b", &auth) };
    expect_deny(decide(&mut e, &r), "malformed_request", 400);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn configured_destination_with_explicit_default_port() {
    let mut e = active_engine();
    let t = token();
    let auth = bearer(&t);
    let r = Request { authority: "api.partner.example:443", ..req("POST", "/v1/payments", Authz::One(&auth)) };
    let ev = expect_allow(decide(&mut e, &r));
    assert_eq!(ev.action.as_deref(), Some("payments.create"));
}

// ------------------------------------------------------------------------- credentials --------

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn no_credentials() {
    let mut e = engine();
    let d = expect_deny(decide(&mut e, &req("GET", "/v1/invoices", Authz::Missing)), "no_credentials", 401);
    assert_eq!(d.headers("www-authenticate"), vec!["Bearer realm=\"missiongate\"", "DPoP algs=\"ES256 EdDSA\""]);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn two_authorization_headers_are_malformed() {
    let mut e = engine();
    let d = expect_deny(decide(&mut e, &req("GET", "/v1/invoices", Authz::Multiple)), "malformed_request", 400);
    assert!(d.www().contains("error=\"invalid_request\""), "{}", d.www());
    // Envoy joins repeated headers with a comma.
    let t = token();
    let joined = format!("Bearer {t}, Bearer {t}");
    let d = expect_deny(decide(&mut e, &get("/v1/invoices", &joined)), "malformed_request", 400);
    assert!(!String::from_utf8_lossy(&d.resp.body).contains(&t), "the token is never echoed");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn basic_scheme_and_bare_token_are_not_credentials() {
    let mut e = engine();
    let d = expect_deny(decide(&mut e, &get("/v1/invoices", "Basic dXNlcjpwYXNz")), "no_credentials", 401);
    assert_eq!(d.headers("www-authenticate")[0], "Bearer realm=\"missiongate\"");
    expect_deny(decide(&mut e, &get("/v1/invoices", &token())), "no_credentials", 401);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn oversized_token() {
    let big = token_with(|c| c["padding"] = json!("x".repeat(9000)));
    let d = expect_invalid_token(decide_fresh(&big), "token_too_large");
    assert!(d.resp.body.len() < 1024, "the token is not echoed");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn not_a_jws() {
    expect_invalid_token(decide_fresh("not-a-token"), "token_malformed");
    expect_invalid_token(decide_fresh("a.b.c"), "token_malformed");
}

// ------------------------------------------------------------------------- header checks ------

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn alg_none_is_refused() {
    let t = unsigned(&json!({"alg": "none", "typ": "at+jwt", "kid": "k1"}), &token_claims(), b"\0");
    expect_invalid_token(decide_fresh(&t), "alg_not_allowed");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn hs256_keyed_with_the_public_key_is_refused() {
    let header = json!({"alg": "HS256", "typ": "at+jwt", "kid": "k1"});
    let input = format!("{}.{}", b64::encode(header.to_string()), b64::encode(token_claims().to_string()));
    let public = serde_json::to_vec(&as_key().public_jwk(Some("k1"))).unwrap();
    let t = format!("{input}.{}", b64::encode(hmac_sha256(&public, input.as_bytes())));
    expect_invalid_token(decide_fresh(&t), "alg_not_allowed");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn wrong_typ() {
    for typ in ["JWT", "dpop+jwt", "mission-status-response+jwt"] {
        let t = sign(&as_key(), "k1", typ, &token_claims());
        expect_invalid_token(decide_fresh(&t), "wrong_typ");
    }
    let no_typ = as_key().sign_compact(&json!({"alg": "ES256", "kid": "k1"}), &token_claims());
    expect_invalid_token(decide_fresh(&no_typ), "wrong_typ");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn alg_that_does_not_match_the_key_is_refused() {
    // Signed with the Ed25519 key but naming the P-256 kid: no P-256 key verifies it.
    let t = as_ed_key().sign_compact(&json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}), &token_claims());
    expect_invalid_token(decide_fresh(&t), "bad_signature");
}

// ------------------------------------------------------------------------- time checks --------

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn expired_and_within_skew() {
    let t = token_with(|c| {
        c["iat"] = json!(NOW - 700);
        c["exp"] = json!(NOW - 60);
    });
    let d = expect_invalid_token(decide_fresh(&t), "token_expired");
    assert_eq!(d.www(), "Bearer realm=\"missiongate\", error=\"invalid_token\", error_description=\"token expired\"");
    // 30 s past exp is inside the default 60 s skew.
    let t = token_with(|c| {
        c["iat"] = json!(NOW - 700);
        c["exp"] = json!(NOW - 30);
    });
    expect_allow(decide_active(&t));
    let no_exp = token_with(|c| {
        c.as_object_mut().unwrap().remove("exp");
    });
    expect_invalid_token(decide_fresh(&no_exp), "token_malformed");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn cached_token_expires_on_the_hot_path() {
    let mut e = active_engine();
    let t = token_with(|c| c["exp"] = json!(NOW + 100));
    let auth = bearer(&t);
    let r = get("/v1/invoices", &auth);
    expect_allow(decide(&mut e, &r));
    let late = e.decide(&r, NOW + 160, Attempts::default(), &mut MapGuard::default());
    expect_invalid_token(late, "token_expired");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn nbf_and_iat_in_the_future() {
    let t = token_with(|c| c["nbf"] = json!(NOW + 120));
    expect_invalid_token(decide_fresh(&t), "token_not_yet_valid");
    let t = token_with(|c| c["iat"] = json!(NOW + 120));
    expect_invalid_token(decide_fresh(&t), "token_not_yet_valid");
    // Inside the skew.
    let t = token_with(|c| {
        c["nbf"] = json!(NOW + 30);
        c["iat"] = json!(NOW + 30);
    });
    expect_allow(decide_active(&t));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn max_token_lifetime() {
    let t = token_with(|c| {
        c["iat"] = json!(NOW);
        c["exp"] = json!(NOW + 3601);
    });
    expect_invalid_token(decide_fresh(&t), "token_lifetime_exceeded");
    let t = token_with(|c| {
        c["iat"] = json!(NOW);
        c["exp"] = json!(NOW + 3600);
    });
    expect_allow(decide_active(&t));
    // Without iat or nbf the lifetime cannot be bounded.
    let t = token_with(|c| {
        c.as_object_mut().unwrap().remove("iat");
    });
    expect_invalid_token(decide_fresh(&t), "token_lifetime_exceeded");
}

// ------------------------------------------------------------------------- claims -------------

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn unknown_issuer() {
    let t = token_with(|c| c["iss"] = json!("https://evil.example"));
    expect_invalid_token(decide_fresh(&t), "unknown_issuer");
    // Exact string match: a trailing slash is another issuer.
    let t = token_with(|c| c["iss"] = json!("https://as.example/"));
    expect_invalid_token(decide_fresh(&t), "unknown_issuer");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn wrong_audience() {
    let t = token_with(|c| c["aud"] = json!("https://elsewhere.example"));
    expect_invalid_token(decide_fresh(&t), "wrong_audience");
    let t = token_with(|c| {
        c.as_object_mut().unwrap().remove("aud");
    });
    expect_invalid_token(decide_fresh(&t), "wrong_audience");
    let t = token_with(|c| c["aud"] = json!(["https://elsewhere.example", ORIGIN]));
    expect_allow(decide_active(&t));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn no_mission_claim() {
    let t = token_with(|c| {
        c.as_object_mut().unwrap().remove("mission");
    });
    expect_invalid_token(decide_fresh(&t), "mission_claim_missing");
    let t = token_with(|c| c["mission"] = json!({"id": MISSION}));
    expect_invalid_token(decide_fresh(&t), "mission_claim_missing");
    let t = token_with(|c| c["mission"] = json!({"id": "", "issuer": AS}));
    expect_invalid_token(decide_fresh(&t), "mission_claim_missing");
    let t = token_with(|c| c["mission"] = json!("msn_7Qx"));
    expect_invalid_token(decide_fresh(&t), "token_malformed");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn mission_origin_is_the_older_name_of_issuer() {
    let t = token_with(|c| c["mission"] = json!({"id": MISSION, "origin": AS}));
    let ev = expect_allow(decide_active(&t));
    assert_eq!(ev.mission_issuer.as_deref(), Some(AS));
    let t = token_with(|c| c["mission"] = json!({"id": MISSION, "origin": AS, "issuer": AS}));
    expect_allow(decide_active(&t));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn mission_issuer_and_origin_must_agree() {
    let t = token_with(|c| c["mission"] = json!({"id": MISSION, "issuer": AS, "origin": OTHER_AS}));
    expect_invalid_token(decide_fresh(&t), "mission_claim_missing");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn untrusted_mission_issuer() {
    // A configured issuer that is not a state authority.
    let t = token_with(|c| c["mission"] = json!({"id": MISSION, "issuer": OTHER_AS}));
    expect_invalid_token(decide_fresh(&t), "untrusted_mission_issuer");
    // One that is not configured at all.
    let t = token_with(|c| c["mission"] = json!({"id": MISSION, "issuer": "https://evil.example"}));
    expect_invalid_token(decide_fresh(&t), "untrusted_mission_issuer");
    // A token from the other issuer naming the real authority is fine up to Mission state.
    let mut c = token_claims();
    c["iss"] = json!(OTHER_AS);
    let t = sign(&other_as_key(), "o1", "at+jwt", &c);
    assert_eq!(expect_need(decide_fresh(&t)), Need::Status(0, MISSION.to_owned()));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn unsupported_cnf() {
    let t = token_with(|c| c["cnf"] = json!({"x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2"}));
    expect_invalid_token(decide_fresh(&t), "unsupported_confirmation");
    let t = token_with(|c| c["cnf"] = json!({"jkt": "abc", "jwk": {"kty": "OKP"}}));
    expect_invalid_token(decide_fresh(&t), "unsupported_confirmation");
}

// ------------------------------------------------------------------------- keys and signature -

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn unknown_kid_with_inline_keys() {
    // Inline keys cannot be refetched: no Need::Keys, the kid is simply unknown.
    let t = sign(&as_key(), "k9", "at+jwt", &token_claims());
    expect_invalid_token(decide_fresh(&t), "unknown_key");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn bad_signature() {
    let t = sign(&rogue_key(), "k1", "at+jwt", &token_claims());
    let d = expect_invalid_token(decide_fresh(&t), "bad_signature");
    assert_eq!(d.body["detail"], "token signature is not valid");
    // A signature of the wrong length.
    let good = token();
    let (input, _) = good.rsplit_once('.').unwrap();
    expect_invalid_token(decide_fresh(&format!("{input}.AAAA")), "bad_signature");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn tampered_payload() {
    let good = token();
    let parts: Vec<&str> = good.split('.').collect();
    let mut claims = token_claims();
    claims["authorization_details"][0]["actions"] = json!(["http.*"]);
    let forged = format!("{}.{}.{}", parts[0], b64::encode(claims.to_string()), parts[2]);
    expect_invalid_token(decide_fresh(&forged), "bad_signature");
    // The genuine token, decided first, does not make the forged one pass through a cache.
    let mut e = active_engine();
    expect_allow(decide(&mut e, &get("/v1/invoices", &bearer(&good))));
    expect_invalid_token(decide(&mut e, &get("/v1/invoices", &bearer(&forged))), "bad_signature");
}

fn remote_config() -> Value {
    let mut c = config_json();
    let issuer = &mut c["issuers"][0];
    issuer.as_object_mut().unwrap().remove("jwks");
    issuer["jwks_uri"] = json!({"cluster": "authority", "authority": "as.example", "path": "/jwks.json"});
    issuer["jwks_min_refetch_seconds"] = json!(10);
    c
}

fn jwks_body(keys: &[(&SigningKey, &str)]) -> Vec<u8> {
    let keys: Vec<_> = keys.iter().map(|(k, kid)| k.public_jwk(Some(kid))).collect();
    serde_json::to_vec(&json!({"keys": keys})).unwrap()
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn remote_jwks_fetch_and_rate_limited_refetch() {
    let mut e = engine_with(&remote_config());
    assert_eq!(e.jwks_due(NOW), vec![0]);
    let t = token();
    let auth = bearer(&t);
    let r = get("/v1/invoices", &auth);
    assert_eq!(expect_need(decide(&mut e, &r)), Need::Keys(0));
    let c = e.jwks_callout(0, NOW).unwrap();
    assert_eq!(c.headers.iter().find(|(k, _)| k == ":path").map(|(_, v)| v.as_str()), Some("/jwks.json"));
    assert_eq!(e.on_jwks(0, Some(200), &jwks_body(&[(&as_key(), "k1")]), NOW), Ok(1));
    let attempts = Attempts { keys: true, ..Attempts::default() };
    assert_eq!(expect_need(e.decide(&r, NOW, attempts, &mut MapGuard::default())), Need::Status(0, MISSION.to_owned()));

    // A rotated key (unknown kid) right after a fetch: the refetch is rate-limited.
    let rotated = sign(&as_ed_key(), "k2", "at+jwt", &token_claims());
    let auth2 = bearer(&rotated);
    let r2 = get("/v1/invoices", &auth2);
    expect_invalid_token(e.decide(&r2, NOW + 5, Attempts::default(), &mut MapGuard::default()), "unknown_key");
    // Past the interval it is refetched once; after that attempt the kid is unknown for good.
    assert_eq!(expect_need(e.decide(&r2, NOW + 10, Attempts::default(), &mut MapGuard::default())), Need::Keys(0));
    e.jwks_callout(0, NOW + 10).unwrap();
    assert!(e.on_jwks(0, Some(500), b"", NOW + 10).is_err());
    let attempts = Attempts { keys: true, ..Attempts::default() };
    expect_invalid_token(e.decide(&r2, NOW + 10, attempts, &mut MapGuard::default()), "unknown_key");
    // A failed refresh keeps the keys it had.
    assert_eq!(
        expect_need(e.decide(&r, NOW + 10, Attempts::default(), &mut MapGuard::default())),
        Need::Status(0, MISSION.to_owned())
    );
    // A later refetch that brings the new key makes the rotated token verify.
    assert_eq!(expect_need(e.decide(&r2, NOW + 20, Attempts::default(), &mut MapGuard::default())), Need::Keys(0));
    e.jwks_callout(0, NOW + 20).unwrap();
    assert_eq!(e.on_jwks(0, Some(200), &jwks_body(&[(&as_key(), "k1"), (&as_ed_key(), "k2")]), NOW + 20), Ok(2));
    assert_eq!(
        expect_need(e.decide(&r2, NOW + 20, Attempts { keys: true, ..Attempts::default() }, &mut MapGuard::default())),
        Need::Status(0, MISSION.to_owned())
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn keys_never_loaded_is_503() {
    let mut e = engine_with(&remote_config());
    let t = token();
    let auth = bearer(&t);
    let r = get("/v1/invoices", &auth);
    assert_eq!(expect_need(decide(&mut e, &r)), Need::Keys(0));
    e.jwks_callout(0, NOW).unwrap();
    assert!(e.on_jwks(0, None, b"", NOW).is_err());
    let d = expect_deny(
        e.decide(&r, NOW, Attempts { keys: true, ..Attempts::default() }, &mut MapGuard::default()),
        "keys_unavailable",
        503,
    );
    assert!(d.header("retry-after").is_some());
    assert_eq!(d.header("www-authenticate"), None);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn requests_during_an_in_flight_fetch_wait_for_it() {
    let mut e = engine_with(&remote_config());
    // The periodic load started at configure time (or another request's fetch) is in flight.
    assert_eq!(e.jwks_due(NOW), vec![0]);
    e.jwks_callout(0, NOW).unwrap();
    let t = token();
    let auth = bearer(&t);
    assert_eq!(expect_need(decide(&mut e, &get("/v1/invoices", &auth))), Need::Keys(0));
}

// ------------------------------------------------------------------------- DPoP ---------------

const HTU: &str = "https://api.partner.example/v1/invoices";

fn dpop_token(key: &SigningKey) -> String {
    let jkt = key.public_jwk(None).thumbprint().unwrap();
    token_with(|c| c["cnf"] = json!({"jkt": jkt}))
}

fn ath(token: &str) -> String {
    b64::encode(Sha256::digest(token.as_bytes()))
}

fn proof(key: &SigningKey, claims: &Value) -> String {
    let header = json!({"typ": "dpop+jwt", "alg": key.alg().name(), "jwk": key.public_jwk(None)});
    key.sign_compact(&header, claims)
}

fn proof_claims(token: &str, jti: &str) -> Value {
    json!({"jti": jti, "htm": "GET", "htu": HTU, "iat": NOW, "ath": ath(token)})
}

fn dpop_req<'a>(method: &'a str, path: &'a str, authorization: &'a str, proof: &'a str) -> Request<'a> {
    Request {
        method,
        scheme: "https",
        authority: HOST,
        path,
        authorization: Authz::One(authorization),
        dpop: Some(proof),
        dpop_count: 1,
    }
}

/// Decide a DPoP request against an engine with an active Mission; the proof is built from
/// `proof_claims` after `edit`.
fn decide_dpop(edit: impl FnOnce(&mut Value)) -> Outcome {
    let key = dpop_ed_key();
    let t = dpop_token(&key);
    let mut c = proof_claims(&t, "p-1");
    edit(&mut c);
    let p = proof(&key, &c);
    let auth = format!("DPoP {t}");
    let mut e = active_engine();
    decide(&mut e, &dpop_req("GET", "/v1/invoices", &auth, &p))
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn dpop_bound_token_as_bearer_is_refused() {
    let t = dpop_token(&dpop_ed_key());
    let mut e = active_engine();
    expect_invalid_token(decide(&mut e, &get("/v1/invoices", &bearer(&t))), "dpop_bound_token_as_bearer");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn dpop_valid_proof_then_replay() {
    for key in [dpop_ed_key(), dpop_p256_key()] {
        let t = dpop_token(&key);
        let p = proof(&key, &proof_claims(&t, "p-1"));
        let auth = format!("DPoP {t}");
        let r = dpop_req("GET", "/v1/invoices?status=open", &auth, &p);
        let mut e = engine();
        let mut guard = MapGuard::default();
        // Mission state first; the proof is not consumed by a decision that did not finish.
        assert_eq!(
            expect_need(e.decide(&r, NOW, Attempts::default(), &mut guard)),
            Need::Status(0, MISSION.to_owned())
        );
        set_state(&mut e, "active", 1);
        let ev = expect_allow(e.decide(&r, NOW, Attempts { status: true, ..Attempts::default() }, &mut guard));
        assert_eq!(ev.jti.as_deref(), Some("tok-1"));
        // The same proof again (any worker: the guard is shared) is a replay.
        let d = expect_bad_dpop(e.decide(&r, NOW + 1, Attempts::default(), &mut guard), "dpop_replay");
        assert_eq!(d.resp.status, 401);
        // A fresh proof for the same token is fine.
        let p2 = proof(&key, &proof_claims(&t, "p-2"));
        expect_allow(e.decide(&dpop_req("GET", "/v1/invoices", &auth, &p2), NOW + 1, Attempts::default(), &mut guard));
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn dpop_replay_store_down_fails_closed() {
    let key = dpop_ed_key();
    let t = dpop_token(&key);
    let p = proof(&key, &proof_claims(&t, "p-1"));
    let auth = format!("DPoP {t}");
    let mut e = active_engine();
    let o = e.decide(&dpop_req("GET", "/v1/invoices", &auth, &p), NOW, Attempts::default(), &mut BrokenGuard);
    let d = expect_deny(o, "authority_unavailable", 503);
    assert!(d.header("retry-after").is_some());
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn dpop_wrong_htm() {
    let d = expect_bad_dpop(decide_dpop(|c| c["htm"] = json!("POST")), "invalid_dpop_proof");
    assert!(d.body["detail"].as_str().unwrap().contains("htm"));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn dpop_wrong_htu() {
    for htu in [
        "https://api.partner.example/v1/other",
        "https://evil.example/v1/invoices",
        "http://api.partner.example/v1/invoices",
    ] {
        let d = expect_bad_dpop(decide_dpop(|c| c["htu"] = json!(htu)), "invalid_dpop_proof");
        assert!(d.body["detail"].as_str().unwrap().contains("htu"), "{htu}");
    }
    // Query and fragment are not part of htu: ignored when present.
    expect_allow(decide_dpop(|c| c["htu"] = json!("https://api.partner.example/v1/invoices?x=1")));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn dpop_stale_or_future_iat() {
    let d = expect_bad_dpop(decide_dpop(|c| c["iat"] = json!(NOW - 61)), "invalid_dpop_proof");
    assert!(d.body["detail"].as_str().unwrap().contains("iat"));
    expect_bad_dpop(decide_dpop(|c| c["iat"] = json!(NOW + 61)), "invalid_dpop_proof");
    expect_allow(decide_dpop(|c| c["iat"] = json!(NOW - 59)));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn dpop_wrong_or_missing_ath() {
    let d = expect_bad_dpop(decide_dpop(|c| c["ath"] = json!(ath("another-token"))), "invalid_dpop_proof");
    assert!(d.body["detail"].as_str().unwrap().contains("ath"));
    expect_bad_dpop(
        decide_dpop(|c| {
            c.as_object_mut().unwrap().remove("ath");
        }),
        "invalid_dpop_proof",
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn dpop_proof_problems() {
    let key = dpop_ed_key();
    let t = dpop_token(&key);
    let auth = format!("DPoP {t}");
    let claims = proof_claims(&t, "p-1");
    let mut e = active_engine();
    let mut check = |p: &str, count: usize, what: &str| {
        let r = Request { dpop: Some(p), dpop_count: count, ..dpop_req("GET", "/v1/invoices", &auth, p) };
        let d = expect_bad_dpop(decide(&mut e, &r), "invalid_dpop_proof");
        assert!(d.body["detail"].as_str().unwrap().contains(what), "{what}: {}", d.body);
    };
    // Another key than the one cnf.jkt names.
    check(&proof(&dpop_p256_key(), &claims), 1, "cnf.jkt");
    // Wrong typ.
    check(&key.sign_compact(&json!({"typ": "jwt", "alg": "EdDSA", "jwk": key.public_jwk(None)}), &claims), 1, "typ");
    // No embedded key.
    check(&key.sign_compact(&json!({"typ": "dpop+jwt", "alg": "EdDSA"}), &claims), 1, "jwk");
    // Symmetric alg.
    check(
        &unsigned(&json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.public_jwk(None)}), &claims, &[1; 32]),
        1,
        "alg",
    );
    // Signature by another key under the right jwk.
    check(
        &dpop_p256_key()
            .sign_compact(&json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": key.public_jwk(None)}), &claims),
        1,
        "signature",
    );
    // Two DPoP headers.
    check(&proof(&key, &claims), 2, "exactly one");
    // No proof at all.
    let r = Request { dpop: None, dpop_count: 0, ..get("/v1/invoices", &auth) };
    expect_bad_dpop(decide(&mut e, &r), "invalid_dpop_proof");
    // DPoP scheme with a token that is not bound.
    let plain = format!("DPoP {}", token());
    let p = proof(&key, &claims);
    expect_invalid_token(decide(&mut e, &dpop_req("GET", "/v1/invoices", &plain, &p)), "token_malformed");
}

// ------------------------------------------------------------------------- Mission state ------

fn state_denial(state: &str) -> Denied {
    let mut e = engine();
    set_state(&mut e, state, 3);
    let t = token();
    let d = expect_invalid_token(decide(&mut e, &get("/v1/invoices", &bearer(&t))), "mission_inactive");
    assert_eq!(d.body["mission"], json!({"id": MISSION, "state": state}), "{state}");
    d
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn mission_states_other_than_active_permit_nothing() {
    for state in
        ["suspended", "revoked", "expired", "pending_approval", "completed", "rejected", "superseded", "cascaded"]
    {
        state_denial(state);
    }
    // Names are exact: a state this build does not know, or another spelling, permits nothing.
    for state in ["paused_by_operator", "Active", "ACTIVE", " active", ""] {
        state_denial(state);
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn active_mission_past_expires_at() {
    let mut e = engine();
    let mut m = status_mission("active", 1);
    m["expires_at"] = json!(time::format_rfc3339(NOW + 100));
    assert_eq!(answer_status(&mut e, Some(200), |n| status_jws(n, m)), None);
    let t = token();
    let auth = bearer(&t);
    let r = get("/v1/invoices", &auth);
    expect_allow(e.decide(&r, NOW + 99, Attempts::default(), &mut MapGuard::default()));
    let d = expect_invalid_token(
        e.decide(&r, NOW + 100, Attempts::default(), &mut MapGuard::default()),
        "mission_inactive",
    );
    assert_eq!(d.body["mission"]["state"], "expired");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn unknown_mission_404() {
    let mut e = engine();
    let not_found =
        |n: &str| json!({"error": "not_found", "error_description": "no such mission", "nonce": n}).to_string();
    assert_eq!(answer_status(&mut e, Some(404), not_found), None);
    let t = token();
    let o = e.decide(
        &get("/v1/invoices", &bearer(&t)),
        NOW,
        Attempts { status: true, ..Attempts::default() },
        &mut MapGuard::default(),
    );
    let d = expect_invalid_token(o, "mission_unknown");
    assert_eq!(d.body["mission"], json!({"id": MISSION, "state": "unknown"}));
}

fn expect_authority_unavailable(e: &mut Engine) {
    let t = token();
    let auth = bearer(&t);
    let r = get("/v1/invoices", &auth);
    let o = e.decide(&r, NOW, Attempts { status: true, ..Attempts::default() }, &mut MapGuard::default());
    let d = expect_deny(o, "authority_unavailable", 503);
    assert_eq!(d.header("retry-after"), Some(RETRY_AFTER.to_string().as_str()));
    assert_eq!(d.header("www-authenticate"), None);
    assert_eq!(d.body["mission"]["id"], MISSION);
    // Requests arriving during the backoff are refused too, without hammering the authority.
    expect_deny(decide(e, &r), "authority_unavailable", 503);
}

/// Feed one bad answer and check that it fails closed.
fn bad_answer(status: Option<u16>, body: impl FnOnce(&str) -> String) {
    let mut e = engine();
    assert_eq!(answer_status(&mut e, status, body), None);
    expect_authority_unavailable(&mut e);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn status_answer_with_bad_nonce() {
    bad_answer(Some(200), |_| status_jws("not-the-nonce", status_mission("active", 1)));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn status_answer_with_wrong_aud_iss_or_mission() {
    let claims = |n: &str| json!({"iss": AS, "aud": GATEWAY_AUD, "nonce": n, "iat": NOW, "exp": NOW + 60, "mission": status_mission("active", 1)});
    let signed = |c: Value| sign(&as_key(), "k1", "mission-status-response+jwt", &c);
    bad_answer(Some(200), |n| {
        let mut c = claims(n);
        c["aud"] = json!("https://other-gateway.example");
        signed(c)
    });
    bad_answer(Some(200), |n| {
        let mut c = claims(n);
        c["iss"] = json!(OTHER_AS);
        signed(c)
    });
    bad_answer(Some(200), |n| {
        let mut c = claims(n);
        c["mission"]["id"] = json!("msn_other");
        signed(c)
    });
    bad_answer(Some(200), |n| {
        let mut c = claims(n);
        c["iat"] = json!(NOW + 31);
        signed(c)
    });
    bad_answer(Some(200), |n| {
        let mut c = claims(n);
        c["exp"] = json!(NOW - 31);
        signed(c)
    });
    bad_answer(Some(200), |n| {
        let mut c = claims(n);
        c["mission"]["fresh_until"] = json!("soon");
        signed(c)
    });
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn status_answer_with_wrong_typ_or_signer() {
    bad_answer(Some(200), |n| {
        let c = json!({"iss": AS, "aud": GATEWAY_AUD, "nonce": n, "iat": NOW, "exp": NOW + 60, "mission": status_mission("active", 1)});
        sign(&as_key(), "k1", "at+jwt", &c)
    });
    bad_answer(Some(200), |n| {
        let c = json!({"iss": AS, "aud": GATEWAY_AUD, "nonce": n, "iat": NOW, "exp": NOW + 60, "mission": status_mission("active", 1)});
        sign(&rogue_key(), "k1", "mission-status-response+jwt", &c)
    });
    // Signed by the other (token-only) issuer's key: not in the authority's JWKS.
    bad_answer(Some(200), |n| {
        let c = json!({"iss": AS, "aud": GATEWAY_AUD, "nonce": n, "iat": NOW, "exp": NOW + 60, "mission": status_mission("active", 1)});
        sign(&other_as_key(), "o1", "mission-status-response+jwt", &c)
    });
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn status_answer_garbage_or_failure() {
    bad_answer(Some(200), |_| "<html>bad gateway</html>".into());
    bad_answer(Some(200), |_| String::new());
    bad_answer(Some(200), |_| json!({"mission": {"state": "active"}}).to_string());
    bad_answer(Some(500), |_| String::new());
    bad_answer(Some(401), |_| String::new());
    bad_answer(None, |_| String::new());
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn after_the_backoff_state_is_asked_again() {
    let mut e = engine();
    answer_status(&mut e, None, |_| String::new());
    let t = token();
    let auth = bearer(&t);
    let r = get("/v1/invoices", &auth);
    expect_deny(decide(&mut e, &r), "authority_unavailable", 503);
    assert_eq!(
        expect_need(e.decide(&r, NOW + 1, Attempts::default(), &mut MapGuard::default())),
        Need::Status(0, MISSION.to_owned())
    );
}

// ------------------------------------------------------------------------- state events -------

fn set_jws(key: &SigningKey, kid: &str, jti: &str, state: &str, version: u64) -> String {
    let claims = json!({
        "iss": AS, "iat": NOW, "jti": jti, "aud": GATEWAY_AUD,
        "events": {EVENT_MISSION_STATE: lifecycle(state, version)}
    });
    sign(key, kid, "secevent+jwt", &claims)
}

fn poll_body(sets: &[(&str, String)]) -> Vec<u8> {
    let map: serde_json::Map<String, Value> =
        sets.iter().map(|(j, s)| ((*j).to_owned(), Value::String(s.clone()))).collect();
    serde_json::to_vec(&json!({"sets": map, "moreAvailable": false})).unwrap()
}

fn state_now(e: &mut Engine) -> Outcome {
    let t = token();
    decide(e, &get("/v1/invoices", &bearer(&t)))
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn revoked_event_blocks_a_cached_active_mission() {
    let mut e = active_engine();
    expect_allow(state_now(&mut e));
    assert_eq!(e.event_issuers(), vec![0]);
    let poll = e.events_callout(0, true).unwrap();
    assert_eq!(poll.headers.iter().find(|(k, _)| k == ":path").map(|(_, v)| v.as_str()), Some("/events"));

    let body = poll_body(&[("11", set_jws(&as_key(), "k1", "11", "revoked", 2))]);
    assert_eq!(e.on_events(0, Some(200), &body, NOW), (1, false, None));
    let d = expect_invalid_token(state_now(&mut e), "mission_inactive");
    assert_eq!(d.body["mission"]["state"], "revoked");

    // The next poll acknowledges the SET.
    let next: Value = serde_json::from_slice(&e.events_callout(0, false).unwrap().body).unwrap();
    assert_eq!(next["ack"], json!(["11"]));

    // Replayed or older "active" events never resurrect it, nor does an older status answer.
    let replay = poll_body(&[
        ("12", set_jws(&as_key(), "k1", "12", "active", 2)),
        ("13", set_jws(&as_key(), "k1", "13", "active", 1)),
    ]);
    assert_eq!(e.on_events(0, Some(200), &replay, NOW).0, 0);
    expect_invalid_token(state_now(&mut e), "mission_inactive");
    set_state(&mut e, "active", 1);
    expect_invalid_token(state_now(&mut e), "mission_inactive");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn event_not_newer_than_the_status_is_ignored() {
    let mut e = engine();
    set_state(&mut e, "active", 5);
    let body = poll_body(&[("21", set_jws(&as_key(), "k1", "21", "suspended", 5))]);
    assert_eq!(e.on_events(0, Some(200), &body, NOW).0, 0);
    expect_allow(state_now(&mut e));
    // Suspend (newer), then resume (newer still).
    let body = poll_body(&[
        ("22", set_jws(&as_key(), "k1", "22", "suspended", 6)),
        ("23", set_jws(&as_ed_key(), "k2", "23", "active", 7)),
    ]);
    assert_eq!(e.on_events(0, Some(200), &body, NOW).0, 2);
    expect_allow(state_now(&mut e));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn forged_events_are_rejected() {
    let mut e = active_engine();
    // Signed by a key the authority's JWKS does not hold (unknown kid: inline keys, no refetch).
    let body = poll_body(&[("31", set_jws(&rogue_key(), "k9", "31", "revoked", 9))]);
    assert_eq!(e.on_events(0, Some(200), &body, NOW), (0, false, None));
    // Known kid, wrong key; wrong typ; jti that does not match its key in `sets`; wrong iss.
    let mut wrong_iss = json!({"iss": OTHER_AS, "iat": NOW, "jti": "35",
        "events": {EVENT_MISSION_STATE: lifecycle("revoked", 9)}});
    let body = poll_body(&[
        ("32", set_jws(&rogue_key(), "k1", "32", "revoked", 9)),
        ("33", sign(&as_key(), "k1", "at+jwt", &json!({"iss": AS, "iat": NOW, "jti": "33", "events": {}}))),
        ("34", set_jws(&as_key(), "k1", "99", "revoked", 9)),
        ("35", sign(&as_key(), "k1", "secevent+jwt", &wrong_iss)),
    ]);
    assert_eq!(e.on_events(0, Some(200), &body, NOW).0, 0);
    // A SET about a Mission of another authority.
    wrong_iss["iss"] = json!(AS);
    wrong_iss["jti"] = json!("36");
    wrong_iss["events"][EVENT_MISSION_STATE]["mission"]["issuer"] = json!(OTHER_AS);
    let body = poll_body(&[("36", sign(&as_key(), "k1", "secevent+jwt", &wrong_iss))]);
    assert_eq!(e.on_events(0, Some(200), &body, NOW).0, 0);
    // Garbage and failures change nothing.
    assert_eq!(e.on_events(0, Some(200), b"not json", NOW), (0, false, None));
    assert_eq!(e.on_events(0, Some(503), b"", NOW), (0, false, None));
    expect_allow(state_now(&mut e));
}

// ------------------------------------------------------------------------- authority ----------

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn authority_prefix_on_segment_boundary() {
    let mut e = active_engine();
    let t = token();
    let auth = bearer(&t);
    for path in ["/v1", "/v1/", "/v1/invoices", "/v1/a/b?x=1", "/v1/a?x=/../..%2F"] {
        expect_allow(decide(&mut e, &get(path, &auth)));
    }
    // Forms an upstream could resolve elsewhere are refused before anything else (tests/paths.rs).
    for path in ["/v1/./invoices", "/%76%31/invoices", "/v1/../admin", "/v1%2Finvoices"] {
        expect_deny(decide(&mut e, &get(path, &auth)), "ambiguous_path", 400);
    }
    for path in ["/v1x", "/v1x/invoices", "/v2", "/", "/V1/invoices"] {
        let d = expect_deny(decide(&mut e, &get(path, &auth)), "insufficient_authority", 403);
        assert!(
            d.www().starts_with(
                "Bearer realm=\"missiongate\", error=\"insufficient_scope\", mission_denial=\"insufficient_authority\""
            ),
            "{path}: {}",
            d.www()
        );
        assert_eq!(d.ev.mission_id.as_deref(), Some(MISSION));
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn authority_method_outside_actions() {
    let mut e = active_engine();
    let t = token();
    let auth = bearer(&t);
    for method in ["POST", "DELETE", "PUT", "PATCH"] {
        let d =
            expect_deny(decide(&mut e, &req(method, "/v1/invoices", Authz::One(&auth))), "insufficient_authority", 403);
        assert_eq!(d.ev.action, Some(format!("http.{}", method.to_ascii_lowercase())));
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn authority_named_operation_from_config() {
    let mut e = active_engine();
    let t = token();
    let auth = bearer(&t);
    // POST /v1/payments is `payments.create`, covered by `payments.*`.
    let ev = expect_allow(decide(&mut e, &req("POST", "/v1/payments", Authz::One(&auth))));
    assert_eq!(ev.action.as_deref(), Some("payments.create"));
    // Another path under POST is plain `http.post`, which the token does not grant.
    let d = expect_deny(
        decide(&mut e, &req("POST", "/v1/payments/refunds", Authz::One(&auth))),
        "insufficient_authority",
        403,
    );
    assert_eq!(d.ev.action.as_deref(), Some("http.post"));
    // `payments.*` never covers `paymentsx.*` nor bare `payments`.
    let narrow = token_with(|c| c["authorization_details"][0]["actions"] = json!(["payment.*", "payments"]));
    let d = expect_deny(
        decide(&mut e, &req("POST", "/v1/payments", Authz::One(&bearer(&narrow)))),
        "insufficient_authority",
        403,
    );
    assert_eq!(d.ev.action.as_deref(), Some("payments.create"));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn authority_unenforceable_constraint() {
    let mut e = active_engine();
    let t = token();
    let auth = bearer(&t);
    let d = expect_deny(decide(&mut e, &get("/limited", &auth)), "constraint_unrecognized", 403);
    assert!(d.www().contains("mission_denial=\"constraint_unrecognized\""), "{}", d.www());
    assert!(d.www().contains("error=\"insufficient_scope\""), "{}", d.www());
    // Another entry without the constraint still permits (entries are alternatives).
    let both = token_with(|c| {
        c["authorization_details"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "resource_access", "resource": "https://api.partner.example/limited", "actions": ["http.get"]}));
    });
    expect_allow(decide(&mut e, &get("/limited", &bearer(&both))));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn authority_entries_not_honoured() {
    let mut e = active_engine();
    for entry in [
        json!({"type": "payment_initiation", "resource": "https://api.partner.example/v1", "actions": ["http.get"]}),
        json!({"type": "mission_resource_access", "resource": "https://api.partner.example/v1", "resource_match": "glob", "actions": ["http.get"]}),
        json!({"type": "mission_resource_access", "resource": "https://api.partner.example/v1", "resource_match": "prefix", "actions": ["http.*x"]}),
        json!({"type": "mission_resource_access", "resource": "https://other.example/v1", "resource_match": "prefix", "actions": ["http.*"]}),
    ] {
        let t = token_with(|c| c["authorization_details"] = json!([entry.clone()]));
        expect_deny(decide(&mut e, &get("/v1/invoices", &bearer(&t))), "insufficient_authority", 403);
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn refusals_never_echo_the_token() {
    let mut e = active_engine();
    let t = token();
    let auth = bearer(&t);
    let d = expect_deny(decide(&mut e, &get("/v1x", &auth)), "insufficient_authority", 403);
    let all = format!("{:?}{}", d.resp.headers, String::from_utf8_lossy(&d.resp.body));
    let sig = t.rsplit('.').next().unwrap();
    assert!(!all.contains(sig));
    assert!(!d.ev.to_json().contains(sig));
}

// ------------------------------------------------------------------------- configuration ------

fn config_error(c: &Value) -> missiongate_core::ConfigError {
    Config::parse(c.to_string().as_bytes()).unwrap_err()
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn bad_config_names_the_field() {
    let mut c = config_json();
    c["allowed_algs"] = json!(["HS256"]);
    let e = config_error(&c);
    assert_eq!(e.field, "allowed_algs[0]");
    assert!(e.to_string().starts_with("invalid missiongate config: allowed_algs[0]: "), "{e}");

    c["allowed_algs"] = json!(["ES256", "none"]);
    assert_eq!(config_error(&c).field, "allowed_algs[1]");
    c["allowed_algs"] = json!(["RS384"]);
    assert_eq!(config_error(&c).field, "allowed_algs[0]");
    c["allowed_algs"] = json!([]);
    assert_eq!(config_error(&c).field, "allowed_algs");

    let mut c = config_json();
    c.as_object_mut().unwrap().remove("issuers");
    let e = config_error(&c);
    assert!(e.message.contains("issuers"), "{e}");
    assert_eq!(config_error(&json!({"issuers": []})).field, "issuers");

    let mut c = config_json();
    c["clock_skw_seconds"] = json!(30);
    let e = config_error(&c);
    assert!(e.message.contains("clock_skw_seconds"), "{e}");

    let mut c = config_json();
    c["issuers"][1]["mission_authority"] =
        json!({"status": {"cluster": "x", "path": "/s"}, "audience": "a", "bogus": 1});
    assert!(config_error(&c).message.contains("bogus"));

    let mut c = config_json();
    c["issuers"][0]["jwks"]["keys"][0] = json!({"kty": "oct", "k": "c2VjcmV0"});
    assert_eq!(config_error(&c).field, "issuers[0].jwks.keys[0]");

    let mut c = config_json();
    c["issuers"][0]["jwks"]["keys"][0]["d"] = json!(b64::encode([0x11; 32]));
    assert_eq!(config_error(&c).field, "issuers[0].jwks.keys[0]");

    let mut c = config_json();
    c["issuers"][0].as_object_mut().unwrap().remove("mission_authority");
    assert_eq!(config_error(&c).field, "issuers");

    let mut c = config_json();
    c["issuers"][1]["issuer"] = json!(AS);
    assert_eq!(config_error(&c).field, "issuers[1].issuer");

    let mut c = config_json();
    c["issuers"][0]["mission_authority"]["status"]["path"] = json!("mission/status");
    assert_eq!(config_error(&c).field, "issuers[0].mission_authority.status.path");

    let mut c = config_json();
    c["dpop"] = json!({"allowed_algs": ["HS512"]});
    assert_eq!(config_error(&c).field, "dpop.allowed_algs[0]");

    let mut c = config_json();
    c["destinations"][0]["operations"][0]["action"] = json!("pay ments");
    assert_eq!(config_error(&c).field, "destinations[0].operations[0].action");
}

// ------------------------------------------------------------------------- SPEC §6 vectors ----

fn digest_of(
    method: &str,
    target: &str,
    headers: Option<&[(String, String)]>,
    body: Option<(Option<&str>, &[u8])>,
) -> (String, String) {
    let (d, canonical) = missiongate_wire::digest::parameter_digest(method, target, headers, body).unwrap();
    (d, String::from_utf8(canonical).unwrap())
}

const JSON_TYPE: Option<&str> = Some("application/json");

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec6_v1_get_no_body() {
    let (d, c) = digest_of("GET", "https://api.partner.example/v1/invoices?status=open&limit=10", None, None);
    assert_eq!(c, r#"{"method":"GET","target":"https://api.partner.example/v1/invoices?status=open&limit=10"}"#);
    assert_eq!(d, "sha-256:oZaAtCgeL4f6PCVrFBIdLpEJpdO9JQz4DwZ76Slp5XY");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec6_v2_v3_json_body() {
    let target = "https://api.partner.example/v1/payments";
    let (d, c) =
        digest_of("POST", target, None, Some((JSON_TYPE, br#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#)));
    assert_eq!(
        c,
        r#"{"body":{"amount":"423.50","currency":"USD","to":"acct_123"},"content_type":"application/json","method":"POST","target":"https://api.partner.example/v1/payments"}"#
    );
    assert_eq!(d, "sha-256:yLAZIL9150YK2-jnJ3yaKg4ewwCwZbTeuW5yu5qSRZk");
    let (d3, _) = digest_of(
        "POST",
        target,
        None,
        Some((
            Some("Application/JSON; charset=utf-8"),
            b"{ \"to\" : \"acct_123\", \"currency\":\"USD\",\n \"amount\":\"423.50\" }",
        )),
    );
    assert_eq!(d3, d);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec6_v4_changed_amount() {
    let (d, _) = digest_of(
        "POST",
        "https://api.partner.example/v1/payments",
        None,
        Some((JSON_TYPE, br#"{"amount":"4235.00","currency":"USD","to":"acct_123"}"#)),
    );
    assert_eq!(d, "sha-256:kY7PAYsBSabmUJeTfmLFkMD3l9Kjqs4l6SX5GkhJRSU");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec6_v7_text_body() {
    let (d, c) =
        digest_of("POST", "https://api.partner.example/upload", None, Some((Some("text/plain"), b"hello, partner")));
    assert_eq!(
        c,
        r#"{"body_sha256":"BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs","content_type":"text/plain","method":"POST","target":"https://api.partner.example/upload"}"#
    );
    assert_eq!(d, "sha-256:Vg-10WbE6ITI1jhkU1Xd2_G32jL6sbxiQFQldE9WdYI");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec6_v9_effect_header() {
    let headers = [("Idempotency-Key".to_owned(), "k-42".to_owned())];
    let (d, c) = digest_of(
        "POST",
        "https://api.partner.example/v1/payments",
        Some(&headers),
        Some((JSON_TYPE, br#"{"amount":"1.00"}"#)),
    );
    assert_eq!(
        c,
        r#"{"body":{"amount":"1.00"},"content_type":"application/json","headers":{"idempotency-key":"k-42"},"method":"POST","target":"https://api.partner.example/v1/payments"}"#
    );
    assert_eq!(d, "sha-256:UldhSLs_XZgqm4WsxWCCcbBBP58Z_7YFyzFbZE-1Rro");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec6_v10_v11_v12() {
    let (d10, _) = digest_of(
        "POST",
        "https://api.partner.example/upload",
        None,
        Some((JSON_TYPE, br#"{"sha-256":"BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"}"#)),
    );
    assert_eq!(d10, "sha-256:z2OPMgUIwl1dYMoZibm4cr8ZumaUoiHBb12o26mjphY");
    let (d11, _) = digest_of(
        "POST",
        "https://api.partner.example/v1/payments",
        None,
        Some((Some("application/vnd.api+json"), br#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#)),
    );
    assert_eq!(d11, "sha-256:9ZerN1VqypBn4XxzI1my-SwXHpGb5TGADWs1e77waGg");
    let (d12, _) = digest_of("PUT", "https://api.partner.example/blob", None, Some((None, b"hello, partner")));
    assert_eq!(d12, "sha-256:SdgghQ-PAioTqxAgBA-ZHfFdEub769L-JCEJO4HFjLU");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn jcs_numbers_and_utf16_order_in_wasm() {
    // RFC 8785 §3.2.2 number serialization and §3.2.3 member order (UTF-16 code units).
    let canon = |s: &str| String::from_utf8(missiongate_wire::jcs::canonicalize_ijson(s.as_bytes()).unwrap()).unwrap();
    assert_eq!(
        canon(r#"{"numbers":[333333333.3333333,1E30,4.50,2e-3,0.000000000000000000000000001]}"#),
        r#"{"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27]}"#
    );
    // The RFC's own 333333333.33333329 is not held by its double as written: unbindable (SPEC §6).
    assert_eq!(
        missiongate_wire::jcs::canonicalize_ijson(b"[333333333.33333329]"),
        Err(missiongate_wire::jcs::IJsonError::InexactNumber)
    );
    assert_eq!(
        canon("{\"\u{20ac}\":1,\"\u{1f600}\":2,\"\u{fb33}\":3,\"a\":4}"),
        "{\"a\":4,\"\u{20ac}\":1,\"\u{1f600}\":2,\"\u{fb33}\":3}"
    );
    assert!(missiongate_wire::jcs::canonicalize_ijson(br#"{"a":1,"a":2}"#).is_err());
}

// ------------------------------------------------------------------------- PDP path -----------

const PDP_RETRY_AFTER: u32 = 3;

fn pdp_engine() -> Engine {
    let mut c = config_json();
    c["pdp"] = json!({"evaluation": {"cluster": "pdp", "authority": "pdp.example", "path": "/access/v1/evaluation"},
                      "retry_after_seconds": PDP_RETRY_AFTER, "deny_cache_seconds": 0});
    c["destinations"][0]["operations"] = json!([
        {"method": "POST", "path": "/v1/payments", "action": "payments.create"},
        {"method": "POST", "path": "/v1/search", "action": "invoices.search", "consequential": false},
        {"method": "GET", "path": "/v1/exports", "path_match": "prefix", "action": "exports.start", "consequential": true}
    ]);
    let mut e = engine_with(&c);
    set_state(&mut e, "active", 1);
    e
}

/// Decide with the PDP's answer in hand.
fn with_answer(e: &mut Engine, r: &Request<'_>, status: Option<u16>, answer: &Value, guard: &mut MapGuard) -> Outcome {
    let pdp = missiongate_core::engine::PdpAnswer { status, body: serde_json::to_vec(answer).unwrap() };
    let extra = missiongate_core::engine::Extra { pdp: Some(&pdp), ..Default::default() };
    e.decide_full(r, &extra, NOW, Attempts { keys: true, status: true }, guard)
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn outside_the_authority_set_the_pdp_is_asked_with_spec_shape() {
    let mut e = pdp_engine();
    let auth = bearer(&token());
    let r = get("/v2/reports?q=1", &auth);
    let Need::Pdp(c) = expect_need(decide(&mut e, &r)) else { panic!("expected a PDP evaluation") };
    assert_eq!(c.cluster, "pdp");
    assert!(c.headers.iter().any(|(k, v)| k == ":path" && v == "/access/v1/evaluation"));
    assert!(c.headers.iter().any(|(k, v)| k == ":method" && v == "POST"));
    let body: Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(
        body,
        json!({
            "subject": {"type": "agent", "id": "agent-7", "properties": {"sub": "user-1", "iss": AS}},
            "resource": {"type": "egress", "id": ORIGIN},
            "action": {"name": "http.get"},
            "context": {"mission": {"id": MISSION, "issuer": AS, "authority_hash": "sha-256:AAAA"}}
        }),
        "SPEC §4 evaluation request"
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn pdp_answers_and_permit_conditions() {
    let mut e = pdp_engine();
    let auth = bearer(&token());
    let r = get("/v2/reports", &auth);
    let g = &mut MapGuard::default();
    let permit = |c: Value| json!({"decision": true, "context": {"evaluation_id": "eval_1", "conditions": c}});
    let ev = expect_allow(with_answer(
        &mut e,
        &r,
        Some(200),
        &json!({"decision": true, "context": {"evaluation_id": "eval_0"}}),
        g,
    ));
    assert_eq!(ev.evaluation_id.as_deref(), Some("eval_0"));
    expect_allow(with_answer(
        &mut e,
        &r,
        Some(200),
        &permit(json!({"valid_until": time::format_rfc3339(NOW + 60)})),
        g,
    ));
    // Unavailable, failed or garbage: 503 with the PDP's Retry-After, never a guess.
    for (status, body) in [
        (None, json!(null)),
        (Some(503), json!({"error": "down"})),
        (Some(200), json!({"decision": "yes"})),
        (Some(200), json!([1])),
    ] {
        let d = expect_deny(with_answer(&mut e, &r, status, &body, g), "pdp_unavailable", 503);
        assert_eq!(d.header("retry-after"), Some(PDP_RETRY_AFTER.to_string().as_str()));
    }
    // Conditions: each one the filter does not understand or cannot honour denies.
    expect_deny(
        with_answer(&mut e, &r, Some(200), &permit(json!({"valid_until": time::format_rfc3339(NOW)})), g),
        "parameter_violation",
        403,
    );
    expect_deny(with_answer(&mut e, &r, Some(200), &permit(json!({"valid_until": "soon"})), g), "pdp_denied", 403);
    expect_deny(with_answer(&mut e, &r, Some(200), &permit(json!({"geo_fence": "eu"})), g), "pdp_denied", 403);
    expect_deny(with_answer(&mut e, &r, Some(200), &permit(json!({"use_limit": 2})), g), "pdp_denied", 403);
    expect_deny(
        with_answer(
            &mut e,
            &r,
            Some(200),
            &permit(json!({"parameter_digest": "sha-256:yLAZIL9150YK2-jnJ3yaKg4ewwCwZbTeuW5yu5qSRZk"})),
            g,
        ),
        "parameter_violation",
        403,
    );
    // Single use: once, across every worker (the guard is what they share).
    let once = json!({"decision": true, "context": {"evaluation_id": "eval_once", "conditions": {"use_limit": 1}}});
    expect_allow(with_answer(&mut e, &r, Some(200), &once, g));
    expect_deny(with_answer(&mut e, &r, Some(200), &once, g), "parameter_violation", 403);
    let no_id = json!({"decision": true, "context": {"conditions": {"use_limit": 1}}});
    expect_deny(with_answer(&mut e, &r, Some(200), &no_id, g), "pdp_denied", 403);
    // A plain refusal.
    let d = expect_deny(
        with_answer(&mut e, &r, Some(200), &json!({"decision": false, "context": {"reason": "weekend"}}), g),
        "pdp_denied",
        403,
    );
    assert!(
        d.www().contains("error=\"insufficient_scope\"")
            && d.www().contains("mission_denial=\"insufficient_authority\""),
        "{}",
        d.www()
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_requestable_denial_is_a_511_captive_document() {
    let mut e = pdp_engine();
    let auth = bearer(&token());
    let r = get("/v2/reports", &auth);
    let answer = json!({"decision": false, "context": {
        "evaluation_id": "eval_9", "reason": "egress_not_allowed", "next_action": "request",
        "user_portal_url": "https://portal.example/portal/d/7Qx",
        "captive_portal_api": "https://portal.example/captive-portal/api/d/7Qx",
        "access_request": {"endpoint": "https://portal.example/access/v1/requests", "expires_at": "2027-01-15T08:10:00Z", "binding_token": "b.t.s"}}});
    let (resp, ev) = match with_answer(&mut e, &r, Some(200), &answer, &mut MapGuard::default()) {
        Outcome::Deny(resp, ev) => (resp, ev),
        other => panic!("expected a 511, got {other:?}"),
    };
    assert_eq!(resp.status, 511);
    assert_eq!(ev.reason.as_str(), "egress_not_allowed");
    let h = |n: &str| resp.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
    assert_eq!(h("content-type"), Some("application/captive+json"));
    assert_eq!(h("cache-control"), Some("no-store"));
    assert_eq!(h("link"), Some("<https://portal.example/captive-portal/api/d/7Qx>; rel=\"captive-portal-api\""));
    let doc: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(doc["captive"], true);
    assert_eq!(doc["user-portal-url"], "https://portal.example/portal/d/7Qx");
    let ar = &doc["access-request"];
    assert_eq!(ar["subject"]["id"], "agent-7");
    assert_eq!(ar["resource"], json!({"type": "egress", "id": ORIGIN}));
    assert_eq!(ar["action"]["name"], "http.get");
    assert_eq!(ar["context"]["evaluation_id"], "eval_9");
    assert_eq!(ar["context"]["mission"]["id"], MISSION);
    assert_eq!(ar["context"]["access_request"]["binding_token"], "b.t.s");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn named_operations_choose_whether_they_are_consequential() {
    let mut e = pdp_engine();
    let auth = bearer(&token());
    // POST /v1/payments: consequential by method, so its body is needed first.
    assert_eq!(expect_need(decide(&mut e, &req("POST", "/v1/payments", Authz::One(&auth)))), Need::Body);
    // POST /v1/search is exempted by its operation: decided on the headers (here: outside the
    // Authority Set, so the PDP is asked, without a digest).
    let Need::Pdp(c) = expect_need(decide(&mut e, &req("POST", "/v1/search", Authz::One(&auth)))) else {
        panic!("expected a PDP evaluation")
    };
    let body: Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(body["action"], json!({"name": "invoices.search"}));
    // GET /v1/exports/... binds itself, although GET is not consequential by default.
    assert_eq!(expect_need(decide(&mut e, &get("/v1/exports/q3", &auth))), Need::Body);
    // A plain GET inside the Authority Set needs nothing.
    expect_allow(decide(&mut e, &get("/v1/invoices", &auth)));
}

/// A consequential call with its body in hand, before the PDP answered.
fn decide_bound(e: &mut Engine, r: &Request<'_>, headers: &[(&str, &str)], body: &[u8]) -> Outcome {
    let headers: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let extra =
        missiongate_core::engine::Extra { headers: &headers, body: Some(body), pdp: None, ..Default::default() };
    e.decide_full(r, &extra, NOW, Attempts { keys: true, status: true }, &mut MapGuard::default())
}

/// The problem body must not carry any of `secrets` (body bytes, header values).
fn assert_echoes_none(d: &Denied, secrets: &[&str]) {
    let text = String::from_utf8_lossy(&d.resp.body);
    for s in secrets {
        assert!(!text.contains(s), "{s:?} echoed in {text}");
        assert!(d.resp.headers.iter().all(|(_, v)| !v.contains(s)), "{s:?} echoed in {:?}", d.resp.headers);
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn an_inexact_number_makes_a_bound_call_a_400() {
    let mut e = pdp_engine();
    let auth = bearer(&token());
    let r = req("POST", "/v1/payments", Authz::One(&auth));
    let ct = [("content-type", "application/json")];
    for body in [
        &br#"{"amount":9007199254740993,"to":"acct_123"}"#[..],
        br#"{"amount":1e-400,"to":"acct_123"}"#,
        br#"{"amount":0.10000000000000000001,"to":"acct_123"}"#,
        br#"{"amount":1e400,"to":"acct_123"}"#,
    ] {
        let d = expect_deny(decide_bound(&mut e, &r, &ct, body), "body_not_canonicalizable", 400);
        assert_echoes_none(&d, &["acct_123", "9007199254740993", "1e-400", "0.10000000000000000001", "1e400"]);
        assert_eq!(d.ev.parameter_digest, None);
    }
    // Exact spellings of numbers bind, and the PDP is asked with the digest.
    let exact = br#"{"amount":1.0,"fee":5E2,"rate":0.1,"n":-0,"to":"acct_123"}"#;
    let Need::Pdp(c) = expect_need(decide_bound(&mut e, &r, &ct, exact)) else { panic!("expected a PDP evaluation") };
    let body: Value = serde_json::from_slice(&c.body).unwrap();
    let (want, _) = digest_of("POST", &format!("{ORIGIN}/v1/payments"), None, Some((JSON_TYPE, exact)));
    assert_eq!(body["action"]["properties"]["parameter_digest"], want);
    // A duplicate member name in the body is not echoed either.
    let d = expect_deny(
        decide_bound(&mut e, &r, &ct, br#"{"secret-name":1,"secret-name":2}"#),
        "body_not_canonicalizable",
        400,
    );
    assert_echoes_none(&d, &["secret-name"]);
    let counters: HashMap<String, u64> = e.take_counters().into_iter().collect();
    assert_eq!(counters.get("decision.body_not_canonicalizable"), Some(&5));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_repeated_effect_bearing_header_makes_a_bound_call_a_400() {
    let mut c = config_json();
    c["pdp"] = json!({"evaluation": {"cluster": "pdp", "authority": "pdp.example", "path": "/access/v1/evaluation"},
                      "retry_after_seconds": PDP_RETRY_AFTER, "deny_cache_seconds": 0});
    c["destinations"][0]["effect_headers"] = json!(["Idempotency-Key"]);
    let mut e = engine_with(&c);
    set_state(&mut e, "active", 1);
    let auth = bearer(&token());
    let r = req("POST", "/v1/payments", Authz::One(&auth));
    let body = br#"{"amount":"1.00"}"#;
    let twice =
        [("content-type", "application/json"), ("idempotency-key", "k-secret-1"), ("Idempotency-Key", "k-secret-2")];
    let d = expect_deny(decide_bound(&mut e, &r, &twice, body), "body_not_canonicalizable", 400);
    assert_echoes_none(&d, &["k-secret-1", "k-secret-2", "1.00"]);
    assert!(d.body["detail"].as_str().unwrap().contains("idempotency-key"), "{}", d.body);
    // The same value twice is still two fields.
    let same = [("content-type", "application/json"), ("idempotency-key", "k-42"), ("idempotency-key", "k-42")];
    expect_deny(decide_bound(&mut e, &r, &same, body), "body_not_canonicalizable", 400);
    // Content-Type twice on a body: which media type would be bound?
    let ct2 = [("content-type", "application/json"), ("content-type", "text/plain"), ("idempotency-key", "k-42")];
    expect_deny(decide_bound(&mut e, &r, &ct2, body), "body_not_canonicalizable", 400);
    // Once each: bound with the header, SPEC §6 V9.
    let once = [("content-type", "application/json"), ("Idempotency-Key", "k-42"), ("x-other", "1"), ("x-other", "2")];
    let Need::Pdp(c) = expect_need(decide_bound(&mut e, &r, &once, body)) else { panic!("expected a PDP evaluation") };
    let eval: Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(eval["action"]["properties"]["parameter_digest"], "sha-256:UldhSLs_XZgqm4WsxWCCcbBBP58Z_7YFyzFbZE-1Rro");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_raw_body_is_bound_by_its_hash_and_content_type() {
    const V7: &str = "sha-256:Vg-10WbE6ITI1jhkU1Xd2_G32jL6sbxiQFQldE9WdYI";
    const V10: &str = "sha-256:z2OPMgUIwl1dYMoZibm4cr8ZumaUoiHBb12o26mjphY";
    let mut e = pdp_engine();
    let auth = bearer(&token());
    let r = req("POST", "/upload", Authz::One(&auth));
    let text = [("Content-Type", "text/plain; charset=us-ascii")];
    let Need::Pdp(c) = expect_need(decide_bound(&mut e, &r, &text, b"hello, partner")) else {
        panic!("expected a PDP evaluation")
    };
    let eval: Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(eval["action"]["properties"]["parameter_digest"], V7, "SPEC §6 V7");
    // A permit for exactly that call allows it; the same bytes under another media type, or a JSON
    // body spelling the raw hash (V10), are other calls.
    let headers = vec![("content-type".to_owned(), "text/plain".to_owned())];
    let permit = |d: &str| {
        let answer =
            json!({"decision": true, "context": {"evaluation_id": "eval_raw", "conditions": {"parameter_digest": d}}});
        missiongate_core::engine::PdpAnswer { status: Some(200), body: serde_json::to_vec(&answer).unwrap() }
    };
    let with = |e: &mut Engine, headers: &[(String, String)], body: &[u8], d: &str| {
        let pdp = permit(d);
        let extra =
            missiongate_core::engine::Extra { headers, body: Some(body), pdp: Some(&pdp), ..Default::default() };
        e.decide_full(&r, &extra, NOW, Attempts { keys: true, status: true }, &mut MapGuard::default())
    };
    let ev = expect_allow(with(&mut e, &headers, b"hello, partner", V7));
    assert_eq!(ev.parameter_digest.as_deref(), Some(V7));
    let csv = vec![("content-type".to_owned(), "text/csv".to_owned())];
    expect_deny(with(&mut e, &csv, b"hello, partner", V7), "parameter_violation", 403);
    let json_spelling = vec![("content-type".to_owned(), "application/json".to_owned())];
    let spelled = br#"{"sha-256":"BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"}"#;
    let d = expect_deny(with(&mut e, &json_spelling, spelled, V7), "parameter_violation", 403);
    assert_eq!(d.ev.parameter_digest.as_deref(), Some(V10));
    // No Content-Type: bound as application/octet-stream (V12's rule), so not V7 either.
    expect_deny(with(&mut e, &[], b"hello, partner", V7), "parameter_violation", 403);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_refusal_the_host_finds_is_a_counted_problem_with_evidence() {
    let mut e = engine();
    // A host call failed: 503 with Retry-After, problem+json, no challenge, evidence, its counter.
    let (resp, ev) =
        e.refuse(missiongate_core::decision::Reason::GatewayError, "the request body could not be read", NOW);
    let d = expect_deny(Outcome::Deny(resp, ev), "gateway_error", 503);
    assert_eq!(d.header("retry-after"), Some("1"));
    assert_eq!(d.header("www-authenticate"), None);
    assert_eq!(d.header("content-type"), Some("application/problem+json"));
    // An oversized body: 413, no Retry-After.
    let (resp, ev) = e.refuse(missiongate_core::decision::Reason::BodyTooLarge, "too large", NOW);
    let d = expect_deny(Outcome::Deny(resp, ev), "body_too_large", 413);
    assert_eq!(d.header("retry-after"), None);
    let counters: HashMap<String, u64> = e.take_counters().into_iter().collect();
    assert_eq!(counters.get("decision.gateway_error"), Some(&1));
    assert_eq!(counters.get("decision.body_too_large"), Some(&1));
}

// ------------------------------------------------------------------------- issue 11 ------------

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_pdp_callout_carries_the_configured_credential() {
    let mut c = config_json();
    c["pdp"] = json!({"evaluation": {"cluster": "pdp", "authority": "pdp.example", "path": "/access/v1/evaluation"},
                      "credential": "Bearer gw-secret-1"});
    let mut e = engine_with(&c);
    set_state(&mut e, "active", 1);
    let auth = bearer(&token());
    let Need::Pdp(call) = expect_need(decide(&mut e, &get("/v2/reports", &auth))) else {
        panic!("expected a PDP call")
    };
    assert!(call.headers.iter().any(|(k, v)| k == "authorization" && v == "Bearer gw-secret-1"), "{:?}", call.headers);
    // Without one, no Authorization header is sent.
    let mut e = pdp_engine();
    let Need::Pdp(call) = expect_need(decide(&mut e, &get("/v2/reports", &auth))) else {
        panic!("expected a PDP call")
    };
    assert!(!call.headers.iter().any(|(k, _)| k == "authorization"));
    // A credential that cannot be a header value is a config error naming the field.
    c["pdp"]["credential"] = json!("Bearer a\r\nx: y");
    let err = Config::parse(serde_json::to_vec(&c).unwrap().as_slice()).unwrap_err();
    assert_eq!(err.field, "pdp.credential");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn state_events_for_another_audience_or_from_the_future_are_rejected() {
    let mut e = active_engine();
    let set = |aud: Value, iat: i64, jti: &str| {
        let claims = json!({"iss": AS, "iat": iat, "jti": jti, "aud": aud,
            "events": {EVENT_MISSION_STATE: lifecycle("revoked", 2)}});
        sign(&as_key(), "k1", "secevent+jwt", &claims)
    };
    let no_aud = sign(
        &as_key(),
        "k1",
        "secevent+jwt",
        &json!({"iss": AS, "iat": NOW, "jti": "44",
            "events": {EVENT_MISSION_STATE: lifecycle("revoked", 2)}}),
    );
    let body = poll_body(&[
        ("41", set(json!("https://other-gateway.example"), NOW, "41")),
        ("42", set(json!(["https://other-gateway.example"]), NOW, "42")),
        ("43", set(json!(GATEWAY_AUD), NOW + 31, "43")),
        ("44", no_aud),
    ]);
    assert_eq!(e.on_events(0, Some(200), &body, NOW).0, 0);
    expect_allow(state_now(&mut e));
    // The same event for this gateway (in an audience list, within the skew) applies.
    let body = poll_body(&[("45", set(json!(["https://other-gateway.example", GATEWAY_AUD]), NOW + 30, "45"))]);
    assert_eq!(e.on_events(0, Some(200), &body, NOW).0, 1);
    expect_invalid_token(state_now(&mut e), "mission_inactive");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_single_use_permit_is_remembered_for_its_whole_validity() {
    let mut e = pdp_engine();
    let auth = bearer(&token());
    let r = get("/v2/reports", &auth);
    let day = NOW + 86_400;
    let once = json!({"decision": true, "context": {"evaluation_id": "perm_day",
        "conditions": {"use_limit": 1, "valid_until": time::format_rfc3339(day)}}});
    let pdp = missiongate_core::engine::PdpAnswer { status: Some(200), body: serde_json::to_vec(&once).unwrap() };
    let extra = missiongate_core::engine::Extra { headers: &[], body: None, pdp: Some(&pdp), ..Default::default() };
    let mut g = MapGuard::default();
    expect_allow(e.decide_full(&r, &extra, NOW, Attempts { keys: true, status: true }, &mut g));
    // The permit's key (hashed with the PDP endpoint) is kept until the permit's own valid_until.
    let kept: Vec<&i64> = g.0.iter().filter(|(k, _)| k.starts_with("mg.use/")).map(|(_, v)| v).collect();
    assert_eq!(kept, vec![&day]);
    // Asked again (by any worker sharing the memory), the same permit is refused.
    let o = e.decide_full(&r, &extra, NOW + 1, Attempts { keys: true, status: true }, &mut g);
    expect_deny(o, "parameter_violation", 403);
    // A permit without valid_until is remembered for an hour at least.
    let short = json!({"decision": true, "context": {"evaluation_id": "perm_short", "conditions": {"use_limit": 1}}});
    let pdp = missiongate_core::engine::PdpAnswer { status: Some(200), body: serde_json::to_vec(&short).unwrap() };
    let extra = missiongate_core::engine::Extra { headers: &[], body: None, pdp: Some(&pdp), ..Default::default() };
    expect_allow(e.decide_full(&r, &extra, NOW, Attempts { keys: true, status: true }, &mut g));
    let mut kept: Vec<i64> = g.0.iter().filter(|(k, _)| k.starts_with("mg.use/")).map(|(_, v)| *v).collect();
    kept.sort_unstable();
    assert_eq!(kept, vec![NOW + 3600, day]);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_pdp_refusal_for_a_used_single_use_approval_is_a_parameter_violation() {
    let mut e = pdp_engine();
    let auth = bearer(&token());
    let r = get("/v2/reports", &auth);
    let g = &mut MapGuard::default();
    let used = json!({"decision": false, "context": {"evaluation_id": "eval_u", "reason": "parameter_violation",
        "next_action": "none"}});
    expect_deny(with_answer(&mut e, &r, Some(200), &used, g), "parameter_violation", 403);
}

// ------------------------------------------------- Mission Status errors, signals draft, containment --

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_bare_404_is_a_failure_of_the_authority_logged_at_a_bounded_rate_and_counted() {
    let mut e = engine();
    let (_, nonce) = e.status_callout(0, MISSION).unwrap();
    let first = e.on_status(0, MISSION, &nonce, Some(404), b"", NOW);
    let line = first.log.expect("the cause is logged");
    assert!(line.contains(AS) && line.contains("404"), "{line}");
    expect_authority_unavailable(&mut e);
    // Within the interval the same issuer's failures are not logged again; after it they are.
    let (_, nonce) = e.status_callout(0, MISSION).unwrap();
    let not_echoed = json!({"error": "not_found", "error_description": "x", "nonce": "someone-else"}).to_string();
    assert_eq!(e.on_status(0, MISSION, &nonce, Some(404), not_echoed.as_bytes(), NOW + 10).log, None);
    let (_, nonce) = e.status_callout(0, MISSION).unwrap();
    let later = e.on_status(0, MISSION, &nonce, Some(502), b"<html>", NOW + 31).log.expect("logged again");
    assert!(later.contains("502"), "{later}");
    let counters: HashMap<String, u64> = e.take_counters().into_iter().collect();
    assert_eq!(counters.get("callout.status.unexpected"), Some(&3));
    assert_eq!(counters.get("callout.status.ok"), None);
    // A verified answer and the draft's not-found are not failures and log nothing.
    let mut e = engine();
    let (_, nonce) = e.status_callout(0, MISSION).unwrap();
    let nf = json!({"error": "not_found", "error_description": "no such mission", "nonce": nonce}).to_string();
    assert_eq!(e.on_status(0, MISSION, &nonce, Some(404), nf.as_bytes(), NOW).log, None);
    let counters: HashMap<String, u64> = e.take_counters().into_iter().collect();
    assert_eq!(counters.get("callout.status.ok"), Some(&1));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn status_requests_ask_for_the_registered_type_with_the_configured_credential_header() {
    let header = |c: &missiongate_core::engine::Callout, name: &str| {
        c.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    };
    let mut e = engine();
    let (c, _) = e.status_callout(0, MISSION).unwrap();
    assert_eq!(header(&c, "accept").as_deref(), Some("application/mission-status-response+jwt"));
    assert_eq!(header(&c, "authorization"), None);
    let mut cfg = config_json();
    cfg["issuers"][0]["mission_authority"]["credential"] = json!("DPoP-less sc-token-1");
    cfg["issuers"][0]["mission_authority"]["credential_header"] = json!("x-gateway-credential");
    let mut e = engine_with(&cfg);
    let (c, _) = e.status_callout(0, MISSION).unwrap();
    assert_eq!(header(&c, "x-gateway-credential").as_deref(), Some("DPoP-less sc-token-1"));
    assert_eq!(header(&c, "authorization"), None);
    let poll = e.events_callout(0, true).unwrap();
    assert_eq!(header(&poll, "x-gateway-credential").as_deref(), Some("DPoP-less sc-token-1"));
    // Default header: Authorization.
    cfg["issuers"][0]["mission_authority"].as_object_mut().unwrap().remove("credential_header");
    let mut e = engine_with(&cfg);
    let (c, _) = e.status_callout(0, MISSION).unwrap();
    assert_eq!(header(&c, "authorization").as_deref(), Some("DPoP-less sc-token-1"));
    for bad in ["", "X-Upper", "host", "content-type", ":authority", "a b", "a\r\nb"] {
        cfg["issuers"][0]["mission_authority"]["credential_header"] = json!(bad);
        let err = Config::parse(cfg.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.field, "issuers[0].mission_authority.credential_header", "{bad:?}");
    }
    cfg["issuers"][0]["mission_authority"]["credential_header"] = json!("authorization");
    cfg["issuers"][0]["mission_authority"]["credential"] = json!("Bearer a\r\nx: y");
    let err = Config::parse(cfg.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.field, "issuers[0].mission_authority.credential");
}

fn pay(auth: &str) -> Request<'_> {
    req("POST", "/v1/payments", Authz::One(auth))
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_status_answers_authority_set_narrows_the_tokens() {
    let t = token();
    let auth = bearer(&t);
    let mut e = active_engine();
    expect_allow(decide(&mut e, &get("/v1/invoices", &auth)));
    expect_allow(decide(&mut e, &pay(&auth)));
    // The Mission is contained: still active, its current set no longer has payments.
    let mut e = engine();
    assert_eq!(
        answer_status(&mut e, Some(200), |n| {
            let claims = json!({"iss": AS, "aud": GATEWAY_AUD, "nonce": n, "iat": NOW, "exp": NOW + 60,
                "mission": status_mission("active", 2),
                "authorization_details": [{"type": "mission_resource_access",
                    "resource": "https://api.partner.example/v1", "resource_match": "prefix", "actions": ["http.get"]}]});
            sign(&as_key(), "k1", "mission-status-response+jwt", &claims)
        }),
        None
    );
    expect_allow(decide(&mut e, &get("/v1/invoices", &auth)));
    expect_deny(decide(&mut e, &pay(&auth)), "insufficient_authority", 403);
    // A current set wider than the token never widens it.
    let mut e = engine();
    answer_status(&mut e, Some(200), |n| {
        let claims = json!({"iss": AS, "aud": GATEWAY_AUD, "nonce": n, "iat": NOW, "exp": NOW + 60,
            "mission": status_mission("active", 2),
            "authorization_details": [{"type": "mission_resource_access",
                "resource": ORIGIN, "actions": ["http.*", "payments.*"]}]});
        sign(&as_key(), "k1", "mission-status-response+jwt", &claims)
    });
    expect_allow(decide(&mut e, &pay(&auth)));
    expect_deny(decide(&mut e, &req("DELETE", "/v1/x", Authz::One(&auth))), "insufficient_authority", 403);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_version_gap_or_authority_change_is_settled_by_mission_status() {
    let t = token();
    let auth = bearer(&t);
    let mut e = active_engine();
    // v2 was lost; v3 (active) arrives: Mission Status is asked before the Mission is relied on.
    let body = poll_body(&[("f81d4fae-a", set_jws(&as_key(), "k1", "f81d4fae-a", "active", 3))]);
    assert_eq!(e.on_events(0, Some(200), &body, NOW).0, 1);
    assert_eq!(expect_need(decide(&mut e, &get("/v1/invoices", &auth))), Need::Status(0, MISSION.to_owned()));
    set_state(&mut e, "suspended", 4);
    expect_invalid_token(decide(&mut e, &get("/v1/invoices", &auth)), "mission_inactive");
    set_state(&mut e, "active", 5);
    expect_allow(decide(&mut e, &get("/v1/invoices", &auth)));
    // authority_changed (state stays active): the answer in force is dropped and asked again.
    let mut ev = lifecycle("active", 6);
    ev["authority_changed"] = json!(true);
    let claims =
        json!({"iss": AS, "iat": NOW, "jti": "f81d4fae-b", "aud": GATEWAY_AUD, "events": {EVENT_MISSION_STATE: ev}});
    let body = poll_body(&[("f81d4fae-b", sign(&as_key(), "k1", "secevent+jwt", &claims))]);
    assert_eq!(e.on_events(0, Some(200), &body, NOW).0, 1);
    assert_eq!(expect_need(decide(&mut e, &pay(&auth))), Need::Status(0, MISSION.to_owned()));
    // A first event above version 1 for a Mission never seen is settled the same way.
    let mut e = engine();
    let body = poll_body(&[("f81d4fae-c", set_jws(&as_key(), "k1", "f81d4fae-c", "active", 7))]);
    assert_eq!(e.on_events(0, Some(200), &body, NOW).0, 1);
    assert_eq!(expect_need(decide(&mut e, &get("/v1/invoices", &auth))), Need::Status(0, MISSION.to_owned()));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn each_set_is_acknowledged_by_jti_and_a_reordered_batch_applies_in_version_order() {
    let mut e = active_engine();
    let other_aud = sign(
        &as_key(),
        "k1",
        "secevent+jwt",
        &json!({"iss": AS, "iat": NOW, "jti": "b-2", "aud": "https://other-gateway.example",
                "events": {EVENT_MISSION_STATE: lifecycle("revoked", 9)}}),
    );
    // Delivered out of order (v3 before v2 in the map, opaque jtis), a duplicate, another audience.
    let body = poll_body(&[
        ("z-1", set_jws(&as_key(), "k1", "z-1", "revoked", 3)),
        ("a-1", set_jws(&as_key(), "k1", "a-1", "suspended", 2)),
        ("b-2", other_aud),
    ]);
    assert_eq!(e.on_events(0, Some(200), &body, NOW).0, 2);
    let d = expect_invalid_token(state_now(&mut e), "mission_inactive");
    assert_eq!(d.body["mission"]["state"], "revoked");
    let next: Value = serde_json::from_slice(&e.events_callout(0, false).unwrap().body).unwrap();
    let mut acked: Vec<String> = serde_json::from_value(next["ack"].clone()).unwrap();
    acked.sort();
    assert_eq!(acked, vec!["a-1", "z-1"]);
    assert_eq!(next["setErrs"]["b-2"]["err"], "invalid_audience");
    // Delivered again (the ack was lost): nothing changes, and it is acknowledged again.
    assert_eq!(e.on_events(0, Some(200), &body, NOW).0, 0);
    let next: Value = serde_json::from_slice(&e.events_callout(0, false).unwrap().body).unwrap();
    assert_eq!(next["ack"].as_array().map(Vec::len), Some(2));
    // Nothing new processed: the last acknowledgement is repeated, refusals are not.
    let again: Value = serde_json::from_slice(&e.events_callout(0, false).unwrap().body).unwrap();
    assert_eq!(again["ack"], next["ack"]);
    assert!(again.get("setErrs").is_none());
}
