//! The approver portal: the `user-portal-url` of every denial, for people.
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/portal/login[?next=/portal/...]` | sign-in form |
//! | POST | `/portal/login` | form `token`, `csrf`, `next` |
//! | POST | `/portal/logout` | form `csrf` |
//! | GET | `/portal` | pending access requests (and recent decisions) |
//! | GET | `/portal/d/{denial id}` | one denial: agent, Mission, destination, operation, justification, parameters, history |
//! | POST | `/portal/d/{denial id}/approve` | form `csrf`, `task`, `minutes` |
//! | POST | `/portal/d/{denial id}/deny` | form `csrf`, `task`, `reason` |
//!
//! Security:
//! - Approvers sign in with their own token (`--approver NAME:TOKEN`, `--approver-file`); only SHA-256
//!   digests are kept, compared in constant time. The operator token is never an approver credential
//!   unless `--operator-may-approve` says so; an agent's access token never is.
//! - The session cookie is `HttpOnly; SameSite=Strict; Path=/` (and `Secure` with the `__Host-` prefix
//!   when the public URL is https); the database stores only its SHA-256, so sessions survive a restart.
//! - Every POST carries a CSRF token in a hidden field: the session's token (checked in constant
//!   time), or for the sign-in form a double-submit cookie. A POST without it is a 403; so is a POST
//!   that the browser labels `Sec-Fetch-Site: cross-site`.
//! - Everything shown is HTML-escaped (the pages are built in [`super::page`], whose only way to
//!   insert text escapes it), agent-supplied text above all; pages carry no script
//!   and are served with `Content-Security-Policy: default-src 'none'; style-src 'self' 'unsafe-inline';
//!   form-action 'self'; frame-ancestors 'none'; base-uri 'none'`, `X-Frame-Options: DENY`,
//!   `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and `Cache-Control: no-store`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::page::{self, html};
use super::state::HttpState;
use crate::access::{Access, ArError, DenialPage};
use crate::access_store::{SessionRow, TaskStatus};
use crate::util::{now_secs, random_b64, secret_matches, sha256};

pub use super::page::{esc, CSP};
/// Lifetime of an approver session.
pub const SESSION_SECONDS: i64 = 8 * 3600;
/// Lifetime of the sign-in form's CSRF cookie.
const LOGIN_COOKIE_SECONDS: i64 = 600;

pub(crate) fn routes() -> Router<HttpState> {
    Router::new()
        .route("/portal", get(list_page))
        .route("/portal/", get(list_page))
        .route("/portal/login", get(login_page).post(login))
        .route("/portal/logout", post(logout))
        .route("/portal/d/{id}", get(denial_page))
        .route("/portal/d/{id}/approve", decision_route(Choice::Approve))
        .route("/portal/d/{id}/deny", decision_route(Choice::Deny))
}

/// A page that says what went wrong.
fn message_page(status: StatusCode, title: &str, text: &str, who: Option<&SessionRow>) -> ApiError {
    ApiError::Page(status, page::page(title, who, &page::message(title, text)))
}

fn see_other(location: &str) -> Response {
    let mut resp = html(StatusCode::SEE_OTHER, String::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

// -------------------------------------------------------------------------------------------------
// Cookies, sessions, forms
// -------------------------------------------------------------------------------------------------

fn cookie_names(secure: bool) -> (&'static str, &'static str) {
    if secure {
        ("__Host-mg_session", "__Host-mg_login")
    } else {
        ("mg_session", "mg_login")
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(';') {
            if let Some((k, val)) = part.trim().split_once('=') {
                if k == name {
                    return Some(val.to_owned());
                }
            }
        }
    }
    None
}

fn set_cookie(resp: &mut Response, name: &str, value: &str, max_age: i64, secure: bool) {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!("{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    if let Ok(v) = HeaderValue::from_str(&v) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

async fn current_session(access: &Access, headers: &HeaderMap) -> Result<Option<SessionRow>, ArError> {
    let (name, _) = cookie_names(access.settings().secure_cookies());
    let Some(id) = cookie(headers, name) else { return Ok(None) };
    if id.len() > 128 {
        return Ok(None);
    }
    Ok(access.authority().store().session(&sha256(id.as_bytes()), now_secs()).await?)
}

fn parse_form(bytes: &[u8]) -> Option<HashMap<String, String>> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(bytes) {
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return None;
        }
    }
    Some(out)
}

fn cross_site(headers: &HeaderMap) -> bool {
    headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("cross-site"))
}

/// A signed-in POST: session plus its CSRF token; anything else is a 403.
async fn authorized_post(
    access: &Access,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<(SessionRow, HashMap<String, String>), ApiError> {
    let forbidden = |text: &str| message_page(StatusCode::FORBIDDEN, "Forbidden", text, None);
    if cross_site(headers) {
        return Err(forbidden("cross-site form submissions are refused"));
    }
    let session = match current_session(access, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(forbidden("sign in first")),
        Err(e) => return Err(error_page(&e, None)),
    };
    let Some(form) = parse_form(bytes) else { return Err(forbidden("malformed form")) };
    match form.get("csrf") {
        Some(t) if ct_eq(t, &session.csrf) => Ok((session, form)),
        _ => Err(forbidden("the form's CSRF token is missing or wrong; reload the page and try again")),
    }
}

fn error_page(e: &ArError, who: Option<&SessionRow>) -> ApiError {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    message_page(status, "Could not complete the action", &e.detail, who)
}

/// A safe place to go after signing in: a path under `/portal`, nothing else.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if (n == "/portal" || n.starts_with("/portal/"))
                && !n.contains("//")
                && !n.contains('\\')
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_owned()
        }
        _ => "/portal".to_owned(),
    }
}

fn login_redirect(path: &str) -> Response {
    let next: String = form_urlencoded::byte_serialize(path.as_bytes()).collect();
    see_other(&format!("/portal/login?next={next}"))
}

// -------------------------------------------------------------------------------------------------
// Sign-in
// -------------------------------------------------------------------------------------------------

fn login_form(st: &HttpState, next: &str, failed: bool) -> Result<Response, ApiError> {
    let secure = st.access.settings().secure_cookies();
    let token = random_b64(24).map_err(|e| error_page(&ArError::internal(e), None))?;
    let body = page::login(&token, next, failed, st.access.settings().approvers.is_empty());
    let status = if failed { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let mut resp = html(status, page::page("Sign in · missiongate", None, &body));
    let (_, login_cookie) = cookie_names(secure);
    set_cookie(&mut resp, login_cookie, &token, LOGIN_COOKIE_SECONDS, secure);
    Ok(resp)
}

async fn login_page(State(st): State<HttpState>, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let next = form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned());
    login_form(&st, &safe_next(next.as_deref()), false)
}

async fn login(State(st): State<HttpState>, headers: HeaderMap, bytes: Bytes) -> Result<Response, ApiError> {
    let settings = st.access.settings();
    let secure = settings.secure_cookies();
    let (session_cookie, login_cookie) = cookie_names(secure);
    if cross_site(&headers) {
        return Err(message_page(StatusCode::FORBIDDEN, "Forbidden", "cross-site form submissions are refused", None));
    }
    let Some(form) = parse_form(&bytes) else {
        return Err(message_page(StatusCode::FORBIDDEN, "Forbidden", "malformed form", None));
    };
    let csrf_ok = match (form.get("csrf"), cookie(&headers, login_cookie)) {
        (Some(f), Some(c)) => !f.is_empty() && ct_eq(f, &c),
        _ => false,
    };
    if !csrf_ok {
        return Err(message_page(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "the sign-in form's CSRF token is missing or wrong; reload the page",
            None,
        ));
    }
    let next = safe_next(form.get("next").map(String::as_str));
    let presented = form.get("token").map(String::as_str).unwrap_or("");
    // Check every approver (constant time each) so the time does not tell which one matched.
    let mut who: Option<&str> = None;
    for a in &settings.approvers {
        if secret_matches(presented, &a.token_sha256) && who.is_none() {
            who = Some(a.name.as_str());
        }
    }
    let Some(name) = (!presented.is_empty()).then_some(who).flatten() else {
        tracing::warn!("approver sign-in failed");
        return login_form(&st, &next, true);
    };
    let (id, csrf) = match (random_b64(32), random_b64(32)) {
        (Ok(i), Ok(c)) => (i, c),
        (Err(e), _) | (_, Err(e)) => return Err(error_page(&ArError::internal(e), None)),
    };
    let now = now_secs();
    st.authority
        .store()
        .create_session(&sha256(id.as_bytes()), name, &csrf, now, now + SESSION_SECONDS)
        .await
        .map_err(|e| error_page(&ArError::internal(e), None))?;
    tracing::info!(approver = name, "approver signed in");
    let mut resp = see_other(&next);
    set_cookie(&mut resp, session_cookie, &id, SESSION_SECONDS, secure);
    set_cookie(&mut resp, login_cookie, "", 0, secure);
    Ok(resp)
}

async fn logout(State(st): State<HttpState>, headers: HeaderMap, bytes: Bytes) -> Result<Response, ApiError> {
    authorized_post(&st.access, &headers, &bytes).await?;
    let secure = st.access.settings().secure_cookies();
    let (session_cookie, _) = cookie_names(secure);
    if let Some(id) = cookie(&headers, session_cookie) {
        if let Err(e) = st.authority.store().delete_session(&sha256(id.as_bytes())).await {
            return Err(error_page(&ArError::internal(e), None));
        }
    }
    let mut resp = see_other("/portal/login");
    set_cookie(&mut resp, session_cookie, "", 0, secure);
    Ok(resp)
}

// -------------------------------------------------------------------------------------------------
// Pages
// -------------------------------------------------------------------------------------------------

async fn list_page(State(st): State<HttpState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let session = match current_session(&st.access, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(login_redirect("/portal")),
        Err(e) => return Err(error_page(&e, None)),
    };
    let (pending, recent) =
        match (st.access.list(Some(TaskStatus::Pending.as_str()), 200).await, st.access.list(None, 30).await) {
            (Ok(p), Ok(r)) => (p, r),
            (Err(e), _) | (_, Err(e)) => return Err(error_page(&e, Some(&session))),
        };
    let body = page::list(&pending, &recent);
    Ok(html(StatusCode::OK, page::page("Access requests · missiongate", Some(&session), &body)))
}

fn render_denial(st: &HttpState, p: &DenialPage, s: &SessionRow, error: Option<&str>) -> String {
    page::denial(st.access.settings(), p, s, error, now_secs())
}

async fn denial_page(
    State(st): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = match current_session(&st.access, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Ok(login_redirect(&format!(
                "/portal/d/{}",
                form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>()
            )))
        }
        Err(e) => return Err(error_page(&e, None)),
    };
    match st.access.denial_page(&id).await {
        Ok(Some(p)) => Ok(html(StatusCode::OK, render_denial(&st, &p, &session, None))),
        Ok(None) => Err(message_page(StatusCode::NOT_FOUND, "Not found", "no such denial", Some(&session))),
        Err(e) => Err(error_page(&e, Some(&session))),
    }
}

async fn decided(
    st: &HttpState,
    id: &str,
    session: &SessionRow,
    result: Result<(), ArError>,
) -> Result<Response, ApiError> {
    match result {
        Ok(()) => {
            Ok(see_other(&format!("/portal/d/{}", form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>())))
        }
        // The denial page again, saying what went wrong.
        Err(e) => match st.access.denial_page(id).await {
            Ok(Some(p)) => {
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
                Err(ApiError::Page(status, render_denial(st, &p, session, Some(&e.detail))))
            }
            _ => Err(error_page(&e, Some(session))),
        },
    }
}

/// The task named by the form, which must belong to this denial.
async fn form_task(st: &HttpState, denial_id: &str, form: &HashMap<String, String>) -> Result<String, ArError> {
    let task_id = form.get("task").cloned().unwrap_or_default();
    match st.authority.store().task(&task_id).await? {
        Some(t) if t.denial_id == denial_id => Ok(t.id),
        _ => Err(ArError::unknown_task().with_detail("no such access request for this denial")),
    }
}

/// What an approver's form decides.
#[derive(Debug, Clone, Copy)]
enum Choice {
    /// `/portal/d/{id}/approve`: form `minutes`.
    Approve,
    /// `/portal/d/{id}/deny`: form `reason`.
    Deny,
}

fn decision_route(choice: Choice) -> MethodRouter<HttpState> {
    post(move |s: State<HttpState>, p: Path<String>, h: HeaderMap, b: Bytes| decide(s, p, h, b, choice))
}

async fn decide(
    State(st): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
    choice: Choice,
) -> Result<Response, ApiError> {
    let (session, form) = authorized_post(&st.access, &headers, &bytes).await?;
    let result = async {
        let task = form_task(&st, &id, &form).await?;
        let actor = format!("approver:{}", session.approver);
        match choice {
            Choice::Approve => {
                let minutes: i64 = form
                    .get("minutes")
                    .and_then(|m| m.trim().parse().ok())
                    .filter(|m| *m >= 1)
                    .ok_or_else(|| ArError::invalid("the duration must be a whole number of minutes"))?;
                st.access.approve(&task, minutes.saturating_mul(60), None, &actor).await.map(|_| ())
            }
            Choice::Deny => {
                let reason =
                    form.get("reason").map(|r| r.trim()).filter(|r| !r.is_empty()).unwrap_or("denied by an approver");
                st.access.deny(&task, reason, &actor).await.map(|_| ())
            }
        }
    }
    .await;
    decided(&st, &id, &session, result).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_under_portal() {
        assert_eq!(safe_next(Some("/portal/d/dn_1")), "/portal/d/dn_1");
        assert_eq!(safe_next(Some("https://evil.example/")), "/portal");
        assert_eq!(safe_next(Some("/portal//evil.example")), "/portal");
        assert_eq!(safe_next(Some("/portalx")), "/portal");
        assert_eq!(safe_next(None), "/portal");
    }
}
