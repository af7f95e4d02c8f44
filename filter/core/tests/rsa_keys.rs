//! RS256 / PS256 access tokens (issue 18 item 1) and a key replaced under its `kid` (item 5), driven
//! through the core's public API as the proxy-wasm host drives it.
//!
//! Every test runs natively and compiled to wasm32-unknown-unknown under wasm-bindgen-test
//! (`make test-wasm-core`). RSA keys are fixed test keys (`wire/tests/data/rsa_test_keys.json`);
//! RS256 is deterministic and PS256 salts are derived from the key and message, so no RNG is needed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::rc::Rc;

use missiongate_core::{Attempts, Authz, Config, Engine, Need, Outcome, ReplayGuard, Request};
use missiongate_wire::jose::{Alg, SigningKey};
use serde_json::{json, Value};

const NOW: i64 = 1_800_000_000;
const AS: &str = "https://as.example";
const HOST: &str = "api.partner.example";
const ORIGIN: &str = "https://api.partner.example";
const MISSION: &str = "msn_7Qx";
const TEST_KEYS: &str = include_str!("../../../wire/tests/data/rsa_test_keys.json");

fn unhex(s: &str) -> Vec<u8> {
    let s = if s.len() % 2 == 1 { format!("0{s}") } else { s.to_owned() };
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn rsa_key(name: &str, alg: Alg) -> SigningKey {
    let keys: Value = serde_json::from_str(TEST_KEYS).unwrap();
    let k = &keys[name];
    SigningKey::rsa_from_primes(alg, &unhex(k["p"].as_str().unwrap()), &unhex(k["q"].as_str().unwrap())).unwrap()
}

fn ec_key() -> SigningKey {
    SigningKey::from_secret_bytes(Alg::Es256, &[0x11; 32]).unwrap()
}
fn ed_key() -> SigningKey {
    SigningKey::from_secret_bytes(Alg::EdDsa, &[0x22; 32]).unwrap()
}

fn config(keys: Value) -> Value {
    let mut issuer = json!({
        "issuer": AS,
        "mission_authority": {
            "status": {"cluster": "authority", "authority": "as.example", "path": "/mission/status"},
            "events": {"cluster": "authority", "authority": "as.example", "path": "/events"},
            "audience": "https://gateway.example",
            "max_staleness_seconds": 600
        }
    });
    match keys {
        Value::Null => {
            issuer["jwks_uri"] = json!({"cluster": "authority", "authority": "as.example", "path": "/jwks.json"});
            issuer["jwks_min_refetch_seconds"] = json!(10);
        }
        inline => issuer["jwks"] = inline,
    }
    json!({
        "issuers": [issuer],
        "destinations": [{"authority": HOST, "origin": ORIGIN}]
    })
}

fn remote() -> Value {
    config(Value::Null)
}

fn engine_with(config: &Value) -> Engine {
    let config = Config::parse(config.to_string().as_bytes()).unwrap();
    Engine::new(Rc::new(config), missiongate_core::Seeds { nonce: [7; 32], ids: [8; 32] })
}

struct NoReplays;
impl ReplayGuard for NoReplays {
    fn remember(&mut self, _: &str, _: i64, _: i64) -> Result<bool, String> {
        Ok(true)
    }
}

fn claims() -> Value {
    json!({
        "iss": AS, "sub": "user-1", "aud": ORIGIN, "iat": NOW - 10, "exp": NOW + 600, "jti": "tok-1",
        "mission": {"id": MISSION, "issuer": AS},
        "authorization_details": [{"type": "mission_resource_access", "resource": ORIGIN, "actions": ["http.get"]}]
    })
}

fn token(key: &SigningKey, header_alg: &str, kid: &str) -> String {
    key.sign_compact(&json!({"alg": header_alg, "typ": "at+jwt", "kid": kid}), &claims())
}

fn jwk(key: &SigningKey, kid: &str) -> Value {
    serde_json::to_value(key.public_jwk(Some(kid))).unwrap()
}

fn jwks(keys: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

fn decide_at(e: &mut Engine, auth: &str, now: i64, keys_tried: bool) -> Outcome {
    let r = Request {
        method: "GET",
        scheme: "https",
        authority: HOST,
        path: "/v1/invoices",
        authorization: Authz::One(auth),
        dpop: None,
        dpop_count: 0,
    };
    e.decide(&r, now, Attempts { keys: keys_tried, ..Attempts::default() }, &mut NoReplays)
}

/// The token passed every token check: the next thing the engine wants is the Mission's status.
fn assert_verified(o: Outcome) {
    match o {
        Outcome::Need(Need::Status(0, m)) => assert_eq!(m, MISSION),
        other => panic!("expected the token to verify (Need::Status), got {other:?}"),
    }
}

fn assert_need_keys(o: Outcome) {
    match o {
        Outcome::Need(Need::Keys(0)) => {}
        other => panic!("expected Need::Keys(0), got {other:?}"),
    }
}

fn assert_denied(o: Outcome, reason: &str) {
    match o {
        Outcome::Deny(resp, _) => {
            let body: Value = serde_json::from_slice(&resp.body).unwrap();
            assert_eq!(body["reason"], reason, "{body}");
            assert_eq!(resp.status, 401, "{body}");
        }
        other => panic!("expected Deny({reason}), got {other:?}"),
    }
}

/// Load `doc` as the issuer's JWKS at `now`; the number of keys taken.
fn load(e: &mut Engine, doc: &[u8], now: i64) -> Result<usize, String> {
    e.jwks_callout(0, now).unwrap();
    e.on_jwks(0, Some(200), doc, now)
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rs256_and_ps256_from_a_mixed_jwks() {
    let rs = rsa_key("a2048", Alg::Rs256);
    let ps = rs.with_alg(Alg::Ps256);
    let short = rsa_key("short1024", Alg::Rs256);
    let mut e = engine_with(&remote());
    let doc = jwks(&[
        jwk(&ec_key(), "ec"),
        jwk(&ed_key(), "ed"),
        // Without `alg`, so the one RSA key serves RS256 and PS256.
        json!({"kty": "RSA", "kid": "rsa", "n": rs.public_jwk(None).n, "e": "AQAB"}),
        jwk(&short, "short"),
        json!({"kty": "RSA", "kid": "junk", "n": "AQAB"}),
    ]);
    assert_eq!(load(&mut e, &doc, NOW), Ok(3));
    // The refused entries are reported once (logged by the host) and counted.
    let refused = e.take_jwks_refused(0);
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused[0].contains("\"short\"") && refused[0].contains("shorter than 2048 bits"), "{refused:?}");
    assert!(refused[1].contains("\"junk\""), "{refused:?}");
    assert!(e.take_jwks_refused(0).is_empty());
    let counters = e.take_counters();
    assert!(counters.contains(&("jwks.key_refused".to_owned(), 2)), "{counters:?}");

    assert_verified(decide_at(&mut e, &format!("Bearer {}", token(&rs, "RS256", "rsa")), NOW, false));
    assert_verified(decide_at(&mut e, &format!("Bearer {}", token(&ps, "PS256", "rsa")), NOW, false));
    // The ES256 and EdDSA keys of the same set still verify.
    assert_verified(decide_at(&mut e, &format!("Bearer {}", token(&ec_key(), "ES256", "ec")), NOW, false));
    assert_verified(decide_at(&mut e, &format!("Bearer {}", token(&ed_key(), "EdDSA", "ed")), NOW, false));
    // A valid signature by the refused 1024-bit key: its kid is not in the set.
    let weak = format!("Bearer {}", token(&short, "RS256", "short"));
    assert_denied(decide_at(&mut e, &weak, NOW, false), "unknown_key");
    // Algorithm confusion: an RS256 header naming the EC key is never verified with it.
    let confused = format!("Bearer {}", token(&rs, "RS256", "ec"));
    assert_denied(decide_at(&mut e, &confused, NOW, false), "alg_not_allowed");
    // ... nor an ES256 header naming the RSA key.
    let confused = format!("Bearer {}", token(&ec_key(), "ES256", "rsa"));
    assert_denied(decide_at(&mut e, &confused, NOW, false), "alg_not_allowed");
    // A PS256 signature under an RS256 header (same key, same kid) is a bad signature.
    let swapped = token(&ps, "RS256", "rsa");
    assert_denied(decide_at(&mut e, &format!("Bearer {swapped}"), NOW, false), "bad_signature");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_jwk_alg_member_binds_the_rsa_key_to_it() {
    let rs = rsa_key("a2048", Alg::Rs256);
    // `public_jwk` sets `alg: RS256`: a PS256 token under that kid is refused.
    let doc = json!({"keys": [rs.public_jwk(Some("rsa"))]});
    let mut e = engine_with(&config(doc));
    assert_verified(decide_at(&mut e, &format!("Bearer {}", token(&rs, "RS256", "rsa")), NOW, false));
    let ps = format!("Bearer {}", token(&rs.with_alg(Alg::Ps256), "PS256", "rsa"));
    assert_denied(decide_at(&mut e, &ps, NOW, false), "alg_not_allowed");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rsa_is_on_by_default_and_can_be_turned_off() {
    let rs = rsa_key("a2048", Alg::Rs256);
    let doc = json!({"keys": [rs.public_jwk(Some("rsa")), ec_key().public_jwk(Some("ec"))]});
    let parsed = Config::parse(config(doc.clone()).to_string().as_bytes()).unwrap();
    assert_eq!(parsed.algs, vec![Alg::Es256, Alg::EdDsa, Alg::Rs256, Alg::Ps256]);
    let mut off = config(doc);
    off["allowed_algs"] = json!(["ES256"]);
    let mut e = engine_with(&off);
    assert_denied(decide_at(&mut e, &format!("Bearer {}", token(&rs, "RS256", "rsa")), NOW, false), "alg_not_allowed");
    assert_verified(decide_at(&mut e, &format!("Bearer {}", token(&ec_key(), "ES256", "ec")), NOW, false));
    // A listed RS384 is a configuration error that names the supported set.
    let mut bad = config(json!({"keys": [ec_key().public_jwk(Some("ec"))]}));
    bad["allowed_algs"] = json!(["RS384"]);
    let err = Config::parse(bad.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("RS256, PS256"), "{err}");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_key_replaced_under_its_kid_is_refetched_once() {
    let old = rsa_key("a2048", Alg::Rs256);
    let new = rsa_key("b2048", Alg::Rs256);
    let mut e = engine_with(&remote());
    assert_eq!(load(&mut e, &jwks(&[jwk(&old, "k")]), NOW), Ok(1));
    let auth = format!("Bearer {}", token(&new, "RS256", "k"));
    // Within the refetch interval of the last fetch: no refetch, the refusal stands.
    assert_denied(decide_at(&mut e, &auth, NOW + 5, false), "bad_signature");
    // Past it: one refetch is asked for, and requests arriving meanwhile wait for the same one.
    assert_need_keys(decide_at(&mut e, &auth, NOW + 10, false));
    e.jwks_callout(0, NOW + 10).unwrap();
    assert_need_keys(decide_at(&mut e, &auth, NOW + 10, false));
    // The issuer now publishes the new key under the same kid: the second verification passes.
    assert_eq!(e.on_jwks(0, Some(200), &jwks(&[jwk(&new, "k")]), NOW + 10), Ok(1));
    assert_verified(decide_at(&mut e, &auth, NOW + 10, true));
    // And the next request with such a token verifies at once, with no fetch.
    let again = format!(
        "Bearer {}",
        new.sign_compact(&json!({"alg": "RS256", "typ": "at+jwt", "kid": "k"}), &{
            let mut c = claims();
            c["jti"] = json!("tok-2");
            c
        })
    );
    assert_verified(decide_at(&mut e, &again, NOW + 11, false));
    // A token the old key signed is now refused, after its own (rate-limited) chance.
    let stale = format!("Bearer {}", token(&old, "RS256", "k"));
    assert_denied(decide_at(&mut e, &stale, NOW + 12, false), "bad_signature");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_forged_signature_is_refused_after_the_one_refetch() {
    let key = rsa_key("a2048", Alg::Rs256);
    let forger = rsa_key("c2048", Alg::Rs256);
    let mut e = engine_with(&remote());
    let doc = jwks(&[jwk(&key, "k"), jwk(&ec_key(), "ec")]);
    assert_eq!(load(&mut e, &doc, NOW), Ok(2));
    let forged = format!("Bearer {}", token(&forger, "RS256", "k"));
    assert_need_keys(decide_at(&mut e, &forged, NOW + 30, false));
    e.jwks_callout(0, NOW + 30).unwrap();
    assert_eq!(e.on_jwks(0, Some(200), &doc, NOW + 30), Ok(2));
    // Same keys: the second verification fails too, and the refusal is final for this request.
    assert_denied(decide_at(&mut e, &forged, NOW + 30, true), "bad_signature");
    // A failed refetch ends the same way.
    assert_need_keys(decide_at(&mut e, &forged, NOW + 40, false));
    e.jwks_callout(0, NOW + 40).unwrap();
    assert!(e.on_jwks(0, Some(503), b"", NOW + 40).is_err());
    assert_denied(decide_at(&mut e, &forged, NOW + 40, true), "bad_signature");
    // Alg confusion under a known kid is also retried once (the kid may have changed type), then refused.
    let confused = format!("Bearer {}", token(&key, "RS256", "ec"));
    assert_need_keys(decide_at(&mut e, &confused, NOW + 50, false));
    e.jwks_callout(0, NOW + 50).unwrap();
    assert_eq!(e.on_jwks(0, Some(200), &doc, NOW + 50), Ok(2));
    assert_denied(decide_at(&mut e, &confused, NOW + 50, true), "alg_not_allowed");
    // ES256 is retried the same way: a bad ES256 signature under a known kid.
    let bad_ec =
        format!("Bearer {}", token(&SigningKey::from_secret_bytes(Alg::Es256, &[0x44; 32]).unwrap(), "ES256", "ec"));
    assert_need_keys(decide_at(&mut e, &bad_ec, NOW + 60, false));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn inline_keys_refuse_a_bad_signature_at_once() {
    let key = rsa_key("a2048", Alg::Rs256);
    let mut e = engine_with(&config(json!({"keys": [key.public_jwk(Some("k"))]})));
    let forged = format!("Bearer {}", token(&rsa_key("c2048", Alg::Rs256), "RS256", "k"));
    assert_denied(decide_at(&mut e, &forged, NOW, false), "bad_signature");
}
