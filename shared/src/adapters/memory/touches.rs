//! `TouchStore` in maps. As in the embedded store, every row remembers when it was
//! stored (by the store's clock) and is invisible once older than the retention.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::event::{CurrentStatus, Event, EventType, Status};
use crate::ports::{Clock, StoreResult, TouchRecord, TouchStore};

#[derive(Debug, Default)]
struct Touches {
    /// Clicks and impressions whole, by (transaction, kind): the latest wins.
    whole: HashMap<(String, EventType), (Event, DateTime<Utc>)>,
    /// Current statuses by (transaction, status key).
    statuses: HashMap<(String, String), (CurrentStatus, DateTime<Utc>)>,
    /// Idempotency keys and when they were first marked.
    seen: HashMap<String, DateTime<Utc>>,
}

pub struct MemoryTouchStore {
    clock: Arc<dyn Clock>,
    retention: chrono::Duration,
    touches: Mutex<Touches>,
}

impl std::fmt::Debug for MemoryTouchStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTouchStore").field("retention", &self.retention).finish_non_exhaustive()
    }
}

impl MemoryTouchStore {
    pub fn new(clock: Arc<dyn Clock>, retention: chrono::Duration) -> Self {
        Self { clock, retention, touches: Mutex::new(Touches::default()) }
    }

    fn touches(&self) -> std::sync::MutexGuard<'_, Touches> {
        self.touches.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rows stored before this are expired.
    fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_sub_signed(self.retention).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

#[async_trait]
impl TouchStore for MemoryTouchStore {
    async fn get_click(&self, transaction_id: &str) -> StoreResult<Option<Event>> {
        let cutoff = self.cutoff(self.clock.now());
        let touches = self.touches();
        Ok(touches
            .whole
            .get(&(transaction_id.to_string(), EventType::Click))
            .filter(|(_, stored_at)| *stored_at >= cutoff)
            .map(|(event, _)| event.clone()))
    }

    async fn get_status(
        &self,
        transaction_id: &str,
        key: &crate::domain::event::StatusKey,
    ) -> StoreResult<Option<CurrentStatus>> {
        let cutoff = self.cutoff(self.clock.now());
        let touches = self.touches();
        Ok(touches
            .statuses
            .get(&(transaction_id.to_string(), key.as_key()))
            .filter(|(_, stored_at)| *stored_at >= cutoff)
            .map(|(status, _)| status.clone()))
    }

    async fn record(&self, records: &[TouchRecord]) -> StoreResult<()> {
        self.record_and_mark_seen(records, &[]).await
    }

    async fn seen(&self, dedupe_keys: &[String]) -> StoreResult<HashSet<String>> {
        let cutoff = self.cutoff(self.clock.now());
        let touches = self.touches();
        Ok(dedupe_keys
            .iter()
            .filter(|key| touches.seen.get(*key).is_some_and(|marked_at| *marked_at >= cutoff))
            .cloned()
            .collect())
    }

    async fn mark_seen(&self, dedupe_keys: &[String]) -> StoreResult<()> {
        self.record_and_mark_seen(&[], dedupe_keys).await
    }

    async fn record_and_mark_seen(&self, records: &[TouchRecord], dedupe_keys: &[String]) -> StoreResult<()> {
        let now = self.clock.now();
        let cutoff = self.cutoff(now);
        let mut touches = self.touches();
        // In order, so within one call the later report wins too.
        for TouchRecord { event } in records {
            match event.status_key() {
                None => {
                    touches.whole.insert((event.transaction_id.clone(), event.kind), (event.clone(), now));
                }
                Some(key) => {
                    let current = CurrentStatus {
                        status: event.status.unwrap_or(Status::Approved),
                        rejection_reason: event.rejection_reason.clone(),
                        updated_at: event.timestamp,
                    };
                    touches.statuses.insert((event.transaction_id.clone(), key.as_key()), (current, now));
                }
            }
        }
        // A key marked again keeps its first time, unless that one had expired.
        for key in dedupe_keys {
            let marked_at = touches.seen.entry(key.clone()).or_insert(now);
            if *marked_at < cutoff {
                *marked_at = now;
            }
        }
        Ok(())
    }
}
