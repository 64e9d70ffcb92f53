//! Delivery control in the dispatcher: the circuit breaker (gate, hold, probe, result,
//! release) and the per-postback rate limit, on the `ControlStore` port. The breaker's
//! rules are pure (`domain::breaker`); this module reads and writes its state with
//! conditional writes, so every dispatcher (local tasks, concurrent Lambda
//! invocations) shares one breaker per postback.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{alerts, App, AttemptOutcome, Dispatcher, ServiceError, ServiceResult};
use crate::domain::alert::{AlertContext, AlertKind};
use crate::domain::breaker::{Breaker, BreakerState, Gate, Transition};
use crate::domain::firing::Firing;
use crate::domain::log::LogEntry;
use crate::domain::postback::{CompiledPostback, Postback};
use crate::domain::redact::redact_url;
use crate::ports::{Leased, StoreError, StoreResult, StoredBreaker};

/// Conditional writes tried before giving up on one decision (then the message comes
/// back after its lease and decides again).
const CAS_ATTEMPTS: usize = 8;

/// Held firings moved back to the queue per round of a release.
pub const RELEASE_CHUNK: usize = 500;

/// How long a release's claim on held firings keeps other releases off them: far more
/// than queueing and unholding a chunk takes; a release that died is taken over after it.
const RELEASE_CLAIM: chrono::Duration = chrono::Duration::seconds(60);

/// The probe carrier comes back at least this often while it waits for the cool-down:
/// the queue cannot bring a queued message forward, so when the breaker closes early
/// (resume) the carrier is sent within this time instead of at the cool-down's end.
const CARRIER_POLL: chrono::Duration = chrono::Duration::seconds(1);

/// When a carrier waiting for `probe_at` is due next.
fn carrier_due(probe_at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    probe_at.min(now + CARRIER_POLL).max(now)
}

/// What the gate and the rate limit decided about a due firing.
pub(super) enum Admission {
    /// Send it now (as the half-open probe when `probe`); `healthy`: the breaker was
    /// closed with no failures at the gate.
    Go { probe: bool, healthy: bool },
    /// Handled without an attempt (held, or back on the queue).
    Done(AttemptOutcome),
}

/// A postback's `health` (read-only in the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub state: BreakerState,
    pub consecutive_failures: u32,
    pub opened_at: Option<DateTime<Utc>>,
    pub next_probe_at: Option<DateTime<Utc>>,
    /// Firings held by the open breaker.
    pub held: u64,
}

impl Health {
    fn of(breaker: &Breaker, held: u64, now: DateTime<Utc>) -> Self {
        Self {
            state: breaker.state_at(now),
            consecutive_failures: breaker.consecutive_failures,
            opened_at: breaker.opened_at,
            next_probe_at: breaker.next_probe_at,
            held,
        }
    }
}

/// A postback as the API returns it: the configuration plus its `health`.
#[derive(Debug, Clone, Serialize)]
pub struct PostbackResource {
    #[serde(flatten)]
    pub postback: Postback,
    pub health: Health,
}

fn split(stored: Option<StoredBreaker>) -> (Breaker, Option<u64>) {
    match stored {
        Some(s) => (s.breaker, Some(s.version)),
        None => (Breaker::default(), None),
    }
}

fn lost_race(postback_id: &str) -> StoreError {
    StoreError::Conflict(format!("the breaker of postback {postback_id} kept changing while deciding; try again"))
}

fn alert_key(postback_id: &str, opened_at: Option<DateTime<Utc>>) -> String {
    let opened = opened_at.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)).unwrap_or_default();
    format!("{postback_id}@{opened}")
}

/// Raise an alert; a failure to queue it is logged, never the firing's failure.
async fn raise(app: &App, alert: AlertContext, key: &str) {
    if let Err(error) = alerts::raise(app, &alert, key).await {
        tracing::error!(kind = alert.kind.as_str(), postback_id = %alert.postback_id, %error, "could not raise alert");
    }
}

/// Firings held since before firings carried their destination get it from the
/// postback as it is now (the fair-queue key: the SQS message group). Best effort: with
/// the index unavailable they go as they are (grouped by postback on SQS).
async fn with_destinations(app: &App, postback_id: &str, mut firings: Vec<Firing>) -> Vec<Firing> {
    if firings.iter().all(|f| f.destination.is_some()) {
        return firings;
    }
    let Some(postback) = app.catalog.index().await.ok().and_then(|index| index.get(postback_id)) else {
        return firings;
    };
    for firing in firings.iter_mut().filter(|f| f.destination.is_none()) {
        firing.destination = postback.destination(&firing.macro_context(&postback.postback));
    }
    firings
}

/// Put a postback's held firings back on the queue, oldest first, due now, in chunks
/// (`requeue_held`): each is then dispatched as usual (status re-checked, rate limit,
/// breaker). Returns how many this call released.
pub(super) async fn release_held(app: &App, postback_id: &str) -> StoreResult<u64> {
    let mut released = 0u64;
    loop {
        let batch = app.ports.control.held(postback_id, RELEASE_CHUNK).await?;
        if batch.is_empty() {
            break;
        }
        let now = app.ports.clock.now();
        let requeued = requeue_held(app, postback_id, &batch, now, now).await?;
        // None: another release has them (or this one could not unhold them: its own
        // claims stand), so looping would find the same ones again.
        if requeued.is_empty() {
            break;
        }
        released += requeued.len() as u64;
        if batch.len() < RELEASE_CHUNK {
            break;
        }
    }
    if released > 0 {
        tracing::info!(postback_id, released, "breaker closed: held firings released");
    }
    Ok(released)
}

/// Claim held firings (`ControlStore::claim`), so a release running at the same time
/// passes over them instead of queueing them too; queue the claimed ones again, due at
/// `at`; then unhold them. Returns those requeued (none: another release has them). A
/// crash after the queueing queues some twice (the queue and the delivered marker drop
/// the copy) and loses none; one before leaves them held, claimable again after
/// `RELEASE_CLAIM`. Each queued copy counts one release more: `unhold` forgets only a
/// hold of the generation it read, so a copy that comes due and is held anew before
/// the unhold keeps its new hold.
async fn requeue_held(
    app: &App,
    postback_id: &str,
    held: &[Firing],
    now: DateTime<Utc>,
    at: DateTime<Utc>,
) -> StoreResult<Vec<Firing>> {
    let claimed = app.ports.control.claim(held, now, now + RELEASE_CLAIM).await?;
    if claimed.is_empty() {
        return Ok(claimed);
    }
    let due: Vec<Firing> = claimed
        .iter()
        .map(|f| Firing { due_at: at, slot_second: None, releases: f.releases.saturating_add(1), ..f.clone() })
        .collect();
    let due = with_destinations(app, postback_id, due).await;
    app.ports.queue.enqueue(&due).await?;
    app.ports.control.unhold(&claimed).await?;
    Ok(claimed)
}

impl Dispatcher {
    /// The breaker gate, then the rate limit (a held firing takes no slot; a probe
    /// deferred by the rate limit claims nothing).
    pub(super) async fn admit(&self, leased: &Leased, postback: &CompiledPostback) -> StoreResult<Admission> {
        let app = self.app();
        let control = &app.ports.control;
        let firing = &leased.firing;
        let id = firing.delivery_id.as_str();
        let pid = firing.postback_id.as_str();
        let mut slot_checked = false;
        for _ in 0..CAS_ATTEMPTS {
            let (breaker, version) = split(control.breaker(pid).await?);
            let now = app.ports.clock.now();
            match breaker.gate(id, now) {
                Gate::Send => {
                    if let Some(done) = self.rate_limit(leased, postback).await? {
                        return Ok(Admission::Done(done));
                    }
                    return Ok(Admission::Go { probe: false, healthy: breaker.consecutive_failures == 0 });
                }
                Gate::Probe => {
                    if !slot_checked {
                        if let Some(done) = self.rate_limit(leased, postback).await? {
                            return Ok(Admission::Done(done));
                        }
                        slot_checked = true;
                    }
                    let claimed = breaker.claim_probe(id, app.ports.clock.now(), &app.policy.breaker);
                    if control.put_breaker(pid, &claimed, version).await? {
                        tracing::info!(postback_id = pid, delivery_id = id, "breaker half-open: sending the probe");
                        return Ok(Admission::Go { probe: true, healthy: false });
                    }
                }
                Gate::Hold => return self.hold(leased).await.map(Admission::Done),
                Gate::Carry(at) => {
                    if control.put_breaker(pid, &breaker.with_carrier(id), version).await? {
                        return self.requeue(leased, carrier_due(at, now), None).await.map(Admission::Done);
                    }
                }
                Gate::Wait(at) => return self.requeue(leased, carrier_due(at, now), None).await.map(Admission::Done),
            }
        }
        Err(lost_race(pid))
    }

    /// The same attempt back on the queue, due at `at`.
    async fn requeue(&self, leased: &Leased, at: DateTime<Utc>, slot: Option<i64>) -> StoreResult<AttemptOutcome> {
        let next = Firing { due_at: at, slot_second: slot, ..leased.firing.clone() };
        self.app().ports.queue.retry(leased, &next).await?;
        Ok(AttemptOutcome::Deferred(at))
    }

    /// A rate-limited postback's slot: the firing's own reserved second when it is now,
    /// else a new one; a slot in a later second puts it back on the queue until then.
    async fn rate_limit(&self, leased: &Leased, postback: &CompiledPostback) -> StoreResult<Option<AttemptOutcome>> {
        let Some(limit) = postback.postback.rate_limit_per_second else { return Ok(None) };
        let app = self.app();
        let firing = &leased.firing;
        let second = app.ports.clock.now().timestamp();
        let slot = match firing.slot_second {
            // Reserved earlier: now is its second (or it came early: wait for it).
            Some(reserved) if reserved >= second => reserved,
            // None, or late (a slow queue): a new slot.
            _ => app.ports.control.take_slot(&firing.postback_id, second, limit).await?,
        };
        if slot <= second {
            return Ok(None);
        }
        let at = DateTime::from_timestamp(slot, 0).unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.requeue(leased, at, Some(slot)).await.map(Some)
    }

    /// Hold a firing (durably, then off the queue); if the breaker closed meanwhile,
    /// release, so a close that raced this hold does not strand it. Where the queue keeps
    /// one row per delivery id the two are one transaction (`CombinedWrites::hold_and_ack`
    /// says why); on SQS a release's enqueue is a message of its own, so hold-then-ack
    /// loses nothing.
    async fn hold(&self, leased: &Leased) -> StoreResult<AttemptOutcome> {
        let app = self.app();
        let firing = Firing { slot_second: None, ..leased.firing.clone() };
        match &app.ports.combined {
            Some(combined) => combined.hold_and_ack(leased, &firing).await?,
            None => {
                app.ports.control.hold(std::slice::from_ref(&firing)).await?;
                app.ports.queue.ack(leased).await?;
            }
        }
        let (breaker, _) = split(app.ports.control.breaker(&firing.postback_id).await?);
        if breaker.state == BreakerState::Closed {
            release_held(app, &firing.postback_id).await?;
        }
        tracing::debug!(delivery_id = %firing.delivery_id, postback_id = %firing.postback_id, "held by the open breaker");
        Ok(AttemptOutcome::Held)
    }

    /// Tell the breaker what a regular attempt got. `retryable_failure` is `None` when
    /// nothing was sent: then a probe hands its turn on. `healthy` (closed, no failures
    /// at the gate): a success needs no read or write, so a healthy postback costs one
    /// breaker read per firing; such a success does not reset failures another
    /// dispatcher counted meanwhile (at worst the breaker opens one success early).
    pub(super) async fn after_attempt(
        &self,
        postback: &CompiledPostback,
        firing: &Firing,
        (probe, healthy): (bool, bool),
        retryable_failure: Option<bool>,
        entry: &LogEntry,
    ) -> StoreResult<()> {
        let app = self.app();
        let control = &app.ports.control;
        let pid = firing.postback_id.as_str();
        let Some(retryable) = retryable_failure else {
            if probe {
                self.abandon_probe(firing).await?;
            }
            return Ok(());
        };
        if healthy && !retryable {
            return Ok(());
        }
        for _ in 0..CAS_ATTEMPTS {
            let (breaker, version) = split(control.breaker(pid).await?);
            let now = app.ports.clock.now();
            let Some(change) =
                breaker.after_result(&firing.delivery_id, retryable, entry.fired_at, now, &app.policy.breaker)
            else {
                return Ok(());
            };
            if !control.put_breaker(pid, &change.breaker, version).await? {
                continue;
            }
            match change.transition {
                Some(Transition::Opened) => {
                    tracing::warn!(postback_id = pid, failures = change.breaker.consecutive_failures,
                        next_probe_at = ?change.breaker.next_probe_at, "breaker opened: holding firings");
                    let message = format!(
                        "Breaker opened for postback \"{}\" after {} consecutive failed attempts (last: {}); its firings are held until a probe succeeds (first probe at {})",
                        postback.postback.name,
                        change.breaker.consecutive_failures,
                        what_happened(entry),
                        change.breaker.next_probe_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    );
                    let alert = breaker_alert(AlertKind::BreakerOpened, &postback.postback, message, &entry.url);
                    raise(app, alert, &alert_key(pid, change.breaker.opened_at)).await;
                }
                Some(Transition::Reopened) => {
                    tracing::warn!(postback_id = pid, next_probe_at = ?change.breaker.next_probe_at,
                        cooldown_ms = change.breaker.cooldown_ms, "probe failed: breaker open again");
                    self.promote_carrier(pid).await?;
                }
                Some(Transition::Closed) => {
                    let released = release_held(app, pid).await?;
                    let message = format!(
                        "Breaker closed for postback \"{}\": a probe succeeded after an outage since {}; {released} held firings released",
                        postback.postback.name,
                        breaker.opened_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
                    );
                    let alert = breaker_alert(AlertKind::BreakerClosed, &postback.postback, message, &entry.url);
                    raise(app, alert, &alert_key(pid, breaker.opened_at)).await;
                }
                None => {}
            }
            return Ok(());
        }
        tracing::warn!(postback_id = pid, delivery_id = %firing.delivery_id,
            "the breaker kept changing; this attempt's result is not counted");
        Ok(())
    }

    /// The probe sent nothing (skipped, or not renderable): its turn goes to the next
    /// firing, the oldest held one if any.
    async fn abandon_probe(&self, firing: &Firing) -> StoreResult<()> {
        let app = self.app();
        let pid = firing.postback_id.as_str();
        for _ in 0..CAS_ATTEMPTS {
            let (breaker, version) = split(app.ports.control.breaker(pid).await?);
            let Some(open) = breaker.probe_abandoned(&firing.delivery_id, app.ports.clock.now()) else {
                return Ok(());
            };
            if app.ports.control.put_breaker(pid, &open, version).await? {
                return self.promote_carrier(pid).await;
            }
        }
        Err(lost_race(pid))
    }

    /// An open breaker with no probe carrier: put its oldest held firing back on the
    /// queue to wait for the end of the cool-down (queued before unheld, so a crash loses
    /// nothing), then record it as the carrier. With none held, the next firing to come
    /// due becomes the carrier (`Gate::Carry`).
    async fn promote_carrier(&self, pid: &str) -> StoreResult<()> {
        let app = self.app();
        let control = &app.ports.control;
        let (breaker, _) = split(control.breaker(pid).await?);
        let (BreakerState::Open, None, Some(at)) = (breaker.state, &breaker.probe_carrier, breaker.next_probe_at)
        else {
            return Ok(());
        };
        let Some(oldest) = control.held(pid, 1).await?.pop() else { return Ok(()) };
        let now = app.ports.clock.now();
        if requeue_held(app, pid, std::slice::from_ref(&oldest), now, carrier_due(at, now)).await?.is_empty() {
            // A release (the breaker closed meanwhile) or another promotion has it.
            return Ok(());
        }
        for _ in 0..CAS_ATTEMPTS {
            let (breaker, version) = split(control.breaker(pid).await?);
            if breaker.state != BreakerState::Open || breaker.probe_carrier.is_some() {
                // Another dispatcher lined one up, or it closed: this one is an ordinary
                // queued firing now.
                return Ok(());
            }
            if control.put_breaker(pid, &breaker.with_carrier(&oldest.delivery_id), version).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// `firing_failed`: a regular firing used its last attempt or failed permanently.
    pub(super) async fn firing_failed(&self, postback: &CompiledPostback, entry: &LogEntry) {
        let p = &postback.postback;
        let alert = AlertContext {
            kind: AlertKind::FiringFailed,
            message: format!(
                "Postback \"{}\" failed for transaction {} on attempt {}: {}",
                p.name,
                entry.transaction_id,
                entry.attempt,
                what_happened(entry)
            ),
            postback_id: p.id.clone(),
            postback_name: p.name.clone(),
            url: redact_url(&entry.url),
            transaction_id: Some(entry.transaction_id.clone()),
            status_code: entry.status_code,
            error: entry.error.clone(),
        };
        raise(self.app(), alert, &entry.delivery_id).await;
    }
}

/// The status and error of an entry as one short phrase.
fn what_happened(entry: &LogEntry) -> String {
    match (entry.status_code, entry.error.as_deref()) {
        (Some(status), Some(error)) => format!("HTTP {status}, {error}"),
        (Some(status), None) => format!("HTTP {status}"),
        (None, Some(error)) => error.to_string(),
        (None, None) => "no answer".to_string(),
    }
}

fn breaker_alert(kind: AlertKind, postback: &Postback, message: String, url: &str) -> AlertContext {
    AlertContext {
        kind,
        message,
        postback_id: postback.id.clone(),
        postback_name: postback.name.clone(),
        url: redact_url(url),
        transaction_id: None,
        status_code: None,
        error: None,
    }
}

impl App {
    /// A postback's `health`.
    pub async fn health(&self, postback_id: &str) -> StoreResult<Health> {
        let (breaker, version) = split(self.ports.control.breaker(postback_id).await?);
        // A postback whose breaker was never written has never held anything.
        let held = if version.is_some() { self.ports.control.held_count(postback_id).await? } else { 0 };
        Ok(Health::of(&breaker, held, self.ports.clock.now()))
    }

    /// The postback with its health, as the API returns it.
    pub async fn resource(&self, postback: Postback) -> ServiceResult<PostbackResource> {
        let health = self.health(&postback.id).await?;
        Ok(PostbackResource { postback, health })
    }

    /// Many postbacks with their health (one read of all breakers, a held count only
    /// for postbacks with a breaker written).
    pub async fn resources(&self, postbacks: Vec<Postback>) -> ServiceResult<Vec<PostbackResource>> {
        let ids: Vec<String> = postbacks.iter().map(|p| p.id.clone()).collect();
        let mut breakers: HashMap<String, StoredBreaker> = self.ports.control.breakers(&ids).await?;
        let now = self.ports.clock.now();
        let mut out = Vec::with_capacity(postbacks.len());
        for postback in postbacks {
            let health = match breakers.remove(&postback.id) {
                Some(stored) => Health::of(&stored.breaker, self.ports.control.held_count(&postback.id).await?, now),
                None => Health::of(&Breaker::default(), 0, now),
            };
            out.push(PostbackResource { postback, health });
        }
        Ok(out)
    }

    /// `POST /postbacks/{id}/resume`: close the breaker now and release its held
    /// firings. Idempotent: on a closed breaker it only releases what may still be held.
    pub async fn resume_postback(&self, id: &str) -> ServiceResult<PostbackResource> {
        self.resume_postback_by(&crate::domain::access::Caller::bootstrap_admin(), id).await
    }

    /// As `resume_postback`; recorded (`postback.resume`) before the answer.
    pub async fn resume_postback_by(
        &self,
        caller: &crate::domain::access::Caller,
        id: &str,
    ) -> ServiceResult<PostbackResource> {
        let postback = self.get_postback(id).await?;
        let mut closed_from: Option<Breaker> = None;
        let mut decided = false;
        for _ in 0..CAS_ATTEMPTS {
            let (breaker, version) = split(self.ports.control.breaker(id).await?);
            if breaker.state == BreakerState::Closed {
                decided = true;
                break;
            }
            if self.ports.control.put_breaker(id, &Breaker::closed(self.ports.clock.now()), version).await? {
                closed_from = Some(breaker);
                decided = true;
                break;
            }
        }
        if !decided {
            return Err(ServiceError::Conflict(format!("the breaker of postback {id} kept changing; try again")));
        }
        let released = release_held(self, id).await?;
        if let Some(was) = closed_from {
            tracing::info!(postback_id = id, released, "breaker closed by resume");
            let message = format!(
                "Breaker closed for postback \"{}\": resumed by an admin after an outage since {}; {released} held firings released",
                postback.name,
                was.opened_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            );
            let alert = breaker_alert(
                AlertKind::BreakerClosed,
                &postback,
                message,
                &postback.redact_template_secrets(&postback.url),
            );
            raise(self, alert, &alert_key(id, was.opened_at)).await;
        }
        let summary = format!("resumed postback \"{}\": {released} held firings released", postback.name);
        let record = self.audit_record(
            caller,
            crate::domain::access::AuditAction::PostbackResume,
            crate::domain::access::TargetKind::Postback,
            Some(id),
            summary,
        );
        self.append_audit(record).await?;
        self.resource(shown_postback(postback)).await
    }

    /// How many breakers are not closed (`postback_breakers_open`).
    pub async fn open_breakers(&self) -> StoreResult<u64> {
        let index = self.catalog.index().await?;
        let ids: Vec<String> = index.ids().map(str::to_string).collect();
        let breakers = self.ports.control.breakers(&ids).await?;
        Ok(breakers.values().filter(|s| s.breaker.state != BreakerState::Closed).count() as u64)
    }

    /// After a postback was deleted: its held firings go back on the queue, where each
    /// is logged `skipped` ("postback deleted") instead of vanishing; then its breaker,
    /// held firings and slots are forgotten.
    pub(super) async fn forget_control(&self, id: &str) -> StoreResult<()> {
        release_held(self, id).await?;
        self.ports.control.forget(id).await
    }
}

fn shown_postback(postback: Postback) -> Postback {
    super::config_api::shown(postback)
}
