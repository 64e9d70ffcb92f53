//! `parse::query::log_filter` (GET /logs) on the pairs of an arbitrary query string, and
//! `Cursor::decode` on the raw text: never panic, and what they accept is consistent:
//! every predicate (`col.not`, `col.contains`, `is` on the untyped columns) came from a
//! parameter that was sent, rebuilds from its own parts, and `.contains` only on text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postback::domain::log::{Cursor, LogOp, LogPredicate, MAX_LOG_LIMIT};
use postback::entry::http::parse;

fuzz_target!(|data: &[u8]| {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(data).into_owned().collect();
    if let Ok(filter) = parse::query::log_filter(&pairs) {
        assert!((1..=MAX_LOG_LIMIT).contains(&filter.limit), "limit {} out of range", filter.limit);
        if let (Some(from), Some(to)) = (filter.from, filter.to) {
            assert!(from <= to, "from {from} after to {to}");
        }
        if let Some(cursor) = &filter.cursor {
            assert_eq!(Cursor::decode(&cursor.encode()).as_ref(), Ok(cursor), "cursor does not round trip");
        }
        assert!(filter.predicates.len() <= pairs.len(), "more predicates than parameters");
        for p in &filter.predicates {
            let name = format!("{}{}", p.column().as_str(), p.op().suffix());
            assert!(pairs.iter().any(|(k, _)| *k == name), "predicate {name} was not sent");
            assert!(p.op() != LogOp::Contains || p.column().is_text(), "contains on {name}");
            assert_eq!(LogPredicate::new(p.column(), p.op(), p.value()).as_ref(), Ok(p), "{name} does not rebuild");
        }
    }

    // The whole input as a cursor, and as the id inside one.
    let text = String::from_utf8_lossy(data);
    if let Ok(cursor) = Cursor::decode(&text) {
        assert_eq!(Cursor::decode(&cursor.encode()).as_ref(), Ok(&cursor), "decoded cursor does not round trip");
    }
    let issued = Cursor { fired_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH, last_id: text.into_owned() };
    if let Ok(decoded) = Cursor::decode(&issued.encode()) {
        assert_eq!(decoded, issued, "a cursor decoded to another id");
    }
});
