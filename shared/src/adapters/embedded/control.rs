//! `ControlStore` on the embedded store: breakers and held firings in SQLite (schema
//! version 4), rate-limit slots in memory.
//!
//! The dispatcher reads a postback's breaker before every send, so breakers are also
//! kept in an in-memory mirror: loaded at open, and changed by the writer thread inside
//! the write job that changes the table (so the mirror moves in commit order). The
//! version check itself runs against the table, in the job. If the job's transaction
//! then fails to commit, the caller reloads that breaker from the file. This is sound
//! because one process owns the file (the local server locks its data folder).
//!
//! Slots are per second and only matter for the second now and the few ahead, so they
//! live in memory: a restart loses at most the current second's count (one second may
//! then see up to twice its limit), and nothing is written per send.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};

use super::{decode, encode, nanos, EmbeddedStore};
use crate::domain::breaker::Breaker;
use crate::domain::firing::Firing;
use crate::domain::slot::next_slot;
use crate::ports::{ControlStore, StoreError, StoreResult, StoredBreaker};

const BREAKER: &str = "breaker";
const HELD: &str = "held firing";

/// A mirrored breaker: its stored value, or why its row could not be read (reported on
/// every read, as the other stores report a corrupt row, until a write replaces it).
type Mirrored = Result<StoredBreaker, StoreError>;

/// The in-memory side of the control store, shared by all clones of the store.
#[derive(Debug, Default)]
pub(crate) struct ControlState {
    breakers: Mutex<HashMap<String, Mirrored>>,
    /// Per postback: the latest second with a slot taken and how many were taken in it.
    slots: Mutex<HashMap<String, (i64, u32)>>,
    /// Release claims, (held key, releases) → claimed until. In memory: claims are
    /// leases of this process, which alone opens the file; a restart ends them all, as
    /// their expiry would.
    claims: Mutex<HashMap<ClaimKey, DateTime<Utc>>>,
}

/// A claimed hold: its key and generation (`releases`).
type ClaimKey = ((String, i64, String), u32);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl ControlState {
    /// Every stored breaker, read with the write connection before the writer starts.
    pub(crate) fn load(conn: &Connection) -> rusqlite::Result<Self> {
        let mut stmt = conn.prepare("SELECT postback_id, version, body FROM breakers")?;
        let rows =
            stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?, row.get::<_, String>(2)?)))?;
        let mut breakers = HashMap::new();
        for row in rows {
            let (id, version, body) = row?;
            breakers.insert(id, mirrored(version, &body));
        }
        Ok(Self { breakers: Mutex::new(breakers), slots: Mutex::default(), claims: Mutex::default() })
    }
}

fn mirrored(version: i64, body: &str) -> Mirrored {
    let version =
        u64::try_from(version).map_err(|_| StoreError::Corrupt(format!("stored breaker version {version}")))?;
    Ok(StoredBreaker { breaker: decode(body, BREAKER)?, version })
}

/// Held firings as `held_firings` rows: key and payload.
pub(super) type HeldRow = ((String, i64, String), String);

pub(super) fn held_rows(firings: &[Firing]) -> StoreResult<Vec<HeldRow>> {
    firings.iter().map(|f| Ok((held_key(f), encode(f, HELD)?))).collect()
}

/// Hold firings (one copy per postback, `queued_at` and delivery id).
pub(super) fn write_held(conn: &Connection, rows: &[HeldRow]) -> StoreResult<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO held_firings (postback_id, queued_at_ns, delivery_id, payload) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (postback_id, queued_at_ns, delivery_id) DO UPDATE SET payload = excluded.payload",
    )?;
    for ((postback_id, queued_at, delivery_id), payload) in rows {
        insert.execute((postback_id, queued_at, delivery_id, payload))?;
    }
    Ok(())
}

/// The held-firing key: (postback, queued_at, delivery id), as the port defines "the
/// same firing".
fn held_key(firing: &Firing) -> (String, i64, String) {
    (firing.postback_id.clone(), nanos(firing.queued_at), firing.delivery_id.clone())
}

impl EmbeddedStore {
    fn control(&self) -> &ControlState {
        &self.core.control
    }

    /// Put the table's row (or its absence) back into the mirror, after a write whose
    /// outcome is unknown (its transaction failed after the job changed the mirror).
    async fn reload_breaker(&self, postback_id: &str) {
        let id = postback_id.to_string();
        let read = self
            .read(move |conn| {
                let row: Option<(i64, String)> = conn
                    .prepare_cached("SELECT version, body FROM breakers WHERE postback_id = ?1")?
                    .query_row([&id], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                Ok(row)
            })
            .await;
        let mut mirror = lock(&self.control().breakers);
        match read {
            Ok(Some((version, body))) => {
                mirror.insert(postback_id.to_string(), mirrored(version, &body));
            }
            Ok(None) => {
                mirror.remove(postback_id);
            }
            // Unknown: report the failure until a later write or reload settles it.
            Err(e) => {
                mirror.insert(postback_id.to_string(), Err(e));
            }
        }
    }
}

#[async_trait]
impl ControlStore for EmbeddedStore {
    async fn breaker(&self, postback_id: &str) -> StoreResult<Option<StoredBreaker>> {
        lock(&self.control().breakers).get(postback_id).cloned().transpose()
    }

    async fn breakers(&self, postback_ids: &[String]) -> StoreResult<HashMap<String, StoredBreaker>> {
        let mirror = lock(&self.control().breakers);
        let mut found = HashMap::new();
        for id in postback_ids {
            if let Some(stored) = mirror.get(id) {
                found.insert(id.clone(), stored.clone()?);
            }
        }
        Ok(found)
    }

    async fn put_breaker(&self, postback_id: &str, breaker: &Breaker, expected: Option<u64>) -> StoreResult<bool> {
        let body = encode(breaker, BREAKER)?;
        let (id, value) = (postback_id.to_string(), breaker.clone());
        let core = Arc::clone(&self.core);
        let written = self
            .write(move |conn| {
                let stored: Option<i64> = conn
                    .prepare_cached("SELECT version FROM breakers WHERE postback_id = ?1")?
                    .query_row([&id], |row| row.get(0))
                    .optional()?;
                let stored = stored
                    .map(|v| u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("stored breaker version {v}"))))
                    .transpose()?;
                if stored != expected {
                    return Ok(false);
                }
                let version = expected.map_or(1, |v| v.saturating_add(1));
                let sql_version = i64::try_from(version)
                    .map_err(|_| StoreError::Corrupt(format!("breaker version {version} out of range")))?;
                conn.prepare_cached(
                    "INSERT INTO breakers (postback_id, version, body) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (postback_id) DO UPDATE SET version = excluded.version, body = excluded.body",
                )?
                .execute((&id, sql_version, &body))?;
                // In the writer thread, in commit order (see the module comment).
                lock(&core.control.breakers).insert(id, Ok(StoredBreaker { breaker: value, version }));
                Ok(true)
            })
            .await;
        if written.is_err() {
            self.reload_breaker(postback_id).await;
        }
        written
    }

    async fn hold(&self, firings: &[Firing]) -> StoreResult<()> {
        if firings.is_empty() {
            return Ok(());
        }
        let rows = held_rows(firings)?;
        self.write(move |conn| write_held(conn, &rows)).await
    }

    async fn held(&self, postback_id: &str, max: usize) -> StoreResult<Vec<Firing>> {
        let id = postback_id.to_string();
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let payloads: Vec<String> = conn
                .prepare_cached(
                    "SELECT payload FROM held_firings WHERE postback_id = ?1 \
                     ORDER BY queued_at_ns, delivery_id LIMIT ?2",
                )?
                .query_map((&id, limit), |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            payloads.iter().map(|p| decode(p, HELD)).collect()
        })
        .await
    }

    async fn unhold(&self, firings: &[Firing]) -> StoreResult<()> {
        if firings.is_empty() {
            return Ok(());
        }
        // Only the hold of the generation read (`releases`, absent when 0): one written
        // since by a released copy stays.
        let keys: Vec<((String, i64, String), u32)> = firings.iter().map(|f| (held_key(f), f.releases)).collect();
        self.write(move |conn| {
            let mut delete = conn.prepare_cached(
                "DELETE FROM held_firings WHERE postback_id = ?1 AND queued_at_ns = ?2 AND delivery_id = ?3 \
                 AND IFNULL(json_extract(payload, '$.releases'), 0) = ?4",
            )?;
            for ((postback_id, queued_at, delivery_id), releases) in &keys {
                delete.execute((postback_id, queued_at, delivery_id, releases))?;
            }
            Ok(())
        })
        .await
    }

    async fn claim(&self, firings: &[Firing], now: DateTime<Utc>, until: DateTime<Utc>) -> StoreResult<Vec<Firing>> {
        if firings.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<(String, i64, String)> = firings.iter().map(held_key).collect();
        // Each one's generation as held now (`None`: not held).
        let stored: Vec<Option<u32>> = self
            .read(move |conn| {
                let mut select = conn.prepare_cached(
                    "SELECT IFNULL(json_extract(payload, '$.releases'), 0) FROM held_firings \
                     WHERE postback_id = ?1 AND queued_at_ns = ?2 AND delivery_id = ?3",
                )?;
                keys.iter()
                    .map(|(postback_id, queued_at, delivery_id)| {
                        Ok(select.query_row((postback_id, queued_at, delivery_id), |r| r.get(0)).optional()?)
                    })
                    .collect()
            })
            .await?;
        let mut claims = lock(&self.control().claims);
        claims.retain(|_, until| *until > now);
        let mut claimed = Vec::new();
        for (firing, releases) in firings.iter().zip(stored) {
            if releases != Some(firing.releases) {
                continue;
            }
            let key = (held_key(firing), firing.releases);
            if claims.contains_key(&key) {
                continue;
            }
            claims.insert(key, until);
            claimed.push(firing.clone());
        }
        Ok(claimed)
    }

    async fn held_count(&self, postback_id: &str) -> StoreResult<u64> {
        let id = postback_id.to_string();
        self.read(move |conn| {
            let n: i64 = conn
                .prepare_cached("SELECT count(*) FROM held_firings WHERE postback_id = ?1")?
                .query_row([&id], |row| row.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn take_slot(&self, postback_id: &str, from_second: i64, limit: u32) -> StoreResult<i64> {
        let mut slots = lock(&self.control().slots);
        let slot = slots.entry(postback_id.to_string()).or_insert((i64::MIN, 0));
        *slot = next_slot(*slot, from_second, limit.max(1));
        Ok(slot.0)
    }

    async fn forget(&self, postback_id: &str) -> StoreResult<()> {
        let id = postback_id.to_string();
        let core = Arc::clone(&self.core);
        let forgotten = self
            .write(move |conn| {
                conn.prepare_cached("DELETE FROM breakers WHERE postback_id = ?1")?.execute([&id])?;
                conn.prepare_cached("DELETE FROM held_firings WHERE postback_id = ?1")?.execute([&id])?;
                lock(&core.control.breakers).remove(&id);
                Ok(())
            })
            .await;
        if forgotten.is_err() {
            self.reload_breaker(postback_id).await;
            return forgotten;
        }
        lock(&self.control().slots).remove(postback_id);
        lock(&self.control().claims).retain(|((id, ..), _), _| id != postback_id);
        Ok(())
    }
}
