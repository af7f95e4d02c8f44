//! Exact non-negative decimals for the `max_amount` constraint (SPEC §2): amounts are compared as
//! the decimal values written, never through binary floating point.
//!
//! Two sources: a decimal string (`"423.50"`: digits, at most one `.` with digits on both sides, no
//! sign, no exponent, no leading zero, at most [`MAX_DECIMAL_CHARS`] characters), and a JSON number
//! from a text parsed with [`crate::jcs::parse_ijson`], which refuses every number whose canonical
//! form denotes another decimal than its text: the decimal of such a number is read from that form,
//! so `5E2` is exactly 500 and `0.1` exactly one tenth.
//!
//! The filter and the portal both use this module: the filter to check a request against a bound,
//! the portal to accept only bounds the filter can check.

use std::cmp::Ordering;
use std::fmt;

/// Longest decimal string accepted, in characters.
pub const MAX_DECIMAL_CHARS: usize = 40;

/// Most digits [`Decimal::to_plain`] and [`Decimal::checked_sub`] write out.
const MAX_PLAIN_DIGITS: i64 = 80;

/// Why a value is not an amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecimalError {
    /// Longer than [`MAX_DECIMAL_CHARS`].
    TooLong,
    /// Not the decimal grammar (an exponent in a string, a sign, a leading zero, spaces...).
    Syntax,
    /// Negative: an amount is never below zero.
    Negative,
    /// Neither a string nor a number.
    NotANumber,
}

impl fmt::Display for DecimalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DecimalError::TooLong => "decimal string is too long",
            DecimalError::Syntax => "not a plain decimal string (digits with an optional fraction)",
            DecimalError::Negative => "amount is negative",
            DecimalError::NotANumber => "amount is neither a decimal string nor a number",
        })
    }
}

impl std::error::Error for DecimalError {}

/// An exact non-negative decimal: `digits × 10^exp`, `digits` without leading or trailing zeros
/// (empty for zero, whose `exp` is 0). So every value has exactly one representation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Decimal {
    digits: Vec<u8>,
    exp: i64,
}

impl Decimal {
    /// Zero.
    pub fn zero() -> Decimal {
        Decimal { digits: Vec::new(), exp: 0 }
    }

    fn normalized(mut digits: Vec<u8>, mut exp: i64) -> Decimal {
        let lead = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..lead);
        while digits.last() == Some(&0) {
            digits.pop();
            exp = exp.saturating_add(1);
        }
        if digits.is_empty() {
            return Decimal::zero();
        }
        Decimal { digits, exp }
    }

    /// Parse a decimal string (module documentation).
    pub fn parse_str(s: &str) -> Result<Decimal, DecimalError> {
        if s.len() > MAX_DECIMAL_CHARS {
            return Err(DecimalError::TooLong);
        }
        if s.starts_with('-') {
            return Err(DecimalError::Negative);
        }
        let (int, frac) = match s.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (s, None),
        };
        let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) || (int.len() > 1 && int.starts_with('0')) {
            return Err(DecimalError::Syntax);
        }
        let frac = frac.unwrap_or("");
        let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let exp = -i64::try_from(frac.len()).map_err(|_| DecimalError::TooLong)?;
        Ok(Decimal::normalized(digits, exp))
    }

    /// The decimal a JSON number denotes. The number must come from [`crate::jcs::parse_ijson`]
    /// (every number exact as written); its canonical (ECMAScript) form is read back exactly.
    pub fn from_json_number(n: &serde_json::Number) -> Result<Decimal, DecimalError> {
        if let Some(u) = n.as_u64() {
            return Decimal::parse_str(&u.to_string());
        }
        if n.as_i64().is_some_and(|i| i < 0) || n.as_f64().is_some_and(|f| f.is_sign_negative() && f != 0.0) {
            return Err(DecimalError::Negative);
        }
        let mut out = Vec::new();
        crate::jcs::write_number(&mut out, n);
        let text = std::str::from_utf8(&out).map_err(|_| DecimalError::Syntax)?;
        Decimal::parse_scientific(text)
    }

    /// `d+(.d+)?([eE][+-]?d+)?` (the ECMAScript number form), non-negative.
    fn parse_scientific(text: &str) -> Result<Decimal, DecimalError> {
        let (mantissa, exp) = match text.split_once(['e', 'E']) {
            Some((m, e)) => {
                let e = e.strip_prefix('+').unwrap_or(e);
                let (neg, digits) = match e.strip_prefix('-') {
                    Some(d) => (true, d),
                    None => (false, e),
                };
                if digits.is_empty() || digits.len() > 6 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(DecimalError::Syntax);
                }
                let v: i64 = digits.parse().map_err(|_| DecimalError::Syntax)?;
                (m, if neg { -v } else { v })
            }
            None => (text, 0),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((i, f)) => (i, f),
            None => (mantissa, ""),
        };
        if int.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || mantissa.len() > MAX_DECIMAL_CHARS
        {
            return Err(DecimalError::Syntax);
        }
        let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let frac_len = i64::try_from(frac.len()).map_err(|_| DecimalError::Syntax)?;
        Ok(Decimal::normalized(digits, exp.saturating_sub(frac_len)))
    }

    /// A JSON value as an amount: a decimal string or (from an I-JSON text) a number.
    pub fn from_json(v: &serde_json::Value) -> Result<Decimal, DecimalError> {
        match v {
            serde_json::Value::String(s) => Decimal::parse_str(s),
            serde_json::Value::Number(n) => Decimal::from_json_number(n),
            _ => Err(DecimalError::NotANumber),
        }
    }

    fn is_zero(&self) -> bool {
        self.digits.is_empty()
    }

    /// Position of the leading digit: `digits.len() + exp` (the value lies in `[10^(m-1), 10^m)`).
    fn magnitude(&self) -> i64 {
        i64::try_from(self.digits.len()).unwrap_or(i64::MAX).saturating_add(self.exp)
    }

    /// The value in plain notation (`"0.01"`, `"500"`), or `None` when that would take more than
    /// 80 digits.
    pub fn to_plain(&self) -> Option<String> {
        if self.is_zero() {
            return Some("0".to_owned());
        }
        let len = i64::try_from(self.digits.len()).ok()?;
        let width = self.magnitude().max(len).max(-self.exp).max(1);
        if width > MAX_PLAIN_DIGITS || self.exp > MAX_PLAIN_DIGITS || -self.exp > MAX_PLAIN_DIGITS {
            return None;
        }
        let d: String = self.digits.iter().map(|x| char::from(b'0' + x)).collect();
        if self.exp >= 0 {
            let zeros = usize::try_from(self.exp).ok()?;
            return Some(format!("{d}{}", "0".repeat(zeros)));
        }
        let frac_len = usize::try_from(-self.exp).ok()?;
        if d.len() > frac_len {
            let (i, f) = d.split_at(d.len() - frac_len);
            Some(format!("{i}.{f}"))
        } else {
            Some(format!("0.{}{d}", "0".repeat(frac_len - d.len())))
        }
    }

    /// `self - other` when `self >= other` and the result fits in 80 digits, else `None`.
    pub fn checked_sub(&self, other: &Decimal) -> Option<Decimal> {
        if self < other {
            return None;
        }
        if other.is_zero() {
            return Some(self.clone());
        }
        let low = self.exp.min(other.exp);
        let high = self.magnitude().max(other.magnitude());
        if high.saturating_sub(low) > MAX_PLAIN_DIGITS {
            return None;
        }
        let width = usize::try_from(high - low).ok()?;
        // Little-endian digit arrays aligned at exponent `low`.
        let spread = |x: &Decimal| -> Option<Vec<u8>> {
            let mut v = vec![0u8; width];
            let shift = usize::try_from(x.exp - low).ok()?;
            for (i, d) in x.digits.iter().rev().enumerate() {
                *v.get_mut(shift + i)? = *d;
            }
            Some(v)
        };
        let (a, b) = (spread(self)?, spread(other)?);
        let mut out = vec![0u8; width];
        let mut borrow = 0i16;
        for i in 0..width {
            let mut d = i16::from(*a.get(i)?) - i16::from(*b.get(i)?) - borrow;
            borrow = 0;
            if d < 0 {
                d += 10;
                borrow = 1;
            }
            *out.get_mut(i)? = u8::try_from(d).ok()?;
        }
        out.reverse();
        Some(Decimal::normalized(out, low))
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        match (self.is_zero(), other.is_zero()) {
            (true, true) => return Ordering::Equal,
            (true, false) => return Ordering::Less,
            (false, true) => return Ordering::Greater,
            (false, false) => {}
        }
        // Same leading position: the digit strings compare as written (no trailing zeros, so a
        // proper prefix is the smaller value).
        self.magnitude().cmp(&other.magnitude()).then_with(|| self.digits.cmp(&other.digits))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_plain() {
            Some(p) => f.write_str(&p),
            None => {
                let d: String = self.digits.iter().map(|x| char::from(b'0' + x)).collect();
                write!(f, "{d}e{}", self.exp)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::parse_str(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn order_and_difference() {
        assert!(d("423.50") < d("500.00"));
        assert_eq!(d("500.00"), d("500"));
        assert!(d("500.01") > d("500.00"));
        assert!(d("0.5") < d("1"));
        assert!(d("0") < d("0.001"));
        assert_eq!(d("500.01").checked_sub(&d("500.00")).and_then(|x| x.to_plain()).as_deref(), Some("0.01"));
        assert_eq!(d("600").checked_sub(&d("500.00")).and_then(|x| x.to_plain()).as_deref(), Some("100"));
        assert_eq!(d("1000.5").checked_sub(&d("999.75")).and_then(|x| x.to_plain()).as_deref(), Some("0.75"));
        assert_eq!(d("1").checked_sub(&d("2")), None);
    }

    #[test]
    fn grammar() {
        for bad in ["", "1e3", "1E3", "+1", " 1", "1 ", "01", "1.", ".5", "1.2.3", "0x10", "١٢"] {
            assert!(Decimal::parse_str(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Decimal::parse_str("-1"), Err(DecimalError::Negative));
        assert_eq!(Decimal::parse_str(&"9".repeat(41)), Err(DecimalError::TooLong));
        assert!(Decimal::parse_str(&"9".repeat(40)).is_ok());
    }

    #[test]
    fn json_numbers_are_read_exactly() {
        let v = crate::jcs::parse_ijson(br#"[5E2, 500, 423.5, 0.1, 1e21, 1e-7, -1, 0]"#).unwrap_or_default();
        let got: Vec<Result<Decimal, DecimalError>> =
            v.as_array().map(|a| a.iter().map(Decimal::from_json).collect()).unwrap_or_default();
        assert_eq!(got[0], Ok(d("500")));
        assert_eq!(got[1], Ok(d("500")));
        assert_eq!(got[2], Ok(d("423.50")));
        assert_eq!(got[3], Ok(d("0.1")));
        assert_eq!(got[4], Ok(d("1000000000000000000000")));
        assert_eq!(got[5], Ok(d("0.0000001")));
        assert_eq!(got[6], Err(DecimalError::Negative));
        assert_eq!(got[7], Ok(Decimal::zero()));
    }
}
