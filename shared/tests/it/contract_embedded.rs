//! The port contract suite on the embedded (SQLite) adapters, plus what only the
//! embedded store promises: durability across reopen, group commit, retention, leases.
//! Time is a `ManualClock` wherever a rule depends on it (leases, due times, retention):
//! no test waits for real time to pass.
//!
//! Run: `cargo test -p postback --features testing --test it contract_embedded`.
//! Throughput figures: add `--release -- --ignored --nocapture throughput`.
#![cfg(all(feature = "embedded", feature = "testing"))]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use postback::adapters::embedded::{Durability, EmbeddedOptions, EmbeddedStore, StoreTuning};
use postback::domain::breaker::{Breaker, BreakerState};
use postback::domain::event::{EventType, StatusKey};
use postback::domain::firing::Firing;
use postback::domain::log::{LogFilter, Outcome};
use postback::ports::{
    Clock, ControlStore, FiringQueue, LogStore, PostbackStore, StoreError, StoredBreaker, TouchRecord, TouchStore,
};
use postback::testing::{contract, fixtures, AdapterFactory, Adapters, ManualClock};

fn options(lease: Duration) -> EmbeddedOptions {
    EmbeddedOptions { lease, retention: chrono::Duration::days(30) }
}

/// The store as the contract suite's adapters, on the manual clock it was opened with.
fn adapters(store: &EmbeddedStore, clock: Arc<ManualClock>) -> Adapters {
    Adapters {
        postbacks: Arc::new(store.clone()),
        touches: Arc::new(store.clone()),
        logs: Arc::new(store.clone()),
        queue: Arc::new(store.clone()),
        control: Arc::new(store.clone()),
        access: Arc::new(store.clone()),
        clock: Some(clock),
    }
}

/// Fresh stores in files of one temporary folder (removed with the factory), each on
/// its own manual clock starting at the real time now.
struct EmbeddedFactory {
    dir: tempfile::TempDir,
    opened: AtomicUsize,
}

impl EmbeddedFactory {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap(), opened: AtomicUsize::new(0) }
    }
}

#[async_trait]
impl AdapterFactory for EmbeddedFactory {
    async fn fresh(&self) -> Adapters {
        let n = self.opened.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("contract-{n}.sqlite"));
        let clock = Arc::new(ManualClock::starting_now());
        adapters(&EmbeddedStore::open(&path, options(contract::LEASE), clock.clone()).unwrap(), clock)
    }
}

// The port contract suite: one test per check (`contract_embedded::checks::*`).
postback::contract_tests!(factory = EmbeddedFactory::new(), extra = [enqueue_dedupe, fair_receive]);

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data").join("postbacks.sqlite")
}

/// A store on a fresh manual clock, and the clock.
fn open(path: &Path, lease: Duration) -> (EmbeddedStore, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::starting_now());
    (open_on(path, lease, &clock), clock)
}

fn open_on(path: &Path, lease: Duration, clock: &Arc<ManualClock>) -> EmbeddedStore {
    EmbeddedStore::open(path, options(lease), clock.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let postback = fixtures::postback("pb_keep", EventType::Conversion);
    let due_now = fixtures::firing("d_due", fixtures::now() - chrono::Duration::seconds(1));
    let leased_at_close = fixtures::firing("d_leased", fixtures::now() - chrono::Duration::seconds(1));
    let due_later = fixtures::firing("d_later", fixtures::now() + chrono::Duration::hours(1));
    let delivered = fixtures::log_entry(&fixtures::firing("d_delivered", fixtures::now()), Outcome::Delivered);
    let click = fixtures::event(EventType::Click, "T1");
    let clock = Arc::new(ManualClock::starting_now());
    {
        let store = open_on(&path, Duration::from_secs(60), &clock);
        store.create(&postback, &fixtures::audit("t")).await.unwrap();
        store.enqueue(std::slice::from_ref(&leased_at_close)).await.unwrap();
        let leased = store.receive(10).await.unwrap();
        assert_eq!(leased.len(), 1, "leased before close, never acked");
        store.enqueue(&[due_now.clone(), due_later.clone()]).await.unwrap();
        assert!(store.record_delivered(&delivered).await.unwrap());
        store.record(&[TouchRecord { event: click.clone() }]).await.unwrap();
        store.mark_seen(&["k1".to_string()]).await.unwrap();
        store.close().await;
        assert!(
            matches!(store.delete("pb_keep", &fixtures::audit("t")).await, Err(StoreError::Unavailable(_))),
            "closed: writes refused"
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the store holds secrets: owner-only file, got {mode:o}");
    }

    let store = open_on(&path, Duration::from_secs(60), &clock);
    assert_eq!(PostbackStore::get(&store, "pb_keep").await.unwrap(), Some(postback));
    assert!(store.is_delivered("d_delivered").await.unwrap());
    assert_eq!(LogStore::get(&store, &delivered.id).await.unwrap(), Some(delivered));
    assert_eq!(store.get_click("T1").await.unwrap(), Some(click));
    assert_eq!(store.seen(&["k1".to_string()]).await.unwrap().len(), 1);
    assert_eq!(store.next_due().await.unwrap(), Some(due_now.due_at), "the earliest visible firing");
    // The lease taken before the close is not: the process that held it is gone.
    let mut received = store.receive(10).await.unwrap();
    received.sort_by(|a, b| a.firing.delivery_id.cmp(&b.firing.delivery_id));
    let firings: Vec<Firing> = received.iter().map(|l| l.firing.clone()).collect();
    assert_eq!(firings, vec![due_now, leased_at_close], "both due firings, the leased one released by the reopen");
    for leased in &received {
        store.ack(leased).await.unwrap();
    }
    assert!(store.receive(10).await.unwrap().is_empty(), "the later one is not due");
    store.enqueue(&[fixtures::firing("d_delivered", clock.now())]).await.unwrap();
    assert!(store.receive(10).await.unwrap().is_empty(), "a delivered id stays delivered across reopen");
    assert_eq!(store.next_due().await.unwrap(), Some(due_later.due_at), "only the later firing is left");
}

/// Breakers and held firings are in the file: they survive closing and reopening (as
/// after `kill -9`: every acknowledged write was committed). Slots are in memory only.
/// A breaker row that no longer decodes is an error on read until a write replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_state_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let now = fixtures::now();
    let open_breaker = Breaker {
        state: BreakerState::Open,
        consecutive_failures: 10,
        opened_at: Some(now),
        next_probe_at: Some(now + chrono::Duration::seconds(30)),
        cooldown_ms: 30_000,
        ..Breaker::default()
    };
    let held: Vec<Firing> = (0..3)
        .map(|i| {
            let mut f = fixtures::firing(&format!("d_held_{i}"), now);
            f.queued_at = now + chrono::Duration::milliseconds(i);
            f
        })
        .collect();
    let second = now.timestamp();
    {
        let (store, _clock) = open(&path, Duration::from_secs(30));
        assert!(store.put_breaker("pb_1", &Breaker::default(), None).await.unwrap());
        assert!(store.put_breaker("pb_1", &open_breaker, Some(1)).await.unwrap());
        assert!(store.put_breaker("pb_bad", &Breaker::default(), None).await.unwrap());
        store.hold(&held).await.unwrap();
        assert_eq!(store.take_slot("pb_1", second, 1).await.unwrap(), second);
        store.close().await;
    }
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute("UPDATE breakers SET body = '{\"state\": 1' WHERE postback_id = 'pb_bad'", []).unwrap();
    }
    let (store, _clock) = open(&path, Duration::from_secs(30));
    assert_eq!(
        store.breaker("pb_1").await.unwrap(),
        Some(StoredBreaker { breaker: open_breaker.clone(), version: 2 }),
        "the breaker and its version survive"
    );
    assert!(!store.put_breaker("pb_1", &Breaker::default(), Some(1)).await.unwrap(), "still at version 2");
    assert_eq!(store.held("pb_1", 10).await.unwrap(), held, "held firings survive, in order");
    assert_eq!(store.held_count("pb_1").await.unwrap(), 3);
    assert_eq!(store.take_slot("pb_1", second, 1).await.unwrap(), second, "slots are not stored");

    assert!(matches!(store.breaker("pb_bad").await, Err(StoreError::Corrupt(_))));
    assert!(matches!(store.breakers(&["pb_bad".to_string()]).await, Err(StoreError::Corrupt(_))));
    assert!(store.put_breaker("pb_bad", &open_breaker, Some(1)).await.unwrap(), "the version column still guards");
    assert_eq!(store.breaker("pb_bad").await.unwrap().map(|b| b.version), Some(2), "a write replaces the bad row");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_batches_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = open(&db_path(&dir), Duration::from_secs(30));
    let before = store.stats();
    let due = clock.now();
    let tasks: Vec<_> = (0..2_000)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.enqueue(&[fixtures::firing(&format!("d_{i:04}"), due)]).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stats = store.stats();
    let transactions = stats.transactions - before.transactions;
    println!("2000 enqueues in {transactions} transactions, largest batch {}", stats.largest_batch);
    assert_eq!(stats.jobs - before.jobs, 2_000);
    assert!(transactions < 400, "group commit should batch: {transactions} transactions for 2000 writes");
    assert!(stats.largest_batch > 10);
    let mut received = store.receive(1_000).await.unwrap();
    received.extend(store.receive(1_000).await.unwrap());
    assert_eq!(received.len(), 2_000, "every acknowledged enqueue is queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_in_a_batch_does_not_fail_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _clock) = open(&db_path(&dir), Duration::from_secs(30));
    // 300 creates of 150 ids, all at once: per id one wins, the other is a Conflict,
    // and those conflicting jobs share transactions with successful ones.
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let store = store.clone();
            let postback = fixtures::postback(&format!("pb_{:03}", i % 150), EventType::Conversion);
            tokio::spawn(async move { store.create(&postback, &fixtures::audit("t")).await })
        })
        .collect();
    let mut ok = 0;
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Conflict(_)) => conflicts += 1,
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    let stats = store.stats();
    assert_eq!((ok, conflicts), (150, 150));
    assert_eq!(stats.failed_jobs, 150);
    assert!(stats.transactions < 300, "the jobs were batched ({} transactions)", stats.transactions);
    assert_eq!(store.list(None).await.unwrap().len(), 150, "every successful create is stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_expired_removes_old_rows_and_reads_ignore_them() {
    let dir = tempfile::tempdir().unwrap();
    let retention = chrono::Duration::days(30);
    let clock = Arc::new(ManualClock::starting_now());
    let options = EmbeddedOptions { lease: Duration::from_secs(30), retention };
    let store = EmbeddedStore::open(&db_path(&dir), options, clock.clone()).unwrap();
    let conversion = fixtures::event(EventType::Conversion, "T1");
    let firing = fixtures::firing("d_old", fixtures::now());
    let appended = fixtures::log_entry(&firing, Outcome::Retrying);
    let delivered = fixtures::log_entry(&firing, Outcome::Delivered);
    let queued = fixtures::firing("d_queued", fixtures::now() + chrono::Duration::hours(1));
    store
        .record(&[
            TouchRecord { event: fixtures::event(EventType::Click, "T1") },
            TouchRecord { event: fixtures::event(EventType::Impression, "T1") },
            TouchRecord { event: conversion },
        ])
        .await
        .unwrap();
    store.mark_seen(&["k_old".to_string()]).await.unwrap();
    store.append(std::slice::from_ref(&appended)).await.unwrap();
    assert!(store.record_delivered(&delivered).await.unwrap());
    store.enqueue(&[queued]).await.unwrap();
    assert!(store.get_click("T1").await.unwrap().is_some(), "fresh rows are visible");
    assert_eq!(store.purge_expired().await.unwrap(), 0, "nothing expired yet");

    // Past the retention of every row (the log entries were fired by the real clock, a
    // moment after the manual one started).
    clock.advance((retention + chrono::Duration::seconds(1)).to_std().unwrap());
    // Expired but not yet purged: invisible.
    assert_eq!(store.get_click("T1").await.unwrap(), None);
    assert_eq!(store.get_status("T1", &StatusKey::Conversion).await.unwrap(), None);
    assert!(store.seen(&["k_old".to_string()]).await.unwrap().is_empty());
    assert!(!store.is_delivered("d_old").await.unwrap());
    assert_eq!(LogStore::get(&store, &appended.id).await.unwrap(), None);
    let all = LogFilter { limit: 10, ..LogFilter::default() };
    assert!(store.query(&all).await.unwrap().items.is_empty());

    let fresh = fixtures::event(EventType::Click, "T2");
    store.record(&[TouchRecord { event: fresh.clone() }]).await.unwrap();
    // click + impression + status + seen key + 2 log entries + delivered marker
    assert_eq!(store.purge_expired().await.unwrap(), 7);
    assert_eq!(store.purge_expired().await.unwrap(), 0, "nothing left to purge");
    assert_eq!(store.get_click("T2").await.unwrap(), Some(fresh), "fresh rows are kept");
    assert!(store.next_due().await.unwrap().is_some(), "queued firings are work, not history: never purged");

    // An expired marker no longer blocks a delivery.
    assert!(store.record_delivered(&fixtures::log_entry(&firing, Outcome::Delivered)).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_consumer_cannot_ack_or_retry_a_re_leased_firing() {
    let dir = tempfile::tempdir().unwrap();
    let lease = Duration::from_secs(1);
    let (store, clock) = open(&db_path(&dir), lease);
    let firing = fixtures::firing("d_stale", clock.now());
    store.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    let stale = store.receive(10).await.unwrap().pop().unwrap();
    clock.advance(lease);
    let current = store.receive(10).await.unwrap().pop().expect("comes back after the lease");

    store.ack(&stale).await.unwrap();
    store.retry(&stale, &firing.next_attempt(clock.now())).await.unwrap();
    assert_eq!(store.stats().stale_receipts, 2, "both were recognised as stale");
    assert!(store.receive(10).await.unwrap().is_empty(), "still leased by the current consumer");
    assert!(store.next_due().await.unwrap().is_some(), "the stale ack deleted nothing");

    let next = firing.next_attempt(clock.now() + chrono::Duration::hours(1));
    store.retry(&current, &next).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(next.due_at), "retry set the next due time, lease cleared");
    let malformed = postback::ports::Leased { firing: firing.clone(), receipt: "garbage".into() };
    store.ack(&malformed).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(next.due_at), "a malformed receipt acks nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_due_and_notifier_drive_the_local_dispatcher() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = open(&db_path(&dir), Duration::from_secs(5));
    assert_eq!(store.next_due().await.unwrap(), None, "empty queue");
    let notify = store.notifier().expect("the embedded queue signals new work");

    // Registered as a waiter before the enqueue, as a consumer parked in its wait is.
    let mut waiting = std::pin::pin!(notify.notified());
    waiting.as_mut().enable();
    let later = fixtures::firing("d_later", clock.now() + chrono::Duration::minutes(10));
    store.enqueue(std::slice::from_ref(&later)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), waiting).await.expect("a waiting consumer is woken");
    assert_eq!(store.next_due().await.unwrap(), Some(later.due_at));

    let sooner = fixtures::firing("d_sooner", clock.now() + chrono::Duration::minutes(1));
    store.enqueue(std::slice::from_ref(&sooner)).await.unwrap();
    assert_eq!(store.next_due().await.unwrap(), Some(sooner.due_at), "the earliest due time");
    // Nobody was waiting during that enqueue; the stored permit still wakes the next wait.
    tokio::time::timeout(Duration::from_secs(1), notify.notified()).await.expect("no lost wake-up");

    let now_due = fixtures::firing("d_now", clock.now());
    store.enqueue(std::slice::from_ref(&now_due)).await.unwrap();
    let leased = store.receive(10).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(
        store.next_due().await.unwrap(),
        Some(clock.now() + chrono::Duration::seconds(5)),
        "the leased firing comes back when its 5 s lease ends, before the 1 minute one"
    );
    store.ack(&leased[0]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_rows_are_errors_or_quarantined_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_path(&dir);
    let (store, clock) = open(&path, Duration::from_secs(30));
    store.create(&fixtures::postback("pb_bad", EventType::Click), &fixtures::audit("t")).await.unwrap();
    store.enqueue(&[fixtures::firing("d_bad", clock.now()), fixtures::firing("d_good", clock.now())]).await.unwrap();
    store.close().await;
    {
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute("UPDATE postbacks SET body = '{\"id\": 1' WHERE id = 'pb_bad'", []).unwrap();
        raw.execute("UPDATE firings SET payload = 'not json' WHERE delivery_id = 'd_bad'", []).unwrap();
    }
    // Reopened: the queue's payloads are read from the damaged file, not from memory.
    let store = open_on(&path, Duration::from_secs(30), &clock);
    assert!(matches!(PostbackStore::get(&store, "pb_bad").await, Err(StoreError::Corrupt(_))));
    assert!(matches!(store.list(None).await, Err(StoreError::Corrupt(_))));
    let received = store.receive(10).await.unwrap();
    assert_eq!(received.iter().map(|l| l.firing.delivery_id.as_str()).collect::<Vec<_>>(), ["d_good"]);
    assert_eq!(store.stats().quarantined_firings, 1);
    assert_eq!(store.next_due().await.unwrap().map(|t| t > clock.now()), Some(true), "only the leased one is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_something_that_is_not_a_database_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("garbage.sqlite");
    std::fs::write(&path, vec![0x42u8; 8192]).unwrap();
    match EmbeddedStore::open(&path, options(Duration::from_secs(1)), Arc::new(ManualClock::starting_now())) {
        Err(StoreError::Unavailable(message)) => assert!(message.contains("open"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

/// Throughput figures (not a pass/fail test): single-firing enqueue from 64 concurrent
/// callers with FULL and NORMAL sync, then receive + ack.
/// `cargo test -p postback --features testing --release --test it contract_embedded:: -- --ignored --nocapture throughput`
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn throughput() {
    const CALLERS: usize = 64;
    // (durability, most jobs per transaction, firings): max_batch 1 shows what group
    // commit buys.
    let runs = [(Durability::Full, 512, 20_000), (Durability::Full, 1, 5_000), (Durability::Normal, 512, 100_000)];
    for (durability, max_batch, total) in runs {
        let dir = match std::env::var_os("BENCH_DIR") {
            Some(base) => tempfile::tempdir_in(base).unwrap(),
            None => tempfile::tempdir().unwrap(),
        };
        let tuning = StoreTuning { durability, max_batch, ..StoreTuning::default() };
        let clock = Arc::new(ManualClock::starting_now());
        let store =
            EmbeddedStore::open_with(&db_path(&dir), options(Duration::from_secs(60)), tuning, clock.clone()).unwrap();
        let due = clock.now();
        let template = fixtures::firing("d", due);
        let started = Instant::now();
        let tasks: Vec<_> = (0..CALLERS)
            .map(|caller| {
                let store = store.clone();
                let template = template.clone();
                tokio::spawn(async move {
                    for i in (caller..total).step_by(CALLERS) {
                        let firing = Firing { delivery_id: format!("d_{i:06}"), ..template.clone() };
                        store.enqueue(&[firing]).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = started.elapsed();
        let stats = store.stats();
        println!(
            "{durability:?}, max_batch {max_batch}: {total} single-firing enqueues by {CALLERS} callers in {elapsed:.2?} = {:.0}/s \
             ({} transactions, {:.1} jobs/transaction)",
            total as f64 / elapsed.as_secs_f64(),
            stats.transactions,
            stats.jobs as f64 / stats.transactions as f64
        );

        // One consumer: receive up to 100, ack each concurrently (as the dispatcher does).
        let started = Instant::now();
        let mut done = 0;
        loop {
            let batch = store.receive(100).await.unwrap();
            if batch.is_empty() {
                break;
            }
            done += batch.len();
            futures::future::try_join_all(batch.iter().map(|l| store.ack(l))).await.unwrap();
        }
        let elapsed = started.elapsed();
        assert_eq!(done, total);
        println!(
            "{durability:?}, max_batch {max_batch}: receive(100) + ack of {done} firings in {elapsed:.2?} = {:.0}/s",
            done as f64 / elapsed.as_secs_f64()
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn combined_ingest_writes_are_one_job() {
    use postback::ports::CombinedWrites;
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = open(&db_path(&dir), Duration::from_secs(60));
    let click = fixtures::event(EventType::Click, "T_combined");
    let firing = fixtures::firing("d_combined", clock.now());
    let before = store.stats();
    store
        .record_and_enqueue(&[TouchRecord { event: click.clone() }], std::slice::from_ref(&firing), &["k_c".into()])
        .await
        .unwrap();
    let after = store.stats();
    assert_eq!(after.jobs - before.jobs, 1, "touches, firing and marker in one write job");
    assert_eq!(store.get_click("T_combined").await.unwrap(), Some(click));
    assert_eq!(store.seen(&["k_c".to_string()]).await.unwrap().len(), 1);
    let leased = store.receive(10).await.unwrap();
    assert_eq!(leased.iter().map(|l| l.firing.clone()).collect::<Vec<_>>(), vec![firing]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_delivered_logs_marks_and_acks_in_one_job_once() {
    use postback::ports::CombinedWrites;
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = open(&db_path(&dir), Duration::from_millis(300));
    let firing = fixtures::firing("d_settle", clock.now());
    store.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    let leased = store.receive(10).await.unwrap().pop().expect("leased");
    let entry = fixtures::log_entry(&firing, Outcome::Delivered);
    let before = store.stats();
    assert!(store.settle_delivered(&leased, &entry).await.unwrap(), "first delivery");
    assert_eq!(store.stats().jobs - before.jobs, 1, "one write job");
    assert!(store.is_delivered("d_settle").await.unwrap());
    assert_eq!(LogStore::get(&store, &entry.id).await.unwrap(), Some(entry.clone()));
    assert_eq!(store.depth().await.unwrap().queued, 0, "acknowledged with the entry");
    // A second consumer's settle of the same id (at-least-once): no second entry.
    let again = postback::domain::log::LogEntry { id: "other-entry".into(), ..entry.clone() };
    assert!(!store.settle_delivered(&leased, &again).await.unwrap());
    assert_eq!(LogStore::get(&store, "other-entry").await.unwrap(), None);
    assert_eq!(store.stats().stale_receipts, 1, "its ack found nothing left to delete");
}

/// A held firing is held and off the queue in one commit, so a release that reads it
/// held finds no leased row to collide with: its enqueue queues it. A stale lease still
/// holds, and deletes nothing of the consumer that took the lease over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_ack_is_one_job_and_a_release_after_it_queues_the_firing() {
    use postback::ports::CombinedWrites;
    let dir = tempfile::tempdir().unwrap();
    let lease = Duration::from_secs(1);
    let (store, clock) = open(&db_path(&dir), lease);
    let firing = fixtures::firing("d_held", clock.now());
    store.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    let leased = store.receive(10).await.unwrap().pop().expect("leased");
    let before = store.stats();
    store.hold_and_ack(&leased, &firing).await.unwrap();
    assert_eq!(store.stats().jobs - before.jobs, 1, "one write job");
    assert_eq!(store.held(&firing.postback_id, 10).await.unwrap(), vec![firing.clone()]);
    assert_eq!(store.depth().await.unwrap().queued, 0, "acknowledged with the hold");
    // The release: queued again (not dropped as a duplicate of the leased row), unheld.
    store.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    store.unhold(std::slice::from_ref(&firing)).await.unwrap();
    let again = store.receive(10).await.unwrap();
    assert_eq!(again.iter().map(|l| l.firing.clone()).collect::<Vec<_>>(), vec![firing.clone()]);

    // A stale lease: the firing is held, the current consumer's row stays.
    clock.advance(lease);
    let current = store.receive(10).await.unwrap().pop().expect("comes back after the lease");
    store.hold_and_ack(&again[0], &firing).await.unwrap();
    assert_eq!(store.stats().stale_receipts, 1, "the stale ack deleted nothing");
    assert_eq!(store.held_count(&firing.postback_id).await.unwrap(), 1);
    assert_eq!(store.depth().await.unwrap().queued, 1);
    store.ack(&current).await.unwrap();
    assert_eq!(store.depth().await.unwrap().queued, 0, "the current lease still acks");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_firing_already_delivered_is_dropped_at_lease() {
    use postback::ports::CombinedWrites;
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = open(&db_path(&dir), Duration::from_secs(60));
    assert!(store.lease_checks_delivered());
    let firing = fixtures::firing("d_crashed", clock.now());
    let other = fixtures::firing("d_other", clock.now());
    store.enqueue(&[firing.clone(), other.clone()]).await.unwrap();
    // Delivered and logged, then a crash before the ack (two separate commits, as a
    // version without `settle_delivered` made them).
    assert!(store.record_delivered(&fixtures::log_entry(&firing, Outcome::Delivered)).await.unwrap());
    let leased = store.receive(10).await.unwrap();
    assert_eq!(leased.iter().map(|l| l.firing.delivery_id.as_str()).collect::<Vec<_>>(), vec!["d_other"]);
    assert_eq!(store.stats().delivered_at_lease, 1);
    assert_eq!(store.depth().await.unwrap().queued, 1, "the delivered one is gone, the other leased");
}

/// Audit records older than `AUDIT_RETENTION_DAYS` go in the purge, which takes its
/// "now" from the caller's clock; younger ones and the rest of the store stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_purge_drops_records_past_their_retention() {
    use postback::domain::access::{AuditAction, AuditFilter};
    use postback::ports::AccessStore;
    let dir = tempfile::tempdir().unwrap();
    let (store, _clock) = open(&db_path(&dir), Duration::from_secs(30));
    let old = fixtures::audit_of(AuditAction::PostbackTest, "pb_old");
    store.append_audit(&old).await.unwrap();
    let mut young = fixtures::audit_of(AuditAction::PostbackTest, "pb_young");
    young.at = old.at + chrono::Duration::days(10);
    store.append_audit(&young).await.unwrap();
    let now = old.at + chrono::Duration::days(365) + chrono::Duration::seconds(1);
    assert_eq!(store.purge_audit(now, chrono::Duration::days(365)).await.unwrap(), 1);
    let left = store.query_audit(&AuditFilter::default()).await.unwrap().items;
    assert_eq!(left, vec![young]);
    assert_eq!(store.purge_audit(now, chrono::Duration::days(365)).await.unwrap(), 0);
}
