//! Every outcome of one dispatch, and the retry chain, on the fakes.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{ms, spec, start, World, FIRST_WAIT_MS, RETRY};
use crate::domain::delivery::{RetryPolicy, SendFailure};
use crate::domain::log::{LogEntry, Outcome};
use crate::ports::{FiringQueue, LogStore, TouchStore};
use crate::service::AttemptOutcome;
use crate::testing::{Answer, MemoryOptions, ScriptedJitter};

const URL: &str = "https://aff.example/pb";

/// A click postback to `URL` and one ingested click: one firing due now.
async fn one_click_firing(w: &World) -> String {
    let id = w
        .postback(
            json!({"name": "Clicks", "type": "click", "url": format!("{URL}?t={{transaction_id}}&a={{attempt}}")}),
        )
        .await;
    w.ingest_one(json!({"type": "click", "transaction_id": "T1", "offer_id": "O1", "publisher_id": "P1"})).await;
    id
}

/// What one attempt's log entry and the queue must show.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Delivered,
    /// Retrying, the next attempt due this many ms after the attempt.
    RetryAfterMs(i64),
    /// Failed, the entry's error containing this.
    Failed(&'static str),
}

/// `Expect::Failed(error)`: the attempt failed for good with `error` in its entry's
/// error, nothing delivered, the message acked and never retried.
fn assert_failed(w: &World, name: &str, outcome: AttemptOutcome, entry: &LogEntry, delivered: bool, error: &str) {
    assert_eq!(outcome, AttemptOutcome::Failed, "{name}");
    assert_eq!(entry.outcome, Outcome::Failed, "{name}");
    let got = entry.error.as_deref().unwrap_or_default();
    assert!(got.contains(error), "{name}: error {got:?} should contain {error:?}");
    assert!(!delivered, "{name}");
    assert!(w.queued().is_empty(), "{name}: acked, never retried");
}

#[tokio::test]
async fn each_answer_has_its_outcome_and_due_time() {
    let in_60_s = (start() + chrono::Duration::seconds(60)).format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    #[rustfmt::skip]
    let cases: Vec<(&str, Answer, u32, Expect)> = vec![
        ("200", Answer::ok(), 1, Expect::Delivered),
        ("204", Answer::status(204), 1, Expect::Delivered),
        ("299", Answer::status(299), 1, Expect::Delivered),
        ("503: base delay, equal jitter 0.5", Answer::status(503), 1, Expect::RetryAfterMs(FIRST_WAIT_MS)),
        ("500 on attempt 2: doubled", Answer::status(500), 2, Expect::RetryAfterMs(15_000)),
        ("502", Answer::status(502), 1, Expect::RetryAfterMs(FIRST_WAIT_MS)),
        ("408", Answer::status(408), 1, Expect::RetryAfterMs(FIRST_WAIT_MS)),
        ("429 Retry-After 120 s: lengthens", Answer::status(429).header("Retry-After", "120"), 1, Expect::RetryAfterMs(120_000)),
        ("503 Retry-After 1 s: never shortens", Answer::status(503).header("retry-after", "1"), 1, Expect::RetryAfterMs(FIRST_WAIT_MS)),
        ("503 Retry-After as an HTTP date", Answer::status(503).header("Retry-After", &in_60_s), 1, Expect::RetryAfterMs(60_000)),
        ("503 Retry-After 1 day: capped at 6 h", Answer::status(503).header("Retry-After", "86400"), 1, Expect::RetryAfterMs(6 * 3_600_000)),
        ("500 Retry-After: only 429/503 honour it", Answer::status(500).header("Retry-After", "120"), 1, Expect::RetryAfterMs(FIRST_WAIT_MS)),
        ("429 garbage Retry-After: ignored", Answer::status(429).header("Retry-After", "soon"), 1, Expect::RetryAfterMs(FIRST_WAIT_MS)),
        ("timeout", Answer::timeout(Duration::from_secs(10)), 1, Expect::RetryAfterMs(FIRST_WAIT_MS)),
        ("connection error", Answer::connection_error("refused by peer"), 1, Expect::RetryAfterMs(FIRST_WAIT_MS)),
        ("other transport error", Answer::failure(SendFailure::Other("tls".into())), 1, Expect::RetryAfterMs(FIRST_WAIT_MS)),
        ("404: permanent", Answer::status(404), 1, Expect::Failed("HTTP 404: client error, not retried")),
        ("400: permanent", Answer::status(400), 1, Expect::Failed("client error")),
        ("410 on attempt 2", Answer::status(410), 2, Expect::Failed("client error")),
        ("302: redirects are not followed", Answer::status(302).header("Location", "http://10.0.0.1/"), 1, Expect::Failed("redirect not followed")),
        ("301", Answer::status(301), 1, Expect::Failed("redirect not followed")),
        ("1xx: unexpected", Answer::status(101), 1, Expect::Failed("unexpected status")),
        ("refused destination: never retried", Answer::failure(SendFailure::Refused("10.0.0.1 is private".into())), 1, Expect::Failed("destination refused")),
        ("503 on the last attempt: bounded", Answer::status(503), 3, Expect::Failed("gave up after 3 attempts: HTTP 503")),
        // Without a response, the entry's error is the transport's (the attempt number says it was the last).
        ("timeout on the last attempt", Answer::timeout(Duration::from_secs(10)), 3, Expect::Failed("timed out after 10000 ms")),
        ("connection error on the last attempt", Answer::connection_error("reset"), 3, Expect::Failed("connection failed: reset")),
    ];
    for (name, answer, attempt, expect) in cases {
        let w = World::new();
        one_click_firing(&w).await;
        w.sender.set_default(answer.clone());
        let mut leased = w.receive_one().await;
        leased.firing.attempt = attempt;
        let fired_at = w.now();
        let outcome = w.process(&leased).await;
        // A delayed answer moved the clock on; the due time counts from the attempt.
        let logs = w.logs();
        assert_eq!(logs.len(), 1, "{name}: one entry per attempt");
        let entry = &logs[0];
        assert_eq!(entry.fired_at, fired_at, "{name}: fired_at is the attempt's start");
        assert_eq!(entry.attempt, attempt, "{name}");
        assert!(!entry.test, "{name}");
        assert_eq!(w.sender.count(), 1, "{name}: sent once");
        if let crate::testing::Reply::Response { status, .. } = &answer.reply {
            assert_eq!(entry.status_code, Some(*status), "{name}");
        } else {
            assert_eq!(entry.status_code, None, "{name}");
        }
        let delivered = w.memory.logs.is_delivered(&leased.firing.delivery_id).await.unwrap();
        match expect {
            Expect::Delivered => {
                assert_eq!(outcome, AttemptOutcome::Delivered, "{name}");
                assert_eq!(entry.outcome, Outcome::Delivered, "{name}");
                assert!(delivered, "{name}: the delivery id is marked delivered");
                assert!(w.queued().is_empty(), "{name}: acked");
            }
            Expect::RetryAfterMs(wait) => {
                let next = fired_at + ms(wait);
                assert_eq!(outcome, AttemptOutcome::Retrying(next), "{name}");
                assert_eq!(entry.outcome, Outcome::Retrying, "{name}");
                assert_eq!(entry.next_attempt_at, Some(next), "{name}");
                assert!(!delivered, "{name}");
                let queued = w.queued();
                assert_eq!(queued.len(), 1, "{name}: the next attempt replaced the message");
                assert_eq!(queued[0].attempt, attempt + 1, "{name}");
                assert_eq!(queued[0].due_at, next, "{name}");
                assert_eq!(queued[0].delivery_id, leased.firing.delivery_id, "{name}: same delivery id");
            }
            Expect::Failed(error) => assert_failed(&w, name, outcome, entry, delivered, error),
        }
    }
}

#[tokio::test]
async fn backoff_doubles_with_equal_jitter_from_the_jitter_port() {
    let retry = RetryPolicy { max_attempts: 20, base_delay: Duration::from_secs(10) };
    // (attempt just failed, jitter, wait in ms): d = 10 s * 2^(attempt-1), wait = d/2 + d/2 * jitter.
    let cases = [
        (1, 0.0, 5_000),
        (1, 0.5, 7_500),
        (1, 0.9, 9_500),
        (2, 0.0, 10_000),
        (2, 0.25, 12_500),
        (3, 0.0, 20_000),
        (4, 0.5, 60_000),
        (13, 0.0, 6 * 3_600_000 / 2),
    ];
    for (attempt, jitter, wait) in cases {
        let w = World::with(Arc::new(ScriptedJitter::new([jitter])), retry, MemoryOptions::default());
        one_click_firing(&w).await;
        w.sender.set_default(Answer::status(503));
        let mut leased = w.receive_one().await;
        leased.firing.attempt = attempt;
        let outcome = w.process(&leased).await;
        assert_eq!(outcome, AttemptOutcome::Retrying(start() + ms(wait)), "attempt {attempt}, jitter {jitter}");
    }
}

/// 503 every time: attempts 1, 2, 3 at their exact due times, then `failed`; the
/// delivery id and the rendered attempt number follow.
#[tokio::test]
async fn bounded_attempts_at_their_due_times_then_failed() {
    let w = World::new();
    let postback_id = one_click_firing(&w).await;
    w.sender.set_default(Answer::status(503));

    assert_eq!(w.process_one().await, AttemptOutcome::Retrying(start() + ms(FIRST_WAIT_MS)));
    w.advance_ms(FIRST_WAIT_MS as u64 - 1);
    assert!(w.receive().await.is_empty(), "not due 1 ms early");
    w.advance_ms(1);
    let second_at = w.now();
    // Attempt 2 waits 10 s * 2 / 2 + 10 s * 2 / 2 * 0.5 = 15 s.
    assert_eq!(w.process_one().await, AttemptOutcome::Retrying(second_at + ms(15_000)));
    w.advance_ms(14_999);
    assert!(w.receive().await.is_empty(), "not due 1 ms early");
    w.advance_ms(1);
    assert_eq!(w.process_one().await, AttemptOutcome::Failed);
    assert!(w.queued().is_empty());
    assert!(w.receive().await.is_empty());

    let sent = w.sender.requests();
    assert_eq!(sent.len(), 3);
    let urls: Vec<&str> = sent.iter().map(|r| r.request.url.as_str()).collect();
    assert_eq!(urls, [format!("{URL}?t=T1&a=1"), format!("{URL}?t=T1&a=2"), format!("{URL}?t=T1&a=3")]);
    let times: Vec<_> = sent.iter().map(|r| r.at).collect();
    assert_eq!(times, [start(), start() + ms(7_500), start() + ms(22_500)]);

    let logs = w.logs();
    let outcomes: Vec<Outcome> = logs.iter().map(|e| e.outcome).collect();
    assert_eq!(outcomes, [Outcome::Failed, Outcome::Retrying, Outcome::Retrying], "newest first");
    assert!(logs.iter().all(|e| e.postback_id == postback_id && e.delivery_id == logs[0].delivery_id));
    assert_eq!(logs.iter().map(|e| e.attempt).collect::<Vec<_>>(), [3, 2, 1]);
    assert!(logs[0].error.as_deref().unwrap().contains("gave up after 3 attempts"));
}

#[tokio::test]
async fn a_retry_that_succeeds_is_delivered_once() {
    let w = World::new();
    one_click_firing(&w).await;
    w.sender.script(URL, [Answer::status(500), Answer::connection_error("reset")]);
    assert!(matches!(w.process_one().await, AttemptOutcome::Retrying(_)));
    w.advance_ms(FIRST_WAIT_MS as u64);
    assert!(matches!(w.process_one().await, AttemptOutcome::Retrying(_)));
    w.advance_ms(15_000);
    assert_eq!(w.process_one().await, AttemptOutcome::Delivered, "the script ran out: the default 200");
    assert!(w.queued().is_empty());
    assert_eq!(w.sender.count(), 3);
    assert_eq!(
        w.logs().iter().map(|e| e.outcome).collect::<Vec<_>>(),
        [Outcome::Delivered, Outcome::Retrying, Outcome::Retrying]
    );
}

/// A conversion postback with a delay, fired for an approved conversion of T1.
async fn delayed_conversion(w: &World, extra: serde_json::Value) -> String {
    let mut spec = json!({"name": "Delayed", "type": "conversion", "delay_seconds": 60, "url": format!("{URL}?t={{transaction_id}}")});
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let id = w.postback(spec).await;
    w.ingest_one(json!({"type": "click", "transaction_id": "T1", "offer_id": "O1", "publisher_id": "P1"})).await;
    let r = w.ingest_one(json!({"type": "conversion", "transaction_id": "T1", "status": "approved"})).await;
    assert_eq!(r.matched, 1);
    id
}

#[tokio::test]
async fn skipped_when_the_status_changed_before_it_came_due() {
    let w = World::new();
    delayed_conversion(&w, json!({})).await;
    w.advance_ms(10_000);
    let r = w
        .ingest_one(
            json!({"type": "conversion", "transaction_id": "T1", "status": "rejected", "rejection_reason": "fraud"}),
        )
        .await;
    assert!(!r.duplicate);
    assert_eq!(r.matched, 0, "the approved-only postback does not fire for the rejection");
    w.advance_ms(50_000);
    let outcome = w.process_one().await;
    let reason = "status changed from approved to rejected (reason: fraud); postback fires on approved";
    assert_eq!(outcome, AttemptOutcome::Skipped(reason.into()));
    assert_eq!(w.sender.count(), 0, "nothing sent");
    let logs = w.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].outcome, Outcome::Skipped);
    assert_eq!(logs[0].error.as_deref(), Some(reason));
    assert_eq!(logs[0].fired_at, start() + ms(60_000));
    assert!(w.queued().is_empty(), "a skipped firing is done");
}

#[tokio::test]
async fn the_status_is_re_read_at_fire_time() {
    // (fire_on, rejection_reasons, the status it changed to, reason, skipped?)
    let cases: Vec<(&str, Option<Vec<&str>>, &str, Option<&str>, Option<&str>)> = vec![
        ("approved", None, "approved", None, None),
        ("approved", None, "pending", None, Some("status changed from approved to pending; postback fires on approved")),
        ("all", None, "rejected", Some("fraud"), None),
        (
            "all",
            Some(vec!["chargeback"]),
            "rejected",
            Some("fraud"),
            Some("status changed from approved to rejected (reason: fraud); postback fires on all (rejection reasons: chargeback)"),
        ),
        ("all", Some(vec!["fraud"]), "rejected", Some("fraud"), None),
    ];
    for (fire_on, reasons, status, reason, skipped) in cases {
        let w = World::new();
        let mut extra = json!({"fire_on": fire_on});
        if let Some(reasons) = &reasons {
            extra["rejection_reasons"] = json!(reasons);
        }
        delayed_conversion(&w, extra).await;
        w.advance_ms(1_000);
        let mut change = json!({"type": "conversion", "transaction_id": "T1", "status": status});
        if let Some(reason) = reason {
            change["rejection_reason"] = json!(reason);
        }
        w.ingest_one(change).await;
        w.advance_ms(59_000);
        // The firing queued for the approved report comes due first.
        let due = w.receive().await;
        let first = due.iter().find(|l| l.firing.event.status.map(|s| s.as_str()) == Some("approved")).unwrap();
        let outcome = w.process(first).await;
        let case = format!("fire_on {fire_on}, reasons {reasons:?}, now {status} {reason:?}");
        match skipped {
            Some(why) => assert_eq!(outcome, AttemptOutcome::Skipped(why.into()), "{case}"),
            None => assert_eq!(outcome, AttemptOutcome::Delivered, "{case}"),
        }
    }
}

#[tokio::test]
async fn an_expired_status_record_is_judged_by_the_queued_status() {
    let retention = chrono::Duration::hours(1);
    let w = World::with(
        Arc::new(crate::testing::FixedJitter(0.5)),
        RETRY,
        MemoryOptions { retention, ..MemoryOptions::default() },
    );
    w.postback(json!({"name": "Late", "type": "conversion", "delay_seconds": 7200, "url": URL})).await;
    w.ingest_one(json!({"type": "conversion", "transaction_id": "T1", "status": "approved"})).await;
    w.advance_ms(7_200_000);
    assert_eq!(w.memory.touches.get_status("T1", &crate::domain::event::StatusKey::Conversion).await.unwrap(), None);
    assert_eq!(w.process_one().await, AttemptOutcome::Delivered);
}

#[tokio::test]
async fn skipped_when_the_postback_was_disabled_or_deleted() {
    let w = World::new();
    let id = delayed_conversion(&w, json!({})).await;
    let disabled = json!({"name": "Delayed", "type": "conversion", "delay_seconds": 60, "url": URL, "enabled": false});
    w.app.replace_postback(&id, spec(&disabled)).await.unwrap();
    w.advance_ms(60_000);
    assert_eq!(w.process_one().await, AttemptOutcome::Skipped("postback disabled".into()));

    let w = World::new();
    let id = delayed_conversion(&w, json!({})).await;
    w.app.delete_postback(&id).await.unwrap();
    w.advance_ms(60_000);
    assert_eq!(w.process_one().await, AttemptOutcome::Skipped("postback deleted".into()));
    let logs = w.logs();
    assert_eq!((logs[0].outcome, logs[0].postback_id.as_str()), (Outcome::Skipped, id.as_str()));
    assert_eq!(logs[0].error.as_deref(), Some("postback deleted"));
    assert_eq!(w.sender.count(), 0);
    assert!(w.queued().is_empty());
}

/// A message redelivered after its lease ran out, while its first copy was delivered:
/// nothing is sent again.
#[tokio::test]
async fn a_redelivered_message_already_delivered_sends_nothing() {
    let w = World::new();
    one_click_firing(&w).await;
    let first = w.receive_one().await;
    w.advance_ms(60_000); // the memory queue's default lease
    let again = w.receive_one().await;
    assert_eq!(first.firing, again.firing);
    assert_eq!(w.process(&first).await, AttemptOutcome::Delivered);
    assert_eq!(w.process(&again).await, AttemptOutcome::AlreadyDelivered);
    assert_eq!(w.sender.count(), 1, "sent once");
    assert_eq!(w.logs().len(), 1, "one entry");
    assert!(w.queued().is_empty(), "the redelivered message was acked");
}

/// On a queue that cannot deduplicate at enqueue (SQS), the same firing enqueued again
/// after delivery is dropped at dispatch.
#[tokio::test]
async fn a_delivered_firing_enqueued_again_is_not_sent_again() {
    let options = MemoryOptions { enqueue_dedupe: false, ..MemoryOptions::default() };
    let w = World::with(Arc::new(crate::testing::FixedJitter(0.5)), RETRY, options);
    one_click_firing(&w).await;
    let leased = w.receive_one().await;
    assert_eq!(w.process(&leased).await, AttemptOutcome::Delivered);
    w.memory.queue.enqueue(std::slice::from_ref(&leased.firing)).await.unwrap();
    assert_eq!(w.process_one().await, AttemptOutcome::AlreadyDelivered);
    assert_eq!(w.sender.count(), 1);
    assert!(w.queued().is_empty());
}

#[tokio::test]
async fn test_attempts_are_logged_as_tests_and_never_retried() {
    for (answer, outcome) in [
        (Answer::status(503), Outcome::Failed),
        (Answer::timeout(Duration::from_secs(10)), Outcome::Failed),
        (Answer::status(404), Outcome::Failed),
        (Answer::ok(), Outcome::Delivered),
    ] {
        let w = World::new();
        let id = w.postback(json!({"name": "T", "type": "conversion", "delay_seconds": 3600, "url": URL})).await;
        w.sender.set_default(answer.clone());
        let out = w.app.test_postback(&id, w.sample(&id, None).await).await.unwrap();
        assert_eq!(out.outcome, outcome, "{answer:?}");
        assert_eq!(w.sender.count(), 1, "{answer:?}: sent now, whatever the delay");
        assert!(w.queued().is_empty(), "{answer:?}: nothing queued");
        let logs = w.logs();
        assert_eq!(logs.len(), 1);
        assert!(logs[0].test, "{answer:?}: logged as a test");
        assert_eq!(logs[0].outcome, outcome);
        assert_eq!(logs[0].next_attempt_at, None);
        assert_eq!(logs[0].fired_at, start());
        assert!(!w.memory.logs.is_delivered(&out.delivery_id).await.unwrap(), "a test never marks delivered");
    }
}

#[tokio::test]
async fn a_resend_fires_now_without_the_status_check_and_retries_like_any_firing() {
    let w = World::new();
    delayed_conversion(&w, json!({})).await;
    w.ingest_one(json!({"type": "conversion", "transaction_id": "T1", "status": "rejected"})).await;
    w.advance_ms(60_000);
    assert!(matches!(w.process_one().await, AttemptOutcome::Skipped(_)));
    let skipped = w.logs().remove(0);

    w.advance_ms(1_000);
    w.sender.set_default(Answer::status(503));
    let entry = w.app.resend_log(&skipped.id).await.unwrap();
    assert_eq!(entry.outcome, Outcome::Retrying, "the admin decided: no status re-check");
    assert_eq!(entry.resend_of.as_deref(), Some(skipped.id.as_str()));
    assert_ne!(entry.delivery_id, skipped.delivery_id, "a new firing");
    assert_eq!(entry.fired_at, start() + ms(61_000));
    let queued = w.queued();
    assert_eq!(queued.len(), 1, "its retry is queued");
    assert_eq!((queued[0].attempt, queued[0].due_at), (2, entry.fired_at + ms(FIRST_WAIT_MS)));
    assert!(!queued[0].check_status);
    w.sender.set_default(Answer::ok());
    w.advance_ms(FIRST_WAIT_MS as u64);
    assert_eq!(w.process_one().await, AttemptOutcome::Delivered, "the retry skips the status check too");
}

#[tokio::test]
async fn a_slow_answer_is_logged_with_its_duration_and_retry_counts_from_the_attempt() {
    let w = World::new();
    one_click_firing(&w).await;
    w.sender.set_default(Answer::status(503).after(Duration::from_millis(1_500)));
    let leased = w.receive_one().await;
    let dispatcher = w.app.dispatcher();
    let attempt = tokio::spawn(async move { dispatcher.process(&leased).await.unwrap() });
    super::settle().await;
    assert!(w.logs().is_empty(), "still waiting for the answer");
    w.advance_ms(1_500);
    let outcome = attempt.await.unwrap();
    assert_eq!(outcome, AttemptOutcome::Retrying(start() + ms(FIRST_WAIT_MS)));
    let entry = w.logs().remove(0);
    assert_eq!((entry.fired_at, entry.duration_ms), (start(), 1_500));
}

/// `success_rule` on a 2xx: kept → delivered; broken → failed at once naming the rule,
/// or retried like a 5xx with `retry` (failed on the last attempt); never on a non-2xx.
#[tokio::test]
async fn a_2xx_that_breaks_the_success_rule_fails_or_retries() {
    let contains = json!({"body_contains": "status=ok"});
    let not_contains = json!({"body_not_contains": "error"});
    let both = json!({"body_contains": "status=ok", "body_not_contains": "error"});
    let retrying = json!({"body_contains": "status=ok", "retry": true});
    #[rustfmt::skip]
    let cases: Vec<(&str, serde_json::Value, Answer, u32, Expect)> = vec![
        ("contains: kept", contains.clone(), Answer::status(200).body("x status=ok y"), 1, Expect::Delivered),
        ("contains: broken", contains.clone(), Answer::status(200).body("status=pending"), 1, Expect::Failed(r#"response body does not contain "status=ok""#)),
        ("contains: case-sensitive", contains.clone(), Answer::status(204).body("STATUS=OK"), 1, Expect::Failed("does not contain")),
        ("not_contains: kept", not_contains.clone(), Answer::status(200).body("fine"), 1, Expect::Delivered),
        ("not_contains: broken", not_contains.clone(), Answer::status(200).body("an error occurred"), 1, Expect::Failed(r#"response body contains "error""#)),
        ("both: kept", both.clone(), Answer::status(200).body("status=ok"), 1, Expect::Delivered),
        ("both: second broken", both.clone(), Answer::status(200).body("status=ok error"), 1, Expect::Failed(r#"contains "error""#)),
        ("both: first broken", both.clone(), Answer::status(200).body("error"), 1, Expect::Failed(r#"does not contain "status=ok""#)),
        ("retry: broken is retried", retrying.clone(), Answer::status(200).body("nope"), 1, Expect::RetryAfterMs(FIRST_WAIT_MS)),
        ("retry: on the last attempt", retrying.clone(), Answer::status(200).body("nope"), 3, Expect::Failed(r#"gave up after 3 attempts: response body does not contain "status=ok""#)),
        ("retry: kept", retrying.clone(), Answer::status(200).body("status=ok"), 1, Expect::Delivered),
        ("no rule for a 5xx", contains.clone(), Answer::status(503).body("status=ok"), 1, Expect::RetryAfterMs(FIRST_WAIT_MS)),
        ("no rule for a 4xx", not_contains.clone(), Answer::status(404).body("error"), 1, Expect::Failed("HTTP 404")),
    ];
    for (name, rule, answer, attempt, expect) in cases {
        let w = World::new();
        w.postback(json!({"name": "Clicks", "type": "click", "url": URL, "success_rule": rule})).await;
        w.ingest_one(json!({"type": "click", "transaction_id": "T1", "offer_id": "O1", "publisher_id": "P1"})).await;
        w.sender.set_default(answer);
        let mut leased = w.receive_one().await;
        leased.firing.attempt = attempt;
        let outcome = w.process(&leased).await;
        let logs = w.logs();
        assert_eq!(logs.len(), 1, "{name}");
        let entry = &logs[0];
        let delivered = w.memory.logs.is_delivered(&leased.firing.delivery_id).await.unwrap();
        match expect {
            Expect::Delivered => {
                assert_eq!((outcome, entry.outcome, delivered), (AttemptOutcome::Delivered, Outcome::Delivered, true));
                assert_eq!(entry.error, None, "{name}");
            }
            Expect::RetryAfterMs(wait) => {
                assert_eq!(outcome, AttemptOutcome::Retrying(start() + ms(wait)), "{name}");
                assert_eq!(entry.outcome, Outcome::Retrying, "{name}");
                assert!(!delivered, "{name}");
                assert_eq!(w.queued().len(), 1, "{name}: the next attempt is queued");
                if entry.status_code == Some(200) {
                    let error = entry.error.as_deref().unwrap_or_default();
                    assert!(error.contains("does not contain"), "{name}: the retrying entry names the rule: {error:?}");
                }
            }
            Expect::Failed(error) => assert_failed(&w, name, outcome, entry, delivered, error),
        }
    }
}

/// A test send applies the success rule too (the admin sees why it would fail).
#[tokio::test]
async fn a_test_send_judges_the_success_rule() {
    let w = World::new();
    let id = w
        .postback(json!({"name": "Clicks", "type": "click", "url": URL, "success_rule": {"body_contains": "OK", "retry": true}}))
        .await;
    w.sender.set_default(Answer::status(200).body("queued"));
    let event = crate::domain::macros::sample_event(crate::domain::event::EventType::Click, []);
    let out = w.app.test_postback(&id, event).await.unwrap();
    assert_eq!(out.outcome, Outcome::Failed, "a test is never retried");
    assert_eq!(out.error.as_deref(), Some(r#"response body does not contain "OK""#));
}

/// A store that names delivered entries itself (DynamoDB: the entry is its own delivered
/// marker) gets the delivered attempt's entry under that id: in the log, in what
/// `resend` answers, and for `GET /logs/{id}`. Other attempts keep the minted id, and a
/// redelivered message still sends nothing.
#[tokio::test]
async fn a_store_that_names_delivered_entries_gets_them_under_its_id() {
    let options = MemoryOptions { delivered_entry_ids: true, ..MemoryOptions::default() };
    let w = World::with(Arc::new(crate::testing::FixedJitter(0.5)), RETRY, options);
    one_click_firing(&w).await;
    w.sender.script(URL, [Answer::status(503), Answer::ok()]);
    let first = w.receive_one().await;
    assert!(matches!(w.process(&first).await, AttemptOutcome::Retrying(_)));
    let retrying = w.logs()[0].clone();
    assert_ne!(retrying.id, format!("delivered-{}", retrying.delivery_id), "only a delivered entry is renamed");
    w.advance_ms(60_000);
    let second = w.receive_one().await;
    assert_eq!(w.process(&second).await, AttemptOutcome::Delivered);
    let delivered = w.logs()[0].clone();
    assert_eq!(delivered.outcome, Outcome::Delivered);
    assert_eq!(delivered.id, format!("delivered-{}", delivered.delivery_id));
    assert_eq!(w.app.get_log(&delivered.id).await.unwrap(), delivered);
    // The same message again (its lease ran out before the ack): nothing sent, one entry.
    assert_eq!(w.process(&second).await, AttemptOutcome::AlreadyDelivered);
    assert_eq!((w.sender.count(), w.logs().len()), (2, 2));

    // A resend is a new delivery id, delivered under the store's id for it.
    let resent = w.app.resend_log(&delivered.id).await.unwrap();
    assert_eq!(resent.id, format!("delivered-{}", resent.delivery_id));
    assert_ne!(resent.delivery_id, delivered.delivery_id);
    assert_eq!(w.app.get_log(&resent.id).await.unwrap(), resent);
}

/// A sent attempt's entry shows the request as sent (macros filled in, secrets
/// redacted); an entry with nothing sent shows the postback's URL template, redacted.
#[tokio::test]
async fn entries_show_the_sent_request_or_else_the_template_redacted() {
    let w = World::new();
    let pb = json!({"name": "Clicks", "type": "click", "url": format!("{URL}?t={{transaction_id}}&token={{transaction_id}}")});
    let id = w.postback(pb.clone()).await;
    let click = |t: &str| json!({"type": "click", "transaction_id": t, "offer_id": "O1", "publisher_id": "P1"});
    w.ingest_one(click("T1")).await;
    assert_eq!(w.process_one().await, AttemptOutcome::Delivered);
    w.ingest_one(click("T2")).await;
    let mut disabled = pb;
    disabled["enabled"] = json!(false);
    w.app.replace_postback(&id, spec(&disabled)).await.unwrap();
    assert_eq!(w.process_one().await, AttemptOutcome::Skipped("postback disabled".into()));

    let shown = |outcome: Outcome| {
        let logs = w.logs();
        let entry = logs.iter().find(|e| e.outcome == outcome).expect("an entry with that outcome");
        (entry.method.clone(), entry.url.clone())
    };
    assert_eq!(shown(Outcome::Delivered), ("GET".to_string(), format!("{URL}?t=T1&token=[REDACTED]")));
    assert_eq!(shown(Outcome::Skipped), ("GET".to_string(), format!("{URL}?t={{transaction_id}}&token=[REDACTED]")));
}
