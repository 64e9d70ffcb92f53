use std::collections::HashSet;

use chrono::Duration;

use crate::domain::event::EventType;
use crate::domain::log::{Cursor, LogColumn, LogEntry, LogFilter, LogOp, LogPredicate, Outcome};
use crate::service::replay::failed_firings;
use crate::service::reversals::delivered_of_transaction;
use crate::testing::{fixtures, Adapters};

fn ids(entries: &[LogEntry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}

/// The ids of `entries` in the order `query` must return them: newest first by
/// `fired_at`, ties by id (descending).
fn newest_first(entries: &[&LogEntry]) -> Vec<String> {
    let mut sorted: Vec<&LogEntry> = entries.to_vec();
    sorted.sort_unstable_by(|a, b| (b.fired_at, &b.id).cmp(&(a.fired_at, &a.id)));
    ids(&sorted.into_iter().cloned().collect::<Vec<_>>())
}

fn filter() -> LogFilter {
    LogFilter { limit: 100, ..LogFilter::default() }
}

/// An appended entry comes back whole (including the firing it came from).
pub async fn logs_append_and_get(a: &Adapters) {
    let firing = fixtures::firing("d_get", fixtures::now());
    let entry = fixtures::log_entry(&firing, Outcome::Retrying);
    assert_eq!(a.logs.get(&entry.id).await.unwrap(), None, "nothing before append");
    a.logs.append(std::slice::from_ref(&entry)).await.unwrap();
    a.logs.append(&[]).await.unwrap();
    let got = a.logs.get(&entry.id).await.unwrap();
    assert_eq!(got, Some(entry.clone()), "get returns the entry whole");
    assert_eq!(got.and_then(|e| e.firing), Some(firing), "the firing needed to resend is kept");
    assert_eq!(a.logs.get("0190a0a0-0000-7000-8000-000000000000").await.unwrap(), None, "unknown id");
    assert!(!a.logs.is_delivered("d_get").await.unwrap(), "appending an entry does not mark it delivered");
}

/// `delivered_of_transaction`: the transaction's delivered, non-test entries (logged by
/// `record_delivered`, as the dispatcher logs them, or appended), with their firings;
/// not its failed, retrying, skipped or test entries, nor another transaction's.
pub async fn logs_delivered_of_transaction(a: &Adapters) {
    let txid = format!("T_rev_{}", uuid::Uuid::new_v4().simple());
    let other = format!("T_rev_other_{}", uuid::Uuid::new_v4().simple());
    let entry = |delivery: &str, txid: &str, outcome: Outcome, test: bool| {
        let mut firing = fixtures::firing(&format!("{delivery}_{txid}"), fixtures::now());
        firing.event.transaction_id = txid.to_string();
        let mut e = fixtures::log_entry(&firing, outcome);
        e.test = test;
        if let Some(id) = a.logs.delivered_entry_id(&e.delivery_id) {
            e.id = id;
        }
        e
    };
    assert_eq!(delivered_of_transaction(&*a.logs, &txid).await.unwrap(), vec![], "none yet");
    let first = entry("d_a", &txid, Outcome::Delivered, false);
    let second = entry("d_b", &txid, Outcome::Delivered, false);
    assert!(a.logs.record_delivered(&first).await.unwrap());
    assert!(a.logs.record_delivered(&second).await.unwrap());
    let noise = [
        entry("d_c", &txid, Outcome::Failed, false),
        entry("d_d", &txid, Outcome::Retrying, false),
        entry("d_e", &txid, Outcome::Skipped, false),
        entry("d_f", &txid, Outcome::Delivered, true),
        entry("d_g", &other, Outcome::Delivered, false),
    ];
    a.logs.append(&noise).await.unwrap();
    let mut got = delivered_of_transaction(&*a.logs, &txid).await.unwrap();
    got.sort_by(|x, y| x.delivery_id.cmp(&y.delivery_id));
    assert_eq!(got, vec![first.clone(), second.clone()], "the delivered entries, whole");
    assert!(got.iter().all(|e| e.firing.is_some()), "with the firing a reversal is made from");
}

/// `query` lists newest first, whatever the append order.
pub async fn logs_newest_first(a: &Adapters) {
    let entries: Vec<LogEntry> = (0..6)
        .map(|i| fixtures::log_entry(&fixtures::firing(&format!("d_order_{i}"), fixtures::now()), Outcome::Delivered))
        .collect();
    // Appended out of order, in two calls.
    a.logs.append(&[entries[3].clone(), entries[0].clone(), entries[5].clone()]).await.unwrap();
    a.logs.append(&[entries[1].clone(), entries[4].clone(), entries[2].clone()]).await.unwrap();
    let page = a.logs.query(&filter()).await.unwrap();
    assert_eq!(ids(&page.items), newest_first(&entries.iter().collect::<Vec<_>>()), "newest first");
    assert_eq!(page.next_cursor, None, "everything fit in one page");
    let newest = entries.iter().max_by(|x, y| (x.fired_at, &x.id).cmp(&(y.fired_at, &y.id))).unwrap();
    assert_eq!(page.items[0], *newest, "items are whole entries");
}

/// Each filter alone, and some together, returns exactly the matching entries.
pub async fn logs_every_filter(a: &Adapters) {
    let base = fixtures::now() - Duration::hours(1);
    #[allow(clippy::type_complexity)]
    let specs: [(&str, &str, EventType, Option<&str>, Option<&str>, Option<u16>, Outcome, i64); 6] = [
        ("pb_a", "T1", EventType::Conversion, Some("o1"), Some("p1"), Some(200), Outcome::Delivered, 10),
        ("pb_a", "T2", EventType::Click, Some("o2"), Some("p1"), Some(500), Outcome::Retrying, 20),
        ("pb_b", "T1", EventType::Conversion, Some("o1"), Some("p2"), None, Outcome::Failed, 30),
        ("pb_b", "T3", EventType::Event, Some("o2"), Some("p2"), Some(404), Outcome::Failed, 40),
        ("pb_c", "T1", EventType::Impression, None, None, None, Outcome::Skipped, 50),
        ("pb_a", "T3", EventType::Conversion, Some("o1"), Some("p2"), Some(200), Outcome::Delivered, 55),
    ];
    let entries: Vec<LogEntry> = specs
        .iter()
        .enumerate()
        .map(|(i, (postback, txid, kind, offer, publisher, status, outcome, minutes))| {
            let mut e = fixtures::log_entry(&fixtures::firing(&format!("d_filter_{i}"), base), *outcome);
            e.postback_id = postback.to_string();
            e.transaction_id = txid.to_string();
            e.kind = *kind;
            e.offer_id = offer.map(str::to_string);
            e.publisher_id = publisher.map(str::to_string);
            e.status_code = *status;
            e.fired_at = base + Duration::minutes(*minutes);
            e
        })
        .collect();
    a.logs.append(&entries).await.unwrap();

    let cases: Vec<(&str, LogFilter, Vec<usize>)> = vec![
        ("no filter", filter(), vec![0, 1, 2, 3, 4, 5]),
        ("postback_id", LogFilter { postback_id: Some("pb_a".into()), ..filter() }, vec![0, 1, 5]),
        ("transaction_id", LogFilter { transaction_id: Some("T1".into()), ..filter() }, vec![0, 2, 4]),
        ("type", LogFilter { kind: Some(EventType::Conversion), ..filter() }, vec![0, 2, 5]),
        ("offer_id", LogFilter { offer_id: Some("o2".into()), ..filter() }, vec![1, 3]),
        ("publisher_id", LogFilter { publisher_id: Some("p2".into()), ..filter() }, vec![2, 3, 5]),
        ("status_code", LogFilter { status_code: Some(200), ..filter() }, vec![0, 5]),
        ("outcome", LogFilter { outcome: Some(Outcome::Failed), ..filter() }, vec![2, 3]),
        ("outcome skipped", LogFilter { outcome: Some(Outcome::Skipped), ..filter() }, vec![4]),
        ("from (inclusive)", LogFilter { from: Some(base + Duration::minutes(40)), ..filter() }, vec![3, 4, 5]),
        ("to (inclusive)", LogFilter { to: Some(base + Duration::minutes(20)), ..filter() }, vec![0, 1]),
        (
            "from and to",
            LogFilter { from: Some(base + Duration::minutes(30)), to: Some(base + Duration::minutes(50)), ..filter() },
            vec![2, 3, 4],
        ),
        (
            "postback_id and outcome",
            LogFilter { postback_id: Some("pb_a".into()), outcome: Some(Outcome::Delivered), ..filter() },
            vec![0, 5],
        ),
        (
            "transaction_id and type and publisher_id",
            LogFilter {
                transaction_id: Some("T1".into()),
                kind: Some(EventType::Conversion),
                publisher_id: Some("p2".into()),
                ..filter()
            },
            vec![2],
        ),
        ("no match", LogFilter { postback_id: Some("pb_none".into()), ..filter() }, vec![]),
        ("status_code no match", LogFilter { status_code: Some(201), ..filter() }, vec![]),
    ];
    for (name, f, expected) in cases {
        let page = a.logs.query(&f).await.unwrap();
        let want = newest_first(&expected.iter().map(|&i| &entries[i]).collect::<Vec<_>>());
        assert_eq!(ids(&page.items), want, "filter {name}");
        assert_eq!(page.next_cursor, None, "filter {name}: one page");
    }
}

/// Walk every page of `f` (its limit as page size); returns the pages' ids.
async fn walk_pages(a: &Adapters, f: &LogFilter) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut f = f.clone();
    loop {
        let page = a.logs.query(&f).await.unwrap();
        assert!(page.items.len() <= f.limit, "a page holds at most `limit` entries");
        pages.push(ids(&page.items));
        match page.next_cursor {
            Some(cursor) => {
                assert!(pages.len() < 50, "pagination does not end");
                f.cursor = Some(Cursor::decode(&cursor).expect("next_cursor must be a valid cursor"));
            }
            None => return pages,
        }
    }
}

/// 25 matching entries in pages of 10: 10, 10, 5, newest first, no duplicates or gaps;
/// exactly 20 in pages of 10: the second page says there is no next page.
pub async fn logs_pagination_without_gaps_or_duplicates(a: &Adapters) {
    let entry = |txid: &str, i: usize| {
        let firing = fixtures::firing(&format!("d_{txid}_{i}"), fixtures::now());
        let mut e = fixtures::log_entry(&firing, Outcome::Failed);
        e.transaction_id = txid.to_string();
        e
    };
    // Created interleaved, so the matching entries are not contiguous in id order.
    let (mut paged, mut noise) = (Vec::new(), Vec::new());
    for i in 0..25 {
        paged.push(entry("T_page", i));
        if i % 4 == 0 {
            noise.push(entry("T_noise", i));
        }
    }
    let even: Vec<LogEntry> = (0..20).map(|i| entry("T_even", i)).collect();
    a.logs.append(&noise).await.unwrap();
    a.logs.append(&paged[..12]).await.unwrap();
    a.logs.append(&even).await.unwrap();
    a.logs.append(&paged[12..]).await.unwrap();

    let f = LogFilter { transaction_id: Some("T_page".into()), limit: 10, ..LogFilter::default() };
    let pages = walk_pages(a, &f).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5], "page sizes");
    let walked: Vec<String> = pages.concat();
    assert_eq!(walked, newest_first(&paged.iter().collect::<Vec<_>>()), "all pages, in order, no gap or duplicate");
    assert_eq!(walked.iter().collect::<HashSet<_>>().len(), 25, "no duplicates");

    let f = LogFilter { transaction_id: Some("T_even".into()), limit: 10, ..LogFilter::default() };
    let pages = walk_pages(a, &f).await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10], "an exact fit has no empty third page");

    let everything = walk_pages(a, &LogFilter { limit: 8, ..LogFilter::default() }).await.concat();
    let all: Vec<&LogEntry> = paged.iter().chain(&noise).chain(&even).collect();
    assert_eq!(everything, newest_first(&all), "unfiltered pagination covers everything once");
}

/// Newest first by `fired_at`, not by id: an entry's id is minted when its attempt is
/// logged, so the entries of concurrent attempts (a slow request fired before a fast
/// one) have ids in another order than their `fired_at`. Ties (the same `fired_at`) are
/// ordered by id, descending, the same on every page. Every index an adapter may use is
/// exercised: no filter, postback, transaction, time range, and pages cut inside ties.
pub async fn logs_newest_first_by_fired_at(a: &Adapters) {
    let base = fixtures::now() - Duration::minutes(30);
    // Minted in this order, so ids ascend with the index; `fired_at` mostly descends.
    // (minutes after base, postback, transaction)
    let specs: [(i64, &str, &str); 12] = [
        (20, "pb_x", "T_a"),
        (19, "pb_y", "T_a"),
        (18, "pb_x", "T_b"),
        (18, "pb_y", "T_b"),
        (18, "pb_x", "T_a"),
        (15, "pb_y", "T_a"),
        (12, "pb_x", "T_b"),
        (12, "pb_x", "T_a"),
        (12, "pb_y", "T_a"),
        (10, "pb_x", "T_b"),
        (25, "pb_y", "T_b"),
        (5, "pb_x", "T_a"),
    ];
    let entries: Vec<LogEntry> = specs
        .iter()
        .enumerate()
        .map(|(i, (minutes, postback, txid))| {
            let mut e = fixtures::log_entry(&fixtures::firing(&format!("d_fired_{i}"), base), Outcome::Delivered);
            e.postback_id = postback.to_string();
            e.transaction_id = txid.to_string();
            e.fired_at = base + Duration::minutes(*minutes);
            e
        })
        .collect();
    for pair in entries.windows(2) {
        assert!(pair[0].id < pair[1].id, "fixture ids ascend in creation order");
    }
    // Appended in a shuffled order, in two calls.
    let order = [7, 2, 11, 0, 5, 9, 3, 10, 1, 8, 4, 6];
    let (first, second) = order.split_at(5);
    a.logs.append(&first.iter().map(|&i| entries[i].clone()).collect::<Vec<_>>()).await.unwrap();
    a.logs.append(&second.iter().map(|&i| entries[i].clone()).collect::<Vec<_>>()).await.unwrap();

    let at = |minutes: i64| base + Duration::minutes(minutes);
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, LogFilter, Box<dyn Fn(&LogEntry) -> bool + Send + Sync>)> = vec![
        ("no filter", filter(), Box::new(|_| true)),
        (
            "postback_id",
            LogFilter { postback_id: Some("pb_x".into()), ..filter() },
            Box::new(|e| e.postback_id == "pb_x"),
        ),
        (
            "transaction_id",
            LogFilter { transaction_id: Some("T_a".into()), ..filter() },
            Box::new(|e| e.transaction_id == "T_a"),
        ),
        (
            "from and to on ties (inclusive)",
            LogFilter { from: Some(at(12)), to: Some(at(18)), ..filter() },
            Box::new(move |e| e.fired_at >= at(12) && e.fired_at <= at(18)),
        ),
        ("to only", LogFilter { to: Some(at(15)), ..filter() }, Box::new(move |e| e.fired_at <= at(15))),
        (
            "from with postback_id",
            LogFilter { from: Some(at(12)), postback_id: Some("pb_y".into()), ..filter() },
            Box::new(move |e| e.fired_at >= at(12) && e.postback_id == "pb_y"),
        ),
        (
            "to with transaction_id",
            LogFilter { to: Some(at(18)), transaction_id: Some("T_b".into()), ..filter() },
            Box::new(move |e| e.fired_at <= at(18) && e.transaction_id == "T_b"),
        ),
    ];
    for (name, f, keep) in cases {
        let want = newest_first(&entries.iter().filter(|e| keep(e)).collect::<Vec<_>>());
        assert!(!want.is_empty(), "{name}: the case selects something");
        let page = a.logs.query(&f).await.unwrap();
        assert_eq!(ids(&page.items), want, "{name}: newest first by fired_at, ties by id");
        assert_eq!(page.next_cursor, None, "{name}: one page");
        // The same in pages of 1, 2 and 3: cursors cut inside the ties.
        for limit in [1, 2, 3] {
            let pages = walk_pages(a, &LogFilter { limit, ..f.clone() }).await;
            assert_eq!(pages.concat(), want, "{name} in pages of {limit}: the same order, no gap or duplicate");
        }
    }
    let page = a.logs.query(&filter()).await.unwrap();
    let times: Vec<_> = page.items.iter().map(|e| e.fired_at).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "fired_at never increases down the list: {times:?}");
    assert_eq!(page.items[0].id, entries[10].id, "the latest fired comes first, though not the latest id");
}

/// *is*, *is not* and *contains* on many columns, alone, together (AND), with the typed
/// *is* filters (so on the postback and transaction indexes too) and a time range; each
/// exactly the matching entries, newest first, whole and in pages of 1, 3 and 7.
/// *Is not* keeps entries without a value; *contains* is a literal, case-sensitive
/// substring (`%` and `_` are no wildcards).
pub async fn logs_is_not_and_contains(a: &Adapters) {
    let base = fixtures::now() - Duration::hours(2);
    let entries: Vec<LogEntry> = (0..24)
        .map(|i: usize| {
            let outcome = [Outcome::Delivered, Outcome::Failed, Outcome::Retrying, Outcome::Skipped][i % 4];
            let mut e = fixtures::log_entry(&fixtures::firing(&format!("d_pred_{i}"), base), outcome);
            e.postback_id = ["pb_a", "pb_b", "pb_c"][i % 3].into();
            e.postback_name = ["Affise main", "CRM", "affise 100%_off"][i % 3].into();
            e.transaction_id = format!("T{}", i % 5);
            e.event_id = i.is_multiple_of(2).then(|| format!("ev_{i}"));
            e.kind = [EventType::Conversion, EventType::Click, EventType::Event][i % 3];
            e.offer_id = (i % 4 != 3).then(|| format!("o{}", i % 2));
            e.publisher_id = Some(format!("p{}", i % 3));
            e.status_code = [Some(200), Some(500), None, Some(404), Some(201)][i % 5];
            e.url = match i % 4 {
                0 => format!("https://aff.example/pb?c={i}"),
                1 => format!("https://crm.example/x?off=100%25_{i}"),
                2 => format!("https://AFF.example/pb?c={i}"),
                _ => format!("https://track.example/p/{i}"),
            };
            e.error = (i % 3 == 1).then(|| ["connection refused", "timeout after 10s"][i % 2].to_string());
            e.response_body = (i % 5 != 2).then(|| format!("{{\"ok\": {}, \"n\": \"50%_{i}\"}}", i.is_multiple_of(2)));
            e.test = i.is_multiple_of(6);
            // Pairs share a fired_at: ties are cut by id.
            e.fired_at = base + Duration::minutes((i / 2) as i64);
            e
        })
        .collect();
    a.logs.append(&entries[..11]).await.unwrap();
    a.logs.append(&entries[11..]).await.unwrap();

    let p = |column, op, value: &str| LogPredicate::new(column, op, value).unwrap();
    let with = |predicates: Vec<LogPredicate>| LogFilter { predicates, ..filter() };
    use LogColumn as C;
    use LogOp::{Contains, Is, IsNot};
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, LogFilter, Box<dyn Fn(&LogEntry) -> bool + Send + Sync>)> = vec![
        ("url contains", with(vec![p(C::Url, Contains, "aff")]), Box::new(|e| e.url.contains("aff"))),
        ("contains is case-sensitive", with(vec![p(C::Url, Contains, "AFF")]), Box::new(|e| e.url.contains("AFF"))),
        ("% is literal", with(vec![p(C::Url, Contains, "%25_")]), Box::new(|e| e.url.contains("%25_"))),
        (
            "_ is literal",
            with(vec![p(C::ResponseBody, Contains, "%_1")]),
            Box::new(|e| e.response_body.as_deref().is_some_and(|b| b.contains("%_1"))),
        ),
        ("status_code not", with(vec![p(C::StatusCode, IsNot, "200")]), Box::new(|e| e.status_code != Some(200))),
        ("outcome not", with(vec![p(C::Outcome, IsNot, "failed")]), Box::new(|e| e.outcome != Outcome::Failed)),
        ("type not", with(vec![p(C::Type, IsNot, "click")]), Box::new(|e| e.kind != EventType::Click)),
        ("test is", with(vec![p(C::Test, Is, "true")]), Box::new(|e| e.test)),
        ("test not", with(vec![p(C::Test, IsNot, "true")]), Box::new(|e| !e.test)),
        ("postback_name is", with(vec![p(C::PostbackName, Is, "CRM")]), Box::new(|e| e.postback_name == "CRM")),
        ("delivery_id is", with(vec![p(C::DeliveryId, Is, "d_pred_7")]), Box::new(|e| e.delivery_id == "d_pred_7")),
        (
            "delivery_id contains",
            with(vec![p(C::DeliveryId, Contains, "pred_1")]),
            Box::new(|e| e.delivery_id.contains("pred_1")),
        ),
        (
            "on the postback index: delivery_id not",
            LogFilter {
                postback_id: Some("pb_b".into()),
                predicates: vec![p(C::DeliveryId, IsNot, "d_pred_4")],
                ..filter()
            },
            Box::new(|e| e.postback_id == "pb_b" && e.delivery_id != "d_pred_4"),
        ),
        (
            "event_id not (keeps entries without one)",
            with(vec![p(C::EventId, IsNot, "ev_4")]),
            Box::new(|e| e.event_id.as_deref() != Some("ev_4")),
        ),
        (
            "offer_id not (keeps entries without one)",
            with(vec![p(C::OfferId, IsNot, "o1")]),
            Box::new(|e| e.offer_id.as_deref() != Some("o1")),
        ),
        (
            "error contains (entries without one never match)",
            with(vec![p(C::Error, Contains, "refused")]),
            Box::new(|e| e.error.as_deref().is_some_and(|x| x.contains("refused"))),
        ),
        (
            "error is",
            with(vec![p(C::Error, Is, "timeout after 10s")]),
            Box::new(|e| e.error.as_deref() == Some("timeout after 10s")),
        ),
        (
            "postback_id not and transaction_id contains",
            with(vec![p(C::PostbackId, IsNot, "pb_a"), p(C::TransactionId, Contains, "T1")]),
            Box::new(|e| e.postback_id != "pb_a" && e.transaction_id.contains("T1")),
        ),
        (
            "on the postback index: contains and not together",
            LogFilter {
                postback_id: Some("pb_c".into()),
                predicates: vec![p(C::PostbackName, Contains, "100%"), p(C::Outcome, IsNot, "skipped")],
                ..filter()
            },
            Box::new(|e| e.postback_id == "pb_c" && e.postback_name.contains("100%") && e.outcome != Outcome::Skipped),
        ),
        (
            "on the transaction index, with a range",
            LogFilter {
                transaction_id: Some("T3".into()),
                from: Some(base + Duration::minutes(2)),
                predicates: vec![p(C::ResponseBody, Contains, "true")],
                ..filter()
            },
            Box::new(move |e| {
                e.transaction_id == "T3"
                    && e.fired_at >= base + Duration::minutes(2)
                    && e.response_body.as_deref().is_some_and(|b| b.contains("true"))
            }),
        ),
        (
            "typed is with predicates on the same column",
            LogFilter {
                status_code: Some(500),
                predicates: vec![p(C::Url, Contains, "crm"), p(C::PublisherId, IsNot, "p2")],
                ..filter()
            },
            Box::new(|e| {
                e.status_code == Some(500) && e.url.contains("crm") && e.publisher_id.as_deref() != Some("p2")
            }),
        ),
    ];
    for (name, f, keep) in cases {
        let want = newest_first(&entries.iter().filter(|e| keep(e)).collect::<Vec<_>>());
        assert!(
            !want.is_empty() && want.len() < entries.len(),
            "{name}: the case selects some, not all ({})",
            want.len()
        );
        let page = a.logs.query(&f).await.unwrap();
        assert_eq!(ids(&page.items), want, "{name}");
        for limit in [1, 3, 7] {
            let pages = walk_pages(a, &LogFilter { limit, ..f.clone() }).await;
            assert_eq!(pages.concat(), want, "{name} in pages of {limit}: no gap or duplicate");
        }
    }
    let none = with(vec![p(C::Url, Contains, "nowhere.example")]);
    assert!(a.logs.query(&none).await.unwrap().items.is_empty(), "a contains that matches nothing");
    let contradiction = with(vec![p(C::Outcome, Is, "failed"), p(C::Outcome, IsNot, "failed")]);
    assert!(a.logs.query(&contradiction).await.unwrap().items.is_empty(), "is and is not of one value: nothing");
}

/// `record_delivered` marks and logs once; the second call writes nothing.
pub async fn logs_record_delivered_once(a: &Adapters) {
    let firing = fixtures::firing("d_once", fixtures::now());
    let first = fixtures::log_entry(&firing, Outcome::Delivered);
    assert!(!a.logs.is_delivered("d_once").await.unwrap(), "not delivered yet");
    assert!(a.logs.record_delivered(&first).await.unwrap(), "first delivery → true");
    assert!(a.logs.is_delivered("d_once").await.unwrap(), "delivered now");
    assert_eq!(a.logs.get(&first.id).await.unwrap(), Some(first.clone()), "its entry was written");

    let second = fixtures::log_entry(&firing, Outcome::Delivered);
    assert!(!a.logs.record_delivered(&second).await.unwrap(), "second delivery of the same id → false");
    assert_eq!(a.logs.get(&second.id).await.unwrap(), None, "and its entry was not written");
    let f = LogFilter { transaction_id: Some(first.transaction_id.clone()), ..filter() };
    assert_eq!(ids(&a.logs.query(&f).await.unwrap().items), [first.id], "one entry for the delivery");
    assert!(!a.logs.is_delivered("d_other").await.unwrap(), "other delivery ids are not delivered");
}

/// As `logs_record_delivered_once`, with the delivered entry under the id the store asks
/// for (`delivered_entry_id`, as the dispatcher does; DynamoDB: the entry is its own
/// marker, one conditional put): found by id and in listings once, whole; a second
/// delivery under the same id writes nothing; replay sees it delivered; stats count it;
/// and a plain entry of the delivery id, appended, does not make it delivered.
pub async fn logs_record_delivered_under_the_stores_id(a: &Adapters) {
    let delivery = format!("d_named_{}", uuid::Uuid::new_v4().simple());
    let mut firing = fixtures::firing(&delivery, fixtures::now());
    firing.postback_id = format!("pb_named_{}", uuid::Uuid::new_v4().simple());
    let named = |mut e: LogEntry| {
        if let Some(id) = a.logs.delivered_entry_id(&e.delivery_id) {
            e.id = id;
        }
        e
    };
    let mut retrying = fixtures::log_entry(&firing, Outcome::Retrying);
    let first = named(fixtures::log_entry(&firing, Outcome::Delivered));
    retrying.fired_at = first.fired_at - Duration::milliseconds(1);
    a.logs.append(std::slice::from_ref(&retrying)).await.unwrap();
    assert!(!a.logs.is_delivered(&delivery).await.unwrap(), "a retrying entry is not a delivered marker");
    assert!(a.logs.record_delivered(&first).await.unwrap(), "first delivery → true");
    assert!(a.logs.is_delivered(&delivery).await.unwrap(), "delivered now");
    assert_eq!(a.logs.get(&first.id).await.unwrap(), Some(first.clone()), "whole, with its firing");

    let mut second = named(fixtures::log_entry(&firing, Outcome::Delivered));
    second.response_body = Some("the second copy".into());
    assert!(!a.logs.record_delivered(&second).await.unwrap(), "second delivery of the same id → false");
    assert_eq!(a.logs.get(&first.id).await.unwrap(), Some(first.clone()), "the first stays as it was");
    let by_postback = LogFilter { postback_id: Some(firing.postback_id.clone()), ..filter() };
    let listed = a.logs.query(&by_postback).await.unwrap().items;
    assert_eq!(ids(&listed), ids(&[first.clone(), retrying.clone()]), "newest first, the delivered entry once");
    let states = a.logs.replay_states(std::slice::from_ref(&delivery)).await.unwrap();
    assert!(states.get(&delivery).is_some_and(|s| s.delivered), "{states:?}");
    // Summed over the two entries' hours (they may straddle one).
    let mut hours =
        vec![crate::domain::stats::hour_of(retrying.fired_at), crate::domain::stats::hour_of(first.fired_at)];
    hours.dedup();
    let stats = a.logs.hourly_stats(&firing.postback_id, &hours).await.unwrap();
    let counts = stats.values().fold(crate::domain::stats::HourCounts::default(), |mut sum, c| {
        sum.add(c);
        sum
    });
    assert_eq!((counts.delivered, counts.retrying, counts.attempts), (1, 1, 2), "{stats:?}");
}

/// `hourly_stats` counts a postback's entries per UTC hour of `fired_at`, whether
/// appended or recorded delivered; test entries and other postbacks are not counted.
pub async fn logs_hourly_stats(a: &Adapters) {
    use crate::domain::stats::{hour_of, HourCounts};
    let postback = format!("pb_stats_{}", uuid::Uuid::new_v4().simple());
    let current = hour_of(a.now());
    let previous = current - Duration::hours(1);
    let entry = |n: u32, outcome: Outcome, at: chrono::DateTime<chrono::Utc>, duration_ms: u64| {
        let mut firing = fixtures::firing(&format!("d_stats_{n}_{postback}"), at);
        firing.postback_id = postback.clone();
        let mut e = fixtures::log_entry(&firing, outcome);
        e.fired_at = at;
        e.duration_ms = duration_ms;
        e
    };
    let mut test = entry(1, Outcome::Delivered, current, 999);
    test.test = true;
    let mut other = entry(2, Outcome::Delivered, current, 999);
    other.postback_id = "pb_other".into();
    a.logs
        .append(&[
            entry(3, Outcome::Failed, current + Duration::seconds(1), 30),
            entry(4, Outcome::Retrying, current + Duration::seconds(2), 50),
            entry(5, Outcome::Skipped, current + Duration::seconds(3), 0),
            entry(6, Outcome::Failed, previous + Duration::minutes(59), 7),
            test,
            other,
        ])
        .await
        .unwrap();
    assert!(a.logs.record_delivered(&entry(7, Outcome::Delivered, current + Duration::seconds(4), 10)).await.unwrap());

    let older = previous - Duration::hours(1);
    let stats = a.logs.hourly_stats(&postback, &[current, previous, older]).await.unwrap();
    let this_hour = HourCounts { delivered: 1, failed: 1, retrying: 1, skipped: 1, duration_ms_sum: 90, attempts: 3 };
    assert_eq!(stats.get(&current), Some(&this_hour), "the current hour");
    let last_hour = HourCounts { failed: 1, duration_ms_sum: 7, attempts: 1, ..HourCounts::default() };
    assert_eq!(stats.get(&previous), Some(&last_hour), "the hour before");
    assert_eq!(stats.get(&older).copied().unwrap_or_default(), HourCounts::default(), "an empty hour");
    assert_eq!(stats.len(), 2, "only the asked hours with entries: {stats:?}");
    let only_previous = a.logs.hourly_stats(&postback, &[previous]).await.unwrap();
    assert_eq!(only_previous.keys().collect::<Vec<_>>(), [&previous], "only the asked hours");
    assert!(a.logs.hourly_stats("pb_none", &[current]).await.unwrap().is_empty());
    assert!(a.logs.get(&format!("stats#{postback}#x")).await.unwrap().is_none());
}

/// A failed entry of delivery `delivery_id` for postback `postback_id`, fired `ms`
/// milliseconds after `base`.
fn failed_at(postback_id: &str, delivery_id: &str, base: chrono::DateTime<chrono::Utc>, ms: i64) -> LogEntry {
    let mut firing = fixtures::firing(delivery_id, base);
    firing.postback_id = postback_id.to_string();
    let mut e = fixtures::log_entry(&firing, Outcome::Failed);
    e.fired_at = base + Duration::milliseconds(ms);
    e
}

fn for_postback(postback_id: &str) -> LogFilter {
    LogFilter { postback_id: Some(postback_id.into()), ..LogFilter::default() }
}

/// The replay selection takes each delivery id's newest failed entry only: not
/// retrying, skipped or test entries, not a delivery id delivered since, not one already
/// replayed (up to the entry marked), but again one that failed after its replay.
pub async fn logs_failed_firings_latest_failed_per_delivery(a: &Adapters) {
    let pb = "pb_replay_latest";
    let base = fixtures::now() - Duration::minutes(10);
    let older_twin = failed_at(pb, "d_twice", base, 1);
    let newer_twin = failed_at(pb, "d_twice", base, 2);
    let mut retrying = failed_at(pb, "d_retrying", base, 3);
    retrying.outcome = Outcome::Retrying;
    let mut skipped = failed_at(pb, "d_skipped", base, 4);
    skipped.outcome = Outcome::Skipped;
    let mut test = failed_at(pb, "d_test", base, 5);
    test.test = true;
    let then_delivered = failed_at(pb, "d_delivered", base, 6);
    let mut delivered = failed_at(pb, "d_delivered", base, 7);
    delivered.outcome = Outcome::Delivered;
    let replayed = failed_at(pb, "d_replayed", base, 8);
    let before_replay = failed_at(pb, "d_again", base, 9);
    let plain = failed_at(pb, "d_plain", base, 10);
    a.logs
        .append(&[
            older_twin.clone(),
            newer_twin.clone(),
            retrying,
            skipped,
            test,
            then_delivered,
            replayed.clone(),
            before_replay.clone(),
            plain.clone(),
        ])
        .await
        .unwrap();
    assert!(a.logs.record_delivered(&delivered).await.unwrap());
    a.logs.mark_replayed(&[replayed.clone(), before_replay.clone()]).await.unwrap();
    // Marking again (a second replay of the same entries) changes nothing.
    a.logs.mark_replayed(std::slice::from_ref(&replayed)).await.unwrap();
    let after_replay = failed_at(pb, "d_again", base, 11);
    a.logs.append(std::slice::from_ref(&after_replay)).await.unwrap();

    let got = failed_firings(a.logs.as_ref(), &for_postback(pb), 100).await.unwrap();
    assert_eq!(
        ids(&got.entries),
        newest_first(&[&newer_twin, &plain, &after_replay]),
        "the newest failed entry of each delivery id not delivered or replayed since"
    );
    assert_eq!(got.next_cursor, None, "all of it in one selection");
    assert_eq!(got.entries[0], after_replay, "entries come back whole (with the firing)");

    let states = a.logs.replay_states(&["d_delivered".into(), "d_replayed".into(), "d_plain".into()]).await.unwrap();
    assert!(states.get("d_delivered").is_some_and(|s| s.delivered), "{states:?}");
    let mark = states.get("d_replayed").and_then(|s| s.replayed.clone());
    assert_eq!(mark, Some(Cursor::after(&replayed)), "the replayed entry's position");
    assert!(states.get("d_plain").is_none_or(|s| *s == crate::ports::ReplayState::default()));

    // Marking what a selection returned moves the mark on (a selection returns only
    // entries newer than the mark, so that is all a replay marks).
    let got = failed_firings(a.logs.as_ref(), &for_postback(pb), 100).await.unwrap();
    a.logs.mark_replayed(&got.entries).await.unwrap();
    let got = failed_firings(a.logs.as_ref(), &for_postback(pb), 100).await.unwrap();
    assert_eq!(ids(&got.entries), Vec::<String>::new(), "everything selected was marked");
}

/// The listing's filters narrow the selection: postback, transaction, time range, *is
/// not* and *contains* predicates.
pub async fn logs_failed_firings_filters_apply(a: &Adapters) {
    let (pb, other) = ("pb_replay_filters", "pb_replay_filters_other");
    let base = fixtures::now() - Duration::minutes(10);
    let mut entries: Vec<LogEntry> = (0..6).map(|i| failed_at(pb, &format!("d_rf_{i}"), base, i * 1000)).collect();
    entries[1].status_code = Some(500);
    entries[2].url = "https://crm.example/hook".into();
    entries[3].transaction_id = "T_rf".into();
    let elsewhere = failed_at(other, "d_rf_other", base, 2500);
    a.logs.append(&entries).await.unwrap();
    a.logs.append(std::slice::from_ref(&elsewhere)).await.unwrap();
    let pick = |is: &[usize]| newest_first(&is.iter().map(|&i| &entries[i]).collect::<Vec<_>>());
    let predicate = |c, op, v| LogPredicate::new(c, op, v).unwrap();
    let cases: Vec<(&str, LogFilter, Vec<String>)> = vec![
        ("postback", for_postback(pb), pick(&[0, 1, 2, 3, 4, 5])),
        (
            "from and to",
            LogFilter {
                from: Some(base + Duration::milliseconds(1000)),
                to: Some(base + Duration::milliseconds(3000)),
                ..for_postback(pb)
            },
            pick(&[1, 2, 3]),
        ),
        ("transaction", LogFilter { transaction_id: Some("T_rf".into()), ..LogFilter::default() }, pick(&[3])),
        ("status_code", LogFilter { status_code: Some(500), ..for_postback(pb) }, pick(&[1])),
        (
            "status_code.not",
            LogFilter { predicates: vec![predicate(LogColumn::StatusCode, LogOp::IsNot, "500")], ..for_postback(pb) },
            pick(&[0, 2, 3, 4, 5]),
        ),
        (
            "url.contains",
            LogFilter {
                predicates: vec![predicate(LogColumn::Url, LogOp::Contains, "crm.example")],
                ..for_postback(pb)
            },
            pick(&[2]),
        ),
        (
            "a time range across postbacks",
            LogFilter {
                from: Some(base + Duration::milliseconds(2000)),
                to: Some(base + Duration::milliseconds(3000)),
                predicates: vec![predicate(LogColumn::PostbackId, LogOp::Contains, "pb_replay_filters")],
                ..LogFilter::default()
            },
            newest_first(&[&entries[2], &elsewhere, &entries[3]]),
        ),
    ];
    for (name, f, want) in cases {
        let got = failed_firings(a.logs.as_ref(), &f, 100).await.unwrap();
        assert_eq!(ids(&got.entries), want, "filter {name}");
    }
}

/// Selections of at most `limit`, resumed by their cursor, cover every failed firing
/// once, newest first, also when the ones selected are marked replayed in between (as
/// the replay does).
pub async fn logs_failed_firings_paging_by_cursor(a: &Adapters) {
    let pb = "pb_replay_paging";
    let base = fixtures::now() - Duration::minutes(10);
    let entries: Vec<LogEntry> = (0..23).map(|i| failed_at(pb, &format!("d_rp_{i}"), base, i)).collect();
    a.logs.append(&entries).await.unwrap();
    let all = newest_first(&entries.iter().collect::<Vec<_>>());
    for mark in [false, true] {
        let mut f = for_postback(pb);
        let mut walked: Vec<String> = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let got = failed_firings(a.logs.as_ref(), &f, 10).await.unwrap();
            sizes.push(got.entries.len());
            walked.extend(ids(&got.entries));
            if mark {
                a.logs.mark_replayed(&got.entries).await.unwrap();
            }
            match got.next_cursor {
                Some(cursor) => {
                    assert!(sizes.len() < 10, "the selection does not end");
                    f.cursor = Some(cursor);
                }
                None => break,
            }
        }
        assert_eq!(walked, all, "every failed firing once, in order (marking: {mark})");
        assert_eq!(sizes, [10, 10, 3], "selections of at most the limit (marking: {mark})");
    }
    let after = failed_firings(a.logs.as_ref(), &for_postback(pb), 10).await.unwrap();
    assert!(after.entries.is_empty(), "all replayed: nothing left to select");

    // An exact fit has no next selection; one short of it has.
    let pb = "pb_replay_fit";
    let entries: Vec<LogEntry> = (0..5).map(|i| failed_at(pb, &format!("d_fit_{i}"), base, i)).collect();
    a.logs.append(&entries).await.unwrap();
    let exact = failed_firings(a.logs.as_ref(), &for_postback(pb), 5).await.unwrap();
    assert_eq!((exact.entries.len(), exact.next_cursor), (5, None), "exact fit");
    let short = failed_firings(a.logs.as_ref(), &for_postback(pb), 4).await.unwrap();
    assert_eq!(short.entries.len(), 4);
    assert_eq!(short.next_cursor, Some(Cursor::after(&short.entries[3])), "one more follows");
}
