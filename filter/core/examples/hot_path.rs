//! What the decision core costs per request on the hot path (token seen before, Mission state
//! cached, destination inside the Authority Set), without Envoy: `Engine::decide` and the evidence
//! record's JSON, each in a loop.
//!
//! Native: `cargo run --release -p missiongate-core --example hot_path`
//! Wasm (V8, as in Envoy): build with `--target wasm32-wasip1` and run the `.wasm` under node with
//! the `run.mjs` of `wire/examples/p256_speed.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use missiongate_core::{Attempts, Authz, Config, Engine, Outcome, ReplayGuard, Request};
use missiongate_wire::jose::{Alg, SigningKey};
use serde_json::json;
use std::rc::Rc;
use std::time::Instant;

const NOW: i64 = 1_800_000_000;
const AS: &str = "https://as.example";

struct NoShared;
impl ReplayGuard for NoShared {
    fn remember(&mut self, _: &str, _: i64, _: i64) -> Result<bool, String> {
        Ok(true)
    }
}

fn main() {
    let key = SigningKey::from_secret_bytes(Alg::Es256, &[0x11; 32]).unwrap();
    let config = json!({
        "issuers": [{ "issuer": AS, "jwks": {"keys": [key.public_jwk(Some("k1"))]},
            "mission_authority": { "status": {"cluster": "authority", "authority": "as.example", "path": "/mission/status"},
                                   "audience": "https://gateway.example", "max_staleness_seconds": 600 } }],
        "destinations": [{ "authority": "api.partner.example", "origin": "https://api.partner.example" }]
    });
    let mut e = Engine::new(
        Rc::new(Config::parse(config.to_string().as_bytes()).unwrap()),
        missiongate_core::Seeds { nonce: [7; 32], ids: [8; 32] },
    );
    let claims = json!({
        "iss": AS, "sub": "user-1", "client_id": "agent-7", "aud": "https://api.partner.example",
        "iat": NOW - 10, "exp": NOW + 600, "jti": "tok-1",
        "mission": {"id": "msn_7QxVb1zkT9aLw2", "issuer": AS, "authority_hash": "sha-256:l3KvZ4mP5x0wQrR6tY2nD9bM7sX1cF8gH2vJ4kE5pNQ"},
        "authorization_details": [{"type": "mission_resource_access", "resource": "https://api.partner.example/v1",
                                   "resource_match": "prefix", "actions": ["http.get", "invoices.*"]}]
    });
    let token = key.sign_compact(&json!({"alg": "ES256", "typ": "at+jwt", "kid": "k1"}), &claims);
    let auth = format!("Bearer {token}");
    let req = Request {
        method: "GET",
        scheme: "http",
        authority: "api.partner.example",
        path: "/v1/invoices?status=open",
        authorization: Authz::One(&auth),
        dpop: None,
        dpop_count: 0,
    };
    // Prime: the first decision asks for Mission Status; answer it.
    let (_, nonce) = e.status_callout(0, "msn_7QxVb1zkT9aLw2").unwrap();
    let status = key.sign_compact(
        &json!({"alg": "ES256", "typ": "mission-status-response+jwt", "kid": "k1"}),
        &json!({"iss": AS, "aud": "https://gateway.example", "nonce": nonce, "iat": NOW, "exp": NOW + 60,
                "mission": {"id": "msn_7QxVb1zkT9aLw2", "issuer": AS, "state": "active", "version": 1,
                            "fresh_until": missiongate_wire::time::format_rfc3339(NOW + 300)}}),
    );
    e.on_status(0, "msn_7QxVb1zkT9aLw2", &nonce, Some(200), status.as_bytes(), NOW);
    assert!(matches!(e.decide(&req, NOW, Attempts::default(), &mut NoShared), Outcome::Allow(_)));

    let n = 200_000;
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..5 {
        let t = Instant::now();
        let mut evidence = Vec::with_capacity(1);
        for _ in 0..n {
            if let Outcome::Allow(ev) = e.decide(&req, NOW, Attempts::default(), &mut NoShared) {
                evidence.clear();
                evidence.push(ev);
            }
        }
        let decide = t.elapsed().as_secs_f64() / f64::from(n);
        let ev = evidence.pop().unwrap();
        let t = Instant::now();
        let mut bytes = 0;
        for _ in 0..n {
            bytes += ev.to_json().len();
        }
        std::hint::black_box(bytes);
        let json = t.elapsed().as_secs_f64() / f64::from(n);
        best = (best.0.min(decide), best.1.min(json));
    }
    println!("hot path: decide {:.2} us, evidence to_json {:.2} us per request", best.0 * 1e6, best.1 * 1e6);
}
