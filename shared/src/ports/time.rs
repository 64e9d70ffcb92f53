//! Time and chance as ports: the services and the adapters read the clock, wait, and
//! draw retry jitter only through these, so tests can drive them exactly (`crate::testing::ManualClock`,
//! `FixedJitter`). The real ones are `crate::adapters::system::{SystemClock, RandomJitter}`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// `Debug` so that the adapters holding one stay `Debug`.
#[async_trait]
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
    /// Resolve once `now() >= at` (at once if it already is).
    async fn sleep_until(&self, at: DateTime<Utc>);
}

/// A source of retry jitter.
pub trait Jitter: Send + Sync {
    /// A value in [0, 1).
    fn next(&self) -> f64;
}
