//! The checks every storage adapter must pass. Each check gets fresh, empty adapters,
//! is small, and panics with a message saying what broke; `run_all` names the check.
//!
//! Time-dependent checks poll with short sleeps against bounded deadlines, never a long
//! fixed sleep, and allow `CLOCK_SLACK` for adapters whose clock is remote (SQS).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::{AdapterFactory, Adapters};

mod logs;
mod postbacks;
mod queue;
mod touches;

pub use logs::*;
pub use postbacks::*;
pub use queue::*;
pub use touches::*;

/// The queue lease (visibility timeout) the factory's adapters must use.
pub const LEASE: Duration = Duration::from_secs(2);

/// How early (by the test's clock) a remote queue may hand out a firing.
pub const CLOCK_SLACK: Duration = Duration::from_millis(200);

/// Pause between two polls of the queue.
pub(crate) const POLL: Duration = Duration::from_millis(50);

pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
pub type Check = for<'a> fn(&'a Adapters) -> CheckFuture<'a>;

macro_rules! checks {
    ($list:ident: $($check:ident),* $(,)?) => {
        pub const $list: &[(&str, Check)] = &[$((stringify!($check), |a| Box::pin($check(a)))),*];
    };
}

// Every adapter must pass these.
checks!(CHECKS:
    postbacks_crud,
    postbacks_create_conflict,
    postbacks_list_ordered_and_by_type,
    touches_click_latest_wins,
    touches_status_latest_wins,
    touches_status_keys_are_separate,
    touches_record_is_idempotent,
    touches_seen_and_mark_seen,
    touches_record_and_mark_seen,
    logs_append_and_get,
    logs_newest_first,
    logs_newest_first_by_fired_at,
    logs_every_filter,
    logs_pagination_without_gaps_or_duplicates,
    logs_record_delivered_once,
    queue_enqueue_receive_ack,
    queue_not_received_before_due,
    queue_lease_hides_then_returns,
    queue_retry_replaces_with_next_attempt,
    queue_duplicate_enqueue_fires_once,
    queue_delivered_firing_is_not_fired_again,
    queue_batch_of_250_received_exactly_once,
);

// Only for queues that deduplicate at enqueue time (the embedded queue). SQS cannot: it
// relies on the delivered marker instead, which `CHECKS` covers.
checks!(ENQUEUE_DEDUPE_CHECKS:
    queue_duplicate_enqueue_is_one_message,
    queue_enqueue_of_delivered_firing_is_dropped,
);

/// Run every check of `CHECKS`, each on fresh adapters, printing its name; panics with
/// the check's name on the first failure.
pub async fn run_all(factory: &dyn AdapterFactory) {
    run_checks(factory, CHECKS).await;
}

/// Run `ENQUEUE_DEDUPE_CHECKS` (embedded queue only).
pub async fn run_enqueue_dedupe_checks(factory: &dyn AdapterFactory) {
    run_checks(factory, ENQUEUE_DEDUPE_CHECKS).await;
}

pub async fn run_checks(factory: &dyn AdapterFactory, checks: &[(&str, Check)]) {
    let started = Instant::now();
    for (name, check) in checks {
        println!("contract: {name} ...");
        let adapters = factory.fresh().await;
        let check_started = Instant::now();
        if let Err(panic) = AssertUnwindSafe(check(&adapters)).catch_unwind().await {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            panic!("contract check `{name}` failed: {message}");
        }
        println!("contract: {name} ok ({} ms)", check_started.elapsed().as_millis());
    }
    println!("contract: {} checks passed in {} ms", checks.len(), started.elapsed().as_millis());
}
