//! The decision engine: one per Wasm VM (one per Envoy worker). The host layer feeds it requests and
//! callout answers; it answers with a decision or with what it needs fetched first.

use missiongate_wire::problem::ProblemMission;
use std::rc::Rc;

use crate::authority::{self, AuthorityMatch};
use crate::config::{Config, KeySource, Upstream};
use crate::decision::{Denial, Evidence, Reason, Response, ALL_REASONS};
use crate::dpop;
use crate::keys::KeyStore;
use crate::mission::{self, AnswerError, MissionCache, MissionView};
use crate::token::{self, TokenCache, TokenError, VerifiedToken};
use crate::uri;

/// The `Authorization` header(s) of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authz<'a> {
    /// None.
    Missing,
    /// More than one: malformed.
    Multiple,
    /// Exactly one.
    One(&'a str),
}

/// What the engine reads of a request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `:method`.
    pub method: &'a str,
    /// `:scheme`.
    pub scheme: &'a str,
    /// `:authority`.
    pub authority: &'a str,
    /// `:path` (with query).
    pub path: &'a str,
    /// `Authorization`.
    pub authorization: Authz<'a>,
    /// `DPoP` header, when exactly one was sent.
    pub dpop: Option<&'a str>,
    /// Number of `DPoP` headers.
    pub dpop_count: usize,
}

/// Replay memory shared by every worker (Envoy shared data in the filter, a map in tests).
pub trait ReplayGuard {
    /// Remember `key` until `until`; `Ok(false)` when it was already remembered (a replay),
    /// `Err` when the store could not be used (the request is then refused).
    fn remember(&mut self, key: &str, until: i64, now: i64) -> Result<bool, String>;
}

/// Which fetches have already been tried for the request being decided (so a decision terminates).
#[derive(Debug, Default, Clone, Copy)]
pub struct Attempts {
    /// Keys were (re)fetched for it.
    pub keys: bool,
    /// Mission Status was fetched for it.
    pub status: bool,
}

/// What the engine needs before it can decide.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Need {
    /// Fetch the issuer's JWKS.
    Keys(usize),
    /// Fetch Mission Status.
    Status(usize, String),
}

/// Result of a decision step.
#[derive(Debug)]
pub enum Outcome {
    /// Forward the request.
    Allow(Evidence),
    /// Answer locally.
    Deny(Response, Evidence),
    /// Fetch something, then decide again.
    Need(Need),
}

/// An HTTP callout for the host to dispatch.
#[derive(Debug, Clone)]
pub struct Callout {
    /// Envoy cluster.
    pub cluster: String,
    /// Pseudo and regular headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
    /// Timeout.
    pub timeout_ms: u64,
}

/// Counters that are not decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Stat {
    TokenCacheHit,
    TokenCacheMiss,
    MissionCacheHit,
    MissionCacheMiss,
    JwksFetchOk,
    JwksFetchFailed,
    StatusFetchOk,
    StatusFetchFailed,
    EventsPollOk,
    EventsPollFailed,
    EventsApplied,
    EventsRejected,
}

/// Every stat, for counter definition.
pub const ALL_STATS: [Stat; 12] = [
    Stat::TokenCacheHit,
    Stat::TokenCacheMiss,
    Stat::MissionCacheHit,
    Stat::MissionCacheMiss,
    Stat::JwksFetchOk,
    Stat::JwksFetchFailed,
    Stat::StatusFetchOk,
    Stat::StatusFetchFailed,
    Stat::EventsPollOk,
    Stat::EventsPollFailed,
    Stat::EventsApplied,
    Stat::EventsRejected,
];

impl Stat {
    /// Counter name suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            Stat::TokenCacheHit => "token_cache.hit",
            Stat::TokenCacheMiss => "token_cache.miss",
            Stat::MissionCacheHit => "mission_cache.hit",
            Stat::MissionCacheMiss => "mission_cache.miss",
            Stat::JwksFetchOk => "callout.jwks.ok",
            Stat::JwksFetchFailed => "callout.jwks.failed",
            Stat::StatusFetchOk => "callout.status.ok",
            Stat::StatusFetchFailed => "callout.status.failed",
            Stat::EventsPollOk => "callout.events.ok",
            Stat::EventsPollFailed => "callout.events.failed",
            Stat::EventsApplied => "events.applied",
            Stat::EventsRejected => "events.rejected",
        }
    }
}

/// The per-VM engine.
#[derive(Debug)]
pub struct Engine {
    /// Validated configuration.
    pub config: Rc<Config>,
    /// Verification keys.
    pub keys: KeyStore,
    /// Verified tokens.
    pub tokens: TokenCache,
    /// Mission state.
    pub missions: MissionCache,
    decisions: [u64; ALL_REASONS.len()],
    stats: [u64; ALL_STATS.len()],
    id_prefix: String,
    seq: u64,
    nonce_seed: [u8; 32],
    dpop_algs: Option<String>,
}

impl Engine {
    /// A new engine. `seed` is 32 random bytes from the host; it makes decision ids and nonces
    /// unpredictable.
    pub fn new(config: Rc<Config>, seed: [u8; 32]) -> Engine {
        let keys = KeyStore::new(&config);
        let tokens = TokenCache::new(config.token_cache_size);
        let id_prefix = missiongate_wire::b64::encode(seed.get(..9).unwrap_or_default());
        let dpop_algs = config
            .dpop
            .enabled
            .then(|| config.dpop.algs.iter().map(|a| a.name()).collect::<Vec<_>>().join(" "));
        Engine {
            config,
            keys,
            tokens,
            missions: MissionCache::default(),
            decisions: [0; ALL_REASONS.len()],
            stats: [0; ALL_STATS.len()],
            id_prefix,
            seq: 0,
            nonce_seed: seed,
            dpop_algs,
        }
    }

    fn stat(&mut self, s: Stat) {
        if let Some(i) = ALL_STATS.iter().position(|x| *x == s) {
            if let Some(c) = self.stats.get_mut(i) {
                *c += 1;
            }
        }
    }

    /// Counter deltas since the last call: (name suffix, delta), only non-zero ones.
    pub fn take_counters(&mut self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for (r, c) in ALL_REASONS.iter().zip(self.decisions.iter_mut()) {
            if *c > 0 {
                out.push((format!("decision.{}", r.as_str()), *c));
                *c = 0;
            }
        }
        for (s, c) in ALL_STATS.iter().zip(self.stats.iter_mut()) {
            if *c > 0 {
                out.push((s.as_str().to_owned(), *c));
                *c = 0;
            }
        }
        out
    }

    fn next_id(&mut self) -> String {
        self.seq += 1;
        format!("{}-{}", self.id_prefix, self.seq)
    }

    /// A fresh unpredictable nonce.
    pub fn nonce(&mut self) -> String {
        use sha2::{Digest, Sha256};
        self.seq += 1;
        let mut h = Sha256::new();
        h.update(self.nonce_seed);
        h.update(self.seq.to_le_bytes());
        missiongate_wire::b64::encode(h.finalize().get(..18).unwrap_or_default())
    }

    /// Decide on a request.
    pub fn decide(&mut self, req: &Request<'_>, now: i64, attempts: Attempts, replay: &mut dyn ReplayGuard) -> Outcome {
        let mut ev = Evidence { at: now, ..Evidence::default() };
        match self.decide_inner(req, now, attempts, replay, &mut ev) {
            Ok(()) => {
                ev.decision_id = self.next_id();
                ev.decision = "allow";
                ev.reason = Reason::Allowed.as_str();
                ev.status = 200;
                self.count(Reason::Allowed);
                Outcome::Allow(ev)
            }
            Err(Step::Need(n)) => Outcome::Need(n),
            Err(Step::Deny(d)) => {
                ev.decision_id = self.next_id();
                ev.decision = "deny";
                ev.reason = d.reason.as_str();
                ev.status = d.reason.status();
                self.count(d.reason);
                let resp = d.render(&self.config.realm, self.dpop_algs.as_deref(), &ev.decision_id);
                Outcome::Deny(resp, ev)
            }
        }
    }

    fn count(&mut self, r: Reason) {
        if let Some(i) = ALL_REASONS.iter().position(|x| *x == r) {
            if let Some(c) = self.decisions.get_mut(i) {
                *c += 1;
            }
        }
    }

    fn decide_inner(&mut self, req: &Request<'_>, now: i64, attempts: Attempts, replay: &mut dyn ReplayGuard, ev: &mut Evidence) -> Result<(), Step> {
        let config = Rc::clone(&self.config);
        let dest = config
            .destination(req.authority, req.scheme)
            .ok_or_else(|| Step::deny(Reason::MalformedRequest, "request authority is not a valid host"))?;
        ev.destination = Some(dest.origin().to_owned());
        let path = uri::normalize_path(req.path).ok_or_else(|| Step::deny(Reason::MalformedRequest, "request path is malformed"))?;
        let action = authority::action_id(dest.operations(), req.method, &path);
        ev.action = Some(action.clone());

        // Credentials.
        let header = match req.authorization {
            Authz::Missing => return Err(Step::deny(Reason::NoCredentials, "an access token is required")),
            Authz::Multiple => return Err(Step::deny(Reason::MalformedRequest, "more than one Authorization header")),
            // Envoy joins repeated Authorization headers with a comma, which no token contains.
            Authz::One(h) if h.contains(',') => {
                return Err(Step::deny(Reason::MalformedRequest, "more than one Authorization header"))
            }
            Authz::One(h) => h,
        };
        let (scheme, token) = match header.trim().split_once(' ') {
            Some((s, t)) => (s, t.trim()),
            None => return Err(Step::deny(Reason::NoCredentials, "Authorization must use the Bearer or DPoP scheme")),
        };
        let is_dpop = if scheme.eq_ignore_ascii_case("bearer") {
            false
        } else if scheme.eq_ignore_ascii_case("dpop") && config.dpop.enabled {
            true
        } else {
            return Err(Step::deny(Reason::NoCredentials, "Authorization must use the Bearer or DPoP scheme"));
        };
        if token.len() > config.max_token_bytes {
            return Err(Step::deny(Reason::TokenTooLarge, "token exceeds the size limit"));
        }

        // Token: cache, else full verification.
        let vt: Rc<VerifiedToken> = match self.tokens.get(token) {
            Some(t) => {
                self.stat(Stat::TokenCacheHit);
                t
            }
            None => {
                self.stat(Stat::TokenCacheMiss);
                match token::verify(&config, &self.keys, token, now) {
                    Ok(v) => {
                        let v = Rc::new(v);
                        self.tokens.insert(token, Rc::clone(&v), now, config.clock_skew);
                        v
                    }
                    Err(TokenError::Deny(d)) => return Err(Step::Deny(d)),
                    Err(TokenError::NeedKeys { issuer, unknown_kid }) => {
                        if !attempts.keys && self.keys.may_fetch(&config, issuer, now) {
                            return Err(Step::Need(Need::Keys(issuer)));
                        }
                        return Err(if unknown_kid {
                            Step::deny(Reason::UnknownKey, "token kid is not in the issuer's key set")
                        } else {
                            let mut d = Denial::new(Reason::KeysUnavailable, "the issuer's keys could not be loaded");
                            d.retry_after = Some(1);
                            Step::Deny(d)
                        });
                    }
                }
            }
        };
        ev.mission_id = Some(vt.mission_id.clone());
        ev.mission_issuer = Some(vt.mission_issuer_name.clone());
        ev.authority_hash = vt.authority_hash.clone();
        ev.jti = vt.jti.clone();
        if vt.exp.saturating_add(config.clock_skew) <= now {
            self.tokens.remove(token);
            return Err(Step::deny(Reason::TokenExpired, "token expired"));
        }
        if !vt.aud.iter().any(|a| a == dest.audience()) {
            return Err(Step::deny(Reason::WrongAudience, "token audience does not include this destination"));
        }

        // Sender constraint.
        let proof = match (&vt.cnf_jkt, is_dpop) {
            (Some(_), false) => return Err(Step::deny(Reason::DpopBoundAsBearer, "DPoP-bound token presented as Bearer")),
            (None, true) => return Err(Step::deny(Reason::TokenMalformed, "DPoP scheme used with a token that is not DPoP-bound")),
            (None, false) => None,
            (Some(jkt), true) => {
                let p = match (req.dpop_count, req.dpop) {
                    (1, Some(p)) => p,
                    (0, _) => return Err(Step::deny(Reason::InvalidDpopProof, "DPoP proof missing")),
                    _ => return Err(Step::deny(Reason::InvalidDpopProof, "exactly one DPoP header is required")),
                };
                let bound = dpop::Bound { method: req.method, origin: dest.origin(), path: &path, token, jkt };
                Some(dpop::check(&config.dpop, p, &bound, now).map_err(Step::Deny)?)
            }
        };

        // Mission state.
        match self.missions.view(vt.mission_issuer, &vt.mission_id, now) {
            MissionView::Active => self.stat(Stat::MissionCacheHit),
            MissionView::Inactive(state) => {
                self.stat(Stat::MissionCacheHit);
                let mut d = Denial::new(Reason::MissionInactive, format!("mission is {state}"));
                d.mission = Some(ProblemMission { id: vt.mission_id.clone(), state: Some(state.as_str().to_owned()) });
                return Err(Step::Deny(d));
            }
            MissionView::Unknown => {
                let mut d = Denial::new(Reason::MissionUnknown, "the state authority does not know this mission");
                d.mission = Some(ProblemMission { id: vt.mission_id.clone(), state: Some("unknown".to_owned()) });
                return Err(Step::Deny(d));
            }
            MissionView::NeedFetch if !attempts.status => {
                self.stat(Stat::MissionCacheMiss);
                return Err(Step::Need(Need::Status(vt.mission_issuer, vt.mission_id.clone())));
            }
            MissionView::NeedFetch | MissionView::Unavailable => {
                let mut d = Denial::new(Reason::AuthorityUnavailable, "mission state could not be established");
                d.retry_after = Some(self.retry_after(vt.mission_issuer));
                d.mission = Some(ProblemMission { id: vt.mission_id.clone(), state: None });
                return Err(Step::Deny(d));
            }
        }

        // Authority.
        match authority::check(&vt.grants, dest.origin(), &path, &action) {
            AuthorityMatch::Permit => {}
            AuthorityMatch::Unenforceable => {
                return Err(Step::deny(Reason::ConstraintUnrecognized, "the authority entry has a constraint this gateway cannot enforce"))
            }
            AuthorityMatch::Outside => {
                return Err(Step::deny(Reason::InsufficientAuthority, "the request is outside the mission's authority"))
            }
        }

        // Last: a DPoP proof is single-use across every worker.
        if let Some(p) = proof {
            match replay.remember(&p.replay_key, p.remember_until, now) {
                Ok(true) => {}
                Ok(false) => return Err(Step::deny(Reason::DpopReplay, "DPoP proof jti was already used")),
                Err(_) => {
                    let mut d = Denial::new(Reason::AuthorityUnavailable, "DPoP replay store unavailable");
                    d.retry_after = Some(1);
                    return Err(Step::Deny(d));
                }
            }
        }
        Ok(())
    }

    fn retry_after(&self, issuer: usize) -> u32 {
        self.config
            .issuers
            .get(issuer)
            .and_then(|i| i.mission_authority.as_ref())
            .map_or(1, |m| m.retry_after_seconds)
    }

    // ------------------------------------------------------------------ callouts --------------

    fn callout(up: &Upstream, method: &str, content_type: Option<&str>, body: Vec<u8>, credential: Option<&str>) -> Callout {
        let mut headers = vec![
            (":method".to_owned(), method.to_owned()),
            (":path".to_owned(), up.path.clone()),
            (":authority".to_owned(), up.authority.clone()),
            ("accept".to_owned(), "application/json, application/jwt".to_owned()),
        ];
        if let Some(ct) = content_type {
            headers.push(("content-type".to_owned(), ct.to_owned()));
        }
        if let Some(c) = credential {
            headers.push(("authorization".to_owned(), c.to_owned()));
        }
        Callout { cluster: up.cluster.clone(), headers, body, timeout_ms: up.timeout_ms }
    }

    /// Start a JWKS fetch for `issuer` (None when it has no remote source).
    pub fn jwks_callout(&mut self, issuer: usize, now: i64) -> Option<Callout> {
        let KeySource::Remote { upstream, .. } = &self.config.issuers.get(issuer)?.keys else { return None };
        let c = Self::callout(upstream, "GET", None, Vec::new(), None);
        self.keys.fetch_started(issuer, now);
        Some(c)
    }

    /// A JWKS answer (status `None` = the callout failed).
    pub fn on_jwks(&mut self, issuer: usize, status: Option<u16>, body: &[u8], now: i64) -> Result<usize, String> {
        let r = self.keys.fetch_finished(issuer, status, body, now);
        self.stat(if r.is_ok() { Stat::JwksFetchOk } else { Stat::JwksFetchFailed });
        r
    }

    /// Issuers whose JWKS should be fetched now (initial load and periodic refresh).
    pub fn jwks_due(&self, now: i64) -> Vec<usize> {
        (0..self.config.issuers.len()).filter(|&i| self.keys.refresh_due(&self.config, i, now)).collect()
    }

    /// A Mission Status request; returns the callout and the nonce to check the answer against.
    pub fn status_callout(&mut self, issuer: usize, mission_id: &str) -> Option<(Callout, String)> {
        let config = Rc::clone(&self.config);
        let ma = config.issuers.get(issuer)?.mission_authority.as_ref()?;
        let nonce = self.nonce();
        let body = mission::status_request_body(mission_id, &ma.audience, &nonce);
        let c = Self::callout(&ma.status, "POST", Some("application/x-www-form-urlencoded"), body, ma.credential.as_deref());
        Some((c, nonce))
    }

    /// A Mission Status answer. Returns an issuer whose keys should be refetched, if the answer was
    /// signed by a key not yet known.
    pub fn on_status(&mut self, issuer: usize, mission_id: &str, nonce: &str, status: Option<u16>, body: &[u8], now: i64) -> Option<usize> {
        match status {
            Some(200) => match mission::verify_status(&self.config, &self.keys, issuer, body, mission_id, nonce, now) {
                Ok(v) => {
                    self.stat(Stat::StatusFetchOk);
                    self.missions.put_status(issuer, v);
                    None
                }
                Err(e) => {
                    self.stat(Stat::StatusFetchFailed);
                    self.missions.put_failure(issuer, mission_id, now);
                    (e == AnswerError::UnknownKey && self.keys.may_fetch(&self.config, issuer, now)).then_some(issuer)
                }
            },
            Some(404) => {
                self.stat(Stat::StatusFetchOk);
                self.missions.put_unknown(issuer, mission_id, now);
                None
            }
            _ => {
                self.stat(Stat::StatusFetchFailed);
                self.missions.put_failure(issuer, mission_id, now);
                None
            }
        }
    }

    /// Issuers with an event feed.
    pub fn event_issuers(&self) -> Vec<usize> {
        (0..self.config.issuers.len())
            .filter(|&i| self.config.issuers.get(i).and_then(|x| x.mission_authority.as_ref()).is_some_and(|m| m.events.is_some()))
            .collect()
    }

    /// The next poll of `issuer`'s event feed.
    pub fn events_callout(&self, issuer: usize, return_immediately: bool) -> Option<Callout> {
        let ma = self.config.issuers.get(issuer)?.mission_authority.as_ref()?;
        let up = ma.events.as_ref()?;
        let body = mission::poll_request_body(self.missions.event_cursor.get(&issuer).map(String::as_str), return_immediately);
        let mut c = Self::callout(up, "POST", Some("application/json"), body, ma.credential.as_deref());
        // A long poll is held by the authority; give the callout room beyond the configured timeout.
        if !return_immediately {
            c.timeout_ms = c.timeout_ms.max(30_000);
        }
        Some(c)
    }

    /// An event-feed answer. Returns (events applied, poll again at once, keys to refetch).
    pub fn on_events(&mut self, issuer: usize, status: Option<u16>, body: &[u8], now: i64) -> (usize, bool, Option<usize>) {
        if status != Some(200) {
            self.stat(Stat::EventsPollFailed);
            return (0, false, None);
        }
        match mission::verify_events(&self.config, &self.keys, issuer, body) {
            Ok((events, rejected, more)) => {
                self.stat(Stat::EventsPollOk);
                for _ in 0..rejected {
                    self.stat(Stat::EventsRejected);
                }
                let mut applied = 0;
                for e in events {
                    if self.missions.apply_event(issuer, &e.id, e.state, e.version) {
                        applied += 1;
                        self.stat(Stat::EventsApplied);
                    }
                    let newer = match self.missions.event_cursor.get(&issuer) {
                        Some(c) => e.jti.parse::<u64>().ok() > c.parse::<u64>().ok(),
                        None => true,
                    };
                    if newer {
                        self.missions.event_cursor.insert(issuer, e.jti);
                    }
                }
                let _ = now;
                (applied, more, None)
            }
            Err(AnswerError::UnknownKey) => {
                self.stat(Stat::EventsPollFailed);
                (0, false, self.keys.may_fetch(&self.config, issuer, now).then_some(issuer))
            }
            Err(_) => {
                self.stat(Stat::EventsPollFailed);
                (0, false, None)
            }
        }
    }

    /// Periodic housekeeping.
    pub fn sweep(&mut self, now: i64) {
        self.missions.sweep(now);
    }
}

enum Step {
    Deny(Denial),
    Need(Need),
}

impl Step {
    fn deny(reason: Reason, detail: &str) -> Step {
        Step::Deny(Denial::new(reason, detail))
    }
}
