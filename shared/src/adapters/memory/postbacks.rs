//! `PostbackStore` in a map, ordered by id.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use crate::domain::event::EventType;
use crate::domain::postback::Postback;
use crate::ports::{PostbackStore, StoreError, StoreResult};

#[derive(Debug, Default)]
pub struct MemoryPostbackStore {
    postbacks: Mutex<BTreeMap<String, Stored>>,
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

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Stored>> {
        self.postbacks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl PostbackStore for MemoryPostbackStore {
    async fn create(&self, postback: &Postback) -> StoreResult<()> {
        let mut map = self.map();
        if map.contains_key(&postback.id) {
            return Err(StoreError::Conflict(format!("postback {} already exists", postback.id)));
        }
        map.insert(postback.id.clone(), Stored { current: postback.clone(), replaced: Vec::new() });
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Postback>> {
        Ok(self.map().get(id).map(|s| s.current.clone()))
    }

    async fn replace(&self, postback: &Postback) -> StoreResult<bool> {
        let mut map = self.map();
        let Some(stored) = map.get_mut(&postback.id) else { return Ok(false) };
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
        Ok(true)
    }

    async fn versions(&self, id: &str) -> StoreResult<Option<Vec<Postback>>> {
        Ok(self.map().get(id).map(|s| std::iter::once(&s.current).chain(s.replaced.iter().rev()).cloned().collect()))
    }

    async fn delete(&self, id: &str) -> StoreResult<bool> {
        Ok(self.map().remove(id).is_some())
    }

    async fn list(&self, kind: Option<EventType>) -> StoreResult<Vec<Postback>> {
        Ok(self.map().values().map(|s| &s.current).filter(|p| kind.is_none_or(|k| k == p.kind)).cloned().collect())
    }
}
