//! The reqwest HttpSender with the destination guard.
//!
//! The guard is applied where it cannot be bypassed: a custom DNS resolver drops every
//! non-public address of a host name before reqwest connects (so DNS rebinding between
//! a check and the connect is impossible), and IP-literal URLs, for which reqwest never
//! calls the resolver, are checked with `guard::check_url` first. Redirects are not
//! followed and no proxy is used, so neither can route a request around the guard.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

use crate::domain::delivery::{OutboundRequest, OutboundResponse, SendFailure};
use crate::domain::guard;
use crate::domain::log::MAX_LOGGED_RESPONSE_BYTES;
use crate::ports::HttpSender;

/// How the sender is built; see `SenderConfig::new` for the usual values.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Whole-request timeout (connect, send, and reading the kept part of the body).
    pub timeout: Duration,
    /// Let postbacks reach private, loopback and link-local addresses (local dev, tests).
    pub allow_private_targets: bool,
    /// Response body bytes kept; the rest is never read.
    pub max_response_bytes: usize,
    pub user_agent: String,
}

impl SenderConfig {
    /// The defaults: body cap `MAX_LOGGED_RESPONSE_BYTES`, user agent
    /// `postback-manager/<version>`.
    pub fn new(timeout: Duration, allow_private_targets: bool) -> Self {
        Self {
            timeout,
            allow_private_targets,
            max_response_bytes: MAX_LOGGED_RESPONSE_BYTES,
            user_agent: concat!("postback-manager/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// The HTTP client could not be built (TLS set-up failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct SenderBuildError(#[from] reqwest::Error);

/// Idle connections kept per destination host, so busy receivers reuse connections.
const IDLE_CONNECTIONS_PER_HOST: usize = 32;
const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(90);
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Connecting should never take long; a dead host fails fast even with a long timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Headers that describe the connection or the body framing, which the client owns.
/// A template setting them could desynchronise the request, so they are refused.
const CONNECTION_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Built once and shared: it holds the connection pool.
#[derive(Debug, Clone)]
pub struct ReqwestSender {
    client: reqwest::Client,
    /// For `public_only` requests when `allow_private_targets` lets `client` reach
    /// private addresses: its resolver keeps public ones only (and its pool never holds a
    /// connection `client` opened to a private address).
    public_client: Option<reqwest::Client>,
    config: SenderConfig,
    connect_timeout: Duration,
}

impl ReqwestSender {
    pub fn new(config: SenderConfig) -> Result<Self, SenderBuildError> {
        let connect_timeout = config.timeout.min(MAX_CONNECT_TIMEOUT);
        let client = Self::client(&config, connect_timeout, config.allow_private_targets)?;
        let public_client =
            if config.allow_private_targets { Some(Self::client(&config, connect_timeout, false)?) } else { None };
        Ok(Self { client, public_client, config, connect_timeout })
    }

    fn client(
        config: &SenderConfig,
        connect_timeout: Duration,
        allow_private: bool,
    ) -> Result<reqwest::Client, SenderBuildError> {
        Ok(reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(config.timeout)
            .connect_timeout(connect_timeout)
            .pool_max_idle_per_host(IDLE_CONNECTIONS_PER_HOST)
            .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT)
            .tcp_keepalive(TCP_KEEPALIVE)
            .user_agent(config.user_agent.clone())
            .dns_resolver(GuardedResolver { allow_private })
            .build()?)
    }

    /// The client for `request`: the public-only one for a `public_only` request.
    fn client_for(&self, request: &OutboundRequest) -> &reqwest::Client {
        match &self.public_client {
            Some(public) if request.public_only => public,
            _ => &self.client,
        }
    }

    fn build_request(&self, request: &OutboundRequest) -> Result<reqwest::Request, SendFailure> {
        let url = url::Url::parse(&request.url).map_err(|e| SendFailure::Refused(format!("invalid URL: {e}")))?;
        let allow_private = self.config.allow_private_targets && !request.public_only;
        guard::check_url(&url, allow_private).map_err(SendFailure::Refused)?;
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| SendFailure::Refused(format!("invalid HTTP method {:?}", request.method)))?;
        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for (name, value) in &request.headers {
            let header_name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| SendFailure::Refused(format!("invalid header name {name:?}")))?;
            if CONNECTION_HEADERS.contains(&header_name.as_str()) {
                return Err(SendFailure::Refused(format!("header {name} is managed by the client and cannot be set")));
            }
            // Bytes, not str: non-ASCII UTF-8 is allowed on the wire (obs-text); only
            // control characters are refused. The value is not echoed: it may be a secret.
            let header_value = HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
                SendFailure::Refused(format!("header {name} has an invalid value (control characters?)"))
            })?;
            headers.append(header_name, header_value);
        }
        let mut built = reqwest::Request::new(method, url);
        *built.headers_mut() = headers;
        if let Some(body) = &request.body {
            *built.body_mut() = Some(reqwest::Body::from(body.clone()));
        }
        Ok(built)
    }

    fn failure(&self, error: reqwest::Error) -> SendFailure {
        if let Some(refused) = find_source::<PrivateDestination>(&error) {
            return SendFailure::Refused(refused.to_string());
        }
        let is_connect = error.is_connect();
        if error.is_timeout() {
            let limit = if is_connect { self.connect_timeout } else { self.config.timeout };
            return SendFailure::Timeout(u64::try_from(limit.as_millis()).unwrap_or(u64::MAX));
        }
        // reqwest's message includes the URL, whose query may hold a secret: drop it.
        let message = error_chain(&error.without_url());
        if is_connect {
            SendFailure::Connect(message)
        } else {
            SendFailure::Other(message)
        }
    }
}

#[async_trait]
impl HttpSender for ReqwestSender {
    async fn send(&self, request: &OutboundRequest) -> Result<OutboundResponse, SendFailure> {
        let built = self.build_request(request)?;
        let started = Instant::now();
        let mut response = self.client_for(request).execute(built).await.map_err(|e| self.failure(e))?;
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(RETRY_AFTER).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());

        // Read only up to the cap, chunk by chunk: a huge or endless body cannot eat
        // memory. Dropping the response afterwards closes the connection if unread.
        let cap = self.config.max_response_bytes;
        // Sized by Content-Length when the receiver sends one (most answer "OK" or a
        // short JSON): no 4 KB buffer per request for a two-byte body.
        let expected = response.content_length().map_or(cap, |n| usize::try_from(n).unwrap_or(cap));
        let mut body = Vec::with_capacity(expected.min(cap));
        while body.len() < cap {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = cap - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) => break,
                Err(error) => {
                    // The status already arrived and decides the outcome; a body cut
                    // short (timeout, reset) is kept as far as it came.
                    tracing::debug!(error = %error_chain(&error.without_url()), "response body cut short");
                    break;
                }
            }
        }
        Ok(OutboundResponse {
            status,
            retry_after,
            // Valid UTF-8 (nearly always) becomes the String without a copy.
            body: String::from_utf8(body).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            duration: started.elapsed(),
        })
    }
}

/// A host name resolved only to addresses the guard refuses.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to private addresses ({addresses}); refused by the destination guard")]
pub struct PrivateDestination {
    host: String,
    addresses: String,
}

/// Resolves with the system resolver (`getaddrinfo` via tokio, so `/etc/hosts` and the
/// OS configuration apply exactly as for any other program; no extra dependency) and
/// drops every non-public address unless private targets are allowed.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let allow_private = self.allow_private;
        Box::pin(async move {
            // Port 0: reqwest substitutes the URL's port.
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (kept, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                resolved.into_iter().partition(|addr| allow_private || guard::is_public_ip(addr.ip()));
            if kept.is_empty() && !refused.is_empty() {
                let addresses = refused.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ");
                return Err(Box::new(PrivateDestination { host, addresses }) as Box<dyn StdError + Send + Sync>);
            }
            if !refused.is_empty() {
                tracing::debug!(%host, refused = refused.len(), "dropped non-public addresses of a destination");
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

fn find_source<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current: Option<&'a (dyn StdError + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// "outer: inner: innermost", skipping repeats (hyper errors often repeat their source).
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut message = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        let part = e.to_string();
        if !message.contains(&part) {
            message.push_str(": ");
            message.push_str(&part);
        }
        current = e.source();
    }
    message
}
