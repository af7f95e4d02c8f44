//! Runs the real Envoy binary with the shipped config (`envoy/missiongate.yaml`), its ports and
//! paths substituted, and the built `.wasm`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::Req;

/// The Envoy binary: `$ENVOY_BIN`, else the Makefile's virtualenv.
pub fn envoy_bin() -> PathBuf {
    match std::env::var_os("ENVOY_BIN") {
        Some(p) => PathBuf::from(p),
        None => crate::repo_root().join(".venv/bin/envoy"),
    }
}

/// The release filter.
pub fn wasm_path() -> PathBuf {
    let p = crate::repo_root().join("target/wasm32-wasip1/release/missiongate_filter.wasm");
    assert!(p.exists(), "{} is missing: run `make wasm` (make test does it)", p.display());
    p
}

/// Options.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Worker threads.
    pub concurrency: u32,
    /// Keep the state-event feed in the plugin config.
    pub events: bool,
    /// Keep the PDP in the plugin config.
    pub pdp: bool,
    /// Extra literal replacements in the rendered config (from, to).
    pub replace: Vec<(String, String)>,
    /// Keep the shipped forward proxy (dynamic forward proxy clusters, DNS cache, inside-address
    /// refusal) with these test settings. `None`: the `egress` clusters are replaced by one static
    /// cluster to the test upstream, so a request with any Host reaches it (what the suites that are
    /// not about egress want).
    pub egress: Option<Egress>,
}

/// Test settings for the shipped forward proxy.
#[derive(Debug, Clone)]
pub struct Egress {
    /// The loopback DNS server Envoy's DNS cache asks (UDP, 127.0.0.1).
    pub dns_port: u16,
    /// The CA bundle the TLS egress cluster trusts (instead of the system bundle).
    pub ca_file: PathBuf,
    /// Destinations (`:authority` regexes) allowed to resolve to inside addresses.
    pub allowed_inside: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts { concurrency: 1, events: false, pdp: false, replace: Vec::new(), egress: None }
    }
}

const EGRESS_BEGIN: &str = "  # >>> egress clusters";
const EGRESS_END: &str = "  # <<< egress clusters\n";
const INSPECTED_BEGIN: &str = "            # >>> inspected hosts";
const INSPECTED_END: &str = "            # <<< inspected hosts\n";
const CARES: &str = "CaresDnsResolverConfig }";
const ALLOWED_INSIDE: &str = "- header: { name: \":authority\", string_match: { exact: \"inside.invalid\" } }";

/// The shipped config's forward-proxy settings, for tests: either a static `egress` cluster to the
/// test upstream (`None`), or the DNS cache pointed at a loopback resolver, a test CA and the
/// loopback destinations the test allows.
fn render_egress(mut t: String, egress: Option<&Egress>) -> String {
    if !t.contains(EGRESS_BEGIN) {
        return t; // a config without the forward proxy (bench.yaml, the mTLS example)
    }
    // The inspected destinations' certificates: a gateway CA made for this test process.
    let ca_dir = crate::egress::gateway_ca().0.display().to_string();
    t = t.replace("filename: envoy/gateway-ca/", &format!("filename: {ca_dir}/"));
    let (Some(b), Some(e)) = (t.find(EGRESS_BEGIN), t.find(EGRESS_END)) else {
        return t;
    };
    match egress {
        None => {
            let stat = |name: &str| {
                format!("  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: {name}\n      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: 18080 }} }} }} }}] }}]\n")
            };
            t.replace_range(b..e + EGRESS_END.len(), &(stat("egress") + &stat("egress_tls")));
            // Without the forward proxy nothing is inspected: every CONNECT is the filter's to decide.
            if let (Some(b), Some(e)) = (t.find(INSPECTED_BEGIN), t.find(INSPECTED_END)) {
                t.replace_range(b..e + INSPECTED_END.len(), "");
            }
            t
        }
        Some(g) => {
            let resolver = format!(
                "CaresDnsResolverConfig, resolvers: [{{ socket_address: {{ address: 127.0.0.1, port_value: {}, protocol: UDP }} }}], dns_resolver_options: {{ no_default_search_domain: true }} }}",
                g.dns_port
            );
            t = t.replace(CARES, &resolver);
            t = t.replace("/etc/ssl/certs/ca-certificates.crt", &g.ca_file.display().to_string());
            let indent = " ".repeat(30);
            let rules: Vec<String> = g
                .allowed_inside
                .iter()
                .map(|r| {
                    format!(
                        "- header: {{ name: \":authority\", string_match: {{ safe_regex: {{ regex: \"{r}\" }} }} }}"
                    )
                })
                .collect();
            if !rules.is_empty() {
                t = t.replace(ALLOWED_INSIDE, &rules.join(&format!("\n{indent}")));
            }
            t
        }
    }
}

/// A running Envoy.
pub struct Envoy {
    child: Child,
    /// Egress listener port.
    pub port: u16,
    /// Admin port.
    pub admin: u16,
    /// Log file.
    pub log: PathBuf,
}

/// Render a shipped config for the given ports.
pub fn render(file: &str, listener: u16, admin: u16, upstream: u16, authority: u16, opts: &Opts) -> String {
    let text = std::fs::read_to_string(crate::repo_root().join(file)).unwrap();
    let mut t = render_egress(text, opts.egress.as_ref())
        .replace("port_value: 10000", &format!("port_value: {listener}"))
        .replace("port_value: 9901", &format!("port_value: {admin}"))
        .replace("port_value: 18080", &format!("port_value: {upstream}"))
        .replace("port_value: 18443", &format!("port_value: {authority}"))
        .replace("127.0.0.1:18443", &format!("127.0.0.1:{authority}"))
        .replace(
            "filename: target/wasm32-wasip1/release/missiongate_filter.wasm",
            &format!("filename: {}", wasm_path().display()),
        )
        // Files the configs name relative to the repository (a JWKS file, the bench's reference
        // filters) become absolute.
        .replace("filename: envoy/", &format!("filename: {}/envoy/", crate::repo_root().display()))
        .replace("filename: target/", &format!("filename: {}/target/", crate::repo_root().display()));
    let drop = |t: String, key: &str| t.lines().filter(|l| !l.contains(key)).collect::<Vec<_>>().join("\n");
    if !opts.events {
        t = drop(t, "\"events\":");
    }
    if !opts.pdp {
        t = drop(t, "\"pdp\":");
    }
    for (a, b) in &opts.replace {
        assert!(t.contains(a.as_str()), "config has no {a:?} to replace");
        t = t.replace(a.as_str(), b);
    }
    t
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
        let dir = crate::repo_root().join("target/e2e");
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join(format!("envoy-{port}.yaml"));
        std::fs::write(&cfg, yaml).unwrap();
        let log = dir.join(format!("envoy-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(envoy_bin());
        cmd.arg("-c")
            .arg(&cfg)
            .args(["--concurrency", &concurrency.to_string(), "--disable-hot-restart", "--log-level", "warn"])
            .args(["--component-log-level", "wasm:info"])
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        let child = crate::spawn(cmd).unwrap_or_else(|e| {
            panic!("cannot start {}: {e} (run `make envoy` or set ENVOY_BIN)", envoy_bin().display())
        });
        let mut e = Envoy { child, port, admin, log };
        e.wait_ready();
        e
    }

    fn wait_ready(&mut self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("envoy exited with {st}:\n{}", self.logs());
            }
            if let Ok(r) = Req::new("GET", "/ready").header("Host", "admin").try_send(self.admin) {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("envoy not ready after 60 s:\n{}", self.logs());
    }

    /// Everything Envoy logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin `/stats` text.
    pub fn stats(&self) -> String {
        Req::new("GET", "/stats").header("Host", "admin").send(self.admin).text()
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
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Envoy {
    /// Every Envoy a test drops is checked for Wasm VM failures first (unless the test has already
    /// failed), so no test can pass while the gateway's VM died underneath it.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let healthy = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.assert_healthy()));
            if let Err(e) = healthy {
                let _ = self.child.kill();
                let _ = self.child.wait();
                std::panic::resume_unwind(e);
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `envoy --mode validate` on a rendered config; returns (ok, output).
pub fn validate(yaml: &str) -> (bool, String) {
    let dir = crate::repo_root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(format!("validate-{}.yaml", crate::rand_id("")));
    std::fs::write(&f, yaml).unwrap();
    let out =
        Command::new(envoy_bin()).args(["--mode", "validate", "--disable-hot-restart", "-c"]).arg(&f).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}
