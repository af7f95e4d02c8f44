//! Mission state at the edge (SPEC §3): Mission Status answers, verified and cached no longer than
//! `fresh_until` and the staleness bound; state events that override the cache at once.

use missiongate_wire::claims::{
    MissionState, MissionStatusClaims, MissionStatusError, PollResponse, SetClaims, TYP_MISSION_STATUS, TYP_SET,
};
use missiongate_wire::jose::{PureVerifier, Verifier};
use missiongate_wire::jws;
use missiongate_wire::time::parse_rfc3339;
use std::collections::HashMap;
use std::rc::Rc;

use crate::authority::{self, Grant};
use crate::config::Config;
use crate::keys::{KeyLookup, KeyStore};

/// Skew allowed on status `iat`/`exp` (SPEC §3: at most 30 s).
pub const STATUS_SKEW: i64 = 30;
/// Longest Mission Status or event answer accepted.
pub const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// How long "the authority does not know this Mission" is remembered.
pub const UNKNOWN_TTL: i64 = 5;
/// How long a failed status fetch is remembered before the next try (requests are refused meanwhile).
pub const FAILURE_BACKOFF: i64 = 1;

/// Most Missions one worker remembers in each of its maps (status answers, "unknown", failures,
/// state events).
pub const MAX_MISSIONS: usize = 100_000;

type Key = (usize, String);

/// Insert into a map that never holds more than [`MAX_MISSIONS`]: entries past their time go
/// first; if it is still full, all of it goes. Forgetting is always safe here: a Mission that is
/// not in the cache is asked about again (and every request waits for the answer).
fn bounded_insert<V>(map: &mut HashMap<Key, V>, key: Key, value: V, live: impl Fn(&V) -> bool) {
    if map.len() >= MAX_MISSIONS && !map.contains_key(&key) {
        map.retain(|_, v| live(v));
        if map.len() >= MAX_MISSIONS {
            map.clear();
        }
    }
    map.insert(key, value);
}

#[derive(Debug, Clone)]
struct StatusEntry {
    state: MissionState,
    version: u64,
    valid_until: i64,
    expires_at: Option<i64>,
    /// The current Authority Set from the answer, when it carried one (containment).
    current: Option<Rc<Vec<Grant>>>,
}

/// The last state event applied for a Mission.
#[derive(Debug, Clone)]
struct EventEntry {
    state: MissionState,
    version: u64,
    expires_at: Option<i64>,
}

/// One state event to apply (from a verified `mission.lifecycle-change` SET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// Mission id.
    pub id: String,
    /// New state.
    pub state: MissionState,
    /// The Mission's version at the change.
    pub version: u64,
    /// The Mission's expiry, if the event carries it.
    pub expires_at: Option<i64>,
    /// The Authority Set changed (the cached status answer no longer says what is in force).
    pub authority_changed: bool,
}

/// What applying a state event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Not newer than what is known: ignored (a duplicate, or a late one after a newer).
    Ignored,
    /// Applied; the cached status answer still holds.
    Applied,
    /// Applied, and the cached status answer was dropped: a version gap, a first event above
    /// version 1, or `authority_changed`. Mission Status is asked again before it is relied on.
    NeedsStatus,
}

/// What the cache says about a Mission now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MissionView {
    /// `active` and fresh.
    Active,
    /// Not active (the state is given).
    Inactive(MissionState),
    /// The authority does not know it.
    Unknown,
    /// Nothing fresh is known: ask the authority.
    NeedFetch,
    /// The authority could not be reached recently.
    Unavailable,
}

/// Per-VM Mission state.
#[derive(Debug, Default)]
pub struct MissionCache {
    status: HashMap<Key, StatusEntry>,
    events: HashMap<Key, EventEntry>,
    unknown: HashMap<Key, i64>,
    failed: HashMap<Key, i64>,
    /// SET `jti`s to acknowledge in the next poll, per issuer (RFC 8936 `ack`).
    pub pending_acks: HashMap<usize, Vec<String>>,
    /// The acknowledgement last sent, per issuer: repeated while nothing new was processed.
    pub last_acks: HashMap<usize, Vec<String>>,
    /// SETs refused, to report in the next poll, per issuer (RFC 8936 `setErrs`): (jti, err, description).
    pub pending_errs: HashMap<usize, Vec<(String, &'static str, &'static str)>>,
}

impl MissionCache {
    /// The view for (issuer, id) at `now`.
    pub fn view(&self, issuer: usize, id: &str, now: i64) -> MissionView {
        let key = (issuer, id.to_owned());
        let status = self.status.get(&key);
        if let Some(EventEntry { state, version, expires_at }) = self.events.get(&key) {
            // An event-only consumer fails safe on the Mission's expiry (signals draft).
            if expires_at.is_some_and(|e| now >= e) {
                return MissionView::Inactive(MissionState::Expired);
            }
            match status {
                // The event is newer than what Mission Status said: it overrides the cache.
                Some(s) if *version >= s.version && !state.is_active() => return MissionView::Inactive(state.clone()),
                Some(_) => {}
                // Never fetched. A terminal state is final. A non-terminal one (a Mission created as
                // `pending_approval` and approved a moment later, a `suspended` one since resumed)
                // may already be stale, so Mission Status is asked; its version decides (an answer
                // older than the event leaves the event in force).
                None if state.is_terminal() => return MissionView::Inactive(state.clone()),
                None => {}
            }
        }
        if let Some(s) = status {
            if now < s.valid_until {
                if s.expires_at.is_some_and(|e| now >= e) {
                    return MissionView::Inactive(MissionState::Expired);
                }
                return if s.state.is_active() { MissionView::Active } else { MissionView::Inactive(s.state.clone()) };
            }
        }
        if self.unknown.get(&key).is_some_and(|&t| now < t) {
            return MissionView::Unknown;
        }
        if self.failed.get(&key).is_some_and(|&t| now < t) {
            return MissionView::Unavailable;
        }
        MissionView::NeedFetch
    }

    /// The current Authority Set from the cached status answer, if it carried one: the token's
    /// entries are narrowed by it (SPEC §3, containment).
    pub fn current_authority(&self, issuer: usize, id: &str) -> Option<Rc<Vec<Grant>>> {
        self.status.get(&(issuer, id.to_owned())).and_then(|s| s.current.clone())
    }

    /// Record a verified status answer, received at `now`.
    pub fn put_status(&mut self, issuer: usize, answer: VerifiedStatus, now: i64) {
        let key = (issuer, answer.id);
        self.failed.remove(&key);
        self.unknown.remove(&key);
        if let Some(old) = self.status.get(&key) {
            if old.version > answer.version {
                return; // never go back to an older version
            }
        }
        // An answer older than an `active` event that asked for it to be settled (a gap, a changed
        // Authority Set) does not settle it: it is not kept, so the next request asks again.
        if self.events.get(&key).is_some_and(|e| e.version > answer.version && e.state.is_active()) {
            return;
        }
        bounded_insert(
            &mut self.status,
            key,
            StatusEntry {
                state: answer.state,
                version: answer.version,
                valid_until: answer.valid_until,
                expires_at: answer.expires_at,
                current: answer.current.map(Rc::new),
            },
            |s| s.valid_until > now,
        );
    }

    /// The authority said it does not know the Mission.
    pub fn put_unknown(&mut self, issuer: usize, id: &str, now: i64) {
        bounded_insert(&mut self.unknown, (issuer, id.to_owned()), now + UNKNOWN_TTL, |t| *t > now);
    }

    /// A fetch failed; refuse for a short backoff rather than hammer the authority.
    pub fn put_failure(&mut self, issuer: usize, id: &str, now: i64) {
        bounded_insert(&mut self.failed, (issuer, id.to_owned()), now + FAILURE_BACKOFF, |t| *t > now);
    }

    /// Apply a state event, idempotently by `version`: one not newer than the last known version
    /// (from an event or a status answer) is ignored, so nothing ever regresses. A version gap, a first
    /// event above version 1, or `authority_changed` drops the cached status answer, so Mission
    /// Status is asked before the filter relies on the Mission again; a non-active state takes
    /// effect at once meanwhile.
    pub fn apply_event(&mut self, issuer: usize, change: &StateChange) -> Applied {
        let key = (issuer, change.id.clone());
        let by_event = self.events.get(&key).map(|e| e.version);
        let by_status = self.status.get(&key).map(|s| s.version);
        let known = by_event.max(by_status);
        if known.is_some_and(|k| k >= change.version) {
            return Applied::Ignored;
        }
        let gap = match known {
            Some(k) => change.version > k.saturating_add(1),
            None => change.version > 1,
        };
        if self.events.len() >= MAX_MISSIONS && !self.events.contains_key(&key) {
            self.forget_events();
        }
        let settle = gap || change.authority_changed;
        let mut outcome = Applied::Applied;
        if settle {
            self.status.remove(&key);
            outcome = Applied::NeedsStatus;
        } else if let Some(s) = self.status.get_mut(&key) {
            if change.state.is_active() {
                // A resume: the state is current, freshness still comes from the status answer.
                s.state = change.state.clone();
                s.version = change.version;
            }
        }
        self.events.insert(
            key,
            EventEntry { state: change.state.clone(), version: change.version, expires_at: change.expires_at },
        );
        outcome
    }

    /// Number of Missions with a status entry.
    pub fn len(&self) -> usize {
        self.status.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.status.is_empty()
    }

    /// Drop entries that can no longer matter (expired status answers, old failures).
    pub fn sweep(&mut self, now: i64) {
        self.status.retain(|_, s| s.valid_until > now);
        self.unknown.retain(|_, t| *t > now);
        self.failed.retain(|_, t| *t > now);
        if self.events.len() >= MAX_MISSIONS {
            self.forget_events();
        }
    }

    /// Forgetting events must not let a cached `active` answer outlive a revocation: the status
    /// answers go with them, so every Mission is asked about again.
    fn forget_events(&mut self) {
        self.events.clear();
        self.status.clear();
    }

    /// Number of entries in the maps other than status answers: (events, unknown, failures).
    pub fn other_counts(&self) -> (usize, usize, usize) {
        (self.events.len(), self.unknown.len(), self.failed.len())
    }
}

/// A verified Mission Status answer.
#[derive(Debug, Clone)]
pub struct VerifiedStatus {
    /// Mission id.
    pub id: String,
    /// State.
    pub state: MissionState,
    /// Version.
    pub version: u64,
    /// Rely on it until this instant (min of `fresh_until` and the staleness bound).
    pub valid_until: i64,
    /// Mission expiry.
    pub expires_at: Option<i64>,
    /// The current Authority Set (`authorization_details` of the answer), compiled, if present.
    pub current: Option<Vec<Grant>>,
}

/// Why a status or event answer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// The signing key is not (yet) known: refetch the authority's JWKS.
    UnknownKey,
    /// Anything else; the message names the check.
    Invalid(&'static str),
}

fn verify_jws(
    config: &Config,
    keys: &KeyStore,
    issuer: usize,
    text: &str,
    typ: &str,
    verifier: &dyn Verifier,
) -> Result<Vec<u8>, AnswerError> {
    let policy = jws::Policy { typ: jws::Typ::Exact(typ), algs: &config.algs };
    let key = |header: &missiongate_wire::jose::Header, alg| match keys.find(issuer, header.kid.as_deref(), alg) {
        KeyLookup::Found(k) => Ok(k),
        KeyLookup::Unknown | KeyLookup::NotLoaded => Err(AnswerError::UnknownKey),
        KeyLookup::WrongType => Err(AnswerError::Invalid("alg does not match the key type")),
    };
    let found = jws::verify_with(text.trim(), &policy, key, verifier);
    match found {
        Ok((_, payload)) => Ok(payload),
        Err(jws::Refusal::Key(e)) => Err(e),
        Err(jws::Refusal::Step(step)) => Err(AnswerError::Invalid(match step {
            jws::Step::NotCompact => "not a compact JWS",
            jws::Step::Header => "bad header",
            jws::Step::Typ => "wrong typ",
            jws::Step::Alg => "alg not allowed",
            jws::Step::SignatureEncoding => "signature encoding",
            jws::Step::Signature => "bad signature",
            jws::Step::PayloadEncoding => "payload encoding",
        })),
    }
}

/// Verify a Mission Status answer (SPEC §3): signature, `typ`, `iss`, `aud`, `nonce`, `mission.id`,
/// `mission.issuer`, `iat`/`exp` within 30 s; freshness capped by the staleness bound.
pub fn verify_status(
    config: &Config,
    keys: &KeyStore,
    issuer: usize,
    body: &[u8],
    mission_id: &str,
    nonce: &str,
    now: i64,
) -> Result<VerifiedStatus, AnswerError> {
    verify_status_with(config, keys, issuer, body, (mission_id, nonce), now, &PureVerifier)
}

/// [`verify_status`] with the host's [`Verifier`]; `expect` is the mission id and the nonce.
pub fn verify_status_with(
    config: &Config,
    keys: &KeyStore,
    issuer: usize,
    body: &[u8],
    expect: (&str, &str),
    now: i64,
    verifier: &dyn Verifier,
) -> Result<VerifiedStatus, AnswerError> {
    let (mission_id, nonce) = expect;
    if body.len() > MAX_ANSWER_BYTES {
        return Err(AnswerError::Invalid("answer too large"));
    }
    let (Some(cfg), Ok(text)) = (config.issuers.get(issuer), std::str::from_utf8(body)) else {
        return Err(AnswerError::Invalid("answer is not text"));
    };
    let Some(ma) = &cfg.mission_authority else { return Err(AnswerError::Invalid("not a mission authority")) };
    let payload = verify_jws(config, keys, issuer, text, TYP_MISSION_STATUS, verifier)?;
    let claims: MissionStatusClaims = serde_json::from_slice(&payload).map_err(|_| AnswerError::Invalid("claims"))?;
    if claims.iss != cfg.issuer {
        return Err(AnswerError::Invalid("iss"));
    }
    if !claims.aud.contains(&ma.audience) {
        return Err(AnswerError::Invalid("aud"));
    }
    if claims.nonce != nonce {
        return Err(AnswerError::Invalid("nonce"));
    }
    if claims.mission.id != mission_id || claims.mission.issuer != cfg.issuer {
        return Err(AnswerError::Invalid("mission"));
    }
    if claims.iat.0 > now + STATUS_SKEW || claims.iat.0 < now - STATUS_SKEW - 60 {
        return Err(AnswerError::Invalid("iat"));
    }
    if claims.exp.0.saturating_add(STATUS_SKEW) <= now {
        return Err(AnswerError::Invalid("exp"));
    }
    let fresh_until = parse_rfc3339(&claims.mission.fresh_until).ok_or(AnswerError::Invalid("fresh_until"))?;
    let expires_at = match &claims.mission.expires_at {
        None => None,
        Some(e) => Some(parse_rfc3339(e).ok_or(AnswerError::Invalid("expires_at"))?),
    };
    let max_stale = i64::try_from(ma.max_staleness_seconds).unwrap_or(300);
    Ok(VerifiedStatus {
        id: claims.mission.id,
        state: claims.mission.state,
        version: claims.mission.version,
        valid_until: fresh_until.min(now.saturating_add(max_stale)),
        expires_at,
        current: claims.authorization_details.as_deref().map(authority::compile),
    })
}

/// Is a non-200 Mission Status answer the draft's not-found answer (`404`, JSON
/// `{"error": "not_found", "error_description": ..., "nonce": <ours>}`)? Only that answer means
/// "unknown Mission"; anything else is a failure of the authority, whose cause is returned.
pub fn status_not_found(status: u16, body: &[u8], nonce: &str) -> Result<(), String> {
    if status != 404 {
        return Err(format!("status endpoint answered HTTP {status}"));
    }
    if body.len() > MAX_ANSWER_BYTES {
        return Err("status endpoint answered 404 with an oversized body".to_owned());
    }
    let Ok(e) = serde_json::from_slice::<MissionStatusError>(body) else {
        return Err("status endpoint answered 404 without the draft's error body (wrong path?)".to_owned());
    };
    if e.error != "not_found" {
        return Err("status endpoint answered 404 with an error other than not_found".to_owned());
    }
    if e.nonce.as_deref() != Some(nonce) {
        return Err("status endpoint answered not_found without echoing the request nonce".to_owned());
    }
    Ok(())
}

/// Form body of a Mission Status request.
pub fn status_request_body(mission_id: &str, audience: &str, nonce: &str) -> Vec<u8> {
    let mut s = String::with_capacity(64 + mission_id.len() + audience.len());
    s.push_str("mission_id=");
    form_encode(&mut s, mission_id);
    s.push_str("&audience=");
    form_encode(&mut s, audience);
    s.push_str("&nonce=");
    form_encode(&mut s, nonce);
    s.into_bytes()
}

fn form_encode(out: &mut String, v: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*') {
            out.push(char::from(b));
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// One state event, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEvent {
    /// SET id.
    pub jti: String,
    /// The change.
    pub change: StateChange,
}

/// A verified poll answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifiedPoll {
    /// Verified events, ordered by Mission and version (so a batch delivered out of order applies in order).
    pub events: Vec<VerifiedEvent>,
    /// SETs refused: (jti, RFC 8935 error code, description). Reported in `setErrs`.
    pub refused: Vec<(String, &'static str, &'static str)>,
    /// SETs signed by a key not known yet: neither acknowledged nor refused, so they come again.
    pub unknown_key: usize,
    /// More are waiting.
    pub more: bool,
}

/// Verify a poll answer (RFC 8936) of `mission.lifecycle-change` SETs (signals draft): `typ
/// secevent+jwt`, signature, `iss` the Mission issuer, `aud` this gateway's audience, `iat` not in the
/// future. A SET that fails is refused (never changes state) and reported.
pub fn verify_events(
    config: &Config,
    keys: &KeyStore,
    issuer: usize,
    body: &[u8],
    now: i64,
) -> Result<VerifiedPoll, AnswerError> {
    verify_events_with(config, keys, issuer, body, now, &PureVerifier)
}

/// [`verify_events`] with the host's [`Verifier`].
pub fn verify_events_with(
    config: &Config,
    keys: &KeyStore,
    issuer: usize,
    body: &[u8],
    now: i64,
    verifier: &dyn Verifier,
) -> Result<VerifiedPoll, AnswerError> {
    if body.len() > 4 * MAX_ANSWER_BYTES {
        return Err(AnswerError::Invalid("answer too large"));
    }
    let Some(cfg) = config.issuers.get(issuer) else { return Err(AnswerError::Invalid("issuer")) };
    let Some(ma) = &cfg.mission_authority else { return Err(AnswerError::Invalid("not a mission authority")) };
    let poll: PollResponse = serde_json::from_slice(body).map_err(|_| AnswerError::Invalid("not a poll response"))?;
    let mut out = VerifiedPoll { more: poll.more_available, ..VerifiedPoll::default() };
    for (jti, set) in &poll.sets {
        if !missiongate_wire::claims::is_safe_id(jti) {
            continue; // not even reportable
        }
        let mut refuse = |err: &'static str, why: &'static str| out.refused.push((jti.clone(), err, why));
        let Some(jws) = set.as_str() else {
            refuse("invalid_request", "not a compact JWS");
            continue;
        };
        let payload = match verify_jws(config, keys, issuer, jws, TYP_SET, verifier) {
            Ok(p) => p,
            Err(AnswerError::UnknownKey) => {
                out.unknown_key += 1;
                continue;
            }
            Err(AnswerError::Invalid(why)) => {
                refuse("invalid_key", why);
                continue;
            }
        };
        let Ok(claims) = serde_json::from_slice::<SetClaims>(&payload) else {
            refuse("invalid_request", "SET claims");
            continue;
        };
        if claims.iss != cfg.issuer {
            refuse("invalid_issuer", "iss is not the Mission issuer");
            continue;
        }
        if &claims.jti != jti {
            refuse("invalid_request", "jti differs from its key in sets");
            continue;
        }
        // SPEC §3: the SET's `aud` MUST be this gateway's audience.
        if !claims.aud.as_ref().is_some_and(|a| a.contains(&ma.audience)) {
            refuse("invalid_audience", "aud is not this gateway");
            continue;
        }
        if claims.iat.0 > now + STATUS_SKEW {
            refuse("invalid_request", "iat in the future");
            continue;
        }
        let Some(ev) = claims.mission_state() else {
            refuse("invalid_request", "no well-formed mission.lifecycle-change event");
            continue;
        };
        if ev.mission.issuer != cfg.issuer {
            refuse("invalid_issuer", "mission.issuer is not the SET issuer");
            continue;
        }
        if parse_rfc3339(&ev.committed_at).is_none() {
            refuse("invalid_request", "committed_at");
            continue;
        }
        let expires_at = match &ev.expires_at {
            None => None,
            Some(e) => match parse_rfc3339(e) {
                Some(t) => Some(t),
                None => {
                    refuse("invalid_request", "expires_at");
                    continue;
                }
            },
        };
        out.events.push(VerifiedEvent {
            jti: claims.jti,
            change: StateChange {
                id: ev.mission.id,
                state: ev.state,
                version: ev.version,
                expires_at,
                authority_changed: ev.authority_changed.unwrap_or(false),
            },
        });
    }
    if out.unknown_key > 0 && out.events.is_empty() && out.refused.is_empty() {
        return Err(AnswerError::UnknownKey);
    }
    out.events.sort_by(|a, b| (&a.change.id, a.change.version).cmp(&(&b.change.id, b.change.version)));
    Ok(out)
}

/// Body of the next poll (RFC 8936 §2.4): acknowledge each processed `jti` in `ack`, report refused
/// SETs in `setErrs`; long-poll unless more are known to be waiting.
pub fn poll_request_body(
    acks: &[String],
    errs: &[(String, &'static str, &'static str)],
    return_immediately: bool,
) -> Vec<u8> {
    let mut set_errs = serde_json::Map::new();
    for (jti, err, why) in errs {
        set_errs.insert(jti.clone(), serde_json::json!({"err": err, "description": why}));
    }
    let mut body = serde_json::json!({"ack": acks, "maxEvents": 256, "returnImmediately": return_immediately});
    if !set_errs.is_empty() {
        if let Some(o) = body.as_object_mut() {
            o.insert("setErrs".to_owned(), serde_json::Value::Object(set_errs));
        }
    }
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(version: u64, until: i64) -> VerifiedStatus {
        VerifiedStatus {
            id: "m".into(),
            state: MissionState::Active,
            version,
            valid_until: until,
            expires_at: None,
            current: None,
        }
    }

    fn ev(id: &str, state: MissionState, version: u64) -> StateChange {
        StateChange { id: id.into(), state, version, expires_at: None, authority_changed: false }
    }

    #[test]
    fn status_then_event_then_stale_event() {
        let mut c = MissionCache::default();
        assert_eq!(c.view(0, "m", 100), MissionView::NeedFetch);
        c.put_status(0, active(3, 130), 0);
        assert_eq!(c.view(0, "m", 100), MissionView::Active);
        assert_eq!(c.view(0, "m", 130), MissionView::NeedFetch);
        assert!(c.apply_event(0, &ev("m", MissionState::Revoked, 4)) != Applied::Ignored);
        assert_eq!(c.view(0, "m", 100), MissionView::Inactive(MissionState::Revoked));
        // an older or replayed event never resurrects
        assert_eq!(c.apply_event(0, &ev("m", MissionState::Active, 4)), Applied::Ignored);
        assert_eq!(c.apply_event(0, &ev("m", MissionState::Active, 2)), Applied::Ignored);
        assert_eq!(c.view(0, "m", 100), MissionView::Inactive(MissionState::Revoked));
        // nor does an older status answer
        c.put_status(0, active(3, 200), 0);
        assert_eq!(c.view(0, "m", 150), MissionView::Inactive(MissionState::Revoked));
    }

    #[test]
    fn suspend_then_resume_by_events() {
        let mut c = MissionCache::default();
        c.put_status(0, active(1, 200), 0);
        c.apply_event(0, &ev("m", MissionState::Suspended, 2));
        assert_eq!(c.view(0, "m", 100), MissionView::Inactive(MissionState::Suspended));
        c.apply_event(0, &ev("m", MissionState::Active, 3));
        assert_eq!(c.view(0, "m", 100), MissionView::Active);
    }

    #[test]
    fn a_non_terminal_event_for_a_mission_never_fetched_is_confirmed_by_status() {
        let mut c = MissionCache::default();
        // Created (v1, pending_approval) and approved (v2) at the authority; only the first event
        // has arrived when a request comes: ask Mission Status rather than refuse on a stale event.
        assert!(c.apply_event(0, &ev("m", MissionState::PendingApproval, 1)) != Applied::Ignored);
        assert_eq!(c.view(0, "m", 100), MissionView::NeedFetch);
        c.put_status(0, active(2, 200), 0);
        assert_eq!(c.view(0, "m", 100), MissionView::Active);
        // The late approval event changes nothing.
        assert_eq!(c.apply_event(0, &ev("m", MissionState::Active, 2)), Applied::Ignored);
        assert_eq!(c.view(0, "m", 100), MissionView::Active);
        // A status answer older than the event leaves the event in force.
        let mut d = MissionCache::default();
        d.apply_event(0, &ev("m", MissionState::Suspended, 5));
        assert_eq!(d.view(0, "m", 100), MissionView::NeedFetch);
        d.put_status(0, active(4, 200), 0);
        assert_eq!(d.view(0, "m", 100), MissionView::Inactive(MissionState::Suspended));
    }

    #[test]
    fn forgetting_events_forgets_the_status_answers_too() {
        let mut c = MissionCache::default();
        c.put_status(0, active(1, 200), 0);
        c.apply_event(0, &ev("m", MissionState::Revoked, 2));
        for i in 0..=100_000 {
            c.apply_event(0, &ev(&format!("other-{i}"), MissionState::Revoked, 1));
        }
        c.sweep(100);
        assert_eq!(c.view(0, "m", 100), MissionView::NeedFetch, "a revoked Mission must not read as active");
    }

    #[test]
    fn event_before_any_status_blocks() {
        let mut c = MissionCache::default();
        c.apply_event(0, &ev("m", MissionState::Revoked, 9));
        assert_eq!(c.view(0, "m", 0), MissionView::Inactive(MissionState::Revoked));
    }

    #[test]
    fn expiry_and_unknown_and_failure() {
        let mut c = MissionCache::default();
        c.put_status(0, VerifiedStatus { expires_at: Some(150), ..active(1, 200) }, 0);
        assert_eq!(c.view(0, "m", 149), MissionView::Active);
        assert_eq!(c.view(0, "m", 150), MissionView::Inactive(MissionState::Expired));
        c.put_unknown(0, "x", 100);
        assert_eq!(c.view(0, "x", 101), MissionView::Unknown);
        assert_eq!(c.view(0, "x", 106), MissionView::NeedFetch);
        c.put_failure(0, "y", 100);
        assert_eq!(c.view(0, "y", 100), MissionView::Unavailable);
        assert_eq!(c.view(0, "y", 101), MissionView::NeedFetch);
    }

    #[test]
    fn duplicates_reordering_gaps_and_authority_changes() {
        let mut c = MissionCache::default();
        c.put_status(0, active(1, 200), 0);
        assert_eq!(c.apply_event(0, &ev("m", MissionState::Suspended, 2)), Applied::Applied);
        assert_eq!(c.apply_event(0, &ev("m", MissionState::Suspended, 2)), Applied::Ignored, "duplicate");
        assert_eq!(c.apply_event(0, &ev("m", MissionState::Active, 1)), Applied::Ignored, "late, older");
        // v3 was lost: v4 (active) is a gap; the status answer goes and Mission Status is asked.
        assert_eq!(c.apply_event(0, &ev("m", MissionState::Active, 4)), Applied::NeedsStatus);
        assert_eq!(c.view(0, "m", 100), MissionView::NeedFetch);
        // An answer older than the event does not settle it.
        c.put_status(0, active(3, 200), 0);
        assert_eq!(c.view(0, "m", 100), MissionView::NeedFetch);
        c.put_status(0, active(4, 200), 0);
        assert_eq!(c.view(0, "m", 100), MissionView::Active);
        // The late v3 changes nothing.
        assert_eq!(c.apply_event(0, &ev("m", MissionState::Revoked, 3)), Applied::Ignored);
        assert_eq!(c.view(0, "m", 100), MissionView::Active);
        // authority_changed drops the cached answer although the state stays active.
        let changed = StateChange { authority_changed: true, ..ev("m", MissionState::Active, 5) };
        assert_eq!(c.apply_event(0, &changed), Applied::NeedsStatus);
        assert_eq!(c.view(0, "m", 100), MissionView::NeedFetch);
        // A first event above version 1 for an unseen Mission needs Mission Status.
        assert_eq!(c.apply_event(0, &ev("n", MissionState::Active, 7)), Applied::NeedsStatus);
        assert_eq!(c.view(0, "n", 100), MissionView::NeedFetch);
        // A first event at version 1 is just applied.
        assert_eq!(c.apply_event(0, &ev("o", MissionState::Active, 1)), Applied::Applied);
        // An event's expires_at makes the Mission expired without a status answer.
        let exp = StateChange { expires_at: Some(50), ..ev("p", MissionState::Suspended, 1) };
        c.apply_event(0, &exp);
        assert_eq!(c.view(0, "p", 50), MissionView::Inactive(MissionState::Expired));
    }

    #[test]
    fn only_the_drafts_not_found_means_unknown() {
        let ok = br#"{"error":"not_found","error_description":"no such mission","nonce":"n1"}"#;
        assert_eq!(status_not_found(404, ok, "n1"), Ok(()));
        assert!(status_not_found(404, ok, "n2").is_err(), "nonce not echoed");
        assert!(status_not_found(404, b"", "n1").is_err(), "bare 404");
        assert!(status_not_found(404, b"<html>not found</html>", "n1").is_err());
        assert!(status_not_found(404, br#"{"error":"invalid_request","nonce":"n1"}"#, "n1").is_err());
        assert!(status_not_found(401, ok, "n1").is_err());
        assert!(status_not_found(500, b"oops", "n1").unwrap_err().contains("500"));
    }

    #[test]
    fn poll_body_acks_each_jti_and_reports_refusals() {
        let b = poll_request_body(&["a".into(), "b".into()], &[("c".into(), "invalid_audience", "aud")], true);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["ack"], serde_json::json!(["a", "b"]));
        assert_eq!(v["setErrs"]["c"]["err"], "invalid_audience");
        assert_eq!(v["returnImmediately"], true);
        let b = poll_request_body(&[], &[], false);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert!(v.get("setErrs").is_none());
    }

    #[test]
    fn form_body() {
        assert_eq!(
            status_request_body("msn_a", "https://gw example", "n+1"),
            b"mission_id=msn_a&audience=https%3A%2F%2Fgw+example&nonce=n%2B1".to_vec()
        );
    }
}
