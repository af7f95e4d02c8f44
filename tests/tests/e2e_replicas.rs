//! Issue 15 end to end: two captive-portal replicas on one real Postgres (started by the test kit,
//! tests/src/postgres.rs) and two real Envoys with the filter, gateway 1 talking to replica A and
//! gateway 2 to replica B (same issuer: one deployment).
//! - A Mission created through A, approved through B, its token accepted by both gateways; a
//!   revocation through A bites at gateway 2 through its long polls on B (Mission Status answers are
//!   fresh for 30 s, so only the event feed can make it bite this fast).
//! - An access request submitted through A, approved on B, its single-use permit used exactly once
//!   across both gateways; concurrent approvals of one task from both replicas (one wins, one 409).
//! - `kill -9` of A in the middle of approvals: nothing half-done, B carries on; Postgres restarted
//!   under load: 503 with `Retry-After` while it is down, full recovery after.
//! - The README's deployment, `deploy/replicas/portal-lb.yaml`: validated by `envoy --mode validate`,
//!   then run in front of both replicas with a gateway behind it; a replica killed or cut off from
//!   the database leaves the rotation and nothing fails.

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

#[test]
fn kill_9_of_a_replica_and_a_postgres_restart_under_load() {
    let pg = PgServer::start().unwrap();
    let db = pg.fresh_database().unwrap();
    let (mut a, b) = replicas(&db);
    let up = Upstream::start(None);
    let g2 = gateway(&up, &a, &b);

    // kill -9 of A while approvals are in flight on it: each is whole or absent; B carries on.
    let ids: Vec<String> = (0..6).map(|_| b.create_mission(&["http.get"], 3600)).collect();
    let port = a.port;
    let handles: Vec<_> = ids
        .iter()
        .map(|id| {
            let id = id.clone();
            std::thread::spawn(move || {
                Req::new("POST", &format!("/operator/missions/{id}/approve"))
                    .header("Host", &format!("127.0.0.1:{port}"))
                    .header("Authorization", &format!("Bearer {}", missiongate_tests::portal::OPERATOR_TOKEN))
                    .header("Content-Type", "application/json")
                    .body("{}")
                    .send(port)
                    .status
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(15));
    a.kill9();
    let acked: Vec<bool> = handles.into_iter().map(|h| h.join().map(|s| s == 200).unwrap_or(false)).collect();
    for (id, acked) in ids.iter().zip(acked) {
        let shown = b.op("GET", &format!("/operator/missions/{id}"), None).json();
        if acked {
            assert_eq!(shown["state"], "active", "{shown}");
        } else if shown["state"] == "pending_approval" {
            assert_eq!(b.lifecycle(id, "approve").status, 200);
        }
        let shown = b.op("GET", &format!("/operator/missions/{id}"), None).json();
        assert_eq!((shown["state"].as_str(), shown["version"].as_i64()), (Some("active"), Some(2)), "{shown}");
    }
    let token = b.token(&ids[0], None);
    assert_eq!(get(&g2, &token).status, 200);

    // Postgres restarted under load: 503 with Retry-After while it is down, never a 500.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, port, id) = (stop.clone(), b.port, ids[1].clone());
        std::thread::spawn(move || {
            let mut seen: Vec<(u16, bool)> = vec![];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = Req::new("GET", &format!("/operator/missions/{id}"))
                    .header("Host", &format!("127.0.0.1:{port}"))
                    .header("Authorization", &format!("Bearer {}", missiongate_tests::portal::OPERATOR_TOKEN))
                    .try_send(port);
                // 0: no HTTP answer at all (B itself failed), which the assertions below refuse.
                seen.push(r.map(|r| (r.status, r.header("retry-after").is_some())).unwrap_or((0, false)));
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
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
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = load.join().unwrap();
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

/// The balancer: a plain Envoy (no filter, so not `envoy::Envoy`, which checks the filter's VM).
struct Balancer {
    child: std::process::Child,
}

impl Balancer {
    fn start(yaml: &str, admin: u16) -> Balancer {
        let dir = missiongate_tests::repo_root().join("target/e2e");
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join(format!("portal-lb-{admin}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let log = std::fs::File::create(dir.join(format!("portal-lb-{admin}.log"))).unwrap();
        let mut cmd = std::process::Command::new(envoy::envoy_bin());
        cmd.arg("-c")
            .arg(&cfg)
            .args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"])
            .stdout(std::process::Stdio::from(log.try_clone().unwrap()))
            .stderr(std::process::Stdio::from(log));
        let mut child = missiongate_tests::spawn(cmd).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            assert!(child.try_wait().unwrap().is_none(), "the balancer exited");
            if let Ok(r) = Req::new("GET", "/ready").header("Host", "admin").try_send(admin) {
                if r.status == 200 {
                    return Balancer { child };
                }
            }
            assert!(Instant::now() < deadline, "the balancer is not ready after 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let mut lb = Balancer::start(&portal_lb(lb_port, lb_admin, pa, pb), lb_admin);
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
