//! State shared by every worker through Envoy's shared data: the single-use/DPoP replay ledger and
//! the shared PDP decision cache.
//!
//! Envoy's shared data only compare-and-swaps keys that already exist (a set on an absent key always
//! succeeds), so "insert if absent" cannot be done on a per-key entry without a race. Instead each
//! key hashes to one of [`BUCKETS`] ledger entries created at configure time, and an insert is a
//! read-modify-write of that bucket with CAS, retried on conflict: exactly one worker wins.
//!
//! The ledger is bounded: a bucket holds at most [`missiongate_core::ledger::MAX_PER_BUCKET`] live entries of fixed width
//! (the SHA-256 of the key, so an entry is 11 + 43 bytes whatever the key), so an insert rewrites at
//! most about 7 KiB and the whole ledger stays under 29 MiB: room for about half a million live
//! keys (a DPoP proof's key lives for its acceptance window plus a minute). When a bucket is full of entries that
//! have not expired, the insert is refused with [`REPLAY_STORE_FULL`] (503 `replay_store_full`,
//! Retry-After, counted): the request is never allowed without its key remembered, and the bucket is
//! never grown. A key with a control character (or a space, the entry separator) never enters.

use crate::abi;
use missiongate_core::engine::REPLAY_STORE_FULL;
use missiongate_core::ledger::{contains, insert, Insert};
use missiongate_core::ReplayGuard;

/// Ledger buckets (a prime spreads FNV-1a evenly).
pub const BUCKETS: u64 = 4093;
const BUCKET_PREFIX: &str = "missiongate.once.";
const MAX_CAS_RETRIES: usize = 16;
const DECISION_SLOTS: u64 = 1024;

/// The replay ledger and shared decision cache, as the engine sees them.
pub struct SharedReplay;

fn fnv1a(key: &str) -> u64 {
    // FNV-1a: stable across workers and builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn bucket_key(entry: &str) -> String {
    format!("{BUCKET_PREFIX}{}", fnv1a(entry) % BUCKETS)
}

fn slot_key(key: &str) -> String {
    format!("missiongate.decision.{}", fnv1a(key) % DECISION_SLOTS)
}

/// Set once every bucket exists: a VM that starts later (another worker, a reload) finds it and
/// skips the [`BUCKETS`] look-ups (shared data is never freed, so the buckets are still there).
const LEDGER_READY: &str = "missiongate.ledger.ready";

/// At configure time: create the ledger buckets unless a VM has already made them all.
pub fn init_buckets() {
    if let Ok((Some(_), _)) = abi::get_shared(LEDGER_READY) {
        return;
    }
    if create_buckets() {
        let _ = abi::set_shared(LEDGER_READY, b"1", 0);
    }
}

/// Create the ledger buckets that do not exist yet (another worker may have made them already);
/// `true` when every one exists now.
fn create_buckets() -> bool {
    let mut all = true;
    for i in 0..BUCKETS {
        let k = format!("{BUCKET_PREFIX}{i}");
        match abi::get_shared(&k) {
            Ok((Some(_), _)) => {}
            Ok((None, _)) => all &= abi::set_shared(&k, b"#\n", 0).is_ok(),
            Err(_) => all = false,
        }
    }
    all
}

impl ReplayGuard for SharedReplay {
    fn remember(&mut self, key: &str, until: i64, now: i64) -> Result<bool, String> {
        if key.is_empty() || key.chars().any(|c| c.is_control() || c == ' ') {
            return Err("replay key has a control character or separator".into());
        }
        let entry = missiongate_wire::digest::sha256_b64(key.as_bytes());
        let bucket = bucket_key(&entry);
        for _ in 0..MAX_CAS_RETRIES {
            let (value, cas) = match abi::get_shared(&bucket) {
                Ok((Some(v), cas)) if cas != 0 => (v, cas),
                Ok(_) => {
                    create_buckets();
                    continue;
                }
                Err(e) => return Err(format!("shared data status {}", e.0)),
            };
            let text = String::from_utf8_lossy(&value);
            let next = match insert(&text, &entry, until, now) {
                Insert::Seen => return Ok(false),
                Insert::Full => return Err(REPLAY_STORE_FULL.to_owned()),
                Insert::Text(t) => t,
            };
            match abi::set_shared(&bucket, next.as_bytes(), cas) {
                Ok(()) => return Ok(true),
                Err(abi::Status(abi::CAS_MISMATCH)) => continue,
                Err(e) => return Err(format!("shared data status {}", e.0)),
            }
        }
        Err("shared data contention".into())
    }

    fn seen(&mut self, key: &str, now: i64) -> Result<bool, String> {
        if key.is_empty() || key.chars().any(|c| c.is_control() || c == ' ') {
            return Err("replay key has a control character or separator".into());
        }
        let entry = missiongate_wire::digest::sha256_b64(key.as_bytes());
        match abi::get_shared(&bucket_key(&entry)) {
            Ok((Some(v), _)) => Ok(contains(&String::from_utf8_lossy(&v), &entry, now)),
            Ok((None, _)) => Ok(false),
            Err(e) => Err(format!("shared data status {}", e.0)),
        }
    }

    // The shared decision cache lives in a fixed number of slots (shared data is never freed, so
    // one key per decision would grow without bound): a slot holds one key and its value, a
    // colliding write replaces it, and a read checks the key.
    fn load(&mut self, key: &str) -> Option<Vec<u8>> {
        let (bytes, _) = abi::get_shared(&slot_key(key)).ok()?;
        let bytes = bytes?;
        let rest = bytes.strip_prefix(key.as_bytes())?.strip_prefix(b"\n")?;
        Some(rest.to_vec())
    }

    fn store(&mut self, key: &str, value: &[u8]) {
        let mut bytes = Vec::with_capacity(key.len() + 1 + value.len());
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(value);
        // Last writer wins: entries are whole answers with their own expiry.
        let _ = abi::set_shared(&slot_key(key), &bytes, 0);
    }
}
