//! Delivery policy: what counts as delivered, what is retried and when.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

/// The request a postback renders to.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundRequest {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
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
        todo!("backoff")
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
        todo!("classify")
    }
}

/// Parse a `Retry-After` value: delta-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    todo!("parse_retry_after")
}
