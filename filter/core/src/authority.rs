//! The Authority Set (`authorization_details`, RFC 9396) compiled once per verified token and
//! matched per request (SPEC §2, "Authority"; HTTP Operation Profile action ids).

use missiongate_wire::claims::{RAR_MISSION_RESOURCE_ACCESS, RAR_RESOURCE_ACCESS_LEGACY};
use missiongate_wire::constraints::{parse_constraints, Constraint};
use missiongate_wire::rar;
use serde_json::Value;

use crate::constraints::{self, Checked, Mapping, Outcome, Params};
pub use crate::destinations::operation;
use crate::destinations::Operation;
use crate::uri;

/// An entry's `constraints`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantConstraints {
    /// None (or `null`).
    None,
    /// A `constraints` member no gateway can check (not an object, a shape
    /// [`missiongate_wire::constraints`] refuses): the entry permits nothing.
    Unrecognized,
    /// Constraints of shapes this filter checks, each where the operation maps it.
    Checked(Vec<(String, Constraint)>),
}

pub use missiongate_wire::rar::{valid_action_id, ActionPattern};

/// One honoured entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Destination origin.
    pub origin: String,
    /// Normalised path; `/` for an origin-only `resource`, which covers the whole destination.
    pub path: String,
    /// `resource_match: prefix`.
    pub prefix: bool,
    /// The whole `resource`, normalised (`origin` + `path`): compared with the resource identifier a
    /// deployment configures for a destination.
    pub resource: String,
    /// Actions.
    pub actions: Vec<ActionPattern>,
    /// Its constraints (SPEC §2): checked on the parameters of the request at hand.
    pub constraints: GrantConstraints,
}

/// Result of matching a request against the Authority Set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorityMatch {
    /// Some enforceable entry permits it.
    Permit,
    /// Only entries with constraints this filter cannot enforce would permit it: fail closed.
    Unenforceable,
    /// Entries with constraints cover it, and it violates at least one constraint of each one that
    /// could be checked: it is outside them (another entry, or the PDP, may still permit it).
    Violated,
    /// No entry covers it.
    Outside,
    /// An entry whose constraints can be checked covers it, and the parameters are not read yet:
    /// buffer the body, then match again.
    NeedParams,
}

/// The request as the Authority Set sees it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Destination origin.
    pub origin: &'a str,
    /// The resource identifier configured for the destination.
    pub resource_id: Option<&'a str>,
    /// Request path, as decided and forwarded.
    pub path: &'a str,
    /// Action id.
    pub action: &'a str,
    /// Where the operation's constrained values live (empty: none mapped).
    pub mappings: &'a [(String, Mapping)],
    /// Its parameters.
    pub params: Params<'a>,
}

/// Compile raw entries; entries of another type, malformed ones, or an unknown `resource_match` are
/// not honoured (dropped).
pub fn compile(details: &[Value]) -> Vec<Grant> {
    details.iter().filter_map(compile_one).collect()
}

fn compile_one(entry: &Value) -> Option<Grant> {
    let types = [RAR_MISSION_RESOURCE_ACCESS, RAR_RESOURCE_ACCESS_LEGACY];
    let rar::Entry { origin, path, prefix, actions } = rar::parse_entry(entry, &types).ok()?;
    let resource = format!("{origin}{path}");
    let constraints = match entry.get("constraints") {
        None | Some(Value::Null) => GrantConstraints::None,
        Some(c) => match parse_constraints(c) {
            Ok(list) if list.is_empty() => GrantConstraints::None,
            Ok(list) => GrantConstraints::Checked(list),
            Err(_) => GrantConstraints::Unrecognized,
        },
    };
    Some(Grant { origin, path, prefix, resource, actions, constraints })
}

impl Grant {
    /// Does this entry's `resource` cover a request to `path` on the destination with this origin and
    /// configured resource identifier (SPEC §2)? The destination's origin (`/` path) or its configured
    /// identifier covers every request to it; a longer path is matched `exact`/`prefix`, case-sensitively.
    pub fn covers(&self, origin: &str, resource_id: Option<&str>, path: &str) -> bool {
        if resource_id == Some(self.resource.as_str()) {
            return true;
        }
        if self.origin != origin {
            return false;
        }
        if self.path == "/" || self.prefix {
            return uri::path_has_prefix(path, &self.path);
        }
        self.path == path
    }
}

/// Match a request without parameters against the Authority Set in force: [`check_target`] for a
/// request to no named operation (so no constraint can be checked).
pub fn check(
    grants: &[Grant],
    current: Option<&[Grant]>,
    origin: &str,
    resource_id: Option<&str>,
    path: &str,
    action: &str,
) -> AuthorityMatch {
    let t = Target { origin, resource_id, path, action, mappings: &[], params: Params::Absent };
    check_target(grants, current, &t, &mut Vec::new())
}

/// Match a request against the Authority Set in force (SPEC §2, §3): entries are alternatives.
/// `grants` are the token's entries; `current`, when the Mission Status answer carried one, is the
/// current (audience-filtered) Authority Set, which narrows them (containment): the request is
/// permitted only if both the token's entries and the current set permit it. Every constraint
/// checked is appended to `checked` (evidence, counters, the PDP's context).
pub fn check_target(
    grants: &[Grant],
    current: Option<&[Grant]>,
    t: &Target<'_>,
    checked: &mut Vec<Checked>,
) -> AuthorityMatch {
    let by_token = check_set(grants, t, checked);
    match (by_token, current) {
        (AuthorityMatch::Permit, Some(set)) => {
            // The current set usually repeats the token's constrained entries: a constraint checked
            // twice with the same outcome is recorded (and counted) once.
            let mut again = Vec::new();
            let m = check_set(set, t, &mut again);
            for c in again {
                if !checked.contains(&c) {
                    checked.push(c);
                }
            }
            m
        }
        (m, _) => m,
    }
}

fn check_set(grants: &[Grant], t: &Target<'_>, checked: &mut Vec<Checked>) -> AuthorityMatch {
    let covering = || {
        grants
            .iter()
            .filter(|g| g.covers(t.origin, t.resource_id, t.path) && g.actions.iter().any(|p| p.covers(t.action)))
    };
    // An entry without constraints permits at once: nothing to read.
    if covering().any(|g| g.constraints == GrantConstraints::None) {
        return AuthorityMatch::Permit;
    }
    let mapped = |list: &[(String, Constraint)]| {
        list.iter().all(|(n, c)| constraints::checkable(c, constraints::mapping(t.mappings, n)))
    };
    let params = match t.params {
        Params::NotYet => {
            if covering().any(|g| matches!(&g.constraints, GrantConstraints::Checked(l) if mapped(l))) {
                return AuthorityMatch::NeedParams;
            }
            None
        }
        Params::Absent => None,
        Params::Json(v) => Some(v),
    };
    let (mut unenforceable, mut violated) = (false, false);
    for g in covering() {
        match &g.constraints {
            GrantConstraints::None => return AuthorityMatch::Permit,
            GrantConstraints::Unrecognized => {
                unenforceable = true;
                checked.push(Checked::unrecognized("*"));
            }
            GrantConstraints::Checked(list) if !mapped(list) => {
                // Fail closed: a key without a mapping for this operation makes the entry permit
                // nothing for it. Only the unmapped keys are named.
                unenforceable = true;
                for (n, c) in list {
                    if !constraints::checkable(c, constraints::mapping(t.mappings, n)) {
                        checked.push(Checked::unrecognized(n));
                    }
                }
            }
            GrantConstraints::Checked(list) => {
                let mut all = true;
                for (n, c) in list {
                    let r = constraints::check(n, c, constraints::mapping(t.mappings, n), params);
                    all &= r.outcome == Outcome::Satisfied;
                    checked.push(r);
                }
                if all {
                    return AuthorityMatch::Permit;
                }
                violated = true;
            }
        }
    }
    if violated {
        AuthorityMatch::Violated
    } else if unenforceable {
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_constraint_the_current_set_repeats_is_recorded_once() {
        use crate::constraints::{Mapping, Params};
        use serde_json::json;
        let entry = json!({"type": "mission_resource_access", "resource": "https://a.example",
            "actions": ["payments.create"], "constraints": {"max_amount": {"amount": "500.00", "currency": "USD"}}});
        let token = compile(std::slice::from_ref(&entry));
        let current = compile(&[entry]);
        let mappings = vec![(
            "max_amount".to_owned(),
            Mapping::MaxAmount { amount: "/amount".into(), currency: "/currency".into() },
        )];
        let body = json!({"amount": "423.50", "currency": "USD"});
        let t = Target {
            origin: "https://a.example",
            resource_id: None,
            path: "/v1/payments",
            action: "payments.create",
            mappings: &mappings,
            params: Params::Json(&body),
        };
        let mut checked = Vec::new();
        assert_eq!(check_target(&token, Some(&current), &t, &mut checked), AuthorityMatch::Permit);
        assert_eq!(checked.len(), 1, "{checked:?}");
    }

    #[test]
    fn the_current_set_narrows_the_tokens_entries() {
        use serde_json::json;
        let token = compile(&[
            json!({"type": "mission_resource_access", "resource": "https://a.example", "actions": ["http.*"]}),
            json!({"type": "mission_resource_access", "resource": "https://b.example", "actions": ["http.get"]}),
        ]);
        let current = compile(&[
            json!({"type": "mission_resource_access", "resource": "https://a.example", "actions": ["http.get"]}),
            // wider than the token: never widens it
            json!({"type": "mission_resource_access", "resource": "https://c.example", "actions": ["http.*"]}),
        ]);
        let narrowed = Some(current.as_slice());
        assert_eq!(check(&token, None, "https://b.example", None, "/", "http.get"), AuthorityMatch::Permit);
        assert_eq!(check(&token, narrowed, "https://a.example", None, "/x", "http.get"), AuthorityMatch::Permit);
        assert_eq!(check(&token, narrowed, "https://a.example", None, "/x", "http.post"), AuthorityMatch::Outside);
        assert_eq!(check(&token, narrowed, "https://b.example", None, "/", "http.get"), AuthorityMatch::Outside);
        assert_eq!(check(&token, narrowed, "https://c.example", None, "/", "http.get"), AuthorityMatch::Outside);
        // An empty current set permits nothing.
        assert_eq!(check(&token, Some(&[]), "https://a.example", None, "/", "http.get"), AuthorityMatch::Outside);
        // A current entry with a constraint this filter cannot enforce fails closed.
        let constrained = compile(&[json!({"type": "mission_resource_access", "resource": "https://a.example",
            "actions": ["http.get"], "constraints": {"unknown": 1}})]);
        assert_eq!(
            check(&token, Some(&constrained), "https://a.example", None, "/", "http.get"),
            AuthorityMatch::Unenforceable
        );
    }

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
        assert_eq!(check(&g, None, "https://api.example", None, "/v1", "http.get"), AuthorityMatch::Permit);
        assert_eq!(check(&g, None, "https://api.example", None, "/v1/a/b", "http.get"), AuthorityMatch::Permit);
        assert_eq!(check(&g, None, "https://api.example", None, "/v1x", "http.get"), AuthorityMatch::Outside);
        assert_eq!(check(&g, None, "https://api.example", None, "/v1/a", "http.post"), AuthorityMatch::Outside);
        assert_eq!(check(&g, None, "https://api.example", None, "/v1/a", "invoices.read"), AuthorityMatch::Permit);
        assert_eq!(check(&g, None, "https://api.example", None, "/v1/a", "invoices.q3.export"), AuthorityMatch::Permit);
        assert_eq!(check(&g, None, "https://api.example", None, "/v1/a", "invoicesx.read"), AuthorityMatch::Outside);
        assert_eq!(check(&g, None, "https://api.example", None, "/v1/a", "invoices"), AuthorityMatch::Outside);
        assert_eq!(check(&g, None, "https://api.example", None, "/exact", "http.post"), AuthorityMatch::Permit);
        assert_eq!(check(&g, None, "https://api.example", None, "/exact/x", "http.post"), AuthorityMatch::Outside);
        assert_eq!(check(&g, None, "https://api.example", None, "/c", "http.get"), AuthorityMatch::Unenforceable);
        assert_eq!(check(&g, None, "https://other.example", None, "/v1", "http.get"), AuthorityMatch::Outside);
        assert_eq!(check(&g, None, "https://api.example", None, "/bad", "http.get"), AuthorityMatch::Outside);
    }

    #[test]
    fn origin_and_configured_resources_cover_the_whole_destination() {
        let g = compile(&[
            json!({"type":"mission_resource_access","resource":"https://erp.example","actions":["invoices.read"]}),
            json!({"type":"mission_resource_access","resource":"https://API.example:443/","actions":["http.get"]}),
            json!({"type":"mission_resource_access","resource":"https://id.example/api","actions":["http.post"]}),
        ]);
        for path in ["/", "/invoices", "/a/b/c"] {
            assert_eq!(
                check(&g, None, "https://erp.example", None, path, "invoices.read"),
                AuthorityMatch::Permit,
                "{path}"
            );
            assert_eq!(
                check(&g, None, "https://api.example", None, path, "http.get"),
                AuthorityMatch::Permit,
                "{path}"
            );
        }
        assert_eq!(check(&g, None, "https://erp.example", None, "/x", "http.get"), AuthorityMatch::Outside);
        assert_eq!(check(&g, None, "https://erp2.example", None, "/x", "invoices.read"), AuthorityMatch::Outside);
        // The resource identifier configured for a destination covers it whole, whatever its own path.
        let id = Some("https://id.example/api");
        assert_eq!(check(&g, None, "https://svc.example", id, "/anything", "http.post"), AuthorityMatch::Permit);
        assert_eq!(check(&g, None, "https://svc.example", None, "/anything", "http.post"), AuthorityMatch::Outside);
        // Without that configuration it is an ordinary exact entry on its own origin.
        assert_eq!(check(&g, None, "https://id.example", None, "/api", "http.post"), AuthorityMatch::Permit);
        assert_eq!(check(&g, None, "https://id.example", None, "/api/x", "http.post"), AuthorityMatch::Outside);
        // Grants stay case-sensitive: denial is the safe side.
        assert_eq!(check(&g, None, "https://id.example", None, "/API", "http.post"), AuthorityMatch::Outside);
    }

    #[test]
    fn action_ids() {
        let ops = vec![Operation {
            method: "POST".into(),
            path: "/v1/payments".into(),
            prefix: false,
            action: "payments.create".into(),
            consequential: None,
            constraints: Vec::new(),
        }];
        assert_eq!(action_id(&ops, "POST", "/v1/payments"), "payments.create");
        assert_eq!(action_id(&ops, "POST", "/V1/Payments/"), "payments.create");
        assert_eq!(action_id(&ops, "post", "/v1/PAYMENTS"), "payments.create");
        assert_eq!(action_id(&ops, "POST", "/v1/paymentsx"), "http.post");
        assert_eq!(action_id(&ops, "GET", "/v1/payments"), "http.get");
        assert_eq!(action_id(&[], "CONNECT", "/"), "http.connect");
    }
}
