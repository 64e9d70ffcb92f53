//! Delivery log entries, their filters and the opaque pagination cursor.

use std::collections::BTreeMap;

use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::EventType;
use super::firing::Firing;
use super::ValidationError;

pub const DEFAULT_LOG_LIMIT: usize = 50;
pub const MAX_LOG_LIMIT: usize = 500;
/// Response bodies kept in a log entry are cut to this many bytes.
pub const MAX_LOGGED_RESPONSE_BYTES: usize = 4096;

super::named_enum! {
    #[strum(serialize_all = "lowercase")]
    pub enum Outcome {
        Delivered,
        Failed,
        Retrying,
        Skipped,
    }
}

/// One firing attempt (or skip). Secrets are redacted before an entry is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// UUIDv7, minted when the attempt is logged (after its request); a delivered
    /// attempt's entry may carry the id its store asked for instead
    /// (`LogStore::delivered_entry_id`). Listings are ordered by `fired_at`; the id only
    /// breaks ties.
    pub id: String,
    pub delivery_id: String,
    pub postback_id: String,
    pub postback_name: String,
    pub transaction_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: EventType,
    #[serde(default)]
    pub offer_id: Option<String>,
    #[serde(default)]
    pub publisher_id: Option<String>,
    pub fired_at: DateTime<Utc>,
    pub attempt: u32,
    pub method: String,
    /// With secret query values redacted.
    pub url: String,
    /// Request headers with secret values redacted.
    #[serde(default)]
    pub request_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub request_body: Option<String>,
    pub status_code: Option<u16>,
    /// Truncated to `MAX_LOGGED_RESPONSE_BYTES`.
    pub response_body: Option<String>,
    /// Transport error, refusal, or skip reason.
    pub error: Option<String>,
    pub duration_ms: u64,
    pub outcome: Outcome,
    pub test: bool,
    /// The version of the postback that produced the attempt; `null` when the postback
    /// no longer existed (a skip says so). Entries logged before versions existed have
    /// no such key and read as version 1.
    #[serde(default = "legacy_postback_version")]
    pub postback_version: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resend_of: Option<String>,
    /// The failed entry a bulk replay fired again (`POST /logs/replay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<String>,
    /// A reversal's attempt: the delivered entry it reverses (docs/DESIGN.md *Reversals*).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reversal_of: Option<String>,
    /// What is needed to resend this entry: the firing it came from. Not part of the API
    /// output.
    #[serde(default, skip_serializing)]
    pub firing: Option<Firing>,
}

fn legacy_postback_version() -> Option<u32> {
    Some(super::postback::FIRST_VERSION)
}

super::named_enum! {
    /// A column `GET /logs` filters on, by its parameter name (the entry's field name).
    #[strum(serialize_all = "snake_case")]
    pub enum LogColumn {
        PostbackId,
        PostbackName,
        TransactionId,
        DeliveryId,
        EventId,
        Type,
        OfferId,
        PublisherId,
        StatusCode,
        Outcome,
        Url,
        Error,
        ResponseBody,
        Test,
    }
}

impl LogColumn {
    /// Free-text columns, the ones *contains* applies to. `type`, `status_code`,
    /// `outcome` and `test` take a value from a closed set (or a number): only *is* and
    /// *is not*.
    pub fn is_text(self) -> bool {
        !matches!(self, LogColumn::Type | LogColumn::StatusCode | LogColumn::Outcome | LogColumn::Test)
    }

    /// The entry's value in this column as the filter compares it: the status code in
    /// decimal, `test` as `true`/`false`; `None` when the entry has none.
    pub fn value_of(self, e: &LogEntry) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow::{Borrowed, Owned};
        match self {
            LogColumn::PostbackId => Some(Borrowed(&e.postback_id)),
            LogColumn::PostbackName => Some(Borrowed(&e.postback_name)),
            LogColumn::TransactionId => Some(Borrowed(&e.transaction_id)),
            LogColumn::DeliveryId => Some(Borrowed(&e.delivery_id)),
            LogColumn::EventId => e.event_id.as_deref().map(Borrowed),
            LogColumn::Type => Some(Borrowed(e.kind.as_str())),
            LogColumn::OfferId => e.offer_id.as_deref().map(Borrowed),
            LogColumn::PublisherId => e.publisher_id.as_deref().map(Borrowed),
            LogColumn::StatusCode => e.status_code.map(|c| Owned(c.to_string())),
            LogColumn::Outcome => Some(Borrowed(e.outcome.as_str())),
            LogColumn::Url => Some(Borrowed(&e.url)),
            LogColumn::Error => e.error.as_deref().map(Borrowed),
            LogColumn::ResponseBody => e.response_body.as_deref().map(Borrowed),
            LogColumn::Test => Some(Borrowed(if e.test { "true" } else { "false" })),
        }
    }
}

/// How a predicate compares: *is* (`col=v`), *is not* (`col.not=v`: also every entry
/// without a value in that column), *contains* (`col.contains=v`: case-sensitive
/// substring, text columns only; an entry without a value never contains anything).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogOp {
    Is,
    IsNot,
    Contains,
}

impl LogOp {
    /// The parameter name's suffix (`""`, `".not"`, `".contains"`).
    pub fn suffix(self) -> &'static str {
        match self {
            LogOp::Is => "",
            LogOp::IsNot => ".not",
            LogOp::Contains => ".contains",
        }
    }
}

/// Longest value a log filter takes; longer ones could not match anything stored (ids,
/// names and URLs are shorter; response bodies are cut to `MAX_LOGGED_RESPONSE_BYTES`).
pub const MAX_LOG_FILTER_VALUE_BYTES: usize = MAX_LOGGED_RESPONSE_BYTES;

/// One filter of `GET /logs` beyond the typed fields of [`LogFilter`]. Built only by
/// [`LogPredicate::new`], so `value` is valid for its column: a status code is its
/// number in decimal (100-599), an outcome or type its name, `test` `true`/`false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPredicate {
    column: LogColumn,
    op: LogOp,
    value: String,
}

impl LogPredicate {
    /// Check `value` for the column and op; errors name the parameter (`url.contains`).
    pub fn new(column: LogColumn, op: LogOp, value: &str) -> Result<LogPredicate, ValidationError> {
        let param = format!("{}{}", column.as_str(), op.suffix());
        if op == LogOp::Contains && !column.is_text() {
            return Err(ValidationError::invalid(
                param,
                format!("{} is not a text column: use {0} or {0}.not", column.as_str()),
            ));
        }
        if value.len() > MAX_LOG_FILTER_VALUE_BYTES {
            return Err(ValidationError::new(
                "too_long",
                param,
                format!("a log filter value must be at most {MAX_LOG_FILTER_VALUE_BYTES} bytes"),
            ));
        }
        let value = match column {
            LogColumn::StatusCode => value
                .parse::<u16>()
                .ok()
                .filter(|code| (100..=599).contains(code))
                .ok_or_else(|| ValidationError::invalid(&param, "status_code must be a number 100-599"))?
                .to_string(),
            LogColumn::Outcome => Outcome::parse(value)
                .ok_or_else(|| {
                    ValidationError::invalid(&param, "outcome must be delivered, failed, retrying or skipped")
                })?
                .as_str()
                .to_string(),
            LogColumn::Type => EventType::parse(value)
                .ok_or_else(|| ValidationError::invalid(&param, "type must be impression, click, conversion or event"))?
                .as_str()
                .to_string(),
            LogColumn::Test => match value {
                "true" | "false" => value.to_string(),
                _ => return Err(ValidationError::invalid(&param, "test must be true or false")),
            },
            _ => value.to_string(),
        };
        Ok(LogPredicate { column, op, value })
    }

    pub fn column(&self) -> LogColumn {
        self.column
    }
    pub fn op(&self) -> LogOp {
        self.op
    }
    /// The checked value, as text (see the type's doc).
    pub fn value(&self) -> &str {
        &self.value
    }

    pub fn matches(&self, e: &LogEntry) -> bool {
        let actual = self.column.value_of(e);
        match self.op {
            LogOp::Is => actual.as_deref() == Some(self.value.as_str()),
            LogOp::IsNot => actual.as_deref() != Some(self.value.as_str()),
            LogOp::Contains => actual.is_some_and(|a| a.contains(self.value.as_str())),
        }
    }
}

/// Filters for `GET /logs` (read by `crate::entry::http::parse::query::log_filter`). All
/// set filters must match (AND): the typed *is* fields, which the stores' indexes serve
/// where they can, and the `predicates` (*is* on the other columns, *is not*,
/// *contains*).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogFilter {
    pub postback_id: Option<String>,
    pub transaction_id: Option<String>,
    pub kind: Option<EventType>,
    pub offer_id: Option<String>,
    pub publisher_id: Option<String>,
    pub status_code: Option<u16>,
    pub outcome: Option<Outcome>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub limit: usize,
    pub cursor: Option<Cursor>,
    pub predicates: Vec<LogPredicate>,
}

impl LogFilter {
    /// Whether an entry passes every filter except the cursor and limit.
    pub fn matches(&self, e: &LogEntry) -> bool {
        self.postback_id.as_ref().is_none_or(|v| *v == e.postback_id)
            && self.transaction_id.as_ref().is_none_or(|v| *v == e.transaction_id)
            && self.kind.is_none_or(|v| v == e.kind)
            && self.offer_id.as_ref().is_none_or(|v| Some(v) == e.offer_id.as_ref())
            && self.publisher_id.as_ref().is_none_or(|v| Some(v) == e.publisher_id.as_ref())
            && self.status_code.is_none_or(|v| Some(v) == e.status_code)
            && self.outcome.is_none_or(|v| v == e.outcome)
            && self.from.is_none_or(|v| e.fired_at >= v)
            && self.to.is_none_or(|v| e.fired_at <= v)
            && self.predicates.iter().all(|p| p.matches(e))
    }
}

/// Opaque position in the log listing, which is newest first by `fired_at`, ties by id
/// (descending): the `fired_at` and id of the last entry returned. The next page holds
/// the entries strictly after it in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub fired_at: DateTime<Utc>,
    pub last_id: String,
}

impl Cursor {
    /// The position just after `entry`.
    pub fn after(entry: &LogEntry) -> Cursor {
        Cursor { fired_at: entry.fired_at, last_id: entry.id.clone() }
    }

    pub fn encode(&self) -> String {
        let (secs, nanos) = (self.fired_at.timestamp(), self.fired_at.timestamp_subsec_nanos());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v2:{secs}.{nanos:09}:{}", self.last_id))
    }

    /// A cursor this server issued. `v1` cursors (the id alone, from before the listing
    /// was ordered by `fired_at`) are refused like any other: start again from the top.
    pub fn decode(s: &str) -> Result<Cursor, ValidationError> {
        let bad = || ValidationError::invalid("cursor", "cursor is not one this server issued");
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let text = String::from_utf8(raw).map_err(|_| bad())?;
        let rest = text.strip_prefix("v2:").ok_or_else(bad)?;
        let (time, id) = rest.split_once(':').ok_or_else(bad)?;
        let (secs, nanos) = time.split_once('.').ok_or_else(bad)?;
        let digits = |t: &str| !t.is_empty() && t.len() <= 19 && t.bytes().all(|b| b.is_ascii_digit());
        let secs_digits = secs.strip_prefix('-').unwrap_or(secs);
        if !digits(secs_digits) || nanos.len() != 9 || !digits(nanos) {
            return Err(bad());
        }
        let secs: i64 = secs.parse().map_err(|_| bad())?;
        let nanos: u32 = nanos.parse().map_err(|_| bad())?;
        let fired_at = DateTime::from_timestamp(secs, nanos).ok_or_else(bad)?;
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(bad());
        }
        Ok(Cursor { fired_at, last_id: id.to_string() })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogPage {
    pub items: Vec<LogEntry>,
    pub next_cursor: Option<String>,
}
