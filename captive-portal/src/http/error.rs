//! Responses: JSON, RFC 9457 problem documents and OAuth errors.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use missiongate_wire::problem::{self, Problem, ProblemMission};

pub(crate) fn with_headers(mut resp: Response, content_type: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    with_headers((status, bytes).into_response(), "application/json")
}

/// An `application/problem+json` response with an `error` member (and `extra` members).
pub(crate) fn problem_response(
    status: StatusCode,
    error: &str,
    detail: &str,
    mission: Option<ProblemMission>,
    extra: &[(&str, Value)],
) -> Response {
    let p = Problem {
        type_: Problem::type_for(error),
        title: status.canonical_reason().unwrap_or("Error").to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        reason: error.to_owned(),
        mission,
        decision_id: None,
    };
    let bytes = match serde_json::to_value(&p) {
        Ok(Value::Object(mut obj)) => {
            obj.insert("error".into(), Value::String(error.to_owned()));
            for (k, v) in extra {
                obj.insert((*k).to_owned(), v.clone());
            }
            serde_json::to_vec(&obj).unwrap_or_else(|_| p.to_bytes())
        }
        _ => p.to_bytes(),
    };
    with_headers((status, bytes).into_response(), problem::CONTENT_TYPE)
}

/// An OAuth-style `application/json` error (RFC 6749 §5.2, Mission Status draft).
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str, extra: &[(&str, Value)]) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("error".into(), Value::String(error.to_owned()));
    body.insert("error_description".into(), Value::String(description.to_owned()));
    for (k, v) in extra {
        body.insert((*k).to_owned(), v.clone());
    }
    json_response(status, &Value::Object(body))
}

pub(crate) fn internal(detail: &str) -> Response {
    tracing::error!(error = %detail, "request failed");
    problem_response(StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error", None, &[])
}
