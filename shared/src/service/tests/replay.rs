//! Bulk replay (`POST /logs/replay`) on the fakes: what it selects, what it queues, and
//! what the dispatch path then does with it.

use serde_json::json;

use super::{ms, start, World};
use crate::domain::log::{LogEntry, LogFilter, Outcome};
use crate::service::replay::{ReplayOutput, ReplayRequest, MAX_REPLAY};
use crate::service::AttemptOutcome;
use crate::testing::Answer;

const URL: &str = "https://aff.example/pb";

/// A conversion postback (fires on approved) and `n` approved conversions T0..Tn-1,
/// each dispatched once against `answer`. Returns the postback id.
async fn conversions(w: &World, n: usize, answer: Answer) -> String {
    let id =
        w.postback(json!({"name": "Sales", "type": "conversion", "url": format!("{URL}?t={{transaction_id}}")})).await;
    for i in 0..n {
        w.ingest_one(json!({"type": "conversion", "transaction_id": format!("T{i}"), "status": "approved"})).await;
    }
    w.sender.set_default(answer);
    for leased in w.receive().await {
        w.process(&leased).await;
    }
    id
}

fn request(filter: LogFilter, dry_run: bool) -> ReplayRequest {
    ReplayRequest { filter: LogFilter { from: Some(start()), ..filter }, dry_run, max: MAX_REPLAY }
}

async fn replay(w: &World, dry_run: bool) -> ReplayOutput {
    w.app.replay(&request(LogFilter::default(), dry_run)).await.unwrap()
}

fn with_outcome(logs: &[LogEntry], outcome: Outcome) -> Vec<LogEntry> {
    logs.iter().filter(|e| e.outcome == outcome).cloned().collect()
}

#[tokio::test]
async fn failed_firings_are_queued_once_each_with_their_delivery_id() {
    let w = World::new();
    conversions(&w, 3, Answer::status(404)).await;
    let failed = with_outcome(&w.logs(), Outcome::Failed);
    assert_eq!(failed.len(), 3, "404 fails at once");
    w.advance_ms(60_000);

    let dry = replay(&w, true).await;
    assert_eq!(dry, ReplayOutput { matched: 3, replayed: 0, dry_run: true, next_cursor: None });
    assert!(w.queued().is_empty(), "a dry run queues nothing");

    let out = replay(&w, false).await;
    assert_eq!(out, ReplayOutput { matched: 3, replayed: 3, dry_run: false, next_cursor: None });
    let mut queued = w.queued();
    queued.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    let mut want = failed.clone();
    want.sort_by(|a, b| a.delivery_id.cmp(&b.delivery_id));
    for (firing, entry) in queued.iter().zip(&want) {
        assert_eq!(firing.delivery_id, entry.delivery_id, "the same delivery id");
        assert_eq!(firing.replay_of.as_deref(), Some(entry.id.as_str()), "replay_of is the failed entry");
        assert_eq!(firing.attempt, 1, "a fresh chain of attempts");
        assert_eq!((firing.due_at, firing.queued_at), (start() + ms(60_000), start() + ms(60_000)), "due now");
        assert!(firing.check_status, "the status is re-checked at fire time");
        assert_eq!(firing.event, entry.firing.as_ref().unwrap().event, "the same event");
    }
    assert_eq!(queued.len(), 3);
    assert_eq!(replay(&w, false).await.matched, 0, "replayed again before its attempts ran: nothing queued twice");

    w.sender.set_default(Answer::ok());
    for leased in w.receive().await {
        assert_eq!(w.process(&leased).await, AttemptOutcome::Delivered);
    }
    let delivered = with_outcome(&w.logs(), Outcome::Delivered);
    assert_eq!(delivered.len(), 3);
    for entry in &delivered {
        let original = failed.iter().find(|f| f.delivery_id == entry.delivery_id).unwrap();
        assert_eq!(entry.replay_of.as_deref(), Some(original.id.as_str()), "the entry says what it replays");
        assert_eq!(entry.attempt, 1);
    }
    assert_eq!(replay(&w, false).await.matched, 0, "none failed any more");
}

#[tokio::test]
async fn a_conversion_rejected_meanwhile_is_skipped_with_the_reason() {
    let w = World::new();
    conversions(&w, 2, Answer::status(400)).await;
    w.ingest_one(
        json!({"type": "conversion", "transaction_id": "T1", "status": "rejected", "rejection_reason": "fraud"}),
    )
    .await;
    assert_eq!(replay(&w, false).await.replayed, 2, "both failed firings are queued");
    w.sender.set_default(Answer::ok());
    let mut outcomes: Vec<String> = Vec::new();
    for leased in w.receive().await {
        outcomes.push(match w.process(&leased).await {
            AttemptOutcome::Skipped(reason) => format!("{} skipped: {reason}", leased.firing.event.transaction_id),
            other => format!("{} {}", leased.firing.event.transaction_id, other.label()),
        });
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            "T0 delivered",
            "T1 skipped: status changed from approved to rejected (reason: fraud); postback fires on approved"
        ]
    );
    let skipped = with_outcome(&w.logs(), Outcome::Skipped);
    assert!(skipped[0].replay_of.is_some(), "the skip is logged as the replay's entry");
    assert_eq!(replay(&w, false).await.matched, 0, "skipped is not failed: nothing to replay");
}

/// A replay that fails again (its retries used up) is a failed firing again, replayed
/// with a fresh chain once more.
#[tokio::test]
async fn a_replay_that_fails_again_can_be_replayed_again() {
    let w = World::new();
    conversions(&w, 1, Answer::status(410)).await;
    assert_eq!(replay(&w, false).await.replayed, 1);
    assert_eq!(w.process_one().await, AttemptOutcome::Failed, "still gone");
    let second = w.app.replay(&request(LogFilter::default(), false)).await.unwrap();
    assert_eq!(second.replayed, 1, "its newest entry failed: it is replayable");
    let newest_failed = with_outcome(&w.logs(), Outcome::Failed).remove(0);
    assert_eq!(w.queued()[0].replay_of.as_deref(), Some(newest_failed.id.as_str()), "replays the newest failure");
    assert_eq!(w.queued()[0].attempt, 1);
}

#[tokio::test]
async fn the_filters_and_from_narrow_what_is_replayed() {
    let w = World::new();
    let id = conversions(&w, 2, Answer::status(404)).await;
    w.advance_ms(10_000);
    let later = w.now();
    w.ingest_one(json!({"type": "conversion", "transaction_id": "T9", "status": "approved"})).await;
    w.process_one().await;
    let cases: Vec<(&str, LogFilter, usize)> = vec![
        ("all since the start", LogFilter::default(), 3),
        ("from later", LogFilter { from: Some(later), ..LogFilter::default() }, 1),
        ("to before later", LogFilter { to: Some(later - ms(1)), ..LogFilter::default() }, 2),
        ("postback", LogFilter { postback_id: Some(id.clone()), ..LogFilter::default() }, 3),
        ("another postback", LogFilter { postback_id: Some("pb_other".into()), ..LogFilter::default() }, 0),
        ("transaction", LogFilter { transaction_id: Some("T9".into()), ..LogFilter::default() }, 1),
        ("status code", LogFilter { status_code: Some(500), ..LogFilter::default() }, 0),
    ];
    for (name, filter, matched) in cases {
        let filter = LogFilter { from: filter.from.or(Some(start())), ..filter };
        let out = w.app.replay(&ReplayRequest { filter, dry_run: true, max: MAX_REPLAY }).await.unwrap();
        assert_eq!(out.matched, matched, "{name}");
    }
}

/// At most `max` per call; the cursor carries on without a gap or a repeat.
#[tokio::test]
async fn at_most_max_per_call_then_the_cursor_carries_on() {
    let w = World::new();
    conversions(&w, 5, Answer::status(404)).await;
    let mut filter = LogFilter { from: Some(start()), ..LogFilter::default() };
    let mut sizes = Vec::new();
    loop {
        let out = w.app.replay(&ReplayRequest { filter: filter.clone(), dry_run: false, max: 2 }).await.unwrap();
        sizes.push(out.replayed);
        match out.next_cursor {
            Some(c) => filter.cursor = Some(crate::domain::log::Cursor::decode(&c).unwrap()),
            None => break,
        }
    }
    assert_eq!(sizes, [2, 2, 1]);
    let mut ids: Vec<String> = w.queued().into_iter().map(|f| f.delivery_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "each failed firing once");
}

#[tokio::test]
async fn test_entries_are_never_replayed() {
    let w = World::new();
    let id = w.postback(json!({"name": "Sales", "type": "conversion", "url": URL})).await;
    w.sender.set_default(Answer::status(404));
    let out = w.app.test_postback(&id, w.sample(&id, None).await).await.unwrap();
    assert_eq!(out.outcome, Outcome::Failed);
    assert_eq!(replay(&w, true).await.matched, 0);
}

/// A failed entry resent by hand is taken over by the resend (a new delivery id): a
/// replay leaves the original alone, and replays the resend if that failed.
#[tokio::test]
async fn a_resent_failure_is_not_replayed_but_a_failed_resend_is() {
    let w = World::new();
    conversions(&w, 2, Answer::status(404)).await;
    let failed = with_outcome(&w.logs(), Outcome::Failed);
    let resent = w.app.resend_log(&failed[0].id).await.unwrap();
    assert_eq!(resent.outcome, Outcome::Failed, "still 404");
    w.app.replay(&request(LogFilter::default(), false)).await.unwrap();
    let mut replayed: Vec<String> = w.queued().into_iter().map(|f| f.replay_of.unwrap()).collect();
    replayed.sort();
    let mut want = vec![failed[1].id.clone(), resent.id.clone()];
    want.sort();
    assert_eq!(replayed, want, "the other failure and the failed resend, not the resent original");
}
