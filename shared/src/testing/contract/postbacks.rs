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
    store.create(&original).await.unwrap();
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
    assert!(store.replace(&changed).await.unwrap(), "replace of an existing postback → true");
    assert_eq!(store.get("pb_crud").await.unwrap(), Some(changed.clone()), "get returns the replacement whole");

    assert!(store.delete("pb_crud").await.unwrap(), "delete of an existing postback → true");
    assert_eq!(store.get("pb_crud").await.unwrap(), None, "gone after delete");
    assert!(!store.delete("pb_crud").await.unwrap(), "second delete → false");
    assert!(!store.replace(&changed).await.unwrap(), "replace of a deleted postback → false");
    assert_eq!(store.get("pb_crud").await.unwrap(), None, "replace must not resurrect a deleted postback");
    assert!(!store.delete("pb_never").await.unwrap(), "delete of an unknown id → false");
}

/// A second create with the same id is a `Conflict` and changes nothing.
pub async fn postbacks_create_conflict(a: &Adapters) {
    let first = fixtures::postback("pb_dup", EventType::Click);
    a.postbacks.create(&first).await.unwrap();
    let mut second = fixtures::postback("pb_dup", EventType::Conversion);
    second.name = "Impostor".into();
    match a.postbacks.create(&second).await {
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
        a.postbacks.create(&postback).await.unwrap();
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
    assert!(a.postbacks.replace(&moved).await.unwrap());
    assert_eq!(ids(a.postbacks.list(Some(EventType::Conversion)).await.unwrap()), ["pb_b", "pb_z"]);
    assert_eq!(ids(a.postbacks.list(Some(EventType::Click)).await.unwrap()), ["pb_a", "pb_m"]);

    assert!(a.postbacks.delete("pb_b").await.unwrap());
    assert_eq!(ids(a.postbacks.list(None).await.unwrap()), ["pb_a", "pb_c", "pb_m", "pb_z"], "deleted one gone");
    assert_eq!(
        a.postbacks.list(Some(EventType::Event)).await.unwrap(),
        vec![created[3].clone()],
        "list returns whole postbacks"
    );
}
