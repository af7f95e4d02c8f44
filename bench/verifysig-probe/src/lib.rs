//! Bench-only probe for issue 16 item 3: Envoy's `verify_signature` foreign function (BoringSSL)
//! against the filter's pure-Rust verifiers, on the same key, message and signature, timed
//! interleaved inside one VM so that a loaded host slows both sides alike.
//!
//! Every tick runs one block of each case, in an order that rotates per tick; after the configured
//! number of rounds the probe logs, per case, the minimum and the median time per verification
//! over the blocks (a `warn` line starting `verifysig:`), and what each path answered on valid,
//! tampered, wrong-key and malformed inputs. The plugin configuration is `"<rounds> <per_block>"`
//! (default `"40 20"`). Never part of a deployment: `make verifysig-probe` (mk/verifysig.mk).
//!
//! With the configuration `"diff <n>"` it instead runs a differential check at configure: the
//! filter's `HostVerifier` (BoringSSL through `verify_signature` where `route` says so) against the
//! pure path on `n` rounds of pseudo-random ES256 keys, messages and mangled signatures, plus RS256 on
//! the fixed RSA test keys, and logs how many inputs each got and how many answers differed.

use missiongate_wire::jose::{Alg, Jwk, VerifyingKey};
use proxy_wasm::traits::{Context, RootContext};
use proxy_wasm::types::LogLevel;
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Probe::default()) });
}}

const VECTORS: &str = include_str!("vectors.json");

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_call_foreign_function(
        name: *const u8,
        name_size: usize,
        args: *const u8,
        args_size: usize,
        result: *mut *mut u8,
        result_size: *mut usize,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(t: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
}

fn log(msg: &str) {
    // SAFETY: a valid buffer for the duration of the call.
    unsafe {
        proxy_log(3, msg.as_ptr(), msg.len());
    }
}

fn now_ns() -> u64 {
    let mut t = 0u64;
    // SAFETY: writes one u64.
    unsafe {
        proxy_get_current_time_nanoseconds(&mut t);
    }
    t
}

/// `verify_signature`: Ok(Some(result)) when the host answered, Err(status) otherwise.
fn foreign_verify(hash: &str, spki_der: &[u8], sig: &[u8], text: &[u8]) -> Result<bool, u32> {
    let args = encode_args(hash, spki_der, sig, text);
    let name = "verify_signature";
    let mut ptr: *mut u8 = std::ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: the host writes a buffer it allocated through our allocator and its size; we own it.
    let out = unsafe {
        let st = proxy_call_foreign_function(name.as_ptr(), name.len(), args.as_ptr(), args.len(), &mut ptr, &mut len);
        if st != 0 {
            return Err(st);
        }
        if ptr.is_null() {
            Vec::new()
        } else {
            Vec::from_raw_parts(ptr, len, len)
        }
    };
    Ok(decode_result(&out))
}

fn push_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn push_field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    push_varint(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// `VerifySignatureArguments`: 1 hash_function, 2 public_key (DER SPKI), 3 signature, 4 text.
fn encode_args(hash: &str, spki_der: &[u8], sig: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + spki_der.len() + sig.len() + text.len());
    push_field(&mut out, 0x0a, hash.as_bytes());
    push_field(&mut out, 0x12, spki_der);
    push_field(&mut out, 0x1a, sig);
    push_field(&mut out, 0x22, text);
    out
}

/// `VerifySignatureResult`: field 1 (bool) true, anywhere in the message; anything else is false.
fn decode_result(b: &[u8]) -> bool {
    let mut i = 0;
    let mut ok = false;
    while let Some(&tag) = b.get(i) {
        i += 1;
        match tag {
            0x08 => {
                let v = b.get(i).copied().unwrap_or(0);
                ok = v == 1;
                i += 1;
            }
            0x12 => {
                let Some(&n) = b.get(i) else { return false };
                // Error strings are short; a multi-byte length is skipped properly.
                let (n, used) = if n < 0x80 {
                    (n as usize, 1)
                } else {
                    let hi = b.get(i + 1).copied().unwrap_or(0) as usize;
                    (((n & 0x7f) as usize) | (hi << 7), 2)
                };
                i += used + n;
            }
            _ => return false,
        }
    }
    ok
}

/// DER `ECDSA-Sig-Value` from the JWS `r || s` (64 bytes).
fn der_from_raw(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.len() != 64 {
        return None;
    }
    let int = |x: &[u8]| {
        let start = x.iter().position(|&b| b != 0).unwrap_or(x.len() - 1);
        let x = &x[start..];
        let mut v = Vec::with_capacity(35);
        v.push(0x02);
        let pad = x.first().is_some_and(|&b| b & 0x80 != 0);
        v.push((x.len() + usize::from(pad)) as u8);
        if pad {
            v.push(0);
        }
        v.extend_from_slice(x);
        v
    };
    let (r, s) = (int(raw.get(..32)?), int(raw.get(32..)?));
    let mut out = Vec::with_capacity(2 + r.len() + s.len());
    out.push(0x30);
    out.push((r.len() + s.len()) as u8);
    out.extend_from_slice(&r);
    out.extend_from_slice(&s);
    Some(out)
}

const P256_SPKI_PREFIX: [u8; 27] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04,
];

fn p256_spki(x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(91);
    v.extend_from_slice(&P256_SPKI_PREFIX);
    v.extend_from_slice(x);
    v.extend_from_slice(y);
    v
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).filter_map(|i| s.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

fn b64(s: &str) -> Vec<u8> {
    missiongate_wire::b64::decode(s).unwrap_or_default()
}

struct Vectors {
    msg: Vec<u8>,
    ec_jwk: VerifyingKey,
    ec_table: VerifyingKey,
    ec_x: Vec<u8>,
    ec_y: Vec<u8>,
    ec_raw: Vec<u8>,
    ec_spki: Vec<u8>,
    rsa: VerifyingKey,
    rsa_sig: Vec<u8>,
    rsa_spki: Vec<u8>,
}

fn load() -> Option<Vectors> {
    let v: serde_json::Value = serde_json::from_str(VECTORS).ok()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    let ec: Jwk =
        serde_json::from_value(serde_json::json!({"kty":"EC","crv":"P-256","x":s("ec_x"),"y":s("ec_y")})).ok()?;
    let rsa: Jwk = serde_json::from_value(serde_json::json!({"kty":"RSA","n":s("rsa_n"),"e":s("rsa_e")})).ok()?;
    let ec_jwk = ec.verifying_key().ok()?;
    Some(Vectors {
        msg: s("msg").into_bytes(),
        ec_table: ec_jwk.clone().precompute(),
        ec_jwk,
        ec_x: b64(&s("ec_x")),
        ec_y: b64(&s("ec_y")),
        ec_raw: hex(&s("ec_sig_raw")),
        ec_spki: hex(&s("ec_spki")),
        rsa: rsa.verifying_key().ok()?,
        rsa_sig: hex(&s("rsa_sig")),
        rsa_spki: hex(&s("rsa_spki")),
    })
}

#[derive(Clone, Copy, Debug)]
enum Case {
    /// `VerifyingKey::verify` on a proof key as the filter holds it (no table): `p256_fast::verify_once`.
    PureEs256Once,
    /// The same with the per-key table (issuer keys).
    PureEs256Table,
    /// The foreign function, including what the filter must do per proof: the SPKI from (x, y),
    /// `r || s` to DER, the protobuf arguments, the call, the result.
    ForeignEs256,
    /// `rsa` 0.9 PKCS#1 v1.5 with SHA-256, 2048-bit key.
    PureRs256,
    /// The foreign function on the same RSA key (SPKI DER given).
    ForeignRs256,
}

const CASES: [Case; 5] =
    [Case::PureEs256Once, Case::ForeignEs256, Case::PureEs256Table, Case::PureRs256, Case::ForeignRs256];

fn run(v: &Vectors, case: Case) -> bool {
    match case {
        Case::PureEs256Once => v.ec_jwk.verify(Alg::Es256, &v.msg, &v.ec_raw).is_ok(),
        Case::PureEs256Table => v.ec_table.verify(Alg::Es256, &v.msg, &v.ec_raw).is_ok(),
        Case::ForeignEs256 => {
            let spki = p256_spki(&v.ec_x, &v.ec_y);
            der_from_raw(&v.ec_raw).is_some_and(|der| foreign_verify("sha256", &spki, &der, &v.msg) == Ok(true))
        }
        Case::PureRs256 => v.rsa.verify(Alg::Rs256, &v.msg, &v.rsa_sig).is_ok(),
        Case::ForeignRs256 => foreign_verify("sha256", &v.rsa_spki, &v.rsa_sig, &v.msg) == Ok(true),
    }
}

#[derive(Default)]
struct Probe {
    vectors: Option<Vectors>,
    rounds: usize,
    per_block: usize,
    round: usize,
    samples: Vec<Vec<f64>>,
    failures: usize,
}

impl Context for Probe {}

impl RootContext for Probe {
    fn on_configure(&mut self, _size: usize) -> bool {
        let mut ptr: *mut u8 = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: as in `foreign_verify`.
        let config = unsafe {
            if proxy_get_buffer_bytes(7, 0, usize::MAX, &mut ptr, &mut len) != 0 || ptr.is_null() {
                Vec::new()
            } else {
                Vec::from_raw_parts(ptr, len, len)
            }
        };
        let text = String::from_utf8_lossy(&config);
        if let Some(n) = text.trim().strip_prefix("diff") {
            differential(n.trim().parse().unwrap_or(500));
            return true;
        }
        let mut it = text.split_whitespace().filter_map(|w| w.parse::<usize>().ok());
        self.rounds = it.next().unwrap_or(40);
        self.per_block = it.next().unwrap_or(20);
        self.samples = vec![Vec::new(); CASES.len()];
        self.vectors = load();
        let Some(v) = &self.vectors else {
            log("verifysig: vectors do not load");
            return false;
        };
        agreement(v);
        // Warm both paths (generator table, first host call).
        for c in CASES {
            if !run(v, c) {
                log(&format!("verifysig: {c:?} rejects the valid vector"));
            }
        }
        let _ = proxy_wasm::hostcalls::set_tick_period(Duration::from_millis(20));
        true
    }

    fn on_tick(&mut self) {
        let Some(v) = &self.vectors else { return };
        if self.round >= self.rounds {
            return;
        }
        let n = CASES.len();
        for k in 0..n {
            let i = (k + self.round) % n;
            let case = CASES[i];
            // RSA verification is cheap next to its block overhead; more per block would not change it.
            let per = self.per_block;
            let t0 = now_ns();
            for _ in 0..per {
                if !std::hint::black_box(run(std::hint::black_box(v), case)) {
                    self.failures += 1;
                }
            }
            let dt = now_ns().saturating_sub(t0);
            self.samples[i].push(dt as f64 / per as f64 / 1000.0);
        }
        self.round += 1;
        if self.round == self.rounds {
            let _ = proxy_wasm::hostcalls::set_tick_period(Duration::from_millis(0));
            let mut line = format!(
                "verifysig: rounds {} per_block {} failures {} (us per verification: min / median)",
                self.rounds, self.per_block, self.failures
            );
            for (i, c) in CASES.iter().enumerate() {
                let s = &mut self.samples[i];
                s.sort_by(|a, b| a.total_cmp(b));
                let min = s.first().copied().unwrap_or(0.0);
                let med = s.get(s.len() / 2).copied().unwrap_or(0.0);
                line.push_str(&format!(" | {c:?} {min:.1} / {med:.1}"));
            }
            log(&line);
        }
    }
}

/// What each path answers on valid, tampered, wrong-key and malformed inputs (one log line).
fn agreement(v: &Vectors) {
    let mut lines = Vec::new();
    let mut tampered_msg = v.msg.clone();
    if let Some(b) = tampered_msg.get_mut(10) {
        *b ^= 1;
    }
    let mut flipped = v.ec_raw.clone();
    if let Some(b) = flipped.get_mut(63) {
        *b ^= 1;
    }
    let spki = p256_spki(&v.ec_x, &v.ec_y);
    let other_y = {
        // The key's mirror point (x, p - y) is another valid key: a wrong key for this signature.
        let p: [u8; 32] = [
            0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        let mut out = [0u8; 32];
        let mut borrow = 0i32;
        for i in (0..32).rev() {
            let d = p[i] as i32 - v.ec_y[i] as i32 - borrow;
            borrow = i32::from(d < 0);
            out[i] = (d + if d < 0 { 256 } else { 0 }) as u8;
        }
        out
    };
    let wrong_spki = p256_spki(&v.ec_x, &other_y);
    let der = der_from_raw(&v.ec_raw).unwrap_or_default();
    let fder = der_from_raw(&flipped).unwrap_or_default();
    let mut high_s = v.ec_raw.clone();
    {
        // s' = n - s: the same signature with the other S (ECDSA malleability).
        let n: [u8; 32] = [
            0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad,
            0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
        ];
        let mut borrow = 0i32;
        for i in (0..32).rev() {
            let d = n[i] as i32 - v.ec_raw[32 + i] as i32 - borrow;
            borrow = i32::from(d < 0);
            high_s[32 + i] = (d + if d < 0 { 256 } else { 0 }) as u8;
        }
    }
    let hder = der_from_raw(&high_s).unwrap_or_default();
    let mut trailing = der.clone();
    trailing.push(0);
    let ed = foreign_verify(
        "sha256",
        &[0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00],
        &[0; 64],
        &v.msg,
    );
    lines.push(format!("spki built from (x, y) equals the vector's: {}", spki == v.ec_spki));
    let cases: Vec<(&str, bool, Result<bool, u32>)> = vec![
        (
            "es256 valid",
            v.ec_jwk.verify(Alg::Es256, &v.msg, &v.ec_raw).is_ok(),
            foreign_verify("sha256", &spki, &der, &v.msg),
        ),
        (
            "es256 tampered msg",
            v.ec_jwk.verify(Alg::Es256, &tampered_msg, &v.ec_raw).is_ok(),
            foreign_verify("sha256", &spki, &der, &tampered_msg),
        ),
        (
            "es256 flipped sig",
            v.ec_jwk.verify(Alg::Es256, &v.msg, &flipped).is_ok(),
            foreign_verify("sha256", &spki, &fder, &v.msg),
        ),
        (
            "es256 high-s",
            v.ec_jwk.verify(Alg::Es256, &v.msg, &high_s).is_ok(),
            foreign_verify("sha256", &spki, &hder, &v.msg),
        ),
        ("es256 wrong key", false, foreign_verify("sha256", &wrong_spki, &der, &v.msg)),
        ("es256 raw r||s to foreign", false, foreign_verify("sha256", &spki, &v.ec_raw, &v.msg)),
        ("es256 der trailing byte", false, foreign_verify("sha256", &spki, &trailing, &v.msg)),
        ("es256 bad key der", false, foreign_verify("sha256", &spki[..90], &der, &v.msg)),
        ("es256 hash SHA256", true, foreign_verify("SHA256", &spki, &der, &v.msg)),
        ("es256 hash sha3", false, foreign_verify("sha3-256", &spki, &der, &v.msg)),
        (
            "rs256 valid",
            v.rsa.verify(Alg::Rs256, &v.msg, &v.rsa_sig).is_ok(),
            foreign_verify("sha256", &v.rsa_spki, &v.rsa_sig, &v.msg),
        ),
        ("ed25519 key", false, ed),
    ];
    for (name, pure, foreign) in cases {
        lines.push(format!("{name}: pure {pure} foreign {foreign:?}"));
    }
    log(&format!("verifysig: agreement | {}", lines.join(" | ")));
}

// ---- differential mode ---------------------------------------------------------------------------

const RSA_TEST_KEYS: &str = include_str!("../../../wire/tests/data/rsa_test_keys.json");

fn envoy_verify_signature(arguments: &[u8]) -> Option<Vec<u8>> {
    let name = missiongate_core::verifier::FOREIGN_FUNCTION;
    let mut ptr: *mut u8 = std::ptr::null_mut();
    let mut len = 0usize;
    // SAFETY: as in `foreign_verify`.
    unsafe {
        let st = proxy_call_foreign_function(
            name.as_ptr(),
            name.len(),
            arguments.as_ptr(),
            arguments.len(),
            &mut ptr,
            &mut len,
        );
        if st != 0 {
            return None;
        }
        Some(if ptr.is_null() { Vec::new() } else { Vec::from_raw_parts(ptr, len, len) })
    }
}

/// xorshift64*: reproducible inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa, 0xad, 0xa7,
    0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

fn order_minus(x: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(P256_ORDER[i]) - i16::from(x[i]) - borrow;
        borrow = i16::from(d < 0);
        out[i] = d.rem_euclid(256) as u8;
    }
    out
}

fn differential(rounds: usize) {
    use missiongate_core::verifier::{route, HostVerifier, Route};
    use missiongate_wire::jose::{PureVerifier, SigningKey, Verifier};
    let host = match HostVerifier::probe(envoy_verify_signature) {
        Ok(h) => h,
        Err(e) => {
            log(&format!("verifysig: diff: no host verifier: {e}"));
            return;
        }
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut checked, mut routed, mut accepted, mut differ) = (0usize, 0usize, 0usize, Vec::new());
    let mut check = |what: &str, key: &VerifyingKey, alg: Alg, msg: &[u8], sig: &[u8]| {
        let h = host.verify(key, alg, msg, sig).is_ok();
        let p = PureVerifier.verify(key, alg, msg, sig).is_ok();
        checked += 1;
        routed += usize::from(matches!(route(key, alg, msg, sig), Route::Foreign(_)));
        accepted += usize::from(p);
        if h != p && differ.len() < 10 {
            differ.push(format!("{what}: host {h} pure {p}"));
        }
    };
    for _ in 0..rounds {
        let Ok(sk) = SigningKey::from_secret_bytes(Alg::Es256, &rng.bytes(32)) else { continue };
        let key = match sk.public_jwk(None).verifying_key() {
            Ok(k) => k,
            Err(_) => continue,
        };
        let len = rng.below(600);
        let msg = rng.bytes(len);
        let sig = sk.sign_bytes(&msg);
        check("valid", &key, Alg::Es256, &msg, &sig);
        let high = [&sig[..32], &order_minus(&sig[32..])[..]].concat();
        check("high-S", &key, Alg::Es256, &msg, &high);
        let mut flipped = sig.clone();
        let bit = rng.below(512);
        flipped[bit / 8] ^= 1 << (bit % 8);
        check("bit flip", &key, Alg::Es256, &msg, &flipped);
        check("random r||s", &key, Alg::Es256, &msg, &rng.bytes(64));
        let mut near = sig.clone();
        let k = rng.below(3);
        let mut edge = P256_ORDER.to_vec();
        edge[31] = edge[31].wrapping_sub(k as u8); // n, n-1, n-2
        near[32..].copy_from_slice(&edge);
        check("s near n", &key, Alg::Es256, &msg, &near);
        let mut other = msg.clone();
        other.push(rng.next() as u8);
        check("other message", &key, Alg::Es256, &other, &sig);
        check("swapped", &key, Alg::Es256, &msg, &[&sig[32..], &sig[..32]].concat());
        let small = [&[0u8; 31][..], &[1u8][..], &sig[32..]].concat();
        check("r = 1", &key, Alg::Es256, &msg, &small);
    }
    // RS256 on the fixed test keys.
    let keys: serde_json::Value = serde_json::from_str(RSA_TEST_KEYS).unwrap_or_default();
    let rsa: Vec<SigningKey> = ["a2048", "b2048", "c2048"]
        .iter()
        .filter_map(|n| {
            let k = keys.get(*n)?;
            let p = hex(k.get("p")?.as_str()?);
            let q = hex(k.get("q")?.as_str()?);
            SigningKey::rsa_from_primes(Alg::Rs256, &p, &q).ok()
        })
        .collect();
    for i in 0..rounds.min(60) {
        let Some(sk) = rsa.get(i % rsa.len().max(1)) else { break };
        let Ok(key) = sk.public_jwk(None).verifying_key() else { continue };
        let len = rng.below(600);
        let msg = rng.bytes(len);
        let sig = sk.sign_bytes(&msg);
        check("rs256 valid", &key, Alg::Rs256, &msg, &sig);
        let mut flipped = sig.clone();
        let bit = rng.below(sig.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        check("rs256 bit flip", &key, Alg::Rs256, &msg, &flipped);
        check("rs256 random", &key, Alg::Rs256, &msg, &rng.bytes(sig.len()));
        let mut other = msg.clone();
        other.push(1);
        check("rs256 other message", &key, Alg::Rs256, &other, &sig);
    }
    log(&format!(
        "verifysig: diff: {checked} inputs, {routed} routed to verify_signature, {accepted} accepted, {} disagreements {:?}",
        differ.len(),
        differ
    ));
}
