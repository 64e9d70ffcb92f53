//! The SQS event source of the `dispatch` function, for `cargo lambda watch`: what AWS's
//! Lambda event source mapping does with the template's settings (`BatchSize: 10`,
//! `FunctionResponseTypes: [ReportBatchItemFailures]`).
//!
//! - `concurrency` pollers (5 by default, as the real one starts with), each: long poll
//!   (up to 10 messages), invoke the function with them as one `SqsEvent`, wait for it;
//! - the response's `batchItemFailures` are the failed messages; every other message of
//!   the batch is deleted (`DeleteMessageBatch`). A function error, a response that is not
//!   an `SqsBatchResponse`, or one naming a message that was not in the batch fails the
//!   whole batch, as on AWS;
//! - nothing else: a failed message stays in flight until the queue's visibility timeout
//!   ends, and the queue's redrive policy (`maxReceiveCount`, enforced by the emulator)
//!   moves it to the dead-letter queue after its last receive.
//!
//! Not played: `MaximumBatchingWindowInSeconds` (a batch is whatever one receive brings,
//! so deliveries are not held up to a second) and the scaling of pollers with the
//! backlog (fixed at `concurrency`).

use std::collections::HashSet;
use std::time::Duration;

use anyhow::Context;
use aws_config::timeout::TimeoutConfig;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use postback::adapters::aws::{lambda_message, ResourceNames, CONNECT_TIMEOUT};

/// How many batches are in flight at once (AWS starts an SQS event source with five).
pub const DEFAULT_CONCURRENCY: usize = 5;
/// The long poll (SQS allows up to 20 s).
const POLL_WAIT: Duration = Duration::from_secs(10);
/// Longest pause between polls after failures (the emulators went away, say).
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long an invocation may take: the dispatch function's timeout (60 s) and margin.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Pump {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    region: String,
    invoke: String,
    concurrency: usize,
    http: reqwest::Client,
}

impl Pump {
    pub fn new(
        sdk_config: &aws_config::SdkConfig,
        names: &ResourceNames,
        invoke: &str,
        concurrency: usize,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            sqs: long_poll_client(sdk_config),
            queue_url: names.queue_url.clone(),
            queue_arn: names.queue_arn.clone(),
            region: sdk_config.region().map(|r| r.to_string()).unwrap_or_default(),
            invoke: invoke.to_string(),
            concurrency,
            http: reqwest::Client::builder().timeout(INVOKE_TIMEOUT).build()?,
        })
    }

    pub fn invoke_url(&self) -> &str {
        &self.invoke
    }

    /// The pollers, until the caller stops them (they never end on their own).
    pub async fn run(&self) -> anyhow::Result<()> {
        eprintln!("pump: {} → {} ({} concurrent batches)", self.queue_url, self.invoke, self.concurrency);
        futures::future::join_all((0..self.concurrency).map(|n| self.poller(n))).await;
        Ok(())
    }

    async fn poller(&self, n: usize) {
        let mut backoff = Duration::ZERO;
        loop {
            if !backoff.is_zero() {
                tokio::time::sleep(backoff).await;
            }
            match self.once().await {
                Ok(()) => backoff = Duration::ZERO,
                Err(e) => {
                    backoff = (backoff * 2).clamp(Duration::from_millis(500), MAX_BACKOFF);
                    eprintln!("pump[{n}]: {e:#} (polling again in {} ms)", backoff.as_millis());
                }
            }
        }
    }

    /// One receive, and when it brought messages, one invocation and the deletes.
    async fn once(&self) -> anyhow::Result<()> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(POLL_WAIT.as_secs() as i32)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .context("ReceiveMessage")?;
        if out.messages().is_empty() {
            return Ok(());
        }
        let event = self.event(out.messages());
        let ids: Vec<String> = event.records.iter().filter_map(|m| m.message_id.clone()).collect();
        // Not answered (watcher down, or a timeout): nothing is deleted, so the batch comes
        // back after the queue's visibility timeout, as from the real event source.
        let response = self
            .http
            .post(&self.invoke)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&event)?)
            .send()
            .await
            .with_context(|| {
                format!("invoking {}; {} messages come back after the visibility timeout", self.invoke, ids.len())
            })?;
        let status = response.status();
        let function_error = response.headers().contains_key("x-amz-function-error");
        let body = response.bytes().await.context("reading the dispatch response")?;
        let failed: HashSet<String> = match serde_json::from_slice::<SqsBatchResponse>(&body) {
            Ok(r) if status.is_success() && !function_error => {
                let failed: HashSet<String> = r.batch_item_failures.into_iter().map(|f| f.item_identifier).collect();
                if failed.iter().all(|f| ids.contains(f)) {
                    failed
                } else {
                    // AWS treats an unknown or empty identifier as a failure of the batch.
                    eprintln!("pump: the response names a message not in the batch; the whole batch failed");
                    ids.iter().cloned().collect()
                }
            }
            // A function error: the event source retries the whole batch.
            _ => {
                eprintln!("pump: dispatch failed ({status}): {}", String::from_utf8_lossy(&body));
                ids.iter().cloned().collect()
            }
        };
        let done: Vec<DeleteMessageBatchRequestEntry> = event
            .records
            .iter()
            .filter(|m| m.message_id.as_ref().is_some_and(|id| !failed.contains(id)))
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .set_receipt_handle(m.receipt_handle.clone())
                    .build()
                    .ok()
            })
            .collect();
        if !done.is_empty() {
            let out = self
                .sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(done))
                .send()
                .await
                .context("DeleteMessageBatch (the messages come back after the visibility timeout)")?;
            for f in out.failed() {
                eprintln!("pump: delete failed for entry {}: {:?}", f.id(), f.message());
            }
        }
        eprintln!("pump: {} messages dispatched, {} failed", ids.len(), failed.len());
        Ok(())
    }

    fn event(&self, messages: &[aws_sdk_sqs::types::Message]) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = messages.iter().map(|m| lambda_message(m, &self.queue_arn, &self.region)).collect();
        event
    }
}

/// An SQS client whose calls may outlast a long poll: the library's timeouts (3 s per
/// attempt, 10 s per call) would cut every empty `POLL_WAIT` receive short.
fn long_poll_client(sdk_config: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(POLL_WAIT + Duration::from_secs(5))
        .operation_timeout(POLL_WAIT + Duration::from_secs(10))
        .build();
    aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(sdk_config).timeout_config(timeouts).build())
}
