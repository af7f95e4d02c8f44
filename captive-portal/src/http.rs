//! HTTP surface of the Mission authority (axum).
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/.well-known/oauth-authorization-server` | | RFC 8414 metadata |
//! | GET | `/jwks.json` | | JWKS (current + still-leased previous keys) |
//! | GET | `/healthz` | | `{"status":"ok"}` |
//! | GET | `/metrics` | | Prometheus text format (`--metrics-token` or the operator token; [`crate::metrics`]) |
//! | POST | `/token` | form `grant_type=client_credentials`, `mission_id`, client auth, optional `DPoP` header | RFC 6749 token response |
//! | POST | `/mission/status` | form `mission_id`, `audience`, `nonce` | `application/mission-status-response+jwt` |
//! | POST | `/mission/events` | JSON RFC 8936 poll request | JSON RFC 8936 poll response |
//! | POST | `/operator/missions` | JSON Mission request | 201 Mission + `client_secret` |
//! | GET | `/operator/missions[?state=&limit=]` | | `{"missions": [...]}` |
//! | GET | `/operator/missions/{id}` | | Mission + `transitions` |
//! | POST | `/operator/missions/{id}/{approve,reject,suspend,resume,revoke,complete}` | | Mission |
//! | POST | `/operator/missions/{id}/token` | optional JSON `{"dpop_jkt"}` | token response |
//! | POST | `/operator/keys/rotate` | | `{"kid", "previous_kid"}` |
//!
//! The PDP, Access Request, Captive Portal API and operator access-request routes are in
//! [`crate::access_http`]; the approver pages in [`crate::portal`].
//!
//! Operator routes need `Authorization: Bearer <operator token>`. Errors are
//! `application/problem+json` (RFC 9457) with an `error` member, except on the OAuth surfaces
//! (`/token`, `/mission/status`), which answer `application/json` `{"error", "error_description"}` as
//! RFC 6749 §5.2 and the Mission Status draft require.

// Handlers and extractors here return a ready `Response` as their error, as axum rejections do; it is
// built once on the (cold) error path, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use missiongate_wire::claims::PollRequest;
use missiongate_wire::digest::is_json_media_type;
use missiongate_wire::problem::{self, Problem, ProblemMission};
use missiongate_wire::time::format_rfc3339;

use crate::access::Access;
use crate::authority::{Authority, AuthorityError, Minted};
use crate::gateway::{Caller, GatewayAuth};
use crate::mission::{self, Action, CreateMission};
use crate::store::{MissionRow, TransitionRow};
use crate::util::{now_secs, secret_matches, sha256};

/// Largest request body accepted.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;
/// Media type of Mission Status responses.
pub const CONTENT_TYPE_MISSION_STATUS: &str = "application/mission-status-response+jwt";
/// Actor recorded for operator API calls.
pub const ACTOR_OPERATOR: &str = "operator";

/// Shared state of the router.
#[derive(Clone)]
pub struct HttpState {
    pub(crate) authority: Arc<Authority>,
    pub(crate) access: Arc<Access>,
    pub(crate) gateway: Arc<GatewayAuth>,
    operator_token_sha256: Arc<[u8; 32]>,
    metrics_token_sha256: Option<Arc<[u8; 32]>>,
}

impl HttpState {
    /// State for `authority` and the access service, with the operator API guarded by `operator_token`
    /// and the gateway surfaces (PDP, Mission Status, event feed) by `gateway`.
    pub fn new(
        authority: Arc<Authority>,
        access: Arc<Access>,
        operator_token: &str,
        gateway: Arc<GatewayAuth>,
    ) -> HttpState {
        HttpState {
            authority,
            access,
            gateway,
            operator_token_sha256: Arc::new(sha256(operator_token.as_bytes())),
            metrics_token_sha256: None,
        }
    }

    /// Also let `token` (the metrics scraper's credential) read `GET /metrics`.
    pub fn with_metrics_token(mut self, token: Option<&str>) -> HttpState {
        self.metrics_token_sha256 = token.map(|t| Arc::new(sha256(t.as_bytes())));
        self
    }
}

/// The complete router.
pub fn router(state: HttpState) -> Router {
    let operator = Router::new()
        .route("/operator/missions", post(create_mission).get(list_missions))
        .route("/operator/missions/{id}", get(show_mission))
        .route("/operator/missions/{id}/approve", lifecycle_route(Action::Approve))
        .route("/operator/missions/{id}/reject", lifecycle_route(Action::Reject))
        .route("/operator/missions/{id}/suspend", lifecycle_route(Action::Suspend))
        .route("/operator/missions/{id}/resume", lifecycle_route(Action::Resume))
        .route("/operator/missions/{id}/revoke", lifecycle_route(Action::Revoke))
        .route("/operator/missions/{id}/complete", lifecycle_route(Action::Complete))
        .route("/operator/missions/{id}/token", post(operator_token))
        .route("/operator/keys/rotate", post(rotate_keys))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_operator));
    Router::new()
        .route("/.well-known/oauth-authorization-server", get(metadata))
        .route("/jwks.json", get(jwks))
        .route("/healthz", get(|| async { json_response(StatusCode::OK, &json!({"status": "ok"})) }))
        .route("/token", post(token))
        .merge(gateway_routes(&state))
        .merge(operator)
        .merge(crate::access_http::routes(&state))
        .merge(crate::portal::routes())
        .route("/metrics", get(metrics))
        .fallback(|| async { problem_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint", None, &[]) })
        .method_not_allowed_fallback(|| async {
            problem_response(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here", None, &[])
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(log_request))
        .layer(middleware::from_fn(crate::metrics::observe_http))
        .with_state(state)
}

/// Mission Status (OAuth-style errors) and the event feed (problem documents): gateways only.
fn gateway_routes(state: &HttpState) -> Router<HttpState> {
    let status = Router::new()
        .route("/mission/status", post(mission_status))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_gateway_oauth));
    let events = Router::new()
        .route("/mission/events", post(mission_events))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_gateway));
    status.merge(events)
}

// -------------------------------------------------------------------------------------------------
// Responses
// -------------------------------------------------------------------------------------------------

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
fn oauth_error(status: StatusCode, error: &str, description: &str, extra: &[(&str, Value)]) -> Response {
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

/// Operator-API mapping of service errors.
fn operator_error(e: AuthorityError) -> Response {
    match e {
        AuthorityError::NotFound => {
            problem_response(StatusCode::NOT_FOUND, "not_found", "mission not found", None, &[])
        }
        AuthorityError::Invalid(m) => problem_response(StatusCode::BAD_REQUEST, "invalid_request", &m, None, &[]),
        AuthorityError::Conflict { ref id, ref state, .. } => {
            let mission = ProblemMission { id: id.clone(), state: Some(state.to_string()) };
            problem_response(StatusCode::CONFLICT, "conflict", &e.to_string(), Some(mission), &[])
        }
        AuthorityError::Inactive { ref state } => problem_response(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            &e.to_string(),
            None,
            &[("mission_error", Value::String(mission::mission_error(state).to_owned()))],
        ),
        AuthorityError::InvalidClient => {
            problem_response(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed", None, &[])
        }
        AuthorityError::Internal(m) => internal(&m),
    }
}

fn mission_view(m: &MissionRow) -> serde_json::Map<String, Value> {
    let mut v = serde_json::Map::new();
    v.insert("id".into(), json!(m.id));
    v.insert("issuer".into(), json!(m.issuer));
    v.insert("state".into(), json!(m.state));
    v.insert("version".into(), json!(m.version));
    v.insert("client_id".into(), json!(m.client_id));
    v.insert("intent".into(), json!(m.intent));
    v.insert("authorization_details".into(), Value::Array(m.authority.clone()));
    v.insert("intent_hash".into(), json!(m.intent_hash));
    v.insert("authority_hash".into(), json!(m.authority_hash));
    v.insert("expires_at".into(), json!(format_rfc3339(m.expires_at)));
    v.insert("created_at".into(), json!(format_rfc3339(m.created_at)));
    v.insert("updated_at".into(), json!(format_rfc3339(m.updated_at)));
    v
}

fn transition_view(t: &TransitionRow) -> Value {
    json!({
        "from": t.from.as_ref().map(|s| s.as_str()),
        "to": t.to,
        "version": t.version,
        "actor": t.actor,
        "at": format_rfc3339(t.at),
    })
}

fn token_response(m: &Minted) -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": m.token,
            "token_type": m.token_type,
            "expires_in": m.expires_in,
            "mission_id": m.mission.id,
            "mission_expires_at": format_rfc3339(m.mission.expires_at),
            "authorization_details": m.mission.authority,
        }),
    )
}

// -------------------------------------------------------------------------------------------------
// Extractors
// -------------------------------------------------------------------------------------------------

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("invalid"))
}

pub(crate) fn body_rejection(e: &axum::extract::rejection::BytesRejection, oauth: bool) -> Response {
    let (status, error, detail) = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", "request body is larger than 1 MiB")
    } else {
        (StatusCode::BAD_REQUEST, "invalid_request", "request body could not be read")
    };
    let mut resp = if oauth {
        oauth_error(status, error, detail, &[])
    } else {
        problem_response(status, error, detail, None, &[])
    };
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body was not read: the connection cannot be reused.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Parse a JSON body strictly (I-JSON: no duplicate member names) into `T`.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Response> {
    let value = missiongate_wire::jcs::parse_ijson(bytes).map_err(|e| {
        problem_response(StatusCode::BAD_REQUEST, "invalid_request", &format!("request body: {e}"), None, &[])
    })?;
    serde_json::from_value(value).map_err(|e| {
        problem_response(StatusCode::BAD_REQUEST, "invalid_request", &format!("request body: {e}"), None, &[])
    })
}

pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), Response> {
    match content_type(headers) {
        None => Ok(()),
        Some(ct) if is_json_media_type(ct) => Ok(()),
        Some(_) => Err(problem_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "Content-Type must be application/json",
            None,
            &[],
        )),
    }
}

/// A required JSON body.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| body_rejection(&e, false))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// An optional JSON body: an empty body is `None`.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let headers = req.headers().clone();
        let bytes = Bytes::from_request(req, state).await.map_err(|e| body_rejection(&e, false))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(None));
        }
        check_json_content_type(&headers)?;
        parse_json(&bytes).map(|v| OptionalJsonBody(Some(v)))
    }
}

/// An `application/x-www-form-urlencoded` body; a parameter sent twice is refused (RFC 6749 §3.1).
pub struct FormBody(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for FormBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = content_type(req.headers()) {
            let essence = ct.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Content-Type must be application/x-www-form-urlencoded",
                    &[],
                ));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| body_rejection(&e, true))?;
        let mut out = HashMap::new();
        for (k, v) in form_urlencoded::parse(&bytes) {
            if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!("parameter {k:?} is repeated"),
                    &[],
                ));
            }
        }
        Ok(FormBody(out))
    }
}

// -------------------------------------------------------------------------------------------------
// Middleware
// -------------------------------------------------------------------------------------------------

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
    resp
}

fn peer_of(req: &Request) -> Option<std::net::SocketAddr> {
    req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0)
}

const GATEWAY_REALM: &str = "Bearer realm=\"missiongate-gateway\"";

/// Gateways only (see [`crate::gateway`]); a refusal is a 401 problem document. The caller is put in
/// the request's extensions for the handler.
pub(crate) async fn require_gateway(State(st): State<HttpState>, mut req: Request, next: Next) -> Response {
    match st.gateway.check(req.headers(), peer_of(&req)) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => {
            tracing::warn!(path = %req.uri().path(), ?refusal, "gateway surface refused a caller");
            let mut resp = problem_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this endpoint answers gateways only: Authorization: Bearer <gateway credential>",
                None,
                &[],
            );
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(GATEWAY_REALM));
            resp
        }
    }
}

/// As [`require_gateway`], with the Mission Status draft's JSON error (`unauthorized`, 401).
async fn require_gateway_oauth(State(st): State<HttpState>, mut req: Request, next: Next) -> Response {
    match st.gateway.check(req.headers(), peer_of(&req)) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(refusal) => {
            tracing::warn!(path = %req.uri().path(), ?refusal, "gateway surface refused a caller");
            let mut resp = oauth_error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Mission Status answers gateways only: Authorization: Bearer <gateway credential>",
                &[],
            );
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(GATEWAY_REALM));
            resp
        }
    }
}

/// `Authorization: Bearer <operator token>`, compared in constant time. Anything else (no header, two
/// headers, another scheme, an agent's access token) is a 401.
/// `GET /metrics`: the Prometheus text format, for the operator token or `--metrics-token`.
async fn metrics(State(st): State<HttpState>, headers: HeaderMap) -> Response {
    let presented = bearer(&headers);
    let allowed = presented.is_some_and(|t| {
        // Both compared, whichever matches.
        let op = secret_matches(t, st.operator_token_sha256.as_slice());
        let scraper = st.metrics_token_sha256.as_ref().is_some_and(|h| secret_matches(t, h.as_slice()));
        op | scraper
    });
    if !allowed {
        let mut resp = problem_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "/metrics requires Authorization: Bearer <metrics token or operator token>",
            None,
            &[],
        );
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"missiongate-metrics\""));
        return resp;
    }
    if let Err(e) = crate::notify::refresh_gauges(&st.access).await {
        tracing::warn!(error = %e, "metrics: database gauges not refreshed");
    }
    match crate::metrics::METRICS.encode() {
        Ok(text) => {
            let mut resp = (StatusCode::OK, text).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(_) => internal("metrics could not be encoded"),
    }
}

/// The Bearer token of a request with exactly one `Authorization` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok().and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        }),
        _ => None,
    }
}

pub(crate) async fn require_operator(State(st): State<HttpState>, req: Request, next: Next) -> Response {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let presented = match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok().and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        }),
        _ => None,
    };
    match presented {
        Some(token) if secret_matches(token, st.operator_token_sha256.as_slice()) => next.run(req).await,
        _ => {
            let mut resp = problem_response(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the operator API requires Authorization: Bearer <operator token>",
                None,
                &[],
            );
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"missiongate-operator\""));
            resp
        }
    }
}

// -------------------------------------------------------------------------------------------------
// Public handlers
// -------------------------------------------------------------------------------------------------

async fn metadata(State(st): State<HttpState>) -> Response {
    json_response(StatusCode::OK, &st.authority.metadata())
}

async fn jwks(State(st): State<HttpState>) -> Response {
    match st.authority.jwks().await {
        Ok(set) => match serde_json::to_value(&set) {
            Ok(v) => {
                let mut resp = json_response(StatusCode::OK, &v);
                resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                resp
            }
            Err(e) => internal(&e.to_string()),
        },
        Err(e) => internal(&e.to_string()),
    }
}

fn required<'a>(form: &'a HashMap<String, String>, name: &str, max: usize) -> Result<&'a str, String> {
    match form.get(name) {
        None => Err(format!("{name} is required")),
        Some(v) if v.is_empty() => Err(format!("{name} is required")),
        Some(v) if v.len() > max => Err(format!("{name} is too long")),
        Some(v) => Ok(v.as_str()),
    }
}

async fn mission_status(State(st): State<HttpState>, FormBody(form): FormBody) -> Response {
    let nonce_echo: Vec<(&str, Value)> = form.get("nonce").map(|n| ("nonce", json!(n))).into_iter().collect();
    let parsed = (|| {
        Ok::<_, String>((
            required(&form, "mission_id", 256)?,
            required(&form, "audience", 2048)?,
            required(&form, "nonce", 512)?,
        ))
    })();
    let (mission_id, audience, nonce) = match parsed {
        Ok(p) => p,
        Err(m) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &m, &nonce_echo),
    };
    match st.authority.status(mission_id, audience, nonce).await {
        Ok(jws) => with_headers((StatusCode::OK, jws).into_response(), CONTENT_TYPE_MISSION_STATUS),
        Err(AuthorityError::NotFound) => {
            oauth_error(StatusCode::NOT_FOUND, "not_found", "unknown mission", &nonce_echo)
        }
        Err(e) => {
            tracing::error!(error = %e, "mission status failed");
            oauth_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "mission status is unavailable", &nonce_echo)
        }
    }
}

async fn mission_events(
    State(st): State<HttpState>,
    caller: Option<axum::Extension<Caller>>,
    JsonBody(req): JsonBody<PollRequest>,
) -> Response {
    // A poll that may wait holds one of its caller's long-poll slots while it waits.
    let long = !req.return_immediately.unwrap_or(false) && req.max_events != Some(0);
    let _slot = match (long, caller) {
        (true, Some(axum::Extension(c))) => match st.gateway.long_poll(&c) {
            Some(slot) => Some(slot),
            None => {
                tracing::warn!(caller = %c, "too many long polls");
                let mut resp = problem_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "this gateway already holds as many long polls as allowed; poll again later",
                    None,
                    &[("retry_after", json!(1))],
                );
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1u32));
                return resp;
            }
        },
        _ => None,
    };
    match st.authority.poll(&req).await {
        Ok(resp) => match serde_json::to_value(&resp) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => internal(&e.to_string()),
        },
        Err(e) => operator_error(e),
    }
}

/// Client credentials: HTTP Basic (RFC 6749 §2.3.1, form-urlencoded parts) or form parameters.
fn client_credentials(headers: &HeaderMap, form: &HashMap<String, String>) -> Result<(String, String, bool), Response> {
    let invalid_client = |basic: bool| {
        let mut resp = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed", &[]);
        if basic {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"missiongate\""));
        }
        resp
    };
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    let basic = match (auth.next(), auth.next()) {
        (None, _) => None,
        (Some(v), None) => {
            let v = v.to_str().map_err(|_| invalid_client(true))?;
            let (scheme, rest) = v.split_once(' ').ok_or_else(|| invalid_client(true))?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(invalid_client(false));
            }
            let raw =
                base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| invalid_client(true))?;
            let text = String::from_utf8(raw).map_err(|_| invalid_client(true))?;
            let (id, secret) = text.split_once(':').ok_or_else(|| invalid_client(true))?;
            let decode = |s: &str| {
                let wrapped = format!("v={s}");
                form_urlencoded::parse(wrapped.as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
            };
            Some((decode(id), decode(secret)))
        }
        _ => return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "Authorization is repeated", &[])),
    };
    match (basic, form.get("client_secret")) {
        (Some(_), Some(_)) => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "use one client authentication method, not both",
            &[],
        )),
        (Some((id, secret)), None) => {
            if form.get("client_id").is_some_and(|f| *f != id) {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "client_id differs from the Basic credentials",
                    &[],
                ));
            }
            Ok((id, secret, true))
        }
        (None, Some(secret)) => match form.get("client_id") {
            Some(id) => Ok((id.clone(), secret.clone(), false)),
            None => Err(invalid_client(false)),
        },
        (None, None) => Err(invalid_client(false)),
    }
}

async fn token(State(st): State<HttpState>, headers: HeaderMap, FormBody(form): FormBody) -> Response {
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is required", &[]),
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only grant_type=client_credentials is supported",
                &[],
            )
        }
    }
    let (client_id, client_secret, basic) = match client_credentials(&headers, &form) {
        Ok(c) => c,
        Err(resp) => return resp,
    };
    let mission_id = match required(&form, "mission_id", 256) {
        Ok(m) => m,
        Err(m) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &m, &[]),
    };
    match st.authority.authenticate_client(mission_id, &client_id, &client_secret).await {
        Ok(()) => {}
        Err(AuthorityError::InvalidClient) => {
            let mut resp = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication failed", &[]);
            if basic {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"missiongate\""));
            }
            return resp;
        }
        Err(e) => return internal(&e.to_string()),
    }
    let mut proofs = headers.get_all("dpop").iter();
    let jkt = match (proofs.next(), proofs.next()) {
        (None, _) => None,
        (Some(p), None) => {
            let htu = st.authority.settings().token_endpoint();
            let checked = p
                .to_str()
                .map_err(|_| "DPoP header is not ASCII".to_owned())
                .and_then(|p| st.authority.dpop().check(p, "POST", &htu, now_secs()).map_err(|e| e.to_string()));
            match checked {
                Ok(jkt) => Some(jkt),
                Err(m) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", &m, &[]),
            }
        }
        _ => return oauth_error(StatusCode::BAD_REQUEST, "invalid_dpop_proof", "more than one DPoP header", &[]),
    };
    match st.authority.mint(mission_id, jkt).await {
        Ok(minted) => token_response(&minted),
        Err(AuthorityError::Inactive { state }) => oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            &format!("the mission is {state}, not active"),
            &[("mission_error", Value::String(mission::mission_error(&state).to_owned()))],
        ),
        Err(AuthorityError::NotFound) => oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", "unknown mission", &[]),
        Err(e) => internal(&e.to_string()),
    }
}

// -------------------------------------------------------------------------------------------------
// Operator handlers
// -------------------------------------------------------------------------------------------------

async fn create_mission(State(st): State<HttpState>, JsonBody(req): JsonBody<CreateMission>) -> Response {
    match st.authority.create(req, ACTOR_OPERATOR).await {
        Ok(created) => {
            let mut view = mission_view(&created.mission);
            view.insert("client_secret".into(), Value::String(created.client_secret));
            let mut resp = json_response(StatusCode::CREATED, &Value::Object(view));
            if let Ok(loc) = HeaderValue::from_str(&format!("/operator/missions/{}", created.mission.id)) {
                resp.headers_mut().insert(header::LOCATION, loc);
            }
            resp
        }
        Err(e) => operator_error(e),
    }
}

async fn list_missions(State(st): State<HttpState>, RawQuery(query): RawQuery) -> Response {
    let mut state = None;
    let mut limit = 100u32;
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "state" => state = Some(v.into_owned()),
            "limit" => match v.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => limit = n,
                _ => {
                    return problem_response(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "limit must be 1 to 1000",
                        None,
                        &[],
                    )
                }
            },
            _ => {}
        }
    }
    match st.authority.list(state.as_deref(), limit).await {
        Ok(rows) => {
            let missions: Vec<Value> = rows.iter().map(|m| Value::Object(mission_view(m))).collect();
            json_response(StatusCode::OK, &json!({ "missions": missions }))
        }
        Err(e) => operator_error(e),
    }
}

async fn show_mission(State(st): State<HttpState>, Path(id): Path<String>) -> Response {
    match st.authority.get_with_trail(&id).await {
        Ok((m, trail)) => {
            let mut view = mission_view(&m);
            view.insert("transitions".into(), Value::Array(trail.iter().map(transition_view).collect()));
            json_response(StatusCode::OK, &Value::Object(view))
        }
        Err(e) => operator_error(e),
    }
}

fn lifecycle_route(action: Action) -> MethodRouter<HttpState> {
    post(move |s: State<HttpState>, p: Path<String>| lifecycle(s, p, action))
}

async fn lifecycle(State(st): State<HttpState>, Path(id): Path<String>, action: Action) -> Response {
    match st.authority.transition(&id, action, ACTOR_OPERATOR).await {
        Ok(m) => json_response(StatusCode::OK, &Value::Object(mission_view(&m))),
        Err(e) => operator_error(e),
    }
}

/// Body of `POST /operator/missions/{id}/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OperatorTokenRequest {
    #[serde(default)]
    dpop_jkt: Option<String>,
}

fn is_jkt(s: &str) -> bool {
    s.len() == 43 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

async fn operator_token(
    State(st): State<HttpState>,
    Path(id): Path<String>,
    OptionalJsonBody(body): OptionalJsonBody<OperatorTokenRequest>,
) -> Response {
    let jkt = body.and_then(|b| b.dpop_jkt);
    if let Some(j) = &jkt {
        if !is_jkt(j) {
            return problem_response(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "dpop_jkt must be an RFC 7638 SHA-256 thumbprint (43 base64url characters)",
                None,
                &[],
            );
        }
    }
    match st.authority.mint(&id, jkt).await {
        Ok(minted) => token_response(&minted),
        Err(e) => operator_error(e),
    }
}

async fn rotate_keys(State(st): State<HttpState>) -> Response {
    match st.authority.rotate_keys().await {
        Ok((previous, kid)) => json_response(StatusCode::OK, &json!({"kid": kid, "previous_kid": previous})),
        Err(e) => operator_error(e),
    }
}
