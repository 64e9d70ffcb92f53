//! Helpers shared by the fuzz targets: the fixed clock, and the properties every accepted
//! event must keep whichever way (JSON or query) it came in.

use chrono::{DateTime, Utc};
use postback::domain::event::Event;

/// A fixed "now" (2024-05-01T12:00:00Z) so a crash reproduces whatever the date.
pub fn received_at() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(1_714_564_800, 0).unwrap_or_default()
}

/// An accepted event has one idempotency key, and survives the serde round trip the
/// queue and the store put it through (`Firing` carries the event as JSON) unchanged.
pub fn check_accepted_event(event: &Event) {
    let key = event.dedupe_key();
    assert_eq!(key, event.dedupe_key(), "dedupe_key is not stable");
    assert_eq!(key, event.clone().dedupe_key(), "dedupe_key differs on a clone");

    let text = serde_json::to_string(event).expect("an accepted event serializes");
    let back: Event = match serde_json::from_str(&text) {
        Ok(back) => back,
        Err(e) => panic!("an accepted event does not deserialize from its own JSON {text}: {e}"),
    };
    assert_eq!(&back, event, "serde round trip changed the event; JSON: {text}");
    assert_eq!(back.dedupe_key(), key, "dedupe_key changed across the serde round trip");

    let value = serde_json::to_value(event).expect("an accepted event serializes to a value");
    let back: Event = serde_json::from_value(value).expect("an accepted event deserializes from its value");
    assert_eq!(&back, event, "serde_json::Value round trip changed the event");
}
