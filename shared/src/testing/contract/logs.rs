use std::collections::HashSet;

use chrono::Duration;

use crate::domain::event::EventType;
use crate::domain::log::{Cursor, LogEntry, LogFilter, Outcome};
use crate::testing::{fixtures, Adapters};

fn ids(entries: &[LogEntry]) -> Vec<String> {
    entries.iter().map(|e| e.id.clone()).collect()
}

/// The ids of `entries`, newest (highest id) first: the order `query` must return.
fn newest_first(entries: &[&LogEntry]) -> Vec<String> {
    let mut ids: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
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

/// `query` lists newest first (by id), whatever the append order.
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
    assert_eq!(page.items[0], *entries.iter().max_by(|x, y| x.id.cmp(&y.id)).unwrap(), "items are whole entries");
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

/// Newest first by `fired_at`, entries fired at the same time by id (descending), even
/// where ids and fire times disagree (an entry written late for an early attempt); the
/// cursor walks the same order across ties without a gap or a duplicate.
pub async fn logs_newest_first_by_fired_at_then_id(a: &Adapters) {
    let base = fixtures::now() - Duration::hours(1);
    // Ids ascending in creation order; fire times out of that order, with ties.
    let seconds = [30, 10, 30, 20, 10, 0, 30];
    let entries: Vec<LogEntry> = seconds
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut e = fixtures::log_entry(&fixtures::firing(&format!("d_fired_{i}"), base), Outcome::Delivered);
            e.transaction_id = "T_fired".into();
            e.fired_at = base + Duration::seconds(*s);
            e
        })
        .collect();
    a.logs.append(&entries).await.unwrap();
    let mut expected: Vec<&LogEntry> = entries.iter().collect();
    expected.sort_by(|x, y| (y.fired_at, &y.id).cmp(&(x.fired_at, &x.id)));
    let expected: Vec<String> = expected.into_iter().map(|e| e.id.clone()).collect();
    assert_eq!(entries.iter().filter(|e| e.fired_at == base + Duration::seconds(30)).count(), 3, "a three-way tie");

    let page = a.logs.query(&filter()).await.unwrap();
    assert_eq!(ids(&page.items), expected, "fired_at descending, then id descending");
    for limit in [1, 2, 3] {
        let f = LogFilter { transaction_id: Some("T_fired".into()), limit, ..LogFilter::default() };
        let walked: Vec<String> = walk_pages(a, &f).await.concat();
        assert_eq!(walked, expected, "pages of {limit}: the same order, no gap or duplicate across ties");
    }
}
