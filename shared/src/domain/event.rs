//! Ingested events (impressions, clicks, conversions, post-conversion events).

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

super::named_enum! {
    #[derive(PartialOrd, Ord)]
    #[strum(serialize_all = "lowercase")]
    pub enum EventType {
        Impression,
        Click,
        Conversion,
        Event,
        /// Postbacks (and their firings) of the manager's own alerts (`super::alert`). Never
        /// an ingested event: trackers report the other four.
        Alert,
    }
}

impl EventType {
    /// The types a tracker reports (ingest refuses `alert`).
    pub const TRACKED: [EventType; 4] =
        [EventType::Impression, EventType::Click, EventType::Conversion, EventType::Event];
    /// A type a tracker may report.
    pub fn parse_tracked(s: &str) -> Option<Self> {
        Self::parse(s).filter(|t| *t != EventType::Alert)
    }
    /// Conversions and events carry a status and are re-checked at fire time.
    pub fn has_status(self) -> bool {
        matches!(self, EventType::Conversion | EventType::Event)
    }
}

super::named_enum! {
    #[strum(serialize_all = "lowercase")]
    pub enum Status {
        Approved,
        Pending,
        Rejected,
    }
}

super::named_enum! {
    /// The fields of an event as trackers send them, templates name them (`{payout}`) and
    /// conditions test them, in the order parse errors are reported: THE list of event
    /// fields (`params` aside, a map). Parsing (`crate::entry::http::parse::event`), the
    /// macros (`super::macros`) and conditions (`super::condition`) are built on it; tests
    /// hold the OpenAPI document, the console's macro picker and [`Event`]'s stored form to it.
    #[strum(serialize_all = "snake_case")]
    pub enum Field {
        Type,
        TransactionId,
        EventId,
        OfferId,
        PublisherId,
        ExternalTransactionId,
        Status,
        RejectionReason,
        EventName,
        Payout,
        Revenue,
        Currency,
        Sub1,
        Sub2,
        Sub3,
        Sub4,
        Sub5,
        Sub6,
        Sub7,
        Sub8,
        Sub9,
        Sub10,
        Ip,
        UserAgent,
        Country,
        Timestamp,
    }
}

/// `{unix_timestamp}`: the event time in whole unix seconds, a value of the event
/// besides its fields (templates and conditions read it; trackers send `timestamp`).
pub const UNIX_TIMESTAMP: &str = "unix_timestamp";

impl Field {
    /// `sub1`..`sub10`, as `Event::subs[0]`..`[9]`.
    pub const SUBS: [Field; 10] = [
        Field::Sub1,
        Field::Sub2,
        Field::Sub3,
        Field::Sub4,
        Field::Sub5,
        Field::Sub6,
        Field::Sub7,
        Field::Sub8,
        Field::Sub9,
        Field::Sub10,
    ];

    /// The field a macro or condition name reads: the field's own name, or `sub` and a
    /// number 1..=10 as Rust reads one (no leading zero). The second keeps `sub+5` (read as
    /// `sub5`), which conditions have always taken, so such a stored condition still reads.
    pub fn named(name: &str) -> Option<Field> {
        Field::parse(name).or_else(|| {
            let n = name.strip_prefix("sub").filter(|n| !n.starts_with('0'))?.parse::<usize>().ok()?;
            Field::SUBS.get(n.checked_sub(1)?).copied()
        })
    }

    /// This field of `event` as text: what `{name}` renders and a condition on `name`
    /// tests. `timestamp` is RFC 3339 in UTC with a `Z` suffix, in whole seconds unless
    /// the event time has a fraction, then kept to milli-, micro- or nanoseconds as
    /// needed (chrono's `SecondsFormat::AutoSi`).
    pub fn text(self, event: &Event) -> Option<Cow<'_, str>> {
        fn text(value: &Option<String>) -> Option<Cow<'_, str>> {
            value.as_deref().map(Cow::Borrowed)
        }
        match self {
            Field::Type => Some(Cow::Borrowed(event.kind.as_str())),
            Field::TransactionId => Some(Cow::Borrowed(event.transaction_id.as_str())),
            Field::EventId => text(&event.event_id),
            Field::OfferId => text(&event.offer_id),
            Field::PublisherId => text(&event.publisher_id),
            Field::ExternalTransactionId => text(&event.external_transaction_id),
            Field::Status => event.status.map(|s| Cow::Borrowed(s.as_str())),
            Field::RejectionReason => text(&event.rejection_reason),
            Field::EventName => text(&event.event_name),
            Field::Payout => text(&event.payout),
            Field::Revenue => text(&event.revenue),
            Field::Currency => text(&event.currency),
            Field::Sub1 => text(&event.subs[0]),
            Field::Sub2 => text(&event.subs[1]),
            Field::Sub3 => text(&event.subs[2]),
            Field::Sub4 => text(&event.subs[3]),
            Field::Sub5 => text(&event.subs[4]),
            Field::Sub6 => text(&event.subs[5]),
            Field::Sub7 => text(&event.subs[6]),
            Field::Sub8 => text(&event.subs[7]),
            Field::Sub9 => text(&event.subs[8]),
            Field::Sub10 => text(&event.subs[9]),
            Field::Ip => text(&event.ip),
            Field::UserAgent => text(&event.user_agent),
            Field::Country => text(&event.country),
            Field::Timestamp => Some(Cow::Owned(event.timestamp.to_rfc3339_opts(SecondsFormat::AutoSi, true))),
        }
    }
}

/// A validated event, after defaults (status, timestamp) are applied and, for
/// conversions and events, after enrichment from the stored click.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub transaction_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_transaction_id: Option<String>,
    /// Set (default `approved`) for conversions and events; `None` for impressions and clicks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_name: Option<String>,
    /// Money is kept as the decimal text the tracker sent (validated as a number), so
    /// nothing is lost to floating point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// `sub1`..`sub10` as `subs[0]`..`subs[9]`. Left out of the stored form when all are
    /// empty (most events): ten `null`s less to write and parse in every queue message.
    #[serde(default, skip_serializing_if = "no_subs")]
    pub subs: [Option<String>; 10],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    pub timestamp: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl Event {
    /// An event with only its type, transaction id and time; every other field empty.
    pub fn bare(kind: EventType, transaction_id: impl Into<String>, timestamp: DateTime<Utc>) -> Event {
        Event {
            kind,
            transaction_id: transaction_id.into(),
            event_id: None,
            offer_id: None,
            publisher_id: None,
            external_transaction_id: None,
            status: None,
            rejection_reason: None,
            event_name: None,
            payout: None,
            revenue: None,
            currency: None,
            subs: Default::default(),
            ip: None,
            user_agent: None,
            country: None,
            timestamp,
            params: BTreeMap::new(),
        }
    }

    pub fn sub(&self, n: usize) -> Option<&str> {
        n.checked_sub(1).and_then(|i| self.subs.get(i)).and_then(|s| s.as_deref())
    }

    /// `{unix_timestamp}`'s value.
    pub fn unix_timestamp(&self) -> String {
        self.timestamp.timestamp().to_string()
    }

    /// The idempotency key: the same event reported twice yields the same key.
    /// `type | transaction_id | (event_id or event_name) | status`, so a conversion
    /// reported again with another status is a status change, not a duplicate.
    pub fn dedupe_key(&self) -> String {
        let discriminator = match (&self.event_id, &self.event_name) {
            (Some(id), _) => format!("id:{id}"),
            (None, Some(name)) => format!("name:{name}"),
            (None, None) => String::new(),
        };
        let status = self.status.map(Status::as_str).unwrap_or("");
        format!("{}|{}|{}|{}", self.kind.as_str(), escape_key(&self.transaction_id), escape_key(&discriminator), status)
    }

    /// Where the current status of this conversion/event lives in the touch store.
    pub fn status_key(&self) -> Option<StatusKey> {
        match self.kind {
            EventType::Conversion => Some(StatusKey::Conversion),
            EventType::Event => Some(StatusKey::Event(self.event_name.clone().unwrap_or_default())),
            _ => None,
        }
    }
}

fn no_subs(subs: &[Option<String>; 10]) -> bool {
    subs.iter().all(Option::is_none)
}

fn escape_key(s: &str) -> String {
    s.replace('%', "%25").replace('|', "%7C")
}

/// Identifies a conversion or a named post-conversion event of one transaction, whose
/// current status is re-read when a delayed firing comes due.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatusKey {
    Conversion,
    Event(String),
}

impl StatusKey {
    /// A stable text form for storage keys: `conversion` or `event:<name>`.
    pub fn as_key(&self) -> String {
        match self {
            StatusKey::Conversion => "conversion".to_string(),
            StatusKey::Event(name) => format!("event:{name}"),
        }
    }
}

/// The current status of a conversion or event as last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentStatus {
    pub status: Status,
    pub rejection_reason: Option<String>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Field` and `Event` name the same values: an event with every field set stores
    /// each under its field's name (the subs as `subs`), and `Field::text` reads it there.
    #[test]
    fn each_field_reads_the_event_value_of_its_name() {
        let event = crate::domain::macros::sample_event(EventType::Event, []);
        let stored = serde_json::to_value(&event).unwrap();
        let mut keys: Vec<String> = stored.as_object().unwrap().keys().cloned().collect();
        keys.retain(|k| k != "subs");
        keys.extend(Field::SUBS.iter().map(|f| f.as_str().to_string()));
        let mut names: Vec<String> = Field::NAMES.iter().map(|n| n.to_string()).collect();
        names.sort();
        keys.sort();
        assert_eq!(keys, names, "Event's stored fields (params aside, empty here) are Field's");
        for field in Field::ALL {
            let name = field.as_str();
            let stored_value = match name.strip_prefix("sub") {
                Some(n) if n.parse::<usize>().is_ok() => &stored["subs"][n.parse::<usize>().unwrap() - 1],
                _ => &stored[name],
            };
            assert_eq!(field.text(&event).as_deref(), stored_value.as_str(), "{name}");
        }
        assert_eq!(Field::SUBS.map(Field::as_str), std::array::from_fn(|i| format!("sub{}", i + 1)));
        assert_eq!(Field::named("sub+5"), Some(Field::Sub5));
        for not_a_field in ["sub0", "sub05", "sub11", "sub", "Sub5", "params", "unix_timestamp"] {
            assert_eq!(Field::named(not_a_field), None, "{not_a_field}");
        }
    }

    #[test]
    fn subs_are_stored_only_when_one_is_set_and_read_back_either_way() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let bare = Event::bare(EventType::Click, "T1", at);
        let json = serde_json::to_value(&bare).unwrap();
        assert!(json.get("subs").is_none(), "{json}");
        assert_eq!(serde_json::from_value::<Event>(json).ok(), Some(bare.clone()));

        let mut with_sub = bare;
        with_sub.subs[9] = Some("s10".into());
        let json = serde_json::to_value(&with_sub).unwrap();
        assert_eq!(json["subs"][9], "s10", "{json}");
        assert_eq!(serde_json::from_value::<Event>(json).ok(), Some(with_sub));
    }
}
