//! Postback configuration, preview/test, logs and resend.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::{App, AttemptOutcome, ServiceError, ServiceResult};
use crate::domain::condition::all_hold;
use crate::domain::event::{Event, EventType};
use crate::domain::firing::Firing;
use crate::domain::log::{LogEntry, LogFilter, LogPage};
use crate::domain::macros::MacroContext;
use crate::domain::postback::{CompiledPostback, Postback, PostbackSpec};
use crate::domain::redact::{redact_headers, REDACTED};
use crate::domain::ValidationError;

/// Filters of `GET /postbacks` (read by `crate::entry::http::parse::query::postback_filter`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PostbackFilter {
    pub kind: Option<EventType>,
    /// Postbacks that apply to this offer (scope `all` included).
    pub offer_id: Option<String>,
    pub publisher_id: Option<String>,
    pub enabled: Option<bool>,
}

impl PostbackFilter {
    fn matches(&self, p: &Postback) -> bool {
        self.kind.is_none_or(|k| k == p.kind)
            && self.enabled.is_none_or(|e| e == p.enabled)
            && self.offer_id.as_deref().is_none_or(|o| p.offers.contains(Some(o)))
            && self.publisher_id.as_deref().is_none_or(|o| p.publishers.contains(Some(o)))
    }
}

/// A postback as the API shows it: secret header values redacted.
pub fn shown(mut postback: Postback) -> Postback {
    postback.headers = redact_headers(&postback.headers);
    postback
}

/// The rendered request of a preview or test, secrets redacted.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PreviewOutput {
    pub request: RequestView,
    /// Whether the sample event meets the postback's `conditions` (would it match?).
    pub conditions_met: bool,
    /// The sample event the request was rendered for.
    pub event: Event,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResponseView {
    pub status: u16,
    pub body: String,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TestOutput {
    pub request: RequestView,
    /// Whether the sample event meets the postback's `conditions`; a test sends anyway.
    pub conditions_met: bool,
    pub response: Option<ResponseView>,
    pub error: Option<String>,
    pub outcome: crate::domain::log::Outcome,
    pub log_id: String,
    pub delivery_id: String,
}

impl App {
    pub async fn create_postback(&self, spec: PostbackSpec) -> ServiceResult<Postback> {
        let now = self.ports.clock.now();
        let postback = spec.into_postback(new_postback_id(), now, now);
        self.ports.postbacks.create(&postback).await?;
        self.catalog.invalidate().await;
        Ok(postback)
    }

    pub async fn get_postback(&self, id: &str) -> ServiceResult<Postback> {
        self.ports.postbacks.get(id).await?.ok_or(ServiceError::NotFound("postback"))
    }

    pub async fn list_postbacks(&self, filter: &PostbackFilter) -> ServiceResult<Vec<Postback>> {
        let all = self.ports.postbacks.list(filter.kind).await?;
        Ok(all.into_iter().filter(|p| filter.matches(p)).collect())
    }

    /// Replace a postback. A header sent back as `[REDACTED]` keeps its stored value, so
    /// a client can PUT what it GOT without knowing the secret.
    pub async fn replace_postback(&self, id: &str, mut spec: PostbackSpec) -> ServiceResult<Postback> {
        let existing = self.get_postback(id).await?;
        for (name, value) in spec.headers.iter_mut() {
            if value == REDACTED {
                match existing.headers.get(name) {
                    Some(stored) => value.clone_from(stored),
                    None => {
                        return Err(ValidationError::invalid(
                            format!("headers.{name}"),
                            "[REDACTED] keeps a stored secret, but this header has none",
                        )
                        .into())
                    }
                }
            }
        }
        let postback = spec.into_postback(existing.id.clone(), existing.created_at, self.ports.clock.now());
        if !self.ports.postbacks.replace(&postback).await? {
            return Err(ServiceError::NotFound("postback"));
        }
        self.catalog.invalidate().await;
        Ok(postback)
    }

    pub async fn delete_postback(&self, id: &str) -> ServiceResult<()> {
        if !self.ports.postbacks.delete(id).await? {
            return Err(ServiceError::NotFound("postback"));
        }
        self.catalog.invalidate().await;
        Ok(())
    }

    /// Render the request a postback would send for a sample event; sends nothing.
    pub async fn preview_postback(&self, id: &str, event: Event) -> ServiceResult<PreviewOutput> {
        let postback = self.compiled(id).await?;
        let delivery_id = format!("preview_{}", uuid::Uuid::new_v4().simple());
        let ctx = MacroContext {
            event: &event,
            postback_id: &postback.postback.id,
            postback_name: &postback.postback.name,
            delivery_id: &delivery_id,
            attempt: 1,
        };
        let request = postback
            .render(&ctx)
            .map_err(|e| ValidationError::new("invalid", "event", format!("the sample event cannot be rendered: {e}")))?
            .redacted();
        let conditions_met = all_hold(&postback.postback.conditions, &event);
        Ok(PreviewOutput { request: view(request), conditions_met, event })
    }

    /// Send a postback now for a sample event; logged as a test, never retried.
    pub async fn test_postback(self: &Arc<Self>, id: &str, event: Event) -> ServiceResult<TestOutput> {
        let postback = self.compiled(id).await?;
        let now = self.ports.clock.now();
        let conditions_met = all_hold(&postback.postback.conditions, &event);
        let firing = Firing {
            delivery_id: format!("test_{}", uuid::Uuid::new_v4().simple()),
            postback_id: postback.postback.id.clone(),
            event,
            attempt: 1,
            due_at: now,
            queued_at: now,
            check_status: false,
            resend_of: None,
        };
        let (_, entry) = self.dispatcher().attempt_with(&postback, &firing, true).await?;
        Ok(TestOutput {
            conditions_met,
            request: RequestView {
                method: entry.method.clone(),
                url: entry.url.clone(),
                headers: entry.request_headers.clone(),
                body: entry.request_body.clone(),
            },
            response: entry.status_code.map(|status| ResponseView {
                status,
                body: entry.response_body.clone().unwrap_or_default(),
                duration_ms: entry.duration_ms,
            }),
            error: entry.error.clone(),
            outcome: entry.outcome,
            log_id: entry.id.clone(),
            delivery_id: entry.delivery_id.clone(),
        })
    }

    pub async fn query_logs(&self, filter: &LogFilter) -> ServiceResult<LogPage> {
        Ok(self.ports.logs.query(filter).await?)
    }

    pub async fn get_log(&self, id: &str) -> ServiceResult<LogEntry> {
        self.ports.logs.get(id).await?.ok_or(ServiceError::NotFound("log entry"))
    }

    /// Fire a logged firing again now, as a new firing (new delivery id) that skips the
    /// status re-check: the admin decided. One attempt now; a retryable failure is
    /// queued for retry like any other firing. Returns the new log entry.
    pub async fn resend_log(self: &Arc<Self>, id: &str) -> ServiceResult<LogEntry> {
        let original = self.get_log(id).await?;
        let Some(source) = original.firing.clone() else {
            return Err(ServiceError::Conflict("this log entry has no stored firing to resend".into()));
        };
        let now = self.ports.clock.now();
        let firing = Firing {
            delivery_id: format!("r_{}", uuid::Uuid::new_v4().simple()),
            attempt: 1,
            due_at: now,
            queued_at: now,
            check_status: false,
            resend_of: Some(original.id.clone()),
            ..source
        };
        let index = self.catalog.index().await?;
        let postback = index.get(&firing.postback_id).ok_or(ServiceError::NotFound("postback"))?;
        let (outcome, entry) = self.dispatcher().attempt_with(&postback, &firing, false).await?;
        if let AttemptOutcome::Retrying(at) = outcome {
            self.ports.queue.enqueue(&[firing.next_attempt(at)]).await?;
        }
        Ok(entry)
    }

    async fn compiled(&self, id: &str) -> ServiceResult<CompiledPostback> {
        let postback = self.get_postback(id).await?;
        postback.compile().map_err(ServiceError::from)
    }
}

fn view(r: crate::domain::delivery::OutboundRequest) -> RequestView {
    RequestView { method: r.method, url: r.url, headers: r.headers, body: r.body }
}

fn new_postback_id() -> String {
    format!("pb_{}", uuid::Uuid::now_v7().simple())
}
