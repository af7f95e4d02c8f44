//! Issue 3 end to end: the real Envoy with the filter, the real captive-portal process (reference
//! Mission authority) on its SQLite file, and a hyper upstream. Lifecycle changes bite at the edge
//! through the state-event feed; DPoP-bound tokens.

use missiongate_tests::dpop::DpopKey;
use missiongate_tests::envoy::{Envoy, Opts};
use missiongate_tests::http::{Req, Response};
use missiongate_tests::portal::Portal;
use missiongate_tests::upstream::Upstream;
use std::time::{Duration, Instant};

fn start(concurrency: u32) -> (Upstream, Portal, Envoy) {
    let up = Upstream::start(None);
    let portal = Portal::start(&["--status-fresh-seconds", "30"]);
    let envoy = Envoy::start(up.port, portal.port, Opts { concurrency, events: true, ..Opts::default() });
    (up, portal, envoy)
}

fn get(envoy: &Envoy, path: &str, token: &str) -> Response {
    Req::new("GET", path).bearer(token).send(envoy.port)
}

/// Poll until the request gets `status`, for at most `within`; returns how long it took.
fn until_status(envoy: &Envoy, token: &str, status: u16, within: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = get(envoy, "/v1/invoices", token);
        if r.status == status {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "still {} after {:?} (wanted {status}): {}", r.status, within, r.text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reason(r: &Response) -> String {
    r.json()["reason"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn lifecycle_bites_at_the_edge_within_a_second() {
    let (_up, portal, envoy) = start(2);
    // Pending: no token is minted.
    let id = portal.create_mission(&["http.get"], 3600);
    let r = portal.op("POST", &format!("/operator/missions/{id}/token"), None);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_grant");
    // Approve: allowed.
    assert_eq!(portal.lifecycle(&id, "approve").status, 200);
    let token = portal.token(&id, None);
    assert_eq!(get(&envoy, "/v1/invoices", &token).status, 200);
    // Suspend: refused at once (the status cache says active for 30 s; the event overrides it).
    assert_eq!(portal.lifecycle(&id, "suspend").status, 200);
    let t = until_status(&envoy, &token, 401, Duration::from_secs(1));
    eprintln!("suspend took effect in {t:?}");
    let r = get(&envoy, "/v1/invoices", &token);
    assert_eq!(reason(&r), "mission_inactive");
    assert_eq!(r.json()["mission"]["state"], "suspended");
    // Resume: allowed again.
    assert_eq!(portal.lifecycle(&id, "resume").status, 200);
    until_status(&envoy, &token, 200, Duration::from_secs(2));
    // Revoke: refused for good; resume is illegal; a new token cannot be minted.
    assert_eq!(portal.lifecycle(&id, "revoke").status, 200);
    until_status(&envoy, &token, 401, Duration::from_secs(1));
    assert_eq!(portal.lifecycle(&id, "resume").status, 409);
    assert_eq!(portal.op("POST", &format!("/operator/missions/{id}/token"), None).status, 400);
    // Stays refused, on every worker, for many requests.
    for _ in 0..40 {
        let r = get(&envoy, "/v1/invoices", &token);
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["mission"]["state"], "revoked");
    }
    // Complete is terminal too.
    let (id2, t2) = portal.active(&["http.get"]);
    assert_eq!(get(&envoy, "/v1/a", &t2).status, 200);
    assert_eq!(portal.lifecycle(&id2, "complete").status, 200);
    until_status(&envoy, &t2, 401, Duration::from_secs(1));
}

#[test]
fn expiry_is_enforced() {
    let (_up, portal, envoy) = start(1);
    let id = portal.create_mission(&["http.get"], 3);
    assert_eq!(portal.lifecycle(&id, "approve").status, 200);
    let token = portal.token(&id, None);
    assert_eq!(get(&envoy, "/v1/a", &token).status, 200);
    until_status(&envoy, &token, 401, Duration::from_secs(6));
    let r = get(&envoy, "/v1/a", &token);
    assert_eq!(reason(&r), "mission_inactive");
    assert_eq!(r.json()["mission"]["state"], "expired");
}

#[test]
fn key_rotation_and_a_kill_9_restart() {
    let (_up, mut portal, envoy) = start(1);
    let (id, old) = portal.active(&["http.get"]);
    assert_eq!(get(&envoy, "/v1/a", &old).status, 200);
    // Rotate while both run: new tokens carry the new kid; old ones still verify.
    let r = portal.op("POST", "/operator/keys/rotate", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let fresh = portal.token(&id, None);
    // An unknown kid triggers at most one JWKS refetch per jwks_min_refetch_seconds (1 s here).
    std::thread::sleep(Duration::from_millis(1100));
    assert_ne!(old.split('.').next(), fresh.split('.').next(), "new kid expected");
    assert_eq!(get(&envoy, "/v1/a", &fresh).status, 200);
    assert_eq!(get(&envoy, "/v1/b", &old).status, 200);

    // kill -9 and restart on the same file: the Mission, keys and event feed are all still there.
    let (id2, t2) = portal.active(&["http.get"]);
    portal.kill9();
    portal.restart();
    let r = portal.op("GET", &format!("/operator/missions/{id2}"), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "active");
    // The gateway's pooled connections to the old process may be reset once: that is a 503 with
    // Retry-After (fail closed), and the agent's retry goes through.
    until_status(&envoy, &t2, 200, Duration::from_secs(3));
    let t3 = portal.token(&id2, None);
    assert_eq!(get(&envoy, "/v1/c", &t3).status, 200);
    // The filter's event feed reconnected: a revoke after the restart bites within a second or two.
    assert_eq!(portal.lifecycle(&id2, "revoke").status, 200);
    until_status(&envoy, &t2, 401, Duration::from_secs(3));
}

#[test]
fn dpop_bound_tokens() {
    let (_up, portal, envoy) = start(2);
    let id = portal.create_mission(&["http.get", "http.post"], 3600);
    assert_eq!(portal.lifecycle(&id, "approve").status, 200);
    let key = DpopKey::new();
    let token = portal.token(&id, Some(&key.jkt));
    let htu = "https://api.partner.example/v1/items";
    let send = |proof: &str, tok: &str, method: &str| {
        Req::new(method, "/v1/items?page=2")
            .header("Authorization", &format!("DPoP {tok}"))
            .header("DPoP", proof)
            .send(envoy.port)
    };
    let ok = send(&key.proof("GET", htu, &token), &token, "GET");
    assert_eq!(ok.status, 200, "{}", ok.text());
    let denied = |r: Response, why: &str| {
        assert_eq!(r.status, 401, "{why}: {}", r.text());
        assert!(r.header("www-authenticate").unwrap().starts_with("DPoP "), "{why}");
        r
    };
    denied(send(&key.proof("POST", htu, &token), &token, "GET"), "wrong htm");
    denied(send(&key.proof("GET", "https://api.partner.example/v1/other", &token), &token, "GET"), "wrong htu");
    denied(send(&key.proof("GET", "https://evil.example/v1/items", &token), &token, "GET"), "wrong origin");
    let stale = key.proof_with("GET", htu, &token, missiongate_tests::now() - 600, "stale-1", "dpop+jwt");
    denied(send(&stale, &token, "GET"), "stale iat");
    denied(send(&key.proof("GET", htu, "some-other-token"), &token, "GET"), "wrong ath");
    let wrong_typ = key.proof_with("GET", htu, &token, missiongate_tests::now(), "typ-1", "jwt");
    denied(send(&wrong_typ, &token, "GET"), "wrong typ");
    // Another key's proof for this token.
    denied(send(&DpopKey::new().proof("GET", htu, &token), &token, "GET"), "wrong key");
    // Replay: the same proof twice.
    let p = key.proof("GET", htu, &token);
    assert_eq!(send(&p, &token, "GET").status, 200);
    let r = denied(send(&p, &token, "GET"), "replay");
    assert_eq!(reason(&r), "dpop_replay");
    // Bearer downgrade of a DPoP-bound token.
    let r = get(&envoy, "/v1/items", &token);
    assert_eq!(r.status, 401);
    assert_eq!(reason(&r), "dpop_bound_token_as_bearer");
    // No proof at all.
    let r = Req::new("GET", "/v1/items").header("Authorization", &format!("DPoP {token}")).send(envoy.port);
    assert_eq!(reason(&r), "invalid_dpop_proof");

    // Replays racing across two workers: each proof sent on several connections at once wins once.
    // A round proves the cross-worker case when its refusals came from both workers: then at least
    // one refusal was on the other worker than the one request that won.
    let port = envoy.port;
    let mut crossed = 0;
    for round in 0..8 {
        let proof = key.proof("GET", htu, &token);
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (proof, token) = (proof.clone(), token.clone());
                std::thread::spawn(move || {
                    Req::new("GET", "/v1/items")
                        .header("Authorization", &format!("DPoP {token}"))
                        .header("DPoP", &proof)
                        .send(port)
                })
            })
            .collect();
        let answers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "round {round}: {statuses:?}");
        assert!(statuses.iter().all(|s| *s == 200 || *s == 401), "{statuses:?}");
        let workers: std::collections::HashSet<String> =
            answers.iter().filter(|r| r.status == 401).filter_map(|r| r.worker()).collect();
        if workers.len() == 2 {
            crossed += 1;
        }
    }
    assert!(
        crossed >= 1,
        "no round had its replays refused on both workers: the cross-worker case was never exercised"
    );
}

/// Against a feed that replays and reorders (the stand-in authority publishes whatever the test
/// says, signed): a newer non-active event bites at once whatever Mission Status said, and no
/// older or replayed event ever brings the Mission back; a newer `active` one (a resume) does.
#[test]
fn older_or_replayed_events_never_resurrect_a_mission() {
    use missiongate_tests::authority::Authority;
    let up = Upstream::start(None);
    let auth = Authority::start();
    let envoy = Envoy::start(up.port, auth.port, Opts { concurrency: 2, events: true, ..Opts::default() });
    let (id, token) = auth.active_token(); // Mission Status: active, version 1, fresh for 30 s
    let get = || Req::new("GET", "/v1/feed").bearer(&token).send(envoy.port);
    let until_status = |want: u16| {
        let start = Instant::now();
        loop {
            let r = get();
            if r.status == want {
                return r;
            }
            assert!(start.elapsed() < Duration::from_secs(5), "still {} after 5 s: {}", r.status, r.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(get().status, 200);
    // Suspended (v2) by event, while the cached status still says active.
    auth.publish_event(&id, "suspended", 2);
    let r = until_status(401);
    assert_eq!(r.json()["reason"], "mission_inactive");
    assert_eq!(r.json()["mission"]["state"], "suspended");
    // Resumed (v3): a newer active event lifts it.
    auth.publish_event(&id, "active", 3);
    until_status(200);
    // Revoked (v4); then the feed replays the resume (v3), sends an older active (v1), and an
    // active that merely repeats the revocation's version (v4).
    auth.publish_event(&id, "revoked", 4);
    until_status(401);
    // Both workers refuse from here on: nothing more may reach the upstream.
    std::thread::sleep(Duration::from_millis(300));
    let forwarded = up.seen("/v1/feed");
    let applied = envoy.counter("wasmcustom.missiongate.callout.events.ok");
    auth.publish_event(&id, "active", 3);
    auth.publish_event(&id, "active", 1);
    auth.publish_event(&id, "active", 4);
    // Both workers have polled past those events.
    assert!(envoy.wait_counter("wasmcustom.missiongate.callout.events.ok", applied + 4) >= applied + 4);
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..20 {
        let r = get();
        assert_eq!(r.status, 401, "a stale event resurrected the Mission: {}", r.text());
        assert_eq!(r.json()["mission"]["state"], "revoked");
    }
    assert_eq!(up.seen("/v1/feed"), forwarded, "a request went through after the revocation");
}
