//! `FiringQueue` in a map, with the embedded queue's semantics, timed by the store's
//! clock: a firing is visible when `max(due_at, lease_until) <= now`; `receive` leases
//! it (a fresh token, hidden until `now + lease`); `ack`/`retry` act only while the
//! token still matches; enqueueing a queued or delivered delivery id adds nothing
//! (except in SQS mode: see `MemoryQueue::new`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::MemoryLogStore;
use crate::domain::firing::Firing;
use crate::ports::{Clock, FiringQueue, InFlight, Leased, QueueDepth, StoreResult};

/// Most firings handed out by one `receive` (as the embedded queue).
const MAX_RECEIVE: usize = 1_000;

#[derive(Debug, Clone)]
struct Row {
    firing: Firing,
    lease_until: Option<DateTime<Utc>>,
    token: Option<String>,
    /// Insertion order, to break ties between rows visible at the same time.
    seq: u64,
}

impl Row {
    fn visible_at(&self) -> DateTime<Utc> {
        self.lease_until.map_or(self.firing.due_at, |lease| lease.max(self.firing.due_at))
    }
}

#[derive(Debug, Default)]
struct Rows {
    by_id: HashMap<String, Row>,
    next_seq: u64,
}

impl Rows {
    /// Insert unless queued already. With `beside_leased` (SQS's semantics, where a
    /// second enqueue is a message of its own), an enqueue meeting a leased row replaces
    /// it, unleased: the old lease goes stale, so its ack cannot remove the new copy.
    fn insert(&mut self, firing: &Firing, beside_leased: bool) {
        if let Some(row) = self.by_id.get(&firing.delivery_id) {
            if !(beside_leased && row.token.is_some()) {
                return;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_id
            .insert(firing.delivery_id.clone(), Row { firing: firing.clone(), lease_until: None, token: None, seq });
    }
}

pub struct MemoryQueue {
    clock: Arc<dyn Clock>,
    lease: Duration,
    /// Delivered markers, consulted at enqueue (a delivered firing is not queued again).
    delivered: Option<Arc<MemoryLogStore>>,
    rows: Mutex<Rows>,
    notify: Arc<Notify>,
    receives: AtomicU64,
    stale_receipts: AtomicU64,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue").field("lease", &self.lease).finish_non_exhaustive()
    }
}

impl MemoryQueue {
    /// A queue whose received firings stay hidden for `lease`. With `delivered`, an
    /// enqueue of a delivery id marked delivered there is dropped and one of a queued id
    /// is dropped even while leased (as the embedded queue does); without, only the
    /// dispatcher's check prevents a second send, and an enqueue of a leased id survives
    /// that lease's ack (as on SQS, where it is a second message).
    pub fn new(clock: Arc<dyn Clock>, lease: Duration, delivered: Option<Arc<MemoryLogStore>>) -> Self {
        Self {
            clock,
            lease,
            delivered,
            rows: Mutex::new(Rows::default()),
            notify: Arc::new(Notify::new()),
            receives: AtomicU64::new(0),
            stale_receipts: AtomicU64::new(0),
        }
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, Rows> {
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_delivered(&self, delivery_id: &str) -> bool {
        self.delivered.as_ref().is_some_and(|logs| logs.delivered_now(delivery_id))
    }

    fn wake(&self) {
        // As the embedded queue: wake every waiting consumer, and store a permit for one
        // that is about to wait.
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    fn note_stale(&self, what: &str, receipt: &str) {
        self.stale_receipts.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(receipt, "{what} ignored: the lease was taken over or the firing is gone");
    }

    /// Lease up to `max` due firings, earliest visible first; with `in_flight`, no more
    /// per destination than it has room for (the others are passed over, not leased).
    fn lease_due(&self, max: usize, in_flight: Option<&InFlight>) -> Vec<Leased> {
        self.receives.fetch_add(1, Ordering::Relaxed);
        let max = max.min(MAX_RECEIVE);
        let now = self.clock.now();
        let lease = chrono::Duration::from_std(self.lease).unwrap_or(chrono::Duration::MAX);
        let lease_until = now.checked_add_signed(lease).unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut rows = self.rows();
        let mut due: Vec<&mut Row> = rows.by_id.values_mut().filter(|r| r.visible_at() <= now).collect();
        due.sort_by_key(|r| (r.visible_at(), r.seq));
        let mut taken: HashMap<String, usize> = HashMap::new();
        let mut leased = Vec::new();
        for row in due {
            if leased.len() >= max {
                break;
            }
            if let (Some(in_flight), Some(destination)) = (in_flight, row.firing.destination.as_deref()) {
                let count = taken.entry(destination.to_string()).or_default();
                if *count >= in_flight.room(destination) {
                    continue;
                }
                *count += 1;
            }
            let token = uuid::Uuid::new_v4().simple().to_string();
            row.lease_until = Some(lease_until);
            row.token = Some(token.clone());
            leased.push(Leased { firing: row.firing.clone(), receipt: receipt(&row.firing.delivery_id, &token) });
        }
        leased
    }

    /// Every queued firing (leased or not), earliest visible first.
    pub fn queued(&self) -> Vec<Firing> {
        let rows = self.rows();
        let mut all: Vec<&Row> = rows.by_id.values().collect();
        all.sort_by_key(|r| (r.visible_at(), r.seq));
        all.into_iter().map(|r| r.firing.clone()).collect()
    }

    /// How many firings are queued (leased or not).
    pub fn len(&self) -> usize {
        self.rows().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many times `receive` was called.
    pub fn receives(&self) -> u64 {
        self.receives.load(Ordering::Relaxed)
    }

    /// `ack`/`retry` calls whose lease had been taken over (or whose firing was gone).
    pub fn stale_receipts(&self) -> u64 {
        self.stale_receipts.load(Ordering::Relaxed)
    }
}

fn receipt(delivery_id: &str, token: &str) -> String {
    format!("{delivery_id}:{token}")
}

fn parse_receipt(receipt: &str) -> Option<(&str, &str)> {
    receipt.rsplit_once(':')
}

#[async_trait]
impl FiringQueue for MemoryQueue {
    async fn enqueue(&self, firings: &[Firing]) -> StoreResult<()> {
        if firings.is_empty() {
            return Ok(());
        }
        {
            let mut rows = self.rows();
            let beside_leased = self.delivered.is_none();
            for firing in firings.iter().filter(|f| !self.is_delivered(&f.delivery_id)) {
                rows.insert(firing, beside_leased);
            }
        }
        self.wake();
        Ok(())
    }

    async fn depth(&self) -> StoreResult<QueueDepth> {
        let rows = self.rows();
        Ok(QueueDepth {
            queued: rows.by_id.len() as u64,
            earliest_due_at: rows.by_id.values().map(|r| r.firing.due_at).min(),
            knows_due_times: true,
        })
    }

    async fn receive(&self, max: usize) -> StoreResult<Vec<Leased>> {
        Ok(self.lease_due(max, None))
    }

    async fn receive_fair(&self, max: usize, in_flight: &InFlight) -> StoreResult<Vec<Leased>> {
        Ok(self.lease_due(max, Some(in_flight)))
    }

    async fn next_due_fair(&self, in_flight: &InFlight) -> StoreResult<Option<DateTime<Utc>>> {
        let full: HashSet<&str> = in_flight.full().collect();
        Ok(self
            .rows()
            .by_id
            .values()
            .filter(|r| !r.firing.destination.as_deref().is_some_and(|d| full.contains(d)))
            .map(Row::visible_at)
            .min())
    }

    async fn ack(&self, leased: &Leased) -> StoreResult<()> {
        let removed = parse_receipt(&leased.receipt).is_some_and(|(delivery_id, token)| {
            let mut rows = self.rows();
            let holds = rows.by_id.get(delivery_id).is_some_and(|r| r.token.as_deref() == Some(token));
            if holds {
                rows.by_id.remove(delivery_id);
            }
            holds
        });
        if !removed {
            self.note_stale("ack", &leased.receipt);
        }
        Ok(())
    }

    async fn retry(&self, leased: &Leased, next: &Firing) -> StoreResult<()> {
        let replaced = parse_receipt(&leased.receipt).is_some_and(|(delivery_id, token)| {
            let next_delivered = self.is_delivered(&next.delivery_id);
            let mut rows = self.rows();
            let Some(row) = rows.by_id.get_mut(delivery_id).filter(|r| r.token.as_deref() == Some(token)) else {
                return false;
            };
            if next.delivery_id == delivery_id {
                row.firing = next.clone();
                row.lease_until = None;
                row.token = None;
            } else {
                // The next message has another identity: swap the rows.
                rows.by_id.remove(delivery_id);
                if !next_delivered {
                    rows.insert(next, false);
                }
            }
            true
        });
        if replaced {
            self.wake();
        } else {
            self.note_stale("retry", &leased.receipt);
        }
        Ok(())
    }

    async fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(self.rows().by_id.values().map(Row::visible_at).min())
    }

    fn notifier(&self) -> Option<Arc<Notify>> {
        Some(Arc::clone(&self.notify))
    }
}
