//! The matching rule as the spec states it, one plain predicate over one postback. The
//! property test checks the index against it and the bench uses it as its linear-scan
//! baseline, so the baseline is the very oracle the index was proven equal to.

use postback::domain::event::{Event, EventType, Status};
use postback::domain::postback::Postback;

pub fn matches(p: &Postback, e: &Event) -> bool {
    p.enabled
        && p.kind == e.kind
        && p.offers.contains(e.offer_id.as_deref())
        && p.publishers.contains(e.publisher_id.as_deref())
        && (!e.kind.has_status()
            || p.fires_for_status(e.status.unwrap_or(Status::Approved), e.rejection_reason.as_deref()))
        && (e.kind != EventType::Event
            || match &p.event_names {
                Some(names) if !names.is_empty() => e.event_name.as_ref().is_some_and(|n| names.contains(n)),
                _ => true,
            })
}
