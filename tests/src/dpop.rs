//! DPoP proofs (RFC 9449) minted with `jsonwebtoken`, thumbprints computed by hand (RFC 7638).

use jsonwebtoken::{Algorithm, Header};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::authority::Signer;

/// A client's DPoP key.
pub struct DpopKey {
    signer: Signer,
    /// RFC 7638 thumbprint.
    pub jkt: String,
}

impl Default for DpopKey {
    fn default() -> Self {
        Self::new()
    }
}

impl DpopKey {
    /// A fresh P-256 key.
    pub fn new() -> DpopKey {
        let signer = Signer::new("dpop");
        let j = &signer.jwk;
        // RFC 7638 §3: required members, lexicographic order, no whitespace.
        let canonical = format!(
            "{{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"{}\",\"y\":\"{}\"}}",
            j["x"].as_str().unwrap(),
            j["y"].as_str().unwrap()
        );
        let jkt = missiongate_wire::b64::encode(Sha256::digest(canonical.as_bytes()));
        DpopKey { signer, jkt }
    }

    /// A proof for `htm htu`, presenting `token`, created `iat` (Unix seconds), with `jti`.
    pub fn proof_with(&self, htm: &str, htu: &str, token: &str, iat: i64, jti: &str, typ: &str) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.typ = Some(typ.into());
        let j = &self.signer.jwk;
        h.jwk = Some(serde_json::from_value(json!({"kty": "EC", "crv": "P-256", "x": j["x"], "y": j["y"]})).unwrap());
        let ath = missiongate_wire::b64::encode(Sha256::digest(token.as_bytes()));
        let claims = json!({"jti": jti, "htm": htm, "htu": htu, "iat": iat, "ath": ath});
        self.signer.sign_with_header(h, &claims)
    }

    /// A fresh, valid proof.
    pub fn proof(&self, htm: &str, htu: &str, token: &str) -> String {
        self.proof_with(htm, htu, token, crate::now(), &crate::rand_id("dp_"), "dpop+jwt")
    }
}
