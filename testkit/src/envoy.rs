//! Envoy as a process: a shipped config rendered for a test's ports and paths
//! ([`render`]), started and ready once its admin `/ready` answers 200 ([`EnvoyCmd`]), and
//! `--mode validate` ([`validate`]).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::{Req, Response};

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
/// loopback destinations the test allows. The inspected destinations' certificates come from
/// `gateway_ca`, a directory as `captive-portal gateway-ca` writes it (asked for only when the
/// config has the forward proxy).
fn render_egress(mut t: String, egress: Option<&Egress>, gateway_ca: impl FnOnce() -> PathBuf) -> String {
    if !t.contains(EGRESS_BEGIN) {
        return t; // a config without the forward proxy (bench.yaml, the mTLS example)
    }
    let ca_dir = gateway_ca().display().to_string();
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

/// Render a shipped config (`file`, relative to the repository) for the given ports: the listener,
/// the admin, the upstream (`18080`) and the authority (`18443`); the filter and every file the
/// config names relative to the repository made absolute; the PDP and the event feed kept only when
/// `opts` asks; `gateway_ca` as in the forward proxy's inspected hosts.
pub fn render(
    file: &str,
    listener: u16,
    admin: u16,
    upstream: u16,
    authority: u16,
    opts: &Opts,
    gateway_ca: impl FnOnce() -> PathBuf,
) -> String {
    let text = std::fs::read_to_string(crate::repo_root().join(file)).unwrap();
    let mut t = render_egress(text, opts.egress.as_ref(), gateway_ca)
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

/// `envoy --mode validate` on a rendered config; returns (ok, output).
pub fn validate(yaml: &str) -> (bool, String) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = crate::repo_root().join("target/e2e");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(format!("validate-{}-{}.yaml", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&f, yaml).unwrap();
    let out =
        Command::new(envoy_bin()).args(["--mode", "validate", "--disable-hot-restart", "-c"]).arg(&f).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// How to start Envoy: `envoy -c <config> --concurrency <n> --disable-hot-restart --log-level warn`,
/// then [`EnvoyCmd::args`]; stdout and stderr to the log file.
#[derive(Debug, Clone)]
pub struct EnvoyCmd {
    yaml: String,
    config: PathBuf,
    log: PathBuf,
    admin: u16,
    concurrency: u32,
    args: Vec<OsString>,
    prefix: Vec<OsString>,
    ready_within: Duration,
    poll_every: Duration,
}

impl EnvoyCmd {
    /// The rendered config `yaml`, written to `config`, whose admin listens on `admin`; the log to
    /// `log`. One worker, ready within 60 s, `/ready` asked every 100 ms.
    pub fn new(yaml: impl Into<String>, config: impl Into<PathBuf>, log: impl Into<PathBuf>, admin: u16) -> EnvoyCmd {
        EnvoyCmd {
            yaml: yaml.into(),
            config: config.into(),
            log: log.into(),
            admin,
            concurrency: 1,
            args: Vec::new(),
            prefix: Vec::new(),
            ready_within: Duration::from_secs(60),
            poll_every: Duration::from_millis(100),
        }
    }

    /// The config and log as `<dir>/<name>.yaml` and `<dir>/<name>.log`, `dir` being
    /// `target/e2e` of the repository.
    pub fn in_e2e_dir(yaml: impl Into<String>, name: &str, admin: u16) -> EnvoyCmd {
        let dir = crate::repo_root().join("target/e2e");
        EnvoyCmd::new(yaml, dir.join(format!("{name}.yaml")), dir.join(format!("{name}.log")), admin)
    }

    /// Worker threads (`--concurrency`).
    pub fn concurrency(mut self, n: u32) -> Self {
        self.concurrency = n;
        self
    }

    /// Further arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.args.extend(crate::os_args(args));
        self
    }

    /// Run Envoy under this command (`taskset -c 2`, say).
    pub fn prefix<I, S>(mut self, prefix: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.prefix = crate::os_args(prefix).collect();
        self
    }

    /// How often `/ready` is asked while starting.
    pub fn poll_every(mut self, d: Duration) -> Self {
        self.poll_every = d;
        self
    }

    /// Write the config, start Envoy and wait until its admin `/ready` answers 200. `Err` says why
    /// not: it cannot be started, it exited (with its log), or it was not ready in time (with its
    /// log; then it is killed).
    pub fn start(self) -> Result<EnvoyProcess, String> {
        for f in [&self.config, &self.log] {
            if let Some(d) = f.parent() {
                std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
            }
        }
        std::fs::write(&self.config, &self.yaml).map_err(|e| format!("cannot write {}: {e}", self.config.display()))?;
        let out = std::fs::File::create(&self.log).map_err(|e| format!("cannot create {}: {e}", self.log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = match self.prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(envoy_bin());
                c
            }
            None => Command::new(envoy_bin()),
        };
        cmd.arg("-c")
            .arg(&self.config)
            .args(["--concurrency", &self.concurrency.to_string(), "--disable-hot-restart", "--log-level", "warn"])
            .args(&self.args)
            .stdout(Stdio::from(err))
            .stderr(Stdio::from(out));
        let t0 = Instant::now();
        let child = crate::spawn(cmd)
            .map_err(|e| format!("cannot start {}: {e} (run `make envoy` or set ENVOY_BIN)", envoy_bin().display()))?;
        let mut e = EnvoyProcess { child, admin: self.admin, log: self.log, ready_after: Duration::ZERO };
        loop {
            if let Ok(Some(st)) = e.child.try_wait() {
                return Err(format!("envoy exited with {st}:\n{}", e.logs()));
            }
            if let Ok(r) = Req::new("GET", "/ready").header("Host", "admin").try_send(e.admin) {
                if r.status == 200 {
                    e.ready_after = t0.elapsed();
                    return Ok(e);
                }
            }
            if t0.elapsed() >= self.ready_within {
                return Err(format!("envoy not ready after {} s:\n{}", self.ready_within.as_secs(), e.logs()));
            }
            std::thread::sleep(self.poll_every);
        }
    }
}

/// A running Envoy; killed when dropped.
#[derive(Debug)]
pub struct EnvoyProcess {
    child: Child,
    /// Admin port.
    pub admin: u16,
    /// Log file.
    pub log: PathBuf,
    /// From spawn to the first 200 from `/ready`.
    pub ready_after: Duration,
}

impl EnvoyProcess {
    /// Everything Envoy logged.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True when the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `GET <path>` on the admin listener.
    pub fn admin_get(&self, path: &str) -> Response {
        Req::new("GET", path).header("Host", "admin").send(self.admin)
    }

    /// Kill it and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EnvoyProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// [`Opts::replace`] entries that point the shipped config's PDP (the authority's cluster) at a
/// stand-in PDP on `pdp`, its own cluster, so the PDP can fail while the authority stays up.
pub fn stand_in_pdp(authority: u16, pdp: u16) -> Vec<(String, String)> {
    let cluster = format!(
        "  clusters:\n  - name: pdp\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: pdp\n      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {pdp} }} }} }} }}] }}]\n"
    );
    vec![
        (
            format!(
                "\"pdp\": {{ \"evaluation\": {{ \"cluster\": \"authority\", \"authority\": \"127.0.0.1:{authority}\""
            ),
            format!("\"pdp\": {{ \"evaluation\": {{ \"cluster\": \"pdp\", \"authority\": \"127.0.0.1:{pdp}\""),
        ),
        ("  clusters:\n".to_owned(), cluster),
    ]
}
