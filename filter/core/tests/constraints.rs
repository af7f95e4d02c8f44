//! Constraints checked at the edge (SPEC §2, issue 19): the decimal table, lists, tenant, an
//! unmapped key, and the engine's use of them (body read, a violation outside the entry, the PDP's
//! context, evidence and counters).
//!
//! Every test runs natively and compiled to wasm32-unknown-unknown under wasm-bindgen-test
//! (`make test-wasm-core`). No RNG and no clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

mod common;

use std::collections::HashMap;
use std::rc::Rc;

use missiongate_core::constraints::{check, parse_mappings, Mapping, Outcome};
use missiongate_core::decision::Evidence;
use missiongate_core::engine::{Extra, PdpAnswer};
use missiongate_core::{Attempts, Authz, Config, Engine, Need, Outcome as Decided, Request};
use missiongate_wire::constraints::{parse_constraint, Constraint};
use missiongate_wire::jcs::parse_ijson;
use serde_json::{json, Value};

use common::*;

const HOST: &str = "api.partner.example";
const ORIGIN: &str = "https://api.partner.example";
const MISSION: &str = "msn_7Qx";

// ------------------------------------------------------------------------- the checks --------

fn max_amount() -> Constraint {
    parse_constraint("max_amount", &json!({"amount": "500.00", "currency": "USD"})).unwrap()
}

fn amount_mapping(amount: &str) -> Mapping {
    Mapping::MaxAmount { amount: amount.into(), currency: "/currency".into() }
}

/// The outcome of `max_amount` 500.00 USD for a body given as I-JSON text.
fn amount_outcome(body: &str, pointer: &str) -> (Outcome, Option<String>) {
    let v = parse_ijson(body.as_bytes()).unwrap();
    let c = check("max_amount", &max_amount(), Some(&amount_mapping(pointer)), Some(&v));
    (c.outcome, c.amount.and_then(|a| a.excess))
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_decimal_table() {
    let long = format!("\"{}\"", "1".repeat(41));
    let long_fraction = format!("\"0.{}\"", "0".repeat(39));
    let table: Vec<(String, Outcome)> = vec![
        (r#"{"amount": "423.50", "currency": "USD"}"#.into(), Outcome::Satisfied),
        (r#"{"amount": "500.00", "currency": "USD"}"#.into(), Outcome::Satisfied),
        (r#"{"amount": "500", "currency": "USD"}"#.into(), Outcome::Satisfied),
        (r#"{"amount": "500.01", "currency": "USD"}"#.into(), Outcome::Exceeded),
        (r#"{"amount": "500.0000000000000000001", "currency": "USD"}"#.into(), Outcome::Exceeded),
        (r#"{"amount": "1e3", "currency": "USD"}"#.into(), Outcome::Malformed),
        (r#"{"amount": "1E2", "currency": "USD"}"#.into(), Outcome::Malformed),
        (r#"{"amount": " 1", "currency": "USD"}"#.into(), Outcome::Malformed),
        (r#"{"amount": "-1", "currency": "USD"}"#.into(), Outcome::Malformed),
        (r#"{"amount": "0100", "currency": "USD"}"#.into(), Outcome::Malformed),
        (r#"{"amount": 5E2, "currency": "USD"}"#.into(), Outcome::Satisfied),
        (r#"{"amount": 500.00, "currency": "USD"}"#.into(), Outcome::Satisfied),
        (r#"{"amount": 423.5, "currency": "USD"}"#.into(), Outcome::Satisfied),
        (r#"{"amount": 5.0001E2, "currency": "USD"}"#.into(), Outcome::Exceeded),
        (r#"{"amount": 1e21, "currency": "USD"}"#.into(), Outcome::Exceeded),
        (r#"{"amount": -1, "currency": "USD"}"#.into(), Outcome::Malformed),
        (r#"{"amount": "423.50", "currency": "EUR"}"#.into(), Outcome::CurrencyMismatch),
        (r#"{"amount": "423.50", "currency": "usd"}"#.into(), Outcome::CurrencyMismatch),
        (r#"{"amount": "423.50"}"#.into(), Outcome::Missing),
        (r#"{"currency": "USD"}"#.into(), Outcome::Missing),
        (r#"{"amount": "423.50", "currency": 840}"#.into(), Outcome::Malformed),
        (r#"{"amount": ["423.50"], "currency": "USD"}"#.into(), Outcome::Malformed),
        (r#"{"amount": null, "currency": "USD"}"#.into(), Outcome::Malformed),
        (r#"{"amount": true, "currency": "USD"}"#.into(), Outcome::Malformed),
        (format!(r#"{{"amount": {long}, "currency": "USD"}}"#), Outcome::Malformed),
        (format!(r#"{{"amount": {long_fraction}, "currency": "USD"}}"#), Outcome::Malformed),
    ];
    for (body, want) in &table {
        assert_eq!(amount_outcome(body, "/amount").0, *want, "{body}");
    }
    // By how much, exactly.
    assert_eq!(amount_outcome(r#"{"amount": "500.01", "currency": "USD"}"#, "/amount").1.as_deref(), Some("0.01"));
    assert_eq!(amount_outcome(r#"{"amount": 6E2, "currency": "USD"}"#, "/amount").1.as_deref(), Some("100"));
    // A pointer into an array reaches the element; a pointer at the array itself is malformed.
    let lines = r#"{"lines": [{"amount": "10.00"}, {"amount": "900.00"}], "currency": "USD"}"#;
    assert_eq!(amount_outcome(lines, "/lines/0/amount").0, Outcome::Satisfied);
    assert_eq!(amount_outcome(lines, "/lines/1/amount").0, Outcome::Exceeded);
    assert_eq!(amount_outcome(lines, "/lines/2/amount").0, Outcome::Missing);
    assert_eq!(amount_outcome(lines, "/lines/-/amount").0, Outcome::Missing);
    assert_eq!(amount_outcome(lines, "/lines").0, Outcome::Malformed);
    // No parameters at all (no JSON body): missing.
    let c = check("max_amount", &max_amount(), Some(&amount_mapping("/amount")), None);
    assert_eq!(c.outcome, Outcome::Missing);
    // The bound as an integer in the token.
    let int = parse_constraint("max_amount", &json!({"amount": 500, "currency": "USD"})).unwrap();
    let v = parse_ijson(br#"{"amount": "500.00", "currency": "USD"}"#).unwrap();
    assert_eq!(check("max_amount", &int, Some(&amount_mapping("/amount")), Some(&v)).outcome, Outcome::Satisfied);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn lists_tenant_and_unmapped_keys() {
    let vendors = parse_constraint("vendors", &json!(["acme", "globex"])).unwrap();
    let tenant = parse_constraint("tenant", &json!("t-1")).unwrap();
    let one_of = Mapping::OneOf("/vendor/id".into());
    let equals = Mapping::Equals("/tenant".into());
    for (body, want) in [
        (json!({"vendor": {"id": "acme"}}), Outcome::Satisfied),
        (json!({"vendor": {"id": "globex"}}), Outcome::Satisfied),
        (json!({"vendor": {"id": "initech"}}), Outcome::Violated),
        (json!({"vendor": {"id": "ACME"}}), Outcome::Violated),
        (json!({"vendor": {"id": 1}}), Outcome::Malformed),
        (json!({"vendor": {"id": ["acme"]}}), Outcome::Malformed),
        (json!({"vendor": {}}), Outcome::Missing),
    ] {
        assert_eq!(check("vendors", &vendors, Some(&one_of), Some(&body)).outcome, want, "{body}");
    }
    for (body, want) in [
        (json!({"tenant": "t-1"}), Outcome::Satisfied),
        (json!({"tenant": "t-2"}), Outcome::Violated),
        (json!({"tenant": "t-1 "}), Outcome::Violated),
        (json!({"tenant": {"id": "t-1"}}), Outcome::Malformed),
        (json!({}), Outcome::Missing),
    ] {
        assert_eq!(check("tenant", &tenant, Some(&equals), Some(&body)).outcome, want, "{body}");
    }
    // No mapping, or a mapping of another kind: unrecognized (the entry permits nothing).
    let body = json!({"tenant": "t-1", "vendor": {"id": "acme"}});
    assert_eq!(check("vendors", &vendors, None, Some(&body)).outcome, Outcome::Unrecognized);
    assert_eq!(check("tenant", &tenant, Some(&one_of), Some(&body)).outcome, Outcome::Unrecognized);
    // The mappings parse as the config does.
    let m =
        parse_mappings(&json!({"vendors": {"one_of": "/vendor/id"}, "tenant": {"equals": "/tenant"}}), "c").unwrap();
    assert_eq!(m.len(), 2);
    assert_eq!(parse_mappings(&json!({"vendors": {"equals": "/v"}}), "c").unwrap_err().field, "c.vendors.one_of");
}

// ------------------------------------------------------------------------- the engine --------

fn config(pdp: bool) -> Value {
    let mut c = json!({
        "issuers": [issuer()],
        "destinations": [{
            "authority": HOST,
            "origin": ORIGIN,
            "operations": [
                {"method": "POST", "path": "/v1/payments", "action": "payments.create", "consequential": false,
                 "constraints": {"max_amount": {"amount": "/amount", "currency": "/currency"},
                                 "vendors": {"one_of": "/vendor_id"}}},
                {"method": "POST", "path": "/v1/transfers", "action": "transfers.create", "consequential": false,
                 "constraints": {"max_amount": {"amount": "/amount", "currency": "/currency"}}}
            ]
        }, {
            "authority": "mcp.partner.example",
            "origin": "https://mcp.partner.example",
            "mcp": {"path": "/mcp", "tools": [
                {"name": "pay_invoice", "action": "payments.pay", "consequential": false,
                 "constraints": {"max_amount": {"amount": "/invoice/amount", "currency": "/invoice/currency"}}},
                {"name": "refund", "action": "payments.refund", "consequential": false}
            ]}
        }]
    });
    if pdp {
        c["pdp"] = pdp_config();
    }
    c
}

fn engine(pdp: bool) -> Engine {
    let config = Config::parse(config(pdp).to_string().as_bytes()).unwrap();
    let mut e = Engine::new(Rc::new(config), missiongate_core::Seeds { nonce: [7; 32], ids: [8; 32] });
    set_state(&mut e, MISSION, "active", 1);
    e
}

fn token(entries: Value) -> String {
    let claims = json!({"iss": AS, "sub": "user-1", "client_id": "agent-7", "aud": ORIGIN, "iat": NOW - 10,
        "exp": NOW + 600, "jti": "tok-1", "mission": {"id": MISSION, "issuer": AS}, "authorization_details": entries});
    format!("Bearer {}", as_key().sign_compact(&json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}), &claims))
}

fn pay_entry(constraints: Value) -> Value {
    json!({"type": "mission_resource_access", "resource": ORIGIN, "actions": ["payments.create", "transfers.create"],
           "constraints": constraints})
}

fn limits() -> Value {
    json!({"max_amount": {"amount": "500.00", "currency": "USD"}, "vendors": ["acme"]})
}

fn post<'a>(path: &'a str, auth: &'a str) -> Request<'a> {
    Request {
        method: "POST",
        scheme: "https",
        authority: HOST,
        path,
        authorization: Authz::One(auth),
        dpop: None,
        dpop_count: 0,
    }
}

fn decide(e: &mut Engine, r: &Request<'_>, body: Option<&str>, pdp: Option<&Value>) -> Decided {
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let answer = pdp.map(|a| PdpAnswer { status: Some(200), body: serde_json::to_vec(a).unwrap() });
    let extra = Extra { headers: &headers, body: body.map(str::as_bytes), pdp: answer.as_ref(), ..Default::default() };
    e.decide_full(r, &extra, NOW, Attempts { keys: true, status: true }, &mut MapGuard::default())
}

fn allowed(o: Decided) -> Evidence {
    match o {
        Decided::Allow(ev) => ev,
        other => panic!("expected Allow, got {other:?}"),
    }
}

fn denied(o: Decided, reason: &str, status: u16) -> Evidence {
    match o {
        Decided::Deny(resp, ev) => {
            assert_eq!((ev.reason.as_str(), resp.status), (reason, status), "{}", String::from_utf8_lossy(&resp.body));
            ev
        }
        other => panic!("expected Deny({reason}), got {other:?}"),
    }
}

fn outcomes(ev: &Evidence) -> Vec<(String, &'static str)> {
    ev.constraints.iter().map(|c| (c.name.clone(), c.outcome)).collect()
}

fn counter(e: &mut Engine) -> HashMap<String, u64> {
    e.take_counters().into_iter().collect()
}

const UNDER: &str = r#"{"amount": "423.50", "currency": "USD", "vendor_id": "acme"}"#;
const OVER: &str = r#"{"amount": "500.01", "currency": "USD", "vendor_id": "acme"}"#;
const OTHER_VENDOR: &str = r#"{"amount": "10.00", "currency": "USD", "vendor_id": "initech"}"#;

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_constrained_operation_waits_for_its_body_and_is_checked() {
    let mut e = engine(false);
    let auth = token(json!([pay_entry(limits())]));
    let r = post("/v1/payments", &auth);
    // A non-consequential operation still waits for its body: an entry's constraints map onto it.
    assert!(matches!(decide(&mut e, &r, None, None), Decided::Need(Need::Body)));
    let ev = allowed(decide(&mut e, &r, Some(UNDER), None));
    assert_eq!(
        outcomes(&ev),
        vec![("max_amount".into(), "satisfied"), ("vendors".into(), "satisfied")],
        "evidence names the constraints checked"
    );
    assert!(!ev.to_json().contains("423.50") && !ev.to_json().contains("acme"), "never raw parameters");
    // Over the limit, without a PDP: outside the entry, 403.
    let ev = denied(decide(&mut e, &r, Some(OVER), None), "insufficient_authority", 403);
    assert_eq!(outcomes(&ev), vec![("max_amount".into(), "exceeded"), ("vendors".into(), "satisfied")]);
    let ev = denied(decide(&mut e, &r, Some(OTHER_VENDOR), None), "insufficient_authority", 403);
    assert_eq!(outcomes(&ev)[1], ("vendors".into(), "violated"));
    // A body that is not JSON (or not of a JSON media type): every constraint missing.
    let headers = vec![("content-type".to_owned(), "text/plain".to_owned())];
    let extra = Extra { headers: &headers, body: Some(UNDER.as_bytes()), ..Default::default() };
    let o = e.decide_full(&r, &extra, NOW, Attempts { keys: true, status: true }, &mut MapGuard::default());
    let ev = denied(o, "insufficient_authority", 403);
    assert_eq!(outcomes(&ev), vec![("max_amount".into(), "missing"), ("vendors".into(), "missing")]);
    // Counted once per decision, by kind and outcome.
    let c = counter(&mut e);
    assert_eq!(c.get("constraint.max_amount.satisfied"), Some(&2));
    assert_eq!(c.get("constraint.max_amount.exceeded"), Some(&1));
    assert_eq!(c.get("constraint.max_amount.missing"), Some(&1));
    assert_eq!(c.get("constraint.list.satisfied"), Some(&2));
    assert_eq!(c.get("constraint.list.violated"), Some(&1));
    assert_eq!(c.get("constraint.list.missing"), Some(&1));
    for name in c.keys() {
        assert!(missiongate_core::engine::counter_names().contains(name), "{name} is a defined counter");
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_violation_is_outside_the_entry_only() {
    let mut e = engine(false);
    // Another entry may permit what the first one's constraint refuses.
    let wider = pay_entry(json!({"max_amount": {"amount": "1000", "currency": "USD"}, "vendors": ["acme"]}));
    let auth = token(json!([pay_entry(limits()), wider]));
    let ev = allowed(decide(&mut e, &post("/v1/payments", &auth), Some(OVER), None));
    assert_eq!(outcomes(&ev)[0], ("max_amount".into(), "exceeded"));
    assert_eq!(outcomes(&ev)[2], ("max_amount".into(), "satisfied"));
    // An entry without constraints needs no body at all.
    let plain = json!({"type": "mission_resource_access", "resource": ORIGIN, "actions": ["payments.create"]});
    let auth = token(json!([pay_entry(limits()), plain]));
    assert!(allowed(decide(&mut e, &post("/v1/payments", &auth), None, None)).constraints.is_empty());
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn an_unmapped_key_fails_closed() {
    let mut e = engine(true);
    // `vendors` is not mapped for transfers: the entry permits nothing there, whatever the body.
    let auth = token(json!([pay_entry(limits())]));
    let r = post("/v1/transfers", &auth);
    let ev = denied(decide(&mut e, &r, None, None), "constraint_unrecognized", 403);
    assert_eq!(outcomes(&ev), vec![("vendors".into(), "unrecognized")]);
    // Nor on a path that is no named operation, nor with a shape no gateway checks.
    let auth = token(json!([pay_entry(json!({"max_amount": {"amount": "1e3", "currency": "USD"}}))]));
    let ev = denied(decide(&mut e, &post("/v1/payments", &auth), None, None), "constraint_unrecognized", 403);
    assert_eq!(outcomes(&ev), vec![("*".into(), "unrecognized")]);
    assert_eq!(counter(&mut e).get("constraint.unrecognized"), Some(&2));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn an_over_limit_call_asks_the_pdp_bound_to_its_digest() {
    let mut e = engine(true);
    let auth = token(json!([pay_entry(limits())]));
    let r = post("/v1/payments", &auth);
    // Under the limit, inside the entry: no PDP.
    allowed(decide(&mut e, &r, Some(UNDER), None));
    let Decided::Need(Need::Pdp(c)) = decide(&mut e, &r, Some(OVER), None) else { panic!("expected the PDP") };
    let q: Value = serde_json::from_slice(&c.body).unwrap();
    let digest = q["action"]["properties"]["parameter_digest"].as_str().unwrap().to_owned();
    assert!(digest.starts_with("sha-256:"), "{q}");
    assert_eq!(
        q["context"]["constraints"],
        json!([
            {"name": "max_amount", "kind": "max_amount", "outcome": "exceeded", "limit": "500.00", "currency": "USD",
             "requested": "500.01", "requested_currency": "USD", "excess": "0.01"},
            {"name": "vendors", "kind": "list", "outcome": "satisfied"}
        ])
    );
    // A permit for exactly this call lets it through; for another call it does not.
    let permit = json!({"decision": true, "context": {"evaluation_id": "perm_1",
        "conditions": {"parameter_digest": digest, "use_limit": 1}}});
    let ev = allowed(decide(&mut e, &r, Some(OVER), Some(&permit)));
    assert_eq!(ev.parameter_digest.as_deref(), Some(digest.as_str()));
    let more = r#"{"amount": "900.00", "currency": "USD", "vendor_id": "acme"}"#;
    denied(decide(&mut e, &r, Some(more), Some(&permit)), "parameter_violation", 403);
}

// ------------------------------------------------------------------------- MCP tool calls ----

fn mcp_call(e: &mut Engine, auth: &str, tool: &str, arguments: Value, pdp: Option<&Value>) -> Decided {
    let body =
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
            .to_string();
    let r = Request {
        method: "POST",
        scheme: "https",
        authority: "mcp.partner.example",
        path: "/mcp",
        authorization: Authz::One(auth),
        dpop: None,
        dpop_count: 0,
    };
    decide(e, &r, Some(&body), pdp)
}

fn mcp_token() -> String {
    let entry = json!({"type": "mission_resource_access", "resource": "https://mcp.partner.example",
        "actions": ["payments.pay", "payments.refund"],
        "constraints": {"max_amount": {"amount": "500.00", "currency": "USD"}}});
    let claims = json!({"iss": AS, "sub": "user-1", "client_id": "agent-7", "aud": "https://mcp.partner.example",
        "iat": NOW - 10, "exp": NOW + 600, "jti": "tok-2", "mission": {"id": MISSION, "issuer": AS},
        "authorization_details": [entry]});
    format!("Bearer {}", as_key().sign_compact(&json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}), &claims))
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn an_mcp_tool_call_is_checked_on_its_arguments() {
    let mut e = engine(true);
    let auth = mcp_token();
    let ev =
        allowed(mcp_call(&mut e, &auth, "pay_invoice", json!({"invoice": {"amount": 423.5, "currency": "USD"}}), None));
    assert_eq!(outcomes(&ev), vec![("max_amount".into(), "satisfied")]);
    assert_eq!(ev.mcp_tool.as_deref(), Some("pay_invoice"));
    // Over the bound: the PDP is asked, the call bound by the MCP Tool Call Profile.
    let over = json!({"invoice": {"amount": "500.01", "currency": "USD"}});
    let Decided::Need(Need::Pdp(c)) = mcp_call(&mut e, &auth, "pay_invoice", over.clone(), None) else {
        panic!("expected the PDP")
    };
    let q: Value = serde_json::from_slice(&c.body).unwrap();
    let digest = q["action"]["properties"]["parameter_digest"].as_str().unwrap().to_owned();
    let (want, _) = missiongate_wire::digest::mcp_tool_call_digest(
        "https://mcp.partner.example/mcp",
        "tools/call",
        "pay_invoice",
        Some(&over),
    );
    assert_eq!(digest, want);
    assert_eq!(q["action"]["properties"]["mcp_tool"], "pay_invoice");
    assert_eq!(q["context"]["constraints"][0]["outcome"], "exceeded");
    assert_eq!(q["context"]["constraints"][0]["excess"], "0.01");
    // No arguments at all: missing, so outside the entry too.
    let Decided::Need(Need::Pdp(c)) = mcp_call(&mut e, &auth, "pay_invoice", json!({}), None) else {
        panic!("expected the PDP")
    };
    let q: Value = serde_json::from_slice(&c.body).unwrap();
    assert_eq!(q["context"]["constraints"][0]["outcome"], "missing");
    // A tool that maps no constraint: the entry permits nothing for it.
    let ev = match mcp_call(&mut e, &auth, "refund", json!({"amount": "1.00"}), None) {
        Decided::Deny(_, ev) => ev,
        other => panic!("expected a denial, got {other:?}"),
    };
    assert_eq!(ev.reason.as_str(), "constraint_unrecognized");
}
