//! Runs the real `captive-portal` binary on a real SQLite file (launched by the test kit), and
//! drives it over HTTP.

use missiongate_testkit::portal::{PortalCmd, PortalProcess};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

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
    process: PortalProcess,
    /// Port (stable across restarts).
    pub port: u16,
    /// Issuer URL.
    pub issuer: String,
    /// Database file.
    pub db: PathBuf,
}

impl Portal {
    /// Start on a fresh database in a fresh directory.
    pub fn start(extra: &[&str]) -> Portal {
        Portal::start_on(crate::free_port(), extra)
    }

    /// Start on a given port, on a fresh database.
    pub fn start_on(port: u16, extra: &[&str]) -> Portal {
        let db = fresh_dir("portal-").join("portal.db");
        Portal::launch(port, db.clone().into(), db, format!("http://127.0.0.1:{port}"), extra)
    }

    /// Start one replica of a deployment on `port`: on the shared database `db_url` (Postgres),
    /// under the issuer every replica of the deployment shares.
    pub fn start_replica(port: u16, db_url: &str, issuer: &str, extra: &[&str]) -> Portal {
        let db = fresh_dir("replica-").join("portal.db");
        Portal::launch(port, db_url.into(), db, issuer.to_owned(), extra)
    }

    /// Start on `db_arg` (a SQLite file or a Postgres URL), logging next to `db`.
    fn launch(port: u16, db_arg: std::ffi::OsString, db: PathBuf, issuer: String, extra: &[&str]) -> Portal {
        let log = db.with_extension("log");
        let started = PortalCmd::new(portal_bin(), db_arg)
            .port(port)
            .issuer(&issuer)
            .operator_token(OPERATOR_TOKEN)
            .gateway(GATEWAY_CREDENTIAL, GATEWAY_AUDIENCE)
            .args(extra)
            .log(&log)
            .ready_within(Duration::from_secs(30))
            .start();
        match started {
            Ok(process) => Portal { process, port, issuer, db },
            Err(e) => panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()),
        }
    }

    /// The portal's log.
    pub fn logs(&self) -> String {
        self.process.logs()
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Start again on the same port and database.
    pub fn restart(&mut self) {
        if let Err(e) = self.process.restart() {
            panic!("{e}\n{}", self.logs());
        }
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

/// A fresh directory under `target/e2e`.
fn fresh_dir(prefix: &str) -> PathBuf {
    let dir = crate::repo_root().join("target/e2e").join(crate::rand_id(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
