//! Shared by the tests that run against the local AWS emulators: the emulator check,
//! per-test resources, a deployment of the three functions, API Gateway events, an SQS
//! event source stand-in, and an HTTP sink that receives postbacks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageSystemAttributeName;
use axum::http::StatusCode;
use http_body_util::BodyExt;
use postback::adapters::aws::{ensure_resources, AwsClients, ResourceNames, ResourcePlan};
use postback::entry::config::Settings;
use postback::entry::lambda::LambdaApp;
use serde_json::{json, Value};
use tower::ServiceExt;

pub const SKIP_VAR: &str = "POSTBACK_SKIP_AWS_TESTS";
/// The keys the committed API Gateway fixtures carry (`functions/*/fixtures/`).
pub const ADMIN_KEY: &str = "local-admin-key-0123456789";
pub const INGEST_KEY: &str = "local-ingest-key-0123456789";

/// `false` only when the run explicitly opted out; missing emulators fail the test.
pub fn emulators_required() -> bool {
    if std::env::var(SKIP_VAR).as_deref() == Ok("1") {
        eprintln!("{SKIP_VAR}=1: AWS emulator tests skipped");
        return false;
    }
    for service in ["DYNAMODB", "SQS", "SCHEDULER"] {
        let endpoint = std::env::var(format!("AWS_ENDPOINT_URL_{service}"))
            .or_else(|_| std::env::var("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|_| {
                panic!(
                    "AWS_ENDPOINT_URL_{service} is not set: these tests need the local emulators. Run them with \
                     `scripts/emulators.sh run cargo test -p postback --features aws,testing`, or set {SKIP_VAR}=1 \
                     to skip them on purpose."
                )
            });
        let host = url::Url::parse(&endpoint).ok().and_then(|u| u.host_str().map(str::to_string));
        assert!(
            matches!(host.as_deref(), Some("127.0.0.1" | "localhost" | "[::1]")),
            "refusing to create test resources at {endpoint}: not a loopback emulator"
        );
    }
    true
}

#[macro_export]
macro_rules! require_emulators {
    () => {
        if !$crate::aws_support::emulators_required() {
            return;
        }
    };
}

pub fn run_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..8].to_string())
}

/// Uniquely named tables, queues and schedule group for one test.
pub async fn resources(test: &str, adjust: impl FnOnce(&mut ResourcePlan)) -> (AwsClients, ResourceNames) {
    let clients = AwsClients::from_env().await;
    let mut plan = ResourcePlan::with_prefix(&format!("pbt-{}-{test}", run_id()));
    adjust(&mut plan);
    let names = ensure_resources(&clients, &plan).await.expect("create test resources");
    (clients, names)
}

/// Settings as the template sets them, with private targets allowed (the sink is on
/// loopback), short timeouts and retries, and `overrides` on top.
pub fn settings(overrides: &[(&str, &str)]) -> Settings {
    let mut vars: HashMap<&str, &str> = HashMap::from([
        ("ADMIN_API_KEY", ADMIN_KEY),
        ("INGEST_API_KEY", INGEST_KEY),
        ("ALLOW_PRIVATE_TARGETS", "true"),
        ("DELIVERY_TIMEOUT_MS", "3000"),
        ("RETRY_BASE_DELAY_MS", "1000"),
        ("RETRY_MAX_ATTEMPTS", "5"),
    ]);
    vars.extend(overrides.iter().copied());
    Settings::from_lookup(|k| vars.get(k).map(|v| v.to_string()), false).expect("test settings").0
}

/// The three functions over one set of resources, each with its own `App` (and so its
/// own postback cache), as on AWS.
pub struct Deployment {
    pub clients: AwsClients,
    pub names: ResourceNames,
    pub config_api: LambdaApp,
    pub ingest: LambdaApp,
    pub dispatch: LambdaApp,
}

impl Deployment {
    pub async fn new(test: &str) -> Deployment {
        let (clients, names) = resources(test, |_| {}).await;
        Self::with(clients, names, &[])
    }

    pub fn with(clients: AwsClients, names: ResourceNames, overrides: &[(&str, &str)]) -> Deployment {
        let app = || LambdaApp::build(settings(overrides), &clients, &names);
        Deployment { config_api: app(), ingest: app(), dispatch: app(), clients, names }
    }
}

// ---------------------------------------------------------------------------------
// API Gateway (HTTP API, payload 2.0) events
// ---------------------------------------------------------------------------------

/// An API Gateway HTTP API (payload format 2.0) event, shaped like the fixtures.
pub fn apigw_event(method: &str, path: &str, query: &str, headers: &[(&str, &str)], body: Option<&str>) -> Value {
    let mut header_map = serde_json::Map::new();
    for (k, v) in [
        ("accept", "application/json"),
        ("host", "abcdef1234.execute-api.us-east-1.amazonaws.com"),
        ("user-agent", "curl/8.5.0"),
        ("x-forwarded-for", "203.0.113.10"),
        ("x-forwarded-proto", "https"),
    ] {
        header_map.insert(k.into(), v.into());
    }
    if let Some(b) = body {
        header_map.insert("content-type".into(), "application/json".into());
        header_map.insert("content-length".into(), b.len().to_string().into());
    }
    for (k, v) in headers {
        header_map.insert(k.to_string(), v.to_string().into());
    }
    let route = format!("{method} {path}");
    let mut event = json!({
        "version": "2.0",
        "routeKey": route,
        "rawPath": path,
        "rawQueryString": query,
        "headers": header_map,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdef1234",
            "domainName": "abcdef1234.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abcdef1234",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.10", "userAgent": "curl/8.5.0"},
            "requestId": "test-request",
            "routeKey": route,
            "stage": "$default",
            "time": "01/Mar/2026:12:00:00 +0000",
            "timeEpoch": 1772366400000u64
        },
        "isBase64Encoded": false
    });
    if !query.is_empty() {
        let params: serde_json::Map<String, Value> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        event["queryStringParameters"] = Value::Object(params);
    }
    if let Some(b) = body {
        event["body"] = b.into();
    }
    event
}

/// A committed fixture of a function (`functions/<function>/fixtures/<name>.json`).
pub fn fixture(function: &str, name: &str) -> Value {
    let path = format!("{}/../functions/{function}/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Replace the fixture's JSON body (keeping its content-length right).
pub fn with_body(mut event: Value, body: &Value) -> Value {
    let text = body.to_string();
    event["headers"]["content-length"] = text.len().to_string().into();
    event["body"] = text.into();
    event
}

/// What a function answered.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

/// Turn the API Gateway event into the request `lambda_http` hands the function
/// (`lambda_http::request::from_str`), and drive the function's router with it.
pub async fn invoke(router: &axum::Router, event: &Value) -> Reply {
    let request = lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway event");
    let response = router.clone().oneshot(request).await.expect("the router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("response body").to_bytes();
    let json = headers.get("content-type").is_none_or(|t| t.as_bytes().starts_with(b"application/json"));
    let body = if bytes.is_empty() {
        Value::Null
    } else if json {
        serde_json::from_slice(&bytes).expect("a JSON response")
    } else {
        Value::String(String::from_utf8_lossy(&bytes).into_owned()) // the console's page and assets
    };
    Reply { status, headers, body }
}

// ---------------------------------------------------------------------------------
// The SQS event source, played by the test
// ---------------------------------------------------------------------------------

/// A message received from the emulator, shaped as the Lambda event source delivers it.
pub fn lambda_message(message: &aws_sdk_sqs::types::Message, queue_arn: &str) -> SqsMessage {
    postback::adapters::aws::lambda_message(message, queue_arn, "us-east-1")
}

/// Receive until `want` messages arrived or `within` passed (long polls of up to 1 s),
/// as one `SqsEvent`.
pub async fn receive_event(d: &Deployment, want: usize, within: Duration) -> SqsEvent {
    let deadline = Instant::now() + within;
    let mut event = SqsEvent::default();
    while event.records.len() < want && Instant::now() < deadline {
        let out = d
            .clients
            .sqs
            .receive_message()
            .queue_url(&d.names.queue_url)
            .max_number_of_messages(i32::try_from((want - event.records.len()).min(10)).unwrap())
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .expect("ReceiveMessage");
        event.records.extend(out.messages().iter().map(|m| lambda_message(m, &d.names.queue_arn)));
    }
    event
}

/// What the event source does after the handler returns: delete every message not
/// reported as failed.
pub async fn finish_batch(d: &Deployment, event: &SqsEvent, response: &SqsBatchResponse) {
    let failed: Vec<&str> = response.batch_item_failures.iter().map(|f| f.item_identifier.as_str()).collect();
    for message in &event.records {
        if failed.contains(&message.message_id.as_deref().unwrap_or_default()) {
            continue;
        }
        let receipt = message.receipt_handle.as_deref().unwrap_or_default();
        d.clients.sqs.delete_message().queue_url(&d.names.queue_url).receipt_handle(receipt).send().await.unwrap();
    }
}

/// The deadline of a fresh dispatch invocation (the function's timeout is 60 s).
pub fn fresh_deadline() -> std::time::SystemTime {
    std::time::SystemTime::now() + Duration::from_secs(60)
}

/// Receive, dispatch through `dispatch_batch`, and finish the batch like the event source.
pub async fn pump(d: &Deployment, want: usize, within: Duration) -> (SqsEvent, SqsBatchResponse) {
    let event = receive_event(d, want, within).await;
    assert_eq!(event.records.len(), want, "messages on the queue");
    let response =
        postback::entry::lambda::dispatch_batch(&d.dispatch.batch_dispatcher(), event.clone(), fresh_deadline()).await;
    finish_batch(d, &event, &response).await;
    (event, response)
}

/// Messages visible on the queue right now (receives them without deleting; they come
/// back after the visibility timeout).
pub async fn peek_count(d: &Deployment) -> usize {
    let out =
        d.clients.sqs.receive_message().queue_url(&d.names.queue_url).max_number_of_messages(10).send().await.unwrap();
    out.messages().len()
}

// ---------------------------------------------------------------------------------
// The receiver of postbacks
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub uri: String,
    pub headers: axum::http::HeaderMap,
    pub body: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// An HTTP server on 127.0.0.1 that records every request and answers `status`.
#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    status: Arc<std::sync::atomic::AtomicU16>,
}

impl Sink {
    pub async fn start() -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink = Sink {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            status: Arc::new(std::sync::atomic::AtomicU16::new(200)),
        };
        let state = sink.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let state = state.clone();
            async move {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                state.received.lock().unwrap().push(Received {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers: parts.headers,
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                    at: chrono::Utc::now(),
                });
                let status = StatusCode::from_u16(state.status.load(std::sync::atomic::Ordering::SeqCst)).unwrap();
                (status, "ok")
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        sink
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.addr)
    }

    pub fn answer(&self, status: u16) {
        self.status.store(status, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}
