//! The Mission authority: OAuth metadata, JWKS, the token endpoint, Mission Status, the event feed and
//! the operator's Mission API.

// Handlers here return a ready `Response` as their error; it is built once on the (cold) error path,
// so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};

use missiongate_wire::claims::PollRequest;
use missiongate_wire::problem::ProblemMission;
use missiongate_wire::time::format_rfc3339;

use super::error::{internal, json_response, oauth_error, problem_response, with_headers};
use super::extract::{FormBody, JsonBody, OptionalJsonBody};
use super::guard::{require_gateway, require_gateway_oauth, require_operator};
use super::state::{HttpState, ACTOR_OPERATOR};
use crate::authority::{AuthorityError, Minted};
use crate::gateway::Caller;
use crate::mission::{self, Action, CreateMission};
use crate::store::{MissionRow, TransitionRow};
use crate::util::now_secs;

/// Media type of Mission Status responses.
pub const CONTENT_TYPE_MISSION_STATUS: &str = "application/mission-status-response+jwt";

/// The public Mission authority routes, the gateway surfaces and the operator Mission API.
pub(crate) fn routes(state: &HttpState) -> Router<HttpState> {
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
        .route("/token", post(token))
        .merge(gateway_routes(state))
        .merge(operator)
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
