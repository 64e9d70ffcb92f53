//! Postback configuration, preview/test, logs and resend.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{App, AttemptOutcome, ServiceError, ServiceResult};
use crate::domain::access::{AuditAction, AuditRecord, AuditTarget, Caller, TargetKind, Visibility};
use crate::domain::alert::{AlertContext, AlertKind};
use crate::domain::condition::all_hold;
use crate::domain::event::{Event, EventType};
use crate::domain::firing::Firing;
use crate::domain::log::{LogEntry, LogFilter, LogPage};
use crate::domain::macros::MacroContext;
use crate::domain::partner::{Approval, ApprovalState, PartnerMode};
use crate::domain::postback::{Owner, Postback, PostbackSpec, SecretInput, TemplateInput};
use crate::domain::redact::{redact_headers, REDACTED};
use crate::domain::signing::{PreviousSecret, SigningSecret, GENERATED_SECRET_BYTES};
use crate::domain::ValidationError;

/// Filters of `GET /postbacks` (read by `crate::entry::http::parse::query::postback_filter`).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PostbackFilter {
    pub kind: Option<EventType>,
    /// Postbacks that apply to this offer (scope `all` included).
    pub offer_id: Option<String>,
    pub publisher_id: Option<String>,
    pub enabled: Option<bool>,
    /// `approval`: `pending` also lists approved postbacks with a pending revision.
    pub approval: Option<ApprovalState>,
}

impl PostbackFilter {
    fn matches(&self, p: &Postback) -> bool {
        // An alert postback fires for no offer or publisher, whatever its (default) scope.
        let scoped = self.offer_id.is_some() || self.publisher_id.is_some();
        !(scoped && p.kind == EventType::Alert)
            && self.kind.is_none_or(|k| k == p.kind)
            && self.enabled.is_none_or(|e| e == p.enabled)
            && self.offer_id.as_deref().is_none_or(|o| p.offers.contains(Some(o)))
            && self.publisher_id.as_deref().is_none_or(|o| p.publishers.contains(Some(o)))
            && self.approval.is_none_or(|a| match a {
                ApprovalState::Pending => p.approval.state == a || p.pending_revision.is_some(),
                _ => p.approval.state == a,
            })
    }
}

/// A postback as the API shows it: secret header values and the signing secret
/// redacted, the previous (rotated) secret left out.
pub fn shown(postback: Postback) -> Postback {
    let mut postback = shown_with_secret(postback);
    if postback.signing_secret.is_some() {
        postback.signing_secret = Some(SigningSecret::redacted());
    }
    postback.pending_revision = postback.pending_revision.map(|r| Box::new(shown(*r)));
    postback
}

/// As [`shown`] but with the signing secret whole: only for the response of the create
/// or replace that set it.
pub fn shown_with_secret(postback: Postback) -> Postback {
    let mut postback = postback.without_template_secrets();
    postback.headers = redact_headers(&postback.headers);
    if let Some(reversal) = postback.reversal.as_mut() {
        reversal.headers = redact_headers(&reversal.headers);
    }
    postback.previous_signing_secret = None;
    postback.pending_revision = postback.pending_revision.map(|r| Box::new(shown_with_secret(*r)));
    postback
}

/// Keep only the template secrets that the request fields still hold (an input whose
/// placeholder the request overrode is no secret of this postback).
fn retain_used_secrets(postback: &mut Postback) {
    let fields: Vec<&str> = std::iter::once(postback.url.as_str())
        .chain(postback.body.as_deref())
        .chain(postback.headers.values().map(String::as_str))
        .collect();
    let used: Vec<String> =
        postback.template_secrets.iter().filter(|s| fields.iter().any(|f| f.contains(s.as_str()))).cloned().collect();
    postback.template_secrets = used;
}

/// A replace that sends a field back as it was shown (template secrets redacted) keeps the
/// stored field; a field that still holds `[REDACTED]` for a template secret but was
/// changed is refused (the secret cannot be put back into an edited text: send it).
fn keep_template_secrets(existing: &Postback, spec: &mut PostbackSpec) -> Result<(), ValidationError> {
    if existing.template_secrets.is_empty() {
        return Ok(());
    }
    let shown = existing.clone().without_template_secrets();
    let refuse = |field: &str| {
        ValidationError::invalid(
            field,
            format!(
                "{field} holds [REDACTED] for a secret input of its template, but was changed: \
                 send {field} back unchanged, or with the secret itself"
            ),
        )
    };
    if spec.url == shown.url {
        spec.url.clone_from(&existing.url);
    } else if spec.url.contains(REDACTED) {
        return Err(refuse("url"));
    }
    if spec.body.is_some() && spec.body == shown.body {
        spec.body.clone_from(&existing.body);
    } else if spec.body.as_deref().is_some_and(|b| b.contains(REDACTED)) {
        return Err(refuse("body"));
    }
    for (name, value) in spec.headers.iter_mut() {
        match (shown.headers.get(name), existing.headers.get(name)) {
            (Some(shown_value), Some(stored)) if shown_value == value && shown_value != REDACTED => {
                value.clone_from(stored)
            }
            _ => {}
        }
    }
    Ok(())
}

/// A saved postback, and whether this save set its signing secret (then, and only then,
/// the response shows it whole).
#[derive(Debug, Clone)]
pub struct Saved {
    pub postback: Postback,
    pub secret_set: bool,
}

impl Saved {
    /// The postback as this save's response shows it.
    pub fn shown(self) -> Postback {
        if self.secret_set {
            shown_with_secret(self.postback)
        } else {
            shown(self.postback)
        }
    }
}

/// `GET /postbacks/{id}/secret` and `POST /postbacks/{id}/secret/rotate`.
#[derive(Debug, Clone, Serialize)]
pub struct SecretView {
    pub signing_secret: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_expires_at: Option<DateTime<Utc>>,
}

/// The rendered request of a preview or test, secrets redacted.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
}

/// What a preview or test renders: a sample event and, for an alert postback, a sample
/// alert (the edge reads them from the request: `crate::entry::http::parse::postback::sample`).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub event: Event,
    /// `None` for an alert postback: a sample alert of the kind it would most want to
    /// show (see [`AlertKind::sample_for`]). Ignored for other postbacks.
    pub alert: Option<AlertContext>,
}

impl From<Event> for Sample {
    fn from(event: Event) -> Self {
        Sample { event, alert: None }
    }
}

impl Sample {
    /// The event and alert to render `postback` with, at `now`.
    fn resolve(self, postback: &Postback, now: DateTime<Utc>) -> (Event, Option<AlertContext>) {
        if postback.kind != EventType::Alert {
            return (self.event, None);
        }
        let alert = self.alert.unwrap_or_else(|| AlertContext::sample(AlertKind::sample_for(&postback.alerts)));
        (alert.event(now), Some(alert))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct PreviewOutput {
    pub request: RequestView,
    /// Whether the sample event meets the postback's `conditions` (would it match?).
    pub conditions_met: bool,
    /// The sample event the request was rendered for.
    pub event: Event,
    /// Alert postbacks: the sample alert the request was rendered for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<AlertContext>,
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
        Ok(self.create_postback_saved(spec).await?.postback)
    }

    /// Create as the bootstrap admin (see `create_postback_by`).
    pub async fn create_postback_saved(&self, spec: PostbackSpec) -> ServiceResult<Saved> {
        self.create_postback_by(&Caller::bootstrap_admin(), spec).await
    }

    /// An audit record of `action` on `target` by `caller`, now.
    pub fn audit_record(
        &self,
        caller: &Caller,
        action: AuditAction,
        kind: TargetKind,
        id: Option<&str>,
        summary: impl Into<String>,
    ) -> AuditRecord {
        let target = AuditTarget { kind, id: id.map(str::to_string) };
        AuditRecord::new(caller, self.ports.clock.now(), action, target, summary)
    }

    /// Record a change that has no store write of its own (before its response).
    pub async fn append_audit(&self, record: AuditRecord) -> ServiceResult<()> {
        Ok(self.ports.access.append_audit(&record).await?)
    }

    /// Create; a signing postback sent without a secret gets a new one. The postback and
    /// its `postback.create` record are one write.
    pub async fn create_postback_by(&self, caller: &Caller, mut spec: PostbackSpec) -> ServiceResult<Saved> {
        let partner = self.partner_write(caller, Some(&spec))?;
        let secret_set = spec.signing.is_on();
        spec.signing_secret = match spec.signing_secret {
            SecretInput::Keep if spec.signing.is_on() => {
                return Err(ValidationError::invalid(
                    "signing_secret",
                    "[REDACTED] keeps a stored secret, but a new postback has none",
                )
                .into())
            }
            SecretInput::Given(secret) => SecretInput::Given(secret),
            _ if spec.signing.is_on() => SecretInput::Given(new_signing_secret()),
            _ => SecretInput::Absent,
        };
        let now = self.ports.clock.now();
        let mut postback = spec.into_postback(new_postback_id(now), now, now);
        retain_used_secrets(&mut postback);
        postback.changed_by = Some(caller.actor.clone());
        if let Some(mode) = partner {
            postback.owner = caller.actor.publisher_id.clone().map(|publisher_id| Owner { publisher_id });
            if mode == PartnerMode::Review {
                postback.approval = Approval::pending();
            }
        }
        let audit = self
            .audit_record(
                caller,
                AuditAction::PostbackCreate,
                TargetKind::Postback,
                Some(&postback.id),
                format!("created {} postback \"{}\"", postback.kind.as_str(), postback.name),
            )
            .versions(None, Some(postback.version));
        self.ports.postbacks.create(&postback, &audit).await?;
        self.catalog.invalidate().await;
        if postback.approval.state == ApprovalState::Pending {
            self.approval_requested(&postback).await;
        }
        Ok(Saved { postback, secret_set })
    }

    pub async fn get_postback(&self, id: &str) -> ServiceResult<Postback> {
        self.ports.postbacks.get(id).await?.ok_or(ServiceError::NotFound("postback"))
    }

    /// A postback as `visibility` may see it: another publisher's is not found.
    pub async fn get_postback_in(&self, visibility: &Visibility, id: &str) -> ServiceResult<Postback> {
        let postback = self.get_postback(id).await?;
        if !visible(visibility, &postback) {
            return Err(ServiceError::NotFound("postback"));
        }
        Ok(postback)
    }

    /// `list_postbacks` within `visibility`.
    pub async fn list_postbacks_in(
        &self,
        visibility: &Visibility,
        filter: &PostbackFilter,
    ) -> ServiceResult<Vec<Postback>> {
        if let Visibility::Publisher(own) = visibility {
            check_own_publisher(filter.publisher_id.as_deref(), own)?;
        }
        let mut all = self.list_postbacks(filter).await?;
        all.retain(|p| visible(visibility, p));
        Ok(all)
    }

    /// `postback_stats` within `visibility`.
    pub async fn postback_stats_in(
        &self,
        visibility: &Visibility,
        id: &str,
        hours: u32,
    ) -> ServiceResult<Vec<crate::domain::stats::StatsBucket>> {
        self.get_postback_in(visibility, id).await?;
        let hours = crate::domain::stats::last_hours(self.ports.clock.now(), hours);
        let counts = self.ports.logs.hourly_stats(id, &hours).await?;
        Ok(crate::domain::stats::buckets(&hours, &counts))
    }

    /// `postback_versions` within `visibility`.
    pub async fn postback_versions_in(&self, visibility: &Visibility, id: &str) -> ServiceResult<Vec<Postback>> {
        if *visibility != Visibility::All {
            self.get_postback_in(visibility, id).await?;
        }
        self.postback_versions(id).await
    }

    /// The postback's last `hours` UTC hours, newest first, empty hours included.
    pub async fn postback_stats(&self, id: &str, hours: u32) -> ServiceResult<Vec<crate::domain::stats::StatsBucket>> {
        self.postback_stats_in(&Visibility::All, id, hours).await
    }

    pub async fn list_postbacks(&self, filter: &PostbackFilter) -> ServiceResult<Vec<Postback>> {
        let all = self.ports.postbacks.list(filter.kind).await?;
        Ok(all.into_iter().filter(|p| filter.matches(p)).collect())
    }

    /// Replace a postback. A header sent back as `[REDACTED]` keeps its stored value, so
    /// a client can PUT what it GOT without knowing the secret.
    pub async fn replace_postback(&self, id: &str, spec: PostbackSpec) -> ServiceResult<Postback> {
        Ok(self.replace_postback_saved(id, spec).await?.postback)
    }

    /// Replace. The signing secret: `[REDACTED]` or absent keeps the stored one (and a
    /// rotation's previous secret), a new one replaces it at once (no overlap: rotate
    /// for that), turning signing on without one generates one, turning it off drops both.
    pub async fn replace_postback_saved(&self, id: &str, spec: PostbackSpec) -> ServiceResult<Saved> {
        self.replace_postback_by(&Caller::bootstrap_admin(), id, spec).await
    }

    /// As `replace_postback_saved`, by `caller` (its `postback.replace` record is written
    /// with the new version).
    pub async fn replace_postback_by(&self, caller: &Caller, id: &str, mut spec: PostbackSpec) -> ServiceResult<Saved> {
        let existing = self.get_postback_in(&caller.visibility(), id).await?;
        let partner = self.partner_write(caller, Some(&spec))?;
        keep_template_secrets(&existing, &mut spec)?;
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
        if let Some(reversal) = spec.reversal.as_mut() {
            let stored = existing.reversal.as_ref().map(|r| &r.headers);
            for (name, value) in reversal.headers.iter_mut() {
                if value == REDACTED {
                    match stored.and_then(|headers| headers.get(name)) {
                        Some(stored) => value.clone_from(stored),
                        None => {
                            return Err(ValidationError::invalid(
                                format!("reversal.headers.{name}"),
                                "[REDACTED] keeps a stored secret, but this header has none",
                            )
                            .into())
                        }
                    }
                }
            }
        }
        let signing_on = spec.signing.is_on();
        let (secret, previous, secret_set) = match std::mem::take(&mut spec.signing_secret) {
            _ if !signing_on => (None, None, false),
            SecretInput::Given(secret) => {
                let unchanged = existing.signing_secret.as_ref() == Some(&secret);
                let previous = if unchanged { existing.previous_signing_secret.clone() } else { None };
                (Some(secret), previous, !unchanged)
            }
            SecretInput::Absent | SecretInput::Keep => match &existing.signing_secret {
                Some(stored) => (Some(stored.clone()), existing.previous_signing_secret.clone(), false),
                None => (Some(new_signing_secret()), None, true),
            },
        };
        let kept_reference = match &spec.template {
            Some(TemplateInput::Kept(reference)) => {
                Some(existing.template.clone().filter(|stored| stored.id == reference.id).unwrap_or(reference.clone()))
            }
            _ => None,
        };
        let now = self.ports.clock.now();
        let mut postback = spec.into_postback(existing.id.clone(), existing.created_at, now);
        if kept_reference.is_some() {
            postback.template = kept_reference;
        }
        // The stored template secrets stay secrets for as long as the fields hold them.
        for secret in &existing.template_secrets {
            if !postback.template_secrets.contains(secret) {
                postback.template_secrets.push(secret.clone());
            }
        }
        retain_used_secrets(&mut postback);
        postback.signing_secret = secret;
        postback.previous_signing_secret = previous;
        postback.version = existing.version;
        postback.owner = existing.owner.clone();
        match partner {
            // Admins' writes are approved at once (a partner's pending change is
            // superseded by the admin's).
            None if existing.approval.state == ApprovalState::Approved => postback.approval = existing.approval.clone(),
            None => postback.approval = Approval::decided(ApprovalState::Approved, &caller.actor, now, None),
            Some(PartnerMode::Review) if existing.approval.state == ApprovalState::Approved => {
                // The approved version keeps firing; the change waits beside it.
                let mut row = existing;
                row.pending_revision = Some(Box::new(postback));
                let summary = format!("proposed a change to postback \"{}\"", row.name);
                self.save_next_version(&mut row, caller, AuditAction::PostbackReplace, summary).await?;
                self.approval_requested(&row).await;
                return Ok(Saved { postback: row, secret_set });
            }
            Some(PartnerMode::Review) => postback.approval = Approval::pending(),
            Some(_) => {}
        }
        let summary = format!("replaced postback \"{}\"", postback.name);
        self.save_next_version(&mut postback, caller, AuditAction::PostbackReplace, summary).await?;
        if postback.approval.state == ApprovalState::Pending {
            self.approval_requested(&postback).await;
        }
        Ok(Saved { postback, secret_set })
    }

    /// Store `postback` as the version after the one it carries (the one read), saved by
    /// `caller`, with its audit record. The store refuses it (409) if another write got
    /// in since that read.
    pub(crate) async fn save_next_version(
        &self,
        postback: &mut Postback,
        caller: &Caller,
        action: AuditAction,
        summary: String,
    ) -> ServiceResult<()> {
        let before = postback.version;
        postback.version = postback.version.checked_add(1).ok_or_else(|| {
            ServiceError::Conflict(format!("postback {} has reached the last version number", postback.id))
        })?;
        postback.changed_by = Some(caller.actor.clone());
        let audit = self
            .audit_record(caller, action, TargetKind::Postback, Some(&postback.id), summary)
            .versions(Some(before), Some(postback.version));
        if !self.ports.postbacks.replace(postback, &audit).await? {
            return Err(ServiceError::NotFound("postback"));
        }
        self.catalog.invalidate().await;
        Ok(())
    }

    /// The signing secret whole (`GET /postbacks/{id}/secret`); 409 when signing is off.
    pub async fn signing_secret(&self, id: &str) -> ServiceResult<SecretView> {
        self.signing_secret_by(&Caller::bootstrap_admin(), id).await
    }

    /// As `signing_secret`; the read is recorded (`postback.secret_read`) before the
    /// secret is answered.
    pub async fn signing_secret_by(&self, caller: &Caller, id: &str) -> ServiceResult<SecretView> {
        let postback = self.get_postback(id).await?;
        let secret = signing_secret_of(&postback)?;
        let summary = format!("read the signing secret of postback \"{}\"", postback.name);
        let record = self
            .audit_record(caller, AuditAction::PostbackSecretRead, TargetKind::Postback, Some(id), summary)
            .versions(Some(postback.version), Some(postback.version));
        self.append_audit(record).await?;
        Ok(SecretView { signing_secret: secret.expose().to_string(), previous_expires_at: None })
    }

    /// Make a new signing secret; the current one becomes the previous one and keeps
    /// signing beside it for 24 h (a previous one still in force is dropped). 409 when
    /// signing is off.
    pub async fn rotate_signing_secret(&self, id: &str) -> ServiceResult<SecretView> {
        self.rotate_signing_secret_by(&Caller::bootstrap_admin(), id).await
    }

    /// As `rotate_signing_secret`, by `caller`.
    pub async fn rotate_signing_secret_by(&self, caller: &Caller, id: &str) -> ServiceResult<SecretView> {
        let mut postback = self.get_postback(id).await?;
        let current = signing_secret_of(&postback)?.clone();
        let now = self.ports.clock.now();
        let previous = PreviousSecret::rotated_at(current, now);
        let expires_at = previous.expires_at;
        let secret = new_signing_secret();
        postback.signing_secret = Some(secret.clone());
        postback.previous_signing_secret = Some(previous);
        postback.updated_at = now;
        // A rotation is a saved change of the postback (what it signs with), so it makes a
        // version like a replace does.
        let summary = format!("rotated the signing secret of postback \"{}\"", postback.name);
        self.save_next_version(&mut postback, caller, AuditAction::PostbackSecretRotate, summary).await?;
        Ok(SecretView { signing_secret: secret.expose().to_string(), previous_expires_at: Some(expires_at) })
    }

    /// Every version of a postback, newest first, as the API shows them (secrets
    /// redacted). A deleted postback has none (404), like an unknown id.
    pub async fn postback_versions(&self, id: &str) -> ServiceResult<Vec<Postback>> {
        let versions = self.ports.postbacks.versions(id).await?.ok_or(ServiceError::NotFound("postback"))?;
        Ok(versions.into_iter().map(shown).collect())
    }

    pub async fn delete_postback(&self, id: &str) -> ServiceResult<()> {
        self.delete_postback_by(&Caller::bootstrap_admin(), id).await
    }

    /// Delete, with its `postback.delete` record in the same write.
    pub async fn delete_postback_by(&self, caller: &Caller, id: &str) -> ServiceResult<()> {
        let existing = self.get_postback_in(&caller.visibility(), id).await?;
        self.partner_write(caller, None)?;
        let summary = format!("deleted {} postback \"{}\"", existing.kind.as_str(), existing.name);
        let audit = self
            .audit_record(caller, AuditAction::PostbackDelete, TargetKind::Postback, Some(id), summary)
            .versions(Some(existing.version), None);
        if !self.ports.postbacks.delete(id, &audit).await? {
            return Err(ServiceError::NotFound("postback"));
        }
        self.catalog.invalidate().await;
        // Held firings are not dropped silently: each is logged skipped ("postback deleted").
        self.forget_control(id).await?;
        Ok(())
    }

    /// Render the request a postback would send for a sample event (alert postbacks: a
    /// sample alert); sends nothing.
    pub async fn preview_postback(&self, id: &str, sample: impl Into<Sample>) -> ServiceResult<PreviewOutput> {
        self.preview_postback_in(&Visibility::All, id, sample).await
    }

    /// `preview_postback` within `visibility`.
    pub async fn preview_postback_in(
        &self,
        visibility: &Visibility,
        id: &str,
        sample: impl Into<Sample>,
    ) -> ServiceResult<PreviewOutput> {
        let postback = self.get_postback_in(visibility, id).await?.compile().map_err(ServiceError::from)?;
        let (event, alert) = sample.into().resolve(&postback.postback, self.ports.clock.now());
        let delivery_id = format!("preview_{}", uuid::Uuid::new_v4().simple());
        let ctx = MacroContext::new(&event, &postback.postback.id, &postback.postback.name, &delivery_id, 1)
            .alert(alert.as_ref());
        let request = postback.render_signed(&ctx, self.ports.clock.now()).map_err(|e| {
            ValidationError::new("invalid", "event", format!("the sample event cannot be rendered: {e}"))
        })?;
        let request = postback.shown(&request, &ctx);
        let conditions_met = all_hold(&postback.postback.conditions, &event);
        Ok(PreviewOutput { request: view(request), conditions_met, event, alert })
    }

    /// Send a postback now for a sample event (alert postbacks: a sample alert); logged as
    /// a test, never retried.
    pub async fn test_postback(self: &Arc<Self>, id: &str, sample: impl Into<Sample>) -> ServiceResult<TestOutput> {
        self.test_postback_by(&Caller::bootstrap_admin(), id, sample).await
    }

    /// As `test_postback`; recorded (`postback.test`) before the answer.
    pub async fn test_postback_by(
        self: &Arc<Self>,
        caller: &Caller,
        id: &str,
        sample: impl Into<Sample>,
    ) -> ServiceResult<TestOutput> {
        let postback = self.get_postback_in(&caller.visibility(), id).await?.compile().map_err(ServiceError::from)?;
        self.take_partner_test(caller)?;
        let now = self.ports.clock.now();
        let (event, alert) = sample.into().resolve(&postback.postback, now);
        let conditions_met = all_hold(&postback.postback.conditions, &event);
        let delivery_id = format!("test_{}", uuid::Uuid::new_v4().simple());
        let firing = Firing {
            check_status: false,
            alert,
            postback_version: Some(postback.postback.version),
            ..Firing::first(delivery_id, postback.postback.id.clone(), event, now, now)
        };
        let (_, entry) = self.dispatcher().attempt_with(&postback, &firing, true).await?;
        let summary = format!("tested postback \"{}\": {}", postback.postback.name, entry.outcome.as_str());
        let record = self
            .audit_record(caller, AuditAction::PostbackTest, TargetKind::Postback, Some(id), summary)
            .versions(Some(postback.postback.version), Some(postback.postback.version));
        self.append_audit(record).await?;
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

    /// `query_logs` within `visibility`: a partner's listing is narrowed to its publisher
    /// in the store, then to the entries of its own postbacks (a page may then hold fewer
    /// than `limit`; `next_cursor` still says where the listing goes on).
    pub async fn query_logs_in(&self, visibility: &Visibility, filter: &LogFilter) -> ServiceResult<LogPage> {
        let Visibility::Publisher(publisher) = visibility else { return self.query_logs(filter).await };
        let mut scoped = filter.clone();
        check_own_publisher(filter.publisher_id.as_deref(), publisher)?;
        scoped.publisher_id = Some(publisher.clone());
        let mut page = self.query_logs(&scoped).await?;
        let index = self.catalog.index().await?;
        page.items.retain(|e| index.get(&e.postback_id).is_some_and(|p| visible(visibility, &p.postback)));
        Ok(page)
    }

    pub async fn get_log(&self, id: &str) -> ServiceResult<LogEntry> {
        self.ports.logs.get(id).await?.ok_or(ServiceError::NotFound("log entry"))
    }

    /// A log entry as `visibility` may see it: the entry of another's postback is not
    /// found.
    pub async fn get_log_in(&self, visibility: &Visibility, id: &str) -> ServiceResult<LogEntry> {
        let entry = self.get_log(id).await?;
        if *visibility != Visibility::All {
            let index = self.catalog.index().await?;
            if !index.get(&entry.postback_id).is_some_and(|p| visible(visibility, &p.postback)) {
                return Err(ServiceError::NotFound("log entry"));
            }
        }
        Ok(entry)
    }

    /// Fire a logged firing again now, as a new firing (new delivery id) that skips the
    /// status re-check: the admin decided. One attempt now; a retryable failure is
    /// queued for retry like any other firing. Returns the new log entry.
    pub async fn resend_log(self: &Arc<Self>, id: &str) -> ServiceResult<LogEntry> {
        self.resend_log_by(&Caller::bootstrap_admin(), id).await
    }

    /// As `resend_log`; recorded (`log.resend`) before the answer.
    pub async fn resend_log_by(self: &Arc<Self>, caller: &Caller, id: &str) -> ServiceResult<LogEntry> {
        let original = self.get_log_in(&caller.visibility(), id).await?;
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
            replay_of: None,
            slot_second: None,
            ..source
        };
        // The store's answer, not the cached index's: a postback created a moment ago on
        // another function is found, a deleted one is not.
        let postback = self.catalog.from_store(&firing.postback_id).await?.ok_or(ServiceError::NotFound("postback"))?;
        let firing = firing.bound_to(&postback);
        // A resend is the admin's own request: it bypasses the breaker and the rate limit
        // and does not count towards the breaker (its retries, queued, go through both).
        let dispatcher = self.dispatcher();
        let (outcome, entry) = dispatcher.attempt_with(&postback, &firing, false).await?;
        match outcome {
            AttemptOutcome::Retrying(at) => self.ports.queue.enqueue(&[firing.next_attempt(at)]).await?,
            AttemptOutcome::Failed => dispatcher.firing_failed(&postback, &entry).await,
            _ => {}
        }
        // The resend (a new delivery id) takes over from the original: a bulk replay must
        // not send the same conversion again under the old id. Sent already, so a store
        // error here is only logged.
        if let Err(e) = self.ports.logs.mark_replayed(std::slice::from_ref(&original)).await {
            tracing::warn!(log_id = %original.id, error = %e, "could not mark the resent entry; a replay may send it again");
        }
        let summary = format!(
            "resent log entry {} of postback \"{}\" as {}: {}",
            original.id,
            postback.postback.name,
            entry.id,
            entry.outcome.as_str()
        );
        let record = self.audit_record(caller, AuditAction::LogResend, TargetKind::Log, Some(id), summary);
        self.append_audit(record).await?;
        Ok(entry)
    }
}

/// A partner naming another publisher in a filter: 400 naming `publisher_id`.
fn check_own_publisher(asked: Option<&str>, own: &str) -> Result<(), ValidationError> {
    match asked {
        Some(asked) if asked != own => Err(ValidationError::new(
            "not_available_to_partners",
            "publisher_id",
            format!("a partner key reads its own publisher only ({own})"),
        )),
        _ => Ok(()),
    }
}

/// Whether `visibility` sees `postback` (a partner: only those it owns).
fn visible(visibility: &Visibility, postback: &Postback) -> bool {
    visibility.sees_owner(postback.owner.as_ref().map(|o| o.publisher_id.as_str()))
}

fn view(r: crate::domain::delivery::OutboundRequest) -> RequestView {
    RequestView { method: r.method, url: r.url, headers: r.headers, body: r.body }
}

fn signing_secret_of(postback: &Postback) -> ServiceResult<&SigningSecret> {
    match (&postback.signing_secret, postback.signing.is_on()) {
        (Some(secret), true) => Ok(secret),
        _ => Err(ServiceError::Conflict(
            "this postback does not sign its requests (signing is none); set signing to standard-webhooks first".into(),
        )),
    }
}

/// A new secret of 32 random bytes (the OS-seeded thread generator).
fn new_signing_secret() -> SigningSecret {
    SigningSecret::from_key_bytes(&rand::random::<[u8; GENERATED_SECRET_BYTES]>())
}

fn new_postback_id(now: DateTime<Utc>) -> String {
    format!("pb_{}", crate::domain::ids::time_ordered(now).simple())
}
