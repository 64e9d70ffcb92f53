//! `parse::event::from_query` (GET /events) on the pairs of an arbitrary query string: never
//! panics; what it accepts has a stable `dedupe_key` and survives serialize →
//! deserialize unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postback::entry::http::parse;
use postback_fuzz::{check_accepted_event, received_at};

fuzz_target!(|data: &[u8]| {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(data).into_owned().collect();
    if let Ok(event) = parse::event::from_query(&pairs, received_at()) {
        check_accepted_event(&event);
    }
});
