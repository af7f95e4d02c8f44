//! Issue 11 against the real binary: gateways authenticate, single use at the source, per-requester
//! limits, bounded long polls, retention with pruning.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Row counts of the access tables, read from the database file (read-only, beside the portal: WAL).
pub async fn counts(db: &Path) -> HashMap<String, i64> {
    row_counts(db, &["denials", "access_tasks", "access_grants", "idempotency_keys", "access_audit"]).await
}

async fn approve(p: &Portal, task: &str, secs: i64) {
    let (s, v) = p
        .op(Method::POST, &format!("/operator/access-requests/{task}/approve"), Some(json!({"duration_seconds": secs})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn gateway_surfaces_refuse_callers_without_a_gateway_credential() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &["--gateway-credential", "second-gateway-credential-012345"]).await;
    let m = p.active_mission().await;
    let eval = eval_req(&m, PARTNER, "http.get", None);
    let form = [("mission_id", m["id"].as_str().unwrap()), ("audience", GW_AUD), ("nonce", "n-1")];
    let poll = json!({"ack": [], "returnImmediately": true});
    for auth in [None, Some("wrong-credential-0123456789"), Some(OP), Some(APPROVER_TOKEN)] {
        let with = |r: reqwest::RequestBuilder| match auth {
            Some(a) => r.bearer_auth(a),
            None => r,
        };
        let r = with(p.http.post(p.url("/access/v1/evaluation")).json(&eval)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "PDP, {auth:?}");
        assert!(r.headers()["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
        let r = with(p.http.post(p.url("/access/v1/evaluations")).json(&eval)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "PDP batch, {auth:?}");
        let r = with(p.http.post(p.url("/mission/status")).form(&form)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "status, {auth:?}");
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "unauthorized");
        let r = with(p.http.post(p.url("/mission/events")).json(&poll)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "events, {auth:?}");
    }
    // Either configured credential is a gateway.
    for cred in [GW, "second-gateway-credential-012345"] {
        let r = p.http.post(p.url("/access/v1/evaluation")).bearer_auth(cred).json(&eval).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = p.http.post(p.url("/mission/status")).bearer_auth(cred).form(&form).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let r = p.http.post(p.url("/mission/events")).bearer_auth(cred).json(&poll).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // Every SET names the gateway audience.
        let sets: Value = r.json().await.unwrap();
        let sets = sets["sets"].as_object().unwrap();
        assert!(!sets.is_empty());
        for jws in sets.values() {
            let payload = jws.as_str().unwrap().split('.').nth(1).unwrap();
            let claims: Value = serde_json::from_slice(&missiongate_wire::b64::decode(payload).unwrap()).unwrap();
            assert_eq!(claims["aud"], GW_AUD, "{claims}");
        }
    }
    // The agents' and people's surfaces stay public.
    let (s, _, _) = p.get(&p.url("/.well-known/authzen-configuration")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = p.get(&p.url("/jwks.json")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn a_portal_no_gateway_could_use_does_not_start() {
    let (_dir, db) = temp_db();
    let out = tokio::process::Command::new(BIN)
        .args(["serve", "--db"])
        .arg(&db)
        .args(["--listen", "127.0.0.1:0", "--issuer", ISS, "--operator-token", OP])
        .env_remove("MISSIONGATE_GATEWAY_CREDENTIALS")
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--gateway-credential") && err.contains("--dev-trust-loopback"), "{err}");
}

#[tokio::test]
async fn a_single_use_approval_yields_exactly_one_permit_under_concurrent_evaluations() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &[]).await;
    let m = p.active_mission().await;
    let (params, digest) = payment("77.00", "race");
    let req = eval_req(&m, PARTNER, "http.post", Some(&digest));
    let d = p.evaluate(&req).await;
    let (s, _, t) = p.submit(Some("race-1"), &submission(&d, "once", Some(&params))).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    approve(&p, t["task"]["id"].as_str().unwrap(), 3600).await;
    // 24 gateways ask at once.
    let mut handles = Vec::new();
    for _ in 0..24 {
        let (http, url, body) = (p.http.clone(), p.url("/access/v1/evaluation"), req.clone());
        handles.push(tokio::spawn(async move {
            let r = http.post(url).bearer_auth(GW).json(&body).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }));
    }
    let mut permits = 0;
    for h in handles {
        let v = h.await.unwrap();
        if v["decision"] == true {
            permits += 1;
        } else {
            assert_eq!(v["context"]["reason"], "parameter_violation", "{v}");
        }
    }
    assert_eq!(permits, 1, "exactly one permit for a single-use approval");
    // A reusable approval is not consumed.
    let dest = eval_req(&m, "https://reusable.example", "http.get", None);
    let d = p.evaluate(&dest).await;
    let (_, _, t) = p.submit(Some("reuse-1"), &submission(&d, "often", None)).await;
    approve(&p, t["task"]["id"].as_str().unwrap(), 3600).await;
    for _ in 0..3 {
        assert_eq!(p.evaluate(&dest).await["decision"], true);
    }
}

#[tokio::test]
async fn per_requester_limits_answer_429_with_retry_after() {
    let (_dir, db) = temp_db();
    let p =
        Portal::start(&db, &["--max-open-requests-per-requester", "2", "--max-idempotency-keys-per-requester", "4"])
            .await;
    let m = p.active_mission().await;
    let denials: Vec<Value> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(p.evaluate(&eval_req(&m, &format!("https://d{i}.example"), "http.get", None)).await);
        }
        v
    };
    let (s, _, t0) = p.submit(Some("o-0"), &submission(&denials[0], "a", None)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, _, t1) = p.submit(Some("o-1"), &submission(&denials[1], "b", None)).await;
    assert_eq!(s, StatusCode::CREATED);
    // A third open request from the same requester: 429.
    let (s, h, e) = p.submit(Some("o-2"), &submission(&denials[2], "c", None)).await;
    assert_problem(s, &h, &e, 429, "rate_limited");
    assert!(h["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert!(e["retry_after"].as_u64().unwrap() >= 1);
    // Replays stay answered; a cancellation frees a slot.
    let (s, _, _) = p.submit(Some("o-0"), &submission(&denials[0], "a", None)).await;
    assert_eq!(s, StatusCode::OK);
    let cancel = format!("/access/v1/requests/{}/cancel", t0["task"]["id"].as_str().unwrap());
    let (s, _, _) = p.post_json(&cancel, &json!({})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = p.submit(Some("o-3"), &submission(&denials[2], "c", None)).await;
    assert_eq!(s, StatusCode::CREATED);
    let cancel = format!("/access/v1/requests/{}/cancel", t1["task"]["id"].as_str().unwrap());
    assert_eq!(p.post_json(&cancel, &json!({})).await.0, StatusCode::OK);
    // The refused o-2 stored no key; o-0, o-1, o-3 are three of the four allowed. One more key, then 429.
    let (s, _, t) = p.submit(Some("o-4"), &submission(&denials[0], "again", None)).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let c = format!("/access/v1/requests/{}/cancel", t["task"]["id"].as_str().unwrap());
    assert_eq!(p.post_json(&c, &json!({})).await.0, StatusCode::OK);
    let (s, h, e) = p.submit(Some("o-5"), &submission(&denials[0], "and again", None)).await;
    assert_problem(s, &h, &e, 429, "rate_limited");
    assert!(e["detail"].as_str().unwrap().contains("Idempotency-Keys"), "{e}");
    let n = counts(&db).await;
    assert_eq!(n["idempotency_keys"], 4, "{n:?}");
    // Another requester (another Mission of the same agent) is not affected.
    let m2 = p.active_mission().await;
    let d2 = p.evaluate(&eval_req(&m2, "https://d0.example", "http.get", None)).await;
    let (s, _, _) = p.submit(Some("o-5"), &submission(&d2, "mine", None)).await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn long_polls_are_bounded_per_gateway() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &["--max-long-polls-per-caller", "1", "--longpoll-seconds", "3"]).await;
    let (http, url) = (p.http.clone(), p.url("/mission/events"));
    let held = tokio::spawn(async move {
        http.post(url).bearer_auth(GW).json(&json!({"ack": ["100000"]})).send().await.unwrap().status()
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r =
        p.http.post(p.url("/mission/events")).bearer_auth(GW).json(&json!({"ack": ["100000"]})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "1");
    // A poll that does not wait is always served.
    let r = p
        .http
        .post(p.url("/mission/events"))
        .bearer_auth(GW)
        .json(&json!({"ack": ["100000"], "returnImmediately": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    // The slot is free again.
    let r = p
        .http
        .post(p.url("/mission/events"))
        .bearer_auth(GW)
        .json(&json!({"ack": ["100000"], "maxEvents": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn ended_records_are_pruned_after_their_retention() {
    let (_dir, db) = temp_db();
    let p = Portal::start(
        &db,
        &[
            "--retention-seconds",
            "1",
            "--audit-retention-seconds",
            "3",
            "--prune-interval-seconds",
            "1",
            // Long enough that a loaded machine still submits before the denial expires.
            "--denial-ttl-seconds",
            "4",
            "--task-ttl-seconds",
            "2",
            "--task-retention-seconds",
            "0",
        ],
    )
    .await;
    let m = p.active_mission().await;
    for i in 0..5 {
        let d = p.evaluate(&eval_req(&m, &format!("https://p{i}.example"), "http.get", None)).await;
        let (s, _, t) = p.submit(Some(&format!("p-{i}")), &submission(&d, "x", None)).await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        if i % 2 == 0 {
            let c = format!("/access/v1/requests/{}/cancel", t["task"]["id"].as_str().unwrap());
            // On a loaded machine (or a remote database) the two-second task may already have
            // expired, or even been pruned: then the cancel is refused, never accepted twice.
            let (s, _, v) = p.post_json(&c, &json!({})).await;
            assert!(
                s == StatusCode::OK
                    || (s == StatusCode::CONFLICT && v.to_string().contains("expired"))
                    || s == StatusCode::NOT_FOUND,
                "{s} {v}"
            );
        }
    }
    let before = counts(&db).await;
    // Retention is one second: on a slow machine (or a remote database) the first task may be
    // pruned before the last one is made; at least the last ones are still there.
    assert!((2..=5).contains(&before["access_tasks"]), "{before:?}");
    // Within a few seconds: tasks cancelled or expired, keys, denials and (later) audit rows are gone.
    let mut after = before.clone();
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        after = counts(&db).await;
        if after.values().all(|n| *n == 0) {
            break;
        }
    }
    assert!(after.values().all(|n| *n == 0), "{after:?}");
    // The portal still works.
    let d = p.evaluate(&eval_req(&m, "https://p0.example", "http.get", None)).await;
    assert_eq!(d["context"]["next_action"], "request");
}
