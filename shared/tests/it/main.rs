//! The library's integration tests, one binary (one link, one process, tests in
//! parallel): domain rules, the sender against live local servers, the port contract
//! suite on the memory, embedded and AWS adapters, the Lambda functions against the
//! emulators (`scripts/emulators.sh run ...` provides them), and a check that the source
//! reads time only through the `Clock` port.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and tools: a panic is the failure report

// First, so its macros (`require_emulators!`) are in scope for the AWS test modules.
#[cfg(all(feature = "aws", feature = "testing"))]
#[macro_use]
mod aws_support;

mod clock_port;
mod domain_delivery;
mod domain_functions;
mod domain_library;
mod domain_matching;
mod domain_templates;
mod domain_validation;
mod layers;
mod matching_oracle;
mod sender;

#[cfg(all(feature = "embedded", feature = "testing"))]
mod contract_embedded;
#[cfg(feature = "testing")]
mod contract_memory;

#[cfg(all(feature = "aws", feature = "testing"))]
mod aws_cost;
#[cfg(all(feature = "aws", feature = "testing"))]
mod aws_functions;
#[cfg(all(feature = "aws", feature = "testing"))]
mod aws_replay;
#[cfg(all(feature = "aws", feature = "testing"))]
mod contract_aws;
#[cfg(feature = "aws")]
mod template_yaml;
