//! In-memory fakes of every port, for tests (feature `testing`): the four stores with
//! the embedded adapters' semantics, timed by a clock port (a `ManualClock` in tests, so
//! leases, due times and retention move only when the test says), a scripted
//! `HttpSender`, a manual clock and fixed or scripted jitter. The port contract suite
//! runs on them too (`tests/it/contract_memory.rs`), so they cannot drift from the real
//! adapters.

mod access;
mod control;
mod logs;
mod postbacks;
mod queue;
mod sender;
mod time;
mod touches;

use std::sync::Arc;
use std::time::Duration;

pub use access::{AuditTrail, MemoryAccessStore};
pub use control::{next_slot, MemoryControlStore, Pause};
pub use logs::MemoryLogStore;
pub use postbacks::MemoryPostbackStore;
pub use queue::MemoryQueue;
pub use sender::{Answer, Reply, ScriptedSender, SentRequest};
pub use time::{FixedJitter, ManualClock, ScriptedJitter};
pub use touches::MemoryTouchStore;

use crate::ports::Clock;

/// What the embedded store's options decide, for the memory stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryOptions {
    /// How long a received firing stays hidden before it comes back (if not acked).
    pub lease: Duration,
    /// Touches, dedupe keys, log entries and delivered markers older than this are
    /// invisible.
    pub retention: chrono::Duration,
    /// Drop an enqueue of a delivery id already delivered, and of one queued even while
    /// leased (the embedded queue does); off, SQS's semantics (see `MemoryQueue::new`).
    pub enqueue_dedupe: bool,
    /// Give a delivered attempt's entry an id derived from its delivery id
    /// (`LogStore::delivered_entry_id`), as the DynamoDB store does.
    pub delivered_entry_ids: bool,
}

impl Default for MemoryOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(60),
            retention: chrono::Duration::days(30),
            enqueue_dedupe: true,
            delivered_entry_ids: false,
        }
    }
}

/// One family of memory stores sharing one manual clock.
#[derive(Debug, Clone)]
pub struct MemoryAdapters {
    pub clock: Arc<ManualClock>,
    pub postbacks: Arc<MemoryPostbackStore>,
    pub touches: Arc<MemoryTouchStore>,
    pub logs: Arc<MemoryLogStore>,
    pub queue: Arc<MemoryQueue>,
    pub control: Arc<MemoryControlStore>,
    /// Keys and the audit trail (shared with `postbacks`).
    pub access: Arc<MemoryAccessStore>,
}

impl MemoryAdapters {
    pub fn new(clock: Arc<ManualClock>, options: MemoryOptions) -> Self {
        let timer: Arc<dyn Clock> = clock.clone();
        let logs = Arc::new(
            MemoryLogStore::new(timer.clone(), options.retention).with_delivered_entry_ids(options.delivered_entry_ids),
        );
        let delivered = options.enqueue_dedupe.then(|| logs.clone());
        let access = Arc::new(MemoryAccessStore::new());
        Self {
            postbacks: Arc::new(MemoryPostbackStore::with_trail(access.trail())),
            access,
            touches: Arc::new(MemoryTouchStore::new(timer.clone(), options.retention)),
            queue: Arc::new(MemoryQueue::new(timer, options.lease, delivered)),
            control: Arc::new(MemoryControlStore::new()),
            logs,
            clock,
        }
    }
}
