//! The local dispatcher's loop: lease due firings from the queue and process them
//! concurrently (bounded), sleeping until the next due time or an enqueue when idle.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Dispatcher;

/// How many firings the local dispatcher sends at once.
pub const LOCAL_CONCURRENCY: usize = 256;

/// The local dispatcher: pull due firings from the queue and process them concurrently
/// (bounded), sleeping until the next due time or an enqueue when idle. Returns when
/// `shutdown` turns true, after in-flight firings finish (or `drain` passes).
pub async fn run_queue_loop(
    dispatcher: Dispatcher,
    concurrency: usize,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    drain: Duration,
) {
    let queue = dispatcher.app().ports.queue.clone();
    let clock = dispatcher.app().ports.clock.clone();
    let notify = queue.notifier();
    let limit = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        while tasks.try_join_next().is_some() {}
        let free = limit.available_permits();
        if free == 0 {
            tokio::select! {
                _ = tasks.join_next() => {}
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
        let batch = match queue.receive(free.min(64)).await {
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
            let next_due = queue.next_due().await;
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
                _ = shutdown.changed() => {}
            }
            continue;
        }
        for leased in batch {
            let Ok(permit) = limit.clone().acquire_owned().await else { break };
            let dispatcher = dispatcher.clone();
            tasks.spawn(async move {
                if let Err(e) = dispatcher.process(&leased).await {
                    tracing::error!(delivery_id = %leased.firing.delivery_id, error = %e,
                        "dispatch failed on a dependency; the firing comes back after its lease");
                }
                drop(permit);
            });
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
