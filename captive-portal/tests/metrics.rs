//! `/metrics` of the real portal binary after a story, parsed with a Prometheus text-format parser;
//! and the Grafana dashboard checked against the names that exist.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use prometheus_parse::{Sample, Scrape, Value as PValue};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const SCRAPER: &str = "metrics-scraper-token-0123456789";

async fn scrape(p: &Portal, token: &str) -> (StatusCode, Option<Scrape>, String) {
    let resp = p.http.get(p.url("/metrics")).bearer_auth(token).send().await.unwrap();
    let status = resp.status();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let text = resp.text().await.unwrap();
    if status != StatusCode::OK {
        return (status, None, text);
    }
    assert!(ct.starts_with("text/plain"), "{ct}");
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    (status, Some(parsed), text)
}

fn value(s: &Sample) -> f64 {
    match &s.value {
        PValue::Counter(v) | PValue::Gauge(v) | PValue::Untyped(v) => *v,
        PValue::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
        PValue::Summary(_) => f64::NAN,
    }
}

/// The sample of `metric` whose labels include all of `labels` (0 when absent).
fn get(sc: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    sc.samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(value)
        .sum()
}

/// The count of a histogram series.
fn histogram_count(sc: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    sc.samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            PValue::Histogram(h) => h.last().map_or(0.0, |b| b.count),
            _ => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_after_a_story_have_the_counts_it_implies_and_bounded_labels() {
    let (_dir, db) = temp_db();
    let p = Portal::start(&db, &["--metrics-token", SCRAPER]).await;

    // Who may scrape: the scraper credential and the operator token; not a gateway, not anonymous.
    let (s, _, _) = scrape(&p, "wrong-token").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, _) = scrape(&p, GW).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "a gateway credential does not read metrics");
    let anon = p.http.get(p.url("/metrics")).send().await.unwrap();
    assert_eq!(anon.status(), StatusCode::UNAUTHORIZED);
    let (s, _, _) = scrape(&p, OP).await;
    assert_eq!(s, StatusCode::OK);

    // The story: a Mission created and approved; three requestable denials; one plain denial (an
    // unknown Mission); three access requests: one approved, one denied, one left pending; the
    // approved call is then permitted.
    let m = p.active_mission().await;
    let mission_id = m["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    let mut reqs = Vec::new();
    for (i, res) in ["https://a.example/x", "https://b.example/x", "https://c.example/x"].iter().enumerate() {
        let req = eval_req(&m, res, "http.get", None);
        let d = p.evaluate(&req).await;
        assert_eq!(d["context"]["next_action"], "request", "{d}");
        let (st, _, t) = p.submit(Some(&format!("m-{i}")), &submission(&d, "story", None)).await;
        assert_eq!(st, StatusCode::CREATED, "{t}");
        tasks.push(t["task"]["id"].as_str().unwrap().to_owned());
        reqs.push(req);
    }
    let mut unknown = m.clone();
    unknown["id"] = json!("msn_nope");
    let plain = p.evaluate(&eval_req(&unknown, "https://a.example/x", "http.get", None)).await;
    assert_eq!(plain["decision"], false);
    assert_ne!(plain["context"]["next_action"], "request", "{plain}");
    let (st, v) = p
        .op(
            Method::POST,
            &format!("/operator/access-requests/{}/approve", tasks[0]),
            Some(json!({"duration_seconds": 60})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let (st, v) = p.op(Method::POST, &format!("/operator/access-requests/{}/deny", tasks[1]), Some(json!({}))).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let permit = p.evaluate(&reqs[0]).await;
    assert_eq!(permit["decision"], true, "{permit}");

    // Access-request counts are taken from the outbox by the background worker: wait for them.
    let mut sc = None;
    for _ in 0..50 {
        let (_, parsed, _) = scrape(&p, SCRAPER).await;
        let parsed = parsed.unwrap();
        if get(&parsed, "missiongate_portal_access_requests_total", &[("status", "denied")]) >= 1.0 {
            sc = Some(parsed);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sc = sc.expect("the access-request counters caught up");

    let ev = "missiongate_portal_evaluations_total";
    assert_eq!(get(&sc, ev, &[("decision", "request")]), 3.0);
    assert_eq!(get(&sc, ev, &[("decision", "deny")]), 1.0);
    assert_eq!(get(&sc, ev, &[("decision", "permit")]), 1.0);
    assert_eq!(get(&sc, ev, &[("decision", "error")]), 0.0);
    let ar = "missiongate_portal_access_requests_total";
    assert_eq!(get(&sc, ar, &[("status", "created")]), 3.0);
    assert_eq!(get(&sc, ar, &[("status", "approved")]), 1.0);
    assert_eq!(get(&sc, ar, &[("status", "denied")]), 1.0);
    assert_eq!(get(&sc, ar, &[("status", "expired")]), 0.0);
    assert_eq!(get(&sc, "missiongate_portal_access_requests_pending", &[]), 1.0);
    let lat = "missiongate_portal_approval_latency_seconds";
    assert_eq!(histogram_count(&sc, lat, &[("status", "approved")]), 1.0);
    assert_eq!(histogram_count(&sc, lat, &[("status", "denied")]), 1.0);
    let tr = "missiongate_portal_mission_transitions_total";
    assert_eq!(get(&sc, tr, &[("to", "pending_approval")]), 1.0);
    assert_eq!(get(&sc, tr, &[("to", "active")]), 1.0);
    // No webhook configured: nothing attempted, nothing pending.
    assert_eq!(get(&sc, "missiongate_portal_webhook_deliveries_total", &[]), 0.0);
    assert_eq!(get(&sc, "missiongate_portal_webhook_pending", &[]), 0.0);
    // HTTP latency by route template: the submissions under their template, the task ids nowhere.
    let http = "missiongate_portal_http_request_duration_seconds";
    assert_eq!(
        histogram_count(&sc, http, &[("route", "/access/v1/requests"), ("method", "POST"), ("status", "2xx")]),
        3.0
    );
    let routes: BTreeSet<String> = sc
        .samples
        .iter()
        .filter(|s| s.metric == http)
        .filter_map(|s| s.labels.get("route").map(str::to_owned))
        .collect();
    assert!(histogram_count(&sc, http, &[("route", "/operator/access-requests/:id/approve")]) >= 1.0, "{routes:?}");
    assert!(histogram_count(&sc, http, &[("route", "/access/v1/evaluation")]) >= 5.0);
    for s in &sc.samples {
        for (k, v) in s.labels.iter() {
            for secret in [mission_id.as_str(), OP, GW, SCRAPER, "a.example"]
                .iter()
                .chain(tasks.iter().map(String::as_str).collect::<Vec<_>>().iter())
            {
                assert!(!v.contains(secret), "label {k}={v} of {} carries an identifier", s.metric);
            }
        }
    }
    // Every exposed family is one the registry declares.
    let declared: BTreeSet<&str> = captive_portal::metrics::NAMES.iter().copied().collect();
    for s in &sc.samples {
        let base = ["_sum", "_count", "_bucket"].iter().find_map(|x| s.metric.strip_suffix(x)).unwrap_or(&s.metric);
        assert!(declared.contains(s.metric.as_str()) || declared.contains(base), "undeclared metric {}", s.metric);
    }
}

/// Names of the filter's counters in Envoy's `/stats/prometheus`: the stat `wasmcustom.missiongate.<name>`
/// is exported without the custom namespace and without `envoy_`, as `missiongate_<name>` with dots as
/// underscores (checked against the real Envoy by `tests/tests/e2e_observe.rs`).
fn filter_metric_names() -> BTreeSet<String> {
    use missiongate_core::decision::ALL_REASONS;
    use missiongate_core::engine::ALL_STATS;
    ALL_REASONS
        .iter()
        .map(|r| format!("decision.{}", r.as_str()))
        .chain(ALL_STATS.iter().map(|s| s.as_str().to_owned()))
        .map(|n| format!("missiongate_{}", n.replace('.', "_")))
        .collect()
}

fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "expr" || k == "query" {
                    if let Some(s) = x.as_str() {
                        out.push(s.to_owned());
                    }
                }
                exprs(x, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| exprs(x, out)),
        _ => {}
    }
}

#[test]
fn the_grafana_dashboard_parses_and_uses_only_metrics_that_exist() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/grafana/missiongate.json");
    let text = std::fs::read_to_string(path).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    assert!(dash["panels"].as_array().is_some_and(|p| !p.is_empty()));
    let mut all = Vec::new();
    exprs(&dash, &mut all);
    assert!(!all.is_empty());
    let portal: BTreeSet<String> = captive_portal::metrics::NAMES
        .iter()
        .flat_map(|n| {
            let n = (*n).to_owned();
            [format!("{n}_bucket"), format!("{n}_count"), format!("{n}_sum"), n]
        })
        .collect();
    let filter = filter_metric_names();
    let (mut saw_portal, mut saw_filter) = (false, false);
    for e in &all {
        // Every identifier that names one of ours.
        let bytes = e.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let rest = &e[i..];
            let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
            if starts_word && rest.starts_with("missiongate_") {
                let len = rest.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
                let name = &rest[..len];
                if let Some(prefix) = name.strip_suffix("_") {
                    // A regex prefix such as `missiongate_decision_` in `__name__=~`.
                    assert!(
                        filter.iter().any(|f| f.starts_with(prefix)) || portal.iter().any(|f| f.starts_with(prefix)),
                        "{name} in {e}"
                    );
                } else if !name.starts_with("missiongate_portal_") {
                    assert!(filter.contains(name), "{name} is no filter counter (in {e})");
                    saw_filter = true;
                } else {
                    assert!(portal.contains(name), "{name} is no portal metric (in {e})");
                    saw_portal = true;
                }
                i += len;
            } else {
                i += 1;
            }
        }
    }
    assert!(saw_portal && saw_filter, "the dashboard uses both families");
}
