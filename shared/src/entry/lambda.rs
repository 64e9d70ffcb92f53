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
//! to come back after the visibility timeout.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::{FutureExt, StreamExt};

use crate::adapters::aws::{
    leased_from_lambda_message, AwsAdapters, AwsClients, QueueSettings, ResourceNames, SqsFiringQueue,
};
use crate::adapters::sender::{ReqwestSender, SenderConfig};
use crate::adapters::system::{RandomJitter, SystemClock};
use crate::domain::delivery::{OutboundRequest, OutboundResponse, SendFailure};
use crate::domain::firing::Firing;
use crate::entry::config::{Settings, SettingsError};
use crate::entry::http::{router, ApiKeys, RouteSet};
use crate::ports::{Clock, FiringQueue, HttpSender, Leased, QueueDepth, StoreResult};
use crate::service::{App, AttemptOutcome, CatalogTiming, Dispatcher, Policy, Ports};

/// How long a function uses its in-memory postback index before reloading it whole: a
/// backstop, since other functions' postback writes are learnt by `CATALOG_CHECK`.
pub const CATALOG_TTL: Duration = Duration::from_secs(60);

/// How often at most a function instance checks the postbacks' change stamp (one
/// strongly consistent GetItem) and patches in what changed: another function's
/// postback write applies within this plus a few reads (the spec's bound is 2 s).
pub const CATALOG_CHECK: Duration = Duration::from_millis(500);

/// The catalog timing of every function.
pub const CATALOG_TIMING: CatalogTiming = CatalogTiming { ttl: CATALOG_TTL, check: Some(CATALOG_CHECK) };

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

/// Messages of one batch dispatched at once (the event source's batch size is 10).
pub const DISPATCH_CONCURRENCY: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
}

/// `FUNCTION_TIMEOUT_SECONDS` read with `get` (`DEFAULT_FUNCTION_TIMEOUT` when unset).
pub fn function_timeout(get: impl Fn(&str) -> Option<String>) -> Result<Duration, SettingsError> {
    let Some(value) = get(FUNCTION_TIMEOUT_ENV).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else {
        return Ok(DEFAULT_FUNCTION_TIMEOUT);
    };
    match value.parse::<u64>() {
        Ok(seconds @ 1..=900) => Ok(Duration::from_secs(seconds)),
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

/// The outbound HTTP client, built on first use. Building it loads the TLS trust roots
/// (a few milliseconds, about a third of a function's init): config-api and ingest send
/// only for `/postbacks/{id}/test` and resends, so most of their instances never pay
/// it; dispatch pays it once, on its first batch.
pub struct LazySender {
    config: SenderConfig,
    sender: tokio::sync::OnceCell<ReqwestSender>,
}

impl LazySender {
    pub fn new(config: SenderConfig) -> Self {
        Self { config, sender: tokio::sync::OnceCell::new() }
    }
}

#[async_trait]
impl HttpSender for LazySender {
    async fn send(&self, request: &OutboundRequest) -> Result<OutboundResponse, SendFailure> {
        let sender =
            self.sender.get_or_try_init(|| async { ReqwestSender::new(self.config.clone()) }).await.map_err(|e| {
                // Only a broken TLS set-up gets here; retried like any transport failure.
                tracing::error!(error = %e, "cannot build the HTTP client");
                SendFailure::Other(e.to_string())
            })?;
        sender.send(request).await
    }
}

/// The firing queue as the dispatch function sees it: `ack` is a no-op because the SQS
/// event source deletes each message the handler does not report as failed. `retry`
/// therefore only enqueues the next attempt; the current message goes with the batch.
#[derive(Debug, Clone)]
pub struct EventSourceQueue {
    inner: Arc<SqsFiringQueue>,
}

impl EventSourceQueue {
    pub fn new(inner: Arc<SqsFiringQueue>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl FiringQueue for EventSourceQueue {
    async fn enqueue(&self, firings: &[Firing]) -> StoreResult<()> {
        self.inner.enqueue(firings).await
    }

    async fn receive(&self, max: usize) -> StoreResult<Vec<Leased>> {
        self.inner.receive(max).await
    }

    async fn depth(&self) -> StoreResult<QueueDepth> {
        self.inner.depth().await
    }

    async fn ack(&self, _leased: &Leased) -> StoreResult<()> {
        Ok(())
    }

    async fn retry(&self, _leased: &Leased, next: &Firing) -> StoreResult<()> {
        self.inner.enqueue(std::slice::from_ref(next)).await
    }
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
        let clients = AwsClients::from_env().await;
        Ok(Self { function_timeout, ..Self::build(settings, &clients, &names) })
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

/// The dispatcher plus the queue that early arrivals are put back on.
#[derive(Clone)]
pub struct BatchDispatcher {
    pub dispatcher: Dispatcher,
    pub queue: Arc<SqsFiringQueue>,
    /// `DELIVERY_TIMEOUT_MS`: how long one send may take.
    pub delivery_timeout: Duration,
    /// `FUNCTION_TIMEOUT_SECONDS`: the budget when the reported deadline is implausible.
    pub function_timeout: Duration,
    /// Whether the implausible-deadline warning was logged (once per process: the
    /// function builds one `BatchDispatcher`).
    pub warned: Arc<std::sync::atomic::AtomicBool>,
}

impl BatchDispatcher {
    /// The deadline this invocation works to, judged on the dispatcher's clock (see
    /// `invocation_deadline`); an implausible reported one is warned about once.
    pub fn deadline(&self, reported: SystemTime) -> chrono::DateTime<chrono::Utc> {
        let now = self.dispatcher.now();
        let (deadline, plausible) = invocation_deadline(reported, now, self.function_timeout);
        if !plausible && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let reported_ms = chrono::DateTime::<chrono::Utc>::from(reported).timestamp_millis();
            tracing::warn!(
                reported_ms,
                function_timeout_s = self.function_timeout.as_secs(),
                "the runtime's invocation deadline is implausible (cargo lambda watch reports a fixed one); \
                 working to the configured function timeout (FUNCTION_TIMEOUT_SECONDS) instead"
            );
        }
        deadline
    }

    /// How much of the invocation must be left to start a message: its request's
    /// timeout plus `STORE_MARGIN`.
    pub fn start_budget(&self) -> Duration {
        self.delivery_timeout.saturating_add(STORE_MARGIN)
    }
}

/// What a message needs beyond its request's timeout: the store reads before the send
/// (delivered marker, postback index, current status) and the writes after it (log
/// entry and marker, next attempt). Each takes milliseconds; the margin is one SDK
/// call's `OPERATION_TIMEOUT` (retries included), so even one call that runs into its
/// timeout still finishes before the invocation's deadline. With `DELIVERY_TIMEOUT_MS`
/// at its maximum (30 s) a message starts only with 40 s of the dispatch function's
/// 60 s left, which a fresh invocation always has.
pub const STORE_MARGIN: Duration = crate::adapters::aws::OPERATION_TIMEOUT;

/// How long before the deadline `dispatch_batch` stops waiting for messages still in
/// flight and answers, reporting them as failed: a Lambda timeout would return every
/// message of the batch, the delivered ones too. With `STORE_MARGIN` this only happens
/// when several store calls in a row hang.
pub const RESPONSE_GRACE: Duration = Duration::from_secs(1);

/// What became of one queue message of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageOutcome {
    /// Processed to the end (delivered, retry queued, failed, skipped, or already
    /// delivered); the event source deletes the message.
    Done(AttemptOutcome),
    /// Arrived before its due time (a schedule fires early on purpose); put back on the
    /// queue with the remaining delay.
    Deferred,
    /// Not a firing; reported as failed so it reaches the dead-letter queue after the
    /// redrive policy's receive count.
    Unreadable(String),
    /// A dependency failed; reported as failed, so the message comes back after the
    /// visibility timeout.
    DependencyFailed(String),
    /// Not started: too little of the invocation was left for a send and the store
    /// writes after it. Reported as failed; it comes back after the visibility timeout.
    NotStarted,
    /// Handling it panicked (a bug); reported as failed like a dependency failure, so
    /// it comes back and, panicking every time, ends in the dead-letter queue.
    Panicked(String),
    /// Still in flight when the handler had to answer (`RESPONSE_GRACE` before the
    /// deadline); reported as failed. If its delivery was recorded after all, the
    /// redelivered message finds the delivered marker and sends nothing.
    Unfinished,
}

impl MessageOutcome {
    fn is_failure(&self) -> bool {
        matches!(
            self,
            MessageOutcome::Unreadable(_)
                | MessageOutcome::DependencyFailed(_)
                | MessageOutcome::NotStarted
                | MessageOutcome::Panicked(_)
                | MessageOutcome::Unfinished
        )
    }

    fn label(&self) -> &'static str {
        match self {
            MessageOutcome::Done(done) => done.label(),
            MessageOutcome::Deferred => "deferred",
            MessageOutcome::Unreadable(_) => "unreadable",
            MessageOutcome::DependencyFailed(_) => "dependency_failed",
            MessageOutcome::NotStarted => "not_started",
            MessageOutcome::Panicked(_) => "panicked",
            MessageOutcome::Unfinished => "unfinished",
        }
    }
}

/// One queue message of a batch, parsed once: grouping and dispatch both use it.
#[derive(Debug, Clone)]
pub struct BatchMessage {
    pub message_id: Option<String>,
    /// SQS's `ApproximateReceiveCount` attribute, for the logs.
    pub receive_count: Option<String>,
    /// The firing, or why the message is not one.
    pub leased: Result<Leased, String>,
}

impl BatchMessage {
    pub fn parse(message: &SqsMessage) -> Self {
        #[cfg(test)]
        tests::PARSES.with(|count| count.set(count.get() + 1));
        Self {
            message_id: message.message_id.clone(),
            receive_count: message.attributes.get("ApproximateReceiveCount").cloned(),
            leased: leased_from_lambda_message(message).map_err(|e| e.to_string()),
        }
    }

    fn id(&self) -> &str {
        self.message_id.as_deref().unwrap_or_default()
    }

    fn receive_count(&self) -> &str {
        self.receive_count.as_deref().unwrap_or_default()
    }
}

/// The messages grouped by firing and attempt, in batch order; an unreadable message
/// is a group of its own. Each message keeps its position in the batch.
fn same_firing_groups(messages: Vec<BatchMessage>) -> Vec<Vec<(usize, BatchMessage)>> {
    let mut groups: Vec<Vec<(usize, BatchMessage)>> = Vec::with_capacity(messages.len());
    let mut by_firing: HashMap<(String, u32), usize> = HashMap::new();
    for (position, message) in messages.into_iter().enumerate() {
        let key = message.leased.as_ref().ok().map(|l| (l.firing.delivery_id.clone(), l.firing.attempt));
        match key.as_ref().and_then(|k| by_firing.get(k)) {
            Some(&group) => groups[group].push((position, message)),
            None => {
                if let Some(key) = key {
                    by_firing.insert(key, groups.len());
                }
                groups.push(vec![(position, message)]);
            }
        }
    }
    groups
}

/// Process one message: parse, defer if early, else dispatch.
pub async fn dispatch_message(batch: &BatchDispatcher, message: &SqsMessage) -> MessageOutcome {
    process_message(batch, BatchMessage::parse(message)).await
}

/// Process one parsed message: defer if early, else dispatch.
async fn process_message(batch: &BatchDispatcher, message: BatchMessage) -> MessageOutcome {
    let (message_id, receive_count) = (message.id(), message.receive_count());
    let leased = match &message.leased {
        Ok(leased) => leased,
        Err(error) => {
            let outcome = MessageOutcome::Unreadable(error.clone());
            tracing::error!(message_id, receive_count, %error, outcome = outcome.label(),
                "unreadable queue message; it goes to the dead-letter queue after its last receive");
            return outcome;
        }
    };
    let firing = &leased.firing;
    let outcome = match batch.queue.requeue_if_early(leased, batch.dispatcher.now()).await {
        Ok(true) => MessageOutcome::Deferred,
        Ok(false) => match batch.dispatcher.process(leased).await {
            Ok(done) => MessageOutcome::Done(done),
            Err(e) => MessageOutcome::DependencyFailed(e.to_string()),
        },
        Err(e) => MessageOutcome::DependencyFailed(e.to_string()),
    };
    match &outcome {
        MessageOutcome::DependencyFailed(error) => tracing::error!(
            message_id, receive_count,
            delivery_id = %firing.delivery_id, postback_id = %firing.postback_id, attempt = firing.attempt,
            outcome = outcome.label(), %error,
            "dependency failed; the message comes back after the visibility timeout"
        ),
        _ => tracing::info!(
            message_id, receive_count,
            delivery_id = %firing.delivery_id, postback_id = %firing.postback_id, attempt = firing.attempt,
            due_at = %firing.due_at, outcome = outcome.label(),
            "message processed"
        ),
    }
    outcome
}

/// The dispatch function's handler: every message of the batch concurrently (at most
/// `DISPATCH_CONCURRENCY`), reporting the ones to retry as batch item failures. Never
/// fails as a whole: a function error would make SQS return every message of the batch.
///
/// Messages carrying the same attempt of the same firing (the same firing enqueued
/// twice, e.g. by a tracker's retry after a partial failure, can land in one batch) are
/// processed one after the other, so the second sees the first's delivered marker
/// instead of racing it to the receiver.
///
/// `deadline` is the invocation's (`LambdaEvent.context.deadline()`). A message is
/// started only while at least `start_budget()` (`DELIVERY_TIMEOUT_MS` +
/// `STORE_MARGIN`) is left; later ones are reported as failed without being touched.
/// `RESPONSE_GRACE` before the deadline the handler answers whatever is still in
/// flight, reporting those as failed too. A message that finished is never reported as
/// failed for lack of time. A panic while handling one message fails only that message.
///
/// A `deadline` that cannot be real (long past, or beyond Lambda's 15 minutes: `cargo
/// lambda watch` reports a fixed moment in 1970) is replaced by the configured function
/// timeout from now (`BatchDispatcher::deadline`).
pub async fn dispatch_batch(batch: &BatchDispatcher, event: SqsEvent, deadline: SystemTime) -> SqsBatchResponse {
    let deadline = batch.deadline(deadline);
    let left = (deadline - batch.dispatcher.now()).to_std().unwrap_or_default();
    let limits = BatchLimits { deadline: instant_in(left), start_budget: batch.start_budget(), grace: RESPONSE_GRACE };
    let response = run_batch(event.records, limits, |message| process_message(batch, message)).await;
    emit_metrics(batch.dispatcher.app(), "dispatch");
    response
}

/// The CloudWatch namespace of the functions' EMF metrics.
pub const METRICS_NAMESPACE: &str = "PostbackManager";

/// Print the counts since the last call as one EMF line (nothing if nothing was counted).
/// CloudWatch Logs turns it into metrics: no API call from the function.
fn emit_metrics(app: &App, function: &str) {
    if let Some(line) = emf_line(&app.metrics.take(), function, chrono::Utc::now().timestamp_millis()) {
        println!("{line}");
    }
}

/// One CloudWatch Embedded Metric Format line for these counts, with the dimension
/// `function`. EMF holds one value per metric name, so the label goes into the name:
/// `events_accepted_<type>`, `events_duplicate_<type>`, `firings_<outcome>`, and the
/// delivery durations as `delivery_duration_ms_sum` / `delivery_duration_count`.
pub fn emf_line(m: &crate::service::metrics::MetricsSnapshot, function: &str, timestamp_ms: i64) -> Option<String> {
    let mut values: Vec<(String, &'static str, serde_json::Value)> = Vec::new();
    let counts = [("events_accepted_", &m.accepted), ("events_duplicate_", &m.duplicates), ("firings_", &m.firings)];
    for (prefix, map) in counts {
        values.extend(map.iter().map(|(label, n)| (format!("{prefix}{label}"), "Count", serde_json::json!(n))));
    }
    if m.duration_count > 0 {
        let ms = (m.duration_sum_seconds * 1000.0).round();
        values.push(("delivery_duration_ms_sum".into(), "Milliseconds", serde_json::json!(ms)));
        values.push(("delivery_duration_count".into(), "Count", serde_json::json!(m.duration_count)));
    }
    if values.is_empty() {
        return None;
    }
    let definitions: Vec<_> =
        values.iter().map(|(name, unit, _)| serde_json::json!({"Name": name, "Unit": unit})).collect();
    let mut line = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{"Namespace": METRICS_NAMESPACE, "Dimensions": [["function"]], "Metrics": definitions}],
        },
        "function": function,
    });
    if let Some(object) = line.as_object_mut() {
        object.extend(values.into_iter().map(|(name, _, value)| (name, value)));
    }
    Some(line.to_string())
}

/// The monotonic instant `left` from now (capped at a day away).
fn instant_in(left: Duration) -> Instant {
    Instant::now() + left.min(Duration::from_secs(86_400))
}

/// The time limits of one batch.
#[derive(Debug, Clone, Copy)]
struct BatchLimits {
    deadline: Instant,
    /// A message starts only while this much is left before the deadline.
    start_budget: Duration,
    /// The handler answers this long before the deadline.
    grace: Duration,
}

impl BatchLimits {
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn may_start(&self) -> bool {
        self.left() >= self.start_budget
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `dispatch_batch` with the per-message work given (unit tests drive it with fakes).
async fn run_batch<F, Fut>(records: Vec<SqsMessage>, limits: BatchLimits, process: F) -> SqsBatchResponse
where
    F: Fn(BatchMessage) -> Fut,
    Fut: Future<Output = MessageOutcome>,
{
    let started = Instant::now();
    let messages: Vec<BatchMessage> = records.iter().map(BatchMessage::parse).collect();
    let total = messages.len();
    if total > 0 && !limits.may_start() {
        tracing::error!(
            left_ms = millis(limits.left()),
            needed_ms = millis(limits.start_budget),
            "the invocation starts with less time than one message needs (DELIVERY_TIMEOUT_MS + store margin); \
             raise the function's timeout or lower DELIVERY_TIMEOUT_MS"
        );
    }
    let ids: Vec<Option<String>> = messages.iter().map(|m| m.message_id.clone()).collect();
    let process = &process;
    let mut finished = Box::pin(
        futures::stream::iter(same_firing_groups(messages))
            .map(|group| {
                Box::pin(futures::stream::iter(group).then(move |(position, message)| async move {
                    (position, run_one(message, limits, process).await)
                }))
            })
            .flatten_unordered(DISPATCH_CONCURRENCY),
    );
    let cutoff = tokio::time::Instant::from_std(limits.deadline.checked_sub(limits.grace).unwrap_or(limits.deadline));
    let mut outcomes: Vec<Option<MessageOutcome>> = vec![None; total];
    loop {
        match tokio::time::timeout_at(cutoff, finished.next()).await {
            Ok(Some((position, outcome))) => outcomes[position] = Some(outcome),
            Ok(None) => break,
            // The rest is dropped unfinished: answering now beats a Lambda timeout,
            // which would return every message of the batch.
            Err(_) => break,
        }
    }
    drop(finished);
    let mut response = SqsBatchResponse::default();
    for (message_id, outcome) in ids.into_iter().zip(outcomes) {
        let outcome = outcome.unwrap_or_else(|| {
            tracing::error!(
                message_id = message_id.as_deref().unwrap_or_default(),
                outcome = MessageOutcome::Unfinished.label(),
                "still in flight at the invocation's deadline; reported as failed"
            );
            MessageOutcome::Unfinished
        });
        if !outcome.is_failure() {
            continue;
        }
        match message_id {
            Some(id) => {
                let mut failure = BatchItemFailure::default();
                failure.item_identifier = id;
                response.batch_item_failures.push(failure);
            }
            // Without an id a failure cannot be reported; SQS always sends one.
            None => tracing::error!(outcome = outcome.label(), "failed message without a message id"),
        }
    }
    tracing::info!(
        messages = total,
        failures = response.batch_item_failures.len(),
        duration_ms = millis(started.elapsed()),
        left_ms = millis(limits.left()),
        "batch dispatched"
    );
    response
}

/// One message within the batch's limits: not started when the deadline is too near,
/// a panic turned into that message's failure.
async fn run_one<F, Fut>(message: BatchMessage, limits: BatchLimits, process: &F) -> MessageOutcome
where
    F: Fn(BatchMessage) -> Fut,
    Fut: Future<Output = MessageOutcome>,
{
    let (message_id, receive_count) = (message.id().to_string(), message.receive_count().to_string());
    let (message_id, receive_count) = (message_id.as_str(), receive_count.as_str());
    // What the logs name the firing by, kept for a panic (the message moves into the work).
    let (delivery_id, postback_id, attempt) = match &message.leased {
        Ok(l) => (l.firing.delivery_id.clone(), l.firing.postback_id.clone(), l.firing.attempt),
        Err(_) => (String::new(), String::new(), 0),
    };
    if !limits.may_start() {
        let outcome = MessageOutcome::NotStarted;
        tracing::warn!(
            message_id,
            receive_count,
            left_ms = millis(limits.left()),
            needed_ms = millis(limits.start_budget),
            outcome = outcome.label(),
            "too close to the invocation's deadline to start; the message comes back after the visibility timeout"
        );
        return outcome;
    }
    // The future is built inside the guarded block, so a panic while building it is
    // caught too.
    match AssertUnwindSafe(async { process(message).await }).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(panic) => {
            let error = panic_text(panic.as_ref());
            let outcome = MessageOutcome::Panicked(error.clone());
            tracing::error!(
                message_id, receive_count, %delivery_id, %postback_id, attempt,
                outcome = outcome.label(), %error,
                "handling the message panicked; only it fails, and it comes back after the visibility timeout"
            );
            outcome
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn emf_line_has_the_invocation_counts() {
        let metrics = crate::service::metrics::Metrics::default();
        assert_eq!(super::emf_line(&metrics.snapshot(), "ingest", 1), None, "nothing counted, no line");
        metrics.event("click", false);
        metrics.event("click", false);
        metrics.event("conversion", true);
        metrics.firing("delivered");
        metrics.delivery_duration(Duration::from_millis(120));
        let line = super::emf_line(&metrics.take(), "dispatch", 1_700_000_000_000).unwrap();
        assert!(!line.contains('\n'), "one line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000_i64);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "PostbackManager");
        assert_eq!(directive["Dimensions"], serde_json::json!([["function"]]));
        assert_eq!(v["function"], "dispatch");
        let names: Vec<&str> =
            directive["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "events_accepted_click",
                "events_duplicate_conversion",
                "firings_delivered",
                "delivery_duration_ms_sum",
                "delivery_duration_count"
            ]
        );
        // Every declared metric has its value at the top level (EMF's rule).
        for name in &names {
            assert!(v[name].is_number(), "{name} in {line}");
        }
        assert_eq!(v["events_accepted_click"], 2);
        assert_eq!(v["delivery_duration_ms_sum"], 120.0);
        assert_eq!(super::emf_line(&metrics.take(), "dispatch", 1), None, "taken: the next invocation starts at zero");
    }

    use super::*;
    use std::cell::Cell;
    use std::sync::Mutex;

    thread_local! {
        /// `BatchMessage::parse` calls on this thread (the tests' runtime is single-threaded).
        pub(super) static PARSES: Cell<usize> = const { Cell::new(0) };
    }

    fn message(id: &str, body: &str) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        m.body = Some(body.into());
        m
    }

    fn firing(delivery_id: &str, attempt: u32) -> String {
        serde_json::json!({
            "delivery_id": delivery_id, "postback_id": "p", "attempt": attempt,
            "due_at": "2030-01-01T00:00:00Z", "queued_at": "2030-01-01T00:00:00Z",
            "event": {"type": "click", "transaction_id": "t", "timestamp": "2030-01-01T00:00:00Z"}
        })
        .to_string()
    }

    fn limits(deadline_in: Duration, start_budget: Duration, grace: Duration) -> BatchLimits {
        BatchLimits { deadline: Instant::now() + deadline_in, start_budget, grace }
    }

    fn failed(response: &SqsBatchResponse) -> Vec<&str> {
        response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect()
    }

    /// The fake per-message work: records which message ids it was called for.
    #[derive(Default)]
    struct Calls(Mutex<Vec<String>>);

    impl Calls {
        fn record(&self, message: &BatchMessage) {
            self.0.lock().unwrap().push(message.id().to_string());
        }
        fn ids(&self) -> Vec<String> {
            let mut ids = self.0.lock().unwrap().clone();
            ids.sort();
            ids
        }
    }

    #[test]
    fn messages_of_one_firing_attempt_are_grouped_in_order() {
        let messages = [
            message("m1", &firing("d1", 1)),
            message("m2", "not a firing"),
            message("m3", &firing("d2", 1)),
            message("m4", &firing("d1", 1)),
            message("m5", &firing("d1", 2)),
            message("m6", "not a firing"),
        ];
        let parsed = messages.iter().map(BatchMessage::parse).collect();
        let ids: Vec<Vec<(usize, String)>> = same_firing_groups(parsed)
            .into_iter()
            .map(|group| group.into_iter().map(|(i, m)| (i, m.id().to_string())).collect())
            .collect();
        let expected = [vec![(0, "m1"), (3, "m4")], vec![(1, "m2")], vec![(2, "m3")], vec![(4, "m5")], vec![(5, "m6")]];
        let expected: Vec<Vec<(usize, String)>> =
            expected.iter().map(|g| g.iter().map(|(i, id)| (*i, id.to_string())).collect()).collect();
        assert_eq!(ids, expected);
    }

    #[tokio::test]
    async fn each_message_is_parsed_once() {
        let records = vec![
            message("m1", &firing("d1", 1)),
            message("m2", &firing("d1", 1)),
            message("m3", "not a firing"),
            message("m4", &firing("d2", 1)),
        ];
        PARSES.with(|c| c.set(0));
        let seen = Mutex::new(Vec::new());
        let response =
            run_batch(records, limits(Duration::from_secs(60), Duration::ZERO, RESPONSE_GRACE), |m: BatchMessage| {
                let delivery = m.leased.as_ref().map(|l| l.firing.delivery_id.clone()).ok();
                seen.lock().unwrap().push((m.id().to_string(), delivery));
                async { MessageOutcome::Done(AttemptOutcome::Delivered) }
            })
            .await;
        assert_eq!(PARSES.with(Cell::get), 4, "one parse per message, shared by grouping and dispatch");
        assert!(response.batch_item_failures.is_empty());
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        let firing_of = |d: &str| Some(d.to_string());
        assert_eq!(
            seen,
            [
                ("m1".to_string(), firing_of("d1")),
                ("m2".into(), firing_of("d1")),
                ("m3".into(), None),
                ("m4".into(), firing_of("d2"))
            ],
            "the work gets the parsed firing"
        );
    }

    /// m1 and m3 start at once; m2 (the same firing as m1) would start after m1, when
    /// less than its budget is left: it is reported failed and never handed to the work.
    #[tokio::test]
    async fn a_near_deadline_leaves_messages_unstarted_and_reports_only_them() {
        let records =
            vec![message("m1", &firing("d1", 1)), message("m2", &firing("d1", 1)), message("m3", &firing("d2", 1))];
        let calls = Calls::default();
        let near = limits(Duration::from_millis(2000), Duration::from_millis(1500), Duration::from_millis(50));
        let response = run_batch(records, near, |m| {
            calls.record(&m);
            async {
                tokio::time::sleep(Duration::from_millis(700)).await;
                MessageOutcome::Done(AttemptOutcome::Delivered)
            }
        })
        .await;
        assert_eq!(failed(&response), ["m2"], "only the unstarted message; the delivered ones are not failures");
        assert_eq!(calls.ids(), ["m1", "m3"], "the unstarted message was not sent");

        // A deadline already too near: nothing starts, everything is reported.
        let calls = Calls::default();
        let records = vec![message("m1", &firing("d1", 1)), message("m2", "not a firing")];
        let too_near = limits(Duration::from_secs(5), Duration::from_secs(13), RESPONSE_GRACE);
        let response = run_batch(records, too_near, |m| {
            calls.record(&m);
            async { MessageOutcome::Done(AttemptOutcome::Delivered) }
        })
        .await;
        assert_eq!(failed(&response), ["m1", "m2"]);
        assert!(calls.ids().is_empty());
    }

    #[tokio::test]
    async fn a_panic_fails_only_its_message() {
        let records = vec![
            message("m1", &firing("d1", 1)),
            message("m2", &firing("d1", 1)),
            message("m3", &firing("d2", 1)),
            message("m4", &firing("d3", 1)),
        ];
        let calls = Calls::default();
        let response = run_batch(records, limits(Duration::from_secs(60), Duration::ZERO, RESPONSE_GRACE), |m| {
            calls.record(&m);
            let id = m.id().to_string();
            async move {
                tokio::task::yield_now().await;
                match id.as_str() {
                    "m1" => panic!("boom in m1"),
                    "m4" => MessageOutcome::DependencyFailed("down".into()),
                    _ => MessageOutcome::Done(AttemptOutcome::Delivered),
                }
            }
        })
        .await;
        assert_eq!(failed(&response), ["m1", "m4"], "the panicking one and the real failure, nothing else");
        assert_eq!(calls.ids(), ["m1", "m2", "m3", "m4"], "m2 (after m1 in its group) still ran");

        // A panic while building the work's future is caught as well.
        let response = run_batch(
            vec![message("m1", &firing("d1", 1)), message("m2", &firing("d2", 1))],
            limits(Duration::from_secs(60), Duration::ZERO, RESPONSE_GRACE),
            |m| {
                assert_ne!(m.id(), "m2", "sync panic");
                async { MessageOutcome::Deferred }
            },
        )
        .await;
        assert_eq!(failed(&response), ["m2"]);
    }

    #[tokio::test]
    async fn messages_still_in_flight_at_the_grace_are_reported_and_the_rest_is_not() {
        let records = vec![message("m1", &firing("d1", 1)), message("m2", &firing("d2", 1))];
        let started = Instant::now();
        let limits = limits(Duration::from_millis(600), Duration::ZERO, Duration::from_millis(100));
        let response = run_batch(records, limits, |m| {
            let slow = m.id() == "m1";
            async move {
                if slow {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                MessageOutcome::Done(AttemptOutcome::Delivered)
            }
        })
        .await;
        assert_eq!(failed(&response), ["m1"]);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(450) && took < Duration::from_secs(5), "answered at the grace: {took:?}");
    }

    #[test]
    fn the_time_left_becomes_an_instant() {
        let soon = instant_in(Duration::from_secs(10));
        let left = soon.saturating_duration_since(Instant::now());
        assert!(left > Duration::from_secs(9) && left <= Duration::from_secs(10), "{left:?}");
        assert!(instant_in(Duration::ZERO) <= Instant::now(), "nothing left is now");
        let capped = instant_in(Duration::from_secs(10 * 86_400));
        assert!(capped.saturating_duration_since(Instant::now()) <= Duration::from_secs(86_400));
    }

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

    /// The batch's deadline is judged on the dispatcher's clock (the `Clock` port): a
    /// manual clock moves it; the implausible-deadline warning is logged once.
    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn the_batch_deadline_is_on_the_dispatchers_clock() {
        use crate::ports::Clock;
        use crate::testing::{FixedJitter, ManualClock, MemoryAdapters, MemoryOptions, ScriptedSender};
        let clock = Arc::new(ManualClock::new(at(1_900_000_000_000)));
        let memory = MemoryAdapters::new(clock.clone(), MemoryOptions::default());
        let ports = Ports {
            postbacks: memory.postbacks.clone(),
            touches: memory.touches.clone(),
            logs: memory.logs.clone(),
            queue: memory.queue.clone(),
            control: memory.control.clone(),
            access: memory.access.clone(),
            sender: Arc::new(ScriptedSender::with_clock(clock.clone())),
            clock: clock.clone(),
            jitter: Arc::new(FixedJitter(0.5)),
            combined: None,
        };
        let policy = Policy {
            retry: crate::domain::delivery::RetryPolicy { max_attempts: 3, base_delay: Duration::from_secs(10) },
            catalog_ttl: CATALOG_TTL,
            catalog_check: Some(CATALOG_CHECK),
            breaker: Default::default(),
            partners: Default::default(),
        };
        let config = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        let clients = AwsClients::from_sdk_config(&config);
        let names = ResourceNames::from_lookup(|name| Some(format!("test-{name}"))).unwrap();
        let batch = BatchDispatcher {
            dispatcher: App::new(ports, policy).dispatcher(),
            queue: Arc::new(SqsFiringQueue::new(&clients, QueueSettings::from_names(&names), clock.clone())),
            delivery_timeout: Duration::from_secs(10),
            function_timeout: Duration::from_secs(60),
            warned: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let watch = SystemTime::UNIX_EPOCH + Duration::from_millis(600_000);
        let now = clock.now();
        assert_eq!(batch.deadline(watch), now + chrono::Duration::seconds(60));
        assert!(batch.warned.load(std::sync::atomic::Ordering::Relaxed), "warned");
        clock.advance(Duration::from_secs(3_600));
        assert_eq!(batch.deadline(watch), now + chrono::Duration::seconds(3_660), "from the clock's now");
        let real = clock.now() + chrono::Duration::seconds(42);
        assert_eq!(batch.deadline(system(real)), real, "a plausible one as reported");
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
