//! Fixtures shared by the core's tests (each file includes them with `mod common;`): the fixed
//! clock, the authority's and an agent's fixed keys, an in-memory replay guard, and the signed
//! Mission Status answer that sets a Mission's state in an engine. Natively and as wasm alike.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;

use missiongate_core::engine::StatusOutcome;
use missiongate_core::{Engine, ReplayGuard};
use missiongate_wire::jose::{Alg, SigningKey};
use missiongate_wire::time;
use serde_json::json;

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
