//! Host calls per request on each missiongate path, from the counting build of the filter
//! (`--features hostcalls`: every proxy-wasm host call it makes is counted and reported as the
//! `hostcalls` counter). Each path is loaded alone for a short while on an Envoy with only
//! missiongate's listeners, and the counter's growth is divided by the requests Envoy counted on that
//! listener, so calls made in the background (ticks, callouts) are included, spread over the requests.

use crate::envoy::{render_bench, Backends, EnvoyProc};
use crate::scenarios::{Role, Scenario};
use crate::settings::Settings;
use crate::Inputs;
use missiongate_tests::repo_root;
use std::path::PathBuf;
use std::time::Duration;

/// Where `make bench` puts the counting build.
pub const COUNTING_WASM: &str = "target/hostcalls/wasm32-wasip1/release/missiongate_filter.wasm";

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct HostCalls {
    pub measured: bool,
    pub why_not: Option<String>,
    pub paths: Vec<PathCalls>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PathCalls {
    pub id: String,
    pub title: String,
    pub requests: u64,
    pub calls: u64,
    pub per_request: f64,
}

fn counting_wasm() -> Result<PathBuf, String> {
    let p = std::env::var_os("BENCH_HOSTCALLS_WASM").map_or_else(|| repo_root().join(COUNTING_WASM), PathBuf::from);
    if p.exists() {
        Ok(p)
    } else {
        Err(format!("{} is not built (make bench builds it: cargo build --features hostcalls)", p.display()))
    }
}

pub fn count(s: &Settings, backends: &Backends<'_>, scs: &[Scenario], inputs: &mut Inputs) -> HostCalls {
    let wasm = match counting_wasm() {
        Ok(w) => w,
        Err(why) => return HostCalls { why_not: Some(why), ..HostCalls::default() },
    };
    let b = Backends { wasm: &wasm, jwks: backends.jwks, ..*backends };
    let cfg = render_bench(&b, &|l: &str| l.starts_with("mg_") && l != "mg_portal");
    let e = EnvoyProc::start(s, &cfg, "hostcalls");
    let flush = || std::thread::sleep(Duration::from_millis(700)); // counters are flushed on the filter's tick
    let mut out = HostCalls { measured: true, ..HostCalls::default() };
    for sc in scs.iter().filter(|sc| matches!(sc.role, Role::Main | Role::Diagnostic)) {
        let Some(&port) = cfg.ports.get(sc.listener) else { continue };
        if let Err(m) = crate::load::precheck(sc, port, &inputs.auth_headers(sc), &inputs.bodies) {
            return HostCalls { why_not: Some(format!("precheck on the counting build: {m}")), ..HostCalls::default() };
        }
        inputs.load(s, sc, port, 1); // warm: tokens verified, Mission Status fetched
        flush();
        let (c0, r0) = (e.counter("hostcalls"), e.requests(sc.listener));
        inputs.load(s, sc, port, 1);
        flush();
        let (c1, r1) = (e.counter("hostcalls"), e.requests(sc.listener));
        let (calls, requests) = (c1.saturating_sub(c0), r1.saturating_sub(r0));
        out.paths.push(PathCalls {
            id: sc.id.into(),
            title: sc.title.into(),
            requests,
            calls,
            per_request: if requests > 0 { calls as f64 / requests as f64 } else { 0.0 },
        });
    }
    out
}
