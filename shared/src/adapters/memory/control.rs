//! `ControlStore` in maps behind one mutex (so every operation is atomic, as the real
//! adapters' conditional writes are).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::domain::breaker::Breaker;
use crate::domain::firing::Firing;
pub use crate::domain::slot::next_slot;
use crate::ports::{ControlStore, StoreResult, StoredBreaker};

#[derive(Debug, Default)]
pub struct MemoryControlStore {
    state: Mutex<State>,
    /// Set by `pause_next_hold`: the next `hold` waits on it once written.
    hold_pause: Mutex<Option<Arc<HoldPause>>>,
}

/// A test's hand on one `hold`: `written` is signalled once the firings are held, and
/// the hold returns only after `resume`, so a test can run a release in between.
#[derive(Debug, Default)]
pub struct HoldPause {
    pub written: Notify,
    pub resume: Notify,
}

#[derive(Debug, Default)]
struct State {
    breakers: HashMap<String, StoredBreaker>,
    /// Per postback, held firings keyed by (queued_at, delivery_id) = their order.
    held: HashMap<String, BTreeMap<(DateTime<Utc>, String), Firing>>,
    /// Per postback: the latest second with a slot taken and how many were taken in it.
    slots: HashMap<String, (i64, u32)>,
}

impl MemoryControlStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Make the next `hold` wait, once written, until the returned pause is resumed.
    pub fn pause_next_hold(&self) -> Arc<HoldPause> {
        let pause = Arc::new(HoldPause::default());
        *self.hold_pause.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&pause));
        pause
    }
}

#[async_trait]
impl ControlStore for MemoryControlStore {
    async fn breaker(&self, postback_id: &str) -> StoreResult<Option<StoredBreaker>> {
        Ok(self.state().breakers.get(postback_id).cloned())
    }

    async fn put_breaker(&self, postback_id: &str, breaker: &Breaker, expected: Option<u64>) -> StoreResult<bool> {
        let mut state = self.state();
        let current = state.breakers.get(postback_id).map(|s| s.version);
        if current != expected {
            return Ok(false);
        }
        let version = expected.map_or(1, |v| v + 1);
        state.breakers.insert(postback_id.to_string(), StoredBreaker { breaker: breaker.clone(), version });
        Ok(true)
    }

    async fn hold(&self, firings: &[Firing]) -> StoreResult<()> {
        {
            let mut state = self.state();
            for firing in firings {
                let held = state.held.entry(firing.postback_id.clone()).or_default();
                held.insert((firing.queued_at, firing.delivery_id.clone()), firing.clone());
            }
        }
        let pause = self.hold_pause.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(pause) = pause {
            pause.written.notify_one();
            pause.resume.notified().await;
        }
        Ok(())
    }

    async fn held(&self, postback_id: &str, max: usize) -> StoreResult<Vec<Firing>> {
        Ok(self.state().held.get(postback_id).map(|h| h.values().take(max).cloned().collect()).unwrap_or_default())
    }

    async fn unhold(&self, firings: &[Firing]) -> StoreResult<()> {
        let mut state = self.state();
        for firing in firings {
            if let Some(held) = state.held.get_mut(&firing.postback_id) {
                held.remove(&(firing.queued_at, firing.delivery_id.clone()));
            }
        }
        Ok(())
    }

    async fn held_count(&self, postback_id: &str) -> StoreResult<u64> {
        Ok(self.state().held.get(postback_id).map_or(0, |h| h.len() as u64))
    }

    async fn take_slot(&self, postback_id: &str, from_second: i64, limit: u32) -> StoreResult<i64> {
        let mut state = self.state();
        let slot = state.slots.entry(postback_id.to_string()).or_insert((i64::MIN, 0));
        *slot = next_slot(*slot, from_second, limit.max(1));
        Ok(slot.0)
    }

    async fn forget(&self, postback_id: &str) -> StoreResult<()> {
        let mut state = self.state();
        state.breakers.remove(postback_id);
        state.held.remove(postback_id);
        state.slots.remove(postback_id);
        Ok(())
    }
}
