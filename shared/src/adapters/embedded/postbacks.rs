//! `PostbackStore`: one row per postback, the whole postback as JSON, and its current
//! `version`; the versions a replace superseded in `postback_versions`; one row per
//! write in `postback_changes` (the change stamp), in the write's transaction.

use async_trait::async_trait;
use rusqlite::OptionalExtension;

use super::access::insert_audit;
use super::{decode, encode, insert_new, EmbeddedStore};
use crate::domain::access::AuditRecord;
use crate::domain::event::EventType;
use crate::domain::postback::Postback;
use crate::ports::{PostbackChanges, PostbackSnapshot, PostbackStore, StoreError, StoreResult};

const WHAT: &str = "postback";

/// Change rows kept: the local server never asks for older ones (its own writes
/// invalidate its index), and an older stamp is answered "unknown" (reload).
const CHANGES_KEPT: i64 = 1_000;

/// Stamp a write of postback `id` (inside the write's job: one transaction with it).
fn record_change(conn: &rusqlite::Connection, id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO postback_changes (stamp, postback_id) \
         SELECT COALESCE(MAX(stamp), 0) + 1, ?1 FROM postback_changes",
    )?
    .execute([id])?;
    conn.prepare_cached("DELETE FROM postback_changes WHERE stamp <= (SELECT MAX(stamp) FROM postback_changes) - ?1")?
        .execute([CHANGES_KEPT])?;
    Ok(())
}

/// The current stamp (0: no write yet).
fn current_stamp(conn: &rusqlite::Connection) -> rusqlite::Result<u64> {
    conn.prepare_cached("SELECT COALESCE(MAX(stamp), 0) FROM postback_changes")?.query_row([], |row| row.get(0))
}

#[async_trait]
impl PostbackStore for EmbeddedStore {
    async fn create(&self, postback: &Postback, audit: &AuditRecord) -> StoreResult<()> {
        let body = encode(postback, WHAT)?;
        let audit = audit.clone();
        let (id, kind, version) = (postback.id.clone(), postback.kind.as_str(), postback.version);
        self.write(move |conn| {
            let inserted = conn
                .prepare_cached("INSERT INTO postbacks (id, kind, body, version) VALUES (?1, ?2, ?3, ?4)")?
                .execute((&id, kind, &body, version));
            insert_new(inserted, || format!("postback {id}"))?;
            record_change(conn, &id)?;
            insert_audit(conn, &audit)
        })
        .await
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Postback>> {
        let id = id.to_string();
        self.read(move |conn| {
            let body: Option<String> = conn
                .prepare_cached("SELECT body FROM postbacks WHERE id = ?1")?
                .query_row([&id], |row| row.get(0))
                .optional()?;
            body.map(|b| decode(&b, WHAT)).transpose()
        })
        .await
    }

    async fn replace(&self, postback: &Postback, audit: &AuditRecord) -> StoreResult<bool> {
        let body = encode(postback, WHAT)?;
        let audit = audit.clone();
        let (id, kind, version) = (postback.id.clone(), postback.kind.as_str(), postback.version);
        // One job = one savepoint: a conflict (an `Err`) rolls the copy back too.
        self.write(move |conn| {
            let stored: Option<u32> = conn
                .prepare_cached("SELECT version FROM postbacks WHERE id = ?1")?
                .query_row([&id], |row| row.get(0))
                .optional()?;
            let Some(stored) = stored else { return Ok(false) };
            if stored.checked_add(1) != Some(version) {
                return Err(StoreError::Conflict(format!(
                    "postback {id} is at version {stored}, not {}",
                    version.saturating_sub(1)
                )));
            }
            conn.prepare_cached(
                "INSERT INTO postback_versions (postback_id, version, body) \
                 SELECT id, version, body FROM postbacks WHERE id = ?1",
            )?
            .execute([&id])?;
            conn.prepare_cached("UPDATE postbacks SET kind = ?2, body = ?3, version = ?4 WHERE id = ?1")?
                .execute((&id, kind, &body, version))?;
            record_change(conn, &id)?;
            insert_audit(conn, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn delete(&self, id: &str, audit: &AuditRecord) -> StoreResult<bool> {
        let (id, audit) = (id.to_string(), audit.clone());
        self.write(move |conn| {
            conn.prepare_cached("DELETE FROM postback_versions WHERE postback_id = ?1")?.execute([&id])?;
            if conn.prepare_cached("DELETE FROM postbacks WHERE id = ?1")?.execute([&id])? == 0 {
                return Ok(false);
            }
            record_change(conn, &id)?;
            insert_audit(conn, &audit)?;
            Ok(true)
        })
        .await
    }

    async fn versions(&self, id: &str) -> StoreResult<Option<Vec<Postback>>> {
        let id = id.to_string();
        // One read transaction: the current row and the saved ones are of the same moment.
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let current: Option<String> = tx
                .prepare_cached("SELECT body FROM postbacks WHERE id = ?1")?
                .query_row([&id], |row| row.get(0))
                .optional()?;
            let Some(current) = current else { return Ok(None) };
            let saved: Vec<String> = tx
                .prepare_cached("SELECT body FROM postback_versions WHERE postback_id = ?1 ORDER BY version DESC")?
                .query_map([&id], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let all = std::iter::once(&current).chain(&saved).map(|b| decode(b, WHAT)).collect::<StoreResult<_>>()?;
            Ok(Some(all))
        })
        .await
    }

    async fn list(&self, kind: Option<EventType>) -> StoreResult<Vec<Postback>> {
        self.read(move |conn| {
            let bodies: Vec<String> = match kind {
                Some(kind) => conn
                    .prepare_cached("SELECT body FROM postbacks WHERE kind = ?1 ORDER BY id")?
                    .query_map([kind.as_str()], |row| row.get(0))?
                    .collect::<Result<_, _>>()?,
                None => conn
                    .prepare_cached("SELECT body FROM postbacks ORDER BY id")?
                    .query_map([], |row| row.get(0))?
                    .collect::<Result<_, _>>()?,
            };
            bodies.iter().map(|b| decode(b, WHAT)).collect()
        })
        .await
    }

    async fn changes_since(&self, stamp: u64) -> StoreResult<PostbackChanges> {
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let current = current_stamp(&tx)?;
            if stamp >= current {
                let ids = (stamp == current).then(Default::default);
                return Ok(PostbackChanges { stamp: current, ids });
            }
            let rows: Vec<(u64, String)> = tx
                .prepare_cached("SELECT stamp, postback_id FROM postback_changes WHERE stamp > ?1 ORDER BY stamp")?
                .query_map([stamp], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            // The first change after `stamp` was pruned: the list is not whole.
            let whole = rows.first().is_some_and(|(first, _)| *first == stamp + 1);
            let ids = whole.then(|| rows.into_iter().map(|(_, id)| id).collect());
            Ok(PostbackChanges { stamp: current, ids })
        })
        .await
    }

    async fn snapshot(&self) -> StoreResult<PostbackSnapshot> {
        // One read transaction: the postbacks are those of the stamp.
        self.read(move |conn| {
            let tx = conn.unchecked_transaction()?;
            let stamp = current_stamp(&tx)?;
            let bodies: Vec<String> = tx
                .prepare_cached("SELECT body FROM postbacks ORDER BY id")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let postbacks = bodies.iter().map(|b| decode(b, WHAT)).collect::<StoreResult<_>>()?;
            Ok(PostbackSnapshot { stamp, postbacks })
        })
        .await
    }
}
