//! Ingested events (impressions, clicks, conversions, post-conversion events).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Impression,
    Click,
    Conversion,
    Event,
    /// Postbacks (and their firings) of the manager's own alerts (`super::alert`). Never
    /// an ingested event: trackers report the other four.
    Alert,
}

impl EventType {
    /// Every postback type (and log entry type).
    pub const ALL: [EventType; 5] =
        [EventType::Impression, EventType::Click, EventType::Conversion, EventType::Event, EventType::Alert];
    /// The types a tracker reports (ingest refuses `alert`).
    pub const TRACKED: [EventType; 4] =
        [EventType::Impression, EventType::Click, EventType::Conversion, EventType::Event];
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Impression => "impression",
            EventType::Click => "click",
            EventType::Conversion => "conversion",
            EventType::Event => "event",
            EventType::Alert => "alert",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
    /// A type a tracker may report.
    pub fn parse_tracked(s: &str) -> Option<Self> {
        Self::TRACKED.into_iter().find(|t| t.as_str() == s)
    }
    /// Conversions and events carry a status and are re-checked at fire time.
    pub fn has_status(self) -> bool {
        matches!(self, EventType::Conversion | EventType::Event)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Approved,
    Pending,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Approved => "approved",
            Status::Pending => "pending",
            Status::Rejected => "rejected",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approved" => Some(Status::Approved),
            "pending" => Some(Status::Pending),
            "rejected" => Some(Status::Rejected),
            _ => None,
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
