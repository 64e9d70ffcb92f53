//! Delivery policy (backoff, classification, Retry-After), enrichment and the log
//! filter's query parsing (`entry::http::parse::query::log_filter`).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use postback::domain::delivery::{parse_retry_after, OutboundResponse, RetryPolicy, SendFailure, Verdict, MAX_BACKOFF};
use postback::domain::enrich::enrich_from_click;
use postback::domain::event::{Event, EventType, Status};
use postback::domain::log::{Cursor, LogFilter, Outcome, DEFAULT_LOG_LIMIT, MAX_LOG_LIMIT};
use postback::entry::http::parse;
use proptest::prelude::*;

fn policy() -> RetryPolicy {
    RetryPolicy { max_attempts: 10, base_delay: Duration::from_secs(30) }
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

fn response(status: u16, retry_after: Option<&str>) -> Result<OutboundResponse, SendFailure> {
    Ok(OutboundResponse {
        status,
        retry_after: retry_after.map(String::from),
        body: String::new(),
        duration: Duration::from_millis(5),
    })
}

// ---- backoff ----

#[test]
fn backoff_doubles_from_the_base_and_stops_at_the_cap() {
    let p = policy();
    // jitter 1.0 (the top of the range) shows d itself; 0.0 shows d/2.
    assert_eq!(p.backoff(1, 1.0), Duration::from_secs(30));
    assert_eq!(p.backoff(2, 1.0), Duration::from_secs(60));
    assert_eq!(p.backoff(3, 1.0), Duration::from_secs(120));
    assert_eq!(p.backoff(1, 0.0), Duration::from_secs(15));
    assert_eq!(p.backoff(3, 0.5), Duration::from_secs(90));
    assert_eq!(p.backoff(20, 1.0), MAX_BACKOFF);
    assert_eq!(p.backoff(u32::MAX, 0.0), MAX_BACKOFF / 2);
    // Attempt 0 is treated as the first attempt; bad jitter as 0.
    assert_eq!(p.backoff(0, 1.0), Duration::from_secs(30));
    assert_eq!(p.backoff(1, f64::NAN), Duration::from_secs(15));
    assert_eq!(p.backoff(1, -3.0), Duration::from_secs(15));
    let zero = RetryPolicy { max_attempts: 3, base_delay: Duration::ZERO };
    assert_eq!(zero.backoff(5, 0.7), Duration::ZERO);
}

/// d = min(base * 2^(attempt-1), MAX_BACKOFF), for bases of at least 1 ms (or zero).
fn full_delay(p: &RetryPolicy, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1);
    if p.base_delay.is_zero() {
        return Duration::ZERO;
    }
    // 1 ms * 2^32 is far beyond the cap.
    if exp >= 32 {
        return MAX_BACKOFF;
    }
    p.base_delay.checked_mul(1u32 << exp).map_or(MAX_BACKOFF, |d| d.min(MAX_BACKOFF))
}

proptest! {
    #[test]
    fn backoff_is_within_half_and_full_delay_and_under_the_cap(
        base_ms in 0u64..100_000_000,
        attempt in 1u32..200,
        jitter in 0.0f64..1.0,
    ) {
        let p = RetryPolicy { max_attempts: 10, base_delay: Duration::from_millis(base_ms) };
        let wait = p.backoff(attempt, jitter);
        let d = full_delay(&p, attempt);
        prop_assert!(wait <= d, "{wait:?} > {d:?}");
        prop_assert!(wait >= d / 2, "{wait:?} < {d:?}/2");
        prop_assert!(wait <= MAX_BACKOFF);
    }

    #[test]
    fn backoff_never_decreases_with_the_attempt(
        base_ms in 0u64..10_000_000,
        attempt in 1u32..u32::MAX,
        jitter in 0.0f64..1.0,
    ) {
        let p = RetryPolicy { max_attempts: 10, base_delay: Duration::from_millis(base_ms) };
        prop_assert!(p.backoff(attempt, jitter) <= p.backoff(attempt + 1, jitter));
    }

    #[test]
    fn backoff_never_overflows(base_s in any::<u64>(), attempt in any::<u32>(), jitter in any::<f64>()) {
        let p = RetryPolicy { max_attempts: 10, base_delay: Duration::from_secs(base_s) };
        prop_assert!(p.backoff(attempt, jitter) <= MAX_BACKOFF);
    }
}

// ---- classify ----

#[test]
fn classify_table() {
    let p = policy();
    let retry = Verdict::Retry(p.backoff(1, 0.5));
    let cases: Vec<(Result<OutboundResponse, SendFailure>, bool)> = vec![
        // (result, is retryable); 2xx is checked separately.
        (response(408, None), true),
        (response(429, None), true),
        (response(500, None), true),
        (response(502, None), true),
        (response(503, None), true),
        (response(599, None), true),
        (Err(SendFailure::Timeout(10_000)), true),
        (Err(SendFailure::Connect("refused".into())), true),
        (Err(SendFailure::Other("tls".into())), true),
        (response(301, None), false),
        (response(302, None), false),
        (response(307, None), false),
        (response(400, None), false),
        (response(401, None), false),
        (response(403, None), false),
        (response(404, None), false),
        (response(410, None), false),
        (response(422, None), false),
        (response(499, None), false),
        (response(600, None), false),
        (response(101, None), false),
        (Err(SendFailure::Refused("127.0.0.1 is private".into())), false),
    ];
    for (result, retryable) in &cases {
        let verdict = p.classify(result, 1, 0.5, now());
        if *retryable {
            assert_eq!(verdict, retry, "{result:?}");
            // ... but not on the last attempt.
            match p.classify(result, 10, 0.5, now()) {
                Verdict::Fail(reason) => assert!(reason.starts_with("gave up after 10 attempts: "), "{reason}"),
                other => panic!("{result:?} on the last attempt: {other:?}"),
            }
        } else {
            assert!(matches!(verdict, Verdict::Fail(_)), "{result:?}: {verdict:?}");
        }
    }
    for status in [200, 201, 202, 204, 299] {
        assert_eq!(p.classify(&response(status, None), 1, 0.5, now()), Verdict::Delivered);
        assert_eq!(p.classify(&response(status, None), 10, 0.5, now()), Verdict::Delivered);
    }
}

#[test]
fn failure_reasons_explain() {
    let p = policy();
    let Verdict::Fail(reason) = p.classify(&response(302, None), 1, 0.0, now()) else { panic!() };
    assert!(reason.contains("redirects are not followed"), "{reason}");
    let Verdict::Fail(reason) = p.classify(&Err(SendFailure::Refused("10.0.0.1".into())), 1, 0.0, now()) else {
        panic!()
    };
    assert!(reason.contains("10.0.0.1"), "{reason}");
    let Verdict::Fail(reason) = p.classify(&response(503, None), 10, 0.0, now()) else { panic!() };
    assert_eq!(reason, "gave up after 10 attempts: HTTP 503");
    let Verdict::Fail(reason) = p.classify(&Err(SendFailure::Timeout(250)), 12, 0.0, now()) else { panic!() };
    assert_eq!(reason, "gave up after 12 attempts: timed out after 250 ms");
}

#[test]
fn retry_after_lengthens_429_and_503_only() {
    let p = policy(); // first backoff with jitter 0: 15 s
    let at = |status, ra| p.classify(&response(status, Some(ra)), 1, 0.0, now());
    assert_eq!(at(429, "120"), Verdict::Retry(Duration::from_secs(120)));
    assert_eq!(at(503, "120"), Verdict::Retry(Duration::from_secs(120)));
    assert_eq!(at(503, "Wed, 01 May 2024 12:05:00 GMT"), Verdict::Retry(Duration::from_secs(300)));
    // Never shortens.
    assert_eq!(at(429, "1"), Verdict::Retry(Duration::from_secs(15)));
    assert_eq!(at(429, "Wed, 01 May 2024 11:00:00 GMT"), Verdict::Retry(Duration::from_secs(15)));
    // Capped.
    assert_eq!(at(429, "999999999"), Verdict::Retry(MAX_BACKOFF));
    assert_eq!(at(429, "99999999999999999999999"), Verdict::Retry(MAX_BACKOFF));
    // Ignored when garbage or negative, and on other statuses.
    assert_eq!(at(429, "-30"), Verdict::Retry(Duration::from_secs(15)));
    assert_eq!(at(429, "soon"), Verdict::Retry(Duration::from_secs(15)));
    assert_eq!(at(500, "120"), Verdict::Retry(Duration::from_secs(15)));
    // Not a reason to retry on its own, nor to keep going past the last attempt.
    assert!(matches!(p.classify(&response(429, Some("5")), 10, 0.0, now()), Verdict::Fail(_)));
    assert!(matches!(at(400, "5"), Verdict::Fail(_)));
}

#[test]
fn parse_retry_after_forms() {
    let n = now();
    assert_eq!(parse_retry_after("0", n), Some(Duration::ZERO));
    assert_eq!(parse_retry_after(" 42 ", n), Some(Duration::from_secs(42)));
    assert_eq!(parse_retry_after("Wed, 01 May 2024 12:01:00 GMT", n), Some(Duration::from_secs(60)));
    assert_eq!(parse_retry_after("Wednesday, 01-May-24 12:01:00 GMT", n), Some(Duration::from_secs(60)));
    assert_eq!(parse_retry_after("Wed May  1 12:01:00 2024", n), Some(Duration::from_secs(60)));
    assert_eq!(parse_retry_after("Wed, 01 May 2024 11:00:00 GMT", n), Some(Duration::ZERO));
    for bad in ["", "-1", "1.5", "+5", "tomorrow", "12:01", "0x10"] {
        assert_eq!(parse_retry_after(bad, n), None, "{bad:?}");
    }
}

proptest! {
    #[test]
    fn retry_after_never_shortens_the_wait(
        status in prop::sample::select(vec![408u16, 429, 500, 502, 503, 504]),
        retry_after in prop_oneof![
            (0u64..100_000).prop_map(|s| s.to_string()),
            (-100_000i64..100_000).prop_map(|s| (now() + chrono::Duration::seconds(s)).to_rfc2822()),
            "\\PC{0,12}",
        ],
        attempt in 1u32..9,
        jitter in 0.0f64..1.0,
    ) {
        let p = policy();
        let with = p.classify(&response(status, Some(&retry_after)), attempt, jitter, now());
        let Verdict::Retry(wait) = with else { return Err(TestCaseError::fail(format!("{with:?}"))) };
        prop_assert!(wait >= p.backoff(attempt, jitter));
        prop_assert!(wait <= MAX_BACKOFF);
        if let (true, Some(asked)) = (matches!(status, 429 | 503), parse_retry_after(&retry_after, now())) {
            prop_assert!(wait >= asked.min(MAX_BACKOFF));
        }
    }
}

// ---- enrichment ----

fn bare(kind: EventType) -> Event {
    Event { status: kind.has_status().then_some(Status::Approved), ..Event::bare(kind, "T1", now()) }
}

#[test]
fn enrichment_fills_only_what_is_absent() {
    let mut click = bare(EventType::Click);
    click.offer_id = Some("o1".into());
    click.publisher_id = Some("p1".into());
    click.external_transaction_id = Some("aff-click-9".into());
    click.subs[0] = Some("s1".into());
    click.subs[4] = Some("s5-click".into());
    click.subs[9] = Some("s10".into());
    click.ip = Some("203.0.113.7".into());
    click.user_agent = Some("UA".into());
    click.country = Some("DE".into());
    click.payout = Some("9.99".into());
    click.params = [("campaign".to_string(), "spring".to_string()), ("lp".to_string(), "a".to_string())].into();

    let mut conv = bare(EventType::Conversion);
    conv.publisher_id = Some("p-own".into());
    conv.subs[4] = Some("s5-conv".into());
    conv.country = Some(String::new());
    conv.payout = Some("1.00".into());
    conv.params = [("lp".to_string(), "b".to_string())].into();
    let status_before = conv.status;

    enrich_from_click(&mut conv, &click);
    assert_eq!(conv.offer_id.as_deref(), Some("o1"));
    assert_eq!(conv.publisher_id.as_deref(), Some("p-own"), "what the event sent wins");
    assert_eq!(conv.external_transaction_id.as_deref(), Some("aff-click-9"));
    assert_eq!(conv.sub(1), Some("s1"));
    assert_eq!(conv.sub(5), Some("s5-conv"));
    assert_eq!(conv.sub(10), Some("s10"));
    assert_eq!(conv.sub(2), None);
    assert_eq!(conv.ip.as_deref(), Some("203.0.113.7"));
    assert_eq!(conv.user_agent.as_deref(), Some("UA"));
    assert_eq!(conv.country.as_deref(), Some(""), "a value sent empty is still sent");
    assert_eq!(conv.payout.as_deref(), Some("1.00"), "money is never copied");
    assert_eq!(conv.status, status_before);
    assert_eq!(conv.params.get("campaign").map(String::as_str), Some("spring"));
    assert_eq!(conv.params.get("lp").map(String::as_str), Some("b"));
    assert_eq!(conv.transaction_id, "T1");
}

// ---- log filter ----

fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn log_filter_defaults() {
    let f = parse::query::log_filter(&[]).unwrap();
    assert_eq!(f, LogFilter { limit: DEFAULT_LOG_LIMIT, ..LogFilter::default() });
}

#[test]
fn log_filter_parses_every_parameter() {
    let fired_at = chrono::DateTime::parse_from_rfc3339("2024-05-01T01:00:00.123456789Z").unwrap().to_utc();
    let cursor = Cursor { fired_at, last_id: "0190abcd-0000-7000-8000-000000000001".into() };
    let encoded = cursor.encode();
    let f = parse::query::log_filter(&q(&[
        ("postback_id", "pb_1"),
        ("transaction_id", "T1"),
        ("type", "conversion"),
        ("offer_id", "o1"),
        ("publisher_id", "p1"),
        ("status_code", "503"),
        ("outcome", "retrying"),
        ("from", "2024-05-01T00:00:00Z"),
        ("to", "2024-05-01T02:00:00+02:00"),
        ("limit", "500"),
        ("cursor", &encoded),
    ]))
    .unwrap();
    assert_eq!(f.postback_id.as_deref(), Some("pb_1"));
    assert_eq!(f.transaction_id.as_deref(), Some("T1"));
    assert_eq!(f.kind, Some(EventType::Conversion));
    assert_eq!(f.offer_id.as_deref(), Some("o1"));
    assert_eq!(f.publisher_id.as_deref(), Some("p1"));
    assert_eq!(f.status_code, Some(503));
    assert_eq!(f.outcome, Some(Outcome::Retrying));
    assert_eq!(f.from, Some(Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap()));
    assert_eq!(f.to, Some(Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap()), "from == to is allowed");
    assert_eq!(f.limit, MAX_LOG_LIMIT);
    assert_eq!(f.cursor, Some(cursor));
}

/// The cursor carries the last entry's `fired_at` (to the nanosecond) and id; what this
/// server did not issue, including the id-only `v1` cursors of before, is refused.
#[test]
fn log_cursor_round_trips_fired_at_and_id() {
    use base64::Engine;
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    for time in ["2024-05-01T01:00:00.123456789Z", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.5Z"] {
        let fired_at = chrono::DateTime::parse_from_rfc3339(time).unwrap().to_utc();
        let cursor = Cursor { fired_at, last_id: "0190abcd-0000-7000-8000-000000000001".into() };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor), "{time}");
    }
    assert_eq!(Cursor::decode(&b64("v2:1714525200.000000001:abc")).unwrap().fired_at.timestamp_subsec_nanos(), 1);
    for text in [
        "v1:0190abcd-0000-7000-8000-000000000001",
        "v2:1714525200:abc",
        "v2:1714525200.1:abc",
        "v2:+1714525200.000000000:abc",
        "v2:1714525200.00000000x:abc",
        "v2:99999999999999999999.000000000:abc",
        "v2:1714525200.000000000:",
        "v2:1714525200.000000000:a:b",
        "v2:1714525200.000000000",
    ] {
        let err = Cursor::decode(&b64(text)).unwrap_err();
        assert_eq!(err.field, "cursor", "{text}");
    }
}

#[test]
fn log_filter_empty_value_means_unset() {
    let f = parse::query::log_filter(&q(&[("offer_id", ""), ("limit", ""), ("status_code", "")])).unwrap();
    assert_eq!(f.offer_id, None);
    assert_eq!(f.limit, DEFAULT_LOG_LIMIT);
    assert_eq!(f.status_code, None);
}

#[test]
fn log_filter_errors_name_the_parameter() {
    let long = "x".repeat(600);
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (&[("statuscode", "500")], "unknown_field", "statuscode"),
        (&[("key", "secret")], "unknown_field", "key"),
        (&[("offer_id", "a"), ("offer_id", "b")], "duplicate", "offer_id"),
        (&[("limit", "10"), ("limit", "")], "duplicate", "limit"),
        (&[("type", "sale")], "invalid", "type"),
        (&[("status_code", "99")], "invalid", "status_code"),
        (&[("status_code", "600")], "invalid", "status_code"),
        (&[("status_code", "abc")], "invalid", "status_code"),
        (&[("outcome", "ok")], "invalid", "outcome"),
        (&[("from", "yesterday")], "invalid", "from"),
        (&[("to", "2024-05-01")], "invalid", "to"),
        (&[("from", "2024-05-02T00:00:00Z"), ("to", "2024-05-01T00:00:00Z")], "invalid", "from"),
        (&[("limit", "0")], "invalid", "limit"),
        (&[("limit", "501")], "invalid", "limit"),
        (&[("limit", "-1")], "invalid", "limit"),
        (&[("cursor", "not-a-cursor!")], "invalid", "cursor"),
        (&[("transaction_id", long.as_str())], "too_long", "transaction_id"),
    ];
    for (pairs, code, field) in cases {
        let err = parse::query::log_filter(&q(pairs)).unwrap_err();
        assert_eq!((err.code, err.field.as_str()), (*code, *field), "{pairs:?}: {err}");
    }
}

/// `col.not` and `col.contains` become predicates (and `is` on the untyped columns);
/// values are checked for their column; several filters are all kept (AND).
#[test]
fn log_filter_parses_not_and_contains() {
    use postback::domain::log::{LogColumn, LogOp, LogPredicate};
    let f = parse::query::log_filter(&q(&[
        ("status_code.not", "200"),
        ("url.contains", "aff"),
        ("url.not", "https://aff.example/x"),
        ("outcome.not", "failed"),
        ("test", "true"),
        ("postback_name", "CRM"),
        ("response_body.contains", "100%_"),
        ("postback_id", "pb_1"),
    ]))
    .unwrap();
    let p = |c, o, v| LogPredicate::new(c, o, v).unwrap();
    assert_eq!(
        f.predicates,
        vec![
            p(LogColumn::StatusCode, LogOp::IsNot, "200"),
            p(LogColumn::Url, LogOp::Contains, "aff"),
            p(LogColumn::Url, LogOp::IsNot, "https://aff.example/x"),
            p(LogColumn::Outcome, LogOp::IsNot, "failed"),
            p(LogColumn::Test, LogOp::Is, "true"),
            p(LogColumn::PostbackName, LogOp::Is, "CRM"),
            p(LogColumn::ResponseBody, LogOp::Contains, "100%_"),
        ]
    );
    assert_eq!(f.postback_id.as_deref(), Some("pb_1"), "is on postback_id stays the typed (indexed) field");
    assert_eq!(parse::query::log_filter(&q(&[("url.contains", "")])).unwrap().predicates, vec![], "empty: not set");
}

/// Every bad name or value is a 400 naming the parameter as sent.
#[test]
fn log_filter_refuses_bad_columns_ops_and_values() {
    for (name, value, code) in [
        ("status_code.contains", "20", "invalid"),
        ("status_code.contains", "", "invalid"),
        ("outcome.contains", "fail", "invalid"),
        ("test.contains", "t", "invalid"),
        ("type.contains", "conv", "invalid"),
        ("status_code.not", "abc", "invalid"),
        ("status_code.not", "99", "invalid"),
        ("outcome.not", "lost", "invalid"),
        ("outcome", "lost", "invalid"),
        ("test", "yes", "invalid"),
        ("test.not", "1", "invalid"),
        ("type.not", "sale", "invalid"),
        ("url.startswith", "x", "unknown_field"),
        ("nope.not", "x", "unknown_field"),
        ("url.", "x", "unknown_field"),
        (".not", "x", "unknown_field"),
        ("url.not.not", "x", "unknown_field"),
        ("status", "500", "unknown_field"),
    ] {
        let err = parse::query::log_filter(&q(&[(name, value)])).unwrap_err();
        assert_eq!((err.field.as_str(), err.code), (name, code), "{name}={value}");
    }
    let long = "x".repeat(5000);
    let err = parse::query::log_filter(&q(&[("response_body.contains", &long)])).unwrap_err();
    assert_eq!(err.field, "response_body.contains");
    let err = parse::query::log_filter(&q(&[("url.not", "a"), ("url.not", "b")])).unwrap_err();
    assert_eq!((err.field.as_str(), err.code), ("url.not", "duplicate"));
}
