//! Speed of `parameter_digest` (strict I-JSON parse + RFC 8785 + SHA-256) on payment-batch bodies of
//! 1 KiB, 64 KiB and 1 MiB, as the bench's consequential POSTs send them.
//!
//! Native: `cargo run --release -p missiongate-wire --example digest_speed`
//! Wasm (V8): build with `--target wasm32-wasip1` and run it under node as `p256_speed.rs` says.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use missiongate_wire::digest::parameter_digest;
use std::time::Instant;

#[path = "../../tests/src/bodies.rs"]
mod bodies;

#[inline(never)]
fn run(body: &[u8], n: usize) -> usize {
    let mut total = 0;
    for _ in 0..n {
        let r = parameter_digest(
            "POST",
            "https://api.partner.example/v1/payments",
            None,
            Some((Some("application/json"), body)),
        );
        total += r.map(|(d, c)| d.len() + c.len()).unwrap_or(0);
    }
    total
}

#[inline(never)]
fn run_sha(body: &[u8], n: usize) -> usize {
    (0..n).map(|_| missiongate_wire::digest::sha256(body)[0] as usize).sum()
}

#[inline(never)]
fn run_parse(body: &[u8], n: usize) -> usize {
    (0..n).map(|_| missiongate_wire::jcs::parse_ijson(body).map(|v| v.is_object() as usize).unwrap_or(0)).sum()
}

#[inline(never)]
fn run_serde(body: &[u8], n: usize) -> usize {
    (0..n).map(|_| serde_json::from_slice::<serde_json::Value>(body).map(|v| v.is_object() as usize).unwrap_or(0)).sum()
}

fn time(f: impl Fn() -> usize, n: usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        std::hint::black_box(f());
        best = best.min(t.elapsed().as_secs_f64() / n as f64);
    }
    best * 1e6
}

fn main() {
    for (size, n) in [(1024usize, 2000usize), (64 * 1024, 100), (1024 * 1024, 8)] {
        let body = bodies::payment_batch(size);
        let digest = time(|| run(&body, n), n);
        let sha = time(|| run_sha(&body, n), n);
        let parse = time(|| run_parse(&body, n), n);
        let serde = time(|| run_serde(&body, n), n);
        println!(
            "{size:>8} bytes: digest {digest:>9.1} us ({:.0} MB/s, {:.1}x sha-256; issue 16 target <= 2x in V8); sha-256 alone {sha:>8.1} us; strict parse {parse:>8.1} us; serde_json Value {serde:>8.1} us",
            size as f64 / digest,
            digest / sha
        );
    }
}
