//! `PostbackStore` in a map, ordered by id, with the change stamp and every change's id
//! (kept whole: a test store is small).

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use crate::domain::event::EventType;
use crate::domain::postback::Postback;
use crate::ports::{PostbackChanges, PostbackSnapshot, PostbackStore, StoreError, StoreResult};

#[derive(Debug, Default)]
pub struct MemoryPostbackStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    postbacks: BTreeMap<String, Stored>,
    /// The last write's stamp (0: none yet).
    stamp: u64,
    /// The postback id each stamp wrote.
    changes: BTreeMap<u64, String>,
}

impl Inner {
    fn stamp(&mut self, id: &str) {
        self.stamp += 1;
        self.changes.insert(self.stamp, id.to_string());
    }
}

/// A postback and the versions it replaced, oldest first.
#[derive(Debug)]
struct Stored {
    current: Postback,
    replaced: Vec<Postback>,
}

impl MemoryPostbackStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl PostbackStore for MemoryPostbackStore {
    async fn create(&self, postback: &Postback) -> StoreResult<()> {
        let mut inner = self.inner();
        if inner.postbacks.contains_key(&postback.id) {
            return Err(StoreError::Conflict(format!("postback {} already exists", postback.id)));
        }
        inner.postbacks.insert(postback.id.clone(), Stored { current: postback.clone(), replaced: Vec::new() });
        inner.stamp(&postback.id);
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Postback>> {
        Ok(self.inner().postbacks.get(id).map(|s| s.current.clone()))
    }

    async fn replace(&self, postback: &Postback) -> StoreResult<bool> {
        let mut inner = self.inner();
        let Some(stored) = inner.postbacks.get_mut(&postback.id) else { return Ok(false) };
        if stored.current.version.checked_add(1) != Some(postback.version) {
            return Err(StoreError::Conflict(format!(
                "postback {} is at version {}, not {}",
                postback.id,
                stored.current.version,
                postback.version.saturating_sub(1)
            )));
        }
        let previous = std::mem::replace(&mut stored.current, postback.clone());
        stored.replaced.push(previous);
        inner.stamp(&postback.id);
        Ok(true)
    }

    async fn versions(&self, id: &str) -> StoreResult<Option<Vec<Postback>>> {
        let inner = self.inner();
        Ok(inner
            .postbacks
            .get(id)
            .map(|s| std::iter::once(&s.current).chain(s.replaced.iter().rev()).cloned().collect()))
    }

    async fn delete(&self, id: &str) -> StoreResult<bool> {
        let mut inner = self.inner();
        let removed = inner.postbacks.remove(id).is_some();
        if removed {
            inner.stamp(id);
        }
        Ok(removed)
    }

    async fn list(&self, kind: Option<EventType>) -> StoreResult<Vec<Postback>> {
        let inner = self.inner();
        Ok(inner.postbacks.values().map(|s| &s.current).filter(|p| kind.is_none_or(|k| k == p.kind)).cloned().collect())
    }

    async fn changes_since(&self, stamp: u64) -> StoreResult<PostbackChanges> {
        let inner = self.inner();
        let ids = (stamp <= inner.stamp).then(|| inner.changes.range(stamp + 1..).map(|(_, id)| id.clone()).collect());
        Ok(PostbackChanges { stamp: inner.stamp, ids })
    }

    async fn snapshot(&self) -> StoreResult<PostbackSnapshot> {
        let inner = self.inner();
        Ok(PostbackSnapshot {
            stamp: inner.stamp,
            postbacks: inner.postbacks.values().map(|s| s.current.clone()).collect(),
        })
    }
}
