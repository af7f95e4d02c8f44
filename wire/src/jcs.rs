//! RFC 8785 JSON Canonicalization Scheme (JCS) over strict I-JSON (RFC 7493) input.
//!
//! Two halves:
//!
//! * [`parse_ijson`] parses bytes into a [`serde_json::Value`] and refuses everything I-JSON forbids
//!   that `serde_json` would otherwise accept or report vaguely: invalid UTF-8, duplicate member names
//!   (at any depth), lone surrogates, noncharacters, numbers that are not finite binary64, numbers
//!   that binary64 does not hold as written (their JCS form would denote another decimal value, see
//!   [`IJsonError::InexactNumber`]), trailing data, and nesting deeper than [`MAX_DEPTH`]. It never panics and its recursion is bounded, so a
//!   hostile body cannot overflow the stack of the Wasm filter.
//! * [`canonicalize`] / [`canonicalize_into`] write the JCS form: members sorted by UTF-16 code units,
//!   numbers as ECMAScript `Number.prototype.toString`, strings escaped minimally, no whitespace. The
//!   writer is iterative (no recursion on the value's depth) and copies unescaped string runs in bulk.
//!
//! JCS is not "serde_json with sorted keys": `serde_json` sorts by UTF-8 bytes and prints floats its own
//! way (`1e21` as `1e21`, ECMAScript as `1e+21`).

use core::cell::Cell;
use core::cmp::Ordering;
use core::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Deepest nesting of arrays and objects [`parse_ijson`] accepts (the top-level container is depth 1).
///
/// Below `serde_json`'s own limit of 127, so this crate's check is the one that fires, and small enough
/// that parsing stays far from the 1 MiB stack of a `wasm32-wasip1` module.
pub const MAX_DEPTH: usize = 100;

/// Why bytes are not I-JSON (RFC 7493), and so cannot be canonicalized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IJsonError {
    /// The input is not well-formed UTF-8 (RFC 7493 §2.1).
    InvalidUtf8,
    /// An object has two members with this name (RFC 7493 §2.3). Also used for a header named twice in
    /// a parameter object.
    DuplicateMember(String),
    /// A `\u` escape encodes a surrogate that is not part of a valid pair (RFC 7493 §2.1).
    LoneSurrogate,
    /// A string or member name contains a Unicode noncharacter such as U+FFFF (RFC 7493 §2.1).
    Noncharacter,
    /// A number's magnitude is beyond IEEE-754 binary64 (for example `1e400`) (RFC 7493 §2.2).
    NumberOutOfRange,
    /// A number that binary64 does not hold as written: its JCS form (the shortest text that reads
    /// back to the same double) denotes another decimal value, so a signer would approve one number
    /// and the upstream might act on another (SPEC §6; RFC 7493 §2.2). For example `1e-400` (JCS
    /// `0`), `9007199254740993` (`9007199254740992`), `0.10000000000000000001` (`0.1`). `1.0`,
    /// `1e2`, `0.1` and `5E2` are exact in this sense. `-0` (and `-0.0`) is accepted: it denotes
    /// the decimal value zero, which is what its JCS form `0` denotes.
    InexactNumber,
    /// Arrays and objects nest deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Something other than whitespace follows the JSON text.
    TrailingData,
    /// Not JSON at all; the message says where.
    Syntax(String),
}

impl fmt::Display for IJsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUtf8 => f.write_str("not I-JSON: invalid UTF-8"),
            // The name is input: never echoed (it may be large, or secret).
            Self::DuplicateMember(_) => f.write_str("not I-JSON: duplicate member name"),
            Self::LoneSurrogate => f.write_str("not I-JSON: lone surrogate in \\u escape"),
            Self::Noncharacter => f.write_str("not I-JSON: Unicode noncharacter in a string"),
            Self::NumberOutOfRange => f.write_str("not I-JSON: number is not a finite IEEE-754 binary64 value"),
            Self::InexactNumber => {
                f.write_str("not I-JSON: a number that IEEE-754 binary64 does not hold exactly as written")
            }
            Self::TooDeep => write!(f, "not I-JSON: nesting deeper than {MAX_DEPTH}"),
            Self::TrailingData => f.write_str("not JSON: data after the JSON text"),
            Self::Syntax(msg) => write!(f, "not JSON: {msg}"),
        }
    }
}

impl std::error::Error for IJsonError {}

impl IJsonError {
    /// The rule that was broken, as a fixed text with nothing of the input in it (no member name, no
    /// position): what a response to an untrusted client may carry.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::DuplicateMember(_) => "duplicate member name",
            Self::LoneSurrogate => "lone surrogate in a \\u escape",
            Self::Noncharacter => "Unicode noncharacter in a string",
            Self::NumberOutOfRange => "number beyond IEEE-754 binary64",
            Self::InexactNumber => "number that IEEE-754 binary64 does not hold exactly as written",
            Self::TooDeep => "nesting too deep",
            Self::TrailingData => "data after the JSON text",
            Self::Syntax(_) => "not JSON",
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------------

/// Parse `bytes` as strict I-JSON (RFC 7493) into a [`Value`].
///
/// Integers that fit `u64`/`i64` stay integers in the `Value`; [`canonicalize`] prints them through
/// their binary64 value, as ECMAScript would. Larger integers and all other numbers become `f64`
/// (correctly rounded). A number whose canonical form would denote another decimal value than its
/// text (`9007199254740993`, `1e-400`, `0.10000000000000000001`) is refused as
/// [`IJsonError::InexactNumber`], so every number in the result prints back as the value written.
///
/// A leading byte order mark is refused (RFC 8259 §8.1 allows parsers to do so).
pub fn parse_ijson(bytes: &[u8]) -> Result<Value, IJsonError> {
    let text = core::str::from_utf8(bytes).map_err(|_| IJsonError::InvalidUtf8)?;
    strict(text, |seed, de| seed.deserialize(de))
}

/// Run one strict I-JSON deserialization of the whole of `text` (nothing may follow the value),
/// reporting the I-JSON fault the seed recorded, else the one `serde_json`'s error names.
fn strict<'de, T>(
    text: &'de str,
    deserialize: impl FnOnce(
        ValueSeed<'_>,
        &mut serde_json::Deserializer<serde_json::de::StrRead<'de>>,
    ) -> Result<T, serde_json::Error>,
) -> Result<T, IJsonError> {
    let fault = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = deserialize(ValueSeed { depth: 0, fault: &fault }, &mut de).and_then(|value| de.end().map(|()| value));
    let value = parsed.map_err(|err| fault.take().unwrap_or_else(|| classify(&err)))?;
    // Only well-formed JSON gets here, so every number token the scan finds is a JSON number.
    check_numbers(text.as_bytes())?;
    Ok(value)
}

// ---------------------------------------------------------------------------------------------------
// Exact numbers
// ---------------------------------------------------------------------------------------------------

/// Refuse a number whose canonical form would denote another decimal value than its text
/// ([`IJsonError::InexactNumber`]).
///
/// One linear pass over JSON text that has already parsed, with no allocation: outside strings,
/// every `-` or digit starts a number token (literals `true`/`false`/`null` have no digits).
fn check_numbers(text: &[u8]) -> Result<(), IJsonError> {
    let mut rest = text;
    loop {
        // Whitespace and structural bytes between tokens are skipped in bulk.
        let Some(at) = rest.iter().position(|&b| b == b'"' || b == b'-' || b.is_ascii_digit()) else {
            return Ok(());
        };
        let Some((&first, tail)) = rest.get(at..).and_then(<[u8]>::split_first) else {
            return Ok(());
        };
        if first == b'"' {
            // Skip the string: to the first `"` not escaped by a backslash.
            let mut s = tail;
            loop {
                let Some(q) = s.iter().position(|&b| b == b'"' || b == b'\\') else {
                    return Ok(());
                };
                if s.get(q) == Some(&b'"') {
                    s = s.get(q.saturating_add(1)..).unwrap_or_default();
                    break;
                }
                // The backslash and the byte it escapes.
                s = s.get(q.saturating_add(2)..).unwrap_or_default();
            }
            rest = s;
            continue;
        }
        // A number token: one pass for its end, its digit count, whether it has an exponent.
        let token = rest.get(at..).unwrap_or_default();
        let (mut len, mut digits, mut exponent) = (0usize, 0usize, false);
        for &b in token {
            match b {
                b'0'..=b'9' => digits = digits.saturating_add(1),
                b'e' | b'E' => exponent = true,
                b'-' | b'+' | b'.' => {}
                _ => break,
            }
            len = len.saturating_add(1);
        }
        // Without an exponent, a number of at most 15 digits lies well inside binary64's normal
        // range, and every decimal of at most 15 significant digits reads back unchanged from its
        // nearest double (DBL_DIG): its JCS form is the same value.
        if (exponent || digits > 15) && !number_is_exact(token.get(..len).unwrap_or_default()) {
            return Err(IJsonError::InexactNumber);
        }
        rest = token.get(len..).unwrap_or_default();
    }
}

/// `true` when the JSON number `literal` denotes the same decimal value as its JCS form (the
/// ECMAScript `Number.prototype.toString` of the double it reads as).
///
/// Compared as decimals, digit by digit: never through floating-point equality, which would call
/// `0.10000000000000000001` and `0.1` equal.
fn number_is_exact(literal: &[u8]) -> bool {
    let Ok(text) = core::str::from_utf8(literal) else { return false };
    let Ok(f) = text.parse::<f64>() else { return false };
    if !f.is_finite() {
        return false;
    }
    let mut buf = ryu_js::Buffer::new();
    decimal_eq(literal, buf.format_finite(f).as_bytes())
}

/// A decimal number's text split at its parts: `[-] int [. frac] [e|E [+|-] exp]`.
#[derive(Clone, Copy)]
struct DecimalText<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    exp: i64,
}

impl<'a> DecimalText<'a> {
    fn split(text: &'a [u8]) -> Self {
        let (negative, rest) = match text.split_first() {
            Some((b'-', rest)) => (true, rest),
            _ => (false, text),
        };
        let mantissa_end = rest.iter().position(|&b| b == b'e' || b == b'E').unwrap_or(rest.len());
        let (mantissa, exp_text) = rest.split_at(mantissa_end);
        let (int, frac) = match mantissa.iter().position(|&b| b == b'.') {
            Some(dot) => {
                (mantissa.get(..dot).unwrap_or_default(), mantissa.get(dot.saturating_add(1)..).unwrap_or_default())
            }
            None => (mantissa, &[][..]),
        };
        // Saturating: an exponent beyond i64 is far outside binary64 either way.
        let mut exp: i64 = 0;
        let mut exp_negative = false;
        for &b in exp_text.iter().skip(1) {
            match b {
                b'-' => exp_negative = true,
                b'0'..=b'9' => exp = exp.saturating_mul(10).saturating_add(i64::from(b - b'0')),
                _ => {}
            }
        }
        Self { negative, int, frac, exp: if exp_negative { exp.saturating_neg() } else { exp } }
    }

    fn digits(&self) -> core::iter::Chain<core::slice::Iter<'a, u8>, core::slice::Iter<'a, u8>> {
        self.int.iter().chain(self.frac.iter())
    }
}

/// `true` when two decimal number texts denote the same value (`-0` and `0` both denote zero).
pub(crate) fn decimal_eq(a: &[u8], b: &[u8]) -> bool {
    /// Leading zeros, significant digits, and the decimal exponent of the first significant digit.
    fn normal(d: &DecimalText<'_>) -> Option<(usize, usize, i64)> {
        let total = d.int.len().saturating_add(d.frac.len());
        let lead = d.digits().take_while(|&&c| c == b'0').count();
        if lead == total {
            return None; // zero
        }
        let trail = d.digits().rev().take_while(|&&c| c == b'0').count();
        let significant = total.saturating_sub(lead).saturating_sub(trail);
        let int_len = i64::try_from(d.int.len()).unwrap_or(i64::MAX);
        let lead_len = i64::try_from(lead).unwrap_or(i64::MAX);
        Some((lead, significant, int_len.saturating_sub(lead_len).saturating_add(d.exp)))
    }
    let (x, y) = (DecimalText::split(a), DecimalText::split(b));
    match (normal(&x), normal(&y)) {
        (None, None) => true,
        (Some((lead_x, n_x, e_x)), Some((lead_y, n_y, e_y))) => {
            x.negative == y.negative
                && e_x == e_y
                && n_x == n_y
                && x.digits().skip(lead_x).take(n_x).eq(y.digits().skip(lead_y).take(n_y))
        }
        _ => false,
    }
}

/// Map a `serde_json` error to the I-JSON rule it reports.
///
/// `serde_json` does not expose its error codes, so this matches the (stable, tested) messages.
fn classify(err: &serde_json::Error) -> IJsonError {
    let msg = err.to_string();
    let starts = |p: &str| msg.starts_with(p);
    if starts("lone leading surrogate") || starts("unexpected end of hex escape") {
        IJsonError::LoneSurrogate
    } else if starts("number out of range") {
        IJsonError::NumberOutOfRange
    } else if starts("recursion limit exceeded") {
        IJsonError::TooDeep
    } else if starts("trailing characters") {
        IJsonError::TrailingData
    } else if starts("invalid unicode code point") {
        IJsonError::InvalidUtf8
    } else {
        IJsonError::Syntax(msg)
    }
}

/// `true` for U+FDD0..=U+FDEF and the last two code points of every plane.
pub(crate) fn is_noncharacter(c: char) -> bool {
    let n = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&n) || (n & 0xFFFE) == 0xFFFE
}

fn check_chars(s: &str) -> Result<(), IJsonError> {
    // Every noncharacter is encoded in UTF-8 starting with 0xEF or 0xF0..=0xF4: skip the decode
    // unless such a byte is present (it rarely is).
    if s.bytes().any(|b| b >= 0xEF) && s.chars().any(is_noncharacter) {
        return Err(IJsonError::Noncharacter);
    }
    Ok(())
}

/// Deserializes one JSON value at `depth`, recording I-JSON faults in `fault`.
#[derive(Clone, Copy)]
struct ValueSeed<'f> {
    depth: usize,
    fault: &'f Cell<Option<IJsonError>>,
}

impl<'f> ValueSeed<'f> {
    fn fail<E: serde::de::Error>(&self, fault: IJsonError) -> E {
        let err = E::custom(&fault);
        self.fault.set(Some(fault));
        err
    }

    fn enter<E: serde::de::Error>(&self) -> Result<ValueSeed<'f>, E> {
        let depth = self.depth.saturating_add(1);
        if depth > MAX_DEPTH {
            return Err(self.fail(IJsonError::TooDeep));
        }
        Ok(ValueSeed { depth, fault: self.fault })
    }

    fn string<E: serde::de::Error>(&self, s: String) -> Result<String, E> {
        check_chars(&s).map_err(|f| self.fail(f))?;
        Ok(s)
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an I-JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        match Number::from_f64(v) {
            Some(n) => Ok(Value::Number(n)),
            None => Err(self.fail(IJsonError::NumberOutOfRange)),
        }
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        check_chars(v).map_err(|f| self.fail(f))?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(self.string(v)?))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            let name = inner.string(name)?;
            match members.entry(name) {
                Entry::Occupied(slot) => {
                    let dup = IJsonError::DuplicateMember(slot.key().clone());
                    return Err(inner.fail(dup));
                }
                Entry::Vacant(slot) => {
                    let value = map.next_value_seed(inner)?;
                    slot.insert(value);
                }
            }
        }
        Ok(Value::Object(members))
    }
}

// ---------------------------------------------------------------------------------------------------
// The lean path: bytes straight to canonical bytes
// ---------------------------------------------------------------------------------------------------

pub use crate::jcs_stream::{Canonical, Sink};

/// Parse strict I-JSON and append its RFC 8785 canonical form to `out`, without building a
/// [`Value`] (see [`Canonical`]): the same acceptance rules as [`parse_ijson`] (the tests hold the
/// two paths to each other), for the filter's bound calls.
pub fn canonicalize_ijson_into(bytes: &[u8], out: &mut Vec<u8>) -> Result<(), IJsonError> {
    Canonical::parse(bytes)?.write_to(out);
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Serialization
// ---------------------------------------------------------------------------------------------------

/// The RFC 8785 canonical form of `value`.
pub fn canonicalize(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    canonicalize_into(value, &mut out);
    out
}

/// Parse strict I-JSON and return its canonical form (see [`canonicalize_ijson_into`]).
pub fn canonicalize_ijson(bytes: &[u8]) -> Result<Vec<u8>, IJsonError> {
    let mut out = Vec::with_capacity(bytes.len());
    canonicalize_ijson_into(bytes, &mut out)?;
    Ok(out)
}

/// Members of one object, in UTF-16 order.
enum Members<'a> {
    /// The map already iterates in UTF-16 order (the usual case: `serde_json`'s `BTreeMap` order is
    /// code-point order, which differs only for names mixing U+E000..U+FFFF and non-BMP characters).
    InOrder(serde_json::map::Iter<'a>),
    Sorted(std::vec::IntoIter<(&'a String, &'a Value)>),
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, &'a Value);

    fn next(&mut self) -> Option<Self::Item> {
        let (name, value) = match self {
            Self::InOrder(it) => it.next(),
            Self::Sorted(it) => it.next(),
        }?;
        Some((name.as_str(), value))
    }
}

fn members(map: &Map<String, Value>) -> Members<'_> {
    let mut prev: Option<&str> = None;
    let in_order = map.keys().all(|k| {
        let ok = prev.is_none_or(|p| cmp_utf16(p, k) == Ordering::Less);
        prev = Some(k);
        ok
    });
    if in_order {
        Members::InOrder(map.iter())
    } else {
        let mut sorted: Vec<(&String, &Value)> = map.iter().collect();
        // Stable, not `sort_unstable_by`: the result is the same (member names are distinct and the
        // UTF-16 order is total), and the unstable sort was a 19.8 KB instantiation in the filter's
        // .wasm at opt-level 3 against about 7 KB for this one. The comparison is a call of its own
        // (see `cmp_utf16_out_of_line`) so that it is not inlined into every step of the sort.
        sorted.sort_by(|a, b| cmp_utf16_out_of_line(a.0, b.0));
        Members::Sorted(sorted.into_iter())
    }
}

enum Frame<'t> {
    Array(core::slice::Iter<'t, Value>, bool),
    Object(Members<'t>, bool),
}

/// Write the canonical form of `root` to `out`. Iterative: the depth of the tree costs heap (one
/// small frame per open container), never stack.
pub(crate) fn write_value<S: Sink + ?Sized>(root: &Value, out: &mut S) {
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut next = Some(root);
    loop {
        if let Some(v) = next.take() {
            match v {
                Value::Null => out.put(b"null"),
                Value::Bool(true) => out.put(b"true"),
                Value::Bool(false) => out.put(b"false"),
                Value::Number(n) => put_f64(out, number_f64(n)),
                Value::String(s) => write_string_bytes(out, s.as_bytes()),
                Value::Array(items) => {
                    out.put(b"[");
                    stack.push(Frame::Array(items.iter(), true));
                }
                Value::Object(map) => {
                    out.put(b"{");
                    stack.push(Frame::Object(members(map), true));
                }
            }
        }
        let Some(top) = stack.last_mut() else {
            break;
        };
        let close: Option<&[u8]> = match top {
            Frame::Array(items, first) => match items.next() {
                Some(item) => {
                    if !core::mem::replace(first, false) {
                        out.put(b",");
                    }
                    next = Some(item);
                    None
                }
                None => Some(b"]"),
            },
            Frame::Object(members, first) => match members.next() {
                Some((name, item)) => {
                    if !core::mem::replace(first, false) {
                        out.put(b",");
                    }
                    write_string_bytes(out, name.as_bytes());
                    out.put(b":");
                    next = Some(item);
                    None
                }
                None => Some(b"}"),
            },
        };
        if let Some(c) = close {
            out.put(c);
            stack.pop();
        }
    }
}

/// Append the RFC 8785 canonical form of `value` to `out`.
///
/// Iterative: the depth of `value` costs heap (one small frame per open container), never stack.
/// Non-finite numbers cannot be held by a `serde_json::Value` built with this crate's features; should
/// one appear anyway it is written as `null`, as ECMAScript's `JSON.stringify` does.
pub fn canonicalize_into(value: &Value, out: &mut Vec<u8>) {
    write_value(value, out);
}

/// Compare two strings by their UTF-16 code units (RFC 8785 §3.2.3), without transcoding.
///
/// UTF-8 byte order is code-point order, which agrees with UTF-16 order except between U+E000..U+FFFF
/// (UTF-8 lead byte 0xEE/0xEF, one UTF-16 unit 0xE000..) and non-BMP characters (lead 0xF0..0xF4,
/// surrogate units 0xD800..): there UTF-16 puts the non-BMP character first.
pub fn cmp_utf16(a: &str, b: &str) -> Ordering {
    cmp_utf16_bytes(a.as_bytes(), b.as_bytes())
}

/// [`cmp_utf16`] as one call, for the sort in `members`: inlined into every comparison of the
/// standard library's sort (at opt-level 3) it made that sort a single ~20 KB function, which alone
/// took about a sixth of V8's TurboFan compile time of the whole filter at Envoy start (issue 16,
/// VMSTART-FINDINGS.md). A call per comparison costs little next to the byte loop it runs.
#[inline(never)]
fn cmp_utf16_out_of_line(a: &str, b: &str) -> Ordering {
    cmp_utf16_bytes(a.as_bytes(), b.as_bytes())
}

/// [`cmp_utf16`] over the UTF-8 bytes of two strings.
pub(crate) fn cmp_utf16_bytes(a: &[u8], b: &[u8]) -> Ordering {
    for (&x, &y) in a.iter().zip(b) {
        if x != y {
            // The first differing byte lies in the first differing character, at the same offset in
            // both. If it is a continuation byte the lead bytes agree, and so do the orders.
            let upper_bmp = |c: u8| c == 0xEE || c == 0xEF;
            let non_bmp = |c: u8| c >= 0xF0;
            return if (upper_bmp(x) && non_bmp(y)) || (non_bmp(x) && upper_bmp(y)) { y.cmp(&x) } else { x.cmp(&y) };
        }
    }
    a.len().cmp(&b.len())
}

/// Append `n` as ECMAScript `Number.prototype.toString` prints its binary64 value (RFC 8785 §3.2.2.3).
///
/// Integers held as `u64`/`i64` are first rounded to binary64, as ECMAScript would have parsed them.
pub fn write_number(out: &mut Vec<u8>, n: &Number) {
    write_f64(out, number_f64(n));
}

/// The binary64 value ECMAScript would read for `n` (integers rounded to the nearest double).
fn number_f64(n: &Number) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    if let Some(u) = n.as_u64() {
        u as f64
    } else if let Some(i) = n.as_i64() {
        i as f64
    } else {
        n.as_f64().unwrap_or(f64::NAN)
    }
}

/// Append `f` as ECMAScript `Number.prototype.toString` prints it (`-0` as `0`); non-finite as `null`.
pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    put_f64(out, f);
}

fn put_f64<S: Sink + ?Sized>(out: &mut S, f: f64) {
    if f.is_finite() {
        let mut buf = ryu_js::Buffer::new();
        out.put(buf.format_finite(f).as_bytes());
    } else {
        out.put(b"null");
    }
}

/// Append `s` as a JSON string escaped per RFC 8785 §3.2.2.2: only `"`, `\` and U+0000..U+001F are
/// escaped (`\b \t \n \f \r` in short form, the rest as lower-case `\u00xx`); all else is raw UTF-8.
pub fn write_string(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len().saturating_add(2));
    write_string_bytes(out, s.as_bytes());
}

/// [`write_string`] of the UTF-8 bytes of a string, to any sink.
pub(crate) fn write_string_bytes<S: Sink + ?Sized>(out: &mut S, bytes: &[u8]) {
    out.put(b"\"");
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0A => b"\\n",
            0x0C => b"\\f",
            0x0D => b"\\r",
            0x00..=0x1F => b"",
            _ => continue,
        };
        out.put(bytes.get(start..i).unwrap_or_default());
        if short.is_empty() {
            out.put(&[b'\\', b'u', b'0', b'0', hex_digit(b >> 4), hex_digit(b & 0x0F)]);
        } else {
            out.put(short);
        }
        start = i.saturating_add(1);
    }
    out.put(bytes.get(start..).unwrap_or_default());
    out.put(b"\"");
}

fn hex_digit(nibble: u8) -> u8 {
    if nibble < 10 {
        b'0'.wrapping_add(nibble)
    } else {
        b'a'.wrapping_add(nibble.wrapping_sub(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        String::from_utf8(canonicalize(&parse_ijson(text.as_bytes()).unwrap())).unwrap()
    }

    #[test]
    fn simple_values() {
        assert_eq!(canon("null"), "null");
        assert_eq!(canon(" true "), "true");
        assert_eq!(canon("[false, 1, -1, 1.5, \"x\"]"), r#"[false,1,-1,1.5,"x"]"#);
        assert_eq!(canon("{}"), "{}");
        assert_eq!(canon("[]"), "[]");
        assert_eq!(canon("[[],{},[[]]]"), "[[],{},[[]]]");
        assert_eq!(canon(r#"{"b":[1,{"d":1,"c":2}],"a":{}}"#), r#"{"a":{},"b":[1,{"c":2,"d":1}]}"#);
    }

    #[test]
    fn numbers_print_like_ecmascript() {
        assert_eq!(
            canon("[-0, -0.0, 0e5, 10.0, 1e21, 1e20, 1e-7, 1e-6, 100e-9]"),
            "[0,0,0,10,1e+21,100000000000000000000,1e-7,0.000001,1e-7]"
        );
        // Integers beyond 2^53 print through their binary64 value, which is another decimal: refused.
        for inexact in ["9007199254740993", "18446744073709551615", "-9223372036854775808", "1e-400"] {
            assert_eq!(parse_ijson(inexact.as_bytes()), Err(IJsonError::InexactNumber), "{inexact}");
        }
        assert_eq!(canon("[9007199254740992, 1e2, 5E2, 1.0, 0.1]"), "[9007199254740992,100,500,1,0.1]");
        let mut out = Vec::new();
        write_number(&mut out, &Number::from(9_007_199_254_740_993u64));
        write_number(&mut out, &Number::from_f64(1e21).unwrap());
        write_f64(&mut out, f64::NAN);
        assert_eq!(out, b"90071992547409921e+21null");
    }

    #[test]
    fn decimal_comparison() {
        for (a, b) in [
            ("1", "1"),
            ("1.0", "1"),
            ("1e2", "100"),
            ("100e-9", "1e-7"),
            ("0.000001", "1e-6"),
            ("-0", "0"),
            ("-0.0e-5", "0"),
            ("00.0", "0"),
            ("123.4500", "1.2345e2"),
            ("1e+21", "1000000000000000000000"),
            ("0.00012", "1.2e-4"),
        ] {
            assert!(decimal_eq(a.as_bytes(), b.as_bytes()), "{a} == {b}");
            assert!(decimal_eq(b.as_bytes(), a.as_bytes()), "{b} == {a}");
        }
        for (a, b) in [
            ("1", "-1"),
            ("1", "10"),
            ("1", "0"),
            ("0.1", "0.10000000000000000001"),
            ("1e-400", "0"),
            ("12", "21"),
            ("1.2", "12e-2"),
            ("9007199254740993", "9007199254740992"),
            ("1e99999999999999999999", "1e+308"),
        ] {
            assert!(!decimal_eq(a.as_bytes(), b.as_bytes()), "{a} != {b}");
            assert!(!decimal_eq(b.as_bytes(), a.as_bytes()), "{b} != {a}");
        }
    }

    #[test]
    fn number_scan_skips_strings() {
        // Digits inside strings, escaped quotes and member names are not numbers.
        assert!(check_numbers(br#"{"9007199254740993":"1e-400","q\"1e-400":[1,"\\",2]}"#).is_ok());
        assert_eq!(check_numbers(br#"{"a\"":[1,1e-400]}"#), Err(IJsonError::InexactNumber));
        assert_eq!(check_numbers(b"[0.10000000000000000001]"), Err(IJsonError::InexactNumber));
        assert!(check_numbers(b"[0.1000000000000000000]").is_ok());
    }

    #[test]
    fn strings_escape_minimally() {
        let mut out = Vec::new();
        write_string(&mut out, "a\"b\\c\u{8}\t\n\u{c}\r\u{0}\u{1f}\u{7f}\u{2028}/é😀");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\\"b\\\\c\\b\\t\\n\\f\\r\\u0000\\u001f\u{7f}\u{2028}/é😀\"");
    }

    #[test]
    fn utf16_order() {
        let names = [
            "",
            "a",
            "ab",
            "b",
            "\u{7f}",
            "\u{80}",
            "\u{d7ff}",
            "\u{e000}",
            "\u{ffff}",
            "\u{10000}",
            "\u{1f600}",
            "\u{10ffff}",
            "\u{fb33}",
            "\u{20ac}",
            "a\u{ffff}",
            "a\u{10000}",
        ];
        for a in names {
            for b in names {
                let want = a.encode_utf16().cmp(b.encode_utf16());
                assert_eq!(cmp_utf16(a, b), want, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn non_bmp_names_sort_before_upper_bmp() {
        assert_eq!(
            canon("{\"\u{fb33}\":1,\"\u{1f600}\":2,\"\u{20ac}\":3}"),
            "{\"\u{20ac}\":3,\"\u{1f600}\":2,\"\u{fb33}\":1}"
        );
    }

    #[test]
    fn rejects() {
        let err = |t: &[u8]| parse_ijson(t).unwrap_err();
        assert_eq!(err(br#"{"a":1,"a":2}"#), IJsonError::DuplicateMember("a".into()));
        assert_eq!(err(br#"[{"x":{"a":1,"b":{},"a":2}}]"#), IJsonError::DuplicateMember("a".into()));
        // The same name spelled with an escape is still the same name.
        assert_eq!(err(br#"{"a":1,"\u0061":2}"#), IJsonError::DuplicateMember("a".into()));
        assert_eq!(err(b"\"\xff\""), IJsonError::InvalidUtf8);
        assert_eq!(err(br#""\ud800""#), IJsonError::LoneSurrogate);
        assert_eq!(err(br#""\udc00""#), IJsonError::LoneSurrogate);
        assert_eq!(err(br#"{"\ud800x":1}"#), IJsonError::LoneSurrogate);
        assert_eq!(err(br#""\ud800\u0041""#), IJsonError::LoneSurrogate);
        assert_eq!(err(br#""\ud800\ud800""#), IJsonError::LoneSurrogate);
        assert_eq!(err(br#""\uffff""#), IJsonError::Noncharacter);
        assert_eq!(err("{\"\u{fdd0}\":1}".as_bytes()), IJsonError::Noncharacter);
        assert_eq!(err(br#""\udbff\udfff""#), IJsonError::Noncharacter);
        assert_eq!(err(b"1e400"), IJsonError::NumberOutOfRange);
        assert_eq!(err(b"[-1e400]"), IJsonError::NumberOutOfRange);
        assert_eq!(err(b"{} x"), IJsonError::TrailingData);
        assert_eq!(err(b"{}{}"), IJsonError::TrailingData);
        assert!(matches!(err(b""), IJsonError::Syntax(_)));
        assert!(matches!(err(b"{'a':1}"), IJsonError::Syntax(_)));
        assert!(matches!(err(b"[1,]"), IJsonError::Syntax(_)));
        assert!(matches!(err(b"NaN"), IJsonError::Syntax(_)));
        assert!(matches!(err(b"\xef\xbb\xbf{}"), IJsonError::Syntax(_)));
        assert!(matches!(err(b"\"\x01\""), IJsonError::Syntax(_)));
    }

    #[test]
    fn depth_limit() {
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(parse_ijson(ok.as_bytes()).is_ok());
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(parse_ijson(deep.as_bytes()), Err(IJsonError::TooDeep));
        let deep = r#"{"a":"#.repeat(MAX_DEPTH + 1) + "1" + &"}".repeat(MAX_DEPTH + 1);
        assert_eq!(parse_ijson(deep.as_bytes()), Err(IJsonError::TooDeep));
    }

    #[test]
    fn canonicalize_deep_value_without_recursion() {
        // Built by hand, deeper than any parser would allow.
        let mut v = Value::Null;
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        let out = canonicalize(&v);
        assert_eq!(out.len(), 200_004);
        // Dropping a value this deep recurses inside serde_json; unwind it by hand.
        let mut cur = v;
        while let Value::Array(mut items) = cur {
            cur = items.pop().unwrap_or(Value::Null);
        }
    }
}
