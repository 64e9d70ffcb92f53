use chrono::Duration;

use crate::domain::access::{
    hash_key, new_key, Actor, AuditAction, AuditCursor, AuditFilter, AuditRecord, AuditTarget, Caller, ManagedKey,
    Role, TargetKind,
};
use crate::domain::event::EventType;
use crate::ports::StoreError;
use crate::testing::{fixtures, Adapters};

fn key(id: &str, role: Role, at: chrono::DateTime<chrono::Utc>) -> (String, ManagedKey) {
    let secret = new_key();
    let stored = ManagedKey {
        id: id.to_string(),
        name: format!("Key {id}"),
        role,
        publisher_id: (role == Role::Partner).then(|| "7".to_string()),
        created_at: at,
        last_used_at: None,
        hash: hash_key(&secret),
    };
    (secret, stored)
}

fn record(at: chrono::DateTime<chrono::Utc>, actor: &str, action: AuditAction, target: &str) -> AuditRecord {
    let caller = Caller::new(
        Actor { key_id: actor.to_string(), name: format!("Actor {actor}"), role: Role::Admin, publisher_id: None },
        Some("127.0.0.1".into()),
    );
    AuditRecord::new(
        &caller,
        at,
        action,
        AuditTarget { kind: TargetKind::Postback, id: Some(target.to_string()) },
        format!("{} {target}", action.as_str()),
    )
    .versions(Some(1), Some(2))
}

async fn all_records(a: &Adapters) -> Vec<AuditRecord> {
    a.access.query_audit(&AuditFilter { limit: 500, ..AuditFilter::default() }).await.unwrap().items
}

/// Keys: create (with its record) → found by hash, listed oldest first; a second key
/// with the same id or hash is a `Conflict` that writes nothing; `touch_key` moves
/// `last_used_at` forward only; revoke removes it (with its record), twice → false.
pub async fn access_keys_lifecycle(a: &Adapters) {
    let now = a.now();
    let (secret_a, ka) = key("key_a", Role::Viewer, now);
    let (_, kb) = key("key_b", Role::Partner, now + Duration::seconds(1));
    assert_eq!(a.access.key_by_hash(&ka.hash).await.unwrap(), None);
    a.access.create_key(&ka, &record(now, "env:admin", AuditAction::KeyCreate, "key_a")).await.unwrap();
    a.access.create_key(&kb, &record(now, "env:admin", AuditAction::KeyCreate, "key_b")).await.unwrap();
    assert_eq!(a.access.key_by_hash(&hash_key(&secret_a)).await.unwrap(), Some(ka.clone()));
    let listed = a.access.list_keys().await.unwrap();
    assert_eq!(listed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["key_a", "key_b"]);
    assert_eq!(listed[1].publisher_id.as_deref(), Some("7"));

    let mut same_hash = kb.clone();
    same_hash.id = "key_c".into();
    same_hash.hash = ka.hash.clone();
    match a.access.create_key(&same_hash, &record(now, "env:admin", AuditAction::KeyCreate, "key_c")).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("a second key with the same hash must be Conflict, got {other:?}"),
    }
    let (_, same_id) = key("key_a", Role::Admin, now);
    assert!(matches!(
        a.access.create_key(&same_id, &record(now, "env:admin", AuditAction::KeyCreate, "key_a2")).await,
        Err(StoreError::Conflict(_))
    ));
    let records = all_records(a).await;
    assert_eq!(records.len(), 2, "a refused create writes no record: {records:?}");

    let minute = crate::domain::access::minute_of(now);
    a.access.touch_key("key_a", minute).await.unwrap();
    a.access.touch_key("key_a", minute - Duration::minutes(5)).await.unwrap();
    a.access.touch_key("key_never", minute).await.unwrap();
    let listed = a.access.list_keys().await.unwrap();
    assert_eq!(listed[0].last_used_at, Some(minute), "last use moves forward only");
    assert_eq!(listed.len(), 2, "touching an unknown id creates nothing");

    assert!(a.access.revoke_key("key_a", &record(now, "env:admin", AuditAction::KeyRevoke, "key_a")).await.unwrap());
    assert_eq!(a.access.key_by_hash(&ka.hash).await.unwrap(), None, "a revoked key is not found");
    assert!(!a.access.revoke_key("key_a", &record(now, "env:admin", AuditAction::KeyRevoke, "x")).await.unwrap());
    assert_eq!(a.access.list_keys().await.unwrap().len(), 1);
    let actions: Vec<AuditAction> = all_records(a).await.iter().map(|r| r.action).collect();
    assert_eq!(actions.iter().filter(|x| **x == AuditAction::KeyRevoke).count(), 1, "a refused revoke writes none");
}

/// The trail: newest first by `at` (ties by id), each filter alone and together, the
/// time range (`from` inclusive, `to` exclusive), and paging by cursor without gaps or
/// duplicates. Records come back whole.
pub async fn access_audit_query(a: &Adapters) {
    let t0 = a.now() - Duration::hours(1);
    let mut written = Vec::new();
    for i in 0..12i64 {
        let actor = if i % 3 == 0 { "key_x" } else { "env:admin" };
        let action = if i % 2 == 0 { AuditAction::PostbackCreate } else { AuditAction::PostbackTest };
        let target = if i < 6 { "pb_1" } else { "pb_2" };
        let r = record(t0 + Duration::minutes(i), actor, action, target);
        a.access.append_audit(&r).await.unwrap();
        written.push(r);
    }
    let newest_first: Vec<AuditRecord> = written.iter().rev().cloned().collect();
    assert_eq!(all_records(a).await, newest_first, "newest first, whole");

    let ids = |f: AuditFilter| {
        let access = a.access.clone();
        async move { access.query_audit(&f).await.unwrap().items.into_iter().map(|r| r.id).collect::<Vec<_>>() }
    };
    let expect = |pred: &dyn Fn(&AuditRecord) -> bool| -> Vec<String> {
        newest_first.iter().filter(|r| pred(r)).map(|r| r.id.clone()).collect()
    };
    let base = AuditFilter { limit: 100, ..AuditFilter::default() };
    assert_eq!(
        ids(AuditFilter { actor_key_id: Some("key_x".into()), ..base.clone() }).await,
        expect(&|r| r.actor.key_id == "key_x")
    );
    assert_eq!(
        ids(AuditFilter { action: Some(AuditAction::PostbackTest), ..base.clone() }).await,
        expect(&|r| r.action == AuditAction::PostbackTest)
    );
    assert_eq!(
        ids(AuditFilter { target_id: Some("pb_2".into()), action: Some(AuditAction::PostbackCreate), ..base.clone() })
            .await,
        expect(&|r| r.target.id.as_deref() == Some("pb_2") && r.action == AuditAction::PostbackCreate)
    );
    let (from, to) = (t0 + Duration::minutes(3), t0 + Duration::minutes(7));
    assert_eq!(
        ids(AuditFilter { from: Some(from), to: Some(to), ..base.clone() }).await,
        expect(&|r| r.at >= from && r.at < to),
        "from inclusive, to exclusive"
    );
    assert_eq!(
        ids(AuditFilter { actor_key_id: Some("env:admin".into()), from: Some(from), ..base.clone() }).await,
        expect(&|r| r.actor.key_id == "env:admin" && r.at >= from)
    );

    // Pages of 5: every record once, in order.
    let mut seen = Vec::new();
    let mut cursor: Option<AuditCursor> = None;
    for _ in 0..10 {
        let page = a
            .access
            .query_audit(&AuditFilter { limit: 5, cursor: cursor.clone(), ..AuditFilter::default() })
            .await
            .unwrap();
        assert!(page.items.len() <= 5);
        seen.extend(page.items.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => cursor = Some(AuditCursor::decode(&c).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, expect(&|_| true), "paging: no gap, no duplicate");
}

/// Every postback write carries its record, written with it; a refused write (a create
/// of an existing id, a stale replace, a delete of nothing) writes none.
pub async fn access_postback_writes_carry_their_record(a: &Adapters) {
    let store = &a.postbacks;
    let p = fixtures::postback("pb_aud", EventType::Conversion);
    let create = fixtures::audit_of(AuditAction::PostbackCreate, "pb_aud");
    store.create(&p, &create).await.unwrap();
    assert!(matches!(
        store.create(&p, &fixtures::audit_of(AuditAction::PostbackCreate, "pb_aud")).await,
        Err(StoreError::Conflict(_))
    ));
    let mut v2 = p.clone();
    v2.version = 2;
    v2.name = "Renamed".into();
    let replace = fixtures::audit_of(AuditAction::PostbackReplace, "pb_aud");
    assert!(store.replace(&v2, &replace).await.unwrap());
    let mut stale = p.clone();
    stale.version = 2;
    assert!(matches!(
        store.replace(&stale, &fixtures::audit_of(AuditAction::PostbackReplace, "pb_aud")).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(!store.delete("pb_none", &fixtures::audit_of(AuditAction::PostbackDelete, "pb_none")).await.unwrap());
    let delete = fixtures::audit_of(AuditAction::PostbackDelete, "pb_aud");
    assert!(store.delete("pb_aud", &delete).await.unwrap());
    let mut ids: Vec<String> = all_records(a).await.into_iter().map(|r| r.id).collect();
    ids.sort();
    let mut expected = vec![create.id, replace.id, delete.id];
    expected.sort();
    assert_eq!(ids, expected, "exactly the records of the writes that happened");
}
