//! Shadow mode (issue 14): a decision is computed exactly as when enforcing, a denial is recorded
//! (evidence `enforced: false`, the would-be reason and status), counted under
//! `shadow.would_deny.<reason>`, and the request goes on; nothing single-use is consumed.
//!
//! Runs natively and as wasm (`make test-wasm-core`), like `core.rs`. No RNG, no clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::rc::Rc;

use missiongate_core::config::Mode;
use missiongate_core::decision::{Evidence, Reason, ALL_REASONS};
use missiongate_core::engine::{counter_names, Extra, PdpAnswer, ALL_STATS};
use missiongate_core::head::Head;
use missiongate_core::stream::{Host, State, Stream, Verdict};
use missiongate_core::{Attempts, Authz, Config, Engine, Need, Outcome, ReplayGuard, Request, Seeds};
use missiongate_wire::b64;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use common::request as req;
/// The enforcing and the shadow destination: two names of one origin, so one token serves both.
use common::*;

const ENFORCE: &str = "api.partner.example";
const SHADOW: &str = "shadow.partner.example";
const ORIGIN: &str = "https://api.partner.example";
const MISSION: &str = "msn_shadow";

fn config(filter_mode: &str, pdp: bool) -> Value {
    let mut c = json!({
        "issuers": [issuer()],
        "mode": filter_mode,
        "destinations": [
            {"authority": ENFORCE, "origin": ORIGIN, "mode": "enforce"},
            {"authority": SHADOW, "origin": ORIGIN, "mode": "shadow"}
        ]
    });
    if pdp {
        c["pdp"] = pdp_config();
    }
    c
}

fn engine(filter_mode: &str, pdp: bool) -> Engine {
    let config = Config::parse(config(filter_mode, pdp).to_string().as_bytes()).unwrap();
    let mut e = Engine::new(Rc::new(config), Seeds { nonce: [7; 32], ids: [8; 32] });
    set_state(&mut e, "active", 1);
    e
}

fn set_state(e: &mut Engine, state: &str, version: u64) {
    assert_eq!(common::set_state(e, MISSION, state, version).refetch_keys, None);
}

fn token_with(edit: impl FnOnce(&mut Value)) -> String {
    let mut c = json!({
        "iss": AS, "sub": "user-1", "client_id": "agent-7", "aud": ORIGIN,
        "iat": NOW - 10, "exp": NOW + 600, "jti": "tok-1",
        "mission": {"id": MISSION, "issuer": AS, "authority_hash": "sha-256:AAAA"},
        "authorization_details": [{"type": "mission_resource_access", "resource": "https://api.partner.example/v1",
                                   "resource_match": "prefix", "actions": ["http.get", "payments.*"]}]
    });
    edit(&mut c);
    as_key().sign_compact(&json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}), &c)
}

fn token() -> String {
    token_with(|_| {})
}

/// A replay store over a map that can also be read without writing (as the host's ledger can).
#[derive(Default)]
struct Guard {
    keys: HashMap<String, i64>,
    writes: usize,
}

impl ReplayGuard for Guard {
    fn remember(&mut self, key: &str, until: i64, now: i64) -> Result<bool, String> {
        match self.keys.get(key) {
            Some(&t) if t > now => Ok(false),
            _ => {
                self.writes += 1;
                self.keys.insert(key.to_owned(), until);
                Ok(true)
            }
        }
    }
    fn seen(&mut self, key: &str, now: i64) -> Result<bool, String> {
        Ok(self.keys.get(key).is_some_and(|&t| t > now))
    }
}

fn would_deny(o: Outcome, reason: &str, status: u16) -> Evidence {
    let ev = match o {
        Outcome::Allow(ev) => ev,
        other => panic!("shadow: expected the request to go on (would deny {reason}), got {other:?}"),
    };
    assert_eq!(
        (ev.decision.as_str(), ev.reason.as_str(), ev.status, ev.enforced),
        ("deny", reason, status, false),
        "{ev:?}"
    );
    assert!(ev.would_deny());
    let json: Value = serde_json::from_str(&ev.to_json()).unwrap();
    assert_eq!(json["enforced"], false, "{json}");
    assert_eq!(json["reason"], reason);
    ev
}

fn denied(o: Outcome, reason: &str, status: u16) -> Evidence {
    match o {
        Outcome::Deny(resp, ev) => {
            assert_eq!((resp.status, ev.reason.as_str(), ev.enforced), (status, reason, true), "{ev:?}");
            ev
        }
        other => panic!("enforce: expected a refusal ({reason}), got {other:?}"),
    }
}

fn counters(e: &mut Engine) -> HashMap<String, u64> {
    e.take_counters().into_iter().collect()
}

fn pdp(answer: &Value) -> PdpAnswer {
    PdpAnswer { status: Some(200), body: serde_json::to_vec(answer).unwrap() }
}

fn with_pdp(e: &mut Engine, r: &Request<'_>, body: Option<&[u8]>, answer: &PdpAnswer, g: &mut Guard) -> Outcome {
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let extra = Extra { headers: &headers, body, pdp: Some(answer), ..Extra::default() };
    e.decide_full(r, &extra, NOW, Attempts { keys: true, status: true }, g)
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_revoked_mission_goes_on_in_shadow_and_is_refused_when_enforcing() {
    let mut e = engine("enforce", false);
    set_state(&mut e, "revoked", 2);
    let auth = format!("Bearer {}", token());
    let mut g = Guard::default();
    let ev = would_deny(
        e.decide(&req("GET", SHADOW, "/v1/a", &auth), NOW, Attempts::default(), &mut g),
        "mission_inactive",
        401,
    );
    assert_eq!(ev.mission_id.as_deref(), Some(MISSION));
    assert_eq!(ev.destination.as_deref(), Some(ORIGIN));
    denied(e.decide(&req("GET", ENFORCE, "/v1/a", &auth), NOW, Attempts::default(), &mut g), "mission_inactive", 401);
    let c = counters(&mut e);
    assert_eq!(c.get("shadow.would_deny.mission_inactive"), Some(&1), "{c:?}");
    assert_eq!(c.get("decision.mission_inactive"), Some(&1), "only the enforced one counts as a decision: {c:?}");
    assert_eq!(c.get("decision.allowed"), None, "a would-deny is not an allow: {c:?}");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn outside_the_authority_set_and_token_failures_are_would_denies() {
    let mut e = engine("enforce", false);
    let auth = format!("Bearer {}", token());
    let mut g = Guard::default();
    would_deny(
        e.decide(&req("GET", SHADOW, "/v2/x", &auth), NOW, Attempts::default(), &mut g),
        "insufficient_authority",
        403,
    );
    denied(
        e.decide(&req("GET", ENFORCE, "/v2/x", &auth), NOW, Attempts::default(), &mut g),
        "insufficient_authority",
        403,
    );
    let expired = format!("Bearer {}", token_with(|c| c["exp"] = json!(NOW - 3600)));
    would_deny(
        e.decide(&req("GET", SHADOW, "/v1/a", &expired), NOW, Attempts::default(), &mut g),
        "token_expired",
        401,
    );
    let none = Request { authorization: Authz::Missing, ..req("GET", SHADOW, "/v1/a", "") };
    would_deny(e.decide(&none, NOW, Attempts::default(), &mut g), "no_credentials", 401);
    // An allow in shadow mode is an allow, marked as not enforced.
    let ev = match e.decide(&req("GET", SHADOW, "/v1/a", &auth), NOW, Attempts::default(), &mut g) {
        Outcome::Allow(ev) => ev,
        other => panic!("{other:?}"),
    };
    assert_eq!((ev.decision.as_str(), ev.enforced, ev.would_deny()), ("allow", false, false));
    let c = counters(&mut e);
    for r in ["insufficient_authority", "token_expired", "no_credentials"] {
        assert_eq!(c.get(&format!("shadow.would_deny.{r}")), Some(&1), "{r}: {c:?}");
    }
    assert_eq!(c.get("decision.allowed"), Some(&1));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn pdp_denials_are_would_denies_and_no_511_is_sent() {
    let mut e = engine("enforce", true);
    let auth = format!("Bearer {}", token());
    let mut g = Guard::default();
    // Outside the Authority Set: the PDP is asked in shadow mode exactly as when enforcing.
    let r = req("GET", SHADOW, "/v2/x", &auth);
    assert!(matches!(e.decide(&r, NOW, Attempts { keys: true, status: true }, &mut g), Outcome::Need(Need::Pdp(_))));
    let no = pdp(&json!({"decision": false, "context": {"reason": "weekend"}}));
    would_deny(with_pdp(&mut e, &r, None, &no, &mut g), "pdp_denied", 403);
    denied(with_pdp(&mut e, &req("GET", ENFORCE, "/v2/x", &auth), None, &no, &mut g), "pdp_denied", 403);
    // A requestable denial would be a 511 captive document: in shadow mode nothing is sent, so the
    // agent is never led to create an access request.
    let captive = pdp(&json!({"decision": false, "context": {"evaluation_id": "ev-1", "reason": "egress_not_allowed",
        "access_request": {"endpoint": "https://portal.example/access/v1/requests",
            "expires_at": "2027-01-15T08:10:00Z", "binding_token": "b.t.s"}}}));
    would_deny(with_pdp(&mut e, &r, None, &captive, &mut g), "egress_not_allowed", 511);
    let unavailable = PdpAnswer { status: Some(503), body: Vec::new() };
    would_deny(with_pdp(&mut e, &r, None, &unavailable, &mut g), "pdp_unavailable", 503);
    let c = counters(&mut e);
    for r in ["pdp_denied", "egress_not_allowed", "pdp_unavailable"] {
        assert_eq!(c.get(&format!("shadow.would_deny.{r}")), Some(&1), "{r}: {c:?}");
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_single_use_permit_is_never_consumed_in_shadow_mode() {
    let mut e = engine("enforce", true);
    let auth = format!("Bearer {}", token());
    let mut g = Guard::default();
    let body = br#"{"amount":"1.00"}"#;
    let shadow = req("POST", SHADOW, "/v1/payments", &auth);
    let enforce = req("POST", ENFORCE, "/v1/payments", &auth);
    // The digest is computed in shadow mode too (the same digest: one origin).
    let permit_for = |digest: &str| {
        pdp(&json!({"decision": true, "context": {"evaluation_id": "ev-once",
            "conditions": {"use_limit": 1, "parameter_digest": digest}}}))
    };
    let wrong = permit_for("sha-256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let ev = would_deny(with_pdp(&mut e, &shadow, Some(body), &wrong, &mut g), "parameter_violation", 403);
    let digest = ev.parameter_digest.clone().expect("the digest is in the shadow evidence");
    denied(with_pdp(&mut e, &enforce, Some(body), &wrong, &mut g), "parameter_violation", 403);
    let permit = permit_for(&digest);
    for _ in 0..3 {
        let ev = match with_pdp(&mut e, &shadow, Some(body), &permit, &mut g) {
            Outcome::Allow(ev) => ev,
            other => panic!("{other:?}"),
        };
        assert_eq!((ev.decision.as_str(), ev.enforced), ("allow", false));
    }
    assert_eq!(g.writes, 0, "shadow mode wrote to the single-use store");
    // The permit is still unused: enforcing takes it once, then it is spent.
    assert!(matches!(with_pdp(&mut e, &enforce, Some(body), &permit, &mut g), Outcome::Allow(ref ev) if ev.enforced));
    assert_eq!(g.writes, 1);
    denied(with_pdp(&mut e, &enforce, Some(body), &permit, &mut g), "parameter_violation", 403);
    // Shadow mode sees that it is spent, and still writes nothing.
    would_deny(with_pdp(&mut e, &shadow, Some(body), &permit, &mut g), "parameter_violation", 403);
    assert_eq!(g.writes, 1);
    // A body beyond the limit stays refused in shadow mode.
    let huge = vec![b'x'; 1_048_577];
    denied(with_pdp(&mut e, &shadow, Some(&huge), &permit, &mut g), "body_too_large", 413);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn dpop_proofs_are_not_remembered_in_shadow_mode_but_a_replay_is_a_would_deny() {
    let key = dpop_key();
    let jkt = key.public_jwk(None).thumbprint().unwrap();
    let t = token_with(|c| c["cnf"] = json!({"jkt": jkt}));
    let auth = format!("DPoP {t}");
    let proof_for = |jti: &str| {
        let claims = json!({"jti": jti, "htm": "GET", "htu": format!("{ORIGIN}/v1/a"), "iat": NOW,
                            "ath": b64::encode(Sha256::digest(t.as_bytes()))});
        key.sign_compact(&json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": key.public_jwk(None)}), &claims)
    };
    let mut e = engine("enforce", false);
    let mut g = Guard::default();
    let p = proof_for("p-1");
    let mut dreq = |authority: &'static str, p: &str| -> Outcome {
        let r = Request { dpop: Some(p), dpop_count: 1, ..req("GET", authority, "/v1/a", &auth) };
        e.decide(&r, NOW, Attempts::default(), &mut g)
    };
    // Shadow: the same proof twice is allowed twice, nothing remembered.
    for _ in 0..2 {
        assert!(matches!(dreq(SHADOW, &p), Outcome::Allow(ref ev) if ev.decision.as_str() == "allow" && !ev.enforced));
    }
    // Enforcing remembers it; shadow then sees the replay.
    assert!(matches!(dreq(ENFORCE, &p), Outcome::Allow(ref ev) if ev.enforced));
    would_deny(dreq(SHADOW, &p), "dpop_replay", 401);
    assert_eq!(g.writes, 1);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_filter_mode_applies_where_a_destination_says_nothing() {
    let mut e = engine("shadow", false);
    let auth = format!("Bearer {}", token());
    let mut g = Guard::default();
    // An unlisted destination follows the filter (shadow); the listed enforcing one still refuses.
    let other = Request { authority: "elsewhere.example", ..req("GET", SHADOW, "/v1/a", &auth) };
    would_deny(e.decide(&other, NOW, Attempts::default(), &mut g), "wrong_audience", 401);
    denied(
        e.decide(&req("GET", ENFORCE, "/v2/x", &auth), NOW, Attempts::default(), &mut g),
        "insufficient_authority",
        403,
    );
    // A request naming no valid destination at all is decided in the filter's mode.
    let bad = Request { authority: "bad host", ..req("GET", SHADOW, "/v1/a", &auth) };
    would_deny(e.decide(&bad, NOW, Attempts::default(), &mut g), "malformed_request", 400);
    assert_eq!(e.mode_for(&other), Mode::Shadow);
    assert_eq!(e.mode_for(&req("GET", ENFORCE, "/", &auth)), Mode::Enforce);
    // A refusal of the gateway itself stays enforced.
    let (resp, ev) = e.refuse(Reason::GatewayError, "x", NOW);
    assert_eq!((resp.status, ev.enforced), (503, true));
}

/// The state machine with a shadow-mode engine: a would-deny ends in `Allowed`, never a local reply.
struct Glue {
    engine: Engine,
    guard: Guard,
    replies: Vec<u16>,
    evidence: Vec<Evidence>,
    resumed: usize,
}

impl Host for Glue {
    fn decide(&mut self, head: &Head, body: Option<&[u8]>, pdp: Option<&PdpAnswer>, attempts: Attempts) -> Outcome {
        self.engine.decide_full(&head.request(), &head.extra(body, pdp), NOW, attempts, &mut self.guard)
    }
    fn refuse(&mut self, reason: Reason, detail: &str) -> (missiongate_core::decision::Response, Evidence) {
        self.engine.refuse(reason, detail, NOW)
    }
    fn evidence(&mut self, evidence: &Evidence) {
        self.evidence.push(evidence.clone());
    }
    fn reply(&mut self, response: &missiongate_core::decision::Response) {
        self.replies.push(response.status);
    }
    fn read_body(&mut self, len: usize) -> Option<Vec<u8>> {
        Some(vec![b' '; len])
    }
    fn wait(&mut self, _need: &Need) -> Option<u64> {
        None
    }
    fn dispatch_pdp(&mut self, _callout: &missiongate_core::engine::Callout) -> bool {
        true
    }
    fn resume(&mut self) {
        self.resumed += 1;
    }
    fn max_body(&self) -> usize {
        self.engine.config.max_body_bytes
    }
}

fn head(authority: &str, path: &str, auth: &str, method: &str) -> Head {
    let pairs: Vec<(String, Vec<u8>)> = [
        (":method", method),
        (":scheme", "https"),
        (":authority", authority),
        (":path", path),
        ("authorization", auth),
        ("content-type", "application/json"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
    .collect();
    Head::from_pairs(&pairs)
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_state_machine_forwards_a_would_deny_and_still_refuses_an_oversized_body() {
    let mut engine_ = engine("enforce", true);
    set_state(&mut engine_, "suspended", 2);
    let mut host =
        Glue { engine: engine_, guard: Guard::default(), replies: Vec::new(), evidence: Vec::new(), resumed: 0 };
    let auth = format!("Bearer {}", token());
    // Decided on the headers: continues at once.
    let mut s = Stream::new();
    assert_eq!(s.on_headers(&mut host, head(SHADOW, "/v1/a", &auth, "GET"), true, NOW), Verdict::Continue);
    assert_eq!(*s.state(), State::Allowed);
    assert_eq!(s.on_body(&mut host, 10, true, NOW), Verdict::Continue);
    assert!(host.replies.is_empty());
    assert_eq!(host.evidence.last().map(|e| (e.reason.as_str(), e.enforced)), Some(("mission_inactive", false)));
    // The same request on the enforcing name: a local reply.
    let mut s = Stream::new();
    assert_eq!(s.on_headers(&mut host, head(ENFORCE, "/v1/a", &auth, "GET"), true, NOW), Verdict::Pause);
    assert_eq!((s.state().clone(), host.replies.clone()), (State::Denied, vec![401]));
    // Decided after a PDP answer (outside a client callback): resumed, not answered.
    set_state(&mut host.engine, "active", 3);
    let mut s = Stream::new();
    assert_eq!(s.on_headers(&mut host, head(SHADOW, "/v2/x", &auth, "GET"), true, NOW), Verdict::Pause);
    assert!(matches!(s.state(), State::WaitingPdp { .. }));
    s.on_pdp_answer(&mut host, pdp(&json!({"decision": false})), NOW);
    assert_eq!((s.state().clone(), host.resumed, host.replies.len()), (State::Allowed, 1, 1));
    assert_eq!(host.evidence.last().map(|e| (e.reason.as_str(), e.enforced)), Some(("pdp_denied", false)));
    // A bound call whose body outgrows the limit is refused even in shadow mode.
    let mut s = Stream::new();
    assert_eq!(s.on_headers(&mut host, head(SHADOW, "/v1/payments", &auth, "POST"), false, NOW), Verdict::Pause);
    assert_eq!(s.on_body(&mut host, 2 * 1_048_576, false, NOW), Verdict::Pause);
    assert_eq!((s.state().clone(), host.replies.last().copied()), (State::Denied, Some(413)));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_counter_set_is_bounded_and_covers_every_reason() {
    let names = counter_names();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len(), "a counter is defined twice");
    let constraints = missiongate_core::constraints::COUNTERS.len();
    assert_eq!(names.len(), 2 * ALL_REASONS.len() - 1 + ALL_STATS.len() + constraints);
    for r in ALL_REASONS {
        assert!(names.contains(&format!("decision.{}", r.as_str())));
        let shadow = format!("shadow.would_deny.{}", r.as_str());
        assert_eq!(names.contains(&shadow), r != Reason::Allowed, "{shadow}");
    }
}

/// The README's table of counters lists every counter the filter defines, and no other: it is
/// read from between its markers, so it cannot drift from `ALL_REASONS`, `ALL_STATS` and the
/// constraint counters.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_readme_counter_table_lists_exactly_the_filters_counters() {
    let readme = include_str!("../../../README.md");
    let (_, rest) = readme.split_once("<!-- counters:start").expect("README has no counter table");
    let (table, _) = rest.split_once("<!-- counters:end -->").expect("the counter table is not closed");
    let mut documented = Vec::new();
    for row in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, meaning) = (cells[1], cells[3]);
        assert!(meaning.len() > 10, "a counter without a meaning: {row}");
        for name in names.split(", ") {
            documented.push(name.trim_matches('`').to_owned());
        }
        // The status column agrees with the reason's status.
        if let Some(r) = ALL_REASONS.iter().find(|r| names.starts_with(&format!("`decision.{}`", r.as_str()))) {
            assert_eq!(cells[2], r.status().to_string(), "{row}");
        }
    }
    let mut expected = counter_names();
    expected.sort();
    documented.sort();
    assert_eq!(documented, expected, "README counter table vs the filter's counters");
}
