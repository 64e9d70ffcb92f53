//! The one place service errors become HTTP responses:
//! `{"error": {"code": "...", "message": "...", "field": ...}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::domain::ValidationError;
use crate::ports::StoreError;
use crate::service::ServiceError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("missing or wrong API key")]
    Unauthorized { field: &'static str },
    #[error("this key's role may not do this")]
    Forbidden,
    #[error("{0}")]
    ForbiddenBecause(&'static str),
    #[error("too many {what}; retry after {retry_after} s")]
    TooManyRequests { what: &'static str, retry_after: u64 },
    #[error("{0} not found")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    #[error("a dependency is unavailable; nothing was written, retry later")]
    Unavailable(#[source] StoreError),
    #[error("internal error")]
    Internal,
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'a str,
    message: String,
    field: Option<&'a str>,
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Validation(v) => ApiError::Validation(v),
            ServiceError::NotFound(what) => ApiError::NotFound(what.to_string()),
            ServiceError::Conflict(m) => ApiError::Conflict(m),
            ServiceError::Forbidden(why) => ApiError::ForbiddenBecause(why),
            ServiceError::TooMany { what, retry_after } => ApiError::TooManyRequests { what, retry_after },
            ServiceError::Store(StoreError::Conflict(m)) => ApiError::Conflict(m),
            ServiceError::Store(s) => ApiError::Unavailable(s),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ServiceError::Store(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, field) = match &self {
            ApiError::Validation(v) => (StatusCode::BAD_REQUEST, v.code, Some(v.field.as_str())),
            ApiError::Unauthorized { field } => (StatusCode::UNAUTHORIZED, "unauthorized", Some(*field)),
            ApiError::Forbidden | ApiError::ForbiddenBecause(_) => (StatusCode::FORBIDDEN, "forbidden", None),
            ApiError::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests", None),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", None),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", None),
            ApiError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", Some("body")),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", Some("content-type"))
            }
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None),
            ApiError::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        let message = match &self {
            ApiError::Validation(v) => v.message.clone(),
            other => other.to_string(),
        };
        if let ApiError::Unavailable(source) = &self {
            tracing::error!(error = %source, "dependency unavailable");
        }
        let field = field.filter(|f| !f.is_empty());
        let mut response = (status, Json(Body { error: Detail { code, message, field } })).into_response();
        if let ApiError::TooManyRequests { retry_after, .. } = &self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(*retry_after));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
