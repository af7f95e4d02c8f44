//! Persistence of the Mission authority.
//!
//! The rest of the crate sees only this module's types ([`Store`], the `*Row` structs and
//! [`StoreError`]); no SQL type leaks out. SQLite and Postgres run behind the same methods through
//! sqlx's `Any` driver, chosen by the database URL ([`DbTarget`]); queries use `$N` placeholders,
//! which SQLite accepts too, and the few dialect differences are handled here.
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
//!
//! Postgres (a `postgres://` URL): several portal replicas share one database.
//! - Every read-decide-write transaction takes one transaction-scoped advisory lock first
//!   ([`Store::write_tx`]), the Postgres counterpart of SQLite's `BEGIN IMMEDIATE`: writers are
//!   serialized across all replicas, and each statement after the lock (READ COMMITTED) sees every
//!   write committed before it, so no read-modify-write can race. Single-statement writes (consuming a
//!   single-use grant, extending a key lease) are conditional `UPDATE`s, atomic on their own.
//! - The event feed's sequence numbers come from a one-row counter updated inside the event's
//!   transaction (under the same lock): numbers are assigned and committed in one order, and the
//!   highest committed number is read transactionally ([`Store::last_seq`]). Each event also sends a
//!   `NOTIFY` (delivered at commit) so long polls on every replica wake ([`Store::listen_events`]).
//! - Schema migrations live in `migrations/postgres/`; `sqlx` takes an advisory lock while it
//!   migrates, so replicas starting together do not race.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use serde_json::Value;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Executor, Row, Transaction};

use missiongate_wire::claims::MissionState;

use crate::mission::Intent;

/// Unix time (seconds) of the last error that meant "the database cannot be reached" (0: never).
static LAST_UNAVAILABLE: AtomicI64 = AtomicI64::new(0);

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether a database error means the database is unreachable or going away (rather than a refused
/// statement): connection failures, pool timeouts, and the Postgres error classes 08 (connection
/// exception) and 57P0x (shutdown, cannot connect now).
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| c.starts_with("08") || c == "57P01" || c == "57P02" || c == "57P03")
        }
        _ => false,
    }
}

/// Whether an error meaning "database unreachable" was seen within the last `secs` seconds.
pub fn recently_unavailable(secs: i64) -> bool {
    let at = LAST_UNAVAILABLE.load(Ordering::Relaxed);
    at != 0 && unix_now() - at <= secs
}

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
    /// A signing key's lease could not be recorded: its row is gone (another replica deleted it
    /// as dead). Nothing may be signed with that key.
    KeyGone {
        /// The key id.
        kid: String,
    },
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
            StoreError::KeyGone { kid } => {
                write!(f, "signing key {kid} is no longer in the database; its lease could not be recorded")
            }
        }
    }
}

impl std::error::Error for StoreError {}

impl StoreError {
    /// Whether the database could not be reached (a 503 with `Retry-After`, not a 500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Db(e) => is_unavailable(e),
            // The server went away while the schema was being checked or migrated.
            StoreError::Migrate(
                sqlx::migrate::MigrateError::Execute(e) | sqlx::migrate::MigrateError::ExecuteMigration(e, _),
            ) => is_unavailable(e),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            LAST_UNAVAILABLE.store(unix_now(), Ordering::Relaxed);
        }
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

/// Which database engine a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file (one process).
    Sqlite,
    /// A Postgres server (any number of replicas).
    Postgres,
}

/// Where the database is: a SQLite file or a Postgres server.
#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite file (`sqlite:PATH`, `sqlite://PATH` or a plain path).
    Sqlite(std::path::PathBuf),
    /// A Postgres connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl DbTarget {
    /// Parse `--db`: a `postgres://` / `postgresql://` URL selects Postgres; `sqlite:` URLs and plain
    /// paths select SQLite.
    pub fn parse(s: &str) -> Result<DbTarget, String> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            url::Url::parse(s).map_err(|e| format!("invalid Postgres URL: {e}"))?;
            return Ok(DbTarget::Postgres(s.to_owned()));
        }
        if let Some((scheme, _)) = s.split_once("://") {
            if scheme != "sqlite"
                && !scheme.is_empty()
                && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            {
                return Err(format!(
                    "unsupported database URL scheme {scheme:?}: use postgres://, postgresql://, sqlite: or a file path"
                ));
            }
        }
        let path = match s.strip_prefix("sqlite:") {
            Some(rest) => rest.strip_prefix("//").unwrap_or(rest),
            None => s,
        };
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() {
            return Err("the database is a SQLite file path or a postgres:// URL".into());
        }
        Ok(DbTarget::Sqlite(path.into()))
    }

    /// For logs and error messages: the file, or the URL without its password.
    pub fn redacted(&self) -> String {
        match self {
            DbTarget::Sqlite(p) => p.display().to_string(),
            DbTarget::Postgres(u) => match url::Url::parse(u) {
                Ok(mut url) => {
                    if url.password().is_some() {
                        let _ = url.set_password(Some("***"));
                    }
                    url.to_string()
                }
                Err(_) => "postgres://(invalid URL)".into(),
            },
        }
    }
}

impl std::fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Per SQLite connection: WAL, an fsync of every commit, foreign keys, and a generous busy wait (the
/// reader pool may meet a checkpoint).
fn sqlite_pragmas<'c>(
    conn: &'c mut sqlx::AnyConnection,
    _: sqlx::pool::PoolConnectionMetadata,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), sqlx::Error>> + Send + 'c>> {
    Box::pin(async move {
        conn.execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;",
        )
        .await?;
        Ok(())
    })
}

/// `sqlite://PATH?mode=rwc` with the path percent-encoded (the driver decodes it).
fn sqlite_url(path: &Path) -> String {
    let mut out = String::from("sqlite://");
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str("?mode=rwc");
    out
}

/// The advisory lock every Postgres write transaction takes (`BEGIN IMMEDIATE` of SQLite).
const PG_WRITE_LOCK: i64 = 0x6d69_7373_696f_6e67; // "missiong"

/// The channel of the event feed's `NOTIFY`.
pub const PG_EVENTS_CHANNEL: &str = "missiongate_events";

/// The authority's database.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) writer: AnyPool,
    pub(crate) reader: AnyPool,
    backend: Backend,
    target: DbTarget,
}

const MISSION_COLUMNS: &str = "id, issuer, state, version, intent, authority, intent_hash, authority_hash, \
     client_id, client_secret_sha256, expires_at, created_at, updated_at";

fn to_u64(v: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative {what}")))
}

fn to_i64(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt("version out of range".into()))
}

fn mission_from_row(row: &AnyRow) -> Result<MissionRow, StoreError> {
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

fn key_from_row(row: &AnyRow) -> Result<KeyRow, StoreError> {
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
    /// Open (creating if needed) the SQLite database at `path` and bring its schema up to date.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Store::connect(&DbTarget::Sqlite(path.to_path_buf())).await
    }

    /// Open the database `target` names and bring its schema up to date.
    pub async fn connect(target: &DbTarget) -> Result<Store, StoreError> {
        let store = Store::connect_unmigrated(target).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Postgres: open one connection and close it, to learn quickly (and with the driver's own
    /// error, such as "connection refused") whether the server can be reached at all. SQLite: nothing.
    pub async fn probe(target: &DbTarget) -> Result<(), StoreError> {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        if let DbTarget::Postgres(url) = target {
            let conn = sqlx::AnyConnection::connect(url).await?;
            conn.close().await?;
        }
        Ok(())
    }

    /// Open the database without touching its schema.
    pub async fn connect_unmigrated(target: &DbTarget) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        match target {
            DbTarget::Sqlite(path) => {
                let url = sqlite_url(path);
                let writer = AnyPoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(sqlite_pragmas)
                    .connect(&url)
                    .await?;
                let reader = AnyPoolOptions::new()
                    .max_connections(4)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(sqlite_pragmas)
                    .connect(&url)
                    .await?;
                Ok(Store { writer, reader, backend: Backend::Sqlite, target: target.clone() })
            }
            DbTarget::Postgres(url) => {
                // Short acquire timeout: while the server is away, requests fail fast (503) instead of
                // queueing; `test_before_acquire` drops connections that died with a restart.
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .test_before_acquire(true)
                    .connect(url)
                    .await?;
                Ok(Store { writer: pool.clone(), reader: pool, backend: Backend::Postgres, target: target.clone() })
            }
        }
    }

    /// Bring the schema up to date (idempotent; safe with several replicas starting at once).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations").run(&self.writer).await.map_err(StoreError::Migrate),
            Backend::Postgres => {
                sqlx::migrate!("./migrations/postgres").run(&self.writer).await.map_err(StoreError::Migrate)
            }
        }
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where the database is.
    pub fn target(&self) -> &DbTarget {
        &self.target
    }

    /// Whether the database answers now (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let one: i64 = sqlx::query_scalar("SELECT CAST(1 AS BIGINT)").fetch_one(&self.reader).await?;
        if one != 1 {
            return Err(StoreError::Corrupt("SELECT 1 answered something else".into()));
        }
        Ok(())
    }

    /// Begin a read-decide-write transaction: SQLite `BEGIN IMMEDIATE` (the one writer), Postgres
    /// a transaction holding the global write advisory lock until it ends.
    pub(crate) async fn write_tx(&self) -> Result<Transaction<'static, Any>, StoreError> {
        match self.backend {
            Backend::Sqlite => Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.writer.begin().await?;
                sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                    .bind(PG_WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// Postgres only: wait for event-feed notifications from every replica and hand each committed
    /// sequence number to `on_seq`, until `shutdown`. After a lost connection (the server restarted)
    /// it reconnects and reports [`Store::last_seq`], so nothing committed meanwhile is missed; it
    /// also reports `last_seq` every `resync` as a safety net.
    pub async fn listen_events<F>(&self, on_seq: F, resync: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>)
    where
        F: Fn(i64),
    {
        let DbTarget::Postgres(url) = &self.target else { return };
        let mut listener: Option<sqlx::postgres::PgListener> = None;
        let mut tick = tokio::time::interval(resync);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let resync_now = || async {
            if let Ok(seq) = self.last_seq().await {
                on_seq(seq);
            }
        };
        loop {
            if *shutdown.borrow() {
                return;
            }
            if listener.is_none() {
                // Bounded: while the server is away the periodic resync below keeps running.
                let connect = async {
                    let mut l = sqlx::postgres::PgListener::connect(url).await?;
                    l.listen(PG_EVENTS_CHANNEL).await?;
                    Ok::<_, sqlx::Error>(l)
                };
                match tokio::time::timeout(Duration::from_secs(2), connect).await {
                    Ok(Ok(l)) => {
                        listener = Some(l);
                        resync_now().await;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "event listener cannot LISTEN; retrying"),
                    Err(_) => tracing::warn!("event listener: no connection within 2 s; retrying"),
                }
            }
            match listener.as_mut() {
                Some(l) => {
                    tokio::select! {
                        n = l.try_recv() => match n {
                            Ok(Some(n)) => {
                                if let Ok(seq) = n.payload().parse::<i64>() {
                                    on_seq(seq);
                                }
                            }
                            // The connection was lost: reconnect, then resynchronize.
                            Ok(None) | Err(_) => listener = None,
                        },
                        _ = tick.tick() => resync_now().await,
                        _ = shutdown.changed() => {}
                    }
                }
                None => {
                    tokio::select! {
                        _ = tick.tick() => resync_now().await,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
        }
    }

    /// Close both pools (SQLite checkpoints the WAL when the last connection closes).
    pub async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    /// Record `issuer` on first use; refuse a database that belongs to another issuer.
    pub async fn claim_issuer(&self, issuer: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO authority_meta (key, value) VALUES ('issuer', $1) ON CONFLICT (key) DO NOTHING")
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
        let mut tx = self.write_tx().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, secret, created_at, retired_at, signed_until) \
             VALUES ($1, $2, $3, $4, NULL, $5)",
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

    /// Make `new` the current key unless there already is one (another replica was first); returns
    /// the current key. Atomic.
    pub async fn insert_first_key(&self, new: &KeyRow) -> Result<KeyRow, StoreError> {
        let mut tx = self.write_tx().await?;
        let existing = sqlx::query(
            "SELECT kid, alg, secret, created_at, retired_at, signed_until FROM signing_keys \
             WHERE retired_at IS NULL ORDER BY created_at DESC, kid LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = existing {
            tx.rollback().await?;
            return key_from_row(&row);
        }
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, secret, created_at, retired_at, signed_until) \
             VALUES ($1, $2, $3, $4, NULL, $5)",
        )
        .bind(&new.kid)
        .bind(&new.alg)
        .bind(&new.secret)
        .bind(new.created_at)
        .bind(new.signed_until)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(new.clone())
    }

    /// Extend a key's lease so that it stays published until at least `until`.
    ///
    /// [`StoreError::KeyGone`] when no row has `kid` (another replica deleted it as dead): the lease
    /// is not recorded, so the caller must not sign with that key. (Both engines count a row the
    /// `WHERE` matched as affected even when the lease already reached `until`.)
    pub async fn extend_key_lease(&self, kid: &str, until: i64) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE signing_keys SET signed_until = CASE WHEN signed_until < $1 THEN $1 ELSE signed_until END \
             WHERE kid = $2",
        )
        .bind(until)
        .bind(kid)
        .execute(&self.writer)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::KeyGone { kid: kid.to_owned() });
        }
        Ok(())
    }

    /// Keys to publish at `now`: the current one and every retired key whose lease has not ended.
    pub async fn published_keys(&self, now: i64) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, alg, secret, created_at, retired_at, signed_until FROM signing_keys \
             WHERE retired_at IS NULL OR signed_until > $1 ORDER BY retired_at IS NOT NULL, created_at DESC, kid",
        )
        .bind(now)
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// Delete retired keys whose lease ended before `now`: nothing they signed is still valid.
    pub async fn delete_dead_keys(&self, now: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND signed_until <= $1")
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
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO missions (id, issuer, state, version, intent, authority, intent_hash, authority_hash, \
             client_id, client_secret_sha256, expires_at, created_at, updated_at) \
             VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
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
        let sql = format!("SELECT {MISSION_COLUMNS} FROM missions WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.reader).await?;
        row.as_ref().map(mission_from_row).transpose()
    }

    /// Missions, newest first, optionally only those in `state`.
    pub async fn list_missions(&self, state: Option<&str>, limit: u32) -> Result<Vec<MissionRow>, StoreError> {
        let rows = match state {
            Some(s) => {
                let sql = format!(
                    "SELECT {MISSION_COLUMNS} FROM missions WHERE state = $1 ORDER BY created_at DESC, id LIMIT $2"
                );
                sqlx::query(&sql).bind(s).bind(i64::from(limit)).fetch_all(&self.reader).await?
            }
            None => {
                let sql = format!("SELECT {MISSION_COLUMNS} FROM missions ORDER BY created_at DESC, id LIMIT $1");
                sqlx::query(&sql).bind(i64::from(limit)).fetch_all(&self.reader).await?
            }
        };
        rows.iter().map(mission_from_row).collect()
    }

    /// The audit trail of a Mission, oldest first.
    pub async fn transitions(&self, id: &str) -> Result<Vec<TransitionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT from_state, to_state, version, actor, at FROM mission_transitions \
             WHERE mission_id = $1 ORDER BY version",
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
        let mut tx = self.write_tx().await?;
        let sql = format!("SELECT {MISSION_COLUMNS} FROM missions WHERE id = $1");
        let Some(row) = sqlx::query(&sql).bind(id).fetch_optional(&mut *tx).await? else {
            return Ok(TransitionOutcome::NotFound);
        };
        let mut mission = mission_from_row(&row)?;
        let Some(to) = decide(&mission) else {
            tx.rollback().await?;
            return Ok(TransitionOutcome::Refused(mission));
        };
        let version = mission.version.saturating_add(1);
        sqlx::query("UPDATE missions SET state = $1, version = $2, updated_at = $3 WHERE id = $4")
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
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM missions WHERE state IN ('pending_approval', 'active', 'suspended') \
             AND expires_at <= $1 ORDER BY expires_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        Ok(ids)
    }

    // ---------------------------------------------------------------------------------------------
    // Events
    // ---------------------------------------------------------------------------------------------

    /// The highest event sequence number ever assigned (0 when none), pruned events included.
    pub async fn last_seq(&self) -> Result<i64, StoreError> {
        let seq: Option<i64> = match self.backend {
            Backend::Sqlite => {
                sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'mission_events'")
                    .fetch_optional(&self.writer)
                    .await?
            }
            Backend::Postgres => {
                sqlx::query_scalar("SELECT last_seq FROM mission_event_counter WHERE id = 1")
                    .fetch_optional(&self.writer)
                    .await?
            }
        };
        Ok(seq.unwrap_or(0))
    }

    /// Events with a sequence number above `after`, oldest first, at most `limit`.
    pub async fn events_after(&self, after: i64, limit: u32) -> Result<Vec<EventRow>, StoreError> {
        let rows = sqlx::query("SELECT seq, set_jws FROM mission_events WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(&self.reader)
            .await?;
        rows.iter().map(|r| Ok(EventRow { seq: r.try_get("seq")?, jws: r.try_get("set_jws")? })).collect()
    }

    /// Delete events recorded before `before`.
    pub async fn prune_events(&self, before: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM mission_events WHERE at < $1").bind(before).execute(&self.writer).await?;
        Ok(done.rows_affected())
    }
}

async fn insert_transition(
    tx: &mut Transaction<'_, Any>,
    id: &str,
    from: Option<&MissionState>,
    to: &MissionState,
    version: u64,
    actor: &str,
    at: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO mission_transitions (mission_id, from_state, to_state, version, actor, at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
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

async fn insert_event<S>(tx: &mut Transaction<'_, Any>, mut draft: EventDraft, sign: S) -> Result<i64, StoreError>
where
    S: FnOnce(&EventDraft) -> Result<SignedEvent, String>,
{
    // Postgres: the counter row is taken under the write lock and committed with the event, so
    // sequence numbers are committed in order; the NOTIFY is delivered at commit.
    let pg = tx.backend_name() == "PostgreSQL";
    let seq: i64 = if pg {
        let seq: i64 = sqlx::query_scalar(
            "UPDATE mission_event_counter SET last_seq = last_seq + 1 WHERE id = 1 RETURNING last_seq",
        )
        .fetch_one(&mut **tx)
        .await?;
        sqlx::query(
            "INSERT INTO mission_events (seq, mission_id, state, version, at, kid, set_jws) \
             VALUES ($1, $2, $3, $4, $5, '', '')",
        )
        .bind(seq)
        .bind(&draft.mission_id)
        .bind(draft.state.as_str())
        .bind(to_i64(draft.version)?)
        .bind(draft.at)
        .execute(&mut **tx)
        .await?;
        sqlx::query("SELECT 1 FROM (SELECT pg_notify($1, $2)) AS n")
            .bind(PG_EVENTS_CHANNEL)
            .bind(seq.to_string())
            .execute(&mut **tx)
            .await?;
        seq
    } else {
        sqlx::query_scalar(
            "INSERT INTO mission_events (mission_id, state, version, at, kid, set_jws) \
             VALUES ($1, $2, $3, $4, '', '') RETURNING seq",
        )
        .bind(&draft.mission_id)
        .bind(draft.state.as_str())
        .bind(to_i64(draft.version)?)
        .bind(draft.at)
        .fetch_one(&mut **tx)
        .await?
    };
    draft.seq = seq;
    let signed = sign(&draft).map_err(StoreError::Sign)?;
    sqlx::query("UPDATE mission_events SET kid = $1, set_jws = $2 WHERE seq = $3")
        .bind(&signed.kid)
        .bind(&signed.jws)
        .bind(seq)
        .execute(&mut **tx)
        .await?;
    Ok(seq)
}
