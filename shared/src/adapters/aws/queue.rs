//! `FiringQueue` on SQS + EventBridge Scheduler.
//!
//! A firing due within `MAX_SQS_DELAY` (15 min) is an SQS message with `DelaySeconds`.
//! One due later is a one-time EventBridge Scheduler schedule (`at(...)`, UTC, no
//! flexible window, deleted after it fires) whose target is the queue and whose input is
//! the firing: it fires `schedule_lead` early (the scheduler only promises its minute),
//! and the dispatcher puts a firing that arrives early back on the queue with the
//! remaining delay (`defer_if_early`), so firings keep second precision.
//!
//! A retry is a new message carrying the next attempt (then the old one is deleted),
//! not a visibility change: the attempt number must travel with the message, and SQS's
//! receive count is not it (it also counts crashed or throttled deliveries).
//!
//! Fair queue: every message this adapter sends has `MessageGroupId` = the firing's
//! destination (`message_group`), so SQS serves a receiver whose backlog or slowness
//! makes it a noisy neighbour after the quiet ones. Schedules carry no group (EventBridge
//! Scheduler documents `SqsParameters.MessageGroupId` for FIFO targets only): a
//! scheduled firing arrives `SCHEDULE_LEAD` early and is put back with its group for the
//! rest of its delay (`requeue_if_early`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode, Target,
};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use chrono::{DateTime, Utc};
use futures::future::try_join_all;
use sha2::{Digest, Sha256};

use super::error::{build_error, unavailable};
use super::{AwsClients, ResourceNames};
use crate::domain::firing::Firing;
use crate::ports::{Clock, FiringQueue, Leased, QueueDepth, StoreError, StoreResult};

/// `SendMessageBatch` calls one `enqueue` has in flight at once.
const SEND_CONCURRENCY: usize = 16;
/// The longest `DelaySeconds` SQS accepts.
pub const MAX_SQS_DELAY: Duration = Duration::from_secs(900);
/// How early a schedule fires before the firing is due. EventBridge Scheduler fires an
/// `at()` schedule within its minute (typically seconds late), so three minutes early
/// always arrives before the due time; the remainder is waited out with `DelaySeconds`.
pub const SCHEDULE_LEAD: Duration = Duration::from_secs(180);
/// A firing that arrives less than this before its due time is dispatched, not re-queued
/// (SQS delays are whole seconds).
pub const EARLY_TOLERANCE: Duration = Duration::from_secs(1);

/// SQS limits per message and per batch (the sum of bodies).
const MAX_BATCH_ENTRIES: usize = 10;
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Rounds of re-sending entries SQS failed on its side before giving up.
const SEND_ROUNDS: u32 = 5;
/// Schedules created at once during one `enqueue`.
const SCHEDULE_CONCURRENCY: usize = 8;
/// Schedule names: at most 64 of `[0-9A-Za-z_.-]`.
const MAX_PLAIN_DELIVERY_ID: usize = 48;
/// `MessageGroupId`: at most 128 characters, letters, digits and punctuation.
const MAX_MESSAGE_GROUP: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    pub queue_url: String,
    pub queue_arn: String,
    pub dead_letter_queue_arn: Option<String>,
    pub schedule_group: String,
    pub scheduler_role_arn: String,
    /// Firings due further out than this go to the scheduler (`MAX_SQS_DELAY`; tests
    /// lower it to exercise schedules quickly).
    pub max_sqs_delay: Duration,
    /// `SCHEDULE_LEAD` (tests: zero).
    pub schedule_lead: Duration,
    /// The lease given by `receive`; `None` keeps the queue's own visibility timeout
    /// (the Lambda event source uses the queue's in any case).
    pub visibility_timeout: Option<Duration>,
}

impl QueueSettings {
    pub fn from_names(names: &ResourceNames) -> Self {
        Self {
            queue_url: names.queue_url.clone(),
            queue_arn: names.queue_arn.clone(),
            dead_letter_queue_arn: names.dead_letter_queue_arn.clone(),
            schedule_group: names.schedule_group.clone(),
            scheduler_role_arn: names.scheduler_role_arn.clone(),
            max_sqs_delay: MAX_SQS_DELAY,
            schedule_lead: SCHEDULE_LEAD,
            visibility_timeout: None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SqsFiringQueue {
    sqs: aws_sdk_sqs::Client,
    scheduler: aws_sdk_scheduler::Client,
    settings: QueueSettings,
    /// The "now" a firing's delay is counted from. Leases and delays themselves run on
    /// SQS's clock.
    clock: Arc<dyn Clock>,
}

/// A queue message body from the dispatch Lambda's SQS event, with its receipt handle.
pub fn leased_from_sqs_message(body: &str, receipt_handle: &str) -> StoreResult<Leased> {
    let firing = serde_json::from_str(body).map_err(|e| StoreError::Corrupt(format!("queue message: {e}")))?;
    Ok(Leased { firing, receipt: receipt_handle.to_string() })
}

/// The same from the Lambda event's message type.
pub fn leased_from_lambda_message(message: &aws_lambda_events::sqs::SqsMessage) -> StoreResult<Leased> {
    let body = message.body.as_deref().ok_or_else(|| StoreError::Corrupt("queue message without a body".into()))?;
    leased_from_sqs_message(body, message.receipt_handle.as_deref().unwrap_or_default())
}

/// A message received from the queue (in `queue_arn`, in `region`) as the Lambda event
/// source hands it to the dispatch function: what the local event source (`aws-local.sh`)
/// and the tests, which play that part, put in the `SqsEvent`.
pub fn lambda_message(
    message: &aws_sdk_sqs::types::Message,
    queue_arn: &str,
    region: &str,
) -> aws_lambda_events::sqs::SqsMessage {
    let mut m = aws_lambda_events::sqs::SqsMessage::default();
    m.message_id = message.message_id.clone();
    m.receipt_handle = message.receipt_handle.clone();
    m.body = message.body.clone();
    m.md5_of_body = message.md5_of_body.clone();
    m.attributes = message
        .attributes
        .as_ref()
        .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect())
        .unwrap_or_default();
    m.event_source = Some("aws:sqs".into());
    m.event_source_arn = Some(queue_arn.to_string());
    m.aws_region = Some(region.to_string());
    m
}

/// The SQS message group (fair-queue tenant) of a firing: its destination
/// (`scheme://host:port`). One without a destination (its URL does not parse, so it
/// fails anyway; or a message from before destinations were kept) is grouped by its
/// postback. A group SQS would refuse (too long) is a hash of it.
pub fn message_group(firing: &Firing) -> String {
    let group = match &firing.destination {
        Some(destination) => destination.clone(),
        None => format!("postback:{}", firing.postback_id),
    };
    if !group.is_empty() && group.len() <= MAX_MESSAGE_GROUP && group.bytes().all(|b| b.is_ascii_graphic()) {
        group
    } else {
        format!("h:{}", &hex::encode(Sha256::digest(group.as_bytes()))[..40])
    }
}

/// One message to send: the firing's body, its delay and its message group.
#[derive(Debug, Clone)]
struct Outgoing {
    body: String,
    delay: u64,
    group: String,
}

impl Outgoing {
    fn of(firing: &Firing, delay: u64) -> StoreResult<Self> {
        Ok(Self { body: SqsFiringQueue::body(firing)?, delay, group: message_group(firing) })
    }
}

/// Whole seconds until `due_at`, rounded up so a message never arrives early.
fn delay_until(due_at: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let ms = (due_at - now).num_milliseconds();
    if ms <= 0 {
        0
    } else {
        (ms as u64).div_ceil(1000)
    }
}

/// The schedule of one attempt of one delivery: the same name every time the same
/// firing is scheduled, so a repeated `enqueue` cannot schedule it twice.
pub fn schedule_name(firing: &Firing) -> String {
    let id = &firing.delivery_id;
    let plain = !id.is_empty()
        && id.len() <= MAX_PLAIN_DELIVERY_ID
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    // A rate-limit deferral re-schedules the same attempt for its slot: the slot is part of
    // the name, or the new schedule would collide with (and be taken for) the old one.
    let base = match firing.slot_second {
        Some(slot) => format!("h{}", &hex::encode(Sha256::digest(format!("{id}#s{slot}").as_bytes()))[..40]),
        None if plain => id.clone(),
        None => format!("h{}", &hex::encode(Sha256::digest(id.as_bytes()))[..40]),
    };
    format!("{base}-a{}", firing.attempt)
}

/// The `SendMessageBatch` entries of one batch: ids by position, each message's delay
/// (capped at `MAX_SQS_DELAY`) and `MessageGroupId`.
fn batch_entries(batch: Vec<Outgoing>) -> StoreResult<Vec<SendMessageBatchRequestEntry>> {
    batch
        .into_iter()
        .enumerate()
        .map(|(i, message)| {
            let delay = i32::try_from(message.delay.min(MAX_SQS_DELAY.as_secs())).unwrap_or(0);
            SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(message.body)
                .delay_seconds(delay)
                .message_group_id(message.group)
                .build()
                .map_err(|e| build_error("SendMessageBatchRequestEntry", e))
        })
        .collect()
}

/// `at()` takes local time in the schedule's time zone (UTC here), to the second.
pub fn at_expression(fire_at: DateTime<Utc>) -> String {
    format!("at({})", fire_at.format("%Y-%m-%dT%H:%M:%S"))
}

impl SqsFiringQueue {
    pub fn new(clients: &AwsClients, settings: QueueSettings, clock: Arc<dyn Clock>) -> Self {
        Self { sqs: clients.sqs.clone(), scheduler: clients.scheduler.clone(), settings, clock }
    }

    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    fn body(firing: &Firing) -> StoreResult<String> {
        serde_json::to_string(firing).map_err(|e| StoreError::Corrupt(format!("firing cannot be serialized: {e}")))
    }

    /// Send (body, delay seconds) messages in batches of at most 10 entries and 256 KiB,
    /// re-sending entries SQS failed on its side.
    /// Batches of up to 10 messages and 256 KiB, `SEND_CONCURRENCY` batches in flight at
    /// once (a bulk replay queues 10,000 firings in one request: 1,000 calls).
    async fn send_messages(&self, messages: Vec<Outgoing>) -> StoreResult<()> {
        use futures::{StreamExt, TryStreamExt};
        let mut batches: Vec<Vec<Outgoing>> = Vec::new();
        let mut batch: Vec<Outgoing> = Vec::new();
        let mut batch_bytes = 0;
        for message in messages {
            let size = message.body.len();
            if size > MAX_BATCH_BYTES {
                return Err(StoreError::Unavailable(format!(
                    "firing message of {size} bytes exceeds the SQS limit of {MAX_BATCH_BYTES}"
                )));
            }
            if batch.len() == MAX_BATCH_ENTRIES || batch_bytes + size > MAX_BATCH_BYTES {
                batches.push(std::mem::take(&mut batch));
                batch_bytes = 0;
            }
            batch_bytes += size;
            batch.push(message);
        }
        if !batch.is_empty() {
            batches.push(batch);
        }
        futures::stream::iter(batches)
            .map(|batch| self.send_batch(batch))
            .buffer_unordered(SEND_CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn send_batch(&self, batch: Vec<Outgoing>) -> StoreResult<()> {
        let pending = batch_entries(batch)?;
        self.send_entries(pending).await
    }

    async fn send_entries(&self, mut pending: Vec<SendMessageBatchRequestEntry>) -> StoreResult<()> {
        for round in 0..SEND_ROUNDS {
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(50u64 << round)).await;
            }
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(&self.settings.queue_url)
                .set_entries(Some(pending.clone()))
                .send()
                .await
                .map_err(|e| unavailable("SQS SendMessageBatch", e))?;
            if let Some(bad) = out.failed.iter().find(|f| f.sender_fault) {
                return Err(StoreError::Unavailable(format!(
                    "SQS SendMessageBatch refused a message: {} {}",
                    bad.code,
                    bad.message.as_deref().unwrap_or_default()
                )));
            }
            let failed: std::collections::HashSet<&str> = out.failed.iter().map(|f| f.id.as_str()).collect();
            pending.retain(|e| failed.contains(e.id()));
            if pending.is_empty() {
                return Ok(());
            }
        }
        Err(StoreError::Unavailable(format!("SQS SendMessageBatch: {} messages still failing", pending.len())))
    }

    /// Create the one-time schedule that puts `firing` on the queue at `fire_at`. An
    /// existing schedule of the same name (the same delivery and attempt) is success.
    pub async fn schedule(&self, firing: &Firing, fire_at: DateTime<Utc>) -> StoreResult<()> {
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| build_error("FlexibleTimeWindow", e))?;
        let target = Target::builder()
            .arn(&self.settings.queue_arn)
            .role_arn(&self.settings.scheduler_role_arn)
            .input(Self::body(firing)?)
            .set_dead_letter_config(
                self.settings.dead_letter_queue_arn.as_ref().map(|arn| DeadLetterConfig::builder().arn(arn).build()),
            )
            .build()
            .map_err(|e| build_error("Target", e))?;
        let result = self
            .scheduler
            .create_schedule()
            .name(schedule_name(firing))
            .group_name(&self.settings.schedule_group)
            .schedule_expression(at_expression(fire_at))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .target(target)
            .action_after_completion(ActionAfterCompletion::Delete)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conflict_exception()) => Ok(()),
            Err(e) => Err(unavailable("Scheduler CreateSchedule", e)),
        }
    }

    /// For the dispatcher: a firing that arrived before its due time (a schedule fires
    /// early on purpose) goes back on the queue with the remaining delay, the old
    /// message is deleted, and `true` is returned; the caller then does not dispatch it.
    /// Always SQS (capped at 15 min, so an improbably early arrival just comes round
    /// again), never a new schedule: the schedule that brought it is already used up.
    pub async fn defer_if_early(&self, leased: &Leased, now: DateTime<Utc>) -> StoreResult<bool> {
        let early = self.requeue_if_early(leased, now).await?;
        if early {
            self.ack(leased).await?;
        }
        Ok(early)
    }

    /// `defer_if_early` without deleting the message: for the dispatch function, whose
    /// SQS event source deletes the messages it processed.
    pub async fn requeue_if_early(&self, leased: &Leased, now: DateTime<Utc>) -> StoreResult<bool> {
        let early = (leased.firing.due_at - now).to_std().is_ok_and(|ahead| ahead >= EARLY_TOLERANCE);
        if early {
            let delay = delay_until(leased.firing.due_at, now).min(MAX_SQS_DELAY.as_secs());
            self.send_messages(vec![Outgoing::of(&leased.firing, delay)?]).await?;
        }
        Ok(early)
    }
}

#[async_trait]
impl FiringQueue for SqsFiringQueue {
    async fn enqueue(&self, firings: &[Firing]) -> StoreResult<()> {
        let now = self.clock.now();
        let mut messages = Vec::new();
        let mut scheduled = Vec::new();
        for firing in firings {
            let delay = delay_until(firing.due_at, now);
            if delay <= self.settings.max_sqs_delay.as_secs() {
                messages.push(Outgoing::of(firing, delay)?);
            } else {
                let lead = chrono::Duration::from_std(self.settings.schedule_lead).unwrap_or_default();
                scheduled.push((firing, firing.due_at - lead));
            }
        }
        self.send_messages(messages).await?;
        for chunk in scheduled.chunks(SCHEDULE_CONCURRENCY) {
            try_join_all(chunk.iter().map(|(firing, at)| self.schedule(firing, *at))).await?;
        }
        Ok(())
    }

    /// One `GetQueueAttributes`: visible + delayed + in-flight (all approximate). SQS
    /// tells no message's age (that is CloudWatch's `ApproximateAgeOfOldestMessage`), and
    /// firings parked in EventBridge Scheduler are not counted.
    async fn depth(&self) -> StoreResult<QueueDepth> {
        use aws_sdk_sqs::types::QueueAttributeName as A;
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.settings.queue_url)
            .attribute_names(A::ApproximateNumberOfMessages)
            .attribute_names(A::ApproximateNumberOfMessagesDelayed)
            .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| unavailable("SQS GetQueueAttributes", e))?;
        let attributes = out.attributes.unwrap_or_default();
        let queued = [
            A::ApproximateNumberOfMessages,
            A::ApproximateNumberOfMessagesDelayed,
            A::ApproximateNumberOfMessagesNotVisible,
        ]
        .iter()
        .map(|name| attributes.get(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or_default())
        .sum();
        Ok(QueueDepth { queued, earliest_due_at: None, knows_due_times: false })
    }

    async fn receive(&self, max: usize) -> StoreResult<Vec<Leased>> {
        let mut leased = Vec::new();
        while leased.len() < max {
            let asked = (max - leased.len()).min(MAX_BATCH_ENTRIES);
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.settings.queue_url)
                .max_number_of_messages(i32::try_from(asked).unwrap_or(10))
                .wait_time_seconds(0)
                .set_visibility_timeout(
                    self.settings.visibility_timeout.map(|v| i32::try_from(v.as_secs()).unwrap_or(i32::MAX)),
                )
                .send()
                .await
                .map_err(|e| unavailable("SQS ReceiveMessage", e))?;
            let messages = out.messages.unwrap_or_default();
            let got = messages.len();
            for message in messages {
                let (Some(body), Some(receipt)) = (message.body.as_deref(), message.receipt_handle.as_deref()) else {
                    continue;
                };
                match leased_from_sqs_message(body, receipt) {
                    Ok(l) => leased.push(l),
                    // A message that is not a firing is left alone: after the redrive
                    // policy's receive count it moves to the dead-letter queue.
                    Err(e) => tracing::warn!(message_id = ?message.message_id, error = %e, "unreadable queue message"),
                }
            }
            if got < asked {
                break;
            }
        }
        Ok(leased)
    }

    async fn ack(&self, leased: &Leased) -> StoreResult<()> {
        self.sqs
            .delete_message()
            .queue_url(&self.settings.queue_url)
            .receipt_handle(&leased.receipt)
            .send()
            .await
            .map_err(|e| unavailable("SQS DeleteMessage", e))?;
        Ok(())
    }

    async fn retry(&self, leased: &Leased, next: &Firing) -> StoreResult<()> {
        // The next attempt is durable before the current message goes: a crash between
        // the two repeats an attempt, never loses one.
        self.enqueue(std::slice::from_ref(next)).await?;
        self.ack(leased).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn delays_round_up_to_whole_seconds() {
        let now = Utc.timestamp_opt(1_000, 0).unwrap();
        assert_eq!(delay_until(now - chrono::Duration::seconds(5), now), 0);
        assert_eq!(delay_until(now, now), 0);
        assert_eq!(delay_until(now + chrono::Duration::milliseconds(1), now), 1);
        assert_eq!(delay_until(now + chrono::Duration::seconds(900), now), 900);
    }

    #[test]
    fn at_expressions_are_utc_seconds() {
        let t = Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::milliseconds(999);
        assert_eq!(at_expression(t), "at(2030-01-02T03:04:05)");
    }

    #[test]
    fn schedule_names_are_valid_and_per_attempt() {
        let json = serde_json::json!({
            "delivery_id": "d_0123456789abcdef0123456789abcdef", "postback_id": "p", "attempt": 3,
            "due_at": "2030-01-01T00:00:00Z", "queued_at": "2030-01-01T00:00:00Z",
            "event": {"type": "click", "transaction_id": "t", "timestamp": "2030-01-01T00:00:00Z"}
        });
        let mut firing: Firing = serde_json::from_value(json).unwrap();
        assert_eq!(schedule_name(&firing), "d_0123456789abcdef0123456789abcdef-a3");
        firing.delivery_id = "resend of log/ü".repeat(10);
        let name = schedule_name(&firing);
        assert!(name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)), "{name}");
        firing.attempt = 4;
        assert_ne!(schedule_name(&firing), name);
        // A deferral of the same attempt to a rate-limit slot is another schedule.
        let deferred = Firing { slot_second: Some(1_900_000_000), ..firing.clone() };
        let later = Firing { slot_second: Some(1_900_000_001), ..firing.clone() };
        assert_ne!(schedule_name(&deferred), schedule_name(&firing));
        assert_ne!(schedule_name(&deferred), schedule_name(&later));
        assert!(schedule_name(&deferred).len() <= 64);
    }

    #[test]
    fn lambda_messages_become_leases() {
        assert!(matches!(leased_from_sqs_message("{", "r"), Err(StoreError::Corrupt(_))));
        let message = aws_lambda_events::sqs::SqsMessage::default();
        assert!(matches!(leased_from_lambda_message(&message), Err(StoreError::Corrupt(_))));
    }
}
