//! Who may call: the operator token and the gateway credential, as route layers.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::error::{ApiError, Challenge, Code};
use super::state::HttpState;
use crate::util::secret_matches;

fn peer_of(req: &Request) -> Option<std::net::SocketAddr> {
    req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0)
}

/// Let a gateway through, with its [`crate::gateway::Caller`] in the request's extensions for the
/// handler; anyone else gets a 401 with the gateway challenge, as an OAuth error on Mission Status.
async fn gateway_only(st: &HttpState, mut req: Request, next: Next, oauth: bool) -> Result<Response, ApiError> {
    match st.gateway.check(req.headers(), peer_of(&req)) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            Ok(next.run(req).await)
        }
        Err(refusal) => {
            tracing::warn!(path = %req.uri().path(), ?refusal, "gateway surface refused a caller");
            let detail = if oauth {
                "Mission Status answers gateways only: Authorization: Bearer <gateway credential>"
            } else {
                "this endpoint answers gateways only: Authorization: Bearer <gateway credential>"
            };
            let body =
                ApiError::problem(StatusCode::UNAUTHORIZED, Code::Unauthorized, detail).challenge(Challenge::Gateway);
            Err(if oauth { body.oauth() } else { body.into() })
        }
    }
}

/// Gateways only (see [`crate::gateway`]); a refusal is a 401 problem document.
pub(crate) async fn require_gateway(
    State(st): State<HttpState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    gateway_only(&st, req, next, false).await
}

/// As [`require_gateway`], with the Mission Status draft's JSON error (`unauthorized`, 401).
pub(crate) async fn require_gateway_oauth(
    State(st): State<HttpState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    gateway_only(&st, req, next, true).await
}

/// The Bearer token of a request with exactly one `Authorization` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok().and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        }),
        _ => None,
    }
}

/// `Authorization: Bearer <operator token>`, compared in constant time. Anything else (no header, two
/// headers, another scheme, an agent's access token) is a 401.
pub(crate) async fn require_operator(
    State(st): State<HttpState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match bearer(req.headers()) {
        Some(token) if secret_matches(token, st.operator_token_sha256.as_slice()) => Ok(next.run(req).await),
        _ => Err(ApiError::problem(
            StatusCode::UNAUTHORIZED,
            Code::Unauthorized,
            "the operator API requires Authorization: Bearer <operator token>",
        )
        .challenge(Challenge::Operator)
        .into()),
    }
}
