//! Fair sending end to end: a slow receiver (a real local server answering after 10 s)
//! with hundreds of firings pending delays only its own firings; a fast receiver on
//! another port gets its firings with about the lag it has with no slow receiver at all.
//! `DESTINATION_CONCURRENCY` bounds the slow receiver's requests in flight.

use crate::common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// The slow receiver's answer time.
const SLOW_MS: u64 = 10_000;

async fn postback(api: &Api, name: &str, offer: &str, url: String) {
    api.create_postback(json!({"name": name, "type": "click", "offers": [offer], "url": url})).await;
}

async fn clicks(api: &Api, offer: &str, tag: &str, n: usize) {
    let events: Vec<_> = (0..n)
        .map(|i| json!({"type": "click", "transaction_id": format!("{tag}-{i}"), "offer_id": offer, "publisher_id": "P"}))
        .collect();
    let r = api.ingest(json!({ "events": events })).await;
    assert_eq!(r.status, 202, "ingest: {}", r.body);
}

/// Ingest `n` clicks for the fast postback in one request and return each firing's lag:
/// from just before the request to its arrival at the fast receiver, sorted.
async fn fast_lags(api: &Api, fast: &Sink, round: &str, n: usize) -> Vec<Duration> {
    let sent = Instant::now();
    clicks(api, "FAST", round, n).await;
    let prefix = "/ok/fast";
    let want = |hits: &[Hit]| hits.iter().filter(|h| h.query.contains(&format!("t={round}-"))).count() >= n;
    let hits = fast.wait_until(prefix, Duration::from_secs(60), want).await;
    let mut lags: Vec<Duration> = hits
        .iter()
        .filter(|h| h.query.contains(&format!("t={round}-")))
        .map(|h| h.at.saturating_duration_since(sent))
        .collect();
    assert_eq!(lags.len(), n, "{round}: only {} of {n} fast firings arrived within 60 s", lags.len());
    lags.sort_unstable();
    lags
}

fn figures(lags: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!("p50 {:.0} ms, max {:.0} ms", ms(lags[lags.len() / 2]), ms(lags[lags.len() - 1]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_with_400_pending_delays_only_its_own_firings() {
    if local_only("DESTINATION_CONCURRENCY is the local server's; on AWS fairness is the fair queue's (docs/aws.md)") {
        return;
    }
    let (slow, fast) = (Sink::start().await, Sink::start().await);
    let dir = tempfile::tempdir().unwrap();
    // The slow receiver answers within the timeout: slow, not failing.
    let server = Server::start(dir.path(), &[("DELIVERY_TIMEOUT_MS", "15000")]).await;
    let api = server.client();
    postback(&api, "Slow", "SLOW", slow.url(&format!("/slow/{SLOW_MS}/pb?t={{transaction_id}}"))).await;
    postback(&api, "Fast", "FAST", fast.url("/ok/fast?t={transaction_id}")).await;

    let alone = fast_lags(&api, &fast, "alone", 30).await;

    let loaded_at = Instant::now();
    clicks(&api, "SLOW", "slow", 400).await;
    let first = slow.wait_for("/slow/", 16, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 16, "the slow receiver gets DESTINATION_CONCURRENCY (16) requests at once");
    let loaded = fast_lags(&api, &fast, "loaded", 30).await;
    let slow_hits = slow.hits_on("/slow/").len();
    let elapsed = loaded_at.elapsed();
    println!(
        "fast receiver, 30 firings: alone {}; with 400 pending for a {SLOW_MS} ms receiver {} \
         (slow receiver: {slow_hits} requests in {:.1} s)",
        figures(&alone),
        figures(&loaded),
        elapsed.as_secs_f64()
    );
    assert!(
        loaded[loaded.len() - 1] < Duration::from_secs(2),
        "the fast receiver waited for the slow one: {}",
        figures(&loaded)
    );
    // Before any slow request answered, no more than the bound were sent to it, though
    // 384 more were due and the fast firings behind them have all gone out.
    if elapsed < Duration::from_millis(SLOW_MS) {
        assert_eq!(slow_hits, 16, "requests in flight to the slow receiver exceed the bound");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_concurrency_sets_the_bound_per_host_and_port() {
    if local_only("DESTINATION_CONCURRENCY is the local server's") {
        return;
    }
    let (slow, fast) = (Sink::start().await, Sink::start().await);
    let dir = tempfile::tempdir().unwrap();
    // Never answers within the timeout (30 s > 5 s): held until the timeout, as a receiver
    // that hangs.
    let server = Server::start(dir.path(), &[("DESTINATION_CONCURRENCY", "3"), ("DELIVERY_TIMEOUT_MS", "5000")]).await;
    let api = server.client();
    postback(&api, "Hangs", "SLOW", slow.url("/slow/30000/pb?t={transaction_id}")).await;
    postback(&api, "Fast", "FAST", fast.url("/ok/fast?t={transaction_id}")).await;
    let started = Instant::now();
    clicks(&api, "SLOW", "slow", 50).await;
    slow.wait_for("/slow/", 3, Duration::from_secs(5)).await;
    let lags = fast_lags(&api, &fast, "fast", 20).await;
    println!("fast receiver beside a hanging one (bound 3): {}", figures(&lags));
    assert!(lags[lags.len() - 1] < Duration::from_secs(2), "{}", figures(&lags));
    // The fast firings went out behind 47 due slow ones; the hanging receiver still has
    // only its 3 (none has timed out yet).
    if started.elapsed() < Duration::from_secs(5) {
        assert_eq!(slow.hits_on("/slow/").len(), 3, "the bound is DESTINATION_CONCURRENCY");
    }
}

#[test]
fn a_bad_destination_concurrency_stops_the_server_at_start_with_the_setting_named() {
    if local_only("DESTINATION_CONCURRENCY is the local server's") {
        return;
    }
    for bad in ["0", "257", "lots"] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_postback-server"))
            .env_clear()
            .env("PORT", "0")
            .env("DATA_DIR", dir.path())
            .env("ADMIN_API_KEY", ADMIN_KEY)
            .env("INGEST_API_KEY", INGEST_KEY)
            .env("DESTINATION_CONCURRENCY", bad)
            .stdin(Stdio::null())
            .output()
            .expect("run the server binary");
        assert!(!out.status.success(), "{bad}: the server started");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("setting DESTINATION_CONCURRENCY"), "{bad}: {stderr}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"), "{bad}: it listened");
    }
}
