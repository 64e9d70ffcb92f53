//! Implementations of the ports. Each storage/queue port has an embedded adapter (the
//! local server), an AWS adapter (Lambda) and an in-memory one (tests); all pass the one
//! contract suite in `crate::testing::contract`. `system` holds the real clock and jitter.

pub mod sender;
pub mod system;

#[cfg(feature = "embedded")]
pub mod embedded;

#[cfg(feature = "aws")]
pub mod aws;

/// The adapters only the Lambda functions use.
#[cfg(feature = "aws")]
pub mod lambda;

#[cfg(any(test, feature = "testing"))]
pub mod memory;
