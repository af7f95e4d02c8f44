//! Per-issuer verification keys: inline or fetched from `jwks_uri`, with refresh, a rate-limited
//! refetch on an unknown `kid`, and fail-closed behaviour while nothing is loaded.

use missiongate_wire::jose::{Alg, JoseError, Jwk, VerifyingKey};

use crate::config::{Config, KeySource};
pub use crate::config::{MAX_JWKS_BYTES, MAX_JWKS_KEYS};
use crate::tables::has_tables;
pub use crate::tables::{within_table_budget, MAX_TABLES_PER_ISSUER};

fn same_key(a: &VerifyingKey, b: &VerifyingKey) -> bool {
    match (a, b) {
        (VerifyingKey::P256(x, _), VerifyingKey::P256(y, _)) => x == y,
        (VerifyingKey::Ed25519(x), VerifyingKey::Ed25519(y)) => x == y,
        (VerifyingKey::Rsa(x, a), VerifyingKey::Rsa(y, b)) => x == y && a == b,
        _ => false,
    }
}

/// A JWK Set whose entries are read one by one, so an entry of a type this gateway does not use
/// (or not even an object) is skipped rather than spoiling the set.
#[derive(serde::Deserialize)]
struct LooseJwkSet {
    keys: Vec<serde_json::Value>,
}

/// Keys of one issuer.
#[derive(Debug, Default)]
pub struct IssuerKeys {
    keys: Vec<(Option<String>, VerifyingKey)>,
    loaded: bool,
    fetched_at: i64,
    last_attempt: Option<i64>,
    /// A fetch is under way.
    pub in_flight: bool,
    max_bytes: usize,
    max_keys: usize,
    /// Entries of the last fetched document that were refused (`kid`, reason), for the log.
    refused: Vec<(Option<String>, &'static str)>,
}

/// Result of looking a key up.
#[derive(Debug)]
pub enum KeyLookup<'a> {
    /// The key to verify with.
    Found(&'a VerifyingKey),
    /// Keys are loaded, but none has this `kid` (or none fits without a `kid`).
    Unknown,
    /// A key has this `kid`, but it is of another type than the algorithm needs (an RS256 header
    /// naming an EC key, say): never verified with it (no algorithm confusion).
    WrongType,
    /// No keys have been loaded yet (remote JWKS not fetched, or every fetch failed).
    NotLoaded,
}

/// All issuers' keys, indexed like `Config::issuers`.
#[derive(Debug, Default)]
pub struct KeyStore {
    issuers: Vec<IssuerKeys>,
}

impl KeyStore {
    /// Inline keys are loaded at once; remote ones start empty.
    pub fn new(config: &Config) -> KeyStore {
        let issuers = config
            .issuers
            .iter()
            .map(|i| match &i.keys {
                KeySource::Inline(keys) => IssuerKeys { keys: keys.clone(), loaded: true, ..IssuerKeys::default() },
                KeySource::Remote { max_bytes, max_keys, .. } => {
                    IssuerKeys { max_bytes: *max_bytes, max_keys: *max_keys, ..IssuerKeys::default() }
                }
            })
            .collect();
        KeyStore { issuers }
    }

    /// Find the key for `kid` and `alg`. Without a `kid`, the single key of that algorithm is used.
    pub fn find(&self, issuer: usize, kid: Option<&str>, alg: Alg) -> KeyLookup<'_> {
        let Some(ik) = self.issuers.get(issuer) else { return KeyLookup::NotLoaded };
        if !ik.loaded {
            return KeyLookup::NotLoaded;
        }
        match kid {
            Some(kid) => {
                let mut same_kid = ik.keys.iter().filter(|(k, _)| k.as_deref() == Some(kid)).peekable();
                if same_kid.peek().is_none() {
                    return KeyLookup::Unknown;
                }
                same_kid.find(|(_, v)| v.accepts(alg)).map_or(KeyLookup::WrongType, |(_, v)| KeyLookup::Found(v))
            }
            None => {
                let mut it = ik.keys.iter().filter(|(_, v)| v.accepts(alg));
                match (it.next(), it.next()) {
                    (Some((_, v)), None) => KeyLookup::Found(v),
                    _ => KeyLookup::Unknown,
                }
            }
        }
    }

    /// True while a fetch for this issuer is under way.
    pub fn issuer_in_flight(&self, issuer: usize) -> bool {
        self.issuers.get(issuer).is_some_and(|k| k.in_flight)
    }

    /// True when the issuer's keys come from a `jwks_uri` (and so can be refetched).
    pub fn is_remote(config: &Config, issuer: usize) -> bool {
        config.issuers.get(issuer).is_some_and(|i| matches!(i.keys, KeySource::Remote { .. }))
    }

    /// The entries the last fetched document held but that were refused (`kid`, reason): an RSA key
    /// under 2048 bits, a private key, an unsupported type or curve, a malformed entry. Drained.
    pub fn take_refused(&mut self, issuer: usize) -> Vec<(Option<String>, &'static str)> {
        self.issuers.get_mut(issuer).map(|ik| std::mem::take(&mut ik.refused)).unwrap_or_default()
    }

    /// Number of keys held for `issuer`, and how many of them have precomputed tables.
    pub fn key_counts(&self, issuer: usize) -> (usize, usize) {
        self.issuers
            .get(issuer)
            .map_or((0, 0), |ik| (ik.keys.len(), ik.keys.iter().filter(|(_, k)| has_tables(k)).count()))
    }

    /// Mutable state of one issuer.
    pub fn issuer_mut(&mut self, issuer: usize) -> Option<&mut IssuerKeys> {
        self.issuers.get_mut(issuer)
    }

    /// True when a fetch may start now: remote source, none in flight, and the refetch interval
    /// since the last attempt has passed.
    pub fn may_fetch(&self, config: &Config, issuer: usize, now: i64) -> bool {
        let (Some(ik), Some(cfg)) = (self.issuers.get(issuer), config.issuers.get(issuer)) else { return false };
        let KeySource::Remote { min_refetch_seconds, .. } = &cfg.keys else { return false };
        if ik.in_flight {
            return false;
        }
        let min = i64::try_from(*min_refetch_seconds).unwrap_or(i64::MAX);
        ik.last_attempt.is_none_or(|t| now.saturating_sub(t) >= min)
    }

    /// True when the periodic refresh is due.
    pub fn refresh_due(&self, config: &Config, issuer: usize, now: i64) -> bool {
        let (Some(ik), Some(cfg)) = (self.issuers.get(issuer), config.issuers.get(issuer)) else { return false };
        let KeySource::Remote { refresh_seconds, .. } = &cfg.keys else { return false };
        if ik.in_flight {
            return false;
        }
        if !ik.loaded {
            // Retry an initial failure at the refetch pace.
            return self.may_fetch(config, issuer, now);
        }
        now.saturating_sub(ik.fetched_at) >= i64::try_from(*refresh_seconds).unwrap_or(i64::MAX)
    }

    /// Record that a fetch started.
    pub fn fetch_started(&mut self, issuer: usize, now: i64) {
        if let Some(ik) = self.issuers.get_mut(issuer) {
            ik.in_flight = true;
            ik.last_attempt = Some(now);
        }
    }

    /// Install a fetched JWKS. A bad document keeps the previous keys (and reports why): one over
    /// the issuer's size or key-count limit, not a JWK Set, or without a usable key. Entries this
    /// gateway cannot use (RSA under 2048 bits, private, other curves, malformed) are skipped and
    /// listed for [`KeyStore::take_refused`]; EC, OKP and RSA keys may be mixed.
    pub fn fetch_finished(
        &mut self,
        issuer: usize,
        status: Option<u16>,
        body: &[u8],
        now: i64,
    ) -> Result<usize, String> {
        let Some(ik) = self.issuers.get_mut(issuer) else { return Err("unknown issuer".into()) };
        ik.in_flight = false;
        match status {
            Some(200) => {}
            Some(s) => return Err(format!("JWKS fetch answered HTTP {s}")),
            None => return Err("JWKS fetch failed (no response)".into()),
        }
        if body.len() > ik.max_bytes {
            return Err(format!("JWKS document exceeds {} bytes", ik.max_bytes));
        }
        let set: LooseJwkSet = serde_json::from_slice(body).map_err(|_| "JWKS is not a JWK Set".to_owned())?;
        if set.keys.len() > ik.max_keys {
            return Err(format!("JWKS lists more than {} keys", ik.max_keys));
        }
        let mut refused = Vec::new();
        let mut keys = Vec::new();
        for entry in set.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(entry) else {
                refused.push((None, "not a JWK"));
                continue;
            };
            let v = match jwk.verifying_key() {
                Ok(v) => v,
                Err(JoseError::BadKey(why)) => {
                    refused.push((jwk.kid, why));
                    continue;
                }
                Err(_) => {
                    refused.push((jwk.kid, "unusable key"));
                    continue;
                }
            };
            let kid = jwk.kid;
            // Reuse the tables of a key we already hold; new ones get theirs within the budget.
            let known = ik.keys.iter().find(|(old_kid, old)| *old_kid == kid && same_key(old, &v));
            keys.push(match known {
                Some((_, old)) => (kid, old.clone()),
                None => (kid, v),
            });
        }
        ik.refused = refused;
        let keys = within_table_budget(keys);
        if keys.is_empty() {
            return Err("JWKS has no usable key".into());
        }
        let n = keys.len();
        ik.keys = keys;
        ik.loaded = true;
        ik.fetched_at = now;
        Ok(n)
    }
}
