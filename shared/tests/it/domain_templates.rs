//! The macro template engine and the macro values: parsing, unknown-macro suggestions,
//! and every encoding, with property tests for the properties that keep postbacks safe.

use std::borrow::Cow;

use chrono::{DateTime, TimeZone, Utc};
use percent_encoding::percent_decode_str;
use postback::domain::event::{Event, EventType, Status};
use postback::domain::macros::{is_known, sample_event, suggest, MacroContext, KNOWN_MACROS};
use postback::domain::template::{is_json_content_type, Encoding, Segment, Template};
use proptest::prelude::*;

fn event_with_transaction_id(value: &str) -> Event {
    let mut event = sample_event(EventType::Conversion, []);
    event.transaction_id = value.to_string();
    event
}

fn ctx(event: &Event) -> MacroContext<'_> {
    MacroContext::new(event, "pb_1", "Affiliate A", "d_abc", 3)
}

fn render_value(value: &str, encoding: Encoding) -> Result<String, postback::domain::template::RenderError> {
    let event = event_with_transaction_id(value);
    Template::parse("{transaction_id}").unwrap().render(&ctx(&event), encoding)
}

const ALL_ENCODINGS: [Encoding; 5] = [Encoding::Url, Encoding::Json, Encoding::Form, Encoding::Header, Encoding::Raw];

// ---------------------------------------------------------------- parsing

#[test]
fn parses_macros_and_literal_text() {
    let t = Template::parse("https://a.example/?c={transaction_id}&s={sub1}").unwrap();
    assert_eq!(
        t.segments,
        vec![
            Segment::Literal("https://a.example/?c=".into()),
            Segment::Macro("transaction_id".into()),
            Segment::Literal("&s=".into()),
            Segment::Macro("sub1".into()),
        ]
    );
    assert_eq!(t.macros().collect::<Vec<_>>(), ["transaction_id", "sub1"]);
    assert_eq!(t.literal_prefix(), "https://a.example/?c=");
}

#[test]
fn json_body_needs_no_escaping() {
    let source = r#"{"lead": "{transaction_id}", "amount": "{payout}", "nested": {"a": [1, {"b": 2}]}}"#;
    let t = Template::parse(source).unwrap();
    assert_eq!(t.macros().collect::<Vec<_>>(), ["transaction_id", "payout"]);
    assert_eq!(t.source(), source);
    let event = event_with_transaction_id("T\"1");
    let rendered = t.render(&ctx(&event), Encoding::Json).unwrap();
    assert_eq!(rendered, r#"{"lead": "T\"1", "amount": "1.50", "nested": {"a": [1, {"b": 2}]}}"#);
    let parsed: serde_json::Value = serde_json::from_str(&rendered).unwrap();
    assert_eq!(parsed["lead"], "T\"1");
}

#[test]
fn doubled_braces_are_literal_around_a_macro() {
    let t = Template::parse("{{transaction_id}}").unwrap();
    assert_eq!(
        t.segments,
        vec![Segment::Literal("{".into()), Segment::Macro("transaction_id".into()), Segment::Literal("}".into())]
    );
    let event = event_with_transaction_id("T1");
    assert_eq!(t.render(&ctx(&event), Encoding::Raw).unwrap(), "{T1}");
}

#[test]
fn braces_that_are_not_macros_stay_literal() {
    for source in
        ["{", "}", "{}", "{ sub1}", "{sub1 }", "{sub-1}", "a{b c}d", "{\"x\":1}", "}{", "{{", "{é}", "{sub1\"}"]
    {
        let t = Template::parse(source).unwrap_or_else(|e| panic!("{source}: {e}"));
        assert_eq!(t.macros().count(), 0, "{source}");
        assert_eq!(t.source(), source);
    }
    let t = Template::parse("{a b}{sub2}").unwrap();
    assert_eq!(t.segments, vec![Segment::Literal("{a b}".into()), Segment::Macro("sub2".into())]);
    let t = Template::parse("{foo{sub2}").unwrap();
    assert_eq!(t.segments, vec![Segment::Literal("{foo".into()), Segment::Macro("sub2".into())]);
}

#[test]
fn empty_template_has_no_segments() {
    let t = Template::parse("").unwrap();
    assert!(t.segments.is_empty());
    let event = event_with_transaction_id("x");
    assert_eq!(t.render(&ctx(&event), Encoding::Url).unwrap(), "");
}

#[test]
fn unclosed_macro_at_end_is_an_error() {
    for source in ["https://x.example/?a={transaction_id", "{sub1", "abc{p"] {
        let err = Template::parse(source).unwrap_err();
        assert_eq!(err.code, "unclosed_macro", "{source}");
    }
    let err = Template::parse("x={transaction_id").unwrap_err();
    assert_eq!(err.macro_name.as_deref(), Some("transaction_id"));
    assert!(err.message.contains("{transaction_id"), "{}", err.message);
    // Only at the end of the text; elsewhere it is literal.
    assert!(Template::parse("{transaction_id&x=1").is_ok());
    // A lone brace at the end is literal text.
    assert!(Template::parse("abc{").is_ok());
}

#[test]
fn unknown_macro_is_named_with_a_suggestion() {
    let cases = [
        ("{Sub5}", "Sub5", Some("sub5")),
        ("{transactionid}", "transactionid", Some("transaction_id")),
        ("{payot}", "payot", Some("payout")),
        ("{TRANSACTION_ID}", "TRANSACTION_ID", Some("transaction_id")),
        ("{click_id}", "click_id", None),
        ("{zzzzzzzzzz}", "zzzzzzzzzz", None),
    ];
    for (source, name, suggestion) in cases {
        let err = Template::parse(&format!("https://x.example/?a={source}")).unwrap_err();
        assert_eq!(err.code, "unknown_macro", "{source}");
        assert_eq!(err.macro_name.as_deref(), Some(name));
        assert!(err.message.contains(&format!("{{{name}}}")), "{}", err.message);
        match suggestion {
            Some(s) => assert!(err.message.contains(&format!("did you mean {{{s}}}?")), "{}", err.message),
            None => assert!(!err.message.contains("did you mean"), "{}", err.message),
        }
        let v = err.for_field("url");
        assert_eq!((v.code, v.field.as_str()), ("unknown_macro", "url"));
    }
}

#[test]
fn params_macros() {
    assert!(Template::parse("{params.source}").is_ok());
    assert!(Template::parse("{params.a.b_c}").is_ok());
    let err = Template::parse("{params.}").unwrap_err();
    assert_eq!(err.code, "unknown_macro");
    assert!(err.message.contains("{params.<key>}"), "{}", err.message);
    let err = Template::parse("{param.source}").unwrap_err();
    assert!(err.message.contains("did you mean {params.source}?"), "{}", err.message);
    let err = Template::parse("{Params_source}").unwrap_err();
    assert!(err.message.contains("did you mean {params.source}?"), "{}", err.message);
}

#[test]
fn suggest_near_misses() {
    assert_eq!(suggest("Sub5"), Some("sub5"));
    assert_eq!(suggest("transactionid"), Some("transaction_id"));
    assert_eq!(suggest("Transaction-ID"), Some("transaction_id"));
    assert_eq!(suggest("payot"), Some("payout"));
    assert_eq!(suggest("revnue"), Some("revenue"));
    assert_eq!(suggest("ofer_id"), Some("offer_id"));
    assert_eq!(suggest("timestmap"), Some("timestamp"));
    assert_eq!(suggest("x"), None);
    assert_eq!(suggest(""), None);
    assert_eq!(suggest("something_else_entirely"), None);
}

#[test]
fn every_known_macro_parses_and_is_known() {
    for name in KNOWN_MACROS {
        assert!(is_known(name));
        assert!(Template::parse(&format!("{{{name}}}")).is_ok(), "{name}");
    }
    assert!(!is_known("Sub5"));
    assert!(!is_known("params."));
    assert!(is_known("params.x"));
}

// ---------------------------------------------------------------- macro values

#[test]
fn every_known_macro_has_a_sample_value() {
    let event = sample_event(EventType::Event, ["source"]);
    let c = ctx(&event);
    // `{signature}` is the one exception: the renderer of a signing postback fills it in.
    for name in KNOWN_MACROS.iter().filter(|name| **name != "signature") {
        assert!(c.value(name).is_some_and(|v| !v.is_empty()), "{name}");
    }
    assert_eq!(c.value("signature"), None);
    assert_eq!(c.value("params.source").as_deref(), Some("source_value"));
    assert_eq!(c.value("params.missing"), None);
    assert_eq!(c.value("nope"), None);
}

#[test]
fn macro_values_come_from_the_event_and_the_firing() {
    let mut event = sample_event(EventType::Conversion, []);
    event.subs = std::array::from_fn(|i| Some(format!("s{}", i + 1)));
    event.status = Some(Status::Rejected);
    event.timestamp = Utc.with_ymd_and_hms(2024, 5, 1, 12, 30, 5).unwrap();
    let c = ctx(&event);
    let v = |name: &str| c.value(name).map(Cow::into_owned);
    for n in 1..=10 {
        assert_eq!(v(&format!("sub{n}")), Some(format!("s{n}")));
    }
    assert_eq!(v("sub0"), None);
    assert_eq!(v("sub11"), None);
    assert_eq!(v("sub01"), None);
    assert_eq!(v("type").as_deref(), Some("conversion"));
    assert_eq!(v("status").as_deref(), Some("rejected"));
    assert_eq!(v("attempt").as_deref(), Some("3"));
    assert_eq!(v("postback_id").as_deref(), Some("pb_1"));
    assert_eq!(v("postback_name").as_deref(), Some("Affiliate A"));
    assert_eq!(v("delivery_id").as_deref(), Some("d_abc"));
    assert_eq!(v("timestamp").as_deref(), Some("2024-05-01T12:30:05Z"));
    assert_eq!(v("unix_timestamp").as_deref(), Some("1714566605"));
    assert_eq!(v("transaction_id").as_deref(), Some(event.transaction_id.as_str()));

    // Sub-second precision is kept only when present.
    event.timestamp = DateTime::from_timestamp(1_714_566_605, 250_000_000).unwrap();
    assert_eq!(ctx(&event).value("timestamp").as_deref(), Some("2024-05-01T12:30:05.250Z"));

    // A click has no status: it renders empty.
    let mut click = sample_event(EventType::Click, []);
    click.ip = None;
    let t = Template::parse("s={status}&ip={ip}&t={type}").unwrap();
    assert_eq!(t.render(&ctx(&click), Encoding::Url).unwrap(), "s=&ip=&t=click");
}

// ---------------------------------------------------------------- encodings

#[test]
fn url_encoding_keeps_only_unreserved() {
    assert_eq!(render_value("a b&c=d#e+f%g/h?i", Encoding::Url).unwrap(), "a%20b%26c%3Dd%23e%2Bf%25g%2Fh%3Fi");
    assert_eq!(render_value("AZaz09-._~", Encoding::Url).unwrap(), "AZaz09-._~");
    assert_eq!(render_value("é😀", Encoding::Url).unwrap(), "%C3%A9%F0%9F%98%80");
    assert_eq!(render_value("\0", Encoding::Url).unwrap(), "%00");
}

#[test]
fn form_encoding_uses_plus_for_space() {
    assert_eq!(render_value("a b&c=d", Encoding::Form).unwrap(), "a+b%26c%3Dd");
    assert_eq!(render_value("+", Encoding::Form).unwrap(), "%2B");
}

#[test]
fn json_encoding_escapes_like_serde_json() {
    assert_eq!(
        render_value("a\"b\\c\nd\u{0}e\u{1f}é😀/", Encoding::Json).unwrap(),
        "a\\\"b\\\\c\\nd\\u0000e\\u001fé😀/"
    );
    assert_eq!(render_value("\u{8}\u{c}\r\t", Encoding::Json).unwrap(), "\\b\\f\\r\\t");
}

#[test]
fn header_encoding_refuses_line_breaks_and_nul() {
    for bad in ["a\rb", "a\nb", "a\r\nX-Injected: 1", "a\0b", "\u{7f}", "\u{1b}[31m"] {
        let err = render_value(bad, Encoding::Header).unwrap_err();
        assert_eq!(err.macro_name, "transaction_id");
    }
    assert_eq!(render_value("Bearer abc\tdef é", Encoding::Header).unwrap(), "Bearer abc\tdef é");
}

#[test]
fn raw_encoding_is_verbatim_and_literals_are_never_encoded() {
    let event = event_with_transaction_id("<a&b>");
    let t = Template::parse("x y&{transaction_id}é").unwrap();
    assert_eq!(t.render(&ctx(&event), Encoding::Raw).unwrap(), "x y&<a&b>é");
    assert_eq!(t.render(&ctx(&event), Encoding::Url).unwrap(), "x y&%3Ca%26b%3Eé");
}

#[test]
fn body_encoding_follows_content_type() {
    assert_eq!(Encoding::for_content_type("application/json"), Encoding::Json);
    assert_eq!(Encoding::for_content_type("Application/JSON; charset=utf-8"), Encoding::Json);
    assert_eq!(Encoding::for_content_type("application/vnd.api+json"), Encoding::Json);
    assert_eq!(Encoding::for_content_type("application/x-www-form-urlencoded"), Encoding::Form);
    assert_eq!(Encoding::for_content_type("text/plain"), Encoding::Raw);
    assert_eq!(Encoding::for_content_type("application/xml"), Encoding::Raw);
    assert!(!is_json_content_type("+json"));
    assert!(!is_json_content_type("application/jsonx"));
}

#[test]
fn very_long_values_round_trip() {
    let chunk = "aé😀 %&=#+\"\\\u{0}\n";
    let value: String = chunk.repeat(1024 * 1024 / chunk.len() + 1);
    assert!(value.len() >= 1024 * 1024);

    let url = render_value(&value, Encoding::Url).unwrap();
    assert_eq!(percent_decode_str(&url).decode_utf8().unwrap(), value);

    let json = render_value(&value, Encoding::Json).unwrap();
    assert_eq!(serde_json::from_str::<String>(&format!("\"{json}\"")).unwrap(), value);

    let form = render_value(&value, Encoding::Form).unwrap();
    let decoded: Vec<(String, String)> =
        url::form_urlencoded::parse(format!("v={form}").as_bytes()).into_owned().collect();
    assert_eq!(decoded, vec![("v".to_string(), value.clone())]);

    assert!(render_value(&value, Encoding::Header).is_err());
    assert_eq!(render_value(&value, Encoding::Raw).unwrap(), value);
}

#[test]
fn huge_template_parses_in_linear_time() {
    let source = "{x".repeat(200_000) + &"{sub1}".repeat(100_000) + &"{".repeat(200_000);
    let t = Template::parse(&source).unwrap();
    assert_eq!(t.macros().count(), 100_000);
    assert_eq!(t.source(), source);
}

// ---------------------------------------------------------------- properties

/// Strings rich in what breaks encoders: reserved characters, quotes, backslashes,
/// control characters, non-ASCII and emoji.
fn tricky_string() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("%".to_string()),
        Just("&".to_string()),
        Just("=".to_string()),
        Just("#".to_string()),
        Just("+".to_string()),
        Just(" ".to_string()),
        Just("\"".to_string()),
        Just("\\".to_string()),
        Just("\u{0}".to_string()),
        Just("\r\n".to_string()),
        Just("é".to_string()),
        Just("😀".to_string()),
        Just("\u{2028}".to_string()),
        Just("{".to_string()),
        Just("}".to_string()),
        Just("{sub1}".to_string()),
        "[a-z0-9]{1,5}",
        any::<String>(),
    ];
    prop::collection::vec(pieces, 0..12).prop_map(|v| v.concat())
}

/// Templates built from literal text, braces and macro names (known and unknown).
fn template_source() -> impl Strategy<Value = String> {
    let known = prop::sample::select(KNOWN_MACROS).prop_map(|m| format!("{{{m}}}"));
    let pieces = prop_oneof![
        3 => known,
        1 => "[a-zA-Z0-9_.]{1,8}".prop_map(|name| format!("{{{name}}}")),
        1 => "[a-z]{1,4}".prop_map(|key| format!("{{params.{key}}}")),
        2 => tricky_string(),
        1 => Just("{".to_string()),
        1 => Just("}".to_string()),
    ];
    prop::collection::vec(pieces, 0..10).prop_map(|v| v.concat())
}

fn event_with_values(values: &[String]) -> Event {
    let mut event = sample_event(EventType::Event, ["a", "ab", "abc"]);
    let v = |i: usize| values.get(i % values.len().max(1)).cloned();
    event.transaction_id = v(0).unwrap_or_default();
    event.external_transaction_id = v(1);
    event.offer_id = v(2);
    event.user_agent = v(3);
    event.subs = std::array::from_fn(|i| v(i + 4));
    for (k, value) in event.params.iter_mut() {
        *value = v(k.len()).unwrap_or_default();
    }
    event
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parse_never_panics(source in any::<String>()) {
        let _ = Template::parse(&source);
    }

    #[test]
    fn parse_of_source_is_stable(source in template_source()) {
        if let Ok(t) = Template::parse(&source) {
            prop_assert_eq!(t.source(), source.clone());
            prop_assert_eq!(Template::parse(&t.source()).unwrap(), t.clone());
            // Literal segments never hold a complete macro and never sit side by side.
            for pair in t.segments.windows(2) {
                prop_assert!(!matches!(pair, [Segment::Literal(_), Segment::Literal(_)]));
            }
        }
    }

    #[test]
    fn literal_only_render_is_stable(source in template_source()) {
        if let Ok(t) = Template::parse(&source) {
            if t.macros().count() == 0 {
                let event = sample_event(EventType::Click, []);
                for encoding in ALL_ENCODINGS {
                    let rendered = t.render(&ctx(&event), encoding).unwrap();
                    prop_assert_eq!(&rendered, &source);
                    prop_assert_eq!(Template::parse(&rendered).unwrap(), t.clone());
                }
            }
        }
    }

    #[test]
    fn render_never_panics(source in template_source(), values in prop::collection::vec(tricky_string(), 1..6)) {
        if let Ok(t) = Template::parse(&source) {
            let event = event_with_values(&values);
            for encoding in ALL_ENCODINGS {
                let _ = t.render(&ctx(&event), encoding);
            }
        }
    }

    #[test]
    fn url_encoding_round_trips_and_hides_reserved(value in tricky_string()) {
        let out = render_value(&value, Encoding::Url).unwrap();
        prop_assert!(out.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)), "{}", out);
        prop_assert_eq!(percent_decode_str(&out).decode_utf8().unwrap(), value);
    }

    #[test]
    fn form_encoding_round_trips(value in tricky_string()) {
        let out = render_value(&value, Encoding::Form).unwrap();
        prop_assert!(!out.contains(['&', '=', '#', ' ', '?']));
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(format!("v={out}").as_bytes()).into_owned().collect();
        prop_assert_eq!(pairs, vec![("v".to_string(), value)]);
    }

    #[test]
    fn json_encoding_round_trips_and_matches_serde_json(value in tricky_string()) {
        let out = render_value(&value, Encoding::Json).unwrap();
        let parsed: String = serde_json::from_str(&format!("\"{out}\"")).unwrap();
        prop_assert_eq!(&parsed, &value);
        let reference = serde_json::to_string(&value).unwrap();
        prop_assert_eq!(out.as_str(), &reference[1..reference.len() - 1]);
    }

    #[test]
    fn header_encoding_refuses_cr_lf_nul(value in tricky_string()) {
        let result = render_value(&value, Encoding::Header);
        if value.contains(['\r', '\n', '\0']) {
            prop_assert!(result.is_err());
        }
        if let Ok(out) = result {
            prop_assert!(!out.contains(['\r', '\n', '\0']));
            prop_assert_eq!(out, value);
        }
    }

    #[test]
    fn raw_encoding_is_identity(value in tricky_string()) {
        prop_assert_eq!(render_value(&value, Encoding::Raw).unwrap(), value);
    }

    #[test]
    fn suggest_never_panics_and_only_names_known_macros(name in any::<String>()) {
        if let Some(s) = suggest(&name) {
            prop_assert!(KNOWN_MACROS.contains(&s));
        }
    }
}
