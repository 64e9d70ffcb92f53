//! `LogStore` in maps: entries by id, delivery markers by delivery id. Entries are
//! listed newest first by `fired_at`, ties broken by id (descending); entries and
//! markers older than the retention (by the store's clock) are invisible.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::log::{Cursor, LogEntry, LogFilter, LogPage, DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT};
use crate::domain::stats::{hour_of, HourCounts};
use crate::ports::{Clock, LogStore, ReplayState, StoreResult};

#[derive(Debug, Default)]
struct Logs {
    entries: HashMap<String, LogEntry>,
    /// Delivery id → when it was marked delivered.
    delivered: HashMap<String, DateTime<Utc>>,
    /// Delivery id → the newest of its entries replayed.
    replayed: HashMap<String, Cursor>,
}

pub struct MemoryLogStore {
    clock: Arc<dyn Clock>,
    retention: chrono::Duration,
    logs: Mutex<Logs>,
    /// See `MemoryOptions::delivered_entry_ids`.
    delivered_entry_ids: bool,
}

impl std::fmt::Debug for MemoryLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryLogStore").field("retention", &self.retention).finish_non_exhaustive()
    }
}

/// The listing order: newest `fired_at` first, then the higher id first.
fn position(e: &LogEntry) -> (DateTime<Utc>, &str) {
    (e.fired_at, e.id.as_str())
}

impl MemoryLogStore {
    pub fn new(clock: Arc<dyn Clock>, retention: chrono::Duration) -> Self {
        Self { clock, retention, logs: Mutex::new(Logs::default()), delivered_entry_ids: false }
    }

    /// Whether to name delivered entries after their delivery id (`delivered-<id>`).
    pub fn with_delivered_entry_ids(mut self, on: bool) -> Self {
        self.delivered_entry_ids = on;
        self
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, Logs> {
        self.logs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cutoff(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now.checked_sub_signed(self.retention).unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Whether `delivery_id` carries an unexpired delivered marker (the memory queue
    /// asks this at enqueue, as the embedded queue does).
    pub fn delivered_now(&self, delivery_id: &str) -> bool {
        let cutoff = self.cutoff(self.clock.now());
        self.logs().delivered.get(delivery_id).is_some_and(|at| *at >= cutoff)
    }

    /// Every visible entry, newest first (for assertions in tests).
    pub fn entries(&self) -> Vec<LogEntry> {
        let cutoff = self.cutoff(self.clock.now());
        let logs = self.logs();
        let mut entries: Vec<LogEntry> = logs.entries.values().filter(|e| e.fired_at >= cutoff).cloned().collect();
        entries.sort_unstable_by(|a, b| position(b).cmp(&position(a)));
        entries
    }
}

#[async_trait]
impl LogStore for MemoryLogStore {
    async fn append(&self, entries: &[LogEntry]) -> StoreResult<()> {
        let mut logs = self.logs();
        for entry in entries {
            // Appending the same entry twice is harmless: the first stays.
            logs.entries.entry(entry.id.clone()).or_insert_with(|| entry.clone());
        }
        Ok(())
    }

    async fn record_delivered(&self, entry: &LogEntry) -> StoreResult<bool> {
        let now = self.clock.now();
        let cutoff = self.cutoff(now);
        let mut logs = self.logs();
        if logs.delivered.get(&entry.delivery_id).is_some_and(|at| *at >= cutoff) {
            return Ok(false);
        }
        logs.delivered.insert(entry.delivery_id.clone(), now);
        logs.entries.entry(entry.id.clone()).or_insert_with(|| entry.clone());
        Ok(true)
    }

    fn delivered_entry_id(&self, delivery_id: &str) -> Option<String> {
        self.delivered_entry_ids.then(|| format!("delivered-{delivery_id}"))
    }

    async fn is_delivered(&self, delivery_id: &str) -> StoreResult<bool> {
        Ok(self.delivered_now(delivery_id))
    }

    async fn hourly_stats(
        &self,
        postback_id: &str,
        hours: &[DateTime<Utc>],
    ) -> StoreResult<HashMap<DateTime<Utc>, HourCounts>> {
        let cutoff = self.cutoff(self.clock.now());
        let mut counts = HashMap::new();
        for entry in self.logs().entries.values().filter(|e| e.postback_id == postback_id && e.fired_at >= cutoff) {
            let hour = hour_of(entry.fired_at);
            if let (true, Some(c)) = (hours.contains(&hour), HourCounts::of(entry)) {
                counts.entry(hour).or_insert_with(HourCounts::default).add(&c);
            }
        }
        Ok(counts)
    }

    async fn replay_states(&self, delivery_ids: &[String]) -> StoreResult<HashMap<String, ReplayState>> {
        let cutoff = self.cutoff(self.clock.now());
        let logs = self.logs();
        Ok(delivery_ids
            .iter()
            .map(|id| {
                let state = ReplayState {
                    delivered: logs.delivered.get(id).is_some_and(|at| *at >= cutoff),
                    replayed: logs.replayed.get(id).cloned(),
                };
                (id.clone(), state)
            })
            .filter(|(_, state)| *state != ReplayState::default())
            .collect())
    }

    async fn mark_replayed(&self, entries: &[LogEntry]) -> StoreResult<()> {
        let mut logs = self.logs();
        for entry in entries {
            let mark = Cursor::after(entry);
            let newest = logs.replayed.entry(entry.delivery_id.clone()).or_insert_with(|| mark.clone());
            if (mark.fired_at, &mark.last_id) > (newest.fired_at, &newest.last_id) {
                *newest = mark;
            }
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<LogEntry>> {
        let cutoff = self.cutoff(self.clock.now());
        Ok(self.logs().entries.get(id).filter(|e| e.fired_at >= cutoff).cloned())
    }

    async fn query(&self, filter: &LogFilter) -> StoreResult<LogPage> {
        let limit = match filter.limit {
            0 => DEFAULT_LOG_LIMIT,
            n => n.min(MAX_LOG_LIMIT),
        };
        let cutoff = self.cutoff(self.clock.now());
        let logs = self.logs();
        // The page goes on strictly after the cursor's position in the listing order.
        let after = filter.cursor.as_ref().map(|c| (c.fired_at, c.last_id.as_str()));
        let mut matching: Vec<&LogEntry> = logs
            .entries
            .values()
            .filter(|e| e.fired_at >= cutoff && filter.matches(e))
            .filter(|e| after.is_none_or(|after| position(e) < after))
            .collect();
        matching.sort_unstable_by(|a, b| position(b).cmp(&position(a)));
        let has_more = matching.len() > limit;
        let items: Vec<LogEntry> = matching.into_iter().take(limit).cloned().collect();
        let next_cursor = items.last().filter(|_| has_more).map(|last| Cursor::after(last).encode());
        Ok(LogPage { items, next_cursor })
    }
}
