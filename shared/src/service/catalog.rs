//! The in-memory postback index used by ingest and dispatch, reloaded after a TTL or
//! when a local write invalidates it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Mutex, RwLock};

use crate::domain::matching::PostbackIndex;
use crate::ports::{Clock, PostbackStore, StoreResult};

pub struct Catalog {
    store: Arc<dyn PostbackStore>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    current: RwLock<Option<(Arc<PostbackIndex>, DateTime<Utc>)>>,
    /// Serialises reloads so a burst of requests after expiry loads once.
    reload: Mutex<()>,
}

impl Catalog {
    pub fn new(store: Arc<dyn PostbackStore>, ttl: Duration, clock: Arc<dyn Clock>) -> Self {
        Self { store, ttl, clock, current: RwLock::new(None), reload: Mutex::new(()) }
    }

    /// The current index, reloading it first if it is missing or older than the TTL.
    pub async fn index(&self) -> StoreResult<Arc<PostbackIndex>> {
        if let Some(index) = self.fresh().await {
            return Ok(index);
        }
        let _reloading = self.reload.lock().await;
        if let Some(index) = self.fresh().await {
            return Ok(index);
        }
        let postbacks = self.store.list(None).await?;
        let index = Arc::new(PostbackIndex::build(postbacks));
        *self.current.write().await = Some((index.clone(), self.clock.now()));
        Ok(index)
    }

    /// Forget the cached index (after a postback was created, replaced or deleted).
    pub async fn invalidate(&self) {
        // Take the reload lock so an in-flight reload that read the store before this
        // write cannot install its stale result after the invalidation.
        let _reloading = self.reload.lock().await;
        *self.current.write().await = None;
    }

    async fn fresh(&self) -> Option<Arc<PostbackIndex>> {
        let now = self.clock.now();
        let guard = self.current.read().await;
        // A clock that went back (wall clock adjusted) counts as expired: reload.
        let young = |loaded: &DateTime<Utc>| (now - *loaded).to_std().is_ok_and(|age| age < self.ttl);
        guard.as_ref().filter(|(_, loaded)| young(loaded)).map(|(index, _)| index.clone())
    }
}
