//! End-to-end harness: the local server as a real child process, and a real HTTP sink
//! that records what postbacks deliver.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as AxPath, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use serde_json::Value;

pub const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
pub const INGEST_KEY: &str = "ingest-key-0123456789abcdef";

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HashMap<String, String>,
    pub body: String,
    /// The status the sink answered.
    pub status: u16,
    /// When it arrived.
    pub at: Instant,
}

#[derive(Default)]
struct SinkState {
    hits: Vec<Hit>,
    counters: HashMap<String, u32>,
    /// `/switch/<name>/...` receivers that are down (answer 503).
    down: std::collections::HashSet<String>,
}

/// A local HTTP receiver. Paths decide the answer:
/// `/ok/...` 200; `/status/<code>/...` that status; `/flaky/<n>/...` 500 for the first n
/// hits of that exact path then 200; `/fail/<n>/...` 404 (permanent) for the first n hits
/// of that path then 200; `/slow/<ms>/...` 200 after a pause; `/body/<text>/...` 200 with
/// `<text>` as the body; `/switch/<name>/...` 200, or 503 while `set_down(name, true)` (a
/// receiver that goes down and comes back).
#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<Mutex<SinkState>>,
}

impl Sink {
    pub async fn start() -> Sink {
        let state = Arc::new(Mutex::new(SinkState::default()));
        let app = Router::new().route("/{*rest}", any(sink_handler)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Sink { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Take the `/switch/<name>/...` receiver down (503) or bring it back (200).
    pub fn set_down(&self, name: &str, down: bool) {
        let mut s = self.state.lock().unwrap();
        if down {
            s.down.insert(name.to_string());
        } else {
            s.down.remove(name);
        }
    }

    pub fn hits(&self) -> Vec<Hit> {
        self.state.lock().unwrap().hits.clone()
    }

    /// Hits whose path starts with `prefix`.
    pub fn hits_on(&self, prefix: &str) -> Vec<Hit> {
        self.hits().into_iter().filter(|h| h.path.starts_with(prefix)).collect()
    }

    /// Wait until at least `n` hits on `prefix` arrived (bounded).
    pub async fn wait_for(&self, prefix: &str, n: usize, within: Duration) -> Vec<Hit> {
        self.wait_until(prefix, within, |hits| hits.len() >= n).await
    }

    /// Wait until the hits on `prefix` satisfy `done` (bounded). Counting hits is not
    /// enough where re-sends are allowed: a re-sent firing would stand in for a missing one.
    pub async fn wait_until(&self, prefix: &str, within: Duration, done: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + within;
        loop {
            let hits = self.hits_on(prefix);
            if done(&hits) || Instant::now() > deadline {
                return hits;
            }
            // Polling for requests from the server under test (another process).
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

async fn sink_handler(
    State(state): State<Arc<Mutex<SinkState>>>,
    AxPath(rest): AxPath<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let path = format!("/{rest}");
    let parts: Vec<&str> = rest.split('/').collect();
    let mut hit = Hit {
        method: method.to_string(),
        path: path.clone(),
        query: uri.query().unwrap_or("").to_string(),
        headers: headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        status: 200,
        at: Instant::now(),
    };
    // Recorded on arrival (a request whose answer never got out still counts); the
    // status is filled in once known.
    let (count, switched_down, index) = {
        let mut s = state.lock().unwrap();
        let down = parts.first() == Some(&"switch") && parts.get(1).is_some_and(|name| s.down.contains(*name));
        if down {
            hit.status = 503;
        }
        s.hits.push(hit);
        let index = s.hits.len() - 1;
        let c = s.counters.entry(path.clone()).or_default();
        *c += 1;
        (*c, down, index)
    };
    let response = match parts.first().copied() {
        Some("status") => {
            let code = parts.get(1).and_then(|c| c.parse().ok()).unwrap_or(500);
            (StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), "status").into_response()
        }
        Some("flaky") => {
            let n: u32 = parts.get(1).and_then(|c| c.parse().ok()).unwrap_or(1);
            if count <= n {
                (StatusCode::INTERNAL_SERVER_ERROR, "flaky").into_response()
            } else {
                (StatusCode::OK, "ok after flaking").into_response()
            }
        }
        Some("fail") => {
            // A receiver that refuses (404, permanent) its first n hits of that path, then
            // is fixed.
            let n: u32 = parts.get(1).and_then(|c| c.parse().ok()).unwrap_or(1);
            if count <= n {
                (StatusCode::NOT_FOUND, "not found").into_response()
            } else {
                (StatusCode::OK, "ok after fixing").into_response()
            }
        }
        Some("slow") => {
            let ms: u64 = parts.get(1).and_then(|c| c.parse().ok()).unwrap_or(1000);
            // A slow receiver: the server's delivery timeout is real time on a real socket.
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (StatusCode::OK, "slow ok").into_response()
        }
        Some("body") => (StatusCode::OK, parts.get(1).copied().unwrap_or_default().to_string()).into_response(),
        Some("switch") if switched_down => (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
        _ => (StatusCode::OK, "ok").into_response(),
    };
    if let Some(hit) = state.lock().unwrap().hits.get_mut(index) {
        hit.status = response.status().as_u16();
    }
    response
}

/// Which shape the end-to-end tests drive, from `E2E_SHAPE`: `local` (the default) the
/// local server binary, `aws` the functions under `cargo lambda watch` behind the front
/// door of `scripts/aws-local.sh` (docs/aws.md). The tests talk HTTP to either alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Local,
    Aws,
}

pub fn shape() -> Shape {
    match std::env::var("E2E_SHAPE").as_deref() {
        Err(_) | Ok("") | Ok("local") => Shape::Local,
        Ok("aws") => Shape::Aws,
        Ok(other) => panic!("E2E_SHAPE={other:?}: use local or aws"),
    }
}

/// For a test that only makes sense on the local server: on the AWS shape it says so
/// (with the reason) and the test returns at once.
pub fn local_only(why: &str) -> bool {
    let skip = shape() == Shape::Aws;
    if skip {
        eprintln!("local server only, not run on E2E_SHAPE=aws: {why}");
    }
    skip
}

/// The local server as a child process, or on the AWS shape `scripts/aws-local.sh` (its
/// own process group: stopping it stops the watchers and functions it started).
pub struct Server {
    pub base: String,
    pub port: u16,
    pub data_dir: PathBuf,
    child: Option<Child>,
    extra_env: Vec<(String, String)>,
    /// Where the server's stderr (its trace log) goes; inherited when `None`.
    stderr_file: Option<PathBuf>,
    /// `fresh`: the data directory, removed after the server is stopped.
    _temp: Option<tempfile::TempDir>,
}

/// Read the server's stdout until its `listening on http://ADDR` line, then keep
/// draining it on this thread so the child never blocks on a full pipe.
fn bound_address(stdout: std::process::ChildStdout) -> Option<SocketAddr> {
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("listening on http://").and_then(|a| a.trim().parse::<SocketAddr>().ok()))?;
    std::thread::spawn(move || lines.for_each(drop));
    Some(addr)
}

/// The command for the shape under test.
fn shape_command(data_dir: &Path) -> Command {
    match shape() {
        Shape::Local => {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_postback-server"));
            cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).env("DATA_DIR", data_dir);
            cmd
        }
        Shape::Aws => {
            use std::os::unix::process::CommandExt;
            let mut cmd = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/aws-local.sh"));
            // The whole environment (cargo, rustup, the emulators' endpoints when running:
            // then they are shared), and the target directory this test binary was built in,
            // so the functions are built (or found) there.
            let target = Path::new(env!("CARGO_BIN_EXE_postback-server")).ancestors().nth(2).expect("target dir");
            cmd.env("CARGO_TARGET_DIR", target)
                // The functions check the postbacks' change stamp at every call, so a
                // postback write applies on the next event as on the local server (in
                // production every 500 ms; `aws_functions` measures that propagation).
                .env("POSTBACK_INDEX_CHECK_MS", "0")
                .env("AWS_LOCAL_RELOAD", "0")
                .env("AWS_LOCAL_EXIT_WITH_PARENT", "1")
                .process_group(0);
            cmd
        }
    }
}

impl Server {
    /// Start with test-friendly settings (private targets allowed for the local sink,
    /// fast retries) plus `env` overrides.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)]) -> Server {
        Self::start_with_log(data_dir, env, None).await
    }

    /// As `start`, in a data directory of its own (removed with the server).
    pub async fn fresh(env: &[(&str, &str)]) -> Server {
        let temp = tempfile::tempdir().unwrap();
        let mut server = Self::start(temp.path(), env).await;
        server._temp = Some(temp);
        server
    }

    /// As `start`, with the server's trace log (stderr) appended to `log` (across
    /// restarts), for tests that read what the server logged.
    pub async fn start_with_log(data_dir: &Path, env: &[(&str, &str)], log: Option<&Path>) -> Server {
        let mut server = Server {
            base: String::new(),
            port: 0,
            data_dir: data_dir.to_path_buf(),
            child: None,
            extra_env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            stderr_file: log.map(Path::to_path_buf),
            _temp: None,
        };
        server.spawn().await;
        server
    }

    async fn spawn(&mut self) {
        let mut cmd = shape_command(&self.data_dir);
        // The OS picks a free port; the server prints the address it bound.
        cmd.env("PORT", "0")
            .env("ADMIN_API_KEY", ADMIN_KEY)
            .env("INGEST_API_KEY", INGEST_KEY)
            .env("ALLOW_PRIVATE_TARGETS", "true")
            .env("RETRY_BASE_DELAY_MS", "200")
            .env("RETRY_MAX_ATTEMPTS", "3")
            .env("DELIVERY_TIMEOUT_MS", "2000")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(match &self.stderr_file {
                Some(path) => Stdio::from(
                    std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the server log"),
                ),
                None => Stdio::inherit(),
            });
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start the server");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);
        let addr = tokio::task::spawn_blocking(move || bound_address(stdout)).await.unwrap();
        let addr = addr.expect("the server exited before printing the address it listens on");
        self.port = addr.port();
        self.base = format!("http://{addr}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client.get(format!("{}/health", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server did not become healthy");
            // Polling the starting server process.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no chance to flush or finish anything. (On the AWS shape: SIGTERM,
    /// which stops what `aws-local.sh` started; a SIGKILL would leave it running.)
    pub fn kill9(&mut self) {
        if shape() == Shape::Aws {
            if self.child.is_some() {
                self.stop_aws();
            }
            return;
        }
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// `aws-local.sh` stops everything it started on SIGTERM; its process group gets a
    /// SIGKILL if that takes more than 30 s.
    fn stop_aws(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            // Polling the stopping process.
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        let _ = child.wait();
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
            // Polling the stopping process.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    pub fn client(&self) -> Api {
        Api { base: self.base.clone(), http: reqwest::Client::new() }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A thin API client.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder) -> Reply {
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let body =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        Reply { status, body }
    }
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
        let mut req = self.http.request(method, format!("{}{}", self.base, path)).header("x-api-key", ADMIN_KEY);
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.send(req).await
    }
    pub async fn get(&self, path: &str) -> Reply {
        self.admin(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.admin(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn ingest(&self, body: Value) -> Reply {
        let req = self.http.post(format!("{}/events", self.base)).header("x-api-key", INGEST_KEY).json(&body);
        self.send(req).await
    }
    pub async fn ingest_get(&self, query: &str) -> Reply {
        self.send(self.http.get(format!("{}/events?{}", self.base, query))).await
    }
    pub async fn raw(&self, req: reqwest::RequestBuilder) -> Reply {
        self.send(req).await
    }
    /// Create a postback; panics unless 201.
    pub async fn create_postback(&self, body: Value) -> String {
        let r = self.post("/postbacks", body).await;
        assert_eq!(r.status, 201, "create postback: {}", r.body);
        r.body["id"].as_str().unwrap().to_string()
    }
    /// Log entries for a filter query (all pages).
    pub async fn logs(&self, query: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut q = format!("/logs?limit=500&{query}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={c}"));
            }
            let r = self.get(&q).await;
            assert_eq!(r.status, 200, "logs: {}", r.body);
            items.extend(r.body["items"].as_array().unwrap().iter().cloned());
            match r.body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return items,
            }
        }
    }
    /// A positive signal that the dispatcher has worked through everything due before
    /// now: fire a click postback (its own offer, `delay_seconds` later) and wait for it at
    /// the sink. The queue hands out firings in due order, so any firing that was due
    /// earlier (a wrong retry, a re-fire after a restart) has been sent by the time the
    /// sentinel arrives. Replaces "sleep, then assert nothing more arrived". (Fair
    /// sending passes over a destination with `DESTINATION_CONCURRENCY` requests in
    /// flight: the order holds among firings to the sentinel's own sink.) On the AWS
    /// shape SQS keeps no due order, so there it bounds the wait without proving more.
    pub async fn sentinel(&self, sink: &Sink, name: &str, delay_seconds: u32) {
        let offer = format!("sentinel-{name}");
        self.create_postback(serde_json::json!({
            "name": format!("Sentinel {name}"), "type": "click", "offers": [offer],
            "delay_seconds": delay_seconds,
            "url": sink.url(&format!("/ok/sentinel/{name}?t={{transaction_id}}")),
        }))
        .await;
        let r = self
            .ingest(serde_json::json!({"type": "click", "transaction_id": format!("S-{name}"),
                "offer_id": offer, "publisher_id": "sentinel"}))
            .await;
        assert_eq!(r.status, 202, "sentinel click: {}", r.body);
        let wait = Duration::from_secs(u64::from(delay_seconds) + 20);
        let hits = sink.wait_for(&format!("/ok/sentinel/{name}"), 1, wait).await;
        assert_eq!(hits.len(), 1, "sentinel {name} did not arrive");
    }

    /// Wait until the logs for `query` hold at least `n` entries matching `pred`.
    pub async fn wait_logs(
        &self,
        query: &str,
        n: usize,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        loop {
            let items: Vec<Value> = self.logs(query).await.into_iter().filter(|e| pred(e)).collect();
            if items.len() >= n || Instant::now() > deadline {
                return items;
            }
            // Polling the server's log (its dispatcher is another process).
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
