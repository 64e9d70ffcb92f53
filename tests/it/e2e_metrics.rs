//! `GET /metrics` after a known flow: exact counts.

use crate::common;

use std::time::Duration;

use common::*;
use postback::testing::metrics::series;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_events_duplicates_and_firings() {
    if local_only("/metrics is the local server's; the functions emit EMF") {
        return;
    }
    let sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();

    let clicks = api
        .create_postback(json!({"name": "Clicks", "type": "click", "url": sink.url("/ok/click?t={transaction_id}")}))
        .await;
    let refused = api
        .create_postback(json!({"name": "Refused", "type": "conversion", "url": sink.url("/status/400/conv")}))
        .await;

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
    // A firing is acknowledged just after its log entry is written: scrape until the queue
    // has caught up (bounded), then every count must be exact.
    let deadline = std::time::Instant::now() + WAIT;
    let text = loop {
        let resp =
            api.http.get(format!("{}/metrics", server.base)).header("x-api-key", ADMIN_KEY).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
        let text = resp.text().await.unwrap();
        if series(&text, "postback_queue_depth") == Some(0.0) || std::time::Instant::now() > deadline {
            break text;
        }
        // Polling the server while its dispatcher drains the queue (another process).
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
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
        ("postback_breakers_open", 0.0),
    ];
    for (name, value) in expect {
        assert_eq!(series(&text, name), Some(value), "{name} in:\n{text}");
    }
    assert_eq!(series(&text, "postback_events_duplicate_total{type=\"conversion\"}"), None, "{text}");
    assert!(!text.contains("retrying"), "no retries in this flow:\n{text}");

    // The same flow in the per-postback stats (a test send is not counted).
    let r = api.post(&format!("/postbacks/{clicks}/test"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let total = |body: &serde_json::Value, field: &str| -> u64 {
        body["buckets"].as_array().unwrap().iter().map(|b| b[field].as_u64().unwrap()).sum()
    };
    let r = api.get(&format!("/postbacks/{clicks}/stats?hours=2")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["buckets"].as_array().unwrap().len(), 2, "{}", r.body);
    assert_eq!((total(&r.body, "delivered"), total(&r.body, "failed")), (3, 0), "{}", r.body);
    let r = api.get(&format!("/postbacks/{refused}/stats")).await;
    assert_eq!(r.body["buckets"].as_array().unwrap().len(), 24, "default 24 hours");
    assert_eq!((total(&r.body, "delivered"), total(&r.body, "failed")), (0, 1), "{}", r.body);
    let hour = r.body["buckets"][0]["hour"].as_str().unwrap();
    assert!(hour.ends_with(":00:00Z"), "RFC 3339 start of the UTC hour: {hour}");
    for bad in ["hours=0", "hours=169", "hours=x", "hours=1.5"] {
        let r = api.get(&format!("/postbacks/{clicks}/stats?{bad}")).await;
        assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some("hours")), "{bad}: {}", r.body);
    }
    let r = api.get("/postbacks/pb_nope/stats").await;
    assert_eq!(r.status, 404, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_store_writers_counters_moving_after_a_write() {
    if local_only("/metrics and the embedded store's writer are the local server's") {
        return;
    }
    let server = Server::fresh(&[]).await;
    let api = server.client();
    let scrape = || async {
        let resp =
            api.http.get(format!("{}/metrics", server.base)).header("x-api-key", ADMIN_KEY).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    };
    let writer = |text: &str, name: &str| -> f64 {
        series(text, &format!("postback_store_writer_{name}")).unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
    };
    let before = scrape().await;
    assert!(before.contains("# TYPE postback_store_writer_transactions_total counter\n"), "{before}");
    assert!(before.contains("# TYPE postback_store_writer_queue_wait_seconds_max gauge\n"), "{before}");

    // Two writes: the click's touch/dedupe commit and nothing else (no postback matches).
    for t in ["W1", "W2"] {
        let r = api.ingest(json!({"type": "click", "transaction_id": t, "offer_id": "O1", "publisher_id": "P1"})).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let after = scrape().await;
    for name in ["transactions_total", "jobs_total"] {
        assert!(writer(&after, name) >= writer(&before, name) + 1.0, "{name}: {before}\n---\n{after}");
    }
    assert!(writer(&after, "jobs_total") >= writer(&after, "transactions_total"), "{after}");
    assert!(writer(&after, "largest_batch") >= 1.0, "{after}");
    assert!(writer(&after, "queue_wait_seconds_total") >= writer(&before, "queue_wait_seconds_total"), "{after}");
    assert!(writer(&after, "queue_wait_seconds_total") >= writer(&after, "queue_wait_seconds_max"), "{after}");
    assert_eq!(writer(&after, "failed_jobs_total"), 0.0, "{after}");
}
