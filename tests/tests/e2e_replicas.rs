//! Issue 15 end to end: two captive-portal replicas on one real Postgres (started by the test kit,
//! tests/src/postgres.rs) and two real Envoys with the filter, gateway 1 talking to replica A and
//! gateway 2 to replica B (same issuer: one deployment).
//! - A Mission created through A, approved through B, its token accepted by both gateways; a
//!   revocation through A bites at gateway 2 through its long polls on B (Mission Status answers are
//!   fresh for 30 s, so only the event feed can make it bite this fast).
//! - An access request submitted through A, approved on B, its single-use permit used exactly once
//!   across both gateways; concurrent approvals of one task from both replicas (one wins, one 409).
//! - `kill -9` of A while a stream of Mission and access-request approvals runs into it (rerun until
//!   requests of both kinds were cut mid-flight): every answered approval is on B, the rest whole or
//!   absent and approvable on B exactly once, one grant and one permit per task, the feed without a
//!   gap; Postgres restarted under load: 503 with `Retry-After` while it is down, full recovery after.
//! - The README's deployment, `deploy/replicas/portal-lb.yaml`: validated by `envoy --mode validate`,
//!   then run in front of both replicas with a gateway behind it; a replica killed or cut off from
//!   the database leaves the rotation and nothing fails.

use missiongate_testkit::envoy::EnvoyCmd;
use missiongate_tests::envoy::{self, Envoy, Opts};
use missiongate_tests::http::{Req, Response};
use missiongate_tests::portal::Portal;
use missiongate_tests::postgres::{shared, PgServer};
use missiongate_tests::upstream::Upstream;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FRESH: [&str; 2] = ["--status-fresh-seconds", "30"];

/// Replicas A and B on `db_url`, both under A's issuer.
fn replicas(db_url: &str) -> (Portal, Portal) {
    let (pa, pb) = (missiongate_tests::free_port(), missiongate_tests::free_port());
    let issuer = format!("http://127.0.0.1:{pa}");
    let a = Portal::start_replica(pa, db_url, &issuer, &FRESH);
    let b = Portal::start_replica(pb, db_url, &issuer, &FRESH);
    (a, b)
}

/// A gateway trusting the deployment's issuer (A's URL) and talking to `via`.
fn gateway(up: &Upstream, a: &Portal, via: &Portal) -> Envoy {
    let mut opts = Opts { concurrency: 1, events: true, pdp: true, ..Opts::default() };
    if via.port != a.port {
        opts.replace = vec![(format!("port_value: {}", a.port), format!("port_value: {}", via.port))];
    }
    Envoy::start(up.port, a.port, opts)
}

fn get(envoy: &Envoy, token: &str) -> Response {
    Req::new("GET", "/v1/invoices").bearer(token).send(envoy.port)
}

fn until_status(envoy: &Envoy, token: &str, status: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = get(envoy, token);
        if r.status == status {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "still {} after {within:?} (wanted {status}): {}", r.status, r.text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pay(envoy: &Envoy, token: &str, body: &str) -> Response {
    Req::new("POST", "/v1/payments")
        .bearer(token)
        .header("content-type", "application/json")
        .body(body)
        .send(envoy.port)
}

/// Block a payment at `via`, ask for it through `asked`; returns the task id.
fn request_payment(asked: &Portal, via: &Envoy, token: &str, body: &str) -> String {
    let denial = pay(via, token, body);
    assert_eq!(denial.status, 511, "{}", denial.text());
    let params = json!({"method": "POST", "target": "https://api.partner.example/v1/payments",
                        "content_type": "application/json",
                        "body": serde_json::from_str::<Value>(body).unwrap()});
    let r = asked.request_access(&denial.json(), &missiongate_tests::rand_id("idem-"), Some(params), "pay once");
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["task"]["id"].as_str().unwrap().to_owned()
}

#[test]
fn missions_and_access_requests_across_two_replicas_and_two_gateways() {
    let db = shared().fresh_database().unwrap();
    let (a, b) = replicas(&db);
    let up = Upstream::start(None);
    let g1 = gateway(&up, &a, &a);
    let g2 = gateway(&up, &a, &b);

    // Created through A, approved through B, token minted by A: both gateways accept it.
    let id = a.create_mission(&["http.get", "payments.create"], 3600);
    assert_eq!(b.lifecycle(&id, "approve").status, 200);
    let token = a.token(&id, None);
    for g in [&g1, &g2] {
        let r = get(g, &token);
        assert_eq!(r.status, 200, "{}", r.text());
    }

    // An access request submitted through A, approved on B: one permit in total.
    let body = r#"{"amount":"21.00","currency":"EUR","to":"acct_replicas"}"#;
    let task = request_payment(&a, &g1, &token, body);
    let r = b.approve_request(&task, 3600);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["grant"]["single_use"], true);
    std::thread::sleep(Duration::from_millis(1100)); // past the filters' memory of the denial
    let handles: Vec<_> = [g1.port, g2.port]
        .into_iter()
        .flat_map(|p| (0..4).map(move |_| p))
        .map(|port| {
            let (token, body) = (token.clone(), body.to_owned());
            std::thread::spawn(move || {
                Req::new("POST", "/v1/payments")
                    .bearer(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send(port)
                    .status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200 || *s == 403), "{statuses:?}");
    assert_eq!(up.seen("/v1/payments"), 1);

    // Concurrent approvals of one task from both replicas: the first decision wins, the other 409.
    let body2 = r#"{"amount":"22.00","currency":"EUR","to":"acct_replicas"}"#;
    let task2 = request_payment(&b, &g2, &token, body2);
    let (ta, tb) = (task2.clone(), task2.clone());
    let (pa, pb) = (a.port, b.port);
    let approve = |port: u16, task: String| {
        std::thread::spawn(move || {
            Req::new("POST", &format!("/operator/access-requests/{task}/approve"))
                .header("Host", &format!("127.0.0.1:{port}"))
                .header("Authorization", &format!("Bearer {}", missiongate_tests::portal::OPERATOR_TOKEN))
                .header("Content-Type", "application/json")
                .body(json!({"duration_seconds": 600}).to_string())
                .send(port)
        })
    };
    let (ra, rb) = (approve(pa, ta), approve(pb, tb));
    let (ra, rb) = (ra.join().unwrap(), rb.join().unwrap());
    let mut both = [ra.status, rb.status];
    both.sort_unstable();
    assert_eq!(both, [200, 409], "{} / {}", ra.text(), rb.text());
    let loser = if ra.status == 409 { &ra } else { &rb };
    assert!(loser.text().contains("invalid_task_state"), "{}", loser.text());

    // A revocation through A bites at both gateways; gateway 2 learns it from B's event feed.
    assert_eq!(a.lifecycle(&id, "revoke").status, 200);
    let t2 = until_status(&g2, &token, 401, Duration::from_secs(5));
    let t1 = until_status(&g1, &token, 401, Duration::from_secs(5));
    eprintln!("revocation through A bit at gateway 2 (via B) in {t2:?}, at gateway 1 in {t1:?}");
    assert_eq!(get(&g2, &token).json()["mission"]["state"], "revoked");
}

/// One approval streamed at replica A.
#[derive(Clone, Debug)]
enum Job {
    /// A Mission to approve.
    Mission(String),
    /// An access-request task to approve, and the payment body it is for.
    Task(String, String),
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
    Answered(u16),
    /// Connection refused: A was already dead; the request never reached it.
    Refused,
    /// Connected and sent, then no answer: cut mid-flight by the kill.
    Cut(String),
}

fn op_req(method: &str, path: &str, port: u16, body: &str) -> Req {
    Req::new(method, path)
        .header("Host", &format!("127.0.0.1:{port}"))
        .header("Authorization", &format!("Bearer {}", missiongate_tests::portal::OPERATOR_TOKEN))
        .header("Content-Type", "application/json")
        .body(body.to_owned())
}

/// `workers` threads each sending the next approval of `jobs` to `port` as soon as the previous
/// one is answered (a fresh connection per request), until the queue is empty or A stops answering.
fn approval_stream(
    port: u16,
    jobs: Vec<Job>,
    workers: usize,
    answered: &std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<std::thread::JoinHandle<Vec<(Job, Outcome)>>> {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(jobs)));
    (0..workers)
        .map(|_| {
            let (queue, answered) = (queue.clone(), answered.clone());
            std::thread::spawn(move || {
                let mut done = vec![];
                loop {
                    let Some(job) = queue.lock().unwrap().pop_front() else { return done };
                    let req = match &job {
                        Job::Mission(id) => op_req("POST", &format!("/operator/missions/{id}/approve"), port, "{}"),
                        Job::Task(task, _) => op_req(
                            "POST",
                            &format!("/operator/access-requests/{task}/approve"),
                            port,
                            &json!({"duration_seconds": 600}).to_string(),
                        ),
                    };
                    let outcome = match req.try_send(port) {
                        Ok(r) => {
                            answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            Outcome::Answered(r.status)
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
                        Err(e) => Outcome::Cut(e.to_string()),
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

/// Every SET jti of B's event feed, read with the gateway credential (acknowledging as it goes).
fn feed_seqs(p: &Portal) -> Vec<i64> {
    let mut out = vec![];
    let mut ack: Vec<String> = vec![];
    loop {
        let r = Req::new("POST", "/mission/events")
            .header("Host", &format!("127.0.0.1:{}", p.port))
            .header("Authorization", &format!("Bearer {}", missiongate_tests::portal::GATEWAY_CREDENTIAL))
            .header("Content-Type", "application/json")
            .body(json!({"ack": ack, "returnImmediately": true, "maxEvents": 100}).to_string())
            .send(p.port);
        assert_eq!(r.status, 200, "{}", r.text());
        let mut seqs: Vec<i64> = r.json()["sets"].as_object().unwrap().keys().map(|k| k.parse().unwrap()).collect();
        seqs.sort_unstable();
        let Some(max) = seqs.last().copied() else { return out };
        out.extend(seqs);
        ack = vec![max.to_string()];
    }
}

#[test]
fn kill_9_of_a_replica_and_a_postgres_restart_under_load() {
    let pg = PgServer::start().unwrap();
    let db = pg.fresh_database().unwrap();
    let db_name = db.rsplit('/').next().unwrap().to_owned();
    let (pa, pb) = (missiongate_tests::free_port(), missiongate_tests::free_port());
    let issuer = format!("http://127.0.0.1:{pa}");
    let args = [FRESH[0], FRESH[1], "--max-open-requests-per-requester", "1000"];
    let mut a = Portal::start_replica(pa, &db, &issuer, &args);
    let b = Portal::start_replica(pb, &db, &issuer, &args);
    let up = Upstream::start(None);
    let g2 = gateway(&up, &a, &b);
    let payer = a.create_mission(&["http.get", "payments.create"], 3600);
    assert_eq!(a.lifecycle(&payer, "approve").status, 200);
    let pay_token = b.token(&payer, None);

    // kill -9 of A while approvals of Missions and of access requests stream into it. A kill that
    // falls between requests proves nothing: the scenario runs again (A restarted, a fresh batch)
    // until requests of both kinds were cut mid-flight; every run is checked in full.
    const MISSIONS: usize = 30;
    const TASKS: usize = 16;
    let mut ids: Vec<String> = vec![];
    let mut proven = false;
    for attempt in 1..=5 {
        if attempt > 1 {
            a.restart();
        }
        let missions: Vec<Job> = (0..MISSIONS).map(|_| Job::Mission(b.create_mission(&["http.get"], 3600))).collect();
        let tasks: Vec<Job> = (0..TASKS)
            .map(|i| {
                let body = format!(r#"{{"amount":"{attempt}{i:02}.00","currency":"EUR","to":"acct_kill9"}}"#);
                Job::Task(request_payment(&b, &g2, &pay_token, &body), body)
            })
            .collect();
        let answered_m = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let answered_t = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut streams = approval_stream(a.port, missions.clone(), 3, &answered_m);
        streams.extend(approval_stream(a.port, tasks.clone(), 3, &answered_t));
        let load = |c: &std::sync::Arc<std::sync::atomic::AtomicUsize>| c.load(std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(120);
        while load(&answered_m) < 5 || load(&answered_t) < 5 {
            assert!(Instant::now() < deadline, "A answered no stream of approvals within 120 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        a.kill9();
        let outcomes: Vec<(Job, Outcome)> = streams.into_iter().flat_map(|h| h.join().unwrap()).collect();
        let cut = |mission: bool| {
            outcomes
                .iter()
                .filter(|(j, o)| matches!(j, Job::Mission(_)) == mission && matches!(o, Outcome::Cut(_)))
                .count()
        };
        let (cut_m, cut_t) = (cut(true), cut(false));
        eprintln!(
            "attempt {attempt}: A approved {} Missions and {} tasks; cut mid-flight: {cut_m} Missions, {cut_t} tasks",
            load(&answered_m),
            load(&answered_t)
        );
        for (j, o) in &outcomes {
            match o {
                Outcome::Answered(s) => assert!((200..300).contains(s), "{j:?} answered {s} before the kill"),
                Outcome::Cut(e) => eprintln!("cut mid-flight: {}: {e}", j.id()),
                Outcome::Refused => {}
            }
        }
        let answered_ok =
            |id: &str| outcomes.iter().any(|(j, o)| j.id() == id && matches!(o, Outcome::Answered(s) if *s < 300));

        // Missions: an answered approval is on B with its audit row; the others whole or absent, and
        // B approves exactly once what is still pending.
        for job in &missions {
            let id = job.id();
            let path = format!("/operator/missions/{id}");
            let shown = b.op("GET", &path, None).json();
            match shown["state"].as_str() {
                Some("active") => {}
                Some("pending_approval") => {
                    assert!(!answered_ok(id), "A answered the approval of {id}, B does not have it: {shown}");
                    assert_eq!(shown["transitions"].as_array().unwrap().len(), 1, "{shown}");
                    assert_eq!(b.lifecycle(id, "approve").status, 200);
                }
                _ => panic!("{id}: {shown}"),
            }
            assert_eq!(b.lifecycle(id, "approve").status, 409, "{id} approved twice");
            let shown = b.op("GET", &path, None).json();
            assert_eq!((shown["state"].as_str(), shown["version"].as_i64()), (Some("active"), Some(2)), "{shown}");
            let trail = shown["transitions"].as_array().unwrap();
            assert_eq!(trail.len(), 2, "{shown}");
            assert_eq!((trail[1]["to"].as_str(), trail[1]["actor"].as_str()), (Some("active"), Some("operator")));
            b.token(id, None); // usable: B mints its token
            ids.push(id.to_owned());
        }
        // Access requests: approved with exactly one grant and one audit row, or pending and then
        // approved on B exactly once. Never two grants.
        for job in &tasks {
            let task = job.id();
            let path = format!("/operator/access-requests/{task}");
            let shown = b.op("GET", &path, None).json();
            match shown["task"]["status"].as_str() {
                Some("approved") => {}
                Some("pending") => {
                    assert!(!answered_ok(task), "A answered the approval of {task}, B does not have it: {shown}");
                    assert!(shown.get("grant").is_none_or(Value::is_null), "{shown}");
                    assert_eq!(b.approve_request(task, 600).status, 200);
                }
                _ => panic!("{task}: {shown}"),
            }
            let again = b.approve_request(task, 600);
            assert_eq!(again.status, 409, "{task} approved twice: {}", again.text());
            let shown = b.op("GET", &path, None).json();
            assert_eq!(shown["task"]["status"], "approved", "{shown}");
            assert_eq!(shown["grant"]["single_use"], true, "{shown}");
            let approvals = shown["audit"].as_array().unwrap().iter().filter(|x| x["action"] == "approve").count();
            assert_eq!(approvals, 1, "{shown}");
            let grants = pg.psql(&db_name, &format!("SELECT count(*) FROM access_grants WHERE task_id = '{task}'"));
            assert_eq!(grants.unwrap(), "1", "grants of {task}");
        }
        // Each single-use grant lets exactly one payment through gateway 2, whichever replica made it.
        for job in &tasks {
            let Job::Task(task, body) = job else { panic!("{job:?}") };
            let before = up.seen("/v1/payments");
            let deadline = Instant::now() + Duration::from_secs(20);
            let first = loop {
                // 511 while the filter still remembers the denial (about a second).
                let r = pay(&g2, &pay_token, body);
                if r.status != 511 {
                    break r;
                }
                assert!(Instant::now() < deadline, "{task}: still 511 after 20 s");
                std::thread::sleep(Duration::from_millis(100));
            };
            assert_eq!(first.status, 200, "{task}: {}", first.text());
            let second = pay(&g2, &pay_token, body);
            assert_eq!(second.status, 403, "{task}: the single-use grant let a second payment through");
            assert_eq!(up.seen("/v1/payments"), before + 1, "{task}");
        }
        // The feed on B is whole: every creation and approval so far, numbered 1..=n without a gap.
        let n = i64::try_from(2 + 2 * MISSIONS * usize::try_from(attempt).unwrap()).unwrap();
        assert_eq!(pg.psql(&db_name, "SELECT last_seq FROM mission_event_counter").unwrap(), n.to_string());
        assert_eq!(feed_seqs(&b), (1..=n).collect::<Vec<i64>>());
        if cut_m > 0 && cut_t > 0 {
            proven = true;
            break;
        }
    }
    assert!(proven, "in 5 runs the kill never cut a Mission approval and an access-request approval mid-flight");
    let token = b.token(&ids[0], None);
    assert_eq!(get(&g2, &token).status, 200);

    // Postgres restarted under load: 503 with Retry-After while it is down, never a 500.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u16, bool)>::new()));
    let load = {
        let (stop, port, id, seen) = (stop.clone(), b.port, ids[1].clone(), seen.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = Req::new("GET", &format!("/operator/missions/{id}"))
                    .header("Host", &format!("127.0.0.1:{port}"))
                    .header("Authorization", &format!("Bearer {}", missiongate_tests::portal::OPERATOR_TOKEN))
                    .try_send(port);
                // 0: no HTTP answer at all (B itself failed), which the assertions below refuse.
                let answer = r.map(|r| (r.status, r.header("retry-after").is_some())).unwrap_or((0, false));
                seen.lock().unwrap().push(answer);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    pg.stop().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = Req::new("GET", "/ready").header("Host", &format!("127.0.0.1:{}", b.port)).send(b.port);
        if r.status == 503 {
            assert!(r.header("retry-after").is_some());
            break;
        }
        assert!(Instant::now() < deadline, "/ready never failed with Postgres down");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(6));
    pg.start_again().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = Req::new("GET", "/ready").header("Host", &format!("127.0.0.1:{}", b.port)).send(b.port);
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "not ready again within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The load recovers too: wait (not a fixed pause: a request already waiting on the pool when
    // the server came back may still end in a 503) until the load's latest answer is a 200.
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        let now_seen = seen.lock().unwrap().clone();
        if now_seen.last().map(|x| x.0) == Some(200) {
            break now_seen;
        }
        assert!(Instant::now() < deadline, "the load got no 200 within 60 s of /ready: {now_seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    assert!(seen.iter().any(|(s, _)| *s == 503), "no 503 while Postgres was down: {seen:?}");
    assert!(seen.iter().all(|(s, ra)| *s == 200 || (*s == 503 && *ra)), "{seen:?}");
    assert_eq!(seen.last().map(|x| x.0), Some(200), "{seen:?}");

    // Full recovery: A restarts on the same database, writes through it bite at gateway 2 via B.
    a.restart();
    let g1 = gateway(&up, &a, &a);
    assert_eq!(get(&g1, &token).status, 200);
    assert_eq!(a.lifecycle(&ids[0], "revoke").status, 200);
    until_status(&g2, &token, 401, Duration::from_secs(5));
    until_status(&g1, &token, 401, Duration::from_secs(5));
    drop(pg);
}

/// `deploy/replicas/portal-lb.yaml` for these ports.
fn portal_lb(listen: u16, admin: u16, a: u16, b: u16) -> String {
    let path = missiongate_tests::repo_root().join("deploy/replicas/portal-lb.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    for port in ["port_value: 18443", "port_value: 9902", "port_value: 18501", "port_value: 18502"] {
        assert!(text.contains(port), "{port}");
    }
    text.replace("port_value: 18443", &format!("port_value: {listen}"))
        .replace("port_value: 9902", &format!("port_value: {admin}"))
        .replace("port_value: 18501", &format!("port_value: {a}"))
        .replace("port_value: 18502", &format!("port_value: {b}"))
}

#[test]
fn two_replicas_behind_the_shipped_portal_load_balancer() {
    let (ok, out) = envoy::validate(&portal_lb(18443, 9902, 18501, 18502));
    assert!(ok, "deploy/replicas/portal-lb.yaml does not validate:\n{out}");

    // The deployment: the issuer is the load balancer's address; the replicas sit behind it.
    let db = shared().fresh_database().unwrap();
    let (lb_port, lb_admin) = (missiongate_tests::free_port(), missiongate_tests::free_port());
    let issuer = format!("http://127.0.0.1:{lb_port}");
    let (pa, pb) = (missiongate_tests::free_port(), missiongate_tests::free_port());
    let mut a = Portal::start_replica(pa, &db, &issuer, &FRESH);
    let b = Portal::start_replica(pb, &db, &issuer, &FRESH);
    // The balancer: a plain Envoy (no filter, so not `envoy::Envoy`, which checks the filter's VM).
    let mut lb = EnvoyCmd::in_e2e_dir(portal_lb(lb_port, lb_admin, pa, pb), &format!("portal-lb-{lb_admin}"), lb_admin)
        .start()
        .unwrap();
    let up = Upstream::start(None);
    let gw = Envoy::start(up.port, lb_port, Opts { concurrency: 1, events: true, pdp: true, ..Opts::default() });

    // Both replicas healthy, then traffic through the balancer and the gateway.
    let healthy = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stats = Req::new("GET", "/stats?filter=portal_replicas.membership_healthy")
                .header("Host", "admin")
                .send(lb_admin)
                .text();
            if stats.contains(&format!("membership_healthy: {n}")) {
                return;
            }
            assert!(Instant::now() < deadline, "not {n} healthy replicas: {stats}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    healthy(2);
    let lb_portal_op = |method: &str, path: &str| {
        Req::new(method, path)
            .header("Host", &format!("127.0.0.1:{lb_port}"))
            .header("Authorization", &format!("Bearer {}", missiongate_tests::portal::OPERATOR_TOKEN))
            .header("Content-Type", "application/json")
            .body(if method == "POST" { "{}" } else { "" })
            .send(lb_port)
    };
    let id = a.create_mission(&["http.get"], 3600);
    assert_eq!(lb_portal_op("POST", &format!("/operator/missions/{id}/approve")).status, 200);
    let token = b.token(&id, None);
    assert_eq!(get(&gw, &token).status, 200);

    // kill -9 of A: it leaves the rotation; every call through the balancer still succeeds.
    a.kill9();
    for _ in 0..20 {
        let r = lb_portal_op("GET", &format!("/operator/missions/{id}"));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    healthy(1);
    // A revocation through the balancer bites at the gateway (its feed and JWKS go through B now).
    let id2 = b.create_mission(&["http.get"], 3600);
    assert_eq!(lb_portal_op("POST", &format!("/operator/missions/{id2}/approve")).status, 200);
    let token2 = b.token(&id2, None);
    assert_eq!(get(&gw, &token2).status, 200);
    assert_eq!(lb_portal_op("POST", &format!("/operator/missions/{id2}/revoke")).status, 200);
    until_status(&gw, &token2, 401, Duration::from_secs(5));

    // A comes back and rejoins.
    a.restart();
    healthy(2);
    for _ in 0..10 {
        assert_eq!(lb_portal_op("GET", &format!("/operator/missions/{id}")).status, 200);
    }
    assert_eq!(get(&gw, &token).status, 200);
    gw.assert_healthy();
    assert!(lb.alive(), "the balancer died");
}
