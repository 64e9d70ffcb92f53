//! Dispatch: take a due firing, re-check it, render, send, log, and retry or finish.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::catalog::Source;
use super::control::Admission;
use super::App;
use crate::domain::breaker::is_retryable_failure;
use crate::domain::delivery::{OutboundRequest, OutboundResponse, SendFailure, Verdict};
use crate::domain::event::Status;
use crate::domain::firing::Firing;
use crate::domain::log::{LogEntry, Outcome};
use crate::domain::postback::CompiledPostback;
use crate::domain::redact::redact_url;
use crate::ports::{Leased, StoreResult};

/// What became of one firing attempt; its name in metrics and logs is the variant's.
#[derive(Debug, Clone, PartialEq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum AttemptOutcome {
    Delivered,
    /// The next attempt is queued for this time.
    Retrying(DateTime<Utc>),
    Failed,
    Skipped(String),
    /// Its delivery id was already delivered (a redelivered queue message): nothing sent.
    AlreadyDelivered,
    /// Its postback's breaker is open: held until it closes (not sent, no attempt used).
    Held,
    /// Back on the queue, same attempt, until this time: its rate-limit slot is in a
    /// later second, or it carries the breaker's next probe. Not sent, no attempt used.
    Deferred(DateTime<Utc>),
}

impl AttemptOutcome {
    /// The outcome's name in metrics and logs.
    pub fn label(&self) -> &'static str {
        self.into()
    }
}

/// One attempt as the dispatcher saw it.
pub(super) struct Attempt {
    pub outcome: AttemptOutcome,
    pub entry: LogEntry,
    /// `None`: nothing was sent (skipped, not renderable); else whether the send failed
    /// in a retryable way (what the breaker counts).
    pub retryable_failure: Option<bool>,
    /// The queue message was acknowledged with the entry (`CombinedWrites::settle_delivered`).
    pub acked: bool,
    /// The postback as the store has it, when the attempt read it because the cached one
    /// would have skipped the firing and was not the stored one.
    pub postback: Option<Arc<CompiledPostback>>,
}

impl Attempt {
    fn unsent(outcome: AttemptOutcome, entry: LogEntry) -> Self {
        Self { outcome, entry, retryable_failure: None, acked: false, postback: None }
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    app: Arc<App>,
}

impl Dispatcher {
    /// The clock the dispatcher judges due times by (the Lambda glue uses it to tell an
    /// early scheduled firing from a due one).
    pub fn now(&self) -> DateTime<Utc> {
        self.app.ports.clock.now()
    }

    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    pub fn app(&self) -> &App {
        &self.app
    }

    /// Process one leased queue message to the end: skip, hold, defer, deliver, fail, or
    /// re-queue the next attempt. An `Err` means a dependency failed; the message was not
    /// acknowledged and comes back when its lease runs out.
    ///
    /// Order: the delivered check, the breaker gate (a held firing takes no rate-limit
    /// slot), the rate limit, then the attempt (which re-checks the status); after a
    /// regular attempt the breaker learns the result (see `super::control`).
    pub async fn process(&self, leased: &Leased) -> StoreResult<AttemptOutcome> {
        let queue = &self.app.ports.queue;
        let firing = &leased.firing;
        // Where the lease itself dropped delivered ids, a leased message is not delivered.
        let checked_at_lease = self.app.ports.combined.as_ref().is_some_and(|c| c.lease_checks_delivered());
        if !checked_at_lease && self.app.ports.logs.is_delivered(&firing.delivery_id).await? {
            tracing::info!(delivery_id = %firing.delivery_id, "already delivered; dropping redelivered message");
            queue.ack(leased).await?;
            self.app.metrics.firing(AttemptOutcome::AlreadyDelivered.label());
            return Ok(AttemptOutcome::AlreadyDelivered);
        }
        let (postback, source) = self.app.catalog.for_firing(firing).await?;
        let Some(postback) = postback else {
            // The store's own answer (never a cached absence): there is no such postback.
            let attempt = self.skip_deleted(firing, false).await?;
            self.app.metrics.firing(attempt.outcome.label());
            queue.ack(leased).await?;
            return Ok(attempt.outcome);
        };
        let gate = match self.admit(leased, &postback).await? {
            Admission::Go { probe, healthy } => (probe, healthy),
            Admission::Done(outcome) => return Ok(outcome),
        };
        let attempt = self.attempt_uncounted(&postback, source, firing, false, Some(leased)).await?;
        self.app.metrics.firing(attempt.outcome.label());
        match &attempt.outcome {
            AttemptOutcome::Retrying(at) => {
                // The next attempt's message carries the postback's destination (its
                // message group on SQS) and version as they are now.
                let next = firing.clone().bound_to(attempt.postback.as_deref().unwrap_or(&postback));
                queue.retry(leased, &next.next_attempt(*at)).await?
            }
            _ if attempt.acked => {}
            _ => queue.ack(leased).await?,
        }
        // The firing's own fate is settled first; the breaker and alerts follow.
        let postback = attempt.postback.clone().unwrap_or(postback);
        if attempt.outcome == AttemptOutcome::Delivered {
            self.reverse_if_rejected(&postback, &attempt.entry).await?;
        }
        self.after_attempt(&postback, firing, gate, attempt.retryable_failure, &attempt.entry).await?;
        if attempt.outcome == AttemptOutcome::Failed {
            self.firing_failed(&postback, &attempt.entry).await;
        }
        Ok(attempt.outcome)
    }

    /// Make one attempt of a firing and log it. No queue work: `process` (and the
    /// resend route) decide what follows. Test attempts are logged with `test: true`,
    /// never retried and never mark the delivery id delivered.
    pub async fn attempt(&self, firing: &Firing, test: bool) -> StoreResult<(AttemptOutcome, LogEntry)> {
        let (postback, source) = self.app.catalog.for_firing(firing).await?;
        let attempt = match postback {
            Some(postback) => self.attempt_uncounted(&postback, source, firing, test, None).await?,
            None => self.skip_deleted(firing, test).await?,
        };
        if !test {
            self.app.metrics.firing(attempt.outcome.label());
        }
        Ok((attempt.outcome, attempt.entry))
    }

    /// Log a firing whose postback the store no longer has as skipped ("postback
    /// deleted"). Only on the store's answer, never on a cached index's absence. Not
    /// counted in the metrics (the caller counts).
    async fn skip_deleted(&self, firing: &Firing, test: bool) -> StoreResult<Attempt> {
        let reason = "postback deleted";
        let entry = self.skipped_entry(firing, None, reason.to_string(), test);
        self.app.ports.logs.append(std::slice::from_ref(&entry)).await?;
        tracing::info!(delivery_id = %firing.delivery_id, postback_id = %firing.postback_id, reason, "skipped");
        Ok(Attempt::unsent(AttemptOutcome::Skipped(reason.into()), entry))
    }

    /// As `attempt`, with the postback given (the test route sends an unsaved sample).
    /// Counted in the metrics unless it is a test attempt.
    pub async fn attempt_with(
        &self,
        postback: &CompiledPostback,
        firing: &Firing,
        test: bool,
    ) -> StoreResult<(AttemptOutcome, LogEntry)> {
        let attempt = self.attempt_uncounted(postback, Source::Store, firing, test, None).await?;
        if !test {
            self.app.metrics.firing(attempt.outcome.label());
        }
        Ok((attempt.outcome, attempt.entry))
    }

    /// `leased`: the queue message this attempt is for, when it comes from the queue; a
    /// delivered one is then settled with its entry in one write where the store can.
    /// `source`: where `postback` came from; a skip (an end of the firing) decided on a
    /// cached postback is decided again on the store's answer before it is taken.
    async fn attempt_uncounted(
        &self,
        postback: &CompiledPostback,
        source: Source,
        firing: &Firing,
        test: bool,
        leased: Option<&Leased>,
    ) -> StoreResult<Attempt> {
        let logs = &self.app.ports.logs;
        let regular = firing.check_status && !test;
        let mut refreshed: Option<Arc<CompiledPostback>> = None;
        if regular {
            if let Some(mut reason) = self.skip_reason(postback, firing).await? {
                // An end of the firing: taken on the store's answer only.
                let mut skip = true;
                if source == Source::Cached {
                    match self.app.catalog.from_store(&firing.postback_id).await? {
                        None => return self.skip_deleted(firing, test).await,
                        Some(current) if current.postback.version != postback.postback.version => {
                            match self.skip_reason(&current, firing).await? {
                                Some(again) => reason = again,
                                None => {
                                    tracing::info!(delivery_id = %firing.delivery_id, postback_id = %firing.postback_id,
                                        "the cached postback was stale; going by the stored one");
                                    skip = false;
                                }
                            }
                            refreshed = Some(current);
                        }
                        // The cached postback is the stored one: the skip stands.
                        Some(_) => {}
                    }
                }
                if skip {
                    let postback = refreshed.as_deref().unwrap_or(postback);
                    let entry = self.skipped_entry(firing, Some(postback), reason.clone(), test);
                    logs.append(std::slice::from_ref(&entry)).await?;
                    tracing::info!(delivery_id = %firing.delivery_id, postback_id = %firing.postback_id, %reason, "skipped");
                    let mut attempt = Attempt::unsent(AttemptOutcome::Skipped(reason), entry);
                    attempt.postback = refreshed;
                    return Ok(attempt);
                }
            }
        }
        let postback = refreshed.as_deref().unwrap_or(postback);
        // A reversal firing sends the postback's reversal request.
        let target = postback.request_for(firing);

        let ctx = firing.macro_context(&postback.postback);
        let fired_at = self.app.ports.clock.now();
        let mut request = match target.render_signed(&ctx, fired_at) {
            Ok(request) => request,
            Err(err) => {
                // Only reachable with a value that cannot go into a header (CR/LF):
                // retrying cannot help.
                let mut entry = self.entry(firing, postback, None, fired_at, test);
                entry.outcome = Outcome::Failed;
                entry.error = Some(err.to_string());
                logs.append(std::slice::from_ref(&entry)).await?;
                return Ok(Attempt::unsent(AttemptOutcome::Failed, entry));
            }
        };

        request.public_only = self.partner_guarded(postback);
        let started = std::time::Instant::now();
        let result = match partner_refusal(&request) {
            Some(refused) => Err(refused),
            None => self.app.ports.sender.send(&request).await,
        };
        let elapsed = started.elapsed();
        if !test {
            self.app.metrics.delivery_duration(elapsed);
        }
        let jitter = self.app.ports.jitter.next();
        let rule = postback.postback.success_rule.as_ref();
        let answered_at = self.app.ports.clock.now();
        let verdict = self.app.policy.retry.classify_with_rule(&result, rule, firing.attempt, jitter, answered_at);
        let retryable_failure = is_retryable_failure(&result, rule, answered_at);
        let mut entry = self.entry(firing, postback, Some(target.shown(&request, &ctx)), fired_at, test);
        fill_result(&mut entry, &result, elapsed);
        // A 2xx that breaks the success rule: the entry says which rule (on a retry too).
        if let (Some(rule), Ok(response)) = (rule, &result) {
            if (200..300).contains(&response.status) {
                entry.error = match &verdict {
                    Verdict::Fail(reason) => Some(reason.clone()),
                    _ => rule.broken_by(&response.body),
                };
            }
        }

        let mut acked = false;
        let outcome = match verdict {
            Verdict::Delivered => {
                entry.outcome = Outcome::Delivered;
                let settle = leased.zip(self.app.ports.combined.as_ref());
                if test {
                    logs.append(std::slice::from_ref(&entry)).await?;
                    AttemptOutcome::Delivered
                } else {
                    // The store's own id for a delivered entry, if it has one (DynamoDB:
                    // the entry is its own delivered marker).
                    if let Some(id) = logs.delivered_entry_id(&entry.delivery_id) {
                        entry.id = id;
                    }
                    let fresh = match settle {
                        Some((leased, combined)) => {
                            acked = true;
                            combined.settle_delivered(leased, &entry).await?
                        }
                        None => logs.record_delivered(&entry).await?,
                    };
                    if fresh {
                        AttemptOutcome::Delivered
                    } else {
                        // Another consumer delivered the same id meanwhile (at-least-once).
                        AttemptOutcome::AlreadyDelivered
                    }
                }
            }
            Verdict::Retry(wait) if !test => {
                let next = fired_at + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::hours(6));
                entry.outcome = Outcome::Retrying;
                entry.next_attempt_at = Some(next);
                logs.append(std::slice::from_ref(&entry)).await?;
                AttemptOutcome::Retrying(next)
            }
            Verdict::Retry(_) => {
                entry.outcome = Outcome::Failed;
                logs.append(std::slice::from_ref(&entry)).await?;
                AttemptOutcome::Failed
            }
            Verdict::Fail(reason) => {
                entry.outcome = Outcome::Failed;
                if entry.error.is_none() {
                    entry.error = Some(reason);
                }
                logs.append(std::slice::from_ref(&entry)).await?;
                AttemptOutcome::Failed
            }
        };
        tracing::info!(
            delivery_id = %firing.delivery_id,
            postback_id = %firing.postback_id,
            transaction_id = %firing.event.transaction_id,
            attempt = firing.attempt,
            status = ?entry.status_code,
            outcome = entry.outcome.as_str(),
            duration_ms = entry.duration_ms,
            "fired"
        );
        Ok(Attempt { outcome, entry, retryable_failure: Some(retryable_failure), acked, postback: refreshed })
    }

    /// Whether the partner guard applies: a partner's postback (sends, tests, resends)
    /// never reaches a private or loopback address unless `PARTNER_PRIVATE_TARGETS`,
    /// whatever `ALLOW_PRIVATE_TARGETS` lets the network's own reach.
    fn partner_guarded(&self, postback: &CompiledPostback) -> bool {
        postback.postback.owner.is_some() && !self.app.policy.partners.private_targets
    }

    /// Why a regular firing must not go out now: its postback was disabled, or the
    /// conversion/event status changed so that the postback no longer fires for it.
    async fn skip_reason(&self, postback: &CompiledPostback, firing: &Firing) -> StoreResult<Option<String>> {
        if !postback.postback.enabled {
            return Ok(Some("postback disabled".into()));
        }
        if !crate::domain::partner::fires(&postback.postback) {
            return Ok(Some("postback not approved".into()));
        }
        if firing.reversal_of.is_some() {
            return self.reversal_skip_reason(postback, firing).await;
        }
        let event = &firing.event;
        let Some(key) = event.status_key() else { return Ok(None) };
        let current = self.app.ports.touches.get_status(&event.transaction_id, &key).await?;
        let (status, reason) = match &current {
            Some(c) => (c.status, c.rejection_reason.as_deref()),
            // The status record expired (retention) or was never written: judge by the
            // status the firing was queued for.
            None => match event.status {
                Some(s) => (s, event.rejection_reason.as_deref()),
                None => return Ok(None),
            },
        };
        if postback.postback.fires_for_status(status, reason) {
            return Ok(None);
        }
        let was = event.status.map(|s| s.as_str()).unwrap_or("unknown");
        let mut why = format!("status changed from {was} to {}", status.as_str());
        if let Some(r) = reason {
            why.push_str(&format!(" (reason: {r})"));
        }
        why.push_str(&format!("; postback fires on {}", fire_on_text(postback)));
        Ok(Some(why))
    }

    /// Why a reversal firing must not go out now: its postback has no reversal request
    /// any more, or the conversion is no longer rejected.
    async fn reversal_skip_reason(&self, postback: &CompiledPostback, firing: &Firing) -> StoreResult<Option<String>> {
        if postback.reversal.is_none() {
            return Ok(Some("postback has no reversal request".into()));
        }
        let event = &firing.event;
        let Some(key) = event.status_key() else { return Ok(None) };
        match self.app.ports.touches.get_status(&event.transaction_id, &key).await? {
            Some(current) if current.status != Status::Rejected => Ok(Some(format!(
                "status changed from rejected to {}; a reversal goes only while the conversion is rejected",
                current.status.as_str()
            ))),
            _ => Ok(None),
        }
    }

    /// After a firing was delivered: if its conversion is rejected by now and its
    /// postback has a reversal request, queue the reversal (the rejection came while the
    /// firing was in flight, or before it was delivered: ingest saw no delivery to
    /// reverse then). Reads nothing for a postback without a reversal. The reversal's
    /// delivery id is derived from this delivery's, so ingest queueing it too is harmless.
    pub(super) async fn reverse_if_rejected(&self, postback: &CompiledPostback, entry: &LogEntry) -> StoreResult<()> {
        if postback.reversal.is_none() || entry.test {
            return Ok(());
        }
        let Some(firing) = entry.firing.as_ref().filter(|f| f.reversal_of.is_none()) else { return Ok(()) };
        let Some(key) = firing.event.status_key() else { return Ok(()) };
        if firing.event.status == Some(Status::Rejected) {
            return Ok(());
        }
        let Some(current) = self.app.ports.touches.get_status(&firing.event.transaction_id, &key).await? else {
            return Ok(());
        };
        if current.status != Status::Rejected {
            return Ok(());
        }
        let now = self.app.ports.clock.now();
        if let Some(reversal) = Firing::reversal_for(entry, &current, now) {
            tracing::info!(delivery_id = %reversal.delivery_id, original = %entry.delivery_id,
                "delivered after the conversion was rejected; queueing its reversal");
            self.app.ports.queue.enqueue(&[reversal.bound_to(postback)]).await?;
        }
        Ok(())
    }

    fn entry(
        &self,
        firing: &Firing,
        postback: &CompiledPostback,
        shown: Option<OutboundRequest>,
        fired_at: DateTime<Utc>,
        test: bool,
    ) -> LogEntry {
        let logged_at = self.app.ports.clock.now();
        let mut entry = base_entry(firing, Some(postback), shown.is_none(), fired_at, logged_at, test);
        if let Some(shown) = shown {
            entry.method = shown.method;
            entry.url = shown.url;
            entry.request_headers = shown.headers;
            entry.request_body = shown.body;
        }
        entry
    }

    fn skipped_entry(
        &self,
        firing: &Firing,
        postback: Option<&CompiledPostback>,
        reason: String,
        test: bool,
    ) -> LogEntry {
        let now = self.app.ports.clock.now();
        let mut entry = base_entry(firing, postback, true, now, now, test);
        entry.error = Some(reason);
        entry
    }
}

/// A log entry for a firing with no request shown yet and outcome `skipped`; the
/// callers fill in what happened. `with_template_url`: show the postback's URL template
/// (redacted) and method; `false` when the caller sets the request it sent instead, so
/// the template is not redacted only to be thrown away. The entry's id is ordered by
/// `logged_at`, when the attempt ended (an entry's place in the list is its `fired_at`).
fn base_entry(
    firing: &Firing,
    postback: Option<&CompiledPostback>,
    with_template_url: bool,
    fired_at: DateTime<Utc>,
    logged_at: DateTime<Utc>,
    test: bool,
) -> LogEntry {
    let (name, method, url) = match postback {
        Some(p) if with_template_url => (
            p.postback.name.clone(),
            p.postback.method.as_str().to_string(),
            redact_url(&p.postback.redact_template_secrets(&p.postback.url)),
        ),
        Some(p) => (p.postback.name.clone(), String::new(), String::new()),
        None => (String::new(), String::new(), String::new()),
    };
    LogEntry {
        id: crate::domain::ids::time_ordered(logged_at).to_string(),
        delivery_id: firing.delivery_id.clone(),
        postback_id: firing.postback_id.clone(),
        postback_name: name,
        transaction_id: firing.event.transaction_id.clone(),
        event_id: firing.event.event_id.clone(),
        kind: firing.event.kind,
        offer_id: firing.event.offer_id.clone(),
        publisher_id: firing.event.publisher_id.clone(),
        fired_at,
        attempt: firing.attempt,
        method,
        url,
        request_headers: Default::default(),
        request_body: None,
        status_code: None,
        response_body: None,
        error: None,
        duration_ms: 0,
        outcome: Outcome::Skipped,
        test,
        postback_version: postback.map(|p| p.postback.version),
        next_attempt_at: None,
        resend_of: firing.resend_of.clone(),
        replay_of: firing.replay_of.clone(),
        reversal_of: firing.reversal_of.as_ref().map(|r| r.entry_id.clone()),
        firing: Some(firing.clone()),
    }
}

/// `elapsed` is the whole send as the dispatcher saw it, used when there is no response.
fn fill_result(entry: &mut LogEntry, result: &Result<OutboundResponse, SendFailure>, elapsed: Duration) {
    match result {
        Ok(response) => {
            entry.status_code = Some(response.status);
            entry.response_body = Some(response.body.clone());
            entry.duration_ms = duration_ms(response.duration);
            if (300..400).contains(&response.status) {
                entry.error = Some("redirect not followed".into());
            }
        }
        Err(failure) => {
            entry.error = Some(failure.to_string());
            entry.duration_ms = duration_ms(elapsed);
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn fire_on_text(postback: &CompiledPostback) -> String {
    let p = &postback.postback;
    let base = serde_json::to_value(p.fire_on).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    match &p.rejection_reasons {
        Some(reasons) if !reasons.is_empty() => format!("{base} (rejection reasons: {})", reasons.join(", ")),
        _ => base,
    }
}

/// The partner guard on a `public_only` request's rendered host (`localhost`
/// included), with a message naming partners; a host name is resolved by the sender,
/// which keeps only public addresses for such a request.
fn partner_refusal(request: &OutboundRequest) -> Option<SendFailure> {
    if !request.public_only {
        return None;
    }
    let url = match url::Url::parse(&request.url) {
        Ok(url) => url,
        Err(e) => return Some(SendFailure::Refused(format!("the URL does not parse: {e}"))),
    };
    let local = url.host_str().is_some_and(|h| {
        let h = h.trim_end_matches('.').to_ascii_lowercase();
        h == "localhost" || h.ends_with(".localhost")
    });
    if local {
        return Some(SendFailure::Refused("localhost is not reachable for partners' postbacks".into()));
    }
    crate::domain::guard::check_url(&url, false)
        .err()
        .map(|why| SendFailure::Refused(format!("{why}; partners' postbacks reach public addresses only")))
}

#[cfg(test)]
mod tests {
    use super::AttemptOutcome;

    /// The names metrics and logs use.
    #[test]
    fn each_outcome_has_its_label() {
        let at = chrono::DateTime::UNIX_EPOCH;
        let labels = [
            (AttemptOutcome::Delivered, "delivered"),
            (AttemptOutcome::Retrying(at), "retrying"),
            (AttemptOutcome::Failed, "failed"),
            (AttemptOutcome::Skipped(String::new()), "skipped"),
            (AttemptOutcome::AlreadyDelivered, "already_delivered"),
            (AttemptOutcome::Held, "held"),
            (AttemptOutcome::Deferred(at), "deferred"),
        ];
        for (outcome, label) in labels {
            assert_eq!(outcome.label(), label);
        }
    }
}
