//! The port contract suite on the in-memory fakes (`postback::adapters::memory`), so
//! they cannot drift from the real adapters, plus what the fakes promise beyond it (as
//! `contract_embedded` does for the embedded store): retention, next due time and
//! notifier, stale receipts, the manual clock and the scripted sender. Their time is a
//! manual clock that the checks' pauses move on: the whole suite takes no real time.
//!
//! Run: `cargo test -p postback --features testing --test it contract_memory`.
#![cfg(feature = "testing")]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use postback::domain::delivery::{OutboundRequest, SendFailure};
use postback::domain::event::{EventType, StatusKey};
use postback::domain::log::{LogFilter, Outcome};
use postback::ports::{Clock, FiringQueue, HttpSender, Jitter, LogStore, TouchRecord, TouchStore};
use postback::testing::{
    fixtures, Answer, ManualClock, MemoryAdapters, MemoryFactory, MemoryOptions, ScriptedJitter, ScriptedSender,
};

postback::contract_tests!(factory = MemoryFactory, extra = [enqueue_dedupe, fair_receive]);

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

fn memory(lease: Duration, retention: chrono::Duration) -> MemoryAdapters {
    let clock = Arc::new(ManualClock::starting_now());
    MemoryAdapters::new(clock, MemoryOptions { lease, retention, ..MemoryOptions::default() })
}

#[tokio::test]
async fn reads_ignore_rows_older_than_the_retention() {
    let m = memory(Duration::from_secs(30), chrono::Duration::hours(1));
    let firing = fixtures::firing("d_old", m.clock.now());
    let mut appended = fixtures::log_entry(&firing, Outcome::Retrying);
    appended.fired_at = m.clock.now();
    let mut delivered = fixtures::log_entry(&firing, Outcome::Delivered);
    delivered.fired_at = m.clock.now();
    m.touches
        .record(&[
            TouchRecord { event: fixtures::event(EventType::Click, "T1") },
            TouchRecord { event: fixtures::event(EventType::Conversion, "T1") },
        ])
        .await
        .unwrap();
    m.touches.mark_seen(&["k_old".to_string()]).await.unwrap();
    m.logs.append(std::slice::from_ref(&appended)).await.unwrap();
    assert!(m.logs.record_delivered(&delivered).await.unwrap());
    m.queue.enqueue(&[fixtures::firing("d_queued", m.clock.now() + chrono::Duration::days(1))]).await.unwrap();

    m.clock.advance(Duration::from_secs(3_599));
    assert!(m.touches.get_click("T1").await.unwrap().is_some(), "1 s before the retention ends");
    m.touches.mark_seen(&["k_old".to_string()]).await.unwrap();
    m.clock.advance(Duration::from_secs(2));
    assert_eq!(m.touches.get_click("T1").await.unwrap(), None);
    assert_eq!(m.touches.get_status("T1", &StatusKey::Conversion).await.unwrap(), None);
    assert!(m.touches.seen(&["k_old".to_string()]).await.unwrap().is_empty(), "marking again kept the first time");
    assert!(!m.logs.is_delivered("d_old").await.unwrap());
    assert_eq!(m.logs.get(&appended.id).await.unwrap(), None);
    assert!(m.logs.query(&LogFilter { limit: 10, ..LogFilter::default() }).await.unwrap().items.is_empty());
    assert!(m.queue.next_due().await.unwrap().is_some(), "queued firings are work, not history");
    // An expired marker no longer blocks a delivery, nor an enqueue.
    assert!(m.logs.record_delivered(&fixtures::log_entry(&firing, Outcome::Delivered)).await.unwrap());
    m.clock.advance(Duration::from_secs(3_601));
    m.queue.enqueue(&[fixtures::firing("d_old", m.clock.now())]).await.unwrap();
    assert_eq!(m.queue.receive(10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn next_due_and_notifier_follow_the_queue() {
    let m = memory(Duration::from_secs(5), chrono::Duration::days(30));
    assert_eq!(m.queue.next_due().await.unwrap(), None, "empty queue");
    let notify = m.queue.notifier().expect("the memory queue signals new work");
    let later = fixtures::firing("d_later", m.clock.now() + chrono::Duration::minutes(10));
    let waiter = {
        let notify = Arc::clone(&notify);
        tokio::spawn(async move { notify.notified().await })
    };
    tokio::task::yield_now().await;
    m.queue.enqueue(std::slice::from_ref(&later)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), waiter).await.expect("a waiting consumer is woken").unwrap();
    assert_eq!(m.queue.next_due().await.unwrap(), Some(later.due_at));
    let now = fixtures::firing("d_now", m.clock.now());
    m.queue.enqueue(std::slice::from_ref(&now)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(1), notify.notified()).await.expect("no lost wake-up");
    let leased = m.queue.receive(10).await.unwrap();
    assert_eq!(leased.len(), 1);
    assert_eq!(m.queue.next_due().await.unwrap(), Some(m.clock.now() + chrono::Duration::seconds(5)), "its lease end");
}

#[tokio::test]
async fn a_stale_consumer_cannot_ack_or_retry_a_re_leased_firing() {
    let m = memory(Duration::from_secs(1), chrono::Duration::days(30));
    let firing = fixtures::firing("d_stale", m.clock.now());
    m.queue.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    let stale = m.queue.receive(10).await.unwrap().pop().unwrap();
    m.clock.advance(Duration::from_secs(1));
    let current = m.queue.receive(10).await.unwrap().pop().expect("comes back after the lease");
    m.queue.ack(&stale).await.unwrap();
    m.queue.retry(&stale, &firing.next_attempt(m.clock.now())).await.unwrap();
    assert_eq!(m.queue.stale_receipts(), 2);
    assert_eq!(m.queue.queued(), vec![firing.clone()], "the stale calls changed nothing");
    let next = firing.next_attempt(m.clock.now() + chrono::Duration::hours(1));
    m.queue.retry(&current, &next).await.unwrap();
    assert_eq!(m.queue.next_due().await.unwrap(), Some(next.due_at), "retry set the next due time, lease cleared");
    let malformed = postback::ports::Leased { firing, receipt: "garbage".into() };
    m.queue.ack(&malformed).await.unwrap();
    assert_eq!(m.queue.len(), 1);
}

#[tokio::test]
async fn the_manual_clock_moves_only_when_told_and_wakes_sleepers() {
    let clock = Arc::new(ManualClock::new(at("2030-01-01T00:00:00.000999Z")));
    assert_eq!(clock.now(), at("2030-01-01T00:00:00Z"), "whole milliseconds");
    let sleeper = {
        let clock = clock.clone();
        tokio::spawn(async move { clock.sleep_until(at("2030-01-01T00:00:01Z")).await })
    };
    tokio::task::yield_now().await;
    clock.advance(Duration::from_micros(999_900));
    assert_eq!(clock.now(), at("2030-01-01T00:00:00.999Z"), "sub-millisecond rests are dropped");
    tokio::task::yield_now().await;
    assert!(!sleeper.is_finished(), "1 ms early");
    clock.advance(Duration::from_millis(5));
    tokio::time::timeout(Duration::from_secs(1), sleeper).await.expect("woken once past").unwrap();
    clock.sleep_until(at("2029-01-01T00:00:00Z")).await; // in the past: at once
    clock.set(at("2029-06-01T00:00:00Z"));
    assert_eq!(clock.now(), at("2029-06-01T00:00:00Z"), "set may go back");

    let jitter = ScriptedJitter::new([0.25, 0.75]);
    assert_eq!([jitter.next(), jitter.next(), jitter.next()], [0.25, 0.75, 0.75], "the last value repeats");
    assert!(ScriptedJitter::new([1.0]).next() < 1.0, "kept in [0, 1)");
}

fn get(url: &str) -> OutboundRequest {
    OutboundRequest {
        method: "GET".into(),
        url: url.into(),
        headers: Default::default(),
        body: None,
        public_only: false,
    }
}

#[tokio::test]
async fn the_scripted_sender_answers_per_url_in_turn_and_records_everything() {
    let clock = Arc::new(ManualClock::new(at("2030-01-01T00:00:00Z")));
    let sender = Arc::new(ScriptedSender::with_clock(clock.clone()));
    sender.set_default(Answer::status(204));
    sender.script("https://a.example/", [Answer::status(503).header("Retry-After", "30").body("busy"), Answer::ok()]);
    sender.script("https://a.example/deep", [Answer::connection_error("reset")]);
    sender.script("https://a.example/", [Answer::timeout(Duration::from_secs(10))]);

    let a = sender.send(&get("https://a.example/x")).await.unwrap();
    assert_eq!((a.status, a.retry_after.as_deref(), a.body.as_str()), (503, Some("30"), "busy"));
    assert_eq!(
        sender.send(&get("https://a.example/deep/1")).await,
        Err(SendFailure::Connect("reset".into())),
        "longest prefix"
    );
    assert_eq!(sender.send(&get("https://a.example/deep/2")).await.unwrap().status, 204, "its script is used up");
    assert_eq!(sender.send(&get("https://a.example/y")).await.unwrap().status, 200);
    assert_eq!(sender.send(&get("https://a.example/z")).await, Err(SendFailure::Timeout(10_000)));
    assert_eq!(sender.send(&get("https://b.example/")).await.unwrap().status, 204, "no script: the default");
    assert_eq!(sender.count(), 6);
    assert_eq!(sender.requests_to("https://a.example/deep").len(), 2);

    // A delayed answer comes after that long on the sender's clock.
    sender.set_default(Answer::ok().after(Duration::from_secs(2)).body(&"x".repeat(10_000)));
    let slow = {
        let sender = sender.clone();
        tokio::spawn(async move { sender.send(&get("https://c.example/")).await })
    };
    sender.wait_for_requests(7).await;
    assert!(!slow.is_finished());
    clock.advance(Duration::from_secs(2));
    let response = slow.await.unwrap().unwrap();
    assert_eq!(response.duration, Duration::from_secs(2));
    assert_eq!(response.body.len(), postback::domain::log::MAX_LOGGED_RESPONSE_BYTES, "the body is capped");
    assert_eq!(sender.requests()[6].at, at("2030-01-01T00:00:00Z"), "recorded when sent");
}
