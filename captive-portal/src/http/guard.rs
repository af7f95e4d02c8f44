//! Who may call: the operator token and the gateway credential, as route layers.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::error::{oauth_error, problem_response};
use super::state::HttpState;
use crate::util::secret_matches;

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
pub(crate) async fn require_gateway_oauth(State(st): State<HttpState>, mut req: Request, next: Next) -> Response {
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
