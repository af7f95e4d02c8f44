//! The Mission authority service: Missions and their lifecycle, access tokens, Mission Status and the
//! state-event feed. HTTP-agnostic; [`crate::http`] maps it onto routes.
//!
//! # Event feed semantics (RFC 8936 poll delivery of RFC 8417 SETs)
//!
//! - Every state change (creation in `pending_approval` included) appends one event with a global,
//!   strictly increasing sequence number `seq`, committed in the same transaction as the change. The
//!   event is a SET signed once, at append time, whose `jti` is `seq` in decimal.
//! - The event is `mission.lifecycle-change` (`draft-mcguinness-oauth-mission-signals`).
//! - A receiver acknowledges each SET by `jti` (`ack`, or `setErrs` for one it refused). Stateless on
//!   the server: a poll returns the events whose `seq` is greater than the highest acknowledged `jti`
//!   (all retained events when there is none), oldest
//!   first, at most `maxEvents` (default 100, at most 1000) with `moreAvailable` set when more are
//!   waiting. The server keeps no per-receiver cursor, so any number of receivers (every Envoy worker of
//!   every gateway) poll independently and an ack never hides an event from anyone else. A receiver
//!   acknowledges every `jti` it has processed in its next poll.
//! - Events are retained for `--event-retention-seconds` (default 24 h, never less than 1 h), then
//!   pruned; a receiver that falls further behind must re-establish state through Mission Status.
//! - `returnImmediately: false` (the RFC 8936 default when absent) long-polls: when nothing is newer
//!   than the ack, the answer waits up to `--longpoll-seconds` and is sent as soon as an event is
//!   committed (a `tokio::sync::watch` wakes every waiting poll), so a revocation reaches a
//!   long-polling gateway within milliseconds. `maxEvents: 0` only acknowledges and never waits.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::watch;

use missiongate_wire::claims::{
    AccessTokenClaims, Audience, Confirmation, MissionClaim, MissionState, MissionStatusClaims, MissionStatusMission,
    NumericDate, PollRequest, PollResponse, SetClaims, EVENT_MISSION_STATE, TYP_MISSION_STATUS, TYP_SET,
};
use missiongate_wire::jose::JwkSet;
use missiongate_wire::time::format_rfc3339;

use crate::dpop::DpopVerifier;
use crate::keys::{KeyError, KeyRing};
use crate::mission::{self, Action, CreateMission};
use crate::store::{
    EventDraft, MissionRow, NewMission, SignedEvent, Store, StoreError, TransitionOutcome, TransitionRow,
};
use crate::util::{new_client_secret, new_jti, new_mission_id, now_secs, secret_matches, sha256, RandomError};

/// JOSE `typ` of access tokens minted here.
pub const TYP_AT_JWT: &str = "at+jwt";
/// Lifetime of a Mission Status response (`exp - iat`).
pub const STATUS_LIFETIME_SECONDS: i64 = 60;
/// Events are never retained for less than this.
pub const MIN_EVENT_RETENTION_SECONDS: i64 = 3600;
/// Default and maximum `maxEvents`.
pub const DEFAULT_MAX_EVENTS: u32 = 100;
/// Largest `maxEvents` honoured.
pub const MAX_MAX_EVENTS: u32 = 1000;
/// Actor recorded for clock-driven transitions.
pub const ACTOR_CLOCK: &str = "system:clock";

/// Settings of the authority.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Issuer identifier (`iss` of everything signed here, and the Mission issuer).
    pub issuer: String,
    /// `fresh_until` = now + this, in Mission Status responses.
    pub status_fresh_seconds: i64,
    /// Lifetime of access tokens.
    pub token_lifetime_seconds: i64,
    /// Longest long poll.
    pub longpoll_seconds: u64,
    /// How long events are kept.
    pub event_retention_seconds: i64,
    /// `aud` of state-event SETs: the audiences of the gateways that consume the feed (SPEC §3: a
    /// gateway accepts only SETs naming its own audience). Empty: SETs carry no `aud`.
    pub gateway_audiences: Vec<String>,
}

impl Settings {
    /// The token endpoint URL (DPoP `htu`).
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }
}

/// Why an authority operation failed.
#[derive(Debug)]
pub enum AuthorityError {
    /// No such Mission (or, at the token endpoint, not this client's).
    NotFound,
    /// The request is invalid; the message says why.
    Invalid(String),
    /// The lifecycle transition is not legal from the Mission's state.
    Conflict {
        /// Mission id.
        id: String,
        /// Its current state.
        state: MissionState,
        /// The refused action.
        action: Action,
    },
    /// The Mission is not active, so nothing can be derived from it.
    Inactive {
        /// Its state (`expired` when `expires_at` has passed).
        state: MissionState,
    },
    /// Client authentication failed at the token endpoint.
    InvalidClient,
    /// A failure of storage, randomness or signing: a 500.
    Internal(String),
}

impl std::fmt::Display for AuthorityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthorityError::NotFound => f.write_str("mission not found"),
            AuthorityError::Invalid(m) => f.write_str(m),
            AuthorityError::Conflict { state, action, .. } => {
                write!(f, "cannot {} a mission that is {state}", action.name())
            }
            AuthorityError::Inactive { state } => write!(f, "the mission is {state}, not active"),
            AuthorityError::InvalidClient => f.write_str("client authentication failed"),
            AuthorityError::Internal(m) => write!(f, "internal error: {m}"),
        }
    }
}

impl std::error::Error for AuthorityError {}

impl From<StoreError> for AuthorityError {
    fn from(e: StoreError) -> Self {
        AuthorityError::Internal(e.to_string())
    }
}

impl From<RandomError> for AuthorityError {
    fn from(e: RandomError) -> Self {
        AuthorityError::Internal(e.to_string())
    }
}

impl From<KeyError> for AuthorityError {
    fn from(e: KeyError) -> Self {
        AuthorityError::Internal(e.to_string())
    }
}

/// Why [`Authority::verify_own`] refused a JWS.
#[derive(Debug)]
pub enum VerifyError {
    /// Not a compact JWS with a `kid`.
    Malformed,
    /// No published key has that `kid`.
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// Storage failed.
    Internal(String),
}

/// A Mission just created, with its client secret (returned once, never stored in clear).
#[derive(Debug)]
pub struct Created {
    /// The Mission.
    pub mission: MissionRow,
    /// The client secret.
    pub client_secret: String,
}

/// A minted access token.
#[derive(Debug)]
pub struct Minted {
    /// Compact JWS.
    pub token: String,
    /// Seconds until `exp`.
    pub expires_in: i64,
    /// `DPoP` when bound to a key, else `Bearer`.
    pub token_type: &'static str,
    /// The Mission it was minted for.
    pub mission: MissionRow,
}

/// The Mission authority.
#[derive(Debug)]
pub struct Authority {
    settings: Settings,
    store: Store,
    keys: KeyRing,
    dpop: DpopVerifier,
    events: watch::Sender<i64>,
    shutdown: watch::Receiver<bool>,
}

impl Authority {
    /// Open the authority over `store`: claims the database for the issuer and loads (or creates) keys.
    pub async fn open(
        settings: Settings,
        store: Store,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Arc<Authority>, AuthorityError> {
        store.claim_issuer(&settings.issuer).await?;
        let keys = KeyRing::load(&store, now_secs()).await?;
        let last = store.last_seq().await?;
        let (events, _) = watch::channel(last);
        Ok(Arc::new(Authority { settings, store, keys, dpop: DpopVerifier::new(), events, shutdown }))
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store (for shutdown).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The DPoP verifier.
    pub fn dpop(&self) -> &DpopVerifier {
        &self.dpop
    }

    fn notify(&self, seq: i64) {
        self.events.send_if_modified(|last| {
            if seq > *last {
                *last = seq;
                true
            } else {
                false
            }
        });
    }

    /// A state event committed by another replica (seen through the database): wake long polls.
    pub fn observe_committed(&self, seq: i64) {
        self.notify(seq);
    }

    /// A closure that signs an event as a SET with `key`.
    fn set_signer(&self, key: Arc<crate::keys::ActiveKey>) -> impl FnOnce(&EventDraft) -> Result<SignedEvent, String> {
        let aud = match self.settings.gateway_audiences.as_slice() {
            [] => None,
            [one] => Some(Audience::One(one.clone())),
            many => Some(Audience::Many(many.to_vec())),
        };
        move |draft: &EventDraft| {
            // `mission.lifecycle-change` (draft-mcguinness-oauth-mission-signals).
            let mut event = json!({
                "mission": {"id": draft.mission_id, "issuer": draft.issuer},
                "state": draft.state,
                "version": draft.version,
                "committed_at": format_rfc3339(draft.at),
                "expires_at": format_rfc3339(draft.expires_at),
            });
            if let (Some(prior), Some(obj)) = (&draft.prior_state, event.as_object_mut()) {
                obj.insert("prior_state".to_owned(), json!(prior));
            }
            let mut events = Map::new();
            events.insert(EVENT_MISSION_STATE.to_owned(), event);
            let claims = SetClaims {
                iss: draft.issuer.clone(),
                iat: NumericDate(draft.at),
                jti: draft.seq.to_string(),
                aud,
                events,
            };
            let payload = serde_json::to_value(&claims).map_err(|e| e.to_string())?;
            Ok(SignedEvent { kid: key.kid.clone(), jws: key.sign(TYP_SET, &payload) })
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Missions
    // ---------------------------------------------------------------------------------------------

    /// Create a Mission in `pending_approval` from a Mission Intent and a requested Authority Set.
    pub async fn create(&self, req: CreateMission, actor: &str) -> Result<Created, AuthorityError> {
        let now = now_secs();
        let valid = req.validate(now).map_err(|e| AuthorityError::Invalid(e.0))?;
        let issuer = self.settings.issuer.clone();
        let client_secret = new_client_secret()?;
        let new = NewMission {
            id: new_mission_id()?,
            intent_hash: mission::intent_hash(&issuer, &valid.intent),
            authority_hash: mission::authority_hash(&issuer, &valid.authority),
            issuer,
            intent: valid.intent,
            authority: valid.authority,
            client_id: valid.client_id,
            client_secret_sha256: sha256(client_secret.as_bytes()).to_vec(),
            expires_at: valid.expires_at,
        };
        let key = self.keys.signer_until(&self.store, now + self.settings.event_retention_seconds).await?;
        let (row, seq) = self.store.insert_mission(&new, actor, now, self.set_signer(key)).await?;
        self.notify(seq);
        tracing::info!(mission = %row.id, client_id = %row.client_id, actor, "mission created");
        Ok(Created { mission: row, client_secret })
    }

    /// Apply a lifecycle action. Expiry that is due is applied first, so a late action meets `expired`.
    pub async fn transition(&self, id: &str, action: Action, actor: &str) -> Result<MissionRow, AuthorityError> {
        match self.apply(id, action, actor).await? {
            TransitionOutcome::NotFound => Err(AuthorityError::NotFound),
            TransitionOutcome::Applied(m, _) => Ok(m),
            TransitionOutcome::Refused(m) => {
                let m = self.expire_if_due(m).await?;
                Err(AuthorityError::Conflict { id: m.id, state: m.state, action })
            }
        }
    }

    /// One attempt at a transition, decided inside the write transaction.
    async fn apply(&self, id: &str, action: Action, actor: &str) -> Result<TransitionOutcome, AuthorityError> {
        let now = now_secs();
        let key = self.keys.signer_until(&self.store, now + self.settings.event_retention_seconds).await?;
        let decide = |m: &MissionRow| {
            // An action on a Mission past `expires_at` is refused here and the Mission expired instead.
            if action != Action::Expire && mission::expiry_due(&m.state, m.expires_at, now) {
                return None;
            }
            if action == Action::Expire && !mission::expiry_due(&m.state, m.expires_at, now) {
                return None;
            }
            mission::next_state(&m.state, action)
        };
        let outcome = self.store.transition(id, actor, now, decide, self.set_signer(key)).await?;
        if let TransitionOutcome::Applied(m, seq) = &outcome {
            self.notify(*seq);
            tracing::info!(mission = %m.id, state = %m.state, version = m.version, actor, "mission transition");
        }
        Ok(outcome)
    }

    /// Expire `m` if its `expires_at` has passed; returns the Mission as it is now.
    async fn expire_if_due(&self, m: MissionRow) -> Result<MissionRow, AuthorityError> {
        if !mission::expiry_due(&m.state, m.expires_at, now_secs()) {
            return Ok(m);
        }
        match self.apply(&m.id, Action::Expire, ACTOR_CLOCK).await? {
            TransitionOutcome::Applied(m, _) | TransitionOutcome::Refused(m) => Ok(m),
            TransitionOutcome::NotFound => Err(AuthorityError::NotFound),
        }
    }

    /// One Mission, with expiry applied.
    pub async fn get(&self, id: &str) -> Result<MissionRow, AuthorityError> {
        let m = self.store.get_mission(id).await?.ok_or(AuthorityError::NotFound)?;
        self.expire_if_due(m).await
    }

    /// One Mission and its audit trail.
    pub async fn get_with_trail(&self, id: &str) -> Result<(MissionRow, Vec<TransitionRow>), AuthorityError> {
        let m = self.get(id).await?;
        let trail = self.store.transitions(id).await?;
        Ok((m, trail))
    }

    /// Missions, newest first, expiry applied.
    pub async fn list(&self, state: Option<&str>, limit: u32) -> Result<Vec<MissionRow>, AuthorityError> {
        self.expire_due().await?;
        Ok(self.store.list_missions(state, limit).await?)
    }

    /// Expire every Mission whose `expires_at` has passed. Returns how many were expired.
    pub async fn expire_due(&self) -> Result<usize, AuthorityError> {
        let mut count = 0;
        // Bounded: a sweep handles at most 10 batches; the next tick continues.
        for _ in 0..10 {
            let ids = self.store.due_for_expiry(now_secs(), 100).await?;
            if ids.is_empty() {
                return Ok(count);
            }
            let batch = ids.len();
            for id in ids {
                if let TransitionOutcome::Applied(..) = self.apply(&id, Action::Expire, ACTOR_CLOCK).await? {
                    count += 1;
                }
            }
            if batch < 100 {
                return Ok(count);
            }
        }
        Ok(count)
    }

    // ---------------------------------------------------------------------------------------------
    // Tokens
    // ---------------------------------------------------------------------------------------------

    /// Mint an RFC 9068 access token for an active Mission, bound to `jkt` when given.
    pub async fn mint(&self, id: &str, jkt: Option<String>) -> Result<Minted, AuthorityError> {
        let m = self.get(id).await?;
        let now = now_secs();
        if !m.state.is_active() || now >= m.expires_at {
            return Err(AuthorityError::Inactive { state: m.state });
        }
        let exp = (now + self.settings.token_lifetime_seconds).min(m.expires_at);
        let key = self.keys.signer_until(&self.store, exp).await?;
        let token_type = if jkt.is_some() { "DPoP" } else { "Bearer" };
        let claims = AccessTokenClaims {
            iss: self.settings.issuer.clone(),
            sub: Some(m.client_id.clone()),
            aud: Some(Audience::Many(mission::audiences(&m.authority))),
            exp: Some(NumericDate(exp)),
            nbf: None,
            iat: Some(NumericDate(now)),
            jti: Some(new_jti()?),
            client_id: Some(m.client_id.clone()),
            mission: Some(MissionClaim {
                id: m.id.clone(),
                issuer: Some(m.issuer.clone()),
                origin: None,
                authority_hash: Some(m.authority_hash.clone()),
            }),
            authorization_details: m.authority.clone(),
            cnf: jkt.map(|jkt| Confirmation { jkt: Some(jkt), other: Map::new() }),
        };
        let payload = serde_json::to_value(&claims).map_err(|e| AuthorityError::Internal(e.to_string()))?;
        let token = key.sign(TYP_AT_JWT, &payload);
        tracing::info!(mission = %m.id, kid = %key.kid, token_type, "access token issued");
        Ok(Minted { token, expires_in: exp - now, token_type, mission: m })
    }

    /// The token endpoint's client authentication: the client secret of the Mission, for its client.
    /// Unknown Mission, other client and wrong secret are indistinguishable.
    pub async fn authenticate_client(
        &self,
        mission_id: &str,
        client_id: &str,
        client_secret: &str,
    ) -> Result<(), AuthorityError> {
        let stored = self.store.get_mission(mission_id).await?;
        let (expected, owner) = match &stored {
            Some(m) => (m.client_secret_sha256.as_slice(), m.client_id.as_str()),
            None => (&[0u8; 32][..], ""),
        };
        let secret_ok = secret_matches(client_secret, expected);
        if stored.is_some() && secret_ok && owner == client_id {
            Ok(())
        } else {
            Err(AuthorityError::InvalidClient)
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Mission Status
    // ---------------------------------------------------------------------------------------------

    /// A signed Mission Status response (`mission-status-response+jwt`).
    pub async fn status(&self, mission_id: &str, audience: &str, nonce: &str) -> Result<String, AuthorityError> {
        let m = self.get(mission_id).await?;
        let now = now_secs();
        let exp = now + STATUS_LIFETIME_SECONDS;
        let key = self.keys.signer_until(&self.store, exp).await?;
        let claims = MissionStatusClaims {
            iss: self.settings.issuer.clone(),
            aud: Audience::One(audience.to_owned()),
            nonce: nonce.to_owned(),
            iat: NumericDate(now),
            exp: NumericDate(exp),
            sub: None,
            mission: MissionStatusMission {
                id: m.id.clone(),
                issuer: m.issuer.clone(),
                state: m.state.clone(),
                version: m.version,
                expires_at: Some(format_rfc3339(m.expires_at)),
                fresh_until: format_rfc3339(now + self.settings.status_fresh_seconds),
                authority_hash: Some(m.authority_hash.clone()),
            },
            // The Authority Set never changes after approval here (no containment), so the
            // token's entries stay in force: nothing to narrow them with.
            authorization_details: None,
        };
        let payload = serde_json::to_value(&claims).map_err(|e| AuthorityError::Internal(e.to_string()))?;
        Ok(key.sign(TYP_MISSION_STATUS, &payload))
    }

    // ---------------------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------------------

    /// Answer an RFC 8936 poll (semantics in the module documentation).
    pub async fn poll(&self, req: &PollRequest) -> Result<PollResponse, AuthorityError> {
        let mut after: i64 = 0;
        // RFC 8936: a SET is acknowledged in `ack`, or reported in `setErrs` (received, refused).
        for jti in req.ack.iter().chain(req.set_errs.keys()) {
            let seq: i64 = jti.parse().ok().filter(|s: &i64| *s > 0).ok_or_else(|| {
                AuthorityError::Invalid("ack values are SET jti values: decimal sequence numbers".into())
            })?;
            after = after.max(seq);
        }
        let max = req.max_events.unwrap_or(DEFAULT_MAX_EVENTS).min(MAX_MAX_EVENTS);
        if max == 0 {
            let more = *self.events.borrow() > after;
            return Ok(PollResponse { sets: Map::new(), more_available: more });
        }
        let immediate = req.return_immediately.unwrap_or(false);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(self.settings.longpoll_seconds);
        let mut rx = self.events.subscribe();
        let mut shutdown = self.shutdown.clone();
        let mut first = true;
        loop {
            let latest = *rx.borrow_and_update();
            // Events appended after this point will wake `rx.changed()` below.
            if latest > after || first {
                first = false;
                let rows = self.store.events_after(after, max + 1).await?;
                if !rows.is_empty() {
                    let more_available = rows.len() > max as usize;
                    let sets = rows
                        .into_iter()
                        .take(max as usize)
                        .map(|r| (r.seq.to_string(), Value::String(r.jws)))
                        .collect();
                    return Ok(PollResponse { sets, more_available });
                }
            }
            if immediate || *shutdown.borrow() {
                return Ok(PollResponse::default());
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        return Ok(PollResponse::default());
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(PollResponse::default()),
                _ = shutdown.changed() => return Ok(PollResponse::default()),
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Keys and metadata
    // ---------------------------------------------------------------------------------------------

    /// Rotate the signing key; returns (previous kid, new kid).
    pub async fn rotate_keys(&self) -> Result<(String, String), AuthorityError> {
        Ok(self.keys.rotate(&self.store, now_secs()).await?)
    }

    /// The JWKS.
    pub async fn jwks(&self) -> Result<JwkSet, AuthorityError> {
        Ok(self.keys.jwks(&self.store, now_secs()).await?)
    }

    /// The current signing key, its lease extended so that it stays published until at least `until`
    /// (for JWS made here outside the Mission flows, such as Access Request binding tokens).
    pub async fn signer_until(&self, until: i64) -> Result<Arc<crate::keys::ActiveKey>, AuthorityError> {
        Ok(self.keys.signer_until(&self.store, until).await?)
    }

    /// Verify a compact JWS made by one of this authority's published keys (found by `kid`); returns
    /// its header and payload bytes.
    pub async fn verify_own(&self, jws: &str) -> Result<(missiongate_wire::jose::Header, Vec<u8>), VerifyError> {
        use missiongate_wire::jws::{self as check, Policy, Step, Typ, ALL_ALGS};
        let opened = check::open(jws, &Policy { typ: Typ::Any, algs: &ALL_ALGS }).map_err(|step| match step {
            Step::NotCompact | Step::Header => VerifyError::Malformed,
            _ => VerifyError::BadSignature,
        })?;
        let kid = opened.header.kid.clone().ok_or(VerifyError::Malformed)?;
        let set = self.jwks().await.map_err(|e| VerifyError::Internal(e.to_string()))?;
        let jwk = set.keys.iter().find(|k| k.kid.as_deref() == Some(kid.as_str())).ok_or(VerifyError::UnknownKey)?;
        let key = jwk.verifying_key().map_err(|e| VerifyError::Internal(e.to_string()))?;
        opened.verify(&key).map_err(|_| VerifyError::BadSignature)?;
        let payload = opened.payload().map_err(|_| VerifyError::BadSignature)?;
        Ok((opened.header, payload))
    }

    /// RFC 8414 metadata, with the Mission extensions.
    pub fn metadata(&self) -> Value {
        let iss = &self.settings.issuer;
        json!({
            "issuer": iss,
            "jwks_uri": format!("{iss}/jwks.json"),
            "token_endpoint": self.settings.token_endpoint(),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
            "authorization_details_types_supported": [missiongate_wire::claims::RAR_MISSION_RESOURCE_ACCESS],
            "mission_bound_authorization_supported": true,
            "mission_status_endpoint": format!("{iss}/mission/status"),
            "mission_status_signing_alg_values_supported": ["ES256"],
            "mission_max_stale_seconds": self.settings.status_fresh_seconds,
            "mission_events_endpoint": format!("{iss}/mission/events"),
            "mission_lifecycle_endpoint": format!("{iss}/operator/missions"),
        })
    }

    // ---------------------------------------------------------------------------------------------
    // Maintenance
    // ---------------------------------------------------------------------------------------------

    /// Background work until shutdown: expiry every 500 ms; pruning of events, dead keys and DPoP
    /// replay memory every minute.
    pub async fn run_maintenance(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = 0i64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            match self.expire_due().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(count = n, "missions expired"),
                Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
            }
            let now = now_secs();
            if now - last_prune >= 60 {
                last_prune = now;
                match self.store.prune_events(now - self.settings.event_retention_seconds).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(count = n, "old events pruned"),
                    Err(e) => tracing::warn!(error = %e, "event pruning failed"),
                }
                match self.store.delete_dead_keys(now).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(count = n, "retired signing keys deleted"),
                    Err(e) => tracing::warn!(error = %e, "key cleanup failed"),
                }
                self.dpop.prune(now);
            }
        }
    }
}
