//! An `App` wired to the in-memory fakes, for the tests of the services and of the entry
//! points: one place that knows how a test app is put together.

use std::sync::Arc;
use std::time::Duration;

use super::{FixedJitter, ManualClock, MemoryAdapters, MemoryOptions, ScriptedSender};
use crate::domain::delivery::RetryPolicy;
use crate::ports::Jitter;
use crate::service::{App, Policy, Ports};

/// A test app and the fakes behind it.
pub struct TestApp {
    pub app: Arc<App>,
    pub memory: MemoryAdapters,
    /// The clock of the adapters, the sender and the services.
    pub clock: Arc<ManualClock>,
    /// Every request the services send, answered as scripted.
    pub sender: Arc<ScriptedSender>,
}

/// The test apps' policy: 3 attempts, 10 s before the second; the postback index
/// reloaded every 60 s with no stamp checks (every write is the app's own); the default
/// breaker and partner policies.
pub fn policy() -> Policy {
    Policy {
        retry: RetryPolicy { max_attempts: 3, base_delay: Duration::from_secs(10) },
        catalog_ttl: Duration::from_secs(60),
        catalog_check: None,
        breaker: Default::default(),
        partners: Default::default(),
    }
}

/// An app under `policy` on fresh memory adapters (default options), timed by `clock`,
/// retry jitter fixed at 0.5.
pub fn app(clock: Arc<ManualClock>, policy: Policy) -> TestApp {
    app_with(clock, policy, Arc::new(FixedJitter(0.5)), MemoryOptions::default())
}

/// `app` with this jitter and these memory adapter options.
pub fn app_with(clock: Arc<ManualClock>, policy: Policy, jitter: Arc<dyn Jitter>, options: MemoryOptions) -> TestApp {
    let memory = MemoryAdapters::new(clock.clone(), options);
    let sender = Arc::new(ScriptedSender::with_clock(clock.clone()));
    let ports = Ports {
        postbacks: memory.postbacks.clone(),
        touches: memory.touches.clone(),
        logs: memory.logs.clone(),
        queue: memory.queue.clone(),
        control: memory.control.clone(),
        access: memory.access.clone(),
        sender: sender.clone(),
        clock: clock.clone(),
        jitter,
        combined: None,
    };
    TestApp { app: App::new(ports, policy), memory, clock, sender }
}
