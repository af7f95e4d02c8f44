//! RFC 9449 DPoP proofs presented at the token endpoint (§4.3 checks).
//!
//! A valid proof binds the issued token to the proof's key: `cnf.jkt` = RFC 7638 thumbprint.

use std::collections::HashMap;
use std::sync::Mutex;

use missiongate_wire::dpop::{self, Step};
use missiongate_wire::jws::ALL_ALGS;
use missiongate_wire::uri;

/// Accepted distance between a proof's `iat` and now, either way.
pub const IAT_WINDOW_SECONDS: i64 = 60;
/// A `jti` is remembered this long (covers the whole `iat` window both ways).
const REPLAY_MEMORY_SECONDS: i64 = 2 * IAT_WINDOW_SECONDS + 5;
/// Most remembered `jti`s; when full (after pruning), proofs are refused rather than replayable.
const REPLAY_CAPACITY: usize = 100_000;

/// Why a proof was refused. The message never contains proof material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopError(pub &'static str);

impl std::fmt::Display for DpopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for DpopError {}

/// Checks proofs and remembers their `jti`s.
#[derive(Debug, Default)]
pub struct DpopVerifier {
    seen: Mutex<HashMap<String, i64>>,
}

impl DpopVerifier {
    /// A verifier with an empty replay memory.
    pub fn new() -> DpopVerifier {
        DpopVerifier::default()
    }

    /// Check `proof` for a request `htm` `htu` at `now`; returns the key's thumbprint (`jkt`).
    pub fn check(&self, proof: &str, htm: &str, htu: &str, now: i64) -> Result<String, DpopError> {
        // `htu` comparison: scheme, host, port and path, without query and fragment (RFC 9449 §4.3).
        let Some((origin, path)) = uri::htu_target(htu) else {
            return Err(DpopError("DPoP proof htu does not match the token endpoint"));
        };
        let expect = dpop::Expect {
            algs: &ALL_ALGS,
            htm,
            htu: (&origin, &path),
            iat: dpop::IatWindow { now, past: IAT_WINDOW_SECONDS, future: IAT_WINDOW_SECONDS },
            jkt: None,
            token: None,
        };
        let checked = dpop::check(proof, &expect, |_| Ok::<(), DpopError>(())).map_err(|r| match r {
            dpop::Refusal::Caller(e) => e,
            dpop::Refusal::Step(step) => DpopError(match step {
                Step::TooLarge => "DPoP proof too long",
                Step::NotCompact => "DPoP proof is not a compact JWS",
                Step::Header => "DPoP proof header is malformed",
                Step::Typ => "DPoP proof typ is not dpop+jwt",
                Step::Alg => "DPoP proof alg is not an accepted asymmetric algorithm",
                Step::NoJwk => "DPoP proof has no jwk header",
                Step::Jwk => "DPoP proof jwk is not an accepted public key",
                Step::Thumbprint => "DPoP proof jwk has no thumbprint",
                Step::SignatureEncoding | Step::Signature | Step::PayloadEncoding => "DPoP proof signature is invalid",
                Step::Claims => "DPoP proof claims are malformed",
                Step::Htm => "DPoP proof htm does not match the request method",
                Step::Htu => "DPoP proof htu does not match the token endpoint",
                Step::Iat => "DPoP proof iat is outside the accepted window",
                // Not checked here: no access token accompanies a proof at the token endpoint.
                Step::KeyMismatch | Step::Ath => "DPoP proof is bound to another token",
            }),
        })?;
        let (jkt, claims) = (checked.jkt, checked.claims);
        if claims.jti.is_empty() || claims.jti.len() > 256 {
            return Err(DpopError("DPoP proof jti is missing or too long"));
        }
        self.remember(format!("{jkt}:{}", claims.jti), now)?;
        Ok(jkt)
    }

    fn remember(&self, id: String, now: i64) -> Result<(), DpopError> {
        let mut seen = self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.len() >= REPLAY_CAPACITY {
            seen.retain(|_, until| *until > now);
            if seen.len() >= REPLAY_CAPACITY {
                return Err(DpopError("too many recent DPoP proofs; try again shortly"));
            }
        }
        match seen.get(&id) {
            Some(until) if *until > now => Err(DpopError("DPoP proof jti was already used")),
            _ => {
                seen.insert(id, now.saturating_add(REPLAY_MEMORY_SECONDS));
                Ok(())
            }
        }
    }

    /// Forget `jti`s whose window has passed.
    pub fn prune(&self, now: i64) {
        self.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).retain(|_, until| *until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use missiongate_wire::jose::SigningKey;
    use serde_json::json;

    const HTU: &str = "https://as.example/token";

    fn proof(key: &SigningKey, typ: &str, htm: &str, htu: &str, iat: i64, jti: &str) -> String {
        let header = json!({"alg": key.alg().name(), "typ": typ, "jwk": key.public_jwk(None)});
        key.sign_compact(&header, &json!({"jti": jti, "htm": htm, "htu": htu, "iat": iat}))
    }

    #[test]
    fn accepts_a_good_proof_and_refuses_replay() {
        let v = DpopVerifier::new();
        let key = SigningKey::generate_p256();
        let p = proof(&key, "dpop+jwt", "POST", "https://AS.example:443/token?x=1", 1000, "j1");
        let jkt = v.check(&p, "POST", HTU, 1010).unwrap();
        assert_eq!(jkt, key.public_jwk(None).thumbprint().unwrap());
        assert_eq!(v.check(&p, "POST", HTU, 1011).unwrap_err().0, "DPoP proof jti was already used");
        let ed = SigningKey::generate_ed25519();
        assert!(v.check(&proof(&ed, "dpop+jwt", "POST", HTU, 1000, "j1"), "POST", HTU, 1000).is_ok());
    }

    #[test]
    fn refuses_bad_proofs() {
        let v = DpopVerifier::new();
        let key = SigningKey::generate_p256();
        for (p, why) in [
            (proof(&key, "jwt", "POST", HTU, 1000, "a"), "typ"),
            (proof(&key, "dpop+jwt", "GET", HTU, 1000, "b"), "htm"),
            (proof(&key, "dpop+jwt", "POST", "https://as.example/other", 1000, "c"), "htu"),
            (proof(&key, "dpop+jwt", "POST", HTU, 900, "d"), "iat"),
            (proof(&key, "dpop+jwt", "POST", HTU, 1100, "e"), "iat"),
            (proof(&key, "dpop+jwt", "POST", HTU, i64::MIN, "h"), "iat"),
            (proof(&key, "dpop+jwt", "POST", HTU, i64::MAX, "i"), "iat"),
            (proof(&key, "dpop+jwt", "POST", HTU, 1000, ""), "jti"),
            ("not.a.jws".to_string(), "malformed"),
        ] {
            let err = v.check(&p, "POST", HTU, 1000).unwrap_err();
            assert!(err.0.contains(why) || why == "malformed", "{why}: {err}");
        }
        // Signed by another key than the embedded one.
        let other = SigningKey::generate_p256();
        let header = json!({"alg": "ES256", "typ": "dpop+jwt", "jwk": key.public_jwk(None)});
        let forged = other.sign_compact(&header, &json!({"jti": "f", "htm": "POST", "htu": HTU, "iat": 1000}));
        assert!(v.check(&forged, "POST", HTU, 1000).unwrap_err().0.contains("signature"));
        // No jwk at all.
        let bare = key.sign_compact(
            &json!({"alg": "ES256", "typ": "dpop+jwt"}),
            &json!({"jti": "g", "htm": "POST", "htu": HTU, "iat": 1000}),
        );
        assert!(v.check(&bare, "POST", HTU, 1000).unwrap_err().0.contains("jwk"));
    }
}
