//! End-to-end tests of the PDP, the Access Request Service, the Captive Portal API and the approver
//! portal over HTTP: the real binary, a real SQLite file, real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use missiongate_wire::b64;
use missiongate_wire::jose::{Compact, SigningKey};
use missiongate_wire::time::parse_rfc3339;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn authzen_metadata_batch_and_request_id() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &["--public-url", "https://pdp.test"]).await;
    let (status, _, meta) = p.get(&p.url("/.well-known/authzen-configuration")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(meta["policy_decision_point"], "https://pdp.test");
    assert_eq!(meta["access_evaluation_endpoint"], "https://pdp.test/access/v1/evaluation");
    assert_eq!(meta["access_evaluations_endpoint"], "https://pdp.test/access/v1/evaluations");
    assert_eq!(meta["access_request_endpoint"], "https://pdp.test/access/v1/requests");
    assert_eq!(meta["jwks_uri"], "https://pdp.test/jwks.json");
    let caps: Vec<&str> = meta["capabilities"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(caps.contains(&"urn:openid:authzen:capability:access-request"));
    assert!(caps.contains(&"urn:openid:authzen:capability:access-request:captive-portal-egress"));

    let m = p.active_mission().await;
    // Batch: top-level defaults, per-item overrides, answers in order, per-item errors.
    let base = eval_req(&m, PARTNER, "http.get", None);
    let batch = json!({
        "subject": base["subject"], "context": base["context"],
        "resource": {"type": "egress", "id": "https://one.example"},
        "action": {"name": "http.get"},
        "evaluations": [
            {},
            {"resource": {"type": "egress", "id": "https://two.example"}},
            {"action": {"name": "http.post"}},
            {"resource": {"type": "egress"}},
            {"context": {}}
        ]
    });
    let resp = p
        .http
        .post(p.url("/access/v1/evaluations"))
        .bearer_auth(GW)
        .header("X-Request-ID", "req-42")
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-request-id"], "req-42");
    let v: Value = resp.json().await.unwrap();
    let items = v["evaluations"].as_array().unwrap();
    assert_eq!(items.len(), 5, "{v}");
    assert_eq!(items[0]["decision"], false);
    assert_eq!(items[0]["context"]["reason"], "egress_not_allowed");
    assert!(items[0]["context"]["user_portal_url"].as_str().unwrap().starts_with("https://pdp.test/portal/d/dn_"));
    assert_ne!(items[0]["context"]["evaluation_id"], items[1]["context"]["evaluation_id"]);
    assert_eq!(items[2]["context"]["next_action"], "request");
    assert_eq!(items[3]["context"]["error"]["status"], 400, "{}", items[3]);
    assert_eq!(items[4]["context"]["reason"], "mission_required");
    assert!(items[4]["context"].get("access_request").is_none());
    // deny_on_first_deny stops at the first deny.
    let mut b2 = batch.clone();
    b2["options"] = json!({"evaluations_semantic": "deny_on_first_deny"});
    let (_, _, v) = p.post_json("/access/v1/evaluations", &b2).await;
    assert_eq!(v["evaluations"].as_array().unwrap().len(), 1);
    // No `evaluations`: a single evaluation.
    let (_, _, v) = p.post_json("/access/v1/evaluations", &base).await;
    assert_eq!(v["decision"], false);
    // Garbage is a 400, not a decision.
    let resp = p
        .http
        .post(p.url("/access/v1/evaluation"))
        .bearer_auth(GW)
        .header("content-type", "application/json")
        .body("{\"subject\":")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let mut bad = base.clone();
    bad["action"]["properties"]["parameter_digest"] = json!("md5:xyz");
    let (status, _, _) = p.post_json("/access/v1/evaluation", &bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn pdp_credential_guards_evaluation() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &["--pdp-credential", "gateway-credential-0123456789"]).await;
    let m = p.active_mission().await;
    let body = eval_req(&m, PARTNER, "http.get", None);
    let resp = p.http.post(p.url("/access/v1/evaluation")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = p.http.post(p.url("/access/v1/evaluation")).bearer_auth(OP).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "the operator token is not the PDP credential");
    let resp = p
        .http
        .post(p.url("/access/v1/evaluation"))
        .bearer_auth("gateway-credential-0123456789")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // The rest stays public.
    let (status, _, _) = p.get(&p.url("/.well-known/authzen-configuration")).await;
    assert_eq!(status, StatusCode::OK);
}

/// A non-loopback address of this host, if it has one (the source of a UDP "connection").
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("192.0.2.1:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn dev_trust_loopback_lets_loopback_callers_in_without_a_credential_and_no_one_else() {
    let (_dir, db) = temp_db();
    let p = Portal::try_start(&db, "0.0.0.0:0", None, &["--dev-trust-loopback"]).await.unwrap();
    let port = p.url.rsplit(':').next().unwrap().to_owned();
    let m = p.active_mission().await;
    let body = eval_req(&m, PARTNER, "http.get", None);
    let local = p.http.post(format!("http://127.0.0.1:{port}/access/v1/evaluation")).json(&body).send().await.unwrap();
    assert_eq!(local.status(), StatusCode::OK);
    match non_loopback_ip() {
        Some(ip) => {
            let remote =
                p.http.post(format!("http://{ip}:{port}/access/v1/evaluation")).json(&body).send().await.unwrap();
            assert_eq!(remote.status(), StatusCode::UNAUTHORIZED, "a caller at {ip} is not the local gateway");
            let meta =
                p.http.get(format!("http://{ip}:{port}/.well-known/authzen-configuration")).send().await.unwrap();
            assert_eq!(meta.status(), StatusCode::OK);
        }
        None => eprintln!("this host has no non-loopback address: only the loopback half was checked"),
    }
}

#[tokio::test]
async fn operation_level_denial_request_approval_and_single_use_permit() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.active_mission().await;
    let (params, digest) = payment("423.50", "Q3 invoice 842");
    let req = eval_req(&m, PARTNER, "http.post", Some(&digest));

    // 1. A consequential call: requestable denial with the hint and both URLs.
    let d = p.evaluate(&req).await;
    assert_eq!(d["decision"], false, "{d}");
    let ctx = &d["context"];
    assert_eq!(ctx["reason"], "approval_required");
    assert_eq!(ctx["next_action"], "request");
    let eval_id = ctx["evaluation_id"].as_str().unwrap();
    assert!(eval_id.starts_with("eval_") && eval_id.len() >= 5 + 22, "{eval_id}");
    let hint = &ctx["access_request"];
    assert_eq!(hint["endpoint"], format!("{ISS}/access/v1/requests"));
    let exp = parse_rfc3339(hint["expires_at"].as_str().unwrap()).unwrap();
    assert!((now() + 590..=now() + 601).contains(&exp), "10 minutes by default");
    assert!(hint["display"]["title"].as_str().unwrap().contains("http.post"));
    let captive_api = ctx["captive_portal_api"].as_str().unwrap();
    let denial_id = captive_api.rsplit('/').next().unwrap();
    assert!(
        denial_id.starts_with("dn_") && b64::decode(&denial_id[3..]).unwrap().len() >= 16,
        "≥128 bits: {denial_id}"
    );
    assert_eq!(ctx["user_portal_url"], format!("{ISS}/portal/d/{denial_id}"));
    // The binding token: ES256 by the authority key, typ access-request-binding+jwt, binding claims.
    let token = hint["binding_token"].as_str().unwrap();
    let parts = Compact::split(token).unwrap();
    let header = parts.header().unwrap();
    assert_eq!(header.alg, "ES256");
    assert_eq!(header.typ.as_deref(), Some("access-request-binding+jwt"));
    let claims: Value = serde_json::from_slice(&parts.payload_bytes().unwrap()).unwrap();
    assert_eq!(claims["evaluation_id"], eval_id);
    assert_eq!(claims["aud"], format!("{ISS}/access/v1/requests"));
    assert_eq!(claims["action"]["properties"]["parameter_digest"], digest);
    assert_eq!(claims["context"]["mission"]["id"], m["id"]);
    assert_eq!(claims["exp"], exp);

    // 2. The same call again: the same denial (stable ids and URLs).
    let again = p.evaluate(&req).await;
    assert_eq!(again["context"]["evaluation_id"], eval_id);
    assert_eq!(again["context"]["captive_portal_api"], captive_api);

    // 3. The per-denial Captive Portal API: the 511 document, private.
    let resp = p.http.get(p.local(captive_api)).header("accept", "application/captive+json").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/captive+json");
    assert_eq!(resp.headers()["cache-control"], "private");
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["captive"], true);
    assert_eq!(doc["user-portal-url"], ctx["user_portal_url"]);
    let ar = &doc["access-request"];
    assert_eq!(ar["subject"]["id"], AGENT);
    assert_eq!(ar["resource"], json!({"type": "egress", "id": PARTNER}));
    assert_eq!(ar["action"]["name"], "http.post");
    assert_eq!(ar["context"]["evaluation_id"], eval_id);
    assert_eq!(ar["context"]["reason"], "approval_required");
    assert_eq!(ar["context"]["mission"]["id"], m["id"]);
    assert_eq!(ar["context"]["access_request"]["binding_token"], token);
    assert!(doc.get("seconds-remaining").is_none());

    // 4. The agent asks (ARAP): 201 with a pending task; Retry-After while pending.
    let body = submission(&d, "Invoice 842 is due today.", Some(&params));
    let (status, headers, t) = p.submit(Some("k-1"), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let task = &t["task"];
    assert_eq!(task["status"], "pending");
    let task_id = task["id"].as_str().unwrap();
    assert!(task_id.starts_with("arq_"));
    let status_endpoint = task["status_endpoint"].as_str().unwrap();
    assert_eq!(status_endpoint, format!("{ISS}/access/v1/requests/{task_id}"));
    assert_eq!(headers["location"], status_endpoint);
    assert!(task["created_at"].is_string() && task["expires_at"].is_string());
    let (status, headers, st) = p.get(&p.local(status_endpoint)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["retry-after"], "5");
    assert_eq!(st["task"]["status"], "pending");
    assert!(st.get("result").is_none());

    // 5. Idempotency: the same key and body → the same task (200); another body → 409.
    let (status, _, t2) = p.submit(Some("k-1"), &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t2["task"]["id"], task_id);
    let mut other = body.clone();
    other["justification"] = json!("something else");
    let (status, headers, e) = p.submit(Some("k-1"), &other).await;
    assert_problem(status, &headers, &e, 409, "duplicate_request");
    // A new key for a denial that already has a pending task: that task, not a second one.
    let (status, _, t3) = p.submit(Some("\"k-2\""), &body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(t3["task"]["id"], task_id);

    // Still denied: a request is not an approval.
    assert_eq!(p.evaluate(&req).await["decision"], false);

    // 6. An approver approves (JSON API with the operator token): the PDP now permits, bound.
    let (status, a) = p
        .op(
            Method::POST,
            &format!("/operator/access-requests/{task_id}/approve"),
            Some(json!({"duration_seconds": 600})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    assert_eq!(a["task"]["status"], "approved");
    let grant_id = a["grant"]["id"].as_str().unwrap();
    let permit = p.evaluate(&req).await;
    assert_eq!(permit["decision"], true, "{permit}");
    let c = &permit["context"]["conditions"];
    let mut keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["parameter_digest", "use_limit", "valid_until"], "only what the filter understands");
    assert_eq!(c["parameter_digest"], digest);
    assert_eq!(c["use_limit"], 1);
    let until = parse_rfc3339(c["valid_until"].as_str().unwrap()).unwrap();
    assert!((now() + 590..=now() + 601).contains(&until));
    assert_eq!(permit["context"]["evaluation_id"], format!("perm_{grant_id}"));
    // Single use at the source: that was the one permit of this approval. Asked again (by this or any
    // other gateway), the PDP refuses with parameter_violation (the gateway's 403), not requestable.
    let again = p.evaluate(&req).await;
    assert_eq!(again["decision"], false, "{again}");
    assert_eq!(again["context"]["reason"], "parameter_violation", "{again}");
    assert!(again["context"].get("access_request").is_none(), "{again}");

    // 7. The captive API: captive again (the approval is used up), with a fresh hint for the same
    // denial, so the agent can ask again.
    let (status, headers, doc) = p.get(&p.local(captive_api)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/captive+json");
    assert_eq!(doc["captive"], true, "{doc}");
    assert_eq!(doc["access-request"]["context"]["evaluation_id"], eval_id);
    assert!(doc["access-request"]["context"]["access_request"]["binding_token"].is_string());

    // 8. The task reports the approval for re-evaluation; no Retry-After any more.
    let (status, headers, st) = p.get(&p.local(status_endpoint)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get("retry-after").is_none());
    assert_eq!(st["task"]["status"], "approved");
    assert_eq!(st["result"]["mode"], "reevaluate");
    assert_eq!(st["result"]["approval"]["id"], grant_id);
    assert_eq!(parse_rfc3339(st["result"]["approval"]["approved_until"].as_str().unwrap()).unwrap(), until);

    // 9. Another amount is another call: still a requestable denial, its own denial.
    let (_, digest2) = payment("4235.00", "Q3 invoice 842");
    let other = p.evaluate(&eval_req(&m, PARTNER, "http.post", Some(&digest2))).await;
    assert_eq!(other["decision"], false);
    assert_ne!(other["context"]["evaluation_id"], eval_id);

    // 10. The audit trail has who and when.
    let (status, shown) = p.op(Method::GET, &format!("/operator/access-requests/{task_id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let audit = shown["audit"].as_array().unwrap();
    assert_eq!(audit.iter().map(|a| a["action"].as_str().unwrap()).collect::<Vec<_>>(), ["submit", "approve"]);
    assert_eq!(audit[1]["actor"], "operator");
    assert_eq!(audit[0]["actor"], format!("requester:{AGENT}"));
    let (_, list) = p.op(Method::GET, "/operator/access-requests?status=approved", None).await;
    assert_eq!(list["access_requests"].as_array().unwrap().len(), 1);
    assert_eq!(list["access_requests"][0]["mission"]["goal"], "Pay the Q3 partner invoices <b>on time</b>");
}

#[tokio::test]
async fn destination_grant_expires_and_the_destination_is_captive_again() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.active_mission().await;
    let req = eval_req(&m, "https://elsewhere.example:8443", "http.get", None);
    let d = p.evaluate(&req).await;
    assert_eq!(d["context"]["reason"], "egress_not_allowed");
    let captive_api = d["context"]["captive_portal_api"].as_str().unwrap().to_owned();
    let first_hint = d["context"]["access_request"].clone();
    let (status, _, t) = p.submit(Some("dest-1"), &submission(&d, "need the status page", None)).await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let task_id = t["task"]["id"].as_str().unwrap();
    let (status, a) = p
        .op(Method::POST, &format!("/operator/access-requests/{task_id}/approve"), Some(json!({"duration_seconds": 2})))
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    let permit = p.evaluate(&req).await;
    assert_eq!(permit["decision"], true);
    let c = permit["context"]["conditions"].as_object().unwrap();
    assert_eq!(c.keys().collect::<Vec<_>>(), ["valid_until"], "no digest, reusable: {c:?}");
    let (_, _, doc) = p.get(&p.local(&captive_api)).await;
    assert_eq!(doc["captive"], false);
    assert!((1..=2).contains(&doc["seconds-remaining"].as_i64().unwrap()));
    // After approved_until: captive again, with a fresh hint for the same denial.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let (_, _, doc) = p.get(&p.local(&captive_api)).await;
    assert_eq!(doc["captive"], true, "{doc}");
    let hint = &doc["access-request"]["context"]["access_request"];
    assert!(hint["binding_token"].is_string());
    assert_eq!(doc["access-request"]["context"]["evaluation_id"], d["context"]["evaluation_id"]);
    assert!(
        parse_rfc3339(hint["expires_at"].as_str().unwrap()).unwrap()
            >= parse_rfc3339(first_hint["expires_at"].as_str().unwrap()).unwrap()
    );
    let again = p.evaluate(&req).await;
    assert_eq!(again["decision"], false);
    assert_eq!(again["context"]["next_action"], "request");
    // And the agent may ask again (a new task: the old one is terminal).
    let (status, _, t2) = p.submit(Some("dest-2"), &submission(&again, "again please", None)).await;
    assert_eq!(status, StatusCode::CREATED, "{t2}");
    assert_ne!(t2["task"]["id"], task_id);
}

#[tokio::test]
async fn inactive_unknown_or_mismatched_missions_are_plain_denials() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.active_mission().await;
    let id = m["id"].as_str().unwrap();
    let plain = |v: &Value, reason: &str| {
        assert_eq!(v["decision"], false, "{v}");
        assert_eq!(v["context"]["reason"], reason, "{v}");
        assert!(v["context"].get("access_request").is_none(), "{v}");
        assert!(v["context"].get("captive_portal_api").is_none(), "{v}");
    };
    let mut wrong_subject = eval_req(&m, PARTNER, "http.get", None);
    wrong_subject["subject"]["id"] = json!("agent-8");
    plain(&p.evaluate(&wrong_subject).await, "subject_mismatch");
    let mut wrong_hash = eval_req(&m, PARTNER, "http.get", None);
    wrong_hash["context"]["mission"]["authority_hash"] = json!("sha-256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    plain(&p.evaluate(&wrong_hash).await, "authority_mismatch");
    let mut unknown = eval_req(&m, PARTNER, "http.get", None);
    unknown["context"]["mission"]["id"] = json!("msn_nope");
    plain(&p.evaluate(&unknown).await, "mission_unknown");

    // Approve a request, then suspend the Mission: the grant no longer counts.
    let (params, digest) = payment("10.00", "small");
    let req = eval_req(&m, PARTNER, "http.post", Some(&digest));
    let d = p.evaluate(&req).await;
    let (_, _, t) = p.submit(Some("s-1"), &submission(&d, "ok", Some(&params))).await;
    let task_id = t["task"]["id"].as_str().unwrap();
    let (status, _) = p
        .op(
            Method::POST,
            &format!("/operator/access-requests/{task_id}/approve"),
            Some(json!({"duration_seconds": 300})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p.evaluate(&req).await["decision"], true);
    let (status, _) = p.op(Method::POST, &format!("/operator/missions/{id}/suspend"), None).await;
    assert_eq!(status, StatusCode::OK);
    let v = p.evaluate(&req).await;
    plain(&v, "mission_inactive");
    assert_eq!(v["context"]["mission"]["state"], "suspended");
    let (_, _, doc) = p.get(&p.local(d["context"]["captive_portal_api"].as_str().unwrap())).await;
    assert_eq!(doc["captive"], true);
    assert!(doc.get("access-request").is_none(), "not requestable while the Mission is suspended");
    // Grants are not made for a Mission that is not active.
    let d2 = {
        let (s, _) = p.op(Method::POST, &format!("/operator/missions/{id}/resume"), None).await;
        assert_eq!(s, StatusCode::OK);
        p.evaluate(&eval_req(&m, "https://x.example", "http.get", None)).await
    };
    let (_, _, t2) = p.submit(Some("s-2"), &submission(&d2, "x", None)).await;
    p.op(Method::POST, &format!("/operator/missions/{id}/revoke"), None).await;
    let (status, e) = p
        .op(
            Method::POST,
            &format!("/operator/access-requests/{}/approve", t2["task"]["id"].as_str().unwrap()),
            Some(json!({"duration_seconds": 60})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["type"], format!("{URN}invalid_task_state"));
    plain(&p.evaluate(&req).await, "mission_inactive");
}

#[tokio::test]
async fn hostile_access_requests_get_profile_problems() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.active_mission().await;
    let (params, digest) = payment("99.00", "hostile");
    let d = p.evaluate(&eval_req(&m, PARTNER, "http.post", Some(&digest))).await;
    let good = submission(&d, "fine", Some(&params));

    // Bad JSON, not an object, wrong media type, oversized.
    let resp = p
        .http
        .post(p.url("/access/v1/requests"))
        .header("Idempotency-Key", "h1")
        .header("content-type", "application/json")
        .body("{\"denial\":")
        .send()
        .await
        .unwrap();
    let (s, h) = (resp.status(), resp.headers().clone());
    assert_problem(s, &h, &resp.json().await.unwrap(), 400, "invalid_request");
    let (s, h, e) = p.submit(Some("h1"), &json!([1, 2])).await;
    assert_problem(s, &h, &e, 400, "invalid_request");
    let resp = p
        .http
        .post(p.url("/access/v1/requests"))
        .header("Idempotency-Key", "h1")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!("{{\"justification\":\"{}\"}}", "a".repeat(2 * 1024 * 1024));
    let resp = p
        .http
        .post(p.url("/access/v1/requests"))
        .header("Idempotency-Key", "h1")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    let (s, h) = (resp.status(), resp.headers().clone());
    assert_problem(s, &h, &resp.json().await.unwrap(), 413, "invalid_request");
    // Duplicate member names (not I-JSON).
    let resp = p
        .http
        .post(p.url("/access/v1/requests"))
        .header("Idempotency-Key", "h1")
        .header("content-type", "application/json")
        .body("{\"a\":1,\"a\":2}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // No Idempotency-Key.
    let (s, h, e) = p.submit(None, &good).await;
    assert_problem(s, &h, &e, 400, "invalid_request");
    // No denial at all.
    let (s, h, e) = p.submit(Some("h2"), &json!({"justification": "let me in"})).await;
    assert_problem(s, &h, &e, 400, "not_requestable");

    // Forged binding tokens: another key under the real kid; a tampered payload; garbage; none.
    let token = d["context"]["access_request"]["binding_token"].as_str().unwrap();
    let parts = Compact::split(token).unwrap();
    let header: Value = serde_json::from_slice(&b64::decode(token.split('.').next().unwrap()).unwrap()).unwrap();
    let claims: Value = serde_json::from_slice(&parts.payload_bytes().unwrap()).unwrap();
    let forged = SigningKey::generate_p256().sign_compact(&header, &claims);
    let mut tampered_claims = claims.clone();
    tampered_claims["action"]["name"] = json!("http.delete");
    let sig = token.rsplit('.').next().unwrap();
    let tampered = format!(
        "{}.{}.{sig}",
        token.split('.').next().unwrap(),
        b64::encode(serde_json::to_vec(&tampered_claims).unwrap())
    );
    for (i, bad) in [json!(forged), json!(tampered), json!("not.a.jws"), Value::Null].into_iter().enumerate() {
        let mut body = good.clone();
        if bad.is_null() {
            body["denial"].as_object_mut().unwrap().remove("binding_token");
        } else {
            body["denial"]["binding_token"] = bad;
        }
        let (s, h, e) = p.submit(Some(&format!("forged-{i}")), &body).await;
        assert_problem(s, &h, &e, 400, "invalid_denial_binding");
    }
    // Echo mismatches: expires_at, evaluation_id, subject, parameters that are not the denied call.
    let mut body = good.clone();
    body["denial"]["expires_at"] = json!("2030-01-01T00:00:00Z");
    let (s, h, e) = p.submit(Some("m-1"), &body).await;
    assert_problem(s, &h, &e, 400, "invalid_denial_binding");
    let mut body = good.clone();
    body["denial"]["evaluation_id"] = json!("eval_other");
    let (s, h, e) = p.submit(Some("m-2"), &body).await;
    assert_problem(s, &h, &e, 400, "invalid_denial_binding");
    let mut body = good.clone();
    body["subject"] = json!({"type": "agent", "id": "agent-8"});
    let (s, h, e) = p.submit(Some("m-3"), &body).await;
    assert_problem(s, &h, &e, 400, "invalid_denial_binding");
    let (changed, _) = payment("9900.00", "hostile");
    let (s, h, e) = p.submit(Some("m-4"), &submission(&d, "fine", Some(&changed))).await;
    assert_problem(s, &h, &e, 400, "invalid_denial_binding");
    let (s, h, e) = p.submit(Some("m-5"), &submission(&d, "fine", None)).await;
    assert_problem(s, &h, &e, 400, "invalid_denial_binding");
    // The same call in version 1's shape (no content_type) is not a parameter object any more.
    let (right, _) = payment("99.00", "hostile");
    let mut v1 = right.clone();
    v1.as_object_mut().unwrap().remove("content_type");
    let (s, h, e) = p.submit(Some("m-6"), &submission(&d, "fine", Some(&v1))).await;
    assert_problem(s, &h, &e, 400, "invalid_denial_binding");
    // A number the body cannot hold exactly is refused with the submission, whatever it hashes to.
    let mut inexact = submission(&d, "fine", Some(&right)).to_string();
    inexact = inexact.replacen("\"99.00\"", "9007199254740993", 1);
    let (s, h, e) = p.submit_raw(Some("m-7"), inexact.as_bytes()).await;
    assert_problem(s, &h, &e, 400, "invalid_request");
    assert!(e["detail"].as_str().unwrap().contains("exactly"), "{e}");
    // ARAP-style submissions repeating the bound members are fine (act excluded).
    let mut body = good.clone();
    body["subject"] =
        json!({"type": "agent", "id": AGENT, "properties": {"sub": AGENT, "iss": ISS, "act": {"sub": "x"}}});
    body["resource"] = json!({"type": "egress", "id": PARTNER});
    body["action"] = json!({"name": "http.post", "properties": {"parameter_digest": digest}});
    body["context"] =
        json!({"mission": eval_req(&m, PARTNER, "x", None)["context"]["mission"], "note": "augmentation"});
    let (s, _, t) = p.submit(Some("ok-1"), &body).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let task_id = t["task"]["id"].as_str().unwrap().to_owned();

    // Unknown task.
    let (s, h, e) = p.get(&p.url("/access/v1/requests/arq_doesnotexist")).await;
    assert_problem(s, &h, &e, 404, "unknown_task");
    let (s, h, e) = p.post_json("/access/v1/requests/arq_doesnotexist/cancel", &json!({})).await;
    assert_problem(s, &h, &e, 404, "unknown_task");
    let (s, e) =
        p.op(Method::POST, "/operator/access-requests/arq_nope/approve", Some(json!({"duration_seconds": 60}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(e["type"], format!("{URN}unknown_task"));

    // Cancel (POST .../cancel), then again → 409; approving it → 409.
    let (s, _, c) = p.post_json(&format!("/access/v1/requests/{task_id}/cancel"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["task"]["status"], "cancelled");
    let (s, h, e) = p.post_json(&format!("/access/v1/requests/{task_id}/cancel"), &json!({})).await;
    assert_problem(s, &h, &e, 409, "invalid_task_state");
    let (s, e) = p
        .op(
            Method::POST,
            &format!("/operator/access-requests/{task_id}/approve"),
            Some(json!({"duration_seconds": 60})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    // DELETE cancels too; deny works and is reported.
    let (s, _, t) = p.submit(Some("ok-2"), &good).await;
    assert_eq!(s, StatusCode::CREATED);
    let t2 = t["task"]["id"].as_str().unwrap().to_owned();
    let resp = p.http.delete(p.url(&format!("/access/v1/requests/{t2}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, _, t) = p.submit(Some("ok-3"), &good).await;
    assert_eq!(s, StatusCode::CREATED);
    let t3 = t["task"]["id"].as_str().unwrap().to_owned();
    let (s, v) = p
        .op(Method::POST, &format!("/operator/access-requests/{t3}/deny"), Some(json!({"reason": "not this week"})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, _, st) = p.get(&p.url(&format!("/access/v1/requests/{t3}"))).await;
    assert_eq!(st["task"]["status"], "denied");
    assert_eq!(st["task"]["reason"], "not this week");
    assert!(st.get("result").is_none());
    // Approval durations out of range.
    let (s, _, t) = p.submit(Some("ok-4"), &good).await;
    assert_eq!(s, StatusCode::CREATED);
    let t4 = t["task"]["id"].as_str().unwrap().to_owned();
    for bad in [json!({"duration_seconds": 0}), json!({"duration_seconds": 999_999_999}), json!({"minutes": 5})] {
        let (s, _) = p.op(Method::POST, &format!("/operator/access-requests/{t4}/approve"), Some(bad)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
    // The approver API is the operator's: an agent's access token or nothing is a 401.
    let tok = p.op(Method::POST, &format!("/operator/missions/{}/token", m["id"].as_str().unwrap()), None).await.1;
    let resp = p
        .http
        .post(p.url(&format!("/operator/access-requests/{t4}/approve")))
        .bearer_auth(tok["access_token"].as_str().unwrap())
        .json(&json!({"duration_seconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn expired_denials_and_tasks() {
    let (_dir, db) = temp_db();
    let p =
        Portal::start(&db, &["--denial-ttl-seconds", "1", "--task-ttl-seconds", "1", "--task-retention-seconds", "0"])
            .await;
    let m = p.active_mission().await;
    let d = p.evaluate(&eval_req(&m, "https://late.example", "http.get", None)).await;
    let (s, _, t) = p.submit(Some("e-1"), &submission(&d, "quick", None)).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let task_id = t["task"]["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // The hint ran out: a new submission is 410; an idempotent replay still finds its task.
    let (s, h, e) = p.submit(Some("e-2"), &submission(&d, "late", None)).await;
    assert_problem(s, &h, &e, 410, "expired_denial");
    let (s, _, _) = p.submit(Some("e-1"), &submission(&d, "quick", None)).await;
    assert_ne!(s, StatusCode::CREATED);
    // The pending task expired and, with no retention, its handle is gone.
    let (s, h, e) = p.get(&p.url(&format!("/access/v1/requests/{task_id}"))).await;
    assert_problem(s, &h, &e, 410, "task_expired");
    let (s, e) = p
        .op(
            Method::POST,
            &format!("/operator/access-requests/{task_id}/approve"),
            Some(json!({"duration_seconds": 60})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (_, shown) = p.op(Method::GET, &format!("/operator/access-requests/{task_id}"), None).await;
    assert_eq!(shown["task"]["status"], "expired");
    assert_eq!(shown["audit"].as_array().unwrap().last().unwrap()["actor"], "system:clock");
    // A fresh evaluation refreshes the hint of the same denial; asking works again.
    let d2 = p.evaluate(&eval_req(&m, "https://late.example", "http.get", None)).await;
    assert_eq!(d2["context"]["evaluation_id"], d["context"]["evaluation_id"]);
    assert_ne!(d2["context"]["access_request"]["binding_token"], d["context"]["access_request"]["binding_token"]);
    let (s, _, t) = p.submit(Some("e-3"), &submission(&d2, "now", None)).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
}

#[tokio::test]
async fn portal_sign_in_csrf_and_inert_agent_text() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.active_mission().await;
    let evil = "<script>document.title='pwned'</script><img src=x onerror=alert(1)>";
    let (params, digest) = payment("77.00", evil);
    let d = p.evaluate(&eval_req(&m, PARTNER, "http.post", Some(&digest))).await;
    let denial_page = p.local(d["context"]["user_portal_url"].as_str().unwrap());
    let (s, _, t) = p.submit(Some("p-1"), &submission(&d, evil, Some(&params))).await;
    assert_eq!(s, StatusCode::CREATED);
    let task_id = t["task"]["id"].as_str().unwrap().to_owned();

    // Not signed in: the page sends people to sign in; a POST is refused.
    let resp = p.http.get(&denial_page).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(resp.headers()["location"].to_str().unwrap().starts_with("/portal/login?next=%2Fportal%2Fd%2Fdn_"));
    let resp = p
        .http
        .post(format!("{denial_page}/approve"))
        .form(&[("task", task_id.as_str()), ("minutes", "5")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    // Wrong credentials: an agent's access token, the operator token, a wrong token → 401.
    let tok = p.op(Method::POST, &format!("/operator/missions/{}/token", m["id"].as_str().unwrap()), None).await.1;
    for bad in [tok["access_token"].as_str().unwrap(), OP, "alice-approver-token-WRONG", ""] {
        assert_eq!(sign_in(&p, bad).await.unwrap_err(), StatusCode::UNAUTHORIZED, "{bad}");
    }
    // The sign-in form itself is CSRF-protected (double-submit cookie).
    let resp =
        p.http.post(p.url("/portal/login")).form(&[("token", APPROVER_TOKEN), ("csrf", "x")]).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);

    let (cookie, csrf) = sign_in(&p, APPROVER_TOKEN).await.unwrap();
    assert!(cookie.starts_with("__Host-mg_session="), "https public URL → __Host- cookie: {cookie}");
    let resp = p.http.get(&denial_page).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'; style-src 'self' 'unsafe-inline'; form-action 'self'"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    let html = resp.text().await.unwrap();
    assert!(!html.to_lowercase().contains("<script"), "no script, agent text escaped");
    assert!(!html.contains("<img"));
    assert!(html.contains("&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;"));
    assert!(
        html.contains(AGENT)
            && html.contains(m["id"].as_str().unwrap())
            && html.contains(PARTNER)
            && html.contains("http.post")
    );
    assert!(html.contains("Pay the Q3 partner invoices &lt;b&gt;on time&lt;/b&gt;"), "Mission goal shown, escaped");
    assert!(html.contains("&quot;amount&quot;: &quot;77.00&quot;"), "pretty parameters");
    assert!(html.contains("<code id=\"content-type\">application/json</code>"), "the bound media type is shown");
    assert!(!html.contains("id=\"raw-body\""), "a JSON body is shown, not only a hash");
    let list = p.http.get(p.url("/portal")).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(
        list.contains(&task_id)
            || list.contains(d["context"]["user_portal_url"].as_str().unwrap().rsplit('/').next().unwrap())
    );

    // POST without the CSRF token, or with another one, or cross-site → 403, nothing changes.
    let approve_url = format!("{denial_page}/approve");
    for form in [
        vec![("task", task_id.as_str()), ("minutes", "5")],
        vec![("task", task_id.as_str()), ("minutes", "5"), ("csrf", "forged")],
    ] {
        let resp = p.http.post(&approve_url).header("cookie", &cookie).form(&form).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }
    let resp = p
        .http
        .post(&approve_url)
        .header("cookie", &cookie)
        .header("sec-fetch-site", "cross-site")
        .form(&[("task", task_id.as_str()), ("minutes", "5"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let (_, _, st) = p.get(&p.url(&format!("/access/v1/requests/{task_id}"))).await;
    assert_eq!(st["task"]["status"], "pending");

    // With it: approved, by alice.
    let resp = p
        .http
        .post(&approve_url)
        .header("cookie", &cookie)
        .form(&[("task", task_id.as_str()), ("minutes", "5"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (_, _, st) = p.get(&p.url(&format!("/access/v1/requests/{task_id}"))).await;
    assert_eq!(st["task"]["status"], "approved");
    let (_, shown) = p.op(Method::GET, &format!("/operator/access-requests/{task_id}"), None).await;
    assert_eq!(shown["decided_by"], "approver:alice");
    assert_eq!(shown["audit"][1]["actor"], "approver:alice");
    assert_eq!(shown["grant"]["single_use"], true);
    let permit = p.evaluate(&eval_req(&m, PARTNER, "http.post", Some(&digest))).await;
    assert_eq!(permit["decision"], true);
    let until = parse_rfc3339(permit["context"]["conditions"]["valid_until"].as_str().unwrap()).unwrap();
    assert!((now() + 290..=now() + 300).contains(&until));

    // Sign out ends the session server-side.
    let resp = p
        .http
        .post(p.url("/portal/logout"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let resp = p.http.get(&denial_page).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn approver_configuration_is_checked() {
    let (_dir, db) = temp_db();
    let e = Portal::try_start(&db, "127.0.0.1:0", None, &["--approver", &format!("bob:{OP}")]).await.err().unwrap();
    assert!(e.contains("exited"), "{e}");
    let e = Portal::try_start(&db, "127.0.0.1:0", None, &["--approver", "no-colon"]).await.err().unwrap();
    assert!(e.contains("exited"), "{e}");
    // An approver file, and the explicit opt-in for the operator token.
    let file = db.with_extension("approvers");
    std::fs::write(&file, "# approvers\ncarol:carol-approver-token-0123456789\n").unwrap();
    let p = Portal::start(&db, &["--approver-file", file.to_str().unwrap(), "--operator-may-approve"]).await;
    assert!(sign_in(&p, "carol-approver-token-0123456789").await.is_ok());
    assert!(sign_in(&p, OP).await.is_ok());
    assert!(sign_in(&p, APPROVER_TOKEN).await.is_ok());
}

#[tokio::test]
async fn kill_9_in_the_middle_of_an_approval_loses_nothing() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.active_mission().await;
    let (params, digest) = payment("500.00", "restart");
    let req = eval_req(&m, PARTNER, "http.post", Some(&digest));
    let d = p.evaluate(&req).await;
    let body = submission(&d, "before the crash", Some(&params));
    let (s, _, t) = p.submit(Some("r-1"), &body).await;
    assert_eq!(s, StatusCode::CREATED);
    let task_id = t["task"]["id"].as_str().unwrap().to_owned();
    let (cookie, csrf) = sign_in(&p, APPROVER_TOKEN).await.unwrap();
    let captive_path = d["context"]["captive_portal_api"].as_str().unwrap().strip_prefix(ISS).unwrap().to_owned();
    let page_path = d["context"]["user_portal_url"].as_str().unwrap().strip_prefix(ISS).unwrap().to_owned();
    p.kill9().await;

    // Restart: the denial, the task, the idempotency key, the binding key and the session survived.
    let p = Portal::start(&db, &[]).await;
    let (_, _, st) = p.get(&p.url(&format!("/access/v1/requests/{task_id}"))).await;
    assert_eq!(st["task"]["status"], "pending");
    let (s, _, again) = p.submit(Some("r-1"), &body).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["task"]["id"], task_id);
    let (_, _, doc) = p.get(&p.url(&captive_path)).await;
    assert_eq!(doc["captive"], true);
    assert_eq!(p.evaluate(&req).await["context"]["evaluation_id"], d["context"]["evaluation_id"]);
    let resp = p
        .http
        .post(p.url(&format!("{page_path}/approve")))
        .header("cookie", &cookie)
        .form(&[("task", task_id.as_str()), ("minutes", "10"), ("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "the session survived the restart");
    // Acknowledged → durable: kill -9 right after the answer.
    p.kill9().await;
    let p = Portal::start(&db, &[]).await;
    let (_, _, doc) = p.get(&p.url(&captive_path)).await;
    assert_eq!(doc["captive"], false, "approved and not used yet: {doc}");
    let permit = p.evaluate(&req).await;
    assert_eq!(permit["decision"], true, "{permit}");
    let (_, _, st) = p.get(&p.url(&format!("/access/v1/requests/{task_id}"))).await;
    assert_eq!(st["task"]["status"], "approved");
    assert_eq!(
        permit["context"]["evaluation_id"],
        format!("perm_{}", st["result"]["approval"]["id"].as_str().unwrap())
    );
    let (_, shown) = p.op(Method::GET, &format!("/operator/access-requests/{task_id}"), None).await;
    let actions: Vec<&str> = shown["audit"].as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["submit", "approve"]);
    // The single-use permit was issued: that is durable too. kill -9 and restart: never again.
    p.kill9().await;
    let p = Portal::start(&db, &[]).await;
    let again = p.evaluate(&req).await;
    assert_eq!(again["decision"], false, "{again}");
    assert_eq!(again["context"]["reason"], "parameter_violation");
}

#[tokio::test]
async fn a_raw_body_is_approved_by_its_hash_and_the_page_says_so() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.active_mission().await;
    let (params, digest) = upload(b"hello, partner");
    assert_eq!(digest, "sha-256:Vg-10WbE6ITI1jhkU1Xd2_G32jL6sbxiQFQldE9WdYI", "SPEC §6 V7");
    let d = p.evaluate(&eval_req(&m, PARTNER, "http.post", Some(&digest))).await;
    // A JSON body spelling the raw hash (V10) is another call.
    let spelled = json!({"method": "POST", "target": format!("{PARTNER}/upload"), "content_type": "application/json",
                         "body": {"sha-256": params["body_sha256"]}});
    let (s, h, e) = p.submit(Some("r-0"), &submission(&d, "upload", Some(&spelled))).await;
    assert_problem(s, &h, &e, 400, "invalid_denial_binding");
    let (s, _, t) = p.submit(Some("r-1"), &submission(&d, "upload", Some(&params))).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let (cookie, _) = sign_in(&p, APPROVER_TOKEN).await.unwrap();
    let page = p.local(d["context"]["user_portal_url"].as_str().unwrap());
    let html = p.http.get(&page).header("cookie", &cookie).send().await.unwrap().text().await.unwrap();
    assert!(html.contains("<code id=\"content-type\">text/plain</code>"), "{html}");
    assert!(html.contains("id=\"raw-body\"") && html.contains("Only a hash of the body is bound"), "{html}");
    assert!(html.contains("BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"), "the bound hash is shown");
}
