//! Per-postback hourly delivery stats (`GET /postbacks/{id}/stats`): what each store
//! counts per UTC hour, and how the answer is shaped. Test sends are not counted.

use std::collections::HashMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::Serialize;

use super::log::{LogEntry, Outcome};

/// Most hours one request may ask for (a week).
pub const MAX_HOURS: u32 = 168;
pub const DEFAULT_HOURS: u32 = 24;

/// What a store keeps for one postback and one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourCounts {
    pub delivered: u64,
    pub failed: u64,
    pub retrying: u64,
    pub skipped: u64,
    /// Sum and count of the durations of attempts that were made (skips excluded).
    pub duration_ms_sum: u64,
    pub attempts: u64,
}

impl HourCounts {
    /// The counts one log entry adds; `None` for a test entry (not counted).
    pub fn of(entry: &LogEntry) -> Option<HourCounts> {
        Self::of_outcome(entry.outcome, entry.duration_ms, entry.test)
    }

    /// The same from an entry's outcome, duration and test flag (a store that counts
    /// from an index holding only these).
    pub fn of_outcome(outcome: Outcome, duration_ms: u64, test: bool) -> Option<HourCounts> {
        if test {
            return None;
        }
        let mut c = HourCounts::default();
        match outcome {
            Outcome::Delivered => c.delivered = 1,
            Outcome::Failed => c.failed = 1,
            Outcome::Retrying => c.retrying = 1,
            Outcome::Skipped => c.skipped = 1,
        }
        if outcome != Outcome::Skipped {
            c.duration_ms_sum = duration_ms;
            c.attempts = 1;
        }
        Some(c)
    }

    pub fn add(&mut self, other: &HourCounts) {
        self.delivered += other.delivered;
        self.failed += other.failed;
        self.retrying += other.retrying;
        self.skipped += other.skipped;
        self.duration_ms_sum += other.duration_ms_sum;
        self.attempts += other.attempts;
    }
}

/// The start of the UTC hour `t` is in.
pub fn hour_of(t: DateTime<Utc>) -> DateTime<Utc> {
    t.duration_trunc(TimeDelta::hours(1)).unwrap_or(t)
}

/// The `n` hours ending with the current one, newest first.
pub fn last_hours(now: DateTime<Utc>, n: u32) -> Vec<DateTime<Utc>> {
    let current = hour_of(now);
    (0..i64::from(n)).map(|i| current - TimeDelta::hours(i)).collect()
}

/// One bucket of the answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsBucket {
    /// RFC 3339 start of the UTC hour.
    pub hour: DateTime<Utc>,
    pub delivered: u64,
    pub failed: u64,
    pub retrying: u64,
    pub skipped: u64,
    /// Mean duration of the hour's attempts (skips excluded), rounded; `null` if none.
    pub avg_duration_ms: Option<u64>,
}

/// Every asked hour, newest first, empty ones included.
pub fn buckets(hours: &[DateTime<Utc>], counts: &HashMap<DateTime<Utc>, HourCounts>) -> Vec<StatsBucket> {
    hours
        .iter()
        .map(|hour| {
            let c = counts.get(hour).copied().unwrap_or_default();
            StatsBucket {
                hour: *hour,
                delivered: c.delivered,
                failed: c.failed,
                retrying: c.retrying,
                skipped: c.skipped,
                avg_duration_ms: (c.attempts > 0).then(|| (c.duration_ms_sum + c.attempts / 2) / c.attempts),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).unwrap_or_default()
    }

    #[test]
    fn hours_are_utc_hour_starts_newest_first() {
        let hours = last_hours(at("2030-01-01T10:59:59.9Z"), 3);
        assert_eq!(hours, [at("2030-01-01T10:00:00Z"), at("2030-01-01T09:00:00Z"), at("2030-01-01T08:00:00Z")]);
        assert_eq!(last_hours(at("2030-01-01T00:00:00Z"), 2)[1], at("2029-12-31T23:00:00Z"));
    }

    #[test]
    fn buckets_fill_empty_hours_and_average_attempts() {
        let hours = last_hours(at("2030-01-01T10:30:00Z"), 2);
        let mut counts = HashMap::new();
        let c = HourCounts { delivered: 2, failed: 1, retrying: 0, skipped: 4, duration_ms_sum: 10, attempts: 3 };
        counts.insert(hours[1], c);
        let b = buckets(&hours, &counts);
        assert_eq!(
            b[0],
            StatsBucket { hour: hours[0], delivered: 0, failed: 0, retrying: 0, skipped: 0, avg_duration_ms: None }
        );
        assert_eq!((b[1].delivered, b[1].failed, b[1].skipped, b[1].avg_duration_ms), (2, 1, 4, Some(3)));
        let json = serde_json::to_value(&b[0]).unwrap_or_default();
        assert_eq!(json["hour"], "2030-01-01T10:00:00Z");
    }
}
