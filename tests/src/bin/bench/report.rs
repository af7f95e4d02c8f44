//! The report: what a run measured, its targets, and `latest.md` / `latest.json` / `latest.png`.

use crate::chart::{chart, Bar};
use crate::figures::{fmt_int, fmt_ratio, fmt_target, fmt_us, ratio_target, target, Row, Target, Verdict};
use crate::hostcalls::HostCalls;
use crate::load::{loadavg, median};
use crate::revocation::Revocation;
use crate::settings::Settings;
use crate::verifiers::Verifier;
use missiongate_tests::envoy::{envoy_bin, wasm_path};
use missiongate_tests::{now, repo_root};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

const MIB: f64 = 1024.0 * 1024.0;

/// The machine and the build under test.
pub struct Machine {
    pub envoy_version: String,
    pub cpu_model: String,
    pub cores: usize,
    pub wasm: PathBuf,
    pub wasm_bytes: u64,
    pub load_at_start: f64,
    pub load_at_end: f64,
}

impl Machine {
    pub fn probe(s: &Settings) -> Machine {
        // Another build of the filter can be measured in its place (say, one built with opt-level "s").
        let wasm = std::env::var_os("BENCH_WASM").map_or_else(wasm_path, PathBuf::from);
        assert!(wasm.exists(), "{} does not exist", wasm.display());
        let wasm_bytes = std::fs::metadata(&wasm).unwrap().len();
        let version = Command::new(envoy_bin())
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        // "<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
        let envoy_version =
            version.split_once("version:").and_then(|(_, v)| v.split('/').nth(1)).unwrap_or("?").to_owned();
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned())
            })
            .unwrap_or_else(|| "?".into());
        Machine {
            envoy_version,
            cpu_model,
            cores: s.cores,
            wasm,
            wasm_bytes,
            load_at_start: loadavg(),
            load_at_end: 0.0,
        }
    }

    fn wasm_display(&self) -> String {
        self.wasm.strip_prefix(repo_root()).unwrap_or(&self.wasm).display().to_string()
    }
}

/// Memory (VmRSS, KiB) and start-to-ready (ms) without and with the filter.
pub struct Footprint {
    pub rss_native: u64,
    pub rss_filter: u64,
    pub rss_after_run: u64,
    pub ready_native_ms: Vec<f64>,
    pub ready_filter_ms: Vec<f64>,
}

impl Footprint {
    fn overhead_mib(&self) -> f64 {
        (self.rss_filter as f64 - self.rss_native as f64) / 1024.0
    }
    fn vm_start_ms(&self) -> f64 {
        median(self.ready_filter_ms.clone()) - median(self.ready_native_ms.clone())
    }
}

/// Everything the report says.
pub struct Report {
    pub machine: Machine,
    pub rows: Vec<Row>,
    pub targets: Vec<Target>,
    pub verdict: Verdict,
    pub footprint: Footprint,
    pub revocation: Revocation,
    /// The same across two portal replicas on one Postgres (revoked through A, the Envoy follows B).
    pub revocation_replicas: Revocation,
    pub hostcalls: HostCalls,
    pub cold_hits: u64,
    pub cold_misses: u64,
    pub cold_used: usize,
    pub dpop_used: usize,
    pub dpop_pure_used: usize,
    pub status_fetches: u64,
    pub jwks_fetches: u64,
    pub pdp_evaluations: u64,
    pub non_2xx: BTreeMap<String, [u64; 2]>,
    pub envoy_errors: Vec<String>,
    /// The signature verifier each missiongate VM chose, as it logged it.
    pub verifiers: Vec<Verifier>,
}

/// The targets, in the order the report lists them.
pub fn targets(
    rows: &[Row],
    revocation: &Revocation,
    replicas: &Revocation,
    m: &Machine,
    f: &Footprint,
) -> Vec<Target> {
    let row = |id: &str| rows.iter().find(|r| r.id == id);
    let post64 = match (row("post_64k_mg"), row("post_64k_buffer")) {
        (Some(r), Some(b)) => format!(
            "{} vs {} req/s; vs no filter at all: {}",
            fmt_int(r.rps),
            fmt_int(b.rps),
            fmt_ratio(r.against("post_64k_none").map(|x| x.rps))
        ),
        _ => "a row is missing".into(),
    };
    vec![
        ratio_target("hot path vs jwt_authn + cache", rows, "get_mg_hot", "get_jwt_cache", 0.8),
        ratio_target("hot path vs the empty Rust filter (Wasm limit)", rows, "get_mg_hot", "get_ref_empty", 0.9),
        ratio_target(
            "hot path, evidence log off, vs the empty Rust filter",
            rows,
            "get_mg_nolog",
            "get_ref_empty",
            0.95,
        ),
        ratio_target("cold path vs jwt_authn without cache", rows, "get_mg_cold", "get_jwt_nocache", 0.5),
        ratio_target(
            "DPoP (new proof each request) vs jwt_authn without cache",
            rows,
            "get_mg_dpop",
            "get_jwt_nocache",
            1.0,
        ),
        Target {
            detail: post64,
            ..ratio_target(
                "64 KiB POST vs Envoy reading the same body (buffer filter)",
                rows,
                "post_64k_mg",
                "post_64k_buffer",
                0.5,
            )
        },
        revocation_target("revocation p99 (lifecycle call to first refusal, under load)", revocation),
        revocation_target(
            "revocation p99 across two portal replicas on Postgres (revoked on A, Envoy follows B)",
            replicas,
        ),
        target(
            ".wasm size",
            Some(m.wasm_bytes as f64 / MIB),
            "MiB",
            "le",
            1.0,
            format!("{} bytes", fmt_int(m.wasm_bytes as f64)),
        ),
        target(
            "memory overhead (Envoy VmRSS with - without the filter)",
            Some(f.overhead_mib()),
            "MiB",
            "le",
            64.0,
            format!("{:.1} vs {:.1} MiB after warm-up", f.rss_filter as f64 / 1024.0, f.rss_native as f64 / 1024.0),
        ),
        target(
            "VM start (Envoy start to /ready, with - without the filter)",
            Some(f.vm_start_ms()),
            "ms",
            "le",
            500.0,
            format!(
                "{:.0} vs {:.0} ms, medians of {}",
                median(f.ready_filter_ms.clone()),
                median(f.ready_native_ms.clone()),
                f.ready_filter_ms.len()
            ),
        ),
    ]
}

fn revocation_target(name: &str, r: &Revocation) -> Target {
    target(
        name,
        r.measured.then_some(r.p99_ms),
        "ms",
        "lt",
        1000.0,
        if r.measured {
            format!("p50 {:.1} ms, max {:.1} ms over {} revocations", r.p50_ms, r.max_ms, r.samples)
        } else {
            format!("not measured: {}", r.why_not.clone().unwrap_or_default())
        },
    )
}

/// Write latest.json, latest.md and latest.png; returns the Markdown.
pub fn write(s: &Settings, r: &Report) -> String {
    let generated = missiongate_wire::time::format_rfc3339(now());
    std::fs::write(
        s.out.join("latest.json"),
        serde_json::to_string_pretty(&json_report(s, r, &generated)).unwrap() + "\n",
    )
    .unwrap();
    let md = markdown(s, r, &generated);
    std::fs::write(s.out.join("latest.md"), &md).unwrap();
    png(s, r, &generated);
    md
}

fn json_report(s: &Settings, r: &Report, generated: &str) -> Value {
    let (m, f) = (&r.machine, &r.footprint);
    json!({
        "generated_at": generated,
        "reliable": r.verdict.reliable,
        "unreliable_because": r.verdict.reasons,
        "machine": { "cpu": m.cpu_model, "cores": m.cores, "loadavg_1m_at_start": m.load_at_start, "loadavg_1m_at_end": m.load_at_end },
        "envoy": m.envoy_version,
        "settings": {
            "rounds": s.rounds, "duration_s": s.duration, "warmup_s": s.warmup, "connections": s.connections,
            "wrk_threads": 1, "envoy_concurrency": 1, "envoy_cpu": s.envoy_cpu, "load_cpu": s.load_cpu,
            "cold_tokens": s.cold_tokens, "dpop_proofs": s.dpop_proofs, "starts": s.starts, "revocations": s.revocations,
            "quiet_none_rps": s.quiet_none_rps, "quiet_fraction": s.quiet_fraction, "max_spread": s.max_spread,
        },
        "scenarios": r.rows,
        "targets": r.targets,
        "wasm_bytes": m.wasm_bytes,
        "wasm_path": m.wasm_display(),
        "memory": {
            "rss_without_filter_kib": f.rss_native, "rss_with_filter_kib": f.rss_filter,
            "rss_bench_envoy_after_run_kib": f.rss_after_run, "overhead_mib": f.overhead_mib(),
        },
        "start": {
            "ready_without_filter_ms": median(f.ready_native_ms.clone()), "ready_with_filter_ms": median(f.ready_filter_ms.clone()),
            "vm_start_ms": f.vm_start_ms(),
            "samples_without_ms": f.ready_native_ms, "samples_with_ms": f.ready_filter_ms,
        },
        "revocation": r.revocation,
        "revocation_replicas": r.revocation_replicas,
        "hostcalls": r.hostcalls,
        "cold_path_token_cache": { "hits": r.cold_hits, "misses": r.cold_misses, "tokens_used": r.cold_used, "pool": s.cold_tokens },
        "dpop_proofs": { "used": r.dpop_used, "used_pure": r.dpop_pure_used, "pool": s.dpop_proofs },
        "verifiers": r.verifiers,
        "non_2xx_during_rounds": r.non_2xx.iter().map(|(k, v)| (k.clone(), json!({ "4xx": v[0], "5xx": v[1] }))).collect::<serde_json::Map<String, Value>>(),
        "authority": { "status_fetches_during_rounds": r.status_fetches, "jwks_fetches": r.jwks_fetches, "pdp_evaluations": r.pdp_evaluations },
    })
}

fn markdown(s: &Settings, r: &Report, generated: &str) -> String {
    let m = &r.machine;
    let mut md = String::new();
    writeln!(md, "# missiongate benchmark: latest run\n").unwrap();
    if r.verdict.reliable {
        writeln!(md, "**This run is reliable**: Envoy without a filter ran near its quiet-host figure, and every ratio target's per-round ratios agree.\n").unwrap();
    } else {
        writeln!(md, "**UNRELIABLE RUN: do not read these figures as results.** Why:\n").unwrap();
        for why in &r.verdict.reasons {
            writeln!(md, "- {why}").unwrap();
        }
        writeln!(md, "\nMeasure again on a quiet host.\n").unwrap();
    }
    writeln!(
        md,
        "Generated {generated} by `make bench` (tests/src/bin/bench/, envoy/bench.yaml). Envoy {}, `--concurrency 1` on cpu {}; `wrk -t1 -c{}` on cpu {}; \
         keep-alive; {} s warm-up per scenario, then {} rounds of {} s through every scenario in turn. Figures are medians of the rounds; \
         each ratio is the median of the per-round ratios (both sides measured seconds apart in every round), and its `spread` is \
         (max - min) / median of those per-round ratios. Machine: {}, {} cores, 1-minute load average {:.2} at the start and {:.2} at the end \
         (the bench itself keeps about one core busy). How to read this: `bench/README.md`.\n",
        m.envoy_version,
        s.envoy_cpu.as_deref().unwrap_or("any"),
        s.connections,
        s.load_cpu.as_deref().unwrap_or("any"),
        s.warmup,
        s.rounds,
        s.duration,
        m.cpu_model,
        m.cores,
        m.load_at_start,
        m.load_at_end
    )
    .unwrap();
    verifiers_line(&mut md, &r.verifiers);
    writeln!(md, "## Targets\n\n| target | measured | spread | wanted | result | detail |\n|---|---|---|---|---|---|")
        .unwrap();
    for t in &r.targets {
        let (mv, th, v) = fmt_target(t);
        let sp = t.spread.map_or_else(|| "-".into(), |x| format!("{:.0}%", x * 100.0));
        writeln!(md, "| {} | {mv} | {sp} | {th} | **{v}** | {} |", t.name, t.detail).unwrap();
    }
    rows_table(&mut md, &r.rows);
    hostcalls_table(&mut md, &r.hostcalls);
    footprint_table(&mut md, r);
    revocation_section(&mut md, &r.revocation, &r.revocation_replicas);
    notes(&mut md, s, r);
    md
}

/// Which signature verifier each missiongate VM chose (`choose_verifier`'s log line).
fn verifiers_line(md: &mut String, verifiers: &[Verifier]) {
    let each: Vec<String> = verifiers
        .iter()
        .map(|v| {
            format!(
                "VM `{}` ({}): {}",
                v.vm_id,
                v.listeners.join(", "),
                v.said
                    .as_deref()
                    .map_or_else(|| "**said nothing** (no log line within 10 s)".into(), |x| format!("\"{x}\""))
            )
        })
        .collect();
    writeln!(
        md,
        "{VERIFIERS}, as each VM logged it when configured (filter/src/root.rs `choose_verifier`): {}.\n",
        each.join("; ")
    )
    .unwrap();
}

/// How `latest.md` introduces the verifiers (`--check` looks for it).
pub const VERIFIERS: &str = "Signature verifiers";

fn rows_table(md: &mut String, rows: &[Row]) {
    writeln!(
        md,
        "\n## Throughput and latency\n\nRatios: this row's figure divided by the counterpart's, round by round, median of the rounds \
         (req/s: higher is better; p50/p99: lower is better). `spread`: of the rounds' req/s for the row, of the per-round ratios for the ratio.\n\n\
         | scenario | listener | req/s | p50 | p99 | counterpart | req/s ratio | ratio spread | p50 ratio | p99 ratio | also vs | req/s spread | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    .unwrap();
    for r in rows {
        let also = if r.also.is_empty() {
            "-".to_owned()
        } else {
            r.also.iter().map(|x| format!("{}: {:.2}x", x.against, x.rps)).collect::<Vec<_>>().join("; ")
        };
        let name = if matches!(r.role.as_str(), "native" | "reference") {
            r.title.clone()
        } else {
            format!("**{}**", r.title)
        };
        writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {also} | {:.0}% | {} |",
            r.listener,
            fmt_int(r.rps),
            fmt_us(r.p50_us),
            fmt_us(r.p99_us),
            r.baseline.clone().unwrap_or_else(|| "-".into()),
            fmt_ratio(r.ratio_rps),
            r.ratio_spread.map_or_else(|| "-".into(), |x| format!("{:.0}%", x * 100.0)),
            fmt_ratio(r.ratio_p50),
            fmt_ratio(r.ratio_p99),
            r.rps_spread * 100.0,
            r.errors
        )
        .unwrap();
    }
}

pub fn hostcalls_table(md: &mut String, h: &HostCalls) {
    writeln!(md, "\n## Host calls per request\n").unwrap();
    if !h.measured {
        writeln!(md, "not measured: {}\n", h.why_not.clone().unwrap_or_default()).unwrap();
        return;
    }
    writeln!(
        md,
        "From the counting build of the filter (`--features hostcalls`), each path loaded alone for a second: every proxy-wasm call \
         the filter makes into Envoy, background ones (ticks, callouts, counter flushes) spread over the requests.\n\n\
         | path | requests | host calls | per request |\n|---|---|---|---|"
    )
    .unwrap();
    for p in &h.paths {
        writeln!(
            md,
            "| {} | {} | {} | {:.2} |",
            p.title,
            fmt_int(p.requests as f64),
            fmt_int(p.calls as f64),
            p.per_request
        )
        .unwrap();
    }
}

fn footprint_table(md: &mut String, r: &Report) {
    let (m, f) = (&r.machine, &r.footprint);
    writeln!(
        md,
        "\n## Footprint\n\n| | without the filter | with the filter | difference |\n|---|---|---|---|\n\
         | `.wasm` size (`{}`) | | {} bytes ({:.2} MiB) | |\n\
         | Envoy VmRSS after warm-up | {:.1} MiB | {:.1} MiB | {:+.1} MiB |\n\
         | VmRSS of the bench's Envoy (reference filters and `mg_dpop_pure`'s VM too) after the whole run | | {:.1} MiB | |\n\
         | Envoy start to `/ready` (median of {}) | {:.0} ms | {:.0} ms | {:+.0} ms (VM start) |\n",
        m.wasm_display(),
        fmt_int(m.wasm_bytes as f64),
        m.wasm_bytes as f64 / MIB,
        f.rss_native as f64 / 1024.0,
        f.rss_filter as f64 / 1024.0,
        f.overhead_mib(),
        f.rss_after_run as f64 / 1024.0,
        f.ready_filter_ms.len(),
        median(f.ready_native_ms.clone()),
        median(f.ready_filter_ms.clone()),
        f.vm_start_ms()
    )
    .unwrap();
    writeln!(md, "Without the filter: Envoy's own listeners only. With it: those and every missiongate listener that shares the one VM per thread (all but `mg_dpop_pure`, which has a VM of its own); the reference filters are not in either.\n").unwrap();
}

fn revocation_section(md: &mut String, rev: &Revocation, replicas: &Revocation) {
    writeln!(md, "## Revocation latency\n").unwrap();
    writeln!(
        md,
        "Revocations through the real captive-portal (`POST /operator/missions/{{id}}/revoke`, the call `captive-portal mission revoke` makes), \
         each timed from the start of the lifecycle call to the first refusal seen by a client probing the `mg_portal` listener, \
         while wrk loads that listener on another Mission's token. One portal on SQLite; then two portal replicas on one Postgres, \
         each Mission revoked through replica A while the Envoy follows replica B's state-event feed.\n\n\
         | deployment | revocations | p50 | p99 | max | lifecycle call (p50) | not enforced within 5 s | load | refusals |\n|---|---|---|---|---|---|---|---|---|"
    )
    .unwrap();
    for (name, r) in [("one portal, SQLite", rev), ("two replicas, Postgres (revoke on A, Envoy on B)", replicas)] {
        if r.measured {
            writeln!(
                md,
                "| {name} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} req/s | {} |",
                r.samples,
                r.p50_ms,
                r.p99_ms,
                r.max_ms,
                r.call_p50_ms,
                r.timeouts,
                fmt_int(r.load_rps),
                r.refusals.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
            )
            .unwrap();
        } else {
            writeln!(md, "| {name} | not measured: {} | | | | | | | |", r.why_not.clone().unwrap_or_default()).unwrap();
        }
    }
    writeln!(md).unwrap();
}

fn notes(md: &mut String, s: &Settings, r: &Report) {
    let cold_total = r.cold_hits + r.cold_misses;
    let pool_note = |used: usize, pool: usize, what: &str| {
        if used <= pool {
            format!(
                "Every request carried {what} never sent before ({} of the pool's {} used).",
                fmt_int(used as f64),
                fmt_int(pool as f64)
            )
        } else {
            format!(
                "The pool of {} ran out ({} needed): some came round again (raise the pool size).",
                fmt_int(pool as f64),
                fmt_int(used as f64)
            )
        }
    };
    writeln!(
        md,
        "## Notes\n\n\
         - Cold path: {} token-cache hits and {} misses over the measured rounds ({:.1}% hits). {}\n\
         - DPoP: {}\n\
         - Mission Status fetches from the stand-in authority during the rounds: {} (answers are fresh for 30 s); JWKS fetches: {}; \
           PDP evaluations: {} (permits are cached per parameter_digest for 60 s).\n\
         - POST baselines: on a `direct_response` route Envoy answers as soon as the headers are in and, on HTTP/1.1, then closes the connection \
           rather than read the body, so `none` with a body measures a new connection per request and no body read. missiongate with a PDP holds \
           the request until the body is complete (it digests it), like Envoy's `buffer` filter, which is therefore its counterpart; the ratio to \
           `none` is given too.",
        r.cold_hits,
        r.cold_misses,
        if cold_total > 0 { r.cold_hits as f64 * 100.0 / cold_total as f64 } else { 0.0 },
        pool_note(r.cold_used, s.cold_tokens, "a token"),
        dpop_note(r, s),
        r.status_fetches,
        r.jwks_fetches,
        r.pdp_evaluations
    )
    .unwrap();
    if r.non_2xx.is_empty() {
        writeln!(md, "- Every answer during the rounds was a 2xx (Envoy's per-listener counters).").unwrap();
    } else {
        let list: Vec<String> = r.non_2xx.iter().map(|(k, v)| format!("`{k}` {} 4xx, {} 5xx", v[0], v[1])).collect();
        writeln!(
            md,
            "- Answers other than 2xx during the rounds (Envoy's per-listener counters): {}.",
            list.join("; ")
        )
        .unwrap();
        let stalled: Vec<&str> = r
            .rows
            .iter()
            .filter(|x| x.role != "native" && x.errors > 0 && x.rounds.iter().any(|y| y.max_us >= 2_000_000.0))
            .map(|x| x.id.as_str())
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
    if !r.envoy_errors.is_empty() {
        writeln!(
            md,
            "- Envoy logged errors during the run (first lines):\n\n```\n{}\n```\n",
            r.envoy_errors.join("\n")
        )
        .unwrap();
    }
}

/// Each DPoP listener (its own replay ledger: `mg_dpop_pure` runs on a VM of its own) takes the
/// proofs from the start of the pool.
fn dpop_note(r: &Report, s: &Settings) -> String {
    let note = |used: usize| {
        if used <= s.dpop_proofs {
            format!("{} of the pool's {} used", fmt_int(used as f64), fmt_int(s.dpop_proofs as f64))
        } else {
            format!(
                "the pool of {} ran out ({} needed): some came round again (raise BENCH_DPOP_PROOFS)",
                fmt_int(s.dpop_proofs as f64),
                fmt_int(used as f64)
            )
        }
    };
    let fresh = r.dpop_used <= s.dpop_proofs && r.dpop_pure_used <= s.dpop_proofs;
    format!(
        "{} `mg_dpop`: {}; `mg_dpop_pure` (a VM of its own, hence its own replay ledger, takes the same proofs in the same order): {}.",
        if fresh { "Every request carried a proof its listener had never seen." } else { "Proofs came round again." },
        note(r.dpop_used),
        note(r.dpop_pure_used)
    )
}

fn png(s: &Settings, r: &Report, generated: &str) {
    let (m, f) = (&r.machine, &r.footprint);
    let by_id: BTreeMap<&str, &Row> = r.rows.iter().map(|x| (x.id.as_str(), x)).collect();
    let bar = |id: &str, against: Option<&str>, label: &str, target: Option<f64>, diagnostic: bool| {
        let row = by_id.get(id).copied();
        let against = against.or_else(|| row.and_then(|x| x.baseline.as_deref()));
        let ratio = match (row, against) {
            (Some(x), Some(a)) if x.baseline.as_deref() == Some(a) => x.ratio_rps,
            (Some(x), Some(a)) => x.against(a).map(|y| y.rps),
            _ => None,
        };
        let b = against.and_then(|a| by_id.get(a).copied());
        Bar {
            label: label.into(),
            ratio: ratio.unwrap_or(0.0),
            target,
            detail: match (row, b) {
                (Some(x), Some(b)) => format!(
                    "{} vs {} req/s; p50 {} vs {}; p99 {} vs {}",
                    fmt_int(x.rps),
                    fmt_int(b.rps),
                    fmt_us(x.p50_us),
                    fmt_us(b.p50_us),
                    fmt_us(x.p99_us),
                    fmt_us(b.p99_us)
                ),
                (Some(x), None) => format!("{} req/s", fmt_int(x.rps)),
                _ => "not measured".into(),
            },
            diagnostic,
        }
    };
    let bars = vec![
        bar("get_mg_hot", None, "hot path / jwt_authn+cache", Some(0.8), false),
        bar("get_mg_hot", Some("get_ref_empty"), "hot path / empty Rust filter", Some(0.9), false),
        bar("get_mg_nolog", Some("get_ref_empty"), " (log off) / empty Rust filter", Some(0.95), false),
        bar("get_ref_empty", None, " empty Rust filter / no filter", None, true),
        bar("get_mg_cold", None, "cold path / jwt_authn no cache", Some(0.5), false),
        bar("get_mg_dpop", None, "DPoP / jwt_authn no cache", Some(1.0), false),
        bar("get_mg_dpop_pure", Some("get_mg_dpop"), " DPoP, Rust / verify_signature", None, true),
        bar("post_1k_mg", None, "POST 1 KiB / buffer filter", None, false),
        bar("post_64k_mg", None, "POST 64 KiB / buffer filter", Some(0.5), false),
        bar("post_1m_mg", None, "POST 1 MiB / buffer filter", None, false),
        bar("post_64k_mg_nopdp", None, " 64 KiB, no PDP / no filter", None, true),
    ];
    let mut subtitle = vec![
        format!(
            "{generated}, Envoy {}, 1 worker on its own core; wrk -t1 -c{}; median of {} per-round ratios x {} s",
            m.envoy_version, s.connections, s.rounds, s.duration
        ),
        format!(
            ".wasm {:.2} MiB; RSS {:+.1} MiB; start to /ready {:+.0} ms; revocation p99 {}",
            m.wasm_bytes as f64 / MIB,
            f.overhead_mib(),
            f.vm_start_ms(),
            if r.revocation.measured { format!("{:.0} ms", r.revocation.p99_ms) } else { "not measured".into() }
        ),
    ];
    if !r.verdict.reliable {
        subtitle.insert(0, "UNRELIABLE RUN (see latest.md): not a result".into());
    }
    chart(&s.out.join("latest.png"), "missiongate vs Envoy's own filters (req/s ratio)", &subtitle, &bars)
        .unwrap_or_else(|e| panic!("chart: {e}"));
}
