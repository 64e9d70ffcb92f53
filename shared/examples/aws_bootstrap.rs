//! Local Lambda development against the emulators (`docs/aws.md`).
//!
//! ```text
//! eval "$(scripts/emulators.sh start)"
//! eval "$(cargo run -p postback --features aws --example aws_bootstrap)"          # create resources, print env
//! cargo lambda watch -A 127.0.0.1 -P 9003 -p dispatch                             # (and 9001 config-api, 9002 ingest)
//! cargo run -p postback --features aws --example aws_bootstrap -- pump            # SQS → dispatch, like the event source
//! ```
//!
//! `aws_bootstrap [env] [--prefix NAME]` creates the tables, queues and schedule group
//! (idempotent, with `ensure_resources`) and prints the `export` lines the functions
//! need. `aws_bootstrap pump [--prefix NAME] [--invoke URL]` plays the SQS event source
//! for `cargo lambda watch`: it long-polls the firing queue, invokes the local
//! `dispatch` function with each batch as an `SqsEvent`, and deletes the messages the
//! function did not report as failed. It runs until Ctrl-C: an empty queue, a failed
//! receive or a failed invocation is logged and polled again (messages of a failed
//! invocation are not deleted, so they come back after the visibility timeout, as with
//! the real event source). The long poll has its own SQS client, since the library's
//! clients give a call at most 3 s per attempt and 10 s in all (`postback::aws`).
//! Only for emulators: it refuses to run unless every AWS endpoint points at a loopback
//! address.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and tools: a panic is the failure report

use std::time::Duration;

use anyhow::{bail, Context};
use aws_config::timeout::TimeoutConfig;
use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use postback::adapters::aws::{
    config_loader, ensure_resources, AwsClients, ResourceNames, ResourcePlan, CONNECT_TIMEOUT,
};

const DEFAULT_PREFIX: &str = "postbacks-local";
/// The invoke endpoint of `cargo lambda watch -P 9003 -p dispatch` (docs/aws.md).
const DEFAULT_INVOKE: &str = "http://127.0.0.1:9003/2015-03-31/functions/dispatch/invocations";
/// The pump's long poll (SQS allows up to 20 s).
const POLL_WAIT: Duration = Duration::from_secs(10);
/// Longest pause between polls after failures (the emulators went away, say).
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The keys of the committed API Gateway fixtures (`functions/*/fixtures/`).
const FIXTURE_ADMIN_KEY: &str = "local-admin-key-0123456789";
const FIXTURE_INGEST_KEY: &str = "local-ingest-key-0123456789";

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let prefix = flag("--prefix").unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    require_loopback_endpoints()?;
    let sdk_config = config_loader().load().await;
    let clients = AwsClients::from_sdk_config(&sdk_config);
    let names = ensure_resources(&clients, &ResourcePlan::with_prefix(&prefix))
        .await
        .context("creating the resources (are the emulators running? eval \"$(scripts/emulators.sh start)\")")?;
    match args.first().map(String::as_str) {
        None | Some("env") | Some("--prefix") => {
            print_env(&names);
            Ok(())
        }
        Some("pump") => {
            let invoke = flag("--invoke").unwrap_or_else(|| DEFAULT_INVOKE.to_string());
            let poller = long_poll_client(&sdk_config);
            tokio::select! {
                result = pump(&clients, &poller, &names, &invoke) => result,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("pump: stopped");
                    Ok(())
                }
            }
        }
        Some(other) => bail!("unknown command {other:?}: use `env` (default) or `pump`"),
    }
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
    // Development values: the fixtures' keys, and postbacks may reach local receivers.
    println!("export ADMIN_API_KEY={FIXTURE_ADMIN_KEY}");
    println!("export INGEST_API_KEY={FIXTURE_INGEST_KEY}");
    println!("export ALLOW_PRIVATE_TARGETS=true");
}

/// An SQS client whose calls may outlast a long poll: the library's timeouts (3 s per
/// attempt, 10 s per call) would cut every empty `POLL_WAIT` receive short.
fn long_poll_client(sdk_config: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(POLL_WAIT + Duration::from_secs(5))
        .operation_timeout(POLL_WAIT + Duration::from_secs(10))
        .build();
    aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(sdk_config).timeout_config(timeouts).build())
}

/// Plays the SQS event source until Ctrl-C (the caller's `select!`).
async fn pump(
    clients: &AwsClients,
    poller: &aws_sdk_sqs::Client,
    names: &ResourceNames,
    invoke: &str,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    eprintln!("pump: {} → {invoke} (Ctrl-C stops)", names.queue_url);
    let mut backoff = Duration::ZERO;
    loop {
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
        }
        match pump_once(clients, poller, names, invoke, &http).await {
            Ok(()) => backoff = Duration::ZERO,
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(500), MAX_BACKOFF);
                eprintln!("pump: {e:#} (polling again in {} ms)", backoff.as_millis());
            }
        }
    }
}

/// One receive, and when it brought messages, one invocation and the deletes.
async fn pump_once(
    clients: &AwsClients,
    poller: &aws_sdk_sqs::Client,
    names: &ResourceNames,
    invoke: &str,
    http: &reqwest::Client,
) -> anyhow::Result<()> {
    let out = poller
        .receive_message()
        .queue_url(&names.queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(POLL_WAIT.as_secs() as i32)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .context("ReceiveMessage")?;
    if out.messages().is_empty() {
        return Ok(());
    }
    let mut event = SqsEvent::default();
    for m in out.messages() {
        let mut message = SqsMessage::default();
        message.message_id = m.message_id.clone();
        message.receipt_handle = m.receipt_handle.clone();
        message.body = m.body.clone();
        message.md5_of_body = m.md5_of_body.clone();
        message.attributes = m
            .attributes
            .as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect())
            .unwrap_or_default();
        message.event_source = Some("aws:sqs".into());
        message.event_source_arn = Some(names.queue_arn.clone());
        event.records.push(message);
    }
    // Not delivered (watcher down, or a timeout): nothing is deleted, so the batch comes
    // back after the queue's visibility timeout, as it would from the real event source.
    let response = http
        .post(invoke)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&event)?)
        .send()
        .await
        .with_context(|| {
            format!("invoking {invoke} (is `cargo lambda watch -P 9003 -p dispatch` running?); {} messages come back after the visibility timeout", event.records.len())
        })?;
    let status = response.status();
    let body = response.bytes().await.context("reading the dispatch response")?;
    let failed: Vec<String> = match serde_json::from_slice::<SqsBatchResponse>(&body) {
        Ok(r) if status.is_success() => r.batch_item_failures.into_iter().map(|f| f.item_identifier).collect(),
        // A function error: the event source would retry the whole batch.
        _ => {
            eprintln!("pump: dispatch failed ({status}): {}", String::from_utf8_lossy(&body));
            event.records.iter().filter_map(|m| m.message_id.clone()).collect()
        }
    };
    for message in &event.records {
        if failed.iter().any(|f| Some(f) == message.message_id.as_ref()) {
            continue;
        }
        if let Some(receipt) = &message.receipt_handle {
            clients
                .sqs
                .delete_message()
                .queue_url(&names.queue_url)
                .receipt_handle(receipt)
                .send()
                .await
                .context("DeleteMessage (the message comes back after the visibility timeout)")?;
        }
    }
    eprintln!("pump: {} messages dispatched, {} failed", event.records.len(), failed.len());
    Ok(())
}
