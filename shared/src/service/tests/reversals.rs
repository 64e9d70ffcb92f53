//! Reversals on the fakes (docs/DESIGN.md *Reversals*): who gets one (exactly the
//! receivers a conversion was delivered to), once, whatever repeats, and the races with a
//! firing in flight.

use std::time::Duration;

use serde_json::{json, Value};

use super::{settle, spec, start, World};
use crate::domain::event::{Status, StatusKey};
use crate::domain::firing::Firing;
use crate::domain::log::{LogEntry, LogFilter, Outcome};
use crate::entry::http::parse;
use crate::ports::{TouchRecord, TouchStore};
use crate::service::replay::{ReplayRequest, MAX_REPLAY};
use crate::service::AttemptOutcome;
use crate::testing::Answer;

/// A conversion postback for offer O1 to `https://{host}/pb`, with a reversal request to
/// `https://{host}/reverse` (when `reversal`), plus `extra` fields.
fn postback_json(host: &str, reversal: bool, extra: Value) -> Value {
    let mut p = json!({
        "name": format!("Receiver {host}"), "type": "conversion", "offers": ["O1"],
        "url": format!("https://{host}/pb?t={{transaction_id}}&s={{status}}&d={{delivery_id}}"),
    });
    if reversal {
        p["reversal"] = json!({
            "method": "POST",
            "url": format!("https://{host}/reverse?t={{transaction_id}}&s={{status}}"),
            "headers": {"Authorization": "Bearer secret-{transaction_id}"},
            "body": "{\"original\": \"{original_delivery_id}\", \"at\": \"{original_fired_at}\", \"reason\": \"{rejection_reason}\", \"payout\": \"{payout}\"}",
        });
    }
    if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
        p.extend(extra.clone());
    }
    p
}

async fn click_and_approve(w: &World, txid: &str) {
    w.ingest(&[
        json!({"type": "click", "transaction_id": txid, "offer_id": "O1", "publisher_id": "P1", "external_transaction_id": "aff"}),
        json!({"type": "conversion", "transaction_id": txid, "status": "approved", "payout": "12.50"}),
    ])
    .await;
}

fn reject(txid: &str) -> Value {
    json!({"type": "conversion", "transaction_id": txid, "status": "rejected", "rejection_reason": "chargeback"})
}

/// Process every due firing once.
async fn dispatch_due(w: &World) -> Vec<AttemptOutcome> {
    let mut outcomes = Vec::new();
    for leased in w.receive().await {
        outcomes.push(w.process(&leased).await);
    }
    outcomes
}

fn delivered_to(w: &World, path: &str) -> Vec<LogEntry> {
    w.logs().into_iter().filter(|e| e.outcome == Outcome::Delivered && e.url.contains(path)).collect()
}

fn reversals(w: &World) -> Vec<LogEntry> {
    w.logs().into_iter().filter(|e| e.reversal_of.is_some()).collect()
}

#[tokio::test]
async fn only_the_receivers_a_conversion_was_delivered_to_get_its_reversal() {
    let w = World::new();
    // a: delivered. b: failed (404). c: still waiting (delayed) when rejected.
    // d: delivered, no reversal request. e: delivered, reversal, another offer's scope (matches nothing).
    w.postback(postback_json("a.example", true, json!({}))).await;
    w.postback(postback_json("b.example", true, json!({}))).await;
    w.postback(postback_json("c.example", true, json!({"delay_seconds": 3600}))).await;
    w.postback(postback_json("d.example", false, json!({}))).await;
    w.sender.script("https://b.example/", [Answer::status(404)]);
    click_and_approve(&w, "T1").await;
    let outcomes = dispatch_due(&w).await;
    assert_eq!(outcomes.iter().filter(|o| **o == AttemptOutcome::Delivered).count(), 2, "{outcomes:?}");
    let original = delivered_to(&w, "a.example/pb").pop().unwrap();
    assert_eq!(w.sender.count(), 3);

    w.advance_ms(5_000);
    let result = w.ingest_one(reject("T1")).await;
    assert!(!result.duplicate);
    let queued = w.queued();
    let queued_reversals: Vec<&Firing> = queued.iter().filter(|f| f.reversal_of.is_some()).collect();
    assert_eq!(queued_reversals.len(), 1, "one reversal, to a only: {queued:?}");
    let reversal = queued_reversals[0];
    assert_eq!(reversal.delivery_id, Firing::reversal_delivery_id(&original.delivery_id, &original.postback_id));
    assert_eq!(reversal.destination.as_deref(), Some("https://a.example:443"));

    assert_eq!(dispatch_due(&w).await, vec![AttemptOutcome::Delivered]);
    let sent = w.sender.requests_to("https://a.example/reverse");
    assert_eq!(sent.len(), 1);
    let request = &sent[0].request;
    assert_eq!(request.method, "POST");
    assert_eq!(request.url, "https://a.example/reverse?t=T1&s=rejected");
    assert_eq!(request.headers.get("Authorization").map(String::as_str), Some("Bearer secret-T1"));
    let body: Value = serde_json::from_str(request.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["original"], original.delivery_id.as_str());
    assert_eq!(body["at"], original.fired_at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true));
    assert_eq!(body["reason"], "chargeback");
    assert_eq!(body["payout"], "12.50", "the original conversion's values");

    let logged = reversals(&w);
    assert_eq!(logged.len(), 1);
    assert_eq!(logged[0].reversal_of.as_deref(), Some(original.id.as_str()));
    assert_eq!(logged[0].outcome, Outcome::Delivered);
    assert_eq!(logged[0].request_headers.get("Authorization").map(String::as_str), Some("[REDACTED]"));
    let shown = serde_json::to_value(&logged[0]).unwrap();
    assert_eq!(shown["reversal_of"], original.id.as_str(), "the API shows reversal_of");

    // c comes due: skipped at fire time (the status changed), and nothing to reverse.
    w.advance_ms(3_600_000);
    assert!(matches!(dispatch_due(&w).await.as_slice(), [AttemptOutcome::Skipped(_)]));
    assert!(w.queued().is_empty());
    assert_eq!(reversals(&w).len(), 1, "b failed, c was skipped, d has no reversal request");
    assert_eq!(w.sender.requests_to("https://b.example/reverse").len(), 0);
    assert_eq!(w.sender.requests_to("https://c.example/").len(), 0);
}

#[tokio::test]
async fn a_repeated_rejection_or_a_redelivered_message_sends_the_reversal_once() {
    let w = World::new();
    w.postback(postback_json("a.example", true, json!({}))).await;
    click_and_approve(&w, "T1").await;
    dispatch_due(&w).await;

    // The tracker reports the rejection twice (the second time with an event id: not a
    // duplicate by the idempotency key), before the reversal went out.
    w.ingest_one(reject("T1")).await;
    let again = w
        .ingest_one(json!({"type": "conversion", "transaction_id": "T1", "status": "rejected", "event_id": "ev-2"}))
        .await;
    assert!(!again.duplicate);
    assert_eq!(w.queued().len(), 1, "the same deterministic delivery id is queued once");
    let leased = w.receive_one().await;
    assert_eq!(w.process(&leased).await, AttemptOutcome::Delivered);
    // The same message redelivered (its lease ran out before the ack).
    assert_eq!(w.process(&leased).await, AttemptOutcome::AlreadyDelivered);
    // And the rejection once more, after the reversal was delivered.
    w.ingest_one(json!({"type": "conversion", "transaction_id": "T1", "status": "rejected", "event_id": "ev-3"})).await;
    assert!(w.queued().is_empty(), "a delivered reversal is not queued again");
    // Exactly the same report again: a duplicate, nothing.
    assert!(w.ingest_one(reject("T1")).await.duplicate);
    dispatch_due(&w).await;
    assert_eq!(w.sender.requests_to("https://a.example/reverse").len(), 1);
}

#[tokio::test]
async fn a_crash_between_the_status_change_and_the_queueing_sends_it_once_on_the_retry() {
    let w = World::new();
    w.postback(postback_json("a.example", true, json!({}))).await;
    click_and_approve(&w, "T1").await;
    dispatch_due(&w).await;
    // The crash: the status was recorded, the reversal not queued, the event not marked
    // seen, the tracker got no 2xx.
    let rejected = parse::event::from_json(&reject("T1"), w.now()).unwrap();
    w.memory.touches.record(&[TouchRecord { event: rejected }]).await.unwrap();
    assert!(w.queued().is_empty());
    // The tracker retries.
    let retried = w.ingest_one(reject("T1")).await;
    assert!(!retried.duplicate);
    assert_eq!(dispatch_due(&w).await, vec![AttemptOutcome::Delivered]);
    assert!(w.ingest_one(reject("T1")).await.duplicate);
    dispatch_due(&w).await;
    assert_eq!(w.sender.requests_to("https://a.example/reverse").len(), 1);
}

/// The rejection arrives while the original is in flight: ingest sees no delivery yet;
/// the original is delivered after the status changed, and its reversal follows it.
#[tokio::test]
async fn a_rejection_while_the_original_is_in_flight_is_reversed_after_the_delivery() {
    let w = World::new();
    w.postback(postback_json("a.example", true, json!({}))).await;
    click_and_approve(&w, "T1").await;
    w.sender.script("https://a.example/pb", [Answer::ok().after(Duration::from_secs(2))]);
    let leased = w.receive_one().await;
    let dispatcher = w.app.dispatcher();
    let in_flight = tokio::spawn(async move { dispatcher.process(&leased).await.unwrap() });
    settle().await;
    assert_eq!(w.sender.count(), 1, "the original is being sent");

    w.ingest_one(reject("T1")).await;
    assert!(w.queued().iter().all(|f| f.reversal_of.is_none()), "nothing delivered yet: ingest queues no reversal");
    w.advance_ms(2_000);
    assert_eq!(in_flight.await.unwrap(), AttemptOutcome::Delivered);
    let original = delivered_to(&w, "a.example/pb").pop().unwrap();
    let queued = w.queued();
    assert_eq!(queued.len(), 1, "the reversal follows the delivery");
    assert_eq!(queued[0].reversal_of.as_ref().map(|r| r.entry_id.as_str()), Some(original.id.as_str()));
    assert_eq!(dispatch_due(&w).await, vec![AttemptOutcome::Delivered]);
    assert_eq!(w.sender.requests_to("https://a.example/reverse").len(), 1);
}

/// Both sides see each other (the status was written before ingest read the deliveries,
/// the delivery before the dispatcher read the status): two queueings, one reversal.
#[tokio::test]
async fn ingest_and_the_dispatcher_both_queueing_it_send_it_once() {
    let w = World::new();
    w.postback(postback_json("a.example", true, json!({}))).await;
    click_and_approve(&w, "T1").await;
    dispatch_due(&w).await;
    w.ingest_one(reject("T1")).await;
    let original = delivered_to(&w, "a.example/pb").pop().unwrap();
    let postback = w.app.catalog.from_store(&original.postback_id).await.unwrap().unwrap();
    w.app.dispatcher().reverse_if_rejected(&postback, &original).await.unwrap();
    assert_eq!(w.queued().len(), 1);
    let outcomes = dispatch_due(&w).await;
    assert_eq!(outcomes, vec![AttemptOutcome::Delivered]);
    w.app.dispatcher().reverse_if_rejected(&postback, &original).await.unwrap();
    dispatch_due(&w).await;
    assert_eq!(w.sender.requests_to("https://a.example/reverse").len(), 1);
}

#[tokio::test]
async fn a_reversal_is_retried_signed_replayable_and_rechecked_like_any_firing() {
    let w = World::new();
    let id = w.postback(postback_json("a.example", true, json!({"signing": "standard-webhooks"}))).await;
    click_and_approve(&w, "T1").await;
    dispatch_due(&w).await;
    w.ingest_one(reject("T1")).await;
    w.sender.script("https://a.example/reverse", [Answer::status(503), Answer::status(404)]);
    assert!(matches!(dispatch_due(&w).await.as_slice(), [AttemptOutcome::Retrying(_)]));
    let first = reversals(&w);
    assert_eq!(first.len(), 1);
    let sent = w.sender.requests_to("https://a.example/reverse");
    assert!(sent[0].request.headers.contains_key("webhook-signature"), "signed");
    assert_eq!(sent[0].request.headers.get("webhook-id"), Some(&first[0].delivery_id));
    w.advance_ms(60_000);
    assert_eq!(dispatch_due(&w).await, vec![AttemptOutcome::Failed]);
    let failed = reversals(&w);
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|e| e.reversal_of == first[0].reversal_of), "every attempt says what it reverses");

    // Replayed: the same delivery id, still a reversal.
    w.advance_ms(60_000);
    let out = w
        .app
        .replay(&ReplayRequest {
            filter: LogFilter { from: Some(start()), ..LogFilter::default() },
            dry_run: false,
            max: MAX_REPLAY,
        })
        .await
        .unwrap();
    assert_eq!(out.replayed, 1);
    assert_eq!(dispatch_due(&w).await, vec![AttemptOutcome::Delivered]);
    let replayed = reversals(&w).into_iter().find(|e| e.replay_of.is_some()).unwrap();
    assert_eq!(replayed.reversal_of, first[0].reversal_of, "a replay keeps reversal_of");
    assert_eq!(replayed.delivery_id, first[0].delivery_id);

    // Re-checked at fire time: approved again before it went, or the request removed.
    let w2 = World::new();
    w2.postback(postback_json("a.example", true, json!({}))).await;
    click_and_approve(&w2, "T2").await;
    dispatch_due(&w2).await;
    w2.ingest_one(reject("T2")).await;
    w2.ingest_one(json!({"type": "conversion", "transaction_id": "T2", "status": "approved", "event_id": "again"}))
        .await;
    let outcomes = dispatch_due(&w2).await;
    let reason = outcomes.iter().find_map(|o| match o {
        AttemptOutcome::Skipped(r) => Some(r.clone()),
        _ => None,
    });
    assert!(reason.unwrap().contains("status changed from rejected to approved"), "{outcomes:?}");
    assert_eq!(w2.sender.requests_to("https://a.example/reverse").len(), 0, "approved again: not reversed");
    assert!(w.app.get_postback(&id).await.unwrap().reversal.is_some());
}

#[tokio::test]
async fn a_removed_reversal_request_skips_the_queued_reversal() {
    let w = World::new();
    let id = w.postback(postback_json("a.example", true, json!({}))).await;
    click_and_approve(&w, "T1").await;
    dispatch_due(&w).await;
    w.ingest_one(reject("T1")).await;
    assert_eq!(w.queued().len(), 1);
    w.app.replace_postback(&id, spec(&postback_json("a.example", false, json!({})))).await.unwrap();
    match dispatch_due(&w).await.as_slice() {
        [AttemptOutcome::Skipped(reason)] => assert!(reason.contains("no reversal request"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.sender.requests_to("https://a.example/reverse").len(), 0);
}

#[tokio::test]
async fn without_a_reversal_request_a_rejection_reads_no_deliveries() {
    let w = World::new();
    w.postback(postback_json("a.example", false, json!({}))).await;
    click_and_approve(&w, "T1").await;
    dispatch_due(&w).await;
    let index = w.app.catalog.index().await.unwrap();
    assert!(!index.has_reversal(crate::domain::event::EventType::Conversion));
    w.ingest_one(reject("T1")).await;
    assert!(w.queued().is_empty());
    let current = w.memory.touches.get_status("T1", &StatusKey::Conversion).await.unwrap().unwrap();
    assert_eq!(current.status, Status::Rejected);
    // What ingest would have read: the store answers the delivered entry.
    assert_eq!(crate::service::reversals::delivered_of_transaction(&*w.memory.logs, "T1").await.unwrap().len(), 1);
}

#[test]
fn a_reversal_is_validated_at_save_naming_the_field() {
    let base = |extra: Value| {
        let mut p = json!({"name": "A", "type": "conversion", "url": "https://a.example/pb"});
        p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        parse::postback::spec_from_json(&p)
    };
    let cases: &[(&str, Value, &str)] = &[
        ("on a click postback", json!({"type": "click", "reversal": {"url": "https://a.example/r"}}), "reversal"),
        ("on an alert postback", json!({"type": "alert", "reversal": {"url": "https://a.example/r"}}), "reversal"),
        ("unknown macro", json!({"reversal": {"url": "https://a.example/r?x={Sub5}"}}), "reversal.url"),
        (
            "unknown macro in a header",
            json!({"reversal": {"url": "https://a.example/r", "headers": {"X": "{nope}"}}}),
            "reversal.headers.X",
        ),
        ("body on GET", json!({"reversal": {"url": "https://a.example/r", "body": "{\"a\": 1}"}}), "reversal.body"),
        ("no url", json!({"reversal": {"method": "POST"}}), "reversal.url"),
        ("bad method", json!({"reversal": {"method": "DELETE", "url": "https://a.example/r"}}), "reversal.method"),
        ("unknown key", json!({"reversal": {"url": "https://a.example/r", "uri": "x"}}), "reversal.uri"),
        ("not an object", json!({"reversal": "https://a.example/r"}), "reversal"),
        ("host from a macro", json!({"reversal": {"url": "https://{original_delivery_id}/r"}}), "reversal.url"),
        (
            "reversal macros only in the reversal",
            json!({"url": "https://a.example/pb?o={original_delivery_id}"}),
            "url",
        ),
    ];
    for (name, extra, field) in cases {
        let err = base(extra.clone()).expect_err(name);
        assert_eq!(err.field, *field, "{name}: {err:?}");
    }
    let ok = base(json!({"type": "event", "reversal": {"method": "post", "url": "https://a.example/r?o={original_delivery_id}&at={original_fired_at}",
        "body": "{\"o\": \"{original_delivery_id}\"}"}}))
    .unwrap();
    let reversal = ok.reversal.unwrap();
    assert_eq!(reversal.method, crate::domain::postback::HttpMethod::Post);
    assert_eq!(reversal.content_type, "application/json");
}

#[tokio::test]
async fn a_reversal_is_stored_versioned_and_its_secrets_redacted() {
    let w = World::new();
    let id = w.postback(postback_json("a.example", true, json!({}))).await;
    let stored = w.app.get_postback(&id).await.unwrap();
    assert_eq!(stored.reversal.as_ref().unwrap().headers["Authorization"], "Bearer secret-{transaction_id}");
    let shown = crate::service::config_api::shown(stored.clone());
    assert_eq!(shown.reversal.as_ref().unwrap().headers["Authorization"], "[REDACTED]");
    // PUT back what GET showed: the stored secret is kept.
    let mut again = serde_json::to_value(&shown).unwrap();
    again["name"] = json!("Renamed");
    let replaced = w.app.replace_postback(&id, spec(&again)).await.unwrap();
    assert_eq!(replaced.reversal.as_ref().unwrap().headers["Authorization"], "Bearer secret-{transaction_id}");
    let versions = w.app.postback_versions(&id).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions.iter().all(|v| v.reversal.as_ref().unwrap().headers["Authorization"] == "[REDACTED]"));
}
