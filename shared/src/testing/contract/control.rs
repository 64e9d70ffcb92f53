//! `ControlStore`: breakers (versioned, conditional writes), held firings (per postback,
//! in order, one copy each) and rate-limit slots (atomic per second).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::breaker::{Breaker, BreakerState};
use crate::domain::firing::Firing;
use crate::ports::{ControlStore, StoredBreaker};
use crate::testing::{fixtures, Adapters};

fn breaker(consecutive_failures: u32) -> Breaker {
    Breaker { consecutive_failures, ..Breaker::default() }
}

/// An open breaker with every optional field set, so each one must round-trip.
fn open_breaker(at: DateTime<Utc>) -> Breaker {
    Breaker {
        state: BreakerState::Open,
        consecutive_failures: 10,
        opened_at: Some(at),
        next_probe_at: Some(at + chrono::Duration::seconds(30)),
        cooldown_ms: 30_000,
        probe_delivery_id: Some("d_probe".into()),
        probe_until: Some(at + chrono::Duration::seconds(40)),
        probe_carrier: Some("d_carrier".into()),
        closed_at: Some(at - chrono::Duration::seconds(60)),
    }
}

/// A firing of `postback_id` queued at `queued_at`.
fn held_firing(postback_id: &str, delivery_id: &str, queued_at: DateTime<Utc>) -> Firing {
    let mut firing = fixtures::firing(delivery_id, queued_at);
    firing.postback_id = postback_id.to_string();
    firing.queued_at = queued_at;
    firing
}

fn delivery_ids(firings: &[Firing]) -> Vec<&str> {
    firings.iter().map(|f| f.delivery_id.as_str()).collect()
}

/// No breaker until one is written; the first write (expected `None`) is version 1 and
/// reads back whole.
pub async fn control_breaker_first_write_is_version_1(a: &Adapters) {
    let c = &a.control;
    assert_eq!(c.breaker("pb_b1").await.unwrap(), None, "nothing stored yet");
    let written = open_breaker(a.now());
    assert!(c.put_breaker("pb_b1", &written, None).await.unwrap(), "first write with expected None");
    assert_eq!(
        c.breaker("pb_b1").await.unwrap(),
        Some(StoredBreaker { breaker: written, version: 1 }),
        "read back whole at version 1"
    );
    assert_eq!(c.breaker("pb_other").await.unwrap(), None, "other postbacks have none");
}

/// Versions go up by one per write; a write with a stale or future `expected` (or
/// `None` once one exists) is `Ok(false)` and writes nothing.
pub async fn control_breaker_stale_write_changes_nothing(a: &Adapters) {
    let c = &a.control;
    assert!(!c.put_breaker("pb_b2", &breaker(1), Some(1)).await.unwrap(), "expected 1 but none stored");
    assert_eq!(c.breaker("pb_b2").await.unwrap(), None, "the refused write created nothing");
    for version in 0..5u64 {
        let expected = (version > 0).then_some(version);
        let value = breaker(u32::try_from(version).unwrap());
        assert!(c.put_breaker("pb_b2", &value, expected).await.unwrap(), "write expecting {expected:?}");
        assert_eq!(c.breaker("pb_b2").await.unwrap().map(|s| s.version), Some(version + 1));
    }
    let current = c.breaker("pb_b2").await.unwrap().unwrap();
    for stale in [None, Some(0), Some(4), Some(6)] {
        assert!(!c.put_breaker("pb_b2", &breaker(99), stale).await.unwrap(), "expected {stale:?} at version 5");
        assert_eq!(c.breaker("pb_b2").await.unwrap().as_ref(), Some(&current), "nothing written");
    }
}

/// Many writers racing from the same version: exactly one wins each round, and the
/// stored breaker is the winner's.
pub async fn control_breaker_concurrent_writers_one_wins(a: &Adapters) {
    const WRITERS: u32 = 12;
    const ROUNDS: u64 = 4;
    for round in 0..ROUNDS {
        let expected = (round > 0).then_some(round);
        let tasks: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let control: Arc<dyn ControlStore> = Arc::clone(&a.control);
                tokio::spawn(async move {
                    let won = control.put_breaker("pb_race", &breaker(writer), expected).await.unwrap();
                    (writer, won)
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            let (writer, won) = task.await.unwrap();
            if won {
                winners.push(writer);
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: exactly one writer wins, got {winners:?}");
        let stored = a.control.breaker("pb_race").await.unwrap().unwrap();
        assert_eq!(stored, StoredBreaker { breaker: breaker(winners[0]), version: round + 1 }, "round {round}");
    }
}

/// `breakers` returns the stored ones (absent ids are not in the map), for more ids than
/// one batch read takes and with an id repeated.
pub async fn control_breakers_of_many_postbacks(a: &Adapters) {
    let c = &a.control;
    let mut written = HashMap::new();
    for i in 0..105u32 {
        let id = format!("pb_many_{i:03}");
        if i % 3 == 0 {
            assert!(c.put_breaker(&id, &breaker(i), None).await.unwrap());
            written.insert(id, StoredBreaker { breaker: breaker(i), version: 1 });
        }
    }
    let opened = open_breaker(a.now());
    assert!(c.put_breaker("pb_many_000", &opened, Some(1)).await.unwrap());
    written.insert("pb_many_000".into(), StoredBreaker { breaker: opened, version: 2 });
    let mut ids: Vec<String> = (0..105).map(|i| format!("pb_many_{i:03}")).collect();
    ids.push("pb_many_003".into());
    ids.push("pb_absent".into());
    let found = c.breakers(&ids).await.unwrap();
    assert_eq!(found.len(), written.len(), "only the stored ones");
    assert_eq!(found, written);
    assert!(c.breakers(&[]).await.unwrap().is_empty(), "no ids, no breakers");
}

/// `held` is oldest first by (queued_at, delivery id), per postback; each postback's
/// firings are kept apart; what comes back is the firing as held.
pub async fn control_held_in_order_per_postback(a: &Adapters) {
    let c = &a.control;
    let t = a.now();
    let ms = chrono::Duration::milliseconds;
    let a_firings = [
        held_firing("pb_ha", "d_3", t + ms(2_000)),
        held_firing("pb_ha", "d_2", t),
        held_firing("pb_ha", "d_9", t + ms(1)),
        held_firing("pb_ha", "d_1", t),
        held_firing("pb_ha", "d_0", t + ms(1_000)),
    ];
    let b_firings = [held_firing("pb_hb", "d_1", t + ms(5)), held_firing("pb_hb", "d_0", t + ms(5))];
    // One call with both postbacks' firings, another with one more of each.
    let mut first_call: Vec<Firing> = a_firings[..4].to_vec();
    first_call.push(b_firings[0].clone());
    c.hold(&first_call).await.unwrap();
    c.hold(&[a_firings[4].clone(), b_firings[1].clone()]).await.unwrap();

    let held_a = c.held("pb_ha", 100).await.unwrap();
    assert_eq!(delivery_ids(&held_a), ["d_1", "d_2", "d_9", "d_0", "d_3"], "by queued_at, then delivery id");
    let by_id: BTreeMap<&str, &Firing> = a_firings.iter().map(|f| (f.delivery_id.as_str(), f)).collect();
    for firing in &held_a {
        assert_eq!(Some(&firing), by_id.get(firing.delivery_id.as_str()), "returned whole");
    }
    assert_eq!(delivery_ids(&c.held("pb_hb", 100).await.unwrap()), ["d_0", "d_1"]);
    assert_eq!(c.held_count("pb_ha").await.unwrap(), 5);
    assert_eq!(c.held_count("pb_hb").await.unwrap(), 2);
    assert_eq!(c.held_count("pb_none").await.unwrap(), 0);
    assert!(c.held("pb_none", 10).await.unwrap().is_empty());
    assert!(c.held("pb_ha", 0).await.unwrap().is_empty(), "max 0 → none");
}

/// Holding a firing again (a redelivered message), even twice in one call, keeps one
/// copy; the same delivery id under another postback or queued at another time is
/// another held firing.
pub async fn control_rehold_keeps_one_copy(a: &Adapters) {
    let c = &a.control;
    let t = a.now();
    let f1 = held_firing("pb_re", "d_1", t);
    let f2 = held_firing("pb_re", "d_2", t);
    c.hold(&[f1.clone(), f2.clone()]).await.unwrap();
    c.hold(std::slice::from_ref(&f1)).await.unwrap();
    c.hold(&[f2.clone(), f2.clone()]).await.unwrap();
    assert_eq!(c.held_count("pb_re").await.unwrap(), 2, "one copy each");
    assert_eq!(c.held("pb_re", 10).await.unwrap(), vec![f1.clone(), f2.clone()]);
    c.hold(&[held_firing("pb_re_other", "d_1", t)]).await.unwrap();
    assert_eq!(c.held_count("pb_re").await.unwrap(), 2, "another postback's firing is its own");
    assert_eq!(c.held_count("pb_re_other").await.unwrap(), 1);
}

/// `unhold` forgets only the hold of the generation it was given: a released copy
/// (`releases` + 1) held anew under the same key before the release's `unhold` stays;
/// its own `unhold` then forgets it.
pub async fn control_unhold_forgets_only_the_generation_read(a: &Adapters) {
    let c = &a.control;
    let t = a.now();
    let read = held_firing("pb_gen", "d_1", t);
    c.hold(std::slice::from_ref(&read)).await.unwrap();
    let held_anew = Firing { releases: 1, due_at: t + chrono::Duration::seconds(1), ..read.clone() };
    c.hold(std::slice::from_ref(&held_anew)).await.unwrap();
    c.unhold(std::slice::from_ref(&read)).await.unwrap();
    assert_eq!(c.held("pb_gen", 10).await.unwrap(), vec![held_anew.clone()], "the new hold stays");
    c.unhold(std::slice::from_ref(&held_anew)).await.unwrap();
    assert_eq!(c.held_count("pb_gen").await.unwrap(), 0);
}

/// `claim`: a held firing goes to one release until the claim's end (a second claim
/// meanwhile gets nothing), to another after it; a firing not held, or held with
/// another generation, is not claimed; a hold written since (a new generation) is
/// unclaimed; a claimed firing is still held until `unhold`.
pub async fn control_claim_gives_each_held_firing_to_one_release(a: &Adapters) {
    let c = &a.control;
    let t = a.now();
    let until = t + chrono::Duration::seconds(60);
    let f1 = held_firing("pb_claim", "d_1", t);
    let f2 = held_firing("pb_claim", "d_2", t + chrono::Duration::milliseconds(1));
    c.hold(&[f1.clone(), f2.clone()]).await.unwrap();
    let not_held = held_firing("pb_claim", "d_9", t);
    let other_generation = Firing { releases: 3, ..f2.clone() };
    let first = c.claim(&[f1.clone(), not_held, other_generation], t, until).await.unwrap();
    assert_eq!(first, vec![f1.clone()], "only a held firing of its generation");
    assert!(c.claim(std::slice::from_ref(&f1), t, until).await.unwrap().is_empty(), "claimed already");
    assert_eq!(c.claim(&[f1.clone(), f2.clone()], t, until).await.unwrap(), vec![f2.clone()]);
    assert_eq!(c.held_count("pb_claim").await.unwrap(), 2, "a claim is not an unhold");
    let after = until + chrono::Duration::milliseconds(1);
    assert_eq!(
        c.claim(std::slice::from_ref(&f1), after, after + chrono::Duration::seconds(60)).await.unwrap(),
        vec![f1.clone()],
        "after its end"
    );
    // A released copy held anew: a new generation, unclaimed.
    let held_anew = Firing { releases: 1, ..f2.clone() };
    c.hold(std::slice::from_ref(&held_anew)).await.unwrap();
    assert_eq!(c.claim(std::slice::from_ref(&held_anew), t, until).await.unwrap(), vec![held_anew]);
}

/// Releasing in pages: `held(max)` then `unhold` of that page, until none are left;
/// every firing comes out once, in order. `unhold` of firings not held is ignored.
pub async fn control_held_paging_by_unhold(a: &Adapters) {
    let c = &a.control;
    let t = a.now();
    let all: Vec<Firing> =
        (0..7).map(|i| held_firing("pb_page", &format!("d_{i}"), t + chrono::Duration::milliseconds(i))).collect();
    // Held in reverse, so the order comes from the store, not from the calls.
    let reversed: Vec<Firing> = all.iter().rev().cloned().collect();
    c.hold(&reversed).await.unwrap();
    let mut released = Vec::new();
    let mut counts = vec![c.held_count("pb_page").await.unwrap()];
    loop {
        let page = c.held("pb_page", 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3, "at most max");
        c.unhold(&page).await.unwrap();
        released.extend(page);
        counts.push(c.held_count("pb_page").await.unwrap());
        assert!(released.len() <= all.len(), "a page came back twice: {:?}", delivery_ids(&released));
    }
    assert_eq!(released, all, "each once, oldest first");
    assert_eq!(counts, [7, 4, 1, 0]);

    c.hold(&all[..2]).await.unwrap();
    let never_held = [
        held_firing("pb_page", "d_never", t),
        held_firing("pb_unknown", "d_0", t),
        // Same postback and delivery id as a held one, another queued_at: not that one.
        held_firing("pb_page", "d_0", t + chrono::Duration::seconds(60)),
    ];
    c.unhold(&never_held).await.unwrap();
    c.unhold(&[]).await.unwrap();
    assert_eq!(c.held("pb_page", 10).await.unwrap(), all[..2].to_vec(), "unknown firings ignored");
}

/// `limit` slots per second exactly, then the following seconds; a `from_second` past
/// the cursor jumps there; a full second is never handed out again; postbacks are apart.
pub async fn control_take_slot_per_second(a: &Adapters) {
    let c = &a.control;
    let s = a.now().timestamp();
    let mut taken = Vec::new();
    for _ in 0..7 {
        taken.push(c.take_slot("pb_rate", s, 3).await.unwrap());
    }
    assert_eq!(taken, [s, s, s, s + 1, s + 1, s + 1, s + 2], "3 per second, then the next seconds");
    assert_eq!(c.take_slot("pb_rate_other", s, 3).await.unwrap(), s, "another postback has its own slots");
    assert_eq!(c.take_slot("pb_rate", s + 1, 3).await.unwrap(), s + 2, "full seconds are skipped");
    assert_eq!(c.take_slot("pb_rate", s + 2, 3).await.unwrap(), s + 2);
    assert_eq!(c.take_slot("pb_rate", s + 2, 3).await.unwrap(), s + 3, "s + 2 is full now");
    assert_eq!(c.take_slot("pb_rate", s + 10, 3).await.unwrap(), s + 10, "a later start jumps");
    assert_eq!(c.take_slot("pb_rate", s + 10, 1).await.unwrap(), s + 11, "limit 1: s + 10 already has one");
    assert_eq!(c.take_slot("pb_rate", s + 11, 1).await.unwrap(), s + 12);
}

/// Concurrent takers never share a slot beyond the limit: 60 at once with limit 10 get
/// exactly 10 in each of 6 consecutive seconds.
pub async fn control_take_slot_concurrent_takers(a: &Adapters) {
    let s = a.now().timestamp();
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let control: Arc<dyn ControlStore> = Arc::clone(&a.control);
            tokio::spawn(async move { control.take_slot("pb_burst", s, 10).await.unwrap() })
        })
        .collect();
    let mut per_second: BTreeMap<i64, u32> = BTreeMap::new();
    for task in tasks {
        *per_second.entry(task.await.unwrap()).or_default() += 1;
    }
    let expected: BTreeMap<i64, u32> = (s..s + 6).map(|second| (second, 10)).collect();
    assert_eq!(per_second, expected, "10 in each of 6 seconds");
}

/// `forget` drops the postback's breaker, held firings and slots, and nothing else.
pub async fn control_forget_clears_all(a: &Adapters) {
    let c = &a.control;
    let t = a.now();
    let s = t.timestamp();
    for id in ["pb_gone", "pb_kept"] {
        assert!(c.put_breaker(id, &open_breaker(t), None).await.unwrap());
        c.hold(&[held_firing(id, "d_1", t), held_firing(id, "d_2", t)]).await.unwrap();
        assert_eq!(c.take_slot(id, s, 1).await.unwrap(), s);
    }
    c.forget("pb_gone").await.unwrap();
    assert_eq!(c.breaker("pb_gone").await.unwrap(), None, "breaker gone");
    assert_eq!(c.held_count("pb_gone").await.unwrap(), 0, "held firings gone");
    assert!(c.held("pb_gone", 10).await.unwrap().is_empty());
    assert_eq!(c.take_slot("pb_gone", s, 1).await.unwrap(), s, "slots gone: the full second has room again");
    assert!(c.put_breaker("pb_gone", &breaker(0), None).await.unwrap(), "a new breaker starts at version 1");

    assert_eq!(c.breaker("pb_kept").await.unwrap().map(|b| b.version), Some(1), "other postbacks untouched");
    assert_eq!(c.held_count("pb_kept").await.unwrap(), 2);
    assert_eq!(c.take_slot("pb_kept", s, 1).await.unwrap(), s + 1);
    c.forget("pb_never_seen").await.unwrap();
}
