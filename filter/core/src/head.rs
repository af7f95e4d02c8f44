//! The request head as the host hands it over: header names and values as raw bytes.
//!
//! Envoy passes header values through unchanged: obs-text (bytes 0x80 to 0xFF) is legal in an
//! HTTP/1.1 field value and HTTP/2 carries any byte. Nothing here assumes UTF-8; each header the
//! filter reads is interpreted by its own grammar, and every other header is carried along only when
//! it is readable:
//!
//! | header                                       | value not UTF-8                                   |
//! |----------------------------------------------|---------------------------------------------------|
//! | `:method`, `:scheme`, `:authority`, `:path`  | 400 `malformed_request`                           |
//! | `Authorization`                              | 401 `token_malformed` (Bearer `invalid_token`)    |
//! | `DPoP`                                       | 401 `invalid_dpop_proof` (DPoP challenge)          |
//! | `Content-Type`, an effect-bearing header     | 400 `body_not_canonicalizable`, on a bound call   |
//! | any other header                             | ignored                                           |
//!
//! The last row is decided by the engine (only it knows whether a call is bound and which headers
//! are effect-bearing for the destination): such headers are listed in [`Head::unreadable`].

use crate::decision::Reason;
use crate::engine::{Authz, Extra, PdpAnswer, Request};

/// Why a head cannot be decided at all (rendered as a denial with this reason and detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// Reason of the denial.
    pub reason: Reason,
    /// Detail of the denial.
    pub detail: &'static str,
}

/// The request head, read from bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    method: String,
    scheme: String,
    authority: String,
    path: String,
    authorization: Vec<String>,
    dpop: Vec<String>,
    /// Every header whose name and value are UTF-8, names in lower case, in arrival order
    /// (pseudo-headers included).
    pub headers: Vec<(String, String)>,
    /// Lower-case names of headers whose value is not UTF-8 (in arrival order, repeated as sent).
    pub unreadable: Vec<String>,
    /// Set when the head cannot be decided (a header the filter needs is not UTF-8).
    pub refusal: Option<Refusal>,
}

fn text(bytes: &[u8]) -> Option<String> {
    std::str::from_utf8(bytes).ok().map(str::to_owned)
}

impl Head {
    /// Interpret header pairs as the host returns them (name, value; both raw bytes).
    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Head {
        let mut head = Head { scheme: "http".to_owned(), path: "/".to_owned(), ..Head::default() };
        let mut bad_pseudo = false;
        let mut bad_authorization = false;
        let mut bad_dpop = false;
        for (name, value) in pairs {
            // Envoy only passes token names (RFC 9110 `token`, lower case); a name that is not even
            // UTF-8 cannot be one the filter reads, so it is ignored with its value.
            let Ok(name) = std::str::from_utf8(name.as_ref()) else { continue };
            let name = name.to_ascii_lowercase();
            let value = value.as_ref();
            let Some(v) = text(value) else {
                match name.as_str() {
                    ":method" | ":scheme" | ":authority" | ":path" => bad_pseudo = true,
                    "authorization" => bad_authorization = true,
                    "dpop" => bad_dpop = true,
                    _ => {}
                }
                head.unreadable.push(name);
                continue;
            };
            match name.as_str() {
                ":method" => head.method = v.clone(),
                ":scheme" => head.scheme = v.clone(),
                ":authority" => head.authority = v.clone(),
                ":path" => head.path = v.clone(),
                "authorization" => head.authorization.push(v.clone()),
                "dpop" => head.dpop.push(v.clone()),
                _ => {}
            }
            head.headers.push((name, v));
        }
        head.refusal = if bad_pseudo {
            Some(Refusal { reason: Reason::MalformedRequest, detail: "the request line is not UTF-8" })
        } else if bad_authorization {
            Some(Refusal { reason: Reason::TokenMalformed, detail: "the Authorization header is not UTF-8" })
        } else if bad_dpop {
            Some(Refusal { reason: Reason::InvalidDpopProof, detail: "the DPoP header is not UTF-8" })
        } else {
            None
        };
        head
    }

    /// A head that cannot be decided at all (the host could not read the headers).
    pub fn refused(reason: Reason, detail: &'static str) -> Head {
        Head { refusal: Some(Refusal { reason, detail }), ..Head::default() }
    }

    /// The request as the engine reads it.
    pub fn request(&self) -> Request<'_> {
        let authorization = match self.authorization.as_slice() {
            [] => Authz::Missing,
            [one] => Authz::One(one),
            _ => Authz::Multiple,
        };
        Request {
            method: &self.method,
            scheme: &self.scheme,
            authority: &self.authority,
            path: &self.path,
            authorization,
            dpop: self.dpop.last().map(String::as_str),
            dpop_count: self.dpop.len(),
        }
    }

    /// What the engine reads beyond the request line, with what the host has gathered.
    pub fn extra<'a>(&'a self, body: Option<&'a [u8]>, pdp: Option<&'a PdpAnswer>) -> Extra<'a> {
        Extra { headers: &self.headers, unreadable: &self.unreadable, body, body_sha256: None, pdp }
    }
}

/// Decode the proxy-wasm map serialisation (`u32` count, `count` pairs of `u32` name and value
/// sizes, then each name and value followed by a NUL byte; all integers little-endian) into raw
/// byte pairs. `None` when the bytes do not follow that layout; never a panic.
pub fn decode_pairs(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(b)).ok()
    };
    let count = word(0)?;
    // Each pair takes at least 8 size bytes and 2 NULs: a count beyond that is a lie.
    if count > bytes.len() / 10 {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut at = 4usize.checked_add(count.checked_mul(8)?)?;
    for i in 0..count {
        let sizes = 4 + i * 8;
        let (n, v) = (word(sizes)?, word(sizes + 4)?);
        let name = bytes.get(at..at.checked_add(n)?)?.to_vec();
        at = at.checked_add(n)?.checked_add(1)?;
        let value = bytes.get(at..at.checked_add(v)?)?.to_vec();
        at = at.checked_add(v)?.checked_add(1)?;
        pairs.push((name, value));
    }
    Some(pairs)
}

/// Encode pairs in the proxy-wasm map serialisation (see [`decode_pairs`]).
pub fn encode_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
    let size = 4 + pairs.iter().map(|(n, v)| n.as_ref().len() + v.as_ref().len() + 10).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    let len32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes();
    out.extend_from_slice(&len32(pairs.len()));
    for (n, v) in pairs {
        out.extend_from_slice(&len32(n.as_ref().len()));
        out.extend_from_slice(&len32(v.as_ref().len()));
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}
