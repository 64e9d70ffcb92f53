//! Which postbacks an event fires: an index by type and offer so the cost of matching
//! does not grow with postbacks that cannot match.

use std::collections::HashMap;
use std::sync::Arc;

use super::event::{Event, EventType, Status};
use super::postback::{CompiledPostback, Postback, Scope};

/// Enabled postbacks of one event type, by offer scope. Every list is sorted by
/// postback id and holds each postback once.
#[derive(Debug, Default)]
struct TypeIndex {
    /// Postbacks scoped to a list of offers, under each offer they name.
    by_offer: HashMap<String, Vec<Arc<CompiledPostback>>>,
    /// Postbacks scoped to all offers.
    all_offers: Vec<Arc<CompiledPostback>>,
}

#[derive(Debug, Default)]
pub struct PostbackIndex {
    /// Every compiled postback, enabled or not, for `get`.
    by_id: HashMap<String, Arc<CompiledPostback>>,
    /// Enabled postbacks, indexed per event type (the position in `EventType::ALL`).
    by_type: [TypeIndex; EventType::ALL.len()],
}

fn type_slot(kind: EventType) -> usize {
    match kind {
        EventType::Impression => 0,
        EventType::Click => 1,
        EventType::Conversion => 2,
        EventType::Event => 3,
    }
}

impl PostbackIndex {
    /// Build from all stored postbacks (disabled ones are kept out of matching but still
    /// reachable by `get`). Postbacks whose templates fail to compile are skipped with a
    /// warning (only possible if the store was edited by hand).
    pub fn build(postbacks: Vec<Postback>) -> Self {
        let compiled = postbacks.into_iter().filter_map(|postback| {
            let id = postback.id.clone();
            match CompiledPostback::new(postback) {
                Ok(c) => Some(c),
                Err(error) => {
                    tracing::warn!(postback_id = %id, %error, "stored postback does not compile; it will not fire");
                    None
                }
            }
        });
        Self::from_compiled(compiled)
    }

    /// Build from postbacks whose templates are already parsed. If two share an id, the
    /// later one wins (ids are unique in any store).
    pub fn from_compiled(compiled: impl IntoIterator<Item = CompiledPostback>) -> Self {
        let mut by_id: HashMap<String, Arc<CompiledPostback>> = HashMap::new();
        for c in compiled {
            by_id.insert(c.postback.id.clone(), Arc::new(c));
        }
        let mut by_type: [TypeIndex; EventType::ALL.len()] = Default::default();
        for c in by_id.values().filter(|c| c.postback.enabled) {
            let slot = &mut by_type[type_slot(c.postback.kind)];
            match &c.postback.offers {
                Scope::All => slot.all_offers.push(Arc::clone(c)),
                // An empty list names no offer, so it matches nothing and is not indexed.
                Scope::Only(offers) => {
                    for offer in offers {
                        slot.by_offer.entry(offer.clone()).or_default().push(Arc::clone(c));
                    }
                }
            }
        }
        for slot in &mut by_type {
            sort_unique(&mut slot.all_offers);
            for list in slot.by_offer.values_mut() {
                // An offer listed twice in one postback would put it here twice.
                sort_unique(list);
            }
        }
        Self { by_id, by_type }
    }

    /// The enabled postbacks this event fires, in a stable order (by id): type, offer
    /// and publisher scope, `fire_on` + `rejection_reasons` for conversions and events,
    /// `event_names` for events.
    pub fn matching(&self, event: &Event) -> Vec<Arc<CompiledPostback>> {
        let slot = &self.by_type[type_slot(event.kind)];
        let for_offer: &[Arc<CompiledPostback>] =
            event.offer_id.as_ref().and_then(|offer| slot.by_offer.get(offer)).map_or(&[], Vec::as_slice);
        // Both lists are sorted by id and disjoint (a postback is scoped to all offers or
        // to a list), so a merge gives the id order without sorting.
        let mut out = Vec::new();
        let (mut a, mut b) = (for_offer.iter().peekable(), slot.all_offers.iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.postback.id <= y.postback.id => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            if let Some(c) = next.filter(|c| fires_for(&c.postback, event)) {
                out.push(Arc::clone(c));
            }
        }
        out
    }

    pub fn get(&self, id: &str) -> Option<Arc<CompiledPostback>> {
        self.by_id.get(id).cloned()
    }

    /// How many postbacks the index holds (enabled or not; those that failed to
    /// compile are not held).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn sort_unique(list: &mut Vec<Arc<CompiledPostback>>) {
    list.sort_by(|x, y| x.postback.id.cmp(&y.postback.id));
    list.dedup_by(|x, y| x.postback.id == y.postback.id);
}

/// The checks the index does not answer by itself: publisher scope, status and event
/// name. (Type and offer are answered by where the postback sits in the index.)
fn fires_for(postback: &Postback, event: &Event) -> bool {
    if !postback.publishers.contains(event.publisher_id.as_deref()) {
        return false;
    }
    if event.kind.has_status()
        && !postback.fires_for_status(event.status.unwrap_or(Status::Approved), event.rejection_reason.as_deref())
    {
        return false;
    }
    if event.kind == EventType::Event {
        if let Some(names) = postback.event_names.as_ref().filter(|names| !names.is_empty()) {
            return event.event_name.as_ref().is_some_and(|name| names.contains(name));
        }
    }
    true
}
