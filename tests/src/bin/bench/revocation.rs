//! Revocation latency under load, against the real captive-portal.

use crate::envoy::{render_bench, Backends, EnvoyProc};
use crate::load::{percentile, script};
use crate::scenarios::{Role, Scenario, Tok, GET_PATH, HOST};
use crate::settings::{pinned, Settings};
use missiongate_tests::http::Req;
use missiongate_tests::portal::Portal;
use missiongate_tests::postgres::PgServer;
use missiongate_tests::{free_port, repo_root};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Default, serde::Serialize)]
pub struct Revocation {
    pub measured: bool,
    pub why_not: Option<String>,
    pub samples: usize,
    pub timeouts: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// How long the lifecycle call itself took (median).
    pub call_p50_ms: f64,
    pub refusals: BTreeMap<String, usize>,
    pub load_rps: f64,
}

/// Can this portal binary revoke? (`mission revoke --help` succeeds.)
pub fn portal_can_revoke() -> Result<PathBuf, String> {
    let bin = repo_root().join("target/debug/captive-portal");
    if !bin.exists() {
        return Err(format!("{} is not built (cargo build -p captive-portal)", bin.display()));
    }
    match Command::new(&bin).args(["mission", "revoke", "--help"]).stdout(Stdio::null()).stderr(Stdio::null()).status()
    {
        Ok(st) if st.success() => Ok(bin),
        Ok(st) => Err(format!("`captive-portal mission revoke --help` exits {st}: no revoke command")),
        Err(e) => Err(format!("cannot run {}: {e}", bin.display())),
    }
}

/// Revocation latency under load: a wrk load on the portal-backed listener (one Mission's token, hot
/// path) while, one at a time, another active Mission is revoked through the portal's lifecycle API
/// and probed until the first refusal.
pub fn revocations(s: &Settings, envoy: &EnvoyProc, portal: &Portal) -> Revocation {
    let port = envoy.port("mg_portal");
    let get = |token: &str| Req::new("GET", GET_PATH).header("Host", HOST).bearer(token).try_send(port);
    let (_, load_token) = portal.active(&["http.get"]);
    // The first request waits for the JWKS and Mission Status: allow a loaded host some seconds.
    let t = Instant::now();
    loop {
        match get(&load_token) {
            Ok(r) if r.status == 200 => break,
            Ok(r) if t.elapsed() > Duration::from_secs(10) => {
                let why =
                    format!("the portal-backed listener refused an active Mission's token: {} {}", r.status, r.text());
                return Revocation { why_not: Some(why), ..Revocation::default() };
            }
            Err(e) if t.elapsed() > Duration::from_secs(10) => {
                let why = format!("the portal-backed listener did not answer: {e}");
                return Revocation { why_not: Some(why), ..Revocation::default() };
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    eprintln!("bench: revocation: preparing {} active Missions", s.revocations);
    let missions: Vec<(String, String)> = (0..s.revocations).map(|_| portal.active(&["http.get"])).collect();
    let sc = Scenario {
        id: "revocation_load",
        title: "",
        listener: "mg_portal",
        body: None,
        tok: Tok::Hot,
        role: Role::Diagnostic,
        baseline: None,
        also: &[],
    };
    let script = script(s, &sc, &load_token, Path::new("/dev/null"), &BTreeMap::new(), None);
    let secs = 60 + 3 * s.revocations as u32;
    let mut load = pinned(s.load_cpu.as_deref(), "wrk")
        .args(["-t1", &format!("-c{}", s.connections), &format!("-d{secs}s"), "--timeout", "10s", "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run wrk: {e}"));
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let mut lat = Vec::new();
    let mut calls = Vec::new();
    let mut rev = Revocation::default();
    for (id, token) in &missions {
        // Allowed first (this also puts its state in the cache).
        let t = Instant::now();
        loop {
            match get(token) {
                Ok(r) if r.status == 200 => break,
                _ if t.elapsed() > Duration::from_secs(5) => break,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        let t0 = Instant::now();
        let r = portal.lifecycle(id, "revoke");
        calls.push(t0.elapsed().as_secs_f64() * 1e3);
        if r.status != 200 {
            rev.why_not = Some(format!("the lifecycle call answered {}: {}", r.status, r.text()));
            break;
        }
        loop {
            let elapsed = t0.elapsed();
            if let Ok(r) = get(token) {
                if r.status != 200 {
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                    let reason = serde_json::from_slice::<Value>(&r.body)
                        .ok()
                        .and_then(|v| v["reason"].as_str().map(str::to_owned));
                    *rev.refusals.entry(format!("{} {}", r.status, reason.unwrap_or_default())).or_default() += 1;
                    break;
                }
            }
            if elapsed > Duration::from_secs(5) {
                rev.timeouts += 1;
                lat.push(elapsed.as_secs_f64() * 1e3);
                break;
            }
        }
        if rev.timeouts >= 5 {
            eprintln!("bench: revocation: 5 revocations not enforced within 5 s; stopping");
            break;
        }
    }
    let load_secs = started.elapsed().as_secs_f64();
    let _ = load.kill();
    let _ = load.wait();
    // wrk killed early prints nothing: estimate the load from Envoy's counter instead.
    let rq = Req::new("GET", "/stats?filter=http.mg_portal.downstream_rq_total")
        .header("Host", "admin")
        .send(envoy.admin)
        .text();
    let total: f64 =
        rq.lines().filter_map(|l| l.split_once(": ")).filter_map(|(_, v)| v.trim().parse::<f64>().ok()).sum();
    rev.load_rps = total / (load_secs + 0.5);
    if rev.why_not.is_none() && !lat.is_empty() {
        lat.sort_by(|a, b| a.total_cmp(b));
        calls.sort_by(|a, b| a.total_cmp(b));
        rev.measured = true;
        rev.samples = lat.len();
        rev.p50_ms = percentile(&lat, 50.0);
        rev.p99_ms = percentile(&lat, 99.0);
        rev.max_ms = *lat.last().unwrap();
        rev.call_p50_ms = percentile(&calls, 50.0);
    } else if rev.why_not.is_none() {
        rev.why_not = Some("no revocation was attempted (BENCH_REVOCATIONS=0)".into());
    }
    rev
}

/// The same measurement across two portal replicas on one Postgres: each Mission is revoked through
/// replica A while the Envoy follows replica B (its JWKS, Mission Status and state-event feed), so the
/// figure includes the change crossing the database (LISTEN/NOTIFY) to B's long polls.
pub fn revocations_across_replicas(s: &Settings, backends: &Backends<'_>) -> Revocation {
    let not = |why: String| Revocation { why_not: Some(why), ..Revocation::default() };
    if s.revocations == 0 {
        return not("BENCH_REVOCATIONS=0".into());
    }
    if let Err(e) = portal_can_revoke() {
        return not(e);
    }
    let pg = match PgServer::start() {
        Ok(pg) => pg,
        Err(e) => return not(format!("no Postgres server (make postgres installs it): {e}")),
    };
    let url = match pg.database("bench") {
        Ok(u) => u,
        Err(e) => return not(format!("Postgres: {e}")),
    };
    // Two calls of free_port() can answer the same port; the replicas need two.
    let port_a = free_port();
    let port_b = std::iter::repeat_with(free_port).find(|&p| p != port_a).unwrap_or(0);
    // Every replica of a deployment shares one issuer; the Envoy's config names B's address.
    let issuer = format!("http://127.0.0.1:{port_b}");
    let args = ["--status-fresh-seconds", "30"];
    let a = Portal::start_replica(port_a, &url, &issuer, &args);
    let b = Portal::start_replica(port_b, &url, &issuer, &args);
    let cfg = render_bench(&Backends { portal: Some(b.port), ..*backends }, &|l: &str| l == "mg_portal");
    let envoy = EnvoyProc::start(s, &cfg, "replicas");
    let r = revocations(s, &envoy, &a);
    drop(envoy);
    drop((a, b, pg));
    r
}
