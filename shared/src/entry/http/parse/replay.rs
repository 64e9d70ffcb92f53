//! The body of `POST /logs/replay`: the filters of `GET /logs` as a JSON object (same
//! names, `.not` / `.contains` forms included, values as strings), `from` (required),
//! optional `to`, `cursor` and `dry_run`. The filters go through the very parser of
//! `GET /logs` (`query::log_filter`), so the two cannot drift.
//!
//! Replay only ever takes failed, non-test firings, so `outcome` may only say `failed`
//! (or *is not* something else) and `test` only `false`: a filter that could match
//! nothing but what replay never takes (`outcome: "delivered"`, `test: "true"`) is
//! refused (400 naming it) rather than silently replaying nothing. `limit` is not
//! taken: each call replays up to 10,000 and gives a `next_cursor`.

use serde_json::Value;

use super::query::log_filter;
use super::{json_kind, present, unknown_field};
use crate::domain::log::{LogColumn, LogOp, Outcome};
use crate::domain::ValidationError;
use crate::service::replay::{ReplayRequest, MAX_REPLAY};

pub fn replay_request(value: &Value) -> Result<ReplayRequest, ValidationError> {
    let Some(object) = value.as_object() else {
        return Err(ValidationError::invalid(
            "body",
            format!("the body must be a JSON object of filters, not {}", json_kind(value)),
        ));
    };
    let mut dry_run = false;
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(object.len());
    for (name, v) in object {
        match name.as_str() {
            "dry_run" => {
                dry_run = match present(object, name) {
                    None => false,
                    Some(Value::Bool(b)) => *b,
                    Some(other) => {
                        return Err(ValidationError::invalid(
                            "dry_run",
                            format!("dry_run must be true or false, not {}", json_kind(other)),
                        ))
                    }
                }
            }
            "limit" => {
                return Err(unknown_field(
                    name,
                    &[],
                    "; a replay takes up to 10,000 firings per call: follow next_cursor for more",
                ))
            }
            _ => match v {
                Value::Null => {}
                Value::String(s) => pairs.push((name.clone(), s.clone())),
                other => {
                    return Err(ValidationError::invalid(
                        name.as_str(),
                        format!("{name} must be a string (as in GET /logs), not {}", json_kind(other)),
                    ))
                }
            },
        }
    }
    let mut filter = log_filter(&pairs)?;
    if filter.from.is_none() {
        return Err(ValidationError::new(
            "required",
            "from",
            "from is required: the RFC 3339 time the replay starts at, e.g. 2024-05-01T12:00:00Z",
        ));
    }
    if filter.outcome.is_some_and(|o| o != Outcome::Failed) {
        return Err(only_failed("outcome"));
    }
    for p in &filter.predicates {
        match (p.column(), p.op(), p.value()) {
            (LogColumn::Outcome, LogOp::IsNot, "failed") => return Err(only_failed("outcome.not")),
            (LogColumn::Test, LogOp::Is, "true") | (LogColumn::Test, LogOp::IsNot, "false") => {
                let field = format!("test{}", p.op().suffix());
                return Err(ValidationError::invalid(
                    field,
                    "test entries are never replayed: leave test out or false",
                ));
            }
            _ => {}
        }
    }
    filter.outcome = None;
    Ok(ReplayRequest { filter, dry_run, max: MAX_REPLAY })
}

fn only_failed(field: &str) -> ValidationError {
    ValidationError::invalid(field, "replay takes only failed firings: leave outcome out or failed")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;
    use crate::domain::log::Cursor;

    const FROM: &str = "2030-01-01T00:00:00Z";

    #[test]
    fn the_filters_of_get_logs_as_json() {
        let r = replay_request(&json!({
            "from": FROM, "to": "2030-01-02T00:00:00Z", "postback_id": "pb_1", "status_code": "404",
            "url.contains": "aff", "error.not": "x", "outcome": "failed", "test": "false", "dry_run": true,
            "transaction_id": "", "offer_id": null,
        }))
        .unwrap();
        assert!(r.dry_run);
        assert_eq!(r.max, MAX_REPLAY);
        assert_eq!(r.filter.postback_id.as_deref(), Some("pb_1"));
        assert_eq!(r.filter.status_code, Some(404));
        assert_eq!(r.filter.transaction_id, None, "an empty value is not set, as in GET /logs");
        assert_eq!(r.filter.offer_id, None, "null is not set");
        assert_eq!(r.filter.outcome, None, "the store adds failed itself");
        assert_eq!(r.filter.predicates.len(), 3, "url.contains, error.not, test");
        assert!(!replay_request(&json!({"from": FROM})).unwrap().dry_run, "dry_run defaults to false");
        let cursor =
            Cursor { fired_at: chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap(), last_id: "abc".into() };
        let r = replay_request(&json!({"from": FROM, "cursor": cursor.encode()})).unwrap();
        assert_eq!(r.filter.cursor, Some(cursor));
    }

    #[test]
    fn bad_bodies_name_the_field() {
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            ("not an object", json!([]), "body", "invalid"),
            ("from missing", json!({"postback_id": "pb"}), "from", "required"),
            ("from empty", json!({"from": ""}), "from", "required"),
            ("from not a time", json!({"from": "yesterday"}), "from", "invalid"),
            ("from after to", json!({"from": FROM, "to": "2029-01-01T00:00:00Z"}), "from", "invalid"),
            ("from a number", json!({"from": 1_700_000_000}), "from", "invalid"),
            ("unknown field", json!({"from": FROM, "status": "500"}), "status", "unknown_field"),
            ("limit", json!({"from": FROM, "limit": "10"}), "limit", "unknown_field"),
            ("dry_run a string", json!({"from": FROM, "dry_run": "yes"}), "dry_run", "invalid"),
            ("a filter as a number", json!({"from": FROM, "status_code": 500}), "status_code", "invalid"),
            ("a filter as a list", json!({"from": FROM, "postback_id": ["a"]}), "postback_id", "invalid"),
            ("bad status code", json!({"from": FROM, "status_code": "999"}), "status_code", "invalid"),
            ("contains on a closed column", json!({"from": FROM, "type.contains": "c"}), "type.contains", "invalid"),
            ("bad cursor", json!({"from": FROM, "cursor": "nope"}), "cursor", "invalid"),
            ("outcome delivered", json!({"from": FROM, "outcome": "delivered"}), "outcome", "invalid"),
            ("outcome not failed", json!({"from": FROM, "outcome.not": "failed"}), "outcome.not", "invalid"),
            ("outcome unknown", json!({"from": FROM, "outcome": "lost"}), "outcome", "invalid"),
            ("test entries", json!({"from": FROM, "test": "true"}), "test", "invalid"),
            ("test.not false", json!({"from": FROM, "test.not": "false"}), "test.not", "invalid"),
        ];
        for (name, body, field, code) in cases {
            let err = replay_request(&body).unwrap_err();
            assert_eq!((err.field.as_str(), err.code), (field, code), "{name}: {}", err.message);
        }
        // Filters that keep failed, non-test entries are fine.
        for ok in [json!({"from": FROM, "outcome.not": "delivered"}), json!({"from": FROM, "test.not": "true"})] {
            assert!(replay_request(&ok).is_ok(), "{ok}");
        }
    }
}
