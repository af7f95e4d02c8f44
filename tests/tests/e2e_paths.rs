//! One path, end to end (SPEC §2, issue 10 item 3): through the real Envoy with the shipped listener
//! settings (`normalize_path`, `merge_slashes`, `path_with_escaped_slashes_action: KEEP_UNCHANGED`)
//! and the built filter, each path form is either refused with 400 (nothing reaches the upstream), or
//! decided on one path that the upstream then receives byte for byte. Each request carries a unique
//! query marker, so what the recording upstream received is found exactly.

use missiongate_tests::envoy::Opts;
use missiongate_tests::http::{assert_denied, Req, Response};
use missiongate_tests::rand_id;
use missiongate_tests::world::WithAuthority;
use serde_json::json;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

type World = WithAuthority;

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| WithAuthority::start(Opts { concurrency: 2, ..Opts::default() }))
}

/// What a path form must come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// `400 ambiguous_path` from the filter; nothing reaches the upstream.
    Refused,
    /// 400 from Envoy itself (its path normalisation fails, e.g. on `%00`): the filter never sees it
    /// and nothing reaches the upstream.
    RefusedByEnvoy,
    /// Decided on this path and forwarded with exactly this path.
    Forwarded(&'static str),
    /// Decided on this path (third member) and refused with this status and reason; nothing reaches
    /// the upstream.
    Denied(u16, &'static str, &'static str),
}

/// One request sent: its answer and what the upstream received for it.
struct Sent {
    row: String,
    expect: Expect,
    resp: Response,
    reached: Vec<String>,
    suffix: String,
}

/// Send `method form?m=<marker>` and collect the URIs the upstream received for it.
fn send(method: &str, form: &str, token: &str, expect: Expect) -> Sent {
    let w = world();
    let suffix = format!("?m={}", rand_id("m"));
    let resp = Req::new(method, &format!("{form}{suffix}")).bearer(token).send(w.envoy.port);
    let reached: Vec<String> = w.up.uris().into_iter().filter(|u| u.ends_with(&suffix)).collect();
    Sent { row: format!("{method} {form:?}"), expect, resp, reached, suffix }
}

/// The `:path` each request had when the filter decided on it, from Envoy's access log
/// (`"METHOD authority/path?query"`, logged after the filter chain; the filter never rewrites it).
/// The access log is flushed in batches: wait for every marker.
fn decided_paths(sent: &[Sent]) -> Vec<Option<String>> {
    let start = Instant::now();
    loop {
        let logs = world().envoy.logs();
        let found: Vec<Option<String>> = sent
            .iter()
            .map(|s| {
                let needle = format!("{}\"", s.suffix);
                let line = logs.lines().find(|l| l.contains(&needle))?;
                let quoted = line.split('"').find(|q| q.ends_with(s.suffix.as_str()))?;
                let target = quoted.split_once(' ')?.1;
                let path = &target[target.find('/')?..target.len() - s.suffix.len()];
                Some(path.to_owned())
            })
            .collect();
        if found.iter().all(Option::is_some) || start.elapsed() > Duration::from_secs(30) {
            return found;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Run every row, then check them all, so one run shows every row that fails.
fn run(token: &str, rows: &[(&str, &str, Expect)]) {
    let sent: Vec<Sent> = rows.iter().map(|&(m, f, e)| send(m, f, token, e)).collect();
    let decided = decided_paths(&sent);
    let mut failures = Vec::new();
    for (s, decided) in sent.iter().zip(decided) {
        let r = &s.resp;
        let reason = serde_json::from_slice::<serde_json::Value>(&r.body)
            .ok()
            .and_then(|v| v["reason"].as_str().map(str::to_owned));
        let ok = match s.expect {
            // The shipped listeners keep escaped slashes (KEEP_UNCHANGED) so that the filter, not
            // Envoy, refuses: a problem+json with its reason, evidence and counter.
            Expect::Refused => {
                let ok = r.status == 400 && s.reached.is_empty() && reason.as_deref() == Some("ambiguous_path");
                if ok {
                    assert_denied(r, 400, "ambiguous_path");
                }
                ok
            }
            Expect::RefusedByEnvoy => r.status == 400 && s.reached.is_empty() && decided.is_some() && reason.is_none(),
            Expect::Forwarded(path) => {
                let want = format!("{path}{}", s.suffix);
                r.status == 200
                    && s.reached == [want.clone()]
                    && r.json()["uri"] == want.as_str()
                    && decided.as_deref() == Some(path)
            }
            Expect::Denied(status, why, path) => {
                let ok = r.status == status && s.reached.is_empty() && decided.as_deref() == Some(path);
                if ok {
                    assert_denied(r, status, why);
                }
                ok
            }
        };
        if !ok {
            failures.push(format!(
                "{}: expected {:?}, got {} reason={reason:?} decided={decided:?} reached={:?}",
                s.row, s.expect, r.status, s.reached
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows failed:\n{}", failures.len(), rows.len(), failures.join("\n"));
}

#[test]
fn path_forms_under_a_prefix_grant_and_a_named_operation() {
    use Expect::*;
    // The test authority's Authority Set: `/v1` prefix with http.get and invoices.*, and the named
    // operation `POST /v1/payments` = payments.create granted exactly on `/v1/payments`.
    let (_, token) = world().auth.active_token();
    run(
        &token,
        &[
            // Plain forms pass, byte for byte.
            ("GET", "/v1/invoices", Forwarded("/v1/invoices")),
            ("GET", "/v1/", Forwarded("/v1/")),
            ("GET", "/v1/caf%C3%A9", Forwarded("/v1/caf%C3%A9")),
            ("POST", "/v1/payments", Forwarded("/v1/payments")),
            // Envoy normalises these before the filter decides, and forwards what was decided.
            ("GET", "/v1/../admin", Denied(403, "insufficient_authority", "/admin")),
            ("GET", "/v1/%2e%2e/admin", Denied(403, "insufficient_authority", "/admin")),
            ("GET", "/v1/.%2e/admin", Denied(403, "insufficient_authority", "/admin")),
            ("GET", "/v1/%2E/x", Forwarded("/v1/x")),
            ("GET", "/v1/./x", Forwarded("/v1/x")),
            ("GET", "/v1//x", Forwarded("/v1/x")),
            ("GET", "/v1//../admin", Forwarded("/v1/admin")),
            ("POST", "/v1/p%61yments", Forwarded("/v1/payments")),
            ("GET", "/v1/%7Euser", Forwarded("/v1/~user")),
            // Forms Envoy leaves alone and the filter refuses.
            ("GET", "/v1/..%2Fadmin", Refused),
            ("GET", "/v1/..%2fadmin", Refused),
            ("GET", "/v1/..%5Cadmin", Refused),
            ("GET", "/v1/..;/admin", Denied(403, "insufficient_authority", "/admin")),
            ("GET", "/v1;x=1/a", Refused),
            ("GET", "/v1/a%00", RefusedByEnvoy),
            ("GET", "/v1/%252e%252e/admin", Refused),
            ("GET", "/v1/%C0%AE%C0%AE/admin", Refused),
            // Envoy keeps lower-case hex; its normal form differs from the bytes, so it is refused.
            ("GET", "/v1/caf%c3%a9", Refused),
            ("GET", "/v1\\..\\admin", Denied(403, "insufficient_authority", "/admin")),
            // Grants are case-sensitive: the upstream-case trick is a denial.
            ("GET", "/V1/payments", Denied(403, "insufficient_authority", "/V1/payments")),
            ("GET", "/v1x", Denied(403, "insufficient_authority", "/v1x")),
            // Other spellings of the named operation are the operation (its exact grant is case- and
            // slash-sensitive, so they are outside it), never quietly http.post.
            ("POST", "/v1/payments/", Denied(403, "insufficient_authority", "/v1/payments/")),
            ("POST", "/V1/Payments/", Denied(403, "insufficient_authority", "/V1/Payments/")),
        ],
    );
}

#[test]
fn a_wide_http_grant_does_not_let_the_named_operation_through_in_other_spellings() {
    use Expect::*;
    let w = world();
    let (mission, _) = w.auth.active_token();
    let mut c = w.auth.claims(&mission);
    c["authorization_details"] = json!([
        { "type": "mission_resource_access", "resource": "https://api.partner.example", "actions": ["http.*"] }
    ]);
    let token = w.auth.token(&c);
    run(
        &token,
        &[
            ("POST", "/v1/other", Forwarded("/v1/other")),
            ("POST", "/v1/payments", Denied(403, "insufficient_authority", "/v1/payments")),
            ("POST", "/V1/Payments", Denied(403, "insufficient_authority", "/V1/Payments")),
            ("POST", "/v1/payments/", Denied(403, "insufficient_authority", "/v1/payments/")),
            ("POST", "/V1/PAYMENTS/", Denied(403, "insufficient_authority", "/V1/PAYMENTS/")),
            ("POST", "/v1/p%61yments", Denied(403, "insufficient_authority", "/v1/payments")),
            ("POST", "/v1/payments;x=1", Refused),
        ],
    );
}

#[test]
fn an_origin_resource_covers_the_whole_destination() {
    use Expect::*;
    let w = world();
    let (mission, _) = w.auth.active_token();
    for resource in ["https://api.partner.example", "https://api.partner.example/"] {
        let mut c = w.auth.claims(&mission);
        c["authorization_details"] =
            json!([{ "type": "mission_resource_access", "resource": resource, "actions": ["http.get"] }]);
        let token = w.auth.token(&c);
        run(
            &token,
            &[
                ("GET", "/", Forwarded("/")),
                ("GET", "/reports/q3", Forwarded("/reports/q3")),
                ("DELETE", "/reports/q3", Denied(403, "insufficient_authority", "/reports/q3")),
                ("GET", "/reports/..%2Fadmin", Refused),
            ],
        );
    }
}

#[test]
fn every_shipped_listener_normalises_the_path_before_the_filter() {
    let dir = missiongate_tests::repo_root().join("envoy");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        let managers = text.matches("name: envoy.filters.network.http_connection_manager").count();
        assert!(managers >= 1, "{}", p.display());
        for setting in
            ["normalize_path: true", "merge_slashes: true", "path_with_escaped_slashes_action: KEEP_UNCHANGED"]
        {
            assert_eq!(text.matches(setting).count(), managers, "{}: every listener needs {setting}", p.display());
        }
    }
}
