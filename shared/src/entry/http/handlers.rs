//! Thin handlers: parse, call the service, shape the response.

use std::any::Any;
use std::time::Instant;

use axum::extract::{Path, RawQuery, Request, State as AxumState};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::extract::{query_pairs, valid_id, Call, JsonBody, LogId, PostbackId};
use super::parse::{self, event::EventsBody};
use super::{ApiError, State};
use crate::domain::access::Caller;
use crate::domain::event::Event;
use crate::domain::ValidationError;
use crate::service::config_api::{shown, Sample};

type ApiResult = Result<Response, ApiError>;

pub async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub async fn openapi(AxumState(s): AxumState<State>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], super::openapi_document(s.routes)).into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("route".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

pub fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::Internal.into_response()
}

/// One line per request: method, path (never the query: it may hold `?key=`), status,
/// latency.
pub async fn access_log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    tracing::debug!(%method, %path, status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    response
}

pub async fn create_postback(Call { s, caller }: Call, body: JsonBody) -> ApiResult {
    let value = body.required("body")?;
    parse::postback::owner_is_callers(&value, &caller)?;
    let saved = s.app.create_postback_by(&caller, parse::postback::spec_from_json(&value)?).await?;
    let location = format!("/postbacks/{}", saved.postback.id);
    let resource = s.app.resource(saved.shown()).await?;
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(resource)).into_response())
}

pub async fn list_postbacks(Call { s, caller }: Call, RawQuery(q): RawQuery) -> ApiResult {
    let filter = parse::query::postback_filter(&query_pairs(q.as_deref()))?;
    let shown_items: Vec<_> =
        s.app.list_postbacks_in(&caller.visibility(), &filter).await?.into_iter().map(shown).collect();
    let items = s.app.resources(shown_items).await?;
    Ok(Json(json!({ "items": items })).into_response())
}

pub async fn get_postback(Call { s, caller }: Call, PostbackId(id): PostbackId) -> ApiResult {
    let postback = shown(s.app.get_postback_in(&caller.visibility(), &id).await?);
    Ok(Json(s.app.resource(postback).await?).into_response())
}

/// `GET /templates`: the destination template library.
pub async fn list_templates() -> Response {
    let items: Vec<_> = crate::domain::library::all().collect();
    Json(json!({ "items": items })).into_response()
}

/// `GET /templates/{id}`: one template (404 for an unknown id).
pub async fn get_template(Path(id): Path<String>) -> ApiResult {
    let entry = crate::domain::library::find(&id).ok_or_else(|| ApiError::NotFound("template".into()))?;
    Ok(Json(&entry.template).into_response())
}

pub async fn postback_versions(Call { s, caller }: Call, PostbackId(id): PostbackId) -> ApiResult {
    Ok(Json(json!({ "items": s.app.postback_versions_in(&caller.visibility(), &id).await? })).into_response())
}

pub async fn postback_stats(Call { s, caller }: Call, Path(id): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    // The query is checked before the id, as it always was.
    let hours = parse::query::stats_hours(&query_pairs(q.as_deref()))?;
    let id = valid_id(id, PostbackId::WHAT)?;
    Ok(Json(json!({ "buckets": s.app.postback_stats_in(&caller.visibility(), &id, hours).await? })).into_response())
}

pub async fn replace_postback(Call { s, caller }: Call, PostbackId(id): PostbackId, body: JsonBody) -> ApiResult {
    let value = body.required("body")?;
    let spec = match parse::postback::owner_is_callers(&value, &caller)
        .and_then(|()| parse::postback::spec_from_json(&value))
    {
        Ok(spec) => spec,
        Err(invalid) => {
            // An unknown id is a 404 whatever the body (the service checks the id before
            // anything else); only a refused body costs this extra read.
            s.app.get_postback_in(&caller.visibility(), &id).await?;
            return Err(invalid.into());
        }
    };
    let saved = s.app.replace_postback_by(&caller, &id, spec).await?.shown();
    Ok(Json(s.app.resource(saved).await?).into_response())
}

pub async fn get_signing_secret(Call { s, caller }: Call, PostbackId(id): PostbackId) -> ApiResult {
    Ok(Json(s.app.signing_secret_by(&caller, &id).await?).into_response())
}

pub async fn rotate_signing_secret(Call { s, caller }: Call, PostbackId(id): PostbackId) -> ApiResult {
    Ok(Json(s.app.rotate_signing_secret_by(&caller, &id).await?).into_response())
}

/// `POST /postbacks/{id}/resume`: close the breaker now and release its held firings.
pub async fn resume_postback(Call { s, caller }: Call, PostbackId(id): PostbackId) -> ApiResult {
    Ok(Json(s.app.resume_postback_by(&caller, &id).await?).into_response())
}

/// `POST /postbacks/{id}/approve` (admin): apply a partner's pending change.
pub async fn approve_postback(Call { s, caller }: Call, PostbackId(id): PostbackId) -> ApiResult {
    let saved = s.app.approve_postback_by(&caller, &id).await?.shown();
    Ok(Json(s.app.resource(saved).await?).into_response())
}

/// `POST /postbacks/{id}/reject` (admin): `{"reason": "..."}` (1–500 characters).
pub async fn reject_postback(Call { s, caller }: Call, PostbackId(id): PostbackId, body: JsonBody) -> ApiResult {
    let value = body.required("reason")?;
    let reason = match value.get("reason") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(r)) => Some(r.as_str()),
        Some(other) => {
            return Err(ValidationError::invalid(
                "reason",
                format!("reason must be a string, not {}", crate::domain::error::json_kind(other)),
            )
            .into())
        }
    };
    let saved = s.app.reject_postback_by(&caller, &id, reason).await?.shown();
    Ok(Json(s.app.resource(saved).await?).into_response())
}

pub async fn delete_postback(Call { s, caller }: Call, PostbackId(id): PostbackId) -> ApiResult {
    s.app.delete_postback_by(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn preview_postback(Call { s, caller }: Call, PostbackId(id): PostbackId, body: JsonBody) -> ApiResult {
    let sample = sample_event(&s, &caller, &id, body).await?;
    Ok(Json(s.app.preview_postback_in(&caller.visibility(), &id, sample).await?).into_response())
}

pub async fn test_postback(Call { s, caller }: Call, PostbackId(id): PostbackId, body: JsonBody) -> ApiResult {
    let sample = sample_event(&s, &caller, &id, body).await?;
    Ok(Json(s.app.test_postback_by(&caller, &id, sample).await?).into_response())
}

/// The sample of preview/test: the body's fields over defaults suited to the stored
/// postback (an alert postback's: a sample alert).
async fn sample_event(s: &State, caller: &Caller, id: &str, body: JsonBody) -> Result<Sample, ApiError> {
    let postback = s.app.get_postback_in(&caller.visibility(), id).await?;
    Ok(parse::postback::sample(&postback, body.0.as_ref(), s.app.ports.clock.now())?)
}

/// Prometheus text exposition format 0.0.4.
pub async fn metrics(AxumState(s): AxumState<State>) -> ApiResult {
    let text = s.app.metrics_text().await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

pub async fn list_logs(Call { s, caller }: Call, RawQuery(q): RawQuery) -> ApiResult {
    let filter = parse::query::log_filter(&query_pairs(q.as_deref()))?;
    Ok(Json(s.app.query_logs_in(&caller.visibility(), &filter).await?).into_response())
}

pub async fn get_log(Call { s, caller }: Call, LogId(id): LogId) -> ApiResult {
    Ok(Json(s.app.get_log_in(&caller.visibility(), &id).await?).into_response())
}

pub async fn resend_log(Call { s, caller }: Call, LogId(id): LogId) -> ApiResult {
    let entry = s.app.resend_log_by(&caller, &id).await?;
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

/// `POST /logs/replay`: the `GET /logs` filters as JSON, `from` required (an empty body
/// lacks it), `dry_run`, `cursor`.
pub async fn replay_logs(Call { s, caller }: Call, body: JsonBody) -> ApiResult {
    let value = body.required("from")?;
    let request = parse::replay::replay_request(&value)?;
    Ok(Json(s.app.replay_by(&caller, &request).await?).into_response())
}

/// `POST /events`: one event object, or `{"events": [...]}` (1..=500). A batch is
/// validated whole before anything is written: one bad event rejects the batch with
/// its index in the field name.
pub async fn post_events(AxumState(s): AxumState<State>, body: JsonBody) -> ApiResult {
    let value = body.required("body")?;
    match parse::event::events_body(&value, s.app.ports.clock.now())? {
        EventsBody::Batch(events) => {
            let results = s.app.ingest(events).await?;
            let duplicates = results.iter().filter(|r| r.duplicate).count();
            Ok((
                StatusCode::ACCEPTED,
                Json(json!({
                    "accepted": results.len() - duplicates,
                    "duplicates": duplicates,
                    "results": results,
                })),
            )
                .into_response())
        }
        EventsBody::One(event) => single(&s, *event).await,
    }
}

/// `GET /events?type=...&transaction_id=...` for trackers that only do GET.
pub async fn get_events(AxumState(s): AxumState<State>, RawQuery(q): RawQuery) -> ApiResult {
    let event = parse::event::from_query(&query_pairs(q.as_deref()), s.app.ports.clock.now())?;
    single(&s, event).await
}

async fn single(s: &State, event: Event) -> ApiResult {
    let mut results = s.app.ingest(vec![event]).await?;
    let result = results.pop().ok_or(ApiError::Internal)?;
    Ok((StatusCode::ACCEPTED, Json(result)).into_response())
}
