//! `make demo`: Envoy with the missiongate filter as the agent's egress forward proxy, the
//! captive-portal and a demo HTTPS upstream on loopback (the ports of `envoy/missiongate.yaml`), and
//! an agent walked through the whole story. The agent is curl with nothing but `HTTPS_PROXY` and
//! `CURL_CA_BUNDLE` (the gateway CA; curl's variable, as `REQUESTS_CA_BUNDLE` is Python's): every call is HTTPS to `api.partner.example`, which the
//! gateway inspects (TLS terminated with the gateway CA's certificate, each request decided, TLS
//! originated to the upstream with its certificate verified).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use missiongate_tests::egress::{Dns, TestCa, TlsUpstream};
use missiongate_tests::envoy::{render, Egress, Envoy, Opts};
use missiongate_tests::http::{path_of, Req, Response};
use missiongate_tests::portal::Portal;
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const LISTENER: u16 = 10000;
const ADMIN: u16 = 9901;
const UPSTREAM: u16 = 18080;
const PORTAL: u16 = 18443;
/// The destination, by name (served by the demo's loopback DNS server), over HTTPS on `UPSTREAM`.
const HOST: &str = "api.partner.example";

fn step(n: &str, title: &str) {
    println!("\n\x1b[1m== {n}. {title}\x1b[0m");
}

fn show(what: &str, r: &Response) {
    println!("   {what}: HTTP {}", r.status);
    for h in ["content-type", "www-authenticate", "link", "retry-after"] {
        for v in r.headers_all(h) {
            println!("     {h}: {v}");
        }
    }
    if let Ok(mut v) = serde_json::from_slice::<Value>(&r.body) {
        shorten(&mut v);
        let text = serde_json::to_string_pretty(&v).unwrap();
        for line in text.lines() {
            println!("     {line}");
        }
    }
}

/// Long strings (binding tokens, signatures) are cut for reading.
fn shorten(v: &mut Value) {
    match v {
        Value::String(s) if s.len() > 72 && !s.contains(' ') => *s = format!("{}...", &s[..40]),
        Value::Array(a) => a.iter_mut().for_each(shorten),
        Value::Object(o) => {
            o.remove("headers");
            o.values_mut().for_each(shorten)
        }
        _ => {}
    }
}

/// What the demo expected at one point, and whether it happened. `make demo` exits non-zero when
/// any step did not behave as the story says (`make test` runs it).
fn expect(what: &str, r: &Response, status: u16, failures: &mut Vec<String>) {
    if r.status == status {
        println!("   \x1b[32mok\x1b[0m: {what} (HTTP {status})");
    } else {
        println!("   \x1b[31mUNEXPECTED\x1b[0m: {what}: wanted HTTP {status}, got {}", r.status);
        failures.push(format!("{what}: wanted {status}, got {} {}", r.status, String::from_utf8_lossy(&r.body)));
    }
}

/// The filter remembers a PDP denial for `pdp.deny_cache_seconds` (1 s by default), so a retry
/// within a second of the denial still sees it. A real approval takes a person longer than that.
fn wait_out_the_denial_memory(denied_at: Instant) {
    let memory = Duration::from_millis(1100);
    if let Some(left) = memory.checked_sub(denied_at.elapsed()) {
        std::thread::sleep(left);
    }
}

/// The gateway CA file the agent trusts (`captive-portal gateway-ca init` wrote it).
static AGENT_CA: OnceLock<PathBuf> = OnceLock::new();

/// The agent's environment: its standard proxy variable and the gateway CA, nothing else.
fn agent_env() -> [(&'static str, String); 2] {
    let ca = AGENT_CA.get().map(|p| p.display().to_string()).unwrap_or_default();
    [("HTTPS_PROXY", format!("http://127.0.0.1:{LISTENER}")), ("CURL_CA_BUNDLE", ca)]
}

/// One call of the agent: curl to `https://api.partner.example:18080<path>` through the gateway.
/// A call that fails below HTTP (TLS, proxy) is status 0 with curl's error as its body.
fn agent(method: &str, path: &str, token: &str, body: Option<&str>) -> Response {
    let dir = missiongate_tests::repo_root().join("target/demo");
    std::fs::create_dir_all(&dir).unwrap();
    let head = dir.join(format!("headers-{}", missiongate_tests::rand_id("")));
    let mut cmd = Command::new("curl");
    cmd.envs(agent_env()).env_remove("NO_PROXY").env_remove("no_proxy");
    cmd.args(["-sS", "--max-time", "20", "--suppress-connect-headers", "-D"]).arg(&head);
    cmd.args(["-X", method, "-H", &format!("Authorization: Bearer {token}")]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = cmd.arg(format!("https://{HOST}:{UPSTREAM}{path}")).output().expect("run curl (make tools installs it)");
    let text = std::fs::read_to_string(&head).unwrap_or_default();
    let _ = std::fs::remove_file(&head);
    let mut lines = text.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if out.status.success() { out.stdout } else { out.stderr };
    Response { status, headers, body }
}

/// `captive-portal gateway-ca init` and `issue --host api.partner.example` into `dir`.
fn gateway_ca(dir: &Path) {
    let bin = missiongate_tests::portal::portal_bin();
    for args in [&["init"][..], &["issue", "--host", HOST][..]] {
        let out = Command::new(&bin).arg("gateway-ca").args(args).arg("--dir").arg(dir).output().unwrap();
        assert!(out.status.success(), "gateway-ca {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        println!("   $ captive-portal gateway-ca {} --dir {}", args.join(" "), dir.display());
    }
}

/// Ask for access after a 511, have a person approve it, and poll the task (as an agent does)
/// until it is approved.
fn request_and_approve(
    portal: &Portal,
    denial: &Response,
    justification: &str,
    parameters: Option<Value>,
    seconds: u64,
    failures: &mut Vec<String>,
) {
    let doc = denial.json();
    let r = portal.request_access(&doc, &missiongate_tests::rand_id("idem-"), parameters, justification);
    show("agent submits the access request", &r);
    let Some(task) = r.json()["task"]["id"].as_str().map(str::to_owned) else {
        failures.push(format!("no task in the access request answer: {}", r.text()));
        return;
    };
    let status_endpoint = r.json()["task"]["status_endpoint"].as_str().map(str::to_owned).unwrap_or_default();
    println!("   a person opens {} (the approver page) ...", doc["user-portal-url"].as_str().unwrap_or("?"));
    let r = portal.approve_request(&task, seconds);
    show("... and approves it (approver API; the page does the same)", &r);
    let poll = Req::new("GET", &path_of(&status_endpoint)).header("Host", &format!("127.0.0.1:{PORTAL}")).send(PORTAL);
    println!("   the agent polls {}: task {}", path_of(&status_endpoint), poll.json()["task"]["status"]);
    if poll.json()["task"]["status"] != "approved" {
        failures.push(format!("task {task} is not approved: {}", poll.text()));
    }
}

/// Ports of the MCP step: a second Envoy whose destination is an MCP server of the official SDK.
const MCP_LISTENER: u16 = 10001;
const MCP_ADMIN: u16 = 9902;
const MCP_SERVER: u16 = 18081;

fn check(what: &str, ok: bool, detail: &str, failures: &mut Vec<String>) {
    if ok {
        println!("   \x1b[32mok\x1b[0m: {what}");
    } else {
        println!("   \x1b[31mUNEXPECTED\x1b[0m: {what}: {detail}");
        failures.push(format!("{what}: {detail}"));
    }
}

/// Issue 13: an agent written with the official MCP Python SDK calls tools through the gateway,
/// using missiongate_client (clients/python) as its HTTP transport: an allowed tool, then a tool
/// outside its Mission, which the gateway refuses with -32042; the library requests access, the
/// person approves it on the portal (approver API), and the approved call goes through once.
fn mcp_step(portal: &Portal, f: &mut Vec<String>) {
    use std::process::{Command, Stdio};
    let root = missiongate_tests::repo_root();
    let python = root.join(".venv/bin/python");
    let examples = root.join("clients/python/examples");
    let log_path = root.join("target/demo-mcp-server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(&python);
    cmd.arg(examples.join("partner_mcp_server.py"))
        .arg(MCP_SERVER.to_string())
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log));
    let mut server = match missiongate_tests::spawn(cmd) {
        Ok(c) => c,
        Err(e) => {
            f.push(format!("cannot start the MCP server with {} ({e}): run `make python-clients`", python.display()));
            return;
        }
    };
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", MCP_SERVER)).is_err() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let dest = r#""origin": "https://api.partner.example","#;
    let mcp = r#"{ "path": "/mcp", "tools": [{ "name": "list_open_invoices", "consequential": false }] }"#;
    let opts = Opts {
        events: true,
        pdp: true,
        replace: vec![(dest.to_owned(), format!(r#"{dest} "mcp": {mcp},"#))],
        ..Opts::default()
    };
    let yaml = render("envoy/missiongate.yaml", MCP_LISTENER, MCP_ADMIN, MCP_SERVER, PORTAL, &opts);
    let envoy = Envoy::start_yaml(&yaml, MCP_LISTENER, MCP_ADMIN, 1);
    println!("   an MCP server (official SDK, Streamable HTTP) on :{MCP_SERVER}; Envoy :{MCP_LISTENER} marks api.partner.example/mcp as MCP");
    let r = portal.op("POST", "/operator/missions", Some(json!({
        "intent": { "goal": "Pay the reconciled invoice", "resources": ["https://api.partner.example"],
                    "expires_at": missiongate_wire::time::format_rfc3339(missiongate_tests::now() + 3600) },
        "authorization_details": [{ "type": "mission_resource_access", "resource": "https://api.partner.example/mcp",
                                    "actions": ["mcp.method.*", "mcp.tool.list_open_invoices"] }],
        "client_id": "agent-7"
    })));
    let mission = r.json()["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(portal.lifecycle(&mission, "approve").status, 200);
    let token = portal.token(&mission, None);
    println!("   mission {mission}: mcp.method.* and mcp.tool.list_open_invoices, not pay_invoice");
    let mut cmd = Command::new(&python);
    cmd.arg(examples.join("mcp_agent.py"))
        .arg(format!("http://127.0.0.1:{MCP_LISTENER}"))
        .arg("http://api.partner.example/mcp")
        .env("MISSIONGATE_TOKEN", &token);
    let mut agent = missiongate_tests::spawn(cmd).unwrap();
    // The person: the access request appears on the portal; they read the tool and its arguments
    // and approve it (the approver API; the page does the same).
    let t0 = Instant::now();
    let mut approved = false;
    while t0.elapsed() < Duration::from_secs(60) && !approved {
        let list = portal.op("GET", "/operator/access-requests?status=pending", None).json();
        let mine = list["access_requests"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["denial"]["mission"]["id"] == mission.as_str()).cloned());
        if let Some(req) = mine {
            println!(
                "   the person sees access request {} on the portal: {} {} with {}",
                req["task"]["id"].as_str().unwrap_or("?"),
                req["denial"]["action"]["name"].as_str().unwrap_or("?"),
                req["denial"]["resource"]["id"].as_str().unwrap_or("?"),
                req["parameters"]["arguments"]
            );
            let r = portal.approve_request(req["task"]["id"].as_str().unwrap_or_default(), 300);
            println!("   ... and approves it: HTTP {}", r.status);
            approved = r.status == 200;
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    check("the blocked tool call became an access request the person approved", approved, "none appeared in 60 s", f);
    let t0 = Instant::now();
    let status = loop {
        if let Ok(Some(st)) = agent.try_wait() {
            break Some(st);
        }
        if t0.elapsed() > Duration::from_secs(150) {
            let _ = agent.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    check(
        "the agent listed tools, called the allowed tool, and its approved call went through",
        status.is_some_and(|s| s.success()),
        &format!("agent exit {status:?}"),
        f,
    );
    let paid =
        std::fs::read_to_string(&log_path).unwrap_or_default().lines().filter(|l| l.starts_with("PAID ")).count();
    check("the MCP server ran pay_invoice exactly once", paid == 1, &format!("{paid} times"), f);
    let _ = server.kill();
    let _ = server.wait();
    envoy.assert_healthy();
}

fn main() {
    let mut failures: Vec<String> = Vec::new();
    let f = &mut failures;
    println!("missiongate demo: Envoy :{LISTENER} (admin :{ADMIN}), portal :{PORTAL}, https://{HOST}:{UPSTREAM}");
    // The partner API: HTTPS on loopback with a certificate from a CA that stands in for the public
    // ones (Envoy trusts it on the TLS it originates), found by name through a loopback DNS server.
    let public_ca = TestCa::new("demo-public-ca");
    let up = TlsUpstream::start_on(&public_ca, &[HOST], UPSTREAM);
    let dns = Dns::start(&[(HOST, Ipv4Addr::LOCALHOST)]);
    // The gateway's own CA and the inspected host's certificate, made by the command operators use.
    step("0", "the operator creates the gateway CA; the agent trusts it and uses the gateway as its proxy");
    let ca_dir = missiongate_tests::repo_root().join("target/demo").join(missiongate_tests::rand_id("gateway-ca-"));
    gateway_ca(&ca_dir);
    AGENT_CA.set(ca_dir.join("ca.pem")).unwrap();
    let env: Vec<String> = agent_env().iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("   the agent's environment: {}", env.join(" "));
    println!("   each call: curl -H 'Authorization: Bearer $TOKEN' https://{HOST}:{UPSTREAM}/...");
    // --dev-trust-loopback: on this loopback-only demo, curl may ask the PDP, Mission Status and the
    // event feed without the gateway credential (the README says why that is for development only).
    let portal = Portal::start_on(PORTAL, &["--status-fresh-seconds", "30", "--dev-trust-loopback"]);
    // The shipped config as it is, except: its DNS cache asks the demo's DNS server, its TLS
    // origination trusts the stand-in public CA, the upstream's loopback address is allowed inside,
    // and the inspected destination has the demo's port.
    let egress = Egress {
        dns_port: dns.port,
        ca_file: public_ca.pem_file.clone(),
        allowed_inside: vec!["^api[.]partner[.]example:[0-9]+$".to_owned()],
    };
    let replace =
        vec![("\"authority\": \"api.partner.example\",".to_owned(), format!("\"authority\": \"{HOST}:{UPSTREAM}\","))];
    let opts = Opts { events: true, pdp: true, egress: Some(egress), replace, ..Opts::default() };
    let yaml = render("envoy/missiongate.yaml", LISTENER, ADMIN, UPSTREAM, PORTAL, &opts).replace(
        &format!("filename: {}/", missiongate_tests::egress::gateway_ca().0.display()),
        &format!("filename: {}/", ca_dir.display()),
    );
    let envoy = Envoy::start_yaml(&yaml, LISTENER, ADMIN, 2);
    println!("Envoy log: {}", envoy.log.display());

    step("1", "an operator creates a Mission for the agent and a person approves it");
    let id = portal.create_mission(&["http.get", "payments.create"], 3600);
    println!("   mission {id}: pending_approval");
    assert_eq!(portal.lifecycle(&id, "approve").status, 200);
    let token = portal.token(&id, None);
    println!("   approved; the agent holds a Mission-bound token ({} bytes)", token.len());

    step("2", "an allowed call: GET https://api.partner.example/v1/invoices (HTTPS through the gateway)");
    let r = agent("GET", "/v1/invoices?status=open", &token, None);
    show("upstream answered", &r);
    expect("inside the Mission's authority: forwarded", &r, 200, f);

    step("3", "a blocked call: GET /v2/reports is outside the Mission's authority");
    let denial = agent("GET", "/v2/reports", &token, None);
    let denied_at = Instant::now();
    show("the filter answers with a requestable denial", &denial);
    expect("outside it: a requestable denial (RFC 8908 captive document)", &denial, 511, f);
    let captive_api = denial
        .header("link")
        .and_then(|l| l.split('>').next())
        .map(|s| s.trim_start_matches('<').to_owned())
        .unwrap_or_default();

    step("4", "the agent asks for access; a person approves it for 5 seconds");
    request_and_approve(&portal, &denial, "Need the Q3 report to reconcile invoices", None, 5, f);
    let approved_at = Instant::now();
    wait_out_the_denial_memory(denied_at);

    step("5", "the agent retries: the filter evaluates again and the PDP now says yes");
    let r = agent("GET", "/v2/reports", &token, None);
    show("retry", &r);
    expect("the retry after approval goes through", &r, 200, f);
    let r = Req::new("GET", &path_of(&captive_api)).header("Host", &format!("127.0.0.1:{PORTAL}")).send(PORTAL);
    show("the per-denial Captive Portal API", &r);
    if r.json()["captive"] != false {
        f.push(format!("the Captive Portal API still says captive after approval: {}", r.text()));
    }

    step("6", "a bound call: POST /v1/payments pays 423.50 to acct_123 (consequential)");
    let body = r#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#;
    let denial = agent("POST", "/v1/payments", &token, Some(body));
    let denied_at = Instant::now();
    show("the call is bound to its parameter_digest and needs approval", &denial);
    expect("a consequential call waits for approval of exactly this call", &denial, 511, f);
    // The parameter object of SPEC §6 (HTTP Operation Profile version 2): the media type is bound.
    let params = json!({ "method": "POST", "target": "https://api.partner.example/v1/payments",
                          "content_type": "application/json",
                          "body": serde_json::from_str::<Value>(body).unwrap() });
    request_and_approve(&portal, &denial, "Pay invoice INV-77", Some(params), 60, f);
    wait_out_the_denial_memory(denied_at);
    let reordered = "{ \"to\" : \"acct_123\", \"currency\":\"USD\",\n \"amount\":\"423.50\" }";
    let r = agent("POST", "/v1/payments", &token, Some(reordered));
    show("the approved call (members reordered, same canonical form) goes through", &r);
    expect("the approved call, reordered, goes through", &r, 200, f);
    let r = agent("POST", "/v1/payments", &token, Some(body));
    show("replaying it is refused (single use)", &r);
    expect("its replay is refused (parameter_violation)", &r, 403, f);
    let r = agent("POST", "/v1/payments", &token, Some(r#"{"amount":"4235.00","currency":"USD","to":"acct_123"}"#));
    show("a changed amount is not covered by the approval", &r);
    expect("a changed amount needs its own approval", &r, 511, f);

    step("7", "the approval of step 4 ends: the destination is captive again");
    if let Some(left) = Duration::from_millis(5200).checked_sub(approved_at.elapsed()) {
        std::thread::sleep(left);
    }
    let r = agent("GET", "/v2/reports", &token, None);
    show("after approved_until", &r);
    expect("after approved_until the destination is captive again", &r, 511, f);

    step("8", "the Mission is revoked: the edge refuses at once");
    let t0 = Instant::now();
    assert_eq!(portal.lifecycle(&id, "revoke").status, 200);
    loop {
        let r = agent("GET", "/v1/invoices", &token, None);
        if r.status == 401 {
            println!("   refused {:?} after the revoke call", t0.elapsed());
            show("the agent's next call", &r);
            expect("after revocation the same allowed call is refused (mission_inactive)", &r, 401, f);
            break;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            f.push("revocation did not take effect within 5 s".into());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // What reached the partner API (over the TLS the gateway originated): the allowed calls only.
    let seen = up.requests();
    let count = |m: &str, p: &str| seen.iter().filter(|r| r.0 == m && r.1 == p).count();
    println!(
        "\nThe partner API saw {} requests over TLS from the gateway: GET /v2/reports {} time(s), POST /v1/payments {} time(s).",
        seen.len(),
        count("GET", "/v2/reports"),
        count("POST", "/v1/payments")
    );
    if count("GET", "/v2/reports") != 1 || count("POST", "/v1/payments") != 1 {
        f.push(format!("the upstream saw refused calls: {seen:?}"));
    }

    step("9", "an MCP agent (the official MCP Python SDK client, missiongate_client as its transport)");
    mcp_step(&portal, f);

    envoy.assert_healthy();
    println!(
        "\nEvidence for every decision is in the Envoy log (access log 'evidence=' and 'missiongate evidence' lines)."
    );
    if failures.is_empty() {
        println!("demo: every step behaved as described");
    } else {
        println!("demo: {} step(s) did not behave as described:", failures.len());
        for x in &failures {
            println!("  - {x}");
        }
        std::process::exit(1);
    }
}
