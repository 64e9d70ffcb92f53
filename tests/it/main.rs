//! End-to-end tests: the local server as a real process (`cargo run`'s binary), real
//! HTTP sinks, kill -9. One binary; each test starts its own server on its own data
//! folder and port.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and tools: a panic is the failure report

mod common;
mod e2e_access;
mod e2e_alerts;
mod e2e_api;
mod e2e_breaker;
mod e2e_crash;
mod e2e_delivery_control;
mod e2e_fair;
mod e2e_flow;
mod e2e_metrics;
mod e2e_replay;
mod e2e_signing;
mod e2e_templates;
mod e2e_tls;
