//! Gateway authentication: who may ask the PDP for evaluations, fetch Mission Status and read the
//! state-event feed.
//!
//! Those three surfaces answer gateways only. A gateway presents `Authorization: Bearer <credential>`,
//! one of the credentials configured with `--gateway-credential` (several may be configured, so that
//! gateways can have their own and a credential can be rotated without downtime). The presented
//! value is hashed and compared with every configured hash in constant time (`subtle`), all of them
//! always, so neither the match nor its position leaks through timing.
//!
//! `--dev-trust-loopback` additionally lets callers on a loopback address in without a credential.
//! It exists for the demo and local development only: behind a same-host reverse proxy every
//! request comes from loopback, so the flag would make these surfaces public.
//!
//! Each authenticated caller (a credential, or the loopback peer address) may hold a bounded number
//! of long polls on the event feed at once; beyond it the poll is refused with 429 and `Retry-After`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::util::sha256;

/// Who the caller is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// The gateway that presented the configured credential at this index.
    Credential(usize),
    /// A loopback peer let in by `--dev-trust-loopback` (its address, port excluded).
    Loopback(std::net::IpAddr),
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Credential(i) => write!(f, "gateway-credential#{i}"),
            Caller::Loopback(ip) => write!(f, "loopback:{ip}"),
        }
    }
}

/// Why a caller was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No credential (and not a trusted loopback peer).
    Missing,
    /// A credential that matches none configured, or an unusable `Authorization` header.
    Invalid,
}

/// The gateway credentials and the long-poll slots.
#[derive(Debug)]
pub struct GatewayAuth {
    credentials: Vec<[u8; 32]>,
    trust_loopback: bool,
    max_long_polls: usize,
    polls: Arc<Mutex<HashMap<Caller, usize>>>,
}

/// A held long-poll slot; dropping it frees the slot.
#[derive(Debug)]
pub struct PollSlot {
    caller: Caller,
    polls: Arc<Mutex<HashMap<Caller, usize>>>,
}

impl Drop for PollSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.polls.lock() {
            if let Some(n) = m.get_mut(&self.caller) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.caller);
                }
            }
        }
    }
}

impl GatewayAuth {
    /// Credentials as given (their SHA-256 is kept, not the values).
    pub fn new(credentials: &[String], trust_loopback: bool, max_long_polls: usize) -> GatewayAuth {
        GatewayAuth {
            credentials: credentials.iter().map(|c| sha256(c.as_bytes())).collect(),
            trust_loopback,
            max_long_polls: max_long_polls.max(1),
            polls: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether any gateway could ever be let in.
    pub fn is_configured(&self) -> bool {
        !self.credentials.is_empty() || self.trust_loopback
    }

    /// Authenticate a request: a presented credential must match; without one, only a loopback peer
    /// under `--dev-trust-loopback` is let in.
    pub fn check(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<Caller, Refusal> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let presented = match (values.next(), values.next()) {
            (None, _) => None,
            (Some(v), None) => {
                let v = v.to_str().map_err(|_| Refusal::Invalid)?;
                let (scheme, token) = v.split_once(' ').ok_or(Refusal::Invalid)?;
                if !scheme.eq_ignore_ascii_case("bearer") {
                    return Err(Refusal::Invalid);
                }
                Some(token.trim())
            }
            _ => return Err(Refusal::Invalid),
        };
        match presented {
            Some(token) => self.match_credential(token).map(Caller::Credential).ok_or(Refusal::Invalid),
            None => match peer {
                Some(p) if self.trust_loopback && p.ip().is_loopback() => Ok(Caller::Loopback(p.ip())),
                _ => Err(Refusal::Missing),
            },
        }
    }

    /// The index of the credential `token` is, compared in constant time with every configured one.
    fn match_credential(&self, token: &str) -> Option<usize> {
        let got = sha256(token.as_bytes());
        let mut found: Option<usize> = None;
        for (i, expected) in self.credentials.iter().enumerate() {
            let eq = bool::from(got.ct_eq(expected));
            // No early exit: every configured credential is compared.
            if eq && found.is_none() {
                found = Some(i);
            }
        }
        found
    }

    /// Take a long-poll slot for `caller`, or `None` when it already holds as many as allowed.
    pub fn long_poll(&self, caller: &Caller) -> Option<PollSlot> {
        let mut m = self.polls.lock().ok()?;
        let n = m.entry(caller.clone()).or_insert(0);
        if *n >= self.max_long_polls {
            return None;
        }
        *n += 1;
        Some(PollSlot { caller: caller.clone(), polls: Arc::clone(&self.polls) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth_header(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn credentials_loopback_and_refusals() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let g = GatewayAuth::new(&["first-credential".into(), "second-credential".into()], false, 2);
        assert_eq!(g.check(&auth_header("Bearer second-credential"), Some(remote)), Ok(Caller::Credential(1)));
        assert_eq!(g.check(&auth_header("bearer first-credential"), Some(remote)), Ok(Caller::Credential(0)));
        assert_eq!(g.check(&auth_header("Bearer nope"), Some(local)), Err(Refusal::Invalid));
        assert_eq!(g.check(&auth_header("Basic Zmlyc3Q="), Some(local)), Err(Refusal::Invalid));
        // Without the development flag, loopback is nobody special.
        assert_eq!(g.check(&HeaderMap::new(), Some(local)), Err(Refusal::Missing));
        let dev = GatewayAuth::new(&[], true, 2);
        assert_eq!(dev.check(&HeaderMap::new(), Some(local)), Ok(Caller::Loopback(local.ip())));
        assert_eq!(dev.check(&HeaderMap::new(), Some(remote)), Err(Refusal::Missing));
        // A wrong credential is refused even from loopback.
        assert_eq!(dev.check(&auth_header("Bearer guess"), Some(local)), Err(Refusal::Invalid));
        assert!(!GatewayAuth::new(&[], false, 1).is_configured());
    }

    #[test]
    fn long_poll_slots_are_bounded_per_caller_and_freed() {
        let g = GatewayAuth::new(&["c".into()], false, 2);
        let a = Caller::Credential(0);
        let b = Caller::Loopback("127.0.0.1".parse().unwrap());
        let s1 = g.long_poll(&a).unwrap();
        let _s2 = g.long_poll(&a).unwrap();
        assert!(g.long_poll(&a).is_none());
        assert!(g.long_poll(&b).is_some(), "another caller has its own slots");
        drop(s1);
        assert!(g.long_poll(&a).is_some());
    }
}
