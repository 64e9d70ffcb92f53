//! Bulk replay through the real server: failed firings replayed once each with their
//! delivery ids, a conversion rejected meanwhile skipped, nothing replayed twice.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);
const N: usize = 4;

fn ids_of(entries: &[Value], field: &str) -> BTreeSet<String> {
    entries.iter().map(|e| e[field].as_str().unwrap_or_default().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_firings_are_replayed_once_with_their_delivery_ids() {
    let sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();
    let from = chrono::Utc::now().to_rfc3339();
    // The receiver refuses (404) the first N requests, then is fixed.
    let pb = api
        .create_postback(json!({"name": "Sales", "type": "conversion",
            "url": sink.url(&format!("/fail/{N}/sale?t={{transaction_id}}&d={{delivery_id}}"))}))
        .await;
    for i in 0..N {
        let r =
            api.ingest(json!({"type": "conversion", "transaction_id": format!("R{i}"), "status": "approved"})).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
    let failed = api.wait_logs(&format!("postback_id={pb}"), N, WAIT, |e| e["outcome"] == "failed").await;
    assert_eq!(failed.len(), N, "a 404 fails at once: {failed:?}");
    // Rejected meanwhile: its replay must be skipped with the reason.
    let r = api
        .ingest(
            json!({"type": "conversion", "transaction_id": "R0", "status": "rejected", "rejection_reason": "fraud"}),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);

    let body = json!({"from": from, "postback_id": pb});
    let dry = api.post("/logs/replay", json!({"from": from, "postback_id": pb, "dry_run": true})).await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert_eq!(dry.body, json!({"matched": N, "replayed": 0, "dry_run": true, "next_cursor": null}));
    api.sentinel(&sink, "after-dry-run", 0).await;
    assert_eq!(sink.hits_on("/fail/").len(), N, "a dry run sends nothing");

    let r = api.post("/logs/replay", body.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({"matched": N, "replayed": N, "dry_run": false, "next_cursor": null}));

    let replays = api.wait_logs(&format!("postback_id={pb}"), N, WAIT, |e| e["replay_of"].is_string()).await;
    assert_eq!(replays.len(), N, "one new entry per replayed firing: {replays:?}");
    assert_eq!(ids_of(&replays, "delivery_id"), ids_of(&failed, "delivery_id"), "the same delivery ids");
    assert_eq!(ids_of(&replays, "replay_of"), ids_of(&failed, "id"), "replay_of points at the failed entries");
    for entry in &replays {
        let tx = entry["transaction_id"].as_str().unwrap();
        if tx == "R0" {
            assert_eq!(entry["outcome"], "skipped", "{entry}");
            let error = entry["error"].as_str().unwrap();
            assert!(error.contains("rejected") && error.contains("fraud"), "{error}");
        } else {
            assert_eq!(entry["outcome"], "delivered", "{entry}");
            assert_eq!(entry["attempt"], 1, "a fresh chain of attempts");
        }
    }
    let delivered = sink.hits_on("/fail/").into_iter().skip(N).collect::<Vec<_>>();
    assert_eq!(delivered.len(), N - 1, "each replayed once, the rejected one not at all");
    let one = api.get(&format!("/logs/{}", replays[0]["id"].as_str().unwrap())).await;
    assert_eq!(one.body["replay_of"], replays[0]["replay_of"], "GET /logs/{{id}} shows replay_of");

    let again = api.post("/logs/replay", body).await;
    assert_eq!(again.body, json!({"matched": 0, "replayed": 0, "dry_run": false, "next_cursor": null}));

    // Bad input names the field.
    let cases = [
        (json!({"postback_id": pb}), "from"),
        (json!({}), "from"),
        (json!({"from": from, "dry_run": "yes"}), "dry_run"),
        (json!({"from": from, "status_code": 404}), "status_code"),
        (json!({"from": from, "outcome": "delivered"}), "outcome"),
        (json!({"from": from, "cursor": "bogus"}), "cursor"),
        (json!({"from": from, "statuscode": "404"}), "statuscode"),
    ];
    for (body, field) in cases {
        let r = api.post("/logs/replay", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.body["error"]["field"], field, "{body}: {}", r.body);
    }
    let r = api.raw(api.http.post(format!("{}/logs/replay", api.base)).json(&json!({"from": from}))).await;
    assert_eq!(r.status, 401, "admin key required");
}
