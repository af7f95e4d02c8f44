//! Issue 13: the Rust agent-side client (`clients/rust`, crate `missiongate-client`) against the real
//! Envoy with the filter and the real portal: approve, deny, expire, time-out, Retry-After, one
//! access request per denial when the caller retries. A person's decision is the portal's approver
//! API, called from the client's status hook while it waits.

use missiongate_client::{Client, Error, Options, TaskUpdate};
use missiongate_tests::envoy::{Envoy, Opts};
use missiongate_tests::portal::Portal;
use missiongate_tests::upstream::Upstream;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

struct World {
    _up: Upstream,
    portal: Portal,
    envoy: Envoy,
}

fn start(extra: &[&str]) -> World {
    let up = Upstream::start(None);
    let mut args = vec!["--status-fresh-seconds", "30"];
    args.extend_from_slice(extra);
    let portal = Portal::start(&args);
    let envoy = Envoy::start(up.port, portal.port, Opts { concurrency: 2, events: true, pdp: true, ..Opts::default() });
    World { _up: up, portal, envoy }
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| start(&[]))
}

/// A portal whose pending access requests expire after 2 s.
fn short_world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| start(&["--task-ttl-seconds", "2"]))
}

type Updates = Arc<Mutex<Vec<(Instant, TaskUpdate)>>>;

/// A client through the gateway (as a forward proxy) whose status hook records every update and
/// runs `act(update, n)`.
fn agent(w: &World, act: impl Fn(&TaskUpdate, usize) + Send + Sync + 'static, max_wait: u64) -> (Client, Updates) {
    let updates: Updates = Arc::default();
    let u = Arc::clone(&updates);
    let http = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://127.0.0.1:{}", w.envoy.port)).unwrap())
        .build()
        .unwrap();
    let options = Options {
        justification: Some("reconcile the Q3 invoices".into()),
        max_wait: Duration::from_secs(max_wait),
        on_status: Some(Arc::new(move |t: &TaskUpdate| {
            let n = {
                let mut v = u.lock().unwrap();
                v.push((Instant::now(), t.clone()));
                v.len()
            };
            act(t, n);
        })),
        ..Options::default()
    };
    (Client::new(http, options), updates)
}

fn statuses(u: &Updates) -> Vec<String> {
    u.lock().unwrap().iter().map(|(_, t)| t.status.clone()).collect()
}

fn requests_of(w: &World, mission: &str) -> Vec<Value> {
    let r = w.portal.op("GET", "/operator/access-requests?limit=1000", None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["access_requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["denial"]["mission"]["id"] == mission)
        .cloned()
        .collect()
}

fn get(c: &Client, token: &str, path: &str) -> Result<reqwest::Response, Error> {
    missiongate_tests::rt()
        .block_on(c.send(c.inner().get(format!("http://api.partner.example{path}")).bearer_auth(token)))
}

#[test]
fn approved_after_retry_after_the_call_goes_through_once() {
    let w = world();
    let (mission, token) = w.portal.active(&["http.get"]);
    let (c, updates) = agent(
        w,
        |t, n| {
            if n == 2 {
                assert_eq!((t.status.as_str(), t.retry_after), ("pending", Some(Duration::from_secs(5))));
                let r = world().portal.approve_request(&t.task_id, 60);
                assert_eq!(r.status, 200, "{}", r.text());
            }
        },
        60,
    );
    let r = get(&c, &token, "/v2/reports?q=rust").unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = missiongate_tests::rt().block_on(r.json()).unwrap();
    assert_eq!(body["uri"], "/v2/reports?q=rust");
    assert_eq!(statuses(&updates), ["pending", "pending", "approved"]);
    let u = updates.lock().unwrap();
    let gap = u[2].0 - u[1].0;
    assert!(gap >= Duration::from_secs(5), "polled {gap:?} after Retry-After: 5");
    assert!(u[0].1.user_portal_url.as_deref().is_some_and(|p| p.contains("/portal/")), "{:?}", u[0].1);
    let reqs = requests_of(w, &mission);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0]["justification"], "reconcile the Q3 invoices");
    assert_eq!(reqs[0]["task"]["status"], "approved");
}

#[test]
fn denied_is_an_error_and_a_retry_does_not_ask_again() {
    let w = world();
    let (mission, token) = w.portal.active(&["http.get"]);
    let (c, _) = agent(
        w,
        |t, n| {
            if n == 1 {
                let r = world().portal.op(
                    "POST",
                    &format!("/operator/access-requests/{}/deny", t.task_id),
                    Some(json!({"reason": "not for this mission"})),
                );
                assert_eq!(r.status, 200, "{}", r.text());
            }
        },
        60,
    );
    match get(&c, &token, "/v2/reports") {
        Err(Error::Denied(o)) => assert_eq!(o.reason.as_deref(), Some("not for this mission")),
        other => panic!("expected Denied, got {other:?}"),
    }
    assert!(matches!(get(&c, &token, "/v2/reports"), Err(Error::Denied(_))));
    let reqs = requests_of(w, &mission);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0]["task"]["status"], "denied");
}

#[test]
fn timed_out_then_the_retry_resumes_the_same_request() {
    let w = world();
    let (mission, token) = w.portal.active(&["http.get"]);
    let (c, updates) = agent(w, |_, _| {}, 2);
    let started = Instant::now();
    let task = match get(&c, &token, "/v2/reports?t=1") {
        Err(Error::TimedOut(o)) => o.task_id.unwrap(),
        other => panic!("expected TimedOut, got {other:?}"),
    };
    // Raised without waiting out the Retry-After (5 s) that would have overrun the 2 s bound.
    assert!(started.elapsed() < Duration::from_millis(4500), "{:?}", started.elapsed());
    let polls = updates.lock().unwrap().len();
    // An immediate retry neither asks again nor polls before Retry-After.
    match get(&c, &token, "/v2/reports?t=1") {
        Err(Error::TimedOut(o)) => assert_eq!(o.task_id.as_deref(), Some(task.as_str())),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert_eq!(updates.lock().unwrap().len(), polls);
    assert_eq!(w.portal.approve_request(&task, 60).status, 200);
    let rb = c.inner().get("http://api.partner.example/v2/reports?t=1").bearer_auth(&token);
    let r = missiongate_tests::rt().block_on(c.send_within(rb, Duration::from_secs(30))).unwrap();
    // Goes through: either the gateway already allows it (the approval made the PDP say yes), or it
    // still answers from its 1 s denial memory and the client polls its task and resends.
    assert_eq!(r.status(), 200);
    let reqs = requests_of(w, &mission);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0]["task"]["id"], task.as_str());
}

#[test]
fn expired_is_an_error() {
    let w = short_world();
    let (mission, token) = w.portal.active(&["http.get"]);
    let (c, updates) = agent(w, |_, _| {}, 60);
    assert!(matches!(get(&c, &token, "/v2/reports"), Err(Error::Expired(_))));
    // Pending when submitted (and, unless the machine is slow, at the first poll), expired later.
    let seen = statuses(&updates);
    assert_eq!((seen.first().map(String::as_str), seen.last().map(String::as_str)), (Some("pending"), Some("expired")));
    assert_eq!(requests_of(w, &mission).len(), 1);
}

#[test]
fn an_allowed_call_passes_untouched() {
    let w = world();
    let (mission, token) = w.portal.active(&["http.get"]);
    let (c, updates) = agent(w, |_, _| {}, 60);
    let r = get(&c, &token, "/v1/invoices").unwrap();
    assert_eq!(r.status(), 200);
    assert!(updates.lock().unwrap().is_empty());
    assert!(requests_of(w, &mission).is_empty());
}

/// A JSON-RPC responder standing in for an MCP server (the filter only reads the request): answers
/// every request with a result naming the tool, and records the `tools/call`s that reached it.
struct RpcUpstream {
    port: u16,
    calls: Arc<Mutex<Vec<Value>>>,
}

fn rpc_upstream() -> RpcUpstream {
    let calls: Arc<Mutex<Vec<Value>>> = Arc::default();
    let c = Arc::clone(&calls);
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let c = Arc::clone(&c);
        async move {
            let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if req["method"] == "tools/call" {
                c.lock().unwrap().push(req["params"].clone());
            }
            let text = format!("called {}", req["params"]["name"].as_str().unwrap_or("-"));
            axum::Json(
                json!({"jsonrpc": "2.0", "id": req["id"], "result": {"content": [{"type": "text", "text": text}]}}),
            )
        }
    });
    let port = missiongate_tests::free_port();
    missiongate_tests::serve_on(port, app);
    RpcUpstream { port, calls }
}

#[test]
fn an_mcp_tool_call_refused_with_32042_is_requested_and_goes_through_once() {
    let rpc = rpc_upstream();
    let portal = Portal::start(&["--status-fresh-seconds", "30"]);
    let dest = r#""origin": "https://api.partner.example","#;
    let opts = Opts {
        concurrency: 2,
        events: true,
        pdp: true,
        replace: vec![(dest.to_owned(), format!(r#"{dest} "mcp": {{ "path": "/mcp" }},"#))],
        ..Opts::default()
    };
    let envoy = Envoy::start(rpc.port, portal.port, opts);
    let r = portal.op("POST", "/operator/missions", Some(json!({
        "intent": { "goal": "Pay the reconciled invoice", "resources": ["https://api.partner.example"],
                    "expires_at": missiongate_wire::time::format_rfc3339(missiongate_tests::now() + 3600) },
        "authorization_details": [{ "type": "mission_resource_access", "resource": "https://api.partner.example/mcp",
                                    "actions": ["mcp.method.*"] }],
        "client_id": "agent-7"
    })));
    assert_eq!(r.status, 201, "{}", r.text());
    let mission = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(portal.lifecycle(&mission, "approve").status, 200);
    let token = portal.token(&mission, None);
    let w = World { _up: Upstream::start(None), portal, envoy };
    let approver = w.portal.port;
    let (c, updates) = agent(
        &w,
        move |t, n| {
            if n == 1 {
                let r = missiongate_tests::http::Req::new(
                    "POST",
                    &format!("/operator/access-requests/{}/approve", t.task_id),
                )
                .header("Host", &format!("127.0.0.1:{approver}"))
                .header("Authorization", &format!("Bearer {}", missiongate_tests::portal::OPERATOR_TOKEN))
                .header("Content-Type", "application/json")
                .body(r#"{"duration_seconds": 60}"#)
                .send(approver);
                assert_eq!(r.status, 200, "{}", r.text());
            }
        },
        60,
    );
    let args = json!({"invoice": "inv_842", "amount": "423.50", "currency": "USD"});
    let call = |id: u64| {
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "pay_invoice", "arguments": args}});
        let rb = c
            .inner()
            .post("http://api.partner.example/mcp")
            .bearer_auth(&token)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        let r = missiongate_tests::rt().block_on(c.send(rb)).unwrap();
        assert_eq!(r.status(), 200);
        missiongate_tests::rt().block_on(r.json::<Value>()).unwrap()
    };
    let answer = call(7);
    assert_eq!(answer["id"], 7);
    assert_eq!(answer["result"]["content"][0]["text"], "called pay_invoice", "{answer}");
    assert_eq!(*rpc.calls.lock().unwrap(), vec![json!({"name": "pay_invoice", "arguments": args})]);
    assert_eq!(statuses(&updates).first().map(String::as_str), Some("pending"));
    assert_eq!(statuses(&updates).last().map(String::as_str), Some("approved"));
    let reqs = requests_of(&w, &mission);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(
        reqs[0]["parameters"],
        json!({"target": "https://api.partner.example/mcp", "mcp_method": "tools/call", "tool": "pay_invoice", "arguments": args})
    );
    // The approval was for one call: the same call again is a reused permit, refused as -32001,
    // which is not requestable, so the client hands it back untouched.
    let again = call(8);
    assert_eq!(again["error"]["code"], -32001, "{again}");
    assert_eq!(again["error"]["data"]["reason"], "parameter_violation", "{again}");
    assert_eq!(rpc.calls.lock().unwrap().len(), 1);
    assert_eq!(requests_of(&w, &mission).len(), 1);
}
