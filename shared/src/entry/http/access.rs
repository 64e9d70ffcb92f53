//! `/keys`, `/audit` and `/me`: thin handlers like the others.

use axum::extract::{RawQuery, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::json;

use super::extract::{query_pairs, Call, JsonBody, KeyId};
use super::{parse, ApiError, State};
use crate::domain::access::Caller;

type ApiResult = Result<Response, ApiError>;

pub async fn create_key(Call { s, caller }: Call, body: JsonBody) -> ApiResult {
    let value = body.required("body")?;
    let spec = parse::access::key_spec(&value)?;
    let created = s.app.create_key(&caller, spec).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

pub async fn list_keys(AxumState(s): AxumState<State>) -> ApiResult {
    Ok(Json(json!({ "items": s.app.list_keys().await? })).into_response())
}

pub async fn revoke_key(Call { s, caller }: Call, KeyId(id): KeyId) -> ApiResult {
    s.app.revoke_key(&caller, &id).await?;
    // This process stops trusting its cache at once; others within `KEY_CACHE_TTL`.
    s.keys.forget_all();
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_audit(AxumState(s): AxumState<State>, RawQuery(q): RawQuery) -> ApiResult {
    let filter = parse::access::audit_filter(&query_pairs(q.as_deref()))?;
    Ok(Json(s.app.query_audit(&filter).await?).into_response())
}

/// `GET /me`: the calling key.
pub async fn me(Extension(caller): Extension<Caller>) -> ApiResult {
    let a = caller.actor;
    Ok(Json(json!({"id": a.key_id, "name": a.name, "role": a.role, "publisher_id": a.publisher_id})).into_response())
}
