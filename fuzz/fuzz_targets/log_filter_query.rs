//! `parse::query::log_filter` (GET /logs) on the pairs of an arbitrary query string, and
//! `Cursor::decode` on the raw text: never panic, and what they accept is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postback::domain::log::{Cursor, MAX_LOG_LIMIT};
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
