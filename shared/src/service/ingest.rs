//! Ingest: enrich, deduplicate, record, match and durably queue the firings of events.

use std::collections::{HashMap, HashSet};

use chrono::Duration as ChronoDuration;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{App, ServiceResult};
use crate::domain::enrich::enrich_from_click;
use crate::domain::event::{Event, EventType, Status};
use crate::domain::firing::Firing;
use crate::ports::TouchRecord;

/// What ingest says about one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IngestResult {
    /// The event's `event_id`, or an id derived from its idempotency key (the same
    /// event reported again gets the same id).
    pub id: String,
    /// Reported before: nothing was fired again.
    pub duplicate: bool,
    /// How many postbacks it fires (now or after their delay).
    pub matched: usize,
    /// For conversions and events: whether a stored click enriched it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub click_found: Option<bool>,
}

impl App {
    /// Accept validated events. When this returns `Ok`, every firing is durably queued.
    ///
    /// The order of writes is what makes a crash at any point safe: touches (clicks,
    /// statuses) first, then the firings, then the idempotency markers. A crash before
    /// the markers means the tracker gets no 2xx and retries; the retry queues the same
    /// deterministic delivery ids again, which the queue and the delivered markers
    /// absorb, so nothing is lost and nothing fires twice. A store that holds all three
    /// (`Ports::combined`) writes them in one transaction: one commit per request.
    pub async fn ingest(&self, mut events: Vec<Event>) -> ServiceResult<Vec<IngestResult>> {
        let touches = &self.ports.touches;

        let wanted: Vec<String> = {
            let mut ids: Vec<String> =
                events.iter().filter(|e| e.kind.has_status()).map(|e| e.transaction_id.clone()).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let clicks = if wanted.is_empty() { Default::default() } else { touches.get_clicks(&wanted).await? };
        // A click earlier in the same batch counts as stored: it is recorded with it.
        let mut batch_clicks: HashMap<String, Event> = HashMap::new();
        let mut click_found = Vec::with_capacity(events.len());
        for event in &mut events {
            if event.kind == EventType::Click {
                batch_clicks.insert(event.transaction_id.clone(), event.clone());
            }
            if !event.kind.has_status() {
                click_found.push(None);
                continue;
            }
            match batch_clicks.get(&event.transaction_id).or_else(|| clicks.get(&event.transaction_id)) {
                Some(click) => {
                    enrich_from_click(event, click);
                    click_found.push(Some(true));
                }
                None => click_found.push(Some(false)),
            }
        }

        let keys: Vec<String> = events.iter().map(Event::dedupe_key).collect();
        let seen = touches.seen(&keys).await?;
        let index = self.catalog.index().await?;
        let now = self.ports.clock.now();

        let mut in_batch = HashSet::with_capacity(keys.len());
        let mut results = Vec::with_capacity(events.len());
        let mut records = Vec::new();
        let mut firings = Vec::new();
        let mut new_keys = Vec::new();
        let mut counted = Vec::with_capacity(results.capacity());
        for ((event, key), click) in events.into_iter().zip(keys).zip(click_found) {
            let id = event.event_id.clone().unwrap_or_else(|| derived_event_id(&key));
            let duplicate = seen.contains(&key) || !in_batch.insert(key.clone());
            counted.push((event.kind.as_str(), duplicate));
            if duplicate {
                results.push(IngestResult { id, duplicate, matched: 0, click_found: click });
                continue;
            }
            let matched = index.matching(&event);
            for postback in &matched {
                let delay = ChronoDuration::seconds(i64::from(postback.postback.delay_seconds));
                let delivery_id = Firing::delivery_id_for(&key, &postback.postback.id);
                let firing = Firing::first(delivery_id, postback.postback.id.clone(), event.clone(), now + delay, now);
                firings.push(firing.bound_to(postback));
            }
            results.push(IngestResult { id, duplicate, matched: matched.len(), click_found: click });
            records.push(TouchRecord { event });
            new_keys.push(key);
        }

        // Reversals (docs/DESIGN.md *Reversals*): only where some postback of the type has
        // a reversal request, so other status changes read nothing more.
        let rejections: Vec<&Event> = records
            .iter()
            .map(|r| &r.event)
            .filter(|e| e.status == Some(Status::Rejected) && e.kind.has_status() && index.has_reversal(e.kind))
            .collect();
        let recorded = !rejections.is_empty();
        if recorded {
            // The status first, then the deliveries: a firing delivered meanwhile reads the
            // status after its delivery (`Dispatcher::reverse_if_rejected`), so one of the
            // two sees the other. (The combined write records them again: no change.)
            touches.record(&records).await?;
            let mut queued = HashSet::new();
            for event in rejections {
                for reversal in self.reversals_of(&index, event, now).await? {
                    if queued.insert(reversal.delivery_id.clone()) {
                        firings.push(reversal);
                    }
                }
            }
        }

        if let Some(combined) = &self.ports.combined {
            combined.record_and_enqueue(&records, &firings, &new_keys).await?;
        } else if firings.is_empty() && !recorded {
            touches.record_and_mark_seen(&records, &new_keys).await?;
        } else {
            if !recorded {
                touches.record(&records).await?;
            }
            self.ports.queue.enqueue(&firings).await?;
            touches.mark_seen(&new_keys).await?;
        }
        for (kind, duplicate) in counted {
            self.metrics.event(kind, duplicate);
        }
        tracing::debug!(events = results.len(), firings = firings.len(), "ingested");
        Ok(results)
    }
}

fn derived_event_id(dedupe_key: &str) -> String {
    let digest = Sha256::digest(dedupe_key.as_bytes());
    format!("e_{}", hex::encode(&digest[..12]))
}
