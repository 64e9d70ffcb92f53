//! Request parsing, in one place at the edge: what the HTTP API receives (JSON bodies and
//! query strings) becomes the typed values the services take, or a [`ValidationError`]
//! naming the field as the client sent it.
//!
//! - `event`: one event from a JSON object or from query pairs; the `POST /events` body
//!   (one event or a batch).
//! - `postback`: the create/replace body of a postback; the sample event of preview/test.
//! - `query`: the filters of `GET /postbacks` and `GET /logs`.
//! - `replay`: the body of `POST /logs/replay` (the `GET /logs` filters as JSON).
//!
//! Here: shapes, `null` as absent, unknown and repeated fields with "did you mean"
//! hints, trimming, case folding, numbers sent for text, defaults, the wire formats of
//! times and addresses. The rules about the values themselves (limits, template and URL
//! checks, money and code formats) are the domain's (`crate::domain::rules`); the parsers
//! call them field by field, in a fixed order, so the first error is always the same.
//!
//! Hand-written rather than `#[derive(Deserialize)]` (with `serde_path_to_error` for the
//! path): serde's messages ("invalid type: string \"x\", expected a boolean", "missing
//! field", "unknown field ..., expected one of ...") are not the API's, and a custom error
//! carries only a message, not our `code` (`required`, `too_long`, `unknown_field`). A
//! derive reports the first problem in the order of the keys sent, where the API reports
//! them in the order of its field table (a missing `name` before a wrong `type`). Events
//! take numbers for text fields (kept as their JSON text), trim and treat blanks as
//! absent, and take repeated query keys, `params.<k>` / `params[k]` and stray pixel
//! parameters; none of which maps onto a derive without a custom deserializer per field.
//! So walking the parsed `serde_json::Value` is both shorter and exact.

pub mod access;
pub mod event;
pub mod postback;
pub mod query;
pub mod replay;

pub(crate) use crate::domain::error::json_kind;
use serde_json::Value;

use crate::domain::ValidationError;

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

/// A value that is none of an enum's `names`: 400 naming `field` and listing them.
fn not_one_of(field: &str, names: &[&str]) -> ValidationError {
    ValidationError::invalid(field, format!("{field} must be one of {}", names.join(", ")))
}

/// `null` counts as absent, like a missing field.
fn present<'v>(object: &'v serde_json::Map<String, Value>, field: &str) -> Option<&'v Value> {
    object.get(field).filter(|v| !v.is_null())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_suggests_a_near_name() {
        let err = unknown_field("nmae", &["name", "type"], "");
        assert_eq!(err.code, "unknown_field");
        assert_eq!(err.field, "nmae");
        assert!(err.message.contains("did you mean `name`"), "{}", err.message);
        assert!(!unknown_field("zzzzzz", &["name"], "").message.contains("did you mean"));
    }
}
