//! Small helpers: clock, randomness, secret comparison.

use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

use missiongate_wire::b64;

/// Unix seconds now.
pub fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// Error from the OS random number generator.
#[derive(Debug, Clone, Copy)]
pub struct RandomError;

impl std::fmt::Display for RandomError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the OS random number generator failed")
    }
}

impl std::error::Error for RandomError {}

/// `n` random bytes from the OS, base64url without padding.
pub fn random_b64(n: usize) -> Result<String, RandomError> {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf).map_err(|_| RandomError)?;
    Ok(b64::encode(buf))
}

/// A new Mission identifier: `msn_` + 144 random bits, base64url (standards.md §3.2: ≥ 128 bits).
pub fn new_mission_id() -> Result<String, RandomError> {
    Ok(format!("msn_{}", random_b64(18)?))
}

/// A new client secret, returned once at Mission creation (only its SHA-256 is stored).
pub fn new_client_secret() -> Result<String, RandomError> {
    Ok(format!("mgcs_{}", random_b64(32)?))
}

/// A new signing key id.
pub fn new_kid() -> Result<String, RandomError> {
    random_b64(12)
}

/// A new token id.
pub fn new_jti() -> Result<String, RandomError> {
    random_b64(16)
}

/// SHA-256 of a secret.
pub fn sha256(bytes: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(bytes.as_ref()).into()
}

/// Constant-time comparison of a presented secret against a stored SHA-256 of the expected one.
/// Hashing first makes the time independent of the presented length as well.
pub fn secret_matches(presented: &str, expected_sha256: &[u8]) -> bool {
    let got = sha256(presented.as_bytes());
    expected_sha256.len() == got.len() && bool::from(got.as_slice().ct_eq(expected_sha256))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_enough_entropy_and_alphabet() {
        let id = new_mission_id().unwrap();
        assert!(id.starts_with("msn_"));
        assert_eq!(id.len(), 4 + 24);
        assert!(id[4..].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(id, new_mission_id().unwrap());
    }

    #[test]
    fn secret_compare() {
        let h = sha256("s3cret");
        assert!(secret_matches("s3cret", &h));
        assert!(!secret_matches("s3cre", &h));
        assert!(!secret_matches("", &h));
        assert!(!secret_matches("s3cret", &h[..31]));
    }
}
