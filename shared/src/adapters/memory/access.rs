//! `AccessStore` in memory: keys by id, and the audit trail as a list shared with the
//! memory postback store (so a postback write and its record are one locked step).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::domain::access::{page_of, AuditFilter, AuditPage, AuditRecord, ManagedKey};
use crate::ports::{AccessStore, StoreError, StoreResult};

/// The audit records, in the order written.
#[derive(Debug, Default)]
pub struct AuditTrail(Mutex<Vec<AuditRecord>>);

impl AuditTrail {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AuditRecord>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug, Default)]
pub struct MemoryAccessStore {
    keys: Mutex<BTreeMap<String, ManagedKey>>,
    trail: Arc<AuditTrail>,
}

impl MemoryAccessStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store writing its records to `trail` (shared with the postback store).
    pub fn with_trail(trail: Arc<AuditTrail>) -> Self {
        Self { keys: Mutex::default(), trail }
    }

    pub fn trail(&self) -> Arc<AuditTrail> {
        self.trail.clone()
    }

    fn keys(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ManagedKey>> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drop the records older than `before` (the embedded store's purge, for tests).
    pub fn purge_audit(&self, before: DateTime<Utc>) -> usize {
        let mut trail = self.trail.lock();
        let n = trail.len();
        trail.retain(|r| r.at >= before);
        n - trail.len()
    }
}

#[async_trait]
impl AccessStore for MemoryAccessStore {
    async fn create_key(&self, key: &ManagedKey, audit: &AuditRecord) -> StoreResult<()> {
        let mut keys = self.keys();
        if keys.contains_key(&key.id) || keys.values().any(|k| k.hash == key.hash) {
            return Err(StoreError::Conflict(format!("key {} already exists", key.id)));
        }
        self.trail.lock().push(audit.clone());
        keys.insert(key.id.clone(), key.clone());
        Ok(())
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ManagedKey>> {
        Ok(self.keys().values().find(|k| k.hash == hash).cloned())
    }

    async fn list_keys(&self) -> StoreResult<Vec<ManagedKey>> {
        let mut all: Vec<ManagedKey> = self.keys().values().cloned().collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    async fn revoke_key(&self, id: &str, audit: &AuditRecord) -> StoreResult<bool> {
        let mut keys = self.keys();
        if keys.remove(id).is_none() {
            return Ok(false);
        }
        self.trail.lock().push(audit.clone());
        Ok(true)
    }

    async fn touch_key(&self, id: &str, minute: DateTime<Utc>) -> StoreResult<()> {
        if let Some(k) = self.keys().get_mut(id) {
            if k.last_used_at.is_none_or(|t| t < minute) {
                k.last_used_at = Some(minute);
            }
        }
        Ok(())
    }

    async fn append_audit(&self, record: &AuditRecord) -> StoreResult<()> {
        self.trail.lock().push(record.clone());
        Ok(())
    }

    async fn query_audit(&self, filter: &AuditFilter) -> StoreResult<AuditPage> {
        let all = self.trail.lock().clone();
        Ok(page_of(all, filter))
    }
}
