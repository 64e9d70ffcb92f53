//! `CombinedWrites` on the embedded store: touches, queue and log are tables of one
//! SQLite file behind one writer, so ingest's three writes and a delivered firing's
//! log + marker + ack, and a held firing's hold + ack, are each one write job, in one
//! transaction.

use async_trait::async_trait;

use super::control::{held_rows, write_held};
use super::logs::{mark_delivered_and_log, LogRow};
use super::queue::{QueueChanges, Row};
use super::touches::{touch_row, write_seen, write_touches};
use super::{millis, EmbeddedStore};
use crate::domain::firing::Firing;
use crate::domain::log::LogEntry;
use crate::ports::{CombinedWrites, Leased, StoreResult, TouchRecord};

#[async_trait]
impl CombinedWrites for EmbeddedStore {
    async fn record_and_enqueue(
        &self,
        touches: &[TouchRecord],
        firings: &[Firing],
        dedupe_keys: &[String],
    ) -> StoreResult<()> {
        if touches.is_empty() && firings.is_empty() && dedupe_keys.is_empty() {
            return Ok(());
        }
        let rows = touches.len() + firings.len() + dedupe_keys.len();
        let touches = touches.iter().map(|t| touch_row(&t.event)).collect::<StoreResult<Vec<_>>>()?;
        let queued = firings.iter().map(Row::of).collect::<StoreResult<Vec<_>>>()?;
        let keys = dedupe_keys.to_vec();
        let now = self.now();
        let (now_ms, cutoff) = (millis(now), millis(self.cutoff(now)));
        let changes = QueueChanges::default();
        let after = changes.after_commit(&self.core.queue, Vec::new());
        let job = move |conn: &rusqlite::Connection| {
            write_touches(conn, &touches, now_ms)?;
            queued.iter().try_for_each(|row| changes.insert_firing(conn, row, cutoff))?;
            write_seen(conn, &keys, now_ms, cutoff)
        };
        self.core.writer.write_then(job, !firings.is_empty(), rows, after).await
    }

    async fn settle_delivered(&self, leased: &Leased, entry: &LogEntry) -> StoreResult<bool> {
        let row = LogRow::new(entry)?;
        let delivery_id = entry.delivery_id.clone();
        let now = self.now();
        let (now_ms, cutoff) = (millis(now), millis(self.cutoff(now)));
        // A stale lease still gets its delivery logged and marked; only the ack is skipped.
        let rowid = self.begin_settle(&leased.receipt, "ack");
        if rowid.is_none() {
            // Its row may still be queued (under the lease that took it over) with this
            // id about to be marked delivered: no payload kept in memory may skip the
            // lease-time delivered check from now on.
            self.index().forget_payloads();
        }
        let changes = QueueChanges::default();
        let after = changes.after_commit(&self.core.queue, rowid.into_iter().collect());
        let job = move |conn: &rusqlite::Connection| {
            let fresh = mark_delivered_and_log(conn, &row, &delivery_id, now_ms, cutoff)?;
            if let Some(rowid) = rowid {
                changes.delete(conn, rowid)?;
            }
            Ok(fresh)
        };
        self.core.writer.write_then(job, false, 3, after).await
    }

    async fn hold_and_ack(&self, leased: &Leased, firing: &Firing) -> StoreResult<()> {
        let rows = held_rows(std::slice::from_ref(firing))?;
        let rowid = self.begin_settle(&leased.receipt, "ack");
        let changes = QueueChanges::default();
        let after = changes.after_commit(&self.core.queue, rowid.into_iter().collect());
        let job = move |conn: &rusqlite::Connection| {
            write_held(conn, &rows)?;
            if let Some(rowid) = rowid {
                changes.delete(conn, rowid)?;
            }
            Ok(())
        };
        self.core.writer.write_then(job, false, 2, after).await
    }

    fn lease_checks_delivered(&self) -> bool {
        true
    }
}
