//! Wiring for the three Lambda functions. Everything is built once per execution
//! environment, at init (outside the handler): settings, SDK clients, adapters, the
//! HTTP sender (its TLS client on first use) and the `App`. The functions themselves only start a runtime:
//!
//! - `config-api`: `lambda_http::run(app.router(RouteSet::Admin))`
//! - `ingest`: `lambda_http::run(app.router(RouteSet::Ingest))`
//! - `dispatch`: `lambda_runtime::run(service_fn(|e| dispatch_batch(&batch, e.payload, e.context.deadline())))`
//!
//! Queue messages reach `dispatch` through the SQS event source with
//! `ReportBatchItemFailures`: the event source deletes every message not reported as
//! failed, so the dispatch function never deletes messages itself (`EventSourceQueue`):
//! one SQS request less per firing, and a dependency failure simply leaves the message
//! to come back after the visibility timeout.//!
//! The jobs, one file each: this file wires the functions (`LambdaApp`); `batch` runs
//! the dispatch function's SQS batches; `deadline` decides the invocation's deadline;
//! `emf` prints the invocation's metrics. The Lambda-only adapters (`LazySender`,
//! `EventSourceQueue`) are in `crate::adapters::lambda`.

mod batch;
mod deadline;
mod emf;

use std::sync::Arc;
use std::time::Duration;

use crate::adapters::aws::{
    AwsAdapters, AwsClients, MissingResourceName, QueueSettings, ResourceNames, SqsFiringQueue,
};
use crate::adapters::lambda::{EventSourceQueue, LazySender};
use crate::adapters::sender::SenderConfig;
use crate::adapters::system::{RandomJitter, SystemClock};
use crate::entry::config::{parse_or, Settings, SettingsError};
use crate::entry::http::{router, ApiKeys, RouteSet};
use crate::ports::Clock;
use crate::service::{App, CatalogTiming, Policy, Ports};

pub use batch::{
    dispatch_batch, dispatch_message, BatchDispatcher, BatchMessage, MessageOutcome, DISPATCH_CONCURRENCY,
    RESPONSE_GRACE, STORE_MARGIN,
};
pub use deadline::{
    function_timeout, invocation_deadline, DEFAULT_FUNCTION_TIMEOUT, FUNCTION_TIMEOUT_ENV, MAX_FUNCTION_TIMEOUT,
    PAST_DEADLINE_TOLERANCE,
};
pub use emf::{emf_line, METRICS_NAMESPACE};

use emf::emit_metrics;

/// How long a function uses its in-memory postback index before reloading it whole: a
/// backstop, since other functions' postback writes are learnt by `CATALOG_CHECK`.
pub const CATALOG_TTL: Duration = Duration::from_secs(60);

/// How often at most a function instance checks the postbacks' change stamp (one
/// strongly consistent GetItem) and patches in what changed: another function's
/// postback write applies within this plus a few reads (the spec's bound is 2 s).
pub const CATALOG_CHECK: Duration = Duration::from_millis(500);

/// The catalog timing of every function.
pub const CATALOG_TIMING: CatalogTiming = CatalogTiming { ttl: CATALOG_TTL, check: Some(CATALOG_CHECK) };

/// The stamp check's interval in milliseconds, 0..=2000 (default `CATALOG_CHECK`): 0
/// checks at every call, so a postback write applies on the next one (the end-to-end
/// tests on the AWS shape, which then need not wait for it); more than the spec's 2 s
/// bound is refused.
pub const CATALOG_CHECK_ENV: &str = "POSTBACK_INDEX_CHECK_MS";

/// The functions' catalog timing with `CATALOG_CHECK_ENV` applied.
pub fn catalog_timing(get: impl Fn(&str) -> Option<String>) -> Result<CatalogTiming, SettingsError> {
    let default = u64::try_from(CATALOG_CHECK.as_millis()).unwrap_or(u64::MAX);
    match parse_or(&get, CATALOG_CHECK_ENV, default)? {
        ms @ 0..=2000 => Ok(CatalogTiming { check: Some(Duration::from_millis(ms)), ..CATALOG_TIMING }),
        _ => Err(SettingsError { name: CATALOG_CHECK_ENV, message: "must be whole milliseconds, 0..=2000".into() }),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Resources(#[from] MissingResourceName),
}

/// Everything a function needs, built once at init.
#[derive(Clone)]
pub struct LambdaApp {
    pub app: Arc<App>,
    pub settings: Settings,
    pub names: ResourceNames,
    /// The SQS/Scheduler queue itself (not the event-source view the `App` uses).
    pub queue: Arc<SqsFiringQueue>,
    /// `FUNCTION_TIMEOUT_SECONDS` (see `invocation_deadline`).
    pub function_timeout: Duration,
}

impl std::fmt::Debug for LambdaApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaApp").field("settings", &self.settings).field("names", &self.names).finish()
    }
}

impl LambdaApp {
    /// Read the settings (both API keys required) and resource names from the
    /// environment and build the app. Call once, before starting the runtime.
    pub async fn from_env() -> Result<Self, InitError> {
        let (settings, _) = Settings::from_env(false)?;
        let names = ResourceNames::from_env()?;
        let function_timeout = function_timeout(|name| std::env::var(name).ok())?;
        let catalog = catalog_timing(|name| std::env::var(name).ok())?;
        let clients = AwsClients::from_env().await;
        let queue = QueueSettings::from_names(&names);
        Ok(Self { function_timeout, ..Self::build_with(settings, &clients, &names, queue, catalog) })
    }

    /// Build from explicit parts (tests, tools).
    pub fn build(settings: Settings, clients: &AwsClients, names: &ResourceNames) -> Self {
        Self::build_with_queue(settings, clients, names, QueueSettings::from_names(names))
    }

    /// As `build`, with the queue's settings given (tests shorten the scheduling
    /// threshold and lead to watch real schedules fire within seconds).
    pub fn build_with_queue(
        settings: Settings,
        clients: &AwsClients,
        names: &ResourceNames,
        queue: QueueSettings,
    ) -> Self {
        Self::build_with(settings, clients, names, queue, CATALOG_TIMING)
    }

    /// As `build_with_queue`, with the postback index's timing given (tests: a check
    /// that never comes due, to hold a stale index; or none, for exact request counts).
    pub fn build_with(
        settings: Settings,
        clients: &AwsClients,
        names: &ResourceNames,
        queue: QueueSettings,
        catalog: CatalogTiming,
    ) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut adapters = AwsAdapters::new(clients, names, settings.log_retention(), clock.clone())
            .with_audit_retention(clients, names, settings.audit_retention());
        adapters.queue = Arc::new(SqsFiringQueue::new(clients, queue, clock.clone()));
        let sender = LazySender::new(SenderConfig::new(settings.delivery_timeout, settings.allow_private_targets));
        let ports = Ports {
            postbacks: adapters.postbacks,
            touches: adapters.touches,
            logs: adapters.logs,
            queue: Arc::new(EventSourceQueue::new(adapters.queue.clone())),
            control: adapters.control,
            access: adapters.access,
            sender: Arc::new(sender),
            clock,
            jitter: Arc::new(RandomJitter),
            combined: None,
        };
        let policy = Policy {
            retry: settings.retry,
            catalog_ttl: catalog.ttl,
            catalog_check: catalog.check,
            breaker: settings.breaker,
            partners: settings.partners,
        };
        let app = App::new(ports, policy);
        Self { app, settings, names: names.clone(), queue: adapters.queue, function_timeout: DEFAULT_FUNCTION_TIMEOUT }
    }

    /// The shared HTTP router with this deployment's keys, for `lambda_http::run`.
    /// After each request (one per invocation), the invocation's counts go to stdout as
    /// one CloudWatch EMF line.
    pub fn router(&self, routes: RouteSet) -> axum::Router {
        let app = self.app.clone();
        let function = if routes == RouteSet::Ingest { "ingest" } else { "config-api" };
        router(self.app.clone(), ApiKeys::new(&self.settings.admin_api_key, &self.settings.ingest_api_key), routes)
            .layer(axum::middleware::from_fn(move |request, next: axum::middleware::Next| {
                let app = app.clone();
                async move {
                    let response = next.run(request).await;
                    emit_metrics(&app, function);
                    response
                }
            }))
    }

    /// What the dispatch function's handler calls `dispatch_batch` with.
    pub fn batch_dispatcher(&self) -> BatchDispatcher {
        BatchDispatcher {
            dispatcher: self.app.dispatcher(),
            queue: self.queue.clone(),
            delivery_timeout: self.settings.delivery_timeout,
            function_timeout: self.function_timeout,
            warned: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_check_setting() {
        assert_eq!(catalog_timing(|_| None).unwrap(), CATALOG_TIMING);
        let at_once = catalog_timing(|_| Some(" 0 ".into())).unwrap();
        assert_eq!((at_once.check, at_once.ttl), (Some(Duration::ZERO), CATALOG_TTL));
        assert_eq!(catalog_timing(|_| Some("2000".into())).unwrap().check, Some(Duration::from_secs(2)));
        for bad in ["2001", "-1", "0.5", "soon"] {
            let err = catalog_timing(|_| Some(bad.into())).unwrap_err();
            assert_eq!(err.name, CATALOG_CHECK_ENV, "{bad}");
        }
    }
}
