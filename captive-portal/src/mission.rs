//! The Mission domain: Mission Intent validation, the integrity anchors (`intent_hash`,
//! `authority_hash`), the lifecycle state machine and token audiences.
//!
//! Nothing here does I/O or reads the clock: callers pass `now`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use missiongate_wire::claims::{MissionState, RAR_MISSION_RESOURCE_ACCESS};
use missiongate_wire::digest::{envelope_hash, TYP_MISSION_AUTHORITY_SET, TYP_MISSION_INTENT};
use missiongate_wire::time::parse_rfc3339;

/// Longest accepted `goal`, in bytes.
pub const MAX_GOAL_BYTES: usize = 4096;
/// Most entries in `resources` or in the Authority Set.
pub const MAX_ENTRIES: usize = 64;
/// Longest accepted URI, in bytes.
pub const MAX_URI_BYTES: usize = 2048;
/// Longest accepted `client_id`, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 256;

/// The Mission Intent: what the Mission is for. `intent_hash` commits to exactly these members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intent {
    /// What the agent is asked to do, in words.
    pub goal: String,
    /// The resources (absolute URIs) the Mission is about.
    pub resources: Vec<String>,
    /// When the Mission ends at the latest (RFC 3339).
    pub expires_at: String,
}

/// Body of `POST /operator/missions`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMission {
    /// The Mission Intent.
    pub intent: Intent,
    /// The requested Authority Set: `mission_resource_access` entries (RFC 9396), kept as submitted.
    pub authorization_details: Vec<Value>,
    /// The OAuth client (the agent) that will hold tokens for this Mission.
    pub client_id: String,
}

/// A Mission request that passed validation.
#[derive(Debug, Clone)]
pub struct ValidatedMission {
    /// The intent as submitted.
    pub intent: Intent,
    /// `expires_at` as Unix seconds.
    pub expires_at: i64,
    /// The Authority Set as submitted.
    pub authority: Vec<Value>,
    /// The client.
    pub client_id: String,
}

/// Why a Mission request is refused. The message is for the operator and names the bad member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn invalid<T>(msg: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(msg.into()))
}

impl CreateMission {
    /// Check every member; `now` is used to refuse an `expires_at` in the past.
    pub fn validate(self, now: i64) -> Result<ValidatedMission, Invalid> {
        let intent = self.intent;
        if intent.goal.trim().is_empty() {
            return invalid("intent.goal must not be empty");
        }
        if intent.goal.len() > MAX_GOAL_BYTES {
            return invalid(format!("intent.goal is longer than {MAX_GOAL_BYTES} bytes"));
        }
        if intent.resources.is_empty() {
            return invalid("intent.resources must name at least one resource");
        }
        if intent.resources.len() > MAX_ENTRIES {
            return invalid(format!("intent.resources has more than {MAX_ENTRIES} entries"));
        }
        for (i, r) in intent.resources.iter().enumerate() {
            check_resource_uri(r, false).map_err(|e| Invalid(format!("intent.resources[{i}]: {e}")))?;
        }
        let Some(expires_at) = parse_rfc3339(&intent.expires_at) else {
            return invalid("intent.expires_at is not an RFC 3339 date-time");
        };
        if expires_at <= now {
            return invalid("intent.expires_at is not in the future");
        }
        if self.authorization_details.is_empty() {
            return invalid("authorization_details must hold at least one mission_resource_access entry");
        }
        if self.authorization_details.len() > MAX_ENTRIES {
            return invalid(format!("authorization_details has more than {MAX_ENTRIES} entries"));
        }
        for (i, entry) in self.authorization_details.iter().enumerate() {
            check_entry(entry).map_err(|e| Invalid(format!("authorization_details[{i}]: {e}")))?;
        }
        let client_id = self.client_id;
        if client_id.is_empty() || client_id.len() > MAX_CLIENT_ID_BYTES {
            return invalid(format!("client_id must be 1 to {MAX_CLIENT_ID_BYTES} bytes"));
        }
        if !client_id.bytes().all(|b| b.is_ascii_graphic()) {
            return invalid("client_id must be printable ASCII without spaces");
        }
        Ok(ValidatedMission { intent, expires_at, authority: self.authorization_details, client_id })
    }
}

/// Members a `mission_resource_access` entry may carry (standards.md §3.3).
const ENTRY_MEMBERS: [&str; 6] = ["type", "resource", "resource_match", "actions", "constraints", "delegation"];

/// One Authority Set entry: the grammar of [`missiongate_wire::rar`] (the one the gateway matches
/// with), then the rules of issuance on top.
pub fn check_entry(entry: &Value) -> Result<(), String> {
    use missiongate_wire::rar::{parse_entry, EntryError};
    let Value::Object(obj) = entry else {
        return Err("must be a JSON object".into());
    };
    if let Some(unknown) = obj.keys().find(|k| !ENTRY_MEMBERS.contains(&k.as_str())) {
        return Err(format!("unknown member {unknown:?}"));
    }
    let resource = obj.get("resource").and_then(Value::as_str).unwrap_or("");
    parse_entry(entry, &[RAR_MISSION_RESOURCE_ACCESS]).map_err(|e| match e {
        EntryError::NotObject => "must be a JSON object".to_owned(),
        EntryError::Type => format!("type must be {RAR_MISSION_RESOURCE_ACCESS:?}"),
        EntryError::ResourceMatch => "resource_match must be \"exact\" or \"prefix\"".to_owned(),
        EntryError::ResourceNotString => "resource must be a string".to_owned(),
        // An entry's resource names an origin (the whole destination) or a path, never a query: the
        // gateway matches origin and path only (SPEC §2).
        EntryError::Resource => match check_resource_uri(resource, true) {
            Err(e) => format!("resource: {e}"),
            Ok(()) => "resource: not an origin and path the gateway can match".to_owned(),
        },
        EntryError::ActionsNotArray => "actions must be an array of action ids".to_owned(),
        EntryError::Action => "actions: each action is an id [A-Za-z0-9_.:-]+ or a family name.*".to_owned(),
    })?;
    check_resource_uri(resource, true).map_err(|e| format!("resource: {e}"))?;
    if obj.get("actions").and_then(Value::as_array).is_some_and(Vec::is_empty) {
        return Err("actions must not be empty".into());
    }
    // Exactly the constraint shapes a gateway can check (SPEC §2): an entry with any other would
    // permit nothing at the edge, so it is refused here rather than issued.
    if let Some(c) = obj.get("constraints") {
        missiongate_wire::constraints::parse_constraints(c)?;
    }
    if let Some(d) = obj.get("delegation") {
        let ok = d.as_object().and_then(|d| d.get("max_depth")).is_some_and(|m| m.as_u64().is_some());
        if !ok {
            return Err("delegation must be an object with an integer max_depth".into());
        }
    }
    Ok(())
}

/// An action id (`[A-Za-z0-9_.:-]+`) or a family `name.*`.
pub fn is_action_id(s: &str) -> bool {
    missiongate_wire::rar::action_pattern(s).is_some()
}

/// An absolute `http`/`https` URI with a host, no user info and no fragment; with `no_query` (an
/// Authority Set entry), no query either.
fn check_resource_uri(s: &str, no_query: bool) -> Result<(), String> {
    if s.len() > MAX_URI_BYTES {
        return Err(format!("longer than {MAX_URI_BYTES} bytes"));
    }
    let url = url::Url::parse(s).map_err(|e| format!("not an absolute URI ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("scheme must be http or https".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("user info is not allowed".into());
    }
    if url.fragment().is_some() {
        return Err("a fragment is not allowed".into());
    }
    if no_query && url.query().is_some() {
        return Err("an authority resource has no query".into());
    }
    Ok(())
}

/// The origin `scheme://host[:port]` of a resource URI (lower-case, default port removed), SPEC §4.
pub fn origin_of(resource: &str) -> Option<String> {
    missiongate_wire::uri::parse_resource(resource.split(['?', '#']).next().unwrap_or("")).map(|(origin, _)| origin)
}

/// The token audience: the distinct origins of the Authority Set's resources, in first-seen order.
pub fn audiences(authority: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in authority {
        if let Some(origin) = entry.get("resource").and_then(Value::as_str).and_then(origin_of) {
            if !out.contains(&origin) {
                out.push(origin);
            }
        }
    }
    out
}

/// `intent_hash`: envelope `mission-intent` over `{goal, resources, expires_at}` (standards.md §3.4).
pub fn intent_hash(issuer: &str, intent: &Intent) -> String {
    let mut value = Map::new();
    value.insert("goal".into(), Value::String(intent.goal.clone()));
    value.insert("resources".into(), Value::Array(intent.resources.iter().cloned().map(Value::String).collect()));
    value.insert("expires_at".into(), Value::String(intent.expires_at.clone()));
    envelope_hash(TYP_MISSION_INTENT, issuer, &Value::Object(value))
}

/// `authority_hash`: envelope `mission-authority-set` over the array of entries, order kept.
pub fn authority_hash(issuer: &str, authority: &[Value]) -> String {
    envelope_hash(TYP_MISSION_AUTHORITY_SET, issuer, &Value::Array(authority.to_vec()))
}

/// A lifecycle action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `pending_approval` → `active`.
    Approve,
    /// `pending_approval` → `rejected`.
    Reject,
    /// `active` → `suspended`.
    Suspend,
    /// `suspended` → `active`.
    Resume,
    /// `active` / `suspended` → `revoked`.
    Revoke,
    /// `active` / `suspended` → `completed`.
    Complete,
    /// Any non-terminal state → `expired`, by the clock.
    Expire,
}

impl Action {
    /// Parse the path segment of a lifecycle endpoint.
    pub fn from_name(name: &str) -> Option<Action> {
        Some(match name {
            "approve" => Action::Approve,
            "reject" => Action::Reject,
            "suspend" => Action::Suspend,
            "resume" => Action::Resume,
            "revoke" => Action::Revoke,
            "complete" => Action::Complete,
            _ => return None,
        })
    }
    /// The name used in paths and logs.
    pub fn name(self) -> &'static str {
        match self {
            Action::Approve => "approve",
            Action::Reject => "reject",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Revoke => "revoke",
            Action::Complete => "complete",
            Action::Expire => "expire",
        }
    }
}

/// The state after `action` from `from`, or `None` when the transition is illegal.
///
/// Terminal states absorb everything; states this implementation does not name accept nothing.
pub fn next_state(from: &MissionState, action: Action) -> Option<MissionState> {
    use MissionState as S;
    match (from, action) {
        (S::PendingApproval, Action::Approve) => Some(S::Active),
        (S::PendingApproval, Action::Reject) => Some(S::Rejected),
        (S::Active, Action::Suspend) => Some(S::Suspended),
        (S::Suspended, Action::Resume) => Some(S::Active),
        (S::Active | S::Suspended, Action::Revoke) => Some(S::Revoked),
        (S::Active | S::Suspended, Action::Complete) => Some(S::Completed),
        (S::PendingApproval | S::Active | S::Suspended, Action::Expire) => Some(S::Expired),
        _ => None,
    }
}

/// True when the clock has ended a Mission in `state` that expires at `expires_at`.
pub fn expiry_due(state: &MissionState, expires_at: i64, now: i64) -> bool {
    next_state(state, Action::Expire).is_some() && now >= expires_at
}

/// The diagnostic `mission_error` for a token refused because the Mission is not active.
pub fn mission_error(state: &MissionState) -> &'static str {
    match state {
        MissionState::Revoked => "mission_revoked",
        MissionState::Expired => "mission_expired",
        MissionState::Superseded => "mission_superseded",
        _ => "mission_inactive",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AS: &str = "https://as.example.com";

    /// standards.md §3.4, through the same code path the server uses (JSON body → validate → hash).
    #[test]
    fn reproduces_standards_vectors() {
        let body = json!({
            "intent": {"goal": "Reconcile Q3 invoices", "resources": ["https://erp.example.com"],
                       "expires_at": "2026-12-31T23:59:59Z"},
            "authorization_details": [
                {"type": "mission_resource_access", "resource": "https://erp.example.com", "actions": ["invoices.read"]},
                {"type": "mission_resource_access", "resource": "https://erp.example.com",
                 "actions": ["journal-entries.write"],
                 "constraints": {"max_amount": {"amount": "500.00", "currency": "USD"}}}
            ],
            "client_id": "s6BhdRkqt3"
        });
        let bytes = serde_json::to_vec(&body).unwrap();
        let parsed = missiongate_wire::jcs::parse_ijson(&bytes).unwrap();
        let req: CreateMission = serde_json::from_value(parsed).unwrap();
        let m = req.validate(1_700_000_000).unwrap();
        assert_eq!(intent_hash(AS, &m.intent), "sha-256:6mIFoCz79uCHNzKLfBpBwqFjoFXdpmpuc65486IqimQ");
        assert_eq!(authority_hash(AS, &m.authority), "sha-256:vUCCfjGulit9u0qJ0Z6pQSNerZtXMqRlfJNCr4PzLro");
        let canonical = missiongate_wire::digest::envelope_canonical(
            TYP_MISSION_AUTHORITY_SET,
            AS,
            &Value::Array(m.authority.clone()),
        );
        assert_eq!(
            String::from_utf8(canonical).unwrap(),
            r#"{"iss":"https://as.example.com","typ":"mission-authority-set","value":[{"actions":["invoices.read"],"resource":"https://erp.example.com","type":"mission_resource_access"},{"actions":["journal-entries.write"],"constraints":{"max_amount":{"amount":"500.00","currency":"USD"}},"resource":"https://erp.example.com","type":"mission_resource_access"}]}"#
        );
        // The issuer is part of the envelope.
        assert_ne!(intent_hash("https://other.example", &m.intent), intent_hash(AS, &m.intent));
    }

    fn body(entries: Value) -> CreateMission {
        serde_json::from_value(json!({
            "intent": {"goal": "g", "resources": ["https://a.example"], "expires_at": "2030-01-01T00:00:00Z"},
            "authorization_details": entries, "client_id": "agent-7"
        }))
        .unwrap()
    }

    #[test]
    fn validation_refuses_bad_entries() {
        let now = 1_700_000_000;
        let ok = json!([{"type": "mission_resource_access", "resource": "https://a.example/v1", "actions": ["http.*"],
                         "resource_match": "prefix"}]);
        assert!(body(ok).validate(now).is_ok());
        // The drafts' own shape: an origin-only resource (the whole destination), with or without `/`.
        for origin in ["https://a.example", "https://a.example/", "https://a.example:8443"] {
            let ok = json!([{"type": "mission_resource_access", "resource": origin, "actions": ["invoices.read"]}]);
            assert!(body(ok).validate(now).is_ok(), "{origin}");
        }
        // The constraints a gateway checks: max_amount, tenant, deployment-defined lists.
        let ok = json!([{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["payments.create"],
                         "constraints": {"max_amount": {"amount": "500.00", "currency": "USD"}, "tenant": "t-1",
                                         "vendors": ["acme", "globex"]}}]);
        assert!(body(ok).validate(now).is_ok());
        for (bad, why) in [
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example/v1?x=1", "actions": ["x"]}]),
                "query",
            ),
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example/v1?", "actions": ["x"],
                     "resource_match": "exact"}]),
                "query",
            ),
            (json!([]), "at least one"),
            (json!([{"type": "resource_access", "resource": "https://a.example", "actions": ["x"]}]), "type"),
            (json!([{"type": "mission_resource_access", "resource": "a.example", "actions": ["x"]}]), "absolute"),
            (json!([{"type": "mission_resource_access", "resource": "ftp://a.example", "actions": ["x"]}]), "scheme"),
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example#f", "actions": ["x"]}]),
                "fragment",
            ),
            (
                json!([{"type": "mission_resource_access", "resource": "https://u@a.example", "actions": ["x"]}]),
                "user info",
            ),
            (json!([{"type": "mission_resource_access", "resource": "https://a.example", "actions": []}]), "empty"),
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["a b"]}]),
                "action",
            ),
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["x"],
                     "resource_match": "regex"}]),
                "resource_match",
            ),
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example?q", "actions": ["x"],
                     "resource_match": "prefix"}]),
                "query",
            ),
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["x"], "extra": 1}]),
                "unknown",
            ),
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["x"], "constraints": []}]),
                "constraints",
            ),
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["x"],
                     "constraints": {"max_amount": {"amount": "1e3", "currency": "USD"}}}]),
                "max_amount.amount",
            ),
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["x"],
                     "constraints": {"max_amount": {"amount": "10", "currency": "dollars"}}}]),
                "currency",
            ),
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["x"],
                     "constraints": {"tenant": ["t"]}}]),
                "tenant",
            ),
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["x"],
                     "constraints": {"vendors": "acme"}}]),
                "vendors",
            ),
            (
                json!([{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["x"],
                     "constraints": {"time window": ["a"]}}]),
                "constraint name",
            ),
        ] {
            let err = body(bad).validate(now).unwrap_err();
            assert!(err.0.contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn validation_refuses_bad_intent() {
        let mut b =
            body(json!([{"type": "mission_resource_access", "resource": "https://a.example", "actions": ["x"]}]));
        b.intent.expires_at = "2020-01-01T00:00:00Z".into();
        assert!(b.clone().validate(1_700_000_000).unwrap_err().0.contains("future"));
        b.intent.expires_at = "tomorrow".into();
        assert!(b.clone().validate(1_700_000_000).unwrap_err().0.contains("RFC 3339"));
        b.intent.expires_at = "2030-01-01T00:00:00Z".into();
        b.client_id = "has space".into();
        assert!(b.validate(1_700_000_000).is_err());
        let unknown: Result<CreateMission, _> = serde_json::from_value(json!({
            "intent": {"goal": "g", "resources": [], "expires_at": "x", "extra": 1},
            "authorization_details": [], "client_id": "c"}));
        assert!(unknown.is_err());
    }

    #[test]
    fn audiences_are_distinct_normalised_origins() {
        let set = vec![
            json!({"resource": "https://API.Example.com:443/v1"}),
            json!({"resource": "https://api.example.com/v2"}),
            json!({"resource": "http://api.example.com:80/"}),
            json!({"resource": "http://api.example.com:8080/x"}),
        ];
        assert_eq!(
            audiences(&set),
            vec!["https://api.example.com", "http://api.example.com", "http://api.example.com:8080"]
        );
    }

    #[test]
    fn state_machine() {
        use MissionState as S;
        assert_eq!(next_state(&S::PendingApproval, Action::Approve), Some(S::Active));
        assert_eq!(next_state(&S::PendingApproval, Action::Suspend), None);
        assert_eq!(next_state(&S::Active, Action::Suspend), Some(S::Suspended));
        assert_eq!(next_state(&S::Active, Action::Resume), None);
        assert_eq!(next_state(&S::Suspended, Action::Resume), Some(S::Active));
        assert_eq!(next_state(&S::Suspended, Action::Revoke), Some(S::Revoked));
        assert_eq!(next_state(&S::Suspended, Action::Complete), Some(S::Completed));
        for terminal in
            [S::Revoked, S::Completed, S::Expired, S::Rejected, S::Superseded, S::Cascaded, S::Other("x".into())]
        {
            for a in [
                Action::Approve,
                Action::Reject,
                Action::Suspend,
                Action::Resume,
                Action::Revoke,
                Action::Complete,
                Action::Expire,
            ] {
                assert_eq!(next_state(&terminal, a), None, "{terminal} {a:?}");
            }
        }
        assert!(expiry_due(&S::Active, 10, 10));
        assert!(!expiry_due(&S::Active, 11, 10));
        assert!(!expiry_due(&S::Revoked, 10, 20));
        assert_eq!(mission_error(&S::Suspended), "mission_inactive");
        assert_eq!(mission_error(&S::Revoked), "mission_revoked");
    }
}
