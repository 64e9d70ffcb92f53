//! Use cases: ingest, postback configuration, dispatch. They drive the domain through the
//! ports and know nothing of HTTP frameworks or AWS.

pub mod access;
pub mod alerts;
mod catalog;
pub mod config_api;
mod control;
mod dispatch;
pub mod ingest;
pub mod metrics;
pub mod partners;
mod queue_loop;
pub mod replay;
pub mod reversals;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

pub use catalog::{Catalog, CatalogTiming, Source};
pub use config_api::{PreviewOutput, TestOutput};
pub use control::{Health, PostbackResource, RELEASE_CHUNK};
pub use dispatch::{AttemptOutcome, Dispatcher};
pub use ingest::IngestResult;
pub use queue_loop::{
    run_queue_loop, LoopLimits, SlotReleasingSender, DEFAULT_DESTINATION_CONCURRENCY, LOCAL_CONCURRENCY,
};

use crate::domain::breaker::BreakerPolicy;
use crate::domain::delivery::RetryPolicy;
use crate::domain::ValidationError;
use crate::ports::{
    AccessStore, Clock, CombinedWrites, ControlStore, FiringQueue, HttpSender, Jitter, LogStore, PostbackStore,
    StoreError, TouchStore,
};

/// The adapters a deployment wires in.
#[derive(Clone)]
pub struct Ports {
    pub postbacks: Arc<dyn PostbackStore>,
    pub touches: Arc<dyn TouchStore>,
    pub logs: Arc<dyn LogStore>,
    pub queue: Arc<dyn FiringQueue>,
    /// Breakers, held firings, rate-limit slots.
    pub control: Arc<dyn ControlStore>,
    /// Managed keys and the audit trail.
    pub access: Arc<dyn AccessStore>,
    pub sender: Arc<dyn HttpSender>,
    /// Every "now" and every wait of the services (`SystemClock` in deployments).
    pub clock: Arc<dyn Clock>,
    /// Retry jitter (`RandomJitter` in deployments).
    pub jitter: Arc<dyn Jitter>,
    /// The multi-port writes as one transaction, where the touch store, queue and log
    /// store are one store (the local server); `None` elsewhere.
    pub combined: Option<Arc<dyn CombinedWrites>>,
}

/// What the services need from the settings.
#[derive(Debug, Clone)]
pub struct Policy {
    pub retry: RetryPolicy,
    /// How long the in-memory postback index may be used before it is reloaded whole (a
    /// backstop: see `catalog_check`).
    pub catalog_ttl: Duration,
    /// How often at most each instance checks the store's postback change stamp (AWS:
    /// another function's postback write applies within this). `None` on the local
    /// server: every postback write is its own and invalidates the index at once.
    pub catalog_check: Option<Duration>,
    /// Every postback's circuit breaker (`BREAKER_FAILURE_THRESHOLD`, `BREAKER_COOLDOWN_MS`).
    pub breaker: BreakerPolicy,
    /// `PARTNER_POSTBACKS`, `PARTNER_PRIVATE_TARGETS`.
    pub partners: crate::domain::partner::PartnerPolicy,
}

/// Why a use case did not complete. Mapped to HTTP in one place (`crate::entry::http::error`).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller's role may not do this here (`PARTNER_POSTBACKS=off`).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// Too many requests of one kind by one key; retry after this many seconds.
    #[error("too many requests: {what}")]
    TooMany { what: &'static str, retry_after: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// The application: ports + policy + the cached postback index. Cheap to share.
pub struct App {
    pub ports: Ports,
    pub policy: Policy,
    pub catalog: Catalog,
    /// What ingest and dispatch did, for `GET /metrics` and the functions' EMF lines.
    pub metrics: metrics::Metrics,
    /// Adapter figures appended to `GET /metrics` (the local server's store writer).
    pub extra_samples: Option<metrics::SampleSource>,
    /// Partner keys' tests in the last minute.
    pub partner_tests: partners::TestBudget,
}

impl App {
    pub fn new(ports: Ports, policy: Policy) -> Arc<App> {
        Self::with_samples(ports, policy, None)
    }

    /// As [`App::new`], with adapter figures for `GET /metrics`.
    pub fn with_samples(ports: Ports, policy: Policy, extra_samples: Option<metrics::SampleSource>) -> Arc<App> {
        let timing = CatalogTiming { ttl: policy.catalog_ttl, check: policy.catalog_check };
        let catalog = Catalog::new(ports.postbacks.clone(), timing, ports.clock.clone());
        Arc::new(App {
            ports,
            policy,
            catalog,
            metrics: metrics::Metrics::default(),
            extra_samples,
            partner_tests: partners::TestBudget::default(),
        })
    }

    pub fn dispatcher(self: &Arc<Self>) -> Dispatcher {
        Dispatcher::new(self.clone())
    }
}
