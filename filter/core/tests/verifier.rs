//! The host verifier (issue 16 item 3): which signatures go to Envoy's `verify_signature`, the
//! arguments built for it (against OpenSSL's own encodings), the answer read back, the probe, and
//! that a [`HostVerifier`] answers exactly as the pure path on valid, tampered, wrong-key and
//! malformed inputs. The host is played by a stand-in that decodes the arguments independently and
//! verifies them in Rust, so the encodings are checked end to end; BoringSSL itself is checked
//! against the pure path through the real Envoy (tests/tests/e2e_verifier.rs).
//!
//! Every test runs natively and compiled to wasm32-unknown-unknown under wasm-bindgen-test
//! (`make test-wasm-core`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::cell::Cell;

use missiongate_core::verifier::{
    answer, arguments, ecdsa_der, probe_vector, probe_vector_rs256, route, rsa_spki, HostVerifier, Route,
};
use missiongate_wire::b64;
use missiongate_wire::jose::{Alg, Jwk, PureVerifier, SigningKey, Verifier, VerifyingKey};
use serde_json::{json, Value};

/// OpenSSL-made vectors (bench/verifysig-probe/src/vectors.json): a P-256 and a 2048-bit RSA key,
/// their DER SPKI, an ES256 signature as JWS r||s and as DER, an RS256 signature.
const VECTORS: &str = include_str!("../../../bench/verifysig-probe/src/vectors.json");
const TEST_KEYS: &str = include_str!("../../../wire/tests/data/rsa_test_keys.json");

fn vectors() -> Value {
    serde_json::from_str(VECTORS).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    let s = if s.len() % 2 == 1 { format!("0{s}") } else { s.to_owned() };
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn jwk(v: Value) -> VerifyingKey {
    serde_json::from_value::<Jwk>(v).unwrap().verifying_key().unwrap()
}

fn ec_key_of(x: &[u8], y: &[u8]) -> Option<VerifyingKey> {
    serde_json::from_value::<Jwk>(json!({"kty": "EC", "crv": "P-256", "x": b64::encode(x), "y": b64::encode(y)}))
        .ok()?
        .verifying_key()
        .ok()
}

fn rsa_signing(name: &str, alg: Alg) -> SigningKey {
    let keys: Value = serde_json::from_str(TEST_KEYS).unwrap();
    let k = &keys[name];
    SigningKey::rsa_from_primes(alg, &hex(k["p"].as_str().unwrap()), &hex(k["q"].as_str().unwrap())).unwrap()
}

fn verifying(k: &SigningKey) -> VerifyingKey {
    k.public_jwk(None).verifying_key().unwrap()
}

// ---- an independent reading of the arguments: the host's stand-in -------------------------------

/// One DER element at `b[*i..]`: (tag, content).
fn der<'a>(b: &'a [u8], i: &mut usize) -> Option<(u8, &'a [u8])> {
    let tag = *b.get(*i)?;
    let first = *b.get(*i + 1)? as usize;
    let (len, head) = match first {
        0..=0x7f => (first, 2),
        0x81 => (*b.get(*i + 2)? as usize, 3),
        0x82 => ((*b.get(*i + 2)? as usize) << 8 | *b.get(*i + 3)? as usize, 4),
        _ => return None,
    };
    let content = b.get(*i + head..*i + head + len)?;
    *i += head + len;
    Some((tag, content))
}

/// An unsigned DER INTEGER's value without its sign byte.
fn uint(content: &[u8]) -> &[u8] {
    match content {
        [0, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    }
}

/// `VerifySignatureArguments` fields 1-4: hash name, key, signature, text.
type Fields = (String, Vec<u8>, Vec<u8>, Vec<u8>);

/// One routed-or-not case: what, key, algorithm, message, signature.
type Case<'a> = (&'a str, &'a VerifyingKey, Alg, Vec<u8>, Vec<u8>);

/// The protobuf fields 1-4 of `VerifySignatureArguments`.
fn fields(b: &[u8]) -> Option<Fields> {
    let (mut hash, mut key, mut sig, mut text) = (String::new(), Vec::new(), Vec::new(), Vec::new());
    let mut i = 0;
    while i < b.len() {
        let tag = b[i];
        i += 1;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let byte = *b.get(i)?;
            i += 1;
            len |= ((byte & 0x7f) as usize) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let v = b.get(i..i + len)?.to_vec();
        i += len;
        match tag {
            0x0a => hash = String::from_utf8(v).ok()?,
            0x12 => key = v,
            0x1a => sig = v,
            0x22 => text = v,
            _ => return None,
        }
    }
    Some((hash, key, sig, text))
}

/// Verify what the arguments say, in Rust: the key from the SPKI, the signature from DER.
fn stand_in_verdict(args: &[u8]) -> Option<bool> {
    let (hash, spki, sig, text) = fields(args)?;
    if hash != "sha256" {
        return None;
    }
    let mut i = 0;
    let (0x30, body) = der(&spki, &mut i)? else { return None };
    let mut j = 0;
    let (0x30, algorithm) = der(body, &mut j)? else { return None };
    let (0x03, bits) = der(body, &mut j)? else { return None };
    let bits = bits.strip_prefix(&[0u8])?;
    let ec_oid = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    if algorithm.starts_with(&ec_oid) {
        let point = bits.strip_prefix(&[4u8])?;
        let key = ec_key_of(point.get(..32)?, point.get(32..)?)?;
        let mut k = 0;
        let (0x30, ints) = der(&sig, &mut k)? else { return None };
        if k != sig.len() {
            return Some(false);
        }
        let mut m = 0;
        let (0x02, r) = der(ints, &mut m)? else { return None };
        let (0x02, s) = der(ints, &mut m)? else { return None };
        let mut raw = vec![0u8; 64];
        let (r, s) = (uint(r), uint(s));
        raw[32 - r.len()..32].copy_from_slice(r);
        raw[64 - s.len()..].copy_from_slice(s);
        return Some(key.verify(Alg::Es256, &text, &raw).is_ok());
    }
    let mut k = 0;
    let (0x30, ints) = der(bits, &mut k)? else { return None };
    let mut m = 0;
    let (0x02, n) = der(ints, &mut m)? else { return None };
    let (0x02, e) = der(ints, &mut m)? else { return None };
    let key = jwk(json!({"kty": "RSA", "n": b64::encode(uint(n)), "e": b64::encode(uint(e))}));
    Some(key.verify(Alg::Rs256, &text, &sig).is_ok())
}

thread_local! {
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

/// The stand-in host: answers as Envoy does (`result` field 1, an error string when false).
fn stand_in(args: &[u8]) -> Option<Vec<u8>> {
    CALLS.with(|c| c.set(c.get() + 1));
    Some(match stand_in_verdict(args)? {
        true => vec![0x08, 0x01],
        false => {
            let mut v = vec![0x12, 5];
            v.extend_from_slice(b"false");
            v
        }
    })
}

fn calls() -> usize {
    CALLS.with(|c| c.get())
}

// ---- the tests -----------------------------------------------------------------------------------

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_arguments_carry_openssls_own_encodings() {
    let v = vectors();
    let s = |k: &str| v[k].as_str().unwrap().to_owned();
    let key = jwk(json!({"kty": "EC", "crv": "P-256", "x": s("ec_x"), "y": s("ec_y")}));
    let raw = hex(&s("ec_sig_raw"));
    let msg = s("msg").into_bytes();
    assert_eq!(ecdsa_der(&raw[..32], &raw[32..]), hex(&s("ec_sig_der")), "DER of r||s differs from OpenSSL's");
    assert_eq!(
        route(&key, Alg::Es256, &msg, &raw),
        Route::Foreign(arguments(&hex(&s("ec_spki")), &hex(&s("ec_sig_der")), &msg)),
        "the ES256 arguments are not OpenSSL's SPKI and DER"
    );
    let n = b64::decode(s("rsa_n")).unwrap();
    let e = b64::decode(s("rsa_e")).unwrap();
    assert_eq!(rsa_spki(&n, &e), hex(&s("rsa_spki")), "RSA SPKI differs from OpenSSL's");
    let rsa = jwk(json!({"kty": "RSA", "n": s("rsa_n"), "e": s("rsa_e")}));
    let sig = hex(&s("rsa_sig"));
    assert_eq!(route(&rsa, Alg::Rs256, &msg, &sig), Route::Foreign(arguments(&hex(&s("rsa_spki")), &sig, &msg)));
    // The protobuf layout, byte for byte: field 1 "sha256", then 2, 3, 4 with their lengths.
    let a = arguments(&[1, 2], &[3], &[4u8; 200]);
    let mut want = vec![0x0a, 6];
    want.extend_from_slice(b"sha256");
    want.extend_from_slice(&[0x12, 2, 1, 2, 0x1a, 1, 3, 0x22, 0xc8, 0x01]);
    want.extend_from_slice(&[4u8; 200]);
    assert_eq!(a, want);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn der_integers_are_minimal_and_positive() {
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r[31] = 1;
    s[0] = 0x80;
    // r = 1: one byte; s with its top bit set: a 00 sign byte.
    let mut want = vec![0x30, 3 + 35, 0x02, 1, 1, 0x02, 33, 0];
    want.extend_from_slice(&s);
    assert_eq!(ecdsa_der(&r, &s), want);
    // Leading zero bytes dropped, a zero byte kept before a set top bit.
    r[30] = 0x7f;
    s[0] = 0;
    s[1] = 0x90;
    let der = ecdsa_der(&r, &s);
    assert_eq!(&der[..6], &[0x30, 4 + 34, 0x02, 2, 0x7f, 1]);
    assert_eq!(&der[6..10], &[0x02, 32, 0, 0x90]);
    assert_eq!(der.len(), 40);
    // Lengths past 0xffff take the minimal long form too (no such key is taken today).
    let big = rsa_spki(&vec![0x7f; 70_000], &[1, 0, 1]);
    assert_eq!(&big[..2], &[0x30, 0x83]);
    let total = usize::from(big[2]) << 16 | usize::from(big[3]) << 8 | usize::from(big[4]);
    assert_eq!(total + 5, big.len());
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn only_inputs_both_paths_agree_on_go_to_the_host() {
    let ec = SigningKey::from_secret_bytes(Alg::Es256, &[0x31; 32]).unwrap();
    let key = verifying(&ec);
    let msg = b"header.payload";
    let sig = ec.sign_bytes(msg);
    assert!(matches!(route(&key, Alg::Es256, msg, &sig), Route::Foreign(_)));
    // A key with tables: faster in Wasm.
    assert_eq!(route(&key.clone().precompute(), Alg::Es256, msg, &sig), Route::Pure);
    // Wrong lengths, and r or s outside [1, n-1]: the pure path answers (false).
    let n = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    let mut n_minus_1 = n.clone();
    n_minus_1[31] -= 1;
    for (what, bad) in [
        ("63 bytes", sig[..63].to_vec()),
        ("65 bytes", [sig.as_slice(), &[0]].concat()),
        ("empty", Vec::new()),
        ("r = 0", [&[0u8; 32][..], &sig[32..]].concat()),
        ("s = 0", [&sig[..32], &[0u8; 32][..]].concat()),
        ("r = n", [&n[..], &sig[32..]].concat()),
        ("s = n", [&sig[..32], &n[..]].concat()),
        ("s = 2^256 - 1", [&sig[..32], &[0xff; 32][..]].concat()),
    ] {
        assert_eq!(route(&key, Alg::Es256, msg, &bad), Route::Pure, "{what}");
        assert!(key.verify(Alg::Es256, msg, &bad).is_err(), "{what}");
    }
    assert!(matches!(route(&key, Alg::Es256, msg, &[&n_minus_1[..], &n_minus_1[..]].concat()), Route::Foreign(_)));
    // Algorithm confusion is the pure path's to refuse.
    assert_eq!(route(&key, Alg::Rs256, msg, &sig), Route::Pure);
    assert_eq!(route(&key, Alg::EdDsa, msg, &sig), Route::Pure);
    let ed = SigningKey::from_secret_bytes(Alg::EdDsa, &[0x32; 32]).unwrap();
    assert_eq!(route(&verifying(&ed), Alg::EdDsa, msg, &ed.sign_bytes(msg)), Route::Pure);

    let rs = rsa_signing("a2048", Alg::Rs256);
    let rkey = verifying(&rs);
    let rsig = rs.sign_bytes(msg);
    assert!(matches!(route(&rkey, Alg::Rs256, msg, &rsig), Route::Foreign(_)));
    // PS256 (BoringSSL's default padding here is PKCS#1 v1.5), wrong lengths, a signature >= n.
    let ps = rsa_signing("a2048", Alg::Ps256);
    assert_eq!(route(&verifying(&ps), Alg::Ps256, msg, &ps.sign_bytes(msg)), Route::Pure);
    assert_eq!(route(&rkey, Alg::Rs256, msg, &rsig[1..]), Route::Pure);
    assert_eq!(route(&rkey, Alg::Rs256, msg, &[rsig.as_slice(), &[0]].concat()), Route::Pure);
    assert_eq!(route(&rkey, Alg::Rs256, msg, &vec![0xff; rsig.len()]), Route::Pure);
    assert_eq!(route(&rkey, Alg::Es256, msg, &sig), Route::Pure);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_answer_is_read_strictly() {
    assert_eq!(answer(&[0x08, 0x01]), Some(true));
    assert_eq!(answer(&[0x08, 0x01, 0x12, 0x00]), Some(true));
    assert_eq!(answer(&[]), Some(false));
    assert_eq!(answer(&[0x08, 0x00]), Some(false));
    assert_eq!(answer(&[0x12, 3, b'b', b'a', b'd']), Some(false));
    // A long error string (two-byte length) is skipped whole.
    let mut long = vec![0x12, 0x90, 0x01];
    long.extend_from_slice(&[b'x'; 144]);
    long.extend_from_slice(&[0x08, 0x01]);
    assert_eq!(answer(&long), Some(true));
    // Truncated or unknown: not an answer (the caller verifies in Rust).
    assert_eq!(answer(&[0x12, 5, b'a']), None);
    assert_eq!(answer(&[0x08]), None);
    assert_eq!(answer(&[0x18, 0x01]), None);
    assert_eq!(answer(&[0x08, 0x80]), None);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_probe_vector_is_a_valid_signature() {
    for (spki, der_sig, msg) in [probe_vector(), probe_vector_rs256()] {
        let args = arguments(&spki, &der_sig, &msg);
        assert_eq!(stand_in_verdict(&args), Some(true));
        let mut tampered = msg.clone();
        tampered[0] ^= 1;
        assert_eq!(stand_in_verdict(&arguments(&spki, &der_sig, &tampered)), Some(false));
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_probe_keeps_the_pure_path_unless_the_host_answers_right() {
    assert!(HostVerifier::probe(stand_in).is_ok());
    fn absent(_: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn yes(_: &[u8]) -> Option<Vec<u8>> {
        Some(vec![0x08, 0x01])
    }
    fn no(_: &[u8]) -> Option<Vec<u8>> {
        Some(vec![0x08, 0x00])
    }
    fn garbage(_: &[u8]) -> Option<Vec<u8>> {
        Some(vec![0xff, 0xff])
    }
    assert_eq!(HostVerifier::probe(absent).err(), Some("verify_signature is not available"));
    assert_eq!(HostVerifier::probe(yes).err(), Some("verify_signature accepts a tampered signature"));
    assert_eq!(HostVerifier::probe(no).err(), Some("verify_signature refuses a valid signature"));
    assert_eq!(
        HostVerifier::probe(garbage).err(),
        Some("verify_signature answered a valid signature with something unreadable")
    );
    // A host that gets ES256 right but not RS256 (it cannot read an RSA key) is not used either.
    fn ec_only(args: &[u8]) -> Option<Vec<u8>> {
        let (ec_spki, _, _) = probe_vector();
        if args.windows(ec_spki.len()).any(|w| w == ec_spki.as_slice()) {
            stand_in(args)
        } else {
            Some(vec![0x12, 3, b'b', b'a', b'd'])
        }
    }
    assert_eq!(HostVerifier::probe(ec_only).err(), Some("verify_signature refuses a valid signature"));
    // One that accepts every RSA signature is caught by the tampered RS256 twin.
    fn rsa_yes(args: &[u8]) -> Option<Vec<u8>> {
        let (rsa_spki, _, _) = probe_vector_rs256();
        if args.windows(rsa_spki.len()).any(|w| w == rsa_spki.as_slice()) {
            Some(vec![0x08, 0x01])
        } else {
            stand_in(args)
        }
    }
    assert_eq!(HostVerifier::probe(rsa_yes).err(), Some("verify_signature accepts a tampered signature"));
}

/// Every input of `cases` gets the same answer from the host verifier and the pure path.
fn agree(host: &HostVerifier, cases: &[Case<'_>]) {
    for (what, key, alg, msg, sig) in cases {
        assert_eq!(
            host.verify(key, *alg, msg, sig).is_ok(),
            PureVerifier.verify(key, *alg, msg, sig).is_ok(),
            "{what}: the host verifier and the pure path disagree"
        );
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_host_verifier_answers_as_the_pure_path() {
    let host = HostVerifier::probe(stand_in).unwrap();
    let ec = SigningKey::from_secret_bytes(Alg::Es256, &[0x41; 32]).unwrap();
    let other = SigningKey::from_secret_bytes(Alg::Es256, &[0x42; 32]).unwrap();
    let (key, wrong) = (verifying(&ec), verifying(&other));
    let msg = b"eyJhbGciOiJFUzI1NiJ9.eyJqdGkiOiJ4In0".to_vec();
    let sig = ec.sign_bytes(&msg);
    let n = hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    // s' = n - s: the other valid S (both paths accept high-S).
    let high_s = {
        let mut out = sig.clone();
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let d = n[i] as i16 - sig[32 + i] as i16 - borrow;
            borrow = (d < 0) as i16;
            out[32 + i] = d.rem_euclid(256) as u8;
        }
        out
    };
    let mut tampered = msg.clone();
    tampered[3] ^= 0x20;
    let mut cases = vec![
        ("valid", &key, Alg::Es256, msg.clone(), sig.clone()),
        ("high-S", &key, Alg::Es256, msg.clone(), high_s),
        ("tampered message", &key, Alg::Es256, tampered, sig.clone()),
        ("wrong key", &wrong, Alg::Es256, msg.clone(), sig.clone()),
        ("r||s swapped", &key, Alg::Es256, msg.clone(), [&sig[32..], &sig[..32]].concat()),
        ("short", &key, Alg::Es256, msg.clone(), sig[..63].to_vec()),
        ("r = 0", &key, Alg::Es256, msg.clone(), [&[0u8; 32][..], &sig[32..]].concat()),
        ("s = n", &key, Alg::Es256, msg.clone(), [&sig[..32], &n[..]].concat()),
        ("empty message", &key, Alg::Es256, Vec::new(), sig.clone()),
    ];
    for i in 0..64 {
        let mut bad = sig.clone();
        bad[i] ^= 1 << (i % 8);
        cases.push(("one bit of the signature flipped", &key, Alg::Es256, msg.clone(), bad));
    }
    let empty_sig = ec.sign_bytes(b"");
    cases.push(("valid over an empty message", &key, Alg::Es256, Vec::new(), empty_sig));

    let rs = rsa_signing("a2048", Alg::Rs256);
    let rs_other = rsa_signing("b2048", Alg::Rs256);
    let (rkey, rwrong) = (verifying(&rs), verifying(&rs_other));
    let rsig = rs.sign_bytes(&msg);
    let mut rtampered = msg.clone();
    rtampered[0] ^= 1;
    let mut rflipped = rsig.clone();
    rflipped[100] ^= 4;
    cases.extend([
        ("rs256 valid", &rkey, Alg::Rs256, msg.clone(), rsig.clone()),
        ("rs256 tampered message", &rkey, Alg::Rs256, rtampered, rsig.clone()),
        ("rs256 flipped bit", &rkey, Alg::Rs256, msg.clone(), rflipped),
        ("rs256 wrong key", &rwrong, Alg::Rs256, msg.clone(), rsig.clone()),
        ("rs256 short", &rkey, Alg::Rs256, msg.clone(), rsig[1..].to_vec()),
        ("rs256 all ones", &rkey, Alg::Rs256, msg.clone(), vec![0xff; rsig.len()]),
        ("rs256 zero", &rkey, Alg::Rs256, msg.clone(), vec![0; rsig.len()]),
        ("es256 signature under an RSA key", &rkey, Alg::Es256, msg.clone(), sig.clone()),
    ]);
    let routed = cases.iter().filter(|(_, k, a, m, sig)| matches!(route(k, *a, m, sig), Route::Foreign(_))).count();
    assert!(routed >= 7 + 60 + 4, "too few cases reach the host: {routed}");
    let before = calls();
    assert_eq!(host.take_answered(), 0, "the probe is not counted");
    agree(&host, &cases);
    assert_eq!(calls() - before, routed, "not every routed signature reached the host");
    assert_eq!(host.take_answered(), routed as u64, "every signature the host answered is counted");
    assert_eq!(host.take_answered(), 0);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_host_that_fails_mid_life_leaves_the_answer_to_the_pure_path() {
    thread_local! {
        static UP: Cell<bool> = const { Cell::new(true) };
    }
    fn flaky(args: &[u8]) -> Option<Vec<u8>> {
        if UP.with(|u| u.get()) {
            stand_in(args)
        } else {
            None
        }
    }
    fn garbage_after_probe(args: &[u8]) -> Option<Vec<u8>> {
        if UP.with(|u| u.get()) {
            stand_in(args)
        } else {
            Some(vec![0x30, 0x00])
        }
    }
    UP.with(|u| u.set(true));
    let host = HostVerifier::probe(flaky).unwrap();
    let host2 = HostVerifier::probe(garbage_after_probe).unwrap();
    UP.with(|u| u.set(false));
    let ec = SigningKey::from_secret_bytes(Alg::Es256, &[0x51; 32]).unwrap();
    let key = verifying(&ec);
    let sig = ec.sign_bytes(b"m");
    assert!(host.verify(&key, Alg::Es256, b"m", &sig).is_ok());
    assert!(host.verify(&key, Alg::Es256, b"n", &sig).is_err());
    assert!(host2.verify(&key, Alg::Es256, b"m", &sig).is_ok());
    assert!(host2.verify(&key, Alg::Es256, b"n", &sig).is_err());
}
