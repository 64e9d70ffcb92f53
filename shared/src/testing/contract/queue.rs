use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{CLOCK_SLACK, LEASE, POLL};
use crate::domain::firing::Firing;
use crate::domain::log::{LogFilter, Outcome};
use crate::ports::Leased;
use crate::testing::{fixtures, Adapters};

/// How long a due firing may take to show up.
const SHOW_UP: Duration = Duration::from_secs(5);

fn ids(batch: &[Leased]) -> Vec<&str> {
    batch.iter().map(|l| l.firing.delivery_id.as_str()).collect()
}

fn already_due(a: &Adapters) -> DateTime<Utc> {
    a.now() - chrono::Duration::seconds(1)
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `a.now()` + `d`: deadlines are on the adapters' time (real, or their manual clock).
fn after(a: &Adapters, d: Duration) -> DateTime<Utc> {
    a.now() + chrono(d)
}

/// Poll until `delivery_id` is handed out; returns it and the time just before the
/// `receive` call that returned it (its lease started no earlier). Any other firing
/// received meanwhile fails the check: the adapters are fresh.
async fn wait_for(a: &Adapters, delivery_id: &str, deadline: DateTime<Utc>, what: &str) -> (Leased, DateTime<Utc>) {
    loop {
        let asked_at = a.now();
        let batch = a.queue.receive(10).await.unwrap();
        let (wanted, other): (Vec<Leased>, Vec<Leased>) =
            batch.into_iter().partition(|l| l.firing.delivery_id == delivery_id);
        assert!(other.is_empty(), "{what}: unexpected firings received: {:?}", ids(&other));
        assert!(wanted.len() <= 1, "{what}: {delivery_id} handed out {} times at once", wanted.len());
        if let Some(leased) = wanted.into_iter().next() {
            return (leased, asked_at);
        }
        assert!(a.now() < deadline, "{what}: {delivery_id} was not received in time");
        a.pause(POLL).await;
    }
}

/// Nothing else may be handed out before `due`: instead of polling an empty queue until a
/// deadline, enqueue a sentinel due then and wait for it. Any firing that comes back
/// before it (an acked one, a replaced attempt) is received first and fails the check.
async fn expect_nothing_before_sentinel(a: &Adapters, due: DateTime<Utc>, what: &str) {
    let sentinel = fixtures::firing("d_sentinel", due);
    a.queue.enqueue(std::slice::from_ref(&sentinel)).await.unwrap();
    let (leased, _) = wait_for(a, "d_sentinel", due.max(a.now()) + chrono(SHOW_UP), what).await;
    a.queue.ack(&leased).await.unwrap();
}

/// Poll until `firing` (due in the future) is handed out, failing if that happens
/// before its `due_at`. At least one poll must come back empty first.
async fn wait_until_due(a: &Adapters, firing: &Firing, what: &str) -> Leased {
    let deadline = firing.due_at.max(a.now()) + chrono(SHOW_UP);
    let mut empty_polls = 0;
    loop {
        let batch = a.queue.receive(10).await.unwrap();
        let returned_at = a.now();
        if let Some(leased) = batch.iter().find(|l| l.firing.delivery_id == firing.delivery_id) {
            assert!(
                returned_at + chrono(CLOCK_SLACK) >= firing.due_at,
                "{what}: received at {returned_at}, before it was due at {}",
                firing.due_at
            );
            assert!(empty_polls > 0, "{what}: received at the first poll, before it was due");
            assert_eq!(batch.len(), 1, "{what}: unexpected firings received: {:?}", ids(&batch));
            return leased.clone();
        }
        assert!(batch.is_empty(), "{what}: unexpected firings received: {:?}", ids(&batch));
        empty_polls += 1;
        assert!(a.now() < deadline, "{what}: not received within {SHOW_UP:?} after it was due");
        a.pause(POLL).await;
    }
}

/// What the dispatcher does with a leased firing (minus the HTTP call): skip it if it
/// was delivered, else "send" it and record the delivery; ack either way. Returns
/// whether it was sent.
async fn dispatch(a: &Adapters, leased: &Leased) -> bool {
    let sent = !a.logs.is_delivered(&leased.firing.delivery_id).await.unwrap();
    if sent {
        let entry = fixtures::log_entry(&leased.firing, Outcome::Delivered);
        assert!(a.logs.record_delivered(&entry).await.unwrap(), "not delivered, so record_delivered must be true");
    }
    a.queue.ack(leased).await.unwrap();
    sent
}

/// Receive and dispatch everything that shows up during `window`; returns how many
/// were received and how many sent.
async fn dispatch_for(a: &Adapters, window: Duration) -> (usize, usize) {
    let deadline = after(a, window);
    let (mut received, mut sent) = (0, 0);
    while a.now() < deadline {
        let batch = a.queue.receive(10).await.unwrap();
        for leased in &batch {
            received += 1;
            sent += usize::from(dispatch(a, leased).await);
        }
        if batch.is_empty() {
            a.pause(POLL).await;
        }
    }
    (received, sent)
}

/// enqueue → receive (whole) → ack → it never comes back, not even after the lease.
pub async fn queue_enqueue_receive_ack(a: &Adapters) {
    let firing = fixtures::firing("d_basic", already_due(a));
    a.queue.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    a.queue.enqueue(&[]).await.unwrap();
    let (leased, asked_at) = wait_for(a, "d_basic", after(a, SHOW_UP), "due firing").await;
    assert_eq!(leased.firing, firing, "the firing comes back whole");
    a.queue.ack(&leased).await.unwrap();
    expect_nothing_before_sentinel(
        a,
        asked_at + chrono(LEASE + Duration::from_millis(500)),
        "an acked firing came back",
    )
    .await;
}

/// A firing due in 3 s is not handed out before then, and is soon after.
pub async fn queue_not_received_before_due(a: &Adapters) {
    let firing = fixtures::firing("d_later", a.now() + chrono::Duration::seconds(3));
    a.queue.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    let leased = wait_until_due(a, &firing, "firing due in 3 s").await;
    assert_eq!(leased.firing, firing);
    a.queue.ack(&leased).await.unwrap();
}

/// A received but unacked firing is invisible for the lease, then comes back.
pub async fn queue_lease_hides_then_returns(a: &Adapters) {
    let firing = fixtures::firing("d_lease", already_due(a));
    a.queue.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    let (first, asked_at) = wait_for(a, "d_lease", after(a, SHOW_UP), "due firing").await;
    // Not handed out again while leased: a window check, closed by the positive signal
    // below (it does come back once the lease runs out).
    while a.now() < asked_at + chrono(LEASE - Duration::from_millis(300)) {
        let batch = a.queue.receive(10).await.unwrap();
        assert!(batch.is_empty(), "a leased firing was handed out again: {:?}", ids(&batch));
        a.pause(POLL).await;
    }
    let (again, _) = wait_for(a, "d_lease", asked_at + chrono(LEASE + SHOW_UP), "firing after its lease ran out").await;
    let elapsed = (a.now() - asked_at).to_std().unwrap_or_default();
    assert!(
        elapsed + CLOCK_SLACK >= LEASE,
        "came back {elapsed:?} after the receive, before the {LEASE:?} lease ran out"
    );
    assert_eq!(again.firing, firing, "the same firing comes back");
    assert_ne!(again.receipt, first.receipt, "a new lease has a new receipt");
    a.queue.ack(&again).await.unwrap();
}

/// `retry` replaces the leased message by the next attempt, due at its time; the first
/// attempt does not come back when its lease would have run out.
pub async fn queue_retry_replaces_with_next_attempt(a: &Adapters) {
    let firing = fixtures::firing("d_retry", already_due(a));
    a.queue.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    let (leased, asked_at) = wait_for(a, "d_retry", after(a, SHOW_UP), "due firing").await;
    let next = firing.next_attempt(a.now() + chrono::Duration::seconds(1));
    a.queue.retry(&leased, &next).await.unwrap();
    let retried = wait_until_due(a, &next, "next attempt due in 1 s").await;
    assert_eq!(retried.firing, next, "the next attempt replaced the message");
    assert_eq!(retried.firing.attempt, 2);
    a.queue.ack(&retried).await.unwrap();
    expect_nothing_before_sentinel(
        a,
        asked_at + chrono(LEASE + Duration::from_millis(500)),
        "the first attempt came back",
    )
    .await;
}

/// The same firing enqueued twice is sent once: the queue may hold one message (the
/// embedded queue) or two (SQS, deduplicated by the delivered marker at dispatch).
pub async fn queue_duplicate_enqueue_fires_once(a: &Adapters) {
    let firing = fixtures::firing("d_dup", already_due(a));
    a.queue.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    a.queue.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    let (received, sent) = dispatch_for(a, Duration::from_secs(2)).await;
    assert!(received >= 1, "the firing was never received");
    assert_eq!(sent, 1, "sent {sent} times (received {received} times)");
}

/// A delivered firing enqueued again (redelivery, re-ingest) is not sent again.
pub async fn queue_delivered_firing_is_not_fired_again(a: &Adapters) {
    let firing = fixtures::firing("d_done", already_due(a));
    a.queue.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    let (leased, _) = wait_for(a, "d_done", after(a, SHOW_UP), "due firing").await;
    assert!(dispatch(a, &leased).await, "the first delivery is sent");
    a.queue.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    let (_, sent) = dispatch_for(a, Duration::from_secs(2)).await;
    assert_eq!(sent, 0, "a delivered firing was sent again");
    assert!(a.logs.is_delivered("d_done").await.unwrap());
    let f = LogFilter { transaction_id: Some(firing.event.transaction_id.clone()), limit: 10, ..LogFilter::default() };
    assert_eq!(a.logs.query(&f).await.unwrap().items.len(), 1, "one delivered entry");
}

/// 250 firings enqueued in one call are all received, each exactly once, whole.
pub async fn queue_batch_of_250_received_exactly_once(a: &Adapters) {
    let due = already_due(a);
    let firings: Vec<Firing> = (0..250).map(|i| fixtures::firing(&format!("d_batch_{i:03}"), due)).collect();
    a.queue.enqueue(&firings).await.unwrap();
    let expected: HashMap<&str, &Firing> = firings.iter().map(|f| (f.delivery_id.as_str(), f)).collect();
    let mut received: HashMap<String, usize> = HashMap::new();
    let deadline = after(a, Duration::from_secs(20));
    while received.len() < firings.len() {
        assert!(a.now() < deadline, "only {} of 250 received in time", received.len());
        let batch = a.queue.receive(10).await.unwrap();
        for leased in &batch {
            let id = leased.firing.delivery_id.as_str();
            assert_eq!(Some(&&leased.firing), expected.get(id), "{id} comes back whole");
            *received.entry(id.to_string()).or_default() += 1;
            assert_eq!(received[id], 1, "{id} received twice");
        }
        futures::future::try_join_all(batch.iter().map(|l| a.queue.ack(l))).await.unwrap();
        if batch.is_empty() {
            a.pause(POLL).await;
        }
    }
    expect_nothing_before_sentinel(a, after(a, Duration::from_millis(300)), "after all 250 were acked").await;
}

/// Embedded only: enqueueing a queued delivery id again adds no message.
pub async fn queue_duplicate_enqueue_is_one_message(a: &Adapters) {
    let firing = fixtures::firing("d_dup_strict", already_due(a));
    a.queue.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    let mut changed = firing.clone();
    changed.postback_id = "pb_other".into();
    a.queue.enqueue(&[firing.clone(), changed]).await.unwrap();
    let batch = a.queue.receive(10).await.unwrap();
    assert_eq!(ids(&batch), ["d_dup_strict"], "one message for one delivery id");
    assert_eq!(batch[0].firing, firing, "the first enqueued message is kept");
    // Enqueueing while it is leased changes nothing either.
    a.queue.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    assert!(a.queue.receive(10).await.unwrap().is_empty(), "no second message while leased");
    a.queue.ack(&batch[0]).await.unwrap();
    assert!(a.queue.receive(10).await.unwrap().is_empty());
}

/// Embedded only: enqueueing a delivered delivery id adds no message at all.
pub async fn queue_enqueue_of_delivered_firing_is_dropped(a: &Adapters) {
    let firing = fixtures::firing("d_done_strict", already_due(a));
    assert!(a.logs.record_delivered(&fixtures::log_entry(&firing, Outcome::Delivered)).await.unwrap());
    a.queue.enqueue(std::slice::from_ref(&firing)).await.unwrap();
    assert!(a.queue.receive(10).await.unwrap().is_empty(), "a delivered firing was queued again");
    let other = fixtures::firing("d_not_done", already_due(a));
    a.queue.enqueue(&[firing, other]).await.unwrap();
    assert_eq!(ids(&a.queue.receive(10).await.unwrap()), ["d_not_done"], "the others of the call are queued");
}

/// Poll `depth` until it reports `queued` (SQS counts are approximate and lag a little).
async fn wait_for_depth(a: &Adapters, queued: u64, what: &str) -> crate::ports::QueueDepth {
    let deadline = after(a, SHOW_UP);
    loop {
        let depth = a.queue.depth().await.unwrap();
        if depth.queued == queued {
            return depth;
        }
        assert!(a.now() < deadline, "{what}: depth stayed {} (wanted {queued})", depth.queued);
        a.pause(POLL).await;
    }
}

/// `depth` counts queued firings, due or not, until they are acked; where the adapter
/// knows due times, it reports the earliest.
pub async fn queue_depth_counts_queued_firings(a: &Adapters) {
    let empty = a.queue.depth().await.unwrap();
    assert_eq!(empty.queued, 0, "a fresh queue is empty");
    assert_eq!(empty.earliest_due_at, None, "nothing queued, no due time");
    let due = fixtures::firing("d_depth_due", already_due(a));
    let later = fixtures::firing("d_depth_later", a.now() + chrono::Duration::seconds(60));
    a.queue.enqueue(&[due.clone(), later]).await.unwrap();
    let depth = wait_for_depth(a, 2, "two queued").await;
    if depth.knows_due_times {
        let earliest = depth.earliest_due_at.map(|t| t.timestamp_millis());
        assert_eq!(earliest, Some(due.due_at.timestamp_millis()), "the earliest due time");
    } else {
        assert_eq!(depth.earliest_due_at, None, "an adapter that cannot tell reports no time");
    }
    let (leased, _) = wait_for(a, "d_depth_due", after(a, SHOW_UP), "due firing").await;
    assert_eq!(a.queue.depth().await.unwrap().queued, 2, "a leased firing is still queued");
    a.queue.ack(&leased).await.unwrap();
    wait_for_depth(a, 1, "after the ack").await;
}

// Fair receive (`receive_fair`, `next_due_fair`): only for the local queues (memory,
// embedded), which select by destination; SQS keeps the trait's plain default.

fn to(destination: Option<&str>, delivery_id: &str, due: DateTime<Utc>) -> Firing {
    Firing { destination: destination.map(str::to_string), ..fixtures::firing(delivery_id, due) }
}

fn in_flight(per_destination: usize, busy: &[(&str, usize)]) -> crate::ports::InFlight {
    let mut in_flight = crate::ports::InFlight::new(per_destination);
    for (destination, n) in busy {
        (0..*n).for_each(|_| in_flight.start(destination));
    }
    in_flight
}

fn sorted(batch: &[Leased]) -> Vec<&str> {
    let mut ids = ids(batch);
    ids.sort_unstable();
    ids
}

/// A full destination's due firings are passed over (and not leased); the others, and
/// firings without a destination, are handed out; once it has room it gets that many,
/// earliest first.
pub async fn queue_fair_receive_passes_over_full_destinations(a: &Adapters) {
    let due = already_due(a);
    let ms = chrono::Duration::milliseconds;
    let firings = [
        to(Some("https://a.example:443"), "d_a1", due - ms(50)),
        to(Some("https://a.example:443"), "d_a2", due - ms(40)),
        to(Some("https://a.example:443"), "d_a3", due - ms(30)),
        to(Some("https://b.example:443"), "d_b1", due - ms(20)),
        to(None, "d_none", due - ms(10)),
    ];
    a.queue.enqueue(&firings).await.unwrap();
    let full = in_flight(2, &[("https://a.example:443", 2), ("https://b.example:443", 1)]);
    let batch = a.queue.receive_fair(10, &full).await.unwrap();
    assert_eq!(sorted(&batch), ["d_b1", "d_none"], "a.example is full; b.example has room for one");
    let room = in_flight(2, &[("https://a.example:443", 1)]);
    let batch = a.queue.receive_fair(10, &room).await.unwrap();
    assert_eq!(ids(&batch), ["d_a1"], "room for one: the earliest");
    assert_eq!(batch[0].firing, firings[0], "whole, with its destination");
    // The passed-over ones were not leased: a plain receive gets them at once.
    let rest = a.queue.receive(10).await.unwrap();
    assert_eq!(sorted(&rest), ["d_a2", "d_a3"]);
}

/// With nothing in flight, one receive hands out at most `per_destination` firings of
/// one destination, in due order, and goes on to the next destinations' firings.
pub async fn queue_fair_receive_caps_each_destination(a: &Adapters) {
    let due = already_due(a);
    let firings: Vec<Firing> = (0..5)
        .map(|i| {
            to(Some("http://127.0.0.1:3001"), &format!("d_slow_{i}"), due - chrono::Duration::milliseconds(100 - i))
        })
        .chain([to(Some("http://127.0.0.1:3002"), "d_fast", due)])
        .collect();
    a.queue.enqueue(&firings).await.unwrap();
    let batch = a.queue.receive_fair(10, &in_flight(2, &[])).await.unwrap();
    assert_eq!(ids(&batch), ["d_slow_0", "d_slow_1", "d_fast"], "two of port 3001 (earliest first), then 3002's");
    let batch = a.queue.receive_fair(1, &in_flight(2, &[])).await.unwrap();
    assert_eq!(ids(&batch), ["d_slow_2"], "max still bounds the receive");
}

/// `next_due_fair` leaves out full destinations' firings; `retry` records the next
/// message's destination.
pub async fn queue_fair_next_due_and_retry_follow_the_destination(a: &Adapters) {
    let due = already_due(a);
    let later = a.now() + chrono::Duration::seconds(60);
    let (slow, fast) = ("https://slow.example:443", "https://fast.example:443");
    a.queue.enqueue(&[to(Some(slow), "d_slow", due), to(Some(fast), "d_fast_later", later)]).await.unwrap();
    let millis = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis());
    let none_busy = a.queue.next_due_fair(&in_flight(1, &[])).await.unwrap();
    assert_eq!(millis(none_busy), Some(due.timestamp_millis()), "the due one");
    let slow_full = a.queue.next_due_fair(&in_flight(1, &[(slow, 1)])).await.unwrap();
    assert_eq!(millis(slow_full), Some(later.timestamp_millis()), "the full destination's firing is left out");
    // Re-queued under another destination (the dispatcher's correction), it obeys that one.
    let leased = a.queue.receive_fair(10, &in_flight(1, &[])).await.unwrap();
    assert_eq!(ids(&leased), ["d_slow"]);
    let moved = Firing { destination: Some(fast.to_string()), ..leased[0].firing.clone() };
    a.queue.retry(&leased[0], &moved).await.unwrap();
    assert!(a.queue.receive_fair(10, &in_flight(1, &[(fast, 1)])).await.unwrap().is_empty(), "fast is full now");
    let batch = a.queue.receive_fair(10, &in_flight(1, &[(slow, 1)])).await.unwrap();
    assert_eq!(ids(&batch), ["d_slow"], "no longer held back by slow");
    assert_eq!(batch[0].firing, moved);
}
