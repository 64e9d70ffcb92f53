//! Managed keys and the audit trail (`/keys`, `/audit`, `/me`). Authentication itself
//! is the HTTP edge's (`crate::entry::http::auth`): it reads keys through the same port.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{App, ServiceError, ServiceResult};
use crate::domain::access::{
    hash_key, new_key, AuditAction, AuditFilter, AuditPage, Caller, KeySpec, ManagedKey, Role, TargetKind,
};

/// A key as `GET /keys` shows it: never the key, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub publisher_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Minute precision.
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<ManagedKey> for KeyView {
    fn from(k: ManagedKey) -> Self {
        KeyView {
            id: k.id,
            name: k.name,
            role: k.role,
            publisher_id: k.publisher_id,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// `POST /keys`' answer: the only time the key itself is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreatedKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub publisher_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub key: String,
}

impl App {
    /// Make a key; only its hash is stored, with the `key.create` record in one write.
    pub async fn create_key(&self, caller: &Caller, spec: KeySpec) -> ServiceResult<CreatedKey> {
        let key = new_key();
        let stored = ManagedKey {
            id: format!("key_{}", crate::domain::ids::time_ordered(self.ports.clock.now()).simple()),
            name: spec.name,
            role: spec.role,
            publisher_id: spec.publisher_id,
            created_at: self.ports.clock.now(),
            last_used_at: None,
            hash: hash_key(&key),
        };
        let summary = match &stored.publisher_id {
            Some(p) => format!("created {} key \"{}\" for publisher {p}", stored.role.as_str(), stored.name),
            None => format!("created {} key \"{}\"", stored.role.as_str(), stored.name),
        };
        let record = self.audit_record(caller, AuditAction::KeyCreate, TargetKind::Key, Some(&stored.id), summary);
        self.ports.access.create_key(&stored, &record).await?;
        Ok(CreatedKey {
            id: stored.id,
            name: stored.name,
            role: stored.role,
            publisher_id: stored.publisher_id,
            created_at: stored.created_at,
            key,
        })
    }

    pub async fn list_keys(&self) -> ServiceResult<Vec<KeyView>> {
        Ok(self.ports.access.list_keys().await?.into_iter().map(KeyView::from).collect())
    }

    /// Revoke (remove) a key, with its `key.revoke` record in one write; 404 if unknown.
    pub async fn revoke_key(&self, caller: &Caller, id: &str) -> ServiceResult<()> {
        // The name for the summary; the listing may lag a just-made key on DynamoDB (an
        // index), so a key missing from it is still revoked, and named by its id.
        let name = self.ports.access.list_keys().await?.into_iter().find(|k| k.id == id).map(|k| k.name);
        let summary = match name {
            Some(name) => format!("revoked key \"{name}\""),
            None => format!("revoked key {id}"),
        };
        let record = self.audit_record(caller, AuditAction::KeyRevoke, TargetKind::Key, Some(id), summary);
        if !self.ports.access.revoke_key(id, &record).await? {
            return Err(ServiceError::NotFound("key"));
        }
        Ok(())
    }

    pub async fn query_audit(&self, filter: &AuditFilter) -> ServiceResult<AuditPage> {
        Ok(self.ports.access.query_audit(filter).await?)
    }
}
