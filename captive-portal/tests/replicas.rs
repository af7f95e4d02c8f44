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

/// One approval of the stream driven at replica A.
#[derive(Clone, Debug)]
enum Job {
    /// `POST /operator/missions/{id}/approve`.
    Mission(String),
    /// `POST /operator/access-requests/{task}/approve`; the evaluation request its grant answers.
    Task(String, Value),
}

impl Job {
    fn id(&self) -> &str {
        match self {
            Job::Mission(id) | Job::Task(id, _) => id,
        }
    }
}

/// What came of one request of the stream.
#[derive(Debug)]
enum Outcome {
    /// An HTTP answer.
    Answered(StatusCode),
    /// No connection: A was already dead, the request never reached it.
    Refused,
    /// The connection was made and the request sent, then it failed without an answer: cut mid-flight.
    Cut(String),
}

/// Workers that each send the next approval of `jobs` to `base` as soon as the previous one is
/// answered (every request on a fresh connection, so a failure that is not a refused connection
/// means the request was on its way), until the queue is empty or A stops answering.
fn approval_stream(
    base: &str,
    jobs: Vec<Job>,
    workers: usize,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<Vec<(Job, Outcome)>>> {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(jobs)));
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).pool_max_idle_per_host(0).build().unwrap();
    (0..workers)
        .map(|_| {
            let (queue, http, base, answered) = (queue.clone(), http.clone(), base.to_owned(), answered.clone());
            tokio::spawn(async move {
                let mut done = vec![];
                loop {
                    let Some(job) = queue.lock().unwrap().pop_front() else { return done };
                    let req = match &job {
                        Job::Mission(id) => http.post(format!("{base}/operator/missions/{id}/approve")),
                        Job::Task(task, _) => http
                            .post(format!("{base}/operator/access-requests/{task}/approve"))
                            .json(&json!({"duration_seconds": 600})),
                    };
                    let outcome = match req.bearer_auth(OP).send().await {
                        Ok(r) => {
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            Outcome::Answered(r.status())
                        }
                        Err(e) if e.is_connect() => Outcome::Refused,
                        Err(e) => Outcome::Cut(format!("{e:?}")),
                    };
                    let stop = !matches!(outcome, Outcome::Answered(_));
                    done.push((job, outcome));
                    if stop {
                        return done;
                    }
                }
            })
        })
        .collect()
}

/// Poll until `cond` holds (checked every 20 ms), or fail after `within` with `what`.
async fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The arguments of the kill -9 replicas: room for many open requests of one requester.
const KILL_ARGS: [&str; 2] = ["--max-open-requests-per-requester", "1000"];

/// One run of the kill -9 scenario on a fresh database: approvals of Missions and of access
/// requests stream into A, A is killed while they run, B must show every answered approval and let
/// every other one be made exactly once. Returns how many requests of each kind (Missions, tasks)
/// were cut mid-flight.
async fn kill_9_scenario(attempt: usize) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let pg = shared();
    let url = pg.fresh_database().unwrap();
    let db_name = url.rsplit('/').next().unwrap().to_owned();
    let b = replica(&url, dir.path(), "b", &KILL_ARGS).await;
    let a = replica(&url, dir.path(), &format!("a{attempt}"), &KILL_ARGS).await;

    // Prepared through B: Missions pending approval, and single-use access requests.
    const MISSIONS: usize = 40;
    const TASKS: usize = 24;
    let mut missions = vec![];
    for _ in 0..MISSIONS {
        missions.push(Job::Mission(create(&b).await["id"].as_str().unwrap().to_owned()));
    }
    let m = b.active_mission().await;
    let mut tasks = vec![];
    for i in 0..TASKS {
        let (params, digest) = payment(&format!("{}.00", 100 + i), "kill -9");
        let req = eval_req(&m, PARTNER, "http.post", Some(&digest));
        let d = b.evaluate(&req).await;
        assert_eq!(d["decision"], false, "{d}");
        let (s, _, t) = b.submit(Some(&format!("kill-{i}")), &submission(&d, "needed", Some(&params))).await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        tasks.push(Job::Task(t["task"]["id"].as_str().unwrap().to_owned(), req));
    }

    // The streams run; A is killed once both are well under way.
    let answered_m = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answered_t = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut handles = approval_stream(&a.url, missions.clone(), 3, answered_m.clone());
    handles.extend(approval_stream(&a.url, tasks.clone(), 3, answered_t.clone()));
    let load = |c: &std::sync::Arc<std::sync::atomic::AtomicUsize>| c.load(std::sync::atomic::Ordering::Relaxed);
    wait_until(Duration::from_secs(120), "approvals answered by A", || {
        load(&answered_m) >= 6 && load(&answered_t) >= 6
    })
    .await;
    a.kill9().await;
    let mut outcomes: Vec<(Job, Outcome)> = vec![];
    for h in handles {
        outcomes.extend(tokio::time::timeout(Duration::from_secs(120), h).await.expect("a stream ended").unwrap());
    }
    let cut = |mission: bool| {
        outcomes.iter().filter(|(j, o)| matches!(j, Job::Mission(_)) == mission && matches!(o, Outcome::Cut(_))).count()
    };
    let (cut_m, cut_t) = (cut(true), cut(false));
    eprintln!(
        "attempt {attempt}: {} Missions and {} tasks approved by A; cut mid-flight: {cut_m} Missions, {cut_t} tasks",
        load(&answered_m),
        load(&answered_t)
    );
    let answered_ok =
        |id: &str| outcomes.iter().any(|(j, o)| j.id() == id && matches!(o, Outcome::Answered(s) if s.is_success()));
    for (j, o) in &outcomes {
        match o {
            Outcome::Answered(s) => assert!(s.is_success(), "{j:?} answered {s} before the kill"),
            Outcome::Cut(e) => eprintln!("cut mid-flight: {}: {e}", j.id()),
            Outcome::Refused => {}
        }
    }

    // Missions: an answered approval is on B, with its audit row; any other is whole or absent,
    // and B approves exactly once what is still pending.
    for job in &missions {
        let Job::Mission(id) = job else { panic!("{job:?}") };
        let path = format!("/operator/missions/{id}");
        let (s, v) = b.op(Method::GET, &path, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        match v["state"].as_str().unwrap() {
            "active" => {}
            "pending_approval" => {
                assert!(!answered_ok(id), "approval of {id} was answered 200 by A but is lost: {v}");
                assert_eq!(v["version"], 1, "{v}");
                assert_eq!(v["transitions"].as_array().unwrap().len(), 1, "{v}");
                let (s, r) = b.op(Method::POST, &format!("{path}/approve"), None).await;
                assert_eq!(s, StatusCode::OK, "{r}");
            }
            other => panic!("{id} is {other}: {v}"),
        }
        let (s, r) = b.op(Method::POST, &format!("{path}/approve"), None).await;
        assert_eq!(s, StatusCode::CONFLICT, "approved twice: {r}");
        let (_, v) = b.op(Method::GET, &path, None).await;
        assert_eq!((v["state"].as_str(), v["version"].as_i64()), (Some("active"), Some(2)), "{v}");
        let trail = v["transitions"].as_array().unwrap();
        assert_eq!(trail.len(), 2, "{v}");
        assert_eq!((trail[1]["from"].as_str(), trail[1]["to"].as_str()), (Some("pending_approval"), Some("active")));
        assert_eq!(trail[1]["actor"], "operator", "{v}");
        // And it is usable: B mints its token.
        let (s, t) = b.op(Method::POST, &format!("{path}/token"), Some(json!({}))).await;
        assert_eq!(s, StatusCode::OK, "{t}");
    }

    // Access requests: approved with exactly one grant (and its audit row), or still pending and
    // approved on B exactly once; never two grants; each single-use grant yields exactly one permit.
    for job in &tasks {
        let Job::Task(task, req) = job else { panic!("{job:?}") };
        let path = format!("/operator/access-requests/{task}");
        let (s, v) = b.op(Method::GET, &path, None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        match v["task"]["status"].as_str().unwrap() {
            "approved" => {}
            "pending" => {
                assert!(!answered_ok(task), "approval of {task} was answered 200 by A but is lost: {v}");
                assert!(v.get("grant").is_none_or(Value::is_null), "a pending task with a grant: {v}");
                let (s, r) =
                    b.op(Method::POST, &format!("{path}/approve"), Some(json!({"duration_seconds": 600}))).await;
                assert_eq!(s, StatusCode::OK, "{r}");
            }
            other => panic!("{task} is {other}: {v}"),
        }
        let (s, r) = b.op(Method::POST, &format!("{path}/approve"), Some(json!({"duration_seconds": 600}))).await;
        assert_eq!(s, StatusCode::CONFLICT, "approved twice: {r}");
        let (_, v) = b.op(Method::GET, &path, None).await;
        assert_eq!(v["task"]["status"], "approved", "{v}");
        assert_eq!(v["grant"]["single_use"], true, "{v}");
        let approvals = v["audit"].as_array().unwrap().iter().filter(|a| a["action"] == "approve").count();
        assert_eq!(approvals, 1, "{v}");
        let grants =
            pg.psql(&db_name, &format!("SELECT count(*) FROM access_grants WHERE task_id = '{task}'")).unwrap();
        assert_eq!(grants, "1", "grants of {task}");
        let evaluations: Vec<_> = (0..4)
            .map(|_| {
                let (http, url, body) = (b.http.clone(), b.url("/access/v1/evaluation"), req.clone());
                tokio::spawn(async move {
                    let r: Value =
                        http.post(url).bearer_auth(GW).json(&body).send().await.unwrap().json().await.unwrap();
                    r["decision"] == true
                })
            })
            .collect();
        let mut permits = 0;
        for e in evaluations {
            permits += usize::from(e.await.unwrap());
        }
        assert_eq!(permits, 1, "one permit of the single-use grant of {task}");
    }
    let total = pg.psql(&db_name, "SELECT count(*) FROM access_grants").unwrap();
    assert_eq!(total, TASKS.to_string());

    // The feed on B is whole: every creation and approval, numbered 1..=n without a gap.
    let n = i64::try_from(2 * (MISSIONS + 1)).unwrap();
    assert_eq!(pg.psql(&db_name, "SELECT last_seq FROM mission_event_counter").unwrap(), n.to_string());
    assert_eq!(all_seqs(&b).await, (1..=n).collect::<Vec<i64>>());
    // B still serves new work.
    let id = create(&b).await["id"].as_str().unwrap().to_owned();
    let (s, v) = b.op(Method::POST, &format!("/operator/missions/{id}/approve"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    (cut_m, cut_t)
}

#[tokio::test]
async fn kill_9_of_one_replica_mid_approval_loses_nothing_and_the_other_carries_on() {
    // A kill that falls between requests proves nothing: run the scenario again until approvals of
    // both kinds were cut mid-flight (every run is checked in full either way).
    for attempt in 1..=5 {
        let (cut_m, cut_t) = kill_9_scenario(attempt).await;
        if cut_m > 0 && cut_t > 0 {
            return;
        }
    }
    panic!("in 5 runs the kill never cut a Mission approval and an access-request approval mid-flight");
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

#[tokio::test]
async fn a_replica_started_while_postgres_is_down_waits_and_becomes_ready_when_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    // Its own server: this test stops it before the replica starts.
    let pg = PgServer::start().unwrap();
    let url = pg.fresh_database().unwrap();
    pg.stop().unwrap();

    // The replica starts anyway: alive, not ready, everything else a 503 with Retry-After.
    let mut a = replica(&url, dir.path(), "a", &[]).await;
    for _ in 0..3 {
        let r = a.http.get(a.url("/ready")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let secs: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=30).contains(&secs));
        let r = a.http.get(a.url("/healthz")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "the process itself is alive");
        let r = a.http.get(a.url("/operator/missions")).bearer_auth(OP).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key("retry-after"));
        assert!(a.process.try_wait().unwrap().is_none(), "the replica exited while Postgres was down");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Each failed attempt is logged, plainly.
    let log = dir.path().join("a.log");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("the database is still unreachable; not ready, retrying") {
            assert!(!text.contains("panicked"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "no retry logged within 60 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Postgres comes up: the replica becomes ready without a restart, and serves.
    pg.start_again().unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = a.http.get(a.url("/ready")).send().await {
            if r.status() == StatusCode::OK {
                break;
            }
        }
        assert!(a.process.try_wait().unwrap().is_none(), "the replica exited");
        assert!(Instant::now() < deadline, "not ready within 90 s of Postgres starting");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = create(&a).await;
    let id = m["id"].as_str().unwrap();
    let (s, v) = a.op(Method::POST, &format!("/operator/missions/{id}/approve"), None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(all_seqs(&a).await, vec![1, 2]);
    // A second replica started now is ready at once, and sees the same Mission.
    let b = replica(&url, dir.path(), "b", &[]).await;
    assert_eq!(b.http.get(b.url("/ready")).send().await.unwrap().status(), StatusCode::OK);
    let (s, v) = b.op(Method::GET, &format!("/operator/missions/{id}"), None).await;
    assert_eq!((s, v["state"].as_str()), (StatusCode::OK, Some("active")), "{v}");
    drop(pg);
}

#[tokio::test]
async fn configuration_errors_of_the_database_still_fail_fast_naming_the_flag() {
    for db in ["mysql://user:secret-pw@127.0.0.1:3306/portal", "postgres://user:secret-pw@127.0.0.1:1/db?sslmode=bogus"]
    {
        let started = Instant::now();
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new(BIN)
                .args(["serve", "--db", db, "--listen", "127.0.0.1:0", "--issuer", ISS, "--operator-token", OP])
                .args(["--gateway-credential", GW])
                .stdin(std::process::Stdio::null())
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{db}: still running after 30 s (retrying a configuration error?)"))
        .unwrap();
        assert!(!out.status.success(), "{db}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--db"), "{db}: {err}");
        assert!(!err.contains("secret-pw") && !err.contains("panicked"), "{err}");
        assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "{db}: it said it was listening");
        assert!(started.elapsed() < Duration::from_secs(20), "{db}: took {:?}", started.elapsed());
    }
}

/// A replica must never sign with a key whose lease it could not record: when its key's row is gone
/// (another replica rotated away from it and deleted it once dead), it takes up the current key; with
/// no key row at all, signing fails instead. Both engines.
#[tokio::test]
async fn a_signing_key_whose_row_is_gone_is_never_used_to_sign() {
    use captive_portal::keys::KeyRing;
    use captive_portal::store::{DbTarget, Store, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("keys.db");
    let pg_url = shared().fresh_database().unwrap();
    for (target, raw_url) in [
        (DbTarget::Sqlite(sqlite.clone()), format!("sqlite://{}", sqlite.display())),
        (DbTarget::Postgres(pg_url.clone()), pg_url.clone()),
    ] {
        let store = Store::connect(&target).await.unwrap();
        // The typed error of the store itself.
        match store.extend_key_lease("no-such-kid", now() + 60).await {
            Err(StoreError::KeyGone { kid }) => assert_eq!(kid, "no-such-kid"),
            other => panic!("{target:?}: {other:?}"),
        }
        let ring = KeyRing::load(&store, now()).await.unwrap();
        let k1 = ring.current().kid.clone();
        // Another replica rotates, and k1 is deleted as dead (as if its lease had run out).
        let other = KeyRing::load(&store, now()).await.unwrap();
        let (previous, k2) = other.rotate(&store, now()).await.unwrap();
        assert_eq!(previous, k1);
        assert_eq!(store.delete_dead_keys(i64::MAX / 2).await.unwrap(), 1, "{target:?}");
        // Signing through the ring that still holds k1: k2 is taken up and leased instead.
        let until = now() + 600;
        let key = ring.signer_until(&store, until).await.unwrap();
        assert_eq!(key.kid, k2, "{target:?}");
        assert_eq!(ring.current().kid, k2, "{target:?}");
        let published = store.published_keys(now()).await.unwrap();
        assert_eq!(published.len(), 1, "{target:?}: {published:?}");
        assert_eq!(published[0].kid, k2);
        assert!(published[0].signed_until >= until, "{target:?}: the lease of {k2} is not recorded");
        // No key row at all: an error, and nothing is signed.
        let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&raw_url).await.unwrap();
        sqlx::query("DELETE FROM signing_keys").execute(&pool).await.unwrap();
        pool.close().await;
        match ring.signer_until(&store, now() + 86_400).await {
            Err(StoreError::KeyGone { kid }) => assert_eq!(kid, k2, "{target:?}"),
            Ok(k) => panic!("{target:?}: signed with {} though its lease could not be recorded", k.kid),
            Err(e) => panic!("{target:?}: {e}"),
        }
        store.close().await;
    }
}
