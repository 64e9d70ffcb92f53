//! `Template::parse` and `Template::render` on arbitrary text and values.
//!
//! Input: byte 0xFF (never part of UTF-8) splits the input into parts; the first is the
//! template, the others are values, dealt round-robin to the event's fields, the firing's
//! fields and the template's `params.<key>` macros (an empty part is "no value").
//!
//! Function chains (`{name|fn|fn:arg}`) are covered: the dictionary has the function names
//! and arguments, and the seeds use chains; each macro's piece is its value after the
//! chain, encoded on its own.
//!
//! Properties: parsing never panics and round-trips through `source()`; rendering never
//! panics in any encoding; a URL value is only unreserved characters and `%XX` escapes
//! and decodes back to the value; a JSON value between quotes is the JSON string of the
//! value; a form value decodes back; a header value never brings CR or LF (a value with
//! a control character is refused); raw output is the text with the values as is.
#![no_main]

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use postback::domain::event::{Event, EventType, Status};
use postback::domain::macros::MacroContext;
use postback::domain::template::{Encoding, Segment, Template};

const ENCODINGS: [Encoding; 5] = [Encoding::Url, Encoding::Json, Encoding::Form, Encoding::Header, Encoding::Raw];

/// Event and firing fields the values are dealt to, in order; `params.<key>` values follow.
const FIXED_SLOTS: usize = 27;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xff).map(String::from_utf8_lossy);
    let source = parts.next().unwrap_or_default();
    let values: Vec<Cow<'_, str>> = parts.collect();

    let template = match Template::parse(&source) {
        Ok(template) => template,
        Err(e) => {
            assert!(
                matches!(e.code, "unclosed_macro" | "unknown_macro" | "unknown_function" | "invalid_argument"),
                "unexpected error code {}",
                e.code
            );
            assert!(e.macro_name.is_some(), "a template error names no macro: {e}");
            assert!(source.contains('{'), "a template without a brace was refused: {e}");
            return;
        }
    };
    assert_eq!(template.source(), source, "source() does not give back the text");
    assert_eq!(Template::parse(&template.source()).as_ref(), Ok(&template), "parse(source()) differs");

    let param_keys: Vec<&str> = template.macros().filter_map(|m| m.strip_prefix("params.")).collect();
    let value_for = |slot: usize| -> Option<String> {
        if values.is_empty() {
            return None;
        }
        Some(values[slot % values.len()].to_string()).filter(|v| !v.is_empty())
    };
    let event = event_from(&value_for, &param_keys, source.len());
    let postback_id = value_for(23).unwrap_or_default();
    let postback_name = value_for(24).unwrap_or_default();
    let delivery_id = value_for(25).unwrap_or_default();
    let ctx = MacroContext::new(
        &event,
        &postback_id,
        &postback_name,
        &delivery_id,
        u32::try_from(values.len()).unwrap_or(u32::MAX),
    );

    // Each macro's value as it is placed: after its chain, if it has one.
    let placed: Vec<Option<String>> = template
        .segments
        .iter()
        .map(|segment| match segment {
            Segment::Literal(_) => None,
            Segment::Macro(name) => Some(ctx.value(name).unwrap_or_default().into_owned()),
            Segment::Piped { name, chain } => Some(chain.apply(ctx.value(name).unwrap_or_default()).into_owned()),
        })
        .collect();
    for encoding in ENCODINGS {
        let rendered = template.render(&ctx, encoding);
        let header_refuses =
            encoding == Encoding::Header && placed.iter().flatten().any(|v| has_header_control_char(v));
        let rendered = match rendered {
            Ok(rendered) => rendered,
            Err(e) => {
                assert!(header_refuses, "{encoding:?} render failed: {e}");
                continue;
            }
        };
        assert!(!header_refuses, "a header value with a control character was let through: {rendered:?}");

        // The whole is the literal text with each macro's value, encoded on its own.
        let mut expected = String::new();
        for (segment, value) in template.segments.iter().zip(&placed) {
            match segment {
                Segment::Literal(text) => expected.push_str(text),
                Segment::Macro(_) | Segment::Piped { .. } => {
                    let value = value.as_deref().unwrap_or_default();
                    let piece = render_one(segment, &ctx, encoding);
                    check_piece(encoding, value, &piece);
                    expected.push_str(&piece);
                }
            }
        }
        assert_eq!(rendered, expected, "{encoding:?} render is not literal text + encoded values");
        if encoding == Encoding::Header && !source.contains(['\r', '\n']) {
            assert!(!rendered.contains(['\r', '\n']), "header render brought CR/LF: {rendered:?}");
        }
    }
});

/// The template that is just this macro (with its chain), rendered.
fn render_one(segment: &Segment, ctx: &MacroContext<'_>, encoding: Encoding) -> String {
    let single = Template { segments: vec![segment.clone()] };
    match single.render(ctx, encoding) {
        Ok(piece) => piece,
        Err(e) => panic!("{segment:?} alone fails in {encoding:?} where the whole template rendered: {e}"),
    }
}

fn has_header_control_char(value: &str) -> bool {
    value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// One encoded value against what its encoding promises.
fn check_piece(encoding: Encoding, value: &str, piece: &str) {
    match encoding {
        Encoding::Url => {
            let bytes = piece.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                match bytes[i] {
                    b'%' => {
                        let escape = bytes.get(i + 1..i + 3).unwrap_or_default();
                        assert!(
                            escape.len() == 2 && escape.iter().all(u8::is_ascii_hexdigit),
                            "bad escape in url value {piece:?}"
                        );
                        i += 3;
                    }
                    b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => i += 1,
                    b => panic!("url value {piece:?} carries reserved or raw byte {b:#04x} (value {value:?})"),
                }
            }
            let decoded = percent_encoding::percent_decode_str(piece).decode_utf8();
            assert_eq!(decoded.as_deref(), Ok(value), "url value does not decode back");
        }
        Encoding::Json => {
            let quoted = format!("\"{piece}\"");
            match serde_json::from_str::<String>(&quoted) {
                Ok(parsed) => assert_eq!(parsed, value, "json value does not parse back"),
                Err(e) => panic!("json value {quoted} is not a JSON string: {e}"),
            }
            let by_serde = serde_json::to_string(value).unwrap_or_default();
            assert_eq!(quoted, by_serde, "json escaping differs from serde_json");
        }
        Encoding::Form => {
            // application/x-www-form-urlencoded keeps only these; `+` is the space.
            assert!(
                piece.bytes().all(|b| b.is_ascii_alphanumeric() || b"*-._+%".contains(&b)),
                "form value {piece:?} carries a raw separator or other byte (value {value:?})"
            );
            let query = format!("v={piece}");
            let decoded: Vec<(Cow<'_, str>, Cow<'_, str>)> = url::form_urlencoded::parse(query.as_bytes()).collect();
            assert_eq!(decoded.len(), 1, "form value {piece:?} splits the pair");
            assert_eq!(decoded[0].1, value, "form value does not decode back");
        }
        Encoding::Header => {
            assert!(!piece.contains(['\r', '\n', '\0']), "header value {piece:?} carries CR, LF or NUL");
            assert_eq!(piece, value, "a header value is inserted as is");
        }
        Encoding::Raw => assert_eq!(piece, value, "a raw value is inserted as is"),
    }
}

/// An event whose every field takes the next value; kind and status vary with the
/// template length so every macro gets exercised.
fn event_from(value_for: &dyn Fn(usize) -> Option<String>, param_keys: &[&str], seed: usize) -> Event {
    let kind = EventType::ALL[seed % EventType::ALL.len()];
    let status = [None, Some(Status::Approved), Some(Status::Pending), Some(Status::Rejected)][(seed / 4) % 4];
    let timestamp = value_for(26).and_then(|t| parse_time(&t)).unwrap_or_else(postback_fuzz::received_at);
    let params: BTreeMap<String, String> = param_keys
        .iter()
        .enumerate()
        .filter_map(|(i, key)| value_for(FIXED_SLOTS + i).map(|v| (key.to_string(), v)))
        .collect();
    Event {
        kind,
        transaction_id: value_for(0).unwrap_or_default(),
        event_id: value_for(1),
        offer_id: value_for(2),
        publisher_id: value_for(3),
        external_transaction_id: value_for(4),
        status,
        rejection_reason: value_for(5),
        event_name: value_for(6),
        payout: value_for(7),
        revenue: value_for(8),
        currency: value_for(9),
        subs: std::array::from_fn(|i| value_for(10 + i)),
        ip: value_for(20),
        user_agent: value_for(21),
        country: value_for(22),
        timestamp,
        params,
    }
}

/// `secs` or `secs.nanos`, any time chrono can hold (renders must not care).
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let (secs, nanos) = text.split_once('.').unwrap_or((text, "0"));
    DateTime::from_timestamp(secs.parse().ok()?, nanos.parse().ok()?)
}
