//! Bulk replay (`POST /logs/replay`): queue each matching failed firing once more.
//!
//! The selection is the log store's (`LogStore::failed_firings`): each delivery id's
//! newest failed, non-test entry that was neither delivered nor replayed since. Each
//! becomes a firing with the same `delivery_id` (a receiver that got it after all can
//! deduplicate), `replay_of` = that entry, a fresh chain of attempts from 1 (the old
//! chain used its attempts up; admins expect a replay to get the full retry policy
//! again), due now, with the status re-check on. The firings go through the queue like
//! any other, so the dispatch path applies the postback's rate limit, its breaker and
//! the conversion's current status (skipped with the reason).
//!
//! Each batch is queued first and then marked replayed (`LogStore::mark_replayed`), so
//! a second replay, even before the first one's attempts ran, does not queue them again
//! (the SQS queue, unlike the embedded one, would take the same delivery id twice). A
//! crash between the two can queue a firing twice; the dispatcher's delivered marker
//! then sends it at most once more after a delivery. A store error midway answers 503
//! with the batches before it queued and marked: calling again carries on with the rest.

use serde::Serialize;

use super::{App, ServiceResult};
use crate::domain::firing::Firing;
use crate::domain::log::{LogEntry, LogFilter};

/// Most firings one call replays (the spec's 10,000).
pub const MAX_REPLAY: usize = 10_000;

/// Firings queued (then marked) per step: the SQS adapter sends them 10 a call, several
/// calls at once.
const REPLAY_BATCH: usize = 1_000;

/// `POST /logs/replay`, parsed (`crate::entry::http::parse::replay`).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayRequest {
    /// The `GET /logs` filters, `from` set, and the cursor of a previous call if any.
    pub filter: LogFilter,
    pub dry_run: bool,
    /// At most this many firings (`MAX_REPLAY` from the API).
    pub max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayOutput {
    /// Failed firings this call selected.
    pub matched: usize,
    /// Of those, the ones queued again (0 in a dry run; entries logged without their
    /// firing, from before firings were kept, cannot be replayed).
    pub replayed: usize,
    pub dry_run: bool,
    /// Where the next call resumes (`cursor`); `null` when the range is done.
    pub next_cursor: Option<String>,
}

impl App {
    pub async fn replay(&self, request: &ReplayRequest) -> ServiceResult<ReplayOutput> {
        let selected = self.ports.logs.failed_firings(&request.filter, request.max).await?;
        let matched = selected.entries.len();
        let next_cursor = selected.next_cursor.map(|c| c.encode());
        if request.dry_run {
            return Ok(ReplayOutput { matched, replayed: 0, dry_run: true, next_cursor });
        }
        let now = self.ports.clock.now();
        // Each replay goes to its postback's destination as it is now (its fair-queue
        // key); one whose postback is not in the index keeps the logged one.
        let index = self.catalog.index().await?;
        let replays: Vec<(Firing, &LogEntry)> = selected
            .entries
            .iter()
            .filter_map(|entry| {
                let source = entry.firing.clone()?;
                let mut firing = Firing {
                    attempt: 1,
                    due_at: now,
                    queued_at: now,
                    check_status: true,
                    replay_of: Some(entry.id.clone()),
                    ..source
                };
                if let Some(postback) = index.get(&firing.postback_id) {
                    firing.destination = postback.destination(&firing.macro_context(&postback.postback));
                }
                Some((firing, entry))
            })
            .collect();
        let mut replayed = 0;
        for batch in replays.chunks(REPLAY_BATCH) {
            let firings: Vec<Firing> = batch.iter().map(|(f, _)| f.clone()).collect();
            let entries: Vec<LogEntry> = batch.iter().map(|(_, e)| (*e).clone()).collect();
            self.ports.queue.enqueue(&firings).await?;
            self.ports.logs.mark_replayed(&entries).await?;
            replayed += batch.len();
        }
        tracing::info!(matched, replayed, "replay queued");
        Ok(ReplayOutput { matched, replayed, dry_run: false, next_cursor })
    }
}
