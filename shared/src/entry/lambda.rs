//! Wiring for the three Lambda functions. Everything is built once per execution
//! environment, at init (outside the handler): settings, SDK clients, adapters, the
//! HTTP sender (its TLS client on first use) and the `App`. The functions themselves only start a runtime:
//!
//! - `config-api`: `lambda_http::run(app.router(RouteSet::Admin))`
//! - `ingest`: `lambda_http::run(app.router(RouteSet::Ingest))`
//! - `dispatch`: `lambda_runtime::run(service_fn(|e| dispatch_batch(&batch, e.payload)))`
//!
//! Queue messages reach `dispatch` through the SQS event source with
//! `ReportBatchItemFailures`: the event source deletes every message not reported as
//! failed, so the dispatch function never deletes messages itself (`EventSourceQueue`):
//! one SQS request less per firing, and a dependency failure simply leaves the message
//! to come back after the visibility timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::Utc;
use futures::StreamExt;

use crate::adapters::aws::{
    leased_from_lambda_message, AwsAdapters, AwsClients, QueueSettings, ResourceNames, SqsFiringQueue,
};
use crate::adapters::sender::{ReqwestSender, SenderConfig};
use crate::adapters::system::{RandomJitter, SystemClock};
use crate::domain::delivery::{OutboundRequest, OutboundResponse, SendFailure};
use crate::domain::firing::Firing;
use crate::entry::config::{Settings, SettingsError};
use crate::entry::http::{router, ApiKeys, RouteSet};
use crate::ports::{FiringQueue, HttpSender, Leased, StoreResult};
use crate::service::{App, AttemptOutcome, Dispatcher, Policy, Ports};

/// How long a function uses its in-memory postback index before reloading it: another
/// function's postback change takes effect within this time.
pub const CATALOG_TTL: Duration = Duration::from_secs(5);

/// Messages of one batch dispatched at once (the event source's batch size is 10).
pub const DISPATCH_CONCURRENCY: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
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
        let clients = AwsClients::from_env().await;
        Ok(Self::build(settings, &clients, &names))
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
        let mut adapters = AwsAdapters::new(clients, names, settings.log_retention());
        adapters.queue = Arc::new(SqsFiringQueue::new(clients, queue));
        let sender = LazySender::new(SenderConfig::new(settings.delivery_timeout, settings.allow_private_targets));
        let ports = Ports {
            postbacks: adapters.postbacks,
            touches: adapters.touches,
            logs: adapters.logs,
            queue: Arc::new(EventSourceQueue::new(adapters.queue.clone())),
            sender: Arc::new(sender),
            clock: Arc::new(SystemClock),
            jitter: Arc::new(RandomJitter),
        };
        let app = App::new(ports, Policy { retry: settings.retry, catalog_ttl: CATALOG_TTL });
        Self { app, settings, names: names.clone(), queue: adapters.queue }
    }

    /// The shared HTTP router with this deployment's keys, for `lambda_http::run`.
    pub fn router(&self, routes: RouteSet) -> axum::Router {
        router(self.app.clone(), ApiKeys::new(&self.settings.admin_api_key, &self.settings.ingest_api_key), routes)
    }

    /// What the dispatch function's handler calls `dispatch_batch` with.
    pub fn batch_dispatcher(&self) -> BatchDispatcher {
        BatchDispatcher { dispatcher: self.app.dispatcher(), queue: self.queue.clone() }
    }
}

/// The dispatcher plus the queue that early arrivals are put back on.
#[derive(Clone)]
pub struct BatchDispatcher {
    pub dispatcher: Dispatcher,
    pub queue: Arc<SqsFiringQueue>,
}

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
}

impl MessageOutcome {
    fn is_failure(&self) -> bool {
        matches!(self, MessageOutcome::Unreadable(_) | MessageOutcome::DependencyFailed(_))
    }

    fn label(&self) -> &'static str {
        match self {
            MessageOutcome::Done(AttemptOutcome::Delivered) => "delivered",
            MessageOutcome::Done(AttemptOutcome::Retrying(_)) => "retrying",
            MessageOutcome::Done(AttemptOutcome::Failed) => "failed",
            MessageOutcome::Done(AttemptOutcome::Skipped(_)) => "skipped",
            MessageOutcome::Done(AttemptOutcome::AlreadyDelivered) => "already_delivered",
            MessageOutcome::Deferred => "deferred",
            MessageOutcome::Unreadable(_) => "unreadable",
            MessageOutcome::DependencyFailed(_) => "dependency_failed",
        }
    }
}

/// The messages grouped by firing and attempt, in batch order; an unreadable message
/// is a group of its own.
fn same_firing_groups(messages: Vec<SqsMessage>) -> Vec<Vec<SqsMessage>> {
    let mut groups: Vec<Vec<SqsMessage>> = Vec::with_capacity(messages.len());
    let mut by_firing: HashMap<(String, u32), usize> = HashMap::new();
    for message in messages {
        let key =
            leased_from_lambda_message(&message).ok().map(|leased| (leased.firing.delivery_id, leased.firing.attempt));
        match key.as_ref().and_then(|k| by_firing.get(k)) {
            Some(&group) => groups[group].push(message),
            None => {
                if let Some(key) = key {
                    by_firing.insert(key, groups.len());
                }
                groups.push(vec![message]);
            }
        }
    }
    groups
}

/// Process one message: parse, defer if early, else dispatch.
pub async fn dispatch_message(batch: &BatchDispatcher, message: &SqsMessage) -> MessageOutcome {
    let message_id = message.message_id.as_deref().unwrap_or_default();
    let receive_count = message.attributes.get("ApproximateReceiveCount").map(String::as_str).unwrap_or("");
    let leased = match leased_from_lambda_message(message) {
        Ok(leased) => leased,
        Err(e) => {
            let outcome = MessageOutcome::Unreadable(e.to_string());
            tracing::error!(message_id, receive_count, error = %e, outcome = outcome.label(),
                "unreadable queue message; it goes to the dead-letter queue after its last receive");
            return outcome;
        }
    };
    let firing = &leased.firing;
    let outcome = match batch.queue.requeue_if_early(&leased, Utc::now()).await {
        Ok(true) => MessageOutcome::Deferred,
        Ok(false) => match batch.dispatcher.process(&leased).await {
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
pub async fn dispatch_batch(batch: &BatchDispatcher, event: SqsEvent) -> SqsBatchResponse {
    let started = Instant::now();
    let total = event.records.len();
    let outcomes: Vec<(Option<String>, MessageOutcome)> = futures::stream::iter(same_firing_groups(event.records))
        .map(|group| async move {
            let mut outcomes = Vec::with_capacity(group.len());
            for message in group {
                let outcome = dispatch_message(batch, &message).await;
                outcomes.push((message.message_id, outcome));
            }
            outcomes
        })
        .buffer_unordered(DISPATCH_CONCURRENCY)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    for (message_id, outcome) in outcomes {
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
        duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "batch dispatched"
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn messages_of_one_firing_attempt_are_grouped_in_order() {
        let messages = vec![
            message("m1", &firing("d1", 1)),
            message("m2", "not a firing"),
            message("m3", &firing("d2", 1)),
            message("m4", &firing("d1", 1)),
            message("m5", &firing("d1", 2)),
            message("m6", "not a firing"),
        ];
        let ids: Vec<Vec<String>> = same_firing_groups(messages)
            .iter()
            .map(|group| group.iter().filter_map(|m| m.message_id.clone()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["m1", "m4"], vec!["m2"], vec!["m3"], vec!["m5"], vec!["m6"]]);
    }
}
