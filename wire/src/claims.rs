//! Claims of the JWTs that cross the wire: Mission-bound access tokens (SPEC §2), Mission Status
//! responses (SPEC §3), DPoP proofs (RFC 9449) and state-event SETs (RFC 8417).

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// JOSE `typ` values accepted for access tokens (RFC 9068 §4).
pub const TYP_ACCESS_TOKEN: [&str; 2] = ["at+jwt", "application/at+jwt"];
/// JOSE `typ` of a Mission Status response.
pub const TYP_MISSION_STATUS: &str = "mission-status-response+jwt";
/// JOSE `typ` of a DPoP proof.
pub const TYP_DPOP: &str = "dpop+jwt";
/// JOSE `typ` of a Security Event Token (RFC 8417 §2.3).
pub const TYP_SET: &str = "secevent+jwt";
/// Event type URI of a Mission lifecycle change inside a SET (`draft-mcguinness-oauth-mission-signals`,
/// `mission.lifecycle-change`).
pub const EVENT_MISSION_LIFECYCLE_CHANGE: &str = "https://schemas.karlmcguinness.com/mission/lifecycle-change";
/// The same URI under its older name in this code base.
pub const EVENT_MISSION_STATE: &str = EVENT_MISSION_LIFECYCLE_CHANGE;
/// Media type a Mission Status request asks for (`Accept`).
pub const MEDIA_MISSION_STATUS: &str = "application/mission-status-response+jwt";
/// `authorization_details` type carrying Mission authority.
pub const RAR_MISSION_RESOURCE_ACCESS: &str = "mission_resource_access";
/// Older name of the same type, still honoured.
pub const RAR_RESOURCE_ACCESS_LEGACY: &str = "resource_access";

/// Longest `jti` or `nonce` a gateway or portal accepts (token, DPoP proof).
pub const MAX_ID_LEN: usize = 256;

/// A `jti` or `nonce` safe to keep in replay storage and to write to evidence: 1 to [`MAX_ID_LEN`]
/// visible ASCII characters (`!` to `~`). A control character, a space (the replay ledger's
/// separator), anything beyond ASCII or an overlong value is refused by the caller, never stored.
pub fn is_safe_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

/// NumericDate (RFC 7519 §2): seconds, possibly fractional; stored floored to whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct NumericDate(pub i64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = serde_json::Number::deserialize(d)?;
        if let Some(i) = n.as_i64() {
            return Ok(NumericDate(i));
        }
        match n.as_f64() {
            Some(f) if f.is_finite() && f.abs() < 1e15 => Ok(NumericDate(f.floor() as i64)),
            _ => Err(serde::de::Error::custom("NumericDate out of range")),
        }
    }
}

/// `aud`: a string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// True when `aud` names `wanted`.
    pub fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(a) => a == wanted,
            Audience::Many(v) => v.iter().any(|a| a == wanted),
        }
    }
}

/// The `mission` claim (SPEC §2). An open object: unknown members are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct MissionClaim {
    /// Mission Identifier.
    pub id: String,
    /// Mission Issuer, the state authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Older name of `issuer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// `sha-256:` commitment over the consented Authority Set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_hash: Option<String>,
}

impl MissionClaim {
    /// The Mission issuer: `issuer`, or `origin` when it is the only one; both must agree.
    pub fn effective_issuer(&self) -> Result<&str, &'static str> {
        match (self.issuer.as_deref(), self.origin.as_deref()) {
            (Some(i), Some(o)) if i != o => Err("mission.issuer and mission.origin differ"),
            (Some(i), _) | (None, Some(i)) => Ok(i),
            (None, None) => Err("mission.issuer missing"),
        }
    }
}

/// `cnf` (RFC 7800): only `jkt` (RFC 9449) is understood.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Confirmation {
    /// JWK SHA-256 thumbprint of the DPoP key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// Any other confirmation method makes the token unusable here (it cannot be proven).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Claims of a Mission-bound access token (RFC 9068 + SPEC §2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Token issuer.
    pub iss: String,
    /// Subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience(s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<NumericDate>,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<NumericDate>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<NumericDate>,
    /// Token id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// OAuth client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The Mission this token is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mission: Option<MissionClaim>,
    /// RFC 9396 entries; kept raw so one malformed entry cannot void the others.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_details: Vec<serde_json::Value>,
    /// Sender constraint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// A `mission_resource_access` entry, as minted by an authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissionResourceAccess {
    /// Always `mission_resource_access`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Absolute URI of the destination.
    pub resource: String,
    /// `exact` (default) or `prefix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_match: Option<String>,
    /// Action ids or `name.*` families.
    pub actions: Vec<String>,
    /// Constraints; any the enforcer does not know makes the entry unenforceable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraints: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Mission lifecycle state (SPEC §3). Only [`MissionState::Active`] permits anything.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MissionState {
    /// Awaiting a person's approval.
    PendingApproval,
    /// The only permitting state.
    Active,
    /// Paused; may resume.
    Suspended,
    /// Terminal.
    Revoked,
    /// Terminal.
    Completed,
    /// Terminal.
    Expired,
    /// Terminal (never approved).
    Rejected,
    /// Terminal.
    Superseded,
    /// Terminal.
    Cascaded,
    /// A state this implementation does not name; permits nothing.
    Other(String),
}

impl MissionState {
    /// Parse any string; unknown values become [`MissionState::Other`].
    pub fn parse(s: &str) -> MissionState {
        match s {
            "pending_approval" => MissionState::PendingApproval,
            "active" => MissionState::Active,
            "suspended" => MissionState::Suspended,
            "revoked" => MissionState::Revoked,
            "completed" => MissionState::Completed,
            "expired" => MissionState::Expired,
            "rejected" => MissionState::Rejected,
            "superseded" => MissionState::Superseded,
            "cascaded" => MissionState::Cascaded,
            other => MissionState::Other(other.to_owned()),
        }
    }
    /// Wire name.
    pub fn as_str(&self) -> &str {
        match self {
            MissionState::PendingApproval => "pending_approval",
            MissionState::Active => "active",
            MissionState::Suspended => "suspended",
            MissionState::Revoked => "revoked",
            MissionState::Completed => "completed",
            MissionState::Expired => "expired",
            MissionState::Rejected => "rejected",
            MissionState::Superseded => "superseded",
            MissionState::Cascaded => "cascaded",
            MissionState::Other(s) => s,
        }
    }
    /// Only the exact state `active` permits.
    pub fn is_active(&self) -> bool {
        matches!(self, MissionState::Active)
    }
    /// Terminal states never change again.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            MissionState::Revoked
                | MissionState::Completed
                | MissionState::Expired
                | MissionState::Rejected
                | MissionState::Superseded
                | MissionState::Cascaded
        )
    }
}

impl fmt::Display for MissionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MissionState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MissionState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(MissionState::parse(&s))
    }
}

/// The `mission` member of a Mission Status response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissionStatusMission {
    /// Mission id.
    pub id: String,
    /// Mission issuer.
    pub issuer: String,
    /// Current state.
    pub state: MissionState,
    /// Monotonic per-Mission version.
    pub version: u64,
    /// Mission expiry (RFC 3339), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The answer may be relied on until this instant (RFC 3339) and never after.
    pub fresh_until: String,
    /// Authority commitment, when disclosed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_hash: Option<String>,
}

/// Payload of a `mission-status-response+jwt`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MissionStatusClaims {
    /// The authority.
    pub iss: String,
    /// The audience that asked.
    pub aud: Audience,
    /// Echo of the request nonce.
    pub nonce: String,
    /// Issued at.
    pub iat: NumericDate,
    /// Expiry of this response.
    pub exp: NumericDate,
    /// Optional subject (client id of the asker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The Mission.
    pub mission: MissionStatusMission,
    /// The audience-filtered current Authority Set, when the authority discloses it (containment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_details: Option<Vec<serde_json::Value>>,
}

/// The error body of the Mission Status endpoint (`draft-mcguinness-oauth-mission-status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissionStatusError {
    /// Error code (`not_found`, `invalid_request`, ...).
    pub error: String,
    /// Human-readable description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// Echo of the request nonce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// Payload of a DPoP proof (RFC 9449 §4.2).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DpopClaims {
    /// Unique id, for replay detection.
    pub jti: String,
    /// HTTP method.
    pub htm: String,
    /// HTTP target URI without query and fragment.
    pub htu: String,
    /// Creation time.
    pub iat: NumericDate,
    /// base64url SHA-256 of the access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ath: Option<String>,
    /// Server nonce, when one was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
}

/// The identity members of the `mission` object of a lifecycle-change event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissionRef {
    /// Mission id.
    pub id: String,
    /// Mission issuer.
    pub issuer: String,
}

/// The `mission.lifecycle-change` event inside a SET (`draft-mcguinness-oauth-mission-signals`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissionLifecycleChange {
    /// The Mission.
    pub mission: MissionRef,
    /// New state.
    pub state: MissionState,
    /// State before the transition (absent on the approval emission).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prior_state: Option<MissionState>,
    /// The Mission's state version at this event's commit (monotonic).
    pub version: u64,
    /// When the transition was committed (RFC 3339).
    pub committed_at: String,
    /// The Mission's expiry (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Successor Mission id (on `superseded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
    /// The Authority Set changed: refetch Mission Status for the new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority_changed: Option<bool>,
}

/// Payload of a state-event SET (RFC 8417). `events` holds [`EVENT_MISSION_LIFECYCLE_CHANGE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetClaims {
    /// The authority.
    pub iss: String,
    /// Issued at.
    pub iat: NumericDate,
    /// Unique SET id, acknowledged by the receiver.
    pub jti: String,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Event payloads by event type URI.
    pub events: serde_json::Map<String, serde_json::Value>,
}

impl SetClaims {
    /// The Mission lifecycle-change event carried, if this SET has a well-formed one.
    pub fn mission_state(&self) -> Option<MissionLifecycleChange> {
        let v = self.events.get(EVENT_MISSION_LIFECYCLE_CHANGE)?;
        serde_json::from_value(v.clone()).ok()
    }
}

/// RFC 8936 poll request.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PollRequest {
    /// SET ids acknowledged.
    #[serde(default)]
    pub ack: Vec<String>,
    /// SETs received but refused, by `jti` (RFC 8936 §2.4.4): acknowledged too.
    #[serde(default, rename = "setErrs", skip_serializing_if = "serde_json::Map::is_empty")]
    pub set_errs: serde_json::Map<String, serde_json::Value>,
    /// At most this many SETs in the answer.
    #[serde(default, rename = "maxEvents", skip_serializing_if = "Option::is_none")]
    pub max_events: Option<u32>,
    /// False asks for a long poll.
    #[serde(default, rename = "returnImmediately", skip_serializing_if = "Option::is_none")]
    pub return_immediately: Option<bool>,
}

/// RFC 8936 poll response.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct PollResponse {
    /// SETs by `jti`.
    pub sets: serde_json::Map<String, serde_json::Value>,
    /// More are waiting.
    #[serde(default, rename = "moreAvailable")]
    pub more_available: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_ids_are_visible_ascii_and_bounded() {
        for ok in ["a", "p-1", "0f8fad5b-d9cb-469f-a165-70867728950e", "~!x", &"x".repeat(MAX_ID_LEN)] {
            assert!(is_safe_id(ok), "{ok:?}");
        }
        let long = "x".repeat(MAX_ID_LEN + 1);
        for bad in ["", " ", "a b", "a\nb", "a\rb", "\u{0}", "tab\t", "del\u{7f}", "caf\u{e9}", "\u{202e}x", &long] {
            assert!(!is_safe_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn mission_issuer_and_origin() {
        let m: MissionClaim = serde_json::from_str(r#"{"id":"m","origin":"https://as"}"#).unwrap();
        assert_eq!(m.effective_issuer(), Ok("https://as"));
        let m: MissionClaim =
            serde_json::from_str(r#"{"id":"m","issuer":"https://as","origin":"https://other"}"#).unwrap();
        assert!(m.effective_issuer().is_err());
        let m: MissionClaim = serde_json::from_str(r#"{"id":"m","extra":{"x":1}}"#).unwrap();
        assert!(m.effective_issuer().is_err());
    }

    #[test]
    fn states_unknown_permit_nothing() {
        let s: MissionState = serde_json::from_str("\"Active\"").unwrap();
        assert!(!s.is_active());
        assert!(MissionState::parse("active").is_active());
        assert_eq!(serde_json::to_string(&MissionState::parse("weird")).unwrap(), "\"weird\"");
    }

    #[test]
    fn numeric_date_accepts_fractions_rejects_huge() {
        let d: NumericDate = serde_json::from_str("1700000000.9").unwrap();
        assert_eq!(d.0, 1_700_000_000);
        assert!(serde_json::from_str::<NumericDate>("1e300").is_err());
        assert!(serde_json::from_str::<NumericDate>("\"1\"").is_err());
    }
}
