//! Enrichment of conversions and events from the stored click.

use super::event::Event;

/// Fill what the conversion/event did not send from the click of the same transaction:
/// `offer_id`, `publisher_id`, `external_transaction_id`, `sub1`..`sub10`, `ip`,
/// `user_agent`, `country`, and `params` keys it lacks. What the event sent wins.
///
/// "Did not send" means absent (`None`); a value the event sent, even an empty one, is
/// kept. Status, money, event name and timestamp are the event's own and never copied.
pub fn enrich_from_click(event: &mut Event, click: &Event) {
    fill(&mut event.offer_id, &click.offer_id);
    fill(&mut event.publisher_id, &click.publisher_id);
    fill(&mut event.external_transaction_id, &click.external_transaction_id);
    for (mine, theirs) in event.subs.iter_mut().zip(&click.subs) {
        fill(mine, theirs);
    }
    fill(&mut event.ip, &click.ip);
    fill(&mut event.user_agent, &click.user_agent);
    fill(&mut event.country, &click.country);
    for (key, value) in &click.params {
        event.params.entry(key.clone()).or_insert_with(|| value.clone());
    }
}

fn fill(target: &mut Option<String>, source: &Option<String>) {
    if target.is_none() {
        target.clone_from(source);
    }
}
