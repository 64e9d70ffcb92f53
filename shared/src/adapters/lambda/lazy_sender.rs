//! The outbound HTTP client of the functions, built on first use.

use async_trait::async_trait;

use crate::adapters::sender::{ReqwestSender, SenderConfig};
use crate::domain::delivery::{OutboundRequest, OutboundResponse, SendFailure};
use crate::ports::HttpSender;

/// The outbound HTTP client, built on first use. Building it loads the TLS trust roots
/// (a few milliseconds, about a third of a function's init): config-api and ingest send
/// only for `/postbacks/{id}/test` and resends, so most of their instances never pay
/// it; dispatch pays it once, on its first batch.
pub struct LazySender {
    config: SenderConfig,
    sender: tokio::sync::OnceCell<ReqwestSender>,
}

impl LazySender {
    pub fn new(config: SenderConfig) -> Self {
        Self { config, sender: tokio::sync::OnceCell::new() }
    }
}

#[async_trait]
impl HttpSender for LazySender {
    async fn send(&self, request: &OutboundRequest) -> Result<OutboundResponse, SendFailure> {
        let sender =
            self.sender.get_or_try_init(|| async { ReqwestSender::new(self.config.clone()) }).await.map_err(|e| {
                // Only a broken TLS set-up gets here; retried like any transport failure.
                tracing::error!(error = %e, "cannot build the HTTP client");
                SendFailure::Other(e.to_string())
            })?;
        sender.send(request).await
    }
}
