//! Mapping SDK failures to the ports' `StoreError`.

use aws_sdk_dynamodb::error::DisplayErrorContext;

use crate::ports::StoreError;

/// Any SDK failure (throttling, timeouts, service errors, an unreachable endpoint): the
/// dependency is unavailable. The whole error chain goes into the message so the log
/// says which call failed and why.
pub(crate) fn unavailable<E: std::error::Error + 'static>(operation: &str, err: E) -> StoreError {
    StoreError::Unavailable(format!("{operation}: {}", DisplayErrorContext(&err)))
}

/// A request this crate built was refused by the SDK's own validation (a missing
/// required field): a bug, but reported rather than panicking.
pub(crate) fn build_error(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("building {what}: {err}"))
}

pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {err}"))
}
