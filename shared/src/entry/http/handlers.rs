//! Thin handlers: parse, call the service, shape the response.

use std::any::Any;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, RawQuery, Request, State as AxumState};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::extract::{json_body, query_pairs};
use super::{ApiError, State};
use crate::domain::event::Event;
use crate::domain::log::LogFilter;
use crate::domain::ValidationError;
use crate::service::config_api::{shown, PostbackFilter};
use crate::service::ingest::MAX_BATCH;

type ApiResult = Result<Response, ApiError>;

/// Ids are server-made and short; anything else cannot exist.
const MAX_ID_LEN: usize = 128;

fn id_ok(id: &str, what: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ApiError::NotFound(what.to_string()));
    }
    Ok(())
}

pub async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
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

pub async fn create_postback(AxumState(s): AxumState<State>, headers: HeaderMap, body: Body) -> ApiResult {
    let value = json_body(&headers, body).await?.ok_or_else(|| ValidationError::required("body"))?;
    let postback = s.app.create_postback(&value).await?;
    let location = format!("/postbacks/{}", postback.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(shown(postback))).into_response())
}

pub async fn list_postbacks(AxumState(s): AxumState<State>, RawQuery(q): RawQuery) -> ApiResult {
    let filter = PostbackFilter::from_query(&query_pairs(q.as_deref()))?;
    let items: Vec<_> = s.app.list_postbacks(&filter).await?.into_iter().map(shown).collect();
    Ok(Json(json!({ "items": items })).into_response())
}

pub async fn get_postback(AxumState(s): AxumState<State>, Path(id): Path<String>) -> ApiResult {
    id_ok(&id, "postback")?;
    Ok(Json(shown(s.app.get_postback(&id).await?)).into_response())
}

pub async fn replace_postback(
    AxumState(s): AxumState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    id_ok(&id, "postback")?;
    let value = json_body(&headers, body).await?.ok_or_else(|| ValidationError::required("body"))?;
    Ok(Json(shown(s.app.replace_postback(&id, &value).await?)).into_response())
}

pub async fn delete_postback(AxumState(s): AxumState<State>, Path(id): Path<String>) -> ApiResult {
    id_ok(&id, "postback")?;
    s.app.delete_postback(&id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn preview_postback(
    AxumState(s): AxumState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    id_ok(&id, "postback")?;
    let sample = json_body(&headers, body).await?;
    Ok(Json(s.app.preview_postback(&id, sample.as_ref()).await?).into_response())
}

pub async fn test_postback(
    AxumState(s): AxumState<State>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    id_ok(&id, "postback")?;
    let sample = json_body(&headers, body).await?;
    Ok(Json(s.app.test_postback(&id, sample.as_ref()).await?).into_response())
}

pub async fn list_logs(AxumState(s): AxumState<State>, RawQuery(q): RawQuery) -> ApiResult {
    let filter = LogFilter::from_query(&query_pairs(q.as_deref()))?;
    Ok(Json(s.app.query_logs(&filter).await?).into_response())
}

pub async fn get_log(AxumState(s): AxumState<State>, Path(id): Path<String>) -> ApiResult {
    id_ok(&id, "log entry")?;
    Ok(Json(s.app.get_log(&id).await?).into_response())
}

pub async fn resend_log(AxumState(s): AxumState<State>, Path(id): Path<String>) -> ApiResult {
    id_ok(&id, "log entry")?;
    let entry = s.app.resend_log(&id).await?;
    Ok((StatusCode::CREATED, Json(entry)).into_response())
}

/// `POST /events`: one event object, or `{"events": [...]}` (1..=500). A batch is
/// validated whole before anything is written: one bad event rejects the batch with
/// its index in the field name.
pub async fn post_events(AxumState(s): AxumState<State>, headers: HeaderMap, body: Body) -> ApiResult {
    let value = json_body(&headers, body).await?.ok_or_else(|| ValidationError::required("body"))?;
    let received_at = s.app.ports.clock.now();
    let batch = match &value {
        serde_json::Value::Object(o) if o.contains_key("events") => {
            if o.len() > 1 {
                let extra = o.keys().find(|k| *k != "events").cloned().unwrap_or_default();
                return Err(ValidationError::new(
                    "unknown_field",
                    extra.clone(),
                    format!("a batch has only \"events\"; unexpected {extra:?}"),
                )
                .into());
            }
            Some(
                o.get("events")
                    .and_then(|e| e.as_array())
                    .ok_or_else(|| ValidationError::invalid("events", "events must be an array of event objects"))?,
            )
        }
        serde_json::Value::Object(_) => None,
        _ => return Err(ValidationError::invalid("body", "body must be an event object or {\"events\": [...]}").into()),
    };
    match batch {
        Some(items) => {
            if items.is_empty() {
                return Err(ValidationError::invalid("events", "events must not be empty").into());
            }
            if items.len() > MAX_BATCH {
                return Err(ValidationError::new(
                    "too_many",
                    "events",
                    format!("at most {MAX_BATCH} events per batch, got {}", items.len()),
                )
                .into());
            }
            let events = items
                .iter()
                .enumerate()
                .map(|(i, item)| Event::from_json(item, received_at).map_err(|e| e.within(&format!("events[{i}]."))))
                .collect::<Result<Vec<_>, _>>()?;
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
        None => {
            let event = Event::from_json(&value, received_at)?;
            single(&s, event).await
        }
    }
}

/// `GET /events?type=...&transaction_id=...` for trackers that only do GET.
pub async fn get_events(AxumState(s): AxumState<State>, RawQuery(q): RawQuery) -> ApiResult {
    let event = Event::from_query(&query_pairs(q.as_deref()), s.app.ports.clock.now())?;
    single(&s, event).await
}

async fn single(s: &State, event: Event) -> ApiResult {
    let mut results = s.app.ingest(vec![event]).await?;
    let result = results.pop().ok_or(ApiError::Internal)?;
    Ok((StatusCode::ACCEPTED, Json(result)).into_response())
}
