//! Events from `POST /events` (a JSON object, or a batch `{"events": [...]}`) and from
//! `GET /events` (query pairs). Both read the text sent for each field into a
//! `RawEvent`, which one set of rules (`RawEvent::into_event`) turns into an [`Event`].
//!
//! Decisions beyond the spec: `null`, empty and all-blank values count as absent and
//! surrounding whitespace is trimmed; string fields also take JSON numbers (as their JSON
//! text), never booleans, lists or objects; control characters are refused. `type` and
//! `status` are case-insensitive. `status` is ignored (stored as none) for impressions
//! and clicks, `rejection_reason` is kept only with status `rejected`, and `event_name`
//! only for `event`. `payout`/`revenue` must be plain decimals (`-12.50`, no exponent, at
//! most 32 characters) and are kept as sent (a JSON number goes through `f64`, so send a
//! string for exact digits). `currency` and `country` are stored upper case; `ip` in
//! canonical form. `timestamp` is RFC 3339 (any offset, stored as UTC) or whole unix
//! seconds. `params` values may be strings, numbers or booleans (stored as text).

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{json_kind, unknown_field};
use crate::domain::event::{Event, EventType, Field, Status};
use crate::domain::rules::event::{
    check_param_key, check_param_value, is_param_key, letter_code, money, too_many_params, MAX_EVENT_NAME_CHARS,
    MAX_ID_CHARS, MAX_PARAMS, MAX_REASON_CHARS, MAX_SCOPE_ID_CHARS, MAX_SUB_CHARS, MAX_USER_AGENT_CHARS,
};
use crate::domain::rules::{check_max_chars, check_no_control_chars};
use crate::domain::ValidationError;

/// Most events in one `POST /events` batch.
pub const MAX_BATCH: usize = 500;

/// Every field an event may carry, as clients name them (`Field`'s names and `params`):
/// what an unknown field is compared with for a "did you mean" hint.
pub const FIELDS: &[&str] = &SENT;
const SENT: [&str; Field::COUNT + 1] = crate::domain::concat(&[Field::NAMES, &["params"]]);

/// 9999-12-31T23:59:59Z: a bigger number is not a time in seconds (likely milliseconds).
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// The query key that carries the ingest key for pixel-style trackers.
const INGEST_KEY_PARAM: &str = "key";

/// The text sent for each field of an event (`None`: not sent, or `null`), and `params`.
#[derive(Debug)]
struct RawEvent {
    /// By `Field`, in its order.
    texts: [Option<String>; Field::COUNT],
    params: BTreeMap<String, String>,
}

impl Default for RawEvent {
    fn default() -> Self {
        RawEvent { texts: std::array::from_fn(|_| None), params: BTreeMap::new() }
    }
}

/// One event, or a batch, as `POST /events` takes them.
#[derive(Debug, Clone, PartialEq)]
pub enum EventsBody {
    One(Box<Event>),
    Batch(Vec<Event>),
}

/// Parse and validate one event from a JSON object (`POST /events`). Unknown fields are
/// refused (extras belong in `params`). `received_at` is the default `timestamp`.
pub fn from_json(value: &Value, received_at: DateTime<Utc>) -> Result<Event, ValidationError> {
    RawEvent::from_json(value)?.into_event(received_at)
}

/// Parse and validate one event from query pairs (`GET /events`). `key` (the ingest key)
/// is skipped; `params.<k>` and any unrecognised pair go to `params`.
///
/// The same rules as [`from_json`]. A known field given twice is refused; a repeated
/// param keeps its first value; an unrecognised pair whose name cannot be a param name
/// (letters, digits, `_`, `-`, `.`, at most 64) is dropped, while an explicit
/// `params.<k>` / `params[k]` with such a name is refused.
pub fn from_query(pairs: &[(String, String)], received_at: DateTime<Utc>) -> Result<Event, ValidationError> {
    RawEvent::from_query(pairs)?.into_event(received_at)
}

/// The `POST /events` body: one event object, or `{"events": [...]}` (1..=500). A batch
/// is validated whole: one bad event refuses the batch, with its index in the field name
/// (`events[3].transaction_id`).
pub fn events_body(value: &Value, received_at: DateTime<Utc>) -> Result<EventsBody, ValidationError> {
    let items = match value {
        Value::Object(o) if o.contains_key("events") => {
            if o.len() > 1 {
                let extra = o.keys().find(|k| *k != "events").cloned().unwrap_or_default();
                return Err(ValidationError::new(
                    "unknown_field",
                    extra.clone(),
                    format!("a batch has only \"events\"; unexpected {extra:?}"),
                ));
            }
            o.get("events")
                .and_then(|e| e.as_array())
                .ok_or_else(|| ValidationError::invalid("events", "events must be an array of event objects"))?
        }
        Value::Object(_) => return from_json(value, received_at).map(|event| EventsBody::One(Box::new(event))),
        _ => return Err(ValidationError::invalid("body", "body must be an event object or {\"events\": [...]}")),
    };
    if items.is_empty() {
        return Err(ValidationError::invalid("events", "events must not be empty"));
    }
    if items.len() > MAX_BATCH {
        return Err(ValidationError::new(
            "too_many",
            "events",
            format!("at most {MAX_BATCH} events per batch, got {}", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| from_json(item, received_at).map_err(|e| e.within(&format!("events[{i}]."))))
        .collect::<Result<Vec<_>, _>>()
        .map(EventsBody::Batch)
}

impl RawEvent {
    /// The text sent for `field` (taken out).
    fn take(&mut self, field: Field) -> Option<String> {
        self.texts[field as usize].take()
    }

    /// The scalar field a client calls `name`, if any (`params` is not one).
    fn field_mut(&mut self, name: &str) -> Option<&mut Option<String>> {
        Field::parse(name).map(|field| &mut self.texts[field as usize])
    }

    fn from_json(value: &Value) -> Result<RawEvent, ValidationError> {
        let object = value.as_object().ok_or_else(|| ValidationError::invalid("", "an event must be a JSON object"))?;
        let mut raw = RawEvent::default();
        for (key, value) in object {
            if key == "params" {
                json_params(value, &mut raw.params)?;
                continue;
            }
            let Some(text) = raw.field_mut(key) else {
                return Err(unknown_field(key, FIELDS, "; extra values belong in params"));
            };
            *text = match value {
                Value::Null => None,
                Value::String(s) => Some(s.clone()),
                // Ids are often numeric; numbers are taken as their JSON text.
                Value::Number(n) => Some(n.to_string()),
                other => {
                    return Err(ValidationError::invalid(
                        key,
                        format!("{key} must be a string or a number, not {}", json_kind(other)),
                    ))
                }
            };
        }
        Ok(raw)
    }

    fn from_query(pairs: &[(String, String)]) -> Result<RawEvent, ValidationError> {
        let mut raw = RawEvent::default();
        for (key, value) in pairs {
            if key == INGEST_KEY_PARAM {
                continue;
            }
            if let Some(text) = raw.field_mut(key) {
                // Every query value is text (maybe empty), so a field already set was sent.
                if text.replace(value.clone()).is_some() {
                    return Err(ValidationError::invalid(key, format!("{key} is given more than once")));
                }
                continue;
            }
            let explicit =
                key.strip_prefix("params.").or_else(|| key.strip_prefix("params[").and_then(|k| k.strip_suffix(']')));
            let param_key = match explicit {
                Some(param_key) => {
                    check_param_key(key, param_key)?;
                    param_key
                }
                // Pixel URLs carry extras (cache busters, utm_*); keep those that can be
                // params and drop the rest rather than lose the event.
                None if is_param_key(key) => key.as_str(),
                None => continue,
            };
            // A repeated param keeps its first value.
            if raw.params.contains_key(param_key) {
                continue;
            }
            if raw.params.len() >= MAX_PARAMS && !value.is_empty() {
                return Err(too_many_params());
            }
            insert_param(&mut raw.params, key, param_key, value.clone())?;
        }
        Ok(raw)
    }

    /// The rules, common to JSON and query input.
    fn into_event(mut self, received_at: DateTime<Utc>) -> Result<Event, ValidationError> {
        // Surrounding whitespace is dropped; what is left empty counts as absent. Control
        // characters have no place in any of these fields (and would break header
        // templates). All fields first, so this error does not depend on the others.
        for (field, text) in Field::ALL.iter().zip(&mut self.texts) {
            tidy(field.as_str(), text)?;
        }
        let kind = self.take(Field::Type);
        let transaction_id = self.take(Field::TransactionId);
        let event_id = self.take(Field::EventId);
        let offer_id = self.take(Field::OfferId);
        let publisher_id = self.take(Field::PublisherId);
        let external_transaction_id = self.take(Field::ExternalTransactionId);
        let status = self.take(Field::Status);
        let rejection_reason = self.take(Field::RejectionReason);
        let event_name = self.take(Field::EventName);
        let subs = Field::SUBS.map(|sub| self.take(sub));

        let kind_text = kind.ok_or_else(|| ValidationError::required("type"))?;
        let kind_text = kind_text.to_ascii_lowercase();
        // `alert` is a postback type, not something a tracker reports.
        if kind_text == EventType::Alert.as_str() {
            return Err(ValidationError::invalid(
                "type",
                "alert is not an event type: alerts are raised by the postback manager itself; \
                 type must be one of impression, click, conversion, event",
            ));
        }
        let kind = EventType::parse_tracked(&kind_text).ok_or_else(|| {
            ValidationError::invalid("type", "type must be one of impression, click, conversion, event")
        })?;

        let transaction_id = limited("transaction_id", transaction_id, MAX_ID_CHARS)?
            .ok_or_else(|| ValidationError::required("transaction_id"))?;
        let event_id = limited("event_id", event_id, MAX_ID_CHARS)?;
        let offer_id = limited("offer_id", offer_id, MAX_SCOPE_ID_CHARS)?;
        let publisher_id = limited("publisher_id", publisher_id, MAX_SCOPE_ID_CHARS)?;
        if !kind.has_status() {
            // Conversions and events inherit these from the stored click.
            if offer_id.is_none() {
                return Err(ValidationError::required("offer_id"));
            }
            if publisher_id.is_none() {
                return Err(ValidationError::required("publisher_id"));
            }
        }
        let external_transaction_id = limited("external_transaction_id", external_transaction_id, MAX_ID_CHARS)?;

        // Impressions and clicks have no status: whatever was sent is ignored.
        let status = if kind.has_status() {
            match status {
                None => Some(Status::Approved),
                Some(text) => Some(Status::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
                    ValidationError::invalid("status", "status must be one of approved, pending, rejected")
                })?),
            }
        } else {
            None
        };
        // A reason only means something for a rejection.
        let rejection_reason = limited("rejection_reason", rejection_reason, MAX_REASON_CHARS)?
            .filter(|_| status == Some(Status::Rejected));
        let event_name = limited("event_name", event_name, MAX_EVENT_NAME_CHARS)?;
        let event_name = match kind {
            EventType::Event => Some(event_name.ok_or_else(|| ValidationError::required("event_name"))?),
            _ => None,
        };

        let payout = self.take(Field::Payout).map(|text| money("payout", text)).transpose()?;
        let revenue = self.take(Field::Revenue).map(|text| money("revenue", text)).transpose()?;
        let currency = self
            .take(Field::Currency)
            .map(|text| letter_code("currency", text, 3, "a 3-letter ISO 4217 code such as USD"))
            .transpose()?;

        for (field, sub) in Field::SUBS.iter().zip(&subs) {
            if let Some(text) = sub {
                check_max_chars(field.as_str(), text, MAX_SUB_CHARS)?;
            }
        }

        let ip = self
            .take(Field::Ip)
            .map(|text| {
                text.parse::<IpAddr>()
                    .map(|ip| ip.to_string())
                    .map_err(|_| ValidationError::invalid("ip", "ip must be an IPv4 or IPv6 address"))
            })
            .transpose()?;
        let user_agent = limited("user_agent", self.take(Field::UserAgent), MAX_USER_AGENT_CHARS)?;
        let country = self
            .take(Field::Country)
            .map(|text| letter_code("country", text, 2, "a 2-letter ISO 3166 code such as US"))
            .transpose()?;
        let timestamp = self.take(Field::Timestamp).as_deref().map(parse_timestamp).transpose()?.unwrap_or(received_at);

        Ok(Event {
            kind,
            transaction_id,
            event_id,
            offer_id,
            publisher_id,
            external_transaction_id,
            status,
            rejection_reason,
            event_name,
            payout,
            revenue,
            currency,
            subs,
            ip,
            user_agent,
            country,
            timestamp,
            params: self.params,
        })
    }
}

/// Trim; empty counts as absent; refuse control characters.
fn tidy(field: &str, text: &mut Option<String>) -> Result<(), ValidationError> {
    let Some(sent) = text.take() else { return Ok(()) };
    let trimmed = sent.trim();
    if trimmed.is_empty() {
        return Ok(());
    }
    check_no_control_chars(field, trimmed)?;
    *text = Some(if trimmed.len() == sent.len() { sent } else { trimmed.to_string() });
    Ok(())
}

fn limited(field: &str, text: Option<String>, max: usize) -> Result<Option<String>, ValidationError> {
    text.map(|text| check_max_chars(field, &text, max).map(|()| text)).transpose()
}

fn json_params(value: &Value, params: &mut BTreeMap<String, String>) -> Result<(), ValidationError> {
    let map = match value {
        Value::Null => return Ok(()),
        Value::Object(map) => map,
        other => {
            return Err(ValidationError::invalid(
                "params",
                format!("params must be an object, not {}", json_kind(other)),
            ))
        }
    };
    if map.len() > MAX_PARAMS {
        return Err(too_many_params());
    }
    for (key, value) in map {
        let field = format!("params.{key}");
        check_param_key(&field, key)?;
        let text = match value {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => {
                return Err(ValidationError::invalid(
                    &field,
                    format!("a param value must be a string, number or boolean, not {}", json_kind(other)),
                ))
            }
        };
        insert_param(params, &field, key, text)?;
    }
    Ok(())
}

/// Empty values count as absent.
fn insert_param(
    params: &mut BTreeMap<String, String>,
    field: &str,
    key: &str,
    value: String,
) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Ok(());
    }
    check_param_value(field, &value)?;
    params.insert(key.to_string(), value);
    Ok(())
}

/// RFC 3339 (any offset, converted to UTC) or whole unix seconds.
fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, ValidationError> {
    let invalid = || {
        ValidationError::invalid(
            "timestamp",
            "timestamp must be an RFC 3339 time such as 2024-05-01T12:00:00Z or unix seconds",
        )
    };
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<i64>()
            .ok()
            .filter(|s| *s <= MAX_UNIX_SECONDS)
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .ok_or_else(invalid);
    }
    DateTime::parse_from_rfc3339(text)
        .or_else(|e| match text.rfind(' ') {
            // A `+hh:mm` offset in a query string arrives as ` hh:mm` when the tracker did
            // not percent-encode the `+`.
            Some(i) if i > 10 => DateTime::parse_from_rfc3339(&format!("{}+{}", &text[..i], &text[i + 1..])),
            _ => Err(e),
        })
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let t = |s: &str| parse_timestamp(s).map(|t| t.to_rfc3339());
        assert_eq!(t("0").unwrap(), "1970-01-01T00:00:00+00:00");
        assert_eq!(t("253402300799").unwrap(), "9999-12-31T23:59:59+00:00");
        assert!(t("253402300800").is_err());
        assert!(t("99999999999999999999999").is_err());
        assert_eq!(t("2024-05-01T14:00:00 02:00").unwrap(), "2024-05-01T12:00:00+00:00");
        assert_eq!(t("2024-05-01 12:00:00Z").unwrap(), "2024-05-01T12:00:00+00:00");
        assert!(t("2024-05-01T14:00:00 ").is_err());
        assert!(t("é é é é é é é é é é é").is_err());
    }

    #[test]
    fn field_names_map_to_named_fields() {
        let mut raw = RawEvent::default();
        for (i, name) in FIELDS[..FIELDS.len() - 1].iter().enumerate() {
            *raw.field_mut(name).unwrap() = Some(i.to_string());
        }
        assert_eq!(raw.take(Field::Type).as_deref(), Some("0"));
        assert_eq!(raw.take(Field::Sub1).as_deref(), Some("12"));
        assert_eq!(raw.take(Field::Sub10).as_deref(), Some("21"));
        assert_eq!(raw.take(Field::Timestamp).as_deref(), Some("25"));
        assert_eq!(FIELDS[FIELDS.len() - 1], "params");
        assert!(raw.field_mut("params").is_none());
        assert!(raw.field_mut("sub11").is_none());
    }
}
