//! Agent-side client for missiongate, for `reqwest`.
//!
//! [`Client`] wraps a `reqwest::Client`. On a requestable denial (a `511` with an
//! `application/captive+json` document, SPEC section 4, or an MCP JSON-RPC `-32042` error carrying
//! `data.access_request`, section 7) it submits one access request (with an `Idempotency-Key`),
//! polls the task honouring `Retry-After` within a bounded total wait, and sends the call again once
//! a person approved it. Otherwise it returns a typed [`Error`]: `Denied`, `Expired`, `Cancelled`,
//! `Failed`, `TimedOut`, `Rejected`. The `user-portal-url` is logged (`tracing`, target
//! `missiongate_client`) for the person and never opened. One access request per denial: a caller
//! that retries the same refused call resumes the same task.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// The captive-portal denial's media type.
pub const CAPTIVE_CONTENT_TYPE: &str = "application/captive+json";
/// MCP URL-elicitation-required error code (MCP 2025-11-25).
pub const URL_ELICITATION_REQUIRED: i64 = -32042;

/// A requestable denial: the AuthZEN access-request document and where to request access.
#[derive(Debug, Clone)]
pub struct Denial {
    /// The PDP's evaluation id (the key of "one access request per denial").
    pub evaluation_id: String,
    /// The access-request document.
    pub access_request: Value,
    /// The Access Request endpoint.
    pub endpoint: String,
    /// The PDP's binding token, echoed.
    pub binding_token: String,
    /// The hint's expiry, echoed.
    pub expires_at: String,
    /// The page for the person (never opened by the client).
    pub user_portal_url: Option<String>,
    /// From an MCP `-32042` error (else a 511).
    pub mcp: bool,
}

impl Denial {
    fn resource_id(&self) -> &str {
        self.access_request.pointer("/resource/id").and_then(Value::as_str).unwrap_or("")
    }
    fn parameter_digest(&self) -> Option<&str> {
        self.access_request.pointer("/action/properties/parameter_digest").and_then(Value::as_str)
    }
}

fn denial_from_document(ar: &Value, url: Option<&Value>, mcp: bool) -> Option<Denial> {
    let s = |p: &str| ar.pointer(p).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
    Some(Denial {
        evaluation_id: s("/context/evaluation_id")?,
        endpoint: s("/context/access_request/endpoint")?,
        binding_token: s("/context/access_request/binding_token")?,
        expires_at: s("/context/access_request/expires_at")?,
        access_request: ar.clone(),
        user_portal_url: url.and_then(Value::as_str).map(str::to_owned),
        mcp,
    })
}

/// The denial in a `511` captive document, if it is one.
pub fn denial_from_captive(status: u16, content_type: Option<&str>, body: &[u8]) -> Option<Denial> {
    if status != 511 || essence(content_type).as_deref() != Some(CAPTIVE_CONTENT_TYPE) {
        return None;
    }
    let doc: Value = serde_json::from_slice(body).ok()?;
    if doc.get("captive") != Some(&Value::Bool(true)) {
        return None;
    }
    denial_from_document(doc.get("access-request")?, doc.get("user-portal-url"), false)
}

/// The denial in an MCP JSON-RPC `-32042` error with `data.access_request`, if it is one.
pub fn denial_from_jsonrpc(status: u16, content_type: Option<&str>, body: &[u8]) -> Option<Denial> {
    if status != 200 || essence(content_type).as_deref() != Some("application/json") {
        return None;
    }
    let doc: Value = serde_json::from_slice(body).ok()?;
    let err = doc.get("error")?;
    if err.get("code").and_then(Value::as_i64) != Some(URL_ELICITATION_REQUIRED) {
        return None;
    }
    let data = err.get("data")?;
    denial_from_document(data.get("access_request")?, data.pointer("/elicitations/0/url"), true)
}

fn essence(ct: Option<&str>) -> Option<String> {
    ct.and_then(missiongate_wire::digest::media_type_essence)
}

fn is_jsonrpc_request(method: &reqwest::Method, content_type: Option<&str>, body: &[u8]) -> bool {
    if method != reqwest::Method::POST || essence(content_type).as_deref() != Some("application/json") {
        return false;
    }
    serde_json::from_slice::<Value>(body)
        .ok()
        .is_some_and(|v| v.get("jsonrpc").and_then(Value::as_str) == Some("2.0") && v.get("method").is_some())
}

/// The parameter object for a denial bound to a `parameter_digest` (SPEC section 6, or the MCP Tool
/// Call Profile of section 7); `None` when the denial binds no parameters.
pub fn parameter_object(denial: &Denial, req: &reqwest::Request, bound_headers: &[String]) -> Option<Value> {
    denial.parameter_digest()?;
    let url = req.url();
    let mut target = format!("{}{}", denial.resource_id(), url.path());
    if let Some(q) = url.query() {
        target.push('?');
        target.push_str(q);
    }
    let body = req.body().and_then(reqwest::Body::as_bytes).unwrap_or_default();
    if denial.mcp {
        let call: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let args = call.pointer("/params/arguments").filter(|a| a.is_object()).cloned().unwrap_or_else(|| json!({}));
        return Some(json!({
            "target": target, "mcp_method": call.get("method"), "tool": call.pointer("/params/name"), "arguments": args,
        }));
    }
    let mut obj = Map::new();
    obj.insert("method".into(), json!(req.method().as_str().to_ascii_uppercase()));
    obj.insert("target".into(), json!(target));
    let mut headers = Map::new();
    for name in bound_headers {
        if let Some(v) = req.headers().get(name.as_str()).and_then(|v| v.to_str().ok()) {
            headers.insert(name.to_ascii_lowercase(), json!(v));
        }
    }
    if !headers.is_empty() {
        obj.insert("headers".into(), Value::Object(headers));
    }
    if !body.is_empty() {
        let ct = req.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let ct = essence(ct).unwrap_or_else(|| "application/octet-stream".into());
        if missiongate_wire::digest::is_json_media_type(&ct) {
            obj.insert("body".into(), serde_json::from_slice(body).unwrap_or(Value::Null));
        } else {
            let h = <sha2::Sha256 as sha2::Digest>::digest(body);
            obj.insert("body_sha256".into(), json!(missiongate_wire::b64::encode(h)));
        }
        obj.insert("content_type".into(), json!(ct));
    }
    Some(Value::Object(obj))
}

/// `Retry-After`: delta-seconds or an HTTP-date.
pub fn retry_after(value: Option<&str>) -> Option<Duration> {
    let v = value?.trim();
    if let Ok(n) = v.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(SystemTime::now()).unwrap_or_default())
}

/// What the status hook receives: after the submission and after every poll.
#[derive(Debug, Clone)]
pub struct TaskUpdate {
    /// Task id.
    pub task_id: String,
    /// `pending`, `approved`, `denied`, `expired`, `cancelled`, `failed`.
    pub status: String,
    /// The denial's evaluation id.
    pub evaluation_id: String,
    /// The person's page.
    pub user_portal_url: Option<String>,
    /// What the service asked to wait before the next poll (while pending).
    pub retry_after: Option<Duration>,
    /// The decision's reason, if any.
    pub reason: Option<String>,
}

/// Where an access request ended, for the typed errors.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Task id (none if nothing was submitted).
    pub task_id: Option<String>,
    /// The denial's evaluation id.
    pub evaluation_id: String,
    /// Last known task status.
    pub status: String,
    /// The decision's reason, if any.
    pub reason: Option<String>,
    /// The person's page.
    pub user_portal_url: Option<String>,
    /// The service's problem document, if it refused the submission.
    pub problem: Option<Value>,
}

/// Errors.
#[derive(Debug)]
pub enum Error {
    /// A person denied the access request.
    Denied(Box<Outcome>),
    /// The access request (or its denial) expired before a decision.
    Expired(Box<Outcome>),
    /// The access request was cancelled.
    Cancelled(Box<Outcome>),
    /// The service reports the task as failed.
    Failed(Box<Outcome>),
    /// No decision within the bound; the task stays pending and a retry resumes it.
    TimedOut(Box<Outcome>),
    /// The service refused the submission (problem+json in `problem`).
    Rejected(Box<Outcome>),
    /// The request's body is a stream, so the call cannot be sent again.
    NotRepeatable,
    /// Transport error of the call itself.
    Http(reqwest::Error),
}

impl Error {
    /// The access request's outcome, for the access-request errors.
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            Error::Denied(o)
            | Error::Expired(o)
            | Error::Cancelled(o)
            | Error::Failed(o)
            | Error::TimedOut(o)
            | Error::Rejected(o) => Some(o),
            Error::NotRepeatable | Error::Http(_) => None,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self {
            Error::Denied(_) => "denied",
            Error::Expired(_) => "expired",
            Error::Cancelled(_) => "cancelled",
            Error::Failed(_) => "failed",
            Error::TimedOut(_) => "not decided in time",
            Error::Rejected(_) => "refused by the access request service",
            Error::NotRepeatable => return f.write_str("the request body is a stream; it cannot be sent again"),
            Error::Http(e) => return write!(f, "{e}"),
        };
        let o = self.outcome();
        write!(f, "access request {} {what}", o.and_then(|o| o.task_id.as_deref()).unwrap_or("(none)"))?;
        if let Some(r) = o.and_then(|o| o.reason.as_deref()) {
            write!(f, ": {r}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Self {
        Error::Http(e)
    }
}

/// The status hook.
pub type OnStatus = Arc<dyn Fn(&TaskUpdate) + Send + Sync>;

/// Options.
#[derive(Clone)]
pub struct Options {
    /// Justification sent with the access request.
    pub justification: Option<String>,
    /// Longest total wait for a decision, per call.
    pub max_wait: Duration,
    /// Called after the submission and after every poll.
    pub on_status: Option<OnStatus>,
    /// Effect-bearing header names the deployment binds (SPEC section 6).
    pub bound_headers: Vec<String>,
    /// Recognise MCP `-32042` errors in JSON answers to JSON-RPC calls.
    pub mcp: bool,
    /// Poll interval when the service gives no `Retry-After`.
    pub default_poll_interval: Duration,
    /// After an approval, resend at most this many times while the gateway still answers from its
    /// short denial memory (a refused call never reached the destination).
    pub approved_resends: u32,
    /// Delay between those resends.
    pub approved_resend_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            justification: None,
            max_wait: Duration::from_secs(300),
            on_status: None,
            bound_headers: Vec::new(),
            mcp: true,
            default_poll_interval: Duration::from_secs(2),
            approved_resends: 3,
            approved_resend_delay: Duration::from_millis(1100),
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options").field("max_wait", &self.max_wait).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
enum Final {
    Denied,
    Expired,
    Cancelled,
    Failed,
}

/// One denial and the one access request made for it.
#[derive(Debug, Clone)]
struct Entry {
    denial: Denial,
    key: String,
    body: Vec<u8>,
    task_id: Option<String>,
    status_endpoint: Option<String>,
    status: String,
    reason: Option<String>,
    retry_after: Option<Duration>,
    next_poll: Instant,
    fin: Option<Final>,
}

impl Entry {
    fn outcome(&self, problem: Option<Value>) -> Box<Outcome> {
        Box::new(Outcome {
            task_id: self.task_id.clone(),
            evaluation_id: self.denial.evaluation_id.clone(),
            status: self.status.clone(),
            reason: self.reason.clone(),
            user_portal_url: self.denial.user_portal_url.clone(),
            problem,
        })
    }
}

/// A `reqwest` client that turns requestable denials into access requests.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    portal: reqwest::Client,
    options: Options,
    entries: Arc<Mutex<HashMap<String, Entry>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("options", &self.options).finish_non_exhaustive()
    }
}

fn random_key() -> String {
    let mut b = [0u8; 18];
    if getrandom::getrandom(&mut b).is_err() {
        // No OS randomness: a time-based key is still unique enough for one process's retries.
        let n = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        b[..16].copy_from_slice(&n.to_le_bytes());
    }
    format!("mg-{}", missiongate_wire::b64::encode(b))
}

impl Client {
    /// Wrap `http` (configure its proxy to be the gateway). The Access Request Service is called with
    /// a plain `reqwest::Client`: the agent's headers (its token) never go there.
    pub fn new(http: reqwest::Client, options: Options) -> Client {
        Client::with_portal(http, reqwest::Client::new(), options)
    }

    /// Like [`Client::new`], with the client used for the Access Request Service.
    pub fn with_portal(http: reqwest::Client, portal: reqwest::Client, options: Options) -> Client {
        Client { http, portal, options, entries: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// The wrapped client, to build requests with (`client.inner().get(url)`).
    pub fn inner(&self) -> &reqwest::Client {
        &self.http
    }

    /// Forget a denial, so that its next refusal asks again.
    pub fn forget(&self, evaluation_id: &str) {
        if let Ok(mut m) = self.entries.lock() {
            m.remove(evaluation_id);
        }
    }

    /// Build and execute `builder` (made from any reqwest client; it is sent with that client).
    pub async fn send(&self, builder: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        let (client, req) = builder.build_split();
        self.run(&client, req?, None).await
    }

    /// Like [`Client::send`], with a bound on the total wait for this call.
    pub async fn send_within(
        &self,
        builder: reqwest::RequestBuilder,
        max_wait: Duration,
    ) -> Result<reqwest::Response, Error> {
        let (client, req) = builder.build_split();
        self.run(&client, req?, Some(max_wait)).await
    }

    /// Execute a built request with the wrapped client.
    pub async fn execute(&self, req: reqwest::Request) -> Result<reqwest::Response, Error> {
        let http = self.http.clone();
        self.run(&http, req, None).await
    }

    async fn once(
        &self,
        client: &reqwest::Client,
        req: &reqwest::Request,
    ) -> Result<(reqwest::Response, Option<Denial>), Error> {
        let attempt = req.try_clone().ok_or(Error::NotRepeatable)?;
        let resp = client.execute(attempt).await?;
        let ct = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let status = resp.status().as_u16();
        let captive = status == 511 && essence(ct.as_deref()).as_deref() == Some(CAPTIVE_CONTENT_TYPE);
        let body = req.body().and_then(reqwest::Body::as_bytes).unwrap_or_default();
        let req_ct = req.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let rpc = self.options.mcp
            && status == 200
            && essence(ct.as_deref()).as_deref() == Some("application/json")
            && is_jsonrpc_request(req.method(), req_ct, body);
        if !captive && !rpc {
            return Ok((resp, None));
        }
        let version = resp.version();
        let headers = resp.headers().clone();
        let bytes: Bytes = resp.bytes().await?;
        let denial = if captive {
            denial_from_captive(status, ct.as_deref(), &bytes)
        } else {
            denial_from_jsonrpc(status, ct.as_deref(), &bytes)
        };
        let mut rebuilt = http::Response::new(bytes);
        *rebuilt.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
        *rebuilt.version_mut() = version;
        *rebuilt.headers_mut() = headers;
        Ok((reqwest::Response::from(rebuilt), denial))
    }

    fn entry(&self, denial: &Denial, req: &reqwest::Request) -> Entry {
        let Ok(mut m) = self.entries.lock() else {
            return self.new_entry(denial, req);
        };
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
        let now = i64::try_from(now).unwrap_or(i64::MAX);
        // A refusal is remembered while its denial's hint lives (a retry would get the same denial).
        m.retain(|_, e| {
            e.fin.is_none() || missiongate_wire::time::parse_rfc3339(&e.denial.expires_at).is_some_and(|t| t > now)
        });
        m.entry(denial.evaluation_id.clone()).or_insert_with(|| self.new_entry(denial, req)).clone()
    }

    fn new_entry(&self, denial: &Denial, req: &reqwest::Request) -> Entry {
        let mut body = json!({"denial": {
            "evaluation_id": denial.evaluation_id, "binding_token": denial.binding_token, "expires_at": denial.expires_at,
        }});
        if let Some(j) = &self.options.justification {
            body["justification"] = json!(j);
        }
        if let Some(p) = parameter_object(denial, req, &self.options.bound_headers) {
            body["parameters"] = p;
        }
        Entry {
            denial: denial.clone(),
            key: random_key(),
            body: serde_json::to_vec(&body).unwrap_or_default(),
            task_id: None,
            status_endpoint: None,
            status: "new".into(),
            reason: None,
            retry_after: None,
            next_poll: Instant::now(),
            fin: None,
        }
    }

    fn store(&self, e: &Entry) {
        if let Ok(mut m) = self.entries.lock() {
            m.insert(e.denial.evaluation_id.clone(), e.clone());
        }
    }

    fn notify(&self, e: &Entry) {
        if let (Some(hook), Some(task_id)) = (&self.options.on_status, &e.task_id) {
            hook(&TaskUpdate {
                task_id: task_id.clone(),
                status: e.status.clone(),
                evaluation_id: e.denial.evaluation_id.clone(),
                user_portal_url: e.denial.user_portal_url.clone(),
                retry_after: if e.status == "pending" { e.retry_after } else { None },
                reason: e.reason.clone(),
            });
        }
    }

    fn take(e: &mut Entry, task: &Value, retry_after: Option<Duration>) {
        e.task_id = task.get("id").and_then(Value::as_str).map(str::to_owned);
        e.status = task.get("status").and_then(Value::as_str).unwrap_or("pending").to_owned();
        if let Some(s) = task.get("status_endpoint").and_then(Value::as_str) {
            e.status_endpoint = Some(s.to_owned());
        } else if e.status_endpoint.is_none() {
            e.status_endpoint =
                Some(format!("{}/{}", e.denial.endpoint.trim_end_matches('/'), e.task_id.as_deref().unwrap_or("")));
        }
        e.reason = task.get("reason").and_then(Value::as_str).map(str::to_owned);
        e.retry_after = retry_after;
        let now = Instant::now();
        e.next_poll = now.checked_add(retry_after.unwrap_or_default()).unwrap_or(now);
    }

    async fn run(
        &self,
        client: &reqwest::Client,
        req: reqwest::Request,
        max_wait: Option<Duration>,
    ) -> Result<reqwest::Response, Error> {
        let (resp, denial) = self.once(client, &req).await?;
        let Some(denial) = denial else { return Ok(resp) };
        // A wait too long to represent (say, Duration::MAX) is as good as no bound: a year.
        let wait = max_wait.unwrap_or(self.options.max_wait);
        let now = Instant::now();
        let deadline = now.checked_add(wait).unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600));
        let mut e = self.entry(&denial, &req);
        match e.fin {
            Some(Final::Denied) => return Err(Error::Denied(e.outcome(None))),
            Some(Final::Expired) => return Err(Error::Expired(e.outcome(None))),
            Some(Final::Cancelled) => return Err(Error::Cancelled(e.outcome(None))),
            Some(Final::Failed) => return Err(Error::Failed(e.outcome(None))),
            None => {}
        }
        if e.task_id.is_none() {
            self.submit(&mut e, deadline).await?;
            tracing::warn!(
                target: "missiongate_client",
                task = e.task_id.as_deref().unwrap_or(""),
                "{} on {} ({} {}) is outside the agent's Mission; access request {} awaits a person's decision at {}",
                denial.access_request.pointer("/action/name").and_then(serde_json::Value::as_str).unwrap_or("?"),
                denial.resource_id(),
                req.method(),
                req.url(),
                e.task_id.as_deref().unwrap_or(""),
                denial.user_portal_url.as_deref().unwrap_or("(no user-portal-url given)")
            );
            self.store(&e);
            self.notify(&e);
        }
        self.wait(&mut e, deadline).await?;
        self.forget(&denial.evaluation_id);
        let mut last = resp;
        for _ in 0..self.options.approved_resends {
            let (resp, again) = self.once(client, &req).await?;
            if again.is_none_or(|a| a.evaluation_id != denial.evaluation_id) {
                return Ok(resp);
            }
            last = resp;
            if Instant::now().checked_add(self.options.approved_resend_delay).is_none_or(|t| t > deadline) {
                break;
            }
            tokio::time::sleep(self.options.approved_resend_delay).await;
        }
        tracing::warn!(target: "missiongate_client", "access request was approved but the gateway still refuses the call");
        Ok(last)
    }

    async fn submit(&self, e: &mut Entry, deadline: Instant) -> Result<(), Error> {
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let r = self
                .portal
                .post(&e.denial.endpoint)
                .header("content-type", "application/json")
                .header("accept", "application/json")
                .header("idempotency-key", &e.key)
                .body(e.body.clone())
                .send()
                .await;
            let wait = match r {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let ra = retry_after(r.headers().get("retry-after").and_then(|v| v.to_str().ok()));
                    let doc: Value = r.json().await.unwrap_or(Value::Null);
                    if (200..=202).contains(&status) && doc.pointer("/task/id").is_some_and(Value::is_string) {
                        Self::take(e, &doc["task"], None);
                        return Ok(());
                    }
                    match status {
                        429 | 503 => ra.unwrap_or(self.options.default_poll_interval),
                        410 => {
                            e.status = "expired".into();
                            return Err(Error::Expired(e.outcome(Some(doc))));
                        }
                        _ => {
                            e.status = "rejected".into();
                            self.forget(&e.denial.evaluation_id);
                            return Err(Error::Rejected(e.outcome(Some(doc))));
                        }
                    }
                }
                Err(err) => {
                    tracing::info!(target: "missiongate_client", "access request submission failed ({err}); retrying with the same key");
                    (self.options.default_poll_interval * attempt).min(Duration::from_secs(10))
                }
            };
            if Instant::now().checked_add(wait).is_none_or(|t| t > deadline) {
                e.status = "unsubmitted".into();
                self.forget(&e.denial.evaluation_id);
                return Err(Error::TimedOut(e.outcome(None)));
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn wait(&self, e: &mut Entry, deadline: Instant) -> Result<(), Error> {
        let mut failures = 0u32;
        loop {
            let fin = match e.status.as_str() {
                "approved" => return Ok(()),
                "pending" | "new" => None,
                "denied" => Some(Final::Denied),
                "expired" => Some(Final::Expired),
                "cancelled" => Some(Final::Cancelled),
                _ => Some(Final::Failed),
            };
            if let Some(fin) = fin {
                e.fin = Some(fin.clone());
                self.store(e);
                let o = e.outcome(None);
                return Err(match fin {
                    Final::Denied => Error::Denied(o),
                    Final::Expired => Error::Expired(o),
                    Final::Cancelled => Error::Cancelled(o),
                    Final::Failed => Error::Failed(o),
                });
            }
            let now = Instant::now();
            let wait = e.next_poll.saturating_duration_since(now);
            if now + wait > deadline {
                // The next poll the service allows falls after the bound; the task stays pending.
                self.store(e);
                return Err(Error::TimedOut(e.outcome(None)));
            }
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let url = e.status_endpoint.clone().unwrap_or_default();
            match self.portal.get(&url).header("accept", "application/json").send().await {
                Err(err) => {
                    failures += 1;
                    tracing::info!(target: "missiongate_client", "polling failed ({err})");
                    e.next_poll = Instant::now()
                        + self.options.default_poll_interval.saturating_mul(failures).min(Duration::from_secs(10));
                }
                Ok(r) => {
                    let status = r.status().as_u16();
                    let ra = retry_after(r.headers().get("retry-after").and_then(|v| v.to_str().ok()));
                    let doc: Value = r.json().await.unwrap_or(Value::Null);
                    if status == 200 && doc.pointer("/task/id").is_some_and(Value::is_string) {
                        failures = 0;
                        Self::take(e, &doc["task"], Some(ra.unwrap_or(self.options.default_poll_interval)));
                        self.store(e);
                        self.notify(e);
                    } else if status == 404 || status == 410 {
                        e.status = "expired".into();
                        e.reason = doc.get("detail").and_then(Value::as_str).map(str::to_owned);
                    } else {
                        failures += 1;
                        e.next_poll = Instant::now()
                            + ra.unwrap_or(
                                (self.options.default_poll_interval * failures).min(Duration::from_secs(10)),
                            );
                    }
                }
            }
        }
    }
}
