//! The `constraints` of an Authority Set entry (SPEC §2) that a gateway can check, as the authority
//! writes them. One rule for both sides: the filter compiles a token's entries with it (a shape it
//! does not accept makes the entry permit nothing), and the reference authority accepts a Mission
//! only when every constraint of every entry passes it.
//!
//! - `max_amount`: `{"amount": <decimal string or non-negative integer>, "currency": "<ISO 4217
//!   alpha code>"}`;
//! - `tenant`: a non-empty string;
//! - any other name (`[A-Za-z0-9_.:-]`, at most 64 characters): a deployment-defined list, a
//!   non-empty array of non-empty strings (`"vendors": ["acme"]`).

use serde_json::Value;

use crate::decimal::Decimal;

/// The Common Constraint that bounds an amount.
pub const MAX_AMOUNT: &str = "max_amount";
/// The Common Constraint that names a tenant.
pub const TENANT: &str = "tenant";
/// Most constraints on one entry.
pub const MAX_CONSTRAINTS: usize = 16;
/// Most items in a list constraint.
pub const MAX_LIST_ITEMS: usize = 256;
/// Longest string value (tenant, list item), in bytes.
pub const MAX_VALUE_BYTES: usize = 256;

/// A constraint a gateway can check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// The amount at most `amount`, in exactly `currency`.
    MaxAmount {
        /// The bound.
        amount: Decimal,
        /// The bound as the authority wrote it (`"500.00"`), for people.
        written: String,
        /// Its currency.
        currency: String,
    },
    /// Exactly this tenant.
    Tenant(String),
    /// One of these values.
    OneOf(Vec<String>),
}

/// What kind of constraint a name is: fixed by the name, on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintKind {
    /// `max_amount`.
    MaxAmount,
    /// `tenant`.
    Tenant,
    /// Any other name: a list.
    List,
}

impl ConstraintKind {
    /// The kind of the constraint called `name`.
    pub fn of(name: &str) -> ConstraintKind {
        match name {
            MAX_AMOUNT => ConstraintKind::MaxAmount,
            TENANT => ConstraintKind::Tenant,
            _ => ConstraintKind::List,
        }
    }

    /// Label (counters, evidence).
    pub fn as_str(self) -> &'static str {
        match self {
            ConstraintKind::MaxAmount => "max_amount",
            ConstraintKind::Tenant => "tenant",
            ConstraintKind::List => "list",
        }
    }
}

/// A constraint name: `[A-Za-z0-9_.:-]`, 1 to 64 characters.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// An ISO 4217 alphabetic code: three upper-case ASCII letters.
pub fn valid_currency(c: &str) -> bool {
    c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase())
}

fn short_string(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty() && s.len() <= MAX_VALUE_BYTES)
}

/// One constraint, by its name and value.
pub fn parse_constraint(name: &str, v: &Value) -> Result<Constraint, String> {
    if !valid_name(name) {
        return Err("a constraint name is 1 to 64 characters of [A-Za-z0-9_.:-]".into());
    }
    match ConstraintKind::of(name) {
        ConstraintKind::MaxAmount => {
            let Some(obj) = v.as_object() else {
                return Err("max_amount must be an object {amount, currency}".into());
            };
            if obj.len() != 2 {
                return Err("max_amount has exactly the members amount and currency".into());
            }
            let (amount, written) = match obj.get("amount") {
                Some(Value::String(s)) => {
                    (Decimal::parse_str(s).map_err(|e| format!("max_amount.amount: {e}"))?, s.clone())
                }
                Some(Value::Number(n)) if n.as_u64().is_some() => {
                    (Decimal::from_json_number(n).map_err(|e| format!("max_amount.amount: {e}"))?, n.to_string())
                }
                _ => return Err("max_amount.amount must be a decimal string (or a non-negative integer)".into()),
            };
            let currency = match obj.get("currency").and_then(Value::as_str) {
                Some(c) if valid_currency(c) => c.to_owned(),
                _ => return Err("max_amount.currency must be an ISO 4217 code (three upper-case letters)".into()),
            };
            Ok(Constraint::MaxAmount { amount, written, currency })
        }
        ConstraintKind::Tenant => match short_string(v) {
            Some(t) => Ok(Constraint::Tenant(t.to_owned())),
            None => Err(format!("tenant must be a string of 1 to {MAX_VALUE_BYTES} bytes")),
        },
        ConstraintKind::List => {
            let Some(items) = v.as_array() else {
                return Err(format!("{name} must be a list of strings"));
            };
            if items.is_empty() || items.len() > MAX_LIST_ITEMS {
                return Err(format!("{name} must list 1 to {MAX_LIST_ITEMS} values"));
            }
            items
                .iter()
                .map(|i| {
                    short_string(i)
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{name}: each value is a string of 1 to {MAX_VALUE_BYTES} bytes"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Constraint::OneOf)
        }
    }
}

/// An entry's whole `constraints` member: an object of at most [`MAX_CONSTRAINTS`] constraints,
/// each accepted by [`parse_constraint`]. The error names the constraint.
pub fn parse_constraints(v: &Value) -> Result<Vec<(String, Constraint)>, String> {
    let Some(obj) = v.as_object() else {
        return Err("constraints must be an object".into());
    };
    if obj.len() > MAX_CONSTRAINTS {
        return Err(format!("at most {MAX_CONSTRAINTS} constraints per entry"));
    }
    obj.iter()
        .map(|(k, v)| parse_constraint(k, v).map(|c| (k.clone(), c)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("constraints: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepted_shapes() {
        let c = parse_constraints(&json!({"max_amount": {"amount": "500.00", "currency": "USD"},
            "tenant": "t-1", "vendors": ["acme", "globex"]}))
        .unwrap_or_default();
        assert_eq!(c.len(), 3);
        assert!(parse_constraint("max_amount", &json!({"amount": 500, "currency": "EUR"})).is_ok());
        for (name, bad) in [
            ("max_amount", json!({"amount": "1e3", "currency": "USD"})),
            ("max_amount", json!({"amount": 5.5, "currency": "USD"})),
            ("max_amount", json!({"amount": "-1", "currency": "USD"})),
            ("max_amount", json!({"amount": "1", "currency": "usd"})),
            ("max_amount", json!({"amount": "1"})),
            ("max_amount", json!({"amount": "1", "currency": "USD", "x": 1})),
            ("max_amount", json!("500")),
            ("tenant", json!("")),
            ("tenant", json!(["a"])),
            ("vendors", json!([])),
            ("vendors", json!("acme")),
            ("vendors", json!([1])),
            ("bad name", json!(["a"])),
        ] {
            assert!(parse_constraint(name, &bad).is_err(), "{name}: {bad}");
        }
        assert!(parse_constraints(&json!([])).is_err());
    }
}
