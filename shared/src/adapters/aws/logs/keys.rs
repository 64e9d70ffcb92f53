//! The key scheme of the logs table: the indexes' sort key (`fired_key`), the shard
//! of the `newest` index, and the delivered entry's id derived from its delivery id.

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest, Sha256};

use crate::domain::log::Cursor;

/// Shards of the `newest` index: each index partition takes ~1000 writes/s, so four
/// carry ~4000 log entries a second; a listing without a postback or transaction filter
/// queries all four and merges them.
pub const LOG_SHARDS: u32 = 4;

pub(super) fn shard_of(id: &str) -> u32 {
    // FNV-1a: stable across processes and versions (std's hasher is not).
    let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    hash % LOG_SHARDS
}

/// `t` clamped to the years 0000-9999, whose RFC 3339 form has the fixed width that
/// makes text order time order.
fn key_time(t: DateTime<Utc>) -> DateTime<Utc> {
    // 0000-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z.
    let min = DateTime::from_timestamp(-62_167_219_200, 0).unwrap_or(DateTime::<Utc>::MIN_UTC);
    let max = DateTime::from_timestamp(253_402_300_799, 999_999_999).unwrap_or(DateTime::<Utc>::MAX_UTC);
    t.clamp(min, max)
}

/// `fired_at` as the fixed-width text that sorts like the time:
/// `2026-01-02T03:04:05.123456789Z`.
pub(crate) fn time_key(t: DateTime<Utc>) -> String {
    key_time(t).to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// The indexes' sort key of an entry (or of a cursor's position): its `fired_at` key,
/// `#`, its id. Ordered as the listing is: by `fired_at`, then by id.
pub(super) fn fired_key(fired_at: DateTime<Utc>, id: &str) -> String {
    format!("{}#{id}", time_key(fired_at))
}

/// The id of a delivery's delivered entry, which is also its delivered marker's key: a
/// UUIDv8 of SHA-256(`delivered|` + delivery id). Distinct from every UUIDv7 the service
/// mints (version 8), and a delivery id has one delivered attempt.
pub fn delivered_entry_id(delivery_id: &str) -> String {
    let digest = Sha256::new().chain_update(b"delivered|").chain_update(delivery_id.as_bytes()).finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

/// The cursor at a sort key (`fired_at#id`), i.e. just after that position.
pub(super) fn cursor_at(key: &str) -> Option<Cursor> {
    let (time, id) = key.split_once('#')?;
    let fired_at = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
    Some(Cursor { fired_at, last_id: id.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64, nanos: u32) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, nanos).unwrap()
    }

    #[test]
    fn fired_keys_sort_by_fired_at_then_id() {
        let ids = ["0190a0a0-0000-7000-8000-00000000000b", "0190a0a0-0000-7000-8000-00000000000a"];
        // (fired_at, id) pairs in the listing's order, ascending; ids deliberately
        // opposite to time.
        let ordered = [
            (at(1_767_225_599, 999_999_999), ids[0]),
            (at(1_767_225_600, 0), ids[1]),
            (at(1_767_225_600, 0), ids[0]),
            (at(1_767_225_600, 1), ids[1]),
            (at(1_767_225_600, 100_000_000), ids[1]),
            (at(1_767_225_609, 0), ids[1]),
            (at(1_767_225_610, 0), ids[0]),
        ];
        let keys: Vec<String> = ordered.iter().map(|(t, id)| fired_key(*t, id)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(keys[1], "2026-01-01T00:00:00.000000000Z#0190a0a0-0000-7000-8000-00000000000a");
        assert!(keys.iter().all(|k| k.len() == keys[0].len()), "fixed width");
    }

    #[test]
    fn delivered_ids_are_per_delivery_uuids_unlike_minted_ones() {
        let a = delivered_entry_id("d_0123");
        assert_eq!(a, delivered_entry_id("d_0123"), "the same for every attempt and process");
        assert_ne!(a, delivered_entry_id("d_0124"));
        let parsed = uuid::Uuid::parse_str(&a).unwrap();
        assert_eq!(parsed.get_version_num(), 8, "never equal to a UUIDv7 the service mints");
        assert_eq!(parsed.hyphenated().to_string(), a, "the usual text form");
    }

    #[test]
    fn shards_spread_ids() {
        let mut counts = [0u32; LOG_SHARDS as usize];
        let start = chrono::DateTime::from_timestamp_millis(1_900_000_000_000).unwrap();
        for i in 0..400 {
            let at = start + chrono::Duration::milliseconds(i);
            counts[shard_of(&crate::domain::ids::time_ordered(at).to_string()) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 50), "{counts:?}");
    }
}
