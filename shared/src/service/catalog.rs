//! The in-memory postback index used by ingest and dispatch.
//!
//! Kept current in two ways: the local server's own writes invalidate it at once (every
//! postback write goes through its one process); on AWS, where another function writes,
//! each instance checks the store's change stamp (`PostbackStore::changes_since`: one
//! small strongly consistent read) at most every `check` and patches in the postbacks
//! written since, read with consistent reads. A full reload (`PostbackStore::snapshot`)
//! happens on first use, after `ttl`, and when the store cannot name what changed.
//!
//! The index decides what an event matches. It never alone decides that a firing ends:
//! `for_firing` and `from_store` give the dispatcher the store's current answer when the
//! cached one is older than the firing or would skip it (see `Dispatcher::process`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, RwLock};

use crate::domain::firing::Firing;
use crate::domain::matching::PostbackIndex;
use crate::domain::postback::CompiledPostback;
use crate::ports::{Clock, PostbackStore, StoreResult};

/// How a catalog keeps up with writes made elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatalogTiming {
    /// A full reload at least this often: a backstop, since writes are learnt by the
    /// stamp check (AWS) or by invalidation (the local server).
    pub ttl: Duration,
    /// Check the store's change stamp at most this often, so another function's write
    /// applies within this (plus one read). `None`: never (the local server, whose own
    /// writes invalidate the index: no store read per event).
    pub check: Option<Duration>,
}

#[derive(Clone)]
struct Loaded {
    index: Arc<PostbackIndex>,
    /// The store's stamp the index reflects.
    stamp: u64,
    loaded_at: DateTime<Utc>,
    checked_at: DateTime<Utc>,
}

/// Where a postback handed to the dispatcher came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The cached index: current as of its last check.
    Cached,
    /// The store's answer, read just now (strongly consistent on DynamoDB).
    Store,
}

pub struct Catalog {
    store: Arc<dyn PostbackStore>,
    timing: CatalogTiming,
    clock: Arc<dyn Clock>,
    current: RwLock<Option<Loaded>>,
    /// Serialises reloads and checks so a burst of requests loads or checks once.
    reload: Mutex<()>,
}

/// `later - earlier` is below `limit` (a clock that went back counts as expired).
fn within(earlier: DateTime<Utc>, later: DateTime<Utc>, limit: Duration) -> bool {
    (later - earlier).to_std().is_ok_and(|age| age < limit)
}

impl Catalog {
    pub fn new(store: Arc<dyn PostbackStore>, timing: CatalogTiming, clock: Arc<dyn Clock>) -> Self {
        Self { store, timing, clock, current: RwLock::new(None), reload: Mutex::new(()) }
    }

    /// The current index: reloaded first if it is missing or older than the TTL, checked
    /// against the store's stamp first if the last check is older than `check`.
    pub async fn index(&self) -> StoreResult<Arc<PostbackIndex>> {
        if let Some(index) = self.usable(self.clock.now()).await {
            return Ok(index);
        }
        let _reloading = self.reload.lock().await;
        let now = self.clock.now();
        if let Some(index) = self.usable(now).await {
            return Ok(index);
        }
        let loaded = self.current.read().await.clone();
        if let Some(loaded) = loaded.filter(|l| within(l.loaded_at, now, self.timing.ttl)) {
            // Only the stamp check is due.
            let changes = self.store.changes_since(loaded.stamp).await?;
            if let Some(ids) = changes.ids {
                let index = if ids.is_empty() {
                    loaded.index
                } else {
                    // The changed postbacks, read at once (consistent reads on DynamoDB).
                    let reads = ids.into_iter().map(|id| async move {
                        let postback = self.store.get(&id).await?;
                        Ok::<_, crate::ports::StoreError>((id, postback))
                    });
                    let changed = futures::future::try_join_all(reads).await?;
                    tracing::debug!(changed = changed.len(), stamp = changes.stamp, "postback index patched");
                    Arc::new(loaded.index.patched(changed))
                };
                let next =
                    Loaded { index: index.clone(), stamp: changes.stamp, loaded_at: loaded.loaded_at, checked_at: now };
                *self.current.write().await = Some(next);
                return Ok(index);
            }
        }
        let snapshot = self.store.snapshot().await?;
        let index = Arc::new(PostbackIndex::build(snapshot.postbacks));
        *self.current.write().await =
            Some(Loaded { index: index.clone(), stamp: snapshot.stamp, loaded_at: now, checked_at: now });
        Ok(index)
    }

    /// Forget the cached index (after a postback was created, replaced or deleted).
    pub async fn invalidate(&self) {
        // Take the reload lock so an in-flight reload that read the store before this
        // write cannot install its stale result after the invalidation.
        let _reloading = self.reload.lock().await;
        *self.current.write().await = None;
    }

    /// The postback `firing` goes to: the cached one when it is at least the version the
    /// firing was queued for, else the store's answer (`None`: the store has none).
    pub async fn for_firing(&self, firing: &Firing) -> StoreResult<(Option<Arc<CompiledPostback>>, Source)> {
        let index = self.index().await?;
        if let Some(cached) = index.get(&firing.postback_id) {
            if firing.postback_version.is_none_or(|v| cached.postback.version >= v) {
                return Ok((Some(cached), Source::Cached));
            }
        }
        Ok((self.from_store(&firing.postback_id).await?, Source::Store))
    }

    /// The store's current answer for one postback, compiled (`None`: there is none, or
    /// it does not compile, which only a hand-edited store can make: it never fires).
    pub async fn from_store(&self, id: &str) -> StoreResult<Option<Arc<CompiledPostback>>> {
        let Some(postback) = self.store.get(id).await? else { return Ok(None) };
        match CompiledPostback::new(postback) {
            Ok(compiled) => Ok(Some(Arc::new(compiled))),
            Err(error) => {
                tracing::warn!(postback_id = %id, %error, "stored postback does not compile; it will not fire");
                Ok(None)
            }
        }
    }

    async fn usable(&self, now: DateTime<Utc>) -> Option<Arc<PostbackIndex>> {
        let guard = self.current.read().await;
        let loaded = guard.as_ref()?;
        let young = within(loaded.loaded_at, now, self.timing.ttl);
        let checked = self.timing.check.is_none_or(|every| within(loaded.checked_at, now, every));
        (young && checked).then(|| loaded.index.clone())
    }
}
