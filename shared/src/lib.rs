//! Postback manager library: the domain (pure), the ports it needs, the services that
//! drive them, the one HTTP router, and the adapters (embedded SQLite, AWS).
//!
//! Dependency direction: `domain` knows nothing else; `ports` names what the services
//! need from the outside world; `service` and `http` depend on `domain` + `ports`;
//! adapters implement `ports`.

pub mod config;
pub mod domain;
pub mod http;
pub mod ports;
pub mod sender;
pub mod service;
pub mod telemetry;

#[cfg(feature = "embedded")]
pub mod embedded;

#[cfg(feature = "aws")]
pub mod aws;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
