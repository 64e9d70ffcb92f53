use chrono::Duration;

use crate::domain::event::EventType;
use crate::domain::postback::{FireOn, Scope};
use crate::domain::signing::{PreviousSecret, Signing, SigningSecret};
use crate::ports::StoreError;
use crate::testing::{fixtures, Adapters};

/// create → get → replace → get → delete → get; replace/delete of a missing id → false.
pub async fn postbacks_crud(a: &Adapters) {
    let store = &a.postbacks;
    let original = fixtures::postback("pb_crud", EventType::Conversion);
    assert_eq!(store.get("pb_crud").await.unwrap(), None, "nothing before create");
    store.create(&original, &fixtures::audit("t")).await.unwrap();
    assert_eq!(store.get("pb_crud").await.unwrap(), Some(original.clone()), "get returns what was created");

    let mut changed = original.clone();
    changed.name = "Renamed".into();
    changed.kind = EventType::Event;
    changed.enabled = false;
    changed.offers = Scope::All;
    changed.fire_on = FireOn::All;
    changed.event_names = Some(vec!["deposit".into(), "upsell".into()]);
    changed.headers.insert("X-Extra".into(), "{sub1}".into());
    changed.body = None;
    changed.updated_at = original.updated_at + Duration::seconds(5);
    // Signing: the secrets are kept with the postback, the rotated one with its expiry.
    changed.signing = Signing::StandardWebhooks;
    changed.signing_secret = Some(SigningSecret::from_key_bytes(&[7; 32]));
    changed.previous_signing_secret =
        Some(PreviousSecret::rotated_at(SigningSecret::from_key_bytes(&[8; 24]), changed.updated_at));
    changed.version = original.version + 1;
    assert!(store.replace(&changed, &fixtures::audit("t")).await.unwrap(), "replace of an existing postback → true");
    assert_eq!(store.get("pb_crud").await.unwrap(), Some(changed.clone()), "get returns the replacement whole");

    assert!(store.delete("pb_crud", &fixtures::audit("t")).await.unwrap(), "delete of an existing postback → true");
    assert_eq!(store.get("pb_crud").await.unwrap(), None, "gone after delete");
    assert!(!store.delete("pb_crud", &fixtures::audit("t")).await.unwrap(), "second delete → false");
    assert!(!store.replace(&changed, &fixtures::audit("t")).await.unwrap(), "replace of a deleted postback → false");
    assert_eq!(store.get("pb_crud").await.unwrap(), None, "replace must not resurrect a deleted postback");
    assert!(!store.delete("pb_never", &fixtures::audit("t")).await.unwrap(), "delete of an unknown id → false");
}

/// A second create with the same id is a `Conflict` and changes nothing.
pub async fn postbacks_create_conflict(a: &Adapters) {
    let first = fixtures::postback("pb_dup", EventType::Click);
    a.postbacks.create(&first, &fixtures::audit("t")).await.unwrap();
    let mut second = fixtures::postback("pb_dup", EventType::Conversion);
    second.name = "Impostor".into();
    match a.postbacks.create(&second, &fixtures::audit("t")).await {
        Err(StoreError::Conflict(_)) => {}
        other => panic!("create with an existing id must be Conflict, got {other:?}"),
    }
    assert_eq!(a.postbacks.get("pb_dup").await.unwrap(), Some(first), "the first postback is untouched");
}

/// `list(None)` is every postback ordered by id; `list(Some(kind))` only that type.
pub async fn postbacks_list_ordered_and_by_type(a: &Adapters) {
    assert!(a.postbacks.list(None).await.unwrap().is_empty(), "fresh store lists nothing");
    let specs = [
        ("pb_m", EventType::Conversion),
        ("pb_a", EventType::Click),
        ("pb_z", EventType::Conversion),
        ("pb_c", EventType::Event),
        ("pb_b", EventType::Conversion),
    ];
    let mut created = Vec::new();
    for (id, kind) in specs {
        let postback = fixtures::postback(id, kind);
        a.postbacks.create(&postback, &fixtures::audit("t")).await.unwrap();
        created.push(postback);
    }
    let ids = |list: Vec<crate::domain::postback::Postback>| list.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(a.postbacks.list(None).await.unwrap()), ["pb_a", "pb_b", "pb_c", "pb_m", "pb_z"], "all, by id");
    assert_eq!(
        ids(a.postbacks.list(Some(EventType::Conversion)).await.unwrap()),
        ["pb_b", "pb_m", "pb_z"],
        "conversions only, by id"
    );
    assert_eq!(ids(a.postbacks.list(Some(EventType::Click)).await.unwrap()), ["pb_a"]);
    assert!(a.postbacks.list(Some(EventType::Impression)).await.unwrap().is_empty(), "no impression postbacks");

    // A replace that changes the type moves the postback between type lists.
    let mut moved = fixtures::postback("pb_m", EventType::Click);
    moved.name = "Now a click postback".into();
    moved.version = 2;
    assert!(a.postbacks.replace(&moved, &fixtures::audit("t")).await.unwrap());
    assert_eq!(ids(a.postbacks.list(Some(EventType::Conversion)).await.unwrap()), ["pb_b", "pb_z"]);
    assert_eq!(ids(a.postbacks.list(Some(EventType::Click)).await.unwrap()), ["pb_a", "pb_m"]);

    assert!(a.postbacks.delete("pb_b", &fixtures::audit("t")).await.unwrap());
    assert_eq!(ids(a.postbacks.list(None).await.unwrap()), ["pb_a", "pb_c", "pb_m", "pb_z"], "deleted one gone");
    assert_eq!(
        a.postbacks.list(Some(EventType::Event)).await.unwrap(),
        vec![created[3].clone()],
        "list returns whole postbacks"
    );
}

/// Versions: create is the only version; each replace must carry the stored version + 1
/// (else `Conflict`, nothing written) and keeps what it superseded; `versions` lists the
/// current one then the saved ones, newest first, whole; the by-type listing never shows
/// a saved version; delete takes the history along (then `None`, as for an unknown id).
pub async fn postbacks_versions(a: &Adapters) {
    let store = &a.postbacks;
    assert_eq!(store.versions("pb_v").await.unwrap(), None, "unknown id → None");
    let v1 = fixtures::postback("pb_v", EventType::Conversion);
    store.create(&v1, &fixtures::audit("t")).await.unwrap();
    assert_eq!(store.versions("pb_v").await.unwrap(), Some(vec![v1.clone()]), "after create: itself");

    let mut v2 = v1.clone();
    v2.version = 2;
    v2.name = "second".into();
    v2.kind = EventType::Click;
    v2.updated_at = v1.updated_at + Duration::seconds(1);
    assert!(store.replace(&v2, &fixtures::audit("t")).await.unwrap());
    let mut v3 = v2.clone();
    v3.version = 3;
    v3.name = "third".into();
    v3.headers.insert("X-Third".into(), "3".into());
    assert!(store.replace(&v3, &fixtures::audit("t")).await.unwrap());
    let all = vec![v3.clone(), v2.clone(), v1.clone()];
    assert_eq!(store.versions("pb_v").await.unwrap(), Some(all.clone()), "newest first, whole");
    assert_eq!(store.get("pb_v").await.unwrap(), Some(v3.clone()), "get is the newest");

    // A stale replace (a version already taken, or one skipping ahead) changes nothing.
    for stale in [2, 3, 5] {
        let mut late = v1.clone();
        late.version = stale;
        late.name = format!("stale {stale}");
        match store.replace(&late, &fixtures::audit("t")).await {
            Err(StoreError::Conflict(_)) => {}
            other => panic!("replace with version {stale} over version 3 must be Conflict, got {other:?}"),
        }
    }
    assert_eq!(store.versions("pb_v").await.unwrap(), Some(all), "conflicts wrote nothing");

    // Two replaces of the same version at once: exactly one wins, the other is a
    // `Conflict`; the history holds the winner only.
    let (mut a4, mut b4) = (v3.clone(), v3.clone());
    (a4.version, b4.version) = (4, 4);
    (a4.name, b4.name) = ("fourth a".into(), "fourth b".into());
    let (audit_a, audit_b) = (fixtures::audit("t"), fixtures::audit("t"));
    let (ra, rb) = tokio::join!(store.replace(&a4, &audit_a), store.replace(&b4, &audit_b));
    let winner = match (ra, rb) {
        (Ok(true), Err(StoreError::Conflict(_))) => a4,
        (Err(StoreError::Conflict(_)), Ok(true)) => b4,
        other => panic!("concurrent replaces of version 3: one must win, one conflict; got {other:?}"),
    };
    let all = vec![winner.clone(), v3.clone(), v2.clone(), v1.clone()];
    assert_eq!(store.versions("pb_v").await.unwrap(), Some(all), "the loser left no trace");
    let v3 = winner;

    // Saved versions are not postbacks: not listed, not gettable by any id.
    let listed = store.list(None).await.unwrap();
    assert_eq!(listed, vec![v3.clone()], "list shows the current version only");
    assert_eq!(store.list(Some(EventType::Conversion)).await.unwrap(), vec![], "v1's type lists nothing");
    for id in ["pb_v#v1", "pb_v#v2", "pb_v#1"] {
        assert_eq!(store.get(id).await.unwrap(), None, "{id} is not a postback");
        assert!(!store.delete(id, &fixtures::audit("t")).await.unwrap(), "{id} cannot be deleted");
        assert_eq!(store.versions(id).await.unwrap(), None, "{id} has no versions");
    }

    // Another postback's history is its own.
    let other = fixtures::postback("pb_w", EventType::Click);
    store.create(&other, &fixtures::audit("t")).await.unwrap();
    assert_eq!(store.versions("pb_w").await.unwrap(), Some(vec![other]));

    assert!(store.delete("pb_v", &fixtures::audit("t")).await.unwrap());
    assert_eq!(store.versions("pb_v").await.unwrap(), None, "deleted → None");
    assert_eq!(store.get("pb_v").await.unwrap(), None);
}

fn ids_of(names: &[&str]) -> Option<std::collections::BTreeSet<String>> {
    Some(names.iter().map(|n| n.to_string()).collect())
}

/// The change stamp: 0 on a fresh store; +1 with every create, replace and delete, and
/// nothing for a write that fails (conflict, not found); `changes_since` names the ids
/// written after the stamp asked about, none when it is the current one, and cannot
/// tell for a stamp ahead of the store's.
pub async fn postbacks_change_stamp(a: &Adapters) {
    let store = &a.postbacks;
    let changes = store.changes_since(0).await.unwrap();
    assert_eq!((changes.stamp, changes.ids), (0, ids_of(&[])), "fresh store");

    let first = fixtures::postback("pb_s1", EventType::Click);
    store.create(&first, &fixtures::audit("t")).await.unwrap();
    let changes = store.changes_since(0).await.unwrap();
    assert_eq!((changes.stamp, changes.ids), (1, ids_of(&["pb_s1"])), "create");
    assert!(matches!(store.create(&first, &fixtures::audit("t")).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.changes_since(1).await.unwrap().ids, ids_of(&[]), "a conflicting create changes nothing");

    let mut second = first.clone();
    second.version = 2;
    assert!(store.replace(&second, &fixtures::audit("t")).await.unwrap());
    let changes = store.changes_since(1).await.unwrap();
    assert_eq!((changes.stamp, changes.ids), (2, ids_of(&["pb_s1"])), "replace");
    assert!(
        matches!(store.replace(&second, &fixtures::audit("t")).await, Err(StoreError::Conflict(_))),
        "stale replace"
    );
    assert!(!store.replace(&fixtures::postback("pb_none", EventType::Click), &fixtures::audit("t")).await.unwrap());
    assert!(!store.delete("pb_none", &fixtures::audit("t")).await.unwrap());
    assert_eq!(store.changes_since(2).await.unwrap(), crate::ports::PostbackChanges { stamp: 2, ids: ids_of(&[]) });

    store.create(&fixtures::postback("pb_s2", EventType::Conversion), &fixtures::audit("t")).await.unwrap();
    assert!(store.delete("pb_s1", &fixtures::audit("t")).await.unwrap());
    let changes = store.changes_since(2).await.unwrap();
    assert_eq!((changes.stamp, changes.ids), (4, ids_of(&["pb_s1", "pb_s2"])), "create and delete");
    assert_eq!(store.changes_since(3).await.unwrap().ids, ids_of(&["pb_s1"]), "only the writes after the stamp");
    assert_eq!(store.changes_since(0).await.unwrap().ids, ids_of(&["pb_s1", "pb_s2"]), "all, each id once");
    let ahead = store.changes_since(9).await.unwrap();
    assert_eq!((ahead.stamp, ahead.ids), (4, None), "a stamp ahead of the store's: unknown");
}

/// Concurrent writes each take their own stamp: none is lost or shared.
pub async fn postbacks_concurrent_writes_each_take_a_stamp(a: &Adapters) {
    let ids: Vec<String> = (0..6).map(|i| format!("pb_c{i}")).collect();
    let creates = ids.iter().map(|id| {
        let store = a.postbacks.clone();
        let postback = fixtures::postback(id, EventType::Click);
        async move { store.create(&postback, &fixtures::audit("t")).await }
    });
    for result in futures::future::join_all(creates).await {
        result.unwrap();
    }
    let changes = a.postbacks.changes_since(0).await.unwrap();
    assert_eq!(changes.stamp, 6, "one stamp per write");
    assert_eq!(changes.ids, Some(ids.into_iter().collect()));
}

/// `snapshot` right after writes: every postback as of its stamp (created, replaced,
/// deleted ones all as they are), ordered by id, and the stamp is the store's.
pub async fn postbacks_snapshot_reflects_every_write_of_its_stamp(a: &Adapters) {
    let store = &a.postbacks;
    assert_eq!(store.snapshot().await.unwrap(), crate::ports::PostbackSnapshot { stamp: 0, postbacks: vec![] });
    let mut kept = Vec::new();
    for (id, kind) in [("pb_n3", EventType::Event), ("pb_n1", EventType::Click), ("pb_n2", EventType::Conversion)] {
        let postback = fixtures::postback(id, kind);
        store.create(&postback, &fixtures::audit("t")).await.unwrap();
        kept.push(postback);
    }
    let mut changed = kept[1].clone();
    changed.version = 2;
    changed.kind = EventType::Impression;
    changed.name = "changed type".into();
    assert!(store.replace(&changed, &fixtures::audit("t")).await.unwrap());
    assert!(store.delete("pb_n2", &fixtures::audit("t")).await.unwrap());
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.stamp, 5);
    assert_eq!(snapshot.postbacks, vec![changed, kept[0].clone()], "pb_n1 as replaced, pb_n3; pb_n2 gone");
}

/// A partner's postback keeps its owner, approval and pending revision through the
/// store; an index built from the store's list (as each process, and each Lambda's
/// cached index, builds it) matches only the approved ones, and the approved fields
/// beside a pending revision, never the revision.
pub async fn postbacks_approval_kept_and_only_approved_match(a: &Adapters) {
    use crate::domain::access::Actor;
    use crate::domain::matching::PostbackIndex;
    use crate::domain::partner::{Approval, ApprovalState};
    use crate::domain::postback::Owner;

    let store = &a.postbacks;
    let partner = |id: &str, state: ApprovalState| {
        let mut p = fixtures::postback(id, EventType::Conversion);
        p.conditions.clear();
        p.owner = Some(Owner { publisher_id: "p1".into() });
        p.publishers = Scope::Only(vec!["p1".into()]);
        p.approval = match state {
            ApprovalState::Pending => Approval::pending(),
            s => Approval::decided(s, &Actor::bootstrap_admin(), p.created_at, Some("why".into())),
        };
        p
    };
    let pending = partner("pb_ap_pending", ApprovalState::Pending);
    let rejected = partner("pb_ap_rejected", ApprovalState::Rejected);
    let mut approved = partner("pb_ap_approved", ApprovalState::Approved);
    let mut revision = approved.clone();
    revision.url = "https://revision.example/?c={transaction_id}".into();
    approved.pending_revision = Some(Box::new(revision));
    for p in [&pending, &rejected, &approved] {
        store.create(p, &fixtures::audit(&p.id)).await.unwrap();
        assert_eq!(store.get(&p.id).await.unwrap().as_ref(), Some(p), "{} round-trips whole", p.id);
    }
    let index = PostbackIndex::build(store.list(None).await.unwrap());
    let event = fixtures::event(EventType::Conversion, "tx_approval");
    let matched: Vec<String> = index.matching(&event).iter().map(|c| c.postback.id.clone()).collect();
    assert_eq!(matched, ["pb_ap_approved"], "only the approved postback matches");
    let fired = index.get("pb_ap_approved").unwrap();
    assert_eq!(fired.postback.url, approved.url, "the approved fields fire, not the pending revision");
}
