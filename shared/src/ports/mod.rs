//! The ports: what the services need from storage, the queue and the network. Each has
//! an embedded adapter (SQLite, for the local server) and an AWS adapter (DynamoDB, SQS,
//! EventBridge Scheduler); `crate::testing` holds the one contract suite both must pass.
//! The clock and the retry jitter are ports too (`time`).

use std::collections::HashSet;

use async_trait::async_trait;

use crate::domain::access::{AuditFilter, AuditPage, AuditRecord, ManagedKey};
use crate::domain::breaker::Breaker;
use crate::domain::delivery::{OutboundRequest, OutboundResponse, SendFailure};
use crate::domain::event::{CurrentStatus, Event, EventType, StatusKey};
use crate::domain::firing::Firing;
use crate::domain::log::{LogEntry, LogFilter, LogPage};
use crate::domain::postback::Postback;

mod time;
pub use time::{Clock, Jitter};

/// A dependency failed (disk, DynamoDB throttling, SQS unreachable). Maps to 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A write lost a race it must not silently win (e.g. create with an existing id).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Stored data could not be read back (corrupt or from an incompatible version).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Postbacks. Every write carries its audit record, written in the same atomic write
/// (one transaction; on DynamoDB the same `TransactWriteItems`): never a change without
/// its record, nor a record without its change.
#[async_trait]
pub trait PostbackStore: Send + Sync {
    /// Insert a new postback and its audit record; `Conflict` (nothing written) if the
    /// id exists.
    async fn create(&self, postback: &Postback, audit: &AuditRecord) -> StoreResult<()>;
    async fn get(&self, id: &str) -> StoreResult<Option<Postback>>;
    /// Replace an existing postback whose stored version is `postback.version - 1`, and
    /// keep the stored one as a saved version, with the audit record, in one atomic write.
    /// `Ok(false)` if there is none with that id; `Conflict` (nothing written) if the
    /// stored version is another (a concurrent replace won).
    async fn replace(&self, postback: &Postback, audit: &AuditRecord) -> StoreResult<bool>;
    /// Delete the postback and its saved versions, and write the audit record.
    /// `Ok(false)` (nothing written) if there was none.
    async fn delete(&self, id: &str, audit: &AuditRecord) -> StoreResult<bool>;
    /// Every version of a postback, newest first: the current one, then the saved ones
    /// it replaced. `None` if there is no such postback (never created, or deleted).
    async fn versions(&self, id: &str) -> StoreResult<Option<Vec<Postback>>>;
    /// All postbacks, or those of one type; ordered by id.
    async fn list(&self, kind: Option<EventType>) -> StoreResult<Vec<Postback>>;
    /// What changed since `stamp`. The store's stamp is 0 before any write and goes up
    /// by one with every create, replace and delete, in the same atomic write; a write
    /// that fails (conflict, not found) changes nothing. This is how a function's cached
    /// postback index learns other functions' writes (`service::Catalog`): one cheap,
    /// strongly consistent read when nothing changed.
    async fn changes_since(&self, stamp: u64) -> StoreResult<PostbackChanges>;
    /// Every postback (ordered by id) with the stamp it reflects: every write stamped up
    /// to `stamp` is in it, whatever the store's indexes lag (DynamoDB's `by_type`
    /// index is eventually consistent: the adapter reads the recent writes' postbacks
    /// with consistent reads and patches them in).
    async fn snapshot(&self) -> StoreResult<PostbackSnapshot>;
}

/// See `PostbackStore::changes_since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostbackChanges {
    /// The store's stamp now.
    pub stamp: u64,
    /// The ids of the postbacks written (created, replaced or deleted) after the stamp
    /// asked about, up to `stamp`. `None`: the store cannot tell them all (it forgot
    /// old changes, there are too many to read, or the stamp asked about is ahead of the
    /// store's): take a new `snapshot`.
    pub ids: Option<std::collections::BTreeSet<String>>,
}

/// See `PostbackStore::snapshot`.
#[derive(Debug, Clone, PartialEq)]
pub struct PostbackSnapshot {
    pub stamp: u64,
    pub postbacks: Vec<Postback>,
}

/// Managed keys (stored as hashes) and the audit trail. The trail is append-only: no
/// method changes or deletes a record (retention expiry is the adapters' own: TTL on
/// DynamoDB, a purge on the embedded store).
#[async_trait]
pub trait AccessStore: Send + Sync {
    /// Store a new key and its `key.create` record in one atomic write; `Conflict`
    /// (nothing written) if the id or the hash exists.
    async fn create_key(&self, key: &ManagedKey, audit: &AuditRecord) -> StoreResult<()>;
    /// The key with this hash (`domain::access::hash_key`), if any (revoked keys are gone).
    async fn key_by_hash(&self, hash: &str) -> StoreResult<Option<ManagedKey>>;
    /// Every key, oldest first.
    async fn list_keys(&self) -> StoreResult<Vec<ManagedKey>>;
    /// Remove a key and write its `key.revoke` record in one atomic write. `Ok(false)`
    /// (nothing written) if there is none with this id.
    async fn revoke_key(&self, id: &str, audit: &AuditRecord) -> StoreResult<bool>;
    /// Set a key's `last_used_at` to `minute` if it is later than the stored one. An
    /// unknown id changes nothing.
    async fn touch_key(&self, id: &str, minute: chrono::DateTime<chrono::Utc>) -> StoreResult<()>;
    /// Add a record of a change that has no store write of its own (a secret read, a
    /// test, a resend, a replay, a resume).
    async fn append_audit(&self, record: &AuditRecord) -> StoreResult<()>;
    /// Newest first (by `at`, then id), filtered, one page.
    async fn query_audit(&self, filter: &AuditFilter) -> StoreResult<AuditPage>;
}

/// A touch to record: a click/impression (stored whole, for enrichment) or a
/// conversion/event (its current status).
#[derive(Debug, Clone, PartialEq)]
pub struct TouchRecord {
    pub event: Event,
}

#[async_trait]
pub trait TouchStore: Send + Sync {
    /// The latest stored click of a transaction (unexpired).
    async fn get_click(&self, transaction_id: &str) -> StoreResult<Option<Event>>;
    /// The latest stored clicks of many transactions at once (ingest of a batch).
    /// Adapters override this when they can read in one round trip.
    async fn get_clicks(&self, transaction_ids: &[String]) -> StoreResult<std::collections::HashMap<String, Event>> {
        let mut clicks = std::collections::HashMap::new();
        for id in transaction_ids {
            if let Some(click) = self.get_click(id).await? {
                clicks.insert(id.clone(), click);
            }
        }
        Ok(clicks)
    }
    /// The current status of a conversion or named event of a transaction.
    async fn get_status(&self, transaction_id: &str, key: &StatusKey) -> StoreResult<Option<CurrentStatus>>;
    /// Store touches: clicks and impressions whole (the latest per transaction wins);
    /// conversions and events as their current status (the latest report wins).
    /// Idempotent: writing the same records again changes nothing visible.
    async fn record(&self, touches: &[TouchRecord]) -> StoreResult<()>;
    /// Which of these idempotency keys were already marked seen.
    async fn seen(&self, dedupe_keys: &[String]) -> StoreResult<HashSet<String>>;
    /// Mark keys seen (after the event's firings are queued). Marking a key twice is fine.
    async fn mark_seen(&self, dedupe_keys: &[String]) -> StoreResult<()>;
    /// `record` then `mark_seen`, for events that queued no firings (nothing has to be
    /// ordered between the two). Adapters that can do both in one write override this.
    async fn record_and_mark_seen(&self, touches: &[TouchRecord], dedupe_keys: &[String]) -> StoreResult<()> {
        self.record(touches).await?;
        self.mark_seen(dedupe_keys).await
    }
}

#[async_trait]
pub trait LogStore: Send + Sync {
    async fn append(&self, entries: &[LogEntry]) -> StoreResult<()>;
    /// Append the entry of a delivered attempt and mark its delivery id delivered, in one
    /// atomic write. `Ok(false)` (and nothing written) if it was already delivered.
    async fn record_delivered(&self, entry: &LogEntry) -> StoreResult<bool>;
    /// The id this store wants the delivered attempt's entry of `delivery_id` to have, if
    /// it cares: the dispatcher gives the entry this id before `record_delivered`. The
    /// DynamoDB store derives it from the delivery id so that the entry is its own
    /// delivered marker (one conditional put instead of a transaction); other stores keep
    /// the id the service minted (`None`). `record_delivered` accepts any id either way.
    fn delivered_entry_id(&self, delivery_id: &str) -> Option<String> {
        let _ = delivery_id;
        None
    }
    async fn is_delivered(&self, delivery_id: &str) -> StoreResult<bool>;
    async fn get(&self, id: &str) -> StoreResult<Option<LogEntry>>;
    /// Newest first, filtered, paginated by the opaque cursor.
    async fn query(&self, filter: &LogFilter) -> StoreResult<LogPage>;
    /// The counts of a postback's non-test entries in each of these hours (UTC hour
    /// starts, `domain::stats::hour_of` of `fired_at`); hours with none may be absent.
    async fn hourly_stats(
        &self,
        postback_id: &str,
        hours: &[chrono::DateTime<chrono::Utc>],
    ) -> StoreResult<std::collections::HashMap<chrono::DateTime<chrono::Utc>, crate::domain::stats::HourCounts>>;
    /// What a bulk replay must know of these delivery ids beyond their entries: whether
    /// each was delivered, and the newest of its entries already replayed. Ids with
    /// neither may be absent from the map.
    async fn replay_states(
        &self,
        delivery_ids: &[String],
    ) -> StoreResult<std::collections::HashMap<String, ReplayState>>;
    /// Record that these entries (as `service::replay::failed_firings` returned them)
    /// were replayed, their firings queued again: for each delivery id the newest of them
    /// becomes its mark, and that entry and every older entry of the id are no longer
    /// failed firings to replay.
    /// (The embedded and memory stores never move a mark back; DynamoDB writes it
    /// unconditionally, which is the same for entries newer than the mark: all a
    /// selection returns.)
    async fn mark_replayed(&self, entries: &[LogEntry]) -> StoreResult<()>;
}

/// See `LogStore::replay_states`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplayState {
    /// A delivered marker is present.
    pub delivered: bool,
    /// The position (`fired_at`, id) of the newest entry of this delivery id replayed.
    pub replayed: Option<crate::domain::log::Cursor>,
}

impl ReplayState {
    /// Whether `entry` (of this delivery id) is no longer a failed firing to replay.
    pub fn supersedes(&self, entry: &LogEntry) -> bool {
        self.delivered
            || self
                .replayed
                .as_ref()
                .is_some_and(|r| (entry.fired_at, entry.id.as_str()) <= (r.fired_at, r.last_id.as_str()))
    }
}

/// A firing handed out by the queue, with what is needed to acknowledge it.
#[derive(Debug, Clone, PartialEq)]
pub struct Leased {
    pub firing: Firing,
    /// Adapter-specific handle (SQLite row lease token, SQS receipt handle).
    pub receipt: String,
}

/// How much work is queued (`GET /metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueDepth {
    /// Firings queued: due, leased (in flight) or waiting for their due time. On SQS the
    /// approximate visible + delayed + in-flight counts; firings parked in EventBridge
    /// Scheduler (due more than 15 min ahead) are not in it.
    pub queued: u64,
    /// The earliest due time of any queued firing, `None` if the queue is empty or the
    /// adapter cannot tell (SQS: only CloudWatch knows the oldest message's age).
    pub earliest_due_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether `earliest_due_at` is known (the local queues) or not (SQS).
    pub knows_due_times: bool,
}

/// The requests a dispatcher has in flight per destination, and the most it may have at
/// once to one destination (`DESTINATION_CONCURRENCY`): what `receive_fair` respects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    pub per_destination: usize,
    pub by_destination: std::collections::HashMap<String, usize>,
}

impl InFlight {
    pub fn new(per_destination: usize) -> Self {
        Self { per_destination, by_destination: Default::default() }
    }

    /// How many more firings `destination` may take now.
    pub fn room(&self, destination: &str) -> usize {
        self.per_destination.saturating_sub(self.by_destination.get(destination).copied().unwrap_or(0))
    }

    /// The destinations with no room left.
    pub fn full(&self) -> impl Iterator<Item = &str> {
        self.by_destination.iter().filter(|(_, n)| **n >= self.per_destination).map(|(d, _)| d.as_str())
    }

    /// One more request in flight to `destination`.
    pub fn start(&mut self, destination: &str) {
        *self.by_destination.entry(destination.to_string()).or_default() += 1;
    }

    /// One request to `destination` finished.
    pub fn finish(&mut self, destination: &str) {
        if let Some(n) = self.by_destination.get_mut(destination) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.by_destination.remove(destination);
            }
        }
    }
}

#[async_trait]
pub trait FiringQueue: Send + Sync {
    /// Durably queue firings to come due at their `due_at` (past or now: at once).
    /// When this returns `Ok`, the firings survive a crash.
    ///
    /// A delivery id already queued: the embedded queue (and the memory queue in its
    /// mode) keeps the one row it has, even while that row is leased, so the lease's
    /// `ack` then removes the only copy; SQS adds a second message. Which is why holding
    /// a firing is one transaction on the embedded store (`CombinedWrites::hold_and_ack`).
    async fn enqueue(&self, firings: &[Firing]) -> StoreResult<()>;
    /// Up to `max` firings that are due, leased so no other consumer gets them until the
    /// lease runs out (then they come back: at-least-once). Returns at once, possibly
    /// empty.
    async fn receive(&self, max: usize) -> StoreResult<Vec<Leased>>;
    /// Done with it (delivered, failed or skipped): it never comes back.
    async fn ack(&self, leased: &Leased) -> StoreResult<()>;
    /// Replace the leased message by `next` (the next attempt, due at `next.due_at`).
    async fn retry(&self, leased: &Leased, next: &Firing) -> StoreResult<()>;
    /// When the earliest queued firing comes due, if the adapter can tell (the local
    /// dispatcher sleeps until then). Push-driven adapters (SQS) return `None`.
    async fn next_due(&self) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        Ok(None)
    }
    /// As `receive`, but fair to destinations (`Firing::destination`): hands out no more
    /// firings for a destination than `in_flight.room` leaves it, passing over the due
    /// firings of full destinations (they keep their place and are not leased), so one
    /// slow receiver's backlog cannot stand in front of every other receiver's firings.
    /// Firings without a destination are never held back. Adapters that cannot select by
    /// destination (SQS: the dispatch function bounds a batch instead) keep this default,
    /// which ignores `in_flight`.
    async fn receive_fair(&self, max: usize, in_flight: &InFlight) -> StoreResult<Vec<Leased>> {
        let _ = in_flight;
        self.receive(max).await
    }
    /// As `next_due`, over the firings `receive_fair` could hand out now: those of full
    /// destinations are left out, so a dispatcher waiting on them sleeps until a slot
    /// frees (or other work comes due) instead of polling.
    async fn next_due_fair(&self, in_flight: &InFlight) -> StoreResult<Option<chrono::DateTime<chrono::Utc>>> {
        let _ = in_flight;
        self.next_due().await
    }
    /// How many firings are queued and the earliest due time (see `QueueDepth`).
    async fn depth(&self) -> StoreResult<QueueDepth>;
    /// Signalled whenever `enqueue` or `retry` adds work, for a local dispatcher waiting
    /// on an idle queue.
    fn notifier(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }
}

/// Writes that span the touch store, the queue and the log, made as ONE transaction by a
/// store that holds all three in one place (the embedded store: one SQLite file, one
/// writer). With `Ports::combined` unset, the services make the same writes port by port,
/// in an order that is safe when a crash falls between two of them; with it set, there is
/// no "between", and a delivered firing or an ingested event costs one commit instead of
/// two or three. Wire it only with the store that is also the ports' touch store, queue
/// and log store.
#[async_trait]
pub trait CombinedWrites: Send + Sync {
    /// Ingest's writes, all or nothing: the touches, the firings (queued as by
    /// `FiringQueue::enqueue`) and the dedupe markers.
    async fn record_and_enqueue(
        &self,
        touches: &[TouchRecord],
        firings: &[Firing],
        dedupe_keys: &[String],
    ) -> StoreResult<()>;
    /// A delivered firing settled, all or nothing: its entry logged and its delivery id
    /// marked delivered (as by `LogStore::record_delivered`), and its queue message
    /// acknowledged. `false`: the id was delivered already; then only the ack is made.
    async fn settle_delivered(&self, leased: &Leased, entry: &LogEntry) -> StoreResult<bool>;
    /// A firing held by the open breaker, all or nothing: kept held (as by
    /// `ControlStore::hold`) and its queue message acknowledged. Two steps would leave a
    /// window in which a release (resume, a probe's success, a new probe carrier) reads
    /// the firing held and queues it again while its message is still leased: on a queue
    /// that keeps one row per delivery id that enqueue is dropped, the ack then deletes
    /// the row, and the firing is neither held nor queued. A stale lease still holds.
    async fn hold_and_ack(&self, leased: &Leased, firing: &Firing) -> StoreResult<()>;
    /// Whether the queue checks every message against the delivered markers in the
    /// transaction that leases it (dropping those delivered), so the dispatcher need not
    /// read the marker again before sending.
    fn lease_checks_delivered(&self) -> bool;
}

/// A breaker as stored, with the version its conditional writes compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBreaker {
    pub breaker: Breaker,
    /// 1 for the first write, +1 on every write after.
    pub version: u64,
}

/// Delivery control state shared by every dispatcher: breakers (conditional writes),
/// held firings (durable, per postback, in order) and rate-limit slots (atomic).
#[async_trait]
pub trait ControlStore: Send + Sync {
    /// A postback's breaker; `None` if none was ever written (closed, no failures).
    async fn breaker(&self, postback_id: &str) -> StoreResult<Option<StoredBreaker>>;
    /// The breakers of many postbacks (the list route); absent ones are not in the map.
    async fn breakers(&self, postback_ids: &[String]) -> StoreResult<std::collections::HashMap<String, StoredBreaker>> {
        let mut found = std::collections::HashMap::new();
        for id in postback_ids {
            if let Some(stored) = self.breaker(id).await? {
                found.insert(id.clone(), stored);
            }
        }
        Ok(found)
    }
    /// Write a breaker if its stored version is `expected` (`None`: none stored yet);
    /// the stored version becomes `expected + 1` (or 1). `Ok(false)`, nothing written, if
    /// another writer got there first: re-read and decide again.
    async fn put_breaker(&self, postback_id: &str, breaker: &Breaker, expected: Option<u64>) -> StoreResult<bool>;
    /// Durably keep firings held by an open breaker (each under its postback), until
    /// `unhold`. When this returns `Ok` they survive a crash. Holding the same firing
    /// again (same postback, `queued_at` and delivery id: a redelivered message) keeps
    /// one copy.
    async fn hold(&self, firings: &[Firing]) -> StoreResult<()>;
    /// Up to `max` of a postback's held firings, oldest first: by `queued_at`, then
    /// delivery id.
    async fn held(&self, postback_id: &str, max: usize) -> StoreResult<Vec<Firing>>;
    /// Forget held firings (as `held` returned them, after they were queued again).
    /// Ones not held are ignored, and so is one held again since with more `releases`:
    /// a released firing that came due and met the breaker open again before this call
    /// (its new hold must not be forgotten with the old one).
    async fn unhold(&self, firings: &[Firing]) -> StoreResult<()>;
    /// Claim held firings (as `held` returned them) for one release, from `now` until
    /// `until`: returned are those still held with that generation (`releases`) and not
    /// claimed by another release whose claim runs past `now`; no other release can
    /// claim them before `until`. So two releases at once (a resume and a probe's
    /// success, two resumes) never both queue one firing: on SQS every enqueue is a
    /// message, and both copies could be sent at the same time. A hold written since (a
    /// new generation) is unclaimed. A claim is not an unhold: `held` and `held_count`
    /// still show a claimed firing; a release that dies after its claim leaves it held,
    /// claimable again after `until`.
    async fn claim(
        &self,
        firings: &[Firing],
        now: chrono::DateTime<chrono::Utc>,
        until: chrono::DateTime<chrono::Utc>,
    ) -> StoreResult<Vec<Firing>>;
    /// How many firings a postback has held.
    async fn held_count(&self, postback_id: &str) -> StoreResult<u64>;
    /// Take one request slot of a rate-limited postback: in the first UTC second (unix
    /// seconds) at or after `from_second` in which fewer than `limit` were taken, which
    /// is returned. Atomic across every consumer of the store.
    async fn take_slot(&self, postback_id: &str, from_second: i64, limit: u32) -> StoreResult<i64>;
    /// Drop a deleted postback's breaker, held firings and slots.
    async fn forget(&self, postback_id: &str) -> StoreResult<()>;
}

/// Sends one rendered postback. Implementations enforce the destination guard on the
/// address actually connected to, the timeout, no redirects, and the response-body cap.
#[async_trait]
pub trait HttpSender: Send + Sync {
    async fn send(&self, request: &OutboundRequest) -> Result<OutboundResponse, SendFailure>;
}
