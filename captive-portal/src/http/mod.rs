//! The HTTP layer (axum): one router module per area, assembled here.
//!
//! | module | area |
//! |---|---|
//! | [`mission`] | the Mission authority: OAuth metadata, JWKS, `/token`, Mission Status, the event feed, the operator's Mission API |
//! | [`access`] | the AuthZEN PDP, Access Requests, the Captive Portal API, the operator's access-request API |
//! | [`approver`] | the approver pages (`/portal`): sign-in, sessions, CSRF, the denial page |
//! | [`ops`] | `/healthz`, `/metrics`, request logging, the fallbacks |
//!
//! and what they share, which imports none of them: [`state`] (the router's state), [`error`]
//! ([`error::ApiError`]: every error answer, mapped in one place), [`extract`] (strict JSON and form
//! bodies), [`guard`] (operator and gateway credentials) and [`page`] (the approver pages' HTML, built
//! with [`page::Html`], whose only way to insert text escapes it). The import graph runs one way: this module → areas → shared leaves.
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
//! [`access`]; the approver pages in [`approver`].
//!
//! Operator routes need `Authorization: Bearer <operator token>`. Errors are
//! `application/problem+json` (RFC 9457) with an `error` member, except on the OAuth surfaces
//! (`/token`, `/mission/status`), which answer `application/json` `{"error", "error_description"}` as
//! RFC 6749 §5.2 and the Mission Status draft require.

pub mod access;
pub mod approver;
pub mod error;
pub mod extract;
pub mod guard;
pub mod mission;
pub mod ops;
pub mod page;
pub mod state;

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::Router;

pub use error::ApiError;
pub use extract::{FormBody, JsonBody, OptionalJsonBody};
pub use mission::CONTENT_TYPE_MISSION_STATUS;
pub use state::{HttpState, ACTOR_OPERATOR, BODY_LIMIT_BYTES};

/// The complete router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .merge(mission::routes(&state))
        .merge(access::routes(&state))
        .merge(approver::routes())
        .merge(ops::routes())
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(ops::log_request))
        .layer(middleware::from_fn(crate::metrics::observe_http))
        .with_state(state)
}
