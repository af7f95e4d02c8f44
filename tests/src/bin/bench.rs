//! `make bench`: missiongate measured side by side with Envoy's own filters.
//!
//! One Envoy (`--concurrency 1`, pinned to one core) runs `envoy/bench.yaml`, whose listeners differ
//! only in their HTTP filters and answer with a `direct_response` 200. `wrk` (pinned to the other core,
//! keep-alive) loads one listener at a time: a warm-up each, then several rounds that go through every
//! scenario in turn, so slow drift hits every scenario alike. Each figure is the median of the rounds
//! and is compared with its native counterpart measured in the same run.
//!
//! Also: the `.wasm` size, Envoy's resident memory and its start-to-ready time with and without the
//! filter (a second Envoy with only the native listeners), and the revocation latency against the
//! real captive-portal when `target/debug/captive-portal` is there.
//!
//! Writes `latest.md`, `latest.json`, `latest.png` into `$BENCH_OUT` (default `bench/results`).
//! `bench --check DIR` verifies that a report in DIR is complete (used by `make bench-smoke`).
//!
//! Settings (environment): `BENCH_ROUNDS` (3), `BENCH_DURATION` (seconds per round, 5), `BENCH_WARMUP`
//! (seconds, 2; 0 skips it), `BENCH_CONNECTIONS` (8), `BENCH_COLD_TOKENS` (40000), `BENCH_STARTS`
//! (start-time samples per Envoy, 3), `BENCH_REVOCATIONS` (100), `BENCH_OUT`, `BENCH_ENVOY_CPU` (0),
//! `BENCH_LOAD_CPU` (1), `BENCH_WASM` (another build of the filter to measure in place of
//! `target/wasm32-wasip1/release/missiongate_filter.wasm`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use missiongate_tests::authority::Authority;
use missiongate_tests::envoy::{envoy_bin, render, wasm_path, Opts};
use missiongate_tests::http::Req;
use missiongate_tests::portal::Portal;
use missiongate_tests::{free_port, now, repo_root, rt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const HOST: &str = "api.partner.example";
const GET_PATH: &str = "/v1/invoices";
const POST_PATH: &str = "/v1/payments";
const MIB: f64 = 1024.0 * 1024.0;

// ------------------------------------------------------------------------------ settings ----------

struct Settings {
    rounds: u32,
    duration: u32,
    warmup: u32,
    connections: u32,
    cold_tokens: usize,
    starts: u32,
    revocations: usize,
    out: PathBuf,
    work: PathBuf,
    envoy_cpu: Option<String>,
    load_cpu: Option<String>,
    /// Before the bench pinned itself.
    cores: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a valid number"))
        }
        _ => default,
    }
}

impl Settings {
    fn from_env() -> Settings {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (envoy_cpu, load_cpu) = if cores >= 2 {
            (Some(env_or("BENCH_ENVOY_CPU", "0".to_owned())), Some(env_or("BENCH_LOAD_CPU", "1".to_owned())))
        } else {
            eprintln!("bench: only {cores} core(s): Envoy and the load are not pinned apart; the figures mean little");
            (None, None)
        };
        let out = std::env::var_os("BENCH_OUT").map_or_else(|| repo_root().join("bench/results"), PathBuf::from);
        let out = if out.is_absolute() { out } else { repo_root().join(out) };
        Settings {
            rounds: env_or("BENCH_ROUNDS", 3u32).max(1),
            duration: env_or("BENCH_DURATION", 5u32).max(1),
            warmup: env_or("BENCH_WARMUP", 2u32),
            connections: env_or("BENCH_CONNECTIONS", 8u32).max(1),
            cold_tokens: env_or("BENCH_COLD_TOKENS", 40_000usize).max(2),
            starts: env_or("BENCH_STARTS", 3u32).max(1),
            revocations: env_or("BENCH_REVOCATIONS", 100usize),
            work: repo_root()
                .join("target/bench")
                .join(out.file_name().map_or("results".into(), |n| n.to_string_lossy().into_owned())),
            out,
            envoy_cpu,
            load_cpu,
            cores,
        }
    }
}

/// `program` under `taskset -c cpu` when pinning.
fn pinned(cpu: Option<&str>, program: impl AsRef<std::ffi::OsStr>) -> Command {
    match cpu {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.arg("-c").arg(c).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

// ------------------------------------------------------------------------------ scenarios ---------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    /// One token, always the same.
    Hot,
    /// A new token on every request, from the pre-minted pool (rotating).
    Pool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// A native figure others are compared with.
    Native,
    /// missiongate, with a target or a headline ratio.
    Main,
    /// missiongate, to explain the others.
    Diagnostic,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Native => "native",
            Role::Main => "missiongate",
            Role::Diagnostic => "diagnostic",
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    id: &'static str,
    title: &'static str,
    listener: &'static str,
    body: Option<usize>,
    tok: Tok,
    role: Role,
    /// The native counterpart (ratios are figures of this scenario divided by that one's).
    baseline: Option<&'static str>,
    /// A second counterpart, reported alongside.
    alt_baseline: Option<&'static str>,
}

const KIB: usize = 1024;
/// The cold-path scenario: its tokens come from the pool in order, never twice.
const COLD: &str = "get_mg_cold";

fn scenarios() -> Vec<Scenario> {
    let s = |id, title, listener, body, tok, role, baseline, alt_baseline| Scenario {
        id,
        title,
        listener,
        body,
        tok,
        role,
        baseline,
        alt_baseline,
    };
    use Role::*;
    use Tok::*;
    vec![
        s("get_none", "GET, no filter", "none", None, Hot, Native, None, None),
        s("get_jwt_cache", "GET, jwt_authn + jwt_cache_config", "jwt_cache", None, Hot, Native, Some("get_none"), None),
        s(
            "get_jwt_nocache",
            "GET, jwt_authn, no cache, token pool",
            "jwt_nocache",
            None,
            Pool,
            Native,
            Some("get_none"),
            None,
        ),
        s(
            "get_mg_hot",
            "GET, missiongate hot path",
            "mg_hot",
            None,
            Hot,
            Main,
            Some("get_jwt_cache"),
            Some("get_none"),
        ),
        s(
            "get_mg_cold",
            "GET, missiongate cold path (new token each request)",
            "mg_cold",
            None,
            Pool,
            Main,
            Some("get_jwt_nocache"),
            Some("get_none"),
        ),
        s(
            "get_mg_nolog",
            "GET, missiongate hot path, evidence log off",
            "mg_nolog",
            None,
            Hot,
            Diagnostic,
            Some("get_jwt_cache"),
            Some("get_mg_hot"),
        ),
        s("post_1k_none", "POST 1 KiB, no filter", "none", Some(KIB), Hot, Native, None, None),
        s(
            "post_1k_buffer",
            "POST 1 KiB, Envoy buffer filter",
            "buffer",
            Some(KIB),
            Hot,
            Native,
            Some("post_1k_none"),
            None,
        ),
        s(
            "post_1k_mg",
            "POST 1 KiB, missiongate (buffered, digested)",
            "mg_post",
            Some(KIB),
            Hot,
            Main,
            Some("post_1k_buffer"),
            Some("post_1k_none"),
        ),
        s(
            "post_1k_mg_nopdp",
            "POST 1 KiB, missiongate, no PDP (not buffered)",
            "mg_post_nopdp",
            Some(KIB),
            Hot,
            Diagnostic,
            Some("post_1k_none"),
            None,
        ),
        s("post_64k_none", "POST 64 KiB, no filter", "none", Some(64 * KIB), Hot, Native, None, None),
        s(
            "post_64k_buffer",
            "POST 64 KiB, Envoy buffer filter",
            "buffer",
            Some(64 * KIB),
            Hot,
            Native,
            Some("post_64k_none"),
            None,
        ),
        s(
            "post_64k_mg",
            "POST 64 KiB, missiongate (buffered, digested)",
            "mg_post",
            Some(64 * KIB),
            Hot,
            Main,
            Some("post_64k_buffer"),
            Some("post_64k_none"),
        ),
        s(
            "post_64k_mg_nopdp",
            "POST 64 KiB, missiongate, no PDP (not buffered)",
            "mg_post_nopdp",
            Some(64 * KIB),
            Hot,
            Diagnostic,
            Some("post_64k_none"),
            None,
        ),
        s("post_1m_none", "POST 1 MiB, no filter", "none", Some(1024 * KIB), Hot, Native, None, None),
        s(
            "post_1m_buffer",
            "POST 1 MiB, Envoy buffer filter",
            "buffer",
            Some(1024 * KIB),
            Hot,
            Native,
            Some("post_1m_none"),
            None,
        ),
        s(
            "post_1m_mg",
            "POST 1 MiB, missiongate (buffered, digested)",
            "mg_post",
            Some(1024 * KIB),
            Hot,
            Main,
            Some("post_1m_buffer"),
            Some("post_1m_none"),
        ),
        s(
            "post_1m_mg_nopdp",
            "POST 1 MiB, missiongate, no PDP (not buffered)",
            "mg_post_nopdp",
            Some(1024 * KIB),
            Hot,
            Diagnostic,
            Some("post_1m_none"),
            None,
        ),
    ]
}

/// Listeners without the Wasm filter (the "without the filter" Envoy keeps only these).
fn is_native(listener: &str) -> bool {
    !listener.starts_with("mg_")
}

// ------------------------------------------------------------------------------ inputs ------------

/// Claims for a bench token: the harness's defaults, valid for the whole run (lifetime under the
/// filter's 3600 s maximum).
fn claims(auth: &Authority, mission: &str) -> Value {
    let mut c = auth.claims(mission);
    let t = now();
    c["iat"] = json!(t);
    c["exp"] = json!(t + 3000);
    c
}

/// The stand-in PDP: permits everything; counts the evaluations it answered.
fn start_pdp() -> (u16, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&hits);
    let listener = rt().block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0))).unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/access/v1/evaluation",
        axum::routing::post(move || {
            let h = Arc::clone(&h);
            async move {
                let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                axum::Json(json!({ "decision": true, "context": { "evaluation_id": format!("bench-{n}") } }))
            }
        }),
    );
    rt().spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, hits)
}

// ------------------------------------------------------------------------------ Envoy -------------

/// A rendered `envoy/bench.yaml`.
struct Config {
    yaml: String,
    admin: u16,
    /// listener name -> port
    ports: BTreeMap<String, u16>,
}

struct Backends<'a> {
    authority: u16,
    portal: Option<u16>,
    pdp: u16,
    jwks: &'a str,
    /// The filter to load (`$BENCH_WASM`, else the release build).
    wasm: &'a Path,
}

/// Render `envoy/bench.yaml`: the harness's substitutions (admin, authority, wasm path), a free port
/// per listener, the portal and PDP ports, the authority's JWKS for jwt_authn; only the listeners
/// `keep` accepts.
fn render_bench(b: &Backends<'_>, keep: &dyn Fn(&str) -> bool) -> Config {
    let admin = free_port();
    let base = render(
        "envoy/bench.yaml",
        10000,
        admin,
        18080,
        b.authority,
        &Opts { events: true, pdp: true, ..Opts::default() },
    );
    let portal = b.portal.unwrap_or(18444);
    let base = base
        .replace(&format!("filename: {}", wasm_path().display()), &format!("filename: {}", b.wasm.display()))
        .replace("127.0.0.1:18444", &format!("127.0.0.1:{portal}"))
        .replace("port_value: 18444", &format!("port_value: {portal}"))
        .replace("127.0.0.1:18445", &format!("127.0.0.1:{}", b.pdp))
        .replace("port_value: 18445", &format!("port_value: {}", b.pdp));
    let mut out = Vec::new();
    let mut ports = BTreeMap::new();
    let mut in_listeners = false;
    let mut current: Option<(String, bool, bool)> = None; // (name, kept, port substituted)
    for line in base.lines() {
        if line == "  listeners:" {
            in_listeners = true;
        } else if line == "  clusters:" {
            in_listeners = false;
            current = None;
        } else if in_listeners && (line.starts_with("  - ") || line.starts_with("  #")) {
            current = None;
            if let Some(name) = line.strip_prefix("  - name: ") {
                let name = name.trim().to_owned();
                let k = keep(&name);
                current = Some((name, k, false));
            }
        }
        let mut line = line.to_owned();
        if let Some((name, kept, done)) = current.as_mut() {
            if !*kept {
                continue;
            }
            if !*done && line.contains("port_value: ") {
                let port = free_port();
                let (head, _) = line.split_once("port_value: ").unwrap();
                let tail = line.split_once("port_value: ").unwrap().1;
                let rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
                line = format!("{head}port_value: {port}{rest}");
                ports.insert(name.clone(), port);
                *done = true;
            }
        }
        if line.trim_start().starts_with("inline_string: '{\"keys\"") {
            let (head, _) = line.split_once('\'').unwrap();
            line = format!("{head}'{}'", b.jwks);
        }
        out.push(line);
    }
    Config { yaml: out.join("\n") + "\n", admin, ports }
}

struct EnvoyProc {
    child: Child,
    admin: u16,
    ports: BTreeMap<String, u16>,
    log: PathBuf,
    /// From spawn to the first 200 from `/ready`.
    ready_after: Duration,
}

impl EnvoyProc {
    fn start(s: &Settings, cfg: &Config, tag: &str) -> EnvoyProc {
        std::fs::create_dir_all(&s.work).unwrap();
        let path = s.work.join(format!("envoy-{tag}.yaml"));
        std::fs::write(&path, &cfg.yaml).unwrap();
        let log = s.work.join(format!("envoy-{tag}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let t0 = Instant::now();
        let child = pinned(s.envoy_cpu.as_deref(), envoy_bin())
            .arg("-c")
            .arg(&path)
            .args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"])
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {}: {e} (run `make envoy` or set ENVOY_BIN)", envoy_bin().display())
            });
        let mut e = EnvoyProc { child, admin: cfg.admin, ports: cfg.ports.clone(), log, ready_after: Duration::ZERO };
        loop {
            if let Ok(Some(st)) = e.child.try_wait() {
                panic!("envoy ({tag}) exited with {st}:\n{}", std::fs::read_to_string(&e.log).unwrap_or_default());
            }
            if let Ok(r) = Req::new("GET", "/ready").header("Host", "admin").try_send(e.admin) {
                if r.status == 200 {
                    e.ready_after = t0.elapsed();
                    break;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "envoy ({tag}) not ready after 60 s: see {}",
                e.log.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        e
    }

    fn port(&self, listener: &str) -> u16 {
        *self.ports.get(listener).unwrap_or_else(|| panic!("no listener {listener}"))
    }

    /// VmRSS in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sum of the counters whose name ends with `suffix` (custom Wasm metrics are per VM).
    fn counter(&self, suffix: &str) -> u64 {
        let text = Req::new("GET", "/stats?filter=missiongate").header("Host", "admin").send(self.admin).text();
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.ends_with(suffix))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }

    /// Answers with status 4xx and 5xx so far, per listener (`http.<stat_prefix>.downstream_rq_[45]xx`).
    fn non_2xx(&self) -> BTreeMap<String, [u64; 2]> {
        let text =
            Req::new("GET", "/stats?filter=downstream_rq_%5B45%5Dxx").header("Host", "admin").send(self.admin).text();
        let mut out: BTreeMap<String, [u64; 2]> = BTreeMap::new();
        for (k, v) in text.lines().filter_map(|l| l.split_once(": ")) {
            let Some(rest) = k.strip_prefix("http.") else { continue };
            let Some((listener, class)) = rest.split_once(".downstream_rq_") else { continue };
            let i = match class {
                "4xx" => 0,
                "5xx" => 1,
                _ => continue,
            };
            out.entry(listener.to_owned()).or_default()[i] += v.trim().parse::<u64>().unwrap_or(0);
        }
        out
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EnvoyProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------------------ load --------------

const DONE_LUA: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"#;

/// The wrk script of a scenario.
/// `offset`: where in the pool a rotating script starts (None: at random).
fn script(
    s: &Settings,
    sc: &Scenario,
    hot: &str,
    pool: &Path,
    bodies: &BTreeMap<usize, PathBuf>,
    offset: Option<usize>,
) -> PathBuf {
    let mut lua = String::new();
    let method = if sc.body.is_some() { "POST" } else { "GET" };
    let path = if sc.body.is_some() { POST_PATH } else { GET_PATH };
    writeln!(lua, "wrk.method = \"{method}\"\nwrk.path = \"{path}\"\nwrk.headers[\"Host\"] = \"{HOST}\"").unwrap();
    if let Some(size) = sc.body {
        let f = bodies.get(&size).unwrap();
        writeln!(lua, "wrk.headers[\"Content-Type\"] = \"application/json\"").unwrap();
        writeln!(lua, "local f = assert(io.open([[{}]], \"rb\"))\nwrk.body = f:read(\"*a\")\nf:close()", f.display())
            .unwrap();
    }
    match sc.tok {
        Tok::Hot => writeln!(lua, "wrk.headers[\"Authorization\"] = \"Bearer {hot}\"").unwrap(),
        Tok::Pool => {
            writeln!(
                lua,
                r#"local tokens = {{}}
for line in io.lines([[{}]]) do if #line > 0 then tokens[#tokens + 1] = "Bearer " .. line end end
math.randomseed(os.time())
local i = {}
if i < 0 then i = math.random(#tokens) end
i = i % #tokens
request = function()
  i = i % #tokens + 1
  wrk.headers["Authorization"] = tokens[i]
  return wrk.format()
end"#,
                pool.display(),
                offset.map_or(-1, |o| o as i64)
            )
            .unwrap();
        }
    }
    lua.push_str(DONE_LUA);
    let p = s.work.join(format!("{}.lua", sc.id));
    std::fs::write(&p, lua).unwrap();
    p
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
struct Run {
    requests: u64,
    duration_us: u64,
    rps: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
    /// Socket errors, timeouts and answers >= 400.
    errors: u64,
}

fn wrk(s: &Settings, script: &Path, port: u16, secs: u32) -> Run {
    let out = pinned(s.load_cpu.as_deref(), "wrk")
        .args(["-t1", &format!("-c{}", s.connections), &format!("-d{secs}s"), "--timeout", "10s", "-s"])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run wrk: {e} (make bench installs it)"));
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find_map(|l| l.strip_prefix("WRK_JSON ")) else {
        panic!("wrk gave no result ({}):\n{text}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    };
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("wrk result {line:?}: {e}"));
    let n = |k: &str| v[k].as_f64().unwrap_or(0.0);
    let duration_us = n("duration_us").max(1.0);
    Run {
        requests: n("requests") as u64,
        duration_us: duration_us as u64,
        rps: n("requests") / (duration_us / 1e6),
        p50_us: n("p50_us"),
        p90_us: n("p90_us"),
        p99_us: n("p99_us"),
        max_us: n("max_us"),
        errors: ["connect", "read", "write", "status", "timeout"].iter().map(|k| n(k) as u64).sum(),
    }
}

/// The 1-minute load average: other work on the machine skews every figure.
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// One request of a scenario, outside wrk, to fail early and clearly when a listener refuses.
///
/// For a POST, a GET with the same token goes first, so that the check is about the POST itself, not
/// about a first request that must wait for Mission Status.
fn precheck(sc: &Scenario, port: u16, token: &str, bodies: &BTreeMap<usize, Vec<u8>>) -> Result<(), String> {
    if sc.body.is_some() {
        let _ = Req::new("GET", GET_PATH).header("Host", HOST).bearer(token).try_send(port);
    }
    let mut r =
        Req::new(if sc.body.is_some() { "POST" } else { "GET" }, if sc.body.is_some() { POST_PATH } else { GET_PATH })
            .header("Host", HOST)
            .bearer(token);
    if let Some(size) = sc.body {
        r = r.header("Content-Type", "application/json").body(bodies.get(&size).unwrap().clone());
    }
    match r.try_send(port) {
        Ok(resp) if resp.status == 200 => Ok(()),
        Ok(resp) => Err(format!("{}: {} {}", sc.id, resp.status, resp.text())),
        // A listener that answers before the body is in closes the connection: wrk copes, we may not.
        Err(_) if sc.body.is_some() && matches!(sc.listener, "none" | "mg_post_nopdp") => Ok(()),
        Err(e) => Err(format!("{}: {e}", sc.id)),
    }
}

// ------------------------------------------------------------------------------ revocation --------

#[derive(Debug, Default, serde::Serialize)]
struct Revocation {
    measured: bool,
    why_not: Option<String>,
    samples: usize,
    timeouts: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    /// How long the lifecycle call itself took (median).
    call_p50_ms: f64,
    refusals: BTreeMap<String, usize>,
    load_rps: f64,
}

/// Can this portal binary revoke? (`mission revoke --help` succeeds.)
fn portal_can_revoke() -> Result<PathBuf, String> {
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
fn revocations(s: &Settings, envoy: &EnvoyProc, portal: &Portal) -> Revocation {
    let port = envoy.port("mg_portal");
    let get = |token: &str| Req::new("GET", GET_PATH).header("Host", HOST).bearer(token).try_send(port);
    let (_, load_token) = portal.active(&["http.get"]);
    match get(&load_token) {
        Ok(r) if r.status == 200 => {}
        other => {
            return Revocation {
                why_not: Some(format!("the portal-backed listener refused an active Mission's token: {other:?}")),
                ..Revocation::default()
            }
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
        alt_baseline: None,
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

// ------------------------------------------------------------------------------ results -----------

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Row {
    id: String,
    title: String,
    listener: String,
    role: String,
    method: String,
    body_bytes: Option<usize>,
    tokens: String,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: u64,
    /// (max - min) / median of the rounds' req/s.
    rps_spread: f64,
    baseline: Option<String>,
    ratio_rps: Option<f64>,
    ratio_p50: Option<f64>,
    ratio_p99: Option<f64>,
    alt_baseline: Option<String>,
    alt_ratio_rps: Option<f64>,
    rounds: Vec<Run>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Target {
    name: String,
    measured: Option<f64>,
    unit: String,
    threshold: f64,
    /// "ge" or "le" / "lt".
    op: String,
    pass: Option<bool>,
    detail: String,
}

fn target(name: &str, measured: Option<f64>, unit: &str, op: &str, threshold: f64, detail: String) -> Target {
    let pass = measured.map(|m| match op {
        "ge" => m >= threshold,
        "le" => m <= threshold,
        _ => m < threshold,
    });
    Target { name: name.into(), measured, unit: unit.into(), threshold, op: op.into(), pass, detail }
}

fn fmt_int(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn fmt_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} us")
    }
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

fn fmt_target(t: &Target) -> (String, String, String) {
    let m = match (t.measured, t.unit.as_str()) {
        (None, _) => "not measured".to_owned(),
        (Some(v), "x") => format!("{v:.2}x"),
        (Some(v), "ms") => format!("{v:.1} ms"),
        (Some(v), "MiB") => format!("{v:.1} MiB"),
        (Some(v), u) => format!("{v:.2} {u}"),
    };
    let op = match t.op.as_str() {
        "ge" => ">=",
        "le" => "<=",
        _ => "<",
    };
    let th = match t.unit.as_str() {
        "x" => format!("{op} {:.2}x", t.threshold),
        u => format!("{op} {} {u}", t.threshold),
    };
    let verdict = match t.pass {
        Some(true) => "PASS",
        Some(false) => "MISS",
        None => "not measured",
    };
    (m, th, verdict.into())
}

// ------------------------------------------------------------------------------ chart -------------

/// Text in the public-domain 8x8 font, `scale` pixels per font pixel (ASCII only).
fn text<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    x: i32,
    y: i32,
    s: &str,
    scale: i32,
    color: &plotters::style::RGBColor,
) {
    use plotters::prelude::*;
    for (i, ch) in s.chars().enumerate() {
        let code = if ch.is_ascii() { ch as usize } else { b'?' as usize };
        let glyph = font8x8::legacy::BASIC_LEGACY[code];
        for (gy, row) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if row & (1 << gx) != 0 {
                    let px = x + (i as i32 * 8 + gx) * scale;
                    let py = y + gy as i32 * scale;
                    let _ = area.draw(&Rectangle::new([(px, py), (px + scale, py + scale)], color.filled()));
                }
            }
        }
    }
}

struct Bar {
    label: String,
    ratio: f64,
    target: Option<f64>,
    detail: String,
    diagnostic: bool,
}

fn chart(path: &Path, title: &str, subtitle: &[String], bars: &[Bar]) -> Result<(), String> {
    use plotters::prelude::*;
    // Each bar takes two text lines: the label and the bar, then the figures under the bar.
    let (w, row_h, left, axis_w) = (1660i32, 64i32, 540i32, 960i32);
    let top = 40 + 22 * subtitle.len() as i32 + 40;
    let bottom = top + row_h * bars.len() as i32;
    let h = bottom + 64;
    let max_ratio = 1.5f64;
    let x_of = |r: f64| left + (r.clamp(0.0, max_ratio) / max_ratio * f64::from(axis_w)) as i32;
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let ink = RGBColor(30, 30, 30);
    let grey = RGBColor(120, 120, 120);
    text(&root, 20, 14, title, 3, &ink);
    for (i, line) in subtitle.iter().enumerate() {
        text(&root, 20, 48 + 22 * i as i32, line, 2, &grey);
    }
    for i in 0..=((max_ratio / 0.1).round() as i32) {
        let t = f64::from(i) * 0.1;
        let x = x_of(t);
        let major = i % 5 == 0;
        let c = if i == 10 {
            RGBColor(60, 60, 60)
        } else if major {
            RGBColor(200, 200, 200)
        } else {
            RGBColor(235, 235, 235)
        };
        root.draw(&PathElement::new(vec![(x, top - 6), (x, bottom)], c.stroke_width(1))).map_err(e)?;
        if major {
            text(&root, x - 24, bottom + 8, &format!("{t:.1}x"), 2, &grey);
        }
    }
    text(&root, left, bottom + 34, "req/s of missiongate / req/s of its native counterpart", 2, &grey);
    for (i, b) in bars.iter().enumerate() {
        let y = top + row_h * i as i32;
        let pass = b.target.map(|t| b.ratio >= t);
        let color = match (b.diagnostic, pass) {
            (true, _) => RGBColor(150, 170, 200),
            (false, Some(true)) => RGBColor(60, 160, 90),
            (false, Some(false)) => RGBColor(210, 70, 60),
            (false, None) => RGBColor(70, 110, 180),
        };
        text(&root, 20, y + 8, &b.label, 2, &ink);
        let x1 = x_of(b.ratio).max(left + 2);
        root.draw(&Rectangle::new([(left, y + 4), (x1, y + 28)], color.filled())).map_err(e)?;
        let mut value = format!("{:.2}x", b.ratio);
        if b.ratio > max_ratio {
            value.push_str(" >");
        }
        if let (Some(t), Some(p)) = (b.target, pass) {
            let x = x_of(t);
            root.draw(&PathElement::new(vec![(x, y), (x, y + 32)], RGBColor(20, 20, 20).stroke_width(3))).map_err(e)?;
            value = format!("{value} {} (target {t:.1}x)", if p { "PASS" } else { "MISS" });
        }
        let vx =
            if b.ratio > max_ratio { x1 - 8 - 16 * value.len() as i32 } else { x1.max(b.target.map_or(0, x_of)) + 10 };
        let vcolor = if b.ratio > max_ratio { WHITE } else { ink };
        text(&root, vx, y + 8, &value, 2, &vcolor);
        root.draw(&Rectangle::new([(left, y + 34), (left + 16 * b.detail.len() as i32, y + 52)], WHITE.filled()))
            .map_err(e)?;
        text(&root, left, y + 36, &b.detail, 2, &grey);
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(())
}

// ------------------------------------------------------------------------------ check mode --------

/// `bench --check DIR`: the report in DIR is complete.
fn check(dir: &Path) -> Result<(), String> {
    let json_text = std::fs::read_to_string(dir.join("latest.json")).map_err(|e| format!("latest.json: {e}"))?;
    let v: Value = serde_json::from_str(&json_text).map_err(|e| format!("latest.json: {e}"))?;
    let md = std::fs::read_to_string(dir.join("latest.md")).map_err(|e| format!("latest.md: {e}"))?;
    let png = std::fs::read(dir.join("latest.png")).map_err(|e| format!("latest.png: {e}"))?;
    if !png.starts_with(b"\x89PNG\r\n\x1a\n") || png.len() < 1000 {
        return Err("latest.png is not a PNG chart".into());
    }
    let rows: Vec<Row> = serde_json::from_value(v["scenarios"].clone()).map_err(|e| format!("scenarios: {e}"))?;
    for sc in scenarios() {
        let row = rows.iter().find(|r| r.id == sc.id).ok_or_else(|| format!("no row {}", sc.id))?;
        if !(row.rps > 0.0 && row.p50_us > 0.0 && row.p99_us > 0.0) {
            return Err(format!("row {} has no figures: {row:?}", sc.id));
        }
        let requests: u64 = row.rounds.iter().map(|r| r.requests).sum();
        // A few errors are the filter's (the report shows them); mostly errors means the scenario is
        // broken (tokens, config) and its figures measure refusals.
        if row.errors * 2 > requests {
            return Err(format!(
                "row {}: {} errors in {requests} requests (non-2xx or socket errors)",
                sc.id, row.errors
            ));
        }
        if sc.baseline.is_some() && row.ratio_rps.is_none() {
            return Err(format!("row {} has no ratio", sc.id));
        }
        if !md.contains(sc.title) {
            return Err(format!("latest.md has no row {:?}", sc.title));
        }
    }
    let targets: Vec<Target> = serde_json::from_value(v["targets"].clone()).map_err(|e| format!("targets: {e}"))?;
    for name in ["hot path", "cold path", "64 KiB POST", "revocation p99", ".wasm size", "memory overhead"] {
        let t = targets.iter().find(|t| t.name.starts_with(name)).ok_or_else(|| format!("no target {name:?}"))?;
        if !md.contains(&t.name) {
            return Err(format!("latest.md does not report target {:?}", t.name));
        }
    }
    for key in ["wasm_bytes", "memory", "start", "revocation"] {
        if v[key].is_null() {
            return Err(format!("latest.json has no {key}"));
        }
    }
    if v["revocation"]["measured"] != json!(true) && !md.contains("not measured: ") {
        return Err("revocation neither measured nor explained".into());
    }
    Ok(())
}

// ------------------------------------------------------------------------------ main --------------

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--check") {
        let dir = args.get(2).map_or_else(|| repo_root().join("bench/results"), PathBuf::from);
        match check(&dir) {
            Ok(()) => println!("bench report in {} is complete", dir.display()),
            Err(e) => {
                eprintln!("bench report in {} is incomplete: {e}", dir.display());
                std::process::exit(1);
            }
        }
        return;
    }
    let s = Settings::from_env();
    std::fs::create_dir_all(&s.work).unwrap();
    std::fs::create_dir_all(&s.out).unwrap();
    // Another build of the filter can be measured in its place (say, one built with opt-level "s").
    let wasm = std::env::var_os("BENCH_WASM").map_or_else(wasm_path, PathBuf::from);
    assert!(wasm.exists(), "{} does not exist", wasm.display());
    let wasm_bytes = std::fs::metadata(&wasm).unwrap().len();
    let envoy_version = Command::new(envoy_bin())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    // "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
    let envoy_version =
        envoy_version.split_once("version:").and_then(|(_, v)| v.split('/').nth(1)).unwrap_or("?").to_owned();
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "?".into());
    let cores = s.cores;
    eprintln!(
        "bench: {} rounds x {} s, warm-up {} s, {} connections, Envoy on cpu {:?}, load on cpu {:?}, output {}",
        s.rounds,
        s.duration,
        s.warmup,
        s.connections,
        s.envoy_cpu,
        s.load_cpu,
        s.out.display()
    );

    let load_at_start = loadavg();

    // Backends.
    let auth = Authority::start();
    let (pdp_port, pdp_hits) = start_pdp();
    let portal = match portal_can_revoke() {
        Ok(_) if s.revocations > 0 => Ok(Portal::start(&["--status-fresh-seconds", "30"])),
        Ok(_) => Err("BENCH_REVOCATIONS=0".to_owned()),
        Err(e) => Err(e),
    };
    let jwks = json!({ "keys": [auth.signer().jwk] }).to_string();
    let backends = Backends {
        authority: auth.port,
        portal: portal.as_ref().ok().map(|p| p.port),
        pdp: pdp_port,
        jwks: &jwks,
        wasm: &wasm,
    };
    let with_portal = portal.is_ok();
    let full = |b: &Backends<'_>| render_bench(b, &|l: &str| with_portal || l != "mg_portal");
    let native = |b: &Backends<'_>| render_bench(b, &|l: &str| is_native(l));

    // Tokens and bodies.
    let hot_mission = format!("msn_bench_hot_{}", now());
    auth.set_mission(&hot_mission, "active");
    let hot = auth.token(&claims(&auth, &hot_mission));
    let cold_mission = format!("msn_bench_cold_{}", now());
    auth.set_mission(&cold_mission, "active");
    let t = Instant::now();
    let half = s.cold_tokens.div_ceil(2);
    let pool: Vec<String> = std::thread::scope(|scope| {
        let (auth, mission) = (&auth, &cold_mission);
        let workers: Vec<_> = [half, s.cold_tokens - half]
            .into_iter()
            .map(|n| scope.spawn(move || (0..n).map(|_| auth.token(&claims(auth, mission))).collect::<Vec<_>>()))
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    eprintln!("bench: minted {} cold-path tokens in {:.1} s", pool.len(), t.elapsed().as_secs_f64());
    // From here on the bench itself (authority, PDP, portal, probes: every thread) stays off Envoy's
    // core; minting used both.
    if let Some(cpu) = &s.load_cpu {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", cpu, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let pool_file = s.work.join("tokens.txt");
    std::fs::write(&pool_file, pool.join("\n") + "\n").unwrap();
    let mut body_files = BTreeMap::new();
    let mut bodies = BTreeMap::new();
    for size in [KIB, 64 * KIB, 1024 * KIB] {
        let b = missiongate_tests::bodies::payment_batch(size);
        let _: Value = serde_json::from_slice(&b).expect("generated body is JSON");
        let f = s.work.join(format!("body-{size}.json"));
        std::fs::write(&f, &b).unwrap();
        body_files.insert(size, f);
        bodies.insert(size, b);
    }
    let scs = scenarios();
    let scripts: BTreeMap<&str, PathBuf> =
        scs.iter().map(|sc| (sc.id, script(&s, sc, &hot, &pool_file, &body_files, None))).collect();
    // The cold path takes its tokens in order, each run where the last one stopped, so that no token
    // comes twice (until the pool runs out; the report counts the token-cache hits).
    let mut cold_offset = 1usize; // pool[0] goes to the precheck
    let mut load = |sc: &Scenario, port: u16, secs: u32| -> Run {
        if sc.id != COLD {
            return wrk(&s, &scripts[sc.id], port, secs);
        }
        let r = wrk(&s, &script(&s, sc, &hot, &pool_file, &body_files, Some(cold_offset)), port, secs);
        // wrk counts completed requests; each connection may have had one more under way.
        cold_offset += usize::try_from(r.requests).unwrap_or(0) + s.connections as usize;
        r
    };
    let token_of = |sc: &Scenario| if sc.tok == Tok::Hot { hot.clone() } else { pool[0].clone() };

    // Start-to-ready, with and without the filter (Envoys started and stopped in turn, no traffic).
    let mut ready_native = Vec::new();
    let mut ready_full = Vec::new();
    for i in 0..s.starts {
        ready_native.push(
            EnvoyProc::start(&s, &native(&backends), &format!("start-native-{i}")).ready_after.as_secs_f64() * 1e3,
        );
        ready_full
            .push(EnvoyProc::start(&s, &full(&backends), &format!("start-full-{i}")).ready_after.as_secs_f64() * 1e3);
    }

    // Memory without the filter: the native listeners, warmed up the same way.
    let rss_native = {
        let e = EnvoyProc::start(&s, &native(&backends), "native");
        for sc in scs.iter().filter(|sc| is_native(sc.listener)) {
            precheck(sc, e.port(sc.listener), &token_of(sc), &bodies)
                .unwrap_or_else(|m| panic!("precheck (native Envoy) {m}"));
            if s.warmup > 0 {
                wrk(&s, &scripts[sc.id], e.port(sc.listener), s.warmup);
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        e.rss_kib()
    };

    // The run.
    let envoy = EnvoyProc::start(&s, &full(&backends), "bench");
    for sc in &scs {
        precheck(sc, envoy.port(sc.listener), &token_of(sc), &bodies)
            .unwrap_or_else(|m| panic!("precheck {m}\n{}", envoy.logs()));
    }
    if s.warmup > 0 {
        for sc in &scs {
            eprintln!("bench: warm-up {}", sc.id);
            load(sc, envoy.port(sc.listener), s.warmup);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let rss_full = envoy.rss_kib();
    let status_before = auth.status_hits();
    let non_2xx_before = envoy.non_2xx();
    let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    let (mut cold_hits, mut cold_misses) = (0u64, 0u64);
    for round in 1..=s.rounds {
        for sc in &scs {
            let before = (sc.id == COLD).then(|| (envoy.counter("token_cache.hit"), envoy.counter("token_cache.miss")));
            let r = load(sc, envoy.port(sc.listener), s.duration);
            if let Some((h, m)) = before {
                std::thread::sleep(Duration::from_millis(450)); // counters are flushed on the filter's tick
                cold_hits += envoy.counter("token_cache.hit").saturating_sub(h);
                cold_misses += envoy.counter("token_cache.miss").saturating_sub(m);
            }
            eprintln!(
                "bench: round {round}/{} {:<20} {:>9} req/s  p50 {:>8}  p99 {:>8}{}",
                s.rounds,
                sc.id,
                fmt_int(r.rps),
                fmt_us(r.p50_us),
                fmt_us(r.p99_us),
                if r.errors > 0 { format!("  {} ERRORS", r.errors) } else { String::new() }
            );
            runs.entry(sc.id).or_default().push(r);
        }
    }
    let status_fetches = auth.status_hits() - status_before;
    let cold_used = cold_offset;
    let non_2xx: BTreeMap<String, [u64; 2]> = envoy
        .non_2xx()
        .into_iter()
        .map(|(k, v)| {
            let b = non_2xx_before.get(&k).copied().unwrap_or_default();
            (k, [v[0].saturating_sub(b[0]), v[1].saturating_sub(b[1])])
        })
        .filter(|(_, v)| v[0] + v[1] > 0)
        .collect();
    let rss_after_run = envoy.rss_kib();

    // Revocation latency, on the same Envoy.
    let revocation = match &portal {
        Ok(p) => {
            let r = revocations(&s, &envoy, p);
            eprintln!("bench: revocation: {r:?}");
            r
        }
        Err(why) => Revocation { why_not: Some(why.clone()), ..Revocation::default() },
    };
    let logs = envoy.logs();
    drop(envoy);
    let load_at_end = loadavg();

    // ---- figures
    let mut rows: Vec<Row> = Vec::new();
    for sc in &scs {
        let rs = runs.get(sc.id).cloned().unwrap_or_default();
        let rps = median(rs.iter().map(|r| r.rps).collect());
        let (lo, hi) = rs.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| (lo.min(r.rps), hi.max(r.rps)));
        rows.push(Row {
            id: sc.id.into(),
            title: sc.title.into(),
            listener: sc.listener.into(),
            role: sc.role.as_str().into(),
            method: if sc.body.is_some() { "POST".into() } else { "GET".into() },
            body_bytes: sc.body,
            tokens: if sc.tok == Tok::Hot { "one token".into() } else { format!("pool of {}", s.cold_tokens) },
            rps,
            p50_us: median(rs.iter().map(|r| r.p50_us).collect()),
            p99_us: median(rs.iter().map(|r| r.p99_us).collect()),
            errors: rs.iter().map(|r| r.errors).sum(),
            rps_spread: if rps > 0.0 { (hi - lo) / rps } else { 0.0 },
            baseline: sc.baseline.map(str::to_owned),
            ratio_rps: None,
            ratio_p50: None,
            ratio_p99: None,
            alt_baseline: sc.alt_baseline.map(str::to_owned),
            alt_ratio_rps: None,
            rounds: rs,
        });
    }
    let by_id: BTreeMap<String, Row> = rows.iter().map(|r| (r.id.clone(), r.clone())).collect();
    let div = |a: f64, b: f64| (b > 0.0).then(|| a / b);
    for r in &mut rows {
        if let Some(b) = r.baseline.as_ref().and_then(|b| by_id.get(b)) {
            r.ratio_rps = div(r.rps, b.rps);
            r.ratio_p50 = div(r.p50_us, b.p50_us);
            r.ratio_p99 = div(r.p99_us, b.p99_us);
        }
        if let Some(b) = r.alt_baseline.as_ref().and_then(|b| by_id.get(b)) {
            r.alt_ratio_rps = div(r.rps, b.rps);
        }
    }
    let row = |id: &str| rows.iter().find(|r| r.id == id).unwrap();
    let mem_overhead_mib = (rss_full as f64 - rss_native as f64) / 1024.0;
    let ready_native_ms = median(ready_native.clone());
    let ready_full_ms = median(ready_full.clone());
    let targets = vec![
        target(
            "hot path vs jwt_authn + cache",
            row("get_mg_hot").ratio_rps,
            "x",
            "ge",
            0.8,
            format!("{} vs {} req/s", fmt_int(row("get_mg_hot").rps), fmt_int(row("get_jwt_cache").rps)),
        ),
        target(
            "cold path vs jwt_authn without cache",
            row("get_mg_cold").ratio_rps,
            "x",
            "ge",
            0.5,
            format!("{} vs {} req/s", fmt_int(row("get_mg_cold").rps), fmt_int(row("get_jwt_nocache").rps)),
        ),
        target(
            "64 KiB POST vs Envoy reading the same body (buffer filter)",
            row("post_64k_mg").ratio_rps,
            "x",
            "ge",
            0.5,
            format!(
                "{} vs {} req/s; vs no filter at all: {}",
                fmt_int(row("post_64k_mg").rps),
                fmt_int(row("post_64k_buffer").rps),
                fmt_ratio(row("post_64k_mg").alt_ratio_rps)
            ),
        ),
        target(
            "revocation p99 (lifecycle call to first refusal, under load)",
            revocation.measured.then_some(revocation.p99_ms),
            "ms",
            "lt",
            1000.0,
            if revocation.measured {
                format!(
                    "p50 {:.1} ms, max {:.1} ms over {} revocations",
                    revocation.p50_ms, revocation.max_ms, revocation.samples
                )
            } else {
                format!("not measured: {}", revocation.why_not.clone().unwrap_or_default())
            },
        ),
        target(
            ".wasm size",
            Some(wasm_bytes as f64 / MIB),
            "MiB",
            "le",
            1.0,
            format!("{} bytes", fmt_int(wasm_bytes as f64)),
        ),
        target(
            "memory overhead (Envoy VmRSS with - without the filter)",
            Some(mem_overhead_mib),
            "MiB",
            "le",
            64.0,
            format!("{:.1} vs {:.1} MiB after warm-up", rss_full as f64 / 1024.0, rss_native as f64 / 1024.0),
        ),
    ];

    // ---- latest.json
    let generated = missiongate_wire::time::format_rfc3339(now());
    let report = json!({
        "generated_at": generated,
        "machine": { "cpu": cpu_model, "cores": cores, "loadavg_1m_at_start": load_at_start, "loadavg_1m_at_end": load_at_end },
        "envoy": envoy_version,
        "settings": {
            "rounds": s.rounds, "duration_s": s.duration, "warmup_s": s.warmup, "connections": s.connections,
            "wrk_threads": 1, "envoy_concurrency": 1, "envoy_cpu": s.envoy_cpu, "load_cpu": s.load_cpu,
            "cold_tokens": s.cold_tokens, "starts": s.starts, "revocations": s.revocations,
        },
        "scenarios": rows,
        "targets": targets,
        "wasm_bytes": wasm_bytes,
        "wasm_path": wasm.strip_prefix(repo_root()).unwrap_or(&wasm).display().to_string(),
        "memory": {
            "rss_without_filter_kib": rss_native, "rss_with_filter_kib": rss_full,
            "rss_with_filter_after_run_kib": rss_after_run, "overhead_mib": mem_overhead_mib,
        },
        "start": {
            "ready_without_filter_ms": ready_native_ms, "ready_with_filter_ms": ready_full_ms,
            "vm_start_ms": ready_full_ms - ready_native_ms,
            "samples_without_ms": ready_native, "samples_with_ms": ready_full,
        },
        "revocation": revocation,
        "cold_path_token_cache": { "hits": cold_hits, "misses": cold_misses, "tokens_used": cold_used, "pool": s.cold_tokens },
        "non_2xx_during_rounds": non_2xx.iter().map(|(k, v)| (k.clone(), json!({ "4xx": v[0], "5xx": v[1] }))).collect::<serde_json::Map<String, Value>>(),
        "authority": { "status_fetches_during_rounds": status_fetches, "jwks_fetches": auth.jwks_hits(), "pdp_evaluations": pdp_hits.load(Ordering::SeqCst) },
    });
    std::fs::write(s.out.join("latest.json"), serde_json::to_string_pretty(&report).unwrap() + "\n").unwrap();

    // ---- latest.md
    let mut md = String::new();
    writeln!(md, "# missiongate benchmark: latest run\n").unwrap();
    writeln!(
        md,
        "Generated {generated} by `make bench` (tests/src/bin/bench.rs, envoy/bench.yaml). Envoy {envoy_version}, `--concurrency 1` on cpu {}; `wrk -t1 -c{}` on cpu {}; \
         keep-alive; {} s warm-up per scenario, then {} rounds of {} s through every scenario in turn; figures are the medians of the rounds. \
         Machine: {cpu_model}, {cores} cores, 1-minute load average {load_at_start:.2} at the start and {load_at_end:.2} at the end \
         (the bench itself keeps about one core busy; much more means other work skewed the figures). How to read this: `bench/README.md`.\n",
        s.envoy_cpu.as_deref().unwrap_or("any"),
        s.connections,
        s.load_cpu.as_deref().unwrap_or("any"),
        s.warmup,
        s.rounds,
        s.duration
    )
    .unwrap();
    writeln!(md, "## Targets\n\n| target | measured | wanted | result | detail |\n|---|---|---|---|---|").unwrap();
    for t in &targets {
        let (m, th, v) = fmt_target(t);
        writeln!(md, "| {} | {m} | {th} | **{v}** | {} |", t.name, t.detail).unwrap();
    }
    writeln!(
        md,
        "\n## Throughput and latency\n\nRatios are this row's figure divided by the counterpart's (req/s: higher is better; p50/p99: lower is better). \
         `spread` is (max - min) / median of the rounds' req/s.\n\n\
         | scenario | listener | req/s | p50 | p99 | counterpart | req/s ratio | p50 ratio | p99 ratio | also vs | spread | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    .unwrap();
    for r in &rows {
        let also = match (&r.alt_baseline, r.alt_ratio_rps) {
            (Some(b), Some(x)) => format!("{b}: {x:.2}x"),
            _ => "-".into(),
        };
        let name = if r.role == "native" { r.title.clone() } else { format!("**{}**", r.title) };
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {also} | {:.0}% | {} |",
            r.listener,
            fmt_int(r.rps),
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            r.baseline.clone().unwrap_or_else(|| "-".into()),
            fmt_ratio(r.ratio_rps),
            fmt_ratio(r.ratio_p50),
            fmt_ratio(r.ratio_p99),
            r.rps_spread * 100.0,
            r.errors
        )
        .unwrap();
    }
    writeln!(
        md,
        "\n## Footprint\n\n| | without the filter | with the filter | difference |\n|---|---|---|---|\n\
         | `.wasm` size (`{}`) | | {} bytes ({:.2} MiB) | |\n\
         | Envoy VmRSS after warm-up | {:.1} MiB | {:.1} MiB | {:+.1} MiB |\n\
         | Envoy VmRSS after the whole run | | {:.1} MiB | |\n\
         | Envoy start to `/ready` (median of {}) | {:.0} ms | {:.0} ms | {:+.0} ms (VM start) |\n",
        wasm.strip_prefix(repo_root()).unwrap_or(&wasm).display(),
        fmt_int(wasm_bytes as f64),
        wasm_bytes as f64 / MIB,
        rss_native as f64 / 1024.0,
        rss_full as f64 / 1024.0,
        mem_overhead_mib,
        rss_after_run as f64 / 1024.0,
        s.starts,
        ready_native_ms,
        ready_full_ms,
        ready_full_ms - ready_native_ms
    )
    .unwrap();
    writeln!(md, "The Envoy without the filter has only the native listeners; the one with it has every listener (the missiongate ones share one VM per thread).\n").unwrap();
    writeln!(md, "## Revocation latency\n").unwrap();
    if revocation.measured {
        writeln!(
            md,
            "{} revocations through the real captive-portal (`POST /operator/missions/{{id}}/revoke`, the call `captive-portal mission revoke` makes), \
             each timed from the start of the lifecycle call to the first refusal seen by a client probing the `mg_portal` listener, \
             while wrk loads that listener (about {} req/s on another Mission's token).\n\n\
             | p50 | p99 | max | lifecycle call (p50) | not enforced within 5 s | refusals |\n|---|---|---|---|---|---|\n\
             | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} |\n",
            revocation.samples,
            fmt_int(revocation.load_rps),
            revocation.p50_ms,
            revocation.p99_ms,
            revocation.max_ms,
            revocation.call_p50_ms,
            revocation.timeouts,
            revocation.refusals.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
        )
        .unwrap();
    } else {
        writeln!(md, "not measured: {}\n", revocation.why_not.clone().unwrap_or_default()).unwrap();
    }
    let cold_total = cold_hits + cold_misses;
    writeln!(
        md,
        "## Notes\n\n\
         - Cold path: {} token-cache hits and {} misses over the measured rounds ({:.1}% hits). {}\n\
         - Mission Status fetches from the stand-in authority during the rounds: {status_fetches} (answers are fresh for 30 s); JWKS fetches: {}; \
           PDP evaluations: {} (permits are cached per parameter_digest for 60 s).\n\
         - POST baselines: on a `direct_response` route Envoy answers as soon as the headers are in and, on HTTP/1.1, then closes the connection \
           rather than read the body, so `none` with a body measures a new connection per request and no body read. missiongate with a PDP holds \
           the request until the body is complete (it digests it), like Envoy's `buffer` filter, which is therefore its counterpart; the ratio to \
           `none` is given too.\n",
        cold_hits,
        cold_misses,
        if cold_total > 0 { cold_hits as f64 * 100.0 / cold_total as f64 } else { 0.0 },
        if cold_used <= s.cold_tokens {
            format!("Every cold-path request carried a token never sent before ({} of the pool's {} used).", fmt_int(cold_used as f64), fmt_int(s.cold_tokens as f64))
        } else {
            format!(
                "The pool of {} tokens ran out ({} needed): tokens came round again, so some were still cached (set BENCH_COLD_TOKENS higher).",
                fmt_int(s.cold_tokens as f64),
                fmt_int(cold_used as f64)
            )
        },
        auth.jwks_hits(),
        pdp_hits.load(Ordering::SeqCst)
    )
    .unwrap();
    if non_2xx.is_empty() {
        writeln!(md, "- Every answer during the rounds was a 2xx (Envoy's per-listener counters).").unwrap();
    } else {
        let list: Vec<String> = non_2xx.iter().map(|(k, v)| format!("`{k}` {} 4xx, {} 5xx", v[0], v[1])).collect();
        writeln!(
            md,
            "- Answers other than 2xx during the rounds (Envoy's per-listener counters): {}.",
            list.join("; ")
        )
        .unwrap();
        let stalled: Vec<&str> = rows
            .iter()
            .filter(|r| r.role != "native" && r.errors > 0 && r.rounds.iter().any(|x| x.max_us >= 2_000_000.0))
            .map(|r| r.id.as_str())
            .collect();
        if !stalled.is_empty() {
            writeln!(
                md,
                "  On {}, some requests took seconds and then failed: they waited for a callout answer that never reached the filter, \
                 which answers such waiters at its deadline (callout timeout + 2 s) with a 5xx. That is a filter bug, not load.",
                stalled.join(", ")
            )
            .unwrap();
        }
    }
    let vm_failures: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("[critical]") || l.contains("panic") || l.contains("[error]"))
        .take(5)
        .collect();
    if !vm_failures.is_empty() {
        writeln!(md, "- Envoy logged errors during the run (first lines):\n\n```\n{}\n```\n", vm_failures.join("\n"))
            .unwrap();
    }
    std::fs::write(s.out.join("latest.md"), &md).unwrap();

    // ---- latest.png
    let bar = |id: &str, label: &str, target: Option<f64>, diagnostic: bool| {
        let r = row(id);
        let b = r.baseline.clone().and_then(|b| by_id.get(&b).cloned());
        Bar {
            label: label.into(),
            ratio: r.ratio_rps.unwrap_or(0.0),
            target,
            detail: match b {
                Some(b) => format!(
                    "{} vs {} req/s; p50 {} vs {}; p99 {} vs {}",
                    fmt_int(r.rps),
                    fmt_int(b.rps),
                    fmt_us(r.p50_us),
                    fmt_us(b.p50_us),
                    fmt_us(r.p99_us),
                    fmt_us(b.p99_us)
                ),
                None => format!("{} req/s", fmt_int(r.rps)),
            },
            diagnostic,
        }
    };
    let bars = vec![
        bar("get_mg_hot", "hot path / jwt_authn+cache", Some(0.8), false),
        bar("get_mg_nolog", " (evidence log off)", None, true),
        bar("get_mg_cold", "cold path / jwt_authn no cache", Some(0.5), false),
        bar("post_1k_mg", "POST 1 KiB / buffer filter", None, false),
        bar("post_64k_mg", "POST 64 KiB / buffer filter", Some(0.5), false),
        bar("post_1m_mg", "POST 1 MiB / buffer filter", None, false),
        bar("post_1k_mg_nopdp", " 1 KiB, no PDP / no filter", None, true),
        bar("post_64k_mg_nopdp", " 64 KiB, no PDP / no filter", None, true),
        bar("post_1m_mg_nopdp", " 1 MiB, no PDP / no filter", None, true),
    ];
    let subtitle = vec![
        format!(
            "{generated}, Envoy {envoy_version}, 1 worker on its own core; wrk -t1 -c{}; median of {} x {} s",
            s.connections, s.rounds, s.duration
        ),
        format!(
            ".wasm {:.2} MiB; RSS {:+.1} MiB; start to /ready {:+.0} ms; revocation p99 {}",
            wasm_bytes as f64 / MIB,
            mem_overhead_mib,
            ready_full_ms - ready_native_ms,
            if revocation.measured { format!("{:.0} ms", revocation.p99_ms) } else { "not measured".into() }
        ),
    ];
    chart(&s.out.join("latest.png"), "missiongate vs Envoy's own filters (req/s ratio)", &subtitle, &bars)
        .unwrap_or_else(|e| panic!("chart: {e}"));

    println!("{md}");
    eprintln!("bench: wrote {}/latest.{{md,json,png}}", s.out.display());
    drop(portal);
}
