//! Operations: liveness, Prometheus metrics, request logging and the fallbacks.
//!
//! | method | path | answer |
//! |---|---|---|
//! | GET | `/healthz` | `{"status":"ok"}` |
//! | GET | `/metrics` | Prometheus text format (`--metrics-token` or the operator token; [`crate::metrics`]) |

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::error::{json_response, ApiError, Challenge, Code};
use super::guard::bearer;
use super::state::HttpState;
use crate::util::secret_matches;

pub(crate) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/healthz", get(|| async { json_response(StatusCode::OK, &json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
}

/// Any other path.
pub(crate) async fn not_found() -> ApiError {
    ApiError::problem(StatusCode::NOT_FOUND, Code::NotFound, "no such endpoint").into()
}

/// A known path with another method.
pub(crate) async fn method_not_allowed() -> ApiError {
    ApiError::problem(StatusCode::METHOD_NOT_ALLOWED, Code::MethodNotAllowed, "method not allowed here").into()
}

pub(crate) async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(%method, %path, status = resp.status().as_u16(), ms = started.elapsed().as_millis() as u64, "request");
    resp
}

/// `GET /metrics`: the Prometheus text format, for the operator token or `--metrics-token`.
async fn metrics(State(st): State<HttpState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let presented = bearer(&headers);
    let allowed = presented.is_some_and(|t| {
        // Both compared, whichever matches.
        let op = secret_matches(t, st.operator_token_sha256.as_slice());
        let scraper = st.metrics_token_sha256.as_ref().is_some_and(|h| secret_matches(t, h.as_slice()));
        op | scraper
    });
    if !allowed {
        return Err(ApiError::problem(
            StatusCode::UNAUTHORIZED,
            Code::Unauthorized,
            "/metrics requires Authorization: Bearer <metrics token or operator token>",
        )
        .challenge(Challenge::Metrics)
        .into());
    }
    if let Err(e) = crate::notify::refresh_gauges(&st.access).await {
        tracing::warn!(error = %e, "metrics: database gauges not refreshed");
    }
    let text = crate::metrics::METRICS.encode().map_err(|_| ApiError::internal("metrics could not be encoded"))?;
    let mut resp = (StatusCode::OK, text).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
