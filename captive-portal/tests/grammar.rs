//! One table of Authority Set entries held against both sides: the portal's Mission validation
//! (`check_entry`) and the filter's matching (`authority::compile`). Every entry the portal issues,
//! the gateway honours with the same origin; an entry the gateway would drop is never issued.

use captive_portal::mission::{audiences, check_entry};
use missiongate_core::authority;
use serde_json::{json, Value};

const TYPE: &str = "mission_resource_access";

fn entry(resource: &str, extra: Value) -> Value {
    let mut e = json!({"type": TYPE, "resource": resource, "actions": ["read"]});
    if let (Some(obj), Some(more)) = (e.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            obj.insert(k.clone(), v.clone());
        }
    }
    e
}

/// (entry, the portal issues it, the filter honours it).
fn table() -> Vec<(Value, bool, bool)> {
    vec![
        (entry("https://api.example", json!({})), true, true),
        (entry("https://API.example:443/v1/items", json!({})), true, true),
        (entry("https://api.example/v1/", json!({"resource_match": "prefix"})), true, true),
        (entry("https://api.example/v1/%7Euser", json!({"resource_match": "exact"})), true, true),
        (entry("http://[::1]:8080/x", json!({})), true, true),
        (entry("https://api.example/v1", json!({"actions": ["orders.*", "read:all"]})), true, true),
        // The drift this table closes: a resource with a query (or fragment) matches nothing at the
        // gateway, so neither side accepts it.
        (entry("https://api.example/v1/items?id=1", json!({})), false, false),
        (entry("https://api.example/v1/items?id=1", json!({"resource_match": "exact"})), false, false),
        (entry("https://api.example/v1#frag", json!({})), false, false),
        (entry("https://user@api.example/v1", json!({})), false, false),
        (entry("https://api.example/%zz", json!({})), false, false),
        (entry("https://api.example:123456/", json!({})), false, false),
        (entry("not a uri", json!({})), false, false),
        (entry("https://api.example/v1", json!({"resource_match": "regex"})), false, false),
        (entry("https://api.example/v1", json!({"actions": ["bad action"]})), false, false),
        (entry("https://api.example/v1", json!({"actions": [".*"]})), false, false),
        (entry("https://api.example/v1", json!({"actions": "read"})), false, false),
        (entry("https://api.example/v1", json!({"type": "other"})), false, false),
        (json!({"type": TYPE, "resource": 5, "actions": ["read"]}), false, false),
        (json!(["not", "an", "object"]), false, false),
        // Issuance rules narrower than the grammar: the portal does not issue them; the gateway,
        // which may meet entries from other authorities, still honours them.
        (entry("https://api.example/v1", json!({"actions": []})), false, true),
        (entry("https://api.example/v1", json!({"extra": 1})), false, true),
        (entry("ftp://files.example/v1", json!({})), false, true),
        (entry("https://api.example/v1", json!({"type": "resource_access"})), false, true),
    ]
}

#[test]
fn portal_validation_and_filter_matching_follow_one_grammar() {
    for (e, issued, honoured) in table() {
        let portal = check_entry(&e);
        assert_eq!(portal.is_ok(), issued, "portal on {e}: {portal:?}");
        let grants = authority::compile(std::slice::from_ref(&e));
        assert_eq!(grants.len() == 1, honoured, "filter on {e}: {grants:?}");
        if issued {
            let grant = grants.first().map(|g| g.origin.clone());
            assert_eq!(audiences(std::slice::from_ref(&e)).first().cloned(), grant, "same origin for {e}");
        }
    }
}
