//! Approver notifications against the real portal binary: a loopback webhook receiver written here
//! gets the Slack-shaped and the signed generic deliveries, verifies the HMAC, and counts what it got
//! through a receiver outage and a `kill -9` of the portal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxStatus};
use axum::routing::post;
use axum::Router;
use common::*;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "webhook-signing-secret-0123456789";

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    event_id: Option<String>,
    body: Value,
}

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Got>>>,
    bad_signatures: Arc<Mutex<u32>>,
}

/// Verify `X-Missiongate-Signature: t=<unix>,v1=<hex>` over `<t>.<body>`, as a receiver would.
fn verify(headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let sig =
        headers.get("x-missiongate-signature").ok_or("no signature header")?.to_str().map_err(|e| e.to_string())?;
    let mut t = None;
    let mut v1 = None;
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_owned()),
            Some(("v1", x)) => v1 = Some(x.to_owned()),
            _ => return Err(format!("bad part {part}")),
        }
    }
    let (t, v1) = (t.ok_or("no t")?, v1.ok_or("no v1")?);
    let ts: i64 = t.parse().map_err(|_| "t is not a number")?;
    if (now() - ts).abs() > 300 {
        return Err("stale timestamp".into());
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected = hex::decode(&v1).map_err(|_| "v1 is not hex")?;
    mac.verify_slice(&expected).map_err(|_| "signature mismatch".to_owned())
}

async fn slack(State(r): State<Receiver>, body: Bytes) -> AxStatus {
    let body: Value = serde_json::from_slice(&body).unwrap();
    r.got.lock().unwrap().push(Got { path: "/slack".into(), event_id: None, body });
    AxStatus::OK
}

async fn generic(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> AxStatus {
    if let Err(e) = verify(&headers, &body) {
        eprintln!("receiver: {e}");
        *r.bad_signatures.lock().unwrap() += 1;
        return AxStatus::UNAUTHORIZED;
    }
    let event_id = headers.get("x-missiongate-event-id").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event_id.as_deref(), body["id"].as_str(), "the header and the body name the same event");
    r.got.lock().unwrap().push(Got { path: "/generic".into(), event_id, body });
    AxStatus::NO_CONTENT
}

impl Receiver {
    /// Serve on `addr` until the returned sender is dropped or fired.
    async fn serve(&self, addr: SocketAddr) -> tokio::sync::oneshot::Sender<()> {
        let app = Router::new().route("/slack", post(slack)).route("/generic", post(generic)).with_state(self.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        tx
    }

    fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn generic_of(&self, kind: &str) -> Vec<Got> {
        self.all().into_iter().filter(|g| g.path == "/generic" && g.body["type"] == kind).collect()
    }

    fn slack_containing(&self, needle: &str) -> Vec<Got> {
        self.all()
            .into_iter()
            .filter(|g| g.path == "/slack" && g.body["text"].as_str().is_some_and(|t| t.contains(needle)))
            .collect()
    }

    /// Wait until `pred` holds (10 s at most).
    async fn wait_for(&self, what: &str, pred: impl Fn(&Receiver) -> bool) {
        for _ in 0..100 {
            if pred(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what}; got {:#?}", self.all());
    }
}

fn hook_args(addr: SocketAddr) -> Vec<String> {
    vec![
        "--notify-slack".into(),
        format!("http://{addr}/slack"),
        "--notify-webhook".into(),
        format!("http://{addr}/generic"),
        "--notify-secret".into(),
        SECRET.into(),
        "--notify-retry-base-ms".into(),
        "200".into(),
    ]
}

fn free_addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// A pending access request for `resource`; returns (task id, denial).
async fn request(p: &Portal, m: &Value, resource: &str, key: &str) -> (String, Value) {
    let d = p.evaluate(&eval_req(m, resource, "http.get", None)).await;
    assert_eq!(d["context"]["next_action"], "request", "{d}");
    let (s, _, t) = p.submit(Some(key), &submission(&d, "the quarterly run needs it", None)).await;
    assert_eq!(s, StatusCode::CREATED, "{t}");
    (t["task"]["id"].as_str().unwrap().to_owned(), d)
}

#[tokio::test]
async fn create_approve_deny_and_expiry_are_delivered_slack_shaped_and_signed() {
    let addr = free_addr();
    let rx = Receiver::default();
    let _stop = rx.serve(addr).await;
    let (_dir, db) = temp_db();
    let args = hook_args(addr);
    let mut extra: Vec<&str> = args.iter().map(String::as_str).collect();
    extra.extend(["--task-ttl-seconds", "5"]);
    let p = Portal::start(&db, &extra).await;
    let m = p.active_mission().await;
    let mission_id = m["id"].as_str().unwrap();

    // Created.
    let (task, d) = request(&p, &m, "https://files.example/reports", "n-1").await;
    rx.wait_for("the created event", |r| {
        r.generic_of("access_request.created").len() == 1 && r.slack_containing("asks for access").len() == 1
    })
    .await;
    let ev = &rx.generic_of("access_request.created")[0];
    let b = &ev.body;
    assert_eq!(b["access_request"]["id"], task);
    assert_eq!(b["access_request"]["status"], "pending");
    assert_eq!(b["agent"], AGENT);
    assert_eq!(b["mission"]["id"], mission_id);
    assert_eq!(b["mission"]["issuer"], ISS);
    assert_eq!(b["destination"], "https://files.example/reports");
    assert_eq!(b["operation"], "http.get");
    assert_eq!(b["approval_url"], d["context"]["user_portal_url"], "the link is the approval page");
    assert!(ev.event_id.as_deref().is_some_and(|i| i.starts_with("evt_")));
    let s = &rx.slack_containing("asks for access")[0].body;
    let text = s["text"].as_str().unwrap();
    for needle in [
        AGENT,
        mission_id,
        "https://files.example/reports",
        "http.get",
        d["context"]["user_portal_url"].as_str().unwrap(),
    ] {
        assert!(text.contains(needle), "the Slack text names {needle}: {text}");
    }
    assert_eq!(s["blocks"][0]["type"], "section");
    assert_eq!(s["blocks"][0]["text"]["type"], "mrkdwn");

    // Approved by the operator.
    let (st, v) = p
        .op(Method::POST, &format!("/operator/access-requests/{task}/approve"), Some(json!({"duration_seconds": 60})))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    rx.wait_for("the approved event", |r| {
        r.generic_of("access_request.approved").len() == 1 && r.slack_containing("approved").len() == 1
    })
    .await;
    let b = &rx.generic_of("access_request.approved")[0].body;
    assert_eq!(b["access_request"]["id"], task);
    assert_eq!(b["access_request"]["status"], "approved");
    assert_eq!(b["access_request"]["decided_by"], "operator");

    // Denied.
    let (task2, _) = request(&p, &m, "https://files.example/payroll", "n-2").await;
    let (st, v) = p
        .op(Method::POST, &format!("/operator/access-requests/{task2}/deny"), Some(json!({"reason": "not this one"})))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    rx.wait_for("the denied event", |r| r.generic_of("access_request.denied").len() == 1).await;
    let b = &rx.generic_of("access_request.denied")[0].body;
    assert_eq!(b["access_request"]["id"], task2);
    assert_eq!(b["access_request"]["reason"], "not this one");

    // Nobody decides: the request expires (a denial), the agent's task says so, approvers hear it.
    let (task3, _) = request(&p, &m, "https://files.example/archive", "n-3").await;
    rx.wait_for("the expired event", |r| r.generic_of("access_request.expired").len() == 1).await;
    let b = &rx.generic_of("access_request.expired")[0].body;
    assert_eq!(b["access_request"]["id"], task3);
    assert_eq!(b["access_request"]["status"], "expired");
    assert_eq!(rx.slack_containing("expired").len(), 1);
    let (_, _, st) = p.get(&p.url(&format!("/access/v1/requests/{task3}"))).await;
    assert_eq!(st["task"]["status"], "expired", "{st}");

    // Each event once per webhook, all signatures good, and no request answered slower for it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let all = rx.all();
    assert_eq!(all.iter().filter(|g| g.path == "/generic").count(), 6, "{all:#?}");
    assert_eq!(all.iter().filter(|g| g.path == "/slack").count(), 6, "{all:#?}");
    assert_eq!(*rx.bad_signatures.lock().unwrap(), 0);
    // A receiver with the wrong key refuses: the signature binds the key.
    let mut h = HeaderMap::new();
    let body = br#"{"id":"evt_1"}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(b"another key").unwrap();
    mac.update(format!("{}.", now()).as_bytes());
    mac.update(body);
    let forged = format!("t={},v1={}", now(), hex::encode(mac.finalize().into_bytes()));
    h.insert("x-missiongate-signature", forged.parse().unwrap());
    assert!(verify(&h, body).is_err());
}

/// Count generic deliveries per event id.
fn per_event(rx: &Receiver) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for g in rx.all().into_iter().filter(|g| g.path == "/generic") {
        *m.entry(g.event_id.unwrap()).or_insert(0) += 1;
    }
    m
}

async fn failed_attempts(p: &Portal) -> f64 {
    let resp = p.http.get(p.url("/metrics")).bearer_auth(OP).send().await.unwrap();
    let text = resp.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "missiongate_portal_webhook_deliveries_total" && s.labels.get("result") == Some("failed")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn a_receiver_down_then_up_gets_each_event_once_and_the_agent_never_waits() {
    let addr = free_addr();
    let (_dir, db) = temp_db();
    let args = hook_args(addr);
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Portal::start(&db, &extra).await;
    let m = p.active_mission().await;
    // The receiver is down: the agent's submission is answered at once all the same.
    let started = std::time::Instant::now();
    let (task, _) = request(&p, &m, "https://down.example/x", "d-1").await;
    assert!(started.elapsed() < Duration::from_secs(3), "the agent's request does not wait for webhooks");
    // Wait until attempts failed (connection refused) and were rescheduled.
    for _ in 0..100 {
        if failed_attempts(&p).await >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed_attempts(&p).await >= 2.0, "deliveries were attempted and failed while the receiver was down");
    let rx = Receiver::default();
    let _stop = rx.serve(addr).await;
    rx.wait_for("the retried delivery", |r| r.generic_of("access_request.created").len() == 1).await;
    rx.wait_for("the retried Slack delivery", |r| r.slack_containing("asks for access").len() == 1).await;
    assert_eq!(rx.generic_of("access_request.created")[0].body["access_request"]["id"], task);
    // Longer than several backoff rounds: nothing is sent twice.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(rx.all().len(), 2, "{:#?}", rx.all());
    assert!(per_event(&rx).values().all(|&n| n == 1));
}

#[tokio::test]
async fn a_pending_delivery_survives_kill_9_and_is_delivered_once_after_the_restart() {
    let addr = free_addr();
    let (_dir, db) = temp_db();
    let args = hook_args(addr);
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = Portal::start(&db, &extra).await;
    let m = p.active_mission().await;
    let (task, _) = request(&p, &m, "https://crash.example/x", "k-1").await;
    for _ in 0..100 {
        if failed_attempts(&p).await >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failed_attempts(&p).await >= 1.0);
    p.kill9().await;

    let rx = Receiver::default();
    let _stop = rx.serve(addr).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.all().is_empty(), "nobody sends while the portal is down");
    let p = Portal::start(&db, &extra).await;
    rx.wait_for("the delivery after the restart", |r| {
        r.generic_of("access_request.created").len() == 1 && r.slack_containing("asks for access").len() == 1
    })
    .await;
    assert_eq!(rx.generic_of("access_request.created")[0].body["access_request"]["id"], task);
    // A decision after the restart is delivered too, and nothing twice.
    let (st, v) = p.op(Method::POST, &format!("/operator/access-requests/{task}/deny"), Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    rx.wait_for("the denied event", |r| r.generic_of("access_request.denied").len() == 1).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(rx.all().len(), 4, "{:#?}", rx.all());
    assert!(per_event(&rx).values().all(|&n| n == 1));
    assert_eq!(*rx.bad_signatures.lock().unwrap(), 0);
}

#[tokio::test]
async fn notification_configuration_is_checked() {
    let (_dir, db) = temp_db();
    let err = Portal::try_start(&db, "127.0.0.1:0", None, &["--notify-webhook", "http://127.0.0.1:9/x"]).await;
    assert!(err.is_err(), "a generic webhook without a secret is refused");
    let err = Portal::try_start(&db, "127.0.0.1:0", None, &["--notify-slack", "ftp://example.com/x"]).await;
    assert!(err.is_err(), "a non-http webhook is refused");
}
