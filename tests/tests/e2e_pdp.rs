//! The PDP path end to end (issues 4 and 5): the real Envoy with the filter, a hyper stand-in
//! authority, and a hyper stand-in AuthZEN PDP whose answers and failures the tests control.
//! What the real portal answers is covered by `e2e_captive.rs`; here the PDP is made to misbehave
//! and to grant permits with every kind of condition, so each of the filter's answers is seen.

use missiongate_tests::authority::Mode;
use missiongate_tests::envoy::Opts;
use missiongate_tests::http::{assert_denied, Req, Response};
use missiongate_tests::world::WithPdp;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// SPEC §6 vector V2: `POST https://api.partner.example/v1/payments` with this body.
const BODY_A: &str = r#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#;
const V2_DIGEST: &str = "sha-256:yLAZIL9150YK2-jnJ3yaKg4ewwCwZbTeuW5yu5qSRZk";

type World = WithPdp;

/// Envoy with the shipped config, its PDP pointed at the stand-in PDP (its own cluster, so the PDP
/// can fail while the authority stays up).
fn world() -> World {
    WithPdp::start(Opts::default())
}

fn get(w: &World, path: &str, token: &str) -> Response {
    Req::new("GET", path).bearer(token).send(w.envoy.port)
}

#[test]
fn pdp_down_slow_or_garbage_is_503_with_retry_after_and_recovers() {
    let w = world();
    // Outside the Authority Set (only /v1 is granted): the PDP decides. A permit goes through.
    let (_, token) = w.auth.active_token();
    assert_eq!(get(&w, "/v2/ok", &token).status, 200);
    assert_eq!(w.up.seen("/v2/ok"), 1);

    for mode in ["closed", "503", "slow", "garbage"] {
        match mode {
            "closed" => w.pdp.close(),
            "503" => w.pdp.set_mode(Mode::Unavailable),
            "slow" => w.pdp.set_mode(Mode::Slow(Duration::from_millis(2500))), // past the 1 s timeout
            _ => w.pdp.set_mode(Mode::Garbage),
        }
        // A Mission the decision cache has not seen, so the PDP must be asked.
        let (_, t) = w.auth.active_token();
        let path = format!("/v2/{mode}");
        let started = Instant::now();
        let r = get(&w, &path, &t);
        assert_denied(&r, 503, "pdp_unavailable");
        assert!(r.header("retry-after").is_some_and(|v| v.parse::<u32>().is_ok()), "{mode}: no Retry-After");
        assert!(started.elapsed() < Duration::from_secs(4), "{mode}: took {:?}", started.elapsed());
        assert_eq!(w.up.seen(&path), 0, "{mode}: an undecided request reached the upstream");
        // Failures are not cached: once the PDP is back, the same request goes through.
        if mode == "closed" {
            w.pdp.open();
        }
        w.pdp.set_mode(Mode::Normal);
        if mode == "slow" {
            std::thread::sleep(Duration::from_millis(1600)); // let the slow answer drain
        }
        let r = get(&w, &path, &t);
        assert_eq!(r.status, 200, "{mode}: no recovery: {}", r.text());
    }
    assert!(w.envoy.wait_counter("wasmcustom.missiongate.decision.pdp_unavailable", 4) >= 4);
}

#[test]
fn the_evaluation_request_has_spec_shape() {
    let w = world();
    let (mission, token) = w.auth.active_token();
    assert_eq!(get(&w, "/v2/shape?x=1", &token).status, 200);
    let reqs = w.pdp.requests();
    let e = reqs.last().expect("the PDP was asked");
    // SPEC §4, field by field.
    assert_eq!(e["subject"]["type"], "agent", "{e}");
    assert_eq!(e["subject"]["id"], "agent-7");
    assert_eq!(e["subject"]["properties"]["sub"], "user-1");
    assert_eq!(e["subject"]["properties"]["iss"], w.auth.issuer.as_str());
    assert_eq!(e["resource"], json!({"type": "egress", "id": "https://api.partner.example"}));
    assert_eq!(e["action"]["name"], "http.get");
    assert!(e["action"]["properties"].get("parameter_digest").is_none(), "a GET is not bound: {e}");
    assert_eq!(e["context"]["mission"]["id"], mission.as_str());
    assert_eq!(e["context"]["mission"]["issuer"], w.auth.issuer.as_str());
    assert_eq!(e["context"]["mission"]["authority_hash"], "sha-256:l3KvZ4mP5x0wQrR6tY2nD9bM7sX1cF8gH2vJ4kE5pNQ");
}

#[test]
fn permit_conditions_are_enforced_and_unknown_ones_deny() {
    let w = world();
    let permit = |conditions: Value| json!({"decision": true, "context": {"evaluation_id": missiongate_tests::rand_id("eval_"), "conditions": conditions}});
    let past = missiongate_wire::time::format_rfc3339(missiongate_tests::now() - 5);
    let future = missiongate_wire::time::format_rfc3339(missiongate_tests::now() + 600);
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("valid_until in the future", permit(json!({"valid_until": future})), 200, "allowed"),
        ("valid_until passed", permit(json!({"valid_until": past})), 403, "parameter_violation"),
        ("valid_until not a date", permit(json!({"valid_until": "tomorrow"})), 403, "pdp_denied"),
        ("unknown condition", permit(json!({"geo_fence": "eu"})), 403, "pdp_denied"),
        ("use_limit 2", permit(json!({"use_limit": 2})), 403, "pdp_denied"),
        ("digest for another call", permit(json!({"parameter_digest": V2_DIGEST})), 403, "parameter_violation"),
        ("plain refusal", json!({"decision": false, "context": {"reason": "not on weekends"}}), 403, "pdp_denied"),
    ];
    for (name, answer, status, reason) in cases {
        w.pdp.answer(answer);
        let (_, t) = w.auth.active_token();
        let path = format!("/v2/{}", name.replace(' ', "-"));
        let r = get(&w, &path, &t);
        if status == 200 {
            assert_eq!(r.status, 200, "{name}: {}", r.text());
            assert_eq!(w.up.seen(&path), 1, "{name}");
            continue;
        }
        assert_denied(&r, status, reason);
        let www = r.header("www-authenticate").unwrap_or_default();
        assert!(www.starts_with("Bearer ") && www.contains("error=\"insufficient_scope\""), "{name}: {www}");
        assert_eq!(w.up.seen(&path), 0, "{name}: refused but forwarded");
    }

    // use_limit 1: the first use goes through, the second is refused, even though the PDP keeps
    // answering with the same permit (single-use permits are never cached, the use is remembered).
    w.pdp.answer(permit(
        json!({"use_limit": 1, "valid_until": missiongate_wire::time::format_rfc3339(missiongate_tests::now() + 600)}),
    ));
    let (_, t) = w.auth.active_token();
    assert_eq!(get(&w, "/v2/once", &t).status, 200);
    assert_denied(&get(&w, "/v2/once", &t), 403, "parameter_violation");
    assert_eq!(w.up.seen("/v2/once"), 1);
}

#[test]
fn a_bound_call_is_evaluated_by_its_digest_and_its_evidence_never_holds_the_body() {
    let w = world();
    let (mission, token) = w.auth.active_token();
    w.pdp.answer(json!({"decision": true, "context": {"evaluation_id": "eval_bound_1",
        "conditions": {"parameter_digest": V2_DIGEST, "use_limit": 1}}}));
    let post = |body: &str| {
        Req::new("POST", "/v1/payments")
            .bearer(&token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send(w.envoy.port)
    };
    let r = post(BODY_A);
    assert_eq!(r.status, 200, "{}", r.text());
    // The PDP was asked with SPEC §6's V2 digest for exactly this call.
    let reqs = w.pdp.requests();
    let e = reqs.last().unwrap();
    assert_eq!(e["action"]["name"], "payments.create");
    assert_eq!(e["action"]["properties"]["parameter_digest"], V2_DIGEST, "{e}");
    // The PDP answers the same permit for a changed amount: its digest condition refuses it.
    let r = post(r#"{"amount":"4235.00","currency":"USD","to":"acct_123"}"#);
    assert_denied(&r, 403, "parameter_violation");
    assert_eq!(w.up.seen("/v1/payments"), 1);

    // Evidence: the access log line and the filter's log line carry the digest, never the body.
    let start = Instant::now();
    loop {
        let logs = w.envoy.logs();
        let access: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("POST api.partner.example/v1/payments") && l.contains(&mission))
            .collect();
        if access.len() >= 2 {
            assert!(
                access
                    .iter()
                    .any(|l| l.contains(" 200 ") && l.contains(&format!("\"parameter_digest\":\"{V2_DIGEST}\""))),
                "{access:?}"
            );
            assert!(
                access.iter().any(|l| l.contains(" 403 ") && l.contains("\"reason\":\"parameter_violation\"")),
                "{access:?}"
            );
            let own: Vec<&str> =
                logs.lines().filter(|l| l.contains("missiongate evidence {") && l.contains(&mission)).collect();
            assert!(own.iter().any(|l| l.contains(V2_DIGEST) && l.contains("eval_bound_1")), "{own:?}");
            for l in logs.lines() {
                assert!(
                    !l.contains("acct_123") && !l.contains("423.50") && !l.contains("4235.00"),
                    "a log line holds body bytes: {l}"
                );
            }
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no evidence for {mission} in\n{logs}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A raw (not JSON) body is hashed as its chunks arrive (issue 16): 1 MiB sent in 64 KiB chunks binds
/// to the digest of exactly those bytes, and the same body with its last byte changed does not.
#[test]
fn a_large_raw_body_sent_in_chunks_binds_to_its_digest() {
    let w = world();
    let (_, token) = w.auth.active_token();
    let target = "https://api.partner.example/v1/payments";
    let body: Vec<u8> =
        (0..1024 * 1024u32).map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789\n"[(i % 37) as usize]).collect();
    let (want, _) =
        missiongate_wire::digest::parameter_digest("POST", target, None, Some((Some("text/plain"), &body))).unwrap();
    w.pdp.answer(json!({"decision": true, "context": {"evaluation_id": "eval_raw_1",
        "conditions": {"parameter_digest": want, "use_limit": 1}}}));
    let post = |body: &[u8]| {
        Req::new("POST", "/v1/payments")
            .bearer(&token)
            .header("content-type", "text/plain; charset=utf-8")
            .chunked(body.chunks(64 * 1024).map(<[u8]>::to_vec).collect())
            .send(w.envoy.port)
    };
    let stat = |name: &str| format!("wasmcustom.missiongate.{name}");
    let defined = |name: &str| w.envoy.stats().lines().any(|l| l.starts_with(&format!("{}: ", stat(name))));
    assert!(defined("body.hash_fallback") && defined("decision.allowed"), "{}", w.envoy.stats());
    let fallbacks = w.envoy.counter(&stat("body.hash_fallback"));
    let allowed = w.envoy.counter(&stat("decision.allowed"));
    let r = post(&body);
    assert_eq!(r.status, 200, "{}", r.text());
    // Exactly the bytes that were digested reached the upstream.
    let sent = missiongate_wire::b64::encode(<sha2::Sha256 as sha2::Digest>::digest(&body));
    assert_eq!(r.json()["body_sha256"], sent.as_str());
    assert_eq!(r.json()["body_len"], body.len());
    let reqs = w.pdp.requests();
    let e = reqs.last().unwrap();
    assert_eq!(e["action"]["properties"]["parameter_digest"], want.as_str(), "{e}");
    assert_eq!(w.up.seen("/v1/payments"), 1);
    // Hashed chunk by chunk: the filter never fell back to one whole read at end of stream. A
    // fallback is counted before the decision, so it is flushed no later than the allow; the pause
    // lets the flush that carried the allow finish.
    assert!(w.envoy.wait_counter(&stat("decision.allowed"), allowed + 1) > allowed);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.envoy.counter(&stat("body.hash_fallback")), fallbacks, "{}", w.envoy.logs());

    // The last byte changed: another digest, refused by the permit's condition.
    let mut changed = body.clone();
    if let Some(last) = changed.last_mut() {
        *last = b'!';
    }
    assert_denied(&post(&changed), 403, "parameter_violation");
    let reqs = w.pdp.requests();
    let e = reqs.last().unwrap();
    assert_ne!(e["action"]["properties"]["parameter_digest"], want.as_str(), "{e}");
    assert_eq!(w.up.seen("/v1/payments"), 1);
}
