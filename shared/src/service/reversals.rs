//! Reversals: what a rejection of a delivered conversion (or named event) sends to the
//! receivers it was delivered to (docs/DESIGN.md *Reversals*).

use chrono::{DateTime, Utc};

use super::{App, ServiceResult};
use crate::domain::event::{CurrentStatus, Event, Status};
use crate::domain::firing::Firing;
use crate::domain::log::{Cursor, LogColumn, LogEntry, LogFilter, LogOp, LogPredicate, Outcome, MAX_LOG_LIMIT};
use crate::domain::matching::PostbackIndex;
use crate::ports::{LogStore, StoreError, StoreResult};

/// The most delivered entries of one transaction [`delivered_of_transaction`] reads: a
/// transaction's conversion is delivered to a handful of receivers.
pub const MAX_DELIVERED_READ: usize = 1000;

/// The delivered, non-test entries of a transaction, newest first, at most
/// [`MAX_DELIVERED_READ`]: what a rejection's reversals are decided on. Read through the
/// stores' transaction index with an outcome filter (DynamoDB: the logs table's
/// `by_transaction` index), never a scan; the same on every adapter (the contract suite
/// checks it on each).
pub async fn delivered_of_transaction(logs: &dyn LogStore, transaction_id: &str) -> StoreResult<Vec<LogEntry>> {
    let not_test = LogPredicate::new(LogColumn::Test, LogOp::Is, "false")
        .map_err(|e| StoreError::Corrupt(format!("delivered filter: {e}")))?;
    let mut filter = LogFilter {
        transaction_id: Some(transaction_id.to_string()),
        outcome: Some(Outcome::Delivered),
        limit: MAX_LOG_LIMIT,
        predicates: vec![not_test],
        ..LogFilter::default()
    };
    let mut entries = Vec::new();
    loop {
        let page = logs.query(&filter).await?;
        entries.extend(page.items);
        if entries.len() >= MAX_DELIVERED_READ {
            entries.truncate(MAX_DELIVERED_READ);
            return Ok(entries);
        }
        match page.next_cursor {
            Some(next) => {
                filter.cursor =
                    Some(Cursor::decode(&next).map_err(|e| StoreError::Corrupt(format!("listing cursor: {e}")))?)
            }
            None => return Ok(entries),
        }
    }
}

impl App {
    /// The reversal firings a rejection of `event`'s conversion (or named event) calls
    /// for: one per delivered firing of it whose postback has a reversal request.
    pub(super) async fn reversals_of(
        &self,
        index: &PostbackIndex,
        event: &Event,
        now: DateTime<Utc>,
    ) -> ServiceResult<Vec<Firing>> {
        let key = event.status_key();
        let rejection = CurrentStatus {
            status: Status::Rejected,
            rejection_reason: event.rejection_reason.clone(),
            updated_at: event.timestamp,
        };
        let mut reversals = Vec::new();
        for entry in delivered_of_transaction(&*self.ports.logs, &event.transaction_id).await? {
            let Some(original) = entry.firing.as_ref() else { continue };
            if original.event.kind != event.kind || original.event.status_key() != key {
                continue;
            }
            let Some(postback) = index.get(&entry.postback_id).filter(|p| p.reversal.is_some()) else { continue };
            if let Some(reversal) = Firing::reversal_for(&entry, &rejection, now) {
                reversals.push(reversal.bound_to(&postback));
            }
        }
        Ok(reversals)
    }
}
