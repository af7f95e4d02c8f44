//! The one grammar of an Authority Set entry (`authorization_details`, RFC 9396; SPEC §2): what the
//! portal issues in a Mission and what the filter matches requests against.
//!
//! The portal refuses an entry [`parse_entry`] refuses; the filter drops it (it honours only what it
//! can match). The portal adds its issuance rules on top (no unknown members, `http`/`https` only,
//! at least one action, checkable constraints), which only narrow what it issues.

use serde_json::Value;

use crate::uri;

/// An action pattern from an entry's `actions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionPattern {
    /// Exactly this id.
    Exact(String),
    /// `name.*`: holds `name.` and covers every id that starts with it.
    Family(String),
}

impl ActionPattern {
    /// Does this pattern cover `action`?
    pub fn covers(&self, action: &str) -> bool {
        match self {
            ActionPattern::Exact(a) => a == action,
            ActionPattern::Family(prefix) => action.len() > prefix.len() && action.starts_with(prefix.as_str()),
        }
    }
}

/// `[A-Za-z0-9_.:-]+`.
pub fn valid_action_id(a: &str) -> bool {
    !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// An action id or a family `name.*`, as a pattern.
pub fn action_pattern(a: &str) -> Option<ActionPattern> {
    match a.strip_suffix(".*") {
        Some(family) => valid_action_id(family).then(|| ActionPattern::Family(format!("{family}."))),
        None => valid_action_id(a).then(|| ActionPattern::Exact(a.to_owned())),
    }
}

/// An entry that follows the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Destination origin, normalised ([`uri::parse_resource`]).
    pub origin: String,
    /// Normalised path; `/` for an origin-only `resource`.
    pub path: String,
    /// `resource_match: prefix`.
    pub prefix: bool,
    /// Actions.
    pub actions: Vec<ActionPattern>,
}

/// The rule of the grammar an entry breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryError {
    /// Not a JSON object.
    NotObject,
    /// `type` is not one of the accepted types.
    Type,
    /// `resource_match` is neither `exact` nor `prefix`.
    ResourceMatch,
    /// `resource` is not a string.
    ResourceNotString,
    /// `resource` is not an absolute URI the gateway can match: origin and normalised path, no query,
    /// no fragment, no user info.
    Resource,
    /// `actions` is not an array.
    ActionsNotArray,
    /// An action is neither an id nor a family.
    Action,
}

/// Check `entry` against the grammar; `types` are the accepted `type` values.
pub fn parse_entry(entry: &Value, types: &[&str]) -> Result<Entry, EntryError> {
    let obj = entry.as_object().ok_or(EntryError::NotObject)?;
    match obj.get("type").and_then(Value::as_str) {
        Some(t) if types.contains(&t) => {}
        _ => return Err(EntryError::Type),
    }
    let prefix = match obj.get("resource_match") {
        None => false,
        Some(v) => match v.as_str() {
            Some("exact") => false,
            Some("prefix") => true,
            _ => return Err(EntryError::ResourceMatch),
        },
    };
    let resource = obj.get("resource").and_then(Value::as_str).ok_or(EntryError::ResourceNotString)?;
    let (origin, path) = uri::parse_resource(resource).ok_or(EntryError::Resource)?;
    let list = obj.get("actions").and_then(Value::as_array).ok_or(EntryError::ActionsNotArray)?;
    let mut actions = Vec::with_capacity(list.len());
    for a in list {
        actions.push(a.as_str().and_then(action_pattern).ok_or(EntryError::Action)?);
    }
    Ok(Entry { origin, path, prefix, actions })
}
