//! Decisions: every failure mode has its own reason, status, challenge and counter (SPEC §5), and
//! every decision produces one evidence record.

use missiongate_wire::authzen::{CaptiveDocument, CAPTIVE_CONTENT_TYPE, LINK_REL_CAPTIVE_API};
use missiongate_wire::problem::{Problem, ProblemMission, CONTENT_TYPE};
use serde::Serialize;

/// Why a request was allowed or refused. The wire name is the problem `reason` and the counter suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Reason {
    Allowed,
    NoCredentials,
    MalformedRequest,
    TokenMalformed,
    TokenTooLarge,
    AlgNotAllowed,
    WrongTyp,
    UnknownKey,
    BadSignature,
    UnknownIssuer,
    WrongAudience,
    TokenExpired,
    TokenNotYetValid,
    TokenLifetimeExceeded,
    MissionClaimMissing,
    UntrustedMissionIssuer,
    UnsupportedConfirmation,
    DpopBoundAsBearer,
    InvalidDpopProof,
    DpopReplay,
    MissionInactive,
    MissionUnknown,
    InsufficientAuthority,
    ConstraintUnrecognized,
    EgressNotAllowed,
    PdpDenied,
    ParameterViolation,
    BodyNotCanonicalizable,
    BodyTooLarge,
    KeysUnavailable,
    AuthorityUnavailable,
    PdpUnavailable,
    /// The gateway itself could not decide (a host call failed, the engine was not ready): 503.
    GatewayError,
    /// The bounded single-use/DPoP replay ledger has no room for one more key: 503 + Retry-After.
    ReplayStoreFull,
    /// A request path an upstream could resolve to another resource than the one decided on: 400.
    AmbiguousPath,
    /// A POST to an MCP endpoint whose body is not one JSON-RPC 2.0 message: 400.
    McpMalformed,
    /// A JSON-RPC batch (an array) to an MCP endpoint: 400 (current MCP revisions have none).
    McpBatchRefused,
    /// A `tools/call` whose tool name is outside `[A-Za-z0-9_.-]{1,128}`: 400.
    McpToolNameInvalid,
    /// `Mcp-Method` / `Mcp-Name` headers that differ from the JSON-RPC body: 400.
    McpHeaderMismatch,
}

impl Serialize for Reason {
    /// Serialised as its wire name, as the evidence record has always carried it.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome an evidence record carries: `allow` or `deny` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// The request was (or, in shadow mode, would have been) forwarded.
    Allow,
    /// The request was (or, in shadow mode, would have been) refused.
    Deny,
}

impl Decision {
    /// Wire name: `allow` or `deny`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
        }
    }
}

impl Serialize for Decision {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every reason, for counter definition.
pub const ALL_REASONS: [Reason; 39] = [
    Reason::Allowed,
    Reason::NoCredentials,
    Reason::MalformedRequest,
    Reason::TokenMalformed,
    Reason::TokenTooLarge,
    Reason::AlgNotAllowed,
    Reason::WrongTyp,
    Reason::UnknownKey,
    Reason::BadSignature,
    Reason::UnknownIssuer,
    Reason::WrongAudience,
    Reason::TokenExpired,
    Reason::TokenNotYetValid,
    Reason::TokenLifetimeExceeded,
    Reason::MissionClaimMissing,
    Reason::UntrustedMissionIssuer,
    Reason::UnsupportedConfirmation,
    Reason::DpopBoundAsBearer,
    Reason::InvalidDpopProof,
    Reason::DpopReplay,
    Reason::MissionInactive,
    Reason::MissionUnknown,
    Reason::InsufficientAuthority,
    Reason::ConstraintUnrecognized,
    Reason::EgressNotAllowed,
    Reason::PdpDenied,
    Reason::ParameterViolation,
    Reason::BodyNotCanonicalizable,
    Reason::BodyTooLarge,
    Reason::KeysUnavailable,
    Reason::AuthorityUnavailable,
    Reason::PdpUnavailable,
    Reason::GatewayError,
    Reason::ReplayStoreFull,
    Reason::AmbiguousPath,
    Reason::McpMalformed,
    Reason::McpBatchRefused,
    Reason::McpToolNameInvalid,
    Reason::McpHeaderMismatch,
];

/// The challenge family of a denial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Challenge {
    None,
    /// `Bearer realm` only (no credentials).
    Realm,
    /// RFC 6750 `error=` code.
    Bearer(&'static str),
    /// RFC 9449 `DPoP error="invalid_dpop_proof"`.
    Dpop,
    /// `insufficient_scope` with a `mission_denial` value.
    Mission(&'static str),
}

impl Reason {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Allowed => "allowed",
            Reason::NoCredentials => "no_credentials",
            Reason::MalformedRequest => "malformed_request",
            Reason::TokenMalformed => "token_malformed",
            Reason::TokenTooLarge => "token_too_large",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::WrongTyp => "wrong_typ",
            Reason::UnknownKey => "unknown_key",
            Reason::BadSignature => "bad_signature",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::WrongAudience => "wrong_audience",
            Reason::TokenExpired => "token_expired",
            Reason::TokenNotYetValid => "token_not_yet_valid",
            Reason::TokenLifetimeExceeded => "token_lifetime_exceeded",
            Reason::MissionClaimMissing => "mission_claim_missing",
            Reason::UntrustedMissionIssuer => "untrusted_mission_issuer",
            Reason::UnsupportedConfirmation => "unsupported_confirmation",
            Reason::DpopBoundAsBearer => "dpop_bound_token_as_bearer",
            Reason::InvalidDpopProof => "invalid_dpop_proof",
            Reason::DpopReplay => "dpop_replay",
            Reason::MissionInactive => "mission_inactive",
            Reason::MissionUnknown => "mission_unknown",
            Reason::InsufficientAuthority => "insufficient_authority",
            Reason::ConstraintUnrecognized => "constraint_unrecognized",
            Reason::EgressNotAllowed => "egress_not_allowed",
            Reason::PdpDenied => "pdp_denied",
            Reason::ParameterViolation => "parameter_violation",
            Reason::BodyNotCanonicalizable => "body_not_canonicalizable",
            Reason::BodyTooLarge => "body_too_large",
            Reason::KeysUnavailable => "keys_unavailable",
            Reason::AuthorityUnavailable => "authority_unavailable",
            Reason::PdpUnavailable => "pdp_unavailable",
            Reason::GatewayError => "gateway_error",
            Reason::ReplayStoreFull => "replay_store_full",
            Reason::AmbiguousPath => "ambiguous_path",
            Reason::McpMalformed => "mcp_malformed",
            Reason::McpBatchRefused => "mcp_batch_refused",
            Reason::McpToolNameInvalid => "mcp_tool_name_invalid",
            Reason::McpHeaderMismatch => "mcp_header_mismatch",
        }
    }

    /// HTTP status of the denial (200 for allowed).
    pub fn status(self) -> u16 {
        match self {
            Reason::Allowed => 200,
            Reason::MalformedRequest
            | Reason::BodyNotCanonicalizable
            | Reason::AmbiguousPath
            | Reason::McpMalformed
            | Reason::McpBatchRefused
            | Reason::McpToolNameInvalid
            | Reason::McpHeaderMismatch => 400,
            Reason::BodyTooLarge => 413,
            Reason::InsufficientAuthority
            | Reason::ConstraintUnrecognized
            | Reason::PdpDenied
            | Reason::ParameterViolation => 403,
            Reason::EgressNotAllowed => 511,
            Reason::KeysUnavailable
            | Reason::AuthorityUnavailable
            | Reason::PdpUnavailable
            | Reason::GatewayError
            | Reason::ReplayStoreFull => 503,
            _ => 401,
        }
    }

    /// A refusal that stands in shadow mode too: a failure of the gateway itself, not a decision
    /// about the request. `gateway_error` (the gateway could not decide at all) and `body_too_large`
    /// (a bound call's body beyond `max_body_bytes` is never buffered, so it cannot be forwarded
    /// whole after a look either).
    pub fn enforced_in_shadow(self) -> bool {
        matches!(self, Reason::GatewayError | Reason::BodyTooLarge)
    }

    fn challenge(self) -> Challenge {
        match self {
            Reason::Allowed
            | Reason::BodyNotCanonicalizable
            | Reason::BodyTooLarge
            | Reason::EgressNotAllowed
            | Reason::AmbiguousPath
            | Reason::McpMalformed
            | Reason::McpBatchRefused
            | Reason::McpToolNameInvalid
            | Reason::McpHeaderMismatch => Challenge::None,
            Reason::KeysUnavailable
            | Reason::AuthorityUnavailable
            | Reason::PdpUnavailable
            | Reason::GatewayError
            | Reason::ReplayStoreFull => Challenge::None,
            Reason::NoCredentials => Challenge::Realm,
            Reason::MalformedRequest => Challenge::Bearer("invalid_request"),
            Reason::InvalidDpopProof | Reason::DpopReplay => Challenge::Dpop,
            Reason::InsufficientAuthority | Reason::PdpDenied => Challenge::Mission("insufficient_authority"),
            Reason::ConstraintUnrecognized => Challenge::Mission("constraint_unrecognized"),
            Reason::ParameterViolation => Challenge::Bearer("insufficient_scope"),
            _ => Challenge::Bearer("invalid_token"),
        }
    }

    fn title(self) -> &'static str {
        match self.status() {
            200 => "Allowed",
            400 => "Bad request",
            401 => "Unauthorized",
            403 => "Forbidden",
            413 => "Request body too large",
            511 => "Network authentication required",
            _ => "Dependency unavailable",
        }
    }
}

/// A local reply the filter sends instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// A refusal before it is rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct Denial {
    /// Reason.
    pub reason: Reason,
    /// Human detail (never secrets).
    pub detail: String,
    /// Mission, for state denials.
    pub mission: Option<ProblemMission>,
    /// `Retry-After` for 503.
    pub retry_after: Option<u32>,
    /// A requestable denial: the captive document and the per-denial Captive Portal API URL.
    pub captive: Option<Box<(CaptiveDocument, Option<String>)>>,
}

impl Denial {
    /// A denial with a detail message.
    pub fn new(reason: Reason, detail: impl Into<String>) -> Denial {
        // Every 503 tells the agent when to retry; callers with a better figure set their own.
        Denial {
            reason,
            detail: detail.into(),
            mission: None,
            retry_after: (reason.status() == 503).then_some(1),
            captive: None,
        }
    }

    /// Render as a problem+json local reply. `dpop_algs` is advertised in a DPoP challenge when set.
    pub fn render(&self, realm: &str, dpop_algs: Option<&str>, decision_id: &str) -> Response {
        if let Some(c) = &self.captive {
            let (doc, link) = &**c;
            let mut headers = vec![
                ("content-type".to_owned(), CAPTIVE_CONTENT_TYPE.to_owned()),
                ("cache-control".to_owned(), "no-store".to_owned()),
            ];
            if let Some(l) = link {
                if !l.chars().any(|c| matches!(c, '<' | '>' | '"') || c.is_control()) {
                    headers.push(("link".to_owned(), format!("<{l}>; rel=\"{LINK_REL_CAPTIVE_API}\"")));
                }
            }
            let body = serde_json::to_vec(doc).unwrap_or_default();
            return Response { status: 511, headers, body };
        }
        let mut headers = vec![
            ("content-type".to_owned(), CONTENT_TYPE.to_owned()),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ];
        let desc = sanitize(&self.detail);
        let www = match self.reason.challenge() {
            Challenge::None => None,
            Challenge::Realm => Some(format!("Bearer realm=\"{realm}\"")),
            Challenge::Bearer(code) => Some(format!("Bearer realm=\"{realm}\", error=\"{code}\", error_description=\"{desc}\"")),
            Challenge::Dpop => Some(format!("DPoP realm=\"{realm}\", error=\"invalid_dpop_proof\", error_description=\"{desc}\"")),
            Challenge::Mission(m) => Some(format!(
                "Bearer realm=\"{realm}\", error=\"insufficient_scope\", mission_denial=\"{m}\", error_description=\"{desc}\""
            )),
        };
        if let Some(w) = www {
            headers.push(("www-authenticate".to_owned(), w));
        }
        if let (Some(algs), 401) = (dpop_algs, self.reason.status()) {
            if self.reason.challenge() != Challenge::Dpop {
                headers.push(("www-authenticate".to_owned(), format!("DPoP algs=\"{algs}\"")));
            }
        }
        if let Some(s) = self.retry_after {
            headers.push(("retry-after".to_owned(), s.to_string()));
        }
        let problem = Problem {
            type_: Problem::type_for(self.reason.as_str()),
            title: self.reason.title().to_owned(),
            status: self.reason.status(),
            detail: self.detail.clone(),
            reason: self.reason.as_str().to_owned(),
            mission: self.mission.clone(),
            decision_id: Some(decision_id.to_owned()),
        };
        Response { status: self.reason.status(), headers, body: problem.to_bytes() }
    }
}

impl Denial {
    /// Render as a JSON-RPC error for the request `id` of an MCP client (SPEC §7): HTTP 200,
    /// `application/json`. A requestable denial is MCP's URL-elicitation-required error (`-32042`)
    /// with one URL elicitation (the `user-portal-url`, for a person; the evaluation id as its
    /// `elicitationId`) and, in `data.access_request`, the same access-request document as the 511's
    /// `access-request` member; every other refusal is `-32001` with the problem details as `data`.
    /// `None` for a refusal that stays HTTP: the 401 challenges (MCP clients handle them).
    pub fn render_mcp(&self, id: &serde_json::Value, decision_id: &str) -> Option<Response> {
        use serde_json::{json, Value};
        if self.reason.status() == 401 {
            return None;
        }
        let headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ];
        if let Some(c) = &self.captive {
            let (doc, link) = &**c;
            // The per-denial Captive Portal API, as on the 511, for an agent-side client to poll.
            let mut headers = headers;
            if let Some(l) = link {
                if !l.chars().any(|c| matches!(c, '<' | '>' | '"') || c.is_control()) {
                    headers.push(("link".to_owned(), format!("<{l}>; rel=\"{LINK_REL_CAPTIVE_API}\"")));
                }
            }
            let access_request = doc.access_request.as_ref().map_or(Value::Null, |a| json!(a));
            let evaluation_id =
                doc.access_request.as_ref().map(|a| a.context.evaluation_id.clone()).unwrap_or_default();
            let message = "This call needs a person's approval: an access request can be submitted for it";
            let elicitations: Vec<Value> = doc
                .user_portal_url
                .iter()
                .map(|url| json!({"mode": "url", "url": url, "message": message, "elicitationId": evaluation_id}))
                .collect();
            let data = json!({"elicitations": elicitations, "access_request": access_request});
            let body = crate::jsonrpc::error_body(id, crate::jsonrpc::URL_ELICITATION_REQUIRED, message, data);
            return Some(Response { status: 200, headers, body });
        }
        let problem = Problem {
            type_: Problem::type_for(self.reason.as_str()),
            title: self.reason.title().to_owned(),
            status: self.reason.status(),
            detail: self.detail.clone(),
            reason: self.reason.as_str().to_owned(),
            mission: self.mission.clone(),
            decision_id: Some(decision_id.to_owned()),
        };
        let data = serde_json::from_slice(&problem.to_bytes()).unwrap_or(Value::Null);
        let message = format!("refused by the gateway: {}", self.reason.as_str());
        let mut headers = headers;
        if let Some(s) = self.retry_after {
            headers.push(("retry-after".to_owned(), s.to_string()));
        }
        let body = crate::jsonrpc::error_body(id, crate::jsonrpc::REFUSED, &message, data);
        Some(Response { status: 200, headers, body })
    }
}

/// Quoted-string safe: no quotes, backslashes or control characters, bounded length.
fn sanitize(s: &str) -> String {
    s.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).take(200).collect()
}

/// One evidence record (SPEC §5): never raw parameters, tokens or keys.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Evidence {
    /// Unique per decision.
    pub decision_id: String,
    /// `allow` or `deny` (in shadow mode: the decision that enforcing would have made).
    pub decision: Decision,
    /// The reason, serialised as its wire name.
    pub reason: Reason,
    /// HTTP status sent (200 = forwarded); for a shadow-mode denial, the status enforcing would
    /// have sent (the request was forwarded).
    pub status: u16,
    /// `false` in shadow mode: the decision was recorded, not applied, and the request forwarded.
    pub enforced: bool,
    /// Mission id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mission_id: Option<String>,
    /// Mission issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mission_issuer: Option<String>,
    /// Authority commitment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority_hash: Option<String>,
    /// Token `jti`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Destination origin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// Action id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Parameter digest, for bound calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameter_digest: Option<String>,
    /// JSON-RPC method of an MCP operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_method: Option<String>,
    /// Tool name of an MCP `tools/call`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mcp_tool: Option<String>,
    /// PDP evaluation id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation_id: Option<String>,
    /// The constraints checked (SPEC §2) and how each came out: names and outcomes only, never the
    /// values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<ConstraintEvidence>,
    /// Decision time (Unix seconds).
    pub at: i64,
}

/// One constraint checked for a decision.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConstraintEvidence {
    /// The constraint's name (a short `[A-Za-z0-9_.:-]` id, or `*`).
    pub name: String,
    /// Its outcome (`satisfied`, `exceeded`, `currency_mismatch`, `violated`, `missing`,
    /// `malformed`, `unrecognized`).
    pub outcome: &'static str,
    /// The counter it is counted under.
    #[serde(skip)]
    pub counter: &'static str,
}

impl Default for Evidence {
    fn default() -> Evidence {
        Evidence {
            decision_id: String::new(),
            // Fail closed: a record nobody filled in reads as a gateway error, never as an allow.
            decision: Decision::Deny,
            reason: Reason::GatewayError,
            status: 0,
            enforced: true,
            mission_id: None,
            mission_issuer: None,
            authority_hash: None,
            jti: None,
            destination: None,
            action: None,
            parameter_digest: None,
            mcp_method: None,
            mcp_tool: None,
            evaluation_id: None,
            constraints: Vec::new(),
            at: 0,
        }
    }
}

impl Evidence {
    /// A denial enforcing would have made but shadow mode did not: the request was forwarded.
    pub fn would_deny(&self) -> bool {
        !self.enforced && self.decision == Decision::Deny
    }

    /// JSON text of the record.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_distinct_name() {
        let mut names: Vec<_> = ALL_REASONS.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL_REASONS.len());
    }

    #[test]
    fn evidence_serialises_decision_and_reason_as_wire_names() {
        let ev = Evidence {
            decision_id: "d1".into(),
            decision: Decision::Allow,
            reason: Reason::Allowed,
            status: 200,
            at: 7,
            ..Evidence::default()
        };
        assert_eq!(
            ev.to_json(),
            r#"{"decision_id":"d1","decision":"allow","reason":"allowed","status":200,"enforced":true,"at":7}"#
        );
        for r in ALL_REASONS {
            let ev = Evidence { decision: Decision::Deny, reason: r, ..Evidence::default() };
            let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
            assert_eq!((v["decision"].as_str(), v["reason"].as_str()), (Some("deny"), Some(r.as_str())));
            assert_eq!(format!("{r}"), r.as_str());
        }
        assert_eq!(format!("{}/{}", Decision::Allow, Decision::Deny), "allow/deny");
    }

    #[test]
    fn renders_rfc6750_challenges() {
        let r = Denial::new(Reason::TokenExpired, "token \"expired\"\n").render("mg", None, "d1");
        assert_eq!(r.status, 401);
        let www = &r.headers.iter().find(|(k, _)| k == "www-authenticate").unwrap().1;
        assert_eq!(www, "Bearer realm=\"mg\", error=\"invalid_token\", error_description=\"token expired\"");
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["reason"], "token_expired");
        assert_eq!(body["status"], 401);
        let r = Denial::new(Reason::ConstraintUnrecognized, "x").render("mg", None, "d1");
        assert_eq!(r.status, 403);
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == "www-authenticate" && v.contains("mission_denial=\"constraint_unrecognized\"")));
        let r = Denial::new(Reason::NoCredentials, "x").render("mg", Some("ES256 EdDSA"), "d1");
        assert!(r.headers.iter().any(|(_, v)| v == "Bearer realm=\"mg\""));
        assert!(r.headers.iter().any(|(_, v)| v == "DPoP algs=\"ES256 EdDSA\""));
    }
}
