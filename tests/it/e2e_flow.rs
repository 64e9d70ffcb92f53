//! The spec's flow, end to end: the local server as a real process, a real HTTP sink.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

fn outcome_is(o: &'static str) -> impl Fn(&Value) -> bool {
    move |e| e["outcome"] == o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_then_conversion_fires_enriched_postback_once() {
    let sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();

    let pb = api
        .create_postback(json!({
            "name": "Affiliate A",
            "type": "conversion",
            "offers": ["O1"],
            "url": sink.url("/ok/aff?clickid={external_transaction_id}&payout={payout}&s1={sub1}&tx={transaction_id}&d={delivery_id}&pid={publisher_id}")
        }))
        .await;
    // A postback scoped to another offer must not fire.
    api.create_postback(
        json!({"name": "Other offer", "type": "conversion", "offers": ["O2"], "url": sink.url("/ok/other")}),
    )
    .await;

    let r = api
        .ingest(json!({"type": "click", "transaction_id": "T1", "offer_id": "O1", "publisher_id": "P1",
                       "external_transaction_id": "aff click&id=1", "sub1": "s 1"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = api
        .ingest(json!({"type": "conversion", "transaction_id": "T1", "status": "approved", "payout": "12.50"}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["duplicate"], false);
    assert_eq!(r.body["matched"], 1);

    let hits = sink.wait_for("/ok/aff", 1, WAIT).await;
    assert_eq!(hits.len(), 1);
    let q = &hits[0].query;
    assert!(q.contains("clickid=aff%20click%26id%3D1"), "{q}");
    assert!(q.contains("payout=12.50"), "{q}");
    assert!(q.contains("s1=s%201"), "{q}");
    assert!(q.contains("tx=T1"), "{q}");
    assert!(q.contains("pid=P1"), "{q}");

    // The same conversion again: a duplicate, nothing fires.
    let r = api
        .ingest(json!({"type": "conversion", "transaction_id": "T1", "status": "approved", "payout": "12.50"}))
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["duplicate"], true, "{}", r.body);
    assert_eq!(r.body["matched"], 0);

    let logs = api.wait_logs(&format!("postback_id={pb}"), 1, WAIT, outcome_is("delivered")).await;
    assert_eq!(logs.len(), 1);
    let e = &logs[0];
    assert_eq!(e["transaction_id"], "T1");
    assert_eq!(e["offer_id"], "O1");
    assert_eq!(e["publisher_id"], "P1");
    assert_eq!(e["status_code"], 200);
    assert_eq!(e["attempt"], 1);
    assert_eq!(e["test"], false);
    api.sentinel(&sink, "after-duplicate", 0).await;
    assert_eq!(sink.hits_on("/ok/aff").len(), 1, "fired exactly once");
    assert!(sink.hits_on("/ok/other").is_empty(), "out-of-scope postback fired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_postback_is_skipped_when_status_changes_and_reasons_filter() {
    let sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();

    let delayed = api
        .create_postback(json!({"name": "Delayed approved", "type": "conversion", "delay_seconds": 2,
                                "url": sink.url("/ok/delayed?tx={transaction_id}")}))
        .await;
    api.create_postback(json!({"name": "Fraud only", "type": "conversion", "fire_on": "rejected",
                               "rejection_reasons": ["fraud"], "url": sink.url("/ok/fraud?r={rejection_reason}")}))
        .await;
    api.create_postback(json!({"name": "Chargeback only", "type": "conversion", "fire_on": "rejected",
                               "rejection_reasons": ["chargeback"], "url": sink.url("/ok/chargeback")}))
        .await;

    api.ingest(json!({"type": "click", "transaction_id": "T2", "offer_id": "O1", "publisher_id": "P1"})).await;
    let r = api.ingest(json!({"type": "conversion", "transaction_id": "T2", "status": "approved"})).await;
    assert_eq!(r.body["matched"], 1, "{}", r.body);
    let r = api
        .ingest(
            json!({"type": "conversion", "transaction_id": "T2", "status": "rejected", "rejection_reason": "fraud"}),
        )
        .await;
    assert_eq!(r.status, 202);
    assert_eq!(r.body["duplicate"], false, "a status change is not a duplicate");
    assert_eq!(r.body["matched"], 1, "{}", r.body);

    let fraud = sink.wait_for("/ok/fraud", 1, WAIT).await;
    assert_eq!(fraud.len(), 1);
    assert!(fraud[0].query.contains("r=fraud"));

    let skipped = api.wait_logs(&format!("postback_id={delayed}"), 1, WAIT, outcome_is("skipped")).await;
    assert_eq!(skipped.len(), 1, "the delayed postback is logged as skipped");
    let reason = skipped[0]["error"].as_str().unwrap();
    assert!(reason.contains("rejected") && reason.contains("fraud"), "{reason}");
    let skipped_filter = api.logs("outcome=skipped").await;
    assert_eq!(skipped_filter.len(), 1);
    assert!(sink.hits_on("/ok/delayed").is_empty(), "a skipped postback was sent");
    assert!(sink.hits_on("/ok/chargeback").is_empty(), "wrong rejection reason fired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_5xx_then_delivers_and_does_not_retry_4xx() {
    let sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();

    let flaky = api
        .create_postback(
            json!({"name": "Flaky", "type": "click", "url": sink.url("/flaky/2/x?d={delivery_id}&a={attempt}")}),
        )
        .await;
    let bad = api.create_postback(json!({"name": "Bad", "type": "click", "url": sink.url("/status/404/y")})).await;
    let down = api.create_postback(json!({"name": "Down", "type": "click", "url": sink.url("/status/503/z")})).await;

    let r = api.ingest(json!({"type": "click", "transaction_id": "T3", "offer_id": "O1", "publisher_id": "P1"})).await;
    assert_eq!(r.body["matched"], 3, "{}", r.body);

    let hits = sink.wait_for("/flaky/2/x", 3, WAIT).await;
    assert_eq!(hits.len(), 3);
    let ids: Vec<String> = hits.iter().map(|h| h.query.split('&').next().unwrap().to_string()).collect();
    assert!(ids.iter().all(|d| *d == ids[0]), "delivery_id stable across retries: {ids:?}");
    assert!(hits[2].query.contains("a=3"));

    let logs = api.wait_logs(&format!("postback_id={flaky}"), 1, WAIT, outcome_is("delivered")).await;
    assert_eq!(logs.len(), 1);
    let all = api.logs(&format!("postback_id={flaky}")).await;
    assert_eq!(all.len(), 3, "every attempt is logged");
    assert_eq!(all.iter().filter(|e| e["outcome"] == "retrying").count(), 2);
    // Newest first.
    assert_eq!(all[0]["outcome"], "delivered");

    let failed = api.wait_logs(&format!("postback_id={bad}"), 1, WAIT, outcome_is("failed")).await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["status_code"], 404);

    // 503 on every attempt: bounded attempts (3), then failed.
    let down_logs = api.wait_logs(&format!("postback_id={down}"), 1, WAIT, outcome_is("failed")).await;
    assert_eq!(down_logs.len(), 1);
    // The same event queued both; the 503's third attempt came after two retry delays,
    // later than a wrongly retried 404 would have been sent.
    assert_eq!(sink.hits_on("/status/404").len(), 1, "a 4xx is not retried");
    assert_eq!(sink.hits_on("/status/503").len(), 3);
    assert_eq!(api.logs(&format!("postback_id={down}&status_code=503")).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crm_post_json_with_secret_header_is_redacted_in_logs() {
    let sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();

    let r = api
        .post(
            "/postbacks",
            json!({"name": "CRM", "type": "event", "event_names": ["deposit"], "method": "POST",
                   "url": sink.url("/ok/crm"),
                   "headers": {"Authorization": "Bearer s3cr3t-token", "X-Source": "pm"},
                   "body": "{\"lead\": \"{transaction_id}\", \"amount\": \"{payout}\", \"note\": \"{params.note}\", \"event\": \"{event_name}\"}"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["headers"]["Authorization"], "[REDACTED]", "secrets redacted in API responses");
    let pb = r.body["id"].as_str().unwrap().to_string();

    api.ingest(json!({"type": "click", "transaction_id": "T4", "offer_id": "O1", "publisher_id": "P1"})).await;
    let r = api
        .ingest(json!({"type": "event", "transaction_id": "T4", "event_name": "deposit", "payout": 5,
                       "params": {"note": "he said \"hi\"\n"}}))
        .await;
    assert_eq!(r.body["matched"], 1, "{}", r.body);
    // Another event name does not match.
    let r = api.ingest(json!({"type": "event", "transaction_id": "T4", "event_name": "upsell"})).await;
    assert_eq!(r.body["matched"], 0);

    let hits = sink.wait_for("/ok/crm", 1, WAIT).await;
    assert_eq!(hits.len(), 1);
    let hit = &hits[0];
    assert_eq!(hit.method, "POST");
    assert_eq!(hit.headers["authorization"], "Bearer s3cr3t-token");
    assert!(hit.headers["content-type"].starts_with("application/json"));
    let body: Value = serde_json::from_str(&hit.body).expect("valid JSON body");
    assert_eq!(body["lead"], "T4");
    assert_eq!(body["amount"], "5");
    assert_eq!(body["note"], "he said \"hi\"\n");

    let logs = api.wait_logs(&format!("postback_id={pb}"), 1, WAIT, outcome_is("delivered")).await;
    let text = serde_json::to_string(&logs).unwrap();
    assert!(!text.contains("s3cr3t-token"), "secret leaked into logs: {text}");
    let got = api.get(&format!("/postbacks/{pb}")).await;
    assert!(!got.body.to_string().contains("s3cr3t-token"));

    // PUT back what we GOT: the redacted header keeps its stored secret.
    let mut back = got.body.clone();
    back["name"] = json!("CRM v2");
    let r = api.admin(reqwest::Method::PUT, &format!("/postbacks/{pb}"), Some(back)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api.post(&format!("/postbacks/{pb}/test"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let hits = sink.wait_for("/ok/crm", 2, WAIT).await;
    assert_eq!(hits[1].headers["authorization"], "Bearer s3cr3t-token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_test_resend_batch_and_get_ingest() {
    let sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();

    let pb = api
        .create_postback(
            json!({"name": "Pixel", "type": "click", "url": sink.url("/ok/pix?c={transaction_id}&k={params.k}")}),
        )
        .await;

    let r = api
        .post(&format!("/postbacks/{pb}/preview"), json!({"transaction_id": "PREV-1", "params": {"k": "v w"}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let url = r.body["request"]["url"].as_str().unwrap();
    assert!(url.contains("c=PREV-1") && url.contains("k=v%20w"), "{url}");
    assert!(sink.hits().is_empty(), "preview sent something");

    let r = api.post(&format!("/postbacks/{pb}/test"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["response"]["status"], 200);
    assert_eq!(r.body["outcome"], "delivered");
    let test_log = api.get(&format!("/logs/{}", r.body["log_id"].as_str().unwrap())).await;
    assert_eq!(test_log.body["test"], true);

    // Batch of 3 with one in-batch duplicate.
    let r = api
        .ingest(json!({"events": [
            {"type": "click", "transaction_id": "B1", "offer_id": "O1", "publisher_id": "P1"},
            {"type": "click", "transaction_id": "B2", "offer_id": "O1", "publisher_id": "P1"},
            {"type": "click", "transaction_id": "B1", "offer_id": "O1", "publisher_id": "P1"}
        ]}))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[2]["duplicate"], true);

    // A conversion is enriched from a click earlier in the same batch.
    let conv = api
        .create_postback(json!({"name": "Conv", "type": "conversion", "url": sink.url("/ok/conv?c={external_transaction_id}&o={offer_id}")}))
        .await;
    let r = api
        .ingest(json!({"events": [
            {"type": "click", "transaction_id": "BC1", "offer_id": "O7", "publisher_id": "P1", "external_transaction_id": "aff-9"},
            {"type": "conversion", "transaction_id": "BC1"}
        ]}))
        .await;
    assert_eq!(r.body["results"][1]["click_found"], true, "{}", r.body);
    let hits = sink.wait_for("/ok/conv", 1, Duration::from_secs(10)).await;
    assert_eq!(hits[0].query, "c=aff-9&o=O7");
    api.admin(reqwest::Method::DELETE, &format!("/postbacks/{conv}"), None).await;

    // A batch with one bad event is rejected whole, naming the index.
    let r = api
        .ingest(json!({"events": [
            {"type": "click", "transaction_id": "B3", "offer_id": "O1", "publisher_id": "P1"},
            {"type": "click", "offer_id": "O1", "publisher_id": "P1"}
        ]}))
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "events[1].transaction_id", "{}", r.body);

    // GET ingest with ?key= for pixel trackers.
    let r = api
        .ingest_get(&format!("type=click&transaction_id=G1&offer_id=O1&publisher_id=P1&params.k=z&key={INGEST_KEY}"))
        .await;
    assert_eq!(r.status, 202, "{}", r.body);

    // test + B1 + B2 + BC1 + G1
    let hits = sink.wait_for("/ok/pix", 5, WAIT).await;
    assert!(hits.iter().any(|h| h.query.contains("c=G1&k=z")), "{hits:?}");
    assert!(sink.hits_on("/ok/pix").iter().all(|h| !h.query.contains("c=B3")), "rejected batch half-written");

    // Resend from the log: a new entry, fired now.
    let logs = api.wait_logs("transaction_id=B1", 1, WAIT, outcome_is("delivered")).await;
    let r = api.post(&format!("/logs/{}/resend", logs[0]["id"].as_str().unwrap()), json!({})).await;
    assert!(r.status == 201 || r.status == 200, "{} {}", r.status, r.body);
    assert_ne!(r.body["id"], logs[0]["id"]);
    assert_eq!(r.body["resend_of"], logs[0]["id"]);
    let b1 = sink.hits().into_iter().filter(|h| h.query.starts_with("c=B1")).count();
    assert_eq!(b1, 2, "original + resend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_filters_and_pagination() {
    let sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();
    let pb = api
        .create_postback(json!({"name": "Clicks", "type": "click", "url": sink.url("/ok/c?t={transaction_id}")}))
        .await;

    let events: Vec<Value> = (0..25)
        .map(|i| json!({"type": "click", "transaction_id": format!("L{i}"), "offer_id": if i % 2 == 0 {"OE"} else {"OO"}, "publisher_id": "P9"}))
        .collect();
    assert_eq!(api.ingest(json!({ "events": events })).await.status, 202);
    sink.wait_for("/ok/c", 25, WAIT).await;
    api.wait_logs(&format!("postback_id={pb}"), 25, WAIT, |_| true).await;

    let mut seen = std::collections::HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut q = format!("/logs?postback_id={pb}&limit=10");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let r = api.get(&q).await;
        assert_eq!(r.status, 200);
        pages += 1;
        for item in r.body["items"].as_array().unwrap() {
            assert!(seen.insert(item["id"].as_str().unwrap().to_string()), "duplicate across pages");
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(pages, 3);

    assert_eq!(api.logs("offer_id=OE").await.len(), 13);
    assert_eq!(api.logs("transaction_id=L3").await.len(), 1);
    assert_eq!(api.logs("type=click&outcome=delivered&publisher_id=P9").await.len(), 25);
    assert_eq!(api.logs("outcome=failed").await.len(), 0);
    assert_eq!(api.logs("status_code=200").await.len(), 25);
    assert_eq!(api.logs("from=2000-01-01T00:00:00Z&to=2001-01-01T00:00:00Z").await.len(), 0);

    let r = api.get("/logs?outcome=weird").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "outcome");
    let r = api.get("/logs?cursor=not-a-cursor").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "cursor");
}

/// Two postbacks fired by one click, concurrently: the slow one (3 s receiver) first,
/// the fast one a second later. The fast attempt is logged first, so its entry's id is
/// the older one; `GET /logs` still lists newest first by `fired_at`: fast, then slow,
/// on one page and across pages, and the time filters select by `fired_at`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_concurrent_attempts_are_newest_first_by_fired_at() {
    let sink = Sink::start().await;
    let server = Server::fresh(&[("DELIVERY_TIMEOUT_MS", "10000")]).await;
    let api = server.client();
    let slow = api
        .create_postback(
            json!({"name": "Slow receiver", "type": "click", "url": sink.url("/slow/3000/s?d={delivery_id}")}),
        )
        .await;
    let fast = api
        .create_postback(
            json!({"name": "Fast receiver", "type": "click", "delay_seconds": 1, "url": sink.url("/ok/f?d={delivery_id}")}),
        )
        .await;
    let r =
        api.ingest(json!({"type": "click", "transaction_id": "ORD1", "offer_id": "O1", "publisher_id": "P1"})).await;
    assert_eq!((r.status, r.body["matched"].clone()), (202, json!(2)), "{}", r.body);

    let logs = api.wait_logs("transaction_id=ORD1", 2, Duration::from_secs(20), outcome_is("delivered")).await;
    assert_eq!(logs.len(), 2, "{logs:?}");
    let postbacks: Vec<&str> = logs.iter().map(|e| e["postback_id"].as_str().unwrap()).collect();
    assert_eq!(postbacks, [fast.as_str(), slow.as_str()], "newest first by fired_at");
    let fired_at = |e: &Value| chrono::DateTime::parse_from_rfc3339(e["fired_at"].as_str().unwrap()).unwrap();
    let (fast_entry, slow_entry) = (&logs[0], &logs[1]);
    assert!(fired_at(fast_entry) > fired_at(slow_entry), "{logs:?}");
    // (The local store's ids follow the order of writing; on DynamoDB a delivered entry's
    // id is derived from its delivery id, so there is no such order on the AWS shape.)
    if shape() == Shape::Local {
        assert!(
            slow_entry["id"].as_str().unwrap() > fast_entry["id"].as_str().unwrap(),
            "the slow attempt ended last, so id order would have listed it first: {logs:?}"
        );
    }
    assert!(slow_entry["duration_ms"].as_u64().unwrap() >= 2900);

    // The same without a filter, by postback, and in pages of one.
    let ids = |entries: &[Value]| entries.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&api.logs("").await), ids(&logs));
    let r = api.get("/logs?transaction_id=ORD1&limit=1").await;
    assert_eq!(ids(r.body["items"].as_array().unwrap()), ids(&logs[..1]));
    let cursor = r.body["next_cursor"].as_str().expect("a second page");
    let r = api.get(&format!("/logs?transaction_id=ORD1&limit=1&cursor={cursor}")).await;
    assert_eq!(ids(r.body["items"].as_array().unwrap()), ids(&logs[1..]));
    assert_eq!(r.body["next_cursor"], Value::Null);

    // `from` / `to` at an entry's own fired_at select by fired_at (inclusive).
    let at = |e: &Value| e["fired_at"].as_str().unwrap().replace('+', "%2B");
    assert_eq!(ids(&api.logs(&format!("from={}", at(fast_entry))).await), ids(&logs[..1]));
    assert_eq!(ids(&api.logs(&format!("to={}", at(slow_entry))).await), ids(&logs[1..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_with_delayed_firings_pending_fires_each_exactly_once_after_restart() {
    if local_only("kill -9 and restart of the server process") {
        return;
    }
    let sink = Sink::start().await;
    let mut server = Server::fresh(&[]).await;
    let api = server.client();
    api.create_postback(
        json!({"name": "Later", "type": "click", "delay_seconds": 3, "url": sink.url("/ok/later?t={transaction_id}")}),
    )
    .await;
    let events: Vec<Value> = (0..50)
        .map(|i| json!({"type": "click", "transaction_id": format!("K{i}"), "offer_id": "O1", "publisher_id": "P1"}))
        .collect();
    let r = api.ingest(json!({ "events": events })).await;
    assert_eq!(r.status, 202);

    // Accepted means durably queued: kill -9 right away.
    server.kill9();
    assert!(sink.hits_on("/ok/later").is_empty());
    server.restart().await;
    let api = server.client();

    let hits = sink.wait_for("/ok/later", 50, Duration::from_secs(20)).await;
    assert_eq!(hits.len(), 50);
    // Kill again right after delivery and restart: nothing fires twice.
    api.wait_logs("outcome=delivered", 50, WAIT, |_| true).await;
    server.kill9();
    server.restart().await;
    // A delayed sentinel queued after the restart: the firings released at start-up were
    // due before it, so they have been dealt with when it arrives.
    server.client().sentinel(&sink, "after-restart", 1).await;
    let hits = sink.hits_on("/ok/later");
    let mut ids: Vec<&str> = hits.iter().map(|h| h.query.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 50);
    assert_eq!(hits.len(), 50, "a delivered firing fired again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_gracefully_and_restart_keeps_config() {
    if local_only("SIGTERM and restart of the server process and its data folder") {
        return;
    }
    let mut server = Server::fresh(&[]).await;
    let api = server.client();
    let pb = api
        .create_postback(json!({"name": "Keep", "type": "click", "url": "https://example.com/?t={transaction_id}"}))
        .await;
    let status = server.terminate();
    assert!(status.success(), "exit status {status:?}");
    server.restart().await;
    let r = server.client().get(&format!("/postbacks/{pb}")).await;
    assert_eq!(r.status, 200);
}
