//! The port contract suite, written once and run against every adapter (memory,
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is the failure report
//! embedded SQLite, DynamoDB/SQS), plus the fixtures it builds its values with, and the
//! in-memory fakes of every port (re-exported from `crate::adapters::memory`).
//!
//! An adapter's test implements `AdapterFactory` and expands `contract_tests!` with it:
//! one `#[tokio::test]` per check (see `contract`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::ports::{AccessStore, Clock, ControlStore, FiringQueue, LogStore, PostbackStore, TouchStore};

mod app;
pub mod contract;
pub mod fixtures;
pub mod metrics;

pub use app::{app, app_with, policy, TestApp};

pub use crate::adapters::memory::{
    Answer, AuditTrail, FixedJitter, ManualClock, MemoryAccessStore, MemoryAdapters, MemoryLogStore, MemoryOptions,
    MemoryPostbackStore, MemoryQueue, MemoryTouchStore, Reply, ScriptedJitter, ScriptedSender, SentRequest,
};

/// The four storage ports of one adapter family, and the time they run on.
#[derive(Clone)]
pub struct Adapters {
    pub postbacks: Arc<dyn PostbackStore>,
    pub touches: Arc<dyn TouchStore>,
    pub logs: Arc<dyn LogStore>,
    pub queue: Arc<dyn FiringQueue>,
    pub control: Arc<dyn ControlStore>,
    /// Managed keys and the audit trail (sharing its records with `postbacks`' writes).
    pub access: Arc<dyn AccessStore>,
    /// The manual clock the adapters are timed by, if any; `None`: real time.
    pub clock: Option<Arc<ManualClock>>,
}

impl Adapters {
    /// Adapters that run on real time.
    pub fn real_time(
        postbacks: Arc<dyn PostbackStore>,
        touches: Arc<dyn TouchStore>,
        logs: Arc<dyn LogStore>,
        queue: Arc<dyn FiringQueue>,
        control: Arc<dyn ControlStore>,
        access: Arc<dyn AccessStore>,
    ) -> Self {
        Self { postbacks, touches, logs, queue, control, access, clock: None }
    }

    /// Now on the adapters' time, in whole milliseconds.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.clock {
            Some(clock) => clock.now(),
            None => fixtures::now(),
        }
    }

    /// Let `d` pass: a real sleep, or the manual clock moved on (then other tasks get a
    /// turn).
    pub async fn pause(&self, d: Duration) {
        match &self.clock {
            Some(clock) => {
                clock.advance(d);
                tokio::task::yield_now().await;
            }
            None => tokio::time::sleep(d).await,
        }
    }
}

#[async_trait]
pub trait AdapterFactory: Send + Sync {
    /// Fresh, empty adapters whose queue lease/visibility is `contract::LEASE` (2 s).
    async fn fresh(&self) -> Adapters;
}

/// Fresh memory adapters on a manual clock that starts at the real time now.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryFactory;

#[async_trait]
impl AdapterFactory for MemoryFactory {
    async fn fresh(&self) -> Adapters {
        let clock = Arc::new(ManualClock::starting_now());
        let memory = MemoryAdapters::new(clock.clone(), MemoryOptions { lease: contract::LEASE, ..Default::default() });
        Adapters {
            postbacks: memory.postbacks,
            touches: memory.touches,
            logs: memory.logs,
            queue: memory.queue,
            control: memory.control,
            access: memory.access,
            clock: Some(clock),
        }
    }
}
