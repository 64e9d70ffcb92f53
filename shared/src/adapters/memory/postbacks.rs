//! `PostbackStore` in a map, ordered by id.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use crate::domain::event::EventType;
use crate::domain::postback::Postback;
use crate::ports::{PostbackStore, StoreError, StoreResult};

#[derive(Debug, Default)]
pub struct MemoryPostbackStore {
    postbacks: Mutex<BTreeMap<String, Postback>>,
}

impl MemoryPostbackStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Postback>> {
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
        map.insert(postback.id.clone(), postback.clone());
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Postback>> {
        Ok(self.map().get(id).cloned())
    }

    async fn replace(&self, postback: &Postback) -> StoreResult<bool> {
        Ok(match self.map().get_mut(&postback.id) {
            Some(stored) => {
                *stored = postback.clone();
                true
            }
            None => false,
        })
    }

    async fn delete(&self, id: &str) -> StoreResult<bool> {
        Ok(self.map().remove(id).is_some())
    }

    async fn list(&self, kind: Option<EventType>) -> StoreResult<Vec<Postback>> {
        Ok(self.map().values().filter(|p| kind.is_none_or(|k| k == p.kind)).cloned().collect())
    }
}
