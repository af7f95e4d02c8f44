//! base64url without padding (RFC 7515 §2), the only encoding used on this wire.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Encode bytes as base64url without padding.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decode base64url without padding; padding or the standard alphabet is an error.
pub fn decode(text: impl AsRef<[u8]>) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text)
}
