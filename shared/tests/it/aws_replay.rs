//! `POST /logs/replay` of many failed firings through the config-api function against
//! the emulators (DynamoDB Local, ministack SQS). The suite replays 1,000 (every firing
//! replayed once, nothing queued twice); the measurement replays the call's maximum,
//! 10,000, and checks it answers within API Gateway's 29 s — a timing, so it is not part
//! of the suite, where a loaded machine would make it fail for nothing (`docs/aws.md`,
//! *Replay*). The log table is seeded directly through the adapter.
//!
//! Measure: `scripts/emulators.sh run cargo nextest run -p postback --all-features --test it aws_replay --run-ignored all --no-capture`.
#![cfg(all(feature = "aws", feature = "testing"))]

use crate::aws_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_support::*;
use axum::http::StatusCode;
use chrono::Utc;
use futures::future::try_join_all;
use postback::adapters::aws::AwsAdapters;
use postback::adapters::system::SystemClock;
use postback::domain::log::{LogEntry, Outcome};
use postback::entry::http::RouteSet;
use postback::ports::LogStore;
use postback::testing::fixtures;
use serde_json::json;

/// API Gateway's integration timeout.
const API_GATEWAY_LIMIT: Duration = Duration::from_secs(29);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_1000_failed_firings_replays_each_once() {
    replay_failed_firings(1_000, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run alone with --run-ignored (see the module's doc)"]
async fn a_replay_of_10000_failed_firings_answers_within_29_s() {
    replay_failed_firings(10_000, Some(API_GATEWAY_LIMIT)).await;
}

async fn replay_failed_firings(firings: usize, within: Option<Duration>) {
    require_emulators!();
    let d = Deployment::new("replay").await;
    let adapters = AwsAdapters::new(&d.clients, &d.names, chrono::Duration::days(30), Arc::new(SystemClock));
    let pb = "pb_replay_load";
    let from = Utc::now() - chrono::Duration::minutes(5);
    let entries: Vec<LogEntry> = (0..firings)
        .map(|i| {
            let mut firing = fixtures::firing(&format!("d_load_{i:05}"), from);
            firing.postback_id = pb.to_string();
            let mut entry = fixtures::log_entry(&firing, Outcome::Failed);
            entry.fired_at = from + chrono::Duration::milliseconds(i as i64 * 10);
            entry
        })
        .collect();
    let seeding = Instant::now();
    for wave in entries.chunks(2_000) {
        try_join_all(wave.chunks(250).map(|chunk| adapters.logs.append(chunk))).await.unwrap();
    }
    println!("seeded {firings} failed entries in {:.1} s", seeding.elapsed().as_secs_f64());

    let config_api = d.config_api.router(RouteSet::Admin);
    let body = json!({"from": from.to_rfc3339(), "postback_id": pb}).to_string();
    let headers = [("x-api-key", ADMIN_KEY), ("content-type", "application/json")];
    let event = apigw_event("POST", "/logs/replay", "", &headers, Some(&body));

    let started = Instant::now();
    let reply = invoke(&config_api, &event).await;
    let took = started.elapsed();
    println!("POST /logs/replay of {firings} failed firings: {:.2} s ({:?})", took.as_secs_f64(), reply.body);
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body, json!({"matched": firings, "replayed": firings, "dry_run": false, "next_cursor": null}));
    if let Some(limit) = within {
        assert!(took < limit, "took {took:?}, over API Gateway's {limit:?}");
    }
    assert!(peek_count(&d).await > 0, "the firings are on the queue");

    // Called again before any replayed attempt ran: nothing is queued twice.
    let started = Instant::now();
    let again = invoke(&config_api, &event).await;
    println!("the same replay again: {:.2} s ({:?})", started.elapsed().as_secs_f64(), again.body);
    assert_eq!(again.body, json!({"matched": 0, "replayed": 0, "dry_run": false, "next_cursor": null}));
}
