//! Hand-written validation of request bodies, so that every error names the field the
//! client sent (serde's derive errors name a line and column, not a field).

pub(super) mod event;
pub(super) mod postback;

use serde_json::Value;

use super::ValidationError;

/// `unknown_field`, naming the field and the closest allowed one when it looks like a typo.
fn unknown_field(field: &str, allowed: &[&str], hint: &str) -> ValidationError {
    let lowered = field.to_ascii_lowercase();
    let closest = allowed
        .iter()
        .map(|known| (strsim::damerau_levenshtein(&lowered, known), *known))
        .filter(|(distance, known)| *distance <= 2 && *distance < known.len())
        .min_by_key(|(distance, _)| *distance);
    let suggestion = match closest {
        Some((_, known)) => format!("; did you mean `{known}`?"),
        None => String::new(),
    };
    ValidationError::new("unknown_field", field, format!("unknown field `{field}`{suggestion}{hint}"))
}

/// At most `max` characters (Unicode scalar values, what a person would count).
fn check_max_chars(field: &str, text: &str, max: usize) -> Result<(), ValidationError> {
    // Cheap reject first: a string of more than 4 * max bytes has more than max chars.
    if text.len() > max && (text.len() > 4 * max || text.chars().count() > max) {
        return Err(ValidationError::new("too_long", field, format!("{field} must be at most {max} characters")));
    }
    Ok(())
}

fn has_control_chars(text: &str) -> bool {
    text.chars().any(char::is_control)
}

fn check_no_control_chars(field: &str, text: &str) -> Result<(), ValidationError> {
    if has_control_chars(text) {
        return Err(ValidationError::invalid(field, format!("{field} must not contain control characters")));
    }
    Ok(())
}

/// `null` counts as absent, like a missing field.
fn present<'v>(object: &'v serde_json::Map<String, Value>, field: &str) -> Option<&'v Value> {
    object.get(field).filter(|v| !v.is_null())
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_chars_counts_characters_not_bytes() {
        assert!(check_max_chars("f", "ééé", 3).is_ok());
        assert!(check_max_chars("f", "éééé", 3).is_err());
        assert!(check_max_chars("f", "abc", 3).is_ok());
        assert_eq!(check_max_chars("f", &"x".repeat(100), 3).unwrap_err().code, "too_long");
    }

    #[test]
    fn unknown_field_suggests_a_near_name() {
        let err = unknown_field("nmae", &["name", "type"], "");
        assert_eq!(err.code, "unknown_field");
        assert_eq!(err.field, "nmae");
        assert!(err.message.contains("did you mean `name`"), "{}", err.message);
        assert!(!unknown_field("zzzzzz", &["name"], "").message.contains("did you mean"));
    }
}
