//! MCP operations (SPEC §7): a JSON-RPC message POSTed to an MCP server's endpoint, read from the
//! buffered body, named as an action, checked against the `Mcp-Method` / `Mcp-Name` headers, and its
//! refusals rendered as JSON-RPC errors.
//!
//! Pure: no I/O. The digest of a `tools/call` is the MCP Tool Call Profile of `wire`.

use serde_json::Value;

use crate::decision::Reason;
use crate::destinations::{valid_tool_name, ClientMessages, McpServer};
pub use crate::jsonrpc::{error_body, REFUSED, URL_ELICITATION_REQUIRED};
use missiongate_wire::jcs::{self, IJsonError};

/// One JSON-RPC message the client sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A request (it has an `id`): answered with a result or an error for that `id`.
    Request {
        /// The JSON-RPC `id`, echoed in an error.
        id: Value,
        /// The method.
        method: String,
        /// For `tools/call`: the tool and its `arguments` (`None` when absent).
        call: Option<(String, Option<Value>)>,
        /// `params.name`, else `params.uri` (what `Mcp-Name` carries).
        name: Option<String>,
    },
    /// A notification (a method without `id`).
    Notification {
        /// The method.
        method: String,
        /// `params.name`, else `params.uri`.
        name: Option<String>,
    },
    /// A response to a request of the server (`result` or `error`, no method).
    Response,
}

/// A message that cannot be decided as an MCP operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// Why (its own status and counter).
    pub reason: Reason,
    /// Detail for the problem (never body bytes).
    pub detail: &'static str,
    /// The request's `id` when it could be read: the refusal is then a JSON-RPC error for it.
    pub id: Option<Value>,
}

fn refused(reason: Reason, detail: &'static str, id: Option<&Value>) -> Refused {
    Refused { reason, detail, id: id.cloned() }
}

/// A JSON-RPC method name the filter will make an action id of.
fn valid_method(m: &str) -> bool {
    (1..=128).contains(&m.len()) && m.bytes().all(|b| b.is_ascii_alphanumeric() || b"_./-".contains(&b))
}

/// Parse the buffered body of a POST to the MCP endpoint.
///
/// Not JSON, or JSON that is not one JSON-RPC 2.0 message: `mcp_malformed`; an array (a batch):
/// `mcp_batch_refused`; not I-JSON (a duplicate member, an inexact number): `body_not_canonicalizable`
/// (the upstream could read another value than the one decided on); a `tools/call` whose tool name is
/// outside `[A-Za-z0-9_.-]{1,128}`: `mcp_tool_name_invalid`.
pub fn parse(body: &[u8]) -> Result<Message, Refused> {
    let value = jcs::parse_ijson(body).map_err(|e| match e {
        IJsonError::Syntax(_) | IJsonError::TrailingData | IJsonError::InvalidUtf8 => {
            refused(Reason::McpMalformed, "the body of a request to the MCP endpoint is not JSON", None)
        }
        _ => refused(
            Reason::BodyNotCanonicalizable,
            "the JSON-RPC message is not I-JSON (duplicate member, inexact number or bad string)",
            None,
        ),
    })?;
    let obj = match value {
        Value::Object(o) => o,
        Value::Array(_) => {
            return Err(refused(Reason::McpBatchRefused, "JSON-RPC batches are refused: current MCP has none", None))
        }
        _ => return Err(refused(Reason::McpMalformed, "a JSON-RPC message must be an object", None)),
    };
    let id = obj.get("id").filter(|v| matches!(v, Value::String(_) | Value::Number(_)));
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(refused(Reason::McpMalformed, "jsonrpc must be \"2.0\"", id));
    }
    let Some(method) = obj.get("method") else {
        // A response to a request of the server (an error response may carry a null id).
        if obj.contains_key("result") || obj.contains_key("error") {
            return Ok(Message::Response);
        }
        return Err(refused(Reason::McpMalformed, "a JSON-RPC message needs a method, a result or an error", id));
    };
    if obj.contains_key("id") && id.is_none() {
        return Err(refused(Reason::McpMalformed, "a JSON-RPC request id must be a string or a number", None));
    }
    let name = obj
        .get("params")
        .and_then(|p| p.get("name").or_else(|| p.get("uri")))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let method = match method.as_str() {
        Some(m) if valid_method(m) => m.to_owned(),
        _ => return Err(refused(Reason::McpMalformed, "method must be a name of [A-Za-z0-9_./-]{1,128}", id)),
    };
    let Some(id) = id else {
        return Ok(Message::Notification { method, name });
    };
    let call = if method == "tools/call" {
        let params = obj
            .get("params")
            .and_then(Value::as_object)
            .ok_or_else(|| refused(Reason::McpMalformed, "tools/call needs params", Some(id)))?;
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| refused(Reason::McpMalformed, "tools/call needs params.name", Some(id)))?;
        if !valid_tool_name(name) {
            return Err(refused(
                Reason::McpToolNameInvalid,
                "the tool name is outside [A-Za-z0-9_.-]{1,128}",
                Some(id),
            ));
        }
        let arguments = match params.get("arguments") {
            None => None,
            Some(a @ Value::Object(_)) => Some(a.clone()),
            Some(_) => return Err(refused(Reason::McpMalformed, "params.arguments must be an object", Some(id))),
        };
        Some((name.to_owned(), arguments))
    } else {
        None
    };
    Ok(Message::Request { id: id.clone(), method, call, name })
}

/// `Mcp-Method` / `Mcp-Name` (MCP 2026-07-28), when sent, must equal the body's method and name
/// (the tool name; the resource URI of `resources/read`). Sent twice, or for a message without a
/// method, is a mismatch too.
pub fn check_headers(headers: &[(String, String)], message: &Message) -> Result<(), Refused> {
    let values = |name: &str| headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
    let (method, name, id) = match message {
        Message::Request { id, method, name, .. } => (Some(method.as_str()), name.as_deref(), Some(id)),
        Message::Notification { method, name } => (Some(method.as_str()), name.as_deref(), None),
        Message::Response => (None, None, None),
    };
    let mismatch = |what| Err(refused(Reason::McpHeaderMismatch, what, id));
    match values("mcp-method").as_slice() {
        [] => {}
        [one] if Some(*one) == method => {}
        _ => return mismatch("the Mcp-Method header differs from the JSON-RPC method"),
    }
    match values("mcp-name").as_slice() {
        [] => {}
        [one] if name == Some(*one) => {}
        _ => return mismatch("the Mcp-Name header differs from the name in the JSON-RPC params"),
    }
    Ok(())
}

/// What the engine decides for a message to an MCP server.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// Action id.
    pub action: String,
    /// JSON-RPC method (`None` for a response).
    pub method: Option<String>,
    /// Tool name of a `tools/call`.
    pub tool: Option<String>,
    /// Consequential (bound to its digest, decided by the PDP).
    pub consequential: bool,
    /// Forwarded for any valid token of an active Mission (`client_messages: pass`).
    pub pass: bool,
    /// The JSON-RPC `id` of a request: its refusals are JSON-RPC errors.
    pub id: Option<Value>,
}

/// Name a message as an operation of `server` (SPEC §7).
pub fn operation(server: &McpServer, message: &Message) -> Operation {
    let dotted = |m: &str| format!("mcp.method.{}", m.replace('/', "."));
    let pass = server.client_messages == ClientMessages::Pass;
    match message {
        Message::Request { id, method, call: Some((tool, _)), .. } => {
            let configured = server.tool(tool);
            Operation {
                action: configured.and_then(|t| t.action.clone()).unwrap_or_else(|| format!("mcp.tool.{tool}")),
                method: Some(method.clone()),
                tool: Some(tool.clone()),
                consequential: configured.and_then(|t| t.consequential).unwrap_or(true),
                pass: false,
                id: Some(id.clone()),
            }
        }
        Message::Request { id, method, call: None, .. } => Operation {
            action: dotted(method),
            method: Some(method.clone()),
            tool: None,
            consequential: false,
            pass: false,
            id: Some(id.clone()),
        },
        Message::Notification { method, .. } => Operation {
            action: dotted(method),
            method: Some(method.clone()),
            tool: None,
            consequential: false,
            pass,
            id: None,
        },
        Message::Response => Operation {
            action: "mcp.response".to_owned(),
            method: None,
            tool: None,
            consequential: false,
            pass,
            id: None,
        },
    }
}

/// `parameter_digest` of a `tools/call` (MCP Tool Call Profile): `target` is the destination origin
/// with the path and query as forwarded.
pub fn call_digest(target: &str, message: &Message) -> Option<String> {
    match message {
        Message::Request { method, call: Some((tool, arguments)), .. } => {
            Some(missiongate_wire::digest::mcp_tool_call_digest(target, method, tool, arguments.as_ref()).0)
        }
        _ => None,
    }
}
