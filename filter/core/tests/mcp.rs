//! MCP operations (SPEC §7, issue 13): a JSON-RPC request POSTed to an MCP server's endpoint is
//! read from its buffered body, named `mcp.tool.<name>` / the tool's named action /
//! `mcp.method.<method>`, matched against the Mission's authority, bound by the MCP Tool Call Profile
//! (vectors M1 to M4) when it is a consequential `tools/call`, and refused as a JSON-RPC error.
//!
//! Runs natively and as wasm (`make test-wasm-core`), like `core.rs`. No RNG, no clock.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::rc::Rc;

use missiongate_core::decision::{Evidence, Response};
use missiongate_core::engine::{Extra, PdpAnswer};
use missiongate_core::{Attempts, Authz, Config, Engine, Need, Outcome, Request, Seeds};
use missiongate_wire::time;
use serde_json::{json, Value};

use common::*;

const MCP: &str = "mcp.partner.example";
/// The same server under a second name whose client messages pass.
const MCP_PASS: &str = "mcp-pass.partner.example";
/// The same server under a third name with no tool configured: every tools/call is consequential.
const MCP_BARE: &str = "mcp-bare.partner.example";
const ORIGIN: &str = "https://mcp.partner.example";
const MISSION: &str = "msn_mcp";
const M1_DIGEST: &str = "sha-256:VumVMDaxUyrb1aj7IoSEwyzXCgSy83iqcrdTFe30x_c";
const M3_DIGEST: &str = "sha-256:tQBHpn5MxqmrpD2zCdhRlK0fIHiGubfyT82NTr10_mM";
const M4_DIGEST: &str = "sha-256:QOQ38dSi29jvPE02iUwUxQDDAFrQCF9dx2c96RXIcyQ";

fn engine_with(pdp: bool) -> Engine {
    let mcp = json!({"path": "/mcp", "tools": [
        {"name": "pay_invoice", "action": "payments:invoice.pay"},
        {"name": "list_open_invoices", "consequential": false}
    ]});
    let mut pass = mcp.clone();
    pass["client_messages"] = json!("pass");
    let mut c = json!({
        "issuers": [issuer()],
        "destinations": [
            {"authority": MCP, "origin": ORIGIN, "mcp": mcp},
            {"authority": MCP_PASS, "origin": ORIGIN, "mcp": pass},
            {"authority": MCP_BARE, "origin": ORIGIN, "mcp": {}}
        ]
    });
    if pdp {
        c["pdp"] = pdp_config();
    }
    let config = Config::parse(c.to_string().as_bytes()).unwrap();
    let mut e = Engine::new(Rc::new(config), Seeds { nonce: [7; 32], ids: [8; 32] });
    assert_eq!(set_state(&mut e, MISSION, "active", 1).refetch_keys, None);
    e
}

fn token() -> String {
    let c = json!({
        "iss": AS, "sub": "user-1", "client_id": "agent-7", "aud": ORIGIN,
        "iat": NOW - 10, "exp": NOW + 600, "jti": "tok-1",
        "mission": {"id": MISSION, "issuer": AS},
        "authorization_details": [{"type": "mission_resource_access", "resource": ORIGIN,
                                   "actions": ["mcp.method.*", "mcp.tool.list_open_invoices", "mcp.tool.echo"]}]
    });
    as_key().sign_compact(&json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}), &c)
}

type Guard = MapGuard;

fn post<'a>(authority: &'a str, path: &'a str, authorization: &'a str) -> Request<'a> {
    Request {
        method: "POST",
        scheme: "https",
        authority,
        path,
        authorization: Authz::One(authorization),
        dpop: None,
        dpop_count: 0,
    }
}

/// Decide a POST of `body` to the MCP endpoint of `authority` with extra `headers`, as the host
/// does: first without the body (the engine must ask for it), then with it, then (if asked) with
/// the PDP's `answer`. Returns the outcome and the PDP question, if one was asked.
fn call(
    e: &mut Engine,
    authority: &str,
    body: &Value,
    headers: &[(&str, &str)],
    answer: Option<&Value>,
) -> (Outcome, Option<Value>) {
    call_raw(e, authority, "/mcp", body.to_string().as_bytes(), headers, answer)
}

fn call_raw(
    e: &mut Engine,
    authority: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    answer: Option<&Value>,
) -> (Outcome, Option<Value>) {
    call_with(e, &mut Guard::default(), authority, path, body, headers, answer)
}

/// As [`call_raw`], with the replay store shared by every worker.
fn call_with(
    e: &mut Engine,
    g: &mut Guard,
    authority: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    answer: Option<&Value>,
) -> (Outcome, Option<Value>) {
    let auth = format!("Bearer {}", token());
    let r = post(authority, path, &auth);
    let mut h: Vec<(String, String)> = vec![("content-type".into(), "application/json".into())];
    h.extend(headers.iter().map(|(n, v)| (n.to_string(), v.to_string())));
    let tried = Attempts { keys: true, status: true };
    let first = e.decide_full(&r, &Extra { headers: &h, ..Extra::default() }, NOW, tried, g);
    assert!(matches!(first, Outcome::Need(Need::Body)), "a POST to the MCP endpoint needs its body: {first:?}");
    let extra = Extra { headers: &h, body: Some(body), ..Extra::default() };
    match e.decide_full(&r, &extra, NOW, tried, g) {
        Outcome::Need(Need::Pdp(c)) => {
            let question: Value = serde_json::from_slice(&c.body).unwrap();
            let a =
                PdpAnswer { status: Some(200), body: serde_json::to_vec(answer.expect("the PDP was asked")).unwrap() };
            let extra = Extra { headers: &h, body: Some(body), pdp: Some(&a), ..Extra::default() };
            (e.decide_full(&r, &extra, NOW, tried, g), Some(question))
        }
        o => (o, None),
    }
}

fn allowed(o: Outcome) -> Evidence {
    match o {
        Outcome::Allow(ev) => {
            assert!(ev.enforced && ev.decision.as_str() == "allow", "{ev:?}");
            ev
        }
        other => panic!("expected an allow, got {other:?}"),
    }
}

fn refused(o: Outcome) -> (Response, Evidence) {
    match o {
        Outcome::Deny(r, ev) => (r, ev),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A JSON-RPC error for `id`: HTTP 200, application/json. Returns `error`.
fn jsonrpc_error(r: &Response, id: &Value, code: i64) -> Value {
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.headers.iter().any(|(k, v)| k == "content-type" && v == "application/json"), "{r:?}");
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert_eq!(&body["id"], id, "{body}");
    assert!(body.get("result").is_none());
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"].clone()
}

/// A -32001 refusal with the problem details of `reason` / `status`.
fn refused_32001(o: Outcome, id: &Value, reason: &str, status: u16) -> Evidence {
    let (r, ev) = refused(o);
    let error = jsonrpc_error(&r, id, -32001);
    assert_eq!(error["data"]["reason"], reason, "{error}");
    assert_eq!(error["data"]["status"], status, "{error}");
    assert!(error["data"]["detail"].is_string());
    assert_eq!(error["data"]["decision_id"], ev.decision_id);
    assert_eq!((ev.reason.as_str(), ev.status), (reason, status), "evidence keeps the HTTP-level status: {ev:?}");
    ev
}

fn tools_call(id: Value, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
}

fn m1_arguments() -> Value {
    json!({"invoice": "inv_842", "amount": "423.50", "currency": "USD"})
}

fn requestable() -> Value {
    json!({"decision": false, "context": {
        "evaluation_id": "eval_42", "reason": "egress_not_allowed", "next_action": "request",
        "user_portal_url": "https://portal.example/portal/d/7Qx",
        "captive_portal_api": "https://portal.example/captive-portal/api/d/7Qx",
        "access_request": {"endpoint": "https://portal.example/access/v1/requests",
                           "expires_at": "2027-01-15T08:10:00Z", "binding_token": "bt.x.y"}}})
}

fn permit(digest: &str) -> Value {
    json!({"decision": true, "context": {"evaluation_id": "eval_43",
        "conditions": {"parameter_digest": digest, "valid_until": time::format_rfc3339(NOW + 300), "use_limit": 1}}})
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn initialize_and_tools_list_are_methods_granted_by_mcp_method_star() {
    let mut e = engine_with(true);
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let ev = allowed(call(&mut e, MCP, &init, &[], None).0);
    assert_eq!(ev.action.as_deref(), Some("mcp.method.initialize"));
    assert_eq!(ev.mcp_method.as_deref(), Some("initialize"));
    assert_eq!(ev.mcp_tool, None);
    let list = json!({"jsonrpc": "2.0", "id": "a", "method": "tools/list"});
    let ev = allowed(call(&mut e, MCP, &list, &[], None).0);
    assert_eq!(ev.action.as_deref(), Some("mcp.method.tools.list"));
    let json: Value = serde_json::from_str(&ev.to_json()).unwrap();
    assert_eq!(json["mcp_method"], "tools/list", "evidence names the method: {json}");
    // A notification is mcp.method.<method> too.
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let ev = allowed(call(&mut e, MCP, &note, &[], None).0);
    assert_eq!(ev.action.as_deref(), Some("mcp.method.notifications.initialized"));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_granted_tool_that_is_not_consequential_is_allowed_without_the_pdp() {
    let mut e = engine_with(true);
    let ev = allowed(call(&mut e, MCP, &tools_call(json!(3), "list_open_invoices", json!({})), &[], None).0);
    assert_eq!(ev.action.as_deref(), Some("mcp.tool.list_open_invoices"));
    assert_eq!(ev.mcp_tool.as_deref(), Some("list_open_invoices"));
    assert_eq!(ev.parameter_digest, None);
    let json: Value = serde_json::from_str(&ev.to_json()).unwrap();
    assert_eq!(json["mcp_tool"], "list_open_invoices", "evidence names the tool: {json}");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_tools_call_is_consequential_by_default_and_bound_by_the_mcp_profile() {
    let mut e = engine_with(true);
    // `echo` is granted but not configured: consequential, so the PDP is asked with its digest.
    let (o, q) = call(&mut e, MCP, &tools_call(json!(1), "echo", json!({"text": "hi"})), &[], Some(&permit("x")));
    let q = q.expect("a granted tools/call is still decided by the PDP");
    assert_eq!(q["action"]["name"], "mcp.tool.echo");
    assert_eq!(q["action"]["properties"]["mcp_tool"], "echo", "the PDP question names the tool: {q}");
    let (r, ev) = refused(o);
    let error = jsonrpc_error(&r, &json!(1), -32001);
    assert_eq!(error["data"]["reason"], "parameter_violation");
    assert_eq!(ev.parameter_digest.as_deref(), q["action"]["properties"]["parameter_digest"].as_str());
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn vectors_m1_to_m4_are_the_digests_the_pdp_is_asked_about() {
    let mut e = engine_with(true);
    // M1
    let m1 = tools_call(json!(1), "pay_invoice", m1_arguments());
    let (_, q) = call(&mut e, MCP, &m1, &[], Some(&requestable()));
    let q = q.unwrap();
    assert_eq!(q["action"]["name"], "payments:invoice.pay", "the tool's named action");
    assert_eq!(q["action"]["properties"]["parameter_digest"], M1_DIGEST);
    assert_eq!(q["action"]["properties"]["mcp_tool"], "pay_invoice");
    assert_eq!(q["resource"]["id"], ORIGIN);
    // M2: reordered arguments, another id, a _meta: the same digest.
    let m2 = r#"{"params":{"_meta":{"progressToken":7},"arguments":{"currency":"USD","amount":"423.50","invoice":"inv_842"},"name":"pay_invoice"},"method":"tools/call","id":"other","jsonrpc":"2.0"}"#;
    let (_, q) = call_raw(&mut e, MCP, "/mcp", m2.as_bytes(), &[], Some(&requestable()));
    assert_eq!(q.unwrap()["action"]["properties"]["parameter_digest"], M1_DIGEST);
    // M3: another amount differs.
    let mut args = m1_arguments();
    args["amount"] = json!("4235.00");
    let (_, q) = call(&mut e, MCP, &tools_call(json!(1), "pay_invoice", args), &[], Some(&requestable()));
    assert_eq!(q.unwrap()["action"]["properties"]["parameter_digest"], M3_DIGEST);
    // M4: no arguments at all, on the server where the tool is not configured (so consequential);
    // `arguments: {}` is the same call.
    let m4 = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "list_open_invoices"}});
    let (_, q) = call(&mut e, MCP_BARE, &m4, &[], Some(&requestable()));
    let q = q.expect("an unconfigured tool is consequential");
    assert_eq!(q["action"]["name"], "mcp.tool.list_open_invoices");
    assert_eq!(q["action"]["properties"]["parameter_digest"], M4_DIGEST);
    let (_, q) =
        call(&mut e, MCP_BARE, &tools_call(json!(4), "list_open_invoices", json!({})), &[], Some(&requestable()));
    assert_eq!(q.unwrap()["action"]["properties"]["parameter_digest"], M4_DIGEST);
    // On the server that configures it as not consequential, the same call is unbound.
    let (o, q) = call(&mut e, MCP, &m4, &[], None);
    assert!(q.is_none());
    assert_eq!(allowed(o).parameter_digest, None);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_tool_outside_the_mission_is_a_url_elicitation_with_the_access_request() {
    let mut e = engine_with(true);
    let (o, _) =
        call(&mut e, MCP, &tools_call(json!("call-9"), "pay_invoice", m1_arguments()), &[], Some(&requestable()));
    let (r, ev) = refused(o);
    assert_eq!((ev.reason.as_str(), ev.status), ("egress_not_allowed", 511));
    assert_eq!(ev.mcp_tool.as_deref(), Some("pay_invoice"));
    assert_eq!(ev.evaluation_id.as_deref(), Some("eval_42"));
    assert!(r.headers.iter().any(|(k, v)| k == "cache-control" && v == "no-store"));
    assert!(
        r.headers.iter().any(|(k, v)| k == "link"
            && v == "<https://portal.example/captive-portal/api/d/7Qx>; rel=\"captive-portal-api\""),
        "the per-denial Captive Portal API, as on the 511: {r:?}"
    );
    let error = jsonrpc_error(&r, &json!("call-9"), -32042);
    let elicitations = error["data"]["elicitations"].as_array().unwrap();
    assert_eq!(elicitations.len(), 1);
    let el = &elicitations[0];
    assert_eq!(el["mode"], "url");
    assert_eq!(el["url"], "https://portal.example/portal/d/7Qx");
    assert_eq!(el["elicitationId"], "eval_42");
    assert!(el["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    // The same access-request document as the 511's `access-request` member.
    let ar = &error["data"]["access_request"];
    assert_eq!(ar["action"]["name"], "payments:invoice.pay");
    assert_eq!(ar["action"]["properties"]["parameter_digest"], M1_DIGEST);
    assert_eq!(ar["action"]["properties"]["mcp_tool"], "pay_invoice");
    assert_eq!(ar["resource"], json!({"type": "egress", "id": ORIGIN}));
    assert_eq!(ar["subject"]["id"], "agent-7");
    assert_eq!(ar["context"]["evaluation_id"], "eval_42");
    assert_eq!(ar["context"]["mission"]["id"], MISSION);
    assert_eq!(ar["context"]["access_request"]["binding_token"], "bt.x.y");
    assert_eq!(ar["context"]["access_request"]["endpoint"], "https://portal.example/access/v1/requests");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_approved_call_goes_through_once_and_a_changed_argument_is_a_parameter_violation() {
    let mut e = engine_with(true);
    let mut g = Guard::default();
    let m1 = tools_call(json!(5), "pay_invoice", m1_arguments()).to_string();
    let ev = allowed(call_with(&mut e, &mut g, MCP, "/mcp", m1.as_bytes(), &[], Some(&permit(M1_DIGEST))).0);
    assert_eq!(ev.parameter_digest.as_deref(), Some(M1_DIGEST));
    assert_eq!(ev.action.as_deref(), Some("payments:invoice.pay"));
    // The same call again, under another id: the single-use permit is spent.
    let again = tools_call(json!("retry"), "pay_invoice", m1_arguments()).to_string();
    let o = call_with(&mut e, &mut g, MCP, "/mcp", again.as_bytes(), &[], Some(&permit(M1_DIGEST))).0;
    refused_32001(o, &json!("retry"), "parameter_violation", 403);
    let mut args = m1_arguments();
    args["amount"] = json!("4235.00");
    let (o, _) = call(&mut e, MCP, &tools_call(json!(6), "pay_invoice", args), &[], Some(&permit(M1_DIGEST)));
    let ev = refused_32001(o, &json!(6), "parameter_violation", 403);
    assert_eq!(ev.parameter_digest.as_deref(), Some(M3_DIGEST));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn batches_bad_tool_names_and_malformed_messages_are_refused_with_400() {
    let mut e = engine_with(true);
    // A batch: no single id to answer, so a plain 400.
    let batch = json!([{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}]);
    let (r, ev) = refused(call(&mut e, MCP, &batch, &[], None).0);
    assert_eq!((r.status, ev.reason.as_str()), (400, "mcp_batch_refused"));
    let p: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(p["reason"], "mcp_batch_refused");
    // A tool name outside the grammar: a JSON-RPC error for its id.
    for bad in ["pay invoice", "", "x/y", &"t".repeat(129)] {
        let o = call(&mut e, MCP, &tools_call(json!(2), bad, json!({})), &[], None).0;
        refused_32001(o, &json!(2), "mcp_tool_name_invalid", 400);
    }
    allowed(call(&mut e, MCP, &tools_call(json!(2), &"t".repeat(128), json!({})), &[], Some(&permit_any())).0);
    // Not JSON at all: a plain 400.
    let (r, ev) = refused(call_raw(&mut e, MCP, "/mcp", b"{not json", &[], None).0);
    assert_eq!((r.status, ev.reason.as_str()), (400, "mcp_malformed"));
    let (r, _) = refused(call_raw(&mut e, MCP, "/mcp", b"", &[], None).0);
    assert_eq!(r.status, 400);
    // JSON, but not a JSON-RPC message; an id is echoed when it could be read.
    let o = call(&mut e, MCP, &json!({"jsonrpc": "1.0", "id": 8, "method": "tools/list"}), &[], None).0;
    refused_32001(o, &json!(8), "mcp_malformed", 400);
    let o = call(
        &mut e,
        MCP,
        &json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "x", "arguments": [1]}}),
        &[],
        None,
    )
    .0;
    refused_32001(o, &json!(8), "mcp_malformed", 400);
    let (r, _) = refused(call(&mut e, MCP, &json!({"jsonrpc": "2.0", "id": [1], "method": "tools/list"}), &[], None).0);
    assert_eq!(r.status, 400);
    // Not I-JSON: the upstream could read another number than the one bound.
    let (r, ev) = refused(call_raw(&mut e, MCP, "/mcp", br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay_invoice","arguments":{"amount":1e400}}}"#, &[], None).0);
    assert_eq!((r.status, ev.reason.as_str()), (400, "body_not_canonicalizable"));
}

fn permit_any() -> Value {
    json!({"decision": true, "context": {"evaluation_id": "eval_44"}})
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn mcp_method_and_mcp_name_headers_must_equal_the_body() {
    let mut e = engine_with(true);
    let body = tools_call(json!(7), "list_open_invoices", json!({}));
    allowed(call(&mut e, MCP, &body, &[("mcp-method", "tools/call"), ("mcp-name", "list_open_invoices")], None).0);
    for headers in [
        vec![("mcp-method", "tools/list")],
        vec![("mcp-name", "pay_invoice")],
        vec![("mcp-method", "tools/call"), ("mcp-name", "list_open_invoices"), ("mcp-name", "list_open_invoices")],
    ] {
        let o = call(&mut e, MCP, &body, &headers, None).0;
        refused_32001(o, &json!(7), "mcp_header_mismatch", 400);
    }
    let list = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"});
    allowed(call(&mut e, MCP, &list, &[("mcp-method", "tools/list")], None).0);
    refused_32001(call(&mut e, MCP, &list, &[("mcp-name", "x")], None).0, &json!(1), "mcp_header_mismatch", 400);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn client_messages_are_decided_or_passed_as_configured() {
    let mut e = engine_with(false);
    let response = json!({"jsonrpc": "2.0", "id": 3, "result": {}});
    // Decided: a response is mcp.response, which the Mission does not grant; no id to answer.
    let (r, ev) = refused(call(&mut e, MCP, &response, &[], None).0);
    assert_eq!(
        (r.status, ev.reason.as_str(), ev.action.as_deref()),
        (403, "insufficient_authority", Some("mcp.response"))
    );
    let ev = allowed(call(&mut e, MCP_PASS, &response, &[], None).0);
    assert_eq!(ev.action.as_deref(), Some("mcp.response"));
    let note = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 1}});
    allowed(call(&mut e, MCP_PASS, &note, &[], None).0);
    // Pass covers client messages only, never a request.
    let o = call(&mut e, MCP_PASS, &tools_call(json!(1), "pay_invoice", json!({})), &[], None).0;
    refused_32001(o, &json!(1), "insufficient_authority", 403);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn http_challenges_stay_http_and_other_paths_stay_http_operations() {
    let mut e = engine_with(true);
    // No credentials: the 401 challenge, before the body is read.
    let r = Request { authorization: Authz::Missing, ..post(MCP, "/mcp", "") };
    let (resp, _) = refused(e.decide(&r, NOW, Attempts::default(), &mut Guard::default()));
    assert_eq!(resp.status, 401);
    assert!(resp.headers.iter().any(|(k, _)| k == "www-authenticate"));
    // GET of the endpoint (the SSE stream) is an HTTP operation, decided without a body.
    let auth = format!("Bearer {}", token());
    let get = Request { method: "GET", ..post(MCP, "/mcp", &auth) };
    let o = e.decide(&get, NOW, Attempts { keys: true, status: true }, &mut Guard::default());
    let q = match o {
        Outcome::Need(Need::Pdp(c)) => serde_json::from_slice::<Value>(&c.body).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(q["action"]["name"], "http.get");
    // A POST elsewhere on the server is http.post.
    let other = post(MCP, "/other", &auth);
    let o = e.decide(&other, NOW, Attempts { keys: true, status: true }, &mut Guard::default());
    assert!(matches!(o, Outcome::Need(Need::Body)), "http.post is consequential as usual: {o:?}");
    // The endpoint is matched as named operation paths are.
    let ev = allowed(call_raw(&mut e, MCP, "/MCP/", br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, &[], None).0);
    assert_eq!(ev.action.as_deref(), Some("mcp.method.ping"));
}
