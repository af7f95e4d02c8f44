//! Speed of `parameter_digest` on payment-batch bodies of 1 KiB, 64 KiB and 1 MiB, as the bench's
//! consequential POSTs send them, as a ratio to the bare SHA-256 of the same bytes (issue 16:
//! within 2x in V8): the filter's streaming digest (`request_parameter_digest`: one checking pass,
//! then canonical bytes straight into SHA-256), `request_digest` (which also returns the canonical
//! bytes), and a strict parse to a `serde_json::Value` for scale. The contenders interleave in every
//! round and the median of the per-round ratios is printed, so a loaded machine skews little.
//!
//! Native: `cargo run --release -p missiongate-wire --example digest_speed` (natively SHA-256 runs
//! on the CPU's SHA extensions, so the ratios there are far larger than in V8).
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
fn run_stream(body: &[u8], n: usize) -> usize {
    let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
    let mut total = 0;
    for _ in 0..n {
        let r = missiongate_wire::digest::request_parameter_digest(
            "POST",
            "https://api.partner.example/v1/payments",
            &headers,
            &[],
            body,
            None,
        );
        total += r.map(|d| d.len()).unwrap_or(0);
    }
    total
}

/// Seconds per call of one round of `n` calls.
fn once(f: &dyn Fn() -> usize, n: usize) -> f64 {
    let t = Instant::now();
    std::hint::black_box(f());
    t.elapsed().as_secs_f64() / n as f64
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    xs[xs.len() / 2]
}

fn main() {
    // The machine may be loaded: the contenders interleave in every round, and what is reported is
    // the median over rounds of each round's ratio to the bare SHA-256 of the same bytes.
    const ROUNDS: usize = 15;
    for (size, n) in [(1024usize, 2000usize), (64 * 1024, 30), (1024 * 1024, 3)] {
        let body = bodies::payment_batch(size);
        assert_eq!(run(&body, 1), run(&body, 1));
        let (mut r_stream, mut r_old, mut r_parse, mut sha_t) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let sha = once(&|| run_sha(&body, n), n);
            let stream = once(&|| run_stream(&body, n), n);
            let old = once(&|| run(&body, n), n);
            let parse = once(&|| run_parse(&body, n), n);
            r_stream.push(stream / sha);
            r_old.push(old / sha);
            r_parse.push(parse / sha);
            sha_t.push(sha);
        }
        println!(
            "{size:>8} bytes: streaming digest {:.2}x sha-256 (issue 16 target <= 2x in V8); request_digest with canonical bytes {:.2}x; strict parse to Value {:.2}x; sha-256 {:.0} us (median of {ROUNDS} interleaved rounds)",
            median(r_stream),
            median(r_old),
            median(r_parse),
            median(sha_t) * 1e6
        );
    }
}
