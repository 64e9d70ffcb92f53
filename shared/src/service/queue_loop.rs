//! The local dispatcher's loop: lease due firings from the queue and process them
//! concurrently (bounded in all and per destination), sleeping until the next due time,
//! an enqueue or a freed destination slot when idle.
//!
//! Fair sending: the queue hands out no more firings for a destination than it has room
//! for (`FiringQueue::receive_fair`), so a slow receiver's backlog stays in the queue,
//! unleased and holding no sender, while other destinations' firings go out at once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::Dispatcher;
use crate::domain::delivery::{OutboundRequest, OutboundResponse, SendFailure};
use crate::domain::firing::Firing;
use crate::domain::matching::PostbackIndex;
use crate::ports::{FiringQueue, HttpSender, InFlight, Leased};

/// How many firings the local dispatcher sends at once.
pub const LOCAL_CONCURRENCY: usize = 256;

/// `DESTINATION_CONCURRENCY`'s default: requests in flight to one destination at once.
pub const DEFAULT_DESTINATION_CONCURRENCY: usize = 16;

/// Most firings leased by one receive: the loop goes back to the queue often, so firings
/// that come due meanwhile are not queued behind a large batch.
const RECEIVE_BATCH: usize = 64;

/// The local dispatcher's bounds on requests in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopLimits {
    /// In all (`LOCAL_CONCURRENCY`).
    pub total: usize,
    /// To one destination (`DESTINATION_CONCURRENCY`).
    pub per_destination: usize,
}

impl From<usize> for LoopLimits {
    /// `total` in all, the default per destination.
    fn from(total: usize) -> Self {
        Self { total, per_destination: DEFAULT_DESTINATION_CONCURRENCY }
    }
}

/// The local dispatcher: pull due firings from the queue and process them concurrently
/// (bounded by `limits`), sleeping until the next due time, an enqueue or a freed
/// destination slot when idle. The per-destination bound counts a firing from its spawn
/// until its request is answered when the sender is wrapped in [`SlotReleasingSender`]
/// (the local server), else until its task ends. Returns when `shutdown` turns true, after in-flight firings finish
/// (or `drain` passes).
pub async fn run_queue_loop(
    dispatcher: Dispatcher,
    limits: impl Into<LoopLimits>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
) {
    let limits = limits.into();
    let queue = dispatcher.app().ports.queue.clone();
    let clock = dispatcher.app().ports.clock.clone();
    let notify = queue.notifier();
    let per_destination = limits.per_destination.max(1);
    let mut senders = Senders {
        dispatcher: dispatcher.clone(),
        permits: Arc::new(tokio::sync::Semaphore::new(limits.total)),
        tasks: tokio::task::JoinSet::new(),
        slots: Arc::new(Slots {
            in_flight: Mutex::new(InFlight::new(per_destination)),
            freed: tokio::sync::Notify::new(),
        }),
        waiting: HashMap::new(),
        waiting_total: 0,
    };
    loop {
        if *shutdown.borrow() {
            break;
        }
        while senders.tasks.try_join_next().is_some() {}
        // Register for the wake-ups before looking, so an enqueue or a freed slot between
        // the look and the wait is not missed.
        let notified = notify.as_ref().map(|n| n.clone());
        let notified_fut = async {
            match &notified {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(notified_fut);
        let slots = Arc::clone(&senders.slots);
        let freed = slots.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        senders.start_waiting();
        senders.put_back_stale(clock.now()).await;
        let free = senders.permits.available_permits();
        if free == 0 {
            // Every sender busy: wait for one, or for a waiting firing's time to run out.
            let stale_at = senders.oldest_waiting().map_or(DateTime::<Utc>::MAX_UTC, |at| at + MAX_WAIT);
            tokio::select! {
                _ = senders.tasks.join_next() => {}
                _ = clock.sleep_until(stale_at) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let room = senders.room(per_destination);
        let max = RECEIVE_BATCH.min(free + MAX_WAITING.saturating_sub(senders.waiting_total));
        // While the receive runs, slots that free are refilled from the firings waiting
        // for them: one busy destination does not idle on the queue.
        let received = {
            let receive = queue.receive_fair(max, &room);
            tokio::pin!(receive);
            loop {
                tokio::select! {
                    received = &mut receive => break received,
                    _ = &mut freed => {
                        senders.start_waiting();
                        freed.set(slots.freed.notified());
                        freed.as_mut().enable();
                    }
                }
            }
        };
        let batch = match received {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "queue receive failed; retrying in 1 s");
                tokio::select! {
                    _ = clock.sleep_until(clock.now() + chrono::Duration::seconds(1)) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
        };
        // Fewer than asked for: the queue had no more for this room, so rather than a
        // receive that would come back empty, wait for work (as after an empty one).
        let exhausted = batch.len() < max;
        let started = !batch.is_empty();
        if started {
            let index = match dispatcher.app().catalog.index().await {
                Ok(index) => Some(index),
                Err(e) => {
                    // The dispatcher will fail on it too; go by the recorded destinations.
                    tracing::warn!(error = %e, "postback index unavailable; using the queued destinations");
                    None
                }
            };
            let now = clock.now();
            for mut leased in batch {
                let destination = destination_now(index.as_deref(), &leased.firing);
                // Queued for another destination than it goes to now (its postback's URL
                // changed, or it was queued without one): from here on it counts under the
                // right one, and is put back under it if it cannot go.
                leased.firing.destination = destination;
                if let Some(unsent) = senders.start_or_wait(leased, now) {
                    put_back(&queue, &unsent).await;
                }
            }
        }
        if !exhausted {
            continue;
        }
        // Firings of full destinations are left out: they wait for a slot to free.
        let room = if started { senders.room(per_destination) } else { room };
        let next_due = queue.next_due_fair(&room).await;
        let now = clock.now();
        if started && next_due.as_ref().is_ok_and(|due| due.is_some_and(|due| due <= now)) {
            continue; // slots freed while these started: there is room for due firings now
        }
        let wait = match next_due {
            Ok(Some(due)) => (due - now).to_std().unwrap_or(Duration::ZERO).min(Duration::from_secs(1)),
            Ok(None) => Duration::from_secs(1),
            Err(_) => Duration::from_secs(1),
        };
        let stale_at = senders.oldest_waiting().map(|at| (at + MAX_WAIT - now).to_std().unwrap_or(Duration::ZERO));
        let wait = stale_at.map_or(wait, |stale| stale.min(wait));
        let wake_at = now + chrono::Duration::from_std(wait.max(Duration::from_millis(5))).unwrap_or_default();
        tokio::select! {
            _ = clock.sleep_until(wake_at) => {}
            _ = &mut notified_fut => {}
            _ = &mut freed => {}
            _ = shutdown.changed() => {}
        }
    }
    senders.put_back_all(&queue).await;
    let mut tasks = senders.tasks;
    let drained = async {
        while tasks.join_next().await.is_some() {}
        true
    };
    let give_up_at = chrono::Duration::from_std(drain)
        .ok()
        .and_then(|d| clock.now().checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    let give_up = clock.sleep_until(give_up_at);
    let finished = tokio::select! {
        done = drained => done,
        _ = give_up => false,
    };
    if !finished {
        tracing::warn!(left = tasks.len(), "shutdown: in-flight firings abandoned; they come back after their lease");
        tasks.abort_all();
    }
}

/// Firings leased ahead for one destination, waiting in memory for one of its slots:
/// at most this many per destination...
const PREFETCH_PER_DESTINATION: usize = RECEIVE_BATCH;
/// ...and this many in all...
const MAX_WAITING: usize = LOCAL_CONCURRENCY;
/// ...each for at most this long, then put back in the queue (due as before): far less
/// than any lease the local server uses (3 × DELIVERY_TIMEOUT_MS + 30 s), so a firing
/// never waits past its lease.
const MAX_WAIT: chrono::Duration = chrono::Duration::seconds(5);

/// Put a leased firing back, due as before, no attempt used.
async fn put_back(queue: &Arc<dyn FiringQueue>, leased: &Leased) {
    if let Err(e) = queue.retry(leased, &leased.firing).await {
        tracing::warn!(delivery_id = %leased.firing.delivery_id, error = %e,
            "could not put back a firing waiting for its destination; it comes back after its lease");
    }
}

/// The loop's senders: the global permits, the tasks, the per-destination slots, and the
/// firings leased ahead waiting for a slot. Leasing a little ahead lets one busy
/// destination's next requests start the moment a slot frees, instead of after a queue
/// round trip (a store commit) per `per_destination` requests.
struct Senders {
    dispatcher: Dispatcher,
    permits: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<()>,
    slots: Arc<Slots>,
    waiting: HashMap<String, VecDeque<(Leased, DateTime<Utc>)>>,
    waiting_total: usize,
}

impl Senders {
    /// What `receive_fair` may hand out: per destination, its free slots plus room to
    /// wait ahead.
    fn room(&self, per_destination: usize) -> InFlight {
        let mut room = self.slots.snapshot();
        room.per_destination = per_destination + PREFETCH_PER_DESTINATION;
        for (destination, waiting) in &self.waiting {
            *room.by_destination.entry(destination.clone()).or_default() += waiting.len();
        }
        room
    }

    /// Start `leased` if its destination has a free slot and a permit is free; else keep
    /// it waiting if there is room; else hand it back to be put back in the queue.
    fn start_or_wait(&mut self, leased: Leased, now: DateTime<Utc>) -> Option<Leased> {
        let Some(destination) = leased.firing.destination.clone() else {
            return self.start(leased, None);
        };
        let waiting_here = self.waiting.get(&destination).map_or(0, VecDeque::len);
        // Only this loop takes permits, so a free one now is free at `start`.
        if waiting_here == 0 && self.permits.available_permits() > 0 {
            if let Some(slot) = Slot::take(&self.slots, destination.clone()) {
                return self.start(leased, Some(slot));
            }
        }
        if waiting_here < PREFETCH_PER_DESTINATION && self.waiting_total < MAX_WAITING {
            self.waiting.entry(destination).or_default().push_back((leased, now));
            self.waiting_total += 1;
            return None;
        }
        Some(leased)
    }

    /// Spawn the firing's task under a permit; without a free one, hand it back.
    fn start(&mut self, leased: Leased, slot: Option<Slot>) -> Option<Leased> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Some(leased);
        };
        let dispatcher = self.dispatcher.clone();
        let process = async move {
            if let Err(e) = dispatcher.process(&leased).await {
                tracing::error!(delivery_id = %leased.firing.delivery_id, error = %e,
                    "dispatch failed on a dependency; the firing comes back after its lease");
            }
            drop(permit);
        };
        match slot {
            Some(slot) => self.tasks.spawn(SLOT.scope(Arc::new(slot), process)),
            None => self.tasks.spawn(process),
        };
        None
    }

    /// Start waiting firings, oldest first per destination, while their destination has a
    /// free slot and a permit is free.
    fn start_waiting(&mut self) {
        let destinations: Vec<String> = self.waiting.keys().cloned().collect();
        for destination in destinations {
            while self.permits.available_permits() > 0 {
                let Some(queue) = self.waiting.get_mut(&destination) else { break };
                if queue.is_empty() {
                    self.waiting.remove(&destination);
                    break;
                }
                let Some(slot) = Slot::take(&self.slots, destination.clone()) else { break };
                let Some((leased, since)) = queue.pop_front() else { break };
                self.waiting_total -= 1;
                // A permit is free (checked above; only this loop takes them), so this
                // cannot hand it back; if it did, it waits on at the front.
                if let Some(unstarted) = self.start(leased, Some(slot)) {
                    self.waiting.entry(destination.clone()).or_default().push_front((unstarted, since));
                    self.waiting_total += 1;
                    break;
                }
            }
            if self.waiting.get(&destination).is_some_and(VecDeque::is_empty) {
                self.waiting.remove(&destination);
            }
        }
    }

    /// When the longest-waiting firing started waiting.
    fn oldest_waiting(&self) -> Option<DateTime<Utc>> {
        self.waiting.values().filter_map(|q| q.front().map(|(_, at)| *at)).min()
    }

    /// Put back the firings that waited `MAX_WAIT`.
    async fn put_back_stale(&mut self, now: DateTime<Utc>) {
        let mut stale = Vec::new();
        for queue in self.waiting.values_mut() {
            while queue.front().is_some_and(|(_, at)| *at + MAX_WAIT <= now) {
                if let Some((leased, _)) = queue.pop_front() {
                    stale.push(leased);
                }
            }
        }
        self.waiting.retain(|_, q| !q.is_empty());
        self.waiting_total -= stale.len();
        let queue = self.dispatcher.app().ports.queue.clone();
        for leased in &stale {
            put_back(&queue, leased).await;
        }
    }

    /// Shutting down: put every waiting firing back, so it goes out at once after a
    /// restart rather than after its lease.
    async fn put_back_all(&mut self, queue: &Arc<dyn FiringQueue>) {
        for (_, waiting) in self.waiting.drain() {
            for (leased, _) in waiting {
                put_back(queue, &leased).await;
            }
        }
        self.waiting_total = 0;
    }
}

/// The requests in flight per destination, shared by the loop and its tasks.
struct Slots {
    in_flight: Mutex<InFlight>,
    /// Signalled when a slot frees: a full destination may have room again.
    freed: tokio::sync::Notify,
}

impl Slots {
    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn snapshot(&self) -> InFlight {
        self.lock().clone()
    }
}

/// One firing's place in its destination's bound, from its spawn until its request is
/// answered ([`SlotReleasingSender`]) or, at the latest, until its task ends (dropped:
/// skipped, failed on a dependency, panicked, aborted).
struct Slot {
    slots: Arc<Slots>,
    destination: String,
    released: AtomicBool,
}

impl Slot {
    /// A place for `destination`, if it has room.
    fn take(slots: &Arc<Slots>, destination: String) -> Option<Slot> {
        let mut in_flight = slots.lock();
        if in_flight.room(&destination) == 0 {
            return None;
        }
        in_flight.start(&destination);
        drop(in_flight);
        Some(Slot { slots: Arc::clone(slots), destination, released: AtomicBool::new(false) })
    }

    /// Free the place (once).
    fn release(&self) {
        if !self.released.swap(true, Ordering::AcqRel) {
            self.slots.lock().finish(&self.destination);
            // Stores a wake-up if the loop is not waiting yet.
            self.slots.freed.notify_one();
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

tokio::task_local! {
    /// The slot of the firing a queue-loop task is sending.
    static SLOT: Arc<Slot>;
}

/// Wraps the local server's sender so that a firing's destination slot frees as soon as
/// its request is answered (or fails): the bound is on requests in flight, so the log
/// write and queue ack that follow do not count against it, and one busy destination's
/// throughput is not capped by the store's commit latency. Outside a queue-loop task
/// (the test and resend routes) it only forwards.
pub struct SlotReleasingSender {
    inner: Arc<dyn HttpSender>,
}

impl SlotReleasingSender {
    pub fn new(inner: Arc<dyn HttpSender>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl HttpSender for SlotReleasingSender {
    async fn send(&self, request: &OutboundRequest) -> Result<OutboundResponse, SendFailure> {
        let result = self.inner.send(request).await;
        let _ = SLOT.try_with(|slot| slot.release());
        result
    }
}

/// Where the firing's request goes now: from its postback as it is (a URL edited since
/// it was queued counts), else (postback gone, index unavailable) as recorded.
fn destination_now(index: Option<&PostbackIndex>, firing: &Firing) -> Option<String> {
    let Some(postback) = index.and_then(|index| index.get(&firing.postback_id)) else {
        return firing.destination.clone();
    };
    postback.destination(&firing.macro_context(&postback.postback))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::testing::ScriptedSender;

    fn slots(per_destination: usize) -> Arc<Slots> {
        Arc::new(Slots { in_flight: Mutex::new(InFlight::new(per_destination)), freed: tokio::sync::Notify::new() })
    }

    fn request() -> OutboundRequest {
        OutboundRequest {
            method: "GET".into(),
            url: "https://aff.example/pb".into(),
            headers: Default::default(),
            body: None,
            public_only: false,
        }
    }

    const D: &str = "https://aff.example:443";

    #[tokio::test]
    async fn a_slot_frees_when_its_request_is_answered_not_when_its_task_ends() {
        let slots = slots(2);
        let sender = SlotReleasingSender::new(Arc::new(ScriptedSender::new()));
        let first = Slot::take(&slots, D.into()).unwrap();
        let _second = Slot::take(&slots, D.into()).unwrap();
        assert!(Slot::take(&slots, D.into()).is_none(), "full at 2");
        SLOT.scope(Arc::new(first), async {
            sender.send(&request()).await.unwrap();
            assert_eq!(slots.snapshot().room(D), 1, "freed at the response, the task still running");
            // A second request in the same task frees nothing more.
            sender.send(&request()).await.unwrap();
            assert_eq!(slots.snapshot().room(D), 1, "released once");
        })
        .await;
        assert_eq!(slots.snapshot().room(D), 1, "the end of the task frees nothing more either");
    }

    #[tokio::test]
    async fn a_slot_frees_when_its_task_ends_without_a_request() {
        let slots = slots(1);
        let slot = Slot::take(&slots, D.into()).unwrap();
        let waiting = slots.freed.notified();
        tokio::pin!(waiting);
        waiting.as_mut().enable();
        // Skipped, failed on a dependency, or aborted: the scope (and the slot) is dropped.
        SLOT.scope(Arc::new(slot), async {}).await;
        assert_eq!(slots.snapshot().room(D), 1);
        tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("the loop is woken");
        let aborted =
            tokio::spawn(SLOT.scope(Arc::new(Slot::take(&slots, D.into()).unwrap()), std::future::pending::<()>()));
        aborted.abort();
        let _ = aborted.await;
        assert_eq!(slots.snapshot().room(D), 1, "an aborted task frees its slot");
    }

    #[tokio::test]
    async fn outside_a_queue_loop_task_the_sender_only_forwards() {
        let inner = Arc::new(ScriptedSender::new());
        let sender = SlotReleasingSender::new(inner.clone());
        sender.send(&request()).await.unwrap();
        assert_eq!(inner.count(), 1);
    }
}
