//! Fuzz harness bodies (cargo feature `fuzzing`): one function per untrusted input the gateway
//! parses, shared by the libFuzzer targets in `fuzz/` (nightly, `make fuzz`) and the seeded
//! property pass on stable (`filter/core/tests/fuzz_props.rs`, part of `cargo test`).
//!
//! Each function takes arbitrary bytes, must never panic on its own, and asserts invariants that
//! hold for every input (an `assert!` that fires is a finding, which is why this module, and only
//! this one, allows panicking lints). Everything runs against one fixed configuration with real
//! keys ([`fixture`]): fixed secret bytes, deterministic signatures, a constant clock ([`NOW`]).
//!
//! To let a fuzzer get past signatures, several targets sign what the fuzzer wrote with the
//! fixture's key (the input is then the JOSE header or the claims), and a few `$NAME` placeholders
//! in an input are replaced by a real value the fuzzer cannot forge (see each function). Not
//! compiled into the filter: the feature pulls in signing (`missiongate-wire/sign-core`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::rc::Rc;

use missiongate_wire::authzen::{EvaluationRequest, EvaluationResponse};
use missiongate_wire::b64;
use missiongate_wire::claims::{MissionState, PollResponse, TYP_MISSION_STATUS, TYP_SET};
use missiongate_wire::digest;
use missiongate_wire::jcs;
use missiongate_wire::jose::{self, Alg, Compact, SigningKey, VerifyingKey};
use serde_json::{json, Value};

use crate::decision::{Decision, Evidence, Response};
use crate::engine::{Callout, PdpAnswer};
use crate::keys::KeyStore;
use crate::mission::{self, MissionView, VerifiedStatus};
use crate::token::{self, TokenError};
use crate::{Attempts, Authz, Config, Engine, Need, Outcome, ReplayGuard, Request};

// ------------------------------------------------------------------------- fixture ------------

/// The harness clock (2027-01-15T08:00:00Z).
pub const NOW: i64 = 1_800_000_000;
/// Token issuer and Mission state authority (issuer 0).
pub const AS: &str = "https://as.example";
/// An issuer whose keys are fetched (issuer 1); the fetch answers with the fixture's JWKS.
pub const REMOTE_AS: &str = "https://remote.example";
/// Audience the gateway names to the authority.
pub const GATEWAY_AUD: &str = "https://gateway.example";
/// The configured destination.
pub const HOST: &str = "api.partner.example";
/// Its origin.
pub const ORIGIN: &str = "https://api.partner.example";
/// The Mission every minted token is bound to.
pub const MISSION: &str = "msn_fuzz";
/// The nonce Mission Status answers are checked against.
pub const NONCE: &str = "fuzz-nonce";
/// The Mission's staleness bound in the fixture config.
pub const MAX_STALENESS: i64 = 600;

/// The configuration, keys and credentials every harness function uses.
pub struct Fixture {
    /// Validated config.
    pub config: Rc<Config>,
    /// Its keys (inline ones loaded).
    pub keys: KeyStore,
    /// The authority's ES256 key, kid `k1`.
    pub es: SigningKey,
    /// The authority's Ed25519 key, kid `k2`.
    pub ed: SigningKey,
    /// A key nobody trusts (signs with kid `k1` all the same).
    pub rogue: SigningKey,
    /// The agent's DPoP key.
    pub dpop: SigningKey,
    /// Its JWK thumbprint.
    pub dpop_jkt: String,
    /// A valid Bearer token (`$TOKEN`).
    pub token: String,
    /// A valid DPoP-bound token (`$DTOKEN`).
    pub dpop_token: String,
    /// A valid token of the remote issuer (`$RTOKEN`), verifiable once its JWKS is fetched.
    pub remote_token: String,
    /// The JWKS the remote issuer's fetch answers with.
    pub jwks: Vec<u8>,
}

/// The fixture config (also written to `fuzz/seeds/config/`).
pub fn config_json(es: &SigningKey, ed: &SigningKey) -> Value {
    let upstream = |path: &str| json!({"cluster": "authority", "authority": "as.example", "path": path});
    json!({
        "issuers": [
            {
                "issuer": AS,
                "jwks": {"keys": [es.public_jwk(Some("k1")), ed.public_jwk(Some("k2"))]},
                "mission_authority": {
                    "status": upstream("/mission/status"),
                    "events": upstream("/events"),
                    "audience": GATEWAY_AUD,
                    "max_staleness_seconds": MAX_STALENESS,
                    "retry_after_seconds": 7
                }
            },
            {
                "issuer": REMOTE_AS,
                "jwks_uri": upstream("/jwks.json"),
                "jwks_min_refetch_seconds": 0
            }
        ],
        "max_token_lifetime_seconds": 3600,
        "destinations": [{
            "authority": HOST,
            "origin": ORIGIN,
            "operations": [
                {"method": "POST", "path": "/v1/payments", "action": "payments.create"},
                {"method": "POST", "path": "/v1/search", "action": "search", "consequential": false},
                {"method": "GET", "path": "/v1/exports", "path_match": "prefix", "action": "exports.get", "consequential": true}
            ],
            "effect_headers": ["idempotency-key"]
        }],
        "pdp": {"evaluation": {"cluster": "pdp", "path": "/access/v1/evaluation"}, "deny_cache_seconds": 5},
        "egress_allow": ["https://open.example"]
    })
}

/// Claims of the fixture's Bearer token.
pub fn token_claims(iss: &str) -> Value {
    json!({
        "iss": iss,
        "sub": "user-1",
        "client_id": "agent-7",
        "aud": ORIGIN,
        "iat": NOW - 10,
        "exp": NOW + 600,
        "jti": "tok-1",
        "mission": {"id": MISSION, "issuer": AS, "authority_hash": "sha-256:AAAA"},
        "authorization_details": [
            {"type": "mission_resource_access", "resource": "https://api.partner.example/v1",
             "resource_match": "prefix", "actions": ["http.get", "payments.*", "exports.*"]},
            {"type": "mission_resource_access", "resource": "https://api.partner.example/limited",
             "actions": ["http.*"], "constraints": {"max_amount": {"amount": "100.00", "currency": "USD"}}}
        ]
    })
}

impl Fixture {
    fn new() -> Fixture {
        let key = |alg, b| SigningKey::from_secret_bytes(alg, &[b; 32]).expect("fixed key bytes");
        let (es, ed, rogue, dpop) =
            (key(Alg::Es256, 0x11), key(Alg::EdDsa, 0x22), key(Alg::Es256, 0x44), key(Alg::EdDsa, 0x55));
        let config = Config::parse(config_json(&es, &ed).to_string().as_bytes()).expect("fixture config");
        let config = Rc::new(config);
        let keys = KeyStore::new(&config);
        let dpop_jkt = dpop.public_jwk(None).thumbprint().expect("thumbprint");
        let at = |k: &SigningKey, kid: &str, claims: &Value| {
            k.sign_compact(&json!({"alg": k.alg().name(), "typ": "at+jwt", "kid": kid}), claims)
        };
        let token = at(&es, "k1", &token_claims(AS));
        let mut dc = token_claims(AS);
        dc["cnf"] = json!({"jkt": dpop_jkt});
        dc["jti"] = json!("tok-dpop");
        let dpop_token = at(&ed, "k2", &dc);
        let remote_token = at(&es, "r1", &token_claims(REMOTE_AS));
        let jwks = json!({"keys": [es.public_jwk(Some("r1"))]}).to_string().into_bytes();
        Fixture { config, keys, es, ed, rogue, dpop, dpop_jkt, token, dpop_token, remote_token, jwks }
    }

    /// A fresh engine over the fixture config (fixed seed).
    pub fn engine(&self) -> Engine {
        Engine::new(Rc::clone(&self.config), crate::Seeds { nonce: [7; 32], ids: [6; 32] })
    }

    /// The fixture's Mission marked `active` (version 1) in `engine`'s cache.
    pub fn activate(&self, engine: &mut Engine) {
        engine.missions.put_status(
            0,
            VerifiedStatus {
                id: MISSION.to_owned(),
                state: MissionState::Active,
                version: 1,
                valid_until: NOW + 300,
                expires_at: None,
                current: None,
            },
            NOW,
        );
    }
}

thread_local! {
    static FIXTURE: Rc<Fixture> = Rc::new(Fixture::new());
}

/// The shared fixture (built once per thread).
pub fn fixture() -> Rc<Fixture> {
    FIXTURE.with(Rc::clone)
}

/// `base64url(header) . base64url(payload) . base64url(sig)`, for arbitrary header and payload bytes.
pub fn sign_raw(key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
    let input = format!("{}.{}", b64::encode(header), b64::encode(payload));
    let sig = key.sign_bytes(input.as_bytes());
    format!("{input}.{}", b64::encode(sig))
}

fn header_for(key: &SigningKey, kid: &str, typ: &str) -> Vec<u8> {
    json!({"alg": key.alg().name(), "typ": typ, "kid": kid}).to_string().into_bytes()
}

/// First byte (selector flags) and the rest.
fn split_flags(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((f, rest)) => (*f, rest),
        None => (0, &[]),
    }
}

/// Split at the first `sep`: (before, after); no `sep` = (all, empty).
fn split_at_byte(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Replace every `from` in `data` by `to`.
fn replace(data: &[u8], from: &str, to: &str) -> Vec<u8> {
    let from = from.as_bytes();
    let mut out = Vec::with_capacity(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to.as_bytes());
            i += from.len();
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    out
}

/// `ReplayGuard` over a map, as the workers share it, with the shared decision cache.
#[derive(Default)]
pub struct MapGuard {
    seen: HashMap<String, i64>,
    cache: HashMap<String, Vec<u8>>,
}

impl ReplayGuard for MapGuard {
    fn remember(&mut self, key: &str, until: i64, now: i64) -> Result<bool, String> {
        match self.seen.get(key) {
            Some(&t) if t > now => Ok(false),
            _ => {
                self.seen.insert(key.to_owned(), until);
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

// ------------------------------------------------------------------------- invariants ---------

/// What holds for every decision the engine renders.
fn check_outcome(outcome: &Outcome, secrets: &[&str]) {
    match outcome {
        // Shadow mode: forwarded, with the denial enforcing would have made.
        Outcome::Allow(ev) if ev.would_deny() => {
            assert!((400..=599).contains(&ev.status), "a would-deny names a 4xx/5xx: {}", ev.status);
            check_evidence(ev, secrets);
        }
        Outcome::Allow(ev) => {
            assert_eq!((ev.status, ev.decision), (200, Decision::Allow));
            check_evidence(ev, secrets);
        }
        Outcome::Deny(resp, ev) => {
            assert!(ev.enforced, "a local reply is an enforced decision");
            assert_eq!(resp.status, ev.status, "the evidence names the status sent");
            assert_eq!(ev.decision, Decision::Deny);
            assert!((400..=599).contains(&resp.status), "a denial is 4xx/5xx: {}", resp.status);
            check_response(resp, secrets);
            check_evidence(ev, secrets);
        }
        Outcome::Need(_) => {}
    }
}

fn check_response(resp: &Response, secrets: &[&str]) {
    for (name, value) in &resp.headers {
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
            "response header name {name:?}"
        );
        assert!(
            value.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
            "response header {name} carries a control character: {value:?}"
        );
    }
    assert!(resp.headers.iter().any(|(n, _)| n == "content-type"), "a denial says its media type");
    if resp.status == 503 {
        assert!(resp.headers.iter().any(|(n, _)| n == "retry-after"), "a 503 carries Retry-After");
    }
    let body: Value = serde_json::from_slice(&resp.body).expect("a denial body is JSON");
    assert!(body.is_object());
    let text = String::from_utf8_lossy(&resp.body);
    for s in secrets {
        assert!(!text.contains(s), "a denial echoes a credential");
    }
}

fn check_evidence(ev: &Evidence, secrets: &[&str]) {
    let text = ev.to_json();
    let v: Value = serde_json::from_str(&text).expect("evidence is JSON");
    assert!(v.is_object());
    assert!(!ev.decision_id.is_empty());
    for s in secrets {
        assert!(!text.contains(s), "evidence echoes a credential");
    }
}

// ------------------------------------------------------------------------- token --------------

/// Token parsing and verification (`token::verify`, `jose`, the DPoP proof check, JWKS loading).
///
/// First byte (mod 6) picks the mode:
/// 0. the rest is the compact token text, verified as is (lossy UTF-8);
/// 1. the rest is `header-json \n claims-json`, signed with the fixture's ES256 key;
/// 2. the rest is the claims, signed with a valid `at+jwt` header (ES256, or Ed25519 when bit 3 is set);
/// 3. as 2, signed by a key nobody trusts: never verifies;
/// 4. the rest is `signature || message`: the fast P-256 verifier must agree with `p256`;
/// 5. the rest is a JWKS document fetched for the remote issuer.
///
/// Whatever verifies is checked against the claims' own rules and must stop verifying once one
/// signature byte changes.
pub fn token(data: &[u8]) {
    let fx = fixture();
    let (flags, rest) = split_flags(data);
    match flags % 6 {
        0 => {
            verify_token_text(&fx, &String::from_utf8_lossy(rest), None);
        }
        1 => {
            let (h, c) = split_at_byte(rest, b'\n');
            let t = sign_raw(&fx.es, h, c);
            verify_token_text(&fx, &t, Some(true));
        }
        2 | 3 => {
            let (key, kid) = match (flags % 6, flags & 8 != 0) {
                (3, _) => (&fx.rogue, "k1"),
                (_, false) => (&fx.es, "k1"),
                (_, true) => (&fx.ed, "k2"),
            };
            let t = sign_raw(key, &header_for(key, kid, "at+jwt"), rest);
            let r = verify_token_text(&fx, &t, Some(flags % 6 != 3));
            if flags % 6 == 3 {
                assert!(!r, "a token signed by an untrusted key verified");
            }
        }
        4 => p256_agreement(&fx, rest),
        _ => jwks(&fx, rest),
    }
}

/// Verify `t`; returns whether it verified. `signed_by_fixture`: the harness signed it (so a
/// tampered copy is a meaningful check).
fn verify_token_text(fx: &Fixture, t: &str, signed_by_fixture: Option<bool>) -> bool {
    // The parts never panic, whatever the text.
    if let Ok(parts) = Compact::split(t) {
        let _ = parts.header();
        let _ = parts.payload_bytes();
        let _ = parts.signature_bytes();
        assert_eq!(parts.signing_input.len() + 1 + parts.signature_b64.len(), t.len());
    }
    for (_, k) in inline_keys(fx) {
        let _ = jose::verify_compact(t, &k);
    }
    // A DPoP proof check over the same text, bound to the fixture request.
    let bound =
        crate::dpop::Bound { method: "GET", origin: ORIGIN, path: "/v1/x", token: &fx.dpop_token, jkt: &fx.dpop_jkt };
    if crate::dpop::check(&fx.config.dpop, t, &bound, NOW).is_ok() {
        let proof = Compact::split(t).expect("a checked proof is compact");
        assert_eq!(proof.header().expect("header").typ.as_deref(), Some("dpop+jwt"));
    }
    match token::verify(&fx.config, &fx.keys, t, NOW) {
        Ok(v) => {
            let parts = Compact::split(t).expect("a verified token is compact");
            let header = parts.header().expect("a verified token has a header");
            assert!(header
                .typ
                .as_deref()
                .is_some_and(|ty| ty.eq_ignore_ascii_case("at+jwt") || ty.eq_ignore_ascii_case("application/at+jwt")));
            let issuer = fx.config.issuers.get(v.issuer).expect("issuer index");
            assert_eq!(issuer.issuer, v.iss);
            assert!(issuer.access_tokens);
            assert!(fx.config.issuers.get(v.mission_issuer).is_some_and(|i| i.mission_authority.is_some()));
            assert!(!v.mission_id.is_empty());
            assert!(v.exp.saturating_add(fx.config.clock_skew) > NOW, "an expired token verified");
            assert!(t.len() <= fx.config.max_token_bytes);
            if signed_by_fixture == Some(true) {
                // One changed signature byte: refused.
                let mut sig = parts.signature_bytes().expect("signature");
                if let Some(b) = sig.first_mut() {
                    *b ^= 0x01;
                }
                let forged = format!("{}.{}", parts.signing_input, b64::encode(&sig));
                assert!(token::verify(&fx.config, &fx.keys, &forged, NOW).is_err(), "a tampered token verified");
            }
            true
        }
        Err(TokenError::Deny(d)) => {
            // The rendered refusal is well formed.
            let r = d.render(&fx.config.realm, Some("ES256 EdDSA"), "d-1");
            check_response(&r, &[]);
            false
        }
        Err(TokenError::NeedKeys { issuer, .. }) => {
            assert!(matches!(
                fx.config.issuers.get(issuer).map(|i| &i.keys),
                Some(crate::config::KeySource::Remote { .. })
            ));
            false
        }
    }
}

fn inline_keys(fx: &Fixture) -> Vec<(Option<String>, VerifyingKey)> {
    match fx.config.issuers.first().map(|i| &i.keys) {
        Some(crate::config::KeySource::Inline(k)) => k.clone(),
        _ => Vec::new(),
    }
}

/// The fast P-256 verifier (with and without its per-key table) against RustCrypto `p256`.
fn p256_agreement(fx: &Fixture, rest: &[u8]) {
    use p256::ecdsa::signature::Verifier;
    let (sig, msg) = rest.split_at(rest.len().min(64));
    let msg: &[u8] = if msg.is_empty() { fx.token.as_bytes() } else { msg };
    for (_, key) in inline_keys(fx) {
        let VerifyingKey::P256(pk, Some(table)) = &key else { continue };
        let fast = table.verify(msg, sig);
        let once = missiongate_wire::p256_fast::verify_once(pk, msg, sig);
        let reference = p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| pk.verify(msg, &s).is_ok());
        assert_eq!(fast, reference, "p256_fast (table) disagrees with p256");
        assert_eq!(once, reference, "p256_fast::verify_once disagrees with p256");
        assert_eq!(key.verify(Alg::Es256, msg, sig).is_ok(), reference);
    }
    // A real signature over the message verifies, and with one flipped byte no longer does.
    let mut real = fx.es.sign_bytes(msg);
    let k = inline_keys(fx).into_iter().find(|(_, k)| k.accepts(Alg::Es256)).map(|(_, k)| k).expect("ES256 key");
    assert!(k.verify(Alg::Es256, msg, &real).is_ok());
    if let (Some(i), Some(&b)) = (sig.first(), sig.get(1)) {
        let idx = usize::from(*i) % real.len();
        real[idx] ^= b | 1;
        assert!(k.verify(Alg::Es256, msg, &real).is_err(), "a tampered ES256 signature verified");
    }
}

/// A JWKS answer for the remote issuer.
fn jwks(fx: &Fixture, body: &[u8]) {
    let mut e = fx.engine();
    let _ = e.jwks_callout(1, NOW);
    match e.on_jwks(1, Some(200), body, NOW) {
        Ok(n) => {
            assert!(n >= 1);
            // The remote token verifies exactly when the document holds its key.
            let r = token::verify(&fx.config, &e.keys, &fx.remote_token, NOW);
            if body == fx.jwks.as_slice() {
                assert!(r.is_ok());
            }
            assert!(
                !matches!(r, Err(TokenError::NeedKeys { why: crate::token::KeysWanted::NotLoaded, .. })),
                "loaded keys read as none"
            );
        }
        Err(msg) => assert!(!msg.is_empty()),
    }
}

// ------------------------------------------------------------------------- JCS and digest -----

/// JCS (both canonicalizers) and the HTTP Operation Profile `parameter_digest`.
///
/// Bit 0 of the first byte clear: the rest is a JSON body (`application/json`, the fixture
/// target). Set: the rest is `content-type \n target \n headers \n body`, headers as
/// `name=value&name=value`; bit 1 set means the destination names no effect-bearing headers.
pub fn jcs(data: &[u8]) {
    let (flags, rest) = split_flags(data);
    let (ct, target, headers, body) = if flags & 1 == 0 {
        ("application/json".to_owned(), format!("{ORIGIN}/v1/payments"), Some(Vec::new()), rest)
    } else {
        let (ct, r) = split_at_byte(rest, b'\n');
        let (target, r) = split_at_byte(r, b'\n');
        let (hdrs, body) = split_at_byte(r, b'\n');
        let headers: Vec<(String, String)> = String::from_utf8_lossy(hdrs)
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => (p.to_owned(), String::new()),
            })
            .collect();
        let headers = (flags & 2 == 0).then_some(headers);
        (String::from_utf8_lossy(ct).into_owned(), String::from_utf8_lossy(target).into_owned(), headers, body)
    };

    // The lean canonicalizer and parse-then-canonicalize accept the same inputs and write the same
    // bytes. (Their errors may differ for an input with two faults: the lean path finds a duplicate
    // member when its object closes, after a later syntax error; both refuse it.)
    let lean = jcs::canonicalize_ijson(body);
    let value = jcs::parse_ijson(body);
    let via_value = value.as_ref().map(jcs::canonicalize).map_err(Clone::clone);
    match (&lean, &via_value) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the two canonicalizers write different bytes"),
        (Err(_), Err(_)) => {}
        _ => panic!("the two canonicalizers disagree on acceptance: lean {lean:?}, value {via_value:?}"),
    }
    if let Ok(c) = &lean {
        // Canonical output is canonical: valid UTF-8 I-JSON that canonicalizes to itself.
        assert!(std::str::from_utf8(c).is_ok());
        assert_eq!(jcs::canonicalize_ijson(c).as_ref(), Ok(c), "JCS is not idempotent");
        let v = value.as_ref().expect("parsed");
        assert_eq!(&jcs::parse_ijson(c).map(|w| jcs::canonicalize(&w)), &Ok(c.clone()));
        // Envelope digests over it are well formed.
        let env = digest::envelope_canonical(digest::TYP_MISSION_INTENT, AS, v);
        assert_eq!(jcs::canonicalize_ijson(&env).as_ref(), Ok(&env), "an envelope is not canonical");
        let h = digest::envelope_hash(digest::TYP_MISSION_INTENT, AS, v);
        assert!(digest::parse_prefixed_digest(&h).is_some());
    }

    // The parameter digest.
    let json_ct = digest::is_json_media_type(&ct);
    // A target or header value holding a Unicode noncharacter (U+FDD0..U+FDEF, U+xFFFE/F) is
    // written into the parameter object as is, so that object is not I-JSON (known; see
    // fuzz_props.rs `regression_digest_target_with_noncharacter`): the strict re-parse below is
    // then replaced by a plain JSON one, and refusing such a request is allowed too.
    let nonchar =
        |t: &str| t.chars().any(|c| matches!(u32::from(c), 0xFDD0..=0xFDEF) || u32::from(c) & 0xFFFE == 0xFFFE);
    let unusual = nonchar(&target) || headers.as_ref().is_some_and(|h| h.iter().any(|(n, v)| nonchar(n) || nonchar(v)));
    for method in ["POST", "put"] {
        let r = digest::parameter_digest(method, &target, headers.as_deref(), Some((Some(ct.as_str()), body)));
        match &r {
            Ok((d, canonical)) => {
                assert_eq!(d, &digest::prefixed_sha256(canonical));
                assert!(digest::parse_prefixed_digest(d).is_some());
                let obj: Value = if unusual {
                    serde_json::from_slice(canonical).expect("the parameter object is JSON")
                } else {
                    jcs::parse_ijson(canonical).expect("the parameter object is I-JSON")
                };
                assert_eq!(jcs::canonicalize(&obj), *canonical, "the parameter object is not canonical");
                assert_eq!(obj.get("method").and_then(Value::as_str), Some(method.to_ascii_uppercase().as_str()));
                assert_eq!(obj.get("target").and_then(Value::as_str), Some(target.as_str()));
                if json_ct && !body.is_empty() {
                    let c = lean.as_ref().expect("a bound JSON body is I-JSON");
                    assert!(
                        canonical.windows(c.len()).any(|w| w == c.as_slice()),
                        "the parameter object does not hold the canonical body"
                    );
                }
                if let Some(h) = &headers {
                    let got = obj.get("headers").and_then(Value::as_object).expect("headers member");
                    assert_eq!(got.len(), h.len());
                }
                // Same input, same digest.
                let again =
                    digest::parameter_digest(method, &target, headers.as_deref(), Some((Some(ct.as_str()), body)));
                assert_eq!(again.as_ref().map(|x| &x.0), Ok(d));
            }
            Err(_) => {
                let dup = headers.as_ref().is_some_and(|h| {
                    let mut names: Vec<String> = h.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
                    names.sort();
                    names.windows(2).any(|w| w[0] == w[1])
                });
                assert!(
                    dup || unusual || (json_ct && lean.is_err()) || !body.is_empty(),
                    "an empty body cannot be unbindable"
                );
            }
        }
        if lean.is_err() && json_ct && !body.is_empty() {
            assert!(r.is_err(), "a JSON body that is not I-JSON was bound");
        }
    }
    // A body bound as raw bytes never digests like the same bytes under a JSON media type
    // (one is hashed, the other parsed).
    let raw = digest::parameter_digest("POST", &target, None, Some((Some("application/octet-stream"), body)));
    let js = digest::parameter_digest("POST", &target, None, Some((Some("application/json"), body)));
    if let (Ok(a), Ok(b)) = (raw, js) {
        assert!(body.is_empty() || a.0 != b.0, "a raw body and a JSON body share a digest");
    }
}

// ------------------------------------------------------------------------- config -------------

/// The filter configuration parser, then an engine over whatever it accepts.
pub fn config(data: &[u8]) {
    match Config::parse(data) {
        Err(e) => {
            assert!(!e.field.is_empty() && !e.message.is_empty());
            assert!(!e.to_string().is_empty());
        }
        Ok(c) => {
            assert!(!c.issuers.is_empty());
            assert_eq!(c.issuer_index.len(), c.issuers.len());
            for (name, &i) in &c.issuer_index {
                assert_eq!(c.issuers.get(i).map(|x| x.issuer.as_str()), Some(name.as_str()));
            }
            assert!(c.issuers.iter().any(|i| i.mission_authority.is_some()));
            assert!(c.issuers.iter().all(|i| i.access_tokens || i.mission_authority.is_some()));
            assert!(!c.algs.is_empty() && !c.dpop.algs.is_empty());
            assert!((256..=1_048_576).contains(&c.max_token_bytes));
            assert!((1..=16 * 1_048_576).contains(&c.max_body_bytes));
            assert!((0..=3600).contains(&c.clock_skew));
            assert!(!c.realm.contains(['"', '\\']) && !c.realm.chars().any(char::is_control));
            for (authority, d) in &c.destinations {
                assert!(!authority.is_empty() && !authority.contains('/'));
                assert_eq!(authority, &authority.to_ascii_lowercase());
                assert!(d
                    .operations
                    .iter()
                    .all(|o| o.path.starts_with('/') && o.method == o.method.to_ascii_uppercase()));
                assert!(d.effect_headers.iter().all(|h| *h == h.to_ascii_lowercase() && !h.is_empty()));
                assert!(c.destination(authority, "https", false).is_some());
            }
            // An engine over it decides, and never lets a request without credentials through.
            let c = Rc::new(c);
            let mut e = Engine::new(Rc::clone(&c), crate::Seeds { nonce: [3; 32], ids: [2; 32] });
            let _ = e.jwks_due(NOW);
            for i in 0..c.issuers.len() {
                if let Some((callout, nonce)) = e.status_callout(i, MISSION) {
                    check_callout(&callout);
                    assert!(!nonce.is_empty());
                }
                let _ = e.jwks_callout(i, NOW);
            }
            for i in e.event_issuers() {
                let callout = e.events_callout(i, true).expect("an event issuer has a feed");
                check_callout(&callout);
            }
            let authorities: Vec<String> = c.destinations.keys().take(4).cloned().chain([HOST.to_owned()]).collect();
            for authority in &authorities {
                for authz in [Authz::Missing, Authz::One("Bearer x.y.z")] {
                    let r = Request {
                        method: "POST",
                        scheme: "https",
                        authority,
                        path: "/v1/payments",
                        authorization: authz,
                        dpop: None,
                        dpop_count: 0,
                    };
                    let o = e.decide(&r, NOW, Attempts::default(), &mut MapGuard::default());
                    check_outcome(&o, &[]);
                    // Refused, or (shadow mode) forwarded as a recorded would-deny, never allowed.
                    let refused = match &o {
                        Outcome::Deny(..) => true,
                        Outcome::Allow(ev) => ev.would_deny(),
                        Outcome::Need(_) => false,
                    };
                    assert!(refused, "a request without a valid token was not refused");
                }
            }
        }
    }
}

fn check_callout(c: &Callout) {
    assert!(!c.cluster.is_empty());
    assert!(c.timeout_ms >= 1);
    for (n, v) in &c.headers {
        assert!(!n.is_empty());
        let _ = v;
    }
    assert!(c.headers.iter().any(|(n, v)| n == ":path" && v.starts_with('/')));
}

// ------------------------------------------------------------------------- headers ------------

/// Request headers as (name, value) bytes, in order.
pub type HeaderTable = Vec<(Vec<u8>, Vec<u8>)>;

/// One decision step on a request given as raw header bytes, through the same byte-level entry
/// point the host layer uses ([`crate::head::Head::from_pairs`]): a header the filter needs that is
/// not UTF-8 is refused by its grammar, any other such header is ignored.
pub fn decide_raw(
    engine: &mut Engine,
    headers: &[(Vec<u8>, Vec<u8>)],
    body: Option<&[u8]>,
    pdp: Option<&PdpAnswer>,
    now: i64,
    attempts: Attempts,
    replay: &mut dyn ReplayGuard,
) -> Outcome {
    let head = crate::head::Head::from_pairs(headers);
    if let Some(r) = head.refusal {
        let (resp, ev) = engine.refuse(r.reason, r.detail, now);
        return Outcome::Deny(resp, ev);
    }
    let req = head.request();
    let extra = head.extra(body, pdp);
    engine.decide_full(&req, &extra, now, attempts, replay)
}

/// Drive the engine to a decision the way the host does: answer every `Need` (keys from the
/// fixture's JWKS or a failed fetch, Mission Status failing or unknown, the body, the PDP's
/// `answer`), at most eight steps (a decision must terminate).
pub fn drive(
    fx: &Fixture,
    engine: &mut Engine,
    headers: &[(Vec<u8>, Vec<u8>)],
    body: &[u8],
    answer: &PdpAnswer,
    flags: u8,
    replay: &mut MapGuard,
) -> Outcome {
    let mut attempts = Attempts::default();
    let mut have_body = false;
    let mut have_pdp = false;
    for _ in 0..8 {
        let o =
            decide_raw(engine, headers, have_body.then_some(body), have_pdp.then_some(answer), NOW, attempts, replay);
        match &o {
            Outcome::Need(Need::Keys(i)) => {
                assert!(!attempts.keys, "keys asked for twice");
                let c = engine.jwks_callout(*i, NOW).expect("a remote issuer has a JWKS callout");
                check_callout(&c);
                let status = if flags & 0x10 == 0 { Some(200) } else { None };
                let _ = engine.on_jwks(*i, status, &fx.jwks, NOW);
                attempts.keys = true;
            }
            Outcome::Need(Need::Status(i, id)) => {
                assert!(!attempts.status, "Mission Status asked for twice");
                let (c, nonce) = engine.status_callout(*i, id).expect("a state authority has a status callout");
                check_callout(&c);
                let status = if flags & 0x20 == 0 { None } else { Some(404) };
                let body = if status.is_some() {
                    serde_json::to_vec(&json!({"error": "not_found", "error_description": "unknown", "nonce": nonce}))
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                assert_eq!(engine.on_status(*i, id, &nonce, status, &body, NOW).refetch_keys, None);
                attempts.status = true;
            }
            Outcome::Need(Need::Body) => {
                assert!(!have_body, "the body asked for twice");
                have_body = true;
            }
            Outcome::Need(Need::Pdp(c)) => {
                assert!(!have_pdp, "the PDP asked twice for one request");
                check_callout(c);
                let req: EvaluationRequest =
                    serde_json::from_slice(&c.body).expect("the evaluation request is AuthZEN");
                assert_eq!(req.resource.type_, "egress");
                have_pdp = true;
            }
            _ => return o,
        }
    }
    panic!("no decision after eight steps");
}

/// Parse `name: value` lines (a leading `:` belongs to the name) up to an empty line; the rest is
/// the body.
pub fn parse_header_block(data: &[u8]) -> (HeaderTable, &[u8]) {
    let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let mut table = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        let from = usize::from(line.first() == Some(&b':'));
        let (name, value) = match line[from..].iter().position(|&b| b == b':') {
            Some(i) => (&line[..from + i], &line[from + i + 1..]),
            None => (line, &[][..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        table.push((name.to_vec(), value.to_vec()));
    }
    (table, body)
}

/// A DPoP proof for the fixture's DPoP key over `method` and `htu`, for the DPoP-bound token.
fn proof_for(fx: &Fixture, method: &str, htu: &str, jti: &str) -> String {
    let jwk = serde_json::to_value(fx.dpop.public_jwk(None)).unwrap_or_default();
    fx.dpop.sign_compact(
        &json!({"alg": "EdDSA", "typ": "dpop+jwt", "jwk": jwk}),
        &json!({"jti": jti, "htm": method, "htu": htu, "iat": NOW, "ath": token::ath(&fx.dpop_token)}),
    )
}

/// Header handling: the engine's decision on a request built from arbitrary header names and
/// values (`:method`, `:scheme`, `:authority`, `:path`, `Authorization`, `DPoP`, `content-type`,
/// anything), written as `name: value` lines, then an empty line and the body.
///
/// Placeholders in values: `$TOKEN` (a valid Bearer token), `$DTOKEN` (a valid DPoP-bound token),
/// `$RTOKEN` (a token whose issuer's keys must be fetched), `$PROOF` (a valid DPoP proof for the
/// request's method, `:authority` and `:path`). First byte: bit 0 set leaves the Mission unknown
/// (so Mission Status is asked), bit 1 makes the PDP deny, bit 2 makes it fail (HTTP 500), bit 4
/// fails a JWKS fetch, bit 5 makes Mission Status answer 404.
pub fn headers(data: &[u8]) {
    let _ = headers_status(data);
}

/// [`headers`], returning the status decided (200 = forwarded).
pub fn headers_status(data: &[u8]) -> u16 {
    let fx = fixture();
    let (flags, rest) = split_flags(data);
    let (mut table, body) = parse_header_block(rest);
    let get = |t: &[(Vec<u8>, Vec<u8>)], n: &str| {
        t.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n.as_bytes()))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    let method = get(&table, ":method");
    let path = get(&table, ":path");
    let htu = format!("https://{}{}", get(&table, ":authority"), path.split(['?', '#']).next().unwrap_or(""));
    let proof = proof_for(&fx, &method, &htu, "p-1");
    for (_, v) in &mut table {
        for (from, to) in
            [("$TOKEN", &fx.token), ("$DTOKEN", &fx.dpop_token), ("$RTOKEN", &fx.remote_token), ("$PROOF", &proof)]
        {
            if v.windows(from.len()).any(|w| w == from.as_bytes()) {
                *v = replace(v, from, to);
            }
        }
    }
    let mut e = fx.engine();
    if flags & 1 == 0 {
        fx.activate(&mut e);
    }
    let answer = pdp_answer(flags);
    let mut replay = MapGuard::default();
    let secrets = [fx.token.as_str(), fx.dpop_token.as_str(), fx.remote_token.as_str()];
    let o = drive(&fx, &mut e, &table, body, &answer, flags, &mut replay);
    check_outcome(&o, &secrets);
    if let Outcome::Allow(_) = o {
        let authz: Vec<&[u8]> =
            table.iter().filter(|(n, _)| n.eq_ignore_ascii_case(b"authorization")).map(|(_, v)| v.as_slice()).collect();
        assert_eq!(authz.len(), 1, "allowed without exactly one Authorization header");
        assert!(
            secrets.iter().any(|s| authz[0].windows(s.len()).any(|w| w == s.as_bytes())),
            "allowed without a token the fixture minted"
        );
        assert!(flags & 1 == 0, "allowed without an active Mission");
        // A DPoP proof is single-use: the same request with the DPoP-bound token is refused again.
        if authz[0].windows(fx.dpop_token.len()).any(|w| w == fx.dpop_token.as_bytes()) {
            let again = drive(&fx, &mut e, &table, body, &answer, flags, &mut replay);
            assert!(!matches!(again, Outcome::Allow(_)), "a DPoP proof was accepted twice");
        }
    }
    status_of(&o)
}

fn status_of(o: &Outcome) -> u16 {
    match o {
        Outcome::Allow(_) => 200,
        Outcome::Deny(r, _) => r.status,
        Outcome::Need(_) => 0,
    }
}

fn pdp_answer(flags: u8) -> PdpAnswer {
    let body = if flags & 2 == 0 {
        json!({"decision": true, "context": {"evaluation_id": "ev-1"}})
    } else {
        json!({"decision": false, "context": {"reason": "not allowed"}})
    };
    PdpAnswer { status: Some(if flags & 4 == 0 { 200 } else { 500 }), body: body.to_string().into_bytes() }
}

// ------------------------------------------------------------------------- Mission Status -----

/// Mission Status answers (`mission::verify_status`, `Engine::on_status`).
///
/// First byte (mod 4): 0 the rest is the answer body as is; 1 the rest is the claims, signed with a
/// valid header; 2 the rest is `header \n claims`, signed; 3 as 1 but signed by an untrusted key.
/// The answer is checked against mission [`MISSION`] and nonce [`NONCE`].
pub fn mission_status(data: &[u8]) {
    let _ = mission_status_verdict(data);
}

/// [`mission_status`], returning whether `mission::verify_status` accepted the answer.
pub fn mission_status_verdict(data: &[u8]) -> bool {
    let fx = fixture();
    let (flags, rest) = split_flags(data);
    let body = match flags % 4 {
        0 => rest.to_vec(),
        1 => sign_raw(&fx.es, &header_for(&fx.es, "k1", TYP_MISSION_STATUS), rest).into_bytes(),
        2 => {
            let (h, c) = split_at_byte(rest, b'\n');
            sign_raw(&fx.es, h, c).into_bytes()
        }
        _ => sign_raw(&fx.rogue, &header_for(&fx.rogue, "k1", TYP_MISSION_STATUS), rest).into_bytes(),
    };
    let r = mission::verify_status(&fx.config, &fx.keys, 0, &body, MISSION, NONCE, NOW);
    if flags % 4 == 3 {
        assert!(r.is_err(), "a status answer signed by an untrusted key was accepted");
    }
    // Issuer 1 is no state authority: nothing it could send is a status answer.
    assert!(mission::verify_status(&fx.config, &fx.keys, 1, &body, MISSION, NONCE, NOW).is_err());
    if let Ok(v) = &r {
        assert_eq!(v.id, MISSION);
        assert!(v.valid_until <= NOW + MAX_STALENESS, "status relied on beyond the staleness bound");
    }
    let mut e = fx.engine();
    let status = match flags >> 4 {
        0 => Some(404),
        1 => Some(500),
        2 => None,
        _ => Some(200),
    };
    let outcome = e.on_status(0, MISSION, NONCE, status, &body, NOW);
    assert_eq!(outcome.refetch_keys, None, "inline keys are never refetched");
    let view = e.missions.view(0, MISSION, NOW);
    let expected = match (status, &r) {
        (Some(404), _) if mission::status_not_found(404, &body, NONCE).is_ok() => MissionView::Unknown,
        (Some(200), Ok(v)) if v.valid_until > NOW => {
            if v.expires_at.is_some_and(|x| NOW >= x) {
                MissionView::Inactive(MissionState::Expired)
            } else if v.state.is_active() {
                MissionView::Active
            } else {
                MissionView::Inactive(v.state.clone())
            }
        }
        (Some(200), Ok(_)) => MissionView::NeedFetch,
        _ => MissionView::Unavailable,
    };
    assert_eq!(view, expected);
    r.is_ok()
}

// ------------------------------------------------------------------------- SET feed -----------

/// The state-event feed (RFC 8936 poll answers of RFC 8417 SETs: `mission::verify_events`,
/// `Engine::on_events`).
///
/// First byte (mod 3): 0 the rest is the poll answer as is; 1 every member of `sets` whose value
/// is a JSON object is replaced by a SET with those claims, signed by the authority's key; 2 the
/// same, signed by an untrusted key (nothing may change).
pub fn set_feed(data: &[u8]) {
    let fx = fixture();
    let (flags, rest) = split_flags(data);
    let mode = flags % 3;
    let body = if mode == 0 {
        rest.to_vec()
    } else {
        let key = if mode == 1 { &fx.es } else { &fx.rogue };
        match serde_json::from_slice::<Value>(rest) {
            Ok(mut v) => {
                if let Some(sets) = v.get_mut("sets").and_then(Value::as_object_mut) {
                    for (_, set) in sets.iter_mut() {
                        if set.is_object() {
                            let claims = serde_json::to_vec(set).unwrap_or_default();
                            *set = Value::String(sign_raw(key, &header_for(key, "k1", TYP_SET), &claims));
                        }
                    }
                }
                serde_json::to_vec(&v).unwrap_or_default()
            }
            Err(_) => rest.to_vec(),
        }
    };
    let verified = mission::verify_events(&fx.config, &fx.keys, 0, &body, NOW);
    if let Ok(p) = &verified {
        let poll: PollResponse = serde_json::from_slice(&body).expect("a verified feed is a poll response");
        assert!(p.events.len() + p.refused.len() + p.unknown_key <= poll.sets.len(), "more events than SETs");
        for e in &p.events {
            assert!(poll.sets.contains_key(&e.jti), "an event without its SET");
        }
        let keys: Vec<_> = p.events.iter().map(|e| (&e.change.id, e.change.version)).collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "events are not applied in order");
        if mode == 2 {
            assert!(p.events.is_empty(), "a SET signed by an untrusted key was accepted");
        }
    }
    let mut e = fx.engine();
    let status = if flags & 0x80 == 0 { Some(200) } else { Some(503) };
    let (applied, more, refetch) = e.on_events(0, status, &body, NOW);
    assert_eq!(refetch, None, "inline keys are never refetched");
    match (&verified, status) {
        (Ok(p), Some(200)) => {
            assert!(applied <= p.events.len());
            assert_eq!(more, p.more);
            // What each Mission reads as now: the first event of its highest version decides.
            let mut last: HashMap<&str, (u64, &MissionState, Option<i64>)> = HashMap::new();
            for ev in &p.events {
                let ev = &ev.change;
                match last.get(ev.id.as_str()) {
                    Some((v, _, _)) if *v >= ev.version => {}
                    _ => {
                        last.insert(&ev.id, (ev.version, &ev.state, ev.expires_at));
                    }
                }
            }
            for (id, (_, state, expires_at)) in last {
                let view = e.missions.view(0, id, NOW);
                if expires_at.is_some_and(|x| NOW >= x) {
                    assert_eq!(view, MissionView::Inactive(MissionState::Expired), "an expired Mission read as live");
                } else if state.is_terminal() {
                    assert_eq!(view, MissionView::Inactive(state.clone()), "a terminal event did not take effect");
                } else {
                    assert_eq!(view, MissionView::NeedFetch, "a non-terminal event must be confirmed by status");
                }
            }
        }
        _ => {
            assert_eq!((applied, more), (0, false));
            assert_eq!(e.missions.view(0, MISSION, NOW), MissionView::NeedFetch);
        }
    }
}

// ------------------------------------------------------------------------- AuthZEN ------------

/// AuthZEN evaluation answers (`EvaluationResponse`, the engine's PDP path), for a consequential
/// call the token's authority does not cover... (`POST /v1/payments` with a JSON body and an
/// `idempotency-key`).
///
/// The rest of the input is the PDP's answer body; `$DIGEST` in it is replaced by the call's real
/// `parameter_digest`. First byte: bit 0 set answers with HTTP 500 instead of 200; bit 1 set lets
/// a plain GET outside the authority ask instead.
pub fn authzen(data: &[u8]) {
    let _ = authzen_status(data);
}

/// [`authzen`], returning the status of the first decision with the answer (200 = forwarded).
pub fn authzen_status(data: &[u8]) -> u16 {
    let fx = fixture();
    let (flags, rest) = split_flags(data);
    let (method, path, body): (&str, &str, &[u8]) = if flags & 2 == 0 {
        ("POST", "/v1/payments", br#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#)
    } else {
        ("GET", "/elsewhere", b"")
    };
    let authorization = format!("Bearer {}", fx.token);
    let table: Vec<(Vec<u8>, Vec<u8>)> = [
        (":method", method),
        (":scheme", "https"),
        (":authority", HOST),
        (":path", path),
        ("authorization", authorization.as_str()),
        ("content-type", "application/json"),
        ("idempotency-key", "k-42"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect();

    // The call's digest, as the engine asks the PDP about it.
    let mut e = fx.engine();
    fx.activate(&mut e);
    let mut replay = MapGuard::default();
    let step = |e: &mut Engine, replay: &mut MapGuard, pdp: Option<&PdpAnswer>| {
        decide_raw(e, &table, Some(body), pdp, NOW, Attempts::default(), replay)
    };
    let digest = match step(&mut e, &mut replay, None) {
        Outcome::Need(Need::Pdp(c)) => {
            let req: EvaluationRequest = serde_json::from_slice(&c.body).expect("AuthZEN request");
            req.action.properties.get("parameter_digest").and_then(Value::as_str).map(str::to_owned)
        }
        other => panic!("the fixture call does not reach the PDP: {other:?}"),
    };
    let text = replace(rest, "$DIGEST", digest.as_deref().unwrap_or("none"));
    let status = if flags & 1 == 0 { Some(200) } else { Some(500) };
    let answer = PdpAnswer { status, body: text.clone() };

    let parsed = serde_json::from_slice::<EvaluationResponse>(&text);
    if let Ok(p) = &parsed {
        // Serializing what was parsed reads back the same.
        let s1 = serde_json::to_vec(p).expect("serialize");
        let p2: EvaluationResponse = serde_json::from_slice(&s1).expect("reparse");
        assert_eq!(serde_json::to_vec(&p2).expect("serialize"), s1);
    }
    let o = step(&mut e, &mut replay, Some(&answer));
    check_outcome(&o, &[fx.token.as_str()]);
    let single_use = match &o {
        Outcome::Allow(_) => {
            assert_eq!(status, Some(200), "allowed on a failed PDP call");
            let p = parsed.as_ref().expect("allowed on an answer that does not parse");
            assert!(p.decision, "allowed on a deny");
            let c = p.context.conditions.clone().unwrap_or_default();
            assert!(c.unknown.is_empty(), "allowed with a condition nobody understands");
            assert!(c.use_limit.is_none() || c.use_limit == Some(1));
            if let Some(pd) = &c.parameter_digest {
                assert_eq!(Some(pd), digest.as_ref(), "allowed a call other than the one approved");
            }
            if let Some(vu) = &c.valid_until {
                assert!(
                    missiongate_wire::time::parse_rfc3339(vu).is_some_and(|t| t > NOW),
                    "allowed on an expired permit"
                );
            }
            c.use_limit == Some(1)
        }
        Outcome::Deny(resp, _) => {
            if status != Some(200) || parsed.is_err() {
                assert_eq!(resp.status, 503);
            }
            false
        }
        Outcome::Need(n) => panic!("still needs {n:?} with the PDP's answer in hand"),
    };
    // The same call again, the same answer in hand: a single-use permit is spent.
    let again = step(&mut e, &mut replay, Some(&answer));
    check_outcome(&again, &[fx.token.as_str()]);
    if single_use {
        assert!(!matches!(again, Outcome::Allow(_)), "a single-use permit was used twice");
    }
    // Without an answer: a cached one (or a new question), never a verdict the PDP did not give.
    let cached = step(&mut e, &mut replay, None);
    check_outcome(&cached, &[fx.token.as_str()]);
    if matches!(cached, Outcome::Allow(_)) {
        assert!(matches!(o, Outcome::Allow(_)) && !single_use, "a cached answer allowed what the PDP did not");
    }
    status_of(&o)
}

// ------------------------------------------------------------------------- seed corpus --------

/// The seed corpus: (target, file name, bytes). Written to `fuzz/seeds/<target>/<name>` by
/// `cargo test -p missiongate-core --test fuzz_props -- --ignored write_seeds`; the property pass
/// runs the committed files and checks that the ones named in it still reach their decision.
pub fn seed_corpus() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let fx = fixture();
    let mut out: Vec<(&'static str, &'static str, Vec<u8>)> = Vec::new();
    let with = |flag: u8, rest: &[u8]| {
        let mut v = vec![flag];
        v.extend_from_slice(rest);
        v
    };
    let claims = token_claims(AS).to_string();
    let at_header = header_for(&fx.es, "k1", "at+jwt");

    // token
    out.push(("token", "bearer_es256", with(0, fx.token.as_bytes())));
    out.push(("token", "dpop_bound_ed25519", with(0, fx.dpop_token.as_bytes())));
    out.push(("token", "remote_issuer", with(0, fx.remote_token.as_bytes())));
    out.push(("token", "dpop_proof", with(0, proof_for(&fx, "GET", &format!("{ORIGIN}/v1/x"), "p-9").as_bytes())));
    let mut hc = at_header.clone();
    hc.push(b'\n');
    hc.extend_from_slice(claims.as_bytes());
    out.push(("token", "header_and_claims", with(1, &hc)));
    out.push(("token", "claims_es256", with(2, claims.as_bytes())));
    out.push(("token", "claims_ed25519", with(2 | 8, claims.as_bytes())));
    out.push(("token", "claims_untrusted_key", with(3, claims.as_bytes())));
    let msg = b"eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0";
    let mut sig = fx.es.sign_bytes(msg);
    sig.extend_from_slice(msg);
    out.push(("token", "p256_real_signature", with(4, &sig)));
    out.push(("token", "jwks", with(5, &fx.jwks)));

    // jcs
    out.push(("jcs", "v2_body", with(0, br#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#)));
    out.push((
        "jcs",
        "v3_reformatted",
        with(0, b"{ \"to\" : \"acct\\u005f123\", \"currency\":\"USD\",\n \"amount\":\"423.50\" }"),
    ));
    out.push(("jcs", "v7_text_plain", with(1, b"text/plain\nhttps://api.partner.example/upload\n\nhello, partner")));
    out.push((
        "jcs",
        "v9_effect_header",
        with(1, b"application/json; charset=utf-8\nhttps://api.partner.example/v1/payments\nidempotency-key=k-42\n{\"amount\":\"1.00\"}"),
    ));
    out.push(("jcs", "v10_json_spelling_a_hash", with(1, b"application/json\nhttps://api.partner.example/upload\n\n{\"sha-256\":\"BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs\"}")));
    out.push((
        "jcs",
        "v12_no_effect_headers",
        with(3, b"application/octet-stream\nhttps://api.partner.example/blob\n\nhello, partner"),
    ));
    out.push((
        "jcs",
        "numbers",
        with(0, b"[1e21,1e-7,0.1,-0,1.0,1e2,5e-324,1.7976931348623157e308,123456789012345678901234567890,-1.5E-5]"),
    ));
    out.push(("jcs", "number_inexact", with(0, b"{\"n\":9007199254740993,\"m\":0.10000000000000000001}")));
    out.push(("jcs", "number_out_of_range", with(0, b"[1e400]")));
    out.push((
        "jcs",
        "rfc8785_sorting",
        with(0, "{\"\\u20ac\":\"Euro\",\"\\r\":\"CR\",\"\\ufb33\":\"Dalet\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji\",\"\\u0080\":\"Control\",\"\\u00f6\":\"o\"}".as_bytes()),
    ));
    out.push(("jcs", "duplicate_member", with(0, br#"{"a":1,"b":{"c":2,"c":3}}"#)));
    out.push(("jcs", "lone_surrogate", with(0, br#"["\ud800x"]"#)));
    out.push(("jcs", "noncharacter", with(0, "[\"\u{ffff}\"]".as_bytes())));
    out.push(("jcs", "deep", with(0, format!("{}{}", "[".repeat(101), "]".repeat(101)).as_bytes())));
    out.push(("jcs", "escapes", with(0, br#"{"s":"\u0000\u001f\"\\\/\b\f\n\r\t\u007f\u2028"}"#)));

    // config
    out.push(("config", "fixture", config_json(&fx.es, &fx.ed).to_string().into_bytes()));
    out.push(("config", "minimal", include_bytes!("../../examples/minimal.json").to_vec()));
    out.push(("config", "full", include_bytes!("../../examples/full.json").to_vec()));

    // headers
    let req = |lines: &[&str], body: &str| {
        let mut s = lines.join("\n");
        s.push_str("\n\n");
        s.push_str(body);
        s.into_bytes()
    };
    let base = [":scheme: https", ":authority: api.partner.example"];
    let h = |m: &str, p: &str, more: &[&str], body: &str| {
        let (mm, pp) = (format!(":method: {m}"), format!(":path: {p}"));
        let mut lines: Vec<&str> = vec![&mm, base[0], base[1], &pp];
        lines.extend_from_slice(more);
        req(&lines, body)
    };
    out.push((
        "headers",
        "bearer_get",
        with(0, &h("GET", "/v1/invoices?status=open", &["authorization: Bearer $TOKEN"], "")),
    ));
    out.push((
        "headers",
        "payment_post",
        with(
            0,
            &h(
                "POST",
                "/v1/payments",
                &["authorization: Bearer $TOKEN", "content-type: application/json", "idempotency-key: k-42"],
                r#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#,
            ),
        ),
    ));
    out.push((
        "headers",
        "dpop_get",
        with(0, &h("GET", "/v1/invoices", &["authorization: DPoP $DTOKEN", "dpop: $PROOF"], "")),
    ));
    out.push(("headers", "remote_keys", with(0, &h("GET", "/v1/invoices", &["authorization: Bearer $RTOKEN"], ""))));
    out.push(("headers", "mission_unknown", with(1, &h("GET", "/v1/invoices", &["authorization: Bearer $TOKEN"], ""))));
    out.push(("headers", "pdp_denies", with(2, &h("GET", "/elsewhere", &["authorization: Bearer $TOKEN"], ""))));
    out.push((
        "headers",
        "two_authorization",
        with(0, &h("GET", "/v1/invoices", &["authorization: Bearer $TOKEN", "Authorization: Bearer $TOKEN"], "")),
    ));
    out.push(("headers", "no_credentials", with(0, &h("GET", "/v1/invoices", &[], ""))));
    out.push((
        "headers",
        "path_forms",
        with(0, &h("GET", "/v1/..%2F/admin;x=1//./a\\b", &["authorization: Bearer $TOKEN"], "")),
    ));
    let mut bad = h("POST", "/v1/payments", &["authorization: Bearer $TOKEN", "idempotency-key: k-42"], "{}");
    let at = bad.len() - 3;
    bad.splice(at..at, b"\ncontent-type: application/\xffjson\nx-custom: \xfe\x80".iter().copied());
    out.push(("headers", "non_utf8", with(0, &bad)));

    // mission_status (upper nibble 3: the answer came with HTTP 200)
    let status_claims = |state: &str, version: u64| {
        json!({"iss": AS, "aud": GATEWAY_AUD, "nonce": NONCE, "iat": NOW, "exp": NOW + 60,
               "mission": {"id": MISSION, "issuer": AS, "state": state, "version": version,
                           "fresh_until": missiongate_wire::time::format_rfc3339(NOW + 300),
                           "expires_at": missiongate_wire::time::format_rfc3339(NOW + 3600)}})
        .to_string()
    };
    let active = status_claims("active", 3);
    out.push(("mission_status", "active_claims", with(0x31, active.as_bytes())));
    out.push(("mission_status", "revoked_claims", with(0x31, status_claims("revoked", 4).as_bytes())));
    let mut hc = header_for(&fx.es, "k1", TYP_MISSION_STATUS);
    hc.push(b'\n');
    hc.extend_from_slice(active.as_bytes());
    out.push(("mission_status", "header_and_claims", with(0x32, &hc)));
    let jws = sign_raw(&fx.ed, &header_for(&fx.ed, "k2", TYP_MISSION_STATUS), status_claims("suspended", 5).as_bytes());
    out.push(("mission_status", "signed_answer", with(0x30, jws.as_bytes())));
    out.push(("mission_status", "untrusted_key", with(0x33, active.as_bytes())));
    out.push(("mission_status", "http_404", with(0x01, active.as_bytes())));

    // set_feed
    let set = |jti: &str, id: &str, state: &str, version: u64| {
        json!({"iss": AS, "iat": NOW, "jti": jti, "aud": GATEWAY_AUD,
               "events": {missiongate_wire::claims::EVENT_MISSION_LIFECYCLE_CHANGE:
                          {"mission": {"id": id, "issuer": AS}, "state": state, "prior_state": "active",
                           "version": version, "committed_at": "2026-12-07T12:00:00Z"}}})
    };
    let feed = json!({"sets": {"7": set("7", MISSION, "revoked", 4), "8": set("8", "msn_other", "suspended", 2),
                                "9": set("9", MISSION, "active", 3)}, "moreAvailable": true});
    out.push(("set_feed", "claims", with(1, feed.to_string().as_bytes())));
    out.push(("set_feed", "untrusted_key", with(2, feed.to_string().as_bytes())));
    let signed = json!({"sets": {"12": sign_raw(&fx.es, &header_for(&fx.es, "k1", TYP_SET), set("12", MISSION, "completed", 9).to_string().as_bytes())}});
    out.push(("set_feed", "signed", with(0, signed.to_string().as_bytes())));
    out.push(("set_feed", "empty", with(0, br#"{"sets":{}}"#)));

    // authzen
    out.push((
        "authzen",
        "permit_single_use",
        with(0, br#"{"decision":true,"context":{"evaluation_id":"ev-1","conditions":{"parameter_digest":"$DIGEST","use_limit":1,"valid_until":"2027-01-15T08:05:00Z"}}}"#),
    ));
    out.push(("authzen", "permit", with(0, br#"{"decision":true,"context":{"evaluation_id":"ev-2"}}"#)));
    out.push((
        "authzen",
        "permit_other_digest",
        with(0, br#"{"decision":true,"context":{"conditions":{"parameter_digest":"sha-256:AAAA"}}}"#),
    ));
    out.push((
        "authzen",
        "permit_unknown_condition",
        with(0, br#"{"decision":true,"context":{"conditions":{"max_uses_per_day":3}}}"#),
    ));
    out.push((
        "authzen",
        "deny_requestable",
        with(
            2,
            br#"{"decision":false,"context":{"evaluation_id":"ev-3","reason":"egress_not_allowed","next_action":"request","access_request":{"endpoint":"https://portal.example/access/v1/requests","expires_at":"2027-01-15T09:00:00Z","binding_token":"a.b.c","display":{"title":"t"}},"captive_portal_api":"https://portal.example/api/ev-3","user_portal_url":"https://portal.example/p/ev-3"}}"#,
        ),
    ));
    out.push(("authzen", "deny", with(0, br#"{"decision":false,"context":{"reason":"over budget"}}"#)));
    out.push(("authzen", "garbage", with(0, b"<html>")));
    out.push(("authzen", "http_500", with(1, br#"{"decision":true}"#)));
    out
}
