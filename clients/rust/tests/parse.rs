//! The client recognises exactly the requestable denials of SPEC sections 4 and 7, and builds the
//! parameter objects whose digests are the SPEC's vectors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use missiongate_client::{denial_from_captive, denial_from_jsonrpc, parameter_object, retry_after, Denial};
use serde_json::{json, Value};
use std::time::Duration;

fn access_request(digest: Option<&str>) -> Value {
    let mut action = json!({"name": "mcp.tool.pay_invoice"});
    if let Some(d) = digest {
        action["properties"] = json!({"parameter_digest": d});
    }
    json!({
        "subject": {"type": "agent", "id": "agent-7"},
        "resource": {"type": "egress", "id": "https://mcp.partner.example"},
        "action": action,
        "context": {"evaluation_id": "eval_1", "reason": "egress_not_allowed",
                    "mission": {"id": "msn_1", "issuer": "https://as.example"},
                    "access_request": {"endpoint": "https://portal.example/access/v1/requests",
                                       "expires_at": "2026-11-22T14:25:00Z", "binding_token": "a.b.c"}}
    })
}

fn mcp_error(code: i64, ar: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"jsonrpc": "2.0", "id": 7, "error": {"code": code, "message": "approval needed",
        "data": {"elicitations": [{"mode": "url", "url": "https://portal.example/portal/d/x", "message": "m",
                                   "elicitationId": "eval_1"}],
                 "access_request": ar}}}))
    .unwrap()
}

#[test]
fn the_mcp_url_elicitation_error_is_a_denial() {
    let d = denial_from_jsonrpc(200, Some("application/json"), &mcp_error(-32042, access_request(None))).unwrap();
    assert_eq!(d.evaluation_id, "eval_1");
    assert_eq!(d.endpoint, "https://portal.example/access/v1/requests");
    assert_eq!(d.binding_token, "a.b.c");
    assert_eq!(d.user_portal_url.as_deref(), Some("https://portal.example/portal/d/x"));
    assert!(d.mcp);
    // Not a denial: another code, no access request, an SSE answer, an HTTP error status.
    assert!(denial_from_jsonrpc(200, Some("application/json"), &mcp_error(-32001, access_request(None))).is_none());
    assert!(denial_from_jsonrpc(200, Some("application/json"), &mcp_error(-32042, Value::Null)).is_none());
    let body = mcp_error(-32042, access_request(None));
    assert!(denial_from_jsonrpc(200, Some("text/event-stream"), &body).is_none());
    assert!(denial_from_jsonrpc(500, Some("application/json"), &body).is_none());
}

#[test]
fn the_captive_document_is_a_denial() {
    let doc = json!({"captive": true, "user-portal-url": "https://portal.example/portal/d/x",
                     "access-request": access_request(None)});
    let body = serde_json::to_vec(&doc).unwrap();
    let d = denial_from_captive(511, Some("application/captive+json"), &body).unwrap();
    assert_eq!(d.evaluation_id, "eval_1");
    assert!(!d.mcp);
    assert!(denial_from_captive(403, Some("application/captive+json"), &body).is_none());
    assert!(denial_from_captive(511, Some("application/json"), &body).is_none());
    let not_captive = serde_json::to_vec(&json!({"captive": false, "seconds-remaining": 3})).unwrap();
    assert!(denial_from_captive(511, Some("application/captive+json"), &not_captive).is_none());
}

fn denial(digest: &str, mcp: bool, resource: &str) -> Denial {
    let mut ar = access_request(Some(digest));
    ar["resource"]["id"] = json!(resource);
    Denial {
        evaluation_id: "eval_1".into(),
        access_request: ar,
        endpoint: "https://portal.example/access/v1/requests".into(),
        binding_token: "a.b.c".into(),
        expires_at: "2026-11-22T14:25:00Z".into(),
        user_portal_url: None,
        mcp,
    }
}

#[test]
fn parameter_objects_digest_to_the_spec_vectors() {
    let client = reqwest::Client::new();
    // M1: tools/call pay_invoice on https://mcp.partner.example/mcp (id and _meta not bound).
    let m1 = r#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"pay_invoice","_meta":{"p":1},
                "arguments":{"invoice":"inv_842","amount":"423.50","currency":"USD"}}}"#;
    let req = client
        .post("http://mcp.partner.example/mcp")
        .header("content-type", "application/json")
        .body(m1)
        .build()
        .unwrap();
    let d = denial("sha-256:VumVMDaxUyrb1aj7IoSEwyzXCgSy83iqcrdTFe30x_c", true, "https://mcp.partner.example");
    let p = parameter_object(&d, &req, &[]).unwrap();
    assert_eq!(
        missiongate_wire::digest::prefixed_digest_of_canonical(&p),
        "sha-256:VumVMDaxUyrb1aj7IoSEwyzXCgSy83iqcrdTFe30x_c"
    );
    // V2: POST application/json to https://api.partner.example/v1/payments.
    let v2 = r#"{ "to" : "acct_123", "currency":"USD", "amount":"423.50"}"#;
    let req = client
        .post("http://api.partner.example/v1/payments")
        .header("content-type", "Application/JSON; charset=utf-8")
        .body(v2)
        .build()
        .unwrap();
    let d = denial("sha-256:yLAZIL9150YK2-jnJ3yaKg4ewwCwZbTeuW5yu5qSRZk", false, "https://api.partner.example");
    let p = parameter_object(&d, &req, &[]).unwrap();
    assert_eq!(
        missiongate_wire::digest::prefixed_digest_of_canonical(&p),
        "sha-256:yLAZIL9150YK2-jnJ3yaKg4ewwCwZbTeuW5yu5qSRZk"
    );
    // V7: a text/plain body is bound by its hash.
    let req = client
        .post("http://api.partner.example/upload")
        .header("content-type", "text/plain")
        .body("hello, partner")
        .build()
        .unwrap();
    let p = parameter_object(&d, &req, &[]).unwrap();
    assert_eq!(
        missiongate_wire::digest::prefixed_digest_of_canonical(&p),
        "sha-256:Vg-10WbE6ITI1jhkU1Xd2_G32jL6sbxiQFQldE9WdYI"
    );
    // A denial without a digest binds no parameters.
    let mut unbound = d.clone();
    unbound.access_request["action"] = json!({"name": "http.get"});
    assert!(parameter_object(&unbound, &req, &[]).is_none());
}

#[test]
fn retry_after_takes_seconds_and_dates() {
    assert_eq!(retry_after(Some("5")), Some(Duration::from_secs(5)));
    assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), Some(Duration::ZERO));
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(30));
    assert!(retry_after(Some(&later)).is_some_and(|d| d > Duration::from_secs(25)));
    assert_eq!(retry_after(Some("soon")), None);
    assert_eq!(retry_after(None), None);
}
