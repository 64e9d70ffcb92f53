//! The firing queue as the dispatch function's SQS event source hands it messages.

use std::sync::Arc;

use async_trait::async_trait;

use crate::adapters::aws::SqsFiringQueue;
use crate::domain::firing::Firing;
use crate::ports::{FiringQueue, Leased, QueueDepth, StoreResult};

/// The firing queue as the dispatch function sees it: `ack` is a no-op because the SQS
/// event source deletes each message the handler does not report as failed. `retry`
/// therefore only enqueues the next attempt; the current message goes with the batch.
#[derive(Debug, Clone)]
pub struct EventSourceQueue {
    inner: Arc<SqsFiringQueue>,
}

impl EventSourceQueue {
    pub fn new(inner: Arc<SqsFiringQueue>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl FiringQueue for EventSourceQueue {
    async fn enqueue(&self, firings: &[Firing]) -> StoreResult<()> {
        self.inner.enqueue(firings).await
    }

    async fn receive(&self, max: usize) -> StoreResult<Vec<Leased>> {
        self.inner.receive(max).await
    }

    async fn depth(&self) -> StoreResult<QueueDepth> {
        self.inner.depth().await
    }

    async fn ack(&self, _leased: &Leased) -> StoreResult<()> {
        Ok(())
    }

    async fn retry(&self, _leased: &Leased, next: &Firing) -> StoreResult<()> {
        self.inner.enqueue(std::slice::from_ref(next)).await
    }
}
