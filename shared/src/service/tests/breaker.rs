//! The circuit breaker in the dispatcher, on the fakes: open at the threshold, hold,
//! probe after the cool-down (one at a time), close and release in order with the
//! status re-checked, re-open with a doubled cool-down, resume, health.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{ms, settle, start, World, RETRY};
use crate::domain::breaker::{BreakerPolicy, BreakerState};
use crate::domain::delivery::RetryPolicy;
use crate::domain::log::Outcome;
use crate::ports::{ControlStore, Leased};
use crate::service::AttemptOutcome;
use crate::testing::{Answer, FixedJitter, MemoryOptions};

const URL: &str = "https://aff.example/pb";

/// 3 failures open; 1 s first cool-down; a probe may be in flight 5 s.
const POLICY: BreakerPolicy = BreakerPolicy { failure_threshold: 3, cooldown_ms: 1_000, probe_lease_ms: 5_000 };

/// A conversion postback (fires on approved) whose receiver answers 503.
async fn failing(w: &World) -> String {
    w.sender.set_default(Answer::status(503));
    w.postback(json!({"name": "Aff", "type": "conversion", "url": format!("{URL}?t={{transaction_id}}")})).await
}

async fn conversion(w: &World, txid: &str) {
    w.ingest_one(json!({"type": "conversion", "transaction_id": txid, "status": "approved"})).await;
}

/// Ingest and process `txids` one by one (each a fresh firing due now).
async fn fire(w: &World, txids: &[&str]) -> Vec<AttemptOutcome> {
    let mut out = Vec::new();
    for t in txids {
        conversion(w, t).await;
        out.push(w.process_one().await);
    }
    out
}

/// Open the breaker: three conversions fail (each retrying at +7.5 s).
async fn opened(w: &World) -> String {
    let id = failing(w).await;
    let outcomes = fire(w, &["T1", "T2", "T3"]).await;
    assert!(outcomes.iter().all(|o| matches!(o, AttemptOutcome::Retrying(_))), "{outcomes:?}");
    id
}

/// Ingest one conversion per txid, 1 ms apart (so their hold order is theirs), and
/// process each.
async fn ingest_spaced(w: &World, txids: &[&str]) -> Vec<AttemptOutcome> {
    let mut out = Vec::new();
    for t in txids {
        w.advance_ms(1);
        out.extend(fire(w, &[t]).await);
    }
    out
}

fn txids_sent(w: &World) -> Vec<String> {
    w.sender
        .requests()
        .iter()
        .map(|r| r.request.url.rsplit_once("t=").map(|(_, t)| t.to_string()).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn health_of_a_new_postback_is_closed_and_empty() {
    let w = World::with_breaker(POLICY);
    let id = failing(&w).await;
    let health = serde_json::to_value(w.app.health(&id).await.unwrap()).unwrap();
    assert_eq!(
        health,
        json!({"state": "closed", "consecutive_failures": 0, "opened_at": null, "next_probe_at": null, "held": 0})
    );
}

#[tokio::test]
async fn opens_at_the_threshold_then_holds_without_sending_failing_or_using_an_attempt() {
    let w = World::with_breaker(POLICY);
    let id = failing(&w).await;
    fire(&w, &["T1", "T2"]).await;
    let health = w.app.health(&id).await.unwrap();
    assert_eq!((health.state, health.consecutive_failures), (BreakerState::Closed, 2), "below the threshold");
    fire(&w, &["T3"]).await;
    let opened_at = w.now();
    let health = w.app.health(&id).await.unwrap();
    assert_eq!(health.state, BreakerState::Open);
    assert_eq!(health.consecutive_failures, 3);
    assert_eq!(health.opened_at, Some(opened_at));
    assert_eq!(health.next_probe_at, Some(opened_at + ms(1_000)));

    let outcomes = ingest_spaced(&w, &["T4", "T5", "T6"]).await;
    assert_eq!(
        outcomes,
        [AttemptOutcome::Deferred(opened_at + ms(1_000)), AttemptOutcome::Held, AttemptOutcome::Held],
        "the first carries the probe (back on the queue until the cool-down ends), the rest are held"
    );
    assert_eq!(w.sender.count(), 3, "nothing sent while open");
    assert_eq!(w.logs().len(), 3, "holding is not an attempt: no log entry");
    assert!(w.logs().iter().all(|e| e.outcome == Outcome::Retrying), "none failed");
    assert_eq!(w.app.health(&id).await.unwrap().held, 2);
    let held = w.memory.control.held(&id, 10).await.unwrap();
    assert_eq!(held.iter().map(|f| f.event.transaction_id.as_str()).collect::<Vec<_>>(), ["T5", "T6"]);
    assert!(held.iter().all(|f| f.attempt == 1), "no attempt used");
    let carrier = w.queued().into_iter().find(|f| f.event.transaction_id == "T4").unwrap();
    assert_eq!((carrier.attempt, carrier.due_at), (1, opened_at + ms(1_000)));
}

#[tokio::test]
async fn the_probe_goes_only_after_the_cool_down_and_one_at_a_time() {
    let w = World::with_breaker(POLICY);
    let id = opened(&w).await;
    let opened_at = w.now();
    ingest_spaced(&w, &["T4", "T5"]).await; // T4 carries, T5 held
    w.clock.set(opened_at + ms(999));
    assert!(w.receive().await.is_empty(), "the carrier waits for the cool-down");
    w.clock.set(opened_at + ms(1_000));
    assert_eq!(w.app.health(&id).await.unwrap().state, BreakerState::HalfOpen, "cool-down over");
    // The probe's receiver takes 60 s to answer: it stays in flight.
    w.sender.script(&format!("{URL}?t=T4"), [Answer::status(503).after(Duration::from_secs(60))]);
    let carrier = w.receive_one().await;
    let dispatcher = w.app.dispatcher();
    let probe = tokio::spawn(async move { dispatcher.process(&carrier).await.unwrap() });
    settle().await;
    assert_eq!(w.sender.count(), 4, "the probe is sent");
    let breaker = w.memory.control.breaker(&id).await.unwrap().unwrap().breaker;
    assert_eq!(breaker.state, BreakerState::HalfOpen);
    // Another firing due meanwhile is held: one probe at a time.
    assert_eq!(fire(&w, &["T6"]).await, [AttemptOutcome::Held]);
    assert_eq!(w.sender.count(), 4);
    // The probe fails (after 60 s): open again, cool-down doubled, same outage.
    w.advance_ms(60_000);
    let outcome = probe.await.unwrap();
    assert!(matches!(outcome, AttemptOutcome::Retrying(_)), "{outcome:?}");
    let health = w.app.health(&id).await.unwrap();
    assert_eq!(health.state, BreakerState::Open);
    assert_eq!(health.opened_at, Some(opened_at), "same outage");
    assert_eq!(health.next_probe_at, Some(opened_at + ms(61_000 + 2_000)), "2 s: doubled");
    // The oldest held firing (T5) now carries the next probe: back on the queue, coming
    // back every second until the cool-down ends (so an early close sends it soon).
    assert_eq!(health.held, 1, "T6 still held");
    let t5 = w.queued().into_iter().find(|f| f.event.transaction_id == "T5").unwrap();
    assert_eq!(t5.due_at, opened_at + ms(61_000 + 1_000));
    w.clock.set(t5.due_at);
    let polled = w.receive().await.into_iter().find(|l| l.firing.event.transaction_id == "T5").unwrap();
    assert_eq!(w.process(&polled).await, AttemptOutcome::Deferred(opened_at + ms(63_000)), "waits out the cool-down");
    assert_eq!(w.sender.count(), 4);
}

#[tokio::test]
async fn a_probe_whose_sender_died_is_taken_over_after_its_lease() {
    let w = World::with_breaker(POLICY);
    let id = opened(&w).await;
    let opened_at = w.now();
    ingest_spaced(&w, &["T4"]).await;
    w.clock.set(opened_at + ms(1_000));
    // The probe never answers (its sender "died" holding the lease).
    w.sender.script(&format!("{URL}?t=T4"), [Answer::ok().after(Duration::from_secs(3_600))]);
    let carrier = w.receive_one().await;
    let dispatcher = w.app.dispatcher();
    let _stuck = tokio::spawn(async move { dispatcher.process(&carrier).await });
    settle().await;
    w.clock.set(opened_at + ms(1_000 + 4_999));
    assert_eq!(fire(&w, &["T5"]).await, [AttemptOutcome::Held], "within the probe's lease");
    w.clock.set(opened_at + ms(1_000 + 5_000));
    w.sender.set_default(Answer::ok());
    assert_eq!(fire(&w, &["T6"]).await, [AttemptOutcome::Delivered], "the lease ran out: T6 probes and closes");
    assert_eq!(w.app.health(&id).await.unwrap().state, BreakerState::Closed);
}

#[tokio::test]
async fn a_failed_probe_doubles_the_cool_down_up_to_ten_minutes() {
    let policy = BreakerPolicy { cooldown_ms: 100_000, ..POLICY };
    // Enough attempts that no probe runs out of them.
    let retry = RetryPolicy { max_attempts: 20, base_delay: Duration::from_secs(10) };
    let w = World::build(Arc::new(FixedJitter(0.5)), retry, MemoryOptions::default(), policy);
    let id = opened(&w).await;
    let opened_at = w.now();
    ingest_spaced(&w, &["T4", "T5", "T6", "T7", "T8", "T9"]).await;
    for cooldown in [200_000, 400_000, 600_000, 600_000, 600_000] {
        let due = w.app.health(&id).await.unwrap().next_probe_at.unwrap();
        w.clock.set(due);
        // The first due firing probes (a retry of T1..T3 or the carrier); the rest are held.
        for leased in w.receive().await {
            w.process(&leased).await;
        }
        let health = w.app.health(&id).await.unwrap();
        assert_eq!(health.state, BreakerState::Open, "probe failed");
        assert_eq!(health.opened_at, Some(opened_at), "one outage");
        assert_eq!(health.next_probe_at, Some(due + ms(cooldown)), "cool-down {cooldown}");
    }
    assert_eq!(w.logs().iter().filter(|e| e.outcome == Outcome::Failed).count(), 0, "none failed");
}

#[tokio::test]
async fn a_probe_success_closes_and_releases_the_held_firings_in_order_rechecking_each_status() {
    let w = World::with_breaker(POLICY);
    let id = opened(&w).await;
    let opened_at = w.now();
    ingest_spaced(&w, &["T4", "T5", "T6", "T7", "T8"]).await; // T4 carries, T5..T8 held
                                                              // Meanwhile the fraud check rejects T6: nothing new fires (fire_on approved).
    w.ingest_one(
        json!({"type": "conversion", "transaction_id": "T6", "status": "rejected", "rejection_reason": "fraud"}),
    )
    .await;
    assert!(w.receive().await.is_empty());
    w.clock.set(opened_at + ms(1_000));
    w.sender.set_default(Answer::ok());
    assert_eq!(w.process_one().await, AttemptOutcome::Delivered, "the probe");
    let health = w.app.health(&id).await.unwrap();
    assert_eq!((health.state, health.held, health.opened_at), (BreakerState::Closed, 0, None));
    let released = w.receive().await;
    let order: Vec<&str> = released.iter().map(|l| l.firing.event.transaction_id.as_str()).collect();
    assert_eq!(order, ["T5", "T6", "T7", "T8"], "released oldest first, due now");
    for leased in &released {
        assert_eq!(leased.firing.attempt, 1, "no attempt was used while held");
        w.process(leased).await;
    }
    assert_eq!(txids_sent(&w)[3..], ["T4", "T5", "T7", "T8"], "T6 was not sent");
    let t6 = w.logs().into_iter().find(|e| e.transaction_id == "T6").unwrap();
    assert_eq!(t6.outcome, Outcome::Skipped);
    assert!(t6.error.unwrap().contains("status changed from approved to rejected (reason: fraud)"));
    // The failed firings' retries, due later, go out normally.
    w.clock.set(start() + ms(7_500));
    for leased in w.receive().await {
        assert_eq!(w.process(&leased).await, AttemptOutcome::Delivered);
    }
    assert_eq!(w.logs().iter().filter(|e| e.outcome == Outcome::Delivered).count(), 7);
}

#[tokio::test]
async fn a_probe_that_sends_nothing_hands_the_probe_to_the_next_held_firing() {
    let w = World::with_breaker(POLICY);
    let id = opened(&w).await;
    let opened_at = w.now();
    ingest_spaced(&w, &["T4", "T5"]).await; // T4 carries, T5 held
    w.ingest_one(json!({"type": "conversion", "transaction_id": "T4", "status": "rejected"})).await;
    w.clock.set(opened_at + ms(1_000));
    let outcome = w.process_one().await;
    assert!(matches!(outcome, AttemptOutcome::Skipped(_)), "{outcome:?}");
    assert_eq!(w.sender.count(), 3, "the skipped probe sent nothing");
    let next = w.receive_one().await;
    assert_eq!(next.firing.event.transaction_id, "T5", "the next held firing is due now as the probe");
    w.sender.set_default(Answer::ok());
    assert_eq!(w.process(&next).await, AttemptOutcome::Delivered);
    assert_eq!(w.app.health(&id).await.unwrap().state, BreakerState::Closed);
}

#[tokio::test]
async fn resume_closes_at_once_releases_and_is_idempotent() {
    // A 10-minute cool-down: only resume closes it soon.
    let w = World::with_breaker(BreakerPolicy { cooldown_ms: 600_000, ..POLICY });
    let id = opened(&w).await;
    ingest_spaced(&w, &["T4", "T5", "T6"]).await;
    assert_eq!(w.app.health(&id).await.unwrap().held, 2);
    let resumed = w.app.resume_postback(&id).await.unwrap();
    assert_eq!(resumed.postback.id, id);
    assert_eq!(resumed.health.state, BreakerState::Closed);
    assert_eq!((resumed.health.consecutive_failures, resumed.health.held), (0, 0));
    let due: Vec<String> = w.receive().await.into_iter().map(|l| l.firing.event.transaction_id).collect();
    assert_eq!(due, ["T5", "T6"], "released now");
    // The probe carrier (T4) was on the queue; it comes back within a second and goes.
    w.sender.set_default(Answer::ok());
    w.clock.set(start() + ms(1 + 1_000));
    let carrier = w.receive_one().await;
    assert_eq!(carrier.firing.event.transaction_id, "T4");
    assert_eq!(w.process(&carrier).await, AttemptOutcome::Delivered);
    let again = w.app.resume_postback(&id).await.unwrap();
    assert_eq!(again.health, resumed.health, "idempotent");
    assert!(matches!(w.app.resume_postback("pb_nope").await, Err(crate::service::ServiceError::NotFound(_))));
}

#[tokio::test]
async fn a_redelivered_message_of_a_held_firing_holds_one_copy() {
    let w = World::with_breaker(POLICY);
    let id = opened(&w).await;
    ingest_spaced(&w, &["T4", "T5"]).await;
    let held = w.memory.control.held(&id, 10).await.unwrap();
    assert_eq!(held.len(), 1);
    // The same message again (SQS redelivery, a lease that ran out after the hold).
    let again = Leased { firing: held[0].clone(), receipt: "stale:receipt".into() };
    assert_eq!(w.process(&again).await, AttemptOutcome::Held);
    assert_eq!(w.memory.control.held_count(&id).await.unwrap(), 1);
}

#[tokio::test]
async fn deleting_a_postback_logs_its_held_firings_skipped() {
    let w = World::with_breaker(POLICY);
    let id = opened(&w).await;
    ingest_spaced(&w, &["T4", "T5", "T6"]).await;
    w.app.delete_postback(&id).await.unwrap();
    assert_eq!(w.memory.control.held_count(&id).await.unwrap(), 0);
    assert!(w.memory.control.breaker(&id).await.unwrap().is_none(), "forgotten");
    for leased in w.receive().await {
        assert_eq!(w.process(&leased).await, AttemptOutcome::Skipped("postback deleted".into()));
    }
    let skipped: Vec<String> =
        w.logs().into_iter().filter(|e| e.outcome == Outcome::Skipped).map(|e| e.transaction_id).collect();
    assert_eq!(skipped.len(), 2, "T5 and T6 logged, none vanished: {skipped:?}");
}

#[tokio::test]
async fn a_resend_bypasses_the_open_breaker_and_does_not_count() {
    let w = World::with_breaker(POLICY);
    let id = opened(&w).await;
    let entry = w.logs().pop().unwrap();
    w.sender.set_default(Answer::ok());
    let resent = w.app.resend_log(&entry.id).await.unwrap();
    assert_eq!(resent.outcome, Outcome::Delivered, "sent at once though the breaker is open");
    assert_eq!(w.app.health(&id).await.unwrap().state, BreakerState::Open, "a resend does not close it");
}

#[tokio::test]
async fn held_firings_take_no_rate_limit_slot() {
    let w = World::with_breaker(POLICY);
    w.sender.set_default(Answer::status(503));
    let id = w
        .postback(json!({"name": "Aff", "type": "conversion", "rate_limit_per_second": 1, "url": format!("{URL}?t={{transaction_id}}")}))
        .await;
    // One per second: T1 at 0 s, T2 at 1 s, T3 at 2 s open it.
    for (i, t) in ["T1", "T2", "T3"].iter().enumerate() {
        w.clock.set(start() + ms(1_000 * i as i64));
        fire(&w, &[t]).await;
    }
    assert_eq!(w.app.health(&id).await.unwrap().state, BreakerState::Open);
    ingest_spaced(&w, &["T4", "T5", "T6"]).await;
    assert_eq!(w.app.health(&id).await.unwrap().held, 2);
    // T3 took this second's one slot; had T4..T6 taken slots too, the next free one
    // would be 4 seconds away, not 1.
    let second = w.now().timestamp();
    assert_eq!(w.memory.control.take_slot(&id, second, 1).await.unwrap(), second + 1);
}

#[tokio::test]
async fn one_outage_raises_one_breaker_opened_and_one_breaker_closed() {
    let w = World::with_breaker(POLICY);
    w.postback(json!({"name": "Ops chat", "type": "alert", "method": "POST", "url": "https://chat.example/hook",
        "body": "{\"text\": \"{alert_message}\"}"}))
        .await;
    w.sender.script("https://chat.example/hook", std::iter::repeat_n(Answer::ok(), 10));
    let id = failing(&w).await;
    // Process everything due (the alert firings too) until the queue is quiet.
    async fn drain(w: &World) {
        loop {
            let due = w.receive().await;
            if due.is_empty() {
                break;
            }
            for leased in due {
                w.process(&leased).await;
            }
        }
    }
    for t in ["T1", "T2", "T3", "T4", "T5", "T6", "T7"] {
        w.advance_ms(1);
        conversion(&w, t).await;
        drain(&w).await;
    }
    let opened_at = w.now();
    assert_eq!(w.app.health(&id).await.unwrap().state, crate::domain::breaker::BreakerState::Open);
    // Two failed probes (re-opens: the same outage), then a success.
    for _ in 0..2 {
        let due = w.app.health(&id).await.unwrap().next_probe_at.unwrap();
        w.clock.set(due);
        drain(&w).await;
    }
    w.sender.set_default(Answer::ok());
    let due = w.app.health(&id).await.unwrap().next_probe_at.unwrap();
    w.clock.set(due);
    drain(&w).await;
    assert_eq!(w.app.health(&id).await.unwrap().state, crate::domain::breaker::BreakerState::Closed);
    let alerts: Vec<String> = w
        .sender
        .requests_to("https://chat.example/hook")
        .into_iter()
        .map(|r| r.request.body.unwrap_or_default())
        .collect();
    let opened = alerts.iter().filter(|b| b.contains("opened")).count();
    let closed = alerts.iter().filter(|b| b.contains("closed")).count();
    assert_eq!((opened, closed, alerts.len()), (1, 1, 2), "one outage since {opened_at}: {alerts:?}");
}

/// A resume that releases a firing between its hold and its ack (the dispatcher holding
/// it has written the hold, not yet acked the message) loses nothing: hold-then-ack on
/// SQS's semantics, where the release's enqueue is a message of its own. (The embedded
/// store makes hold and ack one commit: `contract_embedded`'s `hold_and_ack_…`.)
#[tokio::test]
async fn a_resume_between_a_hold_and_its_ack_loses_nothing() {
    let sqs = MemoryOptions { enqueue_dedupe: false, ..MemoryOptions::default() };
    let w = World::build(Arc::new(FixedJitter(0.5)), RETRY, sqs, BreakerPolicy { cooldown_ms: 600_000, ..POLICY });
    let id = opened(&w).await;
    ingest_spaced(&w, &["T4"]).await; // the probe carrier, back on the queue
    conversion(&w, "T5").await;
    let leased = w.receive_one().await;
    assert_eq!(leased.firing.event.transaction_id, "T5");
    let pause = w.memory.control.pause_next_hold();
    let app = w.app.clone();
    let holding = tokio::spawn(async move { app.dispatcher().process(&leased).await.unwrap() });
    pause.reached.notified().await;
    let resumed = w.app.resume_postback(&id).await.unwrap();
    assert_eq!(resumed.health.held, 0, "T5 was released");
    pause.resume.notify_one();
    assert_eq!(holding.await.unwrap(), AttemptOutcome::Held);

    w.sender.set_default(Answer::ok());
    w.clock.set(w.now() + ms(1_000));
    for leased in w.receive().await {
        assert_eq!(w.process(&leased).await, AttemptOutcome::Delivered);
    }
    let mut sent = txids_sent(&w);
    sent.retain(|t| t == "T4" || t == "T5");
    sent.sort();
    assert_eq!(sent, ["T4", "T5"], "each once, none lost");
}

/// A firing released by a resume that comes due, meets the breaker open again and is
/// held anew before the resume has forgotten its old hold, stays held: the resume
/// forgets only the hold it read (same `due_at`), so the firing is released by the next
/// close instead of being neither held nor queued.
#[tokio::test]
async fn a_release_forgets_only_the_hold_it_read() {
    let w = World::with_breaker(BreakerPolicy { cooldown_ms: 600_000, ..POLICY });
    let id = opened(&w).await;
    ingest_spaced(&w, &["T4", "T5", "T6", "T7", "T8", "T9"]).await; // T4 carries the probe
    assert_eq!(w.app.health(&id).await.unwrap().held, 5);
    let pause = w.memory.control.pause_next_unhold();
    let app = w.app.clone();
    let id2 = id.clone();
    let resuming = tokio::spawn(async move { app.resume_postback(&id2).await.unwrap() });
    pause.reached.notified().await;
    // Released, not yet forgotten: three fail (the breaker opens again), the fourth
    // carries the next probe, the fifth is held.
    let mut outcomes = Vec::new();
    for leased in w.receive().await {
        outcomes.push((leased.firing.event.transaction_id.clone(), w.process(&leased).await));
    }
    assert_eq!(outcomes.iter().filter(|(_, o)| matches!(o, AttemptOutcome::Retrying(_))).count(), 3, "{outcomes:?}");
    let (held_again, outcome) = outcomes.last().unwrap().clone();
    assert_eq!(outcome, AttemptOutcome::Held, "{outcomes:?}");
    pause.resume.notify_one();
    resuming.await.unwrap();
    let held = w.memory.control.held(&id, 10).await.unwrap();
    assert_eq!(held.iter().map(|f| f.event.transaction_id.as_str()).collect::<Vec<_>>(), [held_again.as_str()]);
    // The next close sends it.
    w.sender.set_default(Answer::ok());
    w.app.resume_postback(&id).await.unwrap();
    let due: Vec<String> = w.receive().await.into_iter().map(|l| l.firing.event.transaction_id).collect();
    assert!(due.contains(&held_again), "{due:?}");
}

/// Two releases at once (a resume and a probe's success, two resumes): each held firing
/// is queued by one of them only (on SQS both copies could be sent at the same time).
#[tokio::test]
async fn two_releases_at_once_queue_each_firing_once() {
    use crate::service::control::release_held;
    let w = World::with_breaker(BreakerPolicy { cooldown_ms: 600_000, ..POLICY });
    let id = opened(&w).await;
    ingest_spaced(&w, &["T4", "T5", "T6"]).await; // T4 carries the probe; T5, T6 held
    let pause = w.memory.control.pause_next_unhold();
    let (app, id2) = (w.app.clone(), id.clone());
    let first = tokio::spawn(async move { release_held(&app, &id2).await.unwrap() });
    pause.reached.notified().await;
    assert_eq!(release_held(&w.app, &id).await.unwrap(), 0, "the first release has them");
    pause.resume.notify_one();
    assert_eq!(first.await.unwrap(), 2);
    assert_eq!(w.app.health(&id).await.unwrap().held, 0);
}
