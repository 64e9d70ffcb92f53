//! The reqwest sender against a real HTTP server on 127.0.0.1 (started per test).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::Router;
use postback::adapters::sender::{ReqwestSender, SenderConfig};
use postback::domain::delivery::{OutboundRequest, SendFailure};
use postback::ports::HttpSender;

#[derive(Clone, Default)]
struct Hits(Arc<AtomicUsize>);

impl Hits {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

async fn count_hit(State(hits): State<Hits>) -> &'static str {
    hits.0.fetch_add(1, Ordering::SeqCst);
    "hit"
}

async fn echo(method: Method, headers: HeaderMap, body: String) -> String {
    let mut out = format!("{method}\n");
    for name in ["content-type", "authorization", "x-custom", "user-agent"] {
        if let Some(v) = headers.get(name) {
            out.push_str(&format!("{name}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
    }
    out.push_str(&body);
    out
}

/// A body that never ends: the sender must stop reading at its cap.
fn endless_body() -> Body {
    let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    Body::from_stream(futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone())))
}

/// Sends a little, then stalls forever.
fn stalling_body() -> Body {
    let first = futures::stream::once(async { Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"start")) });
    Body::from_stream(futures::StreamExt::chain(first, futures::stream::pending()))
}

async fn start_server() -> (SocketAddr, Hits) {
    let hits = Hits::default();
    let app = Router::new()
        .route("/ok", get(|| async { "hello" }))
        .route("/hit", any(count_hit))
        .route("/echo", any(echo))
        .route("/created", get(|| async { (StatusCode::CREATED, "made") }))
        .route("/redirect", get(|| async { (StatusCode::FOUND, [("location", "/hit")], "moved") }))
        .route("/unavailable", get(|| async { (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "120")], "busy") }))
        .route("/missing", get(|| async { (StatusCode::NOT_FOUND, "nope") }))
        .route(
            "/slow",
            get(|| async {
                // Slower than the sender's timeout, which is reqwest's, on a real socket.
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/huge", get(|| async { Response::new(endless_body()) }))
        .route("/stall", get(|| async { Response::new(stalling_body()).into_response() }))
        .route("/binary", get(|| async { Response::new(Body::from(vec![0x66, 0x6f, 0xff, 0xfe, 0x6f])) }))
        .with_state(hits.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // The task ends with the test's runtime.
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, hits)
}

fn sender(allow_private: bool) -> ReqwestSender {
    ReqwestSender::new(SenderConfig::new(Duration::from_secs(5), allow_private)).unwrap()
}

fn get_req(url: impl Into<String>) -> OutboundRequest {
    OutboundRequest { method: "GET".into(), url: url.into(), headers: BTreeMap::new(), body: None, public_only: false }
}

#[tokio::test]
async fn delivers_2xx_with_body_and_duration() {
    let (addr, _) = start_server().await;
    let s = sender(true);
    let r = s.send(&get_req(format!("http://{addr}/ok"))).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "hello");
    assert_eq!(r.retry_after, None);
    assert!(r.duration > Duration::ZERO && r.duration < Duration::from_secs(5));
    let r = s.send(&get_req(format!("http://{addr}/created"))).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (201, "made"));
}

#[tokio::test]
async fn sends_method_headers_and_body() {
    let (addr, _) = start_server().await;
    let request = OutboundRequest {
        method: "POST".into(),
        url: format!("http://{addr}/echo"),
        headers: [
            ("Content-Type".to_string(), "application/json".to_string()),
            ("Authorization".to_string(), "Bearer abc".to_string()),
            ("X-Custom".to_string(), "v1 café".to_string()),
        ]
        .into(),
        body: Some(r#"{"lead":"T1"}"#.into()),
        public_only: false,
    };
    let r = sender(true).send(&request).await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("POST\n"), "{}", r.body);
    assert!(r.body.contains("content-type: application/json\n"), "{}", r.body);
    assert!(r.body.contains("authorization: Bearer abc\n"), "{}", r.body);
    assert!(r.body.contains("x-custom: v1 café\n"), "{}", r.body);
    assert!(r.body.contains("user-agent: postback-manager/"), "{}", r.body);
    assert!(r.body.ends_with(r#"{"lead":"T1"}"#), "{}", r.body);

    let put = OutboundRequest { method: "PUT".into(), ..request };
    assert!(sender(true).send(&put).await.unwrap().body.starts_with("PUT\n"));
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (addr, hits) = start_server().await;
    let r = sender(true).send(&get_req(format!("http://{addr}/redirect"))).await.unwrap();
    assert_eq!(r.status, 302);
    assert_eq!(r.body, "moved");
    assert_eq!(hits.count(), 0, "the redirect target must not be requested");
}

#[tokio::test]
async fn error_statuses_are_returned_with_retry_after() {
    let (addr, _) = start_server().await;
    let s = sender(true);
    let r = s.send(&get_req(format!("http://{addr}/unavailable"))).await.unwrap();
    assert_eq!((r.status, r.retry_after.as_deref(), r.body.as_str()), (503, Some("120"), "busy"));
    let r = s.send(&get_req(format!("http://{addr}/missing"))).await.unwrap();
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn times_out() {
    let (addr, _) = start_server().await;
    let s = ReqwestSender::new(SenderConfig::new(Duration::from_millis(300), true)).unwrap();
    let started = Instant::now();
    let err = s.send(&get_req(format!("http://{addr}/slow"))).await.unwrap_err();
    assert_eq!(err, SendFailure::Timeout(300));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_stalled_body_keeps_the_status_and_what_arrived() {
    let (addr, _) = start_server().await;
    let s = ReqwestSender::new(SenderConfig::new(Duration::from_millis(400), true)).unwrap();
    let r = s.send(&get_req(format!("http://{addr}/stall"))).await.unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "start"));
    assert!(r.duration >= Duration::from_millis(300), "{:?}", r.duration);
}

#[tokio::test]
async fn connection_refused() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = sender(true).send(&get_req(format!("http://127.0.0.1:{port}/"))).await.unwrap_err();
    match &err {
        SendFailure::Connect(why) => assert!(why.contains("Connection refused"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn huge_body_is_truncated_without_reading_it_all() {
    let (addr, _) = start_server().await;
    let mut config = SenderConfig::new(Duration::from_secs(5), true);
    config.max_response_bytes = 10_000;
    let s = ReqwestSender::new(config).unwrap();
    let r = s.send(&get_req(format!("http://{addr}/huge"))).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 10_000);
    assert!(r.body.bytes().all(|b| b == b'x'));
    // The default cap is the log's.
    let r = sender(true).send(&get_req(format!("http://{addr}/huge"))).await.unwrap();
    assert_eq!(r.body.len(), postback::domain::log::MAX_LOGGED_RESPONSE_BYTES);
}

#[tokio::test]
async fn invalid_utf8_is_kept_lossily() {
    let (addr, _) = start_server().await;
    let r = sender(true).send(&get_req(format!("http://{addr}/binary"))).await.unwrap();
    assert_eq!(r.body, "fo\u{fffd}\u{fffd}o");
}

#[tokio::test]
async fn loopback_is_refused_by_default_and_allowed_when_configured() {
    let (addr, hits) = start_server().await;
    let port = addr.port();
    let strict = sender(false);
    let literal = strict.send(&get_req(format!("http://127.0.0.1:{port}/hit"))).await.unwrap_err();
    assert!(matches!(literal, SendFailure::Refused(_)), "{literal:?}");
    let by_name = strict.send(&get_req(format!("http://localhost:{port}/hit"))).await.unwrap_err();
    match &by_name {
        SendFailure::Refused(why) => assert!(why.contains("resolves only to private addresses"), "{why}"),
        other => panic!("localhost must be refused after DNS: {other:?}"),
    }
    assert_eq!(hits.count(), 0, "nothing may reach the server");

    let open = sender(true);
    assert_eq!(open.send(&get_req(format!("http://127.0.0.1:{port}/hit"))).await.unwrap().status, 200);
    assert_eq!(open.send(&get_req(format!("http://localhost:{port}/hit"))).await.unwrap().status, 200);
    assert_eq!(hits.count(), 2);
}

/// A `public_only` request (a partner's postback) reaches public addresses only, also
/// from a sender that lets other requests reach private ones: by literal and by name
/// (the name resolving only to loopback), and not over a connection the sender's other
/// requests opened to the same server.
#[tokio::test]
async fn public_only_requests_are_refused_private_addresses_whatever_the_sender_allows() {
    let (addr, hits) = start_server().await;
    let port = addr.port();
    let open = sender(true);
    assert_eq!(open.send(&get_req(format!("http://localhost:{port}/hit"))).await.unwrap().status, 200);
    for url in [format!("http://127.0.0.1:{port}/hit"), format!("http://localhost:{port}/hit")] {
        let partner = OutboundRequest { public_only: true, ..get_req(url.clone()) };
        let err = open.send(&partner).await.unwrap_err();
        assert!(matches!(err, SendFailure::Refused(_)), "{url}: {err:?}");
    }
    assert_eq!(hits.count(), 1, "only the network's own request arrived");
}

#[tokio::test]
async fn private_literals_in_any_spelling_are_refused() {
    let s = sender(false);
    for url in [
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0x7f.0.0.1/",
        "http://2130706433/",
        "http://10.0.0.1/",
        "http://0.0.0.0/",
    ] {
        let err = s.send(&get_req(url)).await.unwrap_err();
        assert!(matches!(err, SendFailure::Refused(_)), "{url}: {err:?}");
    }
}

#[tokio::test]
async fn malformed_requests_are_refused_not_panicking() {
    let s = sender(true);
    let with_header = |name: &str, value: &str| OutboundRequest {
        headers: [(name.to_string(), value.to_string())].into(),
        ..get_req("http://127.0.0.1:9/")
    };
    for request in [
        get_req("not a url"),
        get_req("ftp://example.com/file"),
        get_req("http://user:pw@example.com/"),
        OutboundRequest { method: "GE T".into(), ..get_req("http://127.0.0.1:9/") },
        with_header("bad name", "x"),
        with_header("X-Ok", "line\r\nInjected: yes"),
        with_header("X-Ok", "nul\0"),
        with_header("Content-Length", "5"),
        with_header("Transfer-Encoding", "chunked"),
    ] {
        let err = s.send(&request).await.unwrap_err();
        assert!(matches!(err, SendFailure::Refused(_)), "{request:?}: {err:?}");
    }
}

#[tokio::test]
async fn error_messages_do_not_carry_the_url() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let err = sender(true).send(&get_req(format!("http://127.0.0.1:{port}/?token=SECRETVALUE"))).await.unwrap_err();
    assert!(!err.to_string().contains("SECRETVALUE"), "{err}");
}
