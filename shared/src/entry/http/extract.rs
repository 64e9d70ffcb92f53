//! Request parsing with our own limits and error shapes (axum's built-in extractor
//! rejections are plain text): the extractors handlers take (`Call`, `JsonBody`,
//! `PostbackId`, `LogId`, `KeyId`), refusing through the one error type, [`ApiError`].

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

use super::{ApiError, State};
use crate::domain::access::Caller;
use crate::domain::ValidationError;

/// Largest request body accepted (413 above).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Ids are server-made and short; anything else cannot exist.
const MAX_ID_LEN: usize = 128;

/// A call by a key: the router's state and the calling key (which the auth layer set).
pub struct Call {
    pub s: State,
    pub caller: Caller,
}

impl FromRequestParts<State> for Call {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, Response> {
        let Extension(caller) =
            Extension::<Caller>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        Ok(Call { s: state.clone(), caller })
    }
}

/// The request's JSON body as [`json_body`] reads it (`None`: empty).
pub struct JsonBody(pub Option<Value>);

impl JsonBody {
    /// The body, which must not be empty (400 `required` naming `field`).
    pub fn required(self, field: &str) -> Result<Value, ApiError> {
        self.0.ok_or_else(|| ValidationError::required(field).into())
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        json_body(&parts.headers, body).await.map(JsonBody)
    }
}

/// The `{id}` of a path, checked to be one that can exist (else 404 naming `what`).
pub fn valid_id(id: String, what: &str) -> Result<String, ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ApiError::NotFound(what.to_string()));
    }
    Ok(id)
}

/// Path-id extractors: `{id}` through [`valid_id`] (a path that is not UTF-8 keeps axum's
/// own answer, as `Path` gives it).
macro_rules! path_id {
    ($($(#[$doc:meta])* $name:ident => $what:literal;)+) => {$(
        $(#[$doc])*
        pub struct $name(pub String);

        impl $name {
            pub const WHAT: &'static str = $what;
        }

        impl<S: Send + Sync> FromRequestParts<S> for $name {
            type Rejection = Response;

            async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
                let Path(id) = Path::<String>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
                valid_id(id, Self::WHAT).map($name).map_err(IntoResponse::into_response)
            }
        }
    )+};
}

path_id! {
    /// `/postbacks/{id}`.
    PostbackId => "postback";
    /// `/logs/{id}`.
    LogId => "log entry";
    /// `/keys/{id}`.
    KeyId => "key";
}

/// Read a JSON body. `Ok(None)` for an empty body. A body needs a JSON content type
/// (`application/json` or `+json`; a missing header is tolerated for curl users).
async fn json_body(headers: &HeaderMap, body: Body) -> Result<Option<serde_json::Value>, ApiError> {
    if let Some(len) = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        if len > MAX_BODY_BYTES as u64 {
            return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES });
        }
    }
    let bytes = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(ApiError::PayloadTooLarge { limit: MAX_BODY_BYTES })
        }
        Err(e) => return Err(ValidationError::invalid("body", format!("could not read the request body: {e}")).into()),
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("");
        if !crate::domain::template::is_json_content_type(ct) {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ValidationError::new("invalid_json", "body", format!("body is not valid JSON: {e}")).into())
}

/// Query pairs in order, percent-decoded (invalid UTF-8 replaced).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
        .unwrap_or_default()
}
