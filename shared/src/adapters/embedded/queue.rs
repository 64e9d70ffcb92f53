//! `FiringQueue` in the same file as everything else. A row is visible when
//! `max(due_at, lease_until) <= now`; receiving leases it (a fresh token, hidden until
//! `now + lease`); `ack`/`retry` act only while the token still matches, so a consumer
//! whose lease ran out and was taken over cannot delete or replace the new holder's row.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension};

use super::writer::WriterCounters;
use super::{decode, encode, from_millis, millis, EmbeddedStore};
use crate::domain::firing::Firing;
use crate::ports::{FiringQueue, InFlight, Leased, QueueDepth, StoreResult};

/// Most firings handed out by one `receive`.
const MAX_RECEIVE: usize = 1_000;

/// Insert a firing unless it is queued already or was delivered (a re-enqueued
/// delivered firing must not fire again).
pub(super) fn insert_firing(conn: &Connection, row: &Row, cutoff: i64) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO firings (delivery_id, due_at, lease_until, lease_token, payload, destination) \
         SELECT ?1, ?2, 0, NULL, ?3, ?5 \
         WHERE NOT EXISTS (SELECT 1 FROM delivered WHERE delivery_id = ?1 AND created_at >= ?4)",
    )?
    .execute((&row.delivery_id, row.due_at, &row.payload, cutoff, &row.destination))?;
    Ok(())
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

fn receipt(delivery_id: &str, token: &str) -> String {
    format!("{delivery_id}:{token}")
}

/// `(delivery_id, token)`; tokens never contain `:`, delivery ids might.
pub(super) fn parse_receipt(receipt: &str) -> Option<(String, String)> {
    receipt.rsplit_once(':').map(|(id, token)| (id.to_string(), token.to_string()))
}

/// Delete the leased row, if the lease is still this receipt's.
pub(super) fn ack_row(
    conn: &Connection,
    delivery_id: &str,
    token: &str,
    counters: &WriterCounters,
    receipt: &str,
) -> StoreResult<()> {
    let deleted = conn
        .prepare_cached("DELETE FROM firings WHERE delivery_id = ?1 AND lease_token = ?2")?
        .execute((delivery_id, token))?;
    if deleted == 0 {
        note_stale(counters, "ack", receipt);
    }
    Ok(())
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

fn receive_due(
    conn: &Connection,
    window: LeaseWindow,
    max: usize,
    counters: &WriterCounters,
) -> StoreResult<Vec<Leased>> {
    let now = window.now;
    let due: Vec<(String, String)> = conn
        .prepare_cached(
            "SELECT delivery_id, payload FROM firings WHERE max(due_at, lease_until) <= ?1 \
             ORDER BY max(due_at, lease_until) LIMIT ?2",
        )?
        .query_map((now, i64::try_from(max).unwrap_or(i64::MAX)), |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    lease_rows(conn, due, window, counters)
}

/// The due rows `receive_fair` hands out, earliest visible first: none of a full
/// destination (passed over in SQL, on the covering visibility index), and no more of
/// another than it has room for (counted here).
fn receive_due_fair(
    conn: &Connection,
    window: LeaseWindow,
    max: usize,
    in_flight: &InFlight,
    counters: &WriterCounters,
) -> StoreResult<Vec<Leased>> {
    let now = window.now;
    let mut excluded: Vec<String> = in_flight.full().map(str::to_string).collect();
    let mut chosen: Vec<String> = Vec::with_capacity(max);
    let mut chosen_ids: HashSet<String> = HashSet::with_capacity(max);
    let mut taken: HashMap<String, usize> = HashMap::new();
    let mut select = conn.prepare_cached(
        "SELECT delivery_id, destination FROM firings WHERE max(due_at, lease_until) <= ?1 \
         AND (destination IS NULL OR destination NOT IN (SELECT value FROM json_each(?2))) \
         ORDER BY max(due_at, lease_until)",
    )?;
    // A destination that runs out of room during the scan is added to the excluded ones
    // and the scan starts again (from the top: the rows chosen so far are not leased yet
    // and are passed over by id), so a long backlog of one destination is skipped by the
    // index instead of being read row by row on every receive.
    'scan: loop {
        let excluded_json = json_list(&excluded)?;
        let mut rows = select.query((now, &excluded_json))?;
        while chosen.len() < max {
            let Some(row) = rows.next()? else { break 'scan };
            let delivery_id: String = row.get(0)?;
            if chosen_ids.contains(&delivery_id) {
                continue;
            }
            if let Some(destination) = row.get::<_, Option<String>>(1)? {
                let room = in_flight.room(&destination);
                let count = taken.entry(destination.clone()).or_default();
                if *count >= room {
                    excluded.push(destination);
                    continue 'scan;
                }
                *count += 1;
            }
            chosen_ids.insert(delivery_id.clone());
            chosen.push(delivery_id);
        }
        break;
    }
    drop(select);
    let mut payload = conn.prepare_cached("SELECT payload FROM firings WHERE delivery_id = ?1")?;
    let due = chosen
        .into_iter()
        .map(|id| {
            let text: String = payload.query_row([&id], |row| row.get(0))?;
            Ok((id, text))
        })
        .collect::<StoreResult<Vec<_>>>()?;
    lease_rows(conn, due, window, counters)
}

/// The full destinations as a JSON array, for `json_each`.
fn full_json(in_flight: &InFlight) -> StoreResult<String> {
    json_list(&in_flight.full().collect::<Vec<_>>())
}

/// Destinations as a JSON array, for `json_each`.
fn json_list(destinations: &[impl AsRef<str>]) -> StoreResult<String> {
    let names: Vec<&str> = destinations.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&names).map_err(|e| crate::ports::StoreError::Corrupt(format!("destinations: {e}")))
}

/// Lease these `(delivery_id, payload)` rows; an unreadable one is quarantined, and one
/// whose delivery id is marked delivered (a crash between its delivery and its ack, in a
/// version that made them two commits) is dropped: so a leased firing is never a
/// delivered one (`CombinedWrites::lease_checks_delivered`).
fn lease_rows(
    conn: &Connection,
    due: Vec<(String, String)>,
    window: LeaseWindow,
    counters: &WriterCounters,
) -> StoreResult<Vec<Leased>> {
    let (now, lease_until) = (window.now, window.until);
    let mut lease =
        conn.prepare_cached("UPDATE firings SET lease_until = ?2, lease_token = ?3 WHERE delivery_id = ?1")?;
    let mut delivered = conn.prepare_cached("SELECT 1 FROM delivered WHERE delivery_id = ?1 AND created_at >= ?2")?;
    let mut leased = Vec::with_capacity(due.len());
    for (delivery_id, payload) in due {
        if delivered.exists((&delivery_id, window.delivered_cutoff))? {
            conn.prepare_cached("DELETE FROM firings WHERE delivery_id = ?1")?.execute([&delivery_id])?;
            counters.delivered_at_lease.fetch_add(1, Ordering::Relaxed);
            tracing::info!(delivery_id, "already delivered; dropping its queued firing");
            continue;
        }
        let firing: Firing = match decode(&payload, "firing") {
            Ok(firing) => firing,
            Err(e) => {
                // One unreadable row must not block the queue: move it aside, loudly.
                conn.prepare_cached(
                    "INSERT INTO firings_quarantine (delivery_id, payload, error, quarantined_at) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute((&delivery_id, &payload, e.to_string(), now))?;
                conn.prepare_cached("DELETE FROM firings WHERE delivery_id = ?1")?.execute([&delivery_id])?;
                counters.quarantined_firings.fetch_add(1, Ordering::Relaxed);
                tracing::error!(delivery_id, error = %e, "queued firing is unreadable; moved to firings_quarantine");
                continue;
            }
        };
        let token = uuid::Uuid::new_v4().simple().to_string();
        lease.execute((&delivery_id, lease_until, &token))?;
        leased.push(Leased { firing, receipt: receipt(&delivery_id, &token) });
    }
    Ok(leased)
}

impl EmbeddedStore {
    /// A lease taken now.
    fn lease_window(&self) -> LeaseWindow {
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.core.options.lease).unwrap_or(chrono::Duration::MAX);
        LeaseWindow {
            now: millis(now),
            until: millis(now.checked_add_signed(lease).unwrap_or(DateTime::<Utc>::MAX_UTC)),
            delivered_cutoff: millis(self.cutoff(now)),
        }
    }
}

#[async_trait]
impl FiringQueue for EmbeddedStore {
    async fn enqueue(&self, firings: &[Firing]) -> StoreResult<()> {
        if firings.is_empty() {
            return Ok(());
        }
        let rows = firings.iter().map(Row::of).collect::<StoreResult<Vec<_>>>()?;
        let cutoff = millis(self.cutoff(Utc::now()));
        self.core
            .writer
            .write_and_notify(move |conn| rows.iter().try_for_each(|row| insert_firing(conn, row, cutoff)))
            .await
    }

    async fn receive(&self, max: usize) -> StoreResult<Vec<Leased>> {
        let max = max.min(MAX_RECEIVE);
        if max == 0 {
            return Ok(Vec::new());
        }
        let window = self.lease_window();
        let counters = Arc::clone(&self.core.counters);
        self.write(move |conn| receive_due(conn, window, max, &counters)).await
    }

    async fn receive_fair(&self, max: usize, in_flight: &InFlight) -> StoreResult<Vec<Leased>> {
        let max = max.min(MAX_RECEIVE);
        if max == 0 {
            return Ok(Vec::new());
        }
        let window = self.lease_window();
        let counters = Arc::clone(&self.core.counters);
        let in_flight = in_flight.clone();
        self.write(move |conn| receive_due_fair(conn, window, max, &in_flight, &counters)).await
    }

    async fn next_due_fair(&self, in_flight: &InFlight) -> StoreResult<Option<DateTime<Utc>>> {
        let full = full_json(in_flight)?;
        self.read(move |conn| {
            let earliest: Option<i64> = conn
                .prepare_cached(
                    "SELECT max(due_at, lease_until) FROM firings \
                     WHERE destination IS NULL OR destination NOT IN (SELECT value FROM json_each(?1)) \
                     ORDER BY max(due_at, lease_until) LIMIT 1",
                )?
                .query_row([&full], |row| row.get(0))
                .optional()?;
            earliest.map(from_millis).transpose()
        })
        .await
    }

    async fn ack(&self, leased: &Leased) -> StoreResult<()> {
        let counters = Arc::clone(&self.core.counters);
        let Some((delivery_id, token)) = parse_receipt(&leased.receipt) else {
            note_stale(&counters, "ack", &leased.receipt);
            return Ok(());
        };
        let receipt = leased.receipt.clone();
        self.write(move |conn| ack_row(conn, &delivery_id, &token, &counters, &receipt)).await
    }

    async fn retry(&self, leased: &Leased, next: &Firing) -> StoreResult<()> {
        let counters = Arc::clone(&self.core.counters);
        let Some((delivery_id, token)) = parse_receipt(&leased.receipt) else {
            note_stale(&counters, "retry", &leased.receipt);
            return Ok(());
        };
        let receipt = leased.receipt.clone();
        let next = Row::of(next)?;
        let cutoff = millis(self.cutoff(Utc::now()));
        self.core
            .writer
            .write_and_notify(move |conn| {
                let replaced = if next.delivery_id == delivery_id {
                    conn.prepare_cached(
                        "UPDATE firings SET payload = ?3, due_at = ?4, destination = ?5, lease_until = 0, \
                         lease_token = NULL WHERE delivery_id = ?1 AND lease_token = ?2",
                    )?
                    .execute((
                        &delivery_id,
                        &token,
                        &next.payload,
                        next.due_at,
                        &next.destination,
                    ))?
                } else {
                    // The next message has another identity: swap the rows.
                    let removed = conn
                        .prepare_cached("DELETE FROM firings WHERE delivery_id = ?1 AND lease_token = ?2")?
                        .execute((&delivery_id, &token))?;
                    if removed > 0 {
                        insert_firing(conn, &next, cutoff)?;
                    }
                    removed
                };
                if replaced == 0 {
                    note_stale(&counters, "retry", &receipt);
                }
                Ok(())
            })
            .await
    }

    async fn depth(&self) -> StoreResult<QueueDepth> {
        self.read(|conn| {
            let (queued, earliest): (i64, Option<i64>) = conn
                .prepare_cached("SELECT count(*), min(due_at) FROM firings")?
                .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(QueueDepth {
                queued: u64::try_from(queued).unwrap_or_default(),
                earliest_due_at: earliest.map(from_millis).transpose()?,
                knows_due_times: true,
            })
        })
        .await
    }

    async fn next_due(&self) -> StoreResult<Option<DateTime<Utc>>> {
        self.read(|conn| {
            let earliest: Option<i64> = conn
                .prepare_cached("SELECT min(max(due_at, lease_until)) FROM firings")?
                .query_row([], |row| row.get(0))?;
            earliest.map(from_millis).transpose()
        })
        .await
    }

    fn notifier(&self) -> Option<Arc<tokio::sync::Notify>> {
        Some(Arc::clone(&self.core.notify))
    }
}
