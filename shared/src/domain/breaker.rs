//! A postback's circuit breaker, as data (see *Delivery control → Circuit breaker*). The
//! transitions are pure functions of the stored state, the outcome and the time; the
//! service reads and writes the state through `ports::ControlStore` with conditional
//! writes, so every dispatcher (local tasks, concurrent Lambda invocations) shares it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    #[default]
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// The stored state of one postback's breaker. A postback with none stored is closed
/// with no failures (`Breaker::default()`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Breaker {
    pub state: BreakerState,
    /// Retryable failures in a row (reset by any other result).
    pub consecutive_failures: u32,
    /// When the current outage began (the first open); kept through re-opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
    /// When an open breaker lets its next probe through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_probe_at: Option<DateTime<Utc>>,
    /// The current cool-down (doubles on each re-open, capped); 0 when closed.
    #[serde(default)]
    pub cooldown_ms: u64,
    /// Half-open: the firing sent as the probe, and until when it may be in flight
    /// before another dispatcher may probe instead (its sender crashed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_delivery_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_until: Option<DateTime<Utc>>,
}

/// Most a cool-down grows to (the spec's 10 minutes).
pub const MAX_COOLDOWN_MS: u64 = 10 * 60 * 1000;
