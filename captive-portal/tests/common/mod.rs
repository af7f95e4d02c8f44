//! Shared harness of the access tests: the real `captive-portal` binary on a real SQLite file,
//! driven over real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

/// The test kit's Postgres server (`MISSIONGATE_TEST_DB=postgres` runs these tests against it).
pub use missiongate_testkit::postgres;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use missiongate_testkit::portal::{PortalCmd, PortalProcess};
use missiongate_wire::time::format_rfc3339;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_captive-portal");
pub const OP: &str = "test-operator-token-0123456789abcdef";
pub const ISS: &str = "https://as.test";
pub const APPROVER: &str = "alice";
pub const APPROVER_TOKEN: &str = "alice-approver-token-0123456789";
pub const AGENT: &str = "agent-7";
pub const PARTNER: &str = "https://api.partner.example";
pub const PAYMENTS: &str = "https://api.partner.example/v1/payments";
pub const URN: &str = "urn:openid:authzen:access-request:error:";
/// The gateway credential every test portal is configured with.
pub const GW: &str = "test-gateway-credential-0123456789";
/// The gateway audience every test portal is configured with.
pub const GW_AUD: &str = "https://gateway.missiongate.local";

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn temp_db() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("portal.db");
    (dir, db)
}

/// A read-only view of the database a test portal uses (the SQLite file, or its Postgres database).
pub async fn db_pool(db: &Path) -> sqlx::AnyPool {
    sqlx::any::install_default_drivers();
    let url = if postgres::postgres_selected() {
        postgres::url_for_path(db)
    } else {
        format!("sqlite://{}?mode=ro", db.display())
    };
    sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&url).await.unwrap()
}

/// Rows of each of `tables`, and the pending access tasks (`pending`), in the database a test
/// portal uses.
pub async fn row_counts(db: &Path, tables: &[&str]) -> std::collections::HashMap<String, i64> {
    let pool = db_pool(db).await;
    let mut out = std::collections::HashMap::new();
    for t in tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}")).fetch_one(&pool).await.unwrap();
        out.insert((*t).to_owned(), n);
    }
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM access_tasks WHERE status = 'pending'")
        .fetch_one(&pool)
        .await
        .unwrap();
    out.insert("pending".to_owned(), pending);
    pool.close().await;
    out
}

pub struct Portal {
    /// The process, launched by the test kit.
    pub process: PortalProcess,
    pub url: String,
    /// The public base URL the portal puts in the URLs it hands out.
    pub public: String,
    pub http: reqwest::Client,
}

impl Portal {
    /// Start with `--approver alice:...` and `extra` arguments; the public URL is the issuer.
    pub async fn start(db: &Path, extra: &[&str]) -> Portal {
        Self::try_start(db, "127.0.0.1:0", None, extra).await.expect("portal starts")
    }

    pub async fn try_start(db: &Path, listen: &str, public: Option<&str>, extra: &[&str]) -> Result<Portal, String> {
        let log = db.with_extension(format!("log{}", now()));
        Self::try_start_db(&postgres::db_arg(db), &log, listen, public, extra).await
    }

    /// Start on the database `db_arg` (a SQLite path or a Postgres URL), logging to `log`.
    pub async fn try_start_db(
        db_arg: &std::ffi::OsStr,
        log: &Path,
        listen: &str,
        public: Option<&str>,
        extra: &[&str],
    ) -> Result<Portal, String> {
        let approver = format!("{APPROVER}:{APPROVER_TOKEN}");
        let mut cmd = PortalCmd::new(BIN, db_arg)
            .listen(listen)
            .issuer(ISS)
            .operator_token(OP)
            .gateway(GW, GW_AUD)
            .args(["--approver", &approver]);
        if let Some(p) = public {
            cmd = cmd.args(["--public-url", p]);
        }
        let cmd = cmd
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("MISSIONGATE_APPROVERS")
            .env_remove("MISSIONGATE_GATEWAY_CREDENTIALS")
            .log(log)
            .ready_within(Duration::from_secs(20));
        let process = start(cmd).await?;
        let url = process.url.clone();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Ok(Portal { process, url, public: public.unwrap_or(ISS).to_string(), http })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A URL the portal handed out (under its public URL), made reachable.
    pub fn local(&self, public_url: &str) -> String {
        let rest = public_url
            .strip_prefix(&self.public)
            .unwrap_or_else(|| panic!("{public_url} is not under {}", self.public));
        self.url(rest)
    }

    pub async fn op(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(OP);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// An active Mission of `agent-7` (api.partner.example GET only, erp.example.com).
    pub async fn active_mission(&self) -> Value {
        let body = json!({
            "intent": {"goal": "Pay the Q3 partner invoices <b>on time</b>",
                       "resources": ["https://erp.example.com", "https://api.partner.example/v1"],
                       "expires_at": format_rfc3339(now() + 3600)},
            "authorization_details": [
                {"type": "mission_resource_access", "resource": "https://erp.example.com", "actions": ["invoices.read"]},
                {"type": "mission_resource_access", "resource": "https://api.partner.example/v1",
                 "resource_match": "prefix", "actions": ["http.get"]}
            ],
            "client_id": AGENT
        });
        let (status, m) = self.op(reqwest::Method::POST, "/operator/missions", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{m}");
        let (status, v) = self
            .op(reqwest::Method::POST, &format!("/operator/missions/{}/approve", m["id"].as_str().unwrap()), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        m
    }

    /// `POST` JSON; the gateway's evaluation endpoints get the gateway credential.
    pub async fn post_json(&self, path: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.http.post(self.url(path)).json(body);
        if path.starts_with("/access/v1/evaluation") {
            req = req.bearer_auth(GW);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn evaluate(&self, body: &Value) -> Value {
        let (status, _, v) = self.post_json("/access/v1/evaluation", body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v
    }

    /// `POST /access/v1/requests` with an Idempotency-Key.
    pub async fn submit(&self, key: Option<&str>, body: &Value) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.http.post(self.url("/access/v1/requests")).json(body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap_or(Value::Null))
    }

    /// `POST /access/v1/requests` with body bytes as given (JSON that `serde_json::Value` cannot carry).
    pub async fn submit_raw(&self, key: Option<&str>, body: &[u8]) -> (StatusCode, HeaderMap, Value) {
        let mut req = self
            .http
            .post(self.url("/access/v1/requests"))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, url: &str) -> (StatusCode, HeaderMap, Value) {
        let resp = self.http.get(url).send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn kill9(mut self) {
        self.process.kill9();
    }
}

/// Start a portal off the async runtime (the launcher waits for its `listening on` line), so the
/// test's other tasks keep running meanwhile.
pub async fn start(cmd: PortalCmd) -> Result<PortalProcess, String> {
    tokio::task::spawn_blocking(move || cmd.start()).await.map_err(|e| e.to_string())?
}

/// The evaluation request the filter sends (SPEC §4).
pub fn eval_req(mission: &Value, resource: &str, action: &str, digest: Option<&str>) -> Value {
    let props = match digest {
        Some(d) => json!({"parameter_digest": d}),
        None => json!({}),
    };
    json!({
        "subject": {"type": "agent", "id": AGENT, "properties": {"sub": AGENT, "iss": ISS}},
        "resource": {"type": "egress", "id": resource},
        "action": {"name": action, "properties": props},
        "context": {"mission": {"id": mission["id"], "issuer": ISS, "authority_hash": mission["authority_hash"]}}
    })
}

/// SPEC §6 vector V2's shape: the payment, its parameter object (version 2) and digest, computed
/// from the bytes the agent would send, as the filter does.
pub fn payment(amount: &str, memo: &str) -> (Value, String) {
    let body = json!({"amount": amount, "currency": "USD", "to": "acct_123", "memo": memo});
    let bytes = serde_json::to_vec(&body).unwrap();
    let (digest, _) = missiongate_wire::digest::parameter_digest(
        "POST",
        PAYMENTS,
        None,
        Some((Some("application/json; charset=utf-8"), &bytes)),
    )
    .unwrap();
    (json!({"method": "POST", "target": PAYMENTS, "content_type": "application/json", "body": body}), digest)
}

/// SPEC §6 vector V7's shape: a text/plain upload, bound by the hash of its bytes only.
pub fn upload(bytes: &[u8]) -> (Value, String) {
    let target = format!("{PARTNER}/upload");
    let (digest, _) =
        missiongate_wire::digest::parameter_digest("POST", &target, None, Some((Some("text/plain"), bytes))).unwrap();
    let params = json!({"method": "POST", "target": target, "content_type": "text/plain",
                        "body_sha256": missiongate_wire::digest::sha256_b64(bytes)});
    (params, digest)
}

/// A submission body echoing a denial's hint.
pub fn submission(denial: &Value, justification: &str, parameters: Option<&Value>) -> Value {
    let hint = &denial["context"]["access_request"];
    let mut body = json!({
        "denial": {"evaluation_id": denial["context"]["evaluation_id"], "binding_token": hint["binding_token"],
                   "expires_at": hint["expires_at"]},
        "justification": justification,
    });
    if let Some(p) = parameters {
        body["parameters"] = p.clone();
    }
    body
}

pub fn assert_problem(status: StatusCode, headers: &HeaderMap, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(headers["content-type"], "application/problem+json", "{body}");
    assert_eq!(body["type"], format!("{URN}{code}"), "{body}");
    assert_eq!(body["status"], want_status);
}

/// `name=value` of a `Set-Cookie` header named `name`.
pub fn set_cookie(headers: &HeaderMap, name: &str) -> Option<(String, String)> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let pair = v.split(';').next().unwrap().to_string();
            (pair, v.to_string())
        })
}

/// The value of the first hidden input `name` in a page.
pub fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_string())
}

/// Sign in as `token` through the login form; returns the session cookie pair and the session's CSRF
/// token (read from the list page).
pub async fn sign_in(p: &Portal, token: &str) -> Result<(String, String), StatusCode> {
    let resp = p.http.get(p.url("/portal/login?next=/portal")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let login_name = if p.public.starts_with("https://") { "__Host-mg_login" } else { "mg_login" };
    let (login_cookie, _) = set_cookie(resp.headers(), login_name).expect("login cookie");
    let html = resp.text().await.unwrap();
    let csrf = hidden(&html, "csrf").unwrap();
    let resp = p
        .http
        .post(p.url("/portal/login"))
        .header("cookie", &login_cookie)
        .form(&[("csrf", csrf.as_str()), ("token", token), ("next", "/portal")])
        .send()
        .await
        .unwrap();
    if resp.status() != StatusCode::SEE_OTHER {
        return Err(resp.status());
    }
    let session_name = if p.public.starts_with("https://") { "__Host-mg_session" } else { "mg_session" };
    let (session, raw) = set_cookie(resp.headers(), session_name).expect("session cookie");
    assert!(raw.contains("HttpOnly") && raw.contains("SameSite=Strict"), "{raw}");
    let html = p.http.get(p.url("/portal")).header("cookie", &session).send().await.unwrap().text().await.unwrap();
    let csrf = hidden(&html, "csrf").expect("session csrf on the page");
    Ok((session, csrf))
}
