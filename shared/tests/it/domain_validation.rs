//! Validation of postback configurations and ingested events, as the edge parses them
//! (`entry::http::parse`) with the domain's rules (`domain::rules`): every rule, the field
//! each error names, and property tests that no input can make validation panic.

use chrono::{DateTime, TimeZone, Utc};
use postback::domain::event::{Event, EventType, Status};
use postback::domain::postback::{FireOn, HttpMethod, Scope, MAX_DELAY_SECONDS};
use postback::domain::ValidationError;
use postback::entry::http::parse;
use postback::entry::http::parse::postback::spec_from_json;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

// ================================================================ postbacks

fn base_postback() -> Value {
    json!({"name": "Affiliate A", "type": "conversion", "url": "https://aff.example/pb?clickid={external_transaction_id}"})
}

fn postback_with(field: &str, value: Value) -> Value {
    let mut v = base_postback();
    v[field] = value;
    v
}

fn postback_err(body: Value) -> ValidationError {
    spec_from_json(&body).expect_err("should be refused")
}

fn assert_postback_err(body: Value, code: &str, field: &str) -> ValidationError {
    let err = postback_err(body);
    assert_eq!((err.code, err.field.as_str()), (code, field), "{}", err.message);
    err
}

#[test]
fn minimal_postback_gets_defaults() {
    let spec = spec_from_json(&base_postback()).unwrap();
    assert_eq!(spec.name, "Affiliate A");
    assert_eq!(spec.kind, EventType::Conversion);
    assert!(spec.enabled);
    assert_eq!(spec.offers, Scope::All);
    assert_eq!(spec.publishers, Scope::All);
    assert_eq!(spec.fire_on, FireOn::Approved);
    assert_eq!(spec.rejection_reasons, None);
    assert_eq!(spec.event_names, None);
    assert_eq!(spec.delay_seconds, 0);
    assert_eq!(spec.method, HttpMethod::Get);
    assert_eq!(spec.url, "https://aff.example/pb?clickid={external_transaction_id}");
    assert!(spec.headers.is_empty());
    assert_eq!(spec.body, None);
    assert_eq!(spec.content_type, "application/json");
}

#[test]
fn full_webhook_postback_is_accepted() {
    let body = json!({
        "name": "  CRM webhook  ",
        "type": "event",
        "enabled": false,
        "offers": ["1", 2, "1", " 3 "],
        "publishers": "all",
        "fire_on": "all",
        "rejection_reasons": ["fraud", "duplicate", "fraud"],
        "event_names": ["deposit", "upsell"],
        "delay_seconds": 900,
        "method": "post",
        "url": "https://crm.example/hooks/{postback_id}?d={delivery_id}",
        "headers": {"Authorization": "Bearer {params.token}", "X-Attempt": "{attempt}", "X-Secret": "[REDACTED]"},
        "body": "{\"lead\": \"{transaction_id}\", \"amount\": {payout}, \"sub\": \"{sub1}\", \"ts\": {unix_timestamp}}",
        "content_type": "application/json; charset=utf-8",
        "id": "pb_ignored",
        "created_at": "whatever",
        "updated_at": 5
    });
    let spec = spec_from_json(&body).unwrap();
    assert_eq!(spec.name, "CRM webhook");
    assert_eq!(spec.kind, EventType::Event);
    assert!(!spec.enabled);
    assert_eq!(spec.offers, Scope::Only(vec!["1".into(), "2".into(), "3".into()]));
    assert_eq!(spec.fire_on, FireOn::All);
    assert_eq!(spec.rejection_reasons, Some(vec!["fraud".into(), "duplicate".into()]));
    assert_eq!(spec.event_names, Some(vec!["deposit".into(), "upsell".into()]));
    assert_eq!(spec.delay_seconds, 900);
    assert_eq!(spec.method, HttpMethod::Post);
    assert_eq!(spec.headers.len(), 3);
    assert_eq!(spec.headers["Authorization"], "Bearer {params.token}");
    assert_eq!(spec.content_type, "application/json; charset=utf-8");
}

#[test]
fn postback_round_trips_through_its_api_form() {
    let body = json!({
        "name": "x", "type": "conversion", "fire_on": "rejected", "rejection_reasons": ["fraud"],
        "offers": [7], "method": "PUT", "url": "https://a.example/{sub2}",
        "headers": {"X-Key": "k"}, "body": "{\"a\":\"{sub3}\"}", "delay_seconds": 60,
        "conditions": [{"field": "revenue", "op": "lt", "value": 0.1}, {"field": "country", "op": "not_in", "value": ["us"]}],
        "success_rule": {"body_not_contains": "ERR", "retry": true}
    });
    let spec = spec_from_json(&body).unwrap();
    let stored = spec.clone().into_postback("pb_1".into(), Utc::now(), Utc::now());
    let again = spec_from_json(&serde_json::to_value(&stored).unwrap()).unwrap();
    assert_eq!(again, spec);
}

#[test]
fn postback_body_must_be_an_object_without_unknown_fields() {
    assert_postback_err(json!([1]), "invalid", "");
    assert_postback_err(json!("x"), "invalid", "");
    let err = assert_postback_err(postback_with("colour", json!("red")), "unknown_field", "colour");
    assert!(err.message.contains("colour"));
    let err = assert_postback_err(postback_with("delay", json!(5)), "unknown_field", "delay");
    assert!(err.message.contains("did you mean `delay_seconds`") || err.message.contains("delay"), "{}", err.message);
    let err = assert_postback_err(postback_with("nmae", json!("x")), "unknown_field", "nmae");
    assert!(err.message.contains("did you mean `name`"), "{}", err.message);
}

#[test]
fn postback_name_rules() {
    let mut no_name = base_postback();
    no_name.as_object_mut().unwrap().remove("name");
    assert_postback_err(no_name, "required", "name");
    assert_postback_err(postback_with("name", Value::Null), "required", "name");
    assert_postback_err(postback_with("name", json!("   ")), "required", "name");
    assert_postback_err(postback_with("name", json!(5)), "invalid", "name");
    assert_postback_err(postback_with("name", json!("a\nb")), "invalid", "name");
    assert_postback_err(postback_with("name", json!("é".repeat(201))), "too_long", "name");
    assert!(spec_from_json(&postback_with("name", json!("é".repeat(200)))).is_ok());
}

#[test]
fn postback_type_and_enabled() {
    let mut no_type = base_postback();
    no_type.as_object_mut().unwrap().remove("type");
    assert_postback_err(no_type, "required", "type");
    assert_postback_err(postback_with("type", json!("sale")), "invalid", "type");
    assert_postback_err(postback_with("type", json!("Conversion")), "invalid", "type");
    for t in ["impression", "click", "conversion", "event"] {
        assert!(spec_from_json(&postback_with("type", json!(t))).is_ok(), "{t}");
    }
    assert_postback_err(postback_with("enabled", json!("true")), "invalid", "enabled");
    assert_postback_err(postback_with("enabled", json!(1)), "invalid", "enabled");
}

#[test]
fn postback_scope_rules() {
    for field in ["offers", "publishers"] {
        assert_postback_err(postback_with(field, json!([])), "invalid", field);
        assert_postback_err(postback_with(field, json!("some")), "invalid", field);
        assert_postback_err(postback_with(field, json!("ALL")), "invalid", field);
        assert_postback_err(postback_with(field, json!({})), "invalid", field);
        assert_postback_err(postback_with(field, json!(["a", ""])), "invalid", &format!("{field}[1]"));
        assert_postback_err(postback_with(field, json!(["a", "  "])), "invalid", &format!("{field}[1]"));
        assert_postback_err(postback_with(field, json!([1.5])), "invalid", &format!("{field}[0]"));
        assert_postback_err(postback_with(field, json!([["a"]])), "invalid", &format!("{field}[0]"));
        assert_postback_err(postback_with(field, json!(["x".repeat(129)])), "too_long", &format!("{field}[0]"));
        let many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
        assert_postback_err(postback_with(field, json!(many)), "too_long", field);
        let max: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        assert!(spec_from_json(&postback_with(field, json!(max))).is_ok());
        let spec = spec_from_json(&postback_with(field, json!(["b", "a", "b", 10]))).unwrap();
        let scope = if field == "offers" { spec.offers } else { spec.publishers };
        assert_eq!(scope, Scope::Only(vec!["b".into(), "a".into(), "10".into()]));
    }
}

#[test]
fn fire_on_rejection_reasons_and_event_names() {
    assert_postback_err(postback_with("fire_on", json!("declined")), "invalid", "fire_on");
    for (fire_on, expected) in [
        ("approved", FireOn::Approved),
        ("pending", FireOn::Pending),
        ("rejected", FireOn::Rejected),
        ("all", FireOn::All),
    ] {
        assert_eq!(spec_from_json(&postback_with("fire_on", json!(fire_on))).unwrap().fire_on, expected);
    }
    // Accepted and ignored for clicks.
    let mut click = postback_with("type", json!("click"));
    click["fire_on"] = json!("rejected");
    assert!(spec_from_json(&click).is_ok());

    // rejection_reasons need fire_on rejected or all, on a type with a status.
    assert_postback_err(postback_with("rejection_reasons", json!(["fraud"])), "invalid", "rejection_reasons");
    let mut rejected = postback_with("fire_on", json!("rejected"));
    rejected["rejection_reasons"] = json!(["fraud"]);
    assert!(spec_from_json(&rejected).is_ok());
    click["rejection_reasons"] = json!(["fraud"]);
    assert_postback_err(click, "invalid", "rejection_reasons");
    rejected["rejection_reasons"] = json!(["fraud", ""]);
    assert_postback_err(rejected.clone(), "invalid", "rejection_reasons[1]");
    rejected["rejection_reasons"] = json!("fraud");
    assert_postback_err(rejected.clone(), "invalid", "rejection_reasons");
    rejected["rejection_reasons"] = json!([]);
    assert_eq!(spec_from_json(&rejected).unwrap().rejection_reasons, None);
    assert_eq!(spec_from_json(&postback_with("rejection_reasons", json!([]))).unwrap().rejection_reasons, None);

    // event_names only for event postbacks; empty means any.
    assert_postback_err(postback_with("event_names", json!(["deposit"])), "invalid", "event_names");
    let mut event = postback_with("type", json!("event"));
    event["event_names"] = json!(["deposit"]);
    assert_eq!(spec_from_json(&event).unwrap().event_names, Some(vec!["deposit".to_string()]));
    event["event_names"] = json!([]);
    assert_eq!(spec_from_json(&event).unwrap().event_names, None);
    event["event_names"] = json!(["x".repeat(129)]);
    assert_postback_err(event, "too_long", "event_names[0]");
}

#[test]
fn delay_seconds_rules() {
    assert_eq!(spec_from_json(&postback_with("delay_seconds", json!(0))).unwrap().delay_seconds, 0);
    let max = spec_from_json(&postback_with("delay_seconds", json!(MAX_DELAY_SECONDS))).unwrap();
    assert_eq!(max.delay_seconds, MAX_DELAY_SECONDS);
    for bad in
        [json!(MAX_DELAY_SECONDS + 1), json!(-1), json!(1.5), json!(5.0), json!("10"), json!(true), json!(u64::MAX)]
    {
        assert_postback_err(postback_with("delay_seconds", bad), "invalid", "delay_seconds");
    }
}

#[test]
fn method_rules() {
    for (m, expected) in [("GET", HttpMethod::Get), ("post", HttpMethod::Post), ("Put", HttpMethod::Put)] {
        assert_eq!(spec_from_json(&postback_with("method", json!(m))).unwrap().method, expected);
    }
    assert_postback_err(postback_with("method", json!("PATCH")), "invalid", "method");
    assert_postback_err(postback_with("method", json!(1)), "invalid", "method");
}

#[test]
fn url_rules() {
    let mut no_url = base_postback();
    no_url.as_object_mut().unwrap().remove("url");
    assert_postback_err(no_url, "required", "url");
    assert_postback_err(postback_with("url", json!("  ")), "required", "url");
    for bad in [
        "ftp://files.example/x",
        "/relative/path",
        "aff.example/pb",
        "https://",
        "https:///path",
        "http:///{sub1}/x",
        "{sub1}/path",
        "{sub1}://host/",
        "https://{sub1}.example.com/",
        "https://aff.example{sub1}",
        "https://aff.example:{sub1}/",
        "https://aff.example:{attempt}/",
        "https://good.example@{sub1}/",
        "https://user:pass@aff.example/",
        "https://user@aff.example/",
        "https://exa mple.com/",
        "https://aff.example/\n{sub1}",
        "javascript:alert(1)",
    ] {
        let err = postback_err(postback_with("url", json!(bad)));
        assert_eq!((err.code, err.field.as_str()), ("invalid", "url"), "{bad}: {}", err.message);
    }
    for good in [
        "https://aff.example",
        "http://aff.example:8080/p?c={transaction_id}",
        "HTTPS://AFF.EXAMPLE/{sub1}",
        "https://aff.example?c={transaction_id}",
        "https://aff.example#{sub1}",
        "https://aff.example/{sub1}/{sub2}?a={params.x}&t={timestamp}",
        "https://10.0.0.1/x",
        "https://[::1]:9000/x?u={user_agent}",
        "https://aff.example/a b?q=é",
        "  https://aff.example/trimmed  ",
    ] {
        let spec = spec_from_json(&postback_with("url", json!(good))).unwrap_or_else(|e| panic!("{good}: {e}"));
        assert_eq!(spec.url, good.trim());
    }
    let err = assert_postback_err(postback_with("url", json!("https://a.example/?s={Sub5}")), "unknown_macro", "url");
    assert!(err.message.contains("{Sub5}") && err.message.contains("{sub5}"), "{}", err.message);
    assert_postback_err(postback_with("url", json!("https://a.example/?s={sub5")), "unclosed_macro", "url");
    let long = format!("https://a.example/{}", "x".repeat(4096));
    assert_postback_err(postback_with("url", json!(long)), "too_long", "url");
    assert_postback_err(postback_with("url", json!(["https://a.example"])), "invalid", "url");
}

#[test]
fn header_rules() {
    let with_headers = |headers: Value| postback_with("headers", headers);
    assert!(spec_from_json(&with_headers(json!({}))).is_ok());
    assert_postback_err(with_headers(json!(["a"])), "invalid", "headers");
    assert_postback_err(with_headers(json!("Authorization: x")), "invalid", "headers");
    assert_postback_err(with_headers(json!({"Bad Name": "x"})), "invalid", "headers.Bad Name");
    assert_postback_err(with_headers(json!({"X:Y": "x"})), "invalid", "headers.X:Y");
    assert_postback_err(with_headers(json!({"": "x"})), "invalid", "headers.");
    assert_postback_err(with_headers(json!({"Héader": "x"})), "invalid", "headers.Héader");
    for managed in ["Host", "content-length", "Transfer-Encoding", "Connection", "Upgrade", "Content-Type"] {
        assert_postback_err(with_headers(json!({managed: "x"})), "invalid", &format!("headers.{managed}"));
    }
    assert_postback_err(with_headers(json!({"X-A": 1})), "invalid", "headers.X-A");
    assert_postback_err(with_headers(json!({"X-A": "a\r\nX-Injected: 1"})), "invalid", "headers.X-A");
    assert_postback_err(with_headers(json!({"X-A": "a\u{0}"})), "invalid", "headers.X-A");
    assert!(spec_from_json(&with_headers(json!({"X-A": "a\tb"}))).is_ok());
    let err =
        assert_postback_err(with_headers(json!({"X-Click": "{transactionid}"})), "unknown_macro", "headers.X-Click");
    assert!(err.message.contains("did you mean {transaction_id}?"), "{}", err.message);
    assert_postback_err(with_headers(json!({"X-Click": "{sub1"})), "unclosed_macro", "headers.X-Click");
    assert_postback_err(with_headers(json!({"X-A": "x".repeat(8193)})), "too_long", "headers.X-A");
    assert_postback_err(with_headers(json!({"X-A": "1", "x-a": "2"})), "invalid", "headers.x-a");
    let many: Map<String, Value> = (0..51).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    assert_postback_err(with_headers(Value::Object(many)), "too_long", "headers");
    let fifty: Map<String, Value> = (0..50).map(|i| (format!("X-H{i}"), json!("v"))).collect();
    assert_eq!(spec_from_json(&with_headers(Value::Object(fifty))).unwrap().headers.len(), 50);
}

#[test]
fn body_rules() {
    let post = |body: Value, content_type: Option<&str>| {
        let mut v = postback_with("method", json!("POST"));
        v["body"] = body;
        if let Some(ct) = content_type {
            v["content_type"] = json!(ct);
        }
        v
    };
    // GET cannot have a body; an empty body is no body.
    assert_postback_err(postback_with("body", json!("{}")), "invalid", "body");
    assert_eq!(spec_from_json(&postback_with("body", json!(""))).unwrap().body, None);

    assert!(spec_from_json(&post(json!(r#"{"lead": "{transaction_id}"}"#), None)).is_ok());
    // Numeric macros may sit unquoted.
    assert!(spec_from_json(&post(json!(r#"{"amount": {payout}, "n": {attempt}}"#), None)).is_ok());
    // Broken quoting is caught at save time.
    for broken in [
        r#"{"lead": "{transaction_id}"#,
        r#"{"lead": {transaction_id}}"#,
        r#"{"lead": "{transaction_id}" "x": 1}"#,
        r#"lead={transaction_id}"#,
    ] {
        let err = assert_postback_err(post(json!(broken), None), "invalid", "body");
        assert!(err.message.contains("JSON"), "{}", err.message);
    }
    // The same check for +json types; none for other types.
    assert_postback_err(post(json!("[1,"), Some("application/vnd.api+json")), "invalid", "body");
    assert!(spec_from_json(&post(json!("lead={transaction_id}"), Some("application/x-www-form-urlencoded"))).is_ok());
    assert!(spec_from_json(&post(json!("<lead>{transaction_id}</lead>"), Some("application/xml"))).is_ok());

    let err = assert_postback_err(post(json!(r#"{"a": "{payot}"}"#), None), "unknown_macro", "body");
    assert!(err.message.contains("did you mean {payout}?"), "{}", err.message);
    assert_postback_err(post(json!("x={sub1"), Some("text/plain")), "unclosed_macro", "body");
    assert_postback_err(post(json!(format!("\"{}\"", "x".repeat(64 * 1024))), None), "too_long", "body");
    assert!(spec_from_json(&post(json!(format!("\"{}\"", "x".repeat(64 * 1024 - 2))), None)).is_ok());
    assert_postback_err(post(json!({"lead": "x"}), None), "invalid", "body");
}

#[test]
fn content_type_rules() {
    let ct = |v: Value| postback_with("content_type", v);
    assert_eq!(spec_from_json(&ct(json!("text/plain"))).unwrap().content_type, "text/plain");
    assert_eq!(spec_from_json(&ct(json!(""))).unwrap().content_type, "application/json");
    assert_postback_err(ct(json!("json")), "invalid", "content_type");
    assert_postback_err(ct(json!("text/plain\r\nX-Injected: 1")), "invalid", "content_type");
    assert_postback_err(ct(json!(format!("text/{}", "x".repeat(200)))), "too_long", "content_type");
    assert_postback_err(ct(json!(5)), "invalid", "content_type");
}

#[test]
fn conditions_rules() {
    let with = |conditions: Value| postback_with("conditions", conditions);
    let ok = spec_from_json(&with(json!([
        {"field": "payout", "op": "gt", "value": 12.5},
        {"field": "payout", "op": "lte", "value": "100.00"},
        {"field": "country", "op": "in", "value": ["de", "AT"]},
        {"field": "sub3", "op": "ne", "value": "test"},
        {"field": "params.goal", "op": "contains", "value": "ftd"},
        {"field": "currency", "op": "exists"},
        {"field": "sub10", "op": "not_exists", "value": null},
    ])))
    .unwrap();
    let stored: Vec<Value> = ok.conditions.iter().map(|c| serde_json::to_value(c).unwrap()).collect();
    assert_eq!(stored[0], json!({"field": "payout", "op": "gt", "value": "12.5"}), "a number is kept as its text");
    assert_eq!(stored[2]["value"], json!(["DE", "AT"]), "country codes upper-cased like events'");
    assert_eq!(stored[5], json!({"field": "currency", "op": "exists"}));
    assert!(spec_from_json(&with(json!([]))).unwrap().conditions.is_empty());
    assert!(spec_from_json(&with(Value::Null)).unwrap().conditions.is_empty());

    let at2 = |condition: Value| {
        with(json!([{"field": "sub1", "op": "exists"}, {"field": "sub2", "op": "exists"}, condition]))
    };
    assert_postback_err(with(json!({"field": "sub1"})), "invalid", "conditions");
    assert_postback_err(with(json!(["sub1"])), "invalid", "conditions[0]");
    assert_postback_err(
        at2(json!({"field": "sub1", "op": "eq", "vaule": "x"})),
        "unknown_field",
        "conditions[2].vaule",
    );
    assert_postback_err(at2(json!({"op": "exists"})), "required", "conditions[2].field");
    assert_postback_err(at2(json!({"field": 3, "op": "exists"})), "invalid", "conditions[2].field");
    let e = assert_postback_err(at2(json!({"field": "Sub3", "op": "exists"})), "unknown_macro", "conditions[2].field");
    assert!(e.message.contains("did you mean `sub3`"), "{}", e.message);
    let e = assert_postback_err(
        at2(json!({"field": "param.goal", "op": "exists"})),
        "unknown_macro",
        "conditions[2].field",
    );
    assert!(e.message.contains("params.goal"), "{}", e.message);
    assert_postback_err(at2(json!({"field": "delivery_id", "op": "exists"})), "invalid", "conditions[2].field");
    assert_postback_err(at2(json!({"field": "sub1"})), "required", "conditions[2].op");
    assert_postback_err(at2(json!({"field": "sub1", "op": "=="})), "invalid", "conditions[2].op");
    for (op, value) in [
        ("eq", Value::Null),
        ("eq", json!(["x"])),
        ("eq", json!("")),
        ("contains", json!({})),
        ("in", json!([])),
        ("in", json!("DE")),
        ("not_in", Value::Null),
        ("gt", json!("12,50")),
        ("gte", json!("1e3")),
        ("lt", json!("abc")),
        ("lte", json!(true)),
        ("gt", json!(1e300)),
        ("gt", json!("1".repeat(40))),
        ("exists", json!("x")),
        ("not_exists", json!(false)),
    ] {
        let code = if value.is_null() { "required" } else { "invalid" };
        assert_postback_err(at2(json!({"field": "payout", "op": op, "value": value})), code, "conditions[2].value");
    }
    assert_postback_err(
        at2(json!({"field": "sub1", "op": "in", "value": ["a", 7, ["b"]]})),
        "invalid",
        "conditions[2].value[2]",
    );
    let many: Vec<Value> = (0..51).map(|_| json!({"field": "sub1", "op": "exists"})).collect();
    assert_postback_err(with(json!(many)), "too_long", "conditions");
    // The first error is the first field in the table's order: a bad url before a bad condition.
    let mut both = with(json!([{"field": "nope", "op": "exists"}]));
    both["url"] = json!("ftp://x");
    assert_postback_err(both, "invalid", "url");
}

#[test]
fn success_rule_rules() {
    let with = |rule: Value| postback_with("success_rule", rule);
    let spec = spec_from_json(&with(json!({"body_contains": " status=ok", "body_not_contains": "error"}))).unwrap();
    let rule = spec.success_rule.unwrap();
    assert_eq!(rule.body_contains.as_deref(), Some(" status=ok"), "kept as sent, not trimmed");
    assert!(!rule.retry, "retry defaults to false");
    assert!(
        spec_from_json(&with(json!({"body_not_contains": "x", "retry": true}))).unwrap().success_rule.unwrap().retry
    );
    assert_eq!(spec_from_json(&with(Value::Null)).unwrap().success_rule, None);

    assert_postback_err(with(json!("status=ok")), "invalid", "success_rule");
    assert_postback_err(with(json!({})), "required", "success_rule");
    assert_postback_err(with(json!({"retry": true})), "required", "success_rule");
    let e = assert_postback_err(with(json!({"body_contain": "ok"})), "unknown_field", "success_rule.body_contain");
    assert!(e.message.contains("did you mean `body_contains`"), "{}", e.message);
    assert_postback_err(with(json!({"body_contains": ""})), "invalid", "success_rule.body_contains");
    assert_postback_err(with(json!({"body_contains": 200})), "invalid", "success_rule.body_contains");
    assert_postback_err(
        with(json!({"body_not_contains": "x".repeat(201)})),
        "too_long",
        "success_rule.body_not_contains",
    );
    assert!(spec_from_json(&with(json!({"body_not_contains": "é".repeat(200)}))).is_ok(), "200 characters, not bytes");
    assert_postback_err(with(json!({"body_contains": "ok", "retry": "yes"})), "invalid", "success_rule.retry");
}

// ================================================================ events

fn received() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 8, 0, 0).unwrap()
}

fn event(body: Value) -> Result<Event, ValidationError> {
    parse::event::from_json(&body, received())
}

fn assert_event_err(body: Value, code: &str, field: &str) -> ValidationError {
    let err = event(body).expect_err("should be refused");
    assert_eq!((err.code, err.field.as_str()), (code, field), "{}", err.message);
    err
}

fn click() -> Value {
    json!({"type": "click", "transaction_id": "T1", "offer_id": "10", "publisher_id": "20"})
}

fn conversion_with(field: &str, value: Value) -> Value {
    let mut v = json!({"type": "conversion", "transaction_id": "T1"});
    v[field] = value;
    v
}

#[test]
fn minimal_click_and_conversion() {
    let e = event(click()).unwrap();
    assert_eq!(e.kind, EventType::Click);
    assert_eq!(e.transaction_id, "T1");
    assert_eq!(e.offer_id.as_deref(), Some("10"));
    assert_eq!(e.status, None);
    assert_eq!(e.timestamp, received());
    assert!(e.params.is_empty());

    let c = event(json!({"type": "conversion", "transaction_id": "T1"})).unwrap();
    assert_eq!(c.status, Some(Status::Approved));
    assert_eq!(c.offer_id, None);
}

#[test]
fn full_event_is_accepted() {
    let body = json!({
        "type": "event", "transaction_id": 123456, "event_id": "e-1", "offer_id": 10, "publisher_id": "20",
        "external_transaction_id": "aff-9", "status": "Pending", "event_name": "deposit",
        "payout": "12.50", "revenue": 20, "currency": "eur",
        "sub1": "a", "sub10": "j", "ip": " 2001:DB8::1 ", "user_agent": "Mozilla/5.0", "country": "de",
        "timestamp": "2024-05-01T14:00:00+02:00",
        "params": {"source": "fb", "n": 3, "flag": true, "skip": null, "empty": ""}
    });
    let e = event(body).unwrap();
    assert_eq!(e.kind, EventType::Event);
    assert_eq!(e.transaction_id, "123456");
    assert_eq!(e.offer_id.as_deref(), Some("10"));
    assert_eq!(e.status, Some(Status::Pending));
    assert_eq!(e.event_name.as_deref(), Some("deposit"));
    assert_eq!(e.payout.as_deref(), Some("12.50"));
    assert_eq!(e.revenue.as_deref(), Some("20"));
    assert_eq!(e.currency.as_deref(), Some("EUR"));
    assert_eq!(e.sub(1), Some("a"));
    assert_eq!(e.sub(10), Some("j"));
    assert_eq!(e.sub(2), None);
    assert_eq!(e.ip.as_deref(), Some("2001:db8::1"));
    assert_eq!(e.country.as_deref(), Some("DE"));
    assert_eq!(e.timestamp, Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap());
    let params: Vec<(&str, &str)> = e.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(params, [("flag", "true"), ("n", "3"), ("source", "fb")]);
}

#[test]
fn event_shape_and_unknown_fields() {
    assert_event_err(json!([]), "invalid", "");
    assert_event_err(json!(null), "invalid", "");
    let mut body = click();
    body["clickid"] = json!("x");
    let err = assert_event_err(body, "unknown_field", "clickid");
    assert!(err.message.contains("params"), "{}", err.message);
    let mut body = click();
    body["transactionid"] = json!("x");
    let err = assert_event_err(body, "unknown_field", "transactionid");
    assert!(err.message.contains("did you mean `transaction_id`"), "{}", err.message);
}

#[test]
fn event_required_fields() {
    assert_event_err(json!({"transaction_id": "T1"}), "required", "type");
    assert_event_err(json!({"type": "", "transaction_id": "T1"}), "required", "type");
    assert_event_err(json!({"type": "sale", "transaction_id": "T1"}), "invalid", "type");
    assert_event_err(json!({"type": "conversion"}), "required", "transaction_id");
    assert_event_err(json!({"type": "conversion", "transaction_id": "  "}), "required", "transaction_id");
    assert_event_err(json!({"type": "conversion", "transaction_id": null}), "required", "transaction_id");
    for missing in ["offer_id", "publisher_id"] {
        for kind in ["click", "impression"] {
            let mut body = click();
            body["type"] = json!(kind);
            body[missing] = json!("");
            assert_event_err(body, "required", missing);
        }
    }
    assert_event_err(json!({"type": "event", "transaction_id": "T1"}), "required", "event_name");
    assert_eq!(
        event(json!({"type": "CLICK", "transaction_id": "T", "offer_id": 1, "publisher_id": 2})).unwrap().kind,
        EventType::Click
    );
}

#[test]
fn event_string_fields_take_numbers_but_not_other_values() {
    assert_eq!(event(conversion_with("transaction_id", json!(42))).unwrap().transaction_id, "42");
    for bad in [json!(true), json!([]), json!({"a": 1})] {
        assert_event_err(conversion_with("transaction_id", bad.clone()), "invalid", "transaction_id");
        assert_event_err(conversion_with("sub3", bad), "invalid", "sub3");
    }
    assert_event_err(conversion_with("transaction_id", json!("T\n1")), "invalid", "transaction_id");
    assert_event_err(conversion_with("sub2", json!("a\u{0}")), "invalid", "sub2");
}

#[test]
fn event_length_limits() {
    let cases = [
        ("transaction_id", 256),
        ("event_id", 256),
        ("external_transaction_id", 256),
        ("offer_id", 128),
        ("publisher_id", 128),
        ("rejection_reason", 256),
        ("sub1", 512),
        ("user_agent", 1024),
    ];
    for (field, max) in cases {
        let mut ok = conversion_with(field, json!("é".repeat(max)));
        ok["status"] = json!("rejected");
        assert!(event(ok).is_ok(), "{field}");
        assert_event_err(conversion_with(field, json!("é".repeat(max + 1))), "too_long", field);
    }
    let mut e = json!({"type": "event", "transaction_id": "T", "event_name": "x".repeat(129)});
    assert_event_err(e.clone(), "too_long", "event_name");
    e["event_name"] = json!("x".repeat(128));
    assert!(event(e).is_ok());
}

#[test]
fn status_rules() {
    let rejected = |reason: &str| {
        let mut v = conversion_with("status", json!("rejected"));
        v["rejection_reason"] = json!(reason);
        v
    };
    let e = event(rejected("fraud")).unwrap();
    assert_eq!((e.status, e.rejection_reason.as_deref()), (Some(Status::Rejected), Some("fraud")));
    let mut approved = rejected("fraud");
    approved["status"] = json!("approved");
    assert_eq!(event(approved).unwrap().rejection_reason, None);
    assert_event_err(conversion_with("status", json!("declined")), "invalid", "status");
    assert_eq!(event(conversion_with("status", json!("PENDING"))).unwrap().status, Some(Status::Pending));
    // Ignored for clicks.
    let mut c = click();
    c["status"] = json!("whatever");
    c["rejection_reason"] = json!("fraud");
    let e = event(c).unwrap();
    assert_eq!((e.status, e.rejection_reason), (None, None));
    // event_name is kept only for events.
    assert_eq!(event(conversion_with("event_name", json!("deposit"))).unwrap().event_name, None);
}

#[test]
fn money_rules() {
    for (sent, kept) in [
        (json!("12.50"), "12.50"),
        (json!("-3"), "-3"),
        (json!("0.0001"), "0.0001"),
        (json!(12.5), "12.5"),
        (json!(7), "7"),
        (json!(-0.25), "-0.25"),
        (json!(" 5 "), "5"),
    ] {
        assert_eq!(event(conversion_with("payout", sent.clone())).unwrap().payout.as_deref(), Some(kept), "{sent}");
        assert_eq!(event(conversion_with("revenue", sent)).unwrap().revenue.as_deref(), Some(kept));
    }
    for bad in ["1e5", "NaN", "inf", "-inf", "+1", ".5", "1.", "1,5", "1.2.3", "--1", "0x10", "١٢"] {
        assert_event_err(conversion_with("payout", json!(bad)), "invalid", "payout");
    }
    assert_event_err(conversion_with("payout", json!(1e300)), "invalid", "payout");
    assert_event_err(conversion_with("revenue", json!("1".repeat(33))), "too_long", "revenue");
    assert_eq!(event(conversion_with("payout", json!(""))).unwrap().payout, None);
}

#[test]
fn currency_country_ip_rules() {
    assert_eq!(event(conversion_with("currency", json!("usd"))).unwrap().currency.as_deref(), Some("USD"));
    for bad in ["US", "USDT", "U$D", "ÜSD"] {
        assert_event_err(conversion_with("currency", json!(bad)), "invalid", "currency");
    }
    assert_eq!(event(conversion_with("country", json!("gb"))).unwrap().country.as_deref(), Some("GB"));
    for bad in ["GBR", "G", "1A"] {
        assert_event_err(conversion_with("country", json!(bad)), "invalid", "country");
    }
    assert_eq!(event(conversion_with("ip", json!("203.0.113.9"))).unwrap().ip.as_deref(), Some("203.0.113.9"));
    for bad in ["1.2.3", "256.1.1.1", "example.com", "[::1]", "1.2.3.4:80"] {
        assert_event_err(conversion_with("ip", json!(bad)), "invalid", "ip");
    }
}

#[test]
fn timestamp_rules() {
    let at = |v: Value| event(conversion_with("timestamp", v)).map(|e| e.timestamp);
    let expected = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
    assert_eq!(at(json!("2024-05-01T12:00:00Z")).unwrap(), expected);
    assert_eq!(at(json!("2024-05-01T09:00:00-03:00")).unwrap(), expected);
    assert_eq!(at(json!(1_714_564_800)).unwrap(), expected);
    assert_eq!(at(json!("1714564800")).unwrap(), expected);
    assert_eq!(at(json!("2024-05-01T12:00:00.123Z")).unwrap().timestamp_subsec_millis(), 123);
    assert_eq!(at(json!("")).unwrap(), received());
    for bad in [
        json!("yesterday"),
        json!(1_714_564_800_000_i64),
        json!(1.5),
        json!(-5),
        json!("2024-13-01T00:00:00Z"),
        json!("2024-05-01"),
    ] {
        assert_event_err(conversion_with("timestamp", bad), "invalid", "timestamp");
    }
}

#[test]
fn params_rules() {
    assert_event_err(conversion_with("params", json!("a=b")), "invalid", "params");
    assert_event_err(conversion_with("params", json!(["a"])), "invalid", "params");
    assert_event_err(conversion_with("params", json!({"a": {"b": 1}})), "invalid", "params.a");
    assert_event_err(conversion_with("params", json!({"a": [1]})), "invalid", "params.a");
    assert_event_err(conversion_with("params", json!({"a b": "x"})), "invalid", "params.a b");
    assert_event_err(conversion_with("params", json!({"": "x"})), "invalid", "params.");
    assert_event_err(
        conversion_with("params", json!({"k".repeat(65): "x"})),
        "invalid",
        &format!("params.{}", "k".repeat(65)),
    );
    assert_event_err(conversion_with("params", json!({"a": "x".repeat(1025)})), "too_long", "params.a");
    let many: Map<String, Value> = (0..51).map(|i| (format!("k{i}"), json!("v"))).collect();
    assert_event_err(conversion_with("params", Value::Object(many)), "too_long", "params");
    let ok = event(conversion_with("params", json!({"utm-source.x_1": "é😀 \"&="}))).unwrap();
    assert_eq!(ok.params["utm-source.x_1"], "é😀 \"&=");
    assert!(event(conversion_with("params", Value::Null)).unwrap().params.is_empty());
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn query_events() {
    let q = pairs(&[
        ("key", "secret"),
        ("type", "conversion"),
        ("transaction_id", "T1"),
        ("status", "rejected"),
        ("rejection_reason", "fraud"),
        ("payout", "1.25"),
        ("params.source", "fb"),
        ("params[medium]", "cpc"),
        ("cb", "12345"),
        ("cb", "67890"),
        ("weird key!", "dropped"),
        ("empty", ""),
        ("timestamp", "2024-05-01T14:00:00 02:00"),
    ]);
    let e = parse::event::from_query(&q, received()).unwrap();
    assert_eq!(e.kind, EventType::Conversion);
    assert_eq!(e.status, Some(Status::Rejected));
    assert_eq!(e.rejection_reason.as_deref(), Some("fraud"));
    assert_eq!(e.payout.as_deref(), Some("1.25"));
    assert_eq!(e.timestamp, Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap());
    let params: Vec<(&str, &str)> = e.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(params, [("cb", "12345"), ("medium", "cpc"), ("source", "fb")]);
    assert!(!e.params.contains_key("key"));
}

#[test]
fn query_errors_name_fields_as_sent() {
    let base = [("type", "click"), ("transaction_id", "T1"), ("offer_id", "1"), ("publisher_id", "2")];
    assert!(parse::event::from_query(&pairs(&base), received()).is_ok());
    let with = |extra: &[(&str, &str)]| {
        let mut q = pairs(&base);
        q.extend(pairs(extra));
        parse::event::from_query(&q, received()).expect_err("should be refused")
    };
    let err = with(&[("transaction_id", "T2")]);
    assert_eq!((err.code, err.field.as_str()), ("invalid", "transaction_id"));
    let err = with(&[("sub1", ""), ("sub1", "x")]);
    assert_eq!((err.code, err.field.as_str()), ("invalid", "sub1"));
    let err = with(&[("params[a b]", "x")]);
    assert_eq!((err.code, err.field.as_str()), ("invalid", "params[a b]"));
    let err = with(&[("params.", "x")]);
    assert_eq!((err.code, err.field.as_str()), ("invalid", "params."));
    let err = with(&[("params.a", &"x".repeat(1025))]);
    assert_eq!((err.code, err.field.as_str()), ("too_long", "params.a"));
    let err = with(&[("ip", "nope")]);
    assert_eq!((err.code, err.field.as_str()), ("invalid", "ip"));
    let many: Vec<(String, String)> = (0..51).map(|i| (format!("x{i}"), "v".to_string())).collect();
    let mut q = pairs(&base);
    q.extend(many);
    assert_eq!(parse::event::from_query(&q, received()).unwrap_err().field, "params");
    assert_eq!(parse::event::from_query(&[], received()).unwrap_err().field, "type");
}

#[test]
fn dedupe_key_distinguishes_status_changes() {
    let approved = event(conversion_with("status", json!("approved"))).unwrap();
    let again = event(conversion_with("status", json!("approved"))).unwrap();
    let rejected = event(conversion_with("status", json!("rejected"))).unwrap();
    assert_eq!(approved.dedupe_key(), again.dedupe_key());
    assert_ne!(approved.dedupe_key(), rejected.dedupe_key());
}

// ================================================================ properties

fn tricky_string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        2 => "[a-zA-Z0-9 ._:/-]{0,12}",
        1 => "-?[0-9]{1,6}(\\.[0-9]{1,4})?",
        1 => prop::sample::select(vec![
            "", " ", "all", "approved", "rejected", "pending", "conversion", "click", "event", "impression", "GET",
            "post", "https://a.example/{sub1}", "{transaction_id}", "{Sub5}", "{sub1", "{\"a\":\"{sub1}\"}",
            "2024-05-01T12:00:00Z", "1714564800", "::1", "usd", "\u{0}", "\r\n", "😀", "é",
        ]).prop_map(str::to_string),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        tricky_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(tricky_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The body fields of a postback and of an event, as the parsers know them.
const POSTBACK_FIELDS: &[&str] = postback::entry::http::parse::postback::FIELDS;
const EVENT_FIELDS: &[&str] = postback::entry::http::parse::event::FIELDS;

/// Objects whose keys are (mostly) real field names, so validation gets past the
/// unknown-field check and exercises the rules.
fn object_with_fields(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![9 => prop::sample::select(fields).prop_map(str::to_string), 1 => tricky_string()];
    prop::collection::btree_map(key, arb_json(), 0..12).prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A plausible postback with some fields replaced by arbitrary values.
fn mutated_postback() -> impl Strategy<Value = Value> {
    (prop::collection::btree_map(prop::sample::select(POSTBACK_FIELDS), arb_json(), 0..4), any::<bool>()).prop_map(
        |(overrides, post)| {
            let mut v = json!({
                "name": "p", "type": "event", "url": "https://a.example/?t={transaction_id}",
                "fire_on": "all", "rejection_reasons": ["fraud"], "event_names": ["deposit"],
                "conditions": [{"field": "payout", "op": "gte", "value": 12.5}, {"field": "country", "op": "in", "value": ["de"]}],
                "success_rule": {"body_contains": "ok"},
            });
            if post {
                v["method"] = json!("POST");
                v["body"] = json!("{\"t\": \"{transaction_id}\"}");
                v["headers"] = json!({"Authorization": "Bearer {params.k}"});
            }
            for (k, value) in overrides {
                v[k] = value;
            }
            v
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn postback_validation_never_panics(value in arb_json()) {
        let _ = spec_from_json(&value);
    }

    #[test]
    fn postback_validation_of_plausible_input_never_panics_and_round_trips(
        value in prop_oneof![object_with_fields(POSTBACK_FIELDS), mutated_postback()]
    ) {
        if let Ok(spec) = spec_from_json(&value) {
            // What was accepted is accepted again, unchanged, when PUT back as GOT.
            let stored = spec.clone().into_postback("pb".into(), Utc::now(), Utc::now());
            let again = spec_from_json(&serde_json::to_value(&stored).unwrap());
            prop_assert_eq!(again, Ok(spec));
        }
    }

    #[test]
    fn event_validation_never_panics(value in arb_json()) {
        let _ = parse::event::from_json(&value, received());
    }

    #[test]
    fn event_validation_of_plausible_input_keeps_its_invariants(value in object_with_fields(EVENT_FIELDS)) {
        if let Ok(e) = parse::event::from_json(&value, received()) {
            prop_assert!(!e.transaction_id.is_empty() && e.transaction_id.chars().count() <= 256);
            prop_assert_eq!(e.status.is_some(), e.kind.has_status());
            prop_assert_eq!(e.event_name.is_some(), e.kind == EventType::Event);
            if !e.kind.has_status() {
                prop_assert!(e.offer_id.is_some() && e.publisher_id.is_some());
            }
            if let Some(c) = &e.currency {
                prop_assert!(c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()));
            }
            prop_assert!(e.params.len() <= 50);
        }
    }

    #[test]
    fn query_validation_never_panics(
        list in prop::collection::vec(
            (prop_oneof![prop::sample::select(EVENT_FIELDS).prop_map(str::to_string), tricky_string()], tricky_string()),
            0..16,
        )
    ) {
        let _ = parse::event::from_query(&list, received());
    }
}

#[test]
fn huge_and_unicode_inputs_are_refused_cleanly() {
    let huge = "😀".repeat(512 * 1024);
    let err = spec_from_json(&postback_with("name", json!(huge))).unwrap_err();
    assert_eq!(err.code, "too_long");
    let err = spec_from_json(&postback_with("url", json!(format!("https://a.example/{huge}")))).unwrap_err();
    assert_eq!(err.code, "too_long");
    let err = event(conversion_with("transaction_id", json!(huge))).unwrap_err();
    assert_eq!(err.code, "too_long");
    let err = parse::event::from_query(&pairs(&[("type", "click"), ("x", &huge)]), received()).unwrap_err();
    assert_eq!((err.code, err.field.as_str()), ("too_long", "x"));
}
