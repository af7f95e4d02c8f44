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

use super::error::{internal, json_response, problem_response};
use super::guard::bearer;
use super::state::HttpState;
use crate::util::secret_matches;

pub(crate) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/healthz", get(|| async { json_response(StatusCode::OK, &json!({"status": "ok"})) }))
        .route("/metrics", get(metrics))
}

pub(crate) async fn not_found() -> Response {
    problem_response(StatusCode::NOT_FOUND, "not_found", "no such endpoint", None, &[])
}

pub(crate) async fn method_not_allowed() -> Response {
    problem_response(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed here", None, &[])
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
