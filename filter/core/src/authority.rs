//! The Authority Set (`authorization_details`, RFC 9396) compiled once per verified token and
//! matched per request (SPEC §2, "Authority"; HTTP Operation Profile action ids).

use missiongate_wire::claims::{RAR_MISSION_RESOURCE_ACCESS, RAR_RESOURCE_ACCESS_LEGACY};
use serde_json::Value;

use crate::config::Operation;
use crate::uri;

/// Constraint keys this filter enforces. None yet: any constraint makes its entry unenforceable.
const ENFORCEABLE_CONSTRAINTS: &[&str] = &[];

/// An action pattern from an entry's `actions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionPattern {
    /// Exactly this id.
    Exact(String),
    /// `name.*`: holds `name.` and covers every id that starts with it.
    Family(String),
}

impl ActionPattern {
    fn covers(&self, action: &str) -> bool {
        match self {
            ActionPattern::Exact(a) => a == action,
            ActionPattern::Family(prefix) => action.len() > prefix.len() && action.starts_with(prefix.as_str()),
        }
    }
}

/// One honoured entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Destination origin.
    pub origin: String,
    /// Normalised path.
    pub path: String,
    /// `resource_match: prefix`.
    pub prefix: bool,
    /// Actions.
    pub actions: Vec<ActionPattern>,
    /// False when a constraint cannot be enforced: the entry then permits nothing.
    pub enforceable: bool,
}

/// Result of matching a request against the Authority Set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityMatch {
    /// Some enforceable entry permits it.
    Permit,
    /// Only entries with constraints this filter cannot enforce would permit it: fail closed.
    Unenforceable,
    /// No entry covers it.
    Outside,
}

/// `[A-Za-z0-9_.:-]+`.
pub fn valid_action_id(a: &str) -> bool {
    !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Compile raw entries; entries of another type, malformed ones, or an unknown `resource_match` are
/// not honoured (dropped).
pub fn compile(details: &[Value]) -> Vec<Grant> {
    details.iter().filter_map(compile_one).collect()
}

fn compile_one(entry: &Value) -> Option<Grant> {
    let obj = entry.as_object()?;
    let ty = obj.get("type")?.as_str()?;
    if ty != RAR_MISSION_RESOURCE_ACCESS && ty != RAR_RESOURCE_ACCESS_LEGACY {
        return None;
    }
    let (origin, path) = uri::parse_resource(obj.get("resource")?.as_str()?)?;
    let prefix = match obj.get("resource_match") {
        None => false,
        Some(v) => match v.as_str()? {
            "exact" => false,
            "prefix" => true,
            _ => return None,
        },
    };
    let mut actions = Vec::new();
    for a in obj.get("actions")?.as_array()? {
        let a = a.as_str()?;
        if let Some(family) = a.strip_suffix(".*") {
            if !valid_action_id(family) {
                return None;
            }
            actions.push(ActionPattern::Family(format!("{family}.")));
        } else if valid_action_id(a) {
            actions.push(ActionPattern::Exact(a.to_owned()));
        } else {
            return None;
        }
    }
    let enforceable = match obj.get("constraints") {
        None | Some(Value::Null) => true,
        Some(Value::Object(c)) => c.keys().all(|k| ENFORCEABLE_CONSTRAINTS.contains(&k.as_str())),
        Some(_) => false,
    };
    Some(Grant { origin, path, prefix, actions, enforceable })
}

/// Match a request (origin, normalised path, action id) against compiled grants: entries are alternatives.
pub fn check(grants: &[Grant], origin: &str, path: &str, action: &str) -> AuthorityMatch {
    let mut unenforceable = false;
    for g in grants {
        if g.origin != origin {
            continue;
        }
        let path_ok = if g.prefix { uri::path_has_prefix(path, &g.path) } else { g.path == path };
        if !path_ok || !g.actions.iter().any(|p| p.covers(action)) {
            continue;
        }
        if g.enforceable {
            return AuthorityMatch::Permit;
        }
        unenforceable = true;
    }
    if unenforceable {
        AuthorityMatch::Unenforceable
    } else {
        AuthorityMatch::Outside
    }
}

/// True when some grant names this origin at all (used to tell "destination outside" from
/// "operation outside").
pub fn names_origin(grants: &[Grant], origin: &str) -> bool {
    grants.iter().any(|g| g.origin == origin)
}

/// Action id of a request: a configured named operation, else `http.` + lower-case method.
pub fn action_id(operations: &[Operation], method: &str, path: &str) -> String {
    if let Some(op) = operation(operations, method, path) {
        return op.action.clone();
    }
    let mut a = String::with_capacity(5 + method.len());
    a.push_str("http.");
    a.push_str(&method.to_ascii_lowercase());
    a
}

/// The first named operation matching `method` and the normalised `path`.
pub fn operation<'o>(operations: &'o [Operation], method: &str, path: &str) -> Option<&'o Operation> {
    operations.iter().find(|op| {
        let path_ok = if op.prefix { uri::path_has_prefix(path, &op.path) } else { op.path == path };
        path_ok && op.method.eq_ignore_ascii_case(method)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn grants() -> Vec<Grant> {
        compile(&[
            json!({"type":"mission_resource_access","resource":"https://api.example/v1","resource_match":"prefix","actions":["http.get","invoices.*"]}),
            json!({"type":"resource_access","resource":"https://api.example/exact","actions":["http.post"]}),
            json!({"type":"mission_resource_access","resource":"https://api.example/c","actions":["http.*"],"constraints":{"max_amount":{"amount":"1","currency":"USD"}}}),
            json!({"type":"mission_resource_access","resource":"https://api.example/bad","resource_match":"regex","actions":["http.get"]}),
            json!({"type":"other","resource":"https://api.example/","actions":["http.get"]}),
            json!({"type":"mission_resource_access","resource":"https://api.example/q?x=1","actions":["http.get"]}),
        ])
    }

    #[test]
    fn compiles_only_honoured_entries() {
        assert_eq!(grants().len(), 3);
    }

    #[test]
    fn matching() {
        let g = grants();
        assert_eq!(check(&g, "https://api.example", "/v1", "http.get"), AuthorityMatch::Permit);
        assert_eq!(check(&g, "https://api.example", "/v1/a/b", "http.get"), AuthorityMatch::Permit);
        assert_eq!(check(&g, "https://api.example", "/v1x", "http.get"), AuthorityMatch::Outside);
        assert_eq!(check(&g, "https://api.example", "/v1/a", "http.post"), AuthorityMatch::Outside);
        assert_eq!(check(&g, "https://api.example", "/v1/a", "invoices.read"), AuthorityMatch::Permit);
        assert_eq!(check(&g, "https://api.example", "/v1/a", "invoices.q3.export"), AuthorityMatch::Permit);
        assert_eq!(check(&g, "https://api.example", "/v1/a", "invoicesx.read"), AuthorityMatch::Outside);
        assert_eq!(check(&g, "https://api.example", "/v1/a", "invoices"), AuthorityMatch::Outside);
        assert_eq!(check(&g, "https://api.example", "/exact", "http.post"), AuthorityMatch::Permit);
        assert_eq!(check(&g, "https://api.example", "/exact/x", "http.post"), AuthorityMatch::Outside);
        assert_eq!(check(&g, "https://api.example", "/c", "http.get"), AuthorityMatch::Unenforceable);
        assert_eq!(check(&g, "https://other.example", "/v1", "http.get"), AuthorityMatch::Outside);
        assert_eq!(check(&g, "https://api.example", "/bad", "http.get"), AuthorityMatch::Outside);
    }

    #[test]
    fn action_ids() {
        let ops = vec![Operation {
            method: "POST".into(),
            path: "/v1/payments".into(),
            prefix: false,
            action: "payments.create".into(),
            consequential: None,
        }];
        assert_eq!(action_id(&ops, "POST", "/v1/payments"), "payments.create");
        assert_eq!(action_id(&ops, "GET", "/v1/payments"), "http.get");
        assert_eq!(action_id(&[], "CONNECT", "/"), "http.connect");
    }
}
