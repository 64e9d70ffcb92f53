//! `GET /metrics` after a known flow: exact counts.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_events_duplicates_and_firings() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let api = server.client();

    api.create_postback(json!({"name": "Clicks", "type": "click", "url": sink.url("/ok/click?t={transaction_id}")}))
        .await;
    api.create_postback(json!({"name": "Refused", "type": "conversion", "url": sink.url("/status/400/conv")})).await;

    // 3 new clicks and 2 duplicates of the first, 1 conversion: 3 delivered, 1 failed.
    for t in ["T1", "T2", "T3", "T1", "T1"] {
        let r = api.ingest(json!({"type": "click", "transaction_id": t, "offer_id": "O1", "publisher_id": "P1"})).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let r = api.ingest(json!({"type": "conversion", "transaction_id": "T1", "status": "approved"})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let done = api.wait_logs("", 4, WAIT, |e| e["outcome"] == "delivered" || e["outcome"] == "failed").await;
    assert_eq!(done.len(), 4, "{done:?}");

    let unauthorized = api.raw(api.http.get(format!("{}/metrics", server.base))).await;
    assert_eq!(unauthorized.status, 401);
    let resp = api.http.get(format!("{}/metrics", server.base)).header("x-api-key", ADMIN_KEY).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let text = resp.text().await.unwrap();
    let expect = [
        ("postback_events_accepted_total{type=\"click\"}", 3.0),
        ("postback_events_accepted_total{type=\"conversion\"}", 1.0),
        ("postback_events_duplicate_total{type=\"click\"}", 2.0),
        ("postback_firings_total{outcome=\"delivered\"}", 3.0),
        ("postback_firings_total{outcome=\"failed\"}", 1.0),
        ("postback_delivery_duration_seconds_count", 4.0),
        ("postback_delivery_duration_seconds_bucket{le=\"+Inf\"}", 4.0),
        ("postback_queue_depth", 0.0),
        ("postback_queue_oldest_due_age_seconds", 0.0),
    ];
    for (name, value) in expect {
        assert_eq!(series(&text, name), Some(value), "{name} in:\n{text}");
    }
    assert_eq!(series(&text, "postback_events_duplicate_total{type=\"conversion\"}"), None, "{text}");
    assert!(!text.contains("retrying"), "no retries in this flow:\n{text}");
}
