//! One HTTP front door for the watched functions, routed as the template's API Gateway
//! HTTP API routes them.
//!
//! The routes are read from `template.yaml` itself (each function's `HttpApi` events:
//! method, path, and the function's `Binary`), so the front door cannot drift from what
//! is deployed. A request that matches no route gets API Gateway's answer, 404
//! `{"message":"Not Found"}` (an HTTP API has no 405: a path served for other methods
//! is not found either). A matched request becomes an API Gateway HTTP API payload 2.0
//! event (`routeKey`, `rawPath`, `rawQueryString`, `pathParameters`, `cookies`,
//! comma-joined headers, base64 for non-text bodies) posted to the function's watcher
//! through the Lambda Invoke API, and the function's 2.0 response becomes the HTTP
//! response. Invoke rather than the watcher's function-URL emulation: a function URL
//! event has no `routeKey` or `pathParameters` and its own `requestContext`, so only
//! the invoke path hands the function what API Gateway hands it in production.
//!
//! API Gateway's own answers are kept too: a body over 10 MB is 413, a function error
//! or an unreadable response 500 `{"message":"Internal Server Error"}`, no answer within
//! 30 s (the integration timeout) 503 `{"message":"Service Unavailable"}`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use base64::Engine;
use postback::adapters::system::SystemClock;
use postback::ports::Clock;
use serde_json::{json, Map, Value};

/// The deployed API's definition.
pub const TEMPLATE: &str = include_str!("../../../../template.yaml");
/// API Gateway HTTP API's largest request body.
const MAX_BODY: usize = 10 * 1024 * 1024;
/// API Gateway's integration timeout.
const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);

/// One `HttpApi` event of the template: `method` (or `ANY`), `path` with `{param}` and
/// `{param+}` segments, and the function (its binary name) that serves it.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub method: String,
    pub path: String,
    pub function: String,
}

#[derive(Clone)]
pub struct FrontDoor {
    routes: Arc<Vec<Route>>,
    /// Function → its Invoke API URL.
    invoke: Arc<HashMap<String, String>>,
    http: reqwest::Client,
}

impl FrontDoor {
    pub fn from_template(template: &str, invoke: HashMap<String, String>) -> anyhow::Result<Self> {
        let routes = routes(template)?;
        if let Some(r) = routes.iter().find(|r| !invoke.contains_key(&r.function)) {
            anyhow::bail!("no watcher given for {} (route {} {})", r.function, r.method, r.path);
        }
        let http = reqwest::Client::builder().timeout(INTEGRATION_TIMEOUT).build()?;
        Ok(Self { routes: Arc::new(routes), invoke: Arc::new(invoke), http })
    }

    pub async fn bind(&self, port: u16) -> anyhow::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("cannot bind 127.0.0.1:{port}"))
    }

    /// A `GET /health` event for each function, for the warm-up.
    pub fn warm_up_invocations(&self) -> Vec<(String, String, Vec<u8>)> {
        let mut functions: Vec<&String> = self.invoke.keys().collect();
        functions.sort();
        functions
            .into_iter()
            .map(|f| {
                let event = event(
                    "GET /health",
                    &axum::http::Method::GET,
                    "/health",
                    "",
                    &HeaderMap::new(),
                    BTreeMap::new(),
                    &[],
                    "127.0.0.1",
                );
                (f.clone(), self.invoke[f].clone(), serde_json::to_vec(&event).unwrap_or_default())
            })
            .collect()
    }

    /// Serves until the caller stops it; prints `listening on http://ADDR` first.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        let addr = listener.local_addr()?;
        println!("listening on http://{addr}");
        std::io::Write::flush(&mut std::io::stdout())?;
        let app = axum::Router::new().fallback(handle).with_state(self.clone());
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
        Ok(())
    }

    /// The route API Gateway picks for `method` and `path`, and the path parameters.
    pub fn route(&self, method: &str, path: &str) -> Option<(&Route, BTreeMap<String, String>)> {
        pick(&self.routes, method, path)
    }
}

/// Every `HttpApi` event of every function in the template.
pub fn routes(template: &str) -> anyhow::Result<Vec<Route>> {
    let doc: serde_yaml::Value = serde_yaml::from_str(template).context("template.yaml is not YAML")?;
    let mut routes = Vec::new();
    for (_, resource) in doc["Resources"].as_mapping().into_iter().flatten() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        for (_, e) in resource["Properties"]["Events"].as_mapping().into_iter().flatten() {
            if e["Type"].as_str() != Some("HttpApi") {
                continue;
            }
            let function = resource["Metadata"]["BuildProperties"]["Binary"].as_str().context("a function's Binary")?;
            let (method, path) = (e["Properties"]["Method"].as_str(), e["Properties"]["Path"].as_str());
            routes.push(Route {
                method: method.unwrap_or("ANY").to_uppercase(),
                path: path.context("an HttpApi event's Path")?.to_string(),
                function: function.to_string(),
            });
        }
    }
    anyhow::ensure!(!routes.is_empty(), "no HttpApi routes in template.yaml");
    Ok(routes)
}

/// API Gateway's choice: the matching route with the most literal segments first (then
/// parameters before a greedy `{proxy+}`), a route for the method before an `ANY` one.
fn pick<'a>(routes: &'a [Route], method: &str, path: &str) -> Option<(&'a Route, BTreeMap<String, String>)> {
    routes
        .iter()
        .filter(|r| r.method == method || r.method == "ANY")
        .filter_map(|r| matches(&r.path, path).map(|(score, params)| ((score, r.method != "ANY"), r, params)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, r, params)| (r, params))
}

/// Whether `path` fits the route's `template`; if so, a specificity score (2 per literal
/// segment, 1 per parameter, 0 for a greedy one, in order) and the decoded parameters.
fn matches(template: &str, path: &str) -> Option<(Vec<u8>, BTreeMap<String, String>)> {
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let want: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let got: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (mut score, mut params) = (Vec::new(), BTreeMap::new());
    for (i, segment) in want.iter().enumerate() {
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix("+}")) {
            let rest = got.get(i..).filter(|rest| !rest.is_empty() && rest.iter().any(|s| !s.is_empty()))?;
            params.insert(name.to_string(), decode(&rest.join("/")));
            score.push(0);
            return Some((score, params));
        }
        let got = *got.get(i)?;
        if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if got.is_empty() {
                return None;
            }
            params.insert(name.to_string(), decode(got));
            score.push(1);
        } else if *segment == got {
            score.push(2);
        } else {
            return None;
        }
    }
    (want.len() == got.len()).then_some((score, params))
}

fn gateway_answer(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::from(json!({ "message": message }).to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
    response
}

async fn handle(
    State(door): State<FrontDoor>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request<Body>,
) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let method = parts.method.as_str().to_string();
    let path = parts.uri.path().to_string();
    let Some((route, params)) = door.route(&method, &path) else {
        return gateway_answer(StatusCode::NOT_FOUND, "Not Found");
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return gateway_answer(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let route_key = format!("{} {}", route.method, route.path);
    let event = event(
        &route_key,
        &parts.method,
        &path,
        parts.uri.query().unwrap_or(""),
        &parts.headers,
        params,
        &body,
        &peer.ip().to_string(),
    );
    let url = &door.invoke[&route.function];
    let answer = door.http.post(url).header("content-type", "application/json").json_body(&event).send().await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) if e.is_timeout() => return gateway_answer(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
        Err(e) => {
            eprintln!("front door: invoking {}: {e}", route.function);
            return gateway_answer(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
    };
    let failed = !answer.status().is_success() || answer.headers().contains_key("x-amz-function-error");
    let bytes = match answer.bytes().await {
        Ok(b) if !failed => b,
        Ok(b) => {
            eprintln!("front door: {} failed: {}", route.function, String::from_utf8_lossy(&b));
            return gateway_answer(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
        Err(e) if e.is_timeout() => return gateway_answer(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
        Err(_) => return gateway_answer(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
    };
    http_response(&bytes).unwrap_or_else(|| {
        eprintln!(
            "front door: {} answered no payload 2.0 response: {}",
            route.function,
            String::from_utf8_lossy(&bytes)
        );
        gateway_answer(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
    })
}

/// reqwest without its `json` feature: the body is serialized here.
trait JsonBody {
    fn json_body(self, value: &Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, value: &Value) -> Self {
        self.body(serde_json::to_vec(value).unwrap_or_default())
    }
}

/// Content types API Gateway passes as text; any other body arrives base64-encoded.
fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    ct.starts_with("text/")
        || ct.ends_with("/json")
        || ct.ends_with("+json")
        || ct.ends_with("/xml")
        || ct.ends_with("+xml")
        || ct.ends_with("/javascript")
        || ct == "application/x-www-form-urlencoded"
}

/// The API Gateway HTTP API payload 2.0 event of a request.
#[allow(clippy::too_many_arguments)]
fn event(
    route_key: &str,
    method: &axum::http::Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    params: BTreeMap<String, String>,
    body: &[u8],
    source_ip: &str,
) -> Value {
    let mut joined: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let value = value.to_str().unwrap_or_default();
        if *name == axum::http::header::COOKIE {
            cookies.extend(value.split(';').map(|c| c.trim().to_string()).filter(|c| !c.is_empty()));
        } else {
            joined.entry(name.as_str().to_string()).or_default().push(value);
        }
    }
    let mut header_map: Map<String, Value> = joined.into_iter().map(|(k, v)| (k, Value::from(v.join(",")))).collect();
    header_map.insert("x-forwarded-for".into(), source_ip.into());
    header_map.insert("x-forwarded-proto".into(), "http".into());
    let mut query_map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        query_map.entry(k.into_owned()).or_default().push(v.into_owned());
    }
    // API Gateway stamps each request with the time it arrived.
    let now = SystemClock.now();
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
    let text = std::str::from_utf8(body).ok().filter(|_| is_text(content_type));
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query,
        "headers": header_map,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or("127.0.0.1"),
            "domainPrefix": "local",
            "http": {
                "method": method.as_str(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get("user-agent").and_then(|h| h.to_str().ok()).unwrap_or(""),
            },
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": route_key,
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    if !query_map.is_empty() {
        let joined: Map<String, Value> = query_map.into_iter().map(|(k, v)| (k, Value::from(v.join(",")))).collect();
        event["queryStringParameters"] = Value::Object(joined);
    }
    if !params.is_empty() {
        event["pathParameters"] = json!(params);
    }
    if !body.is_empty() {
        match text {
            Some(text) => event["body"] = text.into(),
            None => {
                event["body"] = base64::engine::general_purpose::STANDARD.encode(body).into();
                event["isBase64Encoded"] = true.into();
            }
        }
    }
    event
}

/// The function's payload 2.0 response as an HTTP response. A bare JSON value (no
/// `statusCode`) is a 200 with that JSON as its body, as API Gateway infers it.
fn http_response(bytes: &[u8]) -> Option<Response<Body>> {
    let value: Value = serde_json::from_slice(bytes).ok()?;
    let Some(status) = value.get("statusCode") else {
        if value.get("errorType").is_some() && value.get("errorMessage").is_some() {
            return None;
        }
        let mut response = Response::new(Body::from(bytes.to_vec()));
        response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
        return Some(response);
    };
    let status = StatusCode::from_u16(u16::try_from(status.as_u64()?).ok()?).ok()?;
    let body = match value.get("body").and_then(Value::as_str) {
        None => Vec::new(),
        Some(b) if value["isBase64Encoded"] == true => base64::engine::general_purpose::STANDARD.decode(b).ok()?,
        Some(b) => b.as_bytes().to_vec(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in value.get("headers").and_then(Value::as_object).into_iter().flatten() {
        let (Ok(name), Some(Ok(value))) = (name.parse::<HeaderName>(), value.as_str().map(HeaderValue::from_str))
        else {
            continue;
        };
        headers.insert(name, value);
    }
    for (name, values) in value.get("multiValueHeaders").and_then(Value::as_object).into_iter().flatten() {
        let Ok(name) = name.parse::<HeaderName>() else { continue };
        headers.remove(&name);
        for v in values.as_array().into_iter().flatten().filter_map(Value::as_str) {
            if let Ok(v) = HeaderValue::from_str(v) {
                headers.append(name.clone(), v);
            }
        }
    }
    for cookie in value.get("cookies").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if let Ok(v) = HeaderValue::from_str(cookie) {
            headers.append(axum::http::header::SET_COOKIE, v);
        }
    }
    headers.insert("apigw-requestid", HeaderValue::from_static("local"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_as_the_template_declares_them() {
        let routes = routes(TEMPLATE).unwrap();
        let to = |m: &str, p: &str| pick(&routes, m, p).map(|(r, params)| (r.function.clone(), params));
        assert_eq!(to("POST", "/events").unwrap().0, "ingest");
        assert_eq!(to("GET", "/events").unwrap().0, "ingest");
        assert_eq!(to("GET", "/health").unwrap().0, "config-api");
        let (f, params) = to("POST", "/postbacks/pb_1/secret/rotate").unwrap();
        assert_eq!((f.as_str(), params["id"].as_str()), ("config-api", "pb_1"));
        // The literal route wins over `/logs/{id}`; a GET of it is `/logs/{id}`.
        assert_eq!(pick(&routes, "POST", "/logs/replay").unwrap().0.path, "/logs/replay");
        assert_eq!(pick(&routes, "GET", "/logs/replay").unwrap().0.path, "/logs/{id}");
        for (m, p) in [
            ("GET", "/metrics"),
            ("PATCH", "/postbacks"),
            ("GET", "/nope"),
            ("GET", "/postbacks/"),
            ("DELETE", "/events"),
        ] {
            assert!(to(m, p).is_none(), "{m} {p} is not routed");
        }
    }
}
