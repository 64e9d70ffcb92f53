//! The AWS adapters against local emulators: DynamoDB Local (Amazon's own engine) for
//! the stores, ministack for SQS and EventBridge Scheduler (its schedules really fire).
//!
//! Run: `scripts/emulators.sh run cargo test -p postback --features aws,testing --test it contract_aws`
//! (it installs and starts the emulators, exports their endpoints, and stops them).
//! Without the endpoints these tests FAIL; `POSTBACK_SKIP_AWS_TESTS=1` skips them
//! explicitly. Every test creates its own uniquely named tables, queues and schedule
//! group, so tests run in parallel and runs never see each other's data.
#![cfg(all(feature = "aws", feature = "testing"))]

use crate::aws_support;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use postback::adapters::aws::{
    at_expression, config_loader, delivered_entry_id, schedule_name, AwsAdapters, AwsClients, DynamoLogStore,
    DynamoTouchStore, QueueSettings, ReadBound, ResourceNames, ResourcePlan, SqsFiringQueue,
};
use postback::adapters::system::SystemClock;
use postback::domain::event::{Event, EventType, Status, StatusKey};
use postback::domain::firing::Firing;
use postback::domain::log::{Cursor, LogColumn, LogEntry, LogFilter, LogOp, LogPredicate, Outcome};
use postback::domain::postback::Postback;
use postback::ports::{
    ControlStore, FiringQueue, Leased, LogStore, PostbackStore, StoreError, TouchRecord, TouchStore,
};
use postback::testing::{contract, fixtures, AdapterFactory, Adapters, ManualClock};

/// The queue lease in these tests (the contract suite's `contract::LEASE`).
const LEASE: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------
// Emulator check and per-test resources
// ---------------------------------------------------------------------------------

struct Fixture {
    clients: AwsClients,
    names: ResourceNames,
    adapters: AwsAdapters,
}

async fn fixture(test: &str, adjust: impl FnOnce(&mut ResourcePlan)) -> Fixture {
    let (clients, names) = aws_support::resources(test, |plan| {
        plan.visibility_timeout = LEASE;
        adjust(plan);
    })
    .await;
    // Real time: SQS leases and delays run on the emulator's clock.
    let adapters = AwsAdapters::new(&clients, &names, chrono::Duration::days(30), Arc::new(SystemClock));
    Fixture { clients, names, adapters }
}

fn queue_with(f: &Fixture, adjust: impl FnOnce(&mut QueueSettings)) -> SqsFiringQueue {
    let mut settings = QueueSettings::from_names(&f.names);
    settings.visibility_timeout = Some(LEASE);
    adjust(&mut settings);
    SqsFiringQueue::new(&f.clients, settings, Arc::new(SystemClock))
}

// ---------------------------------------------------------------------------------
// The shared port contract suite
// ---------------------------------------------------------------------------------

/// Fresh, empty adapters per call: uniquely named tables, queue and schedule group, the
/// queue's visibility (and `receive`'s lease) = `contract::LEASE`.
struct AwsFactory;

#[async_trait::async_trait]
impl AdapterFactory for AwsFactory {
    async fn fresh(&self) -> Adapters {
        let name = format!("c{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let f = fixture(&name, |_| {}).await;
        let queue = Arc::new(queue_with(&f, |_| {}));
        Adapters::real_time(
            f.adapters.postbacks,
            f.adapters.touches,
            f.adapters.logs,
            queue,
            f.adapters.control,
            f.adapters.access,
        )
    }
}

// The same port contract suite the embedded adapters pass, one test per check
// (`contract_aws::checks::*`).
const _: () = assert!(LEASE.as_millis() == contract::LEASE.as_millis());
postback::contract_tests!(
    factory = AwsFactory,
    before = {
        require_emulators!();
    }
);

// ---------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------

fn postback(id: &str, kind: EventType) -> Postback {
    serde_json::from_value(serde_json::json!({
        "id": id, "name": format!("pb {id}"), "type": kind, "enabled": true,
        "offers": "all", "publishers": ["p1", "p2"], "fire_on": "approved", "delay_seconds": 0,
        "method": "GET", "url": "https://example.com/?c={transaction_id}",
        "headers": {"Authorization": "Bearer x"}, "content_type": "application/json",
        "created_at": "2030-01-01T00:00:00Z", "updated_at": "2030-01-01T00:00:00Z"
    }))
    .unwrap()
}

fn event(kind: EventType, txid: &str) -> Event {
    let mut value = serde_json::json!({
        "type": kind, "transaction_id": txid, "offer_id": "o1", "publisher_id": "p1",
        "timestamp": "2030-01-01T00:00:00Z", "params": {"k": "v"}
    });
    if kind.has_status() {
        value["status"] = "approved".into();
    }
    if kind == EventType::Event {
        value["event_name"] = "deposit".into();
    }
    serde_json::from_value(value).unwrap()
}

fn firing(delivery_id: &str, due_at: DateTime<Utc>) -> Firing {
    Firing::first(delivery_id.to_string(), "pb1".into(), event(EventType::Conversion, "T1"), due_at, Utc::now())
}

/// A log entry fired at `fired_at`, with a UUIDv7 id minted at that time (as the
/// dispatcher mints them).
fn log_entry(fired_at: DateTime<Utc>, postback_id: &str, txid: &str, outcome: Outcome) -> LogEntry {
    let ts =
        uuid::Timestamp::from_unix(uuid::NoContext, fired_at.timestamp() as u64, fired_at.timestamp_subsec_nanos());
    let delivery_id = format!("d-{postback_id}-{txid}");
    // The fixture's entry of a first attempt of a conversion, with these values.
    LogEntry {
        id: uuid::Uuid::new_v7(ts).to_string(),
        postback_id: postback_id.into(),
        postback_name: format!("pb {postback_id}"),
        transaction_id: txid.into(),
        event_id: None,
        offer_id: Some("o1".into()),
        publisher_id: Some("p1".into()),
        fired_at,
        method: "GET".into(),
        url: "https://example.com/".into(),
        request_headers: BTreeMap::new(),
        request_body: None,
        status_code: Some(if outcome == Outcome::Delivered { 200 } else { 500 }),
        response_body: Some("ok".into()),
        error: None,
        duration_ms: 12,
        ..fixtures::log_entry(&firing(&delivery_id, fired_at), outcome)
    }
}

/// Receive until `n` firings arrived or `within` passed.
/// A positive signal instead of "sleep, then assert nothing came back": queue a sentinel
/// that becomes visible after `after`, receive until it arrives, and return what else
/// was handed out meanwhile. Anything that came back within the sentinel's delay (an
/// acked message whose lease ran out, a retried one not deleted) is in that list.
async fn received_before_sentinel(queue: &dyn FiringQueue, name: &str, after: Duration) -> Vec<Leased> {
    let sentinel = firing(name, Utc::now() + chrono::Duration::from_std(after).unwrap());
    queue.enqueue(std::slice::from_ref(&sentinel)).await.unwrap();
    let deadline = Instant::now() + after + Duration::from_secs(15);
    let mut others = Vec::new();
    while Instant::now() < deadline {
        let got = queue.receive(10).await.unwrap();
        let (mine, rest): (Vec<Leased>, Vec<Leased>) = got.into_iter().partition(|l| l.firing.delivery_id == name);
        others.extend(rest);
        if let Some(leased) = mine.first() {
            queue.ack(leased).await.unwrap();
            return others;
        }
        // Polling the emulator's SQS (real I/O; its delays and leases run on its own clock).
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sentinel {name} never arrived");
}

async fn receive_n(queue: &dyn FiringQueue, n: usize, within: Duration) -> Vec<Leased> {
    let deadline = Instant::now() + within;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        got.extend(queue.receive(n - got.len()).await.unwrap());
        if got.len() < n {
            // Polling the emulator's SQS (real I/O).
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    got
}

// ---------------------------------------------------------------------------------
// Postbacks
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn postbacks_crud_and_listing_by_type() {
    require_emulators!();
    let f = fixture("postbacks", |_| {}).await;
    let store = &f.adapters.postbacks;
    let c2 = postback("c2", EventType::Conversion);
    for p in [postback("k1", EventType::Click), c2.clone(), postback("c1", EventType::Conversion)] {
        store.create(&p, &fixtures::audit("t")).await.unwrap();
    }
    assert!(matches!(store.create(&c2, &fixtures::audit("t")).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.get("c2").await.unwrap(), Some(c2.clone()));
    assert_eq!(store.get("missing").await.unwrap(), None);

    let ids = |v: Vec<Postback>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list(None).await.unwrap()), ["c1", "c2", "k1"]);
    assert_eq!(ids(store.list(Some(EventType::Conversion)).await.unwrap()), ["c1", "c2"]);
    assert!(store.list(Some(EventType::Impression)).await.unwrap().is_empty());

    // Replacing may change the type: the index follows.
    let mut changed = c2.clone();
    changed.kind = EventType::Event;
    changed.name = "renamed".into();
    changed.version = 2;
    assert!(store.replace(&changed, &fixtures::audit("t")).await.unwrap());
    assert_eq!(store.get("c2").await.unwrap().unwrap().name, "renamed");
    assert_eq!(ids(store.list(Some(EventType::Event)).await.unwrap()), ["c2"]);
    assert!(!store.replace(&postback("nope", EventType::Click), &fixtures::audit("t")).await.unwrap());
    assert_eq!(store.get("nope").await.unwrap(), None, "replace must not create");

    assert!(store.delete("c2", &fixtures::audit("t")).await.unwrap());
    assert!(!store.delete("c2", &fixtures::audit("t")).await.unwrap());
    assert_eq!(ids(store.list(None).await.unwrap()), ["c1", "k1"]);
}

/// The `by_type` index is eventually consistent: right after a write it may not list
/// a postback yet. Simulated here by taking the item out of the index (its `type`
/// removed, as if the index had not caught up): a whole reload (`snapshot`) still has
/// it, read by key through its recent change record; the stamp check names it; and it
/// comes from the table, not the index.
#[tokio::test]
async fn a_whole_reload_reads_recent_writes_by_key_not_through_the_index() {
    require_emulators!();
    let f = fixture("lagging", |_| {}).await;
    let store = &f.adapters.postbacks;
    let listed = postback("k1", EventType::Click);
    let lagging = postback("k2", EventType::Click);
    store.create(&listed, &postback::testing::fixtures::audit("t")).await.unwrap();
    store.create(&lagging, &postback::testing::fixtures::audit("t")).await.unwrap();
    f.clients
        .dynamodb
        .update_item()
        .table_name(&f.names.postbacks_table)
        .key("id", aws_sdk_dynamodb::types::AttributeValue::S("k2".into()))
        .update_expression("REMOVE #t")
        .expression_attribute_names("#t", "type")
        .send()
        .await
        .unwrap();
    let ids = |v: Vec<Postback>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list(None).await.unwrap()), ["k1"], "the index does not list k2 (the simulated lag)");
    let snapshot = store.snapshot().await.unwrap();
    assert_eq!(snapshot.stamp, 2);
    assert_eq!(snapshot.postbacks, vec![listed, lagging], "k2 read by key: its write is recent");
    let changes = store.changes_since(1).await.unwrap();
    assert_eq!(changes.ids, Some(["k2".to_string()].into()), "the check names it without the index");
}

#[tokio::test]
async fn corrupt_items_are_reported_as_corrupt() {
    require_emulators!();
    let f = fixture("corrupt", |_| {}).await;
    f.clients
        .dynamodb
        .put_item()
        .table_name(&f.names.postbacks_table)
        .item("id", aws_sdk_dynamodb::types::AttributeValue::S("bad".into()))
        .item("type", aws_sdk_dynamodb::types::AttributeValue::S("click".into()))
        .item("doc", aws_sdk_dynamodb::types::AttributeValue::S("{not json".into()))
        .send()
        .await
        .unwrap();
    assert!(matches!(f.adapters.postbacks.get("bad").await, Err(StoreError::Corrupt(_))));
    assert!(matches!(f.adapters.postbacks.list(None).await, Err(StoreError::Corrupt(_))));
}

/// An item written before versions (no `version` attribute, no `version` in its doc) is
/// version 1: replaced as such, and its first version is kept.
#[tokio::test]
async fn postbacks_from_before_versions_are_version_1() {
    require_emulators!();
    let f = fixture("legacy_versions", |_| {}).await;
    let legacy = postback("old", EventType::Click);
    let mut doc = serde_json::to_value(&legacy).unwrap();
    doc.as_object_mut().unwrap().remove("version");
    f.clients
        .dynamodb
        .put_item()
        .table_name(&f.names.postbacks_table)
        .item("id", aws_sdk_dynamodb::types::AttributeValue::S("old".into()))
        .item("type", aws_sdk_dynamodb::types::AttributeValue::S("click".into()))
        .item("doc", aws_sdk_dynamodb::types::AttributeValue::S(doc.to_string()))
        .send()
        .await
        .unwrap();
    let store = &f.adapters.postbacks;
    assert_eq!(store.get("old").await.unwrap(), Some(legacy.clone()), "reads as version 1");
    assert_eq!(store.versions("old").await.unwrap(), Some(vec![legacy.clone()]));
    let mut next = legacy.clone();
    next.version = 2;
    next.name = "second".into();
    assert!(store.replace(&next, &fixtures::audit("t")).await.unwrap());
    assert_eq!(store.versions("old").await.unwrap(), Some(vec![next, legacy]));
}

// ---------------------------------------------------------------------------------
// Touches
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn touches_store_clicks_statuses_and_seen_keys() {
    require_emulators!();
    let f = fixture("touches", |_| {}).await;
    let store = &f.adapters.touches;
    let click = event(EventType::Click, "T1");
    let mut later_click = click.clone();
    later_click.subs[0] = Some("later".into());
    let mut conversion = event(EventType::Conversion, "T1");
    let mut rejected = conversion.clone();
    rejected.status = Some(Status::Rejected);
    rejected.rejection_reason = Some("fraud".into());
    let deposit = event(EventType::Event, "T1");
    let impression = event(EventType::Impression, "T2");
    // The later record of the same key wins, within one call and across calls.
    let records: Vec<TouchRecord> = [click.clone(), later_click.clone(), conversion.clone(), deposit, impression]
        .into_iter()
        .map(|event| TouchRecord { event })
        .collect();
    store.record(&records).await.unwrap();
    store.record(&records).await.unwrap(); // idempotent
    assert_eq!(store.get_click("T1").await.unwrap(), Some(later_click));
    assert_eq!(store.get_click("T2").await.unwrap(), None, "an impression is not a click");
    let status = store.get_status("T1", &StatusKey::Conversion).await.unwrap().unwrap();
    assert_eq!(status.status, Status::Approved);
    store.record(&[TouchRecord { event: rejected }]).await.unwrap();
    let status = store.get_status("T1", &StatusKey::Conversion).await.unwrap().unwrap();
    assert_eq!((status.status, status.rejection_reason.as_deref()), (Status::Rejected, Some("fraud")));
    let deposit_status = store.get_status("T1", &StatusKey::Event("deposit".into())).await.unwrap();
    assert_eq!(deposit_status.map(|s| s.status), Some(Status::Approved));
    assert_eq!(store.get_status("T1", &StatusKey::Event("upsell".into())).await.unwrap(), None);
    assert_eq!(store.get_status("T9", &StatusKey::Conversion).await.unwrap(), None);

    // More than one batch (25) of touches in one call.
    let many: Vec<TouchRecord> =
        (0..60).map(|i| TouchRecord { event: event(EventType::Click, &format!("M{i}")) }).collect();
    store.record(&many).await.unwrap();
    assert!(store.get_click("M59").await.unwrap().is_some());
    // Many at once: more than one BatchGetItem (100 keys), missing ones and repeats left out.
    let wanted: Vec<String> =
        (0..120).map(|i| format!("M{i}")).chain(["T1".into(), "M0".into(), "T2".into()]).collect();
    let clicks = store.get_clicks(&wanted).await.unwrap();
    assert_eq!(clicks.len(), 61, "M0..M59 and T1");
    assert_eq!(clicks["M7"], many[7].event);
    assert_eq!(clicks["T1"].subs[0].as_deref(), Some("later"));
    assert!(store.get_clicks(&[]).await.unwrap().is_empty());

    // Seen keys: more than a BatchGetItem (100), with repeats, with odd characters.
    conversion.event_id = Some("e|1".into());
    let mut keys: Vec<String> = (0..130).map(|i| format!("click|T{i}||")).collect();
    keys.push(conversion.dedupe_key());
    keys.push("not a dedupe key".into());
    assert!(store.seen(&keys).await.unwrap().is_empty());
    let marked: Vec<String> = keys.iter().step_by(2).cloned().chain([keys[0].clone()]).collect();
    store.mark_seen(&marked).await.unwrap();
    store.mark_seen(&marked).await.unwrap(); // marking twice is fine
    let seen = store.seen(&keys).await.unwrap();
    assert_eq!(seen, marked.iter().cloned().collect::<HashSet<_>>());
}

#[tokio::test]
async fn reads_ignore_items_past_their_ttl() {
    require_emulators!();
    // TTL deletion off, so the expired items really are still there when read.
    let f = fixture("expired", |p| p.ttl_enabled = false).await;
    let retention = chrono::Duration::days(30);
    let clock = Arc::new(ManualClock::starting_now());
    let touches = DynamoTouchStore::new(f.clients.dynamodb.clone(), &f.names.touches_table, retention, clock.clone());
    touches.record(&[TouchRecord { event: event(EventType::Click, "T1") }]).await.unwrap();
    touches.mark_seen(&["click|T1||".into()]).await.unwrap();
    assert!(touches.get_click("T1").await.unwrap().is_some(), "live within the retention");
    assert_eq!(touches.seen(&["click|T1||".into()]).await.unwrap().len(), 1);
    // Past the TTL written (by the adapters' clock; the emulator deletes nothing).
    clock.advance((retention + chrono::Duration::seconds(1)).to_std().unwrap());
    assert_eq!(touches.get_click("T1").await.unwrap(), None);
    assert!(touches.seen(&["click|T1||".into()]).await.unwrap().is_empty());

    let expired = chrono::Duration::seconds(-10);

    let logs = DynamoLogStore::new(f.clients.dynamodb.clone(), &f.names.logs_table, expired, Arc::new(SystemClock));
    let entry = log_entry(Utc::now(), "pb1", "T1", Outcome::Failed);
    logs.append(std::slice::from_ref(&entry)).await.unwrap();
    assert_eq!(logs.get(&entry.id).await.unwrap(), None);
    assert!(logs.query(&LogFilter { limit: 10, ..LogFilter::default() }).await.unwrap().items.is_empty());

    let raw = f.clients.dynamodb.scan().table_name(&f.names.touches_table).send().await.unwrap();
    assert_eq!(raw.count, 2, "the items exist; only reads hide them");
}

// ---------------------------------------------------------------------------------
// Logs
// ---------------------------------------------------------------------------------

/// Page through a listing, checking each page's size and the cursor's round trip.
async fn all_pages(logs: &dyn LogStore, mut filter: LogFilter) -> Vec<LogEntry> {
    let mut out = Vec::new();
    for _ in 0..100 {
        let page = logs.query(&filter).await.unwrap();
        assert!(page.items.len() <= filter.limit);
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => filter.cursor = Some(Cursor::decode(&c).unwrap()),
            None => return out,
        }
    }
    panic!("pagination did not end");
}

/// With filters that match little, a listing reads a bounded number of Query pages and
/// answers short (even empty) pages with a cursor where it stopped; following the
/// cursors still yields every match exactly once, newest first (all shards, and the
/// postback index).
#[tokio::test]
async fn logs_filtered_listing_reads_a_bounded_number_of_pages() {
    require_emulators!();
    let f = fixture("logs_bound", |_| {}).await;
    let bound = ReadBound { pages: 5, page_items: 3 };
    let logs = DynamoLogStore::new(
        f.clients.dynamodb.clone(),
        &f.names.logs_table,
        chrono::Duration::days(1),
        Arc::new(SystemClock),
    )
    .with_read_bound(bound);
    let base = Utc::now() - chrono::Duration::hours(3);
    let entries: Vec<LogEntry> = (0..60)
        .map(|i| {
            let mut e = log_entry(
                base + chrono::Duration::seconds(i),
                ["pbA", "pbB"][i as usize % 2],
                "T1",
                Outcome::Delivered,
            );
            if i % 17 == 5 {
                e.url = format!("https://rare.example/{i}");
            }
            e
        })
        .collect();
    logs.append(&entries).await.unwrap();
    let rare = LogPredicate::new(LogColumn::Url, LogOp::Contains, "rare.example").unwrap();
    let newest = |keep: &dyn Fn(&LogEntry) -> bool| {
        let mut want: Vec<&LogEntry> = entries.iter().filter(|e| keep(e)).collect();
        want.sort_by(|a, b| (b.fired_at, &b.id).cmp(&(a.fired_at, &a.id)));
        want.into_iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    };
    let cases = [
        (
            LogFilter { limit: 2, predicates: vec![rare.clone()], ..LogFilter::default() },
            newest(&|e| e.url.contains("rare")),
        ),
        (
            LogFilter {
                limit: 2,
                postback_id: Some("pbB".into()),
                predicates: vec![rare.clone()],
                ..LogFilter::default()
            },
            newest(&|e| e.url.contains("rare") && e.postback_id == "pbB"),
        ),
    ];
    for (filter, want) in cases {
        assert!(!want.is_empty());
        let mut got = Vec::new();
        let mut short_with_cursor = 0;
        let mut f = filter.clone();
        for _ in 0..200 {
            let page = logs.query(&f).await.unwrap();
            got.extend(page.items.iter().map(|e| e.id.clone()));
            match page.next_cursor {
                Some(c) => {
                    short_with_cursor += usize::from(page.items.len() < f.limit);
                    f.cursor = Some(Cursor::decode(&c).unwrap());
                }
                None => break,
            }
        }
        assert_eq!(got, want, "every match once, newest first ({:?})", filter.postback_id);
        assert!(short_with_cursor > 0, "the bound stopped some request short");
    }
    // Unfiltered listings are not cut short: a full page of the newest.
    let page = logs.query(&LogFilter { limit: 10, ..LogFilter::default() }).await.unwrap();
    assert_eq!(page.items.len(), 10);
}

#[tokio::test]
async fn logs_list_newest_first_through_every_index() {
    require_emulators!();
    let f = fixture("logs", |_| {}).await;
    let logs = f.adapters.logs.as_ref();
    let base = Utc::now() - chrono::Duration::hours(3);
    let mut entries = Vec::new();
    for i in 0..45 {
        let outcome = if i % 3 == 0 { Outcome::Failed } else { Outcome::Delivered };
        let postback = ["pbA", "pbB", "pbC"][i % 3];
        let txid = ["T1", "T2"][i % 2];
        entries.push(log_entry(base + chrono::Duration::minutes(i as i64 * 3), postback, txid, outcome));
    }
    // Appended in an order unrelated to time, more than one batch at once.
    let mut shuffled = entries.clone();
    shuffled.reverse();
    shuffled.swap(3, 30);
    logs.append(&shuffled).await.unwrap();

    let newest_first = |filter: &dyn Fn(&LogEntry) -> bool| {
        let mut v: Vec<LogEntry> = entries.iter().filter(|e| filter(e)).cloned().collect();
        v.sort_by(|a, b| b.id.cmp(&a.id));
        v.into_iter().map(|e| e.id).collect::<Vec<_>>()
    };
    let ids = |v: Vec<LogEntry>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();

    // All (the sharded index, merged).
    let all = all_pages(logs, LogFilter { limit: 7, ..LogFilter::default() }).await;
    assert_eq!(ids(all.clone()), newest_first(&|_| true));
    assert_eq!(all[0].firing, entries[44].firing, "the firing (kept for resend) round-trips");
    // By postback, by transaction, by both.
    let by_pb = LogFilter { postback_id: Some("pbB".into()), limit: 4, ..LogFilter::default() };
    assert_eq!(ids(all_pages(logs, by_pb).await), newest_first(&|e| e.postback_id == "pbB"));
    let by_tx = LogFilter { transaction_id: Some("T2".into()), limit: 5, ..LogFilter::default() };
    assert_eq!(ids(all_pages(logs, by_tx).await), newest_first(&|e| e.transaction_id == "T2"));
    let both = LogFilter {
        transaction_id: Some("T1".into()),
        postback_id: Some("pbA".into()),
        limit: 2,
        ..Default::default()
    };
    assert_eq!(ids(all_pages(logs, both).await), newest_first(&|e| e.transaction_id == "T1" && e.postback_id == "pbA"));
    // Other filters.
    let failed = LogFilter { outcome: Some(Outcome::Failed), limit: 4, ..LogFilter::default() };
    assert_eq!(ids(all_pages(logs, failed).await), newest_first(&|e| e.outcome == Outcome::Failed));
    let code = LogFilter { status_code: Some(200), postback_id: Some("pbC".into()), limit: 50, ..Default::default() };
    assert_eq!(
        ids(all_pages(logs, code).await),
        newest_first(&|e| e.postback_id == "pbC" && e.status_code == Some(200))
    );
    let none = LogFilter { kind: Some(EventType::Click), limit: 50, ..LogFilter::default() };
    assert!(all_pages(logs, none).await.is_empty());
    // Time ranges (inclusive, exact to the entry's fired_at).
    let (from, to) = (entries[10].fired_at, entries[20].fired_at);
    let range = LogFilter { from: Some(from), to: Some(to), limit: 4, ..LogFilter::default() };
    let expected = newest_first(&|e| e.fired_at >= from && e.fired_at <= to);
    assert_eq!(expected.len(), 11);
    assert_eq!(ids(all_pages(logs, range).await), expected);
    let since = LogFilter {
        from: Some(entries[40].fired_at),
        transaction_id: Some("T1".into()),
        limit: 50,
        ..LogFilter::default()
    };
    assert_eq!(
        ids(all_pages(logs, since).await),
        newest_first(&|e| e.fired_at >= entries[40].fired_at && e.transaction_id == "T1")
    );
    let empty = LogFilter { from: Some(to), to: Some(from), limit: 5, ..LogFilter::default() };
    assert!(logs.query(&empty).await.unwrap().items.is_empty());
    // A page exactly as long as what is left has no next cursor.
    let exact = logs.query(&LogFilter { postback_id: Some("pbA".into()), limit: 15, ..Default::default() }).await;
    let exact = exact.unwrap();
    assert_eq!((exact.items.len(), exact.next_cursor), (15, None));
    // One entry.
    assert_eq!(logs.get(&entries[7].id).await.unwrap().as_ref(), Some(&entries[7]));
    assert_eq!(logs.get("missing").await.unwrap(), None);
}

#[tokio::test]
async fn log_limits_default_to_50_and_cap_at_500() {
    require_emulators!();
    let f = fixture("limits", |_| {}).await;
    let logs = f.adapters.logs.as_ref();
    let base = Utc::now() - chrono::Duration::minutes(10);
    let entries: Vec<LogEntry> = (0..510)
        .map(|i| log_entry(base + chrono::Duration::milliseconds(i), "pbL", &format!("T{i}"), Outcome::Delivered))
        .collect();
    logs.append(&entries).await.unwrap();
    let default = logs.query(&LogFilter { limit: 0, ..LogFilter::default() }).await.unwrap();
    assert_eq!(default.items.len(), 50, "limit 0 means the default page of 50");
    assert!(default.next_cursor.is_some());
    let capped = logs.query(&LogFilter { limit: 10_000, postback_id: Some("pbL".into()), ..Default::default() }).await;
    let capped = capped.unwrap();
    assert_eq!(capped.items.len(), 500, "a limit over 500 is capped at 500");
    assert!(capped.next_cursor.is_some(), "ten more remain");
}

#[tokio::test]
async fn delivered_markers_are_written_once_with_their_entry() {
    require_emulators!();
    let f = fixture("delivered", |_| {}).await;
    let logs = f.adapters.logs.as_ref();
    let first = log_entry(Utc::now(), "pb1", "T1", Outcome::Delivered);
    let mut second = log_entry(Utc::now(), "pb1", "T1", Outcome::Delivered);
    second.delivery_id = first.delivery_id.clone();
    assert!(!logs.is_delivered(&first.delivery_id).await.unwrap());
    assert!(logs.record_delivered(&first).await.unwrap());
    assert!(logs.is_delivered(&first.delivery_id).await.unwrap());
    assert!(!logs.record_delivered(&second).await.unwrap(), "already delivered");
    assert_eq!(logs.get(&second.id).await.unwrap(), None, "nothing written when already delivered");
    assert_eq!(logs.get(&first.id).await.unwrap(), Some(first.clone()));
    // An entry with an id of its own gets a bare marker at the delivered id, which is
    // not a log entry.
    assert_eq!(logs.get(&delivered_entry_id(&first.delivery_id)).await.unwrap(), None);
    let listed = logs.query(&LogFilter { limit: 10, ..LogFilter::default() }).await.unwrap();
    assert_eq!(listed.items, vec![first]);
}

/// With `LOG_RETENTION_DAYS` under the 15 days a marker must live, a delivered entry
/// (its own marker) stays a marker after its retention but is no longer listed, shown
/// or counted.
#[tokio::test]
async fn a_delivered_entry_past_a_short_retention_is_only_a_marker() {
    require_emulators!();
    // TTL deletion off, and a retention already over when written.
    let f = fixture("short-retention", |p| p.ttl_enabled = false).await;
    let logs = DynamoLogStore::new(
        f.clients.dynamodb.clone(),
        &f.names.logs_table,
        chrono::Duration::seconds(-10),
        Arc::new(SystemClock),
    );
    let mut entry = log_entry(Utc::now(), "pb_short", "T1", Outcome::Delivered);
    entry.id = logs.delivered_entry_id(&entry.delivery_id).unwrap();
    assert!(logs.record_delivered(&entry).await.unwrap());
    assert!(logs.is_delivered(&entry.delivery_id).await.unwrap(), "still the marker (15 days)");
    let mut again = log_entry(Utc::now(), "pb_short", "T1", Outcome::Delivered);
    again.id = entry.id.clone();
    assert!(!logs.record_delivered(&again).await.unwrap(), "so a redelivery does not deliver again");
    assert_eq!(logs.get(&entry.id).await.unwrap(), None, "not shown after the retention");
    let by_postback = LogFilter { postback_id: Some("pb_short".into()), limit: 10, ..LogFilter::default() };
    assert!(logs.query(&by_postback).await.unwrap().items.is_empty(), "nor listed");
    assert!(logs.query(&LogFilter { limit: 10, ..LogFilter::default() }).await.unwrap().items.is_empty());
    let hour = postback::domain::stats::hour_of(entry.fired_at);
    assert!(logs.hourly_stats("pb_short", &[hour]).await.unwrap().is_empty(), "nor counted");
    let states = logs.replay_states(std::slice::from_ref(&entry.delivery_id)).await.unwrap();
    assert!(states[&entry.delivery_id].delivered, "replay still sees it delivered");
}

/// Stats are counted from the `by_postback` index; a settled hour is counted once and
/// kept in its roll-up item (read instead of the index afterwards), the entries younger
/// than `STATS_SETTLE` are counted on every read and not rolled up, and concurrent
/// readers never count an entry twice.
#[tokio::test]
async fn stats_roll_up_settled_hours_once() {
    use postback::adapters::aws::STATS_SETTLE;
    use postback::domain::stats::{hour_of, HourCounts};
    require_emulators!();
    let f = fixture("stats-rollup", |_| {}).await;
    let logs = f.adapters.logs.as_ref();
    let now = Utc::now();
    let past = hour_of(now) - chrono::Duration::hours(3);
    let current = hour_of(now);
    let at = |hour: DateTime<Utc>, minute: i64| hour + chrono::Duration::minutes(minute);
    let mut entries = vec![
        log_entry(at(past, 1), "pb_roll", "T1", Outcome::Delivered),
        log_entry(at(past, 2), "pb_roll", "T2", Outcome::Delivered),
        log_entry(at(past, 59), "pb_roll", "T3", Outcome::Failed),
        log_entry(now, "pb_roll", "T4", Outcome::Delivered),
    ];
    let mut test = log_entry(at(past, 3), "pb_roll", "T5", Outcome::Delivered);
    test.test = true;
    entries.push(test);
    logs.append(&entries).await.unwrap();

    let expected_past = HourCounts { delivered: 2, failed: 1, duration_ms_sum: 36, attempts: 3, ..Default::default() };
    let expected_now = HourCounts { delivered: 1, duration_ms_sum: 12, attempts: 1, ..Default::default() };
    // Eight readers at once, on hours nobody rolled up yet.
    let hours = [current, past];
    let reads = futures::future::try_join_all((0..8).map(|_| logs.hourly_stats("pb_roll", &hours))).await.unwrap();
    for stats in &reads {
        assert_eq!((stats.get(&past), stats.get(&current)), (Some(&expected_past), Some(&expected_now)));
    }
    let rollup = |hour: DateTime<Utc>| {
        let f = &f;
        async move {
            let id = format!("stats#pb_roll#{}", hour.format("%Y-%m-%dT%H"));
            let key = aws_sdk_dynamodb::types::AttributeValue::S(id);
            let out = f.clients.dynamodb.get_item().table_name(&f.names.logs_table).key("id", key).send().await;
            out.unwrap().item.map(|item| {
                let number = |name: &str| item[name].as_n().unwrap().parse::<u64>().unwrap();
                (item["upto"].as_s().unwrap().clone(), number("delivered"), number("failed"), number("attempts"))
            })
        }
    };
    let end = (past + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    assert_eq!(rollup(past).await, Some((end, 2, 1, 3)), "the settled hour, counted once by eight readers");
    if let Some((upto, delivered, ..)) = rollup(current).await {
        assert!(upto <= (Utc::now() - STATS_SETTLE).to_rfc3339_opts(chrono::SecondsFormat::Nanos, true));
        assert_eq!(delivered, 0, "the entry of a moment ago is not final yet");
    }

    // An entry that turns up in the settled hour now (it cannot: entries are written
    // within a function's timeout) is not counted: the roll-up is read, not the index.
    logs.append(&[log_entry(at(past, 30), "pb_roll", "T6", Outcome::Delivered)]).await.unwrap();
    // One more of now is.
    logs.append(&[log_entry(Utc::now(), "pb_roll", "T7", Outcome::Failed)]).await.unwrap();
    let stats = logs.hourly_stats("pb_roll", &[current, past]).await.unwrap();
    assert_eq!(stats.get(&past), Some(&expected_past));
    let mut now_counts = expected_now;
    now_counts.add(&HourCounts { failed: 1, duration_ms_sum: 12, attempts: 1, ..Default::default() });
    assert_eq!(stats.get(&current), Some(&now_counts));
}

// ---------------------------------------------------------------------------------
// Queue
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn queue_sends_batches_of_ten_and_acks() {
    require_emulators!();
    let f = fixture("batch", |_| {}).await;
    let queue = queue_with(&f, |_| {});
    let firings: Vec<Firing> = (0..23).map(|i| firing(&format!("d{i}"), Utc::now())).collect();
    queue.enqueue(&firings).await.unwrap();
    let got = receive_n(&queue, 23, Duration::from_secs(10)).await;
    let ids: HashSet<String> = got.iter().map(|l| l.firing.delivery_id.clone()).collect();
    assert_eq!(ids.len(), 23);
    assert_eq!(got.iter().find(|l| l.firing.delivery_id == "d7").unwrap().firing, firings[7]);
    for leased in &got {
        queue.ack(leased).await.unwrap();
    }
    let back = received_before_sentinel(&queue, "sentinel-acked", LEASE + Duration::from_secs(1)).await;
    assert!(back.is_empty(), "acked messages never come back: {:?}", back.len());
}

/// Raw messages as SQS holds them, with every system attribute, until `n` arrived.
async fn raw_messages(f: &Fixture, n: usize) -> Vec<aws_sdk_sqs::types::Message> {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        let out = f
            .clients
            .sqs
            .receive_message()
            .queue_url(&f.names.queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        got.extend(out.messages.unwrap_or_default());
    }
    got
}

/// Fair queue: every message the adapter sends carries `MessageGroupId` = the firing's
/// destination (a firing without one: `postback:<id>`; one SQS would refuse: a hash),
/// whether queued, retried or put back early. Read back from the queue (ministack keeps
/// the group on standard queues and returns it with the system attributes).
#[tokio::test]
async fn every_message_carries_its_destination_as_message_group() {
    use aws_sdk_sqs::types::MessageSystemAttributeName;
    require_emulators!();
    let f = fixture("groups", |_| {}).await;
    let queue = queue_with(&f, |_| {});
    let with = |id: &str, destination: Option<&str>| Firing {
        destination: destination.map(str::to_string),
        ..firing(id, Utc::now())
    };
    let long = format!("https://{}.example:443", "x".repeat(150));
    let firings = [
        with("g1", Some("https://aff.example:443")),
        with("g2", None),
        with("g3", Some(&long)),
        with("g4", Some("http://[::1]:8080")),
    ];
    queue.enqueue(&firings).await.unwrap();
    let mut groups: BTreeMap<String, String> = BTreeMap::new();
    let mut leased = Vec::new();
    for message in raw_messages(&f, 4).await {
        let firing: Firing = serde_json::from_str(message.body().unwrap()).unwrap();
        let group = message.attributes().and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId)).cloned();
        groups
            .insert(firing.delivery_id.clone(), group.unwrap_or_else(|| panic!("{} has no group", firing.delivery_id)));
        leased.push(postback::ports::Leased { firing, receipt: message.receipt_handle().unwrap().to_string() });
    }
    assert_eq!(groups["g1"], "https://aff.example:443");
    assert_eq!(groups["g2"], "postback:pb1");
    assert!(groups["g3"].starts_with("h:") && groups["g3"].len() <= 128, "{}", groups["g3"]);
    assert_eq!(groups["g4"], "http://[::1]:8080");
    for f in &firings {
        assert_eq!(groups[&f.delivery_id], postback::adapters::aws::message_group(f));
    }

    // A retry's next attempt and an early arrival put back keep theirs.
    for done in leased.iter().filter(|l| ["g2", "g3"].contains(&l.firing.delivery_id.as_str())) {
        queue.ack(done).await.unwrap();
    }
    let first = leased.iter().find(|l| l.firing.delivery_id == "g1").unwrap();
    queue.retry(first, &first.firing.next_attempt(Utc::now())).await.unwrap();
    let early = leased.iter().find(|l| l.firing.delivery_id == "g4").unwrap();
    let mut early = early.clone();
    early.firing.due_at = Utc::now() + chrono::Duration::seconds(1);
    assert!(queue.defer_if_early(&early, Utc::now() - chrono::Duration::seconds(1)).await.unwrap());
    let again: BTreeMap<String, String> = raw_messages(&f, 2)
        .await
        .into_iter()
        .map(|m| {
            let firing: Firing = serde_json::from_str(m.body().unwrap()).unwrap();
            (firing.delivery_id, m.attributes().unwrap()[&MessageSystemAttributeName::MessageGroupId].clone())
        })
        .collect();
    assert_eq!(again.get("g1").map(String::as_str), Some("https://aff.example:443"), "{again:?}");
    assert_eq!(again.get("g4").map(String::as_str), Some("http://[::1]:8080"), "{again:?}");
}

#[tokio::test]
async fn queue_splits_batches_by_size() {
    require_emulators!();
    let f = fixture("bigbatch", |_| {}).await;
    let queue = queue_with(&f, |_| {});
    // Five ~100 KB firings: at most two fit in one 256 KiB batch.
    let firings: Vec<Firing> = (0..5)
        .map(|i| {
            let mut fi = firing(&format!("big{i}"), Utc::now());
            fi.event.params.insert("blob".into(), "x".repeat(100_000));
            fi
        })
        .collect();
    queue.enqueue(&firings).await.unwrap();
    let got = receive_n(&queue, 5, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 5);
    let mut huge = firing("huge", Utc::now());
    huge.event.params.insert("blob".into(), "x".repeat(300_000));
    assert!(matches!(queue.enqueue(&[huge]).await, Err(StoreError::Unavailable(_))));
}

#[tokio::test]
async fn queue_delays_leases_and_retries() {
    require_emulators!();
    let f = fixture("delay", |_| {}).await;
    let queue = queue_with(&f, |_| {});
    let start = Instant::now();
    queue.enqueue(&[firing("later", Utc::now() + chrono::Duration::seconds(3))]).await.unwrap();
    assert!(queue.receive(10).await.unwrap().is_empty(), "a delayed firing is not handed out early");
    let got = receive_n(&queue, 1, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 1);
    assert!(start.elapsed() >= Duration::from_millis(2500), "arrived after {:?}", start.elapsed());

    // Not acked: it comes back after the lease.
    let again = receive_n(&queue, 1, LEASE + Duration::from_secs(5)).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].firing, got[0].firing);

    // Retry: the next attempt arrives with its number, the old message is gone.
    let next = again[0].firing.next_attempt(Utc::now() + chrono::Duration::seconds(1));
    queue.retry(&again[0], &next).await.unwrap();
    let retried = receive_n(&queue, 1, Duration::from_secs(10)).await;
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].firing.attempt, 2);
    queue.ack(&retried[0]).await.unwrap();
    let back = received_before_sentinel(&queue, "sentinel-retried", LEASE + Duration::from_secs(1)).await;
    assert!(back.is_empty(), "the retried message was deleted");
}

#[tokio::test]
async fn long_delays_become_one_time_schedules() {
    require_emulators!();
    let f = fixture("schedule", |_| {}).await;
    let queue = queue_with(&f, |_| {});
    let due = Utc::now() + chrono::Duration::hours(2);
    let mut long = firing("d_long", due);
    long.attempt = 3;
    queue.enqueue(&[long.clone(), firing("d_now", Utc::now())]).await.unwrap();
    queue.enqueue(std::slice::from_ref(&long)).await.unwrap(); // same name: already scheduled, fine

    let schedule = f
        .clients
        .scheduler
        .get_schedule()
        .name(schedule_name(&long))
        .group_name(&f.names.schedule_group)
        .send()
        .await
        .unwrap();
    assert_eq!(schedule_name(&long), "d_long-a3");
    let fire_at = due - chrono::Duration::from_std(postback::adapters::aws::SCHEDULE_LEAD).unwrap();
    assert_eq!(schedule.schedule_expression(), Some(at_expression(fire_at).as_str()));
    assert!(schedule.schedule_expression().unwrap().starts_with("at(20"));
    assert_eq!(schedule.action_after_completion().map(|a| a.as_str()), Some("DELETE"));
    assert_eq!(schedule.flexible_time_window().map(|w| w.mode().as_str()), Some("OFF"));
    let target = schedule.target().unwrap();
    assert_eq!(target.arn(), f.names.queue_arn);
    assert_eq!(target.role_arn(), f.names.scheduler_role_arn);
    let input: Firing = serde_json::from_str(target.input().unwrap()).unwrap();
    assert_eq!(input, long);

    // Only the due firing is on the queue.
    let got = receive_n(&queue, 1, Duration::from_secs(5)).await;
    assert_eq!(got.iter().map(|l| l.firing.delivery_id.as_str()).collect::<Vec<_>>(), ["d_now"]);
    queue.ack(&got[0]).await.unwrap();
    assert!(queue.receive(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn schedules_fire_into_the_queue_and_early_firings_wait_out_the_rest() {
    require_emulators!();
    let f = fixture("fire", |_| {}).await;
    // Anything beyond 1 s is scheduled, and schedules fire 4 s early: a firing due in 6 s
    // fires at ~2 s (ministack checks schedules every second), arrives ~4 s early, is
    // put back with DelaySeconds, and comes back once due.
    let queue = queue_with(&f, |s| {
        s.max_sqs_delay = Duration::from_secs(1);
        s.schedule_lead = Duration::from_secs(4);
    });
    let due = Utc::now() + chrono::Duration::seconds(6);
    let long = firing("d_fire", due);
    queue.enqueue(std::slice::from_ref(&long)).await.unwrap();
    let name = schedule_name(&long);
    let group = &f.names.schedule_group;
    assert!(f.clients.scheduler.get_schedule().name(&name).group_name(group).send().await.is_ok());

    let early = receive_n(&queue, 1, Duration::from_secs(15)).await;
    assert_eq!(early.len(), 1, "the schedule fired into the queue");
    assert_eq!(early[0].firing, long);
    let gone = f.clients.scheduler.get_schedule().name(&name).group_name(group).send().await;
    assert!(gone.is_err_and(|e| e.as_service_error().is_some_and(|s| s.is_resource_not_found_exception())));
    assert!(queue.defer_if_early(&early[0], Utc::now()).await.unwrap(), "it arrived before its due time");

    let on_time = receive_n(&queue, 1, Duration::from_secs(15)).await;
    assert_eq!(on_time.len(), 1);
    assert!(Utc::now() >= due - chrono::Duration::milliseconds(500), "re-queued for the remaining delay");
    assert!(!queue.defer_if_early(&on_time[0], Utc::now()).await.unwrap());
    queue.ack(&on_time[0]).await.unwrap();
}

#[tokio::test]
async fn lambda_sqs_messages_become_leases() {
    require_emulators!();
    let f = fixture("lambda", |_| {}).await;
    let queue = queue_with(&f, |_| {});
    queue.enqueue(&[firing("d_l", Utc::now())]).await.unwrap();
    let raw = f.clients.sqs.receive_message().queue_url(&f.names.queue_url).wait_time_seconds(2).send().await.unwrap();
    let message = &raw.messages()[0];
    let leased =
        postback::adapters::aws::leased_from_sqs_message(message.body().unwrap(), message.receipt_handle().unwrap())
            .unwrap();
    assert_eq!(leased.firing.delivery_id, "d_l");
    queue.ack(&leased).await.unwrap();
}

// ---------------------------------------------------------------------------------
// Dependency failure
// ---------------------------------------------------------------------------------

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_quickly() {
    // Needs no emulator: it talks to a closed port on purpose.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = config_loader()
        .endpoint_url(format!("http://127.0.0.1:{closed}"))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "test"))
        .load()
        .await;
    let clients = AwsClients::from_sdk_config(&config);
    let names = ResourceNames {
        postbacks_table: "p".into(),
        touches_table: "t".into(),
        logs_table: "l".into(),
        control_table: "c".into(),
        queue_url: format!("http://127.0.0.1:{closed}/000000000000/q"),
        queue_arn: "arn:aws:sqs:us-east-1:000000000000:q".into(),
        dead_letter_queue_arn: None,
        schedule_group: "g".into(),
        scheduler_role_arn: "arn:aws:iam::000000000000:role/r".into(),
    };
    let adapters = AwsAdapters::new(&clients, &names, chrono::Duration::days(1), Arc::new(SystemClock));
    // Connection refused is retried (3 attempts, jittered backoff), then reported: each
    // call must give up within seconds, not hang until a Lambda timeout.
    async fn quick<T: std::fmt::Debug>(call: impl std::future::Future<Output = Result<T, StoreError>>) {
        let started = Instant::now();
        let result = call.await;
        assert!(matches!(&result, Err(StoreError::Unavailable(m)) if !m.is_empty()), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    }
    quick(adapters.postbacks.get("x")).await;
    quick(adapters.touches.seen(&["k".into()])).await;
    quick(adapters.logs.record_delivered(&log_entry(Utc::now(), "p", "t", Outcome::Delivered))).await;
    quick(adapters.queue.enqueue(&[firing("d", Utc::now())])).await;
    quick(adapters.queue.enqueue(&[firing("d", Utc::now() + chrono::Duration::days(1))])).await;
    quick(adapters.control.breaker("p")).await;
    quick(adapters.control.take_slot("p", Utc::now().timestamp(), 10)).await;
}

/// Audit records carry their TTL (`expires_at` = `at` + `AUDIT_RETENTION_DAYS`), written
/// with the postback in one transaction; keys and postbacks carry none.
#[tokio::test]
async fn audit_records_expire_by_ttl_and_nothing_else_does() {
    require_emulators!();
    let f = fixture("auditttl", |_| {}).await;
    let adapters = f.adapters.with_audit_retention(&f.clients, &f.names, chrono::Duration::days(7));
    let record = fixtures::audit("pb_ttl");
    adapters.postbacks.create(&fixtures::postback("pb_ttl", EventType::Click), &record).await.unwrap();
    let get = |id: String| {
        let client = f.clients.dynamodb.clone();
        let table = f.names.postbacks_table.clone();
        async move {
            client
                .get_item()
                .table_name(table)
                .key("id", aws_sdk_dynamodb::types::AttributeValue::S(id))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item
                .unwrap()
        }
    };
    let item = get(format!("audit#{}", record.id)).await;
    let expires: i64 = item["expires_at"].as_n().unwrap().parse().unwrap();
    assert_eq!(expires, (record.at + chrono::Duration::days(7)).timestamp());
    assert!(!get("pb_ttl".to_string()).await.contains_key("expires_at"), "a postback never expires");
}
