#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
use missiongate_tests::authority::Authority;
use missiongate_tests::envoy::{Envoy, Opts};
use missiongate_tests::http::Req;
use missiongate_tests::rt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let hits = Arc::new(AtomicU64::new(0));
    let h = Arc::clone(&hits);
    let listener = rt().block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0))).unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let h = Arc::clone(&h);
        async move {
            if uri.path() == "/access/v1/evaluation" {
                let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                axum::Json(serde_json::json!({ "decision": true, "context": { "evaluation_id": format!("e-{n}") } }))
            } else {
                axum::Json(serde_json::json!({ "ok": true }))
            }
        }
    });
    rt().spawn(async move { let _ = axum::serve(listener, app).await; });
    let auth = Authority::start();
    let conc: u32 = std::env::args().nth(1).map_or(1, |c| c.parse().unwrap());
    let envoy = Envoy::start(port, auth.port, Opts { concurrency: conc, pdp: true, replace: vec![
        ("\"pdp\": { \"evaluation\": { \"cluster\": \"authority\", \"authority\": \"127.0.0.1:".into(), "\"pdp\": { \"evaluation\": { \"cluster\": \"partner\", \"authority\": \"127.0.0.1:".into())
    ], ..Opts::default() });
    let (_, t) = auth.active_token();
    println!("warm GET: {}", Req::new("GET", "/v1/x").bearer(&t).send(envoy.port).status);
    for (n, size) in [(1usize, 100usize), (2, 100), (4, 100), (8, 100), (8, 1024), (8, 65536), (8, 1048576)] {
        let (_, t) = auth.active_token();
        let mut body = format!("{{\"amount\":{n},\"r\":\"{}\",\"pad\":\"", missiongate_tests::rand_id(""));
        while body.len() < size - 2 { body.push('x'); }
        body.push_str("\"}");
        let ep = envoy.port;
        let t0 = Instant::now();
        let hs: Vec<_> = (0..n).map(|_| { let (b, t) = (body.clone(), t.clone()); std::thread::spawn(move || {
            let s = Instant::now();
            let r = Req::new("POST", "/v1/payments").bearer(&t).header("Content-Type", "application/json").body(b).send(ep);
            (r.status, s.elapsed().as_millis(), r.text().chars().take(100).collect::<String>())
        })}).collect();
        let res: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        println!("{n} x {size} B, new mission, same new body: {:?} in {:?}; pdp hits so far {}", res.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), t0.elapsed(), hits.load(Ordering::SeqCst));
        for r in res.iter().filter(|r| r.0 != 200) { println!("   {} {}", r.0, r.2); }
    }
    let logs = envoy.logs();
    for l in logs.lines().filter(|l| l.contains("warn") || l.contains("error")).take(10) { println!("LOG {l}"); }
}
