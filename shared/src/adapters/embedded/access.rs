//! `AccessStore`: managed keys (by id, unique hash) and the audit trail, in the same
//! SQLite file as the postbacks, so a postback write and its record are one transaction
//! (`insert_audit` runs inside the postback store's write jobs).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};

use super::{decode, encode, insert_new, nanos, EmbeddedStore};
use crate::domain::access::{AuditCursor, AuditFilter, AuditPage, AuditRecord, ManagedKey};
use crate::ports::{AccessStore, StoreResult};

const KEY: &str = "key";
const RECORD: &str = "audit record";

/// Insert one audit record on `conn` (inside the caller's write job).
pub(super) fn insert_audit(conn: &Connection, record: &AuditRecord) -> StoreResult<()> {
    let body = encode(record, RECORD)?;
    conn.prepare_cached(
        "INSERT INTO audit (id, sort_key, at_ns, actor_key_id, action, target_id, body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute((
        &record.id,
        record.sort_key(),
        nanos(record.at),
        &record.actor.key_id,
        record.action.as_str(),
        record.target.id.as_deref(),
        &body,
    ))?;
    Ok(())
}

impl EmbeddedStore {
    /// Delete audit records older than `now` − `retention` (`AUDIT_RETENTION_DAYS`), in
    /// small transactions. `now` comes from the caller's clock. Returns the rows deleted.
    pub async fn purge_audit(&self, now: DateTime<Utc>, retention: chrono::Duration) -> StoreResult<u64> {
        const CHUNK: i64 = 2_000;
        let cutoff = nanos(now.checked_sub_signed(retention).unwrap_or(DateTime::<Utc>::MIN_UTC));
        let mut total = 0u64;
        loop {
            let deleted = self
                .write(move |conn| {
                    Ok(conn
                        .prepare_cached(
                            "DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at_ns < ?1 LIMIT ?2)",
                        )?
                        .execute((cutoff, CHUNK))?)
                })
                .await?;
            total += deleted as u64;
            if (deleted as i64) < CHUNK {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl AccessStore for EmbeddedStore {
    async fn create_key(&self, key: &ManagedKey, audit: &AuditRecord) -> StoreResult<()> {
        let body = encode(key, KEY)?;
        let (id, hash, created) = (key.id.clone(), key.hash.clone(), nanos(key.created_at));
        let audit = audit.clone();
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached("INSERT INTO access_keys (id, hash, created_ns, body) VALUES (?1, ?2, ?3, ?4)")?
                .execute((&id, &hash, created, &body));
            insert_new(inserted, || format!("key {id}"))?;
            insert_audit(conn, &audit)
        })
        .await
    }

    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ManagedKey>> {
        let hash = hash.to_string();
        self.read_point(move |conn| {
            let body: Option<String> = conn
                .prepare_cached("SELECT body FROM access_keys WHERE hash = ?1")?
                .query_row([&hash], |row| row.get(0))
                .optional()?;
            body.map(|b| decode(&b, KEY)).transpose()
        })
        .await
    }

    async fn list_keys(&self) -> StoreResult<Vec<ManagedKey>> {
        self.read(move |conn| {
            let bodies: Vec<String> = conn
                .prepare_cached("SELECT body FROM access_keys ORDER BY created_ns, id")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            bodies.iter().map(|b| decode(b, KEY)).collect()
        })
        .await
    }

    async fn revoke_key(&self, id: &str, audit: &AuditRecord) -> StoreResult<bool> {
        let (id, audit) = (id.to_string(), audit.clone());
        self.write(move |conn| {
            if conn.prepare_cached("DELETE FROM access_keys WHERE id = ?1")?.execute([&id])? == 0 {
                return Ok(false);
            }
            insert_audit(conn, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn touch_key(&self, id: &str, minute: DateTime<Utc>) -> StoreResult<()> {
        let id = id.to_string();
        self.write(move |conn| {
            let body: Option<String> = conn
                .prepare_cached("SELECT body FROM access_keys WHERE id = ?1")?
                .query_row([&id], |row| row.get(0))
                .optional()?;
            let Some(body) = body else { return Ok(()) };
            let mut key: ManagedKey = decode(&body, KEY)?;
            if key.last_used_at.is_some_and(|t| t >= minute) {
                return Ok(());
            }
            key.last_used_at = Some(minute);
            conn.prepare_cached("UPDATE access_keys SET body = ?2 WHERE id = ?1")?
                .execute((&id, encode(&key, KEY)?))?;
            Ok(())
        })
        .await
    }

    async fn append_audit(&self, record: &AuditRecord) -> StoreResult<()> {
        let record = record.clone();
        self.write(move |conn| insert_audit(conn, &record)).await
    }

    async fn query_audit(&self, filter: &AuditFilter) -> StoreResult<AuditPage> {
        let filter = filter.clone();
        self.read(move |conn| {
            let mut sql = String::from("SELECT body FROM audit WHERE 1 = 1");
            let mut args: Vec<rusqlite::types::Value> = Vec::new();
            let mut add = |clause: &str, value: rusqlite::types::Value| {
                args.push(value);
                sql.push_str(&format!(" AND {clause} ?{}", args.len()));
            };
            if let Some(k) = &filter.actor_key_id {
                add("actor_key_id =", k.clone().into());
            }
            if let Some(a) = filter.action {
                add("action =", a.as_str().to_string().into());
            }
            if let Some(t) = &filter.target_id {
                add("target_id =", t.clone().into());
            }
            if let Some(from) = filter.from {
                add("at_ns >=", nanos(from).into());
            }
            if let Some(to) = filter.to {
                add("at_ns <", nanos(to).into());
            }
            if let Some(AuditCursor(after)) = &filter.cursor {
                add("sort_key <", after.clone().into());
            }
            let limit = filter.limit as i64 + 1;
            args.push(limit.into());
            sql.push_str(&format!(" ORDER BY sort_key DESC LIMIT ?{}", args.len()));
            let bodies: Vec<String> = conn
                .prepare(&sql)?
                .query_map(rusqlite::params_from_iter(args), |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let records = bodies.iter().map(|b| decode(b, RECORD)).collect::<StoreResult<Vec<AuditRecord>>>()?;
            Ok(crate::domain::access::page_of(records, &filter))
        })
        .await
    }
}
