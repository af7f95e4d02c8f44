//! The portal as a process: `captive-portal serve` with its arguments, database and port, ready
//! once it prints its `listening on <url>` line, stopped with `kill -9`, restarted on the same port
//! and database.
//!
//! ```no_run
//! use missiongate_testkit::portal::PortalCmd;
//! let portal = PortalCmd::new("target/debug/captive-portal", "/tmp/portal.db")
//!     .issuer("https://as.test")
//!     .operator_token("test-operator-token-0123456789abcdef")
//!     .args(["--status-fresh-seconds", "7"])
//!     .log("/tmp/portal.log")
//!     .start()
//!     .unwrap();
//! println!("{}", portal.url);
//! ```

use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

/// How to start a portal. The command line is `serve --db <db> --listen <listen> [--issuer ..]
/// [--operator-token ..] [--gateway-credential .. --gateway-audience ..]`, then [`PortalCmd::args`]
/// in the order given.
#[derive(Debug, Clone)]
pub struct PortalCmd {
    bin: PathBuf,
    db: OsString,
    listen: String,
    issuer: Option<String>,
    operator_token: Option<String>,
    gateway: Option<(String, String)>,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    env_remove: Vec<OsString>,
    log: Option<PathBuf>,
    ready_within: Duration,
}

impl PortalCmd {
    /// The binary `bin` (the portal's own tests: `env!("CARGO_BIN_EXE_captive-portal")`) on the
    /// database `db` (a SQLite file or a Postgres URL), on a port of its choosing (`127.0.0.1:0`),
    /// ready within 20 s, its stderr discarded unless [`PortalCmd::log`] names a file.
    pub fn new(bin: impl Into<PathBuf>, db: impl Into<OsString>) -> PortalCmd {
        PortalCmd {
            bin: bin.into(),
            db: db.into(),
            listen: "127.0.0.1:0".to_owned(),
            issuer: None,
            operator_token: None,
            gateway: None,
            args: Vec::new(),
            env: Vec::new(),
            env_remove: Vec::new(),
            log: None,
            ready_within: Duration::from_secs(20),
        }
    }

    /// Listen on `addr` (`127.0.0.1:<port>`).
    pub fn listen(mut self, addr: impl Into<String>) -> Self {
        self.listen = addr.into();
        self
    }

    /// Listen on `127.0.0.1:<port>`.
    pub fn port(self, port: u16) -> Self {
        self.listen(format!("127.0.0.1:{port}"))
    }

    /// `--issuer`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// `--operator-token`.
    pub fn operator_token(mut self, token: impl Into<String>) -> Self {
        self.operator_token = Some(token.into());
        self
    }

    /// `--gateway-credential` and `--gateway-audience`.
    pub fn gateway(mut self, credential: impl Into<String>, audience: impl Into<String>) -> Self {
        self.gateway = Some((credential.into(), audience.into()));
        self
    }

    /// Further arguments, after the ones above.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.args.extend(crate::os_args(args));
        self
    }

    /// An environment variable of the process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// An environment variable the process must not inherit.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env_remove.push(key.into());
        self
    }

    /// Write stderr (the portal's log) to `path`, created anew at every start.
    pub fn log(mut self, path: impl Into<PathBuf>) -> Self {
        self.log = Some(path.into());
        self
    }

    /// How long the portal may take to print its `listening on` line.
    pub fn ready_within(mut self, d: Duration) -> Self {
        self.ready_within = d;
        self
    }

    /// Start it and wait until it listens. `Err` says why not: it exited (`portal exited: <status>`,
    /// a refused configuration, say), printed something else, or printed nothing in time (then it is
    /// killed).
    pub fn start(self) -> Result<PortalProcess, String> {
        let listen = self.listen.clone();
        let (child, url) = self.spawn_ready(&listen)?;
        let port = url.rsplit_once(':').and_then(|(_, p)| p.trim_end_matches('/').parse().ok()).unwrap_or(0);
        Ok(PortalProcess { child: Some(child), url, port, cmd: self })
    }

    fn spawn_ready(&self, listen: &str) -> Result<(Child, String), String> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve").arg("--db").arg(&self.db).args(["--listen", listen]);
        if let Some(i) = &self.issuer {
            cmd.args(["--issuer", i]);
        }
        if let Some(t) = &self.operator_token {
            cmd.args(["--operator-token", t]);
        }
        if let Some((c, a)) = &self.gateway {
            cmd.args(["--gateway-credential", c, "--gateway-audience", a]);
        }
        cmd.args(&self.args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for k in &self.env_remove {
            cmd.env_remove(k);
        }
        let stderr = match &self.log {
            Some(path) => {
                Stdio::from(std::fs::File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?)
            }
            None => Stdio::null(),
        };
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr);
        let mut child = crate::spawn(cmd).map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let read = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(matches!(read, Ok(n) if n > 0).then_some(line));
        });
        match rx.recv_timeout(self.ready_within) {
            Ok(Some(line)) => match line.strip_prefix("listening on ") {
                Some(url) => Ok((child, url.trim().to_owned())),
                None => {
                    kill9(&mut child);
                    Err(format!("portal did not start: {line:?}"))
                }
            },
            Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_err(|e| e.to_string())?;
                Err(format!("portal exited: {status}"))
            }
            Err(RecvTimeoutError::Timeout) => {
                kill9(&mut child);
                Err(format!("no listening line within {} s", self.ready_within.as_secs()))
            }
        }
    }
}

fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A running portal; killed when dropped.
#[derive(Debug)]
pub struct PortalProcess {
    child: Option<Child>,
    /// Where it listens, as it printed it (`http://127.0.0.1:<port>`).
    pub url: String,
    /// Its port (the same after [`PortalProcess::restart`]).
    pub port: u16,
    cmd: PortalCmd,
}

impl PortalProcess {
    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its exit status once it has exited (`Ok(None)` while it runs).
    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => c.try_wait(),
            None => Err(std::io::Error::other("the portal was killed")),
        }
    }

    /// Its log (stderr), when [`PortalCmd::log`] named a file.
    pub fn logs(&self) -> String {
        self.cmd.log.as_deref().map(Path::new).and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default()
    }

    /// `kill -9`, and reap it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill9(&mut c);
        }
    }

    /// `kill -9`, then start again with the same arguments, on the same port and database, once
    /// the port can be bound again (waiting at most 5 s for that).
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill9();
        crate::wait_port_free(self.port, Duration::from_secs(5));
        let (child, url) = self.cmd.spawn_ready(&format!("127.0.0.1:{}", self.port))?;
        self.child = Some(child);
        self.url = url;
        Ok(())
    }
}

impl Drop for PortalProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}
