//! Issues 4 and 5 end to end: the real Envoy with the filter, the real portal (authority, PDP,
//! Access Requests, Captive Portal API), a hyper upstream. Blocked egress becomes a 511 the agent
//! can act on; consequential calls are bound to their parameter_digest.

use missiongate_tests::envoy::{Envoy, Opts};
use missiongate_tests::http::{connect, over, path_of, Req, Response};
use missiongate_tests::portal::Portal;
use missiongate_tests::upstream::Upstream;
use missiongate_tests::world::WithPortal;
use serde_json::{json, Value};
use std::sync::OnceLock;
use std::time::Duration;

type World = WithPortal;

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        WithPortal::start(
            &["--status-fresh-seconds", "30"],
            Opts { concurrency: 2, events: true, pdp: true, ..Opts::default() },
        )
    })
}

const V2_DIGEST: &str = "sha-256:yLAZIL9150YK2-jnJ3yaKg4ewwCwZbTeuW5yu5qSRZk";
const V7_DIGEST: &str = "sha-256:Vg-10WbE6ITI1jhkU1Xd2_G32jL6sbxiQFQldE9WdYI";
const BODY_A: &str = r#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#;

fn send(method: &str, path: &str, token: &str, body: Option<(&str, &str)>) -> Response {
    let mut r = Req::new(method, path).bearer(token);
    if let Some((ct, b)) = body {
        r = r.header("content-type", ct).body(b.to_owned());
    }
    r.send(world().envoy.port)
}

fn portal_req(method: &str, url: &str) -> Req {
    Req::new(method, &path_of(url)).header("Host", &format!("127.0.0.1:{}", world().portal.port))
}

fn assert_captive(r: &Response) -> Value {
    assert_eq!(r.status, 511, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/captive+json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let link = r.header("link").expect("Link header");
    assert!(link.ends_with("; rel=\"captive-portal-api\""), "{link}");
    let doc = r.json();
    assert_eq!(doc["captive"], true);
    assert!(doc["user-portal-url"].as_str().unwrap().starts_with("http"));
    let ar = &doc["access-request"];
    assert_eq!(ar["subject"]["id"], "agent-7");
    assert_eq!(ar["resource"]["type"], "egress");
    let ctx = &ar["context"];
    assert!(ctx["evaluation_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(ctx["mission"]["id"].as_str().unwrap().starts_with("msn_"));
    for k in ["endpoint", "expires_at", "binding_token"] {
        assert!(ctx["access_request"][k].as_str().is_some_and(|s| !s.is_empty()), "missing {k}: {doc}");
    }
    doc
}

fn request_access(doc: &Value, key: &str, parameters: Option<Value>, justification: &str) -> Response {
    world().portal.request_access(doc, key, parameters, justification)
}

fn approve(task: &str, seconds: u64) {
    let r = world().portal.approve_request(task, seconds);
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
}

fn task_id(r: &Response) -> String {
    assert!(r.status == 201 || r.status == 202 || r.status == 200, "{}", r.text());
    let t = &r.json()["task"];
    assert_eq!(t["status"], "pending");
    assert!(t["status_endpoint"].as_str().is_some());
    t["id"].as_str().unwrap().to_owned()
}

#[test]
fn blocked_destination_becomes_an_approvable_request() {
    let w = world();
    let (_, token) = w.portal.active(&["http.get"]);
    assert_eq!(send("GET", "/v1/ok", &token, None).status, 200);
    let denial = send("GET", "/v2/reports?q=1", &token, None);
    let doc = assert_captive(&denial);
    assert_eq!(doc["access-request"]["resource"]["id"], "https://api.partner.example");
    assert_eq!(doc["access-request"]["action"]["name"], "http.get");
    assert_eq!(w.up.seen("/v2/reports?q=1"), 0);
    // The per-denial Captive Portal API serves the same document, privately cached.
    let link = denial.header("link").unwrap();
    let api = link.trim_start_matches('<').split('>').next().unwrap().to_owned();
    let r = portal_req("GET", &api).send(w.portal.port);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/captive+json"));
    assert_eq!(r.header("cache-control"), Some("private"));
    assert_eq!(r.json()["captive"], true);
    // The agent asks; the same Idempotency-Key replays, another body under it conflicts.
    let key = missiongate_tests::rand_id("idem-");
    let first = request_access(&doc, &key, None, "need the report");
    let task = task_id(&first);
    let again = request_access(&doc, &key, None, "need the report");
    assert_eq!(task_id(&again), task);
    let other = request_access(&doc, &key, None, "a different justification");
    assert_eq!(other.status, 409, "{}", other.text());
    assert_eq!(other.header("content-type"), Some("application/problem+json"));
    // Still blocked while pending: an access request alone never allows anything.
    assert_eq!(send("GET", "/v2/reports?q=1", &token, None).status, 511);
    // A person approves for 3 s; the retry goes through.
    approve(&task, 3);
    std::thread::sleep(Duration::from_millis(1100)); // the filter remembers the denial for 1 s
    let r = send("GET", "/v2/reports?q=1", &token, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.up.seen("/v2/reports?q=1"), 1);
    let r = portal_req("GET", &api).send(w.portal.port);
    assert_eq!(r.json()["captive"], false, "{}", r.text());
    let left = r.json()["seconds-remaining"].as_i64().unwrap();
    assert!((0..=3).contains(&left), "{left}");
    // After approved_until the destination is captive again.
    std::thread::sleep(Duration::from_millis(3200));
    assert_captive(&send("GET", "/v2/reports?q=1", &token, None));
    assert_eq!(portal_req("GET", &api).send(w.portal.port).json()["captive"], true);
}

#[test]
fn blocked_connect_gets_511_and_tunnels_after_approval() {
    let w = world();
    let (_, token) = w.portal.active(&["http.get"]);
    let auth = format!("Bearer {token}");
    let (r, tunnel) = connect(w.envoy.port, "api.partner.example:443", &[("Authorization", &auth)]);
    assert!(tunnel.is_none());
    let doc = assert_captive(&r);
    assert_eq!(doc["access-request"]["action"]["name"], "http.connect");
    let task = task_id(&request_access(&doc, &missiongate_tests::rand_id("idem-"), None, "tunnel"));
    approve(&task, 30);
    std::thread::sleep(Duration::from_millis(1100));
    let (r, tunnel) = connect(w.envoy.port, "api.partner.example:443", &[("Authorization", &auth)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let resp =
        over(tunnel.unwrap(), "GET /tunnelled HTTP/1.1\r\nHost: api.partner.example\r\nConnection: close\r\n\r\n");
    assert_eq!(resp.json()["uri"], "/tunnelled");
}

#[test]
fn hostile_access_requests_are_refused_clearly() {
    let w = world();
    let (_, token) = w.portal.active(&["http.get"]);
    let doc = assert_captive(&send("GET", "/v3/x", &token, None));
    let endpoint = doc["access-request"]["context"]["access_request"]["endpoint"].as_str().unwrap().to_owned();
    let post = |body: &str, key: Option<&str>| {
        let mut r = portal_req("POST", &endpoint).header("content-type", "application/json");
        if let Some(k) = key {
            r = r.header("Idempotency-Key", k);
        }
        r.body(body.to_owned()).send(w.portal.port)
    };
    let problem = |r: &Response, status: u16| {
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(r.json()["type"].as_str().is_some());
    };
    problem(&post("{not json", Some("k1")), 400);
    // A forged binding token.
    let mut forged = doc.clone();
    let bt = forged["access-request"]["context"]["access_request"]["binding_token"].as_str().unwrap().to_owned();
    let mut parts: Vec<&str> = bt.split('.').collect();
    let fake_sig = missiongate_wire::b64::encode([7u8; 64]);
    parts[2] = &fake_sig;
    forged["access-request"]["context"]["access_request"]["binding_token"] = json!(parts.join("."));
    problem(&request_access(&forged, "k2", None, "x"), 400);
    // Unknown task.
    problem(&portal_req("GET", "/access/v1/requests/task_does_not_exist").send(w.portal.port), 404);
    // Script in an agent-supplied field is stored as text (the page test checks it renders inert).
    let r = request_access(&doc, "k3", None, "<script>document.title='pwned'</script>");
    task_id(&r);
}

#[test]
fn an_approval_covers_exactly_the_approved_call() {
    let w = world();
    let (_, token) = w.portal.active(&["http.get", "payments.create"]);
    // Consequential: POST is bound to the digest, which is SPEC §6 vector V2.
    let denial = send("POST", "/v1/payments", &token, Some(("application/json", BODY_A)));
    let doc = assert_captive(&denial);
    assert_eq!(doc["access-request"]["action"]["name"], "payments.create");
    assert_eq!(doc["access-request"]["action"]["properties"]["parameter_digest"], V2_DIGEST);
    assert_eq!(w.up.seen("/v1/payments"), 0);
    // The portal refuses parameters that don't match the binding.
    let wrong = json!({"method": "POST", "target": "https://api.partner.example/v1/payments",
                       "content_type": "application/json",
                       "body": {"amount": "4235.00", "currency": "USD", "to": "acct_123"}});
    let r = request_access(&doc, &missiongate_tests::rand_id("idem-"), Some(wrong), "pay");
    assert_eq!(r.status, 400, "{}", r.text());
    // Version 1's shape (no content_type) is not a parameter object any more.
    let v1 = json!({"method": "POST", "target": "https://api.partner.example/v1/payments",
                    "body": serde_json::from_str::<Value>(BODY_A).unwrap()});
    let r = request_access(&doc, &missiongate_tests::rand_id("idem-"), Some(v1), "pay");
    assert_eq!(r.status, 400, "{}", r.text());
    let right = json!({"method": "POST", "target": "https://api.partner.example/v1/payments",
                       "content_type": "application/json",
                       "body": serde_json::from_str::<Value>(BODY_A).unwrap()});
    let task = task_id(&request_access(&doc, &missiongate_tests::rand_id("idem-"), Some(right), "pay INV-77"));
    approve(&task, 60);
    std::thread::sleep(Duration::from_millis(1100));
    // While the approval is outstanding, a changed amount is refused as parameter_violation (SPEC
    // section 6), never forwarded.
    let r = send(
        "POST",
        "/v1/payments",
        &token,
        Some(("application/json", r#"{"amount":"4235.00","currency":"USD","to":"acct_123"}"#)),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "parameter_violation");
    assert_eq!(w.up.seen("/v1/payments"), 0);
    // The same call, members reordered and whitespace changed, the media type spelled with a
    // parameter (SPEC §6 V3), goes through once, in many chunks.
    let reordered = "{ \"to\" : \"acct_123\", \"currency\":\"USD\",\n \"amount\":\"423.50\" }";
    let chunks: Vec<Vec<u8>> = reordered.as_bytes().chunks(3).map(<[u8]>::to_vec).collect();
    let r = Req::new("POST", "/v1/payments")
        .bearer(&token)
        .header("content-type", "Application/JSON; charset=utf-8")
        .chunked(chunks)
        .send(w.envoy.port);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.up.seen("/v1/payments"), 1);
    // Replay: refused.
    let r = send("POST", "/v1/payments", &token, Some(("application/json", BODY_A)));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "parameter_violation");
    // A changed amount is not covered.
    let r = send(
        "POST",
        "/v1/payments",
        &token,
        Some(("application/json", r#"{"amount":"4236.00","currency":"USD","to":"acct_123"}"#)),
    );
    // Once the approval is used, another amount is a new call: a fresh requestable denial. (Another
    // amount than the one refused above: the gateway remembers that refusal for a moment.)
    assert_eq!(r.status, 511, "{}", r.text());
    assert_eq!(w.up.seen("/v1/payments"), 1);
}

#[test]
fn bodies_that_cannot_be_bound() {
    let w = world();
    let (_, token) = w.portal.active(&["http.get", "http.post"]);
    // Non-JSON body: digested as raw bytes (SPEC §6 vector V7).
    let r = send("POST", "/upload", &token, Some(("text/plain", "hello, partner")));
    let doc = assert_captive(&r);
    assert_eq!(doc["access-request"]["action"]["properties"]["parameter_digest"], V7_DIGEST);
    // Duplicate member names: not I-JSON, 400.
    let r = send("POST", "/v1/x", &token, Some(("application/json", r#"{"a":1,"a":2}"#)));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["reason"], "body_not_canonicalizable");
    let r = send("POST", "/v1/x", &token, Some(("application/json", "{\"a\":\"\\ud800\"}")));
    assert_eq!(r.json()["reason"], "body_not_canonicalizable");
    let r = send("POST", "/v1/x", &token, Some(("application/json", "[1e400]")));
    assert_eq!(r.json()["reason"], "body_not_canonicalizable");
    // Numbers binary64 does not hold as written: the approver would see one value and the
    // upstream could act on another, so 400, and the problem never echoes the body.
    for n in ["9007199254740993", "1e-400", "0.10000000000000000001"] {
        let body = format!("{{\"amount\":{n},\"to\":\"acct_secret_77\"}}");
        let r = send("POST", "/v1/x", &token, Some(("application/json", &body)));
        assert_eq!(r.status, 400, "{n}: {}", r.text());
        assert_eq!(r.json()["reason"], "body_not_canonicalizable", "{n}");
        assert!(!r.text().contains(n) && !r.text().contains("acct_secret_77"), "{}", r.text());
    }
    // The same bytes as another media type are a raw body: bound by their hash, so requestable.
    let r = send("POST", "/v1/x", &token, Some(("text/plain", r#"{"amount":9007199254740993}"#)));
    assert_captive(&r);
    // Over the bound (1 MiB): 413, whether announced by Content-Length or streamed.
    let big = "x".repeat(1_100_000);
    let r = send("POST", "/v1/x", &token, Some(("text/plain", &big)));
    assert_eq!(r.status, 413, "{}", r.text());
    let chunks: Vec<Vec<u8>> = big.as_bytes().chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    let r = Req::new("POST", "/v1/x")
        .bearer(&token)
        .header("content-type", "text/plain")
        .chunked(chunks)
        .send(w.envoy.port);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(w.up.seen("/v1/x"), 0);
}

#[test]
fn two_workers_race_for_one_single_use_permit() {
    let w = world();
    let (_, token) = w.portal.active(&["http.get", "payments.create"]);
    let body = r#"{"amount":"9.99","currency":"EUR","to":"acct_race"}"#;
    let doc = assert_captive(&send("POST", "/v1/payments", &token, Some(("application/json", body))));
    let params = json!({"method": "POST", "target": "https://api.partner.example/v1/payments",
                        "content_type": "application/json", "body": serde_json::from_str::<Value>(body).unwrap()});
    let task = task_id(&request_access(&doc, &missiongate_tests::rand_id("idem-"), Some(params), "race"));
    approve(&task, 60);
    std::thread::sleep(Duration::from_millis(1100));
    let port = w.envoy.port;
    let handles: Vec<_> = (0..24)
        .map(|_| {
            let token = token.clone();
            std::thread::spawn(move || {
                Req::new("POST", "/v1/payments")
                    .bearer(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send(port)
            })
        })
        .collect();
    let answers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    // Refusals from both workers: so at least one came from the worker that did not win, which
    // could only refuse by seeing the other worker's use in shared data.
    assert!(statuses.iter().all(|s| [200, 403].contains(s)), "{statuses:?}");
    let workers: std::collections::HashSet<String> =
        answers.iter().filter(|r| r.status == 403).filter_map(|r| r.worker()).collect();
    assert_eq!(
        workers.len(),
        2,
        "the 23 refusals all came from one worker ({workers:?}): the race never crossed workers"
    );
}

/// Many bound calls arrive while the Mission's state is being fetched: all wait for that one fetch,
/// then each asks the PDP. Every one must be answered promptly, even when the request whose context
/// dispatched the others' evaluations finishes first (its callouts die with it).
#[test]
fn concurrent_bound_calls_behind_one_status_fetch_are_all_answered() {
    let w = world();
    let (_, token) = w.portal.active(&["http.get", "payments.create"]);
    let port = w.envoy.port;
    let handles: Vec<_> = (0..10)
        .map(|i| {
            let token = token.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let body = format!(r#"{{"amount":"{i}.00","currency":"USD","to":"acct_c"}}"#);
                let r = Req::new("POST", "/v1/payments")
                    .bearer(&token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send(port);
                (r.status, started.elapsed())
            })
        })
        .collect();
    for h in handles {
        let (status, took) = h.join().unwrap();
        assert_eq!(status, 511);
        assert!(took < Duration::from_millis(1500), "took {took:?}");
    }
}

#[test]
fn a_portal_killed_in_the_middle_of_an_approval_loses_nothing() {
    // Its own portal and Envoy: this test kills the portal.
    let up = Upstream::start(None);
    let mut portal = Portal::start(&["--status-fresh-seconds", "30"]);
    let envoy = Envoy::start(up.port, portal.port, Opts { events: true, pdp: true, ..Opts::default() });
    let (_, token) = portal.active(&["http.get"]);
    let get = || Req::new("GET", "/v2/restart").bearer(&token).send(envoy.port);
    let denial = get();
    let doc = assert_captive(&denial);
    let api = denial.header("link").unwrap().trim_start_matches('<').split('>').next().unwrap().to_owned();
    let key = missiongate_tests::rand_id("idem-");
    let first = portal.request_access(&doc, &key, None, "need it across a restart");
    let task = task_id(&first);

    portal.kill9();
    // While the PDP is gone the edge fails closed, observably (after its 1 s memory of the denial).
    std::thread::sleep(Duration::from_millis(1100));
    let r = get();
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["reason"], "pdp_unavailable");
    assert!(r.header("retry-after").is_some());

    portal.restart();
    // The pending task, its Idempotency-Key and the denial's binding survived the kill -9.
    let again = portal.request_access(&doc, &key, None, "need it across a restart");
    assert_eq!(task_id(&again), task, "the same Idempotency-Key must find the same task after a restart");
    let st = Req::new("GET", &format!("/access/v1/requests/{task}"))
        .header("Host", &format!("127.0.0.1:{}", portal.port))
        .send(portal.port);
    assert_eq!(st.json()["task"]["status"], "pending", "{}", st.text());
    assert_eq!(get().status, 511, "still blocked: a pending request allows nothing");
    let r = portal.approve_request(&task, 60);
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    std::thread::sleep(Duration::from_millis(1100));
    let r = get();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.seen("/v2/restart"), 1);
    let c = Req::new("GET", &path_of(&api)).header("Host", &format!("127.0.0.1:{}", portal.port)).send(portal.port);
    assert_eq!(c.json()["captive"], false, "{}", c.text());
}
