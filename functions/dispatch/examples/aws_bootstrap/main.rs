//! Local Lambda development against the emulators (`docs/aws.md`); `scripts/aws-local.sh`
//! runs it all with one command.
//!
//! ```text
//! aws_bootstrap [env] [--prefix NAME]     create the resources (idempotent), print their env
//! aws_bootstrap pump [--invoke URL] [--concurrency N]
//!                                         the SQS event source of the dispatch function
//! aws_bootstrap front-door [--port P] [--config-api URL] [--ingest URL]
//!                                         one HTTP front door routed as API Gateway routes
//! aws_bootstrap serve [all of the above]  pump + front door in one process (aws-local.sh)
//! ```
//!
//! `env` creates the tables, queues and schedule group with `ensure_resources` and
//! prints the `export` lines the functions need, plus development values for the keys
//! and `ALLOW_PRIVATE_TARGETS` when they are not set already.
//!
//! `pump` plays the SQS event source for `cargo lambda watch` (`pump.rs`); `front-door`
//! turns HTTP requests into API Gateway HTTP API (payload 2.0) invocations of the watched
//! `config-api` and `ingest`, routed by `template.yaml`'s routes (`front_door.rs`). Each
//! runs until SIGINT or SIGTERM. `serve` first invokes each function once (so no request
//! waits for a watcher's build or a cold start), then prints `listening on http://ADDR`.
//!
//! Only for emulators: it refuses to run unless every AWS endpoint points at a loopback
//! address.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and tools: a panic is the failure report

mod front_door;
mod pump;

use std::time::Duration;

use anyhow::{bail, Context};
use postback::adapters::aws::{config_loader, ensure_resources, AwsClients, ResourceNames, ResourcePlan};

const DEFAULT_PREFIX: &str = "postbacks-local";
/// The watchers' invoke endpoints as `docs/aws.md` starts them (ports 9001–9003).
const DEFAULT_CONFIG_API: &str = "http://127.0.0.1:9001";
const DEFAULT_INGEST: &str = "http://127.0.0.1:9002";
const DEFAULT_DISPATCH: &str = "http://127.0.0.1:9003";
/// The keys of the committed API Gateway fixtures (`functions/*/fixtures/`).
const FIXTURE_ADMIN_KEY: &str = "local-admin-key-0123456789";
const FIXTURE_INGEST_KEY: &str = "local-ingest-key-0123456789";
/// How long `serve` waits for the first invocation of each function (a watcher that
/// builds the function first takes minutes on a cold target directory).
const WARM_UP: Duration = Duration::from_secs(900);

/// `http://host:port` of a watcher → the Lambda Invoke API URL of `function` on it.
pub fn invoke_url(watcher: &str, function: &str) -> String {
    format!("{}/2015-03-31/functions/{function}/invocations", watcher.trim_end_matches('/'))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let prefix = flag("--prefix").unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    let concurrency: usize = match flag("--concurrency") {
        Some(n) => n.parse().ok().filter(|n| *n > 0).context("--concurrency: a positive number")?,
        None => pump::DEFAULT_CONCURRENCY,
    };
    let port: u16 = match flag("--port") {
        Some(p) => p.parse().context("--port: a port number (0 picks a free one)")?,
        None => 0,
    };
    let config_api = invoke_url(&flag("--config-api").unwrap_or_else(|| DEFAULT_CONFIG_API.into()), "config-api");
    let ingest = invoke_url(&flag("--ingest").unwrap_or_else(|| DEFAULT_INGEST.into()), "ingest");
    let dispatch = flag("--invoke")
        .unwrap_or_else(|| invoke_url(&flag("--dispatch").unwrap_or_else(|| DEFAULT_DISPATCH.into()), "dispatch"));
    let command = args.first().map(String::as_str).filter(|a| !a.starts_with("--")).unwrap_or("env");

    require_loopback_endpoints()?;
    let sdk_config = config_loader().load().await;
    let clients = AwsClients::from_sdk_config(&sdk_config);
    let names = ensure_resources(&clients, &ResourcePlan::with_prefix(&prefix))
        .await
        .context("creating the resources (are the emulators running? eval \"$(scripts/emulators.sh start)\")")?;
    let front_door = || -> anyhow::Result<front_door::FrontDoor> {
        let functions = [("config-api".to_string(), config_api.clone()), ("ingest".to_string(), ingest.clone())];
        front_door::FrontDoor::from_template(front_door::TEMPLATE, functions.into_iter().collect())
    };
    let pump = || pump::Pump::new(&sdk_config, &names, &dispatch, concurrency);
    let work = async {
        match command {
            "env" => {
                print_env(&names);
                Ok(())
            }
            "pump" => pump()?.run().await,
            "front-door" => {
                let door = front_door()?;
                door.serve(door.bind(port).await?).await
            }
            "serve" => {
                let door = front_door()?;
                let pump = pump()?;
                let listener = door.bind(port).await?;
                warm_up(&door, &pump).await?;
                tokio::try_join!(pump.run(), door.serve(listener)).map(|_| ())
            }
            other => bail!("unknown command {other:?}: use env (default), pump, front-door or serve"),
        }
    };
    tokio::select! {
        result = work => result,
        signal = stop_signal() => {
            eprintln!("aws_bootstrap: stopped ({signal})");
            Ok(())
        }
    }
}

/// SIGINT (Ctrl-C) or SIGTERM, whichever comes first.
async fn stop_signal() -> &'static str {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// One invocation of each function, retried until it answers: the watchers build (when
/// the binaries are stale) and start an instance of each, so the first real request or
/// batch does not wait for either.
async fn warm_up(door: &front_door::FrontDoor, pump: &pump::Pump) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
    let mut pending: Vec<(String, String, Vec<u8>)> = door.warm_up_invocations();
    pending.push(("dispatch".into(), pump.invoke_url().to_string(), br#"{"Records":[]}"#.to_vec()));
    let mut last = String::new();
    let all_answered = async {
        for (name, url, body) in pending {
            loop {
                let answer = http.post(&url).header("content-type", "application/json").body(body.clone()).send().await;
                last = match answer {
                    Ok(r) if r.status().is_success() => break,
                    Ok(r) => format!("{name}: {} from {url}", r.status()),
                    Err(e) => format!("{name}: {e} ({url})"),
                };
                // Its watcher is still building or starting the function: ask again shortly.
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    if tokio::time::timeout(WARM_UP, all_answered).await.is_err() {
        bail!("{last}");
    }
    eprintln!("aws_bootstrap: functions answered after {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn require_loopback_endpoints() -> anyhow::Result<()> {
    for service in ["DYNAMODB", "SQS", "SCHEDULER"] {
        let endpoint = std::env::var(format!("AWS_ENDPOINT_URL_{service}"))
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .with_context(|| {
                format!("AWS_ENDPOINT_URL_{service} is not set: this tool is for the local emulators (scripts/emulators.sh start)")
            })?;
        let host = url::Url::parse(&endpoint).ok().and_then(|u| u.host_str().map(str::to_string));
        if !matches!(host.as_deref(), Some("127.0.0.1" | "localhost" | "[::1]")) {
            bail!("{endpoint} is not a loopback emulator; on AWS the resources come from template.yaml (sam deploy)");
        }
    }
    Ok(())
}

fn print_env(names: &ResourceNames) {
    use postback::adapters::aws::env;
    let mut lines = vec![
        (env::POSTBACKS_TABLE, names.postbacks_table.clone()),
        (env::TOUCHES_TABLE, names.touches_table.clone()),
        (env::LOGS_TABLE, names.logs_table.clone()),
        (env::CONTROL_TABLE, names.control_table.clone()),
        (env::QUEUE_URL, names.queue_url.clone()),
        (env::QUEUE_ARN, names.queue_arn.clone()),
        (env::SCHEDULE_GROUP, names.schedule_group.clone()),
        (env::SCHEDULER_ROLE_ARN, names.scheduler_role_arn.clone()),
    ];
    if let Some(dlq) = &names.dead_letter_queue_arn {
        lines.push((env::DEAD_LETTER_QUEUE_ARN, dlq.clone()));
    }
    for (name, value) in lines {
        println!("export {name}={value}");
    }
    // Development values, unless set: the fixtures' keys, and postbacks may reach local
    // receivers.
    for (name, value) in [
        ("ADMIN_API_KEY", FIXTURE_ADMIN_KEY),
        ("INGEST_API_KEY", FIXTURE_INGEST_KEY),
        ("ALLOW_PRIVATE_TARGETS", "true"),
    ] {
        if std::env::var_os(name).is_none() {
            println!("export {name}={value}");
        }
    }
}
