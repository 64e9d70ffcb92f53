//! `PostbackStore` in a map, ordered by id.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;

use super::access::AuditTrail;
use crate::domain::access::AuditRecord;
use crate::domain::event::EventType;
use crate::domain::postback::Postback;
use crate::ports::{PostbackStore, StoreError, StoreResult};

#[derive(Debug, Default)]
pub struct MemoryPostbackStore {
    postbacks: Mutex<BTreeMap<String, Stored>>,
    /// Where each write's audit record goes, under the same lock as the write.
    trail: Arc<AuditTrail>,
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

    /// A store writing its audit records to `trail` (shared with the access store).
    pub fn with_trail(trail: Arc<AuditTrail>) -> Self {
        Self { postbacks: Mutex::default(), trail }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Stored>> {
        self.postbacks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl PostbackStore for MemoryPostbackStore {
    async fn create(&self, postback: &Postback, audit: &AuditRecord) -> StoreResult<()> {
        let mut map = self.map();
        if map.contains_key(&postback.id) {
            return Err(StoreError::Conflict(format!("postback {} already exists", postback.id)));
        }
        self.trail.lock().push(audit.clone());
        map.insert(postback.id.clone(), Stored { current: postback.clone(), replaced: Vec::new() });
        Ok(())
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Postback>> {
        Ok(self.map().get(id).map(|s| s.current.clone()))
    }

    async fn replace(&self, postback: &Postback, audit: &AuditRecord) -> StoreResult<bool> {
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
        self.trail.lock().push(audit.clone());
        let previous = std::mem::replace(&mut stored.current, postback.clone());
        stored.replaced.push(previous);
        Ok(true)
    }

    async fn versions(&self, id: &str) -> StoreResult<Option<Vec<Postback>>> {
        Ok(self.map().get(id).map(|s| std::iter::once(&s.current).chain(s.replaced.iter().rev()).cloned().collect()))
    }

    async fn delete(&self, id: &str, audit: &AuditRecord) -> StoreResult<bool> {
        let mut map = self.map();
        if map.remove(id).is_none() {
            return Ok(false);
        }
        self.trail.lock().push(audit.clone());
        Ok(true)
    }

    async fn list(&self, kind: Option<EventType>) -> StoreResult<Vec<Postback>> {
        Ok(self.map().values().map(|s| &s.current).filter(|p| kind.is_none_or(|k| k == p.kind)).cloned().collect())
    }
}
