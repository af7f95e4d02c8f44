//! Issue 19 end to end: constraints checked at the edge. The real Envoy with the filter, the real
//! portal (authority issuing Missions whose entries carry `max_amount` and a vendor list, PDP,
//! Access Requests, approver page), a hyper upstream. The shipped config's payments operation gets a
//! `constraints` mapping (and `consequential: false`, so a call inside the Mission goes straight
//! through and only a call outside its constraints is bound and asked about).

use missiongate_tests::envoy::Opts;
use missiongate_tests::http::{assert_denied, path_of, Req, Response};
use missiongate_tests::world::WithPortal;
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::Duration;

const APPROVER: &str = "carol";
const APPROVER_TOKEN: &str = "carol-approver-token-0123456789";

/// The shipped payments operation, as `envoy/missiongate.yaml` writes it.
const SHIPPED_OPERATIONS: &str =
    r#""operations": [{ "method": "POST", "path": "/v1/payments", "action": "payments.create" }]"#;
const CONSTRAINED_OPERATIONS: &str = concat!(
    r#""operations": [{ "method": "POST", "path": "/v1/payments", "action": "payments.create", "consequential": false, "#,
    r#""constraints": { "max_amount": { "amount": "/amount", "currency": "/currency" }, "vendors": { "one_of": "/vendor_id" } } }], "#,
    // The same destination is an MCP server at /mcp: its pay_invoice tool maps the same constraints
    // into the call's arguments.
    r#""mcp": { "path": "/mcp", "tools": [{ "name": "pay_invoice", "action": "invoices.pay", "consequential": false, "#,
    r#""constraints": { "max_amount": { "amount": "/invoice/amount", "currency": "/invoice/currency" }, "vendors": { "one_of": "/vendor_id" } } }] }"#
);

type World = WithPortal;

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let replace = vec![(SHIPPED_OPERATIONS.to_owned(), CONSTRAINED_OPERATIONS.to_owned())];
        WithPortal::start(
            &["--approver", &format!("{APPROVER}:{APPROVER_TOKEN}"), "--status-fresh-seconds", "30"],
            Opts { concurrency: 2, events: true, pdp: true, replace, ..Opts::default() },
        )
    })
}

/// An active Mission whose payments entry carries `constraints`, and a Bearer token for it.
fn mission(constraints: Value) -> String {
    let p = &world().portal;
    let r = p.op(
        "POST",
        "/operator/missions",
        Some(json!({
            "intent": { "goal": "Pay approved vendors", "resources": ["https://api.partner.example"],
                        "expires_at": missiongate_wire::time::format_rfc3339(missiongate_tests::now() + 3600) },
            "authorization_details": [
                { "type": "mission_resource_access", "resource": "https://api.partner.example",
                  "actions": ["payments.create", "invoices.pay"], "constraints": constraints },
                { "type": "mission_resource_access", "resource": "https://api.partner.example/v1",
                  "resource_match": "prefix", "actions": ["http.get"] }
            ],
            "client_id": "agent-7"
        })),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(p.lifecycle(&id, "approve").status, 200);
    p.token(&id, None)
}

fn limits() -> Value {
    json!({"max_amount": {"amount": "500.00", "currency": "USD"}, "vendors": ["acme", "globex"]})
}

/// Each test pays at its own query (still the payments operation), so the upstream's count of
/// one test is not moved by another running at the same time.
fn pay(token: &str, case: &str, body: &str) -> Response {
    Req::new("POST", &format!("/v1/payments?case={case}"))
        .bearer(token)
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send(world().envoy.port)
}

fn counter(name: &str) -> u64 {
    world().envoy.counter(&format!("wasmcustom.missiongate.{name}"))
}

/// Wait (bounded) until a filter counter reaches `at_least`: counters are flushed on the tick.
fn wait_counter(name: &str, at_least: u64) -> u64 {
    world().envoy.wait_counter(&format!("wasmcustom.missiongate.{name}"), at_least)
}

/// The approver page of a denial, read by a signed-in approver over plain HTTP.
fn approver_page(user_portal_url: &str) -> String {
    let p = &world().portal;
    let host = format!("127.0.0.1:{}", p.port);
    let form = Req::new("GET", "/portal/login").header("Host", &host).send(p.port);
    let cookie = |r: &Response, name: &str| {
        r.headers_all("set-cookie")
            .into_iter()
            .find_map(|c| c.strip_prefix(&format!("{name}=")).map(|v| v.split(';').next().unwrap_or("").to_owned()))
            .unwrap_or_else(|| panic!("no {name} cookie: {:?}", r.headers_all("set-cookie")))
    };
    let csrf = cookie(&form, "mg_login");
    let next = path_of(user_portal_url);
    // base64url, a path of ids and an alphanumeric token: nothing to percent-encode.
    let body = format!("csrf={csrf}&next={next}&token={APPROVER_TOKEN}");
    let signed_in = Req::new("POST", "/portal/login")
        .header("Host", &host)
        .header("Cookie", &format!("mg_login={csrf}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send(p.port);
    assert_eq!(signed_in.status, 303, "{}", signed_in.text());
    let session = cookie(&signed_in, "mg_session");
    let page =
        Req::new("GET", &next).header("Host", &host).header("Cookie", &format!("mg_session={session}")).send(p.port);
    assert_eq!(page.status, 200, "{}", page.text());
    page.text()
}

#[test]
fn a_payment_under_the_limit_passes_and_one_over_it_is_approved_once() {
    let w = world();
    let token = mission(limits());
    let satisfied = counter("constraint.max_amount.satisfied");
    let exceeded = counter("constraint.max_amount.exceeded");
    // Under the limit, to a listed vendor: inside the Mission, straight through.
    let under = r#"{"amount":"423.50","currency":"USD","vendor_id":"acme","to":"acct_1"}"#;
    let r = pay(&token, "approve", under);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.up.seen("/v1/payments?case=approve"), 1);
    assert!(wait_counter("constraint.max_amount.satisfied", satisfied + 1) > satisfied);
    // The same amount as an exact JSON number, spelled with an exponent (5E2 = 500: at the bound).
    let r = pay(&token, "approve", r#"{"amount":5E2,"currency":"USD","vendor_id":"globex","to":"acct_1"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.up.seen("/v1/payments?case=approve"), 2);

    // One cent over: outside the entry, so the PDP is asked; the call is bound to its digest.
    let over = r#"{"amount":"500.01","currency":"USD","vendor_id":"acme","to":"acct_1"}"#;
    let denial = pay(&token, "approve", over);
    assert_eq!(denial.status, 511, "{}", denial.text());
    assert_eq!(w.up.seen("/v1/payments?case=approve"), 2);
    let doc = denial.json();
    let action = &doc["access-request"]["action"];
    assert_eq!(action["name"], "payments.create");
    assert!(action["properties"]["parameter_digest"].as_str().is_some_and(|d| d.starts_with("sha-256:")), "{doc}");
    assert_eq!(doc["access-request"]["context"]["reason"], "approval_required");
    // The approver sees which constraint the call exceeds, and by how much.
    let page = approver_page(doc["user-portal-url"].as_str().unwrap());
    assert!(page.contains("this call exceeds <code>max_amount</code> by 0.01 USD"), "{page}");
    assert!(page.contains("requested 500.01 USD, the Mission allows at most 500.00 USD"), "{page}");
    assert!(page.contains("<code>vendors</code>: satisfied"), "{page}");

    // The agent asks with the call's parameters; a person approves.
    let params = json!({"method": "POST", "target": "https://api.partner.example/v1/payments?case=approve",
                        "content_type": "application/json", "body": serde_json::from_str::<Value>(over).unwrap()});
    let r = w.portal.request_access(&doc, &missiongate_tests::rand_id("idem-"), Some(params), "invoice 912 is 500.01");
    assert!(r.status == 201 || r.status == 202, "{}", r.text());
    let task = r.json()["task"]["id"].as_str().unwrap().to_owned();
    let r = w.portal.approve_request(&task, 60);
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    std::thread::sleep(Duration::from_millis(1100)); // the filter remembers a denial for 1 s
                                                     // Exactly that call goes through, once.
    let r = pay(&token, "approve", over);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.up.seen("/v1/payments?case=approve"), 3);
    let r = pay(&token, "approve", over);
    assert!(
        r.status == 403 && r.json()["reason"] == "parameter_violation",
        "a replay of the approved call: {} {}",
        r.status,
        r.text()
    );
    // Another amount over the limit is not covered by that approval.
    let r = pay(&token, "approve", r#"{"amount":"900.00","currency":"USD","vendor_id":"acme","to":"acct_1"}"#);
    assert_eq!(r.status, 511, "{}", r.text());
    assert_eq!(w.up.seen("/v1/payments?case=approve"), 3);
    assert!(wait_counter("constraint.max_amount.exceeded", exceeded + 3) >= exceeded + 3);
}

#[test]
fn a_vendor_outside_the_list_or_another_currency_is_refused() {
    let w = world();
    let token = mission(limits());
    let before = w.up.seen("/v1/payments?case=vendor");
    let violated = counter("constraint.list.violated");
    let r = pay(&token, "vendor", r#"{"amount":"10.00","currency":"USD","vendor_id":"initech","to":"acct_2"}"#);
    assert_eq!(r.status, 511, "{}", r.text());
    assert_eq!(r.json()["access-request"]["context"]["reason"], "approval_required");
    let page = approver_page(r.json()["user-portal-url"].as_str().unwrap());
    assert!(page.contains("violates <code>vendors</code>"), "{page}");
    let r = pay(&token, "vendor", r#"{"amount":"10.00","currency":"EUR","vendor_id":"acme","to":"acct_2"}"#);
    assert_eq!(r.status, 511, "{}", r.text());
    let page = approver_page(r.json()["user-portal-url"].as_str().unwrap());
    assert!(page.contains("is in EUR where <code>max_amount</code> is in USD"), "{page}");
    // An amount that is not a plain decimal string is malformed: outside the entry too.
    let r = pay(&token, "vendor", r#"{"amount":"1e3","currency":"USD","vendor_id":"acme","to":"acct_2"}"#);
    assert_eq!(r.status, 511, "{}", r.text());
    assert_eq!(w.up.seen("/v1/payments?case=vendor"), before, "nothing outside the constraints reached the upstream");
    assert!(wait_counter("constraint.list.violated", violated + 1) > violated);
}

#[test]
fn an_entry_with_an_unmapped_constraint_fails_closed() {
    let w = world();
    // `tenant` has no mapping for the payments operation: the entry permits nothing for it.
    let mut c = limits();
    c["tenant"] = json!("t-1");
    let token = mission(c);
    let before = w.up.seen("/v1/payments?case=unmapped");
    let unrecognized = counter("constraint.unrecognized");
    let r = pay(
        &token,
        "unmapped",
        r#"{"amount":"1.00","currency":"USD","vendor_id":"acme","tenant":"t-1","to":"acct_3"}"#,
    );
    assert_denied(&r, 403, "constraint_unrecognized");
    assert!(r.header("www-authenticate").unwrap().contains("mission_denial=\"constraint_unrecognized\""));
    assert_eq!(w.up.seen("/v1/payments?case=unmapped"), before);
    assert!(wait_counter("constraint.unrecognized", unrecognized + 1) > unrecognized);
    // The portal issues only shapes a gateway can check.
    let r = w.portal.op(
        "POST",
        "/operator/missions",
        Some(json!({
            "intent": { "goal": "x", "resources": ["https://api.partner.example"],
                        "expires_at": missiongate_wire::time::format_rfc3339(missiongate_tests::now() + 3600) },
            "authorization_details": [{ "type": "mission_resource_access", "resource": "https://api.partner.example",
                "actions": ["payments.create"], "constraints": {"max_amount": {"amount": 5.5, "currency": "USD"}} }],
            "client_id": "agent-7"
        })),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("max_amount.amount"), "{}", r.text());
    w.envoy.assert_healthy();
}

/// A `tools/call` of `pay_invoice` through Envoy to the MCP endpoint.
fn pay_invoice(token: &str, arguments: &Value) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": 42, "method": "tools/call",
                      "params": {"name": "pay_invoice", "arguments": arguments}});
    Req::new("POST", "/mcp?case=mcp")
        .bearer(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body.to_string())
        .send(world().envoy.port)
}

#[test]
fn an_mcp_tool_call_is_checked_on_its_arguments() {
    let w = world();
    let token = mission(limits());
    let seen = || w.up.seen("/mcp?case=mcp");
    // Under the limit: forwarded to the MCP server.
    let under = json!({"invoice": {"amount": "423.50", "currency": "USD"}, "vendor_id": "acme"});
    let r = pay_invoice(&token, &under);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(seen(), 1, "{}", r.text());
    // Over it: a JSON-RPC error for the call's id, with the URL elicitation and the access request.
    let over = json!({"invoice": {"amount": "500.01", "currency": "USD"}, "vendor_id": "acme"});
    let r = pay_invoice(&token, &over);
    assert_eq!(r.status, 200, "{}", r.text());
    let err = r.json();
    assert_eq!(err["id"], 42, "{err}");
    assert_eq!(err["error"]["code"], -32042, "{err}");
    assert_eq!(seen(), 1);
    let data = &err["error"]["data"];
    let action = &data["access_request"]["action"];
    assert_eq!(action["properties"]["mcp_tool"], "pay_invoice", "{err}");
    assert!(action["properties"]["parameter_digest"].as_str().is_some_and(|d| d.starts_with("sha-256:")), "{err}");
    let url = data["elicitations"][0]["url"].as_str().unwrap().to_owned();
    let page = approver_page(&url);
    assert!(page.contains("this call exceeds <code>max_amount</code> by 0.01 USD"), "{page}");
    // The agent asks with the call's MCP parameter object; a person approves; exactly that call
    // goes through once.
    let doc = json!({"access-request": data["access_request"]});
    let params = json!({"target": "https://api.partner.example/mcp?case=mcp", "mcp_method": "tools/call",
                        "tool": "pay_invoice", "arguments": over});
    let r = w.portal.request_access(&doc, &missiongate_tests::rand_id("idem-"), Some(params), "invoice 913");
    assert!(r.status == 201 || r.status == 202, "{}", r.text());
    let task = r.json()["task"]["id"].as_str().unwrap().to_owned();
    let r = w.portal.approve_request(&task, 60);
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    std::thread::sleep(Duration::from_millis(1100)); // the filter remembers a denial for 1 s
    let r = pay_invoice(&token, &over);
    assert!(r.status == 200 && r.json().get("error").is_none(), "{}", r.text());
    assert_eq!(seen(), 2);
    let r = pay_invoice(&token, &over);
    assert_eq!(r.json()["error"]["data"]["reason"], "parameter_violation", "{}", r.text());
    // A vendor outside the list is refused as well.
    let r = pay_invoice(&token, &json!({"invoice": {"amount": "1.00", "currency": "USD"}, "vendor_id": "initech"}));
    assert_eq!(r.json()["error"]["code"], -32042, "{}", r.text());
    assert_eq!(seen(), 2);
}
