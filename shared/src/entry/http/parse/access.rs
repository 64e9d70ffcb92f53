//! The body of `POST /keys` and the filters of `GET /audit`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{json_kind, present, unknown_field};
use crate::domain::access::{
    AuditAction, AuditCursor, AuditFilter, KeySpec, Role, DEFAULT_AUDIT_LIMIT, MAX_AUDIT_LIMIT,
};
use crate::domain::ValidationError;

const KEY_FIELDS: &[&str] = &["name", "role", "publisher_id"];
const AUDIT_PARAMS: &[&str] = &["actor_key_id", "action", "target_id", "from", "to", "limit", "cursor"];
/// The longest `actor_key_id` or `target_id` an audit query takes (characters).
pub(crate) const MAX_AUDIT_ID_CHARS: usize = 200;

fn text<'v>(object: &'v serde_json::Map<String, Value>, field: &str) -> Result<Option<&'v str>, ValidationError> {
    match present(object, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(other) => {
            Err(ValidationError::invalid(field, format!("{field} must be a string, not {}", json_kind(other))))
        }
    }
}

/// `{"name", "role", "publisher_id"}`; every rule names its field (see `KeySpec::new`).
pub fn key_spec(value: &Value) -> Result<KeySpec, ValidationError> {
    let Value::Object(object) = value else {
        return Err(ValidationError::invalid("body", format!("body must be a JSON object, not {}", json_kind(value))));
    };
    if let Some(unknown) = object.keys().find(|k| !KEY_FIELDS.contains(&k.as_str())) {
        return Err(unknown_field(unknown, KEY_FIELDS, ""));
    }
    let name = text(object, "name")?.ok_or_else(|| ValidationError::required("name"))?;
    let role = text(object, "role")?.ok_or_else(|| ValidationError::required("role"))?;
    let role = Role::parse(role).ok_or_else(|| {
        ValidationError::invalid("role", format!("role must be one of {}, not {role:?}", Role::NAMES.join(", ")))
    })?;
    let publisher_id = text(object, "publisher_id")?.map(str::to_string);
    KeySpec::new(name.to_string(), role, publisher_id)
}

fn time_value(name: &str, value: &str) -> Result<DateTime<Utc>, ValidationError> {
    DateTime::parse_from_rfc3339(value).map(|t| t.with_timezone(&Utc)).map_err(|_| {
        ValidationError::invalid(name, format!("{name} must be an RFC 3339 time, e.g. 2024-05-01T12:00:00Z"))
    })
}

/// `GET /audit?actor_key_id=&action=&target_id=&from=&to=&limit=&cursor=`.
pub fn audit_filter(pairs: &[(String, String)]) -> Result<AuditFilter, ValidationError> {
    let mut filter = AuditFilter { limit: DEFAULT_AUDIT_LIMIT, ..AuditFilter::default() };
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in pairs {
        let name = name.as_str();
        if !AUDIT_PARAMS.contains(&name) {
            return Err(unknown_field(name, AUDIT_PARAMS, ""));
        }
        if seen.contains(&name) {
            return Err(ValidationError::new("duplicate", name, format!("{name} is given more than once")));
        }
        seen.push(name);
        if value.is_empty() {
            continue;
        }
        let too_long = || ValidationError::invalid(name, format!("{name} is at most {MAX_AUDIT_ID_CHARS} characters"));
        let bounded = |v: &String| v.chars().count() <= MAX_AUDIT_ID_CHARS;
        match name {
            "actor_key_id" => filter.actor_key_id = Some(Some(value.clone()).filter(bounded).ok_or_else(too_long)?),
            "target_id" => filter.target_id = Some(Some(value.clone()).filter(bounded).ok_or_else(too_long)?),
            "action" => {
                filter.action = Some(AuditAction::parse(value).ok_or_else(|| {
                    ValidationError::invalid(name, format!("action must be one of {}", AuditAction::NAMES.join(", ")))
                })?)
            }
            "from" => filter.from = Some(time_value(name, value)?),
            "to" => filter.to = Some(time_value(name, value)?),
            "limit" => {
                filter.limit =
                    value.parse::<usize>().ok().filter(|n| (1..=MAX_AUDIT_LIMIT).contains(n)).ok_or_else(|| {
                        ValidationError::invalid(name, format!("limit must be a number 1-{MAX_AUDIT_LIMIT}"))
                    })?
            }
            _ => filter.cursor = Some(AuditCursor::decode(value)?),
        }
    }
    if let (Some(from), Some(to)) = (filter.from, filter.to) {
        if from > to {
            return Err(ValidationError::invalid("from", "from must not be after to"));
        }
    }
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_body_errors_name_the_field() {
        let field = |v: Value| key_spec(&v).unwrap_err().field;
        assert_eq!(field(json!({"role": "admin"})), "name");
        assert_eq!(field(json!({"name": "A"})), "role");
        assert_eq!(field(json!({"name": "A", "role": "root"})), "role");
        assert_eq!(field(json!({"name": "A", "role": "partner"})), "publisher_id");
        assert_eq!(field(json!({"name": "A", "role": "viewer", "publisher_id": "7"})), "publisher_id");
        assert_eq!(field(json!({"name": "x".repeat(201), "role": "admin"})), "name");
        assert_eq!(field(json!({"name": 5, "role": "admin"})), "name");
        assert_eq!(field(json!({"name": "A", "role": "admin", "nmae": 1})), "nmae");
        let ok = key_spec(&json!({"name": "P", "role": "partner", "publisher_id": "7"})).unwrap();
        assert_eq!(ok.publisher_id.as_deref(), Some("7"));
    }

    #[test]
    fn audit_filters_parse_and_refuse() {
        let pairs = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        let f =
            audit_filter(&pairs(&[("action", "key.create"), ("limit", "5"), ("actor_key_id", "env:admin")])).unwrap();
        assert_eq!(
            (f.action, f.limit, f.actor_key_id.as_deref()),
            (Some(AuditAction::KeyCreate), 5, Some("env:admin"))
        );
        assert_eq!(audit_filter(&pairs(&[("action", "x")])).unwrap_err().field, "action");
        assert_eq!(audit_filter(&pairs(&[("limit", "0")])).unwrap_err().field, "limit");
        assert_eq!(audit_filter(&pairs(&[("from", "yesterday")])).unwrap_err().field, "from");
        assert_eq!(audit_filter(&pairs(&[("cursor", "zz")])).unwrap_err().field, "cursor");
        assert_eq!(audit_filter(&pairs(&[("who", "me")])).unwrap_err().field, "who");
        // The bound is in characters, as the document's maxLength.
        let longest = "é".repeat(MAX_AUDIT_ID_CHARS);
        assert_eq!(audit_filter(&pairs(&[("target_id", &longest)])).unwrap().target_id, Some(longest.clone()));
        let over = format!("{longest}x");
        assert_eq!(audit_filter(&pairs(&[("actor_key_id", &over)])).unwrap_err().field, "actor_key_id");
    }
}
