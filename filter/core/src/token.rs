//! Access-token validation (SPEC §2): cheap checks first, the signature once, the result cached.

use missiongate_wire::claims::{is_safe_id, AccessTokenClaims, Audience, TYP_ACCESS_TOKEN};
use missiongate_wire::jose::{PureVerifier, Verifier};
use missiongate_wire::jws;
use std::collections::HashMap;
use std::rc::Rc;

use crate::authority::{self, Grant};
use crate::config::Config;
use crate::decision::{Denial, Reason};
use crate::keys::{KeyLookup, KeyStore};

/// What a verified token says, kept for its lifetime. Never holds the token itself.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// Index of the token issuer in the config.
    pub issuer: usize,
    /// Expiry.
    pub exp: i64,
    /// Audiences.
    pub aud: Vec<String>,
    /// Token id.
    pub jti: Option<String>,
    /// Subject.
    pub sub: Option<String>,
    /// Client.
    pub client_id: Option<String>,
    /// Token issuer string.
    pub iss: String,
    /// Mission id.
    pub mission_id: String,
    /// Index of the Mission state authority in the config.
    pub mission_issuer: usize,
    /// Mission issuer string.
    pub mission_issuer_name: String,
    /// Authority commitment, carried to evidence.
    pub authority_hash: Option<String>,
    /// Compiled Authority Set.
    pub grants: Vec<Grant>,
    /// DPoP key thumbprint the token is bound to.
    pub cnf_jkt: Option<String>,
}

/// Why verification did not finish.
#[derive(Debug)]
pub enum TokenError {
    /// Refused.
    Deny(Denial),
    /// The issuer's keys must be (re)fetched before a verdict is possible.
    NeedKeys {
        /// Issuer index.
        issuer: usize,
        /// Why, and the refusal that stands if no refetch can be made.
        why: KeysWanted,
    },
}

/// Why a token needs the issuer's keys (re)fetched.
#[derive(Debug)]
pub enum KeysWanted {
    /// No keys have been loaded yet: `keys_unavailable` if they cannot be.
    NotLoaded,
    /// Keys are loaded but the `kid` is unknown (a rotation): `unknown_key` if the refetch is not
    /// possible or does not bring it.
    UnknownKid,
    /// The key under this `kid` refused the token (a bad signature, or a key of another type than
    /// the `alg`): the issuer may have replaced the key under the same `kid` (the Mission drafts'
    /// reference authority does so on every restart). One refetch and a second verification;
    /// this refusal if that is not possible or changes nothing.
    Replaced(Denial),
}

fn deny(reason: Reason, detail: &str) -> TokenError {
    TokenError::Deny(Denial::new(reason, detail))
}

/// Verify a compact access token fully. `now` is Unix seconds.
pub fn verify(config: &Config, keys: &KeyStore, token: &str, now: i64) -> Result<VerifiedToken, TokenError> {
    verify_with(config, keys, token, now, &PureVerifier)
}

/// [`verify`] with the host's [`Verifier`] for the signature.
pub fn verify_with(
    config: &Config,
    keys: &KeyStore,
    token: &str,
    now: i64,
    verifier: &dyn Verifier,
) -> Result<VerifiedToken, TokenError> {
    if token.len() > config.max_token_bytes {
        return Err(deny(Reason::TokenTooLarge, "token exceeds the size limit"));
    }
    let policy = jws::Policy { typ: jws::Typ::OneOfIgnoreCase(&TYP_ACCESS_TOKEN), algs: &config.algs };
    let opened = jws::open(token, &policy).map_err(|step| match step {
        jws::Step::Typ => deny(Reason::WrongTyp, "token typ must be at+jwt"),
        jws::Step::Alg => deny(Reason::AlgNotAllowed, "token alg is not allowed"),
        jws::Step::Header => deny(Reason::TokenMalformed, "token header is not valid"),
        _ => deny(Reason::TokenMalformed, "token is not a compact JWS"),
    })?;
    let (header, alg) = (&opened.header, opened.alg);
    let payload = opened.payload().map_err(|_| deny(Reason::TokenMalformed, "token payload encoding"))?;
    let claims: AccessTokenClaims =
        serde_json::from_slice(&payload).map_err(|_| deny(Reason::TokenMalformed, "token claims are not valid"))?;
    // The jti is written to evidence: bounded visible ASCII only (no control characters).
    if claims.jti.as_deref().is_some_and(|j| !is_safe_id(j)) {
        return Err(deny(Reason::TokenMalformed, "token jti must be 1 to 256 visible ASCII characters"));
    }
    let issuer = match config.issuer_index.get(&claims.iss) {
        Some(&i) if config.issuers.get(i).is_some_and(|x| x.access_tokens) => i,
        _ => return Err(deny(Reason::UnknownIssuer, "token issuer is not trusted")),
    };
    let skew = config.clock_skew;
    let exp = claims.exp.ok_or_else(|| deny(Reason::TokenMalformed, "token has no exp"))?.0;
    if exp.saturating_add(skew) <= now {
        return Err(deny(Reason::TokenExpired, "token expired"));
    }
    if let Some(nbf) = claims.nbf {
        if nbf.0 > now.saturating_add(skew) {
            return Err(deny(Reason::TokenNotYetValid, "token nbf is in the future"));
        }
    }
    if let Some(iat) = claims.iat {
        if iat.0 > now.saturating_add(skew) {
            return Err(deny(Reason::TokenNotYetValid, "token iat is in the future"));
        }
    }
    if let Some(max) = config.max_token_lifetime {
        let start = claims.iat.or(claims.nbf).map(|d| d.0);
        match start {
            Some(s) if exp.saturating_sub(s) <= max => {}
            _ => return Err(deny(Reason::TokenLifetimeExceeded, "token lifetime exceeds the maximum")),
        }
    }
    let mission =
        claims.mission.as_ref().ok_or_else(|| deny(Reason::MissionClaimMissing, "token has no mission claim"))?;
    if mission.id.is_empty() {
        return Err(deny(Reason::MissionClaimMissing, "mission.id is empty"));
    }
    let mission_issuer_name = mission.effective_issuer().map_err(|m| deny(Reason::MissionClaimMissing, m))?;
    let mission_issuer = match config.issuer_index.get(mission_issuer_name) {
        Some(&i) if config.issuers.get(i).is_some_and(|x| x.mission_authority.is_some()) => i,
        _ => return Err(deny(Reason::UntrustedMissionIssuer, "mission issuer is not a trusted state authority")),
    };
    let cnf_jkt = match &claims.cnf {
        None => None,
        Some(c) if !c.other.is_empty() => {
            return Err(deny(Reason::UnsupportedConfirmation, "token cnf method is not supported"));
        }
        Some(c) => c.jkt.clone(),
    };
    // A refusal under a known key of a remote JWKS is retried once after a refetch (the key may have
    // been replaced under its kid); inline keys cannot change, so it is final for them.
    let replaced = |reason: Reason, detail: &str| {
        if KeyStore::is_remote(config, issuer) {
            TokenError::NeedKeys { issuer, why: KeysWanted::Replaced(Denial::new(reason, detail)) }
        } else {
            deny(reason, detail)
        }
    };
    let key = match keys.find(issuer, header.kid.as_deref(), alg) {
        KeyLookup::Found(k) => k,
        KeyLookup::WrongType => {
            return Err(replaced(Reason::AlgNotAllowed, "token alg does not match the type of the key under its kid"))
        }
        KeyLookup::Unknown => return Err(TokenError::NeedKeys { issuer, why: KeysWanted::UnknownKid }),
        KeyLookup::NotLoaded => return Err(TokenError::NeedKeys { issuer, why: KeysWanted::NotLoaded }),
    };
    opened.verify_with(key, verifier).map_err(|step| match step {
        jws::Step::SignatureEncoding => deny(Reason::TokenMalformed, "token signature encoding"),
        _ => replaced(Reason::BadSignature, "token signature is not valid"),
    })?;
    Ok(VerifiedToken {
        issuer,
        exp,
        aud: match claims.aud {
            Some(Audience::One(a)) => vec![a],
            Some(Audience::Many(v)) => v,
            None => Vec::new(),
        },
        jti: claims.jti,
        sub: claims.sub,
        client_id: claims.client_id,
        mission_id: mission.id.clone(),
        mission_issuer,
        mission_issuer_name: mission_issuer_name.to_owned(),
        authority_hash: mission.authority_hash.clone(),
        grants: authority::compile(&claims.authorization_details),
        cnf_jkt,
        iss: claims.iss,
    })
}

/// `ath` value for a token (RFC 9449 §4.2): base64url SHA-256 of the ASCII token.
pub fn ath(token: &str) -> String {
    missiongate_wire::dpop::ath(token)
}

/// Bounded cache of verified tokens, keyed by the token text.
#[derive(Debug, Default)]
pub struct TokenCache {
    map: HashMap<Box<str>, Rc<VerifiedToken>>,
    capacity: usize,
}

impl TokenCache {
    /// Empty cache holding at most `capacity` tokens (0 disables it).
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache { map: HashMap::new(), capacity }
    }
    /// A cached, unexpired token.
    pub fn get(&self, token: &str) -> Option<Rc<VerifiedToken>> {
        self.map.get(token).cloned()
    }
    /// Insert. When full, expired entries go first; if that frees less than an eighth of the
    /// capacity, arbitrary entries go too, down to seven eighths: the full scan is paid at most
    /// once per `capacity / 8` inserts, never on every insert of a full cache.
    pub fn insert(&mut self, token: &str, v: Rc<VerifiedToken>, now: i64, skew: i64) {
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(token) {
            self.map.retain(|_, t| t.exp.saturating_add(skew) > now);
            let target = self.capacity - self.capacity.div_ceil(8);
            if self.map.len() > target {
                let excess = self.map.len() - target;
                let victims: Vec<Box<str>> = self.map.keys().take(excess).cloned().collect();
                for k in victims {
                    self.map.remove(&k);
                }
            }
        }
        self.map.insert(token.into(), v);
    }
    /// Remove one token.
    pub fn remove(&mut self, token: &str) {
        self.map.remove(token);
    }
    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
