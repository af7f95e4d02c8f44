//! `sha-256:` digests: envelope anchors, canonical-object digests and raw-octet digests
//! (standards.md §3.4), and the HTTP Operation Profile `parameter_digest` (SPEC §6).
//!
//! Every digest on this wire is `sha-256:` followed by the base64url (no padding) SHA-256. A verifier
//! refuses any other prefix ([`parse_prefixed_digest`]).

use std::borrow::Cow;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::b64;
use crate::jcs::{self, IJsonError};

/// The only digest prefix this wire accepts.
pub const SHA256_PREFIX: &str = "sha-256:";

/// Envelope `typ` of `intent_hash`.
pub const TYP_MISSION_INTENT: &str = "mission-intent";
/// Envelope `typ` of `proposal_hash`.
pub const TYP_MISSION_PROPOSED_AUTHORITY: &str = "mission-proposed-authority";
/// Envelope `typ` of `authority_hash`.
pub const TYP_MISSION_AUTHORITY_SET: &str = "mission-authority-set";
/// Envelope `typ` of one authority entry's digest.
pub const TYP_MISSION_AUTHORITY_ENTRY: &str = "mission-authority-entry";

/// SHA-256 of `bytes`.
pub fn sha256(bytes: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(bytes.as_ref()).into()
}

/// base64url (no padding) of the SHA-256 of `bytes`: the raw-octet digest without its prefix.
pub fn sha256_b64(bytes: impl AsRef<[u8]>) -> String {
    b64::encode(sha256(bytes))
}

/// `sha-256:` + base64url of `hash`.
pub fn format_prefixed(hash: &[u8; 32]) -> String {
    let mut s = String::with_capacity(SHA256_PREFIX.len() + 43);
    s.push_str(SHA256_PREFIX);
    s.push_str(&b64::encode(hash));
    s
}

/// `sha-256:` + base64url SHA-256 of `bytes` (raw-octet digest).
pub fn prefixed_sha256(bytes: impl AsRef<[u8]>) -> String {
    format_prefixed(&sha256(bytes))
}

/// `sha-256:` + base64url SHA-256 of the JCS form of `value` (canonical-object digest, no envelope).
pub fn prefixed_digest_of_canonical(value: &Value) -> String {
    prefixed_sha256(jcs::canonicalize(value))
}

/// The hash inside a `sha-256:` digest string.
///
/// `None` for any other prefix (including other spellings such as `SHA-256:`), for padding, the
/// standard base64 alphabet, non-canonical trailing bits, or a length other than 32 bytes.
pub fn parse_prefixed_digest(s: &str) -> Option<[u8; 32]> {
    let text = s.strip_prefix(SHA256_PREFIX)?;
    if text.len() != 43 {
        return None;
    }
    b64::decode(text).ok()?.try_into().ok()
}

/// JCS bytes of the integrity-anchor envelope `{"typ": typ, "iss": iss, "value": value}`.
pub fn envelope_canonical(typ: &str, iss: &str, value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    // Member names in UTF-16 order: iss < typ < value.
    out.extend_from_slice(b"{\"iss\":");
    jcs::write_string(&mut out, iss);
    out.extend_from_slice(b",\"typ\":");
    jcs::write_string(&mut out, typ);
    out.extend_from_slice(b",\"value\":");
    jcs::canonicalize_into(value, &mut out);
    out.push(b'}');
    out
}

/// Envelope anchor (standards.md §3.4): `sha-256:` + b64url(SHA-256(JCS({"typ","iss","value"}))).
pub fn envelope_hash(typ: &str, iss: &str, value: &Value) -> String {
    prefixed_sha256(envelope_canonical(typ, iss, value))
}

// ---------------------------------------------------------------------------------------------------
// HTTP Operation Profile (SPEC §6)
// ---------------------------------------------------------------------------------------------------

/// `true` for `application/json` and any `+json` structured-syntax suffix (`application/problem+json`),
/// compared case-insensitively, ignoring parameters such as `; charset=utf-8`.
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((ty, subtype)) = essence.split_once('/') else {
        return false;
    };
    if ty.is_empty() || subtype.is_empty() {
        return false;
    }
    if ty.eq_ignore_ascii_case("application") && subtype.eq_ignore_ascii_case("json") {
        return true;
    }
    let sub = subtype.as_bytes();
    sub.len() > 5 && sub.get(sub.len().saturating_sub(5)..).is_some_and(|tail| tail.eq_ignore_ascii_case(b"+json"))
}

/// The `body` member of a parameter object.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyParam {
    /// The request has no body (or an empty one): `body` is omitted.
    None,
    /// A JSON body (`application/json` or `+json`), parsed as I-JSON.
    Json(Value),
    /// A JSON body already in its RFC 8785 canonical form: what [`BodyParam::from_content`] makes
    /// of request bytes, without building a [`Value`].
    Canonical(Vec<u8>),
    /// Any other media type: the SHA-256 of the raw bytes, written as `{"sha-256": "<b64url>"}`.
    Raw([u8; 32]),
}

impl BodyParam {
    /// Classify a request body by its `Content-Type` (SPEC §6).
    ///
    /// A zero-length body counts as no body. A JSON body that is not I-JSON is an error: the request
    /// cannot be bound (400).
    pub fn from_content(content_type: &str, body: &[u8]) -> Result<Self, IJsonError> {
        if body.is_empty() {
            Ok(Self::None)
        } else if is_json_media_type(content_type) {
            jcs::canonicalize_ijson(body).map(Self::Canonical)
        } else {
            Ok(Self::Raw(sha256(body)))
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::None => out.extend_from_slice(b"null"),
            Self::Json(value) => jcs::canonicalize_into(value, out),
            Self::Canonical(bytes) => out.extend_from_slice(bytes),
            Self::Raw(hash) => {
                out.extend_from_slice(b"{\"sha-256\":\"");
                out.extend_from_slice(b64::encode(hash).as_bytes());
                out.extend_from_slice(b"\"}");
            }
        }
    }
}

/// The HTTP Operation Profile parameter object (SPEC §6), normalized: method upper case, header names
/// lower case and unique, sorted in UTF-16 order.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterObject<'a> {
    method: Cow<'a, str>,
    target: &'a str,
    headers: Option<Vec<(String, String)>>,
    body: BodyParam,
}

impl<'a> ParameterObject<'a> {
    /// Build and normalize a parameter object.
    ///
    /// * `method` is upper-cased (ASCII).
    /// * `target` is taken exactly as given: origin + path + query as sent (SPEC §6); the caller builds it.
    /// * `headers`: `None` when the deployment names no effect-bearing headers for the destination
    ///   (member omitted); otherwise the named headers present on the request, which become an object
    ///   from lower-case name to value (`Some(&[])` gives `"headers":{}`). A name given twice (after
    ///   lower-casing) is [`IJsonError::DuplicateMember`]: combine repeated fields before calling.
    pub fn new(
        method: &'a str,
        target: &'a str,
        headers: Option<&[(String, String)]>,
        body: BodyParam,
    ) -> Result<Self, IJsonError> {
        let method = if method.bytes().any(|b| b.is_ascii_lowercase()) {
            Cow::Owned(method.to_ascii_uppercase())
        } else {
            Cow::Borrowed(method)
        };
        let headers = match headers {
            None => None,
            Some(list) => {
                let mut norm: Vec<(String, String)> =
                    list.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.clone())).collect();
                norm.sort_by(|a, b| jcs::cmp_utf16(&a.0, &b.0));
                for pair in norm.windows(2) {
                    if let [(a, _), (b, _)] = pair {
                        if a == b {
                            return Err(IJsonError::DuplicateMember(a.clone()));
                        }
                    }
                }
                Some(norm)
            }
        };
        Ok(Self { method, target, headers, body })
    }

    /// Build the parameter object of a request: `body` is `(content-type, raw bytes)`, see
    /// [`BodyParam::from_content`].
    pub fn from_request(
        method: &'a str,
        target: &'a str,
        headers: Option<&[(String, String)]>,
        body: Option<(&str, &[u8])>,
    ) -> Result<Self, IJsonError> {
        let body = match body {
            None => BodyParam::None,
            Some((content_type, bytes)) => BodyParam::from_content(content_type, bytes)?,
        };
        Self::new(method, target, headers, body)
    }

    /// The upper-case method.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The target, as given.
    pub fn target(&self) -> &str {
        self.target
    }

    /// The normalized headers (lower-case names, sorted), if the member is present.
    pub fn headers(&self) -> Option<&[(String, String)]> {
        self.headers.as_deref()
    }

    /// The body member.
    pub fn body(&self) -> &BodyParam {
        &self.body
    }

    /// Append the JCS form of the parameter object to `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        // Member names in UTF-16 order: body < headers < method < target.
        out.push(b'{');
        if self.body != BodyParam::None {
            out.extend_from_slice(b"\"body\":");
            self.body.write(out);
            out.push(b',');
        }
        if let Some(headers) = &self.headers {
            out.extend_from_slice(b"\"headers\":{");
            for (i, (name, value)) in headers.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                jcs::write_string(out, name);
                out.push(b':');
                jcs::write_string(out, value);
            }
            out.extend_from_slice(b"},");
        }
        out.extend_from_slice(b"\"method\":");
        jcs::write_string(out, &self.method);
        out.extend_from_slice(b",\"target\":");
        jcs::write_string(out, self.target);
        out.push(b'}');
    }

    /// The JCS form of the parameter object.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.target.len().saturating_add(96));
        self.write_canonical(&mut out);
        out
    }

    /// `parameter_digest`: `sha-256:` + base64url SHA-256 of [`Self::canonical_bytes`].
    pub fn digest(&self) -> String {
        prefixed_sha256(self.canonical_bytes())
    }
}

/// `parameter_digest` of an HTTP request (SPEC §6), with the canonical bytes it was computed over.
///
/// `body` is `None` for a request without a body, else `(content-type, raw bytes)`: `application/json`
/// and `+json` bodies must be I-JSON (the error means "unbindable, 400"), other media types are bound
/// by the SHA-256 of their bytes. See [`ParameterObject::new`] for `method`, `target` and `headers`.
pub fn parameter_digest(
    method: &str,
    target: &str,
    headers: Option<&[(String, String)]>,
    body: Option<(&str, &[u8])>,
) -> Result<(String, Vec<u8>), IJsonError> {
    let params = ParameterObject::from_request(method, target, headers, body)?;
    let mut out = Vec::with_capacity(target.len().saturating_add(body.map_or(0, |(_, b)| b.len())).saturating_add(96));
    params.write_canonical(&mut out);
    Ok((prefixed_sha256(&out), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAYMENTS: &str = "https://api.partner.example/v1/payments";

    fn hdrs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn media_types() {
        for ct in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
            "application/problem+json",
            "application/vnd.api+JSON; x=y",
            "text/x+json",
        ] {
            assert!(is_json_media_type(ct), "{ct}");
        }
        for ct in [
            "",
            "text/plain",
            "application/json-seq",
            "application/jsonx",
            "json",
            "application/+json",
            "/json",
            "application/",
            "text/json",
            "application/x-www-form-urlencoded",
        ] {
            assert!(!is_json_media_type(ct), "{ct}");
        }
    }

    #[test]
    fn prefixed_digest_parsing() {
        let h = sha256(b"hello, partner");
        let s = format_prefixed(&h);
        assert_eq!(s, "sha-256:BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs");
        assert_eq!(parse_prefixed_digest(&s), Some(h));
        assert_eq!(parse_prefixed_digest("SHA-256:BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"), None);
        assert_eq!(parse_prefixed_digest("sha-512:BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"), None);
        assert_eq!(parse_prefixed_digest("BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"), None);
        assert_eq!(parse_prefixed_digest("sha-256:BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs="), None);
        assert_eq!(parse_prefixed_digest("sha-256:BFMJ7uKuKzkITG+PmxOd9Ncki90XKwG5CDVgpuqpLhs"), None);
        assert_eq!(parse_prefixed_digest("sha-256:BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLh"), None);
        assert_eq!(parse_prefixed_digest("sha-256:BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhsA"), None);
        // Non-canonical trailing bits ('t' differs from 's' only in the two unused bits).
        assert_eq!(parse_prefixed_digest("sha-256:BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLht"), None);
        assert_eq!(parse_prefixed_digest("sha-256:"), None);
        assert_eq!(parse_prefixed_digest(""), None);
        assert_eq!(parse_prefixed_digest("sha-256:ö"), None);
    }

    #[test]
    fn normalizes_method_and_headers() {
        let h = hdrs(&[("X-B", "2"), ("Idempotency-Key", "k-42"), ("x-a", "1")]);
        let p = ParameterObject::from_request("post", PAYMENTS, Some(&h), None).unwrap();
        assert_eq!(p.method(), "POST");
        assert_eq!(
            String::from_utf8(p.canonical_bytes()).unwrap(),
            r#"{"headers":{"idempotency-key":"k-42","x-a":"1","x-b":"2"},"method":"POST","target":"https://api.partner.example/v1/payments"}"#
        );
        let empty: Vec<(String, String)> = Vec::new();
        let p = ParameterObject::from_request("GET", "https://a.example/", Some(&empty), None).unwrap();
        assert_eq!(p.canonical_bytes(), br#"{"headers":{},"method":"GET","target":"https://a.example/"}"#);
        let dup = hdrs(&[("Idempotency-Key", "a"), ("idempotency-key", "b")]);
        assert_eq!(
            ParameterObject::from_request("POST", PAYMENTS, Some(&dup), None),
            Err(IJsonError::DuplicateMember("idempotency-key".into()))
        );
    }

    #[test]
    fn body_kinds() {
        let (d_none, c_none) = parameter_digest("POST", PAYMENTS, None, None).unwrap();
        let (d_empty, c_empty) = parameter_digest("POST", PAYMENTS, None, Some(("application/json", b""))).unwrap();
        assert_eq!((d_none, c_none), (d_empty, c_empty));
        let (_, c) = parameter_digest("POST", PAYMENTS, None, Some(("text/plain", b"{\"a\":1}"))).unwrap();
        assert!(c.starts_with(b"{\"body\":{\"sha-256\":\""));
        let (_, c) =
            parameter_digest("POST", PAYMENTS, None, Some(("application/merge-patch+json", b"[1.0, \"\\u00e9\"]")))
                .unwrap();
        assert!(c.starts_with("{\"body\":[1,\"é\"],".as_bytes()));
        assert_eq!(
            parameter_digest("POST", PAYMENTS, None, Some(("application/json", br#"{"a":1,"a":1}"#))),
            Err(IJsonError::DuplicateMember("a".into()))
        );
        assert_eq!(
            parameter_digest("POST", PAYMENTS, None, Some(("application/json; charset=utf-8", b"\xc3"))),
            Err(IJsonError::InvalidUtf8)
        );
    }

    #[test]
    fn escapes_in_target_and_headers() {
        let h = hdrs(&[("X-Note", "a\"b\\c\td")]);
        let (_, c) = parameter_digest("GET", "https://a.example/p?q=\"", Some(&h), None).unwrap();
        assert_eq!(c, br#"{"headers":{"x-note":"a\"b\\c\td"},"method":"GET","target":"https://a.example/p?q=\""}"#);
    }

    #[test]
    fn matches_generic_canonicalization() {
        let h = hdrs(&[("Idempotency-Key", "k-42")]);
        let body = br#"{"z":[1e21,0.5,-0],"\u20ac":"x","\ud83d\ude00":null}"#;
        let (digest, canonical) =
            parameter_digest("post", PAYMENTS, Some(&h), Some(("application/json", body))).unwrap();
        let obj = serde_json::json!({
            "method": "POST",
            "target": PAYMENTS,
            "headers": {"idempotency-key": "k-42"},
            "body": jcs::parse_ijson(body).unwrap(),
        });
        assert_eq!(canonical, jcs::canonicalize(&obj));
        assert_eq!(digest, prefixed_digest_of_canonical(&obj));
    }
}
