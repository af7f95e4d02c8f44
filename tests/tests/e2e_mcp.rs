//! Issue 13 end to end: MCP through the gateway. The official MCP Python SDK (PyPI `mcp`, pinned in
//! mk/mcp.mk) on both sides: its MCPServer over Streamable HTTP (stateless, SSE responses) as the
//! upstream (tests/mcp/server.py), its Client through Envoy as an HTTP forward proxy
//! (tests/mcp/client.py); the real filter, the real portal (authority, PDP, Access Requests).
//!
//! Protocol revisions: the handshake era (`initialize`, the SDK's `mode="legacy"`, which negotiates
//! 2025-11-25) and 2026-07-28 (no handshake; the SDK sends `Mcp-Method` / `Mcp-Name`).

use missiongate_tests::envoy::{Envoy, Opts};
use missiongate_tests::http::{path_of, Req};
use missiongate_tests::portal::Portal;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const HOST: &str = "mcp.partner.example";
const ORIGIN: &str = "http://mcp.partner.example";
const URL: &str = "http://mcp.partner.example/mcp";
const APPROVER_TOKEN: &str = "mcp-e2e-approver-token-0123456789";

struct World {
    portal: Portal,
    envoy: Envoy,
    calls: PathBuf,
    _server: Server,
}

/// The Python MCP server, killed with the test process.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The project's Python with the MCP SDK (`.venv/bin/python`, made by `make python-mcp`).
fn python() -> PathBuf {
    let py = missiongate_tests::repo_root().join(".venv/bin/python");
    let ok = Command::new(&py).args(["-c", "import mcp, httpx2"]).output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "{} has no `mcp`: run `make python-mcp` (make test does it)", py.display());
    py
}

fn script(name: &str) -> PathBuf {
    missiongate_tests::repo_root().join("tests/mcp").join(name)
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = missiongate_tests::repo_root().join("target/e2e");
        std::fs::create_dir_all(&dir).unwrap();
        let calls = dir.join(missiongate_tests::rand_id("mcp-calls-"));
        let port = missiongate_tests::free_port();
        let mut cmd = Command::new(python());
        cmd.arg(script("server.py"))
            .arg(port.to_string())
            .arg(&calls)
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join(format!("mcp-server-{port}.log"))).unwrap()));
        let mut server = Server(missiongate_tests::spawn(cmd).unwrap());
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(st)) = server.0.try_wait() {
                panic!("the MCP server exited with {st}");
            }
            assert!(start.elapsed() < Duration::from_secs(60), "the MCP server did not listen in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let approver = format!("alice:{APPROVER_TOKEN}");
        let portal = Portal::start(&["--status-fresh-seconds", "30", "--approver", &approver]);
        // The MCP server as a destination: every request Envoy forwards goes to the static egress
        // cluster, here the Python server.
        let mcp = json!({"authority": HOST, "mcp": {"path": "/mcp", "tools": [
            {"name": "echo", "consequential": false},
            {"name": "stream", "consequential": false}
        ]}});
        let replace = vec![("\"destinations\": [{".to_owned(), format!("\"destinations\": [{mcp}, {{"))];
        let envoy = Envoy::start(port, portal.port, Opts { concurrency: 2, pdp: true, replace, ..Opts::default() });
        World { portal, envoy, calls, _server: server }
    })
}

/// An active Mission on the MCP server with these actions; its Bearer token.
fn mission(actions: &[&str]) -> String {
    let p = &world().portal;
    let r = p.op(
        "POST",
        "/operator/missions",
        Some(json!({
            "intent": { "goal": "Pay the open invoices", "resources": [ORIGIN],
                        "expires_at": missiongate_wire::time::format_rfc3339(missiongate_tests::now() + 3600) },
            "authorization_details": [{ "type": "mission_resource_access", "resource": ORIGIN, "actions": actions }],
            "client_id": "agent-7"
        })),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(p.lifecycle(&id, "approve").status, 200);
    p.token(&id, None)
}

/// Run the SDK client through the gateway with `steps`; its results.
fn client(token: &str, mode: &str, extra: Value, steps: Value) -> Vec<Value> {
    let mut plan = json!({"proxy": format!("http://127.0.0.1:{}", world().envoy.port), "url": URL,
                          "token": token, "mode": mode, "steps": steps});
    if let (Some(p), Some(e)) = (plan.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    let out = Command::new(python()).arg(script("client.py")).arg(plan.to_string()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "client failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let doc: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    doc["results"].as_array().unwrap().clone()
}

fn call(tool: &str, arguments: Value) -> Value {
    json!({"op": "call", "tool": tool, "arguments": arguments})
}

/// The tool calls that reached the MCP server.
fn calls_of(tool: &str) -> Vec<Value> {
    std::fs::read_to_string(&world().calls)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|c| c["tool"] == tool)
        .map(|c| c["arguments"].clone())
        .collect()
}

fn ok(r: &Value) -> &Value {
    assert!(r.get("ok").is_some(), "expected a result: {r}");
    &r["ok"]
}

fn error(r: &Value, code: i64) -> &Value {
    assert_eq!(r["error"]["code"], code, "{r}");
    &r["error"]
}

fn refused(r: &Value, reason: &str, status: u16) {
    let e = error(r, -32001);
    assert_eq!(e["data"]["reason"], reason, "{r}");
    assert_eq!(e["data"]["status"], status, "{r}");
}

/// `name=value` of every Set-Cookie of a response.
fn cookies(r: &missiongate_tests::http::Response) -> Vec<String> {
    r.headers_all("set-cookie").iter().filter_map(|c| c.split(';').next()).map(str::to_owned).collect()
}

/// Sign in as the approver and read the page at `path`, as a person does in a browser.
fn approver_page(path: &str) -> String {
    let w = world();
    let host = format!("127.0.0.1:{}", w.portal.port);
    let form = Req::new("GET", &format!("/portal/login?next={path}")).header("Host", &host).send(w.portal.port);
    assert_eq!(form.status, 200, "{}", form.text());
    let html = form.text();
    let csrf = html.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned();
    let login_cookie = cookies(&form).join("; ");
    let body = format!("csrf={csrf}&token={APPROVER_TOKEN}&next={path}");
    let r = Req::new("POST", "/portal/login")
        .header("Host", &host)
        .header("Cookie", &login_cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send(w.portal.port);
    assert_eq!(r.status, 303, "{}", r.text());
    let session = cookies(&r).into_iter().filter(|c| !c.ends_with('=')).collect::<Vec<_>>().join("; ");
    let page = Req::new("GET", path).header("Host", &host).header("Cookie", &session).send(w.portal.port);
    assert_eq!(page.status, 200, "{}", page.text());
    page.text()
}

#[test]
fn handshake_listing_and_a_granted_tool_go_through() {
    let token = mission(&["mcp.method.*", "mcp.tool.echo"]);
    let r = client(&token, "legacy", json!({}), json!([{"op": "list_tools"}, call("echo", json!({"text": "hello"}))]));
    assert_eq!(ok(&r[0]), &json!(["echo", "pay_invoice", "stream"]));
    assert_eq!(ok(&r[1]), &json!(["hello"]));
    assert!(calls_of("echo").contains(&json!({"text": "hello"})));
    // The handshake went through the filter as MCP operations, named in the access log.
    let logs = world().envoy.logs();
    assert!(logs.contains("\"action\":\"mcp.method.initialize\""), "{logs}");
    assert!(logs.contains("\"action\":\"mcp.method.tools.list\""), "{logs}");
    assert!(logs.contains("\"mcp_tool\":\"echo\""), "{logs}");
    // Without mcp.method.*, even the handshake is outside the Mission: a requestable denial of
    // `initialize`, which the SDK reports as the URL elicitation error.
    let narrow = mission(&["mcp.tool.echo"]);
    let r = client(&narrow, "legacy", json!({}), json!([]));
    let e = error(&r[0], -32042);
    assert_eq!(e["data"]["access_request"]["action"]["name"], "mcp.method.initialize", "{e}");
}

#[test]
fn a_tool_outside_the_mission_is_requestable_and_the_approved_call_goes_through_once() {
    let w = world();
    let token = mission(&["mcp.method.*", "mcp.tool.echo"]);
    let invoice = missiongate_tests::rand_id("inv_");
    let args = json!({"invoice": invoice, "amount": "423.50", "currency": "USD"});
    let r = client(&token, "legacy", json!({}), json!([call("pay_invoice", args.clone())]));
    let e = error(&r[0], -32042);
    let elicitation = &e["data"]["elicitations"][0];
    assert_eq!(elicitation["mode"], "url");
    let portal_url = elicitation["url"].as_str().unwrap();
    assert!(portal_url.contains("/portal/d/"), "{e}");
    let ar = &e["data"]["access_request"];
    assert_eq!(elicitation["elicitationId"], ar["context"]["evaluation_id"]);
    assert_eq!(ar["action"]["name"], "mcp.tool.pay_invoice");
    assert_eq!(ar["action"]["properties"]["mcp_tool"], "pay_invoice");
    assert_eq!(ar["resource"]["id"], ORIGIN);
    let (digest, _) = missiongate_wire::digest::mcp_tool_call_digest(URL, "tools/call", "pay_invoice", Some(&args));
    assert_eq!(ar["action"]["properties"]["parameter_digest"], digest.as_str());
    assert!(calls_of("pay_invoice").iter().all(|a| a["invoice"] != invoice.as_str()), "never reached the server");
    assert!(w.envoy.logs().contains("\"mcp_tool\":\"pay_invoice\""));

    // The agent asks with the call's MCP parameter object; the portal checks it against the digest.
    let doc = json!({"access-request": ar});
    let mut wrong = json!({"target": URL, "mcp_method": "tools/call", "tool": "pay_invoice", "arguments": args});
    wrong["arguments"]["amount"] = json!("4235.00");
    let r = w.portal.request_access(&doc, &missiongate_tests::rand_id("idem-"), Some(wrong), "pay it");
    assert_eq!(r.status, 400, "{}", r.text());
    let parameters = json!({"target": URL, "mcp_method": "tools/call", "tool": "pay_invoice", "arguments": args});
    let r = w.portal.request_access(&doc, &missiongate_tests::rand_id("idem-"), Some(parameters), "pay the invoice");
    assert!(r.status == 201 || r.status == 202, "{}", r.text());
    let task = r.json()["task"]["id"].as_str().unwrap().to_owned();
    // The approver page names the tool and shows its arguments.
    let html = approver_page(&path_of(portal_url));
    assert!(html.contains("id=\"mcp-tool\">pay_invoice<"), "{html}");
    assert!(html.contains("id=\"call-tool\">pay_invoice<"), "{html}");
    assert!(html.contains(&invoice) && html.contains("423.50"), "the arguments are shown: {html}");
    let r = w.portal.approve_request(&task, 60);
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    std::thread::sleep(Duration::from_millis(1100)); // the filter remembers the denial for 1 s

    // While the approval is outstanding, a changed argument is not the approved call: refused as
    // parameter_violation (SPEC section 6), never forwarded.
    let mut changed = args.clone();
    changed["amount"] = json!("4235.00");
    let r = client(&token, "legacy", json!({}), json!([call("pay_invoice", changed.clone())]));
    refused(&r[0], "parameter_violation", 403);
    assert!(calls_of("pay_invoice").iter().all(|a| a["invoice"] != invoice.as_str()));
    // Exactly that call (same tool and arguments, another JSON-RPC id) goes through, once.
    let r = client(&token, "legacy", json!({}), json!([call("pay_invoice", args.clone())]));
    assert_eq!(ok(&r[0]), &json!([format!("paid {invoice}: 423.50 USD")]));
    assert_eq!(calls_of("pay_invoice").iter().filter(|a| a["invoice"] == invoice.as_str()).count(), 1);
    let r = client(&token, "legacy", json!({}), json!([call("pay_invoice", args.clone())]));
    refused(&r[0], "parameter_violation", 403);
    // Once the approval is used, another changed call is a new call: a fresh requestable denial
    // bound to its own digest. (Not the one refused above: the gateway remembers that refusal for a
    // moment.)
    changed["amount"] = json!("4236.00");
    let r = client(&token, "legacy", json!({}), json!([call("pay_invoice", changed.clone())]));
    assert_eq!(r[0]["error"]["code"], -32042, "{}", r[0]);
    let (d, _) = missiongate_wire::digest::mcp_tool_call_digest(URL, "tools/call", "pay_invoice", Some(&changed));
    assert_eq!(r[0]["error"]["data"]["access_request"]["action"]["properties"]["parameter_digest"], d.as_str());
    assert_eq!(calls_of("pay_invoice").iter().filter(|a| a["invoice"] == invoice.as_str()).count(), 1);
}

#[test]
fn the_2026_revision_with_routing_headers_and_a_mismatched_mcp_name() {
    let token = mission(&["mcp.method.*", "mcp.tool.echo"]);
    let r =
        client(&token, "2026-07-28", json!({}), json!([{"op": "list_tools"}, call("echo", json!({"text": "new"}))]));
    assert_eq!(ok(&r[0]), &json!(["echo", "pay_invoice", "stream"]));
    assert_eq!(ok(&r[1]), &json!(["new"]));
    // The SDK sends Mcp-Name: echo; the client rewrites it. The gateway refuses before the server.
    let before = calls_of("echo").len();
    let r = client(
        &token,
        "2026-07-28",
        json!({"wrong_mcp_name": "pay_invoice"}),
        json!([call("echo", json!({"text": "x"}))]),
    );
    refused(&r[0], "mcp_header_mismatch", 400);
    assert_eq!(calls_of("echo").len(), before, "the mismatched call never reached the server");
    assert!(world().envoy.wait_counter("wasmcustom.missiongate.decision.mcp_header_mismatch", 1) >= 1);
}

#[test]
fn an_sse_response_streams_through_unbuffered() {
    let token = mission(&["mcp.method.*", "mcp.tool.stream"]);
    let gate = missiongate_tests::repo_root().join("target/e2e").join(missiongate_tests::rand_id("gate-"));
    let step = json!({"op": "call", "tool": "stream", "arguments": {"gate": gate.display().to_string()}, "gate": true});
    let r = client(&token, "legacy", json!({}), json!([step]));
    // The server finishes only once the client saw its first progress event: had anything held
    // the SSE response back until the end, it would have answered "timed out" after 30 s.
    assert_eq!(ok(&r[0]), &json!(["released"]), "{}", r[0]);
    assert_eq!(r[0]["progress"], json!(["first event", "done"]));
    assert!(gate.exists());
}

#[test]
fn requests_without_a_token_get_the_http_challenge() {
    let w = world();
    let r = Req::new("POST", "/mcp")
        .header("Host", HOST)
        .header("content-type", "application/json")
        .body(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#)
        .send(w.envoy.port);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.header("www-authenticate").is_some());
    // A batch is refused as HTTP 400 (there is no single id to answer).
    let token = mission(&["mcp.*"]);
    let r = Req::new("POST", "/mcp")
        .header("Host", HOST)
        .bearer(&token)
        .header("content-type", "application/json")
        .body(r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#)
        .send(w.envoy.port);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["reason"], "mcp_batch_refused");
    // A tool name outside the grammar: a JSON-RPC error for its id.
    let r = Req::new("POST", "/mcp")
        .header("Host", HOST)
        .bearer(&token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(r#"{"jsonrpc":"2.0","id":"q","method":"tools/call","params":{"name":"a b","arguments":{}}}"#)
        .send(w.envoy.port);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["id"], "q");
    assert_eq!(body["error"]["code"], -32001);
    assert_eq!(body["error"]["data"]["reason"], "mcp_tool_name_invalid");
}
