//! Macro functions in templates (`{name|fn|fn:arg}`): parsed at save into typed chains,
//! refused at save with the template's field named, rendered then encoded for where they
//! stand; a property test over any chain and any value. The known answers of each
//! function are the unit tests of `domain::functions`.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use postback::domain::event::{Event, EventType};
use postback::domain::functions::{Chain, Function, FUNCTIONS};
use postback::domain::macros::{sample_event, MacroContext};
use postback::domain::template::{macros_used, Encoding, Segment, Template};
use postback::entry::http::parse::postback::spec_from_json;
use proptest::prelude::*;
use serde_json::{json, Value};

fn ctx(event: &Event) -> MacroContext<'_> {
    MacroContext::new(event, "pb_1", "A", "d_1", 1)
}

fn conversion(field: &str, value: Value) -> Value {
    let mut body = json!({"name": "Fn", "type": "conversion", "method": "POST", "url": "https://aff.example/pb"});
    body[field] = value;
    body
}

#[test]
fn a_chain_is_parsed_once_into_typed_functions_and_written_back_as_it_was() {
    let source = "https://aff.example/pb?p={payout|mul:0.8|round:2}&s={status|map:approved=1,*=0}&c={sub1}";
    let t = Template::parse(source).unwrap();
    assert_eq!(t.source(), source);
    assert_eq!(t.macros().collect::<Vec<_>>(), ["payout", "status", "sub1"]);
    let Segment::Piped { name, chain } = &t.segments[1] else { panic!("{:?}", t.segments[1]) };
    assert_eq!(name, "payout");
    assert_eq!(chain.functions.len(), 2);
    assert!(matches!(chain.functions[1], Function::Round(2)));
    let mut event = sample_event(EventType::Conversion, []);
    event.payout = Some("10.005".into());
    assert_eq!(t.render(&ctx(&event), Encoding::Url).unwrap(), "https://aff.example/pb?p=8.00&s=1&c=sub1_value");
}

#[test]
fn the_value_is_encoded_for_where_it_stands_after_the_chain() {
    let mut event = sample_event(EventType::Conversion, ["email", "note"]);
    event.params.insert("email".into(), " Ana@Example.COM ".into());
    event.params.insert("note".into(), "a \"b\" & c".into());
    let c = ctx(&event);
    let hashed = "{params.email|trim|lower|sha256}";
    let want = hex_sha256("ana@example.com");
    for encoding in [Encoding::Url, Encoding::Json, Encoding::Header, Encoding::Raw] {
        assert_eq!(Template::parse(hashed).unwrap().render(&c, encoding).unwrap(), want, "{encoding:?}");
    }
    let note = Template::parse("{params.note|upper}").unwrap();
    assert_eq!(note.render(&c, Encoding::Url).unwrap(), "A%20%22B%22%20%26%20C");
    assert_eq!(note.render(&c, Encoding::Json).unwrap(), "A \\\"B\\\" & C");
    // `urlencode` is one more layer: the URL encoding still applies on top.
    let twice = Template::parse("{params.note|urlencode}").unwrap();
    assert_eq!(twice.render(&c, Encoding::Url).unwrap(), "a%2520%2522b%2522%2520%2526%2520c");
    // A missing value enters the chain as the empty text.
    let missing = Template::parse("{params.nothing|default:none}").unwrap();
    assert_eq!(missing.render(&c, Encoding::Url).unwrap(), "none");
    // A chain's output still may not bring a line break into a header.
    event.params.insert("note".into(), "x".into());
    let header = Template::parse("{params.note|default:x|map:x=a\tb}").unwrap();
    assert_eq!(header.render(&ctx(&event), Encoding::Header).unwrap(), "a\tb");
}

fn hex_sha256(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[test]
fn a_bad_chain_is_a_400_naming_the_templates_field_and_the_function() {
    #[rustfmt::skip]
    let cases: Vec<(Value, &str, &str, &str)> = vec![
        // (request, field, code, words)
        (conversion("url", json!("https://aff.example/pb?e={params.email|lowr}")), "url", "unknown_function", "unknown function lowr; did you mean lower?"),
        (conversion("url", json!("https://aff.example/pb?p={payout|mul:abc}")), "url", "invalid_argument", "function mul"),
        (conversion("url", json!("https://aff.example/pb?p={payout|round:9}")), "url", "invalid_argument", "function round"),
        (conversion("headers", json!({"X-Date": "{timestamp|date:%Y-%q}"})), "headers.X-Date", "invalid_argument", "unknown format %q"),
        (conversion("headers", json!({"X-Date": "{timestamp|date:%Y,Europe/Kiev2}"})), "headers.X-Date", "invalid_argument", "unknown zone"),
        (conversion("body", json!("{\"p\": \"{payout|truncate:0}\"}")), "body", "invalid_argument", "function truncate"),
        (conversion("body", json!("{\"p\": \"{payout|Sha256}\"}")), "body", "unknown_function", "did you mean sha256?"),
        (conversion("url", json!("https://aff.example/pb?p={payout|mul:2")), "url", "unclosed_macro", "not closed"),
        // A function on something that is not a macro of the postback: the name is refused first.
        (conversion("url", json!("https://aff.example/pb?p={input.pixel_id|lower}")), "url", "unknown_macro", "{input.pixel_id}"),
        (conversion("url", json!("https://aff.example/pb?p={alert_message|lower}")), "url", "unknown_macro", "alert macro"),
    ];
    for (body, field, code, words) in cases {
        let err = spec_from_json(&body).expect_err("refused");
        assert_eq!((err.field.as_str(), err.code), (field, code), "{body}: {}", err.message);
        assert!(err.message.contains(words), "{body}: {}", err.message);
    }
    // The signature is the request's own: no functions on it.
    let signed = json!({"name": "S", "type": "conversion", "url": "https://aff.example/pb?s={signature|upper}",
                        "signing": "standard-webhooks"});
    assert_eq!(spec_from_json(&signed).unwrap_err().field, "url");
}

#[test]
fn the_macros_a_template_uses_include_those_inside_chains() {
    let url = Template::parse("https://aff.example/pb?r={revenue|mul:2}&c={sub1}").unwrap();
    let body = Template::parse("{\"e\": \"{params.email|sha256}\", \"p\": \"{payout}\"}").unwrap();
    let used = macros_used([&url, &body]);
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["params.email", "payout", "revenue", "sub1"]);
}

// ---------------------------------------------------------------- properties

/// One function with arguments that parse.
fn function_source() -> impl Strategy<Value = String> {
    let arg = "[a-zA-Z0-9 ._*=-]{0,6}";
    prop_oneof![
        prop::sample::select(vec!["lower", "upper", "trim", "sha256", "md5", "urlencode", "base64"])
            .prop_map(String::from),
        "[a-zA-Z0-9 ._-]{1,6}".prop_map(|t| format!("default:{t}")),
        (arg, arg, arg).prop_map(|(a, b, c)| format!(
            "map:{}={},*={}",
            a.replace(['=', ',', '*'], ""),
            b.replace(',', ""),
            c.replace(',', "")
        )),
        prop::sample::select(vec!["%Y-%m-%d %H:%M:%S", "%s%f", "%z", "%d/%m/%Y"]).prop_flat_map(|format| {
            prop::sample::select(vec!["", ",UTC", ",Europe/Kyiv", ",America/St_Johns", ",Asia/Kolkata"])
                .prop_map(move |zone| format!("date:{format}{zone}"))
        }),
        "-?[0-9]{1,6}(\\.[0-9]{1,6})?".prop_map(|d| format!("mul:{d}")),
        (0u32..=8).prop_map(|n| format!("round:{n}")),
        (1usize..=20).prop_map(|n| format!("truncate:{n}")),
    ]
}

/// Values: numbers, times, text with what breaks encoders.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "-?[0-9]{1,12}(\\.[0-9]{1,12})?",
        "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})",
        "[ a-zA-Z0-9%&=#+\"\\\\é😀\u{0}\r\n{}]{0,20}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any chain over any value renders without panic in every encoding, and the URL
    /// value percent-decodes to exactly what the chain gives.
    #[test]
    fn any_chain_over_any_value_renders_and_url_decodes_to_the_chain_output(
        functions in prop::collection::vec(function_source(), 1..5),
        value in any_value(),
    ) {
        let chain_text = format!("|{}", functions.join("|"));
        let chain = Chain::parse(&chain_text, "sub1").unwrap();
        let template = Template::parse(&format!("{{sub1{chain_text}}}")).unwrap();
        let mut event = sample_event(EventType::Conversion, []);
        event.subs[0] = Some(value.clone()).filter(|v| !v.is_empty());
        let expected = chain.apply(Cow::Borrowed(value.as_str())).into_owned();
        let c = ctx(&event);
        for encoding in [Encoding::Json, Encoding::Form, Encoding::Header, Encoding::Raw] {
            let _ = template.render(&c, encoding);
        }
        let url = template.render(&c, Encoding::Url).unwrap();
        prop_assert!(url.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)), "{}", url);
        prop_assert_eq!(percent_decode_str(&url).decode_utf8().unwrap(), expected);
    }

    /// Arbitrary text after `{sub1|` never panics the parser; what parses writes back
    /// as it was.
    #[test]
    fn any_chain_text_parses_or_is_refused(text in "[a-z0-9:,=*%|{}. -]{0,30}") {
        let source = format!("{{sub1|{text}}}");
        if let Ok(t) = Template::parse(&source) {
            prop_assert_eq!(t.source(), source);
        }
    }

    #[test]
    fn a_function_name_with_a_letter_more_is_unknown(name in prop::sample::select(FUNCTIONS)) {
        let err = Chain::parse(&format!("|{name}x"), "sub1").unwrap_err();
        prop_assert_eq!(err.code, "unknown_function");
    }
}
