//! Per-issuer verification keys: inline or fetched from `jwks_uri`, with refresh, a rate-limited
//! refetch on an unknown `kid`, and fail-closed behaviour while nothing is loaded.

use missiongate_wire::jose::{Alg, JwkSet, VerifyingKey};

use crate::config::{Config, KeySource};

fn same_key(a: &VerifyingKey, b: &VerifyingKey) -> bool {
    match (a, b) {
        (VerifyingKey::P256(x, _), VerifyingKey::P256(y, _)) => x == y,
        (VerifyingKey::Ed25519(x), VerifyingKey::Ed25519(y)) => x == y,
        _ => false,
    }
}

/// Longest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Keys of one issuer.
#[derive(Debug, Default)]
pub struct IssuerKeys {
    keys: Vec<(Option<String>, VerifyingKey)>,
    loaded: bool,
    fetched_at: i64,
    last_attempt: Option<i64>,
    /// A fetch is under way.
    pub in_flight: bool,
}

/// Result of looking a key up.
#[derive(Debug)]
pub enum KeyLookup<'a> {
    /// The key to verify with.
    Found(&'a VerifyingKey),
    /// Keys are loaded, but none has this `kid` (or none fits without a `kid`).
    Unknown,
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
                KeySource::Remote { .. } => IssuerKeys::default(),
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
            Some(kid) => ik
                .keys
                .iter()
                .find(|(k, v)| k.as_deref() == Some(kid) && v.alg() == alg)
                .map_or(KeyLookup::Unknown, |(_, v)| KeyLookup::Found(v)),
            None => {
                let mut it = ik.keys.iter().filter(|(_, v)| v.alg() == alg);
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

    /// Install a fetched JWKS. A bad document keeps the previous keys (and reports why).
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
        if body.len() > MAX_JWKS_BYTES {
            return Err("JWKS document too large".into());
        }
        let set: JwkSet = serde_json::from_slice(body).map_err(|_| "JWKS is not a JWK Set".to_owned())?;
        // Keys we cannot use (RSA, private, other curves) are skipped, not fatal.
        let keys: Vec<_> = set
            .keys
            .iter()
            .filter_map(|k| k.verifying_key().ok().map(|v| (k.kid.clone(), v)))
            .map(|(kid, v)| {
                // Reuse the tables of a key we already hold; build them for a new one.
                let known = ik.keys.iter().find(|(old_kid, old)| *old_kid == kid && same_key(old, &v));
                match known {
                    Some((_, old)) => (kid, old.clone()),
                    None => (kid, v.precompute()),
                }
            })
            .collect();
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
