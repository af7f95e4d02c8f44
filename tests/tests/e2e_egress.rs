//! Issue 12: the shipped config as a forward proxy, used by unmodified clients (curl with `-x` /
//! `HTTPS_PROXY`, Python `requests`) through Envoy's dynamic forward proxy. Host names come from a
//! loopback DNS server this test starts; the TLS upstreams carry certificates from a test CA.

use missiongate_tests::authority::Authority;
use missiongate_tests::egress::{gateway_ca, python_with_requests, Dns, TestCa, TlsUpstream};
use missiongate_tests::envoy::{self, Egress, Envoy, Opts};
use missiongate_tests::portal::Portal;
use missiongate_tests::upstream::Upstream;
use missiongate_tests::{rand_id, repo_root};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::OnceLock;

const LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

struct World {
    ca: TestCa,
    /// `api.partner.example` (inspected by the gateway) and `tunnel.partner.example` (not inspected):
    /// certificate from the test CA.
    api: TlsUpstream,
    /// `rogue.partner.example`: a certificate from a CA nobody trusts.
    rogue: TlsUpstream,
    /// `plain.partner.example`: plain HTTP.
    plain: Upstream,
    dns: Dns,
    auth: Authority,
    envoy: Envoy,
    /// The forward-proxy test settings and the inspected destination's port, for the portal's Envoy.
    egress: Egress,
    replace: Vec<(String, String)>,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let ca = TestCa::new("egress-ca");
        let other = TestCa::new("untrusted-ca");
        let api = TlsUpstream::start(&ca, &["api.partner.example", "tunnel.partner.example"]);
        let rogue = TlsUpstream::start(&other, &["rogue.partner.example"]);
        let plain = Upstream::start(None);
        let dns = Dns::start(&[
            ("api.partner.example", LOOPBACK),
            ("tunnel.partner.example", LOOPBACK),
            ("rogue.partner.example", LOOPBACK),
            ("plain.partner.example", LOOPBACK),
            // A public-looking name that resolves to the inside, and is not listed as allowed inside.
            ("inside.partner.example", LOOPBACK),
        ]);
        let auth = Authority::start();
        let egress = Egress {
            dns_port: dns.port,
            ca_file: ca.pem_file.clone(),
            // The test upstreams live on 127.0.0.1: these destinations must be allowed inside.
            allowed_inside: ["api", "tunnel", "rogue", "plain"]
                .iter()
                .map(|h| format!("^{h}[.]partner[.]example:[0-9]+$"))
                .collect(),
        };
        // The inspected destination is configured with the test upstream's port.
        let replace = vec![(
            "\"authority\": \"api.partner.example\",".to_owned(),
            format!("\"authority\": \"api.partner.example:{}\",", api.port),
        )];
        let envoy = Envoy::start(
            0,
            auth.port,
            Opts { concurrency: 2, egress: Some(egress.clone()), replace: replace.clone(), ..Opts::default() },
        );
        World { ca, api, rogue, plain, dns, auth, envoy, egress, replace }
    })
}

fn proxy() -> String {
    format!("http://127.0.0.1:{}", world().envoy.port)
}

/// A token whose Mission grants `actions` on each of `origins` (whole destinations).
fn token_for(origins: &[&str], actions: &[&str]) -> String {
    let w = world();
    let id = rand_id("msn_");
    w.auth.set_mission(&id, "active");
    let mut claims = w.auth.claims(&id);
    let mut aud: Vec<Value> = claims["aud"].as_array().cloned().unwrap_or_default();
    let mut details: Vec<Value> = Vec::new();
    for o in origins {
        aud.push(json!(o));
        details.push(json!({ "type": "mission_resource_access", "resource": o, "actions": actions }));
    }
    claims["aud"] = json!(aud);
    claims["authorization_details"] = json!(details);
    w.auth.token(&claims)
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command) -> Out {
    let o = cmd.output().expect("run client");
    Out {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// curl through the gateway: `-x`, the token on the CONNECT (`--proxy-header`) and on the request.
fn curl(url: &str, token: &str, extra: &[&str]) -> Out {
    let w = world();
    let auth = format!("Authorization: Bearer {token}");
    // https: the token goes on the CONNECT only (the tunnel is the agent's TLS); http: on the request.
    let on = if url.starts_with("https:") { "--proxy-header" } else { "-H" };
    run(Command::new("curl")
        .args(["-sS", "--max-time", "20", "-x", &proxy(), on, &auth])
        .arg("--cacert")
        .arg(&w.ca.pem_file)
        .args(["-w", "\n%{http_code} %{http_connect}"])
        .args(extra)
        .arg(url))
}

/// The destination that is not inspected: its CONNECT is decided at destination level.
fn api_url(path: &str) -> String {
    format!("https://tunnel.partner.example:{}{path}", world().api.port)
}

fn connect_token() -> String {
    let w = world();
    token_for(&[&format!("https://tunnel.partner.example:{}", w.api.port)], &["http.connect"])
}

#[test]
fn every_shipped_forward_proxy_config_validates_as_shipped() {
    // Only the Wasm path and the files the configs name are substituted: the DNS cache, the system
    // CA bundle, RBAC and the local replies stay as shipped.
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("envoy")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        if !text.contains("envoy.clusters.dynamic_forward_proxy") {
            continue; // bench.yaml and the mTLS example keep their static clusters (e2e_tokens validates them)
        }
        // (the inspected hosts' certificates are what `captive-portal gateway-ca` writes).
        let yaml = text
            .replace(
                "filename: target/wasm32-wasip1/release/missiongate_filter.wasm",
                &format!("filename: {}", envoy::wasm_path().display()),
            )
            .replace("filename: envoy/gateway-ca/", &format!("filename: {}/", gateway_ca().0.display()))
            .replace("filename: envoy/", &format!("filename: {}/envoy/", repo_root().display()));
        assert!(yaml.contains("save_upstream_address: true") && yaml.contains("upstream_ip_port"), "{p:?}");
        assert!(yaml.contains("flags: [\"UF\"]") && yaml.contains("status_code: 502"), "{p:?}");
        let (ok, out) = envoy::validate(&yaml);
        assert!(ok, "{} does not validate as shipped:\n{out}", p.display());
        checked.push(p.file_name().unwrap().to_string_lossy().into_owned());
    }
    checked.sort();
    assert_eq!(checked, ["missiongate-static-keys.yaml", "missiongate.yaml"]);
    let main = std::fs::read_to_string(repo_root().join("envoy/missiongate.yaml")).unwrap();
    assert!(main.contains("auto_san_validation: true"));
}

#[test]
fn the_static_keys_example_is_a_forward_proxy_too() {
    let w = world();
    // Its keys come from a file Envoy serves to the filter: the stand-in authority's key.
    let file = repo_root().join("target/e2e").join(format!("{}.jwks.json", rand_id("keys-")));
    std::fs::write(&file, json!({ "keys": [w.auth.signer().jwk] }).to_string()).unwrap();
    let (port, admin, keys_port) =
        (missiongate_tests::free_port(), missiongate_tests::free_port(), missiongate_tests::free_port());
    let jwks = format!("filename: {}/envoy/static-keys.jwks.json", repo_root().display());
    let opts = Opts {
        egress: Some(w.egress.clone()),
        replace: vec![
            (jwks, format!("filename: {}", file.display())),
            ("port_value: 18444".into(), format!("port_value: {keys_port}")),
        ],
        ..Opts::default()
    };
    let yaml = envoy::render("envoy/missiongate-static-keys.yaml", port, admin, 0, w.auth.port, &opts);
    let e = Envoy::start_yaml(&yaml, port, admin, 1);
    // Any destination by name: plain.partner.example, resolved by the test's DNS server.
    let origin = format!("http://plain.partner.example:{}", w.plain.port);
    let inside = format!("http://inside.partner.example:{}", w.plain.port);
    let token = token_for(&[&origin, &inside], &["http.get"]);
    let path = format!("/v1/{}", rand_id("static-keys-"));
    let via = |url: &str| {
        run(Command::new("curl")
            .args(["-sS", "--max-time", "20", "-x", &format!("http://127.0.0.1:{}", e.port)])
            .args(["-H", &format!("Authorization: Bearer {token}"), "-w", "\n%{http_code}"])
            .arg(url))
    };
    let out = via(&format!("{origin}{path}"));
    assert!(out.stdout.ends_with("\n200"), "{} {}", out.stdout, out.stderr);
    assert_eq!(w.plain.seen(&path), 1);
    // A name that resolves to the inside: refused on the resolved address.
    let out = via(&format!("{inside}{path}"));
    assert!(out.stdout.ends_with("\n403") && out.stdout.contains("RBAC"), "{} {}", out.stdout, out.stderr);
    assert_eq!(w.plain.seen(&path), 1);
}

#[test]
fn curl_with_https_proxy_reaches_an_allowed_tls_destination_by_name() {
    let w = world();
    let before = w.api.hits();
    let token = connect_token();
    // HTTPS_PROXY in the environment instead of -x: what agents do.
    let auth = format!("Authorization: Bearer {token}");
    let out = run(Command::new("curl")
        .env("HTTPS_PROXY", proxy())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args(["-sS", "--max-time", "20", "--proxy-header", &auth])
        .arg("--cacert")
        .arg(&w.ca.pem_file)
        .args(["-w", "\n%{http_code} %{http_connect}"])
        .arg(api_url("/v1/invoices?status=open")));
    assert_eq!(out.code, 0, "curl failed: {}\n{}", out.stderr, out.stdout);
    assert!(out.stdout.ends_with("\n200 200"), "{}", out.stdout);
    let body: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(body["upstream"], "tls-echo");
    assert_eq!(body["uri"], "/v1/invoices?status=open");
    assert!(w.api.hits() > before);
    // The DNS cache asked the test's resolver for the name.
    assert!(w.dns.queries() > 0);
    // And with -x: same result.
    let out = curl(&api_url("/v1/x"), &token, &[]);
    assert!(out.stdout.ends_with("\n200 200"), "{} {}", out.stdout, out.stderr);
}

#[test]
fn python_requests_through_the_gateway_reaches_an_allowed_tls_destination() {
    let w = world();
    let py = python_with_requests();
    let before = w.api.hits();
    let token = connect_token();
    // requests sends no custom header on CONNECT by itself; the adapter's proxy_headers hook is the
    // documented way to add one (the filter reads the token from Authorization on the CONNECT).
    let script = r#"
import os, sys, requests
from requests.adapters import HTTPAdapter
class A(HTTPAdapter):
    def proxy_headers(self, proxy):
        h = super().proxy_headers(proxy)
        h["Authorization"] = "Bearer " + os.environ["MG_TOKEN"]
        return h
s = requests.Session()
s.mount("https://", A())
r = s.get(sys.argv[1], timeout=20)
print(r.status_code)
print(r.text)
"#;
    let out = run(Command::new(py)
        .env("HTTPS_PROXY", proxy())
        .env("REQUESTS_CA_BUNDLE", &w.ca.pem_file)
        .env("MG_TOKEN", &token)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args(["-c", script, &api_url("/v1/invoices")]));
    assert_eq!(out.code, 0, "python failed: {}\n{}", out.stderr, out.stdout);
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("200"), "{}", out.stdout);
    let body: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(body["upstream"], "tls-echo");
    assert_eq!(body["uri"], "/v1/invoices");
    assert!(w.api.hits() > before);

    // Without the token on the CONNECT, requests gets the filter's 401 as a proxy error.
    let out = run(Command::new(python_with_requests())
        .env("HTTPS_PROXY", proxy())
        .env("REQUESTS_CA_BUNDLE", &w.ca.pem_file)
        .env_remove("NO_PROXY")
        .args(["-c", "import sys, requests\ntry:\n requests.get(sys.argv[1], timeout=20)\nexcept requests.exceptions.ProxyError as e:\n print('proxy error', e); sys.exit(3)", &api_url("/v1/x")]));
    assert_eq!(out.code, 3, "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("401"), "{}", out.stdout);
}

#[test]
fn connect_outside_the_mission_is_decided_at_destination_level() {
    let w = world();
    // A Mission that grants GETs on the destination, not the tunnel: CONNECT has no path, so the
    // filter can only decide on the destination, and refuses.
    let token = token_for(&[&format!("https://tunnel.partner.example:{}", w.api.port)], &["http.get"]);
    let path = format!("/v1/{}", rand_id("refused-"));
    let out = curl(&api_url(&path), &token, &[]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stdout.ends_with(" 403"), "CONNECT answer: {} {}", out.stdout, out.stderr);
    assert!(!w.api.requests().iter().any(|r| r.1 == path), "a refused CONNECT must not reach the destination");
    let start = std::time::Instant::now();
    loop {
        let logs = w.envoy.logs();
        if logs.lines().any(|l| l.contains("\"CONNECT tunnel.partner.example:") && l.contains(" 403 ")) {
            break;
        }
        assert!(start.elapsed().as_secs() < 15, "no record of the refused CONNECT:\n{logs}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[test]
fn unknown_host_is_a_dns_failure_not_a_pass() {
    let token = token_for(&["https://nowhere.partner.example"], &["http.connect", "http.get"]);
    let out = curl("https://nowhere.partner.example/v1/x", &token, &[]);
    assert_ne!(out.code, 0);
    assert!(out.stdout.ends_with(" 503"), "CONNECT answer: {} {}", out.stdout, out.stderr);
    // Plain http:// to an unknown name: the same DNS failure as a response.
    let token = token_for(&["http://nowhere.partner.example"], &["http.get"]);
    let out = curl("http://nowhere.partner.example/v1/x", &token, &[]);
    assert!(out.stdout.ends_with("\n503 000"), "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("DNS resolution failure"), "{}", out.stdout);
}

#[test]
fn plain_http_absolute_form_goes_through_the_filter_and_the_forward_proxy() {
    let w = world();
    let origin = format!("http://plain.partner.example:{}", w.plain.port);
    let token = token_for(&[&origin], &["http.get"]);
    let out = curl(&format!("{origin}/v1/invoices?x=1"), &token, &[]);
    assert!(out.stdout.ends_with("\n200 000"), "{} {}", out.stdout, out.stderr);
    assert!(w.plain.seen("/v1/invoices?x=1") >= 1);
    // A consequential call outside the Mission: refused by the filter before any DNS or upstream.
    let out = curl(&format!("{origin}/v1/payments"), &token, &["-X", "POST", "-d", "{}"]);
    assert!(out.stdout.ends_with("\n403 000"), "{} {}", out.stdout, out.stderr);
    assert_eq!(w.plain.seen("/v1/payments"), 0);
}

#[test]
fn an_upstream_certificate_that_does_not_verify_is_never_a_silent_pass() {
    let w = world();
    let url = format!("https://rogue.partner.example:{}/v1/x", w.rogue.port);
    let token = token_for(&[&format!("https://rogue.partner.example:{}", w.rogue.port)], &["http.connect"]);
    let out = curl(&url, &token, &[]);
    // The tunnel opens (destination-level decision); the client, verifying end to end, refuses.
    assert_eq!(out.code, 60, "curl must fail certificate verification: {} {}", out.stdout, out.stderr);
    assert_eq!(w.rogue.hits(), 0, "no request may reach an unverified upstream");
}

#[test]
fn loopback_private_and_metadata_addresses_are_refused_on_the_resolved_address() {
    let w = world();
    let denied_before = w.envoy.counter("http.egress.rbac.denied");
    // The Mission allows each of these; the gateway still refuses them: they resolve to the inside.
    let cases = [
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        format!("http://127.0.0.1:{}/v1/x", w.plain.port),
        format!("http://inside.partner.example:{}/v1/x", w.plain.port),
        "http://10.1.2.3/v1/x".to_owned(),
    ];
    for url in &cases {
        let origin = missiongate_tests::http::path_of(url);
        let origin = url.strip_suffix(origin.as_str()).unwrap().to_owned();
        let token = token_for(&[&origin], &["http.get"]);
        let out = curl(url, &token, &[]);
        assert!(out.stdout.ends_with("\n403 000"), "{url}: {} {}", out.stdout, out.stderr);
        assert!(out.stdout.contains("RBAC: access denied"), "{url}: {}", out.stdout);
    }
    assert_eq!(w.plain.seen("/v1/x"), 0, "an inside address was reached");
    // CONNECT to the metadata address and to a name that resolves to loopback: refused the same way.
    for (target, origin) in [
        ("https://169.254.169.254/", "https://169.254.169.254".to_owned()),
        (
            &*format!("https://inside.partner.example:{}/", w.api.port),
            format!("https://inside.partner.example:{}", w.api.port),
        ),
    ] {
        let token = token_for(&[&origin], &["http.connect"]);
        let out = curl(target, &token, &[]);
        assert!(out.stdout.ends_with(" 403"), "{target}: {} {}", out.stdout, out.stderr);
    }
    let denied = w.envoy.wait_counter("http.egress.rbac.denied", denied_before + 6);
    assert!(denied >= denied_before + 6, "rbac denied counter {denied}");
}

#[test]
fn the_gateway_ca_command_issues_certificates_agents_verify() {
    let w = world();
    let bin = repo_root().join("target/debug/captive-portal");
    assert!(bin.exists(), "{} is missing: run `cargo build -p captive-portal`", bin.display());
    let dir = repo_root().join("target/e2e").join(rand_id("gateway-ca-"));
    let ca = |args: &[&str]| run(Command::new(&bin).arg("gateway-ca").args(args).arg("--dir").arg(&dir));
    let out = ca(&["init"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // An existing CA is never replaced.
    let again = ca(&["init"]);
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already holds a gateway CA"), "{}", again.stderr);
    assert_ne!(ca(&["issue", "--host", "../evil"]).code, 0);
    let out = ca(&["issue", "--host", "issued.partner.example"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key.pem", "issued.partner.example.key.pem"] {
        let mode = std::fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{key}");
    }
    // A server with the issued certificate; curl trusts the CA file alone and checks the name.
    let up =
        TlsUpstream::start_pem(&dir.join("issued.partner.example.pem"), &dir.join("issued.partner.example.key.pem"));
    let url = format!("https://issued.partner.example:{}/v1/x", up.port);
    let resolve = format!("issued.partner.example:{}:127.0.0.1", up.port);
    let ok = run(Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve", &resolve, "--cacert"])
        .arg(dir.join("ca.pem"))
        .arg(&url));
    assert_eq!(ok.code, 0, "{} {}", ok.stdout, ok.stderr);
    assert!(ok.stdout.contains("tls-echo"), "{}", ok.stdout);
    // Another CA (the test CA of this suite) does not verify it.
    let bad = run(Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve", &resolve, "--cacert"])
        .arg(&w.ca.pem_file)
        .arg(&url));
    assert_eq!(bad.code, 60, "{} {}", bad.stdout, bad.stderr);
}

/// curl to the inspected destination: it trusts the gateway CA, and sends the token on the request
/// inside the tunnel (the CONNECT itself carries none).
fn curl_inspected(path: &str, token: Option<&str>, extra: &[&str]) -> Out {
    let w = world();
    curl_inspected_via(w.envoy.port, w.api.port, path, token, extra)
}

/// curl to `https://api.partner.example:<port><path>` through the gateway on `gateway`.
fn curl_inspected_via(gateway: u16, port: u16, path: &str, token: Option<&str>, extra: &[&str]) -> Out {
    let url = format!("https://api.partner.example:{port}{path}");
    let mut cmd = Command::new("curl");
    cmd.env("HTTPS_PROXY", format!("http://127.0.0.1:{gateway}")).env_remove("NO_PROXY").env_remove("no_proxy");
    cmd.args(["-sS", "--max-time", "20", "--cacert"]).arg(&gateway_ca().1);
    if let Some(t) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
    }
    run(cmd.args(["-w", "\n%{http_code} %{http_connect}"]).args(extra).arg(url))
}

#[test]
fn an_inspected_destination_is_decided_per_request_inside_the_tunnel() {
    let w = world();
    let (mission, token) = w.auth.active_token();
    let before = w.api.hits();
    // An allowed GET: TLS terminated with the gateway CA's certificate, decided, re-originated.
    let out = curl_inspected("/v1/invoices?status=open", Some(&token), &[]);
    assert_eq!(out.code, 0, "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.ends_with("\n200 200"), "{}", out.stdout);
    let body: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(body["upstream"], "tls-echo");
    assert_eq!(body["uri"], "/v1/invoices?status=open");
    assert!(w.api.hits() > before);
    // The inner request has its own evidence record, with the Mission (the access log is flushed
    // on its own schedule: wait for it, bounded).
    let start = std::time::Instant::now();
    loop {
        let logs = w.envoy.logs();
        if logs.lines().any(|l| l.contains("inspected \"GET api.partner.example:") && l.contains(&mission)) {
            break;
        }
        assert!(start.elapsed().as_secs() < 15, "no evidence of the inner request:\n{logs}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // No token inside the tunnel: the filter's 401 comes back through it, nothing reaches the upstream.
    let unseen = format!("/v1/{}", rand_id("no-token-"));
    let out = curl_inspected(&unseen, None, &[]);
    assert!(out.stdout.ends_with("\n401 200"), "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("no_credentials"), "{}", out.stdout);
    // A path outside the Mission: refused per request, inside the tunnel.
    let out = curl_inspected("/admin/users", Some(&token), &[]);
    assert!(out.stdout.ends_with("\n403 200"), "{} {}", out.stdout, out.stderr);
    // Operation level inside the tunnel: the named operation the Mission grants (payments.create)
    // passes; a consequential call it does not grant is refused, never forwarded.
    let json_body = ["-H", "content-type: application/json", "-d", "{\"amount\":1}"];
    let out = curl_inspected("/v1/payments", Some(&token), &[&["-X", "POST"][..], &json_body[..]].concat());
    assert!(out.stdout.ends_with("\n200 200"), "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("\"method\":\"POST\""), "{}", out.stdout);
    let out = curl_inspected("/v1/refunds", Some(&token), &[&["-X", "POST"][..], &json_body[..]].concat());
    assert!(out.stdout.ends_with("\n403 200"), "{} {}", out.stdout, out.stderr);
    let seen: Vec<String> = w.api.requests().into_iter().map(|r| r.1).collect();
    for p in [unseen.as_str(), "/admin/users", "/v1/refunds"] {
        assert!(!seen.iter().any(|s| s == p), "a refused request inside the tunnel reached the upstream: {p}");
    }
    // A tunnel opened for one destination does not carry requests for another: an inner Host that is
    // not the destination the SNI named is 421, even when the Mission allows that other host.
    let other = "www.other-destination.example";
    let other_token = token_for(&[&format!("https://{other}")], &["http.get"]);
    let stray = format!("/v1/{}", rand_id("stray-"));
    let out = curl_inspected(&stray, Some(&other_token), &["-H", &format!("Host: {other}")]);
    assert!(out.stdout.ends_with("\n421 200"), "{} {}", out.stdout, out.stderr);
    assert!(!w.api.requests().iter().any(|r| r.1 == stray), "a misdirected request reached the upstream");
    // An agent that does not trust the gateway CA cannot be intercepted silently: it refuses.
    let out = run(Command::new("curl")
        .env("HTTPS_PROXY", proxy())
        .env_remove("NO_PROXY")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&w.ca.pem_file)
        .arg(format!("https://api.partner.example:{}/v1/invoices", w.api.port)));
    assert_eq!(out.code, 60, "{} {}", out.stdout, out.stderr);
}

/// The same forward proxy with the real portal as authority and PDP (Access Requests, approvals,
/// single-use permits), in front of the same DNS server and TLS upstreams.
struct PortalWorld {
    portal: Portal,
    envoy: Envoy,
}

fn portal_world() -> &'static PortalWorld {
    static W: OnceLock<PortalWorld> = OnceLock::new();
    W.get_or_init(|| {
        let w = world();
        let portal = Portal::start(&["--status-fresh-seconds", "30"]);
        let opts = Opts {
            concurrency: 2,
            events: true,
            pdp: true,
            egress: Some(w.egress.clone()),
            replace: w.replace.clone(),
        };
        let envoy = Envoy::start(0, portal.port, opts);
        PortalWorld { portal, envoy }
    })
}

/// SPEC §6 vector V2: `POST https://api.partner.example/v1/payments` with this body.
const BODY_A: &str = r#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#;
const V2_DIGEST: &str = "sha-256:yLAZIL9150YK2-jnJ3yaKg4ewwCwZbTeuW5yu5qSRZk";

/// What a client saw: status, media type, body.
struct Seen {
    status: u16,
    content_type: String,
    body: String,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// curl through the portal's gateway to the inspected destination (`HTTPS_PROXY`, the gateway CA,
/// the token inside the tunnel). The CONNECT itself must be answered 200 (the tunnel is terminated).
fn curl_portal(method: &str, path: &str, token: &str, body: Option<&str>) -> Seen {
    let w = world();
    let auth = format!("Authorization: Bearer {token}");
    let mut cmd = Command::new("curl");
    cmd.env("HTTPS_PROXY", format!("http://127.0.0.1:{}", portal_world().envoy.port))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&gateway_ca().1)
        .args(["-X", method, "-H", &auth, "-w", "\n%{http_connect} %{http_code} %{content_type}"]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = run(cmd.arg(format!("https://api.partner.example:{}{path}", w.api.port)));
    assert_eq!(out.code, 0, "curl {method} {path}: {} {}", out.stdout, out.stderr);
    let (body, tail) = out.stdout.rsplit_once('\n').unwrap();
    let mut parts = tail.splitn(3, ' ');
    assert_eq!(parts.next(), Some("200"), "the CONNECT to an inspected destination: {}", out.stdout);
    let status = parts.next().unwrap().parse().unwrap();
    Seen { status, content_type: parts.next().unwrap_or("").to_owned(), body: body.to_owned() }
}

/// Python `requests` through the portal's gateway to the inspected destination: `HTTPS_PROXY`,
/// `REQUESTS_CA_BUNDLE` (the gateway CA), the token on the request, nothing else.
fn python_portal(method: &str, path: &str, token: &str, body: Option<&str>) -> Seen {
    let w = world();
    let script = r#"
import os, sys, requests
h = {"Authorization": "Bearer " + os.environ["MG_TOKEN"]}
body = os.environ.get("MG_BODY")
if body is not None:
    h["Content-Type"] = "application/json"
r = requests.request(sys.argv[1], sys.argv[2], headers=h, data=body, timeout=20)
print(r.status_code)
print(r.headers.get("content-type", ""))
print(r.text, end="")
"#;
    let mut cmd = Command::new(python_with_requests());
    cmd.env("HTTPS_PROXY", format!("http://127.0.0.1:{}", portal_world().envoy.port))
        .env("REQUESTS_CA_BUNDLE", &gateway_ca().1)
        .env("MG_TOKEN", token)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("MG_BODY");
    if let Some(b) = body {
        cmd.env("MG_BODY", b);
    }
    let out = run(cmd.args(["-c", script, method, &format!("https://api.partner.example:{}{path}", w.api.port)]));
    assert_eq!(out.code, 0, "python {method} {path}: {} {}", out.stdout, out.stderr);
    let mut lines = out.stdout.splitn(3, '\n');
    let status = lines.next().unwrap().trim().parse().unwrap();
    let content_type = lines.next().unwrap_or("").trim().to_owned();
    Seen { status, content_type, body: lines.next().unwrap_or("").to_owned() }
}

/// The RFC 8908 captive document of a 511, as the agent got it through the tunnel.
fn assert_captive(s: &Seen) -> Value {
    assert_eq!(s.status, 511, "{}", s.body);
    assert_eq!(s.content_type, "application/captive+json", "{}", s.body);
    let doc = s.json();
    assert_eq!(doc["captive"], true, "{doc}");
    assert_eq!(doc["access-request"]["resource"]["id"], "https://api.partner.example", "{doc}");
    let hint = &doc["access-request"]["context"]["access_request"];
    for k in ["endpoint", "expires_at", "binding_token"] {
        assert!(hint[k].as_str().is_some_and(|s| !s.is_empty()), "missing {k}: {doc}");
    }
    doc
}

/// Requests with exactly this body that reached the inspected destination.
fn upstream_saw(body: &str) -> usize {
    world().api.requests().iter().filter(|r| r.0 == "POST" && r.2 == body.as_bytes()).count()
}

#[test]
fn inside_an_inspected_tunnel_a_blocked_call_gets_511_and_a_bound_post_is_approved_once() {
    let w = world();
    let pw = portal_world();
    let (_, token) = pw.portal.active(&["http.get", "payments.create"]);
    // An allowed GET, decided inside the tunnel by the real portal's Mission.
    let s = curl_portal("GET", "/v1/invoices?status=open", &token, None);
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.json()["upstream"], "tls-echo");

    // A blocked call: the 511 captive document comes back through the tunnel, to curl and to requests.
    let blocked = format!("/v2/{}", rand_id("reports-"));
    for s in [curl_portal("GET", &blocked, &token, None), python_portal("GET", &blocked, &token, None)] {
        let doc = assert_captive(&s);
        assert_eq!(doc["access-request"]["action"]["name"], "http.get");
    }
    assert!(!w.api.requests().iter().any(|r| r.1 == blocked), "a blocked call reached the destination");

    // A bound POST (Python requests): 511, bound to the digest of SPEC §6 vector V2, exactly as
    // over plain HTTP (the destination's origin is https://api.partner.example).
    let s = python_portal("POST", "/v1/payments", &token, Some(BODY_A));
    let doc = assert_captive(&s);
    assert_eq!(doc["access-request"]["action"]["name"], "payments.create");
    assert_eq!(doc["access-request"]["action"]["properties"]["parameter_digest"], V2_DIGEST, "{doc}");
    let denied_at = std::time::Instant::now();
    assert_eq!(upstream_saw(BODY_A), 0);
    // The agent asks for exactly this call; a person approves it.
    let params = json!({ "method": "POST", "target": "https://api.partner.example/v1/payments",
                         "content_type": "application/json",
                         "body": serde_json::from_str::<Value>(BODY_A).unwrap() });
    let r = pw.portal.request_access(&doc, &rand_id("idem-"), Some(params), "pay INV-77");
    assert!((200..=202).contains(&r.status), "{}", r.text());
    let task = r.json()["task"]["id"].as_str().unwrap().to_owned();
    let r = pw.portal.approve_request(&task, 60);
    assert!((200..=201).contains(&r.status), "{}", r.text());
    // The filter remembers the denial for 1 s.
    if let Some(left) = std::time::Duration::from_millis(1100).checked_sub(denied_at.elapsed()) {
        std::thread::sleep(left);
    }
    // The approved call (curl; members reordered, the same canonical form) goes through once.
    let reordered = "{ \"to\" : \"acct_123\", \"currency\":\"USD\",\n \"amount\":\"423.50\" }";
    let s = curl_portal("POST", "/v1/payments", &token, Some(reordered));
    assert_eq!(s.status, 200, "{}", s.body);
    assert_eq!(s.json()["method"], "POST");
    assert_eq!(upstream_saw(reordered), 1);
    // A second time (Python requests, the original bytes): refused, single use.
    let s = python_portal("POST", "/v1/payments", &token, Some(BODY_A));
    assert_eq!(s.status, 403, "{}", s.body);
    assert_eq!(s.json()["reason"], "parameter_violation", "{}", s.body);
    // A changed amount is not covered: it needs its own approval.
    let changed = r#"{"amount":"4235.00","currency":"USD","to":"acct_123"}"#;
    let s = curl_portal("POST", "/v1/payments", &token, Some(changed));
    assert!(
        s.status == 511 || (s.status == 403 && s.json()["reason"] == "parameter_violation"),
        "{} {}",
        s.status,
        s.body
    );
    assert_eq!(upstream_saw(BODY_A) + upstream_saw(changed), 0, "a refused call reached the destination");
    assert_eq!(upstream_saw(reordered), 1);
}

#[test]
fn a_certificate_that_does_not_verify_on_the_originated_leg_is_502() {
    let w = world();
    // api.partner.example on the rogue upstream's port: inspected (the CONNECT is terminated with
    // the gateway CA's certificate), but the destination's certificate is from an untrusted CA and
    // for another name.
    let origin = format!("https://api.partner.example:{}", w.rogue.port);
    let token = token_for(&[&origin, &format!("http://api.partner.example:{}", w.rogue.port)], &["http.get"]);
    const VERIFY: &str = "cluster.egress_tls.ssl.fail_verify_error";
    let before = w.envoy.counter(VERIFY);
    let out = curl_inspected_via(w.envoy.port, w.rogue.port, "/v1/x", Some(&token), &[]);
    assert!(out.stdout.ends_with("\n502 200"), "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("upstream connect error"), "{}", out.stdout);
    // It is the certificate that failed (Envoy's TLS stats of the originating cluster).
    let failed = w.envoy.wait_counter(VERIFY, before + 1);
    assert!(failed > before, "{VERIFY} {failed}:\n{}", w.envoy.stats());
    // Plain http:// to the inspected destination is originated as TLS: the same refusal.
    let out = curl(&format!("http://api.partner.example:{}/v1/x", w.rogue.port), &token, &[]);
    assert!(out.stdout.ends_with("\n502 000"), "{} {}", out.stdout, out.stderr);
    assert!(w.envoy.wait_counter(VERIFY, failed + 1) > failed);
    assert_eq!(w.rogue.hits(), 0, "no request may reach an unverified upstream");
}

#[test]
fn plain_http_to_an_inspected_destination_is_originated_as_tls() {
    let w = world();
    let (_, token) = w.auth.active_token();
    let path = format!("/v1/{}", rand_id("originated-"));
    // The agent says http://; the operator marked the destination https: Envoy speaks TLS to it,
    // verifying its certificate, after the filter decided the request (origin https://...).
    let out = curl(&format!("http://api.partner.example:{}{path}", w.api.port), &token, &[]);
    assert!(out.stdout.ends_with("\n200 000"), "{} {}", out.stdout, out.stderr);
    let body: Value = serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(body["upstream"], "tls-echo", "the TLS upstream answered");
    assert_eq!(body["uri"], path.as_str());
    // Operation level on the same path: a consequential call the Mission does not grant is refused.
    let out = curl(
        &format!("http://api.partner.example:{}/v1/refunds", w.api.port),
        &token,
        &["-X", "POST", "-H", "content-type: application/json", "-d", "{}"],
    );
    assert!(out.stdout.ends_with("\n403 000"), "{} {}", out.stdout, out.stderr);
}

#[test]
fn inside_an_inspected_tunnel_the_resolved_address_is_checked_too() {
    let w = world();
    // api.partner.example on port 443: inspected (the CONNECT is terminated, no check there), but
    // only `api.partner.example:<port>` is allowed inside, and the name resolves to loopback. The
    // inner request is allowed by the filter and refused by RBAC on the resolved address.
    let token = token_for(&["https://api.partner.example"], &["http.get"]);
    let before = w.envoy.counter("http.inspect.rbac.denied");
    let out = run(Command::new("curl")
        .env("HTTPS_PROXY", proxy())
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&gateway_ca().1)
        .args(["-H", &format!("Authorization: Bearer {token}"), "-w", "\n%{http_code} %{http_connect}"])
        .arg("https://api.partner.example/v1/inside"));
    assert!(out.stdout.ends_with("\n403 200"), "{} {}", out.stdout, out.stderr);
    assert!(out.stdout.contains("RBAC: access denied"), "{}", out.stdout);
    assert!(w.envoy.wait_counter("http.inspect.rbac.denied", before + 1) > before);
    assert!(!w.api.requests().iter().any(|r| r.1 == "/v1/inside"));
}
