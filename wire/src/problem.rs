//! `application/problem+json` (RFC 9457) bodies: built with a serializer, never by formatting.

use serde::{Deserialize, Serialize};

/// Media type of problem documents.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// Mission identification in a denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProblemMission {
    /// Mission id.
    pub id: String,
    /// Mission state as last known (`unknown` when the authority does not know it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// A problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the type.
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// Human-readable detail for this occurrence (never token or key material).
    pub detail: String,
    /// Machine-readable reason.
    pub reason: String,
    /// The Mission, for state denials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mission: Option<ProblemMission>,
    /// Decision id, to correlate with evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_id: Option<String>,
}

impl Problem {
    /// The type URI used for a reason.
    pub fn type_for(reason: &str) -> String {
        format!("https://missiongate.dev/problems/{reason}")
    }
    /// Serialize to bytes (infallible for this shape; falls back to a fixed document).
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{\"type\":\"about:blank\",\"status\":500}".to_vec())
    }
}
