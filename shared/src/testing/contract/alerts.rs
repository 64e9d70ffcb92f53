use crate::domain::alert::{AlertContext, AlertKind};
use crate::domain::event::EventType;
use crate::domain::log::{LogFilter, Outcome};
use crate::testing::{fixtures, Adapters};

/// An alert postback is stored, read and listed (by its type and with all) like any
/// other, with its `alerts`; an alert firing's log entry keeps type `alert`, an empty or
/// a real transaction id, and the alert, and the `type` filter finds it.
pub async fn alerts_round_trip(a: &Adapters) {
    let mut chat = fixtures::postback("pb_alert", EventType::Alert);
    chat.alerts = vec![AlertKind::FiringFailed, AlertKind::BreakerOpened];
    a.postbacks.create(&chat, &fixtures::audit("t")).await.unwrap();
    a.postbacks.create(&fixtures::postback("pb_crm", EventType::Conversion), &fixtures::audit("t")).await.unwrap();
    assert_eq!(a.postbacks.get("pb_alert").await.unwrap(), Some(chat.clone()), "alerts kept");
    assert_eq!(a.postbacks.list(Some(EventType::Alert)).await.unwrap(), vec![chat.clone()], "listed by type alert");
    let all: Vec<String> = a.postbacks.list(None).await.unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(all, ["pb_alert", "pb_crm"], "listed with all");

    let mut entries = Vec::new();
    for (kind, delivery_id) in
        [(AlertKind::FiringFailed, "d_alert_failed"), (AlertKind::BreakerOpened, "d_alert_opened")]
    {
        let alert = AlertContext::sample(kind);
        let mut firing = fixtures::firing(delivery_id, fixtures::now());
        firing.postback_id = chat.id.clone();
        firing.event = alert.event(fixtures::now());
        firing.check_status = false;
        firing.alert = Some(alert);
        entries.push(fixtures::log_entry(&firing, Outcome::Delivered));
    }
    let conversion = fixtures::log_entry(&fixtures::firing("d_conversion", fixtures::now()), Outcome::Delivered);
    a.logs.append(&[entries[0].clone(), entries[1].clone(), conversion]).await.unwrap();
    for entry in &entries {
        assert_eq!(a.logs.get(&entry.id).await.unwrap().as_ref(), Some(entry), "the entry and its alert whole");
    }
    assert_eq!(entries[0].transaction_id, "tx_5f2b9c1e7a");
    assert_eq!(entries[1].transaction_id, "", "a breaker alert has no transaction");
    let filter = LogFilter { limit: 100, kind: Some(EventType::Alert), ..LogFilter::default() };
    let mut found: Vec<String> = a.logs.query(&filter).await.unwrap().items.into_iter().map(|e| e.id).collect();
    found.sort();
    let mut want: Vec<String> = entries.iter().map(|e| e.id.clone()).collect();
    want.sort();
    assert_eq!(found, want, "type=alert finds the alert firings only");
}
