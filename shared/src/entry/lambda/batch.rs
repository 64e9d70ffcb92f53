//! The dispatch function's SQS batch runner: every message of a batch concurrently,
//! within the invocation's deadline, failures reported as batch item failures.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use futures::{FutureExt, StreamExt};

use super::deadline::invocation_deadline;
use super::emf::emit_metrics;
use crate::adapters::aws::{leased_from_lambda_message, SqsFiringQueue};
use crate::ports::{Clock, Leased};
use crate::service::{AttemptOutcome, Dispatcher};

/// Messages of one batch dispatched at once (the event source's batch size is 10).
pub const DISPATCH_CONCURRENCY: usize = 10;

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
    let limits = BatchLimits {
        clock: batch.dispatcher.app().ports.clock.clone(),
        deadline: batch.deadline(deadline),
        start_budget: batch.start_budget(),
        grace: RESPONSE_GRACE,
    };
    let response = run_batch(event.records, limits, |message| process_message(batch, message)).await;
    emit_metrics(batch.dispatcher.app(), "dispatch");
    response
}

/// The time limits of one batch: a budget on the dispatcher's clock.
#[derive(Clone)]
struct BatchLimits {
    clock: Arc<dyn Clock>,
    deadline: chrono::DateTime<chrono::Utc>,
    /// A message starts only while this much is left before the deadline.
    start_budget: Duration,
    /// The handler answers this long before the deadline.
    grace: Duration,
}

impl BatchLimits {
    fn left(&self) -> Duration {
        (self.deadline - self.clock.now()).to_std().unwrap_or_default()
    }

    fn may_start(&self) -> bool {
        self.left() >= self.start_budget
    }

    /// When the handler answers: `grace` before the deadline.
    fn cutoff(&self) -> chrono::DateTime<chrono::Utc> {
        self.deadline - chrono::Duration::from_std(self.grace).unwrap_or_default()
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
    let started = limits.clock.now();
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
    let (process, limits) = (&process, &limits);
    let mut finished = Box::pin(
        futures::stream::iter(same_firing_groups(messages))
            .map(|group| {
                Box::pin(futures::stream::iter(group).then(move |(position, message)| async move {
                    (position, run_one(message, limits, process).await)
                }))
            })
            .flatten_unordered(DISPATCH_CONCURRENCY),
    );
    let mut cutoff = limits.clock.sleep_until(limits.cutoff());
    let mut outcomes: Vec<Option<MessageOutcome>> = vec![None; total];
    loop {
        tokio::select! {
            // A message that finished counts, even at the cutoff.
            biased;
            next = finished.next() => match next {
                Some((position, outcome)) => outcomes[position] = Some(outcome),
                None => break,
            },
            // The rest is dropped unfinished: answering now beats a Lambda timeout,
            // which would return every message of the batch.
            () = &mut cutoff => break,
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
        duration_ms = millis((limits.clock.now() - started).to_std().unwrap_or_default()),
        left_ms = millis(limits.left()),
        "batch dispatched"
    );
    response
}

/// One message within the batch's limits: not started when the deadline is too near,
/// a panic turned into that message's failure.
async fn run_one<F, Fut>(message: BatchMessage, limits: &BatchLimits, process: &F) -> MessageOutcome
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
    use super::*;
    use crate::testing::ManualClock;
    use std::cell::Cell;
    use std::pin::Pin;
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

    fn manual_clock() -> Arc<ManualClock> {
        Arc::new(ManualClock::new(at(1_900_000_000_000)))
    }

    /// Limits with the deadline `deadline_in` from `clock`'s now.
    fn limits_on(
        clock: &Arc<ManualClock>,
        deadline_in: Duration,
        start_budget: Duration,
        grace: Duration,
    ) -> BatchLimits {
        let deadline = clock.now() + chrono::Duration::from_std(deadline_in).unwrap();
        BatchLimits { clock: clock.clone(), deadline, start_budget, grace }
    }

    /// Limits on a clock that stands still: only the time left at the start counts.
    fn limits(deadline_in: Duration, start_budget: Duration, grace: Duration) -> BatchLimits {
        limits_on(&manual_clock(), deadline_in, start_budget, grace)
    }

    /// Drive `batch`, which must not answer meanwhile, until the work was handed `n`
    /// messages.
    async fn until_started<F: Future>(mut batch: Pin<&mut F>, calls: &Calls, n: usize) {
        for _ in 0..100 {
            if calls.ids().len() >= n {
                return;
            }
            assert!(futures::poll!(batch.as_mut()).is_pending(), "answered before {n} messages started");
        }
        panic!("{n} messages never started");
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
        let clock = manual_clock();
        let done_at = clock.now() + chrono::Duration::milliseconds(700);
        let near =
            limits_on(&clock, Duration::from_millis(2000), Duration::from_millis(1500), Duration::from_millis(50));
        let batch = run_batch(records, near, |m| {
            calls.record(&m);
            let clock = clock.clone();
            async move {
                clock.sleep_until(done_at).await;
                MessageOutcome::Done(AttemptOutcome::Delivered)
            }
        });
        tokio::pin!(batch);
        until_started(batch.as_mut(), &calls, 2).await;
        // The work of m1 and m3 takes 700 ms: 1300 ms are left when m2 could start.
        clock.advance(Duration::from_millis(700));
        let response = batch.await;
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
        let calls = Calls::default();
        let clock = manual_clock();
        let long_after = clock.now() + chrono::Duration::seconds(30);
        let limits = limits_on(&clock, Duration::from_millis(600), Duration::ZERO, Duration::from_millis(100));
        let batch = run_batch(records, limits, |m| {
            calls.record(&m);
            let slow = m.id() == "m1";
            let clock = clock.clone();
            async move {
                if slow {
                    clock.sleep_until(long_after).await;
                }
                MessageOutcome::Done(AttemptOutcome::Delivered)
            }
        });
        tokio::pin!(batch);
        until_started(batch.as_mut(), &calls, 2).await;
        // The grace is 100 ms before the 600 ms deadline: no answer before it...
        clock.advance(Duration::from_millis(499));
        assert!(futures::poll!(batch.as_mut()).is_pending(), "answered before the grace");
        // ...and one at it, with the message still in flight reported.
        clock.advance(Duration::from_millis(1));
        // A bound on a hang (the batch would wait for m1 forever), not a wait for time.
        let response = tokio::time::timeout(Duration::from_secs(10), batch).await.expect("no answer at the grace");
        assert_eq!(failed(&response), ["m1"]);
    }

    fn at(ms: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn system(t: chrono::DateTime<chrono::Utc>) -> SystemTime {
        SystemTime::from(t)
    }

    /// The batch's deadline is judged on the dispatcher's clock (the `Clock` port): a
    /// manual clock moves it; the implausible-deadline warning is logged once.
    #[cfg(feature = "testing")]
    #[tokio::test]
    async fn the_batch_deadline_is_on_the_dispatchers_clock() {
        use crate::adapters::aws::{AwsClients, QueueSettings, ResourceNames};
        use crate::entry::lambda::{CATALOG_CHECK, CATALOG_TTL};
        use crate::ports::Clock;
        use crate::service::Policy;
        use crate::testing::{self, ManualClock};
        let policy = Policy { catalog_ttl: CATALOG_TTL, catalog_check: Some(CATALOG_CHECK), ..testing::policy() };
        let test = testing::app(Arc::new(ManualClock::new(at(1_900_000_000_000))), policy);
        let clock = test.clock.clone();
        let config = aws_config::SdkConfig::builder().behavior_version(aws_config::BehaviorVersion::latest()).build();
        let clients = AwsClients::from_sdk_config(&config);
        let names = ResourceNames::from_lookup(|name| Some(format!("test-{name}"))).unwrap();
        let batch = BatchDispatcher {
            dispatcher: test.app.dispatcher(),
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
}
