//! Persistence of the Mission authority.
//!
//! The rest of the crate sees only this module's types ([`Store`], the `*Row` structs and
//! [`StoreError`]); no SQL type leaks out, so a Postgres backend can be added behind the same methods
//! (turning `Store` into an enum or a trait) without touching the service or the HTTP layer.
//!
//! SQLite specifics:
//! - WAL journal with `synchronous=FULL`: every commit is fsynced to the WAL before the call returns,
//!   so nothing acknowledged to a client (a Mission, a transition, an event, a key) is lost to a
//!   `kill -9` of the process nor to a power cut. NORMAL would already survive a process kill in WAL
//!   mode, but could drop the last commits on power loss; the authority writes rarely (lifecycle
//!   changes, key rotations and key leases; never per token), so the extra fsync costs nothing that
//!   matters.
//! - One writer connection (a pool of size 1, `BEGIN IMMEDIATE`) serializes writes in commit order, so
//!   event sequence numbers are committed in increasing order; readers use their own pool and never
//!   block the writer (WAL).
//! - Schema migrations are embedded in the binary (`migrations/`) and run at open.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::Row;

use missiongate_wire::claims::MissionState;

use crate::mission::Intent;

/// A storage failure. Messages never contain secrets.
#[derive(Debug)]
pub enum StoreError {
    /// The database refused or failed.
    Db(sqlx::Error),
    /// A schema migration failed.
    Migrate(sqlx::migrate::MigrateError),
    /// A stored document could not be decoded.
    Corrupt(String),
    /// The database belongs to another issuer.
    IssuerMismatch {
        /// The issuer recorded in the database.
        stored: String,
    },
    /// Signing an event inside a write failed; the write was rolled back.
    Sign(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Db(e) => write!(f, "database error: {e}"),
            StoreError::Migrate(e) => write!(f, "database migration failed: {e}"),
            StoreError::Corrupt(m) => write!(f, "corrupt stored data: {m}"),
            StoreError::IssuerMismatch { stored } => {
                write!(f, "this database belongs to issuer {stored:?}; refusing to serve it under another issuer")
            }
            StoreError::Sign(m) => write!(f, "signing failed: {m}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Db(e)
    }
}

/// A signing key as stored.
#[derive(Clone)]
pub struct KeyRow {
    /// Key id.
    pub kid: String,
    /// JOSE algorithm name.
    pub alg: String,
    /// Private key bytes.
    pub secret: Vec<u8>,
    /// Created.
    pub created_at: i64,
    /// When it stopped being current; `None` for the current key.
    pub retired_at: Option<i64>,
    /// Everything this key signed has expired by then (lease, extended before signing).
    pub signed_until: i64,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("retired_at", &self.retired_at)
            .field("signed_until", &self.signed_until)
            .finish_non_exhaustive()
    }
}

/// A Mission record.
#[derive(Debug, Clone)]
pub struct MissionRow {
    /// Mission id.
    pub id: String,
    /// Mission issuer.
    pub issuer: String,
    /// State.
    pub state: MissionState,
    /// Per-Mission monotonic version (1 at creation).
    pub version: u64,
    /// The Mission Intent as submitted.
    pub intent: Intent,
    /// The Authority Set as submitted.
    pub authority: Vec<Value>,
    /// `intent_hash`.
    pub intent_hash: String,
    /// `authority_hash`.
    pub authority_hash: String,
    /// The client holding tokens.
    pub client_id: String,
    /// SHA-256 of the client secret.
    pub client_secret_sha256: Vec<u8>,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Created.
    pub created_at: i64,
    /// Last transition.
    pub updated_at: i64,
}

/// A new Mission, before it is stored in `pending_approval`.
#[derive(Debug, Clone)]
pub struct NewMission {
    /// Mission id.
    pub id: String,
    /// Mission issuer.
    pub issuer: String,
    /// Intent.
    pub intent: Intent,
    /// Authority Set.
    pub authority: Vec<Value>,
    /// `intent_hash`.
    pub intent_hash: String,
    /// `authority_hash`.
    pub authority_hash: String,
    /// Client.
    pub client_id: String,
    /// SHA-256 of the client secret.
    pub client_secret_sha256: Vec<u8>,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

/// One row of the audit trail.
#[derive(Debug, Clone)]
pub struct TransitionRow {
    /// State before; `None` at creation.
    pub from: Option<MissionState>,
    /// State after.
    pub to: MissionState,
    /// Version after.
    pub version: u64,
    /// Who did it (`operator`, `system:clock`, ...).
    pub actor: String,
    /// When.
    pub at: i64,
}

/// A state event about to be stored; the signer turns it into a SET.
#[derive(Debug, Clone)]
pub struct EventDraft {
    /// Global sequence number (the SET `jti`).
    pub seq: i64,
    /// Mission id.
    pub mission_id: String,
    /// Mission issuer.
    pub issuer: String,
    /// New state.
    pub state: MissionState,
    /// New version.
    pub version: u64,
    /// When the transition was committed.
    pub at: i64,
    /// State before the transition (none on creation).
    pub prior_state: Option<MissionState>,
    /// The Mission's expiry.
    pub expires_at: i64,
}

/// A signed SET.
#[derive(Debug, Clone)]
pub struct SignedEvent {
    /// Key that signed it.
    pub kid: String,
    /// Compact JWS.
    pub jws: String,
}

/// A stored event.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Sequence number.
    pub seq: i64,
    /// Compact JWS of the SET.
    pub jws: String,
}

/// What a transition attempt did.
#[derive(Debug)]
pub enum TransitionOutcome {
    /// No such Mission.
    NotFound,
    /// The decision refused the transition; the Mission is unchanged.
    Refused(MissionRow),
    /// Applied; the Mission as it is now and the event's sequence number.
    Applied(MissionRow, i64),
}

/// The authority's database.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) writer: SqlitePool,
    pub(crate) reader: SqlitePool,
}

const MISSION_COLUMNS: &str = "id, issuer, state, version, intent, authority, intent_hash, authority_hash, \
     client_id, client_secret_sha256, expires_at, created_at, updated_at";

fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what}")))
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt("version out of range".into()))
}

fn mission_from_row(row: &SqliteRow) -> Result<MissionRow, StoreError> {
    let intent: String = row.try_get("intent")?;
    let authority: String = row.try_get("authority")?;
    let state: String = row.try_get("state")?;
    Ok(MissionRow {
        id: row.try_get("id")?,
        issuer: row.try_get("issuer")?,
        state: MissionState::parse(&state),
        version: to_u64(row.try_get("version")?, "version")?,
        intent: serde_json::from_str(&intent).map_err(|e| StoreError::Corrupt(format!("mission intent: {e}")))?,
        authority: serde_json::from_str(&authority)
            .map_err(|e| StoreError::Corrupt(format!("mission authority: {e}")))?,
        intent_hash: row.try_get("intent_hash")?,
        authority_hash: row.try_get("authority_hash")?,
        client_id: row.try_get("client_id")?,
        client_secret_sha256: row.try_get("client_secret_sha256")?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn key_from_row(row: &SqliteRow) -> Result<KeyRow, StoreError> {
    Ok(KeyRow {
        kid: row.try_get("kid")?,
        alg: row.try_get("alg")?,
        secret: row.try_get("secret")?,
        created_at: row.try_get("created_at")?,
        retired_at: row.try_get("retired_at")?,
        signed_until: row.try_get("signed_until")?,
    })
}

impl Store {
    /// Open (creating if needed) the database at `path` and bring its schema up to date.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations").run(&writer).await.map_err(StoreError::Migrate)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(Store { writer, reader })
    }

    /// Close both pools (checkpoints the WAL when the last connection closes).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Record `issuer` on first use; refuse a database that belongs to another issuer.
    pub async fn claim_issuer(&self, issuer: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO authority_meta (key, value) VALUES ('issuer', ?) ON CONFLICT (key) DO NOTHING")
            .bind(issuer)
            .execute(&self.writer)
            .await?;
        let stored: String =
            sqlx::query_scalar("SELECT value FROM authority_meta WHERE key = 'issuer'").fetch_one(&self.writer).await?;
        if stored != issuer {
            return Err(StoreError::IssuerMismatch { stored });
        }
        Ok(())
    }

    // ---------------------------------------------------------------------------------------------
    // Keys
    // ---------------------------------------------------------------------------------------------

    /// The current signing key, if there is one.
    pub async fn current_key(&self) -> Result<Option<KeyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT kid, alg, secret, created_at, retired_at, signed_until FROM signing_keys \
             WHERE retired_at IS NULL ORDER BY created_at DESC, kid LIMIT 1",
        )
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map(key_from_row).transpose()
    }

    /// Make `new` the current key, retiring every other current key at `now`. Atomic.
    pub async fn rotate_key(&self, new: &KeyRow, now: i64) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, secret, created_at, retired_at, signed_until) \
             VALUES (?, ?, ?, ?, NULL, ?)",
        )
        .bind(&new.kid)
        .bind(&new.alg)
        .bind(&new.secret)
        .bind(new.created_at)
        .bind(new.signed_until)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Extend a key's lease so that it stays published until at least `until`.
    pub async fn extend_key_lease(&self, kid: &str, until: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE signing_keys SET signed_until = MAX(signed_until, ?) WHERE kid = ?")
            .bind(until)
            .bind(kid)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    /// Keys to publish at `now`: the current one and every retired key whose lease has not ended.
    pub async fn published_keys(&self, now: i64) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, alg, secret, created_at, retired_at, signed_until FROM signing_keys \
             WHERE retired_at IS NULL OR signed_until > ? ORDER BY retired_at IS NOT NULL, created_at DESC, kid",
        )
        .bind(now)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Delete retired keys whose lease ended before `now`: nothing they signed is still valid.
    pub async fn delete_dead_keys(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND signed_until <= ?")
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    // ---------------------------------------------------------------------------------------------
    // Missions
    // ---------------------------------------------------------------------------------------------

    /// Store a new Mission in `pending_approval` (version 1), its first audit row and its first event.
    pub async fn insert_mission<S>(
        &self,
        new: &NewMission,
        actor: &str,
        at: i64,
        sign: S,
    ) -> Result<(MissionRow, i64), StoreError>
    where
        S: FnOnce(&EventDraft) -> Result<SignedEvent, String>,
    {
        let intent = serde_json::to_string(&new.intent).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let authority = serde_json::to_string(&new.authority).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let state = MissionState::PendingApproval;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO missions (id, issuer, state, version, intent, authority, intent_hash, authority_hash, \
             client_id, client_secret_sha256, expires_at, created_at, updated_at) \
             VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&new.id)
        .bind(&new.issuer)
        .bind(state.as_str())
        .bind(&intent)
        .bind(&authority)
        .bind(&new.intent_hash)
        .bind(&new.authority_hash)
        .bind(&new.client_id)
        .bind(&new.client_secret_sha256)
        .bind(new.expires_at)
        .bind(at)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        insert_transition(&mut tx, &new.id, None, &state, 1, actor, at).await?;
        let draft = EventDraft {
            seq: 0,
            mission_id: new.id.clone(),
            issuer: new.issuer.clone(),
            state: state.clone(),
            version: 1,
            at,
            prior_state: None,
            expires_at: new.expires_at,
        };
        let seq = insert_event(&mut tx, draft, sign).await?;
        tx.commit().await?;
        let row = MissionRow {
            id: new.id.clone(),
            issuer: new.issuer.clone(),
            state,
            version: 1,
            intent: new.intent.clone(),
            authority: new.authority.clone(),
            intent_hash: new.intent_hash.clone(),
            authority_hash: new.authority_hash.clone(),
            client_id: new.client_id.clone(),
            client_secret_sha256: new.client_secret_sha256.clone(),
            expires_at: new.expires_at,
            created_at: at,
            updated_at: at,
        };
        Ok((row, seq))
    }

    /// One Mission.
    pub async fn get_mission(&self, id: &str) -> Result<Option<MissionRow>, StoreError> {
        let sql = format!("SELECT {MISSION_COLUMNS} FROM missions WHERE id = ?");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.reader).await?;
        row.as_ref().map(mission_from_row).transpose()
    }

    /// Missions, newest first, optionally only those in `state`.
    pub async fn list_missions(&self, state: Option<&str>, limit: u32) -> Result<Vec<MissionRow>, StoreError> {
        let rows = match state {
            Some(s) => {
                let sql = format!(
                    "SELECT {MISSION_COLUMNS} FROM missions WHERE state = ? ORDER BY created_at DESC, id LIMIT ?"
                );
                sqlx::query(&sql).bind(s).bind(limit).fetch_all(&self.reader).await?
            }
            None => {
                let sql = format!("SELECT {MISSION_COLUMNS} FROM missions ORDER BY created_at DESC, id LIMIT ?");
                sqlx::query(&sql).bind(limit).fetch_all(&self.reader).await?
            }
        };
        rows.iter().map(mission_from_row).collect()
    }

    /// The audit trail of a Mission, oldest first.
    pub async fn transitions(&self, id: &str) -> Result<Vec<TransitionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT from_state, to_state, version, actor, at FROM mission_transitions \
             WHERE mission_id = ? ORDER BY version",
        )
        .bind(id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                let from: Option<String> = r.try_get("from_state")?;
                let to: String = r.try_get("to_state")?;
                Ok(TransitionRow {
                    from: from.as_deref().map(MissionState::parse),
                    to: MissionState::parse(&to),
                    version: to_u64(r.try_get("version")?, "version")?,
                    actor: r.try_get("actor")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// Apply a transition atomically: `decide` sees the Mission as it is inside the write transaction
    /// and names the new state (or refuses); the version is bumped, the audit row and the event are
    /// written, and `sign` turns the event into a SET, all in one commit.
    pub async fn transition<D, S>(
        &self,
        id: &str,
        actor: &str,
        at: i64,
        decide: D,
        sign: S,
    ) -> Result<TransitionOutcome, StoreError>
    where
        D: FnOnce(&MissionRow) -> Option<MissionState>,
        S: FnOnce(&EventDraft) -> Result<SignedEvent, String>,
    {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let sql = format!("SELECT {MISSION_COLUMNS} FROM missions WHERE id = ?");
        let Some(row) = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await? else {
            return Ok(TransitionOutcome::NotFound);
        };
        let mut mission = mission_from_row(&row)?;
        let Some(to) = decide(&mission) else {
            tx.rollback().await?;
            return Ok(TransitionOutcome::Refused(mission));
        };
        let version = mission.version.saturating_add(1);
        sqlx::query("UPDATE missions SET state = ?, version = ?, updated_at = ? WHERE id = ?")
            .bind(to.as_str())
            .bind(to_i64(version)?)
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        insert_transition(&mut tx, id, Some(&mission.state), &to, version, actor, at).await?;
        let draft = EventDraft {
            seq: 0,
            mission_id: mission.id.clone(),
            issuer: mission.issuer.clone(),
            state: to.clone(),
            version,
            at,
            prior_state: Some(mission.state.clone()),
            expires_at: mission.expires_at,
        };
        let seq = insert_event(&mut tx, draft, sign).await?;
        tx.commit().await?;
        mission.state = to;
        mission.version = version;
        mission.updated_at = at;
        Ok(TransitionOutcome::Applied(mission, seq))
    }

    /// Ids of Missions in a non-terminal state whose `expires_at` is at or before `now`.
    pub async fn due_for_expiry(&self, now: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        let ids = sqlx::query_scalar(
            "SELECT id FROM missions WHERE state IN ('pending_approval', 'active', 'suspended') \
             AND expires_at <= ? ORDER BY expires_at LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(ids)
    }

    // ---------------------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------------------

    /// The highest event sequence number ever assigned (0 when none), pruned events included.
    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'mission_events'")
            .fetch_optional(&self.writer)
            .await?;
        Ok(seq.unwrap_or(0))
    }

    /// Events with a sequence number above `after`, oldest first, at most `limit`.
    pub async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query("SELECT seq, set_jws FROM mission_events WHERE seq > ? ORDER BY seq LIMIT ?")
            .bind(after)
            .bind(limit)
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(|r| Ok(EventRow { seq: r.try_get("seq")?, jws: r.try_get("set_jws")? })).collect()
    }

    /// Delete events recorded before `before`.
    pub async fn prune_events(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM mission_events WHERE at < ?").bind(before).execute(&self.writer).await?;
        Ok(done.rows_affected())
    }
}

async fn insert_transition(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    id: &str,
    from: Option<&MissionState>,
    to: &MissionState,
    version: u64,
    actor: &str,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO mission_transitions (mission_id, from_state, to_state, version, actor, at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(from.map(MissionState::as_str))
    .bind(to.as_str())
    .bind(to_i64(version)?)
    .bind(actor)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_event<S>(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    mut draft: EventDraft,
    sign: S,
) -> Result<i64, StoreError>
where
    S: FnOnce(&EventDraft) -> Result<SignedEvent, String>,
{
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO mission_events (mission_id, state, version, at, kid, set_jws) \
         VALUES (?, ?, ?, ?, '', '') RETURNING seq",
    )
    .bind(&draft.mission_id)
    .bind(draft.state.as_str())
    .bind(to_i64(draft.version)?)
    .bind(draft.at)
    .fetch_one(&mut **tx)
    .await?;
    draft.seq = seq;
    let signed = sign(&draft).map_err(StoreError::Sign)?;
    sqlx::query("UPDATE mission_events SET kid = ?, set_jws = ? WHERE seq = ?")
        .bind(&signed.kid)
        .bind(&signed.jws)
        .bind(seq)
        .execute(&mut **tx)
        .await?;
    Ok(seq)
}
