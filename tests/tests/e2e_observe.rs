//! Issue 14 end to end, the operators' view: after the e2e story (an allowed call, a blocked
//! destination, an access request approved, the retry allowed) the portal's `/metrics` and Envoy's
//! `/stats/prometheus`, both parsed with a Prometheus text-format parser, show the counts the story
//! implies.

use missiongate_tests::envoy::{Envoy, Opts};
use missiongate_tests::http::{Req, Response};
use missiongate_tests::portal::Portal;
use missiongate_tests::upstream::Upstream;
use prometheus_parse::{Scrape, Value as PValue};
use std::time::Duration;

fn parse(text: &str) -> Scrape {
    // Envoy writes an empty label set (`name{} 2`), valid text format that prometheus-parse 0.2 skips;
    // it is dropped before parsing.
    Scrape::parse(text.lines().map(|l| Ok(l.replacen("{} ", " ", 1)))).expect("Prometheus text format")
}

fn sum(sc: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    sc.samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            PValue::Counter(v) | PValue::Gauge(v) | PValue::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

fn send(envoy: &Envoy, path: &str, token: &str) -> Response {
    Req::new("GET", path).bearer(token).send(envoy.port)
}

#[test]
fn metrics_of_the_portal_and_the_filter_after_the_story() {
    let up = Upstream::start(None);
    let portal = Portal::start(&["--status-fresh-seconds", "30", "--metrics-token", "e2e-metrics-scraper-0123456789"]);
    let envoy = Envoy::start(up.port, portal.port, Opts { concurrency: 1, events: true, pdp: true, ..Opts::default() });
    let (_, token) = portal.active(&["http.get"]);

    assert_eq!(send(&envoy, "/v1/ok", &token).status, 200);
    let denial = send(&envoy, "/v2/reports", &token);
    assert_eq!(denial.status, 511, "{}", denial.text());
    let doc = denial.json();
    let r = portal.request_access(&doc, "observe-1", None, "the weekly report");
    assert!(r.status == 201 || r.status == 200, "{}", r.text());
    let task = r.json()["task"]["id"].as_str().unwrap().to_owned();
    let r = portal.approve_request(&task, 60);
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(1100)); // the filter remembers the denial for 1 s
    let r = send(&envoy, "/v2/reports", &token);
    assert_eq!(r.status, 200, "{}", r.text());

    // The portal: one requestable denial, a permit, one request created and approved, a Mission
    // created and approved.
    let scrape_portal = || {
        let r = Req::new("GET", "/metrics")
            .header("Host", &format!("127.0.0.1:{}", portal.port))
            .header("Authorization", "Bearer e2e-metrics-scraper-0123456789")
            .send(portal.port);
        assert_eq!(r.status, 200, "{}", r.text());
        parse(&r.text())
    };
    let mut sc = scrape_portal();
    for _ in 0..50 {
        if sum(&sc, "missiongate_portal_access_requests_total", &[("status", "approved")]) >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        sc = scrape_portal();
    }
    let ev = "missiongate_portal_evaluations_total";
    assert_eq!(sum(&sc, ev, &[("decision", "request")]), 1.0);
    assert_eq!(sum(&sc, ev, &[("decision", "permit")]), 1.0);
    let ar = "missiongate_portal_access_requests_total";
    assert_eq!(sum(&sc, ar, &[("status", "created")]), 1.0);
    assert_eq!(sum(&sc, ar, &[("status", "approved")]), 1.0);
    assert_eq!(sum(&sc, "missiongate_portal_access_requests_pending", &[]), 0.0);
    assert_eq!(sum(&sc, "missiongate_portal_mission_transitions_total", &[("to", "active")]), 1.0);
    // Envoy's admin: the filter's counters, under their Prometheus names.
    // The filter flushes its counters on its tick: wait for them (bounded).
    let stats = || Req::new("GET", "/stats/prometheus").header("Host", "admin").send(envoy.admin).text();
    let mut text = stats();
    for _ in 0..50 {
        if sum(&parse(&text), "missiongate_decision_allowed", &[]) >= 2.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        text = stats();
    }
    let st = parse(&text);
    assert_eq!(sum(&st, "missiongate_decision_allowed", &[]), 2.0, "{text}");
    let refused: f64 = st
        .samples
        .iter()
        .filter(|s| s.metric.starts_with("missiongate_decision_") && s.metric != "missiongate_decision_allowed")
        .map(|s| match &s.value {
            PValue::Counter(v) | PValue::Gauge(v) | PValue::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(refused, 1.0, "one refusal (the 511)");
}
