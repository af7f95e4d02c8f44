//! The PDP and Access Request Service (SPEC §4): AuthZEN Access Evaluation over the grants approvers
//! made, requestable denials with a signed `binding_token` (AuthZEN Access Request and Approval
//! Profile, "ARAP"), Access Request tasks, and the per-denial RFC 8908 document of the Captive Portal
//! Egress Profile. HTTP-agnostic; [`crate::http::access`] and [`crate::http::approver`] map it onto routes.
//!
//! # Policy
//!
//! For an evaluation `{subject, resource, action, context.mission}`:
//! 1. no `context.mission` → deny, `mission_required` (not requestable);
//! 2. a Mission of this authority that is unknown, not `active`, past `expires_at`, held by another
//!    client than `subject.id`, or whose `authority_hash` differs → deny, `mission_unknown` /
//!    `mission_inactive` / `subject_mismatch` / `authority_mismatch` (not requestable);
//! 3. a live grant for (Mission, subject id, resource, action name) that is either bound to the
//!    request's `parameter_digest` or to no digest → permit with `conditions` `valid_until` (=
//!    `approved_until`), `parameter_digest` (if bound) and `use_limit: 1` (single-use grants), and
//!    `evaluation_id` = `perm_<grant id>` (stable: the filter consumes single-use permits by it);
//! 4. otherwise → requestable denial: `reason` `approval_required` when the call carries a
//!    `parameter_digest`, else `egress_not_allowed`; `next_action: request`; the ARAP hint; and the
//!    missiongate members `captive_portal_api` and `user_portal_url`.
//!
//! A denial is stored once per bound tuple (the ARAP `binding_hash` of subject, resource, action and
//! the authorization-relevant context `{mission}`); the same blocked call evaluated again gets the same
//! denial, the same `evaluation_id` and the same URLs, its hint refreshed in place when it runs out.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use missiongate_wire::authzen::{
    AccessRequestHint, CaptiveAccessContext, CaptiveAccessRequest, CaptiveDocument, Conditions, Display,
    EvaluationRequest, EvaluationResponse, ResponseContext,
};
use missiongate_wire::digest::{parse_prefixed_digest, ParameterObject};
use missiongate_wire::time::{format_rfc3339, parse_rfc3339};
use missiongate_wire::{b64, jcs};

use crate::access_store::{
    AuditRow, CreateTask, Decided, Decision, DenialDraft, DenialRow, EnsureDenial, GrantRow, GrantTuple,
    RequesterLimits, TaskRow, TaskStatus,
};
use crate::authority::{Authority, AuthorityError, VerifyError};
use crate::store::{MissionRow, StoreError};
use crate::util::{now_secs, random_b64, sha256, RandomError};

/// JOSE `typ` of binding tokens.
pub const TYP_BINDING: &str = "access-request-binding+jwt";
/// ARAP capability.
pub const CAP_ACCESS_REQUEST: &str = "urn:openid:authzen:capability:access-request";
/// Captive Portal Egress Profile capability.
pub const CAP_CAPTIVE_EGRESS: &str = "urn:openid:authzen:capability:access-request:captive-portal-egress";
/// Prefix of the ARAP problem types.
pub const ERROR_URN_PREFIX: &str = "urn:openid:authzen:access-request:error:";
/// Longest accepted justification, in bytes.
pub const MAX_JUSTIFICATION_BYTES: usize = 4096;
/// Longest accepted denial reason written by an approver, in bytes.
pub const MAX_REASON_BYTES: usize = 1000;
/// Longest accepted identifier (subject, resource, action, mission), in bytes.
pub const MAX_ID_BYTES: usize = 2048;
/// Seconds a poller is asked to wait while a task is pending.
pub const RETRY_AFTER_SECONDS: u64 = 5;

/// An approver and the SHA-256 of their sign-in token.
#[derive(Clone)]
pub struct Approver {
    /// Name recorded in the audit trail.
    pub name: String,
    /// SHA-256 of the token.
    pub token_sha256: [u8; 32],
}

impl std::fmt::Debug for Approver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Approver").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Settings of the PDP, the Access Request Service and the portal.
#[derive(Debug, Clone)]
pub struct AccessSettings {
    /// Externally visible base URL of this service (PDP identifier; base of every URL handed out).
    pub public_url: String,
    /// A requestable-denial hint is valid this long.
    pub denial_ttl_seconds: i64,
    /// A pending task expires after this long.
    pub task_ttl_seconds: i64,
    /// A task stays retrievable this long after `expires_at`; then its handle answers 410.
    pub task_retention_seconds: i64,
    /// Default approval duration offered on the approver page.
    pub default_approval_seconds: i64,
    /// Longest approval.
    pub max_approval_seconds: i64,
    /// Most denials with a live hint per Mission; beyond, denials are not requestable.
    pub max_open_denials_per_mission: i64,
    /// Most pending access requests per requester (Mission issuer, Mission, subject).
    pub max_open_requests_per_requester: i64,
    /// Most stored Idempotency-Keys per requester.
    pub max_idempotency_keys_per_requester: i64,
    /// Ended tasks, expired denials and Idempotency-Keys are pruned this long after they ended.
    pub retention_seconds: i64,
    /// Audit records are pruned this long after they were written.
    pub audit_retention_seconds: i64,
    /// How often the pruning runs.
    pub prune_interval_seconds: i64,
    /// Who may sign in to the portal.
    pub approvers: Vec<Approver>,
}

impl AccessSettings {
    /// `POST` evaluation endpoint.
    pub fn evaluation_endpoint(&self) -> String {
        format!("{}{}", self.public_url, missiongate_wire::authzen::EVALUATION_PATH)
    }
    /// Batch endpoint.
    pub fn evaluations_endpoint(&self) -> String {
        format!("{}{}", self.public_url, missiongate_wire::authzen::EVALUATIONS_PATH)
    }
    /// Access Request endpoint (also the `aud` of binding tokens).
    pub fn requests_endpoint(&self) -> String {
        format!("{}{}", self.public_url, missiongate_wire::authzen::ACCESS_REQUESTS_PATH)
    }
    /// Status endpoint of a task.
    pub fn status_endpoint(&self, task_id: &str) -> String {
        format!("{}/{task_id}", self.requests_endpoint())
    }
    /// Per-denial Captive Portal API URL.
    pub fn captive_api(&self, denial_id: &str) -> String {
        format!("{}/captive-portal/api/d/{denial_id}", self.public_url)
    }
    /// Approver page of a denial.
    pub fn user_portal(&self, denial_id: &str) -> String {
        format!("{}/portal/d/{denial_id}", self.public_url)
    }
    /// Whether cookies must be `Secure` (the public URL is https).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

/// The `error` code of an Access Request / PDP failure: the ARAP error names, and the generic ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArCode {
    /// `invalid_request`: the request is malformed (400; 413 and 415 for the body).
    InvalidRequest,
    /// `not_requestable`: the submission carries no denial to request access for (400).
    NotRequestable,
    /// `expired_denial`: the requestable denial has expired (410).
    ExpiredDenial,
    /// `invalid_denial_binding`: the submission does not match the denial it names (400).
    InvalidDenialBinding,
    /// `duplicate_request`: the `Idempotency-Key` was used with another body (409).
    DuplicateRequest,
    /// `unknown_task`: no such task (404).
    UnknownTask,
    /// `task_expired`: the task handle has expired (410).
    TaskExpired,
    /// `invalid_task_state`: the task is not in a state that allows this (409).
    InvalidTaskState,
    /// `rate_limited`: a per-requester limit is reached (429).
    RateLimited,
    /// `unavailable`: too busy right now (503).
    Unavailable,
    /// `server_error`: an internal failure (500).
    ServerError,
}

impl ArCode {
    /// The `error` member (and the last part of the `type` URN).
    pub fn as_str(self) -> &'static str {
        match self {
            ArCode::InvalidRequest => "invalid_request",
            ArCode::NotRequestable => "not_requestable",
            ArCode::ExpiredDenial => "expired_denial",
            ArCode::InvalidDenialBinding => "invalid_denial_binding",
            ArCode::DuplicateRequest => "duplicate_request",
            ArCode::UnknownTask => "unknown_task",
            ArCode::TaskExpired => "task_expired",
            ArCode::InvalidTaskState => "invalid_task_state",
            ArCode::RateLimited => "rate_limited",
            ArCode::Unavailable => "unavailable",
            ArCode::ServerError => "server_error",
        }
    }

    /// Its HTTP status (an error may answer with another, see [`ArError::with_status`]).
    pub fn status(self) -> u16 {
        match self {
            ArCode::InvalidRequest | ArCode::NotRequestable | ArCode::InvalidDenialBinding => 400,
            ArCode::UnknownTask => 404,
            ArCode::DuplicateRequest | ArCode::InvalidTaskState => 409,
            ArCode::ExpiredDenial | ArCode::TaskExpired => 410,
            ArCode::RateLimited => 429,
            ArCode::ServerError => 500,
            ArCode::Unavailable => 503,
        }
    }

    /// The problem `type` URN.
    pub fn type_urn(self) -> String {
        format!("{ERROR_URN_PREFIX}{}", self.as_str())
    }
}

/// An Access Request / PDP failure, mapped to an `application/problem+json` answer by
/// [`crate::http::ApiError`].
#[derive(Debug, Clone)]
pub struct ArError {
    /// HTTP status.
    pub status: u16,
    /// Problem code.
    pub code: ArCode,
    /// Human-readable detail (never token material).
    pub detail: String,
    /// Seconds to wait before trying again (`Retry-After` and `retry_after`), for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ArError {
    /// An error of `code`, with its status.
    pub fn new(code: ArCode, detail: impl Into<String>) -> ArError {
        ArError { status: code.status(), code, detail: detail.into(), retry_after: None }
    }
    /// 429 `rate_limited`: a per-requester limit is reached; try again after `retry_after` seconds.
    pub fn rate_limited(detail: impl Into<String>, retry_after: u64) -> ArError {
        ArError { retry_after: Some(retry_after.max(1)), ..Self::new(ArCode::RateLimited, detail) }
    }
    /// 503 `unavailable`: too busy right now.
    pub fn busy(detail: impl Into<String>) -> ArError {
        ArError { retry_after: Some(1), ..Self::new(ArCode::Unavailable, detail) }
    }
    /// 400 `invalid_request`.
    pub fn invalid(detail: impl Into<String>) -> ArError {
        Self::new(ArCode::InvalidRequest, detail)
    }
    fn binding(detail: impl Into<String>) -> ArError {
        Self::new(ArCode::InvalidDenialBinding, detail)
    }
    /// 404 `unknown_task`.
    pub fn unknown_task() -> ArError {
        Self::new(ArCode::UnknownTask, "no such access request task")
    }
    fn state(detail: impl Into<String>) -> ArError {
        Self::new(ArCode::InvalidTaskState, detail)
    }
    /// 500.
    pub fn internal(detail: impl std::fmt::Display) -> ArError {
        tracing::error!(error = %detail, "access request service failed");
        Self::new(ArCode::ServerError, "internal error")
    }
    /// The same error with another HTTP status (415 and 413 `invalid_request`).
    pub fn with_status(mut self, status: u16) -> ArError {
        self.status = status;
        self
    }
    /// The same error with another detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> ArError {
        self.detail = detail.into();
        self
    }
    /// The problem `type` URN.
    pub fn type_urn(&self) -> String {
        self.code.type_urn()
    }
}

impl std::fmt::Display for ArError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code.as_str(), self.status, self.detail)
    }
}

impl From<StoreError> for ArError {
    fn from(e: StoreError) -> Self {
        ArError::internal(e)
    }
}

impl From<RandomError> for ArError {
    fn from(e: RandomError) -> Self {
        ArError::internal(e)
    }
}

impl From<AuthorityError> for ArError {
    fn from(e: AuthorityError) -> Self {
        ArError::internal(e)
    }
}

/// Result of a submission.
#[derive(Debug)]
pub struct Submitted {
    /// True when a new task was created (`201`); false for a replay or an already pending task.
    pub created: bool,
    /// The task.
    pub task: TaskRow,
}

/// The `reason` of a PDP denial: a refusal (`next_action: none`) or a requestable denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The request names no Mission.
    MissionRequired,
    /// The Mission is not one this authority holds.
    MissionUnknown,
    /// The Mission is not active (or has expired).
    MissionInactive,
    /// The caller is not the Mission's client.
    SubjectMismatch,
    /// The Mission's authority changed since the token was minted.
    AuthorityMismatch,
    /// Approved with other parameters, or the single use was spent.
    ParameterViolation,
    /// The Captive Portal API names no denial this PDP made.
    UnknownDenial,
    /// The Mission has as many open requestable denials as allowed.
    TooManyOpenRequests,
    /// Requestable: the call carries a parameter digest, an approval allows exactly this call.
    ApprovalRequired,
    /// Requestable: the destination and operation are not allowed (destination-level).
    EgressNotAllowed,
}

impl DenyReason {
    /// The `reason` member.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::MissionRequired => "mission_required",
            DenyReason::MissionUnknown => "mission_unknown",
            DenyReason::MissionInactive => "mission_inactive",
            DenyReason::SubjectMismatch => "subject_mismatch",
            DenyReason::AuthorityMismatch => "authority_mismatch",
            DenyReason::ParameterViolation => "parameter_violation",
            DenyReason::UnknownDenial => "unknown_denial",
            DenyReason::TooManyOpenRequests => "too_many_open_requests",
            DenyReason::ApprovalRequired => "approval_required",
            DenyReason::EgressNotAllowed => "egress_not_allowed",
        }
    }
}

/// What the policy says about a request.
enum Verdict {
    Permit(Box<GrantRow>),
    Refuse { reason: DenyReason, mission_state: Option<String> },
    Request(Box<DenialRow>),
}

/// The claims of a binding token.
#[derive(Debug, Deserialize)]
struct BindingClaims {
    iss: String,
    aud: Value,
    exp: i64,
    evaluation_id: String,
    denial_expires_at: String,
    binding_hash: String,
    subject: Value,
    resource: Value,
    action: Value,
}

/// The `denial` member of a submission.
#[derive(Debug, Deserialize)]
struct DenialEcho {
    #[serde(default)]
    evaluation_id: Option<String>,
    #[serde(default)]
    binding_token: Option<String>,
    expires_at: String,
}

/// `requested_access`.
#[derive(Debug, Deserialize, Default)]
struct RequestedAccess {
    #[serde(default)]
    requested_until: Option<String>,
}

/// A submission body (unknown members are ignored, as AuthZEN requires).
#[derive(Debug, Deserialize)]
struct Submission {
    #[serde(default)]
    denial: Option<DenialEcho>,
    #[serde(default)]
    justification: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    subject: Option<Value>,
    #[serde(default)]
    resource: Option<Value>,
    #[serde(default)]
    action: Option<Value>,
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    requested_access: Option<RequestedAccess>,
}

/// A new random id with a prefix (144 bits, base64url).
pub fn new_id(prefix: &str) -> Result<String, RandomError> {
    Ok(format!("{prefix}{}", random_b64(18)?))
}

/// The bound object of a request (ARAP §Structural Comparison): subject without `properties.act`,
/// resource, action, and the authorization-relevant context `{mission}`.
fn binding_object(req: &EvaluationRequest) -> Value {
    let mut subject = serde_json::to_value(&req.subject).unwrap_or(Value::Null);
    strip_act(&mut subject);
    json!({
        "subject": subject,
        "resource": serde_json::to_value(&req.resource).unwrap_or(Value::Null),
        "action": serde_json::to_value(&req.action).unwrap_or(Value::Null),
        "context": {"mission": serde_json::to_value(&req.context.mission).unwrap_or(Value::Null)},
    })
}

fn strip_act(subject: &mut Value) {
    if let Some(props) = subject.get_mut("properties").and_then(Value::as_object_mut) {
        props.remove("act");
        if props.is_empty() {
            if let Some(obj) = subject.as_object_mut() {
                obj.remove("properties");
            }
        }
    }
}

fn binding_hash(binding: &Value) -> String {
    b64::encode(sha256(jcs::canonicalize(binding)))
}

/// Structural equality (ARAP): equal RFC 8785 canonical forms.
fn same(a: &Value, b: &Value) -> bool {
    jcs::canonicalize(a) == jcs::canonicalize(b)
}

fn check_id(what: &str, v: &str) -> Result<(), ArError> {
    if v.is_empty() {
        return Err(ArError::invalid(format!("{what} must not be empty")));
    }
    if v.len() > MAX_ID_BYTES {
        return Err(ArError::invalid(format!("{what} is too long")));
    }
    Ok(())
}

/// Check the members the policy reads.
pub fn validate_request(req: &EvaluationRequest) -> Result<(), ArError> {
    check_id("subject.type", &req.subject.type_)?;
    check_id("subject.id", &req.subject.id)?;
    check_id("resource.type", &req.resource.type_)?;
    check_id("resource.id", &req.resource.id)?;
    check_id("action.name", &req.action.name)?;
    match req.action.properties.get("parameter_digest") {
        None => {}
        Some(Value::String(d)) if parse_prefixed_digest(d).is_some() => {}
        Some(_) => return Err(ArError::invalid("action.properties.parameter_digest must be sha-256:<base64url>")),
    }
    if let Some(m) = &req.context.mission {
        check_id("context.mission.id", &m.id)?;
        check_id("context.mission.issuer", &m.issuer)?;
    }
    Ok(())
}

fn digest_of(req: &EvaluationRequest) -> Option<String> {
    req.action.properties.get("parameter_digest").and_then(Value::as_str).map(str::to_owned)
}

/// A parameter object (SPEC §6, HTTP Operation Profile version 2) given as JSON:
/// `{method, target, headers?, content_type?, body? | body_sha256?}`; returns its digest. The shape
/// is checked in `wire` ([`ParameterObject::from_value`]), the one place the filter's rules live.
///
/// An MCP tool call's parameter object (`{target, mcp_method, tool, arguments}`, SPEC §7; it has
/// `mcp_method`) is digested by the MCP Tool Call Profile instead. The two profiles' objects have
/// different members, so a parameter object of one can never hash to a digest of the other.
pub fn digest_of_parameters(p: &Value) -> Result<String, String> {
    if missiongate_wire::digest::is_mcp_parameter_object(p) {
        return missiongate_wire::digest::mcp_tool_call_digest_of_parameters(p).map_err(|e| e.to_string());
    }
    ParameterObject::from_value(p).map(|po| po.digest()).map_err(|e| e.to_string())
}

/// The PDP, Access Request Service and portal back end.
#[derive(Debug)]
pub struct Access {
    settings: AccessSettings,
    authority: Arc<Authority>,
    /// Agents' writes (submissions, cancellations) take turns: at most one of them holds or waits for
    /// the database's single writer at a time, so the gateway's writes (a new denial, a single-use
    /// grant consumed) never queue behind a flood of them.
    agent_writes: tokio::sync::Semaphore,
}

/// How long an agent's write waits for its turn before the answer is 503 with `Retry-After`.
pub const AGENT_WRITE_WAIT: Duration = Duration::from_secs(3);

/// What a policy decision is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// A gateway's evaluation: a single-use grant is consumed by the permit it yields.
    Evaluate,
    /// The Captive Portal API's view: reads only, consumes nothing.
    Captive,
}

impl Access {
    /// A service over `authority` (its store, keys and Missions).
    pub fn new(settings: AccessSettings, authority: Arc<Authority>) -> Arc<Access> {
        Arc::new(Access { settings, authority, agent_writes: tokio::sync::Semaphore::new(1) })
    }

    /// Wait (bounded) for the agents' turn at the writer.
    async fn agent_turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, ArError> {
        match tokio::time::timeout(AGENT_WRITE_WAIT, self.agent_writes.acquire()).await {
            Ok(Ok(p)) => Ok(p),
            _ => Err(ArError::busy("the access request service is busy; try again shortly")),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &AccessSettings {
        &self.settings
    }

    /// The authority.
    pub fn authority(&self) -> &Arc<Authority> {
        &self.authority
    }

    /// AuthZEN PDP metadata (`/.well-known/authzen-configuration`).
    pub fn metadata(&self) -> Value {
        let s = &self.settings;
        json!({
            "policy_decision_point": s.public_url,
            "access_evaluation_endpoint": s.evaluation_endpoint(),
            "access_evaluations_endpoint": s.evaluations_endpoint(),
            "access_request_endpoint": s.requests_endpoint(),
            "jwks_uri": format!("{}/jwks.json", s.public_url),
            "capabilities": [CAP_ACCESS_REQUEST, CAP_CAPTIVE_EGRESS],
        })
    }

    /// The local Mission, if `issuer` is this authority (`Ok(None)`: another authority's Mission).
    async fn local_mission(&self, id: &str, issuer: &str) -> Result<Option<Result<MissionRow, ()>>, ArError> {
        if issuer != self.authority.settings().issuer {
            return Ok(None);
        }
        match self.authority.get(id).await {
            Ok(m) => Ok(Some(Ok(m))),
            Err(AuthorityError::NotFound) => Ok(Some(Err(()))),
            Err(e) => Err(e.into()),
        }
    }

    /// Apply the policy (module documentation). Creates or refreshes the denial when requestable.
    async fn verdict(&self, req: &EvaluationRequest, now: i64, purpose: Purpose) -> Result<Verdict, ArError> {
        let Some(mission) = &req.context.mission else {
            return Ok(Verdict::Refuse { reason: DenyReason::MissionRequired, mission_state: None });
        };
        match self.local_mission(&mission.id, &mission.issuer).await? {
            None => {}
            Some(Err(())) => {
                return Ok(Verdict::Refuse {
                    reason: DenyReason::MissionUnknown,
                    mission_state: Some("unknown".into()),
                })
            }
            Some(Ok(m)) => {
                if !m.state.is_active() || now >= m.expires_at {
                    let state = if now >= m.expires_at { "expired".to_owned() } else { m.state.to_string() };
                    return Ok(Verdict::Refuse { reason: DenyReason::MissionInactive, mission_state: Some(state) });
                }
                if m.client_id != req.subject.id {
                    return Ok(Verdict::Refuse { reason: DenyReason::SubjectMismatch, mission_state: None });
                }
                if mission.authority_hash.as_deref().is_some_and(|h| h != m.authority_hash) {
                    return Ok(Verdict::Refuse { reason: DenyReason::AuthorityMismatch, mission_state: None });
                }
            }
        }
        let digest = digest_of(req);
        let store = self.authority.store();
        let tuple = GrantTuple {
            mission_id: &mission.id,
            mission_issuer: &mission.issuer,
            subject_id: &req.subject.id,
            resource_type: &req.resource.type_,
            resource_id: &req.resource.id,
            action_name: &req.action.name,
            digest: digest.as_deref(),
        };
        // A single-use grant yields one permit in total: the evaluation that issues it marks it used in
        // the same atomic UPDATE that checks it is unused, and only then answers. Losing that race (to
        // another gateway, or another worker) means looking again.
        for _ in 0..4 {
            match store.find_grant(&tuple, now).await? {
                None => break,
                Some(g) if !g.single_use || purpose == Purpose::Captive => return Ok(Verdict::Permit(Box::new(g))),
                Some(g) => {
                    if store.consume_grant(&g.id, now).await? {
                        tracing::info!(grant = %g.id, "single-use grant consumed");
                        return Ok(Verdict::Permit(Box::new(g)));
                    }
                }
            }
        }
        if purpose == Purpose::Evaluate {
            if store.used_grant(&tuple, now).await?.is_some() {
                // Its one permit was issued (maybe lost on the way): the gateway answers 403
                // parameter_violation; the agent asks again through the denial's Captive Portal API.
                return Ok(Verdict::Refuse { reason: DenyReason::ParameterViolation, mission_state: None });
            }
            if store.grant_for_other_parameters(&tuple, now).await?.is_some() {
                // Approved with other parameters and not used yet (SPEC section 6: a changed amount
                // after approval is refused): the approval covers exactly the call that was approved.
                return Ok(Verdict::Refuse { reason: DenyReason::ParameterViolation, mission_state: None });
            }
        }
        let binding = binding_object(req);
        let draft = DenialDraft {
            id: new_id("dn_")?,
            evaluation_id: new_id("eval_")?,
            binding_hash: binding_hash(&binding),
            request: req.clone(),
            mission_id: mission.id.clone(),
            mission_issuer: mission.issuer.clone(),
            subject_id: req.subject.id.clone(),
            resource_type: req.resource.type_.clone(),
            resource_id: req.resource.id.clone(),
            action_name: req.action.name.clone(),
            parameter_digest: digest.clone(),
            reason: if digest.is_some() { DenyReason::ApprovalRequired } else { DenyReason::EgressNotAllowed }
                .as_str()
                .to_owned(),
        };
        let ttl = self.settings.denial_ttl_seconds;
        let hint_expires_at = now + ttl;
        let min_valid_until = now + (ttl / 2).min(60);
        let key = self.authority.signer_until(hint_expires_at).await?;
        let iss = self.settings.public_url.clone();
        let aud = self.settings.requests_endpoint();
        let jti = random_b64(16)?;
        let hash = draft.binding_hash.clone();
        let sign = move |evaluation_id: &str, iat: i64, exp: i64| {
            let mut claims = Map::new();
            claims.insert("iss".into(), json!(iss));
            claims.insert("aud".into(), json!(aud));
            claims.insert("iat".into(), json!(iat));
            claims.insert("exp".into(), json!(exp));
            claims.insert("jti".into(), json!(jti));
            claims.insert("evaluation_id".into(), json!(evaluation_id));
            claims.insert("denial_expires_at".into(), json!(format_rfc3339(exp)));
            claims.insert("binding_context_members".into(), json!(["mission"]));
            claims.insert("binding_hash".into(), json!(hash));
            if let Value::Object(b) = binding {
                for (k, v) in b {
                    claims.insert(k, v);
                }
            }
            key.sign(TYP_BINDING, &Value::Object(claims))
        };
        if purpose == Purpose::Captive {
            // The Captive Portal API never writes: it shows the stored hint, or a fresh one signed for
            // the same denial (binding tokens are checked by signature and evaluation id, not stored).
            let Some(mut d) = store.denial_by_binding(&draft.binding_hash).await? else {
                return Ok(Verdict::Refuse { reason: DenyReason::UnknownDenial, mission_state: None });
            };
            if d.hint_expires_at < min_valid_until {
                d.binding_token = sign(&d.evaluation_id, now, hint_expires_at);
                d.hint_issued_at = now;
                d.hint_expires_at = hint_expires_at;
            }
            return Ok(Verdict::Request(Box::new(d)));
        }
        let max_open = self.settings.max_open_denials_per_mission;
        match store.ensure_denial(&draft, now, min_valid_until, hint_expires_at, max_open, sign).await? {
            EnsureDenial::Denial(d) => Ok(Verdict::Request(d)),
            EnsureDenial::Limit => Ok(Verdict::Refuse { reason: DenyReason::TooManyOpenRequests, mission_state: None }),
        }
    }

    fn hint(&self, d: &DenialRow) -> AccessRequestHint {
        let (title, description) = if d.parameter_digest.is_some() {
            (
                format!("Approval required for {} on {}", d.action_name, d.resource_id),
                format!(
                    "Mission {}: a person must approve this exact {} call to {} before the agent may make it.",
                    d.mission_id, d.action_name, d.resource_id
                ),
            )
        } else {
            (
                format!("Egress to {} is blocked", d.resource_id),
                format!(
                    "Mission {}: a person must approve {} on {} before the agent may call it.",
                    d.mission_id, d.action_name, d.resource_id
                ),
            )
        };
        AccessRequestHint {
            endpoint: self.settings.requests_endpoint(),
            expires_at: format_rfc3339(d.hint_expires_at),
            binding_token: d.binding_token.clone(),
            display: Some(Display { title: Some(title), description: Some(description) }),
        }
    }

    fn permit_context(g: &GrantRow) -> ResponseContext {
        let mut other = Map::new();
        other.insert(
            "approval".into(),
            json!({"id": g.id, "approved_at": format_rfc3339(g.approved_at), "approved_until": format_rfc3339(g.approved_until)}),
        );
        ResponseContext {
            evaluation_id: Some(format!("perm_{}", g.id)),
            conditions: Some(Conditions {
                valid_until: Some(format_rfc3339(g.approved_until)),
                parameter_digest: g.parameter_digest.clone(),
                use_limit: g.single_use.then_some(1),
                unknown: Map::new(),
            }),
            other,
            ..ResponseContext::default()
        }
    }

    /// `POST /access/v1/evaluation`.
    pub async fn evaluate(&self, req: &EvaluationRequest) -> Result<EvaluationResponse, ArError> {
        validate_request(req)?;
        let now = now_secs();
        let verdict = self.verdict(req, now, Purpose::Evaluate).await?;
        let mut resp = EvaluationResponse::default();
        match verdict {
            Verdict::Permit(g) => {
                resp.decision = true;
                resp.context = Self::permit_context(&g);
                tracing::info!(grant = %g.id, resource = %g.resource_id, action = %g.action_name, "permit (approved)");
            }
            Verdict::Refuse { reason, mission_state } => {
                resp.context.evaluation_id = Some(new_id("eval_")?);
                resp.context.reason = Some(reason.as_str().to_owned());
                resp.context.next_action = Some("none".into());
                if let (Some(state), Some(m)) = (mission_state, &req.context.mission) {
                    resp.context.other.insert("mission".into(), json!({"id": m.id, "state": state}));
                }
                tracing::info!(reason = reason.as_str(), resource = %req.resource.id, action = %req.action.name, "deny");
            }
            Verdict::Request(d) => {
                resp.context = ResponseContext {
                    evaluation_id: Some(d.evaluation_id.clone()),
                    reason: Some(d.reason.clone()),
                    next_action: Some("request".into()),
                    access_request: Some(self.hint(&d)),
                    captive_portal_api: Some(self.settings.captive_api(&d.id)),
                    user_portal_url: Some(self.settings.user_portal(&d.id)),
                    ..ResponseContext::default()
                };
                resp.context.other.insert("evaluated_at".into(), json!(format_rfc3339(now)));
                tracing::info!(denial = %d.id, resource = %d.resource_id, action = %d.action_name, "requestable denial");
            }
        }
        Ok(resp)
    }

    /// `GET /captive-portal/api/d/{id}`: `None` for an unknown denial.
    pub async fn captive(&self, denial_id: &str) -> Result<Option<CaptiveDocument>, ArError> {
        let Some(d) = self.authority.store().denial(denial_id).await? else { return Ok(None) };
        let now = now_secs();
        let mut doc = CaptiveDocument {
            captive: true,
            user_portal_url: Some(self.settings.user_portal(&d.id)),
            seconds_remaining: None,
            access_request: None,
        };
        match self.verdict(&d.request, now, Purpose::Captive).await? {
            Verdict::Permit(g) => {
                doc.captive = false;
                doc.seconds_remaining = Some((g.approved_until - now).max(0));
            }
            Verdict::Refuse { .. } => {}
            Verdict::Request(fresh) => {
                let req = &fresh.request;
                doc.access_request = Some(CaptiveAccessRequest {
                    subject: req.subject.clone(),
                    resource: req.resource.clone(),
                    action: req.action.clone(),
                    context: CaptiveAccessContext {
                        evaluation_id: fresh.evaluation_id.clone(),
                        reason: fresh.reason.clone(),
                        mission: req.context.mission.clone(),
                        access_request: self.hint(&fresh),
                    },
                });
            }
        }
        Ok(Some(doc))
    }

    // ---------------------------------------------------------------------------------------------
    // Access Requests
    // ---------------------------------------------------------------------------------------------

    /// Verify a binding token; returns its claims and the denial it binds.
    async fn verify_binding(&self, token: &str) -> Result<(BindingClaims, DenialRow), ArError> {
        let (header, payload) = self.authority.verify_own(token).await.map_err(|e| match e {
            VerifyError::Internal(m) => ArError::internal(m),
            _ => ArError::binding("denial.binding_token is not a valid binding token of this PDP"),
        })?;
        if header.typ.as_deref() != Some(TYP_BINDING) || header.crit.is_some() {
            return Err(ArError::binding("denial.binding_token is not a binding token"));
        }
        let claims: BindingClaims = serde_json::from_slice(&payload)
            .map_err(|_| ArError::binding("denial.binding_token does not carry the binding claims"))?;
        let aud = self.settings.requests_endpoint();
        let aud_ok = match &claims.aud {
            Value::String(s) => *s == aud,
            Value::Array(a) => a.iter().any(|v| v.as_str() == Some(aud.as_str())),
            _ => false,
        };
        if claims.iss != self.settings.public_url || !aud_ok {
            return Err(ArError::binding("denial.binding_token was issued for another service"));
        }
        let denial = self
            .authority
            .store()
            .denial_by_evaluation_id(&claims.evaluation_id)
            .await?
            .ok_or_else(|| ArError::binding("denial.binding_token names an unknown evaluation"))?;
        if denial.binding_hash != claims.binding_hash {
            return Err(ArError::binding("denial.binding_token does not bind this denial"));
        }
        Ok((claims, denial))
    }

    /// `POST /access/v1/requests`.
    pub async fn submit(&self, idempotency_key: &str, body: &[u8]) -> Result<Submitted, ArError> {
        let value = jcs::parse_ijson(body).map_err(|e| ArError::invalid(format!("request body: {e}")))?;
        if !value.is_object() {
            return Err(ArError::invalid("request body must be a JSON object"));
        }
        let sub: Submission =
            serde_json::from_value(value.clone()).map_err(|e| ArError::invalid(format!("request body: {e}")))?;
        let Some(echo) = sub.denial else {
            return Err(ArError::new(ArCode::NotRequestable, "the submission carries no denial to request access for"));
        };
        let Some(token) = echo.binding_token.as_deref() else {
            return Err(ArError::binding("denial.binding_token is required by this Access Request Service"));
        };
        let (claims, denial) = self.verify_binding(token).await?;
        if echo.evaluation_id.as_deref().is_some_and(|e| e != claims.evaluation_id) {
            return Err(ArError::binding("denial.evaluation_id differs from the binding token's"));
        }
        let echoed = parse_rfc3339(&echo.expires_at)
            .ok_or_else(|| ArError::invalid("denial.expires_at must be an RFC 3339 date-time"))?;
        if Some(echoed) != parse_rfc3339(&claims.denial_expires_at) {
            return Err(ArError::binding("denial.expires_at differs from the denial's"));
        }
        // ARAP submissions may repeat subject, resource, action and context: they must be the bound ones.
        if let Some(s) = &sub.subject {
            let mut s = s.clone();
            strip_act(&mut s);
            if !same(&s, &claims.subject) {
                return Err(ArError::binding("subject differs from the denied evaluation's"));
            }
        }
        if sub.resource.as_ref().is_some_and(|r| !same(r, &claims.resource)) {
            return Err(ArError::binding("resource differs from the denied evaluation's"));
        }
        if sub.action.as_ref().is_some_and(|a| !same(a, &claims.action)) {
            return Err(ArError::binding("action differs from the denied evaluation's"));
        }
        if let Some(m) = sub.context.as_ref().and_then(|c| c.get("mission")) {
            let bound = serde_json::to_value(&denial.request.context.mission).unwrap_or(Value::Null);
            if !same(m, &bound) {
                return Err(ArError::binding("context.mission differs from the denied evaluation's"));
            }
        }
        let scope = format!("{}\n{}\n{}", denial.mission_issuer, denial.mission_id, denial.subject_id);
        let body_hash = b64::encode(sha256(jcs::canonicalize(&value)));
        let store = self.authority.store();
        if let Some((hash, task)) = store.idempotency(&scope, idempotency_key).await? {
            let task = effective(task, now_secs());
            return if hash == body_hash {
                Ok(Submitted { created: false, task })
            } else {
                Err(ArError::new(ArCode::DuplicateRequest, "this Idempotency-Key was used with another request body"))
            };
        }
        let now = now_secs();
        if now > echoed.min(claims.exp) {
            return Err(ArError::new(
                ArCode::ExpiredDenial,
                "the requestable denial has expired; retry the call for a fresh one",
            ));
        }
        if let Some(j) = &sub.justification {
            if j.len() > MAX_JUSTIFICATION_BYTES {
                return Err(ArError::invalid("justification is too long"));
            }
        }
        let requested_until =
            match sub.requested_access.unwrap_or_default().requested_until {
                None => None,
                Some(t) => Some(parse_rfc3339(&t).ok_or_else(|| {
                    ArError::invalid("requested_access.requested_until must be an RFC 3339 date-time")
                })?),
            };
        match (&denial.parameter_digest, &sub.parameters) {
            (Some(_), None) => {
                return Err(ArError::binding(
                    "this denial is bound to a parameter_digest: submit the call's parameter object as `parameters`",
                ))
            }
            (Some(bound), Some(p)) => {
                let got = digest_of_parameters(p).map_err(|e| ArError::binding(format!("parameters: {e}")))?;
                if &got != bound {
                    return Err(ArError::binding("parameters do not hash to the denied call's parameter_digest"));
                }
            }
            (None, _) => {}
        }
        let task = TaskRow {
            id: new_id("arq_")?,
            denial_id: denial.id.clone(),
            status: TaskStatus::Pending,
            submission: value,
            justification: sub.justification.clone(),
            parameters: sub.parameters.clone(),
            requested_until,
            created_at: now,
            updated_at: now,
            expires_at: now + self.settings.task_ttl_seconds,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
            grant_id: None,
        };
        let audit = AuditRow {
            at: now,
            actor: format!("requester:{}", denial.subject_id),
            action: "submit".into(),
            task_id: Some(task.id.clone()),
            denial_id: Some(denial.id.clone()),
            grant_id: None,
            detail: json!({"evaluation_id": denial.evaluation_id}),
        };
        let limits = RequesterLimits {
            keys: self.settings.max_idempotency_keys_per_requester,
            open: self.settings.max_open_requests_per_requester,
            retention: self.settings.retention_seconds,
        };
        let _turn = self.agent_turn().await?;
        match store.create_task(&task, &scope, idempotency_key, &body_hash, &audit, limits).await? {
            CreateTask::Created(t) => {
                tracing::info!(task = %t.id, denial = %denial.id, "access request submitted");
                Ok(Submitted { created: true, task: t })
            }
            CreateTask::Replayed(t) | CreateTask::Existing(t) => Ok(Submitted { created: false, task: t }),
            CreateTask::Conflict => {
                Err(ArError::new(ArCode::DuplicateRequest, "this Idempotency-Key was used with another request body"))
            }
            CreateTask::KeyLimit(free_at) => {
                // A key is freed when the oldest is pruned (the pruning runs every minute).
                let wait = u64::try_from(free_at - now + self.settings.prune_interval_seconds).unwrap_or(1);
                Err(ArError::rate_limited(
                    format!(
                        "this requester already stores {} Idempotency-Keys; reuse one for a retry",
                        self.settings.max_idempotency_keys_per_requester
                    ),
                    wait,
                ))
            }
            CreateTask::OpenLimit => Err(ArError::rate_limited(
                format!(
                    "this requester already has {} pending access requests; cancel one or wait for a decision",
                    self.settings.max_open_requests_per_requester
                ),
                RETRY_AFTER_SECONDS,
            )),
        }
    }

    /// A task as the requester sees it (`{"task": ..., "result"?: ...}`); expiry applied.
    pub async fn task_view(&self, id: &str) -> Result<(Value, TaskRow), ArError> {
        let store = self.authority.store();
        let task = store.task(id).await?.ok_or_else(ArError::unknown_task)?;
        let now = now_secs();
        if now >= task.expires_at + self.settings.task_retention_seconds {
            return Err(ArError::new(ArCode::TaskExpired, "the task handle has expired"));
        }
        self.view_of(task, now).await
    }

    /// The answer to a submission: the task just created or replayed, as the requester sees it. No
    /// retention gate: a task whose TTL ran out while it was being stored (a slow database, a TTL of a
    /// second) is answered as expired, never as a 410 for the request that made it.
    pub async fn submitted_view(&self, task: TaskRow) -> Result<(Value, TaskRow), ArError> {
        self.view_of(task, now_secs()).await
    }

    async fn view_of(&self, task: TaskRow, now: i64) -> Result<(Value, TaskRow), ArError> {
        // Read-only: a pending task past its expiry is shown expired (the maintenance task records it).
        let task = effective(task, now);
        let grant = match &task.grant_id {
            Some(g) => self.authority.store().grant(g).await?,
            None => None,
        };
        Ok((self.render_task(&task, grant.as_ref()), task))
    }

    fn render_task(&self, t: &TaskRow, grant: Option<&GrantRow>) -> Value {
        let endpoint = self.settings.status_endpoint(&t.id);
        let mut task = json!({
            "id": t.id,
            "status": t.status,
            "status_endpoint": endpoint,
            "created_at": format_rfc3339(t.created_at),
            "updated_at": format_rfc3339(t.updated_at),
            "expires_at": format_rfc3339(t.expires_at),
        });
        if let Some(obj) = task.as_object_mut() {
            if t.status == TaskStatus::Pending {
                obj.insert("links".into(), json!({"cancel": format!("{endpoint}/cancel")}));
            }
            if let Some(r) = &t.decision_reason {
                obj.insert("reason".into(), json!(r));
            }
        }
        let mut out = json!({ "task": task });
        if let (Some(g), Some(obj)) = (grant, out.as_object_mut()) {
            obj.insert(
                "result".into(),
                json!({"mode": "reevaluate", "approval": {
                    "id": g.id, "approved_at": format_rfc3339(g.approved_at), "approved_until": format_rfc3339(g.approved_until),
                }}),
            );
        }
        out
    }

    /// Cancel a pending task (`POST .../cancel` or `DELETE`).
    pub async fn cancel(&self, id: &str) -> Result<Value, ArError> {
        let store = self.authority.store();
        let task = store.task(id).await?.ok_or_else(ArError::unknown_task)?;
        let denial = store.denial(&task.denial_id).await?.ok_or_else(|| ArError::internal("task without denial"))?;
        let actor = format!("requester:{}", denial.subject_id);
        let _turn = self.agent_turn().await?;
        match store.decide_task(id, &Decision::Cancel, &actor, now_secs()).await? {
            Decided::NotFound => Err(ArError::unknown_task()),
            Decided::NotPending(t) => Err(ArError::state(format!("the task is {}, not pending", t.status))),
            Decided::Done(t) => Ok(self.render_task(&t, None)),
        }
    }

    /// Approve a pending task for `duration_seconds` (bounded by the Mission's expiry). `single_use`
    /// defaults to true for a call bound to a `parameter_digest`.
    pub async fn approve(
        &self,
        task_id: &str,
        duration_seconds: i64,
        single_use: Option<bool>,
        actor: &str,
    ) -> Result<(TaskRow, GrantRow), ArError> {
        if duration_seconds < 1 || duration_seconds > self.settings.max_approval_seconds {
            return Err(ArError::invalid(format!(
                "the approval must last 1 to {} seconds",
                self.settings.max_approval_seconds
            )));
        }
        let store = self.authority.store();
        let task = store.task(task_id).await?.ok_or_else(ArError::unknown_task)?;
        let d = store.denial(&task.denial_id).await?.ok_or_else(|| ArError::internal("task without denial"))?;
        let now = now_secs();
        let mut until = now + duration_seconds;
        match self.local_mission(&d.mission_id, &d.mission_issuer).await? {
            Some(Ok(m)) if m.state.is_active() && now < m.expires_at => until = until.min(m.expires_at),
            Some(Ok(m)) => return Err(ArError::state(format!("the mission is {}, not active", m.state))),
            Some(Err(())) => return Err(ArError::state("the mission is unknown")),
            None => {}
        }
        let grant = GrantRow {
            id: new_id("apr_")?,
            task_id: task.id.clone(),
            denial_id: d.id.clone(),
            mission_id: d.mission_id.clone(),
            mission_issuer: d.mission_issuer.clone(),
            subject_id: d.subject_id.clone(),
            resource_type: d.resource_type.clone(),
            resource_id: d.resource_id.clone(),
            action_name: d.action_name.clone(),
            parameter_digest: d.parameter_digest.clone(),
            single_use: single_use.unwrap_or(d.parameter_digest.is_some()),
            approved_by: actor.to_owned(),
            approved_at: now,
            approved_until: until,
        };
        match store.decide_task(task_id, &Decision::Approve(Box::new(grant.clone())), actor, now).await? {
            Decided::NotFound => Err(ArError::unknown_task()),
            Decided::NotPending(t) => Err(ArError::state(format!("the task is {}, not pending", t.status))),
            Decided::Done(t) => {
                tracing::info!(task = %t.id, grant = %grant.id, actor, until = %format_rfc3339(until), "access request approved");
                Ok((t, grant))
            }
        }
    }

    /// Deny a pending task.
    pub async fn deny(&self, task_id: &str, reason: &str, actor: &str) -> Result<TaskRow, ArError> {
        if reason.len() > MAX_REASON_BYTES {
            return Err(ArError::invalid("reason is too long"));
        }
        let store = self.authority.store();
        match store.decide_task(task_id, &Decision::Deny(reason.to_owned()), actor, now_secs()).await? {
            Decided::NotFound => Err(ArError::unknown_task()),
            Decided::NotPending(t) => Err(ArError::state(format!("the task is {}, not pending", t.status))),
            Decided::Done(t) => {
                tracing::info!(task = %t.id, actor, "access request denied");
                Ok(t)
            }
        }
    }

    /// The task as an approver or operator sees it.
    pub async fn task_admin_view(&self, task: &TaskRow, denial: &DenialRow) -> Result<Value, ArError> {
        let store = self.authority.store();
        let grant = match &task.grant_id {
            Some(g) => store.grant(g).await?,
            None => None,
        };
        let mut v = self.render_task(task, grant.as_ref());
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "denial".into(),
                json!({
                    "id": denial.id, "evaluation_id": denial.evaluation_id, "reason": denial.reason,
                    "subject": denial.request.subject, "resource": denial.request.resource, "action": denial.request.action,
                    "mission": denial.request.context.mission,
                    "constraints": denial.request.context.other.get("constraints"),
                    "captive_portal_api": self.settings.captive_api(&denial.id),
                    "user_portal_url": self.settings.user_portal(&denial.id),
                }),
            );
            obj.insert("justification".into(), json!(task.justification));
            obj.insert("parameters".into(), task.parameters.clone().unwrap_or(Value::Null));
            obj.insert("decided_by".into(), json!(task.decided_by));
            obj.insert("decided_at".into(), json!(task.decided_at.map(format_rfc3339)));
            if let Some(g) = grant {
                obj.insert(
                    "grant".into(),
                    json!({"id": g.id, "approved_until": format_rfc3339(g.approved_until), "single_use": g.single_use,
                           "parameter_digest": g.parameter_digest, "approved_by": g.approved_by}),
                );
            }
        }
        Ok(v)
    }

    /// Everything the approver page of a denial shows.
    pub async fn denial_page(&self, denial_id: &str) -> Result<Option<DenialPage>, ArError> {
        let store = self.authority.store();
        let Some(denial) = store.denial(denial_id).await? else { return Ok(None) };
        let now = now_secs();
        let tasks: Vec<TaskRow> =
            store.tasks_for_denial(denial_id).await?.into_iter().map(|t| effective(t, now)).collect();
        let audit = store.audit_for_denial(denial_id).await?;
        let mission = match self.local_mission(&denial.mission_id, &denial.mission_issuer).await? {
            Some(Ok(m)) => Some(m),
            _ => None,
        };
        let mut grants = Vec::new();
        for t in &tasks {
            if let Some(g) = &t.grant_id {
                if let Some(g) = store.grant(g).await? {
                    grants.push(g);
                }
            }
        }
        Ok(Some(DenialPage { denial, tasks, audit, mission, grants }))
    }

    /// Pending (or all) tasks with their denials and Missions, newest first.
    pub async fn list(&self, status_filter: Option<&str>, limit: u32) -> Result<Vec<ListedTask>, ArError> {
        let store = self.authority.store();
        let now = now_secs();
        let rows: Vec<(TaskRow, DenialRow)> = store
            .list_tasks(status_filter, limit)
            .await?
            .into_iter()
            .map(|(t, d)| (effective(t, now), d))
            .filter(|(t, _)| status_filter.is_none_or(|f| f == t.status.as_str()))
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for (task, denial) in rows {
            let mission = match self.local_mission(&denial.mission_id, &denial.mission_issuer).await? {
                Some(Ok(m)) => Some(m),
                _ => None,
            };
            out.push(ListedTask { task, denial, mission });
        }
        Ok(out)
    }

    /// Background work until shutdown: expire pending tasks every second; every minute, prune what
    /// the retention settings let go (see [`crate::access_store::Store::prune_access`]).
    pub async fn run_maintenance(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = 0i64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            let store = self.authority.store();
            let now = now_secs();
            match store.expire_tasks(now).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "access requests expired"),
                Err(e) => tracing::warn!(error = %e, "access request expiry failed"),
            }
            if now - last_prune >= self.settings.prune_interval_seconds {
                last_prune = now;
                let s = &self.settings;
                match store
                    .prune_access(now, s.retention_seconds, s.task_retention_seconds, s.audit_retention_seconds)
                    .await
                {
                    Ok(p) if p.total() > 0 => tracing::info!(?p, "access records pruned"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "access pruning failed"),
                }
            }
        }
    }
}

/// A task as it is at `now`: a pending one past its `expires_at` is expired (the maintenance task
/// writes that down within a second; readers do not wait for it).
fn effective(mut t: TaskRow, now: i64) -> TaskRow {
    if t.status == TaskStatus::Pending && t.expires_at <= now {
        t.status = TaskStatus::Expired;
        t.updated_at = t.expires_at;
    }
    t
}

/// The approver page's data.
#[derive(Debug)]
pub struct DenialPage {
    /// The denial.
    pub denial: DenialRow,
    /// Its tasks, newest first.
    pub tasks: Vec<TaskRow>,
    /// Its audit trail.
    pub audit: Vec<AuditRow>,
    /// The Mission, when it is this authority's.
    pub mission: Option<MissionRow>,
    /// Grants made for it.
    pub grants: Vec<GrantRow>,
}

/// A row of the approver's list.
#[derive(Debug)]
pub struct ListedTask {
    /// Task.
    pub task: TaskRow,
    /// Its denial.
    pub denial: DenialRow,
    /// The Mission, when it is this authority's.
    pub mission: Option<MissionRow>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_digest_matches_spec_vectors() {
        let p = json!({"method": "POST", "target": "https://api.partner.example/v1/payments",
                       "content_type": "application/json",
                       "body": {"to": "acct_123", "currency": "USD", "amount": "423.50"}});
        assert_eq!(digest_of_parameters(&p).unwrap(), "sha-256:yLAZIL9150YK2-jnJ3yaKg4ewwCwZbTeuW5yu5qSRZk");
        let v9 = json!({"method": "post", "target": "https://api.partner.example/v1/payments",
                        "headers": {"Idempotency-Key": "k-42"}, "content_type": "application/json",
                        "body": {"amount": "1.00"}});
        assert_eq!(digest_of_parameters(&v9).unwrap(), "sha-256:UldhSLs_XZgqm4WsxWCCcbBBP58Z_7YFyzFbZE-1Rro");
        let v1 = json!({"method": "GET", "target": "https://api.partner.example/v1/invoices?status=open&limit=10"});
        assert_eq!(digest_of_parameters(&v1).unwrap(), "sha-256:oZaAtCgeL4f6PCVrFBIdLpEJpdO9JQz4DwZ76Slp5XY");
        let v7 = json!({"method": "POST", "target": "https://api.partner.example/upload", "content_type": "text/plain",
                        "body_sha256": "BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"});
        assert_eq!(digest_of_parameters(&v7).unwrap(), "sha-256:Vg-10WbE6ITI1jhkU1Xd2_G32jL6sbxiQFQldE9WdYI");
        assert!(digest_of_parameters(&json!({"method": "GET"})).is_err());
        // An MCP tool call (SPEC §7, M1) is bound by the MCP Tool Call Profile.
        let m1 = json!({"target": "https://mcp.partner.example/mcp", "mcp_method": "tools/call", "tool": "pay_invoice",
                        "arguments": {"invoice": "inv_842", "amount": "423.50", "currency": "USD"}});
        assert_eq!(digest_of_parameters(&m1).unwrap(), "sha-256:VumVMDaxUyrb1aj7IoSEwyzXCgSy83iqcrdTFe30x_c");
        assert!(digest_of_parameters(
            &json!({"target": "x", "mcp_method": "tools/call", "tool": "t", "method": "POST"})
        )
        .is_err());
        assert!(digest_of_parameters(&json!({"method": "GET", "target": "x", "extra": 1})).is_err());
        // Version 1 shapes are refused: a body without content_type, a raw body as {"sha-256": ...}.
        let v1_json = json!({"method": "POST", "target": "https://api.partner.example/v1/payments",
                             "body": {"amount": "1.00"}});
        assert!(digest_of_parameters(&v1_json).is_err());
        let v1_raw = json!({"method": "POST", "target": "https://api.partner.example/upload",
                            "body": {"sha-256": "BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"}});
        assert!(digest_of_parameters(&v1_raw).is_err());
    }

    #[test]
    fn binding_ignores_act_and_non_mission_context() {
        let mut a: EvaluationRequest = serde_json::from_value(json!({
            "subject": {"type": "agent", "id": "a", "properties": {"act": {"sub": "x"}}},
            "resource": {"type": "egress", "id": "https://x.example"},
            "action": {"name": "http.get"},
            "context": {"mission": {"id": "m", "issuer": "https://as"}, "time": "now"}}))
        .unwrap();
        let h1 = binding_hash(&binding_object(&a));
        a.subject.properties.clear();
        a.context.other.clear();
        assert_eq!(h1, binding_hash(&binding_object(&a)));
        a.action.name = "http.post".into();
        assert_ne!(h1, binding_hash(&binding_object(&a)));
    }
}
