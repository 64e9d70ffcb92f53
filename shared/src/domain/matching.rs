//! Which postbacks an event fires: an index by type, offer and publisher so the cost
//! of matching does not grow with postbacks that cannot match.

use std::collections::HashMap;
use std::sync::Arc;

use super::condition::all_hold;
use super::event::{Event, EventType, Status};
use super::postback::{CompiledPostback, Postback, Scope};

/// Enabled postbacks of one event type, each filed under its most selective scope, so
/// a lookup touches only postbacks scoped to the event's offer, all-offer postbacks
/// scoped to its publisher, and the few scoped to everything. Every list is sorted by
/// postback id and holds each postback once; the three kinds of list are disjoint.
#[derive(Debug, Default)]
struct TypeIndex {
    /// Postbacks scoped to a list of offers, under each offer they name.
    by_offer: HashMap<String, Vec<Arc<CompiledPostback>>>,
    /// All-offer postbacks scoped to a list of publishers, under each publisher.
    by_publisher: HashMap<String, Vec<Arc<CompiledPostback>>>,
    /// Postbacks scoped to all offers and all publishers.
    global: Vec<Arc<CompiledPostback>>,
    /// Some postback of the type has a `reversal` request.
    has_reversal: bool,
}

impl TypeIndex {
    fn insert(&mut self, c: &Arc<CompiledPostback>) {
        self.has_reversal |= c.reversal.is_some();
        // An empty list names nothing, so such a postback matches nothing and is not filed.
        match (&c.postback.offers, &c.postback.publishers) {
            (Scope::Only(offers), _) => {
                for offer in offers {
                    self.by_offer.entry(offer.clone()).or_default().push(Arc::clone(c));
                }
            }
            (Scope::All, Scope::Only(publishers)) => {
                for publisher in publishers {
                    self.by_publisher.entry(publisher.clone()).or_default().push(Arc::clone(c));
                }
            }
            (Scope::All, Scope::All) => self.global.push(Arc::clone(c)),
        }
    }

    fn finish(&mut self) {
        sort_unique(&mut self.global);
        // A scope listing an id twice would file the postback twice under it.
        self.by_offer.values_mut().chain(self.by_publisher.values_mut()).for_each(sort_unique);
    }

    fn candidates<'a>(&'a self, event: &Event) -> [&'a [Arc<CompiledPostback>]; 3] {
        let lookup = |map: &'a HashMap<String, Vec<Arc<CompiledPostback>>>, key: Option<&String>| {
            key.and_then(|k| map.get(k)).map_or(&[][..], Vec::as_slice)
        };
        [
            lookup(&self.by_offer, event.offer_id.as_ref()),
            lookup(&self.by_publisher, event.publisher_id.as_ref()),
            &self.global,
        ]
    }
}

#[derive(Debug, Default)]
pub struct PostbackIndex {
    /// Every compiled postback, enabled or not, for `get`.
    by_id: HashMap<String, Arc<CompiledPostback>>,
    /// Enabled postbacks, indexed per tracked event type (the position in
    /// `EventType::TRACKED`).
    by_type: [TypeIndex; EventType::TRACKED.len()],
    /// Enabled alert postbacks, by id: fired by `crate::service::alerts`, never matched.
    alerts: Vec<Arc<CompiledPostback>>,
}

/// The slot of a tracked type; `None` for alerts, which no event matches.
fn type_slot(kind: EventType) -> Option<usize> {
    match kind {
        EventType::Impression => Some(0),
        EventType::Click => Some(1),
        EventType::Conversion => Some(2),
        EventType::Event => Some(3),
        EventType::Alert => None,
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
        Self::from_by_id(by_id)
    }

    /// This index with some postbacks changed: each id's postback replaced by the given
    /// one, or dropped for `None` (deleted). The others are shared, not compiled again.
    pub fn patched(&self, changed: impl IntoIterator<Item = (String, Option<Postback>)>) -> Self {
        let mut by_id = self.by_id.clone();
        for (id, postback) in changed {
            by_id.remove(&id);
            let Some(postback) = postback else { continue };
            match CompiledPostback::new(postback) {
                Ok(c) => {
                    by_id.insert(c.postback.id.clone(), Arc::new(c));
                }
                Err(error) => {
                    tracing::warn!(postback_id = %id, %error, "stored postback does not compile; it will not fire")
                }
            }
        }
        Self::from_by_id(by_id)
    }

    fn from_by_id(by_id: HashMap<String, Arc<CompiledPostback>>) -> Self {
        let mut by_type: [TypeIndex; EventType::TRACKED.len()] = Default::default();
        let mut alerts = Vec::new();
        // Only enabled, approved postbacks are ever matched: a partner's pending or
        // rejected postback fires nothing (its pending revision is not filed either).
        for c in by_id.values().filter(|c| c.postback.enabled && super::partner::fires(&c.postback)) {
            match type_slot(c.postback.kind).and_then(|slot| by_type.get_mut(slot)) {
                Some(index) => index.insert(c),
                None => alerts.push(Arc::clone(c)),
            }
        }
        by_type.iter_mut().for_each(TypeIndex::finish);
        sort_unique(&mut alerts);
        Self { by_id, by_type, alerts }
    }

    /// The enabled postbacks this event fires, in a stable order (by id): type, offer
    /// and publisher scope, `fire_on` + `rejection_reasons` for conversions and events,
    /// `event_names` for events, then `conditions`.
    /// Never an alert postback, whatever the event.
    pub fn matching(&self, event: &Event) -> Vec<Arc<CompiledPostback>> {
        let Some(index) = type_slot(event.kind).and_then(|slot| self.by_type.get(slot)) else { return Vec::new() };
        let [for_offer, for_publisher, global] = index.candidates(event);
        // Only postbacks filed by offer can still be scoped to other publishers; those
        // filed by publisher were found under the event's own.
        let mut out: Vec<Arc<CompiledPostback>> = for_offer
            .iter()
            .filter(|c| c.postback.publishers.contains(event.publisher_id.as_deref()))
            .chain(for_publisher)
            .chain(global)
            .filter(|c| fires_for_status_and_name(&c.postback, event))
            .cloned()
            .collect();
        // Each list is sorted and they are disjoint; one sort of the (few) matches
        // restores the id order. The dedup is a guard, not expected to remove anything.
        sort_unique(&mut out);
        out
    }

    /// The enabled alert postbacks, by id.
    pub fn alert_postbacks(&self) -> &[Arc<CompiledPostback>] {
        &self.alerts
    }

    pub fn get(&self, id: &str) -> Option<Arc<CompiledPostback>> {
        self.by_id.get(id).cloned()
    }

    /// Whether some enabled postback of type `kind` has a `reversal` request: ingest
    /// reads a rejected conversion's deliveries only then (docs/DESIGN.md *Reversals*).
    pub fn has_reversal(&self, kind: EventType) -> bool {
        type_slot(kind).and_then(|slot| self.by_type.get(slot)).is_some_and(|index| index.has_reversal)
    }

    /// Every postback id in the index.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.by_id.keys().map(String::as_str)
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

/// The checks that scope cannot answer: status (with rejection reason), event name and
/// conditions (pre-parsed, so this parses nothing of the postback).
fn fires_for_status_and_name(postback: &Postback, event: &Event) -> bool {
    fires_for_status_and_name_only(postback, event) && all_hold(&postback.conditions, event)
}

fn fires_for_status_and_name_only(postback: &Postback, event: &Event) -> bool {
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
