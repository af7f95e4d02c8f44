//! DPoP proof checks (RFC 9449 §4.3) for a DPoP-bound access token.

use missiongate_wire::claims::{is_safe_id, DpopClaims};
use missiongate_wire::dpop::{self, Step};
use missiongate_wire::jose::{PureVerifier, Verifier};

use crate::config::DpopConfig;
use crate::decision::{Denial, Reason};

/// Longest proof accepted.
pub const MAX_PROOF_BYTES: usize = dpop::MAX_PROOF_BYTES;

/// A proof that passed every check but replay: `jti` must still be unseen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedProof {
    /// Replay key (thumbprint and jti).
    pub replay_key: String,
    /// Remember the key until this instant.
    pub remember_until: i64,
}

fn bad(detail: &str) -> Denial {
    Denial::new(Reason::InvalidDpopProof, detail)
}

/// The request a proof must match.
#[derive(Debug, Clone, Copy)]
pub struct Bound<'a> {
    /// Request method.
    pub method: &'a str,
    /// Destination origin.
    pub origin: &'a str,
    /// Normalised path.
    pub path: &'a str,
    /// The access token presented.
    pub token: &'a str,
    /// The token's `cnf.jkt`.
    pub jkt: &'a str,
}

/// Check `proof` for the request in `bound`.
pub fn check(cfg: &DpopConfig, proof: &str, bound: &Bound<'_>, now: i64) -> Result<CheckedProof, Denial> {
    check_with(cfg, proof, bound, now, &PureVerifier)
}

/// [`check`] with the host's [`Verifier`] for the proof's signature.
pub fn check_with(
    cfg: &DpopConfig,
    proof: &str,
    bound: &Bound<'_>,
    now: i64,
    verifier: &dyn Verifier,
) -> Result<CheckedProof, Denial> {
    let Bound { method, origin, path, token, jkt } = *bound;
    let window = cfg.iat_window_seconds;
    let expect = dpop::Expect {
        algs: &cfg.algs,
        htm: method,
        htu: (origin, path),
        iat: dpop::IatWindow { now, past: window, future: window.min(60) },
        jkt: Some(jkt),
        token: Some(token),
    };
    // The jti becomes a replay-ledger key and the nonce could reach a log: only bounded visible
    // ASCII is accepted, so neither ever carries a control character or a separator.
    let shape = |claims: &DpopClaims| {
        if !is_safe_id(&claims.jti) {
            return Err(bad("DPoP proof jti must be 1 to 256 visible ASCII characters"));
        }
        if claims.nonce.as_deref().is_some_and(|n| !is_safe_id(n)) {
            return Err(bad("DPoP proof nonce must be 1 to 256 visible ASCII characters"));
        }
        Ok(())
    };
    let checked = dpop::check_with(proof, &expect, shape, verifier).map_err(|r| match r {
        dpop::Refusal::Caller(denial) => denial,
        dpop::Refusal::Step(step) => bad(match step {
            Step::TooLarge => "DPoP proof too large",
            Step::NotCompact => "DPoP proof is not a compact JWS",
            Step::Header => "DPoP proof header",
            Step::Typ => "DPoP proof typ must be dpop+jwt",
            Step::Alg => "DPoP proof alg is not allowed",
            Step::NoJwk => "DPoP proof has no jwk",
            Step::Jwk => "DPoP proof jwk is not a usable public key",
            Step::Thumbprint => "DPoP proof jwk thumbprint",
            Step::KeyMismatch => "DPoP key does not match the token's cnf.jkt",
            Step::SignatureEncoding => "DPoP proof signature encoding",
            Step::Signature => "DPoP proof signature is not valid",
            Step::PayloadEncoding => "DPoP proof payload encoding",
            Step::Claims => "DPoP proof claims",
            Step::Htm => "DPoP proof htm does not match the request method",
            Step::Htu => "DPoP proof htu does not match the request URI",
            Step::Iat => "DPoP proof iat is outside the accepted window",
            Step::Ath => "DPoP proof ath does not match the access token",
        }),
    })?;
    let (jti, iat) = (checked.claims.jti, checked.claims.iat.0);
    Ok(CheckedProof { replay_key: format!("mg.dpop/{jkt}/{jti}"), remember_until: iat + window + 60 })
}
