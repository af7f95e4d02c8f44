//! Issue 10 items 6 and 7, driven through the core's public API: a PDP answer is reused only for
//! the same question to the same PDP; identifiers that reach replay storage or evidence are bounded
//! visible ASCII; a replayed DPoP proof never spends a single-use permit; a JWKS has limits; no
//! input reaches a problem detail; decision ids and nonces come from independent seeds; every
//! per-worker map has a bound.
//!
//! Runs natively (`cargo test -p missiongate-core`) and compiled to wasm32-unknown-unknown under
//! wasm-bindgen-test (`make test-wasm-core`), like `core.rs`: fixed keys, fixed clock, no RNG.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::rc::Rc;

use missiongate_core::decision::Evidence;
use missiongate_core::engine::{Callout, Extra, PdpAnswer, MAX_CACHED_DECISIONS};
use missiongate_core::keys::MAX_TABLES_PER_ISSUER;
use missiongate_core::mission::{MissionCache, MAX_MISSIONS};
use missiongate_core::token::{TokenCache, VerifiedToken};
use missiongate_core::{Attempts, Config, Engine, Need, Outcome, ReplayGuard, Request, Seeds};
use missiongate_wire::jose::{Alg, SigningKey};
use missiongate_wire::{b64, time};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A second Mission state authority that also issues tokens.
use common::*;

const AS2: &str = "https://as2.example";
const HOST: &str = "api.partner.example";
const ORIGIN: &str = "https://api.partner.example";
const HOST2: &str = "api.other.example";
const ORIGIN2: &str = "https://api.other.example";
const MISSION: &str = "msn_7Qx";
const PDP_PATH: &str = "/access/v1/evaluation";

fn as2_key() -> SigningKey {
    SigningKey::from_secret_bytes(Alg::Es256, &[0x33; 32]).unwrap()
}

fn authority(cluster: &str) -> Value {
    json!({
        "status": {"cluster": cluster, "path": "/mission/status"},
        "audience": GATEWAY_AUD,
        "max_staleness_seconds": 600
    })
}

/// Two Mission state authorities (both issue tokens), two destinations, a PDP at `pdp_path` that
/// answers for every request outside the Authority Set.
fn config(pdp_cluster: &str, pdp_path: &str) -> Value {
    json!({
        "issuers": [
            {"issuer": AS, "jwks": {"keys": [as_key().public_jwk(Some("k1"))]}, "mission_authority": authority("as")},
            {"issuer": AS2, "jwks": {"keys": [as2_key().public_jwk(Some("k2"))]}, "mission_authority": authority("as2")}
        ],
        "destinations": [
            {"authority": HOST, "origin": ORIGIN},
            {"authority": HOST2, "origin": ORIGIN2}
        ],
        "pdp": {"evaluation": {"cluster": pdp_cluster, "authority": "pdp.example", "path": pdp_path},
                "deny_cache_seconds": 30}
    })
}

fn seeds() -> Seeds {
    Seeds { nonce: [7; 32], ids: [8; 32] }
}

fn engine_with(config: &Value) -> Engine {
    Engine::new(Rc::new(Config::parse(config.to_string().as_bytes()).unwrap()), seeds())
}

fn sign(key: &SigningKey, kid: &str, typ: &str, claims: &Value) -> String {
    key.sign_compact(&json!({"alg": key.alg().name(), "typ": typ, "kid": kid}), claims)
}

/// Make `mission` of `authority` (config index 0 = AS, 1 = AS2) active in `e`'s cache.
fn set_active(e: &mut Engine, authority: usize, mission: &str) {
    let (iss, key, kid) = if authority == 0 { (AS, as_key(), "k1") } else { (AS2, as2_key(), "k2") };
    let (_, nonce) = e.status_callout(authority, mission).unwrap();
    let claims = json!({"iss": iss, "aud": GATEWAY_AUD, "nonce": nonce, "iat": NOW, "exp": NOW + 60,
        "mission": {"id": mission, "issuer": iss, "state": "active", "version": 1,
                    "fresh_until": time::format_rfc3339(NOW + 300)}});
    let body = sign(&key, kid, "mission-status-response+jwt", &claims);
    assert_eq!(e.on_status(authority, mission, &nonce, Some(200), body.as_bytes(), NOW).refetch_keys, None);
}

/// An engine with the Mission active at both authorities.
fn pdp_engine(pdp_cluster: &str, pdp_path: &str) -> Engine {
    let mut e = engine_with(&config(pdp_cluster, pdp_path));
    set_active(&mut e, 0, MISSION);
    set_active(&mut e, 1, MISSION);
    e
}

fn claims() -> Value {
    json!({
        "iss": AS, "sub": "user-1", "client_id": "agent-7", "aud": [ORIGIN, ORIGIN2],
        "iat": NOW - 10, "exp": NOW + 600, "jti": "tok-1",
        "mission": {"id": MISSION, "issuer": AS, "authority_hash": "sha-256:AAAA"},
        "authorization_details": [{"type": "mission_resource_access", "resource": "https://api.partner.example/v1",
                                   "resource_match": "prefix", "actions": ["http.get"]}]
    })
}

fn token_with(edit: impl FnOnce(&mut Value)) -> String {
    let mut c = claims();
    edit(&mut c);
    if c["iss"] == AS2 {
        sign(&as2_key(), "k2", "at+jwt", &c)
    } else {
        sign(&as_key(), "k1", "at+jwt", &c)
    }
}

/// Every worker's shared memory: single-use keys and the shared decision cache.
#[derive(Default)]
struct Shared {
    once: HashMap<String, i64>,
    cache: HashMap<String, Vec<u8>>,
}

impl ReplayGuard for Shared {
    fn remember(&mut self, key: &str, until: i64, now: i64) -> Result<bool, String> {
        match self.once.get(key) {
            Some(&t) if t > now => Ok(false),
            _ => {
                self.once.insert(key.to_owned(), until);
                Ok(true)
            }
        }
    }
    fn load(&mut self, key: &str) -> Option<Vec<u8>> {
        self.cache.get(key).cloned()
    }
    fn store(&mut self, key: &str, value: &[u8]) {
        self.cache.insert(key.to_owned(), value.to_vec());
    }
}

fn decide(e: &mut Engine, r: &Request<'_>, g: &mut Shared) -> Outcome {
    e.decide(r, NOW, Attempts::default(), g)
}

fn with_answer(e: &mut Engine, r: &Request<'_>, answer: &Value, g: &mut Shared) -> Outcome {
    let pdp = PdpAnswer { status: Some(200), body: serde_json::to_vec(answer).unwrap() };
    let extra = Extra { pdp: Some(&pdp), ..Extra::default() };
    e.decide_full(r, &extra, NOW, Attempts { keys: true, status: true }, g)
}

fn expect_allow(o: Outcome) -> Evidence {
    match o {
        Outcome::Allow(ev) => ev,
        other => panic!("expected Allow, got {other:?}"),
    }
}

fn expect_pdp(o: Outcome) -> Callout {
    match o {
        Outcome::Need(Need::Pdp(c)) => *c,
        other => panic!("expected a PDP evaluation, got {other:?}"),
    }
}

/// (status, reason, detail, evidence) of a denial.
fn expect_deny(o: Outcome, reason: &str, status: u16) -> (Value, Evidence) {
    let (resp, ev) = match o {
        Outcome::Deny(resp, ev) => (resp, ev),
        other => panic!("expected Deny({reason}), got {other:?}"),
    };
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(resp.status, status, "{body}");
    (body, ev)
}

fn permit() -> Value {
    json!({"decision": true, "context": {"evaluation_id": "eval_1"}})
}

// ------------------------------------------------------------------------- item 6 -------------

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_pdp_answer_is_reused_only_for_the_same_question_to_the_same_pdp() {
    let mut e = pdp_engine("pdp", PDP_PATH);
    let g = &mut Shared::default();
    let base = token_with(|_| {});
    let auth = format!("Bearer {base}");
    let r = request("GET", HOST, "/v2/reports", &auth);
    let asked = expect_pdp(decide(&mut e, &r, g));
    expect_allow(with_answer(&mut e, &r, &permit(), g));
    // The same question again: answered from the cache (this worker's, then any worker's).
    expect_allow(decide(&mut e, &r, g));
    let mut other_worker = pdp_engine("pdp", PDP_PATH);
    expect_allow(decide(&mut other_worker, &r, g));

    // Anything else the PDP was asked about makes it ask again.
    let variants: Vec<(&str, String)> = vec![
        ("another subject (client id)", token_with(|c| c["client_id"] = json!("agent-8"))),
        ("another subject (sub)", token_with(|c| c["sub"] = json!("user-2"))),
        ("another token issuer", token_with(|c| c["iss"] = json!(AS2))),
        ("another Mission issuer, same Mission id", token_with(|c| c["mission"]["issuer"] = json!(AS2))),
        ("another authority_hash", token_with(|c| c["mission"]["authority_hash"] = json!("sha-256:BBBB"))),
        (
            "no authority_hash",
            token_with(|c| {
                c["mission"].as_object_mut().unwrap().remove("authority_hash").unwrap();
            }),
        ),
    ];
    for (what, t) in &variants {
        let auth = format!("Bearer {t}");
        let r = request("GET", HOST, "/v2/reports", &auth);
        let c = expect_pdp(decide(&mut e, &r, g));
        assert_ne!(c.body, asked.body, "{what}: the question differs");
    }
    for (what, method, host) in [("another action", "HEAD", HOST), ("another destination", "GET", HOST2)] {
        let r = request(method, host, "/v2/reports", &auth);
        let c = expect_pdp(decide(&mut e, &r, g));
        assert_ne!(c.body, asked.body, "{what}: the question differs");
    }
    // The same question to another PDP endpoint (another listener's config, sharing the memory).
    for (cluster, path) in [("pdp-b", PDP_PATH), ("pdp", "/other/v1/evaluation")] {
        let mut elsewhere = pdp_engine(cluster, path);
        let c = expect_pdp(decide(&mut elsewhere, &r, g));
        assert_eq!(c.body, asked.body, "the same question");
        assert!(c.cluster == cluster && c.headers.iter().any(|(k, v)| k == ":path" && v == path));
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_cached_denial_is_not_reused_for_another_mission_issuer() {
    let mut e = pdp_engine("pdp", PDP_PATH);
    let g = &mut Shared::default();
    let t1 = token_with(|_| {});
    let a1 = format!("Bearer {t1}");
    let r1 = request("GET", HOST, "/v2/reports", &a1);
    expect_pdp(decide(&mut e, &r1, g));
    let deny = json!({"decision": false, "context": {"evaluation_id": "eval_2", "reason": "weekend"}});
    expect_deny(with_answer(&mut e, &r1, &deny, g), "pdp_denied", 403);
    expect_deny(decide(&mut e, &r1, g), "pdp_denied", 403);
    // Same Mission id, other state authority: its own question, its own answer.
    let t2 = token_with(|c| c["mission"]["issuer"] = json!(AS2));
    let a2 = format!("Bearer {t2}");
    let r2 = request("GET", HOST, "/v2/reports", &a2);
    expect_pdp(decide(&mut e, &r2, g));
    expect_allow(with_answer(&mut e, &r2, &permit(), g));
    expect_deny(decide(&mut e, &r1, g), "pdp_denied", 403);
    expect_allow(decide(&mut e, &r2, g));
}

// ------------------------------------------------------------------------- item 7: ids --------

fn dpop_token() -> String {
    let jkt = dpop_key().public_jwk(None).thumbprint().unwrap();
    token_with(|c| c["cnf"] = json!({"jkt": jkt}))
}

fn proof(token: &str, jti: &str, edit: impl FnOnce(&mut Value)) -> String {
    let key = dpop_key();
    let mut c = json!({"jti": jti, "htm": "GET", "htu": format!("{ORIGIN}/v2/reports"), "iat": NOW,
                       "ath": b64::encode(Sha256::digest(token.as_bytes()))});
    edit(&mut c);
    key.sign_compact(&json!({"typ": "dpop+jwt", "alg": key.alg().name(), "jwk": key.public_jwk(None)}), &c)
}

fn dpop_request<'a>(authorization: &'a str, proof: &'a str) -> Request<'a> {
    Request { dpop: Some(proof), dpop_count: 1, ..request("GET", HOST, "/v2/reports", authorization) }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn token_jti_outside_visible_ascii_is_refused_before_anything_is_stored() {
    let long = "j".repeat(257);
    let mut e = pdp_engine("pdp", PDP_PATH);
    for jti in ["", "a b", "a\nb", "a\rb", "nul\u{0}", "esc\u{1b}[31m", "caf\u{e9}", "\u{202e}rtl", long.as_str()] {
        let g = &mut Shared::default();
        let t = token_with(|c| c["jti"] = json!(jti));
        let auth = format!("Bearer {t}");
        let (body, ev) = expect_deny(decide(&mut e, &request("GET", HOST, "/v1/x", &auth), g), "token_malformed", 401);
        assert_eq!(ev.jti, None, "{jti:?} never reaches evidence");
        assert!(!body.to_string().contains(jti) || jti.is_empty(), "{jti:?} not echoed: {body}");
        assert!(g.once.is_empty() && g.cache.is_empty());
    }
    // A plain one is fine.
    let t = token_with(|c| c["jti"] = json!("0f8fad5b-d9cb-469f-a165-70867728950e"));
    let auth = format!("Bearer {t}");
    expect_allow(decide(&mut e, &request("GET", HOST, "/v1/x", &auth), &mut Shared::default()));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn dpop_jti_and_nonce_outside_visible_ascii_are_refused_and_never_stored() {
    let t = dpop_token();
    let auth = format!("DPoP {t}");
    let long = "n".repeat(257);
    let bad = ["", "a b", "a\nb", "tab\t", "\u{7f}", "caf\u{e9}", long.as_str()];
    let mut e = pdp_engine("pdp", PDP_PATH);
    for v in bad {
        for field in ["jti", "nonce"] {
            let g = &mut Shared::default();
            let p = proof(&t, "p-1", |c| c[field] = json!(v));
            let (body, _) = expect_deny(decide(&mut e, &dpop_request(&auth, &p), g), "invalid_dpop_proof", 401);
            assert!(body["detail"].as_str().unwrap().contains(field), "{field} {v:?}: {body}");
            assert!(g.once.is_empty(), "{field} {v:?}: nothing stored");
        }
    }
    // Visible ASCII, with a nonce: allowed once the PDP permits.
    let g = &mut Shared::default();
    let p = proof(&t, "p-~!9", |c| c["nonce"] = json!("n-1"));
    let r = dpop_request(&auth, &p);
    expect_pdp(decide(&mut e, &r, g));
    expect_allow(with_answer(&mut e, &r, &permit(), g));
}

// ------------------------------------------------------------------------- item 7: order ------

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_replayed_dpop_proof_does_not_spend_a_single_use_permit() {
    let mut e = pdp_engine("pdp", PDP_PATH);
    let g = &mut Shared::default();
    let t = dpop_token();
    let auth = format!("DPoP {t}");
    let once = |id: &str| json!({"decision": true, "context": {"evaluation_id": id, "conditions": {"use_limit": 1}}});
    // The proof is not remembered while the decision waits for the PDP.
    let p1 = proof(&t, "p-1", |_| {});
    let r1 = dpop_request(&auth, &p1);
    expect_pdp(decide(&mut e, &r1, g));
    assert!(g.once.is_empty());
    expect_allow(with_answer(&mut e, &r1, &once("eval_a"), g));
    assert_eq!(g.once.len(), 2, "the proof and the permit");
    // The same proof again, with a fresh single-use permit: a replay, and the permit is untouched.
    let (_, ev) = expect_deny(with_answer(&mut e, &r1, &once("eval_b"), g), "dpop_replay", 401);
    assert_eq!(ev.reason.as_str(), "dpop_replay");
    assert_eq!(g.once.len(), 2, "nothing new remembered");
    // A fresh proof may use that permit, once.
    let p2 = proof(&t, "p-2", |_| {});
    let r2 = dpop_request(&auth, &p2);
    expect_allow(with_answer(&mut e, &r2, &once("eval_b"), g));
    let p3 = proof(&t, "p-3", |_| {});
    let r3 = dpop_request(&auth, &p3);
    expect_deny(with_answer(&mut e, &r3, &once("eval_b"), g), "parameter_violation", 403);
    // A PDP denial leaves the proof unremembered: the same proof still works once permitted.
    let p4 = proof(&t, "p-4", |_| {});
    let r4 = dpop_request(&auth, &p4);
    let deny = json!({"decision": false, "context": {"evaluation_id": "eval_c"}});
    expect_deny(with_answer(&mut e, &r4, &deny, g), "pdp_denied", 403);
    expect_allow(with_answer(&mut e, &r4, &once("eval_d"), g));
}

// ------------------------------------------------------------------------- item 7: JWKS -------

fn remote_config(limits: Value) -> Value {
    let mut c = config("pdp", PDP_PATH);
    let issuer = c["issuers"][0].as_object_mut().unwrap();
    issuer.remove("jwks");
    issuer.insert("jwks_uri".into(), json!({"cluster": "as", "path": "/jwks.json"}));
    issuer.insert("jwks_min_refetch_seconds".into(), json!(0));
    for (k, v) in limits.as_object().unwrap() {
        issuer.insert(k.clone(), v.clone());
    }
    c
}

fn p256(i: u8) -> SigningKey {
    SigningKey::from_secret_bytes(Alg::Es256, &[i; 32]).unwrap()
}

fn jwks(entries: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": entries })).unwrap()
}

fn load(e: &mut Engine, body: &[u8], now: i64) -> Result<usize, String> {
    e.jwks_callout(0, now).unwrap();
    e.on_jwks(0, Some(200), body, now)
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_jwks_over_its_size_or_key_count_is_refused_and_the_old_keys_stay() {
    let mut e = engine_with(&remote_config(json!({"jwks_max_bytes": 2048, "jwks_max_keys": 4})));
    let good = jwks(vec![serde_json::to_value(as_key().public_jwk(Some("k1"))).unwrap()]);
    assert_eq!(load(&mut e, &good, NOW), Ok(1));
    let five: Vec<Value> =
        (1..=5).map(|i| serde_json::to_value(p256(0x80 + i).public_jwk(Some("x"))).unwrap()).collect();
    let err = load(&mut e, &jwks(five), NOW + 1).unwrap_err();
    assert!(err.contains("more than 4 keys"), "{err}");
    let mut padded = json!({"keys": [as_key().public_jwk(Some("k1"))]});
    padded["padding"] = json!("p".repeat(2048));
    let err = load(&mut e, &serde_json::to_vec(&padded).unwrap(), NOW + 2).unwrap_err();
    assert!(err.contains("2048 bytes"), "{err}");
    assert_eq!(e.keys.key_counts(0), (1, 1), "the keys held before stay in use");
    // Entries the gateway cannot use are skipped, not fatal; only the usable key is installed.
    let mixed = jwks(vec![
        json!({"kty": "RSA", "kid": "r1", "n": "sXch", "e": "AQAB"}),
        json!(7),
        json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}),
        serde_json::to_value(as_key().public_jwk(Some("k1"))).unwrap(),
    ]);
    assert_eq!(load(&mut e, &mixed, NOW + 3), Ok(1));
    assert!(load(&mut e, &jwks(vec![json!({"kty": "RSA", "n": "sXch", "e": "AQAB"})]), NOW + 4).is_err());
    assert!(load(&mut e, b"{\"keys\": 1}", NOW + 5).is_err());
    assert_eq!(e.keys.key_counts(0), (1, 1));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn precomputed_tables_are_built_within_a_budget_per_issuer() {
    let n = MAX_TABLES_PER_ISSUER + 4;
    let mut e = engine_with(&remote_config(json!({})));
    let keys: Vec<SigningKey> = (0..n).map(|i| p256(0x40 + u8::try_from(i).unwrap())).collect();
    let entries = |ks: &[SigningKey], prefix: &str| -> Vec<Value> {
        ks.iter()
            .enumerate()
            .map(|(i, k)| serde_json::to_value(k.public_jwk(Some(&format!("{prefix}{i}")))).unwrap())
            .collect()
    };
    assert_eq!(load(&mut e, &jwks(entries(&keys, "a")), NOW), Ok(n));
    assert_eq!(e.keys.key_counts(0), (n, MAX_TABLES_PER_ISSUER));
    // A key beyond the budget still verifies (on the slower path).
    let last = n - 1;
    let t = sign(&keys[last], &format!("a{last}"), "at+jwt", &claims());
    let auth = format!("Bearer {t}");
    let r = request("GET", HOST, "/v1/x", &auth);
    let o = e.decide(&r, NOW, Attempts { keys: true, ..Attempts::default() }, &mut Shared::default());
    assert!(matches!(o, Outcome::Need(Need::Status(0, _))), "verified, now Mission state: {o:?}");
    // A refresh with the same keys keeps the tables it has; one with all-new keys stays within budget.
    assert_eq!(load(&mut e, &jwks(entries(&keys, "a")), NOW + 1), Ok(n));
    assert_eq!(e.keys.key_counts(0), (n, MAX_TABLES_PER_ISSUER));
    let fresh: Vec<SigningKey> = (0..n).map(|i| p256(0xa0 + u8::try_from(i).unwrap())).collect();
    assert_eq!(load(&mut e, &jwks(entries(&fresh, "b")), NOW + 2), Ok(n));
    assert_eq!(e.keys.key_counts(0), (n, MAX_TABLES_PER_ISSUER));
    // Inline keys follow the same budget.
    let mut c = config("pdp", PDP_PATH);
    c["issuers"][0]["jwks"] = json!({ "keys": entries(&keys, "i") });
    let e = engine_with(&c);
    assert_eq!(e.keys.key_counts(0), (n, MAX_TABLES_PER_ISSUER));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn jwks_limits_are_validated_in_the_config() {
    for (field, bad) in
        [("jwks_max_bytes", 1023), ("jwks_max_bytes", 4_194_305), ("jwks_max_keys", 0), ("jwks_max_keys", 1001)]
    {
        let c = remote_config(json!({ field: bad }));
        let e = Config::parse(c.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field, format!("issuers[0].{field}"), "{e}");
    }
    let c = remote_config(json!({"jwks_max_bytes": 1024, "jwks_max_keys": 1000}));
    let config = Config::parse(c.to_string().as_bytes()).unwrap();
    match &config.issuers[0].keys {
        missiongate_core::config::KeySource::Remote { max_bytes, max_keys, .. } => {
            assert_eq!((*max_bytes, *max_keys), (1024, 1000));
        }
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------------------- item 7: details ----

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn problem_details_never_carry_what_the_client_or_pdp_sent() {
    let mut e = pdp_engine("pdp", PDP_PATH);
    let g = &mut Shared::default();
    let t = token_with(|_| {});
    let auth = format!("Bearer {t}");
    let r = request("GET", HOST, "/v2/reports", &auth);
    let detail = |o: Outcome, reason: &str, status: u16| -> String {
        expect_deny(o, reason, status).0["detail"].as_str().unwrap().to_owned()
    };
    let deny = |reason: &str| json!({"decision": false, "context": {"reason": reason}});
    assert_eq!(detail(with_answer(&mut e, &r, &deny("weekend"), g), "pdp_denied", 403), "denied by policy: weekend");
    let evil = "x\r\nSet-Cookie: a=b <script>";
    assert_eq!(detail(with_answer(&mut e, &r, &deny(evil), g), "pdp_denied", 403), "denied by policy");
    let long = "r".repeat(65);
    assert_eq!(detail(with_answer(&mut e, &r, &deny(&long), g), "pdp_denied", 403), "denied by policy");
    let cond = json!({"decision": true, "context": {"conditions": {evil: 1}}});
    let d = detail(with_answer(&mut e, &r, &cond, g), "pdp_denied", 403);
    assert!(!d.contains("script") && !d.contains("Set-Cookie"), "{d}");
    // A method that is not an HTTP token never becomes an action id.
    for m in ["GET\r\nX", "G E T", "GÉT", "", &"M".repeat(33)] {
        let (body, ev) = expect_deny(decide(&mut e, &request(m, HOST, "/v1/x", &auth), g), "malformed_request", 400);
        assert_eq!(ev.action, None, "{m:?}");
        assert!(m.is_empty() || !body.to_string().contains(m), "{m:?}: {body}");
    }
    // A Mission state this gateway does not know is not repeated in the detail.
    let mut e = engine_with(&config("pdp", PDP_PATH));
    let (_, nonce) = e.status_callout(0, MISSION).unwrap();
    let status = json!({"iss": AS, "aud": GATEWAY_AUD, "nonce": nonce, "iat": NOW, "exp": NOW + 60,
        "mission": {"id": MISSION, "issuer": AS, "state": "gone\u{1b}[2J", "version": 1,
                    "fresh_until": time::format_rfc3339(NOW + 300)}});
    let body = sign(&as_key(), "k1", "mission-status-response+jwt", &status);
    e.on_status(0, MISSION, &nonce, Some(200), body.as_bytes(), NOW);
    let (body, _) = expect_deny(decide(&mut e, &request("GET", HOST, "/v1/x", &auth), g), "mission_inactive", 401);
    assert_eq!(body["detail"], "mission is not active");
}

// ------------------------------------------------------------------------- item 7: seeds ------

fn first_ids(seeds: Seeds) -> (String, String) {
    let mut e = Engine::new(Rc::new(Config::parse(config("pdp", PDP_PATH).to_string().as_bytes()).unwrap()), seeds);
    let (_, nonce) = e.status_callout(0, MISSION).unwrap();
    let (_, ev) = e.refuse(missiongate_core::decision::Reason::GatewayError, "x", NOW);
    let prefix = ev.decision_id.rsplit_once('-').unwrap().0.to_owned();
    (nonce, prefix)
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn decision_ids_and_nonces_come_from_independent_seeds() {
    let (n1, id1) = first_ids(Seeds { nonce: [1; 32], ids: [2; 32] });
    let (n2, id2) = first_ids(Seeds { nonce: [1; 32], ids: [3; 32] });
    let (n3, id3) = first_ids(Seeds { nonce: [4; 32], ids: [2; 32] });
    assert_eq!(n1, n2, "the ids seed does not change the nonces");
    assert_ne!(id1, id2, "the ids seed makes the ids");
    assert_ne!(n1, n3, "the nonce seed makes the nonces");
    assert_eq!(id1, id3, "the nonce seed does not change the ids");
    // Neither seed is shown raw in an id.
    for raw in [[1u8; 9], [2u8; 9]] {
        assert_ne!(id1, b64::encode(raw));
    }
    // Issuing decision ids does not move the nonce sequence.
    let mut e = Engine::new(
        Rc::new(Config::parse(config("pdp", PDP_PATH).to_string().as_bytes()).unwrap()),
        Seeds { nonce: [1; 32], ids: [2; 32] },
    );
    e.refuse(missiongate_core::decision::Reason::GatewayError, "x", NOW);
    assert_eq!(e.status_callout(0, MISSION).unwrap().1, n1);
}

// ------------------------------------------------------------------------- item 7: bounds -----

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_decision_cache_stays_within_its_bound() {
    let mut e = pdp_engine("pdp", PDP_PATH);
    let mut g = Shared::default();
    let answer = PdpAnswer { status: Some(200), body: serde_json::to_vec(&permit()).unwrap() };
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let t = token_with(|_| {});
    let auth = format!("Bearer {t}");
    let r = request("POST", HOST, "/v2/reports", &auth);
    // Every body is another parameter_digest, so another question and another cache entry.
    for i in 0..=MAX_CACHED_DECISIONS {
        let body = format!("{{\"n\":{i}}}");
        // `..Default` keeps this building when the host layer's inputs grow a field.
        #[allow(clippy::needless_update)]
        let extra = Extra { headers: &headers, body: Some(body.as_bytes()), pdp: Some(&answer), ..Extra::default() };
        expect_allow(e.decide_full(&r, &extra, NOW, Attempts { keys: true, status: true }, &mut g));
        assert!(e.cached_decisions() <= MAX_CACHED_DECISIONS, "after {i}: {}", e.cached_decisions());
    }
}

fn verified(exp: i64) -> Rc<VerifiedToken> {
    Rc::new(VerifiedToken {
        issuer: 0,
        exp,
        aud: vec![],
        jti: None,
        sub: None,
        client_id: None,
        iss: AS.into(),
        mission_id: MISSION.into(),
        mission_issuer: 0,
        mission_issuer_name: AS.into(),
        authority_hash: None,
        grants: vec![],
        cnf_jkt: None,
    })
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn token_and_mission_caches_stay_within_their_bounds() {
    let mut tokens = TokenCache::new(64);
    for i in 0..1000 {
        tokens.insert(&format!("t{i}"), verified(NOW + 600), NOW, 60);
        assert!(tokens.len() <= 64);
    }
    assert!(tokens.get("t999").is_some(), "the newest is kept");
    let mut missions = MissionCache::default();
    for i in 0..=MAX_MISSIONS {
        let id = format!("m{i}");
        missions.put_unknown(0, &id, NOW);
        missions.put_failure(0, &id, NOW);
        let change = missiongate_core::mission::StateChange {
            id: id.clone(),
            state: missiongate_wire::claims::MissionState::Revoked,
            version: 1,
            expires_at: None,
            authority_changed: false,
        };
        missions.apply_event(0, &change);
    }
    let (events, unknown, failed) = missions.other_counts();
    assert!(events <= MAX_MISSIONS && unknown <= MAX_MISSIONS && failed <= MAX_MISSIONS);
    assert!(unknown >= 1 && failed >= 1 && events >= 1, "the newest entries are kept");
}
