//! The local server: the whole postback manager in one process on 127.0.0.1, with an
//! embedded durable store (SQLite) holding postbacks, touches, logs and the firing queue
//! with its timer. `cargo run --release` starts it.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use postback::adapters::embedded::{EmbeddedOptions, EmbeddedStore, StoreStats};
use postback::adapters::sender::{ReqwestSender, SenderConfig};
use postback::adapters::system::{RandomJitter, SystemClock};
use postback::entry::config::{KeySource, Settings};
use postback::entry::http::{router, ApiKeys, RouteSet};
use postback::ports::Clock;
use postback::service::metrics::{Sample, SampleSource};
use postback::service::{run_queue_loop, App, LoopLimits, Policy, Ports, SlotReleasingSender, LOCAL_CONCURRENCY};

/// mimalloc instead of glibc's malloc: a delivered firing allocates a few hundred small
/// blocks across threads (render, log entry, JSON, hyper), where glibc's arenas spent
/// 8.8% of the server's CPU in the issue 10 profile. Local server only: the Lambda
/// functions are cross-built for aarch64 and wait on the network, not on malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often expired logs and touches are purged.
const PURGE_EVERY: chrono::Duration = chrono::Duration::hours(1);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    postback::entry::telemetry::init();
    let (settings, sources) = Settings::from_env(true).context("invalid settings")?;
    print_generated_keys(&settings, sources);

    std::fs::create_dir_all(&settings.data_dir)
        .with_context(|| format!("cannot create DATA_DIR {}", settings.data_dir.display()))?;
    // One server per data folder: the dispatcher assumes it is the queue's only consumer.
    let lock_path = settings.data_dir.join("server.lock");
    let lock = std::fs::File::create(&lock_path).with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.try_lock()
        .map_err(|_| anyhow::anyhow!("another postback server is using DATA_DIR {}", settings.data_dir.display()))?;
    let db_path = settings.data_dir.join("postback-manager.db");
    // One clock for the store and the services.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = EmbeddedStore::open(
        &db_path,
        EmbeddedOptions {
            // A leased firing comes back if its consumer died; leave room for a slow send.
            lease: settings.delivery_timeout * 3 + Duration::from_secs(30),
            retention: settings.log_retention(),
        },
        clock.clone(),
    )
    .with_context(|| format!("cannot open {}", db_path.display()))?;
    let sender = ReqwestSender::new(SenderConfig::new(settings.delivery_timeout, settings.allow_private_targets))
        .context("cannot build the HTTP client")?;

    // Leases live in the store's memory: firings a crashed run had in flight are due again
    // at once (docs/DESIGN.md, *Local server*).
    let store = Arc::new(store);
    let ports = Ports {
        postbacks: store.clone(),
        touches: store.clone(),
        logs: store.clone(),
        queue: store.clone(),
        control: store.clone(),
        access: store.clone(),
        // Frees a firing's destination slot when its request is answered (fair sending).
        sender: Arc::new(SlotReleasingSender::new(Arc::new(sender))),
        clock: clock.clone(),
        jitter: Arc::new(RandomJitter),
        // One SQLite file holds touches, queue and logs: their joint writes are one commit.
        combined: Some(store.clone()),
    };
    // Every postback write in this process invalidates the index; the TTL is a backstop.
    let writer_stats = store.clone();
    let samples: SampleSource = Arc::new(move || writer_samples(writer_stats.stats()));
    let app = App::with_samples(
        ports,
        Policy {
            retry: settings.retry,
            catalog_ttl: Duration::from_secs(60),
            catalog_check: None,
            breaker: settings.breaker,
            partners: settings.partners,
        },
        Some(samples),
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = LoopLimits { total: LOCAL_CONCURRENCY, per_destination: settings.destination_concurrency };
    let dispatch_runtime = dispatch_runtime().context("cannot start the dispatcher's runtime")?;
    let dispatcher =
        dispatch_runtime.spawn(run_queue_loop(app.dispatcher(), limits, stop_rx.clone(), Duration::from_secs(15)));
    let purger = tokio::spawn(purge_loop(store.clone(), clock, settings.audit_retention(), stop_rx));

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", settings.port))
        .await
        .with_context(|| format!("cannot bind 127.0.0.1:{}", settings.port))?;
    let address = listener.local_addr()?;
    tracing::info!(%address, data = %db_path.display(), "postback manager listening");
    // One plain line on stdout with the bound address: with PORT=0 the OS picks a free
    // port, and scripts and tests read it from here instead of racing for one.
    println!("listening on http://{address}");
    std::io::Write::flush(&mut std::io::stdout()).context("cannot write to stdout")?;
    let routes = router(app, ApiKeys::new(&settings.admin_api_key, &settings.ingest_api_key), RouteSet::All);
    // The connection's address is the client's (audit records' `ip`).
    let service = routes.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service).with_graceful_shutdown(shutdown_signal()).await?;

    tracing::info!("shutting down: finishing in-flight firings");
    let _ = stop_tx.send(true);
    let _ = dispatcher.await;
    let _ = purger.await;
    dispatch_runtime.shutdown_background();
    store.close().await;
    drop(lock);
    tracing::info!("stopped");
    Ok(())
}

/// How much lower the dispatcher's threads are scheduled than the rest (`nice` steps).
const DISPATCH_NICENESS: i32 = 5;

/// The dispatcher's own runtime, its threads `DISPATCH_NICENESS` below the API's and the
/// store writer's: when the CPU is short, accepting events (a tracker waits on each
/// request, answered once the event is durable) goes before sending postbacks, which are
/// queued durably and catch up. With CPU to spare, nothing changes.
fn dispatch_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("dispatch")
        .on_thread_start(lower_this_threads_priority)
        .enable_all()
        .build()
}

fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // Linux keeps a nice value per thread: this lowers the calling thread only.
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), DISPATCH_NICENESS) {
            tracing::warn!(error = %e, "cannot lower the dispatcher thread's priority");
        }
    }
}

/// The embedded store writer's counters as `GET /metrics` series (this server only: the
/// AWS functions have no writer thread).
fn writer_samples(s: StoreStats) -> Vec<Sample> {
    let counter = |name, help, value: u64| Sample { name, help, kind: "counter", value: value as f64 };
    let gauge = |name, help, value: f64| Sample { name, help, kind: "gauge", value };
    vec![
        counter(
            "postback_store_writer_transactions_total",
            "Transactions the store writer committed or rolled back (one fsync each when committed).",
            s.transactions,
        ),
        counter("postback_store_writer_jobs_total", "Write jobs run by the store writer.", s.jobs),
        counter(
            "postback_store_writer_failed_jobs_total",
            "Write jobs that failed and were rolled back alone.",
            s.failed_jobs,
        ),
        gauge(
            "postback_store_writer_largest_batch",
            "The most jobs in one writer transaction.",
            s.largest_batch as f64,
        ),
        Sample {
            name: "postback_store_writer_queue_wait_seconds_total",
            help: "Summed over jobs: time from submit to the start of the job's transaction.",
            kind: "counter",
            value: s.queue_wait_micros_total as f64 / 1e6,
        },
        gauge(
            "postback_store_writer_queue_wait_seconds_max",
            "The longest time a job waited for its transaction to start.",
            s.queue_wait_micros_max as f64 / 1e6,
        ),
        counter(
            "postback_store_writer_stale_receipts_total",
            "Acks and retries whose lease had been taken over: they changed nothing.",
            s.stale_receipts,
        ),
        counter(
            "postback_store_writer_quarantined_firings_total",
            "Queue rows that could not be decoded and were moved aside.",
            s.quarantined_firings,
        ),
        counter(
            "postback_store_delivered_at_lease_total",
            "Queued firings found already delivered when leased, and dropped unsent.",
            s.delivered_at_lease,
        ),
    ]
}

fn print_generated_keys(settings: &Settings, sources: [KeySource; 2]) {
    // Printed once to stdout so a developer can copy them; never logged.
    if sources[0] == KeySource::Generated {
        println!("ADMIN_API_KEY={}  (generated; set ADMIN_API_KEY to keep it across restarts)", settings.admin_api_key);
    }
    if sources[1] == KeySource::Generated {
        println!(
            "INGEST_API_KEY={}  (generated; set INGEST_API_KEY to keep it across restarts)",
            settings.ingest_api_key
        );
    }
}

async fn purge_loop(
    store: Arc<EmbeddedStore>,
    clock: Arc<dyn Clock>,
    audit_retention: chrono::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        match store.purge_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "purged expired logs and touches"),
            Err(e) => tracing::warn!(error = %e, "purge failed"),
        }
        // Audit records past AUDIT_RETENTION_DAYS.
        match store.purge_audit(clock.now(), audit_retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "purged expired audit records"),
            Err(e) => tracing::warn!(error = %e, "audit purge failed"),
        }
        tokio::select! {
            _ = clock.sleep_until(clock.now() + PURGE_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
