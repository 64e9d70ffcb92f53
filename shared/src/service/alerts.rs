//! Alerts: queue a firing of every `alert` postback subscribed to what happened.

use super::App;
use crate::domain::alert::AlertContext;
use crate::domain::event::EventType;
use crate::domain::firing::Firing;
use crate::ports::StoreResult;

/// Queue one firing of every enabled alert postback whose `alerts` include
/// `alert.kind`, through the same queue as every firing. Never raised about an alert
/// postback itself (the caller's postback is checked here too: no loops). `key` makes
/// the delivery ids deterministic, so raising the same alert twice (a redelivered
/// message, two dispatchers seeing one transition) queues it once: one per outage for
/// breaker alerts, the failed firing's delivery id for `firing_failed`.
pub async fn raise(app: &App, alert: &AlertContext, key: &str) -> StoreResult<()> {
    let index = app.catalog.index().await?;
    // An alert about an alert postback could fire that postback's own alerts about
    // itself (a broken chat webhook alerting into itself): never.
    if index.get(&alert.postback_id).is_some_and(|about| about.postback.kind == EventType::Alert) {
        return Ok(());
    }
    let now = app.ports.clock.now();
    let firings: Vec<Firing> = index
        .alert_postbacks()
        .iter()
        .filter(|postback| postback.postback.alerts.contains(&alert.kind))
        .map(|postback| {
            let delivery_id = Firing::alert_delivery_id(key, &postback.postback.id, alert.kind);
            let firing = Firing {
                // An alert has no conversion status to re-check.
                check_status: false,
                alert: Some(alert.clone()),
                ..Firing::first(delivery_id, postback.postback.id.clone(), alert.event(now), now, now)
            };
            firing.bound_to(postback)
        })
        .collect();
    if firings.is_empty() {
        return Ok(());
    }
    tracing::info!(alert = alert.kind.as_str(), about = %alert.postback_id, firings = firings.len(), "alert raised");
    app.ports.queue.enqueue(&firings).await
}
