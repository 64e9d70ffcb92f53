//! `FiringQueue` in the same file as everything else. A row is visible when
//! `max(due_at, lease_until) <= now`; receiving leases it (a fresh token, hidden until
//! `now + lease`); `ack`/`retry` act only while the token still matches, so a consumer
//! whose lease ran out and was taken over cannot delete or replace the new holder's row.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::writer::WriterCounters;
use super::{decode, encode, from_millis, millis, EmbeddedStore};
use crate::domain::firing::Firing;
use crate::ports::{FiringQueue, Leased, QueueDepth, StoreResult};

/// Most firings handed out by one `receive`.
const MAX_RECEIVE: usize = 1_000;

/// Insert a firing unless it is queued already or was delivered (a re-enqueued
/// delivered firing must not fire again).
fn insert_firing(conn: &Connection, delivery_id: &str, due_at: i64, payload: &str, cutoff: i64) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO firings (delivery_id, due_at, lease_until, lease_token, payload) \
         SELECT ?1, ?2, 0, NULL, ?3 \
         WHERE NOT EXISTS (SELECT 1 FROM delivered WHERE delivery_id = ?1 AND created_at >= ?4)",
    )?
    .execute((delivery_id, due_at, payload, cutoff))?;
    Ok(())
}

fn receipt(delivery_id: &str, token: &str) -> String {
    format!("{delivery_id}:{token}")
}

/// `(delivery_id, token)`; tokens never contain `:`, delivery ids might.
fn parse_receipt(receipt: &str) -> Option<(String, String)> {
    receipt.rsplit_once(':').map(|(id, token)| (id.to_string(), token.to_string()))
}

fn note_stale(counters: &WriterCounters, what: &str, receipt: &str) {
    counters.stale_receipts.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(receipt, "{what} ignored: the lease was taken over or the firing is gone");
}

fn receive_due(
    conn: &Connection,
    now: i64,
    lease_until: i64,
    max: usize,
    counters: &WriterCounters,
) -> StoreResult<Vec<Leased>> {
    let due: Vec<(String, String)> = conn
        .prepare_cached(
            "SELECT delivery_id, payload FROM firings WHERE max(due_at, lease_until) <= ?1 \
             ORDER BY max(due_at, lease_until) LIMIT ?2",
        )?
        .query_map((now, i64::try_from(max).unwrap_or(i64::MAX)), |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut lease =
        conn.prepare_cached("UPDATE firings SET lease_until = ?2, lease_token = ?3 WHERE delivery_id = ?1")?;
    let mut leased = Vec::with_capacity(due.len());
    for (delivery_id, payload) in due {
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

#[async_trait]
impl FiringQueue for EmbeddedStore {
    async fn enqueue(&self, firings: &[Firing]) -> StoreResult<()> {
        if firings.is_empty() {
            return Ok(());
        }
        let rows = firings
            .iter()
            .map(|f| Ok((f.delivery_id.clone(), millis(f.due_at), encode(f, "firing")?)))
            .collect::<StoreResult<Vec<_>>>()?;
        let cutoff = millis(self.cutoff(Utc::now()));
        self.core
            .writer
            .write_and_notify(move |conn| {
                rows.iter().try_for_each(|(delivery_id, due_at, payload)| {
                    insert_firing(conn, delivery_id, *due_at, payload, cutoff)
                })
            })
            .await
    }

    async fn receive(&self, max: usize) -> StoreResult<Vec<Leased>> {
        let max = max.min(MAX_RECEIVE);
        if max == 0 {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let lease = chrono::Duration::from_std(self.core.options.lease).unwrap_or(chrono::Duration::MAX);
        let lease_until = millis(now.checked_add_signed(lease).unwrap_or(DateTime::<Utc>::MAX_UTC));
        let counters = Arc::clone(&self.core.counters);
        self.write(move |conn| receive_due(conn, millis(now), lease_until, max, &counters)).await
    }

    async fn ack(&self, leased: &Leased) -> StoreResult<()> {
        let counters = Arc::clone(&self.core.counters);
        let Some((delivery_id, token)) = parse_receipt(&leased.receipt) else {
            note_stale(&counters, "ack", &leased.receipt);
            return Ok(());
        };
        let receipt = leased.receipt.clone();
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM firings WHERE delivery_id = ?1 AND lease_token = ?2")?
                .execute((&delivery_id, &token))?;
            if deleted == 0 {
                note_stale(&counters, "ack", &receipt);
            }
            Ok(())
        })
        .await
    }

    async fn retry(&self, leased: &Leased, next: &Firing) -> StoreResult<()> {
        let counters = Arc::clone(&self.core.counters);
        let Some((delivery_id, token)) = parse_receipt(&leased.receipt) else {
            note_stale(&counters, "retry", &leased.receipt);
            return Ok(());
        };
        let receipt = leased.receipt.clone();
        let payload = encode(next, "firing")?;
        let (next_id, due_at) = (next.delivery_id.clone(), millis(next.due_at));
        let cutoff = millis(self.cutoff(Utc::now()));
        self.core
            .writer
            .write_and_notify(move |conn| {
                let replaced = if next_id == delivery_id {
                    conn.prepare_cached(
                        "UPDATE firings SET payload = ?3, due_at = ?4, lease_until = 0, lease_token = NULL \
                         WHERE delivery_id = ?1 AND lease_token = ?2",
                    )?
                    .execute((&delivery_id, &token, &payload, due_at))?
                } else {
                    // The next message has another identity: swap the rows.
                    let removed = conn
                        .prepare_cached("DELETE FROM firings WHERE delivery_id = ?1 AND lease_token = ?2")?
                        .execute((&delivery_id, &token))?;
                    if removed > 0 {
                        insert_firing(conn, &next_id, due_at, &payload, cutoff)?;
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
