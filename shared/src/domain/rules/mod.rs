//! The rules a value must keep to be stored, whichever way it arrived: limits, formats,
//! and the save-time checks of postback templates. They take typed values (text, lists,
//! parsed templates), never request bodies or query strings: reading those is the edge's
//! job (`crate::entry::http::parse`), which calls these rules field by field.
//!
//! What belongs here rather than at the edge: a rule the rest of the domain relies on,
//! that would still hold if values came in some other way (a CLI, an import). Templates
//! must parse with known macros and must not be able to move the target host; headers
//! cannot carry control characters or override what the HTTP client manages; a delay is
//! at most 30 days; money is a plain decimal; lengths are bounded so stored rows stay
//! small. What stays at the edge: JSON and query shapes (types, `null` as absent, unknown
//! and repeated fields, "did you mean" hints), trimming, case folding, numbers sent for
//! text, defaults for absent fields, and the wire formats of times and addresses.
//!
//! Every rule names the field it checks in its [`ValidationError`].

pub mod event;
pub mod postback;

use super::ValidationError;

/// At most `max` characters (Unicode scalar values, what a person would count).
pub fn check_max_chars(field: &str, text: &str, max: usize) -> Result<(), ValidationError> {
    // Cheap reject first: a string of more than 4 * max bytes has more than max chars.
    if text.len() > max && (text.len() > 4 * max || text.chars().count() > max) {
        return Err(ValidationError::new("too_long", field, format!("{field} must be at most {max} characters")));
    }
    Ok(())
}

pub fn check_no_control_chars(field: &str, text: &str) -> Result<(), ValidationError> {
    if text.chars().any(char::is_control) {
        return Err(ValidationError::invalid(field, format!("{field} must not contain control characters")));
    }
    Ok(())
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
}
