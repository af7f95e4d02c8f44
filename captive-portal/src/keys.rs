//! The signing key ring: one current ES256 key signs everything (access tokens, Mission Status
//! responses, SETs); retired keys stay in the JWKS until everything they signed has expired.
//!
//! "Everything they signed has expired" is tracked with a lease per key (`signed_until`): before a key
//! signs something valid until `t`, the lease is extended in the database to at least `t` (with some
//! slack, so that the write happens about once per [`LEASE_SLACK_SECONDS`], never per token). A
//! retired key is published while its lease runs, then deleted.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::{json, Value};

use missiongate_wire::jose::{Alg, JwkSet, SigningKey};

use crate::store::{KeyRow, Store, StoreError};
use crate::util::{new_kid, RandomError};

/// A lease is extended this far beyond what is needed, to write rarely.
pub const LEASE_SLACK_SECONDS: i64 = 300;

/// The current signing key.
pub struct ActiveKey {
    /// Key id.
    pub kid: String,
    key: SigningKey,
    signed_until: AtomicI64,
}

impl std::fmt::Debug for ActiveKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl ActiveKey {
    fn from_row(row: &KeyRow) -> Result<ActiveKey, StoreError> {
        let alg = Alg::from_name(&row.alg).ok_or_else(|| StoreError::Corrupt(format!("key {}: alg", row.kid)))?;
        let key = SigningKey::from_secret_bytes(alg, &row.secret)
            .map_err(|e| StoreError::Corrupt(format!("key {}: {e}", row.kid)))?;
        Ok(ActiveKey { kid: row.kid.clone(), key, signed_until: AtomicI64::new(row.signed_until) })
    }

    /// Sign `payload` as a compact JWS with header `{"alg", "typ", "kid"}`.
    pub fn sign(&self, typ: &str, payload: &Value) -> String {
        let header = json!({"alg": self.key.alg().name(), "typ": typ, "kid": self.kid});
        self.key.sign_compact(&header, payload)
    }
}

/// Why the key ring failed.
#[derive(Debug)]
pub enum KeyError {
    /// Storage.
    Store(StoreError),
    /// Randomness.
    Random(RandomError),
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Store(e) => e.fmt(f),
            KeyError::Random(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for KeyError {}

impl From<StoreError> for KeyError {
    fn from(e: StoreError) -> Self {
        KeyError::Store(e)
    }
}

impl From<RandomError> for KeyError {
    fn from(e: RandomError) -> Self {
        KeyError::Random(e)
    }
}

/// With several replicas on one database (Postgres), how often a replica checks whether another
/// one rotated the key, so that all sign with the current key within this many seconds.
pub const SHARED_KEY_RECHECK_SECONDS: i64 = 2;

/// The key ring.
#[derive(Debug)]
pub struct KeyRing {
    current: RwLock<Arc<ActiveKey>>,
    rotating: tokio::sync::Mutex<()>,
    /// When the database's current key was last compared with ours (shared databases only).
    checked_at: AtomicI64,
}

fn fresh_row(now: i64) -> Result<KeyRow, RandomError> {
    let key = SigningKey::generate_p256();
    Ok(KeyRow {
        kid: new_kid()?,
        alg: key.alg().name().to_owned(),
        secret: key.secret_bytes(),
        created_at: now,
        retired_at: None,
        signed_until: now,
    })
}

impl KeyRing {
    /// Load the current key, creating the first one in an empty database.
    pub async fn load(store: &Store, now: i64) -> Result<KeyRing, KeyError> {
        let row = match store.current_key().await? {
            Some(row) => row,
            None => {
                // Replicas starting together on an empty database agree on one first key.
                let row = store.insert_first_key(&fresh_row(now)?).await?;
                tracing::info!(kid = %row.kid, "created the first signing key");
                row
            }
        };
        let active = ActiveKey::from_row(&row)?;
        Ok(KeyRing {
            current: RwLock::new(Arc::new(active)),
            rotating: tokio::sync::Mutex::new(()),
            checked_at: AtomicI64::new(now),
        })
    }

    /// The current key (no lease taken: only for reading its kid).
    pub fn current(&self) -> Arc<ActiveKey> {
        self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// The current key, with its lease extended so that it stays published until at least `until`.
    ///
    /// A token is never signed with a key whose lease could not be recorded: when the key's row is
    /// gone (another replica rotated away from it and deleted it once its lease ran out, before this
    /// replica took up the rotation), the current key is read from the database at once and leased
    /// instead; if that fails too, the error ([`StoreError::KeyGone`]) is returned and nothing is signed.
    pub async fn signer_until(&self, store: &Store, until: i64) -> Result<Arc<ActiveKey>, StoreError> {
        self.follow_shared(store).await?;
        let key = self.current();
        match Self::lease(&key, store, until).await {
            Ok(()) => Ok(key),
            Err(StoreError::KeyGone { kid }) => {
                tracing::warn!(%kid, "the signing key is gone from the database; taking up the current one");
                let Some(row) = store.current_key().await? else { return Err(StoreError::KeyGone { kid }) };
                if row.kid == kid {
                    return Err(StoreError::KeyGone { kid });
                }
                let fresh = Arc::new(ActiveKey::from_row(&row)?);
                Self::lease(&fresh, store, until).await?;
                {
                    let mut current = self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner());
                    if current.kid == kid {
                        *current = fresh.clone();
                    }
                }
                self.checked_at.store(crate::util::now_secs(), Ordering::Release);
                tracing::info!(kid = %fresh.kid, "took up the current signing key");
                Ok(fresh)
            }
            Err(e) => Err(e),
        }
    }

    /// Extend `key`'s lease in the database so that it covers `until` (no write when it already does).
    async fn lease(key: &ActiveKey, store: &Store, until: i64) -> Result<(), StoreError> {
        if key.signed_until.load(Ordering::Acquire) < until {
            let lease = until.saturating_add(LEASE_SLACK_SECONDS);
            store.extend_key_lease(&key.kid, lease).await?;
            key.signed_until.fetch_max(lease, Ordering::AcqRel);
        }
        Ok(())
    }

    /// On a shared database, take up the current key another replica made by rotating (checked at
    /// most every [`SHARED_KEY_RECHECK_SECONDS`]).
    async fn follow_shared(&self, store: &Store) -> Result<(), StoreError> {
        if store.backend() != crate::store::Backend::Postgres {
            return Ok(());
        }
        let now = crate::util::now_secs();
        let last = self.checked_at.load(Ordering::Acquire);
        if now - last < SHARED_KEY_RECHECK_SECONDS
            || self.checked_at.compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire).is_err()
        {
            return Ok(());
        }
        if let Some(row) = store.current_key().await? {
            if row.kid != self.current().kid {
                let active = Arc::new(ActiveKey::from_row(&row)?);
                *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = active;
                tracing::info!(kid = %row.kid, "took up the signing key another replica rotated to");
            }
        }
        Ok(())
    }

    /// Make a new current key; the previous one stays published while its lease runs.
    /// Returns (previous kid, new kid).
    pub async fn rotate(&self, store: &Store, now: i64) -> Result<(String, String), KeyError> {
        let _guard = self.rotating.lock().await;
        let previous = self.current().kid.clone();
        let row = fresh_row(now)?;
        store.rotate_key(&row, now).await?;
        let active = Arc::new(ActiveKey::from_row(&row)?);
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = active;
        tracing::info!(previous_kid = %previous, kid = %row.kid, "rotated the signing key");
        Ok((previous, row.kid))
    }

    /// The JWKS to publish at `now`: the current key first, then retired keys still leased.
    pub async fn jwks(&self, store: &Store, now: i64) -> Result<JwkSet, StoreError> {
        let rows = store.published_keys(now).await?;
        let mut keys = Vec::with_capacity(rows.len());
        for row in &rows {
            let active = ActiveKey::from_row(row)?;
            keys.push(active.key.public_jwk(Some(&active.kid)));
        }
        Ok(JwkSet { keys })
    }
}
