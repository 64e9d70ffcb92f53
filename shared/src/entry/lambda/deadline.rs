//! The invocation's deadline: the runtime's when it is plausible, else the configured
//! function timeout (`FUNCTION_TIMEOUT_SECONDS`) from now.

use std::time::{Duration, SystemTime};

use crate::entry::config::{parse_or, SettingsError};

/// The dispatch function's configured timeout in seconds, set by `template.yaml` from
/// the function's `Timeout`: the invocation's budget when the runtime reports an
/// implausible deadline (`invocation_deadline`).
pub const FUNCTION_TIMEOUT_ENV: &str = "FUNCTION_TIMEOUT_SECONDS";

/// `FUNCTION_TIMEOUT_SECONDS` when unset: the template's dispatch `Timeout`.
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Lambda's longest function timeout: a deadline further ahead is not a real one.
pub const MAX_FUNCTION_TIMEOUT: Duration = Duration::from_secs(900);

/// How far in the past a reported deadline may be and still be a real one (an
/// invocation handed over late). Further back it is not: `cargo lambda watch` 1.9.2
/// reports 600000 ms after the epoch for every invocation.
pub const PAST_DEADLINE_TOLERANCE: Duration = Duration::from_secs(5);

/// `FUNCTION_TIMEOUT_SECONDS` read with `get` (`DEFAULT_FUNCTION_TIMEOUT` when unset).
pub fn function_timeout(get: impl Fn(&str) -> Option<String>) -> Result<Duration, SettingsError> {
    match parse_or(&get, FUNCTION_TIMEOUT_ENV, DEFAULT_FUNCTION_TIMEOUT.as_secs())? {
        seconds @ 1..=900 => Ok(Duration::from_secs(seconds)),
        _ => Err(SettingsError { name: FUNCTION_TIMEOUT_ENV, message: "must be whole seconds, 1..=900".into() }),
    }
}

/// The deadline an invocation works to: the runtime's `reported` one when it is
/// plausible at `now` (not more than `PAST_DEADLINE_TOLERANCE` past, not more than
/// `MAX_FUNCTION_TIMEOUT` ahead), else `now` + the configured `function_timeout`. The
/// flag says whether the reported one was used.
pub fn invocation_deadline(
    reported: SystemTime,
    now: chrono::DateTime<chrono::Utc>,
    function_timeout: Duration,
) -> (chrono::DateTime<chrono::Utc>, bool) {
    let reported = chrono::DateTime::<chrono::Utc>::from(reported);
    let span = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    let plausible = reported >= now - span(PAST_DEADLINE_TOLERANCE) && reported <= now + span(MAX_FUNCTION_TIMEOUT);
    if plausible {
        (reported, true)
    } else {
        (now + span(function_timeout.min(MAX_FUNCTION_TIMEOUT)), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn system(t: chrono::DateTime<chrono::Utc>) -> SystemTime {
        SystemTime::from(t)
    }

    /// A real deadline is used as reported, a little late included; cargo lambda
    /// watch's fixed 1970 one and one beyond Lambda's 15 minutes fall back to the
    /// configured timeout from the clock's now.
    #[test]
    fn an_implausible_deadline_falls_back_to_the_function_timeout() {
        let now = at(1_900_000_000_000);
        let timeout = Duration::from_secs(60);
        let fallback = (now + chrono::Duration::seconds(60), false);
        for ahead_ms in [-5_000, -1, 0, 1, 30_000, 900_000] {
            let reported = now + chrono::Duration::milliseconds(ahead_ms);
            assert_eq!(invocation_deadline(system(reported), now, timeout), (reported, true), "{ahead_ms} ms");
        }
        assert_eq!(invocation_deadline(system(at(600_000)), now, timeout), fallback, "cargo lambda watch 1.9.2");
        assert_eq!(invocation_deadline(SystemTime::UNIX_EPOCH, now, timeout), fallback);
        for ahead_ms in [-5_001, -3_600_000, 900_001, 86_400_000] {
            let reported = now + chrono::Duration::milliseconds(ahead_ms);
            assert_eq!(invocation_deadline(system(reported), now, timeout), fallback, "{ahead_ms} ms");
        }
        let (short, _) = invocation_deadline(system(at(600_000)), now, Duration::from_secs(29));
        assert_eq!(short, now + chrono::Duration::seconds(29), "the configured timeout, not a constant");
    }

    #[test]
    fn the_function_timeout_setting() {
        assert_eq!(function_timeout(|_| None).unwrap(), DEFAULT_FUNCTION_TIMEOUT);
        assert_eq!(function_timeout(|_| Some(" 29 ".into())).unwrap(), Duration::from_secs(29));
        for bad in ["0", "901", "1.5", "sixty", "-1"] {
            let err = function_timeout(|_| Some(bad.into())).unwrap_err();
            assert_eq!(err.name, FUNCTION_TIMEOUT_ENV, "{bad}");
        }
    }
}
