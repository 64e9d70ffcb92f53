//! The port contract suite, written once and run against every adapter (embedded SQLite
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is the failure report
//! in `tests/contract_embedded.rs`, DynamoDB/SQS in the AWS adapter's tests), plus the
//! fixtures it builds its values with.
//!
//! An adapter's test implements `AdapterFactory` and calls `contract::run_all`.

use std::sync::Arc;

use async_trait::async_trait;

use crate::ports::{FiringQueue, LogStore, PostbackStore, TouchStore};

pub mod contract;
pub mod fixtures;

/// The four storage ports of one adapter family.
#[derive(Clone)]
pub struct Adapters {
    pub postbacks: Arc<dyn PostbackStore>,
    pub touches: Arc<dyn TouchStore>,
    pub logs: Arc<dyn LogStore>,
    pub queue: Arc<dyn FiringQueue>,
}

#[async_trait]
pub trait AdapterFactory: Send + Sync {
    /// Fresh, empty adapters whose queue lease/visibility is `contract::LEASE` (2 s).
    async fn fresh(&self) -> Adapters;
}
