//! API key checks. The admin and ingest keys are separate secrets; comparison is
//! constant time (over SHA-256 digests, so the key length does not leak either).

use axum::extract::{Request, State as AxumState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, State};

pub struct ApiKeys {
    admin: [u8; 32],
    ingest: [u8; 32],
}

impl ApiKeys {
    pub fn new(admin_key: &str, ingest_key: &str) -> Self {
        Self { admin: digest(admin_key), ingest: digest(ingest_key) }
    }
    fn is_admin(&self, presented: &str) -> bool {
        bool::from(digest(presented).ct_eq(&self.admin))
    }
    fn is_ingest(&self, presented: &str) -> bool {
        bool::from(digest(presented).ct_eq(&self.ingest))
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn header_key(request: &Request) -> Option<&str> {
    request.headers().get("x-api-key").and_then(|v| v.to_str().ok())
}

pub(crate) async fn require_admin(AxumState(state): AxumState<State>, request: Request, next: Next) -> Response {
    match header_key(&request) {
        Some(k) if state.keys.is_admin(k) => next.run(request).await,
        _ => ApiError::Unauthorized { field: "x-api-key" }.into_response(),
    }
}

/// Ingest takes the key from `x-api-key`, or for GET from `?key=` (pixel trackers).
pub(crate) async fn require_ingest(AxumState(state): AxumState<State>, request: Request, next: Next) -> Response {
    let ok = match header_key(&request) {
        Some(k) => state.keys.is_ingest(k),
        None if request.method() == axum::http::Method::GET => request
            .uri()
            .query()
            .and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "key").map(|(_, v)| v))
            .is_some_and(|k| state.keys.is_ingest(&k)),
        None => false,
    };
    if ok {
        next.run(request).await
    } else {
        ApiError::Unauthorized { field: "x-api-key" }.into_response()
    }
}
