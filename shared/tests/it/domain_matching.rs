//! The postback index: unit cases, and the property that it answers exactly what a
//! naive linear filter over every postback answers.

use crate::matching_oracle;

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use postback::domain::condition::Condition;
use postback::domain::event::{Event, EventType, Status};
use postback::domain::matching::PostbackIndex;
use postback::domain::postback::{CompiledPostback, FireOn, Postback, Scope};
use postback::domain::template::{Segment, Template};
use proptest::prelude::*;
use serde_json::json;

fn postback(id: &str, kind: EventType) -> Postback {
    matching_oracle::plain_postback(id, kind)
}

/// Compiled by hand (a literal URL) so these tests do not need the template parser.
fn compiled(p: Postback) -> CompiledPostback {
    let url = Template { segments: vec![Segment::Literal(p.url.clone())] };
    CompiledPostback { postback: p, url, headers: Vec::new(), body: None, signing: None, reversal: None }
}

fn index(postbacks: Vec<Postback>) -> PostbackIndex {
    PostbackIndex::from_compiled(postbacks.into_iter().map(compiled))
}

fn event(kind: EventType) -> Event {
    Event {
        offer_id: Some("o1".into()),
        publisher_id: Some("p1".into()),
        status: kind.has_status().then_some(Status::Approved),
        event_name: (kind == EventType::Event).then(|| "deposit".to_string()),
        ..Event::bare(kind, "T1", Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap())
    }
}

fn ids(found: &[Arc<CompiledPostback>]) -> Vec<&str> {
    found.iter().map(|c| c.postback.id.as_str()).collect()
}

fn only(ids: &[&str]) -> Scope {
    Scope::Only(ids.iter().map(|s| s.to_string()).collect())
}

#[test]
fn matches_by_type_offer_and_publisher_in_id_order() {
    let mut by_offer = postback("b", EventType::Conversion);
    by_offer.offers = only(&["o1", "o2"]);
    let mut other_offer = postback("c", EventType::Conversion);
    other_offer.offers = only(&["o2"]);
    let mut other_publisher = postback("d", EventType::Conversion);
    other_publisher.publishers = only(&["p2"]);
    let mut right_publisher = postback("a", EventType::Conversion);
    right_publisher.publishers = only(&["p1"]);
    let click = postback("e", EventType::Click);
    let all_offers = postback("f", EventType::Conversion);
    let idx = index(vec![all_offers, click, other_publisher, other_offer, by_offer, right_publisher]);

    assert_eq!(ids(&idx.matching(&event(EventType::Conversion))), ["a", "b", "f"]);
    assert_eq!(ids(&idx.matching(&event(EventType::Click))), ["e"]);
    assert!(idx.matching(&event(EventType::Impression)).is_empty());

    let mut no_offer = event(EventType::Conversion);
    no_offer.offer_id = None;
    assert_eq!(ids(&idx.matching(&no_offer)), ["a", "f"], "only all-offer postbacks match an event with no offer");
    let mut no_publisher = event(EventType::Conversion);
    no_publisher.publisher_id = None;
    assert_eq!(ids(&idx.matching(&no_publisher)), ["b", "f"]);
}

#[test]
fn disabled_postbacks_do_not_match_but_can_be_read() {
    let mut off = postback("off", EventType::Conversion);
    off.enabled = false;
    let idx = index(vec![off, postback("on", EventType::Conversion)]);
    assert_eq!(ids(&idx.matching(&event(EventType::Conversion))), ["on"]);
    assert_eq!(idx.get("off").map(|c| c.postback.enabled), Some(false));
    assert!(idx.get("missing").is_none());
    assert_eq!(idx.len(), 2);
    assert!(!idx.is_empty());
    assert!(PostbackIndex::default().is_empty());
}

#[test]
fn an_offer_listed_twice_matches_once() {
    let mut p = postback("x", EventType::Conversion);
    p.offers = only(&["o1", "o1", "o3"]);
    let idx = index(vec![p]);
    assert_eq!(ids(&idx.matching(&event(EventType::Conversion))), ["x"]);
}

#[test]
fn status_and_rejection_reasons() {
    let approved = postback("1-approved", EventType::Conversion);
    let mut pending = postback("2-pending", EventType::Conversion);
    pending.fire_on = FireOn::Pending;
    let mut rejected_fraud = postback("3-rejected-fraud", EventType::Conversion);
    rejected_fraud.fire_on = FireOn::Rejected;
    rejected_fraud.rejection_reasons = Some(vec!["fraud".into()]);
    let mut all = postback("4-all", EventType::Conversion);
    all.fire_on = FireOn::All;
    let mut all_empty_reasons = postback("5-all-empty-reasons", EventType::Conversion);
    all_empty_reasons.fire_on = FireOn::All;
    all_empty_reasons.rejection_reasons = Some(vec![]);
    let idx = index(vec![approved, pending, rejected_fraud, all, all_empty_reasons]);

    let mut e = event(EventType::Conversion);
    e.status = None; // defaults to approved
    assert_eq!(ids(&idx.matching(&e)), ["1-approved", "4-all", "5-all-empty-reasons"]);
    e.status = Some(Status::Pending);
    assert_eq!(ids(&idx.matching(&e)), ["2-pending", "4-all", "5-all-empty-reasons"]);
    e.status = Some(Status::Rejected);
    e.rejection_reason = Some("fraud".into());
    assert_eq!(ids(&idx.matching(&e)), ["3-rejected-fraud", "4-all", "5-all-empty-reasons"]);
    e.rejection_reason = Some("duplicate".into());
    assert_eq!(ids(&idx.matching(&e)), ["4-all", "5-all-empty-reasons"]);
    e.rejection_reason = None;
    assert_eq!(ids(&idx.matching(&e)), ["4-all", "5-all-empty-reasons"]);
}

#[test]
fn event_names() {
    let any = postback("any", EventType::Event);
    let mut empty = postback("empty", EventType::Event);
    empty.event_names = Some(vec![]);
    let mut deposit = postback("deposit", EventType::Event);
    deposit.event_names = Some(vec!["deposit".into(), "ftd".into()]);
    let mut upsell = postback("upsell", EventType::Event);
    upsell.event_names = Some(vec!["upsell".into()]);
    let idx = index(vec![any, empty, deposit, upsell]);

    let mut e = event(EventType::Event);
    assert_eq!(ids(&idx.matching(&e)), ["any", "deposit", "empty"]);
    e.event_name = Some("upsell".into());
    assert_eq!(ids(&idx.matching(&e)), ["any", "empty", "upsell"]);
    e.event_name = None;
    assert_eq!(ids(&idx.matching(&e)), ["any", "empty"]);
}

#[test]
fn later_duplicate_id_wins() {
    let first = postback("same", EventType::Click);
    let second = postback("same", EventType::Conversion);
    let idx = index(vec![first, second]);
    assert_eq!(idx.len(), 1);
    assert!(idx.matching(&event(EventType::Click)).is_empty());
    assert_eq!(ids(&idx.matching(&event(EventType::Conversion))), ["same"]);
}

/// `build` parses templates; a postback whose template does not compile is left out.
#[test]
fn build_compiles_and_skips_postbacks_that_do_not_compile() {
    let good = postback("good", EventType::Conversion);
    let mut bad = postback("bad", EventType::Conversion);
    bad.url = "https://receiver.example/?x={NoSuchMacro}".into();
    let idx = PostbackIndex::build(vec![good, bad]);
    assert_eq!(idx.len(), 1);
    assert!(idx.get("bad").is_none());
    assert_eq!(ids(&idx.matching(&event(EventType::Conversion))), ["good"]);
}

// ---- property: the index equals a naive linear filter ----

const OFFERS: &[&str] = &["o1", "o2", "o3", "o4", "o5"];
const PUBLISHERS: &[&str] = &["p1", "p2", "p3"];
const REASONS: &[&str] = &["fraud", "duplicate", "test"];
const NAMES: &[&str] = &["deposit", "upsell", "ftd"];

fn kind() -> impl Strategy<Value = EventType> {
    prop::sample::select(EventType::ALL.to_vec())
}

fn pick_list(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    // Repeats and empty lists included on purpose.
    prop::collection::vec(prop::sample::select(pool).prop_map(String::from), 0..4)
}

fn scope(pool: &'static [&'static str]) -> impl Strategy<Value = Scope> {
    prop_oneof![Just(Scope::All), pick_list(pool).prop_map(Scope::Only)]
}

fn fire_on() -> impl Strategy<Value = FireOn> {
    prop::sample::select(vec![FireOn::Approved, FireOn::Pending, FireOn::Rejected, FireOn::All])
}

fn status() -> impl Strategy<Value = Status> {
    prop::sample::select(vec![Status::Approved, Status::Pending, Status::Rejected])
}

/// Conditions over a few fields, with decimals written several ways (`12.5`, `12.50`,
/// `-0`) and texts that are and are not decimals.
fn condition_strategy() -> impl Strategy<Value = Condition> {
    const FIELDS: &[&str] = &["payout", "revenue", "country", "sub3", "params.goal", "currency", "unix_timestamp"];
    const TEXTS: &[&str] = &["DE", "US", "12.5", "abc", "ftd", "1", "E"];
    const DECIMALS: &[&str] = &["12.5", "12.50", "012.500", "-0", "0", "-3.25", "100", "99.999", "1714564800"];
    let text = prop::sample::select(TEXTS).prop_map(|t| json!(t));
    let list = prop::collection::vec(prop::sample::select(TEXTS), 1..4).prop_map(|l| json!(l));
    let decimal =
        prop_oneof![prop::sample::select(DECIMALS).prop_map(|d| json!(d)), (-20i32..20).prop_map(|n| json!(n))];
    let op_value = prop_oneof![
        (prop::sample::select(vec!["eq", "ne", "contains"]), text).prop_map(|(op, v)| (op, Some(v))),
        (prop::sample::select(vec!["in", "not_in"]), list).prop_map(|(op, v)| (op, Some(v))),
        (prop::sample::select(vec!["gt", "gte", "lt", "lte"]), decimal).prop_map(|(op, v)| (op, Some(v))),
        prop::sample::select(vec!["exists", "not_exists"]).prop_map(|op| (op, None)),
    ];
    (prop::sample::select(FIELDS), op_value)
        .prop_map(|(field, (op, value))| Condition::new(field, op, value.as_ref()).unwrap())
}

fn postback_strategy() -> impl Strategy<Value = Postback> {
    (
        prop::collection::vec(condition_strategy(), 0..3),
        (
            kind(),
            any::<bool>(),
            scope(OFFERS),
            scope(PUBLISHERS),
            fire_on(),
            prop::option::of(pick_list(REASONS)),
            prop::option::of(pick_list(NAMES)),
        ),
    )
        .prop_map(|(conditions, (kind, enabled, offers, publishers, fire_on, reasons, names))| {
            let mut p = postback("", kind);
            p.conditions = conditions;
            p.enabled = enabled || kind == EventType::Conversion; // mostly enabled
            p.offers = offers;
            p.publishers = publishers;
            p.fire_on = fire_on;
            p.rejection_reasons = reasons;
            p.event_names = names;
            p
        })
}

fn postbacks_strategy() -> impl Strategy<Value = Vec<Postback>> {
    prop::collection::vec((postback_strategy(), 0u32..1000), 0..40).prop_map(|items| {
        // Unique ids in random order, so the index must sort.
        items
            .into_iter()
            .enumerate()
            .map(|(i, (mut p, salt))| {
                p.id = format!("{salt:03}-{i}");
                p
            })
            .collect()
    })
}

fn event_strategy() -> impl Strategy<Value = Event> {
    (
        kind(),
        prop::option::of(prop::sample::select(vec!["o1", "o2", "o3", "o4", "o5", "o-unknown"])),
        prop::option::of(prop::sample::select(vec!["p1", "p2", "p3", "p-unknown"])),
        prop::option::of(status()),
        prop::option::of(prop::sample::select(vec!["fraud", "duplicate", "test", "other"])),
        prop::option::of(prop::sample::select(vec!["deposit", "upsell", "ftd", "other"])),
        event_values_strategy(),
    )
        .prop_map(|(kind, offer, publisher, status, reason, name, values)| {
            let mut e = event(kind);
            (e.payout, e.revenue, e.country, e.subs[2], e.currency) = values.0;
            if let Some(goal) = values.1 {
                e.params.insert("goal".into(), goal);
            }
            e.offer_id = offer.map(String::from);
            e.publisher_id = publisher.map(String::from);
            e.status = status;
            e.rejection_reason = reason.map(String::from);
            e.event_name = name.map(String::from);
            e
        })
}

type EventValues = ((Option<String>, Option<String>, Option<String>, Option<String>, Option<String>), Option<String>);

/// The values conditions test: decimals written several ways, and non-decimals.
fn event_values_strategy() -> impl Strategy<Value = EventValues> {
    const VALUES: &[&str] = &["12.5", "12.50", "0", "-0.0", "-3.25", "100", "99.999", "abc", "DE", "US", "1"];
    let value = || prop::option::of(prop::sample::select(VALUES).prop_map(String::from));
    ((value(), value(), value(), value(), value()), value())
}

/// The specification, written as plainly as possible.
fn naive_matching(postbacks: &[Postback], e: &Event) -> Vec<String> {
    let mut out: Vec<String> =
        postbacks.iter().filter(|p| matching_oracle::matches(p, e)).map(|p| p.id.clone()).collect();
    out.sort();
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn index_equals_naive_linear_filter(
        postbacks in postbacks_strategy(),
        events in prop::collection::vec(event_strategy(), 1..8),
    ) {
        let idx = index(postbacks.clone());
        prop_assert_eq!(idx.len(), postbacks.len());
        for e in &events {
            let found: Vec<String> = idx.matching(e).iter().map(|c| c.postback.id.clone()).collect();
            prop_assert_eq!(found, naive_matching(&postbacks, e), "event {:?}", e);
        }
    }
}

#[test]
fn conditions_must_all_hold() {
    let cond = |field: &str, op: &str, value: serde_json::Value| Condition::new(field, op, Some(&value)).unwrap();
    let mut big = postback("big", EventType::Conversion);
    big.conditions = vec![cond("payout", "gte", json!("12.5")), cond("country", "in", json!(["DE", "AT"]))];
    let mut goal = postback("goal", EventType::Conversion);
    goal.conditions = vec![cond("params.goal", "eq", json!("ftd"))];
    let plain = postback("plain", EventType::Conversion);
    let idx = index(vec![big, goal, plain]);

    let mut e = event(EventType::Conversion);
    assert_eq!(ids(&idx.matching(&e)), ["plain"], "no payout, no country, no goal");
    e.payout = Some("12.50".into());
    e.country = Some("DE".into());
    assert_eq!(ids(&idx.matching(&e)), ["big", "plain"], "12.50 >= 12.5 exactly");
    e.payout = Some("12.49999999999999999999".into());
    assert_eq!(ids(&idx.matching(&e)), ["plain"], "no float rounding");
    e.payout = Some("20".into());
    e.params.insert("goal".into(), "ftd".into());
    assert_eq!(ids(&idx.matching(&e)), ["big", "goal", "plain"]);
    e.country = Some("US".into());
    assert_eq!(ids(&idx.matching(&e)), ["goal", "plain"], "every condition must hold");
}
