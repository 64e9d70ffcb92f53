//! `CombinedWrites` on the embedded store: touches, queue and log are tables of one
//! SQLite file behind one writer, so ingest's three writes and a delivered firing's
//! log + marker + ack are each one write job, in one transaction.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;

use super::logs::{mark_delivered_and_log, LogRow};
use super::queue::{ack_row, insert_firing, note_stale, parse_receipt, Row};
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
        let touches = touches.iter().map(|t| touch_row(&t.event)).collect::<StoreResult<Vec<_>>>()?;
        let queued = firings.iter().map(Row::of).collect::<StoreResult<Vec<_>>>()?;
        let keys = dedupe_keys.to_vec();
        let now = Utc::now();
        let (now_ms, cutoff) = (millis(now), millis(self.cutoff(now)));
        let job = move |conn: &rusqlite::Connection| {
            write_touches(conn, &touches, now_ms)?;
            queued.iter().try_for_each(|row| insert_firing(conn, row, cutoff))?;
            write_seen(conn, &keys, now_ms, cutoff)
        };
        if firings.is_empty() {
            self.core.writer.write(job).await
        } else {
            self.core.writer.write_and_notify(job).await
        }
    }

    async fn settle_delivered(&self, leased: &Leased, entry: &LogEntry) -> StoreResult<bool> {
        let row = LogRow::new(entry)?;
        let delivery_id = entry.delivery_id.clone();
        let receipt = leased.receipt.clone();
        let lease = parse_receipt(&leased.receipt);
        let counters = Arc::clone(&self.core.counters);
        let now = Utc::now();
        let (now_ms, cutoff) = (millis(now), millis(self.cutoff(now)));
        self.write(move |conn| {
            let fresh = mark_delivered_and_log(conn, &row, &delivery_id, now_ms, cutoff)?;
            match &lease {
                Some((queued_id, token)) => ack_row(conn, queued_id, token, &counters, &receipt)?,
                None => note_stale(&counters, "ack", &receipt),
            }
            Ok(fresh)
        })
        .await
    }

    fn lease_checks_delivered(&self) -> bool {
        true
    }
}
