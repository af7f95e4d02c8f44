//! One path (SPEC §2): the path that is authorised is the path that goes upstream. Every form an
//! upstream could resolve to another resource than the one decided on is refused with
//! `400 ambiguous_path`; a request that differs from a named operation only by case or a trailing
//! slash is that operation; an entry whose `resource` is the destination's origin (or its configured
//! resource identifier) covers the whole destination.
//!
//! Runs natively and as wasm32-unknown-unknown under wasm-bindgen-test (`make test-wasm-core`), like
//! `core.rs`: fixed keys, a constant clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::rc::Rc;

use missiongate_core::engine::{Extra, PdpAnswer};
use missiongate_core::{Attempts, Authz, Config, Engine, Need, Outcome, Request};
use serde_json::{json, Value};

use common::*;

const HOST: &str = "api.partner.example";
const ORIGIN: &str = "https://api.partner.example";
const MISSION: &str = "msn_paths";

fn config(pdp: bool) -> Value {
    let mut c = json!({
        "issuers": [{
            "issuer": AS,
            "jwks": {"keys": [as_key().public_jwk(Some("k1"))]},
            "mission_authority": {
                "status": {"cluster": "authority", "authority": "as.example", "path": "/mission/status"},
                "audience": "https://gateway.example",
                "max_staleness_seconds": 600
            }
        }],
        "destinations": [{
            "authority": HOST,
            "origin": ORIGIN,
            "resource": "https://partner.example/erp",
            "operations": [{"method": "POST", "path": "/v1/payments", "action": "payments.create"}]
        }]
    });
    if pdp {
        c["pdp"] = pdp_config();
    }
    c
}

/// An engine whose Mission is known to be active.
fn engine(pdp: bool) -> Engine {
    let config = Config::parse(config(pdp).to_string().as_bytes()).unwrap();
    let mut e = Engine::new(Rc::new(config), missiongate_core::Seeds { nonce: [9; 32], ids: [8; 32] });
    assert_eq!(set_state(&mut e, MISSION, "active", 1).refetch_keys, None);
    e
}

/// A token for `authorization_details`.
fn bearer(details: Value) -> String {
    let claims = json!({
        "iss": AS, "sub": "user-1", "client_id": "agent-7", "aud": ORIGIN,
        "iat": NOW - 10, "exp": NOW + 600, "jti": "tok-paths",
        "mission": {"id": MISSION, "issuer": AS},
        "authorization_details": details
    });
    format!("Bearer {}", as_key().sign_compact(&json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}), &claims))
}

/// The Authority Set of the issue: a prefix grant on `/v1` and the named operation's exact grant.
fn prefix_and_operation() -> String {
    bearer(json!([
        {"type": "mission_resource_access", "resource": "https://api.partner.example/v1",
         "resource_match": "prefix", "actions": ["http.get"]},
        {"type": "mission_resource_access", "resource": "https://api.partner.example/v1/payments",
         "actions": ["payments.create"]}
    ]))
}

fn request<'a>(method: &'a str, path: &'a str, auth: &'a str) -> Request<'a> {
    Request {
        method,
        scheme: "https",
        authority: HOST,
        path,
        authorization: Authz::One(auth),
        dpop: None,
        dpop_count: 0,
    }
}

fn decide(e: &mut Engine, method: &str, path: &str, auth: &str) -> Outcome {
    e.decide(&request(method, path, auth), NOW, Attempts::default(), &mut MapGuard::default())
}

/// What a row expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Forwarded, with this action id.
    Allow(&'static str),
    /// `400 ambiguous_path`, decided before anything else.
    Ambiguous,
    /// Refused with this reason and status, for this action id.
    Deny(&'static str, u16, &'static str),
}

/// The outcome as (reason, status, action) for comparison.
fn observed(o: &Outcome) -> (String, u16, Option<String>) {
    match o {
        Outcome::Allow(ev) => ("allowed".into(), 200, ev.action.clone()),
        Outcome::Deny(resp, ev) => {
            let body: Value = serde_json::from_slice(&resp.body).unwrap();
            assert_eq!(body["reason"], ev.reason.as_str(), "problem and evidence agree");
            assert_eq!(
                resp.headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str()),
                Some("application/problem+json")
            );
            (ev.reason.as_str().to_owned(), resp.status, ev.action.clone())
        }
        Outcome::Need(n) => panic!("unexpected need {n:?}"),
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn path_forms_under_a_prefix_grant_and_a_named_operation() {
    use Expect::*;
    let auth = prefix_and_operation();
    let rows: &[(&str, &str, Expect)] = &[
        // Plain forms pass.
        ("GET", "/v1", Allow("http.get")),
        ("GET", "/v1/", Allow("http.get")),
        ("GET", "/v1/invoices", Allow("http.get")),
        ("GET", "/v1/invoices?status=open&next=/../admin%2F", Allow("http.get")),
        ("GET", "/v1/caf%C3%A9", Allow("http.get")),
        ("GET", "/v1/a%20b", Allow("http.get")),
        ("GET", "/v1/a:b@c", Allow("http.get")),
        ("POST", "/v1/payments", Allow("payments.create")),
        // Forms upstreams resolve differently: refused, never decided on another path.
        ("GET", "/v1/../admin", Ambiguous),
        ("GET", "/v1/..%2Fadmin", Ambiguous),
        ("GET", "/v1/..%2fadmin", Ambiguous),
        ("GET", "/v1/..%5Cadmin", Ambiguous),
        ("GET", "/v1/..;/admin", Ambiguous),
        ("GET", "/v1\\..\\admin", Ambiguous),
        ("GET", "/v1//../admin", Ambiguous),
        ("GET", "/v1//admin", Ambiguous),
        ("GET", "/v1/%2e%2e/admin", Ambiguous),
        ("GET", "/v1/%2E/x", Ambiguous),
        ("GET", "/v1/.%2e/admin", Ambiguous),
        ("GET", "/v1/./x", Ambiguous),
        ("GET", "/v1;x=1/a", Ambiguous),
        ("GET", "/v1/a%00", Ambiguous),
        ("GET", "/v1/a\u{1}", Ambiguous),
        ("GET", "/v1/caf\u{e9}", Ambiguous),
        ("GET", "/v1/%252e%252e/admin", Ambiguous),
        ("GET", "/v1/%C0%AE%C0%AE/admin", Ambiguous),
        ("GET", "/v1/%zz", Ambiguous),
        ("GET", "/%76%31/invoices", Ambiguous),
        ("POST", "/v1/p%61yments", Ambiguous),
        ("POST", "/v1/payments;x=1", Ambiguous),
        ("POST", "/v1/payments%3B", Ambiguous),
        // Grants stay case-sensitive and exact: denial is the safe side.
        ("GET", "/V1/payments", Deny("insufficient_authority", 403, "http.get")),
        ("GET", "/v1x", Deny("insufficient_authority", 403, "http.get")),
        ("GET", "/admin", Deny("insufficient_authority", 403, "http.get")),
        // The named operation whatever its case or trailing slash, never quietly `http.post`.
        ("POST", "/V1/payments", Deny("insufficient_authority", 403, "payments.create")),
        ("POST", "/v1/payments/", Deny("insufficient_authority", 403, "payments.create")),
        ("POST", "/V1/Payments/", Deny("insufficient_authority", 403, "payments.create")),
        ("POST", "/v1/PAYMENTS", Deny("insufficient_authority", 403, "payments.create")),
        // A method in another case is one method here and another to Envoy or an upstream.
        ("post", "/v1/payments", Deny("malformed_request", 400, "")),
        ("connect", "/v1/payments", Deny("malformed_request", 400, "")),
    ];
    let mut e = engine(false);
    let mut ambiguous = 0;
    for &(method, path, expect) in rows {
        let got = observed(&decide(&mut e, method, path, &auth));
        let want = match expect {
            Allow(action) => ("allowed".to_owned(), 200, Some(action.to_owned())),
            Ambiguous => {
                ambiguous += 1;
                ("ambiguous_path".to_owned(), 400, None)
            }
            // An empty action: refused before an action was named.
            Deny(reason, status, action) => {
                (reason.to_owned(), status, (!action.is_empty()).then(|| action.to_owned()))
            }
        };
        assert_eq!(got, want, "{method} {path:?}");
    }
    let counters: HashMap<String, u64> = e.take_counters().into_iter().collect();
    assert_eq!(counters.get("decision.ambiguous_path"), Some(&ambiguous));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn an_ambiguous_path_is_refused_before_credentials_with_a_plain_problem() {
    let mut e = engine(false);
    let r = Request {
        method: "GET",
        scheme: "https",
        authority: HOST,
        path: "/v1/..%2Fadmin",
        authorization: Authz::Missing,
        dpop: None,
        dpop_count: 0,
    };
    let Outcome::Deny(resp, ev) = e.decide(&r, NOW, Attempts::default(), &mut MapGuard::default()) else {
        panic!("expected a refusal")
    };
    assert_eq!((resp.status, ev.reason.as_str(), ev.destination.as_deref()), (400, "ambiguous_path", Some(ORIGIN)));
    assert!(resp.headers.iter().all(|(k, _)| k != "www-authenticate"), "a 400 has no challenge");
    let body: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(body["type"], "https://missiongate.dev/problems/ambiguous_path");
    assert_eq!(body["detail"], "the request path has an encoded / or \\ (%2F, %5C)");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_wide_http_grant_does_not_turn_a_named_operation_in_other_case_into_http_post() {
    // `http.*` on the whole destination, but `payments.create` not granted: every spelling of the
    // named operation is that operation, outside the Authority Set.
    let auth = bearer(json!([{"type": "mission_resource_access", "resource": ORIGIN, "actions": ["http.*"]}]));
    let mut e = engine(false);
    for path in ["/v1/payments", "/V1/Payments", "/v1/payments/", "/V1/PAYMENTS/"] {
        assert_eq!(
            observed(&decide(&mut e, "POST", path, &auth)),
            ("insufficient_authority".to_owned(), 403, Some("payments.create".to_owned())),
            "{path}"
        );
    }
    // Another path is plain `http.post`, inside `http.*`.
    assert_eq!(observed(&decide(&mut e, "POST", "/v1/paymentsx", &auth)).0, "allowed");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_named_operation_in_other_case_is_bound_with_the_path_it_is_forwarded_with() {
    let auth = prefix_and_operation();
    let body = br#"{"amount":"1.00","currency":"USD"}"#;
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let mut digests = Vec::new();
    for path in ["/v1/payments", "/V1/Payments/"] {
        let mut e = engine(true);
        // Consequential (the operation's method rule), so the body is needed before anything else.
        assert_eq!(decide(&mut e, "POST", path, &auth).need(), Some(Need::Body), "{path}");
        let extra = Extra { headers: &headers, body: Some(body), pdp: None, ..Default::default() };
        let o =
            e.decide_full(&request("POST", path, &auth), &extra, NOW, Attempts::default(), &mut MapGuard::default());
        let Some(Need::Pdp(c)) = o.need() else { panic!("{path}: expected a PDP evaluation, got {o:?}") };
        let eval: Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(eval["action"]["name"], "payments.create", "{path}");
        let digest = eval["action"]["properties"]["parameter_digest"].as_str().unwrap().to_owned();
        // The permit for that digest lets the very same request through.
        let permit = PdpAnswer {
            status: Some(200),
            body: serde_json::to_vec(
                &json!({"decision": true, "context": {"conditions": {"parameter_digest": digest}}}),
            )
            .unwrap(),
        };
        let extra = Extra { headers: &headers, body: Some(body), pdp: Some(&permit), ..Default::default() };
        let o =
            e.decide_full(&request("POST", path, &auth), &extra, NOW, Attempts::default(), &mut MapGuard::default());
        assert!(matches!(o, Outcome::Allow(_)), "{path}: {o:?}");
        digests.push(digest);
    }
    // The digest binds the path as forwarded: another spelling is another call.
    assert_ne!(digests.first(), digests.get(1));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn origin_only_and_configured_resources_cover_the_whole_destination() {
    let mut e = engine(false);
    // The drafts' own shape: `"resource": "https://erp.example.com"`, with or without the slash.
    for resource in
        [ORIGIN, "https://api.partner.example/", "HTTPS://API.partner.example:443", "https://partner.example/erp"]
    {
        let auth = bearer(json!([{"type": "mission_resource_access", "resource": resource, "actions": ["http.get"]}]));
        for path in ["/", "/v1/invoices", "/anything/at/all?q=1"] {
            assert_eq!(observed(&decide(&mut e, "GET", path, &auth)).0, "allowed", "{resource} {path}");
        }
        assert_eq!(observed(&decide(&mut e, "DELETE", "/v1/x", &auth)).0, "insufficient_authority", "{resource}");
        // Still never an ambiguous path.
        assert_eq!(observed(&decide(&mut e, "GET", "/a/../b", &auth)).0, "ambiguous_path", "{resource}");
    }
    // A longer path than the configured identifier or the origin is matched exact/prefix as before.
    for (resource, m, inside, outside) in [
        ("https://api.partner.example/v1/invoices", "exact", "/v1/invoices", "/v1/invoices/x"),
        ("https://api.partner.example/v1", "prefix", "/v1/x", "/v2"),
        ("https://partner.example/erp/x", "exact", "/nowhere", "/erp/x"),
    ] {
        let auth = bearer(json!([{"type": "mission_resource_access", "resource": resource, "resource_match": m,
                                   "actions": ["http.get"]}]));
        let want_inside = if resource.starts_with(ORIGIN) { "allowed" } else { "insufficient_authority" };
        assert_eq!(observed(&decide(&mut e, "GET", inside, &auth)).0, want_inside, "{resource} {inside}");
        assert_eq!(
            observed(&decide(&mut e, "GET", outside, &auth)).0,
            "insufficient_authority",
            "{resource} {outside}"
        );
    }
    // An exact resource with a query is not honoured (SPEC §2: a resource names a path, never a query).
    let auth = bearer(json!([{"type": "mission_resource_access", "resource": "https://api.partner.example/v1?x=1",
                               "actions": ["http.get"]}]));
    assert_eq!(observed(&decide(&mut e, "GET", "/v1?x=1", &auth)).0, "insufficient_authority");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn connect_has_no_path() {
    let auth = bearer(json!([{"type": "mission_resource_access", "resource": ORIGIN, "actions": ["http.connect"]}]));
    let mut e = engine(false);
    for path in ["", "/", "*"] {
        let r = Request {
            method: "CONNECT",
            scheme: "https",
            authority: "api.partner.example:443",
            path,
            authorization: Authz::One(&auth),
            dpop: None,
            dpop_count: 0,
        };
        let o = e.decide(&r, NOW, Attempts::default(), &mut MapGuard::default());
        assert_eq!(observed(&o), ("allowed".to_owned(), 200, Some("http.connect".to_owned())), "{path:?}");
    }
}

trait NeedOf {
    fn need(&self) -> Option<Need>;
}

impl NeedOf for Outcome {
    fn need(&self) -> Option<Need> {
        match self {
            Outcome::Need(n) => Some(n.clone()),
            _ => None,
        }
    }
}
