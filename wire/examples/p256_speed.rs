//! Speed of ES256 verification in one run: `p256` 0.13 against `p256_fast` (with a per-key table,
//! and one-shot), plus the precomputation costs.
//!
//! Native: `cargo run --release -p missiongate-wire --example p256_speed`
//!
//! Wasm (V8, as in Envoy): `cargo build --release -p missiongate-wire --example p256_speed
//! --target wasm32-wasip1`, then
//! `node --experimental-wasi-unstable-preview1 --no-warnings run.mjs target/wasm32-wasip1/release/examples/p256_speed.wasm`
//! with this `run.mjs`:
//!
//! ```js
//! import { readFile } from 'node:fs/promises';
//! import { WASI } from 'node:wasi';
//! const wasi = new WASI({ version: 'preview1', args: process.argv.slice(2) });
//! const wasm = await WebAssembly.compile(await readFile(process.argv[2]));
//! wasi.start(await WebAssembly.instantiate(wasm, wasi.getImportObject()));
//! ```
//!
//! Every measured loop is its own non-inlined function, and the rounds interleave the contenders
//! and keep the best: V8 first runs wasm in its baseline compiler and tiers hot functions up to
//! TurboFan, as a long-running filter has; and the best round is the least disturbed by other load.
//!
//! The module is compiled in by path so the harness does not depend on how the crate exports it.

#[path = "../src/p256_fast.rs"]
#[allow(dead_code)]
mod p256_fast;

use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256_fast::FastP256Key;
use std::time::Instant;

const OPS: usize = 300;
const KEYS: usize = 4;
const ROUNDS: usize = 8;

struct Case {
    key: usize,
    msg: Vec<u8>,
    sig: Signature,
    bytes: Vec<u8>,
}

#[inline(never)]
fn run_p256(vks: &[VerifyingKey], cases: &[Case]) -> usize {
    cases.iter().filter(|c| vks.get(c.key).is_some_and(|vk| vk.verify(&c.msg, &c.sig).is_ok())).count()
}

#[inline(never)]
fn run_fast(fast: &[FastP256Key], cases: &[Case]) -> usize {
    cases.iter().filter(|c| fast.get(c.key).is_some_and(|f| f.verify(&c.msg, &c.bytes))).count()
}

#[inline(never)]
fn run_once(vks: &[VerifyingKey], cases: &[Case]) -> usize {
    cases.iter().filter(|c| vks.get(c.key).is_some_and(|vk| p256_fast::verify_once(vk, &c.msg, &c.bytes))).count()
}

#[inline(never)]
fn run_new(vks: &[VerifyingKey]) -> Vec<FastP256Key> {
    vks.iter().map(FastP256Key::new).collect()
}

/// Time per operation of one run of `f` over `n` operations, and whether all `n` accepted.
fn timed(n: usize, f: impl FnOnce() -> usize) -> (f64, bool) {
    let t = Instant::now();
    let ok = f();
    (t.elapsed().as_secs_f64() * 1e9 / n as f64, ok == n)
}

fn main() {
    // Generator table first, so its one-off cost is measured by itself (first run, so partly
    // in V8's baseline tier: an upper bound).
    let t = Instant::now();
    p256_fast::precompute_generator();
    let g_ns = t.elapsed().as_secs_f64() * 1e9;

    let mut signers = Vec::new();
    for i in 0..KEYS {
        let mut seed = [0x42u8; 32];
        seed[0] = i as u8 + 1;
        match SigningKey::from_slice(&seed) {
            Ok(k) => signers.push(k),
            Err(_) => return,
        }
    }
    let vks: Vec<VerifyingKey> = signers.iter().map(|k| *k.verifying_key()).collect();

    // A JWT-sized signing input (about 300 bytes) per operation, each signed by one of the keys.
    let mut cases = Vec::new();
    for i in 0..OPS {
        let msg =
            format!("eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCIsImtpZCI6ImsxIn0.{}{i}", "eyJzdWIiOiJhZ2VudC0x".repeat(12));
        let key = i % KEYS;
        let Some(signer) = signers.get(key) else { return };
        let sig: Signature = signer.sign(msg.as_bytes());
        cases.push(Case { key, msg: msg.into_bytes(), bytes: sig.to_bytes().to_vec(), sig });
    }

    let fast = run_new(&vks);
    // Rounds interleave the contenders so that load from other processes hits all alike; the
    // best round of each is reported.
    let mut best = [f64::MAX; 4];
    let mut all_ok = true;
    for _ in 0..ROUNDS {
        let runs = [
            timed(KEYS, || run_new(&vks).len()),
            timed(OPS, || run_p256(&vks, &cases)),
            timed(OPS, || run_fast(&fast, &cases)),
            timed(OPS, || run_once(&vks, &cases)),
        ];
        for (b, (ns, ok)) in best.iter_mut().zip(runs) {
            *b = b.min(ns);
            all_ok &= ok;
        }
    }
    let [new_ns, p256_ns, fast_ns, once_ns] = best;

    let table = fast.first().map_or(0, FastP256Key::table_bytes);
    println!("all {OPS} signatures accepted by all three, every round: {all_ok}");
    println!("p256 0.13 verify          {p256_ns:>10.0} ns/op");
    println!("p256_fast verify (table)  {fast_ns:>10.0} ns/op  ({:.1}x)", p256_ns / fast_ns);
    println!("p256_fast verify_once     {once_ns:>10.0} ns/op  ({:.1}x)", p256_ns / once_ns);
    println!("FastP256Key::new          {new_ns:>10.0} ns/key, table {table} bytes");
    println!("generator table (first)   {g_ns:>10.0} ns");
}
