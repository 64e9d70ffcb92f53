//! Bulk replay (`POST /logs/replay`): queue each matching failed firing once more.
//!
//! The selection (`failed_firings`, over the log store's `query` and `replay_states`): each delivery id's
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

use std::collections::HashSet;

use serde::Serialize;

use super::{App, ServiceResult};
use crate::domain::access::{AuditAction, Caller, TargetKind};
use crate::domain::firing::Firing;
use crate::domain::log::{Cursor, LogColumn, LogEntry, LogFilter, LogOp, LogPredicate, Outcome, MAX_LOG_LIMIT};
use crate::ports::{LogStore, StoreError, StoreResult};

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
        self.replay_by(&Caller::bootstrap_admin(), request).await
    }

    /// As `replay`; a replay that is not a dry run is recorded (`logs.replay`; target
    /// the postback when the filter names one, else the log) before the answer.
    pub async fn replay_by(&self, caller: &Caller, request: &ReplayRequest) -> ServiceResult<ReplayOutput> {
        let output = self.replay_selected(request).await?;
        if !output.dry_run {
            let postback = request.filter.postback_id.clone();
            let (kind, id) = match postback {
                Some(id) => (TargetKind::Postback, Some(id)),
                None => (TargetKind::Log, None),
            };
            let summary = format!("replayed {} of {} failed firings", output.replayed, output.matched);
            let record = self.audit_record(caller, AuditAction::LogsReplay, kind, id.as_deref(), summary);
            self.append_audit(record).await?;
        }
        Ok(output)
    }

    async fn replay_selected(&self, request: &ReplayRequest) -> ServiceResult<ReplayOutput> {
        let selected = failed_firings(self.ports.logs.as_ref(), &request.filter, request.max).await?;
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

/// The failed firings to replay (`POST /logs/replay`): non-test entries with outcome
/// `failed` that match `filter`, newest first, at most `limit`, each one still its firing's latest word: not
/// delivered since, not replayed already (`mark_replayed`), and only the newest
/// failed entry of a delivery id. `filter.cursor` resumes a previous selection;
/// `filter.outcome` and `filter.limit` are ignored. Reads a bounded number of listing
/// pages (`REPLAY_READ_PAGES`), so fewer than `limit` with a `next_cursor` does not
/// mean the end.
///
/// A service function over the port's `query` and `replay_states`, the same on every
/// adapter (the contract suite checks it on each).
pub async fn failed_firings(logs: &dyn LogStore, filter: &LogFilter, limit: usize) -> StoreResult<FailedFirings> {
    if limit == 0 {
        return Ok(FailedFirings { entries: vec![], next_cursor: filter.cursor.clone() });
    }
    let mut listing = filter.clone();
    listing.outcome = Some(Outcome::Failed);
    listing.limit = MAX_LOG_LIMIT;
    let not_test = LogPredicate::new(LogColumn::Test, LogOp::Is, "false")
        .map_err(|e| StoreError::Corrupt(format!("replay filter: {e}")))?;
    listing.predicates.push(not_test);
    let mut chosen: Vec<LogEntry> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for _ in 0..REPLAY_READ_PAGES {
        let page = logs.query(&listing).await?;
        let mut ids: Vec<String> =
            page.items.iter().map(|e| e.delivery_id.clone()).filter(|id| !seen.contains(id)).collect();
        ids.sort_unstable();
        ids.dedup();
        let states = logs.replay_states(&ids).await?;
        let mut full = false;
        for entry in page.items {
            // Newest first: the first entry of a delivery id is its newest failed one.
            if !seen.insert(entry.delivery_id.clone()) {
                continue;
            }
            if states.get(&entry.delivery_id).is_some_and(|state| state.supersedes(&entry)) {
                continue;
            }
            if full {
                // One more beyond the limit: there is a next selection.
                let next_cursor = chosen.last().map(Cursor::after);
                return Ok(FailedFirings { entries: chosen, next_cursor });
            }
            chosen.push(entry);
            full = chosen.len() >= limit;
        }
        if full {
            // An exact fit on the last page has no next selection; otherwise the rest
            // of the range is unknown yet.
            let next_cursor = page.next_cursor.and_then(|_| chosen.last().map(Cursor::after));
            return Ok(FailedFirings { entries: chosen, next_cursor });
        }
        match page.next_cursor {
            Some(next) => {
                listing.cursor =
                    Some(Cursor::decode(&next).map_err(|e| StoreError::Corrupt(format!("listing cursor: {e}")))?)
            }
            None => return Ok(FailedFirings { entries: chosen, next_cursor: None }),
        }
    }
    // Read bound reached: resume where the listing stopped.
    Ok(FailedFirings { entries: chosen, next_cursor: listing.cursor })
}

/// Listing pages (`LogStore::query` calls, up to `MAX_LOG_LIMIT` entries each) one
/// replay selection reads at most: 40 × 500 = 20,000 failed entries considered, enough
/// for 10,000 firings even when half of them were replayed or delivered since.
pub const REPLAY_READ_PAGES: usize = 40;

/// One selection of `failed_firings`.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedFirings {
    /// Newest first.
    pub entries: Vec<LogEntry>,
    /// Where the next selection resumes; `None` when the range is done.
    pub next_cursor: Option<Cursor>,
}
