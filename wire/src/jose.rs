//! JWS compact serialization (RFC 7515) and JWKs (RFC 7517) for the algorithms missiongate accepts.
//!
//! Only asymmetric algorithms exist here: ES256 (RFC 7518 §3.4), EdDSA with Ed25519 (RFC 8037), and
//! RS256 / PS256 (RFC 7518 §3.3 and §3.5; RSA keys of 2048 to 4096 bits). HMAC is deliberately absent, so algorithm confusion (an HS256 token "signed" with a public key's
//! bytes) cannot be verified by construction: the header's `alg` never selects a symmetric check.
//! Verifying keys are decoded once (at configuration or JWKS load) and reused for every token.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

use crate::b64;

/// Signature algorithms this implementation can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA P-256 with SHA-256, signature `r || s` (64 bytes).
    Es256,
    /// Ed25519 (RFC 8037).
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3).
    Rs256,
    /// RSASSA-PSS with SHA-256, MGF1 with SHA-256, salt length 32 (RFC 7518 §3.5).
    Ps256,
}

/// Shortest RSA modulus accepted (RFC 7518 §3.3: "2048 bits or larger MUST be used").
pub const RSA_MIN_BITS: usize = 2048;
/// Longest RSA modulus accepted: bounds the cost of one verification (and of a hostile JWKS).
pub const RSA_MAX_BITS: usize = 4096;

impl Alg {
    /// Parse a JOSE `alg` name. `none` and every HMAC or unknown name is `None`.
    pub fn from_name(name: &str) -> Option<Alg> {
        match name {
            "ES256" => Some(Alg::Es256),
            "EdDSA" | "Ed25519" => Some(Alg::EdDsa),
            "RS256" => Some(Alg::Rs256),
            "PS256" => Some(Alg::Ps256),
            _ => None,
        }
    }
    /// The JOSE name.
    pub fn name(self) -> &'static str {
        match self {
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
        }
    }
    /// True for the names of symmetric (HMAC) algorithms, which are never accepted.
    pub fn is_hmac_name(name: &str) -> bool {
        matches!(name, "HS256" | "HS384" | "HS512")
    }
}

/// Why a JOSE object was refused. Messages never contain token or key material.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoseError {
    /// Not three base64url segments separated by dots.
    Malformed(&'static str),
    /// Header is not a JSON object of the expected shape.
    BadHeader(&'static str),
    /// `alg` is `none`, HMAC, or not supported.
    UnsupportedAlg,
    /// The key cannot be used with the token's algorithm.
    KeyAlgMismatch,
    /// Key material could not be decoded.
    BadKey(&'static str),
    /// Signature did not verify.
    BadSignature,
    /// Payload is not valid JSON for the expected claims.
    BadPayload(String),
}

impl fmt::Display for JoseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoseError::Malformed(m) => write!(f, "malformed JWS: {m}"),
            JoseError::BadHeader(m) => write!(f, "bad JOSE header: {m}"),
            JoseError::UnsupportedAlg => f.write_str("algorithm not allowed"),
            JoseError::KeyAlgMismatch => f.write_str("key does not match the algorithm"),
            JoseError::BadKey(m) => write!(f, "bad key: {m}"),
            JoseError::BadSignature => f.write_str("signature verification failed"),
            JoseError::BadPayload(m) => write!(f, "bad payload: {m}"),
        }
    }
}

impl std::error::Error for JoseError {}

/// The JOSE header members missiongate reads.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct Header {
    /// Algorithm name as sent.
    pub alg: String,
    /// Media type of the complete JWS (`at+jwt`, `dpop+jwt`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Embedded public key (DPoP proofs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwk: Option<Jwk>,
    /// Critical extensions; none are understood, so any is a rejection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crit: Option<serde_json::Value>,
}

/// A JWS compact serialization split into its parts, borrowed from the token text.
#[derive(Debug, Clone, Copy)]
pub struct Compact<'a> {
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`: the bytes that were signed.
    pub signing_input: &'a str,
    /// Encoded header.
    pub header_b64: &'a str,
    /// Encoded payload.
    pub payload_b64: &'a str,
    /// Encoded signature.
    pub signature_b64: &'a str,
}

impl<'a> Compact<'a> {
    /// Split `h.p.s`. More or fewer than two dots, or an empty part, is malformed.
    pub fn split(token: &'a str) -> Result<Compact<'a>, JoseError> {
        let mut it = token.splitn(4, '.');
        let (h, p, s) = match (it.next(), it.next(), it.next(), it.next()) {
            (Some(h), Some(p), Some(s), None) => (h, p, s),
            _ => return Err(JoseError::Malformed("expected three segments")),
        };
        if h.is_empty() || p.is_empty() || s.is_empty() {
            return Err(JoseError::Malformed("empty segment"));
        }
        let valid = |x: &str| x.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid(h) || !valid(p) || !valid(s) {
            return Err(JoseError::Malformed("not base64url"));
        }
        let signing_input = token.get(..h.len() + 1 + p.len()).ok_or(JoseError::Malformed("split"))?;
        Ok(Compact { signing_input, header_b64: h, payload_b64: p, signature_b64: s })
    }

    /// Decode and parse the header; `crit` is refused.
    pub fn header(&self) -> Result<Header, JoseError> {
        let bytes = b64::decode(self.header_b64).map_err(|_| JoseError::Malformed("header encoding"))?;
        let header: Header =
            serde_json::from_slice(&bytes).map_err(|_| JoseError::BadHeader("not a JOSE header object"))?;
        if header.crit.is_some() {
            return Err(JoseError::BadHeader("crit is not supported"));
        }
        Ok(header)
    }

    /// Decode the payload bytes.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, JoseError> {
        b64::decode(self.payload_b64).map_err(|_| JoseError::Malformed("payload encoding"))
    }

    /// Decode the signature bytes.
    pub fn signature_bytes(&self) -> Result<Vec<u8>, JoseError> {
        b64::decode(self.signature_b64).map_err(|_| JoseError::Malformed("signature encoding"))
    }
}

/// A JSON Web Key as published in a JWKS. Unknown members are ignored.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq, Default)]
pub struct Jwk {
    /// Key type: `EC`, `OKP`, `RSA`, `oct`.
    pub kty: String,
    /// Curve for `EC` and `OKP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Public coordinate (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Public coordinate (base64url), EC only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA modulus (base64url, big-endian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA public exponent (base64url, big-endian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// Key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// Intended algorithm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Intended use (`sig`).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Private part; a public JWK that carries it is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<String>,
}

/// A JWK Set (RFC 7517 §5).
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

impl Jwk {
    /// RFC 7638 thumbprint: base64url(SHA-256(JCS of the required members)).
    pub fn thumbprint(&self) -> Result<String, JoseError> {
        if self.kty == "RSA" {
            let n = self.n.as_deref().ok_or(JoseError::BadKey("n missing"))?;
            let e = self.e.as_deref().ok_or(JoseError::BadKey("e missing"))?;
            let canonical = serde_json::json!({"e": e, "kty": "RSA", "n": n});
            let bytes = serde_json::to_vec(&canonical).map_err(|_| JoseError::BadKey("encode"))?;
            return Ok(b64::encode(Sha256::digest(&bytes)));
        }
        let x = self.x.as_deref().ok_or(JoseError::BadKey("x missing"))?;
        let crv = self.crv.as_deref().ok_or(JoseError::BadKey("crv missing"))?;
        // The required members in lexicographic order, per RFC 7638 §3.2; the values are base64url
        // and curve names, which need no JSON escaping beyond what serde_json does.
        let canonical = match self.kty.as_str() {
            "EC" => {
                let y = self.y.as_deref().ok_or(JoseError::BadKey("y missing"))?;
                serde_json::json!({"crv": crv, "kty": "EC", "x": x, "y": y})
            }
            "OKP" => serde_json::json!({"crv": crv, "kty": "OKP", "x": x}),
            _ => return Err(JoseError::BadKey("unsupported kty")),
        };
        // serde_json's Map is a BTreeMap here (no preserve_order), so keys print sorted.
        let bytes = serde_json::to_vec(&canonical).map_err(|_| JoseError::BadKey("encode"))?;
        Ok(b64::encode(Sha256::digest(&bytes)))
    }

    /// Decode the public key once; the result is reused for every verification.
    pub fn verifying_key(&self) -> Result<VerifyingKey, JoseError> {
        if self.d.is_some() {
            return Err(JoseError::BadKey("private key material in a public JWK"));
        }
        if let Some(u) = &self.use_ {
            if u != "sig" {
                return Err(JoseError::BadKey("use is not sig"));
            }
        }
        match (self.kty.as_str(), self.crv.as_deref()) {
            ("EC", Some("P-256")) => {
                let x = decode_fixed::<32>(self.x.as_deref(), "x")?;
                let y = decode_fixed::<32>(self.y.as_deref(), "y")?;
                let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
                let key = p256::ecdsa::VerifyingKey::from_encoded_point(&point)
                    .map_err(|_| JoseError::BadKey("not a point on P-256"))?;
                Ok(VerifyingKey::P256(key, None))
            }
            ("OKP", Some("Ed25519")) => {
                let x = decode_fixed::<32>(self.x.as_deref(), "x")?;
                let key =
                    ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| JoseError::BadKey("not an Ed25519 key"))?;
                Ok(VerifyingKey::Ed25519(key))
            }
            ("RSA", _) => {
                // A JWK that names its algorithm is held to it; one that does not serves RS256 and PS256.
                let only = match self.alg.as_deref() {
                    None => None,
                    Some("RS256") => Some(Alg::Rs256),
                    Some("PS256") => Some(Alg::Ps256),
                    Some(_) => return Err(JoseError::BadKey("RSA key for an algorithm other than RS256 or PS256")),
                };
                Ok(VerifyingKey::Rsa(RsaKey::from_jwk(self.n.as_deref(), self.e.as_deref())?, only))
            }
            ("oct", _) => Err(JoseError::BadKey("symmetric keys are not accepted")),
            _ => Err(JoseError::BadKey("unsupported key type or curve")),
        }
    }
}

/// An RSA public key of [`RSA_MIN_BITS`] to [`RSA_MAX_BITS`] bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RsaKey(std::sync::Arc<rsa::RsaPublicKey>);

impl RsaKey {
    /// From the JWK members `n` and `e` (RFC 7518 §6.3.1): unsigned big-endian, base64url.
    pub fn from_jwk(n: Option<&str>, e: Option<&str>) -> Result<RsaKey, JoseError> {
        let n = b64::decode(n.ok_or(JoseError::BadKey("n missing"))?).map_err(|_| JoseError::BadKey("n"))?;
        let e = b64::decode(e.ok_or(JoseError::BadKey("e missing"))?).map_err(|_| JoseError::BadKey("e"))?;
        // RFC 7518 §6.3.1.1: no leading zero octets; a modulus with one is not a canonical encoding.
        if n.first() == Some(&0) || e.first() == Some(&0) {
            return Err(JoseError::BadKey("RSA member with a leading zero octet"));
        }
        let n = rsa::BigUint::from_bytes_be(&n);
        let bits = n.bits();
        if bits < RSA_MIN_BITS {
            return Err(JoseError::BadKey("RSA modulus shorter than 2048 bits"));
        }
        if bits > RSA_MAX_BITS {
            return Err(JoseError::BadKey("RSA modulus longer than 4096 bits"));
        }
        // `new` also checks the exponent (odd, at least 3, at most 2^33 - 1).
        let key = rsa::RsaPublicKey::new(n, rsa::BigUint::from_bytes_be(&e))
            .map_err(|_| JoseError::BadKey("not a valid RSA public key"))?;
        Ok(RsaKey(std::sync::Arc::new(key)))
    }

    /// The modulus `n` and the public exponent `e`, unsigned big-endian without leading zeros.
    pub fn components(&self) -> (Vec<u8>, Vec<u8>) {
        use rsa::traits::PublicKeyParts;
        (self.0.n().to_bytes_be(), self.0.e().to_bytes_be())
    }

    /// Modulus length in bits.
    pub fn bits(&self) -> usize {
        use rsa::traits::PublicKeyParts;
        self.0.n().bits()
    }

    fn verify(&self, alg: Alg, signing_input: &[u8], signature: &[u8]) -> Result<(), JoseError> {
        use rsa::traits::PublicKeyParts;
        // The signature is exactly as long as the modulus (RFC 8017 §8.1.2 and §8.2.2 step 1).
        if signature.len() != self.0.size() {
            return Err(JoseError::BadSignature);
        }
        let digest = Sha256::digest(signing_input);
        let r = match alg {
            Alg::Rs256 => self.0.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, signature),
            // `Pss::new` expects a salt exactly as long as the digest, as RFC 7518 §3.5 requires.
            Alg::Ps256 => self.0.verify(rsa::Pss::new::<Sha256>(), &digest, signature),
            _ => return Err(JoseError::KeyAlgMismatch),
        };
        r.map_err(|_| JoseError::BadSignature)
    }
}

fn decode_fixed<const N: usize>(v: Option<&str>, what: &'static str) -> Result<[u8; N], JoseError> {
    let bytes = b64::decode(v.ok_or(JoseError::BadKey(what))?).map_err(|_| JoseError::BadKey(what))?;
    bytes.try_into().map_err(|_| JoseError::BadKey(what))
}

/// A decoded public key, ready to verify.
#[derive(Debug, Clone)]
pub enum VerifyingKey {
    /// P-256 ECDSA, with precomputed tables once [`VerifyingKey::precompute`] has run.
    P256(p256::ecdsa::VerifyingKey, Option<std::sync::Arc<crate::p256_fast::FastP256Key>>),
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
    /// RSA: RS256 and PS256, or only the one the JWK's `alg` names.
    Rsa(RsaKey, Option<Alg>),
}

impl VerifyingKey {
    /// True when this key verifies `alg`: ES256 only with a P-256 key, EdDSA only with an Ed25519
    /// key, RS256 and PS256 only with an RSA key (no algorithm confusion across key types).
    pub fn accepts(&self, alg: Alg) -> bool {
        match self {
            VerifyingKey::P256(..) => alg == Alg::Es256,
            VerifyingKey::Ed25519(_) => alg == Alg::EdDsa,
            VerifyingKey::Rsa(_, Some(only)) => alg == *only,
            VerifyingKey::Rsa(_, None) => matches!(alg, Alg::Rs256 | Alg::Ps256),
        }
    }

    /// Build the per-key tables that make P-256 verification fast (about 2.7 ms and 256 KiB per
    /// key, once, shared by every holder of the same key: [`crate::p256_fast::FastP256Key::shared`]): for keys that verify many signatures (issuer and authority keys). Keys seen once
    /// (a DPoP proof's `jwk`) are better left without.
    pub fn precompute(self) -> VerifyingKey {
        match self {
            VerifyingKey::P256(k, None) => {
                let fast = crate::p256_fast::FastP256Key::shared(&k);
                VerifyingKey::P256(k, Some(fast))
            }
            other => other,
        }
    }

    /// Verify `signature` over `signing_input` with `alg`, which must be this key's algorithm.
    pub fn verify(&self, alg: Alg, signing_input: &[u8], signature: &[u8]) -> Result<(), JoseError> {
        if !self.accepts(alg) {
            return Err(JoseError::KeyAlgMismatch);
        }
        match self {
            // Variable-time verification (all inputs are public), far faster than the constant-time
            // generic path in Wasm: see `p256_fast`.
            VerifyingKey::P256(key, fast) => {
                let ok = match fast {
                    Some(f) => f.verify(signing_input, signature),
                    None => crate::p256_fast::verify_once(key, signing_input, signature),
                };
                if ok {
                    Ok(())
                } else {
                    Err(JoseError::BadSignature)
                }
            }
            VerifyingKey::Ed25519(key) => {
                let bytes: [u8; 64] = signature.try_into().map_err(|_| JoseError::BadSignature)?;
                let sig = ed25519_dalek::Signature::from_bytes(&bytes);
                key.verify_strict(signing_input, &sig).map_err(|_| JoseError::BadSignature)
            }
            VerifyingKey::Rsa(key, _) => key.verify(alg, signing_input, signature),
        }
    }
}

/// Who checks a signature for [`crate::jws`] and [`crate::dpop`]: [`PureVerifier`] (this crate, what
/// every caller gets by default), or a host's own that must answer exactly as [`VerifyingKey::verify`]
/// does for every input (the filter hands some signatures to Envoy's BoringSSL where it is faster).
pub trait Verifier {
    /// Verify `signature` over `signing_input` with `key` and `alg`, as [`VerifyingKey::verify`].
    fn verify(&self, key: &VerifyingKey, alg: Alg, signing_input: &[u8], signature: &[u8]) -> Result<(), JoseError>;
}

/// [`VerifyingKey::verify`], pure Rust.
#[derive(Debug, Clone, Copy, Default)]
pub struct PureVerifier;

impl Verifier for PureVerifier {
    fn verify(&self, key: &VerifyingKey, alg: Alg, signing_input: &[u8], signature: &[u8]) -> Result<(), JoseError> {
        key.verify(alg, signing_input, signature)
    }
}

/// Verify a compact JWS with one key and return its header and payload bytes.
pub fn verify_compact(token: &str, key: &VerifyingKey) -> Result<(Header, Vec<u8>), JoseError> {
    let parts = Compact::split(token)?;
    let header = parts.header()?;
    let alg = Alg::from_name(&header.alg).ok_or(JoseError::UnsupportedAlg)?;
    let sig = parts.signature_bytes()?;
    key.verify(alg, parts.signing_input.as_bytes(), &sig)?;
    Ok((header, parts.payload_bytes()?))
}

#[cfg(feature = "sign-core")]
mod signing {
    use super::*;

    /// A private signing key (portal, tests, demo agents). Not compiled into the filter.
    #[derive(Clone)]
    pub enum SigningKey {
        /// P-256 ECDSA (ES256).
        P256(p256::ecdsa::SigningKey),
        /// Ed25519 (EdDSA).
        Ed25519(ed25519_dalek::SigningKey),
        /// RSA, signing RS256 or PS256 (tests and demo authorities; the portal signs ES256).
        Rsa(std::sync::Arc<rsa::RsaPrivateKey>, Alg),
    }

    /// Deterministic bytes for the PSS salt: SHA-256 in counter mode over a secret and the message,
    /// so signing needs no RNG (a salt need not be random for PSS to be secure, RFC 8017 §9.1 note 4).
    struct SaltStream {
        seed: [u8; 32],
        counter: u64,
        buf: Vec<u8>,
    }

    impl rsa::rand_core::RngCore for SaltStream {
        fn next_u32(&mut self) -> u32 {
            let mut b = [0u8; 4];
            self.fill_bytes(&mut b);
            u32::from_le_bytes(b)
        }
        fn next_u64(&mut self) -> u64 {
            let mut b = [0u8; 8];
            self.fill_bytes(&mut b);
            u64::from_le_bytes(b)
        }
        fn fill_bytes(&mut self, dest: &mut [u8]) {
            for d in dest.iter_mut() {
                if self.buf.is_empty() {
                    let mut h = Sha256::new();
                    h.update(self.seed);
                    h.update(self.counter.to_be_bytes());
                    self.counter += 1;
                    self.buf = h.finalize().to_vec();
                }
                *d = self.buf.pop().unwrap_or(0);
            }
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
            self.fill_bytes(dest);
            Ok(())
        }
    }
    impl rsa::rand_core::CryptoRng for SaltStream {}

    impl fmt::Debug for SigningKey {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "SigningKey({})", self.alg().name())
        }
    }

    impl SigningKey {
        /// A fresh P-256 key from the OS RNG.
        #[cfg(feature = "sign")]
        pub fn generate_p256() -> SigningKey {
            SigningKey::P256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
        }
        /// A fresh Ed25519 key from the OS RNG.
        #[cfg(feature = "sign")]
        pub fn generate_ed25519() -> SigningKey {
            {
                use rand_core::RngCore;
                let mut seed = [0u8; 32];
                rand_core::OsRng.fill_bytes(&mut seed);
                SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
        }
        /// An RSA key from its two primes (big-endian) with e = 65537, signing `alg` (RS256 or PS256).
        pub fn rsa_from_primes(alg: Alg, p: &[u8], q: &[u8]) -> Result<SigningKey, JoseError> {
            if !matches!(alg, Alg::Rs256 | Alg::Ps256) {
                return Err(JoseError::KeyAlgMismatch);
            }
            let key = rsa::RsaPrivateKey::from_p_q(
                rsa::BigUint::from_bytes_be(p),
                rsa::BigUint::from_bytes_be(q),
                rsa::BigUint::from(65537u32),
            )
            .map_err(|_| JoseError::BadKey("RSA primes"))?;
            Ok(SigningKey::Rsa(std::sync::Arc::new(key), alg))
        }
        /// The same RSA key signing the other RSA algorithm (RS256 <-> PS256); other keys unchanged.
        pub fn with_alg(&self, alg: Alg) -> SigningKey {
            match self {
                SigningKey::Rsa(k, _) if matches!(alg, Alg::Rs256 | Alg::Ps256) => {
                    SigningKey::Rsa(std::sync::Arc::clone(k), alg)
                }
                other => other.clone(),
            }
        }
        /// The algorithm this key signs with.
        pub fn alg(&self) -> Alg {
            match self {
                SigningKey::P256(_) => Alg::Es256,
                SigningKey::Ed25519(_) => Alg::EdDsa,
                SigningKey::Rsa(_, alg) => *alg,
            }
        }
        /// Private scalar / seed bytes, for storage. RSA: `len(p)` (2 bytes, big-endian), `p`, `q`.
        pub fn secret_bytes(&self) -> Vec<u8> {
            match self {
                SigningKey::P256(k) => k.to_bytes().to_vec(),
                SigningKey::Ed25519(k) => k.to_bytes().to_vec(),
                SigningKey::Rsa(k, _) => {
                    use rsa::traits::PrivateKeyParts;
                    let primes = k.primes();
                    let p = primes.first().map(|x| x.to_bytes_be()).unwrap_or_default();
                    let q = primes.get(1).map(|x| x.to_bytes_be()).unwrap_or_default();
                    let mut out = u16::try_from(p.len()).unwrap_or(0).to_be_bytes().to_vec();
                    out.extend_from_slice(&p);
                    out.extend_from_slice(&q);
                    out
                }
            }
        }
        /// Restore from `secret_bytes`.
        pub fn from_secret_bytes(alg: Alg, bytes: &[u8]) -> Result<SigningKey, JoseError> {
            match alg {
                Alg::Es256 => p256::ecdsa::SigningKey::from_slice(bytes)
                    .map(SigningKey::P256)
                    .map_err(|_| JoseError::BadKey("P-256 scalar")),
                Alg::EdDsa => {
                    let seed: [u8; 32] = bytes.try_into().map_err(|_| JoseError::BadKey("Ed25519 seed"))?;
                    Ok(SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed)))
                }
                Alg::Rs256 | Alg::Ps256 => {
                    let (len, rest) = bytes.split_at_checked(2).ok_or(JoseError::BadKey("RSA secret"))?;
                    let len: [u8; 2] = len.try_into().map_err(|_| JoseError::BadKey("RSA secret"))?;
                    let len = usize::from(u16::from_be_bytes(len));
                    let (p, q) = rest.split_at_checked(len).ok_or(JoseError::BadKey("RSA secret"))?;
                    SigningKey::rsa_from_primes(alg, p, q)
                }
            }
        }
        /// The public JWK, with `kid`, `alg` and `use: sig`.
        pub fn public_jwk(&self, kid: Option<&str>) -> Jwk {
            let mut jwk = match self {
                SigningKey::P256(k) => {
                    let point = k.verifying_key().to_encoded_point(false);
                    Jwk {
                        kty: "EC".into(),
                        crv: Some("P-256".into()),
                        x: point.x().map(b64::encode),
                        y: point.y().map(b64::encode),
                        ..Jwk::default()
                    }
                }
                SigningKey::Ed25519(k) => Jwk {
                    kty: "OKP".into(),
                    crv: Some("Ed25519".into()),
                    x: Some(b64::encode(k.verifying_key().to_bytes())),
                    ..Jwk::default()
                },
                SigningKey::Rsa(k, _) => {
                    use rsa::traits::PublicKeyParts;
                    Jwk {
                        kty: "RSA".into(),
                        n: Some(b64::encode(k.n().to_bytes_be())),
                        e: Some(b64::encode(k.e().to_bytes_be())),
                        ..Jwk::default()
                    }
                }
            };
            jwk.kid = kid.map(str::to_owned);
            jwk.alg = Some(self.alg().name().to_owned());
            jwk.use_ = Some("sig".into());
            jwk
        }
        /// Sign raw bytes, returning the JWS signature bytes.
        pub fn sign_bytes(&self, input: &[u8]) -> Vec<u8> {
            match self {
                SigningKey::P256(k) => {
                    use p256::ecdsa::signature::Signer;
                    let sig: p256::ecdsa::Signature = k.sign(input);
                    sig.to_bytes().to_vec()
                }
                SigningKey::Ed25519(k) => {
                    use ed25519_dalek::Signer;
                    k.sign(input).to_bytes().to_vec()
                }
                SigningKey::Rsa(k, alg) => {
                    let digest = Sha256::digest(input);
                    let r = if *alg == Alg::Ps256 {
                        let mut h = Sha256::new();
                        h.update(self.secret_bytes());
                        h.update(input);
                        let mut salt = SaltStream { seed: h.finalize().into(), counter: 0, buf: Vec::new() };
                        k.sign_with_rng(&mut salt, rsa::Pss::new::<Sha256>(), &digest)
                    } else {
                        k.sign(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest)
                    };
                    // Signing with a valid private key and a SHA-256 digest cannot fail.
                    r.unwrap_or_default()
                }
            }
        }
        /// Sign a JSON header and payload into compact serialization.
        pub fn sign_compact(&self, header: &serde_json::Value, payload: &serde_json::Value) -> String {
            let h = b64::encode(header.to_string());
            let p = b64::encode(payload.to_string());
            let input = format!("{h}.{p}");
            let sig = b64::encode(self.sign_bytes(input.as_bytes()));
            format!("{input}.{sig}")
        }
    }
}

#[cfg(feature = "sign-core")]
pub use signing::SigningKey;

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7515 Appendix A.3: ES256 example (key and JWS from the RFC, independent of our signer).
    const A3_JWK: &str = r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
    const A3_JWS: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";

    #[test]
    fn rfc7515_a3_es256_verifies() {
        let jwk: Jwk = serde_json::from_str(A3_JWK).unwrap();
        let key = jwk.verifying_key().unwrap();
        let (header, payload) = verify_compact(A3_JWS, &key).unwrap();
        assert_eq!(header.alg, "ES256");
        assert!(String::from_utf8(payload).unwrap().contains("\"iss\":\"joe\""));
        // One flipped payload character breaks it.
        let tampered = A3_JWS.replacen("eyJpc3MiOiJqb2Ui", "eyJpc3MiOiJqb2Uj", 1);
        assert_eq!(verify_compact(&tampered, &key).unwrap_err(), JoseError::BadSignature);
    }

    // RFC 8037 Appendix A.4: Ed25519 signature over "Example of Ed25519 signing".
    #[test]
    fn rfc8037_a4_ed25519_verifies() {
        let jwk: Jwk =
            serde_json::from_str(r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#)
                .unwrap();
        let key = jwk.verifying_key().unwrap();
        let jws = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
        let (_, payload) = verify_compact(jws, &key).unwrap();
        assert_eq!(payload, b"Example of Ed25519 signing");
    }

    // RFC 8037 Appendix A.3: thumbprint of the Ed25519 key.
    #[test]
    fn rfc8037_a3_thumbprint() {
        let jwk: Jwk =
            serde_json::from_str(r#"{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#)
                .unwrap();
        assert_eq!(jwk.thumbprint().unwrap(), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn rejects_alg_none_and_hmac_and_mismatch() {
        assert_eq!(Alg::from_name("none"), None);
        assert_eq!(Alg::from_name("HS256"), None);
        assert!(Alg::is_hmac_name("HS256"));
        let jwk: Jwk = serde_json::from_str(A3_JWK).unwrap();
        let key = jwk.verifying_key().unwrap();
        assert_eq!(key.verify(Alg::EdDsa, b"x", &[0; 64]).unwrap_err(), JoseError::KeyAlgMismatch);
        assert_eq!(key.verify(Alg::Rs256, b"x", &[0; 256]).unwrap_err(), JoseError::KeyAlgMismatch);
        assert_eq!(key.verify(Alg::Ps256, b"x", &[0; 256]).unwrap_err(), JoseError::KeyAlgMismatch);
        let oct = Jwk { kty: "oct".into(), ..Jwk::default() };
        assert!(oct.verifying_key().is_err());
    }

    #[test]
    fn split_rejects_malformed() {
        for bad in ["", "a.b", "a.b.c.d", "a..c", "a.b.c d", ".b.c", "a.b+.c"] {
            assert!(Compact::split(bad).is_err(), "{bad}");
        }
    }

    #[cfg(feature = "sign")]
    #[test]
    fn sign_then_verify_roundtrip() {
        for key in [SigningKey::generate_p256(), SigningKey::generate_ed25519()] {
            let jwk = key.public_jwk(Some("k1"));
            let tok = key.sign_compact(&serde_json::json!({"alg": key.alg().name()}), &serde_json::json!({"a": 1}));
            verify_compact(&tok, &jwk.verifying_key().unwrap()).unwrap();
            let restored = SigningKey::from_secret_bytes(key.alg(), &key.secret_bytes()).unwrap();
            assert_eq!(restored.public_jwk(Some("k1")), jwk);
        }
    }
}
