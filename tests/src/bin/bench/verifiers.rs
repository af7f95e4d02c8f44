//! Which signature verifier each missiongate VM of `envoy/bench.yaml` chose. The filter logs one line
//! at info when a root context is configured (filter/src/root.rs `choose_verifier`): Envoy's
//! `verify_signature` (BoringSSL) when the host has it, pure Rust when it has not or when the VM's
//! environment says `MISSIONGATE_VERIFIER=pure` (the `mg_dpop_pure` listener's VM does).
//!
//! The bench's own Envoys log at warn, so that the evidence log lines (info) cost what they cost at
//! that level; this stage starts one more Envoy, with only the missiongate listeners and
//! `--component-log-level wasm:info`, reads those lines and stops it (no traffic, a second or two).

use crate::envoy::{render_bench, Backends, EnvoyProc};
use crate::settings::Settings;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What the line starts with after the filter's `missiongate: `.
const SAID: &str = "signatures verified";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Verifier {
    /// The VM (`vm_config.vm_id`).
    pub vm_id: String,
    /// Its listeners.
    pub listeners: Vec<String>,
    /// What it logged, from "signatures verified" on; `None`: no such line within 10 s of start.
    pub said: Option<String>,
}

impl Verifier {
    /// The verifier of `listener`'s VM, if it said.
    pub fn of<'a>(all: &'a [Verifier], listener: &str) -> Option<&'a Verifier> {
        all.iter().find(|v| v.listeners.iter().any(|l| l == listener))
    }
}

/// The choice `vm_id` logged, from Envoy's log: Envoy prefixes a root context's log line with
/// `wasm log <root_id> <vm_id>: ` (a stream context's with `wasm log <plugin name> <root_id> <vm_id>: `;
/// bench.yaml names each plugin as its VM, so either way the VM is the last word).
fn said(logs: &str, vm_id: &str) -> Option<String> {
    let tag = format!(" {vm_id}: missiongate: {SAID}");
    logs.lines().find_map(|l| l.find(&tag).map(|i| l[i + tag.len() - SAID.len()..].trim_end().to_owned()))
}

pub fn probe(s: &Settings, b: &Backends<'_>) -> Vec<Verifier> {
    let cfg = render_bench(b, &|l: &str| l.starts_with("mg_") && l != "mg_portal");
    let mut by_vm: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (listener, vm) in &cfg.vm_ids {
        by_vm.entry(vm).or_default().push(listener.clone());
    }
    let e = EnvoyProc::start_with(s, &cfg, "verifiers", &["--component-log-level", "wasm:info"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = e.logs();
        let out: Vec<Verifier> = by_vm
            .iter()
            .map(|(vm, listeners)| Verifier {
                vm_id: (*vm).to_owned(),
                listeners: listeners.clone(),
                said: said(&logs, vm),
            })
            .collect();
        if out.iter().all(|v| v.said.is_some()) || Instant::now() >= deadline {
            return out;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::said;

    #[test]
    fn reads_the_line_of_the_named_vm_only() {
        let logs = "[2026-12-07 23:10:00.000][12][info][wasm] [source/extensions/common/wasm/context.cc:1195] \
                    wasm log missiongate missiongate: missiongate: signatures verified by Envoy's verify_signature for ES256\n\
                    [2026-12-07 23:10:00.001][12][info][wasm] [source/extensions/common/wasm/context.cc:1195] \
                    wasm log missiongate missiongate-pure: missiongate: signatures verified in Rust (MISSIONGATE_VERIFIER=pure)\n";
        assert_eq!(
            said(logs, "missiongate").as_deref(),
            Some("signatures verified by Envoy's verify_signature for ES256")
        );
        assert_eq!(
            said(logs, "missiongate-pure").as_deref(),
            Some("signatures verified in Rust (MISSIONGATE_VERIFIER=pure)")
        );
        assert_eq!(said(logs, "other"), None);
        assert_eq!(
            said("wasm log missiongate missiongate missiongate: missiongate: configured\n", "missiongate"),
            None
        );
    }
}
