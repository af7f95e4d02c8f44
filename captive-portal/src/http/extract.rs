//! Request extractors: strict JSON and form bodies, with the house's error answers.

// Extractors here return a ready `Response` as their rejection, as axum's own do; it is built once on
// the (cold) error path, so boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use serde::de::DeserializeOwned;

use missiongate_wire::digest::is_json_media_type;

use super::error::{oauth_error, problem_response};

fn content_type(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("invalid"))
}

pub(crate) fn body_rejection(e: &axum::extract::rejection::BytesRejection, oauth: bool) -> Response {
    let (status, error, detail) = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", "request body is larger than 1 MiB")
    } else {
        (StatusCode::BAD_REQUEST, "invalid_request", "request body could not be read")
    };
    let mut resp = if oauth {
        oauth_error(status, error, detail, &[])
    } else {
        problem_response(status, error, detail, None, &[])
    };
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        // The rest of the body was not read: the connection cannot be reused.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Parse a JSON body strictly (I-JSON: no duplicate member names) into `T`.
fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Response> {
    let value = missiongate_wire::jcs::parse_ijson(bytes).map_err(|e| {
        problem_response(StatusCode::BAD_REQUEST, "invalid_request", &format!("request body: {e}"), None, &[])
    })?;
    serde_json::from_value(value).map_err(|e| {
        problem_response(StatusCode::BAD_REQUEST, "invalid_request", &format!("request body: {e}"), None, &[])
    })
}

pub(crate) fn check_json_content_type(headers: &HeaderMap) -> Result<(), Response> {
    match content_type(headers) {
        None => Ok(()),
        Some(ct) if is_json_media_type(ct) => Ok(()),
        Some(_) => Err(problem_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "Content-Type must be application/json",
            None,
            &[],
        )),
    }
}

/// A required JSON body.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| body_rejection(&e, false))?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// An optional JSON body: an empty body is `None`.
pub struct OptionalJsonBody<T>(pub Option<T>);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for OptionalJsonBody<T> {
    type Rejection = Response;

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
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = content_type(req.headers()) {
            let essence = ct.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Content-Type must be application/x-www-form-urlencoded",
                    &[],
                ));
            }
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| body_rejection(&e, true))?;
        let mut out = HashMap::new();
        for (k, v) in form_urlencoded::parse(&bytes) {
            if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &format!("parameter {k:?} is repeated"),
                    &[],
                ));
            }
        }
        Ok(FormBody(out))
    }
}
