//! Constraints checked at the edge (SPEC §2, "Authority", `constraints`).
//!
//! The token says what a constraint bounds (`"max_amount": {"amount": "500.00", "currency": "USD"}`,
//! parsed by [`missiongate_wire::constraints`]); the deployment says where the constrained value lives
//! in an operation's parameters: a map from constraint name to JSON Pointers (RFC 6901) into the
//! bound JSON body of a named HTTP operation (or, later, an MCP tool call's `arguments`):
//!
//! ```json
//! {"max_amount": {"amount": "/amount", "currency": "/currency"},
//!  "tenant": {"equals": "/tenant"}, "vendors": {"one_of": "/vendor_id"}}
//! ```
//!
//! [`parse_mappings`] validates that map at load; [`check`] checks one constraint of an entry
//! against the parameters. A constraint without a mapping for the operation at hand cannot be
//! checked, so its entry permits nothing for it (fail closed).

use missiongate_wire::constraints::{valid_name, Constraint, ConstraintKind, MAX_CONSTRAINTS};
use missiongate_wire::decimal::Decimal;
use serde::Serialize;
use serde_json::Value;

use crate::config_error::{err, ConfigError};

/// Longest JSON Pointer accepted in a mapping, in bytes.
pub const MAX_POINTER_BYTES: usize = 256;

/// Where one constraint's value lives in the parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapping {
    /// `max_amount`: the amount and the currency.
    MaxAmount {
        /// Pointer to the amount (a decimal string or an exact JSON number).
        amount: String,
        /// Pointer to the currency code.
        currency: String,
    },
    /// `tenant`: the value must equal the constraint's.
    Equals(String),
    /// A list constraint: the value must be one of the constraint's.
    OneOf(String),
}

impl Mapping {
    fn kind(&self) -> ConstraintKind {
        match self {
            Mapping::MaxAmount { .. } => ConstraintKind::MaxAmount,
            Mapping::Equals(_) => ConstraintKind::Tenant,
            Mapping::OneOf(_) => ConstraintKind::List,
        }
    }
}

/// The mappings of one operation (or tool), by constraint name.
pub type Mappings = Vec<(String, Mapping)>;

/// A JSON Pointer (RFC 6901): empty, or `/`-separated reference tokens where `~` is only ever
/// followed by `0` or `1`; at most [`MAX_POINTER_BYTES`].
pub fn valid_pointer(p: &str) -> bool {
    if p.len() > MAX_POINTER_BYTES || !(p.is_empty() || p.starts_with('/')) {
        return false;
    }
    let b = p.as_bytes();
    b.iter().enumerate().all(|(i, &c)| c != b'~' || matches!(b.get(i + 1), Some(b'0' | b'1')))
}

fn pointer(obj: &serde_json::Map<String, Value>, member: &str, field: &str) -> Result<String, ConfigError> {
    match obj.get(member) {
        Some(Value::String(p)) if valid_pointer(p) => Ok(p.clone()),
        Some(_) => Err(err(
            format!("{field}.{member}"),
            format!("must be a JSON Pointer (\"/amount\", \"/lines/0/amount\"), at most {MAX_POINTER_BYTES} bytes"),
        )),
        None => Err(err(format!("{field}.{member}"), "is required")),
    }
}

/// Validate an operation's `constraints` member (`field` names it in errors). The shape of each
/// mapping is fixed by the constraint's name: `max_amount` → `{amount, currency}`, `tenant` →
/// `{equals}`, any other name (a deployment-defined list) → `{one_of}`.
pub fn parse_mappings(v: &Value, field: &str) -> Result<Mappings, ConfigError> {
    let Some(obj) = v.as_object() else {
        return Err(err(field, "must be an object from constraint name to JSON Pointers"));
    };
    if obj.len() > MAX_CONSTRAINTS {
        return Err(err(field, format!("at most {MAX_CONSTRAINTS} constraints")));
    }
    let mut out = Vec::with_capacity(obj.len());
    for (name, m) in obj {
        let f = format!("{field}.{name}");
        if !valid_name(name) {
            return Err(err(f, "a constraint name is 1 to 64 characters of [A-Za-z0-9_.:-]"));
        }
        let Some(mo) = m.as_object() else {
            return Err(err(f, "must be an object of JSON Pointers"));
        };
        let (members, mapping): (&[&str], Mapping) = match ConstraintKind::of(name) {
            ConstraintKind::MaxAmount => (
                &["amount", "currency"],
                Mapping::MaxAmount { amount: pointer(mo, "amount", &f)?, currency: pointer(mo, "currency", &f)? },
            ),
            ConstraintKind::Tenant => (&["equals"], Mapping::Equals(pointer(mo, "equals", &f)?)),
            ConstraintKind::List => (&["one_of"], Mapping::OneOf(pointer(mo, "one_of", &f)?)),
        };
        if let Some(extra) = mo.keys().find(|k| !members.contains(&k.as_str())) {
            return Err(err(
                format!("{f}.{extra}"),
                format!("unknown member; {name} takes exactly {}", members.join(" and ")),
            ));
        }
        out.push((name.clone(), mapping));
    }
    Ok(out)
}

/// How one constraint came out for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Within it.
    Satisfied,
    /// `max_amount`: the amount is above the bound.
    Exceeded,
    /// `max_amount`: another currency.
    CurrencyMismatch,
    /// `tenant` not equal, or the value is not in the list.
    Violated,
    /// Nothing at the pointer (or the parameters are not JSON).
    Missing,
    /// A value of the wrong type or form (`"1e3"` as an amount, an over-long decimal, an array).
    Malformed,
    /// The operation has no mapping for it, or the token's value has a shape no gateway checks:
    /// the entry permits nothing for this request.
    Unrecognized,
}

impl Outcome {
    /// Wire name (evidence, counters, the PDP context).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Satisfied => "satisfied",
            Outcome::Exceeded => "exceeded",
            Outcome::CurrencyMismatch => "currency_mismatch",
            Outcome::Violated => "violated",
            Outcome::Missing => "missing",
            Outcome::Malformed => "malformed",
            Outcome::Unrecognized => "unrecognized",
        }
    }
}

/// Every counter of constraint outcomes (name suffixes): `constraint.<kind>.<outcome>` for the
/// outcomes each kind can have, and `constraint.unrecognized`. A bounded set: the kind is fixed by
/// the name (`max_amount`, `tenant`, anything else is a `list`), never the name itself.
pub const COUNTERS: [&str; 14] = [
    "constraint.max_amount.satisfied",
    "constraint.max_amount.exceeded",
    "constraint.max_amount.currency_mismatch",
    "constraint.max_amount.missing",
    "constraint.max_amount.malformed",
    "constraint.tenant.satisfied",
    "constraint.tenant.violated",
    "constraint.tenant.missing",
    "constraint.tenant.malformed",
    "constraint.list.satisfied",
    "constraint.list.violated",
    "constraint.list.missing",
    "constraint.list.malformed",
    "constraint.unrecognized",
];

/// What the approver is shown of an amount check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmountDetail {
    /// The bound, in plain decimal notation.
    pub limit: String,
    /// The bound's currency.
    pub currency: String,
    /// The requested amount, when it was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    /// The requested currency, when it was a string.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_currency: Option<String>,
    /// By how much the amount exceeds the bound (same currency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub excess: Option<String>,
}

/// One constraint checked for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The constraint's name (from the token; see [`Checked::label`]).
    pub name: String,
    /// Its kind.
    pub kind: ConstraintKind,
    /// How it came out.
    pub outcome: Outcome,
    /// For `max_amount`: the bound and the request's amount.
    pub amount: Option<AmountDetail>,
}

impl Checked {
    /// The name to record: the constraint's name, which is always a short `[A-Za-z0-9_.:-]` id
    /// ([`valid_name`]), or `*` for a `constraints` member that is not an object of such names.
    pub fn label(&self) -> &str {
        if valid_name(&self.name) {
            &self.name
        } else {
            "*"
        }
    }

    /// The counter this outcome is counted under (one of [`COUNTERS`]).
    pub fn counter(&self) -> &'static str {
        if self.outcome == Outcome::Unrecognized {
            return "constraint.unrecognized";
        }
        let wanted = format!("constraint.{}.{}", self.kind.as_str(), self.outcome.as_str());
        COUNTERS.iter().find(|c| **c == wanted).copied().unwrap_or("constraint.unrecognized")
    }

    /// An unrecognized constraint (no mapping here, or a shape no gateway checks).
    pub fn unrecognized(name: &str) -> Checked {
        Checked { name: name.to_owned(), kind: ConstraintKind::of(name), outcome: Outcome::Unrecognized, amount: None }
    }
}

/// The parameters of the request at hand.
#[derive(Debug, Clone, Copy)]
pub enum Params<'a> {
    /// Not read yet (the body has not been buffered).
    NotYet,
    /// There are none to read: no body, or one that is not an I-JSON document of a JSON media type.
    Absent,
    /// The parsed parameters (parsed with [`missiongate_wire::jcs::parse_ijson`], so every number
    /// is exact as written).
    Json(&'a Value),
}

/// The mapping for `name` among an operation's mappings.
pub fn mapping<'m>(mappings: &'m [(String, Mapping)], name: &str) -> Option<&'m Mapping> {
    mappings.iter().find(|(n, _)| n == name).map(|(_, m)| m)
}

/// Is `constraint` checkable with this mapping (one of the same kind)?
pub fn checkable(constraint: &Constraint, mapping: Option<&Mapping>) -> bool {
    let kind = match constraint {
        Constraint::MaxAmount { .. } => ConstraintKind::MaxAmount,
        Constraint::Tenant(_) => ConstraintKind::Tenant,
        Constraint::OneOf(_) => ConstraintKind::List,
    };
    mapping.is_some_and(|m| m.kind() == kind)
}

fn at<'v>(params: Option<&'v Value>, pointer: &str) -> Option<&'v Value> {
    params?.pointer(pointer)
}

/// A string at the pointer: `Err(Missing)` for nothing there, `Err(Malformed)` for a non-string.
fn string_at<'v>(params: Option<&'v Value>, pointer: &str) -> Result<&'v str, Outcome> {
    match at(params, pointer) {
        None => Err(Outcome::Missing),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Outcome::Malformed),
    }
}

/// Check one constraint of an entry against the parameters (SPEC §2). `mapping` is the operation's
/// mapping for this constraint's name; without one of the right kind the outcome is
/// [`Outcome::Unrecognized`]. `params` `None` means there are no parameters to read.
pub fn check(name: &str, constraint: &Constraint, mapping: Option<&Mapping>, params: Option<&Value>) -> Checked {
    let mut out = Checked::unrecognized(name);
    if !checkable(constraint, mapping) {
        return out;
    }
    match (constraint, mapping) {
        (
            Constraint::MaxAmount { amount, written, currency },
            Some(Mapping::MaxAmount { amount: pa, currency: pc }),
        ) => {
            let mut detail = AmountDetail {
                limit: written.clone(),
                currency: currency.clone(),
                requested: None,
                requested_currency: None,
                excess: None,
            };
            let requested = match at(params, pa) {
                None => Err(Outcome::Missing),
                Some(v) => Decimal::from_json(v).map_err(|_| Outcome::Malformed),
            };
            let req_currency = string_at(params, pc);
            if let Ok(c) = req_currency {
                // Shown to the approver: a currency code, never a long string.
                if c.len() <= 16 && c.bytes().all(|b| b.is_ascii_graphic()) {
                    detail.requested_currency = Some(c.to_owned());
                }
            }
            if let Ok(r) = &requested {
                // As written when it was a decimal string (`"500.10"`), else the number's value.
                detail.requested = match at(params, pa) {
                    Some(Value::String(s)) => Some(s.clone()),
                    _ => r.to_plain(),
                };
            }
            out.outcome = match (requested, req_currency) {
                (Err(o), _) | (_, Err(o)) => o,
                (Ok(_), Ok(c)) if c != currency => Outcome::CurrencyMismatch,
                (Ok(r), Ok(_)) if &r > amount => {
                    detail.excess = r.checked_sub(amount).and_then(|x| x.to_plain());
                    Outcome::Exceeded
                }
                (Ok(_), Ok(_)) => Outcome::Satisfied,
            };
            out.amount = Some(detail);
        }
        (Constraint::Tenant(t), Some(Mapping::Equals(p))) => {
            out.outcome = match string_at(params, p) {
                Ok(v) if v == t => Outcome::Satisfied,
                Ok(_) => Outcome::Violated,
                Err(o) => o,
            };
        }
        (Constraint::OneOf(list), Some(Mapping::OneOf(p))) => {
            out.outcome = match string_at(params, p) {
                Ok(v) if list.iter().any(|x| x == v) => Outcome::Satisfied,
                Ok(_) => Outcome::Violated,
                Err(o) => o,
            };
        }
        _ => {}
    }
    out
}
