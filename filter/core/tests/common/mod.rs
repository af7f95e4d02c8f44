//! Fixtures shared by the core's tests (each file includes them with `mod common;`): the fixed
//! clock, the authority's and an agent's fixed keys, an in-memory replay guard, and the signed
//! Mission Status answer that sets a Mission's state in an engine. Natively and as wasm alike.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use missiongate_core::engine::StatusOutcome;
use missiongate_core::{Authz, Engine, ReplayGuard, Request};
use missiongate_wire::jose::{Alg, SigningKey};
use missiongate_wire::time;
use serde_json::{json, Value};

/// A fixed instant (2027-01-15T08:00:00Z).
pub const NOW: i64 = 1_800_000_000;
/// The Mission state authority, which also issues the tokens.
pub const AS: &str = "https://as.example";
/// The gateway's audience in Mission Status answers.
pub const GATEWAY_AUD: &str = "https://gateway.example";

/// The authority's signing key (`k1` in its JWKS).
pub fn as_key() -> SigningKey {
    SigningKey::from_secret_bytes(Alg::Es256, &[0x11; 32]).unwrap()
}

/// An agent's DPoP key.
pub fn dpop_key() -> SigningKey {
    SigningKey::from_secret_bytes(Alg::EdDsa, &[0x55; 32]).unwrap()
}

/// `ReplayGuard` over a map, as every worker would share it.
#[derive(Default)]
pub struct MapGuard(pub HashMap<String, i64>);

impl ReplayGuard for MapGuard {
    fn remember(&mut self, key: &str, until: i64, now: i64) -> Result<bool, String> {
        match self.0.get(key) {
            Some(&t) if t > now => Ok(false),
            _ => {
                self.0.insert(key.to_owned(), until);
                Ok(true)
            }
        }
    }
}

/// Set `mission` (of the first configured authority, [`AS`]) to `state` at `version` in `e`, as
/// a Mission Status answer signed with [`as_key`] and fresh for 300 s does.
pub fn set_state(e: &mut Engine, mission: &str, state: &str, version: u64) -> StatusOutcome {
    let (_, nonce) = e.status_callout(0, mission).unwrap();
    let claims = json!({"iss": AS, "aud": GATEWAY_AUD, "nonce": nonce, "iat": NOW, "exp": NOW + 60,
        "mission": {"id": mission, "issuer": AS, "state": state, "version": version,
                    "fresh_until": time::format_rfc3339(NOW + 300)}});
    let body =
        as_key().sign_compact(&json!({"alg": "ES256", "typ": "mission-status-response+jwt", "kid": "k1"}), &claims);
    e.on_status(0, mission, &nonce, Some(200), body.as_bytes(), NOW)
}

/// The configured issuer [`AS`]: its JWKS (`k1`) inline, a Mission state authority on the cluster
/// `authority` for the audience [`GATEWAY_AUD`].
pub fn issuer() -> Value {
    json!({
        "issuer": AS,
        "jwks": {"keys": [as_key().public_jwk(Some("k1"))]},
        "mission_authority": {
            "status": {"cluster": "authority", "authority": "as.example", "path": "/mission/status"},
            "audience": GATEWAY_AUD
        }
    })
}

/// A PDP on the cluster `pdp` that caches no denial.
pub fn pdp_config() -> Value {
    json!({"evaluation": {"cluster": "pdp", "authority": "pdp.example", "path": "/access/v1/evaluation"},
           "deny_cache_seconds": 0})
}

/// An HTTPS request with one `Authorization` header and no DPoP proof.
pub fn request<'a>(method: &'a str, authority: &'a str, path: &'a str, authorization: &'a str) -> Request<'a> {
    Request {
        method,
        scheme: "https",
        authority,
        path,
        authorization: Authz::One(authorization),
        dpop: None,
        dpop_count: 0,
    }
}
