//! `TouchStore`: clicks and impressions whole, conversion/event statuses, dedupe keys.
//! Every row carries `created_at` (when it was stored) for retention.

use std::collections::HashSet;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension};

use super::{decode, encode, millis, EmbeddedStore};
use crate::domain::event::{CurrentStatus, Event, Status, StatusKey};
use crate::ports::{StoreResult, TouchRecord, TouchStore};

/// One row to upsert, prepared (encoded) before it reaches the writer thread.
pub(super) enum TouchRow {
    /// A click or impression, stored whole; the latest per (transaction, kind) wins.
    Whole { transaction_id: String, kind: &'static str, event: String },
    /// A conversion's or named event's current status; the latest report wins.
    Status { transaction_id: String, key: String, current: String },
}

pub(super) fn touch_row(event: &Event) -> StoreResult<TouchRow> {
    Ok(match event.status_key() {
        None => TouchRow::Whole {
            transaction_id: event.transaction_id.clone(),
            kind: event.kind.as_str(),
            event: encode(event, "event")?,
        },
        Some(key) => {
            let current = CurrentStatus {
                // Validation always sets a status on conversions and events; the spec's
                // default stands in should one arrive without.
                status: event.status.unwrap_or(Status::Approved),
                rejection_reason: event.rejection_reason.clone(),
                updated_at: event.timestamp,
            };
            TouchRow::Status {
                transaction_id: event.transaction_id.clone(),
                key: key.as_key(),
                current: encode(&current, "status")?,
            }
        }
    })
}

/// Most dedupe keys looked up on the calling thread (`EmbeddedStore::read_point`).
const POINT_READ_KEYS: usize = 16;

#[async_trait]
impl TouchStore for EmbeddedStore {
    async fn get_click(&self, transaction_id: &str) -> StoreResult<Option<Event>> {
        let transaction_id = transaction_id.to_string();
        let cutoff = millis(self.cutoff(self.now()));
        self.read_point(move |conn| {
            let event: Option<String> = conn
                .prepare_cached(
                    "SELECT event FROM touches WHERE transaction_id = ?1 AND kind = 'click' AND created_at >= ?2",
                )?
                .query_row((&transaction_id, cutoff), |row| row.get(0))
                .optional()?;
            event.map(|e| decode(&e, "click")).transpose()
        })
        .await
    }

    async fn get_status(&self, transaction_id: &str, key: &StatusKey) -> StoreResult<Option<CurrentStatus>> {
        let (transaction_id, key) = (transaction_id.to_string(), key.as_key());
        let cutoff = millis(self.cutoff(self.now()));
        self.read_point(move |conn| {
            let current: Option<String> = conn
                .prepare_cached(
                    "SELECT current FROM statuses WHERE transaction_id = ?1 AND status_key = ?2 AND created_at >= ?3",
                )?
                .query_row((&transaction_id, &key, cutoff), |row| row.get(0))
                .optional()?;
            current.map(|c| decode(&c, "status")).transpose()
        })
        .await
    }

    async fn record(&self, touches: &[TouchRecord]) -> StoreResult<()> {
        self.record_and_mark_seen(touches, &[]).await
    }

    async fn seen(&self, dedupe_keys: &[String]) -> StoreResult<HashSet<String>> {
        if dedupe_keys.is_empty() {
            return Ok(HashSet::new());
        }
        let keys = dedupe_keys.to_vec();
        let cutoff = millis(self.cutoff(self.now()));
        let lookup = move |conn: &rusqlite::Connection| {
            let mut lookup = conn.prepare_cached("SELECT 1 FROM seen WHERE dedupe_key = ?1 AND created_at >= ?2")?;
            let mut found = HashSet::new();
            for key in keys {
                if lookup.exists((&key, cutoff))? {
                    found.insert(key);
                }
            }
            Ok(found)
        };
        // A few probes are a point read; a batch's hundreds go to the blocking pool.
        if dedupe_keys.len() <= POINT_READ_KEYS {
            self.read_point(lookup).await
        } else {
            self.read(lookup).await
        }
    }

    async fn mark_seen(&self, dedupe_keys: &[String]) -> StoreResult<()> {
        self.record_and_mark_seen(&[], dedupe_keys).await
    }

    /// One write job (one savepoint in a group commit) for both: ingest's combined
    /// write with no firings.
    async fn record_and_mark_seen(&self, touches: &[TouchRecord], dedupe_keys: &[String]) -> StoreResult<()> {
        crate::ports::CombinedWrites::record_and_enqueue(self, touches, &[], dedupe_keys).await
    }
}

pub(super) fn write_touches(conn: &Connection, rows: &[TouchRow], now: i64) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut whole = conn.prepare_cached(
        "INSERT INTO touches (transaction_id, kind, event, created_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (transaction_id, kind) DO UPDATE SET event = excluded.event, created_at = excluded.created_at",
    )?;
    let mut status = conn.prepare_cached(
        "INSERT INTO statuses (transaction_id, status_key, current, created_at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (transaction_id, status_key) DO UPDATE SET current = excluded.current, \
         created_at = excluded.created_at",
    )?;
    // In order, so within one call the later report wins too.
    for row in rows {
        match row {
            TouchRow::Whole { transaction_id, kind, event } => whole.execute((transaction_id, kind, event, now))?,
            TouchRow::Status { transaction_id, key, current } => status.execute((transaction_id, key, current, now))?,
        };
    }
    Ok(())
}

pub(super) fn write_seen(conn: &Connection, keys: &[String], now: i64, cutoff: i64) -> StoreResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    // A key marked again keeps its first time, unless that one had expired.
    let mut mark = conn.prepare_cached(
        "INSERT INTO seen (dedupe_key, created_at) VALUES (?1, ?2) \
         ON CONFLICT (dedupe_key) DO UPDATE SET created_at = excluded.created_at WHERE seen.created_at < ?3",
    )?;
    for key in keys {
        mark.execute((key, now, cutoff))?;
    }
    Ok(())
}
