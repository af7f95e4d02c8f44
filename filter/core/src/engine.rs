//! The decision engine: one per Wasm VM (one per Envoy worker). The host layer feeds it requests and
//! callout answers; it answers with a decision or with what it needs fetched first.

use missiongate_wire::jose::{PureVerifier, Verifier};
use missiongate_wire::problem::ProblemMission;
use std::rc::Rc;

use crate::authority::{self, AuthorityMatch, Target};
use crate::config::DestinationRef;
use crate::config::{Config, KeySource, Mode, Upstream};
use crate::constraints::{Checked, Mapping, Params, COUNTERS as CONSTRAINT_COUNTERS};
use crate::decision::{ConstraintEvidence, Decision, Denial, Evidence, Reason, Response, ALL_REASONS};
use crate::dpop;
use crate::keys::KeyStore;
use crate::mcp;
use crate::mission::{self, AnswerError, Applied, MissionCache, MissionView};
use crate::token::{self, KeysWanted, TokenCache, TokenError, VerifiedToken};
use crate::uri;
use missiongate_wire::claims::MissionState;

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

/// The error a [`ReplayGuard`] returns when its bounded store has no room left for a key: the
/// request is refused with `replay_store_full` (503, Retry-After), never remembered unboundedly.
pub const REPLAY_STORE_FULL: &str = "replay store full";

/// The denial for a replay store error: `replay_store_full` when the store is full, else `fallback`.
fn replay_failure(error: &str, fallback: Reason, detail: &str) -> Step {
    if error == REPLAY_STORE_FULL {
        Step::deny(Reason::ReplayStoreFull, "the replay store is full; retry shortly")
    } else {
        Step::deny(fallback, detail)
    }
}

/// Replay memory shared by every worker (Envoy shared data in the filter, a map in tests).
pub trait ReplayGuard {
    /// Remember `key` until `until`; `Ok(false)` when it was already remembered (a replay),
    /// `Err` when the store could not be used (the request is then refused).
    fn remember(&mut self, key: &str, until: i64, now: i64) -> Result<bool, String>;

    /// Whether `key` is remembered (and not expired) at `now`, without remembering it: shadow mode
    /// asks this instead of [`ReplayGuard::remember`], so a shadow decision sees a replay but
    /// consumes nothing. The default cannot tell (the request is then a would-deny for an
    /// unavailable store).
    fn seen(&mut self, _key: &str, _now: i64) -> Result<bool, String> {
        Err("this replay store cannot be read without writing to it".into())
    }

    /// Read a cached value shared by every worker (decision cache). Default: no shared cache.
    fn load(&mut self, _key: &str) -> Option<Vec<u8>> {
        None
    }

    /// Write a cached value shared by every worker. Default: no shared cache.
    fn store(&mut self, _key: &str, _value: &[u8]) {}
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
    /// Buffer the whole request body (a consequential call), then decide again with it.
    Body,
    /// Ask the PDP (this request's own callout; not shared).
    Pdp(Box<Callout>),
}

/// A PDP answer (status `None` = the callout failed).
#[derive(Debug, Clone, Default)]
pub struct PdpAnswer {
    /// HTTP status.
    pub status: Option<u16>,
    /// Body.
    pub body: Vec<u8>,
}

/// What the host adds beyond the request line for the PDP path.
#[derive(Debug, Default, Clone, Copy)]
pub struct Extra<'a> {
    /// All request headers (content type, effect-bearing headers).
    pub headers: &'a [(String, String)],
    /// Lower-case names of headers whose value is not UTF-8 (see `head`): on a bound call a
    /// `Content-Type` or effect-bearing header among them makes the call unbindable (400).
    pub unreadable: &'a [String],
    /// The complete body, once buffered (empty slice = no body).
    pub body: Option<&'a [u8]>,
    /// The SHA-256 of `body`, when the host hashed it as it arrived (a body bound by its hash).
    pub body_sha256: Option<&'a [u8; 32]>,
    /// The PDP's answer for this request, once it came.
    pub pdp: Option<&'a PdpAnswer>,
}

/// A PDP answer kept for reuse: reinterpreted on every hit, so conditions are checked again.
#[derive(Debug, Clone)]
struct Cached {
    until: i64,
    answer: Rc<PdpAnswer>,
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
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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
    JwksKeyRefused,
    StatusFetchOk,
    StatusFetchFailed,
    StatusUnexpected,
    EventsPollOk,
    EventsPollFailed,
    EventsApplied,
    EventsRejected,
    BodyHashFallback,
    VerifyForeign,
}

/// Every stat, for counter definition.
pub const ALL_STATS: [Stat; 16] = [
    Stat::TokenCacheHit,
    Stat::TokenCacheMiss,
    Stat::MissionCacheHit,
    Stat::MissionCacheMiss,
    Stat::JwksFetchOk,
    Stat::JwksFetchFailed,
    Stat::JwksKeyRefused,
    Stat::StatusFetchOk,
    Stat::StatusFetchFailed,
    Stat::StatusUnexpected,
    Stat::EventsPollOk,
    Stat::EventsPollFailed,
    Stat::EventsApplied,
    Stat::EventsRejected,
    Stat::BodyHashFallback,
    Stat::VerifyForeign,
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
            Stat::JwksKeyRefused => "jwks.key_refused",
            Stat::StatusFetchOk => "callout.status.ok",
            Stat::StatusFetchFailed => "callout.status.failed",
            Stat::StatusUnexpected => "callout.status.unexpected",
            Stat::EventsPollOk => "callout.events.ok",
            Stat::EventsPollFailed => "callout.events.failed",
            Stat::EventsApplied => "events.applied",
            Stat::EventsRejected => "events.rejected",
            Stat::BodyHashFallback => "body.hash_fallback",
            Stat::VerifyForeign => "verify.foreign",
        }
    }
}

/// Prefix of the shadow-mode counters: `shadow.would_deny.<reason>`.
pub const WOULD_DENY_PREFIX: &str = "shadow.would_deny.";

/// Every counter the engine reports through [`Engine::take_counters`] (name suffixes, without the
/// host's `missiongate.` prefix): one per decision reason, one per reason a shadow-mode request
/// would have been refused for (every reason but `allowed`), and the stats. The host defines
/// exactly these at configure time, so the set is bounded and known before the first request.
pub fn counter_names() -> Vec<String> {
    ALL_REASONS
        .iter()
        .map(|r| format!("decision.{}", r.as_str()))
        .chain(
            ALL_REASONS.iter().filter(|r| **r != Reason::Allowed).map(|r| format!("{WOULD_DENY_PREFIX}{}", r.as_str())),
        )
        .chain(ALL_STATS.iter().map(|s| s.as_str().to_owned()))
        .chain(CONSTRAINT_COUNTERS.iter().map(|c| (*c).to_owned()))
        .collect()
}

/// Randomness from the host, drawn once per engine. Decision ids and Mission Status nonces come
/// from independent seeds: a decision id is shown to every client, so nothing about the nonces may
/// be learnt from it.
#[derive(Clone, Copy)]
pub struct Seeds {
    /// 32 random bytes for Mission Status nonces.
    pub nonce: [u8; 32],
    /// 32 random bytes, drawn separately, for decision ids.
    pub ids: [u8; 32],
}

impl std::fmt::Debug for Seeds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seeds(..)")
    }
}

/// A Mission Status failure of one issuer is logged at most once per this many seconds.
pub const STATUS_LOG_INTERVAL: i64 = 30;

/// Most SET acknowledgements (and refusals) held for the next poll; beyond it the oldest are dropped,
/// which is safe: the authority delivers them again and applying them again changes nothing.
pub const MAX_PENDING_ACKS: usize = 4096;

/// What a Mission Status answer asks of the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusOutcome {
    /// The answer was signed by a key not known yet: refetch this issuer's JWKS.
    pub refetch_keys: Option<usize>,
    /// A line to log (why the answer failed), already rate-limited per issuer.
    pub log: Option<String>,
}

/// Most PDP answers one worker keeps (the shared copy lives in the host's fixed slots).
pub const MAX_CACHED_DECISIONS: usize = 10_000;

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
    would_deny: [u64; ALL_REASONS.len()],
    stats: [u64; ALL_STATS.len()],
    constraint_counts: [u64; CONSTRAINT_COUNTERS.len()],
    id_prefix: String,
    seq: u64,
    nonce_seed: [u8; 32],
    nonce_seq: u64,
    dpop_algs: Option<String>,
    decisions_cache: std::collections::HashMap<String, Cached>,
    /// When a Mission Status failure was last logged, per issuer.
    status_logged: std::collections::HashMap<usize, i64>,
    /// The JSON-RPC `id` of the MCP request being decided, once its body was read: its refusals
    /// are rendered as JSON-RPC errors for it (SPEC §7).
    jsonrpc_id: Option<serde_json::Value>,
    /// Who checks signatures: the pure path unless the host sets its own ([`Engine::set_verifier`]).
    verifier: SignatureVerifier,
}

/// The engine's [`Verifier`] (a newtype only so that `Engine` stays `Debug` without every verifier
/// having to be).
struct SignatureVerifier(Rc<dyn Verifier>);

impl std::fmt::Debug for SignatureVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier")
    }
}

impl Engine {
    /// A new engine. `seeds` are random bytes from the host: one seed makes the Mission Status
    /// nonces unpredictable, the other (drawn independently) makes decision ids unique per worker.
    pub fn new(config: Rc<Config>, seeds: Seeds) -> Engine {
        use sha2::{Digest, Sha256};
        let keys = KeyStore::new(&config);
        let tokens = TokenCache::new(config.token_cache_size);
        let id_hash = Sha256::new().chain_update(b"missiongate decision ids\0").chain_update(seeds.ids).finalize();
        let id_prefix = missiongate_wire::b64::encode(id_hash.get(..9).unwrap_or_default());
        let dpop_algs =
            config.dpop.enabled.then(|| config.dpop.algs.iter().map(|a| a.name()).collect::<Vec<_>>().join(" "));
        Engine {
            config,
            keys,
            tokens,
            missions: MissionCache::default(),
            decisions: [0; ALL_REASONS.len()],
            would_deny: [0; ALL_REASONS.len()],
            stats: [0; ALL_STATS.len()],
            constraint_counts: [0; CONSTRAINT_COUNTERS.len()],
            id_prefix,
            seq: 0,
            nonce_seed: seeds.nonce,
            nonce_seq: 0,
            dpop_algs,
            decisions_cache: std::collections::HashMap::new(),
            status_logged: std::collections::HashMap::new(),
            jsonrpc_id: None,
            verifier: SignatureVerifier(Rc::new(PureVerifier)),
        }
    }

    /// Check every signature (access tokens, DPoP proofs, Mission Status and event answers) with
    /// `verifier`, which must answer exactly as the pure path does (the filter passes one that asks
    /// Envoy's BoringSSL where that is faster: [`crate::verifier`]).
    pub fn set_verifier(&mut self, verifier: Rc<dyn Verifier>) {
        self.verifier = SignatureVerifier(verifier);
    }

    /// Count one `s` (for the host layer's own events, such as [`Stat::BodyHashFallback`]).
    pub fn stat(&mut self, s: Stat) {
        self.stat_n(s, 1);
    }

    /// Count `n` of `s` (the host layer's tallies, such as [`Stat::VerifyForeign`]).
    pub fn stat_n(&mut self, s: Stat, n: u64) {
        if let Some(i) = ALL_STATS.iter().position(|x| *x == s) {
            if let Some(c) = self.stats.get_mut(i) {
                *c = c.saturating_add(n);
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
        for (r, c) in ALL_REASONS.iter().zip(self.would_deny.iter_mut()) {
            if *c > 0 {
                out.push((format!("{WOULD_DENY_PREFIX}{}", r.as_str()), *c));
                *c = 0;
            }
        }
        for (s, c) in ALL_STATS.iter().zip(self.stats.iter_mut()) {
            if *c > 0 {
                out.push((s.as_str().to_owned(), *c));
                *c = 0;
            }
        }
        for (s, c) in CONSTRAINT_COUNTERS.iter().zip(self.constraint_counts.iter_mut()) {
            if *c > 0 {
                out.push(((*s).to_owned(), *c));
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
        self.nonce_seq += 1;
        let mut h = Sha256::new();
        h.update(b"missiongate nonces\0");
        h.update(self.nonce_seed);
        h.update(self.nonce_seq.to_le_bytes());
        missiongate_wire::b64::encode(h.finalize().get(..18).unwrap_or_default())
    }

    /// Decide on a request (no body, no PDP answer yet).
    pub fn decide(&mut self, req: &Request<'_>, now: i64, attempts: Attempts, replay: &mut dyn ReplayGuard) -> Outcome {
        self.decide_full(req, &Extra::default(), now, attempts, replay)
    }

    /// Decide on a request with whatever the host has gathered so far.
    pub fn decide_full(
        &mut self,
        req: &Request<'_>,
        extra: &Extra<'_>,
        now: i64,
        attempts: Attempts,
        replay: &mut dyn ReplayGuard,
    ) -> Outcome {
        // Shadow or enforce: the destination's mode, else the filter's. `ev.enforced` carries it into
        // the decision, which then consumes nothing single-use when it is false.
        let enforced = self.mode_for(req) == Mode::Enforce;
        let mut ev = Evidence { at: now, enforced, ..Evidence::default() };
        self.jsonrpc_id = None;
        let result = self.decide_inner(req, extra, now, attempts, replay, &mut ev);
        if !matches!(result, Err(Step::Need(_))) {
            // Counted once per decision, not per step: a decision may take several.
            for c in &ev.constraints {
                if let Some(i) = CONSTRAINT_COUNTERS.iter().position(|x| *x == c.counter) {
                    if let Some(n) = self.constraint_counts.get_mut(i) {
                        *n += 1;
                    }
                }
            }
        }
        match result {
            Ok(()) => {
                ev.decision_id = self.next_id();
                ev.decision = Decision::Allow;
                ev.reason = Reason::Allowed;
                ev.status = 200;
                self.count(Reason::Allowed);
                Outcome::Allow(ev)
            }
            Err(Step::Need(n)) => Outcome::Need(n),
            Err(Step::Deny(d)) => {
                ev.decision_id = self.next_id();
                ev.decision = Decision::Deny;
                ev.reason = d.reason;
                ev.status = d.reason.status();
                if !ev.enforced && !d.reason.enforced_in_shadow() {
                    // Shadow mode: the denial is recorded and counted as what it would have been,
                    // and the request goes on unchanged (no local reply, so no 511 either).
                    self.count_would_deny(d.reason);
                    return Outcome::Allow(ev);
                }
                ev.enforced = true;
                self.count(d.reason);
                let resp = match self.jsonrpc_id.take().and_then(|id| d.render_mcp(&id, &ev.decision_id)) {
                    Some(r) => r,
                    None => d.render(&self.config.realm, self.dpop_algs.as_deref(), &ev.decision_id),
                };
                Outcome::Deny(resp, ev)
            }
        }
    }

    /// Refuse the current request outright (the host found a reason before the engine could:
    /// an oversized body while buffering).
    pub fn refuse(&mut self, reason: Reason, detail: &str, now: i64) -> (Response, Evidence) {
        let id = self.next_id();
        self.count(reason);
        let ev = Evidence {
            decision_id: id.clone(),
            decision: Decision::Deny,
            reason,
            status: reason.status(),
            at: now,
            ..Evidence::default()
        };
        (Denial::new(reason, detail).render(&self.config.realm, self.dpop_algs.as_deref(), &id), ev)
    }

    /// The mode a request is decided in: its destination's, else the filter's (also for a request
    /// that names no valid destination at all).
    pub fn mode_for(&self, req: &Request<'_>) -> Mode {
        let default = self.config.mode;
        if !valid_method(req.method) {
            return default;
        }
        self.config
            .destination(req.authority, req.scheme, req.method.eq_ignore_ascii_case("CONNECT"))
            .map_or(default, |d| d.mode(default))
    }

    fn count_would_deny(&mut self, r: Reason) {
        if let Some(i) = ALL_REASONS.iter().position(|x| *x == r) {
            if let Some(c) = self.would_deny.get_mut(i) {
                *c += 1;
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

    fn decide_inner(
        &mut self,
        req: &Request<'_>,
        extra: &Extra<'_>,
        now: i64,
        attempts: Attempts,
        replay: &mut dyn ReplayGuard,
        ev: &mut Evidence,
    ) -> Result<(), Step> {
        let config = Rc::clone(&self.config);
        // 1. What is asked for: the destination and the path forwarded.
        // The destination is in the evidence even when the path is then refused.
        let dest = request_destination(&config, req)?;
        ev.destination = Some(dest.origin().to_owned());
        let path = forwarded_path(req)?;
        let mut action = authority::action_id(dest.operations(), req.method, path);
        ev.action = Some(action.clone());

        // 2. Credentials: the token and its scheme.
        let (token, is_dpop) = credentials(&config, req)?;

        // 3. Token: cache, else full verification.
        let vt = self.verified_token(&config, token, now, attempts)?;
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

        // 4. Per request (README step 3): the token's expiry and audience above, then the sender
        // constraint.
        let signed = Signed { dest: &dest, path, token, now, verifier: &*self.verifier.0 };
        let proof = sender_constraint(&config, req, &vt, is_dpop, &signed)?;

        // 5. Mission state.
        self.mission_state(&vt, now, attempts)?;

        // 6. An MCP operation (SPEC §7): a POST to the MCP endpoint of a destination marked as an MCP
        // server is named by its JSON-RPC body, so the body is read (bounded) before anything else
        // is decided about it.
        let call = self.mcp_operation(&config, req, extra, &dest, path, ev)?;
        if let Some(c) = &call {
            action = c.op.action.clone();
        }

        // 7. Authority, then (outside it, or for a consequential call) the PDP.
        let authorised = self.authority(&config, req, extra, &dest, path, &vt, &action, call.as_ref(), ev)?;
        let permit = self.pdp(&config, req, extra, &dest, path, &vt, &action, authorised, call, now, replay, ev)?;

        // 8. Last, the two single-use stores shared by every worker, in this order:
        // 1. The DPoP proof. Only a request that passed every other check gets here, so a proof is
        //    remembered only for a request that is allowed but for a single-use permit still to be
        //    taken. A replayed proof stops here, before that permit is touched.
        // 2. The single-use permit. If it turns out spent, the proof stays remembered although the
        //    request is refused: that is safe, because a proof is single-use anyway (RFC 9449 §11.1)
        //    and an honest client makes a fresh one for every request, retries included.
        // In shadow mode (`ev.enforced` false) both are only looked up, never written: a replay is
        // still a would-deny, but nothing is consumed, so enforcing later finds the permit unused.
        take_single_use(&config, proof, permit, !ev.enforced, now, replay)
    }

    /// Stage 3: the token, from the verified-token cache or verified in full (which may need the
    /// issuer's keys fetched first).
    fn verified_token(
        &mut self,
        config: &Config,
        token: &str,
        now: i64,
        attempts: Attempts,
    ) -> Result<Rc<VerifiedToken>, Step> {
        let vt = match self.tokens.get(token) {
            Some(t) => {
                self.stat(Stat::TokenCacheHit);
                t
            }
            None => {
                self.stat(Stat::TokenCacheMiss);
                match token::verify_with(config, &self.keys, token, now, &*self.verifier.0) {
                    Ok(v) => {
                        let v = Rc::new(v);
                        self.tokens.insert(token, Rc::clone(&v), now, config.clock_skew);
                        v
                    }
                    Err(TokenError::Deny(d)) => return Err(Step::Deny(d)),
                    Err(TokenError::NeedKeys { issuer, why }) => {
                        // Wait for a fetch already under way (coalesced), or start one if allowed:
                        // at most one per request (`attempts.keys`) and per interval per issuer.
                        let in_flight = self.keys.issuer_in_flight(issuer);
                        if !attempts.keys && (in_flight || self.keys.may_fetch(config, issuer, now)) {
                            return Err(Step::Need(Need::Keys(issuer)));
                        }
                        return Err(match why {
                            KeysWanted::UnknownKid => {
                                Step::deny(Reason::UnknownKey, "token kid is not in the issuer's key set")
                            }
                            KeysWanted::NotLoaded => {
                                Step::deny(Reason::KeysUnavailable, "the issuer's keys could not be loaded")
                            }
                            KeysWanted::Replaced(d) => Step::Deny(d),
                        });
                    }
                }
            }
        };
        Ok(vt)
    }

    /// Stage 5: the Mission's state; only `active` permits.
    fn mission_state(&mut self, vt: &VerifiedToken, now: i64, attempts: Attempts) -> Result<(), Step> {
        match self.missions.view(vt.mission_issuer, &vt.mission_id, now) {
            MissionView::Active => self.stat(Stat::MissionCacheHit),
            MissionView::Inactive(state) => {
                self.stat(Stat::MissionCacheHit);
                // A state this gateway does not know is named in `mission.state`, not in the detail.
                let detail = match &state {
                    MissionState::Other(_) => "mission is not active".to_owned(),
                    known => format!("mission is {}", known.as_str()),
                };
                let mut d = Denial::new(Reason::MissionInactive, detail);
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
        Ok(())
    }

    /// Stage 6: an MCP operation (SPEC §7). A POST to the MCP endpoint of a destination marked as
    /// an MCP server is named by its JSON-RPC body (read, bounded, before anything else is decided
    /// about it) and checked against its `Mcp-Method` / `Mcp-Name` headers; its refusals are then
    /// JSON-RPC errors for its `id`. `None` for any other request.
    fn mcp_operation<'c>(
        &mut self,
        config: &Config,
        req: &Request<'_>,
        extra: &Extra<'_>,
        dest: &'c DestinationRef<'_>,
        path: &str,
        ev: &mut Evidence,
    ) -> Result<Option<McpCall<'c>>, Step> {
        let Some(server) = dest.mcp().filter(|s| req.method == "POST" && s.is_endpoint(path)) else {
            return Ok(None);
        };
        let Some(body) = extra.body else { return Err(Step::Need(Need::Body)) };
        if body.len() > config.max_body_bytes {
            return Err(Step::deny(Reason::BodyTooLarge, "request body exceeds the limit for a bound call"));
        }
        let refused = |this: &mut Engine, r: mcp::Refused| {
            this.jsonrpc_id = r.id;
            Step::deny(r.reason, r.detail)
        };
        let message = mcp::parse(body).map_err(|r| refused(self, r))?;
        let op = mcp::operation(server, &message);
        ev.mcp_method = op.method.clone();
        ev.mcp_tool = op.tool.clone();
        ev.action = Some(op.action.clone());
        self.jsonrpc_id = op.id.clone();
        mcp::check_headers(extra.headers, &message).map_err(|r| refused(self, r))?;
        // Digested only if the call turns out consequential (or outside its constraints).
        let digest = if config.pdp.is_some() {
            mcp::call_digest(&format!("{}{}", dest.origin(), raw_target(req.path)), &message)
        } else {
            None
        };
        // A tools/call's constraints are checked on its `arguments`, where its tool entry maps them.
        let (mappings, arguments) = match &message {
            mcp::Message::Request { call: Some((tool, arguments)), .. } => {
                (server.tool(tool).map_or(&[][..], |t| &t.constraints), arguments.clone())
            }
            _ => (&[][..], None),
        };
        Ok(Some(McpCall { op, digest, mappings, arguments }))
    }

    /// Stage 7: authority. The token's entries, narrowed by the current Authority Set from Mission
    /// Status when it carried one (containment, SPEC §3), matched against the request; constraints
    /// are checked on the operation's parameters (its JSON body, or a tools/call's `arguments`),
    /// read only when an entry whose constraints this operation maps covers the request (SPEC §2).
    #[allow(clippy::too_many_arguments)]
    fn authority(
        &mut self,
        config: &Config,
        req: &Request<'_>,
        extra: &Extra<'_>,
        dest: &DestinationRef<'_>,
        path: &str,
        vt: &VerifiedToken,
        action: &str,
        call: Option<&McpCall<'_>>,
        ev: &mut Evidence,
    ) -> Result<Authorised, Step> {
        let current = self.missions.current_authority(vt.mission_issuer, &vt.mission_id);
        let mappings = match call {
            Some(c) => c.mappings,
            None => authority::operation(dest.operations(), req.method, path).map_or(&[][..], |o| &o.constraints),
        };
        let body_params;
        let parsed = match (extra.body, call) {
            // An MCP operation's parameters are its tools/call `arguments` (the body was read).
            (Some(_), Some(c)) => c.arguments.as_ref(),
            (Some(body), None) if !mappings.is_empty() => {
                if body.len() > config.max_body_bytes {
                    return Err(Step::deny(Reason::BodyTooLarge, "request body exceeds the limit for a bound call"));
                }
                body_params = json_params(extra.headers, body);
                body_params.as_ref()
            }
            _ => None,
        };
        let params = match (extra.body, parsed) {
            (None, _) => Params::NotYet,
            (Some(_), Some(v)) => Params::Json(v),
            (Some(_), None) => Params::Absent,
        };
        let target = Target { origin: dest.origin(), resource_id: dest.resource(), path, action, mappings, params };
        let mut checked = Vec::new();
        let matched = authority::check_target(&vt.grants, current.as_deref().map(Vec::as_slice), &target, &mut checked);
        if matched == AuthorityMatch::NeedParams {
            return Err(Step::Need(Need::Body));
        }
        ev.constraints = checked
            .iter()
            .map(|c| ConstraintEvidence {
                name: c.label().to_owned(),
                outcome: c.outcome.as_str(),
                counter: c.counter(),
            })
            .collect();
        if matched == AuthorityMatch::Unenforceable {
            return Err(Step::deny(
                Reason::ConstraintUnrecognized,
                "the authority entry has a constraint this gateway cannot enforce",
            ));
        }
        Ok(Authorised { matched, checked })
    }

    /// Stage 7, continued: the PDP, asked when the request is outside the Authority Set (and
    /// `egress_allow`) or consequential; refused outright when outside and no PDP is configured.
    /// An allowing answer may carry a single-use permit, taken last (stage 8).
    #[allow(clippy::too_many_arguments)]
    fn pdp(
        &mut self,
        config: &Config,
        req: &Request<'_>,
        extra: &Extra<'_>,
        dest: &DestinationRef<'_>,
        path: &str,
        vt: &VerifiedToken,
        action: &str,
        authorised: Authorised,
        call: Option<McpCall<'_>>,
        now: i64,
        replay: &mut dyn ReplayGuard,
        ev: &mut Evidence,
    ) -> Result<Option<UseOnce>, Step> {
        let Authorised { matched, checked } = authorised;
        // A call outside an entry only by its parameters is bound to them when the PDP is asked:
        // an approval covers exactly that call (its digest), never the operation as such.
        let violated = matched == AuthorityMatch::Violated;
        let consequential = config.pdp.is_some()
            && (violated
                || match &call {
                    Some(c) => c.op.consequential,
                    None => dest.consequential(req.method, path),
                });
        let mcp_bound = call.map(|c| {
            let mut op = c.op;
            // A tools/call outside its entry's constraints is not let through by `pass`.
            op.pass &= !violated;
            (op, if consequential { c.digest } else { None })
        });
        let pass = mcp_bound.as_ref().is_some_and(|(op, _)| op.pass);
        let inside = matched == AuthorityMatch::Permit
            || pass
            || !violated
                && (req.method == "CONNECT" || !consequential)
                && config.egress_allow.iter().any(|o| o == dest.origin());
        if !consequential && !inside && config.pdp.is_none() {
            let detail = if violated {
                "the request violates a constraint of the mission's authority"
            } else {
                "the request is outside the mission's authority"
            };
            return Err(Step::deny(Reason::InsufficientAuthority, detail));
        }
        if consequential || !inside {
            self.evaluate(req, extra, dest, vt, action, consequential, &checked, mcp_bound.as_ref(), now, replay, ev)
        } else {
            Ok(None)
        }
    }

    /// The PDP path (SPEC §4, §6): digest the call if consequential, use a cached decision or ask.
    /// An allowing answer may carry a single-use permit: it is returned, to be taken by the caller
    /// once every other check has passed.
    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &mut self,
        req: &Request<'_>,
        extra: &Extra<'_>,
        dest: &crate::config::DestinationRef<'_>,
        vt: &VerifiedToken,
        action: &str,
        consequential: bool,
        constraints: &[Checked],
        mcp: Option<&(mcp::Operation, Option<String>)>,
        now: i64,
        replay: &mut dyn ReplayGuard,
        ev: &mut Evidence,
    ) -> Result<Option<UseOnce>, Step> {
        let config = Rc::clone(&self.config);
        let Some(pdp) = &config.pdp else {
            return Err(Step::deny(Reason::InsufficientAuthority, "the request is outside the mission's authority"));
        };
        let tool = mcp.and_then(|(op, _)| op.tool.as_deref());
        let digest = if let Some((_, d)) = mcp {
            // An MCP operation: a consequential tools/call is bound by the MCP Tool Call Profile.
            if consequential {
                d.clone()
            } else {
                None
            }
        } else if consequential {
            if let Some(h) = extra.unreadable.iter().find(|h| {
                h.eq_ignore_ascii_case("content-type")
                    || dest.effect_headers().iter().any(|e| e.eq_ignore_ascii_case(h))
            }) {
                return Err(Step::deny(
                    Reason::BodyNotCanonicalizable,
                    &format!("the {h} header of a bound call is not UTF-8"),
                ));
            }
            let Some(body) = extra.body else { return Err(Step::Need(Need::Body)) };
            if body.len() > config.max_body_bytes {
                return Err(Step::deny(Reason::BodyTooLarge, "request body exceeds the limit for a bound call"));
            }
            let target = format!("{}{}", dest.origin(), raw_target(req.path));
            // Every header occurrence goes in: a repeated effect-bearing header (or Content-Type on a
            // body) is unbindable. The detail names the rule only, never body bytes or header values.
            match missiongate_wire::digest::request_parameter_digest(
                &req.method.to_ascii_uppercase(),
                &target,
                extra.headers,
                dest.effect_headers(),
                body,
                extra.body_sha256,
            ) {
                Ok(d) => Some(d),
                Err(e) => {
                    return Err(Step::deny(
                        Reason::BodyNotCanonicalizable,
                        &format!("the request cannot be bound: {e}"),
                    ))
                }
            }
        } else {
            None
        };
        ev.parameter_digest = digest.clone();
        // The question exactly as it is (or was) sent, and where: an answer is reused only for the
        // same question to the same PDP endpoint.
        let question = self.evaluation_request(pdp, dest, vt, action, digest.as_deref(), tool, constraints);
        let key = decision_key(&pdp.evaluation, &question);
        let cached = if extra.pdp.is_none() { self.cached_answer(&key, now, replay) } else { None };
        let from_cache = cached.is_some();
        let answer: &PdpAnswer = match (extra.pdp, cached.as_deref()) {
            (Some(a), _) => a,
            (None, Some(c)) => c,
            (None, None) => {
                let c = Self::callout(
                    &pdp.evaluation,
                    "POST",
                    Some("application/json"),
                    question,
                    pdp.credential.as_deref().map(|c| ("authorization", c)),
                );
                return Err(Step::Need(Need::Pdp(Box::new(c))));
            }
        };
        let unavailable = |detail: &str| {
            let mut d = Denial::new(Reason::PdpUnavailable, detail);
            d.retry_after = Some(pdp.retry_after_seconds);
            Step::Deny(d)
        };
        if answer.status != Some(200) {
            return Err(unavailable("the policy decision point could not be reached"));
        }
        if answer.body.len() > 256 * 1024 {
            return Err(unavailable("the policy decision point answered too much"));
        }
        let resp: missiongate_wire::authzen::EvaluationResponse = serde_json::from_slice(&answer.body)
            .map_err(|_| unavailable("the policy decision point answered garbage"))?;
        ev.evaluation_id = resp.context.evaluation_id.clone();
        if resp.decision {
            let mut until = now + 60;
            let mut valid_until: Option<i64> = None;
            let mut single_use = false;
            if let Some(c) = &resp.context.conditions {
                if !c.unknown.is_empty() {
                    return Err(Step::deny(Reason::PdpDenied, "a permit condition is not understood"));
                }
                if let Some(vu) = &c.valid_until {
                    let t = missiongate_wire::time::parse_rfc3339(vu)
                        .ok_or_else(|| Step::deny(Reason::PdpDenied, "permit valid_until is not a date"))?;
                    if now >= t {
                        return Err(Step::deny(Reason::ParameterViolation, "the permit has expired"));
                    }
                    until = until.min(t);
                    valid_until = Some(t);
                }
                if let Some(pd) = &c.parameter_digest {
                    if digest.as_deref() != Some(pd.as_str()) {
                        return Err(Step::deny(
                            Reason::ParameterViolation,
                            "the call differs from the one that was approved",
                        ));
                    }
                }
                match c.use_limit {
                    None => {}
                    Some(1) => single_use = true,
                    Some(_) => {
                        return Err(Step::deny(Reason::PdpDenied, "permit use_limit other than 1 is not supported"))
                    }
                }
            }
            if single_use {
                let id = resp.context.evaluation_id.as_deref().unwrap_or_default();
                if id.is_empty() {
                    return Err(Step::deny(Reason::PdpDenied, "a single-use permit needs an evaluation_id"));
                }
                // Remembered for the permit's whole validity (at least an hour when it names none), so
                // the same permit is never used twice through this gateway while it could be presented.
                let remember_until = valid_until.unwrap_or(until).max(now + 3600);
                return Ok(Some(UseOnce { key: use_once_key(&pdp.evaluation, id), until: remember_until }));
            }
            if !from_cache {
                self.cache_answer(key, until, answer, now, replay);
            }
            return Ok(None);
        }
        let denial = match resp.context.access_request.clone() {
            Some(hint) => {
                let doc = missiongate_wire::authzen::CaptiveDocument {
                    captive: true,
                    user_portal_url: resp.context.user_portal_url.clone(),
                    seconds_remaining: None,
                    access_request: Some(missiongate_wire::authzen::CaptiveAccessRequest {
                        subject: self.subject(pdp, vt),
                        resource: missiongate_wire::authzen::Entity {
                            type_: "egress".into(),
                            id: dest.origin().to_owned(),
                            ..Default::default()
                        },
                        action: Self::action_entity(action, digest.as_deref(), tool),
                        context: missiongate_wire::authzen::CaptiveAccessContext {
                            evaluation_id: resp.context.evaluation_id.clone().unwrap_or_default(),
                            reason: resp.context.reason.clone().unwrap_or_else(|| "egress_not_allowed".into()),
                            mission: Some(Self::mission_ctx(vt)),
                            access_request: hint,
                        },
                    }),
                };
                let mut d = Denial::new(Reason::EgressNotAllowed, "blocked; access can be requested");
                d.captive = Some(Box::new((doc, resp.context.captive_portal_api.clone())));
                d
            }
            // The PDP says this call's single-use approval was already used (by this or another
            // gateway): the same answer as this gateway's own single-use ledger gives.
            None if resp.context.reason.as_deref() == Some("parameter_violation") => Denial::new(
                Reason::ParameterViolation,
                "the single-use approval of this call was already used; request access again",
            ),
            // The PDP's reason is repeated only when it is a short code, never free text.
            None => match resp.context.reason.as_deref().filter(|r| is_reason_code(r)) {
                Some(r) => Denial::new(Reason::PdpDenied, format!("denied by policy: {r}")),
                None => Denial::new(Reason::PdpDenied, "denied by policy"),
            },
        };
        if pdp.deny_cache_seconds > 0 && !from_cache {
            self.cache_answer(key, now + pdp.deny_cache_seconds, answer, now, replay);
        }
        Err(Step::Deny(denial))
    }

    /// A cached PDP answer: this worker's first, then the one shared by every worker.
    fn cached_answer(&mut self, key: &str, now: i64, shared: &mut dyn ReplayGuard) -> Option<Rc<PdpAnswer>> {
        if let Some(c) = self.decisions_cache.get(key) {
            if c.until > now {
                return Some(Rc::clone(&c.answer));
            }
            self.decisions_cache.remove(key);
        }
        let bytes = shared.load(key)?;
        let (head, body) = (bytes.get(..8)?, bytes.get(8..)?);
        let until = i64::from_le_bytes(head.try_into().ok()?);
        if until <= now {
            return None;
        }
        let answer = Rc::new(PdpAnswer { status: Some(200), body: body.to_vec() });
        self.keep_answer(key.to_owned(), Cached { until, answer: Rc::clone(&answer) }, now);
        Some(answer)
    }

    fn cache_answer(&mut self, key: String, until: i64, answer: &PdpAnswer, now: i64, shared: &mut dyn ReplayGuard) {
        let mut bytes = until.to_le_bytes().to_vec();
        bytes.extend_from_slice(&answer.body);
        shared.store(&key, &bytes);
        self.keep_answer(key, Cached { until, answer: Rc::new(answer.clone()) }, now);
    }

    /// Keep an answer in this worker's cache, which never holds more than [`MAX_CACHED_DECISIONS`]:
    /// expired answers go first; if the cache is still full, all of it goes (a miss only asks the
    /// PDP again).
    fn keep_answer(&mut self, key: String, entry: Cached, now: i64) {
        if self.decisions_cache.len() >= MAX_CACHED_DECISIONS && !self.decisions_cache.contains_key(&key) {
            self.decisions_cache.retain(|_, c| c.until > now);
            if self.decisions_cache.len() >= MAX_CACHED_DECISIONS {
                self.decisions_cache.clear();
            }
        }
        self.decisions_cache.insert(key, entry);
    }

    /// Number of PDP answers this worker holds.
    pub fn cached_decisions(&self) -> usize {
        self.decisions_cache.len()
    }

    fn subject(&self, pdp: &crate::config::Pdp, vt: &VerifiedToken) -> missiongate_wire::authzen::Entity {
        let mut props = serde_json::Map::new();
        if let Some(s) = &vt.sub {
            props.insert("sub".into(), s.clone().into());
        }
        props.insert("iss".into(), vt.iss.clone().into());
        missiongate_wire::authzen::Entity {
            type_: pdp.subject_type.clone(),
            id: vt.client_id.clone().or_else(|| vt.sub.clone()).unwrap_or_default(),
            properties: props,
        }
    }

    /// The AuthZEN action: its id, the call's `parameter_digest` when bound, and the tool of an
    /// MCP `tools/call` (`mcp_tool`), so the PDP and the approver see which tool it is.
    fn action_entity(
        action: &str,
        digest: Option<&str>,
        tool: Option<&str>,
    ) -> missiongate_wire::authzen::ActionEntity {
        let mut props = serde_json::Map::new();
        if let Some(d) = digest {
            props.insert("parameter_digest".into(), d.into());
        }
        if let Some(t) = tool {
            props.insert("mcp_tool".into(), t.into());
        }
        missiongate_wire::authzen::ActionEntity { name: action.to_owned(), properties: props }
    }

    fn mission_ctx(vt: &VerifiedToken) -> missiongate_wire::authzen::ContextMission {
        missiongate_wire::authzen::ContextMission {
            id: vt.mission_id.clone(),
            issuer: vt.mission_issuer_name.clone(),
            authority_hash: vt.authority_hash.clone(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn evaluation_request(
        &self,
        pdp: &crate::config::Pdp,
        dest: &crate::config::DestinationRef<'_>,
        vt: &VerifiedToken,
        action: &str,
        digest: Option<&str>,
        tool: Option<&str>,
        constraints: &[Checked],
    ) -> Vec<u8> {
        let mut other = serde_json::Map::new();
        if !constraints.is_empty() {
            other.insert("constraints".into(), constraints_context(constraints));
        }
        let body = missiongate_wire::authzen::EvaluationRequest {
            subject: self.subject(pdp, vt),
            resource: missiongate_wire::authzen::Entity {
                type_: "egress".into(),
                id: dest.origin().to_owned(),
                ..Default::default()
            },
            action: Self::action_entity(action, digest, tool),
            context: missiongate_wire::authzen::EvaluationContext { mission: Some(Self::mission_ctx(vt)), other },
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    fn retry_after(&self, issuer: usize) -> u32 {
        self.config.issuers.get(issuer).and_then(|i| i.mission_authority.as_ref()).map_or(1, |m| m.retry_after_seconds)
    }

    // ------------------------------------------------------------------ callouts --------------

    fn callout(
        up: &Upstream,
        method: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        credential: Option<(&str, &str)>,
    ) -> Callout {
        Self::callout_accepting(up, method, "application/json, application/jwt", content_type, body, credential)
    }

    /// A callout; `credential` is (header name, value).
    fn callout_accepting(
        up: &Upstream,
        method: &str,
        accept: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
        credential: Option<(&str, &str)>,
    ) -> Callout {
        let mut headers = vec![
            (":method".to_owned(), method.to_owned()),
            (":path".to_owned(), up.path.clone()),
            (":authority".to_owned(), up.authority.clone()),
            ("accept".to_owned(), accept.to_owned()),
        ];
        if let Some(ct) = content_type {
            headers.push(("content-type".to_owned(), ct.to_owned()));
        }
        if let Some((name, value)) = credential {
            headers.push((name.to_owned(), value.to_owned()));
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

    /// The entries of the last JWKS fetched for `issuer` that were refused, one log line each
    /// (an RSA key under 2048 bits, say), counted under `jwks.key_refused`. Drained: the host logs
    /// them after [`Engine::on_jwks`], so at most once per fetch.
    pub fn take_jwks_refused(&mut self, issuer: usize) -> Vec<String> {
        let refused = self.keys.take_refused(issuer);
        refused
            .into_iter()
            .map(|(kid, why)| {
                self.stat(Stat::JwksKeyRefused);
                match kid.filter(|k| missiongate_wire::claims::is_safe_id(k)) {
                    Some(k) => format!("JWKS key {k:?} refused: {why}"),
                    None => format!("JWKS entry refused: {why}"),
                }
            })
            .collect()
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
        let c = Self::callout_accepting(
            &ma.status,
            "POST",
            missiongate_wire::claims::MEDIA_MISSION_STATUS,
            Some("application/x-www-form-urlencoded"),
            body,
            ma.credential.as_deref().map(|c| (ma.credential_header.as_str(), c)),
        );
        Some((c, nonce))
    }

    /// A Mission Status answer (status `None` = no answer). Only a verified answer or the draft's
    /// not-found body settles anything; every other answer is a failure of the authority (requests
    /// are refused with 503), counted, and its cause returned for the host to log, at most once per
    /// [`STATUS_LOG_INTERVAL`] seconds per issuer.
    pub fn on_status(
        &mut self,
        issuer: usize,
        mission_id: &str,
        nonce: &str,
        status: Option<u16>,
        body: &[u8],
        now: i64,
    ) -> StatusOutcome {
        let mut out = StatusOutcome::default();
        let cause = match status {
            Some(200) => match mission::verify_status_with(
                &self.config,
                &self.keys,
                issuer,
                body,
                (mission_id, nonce),
                now,
                &*self.verifier.0,
            ) {
                Ok(v) => {
                    self.stat(Stat::StatusFetchOk);
                    self.missions.put_status(issuer, v, now);
                    return out;
                }
                Err(e) => {
                    self.stat(Stat::StatusFetchFailed);
                    if e == AnswerError::UnknownKey && self.keys.may_fetch(&self.config, issuer, now) {
                        out.refetch_keys = Some(issuer);
                    }
                    match e {
                        AnswerError::UnknownKey => "answer signed by a key not in the authority's JWKS".to_owned(),
                        AnswerError::Invalid(why) => format!("answer refused: {why}"),
                    }
                }
            },
            Some(code) => match mission::status_not_found(code, body, nonce) {
                Ok(()) => {
                    self.stat(Stat::StatusFetchOk);
                    self.missions.put_unknown(issuer, mission_id, now);
                    return out;
                }
                Err(cause) => {
                    self.stat(Stat::StatusUnexpected);
                    cause
                }
            },
            None => {
                self.stat(Stat::StatusFetchFailed);
                "no answer (timeout, reset or unreachable cluster)".to_owned()
            }
        };
        self.missions.put_failure(issuer, mission_id, now);
        let due = self.status_logged.get(&issuer).is_none_or(|&t| now >= t.saturating_add(STATUS_LOG_INTERVAL));
        if due {
            self.status_logged.insert(issuer, now);
            let name = self.config.issuers.get(issuer).map_or("?", |i| i.issuer.as_str());
            out.log = Some(format!("Mission Status of {name} failed: {cause}"));
        }
        out
    }

    /// Issuers with an event feed.
    pub fn event_issuers(&self) -> Vec<usize> {
        (0..self.config.issuers.len())
            .filter(|&i| {
                self.config
                    .issuers
                    .get(i)
                    .and_then(|x| x.mission_authority.as_ref())
                    .is_some_and(|m| m.events.is_some())
            })
            .collect()
    }

    /// The next poll of `issuer`'s event feed; it acknowledges every SET processed since the last one
    /// (RFC 8936: each `jti` in `ack`, refused ones in `setErrs`). If that poll is lost, the
    /// authority delivers those SETs again, and applying them again changes nothing.
    pub fn events_callout(&mut self, issuer: usize, return_immediately: bool) -> Option<Callout> {
        let config = Rc::clone(&self.config);
        let ma = config.issuers.get(issuer)?.mission_authority.as_ref()?;
        let up = ma.events.as_ref()?;
        // Each processed SET is acknowledged by its `jti`. While nothing new was processed, the last
        // acknowledgement is repeated (harmless to RFC 8936: acknowledging twice removes nothing more);
        // a transmitter that keeps no per-receiver queue, such as the reference portal whose every
        // Envoy worker polls independently, derives where this receiver stands from it.
        let acks = match self.missions.pending_acks.remove(&issuer) {
            Some(a) if !a.is_empty() => {
                self.missions.last_acks.insert(issuer, a.clone());
                a
            }
            _ => self.missions.last_acks.get(&issuer).cloned().unwrap_or_default(),
        };
        let errs = self.missions.pending_errs.remove(&issuer).unwrap_or_default();
        let body = mission::poll_request_body(&acks, &errs, return_immediately);
        let credential = ma.credential.as_deref().map(|c| (ma.credential_header.as_str(), c));
        let mut c = Self::callout(up, "POST", Some("application/json"), body, credential);
        // A long poll is held by the authority; give the callout room beyond the configured timeout.
        if !return_immediately {
            c.timeout_ms = c.timeout_ms.max(30_000);
        }
        Some(c)
    }

    /// An event-feed answer. Returns (events applied, poll again at once, keys to refetch).
    pub fn on_events(
        &mut self,
        issuer: usize,
        status: Option<u16>,
        body: &[u8],
        now: i64,
    ) -> (usize, bool, Option<usize>) {
        if status != Some(200) {
            self.stat(Stat::EventsPollFailed);
            return (0, false, None);
        }
        match mission::verify_events_with(&self.config, &self.keys, issuer, body, now, &*self.verifier.0) {
            Ok(poll) => {
                self.stat(Stat::EventsPollOk);
                for _ in 0..poll.refused.len() {
                    self.stat(Stat::EventsRejected);
                }
                let mut applied = 0;
                let mut acks = Vec::with_capacity(poll.events.len());
                for e in poll.events {
                    if self.missions.apply_event(issuer, &e.change) != Applied::Ignored {
                        applied += 1;
                        self.stat(Stat::EventsApplied);
                    }
                    acks.push(e.jti);
                }
                let pending = self.missions.pending_acks.entry(issuer).or_default();
                pending.extend(acks);
                if pending.len() > MAX_PENDING_ACKS {
                    pending.drain(..pending.len() - MAX_PENDING_ACKS);
                }
                let errs = self.missions.pending_errs.entry(issuer).or_default();
                errs.extend(poll.refused);
                if errs.len() > MAX_PENDING_ACKS {
                    errs.drain(..errs.len() - MAX_PENDING_ACKS);
                }
                (applied, poll.more, None)
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

/// Stage 1: the destination a request names. The method becomes the action id in evidence and in
/// the PDP question, so it must be an HTTP token.
fn request_destination<'c>(config: &'c Config, req: &Request<'_>) -> Result<DestinationRef<'c>, Step> {
    if !valid_method(req.method) {
        return Err(Step::deny(Reason::MalformedRequest, "request method is not an HTTP method token"));
    }
    config
        .destination(req.authority, req.scheme, req.method == "CONNECT")
        .ok_or_else(|| Step::deny(Reason::MalformedRequest, "request authority is not a valid host"))
}

/// Stage 1, continued: the path decided on is the path forwarded, byte for byte: any form an
/// upstream could resolve otherwise is refused, for every request (SPEC §2). CONNECT has no path.
fn forwarded_path<'r>(req: &Request<'r>) -> Result<&'r str, Step> {
    if req.method == "CONNECT" {
        return Ok("/");
    }
    uri::request_path(req.path).map_err(|e| Step::deny(Reason::AmbiguousPath, e.describe()))
}

/// Stage 2: credentials, the one `Authorization` header's token and whether it is a DPoP one.
fn credentials<'r>(config: &Config, req: &Request<'r>) -> Result<(&'r str, bool), Step> {
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
    Ok((token, is_dpop))
}

/// What a DPoP proof is checked against, and with what.
#[derive(Clone, Copy)]
struct Signed<'a> {
    dest: &'a DestinationRef<'a>,
    path: &'a str,
    token: &'a str,
    now: i64,
    verifier: &'a dyn Verifier,
}

/// Stage 4: the sender constraint. A DPoP-bound token needs exactly one valid proof for this
/// request (remembered against replay only at the end, stage 8).
fn sender_constraint(
    config: &Config,
    req: &Request<'_>,
    vt: &VerifiedToken,
    is_dpop: bool,
    signed: &Signed<'_>,
) -> Result<Option<dpop::CheckedProof>, Step> {
    let Signed { dest, path, token, now, verifier } = *signed;
    Ok(match (&vt.cnf_jkt, is_dpop) {
        (Some(_), false) => return Err(Step::deny(Reason::DpopBoundAsBearer, "DPoP-bound token presented as Bearer")),
        (None, true) => {
            return Err(Step::deny(Reason::TokenMalformed, "DPoP scheme used with a token that is not DPoP-bound"))
        }
        (None, false) => None,
        (Some(jkt), true) => {
            let p = match (req.dpop_count, req.dpop) {
                (1, Some(p)) => p,
                (0, _) => return Err(Step::deny(Reason::InvalidDpopProof, "DPoP proof missing")),
                _ => return Err(Step::deny(Reason::InvalidDpopProof, "exactly one DPoP header is required")),
            };
            let bound = dpop::Bound { method: req.method, origin: dest.origin(), path, token, jkt };
            Some(dpop::check_with(&config.dpop, p, &bound, now, verifier).map_err(Step::Deny)?)
        }
    })
}

/// Stage 8, last: the two single-use stores shared by every worker, the DPoP proof then the
/// single-use permit (see the comment at the call).
fn take_single_use(
    config: &Config,
    proof: Option<dpop::CheckedProof>,
    permit: Option<UseOnce>,
    shadow: bool,
    now: i64,
    replay: &mut dyn ReplayGuard,
) -> Result<(), Step> {
    if let Some(p) = proof {
        let fresh = if shadow {
            replay.seen(&p.replay_key, now).map(|seen| !seen)
        } else {
            replay.remember(&p.replay_key, p.remember_until, now)
        };
        match fresh {
            Ok(true) => {}
            Ok(false) => return Err(Step::deny(Reason::DpopReplay, "DPoP proof jti was already used")),
            Err(e) => return Err(replay_failure(&e, Reason::AuthorityUnavailable, "DPoP replay store unavailable")),
        }
    }
    if let Some(use_once) = permit {
        let fresh = if shadow {
            replay.seen(&use_once.key, now).map(|seen| !seen)
        } else {
            replay.remember(&use_once.key, use_once.until, now)
        };
        match fresh {
            Ok(true) => {}
            Ok(false) => return Err(Step::deny(Reason::ParameterViolation, "the single-use permit was already used")),
            Err(e) if e == REPLAY_STORE_FULL => {
                return Err(replay_failure(&e, Reason::PdpUnavailable, "single-use store unavailable"))
            }
            Err(_) => {
                let mut d = Denial::new(Reason::PdpUnavailable, "single-use store unavailable");
                d.retry_after = config.pdp.as_ref().map(|p| p.retry_after_seconds);
                return Err(Step::Deny(d));
            }
        }
    }
    Ok(())
}

enum Step {
    Deny(Denial),
    Need(Need),
}

/// An MCP operation named by stage 6, as the later stages need it.
struct McpCall<'c> {
    op: mcp::Operation,
    /// Its MCP Tool Call Profile digest (a `tools/call` when a PDP is configured), bound only if
    /// the call turns out consequential.
    digest: Option<String>,
    /// Where its tool entry maps constraints into the call's `arguments`.
    mappings: &'c [(String, Mapping)],
    /// A `tools/call`'s `arguments`: the parameters its constraints are checked on.
    arguments: Option<serde_json::Value>,
}

/// What stage 7 found: how the Authority Set matched and the constraints it checked.
struct Authorised {
    matched: AuthorityMatch,
    checked: Vec<Checked>,
}

/// The parameters of a constrained call: its body, when the one `Content-Type` is a JSON media type
/// and the body is I-JSON (every number exact as written); `None` otherwise.
fn json_params(headers: &[(String, String)], body: &[u8]) -> Option<serde_json::Value> {
    let mut types = headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    let (_, ct) = types.next()?;
    if types.next().is_some() || !missiongate_wire::digest::is_json_media_type(ct) {
        return None;
    }
    missiongate_wire::jcs::parse_ijson(body).ok()
}

/// The PDP question's `context.constraints` (SPEC §2): each constraint checked, its outcome, and
/// for `max_amount` the bound, the requested amount and by how much it exceeds the bound, so the
/// approver sees why the call was blocked.
fn constraints_context(checked: &[Checked]) -> serde_json::Value {
    checked
        .iter()
        .map(|c| {
            let mut o = serde_json::Map::new();
            o.insert("name".into(), c.label().into());
            o.insert("kind".into(), c.kind.as_str().into());
            o.insert("outcome".into(), c.outcome.as_str().into());
            if let Some(a) = &c.amount {
                if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(a) {
                    o.extend(m);
                }
            }
            serde_json::Value::Object(o)
        })
        .collect()
}

/// A single-use permit still to be taken in the shared store.
struct UseOnce {
    key: String,
    until: i64,
}

/// Length-prefixed SHA-256 over `parts`, base64url: no two part lists hash alike by concatenation.
fn digest_parts(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(u64::try_from(p.len()).unwrap_or(u64::MAX).to_le_bytes());
        h.update(p);
    }
    missiongate_wire::b64::encode(h.finalize())
}

/// Cache key of a PDP answer: the evaluation request body as sent (subject with token `iss`, `sub`
/// and client id; resource; action with `parameter_digest`; Mission id, issuer and `authority_hash`)
/// and the endpoint it was sent to (cluster, `:authority`, path). A fixed-size key, whatever the
/// token carries.
fn decision_key(endpoint: &Upstream, question: &[u8]) -> String {
    let d =
        digest_parts(&[endpoint.cluster.as_bytes(), endpoint.authority.as_bytes(), endpoint.path.as_bytes(), question]);
    format!("mg.dec/{d}")
}

/// Replay-store key of a single-use permit: the PDP endpoint and its `evaluation_id`, hashed, so an
/// id the PDP chose never puts a separator or control character into the store, and two PDPs
/// cannot spend each other's permits.
fn use_once_key(endpoint: &Upstream, evaluation_id: &str) -> String {
    let d = digest_parts(&[
        endpoint.cluster.as_bytes(),
        endpoint.authority.as_bytes(),
        endpoint.path.as_bytes(),
        evaluation_id.as_bytes(),
    ]);
    format!("mg.use/{d}")
}

/// The path and query as forwarded (no fragment; an empty path is `/`): the part of a digest's
/// `target` after the origin (SPEC §6, §7).
fn raw_target(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path.split('#').next().unwrap_or("/")
    }
}

/// An HTTP method: an RFC 9110 token of at most 32 characters, with no lower-case letter.
///
/// Methods are case-sensitive (RFC 9110 §9.1) and Envoy treats a request as CONNECT only when its
/// method is exactly `CONNECT`: a `connect` or `Get` would be decided as one method here and handled
/// as another by Envoy or an upstream that folds case, so such methods are refused.
fn valid_method(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 32
        && m.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A PDP reason worth repeating in a problem detail: a short code such as `weekend` or
/// `egress_not_allowed`, never free text.
fn is_reason_code(r: &str) -> bool {
    !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
}

impl Step {
    fn deny(reason: Reason, detail: &str) -> Step {
        Step::Deny(Denial::new(reason, detail))
    }
}
