//! The `body` attribute's format: an entry and its firing as JSON, raw-deflated with a
//! preset dictionary.

use serde::{Deserialize, Serialize};

use crate::domain::firing::Firing;
use crate::domain::log::LogEntry;
use crate::ports::{StoreError, StoreResult};

/// A stored body inflates to at most this (an entry keeps ≤ 4 KB of response body).
const MAX_BODY_BYTES: usize = 1 << 20;

/// What `body` holds: the entry (whose own serialized form leaves the firing out: it is
/// not API output) and its firing.
#[derive(Serialize)]
struct StoredRef<'a> {
    entry: &'a LogEntry,
    #[serde(skip_serializing_if = "Option::is_none")]
    firing: Option<&'a Firing>,
}

#[derive(Deserialize)]
struct Stored {
    entry: LogEntry,
    #[serde(default)]
    firing: Option<Firing>,
}

/// `body`'s first byte: how the rest is encoded. 1 = raw deflate with `DICTIONARY_V1`.
/// The dictionary is part of the stored format: changing it needs a new version (and
/// reading the old one kept).
const BODY_V1: u8 = 1;
/// A preset deflate dictionary for `body`: the keys and the common values of an entry and
/// its firing (an item is compressed alone, so without it the first occurrence of every
/// key is paid in full). Commonest last: deflate reaches the end of it most cheaply.
const DICTIONARY_V1: &[u8] = br#"status changed from approved to rejected (reason: ); postback fires on "rejection_reason":"","event_name":"","pending","rejected","next_attempt_at":"","retrying","failed","skipped","resend_of":"","replay_of":"","alert":{"kind":"breaker_opened","Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1","Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36","click","event","sub1","sub2","EUR","USD","slot_second":,"destination":"http://{"entry":{"id":"","delivery_id":"d_","postback_id":"pb_","postback_name":"","transaction_id":"","type":"conversion","offer_id":"","publisher_id":"","fired_at":"2026-01-01T00:00:00.000000000Z","attempt":1,"method":"GET","url":"https://","request_headers":{"Content-Type":"application/json","Authorization":"[REDACTED]"},"request_body":null,"status_code":200,"response_body":"OK","error":null,"duration_ms":0,"outcome":"delivered","test":false,"postback_version":1},"firing":{"delivery_id":"d_","postback_id":"pb_","event":{"type":"conversion","transaction_id":"","offer_id":"","publisher_id":"","external_transaction_id":"","status":"approved","payout":"","revenue":"","currency":"","subs":[null,null,null,null,null,null,null,null,null,null],"ip":"","user_agent":"Mozilla/5.0 ","country":"","timestamp":"2026-01-01T00:00:00.000Z","params":{}},"attempt":1,"due_at":"2026-01-01T00:00:00.000000000Z","queued_at":"2026-01-01T00:00:00.000000000Z","check_status":true,"destination":"https://"}}"#;

/// The entry and its firing as JSON, raw-deflated with `DICTIONARY_V1`: 1.3–2 KB of JSON
/// become ≈ 300–550 bytes, so the item stays under 1 KB (one write unit).
pub(super) fn pack(entry: &LogEntry) -> StoreResult<Vec<u8>> {
    let failed = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("log entry cannot be compressed: {e}"));
    let json = serde_json::to_vec(&StoredRef { entry, firing: entry.firing.as_ref() }).map_err(|e| failed(&e))?;
    let mut compress = flate2::Compress::new(flate2::Compression::best(), false);
    compress.set_dictionary(DICTIONARY_V1).map_err(|e| failed(&e))?;
    let mut out = Vec::with_capacity(json.len() + 64);
    out.push(BODY_V1);
    loop {
        let consumed = usize::try_from(compress.total_in()).unwrap_or(usize::MAX);
        let rest = json.get(consumed..).unwrap_or_default();
        out.reserve(rest.len() / 2 + 64);
        match compress.compress_vec(rest, &mut out, flate2::FlushCompress::Finish).map_err(|e| failed(&e))? {
            flate2::Status::StreamEnd => return Ok(out),
            flate2::Status::Ok | flate2::Status::BufError => {}
        }
    }
}

pub(super) fn unpack(body: &[u8]) -> StoreResult<LogEntry> {
    let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt(format!("log entry body: {e}"));
    let Some((&BODY_V1, deflated)) = body.split_first() else {
        return Err(corrupt(&"unknown encoding"));
    };
    let mut decompress = flate2::Decompress::new(false);
    decompress.set_dictionary(DICTIONARY_V1).map_err(|e| corrupt(&e))?;
    let mut json = Vec::with_capacity(deflated.len() * 4);
    loop {
        let consumed = usize::try_from(decompress.total_in()).unwrap_or(usize::MAX);
        let rest = deflated.get(consumed..).unwrap_or_default();
        if json.len() >= MAX_BODY_BYTES {
            return Err(corrupt(&"larger than any entry"));
        }
        json.reserve(deflated.len() * 2 + 256);
        let before = (decompress.total_in(), decompress.total_out());
        match decompress.decompress_vec(rest, &mut json, flate2::FlushDecompress::Finish).map_err(|e| corrupt(&e))? {
            flate2::Status::StreamEnd => break,
            // No progress with all input given: the stream is cut short.
            _ if (decompress.total_in(), decompress.total_out()) == before => return Err(corrupt(&"truncated")),
            _ => {}
        }
    }
    let stored: Stored = serde_json::from_slice(&json).map_err(|e| StoreError::Corrupt(format!("log entry: {e}")))?;
    let mut entry = stored.entry;
    entry.firing = stored.firing;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::log::Outcome;

    #[test]
    fn bodies_round_trip_with_the_firing_and_shrink() {
        let firing = crate::testing::fixtures::firing("d_pack", crate::testing::fixtures::now());
        let mut entry = crate::testing::fixtures::log_entry(&firing, Outcome::Delivered);
        entry.response_body = Some("ok".into());
        let body = pack(&entry).unwrap();
        assert_eq!(unpack(&body).unwrap(), entry, "the firing comes back too");
        let json = serde_json::to_vec(&entry).unwrap().len() + serde_json::to_vec(&firing).unwrap().len();
        // The dictionary holds the keys: about a third of the JSON is left.
        assert!(body.len() * 3 < json, "{} bytes deflated from {json}", body.len());
        let mut without = entry.clone();
        without.firing = None;
        assert_eq!(unpack(&pack(&without).unwrap()).unwrap(), without);
        assert!(matches!(unpack(b"not deflate"), Err(StoreError::Corrupt(_))), "an unknown encoding");
        assert!(matches!(unpack(&body[..body.len() / 2]), Err(StoreError::Corrupt(_))), "a cut stream");
        assert!(matches!(unpack(&[]), Err(StoreError::Corrupt(_))));
        // Raw deflate has no checksum (DynamoDB keeps items intact): a damaged byte is an
        // error, or, where the damage still inflates to JSON of an entry, another entry,
        // never a panic and never the original.
        for at in [1, body.len() / 3, body.len() / 2, body.len() - 2] {
            let mut flipped = body.clone();
            flipped[at] ^= 0xff;
            match unpack(&flipped) {
                Err(e) => assert!(matches!(e, StoreError::Corrupt(_)), "{e:?}"),
                Ok(other) => assert_ne!(other, entry, "a damaged byte at {at} changed nothing"),
            }
        }
    }
}
