//! Load generator for the local server, on loopback only, bounded in count and time.
//!
//! It starts its own HTTP sink, creates a click postback pointing at it, then measures:
//! 1. baseline: `GET /health` over the same keep-alive connections (the HTTP floor);
//! 2. single events: `POST /events` one click per request, C concurrent connections;
//! 3. batches: `POST /events` with 500 clicks per request;
//! 4. delivery: firings delivered to the sink (and logged) per second, against a
//!    baseline of the sink hit directly by this process at the same concurrency;
//! 5. end to end: single events at concurrency C where each fires one GET to a sink
//!    that records `delivery_id`s: events/s, ingest p50/p99, deliveries/s from the first
//!    send to the last unique id, exactly once (unique ids = events, no duplicates), and
//!    the server's CPU (user + system from `/proc/<pid>/stat`, `--server-pid`) per event;
//! 6. the dispatcher alone: N events ingested in batches for a postback with
//!    `delay_seconds`, so every firing is queued before the first is due; then
//!    deliveries/s and CPU per delivery with no ingest running;
//! 7. batches of 500 while deliveries run (each event fires): p50/p99 per request;
//! 8. fair sending: a fast receiver's p99 delivery lag (one firing every 10 ms) with
//!    1,000 firings pending for a receiver that never answers (held until the server's
//!    DELIVERY_TIMEOUT_MS), as a ratio to the same run with no such receiver.
//!
//! Usage (the server must run with ALLOW_PRIVATE_TARGETS=true and known keys):
//!   cargo run --release --example loadgen -- --base http://127.0.0.1:3000 \
//!       --admin-key ... --ingest-key ... [--requests 20000] [--concurrency 32]
//! `scripts/load.sh` starts a server in a temp dir and runs this for you.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and tools: a panic is the failure report

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::any;
use axum::Router;
use postback::testing::metrics;
use serde_json::json;

struct Args {
    base: String,
    admin_key: String,
    ingest_key: String,
    requests: usize,
    concurrency: usize,
    batches: usize,
    /// The server's pid, for its CPU time (Linux `/proc`); without it no CPU rows.
    server_pid: Option<u32>,
    /// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`).
    clk_tck: f64,
}

fn parse_args() -> Args {
    let mut a = Args {
        base: "http://127.0.0.1:3000".into(),
        admin_key: String::new(),
        ingest_key: String::new(),
        requests: 20_000,
        concurrency: 32,
        batches: 200,
        server_pid: None,
        clk_tck: 100.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_default();
        match flag.as_str() {
            "--base" => a.base = value,
            "--admin-key" => a.admin_key = value,
            "--ingest-key" => a.ingest_key = value,
            "--requests" => a.requests = value.parse().expect("--requests N"),
            "--concurrency" => a.concurrency = value.parse().expect("--concurrency N"),
            "--batches" => a.batches = value.parse().expect("--batches N"),
            "--server-pid" => a.server_pid = Some(value.parse().expect("--server-pid PID")),
            "--clk-tck" => a.clk_tck = value.parse().expect("--clk-tck N"),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(a.base.starts_with("http://127.") || a.base.starts_with("http://localhost"), "loopback only");
    a
}

struct Run {
    requests: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Run {
    fn rate(&self, per_request: usize) -> f64 {
        (self.requests * per_request) as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        let mut l = self.latencies_us.clone();
        l.sort_unstable();
        let i = ((l.len() as f64 - 1.0) * p).round() as usize;
        l.get(i).copied().unwrap_or(0) as f64 / 1000.0
    }
}

/// Run `total` requests built by `make(i)` over `concurrency` workers, each with its own
/// keep-alive connection.
async fn drive<F>(total: usize, concurrency: usize, make: F) -> Run
where
    F: Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let make = make.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().pool_max_idle_per_host(1).build().unwrap();
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= total {
                    return lat;
                }
                let t = Instant::now();
                let resp = make(&client, i).send().await.expect("request failed");
                let status = resp.status();
                let _ = resp.bytes().await;
                assert!(status.is_success(), "status {status}");
                lat.push(t.elapsed().as_micros() as u64);
            }
        }));
    }
    let mut latencies_us = Vec::with_capacity(total);
    for w in workers {
        latencies_us.extend(w.await.unwrap());
    }
    Run { requests: total, elapsed: started.elapsed(), latencies_us }
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let hits = Arc::new(AtomicU64::new(0));
    let sink_hits = hits.clone();
    let sink = Router::new().route(
        "/{*p}",
        any(move || {
            let h = sink_hits.clone();
            async move {
                h.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, sink).await.unwrap() });

    let admin = reqwest::Client::new();
    let base = args.base.clone();
    let created = admin
        .post(format!("{base}/postbacks"))
        .header("x-api-key", &args.admin_key)
        .json(&json!({"name": "load", "type": "click", "offers": ["LOAD"],
                      "url": format!("http://{sink_addr}/pb?t={{transaction_id}}&d={{delivery_id}}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "create postback: {}", created.text().await.unwrap_or_default());
    let run_id = uuid::Uuid::new_v4().simple().to_string();

    // 1. Baseline: the HTTP floor.
    let b = base.clone();
    let health = drive(args.requests, args.concurrency, move |c, _| c.get(format!("{b}/health"))).await;

    // 2. Single events (no postback in scope: pure ingest cost).
    let cpu_before = cpu_seconds(&args);
    let (b, key, rid) = (base.clone(), args.ingest_key.clone(), run_id.clone());
    let single = drive(args.requests, args.concurrency, move |c, i| {
        c.post(format!("{b}/events")).header("x-api-key", &key).json(
            &json!({"type": "click", "transaction_id": format!("s-{rid}-{i}"), "offer_id": "NOPE", "publisher_id": "P"}),
        )
    })
    .await;
    let single_cpu = cpu_delta(cpu_before, cpu_seconds(&args));

    // 3. Batches of 500.
    let (b, key, rid) = (base.clone(), args.ingest_key.clone(), run_id.clone());
    let batches = drive(args.batches, args.concurrency.min(8), move |c, i| {
        let events: Vec<_> = (0..500)
            .map(|j| json!({"type": "click", "transaction_id": format!("b-{rid}-{i}-{j}"), "offer_id": "NOPE", "publisher_id": "P"}))
            .collect();
        c.post(format!("{b}/events")).header("x-api-key", &key).json(&json!({ "events": events }))
    })
    .await;

    // 4a. Delivery baseline: this process hitting the sink directly.
    let direct =
        drive(args.requests, args.concurrency, move |c, i| c.get(format!("http://{sink_addr}/direct?i={i}"))).await;
    hits.store(0, Ordering::Relaxed);

    // 4b. Firings: ingest in batches, time until the sink saw them all.
    let firings = args.requests;
    let started = Instant::now();
    let (b, key, rid) = (base.clone(), args.ingest_key.clone(), run_id.clone());
    drive(firings.div_ceil(500), 4, move |c, i| {
        let events: Vec<_> = (0..500)
            .map(|j| json!({"type": "click", "transaction_id": format!("f-{rid}-{i}-{j}"), "offer_id": "LOAD", "publisher_id": "P"}))
            .collect();
        c.post(format!("{b}/events")).header("x-api-key", &key).json(&json!({ "events": events }))
    })
    .await;
    let want = (firings.div_ceil(500) * 500) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while hits.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = hits.load(Ordering::Relaxed);
    let fire_elapsed = started.elapsed();
    let fire_rate = delivered as f64 / fire_elapsed.as_secs_f64();

    // 5. End to end: single events, each firing one GET to a sink that records delivery ids.
    let e2e_sink = IdSink::start().await;
    create(
        &admin,
        &base,
        &args.admin_key,
        json!({"name": "e2e", "type": "click", "offers": ["E2E"],
        "url": format!("http://{}/e?d={{delivery_id}}", e2e_sink.addr)}),
    )
    .await;
    let writer_before = writer_figures(&admin, &args).await;
    let cpu_before = cpu_seconds(&args);
    let (b, key, rid) = (base.clone(), args.ingest_key.clone(), run_id.clone());
    let e2e = drive(args.requests, args.concurrency, move |c, i| {
        c.post(format!("{b}/events")).header("x-api-key", &key).json(
            &json!({"type": "click", "transaction_id": format!("e-{rid}-{i}"), "offer_id": "E2E", "publisher_id": "P"}),
        )
    })
    .await;
    e2e_sink.wait_for(args.requests).await;
    let e2e_cpu = cpu_delta(cpu_before, cpu_seconds(&args));
    let writer_after = writer_figures(&admin, &args).await;

    // 6. The dispatcher alone: every firing queued (due DISPATCH_DELAY_S later) before the
    // first is due, so the timed part runs no ingest.
    let disp_sink = IdSink::start().await;
    create(
        &admin,
        &base,
        &args.admin_key,
        json!({"name": "dispatch", "type": "click", "offers": ["DISP"],
        "delay_seconds": DISPATCH_DELAY_S, "url": format!("http://{}/d?d={{delivery_id}}", disp_sink.addr)}),
    )
    .await;
    let queued = args.requests.div_ceil(500) * 500;
    let ingest_started = Instant::now();
    let (b, key, rid) = (base.clone(), args.ingest_key.clone(), run_id.clone());
    drive(queued / 500, 4, move |c, i| {
        let events: Vec<_> = (0..500)
            .map(|j| json!({"type": "click", "transaction_id": format!("q-{rid}-{i}-{j}"), "offer_id": "DISP", "publisher_id": "P"}))
            .collect();
        c.post(format!("{b}/events")).header("x-api-key", &key).json(&json!({ "events": events }))
    })
    .await;
    let queued_in = ingest_started.elapsed();
    let isolated = disp_sink.snapshot().hits == 0;
    let cpu_before = cpu_seconds(&args);
    disp_sink.wait_for(queued).await;
    let disp_cpu = cpu_delta(cpu_before, cpu_seconds(&args));

    // 7. Batches of 500 while deliveries run: every event fires, so the dispatcher is busy
    // for the whole phase (and after it, until the sink has them all).
    let busy_sink = IdSink::start().await;
    create(
        &admin,
        &base,
        &args.admin_key,
        json!({"name": "busy", "type": "click", "offers": ["BUSY"],
        "url": format!("http://{}/b?d={{delivery_id}}", busy_sink.addr)}),
    )
    .await;
    let busy_batches = args.requests.div_ceil(500);
    let busy_writer_before = writer_figures(&admin, &args).await;
    let (b, key, rid) = (base.clone(), args.ingest_key.clone(), run_id.clone());
    let busy = drive(busy_batches, args.concurrency.min(8), move |c, i| {
        let events: Vec<_> = (0..500)
            .map(|j| json!({"type": "click", "transaction_id": format!("u-{rid}-{i}-{j}"), "offer_id": "BUSY", "publisher_id": "P"}))
            .collect();
        c.post(format!("{b}/events")).header("x-api-key", &key).json(&json!({ "events": events }))
    })
    .await;
    let busy_writer_after = writer_figures(&admin, &args).await;
    busy_sink.wait_for(busy_batches * 500).await;

    // 8. Fair sending: the fast receiver's lag alone, then beside a hanging receiver.
    let fair = fair_sending(&base, &admin, &args).await;

    let bound = std::env::var("DESTINATION_CONCURRENCY").unwrap_or_else(|_| "16 (the default)".into());
    println!("Firings to one destination bounded by DESTINATION_CONCURRENCY={bound}.\n");
    println!("| measurement | rate | p50 ms | p99 ms | ratio to baseline |");
    println!("|---|---|---|---|---|");
    println!(
        "| baseline GET /health (c={}) | {:.0} req/s | {:.2} | {:.2} | 1.00 |",
        args.concurrency,
        health.rate(1),
        health.pct(0.5),
        health.pct(0.99)
    );
    println!(
        "| single events POST /events (c={}) | {:.0} events/s | {:.2} | {:.2} | {:.2} |",
        args.concurrency,
        single.rate(1),
        single.pct(0.5),
        single.pct(0.99),
        single.rate(1) / health.rate(1)
    );
    println!(
        "| batches of 500 (c={}) | {:.0} events/s | {:.2} | {:.2} | {:.2} |",
        args.concurrency.min(8),
        batches.rate(500),
        batches.pct(0.5),
        batches.pct(0.99),
        batches.rate(500) / health.rate(1)
    );
    println!(
        "| baseline: sink hit directly (c={}) | {:.0} req/s | {:.2} | {:.2} | 1.00 |",
        args.concurrency,
        direct.rate(1),
        direct.pct(0.5),
        direct.pct(0.99)
    );
    println!(
        "| firings delivered + logged | {:.0} firings/s ({delivered}/{want} in {:.1} s) | | | {:.2} |",
        fire_rate,
        fire_elapsed.as_secs_f64(),
        fire_rate / direct.rate(1)
    );
    // Exactly once, checked again now that every later phase has run (a late duplicate
    // would have arrived by now).
    let checks = [
        ("end to end", &e2e_sink, args.requests),
        ("dispatcher alone", &disp_sink, queued),
        ("batches while delivering", &busy_sink, busy_batches * 500),
    ];
    let mut broken = Vec::new();
    for (name, sink, want) in checks {
        let seen = sink.snapshot();
        if seen.unique != want as u64 || seen.hits != seen.unique {
            broken.push(format!("{name}: {} unique of {want}, {} duplicates", seen.unique, seen.hits - seen.unique));
        }
    }
    let e2e_seen = e2e_sink.snapshot();
    let disp_seen = disp_sink.snapshot();
    let ingest_cpu_ms = single_cpu.map(|c| c * 1000.0 / args.requests as f64);
    let fmt_ms = |v: Option<f64>| v.map_or("n/a (no --server-pid)".to_string(), |v| format!("{v:.3} ms CPU"));
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    };
    println!("| server CPU per accepted event, single events (nothing fires) | {} | | | 1.00 |", fmt_ms(ingest_cpu_ms));
    println!(
        "| end to end: single events, 1 GET postback each (c={}) | {:.0} events/s | {:.2} | {:.2} | {:.2} (of single events) |",
        args.concurrency,
        e2e.rate(1),
        e2e.pct(0.5),
        e2e.pct(0.99),
        e2e.rate(1) / single.rate(1)
    );
    println!(
        "| end to end: deliveries, first send to last unique id ({}/{} unique, {} duplicates) | {:.0} deliveries/s | | | {:.2} (of the sink hit directly) |",
        e2e_seen.unique,
        args.requests,
        e2e_seen.hits - e2e_seen.unique,
        e2e_seen.rate(),
        e2e_seen.rate() / direct.rate(1)
    );
    let e2e_cpu_ms = e2e_cpu.map(|c| c * 1000.0 / e2e_seen.unique.max(1) as f64);
    println!(
        "| end to end: server CPU per delivered event (ingest + delivery) | {} | | | {} (of the event alone) |",
        fmt_ms(e2e_cpu_ms),
        ratio(e2e_cpu_ms, ingest_cpu_ms)
    );
    let firing_cpu_ms = e2e_cpu_ms.zip(ingest_cpu_ms).map(|(a, b)| a - b);
    println!(
        "| end to end: a delivered firing's own CPU (the row above − the event alone) | {} | | | {} (of the event alone) |",
        fmt_ms(firing_cpu_ms),
        ratio(firing_cpu_ms, ingest_cpu_ms)
    );
    println!("| end to end: store writer (`/metrics`): {} | | | | |", writer_delta(writer_before, writer_after));
    println!(
        "| dispatcher alone: {queued} firings queued in {:.2} s (batches of 500, `delay_seconds` {DISPATCH_DELAY_S}{}), first send to last unique id | {:.0} deliveries/s | | | {:.2} (of the sink hit directly) |",
        queued_in.as_secs_f64(),
        if isolated { "" } else { "; NOT isolated: deliveries began during ingest" },
        disp_seen.rate(),
        disp_seen.rate() / direct.rate(1)
    );
    let disp_cpu_ms = disp_cpu.map(|c| c * 1000.0 / disp_seen.unique.max(1) as f64);
    println!(
        "| dispatcher alone: server CPU per delivery | {} | | | {} (of the event alone) |",
        fmt_ms(disp_cpu_ms),
        ratio(disp_cpu_ms, ingest_cpu_ms)
    );
    println!(
        "| batches of 500 while deliveries run (c={}, each event fires; {} requests) | {:.0} events/s | {:.2} | {:.2} | {:.2} (p99 of batches of 500 above) |",
        args.concurrency.min(8),
        busy_batches,
        busy.rate(500),
        busy.pct(0.5),
        busy.pct(0.99),
        busy.pct(0.99) / batches.pct(0.99).max(0.001)
    );
    println!(
        "| batches while deliveries run: store writer (`/metrics`, while the batches were sent): {} | | | | |",
        writer_delta(busy_writer_before, busy_writer_after)
    );
    println!(
        "| exactly once at the sinks (unique delivery ids = events, no duplicates) | {} | | | |",
        if broken.is_empty() { "yes".to_string() } else { format!("**NO**: {}", broken.join("; ")) }
    );
    println!(
        "| baseline: fast receiver's delivery lag alone ({FAIR_FIRINGS} firings, 1 per {FAIR_PACE_MS} ms) | | {:.2} | {:.2} | 1.00 |",
        fair.alone.pct(0.5),
        fair.alone.pct(0.99)
    );
    println!(
        "| fast receiver's delivery lag, {SLOW_PENDING} pending for a hanging receiver ({} requests held) | | {:.2} | {:.2} | {:.2} (p99 lag: lower is better) |",
        fair.slow_requests,
        fair.loaded.pct(0.5),
        fair.loaded.pct(0.99),
        fair.loaded.pct(0.99) / fair.alone.pct(0.99).max(0.001)
    );
    if !broken.is_empty() {
        eprintln!("loadgen: exactly-once check failed: {}", broken.join("; "));
        std::process::exit(1);
    }
}

/// Seconds from queueing to due in the dispatcher-alone phase: longer than the batch ingest
/// of the queued firings takes (≈ 0.2–0.5 s for 20,000 here), so none is sent during it.
const DISPATCH_DELAY_S: u64 = 3;

/// How long a phase may wait for its deliveries.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(180);

/// The store writer's transactions, jobs and summed queue wait (s) from `GET /metrics`
/// (zeros if the server has no such series).
/// The store writer's work between two `writer_figures` readings.
fn writer_delta(before: [f64; 3], after: [f64; 3]) -> String {
    let (transactions, jobs, wait) = (after[0] - before[0], after[1] - before[1], after[2] - before[2]);
    format!(
        "{transactions:.0} transactions, {:.2} jobs each, mean queue wait {:.3} ms",
        jobs / transactions.max(1.0),
        wait * 1000.0 / jobs.max(1.0)
    )
}

async fn writer_figures(admin: &reqwest::Client, args: &Args) -> [f64; 3] {
    let text = metrics::scrape(admin, &args.base, &args.admin_key).await;
    let value = |name: &str| metrics::series(&text, name).unwrap_or(0.0);
    [
        value("postback_store_writer_transactions_total"),
        value("postback_store_writer_jobs_total"),
        value("postback_store_writer_queue_wait_seconds_total"),
    ]
}

/// The server's user + system CPU seconds so far (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_seconds(args: &Args) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", args.server_pid?)).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / args.clk_tck)
}

fn cpu_delta(before: Option<f64>, after: Option<f64>) -> Option<f64> {
    Some(after? - before?)
}

#[derive(Default, Clone, Copy)]
struct Seen {
    hits: u64,
    unique: u64,
    first: Option<Instant>,
    last_new: Option<Instant>,
}

impl Seen {
    /// Unique deliveries per second from the first hit to the last new id.
    fn rate(&self) -> f64 {
        match (self.first, self.last_new) {
            (Some(first), Some(last)) if last > first => self.unique as f64 / (last - first).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// A receiver that records each `d=` (delivery id) it is sent, for the exactly-once check.
struct IdSink {
    addr: std::net::SocketAddr,
    state: Arc<std::sync::Mutex<(std::collections::HashSet<String>, Seen)>>,
}

impl IdSink {
    async fn start() -> IdSink {
        let state = Arc::new(std::sync::Mutex::new((std::collections::HashSet::new(), Seen::default())));
        let shared = state.clone();
        let sink = Router::new().route(
            "/{*p}",
            any(move |uri: axum::http::Uri| {
                let shared = shared.clone();
                async move {
                    let id = uri.query().and_then(|q| q.strip_prefix("d=")).unwrap_or_default().to_string();
                    let now = Instant::now();
                    let mut guard = shared.lock().unwrap();
                    let (ids, seen) = &mut *guard;
                    seen.hits += 1;
                    seen.first.get_or_insert(now);
                    if ids.insert(id) {
                        seen.unique += 1;
                        seen.last_new = Some(now);
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, sink).await.unwrap() });
        IdSink { addr, state }
    }

    fn snapshot(&self) -> Seen {
        self.state.lock().unwrap().1
    }

    /// Wait (bounded) until `want` unique ids arrived.
    async fn wait_for(&self, want: usize) {
        let deadline = Instant::now() + DELIVERY_DEADLINE;
        while self.snapshot().unique < want as u64 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Fast firings per fair-sending run, and their pace.
const FAIR_FIRINGS: usize = 200;
const FAIR_PACE_MS: u64 = 10;
/// Firings pending for the hanging receiver.
const SLOW_PENDING: usize = 1_000;

struct Fair {
    alone: Run,
    loaded: Run,
    /// Requests the hanging receiver had received when the loaded run ended.
    slow_requests: u64,
}

/// A receiver that records when each `t=` arrived.
async fn arrival_sink() -> (std::net::SocketAddr, Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>>) {
    let arrivals = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let seen = arrivals.clone();
    let sink = Router::new().route(
        "/{*p}",
        any(move |uri: axum::http::Uri| {
            let seen = seen.clone();
            async move {
                let t = uri.query().and_then(|q| q.strip_prefix("t=")).unwrap_or_default().to_string();
                seen.lock().unwrap().entry(t).or_insert_with(Instant::now);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, sink).await.unwrap() });
    (addr, arrivals)
}

async fn create(admin: &reqwest::Client, base: &str, key: &str, body: serde_json::Value) {
    let created = admin.post(format!("{base}/postbacks")).header("x-api-key", key).json(&body).send().await.unwrap();
    assert_eq!(created.status(), 201, "create postback: {}", created.text().await.unwrap_or_default());
}

/// Send `FAIR_FIRINGS` single clicks for the fast postback, one every `FAIR_PACE_MS`, and
/// return each one's lag from its send to its arrival at the fast receiver.
async fn paced_lags(
    base: &str,
    key: &str,
    tag: &str,
    arrivals: &std::sync::Mutex<std::collections::HashMap<String, Instant>>,
) -> Run {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut sent = Vec::with_capacity(FAIR_FIRINGS);
    let mut ticker = tokio::time::interval(Duration::from_millis(FAIR_PACE_MS));
    for i in 0..FAIR_FIRINGS {
        ticker.tick().await;
        let t = format!("{tag}-{i}");
        sent.push((t.clone(), Instant::now()));
        let resp = client
            .post(format!("{base}/events"))
            .header("x-api-key", key)
            .json(&json!({"type": "click", "transaction_id": t, "offer_id": "FAIR", "publisher_id": "P"}))
            .send()
            .await
            .expect("request failed");
        assert!(resp.status().is_success(), "status {}", resp.status());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let arrived = { sent.iter().filter(|(t, _)| arrivals.lock().unwrap().contains_key(t)).count() };
        if arrived == sent.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = arrivals.lock().unwrap();
    let latencies_us = sent
        .iter()
        .map(|(t, at)| {
            seen.get(t).map_or(u64::MAX, |arrived| arrived.saturating_duration_since(*at).as_micros() as u64)
        })
        .collect();
    Run { requests: FAIR_FIRINGS, elapsed: started.elapsed(), latencies_us }
}

async fn fair_sending(base: &str, admin: &reqwest::Client, args: &Args) -> Fair {
    let (fast, arrivals) = arrival_sink().await;
    let slow_hits = Arc::new(AtomicU64::new(0));
    let hits = slow_hits.clone();
    let slow = Router::new().route(
        "/{*p}",
        any(move || {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::Relaxed);
                // Never answers within the server's timeout.
                tokio::time::sleep(Duration::from_secs(600)).await;
                "late"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, slow).await.unwrap() });
    create(
        admin,
        base,
        &args.admin_key,
        json!({"name": "fair fast", "type": "click", "offers": ["FAIR"],
        "url": format!("http://{fast}/f?t={{transaction_id}}")}),
    )
    .await;
    create(
        admin,
        base,
        &args.admin_key,
        json!({"name": "fair hanging", "type": "click", "offers": ["HANG"],
        "url": format!("http://{slow_addr}/h?t={{transaction_id}}")}),
    )
    .await;
    let run_id = uuid::Uuid::new_v4().simple().to_string();

    let alone = paced_lags(base, &args.ingest_key, &format!("alone-{run_id}"), &arrivals).await;

    let client = reqwest::Client::new();
    for chunk in 0..SLOW_PENDING.div_ceil(500) {
        let events: Vec<_> = (0..500.min(SLOW_PENDING - chunk * 500))
            .map(|j| json!({"type": "click", "transaction_id": format!("h-{run_id}-{chunk}-{j}"), "offer_id": "HANG", "publisher_id": "P"}))
            .collect();
        let resp = client
            .post(format!("{base}/events"))
            .header("x-api-key", &args.ingest_key)
            .json(&json!({ "events": events }))
            .send()
            .await
            .expect("request failed");
        assert!(resp.status().is_success(), "status {}", resp.status());
    }
    // The hanging receiver holds its share of the senders before the fast run starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    while slow_hits.load(Ordering::Relaxed) < 16 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let loaded = paced_lags(base, &args.ingest_key, &format!("loaded-{run_id}"), &arrivals).await;
    Fair { alone, loaded, slow_requests: slow_hits.load(Ordering::Relaxed) }
}
