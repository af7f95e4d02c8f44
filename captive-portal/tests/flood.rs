//! A flood against the real portal binary (loopback only, bounded in count and time): many
//! requesters submit and cancel access requests and read the captive API and their tasks as fast
//! as they can, while a gateway's PDP evaluations (reads and new denials) must keep answering within
//! the filter's timeout. Afterwards the database holds no more than the configured limits allow.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

const REQUESTERS: usize = 12;
const DENIALS_PER_REQUESTER: usize = 4;
const AGENT_WORKERS: usize = 24;
const ROUNDS_PER_WORKER: usize = 60;
const MAX_OPEN: i64 = 5;
const MAX_KEYS: i64 = 40;
/// The filter's PDP callout timeout in the shipped config.
const PDP_TIMEOUT: Duration = Duration::from_millis(1000);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_agents_leaves_gateway_evaluations_fast_and_storage_bounded() {
    let (_dir, db) = temp_db();
    let p = Arc::new(
        Portal::start(
            &db,
            &[
                "--max-open-requests-per-requester",
                &MAX_OPEN.to_string(),
                "--max-idempotency-keys-per-requester",
                &MAX_KEYS.to_string(),
            ],
        )
        .await,
    );
    // Requesters: one Mission each, with a few requestable denials.
    let mut requesters: Vec<(Value, Vec<Value>)> = Vec::new();
    for _ in 0..REQUESTERS {
        let m = p.active_mission().await;
        let mut ds = Vec::new();
        for i in 0..DENIALS_PER_REQUESTER {
            ds.push(p.evaluate(&eval_req(&m, &format!("https://flood{i}.example"), "http.get", None)).await);
        }
        requesters.push((m, ds));
    }
    let gateway_mission = requesters[0].0.clone();
    let requesters = Arc::new(requesters);
    let sent = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));

    // The gateway: an evaluation every 20 ms (a known denial, then a new one), timed.
    let gw = {
        let (p, done) = (Arc::clone(&p), Arc::clone(&done));
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u32;
            while !done.load(Ordering::Relaxed) {
                i += 1;
                let resource =
                    if i % 2 == 0 { "https://flood0.example".to_owned() } else { format!("https://gw{i}.example") };
                let body = eval_req(&gateway_mission, &resource, "http.get", None);
                let t = Instant::now();
                let r = p.http.post(p.url("/access/v1/evaluation")).bearer_auth(GW).json(&body).send().await.unwrap();
                let status = r.status();
                let v: Value = r.json().await.unwrap();
                lat.push(t.elapsed());
                assert_eq!(status, StatusCode::OK, "{v}");
                assert_eq!(v["decision"], false, "{v}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lat
        })
    };

    // The agents.
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..AGENT_WORKERS {
        let (p, reqs, sent, limited) =
            (Arc::clone(&p), Arc::clone(&requesters), Arc::clone(&sent), Arc::clone(&limited));
        workers.push(tokio::spawn(async move {
            for round in 0..ROUNDS_PER_WORKER {
                let (_, denials) = &reqs[(w + round) % REQUESTERS];
                let d = &denials[round % DENIALS_PER_REQUESTER];
                let key = format!("flood-{w}-{round}");
                let (s, h, t) = p.submit(Some(&key), &submission(d, "flood", None)).await;
                sent.fetch_add(1, Ordering::Relaxed);
                match s.as_u16() {
                    200 | 201 => {
                        let id = t["task"]["id"].as_str().unwrap();
                        let (s, _, _) = p.get(&p.url(&format!("/access/v1/requests/{id}"))).await;
                        assert_eq!(s, StatusCode::OK);
                        let (s, _, _) = p.post_json(&format!("/access/v1/requests/{id}/cancel"), &json!({})).await;
                        assert!(s == StatusCode::OK || s == StatusCode::CONFLICT || s.as_u16() == 503, "{s}");
                        sent.fetch_add(2, Ordering::Relaxed);
                    }
                    429 | 503 => {
                        assert!(h.get("retry-after").is_some(), "{t}");
                        limited.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("submission answered {other}: {t}"),
                }
                let api = d["context"]["captive_portal_api"].as_str().unwrap();
                let (s, _, _) = p.get(&p.local(api)).await;
                assert_eq!(s, StatusCode::OK);
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let flood_time = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let mut lat = gw.await.unwrap();
    lat.sort();
    let p99 = lat[(lat.len() * 99 / 100).min(lat.len() - 1)];
    let max = *lat.last().unwrap();

    let n = crate_counts(&db).await;
    let size = ["", "-wal", "-shm"]
        .iter()
        .map(|s| std::fs::metadata(format!("{}{s}", db.display())).map(|m| m.len()).unwrap_or(0))
        .sum::<u64>();
    eprintln!(
        "flood: {} agent requests ({} refused with 429/503) from {REQUESTERS} requesters in {:.1} s; \
         {} gateway evaluations, p99 {} ms, max {} ms; database {} KiB; rows {n:?}",
        sent.load(Ordering::Relaxed),
        limited.load(Ordering::Relaxed),
        flood_time.as_secs_f64(),
        lat.len(),
        p99.as_millis(),
        max.as_millis(),
        size / 1024
    );
    assert!(flood_time < Duration::from_secs(100), "the flood took {flood_time:?}");
    assert!(lat.len() >= 10, "too few evaluations measured: {}", lat.len());
    assert!(p99 < PDP_TIMEOUT, "evaluation p99 {p99:?} is past the filter's timeout");
    // Storage: within what the limits allow.
    let r = REQUESTERS as i64;
    assert!(n["idempotency_keys"] <= r * MAX_KEYS, "{n:?}");
    assert!(n["pending"] <= r * MAX_OPEN, "{n:?}");
    assert!(n["access_tasks"] <= n["idempotency_keys"], "every task needed a key: {n:?}");
    assert!(n["access_audit"] <= 2 * n["access_tasks"], "{n:?}");
    assert!(limited.load(Ordering::Relaxed) > 0, "the flood never reached a limit");
}

async fn crate_counts(db: &std::path::Path) -> std::collections::HashMap<String, i64> {
    row_counts(db, &["denials", "access_tasks", "idempotency_keys", "access_audit"]).await
}
