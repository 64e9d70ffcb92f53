use std::collections::HashSet;

use chrono::Duration;

use crate::domain::event::{CurrentStatus, Event, EventType, Status, StatusKey};
use crate::ports::TouchRecord;
use crate::testing::{fixtures, Adapters};

fn touch(event: &Event) -> TouchRecord {
    TouchRecord { event: event.clone() }
}

fn status_of(event: &Event) -> CurrentStatus {
    CurrentStatus {
        status: event.status.unwrap_or(Status::Approved),
        rejection_reason: event.rejection_reason.clone(),
        updated_at: event.timestamp,
    }
}

/// A click is stored whole; a later click of the same transaction replaces it; an
/// impression or a conversion of that transaction does not.
pub async fn touches_click_latest_wins(a: &Adapters) {
    let store = &a.touches;
    assert_eq!(store.get_click("T1").await.unwrap(), None, "no click before record");
    let first = fixtures::event(EventType::Click, "T1");
    store.record(&[touch(&first)]).await.unwrap();
    assert_eq!(store.get_click("T1").await.unwrap(), Some(first.clone()), "the click comes back whole");

    let mut later = fixtures::event(EventType::Click, "T1");
    later.offer_id = Some("o2".into());
    later.subs[9] = Some("s10".into());
    later.timestamp = first.timestamp + Duration::seconds(1);
    store.record(&[touch(&later)]).await.unwrap();
    assert_eq!(store.get_click("T1").await.unwrap(), Some(later.clone()), "the latest click wins");

    let mut impression = fixtures::event(EventType::Impression, "T1");
    impression.offer_id = Some("o-impression".into());
    let conversion = fixtures::event(EventType::Conversion, "T1");
    store.record(&[touch(&impression), touch(&conversion)]).await.unwrap();
    assert_eq!(
        store.get_click("T1").await.unwrap(),
        Some(later),
        "impressions and conversions do not replace the click"
    );
    assert_eq!(store.get_click("T2").await.unwrap(), None, "another transaction has no click");
    store.record(&[touch(&fixtures::event(EventType::Impression, "T3"))]).await.unwrap();
    assert_eq!(store.get_click("T3").await.unwrap(), None, "an impression is not a click");
}

/// The current status of a conversion is the latest report, with its reason and time.
pub async fn touches_status_latest_wins(a: &Adapters) {
    let store = &a.touches;
    assert_eq!(store.get_status("T1", &StatusKey::Conversion).await.unwrap(), None);
    let approved = fixtures::event(EventType::Conversion, "T1");
    store.record(&[touch(&approved)]).await.unwrap();
    assert_eq!(
        store.get_status("T1", &StatusKey::Conversion).await.unwrap(),
        Some(status_of(&approved)),
        "status, reason and updated_at (= the event's timestamp) as reported"
    );

    let mut rejected = approved.clone();
    rejected.status = Some(Status::Rejected);
    rejected.rejection_reason = Some("fraud".into());
    rejected.timestamp = approved.timestamp + Duration::seconds(30);
    store.record(&[touch(&rejected)]).await.unwrap();
    let current = store.get_status("T1", &StatusKey::Conversion).await.unwrap();
    assert_eq!(current, Some(status_of(&rejected)), "the later report wins");

    // Within one call, the later record wins too.
    let mut pending = approved.clone();
    pending.status = Some(Status::Pending);
    pending.timestamp = rejected.timestamp + Duration::seconds(1);
    let mut approved_again = approved.clone();
    approved_again.timestamp = pending.timestamp + Duration::seconds(1);
    store.record(&[touch(&pending), touch(&approved_again)]).await.unwrap();
    assert_eq!(
        store.get_status("T1", &StatusKey::Conversion).await.unwrap(),
        Some(status_of(&approved_again)),
        "the last record of a batch wins"
    );
    assert_eq!(store.get_click("T1").await.unwrap(), None, "a conversion is not a click");
}

/// conversion, event:deposit, event:upsell and other transactions are separate keys.
pub async fn touches_status_keys_are_separate(a: &Adapters) {
    let store = &a.touches;
    let conversion = fixtures::event(EventType::Conversion, "T1");
    let mut deposit = fixtures::event(EventType::Event, "T1");
    deposit.status = Some(Status::Pending);
    let mut other = fixtures::event(EventType::Conversion, "T2");
    other.status = Some(Status::Rejected);
    other.rejection_reason = Some("duplicate".into());
    store.record(&[touch(&conversion), touch(&deposit), touch(&other)]).await.unwrap();

    let deposit_key = StatusKey::Event("deposit".into());
    assert_eq!(store.get_status("T1", &StatusKey::Conversion).await.unwrap(), Some(status_of(&conversion)));
    assert_eq!(store.get_status("T1", &deposit_key).await.unwrap(), Some(status_of(&deposit)));
    assert_eq!(store.get_status("T2", &StatusKey::Conversion).await.unwrap(), Some(status_of(&other)));
    assert_eq!(store.get_status("T1", &StatusKey::Event("upsell".into())).await.unwrap(), None, "other event name");
    assert_eq!(store.get_status("T2", &deposit_key).await.unwrap(), None, "event of another transaction");
    assert_eq!(store.get_status("T3", &StatusKey::Conversion).await.unwrap(), None, "unknown transaction");

    // Changing the deposit leaves the conversion alone.
    let mut deposit_rejected = deposit.clone();
    deposit_rejected.status = Some(Status::Rejected);
    deposit_rejected.timestamp = deposit.timestamp + Duration::seconds(1);
    store.record(&[touch(&deposit_rejected)]).await.unwrap();
    assert_eq!(store.get_status("T1", &deposit_key).await.unwrap(), Some(status_of(&deposit_rejected)));
    assert_eq!(store.get_status("T1", &StatusKey::Conversion).await.unwrap(), Some(status_of(&conversion)));
}

/// Recording the same touches again changes nothing visible.
pub async fn touches_record_is_idempotent(a: &Adapters) {
    let store = &a.touches;
    let click = fixtures::event(EventType::Click, "T1");
    let mut conversion = fixtures::event(EventType::Conversion, "T1");
    conversion.status = Some(Status::Rejected);
    conversion.rejection_reason = Some("fraud".into());
    let batch = [touch(&click), touch(&conversion)];
    store.record(&batch).await.unwrap();
    store.record(&batch).await.unwrap();
    store.record(&[]).await.unwrap();
    assert_eq!(store.get_click("T1").await.unwrap(), Some(click));
    assert_eq!(store.get_status("T1", &StatusKey::Conversion).await.unwrap(), Some(status_of(&conversion)));
}

/// `seen` reports exactly the marked keys; marking twice is fine.
pub async fn touches_seen_and_mark_seen(a: &Adapters) {
    let store = &a.touches;
    let keys = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
    let a_key = "conversion|T1|id:e1|approved";
    let b_key = "conversion|T1|id:e1|rejected";
    let c_key = "event|T1|name:deposit|approved";

    assert!(store.seen(&keys(&[a_key, b_key])).await.unwrap().is_empty(), "nothing seen yet");
    assert!(store.seen(&[]).await.unwrap().is_empty());
    store.mark_seen(&keys(&[a_key])).await.unwrap();
    store.mark_seen(&keys(&[a_key])).await.unwrap();
    store.mark_seen(&[]).await.unwrap();
    assert_eq!(store.seen(&keys(&[a_key, b_key, c_key])).await.unwrap(), set(&[a_key]), "only the marked key");
    store.mark_seen(&keys(&[b_key, c_key, b_key])).await.unwrap();
    assert_eq!(store.seen(&keys(&[a_key, b_key, c_key])).await.unwrap(), set(&[a_key, b_key, c_key]));
    assert_eq!(store.seen(&keys(&[c_key, "other"])).await.unwrap(), set(&[c_key]), "only the asked keys");
}

/// `record_and_mark_seen` stores the touches and marks the keys, like the two calls.
pub async fn touches_record_and_mark_seen(a: &Adapters) {
    let store = &a.touches;
    let click = fixtures::event(EventType::Click, "T9");
    let key = click.dedupe_key();
    store.record_and_mark_seen(&[touch(&click)], std::slice::from_ref(&key)).await.unwrap();
    assert_eq!(store.get_click("T9").await.unwrap(), Some(click));
    assert_eq!(store.seen(std::slice::from_ref(&key)).await.unwrap(), HashSet::from([key]));
    store.record_and_mark_seen(&[], &[]).await.unwrap();
}
