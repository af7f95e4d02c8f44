//! Shadow mode through the real Envoy (issue 14): one gateway, two names of one origin:
//! `api.partner.example` enforces, `shadow.partner.example` is a destination in `"mode": "shadow"`.
//! The same refusals (a revoked Mission, a call outside the Authority Set, a PDP denial, a digest
//! mismatch) are answered on the enforcing name and forwarded on the shadow one, each with its
//! evidence (`enforced: false`, the would-be reason) and its `shadow.would_deny.<reason>` counter;
//! the shadow requests consume no single-use permit. Envoy's `/stats/prometheus` shows every
//! counter of the filter, read with a Prometheus text-format parser.

use missiongate_tests::envoy::Opts;
use missiongate_tests::http::{assert_denied, Req, Response};
use missiongate_tests::world::WithPdp;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const ENFORCE: &str = "api.partner.example";
const SHADOW: &str = "shadow.partner.example";
/// SPEC §6 vector V2: `POST https://api.partner.example/v1/payments` with this body.
const BODY_A: &str = r#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#;
const BODY_B: &str = r#"{"amount":"4235.00","currency":"USD","to":"acct_123"}"#;
const V2_DIGEST: &str = "sha-256:yLAZIL9150YK2-jnJ3yaKg4ewwCwZbTeuW5yu5qSRZk";

type World = WithPdp;

/// The shipped config, its PDP pointed at the stand-in PDP, plus the shadow destination (same
/// origin, so the same tokens, grants and digests hold on both names).
fn world() -> World {
    let replace = vec![(
            "\"destinations\": [{".to_owned(),
            format!(
                "\"destinations\": [{{ \"authority\": \"{SHADOW}\", \"origin\": \"https://api.partner.example\", \"mode\": \"shadow\", \"operations\": [{{ \"method\": \"POST\", \"path\": \"/v1/payments\", \"action\": \"payments.create\" }}] }}, {{"
            ),
    )];
    WithPdp::start(Opts { replace, ..Opts::default() })
}

fn get(w: &World, host: &str, path: &str, token: &str) -> Response {
    Req::new("GET", path).header("Host", host).bearer(token).send(w.envoy.port)
}

fn post(w: &World, host: &str, token: &str, body: &str) -> Response {
    Req::new("POST", "/v1/payments")
        .header("Host", host)
        .bearer(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send(w.envoy.port)
}

/// The request went through to the upstream: its echo, never a local reply (no 511 either).
fn forwarded(r: &Response) {
    assert_eq!(r.status, 200, "a shadow request was not forwarded: {} {}", r.status, r.text());
    assert_eq!(r.json()["upstream"], "echo", "{}", r.text());
}

/// The filter's evidence records for `mission` (its own log lines), waited for (bounded).
fn evidence(w: &World, mission: &str, at_least: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let logs = w.envoy.logs();
        let found: Vec<Value> = logs
            .lines()
            .filter_map(|l| l.split_once("missiongate evidence ").map(|(_, j)| j))
            .filter_map(|j| serde_json::from_str::<Value>(j.trim()).ok())
            .filter(|v| v["mission_id"] == mission)
            .collect();
        if found.len() >= at_least {
            return found;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no {at_least} evidence records for {mission} in\n{logs}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One shadow record and one enforced record with the same reason and status, for `mission`.
fn check_evidence(w: &World, mission: &str, reason: &str, status: u16) {
    let records = evidence(w, mission, 2);
    let with = |enforced: bool| {
        records
            .iter()
            .find(|v| v["enforced"] == enforced && v["reason"] == reason)
            .unwrap_or_else(|| panic!("no evidence {reason} enforced={enforced} for {mission}: {records:?}"))
    };
    for (enforced, ev) in [(false, with(false)), (true, with(true))] {
        assert_eq!(ev["decision"], "deny", "{ev}");
        assert_eq!(ev["status"], status, "{ev}");
        assert_eq!(ev["destination"], "https://api.partner.example", "{ev}");
        let _ = enforced;
    }
    // The plain-language line says what enforcing would have done.
    let logs = w.envoy.logs();
    assert!(
        logs.lines().any(|l| l.contains(&format!("missiongate shadow: would deny {reason} (status {status})"))
            && l.contains(mission)),
        "no shadow log line for {reason} / {mission}"
    );
}

/// Envoy's `/stats/prometheus`, parsed: counter name -> value (labels folded: the filter's
/// counters carry none).
fn prometheus(w: &World) -> HashMap<String, f64> {
    let text = Req::new("GET", "/stats/prometheus").header("Host", "admin").send(w.envoy.admin).text();
    // Envoy writes an unlabelled sample as `name{} 0` (valid text format: an empty label set); the
    // parser's sample pattern wants at least one label between braces, so the empty set is dropped
    // before parsing. Nothing else is touched.
    let lines = text.lines().map(|l| Ok(l.replacen("{} ", " ", 1)));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let mut out = HashMap::new();
    for s in scrape.samples {
        // The filter's counters must be typed `counter` (`# TYPE ... counter`).
        if let prometheus_parse::Value::Counter(v) = s.value {
            *out.entry(s.metric).or_insert(0.0) += v;
        }
    }
    assert!(!out.is_empty(), "no counter parsed from /stats/prometheus:\n{text}");
    out
}

/// Envoy's Prometheus name of a filter counter: `wasmcustom.missiongate.<name>` in `/stats` is
/// exported as `missiongate_<name>` with every `.` an `_` (Envoy strips its custom-stat prefix and
/// adds no `envoy_` to it).
fn prom_name(counter: &str) -> String {
    format!("missiongate_{}", counter.replace('.', "_"))
}

#[test]
fn shadow_forwards_what_enforcing_refuses_with_evidence_counters_and_no_consumption() {
    let w = world();
    let single_use = |eval: &str, digest: &str| {
        json!({"decision": true, "context": {"evaluation_id": eval,
            "conditions": {"parameter_digest": digest, "use_limit": 1}}})
    };

    // 1. A revoked Mission.
    let revoked = missiongate_tests::rand_id("msn_");
    w.auth.set_mission(&revoked, "revoked");
    let t = w.auth.token(&w.auth.claims(&revoked));
    forwarded(&get(&w, SHADOW, "/v1/revoked-shadow", &t));
    assert_denied(&get(&w, ENFORCE, "/v1/revoked-enforce", &t), 401, "mission_inactive");
    assert_eq!((w.up.seen("/v1/revoked-shadow"), w.up.seen("/v1/revoked-enforce")), (1, 0));
    check_evidence(&w, &revoked, "mission_inactive", 401);

    // 2. A call outside the Authority Set: the PDP answers a requestable denial, a 511 when
    // enforcing; the shadow request is forwarded, so its agent never sees a 511 and creates no
    // access request.
    let (outside, t) = w.auth.active_token();
    let m = outside.clone();
    w.pdp.rule(move |q| {
        (q["context"]["mission"]["id"] == m.as_str()).then(|| {
            (
                Duration::ZERO,
                json!({"decision": false, "context": {"evaluation_id": "ev-outside",
                "reason": "egress_not_allowed", "user_portal_url": "https://portal.example/",
                "access_request": {"endpoint": "https://portal.example/access/v1/requests",
                    "expires_at": missiongate_wire::time::format_rfc3339(missiongate_tests::now() + 600),
                    "binding_token": "b.t.s"}}}),
            )
        })
    });
    let r = get(&w, SHADOW, "/v2/outside-shadow", &t);
    forwarded(&r);
    assert_ne!(r.header("content-type"), Some(missiongate_wire::authzen::CAPTIVE_CONTENT_TYPE));
    let r = get(&w, ENFORCE, "/v2/outside-enforce", &t);
    assert_eq!(r.status, 511, "{}", r.text());
    assert_eq!((w.up.seen("/v2/outside-shadow"), w.up.seen("/v2/outside-enforce")), (1, 0));
    check_evidence(&w, &outside, "egress_not_allowed", 511);

    // 3. A PDP denial.
    let (denied, t) = w.auth.active_token();
    let m = denied.clone();
    w.pdp.rule(move |q| {
        (q["context"]["mission"]["id"] == m.as_str())
            .then(|| (Duration::ZERO, json!({"decision": false, "context": {"reason": "weekend"}})))
    });
    forwarded(&get(&w, SHADOW, "/v2/denied-shadow", &t));
    assert_denied(&get(&w, ENFORCE, "/v2/denied-enforce", &t), 403, "pdp_denied");
    assert_eq!((w.up.seen("/v2/denied-shadow"), w.up.seen("/v2/denied-enforce")), (1, 0));
    check_evidence(&w, &denied, "pdp_denied", 403);

    // 4. A digest mismatch, and 5. no permit consumption: the PDP grants a single-use permit for
    // exactly BODY_A (SPEC §6 V2 digest).
    let (bound, t) = w.auth.active_token();
    let m = bound.clone();
    let permit = single_use("ev-single-use-shadow", V2_DIGEST);
    w.pdp.rule(move |q| (q["context"]["mission"]["id"] == m.as_str()).then(|| (Duration::ZERO, permit.clone())));
    // Another body: the digest differs from the approved one.
    forwarded(&post(&w, SHADOW, &t, BODY_B));
    assert_eq!(w.up.seen("/v1/payments"), 1);
    // The approved body through the shadow name, twice: allowed (not enforced), nothing consumed.
    forwarded(&post(&w, SHADOW, &t, BODY_A));
    forwarded(&post(&w, SHADOW, &t, BODY_A));
    assert_eq!(w.up.seen("/v1/payments"), 3);
    // Enforcing: the mismatch is refused, and the permit is still unused, so it works once.
    assert_denied(&post(&w, ENFORCE, &t, BODY_B), 403, "parameter_violation");
    let r = post(&w, ENFORCE, &t, BODY_A);
    assert_eq!(r.status, 200, "the shadow requests consumed the single-use permit: {}", r.text());
    assert_denied(&post(&w, ENFORCE, &t, BODY_A), 403, "parameter_violation");
    assert_eq!(w.up.seen("/v1/payments"), 4);
    // Shadow now sees it spent: a would-deny, forwarded.
    forwarded(&post(&w, SHADOW, &t, BODY_A));
    assert_eq!(w.up.seen("/v1/payments"), 5);
    let records = evidence(&w, &bound, 7);
    let shadow_pv: Vec<&Value> =
        records.iter().filter(|v| v["enforced"] == false && v["reason"] == "parameter_violation").collect();
    assert_eq!(shadow_pv.len(), 2, "the mismatch and the spent permit: {records:?}");
    assert!(shadow_pv
        .iter()
        .all(|v| v["decision"] == "deny" && v["status"] == 403 && v["parameter_digest"].is_string()));
    let shadow_allows = records.iter().filter(|v| v["enforced"] == false && v["decision"] == "allow").count();
    assert_eq!(shadow_allows, 2, "{records:?}");
    for l in w.envoy.logs().lines() {
        assert!(!l.contains("acct_123"), "a log line holds body bytes: {l}");
    }

    // Counters: one would-deny per shadow refusal, one decision per enforced one.
    let expect = [
        ("shadow.would_deny.mission_inactive", 1),
        ("shadow.would_deny.egress_not_allowed", 1),
        ("shadow.would_deny.pdp_denied", 1),
        ("shadow.would_deny.parameter_violation", 2),
        ("decision.mission_inactive", 1),
        ("decision.egress_not_allowed", 1),
        ("decision.pdp_denied", 1),
        ("decision.parameter_violation", 2),
    ];
    for (name, n) in expect {
        assert_eq!(w.envoy.wait_counter(&format!("wasmcustom.missiongate.{name}"), n), n, "{name}");
    }

    // The same counters, scraped as Prometheus text and parsed.
    let start = Instant::now();
    let prom = loop {
        let p = prometheus(&w);
        if expect.iter().all(|(name, n)| p.get(&prom_name(name)).copied() == Some(*n as f64))
            || start.elapsed() > Duration::from_secs(10)
        {
            break p;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for (name, n) in expect {
        assert_eq!(
            prom.get(&prom_name(name)).copied(),
            Some(n as f64),
            "{} in /stats/prometheus: {:?}",
            prom_name(name),
            prom.iter().filter(|(k, _)| k.contains("missiongate")).collect::<Vec<_>>()
        );
    }
    // Every counter the filter defines is exported, at zero until used.
    for name in missiongate_core::engine::counter_names() {
        assert!(prom.contains_key(&prom_name(&name)), "{} missing from /stats/prometheus", prom_name(&name));
    }
    assert_eq!(prom.get(&prom_name("shadow.would_deny.gateway_error")).copied(), Some(0.0));
    let _ = &w.pdp;
}
