//! Mapping SDK failures to the ports' `StoreError`.

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::ports::StoreError;

/// Any SDK failure (throttling, timeouts, service errors, an unreachable endpoint): the
/// dependency is unavailable. The message names the call and the service's error code
/// and message, or for transport failures the whole error chain.
pub(crate) fn unavailable<E, R>(operation: &str, err: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug + 'static,
{
    let detail = match &err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            format!("{}: {}", e.code().unwrap_or("service error"), e.message().unwrap_or_default())
        }
        other => DisplayErrorContext(other).to_string(),
    };
    StoreError::Unavailable(format!("{operation}: {detail}"))
}

/// A request this crate built was refused by the SDK's own validation (a missing
/// required field): a bug, but reported rather than panicking.
pub(crate) fn build_error(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("building {what}: {err}"))
}

pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {err}"))
}
