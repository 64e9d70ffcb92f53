//! The circuit breaker end to end on the local server: a receiver down for a while,
//! 1,000 conversions during the outage, the receiver back → each delivered exactly once,
//! none failed, and far fewer requests reached the receiver while it was down than
//! there were firings. Also `health`, `resume` and `rate_limit_per_second` through the API.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::*;
use postback::testing::metrics;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
/// The outage test's first breaker cool-down.
const FIRST_COOLDOWN_MS: i64 = 300;

/// The `d=` (delivery id) of a sink hit.
fn delivery_id(hit: &Hit) -> String {
    hit.query.split('&').find_map(|p| p.strip_prefix("d=")).unwrap_or_default().to_string()
}

async fn health(api: &Api, id: &str) -> Value {
    let r = api.get(&format!("/postbacks/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["health"].clone()
}

/// Poll the postback's health until `done` holds (bounded).
async fn wait_health(api: &Api, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let h = health(api, id).await;
        if done(&h) || Instant::now() > deadline {
            return h;
        }
        // Polling the server process's health report.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether a probe failed since the breaker opened (`cooldown_ms` the first cool-down): a
/// failed probe sets the next one a doubled cool-down after it, so further from the
/// opening than the first cool-down; the opening time stays the outage's.
fn a_probe_failed(health: &Value, cooldown_ms: i64) -> bool {
    let at = |k: &str| health[k].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    match (at("opened_at"), at("next_probe_at")) {
        (Some(opened), Some(next)) => (next - opened).num_milliseconds() > cooldown_ms,
        _ => false,
    }
}

async fn conversions(api: &Api, prefix: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"type": "conversion", "transaction_id": format!("{prefix}{i}"), "status": "approved"}))
            .collect();
        let r = api.ingest(json!({"events": events})).await;
        assert_eq!(r.status, 202, "{}", r.body);
    }
}

/// Once the receiver is back: wait until `n` distinct firings under `prefix` were
/// delivered, resuming `id` whenever its breaker is not closed (returns the resumes
/// that closed it). An answer of the outage processed after a resume, or a timeout on
/// a loaded machine, can open it again (two failures in a row, with these tests'
/// threshold of 2), which is the breaker doing its job, not a lost firing.
async fn deliver_all_resuming(api: &Api, sink: &Sink, id: &str, prefix: &str, n: usize) -> (Vec<Hit>, usize) {
    let all_delivered =
        |hits: &[Hit]| hits.iter().filter(|h| h.status == 200).map(delivery_id).collect::<HashSet<_>>().len() >= n;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut resumes = 0;
    loop {
        if health(api, id).await["state"] != "closed" {
            let r = api.post(&format!("/postbacks/{id}/resume"), json!({})).await;
            // 409: the breaker kept changing under the dispatchers' writes; the next goes.
            assert!(r.status == 200 || r.status == 409, "{}: {}", r.status, r.body);
            resumes += usize::from(r.status == 200);
        }
        let hits = sink.wait_until(prefix, Duration::from_millis(500), all_delivered).await;
        if all_delivered(&hits) || Instant::now() > deadline {
            return (hits, resumes);
        }
    }
}

async fn metric(server: &Server, name: &str) -> Option<f64> {
    let text = metrics::scrape(&reqwest::Client::new(), &server.base, ADMIN_KEY).await;
    metrics::series(&text, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_holds_1000_firings_and_the_receivers_return_delivers_each_exactly_once() {
    let sink = Sink::start().await;
    sink.set_down("aff", true);
    let dir = tempfile::tempdir().unwrap();
    // A short first cool-down, and attempts enough that no probe runs out of them.
    let cooldown = FIRST_COOLDOWN_MS.to_string();
    let env = [("BREAKER_FAILURE_THRESHOLD", "5"), ("BREAKER_COOLDOWN_MS", &cooldown), ("RETRY_MAX_ATTEMPTS", "20")];
    let server = Server::start(dir.path(), &env).await;
    let api = server.client();
    let id = api
        .create_postback(json!({"name": "Aff", "type": "conversion",
            "url": sink.url("/switch/aff/pb?t={transaction_id}&d={delivery_id}")}))
        .await;

    // The first conversions of the outage open the breaker...
    conversions(&api, "A", 10).await;
    let h = wait_health(&api, &id, |h| h["state"] != "closed").await;
    assert_ne!(h["state"], "closed", "the breaker opened: {h}");
    assert!(h["opened_at"].is_string() && h["next_probe_at"].is_string(), "{h}");
    if shape() == Shape::Local {
        // (The functions report metrics as EMF, not on /metrics.)
        assert_eq!(metric(&server, "postback_breakers_open").await, Some(1.0));
    }
    // ...and the 1,000 that follow are held.
    conversions(&api, "B", 1_000).await;
    let h = wait_health(&api, &id, |h| h["held"].as_u64().unwrap_or(0) >= 1_000).await;
    assert!(h["held"].as_u64().unwrap() >= 1_000, "held: {h}");
    // Once a probe has failed (re-opened: the cool-down doubles), bring it back.
    let h = wait_health(&api, &id, |h| a_probe_failed(h, FIRST_COOLDOWN_MS)).await;
    assert!(a_probe_failed(&h, FIRST_COOLDOWN_MS), "a probe failed while the receiver was down: {h}");
    let down_hits = sink.hits_on("/switch/aff").len();
    sink.set_down("aff", false);
    let up_at = Instant::now();

    let all = 1_010;
    // The AWS shape moves 1,010 firings through the emulators' queue and tables, five
    // batches at a time: minutes on a busy 2-core machine.
    let within = Duration::from_secs(if shape() == Shape::Aws { 300 } else { 60 });
    let hits = sink
        .wait_until("/switch/aff", within, |hits| {
            hits.iter().filter(|h| h.status == 200).map(delivery_id).collect::<HashSet<_>>().len() >= all
        })
        .await;
    let delivered: Vec<&Hit> = hits.iter().filter(|h| h.status == 200).collect();
    let unique: HashSet<String> = delivered.iter().map(|h| delivery_id(h)).collect();
    assert_eq!(unique.len(), all, "every firing delivered");
    api.sentinel(&sink, "after-outage", 0).await;
    let delivered_after: Vec<Hit> = sink.hits_on("/switch/aff").into_iter().filter(|h| h.status == 200).collect();
    assert_eq!(delivered_after.len(), all, "no firing delivered twice");
    assert!(
        down_hits * 10 < all,
        "far fewer requests reached the receiver while it was down ({down_hits}) than there were firings ({all})"
    );
    let failed = api.logs(&format!("postback_id={id}&outcome=failed")).await;
    assert!(failed.is_empty(), "none failed: {failed:?}");
    let h = health(&api, &id).await;
    assert_eq!(
        h,
        json!({"state": "closed", "consecutive_failures": 0, "opened_at": null, "next_probe_at": null, "held": 0})
    );
    if shape() == Shape::Local {
        assert_eq!(metric(&server, "postback_breakers_open").await, Some(0.0));
    }

    let first = delivered_after.iter().map(|h| h.at).min().unwrap();
    let last = delivered_after.iter().map(|h| h.at).max().unwrap();
    println!(
        "breaker e2e: {down_hits} requests reached the receiver during the outage for {all} firings; \
         {held} held firings: probe success to last delivery {ms} ms (receiver back to last delivery {back} ms, \
         the wait for the next probe included)",
        held = all - 10,
        ms = (last - first).as_millis(),
        back = (last - up_at).as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_resume_and_rate_limit_through_the_api() {
    let sink = Sink::start().await;
    sink.set_down("crm", true);
    let dir = tempfile::tempdir().unwrap();
    // A long cool-down: only resume closes it within the test. Retries 1 s apart: the two
    // firings that failed before the breaker opened come due (and are held) at once, not
    // up to 30 s later, at the end of the wait for their delivery.
    let env = [
        ("BREAKER_FAILURE_THRESHOLD", "2"),
        ("BREAKER_COOLDOWN_MS", "600000"),
        ("RETRY_MAX_ATTEMPTS", "20"),
        ("RETRY_BASE_DELAY_MS", "1000"),
        // A loaded test machine answers late; a timeout counts towards the breaker.
        ("DELIVERY_TIMEOUT_MS", "10000"),
    ];
    let server = Server::start(dir.path(), &env).await;
    let api = server.client();
    for bad in [json!(0), json!(10_001), json!(2.5), json!("5")] {
        let r = api
            .post(
                "/postbacks",
                json!({"name": "Bad", "type": "click", "url": sink.url("/ok/x"), "rate_limit_per_second": bad}),
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert_eq!(r.body["error"]["field"], "rate_limit_per_second", "{}", r.body);
    }
    let listed = api.get("/postbacks").await;
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 0, "nothing half-written");

    let id = api
        .create_postback(json!({"name": "CRM", "type": "conversion", "rate_limit_per_second": 100,
            "url": sink.url("/switch/crm/lead?t={transaction_id}&d={delivery_id}")}))
        .await;
    let got = api.get(&format!("/postbacks/{id}")).await.body;
    assert_eq!(got["rate_limit_per_second"], 100);
    assert_eq!(got["health"]["state"], "closed");
    // A client may PUT back what it got, health included (ignored: server-set).
    let mut back = got.clone();
    back["health"] = json!({"state": "open", "held": 99});
    let r = api.admin(reqwest::Method::PUT, &format!("/postbacks/{id}"), Some(back)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["health"]["state"], "closed");

    conversions(&api, "C", 20).await;
    let h = wait_health(&api, &id, |h| h["held"].as_u64().unwrap_or(0) >= 17).await;
    assert_eq!(h["state"], "open", "{h}");
    let listed = api.get("/postbacks").await;
    assert_eq!(listed.body["items"][0]["health"]["state"], "open", "the list shows health: {}", listed.body);

    sink.set_down("crm", false);
    assert_eq!(api.post("/postbacks/pb_unknown/resume", json!({})).await.status, 404);
    let unauthorized = api.raw(api.http.post(format!("{}/postbacks/{id}/resume", server.base))).await;
    assert_eq!(unauthorized.status, 401);
    let resumed_at = Instant::now();
    let r = api.post(&format!("/postbacks/{id}/resume"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["health"]["state"], "closed");
    assert_eq!(r.body["health"]["held"], 0);
    let again = api.post(&format!("/postbacks/{id}/resume"), json!({})).await;
    assert_eq!((again.status, again.body["health"]["state"].as_str()), (200, Some("closed")), "idempotent");

    let (hits, _) = deliver_all_resuming(&api, &sink, &id, "/switch/crm", 20).await;
    let delivered: Vec<&Hit> = hits.iter().filter(|h| h.status == 200).collect();
    assert_eq!(delivered.iter().map(|h| delivery_id(h)).collect::<HashSet<_>>().len(), 20);
    let last = delivered.iter().map(|h| h.at).max().unwrap();
    println!("resume: {} held firings delivered {} ms after the resume", h["held"], (last - resumed_at).as_millis());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn held_firings_survive_kill9_and_are_delivered_exactly_once_after_restart() {
    if local_only("kill -9 and restart of the server process") {
        return;
    }
    let sink = Sink::start().await;
    sink.set_down("k9", true);
    let dir = tempfile::tempdir().unwrap();
    let env = [("BREAKER_FAILURE_THRESHOLD", "3"), ("BREAKER_COOLDOWN_MS", "2000"), ("RETRY_MAX_ATTEMPTS", "20")];
    let mut server = Server::start(dir.path(), &env).await;
    let api = server.client();
    let id = api
        .create_postback(json!({"name": "K9", "type": "conversion",
            "url": sink.url("/switch/k9/pb?t={transaction_id}&d={delivery_id}")}))
        .await;
    conversions(&api, "K", 200).await;
    let h = wait_health(&api, &id, |h| h["held"].as_u64().unwrap_or(0) >= 150).await;
    assert!(h["held"].as_u64().unwrap() >= 150, "{h}");
    server.kill9();
    server.restart().await;
    let api = server.client();
    let h = health(&api, &id).await;
    assert_ne!(h["state"], "closed", "the breaker survived the restart: {h}");
    assert!(h["held"].as_u64().unwrap() >= 150, "the held firings survived: {h}");
    sink.set_down("k9", false);
    let hits = sink
        .wait_until("/switch/k9", Duration::from_secs(60), |hits| {
            hits.iter().filter(|h| h.status == 200).map(delivery_id).collect::<HashSet<_>>().len() >= 200
        })
        .await;
    let ok: Vec<&Hit> = hits.iter().filter(|h| h.status == 200).collect();
    assert_eq!(ok.iter().map(|h| delivery_id(h)).collect::<HashSet<_>>().len(), 200, "all delivered");
    api.sentinel(&sink, "after-kill9", 0).await;
    let ok_after = sink.hits_on("/switch/k9").into_iter().filter(|h| h.status == 200).count();
    assert_eq!(ok_after, 200, "each exactly once");
    assert!(api.logs(&format!("postback_id={id}&outcome=failed")).await.is_empty());
}

/// Resumes racing the dispatcher's holds: while the receiver is down, the postback is
/// resumed every 100 ms, so each resume releases held firings while dispatchers are
/// holding others (the breaker re-opens after two failures) and while the previous
/// release may still run. Once the receiver is back and a last resume goes, every
/// firing arrives exactly once and none failed: a release meeting a firing between its
/// hold and its ack, or held anew before the release unholds it, loses nothing, and two
/// releases at once do not both queue it (on SQS both copies would be sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_racing_holds_lose_nothing() {
    let sink = Sink::start().await;
    sink.set_down("race", true);
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("BREAKER_FAILURE_THRESHOLD", "2"),
        ("BREAKER_COOLDOWN_MS", "600000"),
        ("RETRY_MAX_ATTEMPTS", "20"),
        ("RETRY_BASE_DELAY_MS", "200"),
        // A loaded test machine answers late; a timeout counts towards the breaker.
        ("DELIVERY_TIMEOUT_MS", "10000"),
    ];
    let server = Server::start(dir.path(), &env).await;
    let api = server.client();
    let id = api
        .create_postback(json!({"name": "Race", "type": "conversion",
            "url": sink.url("/switch/race/pb?t={transaction_id}&d={delivery_id}")}))
        .await;
    const FIRINGS: usize = 200;
    conversions(&api, "R", FIRINGS).await;
    let mut released = 0;
    for _ in 0..20 {
        let r = api.post(&format!("/postbacks/{id}/resume"), json!({})).await;
        // 409: the breaker kept changing under the dispatchers' writes; the next goes.
        assert!(r.status == 200 || r.status == 409, "{}: {}", r.status, r.body);
        released += usize::from(r.status == 200);
        // The pace of the resumes: each one meets the holds the last one's failures caused.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sink.set_down("race", false);
    let (hits, resumes) = deliver_all_resuming(&api, &sink, &id, "/switch/race", FIRINGS).await;
    released += resumes;
    let delivered: HashSet<String> = hits.iter().filter(|h| h.status == 200).map(delivery_id).collect();
    let down = hits.iter().filter(|h| h.status != 200).count();
    if delivered.len() != FIRINGS {
        let h = health(&api, &id).await;
        let entries = api.logs(&format!("postback_id={id}")).await;
        let missing: Vec<&Value> =
            entries.iter().filter(|e| !delivered.contains(e["delivery_id"].as_str().unwrap_or_default())).collect();
        let ids: HashSet<&str> = missing.iter().filter_map(|e| e["delivery_id"].as_str()).collect();
        let last: Vec<String> = missing
            .iter()
            .take(6)
            .map(|e| {
                format!("{} {} {} {} {}", e["delivery_id"], e["attempt"], e["outcome"], e["status_code"], e["error"])
            })
            .collect();
        panic!("after {released} resumes, {down} failed requests: {} of {FIRINGS} delivered; health {h}; {} undelivered ids in the log; newest entries: {last:?}", delivered.len(), ids.len());
    }
    api.sentinel(&sink, "after-race", 0).await;
    let ok = sink.hits_on("/switch/race").into_iter().filter(|h| h.status == 200).count();
    assert_eq!(ok, FIRINGS, "each exactly once");
    assert!(api.logs(&format!("postback_id={id}&outcome=failed")).await.is_empty(), "none failed");
    println!("resume race: {released} resumes, {down} requests while down, {FIRINGS} delivered once each");
}
