//! The local dispatcher loop (`run_queue_loop`) driven by the manual clock: it sleeps
//! on the clock port, so a test moves time on and lets the loop run (`settle`).

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ms, settle, start, World, FIRST_WAIT_MS};
use crate::domain::log::Outcome;
use crate::service::run_queue_loop;
use crate::testing::Answer;

const URL: &str = "https://aff.example/pb";
/// How long a test waits (real time) for a stopped loop to return: a guard, not a pause.
const GUARD: Duration = Duration::from_secs(5);

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

fn start_loop(w: &World, concurrency: usize, drain: Duration) -> Running {
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run_queue_loop(w.app.dispatcher(), concurrency, stopped, drain));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(GUARD, self.task).await.expect("the loop stops").unwrap();
    }
}

async fn click(w: &World, txid: &str) {
    w.ingest_one(json!({"type": "click", "transaction_id": txid, "offer_id": "O1", "publisher_id": "P1"})).await;
}

/// Move the clock on 1 ms at a time (letting the loop run) until `n` requests were
/// sent; at most `limit_ms`.
async fn step_until_sent(w: &World, n: usize, limit_ms: u64) {
    for _ in 0..limit_ms {
        if w.sender.count() >= n {
            return;
        }
        w.advance_ms(1);
        settle().await;
    }
    assert!(w.sender.count() >= n, "{n} requests not sent within {limit_ms} ms of clock time");
}

#[tokio::test]
async fn a_delayed_firing_fires_only_once_the_clock_reaches_its_due_time() {
    let w = World::new();
    w.postback(json!({"name": "Later", "type": "click", "delay_seconds": 10, "url": URL})).await;
    let running = start_loop(&w, 4, Duration::from_secs(5));
    settle().await;
    click(&w, "T1").await;
    settle().await;
    let due = start() + ms(10_000);
    assert_eq!(w.queued()[0].due_at, due);
    assert_eq!(w.sender.count(), 0, "not due yet");
    w.advance_ms(9_999);
    settle().await;
    assert_eq!(w.sender.count(), 0, "1 ms before it is due");
    // The idle loop naps at least 5 ms: the firing goes out at most that late.
    step_until_sent(&w, 1, 5).await;
    let sent = w.sender.requests();
    assert_eq!(sent.len(), 1);
    assert!(sent[0].at >= due && sent[0].at <= due + ms(5), "sent at {}, due at {due}", sent[0].at);
    settle().await;
    assert_eq!(w.logs()[0].outcome, Outcome::Delivered);
    assert!(w.queued().is_empty(), "acked");
    running.stop().await;
}

#[tokio::test]
async fn an_enqueue_wakes_the_idle_loop_without_the_clock_moving() {
    let w = World::new();
    w.postback(json!({"name": "Now", "type": "click", "url": URL})).await;
    let running = start_loop(&w, 4, Duration::from_secs(5));
    settle().await;
    click(&w, "T1").await;
    settle().await;
    assert_eq!(w.sender.count(), 1, "woken by the queue's notifier, not a timer");
    assert_eq!(w.sender.requests()[0].at, start());
    running.stop().await;
}

#[tokio::test]
async fn a_retry_goes_out_when_its_backoff_has_passed() {
    let w = World::new();
    w.postback(json!({"name": "Flaky", "type": "click", "url": URL})).await;
    w.sender.script(URL, [Answer::status(503)]);
    let running = start_loop(&w, 4, Duration::from_secs(5));
    click(&w, "T1").await;
    settle().await;
    assert_eq!(w.sender.count(), 1);
    assert_eq!(w.logs()[0].next_attempt_at, Some(start() + ms(FIRST_WAIT_MS)));
    w.advance_ms(FIRST_WAIT_MS as u64 - 1);
    settle().await;
    assert_eq!(w.sender.count(), 1, "1 ms before the backoff ran out");
    step_until_sent(&w, 2, 5).await;
    settle().await;
    assert_eq!(w.logs().iter().map(|e| e.outcome).collect::<Vec<_>>(), [Outcome::Delivered, Outcome::Retrying]);
    running.stop().await;
}

#[tokio::test]
async fn no_more_than_the_concurrency_limit_is_in_flight() {
    let w = World::new();
    w.postback(json!({"name": "Slow", "type": "click", "url": URL})).await;
    w.sender.set_default(Answer::ok().after(Duration::from_secs(1)));
    let running = start_loop(&w, 1, Duration::from_secs(5));
    click(&w, "T1").await;
    click(&w, "T2").await;
    settle().await;
    assert_eq!(w.sender.count(), 1, "one at a time");
    w.advance_ms(1_000);
    settle().await;
    assert_eq!(w.sender.count(), 2, "the second once the first finished");
    w.advance_ms(1_000);
    settle().await;
    assert_eq!(w.logs().len(), 2);
    running.stop().await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_firings_finish_within_the_drain_time() {
    let w = World::new();
    w.postback(json!({"name": "Slow", "type": "click", "url": URL})).await;
    w.sender.set_default(Answer::ok().after(Duration::from_secs(2)));
    let running = start_loop(&w, 4, Duration::from_secs(5));
    click(&w, "T1").await;
    settle().await;
    assert_eq!(w.sender.count(), 1, "in flight");
    running.stop.send(true).unwrap();
    settle().await;
    assert!(!running.task.is_finished(), "draining: the firing is still in flight");
    w.advance_ms(2_000);
    tokio::time::timeout(GUARD, running.task).await.unwrap().unwrap();
    assert_eq!(w.logs()[0].outcome, Outcome::Delivered, "finished before the loop returned");
    assert!(w.queued().is_empty());
}

#[tokio::test]
async fn shutdown_abandons_firings_still_in_flight_after_the_drain_time() {
    let w = World::new();
    w.postback(json!({"name": "Stuck", "type": "click", "url": URL})).await;
    w.sender.set_default(Answer::ok().after(Duration::from_secs(30)));
    let running = start_loop(&w, 4, Duration::from_secs(5));
    click(&w, "T1").await;
    settle().await;
    running.stop.send(true).unwrap();
    settle().await;
    w.advance_ms(4_999);
    settle().await;
    assert!(!running.task.is_finished(), "1 ms before the drain time");
    w.advance_ms(1);
    tokio::time::timeout(GUARD, running.task).await.unwrap().unwrap();
    assert!(w.logs().is_empty(), "abandoned mid-send: nothing logged");
    // Not acked: it comes back when its lease (60 s from the receive) runs out.
    w.advance_ms(60_000 - 5_000 - 1);
    assert!(w.receive().await.is_empty(), "still leased");
    w.advance_ms(1);
    assert_eq!(w.receive_one().await.firing.event.transaction_id, "T1");
}
