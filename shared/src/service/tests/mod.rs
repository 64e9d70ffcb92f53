//! The services' rules on the in-memory fakes: no socket, no emulator, no sleep. Time
//! is a manual clock, jitter is fixed, the receiver is a scripted sender, so every due
//! time is exact. Each rule the end-to-end tests (`tests/it/e2e_flow.rs`) check through
//! a real server has its fast twin here.
//!
//! Run: `cargo test -p postback --lib service`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report
#![allow(clippy::type_complexity)] // case tables are tuples

mod alerts;
mod breaker;
mod catalog;
mod config;
mod dispatch;
mod ingest;
mod queue_loop;
mod rate_limit;
mod replay;
mod reversals;
mod signing;
mod templates;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{App, AttemptOutcome, IngestResult, Policy};
use crate::domain::breaker::BreakerPolicy;
use crate::domain::delivery::RetryPolicy;
use crate::domain::event::Event;
use crate::domain::firing::Firing;
use crate::domain::log::LogEntry;
use crate::domain::postback::PostbackSpec;
use crate::entry::http::parse;
use crate::ports::{Clock, FiringQueue, Jitter, Leased};
use crate::testing::{self, FixedJitter, ManualClock, MemoryAdapters, MemoryOptions, ScriptedSender, TestApp};

/// Where every test's clock starts.
pub(super) fn start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z").unwrap().with_timezone(&Utc)
}

/// 3 attempts, 10 s before the second (20 s before the third).
pub(super) const RETRY: RetryPolicy = RetryPolicy { max_attempts: 3, base_delay: Duration::from_secs(10) };

/// With `RETRY` and jitter 0.5, the wait after attempt 1: 10 s / 2 + 10 s / 2 * 0.5.
pub(super) const FIRST_WAIT_MS: i64 = 7_500;

/// The settings' defaults: 10 failures, 30 s first cool-down, 10 s timeout + 30 s lease.
pub(super) const BREAKER: BreakerPolicy =
    BreakerPolicy { failure_threshold: 10, cooldown_ms: 30_000, probe_lease_ms: 40_000 };

pub(super) fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

/// An app on memory adapters, a manual clock, fixed jitter and a scripted receiver.
pub(super) struct World {
    pub app: Arc<App>,
    pub clock: Arc<ManualClock>,
    pub memory: MemoryAdapters,
    pub sender: Arc<ScriptedSender>,
}

impl World {
    /// `RETRY`, jitter 0.5, the embedded queue's semantics.
    pub fn new() -> Self {
        Self::with(Arc::new(FixedJitter(0.5)), RETRY, MemoryOptions::default())
    }

    pub fn with(jitter: Arc<dyn Jitter>, retry: RetryPolicy, options: MemoryOptions) -> Self {
        Self::build(jitter, retry, options, BREAKER)
    }

    /// `RETRY`, jitter 0.5, this breaker policy.
    pub fn with_breaker(breaker: BreakerPolicy) -> Self {
        Self::build(Arc::new(FixedJitter(0.5)), RETRY, MemoryOptions::default(), breaker)
    }

    pub fn build(jitter: Arc<dyn Jitter>, retry: RetryPolicy, options: MemoryOptions, breaker: BreakerPolicy) -> Self {
        let policy = Policy { retry, breaker, ..testing::policy() };
        let TestApp { app, memory, clock, sender } =
            testing::app_with(Arc::new(ManualClock::new(start())), policy, jitter, options);
        Self { app, clock, memory, sender }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn advance_ms(&self, n: u64) {
        self.clock.advance(Duration::from_millis(n));
    }

    /// Create a postback through the configuration use case; returns its id.
    pub async fn postback(&self, json: Value) -> String {
        self.app.create_postback(spec(&json)).await.unwrap().id
    }

    /// Ingest events given as the JSON a tracker sends, received now.
    pub async fn ingest(&self, events: &[Value]) -> Vec<IngestResult> {
        let now = self.now();
        let events: Vec<Event> = events.iter().map(|e| parse::event::from_json(e, now).unwrap()).collect();
        self.app.ingest(events).await.unwrap()
    }

    /// The sample event of preview/test for a stored postback, received now.
    pub async fn sample(&self, postback_id: &str, overrides: Option<Value>) -> Event {
        let postback = self.app.get_postback(postback_id).await.unwrap();
        parse::postback::sample_event(&postback, overrides.as_ref(), self.now()).unwrap()
    }

    pub async fn ingest_one(&self, event: Value) -> IngestResult {
        self.ingest(&[event]).await.pop().unwrap()
    }

    /// Every due firing, leased.
    pub async fn receive(&self) -> Vec<Leased> {
        self.memory.queue.receive(1_000).await.unwrap()
    }

    /// The one due firing, leased.
    pub async fn receive_one(&self) -> Leased {
        let mut due = self.receive().await;
        assert_eq!(due.len(), 1, "exactly one due firing expected: {:?}", ids(&due));
        due.pop().unwrap()
    }

    pub async fn process(&self, leased: &Leased) -> AttemptOutcome {
        self.app.dispatcher().process(leased).await.unwrap()
    }

    /// Receive the one due firing and process it.
    pub async fn process_one(&self) -> AttemptOutcome {
        let leased = self.receive_one().await;
        self.process(&leased).await
    }

    /// Every log entry, newest first.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.memory.logs.entries()
    }

    /// Every queued firing, earliest first.
    pub fn queued(&self) -> Vec<Firing> {
        self.memory.queue.queued()
    }
}

/// A postback spec from the JSON an admin sends.
pub(super) fn spec(json: &Value) -> PostbackSpec {
    parse::postback::spec_from_json(json).unwrap()
}

fn ids(batch: &[Leased]) -> Vec<&str> {
    batch.iter().map(|l| l.firing.delivery_id.as_str()).collect()
}

/// Let every other task run until it waits on something (the memory adapters never
/// block, so a few turns of the current-thread runtime are enough).
pub(super) async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}
