//! DPoP proof checks (RFC 9449 §4.3) for a DPoP-bound access token.

use missiongate_wire::claims::{DpopClaims, TYP_DPOP};
use missiongate_wire::jose::{Alg, Compact};

use crate::config::DpopConfig;
use crate::decision::{Denial, Reason};
use crate::token;
use crate::uri;

/// Longest proof accepted.
pub const MAX_PROOF_BYTES: usize = 8192;

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
    let Bound { method, origin, path, token, jkt } = *bound;
    if proof.len() > MAX_PROOF_BYTES {
        return Err(bad("DPoP proof too large"));
    }
    let parts = Compact::split(proof).map_err(|_| bad("DPoP proof is not a compact JWS"))?;
    let header = parts.header().map_err(|_| bad("DPoP proof header"))?;
    if header.typ.as_deref() != Some(TYP_DPOP) {
        return Err(bad("DPoP proof typ must be dpop+jwt"));
    }
    let alg = match Alg::from_name(&header.alg) {
        Some(a) if cfg.algs.contains(&a) => a,
        _ => return Err(bad("DPoP proof alg is not allowed")),
    };
    let jwk = header.jwk.as_ref().ok_or_else(|| bad("DPoP proof has no jwk"))?;
    let key = jwk.verifying_key().map_err(|_| bad("DPoP proof jwk is not a usable public key"))?;
    let thumb = jwk.thumbprint().map_err(|_| bad("DPoP proof jwk thumbprint"))?;
    if thumb != jkt {
        return Err(bad("DPoP key does not match the token's cnf.jkt"));
    }
    let sig = parts.signature_bytes().map_err(|_| bad("DPoP proof signature encoding"))?;
    key.verify(alg, parts.signing_input.as_bytes(), &sig).map_err(|_| bad("DPoP proof signature is not valid"))?;
    let payload = parts.payload_bytes().map_err(|_| bad("DPoP proof payload encoding"))?;
    let claims: DpopClaims = serde_json::from_slice(&payload).map_err(|_| bad("DPoP proof claims"))?;
    if claims.jti.is_empty() || claims.jti.len() > 256 || claims.jti.chars().any(char::is_control) {
        return Err(bad("DPoP proof jti"));
    }
    if claims.htm != method {
        return Err(bad("DPoP proof htm does not match the request method"));
    }
    match uri::parse_resource(claims.htu.split(['?', '#']).next().unwrap_or("")) {
        Some((o, p)) if o == origin && p == path => {}
        _ => return Err(bad("DPoP proof htu does not match the request URI")),
    }
    let window = cfg.iat_window_seconds;
    if claims.iat.0 < now - window || claims.iat.0 > now + window.min(60) {
        return Err(bad("DPoP proof iat is outside the accepted window"));
    }
    if claims.ath.as_deref() != Some(token::ath(token).as_str()) {
        return Err(bad("DPoP proof ath does not match the access token"));
    }
    Ok(CheckedProof { replay_key: format!("mg.dpop/{jkt}/{}", claims.jti), remember_until: claims.iat.0 + window + 60 })
}
