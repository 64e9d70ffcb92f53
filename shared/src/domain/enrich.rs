//! Enrichment of conversions and events from the stored click.

use super::event::Event;

/// Fill what the conversion/event did not send from the click of the same transaction:
/// `offer_id`, `publisher_id`, `external_transaction_id`, `sub1`..`sub10`, `ip`,
/// `user_agent`, `country`, and `params` keys it lacks. What the event sent wins.
pub fn enrich_from_click(event: &mut Event, click: &Event) {
    todo!("enrich_from_click")
}
