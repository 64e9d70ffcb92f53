//! Crash safety by killing the server process (`kill -9`) at arbitrary points: under
//! ingest load and with deliveries in flight.

use crate::common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_under_load_loses_no_accepted_event_and_never_refires_a_delivered_one() {
    if local_only(
        "kill -9 of the server process; on AWS a dead instance returns its batch to the queue (aws_functions tests)",
    ) {
        return;
    }
    let sink = Sink::start().await;
    let mut server = Server::fresh(&[]).await;
    let api = server.client();
    // A slow receiver keeps deliveries in flight when the kill lands.
    api.create_postback(
        json!({"name": "Slow", "type": "click", "url": sink.url("/slow/150/k?t={transaction_id}&d={delivery_id}")}),
    )
    .await;

    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    for round in 0..3 {
        let api = server.client();
        let mut senders = Vec::new();
        for w in 0..8 {
            let api = api.clone();
            let accepted = accepted.clone();
            senders.push(tokio::spawn(async move {
                for i in 0.. {
                    let tx = format!("R{round}-W{w}-{i}");
                    let req =
                        api.http.post(format!("{}/events", api.base)).header("x-api-key", INGEST_KEY).json(
                            &json!({"type": "click", "transaction_id": tx, "offer_id": "O", "publisher_id": "P"}),
                        );
                    match req.send().await {
                        Ok(r) if r.status().as_u16() == 202 => accepted.lock().unwrap().push(tx),
                        _ => return, // the server died under us: this one was not accepted
                    }
                }
            }));
        }
        // Kill once this round has put real load on the server (at least 400 ms and 60
        // accepted events), not after a fixed time: on a loaded machine a fixed time may
        // see almost no traffic.
        let round_start = accepted.lock().unwrap().len();
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(400)
            || (accepted.lock().unwrap().len() - round_start < 60 && started.elapsed() < Duration::from_secs(20))
        {
            // Real traffic building up on the server process (see above).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        server.kill9();
        for s in senders {
            let _ = s.await;
        }
        server.restart().await;
    }

    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() > 100, "too little load to mean anything: {}", accepted.len());
    // Firings in flight at a kill are sent again after restart, so the sink may see more
    // hits than accepted events before every event was delivered: wait for each one.
    let per_tx = |hits: &[Hit]| {
        let mut per_tx: HashMap<String, usize> = HashMap::new();
        for h in hits {
            let tx = h.query.split('&').next().unwrap().trim_start_matches("t=").to_string();
            *per_tx.entry(tx).or_default() += 1;
        }
        per_tx
    };
    let hits = sink
        .wait_until("/slow/150/k", Duration::from_secs(60), |hits| {
            let seen = per_tx(hits);
            accepted.iter().all(|t| seen.contains_key(t))
        })
        .await;
    let per_tx = per_tx(&hits);
    let lost: Vec<&String> = accepted.iter().filter(|t| !per_tx.contains_key(*t)).collect();
    assert!(lost.is_empty(), "{} accepted events never fired, e.g. {:?}", lost.len(), &lost[..lost.len().min(5)]);

    // At-least-once: a firing in flight at a kill may be sent again after restart (same
    // delivery_id), but a firing recorded as delivered is never sent again.
    let api = server.client();
    let delivered = api.wait_logs("outcome=delivered", accepted.len(), Duration::from_secs(30), |_| true).await;
    let mut per_delivery: HashMap<String, usize> = HashMap::new();
    for e in &delivered {
        *per_delivery.entry(e["delivery_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert!(per_delivery.values().all(|n| *n == 1), "a delivery id was logged delivered twice");
    let resent: usize = per_tx.values().map(|n| n - 1).sum();
    eprintln!("accepted {} events over 3 kills; {} re-sent after a kill mid-send", accepted.len(), resent);
    assert!(resent <= 3 * 256, "more re-sends than could have been in flight: {resent}");

    // After everything settled, one more kill and restart sends nothing again.
    // Counted per delivery id that was logged delivered: an event whose 202 was lost when
    // the server died is not in `accepted` but may still be queued, and may rightly be
    // delivered for the first time after this restart.
    let hits_of_delivered = || {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for h in sink.hits_on("/slow/150/k") {
            let d = h.query.split('&').find_map(|kv| kv.strip_prefix("d=")).unwrap_or("").to_string();
            if per_delivery.contains_key(&d) {
                *counts.entry(d).or_default() += 1;
            }
        }
        counts
    };
    let before = hits_of_delivered();
    server.kill9();
    server.restart().await;
    server.client().sentinel(&sink, "after-settled-restart", 1).await;
    assert_eq!(hits_of_delivered(), before, "a delivered firing was fired again after restart");
}

/// A status flip with kills: conversions approved and delivered (to one receiver; another
/// fails them all, a third still waits on a delay), then rejected while the server is
/// killed (mid-ingest of the rejections, and with reversals in flight) and restarted.
/// Every delivered conversion gets its reversal, logged delivered exactly once; a
/// receiver that never got a conversion gets no reversal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_during_a_status_flip_reverses_each_delivered_conversion_exactly_once() {
    if local_only("kill -9 and restart of the server process") {
        return;
    }
    const N: usize = 150;
    let sink = Sink::start().await;
    let mut server = Server::fresh(&[]).await;
    let api = server.client();
    let with_reversal = |name: &str, url: String, reversal: String, delay: u32| {
        json!({"name": name, "type": "conversion", "delay_seconds": delay, "url": url,
            "reversal": {"method": "POST", "url": reversal, "body": "{\"original\": \"{original_delivery_id}\"}"}})
    };
    api.create_postback(with_reversal(
        "Delivered",
        sink.url("/ok/conv?t={transaction_id}&d={delivery_id}"),
        sink.url("/slow/40/rev?t={transaction_id}&d={delivery_id}&o={original_delivery_id}"),
        0,
    ))
    .await;
    api.create_postback(with_reversal(
        "Failing",
        sink.url("/fail/1000000/conv?t={transaction_id}"),
        sink.url("/ok/rev-failing?t={transaction_id}"),
        0,
    ))
    .await;
    api.create_postback(with_reversal(
        "Waiting",
        sink.url("/ok/conv-waiting?t={transaction_id}"),
        sink.url("/ok/rev-waiting?t={transaction_id}"),
        3600,
    ))
    .await;
    let txids: Vec<String> = (0..N).map(|i| format!("F{i}")).collect();
    for chunk in txids.chunks(50) {
        let events: Vec<_> = chunk
            .iter()
            .map(|t| json!({"type": "conversion", "transaction_id": t, "status": "approved", "payout": "3.10"}))
            .collect();
        assert_eq!(api.ingest(json!({"events": events})).await.status, 202);
    }
    let delivered =
        api.wait_logs("outcome=delivered&postback_name=Delivered", N, Duration::from_secs(60), |_| true).await;
    assert_eq!(delivered.len(), N, "every approved conversion delivered to the first receiver");
    let failed = api.wait_logs("outcome=failed&postback_name=Failing", N, Duration::from_secs(60), |_| true).await;
    assert_eq!(failed.len(), N, "and failed at the second");
    let original_of: HashMap<String, String> = delivered
        .iter()
        .map(|e| (e["transaction_id"].as_str().unwrap().to_string(), e["delivery_id"].as_str().unwrap().to_string()))
        .collect();

    // The rejections, from 4 trackers; the first kill lands mid-way.
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut senders = Vec::new();
    for w in 0..4 {
        let api = server.client();
        let accepted = accepted.clone();
        let mine: Vec<String> = txids.iter().skip(w).step_by(4).cloned().collect();
        senders.push(tokio::spawn(async move {
            for tx in mine {
                let r = api
                    .http
                    .post(format!("{}/events", api.base))
                    .header("x-api-key", INGEST_KEY)
                    .json(&json!({"type": "conversion", "transaction_id": tx, "status": "rejected", "rejection_reason": "chargeback"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().as_u16() == 202 => accepted.lock().unwrap().push(tx),
                    _ => return,
                }
            }
        }));
    }
    let started = std::time::Instant::now();
    while accepted.lock().unwrap().len() < N / 3 && started.elapsed() < Duration::from_secs(20) {
        // Polling the senders' count of accepted events (real requests to the server).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9();
    for s in senders {
        let _ = s.await;
    }
    let accepted_before_kill = accepted.lock().unwrap().len();
    server.restart().await;
    // The trackers retry what got no 2xx, and repeat the rest (duplicates: nothing new).
    let api = server.client();
    for chunk in txids.chunks(50) {
        let events: Vec<_> = chunk
            .iter()
            .map(|t| json!({"type": "conversion", "transaction_id": t, "status": "rejected", "rejection_reason": "chargeback"}))
            .collect();
        assert_eq!(api.ingest(json!({"events": events})).await.status, 202);
    }
    // The second kill: with reversals in flight to the slow receiver.
    sink.wait_for("/slow/40/rev", N / 4, Duration::from_secs(30)).await;
    server.kill9();
    server.restart().await;
    let api = server.client();

    let per_tx = |hits: &[Hit]| {
        let mut per_tx: HashMap<String, Vec<String>> = HashMap::new();
        for h in hits {
            let mut t = String::new();
            let mut o = String::new();
            for kv in h.query.split('&') {
                if let Some(v) = kv.strip_prefix("t=") {
                    t = v.to_string();
                }
                if let Some(v) = kv.strip_prefix("o=") {
                    o = v.to_string();
                }
            }
            per_tx.entry(t).or_default().push(o);
        }
        per_tx
    };
    let hits = sink
        .wait_until("/slow/40/rev", Duration::from_secs(60), |hits| {
            let seen = per_tx(hits);
            txids.iter().all(|t| seen.contains_key(t))
        })
        .await;
    let seen = per_tx(&hits);
    let missing: Vec<&String> = txids.iter().filter(|t| !seen.contains_key(*t)).collect();
    assert!(
        missing.is_empty(),
        "{} delivered conversions got no reversal, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (tx, originals) in &seen {
        assert!(
            originals.iter().all(|o| Some(o) == original_of.get(tx)),
            "{tx}: a reversal names its original delivery"
        );
    }
    // Exactly one reversal per delivered conversion: one delivery id each, logged
    // delivered once (a kill mid-send may re-send it with the same id: at least once).
    let reversals = api
        .wait_logs("outcome=delivered&postback_name=Delivered&url.contains=/rev", N, Duration::from_secs(30), |_| true)
        .await;
    let mut per_tx_logged: HashMap<String, usize> = HashMap::new();
    for e in &reversals {
        assert!(e["reversal_of"].is_string(), "a reversal entry says what it reverses: {e}");
        *per_tx_logged.entry(e["transaction_id"].as_str().unwrap().to_string()).or_default() += 1;
    }
    assert_eq!(per_tx_logged.len(), N, "one reversal per delivered conversion");
    assert!(per_tx_logged.values().all(|n| *n == 1), "a reversal was delivered twice");

    // Nothing more after everything settled (another kill included), and nothing ever to
    // the receivers that did not get the conversion.
    server.client().sentinel(&sink, "after-flip", 1).await;
    let settled = sink.hits_on("/slow/40/rev").len();
    let resent = settled - N;
    eprintln!(
        "status flip: {accepted_before_kill} rejections accepted before the first kill; \
         {resent} reversals re-sent after a kill mid-send"
    );
    assert!(resent <= 2 * 16, "more re-sends than could have been in flight: {resent}");
    server.kill9();
    server.restart().await;
    server.client().sentinel(&sink, "after-flip-restart", 1).await;
    assert_eq!(sink.hits_on("/slow/40/rev").len(), settled, "no reversal was sent again after a restart");
    assert_eq!(sink.hits_on("/ok/rev-failing").len(), 0, "a failed firing has no reversal");
    assert_eq!(sink.hits_on("/ok/rev-waiting").len(), 0, "a waiting firing has no reversal");
    assert_eq!(sink.hits_on("/ok/conv-waiting").len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_dir_is_refused() {
    if local_only("DATA_DIR and its lock are the local server's") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _first = Server::start(dir.path(), &[]).await;
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_postback-server"))
        .env("PORT", "0")
        .env("DATA_DIR", dir.path())
        .env("ADMIN_API_KEY", ADMIN_KEY)
        .env("INGEST_API_KEY", INGEST_KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success());
}
