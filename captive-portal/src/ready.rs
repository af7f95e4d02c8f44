//! Readiness and database-outage answers.
//!
//! | Method | Path | Answer |
//! |---|---|---|
//! | GET | `/ready` | 200 `{"status":"ready"}` when the database answers; else 503 with `Retry-After` |
//!
//! A replica started while its Postgres is unreachable keeps retrying with backoff and meanwhile
//! answers `/ready` (and everything but `/healthz`) with 503 ([`starting_router`]).
//!
//! `/healthz` says the process is alive; `/ready` says it can serve (a load balancer's health check).
//! While the database is unreachable, a request that failed on it answers 503 with `Retry-After`
//! instead of a 500 ([`unavailable_as_503`]); once the database is back, the pools reconnect and
//! answers are normal again, without a restart.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::store::{recently_unavailable, Store};

/// Seconds a client is told to wait while the database is unreachable.
pub const RETRY_AFTER_SECONDS: u32 = 2;

/// How long the readiness probe waits for the database.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The `/ready` route.
pub fn router(store: Store) -> Router {
    Router::new().route("/ready", get(ready)).with_state(store)
}

async fn ready(State(store): State<Store>) -> Response {
    match tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => {
            let mut resp = axum::Json(json!({"status": "ready"})).into_response();
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the database does not answer");
            unavailable("the database does not answer")
        }
        Err(_) => {
            tracing::warn!("readiness: the database did not answer in time");
            unavailable("the database did not answer in time")
        }
    }
}

fn unavailable(detail: &str) -> Response {
    let body = json!({
        "status": "unavailable",
        "error": "temporarily_unavailable",
        "error_description": detail,
    });
    let mut resp = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// What a replica answers while it waits for the database at start (`captive-portal serve` keeps
/// retrying a Postgres it cannot reach): `/healthz` 200 (the process is alive), `/ready` and every
/// other path 503 with `Retry-After`. Each answer closes its connection, so no client keeps a
/// connection to this interim server once the real one takes over the socket.
pub fn starting_router() -> Router {
    async fn not_yet() -> Response {
        let mut resp = unavailable("waiting for the database at start");
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    }
    Router::new()
        .route(
            "/healthz",
            get(|| async {
                let mut resp = axum::Json(json!({"status": "ok"})).into_response();
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                resp
            }),
        )
        .route("/ready", get(not_yet))
        .fallback(not_yet)
}

/// Middleware: a 500 while the database has just been found unreachable becomes a 503 with
/// `Retry-After` (the client should retry; nothing was decided); every 503 carries `Retry-After`.
pub async fn unavailable_as_503(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    if resp.status() == StatusCode::INTERNAL_SERVER_ERROR && recently_unavailable(i64::from(RETRY_AFTER_SECONDS) + 3) {
        return unavailable("the database is unreachable; retry later");
    }
    if resp.status() == StatusCode::SERVICE_UNAVAILABLE && !resp.headers().contains_key(header::RETRY_AFTER) {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
    }
    resp
}
