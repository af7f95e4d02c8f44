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
//! - Everything shown is HTML-escaped ([`esc`]), agent-supplied text above all; pages carry no script
//!   and are served with `Content-Security-Policy: default-src 'none'; style-src 'self' 'unsafe-inline';
//!   form-action 'self'; frame-ancestors 'none'; base-uri 'none'`, `X-Frame-Options: DENY`,
//!   `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer` and `Cache-Control: no-store`.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;

use missiongate_wire::time::format_rfc3339;

use super::error::ApiError;
use super::page::html;
use super::state::HttpState;
use crate::access::{Access, ArError, DenialPage};
use crate::access_store::{SessionRow, TaskRow, TaskStatus};
use crate::util::{now_secs, random_b64, secret_matches, sha256};

pub use super::page::CSP;
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
        .route("/portal/d/{id}/approve", post(approve))
        .route("/portal/d/{id}/deny", post(deny))
}

// -------------------------------------------------------------------------------------------------
// HTML
// -------------------------------------------------------------------------------------------------

/// HTML-escape text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}\
header{background:#1b1f24;color:#fff;padding:.6em 1.2em;display:flex;justify-content:space-between;align-items:center}\
header form{margin:0}main{max-width:60em;margin:1.2em auto;padding:0 1.2em}\
table{border-collapse:collapse;width:100%;background:#fff}th,td{text-align:left;vertical-align:top;padding:.45em .6em;border-bottom:1px solid #e3e6ea}\
th{width:11em;color:#555;font-weight:600}pre{background:#fff;border:1px solid #d8dce1;padding:.7em;white-space:pre-wrap;word-break:break-word;max-height:28em;overflow:auto}\
.status{display:inline-block;padding:.1em .6em;border-radius:1em;background:#e8eef7}.pending{background:#fff3cd}.approved{background:#d1f2dc}.denied,.cancelled,.expired{background:#f4d6d6}\
.forms{display:flex;gap:1.2em;flex-wrap:wrap;margin:1em 0}.forms form{background:#fff;border:1px solid #d8dce1;padding:.8em;flex:1;min-width:18em}\
button{font:inherit;padding:.35em 1em;cursor:pointer}button.approve{background:#1a7f37;color:#fff;border:0}button.deny{background:#b42318;color:#fff;border:0}\
.note{color:#555;font-size:.9em}.err{background:#fde2e1;border:1px solid #f5b5b2;padding:.6em}.warn{background:#fff3cd;border:1px solid #f0d68a;padding:.6em}code{word-break:break-all}";

fn page(title: &str, who: Option<&SessionRow>, body: &str) -> String {
    let header = match who {
        Some(s) => format!(
            "<header><span>missiongate approver &middot; <a href=\"/portal\" style=\"color:#fff\">requests</a></span>\
             <form method=\"post\" action=\"/portal/logout\"><span id=\"who\">{}</span> \
             <input type=\"hidden\" name=\"csrf\" value=\"{}\"><button type=\"submit\">Sign out</button></form></header>",
            esc(&s.approver),
            esc(&s.csrf)
        ),
        None => "<header><span>missiongate approver</span></header>".to_owned(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head><body>{header}<main>{body}</main></body></html>",
        esc(title)
    )
}

/// A page that says what went wrong.
fn message_page(status: StatusCode, title: &str, text: &str, who: Option<&SessionRow>) -> ApiError {
    ApiError::Page(
        status,
        page(
            title,
            who,
            &format!(
                "<h1>{}</h1><p class=\"err\">{}</p><p><a href=\"/portal\">Back to the requests</a></p>",
                esc(title),
                esc(text)
            ),
        ),
    )
}

fn see_other(location: &str) -> Response {
    let mut resp = html(StatusCode::SEE_OTHER, String::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn when(t: i64) -> String {
    format_rfc3339(t)
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
    let mut body = String::from("<h1>Approver sign-in</h1>");
    if failed {
        body.push_str("<p class=\"err\" id=\"login-error\">Sign-in failed.</p>");
    }
    if st.access.settings().approvers.is_empty() {
        body.push_str("<p class=\"err\">No approvers are configured on this portal (<code>--approver</code>).</p>");
    }
    body.push_str(&format!(
        "<form method=\"post\" action=\"/portal/login\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\"><input type=\"hidden\" name=\"next\" value=\"{}\">\
         <p><label>Approver token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required></label></p>\
         <p><button type=\"submit\" id=\"login\">Sign in</button></p></form>\
         <p class=\"note\">Use your own approver credential. Agent access tokens are never accepted here.</p>",
        esc(&token),
        esc(next)
    ));
    let status = if failed { StatusCode::UNAUTHORIZED } else { StatusCode::OK };
    let mut resp = html(status, page("Sign in · missiongate", None, &body));
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

fn status_badge(s: &str) -> String {
    format!("<span class=\"status {}\">{}</span>", esc(s), esc(s))
}

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
    let mut body = String::from("<h1>Pending access requests</h1>");
    if pending.is_empty() {
        body.push_str("<p id=\"empty\">Nothing is waiting for a decision.</p>");
    } else {
        body.push_str(
            "<table id=\"pending\"><tr><th>Agent</th><th>Mission</th><th>Destination</th><th>Operation</th><th>Requested</th><th></th></tr>",
        );
        for r in &pending {
            let goal = r.mission.as_ref().map(|m| m.intent.goal.as_str()).unwrap_or("");
            body.push_str(&format!(
                "<tr><td>{}</td><td><code>{}</code><br>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td>\
                 <td><a href=\"/portal/d/{}\">Review</a></td></tr>",
                esc(&r.denial.subject_id),
                esc(&r.denial.mission_id),
                esc(goal),
                esc(&r.denial.resource_id),
                esc(&r.denial.action_name),
                esc(&when(r.task.created_at)),
                esc(&r.denial.id),
            ));
        }
        body.push_str("</table>");
    }
    let decided: Vec<_> = recent.iter().filter(|r| r.task.status != TaskStatus::Pending).collect();
    if !decided.is_empty() {
        body.push_str("<h2>Recent decisions</h2><table><tr><th>Status</th><th>Agent</th><th>Destination</th><th>Operation</th><th>By</th><th></th></tr>");
        for r in decided {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td><a href=\"/portal/d/{}\">Open</a></td></tr>",
                status_badge(r.task.status.as_str()),
                esc(&r.denial.subject_id),
                esc(&r.denial.resource_id),
                esc(&r.denial.action_name),
                esc(r.task.decided_by.as_deref().unwrap_or("")),
                esc(&r.denial.id),
            ));
        }
        body.push_str("</table>");
    }
    Ok(html(StatusCode::OK, page("Access requests · missiongate", Some(&session), &body)))
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A short text from the gateway's constraint report: at most 64 characters, escaped by the caller.
fn short(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key).and_then(serde_json::Value::as_str).map(|s| s.chars().take(64).collect())
}

/// The constraints the gateway checked for the blocked call (`context.constraints` of the PDP
/// question, SPEC §2): which one the call exceeds and by how much, as escaped HTML. Empty when the
/// gateway reported none.
pub(crate) fn constraints_html(report: Option<&serde_json::Value>) -> String {
    let Some(items) = report.and_then(serde_json::Value::as_array).filter(|a| !a.is_empty()) else {
        return String::new();
    };
    let mut summary = Vec::new();
    let mut list = String::new();
    for c in items.iter().take(16) {
        let name = short(c, "name").unwrap_or_else(|| "?".into());
        let outcome = short(c, "outcome").unwrap_or_else(|| "?".into());
        let (limit, currency) = (short(c, "limit"), short(c, "currency"));
        let (requested, requested_currency) = (short(c, "requested"), short(c, "requested_currency"));
        let why = match (outcome.as_str(), &limit, &currency) {
            ("exceeded", Some(l), Some(cur)) => {
                let by = short(c, "excess").map(|e| format!(" by {e} {cur}")).unwrap_or_default();
                summary.push(format!("exceeds <code>{}</code>{}", esc(&name), esc(&by)));
                format!(
                    "exceeded{}: requested {} {}, the Mission allows at most {} {}",
                    by,
                    requested.as_deref().unwrap_or("?"),
                    cur,
                    l,
                    cur
                )
            }
            ("currency_mismatch", Some(l), Some(cur)) => {
                let other = requested_currency.as_deref().unwrap_or("another currency");
                summary.push(format!("is in {} where <code>{}</code> is in {}", esc(other), esc(&name), esc(cur)));
                format!("currency mismatch: requested in {other}, the Mission allows at most {l} {cur}")
            }
            ("satisfied", Some(l), Some(cur)) => format!("satisfied (at most {l} {cur})"),
            ("satisfied", _, _) => "satisfied".to_owned(),
            ("violated", _, _) => {
                summary.push(format!("violates <code>{}</code>", esc(&name)));
                "violated: the call's value is not one the Mission allows".to_owned()
            }
            (o, _, _) => {
                summary.push(format!("fails <code>{}</code> ({})", esc(&name), esc(o)));
                format!("{o}: the call does not carry a usable value for it")
            }
        };
        list.push_str(&format!(
            "<li class=\"constraint\" data-outcome=\"{}\"><code>{}</code>: {}</li>",
            esc(&outcome),
            esc(&name),
            esc(&why)
        ));
    }
    let mut b = String::from("<h3>Mission constraints</h3>");
    if !summary.is_empty() {
        b.push_str(&format!(
            "<p class=\"warn\" id=\"constraint-summary\">Outside the Mission's constraints: this call {}.</p>",
            summary.join("; ")
        ));
    }
    b.push_str(&format!("<ul id=\"constraints\">{list}</ul>"));
    b
}

fn render_denial(access: &Access, p: &DenialPage, s: &SessionRow, error: Option<&str>) -> String {
    let d = &p.denial;
    let now = now_secs();
    let pending: Option<&TaskRow> = p.tasks.iter().find(|t| t.status == TaskStatus::Pending);
    let live_grant = p.grants.iter().filter(|g| g.approved_until > now).max_by_key(|g| g.approved_until);
    let mut b = String::new();
    let headline = if d.parameter_digest.is_some() { "Approval required" } else { "Blocked egress" };
    b.push_str(&format!(
        "<h1>{}: <code>{}</code> on <code>{}</code></h1>",
        headline,
        esc(&d.action_name),
        esc(&d.resource_id)
    ));
    if let Some(e) = error {
        b.push_str(&format!("<p class=\"err\" id=\"error\">{}</p>", esc(e)));
    }
    let state = if live_grant.is_some() {
        "approved"
    } else {
        pending.map(|_| "pending").or_else(|| p.tasks.first().map(|t| t.status.as_str())).unwrap_or("not requested")
    };
    b.push_str(&format!("<p>Status: <span id=\"state\">{}</span></p>", status_badge(state)));
    if let Some(g) = live_grant {
        b.push_str(&format!(
            "<p id=\"grant\">Approved by {} until {}{}.</p>",
            esc(&g.approved_by),
            esc(&when(g.approved_until)),
            if g.single_use { " (one use)" } else { "" }
        ));
    }
    let subj = &d.request.subject;
    let props = |k: &str| subj.properties.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    let mission_cell = match &p.mission {
        Some(m) => format!(
            "<code>{}</code> <span class=\"note\">({}, until {})</span><br><span id=\"goal\">{}</span>",
            esc(&m.id),
            esc(m.state.as_str()),
            esc(&when(m.expires_at)),
            esc(&m.intent.goal)
        ),
        None => {
            format!("<code>{}</code> <span class=\"note\">at {}</span>", esc(&d.mission_id), esc(&d.mission_issuer))
        }
    };
    b.push_str(&format!(
        "<table class=\"facts\">\
         <tr><th>Agent</th><td id=\"agent\"><code>{}</code> <span class=\"note\">sub {} &middot; iss {}</span></td></tr>\
         <tr><th>Mission</th><td id=\"mission\">{}</td></tr>\
         <tr><th>Destination</th><td id=\"destination\"><code>{}</code></td></tr>\
         <tr><th>Operation</th><td id=\"operation\"><code>{}</code>{}</td></tr>\
         <tr><th>Reason</th><td>{}</td></tr>\
         <tr><th>Parameter digest</th><td><code>{}</code></td></tr>\
         <tr><th>First blocked</th><td>{}</td></tr></table>",
        esc(&subj.id),
        esc(&props("sub")),
        esc(&props("iss")),
        mission_cell,
        esc(&d.resource_id),
        esc(&d.action_name),
        // An MCP tool call names its tool (the gateway's `action.properties.mcp_tool`).
        match d.request.action.properties.get("mcp_tool").and_then(|v| v.as_str()) {
            Some(t) => format!(" <span class=\"note\">MCP tool</span> <code id=\"mcp-tool\">{}</code>", esc(t)),
            None => String::new(),
        },
        esc(&d.reason),
        esc(d.parameter_digest.as_deref().unwrap_or("none (destination-level)")),
        esc(&when(d.created_at)),
    ));
    b.push_str(&constraints_html(d.request.context.other.get("constraints")));
    match pending {
        Some(t) => {
            b.push_str(&format!("<h2>Access request <code>{}</code></h2>", esc(&t.id)));
            b.push_str(&format!(
                "<p class=\"note\">Submitted {} &middot; expires {}",
                esc(&when(t.created_at)),
                esc(&when(t.expires_at))
            ));
            if let Some(r) = t.requested_until {
                b.push_str(&format!(" &middot; asks for access until {}", esc(&when(r))));
            }
            b.push_str("</p>");
            b.push_str("<h3>Justification <span class=\"note\">(written by the agent: untrusted)</span></h3>");
            b.push_str(&format!(
                "<pre id=\"justification\">{}</pre>",
                esc(t.justification.as_deref().unwrap_or("(none given)"))
            ));
            b.push_str("<h3>Parameters</h3>");
            match &t.parameters {
                Some(v) => {
                    // What the approver must know of the body before the JSON: its media type, and
                    // for a non-JSON body that only its hash is bound (SPEC §6, version 2).
                    let member = |name: &str| v.get(name).and_then(serde_json::Value::as_str);
                    if let Some(method) = member("mcp_method") {
                        // An MCP tool call (SPEC §7): the tool and its arguments are what is approved.
                        b.push_str(&format!(
                            "<p>MCP <code>{}</code> of tool <code id=\"call-tool\">{}</code> with arguments:</p>\
                             <pre id=\"call-arguments\">{}</pre>",
                            esc(method),
                            esc(member("tool").unwrap_or("")),
                            esc(&pretty(v.get("arguments").unwrap_or(&serde_json::json!({}))))
                        ));
                    }
                    if let Some(ct) = member("content_type") {
                        b.push_str(&format!(
                            "<p>Content type: <code id=\"content-type\">{}</code></p>",
                            esc(ct)
                        ));
                    }
                    if let Some(hash) = member("body_sha256") {
                        b.push_str(&format!(
                            "<p class=\"warn\" id=\"raw-body\">Only a hash of the body is bound: the body is not \
                             JSON, so its content is not shown here and cannot be checked on this page. \
                             SHA-256 (base64url): <code>{}</code>. Approve only if you know, from elsewhere, \
                             which bytes have this hash.</p>",
                            esc(hash)
                        ));
                    }
                    b.push_str(&format!("<pre id=\"parameters\">{}</pre>", esc(&pretty(v))));
                    if d.parameter_digest.is_some() {
                        b.push_str("<p class=\"note\">Verified: these parameters hash to the blocked call's parameter_digest. An approval allows exactly this call.</p>");
                    } else {
                        b.push_str("<p class=\"note\">Informational only: this destination-level denial is not bound to parameters.</p>");
                    }
                }
                None => b.push_str("<p class=\"note\" id=\"parameters\">No parameters: an approval allows this operation on this destination.</p>"),
            }
            let default_min = (access.settings().default_approval_seconds / 60).max(1);
            let max_min = (access.settings().max_approval_seconds / 60).max(1);
            b.push_str(&format!(
                "<div class=\"forms\">\
                 <form method=\"post\" action=\"/portal/d/{id}/approve\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"task\" value=\"{task}\">\
                 <p><label>Approve for <input type=\"number\" name=\"minutes\" id=\"minutes\" value=\"{default_min}\" min=\"1\" max=\"{max_min}\" required> minutes</label></p>\
                 <p><button type=\"submit\" class=\"approve\" id=\"approve\">Approve</button></p></form>\
                 <form method=\"post\" action=\"/portal/d/{id}/deny\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
                 <input type=\"hidden\" name=\"task\" value=\"{task}\">\
                 <p><label>Reason <input type=\"text\" name=\"reason\" id=\"deny-reason\" maxlength=\"500\"></label></p>\
                 <p><button type=\"submit\" class=\"deny\" id=\"deny\">Deny</button></p></form></div>",
                id = esc(&d.id),
                csrf = esc(&s.csrf),
                task = esc(&t.id),
            ));
        }
        None if p.tasks.is_empty() => {
            b.push_str("<p id=\"no-request\">The agent has not submitted an access request for this denial yet.</p>");
        }
        None => {}
    }
    if !p.audit.is_empty() {
        b.push_str(
            "<h2>History</h2><table id=\"history\"><tr><th>When</th><th>Who</th><th>What</th><th>Details</th></tr>",
        );
        for a in &p.audit {
            b.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&when(a.at)),
                esc(&a.actor),
                esc(&a.action),
                esc(&a.detail.to_string())
            ));
        }
        b.push_str("</table>");
    }
    page("Access request · missiongate", Some(s), &b)
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
        Ok(Some(p)) => Ok(html(StatusCode::OK, render_denial(&st.access, &p, &session, None))),
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
                Err(ApiError::Page(status, render_denial(&st.access, &p, session, Some(&e.detail))))
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

async fn approve(
    State(st): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let (session, form) = authorized_post(&st.access, &headers, &bytes).await?;
    let result = async {
        let task = form_task(&st, &id, &form).await?;
        let minutes: i64 = form
            .get("minutes")
            .and_then(|m| m.trim().parse().ok())
            .filter(|m| *m >= 1)
            .ok_or_else(|| ArError::invalid("the duration must be a whole number of minutes"))?;
        let actor = format!("approver:{}", session.approver);
        st.access.approve(&task, minutes.saturating_mul(60), None, &actor).await.map(|_| ())
    }
    .await;
    decided(&st, &id, &session, result).await
}

async fn deny(
    State(st): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    let (session, form) = authorized_post(&st.access, &headers, &bytes).await?;
    let result = async {
        let task = form_task(&st, &id, &form).await?;
        let reason = form.get("reason").map(|r| r.trim()).filter(|r| !r.is_empty()).unwrap_or("denied by an approver");
        let actor = format!("approver:{}", session.approver);
        st.access.deny(&task, reason, &actor).await.map(|_| ())
    }
    .await;
    decided(&st, &id, &session, result).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_next() {
        assert_eq!(esc("<script>alert('x')</script>&\""), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;");
        assert_eq!(safe_next(Some("/portal/d/dn_1")), "/portal/d/dn_1");
        assert_eq!(safe_next(Some("https://evil.example/")), "/portal");
        assert_eq!(safe_next(Some("/portal//evil.example")), "/portal");
        assert_eq!(safe_next(Some("/portalx")), "/portal");
        assert_eq!(safe_next(None), "/portal");
    }

    #[test]
    fn the_constraint_a_call_exceeds_and_by_how_much() {
        let report = serde_json::json!([
            {"name": "max_amount", "kind": "max_amount", "outcome": "exceeded", "limit": "500.00", "currency": "USD",
             "requested": "500.01", "requested_currency": "USD", "excess": "0.01"},
            {"name": "vendors", "kind": "list", "outcome": "satisfied"},
            {"name": "<b>x</b>", "kind": "list", "outcome": "violated"}
        ]);
        let html = constraints_html(Some(&report));
        assert!(html.contains("this call exceeds <code>max_amount</code> by 0.01 USD"), "{html}");
        assert!(html.contains("requested 500.01 USD, the Mission allows at most 500.00 USD"), "{html}");
        assert!(html.contains("<code>vendors</code>: satisfied"), "{html}");
        assert!(html.contains("violates <code>&lt;b&gt;x&lt;/b&gt;</code>") && !html.contains("<b>"), "{html}");
        assert_eq!(constraints_html(None), "");
        assert_eq!(constraints_html(Some(&serde_json::json!([]))), "");
    }
}
