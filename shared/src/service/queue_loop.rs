//! The local dispatcher's loop: lease due firings from the queue and process them
//! concurrently (bounded in all and per destination), sleeping until the next due time,
//! an enqueue or a finished send when idle.
//!
//! Fair sending: the queue hands out no more firings for a destination than it has room
//! for (`FiringQueue::receive_fair`), so a slow receiver's backlog stays in the queue,
//! unleased and holding no sender, while other destinations' firings go out at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Dispatcher;
use crate::domain::firing::Firing;
use crate::domain::macros::MacroContext;
use crate::domain::matching::PostbackIndex;
use crate::ports::InFlight;

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
/// (bounded by `limits`), sleeping until the next due time, an enqueue or a finished
/// send when idle. Returns when `shutdown` turns true, after in-flight firings finish
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
    let limit = Arc::new(tokio::sync::Semaphore::new(limits.total));
    let mut tasks = tokio::task::JoinSet::new();
    let mut sending = Sending { in_flight: InFlight::new(limits.per_destination.max(1)), by_task: HashMap::new() };
    loop {
        if *shutdown.borrow() {
            break;
        }
        while let Some(done) = tasks.try_join_next_with_id() {
            sending.finished(done.map(|(id, ())| id).unwrap_or_else(|e| e.id()));
        }
        let free = limit.available_permits();
        if free == 0 {
            tokio::select! {
                Some(done) = tasks.join_next_with_id() => sending.finished(done.map(|(id, ())| id).unwrap_or_else(|e| e.id())),
                _ = shutdown.changed() => {}
            }
            continue;
        }
        // Register for the wake-up before looking, so an enqueue between the look and
        // the wait is not missed.
        let notified = notify.as_ref().map(|n| n.clone());
        let notified_fut = async {
            match &notified {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(notified_fut);
        let batch = match queue.receive_fair(free.min(RECEIVE_BATCH), &sending.in_flight).await {
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
        if batch.is_empty() {
            // Firings of full destinations are left out: they wait for a send to finish.
            let next_due = queue.next_due_fair(&sending.in_flight).await;
            let now = clock.now();
            let wait = match next_due {
                Ok(Some(due)) => (due - now).to_std().unwrap_or(Duration::ZERO).min(Duration::from_secs(1)),
                Ok(None) => Duration::from_secs(1),
                Err(_) => Duration::from_secs(1),
            };
            let wake_at = now + chrono::Duration::from_std(wait.max(Duration::from_millis(5))).unwrap_or_default();
            tokio::select! {
                _ = clock.sleep_until(wake_at) => {}
                _ = &mut notified_fut => {}
                Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    sending.finished(done.map(|(id, ())| id).unwrap_or_else(|e| e.id()));
                }
                _ = shutdown.changed() => {}
            }
            continue;
        }
        let index = match dispatcher.app().catalog.index().await {
            Ok(index) => Some(index),
            Err(e) => {
                // The dispatcher will fail on it too; go by the recorded destinations.
                tracing::warn!(error = %e, "postback index unavailable; using the queued destinations");
                None
            }
        };
        for mut leased in batch {
            let destination = destination_now(index.as_deref(), &leased.firing);
            if let Some(d) = destination.as_deref().filter(|d| sending.in_flight.room(d) == 0) {
                // Queued for another destination than it goes to now (its postback's URL
                // changed, or it was queued without one): put it back under the right
                // one, keeping its due time, rather than exceed this one's bound.
                let corrected = Firing { destination: destination.clone(), ..leased.firing.clone() };
                if let Err(e) = queue.retry(&leased, &corrected).await {
                    tracing::warn!(delivery_id = %leased.firing.delivery_id, destination = d, error = %e,
                        "could not put back a firing for a full destination; it comes back after its lease");
                }
                continue;
            }
            leased.firing.destination = destination;
            let Ok(permit) = limit.clone().acquire_owned().await else { break };
            let dispatcher = dispatcher.clone();
            let destination = leased.firing.destination.clone();
            let task = tasks.spawn(async move {
                if let Err(e) = dispatcher.process(&leased).await {
                    tracing::error!(delivery_id = %leased.firing.delivery_id, error = %e,
                        "dispatch failed on a dependency; the firing comes back after its lease");
                }
                drop(permit);
            });
            if let Some(d) = destination {
                sending.started(task.id(), d);
            }
        }
    }
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

/// The sends in flight per destination, and which task sends to which (a task that
/// panicked still frees its destination's slot: its id comes back with the error).
struct Sending {
    in_flight: InFlight,
    by_task: HashMap<tokio::task::Id, String>,
}

impl Sending {
    fn started(&mut self, task: tokio::task::Id, destination: String) {
        self.in_flight.start(&destination);
        self.by_task.insert(task, destination);
    }

    fn finished(&mut self, task: tokio::task::Id) {
        if let Some(destination) = self.by_task.remove(&task) {
            self.in_flight.finish(&destination);
        }
    }
}

/// Where the firing's request goes now: from its postback as it is (a URL edited since
/// it was queued counts), else (postback gone, index unavailable) as recorded.
fn destination_now(index: Option<&PostbackIndex>, firing: &Firing) -> Option<String> {
    let Some(postback) = index.and_then(|index| index.get(&firing.postback_id)) else {
        return firing.destination.clone();
    };
    let ctx = MacroContext {
        event: &firing.event,
        postback_id: &postback.postback.id,
        postback_name: &postback.postback.name,
        delivery_id: &firing.delivery_id,
        attempt: firing.attempt,
    };
    postback.destination(&ctx)
}
