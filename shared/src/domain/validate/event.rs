//! `Event::from_json` and `Event::from_query`: both collect the sent text of every known
//! field into a [`Draft`], which one set of rules then turns into an [`Event`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{check_max_chars, check_no_control_chars, json_kind, unknown_field};
use crate::domain::event::{Event, EventType, Status};
use crate::domain::ValidationError;

/// Every scalar field, in the order errors are reported.
const FIELDS: [&str; 27] = [
    "type",
    "transaction_id",
    "event_id",
    "offer_id",
    "publisher_id",
    "external_transaction_id",
    "status",
    "rejection_reason",
    "event_name",
    "payout",
    "revenue",
    "currency",
    "sub1",
    "sub2",
    "sub3",
    "sub4",
    "sub5",
    "sub6",
    "sub7",
    "sub8",
    "sub9",
    "sub10",
    "ip",
    "user_agent",
    "country",
    "timestamp",
    "params",
];
/// `params` is the last entry of `FIELDS` and is not a scalar.
const SCALAR_FIELDS: usize = FIELDS.len() - 1;
const FIRST_SUB: usize = 12;

pub const MAX_ID_CHARS: usize = 256;
pub const MAX_SCOPE_ID_CHARS: usize = 128;
pub const MAX_REASON_CHARS: usize = 256;
pub const MAX_EVENT_NAME_CHARS: usize = 128;
pub const MAX_MONEY_CHARS: usize = 32;
pub const MAX_SUB_CHARS: usize = 512;
pub const MAX_USER_AGENT_CHARS: usize = 1024;
pub const MAX_PARAMS: usize = 50;
pub const MAX_PARAM_KEY_CHARS: usize = 64;
pub const MAX_PARAM_VALUE_CHARS: usize = 1024;
/// 9999-12-31T23:59:59Z: a bigger number is not a time in seconds (likely milliseconds).
const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// The query key that carries the ingest key for pixel-style trackers.
const INGEST_KEY_PARAM: &str = "key";

fn slot(name: &str) -> Option<usize> {
    FIELDS[..SCALAR_FIELDS].iter().position(|f| *f == name)
}

/// The text sent for each scalar field (`None`: not sent), plus `params`.
struct Draft {
    texts: [Option<String>; SCALAR_FIELDS],
    params: BTreeMap<String, String>,
}

impl Draft {
    fn new() -> Self {
        Draft { texts: std::array::from_fn(|_| None), params: BTreeMap::new() }
    }
}

pub(crate) fn from_json(value: &Value, received_at: DateTime<Utc>) -> Result<Event, ValidationError> {
    let object = value.as_object().ok_or_else(|| ValidationError::invalid("", "an event must be a JSON object"))?;
    let mut draft = Draft::new();
    for (key, value) in object {
        if key == "params" {
            json_params(value, &mut draft.params)?;
            continue;
        }
        let Some(i) = slot(key) else {
            return Err(unknown_field(key, &FIELDS, "; extra values belong in params"));
        };
        draft.texts[i] = match value {
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
    finish(draft, received_at)
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

pub(crate) fn from_query(pairs: &[(String, String)], received_at: DateTime<Utc>) -> Result<Event, ValidationError> {
    let mut draft = Draft::new();
    let mut seen = [false; SCALAR_FIELDS];
    for (key, value) in pairs {
        if key == INGEST_KEY_PARAM {
            continue;
        }
        if let Some(i) = slot(key) {
            if std::mem::replace(&mut seen[i], true) {
                return Err(ValidationError::invalid(key, format!("{key} is given more than once")));
            }
            draft.texts[i] = Some(value.clone());
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
        if draft.params.contains_key(param_key) {
            continue;
        }
        if draft.params.len() >= MAX_PARAMS && !value.is_empty() {
            return Err(too_many_params());
        }
        insert_param(&mut draft.params, key, param_key, value.clone())?;
    }
    finish(draft, received_at)
}

fn is_param_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_PARAM_KEY_CHARS
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn check_param_key(field: &str, key: &str) -> Result<(), ValidationError> {
    if !is_param_key(key) {
        return Err(ValidationError::invalid(
            field,
            format!("a param name must be 1 to {MAX_PARAM_KEY_CHARS} letters, digits, _, - or ."),
        ));
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
    check_max_chars(field, &value, MAX_PARAM_VALUE_CHARS)?;
    params.insert(key.to_string(), value);
    Ok(())
}

fn too_many_params() -> ValidationError {
    ValidationError::new("too_long", "params", format!("at most {MAX_PARAMS} params are allowed"))
}

/// The rules, common to JSON and query input.
fn finish(draft: Draft, received_at: DateTime<Utc>) -> Result<Event, ValidationError> {
    // Surrounding whitespace is dropped; what is left empty counts as absent. Control
    // characters have no place in any of these fields (and would break header templates).
    let mut texts: [Option<&str>; SCALAR_FIELDS] = [None; SCALAR_FIELDS];
    for (i, text) in draft.texts.iter().enumerate() {
        if let Some(text) = text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            check_no_control_chars(FIELDS[i], text)?;
            texts[i] = Some(text);
        }
    }
    let get = |name: &str| slot(name).and_then(|i| texts[i]);
    let limited = |name: &'static str, max: usize| -> Result<Option<String>, ValidationError> {
        get(name).map(|text| check_max_chars(name, text, max).map(|()| text.to_string())).transpose()
    };

    let kind_text = get("type").ok_or_else(|| ValidationError::required("type"))?;
    let kind = EventType::parse(&kind_text.to_ascii_lowercase())
        .ok_or_else(|| ValidationError::invalid("type", "type must be one of impression, click, conversion, event"))?;

    let transaction_id =
        limited("transaction_id", MAX_ID_CHARS)?.ok_or_else(|| ValidationError::required("transaction_id"))?;
    let event_id = limited("event_id", MAX_ID_CHARS)?;
    let offer_id = limited("offer_id", MAX_SCOPE_ID_CHARS)?;
    let publisher_id = limited("publisher_id", MAX_SCOPE_ID_CHARS)?;
    if !kind.has_status() {
        // Conversions and events inherit these from the stored click.
        if offer_id.is_none() {
            return Err(ValidationError::required("offer_id"));
        }
        if publisher_id.is_none() {
            return Err(ValidationError::required("publisher_id"));
        }
    }
    let external_transaction_id = limited("external_transaction_id", MAX_ID_CHARS)?;

    // Impressions and clicks have no status: whatever was sent is ignored.
    let status = if kind.has_status() {
        match get("status") {
            None => Some(Status::Approved),
            Some(text) => Some(Status::parse(&text.to_ascii_lowercase()).ok_or_else(|| {
                ValidationError::invalid("status", "status must be one of approved, pending, rejected")
            })?),
        }
    } else {
        None
    };
    // A reason only means something for a rejection.
    let rejection_reason = limited("rejection_reason", MAX_REASON_CHARS)?.filter(|_| status == Some(Status::Rejected));
    let event_name = limited("event_name", MAX_EVENT_NAME_CHARS)?;
    let event_name = match kind {
        EventType::Event => Some(event_name.ok_or_else(|| ValidationError::required("event_name"))?),
        _ => None,
    };

    let payout = money(get("payout"), "payout")?;
    let revenue = money(get("revenue"), "revenue")?;
    let currency = letters(get("currency"), "currency", 3, "a 3-letter ISO 4217 code such as USD")?;

    let mut subs: [Option<String>; 10] = std::array::from_fn(|_| None);
    for (n, sub) in subs.iter_mut().enumerate() {
        let i = FIRST_SUB + n;
        if let Some(text) = texts[i] {
            check_max_chars(FIELDS[i], text, MAX_SUB_CHARS)?;
            *sub = Some(text.to_string());
        }
    }

    let ip = get("ip")
        .map(|text| {
            text.parse::<IpAddr>()
                .map(|ip| ip.to_string())
                .map_err(|_| ValidationError::invalid("ip", "ip must be an IPv4 or IPv6 address"))
        })
        .transpose()?;
    let user_agent = limited("user_agent", MAX_USER_AGENT_CHARS)?;
    let country = letters(get("country"), "country", 2, "a 2-letter ISO 3166 code such as US")?;
    let timestamp = get("timestamp").map(timestamp).transpose()?.unwrap_or(received_at);

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
        params: draft.params,
    })
}

/// A plain decimal, kept as sent: optional `-`, digits, optional `.` and digits. No
/// exponent, no `+`, no NaN or infinity, at most 32 characters.
fn money(text: Option<&str>, field: &str) -> Result<Option<String>, ValidationError> {
    let Some(text) = text else { return Ok(None) };
    check_max_chars(field, text, MAX_MONEY_CHARS)?;
    if !is_plain_decimal(text) {
        return Err(ValidationError::invalid(field, format!("{field} must be a decimal number such as 12.34")));
    }
    Ok(Some(text.to_string()))
}

fn is_plain_decimal(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (unsigned, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}

/// Exactly `len` ASCII letters, stored upper case.
fn letters(text: Option<&str>, field: &str, len: usize, what: &str) -> Result<Option<String>, ValidationError> {
    let Some(text) = text else { return Ok(None) };
    if text.len() != len || !text.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ValidationError::invalid(field, format!("{field} must be {what}")));
    }
    Ok(Some(text.to_ascii_uppercase()))
}

/// RFC 3339 (any offset, converted to UTC) or whole unix seconds.
fn timestamp(text: &str) -> Result<DateTime<Utc>, ValidationError> {
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
    fn plain_decimals() {
        for ok in ["0", "12", "12.50", "-0.001", "007"] {
            assert!(is_plain_decimal(ok), "{ok}");
        }
        for bad in ["", "-", ".", "1.", ".5", "+1", "1e3", "1_000", "NaN", "inf", "1.2.3", "--1", " 1"] {
            assert!(!is_plain_decimal(bad), "{bad}");
        }
    }

    #[test]
    fn timestamps() {
        let t = |s: &str| timestamp(s).map(|t| t.to_rfc3339());
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
    fn field_slots() {
        assert_eq!(slot("type"), Some(0));
        assert_eq!(slot("sub1"), Some(FIRST_SUB));
        assert_eq!(slot("sub10"), Some(FIRST_SUB + 9));
        assert_eq!(slot("params"), None);
        assert_eq!(FIELDS[SCALAR_FIELDS], "params");
    }
}
