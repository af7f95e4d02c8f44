//! The one DPoP proof check (RFC 9449 §4.3, SPEC §2): `typ` `dpop+jwt`, an asymmetric `alg` from the
//! caller's list, the embedded `jwk` (and its thumbprint against the token's `cnf.jkt` where there is
//! a token), the signature, `htm`, `htu` (normalised by [`crate::uri`]), `iat` within the caller's window and `ath`.
//!
//! The filter (at every resource request) and the portal (at its token endpoint) both call
//! [`check`]; each keeps its own `iat` window, `jti` rules and replay store, and maps each refused
//! [`Step`] to its own message.

use crate::claims::{DpopClaims, TYP_DPOP};
use crate::jose::{Alg, PureVerifier, Verifier};
use crate::jws;

/// Longest proof accepted, in bytes.
pub const MAX_PROOF_BYTES: usize = 8192;

/// `ath` value for an access token (RFC 9449 §4.2): base64url SHA-256 of the ASCII token.
pub fn ath(token: &str) -> String {
    use sha2::{Digest, Sha256};
    crate::b64::encode(Sha256::digest(token.as_bytes()))
}

/// Accepted `iat`: from `now - past` to `now + future`, both inclusive.
#[derive(Debug, Clone, Copy)]
pub struct IatWindow {
    /// Now, Unix seconds.
    pub now: i64,
    /// Seconds a proof may be old.
    pub past: i64,
    /// Seconds a proof may be ahead.
    pub future: i64,
}

/// What the proof must match.
pub struct Expect<'a> {
    /// Accepted algorithms.
    pub algs: &'a [Alg],
    /// Request method.
    pub htm: &'a str,
    /// The request URI as (origin, normalised path), [`crate::uri`]: the proof's `htu` must name it.
    pub htu: (&'a str, &'a str),
    /// Accepted `iat`.
    pub iat: IatWindow,
    /// The token's `cnf.jkt`, when the proof accompanies a bound token.
    pub jkt: Option<&'a str>,
    /// The token, when the proof must carry its `ath`.
    pub token: Option<&'a str>,
}

/// The step of the check that refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Longer than [`MAX_PROOF_BYTES`].
    TooLarge,
    /// Not a compact JWS.
    NotCompact,
    /// The header does not parse.
    Header,
    /// `typ` is not `dpop+jwt`.
    Typ,
    /// `alg` is not accepted.
    Alg,
    /// No `jwk` header.
    NoJwk,
    /// The `jwk` is not a usable public key.
    Jwk,
    /// The `jwk` has no thumbprint.
    Thumbprint,
    /// The thumbprint is not the token's `cnf.jkt`.
    KeyMismatch,
    /// The signature does not decode.
    SignatureEncoding,
    /// The signature does not verify under the `jwk`.
    Signature,
    /// The payload does not decode.
    PayloadEncoding,
    /// The claims do not parse.
    Claims,
    /// `htm` is not the request method.
    Htm,
    /// `htu` is not the request URI.
    Htu,
    /// `iat` is outside the window.
    Iat,
    /// `ath` is not the token's.
    Ath,
}

/// Why [`check`] refused: a step, or the caller's own claim check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal<E> {
    /// A step of the check.
    Step(Step),
    /// The caller's check of the claims.
    Caller(E),
}

/// A proof that passed: its key's thumbprint and its claims (`jti` still to be checked for replay).
#[derive(Debug, Clone)]
pub struct Checked {
    /// RFC 7638 thumbprint of the proof's `jwk`.
    pub jkt: String,
    /// The claims.
    pub claims: DpopClaims,
}

/// Check `proof` against `expect`. `claims` runs the caller's own checks of the claims (such as the
/// shape of `jti`) right after they parse, before `htm`.
pub fn check<E>(
    proof: &str,
    expect: &Expect<'_>,
    claims: impl FnOnce(&DpopClaims) -> Result<(), E>,
) -> Result<Checked, Refusal<E>> {
    check_with(proof, expect, claims, &PureVerifier)
}

/// [`check`] with the caller's [`Verifier`] for the proof's signature.
pub fn check_with<E>(
    proof: &str,
    expect: &Expect<'_>,
    claims: impl FnOnce(&DpopClaims) -> Result<(), E>,
    verifier: &dyn Verifier,
) -> Result<Checked, Refusal<E>> {
    let step = Refusal::Step;
    if proof.len() > MAX_PROOF_BYTES {
        return Err(step(Step::TooLarge));
    }
    let policy = jws::Policy { typ: jws::Typ::Exact(TYP_DPOP), algs: expect.algs };
    let opened = jws::open(proof, &policy).map_err(|s| {
        step(match s {
            jws::Step::Header => Step::Header,
            jws::Step::Typ => Step::Typ,
            jws::Step::Alg => Step::Alg,
            _ => Step::NotCompact,
        })
    })?;
    let jwk = opened.header.jwk.as_ref().ok_or(step(Step::NoJwk))?;
    let key = jwk.verifying_key().map_err(|_| step(Step::Jwk))?;
    let jkt = jwk.thumbprint().map_err(|_| step(Step::Thumbprint))?;
    if expect.jkt.is_some_and(|want| want != jkt) {
        return Err(step(Step::KeyMismatch));
    }
    opened.verify_with(&key, verifier).map_err(|s| {
        step(match s {
            jws::Step::SignatureEncoding => Step::SignatureEncoding,
            _ => Step::Signature,
        })
    })?;
    let payload = opened.payload().map_err(|_| step(Step::PayloadEncoding))?;
    let parsed: DpopClaims = serde_json::from_slice(&payload).map_err(|_| step(Step::Claims))?;
    claims(&parsed).map_err(Refusal::Caller)?;
    if parsed.htm != expect.htm {
        return Err(step(Step::Htm));
    }
    let same_target = |(o, p): (String, String)| o == expect.htu.0 && p == expect.htu.1;
    if !crate::uri::htu_target(&parsed.htu).is_some_and(same_target) {
        return Err(step(Step::Htu));
    }
    let w = expect.iat;
    if parsed.iat.0 < w.now.saturating_sub(w.past) || parsed.iat.0 > w.now.saturating_add(w.future) {
        return Err(step(Step::Iat));
    }
    if let Some(token) = expect.token {
        if parsed.ath.as_deref() != Some(ath(token).as_str()) {
            return Err(step(Step::Ath));
        }
    }
    Ok(Checked { jkt, claims: parsed })
}
