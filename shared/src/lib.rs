//! Postback manager library, laid out as a hexagon:
//!
//! - `domain`: the pure rules (templates, macros, matching, delivery policy, guard,
//!   redaction). It knows nothing of HTTP, AWS, SQLite or the clock.
//! - `ports`: the traits the use cases need from the outside world (stores, queue,
//!   HTTP sending, clock, jitter).
//! - `service`: the use cases (ingest, configuration, dispatch), driving the domain
//!   through the ports.
//! - `adapters`: implementations of the ports: `embedded` (SQLite, the local server),
//!   `aws` (DynamoDB, SQS, EventBridge Scheduler), `lambda` (what only the Lambda
//!   functions use), `sender` (reqwest), and `memory` (in-memory fakes for tests).
//! - `entry`: how requests come in: the one HTTP router (`http`, with request parsing at
//!   the edge), the Lambda glue (`lambda`), settings and logging set-up.
//! - `testing`: the one port contract suite every adapter passes, and fixtures.

pub mod adapters;
pub mod domain;
pub mod entry;
pub mod ports;
pub mod service;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
