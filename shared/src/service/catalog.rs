//! The in-memory postback index used by ingest and dispatch, reloaded after a TTL or
//! when a local write invalidates it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, RwLock};

use crate::domain::matching::PostbackIndex;
use crate::ports::{PostbackStore, StoreResult};

pub struct Catalog {
    store: Arc<dyn PostbackStore>,
    ttl: Duration,
    current: RwLock<Option<(Arc<PostbackIndex>, Instant)>>,
    /// Serialises reloads so a burst of requests after expiry loads once.
    reload: Mutex<()>,
}

impl Catalog {
    pub fn new(store: Arc<dyn PostbackStore>, ttl: Duration) -> Self {
        Self { store, ttl, current: RwLock::new(None), reload: Mutex::new(()) }
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
        *self.current.write().await = Some((index.clone(), Instant::now()));
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
        let guard = self.current.read().await;
        guard.as_ref().filter(|(_, loaded)| loaded.elapsed() < self.ttl).map(|(index, _)| index.clone())
    }
}
