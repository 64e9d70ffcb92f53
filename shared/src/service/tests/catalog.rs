//! Two instances of the service over one store, each with its own postback index (two
//! Lambda functions): a firing is never ended on a stale view, and a change made on one
//! instance applies on the other within the check interval.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;

use super::{spec, World};
use crate::domain::access::AuditRecord;
use crate::domain::event::EventType;
use crate::domain::log::Outcome;
use crate::domain::postback::Postback;
use crate::ports::{PostbackChanges, PostbackSnapshot, PostbackStore, StoreResult};
use crate::service::{App, AttemptOutcome, Policy};

const URL: &str = "https://aff.example/pb?t={transaction_id}";

fn click(txid: &str) -> serde_json::Value {
    json!({"type": "click", "transaction_id": txid, "offer_id": "O1", "publisher_id": "P1"})
}

/// Another instance over `w`'s ports (same stores, same clock), with its own index.
fn instance(w: &World, ttl: Duration, check: Option<Duration>) -> Arc<App> {
    let policy = Policy { catalog_ttl: ttl, catalog_check: check, ..w.app.policy.clone() };
    App::new(w.app.ports.clone(), policy)
}

/// The Lambda functions' timing before the stamp check: a 5 s TTL, no check.
fn ttl_only(w: &World) -> Arc<App> {
    instance(w, Duration::from_secs(5), None)
}

/// The sequence: dispatch loads its index; ~3 s later a postback is created on
/// another instance; ~2 s later (dispatch's index still within its TTL) a click matches
/// it on the ingest instance. Dispatch's index does not have the postback: it must ask
/// the store, and deliver, not log the firing skipped as "postback deleted".
#[tokio::test]
async fn a_firing_of_a_postback_newer_than_the_dispatch_index_is_delivered() {
    let w = World::new();
    let dispatch = ttl_only(&w);
    assert!(dispatch.catalog.index().await.unwrap().is_empty(), "dispatch loaded its index: no postbacks yet");
    w.advance_ms(3_000);
    let id = w.postback(json!({"name": "New", "type": "click", "url": URL})).await;
    w.advance_ms(1_900);
    assert_eq!(w.ingest_one(click("T1")).await.matched, 1, "the writing instance matches at once");
    assert!(dispatch.catalog.index().await.unwrap().get(&id).is_none(), "dispatch's index is stale");

    let leased = w.receive_one().await;
    let outcome = dispatch.dispatcher().process(&leased).await.unwrap();
    assert_eq!(outcome, AttemptOutcome::Delivered);
    assert_eq!(w.sender.count(), 1, "sent");
    let logs = w.logs();
    assert_eq!(logs.len(), 1);
    assert_eq!((logs[0].outcome, logs[0].postback_id.as_str()), (Outcome::Delivered, id.as_str()));
    assert!(w.queued().is_empty(), "nothing left to retry");
}

/// A postback the dispatcher's index holds as disabled, enabled since on another
/// instance: the firing (queued for the enabled version) is delivered; so is a firing
/// from before firings carried the version (the skip is checked with the store).
#[tokio::test]
async fn a_firing_of_a_postback_enabled_since_the_dispatch_index_is_delivered() {
    let w = World::new();
    let id = w.postback(json!({"name": "Off", "type": "click", "url": URL, "enabled": false})).await;
    let dispatch = ttl_only(&w);
    let cached = dispatch.catalog.index().await.unwrap().get(&id).unwrap();
    assert!(!cached.postback.enabled);
    w.advance_ms(1_000);
    w.app.replace_postback(&id, spec(&json!({"name": "On", "type": "click", "url": URL}))).await.unwrap();
    w.ingest(&[click("T1"), click("T2")]).await;
    let mut due = w.receive().await;
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|l| l.firing.postback_version == Some(2)), "queued for version 2");
    // A message from before the version was carried.
    due[1].firing.postback_version = None;
    for leased in &due {
        assert_eq!(dispatch.dispatcher().process(leased).await.unwrap(), AttemptOutcome::Delivered);
    }
    assert_eq!(w.sender.count(), 2);
    assert!(dispatch.catalog.index().await.unwrap().get(&id).is_some_and(|p| !p.postback.enabled), "still stale");
}

/// Decisions that end a firing still stand when the store agrees: deleted → skipped
/// "postback deleted", disabled → skipped "postback disabled", on an instance that loaded
/// its index after the change and on one that loaded it before and checked since.
#[tokio::test]
async fn a_truly_deleted_or_disabled_postback_is_still_skipped() {
    let w = World::new();
    let gone = w.postback(json!({"name": "Gone", "type": "click", "url": URL})).await;
    let off = w.postback(json!({"name": "Off", "type": "click", "url": URL})).await;
    let dispatch = instance(&w, Duration::from_secs(60), Some(Duration::from_millis(500)));
    w.ingest(&[click("T1"), click("T2")]).await;
    assert_eq!(w.queued().len(), 4);
    // Dispatch's index has both, enabled.
    assert_eq!(dispatch.catalog.index().await.unwrap().len(), 2);
    w.app.delete_postback(&gone).await.unwrap();
    let disabled = json!({"name": "Off", "type": "click", "url": URL, "enabled": false});
    w.app.replace_postback(&off, spec(&disabled)).await.unwrap();
    w.advance_ms(500);
    // A fresh instance (index loaded after the changes) takes T1's firings, the other
    // one T2's: they decide alike.
    let fresh = ttl_only(&w);
    for leased in w.receive().await {
        let app = if leased.firing.event.transaction_id == "T1" { &fresh } else { &dispatch };
        let outcome = app.dispatcher().process(&leased).await.unwrap();
        let want = if leased.firing.postback_id == gone { "postback deleted" } else { "postback disabled" };
        assert_eq!(outcome, AttemptOutcome::Skipped(want.into()), "{}", leased.firing.event.transaction_id);
    }
    assert_eq!(w.logs().len(), 4);
    assert_eq!(w.sender.count(), 0, "nothing sent");
}

/// The stamp check: a change made through one instance applies on another once its
/// check comes due (at most `check` later), whatever its TTL; every kind of write.
#[tokio::test]
async fn a_change_on_one_instance_applies_on_another_within_the_check_interval() {
    let w = World::new();
    let ingest = instance(&w, Duration::from_secs(3_600), Some(Duration::from_millis(500)));
    let matched = |txid: &'static str| {
        let ingest = ingest.clone();
        let now = w.now();
        async move {
            let event = crate::entry::http::parse::event::from_json(&click(txid), now).unwrap();
            ingest.ingest(vec![event]).await.unwrap()[0].matched
        }
    };
    assert_eq!(matched("A0").await, 0, "loaded: no postbacks");
    let id = w.postback(json!({"name": "New", "type": "click", "url": URL})).await;
    w.advance_ms(499);
    assert_eq!(matched("A1").await, 0, "within the check interval the index may be stale");
    w.advance_ms(1);
    assert_eq!(matched("A2").await, 1, "created: applied at the check");

    w.app
        .replace_postback(&id, spec(&json!({"name": "Off", "type": "click", "url": URL, "enabled": false})))
        .await
        .unwrap();
    w.advance_ms(500);
    assert_eq!(matched("A3").await, 0, "disabled: applied at the check");
    w.app.replace_postback(&id, spec(&json!({"name": "On", "type": "click", "url": URL}))).await.unwrap();
    w.advance_ms(500);
    assert_eq!(matched("A4").await, 1, "enabled again");
    w.app.delete_postback(&id).await.unwrap();
    w.advance_ms(500);
    assert_eq!(matched("A5").await, 0, "deleted: applied at the check");
    assert!(ingest.catalog.index().await.unwrap().is_empty());
}

/// A `PostbackStore` that counts the calls the catalog makes.
struct Counting {
    inner: Arc<dyn PostbackStore>,
    snapshots: AtomicUsize,
    checks: AtomicUsize,
    gets: AtomicUsize,
}

#[async_trait]
impl PostbackStore for Counting {
    async fn create(&self, postback: &Postback, audit: &AuditRecord) -> StoreResult<()> {
        self.inner.create(postback, audit).await
    }
    async fn get(&self, id: &str) -> StoreResult<Option<Postback>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(id).await
    }
    async fn replace(&self, postback: &Postback, audit: &AuditRecord) -> StoreResult<bool> {
        self.inner.replace(postback, audit).await
    }
    async fn delete(&self, id: &str, audit: &AuditRecord) -> StoreResult<bool> {
        self.inner.delete(id, audit).await
    }
    async fn versions(&self, id: &str) -> StoreResult<Option<Vec<Postback>>> {
        self.inner.versions(id).await
    }
    async fn list(&self, kind: Option<EventType>) -> StoreResult<Vec<Postback>> {
        self.inner.list(kind).await
    }
    async fn changes_since(&self, stamp: u64) -> StoreResult<PostbackChanges> {
        self.checks.fetch_add(1, Ordering::SeqCst);
        self.inner.changes_since(stamp).await
    }
    async fn snapshot(&self) -> StoreResult<PostbackSnapshot> {
        self.snapshots.fetch_add(1, Ordering::SeqCst);
        self.inner.snapshot().await
    }
}

/// The store reads the index costs: the local server's (no check) one load, then none
/// per event, its own writes reloading it; with a check, one small read per interval,
/// and only the changed postbacks read.
#[tokio::test]
async fn the_index_costs_no_store_read_per_event() {
    let w = World::new();
    let counting = Arc::new(Counting {
        inner: w.memory.postbacks.clone(),
        snapshots: AtomicUsize::new(0),
        checks: AtomicUsize::new(0),
        gets: AtomicUsize::new(0),
    });
    let with = |check: Option<Duration>| {
        let mut ports = w.app.ports.clone();
        ports.postbacks = counting.clone();
        App::new(ports, Policy { catalog_ttl: Duration::from_secs(60), catalog_check: check, ..w.app.policy.clone() })
    };
    let counts = || {
        (
            counting.snapshots.swap(0, Ordering::SeqCst),
            counting.checks.swap(0, Ordering::SeqCst),
            counting.gets.swap(0, Ordering::SeqCst),
        )
    };
    let ingest = |app: Arc<App>, n: usize| {
        let now = w.now();
        async move {
            for i in 0..n {
                let event = crate::entry::http::parse::event::from_json(
                    &click(&format!("C{i}-{}", now.timestamp_millis())),
                    now,
                )
                .unwrap();
                app.ingest(vec![event]).await.unwrap();
            }
        }
    };

    let local = with(None);
    ingest(local.clone(), 100).await;
    assert_eq!(counts(), (1, 0, 0), "one load, no read per event");
    local.create_postback(spec(&json!({"name": "Mine", "type": "click", "url": URL}))).await.unwrap();
    ingest(local.clone(), 10).await;
    assert_eq!(counts(), (1, 0, 0), "its own write: reloaded once");
    w.advance_ms(59_000);
    ingest(local.clone(), 10).await;
    assert_eq!(counts(), (0, 0, 0), "no check, ever");

    let function = with(Some(Duration::from_millis(500)));
    ingest(function.clone(), 100).await;
    assert_eq!(counts(), (1, 0, 0), "one load; no check within the interval");
    w.advance_ms(500);
    ingest(function.clone(), 100).await;
    assert_eq!(counts(), (0, 1, 0), "one check for the interval; nothing changed, nothing read");
    w.postback(json!({"name": "Elsewhere", "type": "click", "url": URL})).await;
    w.advance_ms(500);
    ingest(function.clone(), 100).await;
    assert_eq!(counts(), (0, 1, 1), "one check, then the one changed postback read");
}

/// A cached postback that would skip the firing (the conversion was rejected since),
/// deleted meanwhile on another instance: the store's answer decides ("postback
/// deleted"), logged and counted once.
#[tokio::test]
async fn a_skip_on_a_cached_postback_deleted_since_is_the_stores_and_counted_once() {
    let w = World::new();
    let id = w.postback(json!({"name": "Conv", "type": "conversion", "url": URL})).await;
    let dispatch = ttl_only(&w);
    assert!(dispatch.catalog.index().await.unwrap().get(&id).is_some());
    let conversion = |status: &str| json!({"type": "conversion", "transaction_id": "T1", "status": status, "offer_id": "O1", "publisher_id": "P1"});
    assert_eq!(w.ingest_one(conversion("approved")).await.matched, 1);
    w.ingest_one(conversion("rejected")).await;
    w.app.delete_postback(&id).await.unwrap();
    let leased = w.receive_one().await;
    let outcome = dispatch.dispatcher().process(&leased).await.unwrap();
    assert_eq!(outcome, AttemptOutcome::Skipped("postback deleted".into()));
    assert_eq!(w.logs().len(), 1, "one entry");
    assert_eq!(dispatch.metrics.snapshot().firings.get("skipped"), Some(&1), "counted once");
    assert_eq!(w.sender.count(), 0);
}
