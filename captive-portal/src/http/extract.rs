//! Request extractors: strict JSON and form bodies; a rejection is an [`ApiError`].

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use missiongate_wire::digest::is_json_media_type;

use super::error::{ApiError, Code};

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("invalid"))
}

/// A body that could not be read (too large, or broken off); `oauth` on the OAuth surfaces.
pub(crate) fn body_rejection(e: &BytesRejection, oauth: bool) -> ApiError {
    ApiError::body_unreadable(e.status() == StatusCode::PAYLOAD_TOO_LARGE, oauth)
}

/// Parse a JSON body strictly (I-JSON: no duplicate member names) into `T`.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let value =
        missiongate_wire::jcs::parse_ijson(bytes).map_err(|e| ApiError::invalid(format!("request body: {e}")))?;
    serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("request body: {e}")))
}

/// No `Content-Type`, or a JSON one; anything else is a 415 problem document.
pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    match content_type(headers) {
        None => Ok(()),
        Some(ct) if is_json_media_type(ct) => Ok(()),
        Some(_) => Err(ApiError::problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidRequest,
            "Content-Type must be application/json",
        )
        .into()),
    }
}

/// A required JSON body.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| body_rejection(&e, false))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// An optional JSON body: an empty body is `None`.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = ApiError;

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
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = content_type(req.headers()) {
            let essence = ct.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
                return Err(ApiError::oauth(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidRequest,
                    "Content-Type must be application/x-www-form-urlencoded",
                ));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| body_rejection(&e, true))?;
        let mut out = HashMap::new();
        for (k, v) in form_urlencoded::parse(&bytes) {
            if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(ApiError::oauth(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidRequest,
                    format!("parameter {k:?} is repeated"),
                ));
            }
        }
        Ok(FormBody(out))
    }
}

/// The query of an operator listing, `?<filter>=...&limit=...`: the filter's value (the last one
/// given) and the limit (1 to 1000, 100 when absent); a bad limit is `Err` with what to say.
pub(crate) fn listing_query(query: Option<&str>, filter: &str) -> Result<(Option<String>, u32), &'static str> {
    let mut value = None;
    let mut limit = 100u32;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == filter {
            value = Some(v.into_owned());
        } else if k == "limit" {
            limit = match v.parse::<u32>() {
                Ok(n) if (1..=1000).contains(&n) => n,
                _ => return Err("limit must be 1 to 1000"),
            };
        }
    }
    Ok((value, limit))
}
