//! Issue 16 item 3 end to end: Envoy's `verify_signature` (BoringSSL) checks ES256 under keys
//! without tables (DPoP proofs) and RS256, and answers exactly as the pure-Rust path. Two Envoys
//! trust the same stand-in authority: one with the filter as shipped (the host verifier, said in
//! its log), one with `MISSIONGATE_VERIFIER=pure` in the VM's environment (the reference). Every
//! request goes to both; status and reason must be the same, and what they must be.

use missiongate_tests::authority::{Authority, Signer};
use missiongate_tests::envoy::{Envoy, Opts};
use missiongate_tests::http::{Req, Response};
use missiongate_tests::upstream::Upstream;
use missiongate_tests::{now, rand_id};
use missiongate_wire::b64;
use missiongate_wire::jose::SigningKey;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

const HTU: &str = "https://api.partner.example/v1/items";
/// P-256 group order, big-endian.
const N: &str = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";

struct World {
    _up: Upstream,
    auth: Authority,
    /// The filter as shipped: the host verifier.
    host: Envoy,
    /// `MISSIONGATE_VERIFIER=pure`.
    pure: Envoy,
    rsa: Signer,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let up = Upstream::start(None);
        let auth = Authority::start();
        let rsa = Signer::rsa("rsa-e2e", "a2048", "RS256");
        auth.publish_extra(rsa.clone());
        let host = Envoy::start(up.port, auth.port, Opts { concurrency: 1, ..Opts::default() });
        let env = "runtime: envoy.wasm.runtime.v8\n                  environment_variables: { key_values: { MISSIONGATE_VERIFIER: pure } }";
        let replace = vec![("runtime: envoy.wasm.runtime.v8".to_owned(), env.to_owned())];
        let pure = Envoy::start(up.port, auth.port, Opts { concurrency: 1, replace, ..Opts::default() });
        World { _up: up, auth, host, pure, rsa }
    })
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// `n - x` for 32-byte big-endian x < n.
fn n_minus(x: &[u8]) -> Vec<u8> {
    let n = unhex(N);
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = n[i] as i16 - x[i] as i16 - borrow;
        borrow = (d < 0) as i16;
        out[i] = d.rem_euclid(256) as u8;
    }
    out
}

/// The same compact JWS with its signature bytes replaced by `f(signature)`.
fn resign(jws: &str, f: impl FnOnce(Vec<u8>) -> Vec<u8>) -> String {
    let (rest, sig) = jws.rsplit_once('.').unwrap();
    format!("{rest}.{}", b64::encode(f(b64::decode(sig).unwrap())))
}

fn thumbprint(k: &SigningKey) -> String {
    k.public_jwk(None).thumbprint().unwrap()
}

/// A DPoP proof for GET HTU presenting `token`, carrying `holder`'s public key, signed by `signer`.
fn proof(signer: &SigningKey, holder: &SigningKey, token: &str) -> String {
    let j = serde_json::to_value(holder.public_jwk(None)).unwrap();
    let header =
        json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": {"kty": "EC", "crv": "P-256", "x": j["x"], "y": j["y"]}});
    let ath = b64::encode(Sha256::digest(token.as_bytes()));
    let claims = json!({"jti": rand_id("dp_"), "htm": "GET", "htu": HTU, "iat": now(), "ath": ath});
    signer.sign_compact(&header, &claims)
}

fn reason(r: &Response) -> String {
    if r.status == 200 {
        return String::new();
    }
    let b: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    b["reason"].as_str().unwrap_or_default().to_owned()
}

/// Send the same request to both gateways: both answer `status` with the same reason.
fn both(what: &str, req: &Req, status: u16, want_reason: &str) {
    let w = world();
    let (h, p) = (req.send(w.host.port), req.send(w.pure.port));
    assert_eq!((h.status, reason(&h)), (p.status, reason(&p)), "{what}: the host verifier and the pure path disagree");
    assert_eq!(h.status, status, "{what}: {}", h.text());
    assert_eq!(reason(&h), want_reason, "{what}");
}

/// Signatures a gateway's filter had Envoy's `verify_signature` answer (counted as the tick flushes).
const FOREIGN: &str = "wasmcustom.missiongate.verify.foreign";

/// Wait until the shipped gateway's `verify.foreign` has grown by at least `by` since `before`
/// (other tests of this file run at the same time and only add to it), and check that the pure
/// gateway, which defines the same counter, never counted one.
fn reached_boringssl(what: &str, before: u64, by: u64) {
    let w = world();
    let now = w.host.wait_counter(FOREIGN, before + by);
    assert!(
        now >= before + by,
        "{what}: only {} of at least {by} signatures were answered by verify_signature",
        now - before
    );
    assert!(w.pure.stats().lines().any(|l| l.starts_with(&format!("{FOREIGN}: "))), "{}", w.pure.stats());
    assert_eq!(w.pure.counter(FOREIGN), 0, "{what}: the pure gateway used verify_signature");
}

fn dpop(token: &str, proof: &str) -> Req {
    Req::new("GET", "/v1/items").header("Authorization", &format!("DPoP {token}")).header("DPoP", proof)
}

#[test]
fn each_gateway_says_which_verifier_it_uses() {
    let w = world();
    // A first request makes sure both VMs are configured.
    let (_, token) = w.auth.active_token();
    both("warm-up", &Req::new("GET", "/v1/items").bearer(&token), 200, "");
    assert!(
        w.host
            .logs()
            .contains("signatures verified by Envoy's verify_signature for ES256 without key tables and RS256"),
        "the shipped filter does not say it uses verify_signature"
    );
    assert!(w.pure.logs().contains("signatures verified in Rust (MISSIONGATE_VERIFIER=pure)"));
    assert!(!w.pure.logs().contains("verified by Envoy's verify_signature"));
}

#[test]
fn dpop_proofs_get_the_same_answer_from_boringssl_and_from_rust() {
    let w = world();
    let holder = SigningKey::generate_p256();
    let other = SigningKey::generate_p256();
    let id = rand_id("msn_");
    w.auth.set_mission(&id, "active");
    let mut claims = w.auth.claims(&id);
    claims["cnf"] = json!({"jkt": thumbprint(&holder)});
    let token = w.auth.token(&claims);
    let bad = "invalid_dpop_proof";
    let before = w.host.counter(FOREIGN);

    both("valid proof", &dpop(&token, &proof(&holder, &holder, &token)), 200, "");
    // The other valid S for the same (r, s): both accept (neither path normalises S).
    let high_s = resign(&proof(&holder, &holder, &token), |s| [&s[..32], &n_minus(&s[32..])[..]].concat());
    both("high-S proof", &dpop(&token, &high_s), 200, "");
    let p = proof(&holder, &holder, &token);
    let (head, _) = p.split_once('.').unwrap();
    let tampered = {
        let parts: Vec<&str> = p.split('.').collect();
        let mut payload: Value = serde_json::from_slice(&b64::decode(parts[1]).unwrap()).unwrap();
        payload["jti"] = json!(rand_id("dp_"));
        format!("{head}.{}.{}", b64::encode(payload.to_string().as_bytes()), parts[2])
    };
    both("tampered payload", &dpop(&token, &tampered), 401, bad);
    // Signed by another key, carrying the bound key.
    both("wrong key", &dpop(&token, &proof(&other, &holder, &token)), 401, bad);
    for bit in [0usize, 7, 100, 255, 256, 300, 511] {
        let flipped = resign(&proof(&holder, &holder, &token), |mut s| {
            s[bit / 8] ^= 1 << (bit % 8);
            s
        });
        both(&format!("signature bit {bit} flipped"), &dpop(&token, &flipped), 401, bad);
    }
    let n = unhex(N);
    type Mangle = Box<dyn Fn(Vec<u8>) -> Vec<u8>>;
    let cases: Vec<(&str, Mangle)> = vec![
        ("r and s swapped", Box::new(|s| [&s[32..], &s[..32]].concat())),
        ("r = 0", Box::new(|s| [&[0u8; 32][..], &s[32..]].concat())),
        ("s = 0", Box::new(|s| [&s[..32], &[0u8; 32][..]].concat())),
        ("s = n", Box::new(move |s| [&s[..32], &n[..]].concat())),
        ("s = 2^256 - 1", Box::new(|s| [&s[..32], &[0xffu8; 32][..]].concat())),
        ("63 bytes", Box::new(|s| s[..63].to_vec())),
        ("65 bytes", Box::new(|s| [&s[..], &[0u8][..]].concat())),
        ("empty", Box::new(|_| Vec::new())),
        (
            "as DER",
            Box::new(|s| {
                let mut d = vec![0x30, 68, 0x02, 32];
                d.extend_from_slice(&s[..32]);
                d.extend_from_slice(&[0x02, 32]);
                d.extend_from_slice(&s[32..]);
                d
            }),
        ),
    ];
    for (what, f) in cases {
        both(what, &dpop(&token, &resign(&proof(&holder, &holder, &token), f)), 401, bad);
    }
    // After all of that, a valid proof still passes on both.
    both("valid proof again", &dpop(&token, &proof(&holder, &holder, &token)), 200, "");
    // At least the two valid proofs, the high-S one, the tampered one and the wrong key's were
    // answered by BoringSSL (the proof keys have no tables), not only in Rust.
    reached_boringssl("DPoP proofs", before, 5);
}

#[test]
fn rs256_tokens_get_the_same_answer_from_boringssl_and_from_rust() {
    let w = world();
    let id = rand_id("msn_");
    w.auth.set_mission(&id, "active");
    let claims = w.auth.claims(&id);
    let token = w.rsa.sign("at+jwt", &claims);
    let before = w.host.counter(FOREIGN);
    both("valid RS256 token", &Req::new("GET", "/v1/items").bearer(&token), 200, "");
    let flipped = resign(&token, |mut s| {
        s[128] ^= 0x10;
        s
    });
    both("RS256 bit flipped", &Req::new("GET", "/v1/items").bearer(&flipped), 401, "bad_signature");
    let ones = resign(&token, |s| vec![0xff; s.len()]);
    both("RS256 signature above n", &Req::new("GET", "/v1/items").bearer(&ones), 401, "bad_signature");
    let zero = resign(&token, |s| vec![0; s.len()]);
    both("RS256 zero signature", &Req::new("GET", "/v1/items").bearer(&zero), 401, "bad_signature");
    let short = resign(&token, |s| s[1..].to_vec());
    both("RS256 short signature", &Req::new("GET", "/v1/items").bearer(&short), 401, "bad_signature");
    // Signed by another RSA key under this key's kid.
    let other = Signer::rsa("rsa-e2e", "b2048", "RS256").sign("at+jwt", &claims);
    both("RS256 wrong key", &Req::new("GET", "/v1/items").bearer(&other), 401, "bad_signature");
    // The same claims as RS256 but the signature of an ES256 token: wrong length for the modulus.
    let es = w.auth.token(&claims);
    let mixed = format!("{}.{}", token.rsplit_once('.').unwrap().0, es.rsplit_once('.').unwrap().1);
    both("ES256 signature on an RS256 token", &Req::new("GET", "/v1/items").bearer(&mixed), 401, "bad_signature");
    // A PS256 token under the same key stays in Rust on both; still accepted.
    let ps = Signer::rsa("rsa-e2e", "a2048", "PS256").sign("at+jwt", &claims);
    both("valid PS256 token", &Req::new("GET", "/v1/items").bearer(&ps), 200, "");
    // At least the valid token, the flipped bit and the wrong key were answered by BoringSSL.
    reached_boringssl("RS256 tokens", before, 3);
}

/// The Envoy process serving `port` (its config lives in a directory named after the port).
fn envoy_pid(port: u16) -> u32 {
    let tag = format!("envoy-{port}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        let exe = cmd.split('\0').next().unwrap_or_default();
        if cmd.contains(&tag) && exe.ends_with("envoy") {
            return pid;
        }
    }
    panic!("no Envoy process for :{port}");
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// Envoy CPU time per request on each gateway, same requests, interleaved blocks (`--ignored`;
/// VERIFYSIG_ROUNDS, VERIFYSIG_BLOCK). Prints, per scenario, ms of Envoy CPU per request on each and
/// the ratio of the sums and the median per-round ratio. Run at nice 19 on a loaded host: CPU time,
/// not wall clock, and only the ratio means much.
#[test]
#[ignore]
fn measure_envoy_cpu_per_request_host_against_pure() {
    let w = world();
    let env = |k: &str, d: usize| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (rounds, block) = (env("VERIFYSIG_ROUNDS", 10), env("VERIFYSIG_BLOCK", 200));
    let (hp, pp) = (envoy_pid(w.host.port), envoy_pid(w.pure.port));
    let holder = SigningKey::generate_p256();
    let id = rand_id("msn_");
    w.auth.set_mission(&id, "active");
    let mut claims = w.auth.claims(&id);
    claims["cnf"] = json!({"jkt": thumbprint(&holder)});
    let bound = w.auth.token(&claims);
    let plain = w.auth.claims(&id);
    let tick_ms = 10.0;
    type Make<'a> = Box<dyn Fn() -> Req + 'a>;
    let scenarios: Vec<(&str, Make)> = vec![
        (
            "DPoP-bound token, fresh ES256 proof per request",
            Box::new(|| dpop(&bound, &proof(&holder, &holder, &bound))),
        ),
        (
            "fresh RS256 token per request (cold: not in the token cache)",
            Box::new(|| {
                let mut c = plain.clone();
                c["jti"] = json!(rand_id("jti_"));
                Req::new("GET", "/v1/items").bearer(&w.rsa.sign("at+jwt", &c))
            }),
        ),
    ];
    for (name, make) in scenarios {
        let (mut sum_h, mut sum_p, mut ratios) = (0u64, 0u64, Vec::new());
        for round in 0..rounds {
            let reqs: Vec<Req> = (0..block).map(|_| make()).collect();
            let run = |port: u16, pid: u32| {
                let t0 = cpu_ticks(pid);
                for r in &reqs {
                    assert_eq!(r.send(port).status, 200, "{name}");
                }
                cpu_ticks(pid) - t0
            };
            let (h, p) = if round % 2 == 0 {
                let h = run(w.host.port, hp);
                (h, run(w.pure.port, pp))
            } else {
                let p = run(w.pure.port, pp);
                (run(w.host.port, hp), p)
            };
            sum_h += h;
            sum_p += p;
            if h > 0 {
                ratios.push(p as f64 / h as f64);
            }
        }
        ratios.sort_by(|a, b| a.total_cmp(b));
        let n = (rounds * block) as f64;
        println!(
            "verifysig-e2e: {name}: Envoy CPU per request: host {:.3} ms, pure {:.3} ms; pure/host {:.2} (sum), median per round {:.2} ({} rounds x {} requests)",
            sum_h as f64 * tick_ms / n,
            sum_p as f64 * tick_ms / n,
            sum_p as f64 / sum_h.max(1) as f64,
            ratios.get(ratios.len() / 2).copied().unwrap_or(0.0),
            rounds,
            block
        );
    }
}
