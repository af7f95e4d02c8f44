//! The one JWS check (SPEC §2, §3): `typ`, `alg` allow-list, key by `kid`, signature, payload.
//!
//! Every signed object the filter and the portal verify (access tokens, Mission Status and event
//! answers, the portal's own binding tokens) goes through [`open`] and [`Opened::verify`] (or
//! [`verify`], which runs them in order). Each caller keeps its own policy: which `typ`, which
//! algorithms, where keys come from, and how a refused step is reported.

use crate::jose::{Alg, Compact, Header, PureVerifier, Verifier, VerifyingKey};

/// Every algorithm missiongate knows (all asymmetric: `none` and HMAC never parse).
pub const ALL_ALGS: [Alg; 4] = [Alg::Es256, Alg::EdDsa, Alg::Rs256, Alg::Ps256];

/// Which `typ` header a caller accepts.
#[derive(Debug, Clone, Copy)]
pub enum Typ<'a> {
    /// Any `typ`, or none.
    Any,
    /// Exactly this value.
    Exact(&'a str),
    /// One of these values, ASCII case-insensitively (`at+jwt`, `application/at+jwt`).
    OneOfIgnoreCase(&'a [&'a str]),
}

impl Typ<'_> {
    /// True when `typ` passes.
    pub fn accepts(&self, typ: Option<&str>) -> bool {
        match *self {
            Typ::Any => true,
            Typ::Exact(want) => typ == Some(want),
            Typ::OneOfIgnoreCase(list) => typ.is_some_and(|t| list.iter().any(|a| a.eq_ignore_ascii_case(t))),
        }
    }
}

/// A caller's policy: the `typ` and the algorithms it accepts.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// Accepted `typ`.
    pub typ: Typ<'a>,
    /// Accepted algorithms.
    pub algs: &'a [Alg],
}

/// The step of the check that refused. Callers map each to their own reason and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not a compact JWS.
    NotCompact,
    /// The header does not decode or parse (or carries `crit`).
    Header,
    /// `typ` is not the caller's.
    Typ,
    /// `alg` is unknown or not in the caller's list.
    Alg,
    /// The payload does not decode.
    PayloadEncoding,
    /// The signature does not decode.
    SignatureEncoding,
    /// The signature does not verify under the key (or the key is of another type than `alg`).
    Signature,
}

/// A JWS whose header passed the caller's policy; the signature is not checked yet.
#[derive(Debug, Clone)]
pub struct Opened<'t> {
    parts: Compact<'t>,
    /// The parsed header.
    pub header: Header,
    /// The accepted algorithm.
    pub alg: Alg,
}

/// Split `token`, parse its header, check `typ` and `alg` against `policy`.
pub fn open<'t>(token: &'t str, policy: &Policy<'_>) -> Result<Opened<'t>, Step> {
    let parts = Compact::split(token).map_err(|_| Step::NotCompact)?;
    let header = parts.header().map_err(|_| Step::Header)?;
    if !policy.typ.accepts(header.typ.as_deref()) {
        return Err(Step::Typ);
    }
    let alg = match Alg::from_name(&header.alg) {
        Some(a) if policy.algs.contains(&a) => a,
        _ => return Err(Step::Alg),
    };
    Ok(Opened { parts, header, alg })
}

impl Opened<'_> {
    /// The decoded payload bytes (not yet authenticated unless [`Opened::verify`] passed).
    pub fn payload(&self) -> Result<Vec<u8>, Step> {
        self.parts.payload_bytes().map_err(|_| Step::PayloadEncoding)
    }

    /// Check the signature with `key` (found by the caller, by `kid`).
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), Step> {
        self.verify_with(key, &PureVerifier)
    }

    /// [`Opened::verify`] with the caller's [`Verifier`].
    pub fn verify_with(&self, key: &VerifyingKey, verifier: &dyn Verifier) -> Result<(), Step> {
        let sig = self.parts.signature_bytes().map_err(|_| Step::SignatureEncoding)?;
        verifier.verify(key, self.alg, self.parts.signing_input.as_bytes(), &sig).map_err(|_| Step::Signature)
    }
}

/// Why [`verify`] refused: a step of the check, or the caller's key lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal<E> {
    /// A step of the check.
    Step(Step),
    /// The key lookup refused.
    Key(E),
}

/// The whole check in order: [`open`], the key by `kid` from `key`, the signature, the payload.
pub fn verify<'k, E>(
    token: &str,
    policy: &Policy<'_>,
    key: impl FnOnce(&Header, Alg) -> Result<&'k VerifyingKey, E>,
) -> Result<(Header, Vec<u8>), Refusal<E>> {
    verify_with(token, policy, key, &PureVerifier)
}

/// [`verify`] with the caller's [`Verifier`].
pub fn verify_with<'k, E>(
    token: &str,
    policy: &Policy<'_>,
    key: impl FnOnce(&Header, Alg) -> Result<&'k VerifyingKey, E>,
    verifier: &dyn Verifier,
) -> Result<(Header, Vec<u8>), Refusal<E>> {
    let opened = open(token, policy).map_err(Refusal::Step)?;
    let k = key(&opened.header, opened.alg).map_err(Refusal::Key)?;
    opened.verify_with(k, verifier).map_err(Refusal::Step)?;
    let payload = opened.payload().map_err(Refusal::Step)?;
    Ok((opened.header, payload))
}
