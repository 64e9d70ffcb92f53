//! The checks every storage adapter must pass. Each check gets fresh, empty adapters,
//! is small, and panics with a message saying what broke. `contract_tests!` expands to
//! one `#[tokio::test]` per check for an adapter family, so every failing check is
//! reported by name and the checks run in parallel:
//!
//! ```ignore
//! postback::contract_tests!(factory = EmbeddedFactory::new(), extra = [enqueue_dedupe, fair_receive]);
//! postback::contract_tests!(factory = AwsFactory, before = { require_emulators!(); });
//! ```
//!
//! Time-dependent checks poll with short pauses against bounded deadlines, never a long
//! fixed sleep, and allow `CLOCK_SLACK` for adapters whose clock is remote (SQS). Time
//! is the adapters' time (`Adapters::now`, `Adapters::pause`): for the memory and
//! embedded adapters a manual clock that each pause moves on, so their checks take no
//! real time; real time for the AWS adapters, whose leases and delays run on SQS.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::Adapters;

mod access;
mod alerts;
mod control;
mod logs;
mod postbacks;
mod queue;
mod touches;

pub use access::*;
pub use alerts::*;
pub use control::*;
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

/// The one list of checks. It calls back `$callback` (a macro at this crate's root)
/// with the lists:
/// - `common`: every adapter must pass these;
/// - `enqueue_dedupe`: only for queues that deduplicate at enqueue time (the embedded
///   and memory queues; SQS cannot: it relies on the delivered marker instead, which
///   `common` covers);
/// - `fair_receive`: only for queues that select by destination (`receive_fair`: the
///   embedded and memory queues; SQS keeps the trait's default).
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_check_lists {
    ($callback:ident { $($args:tt)* }) => {
        $crate::$callback! {
            { $($args)* }
            common: [
                postbacks_crud,
                postbacks_create_conflict,
                postbacks_list_ordered_and_by_type,
                postbacks_versions,
                postbacks_change_stamp,
                postbacks_concurrent_writes_each_take_a_stamp,
                postbacks_snapshot_reflects_every_write_of_its_stamp,
                postbacks_approval_kept_and_only_approved_match,
                alerts_round_trip,
                access_keys_lifecycle,
                access_audit_query,
                access_postback_writes_carry_their_record,
                touches_click_latest_wins,
                touches_status_latest_wins,
                touches_status_keys_are_separate,
                touches_record_is_idempotent,
                touches_seen_and_mark_seen,
                touches_record_and_mark_seen,
                logs_append_and_get,
                logs_delivered_of_transaction,
                logs_newest_first,
                logs_newest_first_by_fired_at,
                logs_every_filter,
                logs_pagination_without_gaps_or_duplicates,
                logs_is_not_and_contains,
                logs_record_delivered_once,
                logs_record_delivered_under_the_stores_id,
                logs_hourly_stats,
                logs_failed_firings_latest_failed_per_delivery,
                logs_failed_firings_filters_apply,
                logs_failed_firings_paging_by_cursor,
                queue_enqueue_receive_ack,
                queue_not_received_before_due,
                queue_lease_hides_then_returns,
                queue_retry_replaces_with_next_attempt,
                queue_duplicate_enqueue_fires_once,
                queue_delivered_firing_is_not_fired_again,
                queue_batch_of_250_received_exactly_once,
                queue_depth_counts_queued_firings,
                control_breaker_first_write_is_version_1,
                control_breaker_stale_write_changes_nothing,
                control_breaker_concurrent_writers_one_wins,
                control_breakers_of_many_postbacks,
                control_held_in_order_per_postback,
                control_rehold_keeps_one_copy,
                control_unhold_forgets_only_the_generation_read,
                control_claim_gives_each_held_firing_to_one_release,
                control_held_paging_by_unhold,
                control_take_slot_per_second,
                control_take_slot_concurrent_takers,
                control_forget_clears_all,
            ]
            enqueue_dedupe: [
                queue_duplicate_enqueue_is_one_message,
                queue_enqueue_of_delivered_firing_is_dropped,
            ]
            fair_receive: [
                queue_fair_receive_passes_over_full_destinations,
                queue_fair_receive_caps_each_destination,
                queue_fair_next_due_and_retry_follow_the_destination,
            ]
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_check_consts {
    (
        {}
        common: [$($common:ident),* $(,)?]
        enqueue_dedupe: [$($dedupe:ident),* $(,)?]
        fair_receive: [$($fair:ident),* $(,)?]
    ) => {
        /// Every adapter must pass these.
        pub const CHECKS: &[(&str, Check)] = &[$((stringify!($common), |a| Box::pin($common(a)))),*];
        /// Only for queues that deduplicate at enqueue time.
        pub const ENQUEUE_DEDUPE_CHECKS: &[(&str, Check)] = &[$((stringify!($dedupe), |a| Box::pin($dedupe(a)))),*];
        /// Only for queues that select by destination.
        pub const FAIR_RECEIVE_CHECKS: &[(&str, Check)] = &[$((stringify!($fair), |a| Box::pin($fair(a)))),*];
    };
}

crate::__contract_check_lists!(__contract_check_consts {});

/// One `#[tokio::test]` per contract check, in a module `checks` (so the tests are
/// `<your module>::checks::<check>`), each on `factory.fresh()` adapters. `factory` is
/// an expression evaluated in every test (it sees the enclosing module's items); it
/// must implement `postback::testing::AdapterFactory`. `extra` adds lists beyond
/// `common` (`enqueue_dedupe`, `fair_receive`); `before` is run first in every test (e.g. to skip
/// without emulators).
#[macro_export]
macro_rules! contract_tests {
    (factory = $factory:expr $(, extra = [$($extra:ident),* $(,)?])? $(, before = $before:block)? $(,)?) => {
        $crate::__contract_check_lists!(__contract_test_fns { [$factory] { $($before)? } [$($($extra)*)?] });
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_test_fns {
    (
        { [$factory:expr] $before:tt [$($extra:ident)*] }
        common: [$($common:ident),* $(,)?]
        enqueue_dedupe: $dedupe:tt
        fair_receive: $fair:tt
    ) => {
        mod checks {
            #[allow(unused_imports)]
            use super::*;
            $( $crate::__contract_test_fn!([$factory] $before $common); )*
            $( $crate::__contract_extra_list!($extra [$factory] $before enqueue_dedupe: $dedupe fair_receive: $fair); )*
        }
    };
}

/// The tests of the one extra list named first.
#[doc(hidden)]
#[macro_export]
macro_rules! __contract_extra_list {
    (enqueue_dedupe [$factory:expr] $before:tt enqueue_dedupe: [$($check:ident),* $(,)?] fair_receive: $fair:tt) => {
        $( $crate::__contract_test_fn!([$factory] $before $check); )*
    };
    (fair_receive [$factory:expr] $before:tt enqueue_dedupe: $dedupe:tt fair_receive: [$($check:ident),* $(,)?]) => {
        $( $crate::__contract_test_fn!([$factory] $before $check); )*
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __contract_test_fn {
    ([$factory:expr] $before:tt $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            $before
            let factory = $factory;
            let adapters = $crate::testing::AdapterFactory::fresh(&factory).await;
            $crate::testing::contract::$check(&adapters).await;
        }
    };
}
