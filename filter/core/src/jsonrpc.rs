//! JSON-RPC error responses: how a refusal of an MCP call is answered (SPEC §7).
//!
//! A module of its own so that `decision` renders them without importing `mcp`, which names its
//! refusals by `decision`'s reasons.

use serde_json::{Map, Value};

/// JSON-RPC error code of a requestable denial: MCP's URL elicitation required (MCP 2025-11-25).
pub const URL_ELICITATION_REQUIRED: i64 = -32042;
/// JSON-RPC error code of every other refusal (implementation-defined server error range).
pub const REFUSED: i64 = -32001;

/// A JSON-RPC error response body for `id`.
pub fn error_body(id: &Value, code: i64, message: &str, data: Value) -> Vec<u8> {
    let mut error = Map::new();
    error.insert("code".into(), code.into());
    error.insert("message".into(), message.into());
    error.insert("data".into(), data);
    let mut out = Map::new();
    out.insert("jsonrpc".into(), "2.0".into());
    out.insert("id".into(), id.clone());
    out.insert("error".into(), Value::Object(error));
    serde_json::to_vec(&Value::Object(out)).unwrap_or_default()
}
