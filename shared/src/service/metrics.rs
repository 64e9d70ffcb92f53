//! In-process counters of what ingest and dispatch did: served as Prometheus text by
//! `GET /metrics` (local server) and emitted as CloudWatch Embedded Metric Format lines
//! by the functions (`crate::entry::lambda`). Port-free: plain counters behind a mutex.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ports::QueueDepth;

/// Upper bounds (seconds) of the delivery duration histogram buckets.
pub const DURATION_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The counts since start (or since the last `take`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricsSnapshot {
    /// New (non-duplicate) events accepted, by event type.
    pub accepted: BTreeMap<&'static str, u64>,
    /// Duplicate events, by event type.
    pub duplicates: BTreeMap<&'static str, u64>,
    /// Firing attempts by outcome (`delivered`, `failed`, `retrying`, `skipped`,
    /// `already_delivered`). Test attempts are not counted.
    pub firings: BTreeMap<&'static str, u64>,
    /// Per bucket of `DURATION_BUCKETS`, how many sends took at most that long (not
    /// cumulative; the rendering makes it so); the last slot is `+Inf`.
    pub duration_buckets: [u64; DURATION_BUCKETS.len() + 1],
    pub duration_sum_seconds: f64,
    pub duration_count: u64,
}

/// One figure an adapter adds to `GET /metrics` (e.g. the embedded store's writer), so the
/// service renders it without knowing the adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub help: &'static str,
    /// `counter` or `gauge` (Prometheus `# TYPE`).
    pub kind: &'static str,
    pub value: f64,
}

/// Reads an adapter's figures at each scrape; supplied by the composition root.
pub type SampleSource = std::sync::Arc<dyn Fn() -> Vec<Sample> + Send + Sync>;

/// Appends `samples` to a Prometheus text exposition.
pub fn render_samples(out: &mut String, samples: &[Sample]) {
    for s in samples {
        let _ = writeln!(out, "# HELP {0} {1}\n# TYPE {0} {2}\n{0} {3}", s.name, s.help, s.kind, s.value);
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<MetricsSnapshot>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut MetricsSnapshot) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn event(&self, kind: &'static str, duplicate: bool) {
        self.with(|m| *(if duplicate { &mut m.duplicates } else { &mut m.accepted }).entry(kind).or_default() += 1);
    }

    pub fn firing(&self, outcome: &'static str) {
        self.with(|m| *m.firings.entry(outcome).or_default() += 1);
    }

    /// One send's duration (answered or not).
    pub fn delivery_duration(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let slot = DURATION_BUCKETS.iter().position(|bound| seconds <= *bound).unwrap_or(DURATION_BUCKETS.len());
        self.with(|m| {
            m.duration_buckets[slot] += 1;
            m.duration_sum_seconds += seconds;
            m.duration_count += 1;
        });
    }

    pub fn snapshot(&self) -> MetricsSnapshot {
        self.with(|m| m.clone())
    }

    /// The counts so far, resetting them (one EMF line per Lambda invocation).
    pub fn take(&self) -> MetricsSnapshot {
        self.with(std::mem::take)
    }
}

fn labelled(out: &mut String, name: &str, help: &str, label: &str, values: &BTreeMap<&'static str, u64>) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (value, count) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {count}");
    }
}

/// The Prometheus text exposition (format 0.0.4) of the counters and the queue gauges.
/// `postback_queue_oldest_due_age_seconds` is left out when the queue cannot tell (SQS).
pub fn prometheus(m: &MetricsSnapshot, depth: &QueueDepth, now: DateTime<Utc>) -> String {
    prometheus_with_breakers(m, depth, None, now)
}

/// As [`prometheus`], with `postback_breakers_open` (breakers not closed) when known.
pub fn prometheus_with_breakers(
    m: &MetricsSnapshot,
    depth: &QueueDepth,
    breakers_open: Option<u64>,
    now: DateTime<Utc>,
) -> String {
    let mut out = String::new();
    labelled(&mut out, "postback_events_accepted_total", "New events accepted.", "type", &m.accepted);
    labelled(&mut out, "postback_events_duplicate_total", "Duplicate events (nothing fired).", "type", &m.duplicates);
    labelled(
        &mut out,
        "postback_firings_total",
        "Firing attempts by outcome (test sends excluded).",
        "outcome",
        &m.firings,
    );
    let name = "postback_delivery_duration_seconds";
    let _ =
        writeln!(out, "# HELP {name} Time from sending a postback to its answer or failure.\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (bound, count) in DURATION_BUCKETS.iter().zip(m.duration_buckets) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
    }
    cumulative += m.duration_buckets[DURATION_BUCKETS.len()];
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {}\n{name}_count {}", m.duration_sum_seconds, m.duration_count);
    let _ = writeln!(
        out,
        "# HELP postback_queue_depth Firings queued (due, leased or waiting).\n# TYPE postback_queue_depth gauge\npostback_queue_depth {}",
        depth.queued
    );
    if depth.knows_due_times {
        let age = depth.earliest_due_at.map_or(0.0, |due| (now - due).num_milliseconds().max(0) as f64 / 1000.0);
        let _ = writeln!(
            out,
            "# HELP postback_queue_oldest_due_age_seconds How long the earliest due firing has been due (0 if none is due).\n# TYPE postback_queue_oldest_due_age_seconds gauge\npostback_queue_oldest_due_age_seconds {age}"
        );
    }
    if let Some(open) = breakers_open {
        let _ = writeln!(
            out,
            "# HELP postback_breakers_open Postbacks whose circuit breaker is open or half-open.\n# TYPE postback_breakers_open gauge\npostback_breakers_open {open}"
        );
    }
    out
}

impl super::App {
    /// `GET /metrics`: the counters, the queue gauges (one queue read) and the open
    /// breakers (one read of the breakers of every postback).
    pub async fn metrics_text(&self) -> super::ServiceResult<String> {
        let depth = self.ports.queue.depth().await?;
        let open = self.open_breakers().await?;
        let mut text = prometheus_with_breakers(&self.metrics.snapshot(), &depth, Some(open), self.ports.clock.now());
        if let Some(source) = &self.extra_samples {
            render_samples(&mut text, &source());
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_renders_cumulative_buckets() {
        let m = Metrics::default();
        m.event("click", false);
        m.event("click", false);
        m.event("conversion", true);
        m.firing("delivered");
        m.delivery_duration(Duration::from_millis(30));
        m.delivery_duration(Duration::from_secs(20));
        let now = DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let depth =
            QueueDepth { queued: 3, earliest_due_at: Some(now - chrono::Duration::seconds(2)), knows_due_times: true };
        let text = prometheus(&m.snapshot(), &depth, now);
        assert!(text.contains("postback_events_accepted_total{type=\"click\"} 2\n"), "{text}");
        assert!(text.contains("postback_events_duplicate_total{type=\"conversion\"} 1\n"));
        assert!(text.contains("postback_firings_total{outcome=\"delivered\"} 1\n"));
        assert!(text.contains("postback_delivery_duration_seconds_bucket{le=\"0.025\"} 0\n"));
        assert!(text.contains("postback_delivery_duration_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("postback_delivery_duration_seconds_bucket{le=\"10\"} 1\n"));
        assert!(text.contains("postback_delivery_duration_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("postback_delivery_duration_seconds_count 2\n"));
        assert!(text.contains("postback_queue_depth 3\n"));
        assert!(text.contains("postback_queue_oldest_due_age_seconds 2\n"));
        assert!(!text.contains("postback_breakers_open"), "only when known");
        let with = prometheus_with_breakers(&m.snapshot(), &depth, Some(2), now);
        assert!(with.contains("# TYPE postback_breakers_open gauge\npostback_breakers_open 2\n"), "{with}");
        let unknown = prometheus(&m.take(), &QueueDepth::default(), now);
        assert!(!unknown.contains("oldest_due_age"));
        assert_eq!(m.snapshot(), MetricsSnapshot::default(), "take resets");
    }

    #[test]
    fn renders_an_adapters_samples() {
        let mut out = String::new();
        render_samples(
            &mut out,
            &[
                Sample { name: "x_jobs_total", help: "Jobs.", kind: "counter", value: 3.0 },
                Sample { name: "x_wait_seconds_max", help: "Longest wait.", kind: "gauge", value: 0.25 },
            ],
        );
        assert_eq!(
            out,
            "# HELP x_jobs_total Jobs.\n# TYPE x_jobs_total counter\nx_jobs_total 3\n\
             # HELP x_wait_seconds_max Longest wait.\n# TYPE x_wait_seconds_max gauge\nx_wait_seconds_max 0.25\n"
        );
    }
}
