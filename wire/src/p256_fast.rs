//! Fast ES256 (ECDSA over P-256 with SHA-256) verification for public inputs.
//!
//! `p256` 0.13 verifies in about 1 ms under V8: on 32-bit targets it widens field elements to
//! 64-bit limbs and multiplies through `u128`, which wasm has no instruction for (each product is
//! a call to `__multi3`), and its `lincomb` spends 256 doublings on every verification. Here:
//!
//! * Field arithmetic modulo p uses eight 32-bit limbs: every limb product is one native `i64.mul`,
//!   products are summed by column (product scanning) into 64-bit accumulators without carry
//!   chains, and the 512-bit result is reduced with the NIST (Solinas) identities for
//!   p = 2^256 - 2^224 + 2^192 + 2^96 - 1, which are additions and subtractions of 32-bit words.
//! * No doublings in the scalar multiplication. For the generator G (once per process, lazily, or
//!   eagerly with [`precompute_generator`]) and for each issuer key Q (once, in
//!   [`FastP256Key::new`]) a fixed-base table holds `d * 2^(8i) * P` for every window `i` in
//!   `0..32` and `d` in `1..=128`, in affine coordinates (256 KiB per table). Each scalar is folded
//!   to at most (n-1)/2 (negating the point instead) and recoded into 32 signed 8-bit digits, so
//!   `u1*G + u2*Q` costs at most 64 mixed Jacobian-affine additions and no doubling.
//! * `x(R) mod n == r` is checked in Jacobian coordinates (`X == r * Z^2`, or `X == (r + n) * Z^2`
//!   when `r + n < p`), so there is no field inversion per signature.
//! * Scalars mod n use the same 32-bit limbs: `1/s` by the binary extended Euclidean algorithm and
//!   two Montgomery products for `u1 = e/s` and `u2 = r/s`.
//!
//! Measured (loop of 300 verifications, release + LTO, wasm32-wasip1 under node 20's V8): about
//! 33 us per verification with a table against about 0.95 ms for `p256` 0.13 (~28x); about
//! 125 us with [`verify_once`] (no per-key table, ~7.5x). `FastP256Key::new` costs about 2.7 ms.
//!
//! Everything here is variable-time: branches and table indices depend on the signature, the
//! message hash and the public key, all of which are public. Never use this module with secrets.
//!
//! The acceptance rule is that of `p256::ecdsa::VerifyingKey::verify` (RustCrypto `ecdsa` 0.16):
//! the signature is the 64-byte `r || s` of JWS, `r` and `s` must be in `[1, n-1]`, high-S
//! signatures are accepted (as `p256` does), the digest is SHA-256 of the message reduced mod n,
//! and `u1*G + u2*Q` must not be the identity. The tests check agreement with `p256` on random
//! keys, messages and signatures and on tampered, out-of-range and edge-case inputs.

use p256::ecdsa::VerifyingKey;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

// ---------------------------------------------------------------------------------------------
// Field arithmetic modulo p = 2^256 - 2^224 + 2^192 + 2^96 - 1.
//
// A field element is eight little-endian 32-bit words holding a value in [0, 2^256) that is
// congruent to the element mod p ("weakly reduced": p itself and values up to 2^256 - 1 can
// appear). `fe_canon` gives the unique representative in [0, p) where it matters (comparisons).
// ---------------------------------------------------------------------------------------------

type Fe = [u32; 8];

const LOW32: u64 = 0xffff_ffff;

/// p, little-endian words.
const P: Fe = [0xffff_ffff, 0xffff_ffff, 0xffff_ffff, 0, 0, 0, 1, 0xffff_ffff];
/// n, the group order, little-endian words.
const N: Fe = [0xfc63_2551, 0xf3b9_cac2, 0xa717_9e84, 0xbce6_faad, 0xffff_ffff, 0xffff_ffff, 0, 0xffff_ffff];
const FE_ZERO: Fe = [0; 8];
const FE_ONE: Fe = [1, 0, 0, 0, 0, 0, 0, 0];

/// Carry-propagate signed word sums `t[k]` (value `sum t[k] * 2^(32k)`, each |t[k]| < 2^62) into a
/// weakly reduced element, folding every carry out of bit 256 back in with
/// `2^256 = 2^224 - 2^192 - 2^96 + 1 (mod p)`. Terminates in at most three passes for the input
/// ranges used here (the first fold leaves a carry of at most one in magnitude).
#[inline(always)]
fn carry_fold(t: [i64; 8]) -> Fe {
    let [mut t0, mut t1, mut t2, mut t3, mut t4, mut t5, mut t6, mut t7] = t;
    const M: i64 = 0xffff_ffff;
    loop {
        t1 += t0 >> 32;
        t0 &= M;
        t2 += t1 >> 32;
        t1 &= M;
        t3 += t2 >> 32;
        t2 &= M;
        t4 += t3 >> 32;
        t3 &= M;
        t5 += t4 >> 32;
        t4 &= M;
        t6 += t5 >> 32;
        t5 &= M;
        t7 += t6 >> 32;
        t6 &= M;
        let c = t7 >> 32;
        t7 &= M;
        if c == 0 {
            break;
        }
        t0 += c;
        t3 -= c;
        t6 -= c;
        t7 += c;
    }
    [t0 as u32, t1 as u32, t2 as u32, t3 as u32, t4 as u32, t5 as u32, t6 as u32, t7 as u32]
}

/// Reduce a 512-bit value given as 16 column sums `c[k]` (value `sum c[k] * 2^(32k)`, each
/// `c[k] < 2^38`) with the NIST P-256 identities (FIPS 186-4 D.2.3 / "Guide to ECC" 2.29):
/// `s1 + 2 s2 + 2 s3 + s4 + s5 - d1 - d2 - d3 - d4`. The identities are linear in the words, so
/// they hold for unnormalized columns too.
#[inline(always)]
fn solinas(c: [u64; 16]) -> Fe {
    let [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15] = c.map(|x| x as i64);
    carry_fold([
        c0 + c8 + c9 - c11 - c12 - c13 - c14,
        c1 + c9 + c10 - c12 - c13 - c14 - c15,
        c2 + c10 + c11 - c13 - c14 - c15,
        c3 + 2 * (c11 + c12) + c13 - c15 - c8 - c9,
        c4 + 2 * (c12 + c13) + c14 - c9 - c10,
        c5 + 2 * (c13 + c14) + c15 - c10 - c11,
        c6 + 3 * c14 + 2 * c15 + c13 - c8 - c9,
        c7 + 3 * c15 + c8 - c10 - c11 - c12 - c13,
    ])
}

#[inline(always)]
fn widen(a: &Fe) -> [u64; 8] {
    a.map(u64::from)
}

/// Add the halves of a 64-bit product to a column's low and high sums.
macro_rules! mac {
    ($lo:ident, $hi:ident, $p:expr) => {{
        let p: u64 = $p;
        $lo += p & LOW32;
        $hi += p >> 32;
    }};
}

fn fe_mul(a: &Fe, b: &Fe) -> Fe {
    let [a0, a1, a2, a3, a4, a5, a6, a7] = widen(a);
    let [b0, b1, b2, b3, b4, b5, b6, b7] = widen(b);
    // Product scanning: column k sums the low halves of a_i * b_j with i + j = k (`lo`) and
    // carries the sum of their high halves (`hi`) to column k + 1. A column holds at most 16
    // halves, so it stays below 2^36 and needs no carry handling here.
    let (mut lo, mut hi);
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * b0);
    let c0 = lo;
    let mut carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * b1);
    mac!(lo, hi, a1 * b0);
    let c1 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * b2);
    mac!(lo, hi, a1 * b1);
    mac!(lo, hi, a2 * b0);
    let c2 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * b3);
    mac!(lo, hi, a1 * b2);
    mac!(lo, hi, a2 * b1);
    mac!(lo, hi, a3 * b0);
    let c3 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * b4);
    mac!(lo, hi, a1 * b3);
    mac!(lo, hi, a2 * b2);
    mac!(lo, hi, a3 * b1);
    mac!(lo, hi, a4 * b0);
    let c4 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * b5);
    mac!(lo, hi, a1 * b4);
    mac!(lo, hi, a2 * b3);
    mac!(lo, hi, a3 * b2);
    mac!(lo, hi, a4 * b1);
    mac!(lo, hi, a5 * b0);
    let c5 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * b6);
    mac!(lo, hi, a1 * b5);
    mac!(lo, hi, a2 * b4);
    mac!(lo, hi, a3 * b3);
    mac!(lo, hi, a4 * b2);
    mac!(lo, hi, a5 * b1);
    mac!(lo, hi, a6 * b0);
    let c6 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * b7);
    mac!(lo, hi, a1 * b6);
    mac!(lo, hi, a2 * b5);
    mac!(lo, hi, a3 * b4);
    mac!(lo, hi, a4 * b3);
    mac!(lo, hi, a5 * b2);
    mac!(lo, hi, a6 * b1);
    mac!(lo, hi, a7 * b0);
    let c7 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a1 * b7);
    mac!(lo, hi, a2 * b6);
    mac!(lo, hi, a3 * b5);
    mac!(lo, hi, a4 * b4);
    mac!(lo, hi, a5 * b3);
    mac!(lo, hi, a6 * b2);
    mac!(lo, hi, a7 * b1);
    let c8 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a2 * b7);
    mac!(lo, hi, a3 * b6);
    mac!(lo, hi, a4 * b5);
    mac!(lo, hi, a5 * b4);
    mac!(lo, hi, a6 * b3);
    mac!(lo, hi, a7 * b2);
    let c9 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a3 * b7);
    mac!(lo, hi, a4 * b6);
    mac!(lo, hi, a5 * b5);
    mac!(lo, hi, a6 * b4);
    mac!(lo, hi, a7 * b3);
    let c10 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a4 * b7);
    mac!(lo, hi, a5 * b6);
    mac!(lo, hi, a6 * b5);
    mac!(lo, hi, a7 * b4);
    let c11 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a5 * b7);
    mac!(lo, hi, a6 * b6);
    mac!(lo, hi, a7 * b5);
    let c12 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a6 * b7);
    mac!(lo, hi, a7 * b6);
    let c13 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a7 * b7);
    let c14 = lo + carry;
    carry = hi;
    solinas([c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, carry])
}

fn fe_sq(a: &Fe) -> Fe {
    let [a0, a1, a2, a3, a4, a5, a6, a7] = widen(a);
    // As in `fe_mul`, with each cross product a_i * a_j (i < j) taken once and doubled.
    let (mut lo, mut hi);
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * a0);
    let c0 = lo;
    let mut carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * a1);
    (lo, hi) = (lo << 1, hi << 1);
    let c1 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * a2);
    (lo, hi) = (lo << 1, hi << 1);
    mac!(lo, hi, a1 * a1);
    let c2 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * a3);
    mac!(lo, hi, a1 * a2);
    (lo, hi) = (lo << 1, hi << 1);
    let c3 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * a4);
    mac!(lo, hi, a1 * a3);
    (lo, hi) = (lo << 1, hi << 1);
    mac!(lo, hi, a2 * a2);
    let c4 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * a5);
    mac!(lo, hi, a1 * a4);
    mac!(lo, hi, a2 * a3);
    (lo, hi) = (lo << 1, hi << 1);
    let c5 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * a6);
    mac!(lo, hi, a1 * a5);
    mac!(lo, hi, a2 * a4);
    (lo, hi) = (lo << 1, hi << 1);
    mac!(lo, hi, a3 * a3);
    let c6 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a0 * a7);
    mac!(lo, hi, a1 * a6);
    mac!(lo, hi, a2 * a5);
    mac!(lo, hi, a3 * a4);
    (lo, hi) = (lo << 1, hi << 1);
    let c7 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a1 * a7);
    mac!(lo, hi, a2 * a6);
    mac!(lo, hi, a3 * a5);
    (lo, hi) = (lo << 1, hi << 1);
    mac!(lo, hi, a4 * a4);
    let c8 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a2 * a7);
    mac!(lo, hi, a3 * a6);
    mac!(lo, hi, a4 * a5);
    (lo, hi) = (lo << 1, hi << 1);
    let c9 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a3 * a7);
    mac!(lo, hi, a4 * a6);
    (lo, hi) = (lo << 1, hi << 1);
    mac!(lo, hi, a5 * a5);
    let c10 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a4 * a7);
    mac!(lo, hi, a5 * a6);
    (lo, hi) = (lo << 1, hi << 1);
    let c11 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a5 * a7);
    (lo, hi) = (lo << 1, hi << 1);
    mac!(lo, hi, a6 * a6);
    let c12 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a6 * a7);
    (lo, hi) = (lo << 1, hi << 1);
    let c13 = lo + carry;
    carry = hi;
    (lo, hi) = (0u64, 0u64);
    mac!(lo, hi, a7 * a7);
    let c14 = lo + carry;
    carry = hi;
    solinas([c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, carry])
}

/// `k * a + m * b` for small signed integers k, m (|k|, |m| < 2^20).
#[inline(always)]
fn fe_lin(k: i64, a: &Fe, m: i64, b: &Fe) -> Fe {
    let [a0, a1, a2, a3, a4, a5, a6, a7] = a.map(i64::from);
    let [b0, b1, b2, b3, b4, b5, b6, b7] = b.map(i64::from);
    carry_fold([
        k * a0 + m * b0,
        k * a1 + m * b1,
        k * a2 + m * b2,
        k * a3 + m * b3,
        k * a4 + m * b4,
        k * a5 + m * b5,
        k * a6 + m * b6,
        k * a7 + m * b7,
    ])
}

#[inline(always)]
fn fe_add(a: &Fe, b: &Fe) -> Fe {
    fe_lin(1, a, 1, b)
}

#[inline(always)]
fn fe_sub(a: &Fe, b: &Fe) -> Fe {
    fe_lin(1, a, -1, b)
}

#[inline(always)]
fn fe_neg(a: &Fe) -> Fe {
    fe_lin(-1, a, 0, &FE_ZERO)
}

#[inline(always)]
fn fe_small(k: i64, a: &Fe) -> Fe {
    fe_lin(k, a, 0, &FE_ZERO)
}

/// `a >= b` as 256-bit integers.
fn ge(a: &Fe, b: &Fe) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x > y;
        }
    }
    true
}

/// `a - b` as 256-bit integers, wrapping.
fn sub_words(a: &Fe, b: &Fe) -> Fe {
    let mut out = [0u32; 8];
    let mut borrow = 0i64;
    for ((o, x), y) in out.iter_mut().zip(a.iter()).zip(b.iter()) {
        let t = i64::from(*x) - i64::from(*y) + borrow;
        *o = t as u32;
        borrow = t >> 32;
    }
    out
}

/// `a + b` as 256-bit integers, or `None` on a carry out of bit 256.
fn add_words(a: &Fe, b: &Fe) -> Option<Fe> {
    let mut out = [0u32; 8];
    let mut carry = 0u64;
    for ((o, x), y) in out.iter_mut().zip(a.iter()).zip(b.iter()) {
        let t = u64::from(*x) + u64::from(*y) + carry;
        *o = t as u32;
        carry = t >> 32;
    }
    (carry == 0).then_some(out)
}

/// The representative in [0, p). A weakly reduced value is below 2^256 < 2p, so one subtraction
/// suffices.
fn fe_canon(a: &Fe) -> Fe {
    if ge(a, &P) {
        sub_words(a, &P)
    } else {
        *a
    }
}

fn fe_is_zero(a: &Fe) -> bool {
    *a == FE_ZERO || *a == P
}

fn fe_eq(a: &Fe, b: &Fe) -> bool {
    fe_canon(a) == fe_canon(b)
}

fn fe_sqn(a: &Fe, n: u32) -> Fe {
    let mut t = *a;
    for _ in 0..n {
        t = fe_sq(&t);
    }
    t
}

/// `a^(p-2)`, the inverse of a non-zero `a` (Fermat). p - 2 in binary, from the top: 32 ones,
/// 31 zeros and a one, 96 zeros, 94 ones, a zero and a one.
fn fe_invert(a: &Fe) -> Fe {
    let x1 = *a;
    let x2 = fe_mul(&fe_sq(&x1), &x1);
    let x3 = fe_mul(&fe_sq(&x2), &x1);
    let x6 = fe_mul(&fe_sqn(&x3, 3), &x3);
    let x12 = fe_mul(&fe_sqn(&x6, 6), &x6);
    let x15 = fe_mul(&fe_sqn(&x12, 3), &x3);
    let x30 = fe_mul(&fe_sqn(&x15, 15), &x15);
    let x32 = fe_mul(&fe_sqn(&x30, 2), &x2);
    let mut t = fe_mul(&fe_sqn(&x32, 32), &x1);
    t = fe_sqn(&t, 96);
    t = fe_mul(&fe_sqn(&t, 32), &x32);
    t = fe_mul(&fe_sqn(&t, 32), &x32);
    t = fe_mul(&fe_sqn(&t, 30), &x30);
    fe_mul(&fe_sqn(&t, 2), &x1)
}

/// 32 big-endian bytes to little-endian words (no reduction).
fn words_from_be(bytes: &[u8; 32]) -> Fe {
    let mut out = [0u32; 8];
    for (o, chunk) in out.iter_mut().zip(bytes.rchunks_exact(4)) {
        *o = u32::from_be_bytes(chunk.try_into().unwrap_or([0; 4]));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Points. The curve is y^2 = x^3 - 3x + b; its order n is prime, so no point other than the
// identity has y = 0 and a doubling never meets the identity.
// ---------------------------------------------------------------------------------------------

/// An affine point (never the identity in the tables). Aligned so that a table entry is exactly
/// one 64-byte cache line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
struct Affine {
    x: Fe,
    y: Fe,
}

/// Jacobian coordinates: (X / Z^2, Y / Z^3); `inf` marks the identity.
#[derive(Clone, Copy, Debug)]
struct Jac {
    x: Fe,
    y: Fe,
    z: Fe,
    inf: bool,
}

const JAC_INF: Jac = Jac { x: FE_ONE, y: FE_ONE, z: FE_ZERO, inf: true };

impl Jac {
    fn from_affine(p: &Affine) -> Jac {
        Jac { x: p.x, y: p.y, z: FE_ONE, inf: false }
    }
}

/// dbl-2001-b (a = -3): 3M + 5S.
fn jac_double(p: &Jac) -> Jac {
    if p.inf {
        return *p;
    }
    let delta = fe_sq(&p.z);
    let gamma = fe_sq(&p.y);
    let beta = fe_mul(&p.x, &gamma);
    let alpha = fe_small(3, &fe_mul(&fe_sub(&p.x, &delta), &fe_add(&p.x, &delta)));
    let x3 = fe_lin(1, &fe_sq(&alpha), -8, &beta);
    let z3 = fe_lin(1, &fe_sq(&fe_add(&p.y, &p.z)), -1, &fe_add(&gamma, &delta));
    let y3 = fe_lin(1, &fe_mul(&alpha, &fe_lin(4, &beta, -1, &x3)), -8, &fe_sq(&gamma));
    Jac { x: x3, y: y3, z: z3, inf: false }
}

/// Jacobian + affine (madd-2004-hmv): 8M + 3S; handles the identity, P == Q and P == -Q.
fn jac_add_affine(p: &Jac, q: &Affine) -> Jac {
    if p.inf {
        return Jac::from_affine(q);
    }
    let z1z1 = fe_sq(&p.z);
    let u2 = fe_mul(&q.x, &z1z1);
    let s2 = fe_mul(&q.y, &fe_mul(&p.z, &z1z1));
    let h = fe_sub(&u2, &p.x);
    let r = fe_sub(&s2, &p.y);
    if fe_is_zero(&h) {
        return if fe_is_zero(&r) { jac_double(p) } else { JAC_INF };
    }
    let hh = fe_sq(&h);
    let hhh = fe_mul(&hh, &h);
    let v = fe_mul(&p.x, &hh);
    let x3 = fe_lin(1, &fe_sub(&fe_sq(&r), &hhh), -2, &v);
    let y3 = fe_sub(&fe_mul(&r, &fe_sub(&v, &x3)), &fe_mul(&p.y, &hhh));
    let z3 = fe_mul(&p.z, &h);
    Jac { x: x3, y: y3, z: z3, inf: false }
}

/// Jacobian + Jacobian (add-1998-cmo-2): 12M + 4S; handles the identity, P == Q and P == -Q.
fn jac_add(p: &Jac, q: &Jac) -> Jac {
    if p.inf {
        return *q;
    }
    if q.inf {
        return *p;
    }
    let z1z1 = fe_sq(&p.z);
    let z2z2 = fe_sq(&q.z);
    let u1 = fe_mul(&p.x, &z2z2);
    let u2 = fe_mul(&q.x, &z1z1);
    let s1 = fe_mul(&p.y, &fe_mul(&q.z, &z2z2));
    let s2 = fe_mul(&q.y, &fe_mul(&p.z, &z1z1));
    let h = fe_sub(&u2, &u1);
    let r = fe_sub(&s2, &s1);
    if fe_is_zero(&h) {
        return if fe_is_zero(&r) { jac_double(p) } else { JAC_INF };
    }
    let hh = fe_sq(&h);
    let hhh = fe_mul(&hh, &h);
    let v = fe_mul(&u1, &hh);
    let x3 = fe_lin(1, &fe_sub(&fe_sq(&r), &hhh), -2, &v);
    let y3 = fe_sub(&fe_mul(&r, &fe_sub(&v, &x3)), &fe_mul(&s1, &hhh));
    let z3 = fe_mul(&fe_mul(&p.z, &q.z), &h);
    Jac { x: x3, y: y3, z: z3, inf: false }
}

fn neg_affine(p: &Affine) -> Affine {
    Affine { x: p.x, y: fe_neg(&p.y) }
}

fn neg_jac(p: &Jac) -> Jac {
    Jac { y: fe_neg(&p.y), ..*p }
}

/// Affine forms of non-identity points with one field inversion (Montgomery's trick). `None` if
/// any point is the identity.
fn batch_to_affine(points: &[Jac]) -> Option<Vec<Affine>> {
    if points.iter().any(|p| p.inf) {
        return None;
    }
    // prefix[i] = z_0 * ... * z_(i-1)
    let mut prefix = Vec::with_capacity(points.len());
    let mut acc = FE_ONE;
    for p in points {
        prefix.push(acc);
        acc = fe_mul(&acc, &p.z);
    }
    if fe_is_zero(&acc) {
        return None;
    }
    // inv = 1 / (z_0 * ... * z_i), walking i downwards.
    let mut inv = fe_invert(&acc);
    let mut out = Vec::with_capacity(points.len());
    for (p, pre) in points.iter().zip(prefix.iter()).rev() {
        let zinv = fe_mul(&inv, pre);
        inv = fe_mul(&inv, &p.z);
        let zinv2 = fe_sq(&zinv);
        let zinv3 = fe_mul(&zinv2, &zinv);
        out.push(Affine { x: fe_canon(&fe_mul(&p.x, &zinv2)), y: fe_canon(&fe_mul(&p.y, &zinv3)) });
    }
    out.reverse();
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// Fixed-base tables.
// ---------------------------------------------------------------------------------------------

/// Window width of the fixed-base tables.
const W: usize = 8;
/// Windows per 256-bit scalar.
const WINDOWS: usize = 256usize.div_ceil(W);
/// Points per window: `d * 2^(W*i) * P` for `d` in `1..=2^(W-1)` (signed digits).
const ENTRIES: usize = 1 << (W - 1);

/// `table[i * ENTRIES + d - 1] = d * 2^(W*i) * base`, affine. `None` only if `base` has small
/// order, which no P-256 point other than the identity has.
fn build_table(base: &Affine) -> Option<Vec<Affine>> {
    let mut table = Vec::with_capacity(WINDOWS * ENTRIES);
    let mut b = *base;
    let mut jac = Vec::with_capacity(ENTRIES + 1);
    for _ in 0..WINDOWS {
        jac.clear();
        let mut acc = Jac::from_affine(&b);
        jac.push(acc);
        for _ in 1..ENTRIES {
            acc = jac_add_affine(&acc, &b);
            jac.push(acc);
        }
        // 2^W * b = 2 * (2^(W-1) * b), the next window's base.
        jac.push(jac_double(&acc));
        let mut affine = batch_to_affine(&jac)?;
        b = affine.pop()?;
        table.extend_from_slice(&affine);
    }
    Some(table)
}

/// Signed fixed-window digits of `k < 2^255`: `k = sum d_i * 2^(w*i)`, `d_i` in
/// `[-2^(w-1), 2^(w-1)]`, `ceil(256 / w)` digits (so the top digit never carries out).
fn recode_signed(k: &Fe, w: usize, out: &mut [i32]) {
    let half = 1i32 << (w - 1);
    let full = 1i32 << w;
    let mask = (1u64 << w) - 1;
    let mut carry = 0i32;
    for (i, d) in out.iter_mut().enumerate() {
        let bit = i * w;
        let word = bit / 32;
        let shift = bit % 32;
        let lo = u64::from(k.get(word).copied().unwrap_or(0));
        let hi = u64::from(k.get(word + 1).copied().unwrap_or(0));
        let raw = ((((hi << 32) | lo) >> shift) & mask) as i32;
        let v = raw + carry;
        if v > half {
            *d = v - full;
            carry = 1;
        } else {
            *d = v;
            carry = 0;
        }
    }
}

/// A scalar `u < n` as `(|u|, negated)` with `|u| <= (n - 1) / 2 < 2^255`: `u` itself, or `n - u`
/// when that is smaller (then the point it multiplies is negated instead).
fn half_scalar(u: &Fe) -> (Fe, bool) {
    if ge(&HALF_N, u) {
        (*u, false)
    } else {
        (sub_words(&N, u), true)
    }
}

/// Add `sum d_i * 2^(W*i) * base` (scaled by -1 when `negate`) to `acc` using `table`.
fn add_fixed_base(acc: &mut Jac, table: &[Affine], k: &Fe, negate: bool) -> Option<()> {
    let mut digits = [0i32; WINDOWS];
    recode_signed(k, W, &mut digits);
    for (window, &d) in table.chunks_exact(ENTRIES).zip(digits.iter()) {
        if d == 0 {
            continue;
        }
        let point = window.get(d.unsigned_abs() as usize - 1)?;
        *acc = if (d < 0) != negate { jac_add_affine(acc, &neg_affine(point)) } else { jac_add_affine(acc, point) };
    }
    Some(())
}

fn generator_table() -> &'static [Affine] {
    static TABLE: OnceLock<Vec<Affine>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let g = p256::AffinePoint::GENERATOR.to_encoded_point(false);
        affine_from_encoded(&g).and_then(|g| build_table(&g)).unwrap_or_default()
    })
}

fn affine_from_encoded(point: &p256::EncodedPoint) -> Option<Affine> {
    let x: [u8; 32] = (*point.x()?).into();
    let y: [u8; 32] = (*point.y()?).into();
    Some(Affine { x: words_from_be(&x), y: words_from_be(&y) })
}

/// Build the generator's table now instead of on the first verification (about as costly as
/// one [`FastP256Key::new`]); call it where a pause is harmless, e.g. at configuration.
pub fn precompute_generator() {
    let _ = generator_table();
}

// ---------------------------------------------------------------------------------------------
// Scalars modulo n (public values only: all of this is variable-time).
// ---------------------------------------------------------------------------------------------

/// (n - 1) / 2, little-endian words.
const HALF_N: Fe =
    [0x7e31_92a8, 0x79dc_e561, 0xd38b_cf42, 0xde73_7d56, 0xffff_ffff, 0x7fff_ffff, 0x8000_0000, 0x7fff_ffff];
/// 2^256 mod n = 2^256 - n, the Montgomery R for arithmetic mod n.
const R_MOD_N: Fe = [0x039c_daaf, 0x0c46_353d, 0x58e8_617b, 0x4319_0552, 0, 0, 0xffff_ffff, 0];
/// -n^(-1) mod 2^32.
const N0_INV: u32 = 0xee00_bc4f;

/// Montgomery product `a * b / 2^256 mod n` for `a, b < n`; the result is in `[0, n)`.
fn mont_mul_n(a: &Fe, b: &Fe) -> Fe {
    let mut t = [0u32; 8];
    // Bits 256 and up of the running value (it stays below 2n, so this is 0 or 1 between rounds).
    let mut top = 0u64;
    for &ai in a {
        let mut carry = 0u64;
        for (tj, &bj) in t.iter_mut().zip(b.iter()) {
            let s = u64::from(*tj) + u64::from(ai) * u64::from(bj) + carry;
            *tj = s as u32;
            carry = s >> 32;
        }
        top += carry;
        let m = t.first().copied().unwrap_or(0).wrapping_mul(N0_INV);
        let mut carry = 0u64;
        for (tj, &nj) in t.iter_mut().zip(N.iter()) {
            let s = u64::from(*tj) + u64::from(m) * u64::from(nj) + carry;
            *tj = s as u32;
            carry = s >> 32;
        }
        // The low word is now zero: divide by 2^32.
        let s = top + carry;
        t.rotate_left(1);
        if let Some(last) = t.last_mut() {
            *last = s as u32;
        }
        top = s >> 32;
    }
    if top != 0 || ge(&t, &N) {
        sub_words(&t, &N)
    } else {
        t
    }
}

type U4 = [u64; 4];

fn to_u4(a: &Fe) -> U4 {
    let [a0, a1, a2, a3, a4, a5, a6, a7] = a.map(u64::from);
    [a0 | a1 << 32, a2 | a3 << 32, a4 | a5 << 32, a6 | a7 << 32]
}

fn from_u4(a: &U4) -> Fe {
    let [a0, a1, a2, a3] = *a;
    [
        a0 as u32,
        (a0 >> 32) as u32,
        a1 as u32,
        (a1 >> 32) as u32,
        a2 as u32,
        (a2 >> 32) as u32,
        a3 as u32,
        (a3 >> 32) as u32,
    ]
}

fn u4_ge(a: &U4, b: &U4) -> bool {
    for (x, y) in a.iter().rev().zip(b.iter().rev()) {
        if x != y {
            return x > y;
        }
    }
    true
}

/// `a - b` (wrapping) and the borrow out.
fn u4_sub(a: &U4, b: &U4) -> (U4, bool) {
    let [a0, a1, a2, a3] = *a;
    let [b0, b1, b2, b3] = *b;
    let (r0, c0) = a0.overflowing_sub(b0);
    let (r1, c1) = sbb(a1, b1, c0);
    let (r2, c2) = sbb(a2, b2, c1);
    let (r3, c3) = sbb(a3, b3, c2);
    ([r0, r1, r2, r3], c3)
}

#[inline(always)]
fn sbb(a: u64, b: u64, borrow: bool) -> (u64, bool) {
    let (t, c1) = a.overflowing_sub(b);
    let (t, c2) = t.overflowing_sub(u64::from(borrow));
    (t, c1 || c2)
}

#[inline(always)]
fn adc(a: u64, b: u64, carry: bool) -> (u64, bool) {
    let (t, c1) = a.overflowing_add(b);
    let (t, c2) = t.overflowing_add(u64::from(carry));
    (t, c1 || c2)
}

/// `a - b mod n` for `a, b < n`.
fn u4_sub_mod_n(a: &U4, b: &U4, n: &U4) -> U4 {
    let (d, borrow) = u4_sub(a, b);
    if !borrow {
        return d;
    }
    let [d0, d1, d2, d3] = d;
    let [n0, n1, n2, n3] = *n;
    let (r0, c) = d0.overflowing_add(n0);
    let (r1, c) = adc(d1, n1, c);
    let (r2, c) = adc(d2, n2, c);
    let (r3, _) = adc(d3, n3, c);
    [r0, r1, r2, r3]
}

/// `x / 2 mod n` for `x < n`, n odd.
fn u4_half_mod_n(x: &U4, n: &U4) -> U4 {
    let [mut x0, mut x1, mut x2, mut x3] = *x;
    let mut top = 0u64;
    if x0 & 1 == 1 {
        let [n0, n1, n2, n3] = *n;
        let c;
        (x0, c) = x0.overflowing_add(n0);
        let (y1, c) = adc(x1, n1, c);
        let (y2, c) = adc(x2, n2, c);
        let (y3, c) = adc(x3, n3, c);
        (x1, x2, x3, top) = (y1, y2, y3, u64::from(c));
    }
    [x0 >> 1 | x1 << 63, x1 >> 1 | x2 << 63, x2 >> 1 | x3 << 63, x3 >> 1 | top << 63]
}

/// Strip the trailing zero bits of `u` (non-zero), halving `x` mod n as many times.
fn strip_twos(u: &mut U4, x: &mut U4, n: &U4) {
    loop {
        let [u0, u1, u2, u3] = *u;
        if u0 & 1 == 1 {
            return;
        }
        let k = if u0 == 0 { 63 } else { u0.trailing_zeros() };
        *u = [u0 >> k | u1 << (64 - k), u1 >> k | u2 << (64 - k), u2 >> k | u3 << (64 - k), u3 >> k];
        for _ in 0..k {
            *x = u4_half_mod_n(x, n);
        }
    }
}

/// `c / a mod n` for `0 < a < n` and `c < n`, by the binary extended Euclidean algorithm
/// (variable time). Invariants: `x1 * a = c * u` and `x2 * a = c * v (mod n)`.
fn scalar_div(c: &Fe, a: &Fe) -> Option<Fe> {
    let n = to_u4(&N);
    let one: U4 = [1, 0, 0, 0];
    let (mut u, mut v, mut x1, mut x2) = (to_u4(a), n, to_u4(c), [0u64; 4]);
    if u == [0; 4] {
        return None;
    }
    // Each round removes at least one bit from u or v (both below 2^256); 600 rounds is ample.
    for _ in 0..600 {
        strip_twos(&mut u, &mut x1, &n);
        strip_twos(&mut v, &mut x2, &n);
        if u == one {
            return Some(from_u4(&x1));
        }
        if v == one {
            return Some(from_u4(&x2));
        }
        if u == v {
            // gcd(a, n) = u > 1: not invertible (cannot happen for prime n and 0 < a < n).
            return None;
        }
        if u4_ge(&u, &v) {
            u = u4_sub(&u, &v).0;
            x1 = u4_sub_mod_n(&x1, &x2, &n);
        } else {
            v = u4_sub(&v, &u).0;
            x2 = u4_sub_mod_n(&x2, &x1, &n);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// ECDSA.
// ---------------------------------------------------------------------------------------------

/// The parts of verification that do not depend on how `u2 * Q` is computed.
struct Prepared {
    r: Fe,
    u1: (Fe, bool),
    u2: (Fe, bool),
}

fn prepare(msg: &[u8], sig: &[u8]) -> Option<Prepared> {
    if sig.len() != 64 {
        return None;
    }
    let r = words_from_be(&sig.get(..32)?.try_into().ok()?);
    let s = words_from_be(&sig.get(32..)?.try_into().ok()?);
    // r and s in [1, n - 1].
    if r == FE_ZERO || s == FE_ZERO || ge(&r, &N) || ge(&s, &N) {
        return None;
    }
    // e = SHA-256(msg) as an integer, reduced mod n (it is below 2^256 < 2n).
    let digest: [u8; 32] = Sha256::digest(msg).into();
    let mut e = words_from_be(&digest);
    if ge(&e, &N) {
        e = sub_words(&e, &N);
    }
    // w = 2^256 / s mod n, so Montgomery products with w are plain products with 1 / s.
    let w = scalar_div(&R_MOD_N, &s)?;
    let u1 = mont_mul_n(&e, &w);
    let u2 = mont_mul_n(&r, &w);
    Some(Prepared { r, u1: half_scalar(&u1), u2: half_scalar(&u2) })
}

/// `x(R) mod n == r` for a Jacobian R, without inverting Z: `X == r' * Z^2` for `r' = r` and, when
/// `r + n < p`, `r' = r + n` (x(R) is in [0, p), so x(R) mod n is x or x - n).
fn x_matches(rp: &Jac, r: &Fe) -> bool {
    if rp.inf {
        return false;
    }
    let z2 = fe_sq(&rp.z);
    if fe_eq(&rp.x, &fe_mul(r, &z2)) {
        return true;
    }
    match add_words(r, &N) {
        Some(rn) if !ge(&rn, &P) => fe_eq(&rp.x, &fe_mul(&rn, &z2)),
        _ => false,
    }
}

/// A P-256 verifying key with a fixed-base table for fast, variable-time ES256 verification.
///
/// [`FastP256Key::new`] costs about as much as 80 verifications (it adds 4096 points and inverts
/// 32 field elements; about 2.7 ms in wasm), so build one per configured or JWKS key, keep it, and
/// share it (e.g. in an `Rc`/`Arc`) rather than clone it. Each key holds
/// [`FastP256Key::table_bytes`] = 256 KiB; the generator's table (another 256 KiB, shared) is built
/// once per process on first use, or by [`precompute_generator`]. For a key seen once (a DPoP
/// proof's `jwk`), use [`verify_once`].
#[derive(Clone)]
pub struct FastP256Key {
    /// `WINDOWS * ENTRIES` affine points: `table[i * ENTRIES + d - 1] = d * 2^(8i) * Q`. Empty
    /// only if precomputation failed, which cannot happen for a valid key; then every
    /// verification fails closed.
    table: Vec<Affine>,
}

impl std::fmt::Debug for FastP256Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FastP256Key({} table bytes)", self.table_bytes())
    }
}

impl FastP256Key {
    /// Precompute the table for `key`.
    #[must_use]
    pub fn new(key: &VerifyingKey) -> FastP256Key {
        let q = uncompressed(key);
        let table = affine_from_encoded(&q).and_then(|q| build_table(&q)).unwrap_or_default();
        FastP256Key { table }
    }

    /// The table for `key`, shared with every other holder of the same key in this process (a Wasm
    /// VM: every listener's configuration, every JWKS refresh): built only when no live holder has
    /// it, so N listeners trusting one issuer key hold one 256 KiB table, not N.
    #[must_use]
    pub fn shared(key: &VerifyingKey) -> std::sync::Arc<FastP256Key> {
        use std::sync::{Arc, Mutex, Weak};
        type Cache = Vec<(Box<[u8]>, Weak<FastP256Key>)>;
        static CACHE: Mutex<Cache> = Mutex::new(Vec::new());
        let id: Box<[u8]> = uncompressed(key).as_bytes().into();
        let Ok(mut cache) = CACHE.lock() else {
            return Arc::new(FastP256Key::new(key));
        };
        cache.retain(|(_, w)| w.strong_count() > 0);
        if let Some(live) = cache.iter().find(|(k, _)| *k == id).and_then(|(_, w)| w.upgrade()) {
            return live;
        }
        let fresh = Arc::new(FastP256Key::new(key));
        cache.push((id, Arc::downgrade(&fresh)));
        fresh
    }

    /// Verify an ES256 signature (`sig` = `r || s`, 64 bytes, as in JWS) over `msg` (hashed here
    /// with SHA-256). Same acceptance as `p256::ecdsa::VerifyingKey::verify`.
    #[must_use]
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        self.verify_inner(msg, sig).unwrap_or(false)
    }

    fn verify_inner(&self, msg: &[u8], sig: &[u8]) -> Option<bool> {
        let g_table = generator_table();
        if self.table.len() != WINDOWS * ENTRIES || g_table.len() != WINDOWS * ENTRIES {
            return None;
        }
        let prep = prepare(msg, sig)?;
        let mut acc = JAC_INF;
        add_fixed_base(&mut acc, g_table, &prep.u1.0, prep.u1.1)?;
        add_fixed_base(&mut acc, &self.table, &prep.u2.0, prep.u2.1)?;
        Some(x_matches(&acc, &prep.r))
    }

    /// Bytes held by this key's table (the shared generator table is not counted).
    #[must_use]
    pub fn table_bytes(&self) -> usize {
        self.table.len() * std::mem::size_of::<Affine>()
    }
}

/// The key's uncompressed SEC1 encoding (`04 || x || y`): one copy of `p256`'s conversion for
/// every caller (the filter's foreign-function verifier builds the key's SPKI from it).
#[inline(never)]
pub fn uncompressed(key: &VerifyingKey) -> p256::EncodedPoint {
    key.as_affine().to_encoded_point(false)
}

/// Window width for the one-shot (no per-key table) path.
const W_ONESHOT: usize = 5;
const WINDOWS_ONESHOT: usize = 256usize.div_ceil(W_ONESHOT);

/// Verify with a key that is used once (e.g. a DPoP proof's embedded `jwk`), without building a
/// per-key table: `u1 * G` uses the shared generator table, `u2 * Q` a 5-bit signed window
/// (255 doublings, at most 52 additions). Same acceptance as [`FastP256Key::verify`]. About 4x
/// the cost of a verification with a table, and still several times faster than `p256` in wasm.
#[must_use]
pub fn verify_once(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    verify_once_inner(key, msg, sig).unwrap_or(false)
}

fn verify_once_inner(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> Option<bool> {
    let g_table = generator_table();
    if g_table.len() != WINDOWS * ENTRIES {
        return None;
    }
    let prep = prepare(msg, sig)?;
    let q = affine_from_encoded(&uncompressed(key))?;
    let q = if prep.u2.1 { neg_affine(&q) } else { q };
    // small[d - 1] = d * Q for d in 1..=16.
    let mut small = Vec::with_capacity(1 << (W_ONESHOT - 1));
    let qj = Jac::from_affine(&q);
    small.push(qj);
    let mut acc = jac_double(&qj);
    small.push(acc);
    for _ in 2..(1 << (W_ONESHOT - 1)) {
        acc = jac_add_affine(&acc, &q);
        small.push(acc);
    }
    let mut digits = [0i32; WINDOWS_ONESHOT];
    recode_signed(&prep.u2.0, W_ONESHOT, &mut digits);
    let mut acc = JAC_INF;
    for &d in digits.iter().rev() {
        for _ in 0..W_ONESHOT {
            acc = jac_double(&acc);
        }
        if d != 0 {
            let p = small.get(d.unsigned_abs() as usize - 1)?;
            acc = if d < 0 { jac_add(&acc, &neg_jac(p)) } else { jac_add(&acc, p) };
        }
    }
    add_fixed_base(&mut acc, g_table, &prep.u1.0, prep.u1.1)?;
    Some(x_matches(&acc, &prep.r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::{Signer, Verifier};
    use p256::ecdsa::{Signature, SigningKey};
    use p256::elliptic_curve::bigint::{Encoding, NonZero, U512};
    use p256::elliptic_curve::ops::{Invert, Reduce};
    use p256::elliptic_curve::{Group, PrimeField};
    use p256::{FieldBytes, ProjectivePoint, Scalar, U256};

    // The wire crate has no RNG dev-dependency (`rand_core` is optional, behind `sign`), so the
    // tests draw from splitmix64 seeded per run; every failure message carries the seed, and
    // `P256_FAST_SEED=<seed>` replays a run. Keys come from random secret scalars and are signed
    // with p256's deterministic (RFC 6979) signer.
    struct Rng {
        state: u64,
        seed: u64,
    }

    impl Rng {
        fn new() -> Rng {
            use std::hash::{BuildHasher, Hasher};
            let seed = std::env::var("P256_FAST_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| std::collections::hash_map::RandomState::new().build_hasher().finish());
            Rng { state: seed, seed }
        }
        fn next_u64(&mut self) -> u64 {
            self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn next_u32(&mut self) -> u32 {
            (self.next_u64() >> 32) as u32
        }
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.next_u64() as u8;
            }
        }
        fn bytes32(&mut self) -> [u8; 32] {
            let mut b = [0u8; 32];
            self.fill(&mut b);
            b
        }
        /// A field-sized value biased towards edge limbs (0, 1, all ones) to exercise carries.
        fn fe(&mut self) -> Fe {
            let mut w = [0u32; 8];
            for x in w.iter_mut() {
                *x = match self.next_u32() % 8 {
                    0 => 0,
                    1 => u32::MAX,
                    2 => 1,
                    _ => self.next_u32(),
                };
            }
            w
        }
        fn signing_key(&mut self) -> SigningKey {
            loop {
                if let Ok(k) = SigningKey::from_bytes(&FieldBytes::from(self.bytes32())) {
                    return k;
                }
            }
        }
        fn point(&mut self) -> ProjectivePoint {
            ProjectivePoint::GENERATOR * <Scalar as Reduce<U256>>::reduce_bytes(&FieldBytes::from(self.bytes32()))
        }
    }

    fn fe_to_u256(a: &Fe) -> U256 {
        let mut bytes = [0u8; 32];
        for (chunk, w) in bytes.rchunks_exact_mut(4).zip(a.iter()) {
            chunk.copy_from_slice(&w.to_be_bytes());
        }
        U256::from_be_slice(&bytes)
    }

    fn u256_to_fe(u: &U256) -> Fe {
        words_from_be(&u.to_be_bytes())
    }

    /// `a * b mod p` with crypto-bigint's wide multiplication and division.
    fn ref_mul(a: &Fe, b: &Fe) -> U256 {
        let (lo, hi) = fe_to_u256(a).mul_wide(&fe_to_u256(b));
        let wide: U512 = hi.concat(&lo);
        let p: U512 = U256::ZERO.concat(&fe_to_u256(&P));
        wide.rem(&NonZero::new(p).unwrap()).split().1
    }

    fn ref_reduce(a: &Fe) -> U256 {
        ref_mul(a, &FE_ONE)
    }

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    #[test]
    fn constants() {
        let n = fe_to_u256(&N);
        assert_eq!(n.to_be_bytes(), hex32("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551"));
        assert_eq!(
            fe_to_u256(&P).to_be_bytes(),
            hex32("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff")
        );
        assert_eq!(fe_to_u256(&HALF_N), n.shr_vartime(1));
        assert_eq!(fe_to_u256(&R_MOD_N), U256::ZERO.wrapping_sub(&n));
        assert_eq!(N0_INV.wrapping_mul(N[0]), u32::MAX);
        assert_eq!(std::mem::size_of::<Affine>(), 64);
        assert_eq!((WINDOWS, ENTRIES), (32, 128));
    }

    #[test]
    fn field_ops_match_reference() {
        let mut rng = Rng::new();
        let seed = rng.seed;
        let mut values = vec![
            FE_ZERO,
            FE_ONE,
            P,
            sub_words(&P, &FE_ONE),
            add_words(&P, &FE_ONE).unwrap(),
            [u32::MAX; 8],
            sub_words(&[u32::MAX; 8], &FE_ONE),
            [0, 0, 0, 0, 0, 0, 0, 0x8000_0000],
            [u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX, u32::MAX, 0],
            N,
        ];
        for _ in 0..1500 {
            values.push(rng.fe());
        }
        let p = fe_to_u256(&P);
        let eight: Fe = [8, 0, 0, 0, 0, 0, 0, 0];
        for (i, a) in values.iter().enumerate() {
            for b in [&values[(i * 7 + 3) % values.len()], &values[i % 10]] {
                let (ua, ub) = (ref_reduce(a), ref_reduce(b));
                let ctx = format!("seed {seed} a {a:x?} b {b:x?}");
                assert_eq!(fe_to_u256(&fe_canon(&fe_mul(a, b))), ref_mul(a, b), "mul {ctx}");
                assert_eq!(fe_to_u256(&fe_canon(&fe_add(a, b))), ua.add_mod(&ub, &p), "add {ctx}");
                assert_eq!(fe_to_u256(&fe_canon(&fe_sub(a, b))), ua.sub_mod(&ub, &p), "sub {ctx}");
                let want = ua.sub_mod(&ref_mul(&eight, b), &p);
                assert_eq!(fe_to_u256(&fe_canon(&fe_lin(1, a, -8, b))), want, "lin {ctx}");
                assert_eq!(fe_eq(a, b), ua == ub, "eq {ctx}");
            }
            let ctx = format!("seed {seed} a {a:x?}");
            let ua = ref_reduce(a);
            assert_eq!(fe_to_u256(&fe_canon(&fe_sq(a))), ref_mul(a, a), "sq {ctx}");
            assert_eq!(fe_to_u256(&fe_canon(&fe_neg(a))), ua.neg_mod(&p), "neg {ctx}");
            assert_eq!(fe_is_zero(a), ua == U256::ZERO, "is_zero {ctx}");
            if i % 20 == 0 && !fe_is_zero(a) {
                assert_eq!(ref_mul(&fe_invert(a), a), U256::ONE, "invert {ctx}");
            }
        }
        // Long chains: outputs (weakly reduced) fed back as inputs.
        let mut x = rng.fe();
        let mut ux = ref_reduce(&x);
        for _ in 0..2000 {
            let y = rng.fe();
            x = fe_mul(&x, &y);
            ux = ref_mul(&u256_to_fe(&ux), &y);
            assert_eq!(fe_to_u256(&fe_canon(&x)), ux, "seed {seed}");
            x = fe_sq(&x);
            ux = ref_mul(&u256_to_fe(&ux), &u256_to_fe(&ux));
            assert_eq!(fe_to_u256(&fe_canon(&x)), ux, "seed {seed}");
        }
    }

    fn scalar_of(a: &Fe) -> Scalar {
        Scalar::from_repr(FieldBytes::from(fe_to_u256(a).to_be_bytes())).unwrap()
    }

    #[test]
    fn scalar_ops_match_p256() {
        let mut rng = Rng::new();
        let seed = rng.seed;
        assert_eq!(scalar_div(&FE_ONE, &FE_ZERO), None);
        let minus_one = sub_words(&N, &FE_ONE);
        let mut values = vec![
            FE_ONE,
            minus_one,
            HALF_N,
            add_words(&HALF_N, &FE_ONE).unwrap(),
            [2, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0x8000_0000],
        ];
        for _ in 0..600 {
            let mut a = rng.fe();
            while ge(&a, &N) || a == FE_ZERO {
                a = rng.fe();
            }
            values.push(a);
        }
        for (i, a) in values.iter().enumerate() {
            let b = &values[(i * 13 + 1) % values.len()];
            let (sa, sb) = (scalar_of(a), scalar_of(b));
            let ctx = format!("seed {seed} a {a:x?} b {b:x?}");
            let inv = sa.invert_vartime().unwrap();
            // scalar_div(R, a), then a Montgomery product: the plain b / a.
            let w = scalar_div(&R_MOD_N, a).unwrap();
            assert_eq!(scalar_of(&mont_mul_n(b, &w)), sb * inv, "b / a {ctx}");
            assert_eq!(scalar_of(&scalar_div(b, a).unwrap()), sb * inv, "div {ctx}");
            let (h, neg) = half_scalar(a);
            assert!(!ge(&h, &[0, 0, 0, 0, 0, 0, 0, 0x8000_0000]), "half {ctx}");
            assert_eq!(if neg { -scalar_of(&h) } else { scalar_of(&h) }, sa, "half {ctx}");
        }
    }

    #[test]
    fn recoding_round_trips() {
        let mut rng = Rng::new();
        for w in [4usize, 5, 6, 7, 8] {
            for _ in 0..200 {
                let mut k = rng.fe();
                k[7] &= 0x7fff_ffff;
                let mut digits = vec![0i32; 256usize.div_ceil(w)];
                recode_signed(&k, w, &mut digits);
                let mut acc = Scalar::ZERO;
                let base = Scalar::from(1u64 << w);
                for &d in digits.iter().rev() {
                    assert!(d.unsigned_abs() <= 1 << (w - 1));
                    acc *= base;
                    let m = Scalar::from(u64::from(d.unsigned_abs()));
                    acc += if d < 0 { -m } else { m };
                }
                let ks = <Scalar as Reduce<U256>>::reduce_bytes(&FieldBytes::from(fe_to_u256(&k).to_be_bytes()));
                assert_eq!(acc, ks, "seed {} w {w} k {k:x?}", rng.seed);
            }
        }
    }

    fn to_affine(p: &ProjectivePoint) -> Affine {
        affine_from_encoded(&p.to_affine().to_encoded_point(false)).unwrap()
    }

    fn jac_to_affine(p: &Jac) -> Affine {
        batch_to_affine(&[*p]).unwrap()[0]
    }

    #[test]
    fn group_ops_match_p256() {
        let mut rng = Rng::new();
        for _ in 0..40 {
            let (a, b) = (rng.point(), rng.point());
            let (aa, ba) = (to_affine(&a), to_affine(&b));
            let (aj, bj) = (Jac::from_affine(&aa), Jac::from_affine(&ba));
            // Doubling reached through the addition formulas.
            assert_eq!(jac_to_affine(&jac_add_affine(&aj, &aa)), to_affine(&a.double()));
            let a2 = jac_double(&aj);
            assert_eq!(jac_to_affine(&jac_add_affine(&a2, &ba)), to_affine(&(a.double() + b)));
            let b2 = jac_double(&bj);
            assert_eq!(jac_to_affine(&jac_add(&a2, &b2)), to_affine(&(a.double() + b.double())));
            assert_eq!(jac_to_affine(&jac_add(&a2, &a2)), to_affine(&a.double().double()));
            assert!(jac_add_affine(&aj, &neg_affine(&aa)).inf);
            assert!(jac_add(&a2, &neg_jac(&a2)).inf);
            assert!(jac_add_affine(&jac_add_affine(&JAC_INF, &aa), &neg_affine(&aa)).inf);
            assert_eq!(jac_to_affine(&jac_add(&JAC_INF, &a2)), to_affine(&a.double()));
            assert!(jac_double(&JAC_INF).inf);
        }
        // Table entries against p256's scalar multiplication.
        let g = ProjectivePoint::GENERATOR;
        let table = generator_table();
        assert_eq!(table.len(), WINDOWS * ENTRIES);
        for (i, d) in [(0usize, 1u64), (0, 2), (0, 128), (1, 1), (5, 77), (17, 3), (31, 1), (31, 127), (31, 128)] {
            let k = Scalar::from(d) * Scalar::from(2u64).pow_vartime(&[(W * i) as u64]);
            assert_eq!(table[i * ENTRIES + d as usize - 1], to_affine(&(g * k)), "window {i} digit {d}");
        }
    }

    fn p256_accepts(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
        Signature::from_slice(sig).is_ok_and(|s| key.verify(msg, &s).is_ok())
    }

    /// Both paths must give p256's answer; returns it.
    fn check(fast: Option<&FastP256Key>, key: &VerifyingKey, msg: &[u8], sig: &[u8], ctx: &str) -> bool {
        let want = p256_accepts(key, msg, sig);
        if let Some(fast) = fast {
            assert_eq!(fast.verify(msg, sig), want, "table path disagrees with p256: {ctx}");
        }
        assert_eq!(verify_once(key, msg, sig), want, "one-shot path disagrees with p256: {ctx}");
        want
    }

    /// How `check_case` compares: against p256 itself, or (cheaper in debug builds, where p256
    /// verifies in milliseconds) against p256's known answer for the case.
    #[derive(Clone, Copy)]
    struct Mode<'a> {
        table: Option<&'a FastP256Key>,
        one_shot: bool,
        reference: bool,
    }

    fn expect(mode: Mode<'_>, key: &VerifyingKey, msg: &[u8], sig: &[u8], expected: bool, ctx: &str) {
        if mode.reference {
            assert_eq!(p256_accepts(key, msg, sig), expected, "p256 itself: {ctx}");
        }
        if let Some(fast) = mode.table {
            assert_eq!(fast.verify(msg, sig), expected, "table path disagrees with p256: {ctx}");
        }
        if mode.one_shot {
            assert_eq!(verify_once(key, msg, sig), expected, "one-shot path disagrees with p256: {ctx}");
        }
    }

    /// One random message and signature, and variants of it: valid; high-S (p256 0.13 accepts
    /// it); then by turns a flipped message bit, a flipped signature bit, a different key, random
    /// bytes; wrong lengths.
    fn check_case(rng: &mut Rng, sk: &SigningKey, mode: Mode<'_>, i: usize) {
        let vk = sk.verifying_key();
        let mut msg = vec![0u8; 1 + rng.next_u32() as usize % 600];
        rng.fill(&mut msg);
        let sig: Signature = sk.sign(&msg);
        let bytes = sig.to_bytes().to_vec();
        let ctx = format!("seed {} case {i}", rng.seed);
        expect(mode, vk, &msg, &bytes, true, &format!("valid, {ctx}"));
        let (r, s) = sig.split_scalars();
        let high = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap().to_bytes().to_vec();
        expect(mode, vk, &msg, &high, true, &format!("high-S, {ctx}"));
        let bit = rng.next_u32() as usize;
        match i % 4 {
            0 => {
                let mut m2 = msg.clone();
                m2[bit / 8 % msg.len()] ^= 1 << (bit % 8);
                expect(mode, vk, &m2, &bytes, false, &format!("tampered message, {ctx}"));
            }
            1 => {
                let mut s2 = bytes.clone();
                s2[bit / 8 % 64] ^= 1 << (bit % 8);
                expect(mode, vk, &msg, &s2, false, &format!("tampered signature, {ctx}"));
            }
            2 => {
                let other = *rng.signing_key().verifying_key();
                let mode = Mode { table: None, one_shot: true, ..mode };
                expect(mode, &other, &msg, &bytes, false, &format!("other key, {ctx}"));
            }
            _ => {
                let mut junk = [0u8; 64];
                rng.fill(&mut junk);
                expect(mode, vk, &msg, &junk, false, &format!("random bytes, {ctx}"));
            }
        }
        for bad in [&bytes[..63], &[&bytes[..], &[0]].concat(), &[]] {
            if let Some(fast) = mode.table {
                assert!(!fast.verify(&msg, bad));
            }
            assert!(!verify_once(vk, &msg, bad));
        }
    }

    #[test]
    fn agrees_with_p256_on_random_keys_one_shot() {
        // 200 random keys, one random message and signature each with its variants, every answer
        // compared with p256's.
        let mut rng = Rng::new();
        for i in 0..200 {
            let sk = rng.signing_key();
            check_case(&mut rng, &sk, Mode { table: None, one_shot: true, reference: true }, i);
        }
    }

    #[test]
    fn agrees_with_p256_on_random_keys_tables() {
        // Building a table costs about 70 ms in a debug build, so: 20 random keys with tables, 26
        // random messages and signatures each (520), with variants; every fifth case is also run
        // through p256 and the one-shot path.
        let mut rng = Rng::new();
        for k in 0..20 {
            let sk = rng.signing_key();
            let fast = FastP256Key::new(sk.verifying_key());
            assert_eq!(fast.table_bytes(), 256 * 1024);
            for j in 0..26 {
                let full = j % 5 == 0;
                let mode = Mode { table: Some(&fast), one_shot: full, reference: full };
                check_case(&mut rng, &sk, mode, k * 26 + j);
            }
        }
    }

    #[test]
    fn out_of_range_r_and_s_are_rejected() {
        let mut rng = Rng::new();
        let sk = rng.signing_key();
        let vk = sk.verifying_key();
        let fast = FastP256Key::new(vk);
        let msg = b"out of range";
        let sig: Signature = sk.sign(msg);
        let bytes = sig.to_bytes().to_vec();
        let n = fe_to_u256(&N);
        let (r, s) = sig.split_scalars();
        let plus_n = |x: &Scalar| {
            let v = U256::from_be_slice(&x.to_bytes()).wrapping_add(&n);
            // x + n still fits 256 bits only for x < 2^256 - n; otherwise use n itself.
            if v < n {
                n.to_be_bytes()
            } else {
                v.to_be_bytes()
            }
        };
        let values = [[0u8; 32], n.to_be_bytes(), n.wrapping_add(&U256::ONE).to_be_bytes(), [0xff; 32]];
        for (half, extra) in [(0usize, plus_n(&r)), (1, plus_n(&s))] {
            for v in values.iter().chain([&extra]) {
                let mut bad = bytes.clone();
                bad[half * 32..half * 32 + 32].copy_from_slice(v);
                assert!(!check(Some(&fast), vk, msg, &bad, "out of range"));
            }
        }
        assert!(check(Some(&fast), vk, msg, &bytes, "in range"));
    }

    #[test]
    fn edge_keys_and_scalars() {
        // Secret scalars 1, 2, 127, 128, 129, ... and n minus those: Q = G, 2G, -G, ..., so u2 * Q
        // lands next to u1 * G (P == Q and P == -Q inside the additions) and on digit carries.
        let n = fe_to_u256(&N);
        for d in [1u64, 2, 3, 127, 128, 129, 255, 256, 257] {
            for neg in [false, true] {
                let mut db = U256::from_u64(d);
                if neg {
                    db = n.wrapping_sub(&db);
                }
                let sk = SigningKey::from_bytes(&FieldBytes::from(db.to_be_bytes())).unwrap();
                let vk = sk.verifying_key();
                let fast = FastP256Key::new(vk);
                for j in 0..3u8 {
                    let msg = [j; 40];
                    let sig: Signature = sk.sign(&msg);
                    assert!(check(Some(&fast), vk, &msg, &sig.to_bytes(), &format!("d {d} neg {neg}")));
                }
            }
        }
        // A digest of zero (e = 0, so u1 = 0) cannot be forced through SHA-256; exercise the
        // u1 = 0 and u2 = 0 corners of the scalar multiplication directly.
        let g = to_affine(&ProjectivePoint::GENERATOR);
        let mut acc = JAC_INF;
        add_fixed_base(&mut acc, generator_table(), &FE_ZERO, false).unwrap();
        assert!(acc.inf);
        add_fixed_base(&mut acc, generator_table(), &FE_ONE, true).unwrap();
        assert_eq!(jac_to_affine(&acc), neg_affine(&g));
        add_fixed_base(&mut acc, generator_table(), &FE_ONE, false).unwrap();
        assert!(acc.inf);
        assert!(!x_matches(&acc, &FE_ONE));
    }

    #[test]
    fn x_coordinate_check_with_r_plus_n() {
        // x(R) >= n (so r = x(R) - n) has probability about 2^-128 for a real signature; test the
        // comparison on a point built with x = n + small, in random Jacobian coordinates.
        let mut rng = Rng::new();
        let b = words_from_be(&hex32("5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b"));
        // p = 3 mod 4, so a square root of v is v^((p + 1) / 4).
        let exp = u256_to_fe(&fe_to_u256(&P).wrapping_add(&U256::ONE).shr_vartime(2));
        let pow = |a: &Fe, e: &Fe| {
            let mut acc = FE_ONE;
            for word in e.iter().rev() {
                for bit in (0..32).rev() {
                    acc = fe_sq(&acc);
                    if (word >> bit) & 1 == 1 {
                        acc = fe_mul(&acc, a);
                    }
                }
            }
            acc
        };
        let mut x = add_words(&N, &[5, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        loop {
            let rhs = fe_add(&fe_sub(&fe_mul(&fe_sq(&x), &x), &fe_small(3, &x)), &b);
            let y = pow(&rhs, &exp);
            if fe_eq(&fe_sq(&y), &rhs) {
                let z = rng.fe();
                let z2 = fe_sq(&z);
                let pt = Jac { x: fe_mul(&x, &z2), y: fe_mul(&y, &fe_mul(&z2, &z)), z, inf: false };
                let r = sub_words(&x, &N);
                assert!(x_matches(&pt, &r));
                assert!(!x_matches(&pt, &sub_words(&r, &FE_ONE)));
                // (r = x itself is out of range and refused by `prepare`, before `x_matches`.)
                break;
            }
            x = add_words(&x, &FE_ONE).unwrap();
        }
        // An ordinary point: x < n, r = x.
        let p = jac_double(&Jac::from_affine(&to_affine(&ProjectivePoint::GENERATOR)));
        let x = fe_canon(&jac_to_affine(&p).x);
        assert!(x_matches(&p, &x) != ge(&x, &N));
        assert!(!x_matches(&JAC_INF, &FE_ONE));
    }

    fn b64url(s: &str) -> Vec<u8> {
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let (mut bits, mut n, mut out) = (0u32, 0, Vec::new());
        for c in s.bytes() {
            bits = (bits << 6) | alphabet.iter().position(|&a| a == c).unwrap() as u32;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((bits >> n) as u8);
                bits &= (1 << n) - 1;
            }
        }
        out
    }

    #[test]
    fn rfc7515_appendix_a3() {
        let x = b64url("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU");
        let y = b64url("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0");
        let jws = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
        let point = p256::EncodedPoint::from_affine_coordinates(
            &FieldBytes::from(<[u8; 32]>::try_from(x).unwrap()),
            &FieldBytes::from(<[u8; 32]>::try_from(y).unwrap()),
            false,
        );
        let vk = VerifyingKey::from_encoded_point(&point).unwrap();
        let fast = FastP256Key::new(&vk);
        let dot = jws.rfind('.').unwrap();
        let (input, sig) = (&jws[..dot], b64url(&jws[dot + 1..]));
        assert_eq!(sig.len(), 64);
        assert!(p256_accepts(&vk, input.as_bytes(), &sig));
        assert!(fast.verify(input.as_bytes(), &sig));
        assert!(verify_once(&vk, input.as_bytes(), &sig));
        let tampered = input.replacen("eyJpc3MiOiJqb2Ui", "eyJpc3MiOiJqb2Uj", 1);
        assert!(!fast.verify(tampered.as_bytes(), &sig));
        assert!(!verify_once(&vk, tampered.as_bytes(), &sig));
        let mut flipped = sig.clone();
        flipped[10] ^= 0x40;
        assert!(!fast.verify(input.as_bytes(), &flipped));
    }

    #[test]
    fn shared_tables_are_one_per_live_key() {
        let mut rng = Rng::new();
        let (a, b) = (rng.signing_key(), rng.signing_key());
        let (va, vb) = (*a.verifying_key(), *b.verifying_key());
        let first = FastP256Key::shared(&va);
        let again = FastP256Key::shared(&va);
        assert!(std::sync::Arc::ptr_eq(&first, &again), "seed {}: one table per key", rng.seed);
        let other = FastP256Key::shared(&vb);
        assert!(!std::sync::Arc::ptr_eq(&first, &other), "seed {}: another key, another table", rng.seed);
        let sig: Signature = b.sign(b"shared");
        assert!(other.verify(b"shared", &sig.to_bytes()), "seed {}", rng.seed);
        assert!(!first.verify(b"shared", &sig.to_bytes()), "seed {}", rng.seed);
        drop((first, again));
        // Once no holder is left the table is freed; the next holder gets a fresh, working one.
        let rebuilt = FastP256Key::shared(&va);
        let sig: Signature = a.sign(b"again");
        assert!(rebuilt.verify(b"again", &sig.to_bytes()), "seed {}", rng.seed);
    }
}
