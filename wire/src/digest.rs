//! `sha-256:` digests: envelope anchors, canonical-object digests and raw-octet digests
//! (standards.md §3.4), the HTTP Operation Profile `parameter_digest` (SPEC §6, version 2) and the
//! MCP Tool Call Profile digest (SPEC §7).
//!
//! Every digest on this wire is `sha-256:` followed by the base64url (no padding) SHA-256. A verifier
//! refuses any other prefix ([`parse_prefixed_digest`]).

use std::borrow::Cow;

use core::fmt;

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

/// A SHA-256 state fed through a small fixed buffer: a [`jcs::Sink`] that digests canonical bytes as
/// they are written, so they are never held whole (a body's canonical form can be megabytes).
pub struct Sha256Sink {
    hasher: Sha256,
    buf: [u8; SINK_BUF],
    len: usize,
}

const SINK_BUF: usize = 4096;

impl Default for Sha256Sink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256Sink {
    /// An empty state.
    pub fn new() -> Self {
        Self { hasher: Sha256::new(), buf: [0; SINK_BUF], len: 0 }
    }

    fn flush(&mut self) {
        self.hasher.update(self.buf.get(..self.len).unwrap_or_default());
        self.len = 0;
    }

    /// The SHA-256 of everything written.
    pub fn finish(mut self) -> [u8; 32] {
        self.flush();
        self.hasher.finalize().into()
    }
}

impl jcs::Sink for Sha256Sink {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        let end = self.len.saturating_add(bytes.len());
        if let Some(room) = self.buf.get_mut(self.len..end) {
            room.copy_from_slice(bytes);
            self.len = end;
            return;
        }
        self.flush();
        if bytes.len() >= SINK_BUF {
            self.hasher.update(bytes);
        } else if let Some(room) = self.buf.get_mut(..bytes.len()) {
            room.copy_from_slice(bytes);
            self.len = bytes.len();
        }
    }
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
// HTTP Operation Profile, version 2 (SPEC §6)
// ---------------------------------------------------------------------------------------------------

/// `content_type` of a request whose body comes without a `Content-Type` (SPEC §6).
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Why a request (or a parameter object) cannot be bound to a `parameter_digest` (SPEC §6): the
/// filter answers 400 `body_not_canonicalizable`.
///
/// `Display` never prints body bytes, header values or positions in the body: only the rule (and,
/// for [`Unbindable::RepeatedHeader`], the header's name), so it may go into a problem detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unbindable {
    /// A JSON body is not I-JSON (RFC 7493), including a number binary64 does not hold as written.
    Body(IJsonError),
    /// A header the deployment names effect-bearing was sent more than once (its lower-case name).
    RepeatedHeader(String),
    /// `Content-Type` was sent more than once, or is not a media type (`type/subtype`).
    ContentType,
    /// A parameter object given as JSON does not have the profile's shape; the text says how.
    Shape(&'static str),
}

impl fmt::Display for Unbindable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Body(e) => write!(f, "the JSON body is not I-JSON: {}", e.rule()),
            Self::RepeatedHeader(name) => {
                // A header name, never its value; names that are not tokens are not printed.
                if !name.is_empty() && name.len() <= 64 && name.bytes().all(is_tchar) {
                    write!(f, "the effect-bearing header {name} was sent more than once")
                } else {
                    f.write_str("an effect-bearing header was sent more than once")
                }
            }
            Self::ContentType => f.write_str("Content-Type is repeated or not a media type"),
            Self::Shape(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Unbindable {}

impl From<IJsonError> for Unbindable {
    fn from(e: IJsonError) -> Self {
        Self::Body(e)
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The media type essence of a `Content-Type` value (RFC 9110 §8.3.1): `type/subtype` in lower
/// case, parameters dropped. `None` unless both are non-empty tokens.
pub fn media_type_essence(content_type: &str) -> Option<String> {
    let essence = content_type.split(';').next().unwrap_or_default().trim_matches([' ', '\t']);
    let (ty, subtype) = essence.split_once('/')?;
    let token = |t: &str| !t.is_empty() && t.bytes().all(is_tchar);
    if !token(ty) || !token(subtype) {
        return None;
    }
    Some(essence.to_ascii_lowercase())
}

/// `true` for the essence `application/json` and any `+json` structured-syntax suffix.
fn is_json_essence(essence: &str) -> bool {
    let Some((_, subtype)) = essence.split_once('/') else { return false };
    essence == "application/json" || (subtype.len() > 5 && subtype.ends_with("+json"))
}

/// `true` for `application/json` and any `+json` structured-syntax suffix (`application/problem+json`),
/// compared case-insensitively, ignoring parameters such as `; charset=utf-8`.
pub fn is_json_media_type(content_type: &str) -> bool {
    media_type_essence(content_type).is_some_and(|e| is_json_essence(&e))
}

/// The body members of a parameter object: `content_type` with `body` or `body_sha256`, or nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyParam {
    /// The request has no body (or an empty one): no `content_type`, no body member.
    None,
    /// A JSON body (`application/json` or `+json`) as a parsed I-JSON value: `body`.
    Json {
        /// The media type essence.
        content_type: String,
        /// The parsed body.
        value: Value,
    },
    /// A JSON body already in its RFC 8785 canonical form: what [`BodyParam::from_content`] makes
    /// of request bytes, without building a [`Value`].
    Canonical {
        /// The media type essence.
        content_type: String,
        /// The JCS bytes of the body.
        bytes: Vec<u8>,
    },
    /// Any other media type: `body_sha256`, the SHA-256 of the raw bytes.
    Raw {
        /// The media type essence.
        content_type: String,
        /// SHA-256 of the body bytes.
        sha256: [u8; 32],
    },
}

impl BodyParam {
    /// Classify a request body by its `Content-Type` value (`None`: the header is absent, which
    /// binds `application/octet-stream`) (SPEC §6).
    ///
    /// A zero-length body counts as no body. A `Content-Type` that is not a media type, and a JSON
    /// body that is not I-JSON, are errors: the request cannot be bound (400).
    pub fn from_content(content_type: Option<&str>, body: &[u8]) -> Result<Self, Unbindable> {
        if body.is_empty() {
            return Ok(Self::None);
        }
        let content_type = match content_type {
            None => DEFAULT_CONTENT_TYPE.to_owned(),
            Some(ct) => media_type_essence(ct).ok_or(Unbindable::ContentType)?,
        };
        if is_json_essence(&content_type) {
            Ok(Self::Canonical { content_type, bytes: jcs::canonicalize_ijson(body)? })
        } else {
            Ok(Self::Raw { content_type, sha256: sha256(body) })
        }
    }

    /// The bound media type essence, if the request has a body.
    pub fn content_type(&self) -> Option<&str> {
        match self {
            Self::None => None,
            Self::Json { content_type, .. } | Self::Canonical { content_type, .. } | Self::Raw { content_type, .. } => {
                Some(content_type)
            }
        }
    }

    /// Append the body members (each followed by a comma), in canonical order:
    /// `body` < `body_sha256` < `content_type`.
    fn write_members<S: jcs::Sink + ?Sized>(&self, out: &mut S) {
        match self {
            Self::None => return,
            Self::Json { value, .. } => {
                out.put(b"\"body\":");
                jcs::write_value(value, out);
            }
            Self::Canonical { bytes, .. } => {
                out.put(b"\"body\":");
                out.put(bytes);
            }
            Self::Raw { sha256, .. } => {
                out.put(b"\"body_sha256\":");
                jcs::write_string_bytes(out, b64::encode(sha256).as_bytes());
            }
        }
        out.put(b",\"content_type\":");
        jcs::write_string_bytes(out, self.content_type().unwrap_or_default().as_bytes());
        out.put(b",");
    }
}

/// The HTTP Operation Profile parameter object (SPEC §6, version 2), normalized: method upper case,
/// header names lower case and unique, sorted in UTF-16 order.
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
    ///   (member omitted); otherwise every occurrence of the named headers on the request, which
    ///   become an object from lower-case name to value (`Some(&[])` gives `"headers":{}`). A name
    ///   given twice (after lower-casing) is [`Unbindable::RepeatedHeader`]: a header sent more than
    ///   once makes the request unbindable, so pass every occurrence, never only the first.
    pub fn new(
        method: &'a str,
        target: &'a str,
        headers: Option<&[(String, String)]>,
        body: BodyParam,
    ) -> Result<Self, Unbindable> {
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
                            return Err(Unbindable::RepeatedHeader(a.clone()));
                        }
                    }
                }
                Some(norm)
            }
        };
        Ok(Self { method, target, headers, body })
    }

    /// Build the parameter object of a request: `body` is `(Content-Type value or None when the
    /// header is absent, raw bytes)`, see [`BodyParam::from_content`].
    pub fn from_request(
        method: &'a str,
        target: &'a str,
        headers: Option<&[(String, String)]>,
        body: Option<(Option<&str>, &[u8])>,
    ) -> Result<Self, Unbindable> {
        let body = match body {
            None => BodyParam::None,
            Some((content_type, bytes)) => BodyParam::from_content(content_type, bytes)?,
        };
        Self::new(method, target, headers, body)
    }

    /// A parameter object given as JSON (an agent's access request: SPEC §6's members
    /// `method`, `target`, `headers`, `content_type`, `body`, `body_sha256`), checked against the
    /// profile: `content_type` is an essence (lower case, no parameters) present exactly when a body
    /// member is; `body` only with a JSON media type, `body_sha256` (43 base64url characters) only
    /// with any other; never both. Header names are lower-cased, as [`Self::new`] does.
    ///
    /// `value` should come from [`jcs::parse_ijson`], so its numbers are exact.
    pub fn from_value(value: &'a Value) -> Result<Self, Unbindable> {
        let obj = value.as_object().ok_or(Unbindable::Shape("parameters must be an object"))?;
        if obj
            .keys()
            .any(|k| !matches!(k.as_str(), "method" | "target" | "headers" | "content_type" | "body" | "body_sha256"))
        {
            return Err(Unbindable::Shape(
                "parameters has a member that is not in the HTTP Operation Profile parameter object",
            ));
        }
        let method = obj.get("method").and_then(Value::as_str).ok_or(Unbindable::Shape("method must be a string"))?;
        let target = obj.get("target").and_then(Value::as_str).ok_or(Unbindable::Shape("target must be a string"))?;
        let headers = match obj.get("headers") {
            None => None,
            Some(Value::Object(h)) => {
                let mut list = Vec::with_capacity(h.len());
                for (name, v) in h {
                    let v = v.as_str().ok_or(Unbindable::Shape("headers values must be strings"))?;
                    list.push((name.clone(), v.to_owned()));
                }
                Some(list)
            }
            Some(_) => return Err(Unbindable::Shape("headers must be an object")),
        };
        let content_type = match obj.get("content_type") {
            None => None,
            Some(Value::String(ct)) if media_type_essence(ct).as_deref() == Some(ct.as_str()) => Some(ct.clone()),
            Some(_) => {
                return Err(Unbindable::Shape("content_type must be a media type essence (lower case, no parameters)"))
            }
        };
        let body = match (content_type, obj.get("body"), obj.get("body_sha256")) {
            (None, None, None) => BodyParam::None,
            (Some(_), Some(_), Some(_)) | (None, Some(_), Some(_)) => {
                return Err(Unbindable::Shape("body and body_sha256 exclude each other"))
            }
            (None, _, _) => return Err(Unbindable::Shape("a body member needs content_type")),
            (Some(_), None, None) => return Err(Unbindable::Shape("content_type needs a body or body_sha256 member")),
            (Some(content_type), Some(value), None) => {
                if !is_json_essence(&content_type) {
                    return Err(Unbindable::Shape("body is only for a JSON content_type; use body_sha256"));
                }
                BodyParam::Json { content_type, value: value.clone() }
            }
            (Some(content_type), None, Some(hash)) => {
                if is_json_essence(&content_type) {
                    return Err(Unbindable::Shape("a JSON content_type is bound by body, not body_sha256"));
                }
                let sha256 = hash
                    .as_str()
                    .filter(|h| h.len() == 43)
                    .and_then(|h| b64::decode(h).ok())
                    .and_then(|h| <[u8; 32]>::try_from(h).ok())
                    .ok_or(Unbindable::Shape("body_sha256 must be the base64url (no padding) of 32 bytes"))?;
                BodyParam::Raw { content_type, sha256 }
            }
        };
        Self::new(method, target, headers.as_deref(), body)
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

    /// The body members.
    pub fn body(&self) -> &BodyParam {
        &self.body
    }

    /// Append the JCS form of the parameter object to `out`.
    pub fn write_canonical(&self, out: &mut Vec<u8>) {
        self.write_to(out);
    }

    /// Write the JCS form of the parameter object to any sink.
    fn write_to<S: jcs::Sink + ?Sized>(&self, out: &mut S) {
        // Member names in UTF-16 order: body < body_sha256 < content_type < headers < method < target.
        out.put(b"{");
        self.body.write_members(out);
        self.write_tail(out);
    }

    /// The members after the body ones, and the closing brace.
    fn write_tail<S: jcs::Sink + ?Sized>(&self, out: &mut S) {
        if let Some(headers) = &self.headers {
            out.put(b"\"headers\":{");
            for (i, (name, value)) in headers.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                jcs::write_string_bytes(out, name.as_bytes());
                out.put(b":");
                jcs::write_string_bytes(out, value.as_bytes());
            }
            out.put(b"},");
        }
        out.put(b"\"method\":");
        jcs::write_string_bytes(out, self.method.as_bytes());
        out.put(b",\"target\":");
        jcs::write_string_bytes(out, self.target.as_bytes());
        out.put(b"}");
    }

    /// The JCS form of the parameter object.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.target.len().saturating_add(128));
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
/// `body` is `None` for a request without a body, else `(Content-Type value, or None when the
/// header is absent; raw bytes)`: `application/json` and `+json` bodies must be I-JSON, other media
/// types are bound by the SHA-256 of their bytes. See [`ParameterObject::new`] for `method`,
/// `target` and `headers`. Errors mean "unbindable, 400".
pub fn parameter_digest(
    method: &str,
    target: &str,
    headers: Option<&[(String, String)]>,
    body: Option<(Option<&str>, &[u8])>,
) -> Result<(String, Vec<u8>), Unbindable> {
    let params = ParameterObject::from_request(method, target, headers, body)?;
    let mut out = Vec::with_capacity(target.len().saturating_add(body.map_or(0, |(_, b)| b.len())).saturating_add(128));
    params.write_canonical(&mut out);
    Ok((prefixed_sha256(&out), out))
}

/// `parameter_digest` of an HTTP request as the gateway receives it (SPEC §6): what the filter calls.
///
/// * `request_headers`: every request header field, one entry per occurrence (names in any case).
/// * `effect_headers`: the header names the deployment marks effect-bearing for the destination;
///   empty means the `headers` member is omitted. One of them present more than once is
///   [`Unbindable::RepeatedHeader`].
/// * `body`: the complete body; empty means no body (then `Content-Type` is not bound). With a
///   body, a repeated `Content-Type` is [`Unbindable::ContentType`].
pub fn request_digest(
    method: &str,
    target: &str,
    request_headers: &[(String, String)],
    effect_headers: &[String],
    body: &[u8],
) -> Result<(String, Vec<u8>), Unbindable> {
    let headers = if effect_headers.is_empty() {
        None
    } else {
        let named = |name: &str| effect_headers.iter().any(|h| h.eq_ignore_ascii_case(name));
        Some(request_headers.iter().filter(|(name, _)| named(name)).cloned().collect::<Vec<_>>())
    };
    let body = if body.is_empty() {
        None
    } else {
        let mut content_types =
            request_headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case("content-type")).map(|(_, v)| v);
        let content_type = content_types.next().map(String::as_str);
        if content_types.next().is_some() {
            return Err(Unbindable::ContentType);
        }
        Some((content_type, body))
    };
    parameter_digest(method, target, headers.as_deref(), body)
}

/// [`request_digest`] without the canonical bytes, which are never materialised: a JSON body is
/// checked ([`jcs::Canonical`]) and then written in canonical form straight into the SHA-256 state
/// through a small fixed buffer. The same digest, and the same errors, as [`request_digest`].
///
/// `body_sha256`: the SHA-256 of `body`, when the caller hashed it already (the filter hashes a body
/// that is not JSON as its chunks arrive). It is used only if the body is bound by its hash
/// (`body_sha256`, a media type other than JSON), and must be the hash of `body`.
pub fn request_parameter_digest(
    method: &str,
    target: &str,
    request_headers: &[(String, String)],
    effect_headers: &[String],
    body: &[u8],
    body_sha256: Option<&[u8; 32]>,
) -> Result<String, Unbindable> {
    let headers = if effect_headers.is_empty() {
        None
    } else {
        let named = |name: &str| effect_headers.iter().any(|h| h.eq_ignore_ascii_case(name));
        Some(request_headers.iter().filter(|(name, _)| named(name)).cloned().collect::<Vec<_>>())
    };
    // The body members: none, a hash, or a checked JSON document (written while hashing).
    let mut json: Option<(String, jcs::Canonical<'_>)> = None;
    let mut param = BodyParam::None;
    if !body.is_empty() {
        let mut content_types =
            request_headers.iter().filter(|(name, _)| name.eq_ignore_ascii_case("content-type")).map(|(_, v)| v);
        let content_type = content_types.next().map(String::as_str);
        if content_types.next().is_some() {
            return Err(Unbindable::ContentType);
        }
        let content_type = match content_type {
            None => DEFAULT_CONTENT_TYPE.to_owned(),
            Some(ct) => media_type_essence(ct).ok_or(Unbindable::ContentType)?,
        };
        if is_json_essence(&content_type) {
            json = Some((content_type, jcs::Canonical::parse(body)?));
        } else {
            let sha256 = body_sha256.copied().unwrap_or_else(|| sha256(body));
            param = BodyParam::Raw { content_type, sha256 };
        }
    }
    let params = ParameterObject::new(method, target, headers.as_deref(), param)?;
    let mut sink = Sha256Sink::new();
    match &json {
        Some((content_type, doc)) => {
            use jcs::Sink as _;
            sink.put(b"{\"body\":");
            doc.write_to(&mut sink);
            sink.put(b",\"content_type\":");
            jcs::write_string_bytes(&mut sink, content_type.as_bytes());
            sink.put(b",");
            params.write_tail(&mut sink);
        }
        None => params.write_to(&mut sink),
    }
    Ok(format_prefixed(&sink.finish()))
}

// ---------------------------------------------------------------------------------------------------
// MCP Tool Call Profile (SPEC §7)
// ---------------------------------------------------------------------------------------------------

/// JCS bytes of the MCP Tool Call Profile object `{"arguments","mcp_method","target","tool"}`
/// (SPEC §7): `arguments` is `params.arguments` (`{}` when absent); the JSON-RPC `id` and
/// `params._meta` are not bound. `arguments` should come from [`jcs::parse_ijson`], so its numbers
/// are exact.
pub fn mcp_tool_call_canonical(target: &str, mcp_method: &str, tool: &str, arguments: Option<&Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len().saturating_add(tool.len()).saturating_add(128));
    // Member names in UTF-16 order: arguments < mcp_method < target < tool.
    out.extend_from_slice(b"{\"arguments\":");
    match arguments {
        Some(args) => jcs::canonicalize_into(args, &mut out),
        None => out.extend_from_slice(b"{}"),
    }
    out.extend_from_slice(b",\"mcp_method\":");
    jcs::write_string(&mut out, mcp_method);
    out.extend_from_slice(b",\"target\":");
    jcs::write_string(&mut out, target);
    out.extend_from_slice(b",\"tool\":");
    jcs::write_string(&mut out, tool);
    out.push(b'}');
    out
}

/// `parameter_digest` of an MCP tool call (SPEC §7) from its parts, with the canonical bytes.
pub fn mcp_tool_call_digest(
    target: &str,
    mcp_method: &str,
    tool: &str,
    arguments: Option<&Value>,
) -> (String, Vec<u8>) {
    let canonical = mcp_tool_call_canonical(target, mcp_method, tool, arguments);
    (prefixed_sha256(&canonical), canonical)
}

/// `parameter_digest` of an MCP tool call from the JSON-RPC request body POSTed to `target`
/// (SPEC §7): the body must be I-JSON, a single request object (no batch) with a string `method`
/// and `params` holding a string `name` and, if present, an object `arguments`.
pub fn mcp_tool_call_digest_of_body(target: &str, body: &[u8]) -> Result<(String, Vec<u8>), Unbindable> {
    let request = jcs::parse_ijson(body)?;
    let obj = request.as_object().ok_or(Unbindable::Shape("a JSON-RPC request must be one object"))?;
    let method = obj.get("method").and_then(Value::as_str).ok_or(Unbindable::Shape("method must be a string"))?;
    let params = obj.get("params").and_then(Value::as_object).ok_or(Unbindable::Shape("params must be an object"))?;
    let tool = params.get("name").and_then(Value::as_str).ok_or(Unbindable::Shape("params.name must be a string"))?;
    let arguments = match params.get("arguments") {
        None => None,
        Some(args @ Value::Object(_)) => Some(args),
        Some(_) => return Err(Unbindable::Shape("params.arguments must be an object")),
    };
    Ok(mcp_tool_call_digest(target, method, tool, arguments))
}

/// Whether a parameter object given as JSON is of the MCP Tool Call Profile (it has `mcp_method`)
/// rather than the HTTP Operation Profile.
pub fn is_mcp_parameter_object(value: &Value) -> bool {
    value.get("mcp_method").is_some()
}

/// `parameter_digest` of an MCP Tool Call Profile parameter object given as JSON
/// (`{"target", "mcp_method", "tool", "arguments"}`, SPEC §7), as an agent submits it with an access
/// request: exactly those members, strings for the first three, an object for `arguments` (`{}`
/// when absent). `value` should come from [`jcs::parse_ijson`], so its numbers are exact.
pub fn mcp_tool_call_digest_of_parameters(value: &Value) -> Result<String, Unbindable> {
    let obj = value.as_object().ok_or(Unbindable::Shape("parameters must be an object"))?;
    if obj.keys().any(|k| !matches!(k.as_str(), "target" | "mcp_method" | "tool" | "arguments")) {
        return Err(Unbindable::Shape(
            "parameters has a member that is not in the MCP Tool Call Profile parameter object",
        ));
    }
    let text =
        |name: &'static str, why: &'static str| obj.get(name).and_then(Value::as_str).ok_or(Unbindable::Shape(why));
    let target = text("target", "target must be a string")?;
    let method = text("mcp_method", "mcp_method must be a string")?;
    let tool = text("tool", "tool must be a string")?;
    let arguments = match obj.get("arguments") {
        None => None,
        Some(a @ Value::Object(_)) => Some(a),
        Some(_) => return Err(Unbindable::Shape("arguments must be an object")),
    };
    Ok(mcp_tool_call_digest(target, method, tool, arguments).0)
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
    fn essences() {
        assert_eq!(media_type_essence("Application/JSON; charset=utf-8").as_deref(), Some("application/json"));
        assert_eq!(media_type_essence(" text/plain\t;x=y").as_deref(), Some("text/plain"));
        assert_eq!(media_type_essence("application/vnd.api+JSON").as_deref(), Some("application/vnd.api+json"));
        for bad in ["", "text", "text/", "/plain", "text/pl ain", "te(xt/plain", "text/plain/x", "ö/x", "; a=b"] {
            assert_eq!(media_type_essence(bad), None, "{bad:?}");
        }
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
            Err(Unbindable::RepeatedHeader("idempotency-key".into()))
        );
    }

    #[test]
    fn body_kinds() {
        let (d_none, c_none) = parameter_digest("POST", PAYMENTS, None, None).unwrap();
        let (d_empty, c_empty) =
            parameter_digest("POST", PAYMENTS, None, Some((Some("application/json"), b""))).unwrap();
        assert_eq!((d_none, c_none), (d_empty, c_empty));
        let (_, c) = parameter_digest("POST", PAYMENTS, None, Some((Some("text/plain"), b"{\"a\":1}"))).unwrap();
        assert!(c.starts_with(b"{\"body_sha256\":\""), "{}", String::from_utf8_lossy(&c));
        assert!(c.windows(26).any(|w| w == b"\"content_type\":\"text/plain"));
        let (_, c) = parameter_digest(
            "POST",
            PAYMENTS,
            None,
            Some((Some("application/merge-patch+json"), b"[1.0, \"\\u00e9\"]")),
        )
        .unwrap();
        assert!(c.starts_with("{\"body\":[1,\"é\"],\"content_type\":\"application/merge-patch+json\",".as_bytes()));
        assert_eq!(
            parameter_digest("POST", PAYMENTS, None, Some((Some("application/json"), br#"{"a":1,"a":1}"#))),
            Err(Unbindable::Body(IJsonError::DuplicateMember("a".into())))
        );
        assert_eq!(
            parameter_digest("POST", PAYMENTS, None, Some((Some("application/json; charset=utf-8"), b"\xc3"))),
            Err(Unbindable::Body(IJsonError::InvalidUtf8))
        );
        assert_eq!(
            parameter_digest("POST", PAYMENTS, None, Some((Some("application json"), b"{}"))),
            Err(Unbindable::ContentType)
        );
    }

    #[test]
    fn request_digest_reads_the_header_list() {
        let effect = vec!["idempotency-key".to_owned()];
        let h = hdrs(&[("Content-Type", "application/json"), ("Idempotency-Key", "k-42"), ("x-other", "1")]);
        let (d, c) = request_digest("POST", PAYMENTS, &h, &effect, br#"{"amount":"1.00"}"#).unwrap();
        assert_eq!(
            String::from_utf8(c).unwrap(),
            r#"{"body":{"amount":"1.00"},"content_type":"application/json","headers":{"idempotency-key":"k-42"},"method":"POST","target":"https://api.partner.example/v1/payments"}"#
        );
        assert_eq!(d, "sha-256:UldhSLs_XZgqm4WsxWCCcbBBP58Z_7YFyzFbZE-1Rro");
        // The header twice, even with the same value: unbindable.
        let twice = hdrs(&[("idempotency-key", "k-42"), ("Idempotency-Key", "k-42")]);
        assert_eq!(
            request_digest("POST", PAYMENTS, &twice, &effect, b""),
            Err(Unbindable::RepeatedHeader("idempotency-key".into()))
        );
        // A repeated header nobody named is not bound and does not matter.
        let other = hdrs(&[("x-other", "1"), ("x-other", "2")]);
        assert!(request_digest("POST", PAYMENTS, &other, &effect, b"").is_ok());
        // Content-Type twice on a body: unbindable; without a body it is not bound at all.
        let ct2 = hdrs(&[("content-type", "text/plain"), ("content-type", "application/json")]);
        assert_eq!(request_digest("POST", PAYMENTS, &ct2, &[], b"x"), Err(Unbindable::ContentType));
        assert!(request_digest("POST", PAYMENTS, &ct2, &[], b"").is_ok());
        // No effect-bearing headers named: no headers member.
        let (_, c) = request_digest("GET", PAYMENTS, &h, &[], b"").unwrap();
        assert_eq!(c, br#"{"method":"GET","target":"https://api.partner.example/v1/payments"}"#);
    }

    #[test]
    fn unbindable_display_echoes_no_input() {
        let secret = "s3cr3t-member";
        let e = Unbindable::Body(IJsonError::DuplicateMember(secret.into()));
        assert!(!e.to_string().contains(secret), "{e}");
        assert!(!IJsonError::DuplicateMember(secret.into()).to_string().contains(secret));
        let e = Unbindable::Body(IJsonError::Syntax("expected value at line 1 column 3".into()));
        assert!(!e.to_string().contains("line"), "{e}");
        assert_eq!(
            Unbindable::RepeatedHeader("idempotency-key".into()).to_string(),
            "the effect-bearing header idempotency-key was sent more than once"
        );
        assert!(!Unbindable::RepeatedHeader("a b\"c".into()).to_string().contains("a b"));
    }

    #[test]
    fn from_value_checks_the_shape() {
        let ok = serde_json::json!({"method": "POST", "target": PAYMENTS, "content_type": "text/plain",
            "body_sha256": "BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"});
        let (want, _) =
            parameter_digest("POST", PAYMENTS, None, Some((Some("text/plain"), b"hello, partner"))).unwrap();
        assert_eq!(ParameterObject::from_value(&ok).unwrap().digest(), want);
        let bad = [
            serde_json::json!({"method": "POST", "target": PAYMENTS, "body": {"sha-256": "x"}}),
            serde_json::json!({"method": "POST", "target": PAYMENTS, "content_type": "text/plain"}),
            serde_json::json!({"method": "POST", "target": PAYMENTS, "content_type": "text/plain", "body": "x"}),
            serde_json::json!({"method": "POST", "target": PAYMENTS, "content_type": "application/json",
                "body_sha256": "BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"}),
            serde_json::json!({"method": "POST", "target": PAYMENTS, "content_type": "Application/JSON", "body": {}}),
            serde_json::json!({"method": "POST", "target": PAYMENTS, "content_type": "application/json; charset=utf-8",
                "body": {}}),
            serde_json::json!({"method": "POST", "target": PAYMENTS, "content_type": "text/plain",
                "body_sha256": "BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs="}),
            serde_json::json!({"method": "POST", "target": PAYMENTS, "content_type": "text/plain",
                "body_sha256": "short"}),
            serde_json::json!({"method": "POST", "target": PAYMENTS, "content_type": "application/json", "body": {},
                "body_sha256": "BFMJ7uKuKzkITG-PmxOd9Ncki90XKwG5CDVgpuqpLhs"}),
            serde_json::json!({"method": "POST", "target": PAYMENTS, "extra": 1}),
            serde_json::json!({"method": "POST"}),
            serde_json::json!([]),
        ];
        for b in &bad {
            assert!(matches!(ParameterObject::from_value(b), Err(Unbindable::Shape(_))), "{b}");
        }
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
            parameter_digest("post", PAYMENTS, Some(&h), Some((Some("application/json"), body))).unwrap();
        let obj = serde_json::json!({
            "method": "POST",
            "target": PAYMENTS,
            "headers": {"idempotency-key": "k-42"},
            "content_type": "application/json",
            "body": jcs::parse_ijson(body).unwrap(),
        });
        assert_eq!(canonical, jcs::canonicalize(&obj));
        assert_eq!(digest, prefixed_digest_of_canonical(&obj));
        assert_eq!(ParameterObject::from_value(&obj).unwrap().digest(), digest);
    }
}
