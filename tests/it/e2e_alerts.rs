//! Alert postbacks end to end: saved and shown through the API, refused where they do not
//! belong, tested against a real receiver, and fired by a failed conversion postback.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

/// An alert postback posting a chat message (and the alert's values) to `url`.
fn chat(url: &str) -> Value {
    json!({"name": "Ops chat", "type": "alert", "method": "POST", "url": url,
           "body": "{\"text\": \"{alert_message}\", \"kind\": \"{alert}\", \"postback\": \"{alert_postback_name}\", \
                    \"url\": \"{alert_url}\", \"status\": \"{status_code}\", \"tx\": \"{transaction_id}\"}"})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_postbacks_through_the_api() {
    let chat_sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();

    let id = api.create_postback(chat(&chat_sink.url("/ok/chat"))).await;
    let got = api.get(&format!("/postbacks/{id}")).await;
    assert_eq!((got.body["type"].as_str(), got.status), (Some("alert"), 200), "{}", got.body);
    assert_eq!(
        got.body["alerts"],
        json!(["breaker_opened", "breaker_closed", "firing_failed", "approval_requested"]),
        "the default, explicit"
    );
    let put = api.admin(reqwest::Method::PUT, &format!("/postbacks/{id}"), Some(got.body.clone())).await;
    assert_eq!(put.status, 200, "a GET can be PUT back: {}", put.body);
    let listed = api.get("/postbacks?type=alert").await;
    let ids: Vec<&str> = listed.body["items"].as_array().unwrap().iter().filter_map(|p| p["id"].as_str()).collect();
    assert_eq!(ids, [id.as_str()]);

    // Refused, naming the field: alert macros elsewhere, event fields on alerts, alert events.
    #[rustfmt::skip]
    let refused: Vec<(Value, &str)> = vec![
        (json!({"name": "CRM", "type": "conversion", "method": "POST", "url": chat_sink.url("/ok/crm"), "body": "{\"t\": \"{alert_message}\"}"}), "body"),
        (json!({"name": "CRM", "type": "conversion", "url": chat_sink.url("/ok/crm"), "alerts": ["firing_failed"]}), "alerts"),
        ({ let mut c = chat(&chat_sink.url("/ok/chat")); c["alerts"] = json!(["breaker_open"]); c }, "alerts[0]"),
        ({ let mut c = chat(&chat_sink.url("/ok/chat")); c["offers"] = json!(["o1"]); c }, "offers"),
        ({ let mut c = chat(&chat_sink.url("/ok/chat")); c["url"] = json!(chat_sink.url("/ok/chat?p={payout}")); c }, "url"),
    ];
    for (body, field) in refused {
        let r = api.post("/postbacks", body.clone()).await;
        assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some(field)), "{body}: {}", r.body);
    }
    let r = api.ingest(json!({"type": "alert", "transaction_id": "T1"})).await;
    assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some("type")), "{}", r.body);
    assert_eq!(api.get("/postbacks").await.body["items"].as_array().unwrap().len(), 1, "nothing half-written");

    // Test: a sample alert, sent for real, valid JSON whatever the sample holds.
    let tested = api.post(&format!("/postbacks/{id}/test"), json!({"alert": "breaker_opened"})).await;
    assert_eq!((tested.status, tested.body["outcome"].as_str()), (200, Some("delivered")), "{}", tested.body);
    let hit = chat_sink.wait_for("/ok/chat", 1, WAIT).await.pop().expect("the test request");
    let sent: Value = serde_json::from_str(&hit.body).expect("a JSON body");
    assert_eq!(sent["kind"], "breaker_opened");
    assert!(sent["text"].as_str().is_some_and(|t| !t.is_empty()), "{sent}");
    assert_eq!(hit.headers.get("content-type").map(String::as_str), Some("application/json"));
    let logs = api.logs(&format!("postback_id={id}")).await;
    assert_eq!((logs[0]["type"].as_str(), logs[0]["test"].as_bool()), (Some("alert"), Some(true)), "{}", logs[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_conversion_postback_alerts_the_chat_webhook() {
    let crm_sink = Sink::start().await;
    let chat_sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();

    let crm = api
        .create_postback(json!({"name": "CRM \"Acme\"", "type": "conversion",
            "url": crm_sink.url("/status/400/crm?c={transaction_id}&key=s3cr3t")}))
        .await;
    let chat_id = api.create_postback(chat(&chat_sink.url("/ok/chat"))).await;
    let r = api
        .ingest(json!({"type": "conversion", "transaction_id": "T-alert", "offer_id": "O1", "publisher_id": "P1"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);

    let failed = api.wait_logs(&format!("postback_id={crm}"), 1, WAIT, |e| e["outcome"] == "failed").await;
    assert_eq!(failed.len(), 1, "a 400 fails at once");
    let hits = chat_sink.wait_for("/ok/chat", 1, WAIT).await;
    assert_eq!(hits.len(), 1, "one firing_failed alert");
    let hit = &hits[0];
    assert_eq!(hit.method, "POST");
    assert_eq!(hit.headers.get("content-type").map(String::as_str), Some("application/json"));
    let sent: Value = serde_json::from_str(&hit.body).expect("valid JSON, quotes in the name and all");
    let text = sent["text"].as_str().unwrap();
    assert!(!text.is_empty() && !text.contains('\n'), "one readable line: {text:?}");
    assert_eq!(sent["kind"], "firing_failed");
    assert_eq!(sent["postback"], "CRM \"Acme\"");
    let url = sent["url"].as_str().unwrap();
    assert!(url.starts_with(&crm_sink.url("/status/400/crm?c=T-alert")), "the failing request's URL: {url}");
    assert!(!url.contains("s3cr3t"), "secrets redacted: {url}");
    assert_eq!((&sent["status"], &sent["tx"]), (&json!("400"), &json!("T-alert")));

    let entries = api.wait_logs(&format!("postback_id={chat_id}"), 1, WAIT, |e| e["outcome"] == "delivered").await;
    assert_eq!((entries[0]["type"].as_str(), entries[0]["transaction_id"].as_str()), (Some("alert"), Some("T-alert")));
    // Everything due has gone out; still one alert (the alert postback's own delivery
    // alerts nothing).
    api.sentinel(&crm_sink, "alerts", 0).await;
    assert_eq!(chat_sink.hits_on("/ok/chat").len(), 1);
}
