//! Runs the real `captive-portal` binary on a real SQLite file, and drives it over HTTP.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::{Req, Response};

/// The operator token the tests use.
pub const OPERATOR_TOKEN: &str = "test-operator-token-0123456789abcdef";
/// The gateway credential of `envoy/missiongate.yaml`'s filter config, which every portal started
/// here accepts (`--gateway-credential`).
pub const GATEWAY_CREDENTIAL: &str = "missiongate-dev-gateway-credential-change-me";
/// The gateway audience of `envoy/missiongate.yaml` (the `aud` of the portal's state-event SETs).
pub const GATEWAY_AUDIENCE: &str = "https://gateway.missiongate.local";

/// The portal binary (built by `make test` / `cargo build -p captive-portal`).
pub fn portal_bin() -> PathBuf {
    let p = crate::repo_root().join("target/debug/captive-portal");
    assert!(p.exists(), "{} is missing: run `cargo build -p captive-portal` (make test does it)", p.display());
    p
}

/// A running portal.
pub struct Portal {
    child: Option<Child>,
    /// Port (stable across restarts).
    pub port: u16,
    /// Issuer URL.
    pub issuer: String,
    /// Database file.
    pub db: PathBuf,
    /// Extra arguments given at start.
    args: Vec<String>,
    /// A database URL shared with other replicas (instead of the file `db`).
    db_url: Option<String>,
}

impl Portal {
    /// Start on a fresh database in a fresh directory.
    pub fn start(extra: &[&str]) -> Portal {
        Portal::start_on(crate::free_port(), extra)
    }

    /// Start on a given port, on a fresh database.
    pub fn start_on(port: u16, extra: &[&str]) -> Portal {
        let dir = crate::repo_root().join("target/e2e").join(crate::rand_id("portal-"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = Portal {
            child: None,
            port,
            issuer: format!("http://127.0.0.1:{port}"),
            db: dir.join("portal.db"),
            args: extra.iter().map(|s| s.to_string()).collect(),
            db_url: None,
        };
        p.spawn();
        p
    }

    /// Start one replica of a deployment on `port`: on the shared database `db_url` (Postgres),
    /// under the issuer every replica of the deployment shares.
    pub fn start_replica(port: u16, db_url: &str, issuer: &str, extra: &[&str]) -> Portal {
        let dir = crate::repo_root().join("target/e2e").join(crate::rand_id("replica-"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut p = Portal {
            child: None,
            port,
            issuer: issuer.to_owned(),
            db: dir.join("portal.db"),
            args: extra.iter().map(|s| s.to_string()).collect(),
            db_url: Some(db_url.to_owned()),
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.db.with_extension("log")).unwrap();
        let mut cmd = Command::new(portal_bin());
        let db: std::ffi::OsString = match &self.db_url {
            Some(url) => url.into(),
            None => self.db.clone().into(),
        };
        cmd.arg("serve")
            .arg("--db")
            .arg(db)
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--issuer",
                &self.issuer,
                "--operator-token",
                OPERATOR_TOKEN,
                "--gateway-credential",
                GATEWAY_CREDENTIAL,
                "--gateway-audience",
                GATEWAY_AUDIENCE,
            ])
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = crate::spawn(cmd).unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        assert!(line.starts_with("listening on"), "portal did not start: {line:?}\n{}", self.logs());
        self.child = Some(child);
    }

    /// The portal's log.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.db.with_extension("log")).unwrap_or_default()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and database.
    pub fn restart(&mut self) {
        self.kill9();
        let start = Instant::now();
        loop {
            if std::net::TcpListener::bind(("127.0.0.1", self.port)).is_ok() || start.elapsed() > Duration::from_secs(5)
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.spawn();
    }

    /// An operator call.
    pub fn op(&self, method: &str, path: &str, body: Option<Value>) -> Response {
        let mut r = Req::new(method, path)
            .header("Host", &format!("127.0.0.1:{}", self.port))
            .header("Authorization", &format!("Bearer {OPERATOR_TOKEN}"));
        if let Some(b) = body {
            r = r.header("Content-Type", "application/json").body(b.to_string());
        } else if method == "POST" {
            r = r.header("Content-Type", "application/json").body("{}");
        }
        r.send(self.port)
    }

    /// Create a Mission over `https://api.partner.example/v1` (prefix) with these actions; returns its id.
    pub fn create_mission(&self, actions: &[&str], expires_in: i64) -> String {
        let r = self.op("POST", "/operator/missions", Some(json!({
            "intent": { "goal": "Reconcile invoices", "resources": ["https://api.partner.example"],
                        "expires_at": missiongate_wire::time::format_rfc3339(crate::now() + expires_in) },
            "authorization_details": [{ "type": "mission_resource_access", "resource": "https://api.partner.example/v1",
                                        "resource_match": "prefix", "actions": actions }],
            "client_id": "agent-7"
        })));
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_owned()
    }

    /// A lifecycle call; returns the status.
    pub fn lifecycle(&self, id: &str, verb: &str) -> Response {
        self.op("POST", &format!("/operator/missions/{id}/{verb}"), None)
    }

    /// Mint a token (optionally DPoP-bound).
    pub fn token(&self, id: &str, jkt: Option<&str>) -> String {
        let body = jkt.map(|j| json!({ "dpop_jkt": j }));
        let r = self.op("POST", &format!("/operator/missions/{id}/token"), body);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["access_token"].as_str().unwrap().to_owned()
    }

    /// Submit an Access Request for a 511 captive document, as an agent does: echo the denial, with
    /// an `Idempotency-Key`, optional parameters (operation-level) and a justification.
    pub fn request_access(&self, doc: &Value, key: &str, parameters: Option<Value>, justification: &str) -> Response {
        let ctx = &doc["access-request"]["context"];
        let hint = &ctx["access_request"];
        let mut body = json!({
            "denial": { "evaluation_id": ctx["evaluation_id"], "binding_token": hint["binding_token"], "expires_at": hint["expires_at"] },
            "justification": justification,
        });
        if let Some(p) = parameters {
            body["parameters"] = p;
        }
        Req::new("POST", &crate::http::path_of(hint["endpoint"].as_str().unwrap_or("/")))
            .header("Host", &format!("127.0.0.1:{}", self.port))
            .header("Idempotency-Key", key)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send(self.port)
    }

    /// A person approves an access request for `seconds` (the approver API; the page does the same).
    pub fn approve_request(&self, task: &str, seconds: u64) -> Response {
        self.op(
            "POST",
            &format!("/operator/access-requests/{task}/approve"),
            Some(json!({ "duration_seconds": seconds })),
        )
    }

    /// An active Mission with a Bearer token.
    pub fn active(&self, actions: &[&str]) -> (String, String) {
        let id = self.create_mission(actions, 3600);
        assert_eq!(self.lifecycle(&id, "approve").status, 200);
        let t = self.token(&id, None);
        (id, t)
    }
}

impl Drop for Portal {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
