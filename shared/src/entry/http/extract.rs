//! Request parsing with our own limits and error shapes (axum's built-in extractor
//! rejections are plain text).

use axum::body::Body;
use axum::http::{header, HeaderMap};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::ApiError;
use crate::domain::ValidationError;

/// Largest request body accepted (413 above).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Read a JSON body. `Ok(None)` for an empty body. A body needs a JSON content type
/// (`application/json` or `+json`; a missing header is tolerated for curl users).
pub async fn json_body(headers: &HeaderMap, body: Body) -> Result<Option<serde_json::Value>, ApiError> {
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
