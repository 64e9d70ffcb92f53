//! Postbacks made from library templates, end to end: the library through the API, and a
//! real delivery for each category (an ad platform, a tracker, a team chat) to a local
//! receiver, checked as received.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
/// SHA-256 of `ana.lopez@example.com` (the tracker's ` Ana.Lopez@Example.COM `, trimmed and
/// lowercased), computed apart from the code.
const EMAIL_SHA256: &str = "53fdd27c13c87b89296422dd99e14d02656dbcacefed01d3b53a56313adf3a98";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_through_the_api() {
    let server = Server::fresh(&[]).await;
    let api = server.client();
    let list = api.get("/templates").await;
    assert_eq!(list.status, 200, "{}", list.body);
    let ids: Vec<&str> = list.body["items"].as_array().unwrap().iter().filter_map(|t| t["id"].as_str()).collect();
    assert_eq!(ids.len(), 15, "{ids:?}");
    let meta = api.get("/templates/meta-capi").await;
    assert_eq!((meta.status, meta.body["category"].as_str()), (200, Some("ad_platform")), "{}", meta.body);
    assert!(meta.body["inputs"].as_array().unwrap().iter().any(|i| i["name"] == "access_token" && i["secret"] == true));
    let missing = api.get("/templates/nope").await;
    assert_eq!(missing.status, 404, "{}", missing.body);
    let anonymous = api.raw(reqwest::Client::new().get(format!("{}/templates", server.base))).await;
    assert_eq!(anonymous.status, 401);

    // Refused, naming the field, nothing written.
    #[rustfmt::skip]
    let refused: Vec<(Value, &str)> = vec![
        (json!({"id": "meta-capi", "inputs": {"pixel_id": "1"}}), "template.inputs.access_token"),
        (json!({"id": "meta-capi", "inputs": {"pixel_id": "one", "access_token": "t"}}), "template.inputs.pixel_id"),
        (json!({"id": "facebook", "inputs": {}}), "template.id"),
    ];
    for (template, field) in refused {
        let r = api.post("/postbacks", json!({"name": "x", "type": "conversion", "template": template})).await;
        assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some(field)), "{}", r.body);
    }
    let r = api
        .post("/postbacks", json!({"name": "x", "type": "conversion", "url": "https://t.example/?p={payout|mull:2}"}))
        .await;
    assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some("url")), "{}", r.body);
    assert!(r.body["error"]["message"].as_str().unwrap().contains("did you mean mul?"), "{}", r.body);
    assert_eq!(api.get("/postbacks").await.body["items"].as_array().unwrap().len(), 0, "nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversion_reaches_meta_and_keitaro_as_their_formats_say() {
    let sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();

    // Meta's URL is Graph API's; pointed at the local receiver by giving `url`, which
    // takes precedence over the template's.
    let meta = api
        .create_postback(json!({"name": "Meta pixel", "type": "conversion",
            "url": sink.url("/v21.0/1234567890/events?access_token=EAAtoken123"),
            "template": {"id": "meta-capi", "inputs": {"pixel_id": "1234567890", "access_token": "EAAtoken123"}}}))
        .await;
    let shown = api.get(&format!("/postbacks/{meta}")).await.body;
    assert_eq!(shown["template"], json!({"id": "meta-capi", "version": 1}), "{shown}");
    assert_eq!(shown["method"], "POST");
    // The tracker's own address is an input: the template's URL as is.
    let keitaro = api
        .create_postback(json!({"name": "Keitaro", "type": "conversion",
            "template": {"id": "keitaro", "inputs": {"tracker_url": sink.url(""), "postback_key": "k3yk3y"}}}))
        .await;
    let shown = api.get(&format!("/postbacks/{keitaro}")).await.body;
    assert_eq!(shown["url"], format!("{}/[REDACTED]/postback?subid={{external_transaction_id}}&status={{status|map:approved=sale,pending=lead,rejected=rejected}}&payout={{payout}}&currency={{currency|lower}}&tid={{transaction_id}}", sink.url("")), "the postback key is a secret input");
    let put = api.admin(reqwest::Method::PUT, &format!("/postbacks/{keitaro}"), Some(shown.clone())).await;
    assert_eq!(put.status, 200, "PUT back as shown: {}", put.body);

    let r = api
        .ingest(json!({"type": "conversion", "transaction_id": "T-1001", "external_transaction_id": "clk_abc123",
            "payout": "12.50", "currency": "EUR", "ip": "203.0.113.7", "user_agent": "Mozilla/5.0",
            "timestamp": "2024-05-01T12:00:00Z",
            "params": {"email": " Ana.Lopez@Example.COM "}}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);

    let hit = sink.wait_for("/v21.0/", 1, WAIT).await.pop().expect("Meta's request");
    assert_eq!((hit.method.as_str(), hit.query.as_str()), ("POST", "access_token=EAAtoken123"));
    assert_eq!(hit.headers.get("content-type").map(String::as_str), Some("application/json"));
    let body: Value = serde_json::from_str(&hit.body).unwrap();
    let event = &body["data"][0];
    assert_eq!(event["event_name"], "Purchase");
    assert_eq!(event["event_time"], 1_714_564_800, "unix seconds");
    assert_eq!(event["action_source"], "website");
    assert_eq!(event["user_data"]["em"], json!([EMAIL_SHA256]));
    assert_eq!(event["user_data"]["client_ip_address"], "203.0.113.7");
    assert_eq!(event["custom_data"], json!({"currency": "EUR", "value": 12.5, "order_id": "T-1001"}));
    let entries = api.wait_logs(&format!("postback_id={meta}"), 1, WAIT, |e| e["outcome"] == "delivered").await;
    assert_eq!(event["event_id"].as_str(), entries[0]["delivery_id"].as_str(), "event_id is the delivery id");
    assert!(!entries[0].to_string().contains("EAAtoken123"), "no log holds the token: {}", entries[0]);

    let hit = sink.wait_for("/k3yk3y/", 1, WAIT).await.pop().expect("Keitaro's postback");
    assert_eq!(hit.method, "GET");
    assert_eq!(hit.query, "subid=clk_abc123&status=sale&payout=12.50&currency=eur&tid=T-1001");
    let entries = api.wait_logs(&format!("postback_id={keitaro}"), 1, WAIT, |e| e["outcome"] == "delivered").await;
    assert!(!entries[0]["url"].as_str().unwrap().contains("k3yk3y"), "{}", entries[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_firing_reaches_slack_as_an_incoming_message() {
    let sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();

    let crm = api
        .create_postback(
            json!({"name": "CRM", "type": "conversion", "url": sink.url("/status/400/crm?c={transaction_id}")}),
        )
        .await;
    let slack = api
        .create_postback(json!({"name": "Ops Slack", "type": "alert", "url": sink.url("/ok/slack"),
            "template": {"id": "slack", "inputs": {"webhook_url": "https://hooks.slack.com/services/T0/B0/XYZ"}}}))
        .await;
    let shown = api.get(&format!("/postbacks/{slack}")).await.body;
    assert_eq!(shown["alerts"], json!(["breaker_opened", "breaker_closed", "firing_failed"]), "{shown}");
    assert_eq!(shown["template"], json!({"id": "slack", "version": 1}));

    let r = api.ingest(json!({"type": "conversion", "transaction_id": "T-alert"})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    api.wait_logs(&format!("postback_id={crm}"), 1, WAIT, |e| e["outcome"] == "failed").await;
    let hit = sink.wait_for("/ok/slack", 1, WAIT).await.pop().expect("the alert");
    assert_eq!(hit.method, "POST");
    assert_eq!(hit.headers.get("content-type").map(String::as_str), Some("application/json"));
    let body: Value = serde_json::from_str(&hit.body).unwrap();
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("CRM") && text.contains("T-alert"), "{text}");
    assert_eq!(body.as_object().unwrap().len(), 1, "Slack's incoming message: {body}");
}
