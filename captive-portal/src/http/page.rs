//! The approver pages' HTML, built with [`Html`]: markup comes only from literals in this file, and
//! every other text (agent-supplied above all) goes in through [`Html::text`], which escapes it.
//! Pages carry no script; every page is served with the security headers of [`html`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use missiongate_wire::time::format_rfc3339;

use crate::access::{AccessSettings, DenialPage, ListedTask};
use crate::access_store::{SessionRow, TaskRow, TaskStatus};

/// Content-Security-Policy of every page.
pub const CSP: &str =
    "default-src 'none'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// HTML under construction. The only ways in are [`Html::raw`], which takes a `&'static str` (markup
/// written in the code, never data), [`Html::text`], which escapes, and [`Html::html`], another
/// fragment built the same way.
#[derive(Debug, Default, Clone)]
pub struct Html(String);

impl Html {
    /// An empty fragment.
    pub fn new() -> Html {
        Html::default()
    }
    /// Markup written in the code.
    pub fn raw(&mut self, markup: &'static str) -> &mut Html {
        self.0.push_str(markup);
        self
    }
    /// Text, escaped for element content and quoted attribute values.
    pub fn text(&mut self, text: &str) -> &mut Html {
        for c in text.chars() {
            match c {
                '&' => self.0.push_str("&amp;"),
                '<' => self.0.push_str("&lt;"),
                '>' => self.0.push_str("&gt;"),
                '"' => self.0.push_str("&quot;"),
                '\'' => self.0.push_str("&#39;"),
                c => self.0.push(c),
            }
        }
        self
    }
    /// Another fragment.
    pub fn html(&mut self, other: &Html) -> &mut Html {
        self.0.push_str(&other.0);
        self
    }
    /// Nothing written yet.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The HTML.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The HTML.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// HTML-escape text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut h = Html::new();
    h.text(s);
    h.into_string()
}

/// An HTML page with the pages' security headers.
pub(crate) fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
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

/// A whole page: `title`, the header (with the signed-in approver and the sign-out form), `body`.
pub(crate) fn page(title: &str, who: Option<&SessionRow>, body: &Html) -> String {
    let mut h = Html::new();
    h.raw("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">")
        .raw("<title>")
        .text(title)
        .raw("</title><style>")
        .raw(STYLE)
        .raw("</style></head><body>");
    match who {
        Some(s) => {
            h.raw("<header><span>missiongate approver &middot; <a href=\"/portal\" style=\"color:#fff\">requests</a></span>")
                .raw("<form method=\"post\" action=\"/portal/logout\"><span id=\"who\">")
                .text(&s.approver)
                .raw("</span> <input type=\"hidden\" name=\"csrf\" value=\"")
                .text(&s.csrf)
                .raw("\"><button type=\"submit\">Sign out</button></form></header>");
        }
        None => {
            h.raw("<header><span>missiongate approver</span></header>");
        }
    }
    h.raw("<main>").html(body).raw("</main></body></html>");
    h.into_string()
}

/// The body of a page that says what went wrong.
pub(crate) fn message(title: &str, text: &str) -> Html {
    let mut b = Html::new();
    b.raw("<h1>")
        .text(title)
        .raw("</h1><p class=\"err\">")
        .text(text)
        .raw("</p><p><a href=\"/portal\">Back to the requests</a></p>");
    b
}

/// The sign-in form, with its CSRF token and where to go next.
pub(crate) fn login(csrf: &str, next: &str, failed: bool, no_approvers: bool) -> Html {
    let mut b = Html::new();
    b.raw("<h1>Approver sign-in</h1>");
    if failed {
        b.raw("<p class=\"err\" id=\"login-error\">Sign-in failed.</p>");
    }
    if no_approvers {
        b.raw("<p class=\"err\">No approvers are configured on this portal (<code>--approver</code>).</p>");
    }
    b.raw("<form method=\"post\" action=\"/portal/login\">")
        .raw("<input type=\"hidden\" name=\"csrf\" value=\"")
        .text(csrf)
        .raw("\"><input type=\"hidden\" name=\"next\" value=\"")
        .text(next)
        .raw("\">")
        .raw("<p><label>Approver token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"current-password\" required></label></p>")
        .raw("<p><button type=\"submit\" id=\"login\">Sign in</button></p></form>")
        .raw("<p class=\"note\">Use your own approver credential. Agent access tokens are never accepted here.</p>");
    b
}

fn when(t: i64) -> String {
    format_rfc3339(t)
}

fn status_badge(b: &mut Html, s: &str) {
    b.raw("<span class=\"status ").text(s).raw("\">").text(s).raw("</span>");
}

/// `/portal`: the pending requests, and the recent decisions.
pub(crate) fn list(pending: &[ListedTask], recent: &[ListedTask]) -> Html {
    let mut b = Html::new();
    b.raw("<h1>Pending access requests</h1>");
    if pending.is_empty() {
        b.raw("<p id=\"empty\">Nothing is waiting for a decision.</p>");
    } else {
        b.raw("<table id=\"pending\"><tr><th>Agent</th><th>Mission</th><th>Destination</th><th>Operation</th><th>Requested</th><th></th></tr>");
        for r in pending {
            let goal = r.mission.as_ref().map(|m| m.intent.goal.as_str()).unwrap_or("");
            b.raw("<tr><td>")
                .text(&r.denial.subject_id)
                .raw("</td><td><code>")
                .text(&r.denial.mission_id)
                .raw("</code><br>")
                .text(goal)
                .raw("</td><td><code>")
                .text(&r.denial.resource_id)
                .raw("</code></td><td><code>")
                .text(&r.denial.action_name)
                .raw("</code></td><td>")
                .text(&when(r.task.created_at))
                .raw("</td><td><a href=\"/portal/d/")
                .text(&r.denial.id)
                .raw("\">Review</a></td></tr>");
        }
        b.raw("</table>");
    }
    let decided: Vec<_> = recent.iter().filter(|r| r.task.status != TaskStatus::Pending).collect();
    if !decided.is_empty() {
        b.raw("<h2>Recent decisions</h2><table><tr><th>Status</th><th>Agent</th><th>Destination</th><th>Operation</th><th>By</th><th></th></tr>");
        for r in decided {
            b.raw("<tr><td>");
            status_badge(&mut b, r.task.status.as_str());
            b.raw("</td><td>")
                .text(&r.denial.subject_id)
                .raw("</td><td><code>")
                .text(&r.denial.resource_id)
                .raw("</code></td><td><code>")
                .text(&r.denial.action_name)
                .raw("</code></td><td>")
                .text(r.task.decided_by.as_deref().unwrap_or(""))
                .raw("</td><td><a href=\"/portal/d/")
                .text(&r.denial.id)
                .raw("\">Open</a></td></tr>");
        }
        b.raw("</table>");
    }
    b
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// A short text from the gateway's constraint report: at most 64 characters.
fn short(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(|s| s.chars().take(64).collect())
}

/// The constraints the gateway checked for the blocked call (`context.constraints` of the PDP
/// question, SPEC §2): which one the call exceeds and by how much. Empty when the gateway reported
/// none.
pub(crate) fn constraints(report: Option<&Value>) -> Html {
    let mut b = Html::new();
    let Some(items) = report.and_then(Value::as_array).filter(|a| !a.is_empty()) else {
        return b;
    };
    let mut summary: Vec<Html> = Vec::new();
    let mut list = Html::new();
    for c in items.iter().take(16) {
        let name = short(c, "name").unwrap_or_else(|| "?".into());
        let outcome = short(c, "outcome").unwrap_or_else(|| "?".into());
        let (limit, currency) = (short(c, "limit"), short(c, "currency"));
        let (requested, requested_currency) = (short(c, "requested"), short(c, "requested_currency"));
        let mut item = Html::new();
        // `why` is text (escaped below), `item` the summary's HTML.
        let why = match (outcome.as_str(), &limit, &currency) {
            ("exceeded", Some(l), Some(cur)) => {
                let by = short(c, "excess").map(|e| format!(" by {e} {cur}")).unwrap_or_default();
                item.raw("exceeds <code>").text(&name).raw("</code>").text(&by);
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
                item.raw("is in ").text(other).raw(" where <code>").text(&name).raw("</code> is in ").text(cur);
                format!("currency mismatch: requested in {other}, the Mission allows at most {l} {cur}")
            }
            ("satisfied", Some(l), Some(cur)) => format!("satisfied (at most {l} {cur})"),
            ("satisfied", _, _) => "satisfied".to_owned(),
            ("violated", _, _) => {
                item.raw("violates <code>").text(&name).raw("</code>");
                "violated: the call's value is not one the Mission allows".to_owned()
            }
            (o, _, _) => {
                item.raw("fails <code>").text(&name).raw("</code> (").text(o).raw(")");
                format!("{o}: the call does not carry a usable value for it")
            }
        };
        if !item.is_empty() {
            summary.push(item);
        }
        list.raw("<li class=\"constraint\" data-outcome=\"")
            .text(&outcome)
            .raw("\"><code>")
            .text(&name)
            .raw("</code>: ")
            .text(&why)
            .raw("</li>");
    }
    b.raw("<h3>Mission constraints</h3>");
    if !summary.is_empty() {
        b.raw("<p class=\"warn\" id=\"constraint-summary\">Outside the Mission's constraints: this call ");
        for (i, item) in summary.iter().enumerate() {
            if i > 0 {
                b.raw("; ");
            }
            b.html(item);
        }
        b.raw(".</p>");
    }
    b.raw("<ul id=\"constraints\">").html(&list).raw("</ul>");
    b
}

/// One task's parameters as the approver must see them before deciding.
fn parameters(b: &mut Html, v: &Value, bound: bool) {
    // What the approver must know of the body before the JSON: its media type, and for a non-JSON
    // body that only its hash is bound (SPEC §6, version 2).
    let member = |name: &str| v.get(name).and_then(Value::as_str);
    if let Some(method) = member("mcp_method") {
        // An MCP tool call (SPEC §7): the tool and its arguments are what is approved.
        b.raw("<p>MCP <code>")
            .text(method)
            .raw("</code> of tool <code id=\"call-tool\">")
            .text(member("tool").unwrap_or(""))
            .raw("</code> with arguments:</p><pre id=\"call-arguments\">")
            .text(&pretty(v.get("arguments").unwrap_or(&serde_json::json!({}))))
            .raw("</pre>");
    }
    if let Some(ct) = member("content_type") {
        b.raw("<p>Content type: <code id=\"content-type\">").text(ct).raw("</code></p>");
    }
    if let Some(hash) = member("body_sha256") {
        b.raw(
            "<p class=\"warn\" id=\"raw-body\">Only a hash of the body is bound: the body is not JSON, so its \
             content is not shown here and cannot be checked on this page. SHA-256 (base64url): <code>",
        )
        .text(hash)
        .raw("</code>. Approve only if you know, from elsewhere, which bytes have this hash.</p>");
    }
    b.raw("<pre id=\"parameters\">").text(&pretty(v)).raw("</pre>");
    if bound {
        b.raw("<p class=\"note\">Verified: these parameters hash to the blocked call's parameter_digest. An approval allows exactly this call.</p>");
    } else {
        b.raw("<p class=\"note\">Informational only: this destination-level denial is not bound to parameters.</p>");
    }
}

/// The approve and deny forms of a pending task.
fn decision_forms(b: &mut Html, denial_id: &str, csrf: &str, task_id: &str, settings: &AccessSettings) {
    let default_min = (settings.default_approval_seconds / 60).max(1).to_string();
    let max_min = (settings.max_approval_seconds / 60).max(1).to_string();
    b.raw("<div class=\"forms\"><form method=\"post\" action=\"/portal/d/")
        .text(denial_id)
        .raw("/approve\"><input type=\"hidden\" name=\"csrf\" value=\"")
        .text(csrf)
        .raw("\"><input type=\"hidden\" name=\"task\" value=\"")
        .text(task_id)
        .raw("\"><p><label>Approve for <input type=\"number\" name=\"minutes\" id=\"minutes\" value=\"")
        .text(&default_min)
        .raw("\" min=\"1\" max=\"")
        .text(&max_min)
        .raw("\" required> minutes</label></p>")
        .raw("<p><button type=\"submit\" class=\"approve\" id=\"approve\">Approve</button></p></form>")
        .raw("<form method=\"post\" action=\"/portal/d/")
        .text(denial_id)
        .raw("/deny\"><input type=\"hidden\" name=\"csrf\" value=\"")
        .text(csrf)
        .raw("\"><input type=\"hidden\" name=\"task\" value=\"")
        .text(task_id)
        .raw("\"><p><label>Reason <input type=\"text\" name=\"reason\" id=\"deny-reason\" maxlength=\"500\"></label></p>")
        .raw("<p><button type=\"submit\" class=\"deny\" id=\"deny\">Deny</button></p></form></div>");
}

/// `/portal/d/{id}`: one denial, its pending request (with the forms) and its history; `error` says
/// why the last action failed.
pub(crate) fn denial(
    settings: &AccessSettings,
    p: &DenialPage,
    s: &SessionRow,
    error: Option<&str>,
    now: i64,
) -> String {
    let d = &p.denial;
    let pending: Option<&TaskRow> = p.tasks.iter().find(|t| t.status == TaskStatus::Pending);
    let live_grant = p.grants.iter().filter(|g| g.approved_until > now).max_by_key(|g| g.approved_until);
    let mut b = Html::new();
    b.raw(if d.parameter_digest.is_some() { "<h1>Approval required: <code>" } else { "<h1>Blocked egress: <code>" })
        .text(&d.action_name)
        .raw("</code> on <code>")
        .text(&d.resource_id)
        .raw("</code></h1>");
    if let Some(e) = error {
        b.raw("<p class=\"err\" id=\"error\">").text(e).raw("</p>");
    }
    let state = if live_grant.is_some() {
        TaskStatus::Approved.as_str()
    } else {
        pending
            .map(|_| TaskStatus::Pending.as_str())
            .or_else(|| p.tasks.first().map(|t| t.status.as_str()))
            .unwrap_or("not requested")
    };
    b.raw("<p>Status: <span id=\"state\">");
    status_badge(&mut b, state);
    b.raw("</span></p>");
    if let Some(g) = live_grant {
        b.raw("<p id=\"grant\">Approved by ")
            .text(&g.approved_by)
            .raw(" until ")
            .text(&when(g.approved_until))
            .raw(if g.single_use { " (one use)." } else { "." })
            .raw("</p>");
    }
    let subj = &d.request.subject;
    let props = |k: &str| subj.properties.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
    b.raw("<table class=\"facts\"><tr><th>Agent</th><td id=\"agent\"><code>")
        .text(&subj.id)
        .raw("</code> <span class=\"note\">sub ")
        .text(&props("sub"))
        .raw(" &middot; iss ")
        .text(&props("iss"))
        .raw("</span></td></tr><tr><th>Mission</th><td id=\"mission\">");
    match &p.mission {
        Some(m) => {
            b.raw("<code>")
                .text(&m.id)
                .raw("</code> <span class=\"note\">(")
                .text(m.state.as_str())
                .raw(", until ")
                .text(&when(m.expires_at))
                .raw(")</span><br><span id=\"goal\">")
                .text(&m.intent.goal)
                .raw("</span>");
        }
        None => {
            b.raw("<code>")
                .text(&d.mission_id)
                .raw("</code> <span class=\"note\">at ")
                .text(&d.mission_issuer)
                .raw("</span>");
        }
    }
    b.raw("</td></tr><tr><th>Destination</th><td id=\"destination\"><code>")
        .text(&d.resource_id)
        .raw("</code></td></tr><tr><th>Operation</th><td id=\"operation\"><code>")
        .text(&d.action_name)
        .raw("</code>");
    // An MCP tool call names its tool (the gateway's `action.properties.mcp_tool`).
    if let Some(t) = d.request.action.properties.get("mcp_tool").and_then(|v| v.as_str()) {
        b.raw(" <span class=\"note\">MCP tool</span> <code id=\"mcp-tool\">").text(t).raw("</code>");
    }
    b.raw("</td></tr><tr><th>Reason</th><td>")
        .text(&d.reason)
        .raw("</td></tr><tr><th>Parameter digest</th><td><code>")
        .text(d.parameter_digest.as_deref().unwrap_or("none (destination-level)"))
        .raw("</code></td></tr><tr><th>First blocked</th><td>")
        .text(&when(d.created_at))
        .raw("</td></tr></table>");
    b.html(&constraints(d.request.context.other.get("constraints")));
    match pending {
        Some(t) => {
            b.raw("<h2>Access request <code>")
                .text(&t.id)
                .raw("</code></h2><p class=\"note\">Submitted ")
                .text(&when(t.created_at))
                .raw(" &middot; expires ")
                .text(&when(t.expires_at));
            if let Some(r) = t.requested_until {
                b.raw(" &middot; asks for access until ").text(&when(r));
            }
            b.raw("</p><h3>Justification <span class=\"note\">(written by the agent: untrusted)</span></h3>")
                .raw("<pre id=\"justification\">")
                .text(t.justification.as_deref().unwrap_or("(none given)"))
                .raw("</pre><h3>Parameters</h3>");
            match &t.parameters {
                Some(v) => parameters(&mut b, v, d.parameter_digest.is_some()),
                None => {
                    b.raw("<p class=\"note\" id=\"parameters\">No parameters: an approval allows this operation on this destination.</p>");
                }
            }
            decision_forms(&mut b, &d.id, &s.csrf, &t.id, settings);
        }
        None if p.tasks.is_empty() => {
            b.raw("<p id=\"no-request\">The agent has not submitted an access request for this denial yet.</p>");
        }
        None => {}
    }
    if !p.audit.is_empty() {
        b.raw("<h2>History</h2><table id=\"history\"><tr><th>When</th><th>Who</th><th>What</th><th>Details</th></tr>");
        for a in &p.audit {
            b.raw("<tr><td>")
                .text(&when(a.at))
                .raw("</td><td>")
                .text(&a.actor)
                .raw("</td><td>")
                .text(&a.action)
                .raw("</td><td><code>")
                .text(&a.detail.to_string())
                .raw("</code></td></tr>");
        }
        b.raw("</table>");
    }
    page("Access request · missiongate", Some(s), &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_markup_is_not() {
        let mut h = Html::new();
        h.raw("<p title=\"").text("\"'&").raw("\">").text("<script>alert('x')</script>").raw("</p>");
        assert_eq!(h.as_str(), "<p title=\"&quot;&#39;&amp;\">&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</p>");
        assert_eq!(esc("<script>alert('x')</script>&\""), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;");
    }

    #[test]
    fn the_constraint_a_call_exceeds_and_by_how_much() {
        let report = serde_json::json!([
            {"name": "max_amount", "kind": "max_amount", "outcome": "exceeded", "limit": "500.00", "currency": "USD",
             "requested": "500.01", "requested_currency": "USD", "excess": "0.01"},
            {"name": "vendors", "kind": "list", "outcome": "satisfied"},
            {"name": "<b>x</b>", "kind": "list", "outcome": "violated"}
        ]);
        let html = constraints(Some(&report)).into_string();
        assert!(html.contains("this call exceeds <code>max_amount</code> by 0.01 USD"), "{html}");
        assert!(html.contains("requested 500.01 USD, the Mission allows at most 500.00 USD"), "{html}");
        assert!(html.contains("<code>vendors</code>: satisfied"), "{html}");
        assert!(html.contains("violates <code>&lt;b&gt;x&lt;/b&gt;</code>") && !html.contains("<b>"), "{html}");
        assert!(constraints(None).is_empty());
        assert!(constraints(Some(&serde_json::json!([]))).is_empty());
    }
}
