//! HTTP surface of the PDP, the Access Request Service and the Captive Portal API.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | GET | `/.well-known/authzen-configuration` | | AuthZEN PDP metadata (+ ARAP `access_request_endpoint`, `jwks_uri`, capabilities) |
//! | POST | `/access/v1/evaluation` | AuthZEN evaluation | `{"decision", "context"}` (gateways only, [`crate::gateway`]) |
//! | POST | `/access/v1/evaluations` | AuthZEN batch | `{"evaluations": [...]}` (gateways only) |
//! | POST | `/access/v1/requests` | ARAP submission, `Idempotency-Key` header | 201/200 `{"task"}` |
//! | GET | `/access/v1/requests/{id}` | | `{"task", "result"?}`, `Retry-After` while pending |
//! | POST | `/access/v1/requests/{id}/cancel` (or `DELETE /access/v1/requests/{id}`) | | `{"task"}` |
//! | GET | `/captive-portal/api/d/{id}` | | RFC 8908 `application/captive+json`, `Cache-Control: private` |
//! | GET | `/operator/access-requests[?status=&limit=]` | | `{"access_requests": [...]}` (operator) |
//! | GET | `/operator/access-requests/{id}` | | task, denial, grant, audit (operator) |
//! | POST | `/operator/access-requests/{id}/approve` | `{"duration_seconds", "single_use"?}` | task (operator) |
//! | POST | `/operator/access-requests/{id}/deny` | `{"reason"?}` | task (operator) |
//!
//! Access Request errors are `application/problem+json` whose `type` is
//! `urn:openid:authzen:access-request:error:<code>` (see [`crate::access::ArError`]).

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use missiongate_wire::authzen::{
    EvaluationRequest, ACCESS_REQUESTS_PATH, CAPTIVE_CONTENT_TYPE, EVALUATIONS_PATH, EVALUATION_PATH,
};
use missiongate_wire::digest::is_json_media_type;

use super::error::{json_response, ApiError, Code};
use super::extract::{listing_query, JsonBody};
use super::guard::{require_gateway, require_operator};
use super::state::{HttpState, ACTOR_OPERATOR};
use crate::access::ArError;
use crate::access_store::TaskStatus;

/// Largest evaluation body.
pub const EVALUATION_BODY_LIMIT: usize = 256 * 1024;
/// Most items in one batch.
pub const MAX_BATCH: usize = 100;

pub(crate) fn routes(state: &HttpState) -> Router<HttpState> {
    let pdp = Router::new()
        .route(EVALUATION_PATH, post(evaluation))
        .route(EVALUATIONS_PATH, post(evaluations))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_gateway))
        .layer(DefaultBodyLimit::max(EVALUATION_BODY_LIMIT));
    let operator = Router::new()
        .route("/operator/access-requests", get(op_list))
        .route("/operator/access-requests/{id}", get(op_show))
        .route("/operator/access-requests/{id}/approve", post(op_approve))
        .route("/operator/access-requests/{id}/deny", post(op_deny))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_operator));
    Router::new()
        .route("/.well-known/authzen-configuration", get(pdp_metadata))
        .route(ACCESS_REQUESTS_PATH, post(submit))
        .route("/access/v1/requests/{id}", get(task_status).delete(task_cancel))
        .route("/access/v1/requests/{id}/cancel", post(task_cancel))
        .route("/captive-portal/api/d/{id}", get(captive))
        .merge(pdp)
        .merge(operator)
}

// -------------------------------------------------------------------------------------------------
// PDP
// -------------------------------------------------------------------------------------------------

/// The PEP's `X-Request-ID`, echoed on every PDP answer (success or error).
fn echo_request_id(headers: &HeaderMap, result: Result<Response, ApiError>) -> Response {
    let mut resp = result.into_response();
    if let Some(id) = headers.get("x-request-id") {
        if id.len() <= 256 {
            resp.headers_mut().insert("x-request-id", id.clone());
        }
    }
    resp
}

/// Count an evaluation's outcome (a PDP answer, or a batch item).
fn count_decision(v: &Value) {
    use crate::metrics::{Decision, METRICS};
    let ctx = v.get("context");
    let decision = if v.get("decision").and_then(Value::as_bool) == Some(true) {
        Decision::permit
    } else if ctx.and_then(|c| c.get("error")).is_some() {
        Decision::error
    } else if ctx.and_then(|c| c.get("next_action")).and_then(Value::as_str) == Some("request") {
        Decision::request
    } else {
        Decision::deny
    };
    METRICS.evaluation(decision);
}

async fn pdp_metadata(State(st): State<HttpState>) -> Response {
    json_response(StatusCode::OK, &st.access.metadata())
}

/// One evaluation, counted; a failure is a PDP error.
async fn evaluate_one(st: &HttpState, req: &EvaluationRequest) -> Result<Response, ApiError> {
    let v = st
        .access
        .evaluate(req)
        .await
        .and_then(|r| serde_json::to_value(&r).map_err(ArError::internal))
        .map_err(ApiError::Pdp)?;
    count_decision(&v);
    Ok(json_response(StatusCode::OK, &v))
}

async fn evaluation(
    State(st): State<HttpState>,
    headers: HeaderMap,
    JsonBody(req): JsonBody<EvaluationRequest>,
) -> Response {
    echo_request_id(&headers, evaluate_one(&st, &req).await)
}

fn item_error(status: u16, message: &str) -> Value {
    json!({"decision": false, "context": {"error": {"status": status, "message": message}}})
}

async fn evaluations(
    State(st): State<HttpState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Response {
    echo_request_id(&headers, batch(&st, body).await)
}

async fn batch(st: &HttpState, body: Map<String, Value>) -> Result<Response, ApiError> {
    let invalid = |m: String| ApiError::Pdp(ArError::invalid(m));
    let semantic = match body.get("options").and_then(|o| o.get("evaluations_semantic")) {
        None => "execute_all",
        Some(Value::String(s))
            if matches!(s.as_str(), "execute_all" | "deny_on_first_deny" | "permit_on_first_permit") =>
        {
            s.as_str()
        }
        Some(_) => return Err(invalid("options.evaluations_semantic is not supported".into())),
    };
    let items = match body.get("evaluations") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(invalid("evaluations must be an array".into())),
    };
    if items.len() > MAX_BATCH {
        return Err(invalid(format!("at most {MAX_BATCH} evaluations per call")));
    }
    let mut defaults = Map::new();
    for k in ["subject", "resource", "action", "context"] {
        if let Some(v) = body.get(k) {
            defaults.insert(k.to_owned(), v.clone());
        }
    }
    if items.is_empty() {
        // AuthZEN: no `evaluations` behaves like a single Access Evaluation.
        let req = serde_json::from_value::<EvaluationRequest>(Value::Object(defaults))
            .map_err(|e| invalid(format!("request body: {e}")))?;
        return evaluate_one(st, &req).await;
    }
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(item) = item else {
            out.push(item_error(400, "an evaluation must be an object"));
            continue;
        };
        let mut merged = defaults.clone();
        for (k, v) in item {
            merged.insert(k, v);
        }
        let decision = match serde_json::from_value::<EvaluationRequest>(Value::Object(merged)) {
            Err(e) => item_error(400, &e.to_string()),
            Ok(req) => match st.access.evaluate(&req).await {
                Ok(r) => serde_json::to_value(&r).unwrap_or_else(|_| item_error(500, "internal error")),
                Err(e) => item_error(e.status, &e.detail),
            },
        };
        count_decision(&decision);
        let permitted = decision.get("decision").and_then(Value::as_bool) == Some(true);
        out.push(decision);
        if (semantic == "deny_on_first_deny" && !permitted) || (semantic == "permit_on_first_permit" && permitted) {
            break;
        }
    }
    Ok(json_response(StatusCode::OK, &json!({ "evaluations": out })))
}

// -------------------------------------------------------------------------------------------------
// Access Requests
// -------------------------------------------------------------------------------------------------

/// The `Idempotency-Key` (an RFC 8941 string; an unquoted token is accepted too).
fn idempotency_key(headers: &HeaderMap) -> Result<String, ArError> {
    let mut values = headers.get_all("idempotency-key").iter();
    let raw = match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().map_err(|_| ArError::invalid("Idempotency-Key must be ASCII"))?,
        (None, _) => return Err(ArError::invalid("the Idempotency-Key header is required")),
        _ => return Err(ArError::invalid("Idempotency-Key is repeated")),
    };
    let raw = raw.trim();
    let key = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')).unwrap_or(raw);
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\') {
        return Err(ArError::invalid("Idempotency-Key must be 1 to 255 visible ASCII characters"));
    }
    Ok(key.to_owned())
}

async fn submit(State(st): State<HttpState>, req: Request) -> Result<Response, ApiError> {
    let headers = req.headers().clone();
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        if !ct.to_str().is_ok_and(is_json_media_type) {
            return Err(ArError::invalid("Content-Type must be application/json").with_status(415).into());
        }
    }
    let bytes = match Bytes::from_request(req, &st).await {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ArError::invalid("request body is larger than 1 MiB").with_status(413).into())
        }
        Err(_) => return Err(ArError::invalid("request body could not be read").into()),
    };
    let key = idempotency_key(&headers)?;
    let s = st.access.submit(&key, &bytes).await?;
    let id = s.task.id.clone();
    let created = s.created;
    let (view, _) = st.access.submitted_view(s.task).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let mut resp = json_response(status, &view);
    if let Ok(loc) = HeaderValue::from_str(&st.access.settings().status_endpoint(&id)) {
        resp.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(resp)
}

async fn task_status(State(st): State<HttpState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (view, task) = st.access.task_view(&id).await?;
    let mut resp = json_response(StatusCode::OK, &view);
    if task.status == TaskStatus::Pending {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(crate::access::RETRY_AFTER_SECONDS));
    }
    Ok(resp)
}

async fn task_cancel(State(st): State<HttpState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let view = st.access.cancel(&id).await?;
    Ok(json_response(StatusCode::OK, &view))
}

// -------------------------------------------------------------------------------------------------
// Captive Portal API
// -------------------------------------------------------------------------------------------------

async fn captive(State(st): State<HttpState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let Some(doc) = st.access.captive(&id).await? else {
        return Err(ApiError::problem(StatusCode::NOT_FOUND, Code::NotFound, "no such denial").into());
    };
    let bytes = serde_json::to_vec(&doc).map_err(ArError::internal)?;
    let mut resp = (StatusCode::OK, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CAPTIVE_CONTENT_TYPE));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private"));
    Ok(resp)
}

// -------------------------------------------------------------------------------------------------
// Operator approver API
// -------------------------------------------------------------------------------------------------

async fn op_list(State(st): State<HttpState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let (status, limit) = listing_query(query.as_deref(), "status").map_err(ArError::invalid)?;
    let rows = st.access.list(status.as_deref(), limit).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut v = st.access.task_admin_view(&r.task, &r.denial).await?;
        if let (Some(obj), Some(m)) = (v.as_object_mut(), &r.mission) {
            obj.insert("mission".into(), json!({"id": m.id, "goal": m.intent.goal, "state": m.state}));
        }
        out.push(v);
    }
    Ok(json_response(StatusCode::OK, &json!({ "access_requests": out })))
}

async fn op_show(State(st): State<HttpState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let store = st.authority.store();
    let task = store.task(&id).await.map_err(ArError::internal)?.ok_or_else(ArError::unknown_task)?;
    let page = st.access.denial_page(&task.denial_id).await?.ok_or_else(|| ArError::internal("task without denial"))?;
    let task = page.tasks.iter().find(|t| t.id == id).cloned().unwrap_or(task);
    let mut v = st.access.task_admin_view(&task, &page.denial).await?;
    if let Some(obj) = v.as_object_mut() {
        let audit: Vec<Value> = page
            .audit
            .iter()
            .filter(|a| a.task_id.as_deref() == Some(id.as_str()))
            .map(|a| {
                json!({"at": missiongate_wire::time::format_rfc3339(a.at), "actor": a.actor, "action": a.action,
                       "grant_id": a.grant_id, "detail": a.detail})
            })
            .collect();
        obj.insert("audit".into(), Value::Array(audit));
    }
    Ok(json_response(StatusCode::OK, &v))
}

/// Body of `POST /operator/access-requests/{id}/approve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    duration_seconds: i64,
    #[serde(default)]
    single_use: Option<bool>,
}

/// Body of `POST /operator/access-requests/{id}/deny`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyBody {
    #[serde(default)]
    reason: Option<String>,
}

async fn admin_task(st: &HttpState, task: crate::access_store::TaskRow) -> Result<Response, ApiError> {
    let denial = st
        .authority
        .store()
        .denial(&task.denial_id)
        .await
        .map_err(ArError::internal)?
        .ok_or_else(|| ArError::internal("task without denial"))?;
    let v = st.access.task_admin_view(&task, &denial).await?;
    Ok(json_response(StatusCode::OK, &v))
}

async fn op_approve(
    State(st): State<HttpState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<ApproveBody>,
) -> Result<Response, ApiError> {
    let (task, _) = st.access.approve(&id, b.duration_seconds, b.single_use, ACTOR_OPERATOR).await?;
    admin_task(&st, task).await
}

async fn op_deny(
    State(st): State<HttpState>,
    Path(id): Path<String>,
    JsonBody(b): JsonBody<DenyBody>,
) -> Result<Response, ApiError> {
    let reason = b.reason.unwrap_or_else(|| "denied by the operator".into());
    let task = st.access.deny(&id, &reason, ACTOR_OPERATOR).await?;
    admin_task(&st, task).await
}
