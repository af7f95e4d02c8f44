//! The Mission authority: OAuth metadata, JWKS, the token endpoint, Mission Status, the event feed and
//! the operator's Mission API.

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
use missiongate_wire::time::format_rfc3339;

use super::error::{json_response, with_headers, ApiError, Challenge, Code};
use super::extract::{listing_query, FormBody, JsonBody, OptionalJsonBody};
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

async fn jwks(State(st): State<HttpState>) -> Result<Response, ApiError> {
    let set = st.authority.jwks().await.map_err(ApiError::internal)?;
    let v = serde_json::to_value(&set).map_err(ApiError::internal)?;
    let mut resp = json_response(StatusCode::OK, &v);
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

fn required<'a>(form: &'a HashMap<String, String>, name: &str, max: usize) -> Result<&'a str, String> {
    match form.get(name) {
        None => Err(format!("{name} is required")),
        Some(v) if v.is_empty() => Err(format!("{name} is required")),
        Some(v) if v.len() > max => Err(format!("{name} is too long")),
        Some(v) => Ok(v.as_str()),
    }
}

/// An OAuth `invalid_request` for a missing or oversized form parameter.
fn missing(m: String) -> ApiError {
    ApiError::oauth(StatusCode::BAD_REQUEST, Code::InvalidRequest, m)
}

async fn mission_status(State(st): State<HttpState>, FormBody(form): FormBody) -> Result<Response, ApiError> {
    // Every error echoes the `nonce` it was sent.
    let echo = |status: StatusCode, code: Code, description: String| {
        let body = ApiError::problem(status, code, description);
        match form.get("nonce") {
            Some(n) => body.member("nonce", json!(n)).oauth(),
            None => body.oauth(),
        }
    };
    let parsed = (|| {
        Ok::<_, String>((
            required(&form, "mission_id", 256)?,
            required(&form, "audience", 2048)?,
            required(&form, "nonce", 512)?,
        ))
    })();
    let (mission_id, audience, nonce) = parsed.map_err(|m| echo(StatusCode::BAD_REQUEST, Code::InvalidRequest, m))?;
    match st.authority.status(mission_id, audience, nonce).await {
        Ok(jws) => Ok(with_headers((StatusCode::OK, jws).into_response(), CONTENT_TYPE_MISSION_STATUS)),
        Err(AuthorityError::NotFound) => Err(echo(StatusCode::NOT_FOUND, Code::NotFound, "unknown mission".into())),
        Err(e) => {
            tracing::error!(error = %e, "mission status failed");
            Err(echo(StatusCode::SERVICE_UNAVAILABLE, Code::Unavailable, "mission status is unavailable".into()))
        }
    }
}

async fn mission_events(
    State(st): State<HttpState>,
    caller: Option<axum::Extension<Caller>>,
    JsonBody(req): JsonBody<PollRequest>,
) -> Result<Response, ApiError> {
    // A poll that may wait holds one of its caller's long-poll slots while it waits.
    let long = !req.return_immediately.unwrap_or(false) && req.max_events != Some(0);
    let _slot = match (long, caller) {
        (true, Some(axum::Extension(c))) => match st.gateway.long_poll(&c) {
            Some(slot) => Some(slot),
            None => {
                tracing::warn!(caller = %c, "too many long polls");
                return Err(ApiError::problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    Code::RateLimited,
                    "this gateway already holds as many long polls as allowed; poll again later",
                )
                .retry_after(1)
                .into());
            }
        },
        _ => None,
    };
    let resp = st.authority.poll(&req).await?;
    let v = serde_json::to_value(&resp).map_err(ApiError::internal)?;
    Ok(json_response(StatusCode::OK, &v))
}

/// 401 `invalid_client`, with the Basic challenge when the client tried Basic.
fn invalid_client(basic: bool) -> ApiError {
    let body = ApiError::problem(StatusCode::UNAUTHORIZED, Code::InvalidClient, "client authentication failed");
    if basic {
        body.challenge(Challenge::Basic).oauth()
    } else {
        body.oauth()
    }
}

/// Client credentials: HTTP Basic (RFC 6749 §2.3.1, form-urlencoded parts) or form parameters.
fn client_credentials(headers: &HeaderMap, form: &HashMap<String, String>) -> Result<(String, String, bool), ApiError> {
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
        _ => return Err(ApiError::oauth(StatusCode::BAD_REQUEST, Code::InvalidRequest, "Authorization is repeated")),
    };
    match (basic, form.get("client_secret")) {
        (Some(_), Some(_)) => Err(ApiError::oauth(
            StatusCode::BAD_REQUEST,
            Code::InvalidRequest,
            "use one client authentication method, not both",
        )),
        (Some((id, secret)), None) => {
            if form.get("client_id").is_some_and(|f| *f != id) {
                return Err(ApiError::oauth(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidRequest,
                    "client_id differs from the Basic credentials",
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

async fn token(
    State(st): State<HttpState>,
    headers: HeaderMap,
    FormBody(form): FormBody,
) -> Result<Response, ApiError> {
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        None => return Err(ApiError::oauth(StatusCode::BAD_REQUEST, Code::InvalidRequest, "grant_type is required")),
        Some(_) => {
            return Err(ApiError::oauth(
                StatusCode::BAD_REQUEST,
                Code::UnsupportedGrantType,
                "only grant_type=client_credentials is supported",
            ))
        }
    }
    let (client_id, client_secret, basic) = client_credentials(&headers, &form)?;
    let mission_id = required(&form, "mission_id", 256).map_err(missing)?;
    match st.authority.authenticate_client(mission_id, &client_id, &client_secret).await {
        Ok(()) => {}
        Err(AuthorityError::InvalidClient) => return Err(invalid_client(basic)),
        Err(e) => return Err(ApiError::internal(e)),
    }
    let bad_proof = |m: String| ApiError::oauth(StatusCode::BAD_REQUEST, Code::InvalidDpopProof, m);
    let mut proofs = headers.get_all("dpop").iter();
    let jkt = match (proofs.next(), proofs.next()) {
        (None, _) => None,
        (Some(p), None) => {
            let htu = st.authority.settings().token_endpoint();
            let checked = p
                .to_str()
                .map_err(|_| "DPoP header is not ASCII".to_owned())
                .and_then(|p| st.authority.dpop().check(p, "POST", &htu, now_secs()).map_err(|e| e.to_string()));
            Some(checked.map_err(bad_proof)?)
        }
        _ => return Err(bad_proof("more than one DPoP header".into())),
    };
    match st.authority.mint(mission_id, jkt).await {
        Ok(minted) => Ok(token_response(&minted)),
        Err(AuthorityError::Inactive { state }) => Err(ApiError::problem(
            StatusCode::BAD_REQUEST,
            Code::InvalidGrant,
            format!("the mission is {state}, not active"),
        )
        .member("mission_error", Value::String(mission::mission_error(&state).to_owned()))
        .oauth()),
        Err(AuthorityError::NotFound) => {
            Err(ApiError::oauth(StatusCode::BAD_REQUEST, Code::InvalidGrant, "unknown mission"))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}

// -------------------------------------------------------------------------------------------------
// Operator handlers
// -------------------------------------------------------------------------------------------------

async fn create_mission(
    State(st): State<HttpState>,
    JsonBody(req): JsonBody<CreateMission>,
) -> Result<Response, ApiError> {
    let created = st.authority.create(req, ACTOR_OPERATOR).await?;
    let mut view = mission_view(&created.mission);
    view.insert("client_secret".into(), Value::String(created.client_secret));
    let mut resp = json_response(StatusCode::CREATED, &Value::Object(view));
    if let Ok(loc) = HeaderValue::from_str(&format!("/operator/missions/{}", created.mission.id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

async fn list_missions(State(st): State<HttpState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let (state, limit) = listing_query(query.as_deref(), "state").map_err(ApiError::invalid)?;
    let rows = st.authority.list(state.as_deref(), limit).await?;
    let missions: Vec<Value> = rows.iter().map(|m| Value::Object(mission_view(m))).collect();
    Ok(json_response(StatusCode::OK, &json!({ "missions": missions })))
}

async fn show_mission(State(st): State<HttpState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (m, trail) = st.authority.get_with_trail(&id).await?;
    let mut view = mission_view(&m);
    view.insert("transitions".into(), Value::Array(trail.iter().map(transition_view).collect()));
    Ok(json_response(StatusCode::OK, &Value::Object(view)))
}

fn lifecycle_route(action: Action) -> MethodRouter<HttpState> {
    post(move |s: State<HttpState>, p: Path<String>| lifecycle(s, p, action))
}

async fn lifecycle(State(st): State<HttpState>, Path(id): Path<String>, action: Action) -> Result<Response, ApiError> {
    let m = st.authority.transition(&id, action, ACTOR_OPERATOR).await?;
    Ok(json_response(StatusCode::OK, &Value::Object(mission_view(&m))))
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
) -> Result<Response, ApiError> {
    let jkt = body.and_then(|b| b.dpop_jkt);
    if jkt.as_deref().is_some_and(|j| !is_jkt(j)) {
        return Err(ApiError::invalid("dpop_jkt must be an RFC 7638 SHA-256 thumbprint (43 base64url characters)"));
    }
    let minted = st.authority.mint(&id, jkt).await?;
    Ok(token_response(&minted))
}

async fn rotate_keys(State(st): State<HttpState>) -> Result<Response, ApiError> {
    let (previous, kid) = st.authority.rotate_keys().await?;
    Ok(json_response(StatusCode::OK, &json!({"kid": kid, "previous_kid": previous})))
}
