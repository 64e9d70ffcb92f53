//! `parse::event::from_json` (POST /events) on arbitrary JSON: never panics; what it accepts has
//! a stable `dedupe_key` and survives serialize → deserialize unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postback::entry::http::parse;
use postback_fuzz::{check_accepted_event, received_at};

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    if let Ok(event) = parse::event::from_json(&value, received_at()) {
        check_accepted_event(&event);
    }
});
