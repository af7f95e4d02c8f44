//! Issue 15 against the real binary: several portal replicas on one real Postgres (started by the
//! test kit, tests/src/postgres.rs), `captive-portal migrate`, readiness, and a Postgres restart.
//! These tests always use Postgres, whatever `MISSIONGATE_TEST_DB` says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::postgres::{shared, PgServer};
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn replica(url: &str, dir: &Path, name: &str, extra: &[&str]) -> Portal {
    let log = dir.join(format!("{name}.log"));
    Portal::try_start_db(OsStr::new(url), &log, "127.0.0.1:0", None, extra).await.expect("replica starts")
}

async fn poll(p: &Portal, body: Value) -> (StatusCode, Value) {
    let resp = p.http.post(p.url("/mission/events")).bearer_auth(GW).json(&body).send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Every SET jti of the feed, read from `p` (acknowledging as it goes).
async fn all_seqs(p: &Portal) -> Vec<i64> {
    let mut out = vec![];
    let mut ack: Vec<String> = vec![];
    loop {
        let (s, r) = poll(p, json!({"ack": ack, "returnImmediately": true, "maxEvents": 50})).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        let mut seqs: Vec<i64> = r["sets"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect();
        seqs.sort_unstable();
        let Some(max) = seqs.last().copied() else { return out };
        out.extend(seqs);
        ack = vec![max.to_string()];
    }
}

async fn create(p: &Portal) -> Value {
    let body = json!({
        "intent": {"goal": "Reconcile the ledger", "resources": ["https://erp.example.com"],
                   "expires_at": missiongate_wire::time::format_rfc3339(now() + 3600)},
        "authorization_details": [
            {"type": "mission_resource_access", "resource": "https://erp.example.com", "actions": ["invoices.read"]}
        ],
        "client_id": AGENT
    });
    let (s, m) = p.op(Method::POST, "/operator/missions", Some(body)).await;
    assert_eq!(s, StatusCode::CREATED, "{m}");
    m
}

async fn jwks_kids(p: &Portal) -> Vec<String> {
    let v: Value = p.http.get(p.url("/jwks.json")).send().await.unwrap().json().await.unwrap();
    v["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn migrate_prepares_sqlite_and_postgres_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let pg = shared();
    let url = pg.fresh_database().unwrap();
    let file = dir.path().join("m.db");
    for db in [url.as_str(), file.to_str().unwrap()] {
        for _ in 0..2 {
            let out = tokio::process::Command::new(BIN).args(["migrate", "--db", db]).output().await.unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let name = url.rsplit('/').next().unwrap();
    let applied = pg.psql(name, "SELECT count(*) FROM _sqlx_migrations WHERE success").unwrap();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap().count();
    assert_eq!(applied, files.to_string());
    assert_eq!(pg.psql(name, "SELECT last_seq FROM mission_event_counter").unwrap(), "0");
    // The SQLite schema has the same tables.
    let pool = {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .connect(&format!("sqlite://{}?mode=ro", file.display()))
            .await
            .unwrap()
    };
    for t in ["missions", "mission_events", "access_tasks", "access_grants", "notify_deliveries"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}")).fetch_one(&pool).await.unwrap();
        assert_eq!(n, 0, "{t}");
        let pg_n = pg.psql(name, &format!("SELECT COUNT(*) FROM {t}")).unwrap();
        assert_eq!(pg_n, "0", "{t}");
    }
    // A database URL that cannot be reached is a clear error, not a panic.
    let out = tokio::process::Command::new(BIN)
        .args(["migrate", "--db", "postgres://nobody:secret-pw@127.0.0.1:1/none"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("captive-portal: postgres://nobody:***@127.0.0.1:1/none"), "{err}");
    assert!(!err.contains("secret-pw") && !err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn two_replicas_share_missions_keys_and_one_event_feed_and_wake_each_others_long_polls() {
    let dir = tempfile::tempdir().unwrap();
    let url = shared().fresh_database().unwrap();
    let a = replica(&url, dir.path(), "a", &["--longpoll-seconds", "20"]).await;
    let b = replica(&url, dir.path(), "b", &["--longpoll-seconds", "20"]).await;

    // Created on A, approved on B, seen on both.
    let m = create(&a).await;
    let id = m["id"].as_str().unwrap().to_owned();
    let (s, v) = b.op(Method::POST, &format!("/operator/missions/{id}/approve"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 2);
    let (s, v) = a.op(Method::GET, &format!("/operator/missions/{id}"), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["state"], "active", "{v}");

    // One signing key set: the same JWKS on both, after a rotation on B as well.
    let kids = jwks_kids(&a).await;
    assert!(!kids.is_empty());
    assert_eq!(kids, jwks_kids(&b).await);
    let (s, _) = b.op(Method::POST, "/operator/keys/rotate", None).await;
    assert_eq!(s, StatusCode::OK);
    let rotated = jwks_kids(&a).await;
    assert_eq!(rotated, jwks_kids(&b).await);
    assert!(rotated.len() > kids.len(), "{rotated:?}");
    // A takes up the key B rotated to: its tokens are signed with it within a few seconds.
    let current = rotated[0].clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, t) = a.op(Method::POST, &format!("/operator/missions/{id}/token"), Some(json!({}))).await;
        assert_eq!(s, StatusCode::OK, "{t}");
        let jws = t["access_token"].as_str().unwrap();
        let header = missiongate_wire::jose::Compact::split(jws).unwrap().header().unwrap();
        if header.kid.as_deref() == Some(current.as_str()) {
            break;
        }
        assert!(Instant::now() < deadline, "A still signs with {:?}, not {current}", header.kid);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A long poll on B wakes when A revokes.
    let seqs = all_seqs(&b).await;
    let last = *seqs.last().unwrap();
    let waiter = {
        let (http, url) = (b.http.clone(), b.url("/mission/events"));
        tokio::spawn(async move {
            let r: Value = http
                .post(url)
                .bearer_auth(GW)
                .json(&json!({"ack": [last.to_string()]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (Instant::now(), r)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "the long poll returned early");
    let revoked = Instant::now();
    let (s, v) = a.op(Method::POST, &format!("/operator/missions/{id}/revoke"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (woke, r) = waiter.await.unwrap();
    let latency = woke.duration_since(revoked);
    assert!(latency < Duration::from_secs(5), "B's long poll woke {latency:?} after A's revoke");
    let sets = r["sets"].as_object().unwrap();
    assert_eq!(sets.keys().collect::<Vec<_>>(), vec![&(last + 1).to_string()], "{r}");

    // Concurrent writes through both replicas: one feed, numbered 1..=n without gaps or repeats,
    // and the same on either replica.
    let mut handles = vec![];
    for i in 0..12 {
        let p = if i % 2 == 0 { &a } else { &b };
        let (http, url) = (p.http.clone(), p.url("/operator/missions"));
        let body = json!({
            "intent": {"goal": format!("job {i}"), "resources": ["https://erp.example.com"],
                       "expires_at": missiongate_wire::time::format_rfc3339(now() + 3600)},
            "authorization_details": [
                {"type": "mission_resource_access", "resource": "https://erp.example.com", "actions": ["invoices.read"]}
            ],
            "client_id": AGENT
        });
        handles.push(tokio::spawn(
            async move { http.post(url).bearer_auth(OP).json(&body).send().await.unwrap().status() },
        ));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), StatusCode::CREATED);
    }
    let on_a = all_seqs(&a).await;
    let expected: Vec<i64> = (1..=last + 1 + 12).collect();
    assert_eq!(on_a, expected);
    assert_eq!(all_seqs(&b).await, expected);

    // Concurrent approvals of one Mission from both replicas: one wins, the other is a conflict.
    let m2 = create(&b).await;
    let id2 = m2["id"].as_str().unwrap().to_owned();
    let path = format!("/operator/missions/{id2}/approve");
    let (ra, rb) = tokio::join!(a.op(Method::POST, &path, None), b.op(Method::POST, &path, None));
    let mut statuses = [ra.0, rb.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT], "{ra:?} {rb:?}");
    let (_, shown) = a.op(Method::GET, &format!("/operator/missions/{id2}"), None).await;
    assert_eq!(shown["version"], 2, "{shown}");

    // Readiness on both.
    for p in [&a, &b] {
        let r = p.http.get(p.url("/ready")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn access_requests_across_replicas_sessions_csrf_one_decision_and_one_permit() {
    let dir = tempfile::tempdir().unwrap();
    let url = shared().fresh_database().unwrap();
    let a = replica(&url, dir.path(), "a", &[]).await;
    let b = replica(&url, dir.path(), "b", &[]).await;
    let m = a.active_mission().await;
    let (params, digest) = payment("10.00", "replicas");
    let req = eval_req(&m, PARTNER, "http.post", Some(&digest));

    // Denied and requested through A.
    let d = a.evaluate(&req).await;
    assert_eq!(d["decision"], false, "{d}");
    let denial_id = d["context"]["captive_portal_api"].as_str().unwrap().rsplit('/').next().unwrap().to_owned();
    let (s, _, t) = a.submit(Some("k-r1"), &submission(&d, "needed", Some(&params))).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    let task = t["task"]["id"].as_str().unwrap().to_owned();
    // The Idempotency-Key is known to B as well.
    let (s, _, t2) = b.submit(Some("k-r1"), &submission(&d, "needed", Some(&params))).await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    assert_eq!(t2["task"]["id"], task.as_str());

    // Signed in on A; the session and its CSRF token work on B's page, and B's decision is the one.
    let (cookie, csrf) = sign_in(&a, APPROVER_TOKEN).await.unwrap();
    let page = b.http.get(b.url(&format!("/portal/d/{denial_id}"))).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    // A wrong CSRF token is refused on B too.
    let bad = b
        .http
        .post(b.url(&format!("/portal/d/{denial_id}/approve")))
        .header("cookie", &cookie)
        .form(&[("csrf", "not-the-token"), ("task", task.as_str()), ("minutes", "10")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::FORBIDDEN);
    // Concurrent decisions: B's page approves while A's operator API denies; exactly one wins.
    let page_approve = b
        .http
        .post(b.url(&format!("/portal/d/{denial_id}/approve")))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("task", task.as_str()), ("minutes", "10")])
        .send();
    let deny_path = format!("/operator/access-requests/{task}/deny");
    let api_deny = a.op(Method::POST, &deny_path, Some(json!({"reason": "no"})));
    let (page, api) = tokio::join!(page_approve, api_deny);
    let page = page.unwrap().status();
    let (_, shown) = a.op(Method::GET, &format!("/operator/access-requests/{task}"), None).await;
    let status = shown["task"]["status"].as_str().unwrap_or_else(|| panic!("{shown}")).to_owned();
    match status.as_str() {
        "approved" => {
            assert_eq!(page, StatusCode::SEE_OTHER);
            assert_eq!(api.0, StatusCode::CONFLICT, "{}", api.1);
        }
        "denied" => {
            assert_eq!(api.0, StatusCode::OK, "{}", api.1);
            assert_eq!(page, StatusCode::CONFLICT);
        }
        other => panic!("task ended {other}: {shown}"),
    }
    if status == "denied" {
        // Ask again and approve through B's operator API, so the permit can be tried.
        let d = a.evaluate(&req).await;
        let (s, _, t) = a.submit(Some("k-r2"), &submission(&d, "needed, again", Some(&params))).await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        let task = t["task"]["id"].as_str().unwrap();
        let (s, v) = b
            .op(
                Method::POST,
                &format!("/operator/access-requests/{task}/approve"),
                Some(json!({"duration_seconds": 600})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }

    // The single-use permit is issued exactly once across both replicas, however many evaluations race.
    let mut handles = vec![];
    for i in 0..16 {
        let p = if i % 2 == 0 { &a } else { &b };
        let (http, url, body) = (p.http.clone(), p.url("/access/v1/evaluation"), req.clone());
        handles.push(tokio::spawn(async move {
            let r: Value = http.post(url).bearer_auth(GW).json(&body).send().await.unwrap().json().await.unwrap();
            r["decision"] == true
        }));
    }
    let mut permits = 0;
    for h in handles {
        permits += usize::from(h.await.unwrap());
    }
    assert_eq!(permits, 1, "one single-use approval, one permit across replicas");
}

#[tokio::test]
async fn kill_9_of_one_replica_mid_approval_loses_nothing_and_the_other_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let url = shared().fresh_database().unwrap();
    let a = replica(&url, dir.path(), "a", &[]).await;
    let b = replica(&url, dir.path(), "b", &[]).await;
    let mut ids = vec![];
    for _ in 0..6 {
        ids.push(create(&a).await["id"].as_str().unwrap().to_owned());
    }
    // Approvals in flight on A when it is killed: each either committed or not, never half.
    let mut handles = vec![];
    for id in &ids {
        let (http, url) = (a.http.clone(), a.url(&format!("/operator/missions/{id}/approve")));
        handles.push(tokio::spawn(async move { http.post(url).bearer_auth(OP).send().await.map(|r| r.status()) }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    a.kill9().await;
    let mut acknowledged = vec![];
    for (id, h) in ids.iter().zip(handles) {
        if let Ok(Ok(StatusCode::OK)) = h.await {
            acknowledged.push(id.clone());
        }
    }
    // B carries on: every acknowledged approval is there, the rest can still be approved on B.
    for id in &ids {
        let (s, v) = b.op(Method::GET, &format!("/operator/missions/{id}"), None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        if acknowledged.contains(id) {
            assert_eq!(v["state"], "active", "{v}");
        } else if v["state"] == "pending_approval" {
            let (s, v) = b.op(Method::POST, &format!("/operator/missions/{id}/approve"), None).await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
        let (_, v) = b.op(Method::GET, &format!("/operator/missions/{id}"), None).await;
        assert_eq!(v["state"], "active", "{v}");
        assert_eq!(v["version"], 2, "{v}");
    }
    // The feed is whole: creations and approvals, numbered without gaps.
    let seqs = all_seqs(&b).await;
    assert_eq!(seqs, (1..=12).collect::<Vec<i64>>());
}

#[tokio::test]
async fn postgres_restart_gives_503_with_retry_after_then_full_recovery() {
    let dir = tempfile::tempdir().unwrap();
    // Its own server: this test stops it.
    let pg = PgServer::start().unwrap();
    let url = pg.fresh_database().unwrap();
    let a = replica(&url, dir.path(), "a", &["--longpoll-seconds", "20"]).await;
    let b = replica(&url, dir.path(), "b", &["--longpoll-seconds", "20"]).await;
    let m = create(&a).await;
    let id = m["id"].as_str().unwrap().to_owned();
    assert_eq!(a.http.get(a.url("/ready")).send().await.unwrap().status(), StatusCode::OK);

    pg.stop().unwrap();
    // Load while it is down: every answer is a 503 with Retry-After (or, for reads that need no
    // database, a normal answer), never a 500, and the processes stay up.
    for p in [&a, &b] {
        let r = p.http.get(p.url("/ready")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key("retry-after"));
        let r = p.http.get(p.url(&format!("/operator/missions/{id}"))).bearer_auth(OP).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.text().await);
        let r = p.http.post(p.url(&format!("/operator/missions/{id}/approve"))).bearer_auth(OP).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let secs: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=30).contains(&secs));
        let r = p.http.get(p.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "the process itself is alive");
    }

    pg.start_again().unwrap();
    // Full recovery without a restart of either replica.
    let deadline = Instant::now() + Duration::from_secs(60);
    for p in [&a, &b] {
        loop {
            let r = p.http.get(p.url("/ready")).send().await.unwrap();
            if r.status() == StatusCode::OK {
                break;
            }
            assert!(Instant::now() < deadline, "not ready again within 60 s");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (s, v) = b.op(Method::POST, &format!("/operator/missions/{id}/approve"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Long polls on A wake again for writes through B (A's listener reconnected).
    let last = all_seqs(&a).await.last().copied().unwrap();
    let waiter = {
        let (http, url) = (a.http.clone(), a.url("/mission/events"));
        tokio::spawn(async move {
            let r: Value = http
                .post(url)
                .bearer_auth(GW)
                .json(&json!({"ack": [last.to_string()]}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            (Instant::now(), r)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let revoked = Instant::now();
    let (s, _) = b.op(Method::POST, &format!("/operator/missions/{id}/revoke"), None).await;
    assert_eq!(s, StatusCode::OK);
    let (woke, r) = waiter.await.unwrap();
    assert!(woke.duration_since(revoked) < Duration::from_secs(5));
    assert_eq!(r["sets"].as_object().unwrap().len(), 1, "{r}");
    drop(pg);
}
