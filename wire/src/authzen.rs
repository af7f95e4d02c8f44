//! AuthZEN Authorization API 1.0 evaluation (SPEC §4), the Access Request and Approval Profile
//! hint, and the RFC 8908 captive-portal document of a requestable denial.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Media type of the captive-portal document (RFC 8908).
pub const CAPTIVE_CONTENT_TYPE: &str = "application/captive+json";
/// `Link` relation of the per-denial Captive Portal API URL.
pub const LINK_REL_CAPTIVE_API: &str = "captive-portal-api";
/// Path of the evaluation endpoint under the PDP base.
pub const EVALUATION_PATH: &str = "/access/v1/evaluation";
/// Path of the batch evaluations endpoint.
pub const EVALUATIONS_PATH: &str = "/access/v1/evaluations";
/// Path of the Access Request endpoint.
pub const ACCESS_REQUESTS_PATH: &str = "/access/v1/requests";

/// An AuthZEN entity (subject or resource).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Entity {
    /// Type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Id.
    pub id: String,
    /// Properties.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
}

/// An AuthZEN action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ActionEntity {
    /// Action id (`http.get`, `payments.create`, `http.connect`).
    pub name: String,
    /// Properties (`parameter_digest`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub properties: Map<String, Value>,
}

/// The Mission in an evaluation context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ContextMission {
    /// Mission id.
    pub id: String,
    /// Mission issuer.
    pub issuer: String,
    /// Authority commitment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_hash: Option<String>,
}

/// Evaluation request context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EvaluationContext {
    /// The Mission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mission: Option<ContextMission>,
    /// Anything else.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `POST /access/v1/evaluation` body (SPEC §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EvaluationRequest {
    /// The agent.
    pub subject: Entity,
    /// The destination (`type: egress`, `id: origin`).
    pub resource: Entity,
    /// The action.
    pub action: ActionEntity,
    /// Mission and more.
    #[serde(default)]
    pub context: EvaluationContext,
}

/// Conditions on a permit. An unknown member means deny (kept in `unknown`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Conditions {
    /// RFC 3339: the permit may be used until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<String>,
    /// The permit covers exactly this digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_digest: Option<String>,
    /// How many times the permit may be used (1 = single use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_limit: Option<u64>,
    /// Members the receiver does not understand.
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

/// Display text for people (never shown as markup).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Display {
    /// Short title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Longer description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// The Access Request hint of a requestable denial (ARAP `context.access_request`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct AccessRequestHint {
    /// Where to submit the request.
    pub endpoint: String,
    /// The denial may be requested until then (RFC 3339).
    pub expires_at: String,
    /// JWS by the PDP binding the request to this denial.
    pub binding_token: String,
    /// Text for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display: Option<Display>,
}

/// Evaluation response context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResponseContext {
    /// Id of this evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation_id: Option<String>,
    /// Why (on deny).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `request` when the denial is requestable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_action: Option<String>,
    /// The hint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_request: Option<AccessRequestHint>,
    /// Permit conditions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Conditions>,
    /// Per-denial Captive Portal API URL (for the `Link` header).
    #[serde(default, rename = "captive_portal_api", skip_serializing_if = "Option::is_none")]
    pub captive_portal_api: Option<String>,
    /// Page for people.
    #[serde(default, rename = "user_portal_url", skip_serializing_if = "Option::is_none")]
    pub user_portal_url: Option<String>,
    /// Anything else.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `POST /access/v1/evaluation` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct EvaluationResponse {
    /// The decision.
    pub decision: bool,
    /// Context.
    #[serde(default)]
    pub context: ResponseContext,
}

/// The `context` of the captive document's `access-request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CaptiveAccessContext {
    /// Evaluation id.
    pub evaluation_id: String,
    /// Reason (`egress_not_allowed`, `approval_required`, ...).
    pub reason: String,
    /// The Mission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mission: Option<ContextMission>,
    /// Where and how to ask.
    pub access_request: AccessRequestHint,
}

/// The `access-request` member of the captive document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CaptiveAccessRequest {
    /// Agent.
    pub subject: Entity,
    /// Destination.
    pub resource: Entity,
    /// Action.
    pub action: ActionEntity,
    /// Context.
    pub context: CaptiveAccessContext,
}

/// The RFC 8908 document (with the egress profile's `access-request`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CaptiveDocument {
    /// True while blocked.
    pub captive: bool,
    /// Page for people (agents must not be sent there).
    #[serde(rename = "user-portal-url", default, skip_serializing_if = "Option::is_none")]
    pub user_portal_url: Option<String>,
    /// Seconds left on an approval (when not captive).
    #[serde(rename = "seconds-remaining", default, skip_serializing_if = "Option::is_none")]
    pub seconds_remaining: Option<i64>,
    /// The access request to submit.
    #[serde(rename = "access-request", default, skip_serializing_if = "Option::is_none")]
    pub access_request: Option<CaptiveAccessRequest>,
}
