//! RS256 and PS256 (RFC 7518 §3.3, §3.5): RFC 7515 Appendix A.2, and Wycheproof-style vectors made with
//! an independent implementation (pyca/cryptography over OpenSSL: `tests/data/gen_rsa_vectors.py`).
//!
//! Every test also runs compiled to wasm32-unknown-unknown under wasm-bindgen-test
//! (`make test-wasm-core`), so RSA is checked as the filter runs it: as WebAssembly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use missiongate_wire::b64;
use missiongate_wire::jose::{verify_compact, Alg, JoseError, Jwk, VerifyingKey, RSA_MAX_BITS, RSA_MIN_BITS};
use serde_json::{json, Value};

const VECTORS: &str = include_str!("data/rsa_vectors.json");

// RFC 7515 Appendix A.2: the RS256 example (key `n`/`e` and the complete JWS from the RFC).
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_JWS: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";

fn a2_key() -> VerifyingKey {
    let jwk: Jwk = serde_json::from_value(json!({"kty": "RSA", "n": A2_N, "e": "AQAB"})).unwrap();
    jwk.verifying_key().unwrap()
}

fn vectors() -> Value {
    serde_json::from_str(VECTORS).unwrap()
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rfc7515_a2_rs256_verifies() {
    let key = a2_key();
    let (header, payload) = verify_compact(A2_JWS, &key).unwrap();
    assert_eq!(header.alg, "RS256");
    assert!(String::from_utf8(payload).unwrap().contains("\"iss\":\"joe\""));
    // One flipped payload character breaks it.
    let tampered = A2_JWS.replacen("eyJpc3MiOiJqb2Ui", "eyJpc3MiOiJqb2Uj", 1);
    assert_eq!(verify_compact(&tampered, &key).unwrap_err(), JoseError::BadSignature);
    // The same bytes are not a PS256 signature.
    let parts: Vec<&str> = A2_JWS.split('.').collect();
    let sig = b64::decode(parts[2]).unwrap();
    let input = format!("{}.{}", parts[0], parts[1]);
    assert_eq!(key.verify(Alg::Ps256, input.as_bytes(), &sig).unwrap_err(), JoseError::BadSignature);
    assert!(key.verify(Alg::Rs256, input.as_bytes(), &sig).is_ok());
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn generated_vectors() {
    let v = vectors();
    let tests = v["tests"].as_array().unwrap();
    assert!(tests.len() >= 30, "vector file truncated");
    let (mut valid, mut invalid) = (0, 0);
    for t in tests {
        let id = t["tcId"].as_u64().unwrap();
        let comment = t["comment"].as_str().unwrap();
        let jwk: Jwk = serde_json::from_value(v["keys"][t["key"].as_str().unwrap()].clone()).unwrap();
        let key = jwk.verifying_key().unwrap_or_else(|e| panic!("tc {id} ({comment}): key refused: {e}"));
        let r = verify_compact(t["jws"].as_str().unwrap(), &key);
        match t["result"].as_str().unwrap() {
            "valid" => {
                assert!(r.is_ok(), "tc {id} ({comment}): {r:?}");
                valid += 1;
            }
            "invalid" => {
                assert_eq!(r.unwrap_err(), JoseError::BadSignature, "tc {id} ({comment})");
                invalid += 1;
            }
            other => panic!("tc {id}: unknown result {other}"),
        }
    }
    assert_eq!(valid, 4);
    assert!(invalid >= 26);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn short_keys_are_refused_at_load() {
    let v = vectors();
    for k in v["refused_keys"].as_array().unwrap() {
        let jwk: Jwk = serde_json::from_value(k["jwk"].clone()).unwrap();
        assert_eq!(
            jwk.verifying_key().unwrap_err(),
            JoseError::BadKey("RSA modulus shorter than 2048 bits"),
            "{}",
            k["comment"]
        );
    }
    // Its own valid signature changes nothing: there is no key to verify with.
    let jws = v["refused_key_signature"]["jws"].as_str().unwrap();
    assert!(jws.starts_with("eyJ"));
    // A modulus longer than the maximum is refused too (bounded verification cost).
    let long = b64::encode(vec![0xc3u8; RSA_MAX_BITS / 8 + 1]);
    let jwk: Jwk = serde_json::from_value(json!({"kty": "RSA", "n": long, "e": "AQAB"})).unwrap();
    assert_eq!(jwk.verifying_key().unwrap_err(), JoseError::BadKey("RSA modulus longer than 4096 bits"));
    assert_eq!(RSA_MIN_BITS, 2048);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn malformed_rsa_jwks_are_refused() {
    let ok = |extra: Value| {
        let mut j = json!({"kty": "RSA", "n": A2_N, "e": "AQAB"});
        for (k, val) in extra.as_object().unwrap() {
            if val.is_null() {
                j.as_object_mut().unwrap().remove(k);
            } else {
                j[k] = val.clone();
            }
        }
        serde_json::from_value::<Jwk>(j).unwrap().verifying_key()
    };
    assert!(ok(json!({})).is_ok());
    for (extra, why) in [
        (json!({"n": null}), "n missing"),
        (json!({"e": null}), "e missing"),
        (json!({"e": "AAEAAQ"}), "leading zero octet"),
        (json!({"n": format!("AA{A2_N}")}), "leading zero octet"),
        (json!({"e": "Ag"}), "even exponent"),
        (json!({"e": "AQ"}), "exponent 1"),
        (json!({"n": "not base64!"}), "bad encoding"),
        (json!({"d": "AQAB"}), "private member"),
        (json!({"use": "enc"}), "use enc"),
        (json!({"alg": "RS512"}), "alg not RS256/PS256"),
        (json!({"alg": "HS256"}), "HMAC alg"),
    ] {
        assert!(ok(extra.clone()).is_err(), "{why}: {extra}");
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn alg_must_match_the_key_type() {
    // An RSA key without `alg` serves RS256 and PS256 and nothing else.
    let rsa = a2_key();
    assert!(rsa.accepts(Alg::Rs256) && rsa.accepts(Alg::Ps256));
    assert!(!rsa.accepts(Alg::Es256) && !rsa.accepts(Alg::EdDsa));
    assert_eq!(rsa.verify(Alg::Es256, b"x", &[0; 64]).unwrap_err(), JoseError::KeyAlgMismatch);
    // One that names its algorithm is held to it.
    let only_ps: Jwk = serde_json::from_value(json!({"kty": "RSA", "n": A2_N, "e": "AQAB", "alg": "PS256"})).unwrap();
    let only_ps = only_ps.verifying_key().unwrap();
    assert!(only_ps.accepts(Alg::Ps256) && !only_ps.accepts(Alg::Rs256));
    assert_eq!(verify_compact(A2_JWS, &only_ps).unwrap_err(), JoseError::KeyAlgMismatch);
    // EC and OKP keys never verify RS256/PS256.
    let ec: Jwk = serde_json::from_str(r#"{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#).unwrap();
    let ec = ec.verifying_key().unwrap();
    assert!(!ec.accepts(Alg::Rs256) && !ec.accepts(Alg::Ps256));
    assert_eq!(verify_compact(A2_JWS, &ec).unwrap_err(), JoseError::KeyAlgMismatch);
    assert_eq!(Alg::from_name("RS256"), Some(Alg::Rs256));
    assert_eq!(Alg::from_name("PS256"), Some(Alg::Ps256));
    assert_eq!(Alg::from_name("RS384"), None);
    assert_eq!(Alg::from_name("PS512"), None);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn rsa_thumbprint_rfc7638() {
    // RFC 7638 §3.1: the example RSA key's thumbprint.
    let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    let jwk: Jwk = serde_json::from_value(json!({"kty": "RSA", "n": n, "e": "AQAB", "alg": "RS256"})).unwrap();
    assert_eq!(jwk.thumbprint().unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
}
