//! Delivery policy: what counts as delivered, what is retried and when.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// The request a postback renders to.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundRequest {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    /// Public addresses only, whatever the sender's own setting lets other requests
    /// reach: a partner's postback unless `PARTNER_PRIVATE_TARGETS` (spec *Partners*).
    pub public_only: bool,
}

/// What came back from a destination.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundResponse {
    pub status: u16,
    /// The raw `Retry-After` header, if any.
    pub retry_after: Option<String>,
    /// Truncated body (lossy UTF-8).
    pub body: String,
    pub duration: Duration,
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("connection failed: {0}")]
    Connect(String),
    /// The destination guard refused the address; never retried.
    #[error("destination refused: {0}")]
    Refused(String),
    /// Any other transport problem (TLS, protocol); retried.
    #[error("request failed: {0}")]
    Other(String),
}

/// A postback's `success_rule`: what a 2xx response body must (not) contain to count as
/// delivered. Checked on the kept (truncated) body, as a plain case-sensitive substring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuccessRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_not_contains: Option<String>,
    /// Retry a broken rule like a 5xx (`true`) or fail at once (`false`, the default).
    #[serde(default)]
    pub retry: bool,
}

impl SuccessRule {
    /// The rule the body breaks, as a log line, or `None` when it keeps the rule.
    pub fn broken_by(&self, body: &str) -> Option<String> {
        if let Some(text) = self.body_contains.as_deref().filter(|t| !body.contains(t)) {
            return Some(format!("response body does not contain {text:?}"));
        }
        if let Some(text) = self.body_not_contains.as_deref().filter(|t| body.contains(t)) {
            return Some(format!("response body contains {text:?}"));
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all (the first one included) before a firing is `failed`.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubles each time, capped at `MAX_BACKOFF`.
    pub base_delay: Duration,
}

/// The verdict on one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Try again after this long.
    Retry(Duration),
    /// Give up; the reason goes into the log when there is no HTTP status to show it.
    Fail(String),
}

impl RetryPolicy {
    /// Backoff before attempt `attempt + 1`, given that `attempt` (1-based) just failed.
    /// `jitter` in [0, 1) spreads retries: the wait is in [d/2, d] where
    /// d = min(base * 2^(attempt-1), MAX_BACKOFF) ("equal jitter").
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let cap = MAX_BACKOFF.as_nanos();
        let exponent = attempt.saturating_sub(1);
        // Checked so that a huge attempt number saturates at the cap instead of overflowing.
        let full = 1u128
            .checked_shl(exponent)
            .and_then(|factor| self.base_delay.as_nanos().checked_mul(factor))
            .map_or(cap, |d| d.min(cap));
        let half = full / 2;
        let jitter = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
        // `half` is at most 1.08e13 ns, well inside f64's exact integer range.
        let spread = ((half as f64) * jitter).floor() as u128;
        nanos_to_duration((full - half + spread).min(full))
    }

    /// Classify an attempt's result. `attempt` is the 1-based attempt just made. A
    /// retryable result on the last attempt fails. `Retry-After` (seconds or HTTP date)
    /// on 429/503 lengthens the wait but never shortens it; it is capped at `MAX_BACKOFF`.
    pub fn classify(
        &self,
        result: &Result<OutboundResponse, SendFailure>,
        attempt: u32,
        jitter: f64,
        now: DateTime<Utc>,
    ) -> Verdict {
        self.classify_with_rule(result, None, attempt, jitter, now)
    }

    /// [`Self::classify`] with a postback's success rule: a 2xx whose body breaks it fails
    /// at once naming the rule, or with `retry` is retried like a 5xx.
    pub fn classify_with_rule(
        &self,
        result: &Result<OutboundResponse, SendFailure>,
        rule: Option<&SuccessRule>,
        attempt: u32,
        jitter: f64,
        now: DateTime<Utc>,
    ) -> Verdict {
        let (reason, retry_after) = match result {
            Ok(response) => match response.status {
                200..=299 => match rule.and_then(|r| r.broken_by(&response.body).map(|why| (r.retry, why))) {
                    None => return Verdict::Delivered,
                    Some((false, why)) => return Verdict::Fail(why),
                    Some((true, why)) => (why, None),
                },
                status @ 300..=399 => {
                    return Verdict::Fail(format!(
                        "HTTP {status}: redirects are not followed (a redirect could lead to a private address)"
                    ))
                }
                status @ (408 | 429 | 500..=599) => {
                    let honours_retry_after = matches!(status, 429 | 503);
                    let retry_after = response
                        .retry_after
                        .as_deref()
                        .filter(|_| honours_retry_after)
                        .and_then(|v| parse_retry_after(v, now));
                    (format!("HTTP {status}"), retry_after)
                }
                status @ 400..=499 => return Verdict::Fail(format!("HTTP {status}: client error, not retried")),
                status => return Verdict::Fail(format!("HTTP {status}: unexpected status, not retried")),
            },
            Err(SendFailure::Refused(why)) => return Verdict::Fail(format!("destination refused: {why}")),
            Err(failure) => (failure.to_string(), None),
        };
        if attempt >= self.max_attempts {
            return Verdict::Fail(format!("gave up after {attempt} attempts: {reason}"));
        }
        let backoff = self.backoff(attempt, jitter);
        let wait = match retry_after {
            Some(asked) => backoff.max(asked.min(MAX_BACKOFF)),
            None => backoff,
        };
        Verdict::Retry(wait)
    }
}

fn nanos_to_duration(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it always fits a u32.
    let sub = (nanos % NANOS_PER_SEC) as u32;
    Duration::new(secs, sub)
}

/// Parse a `Retry-After` value: delta-seconds or an HTTP date (relative to `now`).
///
/// Accepts the IMF-fixdate form and the two obsolete forms RFC 9110 says recipients
/// must accept (RFC 850 and asctime). A date in the past means "now" (zero wait).
/// Delta-seconds too large to represent saturate. Anything else (negative numbers,
/// fractions, garbage) is `None`, i.e. ignored.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse::<u64>().unwrap_or(u64::MAX)));
    }
    let at = parse_http_date(value)?;
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

fn parse_http_date(value: &str) -> Option<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc2822(value) {
        return Some(at.with_timezone(&Utc));
    }
    // RFC 850 (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
    let naive = chrono::NaiveDateTime::parse_from_str(value, "%A, %d-%b-%y %H:%M:%S GMT")
        .or_else(|_| chrono::NaiveDateTime::parse_from_str(value, "%a %b %e %H:%M:%S %Y"))
        .ok()?;
    Some(naive.and_utc())
}
