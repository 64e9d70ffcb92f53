//! The API's vocabulary has one source, the Rust types: the OpenAPI document and the
//! console's constant lists are held to them here, so any of them drifting fails a test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;

use serde_json::Value;

use super::parse::event::FIELDS;
use super::OPENAPI_JSON;
use crate::domain::access::{AuditAction, Role, TargetKind};
use crate::domain::alert::AlertKind;
use crate::domain::breaker::BreakerState;
use crate::domain::event::{EventType, Status};
use crate::domain::library::Category;
use crate::domain::log::{LogColumn, Outcome};
use crate::domain::macros::{ALERT_MACROS, ALERT_ONLY_MACROS, KNOWN_MACROS};
use crate::domain::partner::{ApprovalState, NETWORK_MACROS};
use crate::domain::postback::{FireOn, HttpMethod};
use crate::domain::signing::Signing;

const APP_JS: &str = include_str!("../console/app.js");

fn doc() -> Value {
    serde_json::from_str(OPENAPI_JSON).unwrap()
}

fn set<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<&'a str> {
    names.into_iter().collect()
}

fn property_names(schema: &Value) -> BTreeSet<&str> {
    schema["properties"].as_object().unwrap().keys().map(String::as_str).collect()
}

#[test]
fn the_documented_event_has_exactly_the_event_fields() {
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(property_names(&schemas["Event"]), set(FIELDS.iter().copied()), "components/schemas/Event");
    let sample = set(FIELDS.iter().copied().chain(["alert"]));
    assert_eq!(property_names(&schemas["SampleEvent"]), sample, "components/schemas/SampleEvent: the fields and alert");
}

#[test]
fn the_documented_postback_input_is_what_the_parser_takes() {
    use super::parse::postback::{FIELDS as POSTBACK_FIELDS, READ_ONLY_FIELDS};
    let doc = doc();
    let input = &doc["components"]["schemas"]["PostbackInput"];
    let documented = property_names(input);
    let fields = set(POSTBACK_FIELDS.iter().copied());
    assert!(fields.is_subset(&documented), "undocumented: {:?}", fields.difference(&documented).collect::<Vec<_>>());
    let taken = set(POSTBACK_FIELDS.iter().chain(READ_ONLY_FIELDS).copied());
    assert!(documented.is_subset(&taken), "not taken: {:?}", documented.difference(&taken).collect::<Vec<_>>());
    // The alert postbacks' macros, as the description names them.
    let description = input["description"].as_str().unwrap();
    let (_, alert_part) = description.split_once("their templates take the alert macros").unwrap();
    let (alert_part, _) = alert_part.split_once("not the event's").unwrap();
    let named = set(alert_part.split('`').skip(1).step_by(2));
    assert_eq!(named, set(ALERT_MACROS.iter().copied()), "PostbackInput's description of the alert macros");
}

#[test]
fn the_documented_replay_request_has_exactly_the_log_columns() {
    let doc = doc();
    let mut want: BTreeSet<String> = ["from", "to", "cursor", "dry_run"].map(String::from).into();
    for column in LogColumn::ALL {
        want.insert(column.as_str().to_string());
        want.insert(format!("{}.not", column.as_str()));
        if column.is_text() {
            want.insert(format!("{}.contains", column.as_str()));
        }
    }
    let got: BTreeSet<String> =
        property_names(&doc["components"]["schemas"]["ReplayRequest"]).into_iter().map(String::from).collect();
    assert_eq!(got, want);
}

/// Every `enum` of the document with where it stands: `parameters[name]` for a
/// parameter, else the JSON path.
fn enums<'a>(v: &'a Value, at: String, out: &mut Vec<(String, &'a Value)>) {
    match v {
        Value::Object(map) => {
            if let Some(list) = map.get("enum") {
                out.push((at.clone(), list));
            }
            for (key, item) in map {
                if key == "parameters" {
                    for p in item.as_array().into_iter().flatten() {
                        let name = p["name"].as_str().or_else(|| p["$ref"].as_str()).unwrap_or("?");
                        enums(p, format!("{at}/parameters[{name}]"), out);
                    }
                } else {
                    enums(item, format!("{at}/{key}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                enums(item, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// Every enum the document lists is a Rust type's names, in the type's order.
#[test]
fn every_documented_enum_is_its_rust_type() {
    let tracked: Vec<&str> = EventType::TRACKED.iter().map(|t| t.as_str()).collect();
    let types: &[(&str, &[&str])] = &[
        ("/paths//postbacks/get/parameters[approval]/schema", ApprovalState::NAMES),
        ("/paths//audit/get/parameters[action]/schema", AuditAction::NAMES),
        ("/components/schemas/EventType", EventType::NAMES),
        ("/components/schemas/TrackedType", &tracked),
        ("/components/schemas/Outcome", Outcome::NAMES),
        ("/components/schemas/AlertKind", AlertKind::NAMES),
        ("/components/schemas/Role", Role::NAMES),
        ("/components/schemas/PostbackInput/properties/signing", Signing::NAMES),
        ("/components/schemas/Reversal/properties/method", HttpMethod::NAMES),
        ("/components/schemas/Postback/properties/approval/properties/state", ApprovalState::NAMES),
        ("/components/schemas/SampleEvent/properties/status", Status::NAMES),
        ("/components/schemas/Event/properties/status", Status::NAMES),
        ("/components/schemas/Health/properties/state", BreakerState::NAMES),
        ("/components/schemas/AuditRecord/properties/action", AuditAction::NAMES),
        ("/components/schemas/AuditRecord/properties/target/properties/kind", TargetKind::NAMES),
        ("/components/schemas/Template/properties/category", Category::NAMES),
    ];
    let doc = doc();
    let mut found = Vec::new();
    enums(&doc, String::new(), &mut found);
    for (at, list) in &found {
        let Some((_, names)) = types.iter().find(|(path, _)| path == at) else {
            panic!("{at} lists {list}: add it to this table with the Rust type it documents");
        };
        let listed: Vec<&str> = list.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert_eq!(&listed, names, "{at}");
    }
    for (path, _) in types {
        assert!(found.iter().any(|(at, _)| at == path), "{path}: no enum there any more (update this table)");
    }
}

/// The names in the console's `const NAME = [...]`: its strings, or in a list of pairs
/// (`[["name", "help"], ...]`) each pair's first.
fn console_list(name: &str) -> Vec<&'static str> {
    let declaration = format!("const {name} = [");
    let start = APP_JS
        .find(&declaration)
        .unwrap_or_else(|| panic!("app.js has no `{declaration}`: update this test with the list's new home"));
    let body = &APP_JS[start + declaration.len() - 1..];
    let (mut names, mut depth, mut first_of_pair, mut i) = (Vec::new(), 0, false, 0);
    while i < body.len() {
        match body.as_bytes()[i] {
            b'[' => (depth, first_of_pair) = (depth + 1, true),
            b']' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            b'"' => {
                let close = i + 1 + body[i + 1..].find('"').unwrap();
                if depth == 1 || first_of_pair {
                    names.push(&body[i + 1..close]);
                }
                (first_of_pair, i) = (false, close);
            }
            _ => {}
        }
        i += 1;
    }
    names
}

#[test]
fn the_consoles_lists_are_the_rust_types() {
    let cases: &[(&str, Vec<&str>)] = &[
        ("MACROS", KNOWN_MACROS.to_vec()),
        ("ALERT_MACROS", ALERT_ONLY_MACROS.to_vec()),
        ("ALERT_SHARED_MACROS", ALERT_MACROS.iter().copied().filter(|m| !ALERT_ONLY_MACROS.contains(m)).collect()),
        ("NETWORK_MACROS", NETWORK_MACROS.to_vec()),
        ("REVERSAL_MACROS", crate::domain::macros::REVERSAL_ONLY_MACROS.to_vec()),
        ("TYPES", EventType::NAMES.to_vec()),
        ("ALERT_KINDS", AlertKind::NAMES.to_vec()),
        ("FIRE_ON", FireOn::NAMES.to_vec()),
        ("OPS", crate::domain::condition::OPS.to_vec()),
        ("LOG_COLUMNS", LogColumn::NAMES.to_vec()),
        ("AUDIT_ACTIONS", AuditAction::NAMES.to_vec()),
    ];
    for (name, want) in cases {
        let listed = console_list(name);
        assert_eq!(listed.len(), set(listed.iter().copied()).len(), "app.js {name} lists a name twice");
        assert_eq!(set(listed.iter().copied()), set(want.iter().copied()), "app.js {name}");
    }
    // The review screen shows some of a postback's fields, by the API's names.
    let review = set(console_list("REVIEW_FIELDS"));
    let fields = set(super::parse::postback::FIELDS.iter().copied());
    assert!(review.is_subset(&fields), "app.js REVIEW_FIELDS: {:?}", review.difference(&fields).collect::<Vec<_>>());
    // The macro-function picker: `name` or `name:argument`, and its help.
    let functions: Vec<&str> = console_list("FUNCTIONS").iter().map(|f| f.split(':').next().unwrap()).collect();
    assert_eq!(set(functions), set(crate::domain::functions::FUNCTIONS.iter().copied()), "app.js FUNCTIONS");
}

#[test]
fn the_console_list_reader_reads_pairs_and_plain_lists() {
    assert_eq!(console_list("TYPES")[0], "impression");
    let functions = console_list("FUNCTIONS");
    assert_eq!(functions.first(), Some(&"default:0"));
    assert_eq!(functions.get(1), Some(&"lower"), "each pair's name, not its help: {functions:?}");
}
