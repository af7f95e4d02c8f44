//! `make bench`: missiongate measured side by side with Envoy's own filters.
//!
//! One Envoy (`--concurrency 1`, pinned to one core) runs `envoy/bench.yaml`, whose listeners differ
//! only in their HTTP filters and answer with a `direct_response` 200. `wrk` (pinned to the other core,
//! keep-alive) loads one listener at a time: a warm-up each, then several rounds that go through every
//! scenario in turn. Each ratio is taken round by round against its counterpart (measured seconds
//! apart), and the report gives the median of those ratios and their spread; a run whose no-filter
//! figure is far below a quiet host's, or whose ratios disagree between rounds, says at the top that
//! it is unreliable.
//!
//! Two reference rows put a floor under every Wasm figure: an empty Rust proxy-wasm filter and one that
//! only reads the headers once (bench/reference-filter, built by `make bench`).
//!
//! Also: the `.wasm` size, Envoy's resident memory and its start-to-ready time with and without the
//! filter, the revocation latency against the real captive-portal when `target/debug/captive-portal`
//! is there, and the host calls per request on each missiongate path when a counting build of the
//! filter is given (`BENCH_HOSTCALLS_WASM`, built by `make bench`).
//!
//! Writes `latest.md`, `latest.json`, `latest.png` into `$BENCH_OUT` (default `bench/results`).
//! `bench --check DIR` verifies that a report in DIR is complete (used by `make bench-smoke`).
//! Settings (environment): see `settings.rs` and mk/bench.mk.
//!
//! Modules: `settings` (environment), `scenarios` (what is measured), `envoy` (the bench's Envoy),
//! `load` (wrk), `revocation`, `hostcalls`, `verifiers` (which signature verifier each VM chose),
//! `figures` (rows, ratios, targets, verdict), `report` (latest.md / latest.json), `chart`
//! (latest.png), `check` (`--check`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod chart;
mod check;
mod envoy;
mod figures;
mod hostcalls;
mod load;
mod report;
mod revocation;
mod scenarios;
mod settings;
mod verifiers;

use envoy::{render_bench, Backends, Config, EnvoyProc};
use load::{loadavg, precheck, script, wrk, Run};
use missiongate_tests::authority::Authority;
use missiongate_tests::dpop::DpopKey;
use missiongate_tests::portal::Portal;
use missiongate_tests::{now, rand_id, repo_root, rt};
use report::{Footprint, Machine, Report};
use revocation::{portal_can_revoke, revocations, revocations_across_replicas, Revocation};
use scenarios::{
    claims, has_own_vm, is_native, scenarios, Scenario, Tok, COLD, DPOP, DPOP_PURE, GET_PATH, KIB, ORIGIN,
};
use serde_json::{json, Value};
use settings::Settings;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--check") {
        let dir = args.get(2).map_or_else(|| repo_root().join("bench/results"), PathBuf::from);
        match check::check(&dir) {
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
    if args.get(1).map(String::as_str) == Some("--hostcalls")
        || std::env::var("BENCH_ONLY").as_deref() == Ok("hostcalls")
    {
        only_hostcalls(&s);
        return;
    }
    if args.get(1).map(String::as_str) == Some("--starts") || std::env::var("BENCH_ONLY").as_deref() == Ok("starts") {
        only_starts(&s);
        return;
    }
    let report = run(&s);
    let md = report::write(&s, &report);
    println!("{md}");
    eprintln!("bench: wrote {}/latest.{{md,json,png}}", s.out.display());
}

/// Only the host-call stage (`bench --hostcalls`, or `BENCH_ONLY=hostcalls`): the counting build's
/// host calls per request on each path, printed as the report's table. Deterministic, so it is a
/// figure even on a loaded host (unlike throughput).
fn only_hostcalls(s: &Settings) {
    let machine = Machine::probe(s);
    let stack = Stack::start(s, &machine.wasm);
    let mut inputs = Inputs::prepare(s, &stack.auth);
    let h = hostcalls::count(s, &stack.backends(), &scenarios(), &mut inputs);
    let mut md = String::new();
    report::hostcalls_table(&mut md, &h);
    println!("{md}");
    if !h.measured {
        std::process::exit(1);
    }
}

/// Only the start stage (`bench --starts`, or `BENCH_ONLY=starts`): Envoy's start-to-ready without
/// and with the filter, `BENCH_STARTS` times each, interleaved. Timing: noisy on a loaded host.
fn only_starts(s: &Settings) {
    let machine = Machine::probe(s);
    let stack = Stack::start(s, &machine.wasm);
    let (native, filter) = measure_starts(s, &stack);
    let med = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    println!("start to /ready, ms (load average {:.2}):", loadavg());
    println!("  without the filter: {native:.0?} (median {:.0})", med(&native));
    println!("  with the filter:    {filter:.0?} (median {:.0})", med(&filter));
}

/// The whole bench, stage by stage.
fn run(s: &Settings) -> Report {
    let machine = Machine::probe(s);
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
    let stack = Stack::start(s, &machine.wasm);
    let mut inputs = Inputs::prepare(s, &stack.auth);
    // From here on the bench itself (authority, PDP, portal, probes: every thread) stays off Envoy's
    // core; minting used both.
    if let Some(cpu) = &s.load_cpu {
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", cpu, &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
    let scs = scenarios();
    let (ready_native, ready_filter) = measure_starts(s, &stack);
    let rss_native = measure_rss(s, &stack.render(Listeners::Native), &scs, &mut inputs, "native");
    let rss_filter = measure_rss(s, &stack.render(Listeners::Filter), &scs, &mut inputs, "filter");
    let verifiers = verifiers::probe(s, &stack.backends());
    eprintln!("bench: signature verifiers: {verifiers:?}");

    // The run, on an Envoy with every listener.
    let envoy = EnvoyProc::start(s, &stack.render(Listeners::All), "bench");
    for sc in &scs {
        precheck(sc, envoy.port(sc.listener), &inputs.auth_headers(sc), &inputs.bodies)
            .unwrap_or_else(|m| panic!("precheck {m}\n{}", envoy.logs()));
    }
    if s.warmup > 0 {
        for sc in &scs {
            eprintln!("bench: warm-up {}", sc.id);
            inputs.load(s, sc, envoy.port(sc.listener), s.warmup);
        }
    }
    let status_before = stack.auth.status_hits();
    let non_2xx_before = envoy.non_2xx();
    let rounds = measure_rounds(s, &envoy, &mut inputs, &scs);
    let status_fetches = stack.auth.status_hits() - status_before;
    let non_2xx = subtract(envoy.non_2xx(), &non_2xx_before);
    let rss_after_run = envoy.rss_kib();
    let revocation = match &stack.portal {
        Ok(p) => {
            let r = revocations(s, &envoy, p);
            eprintln!("bench: revocation: {r:?}");
            r
        }
        Err(why) => Revocation { why_not: Some(why.clone()), ..Revocation::default() },
    };
    let envoy_errors: Vec<String> = envoy
        .logs()
        .lines()
        .filter(|l| l.contains("[critical]") || l.contains("panic") || l.contains("[error]"))
        .take(5)
        .map(str::to_owned)
        .collect();
    drop(envoy);
    let revocation_replicas = revocations_across_replicas(s, &stack.backends());
    eprintln!("bench: revocation across two replicas: {revocation_replicas:?}");
    let hostcalls = hostcalls::count(s, &stack.backends(), &scs, &mut inputs);
    let load_at_end = loadavg();

    let rows = figures::rows(s, &scs, &rounds.runs);
    let footprint = Footprint {
        rss_native,
        rss_filter,
        rss_after_run,
        ready_native_ms: ready_native,
        ready_filter_ms: ready_filter,
    };
    let targets = report::targets(&rows, &revocation, &revocation_replicas, &machine, &footprint);
    let verdict = figures::verdict(s, &rows, &targets, machine.load_at_start);
    Report {
        machine: Machine { load_at_end, ..machine },
        rows,
        targets,
        verdict,
        footprint,
        revocation,
        revocation_replicas,
        hostcalls,
        cold_hits: rounds.cold_hits,
        cold_misses: rounds.cold_misses,
        cold_used: inputs.cursor(COLD),
        dpop_used: inputs.cursor(DPOP),
        dpop_pure_used: inputs.cursor(DPOP_PURE),
        status_fetches,
        jwks_fetches: stack.auth.jwks_hits(),
        pdp_evaluations: stack.pdp_hits.load(Ordering::SeqCst),
        non_2xx,
        envoy_errors,
        verifiers,
    }
}

fn subtract(after: BTreeMap<String, [u64; 2]>, before: &BTreeMap<String, [u64; 2]>) -> BTreeMap<String, [u64; 2]> {
    after
        .into_iter()
        .map(|(k, v)| {
            let b = before.get(&k).copied().unwrap_or_default();
            (k, [v[0].saturating_sub(b[0]), v[1].saturating_sub(b[1])])
        })
        .filter(|(_, v)| v[0] + v[1] > 0)
        .collect()
}

// ------------------------------------------------------------------------------ backends ----------

/// What the bench's Envoys talk to: the stand-in authority (JWKS, Mission Status), a stand-in PDP,
/// and the real captive-portal for the revocation figure.
struct Stack {
    auth: Authority,
    pdp_port: u16,
    pdp_hits: Arc<AtomicU64>,
    portal: Result<Portal, String>,
    jwks: String,
    wasm: PathBuf,
}

/// Which listeners an Envoy gets.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Listeners {
    /// Envoy's own filters only: "without the filter".
    Native,
    /// Those and missiongate's on its one shared VM: "with the filter" (memory, start time). Not
    /// `mg_dpop_pure`, whose VM of its own would count a second filter.
    Filter,
    /// Every listener, the reference filters too: the run.
    All,
}

impl Stack {
    fn start(s: &Settings, wasm: &std::path::Path) -> Stack {
        let auth = Authority::start();
        let (pdp_port, pdp_hits) = start_pdp();
        let portal = match portal_can_revoke() {
            Ok(_) if s.revocations > 0 => Ok(Portal::start(&["--status-fresh-seconds", "30"])),
            Ok(_) => Err("BENCH_REVOCATIONS=0".to_owned()),
            Err(e) => Err(e),
        };
        let jwks = json!({ "keys": [auth.signer().jwk] }).to_string();
        Stack { auth, pdp_port, pdp_hits, portal, jwks, wasm: wasm.to_owned() }
    }

    fn backends(&self) -> Backends<'_> {
        Backends {
            authority: self.auth.port,
            portal: self.portal.as_ref().ok().map(|p| p.port),
            pdp: self.pdp_port,
            jwks: &self.jwks,
            wasm: &self.wasm,
        }
    }

    fn render(&self, which: Listeners) -> Config {
        let with_portal = self.portal.is_ok();
        render_bench(&self.backends(), &|l: &str| match which {
            Listeners::Native => is_native(l),
            Listeners::Filter => {
                (is_native(l) || (l.starts_with("mg_") && !has_own_vm(l))) && (with_portal || l != "mg_portal")
            }
            Listeners::All => with_portal || l != "mg_portal",
        })
    }
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

// ------------------------------------------------------------------------------ inputs ------------

/// Tokens, proofs, bodies and wrk scripts, and where each in-order pool has got to.
struct Inputs {
    hot: String,
    pool: Vec<String>,
    pool_file: PathBuf,
    dpop_token: String,
    proofs: Vec<String>,
    proofs_file: PathBuf,
    bodies: BTreeMap<usize, Vec<u8>>,
    body_files: BTreeMap<usize, PathBuf>,
    scripts: BTreeMap<&'static str, PathBuf>,
    /// In-order scenarios: the next unused token or proof (entry 0 goes to the precheck).
    cursors: BTreeMap<&'static str, usize>,
}

/// `n` items made on two threads (minting is CPU-bound).
fn mint<T: Send>(n: usize, make: impl Fn() -> T + Sync) -> Vec<T> {
    let half = n.div_ceil(2);
    std::thread::scope(|scope| {
        let make = &make;
        let workers: Vec<_> = [half, n - half]
            .into_iter()
            .map(|k| scope.spawn(move || (0..k).map(|_| make()).collect::<Vec<_>>()))
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    })
}

impl Inputs {
    fn prepare(s: &Settings, auth: &Authority) -> Inputs {
        let hot_mission = format!("msn_bench_hot_{}", now());
        auth.set_mission(&hot_mission, "active");
        let hot = auth.token(&claims(auth, &hot_mission));
        let cold_mission = format!("msn_bench_cold_{}", now());
        auth.set_mission(&cold_mission, "active");
        let t = Instant::now();
        let pool = mint(s.cold_tokens, || auth.token(&claims(auth, &cold_mission)));
        eprintln!("bench: minted {} cold-path tokens in {:.1} s", pool.len(), t.elapsed().as_secs_f64());
        // DPoP: one bound token, a proof per request (each used once: a replay is refused). Proofs are
        // minted now, so the DPoP listener accepts an `iat` up to an hour old.
        let key = DpopKey::new();
        let dpop_mission = format!("msn_bench_dpop_{}", now());
        auth.set_mission(&dpop_mission, "active");
        let mut c = claims(auth, &dpop_mission);
        c["cnf"] = json!({ "jkt": key.jkt });
        let dpop_token = auth.token(&c);
        let htu = format!("{ORIGIN}{GET_PATH}");
        let t = Instant::now();
        let proofs =
            mint(s.dpop_proofs, || key.proof_with("GET", &htu, &dpop_token, now(), &rand_id("bj_"), "dpop+jwt"));
        eprintln!("bench: minted {} DPoP proofs in {:.1} s", proofs.len(), t.elapsed().as_secs_f64());

        let pool_file = s.work.join("tokens.txt");
        std::fs::write(&pool_file, pool.join("\n") + "\n").unwrap();
        let proofs_file = s.work.join("proofs.txt");
        std::fs::write(&proofs_file, proofs.join("\n") + "\n").unwrap();
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
        let mut inputs = Inputs {
            hot,
            pool,
            pool_file,
            dpop_token,
            proofs,
            proofs_file,
            bodies,
            body_files,
            scripts: BTreeMap::new(),
            cursors: BTreeMap::new(),
        };
        for sc in scenarios() {
            let p = inputs.script(s, &sc, None);
            inputs.scripts.insert(sc.id, p);
            if sc.in_order() {
                inputs.cursors.insert(sc.id, 1);
            }
        }
        inputs
    }

    fn script(&self, s: &Settings, sc: &Scenario, offset: Option<usize>) -> PathBuf {
        match sc.tok {
            Tok::Dpop => script(s, sc, &self.dpop_token, &self.proofs_file, &self.body_files, offset),
            _ => script(s, sc, &self.hot, &self.pool_file, &self.body_files, offset),
        }
    }

    /// The credential headers of one request of `sc`, outside wrk (entry 0 of a pool).
    fn auth_headers(&self, sc: &Scenario) -> Vec<(&'static str, String)> {
        match sc.tok {
            Tok::Hot => vec![("Authorization", format!("Bearer {}", self.hot))],
            Tok::Pool => vec![("Authorization", format!("Bearer {}", self.pool[0]))],
            Tok::Dpop => {
                vec![("Authorization", format!("DPoP {}", self.dpop_token)), ("DPoP", self.proofs[0].clone())]
            }
        }
    }

    fn cursor(&self, id: &str) -> usize {
        self.cursors.get(id).copied().unwrap_or(0)
    }

    /// One wrk run of `sc`. An in-order scenario starts where its last run stopped, so that no token or
    /// proof comes twice (until its pool runs out; the report says so).
    fn load(&mut self, s: &Settings, sc: &Scenario, port: u16, secs: u32) -> Run {
        let Some(&at) = self.cursors.get(sc.id) else {
            return wrk(s, &self.scripts[sc.id], port, secs);
        };
        let r = wrk(s, &self.script(s, sc, Some(at)), port, secs);
        // wrk counts completed requests; each connection may have had one more under way.
        let used = usize::try_from(r.requests).unwrap_or(0) + s.connections as usize;
        self.cursors.insert(sc.id, at + used);
        r
    }
}

// ------------------------------------------------------------------------------ stages ------------

/// Start-to-ready with and without the filter (Envoys started and stopped in turn, no traffic):
/// medians in ms.
fn measure_starts(s: &Settings, stack: &Stack) -> (Vec<f64>, Vec<f64>) {
    let mut native = Vec::new();
    let mut filter = Vec::new();
    for i in 0..s.starts {
        let ms = |e: EnvoyProc| e.ready_after.as_secs_f64() * 1e3;
        native.push(ms(EnvoyProc::start(s, &stack.render(Listeners::Native), &format!("start-native-{i}"))));
        filter.push(ms(EnvoyProc::start(s, &stack.render(Listeners::Filter), &format!("start-filter-{i}"))));
    }
    (native, filter)
}

/// Envoy's VmRSS (KiB) with `cfg`'s listeners, after each was prechecked and warmed up.
fn measure_rss(s: &Settings, cfg: &Config, scs: &[Scenario], inputs: &mut Inputs, tag: &str) -> u64 {
    let e = EnvoyProc::start(s, cfg, tag);
    for sc in scs.iter().filter(|sc| cfg.ports.contains_key(sc.listener)) {
        precheck(sc, e.port(sc.listener), &inputs.auth_headers(sc), &inputs.bodies)
            .unwrap_or_else(|m| panic!("precheck ({tag} Envoy) {m}"));
        if s.warmup > 0 {
            inputs.load(s, sc, e.port(sc.listener), s.warmup);
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    e.rss_kib()
}

struct Rounds {
    runs: BTreeMap<&'static str, Vec<Run>>,
    cold_hits: u64,
    cold_misses: u64,
}

/// The measured rounds: every scenario in turn, `s.rounds` times.
fn measure_rounds(s: &Settings, envoy: &EnvoyProc, inputs: &mut Inputs, scs: &[Scenario]) -> Rounds {
    let mut out = Rounds { runs: BTreeMap::new(), cold_hits: 0, cold_misses: 0 };
    for round in 1..=s.rounds {
        for sc in scs {
            let before = (sc.id == COLD).then(|| (envoy.counter("token_cache.hit"), envoy.counter("token_cache.miss")));
            let r = inputs.load(s, sc, envoy.port(sc.listener), s.duration);
            if let Some((h, m)) = before {
                std::thread::sleep(Duration::from_millis(450)); // counters are flushed on the filter's tick
                out.cold_hits += envoy.counter("token_cache.hit").saturating_sub(h);
                out.cold_misses += envoy.counter("token_cache.miss").saturating_sub(m);
            }
            eprintln!(
                "bench: round {round}/{} {:<20} {:>9} req/s  p50 {:>8}  p99 {:>8}{}",
                s.rounds,
                sc.id,
                figures::fmt_int(r.rps),
                figures::fmt_us(r.p50_us),
                figures::fmt_us(r.p99_us),
                if r.errors > 0 { format!("  {} ERRORS", r.errors) } else { String::new() }
            );
            out.runs.entry(sc.id).or_default().push(r);
        }
    }
    out
}
