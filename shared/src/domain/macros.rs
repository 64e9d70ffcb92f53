//! The macro set and the values an event provides for it.

use std::borrow::Cow;

use super::event::Event;

/// Every fixed macro name (`params.<key>` is accepted in addition).
pub const KNOWN_MACROS: &[&str] = &[
    "transaction_id",
    "external_transaction_id",
    "event_id",
    "type",
    "offer_id",
    "publisher_id",
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
    "unix_timestamp",
    "postback_id",
    "postback_name",
    "attempt",
    "delivery_id",
];

/// Is `name` a macro the engine knows (case-sensitive)? `params.<key>` with a
/// non-empty key is always known.
pub fn is_known(name: &str) -> bool {
    match name.strip_prefix("params.") {
        Some(key) => !key.is_empty(),
        None => KNOWN_MACROS.contains(&name),
    }
}

/// The closest known name for a near miss (`Sub5` → `sub5`, `transactionid` →
/// `transaction_id`), if any is close enough to be a plausible typo.
pub fn suggest(name: &str) -> Option<&'static str> {
    todo!("suggest")
}

/// The values one firing renders with.
#[derive(Debug, Clone, Copy)]
pub struct MacroContext<'a> {
    pub event: &'a Event,
    pub postback_id: &'a str,
    pub postback_name: &'a str,
    pub delivery_id: &'a str,
    pub attempt: u32,
}

impl<'a> MacroContext<'a> {
    /// The value of a macro, or `None` when the event has none (renders empty).
    pub fn value(&self, name: &str) -> Option<Cow<'a, str>> {
        todo!("value")
    }
}
