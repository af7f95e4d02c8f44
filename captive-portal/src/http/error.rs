//! Every answer that is not a success, in one place: [`ApiError`] and the response builders it uses.
//!
//! A handler returns `Result<_, ApiError>`; [`ApiError`]'s `IntoResponse` is the one mapping from a
//! typed failure to its status, body and headers:
//!
//! | variant | body | headers |
//! |---|---|---|
//! | [`ApiError::Access`] | ARAP problem document, `type` `urn:openid:authzen:access-request:error:<code>` | `Retry-After` (429, 503), `Connection: close` (413) |
//! | [`ApiError::Pdp`] | house problem document with the ARAP code; counted as an `error` evaluation | |
//! | [`ApiError::Problem`] | house problem document (RFC 9457 + `error`), `type` `https://missiongate.dev/problems/<code>` | `WWW-Authenticate`, `Retry-After`, `Connection: close` as set |
//! | [`ApiError::OAuth`] | `application/json` `{"error", "error_description"}` (RFC 6749 §5.2, Mission Status draft) | `WWW-Authenticate`, `Connection: close` as set |
//! | [`ApiError::Authority`] | the operator API's mapping of a Mission authority failure (404, 400, 409, 401, 500) | |
//! | [`ApiError::Page`] | an approver page (HTML, see [`super::page`]) | the pages' security headers |

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use missiongate_wire::problem::{self, Problem, ProblemMission};

use crate::access::ArError;
use crate::authority::AuthorityError;
use crate::mission;

/// The `error` codes of the house problem documents and of the OAuth errors (the ARAP codes are
/// [`crate::access::ArCode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// No such endpoint or object.
    NotFound,
    /// The path exists, the method does not.
    MethodNotAllowed,
    /// The request is malformed.
    InvalidRequest,
    /// The body is larger than allowed.
    RequestTooLarge,
    /// A credential is missing or wrong.
    Unauthorized,
    /// Client authentication failed (RFC 6749).
    InvalidClient,
    /// The grant (the Mission) cannot be used (RFC 6749).
    InvalidGrant,
    /// Only `client_credentials` is supported (RFC 6749).
    UnsupportedGrantType,
    /// The DPoP proof was refused (RFC 9449).
    InvalidDpopProof,
    /// The lifecycle transition is not legal now.
    Conflict,
    /// Too many concurrent requests of one caller.
    RateLimited,
    /// The service cannot answer now.
    Unavailable,
    /// An internal failure.
    ServerError,
}

impl Code {
    /// The `error` member.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::InvalidRequest => "invalid_request",
            Code::RequestTooLarge => "request_too_large",
            Code::Unauthorized => "unauthorized",
            Code::InvalidClient => "invalid_client",
            Code::InvalidGrant => "invalid_grant",
            Code::UnsupportedGrantType => "unsupported_grant_type",
            Code::InvalidDpopProof => "invalid_dpop_proof",
            Code::Conflict => "conflict",
            Code::RateLimited => "rate_limited",
            Code::Unavailable => "unavailable",
            Code::ServerError => "server_error",
        }
    }
}

/// The `WWW-Authenticate` challenges the portal sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    /// The operator API.
    Operator,
    /// `/metrics`.
    Metrics,
    /// The gateway surfaces (PDP, Mission Status, event feed).
    Gateway,
    /// HTTP Basic client authentication at `/token`.
    Basic,
}

impl Challenge {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Challenge::Operator => "Bearer realm=\"missiongate-operator\"",
            Challenge::Metrics => "Bearer realm=\"missiongate-metrics\"",
            Challenge::Gateway => "Bearer realm=\"missiongate-gateway\"",
            Challenge::Basic => "Basic realm=\"missiongate\"",
        })
    }
}

/// A house problem document or an OAuth error, with what it needs besides the body.
#[derive(Debug)]
pub struct ErrorBody {
    status: StatusCode,
    code: Code,
    detail: String,
    mission: Option<ProblemMission>,
    extra: Vec<(&'static str, Value)>,
    challenge: Option<Challenge>,
    retry_after: Option<u32>,
    close: bool,
}

impl ErrorBody {
    /// `WWW-Authenticate` with this challenge.
    pub fn challenge(mut self, c: Challenge) -> ErrorBody {
        self.challenge = Some(c);
        self
    }
    /// An extra member of the body.
    pub fn member(mut self, name: &'static str, value: Value) -> ErrorBody {
        self.extra.push((name, value));
        self
    }
    /// The `mission` member (problem documents only).
    pub fn mission(mut self, m: ProblemMission) -> ErrorBody {
        self.mission = Some(m);
        self
    }
    /// `Retry-After` and a `retry_after` member.
    pub fn retry_after(mut self, secs: u32) -> ErrorBody {
        self.retry_after = Some(secs);
        self.member("retry_after", json!(secs))
    }
    /// Answer as an OAuth error (`application/json` `{"error", "error_description"}`) instead.
    pub fn oauth(self) -> ApiError {
        ApiError::OAuth(Box::new(self))
    }
    /// `Connection: close`: the rest of the body was not read.
    fn close(mut self) -> ErrorBody {
        self.close = true;
        self
    }
}

/// Every failure of an HTTP handler; see the module documentation for how each is answered.
#[derive(Debug)]
pub enum ApiError {
    /// An Access Request Service failure.
    Access(ArError),
    /// A PDP failure.
    Pdp(ArError),
    /// A house problem document.
    Problem(Box<ErrorBody>),
    /// An OAuth error.
    OAuth(Box<ErrorBody>),
    /// A Mission authority failure on the operator API and the event feed.
    Authority(AuthorityError),
    /// An approver page that says what went wrong (already escaped HTML).
    Page(StatusCode, String),
}

impl ApiError {
    /// A house problem document.
    pub fn problem(status: StatusCode, code: Code, detail: impl Into<String>) -> ErrorBody {
        ErrorBody {
            status,
            code,
            detail: detail.into(),
            mission: None,
            extra: Vec::new(),
            challenge: None,
            retry_after: None,
            close: false,
        }
    }
    /// An OAuth error without extra members (see [`ErrorBody::oauth`] for one with them).
    pub fn oauth(status: StatusCode, code: Code, description: impl Into<String>) -> ApiError {
        Self::problem(status, code, description).oauth()
    }
    /// 400 `invalid_request` (problem document).
    pub fn invalid(detail: impl Into<String>) -> ApiError {
        Self::problem(StatusCode::BAD_REQUEST, Code::InvalidRequest, detail).into()
    }
    /// 500 `server_error`; `detail` is logged, never sent.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %detail, "request failed");
        Self::problem(StatusCode::INTERNAL_SERVER_ERROR, Code::ServerError, "internal error").into()
    }
    /// The answer to a body that could not be read: 413 `request_too_large` (and `Connection: close`) or
    /// 400 `invalid_request`, as a problem document or, on the OAuth surfaces, an OAuth error.
    pub fn body_unreadable(too_large: bool, oauth: bool) -> ApiError {
        let r = if too_large {
            Self::problem(StatusCode::PAYLOAD_TOO_LARGE, Code::RequestTooLarge, "request body is larger than 1 MiB")
                .close()
        } else {
            Self::problem(StatusCode::BAD_REQUEST, Code::InvalidRequest, "request body could not be read")
        };
        if oauth {
            r.oauth()
        } else {
            r.into()
        }
    }
}

impl From<ErrorBody> for ApiError {
    fn from(r: ErrorBody) -> ApiError {
        ApiError::Problem(Box::new(r))
    }
}

impl From<ArError> for ApiError {
    fn from(e: ArError) -> ApiError {
        ApiError::Access(e)
    }
}

impl From<AuthorityError> for ApiError {
    fn from(e: AuthorityError) -> ApiError {
        ApiError::Authority(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Access(e) => access_problem(&e),
            ApiError::Pdp(e) => {
                crate::metrics::METRICS.evaluation(crate::metrics::Decision::error);
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                problem_response(status, e.code.as_str(), &e.detail, None, &[])
            }
            ApiError::Problem(r) => {
                let resp = problem_response(r.status, r.code.as_str(), &r.detail, r.mission.clone(), &r.extra);
                finish(resp, &r)
            }
            ApiError::OAuth(r) => {
                let resp = oauth_error(r.status, r.code.as_str(), &r.detail, &r.extra);
                finish(resp, &r)
            }
            ApiError::Authority(e) => authority_error(e).into_response(),
            ApiError::Page(status, body) => super::page::html(status, body),
        }
    }
}

/// The headers a [`ErrorBody`] carries besides its body.
fn finish(mut resp: Response, r: &ErrorBody) -> Response {
    let h = resp.headers_mut();
    if let Some(c) = r.challenge {
        h.insert(header::WWW_AUTHENTICATE, c.header());
    }
    if let Some(secs) = r.retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if r.close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The operator API's mapping of a Mission authority failure.
fn authority_error(e: AuthorityError) -> ApiError {
    match e {
        AuthorityError::NotFound => {
            ApiError::problem(StatusCode::NOT_FOUND, Code::NotFound, "mission not found").into()
        }
        AuthorityError::Invalid(m) => ApiError::invalid(m),
        AuthorityError::Conflict { ref id, ref state, .. } => {
            let mission = ProblemMission { id: id.clone(), state: Some(state.to_string()) };
            ApiError::problem(StatusCode::CONFLICT, Code::Conflict, e.to_string()).mission(mission).into()
        }
        AuthorityError::Inactive { ref state } => {
            ApiError::problem(StatusCode::BAD_REQUEST, Code::InvalidGrant, e.to_string())
                .member("mission_error", Value::String(mission::mission_error(state).to_owned()))
                .into()
        }
        AuthorityError::InvalidClient => {
            ApiError::problem(StatusCode::UNAUTHORIZED, Code::InvalidClient, "client authentication failed").into()
        }
        AuthorityError::Internal(m) => ApiError::internal(m),
    }
}

/// An ARAP problem document.
fn access_problem(e: &ArError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({
        "type": e.type_urn(),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": e.status,
        "detail": e.detail,
        "error": e.code.as_str(),
    });
    let mut body = body;
    if let (Some(secs), Some(obj)) = (e.retry_after, body.as_object_mut()) {
        obj.insert("retry_after".into(), json!(secs));
    }
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
    let mut resp = with_headers((status, bytes).into_response(), problem::CONTENT_TYPE);
    if let Some(secs) = e.retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body was not read: the connection cannot be reused.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

pub(crate) fn with_headers(mut resp: Response, content_type: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A JSON answer (`Cache-Control: no-store`).
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    with_headers((status, bytes).into_response(), "application/json")
}

/// An `application/problem+json` response with an `error` member (and `extra` members).
fn problem_response(
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
fn oauth_error(status: StatusCode, error: &str, description: &str, extra: &[(&str, Value)]) -> Response {
    let mut body = serde_json::Map::new();
    body.insert("error".into(), Value::String(error.to_owned()));
    body.insert("error_description".into(), Value::String(description.to_owned()));
    for (k, v) in extra {
        body.insert((*k).to_owned(), v.clone());
    }
    json_response(status, &Value::Object(body))
}
