//! JCS and digest vectors: SPEC §6 (HTTP Operation Profile v2: V1-V4, V7, V9-V12, exact numbers),
//! SPEC §7 (MCP Tool Call Profile: M1-M4), standards.md §3.4/§3.9, RFC 8785 (§3.2.2, §3.2.3, Appendix B),
//! and number tables generated with ECMAScript itself (`tests/data/gen_numbers.js`, run under node).
//!
//! Every test but the stack-depth one also runs compiled to wasm32-unknown-unknown under
//! wasm-bindgen-test (`make test-wasm-core`), so JCS is checked as the filter runs it: as WebAssembly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use missiongate_wire::digest::{
    self, envelope_canonical, envelope_hash, mcp_tool_call_digest, mcp_tool_call_digest_of_body,
    mcp_tool_call_digest_of_parameters, parameter_digest, parse_prefixed_digest, prefixed_digest_of_canonical,
    request_digest, sha256_b64, ParameterObject, Unbindable, SHA256_PREFIX,
};
use missiongate_wire::jcs::{canonicalize, canonicalize_ijson, parse_ijson, IJsonError, MAX_DEPTH};
use serde_json::{json, Value};

fn canon_str(text: &str) -> String {
    String::from_utf8(canonicalize_ijson(text.as_bytes()).unwrap()).unwrap()
}

fn hdrs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

// ------------------------------------------------------------------------------------------------
// SPEC §6 vectors (HTTP Operation Profile, version 2)
// ------------------------------------------------------------------------------------------------

const PAYMENTS: &str = "https://api.partner.example/v1/payments";
const UPLOAD: &str = "https://api.partner.example/upload";
const V2_CANONICAL: &str = r#"{"body":{"amount":"423.50","currency":"USD","to":"acct_123"},"content_type":"application/json","method":"POST","target":"https://api.partner.example/v1/payments"}"#;
const V2_DIGEST: &str = "sha-256:yLAZIL9150YK2-jnJ3yaKg4ewwCwZbTeuW5yu5qSRZk";
const V7_DIGEST: &str = "sha-256:Vg-10WbE6ITI1jhkU1Xd2_G32jL6sbxiQFQldE9WdYI";
const JSON: Option<&str> = Some("application/json");

fn check(got: (String, Vec<u8>), canonical: &str, digest: &str) {
    assert_eq!(String::from_utf8(got.1).unwrap(), canonical);
    assert_eq!(got.0, digest);
}

/// The same digest through the JSON parameter object (what an agent submits to the portal).
fn check_value(params: Value, digest: &str) {
    assert_eq!(ParameterObject::from_value(&params).unwrap().digest(), digest, "{params}");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_v1_get_no_body() {
    let target = "https://api.partner.example/v1/invoices?status=open&limit=10";
    let want = "sha-256:oZaAtCgeL4f6PCVrFBIdLpEJpdO9JQz4DwZ76Slp5XY";
    let got = parameter_digest("GET", target, None, None).unwrap();
    check(got, r#"{"method":"GET","target":"https://api.partner.example/v1/invoices?status=open&limit=10"}"#, want);
    // A request without a body binds nothing more, whatever its Content-Type says.
    let h = hdrs(&[("Content-Type", "application/json")]);
    assert_eq!(request_digest("GET", target, &h, &[], b"").unwrap().0, want);
    check_value(json!({"method": "GET", "target": target}), want);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_v2_post_json_body() {
    let body = br#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#;
    let got = parameter_digest("POST", PAYMENTS, None, Some((JSON, body))).unwrap();
    check(got, V2_CANONICAL, V2_DIGEST);
    // Lower-case method: same object.
    let got = parameter_digest("post", PAYMENTS, None, Some((JSON, body))).unwrap();
    check(got, V2_CANONICAL, V2_DIGEST);
    // From the request's header list, as the filter calls it.
    let h = hdrs(&[("content-type", "application/json")]);
    check(request_digest("POST", PAYMENTS, &h, &[], body).unwrap(), V2_CANONICAL, V2_DIGEST);
    // Via a generic Value, too.
    let obj = json!({"method": "POST", "target": PAYMENTS, "content_type": "application/json",
        "body": {"amount": "423.50", "currency": "USD", "to": "acct_123"}});
    assert_eq!(String::from_utf8(canonicalize(&obj)).unwrap(), V2_CANONICAL);
    assert_eq!(prefixed_digest_of_canonical(&obj), V2_DIGEST);
    check_value(obj, V2_DIGEST);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_v3_same_body_reformatted() {
    let body = b"{ \"to\" : \"acct_123\", \"currency\":\"USD\",\n \"amount\":\"423.50\" }";
    let got = parameter_digest("POST", PAYMENTS, None, Some((Some("Application/JSON; charset=utf-8"), body))).unwrap();
    check(got, V2_CANONICAL, V2_DIGEST);
    // Escapes that decode to the same strings change nothing either.
    let body = br#"{"to":"acct\u005f123","currency":"\u0055SD","amount":"423.50"}"#;
    let got = parameter_digest("POST", PAYMENTS, None, Some((Some("application/json;charset=UTF-8"), body))).unwrap();
    check(got, V2_CANONICAL, V2_DIGEST);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_v4_changed_amount_differs() {
    let body = br#"{"amount":"4235.00","currency":"USD","to":"acct_123"}"#;
    let got = parameter_digest("POST", PAYMENTS, None, Some((JSON, body))).unwrap();
    assert_ne!(got.0, V2_DIGEST);
    check(
        got,
        r#"{"body":{"amount":"4235.00","currency":"USD","to":"acct_123"},"content_type":"application/json","method":"POST","target":"https://api.partner.example/v1/payments"}"#,
        "sha-256:kY7PAYsBSabmUJeTfmLFkMD3l9Kjqs4l6SX5GkhJRSU",
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_v7_text_plain_body() {
    let body = b"hello, partner";
    assert_eq!(body.len(), 14);
    assert_eq!(sha256_b64(body), "BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs");
    let canonical = r#"{"body_sha256":"BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs","content_type":"text/plain","method":"POST","target":"https://api.partner.example/upload"}"#;
    let got = parameter_digest("POST", UPLOAD, None, Some((Some("text/plain"), body))).unwrap();
    check(got, canonical, V7_DIGEST);
    // Parameters of the media type are not bound; its case is not either.
    let got = parameter_digest("POST", UPLOAD, None, Some((Some("Text/Plain; charset=us-ascii"), body))).unwrap();
    check(got, canonical, V7_DIGEST);
    check_value(
        json!({"method": "POST", "target": UPLOAD, "content_type": "text/plain",
            "body_sha256": "BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"}),
        V7_DIGEST,
    );
    // Another media type for the same bytes is another call.
    let other = parameter_digest("POST", UPLOAD, None, Some((Some("text/csv"), body))).unwrap();
    assert_ne!(other.0, V7_DIGEST);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_v9_effect_bearing_header() {
    let want = "sha-256:UldhSLs_XZgqm4WsxWCCcbBBP58Z_7YFyzFbZE-1Rro";
    let h = hdrs(&[("Idempotency-Key", "k-42")]);
    let got = parameter_digest("POST", PAYMENTS, Some(&h), Some((JSON, br#"{"amount":"1.00"}"#))).unwrap();
    check(
        got,
        r#"{"body":{"amount":"1.00"},"content_type":"application/json","headers":{"idempotency-key":"k-42"},"method":"POST","target":"https://api.partner.example/v1/payments"}"#,
        want,
    );
    // The struct API gives the same.
    let p = ParameterObject::from_request("POST", PAYMENTS, Some(&h), Some((JSON, br#"{"amount":"1.00"}"#))).unwrap();
    assert_eq!(p.digest(), want);
    // And the filter's call over the whole header list.
    let all = hdrs(&[("Content-Type", "application/json"), ("IDEMPOTENCY-KEY", "k-42"), ("Accept", "*/*")]);
    let effect = vec!["idempotency-key".to_owned()];
    assert_eq!(request_digest("POST", PAYMENTS, &all, &effect, br#"{"amount":"1.00"}"#).unwrap().0, want);
    check_value(
        json!({"method": "POST", "target": PAYMENTS, "headers": {"Idempotency-Key": "k-42"},
            "content_type": "application/json", "body": {"amount": "1.00"}}),
        want,
    );
}

/// A header named effect-bearing that is sent more than once makes the request unbindable.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_repeated_effect_header_is_unbindable() {
    let effect = vec!["idempotency-key".to_owned()];
    let body = br#"{"amount":"1.00"}"#;
    for twice in [
        hdrs(&[("content-type", "application/json"), ("idempotency-key", "k-42"), ("idempotency-key", "k-43")]),
        hdrs(&[("Idempotency-Key", "k-42"), ("content-type", "application/json"), ("idempotency-key", "k-42")]),
    ] {
        assert_eq!(
            request_digest("POST", PAYMENTS, &twice, &effect, body),
            Err(Unbindable::RepeatedHeader("idempotency-key".into()))
        );
    }
    // Content-Type twice on a body cannot say which media type is bound.
    let ct2 = hdrs(&[("content-type", "application/json"), ("content-type", "text/plain")]);
    assert_eq!(request_digest("POST", PAYMENTS, &ct2, &[], body), Err(Unbindable::ContentType));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_v10_json_body_cannot_spell_a_raw_hash() {
    let body = br#"{"sha-256":"BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"}"#;
    let got = parameter_digest("POST", UPLOAD, None, Some((JSON, body))).unwrap();
    assert_ne!(got.0, V7_DIGEST);
    check(
        got,
        r#"{"body":{"sha-256":"BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"},"content_type":"application/json","method":"POST","target":"https://api.partner.example/upload"}"#,
        "sha-256:z2OPMgUIwl1dYMoZibm4cr8ZumaUoiHBb12o26mjphY",
    );
    // Nor can it spell body_sha256: a JSON body is always the `body` member.
    let body = br#"{"body_sha256":"BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"}"#;
    assert_ne!(parameter_digest("POST", UPLOAD, None, Some((JSON, body))).unwrap().0, V7_DIGEST);
    // Version 1's raw-body member is not accepted from an agent either.
    let v1 = json!({"method": "POST", "target": UPLOAD,
        "body": {"sha-256": "BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"}});
    assert!(matches!(ParameterObject::from_value(&v1), Err(Unbindable::Shape(_))));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_v11_other_json_media_type_differs() {
    let body = br#"{"amount":"423.50","currency":"USD","to":"acct_123"}"#;
    let want = "sha-256:9ZerN1VqypBn4XxzI1my-SwXHpGb5TGADWs1e77waGg";
    let got = parameter_digest("POST", PAYMENTS, None, Some((Some("application/vnd.api+json"), body))).unwrap();
    assert_ne!(got.0, V2_DIGEST);
    check(
        got,
        r#"{"body":{"amount":"423.50","currency":"USD","to":"acct_123"},"content_type":"application/vnd.api+json","method":"POST","target":"https://api.partner.example/v1/payments"}"#,
        want,
    );
    let got = parameter_digest("POST", PAYMENTS, None, Some((Some("Application/Vnd.API+JSON; ext=x"), body))).unwrap();
    assert_eq!(got.0, want);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_v12_raw_body_without_content_type() {
    let want = "sha-256:SdgghQ-PAioTqxAgBA-ZHfFdEub769L-JCEJO4HFjLU";
    let got =
        parameter_digest("PUT", "https://api.partner.example/blob", None, Some((None, b"hello, partner"))).unwrap();
    check(
        got,
        r#"{"body_sha256":"BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs","content_type":"application/octet-stream","method":"PUT","target":"https://api.partner.example/blob"}"#,
        want,
    );
    // An explicit application/octet-stream is the same call; the filter's call gives the same.
    let got = parameter_digest(
        "PUT",
        "https://api.partner.example/blob",
        None,
        Some((Some("application/octet-stream"), b"hello, partner")),
    )
    .unwrap();
    assert_eq!(got.0, want);
    assert_eq!(request_digest("PUT", "https://api.partner.example/blob", &[], &[], b"hello, partner").unwrap().0, want);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_non_ijson_body_is_unbindable() {
    let cases: [(&[u8], IJsonError); 8] = [
        (br#"{"amount":"1.00","amount":"9999.00"}"#, IJsonError::DuplicateMember("amount".into())),
        (b"{\"to\":\"acct\xff\"}", IJsonError::InvalidUtf8),
        (br#"{"to":"\ud800"}"#, IJsonError::LoneSurrogate),
        (br#"{"amount":1e400}"#, IJsonError::NumberOutOfRange),
        (br#"{"amount":1e-400}"#, IJsonError::InexactNumber),
        (br#"{"amount":9007199254740993}"#, IJsonError::InexactNumber),
        (br#"{"amount":0.10000000000000000001}"#, IJsonError::InexactNumber),
        (br#"{"amount":"1.00"} {"amount":"2.00"}"#, IJsonError::TrailingData),
    ];
    for (body, want) in cases {
        assert_eq!(parameter_digest("POST", PAYMENTS, None, Some((JSON, body))), Err(Unbindable::Body(want)));
        // The same bytes under a non-JSON type are bound by their hash.
        assert!(parameter_digest("POST", PAYMENTS, None, Some((Some("application/octet-stream"), body))).is_ok());
    }
}

// ------------------------------------------------------------------------------------------------
// Exact numbers (SPEC §6): a number binds only if its JCS form denotes the value written
// ------------------------------------------------------------------------------------------------

/// Numbers binary64 does not hold as written (refused), and numbers it does (with their JCS form).
const INEXACT_NUMBERS: &[&str] = &[
    "1e-400",
    "-1e-400",
    "5e-325",
    "2.4703282292062328e-324",
    "9007199254740993",
    "-9007199254740993",
    "0.10000000000000000001",
    "0.30000000000000000001",
    "18446744073709551615",
    "18446744073709551616",
    "-9223372036854775808",
    "123456789012345678901234567890",
    "295147905179352825856",
    "1.7976931348623158e308",
    "333333333.33333329",
    "1.00000000000000000000000000000001",
    "4.9e-324",
    "100000000000000000000001",
    "9.999999999999999161e22",
];
const EXACT_NUMBERS: &[(&str, &str)] = &[
    ("1.0", "1"),
    ("1e2", "100"),
    ("1E2", "100"),
    ("5E2", "500"),
    ("2.5e+3", "2500"),
    ("0.1", "0.1"),
    ("-0", "0"),
    ("-0.0", "0"),
    ("0e10", "0"),
    ("0.30000000000000004", "0.30000000000000004"),
    ("9007199254740992", "9007199254740992"),
    ("-9007199254740992", "-9007199254740992"),
    ("1e21", "1e+21"),
    ("1E+21", "1e+21"),
    ("100e-9", "1e-7"),
    ("0.000001", "0.000001"),
    ("5e-324", "5e-324"),
    ("1.7976931348623157e308", "1.7976931348623157e+308"),
    ("295147905179352830000", "295147905179352830000"),
    ("4.50", "4.5"),
    ("423.5000000000000000000000000", "423.5"),
    ("123456789012345", "123456789012345"),
    ("0.000000000000001", "1e-15"),
    ("1e23", "1e+23"),
    // 1e23 is not a double (the nearest is 99999999999999991611392), but its JCS form is 1e+23.
    ("100000000000000000000000", "1e+23"),
];

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn inexact_numbers_are_refused() {
    for &n in INEXACT_NUMBERS {
        for doc in [n.to_owned(), format!("[{n}]"), format!("{{\"a\":{{\"b\":[\"x\",{n},2]}}}}")] {
            assert_eq!(canonicalize_ijson(doc.as_bytes()), Err(IJsonError::InexactNumber), "{doc}");
            assert_eq!(parse_ijson(doc.as_bytes()), Err(IJsonError::InexactNumber), "{doc}");
        }
        let body = format!("{{\"amount\":{n}}}");
        assert_eq!(
            parameter_digest("POST", PAYMENTS, None, Some((JSON, body.as_bytes()))),
            Err(Unbindable::Body(IJsonError::InexactNumber)),
            "{n}"
        );
    }
    for &(n, want) in EXACT_NUMBERS {
        assert_eq!(canon_str(n), want, "{n}");
        assert_eq!(String::from_utf8(canonicalize(&parse_ijson(n.as_bytes()).unwrap())).unwrap(), want, "{n}");
        // The JCS form is itself exact, and a fixed point.
        assert_eq!(canon_str(want), want, "{want}");
    }
    // The same texts inside strings or names are strings, not numbers.
    assert_eq!(canon_str(r#"{"9007199254740993":"1e-400"}"#), r#"{"9007199254740993":"1e-400"}"#);
}

/// An independent decimal comparison for the tables (owned strings, not the crate's code):
/// `(negative, significant digits, exponent)` with zero as `(false, "", 0)`.
fn decimal(text: &str) -> (bool, String, i64) {
    let (neg, t) = text.strip_prefix('-').map_or((false, text), |t| (true, t));
    let (mant, exp) = t.split_once(['e', 'E']).unwrap_or((t, "0"));
    let exp: i64 = exp.trim_start_matches('+').parse().unwrap();
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let all = format!("{int}{frac}");
    let trimmed = all.trim_start_matches('0');
    let point = int.len() as i64 - (all.len() - trimmed.len()) as i64 + exp;
    let digits = trimmed.trim_end_matches('0').to_owned();
    if digits.is_empty() {
        (false, digits, 0)
    } else {
        (neg, digits, point)
    }
}

/// JSON number texts → `Number(text).toString()`, generated by Node.js: a text whose ECMAScript
/// form denotes the same decimal prints as that form (this checks the parser's rounding: long
/// mantissas, halfway points, extremes); any other is refused as inexact.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn ecmascript_number_parsing_table() {
    let text = include_str!("data/parse_numbers.txt");
    let (mut exact, mut inexact) = (0, 0);
    let mut bad = Vec::new();
    for line in text.lines() {
        let (input, want) = line.split_once(',').unwrap();
        let got = canonicalize_ijson(input.as_bytes()).map(|c| String::from_utf8(c).unwrap());
        if decimal(input) == decimal(want) {
            exact += 1;
            if got.as_deref() != Ok(want) {
                bad.push(format!("{input} -> {got:?}, want {want}"));
            }
        } else {
            inexact += 1;
            if got != Err(IJsonError::InexactNumber) {
                bad.push(format!("{input} -> {got:?}, want refused (ECMAScript reads {want})"));
            }
        }
    }
    let n = exact + inexact;
    assert!(bad.is_empty(), "{} of {n} wrong, e.g. {:?}", bad.len(), &bad[..bad.len().min(5)]);
    assert!(n > 4000 && exact > 1000 && inexact > 1000, "{exact} exact, {inexact} inexact");
}

// ------------------------------------------------------------------------------------------------
// SPEC §7 vectors (MCP Tool Call Profile)
// ------------------------------------------------------------------------------------------------

const MCP: &str = "https://mcp.partner.example/mcp";
const M1_DIGEST: &str = "sha-256:VumVMDaxUyrb1aj7IoSEwyzXCgSy83iqcrdTFe30x_c";

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_m1_m2_tool_call() {
    let args = json!({"invoice": "inv_842", "amount": "423.50", "currency": "USD"});
    let canonical = r#"{"arguments":{"amount":"423.50","currency":"USD","invoice":"inv_842"},"mcp_method":"tools/call","target":"https://mcp.partner.example/mcp","tool":"pay_invoice"}"#;
    check(mcp_tool_call_digest(MCP, "tools/call", "pay_invoice", Some(&args)), canonical, M1_DIGEST);
    let m1 = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay_invoice","arguments":{"invoice":"inv_842","amount":"423.50","currency":"USD"}}}"#;
    check(mcp_tool_call_digest_of_body(MCP, m1).unwrap(), canonical, M1_DIGEST);
    // M2: arguments reordered, another id, a _meta: the same digest.
    let m2 = br#"{"params":{"_meta":{"progressToken":"p-9"},"arguments":{"currency":"USD","amount":"423.50","invoice":"inv_842"},"name":"pay_invoice"},"id":"other-id","method":"tools/call","jsonrpc":"2.0"}"#;
    check(mcp_tool_call_digest_of_body(MCP, m2).unwrap(), canonical, M1_DIGEST);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_m3_changed_amount_differs() {
    let args = json!({"invoice": "inv_842", "amount": "4235.00", "currency": "USD"});
    let got = mcp_tool_call_digest(MCP, "tools/call", "pay_invoice", Some(&args));
    assert_ne!(got.0, M1_DIGEST);
    assert_eq!(got.0, "sha-256:tQBHpn5MxqmrpD2zCdhRlK0fIHiGubfyT82NTr10_mM");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn spec_m4_tool_call_without_arguments() {
    let canonical = r#"{"arguments":{},"mcp_method":"tools/call","target":"https://mcp.partner.example/mcp","tool":"list_open_invoices"}"#;
    let want = "sha-256:QOQ38dSi29jvPE02iUwUxQDDAFrQCF9dx2c96RXIcyQ";
    check(mcp_tool_call_digest(MCP, "tools/call", "list_open_invoices", None), canonical, want);
    check(mcp_tool_call_digest(MCP, "tools/call", "list_open_invoices", Some(&json!({}))), canonical, want);
    let body = br#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"list_open_invoices"}}"#;
    check(mcp_tool_call_digest_of_body(MCP, body).unwrap(), canonical, want);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn mcp_tool_call_bodies_that_cannot_bind() {
    let inexact =
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":{"n":9007199254740993}}}"#;
    assert_eq!(mcp_tool_call_digest_of_body(MCP, inexact), Err(Unbindable::Body(IJsonError::InexactNumber)));
    let dup = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","name":"other"}}"#;
    assert!(matches!(mcp_tool_call_digest_of_body(MCP, dup), Err(Unbindable::Body(IJsonError::DuplicateMember(_)))));
    for shape in [
        &br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay"}}]"#[..],
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":[1]}}"#,
        br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"pay","arguments":null}}"#,
    ] {
        assert!(
            matches!(mcp_tool_call_digest_of_body(MCP, shape), Err(Unbindable::Shape(_))),
            "{}",
            String::from_utf8_lossy(shape)
        );
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn mcp_parameter_objects_as_an_agent_submits_them() {
    // M1 and M4 as the parameter object an access request carries (what the portal checks).
    let m1 = parse_ijson(br#"{"target":"https://mcp.partner.example/mcp","mcp_method":"tools/call","tool":"pay_invoice","arguments":{"currency":"USD","invoice":"inv_842","amount":"423.50"}}"#).unwrap();
    assert!(digest::is_mcp_parameter_object(&m1));
    assert_eq!(mcp_tool_call_digest_of_parameters(&m1).unwrap(), M1_DIGEST);
    let m4 = json!({"target": MCP, "mcp_method": "tools/call", "tool": "list_open_invoices"});
    assert_eq!(mcp_tool_call_digest_of_parameters(&m4).unwrap(), "sha-256:QOQ38dSi29jvPE02iUwUxQDDAFrQCF9dx2c96RXIcyQ");
    assert!(!digest::is_mcp_parameter_object(&json!({"method": "GET", "target": MCP})));
    for bad in [
        json!({"target": MCP, "mcp_method": "tools/call", "tool": "t", "arguments": {}, "id": 1}),
        json!({"target": MCP, "mcp_method": "tools/call", "arguments": {}}),
        json!({"target": MCP, "mcp_method": "tools/call", "tool": "t", "arguments": [1]}),
        json!({"target": 1, "mcp_method": "tools/call", "tool": "t"}),
        json!([1]),
    ] {
        assert!(matches!(mcp_tool_call_digest_of_parameters(&bad), Err(Unbindable::Shape(_))), "{bad}");
    }
}

// ------------------------------------------------------------------------------------------------
// standards.md §3.4 envelope anchors and §3.9 canonical-object digest
// ------------------------------------------------------------------------------------------------

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn standards_intent_hash() {
    let value = json!({"goal": "Reconcile Q3 invoices", "resources": ["https://erp.example.com"],
        "expires_at": "2026-12-31T23:59:59Z"});
    assert_eq!(
        String::from_utf8(envelope_canonical(digest::TYP_MISSION_INTENT, "https://as.example.com", &value)).unwrap(),
        r#"{"iss":"https://as.example.com","typ":"mission-intent","value":{"expires_at":"2026-12-31T23:59:59Z","goal":"Reconcile Q3 invoices","resources":["https://erp.example.com"]}}"#
    );
    assert_eq!(
        envelope_hash("mission-intent", "https://as.example.com", &value),
        "sha-256:6mIFoCz79uCHNzKLfBpBwqFjoFXdpmpuc65486IqimQ"
    );
    // Same as canonicalizing the envelope as a generic value.
    let env = json!({"typ": "mission-intent", "iss": "https://as.example.com", "value": value});
    assert_eq!(prefixed_digest_of_canonical(&env), "sha-256:6mIFoCz79uCHNzKLfBpBwqFjoFXdpmpuc65486IqimQ");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn standards_authority_hash() {
    // Written in a non-canonical member order on purpose.
    let value = parse_ijson(
        br#"[
        {"type":"mission_resource_access","resource":"https://erp.example.com","actions":["invoices.read"]},
        {"type":"mission_resource_access","resource":"https://erp.example.com","actions":["journal-entries.write"],
         "constraints":{"max_amount":{"currency":"USD","amount":"500.00"}}}
    ]"#,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(envelope_canonical(digest::TYP_MISSION_AUTHORITY_SET, "https://as.example.com", &value))
            .unwrap(),
        r#"{"iss":"https://as.example.com","typ":"mission-authority-set","value":[{"actions":["invoices.read"],"resource":"https://erp.example.com","type":"mission_resource_access"},{"actions":["journal-entries.write"],"constraints":{"max_amount":{"amount":"500.00","currency":"USD"}},"resource":"https://erp.example.com","type":"mission_resource_access"}]}"#
    );
    assert_eq!(
        envelope_hash("mission-authority-set", "https://as.example.com", &value),
        "sha-256:vUCCfjGulit9u0qJ0Z6pQSNerZtXMqRlfJNCr4PzLro"
    );
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn standards_runtime_worked_vector() {
    let v = parse_ijson(br#"{"source_invoice_id":"inv_2026Q3_842","amount_usd":"423.50"}"#).unwrap();
    assert_eq!(canonicalize(&v), br#"{"amount_usd":"423.50","source_invoice_id":"inv_2026Q3_842"}"#);
    assert_eq!(prefixed_digest_of_canonical(&v), "sha-256:WPVi6EnQ7H9Fh-qk9ADxmTg8zruOdVUX1esl-v3TfCI");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn prefixed_digests_round_trip() {
    for d in [V2_DIGEST, "sha-256:6mIFoCz79uCHNzKLfBpBwqFjoFXdpmpuc65486IqimQ"] {
        let h = parse_prefixed_digest(d).unwrap();
        assert_eq!(digest::format_prefixed(&h), d);
    }
    assert!(V2_DIGEST.starts_with(SHA256_PREFIX));
    assert_eq!(parse_prefixed_digest(&V2_DIGEST.replace("sha-256:", "sha256:")), None);
    assert_eq!(parse_prefixed_digest(&V2_DIGEST.replace("sha-256:", "sha-384:")), None);
}

// ------------------------------------------------------------------------------------------------
// RFC 8785
// ------------------------------------------------------------------------------------------------

/// RFC 8785 Appendix B (the NaN and Infinity rows are not serializable and are left out).
const APPENDIX_B: &[(u64, &str)] = &[
    (0x0000000000000000, "0"),
    (0x8000000000000000, "0"),
    (0x0000000000000001, "5e-324"),
    (0x8000000000000001, "-5e-324"),
    (0x7fefffffffffffff, "1.7976931348623157e+308"),
    (0xffefffffffffffff, "-1.7976931348623157e+308"),
    (0x4340000000000000, "9007199254740992"),
    (0xc340000000000000, "-9007199254740992"),
    (0x4430000000000000, "295147905179352830000"),
    (0x44b52d02c7e14af5, "9.999999999999997e+22"),
    (0x44b52d02c7e14af6, "1e+23"),
    (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
    (0x444b1ae4d6e2ef4e, "999999999999999700000"),
    (0x444b1ae4d6e2ef4f, "999999999999999900000"),
    (0x444b1ae4d6e2ef50, "1e+21"),
    (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
    (0x3eb0c6f7a0b5ed8d, "0.000001"),
    (0x41b3de4355555553, "333333333.3333332"),
    (0x41b3de4355555554, "333333333.33333325"),
    (0x41b3de4355555555, "333333333.3333333"),
    (0x41b3de4355555556, "333333333.3333334"),
    (0x41b3de4355555557, "333333333.33333343"),
    (0xbecbf647612f3696, "-0.0000033333333333333333"),
    (0x43143ff3c1cb0959, "1424953923781206.2"),
];

fn number_text(f: f64) -> String {
    let mut out = Vec::new();
    missiongate_wire::jcs::write_f64(&mut out, f);
    String::from_utf8(out).unwrap()
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rfc8785_appendix_b_numbers() {
    for &(bits, want) in APPENDIX_B {
        let f = f64::from_bits(bits);
        assert_eq!(number_text(f), want, "{bits:016x}");
        // Through a Value, and back through the parser.
        let v = Value::from(f);
        assert_eq!(String::from_utf8(canonicalize(&v)).unwrap(), want, "{bits:016x}");
        let reparsed = parse_ijson(want.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(canonicalize(&reparsed)).unwrap(), want, "{bits:016x}");
        assert_eq!(reparsed.as_f64().unwrap().to_bits() & !(1 << 63), bits & !(1 << 63), "{bits:016x}");
    }
    assert_eq!(number_text(f64::NAN), "null");
    assert_eq!(number_text(f64::INFINITY), "null");
}

/// RFC 8785 §3.2.2: the example document and its canonical form (also given in hex there).
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rfc8785_section_3_2_2_example() {
    let input = r#"{
  "numbers": [333333333.33333329, 1E30, 4.50,
              2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"#;
    let expected_hex = "\
        7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72 \
        75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a \
        5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31 \
        65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37 \
        5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30 \
        30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d";
    let expected: Vec<u8> = expected_hex.split_whitespace().map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    // The RFC's first number has more digits than its double holds: JCS prints 333333333.3333333,
    // another decimal value, so the document is not bindable (SPEC §6) and the strict parsers
    // refuse it. The writer is checked on the RFC's own input through a lenient parse ...
    assert_eq!(canonicalize_ijson(input.as_bytes()), Err(IJsonError::InexactNumber));
    assert_eq!(parse_ijson(input.as_bytes()), Err(IJsonError::InexactNumber));
    let lenient: Value = serde_json::from_str(input).unwrap();
    assert_eq!(canonicalize(&lenient), expected);
    // ... and the strict path on the same document with that number written as its double holds it.
    let exact = input.replace("333333333.33333329", "333333333.3333333");
    let got = canonicalize_ijson(exact.as_bytes()).unwrap();
    assert_eq!(got, expected);
    assert_eq!(
        String::from_utf8(got).unwrap(),
        r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
    );
}

/// RFC 8785 §3.2.3: sorting by UTF-16 code units, with a non-BMP name.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rfc8785_section_3_2_3_sorting() {
    let input = r#"{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"#;
    let got = canon_str(input);
    assert_eq!(
        got,
        "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
         \"\u{f6}\":\"Latin Small Letter O With Diaeresis\",\"\u{20ac}\":\"Euro Sign\",\
         \"\u{1f600}\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}"
    );
    // The RFC lists the expected order of the names.
    let v: Value = serde_json::from_str(&got).unwrap();
    let names: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(names.len(), 7);
    let order = ["\r", "1", "\u{80}", "\u{f6}", "\u{20ac}", "\u{1f600}", "\u{fb33}"];
    let mut pos = 0;
    for name in order {
        let at = got[pos..].find(&format!("\"{}\":", name.replace('\r', "\\r"))).unwrap();
        pos += at + 1;
    }
    // serde_json's own BTreeMap order (UTF-8 bytes) gets the last two wrong.
    let naive = serde_json::to_string(&parse_ijson(input.as_bytes()).unwrap()).unwrap();
    assert_ne!(naive, got);
    // A control character as a name is escaped, U+0001 as \u0001, and sorts first.
    assert_eq!(canon_str(r#"{"1":1,"\r":2,"\u0001":3}"#), r#"{"\u0001":3,"\r":2,"1":1}"#);
}

/// Doubles → `Number.prototype.toString`, generated by Node.js (tests/data/gen_numbers.js).
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn ecmascript_number_serialization_table() {
    let text = include_str!("data/es6_numbers.txt");
    let mut n = 0;
    for line in text.lines() {
        let (hex, want) = line.split_once(',').unwrap();
        let f = f64::from_bits(u64::from_str_radix(hex, 16).unwrap());
        assert_eq!(number_text(f), want, "{hex}");
        // The canonical text parses back to the same double (or -0 to 0).
        let back = parse_ijson(want.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(canonicalize(&back)).unwrap(), want, "{hex}");
        n += 1;
    }
    assert!(n > 9000, "{n}");
}

// ------------------------------------------------------------------------------------------------
// I-JSON rejections
// ------------------------------------------------------------------------------------------------

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rejects_duplicate_names() {
    assert_eq!(parse_ijson(br#"{"a":1,"b":2,"a":1}"#), Err(IJsonError::DuplicateMember("a".into())));
    assert_eq!(parse_ijson(br#"{"x":[{"y":{"k":true,"k":false}}]}"#), Err(IJsonError::DuplicateMember("k".into())));
    assert_eq!(
        parse_ijson("{\"\u{1f600}\":1,\"\\ud83d\\ude00\":2}".as_bytes()),
        Err(IJsonError::DuplicateMember("\u{1f600}".into()))
    );
    // Same name in sibling objects is fine.
    assert!(parse_ijson(br#"[{"a":1},{"a":2}]"#).is_ok());
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rejects_invalid_utf8() {
    for bad in [
        &b"\"\xff\""[..],
        b"\"\xc3\"",
        b"\"\xed\xa0\x80\"",
        b"\"\xf4\x90\x80\x80\"",
        b"\"\xc0\xaf\"",
        b"{\"a\xfe\":1}",
        b"[1]\xff",
    ] {
        assert_eq!(parse_ijson(bad), Err(IJsonError::InvalidUtf8), "{bad:?}");
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rejects_lone_surrogates() {
    for bad in [
        r#""\ud800""#,
        r#""\uDBFF""#,
        r#""\udc00""#,
        r#""\uDFFF""#,
        r#""x\ud83dy""#,
        r#""\ude00\ud83d""#,
        r#"{"\ud83d":1}"#,
        r#"["\ud83d\n"]"#,
        r#""\ud83d\u0020""#,
    ] {
        assert_eq!(parse_ijson(bad.as_bytes()), Err(IJsonError::LoneSurrogate), "{bad}");
    }
    assert_eq!(canon_str(r#""\ud83d\ude00""#), "\"\u{1f600}\"");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rejects_numbers_outside_binary64() {
    for bad in ["1e400", "-1e400", "[1.8e308]", "{\"a\":-1.7976931348623159e308}", &format!("1{}", "0".repeat(400))] {
        assert_eq!(parse_ijson(bad.as_bytes()), Err(IJsonError::NumberOutOfRange), "{bad}");
    }
    // The largest double is accepted; an underflow to zero is not (ECMAScript's JSON.parse would
    // read 0, another value than written: SPEC §6).
    assert_eq!(canon_str("1.7976931348623157e308"), "1.7976931348623157e+308");
    assert_eq!(parse_ijson(b"[1e-400,-1e-400]"), Err(IJsonError::InexactNumber));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rejects_trailing_garbage() {
    for bad in ["{} x", "{}{}", "[1] [2]", "1 2", "\"a\"\"b\"", "null,", "{}\u{0}"] {
        assert_eq!(parse_ijson(bad.as_bytes()), Err(IJsonError::TrailingData), "{bad:?}");
    }
    assert!(parse_ijson(b" \t\r\n{} \t\r\n").is_ok());
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rejects_syntax_errors() {
    for bad in [
        "",
        " ",
        "{",
        "[1,]",
        "{\"a\":1,}",
        "{'a':1}",
        "NaN",
        "Infinity",
        "01",
        "1.",
        ".5",
        "+1",
        "\"\t\"",
        "[1 2]",
        "{\"a\" 1}",
        "tru",
        "\u{feff}{}",
        "/* c */ {}",
        "\"\\x41\"",
    ] {
        assert!(matches!(parse_ijson(bad.as_bytes()), Err(IJsonError::Syntax(_))), "{bad:?}");
    }
}

/// Runs `f` on a thread with a small stack, as a Wasm module would have.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new().stack_size(512 * 1024).spawn(f).unwrap().join().unwrap()
}

#[test]
fn deep_nesting_is_refused_without_overflow() {
    on_small_stack(|| {
        let deep = "[".repeat(100_000);
        assert_eq!(parse_ijson(deep.as_bytes()), Err(IJsonError::TooDeep));
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(parse_ijson(deep.as_bytes()), Err(IJsonError::TooDeep));
        let deep = r#"{"a":"#.repeat(100_000);
        assert_eq!(parse_ijson(deep.as_bytes()), Err(IJsonError::TooDeep));
        let deep = r#"[{"a":"#.repeat(50_000);
        assert_eq!(parse_ijson(deep.as_bytes()), Err(IJsonError::TooDeep));
        // The deepest accepted document parses, canonicalizes and drops on the same small stack.
        let ok = "[{\"a\":".repeat(MAX_DEPTH / 2) + "1" + &"}]".repeat(MAX_DEPTH / 2);
        let v = parse_ijson(ok.as_bytes()).unwrap();
        assert_eq!(canonicalize(&v), ok.as_bytes());
        let over = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse_ijson(over.as_bytes()), Err(IJsonError::TooDeep));
    });
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn large_body_round_trip() {
    // ~1 MiB JSON body: parse + canonicalize + digest.
    let mut items = Vec::new();
    for i in 0..20_000u32 {
        items.push(json!({"id": format!("item-{i}"), "qty": i, "price": f64::from(i) / 7.0, "note": "x\ty\u{1f600}"}));
    }
    let body = serde_json::to_vec(&json!({"items": items, "currency": "USD"})).unwrap();
    assert!(body.len() > 1_000_000, "{}", body.len());
    let (d1, c1) = parameter_digest("POST", PAYMENTS, None, Some((JSON, &body))).unwrap();
    let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<Value>(&body).unwrap()).unwrap();
    let (d2, c2) = parameter_digest("POST", PAYMENTS, None, Some((JSON, &pretty))).unwrap();
    assert_eq!(d1, d2);
    assert_eq!(c1, c2);
}

/// The filter canonicalizes request bodies through the lean path (`canonicalize_ijson`, no
/// `Value`); the portal and most tests go through `parse_ijson` + `canonicalize`. Both must accept
/// exactly the same inputs and print exactly the same bytes: random documents built from a grammar
/// rich in what JCS and I-JSON care about (escapes, surrogates, noncharacters, non-BMP names,
/// duplicate names, extreme numbers, nesting), plus hand-picked edge cases.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn lean_path_agrees_with_value_path() {
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*: deterministic, so a failure reproduces.
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
            xs[(self.next() % xs.len() as u64) as usize]
        }
    }
    const STRINGS: &[&str] = &[
        "\"\"",
        "\"a\"",
        "\"b\"",
        "\"\\u20ac\"",
        "\"\u{20ac}\"",
        "\"\\ud83d\\ude00\"",
        "\"\u{1f600}\"",
        "\"\\ud83d\"",
        "\"\\ude00x\"",
        "\"\u{ffff}\"",
        "\"\u{fdd0}\"",
        "\"\\uffff\"",
        "\"\u{e000}\"",
        "\"tab\\there\"",
        "\"q\\\"uote\"",
        "\"\\/slash\"",
        "\"\\u0000\"",
        "\"\\u001f\"",
        "\"\u{7f}\"",
        "\"\\b\\f\\n\\r\"",
        "\"\u{10ffff}\"",
        "\"\u{10fffd}\"",
    ];
    const NUMBERS: &[&str] = &[
        "0",
        "-0",
        "1",
        "-1",
        "0.1",
        "1e21",
        "1e-7",
        "123456789012345678901234567890",
        "9007199254740993",
        "18446744073709551616",
        "-9223372036854775809",
        "1e400",
        "-1e400",
        "1e-400",
        "5e-324",
        "1.7976931348623157e308",
        "0.30000000000000004",
        "1E2",
        "2.5e+3",
        "-0.0",
        "01",
        "1.",
        ".5",
    ];
    fn gen(r: &mut Rng, depth: u32, out: &mut String) {
        match if depth > 6 { r.next() % 4 } else { r.next() % 7 } {
            0 => out.push_str(r.pick(STRINGS)),
            1 => out.push_str(r.pick(NUMBERS)),
            2 => out.push_str(r.pick(&["true", "false", "null"])),
            3 => out.push_str(r.pick(&["\"x\"", "7", "[]", "{}"])),
            4 | 5 => {
                out.push('{');
                for i in 0..r.next() % 5 {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(r.pick(STRINGS));
                    out.push_str(r.pick(&[":", " : ", ":\n"]));
                    gen(r, depth + 1, out);
                }
                out.push('}');
            }
            _ => {
                out.push('[');
                for i in 0..r.next() % 5 {
                    if i > 0 {
                        out.push(',');
                    }
                    gen(r, depth + 1, out);
                }
                out.push(']');
            }
        }
    }
    let mut corpus: Vec<Vec<u8>> = vec![
        b"{\"a\":1,\"b\":2,\"a\":1}".to_vec(),
        "{\"\u{1f600}\":1,\"\\ud83d\\ude00\":2}".as_bytes().to_vec(),
        b"[1,2".to_vec(),
        b"{} x".to_vec(),
        b"\xef\xbb\xbf{}".to_vec(),
        b"{\"a\":\xc3}".to_vec(),
        b" \t\r\n{} \t\r\n".to_vec(),
        "[".repeat(MAX_DEPTH).into_bytes(),
        format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH)).into_bytes(),
        format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1)).into_bytes(),
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let mut doc = String::new();
        gen(&mut rng, 0, &mut doc);
        corpus.push(doc.into_bytes());
    }
    let (mut ok, mut refused) = (0, 0);
    for input in &corpus {
        let lean = canonicalize_ijson(input);
        let full = parse_ijson(input).map(|v| canonicalize(&v));
        match (&lean, &full) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "different bytes for {:?}", String::from_utf8_lossy(input));
                ok += 1;
            }
            (Err(a), Err(b)) => {
                // With one fault both name it; an input with several may name either.
                let kind = |e: &IJsonError| std::mem::discriminant(e);
                if kind(a) != kind(b) {
                    assert!(
                        matches!(a, IJsonError::DuplicateMember(_)) || matches!(b, IJsonError::DuplicateMember(_)),
                        "{a:?} vs {b:?} for {:?}",
                        String::from_utf8_lossy(input)
                    );
                }
                refused += 1;
            }
            _ => panic!("the paths disagree on {:?}: lean {lean:?}, value {full:?}", String::from_utf8_lossy(input)),
        }
    }
    // The grammar must exercise both outcomes substantially, or this test proves little.
    assert!(ok > 3000 && refused > 3000, "accepted {ok}, refused {refused}");
}

// ------------------------------------------------------------------------------------------------
// The streaming digest (issue 16): canonical bytes written straight into SHA-256
// ------------------------------------------------------------------------------------------------

/// The filter's digest never materialises the canonical form: `request_parameter_digest` checks a
/// JSON body and writes it canonically into the SHA-256 state. On generated documents (numbers with
/// exponents, `-0`, large and tiny magnitudes; escapes and surrogate pairs in names and values;
/// unsorted, non-BMP and duplicate names; nesting up to and beyond the limit) it must give exactly
/// `sha256` of the canonical bytes the value path prints, and refuse exactly what it refuses.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn streaming_digest_equals_sha256_of_canonical_form() {
    use missiongate_wire::digest::{request_parameter_digest, sha256, Sha256Sink};
    use missiongate_wire::jcs::{Canonical, Sink};

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }
    fn number(r: &mut Rng) -> String {
        let sign = if r.below(3) == 0 { "-" } else { "" };
        let int = match r.below(5) {
            0 => "0".to_owned(),
            1 => format!("{}", r.below(10)),
            2 => format!("{}", r.next() % 1_000_000_000_000_000),
            3 => format!("{}", r.next()),
            _ => format!("{}{}", r.below(9) + 1, "0".repeat(r.below(30) as usize)),
        };
        let frac = match r.below(5) {
            0 | 1 => String::new(),
            2 => format!(".{}", r.below(1000)),
            3 => format!(".{}{}", "0".repeat(r.below(9) as usize), r.below(100_000)),
            _ => format!(".{}0", r.below(10)),
        };
        let exp = match r.below(6) {
            0 => format!("e{}", r.below(30)),
            1 => format!("E-{}", r.below(330)),
            2 => format!("e+{}", r.below(310)),
            _ => String::new(),
        };
        format!("{sign}{int}{frac}{exp}")
    }
    fn string(r: &mut Rng) -> String {
        const PIECES: &[&str] = &[
            "a",
            "b",
            "sku",
            "qty",
            "\\u0061",
            "\\u20ac",
            "\u{20ac}",
            "\\ud83d\\ude00",
            "\u{1f600}",
            "\u{fb33}",
            "\\\"",
            "\\\\",
            "\\/",
            "\\b\\f\\n\\r\\t",
            "\\u0000",
            "\\u001F",
            "\u{7f}",
            "\u{e000}",
            "\u{10fffd}",
            "é",
            " ",
        ];
        const RARE: &[&str] = &["\\ud83d", "\\ude00", "\\uffff", "\u{fdd0}", "\\ud800\\u0041", "\\x"];
        let mut s = String::from("\"");
        for _ in 0..r.below(4) {
            if r.below(60) == 0 {
                s.push_str(RARE[r.below(RARE.len() as u64) as usize]);
            } else {
                s.push_str(PIECES[r.below(PIECES.len() as u64) as usize]);
            }
        }
        s.push('"');
        s
    }
    fn value(r: &mut Rng, depth: usize, out: &mut String) {
        let leaf = depth >= 5 || r.below(3) == 0;
        match if leaf { r.below(4) } else { 4 + r.below(2) } {
            0 => out.push_str(&number(r)),
            1 => out.push_str(&string(r)),
            2 => out.push_str(["true", "false", "null", "-0", "-0.0e5", "1e21", "5e-324"][r.below(7) as usize]),
            3 => out.push_str(&number(r)),
            4 => {
                out.push('{');
                for i in 0..r.below(6) {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&string(r));
                    out.push_str([":", " : ", ":\n\t"][r.below(3) as usize]);
                    value(r, depth + 1, out);
                }
                out.push('}');
            }
            _ => {
                out.push('[');
                for i in 0..r.below(6) {
                    if i > 0 {
                        out.push_str([",", " , "][r.below(2) as usize]);
                    }
                    value(r, depth + 1, out);
                }
                out.push(']');
            }
        }
    }

    let json_ct = hdrs(&[("Content-Type", "application/json")]);
    let stream = |doc: &[u8]| -> Result<[u8; 32], IJsonError> {
        let c = Canonical::parse(doc)?;
        let mut sink = Sha256Sink::new();
        c.write_to(&mut sink);
        Ok(sink.finish())
    };
    let mut corpus: Vec<Vec<u8>> = vec![
        br#"{"a":1,"b":2,"a":1}"#.to_vec(),
        br#"{"a":1,"\u0061":2}"#.to_vec(),
        "{\"\u{1f600}\":1,\"\\ud83d\\ude00\":2}".as_bytes().to_vec(),
        br#"[{"x":{"k":true,"k":false}}]"#.to_vec(),
        format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH)).into_bytes(),
        format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1)).into_bytes(),
        format!("{}1{}", r#"{"z":{"a":"#.repeat(MAX_DEPTH / 2), "}}".repeat(MAX_DEPTH / 2)).into_bytes(),
        format!("{}1{}", r#"{"a":"#.repeat(MAX_DEPTH + 1), "}".repeat(MAX_DEPTH + 1)).into_bytes(),
        br#"[-0, 0.0, -0.000, 1e21, 1e-7, 0.000001, 0.0000001, 123.4500, 100e-9, 9007199254740992]"#.to_vec(),
        br#"[9007199254740993]"#.to_vec(),
        br#"[1e400]"#.to_vec(),
        br#"[1e-400, "\ud800"]"#.to_vec(),
    ];
    let mut r = Rng(0x0123_4567_89ab_cdef);
    for _ in 0..6000 {
        let mut doc = String::new();
        value(&mut r, 0, &mut doc);
        corpus.push(doc.into_bytes());
    }
    let (mut ok, mut refused) = (0, 0);
    for doc in &corpus {
        let shown = String::from_utf8_lossy(doc);
        let via_value = parse_ijson(doc).map(|v| canonicalize(&v));
        let streamed = stream(doc);
        let bound = request_parameter_digest("POST", PAYMENTS, &json_ct, &[], doc, None);
        match (&via_value, &streamed) {
            (Ok(c), Ok(h)) => {
                assert_eq!(*h, sha256(c), "{shown}");
                assert_eq!(canonicalize_ijson(doc).as_ref(), Ok(c), "{shown}");
                let (want, _) = request_digest("POST", PAYMENTS, &json_ct, &[], doc).unwrap();
                assert_eq!(bound.as_ref(), Ok(&want), "{shown}");
                ok += 1;
            }
            (Err(a), Err(b)) => {
                let kind = |e: &IJsonError| std::mem::discriminant(e);
                if kind(a) != kind(b) {
                    assert!(
                        matches!(a, IJsonError::DuplicateMember(_)) || matches!(b, IJsonError::DuplicateMember(_)),
                        "{a:?} vs {b:?} for {shown}"
                    );
                }
                assert_eq!(bound, Err(Unbindable::Body(b.clone())), "{shown}");
                refused += 1;
            }
            _ => panic!("the paths disagree on {shown}: value {via_value:?}, streamed {streamed:?}"),
        }
    }
    assert!(ok > 1500 && refused > 300, "accepted {ok}, refused {refused}");

    // Duplicate names are refused by name, as before.
    assert_eq!(stream(br#"{"a":1,"b":2,"a":1}"#), Err(IJsonError::DuplicateMember("a".into())));
    assert_eq!(stream(br#"{"a":1,"\u0061":2}"#), Err(IJsonError::DuplicateMember("a".into())));

    // A raw body: the same digest with or without its hash given, and a wrong media type is refused first.
    let text = hdrs(&[("content-type", "text/plain"), ("idempotency-key", "k-1")]);
    let effect = vec!["idempotency-key".to_owned()];
    let raw = b"hello, partner".repeat(1000);
    let (want, _) = request_digest("PUT", UPLOAD, &text, &effect, &raw).unwrap();
    assert_eq!(request_parameter_digest("PUT", UPLOAD, &text, &effect, &raw, None).unwrap(), want);
    assert_eq!(request_parameter_digest("PUT", UPLOAD, &text, &effect, &raw, Some(&sha256(&raw))).unwrap(), want);
    let twice = hdrs(&[("content-type", "text/plain"), ("content-type", "text/plain")]);
    assert_eq!(request_parameter_digest("PUT", UPLOAD, &twice, &[], &raw, None), Err(Unbindable::ContentType));
    let repeated = hdrs(&[("idempotency-key", "a"), ("Idempotency-Key", "b"), ("content-type", "application/json")]);
    // The body's fault is reported before the repeated header, as `request_digest` does.
    assert_eq!(
        request_parameter_digest("POST", PAYMENTS, &repeated, &effect, b"{\"a\":1,\"a\":2}", None),
        request_digest("POST", PAYMENTS, &repeated, &effect, b"{\"a\":1,\"a\":2}").map(|(d, _)| d)
    );
    assert_eq!(
        request_parameter_digest("POST", PAYMENTS, &repeated, &effect, b"{}", None),
        Err(Unbindable::RepeatedHeader("idempotency-key".into()))
    );
    assert_eq!(request_parameter_digest("GET", PAYMENTS, &json_ct, &[], b"", None).unwrap(), {
        request_digest("GET", PAYMENTS, &json_ct, &[], b"").unwrap().0
    });

    // The sink's buffer: any split of the writes gives the hash of their concatenation.
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    for step in [1usize, 7, 63, 64, 511, 512, 513, 1500, 4095, 4096, 4097, 10_000] {
        let mut sink = Sha256Sink::new();
        for chunk in data.chunks(step) {
            sink.put(chunk);
        }
        assert_eq!(sink.finish(), sha256(&data), "chunks of {step}");
    }
}
