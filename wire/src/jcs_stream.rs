//! The lean JCS path: strict I-JSON bytes to RFC 8785 canonical bytes in two linear passes, with no
//! tree of owned values and no intermediate output buffer.
//!
//! 1. [`Canonical::parse`] checks the input against exactly the rules of [`crate::jcs::parse_ijson`]
//!    and records a flat tape of tokens that point into the input (a string without escapes, a
//!    number already in canonical form, is written straight from the input). Each object's member
//!    names are sorted (UTF-16 order) when it closes, as indices into the tape: values are never
//!    copied or moved. Only strings with escapes (decoded) and numbers that need reformatting
//!    (exponents, more than 15 digits) are kept on the side.
//! 2. [`Canonical::write_to`] walks the tape in canonical order and writes to any [`Sink`]: a
//!    `Vec<u8>`, or a SHA-256 state through a small fixed buffer ([`crate::digest::Sha256Sink`]), so a
//!    body's `parameter_digest` never materialises its canonical form.
//!
//! Both passes are iterative: nesting costs one small frame per open container, never stack.

use core::cmp::Ordering;

use crate::jcs::{cmp_utf16_bytes, decimal_eq, is_noncharacter, write_string_bytes, IJsonError, MAX_DEPTH};

/// Where canonical bytes go.
pub trait Sink {
    /// Append `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Null,
    True,
    False,
    /// Input bytes `a..b` are already canonical (a string without escapes, with its quotes; a
    /// number whose canonical text is a prefix of its literal).
    Input,
    /// A string whose decoded text is `side[a..b]` (written escaped, with quotes).
    SideStr,
    /// A number whose canonical text is `side[a..b]`.
    SideNum,
    /// A number that denotes zero (`-0`, `0.0`): `0`.
    Zero,
    /// `[`: its elements follow; `c` is the index after its last token.
    Arr,
    /// `{`: its member names, sorted, are `members[a..a + b]` (each value follows its name);
    /// `c` is the index after its last token.
    Obj,
}

#[derive(Clone, Copy, Debug)]
struct Tok {
    kind: Kind,
    a: u32,
    b: u32,
    c: u32,
}

impl Tok {
    const fn new(kind: Kind, a: u32, b: u32) -> Tok {
        Tok { kind, a, b, c: 0 }
    }
}

/// Bytes that end the fast scan of a string: `"`, `\`, controls, and lead bytes of characters that
/// may be noncharacters (U+F000.. in three bytes, and every non-BMP character).
const STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i < 0x20 || i == b'"' as usize || i == b'\\' as usize || i >= 0xEF;
        i += 1;
    }
    t
};

fn syntax(what: &str) -> IJsonError {
    IJsonError::Syntax(what.to_owned())
}

fn to_u32(n: usize) -> Result<u32, IJsonError> {
    u32::try_from(n).map_err(|_| syntax("document too large"))
}

/// A strict I-JSON document, checked and ready to be written in canonical form.
pub struct Canonical<'a> {
    input: &'a [u8],
    tape: Vec<Tok>,
    members: Vec<u32>,
    side: Vec<u8>,
}

/// An open container while parsing: its tape index and where its names start in `pending`.
#[derive(Clone, Copy)]
struct Open {
    tok: usize,
    pending: usize,
    object: bool,
}

impl<'a> Canonical<'a> {
    /// Check `bytes` as strict I-JSON (RFC 7493): the same rules, and for a single fault the same
    /// error, as [`crate::jcs::parse_ijson`].
    pub fn parse(bytes: &'a [u8]) -> Result<Canonical<'a>, IJsonError> {
        if core::str::from_utf8(bytes).is_err() {
            return Err(IJsonError::InvalidUtf8);
        }
        let mut doc = Canonical {
            input: bytes,
            tape: Vec::with_capacity(bytes.len() / 16 + 4),
            members: Vec::new(),
            side: Vec::new(),
        };
        doc.run()?;
        Ok(doc)
    }

    fn byte(&self, i: usize) -> Option<u8> {
        self.input.get(i).copied()
    }

    fn skip_ws(&self, mut i: usize) -> usize {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.byte(i) {
            i += 1;
        }
        i
    }

    fn run(&mut self) -> Result<(), IJsonError> {
        let mut open: Vec<Open> = Vec::new();
        let mut pending: Vec<Name> = Vec::new();
        let mut inexact = false;
        let mut i = self.skip_ws(0);
        'value: loop {
            // A value starts at `i` (whitespace skipped).
            match self.byte(i) {
                Some(b'{') => {
                    if open.len() >= MAX_DEPTH {
                        return Err(IJsonError::TooDeep);
                    }
                    open.push(Open { tok: self.tape.len(), pending: pending.len(), object: true });
                    self.tape.push(Tok::new(Kind::Obj, 0, 0));
                    i = self.skip_ws(i + 1);
                    if self.byte(i) == Some(b'}') {
                        i += 1;
                        self.close(&mut open, &mut pending)?;
                    } else {
                        i = self.member_name(i, &mut pending)?;
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    if open.len() >= MAX_DEPTH {
                        return Err(IJsonError::TooDeep);
                    }
                    open.push(Open { tok: self.tape.len(), pending: pending.len(), object: false });
                    self.tape.push(Tok::new(Kind::Arr, 0, 0));
                    i = self.skip_ws(i + 1);
                    if self.byte(i) == Some(b']') {
                        i += 1;
                        self.close(&mut open, &mut pending)?;
                    } else {
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    let (tok, end) = self.string(i)?;
                    self.tape.push(tok);
                    i = end;
                }
                Some(b'-' | b'0'..=b'9') => {
                    let (tok, end) = self.number(i, &mut inexact)?;
                    self.tape.push(tok);
                    i = end;
                }
                Some(b't') => i = self.literal(i, b"true", Kind::True)?,
                Some(b'f') => i = self.literal(i, b"false", Kind::False)?,
                Some(b'n') => i = self.literal(i, b"null", Kind::Null)?,
                Some(_) => return Err(syntax("expected value")),
                None => return Err(syntax("EOF while parsing a value")),
            }
            // After a value: a separator, a close, or the end.
            loop {
                i = self.skip_ws(i);
                let Some(top) = open.last() else {
                    if i < self.input.len() {
                        return Err(IJsonError::TrailingData);
                    }
                    return if inexact { Err(IJsonError::InexactNumber) } else { Ok(()) };
                };
                match (self.byte(i), top.object) {
                    (Some(b','), false) => {
                        i = self.skip_ws(i + 1);
                        continue 'value;
                    }
                    (Some(b','), true) => {
                        i = self.skip_ws(i + 1);
                        i = self.member_name(i, &mut pending)?;
                        continue 'value;
                    }
                    (Some(b']'), false) | (Some(b'}'), true) => {
                        i += 1;
                        self.close(&mut open, &mut pending)?;
                    }
                    (None, _) => return Err(syntax("EOF while parsing a list or an object")),
                    (Some(_), false) => return Err(syntax("expected `,` or `]`")),
                    (Some(_), true) => return Err(syntax("expected `,` or `}`")),
                }
            }
        }
    }

    /// A member name at `i`, then `:`: the index of the value's first byte.
    fn member_name(&mut self, i: usize, pending: &mut Vec<Name>) -> Result<usize, IJsonError> {
        match self.byte(i) {
            Some(b'"') => {}
            Some(_) => return Err(syntax("key must be a string")),
            None => return Err(syntax("EOF while parsing an object")),
        }
        let (tok, end) = self.string(i)?;
        let at = to_u32(self.tape.len())?;
        self.tape.push(tok);
        let prefix = name_prefix(name_bytes(self.input, &self.tape, &self.side, at));
        pending.push(Name { prefix, at });
        let i = self.skip_ws(end);
        match self.byte(i) {
            Some(b':') => Ok(self.skip_ws(i + 1)),
            Some(_) => Err(syntax("expected `:`")),
            None => Err(syntax("EOF while parsing an object")),
        }
    }

    /// Close the innermost container: an object's names are sorted (duplicates refused) now.
    fn close(&mut self, open: &mut Vec<Open>, pending: &mut Vec<Name>) -> Result<(), IJsonError> {
        let Some(top) = open.pop() else { return Err(syntax("unbalanced")) };
        let end = to_u32(self.tape.len())?;
        if top.object {
            let names = pending.get_mut(top.pending..).unwrap_or_default();
            let (input, tape, side) = (self.input, &self.tape, &self.side);
            let order = |a: &Name, b: &Name| match (a.prefix, b.prefix) {
                (Some(x), Some(y)) if x != y => x.cmp(&y),
                _ => cmp_utf16_bytes(name_bytes(input, tape, side, a.at), name_bytes(input, tape, side, b.at)),
            };
            if names.windows(2).any(|w| matches!(w, [a, b] if order(a, b) != Ordering::Less)) {
                names.sort_unstable_by(order);
                for w in names.windows(2) {
                    if let [a, b] = w {
                        if order(a, b) == Ordering::Equal {
                            let name = String::from_utf8_lossy(name_bytes(input, tape, side, a.at)).into_owned();
                            return Err(IJsonError::DuplicateMember(name));
                        }
                    }
                }
            }
            let start = to_u32(self.members.len())?;
            let count = to_u32(names.len())?;
            self.members.extend(names.iter().map(|n| n.at));
            pending.truncate(top.pending);
            if let Some(t) = self.tape.get_mut(top.tok) {
                *t = Tok { kind: Kind::Obj, a: start, b: count, c: end };
            }
        } else if let Some(t) = self.tape.get_mut(top.tok) {
            t.c = end;
        }
        Ok(())
    }

    fn literal(&mut self, i: usize, word: &[u8], kind: Kind) -> Result<usize, IJsonError> {
        let end = i + word.len();
        if self.input.get(i..end) == Some(word) {
            self.tape.push(Tok::new(kind, 0, 0));
            Ok(end)
        } else {
            Err(syntax("expected ident"))
        }
    }

    /// A string at `i` (its opening quote): its token and the index after its closing quote.
    fn string(&mut self, i: usize) -> Result<(Tok, usize), IJsonError> {
        let input = self.input;
        let mut j = i + 1;
        let mut nonchar = false;
        loop {
            let rest = input.get(j..).unwrap_or_default();
            j += rest.iter().position(|&c| STOP[usize::from(c)]).unwrap_or(rest.len());
            match self.byte(j) {
                None => return Err(syntax("EOF while parsing a string")),
                Some(b'"') => {
                    if nonchar {
                        return Err(IJsonError::Noncharacter);
                    }
                    return Ok((Tok::new(Kind::Input, to_u32(i)?, to_u32(j + 1)?), j + 1));
                }
                Some(b'\\') => break,
                Some(c) if c < 0x20 => return Err(syntax("control character while parsing a string")),
                Some(_) => {
                    let (ch, len) = utf8_char(input, j);
                    nonchar |= is_noncharacter(ch);
                    j += len;
                }
            }
        }
        // Escapes: decode the whole string to the side.
        let start = self.side.len();
        self.side.extend_from_slice(input.get(i + 1..j).unwrap_or_default());
        loop {
            match self.byte(j) {
                None => return Err(syntax("EOF while parsing a string")),
                Some(b'"') => {
                    if nonchar {
                        return Err(IJsonError::Noncharacter);
                    }
                    let tok = Tok::new(Kind::SideStr, to_u32(start)?, to_u32(self.side.len())?);
                    return Ok((tok, j + 1));
                }
                Some(b'\\') => {
                    let esc = self.byte(j + 1).ok_or_else(|| syntax("EOF while parsing a string"))?;
                    j += 2;
                    let c = match esc {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let (c, end) = self.unicode_escape(j)?;
                            j = end;
                            c
                        }
                        _ => return Err(syntax("invalid escape")),
                    };
                    nonchar |= is_noncharacter(c);
                    let mut buf = [0u8; 4];
                    self.side.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(c) if c < 0x20 => return Err(syntax("control character while parsing a string")),
                Some(c) => {
                    let len = if c >= 0xEF {
                        let (ch, len) = utf8_char(input, j);
                        nonchar |= is_noncharacter(ch);
                        len
                    } else {
                        1
                    };
                    self.side.extend_from_slice(input.get(j..j + len).unwrap_or_default());
                    j += len;
                }
            }
        }
    }

    fn hex4(&self, j: usize) -> Result<u32, IJsonError> {
        let mut n = 0u32;
        for k in j..j + 4 {
            let d = match self.byte(k) {
                None => return Err(syntax("EOF while parsing a string")),
                Some(c) => char::from(c).to_digit(16).ok_or_else(|| syntax("invalid escape"))?,
            };
            n = (n << 4) | d;
        }
        Ok(n)
    }

    /// The four hex digits after `\u` at `j` (and a low surrogate escape after a high one), as
    /// `serde_json` reads them: a lone surrogate is refused.
    fn unicode_escape(&self, j: usize) -> Result<(char, usize), IJsonError> {
        let n = self.hex4(j)?;
        let j = j + 4;
        if (0xDC00..=0xDFFF).contains(&n) {
            return Err(IJsonError::LoneSurrogate);
        }
        if !(0xD800..=0xDBFF).contains(&n) {
            return char::from_u32(n).map(|c| (c, j)).ok_or(IJsonError::LoneSurrogate);
        }
        match self.byte(j) {
            None => return Err(syntax("EOF while parsing a string")),
            Some(b'\\') => {}
            Some(_) => return Err(IJsonError::LoneSurrogate),
        }
        match self.byte(j + 1) {
            None => return Err(syntax("EOF while parsing a string")),
            Some(b'u') => {}
            Some(_) => return Err(IJsonError::LoneSurrogate),
        }
        let low = self.hex4(j + 2)?;
        if !(0xDC00..=0xDFFF).contains(&low) {
            return Err(IJsonError::LoneSurrogate);
        }
        let c = 0x10000 + ((n - 0xD800) << 10) + (low - 0xDC00);
        char::from_u32(c).map(|c| (c, j + 6)).ok_or(IJsonError::LoneSurrogate)
    }

    /// A number at `i`: its token and the index after it. A number binary64 does not hold as
    /// written sets `inexact` (reported once the whole text has parsed, as `parse_ijson` does).
    fn number(&mut self, i: usize, inexact: &mut bool) -> Result<(Tok, usize), IJsonError> {
        let input = self.input;
        let digits_from = |mut k: usize| {
            while let Some(b'0'..=b'9') = input.get(k) {
                k += 1;
            }
            k
        };
        let negative = self.byte(i) == Some(b'-');
        let int_start = if negative { i + 1 } else { i };
        let int_end = match self.byte(int_start) {
            Some(b'0') => {
                if let Some(b'0'..=b'9') = self.byte(int_start + 1) {
                    return Err(syntax("invalid number"));
                }
                int_start + 1
            }
            Some(b'1'..=b'9') => digits_from(int_start + 1),
            Some(_) => return Err(syntax("invalid number")),
            None => return Err(syntax("EOF while parsing a value")),
        };
        let mut end = int_end;
        let mut frac_end = int_end;
        if self.byte(end) == Some(b'.') {
            frac_end = digits_from(end + 1);
            if frac_end == end + 1 {
                return Err(syntax("invalid number"));
            }
            end = frac_end;
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.byte(end) {
            exponent = true;
            let mut k = end + 1;
            if let Some(b'+' | b'-') = self.byte(k) {
                k += 1;
            }
            let exp_end = digits_from(k);
            if exp_end == k {
                return Err(syntax("invalid number"));
            }
            end = exp_end;
        }
        let int = input.get(int_start..int_end).unwrap_or_default();
        let frac = input.get((int_end + 1).min(frac_end)..frac_end).unwrap_or_default();
        let digits = int.len() + frac.len();
        if !exponent && digits <= 15 {
            // At most 15 digits and no exponent: the nearest double prints back as the same
            // decimal (DBL_DIG), so the canonical text is the literal without trailing fraction
            // zeros, unless it is zero, or below 1e-6 (printed with an exponent).
            let zero = int == b"0" && frac.iter().all(|&c| c == b'0');
            if zero {
                return Ok((Tok::new(Kind::Zero, 0, 0), end));
            }
            let tiny = int == b"0" && frac.iter().take_while(|&&c| c == b'0').count() >= 6;
            if !tiny {
                let kept = frac.len() - frac.iter().rev().take_while(|&&c| c == b'0').count();
                let canon_end = if kept == 0 { int_end } else { int_end + 1 + kept };
                return Ok((Tok::new(Kind::Input, to_u32(i)?, to_u32(canon_end)?), end));
            }
        }
        let literal = input.get(i..end).unwrap_or_default();
        let value = core::str::from_utf8(literal).ok().and_then(|t| t.parse::<f64>().ok()).unwrap_or(f64::NAN);
        if !value.is_finite() {
            return Err(IJsonError::NumberOutOfRange);
        }
        let mut buf = ryu_js::Buffer::new();
        let text = buf.format_finite(value).as_bytes();
        if (exponent || digits > 15) && !decimal_eq(literal, text) {
            *inexact = true;
        }
        let start = to_u32(self.side.len())?;
        self.side.extend_from_slice(text);
        Ok((Tok::new(Kind::SideNum, start, to_u32(self.side.len())?), end))
    }

    /// Write the canonical form to `out`.
    pub fn write_to<S: Sink + ?Sized>(&self, out: &mut S) {
        enum Frame {
            Arr { next: u32, end: u32, first: bool },
            Obj { next: u32, end: u32, first: bool },
        }
        let mut stack: Vec<Frame> = Vec::new();
        let mut cur: u32 = 0;
        loop {
            // Write the value at `cur`.
            let Some(t) = self.tape.get(cur as usize) else { return };
            match t.kind {
                Kind::Null => out.put(b"null"),
                Kind::True => out.put(b"true"),
                Kind::False => out.put(b"false"),
                Kind::Zero => out.put(b"0"),
                Kind::Input => out.put(self.input.get(t.a as usize..t.b as usize).unwrap_or_default()),
                Kind::SideNum => out.put(self.side.get(t.a as usize..t.b as usize).unwrap_or_default()),
                Kind::SideStr => write_string_bytes(out, self.side.get(t.a as usize..t.b as usize).unwrap_or_default()),
                Kind::Arr => {
                    if t.c == cur + 1 {
                        out.put(b"[]");
                    } else {
                        out.put(b"[");
                        stack.push(Frame::Arr { next: cur + 1, end: t.c, first: true });
                    }
                }
                Kind::Obj => {
                    if t.b == 0 {
                        out.put(b"{}");
                    } else {
                        out.put(b"{");
                        stack.push(Frame::Obj { next: t.a, end: t.a + t.b, first: true });
                    }
                }
            }
            // Find the next value to write, closing finished containers.
            loop {
                match stack.last_mut() {
                    None => return,
                    Some(Frame::Arr { next, end, first }) => {
                        if *next >= *end {
                            out.put(b"]");
                            stack.pop();
                            continue;
                        }
                        if !core::mem::replace(first, false) {
                            out.put(b",");
                        }
                        cur = *next;
                        *next = self.after(cur);
                        break;
                    }
                    Some(Frame::Obj { next, end, first }) => {
                        if *next >= *end {
                            out.put(b"}");
                            stack.pop();
                            continue;
                        }
                        let Some(&name) = self.members.get(*next as usize) else { return };
                        *next += 1;
                        if !core::mem::replace(first, false) {
                            out.put(b",");
                        }
                        let (Some(key), value) = (self.tape.get(name as usize), self.tape.get(name as usize + 1))
                        else {
                            return;
                        };
                        match (key.kind, value) {
                            // `"name":value` as one run of input when it is canonical as written.
                            (Kind::Input, Some(v)) if v.kind == Kind::Input && v.a == key.b + 1 => {
                                out.put(self.input.get(key.a as usize..v.b as usize).unwrap_or_default());
                                continue;
                            }
                            (Kind::SideStr, _) => {
                                write_string_bytes(
                                    out,
                                    self.side.get(key.a as usize..key.b as usize).unwrap_or_default(),
                                );
                            }
                            _ => out.put(self.input.get(key.a as usize..key.b as usize).unwrap_or_default()),
                        }
                        out.put(b":");
                        cur = name + 1;
                        break;
                    }
                }
            }
        }
    }

    /// The index of the token after the value at `at` (and everything inside it).
    fn after(&self, at: u32) -> u32 {
        match self.tape.get(at as usize) {
            Some(Tok { kind: Kind::Arr | Kind::Obj, c, .. }) => *c,
            _ => at + 1,
        }
    }
}

/// A member name while its object is open: its tape index, and its first eight bytes as a
/// big-endian number (zero-padded) when none of them is 0xEE or above, which orders two names
/// exactly as UTF-16 does whenever the two numbers differ (a cheap first comparison for the sort).
#[derive(Clone, Copy)]
struct Name {
    prefix: Option<u64>,
    at: u32,
}

fn name_prefix(bytes: &[u8]) -> Option<u64> {
    let mut word = [0u8; 8];
    for (w, &b) in word.iter_mut().zip(bytes) {
        if b >= 0xEE {
            return None;
        }
        *w = b;
    }
    Some(u64::from_be_bytes(word))
}

/// The decoded bytes of the member name at tape index `t` (without quotes).
fn name_bytes<'s>(input: &'s [u8], tape: &[Tok], side: &'s [u8], t: u32) -> &'s [u8] {
    match tape.get(t as usize) {
        Some(Tok { kind: Kind::SideStr, a, b, .. }) => side.get(*a as usize..*b as usize).unwrap_or_default(),
        Some(Tok { a, b, .. }) => input.get(*a as usize + 1..(*b as usize).saturating_sub(1)).unwrap_or_default(),
        None => &[],
    }
}

/// The character starting at `at` in valid UTF-8 (a lead byte of 0xEF or more) and its length.
fn utf8_char(input: &[u8], at: usize) -> (char, usize) {
    let b = |k: usize| u32::from(input.get(at + k).copied().unwrap_or(0) & 0x3F);
    let lead = u32::from(input.get(at).copied().unwrap_or(0));
    let (cp, len) = if lead >= 0xF0 {
        (((lead & 0x07) << 18) | (b(1) << 12) | (b(2) << 6) | b(3), 4)
    } else {
        (((lead & 0x0F) << 12) | (b(1) << 6) | b(2), 3)
    };
    (char::from_u32(cp).unwrap_or('\u{0}'), len)
}
