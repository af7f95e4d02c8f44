//! `bench --check DIR`: the report in DIR is complete (every row, target and section, and a verdict).

use crate::figures::{Row, Target};
use crate::report::VERIFIERS;
use crate::scenarios::{scenarios, DPOP, DPOP_PURE};
use crate::verifiers::Verifier;
use serde_json::{json, Value};
use std::path::Path;

pub fn check(dir: &Path) -> Result<(), String> {
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
        if sc.baseline.is_some() && (row.ratio_rps.is_none() || row.ratio_spread.is_none()) {
            return Err(format!("row {} has no ratio or spread", sc.id));
        }
        if row.also.len() != sc.also.len() {
            return Err(format!("row {} lacks a ratio to one of {:?}", sc.id, sc.also));
        }
        if !md.contains(sc.title) {
            return Err(format!("latest.md has no row {:?}", sc.title));
        }
    }
    // Which verifier signed off each DPoP row: every missiongate VM said which it chose, and the
    // pure row's VM (not mg_dpop's) chose pure Rust because its environment says so.
    let verifiers: Vec<Verifier> =
        serde_json::from_value(v["verifiers"].clone()).map_err(|e| format!("verifiers: {e}"))?;
    if let Some(v) = verifiers.iter().find(|v| v.said.is_none()) {
        return Err(format!("VM {} did not say which signature verifier it chose", v.vm_id));
    }
    let listener = |id: &str| scenarios().into_iter().find(|sc| sc.id == id).map(|sc| sc.listener);
    let (dpop, pure) = (listener(DPOP).unwrap_or_default(), listener(DPOP_PURE).unwrap_or_default());
    let (dpop_vm, pure_vm) = (Verifier::of(&verifiers, dpop), Verifier::of(&verifiers, pure));
    match (dpop_vm, pure_vm) {
        (Some(d), Some(p))
            if d.vm_id != p.vm_id
                && p.said.as_deref().is_some_and(|x| x.contains("MISSIONGATE_VERIFIER=pure"))
                && !d.said.as_deref().is_some_and(|x| x.contains("MISSIONGATE_VERIFIER=pure")) => {}
        _ => {
            return Err(format!(
                "{pure} is not on a VM of its own forced to pure Rust (MISSIONGATE_VERIFIER=pure) next to {dpop}: {verifiers:?}"
            ))
        }
    }
    if !md.contains(VERIFIERS) {
        return Err("latest.md does not say which signature verifier each VM chose".into());
    }
    let targets: Vec<Target> = serde_json::from_value(v["targets"].clone()).map_err(|e| format!("targets: {e}"))?;
    for name in [
        "hot path vs jwt_authn",
        "hot path vs the empty Rust filter",
        "hot path, evidence log off",
        "cold path",
        "DPoP",
        "64 KiB POST",
        "revocation p99 (",
        "revocation p99 across two portal replicas",
        ".wasm size",
        "memory overhead",
        "VM start",
    ] {
        let t = targets.iter().find(|t| t.name.starts_with(name)).ok_or_else(|| format!("no target {name:?}"))?;
        if !md.contains(&t.name) {
            return Err(format!("latest.md does not report target {:?}", t.name));
        }
        if t.unit == "x" && (t.measured.is_none() || t.spread.is_none()) {
            return Err(format!("target {:?} has no ratio or spread", t.name));
        }
    }
    for key in
        ["wasm_bytes", "memory", "start", "revocation", "revocation_replicas", "hostcalls", "verifiers", "reliable"]
    {
        if v[key].is_null() {
            return Err(format!("latest.json has no {key}"));
        }
    }
    let reliable = v["reliable"] == json!(true);
    if reliable != md.contains("**This run is reliable**") || reliable == md.contains("UNRELIABLE RUN") {
        return Err("latest.md does not state the run's verdict as latest.json has it".into());
    }
    // Revocation latency may only be missing for want of a part (the portal not built, no Postgres
    // server, BENCH_REVOCATIONS=0), never because the measurement itself broke.
    for key in ["revocation", "revocation_replicas"] {
        if v[key]["measured"] != json!(true) {
            let why = v[key]["why_not"].as_str().unwrap_or_default();
            let excused = ["is not built", "no Postgres server", "BENCH_REVOCATIONS=0", "no revoke command"];
            if !md.contains("not measured: ") || !excused.iter().any(|e| why.contains(e)) {
                return Err(format!("{key} was not measured: {why}"));
            }
        }
    }
    if v["hostcalls"]["measured"] == json!(true) {
        let paths = v["hostcalls"]["paths"].as_array().map_or(0, Vec::len);
        if paths == 0 || !md.contains("## Host calls per request") {
            return Err("host calls measured but not reported per path".into());
        }
    } else if !md.contains("## Host calls per request\n\nnot measured: ") {
        return Err("host calls neither measured nor explained".into());
    }
    Ok(())
}
