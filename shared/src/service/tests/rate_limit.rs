//! `rate_limit_per_second` on the fakes: N requests start per UTC second, the excess
//! goes back on the queue for a later second with its slot reserved, never dropped, no
//! attempt used, not logged.

use std::collections::BTreeMap;

use serde_json::json;

use super::{ms, start, World};
use crate::entry::http::parse;
use crate::ports::ControlStore;
use crate::service::AttemptOutcome;

const URL: &str = "https://aff.example/pb";

async fn limited(w: &World, limit: u32) -> String {
    w.postback(json!({"name": "Limited", "type": "click", "rate_limit_per_second": limit, "url": format!("{URL}?t={{transaction_id}}")}))
        .await
}

async fn clicks(w: &World, n: usize) {
    let events: Vec<_> = (0..n)
        .map(|i| json!({"type": "click", "transaction_id": format!("T{i}"), "offer_id": "O1", "publisher_id": "P1"}))
        .collect();
    w.ingest(&events).await;
}

/// Process every due firing.
async fn drain_due(w: &World) -> Vec<AttemptOutcome> {
    let mut out = Vec::new();
    for leased in w.receive().await {
        out.push(w.process(&leased).await);
    }
    out
}

/// Requests sent per unix second.
fn per_second(w: &World) -> BTreeMap<i64, usize> {
    let mut seconds = BTreeMap::new();
    for r in w.sender.requests() {
        *seconds.entry(r.at.timestamp()).or_default() += 1;
    }
    seconds
}

#[tokio::test]
async fn n_per_second_exactly_with_the_excess_in_later_seconds() {
    let w = World::new();
    let id = limited(&w, 3).await;
    let s0 = start().timestamp();
    w.clock.set(start() + ms(400));
    clicks(&w, 8).await;
    let outcomes = drain_due(&w).await;
    let at = |s: i64| AttemptOutcome::Deferred(chrono::DateTime::from_timestamp(s, 0).unwrap());
    #[rustfmt::skip]
    assert_eq!(outcomes, [
        AttemptOutcome::Delivered, AttemptOutcome::Delivered, AttemptOutcome::Delivered,
        at(s0 + 1), at(s0 + 1), at(s0 + 1), at(s0 + 2), at(s0 + 2),
    ]);
    assert_eq!(w.logs().len(), 3, "a deferral is not an attempt: no log entry");
    let queued = w.queued();
    assert_eq!(queued.len(), 5, "never dropped");
    assert!(queued.iter().all(|f| f.attempt == 1), "no attempt used");
    let reserved: Vec<Option<i64>> = queued.iter().map(|f| f.slot_second).collect();
    assert_eq!(reserved, [Some(s0 + 1), Some(s0 + 1), Some(s0 + 1), Some(s0 + 2), Some(s0 + 2)]);

    // A newcomer in second 1 finds second 1 full (reserved) and takes second 2's last slot.
    w.clock.set(start() + ms(1_000));
    w.ingest_one(json!({"type": "click", "transaction_id": "Tnew", "offer_id": "O1", "publisher_id": "P1"})).await;
    let outcomes = drain_due(&w).await;
    assert_eq!(outcomes.iter().filter(|o| **o == AttemptOutcome::Delivered).count(), 3, "{outcomes:?}");
    assert_eq!(outcomes.iter().filter(|o| **o == at(s0 + 2)).count(), 1, "{outcomes:?}");
    w.clock.set(start() + ms(2_000));
    assert_eq!(drain_due(&w).await, vec![AttemptOutcome::Delivered; 3], "second 2: the reserved ones only");
    assert_eq!(per_second(&w), BTreeMap::from([(s0, 3), (s0 + 1, 3), (s0 + 2, 3)]));
    assert!(w.queued().is_empty());
    assert_eq!(w.logs().len(), 9);
    let _ = id;
}

#[tokio::test]
async fn a_late_firing_takes_a_new_slot_and_an_unlimited_postback_none() {
    let w = World::new();
    let id = limited(&w, 1).await;
    let s0 = start().timestamp();
    clicks(&w, 2).await;
    assert_eq!(drain_due(&w).await[1], AttemptOutcome::Deferred(chrono::DateTime::from_timestamp(s0 + 1, 0).unwrap()));
    // The queue hands it out late (second 5): its reserved second is past, so it takes a new one.
    w.clock.set(start() + ms(5_300));
    assert_eq!(drain_due(&w).await, [AttemptOutcome::Delivered]);
    assert_eq!(w.memory.control.take_slot(&id, s0 + 5, 1).await.unwrap(), s0 + 6, "second 5 was taken");

    let w = World::new();
    w.postback(json!({"name": "Free", "type": "click", "url": URL})).await;
    clicks(&w, 50).await;
    assert_eq!(drain_due(&w).await, vec![AttemptOutcome::Delivered; 50], "no limit: no slots");
}

#[test]
fn rate_limit_per_second_is_1_to_10000() {
    let base = json!({"name": "L", "type": "click", "url": URL});
    let with = |v: serde_json::Value| {
        let mut body = base.clone();
        body["rate_limit_per_second"] = v;
        parse::postback::spec_from_json(&body)
    };
    for ok in [1, 10, 10_000] {
        assert_eq!(with(json!(ok)).unwrap().rate_limit_per_second, Some(ok), "{ok}");
    }
    assert_eq!(with(serde_json::Value::Null).unwrap().rate_limit_per_second, None, "null is absent");
    assert_eq!(parse::postback::spec_from_json(&base).unwrap().rate_limit_per_second, None, "optional");
    for bad in [json!(0), json!(10_001), json!(-1), json!(2.5), json!("10"), json!(true), json!([5])] {
        let err = with(bad.clone()).unwrap_err();
        assert_eq!(err.field, "rate_limit_per_second", "{bad}");
        assert!(err.message.contains("1 to 10000"), "{bad}: {}", err.message);
    }
    // `health` is server-set: a client may send back what it got; it is ignored.
    let mut got = base.clone();
    got["health"] = json!({"state": "open", "held": 5});
    assert!(parse::postback::spec_from_json(&got).is_ok());
}
