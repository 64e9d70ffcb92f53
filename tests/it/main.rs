//! End-to-end tests: the local server as a real process (`cargo run`'s binary), real
//! HTTP sinks, kill -9. One binary; each test starts its own server on its own data
//! folder and port.

mod common;
mod e2e_api;
mod e2e_crash;
mod e2e_flow;
mod e2e_tls;
