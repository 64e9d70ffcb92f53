//! Alerts: queue a firing of every `alert` postback subscribed to what happened.

use super::App;
use crate::domain::alert::AlertContext;
use crate::ports::StoreResult;

/// Queue one firing of every enabled alert postback whose `alerts` include
/// `alert.kind`, through the same queue as every firing. Never raised about an alert
/// postback itself (the caller's postback is checked here too: no loops). `key` makes
/// the delivery ids deterministic, so raising the same alert twice (a redelivered
/// message, two dispatchers seeing one transition) queues it once: one per outage for
/// breaker alerts, the failed firing's delivery id for `firing_failed`.
pub async fn raise(app: &App, alert: &AlertContext, key: &str) -> StoreResult<()> {
    // SKELETON: implemented by the alerts work.
    let _ = (app, alert, key);
    Ok(())
}
