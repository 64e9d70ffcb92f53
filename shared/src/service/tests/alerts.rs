//! `alerts::raise` on the fakes: which alert postbacks get an alert, what the receiver
//! gets (JSON-escaped, percent-encoded), no loops, one firing per key, and the log.

use serde_json::{json, Value};

use super::World;
use crate::domain::alert::{AlertContext, AlertKind};
use crate::domain::event::EventType;
use crate::domain::log::Outcome;
use crate::service::alerts::raise;
use crate::service::AttemptOutcome;

const CHAT: &str = "https://chat.example/hooks/ops";

/// An alert postback posting `{"text": "{alert_message}"}` to `CHAT`/`path`, subscribed to
/// `alerts` (absent: all three).
fn chat(name: &str, path: &str, alerts: Option<&[&str]>, enabled: bool) -> Value {
    let mut pb = json!({"name": name, "type": "alert", "enabled": enabled, "method": "POST",
        "url": format!("{CHAT}/{path}?kind={{alert}}&about={{alert_postback_id}}"),
        "body": "{\"text\": \"{alert_message}\", \"postback\": \"{alert_postback_name}\", \"url\": \"{alert_url}\", \
                 \"tx\": \"{transaction_id}\", \"status\": \"{status_code}\", \"error\": \"{error}\", \"type\": \"{type}\"}"});
    if let Some(alerts) = alerts {
        pb["alerts"] = json!(alerts);
    }
    pb
}

/// A conversion postback (what alerts are about).
async fn crm(w: &World) -> String {
    w.postback(json!({"name": "CRM", "type": "conversion", "url": "https://crm.example/pb?c={transaction_id}"})).await
}

fn alert(kind: AlertKind, about: &str) -> AlertContext {
    let failed = kind == AlertKind::FiringFailed;
    AlertContext {
        kind,
        message: format!("{} for postback CRM", kind.as_str()),
        postback_id: about.to_string(),
        postback_name: "CRM".into(),
        url: "https://crm.example/pb?c=T1".into(),
        transaction_id: failed.then(|| "T1".into()),
        status_code: failed.then_some(400),
        error: failed.then(|| "HTTP 400: client error, not retried".into()),
    }
}

/// Process every due firing; the paths (after `CHAT/`) the receiver got, sorted.
async fn deliver_all(w: &World) -> Vec<String> {
    for leased in w.receive().await {
        assert_eq!(w.process(&leased).await, AttemptOutcome::Delivered);
    }
    let mut paths: Vec<String> = w
        .sender
        .requests()
        .iter()
        .map(|s| {
            s.request.url.trim_start_matches(&format!("{CHAT}/")).split('?').next().unwrap_or_default().to_string()
        })
        .collect();
    paths.sort();
    paths
}

#[tokio::test]
async fn each_kind_reaches_the_enabled_alert_postbacks_subscribed_to_it() {
    #[rustfmt::skip]
    let cases: [(AlertKind, &[&str]); 3] = [
        (AlertKind::BreakerOpened, &["all", "breakers"]),
        (AlertKind::BreakerClosed, &["all", "breakers"]),
        (AlertKind::FiringFailed, &["all", "failures"]),
    ];
    for (kind, expected) in cases {
        let w = World::new();
        let about = crm(&w).await;
        w.postback(chat("All", "all", None, true)).await;
        w.postback(chat("Breakers", "breakers", Some(&["breaker_opened", "breaker_closed"]), true)).await;
        w.postback(chat("Failures", "failures", Some(&["firing_failed"]), true)).await;
        w.postback(chat("Off", "off", None, false)).await;
        raise(&w.app, &alert(kind, &about), "k1").await.unwrap();
        let queued = w.queued();
        assert!(
            queued.iter().all(|f| f.attempt == 1 && f.due_at == w.now() && !f.check_status),
            "{kind:?}: {queued:?}"
        );
        assert_eq!(deliver_all(&w).await, expected, "{kind:?}");
    }
}

#[tokio::test]
async fn the_receiver_gets_the_rendered_alert_and_the_log_shows_type_alert() {
    let w = World::new();
    let about = crm(&w).await;
    let chat_id = w.postback(chat("Ops chat", "ops", Some(&["firing_failed"]), true)).await;
    raise(&w.app, &alert(AlertKind::FiringFailed, &about), "d_failed").await.unwrap();
    assert_eq!(deliver_all(&w).await, ["ops"]);

    let sent = &w.sender.requests()[0].request;
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.url, format!("{CHAT}/ops?kind=firing_failed&about={about}"));
    let body: Value = serde_json::from_str(sent.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"text": "firing_failed for postback CRM", "postback": "CRM", "url": "https://crm.example/pb?c=T1",
               "tx": "T1", "status": "400", "error": "HTTP 400: client error, not retried", "type": "alert"})
    );

    let entry = &w.logs()[0];
    assert_eq!(
        (entry.postback_id.as_str(), entry.kind, entry.outcome),
        (chat_id.as_str(), EventType::Alert, Outcome::Delivered)
    );
    assert_eq!(entry.transaction_id, "T1", "a firing_failed alert's entry shows the failed firing's transaction");
    assert_eq!(entry.firing.as_ref().and_then(|f| f.alert.as_ref()).map(|a| a.kind), Some(AlertKind::FiringFailed));
}

#[tokio::test]
async fn breaker_alerts_leave_the_firing_failed_macros_empty() {
    let w = World::new();
    let about = crm(&w).await;
    w.postback(chat("Ops chat", "ops", None, true)).await;
    raise(&w.app, &alert(AlertKind::BreakerOpened, &about), "outage-1").await.unwrap();
    deliver_all(&w).await;
    let body: Value = serde_json::from_str(w.sender.requests()[0].request.body.as_deref().unwrap()).unwrap();
    assert_eq!((&body["tx"], &body["status"], &body["error"]), (&json!(""), &json!(""), &json!("")));
    assert_eq!(w.logs()[0].transaction_id, "");
}

#[tokio::test]
async fn hostile_alert_values_stay_inside_their_json_string_and_url_component() {
    let w = World::new();
    let about = crm(&w).await;
    w.postback(chat("Ops chat", "ops", None, true)).await;
    let hostile = "He said \"stop\"\\ \n\r\t<script>alert(1)</script> & ?x=1#frag \u{1}é";
    let mut a = alert(AlertKind::FiringFailed, &about);
    a.message = hostile.to_string();
    a.postback_name = hostile.to_string();
    a.postback_id = format!("{about}&evil=1");
    a.error = Some(hostile.to_string());
    raise(&w.app, &a, "d_hostile").await.unwrap();
    deliver_all(&w).await;

    let sent = &w.sender.requests()[0].request;
    let body: Value =
        serde_json::from_str(sent.body.as_deref().unwrap()).expect("valid JSON whatever the message holds");
    assert_eq!(body["text"], hostile);
    assert_eq!(body["postback"], hostile);
    assert_eq!(body["error"], hostile);
    assert_eq!(
        sent.url,
        format!("{CHAT}/ops?kind=firing_failed&about={about}%26evil%3D1"),
        "percent-encoded in the URL"
    );
}

#[tokio::test]
async fn an_alert_about_an_alert_postback_fires_nothing() {
    let w = World::new();
    let chat_id = w.postback(chat("Ops chat", "ops", None, true)).await;
    let other = w.postback(chat("Pager", "pager", None, true)).await;
    for kind in AlertKind::ALL {
        raise(&w.app, &alert(kind, &chat_id), "k").await.unwrap();
        raise(&w.app, &alert(kind, &other), "k").await.unwrap();
    }
    assert!(w.queued().is_empty(), "no loops: {:?}", w.queued());
}

#[tokio::test]
async fn the_same_key_raises_once_and_another_key_again() {
    let w = World::new();
    let about = crm(&w).await;
    w.postback(chat("Ops chat", "ops", None, true)).await;
    let opened = alert(AlertKind::BreakerOpened, &about);
    raise(&w.app, &opened, "outage-1").await.unwrap();
    raise(&w.app, &opened, "outage-1").await.unwrap();
    assert_eq!(w.queued().len(), 1, "queued once");
    assert_eq!(deliver_all(&w).await, ["ops"]);

    raise(&w.app, &opened, "outage-1").await.unwrap();
    assert!(w.queued().is_empty(), "a delivered alert is not queued again");

    // Another kind with the same key, or the same kind with another key, is another alert.
    raise(&w.app, &alert(AlertKind::BreakerClosed, &about), "outage-1").await.unwrap();
    raise(&w.app, &opened, "outage-2").await.unwrap();
    assert_eq!(w.queued().len(), 2);
}

#[tokio::test]
async fn tracker_events_never_fire_alert_postbacks() {
    let w = World::new();
    w.postback(chat("Ops chat", "ops", None, true)).await;
    let result = w
        .ingest_one(json!({"type": "conversion", "transaction_id": "T1", "offer_id": "O1", "publisher_id": "P1"}))
        .await;
    assert_eq!(result.matched, 0);
    assert!(w.queued().is_empty());
}

#[tokio::test]
async fn preview_and_test_of_an_alert_postback_use_a_sample_alert() {
    let w = World::new();
    let id = w.postback(chat("Ops chat", "ops", Some(&["breaker_opened", "firing_failed"]), true)).await;
    let postback = w.app.get_postback(&id).await.unwrap();

    // Default: firing_failed, the kind with every macro.
    let sample = crate::entry::http::parse::postback::sample(&postback, Some(&json!({})), w.now()).unwrap();
    let preview = w.app.preview_postback(&id, sample).await.unwrap();
    assert_eq!(preview.alert.as_ref().map(|a| a.kind), Some(AlertKind::FiringFailed));
    let body: Value = serde_json::from_str(preview.request.body.as_deref().unwrap()).unwrap();
    assert_eq!(body["text"], preview.alert.as_ref().unwrap().message.as_str());
    assert_eq!(body["status"], "400");

    // A chosen kind; a test sends it and logs it as a test of type alert.
    let opened = json!({"alert": "breaker_opened"});
    let sample = crate::entry::http::parse::postback::sample(&postback, Some(&opened), w.now()).unwrap();
    let tested = w.app.test_postback(&id, sample).await.unwrap();
    assert_eq!(tested.outcome, Outcome::Delivered);
    let sent = &w.sender.requests()[0].request;
    assert!(sent.url.contains("kind=breaker_opened"), "{}", sent.url);
    let entry = &w.logs()[0];
    assert!(entry.test);
    assert_eq!(entry.kind, EventType::Alert);

    // Event fields mean nothing for an alert; an unknown kind is named.
    for (body, field) in [(json!({"payout": "1"}), "payout"), (json!({"alert": "fire"}), "alert")] {
        let err = crate::entry::http::parse::postback::sample(&postback, Some(&body), w.now()).unwrap_err();
        assert_eq!(err.field, field, "{}", err.message);
    }
}

#[tokio::test]
async fn alert_postbacks_are_listed_by_type_but_never_for_an_offer_or_publisher() {
    use crate::service::config_api::PostbackFilter;
    let w = World::new();
    let about = crm(&w).await;
    let chat_id = w.postback(chat("Ops chat", "ops", None, true)).await;
    let ids = |list: Vec<crate::domain::postback::Postback>| list.into_iter().map(|p| p.id).collect::<Vec<_>>();
    let by_type = PostbackFilter { kind: Some(EventType::Alert), ..Default::default() };
    assert_eq!(ids(w.app.list_postbacks(&by_type).await.unwrap()), [chat_id.as_str()]);
    let for_offer = PostbackFilter { offer_id: Some("O1".into()), ..Default::default() };
    assert_eq!(ids(w.app.list_postbacks(&for_offer).await.unwrap()), [about.as_str()]);
    let for_publisher = PostbackFilter { publisher_id: Some("P1".into()), ..Default::default() };
    assert_eq!(ids(w.app.list_postbacks(&for_publisher).await.unwrap()), [about.as_str()]);
}
