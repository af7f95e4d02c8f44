//! Runs the real Envoy binary with the shipped config (`envoy/missiongate.yaml`), its ports and
//! paths substituted, and the built `.wasm`: the test kit renders and launches it; this adds the
//! test gateway CA and the checks of the filter's VM every suite relies on.

use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use missiongate_testkit::envoy::{envoy_bin, validate, wasm_path, Egress, Opts};
use missiongate_testkit::envoy::{EnvoyCmd, EnvoyProcess};

/// Render a shipped config for the given ports (the kit's [`missiongate_testkit::envoy::render`]
/// with this test process's gateway CA for the inspected hosts).
pub fn render(file: &str, listener: u16, admin: u16, upstream: u16, authority: u16, opts: &Opts) -> String {
    missiongate_testkit::envoy::render(file, listener, admin, upstream, authority, opts, || {
        crate::egress::gateway_ca().0.clone()
    })
}

/// A running Envoy.
pub struct Envoy {
    process: EnvoyProcess,
    /// Egress listener port.
    pub port: u16,
    /// Admin port.
    pub admin: u16,
    /// Log file.
    pub log: PathBuf,
}

impl Envoy {
    /// Start Envoy with `envoy/missiongate.yaml` in front of `upstream`, trusting `authority`.
    pub fn start(upstream: u16, authority: u16, opts: Opts) -> Envoy {
        let (port, admin) = (crate::free_port(), crate::free_port());
        let yaml = render("envoy/missiongate.yaml", port, admin, upstream, authority, &opts);
        Envoy::start_yaml(&yaml, port, admin, opts.concurrency)
    }

    /// Start Envoy with a rendered config.
    pub fn start_yaml(yaml: &str, port: u16, admin: u16, concurrency: u32) -> Envoy {
        let started = EnvoyCmd::in_e2e_dir(yaml, &format!("envoy-{port}"), admin)
            .concurrency(concurrency)
            .args(["--component-log-level", "wasm:info"])
            .start();
        match started {
            Ok(process) => Envoy { log: process.log.clone(), process, port, admin },
            Err(e) => panic!("{e}"),
        }
    }

    /// Everything Envoy logged.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// The admin `/stats` text.
    pub fn stats(&self) -> String {
        self.process.admin_get("/stats").text()
    }

    /// A counter's value (0 when absent).
    pub fn counter(&self, name: &str) -> u64 {
        let stats = self.stats();
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": ")).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    }

    /// Wait (bounded) until the counter reaches `at_least`.
    pub fn wait_counter(&self, name: &str, at_least: u64) -> u64 {
        let start = Instant::now();
        loop {
            let v = self.counter(name);
            if v >= at_least || start.elapsed() > Duration::from_secs(10) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Panics unless the Wasm VM never failed: no panic or VM failure in the log, every `wasm.*`
    /// failure stat at zero, and the admin endpoint still answering.
    pub fn assert_healthy(&self) {
        let logs = self.logs();
        assert!(!logs.contains("panic"), "panic in the log of Envoy :{}:\n{logs}", self.port);
        for bad in ["Wasm VM failed", "Plugin configured to fail closed failed", "wasm log: missiongate: engine busy"] {
            assert!(!logs.contains(bad), "Envoy :{}: {bad:?} in the log:\n{logs}", self.port);
        }
        let stats = self.stats();
        let wasm_stats: Vec<&str> = stats.lines().filter(|l| l.starts_with("wasm.")).collect();
        assert!(!wasm_stats.is_empty(), "Envoy :{} shows no wasm stats:\n{stats}", self.port);
        for line in wasm_stats.iter().filter(|l| l.contains("fail")) {
            assert!(line.ends_with(": 0"), "Envoy :{}: VM failure stat: {line}", self.port);
        }
    }

    /// True when the process is still running.
    pub fn alive(&mut self) -> bool {
        self.process.alive()
    }
}

impl Drop for Envoy {
    /// Every Envoy a test drops is checked for Wasm VM failures first (unless the test has already
    /// failed), so no test can pass while the gateway's VM died underneath it.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let healthy = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.assert_healthy()));
            if let Err(e) = healthy {
                self.process.kill();
                std::panic::resume_unwind(e);
            }
        }
        self.process.kill();
    }
}
