//! Ids ordered by time (UUID v7) whose time is the caller's `now` — the `Clock` port's —
//! so that they follow the clock a test moves, as every other time does.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use uuid::{NoContext, Timestamp, Uuid};

/// The random low bits of a UUID v7 (`rand_b`): one more than the last id stays a valid
/// v7 of the same millisecond while they are not all ones.
const RAND_B: u128 = (1 << 62) - 1;

/// The last id made in this process.
static LAST: Mutex<Option<Uuid>> = Mutex::new(None);

/// A new UUID v7 for the instant `at` (before 1970: the epoch). Ids made one after the
/// other within one millisecond (a manual clock standing still) sort in the order made;
/// an id always carries its own `at`, whatever time the one before it had (the uuid
/// crate's process context would carry the latest time seen forward instead).
pub fn time_ordered(at: DateTime<Utc>) -> Uuid {
    let seconds = u64::try_from(at.timestamp()).unwrap_or(0);
    let fresh = Uuid::new_v7(Timestamp::from_unix(NoContext, seconds, at.timestamp_subsec_nanos()));
    // A panic elsewhere while holding the lock leaves the last id as valid as before.
    let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let id = match *last {
        Some(prev) if prev.as_u128() >> 80 == fresh.as_u128() >> 80 && prev.as_u128() & RAND_B != RAND_B => {
            Uuid::from_u128(prev.as_u128() + 1)
        }
        _ => fresh,
    };
    *last = Some(id);
    id
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use chrono::TimeZone;

    use super::*;

    #[test]
    fn ids_carry_the_given_time_and_sort_in_the_order_made() {
        let at = Utc.timestamp_millis_opt(1_900_000_000_123).unwrap();
        let ids: Vec<Uuid> = (0..1000).map(|_| time_ordered(at)).collect();
        for id in &ids {
            let (seconds, nanos) = id.get_timestamp().unwrap().to_unix();
            assert_eq!((seconds, nanos / 1_000_000), (1_900_000_000, 123), "{id}");
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "one millisecond, still in order");
        let later = time_ordered(at + chrono::Duration::milliseconds(1));
        assert!(later > ids[999]);
        let earlier = at - chrono::Duration::days(365);
        let id = time_ordered(earlier);
        assert_eq!(
            id.get_timestamp().unwrap().to_unix().0,
            1_900_000_000 - 365 * 86_400,
            "its own time, not the latest"
        );
        assert_eq!(id.get_version_num(), 7);
    }
}
