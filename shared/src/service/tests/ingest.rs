//! Ingest's rules on the fakes: enrichment, idempotency, status changes, delays, scope.

use serde_json::{json, Value};

use super::{ms, start, World};
use crate::domain::event::{Status, StatusKey};
use crate::ports::{FiringQueue, PostbackStore, TouchStore};
use crate::testing::fixtures;

const URL: &str = "https://aff.example/pb";

fn click(txid: &str) -> Value {
    json!({"type": "click", "transaction_id": txid, "offer_id": "O1", "publisher_id": "P1",
           "external_transaction_id": format!("aff-{txid}"), "sub1": "s1", "sub10": "s10",
           "ip": "203.0.113.7", "country": "DE", "user_agent": "UA", "params": {"goal": "reg", "k": "click"}})
}

fn conversion(txid: &str, status: &str) -> Value {
    json!({"type": "conversion", "transaction_id": txid, "status": status, "payout": "12.50"})
}

async fn conversion_postback(w: &World) -> String {
    w.postback(json!({"name": "Conv", "type": "conversion", "url": format!("{URL}?c={{external_transaction_id}}")}))
        .await
}

#[tokio::test]
async fn a_conversion_is_enriched_from_the_stored_click() {
    let w = World::new();
    conversion_postback(&w).await;
    let r = w.ingest_one(click("T1")).await;
    assert_eq!(
        (r.duplicate, r.matched, r.click_found),
        (false, 0, None),
        "no click postback; clicks have no click_found"
    );
    let mut sent = conversion("T1", "approved");
    sent["params"] = json!({"k": "conversion"});
    sent["sub1"] = json!("own");
    let r = w.ingest_one(sent).await;
    assert_eq!((r.duplicate, r.matched, r.click_found), (false, 1, Some(true)));
    let queued = w.queued();
    assert_eq!(queued.len(), 1);
    let e = &queued[0].event;
    assert_eq!(e.offer_id.as_deref(), Some("O1"));
    assert_eq!(e.publisher_id.as_deref(), Some("P1"));
    assert_eq!(e.external_transaction_id.as_deref(), Some("aff-T1"));
    assert_eq!(e.sub(1), Some("own"), "what the conversion sent wins");
    assert_eq!(e.sub(10), Some("s10"));
    assert_eq!(
        (e.ip.as_deref(), e.country.as_deref(), e.user_agent.as_deref()),
        (Some("203.0.113.7"), Some("DE"), Some("UA"))
    );
    assert_eq!(e.params.get("goal").map(String::as_str), Some("reg"), "params it lacks come from the click");
    assert_eq!(e.params.get("k").map(String::as_str), Some("conversion"), "its own params win");
    assert_eq!(e.payout.as_deref(), Some("12.50"), "money is the conversion's own");
    assert_eq!(e.status, Some(Status::Approved));
}

#[tokio::test]
async fn a_conversion_is_enriched_from_a_click_earlier_in_the_same_batch() {
    let w = World::new();
    conversion_postback(&w).await;
    let r = w.ingest(&[click("T1"), conversion("T1", "approved"), conversion("T2", "approved")]).await;
    assert_eq!(r[1].click_found, Some(true), "the click before it in the batch");
    assert_eq!(r[2].click_found, Some(false), "no click for T2");
    let queued = w.queued();
    assert_eq!(queued.len(), 2);
    let t1 = queued.iter().find(|f| f.event.transaction_id == "T1").unwrap();
    assert_eq!(t1.event.external_transaction_id.as_deref(), Some("aff-T1"));
    assert_eq!(t1.event.offer_id.as_deref(), Some("O1"));
    let t2 = queued.iter().find(|f| f.event.transaction_id == "T2").unwrap();
    assert_eq!(t2.event.offer_id, None, "nothing to enrich from");
    assert_eq!(
        w.memory.touches.get_click("T1").await.unwrap().map(|c| c.transaction_id),
        Some("T1".into()),
        "the click is stored"
    );

    // A click after the conversion in the batch does not enrich it (order of the batch).
    let w = World::new();
    conversion_postback(&w).await;
    let r = w.ingest(&[conversion("T3", "approved"), click("T3")]).await;
    assert_eq!(r[0].click_found, Some(false));
}

#[tokio::test]
async fn an_event_is_enriched_and_matched_by_name() {
    let w = World::new();
    w.postback(json!({"name": "Deposits", "type": "event", "event_names": ["deposit"], "url": URL})).await;
    w.ingest_one(click("T1")).await;
    let r = w.ingest_one(json!({"type": "event", "transaction_id": "T1", "event_name": "deposit", "payout": 5})).await;
    assert_eq!((r.matched, r.click_found), (1, Some(true)));
    assert_eq!(w.queued()[0].event.publisher_id.as_deref(), Some("P1"));
    let r = w.ingest_one(json!({"type": "event", "transaction_id": "T1", "event_name": "upsell"})).await;
    assert_eq!(r.matched, 0, "another event name");
    assert_eq!(w.queued().len(), 1);
}

#[tokio::test]
async fn duplicates_fire_nothing_within_a_batch_and_across_calls() {
    // (what, first call, second call, duplicate flags of the second call)
    let with_id =
        |payout: &str| json!({"type": "conversion", "transaction_id": "T1", "event_id": "e1", "payout": payout});
    let cases: Vec<(&str, Vec<Value>, Vec<Value>, Vec<bool>)> = vec![
        ("the same click twice in a batch", vec![], vec![click("T1"), click("T1")], vec![false, true]),
        ("the same click in a later call", vec![click("T1")], vec![click("T1")], vec![true]),
        (
            "the same conversion again",
            vec![conversion("T1", "approved")],
            vec![conversion("T1", "approved")],
            vec![true],
        ),
        ("the same event_id, other fields differ", vec![with_id("1")], vec![with_id("2")], vec![true]),
        ("the same event_id twice in a batch", vec![], vec![with_id("1"), with_id("2")], vec![false, true]),
        (
            "another event_id is another event",
            vec![with_id("1")],
            vec![json!({"type": "conversion", "transaction_id": "T1", "event_id": "e2"})],
            vec![false],
        ),
        ("another transaction", vec![click("T1")], vec![click("T2")], vec![false]),
        (
            "an impression is not a click",
            vec![click("T1")],
            vec![json!({"type": "impression", "transaction_id": "T1", "offer_id": "O1", "publisher_id": "P1"})],
            vec![false],
        ),
    ];
    for (name, first, second, duplicates) in cases {
        let w = World::new();
        for kind in ["impression", "click", "conversion"] {
            w.postback(json!({"name": kind, "type": kind, "url": URL})).await;
        }
        if !first.is_empty() {
            w.ingest(&first).await;
        }
        let before = w.queued().len();
        let results = w.ingest(&second).await;
        assert_eq!(results.iter().map(|r| r.duplicate).collect::<Vec<_>>(), duplicates, "{name}");
        for (r, duplicate) in results.iter().zip(&duplicates) {
            assert_eq!(r.matched, if *duplicate { 0 } else { 1 }, "{name}: a duplicate matches nothing");
        }
        let fresh = duplicates.iter().filter(|d| !**d).count();
        assert_eq!(w.queued().len(), before + fresh, "{name}: a duplicate queues nothing");
        // A duplicate has the id of the event it repeats.
        if let [a, b] = &results[..] {
            if b.duplicate {
                assert_eq!(a.id, b.id, "{name}");
            }
        }
    }
}

#[tokio::test]
async fn a_status_change_is_not_a_duplicate_and_fires_its_postbacks() {
    let w = World::new();
    let approved = w.postback(json!({"name": "Approved", "type": "conversion", "url": format!("{URL}/a")})).await;
    let fraud = w
        .postback(json!({"name": "Fraud", "type": "conversion", "fire_on": "rejected", "rejection_reasons": ["fraud"], "url": format!("{URL}/f")}))
        .await;
    w.postback(json!({"name": "Chargeback", "type": "conversion", "fire_on": "rejected", "rejection_reasons": ["chargeback"], "url": format!("{URL}/c")}))
        .await;
    let first = w.ingest_one(conversion("T1", "approved")).await;
    assert_eq!((first.duplicate, first.matched), (false, 1));
    w.advance_ms(1_000);
    let mut rejected = conversion("T1", "rejected");
    rejected["rejection_reason"] = json!("fraud");
    let change = w.ingest_one(rejected).await;
    assert_eq!((change.duplicate, change.matched), (false, 1), "a status change is not a duplicate");
    assert_ne!(change.id, first.id);
    let queued: Vec<String> = w.queued().into_iter().map(|f| f.postback_id).collect();
    assert_eq!(queued, [approved, fraud]);
    let current = w.memory.touches.get_status("T1", &StatusKey::Conversion).await.unwrap().unwrap();
    assert_eq!(
        (current.status, current.rejection_reason.as_deref()),
        (Status::Rejected, Some("fraud")),
        "the latest report is the status"
    );
}

#[tokio::test]
async fn firings_come_due_after_their_postbacks_delay_by_the_clock() {
    let w = World::new();
    let now_id = w.postback(json!({"name": "Now", "type": "click", "url": URL})).await;
    let later_id = w.postback(json!({"name": "Later", "type": "click", "delay_seconds": 90, "url": URL})).await;
    let month_id = w.postback(json!({"name": "Month", "type": "click", "delay_seconds": 2_592_000, "url": URL})).await;
    w.advance_ms(1_234);
    let accepted_at = w.now();
    assert_eq!(w.ingest_one(click("T1")).await.matched, 3);
    let due: Vec<(String, chrono::DateTime<chrono::Utc>)> =
        w.queued().into_iter().map(|f| (f.postback_id, f.due_at)).collect();
    assert_eq!(
        due,
        [
            (now_id, accepted_at),
            (later_id.clone(), accepted_at + ms(90_000)),
            (month_id, accepted_at + chrono::Duration::days(30)),
        ]
    );
    assert!(w.queued().iter().all(|f| f.queued_at == accepted_at && f.attempt == 1 && f.check_status));
    let now = w.receive_one().await;
    assert_eq!(now.firing.due_at, accepted_at, "only the undelayed one is due");
    w.memory.queue.ack(&now).await.unwrap();
    w.advance_ms(89_999);
    assert!(w.receive().await.is_empty(), "1 ms before its delay");
    w.advance_ms(1);
    let later = w.receive_one().await;
    assert_eq!(later.firing.postback_id, later_id);
    assert_eq!(start() + ms(1_234 + 90_000), w.now());
}

#[tokio::test]
async fn nothing_fires_outside_a_postbacks_scope() {
    // (postback fields, event, matches?)
    let cases: Vec<(Value, Value, bool)> = vec![
        (json!({"type": "click", "offers": ["O2"]}), click("T1"), false),
        (json!({"type": "click", "offers": ["O1", "O2"]}), click("T1"), true),
        (json!({"type": "click", "publishers": ["P2"]}), click("T1"), false),
        (json!({"type": "click", "publishers": ["P1"], "offers": ["O1"]}), click("T1"), true),
        (json!({"type": "conversion"}), click("T1"), false),
        (json!({"type": "impression"}), click("T1"), false),
        (json!({"type": "conversion", "fire_on": "approved"}), conversion("T9", "pending"), false),
        (json!({"type": "conversion", "fire_on": "pending"}), conversion("T9", "pending"), true),
        (json!({"type": "conversion", "fire_on": "all"}), conversion("T9", "rejected"), true),
        (
            json!({"type": "conversion", "fire_on": "rejected", "rejection_reasons": ["fraud"]}),
            conversion("T9", "rejected"),
            false,
        ),
        (json!({"type": "conversion", "offers": ["O1"]}), conversion("T9", "approved"), false),
        (json!({"type": "click", "enabled": false}), click("T1"), false),
    ];
    for (fields, event, matches) in cases {
        let w = World::new();
        let mut spec = json!({"name": "Scoped", "url": URL});
        spec.as_object_mut().unwrap().extend(fields.as_object().unwrap().clone());
        w.postback(spec).await;
        let r = w.ingest_one(event.clone()).await;
        assert_eq!(r.matched, usize::from(matches), "{fields} for {event}");
        assert_eq!(w.queued().len(), usize::from(matches), "{fields} for {event}: queued");
    }
}

#[tokio::test]
async fn touches_and_keys_are_recorded_also_when_nothing_matches() {
    let w = World::new();
    let r = w.ingest_one(click("T1")).await;
    assert_eq!(r.matched, 0);
    assert!(w.memory.touches.get_click("T1").await.unwrap().is_some());
    assert!(w.ingest_one(click("T1")).await.duplicate, "marked seen");
    let r = w.ingest_one(conversion("T1", "pending")).await;
    assert_eq!(r.click_found, Some(true));
    let current = w.memory.touches.get_status("T1", &StatusKey::Conversion).await.unwrap().unwrap();
    assert_eq!(
        (current.status, current.updated_at),
        (Status::Pending, start()),
        "the event's timestamp: its received time"
    );
}

/// With no stamp check (the local server's catalog), a postback change made around
/// this process is seen once the catalog's TTL ran out by the clock; this process's own
/// writes at once. (With the check, the AWS functions' setting: `tests::catalog`.)
#[tokio::test]
async fn the_postback_index_is_reloaded_after_its_ttl() {
    let w = World::new();
    assert_eq!(w.ingest_one(click("T1")).await.matched, 0);
    let mut elsewhere = fixtures::postback("pb_elsewhere", crate::domain::event::EventType::Click);
    elsewhere.offers = crate::domain::postback::Scope::All;
    elsewhere.conditions = Vec::new();
    w.memory.postbacks.create(&elsewhere).await.unwrap();
    w.advance_ms(59_999);
    assert_eq!(w.ingest_one(click("T2")).await.matched, 0, "cached index, 1 ms before the 60 s TTL");
    w.advance_ms(1);
    assert_eq!(w.ingest_one(click("T3")).await.matched, 1, "reloaded");
    w.postback(json!({"name": "Local", "type": "click", "url": URL})).await;
    assert_eq!(w.ingest_one(click("T4")).await.matched, 2, "a local write invalidates at once");
}

/// Conditions are judged on the enriched event: a conversion inherits the click's
/// country and params, so a condition on them holds; one that fails fires nothing and
/// logs nothing.
#[tokio::test]
async fn conditions_are_judged_on_the_enriched_event() {
    let w = World::new();
    let cond = |conditions: Value| json!({"name": "Conv", "type": "conversion", "url": URL, "conditions": conditions});
    let big = w
        .postback(cond(
            json!([{"field": "payout", "op": "gte", "value": 12.5}, {"field": "country", "op": "eq", "value": "de"}]),
        ))
        .await;
    w.postback(cond(json!([{"field": "payout", "op": "gt", "value": "12.50"}]))).await;
    w.postback(cond(json!([{"field": "sub3", "op": "exists"}]))).await;
    w.ingest_one(click("T1")).await;
    let r = w.ingest_one(conversion("T1", "approved")).await;
    assert_eq!(r.matched, 1, "payout 12.50 >= 12.5 and the click's country DE; not > 12.50; no sub3");
    let queued = w.queued();
    assert_eq!(queued.iter().map(|f| f.postback_id.as_str()).collect::<Vec<_>>(), [big.as_str()]);
    assert!(w.logs().is_empty(), "a postback whose conditions fail logs nothing");
}
