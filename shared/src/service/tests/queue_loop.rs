//! The local dispatcher loop (`run_queue_loop`) driven by the manual clock: it sleeps
//! on the clock port, so a test moves time on and lets the loop run (`settle`).

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use std::sync::Arc;

use super::{ms, settle, spec, start, World, FIRST_WAIT_MS, RETRY};
use crate::domain::log::Outcome;
use crate::ports::FiringQueue;
use crate::service::{run_queue_loop, App, LoopLimits, Policy, Ports, SlotReleasingSender};
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

// Fair sending: requests in flight per destination (scheme, host, port) are bounded, so
// a slow receiver delays only its own firings.

const SLOW: &str = "https://slow.example/pb";
const FAST: &str = "https://fast.example/pb";
/// The slow receiver's answer time.
const SLOW_MS: u64 = 10_000;

/// How far `run_checking_bound` moves the clock between checks.
const STEP_MS: u64 = 10;

/// A world whose sender is wrapped as on the local server (`SlotReleasingSender`: a
/// firing's destination slot frees when its request is answered).
fn fair_world() -> World {
    let plain = World::new();
    let ports = Ports { sender: Arc::new(SlotReleasingSender::new(plain.sender.clone())), ..plain.app.ports.clone() };
    let app = App::new(
        ports,
        Policy { retry: RETRY, catalog_ttl: Duration::from_secs(60), catalog_check: None, ..plain.app.policy.clone() },
    );
    World { app, ..plain }
}

fn start_fair_loop(w: &World, total: usize, per_destination: usize) -> Running {
    let (stop, stopped) = watch::channel(false);
    let limits = LoopLimits { total, per_destination };
    // No drain: the tests stop the loop with slow sends in flight and the clock still.
    let task = tokio::spawn(run_queue_loop(w.app.dispatcher(), limits, stopped, Duration::ZERO));
    Running { stop, task }
}

async fn clicks(w: &World, offer: &str, from: usize, n: usize, sub1: Option<&str>) {
    let events: Vec<_> = (from..from + n)
        .map(|i| {
            let mut e = json!({"type": "click", "transaction_id": format!("{offer}-{i}"), "offer_id": offer,
                "publisher_id": "P1"});
            if let Some(s) = sub1 {
                e["sub1"] = json!(s);
            }
            e
        })
        .collect();
    w.ingest(&events).await;
}

/// Requests to `prefix` sent and not yet answered (logged).
fn in_flight(w: &World, prefix: &str) -> usize {
    let sent = w.sender.requests_to(prefix).len();
    let done = w.logs().iter().filter(|e| e.url.starts_with(prefix)).count();
    sent - done
}

/// Move the clock on in 1 ms steps for `ms`, checking after each that no destination
/// has more than `bound` requests in flight.
async fn run_checking_bound(w: &World, ms: u64, prefixes: &[&str], bound: usize) {
    // Every scripted answer, retry and poll of these tests falls on a multiple of STEP_MS,
    // so the states seen are those of 1 ms steps, at a tenth of the steps.
    assert_eq!(ms % STEP_MS, 0, "{ms} ms is not a whole number of {STEP_MS} ms steps");
    for _ in 0..ms / STEP_MS {
        w.advance_ms(STEP_MS);
        settle().await;
        for prefix in prefixes {
            let n = in_flight(w, prefix);
            assert!(n <= bound, "{n} requests in flight to {prefix} (bound {bound}) at {}", w.now());
        }
    }
}

#[tokio::test]
async fn a_slow_destination_delays_only_its_own_firings() {
    // (per destination, slow firings queued first, fast firings queued after them)
    let cases: &[(usize, usize, usize)] = &[(4, 40, 10), (1, 5, 3), (16, 100, 30)];
    for &(per_destination, slow_n, fast_n) in cases {
        let w = fair_world();
        w.postback(
            json!({"name": "Slow", "type": "click", "offers": ["SLOW"], "url": format!("{SLOW}?t={{transaction_id}}")}),
        )
        .await;
        w.postback(
            json!({"name": "Fast", "type": "click", "offers": ["FAST"], "url": format!("{FAST}?t={{transaction_id}}")}),
        )
        .await;
        w.sender.script(SLOW, (0..slow_n).map(|_| Answer::ok().after(Duration::from_millis(SLOW_MS))));
        clicks(&w, "SLOW", 0, slow_n, None).await;
        clicks(&w, "FAST", 0, fast_n, None).await;
        let running = start_fair_loop(&w, 256, per_destination);
        settle().await;
        let case = format!("per destination {per_destination}, {slow_n} slow, {fast_n} fast");
        let fast = w.sender.requests_to(FAST);
        assert_eq!(fast.len(), fast_n, "{case}: every fast firing went out at once, past the slow backlog");
        assert!(fast.iter().all(|r| r.at == start()), "{case}: none waited for the slow receiver");
        assert_eq!(w.sender.requests_to(SLOW).len(), per_destination, "{case}: the slow receiver gets its bound");
        // The rest of the slow backlog waits unleased in the queue, holding no sender.
        assert_eq!(w.queued().len(), slow_n, "{case}: the slow ones are still queued (in flight or waiting)");
        run_checking_bound(&w, SLOW_MS, &[SLOW, FAST], per_destination).await;
        assert_eq!(
            w.sender.requests_to(SLOW).len(),
            2 * per_destination,
            "{case}: the next ones as the first answered"
        );
        running.stop().await;
    }
}

#[tokio::test]
async fn fast_firings_arriving_while_the_slow_destination_is_full_go_out_at_once() {
    let w = fair_world();
    w.postback(json!({"name": "Slow", "type": "click", "offers": ["SLOW"], "url": SLOW})).await;
    w.postback(json!({"name": "Fast", "type": "click", "offers": ["FAST"], "url": FAST})).await;
    w.sender.script(SLOW, (0..50).map(|_| Answer::ok().after(Duration::from_millis(SLOW_MS))));
    let running = start_fair_loop(&w, 8, 4);
    clicks(&w, "SLOW", 0, 50, None).await;
    settle().await;
    assert_eq!(in_flight(&w, SLOW), 4);
    for round in 0..5 {
        w.advance_ms(1_000);
        settle().await;
        clicks(&w, "FAST", round * 3, 3, None).await;
        settle().await;
        let sent_at: Vec<_> = w.sender.requests_to(FAST).iter().skip(round * 3).map(|r| r.at).collect();
        assert_eq!(sent_at, vec![w.now(); 3], "round {round}: sent when queued");
    }
    // Idle but for the full destination: the loop sleeps until a send finishes or work
    // comes, rather than polling the queue's passed-over backlog.
    let receives = w.memory.queue.receives();
    run_checking_bound(&w, 1_000, &[SLOW], 4).await;
    let polled = w.memory.queue.receives() - receives;
    assert!(polled <= 2, "{polled} receives in 1 s of clock time with only a full destination due");
    running.stop().await;
}

#[tokio::test]
async fn postbacks_share_the_bound_of_their_destination_and_ports_are_separate_destinations() {
    let w = fair_world();
    // Two postbacks, one destination (the path and query do not matter); a third on the
    // same host but another port.
    let urls = ["https://aff.example/a?t={transaction_id}", "https://AFF.example:443/b", "https://aff.example:8443/c"];
    for (i, url) in urls.iter().enumerate() {
        w.postback(json!({"name": format!("P{i}"), "type": "click", "offers": [format!("O{i}")], "url": url})).await;
    }
    w.sender.set_default(Answer::ok().after(Duration::from_millis(SLOW_MS)));
    for i in 0..3 {
        clicks(&w, &format!("O{i}"), 0, 5, None).await;
    }
    let running = start_fair_loop(&w, 256, 3);
    settle().await;
    let on_443 =
        w.sender.requests_to("https://aff.example/a").len() + w.sender.requests_to("https://AFF.example:443/b").len();
    assert_eq!(on_443, 3, "one bound for both postbacks of https://aff.example:443");
    assert_eq!(w.sender.requests_to("https://aff.example:8443/").len(), 3, "another port, its own bound");
    let recorded: Vec<_> = w.queued().into_iter().filter_map(|f| f.destination).collect();
    assert_eq!(recorded.iter().filter(|d| *d == "https://aff.example:443").count(), 10, "recorded at enqueue");
    assert_eq!(recorded.iter().filter(|d| *d == "https://aff.example:8443").count(), 5);
    running.stop().await;
}

#[tokio::test]
async fn a_firing_queued_for_another_destination_is_bounded_by_the_one_it_goes_to_now() {
    let w = fair_world();
    w.postback(json!({"name": "Slow", "type": "click", "offers": ["SLOW"], "url": SLOW})).await;
    let moved = w
        .postback(json!({"name": "Moves", "type": "click", "offers": ["M"], "delay_seconds": 6,
            "url": "https://before.example/pb"}))
        .await;
    // Slower than the longest a leased firing waits in memory for a slot (5 s).
    const HANGS_MS: u64 = 20_000;
    w.sender.set_default(Answer::ok().after(Duration::from_millis(HANGS_MS)));
    let running = start_fair_loop(&w, 256, 2);
    clicks(&w, "SLOW", 0, 2, None).await;
    clicks(&w, "M", 0, 2, None).await;
    settle().await;
    assert_eq!(in_flight(&w, SLOW), 2, "the slow destination is full");
    // Its URL moves to the full destination while its firings wait for their delay.
    let moved_spec = json!({"name": "Moves", "type": "click", "offers": ["M"], "delay_seconds": 6,
        "url": format!("{SLOW}?moved=1")});
    w.app.replace_postback(&moved, spec(&moved_spec)).await.unwrap();
    run_checking_bound(&w, 6_000, &[SLOW], 2).await;
    assert_eq!(w.sender.count(), 2, "not sent past the bound of where they go now");
    // After waiting 5 s in memory for a slot they are put back, under the right
    // destination, due as before, no attempt used.
    run_checking_bound(&w, 5_000, &[SLOW], 2).await;
    let moved_rows: Vec<_> = w.queued().into_iter().filter(|f| f.postback_id == moved).collect();
    assert_eq!(moved_rows.len(), 2);
    for f in &moved_rows {
        assert_eq!(f.destination.as_deref(), Some("https://slow.example:443"), "re-queued under the right one");
        assert_eq!(f.due_at, start() + ms(6_000), "keeping its due time");
        assert_eq!(f.attempt, 1, "no attempt used");
    }
    run_checking_bound(&w, HANGS_MS - 11_000, &[SLOW], 2).await;
    let moved_sent: Vec<_> = w.sender.requests_to(&format!("{SLOW}?moved=1"));
    assert_eq!(moved_sent.len(), 2, "sent once the first two answered");
    assert!(moved_sent.iter().all(|r| r.at == start() + ms(HANGS_MS as i64)), "at once");
    running.stop().await;
}

#[tokio::test]
async fn a_firing_queued_without_a_destination_counts_where_it_goes() {
    let w = World::new();
    let id = w.postback(json!({"name": "Slow", "type": "click", "offers": ["SLOW"], "url": SLOW})).await;
    w.sender.set_default(Answer::ok().after(Duration::from_millis(SLOW_MS)));
    clicks(&w, "SLOW", 0, 3, None).await;
    // As from before the field existed (or a producer that does not set it).
    let mut legacy = w.queued()[0].clone();
    legacy.delivery_id = "d_legacy".into();
    legacy.destination = None;
    legacy.postback_id = id;
    w.memory.queue.enqueue(&[legacy]).await.unwrap();
    let running = start_fair_loop(&w, 256, 3);
    settle().await;
    run_checking_bound(&w, 100, &[SLOW], 3).await;
    assert_eq!(w.sender.count(), 3);
    running.stop().await;
}
