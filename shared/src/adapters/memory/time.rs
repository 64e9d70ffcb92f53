//! A clock that moves only when told to, and jitter that is not random.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::adapters::system::SystemClock;
use crate::ports::{Clock, Jitter};

/// A clock for tests: it stands still until `advance` or `set` moves it, in whole
/// milliseconds (what every adapter stores exactly). `sleep_until(at)` resolves as soon
/// as the clock is moved to `at` or later.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock showing `start` (truncated to whole milliseconds).
    pub fn new(start: DateTime<Utc>) -> Self {
        Self { now: watch::Sender::new(whole_millis(start)) }
    }

    /// A clock showing the system clock's time now (truncated to whole milliseconds),
    /// standing still.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    /// Move the clock forward by `d` (whole milliseconds; a sub-millisecond rest is
    /// dropped) and wake every sleeper whose time has come.
    pub fn advance(&self, d: Duration) {
        let step = chrono::Duration::milliseconds(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.now.send_modify(|now| *now = now.checked_add_signed(step).unwrap_or(DateTime::<Utc>::MAX_UTC));
    }

    /// Set the clock to `at` (truncated to whole milliseconds), forward or back.
    pub fn set(&self, at: DateTime<Utc>) {
        self.now.send_replace(whole_millis(at));
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::starting_now()
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        let mut moved = self.now.subscribe();
        while *moved.borrow_and_update() < at {
            if moved.changed().await.is_err() {
                // The clock is gone, so it can never get there.
                std::future::pending::<()>().await;
            }
        }
    }
}

fn whole_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// The same jitter every time (clamped to [0, 1)).
#[derive(Debug, Clone, Copy)]
pub struct FixedJitter(pub f64);

impl Jitter for FixedJitter {
    fn next(&self) -> f64 {
        clamp_unit(self.0)
    }
}

/// Jitter values in turn; when they run out, the last one (or 0 if there was none)
/// repeats.
#[derive(Debug, Default)]
pub struct ScriptedJitter {
    values: Mutex<(VecDeque<f64>, f64)>,
}

impl ScriptedJitter {
    pub fn new(values: impl IntoIterator<Item = f64>) -> Self {
        Self { values: Mutex::new((values.into_iter().collect(), 0.0)) }
    }
}

impl Jitter for ScriptedJitter {
    fn next(&self) -> f64 {
        let mut values = self.values.lock().unwrap_or_else(PoisonError::into_inner);
        let (queue, last) = &mut *values;
        if let Some(v) = queue.pop_front() {
            *last = v;
        }
        clamp_unit(*last)
    }
}

fn clamp_unit(v: f64) -> f64 {
    if v.is_finite() {
        v.clamp(0.0, 1.0 - f64::EPSILON)
    } else {
        0.0
    }
}
