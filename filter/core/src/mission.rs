//! Mission state at the edge (SPEC §3): Mission Status answers, verified and cached no longer than
//! `fresh_until` and the staleness bound; state events that override the cache at once.

use missiongate_wire::claims::{
    MissionState, MissionStatusClaims, PollResponse, SetClaims, TYP_MISSION_STATUS, TYP_SET,
};
use missiongate_wire::jose::{Alg, Compact};
use missiongate_wire::time::parse_rfc3339;
use std::collections::HashMap;

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
    events: HashMap<Key, (MissionState, u64)>,
    unknown: HashMap<Key, i64>,
    failed: HashMap<Key, i64>,
    /// Highest event sequence acknowledged, per issuer.
    pub event_cursor: HashMap<usize, String>,
}

impl MissionCache {
    /// The view for (issuer, id) at `now`.
    pub fn view(&self, issuer: usize, id: &str, now: i64) -> MissionView {
        let key = (issuer, id.to_owned());
        let status = self.status.get(&key);
        if let Some((state, version)) = self.events.get(&key) {
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
        bounded_insert(
            &mut self.status,
            key,
            StatusEntry {
                state: answer.state,
                version: answer.version,
                valid_until: answer.valid_until,
                expires_at: answer.expires_at,
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

    /// Apply a state event. An event whose version is not newer than the one held is ignored.
    /// Returns true when it changed anything.
    pub fn apply_event(&mut self, issuer: usize, id: &str, state: MissionState, version: u64) -> bool {
        let key = (issuer, id.to_owned());
        if self.events.get(&key).is_some_and(|(_, v)| *v >= version) {
            return false;
        }
        if self.status.get(&key).is_some_and(|s| s.version >= version) {
            return false;
        }
        if self.events.len() >= MAX_MISSIONS && !self.events.contains_key(&key) {
            self.forget_events();
        }
        if let Some(s) = self.status.get_mut(&key) {
            if state.is_active() {
                // A resume: the state is current, freshness still comes from the status answer.
                s.state = state.clone();
                s.version = version;
            }
        }
        self.events.insert(key, (state, version));
        true
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
}

/// Why a status or event answer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerError {
    /// The signing key is not (yet) known: refetch the authority's JWKS.
    UnknownKey,
    /// Anything else; the message names the check.
    Invalid(&'static str),
}

fn verify_jws(config: &Config, keys: &KeyStore, issuer: usize, jws: &str, typ: &str) -> Result<Vec<u8>, AnswerError> {
    let parts = Compact::split(jws.trim()).map_err(|_| AnswerError::Invalid("not a compact JWS"))?;
    let header = parts.header().map_err(|_| AnswerError::Invalid("bad header"))?;
    if header.typ.as_deref() != Some(typ) {
        return Err(AnswerError::Invalid("wrong typ"));
    }
    let alg = match Alg::from_name(&header.alg) {
        Some(a) if config.algs.contains(&a) => a,
        _ => return Err(AnswerError::Invalid("alg not allowed")),
    };
    let key = match keys.find(issuer, header.kid.as_deref(), alg) {
        KeyLookup::Found(k) => k,
        KeyLookup::Unknown | KeyLookup::NotLoaded => return Err(AnswerError::UnknownKey),
        KeyLookup::WrongType => return Err(AnswerError::Invalid("alg does not match the key type")),
    };
    let sig = parts.signature_bytes().map_err(|_| AnswerError::Invalid("signature encoding"))?;
    key.verify(alg, parts.signing_input.as_bytes(), &sig).map_err(|_| AnswerError::Invalid("bad signature"))?;
    parts.payload_bytes().map_err(|_| AnswerError::Invalid("payload encoding"))
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
    if body.len() > MAX_ANSWER_BYTES {
        return Err(AnswerError::Invalid("answer too large"));
    }
    let (Some(cfg), Ok(text)) = (config.issuers.get(issuer), std::str::from_utf8(body)) else {
        return Err(AnswerError::Invalid("answer is not text"));
    };
    let Some(ma) = &cfg.mission_authority else { return Err(AnswerError::Invalid("not a mission authority")) };
    let payload = verify_jws(config, keys, issuer, text, TYP_MISSION_STATUS)?;
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
    })
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
    /// Mission id.
    pub id: String,
    /// New state.
    pub state: MissionState,
    /// Version.
    pub version: u64,
}

/// Verify a poll answer (RFC 8936) and return its events; SETs that fail verification are skipped
/// and counted (a forged SET never changes state). The ack cursor moves to the highest numeric jti.
pub fn verify_events(
    config: &Config,
    keys: &KeyStore,
    issuer: usize,
    body: &[u8],
    now: i64,
) -> Result<(Vec<VerifiedEvent>, usize, bool), AnswerError> {
    if body.len() > 4 * MAX_ANSWER_BYTES {
        return Err(AnswerError::Invalid("answer too large"));
    }
    let Some(cfg) = config.issuers.get(issuer) else { return Err(AnswerError::Invalid("issuer")) };
    let Some(ma) = &cfg.mission_authority else { return Err(AnswerError::Invalid("not a mission authority")) };
    let poll: PollResponse = serde_json::from_slice(body).map_err(|_| AnswerError::Invalid("not a poll response"))?;
    let mut out = Vec::new();
    let mut rejected = 0;
    let mut unknown_key = false;
    for (jti, set) in &poll.sets {
        let Some(jws) = set.as_str() else {
            rejected += 1;
            continue;
        };
        let payload = match verify_jws(config, keys, issuer, jws, TYP_SET) {
            Ok(p) => p,
            Err(AnswerError::UnknownKey) => {
                unknown_key = true;
                rejected += 1;
                continue;
            }
            Err(_) => {
                rejected += 1;
                continue;
            }
        };
        let Ok(claims) = serde_json::from_slice::<SetClaims>(&payload) else {
            rejected += 1;
            continue;
        };
        if claims.iss != cfg.issuer || &claims.jti != jti {
            rejected += 1;
            continue;
        }
        // SPEC §3: the SET's `aud` MUST be this gateway's audience; one issued in the future (beyond
        // the skew) is not trusted either.
        if !claims.aud.as_ref().is_some_and(|a| a.contains(&ma.audience)) || claims.iat.0 > now + STATUS_SKEW {
            rejected += 1;
            continue;
        }
        match claims.mission_state() {
            Some(ev) if ev.issuer == cfg.issuer => {
                out.push(VerifiedEvent { jti: claims.jti, id: ev.id, state: ev.state, version: ev.version });
            }
            _ => rejected += 1,
        }
    }
    if unknown_key && out.is_empty() {
        return Err(AnswerError::UnknownKey);
    }
    out.sort_by_key(|e| (e.jti.parse::<u64>().unwrap_or(u64::MAX), e.version));
    Ok((out, rejected, poll.more_available))
}

/// Body of the next poll: acknowledge the cursor; long-poll unless more are known to be waiting.
pub fn poll_request_body(cursor: Option<&str>, return_immediately: bool) -> Vec<u8> {
    let ack: Vec<&str> = cursor.into_iter().collect();
    serde_json::to_vec(&serde_json::json!({"ack": ack, "maxEvents": 256, "returnImmediately": return_immediately}))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active(version: u64, until: i64) -> VerifiedStatus {
        VerifiedStatus { id: "m".into(), state: MissionState::Active, version, valid_until: until, expires_at: None }
    }

    #[test]
    fn status_then_event_then_stale_event() {
        let mut c = MissionCache::default();
        assert_eq!(c.view(0, "m", 100), MissionView::NeedFetch);
        c.put_status(0, active(3, 130), 0);
        assert_eq!(c.view(0, "m", 100), MissionView::Active);
        assert_eq!(c.view(0, "m", 130), MissionView::NeedFetch);
        assert!(c.apply_event(0, "m", MissionState::Revoked, 4));
        assert_eq!(c.view(0, "m", 100), MissionView::Inactive(MissionState::Revoked));
        // an older or replayed event never resurrects
        assert!(!c.apply_event(0, "m", MissionState::Active, 4));
        assert!(!c.apply_event(0, "m", MissionState::Active, 2));
        assert_eq!(c.view(0, "m", 100), MissionView::Inactive(MissionState::Revoked));
        // nor does an older status answer
        c.put_status(0, active(3, 200), 0);
        assert_eq!(c.view(0, "m", 150), MissionView::Inactive(MissionState::Revoked));
    }

    #[test]
    fn suspend_then_resume_by_events() {
        let mut c = MissionCache::default();
        c.put_status(0, active(1, 200), 0);
        c.apply_event(0, "m", MissionState::Suspended, 2);
        assert_eq!(c.view(0, "m", 100), MissionView::Inactive(MissionState::Suspended));
        c.apply_event(0, "m", MissionState::Active, 3);
        assert_eq!(c.view(0, "m", 100), MissionView::Active);
    }

    #[test]
    fn a_non_terminal_event_for_a_mission_never_fetched_is_confirmed_by_status() {
        let mut c = MissionCache::default();
        // Created (v1, pending_approval) and approved (v2) at the authority; only the first event
        // has arrived when a request comes: ask Mission Status rather than refuse on a stale event.
        assert!(c.apply_event(0, "m", MissionState::PendingApproval, 1));
        assert_eq!(c.view(0, "m", 100), MissionView::NeedFetch);
        c.put_status(0, active(2, 200), 0);
        assert_eq!(c.view(0, "m", 100), MissionView::Active);
        // The late approval event changes nothing.
        assert!(!c.apply_event(0, "m", MissionState::Active, 2));
        assert_eq!(c.view(0, "m", 100), MissionView::Active);
        // A status answer older than the event leaves the event in force.
        let mut d = MissionCache::default();
        d.apply_event(0, "m", MissionState::Suspended, 5);
        assert_eq!(d.view(0, "m", 100), MissionView::NeedFetch);
        d.put_status(0, active(4, 200), 0);
        assert_eq!(d.view(0, "m", 100), MissionView::Inactive(MissionState::Suspended));
    }

    #[test]
    fn forgetting_events_forgets_the_status_answers_too() {
        let mut c = MissionCache::default();
        c.put_status(0, active(1, 200), 0);
        c.apply_event(0, "m", MissionState::Revoked, 2);
        for i in 0..=100_000 {
            c.apply_event(0, &format!("other-{i}"), MissionState::Revoked, 1);
        }
        c.sweep(100);
        assert_eq!(c.view(0, "m", 100), MissionView::NeedFetch, "a revoked Mission must not read as active");
    }

    #[test]
    fn event_before_any_status_blocks() {
        let mut c = MissionCache::default();
        c.apply_event(0, "m", MissionState::Revoked, 9);
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
    fn form_body() {
        assert_eq!(
            status_request_body("msn_a", "https://gw example", "n+1"),
            b"mission_id=msn_a&audience=https%3A%2F%2Fgw+example&nonce=n%2B1".to_vec()
        );
    }
}
