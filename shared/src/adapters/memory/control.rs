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
    hold_pause: Mutex<Option<Arc<Pause>>>,
    /// Set by `pause_next_unhold`: the next `unhold` waits on it before it forgets.
    unhold_pause: Mutex<Option<Arc<Pause>>>,
}

/// A test's hand on one call: `reached` is signalled at the pause and the call goes on
/// only after `resume`, so a test can run other steps in between.
#[derive(Debug, Default)]
pub struct Pause {
    pub reached: Notify,
    pub resume: Notify,
}

impl Pause {
    fn set(slot: &Mutex<Option<Arc<Pause>>>) -> Arc<Pause> {
        let pause = Arc::new(Pause::default());
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&pause));
        pause
    }

    /// Wait here if a pause is set in `slot` (once).
    async fn take_and_wait(slot: &Mutex<Option<Arc<Pause>>>) {
        let pause = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(pause) = pause {
            pause.reached.notify_one();
            pause.resume.notified().await;
        }
    }
}

#[derive(Debug, Default)]
struct State {
    breakers: HashMap<String, StoredBreaker>,
    /// Per postback, held firings keyed by (queued_at, delivery_id) = their order.
    held: HashMap<String, BTreeMap<(DateTime<Utc>, String), Firing>>,
    /// Per postback: the latest second with a slot taken and how many were taken in it.
    slots: HashMap<String, (i64, u32)>,
    /// Release claims: (postback, queued_at, delivery id, releases) → claimed until.
    claims: HashMap<(String, DateTime<Utc>, String, u32), DateTime<Utc>>,
}

impl MemoryControlStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Make the next `hold` wait, once written, until the returned pause is resumed.
    pub fn pause_next_hold(&self) -> Arc<Pause> {
        Pause::set(&self.hold_pause)
    }

    /// Make the next `unhold` wait, before it forgets anything, until resumed.
    pub fn pause_next_unhold(&self) -> Arc<Pause> {
        Pause::set(&self.unhold_pause)
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
        Pause::take_and_wait(&self.hold_pause).await;
        Ok(())
    }

    async fn held(&self, postback_id: &str, max: usize) -> StoreResult<Vec<Firing>> {
        Ok(self.state().held.get(postback_id).map(|h| h.values().take(max).cloned().collect()).unwrap_or_default())
    }

    async fn unhold(&self, firings: &[Firing]) -> StoreResult<()> {
        Pause::take_and_wait(&self.unhold_pause).await;
        let mut state = self.state();
        for firing in firings {
            if let Some(held) = state.held.get_mut(&firing.postback_id) {
                let key = (firing.queued_at, firing.delivery_id.clone());
                if held.get(&key).is_some_and(|h| h.releases == firing.releases) {
                    held.remove(&key);
                }
            }
        }
        Ok(())
    }

    async fn claim(&self, firings: &[Firing], now: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<Vec<Firing>> {
        let mut state = self.state();
        state.claims.retain(|_, until| *until > now);
        let mut claimed = Vec::new();
        for firing in firings {
            let held = state
                .held
                .get(&firing.postback_id)
                .and_then(|h| h.get(&(firing.queued_at, firing.delivery_id.clone())));
            if held.is_none_or(|h| h.releases != firing.releases) {
                continue;
            }
            let key = (firing.postback_id.clone(), firing.queued_at, firing.delivery_id.clone(), firing.releases);
            if state.claims.contains_key(&key) {
                continue;
            }
            state.claims.insert(key, until);
            claimed.push(firing.clone());
        }
        Ok(claimed)
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
        state.claims.retain(|(id, ..), _| id != postback_id);
        Ok(())
    }
}
