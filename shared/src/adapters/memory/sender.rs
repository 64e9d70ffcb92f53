//! A scripted `HttpSender`: answers each URL with the next answer scripted for it (or
//! the default), after the answer's delay on its clock, and records every request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::adapters::system::SystemClock;
use crate::domain::delivery::{OutboundRequest, OutboundResponse, SendFailure};
use crate::domain::log::MAX_LOGGED_RESPONSE_BYTES;
use crate::ports::{Clock, HttpSender};

/// What the receiver does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// An HTTP response.
    Response { status: u16, headers: Vec<(String, String)>, body: String },
    /// No response within this timeout: `SendFailure::Timeout` with its milliseconds.
    Timeout(Duration),
    /// The request failed this way (connection error, refused destination, ...).
    Failure(SendFailure),
}

/// One scripted answer: a reply, given after `delay` on the sender's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub reply: Reply,
    pub delay: Duration,
}

impl Answer {
    /// An HTTP response with this status and an empty body.
    pub fn status(status: u16) -> Self {
        Self { reply: Reply::Response { status, headers: Vec::new(), body: String::new() }, delay: Duration::ZERO }
    }

    /// `200 ok`.
    pub fn ok() -> Self {
        Self::status(200).body("ok")
    }

    /// A connection error (retried by the delivery policy).
    pub fn connection_error(message: &str) -> Self {
        Self::failure(SendFailure::Connect(message.to_string()))
    }

    /// No response within `limit`: `SendFailure::Timeout`, reported at once (add
    /// `.after(limit)` to let that time pass on the sender's clock first).
    pub fn timeout(limit: Duration) -> Self {
        Self { reply: Reply::Timeout(limit), delay: Duration::ZERO }
    }

    pub fn failure(failure: SendFailure) -> Self {
        Self { reply: Reply::Failure(failure), delay: Duration::ZERO }
    }

    /// Add a response header (e.g. `Retry-After`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if let Reply::Response { headers, .. } = &mut self.reply {
            headers.push((name.to_string(), value.to_string()));
        }
        self
    }

    /// Set the response body (kept up to `MAX_LOGGED_RESPONSE_BYTES`, as the real sender).
    pub fn body(mut self, text: &str) -> Self {
        if let Reply::Response { body, .. } = &mut self.reply {
            *body = text.to_string();
        }
        self
    }

    /// Answer after `delay` (on the sender's clock: a `ManualClock` must be advanced).
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// A request the sender was given, and when (by its clock).
#[derive(Debug, Clone, PartialEq)]
pub struct SentRequest {
    pub request: OutboundRequest,
    pub at: DateTime<Utc>,
}

#[derive(Debug)]
struct Script {
    /// (URL prefix, answers in turn); the longest matching prefix answers.
    answers: Vec<(String, VecDeque<Answer>)>,
    default: Answer,
    sent: Vec<SentRequest>,
}

pub struct ScriptedSender {
    clock: Arc<dyn Clock>,
    script: Mutex<Script>,
    sent: Notify,
}

impl std::fmt::Debug for ScriptedSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedSender").field("script", &*self.lock()).finish_non_exhaustive()
    }
}

impl Default for ScriptedSender {
    fn default() -> Self {
        Self::new()
    }
}

impl ScriptedSender {
    /// Answers `200 ok` to everything not scripted, delays on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// Delays (and the time recorded with each request) on this clock.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        let script = Script { answers: Vec::new(), default: Answer::ok(), sent: Vec::new() };
        Self { clock, script: Mutex::new(script), sent: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What every request gets once its URL's script is used up (or it has none).
    pub fn set_default(&self, answer: Answer) {
        self.lock().default = answer;
    }

    /// Requests whose URL starts with `url_prefix` get these answers, one each, in turn
    /// (after those scripted for it before).
    pub fn script(&self, url_prefix: &str, answers: impl IntoIterator<Item = Answer>) {
        let mut script = self.lock();
        let answers: Vec<Answer> = answers.into_iter().collect();
        match script.answers.iter_mut().find(|(prefix, _)| prefix == url_prefix) {
            Some((_, queue)) => queue.extend(answers),
            None => script.answers.push((url_prefix.to_string(), answers.into())),
        }
    }

    /// Every request sent so far, in order.
    pub fn requests(&self) -> Vec<SentRequest> {
        self.lock().sent.clone()
    }

    /// The requests whose URL starts with `url_prefix`.
    pub fn requests_to(&self, url_prefix: &str) -> Vec<SentRequest> {
        self.lock().sent.iter().filter(|r| r.request.url.starts_with(url_prefix)).cloned().collect()
    }

    pub fn count(&self) -> usize {
        self.lock().sent.len()
    }

    /// Wait until at least `n` requests were sent.
    pub async fn wait_for_requests(&self, n: usize) {
        loop {
            let notified = self.sent.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count() >= n {
                return;
            }
            notified.await;
        }
    }

    fn next_answer(&self, request: &OutboundRequest) -> Answer {
        let mut script = self.lock();
        script.sent.push(SentRequest { request: request.clone(), at: self.clock.now() });
        let scripted = script
            .answers
            .iter_mut()
            .filter(|(prefix, _)| request.url.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .and_then(|(_, queue)| queue.pop_front());
        scripted.unwrap_or_else(|| script.default.clone())
    }
}

#[async_trait]
impl HttpSender for ScriptedSender {
    async fn send(&self, request: &OutboundRequest) -> Result<OutboundResponse, SendFailure> {
        let answer = self.next_answer(request);
        self.sent.notify_waiters();
        if !answer.delay.is_zero() {
            let at = chrono::Duration::from_std(answer.delay)
                .ok()
                .and_then(|d| self.clock.now().checked_add_signed(d))
                .unwrap_or(DateTime::<Utc>::MAX_UTC);
            self.clock.sleep_until(at).await;
        }
        match answer.reply {
            Reply::Response { status, headers, mut body } => {
                let retry_after =
                    headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("retry-after")).map(|(_, v)| v.clone());
                truncate(&mut body, MAX_LOGGED_RESPONSE_BYTES);
                Ok(OutboundResponse { status, retry_after, body, duration: answer.delay })
            }
            Reply::Timeout(limit) => Err(SendFailure::Timeout(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX))),
            Reply::Failure(failure) => Err(failure),
        }
    }
}

fn truncate(text: &mut String, max_bytes: usize) {
    if text.len() > max_bytes {
        let mut end = max_bytes;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}
