//! The approver page in a real browser, end to end (issue 4): an agent's bound call is blocked by
//! the real Envoy with a 511; the agent asks for access with a hostile justification; a person signs
//! in to the portal's page in headless Chromium, sees every field as inert text, and approves by a
//! click; the agent's retry through Envoy goes through, exactly once.

use missiongate_tests::browser::Browser;
use missiongate_tests::envoy::{Envoy, Opts};
use missiongate_tests::http::Req;
use missiongate_tests::portal::Portal;
use missiongate_tests::upstream::Upstream;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const APPROVER: &str = "alice";
const APPROVER_TOKEN: &str = "alice-approver-token-0123456789";
const PAYLOAD: &str = "<script>document.title='pwned'</script><img src=x onerror=\"document.title='pwned'\">";

#[test]
fn a_person_approves_in_chromium_and_the_agents_retry_goes_through_envoy_once() {
    let started = Instant::now();
    let up = Upstream::start(None);
    let portal =
        Portal::start(&["--approver", &format!("{APPROVER}:{APPROVER_TOKEN}"), "--status-fresh-seconds", "30"]);
    let envoy = Envoy::start(up.port, portal.port, Opts { events: true, pdp: true, ..Opts::default() });
    let (mission, token) = portal.active(&["http.get", "payments.create"]);

    // The agent's consequential call carries agent-supplied text; it is blocked and bound.
    let body = json!({"amount": "423.50", "currency": "USD", "to": "acct_123", "memo": PAYLOAD}).to_string();
    let pay = || {
        Req::new("POST", "/v1/payments")
            .bearer(&token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send(envoy.port)
    };
    let denial = pay();
    let denied_at = Instant::now();
    assert_eq!(denial.status, 511, "{}", denial.text());
    let doc = denial.json();
    let portal_url = doc["user-portal-url"].as_str().unwrap().to_owned();
    let params = json!({"method": "POST", "target": "https://api.partner.example/v1/payments",
                        "content_type": "application/json", "body": serde_json::from_str::<Value>(&body).unwrap()});
    let justification = format!("Invoice 842 is due today. {PAYLOAD}");
    let r = portal.request_access(&doc, &missiongate_tests::rand_id("idem-"), Some(params), &justification);
    assert_eq!(r.status, 201, "{}", r.text());
    let status_endpoint = r.json()["task"]["status_endpoint"].as_str().unwrap().to_owned();

    // A person, in Chromium.
    let dir = missiongate_tests::repo_root().join("target/e2e").join(missiongate_tests::rand_id("chromium-"));
    let b = Browser::start(&dir);
    let shot = missiongate_tests::repo_root().join("target/e2e/approver.png");
    // The user-portal-url sends an approver to sign in first (an agent token is no credential
    // here), then back to the denial.
    // Every step waits for what it needs: the next document after a click, the element it reads.
    b.goto(&portal_url);
    b.wait_url("the sign-in page", |u| u.contains("/portal/login?next="));
    b.type_into("#token", &token);
    b.click_and_wait("#login");
    assert!(b.url().contains("/portal/login"), "an agent's token signed in: {}", b.url());
    b.type_into("#token", APPROVER_TOKEN);
    b.click_and_wait("#login");
    b.wait_url("the denial after sign-in", |u| u == portal_url);
    assert_eq!(b.title(), "Access request · missiongate");
    assert!(b.text("#who").contains(APPROVER));
    // What the approver must see: agent, Mission, destination, operation, the bound media type,
    // the parameters.
    assert!(b.text("#agent").contains("agent-7"));
    assert!(b.text("#mission").contains(&mission), "{}", b.text("#mission"));
    assert_eq!(b.text("#destination"), "https://api.partner.example");
    assert_eq!(b.text("#operation"), "payments.create");
    assert_eq!(b.text("#content-type"), "application/json");
    assert!(b.find_all("#raw-body").is_empty(), "a JSON body is shown, not only its hash");
    let shown = b.text("#parameters");
    assert!(
        shown.contains("423.50") && shown.contains("acct_123") && shown.contains("document.title='pwned'"),
        "{shown}"
    );
    // Agent-supplied text is shown verbatim, as text, and never runs.
    assert!(b.text("#justification").contains(PAYLOAD));
    assert!(b.find_all("script").is_empty(), "no script element on the page");
    assert!(b.find_all("img").is_empty(), "no img element on the page");
    assert_ne!(b.title(), "pwned");
    assert!(b.screenshot(&shot) > 10_000, "screenshot {}", shot.display());
    // Approve for 5 minutes, by a click.
    b.type_into("#minutes", "5");
    b.click_and_wait("#approve");
    b.wait_url("the denial after approving", |u| u == portal_url);
    let grant = b.text("#grant");
    assert!(grant.contains("approver:alice") && grant.contains("one use"), "{grant}");
    assert!(b.text("#state").contains("approved"));
    assert_ne!(b.title(), "pwned");
    drop(b);

    // The agent sees its task approved and retries through Envoy (after the filter's 1 s memory of
    // the denial): exactly the approved call goes through, once.
    let on_portal = |url: &str| {
        Req::new("GET", &missiongate_tests::http::path_of(url))
            .header("Host", &format!("127.0.0.1:{}", portal.port))
            .send(portal.port)
    };
    let st = on_portal(&status_endpoint);
    assert_eq!(st.json()["task"]["status"], "approved", "{}", st.text());
    // The per-denial Captive Portal API is open for the 5 minutes the person granted.
    let api = denial.header("link").unwrap().trim_start_matches('<').split('>').next().unwrap().to_owned();
    let c = on_portal(&api);
    assert_eq!(c.json()["captive"], false, "{}", c.text());
    let left = c.json()["seconds-remaining"].as_i64().unwrap();
    assert!((290..=300).contains(&left), "{left}");
    if let Some(left) = Duration::from_millis(1100).checked_sub(denied_at.elapsed()) {
        std::thread::sleep(left);
    }
    let r = pay();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.seen("/v1/payments"), 1);
    let r = pay();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["reason"], "parameter_violation");
    assert_eq!(up.seen("/v1/payments"), 1);
    eprintln!("approver browser test: {:.1} s, screenshot {}", started.elapsed().as_secs_f64(), shot.display());
}
