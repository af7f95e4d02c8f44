//! Signatures the host checks faster than the pure-Rust path: Envoy's `verify_signature` foreign
//! function (BoringSSL, Envoy 1.30+), for the two cases where it wins (measured by
//! `make verifysig-probe`, VERIFYSIG-FINDINGS.md): ES256 under a key without precomputed tables
//! (every DPoP proof key, issuer keys beyond the table budget), about 3x faster than
//! `p256_fast::verify_once`, and RS256, about 30x faster than `rsa` in Wasm. ES256 under a key with
//! tables is faster in Wasm and stays there, as do EdDSA and PS256 (BoringSSL's `EVP_DigestVerify`
//! cannot be told either through this function).
//!
//! The answer must be exactly the pure path's for every input, so only inputs on which the two
//! provably agree are routed to the host ([`route`]); everything else, and any host failure,
//! goes to [`VerifyingKey::verify`]:
//! * ES256: `alg` matches the key, the signature is 64 bytes and `r`, `s` are in `[1, n-1]`. On
//!   those, both are textbook ECDSA verification over the same point (`p256` checked it is on the
//!   curve; BoringSSL re-checks when it parses the key), both reduce SHA-256 of the message mod n,
//!   both accept high-S and refuse the point at infinity. The signature goes as canonical DER.
//! * RS256: `alg` matches the key and the signature is exactly as long as the modulus and below it
//!   as a number. Every RSA key the pure path holds has an odd modulus of 2048-4096 bits and an odd
//!   exponent of 3 to 2^33-1, which BoringSSL accepts too, and both compare the whole PKCS#1 v1.5
//!   encoded message (SHA-256 DigestInfo with NULL parameters) exactly.
//!
//! No host call here: the host layer makes the call ([`Foreign`]); the core builds the arguments
//! and reads the answer, so all of it is tested natively.

use missiongate_wire::jose::{Alg, JoseError, PureVerifier, Verifier, VerifyingKey};
use std::cell::Cell;

/// The foreign function's name in Envoy.
pub const FOREIGN_FUNCTION: &str = "verify_signature";

/// P-256 group order n, big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// DER SubjectPublicKeyInfo of a P-256 key up to the uncompressed point's `04`: SEQUENCE {
/// SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING { 00 04 x y } }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// DER AlgorithmIdentifier of rsaEncryption with NULL parameters.
const RSA_ALGORITHM: [u8; 15] =
    [0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];

/// Where one signature is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// [`VerifyingKey::verify`].
    Pure,
    /// The host, with these serialized `VerifySignatureArguments`.
    Foreign(Vec<u8>),
}

/// Where `signature` over `signing_input` with `key` and `alg` is checked (see the module docs).
pub fn route(key: &VerifyingKey, alg: Alg, signing_input: &[u8], signature: &[u8]) -> Route {
    if !key.accepts(alg) {
        return Route::Pure;
    }
    match (key, alg) {
        (VerifyingKey::P256(k, None), Alg::Es256) => {
            let (Some(r), Some(s)) = (signature.get(..32), signature.get(32..)) else { return Route::Pure };
            if signature.len() != 64 || !in_scalar_range(r) || !in_scalar_range(s) {
                return Route::Pure;
            }
            let point = missiongate_wire::p256_fast::uncompressed(k);
            let point = point.as_bytes();
            if point.len() != 65 {
                return Route::Pure;
            }
            let mut spki = Vec::with_capacity(91);
            spki.extend_from_slice(&P256_SPKI_PREFIX);
            spki.extend_from_slice(point);
            Route::Foreign(arguments(&spki, &ecdsa_der(r, s), signing_input))
        }
        (VerifyingKey::Rsa(k, _), Alg::Rs256) => {
            let (n, e) = k.components();
            // Equal lengths, so the byte order is the numeric order: the signature must be below n.
            if signature.len() != n.len() || signature >= n.as_slice() {
                return Route::Pure;
            }
            Route::Foreign(arguments(&rsa_spki(&n, &e), signature, signing_input))
        }
        _ => Route::Pure,
    }
}

/// A big-endian 32-byte scalar in `[1, n-1]`.
fn in_scalar_range(x: &[u8]) -> bool {
    x.len() == 32 && x.iter().any(|&b| b != 0) && x < P256_N.as_slice()
}

/// A DER length: the short form below 128, else the minimal long form (any size).
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let bytes = len.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    let digits = bytes.get(skip..).unwrap_or_default();
    out.push(0x80 | digits.len() as u8);
    out.extend_from_slice(digits);
}

/// A DER element.
fn push_tlv(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    push_len(out, content.len());
    out.extend_from_slice(content);
}

/// A DER INTEGER from unsigned big-endian bytes: leading zeros dropped, one `00` added when the
/// top bit is set, zero as `02 01 00`.
fn push_uint(out: &mut Vec<u8>, x: &[u8]) {
    let start = x.iter().position(|&b| b != 0).unwrap_or(x.len());
    let x = x.get(start..).unwrap_or_default();
    let mut content = Vec::with_capacity(x.len() + 1);
    if x.first().is_none_or(|&b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(x);
    push_tlv(out, 0x02, &content);
}

/// DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` from the JWS halves.
pub fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    let mut ints = Vec::with_capacity(70);
    push_uint(&mut ints, r);
    push_uint(&mut ints, s);
    let mut out = Vec::with_capacity(72);
    push_tlv(&mut out, 0x30, &ints);
    out
}

/// DER SubjectPublicKeyInfo of an RSA key from `n` and `e` (unsigned big-endian).
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut ints = Vec::with_capacity(n.len() + e.len() + 12);
    push_uint(&mut ints, n);
    push_uint(&mut ints, e);
    let mut key = Vec::with_capacity(ints.len() + 4);
    push_tlv(&mut key, 0x30, &ints);
    let mut bits = Vec::with_capacity(key.len() + 1);
    bits.push(0);
    bits.extend_from_slice(&key);
    let mut body = Vec::with_capacity(bits.len() + RSA_ALGORITHM.len() + 4);
    body.extend_from_slice(&RSA_ALGORITHM);
    push_tlv(&mut body, 0x03, &bits);
    let mut out = Vec::with_capacity(body.len() + 4);
    push_tlv(&mut out, 0x30, &body);
    out
}

fn push_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn push_bytes_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field << 3 | 2);
    push_varint(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// Serialized `VerifySignatureArguments` (Envoy's `verify_signature.proto`): `hash_function` (1)
/// `sha256`, `public_key` (2) the DER SPKI, `signature` (3), `text` (4) the signed bytes.
pub fn arguments(spki: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(spki.len() + signature.len() + text.len() + 20);
    push_bytes_field(&mut out, 1, b"sha256");
    push_bytes_field(&mut out, 2, spki);
    push_bytes_field(&mut out, 3, signature);
    push_bytes_field(&mut out, 4, text);
    out
}

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The verdict in a serialized `VerifySignatureResult` (`result` (1) bool, `error` (2) string):
/// `None` when the bytes are not such a message (the caller then verifies in Rust).
pub fn answer(bytes: &[u8]) -> Option<bool> {
    let mut i = 0;
    let mut result = false;
    while i < bytes.len() {
        let key = read_varint(bytes, &mut i)?;
        match key {
            0x08 => result = read_varint(bytes, &mut i)? != 0,
            0x12 => {
                let len = usize::try_from(read_varint(bytes, &mut i)?).ok()?;
                i = i.checked_add(len).filter(|&end| end <= bytes.len())?;
            }
            _ => return None,
        }
    }
    Some(result)
}

/// How the host layer calls [`FOREIGN_FUNCTION`]: its result bytes for `arguments`, or `None` when
/// the host did not answer (not available, or any non-`Ok` status).
pub type Foreign = fn(arguments: &[u8]) -> Option<Vec<u8>>;

/// A known-good ES256 signature (made with OpenSSL) for [`HostVerifier::probe`]: the public point
/// (uncompressed), the DER signature, the message.
const PROBE_POINT: [u8; 65] = [
    0x04, 0x91, 0x15, 0x99, 0x27, 0xc3, 0xf1, 0x92, 0xd6, 0x88, 0x24, 0x60, 0x25, 0xc5, 0x10, 0xa6, 0x7e, 0xd3, 0xd4,
    0x0f, 0x01, 0xfc, 0x9b, 0x45, 0xb4, 0x2c, 0xae, 0xfc, 0x4f, 0x59, 0xf7, 0x48, 0x41, 0xba, 0x1b, 0xba, 0x22, 0x95,
    0xbd, 0xdc, 0xcc, 0xac, 0xf1, 0x2c, 0xff, 0x94, 0x64, 0x5e, 0xd6, 0x0d, 0xf5, 0x70, 0x01, 0x41, 0xe9, 0xc7, 0x51,
    0x66, 0x9c, 0xc0, 0xfb, 0xbd, 0x7d, 0xa1, 0xf2,
];
const PROBE_SIGNATURE: [u8; 71] = [
    0x30, 0x45, 0x02, 0x20, 0x23, 0x71, 0xc0, 0x3a, 0x81, 0xae, 0x57, 0x8d, 0x48, 0x61, 0x26, 0xc2, 0xe5, 0x6b, 0xf7,
    0xeb, 0x40, 0x25, 0x4c, 0xc6, 0xb1, 0x02, 0x8f, 0x47, 0xbb, 0xd3, 0xdc, 0x31, 0x16, 0xd3, 0xd8, 0xa9, 0x02, 0x21,
    0x00, 0xb7, 0xd4, 0x8e, 0xd0, 0x0e, 0x6d, 0x0d, 0x9d, 0x06, 0x4a, 0xc5, 0x9b, 0x9d, 0xe5, 0x36, 0x5c, 0x67, 0x43,
    0x0c, 0x64, 0xfd, 0x5c, 0x27, 0x52, 0x01, 0x1d, 0xa7, 0x10, 0xb2, 0xdc, 0x2b, 0x05,
];
const PROBE_MESSAGE: &[u8] = b"missiongate verify_signature probe";
/// A known-good RS256 signature of [`PROBE_MESSAGE`] (made with OpenSSL, a 2048-bit key): the DER
/// SubjectPublicKeyInfo and the signature. RS256 goes to the host too, so it is probed too.
const PROBE_RSA_SPKI: [u8; 294] = [
    0x30, 0x82, 0x01, 0x22, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    0x03, 0x82, 0x01, 0x0f, 0x00, 0x30, 0x82, 0x01, 0x0a, 0x02, 0x82, 0x01, 0x01, 0x00, 0xed, 0xaa, 0x19, 0xea, 0x5a,
    0x84, 0xd6, 0xdc, 0xa5, 0xbf, 0x22, 0x42, 0xc6, 0x50, 0x03, 0x34, 0x2b, 0xa0, 0xde, 0x15, 0x17, 0x4f, 0x07, 0x49,
    0x25, 0x8e, 0x47, 0xcb, 0x05, 0x56, 0x5d, 0xee, 0x1c, 0x90, 0x0c, 0x48, 0x6d, 0xb8, 0x6a, 0x9e, 0x8d, 0x9e, 0x29,
    0xb8, 0xa5, 0x75, 0x7c, 0xfa, 0x52, 0x51, 0x02, 0x75, 0x8b, 0x75, 0x80, 0x94, 0xc6, 0x7d, 0xb3, 0xfe, 0x2a, 0xaf,
    0xa7, 0xdc, 0x37, 0xc6, 0x8c, 0x4d, 0xd2, 0x75, 0x3b, 0xeb, 0x88, 0xf7, 0x71, 0xf6, 0x58, 0x5c, 0x1b, 0x54, 0x50,
    0xde, 0x12, 0xf9, 0x2c, 0xa5, 0xe6, 0x41, 0x7e, 0x65, 0xa4, 0xf0, 0xdb, 0xd2, 0xc1, 0x16, 0x9a, 0xa1, 0x13, 0xf2,
    0xb3, 0xc4, 0x70, 0x63, 0x7e, 0xff, 0x7c, 0x53, 0xad, 0x09, 0x3c, 0x43, 0x71, 0x77, 0xbc, 0x76, 0xbe, 0x43, 0x8e,
    0x76, 0xe0, 0x95, 0x8c, 0x92, 0x55, 0x76, 0x3e, 0xc8, 0x97, 0xbf, 0xfc, 0xf8, 0x5a, 0x5a, 0x11, 0xfa, 0x43, 0x2e,
    0x1f, 0x88, 0x06, 0x6f, 0x9d, 0xff, 0x3a, 0x4a, 0x22, 0xfd, 0xfa, 0x39, 0x74, 0x57, 0xba, 0x6c, 0x74, 0xae, 0xe8,
    0x7b, 0x36, 0x74, 0x7d, 0x91, 0xde, 0x3c, 0x5d, 0xd1, 0xc5, 0x91, 0xed, 0x1c, 0x51, 0xd2, 0x09, 0x3f, 0x9a, 0x6a,
    0x5c, 0x73, 0x53, 0x95, 0xcc, 0x11, 0x57, 0xa1, 0xdf, 0xd2, 0x73, 0x9b, 0x96, 0x21, 0xbf, 0x77, 0xe8, 0x99, 0x51,
    0x1b, 0x12, 0x94, 0x75, 0x57, 0xf0, 0xfa, 0x0f, 0xfa, 0x40, 0xf2, 0x46, 0x08, 0x09, 0xd2, 0x12, 0xef, 0x90, 0x20,
    0x1d, 0xe0, 0xf5, 0x4c, 0xa1, 0x0a, 0x06, 0xe7, 0x2d, 0x7d, 0xf0, 0x4b, 0xc2, 0x15, 0x99, 0x92, 0x4c, 0x59, 0x8a,
    0x86, 0x69, 0xc6, 0x40, 0x2c, 0x32, 0x94, 0x9f, 0xf5, 0x16, 0x75, 0x47, 0xcd, 0xdb, 0x72, 0x09, 0x8a, 0xa9, 0xf9,
    0x8e, 0xfb, 0xac, 0x2b, 0x02, 0x03, 0x01, 0x00, 0x01,
];
const PROBE_RSA_SIGNATURE: [u8; 256] = [
    0x68, 0x7c, 0x59, 0x60, 0x8e, 0x51, 0xa2, 0xd2, 0xc7, 0x86, 0x1f, 0x69, 0x6f, 0x38, 0xe9, 0xf5, 0x30, 0xff, 0x07,
    0xec, 0x52, 0x56, 0x53, 0x49, 0x2d, 0x6d, 0x14, 0xd4, 0x31, 0x71, 0xf6, 0x83, 0xef, 0x18, 0xdb, 0x5e, 0x54, 0x4a,
    0xc3, 0x91, 0xf3, 0xff, 0xab, 0xee, 0xba, 0xd5, 0x99, 0x4a, 0x77, 0xc6, 0xa7, 0xfd, 0xbc, 0x14, 0x76, 0x5a, 0x84,
    0x34, 0x70, 0xfb, 0x9e, 0xa2, 0xda, 0x72, 0x35, 0x8a, 0x61, 0xed, 0xf6, 0xc6, 0xb1, 0xac, 0x6a, 0x2d, 0x14, 0xc1,
    0x7b, 0xff, 0xe3, 0xee, 0xa1, 0x1a, 0x39, 0x4c, 0x74, 0x89, 0xc6, 0x35, 0xb6, 0x48, 0xbd, 0xce, 0xd5, 0xd4, 0x57,
    0xab, 0x8e, 0x4b, 0x59, 0x2a, 0x45, 0x35, 0x95, 0x5c, 0x6d, 0x6f, 0x72, 0x4e, 0x36, 0xd8, 0xaf, 0x6c, 0xb7, 0xb1,
    0x00, 0xb9, 0xc7, 0xfd, 0x59, 0x06, 0xa5, 0x87, 0x37, 0x24, 0xfd, 0xd8, 0x11, 0x8d, 0x14, 0x23, 0xbd, 0xe8, 0x6a,
    0xe5, 0x79, 0x0c, 0x3a, 0xfc, 0xfb, 0xdf, 0xe6, 0x2d, 0x07, 0xbf, 0xa6, 0x91, 0xc3, 0x9d, 0x94, 0x81, 0xcc, 0x97,
    0xf4, 0xe0, 0x43, 0x82, 0x1f, 0x98, 0xfd, 0x09, 0xb8, 0x86, 0x08, 0x55, 0xd7, 0x29, 0xfb, 0xc8, 0x9c, 0x72, 0x65,
    0xcc, 0x7a, 0x42, 0x1e, 0xfa, 0x13, 0xfb, 0x88, 0xe3, 0x36, 0x51, 0x2c, 0x6c, 0x3a, 0xb6, 0xb3, 0x1b, 0x96, 0x44,
    0x3d, 0x2b, 0x01, 0xf7, 0xd7, 0x5f, 0x64, 0xd0, 0xb2, 0x05, 0x84, 0xfc, 0xd6, 0xed, 0x62, 0x3a, 0x30, 0xe5, 0x60,
    0xe3, 0xa1, 0xfd, 0x91, 0xf0, 0x75, 0xf8, 0x7b, 0x25, 0x92, 0x27, 0xe2, 0x37, 0x86, 0x63, 0x51, 0xa1, 0x1b, 0x63,
    0x8b, 0xd0, 0xd6, 0xb9, 0x30, 0x7f, 0x2d, 0xbb, 0x32, 0x65, 0x67, 0x88, 0xfd, 0x8d, 0x8d, 0x7b, 0xdd, 0x07, 0xdc,
    0xd1, 0x8f, 0x86, 0x65, 0xf4, 0x9a, 0x37, 0xfd, 0xfb,
];

/// The probe's key as DER SPKI, its DER signature and its message.
pub fn probe_vector() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut spki = P256_SPKI_PREFIX.to_vec();
    spki.extend_from_slice(&PROBE_POINT);
    (spki, PROBE_SIGNATURE.to_vec(), PROBE_MESSAGE.to_vec())
}

/// The RS256 probe vector: the key as DER SPKI, the signature, the message.
pub fn probe_vector_rs256() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (PROBE_RSA_SPKI.to_vec(), PROBE_RSA_SIGNATURE.to_vec(), PROBE_MESSAGE.to_vec())
}

/// Why the probe keeps the pure path.
fn probe_one(foreign: Foreign, (spki, signature, message): (Vec<u8>, Vec<u8>, Vec<u8>)) -> Result<(), &'static str> {
    let Some(ok) = foreign(&arguments(&spki, &signature, &message)) else {
        return Err("verify_signature is not available");
    };
    let mut tampered = message;
    if let Some(b) = tampered.first_mut() {
        *b ^= 1;
    }
    let bad = foreign(&arguments(&spki, &signature, &tampered)).map(|b| answer(&b));
    match (answer(&ok), bad) {
        (Some(true), Some(Some(false))) => Ok(()),
        (None, _) => Err("verify_signature answered a valid signature with something unreadable"),
        (Some(false), _) => Err("verify_signature refuses a valid signature"),
        (Some(true), Some(Some(true))) => Err("verify_signature accepts a tampered signature"),
        (Some(true), _) => Err("verify_signature gave no readable answer for a tampered signature"),
    }
}

/// The filter's [`Verifier`]: [`route`]s each signature to the host or to the pure path, and
/// tallies the signatures the host answered (the `verify.foreign` counter).
pub struct HostVerifier {
    foreign: Foreign,
    answered: Cell<u64>,
}

impl HostVerifier {
    /// Use `foreign` when it answers a known-good ES256 and a known-good RS256 signature `true` and
    /// each with one message byte changed `false`; `Err` (saying what it answered) otherwise, and
    /// the caller keeps the pure path for the VM's life.
    pub fn probe(foreign: Foreign) -> Result<HostVerifier, &'static str> {
        probe_one(foreign, probe_vector())?;
        probe_one(foreign, probe_vector_rs256())?;
        Ok(HostVerifier { foreign, answered: Cell::new(0) })
    }

    /// How many signatures the host answered since the last call (and start counting again).
    pub fn take_answered(&self) -> u64 {
        self.answered.replace(0)
    }
}

impl Verifier for HostVerifier {
    fn verify(&self, key: &VerifyingKey, alg: Alg, signing_input: &[u8], signature: &[u8]) -> Result<(), JoseError> {
        if let Route::Foreign(args) = route(key, alg, signing_input, signature) {
            let verdict = (self.foreign)(&args).and_then(|b| answer(&b));
            if verdict.is_some() {
                self.answered.set(self.answered.get().saturating_add(1));
            }
            match verdict {
                Some(true) => return Ok(()),
                Some(false) => return Err(JoseError::BadSignature),
                None => {}
            }
        }
        PureVerifier.verify(key, alg, signing_input, signature)
    }
}
