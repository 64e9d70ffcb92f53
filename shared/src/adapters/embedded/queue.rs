//! `FiringQueue` in the same file as everything else. The `firings` table holds each
//! queued firing (due time, payload, destination); visibility and leases are kept in
//! memory (`queue_index.rs`), so receiving is a lookup there plus a point read of the
//! payloads, with no write. A lease is a token; `ack`/`retry` act only while the token
//! still matches, so a consumer whose lease ran out and was taken over cannot delete or
//! replace the new holder's row. Every change to the index follows the commit of its row
//! change (the writer's after-commit hook).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};

use super::queue_index::{QueueIndex, RowId, Settled};
use super::writer::{AfterCommit, WriterCounters};
use super::{decode, encode, from_millis, millis, EmbeddedStore};
use crate::domain::firing::Firing;
use crate::ports::{FiringQueue, InFlight, Leased, QueueDepth, StoreResult};

/// Most firings handed out by one `receive`.
const MAX_RECEIVE: usize = 1_000;

/// Receives of at most this many firings read their payloads on the calling thread
/// (`read_point`); larger ones on the read pool.
const POINT_READ_ROWS: usize = 16;

/// The in-memory queue index, shared by the store's handles and the writer's hooks.
pub(super) type SharedIndex = Arc<Mutex<QueueIndex>>;

pub(super) fn lock(index: &SharedIndex) -> MutexGuard<'_, QueueIndex> {
    index.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The index of the rows in the file, every one visible at its due time (a restart
/// releases every lease: the process that held them is gone).
pub(super) fn load_index(conn: &Connection) -> StoreResult<QueueIndex> {
    let mut index = QueueIndex::default();
    let mut rows = conn.prepare("SELECT rowid, due_at, destination FROM firings")?;
    let mut rows = rows.query([])?;
    while let Some(row) = rows.next()? {
        index.insert(row.get(0)?, row.get(1)?, row.get::<_, Option<String>>(2)?.as_deref(), None);
    }
    Ok(index)
}

/// A firing as its queue row's columns.
pub(super) struct Row {
    delivery_id: String,
    due_at: i64,
    payload: String,
    destination: Option<String>,
}

impl Row {
    pub(super) fn of(firing: &Firing) -> StoreResult<Row> {
        Ok(Row {
            delivery_id: firing.delivery_id.clone(),
            due_at: millis(firing.due_at),
            payload: encode(firing, "firing")?,
            destination: firing.destination.clone(),
        })
    }
}

/// What a write job did to `firings`, applied to the index once the job is committed.
#[derive(Default)]
struct Changes {
    inserted: Vec<(RowId, i64, Option<String>, Box<str>)>,
    settled: Vec<(RowId, Settled)>,
}

/// Collects a write job's queue changes (the job runs on the writer thread) for its
/// after-commit hook.
#[derive(Clone, Default)]
pub(super) struct QueueChanges(Arc<Mutex<Changes>>);

impl QueueChanges {
    fn changes(&self) -> MutexGuard<'_, Changes> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Insert a firing unless it is queued already or was delivered (a re-enqueued
    /// delivered firing must not fire again).
    pub fn insert_firing(&self, conn: &Connection, row: &Row, cutoff: i64) -> StoreResult<()> {
        let inserted = conn
            .prepare_cached(
                "INSERT OR IGNORE INTO firings (delivery_id, due_at, payload, destination) \
                 SELECT ?1, ?2, ?3, ?5 \
                 WHERE NOT EXISTS (SELECT 1 FROM delivered WHERE delivery_id = ?1 AND created_at >= ?4)",
            )?
            .execute((&row.delivery_id, row.due_at, &row.payload, cutoff, &row.destination))?;
        if inserted == 1 {
            let payload = Box::from(row.payload.as_str());
            self.changes().inserted.push((conn.last_insert_rowid(), row.due_at, row.destination.clone(), payload));
        }
        Ok(())
    }

    /// Delete a leased row (acked, dropped or quarantined).
    pub fn delete(&self, conn: &Connection, rowid: RowId) -> StoreResult<()> {
        conn.prepare_cached("DELETE FROM firings WHERE rowid = ?1")?.execute([rowid])?;
        self.changes().settled.push((rowid, Settled::Removed));
        Ok(())
    }

    /// Replace a leased row by the firing's next message: in place if it is the same
    /// delivery id, else the old row goes and the new one is inserted.
    fn replace(&self, conn: &Connection, rowid: RowId, next: &Row, cutoff: i64) -> StoreResult<()> {
        let updated = conn
            .prepare_cached(
                "UPDATE firings SET payload = ?3, due_at = ?4, destination = ?5 WHERE rowid = ?1 AND delivery_id = ?2",
            )?
            .execute((rowid, &next.delivery_id, &next.payload, next.due_at, &next.destination))?;
        if updated == 1 {
            let rescheduled = Settled::Rescheduled {
                due_at: next.due_at,
                destination: next.destination.clone(),
                payload: Some(Box::from(next.payload.as_str())),
            };
            self.changes().settled.push((rowid, rescheduled));
            return Ok(());
        }
        self.delete(conn, rowid)?;
        self.insert_firing(conn, next, cutoff)
    }

    /// The hook that applies the changes to `index` if committed. `begun` are the rows
    /// whose settle was begun for this job: without a commit, their leases stand again.
    pub fn after_commit(&self, index: &SharedIndex, begun: Vec<RowId>) -> AfterCommit {
        let changes = self.clone();
        let index = Arc::clone(index);
        Box::new(move |committed| {
            let changes = std::mem::take(&mut *changes.changes());
            let mut index = lock(&index);
            if committed {
                for (rowid, settled) in changes.settled {
                    index.finish_settle(rowid, Some(settled));
                }
                for (rowid, due_at, destination, payload) in changes.inserted {
                    index.insert(rowid, due_at, destination.as_deref(), Some(payload));
                }
            }
            // Settled rows are finished already; this only frees the others.
            for rowid in begun {
                index.finish_settle(rowid, None);
            }
        })
    }
}

fn receipt(rowid: RowId, token: u64) -> String {
    format!("{rowid}:{token}")
}

/// `(rowid, token)` of one of this store's receipts.
pub(super) fn parse_receipt(receipt: &str) -> Option<(RowId, u64)> {
    let (rowid, token) = receipt.split_once(':')?;
    Some((rowid.parse().ok()?, token.parse().ok()?))
}

pub(super) fn note_stale(counters: &WriterCounters, what: &str, receipt: &str) {
    counters.stale_receipts.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(receipt, "{what} ignored: the lease was taken over or the firing is gone");
}

/// A lease taken now, in the queue's milliseconds, and the age before which a delivered
/// marker has expired.
#[derive(Debug, Clone, Copy)]
struct LeaseWindow {
    now: i64,
    until: i64,
    delivered_cutoff: i64,
}

/// A leased row as read back: its delivery id, payload, and whether that id is marked
/// delivered.
type Found = Option<(String, String, bool)>;

/// Why a leased row is not handed out.
enum Withheld {
    /// Its delivery id is marked delivered (a crash between a delivery and its ack, in a
    /// version that made them two commits): never handed out again.
    Delivered,
    /// Its payload does not decode: moved to `firings_quarantine`, loudly.
    Unreadable(String),
}

impl EmbeddedStore {
    pub(super) fn index(&self) -> MutexGuard<'_, QueueIndex> {
        lock(&self.core.queue)
    }

    /// A lease taken now.
    fn lease_window(&self) -> LeaseWindow {
        let now = self.now();
        let lease = chrono::Duration::from_std(self.core.options.lease).unwrap_or(chrono::Duration::MAX);
        LeaseWindow {
            now: millis(now),
            until: millis(now.checked_add_signed(lease).unwrap_or(DateTime::<Utc>::MAX_UTC)),
            delivered_cutoff: millis(self.cutoff(now)),
        }
    }

    /// Begin settling `receipt`'s lease: its row, or `None` (counted stale) if the
    /// receipt is not this store's or its lease was taken over.
    pub(super) fn begin_settle(&self, receipt: &str, what: &str) -> Option<RowId> {
        let lease = parse_receipt(receipt).filter(|(rowid, token)| self.index().begin_settle(*rowid, *token));
        if lease.is_none() {
            note_stale(&self.core.counters, what, receipt);
        }
        lease.map(|(rowid, _)| rowid)
    }

    /// Lease up to `max` rows the index chose, read their payloads, and hand out those
    /// that decode and are not delivered.
    async fn lease(&self, max: usize, room: impl Fn(&str) -> usize) -> StoreResult<Vec<Leased>> {
        let max = max.min(MAX_RECEIVE);
        if max == 0 {
            return Ok(Vec::new());
        }
        let window = self.lease_window();
        let chosen = self.index().lease(window.now, window.until, max, room);
        if chosen.is_empty() {
            return Ok(Vec::new());
        }
        // Payloads kept in memory were committed by this process after the delivered
        // check of their insert (and are forgotten if a delivery id may have been marked
        // since: `forget_payloads`); the others are read back, with that check.
        let unread: Vec<RowId> =
            chosen.iter().filter(|(_, _, payload)| payload.is_none()).map(|(rowid, ..)| *rowid).collect();
        let mut found = if unread.is_empty() {
            Vec::new()
        } else {
            match self.read_back(unread, window.delivered_cutoff).await {
                Ok(found) => found,
                Err(e) => {
                    let mut index = self.index();
                    for (rowid, token, _) in &chosen {
                        index.unlease(*rowid, *token);
                    }
                    return Err(e);
                }
            }
        }
        .into_iter();
        let mut leased = Vec::with_capacity(chosen.len());
        let mut dropped = Vec::new();
        for (rowid, token, kept) in chosen {
            let (delivery_id, payload) = match kept {
                Some(payload) => (None, payload.into_string()),
                None => match found.next().flatten() {
                    None => {
                        // Not in the file: deleted behind the store's back. Nothing to send.
                        tracing::warn!(rowid, "queued firing is gone from the file; forgetting it");
                        self.index().remove(rowid);
                        continue;
                    }
                    Some((delivery_id, _, true)) => {
                        dropped.push((rowid, token, delivery_id, Withheld::Delivered));
                        continue;
                    }
                    Some((delivery_id, payload, false)) => (Some(delivery_id), payload),
                },
            };
            match decode::<Firing>(&payload, "firing") {
                Ok(firing) => leased.push(Leased { firing, receipt: receipt(rowid, token) }),
                Err(e) => {
                    let delivery_id = delivery_id.unwrap_or_default();
                    dropped.push((rowid, token, delivery_id, Withheld::Unreadable(e.to_string())));
                }
            }
        }
        if !dropped.is_empty() {
            self.drop_leased(dropped, window.now).await?;
        }
        Ok(leased)
    }

    /// Read leased rows back from the file: delivery id, payload and whether that id is
    /// marked delivered, in `rowids` order (`None`: no such row).
    async fn read_back(&self, rowids: Vec<RowId>, delivered_cutoff: i64) -> StoreResult<Vec<Found>> {
        let many = rowids.len() > POINT_READ_ROWS;
        let read = move |conn: &Connection| -> StoreResult<Vec<Found>> {
            let mut select = conn.prepare_cached(
                "SELECT delivery_id, payload, EXISTS (SELECT 1 FROM delivered \
                 WHERE delivered.delivery_id = firings.delivery_id AND created_at >= ?2) \
                 FROM firings WHERE rowid = ?1",
            )?;
            rowids
                .iter()
                .map(|rowid| {
                    Ok(select
                        .query_row((rowid, delivered_cutoff), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                        .optional()?)
                })
                .collect()
        };
        if many {
            self.read(read).await
        } else {
            self.read_point(read).await
        }
    }

    /// Delete (or quarantine) leased rows that must not be handed out.
    async fn drop_leased(&self, dropped: Vec<(RowId, u64, String, Withheld)>, now: i64) -> StoreResult<()> {
        let count = dropped.len();
        let begun: Vec<RowId> = {
            let mut index = self.index();
            dropped.iter().filter(|(rowid, token, ..)| index.begin_settle(*rowid, *token)).map(|d| d.0).collect()
        };
        let changes = QueueChanges::default();
        let after = changes.after_commit(&self.core.queue, begun);
        let counters = Arc::clone(&self.core.counters);
        let job = move |conn: &Connection| {
            for (rowid, _, delivery_id, why) in &dropped {
                match why {
                    Withheld::Delivered => {
                        counters.delivered_at_lease.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(delivery_id, "already delivered; dropping its queued firing");
                    }
                    Withheld::Unreadable(error) => {
                        conn.prepare_cached(
                            "INSERT INTO firings_quarantine (delivery_id, payload, error, quarantined_at) \
                             SELECT delivery_id, payload, ?2, ?3 FROM firings WHERE rowid = ?1",
                        )?
                        .execute((rowid, error, now))?;
                        counters.quarantined_firings.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(delivery_id, error, "queued firing is unreadable; moved to firings_quarantine");
                    }
                }
                changes.delete(conn, *rowid)?;
            }
            Ok(())
        };
        self.core.writer.write_then(job, false, count, after).await
    }
}

#[async_trait]
impl FiringQueue for EmbeddedStore {
    async fn enqueue(&self, firings: &[Firing]) -> StoreResult<()> {
        if firings.is_empty() {
            return Ok(());
        }
        let rows = firings.iter().map(Row::of).collect::<StoreResult<Vec<_>>>()?;
        let cutoff = millis(self.cutoff(self.now()));
        let changes = QueueChanges::default();
        let after = changes.after_commit(&self.core.queue, Vec::new());
        self.core
            .writer
            .write_then(
                move |conn| rows.iter().try_for_each(|row| changes.insert_firing(conn, row, cutoff)),
                true,
                firings.len(),
                after,
            )
            .await
    }

    async fn receive(&self, max: usize) -> StoreResult<Vec<Leased>> {
        self.lease(max, |_| usize::MAX).await
    }

    async fn receive_fair(&self, max: usize, in_flight: &InFlight) -> StoreResult<Vec<Leased>> {
        self.lease(max, |destination| in_flight.room(destination)).await
    }

    async fn next_due_fair(&self, in_flight: &InFlight) -> StoreResult<Option<DateTime<Utc>>> {
        let next = self.index().next_visible(|destination| in_flight.room(destination) == 0);
        next.map(from_millis).transpose()
    }

    async fn ack(&self, leased: &Leased) -> StoreResult<()> {
        let Some(rowid) = self.begin_settle(&leased.receipt, "ack") else {
            return Ok(());
        };
        let changes = QueueChanges::default();
        let after = changes.after_commit(&self.core.queue, vec![rowid]);
        self.core.writer.write_then(move |conn| changes.delete(conn, rowid), false, 1, after).await
    }

    async fn retry(&self, leased: &Leased, next: &Firing) -> StoreResult<()> {
        let next = Row::of(next)?;
        let Some(rowid) = self.begin_settle(&leased.receipt, "retry") else {
            return Ok(());
        };
        let cutoff = millis(self.cutoff(self.now()));
        let changes = QueueChanges::default();
        let after = changes.after_commit(&self.core.queue, vec![rowid]);
        self.core.writer.write_then(move |conn| changes.replace(conn, rowid, &next, cutoff), true, 2, after).await
    }

    async fn depth(&self) -> StoreResult<QueueDepth> {
        let (queued, earliest) = self.index().depth();
        Ok(QueueDepth { queued, earliest_due_at: earliest.map(from_millis).transpose()?, knows_due_times: true })
    }

    async fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.index().next_visible(|_| false).map(from_millis).transpose()
    }

    fn notifier(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(Arc::clone(&self.core.notify))
    }
}
