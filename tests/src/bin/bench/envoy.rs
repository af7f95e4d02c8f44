//! The bench's Envoy: `envoy/bench.yaml` rendered for this run, started pinned, and read through its admin API.

use crate::settings::Settings;
use missiongate_testkit::envoy::{EnvoyCmd, EnvoyProcess};
use missiongate_tests::envoy::{render, wasm_path, Opts};
use missiongate_tests::{free_port, repo_root};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// The reference filters' module as `envoy/bench.yaml` names it (built by `make bench`).
pub const REFERENCE_WASM: &str = "target/wasm32-wasip1/release/missiongate_bench_reference.wasm";

/// A rendered `envoy/bench.yaml`.
pub struct Config {
    pub yaml: String,
    pub admin: u16,
    /// listener name -> port
    pub ports: BTreeMap<String, u16>,
    /// listener name -> the `vm_id` of its Wasm filter (listeners with one).
    pub vm_ids: BTreeMap<String, String>,
}

#[derive(Clone, Copy)]
pub struct Backends<'a> {
    pub authority: u16,
    pub portal: Option<u16>,
    pub pdp: u16,
    pub jwks: &'a str,
    /// The filter to load (`$BENCH_WASM`, else the release build).
    pub wasm: &'a Path,
}

/// Render `envoy/bench.yaml`: the harness's substitutions (admin, authority, wasm path), a free port
/// per listener, the portal and PDP ports, the authority's JWKS for jwt_authn; only the listeners
/// `keep` accepts.
pub fn render_bench(b: &Backends<'_>, keep: &dyn Fn(&str) -> bool) -> Config {
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
        .replace("port_value: 18445", &format!("port_value: {}", b.pdp))
        .replace(
            &format!("filename: {REFERENCE_WASM}"),
            &format!("filename: {}", repo_root().join(REFERENCE_WASM).display()),
        );
    let mut out = Vec::new();
    let mut ports = BTreeMap::new();
    // free_port() binds port 0 and lets it go, so two calls can answer the same port; one config
    // with two listeners on it does not load ("duplicate address"), so each port is taken once.
    let mut taken = std::collections::BTreeSet::from([admin, portal, b.pdp]);
    let mut vm_ids = BTreeMap::new();
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
                let port = loop {
                    let p = free_port();
                    if taken.insert(p) {
                        break p;
                    }
                };
                let (head, _) = line.split_once("port_value: ").unwrap();
                let tail = line.split_once("port_value: ").unwrap().1;
                let rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
                line = format!("{head}port_value: {port}{rest}");
                ports.insert(name.clone(), port);
                *done = true;
            }
            if let Some(vm) = line.trim_start().strip_prefix("vm_id: ") {
                vm_ids.insert(name.clone(), vm.trim().to_owned());
            }
        }
        if line.trim_start().starts_with("inline_string: '{\"keys\"") {
            let (head, _) = line.split_once('\'').unwrap();
            line = format!("{head}'{}'", b.jwks);
        }
        out.push(line);
    }
    Config { yaml: out.join("\n") + "\n", admin, ports, vm_ids }
}

pub struct EnvoyProc {
    process: EnvoyProcess,
    pub admin: u16,
    pub ports: BTreeMap<String, u16>,
    /// From spawn to the first 200 from `/ready`.
    pub ready_after: Duration,
}

impl EnvoyProc {
    /// Start pinned to `envoy_cpu` (when set), `/ready` asked every 5 ms so `ready_after` is close.
    pub fn start(s: &Settings, cfg: &Config, tag: &str) -> EnvoyProc {
        Self::start_with(s, cfg, tag, &[])
    }

    /// The same with further arguments to Envoy (`--component-log-level wasm:info`, say).
    pub fn start_with(s: &Settings, cfg: &Config, tag: &str, args: &[&str]) -> EnvoyProc {
        let cpu = s.envoy_cpu.as_deref();
        let started = EnvoyCmd::new(
            cfg.yaml.clone(),
            s.work.join(format!("envoy-{tag}.yaml")),
            s.work.join(format!("envoy-{tag}.log")),
            cfg.admin,
        )
        .prefix(cpu.map(|c| vec!["taskset", "-c", c]).unwrap_or_default())
        .poll_every(Duration::from_millis(5))
        .args(args)
        .start();
        match started {
            Ok(process) => {
                EnvoyProc { admin: cfg.admin, ports: cfg.ports.clone(), ready_after: process.ready_after, process }
            }
            Err(e) => panic!("envoy ({tag}): {e}"),
        }
    }

    pub fn port(&self, listener: &str) -> u16 {
        *self.ports.get(listener).unwrap_or_else(|| panic!("no listener {listener}"))
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:").and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Sum of the counters whose name ends with `suffix` (custom Wasm metrics are per VM).
    pub fn counter(&self, suffix: &str) -> u64 {
        let text = self.process.admin_get("/stats?filter=missiongate").text();
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| k.ends_with(suffix))
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }

    /// Requests Envoy has counted on `listener` (`http.<stat_prefix>.downstream_rq_total`).
    pub fn requests(&self, listener: &str) -> u64 {
        let key = format!("http.{listener}.downstream_rq_total");
        let text = self.process.admin_get(&format!("/stats?filter={key}")).text();
        text.lines()
            .filter_map(|l| l.split_once(": "))
            .filter(|(k, _)| *k == key)
            .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
            .sum()
    }

    /// Answers with status 4xx and 5xx so far, per listener (`http.<stat_prefix>.downstream_rq_[45]xx`).
    pub fn non_2xx(&self) -> BTreeMap<String, [u64; 2]> {
        let text = self.process.admin_get("/stats?filter=downstream_rq_%5B45%5Dxx").text();
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

    pub fn logs(&self) -> String {
        self.process.logs()
    }
}
