//! The fuzz harness on stable: a short, seeded, property-based pass over the same functions the
//! cargo-fuzz targets call (`missiongate_core::fuzzing`, `fuzz/`, `make fuzz`), so every
//! `cargo test` (and CI) feeds each parser generated inputs and checks its invariants.
//!
//! Deterministic: proptest's ChaCha RNG from a fixed seed, a fixed number of cases, no failure
//! persistence. Inputs: the committed seed corpus (`fuzz/seeds/<target>/`) as is and mutated, and
//! structured generators (JSON-ish text, header tables, token-shaped strings). Native only: the
//! wasm-bindgen suite (`make test-wasm-core`) does not build it.
#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

use missiongate_core::fuzzing;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Cases per generator (each target gets a few generators).
const CASES: u32 = 64;

fn runner(salt: u8) -> TestRunner {
    let config = Config { cases: CASES, failure_persistence: None, ..Config::default() };
    let mut seed = [0x6d_u8; 32];
    seed[0] = salt;
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed))
}

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds")
}

/// The committed seed files of `target`.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = seeds_dir().join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

/// A byte-level mutation, as a fuzzer would make one.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let interesting = prop::sample::select(vec![
        b"\"".to_vec(),
        b"\\".to_vec(),
        b"\\u0000".to_vec(),
        b"\\ud800".to_vec(),
        b"{".to_vec(),
        b"]".to_vec(),
        b",".to_vec(),
        b"\n".to_vec(),
        b"\r\n".to_vec(),
        b".".to_vec(),
        b"%2F".to_vec(),
        b"..".to_vec(),
        b"1e400".to_vec(),
        b"-0".to_vec(),
        b"9007199254740993".to_vec(),
        b"null".to_vec(),
        b"\xff".to_vec(),
        b"\xc3".to_vec(),
        b"\xef\xbf\xbf".to_vec(),
        b"$TOKEN".to_vec(),
        b"$PROOF".to_vec(),
        b"$DIGEST".to_vec(),
    ]);
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<usize>(), prop_oneof![interesting, prop::collection::vec(any::<u8>(), 1..8)])
            .prop_map(|(i, v)| Edit::Insert(i, v)),
        (any::<usize>(), 1..16usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), 1..32usize).prop_map(|(i, n)| Edit::Duplicate(i, n)),
    ]
}

fn apply(mut data: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        // Never touch byte 0 (the mode selector) except by Flip, so mutants stay near their seed.
        let len = data.len().max(1);
        match e {
            Edit::Flip(i, b) => {
                if let Some(x) = data.get_mut(i % len) {
                    *x ^= b;
                }
            }
            Edit::Insert(i, v) => {
                let at = (i % len).max(1).min(data.len());
                data.splice(at..at, v.iter().copied());
            }
            Edit::Delete(i, n) => {
                let at = (i % len).max(1).min(data.len());
                let end = (at + n).min(data.len());
                data.drain(at..end);
            }
            Edit::Duplicate(i, n) => {
                let at = (i % len).max(1).min(data.len());
                let end = (at + n).min(data.len());
                let chunk = data[at..end].to_vec();
                data.splice(at..at, chunk);
            }
        }
    }
    data
}

/// Every seed of `target` as is, then `CASES` mutants of them.
fn seeds_and_mutants(target: &str, salt: u8, harness: fn(&[u8])) {
    let files = seeds(target);
    for (_, bytes) in &files {
        harness(bytes);
    }
    let inputs: Vec<Vec<u8>> = files.into_iter().map(|(_, b)| b).collect();
    let strategy = (prop::sample::select(inputs), prop::collection::vec(edit(), 1..6));
    runner(salt)
        .run(&strategy, |(seed, edits)| {
            harness(&apply(seed, &edits));
            Ok(())
        })
        .unwrap();
}

// ------------------------------------------------------------------------- generators ---------

/// JSON-ish text: mostly well formed, with the forms I-JSON and JCS care about.
fn json_text() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        any::<f64>().prop_map(|f| f.to_string()),
        prop::sample::select(vec![
            "-0",
            "1e400",
            "1e-400",
            "9007199254740993",
            "0.1",
            "1E2",
            "5e-324",
            "01",
            "1.",
            ".5",
            "-"
        ])
        .prop_map(str::to_owned),
    ];
    let string = prop_oneof![
        "[a-z]{0,6}".prop_map(|s| format!("\"{s}\"")),
        any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        prop::sample::select(vec![
            "\"\\ud800\"",
            "\"\\ud83d\\ude00\"",
            "\"\\uffff\"",
            "\"\u{ffff}\"",
            "\"\\u0000\"",
            "\"\\x\"",
            "\""
        ])
        .prop_map(str::to_owned),
    ];
    let leaf = prop_oneof![number, string.clone(), Just("true".to_owned()), Just("null".to_owned())];
    leaf.prop_recursive(6, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((prop_oneof!["[a-c]".prop_map(|s| format!("\"{s}\"")), string.clone()], inner), 0..5)
                .prop_map(|v| {
                    let members: Vec<String> = v.into_iter().map(|(k, x)| format!("{k} : {x}")).collect();
                    format!("{{ {} }}", members.join(",\n"))
                }),
        ]
    })
}

/// Three base64url segments of JSON-ish or arbitrary bytes: token-shaped strings.
fn token_text() -> impl Strategy<Value = String> {
    use missiongate_wire::b64;
    let part = prop_oneof![
        json_text().prop_map(|s| b64::encode(s.as_bytes())),
        prop::collection::vec(any::<u8>(), 0..80).prop_map(b64::encode),
        "[A-Za-z0-9_=+/.-]{0,12}",
    ];
    (part.clone(), part.clone(), part, prop::sample::select(vec![".", "..", ""]))
        .prop_map(|(h, p, s, extra)| format!("{h}.{p}.{s}{extra}"))
}

/// A request as `name: value` lines: pseudo headers, credentials and content types, plus noise.
fn header_block() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::sample::select(vec![
        ":method",
        ":path",
        ":authority",
        ":scheme",
        "authorization",
        "Authorization",
        "dpop",
        "content-type",
        "idempotency-key",
        "x-other",
    ]);
    let value = prop_oneof![
        prop::sample::select(vec![
            "GET",
            "POST",
            "CONNECT",
            "https",
            "api.partner.example",
            "API.partner.example:443",
            "open.example",
            "/v1/payments",
            "/v1/invoices?x=1",
            "/v1/exports/q3",
            "/v1/..%2Fadmin",
            "Bearer $TOKEN",
            "DPoP $DTOKEN",
            "Bearer $RTOKEN",
            "Bearer $TOKEN, Bearer $TOKEN",
            "$PROOF",
            "application/json",
            "application/vnd.x+json; charset=utf-8",
            "text/plain",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
    ];
    let line = (name, value).prop_map(|(n, v)| {
        let mut l = n.as_bytes().to_vec();
        l.extend_from_slice(b": ");
        l.extend(v);
        l
    });
    (any::<u8>(), prop::collection::vec(line, 0..9), json_text()).prop_map(|(flags, lines, body)| {
        let mut out = vec![flags];
        for l in lines {
            out.extend(l);
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(body.as_bytes());
        out
    })
}

// ------------------------------------------------------------------------- the pass -----------

#[test]
fn token() {
    seeds_and_mutants("token", 1, fuzzing::token);
    let strategy = (0u8..6, token_text());
    runner(2)
        .run(&strategy, |(mode, text)| {
            // Mode 0 verifies the text itself; 2 and 3 sign it as claims.
            let mut data = vec![[0, 2, 3][usize::from(mode % 3)]];
            data.extend_from_slice(text.as_bytes());
            fuzzing::token(&data);
            Ok(())
        })
        .unwrap();
    let claims = json_text();
    runner(3)
        .run(&(prop::sample::select(vec![1u8, 2, 10]), claims), |(mode, c)| {
            let mut data = vec![mode];
            if mode == 1 {
                data.extend_from_slice(br#"{"alg":"ES256","typ":"at+jwt","kid":"k1"}"#);
                data.push(b'\n');
            }
            data.extend_from_slice(c.as_bytes());
            fuzzing::token(&data);
            Ok(())
        })
        .unwrap();
    runner(4)
        .run(&prop::collection::vec(any::<u8>(), 0..100), |sig| {
            let mut data = vec![4];
            data.extend(sig);
            fuzzing::token(&data);
            Ok(())
        })
        .unwrap();
}

#[test]
fn jcs() {
    seeds_and_mutants("jcs", 5, fuzzing::jcs);
    runner(6)
        .run(&json_text(), |text| {
            let mut data = vec![0];
            data.extend_from_slice(text.as_bytes());
            fuzzing::jcs(&data);
            Ok(())
        })
        .unwrap();
    runner(7)
        .run(&prop::collection::vec(any::<u8>(), 0..64), |bytes| {
            fuzzing::jcs(&bytes);
            Ok(())
        })
        .unwrap();
}

#[test]
fn config() {
    seeds_and_mutants("config", 8, fuzzing::config);
    runner(9)
        .run(&json_text(), |text| {
            fuzzing::config(text.as_bytes());
            Ok(())
        })
        .unwrap();
}

#[test]
fn headers() {
    seeds_and_mutants("headers", 10, fuzzing::headers);
    runner(11)
        .run(&header_block(), |data| {
            fuzzing::headers(&data);
            Ok(())
        })
        .unwrap();
}

#[test]
fn mission_status() {
    seeds_and_mutants("mission_status", 12, fuzzing::mission_status);
    runner(13)
        .run(&(any::<u8>(), json_text()), |(flags, text)| {
            let mut data = vec![flags];
            data.extend_from_slice(text.as_bytes());
            fuzzing::mission_status(&data);
            Ok(())
        })
        .unwrap();
}

#[test]
fn set_feed() {
    seeds_and_mutants("set_feed", 14, fuzzing::set_feed);
    runner(15)
        .run(&(any::<u8>(), json_text()), |(flags, text)| {
            let mut data = vec![flags];
            data.extend_from_slice(format!("{{\"sets\":{{\"1\":{text},\"2\":{text}}}}}").as_bytes());
            fuzzing::set_feed(&data);
            Ok(())
        })
        .unwrap();
}

#[test]
fn authzen() {
    seeds_and_mutants("authzen", 16, fuzzing::authzen);
    runner(17)
        .run(&(any::<u8>(), json_text()), |(flags, text)| {
            let mut data = vec![flags];
            data.extend_from_slice(format!("{{\"decision\":true,\"context\":{text}}}").as_bytes());
            fuzzing::authzen(&data);
            Ok(())
        })
        .unwrap();
}

/// The seeds still reach the decisions they were written for: the harness is not stuck at the
/// first check (a token that stopped verifying would leave every target shallow).
#[test]
fn seeds_reach_their_decisions() {
    let file = |target: &str, name: &str| std::fs::read(seeds_dir().join(target).join(name)).unwrap();
    for (name, status) in [
        ("bearer_get", 200),
        ("payment_post", 200),
        ("dpop_get", 200),
        ("remote_keys", 200),
        ("mission_unknown", 503),
        ("pdp_denies", 403),
        ("two_authorization", 400),
        ("no_credentials", 401),
    ] {
        assert_eq!(fuzzing::headers_status(&file("headers", name)), status, "headers/{name}");
    }
    for (name, status) in [("permit_single_use", 200), ("permit", 200), ("permit_other_digest", 403), ("garbage", 503)]
    {
        assert_eq!(fuzzing::authzen_status(&file("authzen", name)), status, "authzen/{name}");
    }
}

/// Regenerate `fuzz/seeds/` from `fuzzing::seed_corpus()` (run by hand when the fixture changes).
#[test]
#[ignore = "writes fuzz/seeds; run by hand"]
fn write_seeds() {
    for (target, name, bytes) in fuzzing::seed_corpus() {
        let dir = seeds_dir().join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The committed seeds are what the fixture makes today (tokens signed by its keys at its clock).
#[test]
fn committed_seeds_are_current() {
    for (target, name, bytes) in fuzzing::seed_corpus() {
        let path = seeds_dir().join(target).join(name);
        let got = std::fs::read(&path).unwrap_or_default();
        assert!(
            got == bytes,
            "{} is stale: run `cargo test -p missiongate-core --test fuzz_props -- --ignored write_seeds`",
            path.display()
        );
    }
}

// ------------------------------------------------------------------------- regressions --------
// Inputs the fuzzers found, minimised, kept here so they run in every `cargo test`.

/// jcs: an object with a duplicate member and, later, a syntax error. The lean canonicalizer
/// reports the syntax error (it checks members when the object closes), `parse_ijson` the
/// duplicate; both refuse. The harness once required equal errors.
#[test]
fn regression_jcs_duplicate_then_syntax_error() {
    let body = br#"{"c":2,"c":3x}"#;
    assert!(missiongate_wire::jcs::canonicalize_ijson(body).is_err());
    assert!(missiongate_wire::jcs::parse_ijson(body).is_err());
    let mut data = vec![0];
    data.extend_from_slice(body);
    fuzzing::jcs(&data);
}

/// mission_status: a trusted answer whose `exp` is near `i64::MAX` overflowed `exp + skew`
/// (`filter/core/src/mission.rs`, a panic with overflow checks; a wrapped, refused answer in the
/// release filter). It is accepted now, as its `exp` says.
#[test]
fn regression_status_exp_near_i64_max() {
    let c = r#"{"iss":"https://as.example","aud":"https://gateway.example","nonce":"fuzz-nonce","iat":1800000000,"exp":9223372036854775807,"mission":{"id":"msn_fuzz","issuer":"https://as.example","state":"active","version":1,"fresh_until":"2027-01-15T08:05:00Z"}}"#;
    let mut data = vec![0x31];
    data.extend_from_slice(c.as_bytes());
    fuzzing::mission_status(&data);
    assert!(fuzzing::mission_status_verdict(&data), "a fresh, well-signed answer is accepted");
}

/// authzen: a requestable denial whose `captive_portal_api` holds a control character other than
/// CR or LF (NUL, VT) put it into the 511's `Link` header (`Denial::render` refused only `<>"`,
/// CR and LF). Such a link is left out now.
#[test]
fn regression_link_header_control_character() {
    let a = r#"{"decision":false,"context":{"evaluation_id":"ev-3","reason":"egress_not_allowed","access_request":{"endpoint":"https://portal.example/r","expires_at":"2027-01-15T09:00:00Z","binding_token":"a.b.c"},"captive_portal_api":"https://portal.example/api\u0000x\u000by"}}"#;
    let mut data = vec![2];
    data.extend_from_slice(a.as_bytes());
    fuzzing::authzen(&data);
    assert_eq!(fuzzing::authzen_status(&data), 511);
}

/// jcs: a target holding U+FFFF (a Unicode noncharacter) is written into the parameter object as
/// is, so the bytes digested are not I-JSON: `parse_ijson` refuses the parameter object the filter
/// bound. Open (the digest's owner decides: refuse such a target, 400, or escape it); the harness
/// accepts either. Minimised from a libFuzzer crash.
#[test]
fn regression_digest_target_with_noncharacter() {
    let target = "https://api.partner.example/\u{ffff}";
    let (_, canonical) =
        missiongate_wire::digest::parameter_digest("POST", target, None, Some((Some("text/plain"), b"x"))).unwrap();
    assert_eq!(
        missiongate_wire::jcs::parse_ijson(&canonical),
        Err(missiongate_wire::jcs::IJsonError::Noncharacter),
        "fixed? then drop the harness's exception for noncharacters"
    );
    let mut data = vec![1];
    data.extend_from_slice(format!("text/plain\n{target}\n\nhello").as_bytes());
    fuzzing::jcs(&data);
}

/// headers: a Bearer token with a stray `DPoP` header is allowed twice (the proof is not looked
/// at); the harness once took any `DPoP` header for a spent proof. Minimised from a libFuzzer run.
#[test]
fn regression_bearer_with_stray_dpop_header() {
    let data = b"\x00:method: GET\n:scheme: https\n:authority: api.partner.example\n:path: /v1/x\nauthorization: Bearer $TOKEN\ndpop: garbage\n\n";
    assert_eq!(fuzzing::headers_status(data), 200);
}

/// MCP messages (SPEC §7): the JSON-RPC reader never panics; what it accepts names a valid action
/// (a tool name in its grammar), what it refuses is a 400, and a refusal rendered for an echoed id
/// is a JSON-RPC error for exactly that id.
fn mcp_message(body: &[u8]) {
    use missiongate_core::config::{valid_tool_name, Config as FilterConfig};
    use missiongate_core::decision::Denial;
    use missiongate_core::mcp;
    static SERVER: std::sync::OnceLock<FilterConfig> = std::sync::OnceLock::new();
    let config = SERVER.get_or_init(|| {
        FilterConfig::parse(include_bytes!("../../examples/full.json")).expect("the full example parses")
    });
    let server = config.destinations["mcp.partner.example"].mcp.as_ref().expect("an MCP destination");
    match mcp::parse(body) {
        Ok(message) => {
            if let mcp::Message::Request { call: Some((tool, _)), .. } = &message {
                assert!(valid_tool_name(tool), "{tool:?}");
            }
            let op = mcp::operation(server, &message);
            assert!(missiongate_core::authority::valid_action_id(&op.action), "{:?}", op.action);
            let headers = vec![("mcp-method".to_owned(), "tools/call".to_owned())];
            if let Err(r) = mcp::check_headers(&headers, &message) {
                assert_eq!(r.reason.status(), 400);
            }
            if let Some(id) = &op.id {
                let d = Denial::new(missiongate_core::decision::Reason::PdpDenied, "x");
                let resp = d.render_mcp(id, "d-1").expect("a 403 is a JSON-RPC error");
                let v: serde_json::Value = serde_json::from_slice(&resp.body).expect("JSON");
                assert_eq!(&v["id"], id);
                assert_eq!(v["error"]["code"], -32001);
            }
        }
        Err(r) => assert_eq!(r.reason.status(), 400, "{r:?}"),
    }
}

#[test]
fn mcp_messages() {
    let seeds: Vec<Vec<u8>> = [
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay_invoice","arguments":{"amount":"423.50"}}}"#,
        r#"{"jsonrpc":"2.0","id":"a","method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        r#"{"jsonrpc":"2.0","id":3,"result":{}}"#,
        r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    for s in &seeds {
        mcp_message(s);
    }
    let strategy = (prop::sample::select(seeds), prop::collection::vec(edit(), 1..6));
    runner(40)
        .run(&strategy, |(seed, edits)| {
            mcp_message(&apply(seed, &edits));
            Ok(())
        })
        .unwrap();
    runner(41)
        .run(&json_text(), |text| {
            mcp_message(text.as_bytes());
            Ok(())
        })
        .unwrap();
}
