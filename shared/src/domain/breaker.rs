//! A postback's circuit breaker, as data (see *Delivery control → Circuit breaker*). The
//! transitions are pure functions of the stored state, the outcome and the time; the
//! service reads and writes the state through `ports::ControlStore` with conditional
//! writes, so every dispatcher (local tasks, concurrent Lambda invocations) shares it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

super::named_enum! {
    #[derive(Default)]
    #[strum(serialize_all = "snake_case")]
    pub enum BreakerState {
        #[default]
        Closed,
        Open,
        HalfOpen,
    }
}

/// The stored state of one postback's breaker. A postback with none stored is closed
/// with no failures (`Breaker::default()`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Breaker {
    pub state: BreakerState,
    /// Retryable failures in a row (reset by any other result).
    pub consecutive_failures: u32,
    /// When the current outage began (the first open); kept through re-opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
    /// When an open breaker lets its next probe through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_probe_at: Option<DateTime<Utc>>,
    /// The current cool-down (doubles on each re-open, capped); 0 when closed.
    #[serde(default)]
    pub cooldown_ms: u64,
    /// Half-open: the firing sent as the probe, and until when it may be in flight
    /// before another dispatcher may probe instead (its sender crashed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_delivery_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_until: Option<DateTime<Utc>>,
    /// Open: the firing put back on the queue to be the next probe when the cool-down
    /// ends (the others are held, out of the queue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_carrier: Option<String>,
    /// When it last closed (probe success or resume): answers to requests sent before
    /// then are about the outage that just ended and do not count against the closed
    /// breaker (a late 503 must not re-open it the moment an admin resumed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<DateTime<Utc>>,
}

/// Most a cool-down grows to (the spec's 10 minutes).
pub const MAX_COOLDOWN_MS: u64 = 10 * 60 * 1000;

/// `BREAKER_FAILURE_THRESHOLD`'s default.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 10;
/// `BREAKER_COOLDOWN_MS`'s default.
pub const DEFAULT_COOLDOWN_MS: u64 = 30_000;
/// What a probe's lease adds to the delivery timeout: the store writes around the send.
pub const PROBE_LEASE_MARGIN_MS: u64 = 30_000;

/// The settings every breaker runs by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive retryable failures that open a closed breaker.
    pub failure_threshold: u32,
    /// The first cool-down; doubles on each re-open up to `MAX_COOLDOWN_MS`.
    pub cooldown_ms: u64,
    /// How long a probe may be in flight before another dispatcher may probe instead
    /// (its sender crashed): the delivery timeout plus a margin.
    pub probe_lease_ms: u64,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self::new(DEFAULT_FAILURE_THRESHOLD, DEFAULT_COOLDOWN_MS, std::time::Duration::from_secs(10))
    }
}

impl BreakerPolicy {
    pub fn new(failure_threshold: u32, cooldown_ms: u64, delivery_timeout: std::time::Duration) -> Self {
        let timeout_ms = u64::try_from(delivery_timeout.as_millis()).unwrap_or(u64::MAX);
        Self {
            failure_threshold: failure_threshold.max(1),
            cooldown_ms: cooldown_ms.clamp(1, MAX_COOLDOWN_MS),
            probe_lease_ms: timeout_ms.saturating_add(PROBE_LEASE_MARGIN_MS),
        }
    }
}

/// What to do with a due firing, by its postback's breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Closed: send as usual.
    Send,
    /// Send it as the half-open probe, after claiming the probe (`claim_probe`).
    Probe,
    /// Hold it until the breaker closes.
    Hold,
    /// Open and cooling down with no firing lined up for the probe yet: this one becomes
    /// the probe carrier (`with_carrier`) and goes back on the queue to wait for the end
    /// of the cool-down (the time given), so a probe happens even when no new firing
    /// arrives.
    Carry(DateTime<Utc>),
    /// This firing is the carrier and the cool-down (ending at the time given) is not
    /// over: back on the queue.
    Wait(DateTime<Utc>),
}

/// A change of state that the service reports (alerts, release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Closed → open: a new outage (`breaker_opened`).
    Opened,
    /// Half-open → open after a failed probe: the same outage, no alert.
    Reopened,
    /// → closed: release the held firings (`breaker_closed`).
    Closed,
}

/// The breaker to write after a result, and what the write means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub breaker: Breaker,
    pub transition: Option<Transition>,
}

fn plus_ms(at: DateTime<Utc>, ms: u64) -> DateTime<Utc> {
    let ms = i64::try_from(ms).unwrap_or(i64::MAX);
    at.checked_add_signed(chrono::Duration::milliseconds(ms)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Breaker {
    /// The state as `health` shows it: an open breaker whose cool-down is over is
    /// half-open (its next due firing is sent as the probe).
    pub fn state_at(&self, now: DateTime<Utc>) -> BreakerState {
        match (self.state, self.next_probe_at) {
            (BreakerState::Open, Some(at)) if now >= at => BreakerState::HalfOpen,
            (state, _) => state,
        }
    }

    /// What to do with the due firing `delivery_id` at `now`.
    pub fn gate(&self, delivery_id: &str, now: DateTime<Utc>) -> Gate {
        match self.state {
            BreakerState::Closed => Gate::Send,
            BreakerState::Open => match self.next_probe_at {
                Some(at) if now < at => match self.probe_carrier.as_deref() {
                    Some(carrier) if carrier == delivery_id => Gate::Wait(at),
                    Some(_) => Gate::Hold,
                    None => Gate::Carry(at),
                },
                _ => Gate::Probe,
            },
            // One probe at a time; one whose lease ran out is taken over (its sender died).
            BreakerState::HalfOpen => match self.probe_until {
                Some(until) if now < until => Gate::Hold,
                _ => Gate::Probe,
            },
        }
    }

    /// The breaker with `delivery_id` as the firing that carries the next probe.
    pub fn with_carrier(&self, delivery_id: &str) -> Breaker {
        Breaker { probe_carrier: Some(delivery_id.to_string()), ..self.clone() }
    }

    /// Half-open with `delivery_id` as the one probe in flight until the lease ends.
    pub fn claim_probe(&self, delivery_id: &str, now: DateTime<Utc>, policy: &BreakerPolicy) -> Breaker {
        Breaker {
            state: BreakerState::HalfOpen,
            probe_delivery_id: Some(delivery_id.to_string()),
            probe_until: Some(plus_ms(now, policy.probe_lease_ms)),
            probe_carrier: None,
            ..self.clone()
        }
    }

    /// The probe `delivery_id` sent nothing (its conversion was skipped, its request
    /// could not be rendered): open again with the probe due now, so the next firing
    /// (or a promoted held one) probes. `None` if it is not the probe in flight.
    pub fn probe_abandoned(&self, delivery_id: &str, now: DateTime<Utc>) -> Option<Breaker> {
        if self.state != BreakerState::HalfOpen || self.probe_delivery_id.as_deref() != Some(delivery_id) {
            return None;
        }
        Some(Breaker {
            state: BreakerState::Open,
            next_probe_at: Some(now),
            probe_delivery_id: None,
            probe_until: None,
            probe_carrier: None,
            ..self.clone()
        })
    }

    /// Open after `failures` in a row, in an outage that began at `opened_at`: the next
    /// probe `cooldown_ms` after `now`, none in flight, no carrier yet.
    fn opened(failures: u32, opened_at: DateTime<Utc>, now: DateTime<Utc>, cooldown_ms: u64) -> Breaker {
        Breaker {
            state: BreakerState::Open,
            consecutive_failures: failures,
            opened_at: Some(opened_at),
            next_probe_at: Some(plus_ms(now, cooldown_ms)),
            cooldown_ms,
            ..Breaker::default()
        }
    }

    /// A breaker closed at `now` (by a successful probe or by resume).
    pub fn closed(now: DateTime<Utc>) -> Breaker {
        Breaker { closed_at: Some(now), ..Breaker::default() }
    }

    /// The breaker after an attempt of `delivery_id` sent at `sent_at` got an answer (or
    /// a transport failure) at `now`; `None` when nothing changes (nothing to write).
    /// `retryable_failure`: 5xx, 408, 429, timeout, connection error (what the retry
    /// policy retries); anything else (2xx, other 4xx, a broken success rule that is not
    /// retried) is a sign of life.
    pub fn after_result(
        &self,
        delivery_id: &str,
        retryable_failure: bool,
        sent_at: DateTime<Utc>,
        now: DateTime<Utc>,
        policy: &BreakerPolicy,
    ) -> Option<Change> {
        if self.state == BreakerState::Closed && self.closed_at.is_some_and(|closed| sent_at < closed) {
            return None;
        }
        let is_probe = self.state == BreakerState::HalfOpen && self.probe_delivery_id.as_deref() == Some(delivery_id);
        let failures = self.consecutive_failures.saturating_add(1);
        match (self.state, retryable_failure) {
            (BreakerState::Closed, true) if failures >= policy.failure_threshold => {
                let cooldown = policy.cooldown_ms.min(MAX_COOLDOWN_MS);
                let breaker = Breaker::opened(failures, now, now, cooldown);
                Some(Change { breaker, transition: Some(Transition::Opened) })
            }
            (_, true) if is_probe => {
                let cooldown = self.cooldown_ms.max(policy.cooldown_ms).saturating_mul(2).min(MAX_COOLDOWN_MS);
                let breaker = Breaker::opened(failures, self.opened_at.unwrap_or(now), now, cooldown);
                Some(Change { breaker, transition: Some(Transition::Reopened) })
            }
            // A failure below the threshold, or a late answer to a request sent before the
            // breaker opened: counted, nothing else.
            (_, true) => {
                Some(Change { breaker: Breaker { consecutive_failures: failures, ..self.clone() }, transition: None })
            }
            (_, false) if is_probe => {
                Some(Change { breaker: Breaker::closed(now), transition: Some(Transition::Closed) })
            }
            (BreakerState::Closed, false) if self.consecutive_failures > 0 => {
                Some(Change { breaker: Breaker { consecutive_failures: 0, ..self.clone() }, transition: None })
            }
            // Healthy and closed (no write per delivery), or open and not the probe: only
            // the probe decides when an open breaker closes.
            (_, false) => None,
        }
    }
}

/// Whether a send's result is a failure the retry policy retries (5xx, 408, 429,
/// timeout, connection error, a broken success rule with `retry`): the failures that
/// count towards opening the breaker. Decided by the retry policy itself, so the two
/// never disagree.
pub fn is_retryable_failure(
    result: &Result<super::delivery::OutboundResponse, super::delivery::SendFailure>,
    rule: Option<&super::delivery::SuccessRule>,
    now: DateTime<Utc>,
) -> bool {
    let unbounded = super::delivery::RetryPolicy { max_attempts: u32::MAX, base_delay: std::time::Duration::ZERO };
    matches!(unbounded.classify_with_rule(result, rule, 1, 0.0, now), super::delivery::Verdict::Retry(_))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    #![allow(clippy::type_complexity)] // case tables are tuples
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy { failure_threshold: 3, cooldown_ms: 1_000, probe_lease_ms: 5_000 };

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_900_000_000_000 + ms).unwrap()
    }

    fn closed(failures: u32) -> Breaker {
        Breaker { consecutive_failures: failures, ..Breaker::default() }
    }

    fn open(opened: i64, cooldown: u64, carrier: Option<&str>) -> Breaker {
        Breaker {
            state: BreakerState::Open,
            consecutive_failures: 3,
            opened_at: Some(t(opened)),
            next_probe_at: Some(t(opened + cooldown as i64)),
            cooldown_ms: cooldown,
            probe_carrier: carrier.map(str::to_string),
            ..Breaker::default()
        }
    }

    fn half_open(probe: &str, until: i64) -> Breaker {
        Breaker {
            state: BreakerState::HalfOpen,
            probe_delivery_id: Some(probe.into()),
            probe_until: Some(t(until)),
            ..open(0, 1_000, None)
        }
    }

    #[test]
    fn the_gate_by_state_and_time() {
        #[rustfmt::skip]
        let cases: Vec<(&str, Breaker, &str, i64, Gate)> = vec![
            ("closed sends", closed(0), "d1", 0, Gate::Send),
            ("closed with failures sends", closed(2), "d1", 0, Gate::Send),
            ("open, cooling down, no carrier: this one carries", open(0, 1_000, None), "d1", 999, Gate::Carry(t(1_000))),
            ("open, cooling down, another carries: hold", open(0, 1_000, Some("d9")), "d1", 500, Gate::Hold),
            ("open, the carrier early: wait", open(0, 1_000, Some("d1")), "d1", 500, Gate::Wait(t(1_000))),
            ("open, cool-down over: probe", open(0, 1_000, Some("d9")), "d1", 1_000, Gate::Probe),
            ("open, cool-down over, the carrier: probe", open(0, 1_000, Some("d1")), "d1", 1_500, Gate::Probe),
            ("half-open, probe in flight: hold", half_open("d9", 6_000), "d1", 5_999, Gate::Hold),
            ("half-open, even the probe's own copy holds", half_open("d1", 6_000), "d1", 3_000, Gate::Hold),
            ("half-open, probe lease over: take over", half_open("d9", 6_000), "d1", 6_000, Gate::Probe),
        ];
        for (name, breaker, id, now, want) in cases {
            assert_eq!(breaker.gate(id, t(now)), want, "{name}");
        }
    }

    #[test]
    fn results_move_the_breaker() {
        let probe_of = |b: Breaker| b.claim_probe("p", t(10_000), &POLICY);
        #[rustfmt::skip]
        let cases: Vec<(&str, Breaker, &str, bool, Option<(BreakerState, u32, Option<i64>, Option<i64>, u64)>, Option<Transition>)> = vec![
            // (state, failures, opened_at, next_probe_at, cooldown)
            ("closed: a failure counts", closed(0), "d", true, Some((BreakerState::Closed, 1, None, None, 0)), None),
            ("closed: the threshold opens", closed(2), "d", true, Some((BreakerState::Open, 3, Some(10_000), Some(11_000), 1_000)), Some(Transition::Opened)),
            ("closed: a success resets the streak", closed(2), "d", false, Some((BreakerState::Closed, 0, None, None, 0)), None),
            ("closed: healthy stays unwritten", closed(0), "d", false, None, None),
            ("open: a late failure counts only", open(0, 1_000, None), "d", true, Some((BreakerState::Open, 4, Some(0), Some(1_000), 1_000)), None),
            ("open: a late success changes nothing", open(0, 1_000, None), "d", false, None, None),
            ("probe fails: open again, cool-down doubled, same outage", probe_of(open(0, 1_000, None)), "p", true, Some((BreakerState::Open, 4, Some(0), Some(12_000), 2_000)), Some(Transition::Reopened)),
            ("probe fails at 8 min: capped at 10 min", probe_of(open(0, 480_000, None)), "p", true, Some((BreakerState::Open, 4, Some(0), Some(610_000), 600_000)), Some(Transition::Reopened)),
            ("probe fails at 10 min: stays 10 min", probe_of(open(0, 600_000, None)), "p", true, Some((BreakerState::Open, 4, Some(0), Some(610_000), 600_000)), Some(Transition::Reopened)),
            ("probe succeeds: closed, all reset", probe_of(open(0, 1_000, None)), "p", false, Some((BreakerState::Closed, 0, None, None, 0)), Some(Transition::Closed)),
            ("half-open: another firing's late failure counts only", probe_of(open(0, 1_000, None)), "x", true, Some((BreakerState::HalfOpen, 4, Some(0), Some(1_000), 1_000)), None),
            ("half-open: another firing's success does not close", probe_of(open(0, 1_000, None)), "x", false, None, None),
            // Sent at 9 s: before a close at 9.5 s (an outage's late answer), after one at 8 s.
            ("closed at 9.5 s: a failure sent before it does not count", Breaker { closed_at: Some(t(9_500)), ..closed(1) }, "d", true, None, None),
            ("closed at 9.5 s: nor does a success", Breaker { closed_at: Some(t(9_500)), ..closed(1) }, "d", false, None, None),
            ("closed at 8 s: a failure sent after it counts", Breaker { closed_at: Some(t(8_000)), ..closed(0) }, "d", true, Some((BreakerState::Closed, 1, None, None, 0)), None),
        ];
        for (name, breaker, id, retryable, want, transition) in cases {
            let change = breaker.after_result(id, retryable, t(9_000), t(10_000), &POLICY);
            let got = change.as_ref().map(|c| {
                let b = &c.breaker;
                (
                    b.state,
                    b.consecutive_failures,
                    b.opened_at.map(|x| x.timestamp_millis() - t(0).timestamp_millis()),
                    b.next_probe_at.map(|x| x.timestamp_millis() - t(0).timestamp_millis()),
                    b.cooldown_ms,
                )
            });
            assert_eq!(got, want, "{name}");
            assert_eq!(change.and_then(|c| c.transition), transition, "{name}");
        }
    }

    #[test]
    fn a_probe_is_claimed_for_its_lease_and_handed_on_when_it_sends_nothing() {
        let claimed = open(0, 1_000, Some("c")).claim_probe("c", t(1_000), &POLICY);
        assert_eq!(claimed.state, BreakerState::HalfOpen);
        assert_eq!(claimed.probe_delivery_id.as_deref(), Some("c"));
        assert_eq!(claimed.probe_until, Some(t(6_000)), "now + the lease");
        assert_eq!(claimed.probe_carrier, None, "the carrier's job is done");
        assert_eq!(claimed.probe_abandoned("other", t(2_000)), None, "only the probe itself hands on");
        let handed = claimed.probe_abandoned("c", t(2_000)).unwrap();
        assert_eq!((handed.state, handed.next_probe_at), (BreakerState::Open, Some(t(2_000))), "probe due at once");
        assert_eq!(handed.gate("next", t(2_000)), Gate::Probe);
        assert_eq!(handed.opened_at, Some(t(0)), "same outage");
    }

    #[test]
    fn health_shows_half_open_once_the_cool_down_is_over() {
        let b = open(0, 1_000, None);
        assert_eq!(b.state_at(t(999)), BreakerState::Open);
        assert_eq!(b.state_at(t(1_000)), BreakerState::HalfOpen);
        assert_eq!(closed(4).state_at(t(0)), BreakerState::Closed);
        assert_eq!(half_open("p", 5).state_at(t(0)), BreakerState::HalfOpen);
    }

    #[test]
    fn the_policy_clamps_and_derives_the_probe_lease() {
        let p = BreakerPolicy::new(0, 10 * MAX_COOLDOWN_MS, std::time::Duration::from_secs(2));
        assert_eq!((p.failure_threshold, p.cooldown_ms, p.probe_lease_ms), (1, MAX_COOLDOWN_MS, 32_000));
        let d = BreakerPolicy::default();
        assert_eq!((d.failure_threshold, d.cooldown_ms, d.probe_lease_ms), (10, 30_000, 40_000));
    }

    #[test]
    fn retryable_failures_are_what_the_retry_policy_retries() {
        use crate::domain::delivery::{OutboundResponse, SendFailure, SuccessRule};
        let answer = |status: u16, body: &str| -> Result<OutboundResponse, SendFailure> {
            Ok(OutboundResponse { status, retry_after: None, body: body.into(), duration: std::time::Duration::ZERO })
        };
        let retried = SuccessRule { body_contains: Some("ok".into()), body_not_contains: None, retry: true };
        let failed = SuccessRule { retry: false, ..retried.clone() };
        #[rustfmt::skip]
        let cases: Vec<(&str, Result<OutboundResponse, SendFailure>, Option<&SuccessRule>, bool)> = vec![
            ("500", answer(500, ""), None, true),
            ("503", answer(503, ""), None, true),
            ("408", answer(408, ""), None, true),
            ("429", answer(429, ""), None, true),
            ("timeout", Err(SendFailure::Timeout(10)), None, true),
            ("connection", Err(SendFailure::Connect("refused".into())), None, true),
            ("transport", Err(SendFailure::Other("tls".into())), None, true),
            ("broken rule with retry", answer(200, "no"), Some(&retried), true),
            ("200", answer(200, "ok"), None, false),
            ("404", answer(404, ""), None, false),
            ("400", answer(400, ""), None, false),
            ("302", answer(302, ""), None, false),
            ("broken rule without retry", answer(200, "no"), Some(&failed), false),
            ("refused destination", Err(SendFailure::Refused("private".into())), None, false),
        ];
        for (name, result, rule, want) in cases {
            assert_eq!(is_retryable_failure(&result, rule, t(0)), want, "{name}");
        }
    }
}
