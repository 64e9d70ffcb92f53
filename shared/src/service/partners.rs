//! Partners: what a partner key may write (`PARTNER_POSTBACKS`), the review of its
//! postbacks (approve, reject), the `approval_requested` alert, and the partners' test
//! budget (10 a minute per key, on the clock port).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};

use super::config_api::Saved;
use super::{App, ServiceError, ServiceResult};
use crate::domain::access::{AuditAction, Caller, Role};
use crate::domain::alert::{AlertContext, AlertKind};
use crate::domain::partner::{self, Approval, ApprovalState, PartnerMode};
use crate::domain::postback::{Postback, PostbackSpec};
use crate::domain::ValidationError;

/// Most tests a partner key may run within `TEST_WINDOW`.
pub const PARTNER_TESTS_PER_MINUTE: usize = 10;
const TEST_WINDOW: chrono::Duration = chrono::Duration::seconds(60);

/// The start times of each partner key's tests in the last minute (per process: on
/// AWS each `config-api` instance counts its own, see docs/DESIGN.md).
#[derive(Debug, Default)]
pub struct TestBudget {
    by_key: Mutex<HashMap<String, VecDeque<DateTime<Utc>>>>,
}

impl TestBudget {
    /// Take one test for `key` at `now`, or the seconds until one is free.
    pub fn take(&self, key: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let mut by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        if by_key.len() > 10_000 {
            by_key.retain(|_, times| times.back().is_some_and(|t| now - *t < TEST_WINDOW));
        }
        let times = by_key.entry(key.to_string()).or_default();
        while times.front().is_some_and(|t| now - *t >= TEST_WINDOW) {
            times.pop_front();
        }
        if times.len() >= PARTNER_TESTS_PER_MINUTE {
            let oldest = times.front().copied().unwrap_or(now);
            let wait = (oldest + TEST_WINDOW - now).num_milliseconds().max(0);
            return Err(u64::try_from((wait + 999) / 1000).unwrap_or(1).max(1));
        }
        times.push_back(now);
        Ok(())
    }
}

impl App {
    /// For a partner caller: its mode (403 when `PARTNER_POSTBACKS=off`) after the
    /// partner rules of `spec` (400 naming the field); `None` for everyone else.
    pub(crate) fn partner_write(
        &self,
        caller: &Caller,
        spec: Option<&PostbackSpec>,
    ) -> ServiceResult<Option<PartnerMode>> {
        if caller.actor.role != Role::Partner {
            return Ok(None);
        }
        let mode = self.policy.partners.mode;
        if mode == PartnerMode::Off {
            return Err(ServiceError::Forbidden("partner postbacks are turned off (PARTNER_POSTBACKS=off)"));
        }
        if let Some(spec) = spec {
            let publisher = caller.actor.publisher_id.as_deref().unwrap_or_default();
            partner::check_spec(spec, publisher)?;
            if !self.policy.partners.private_targets {
                partner::check_target(&spec.url)?;
            }
        }
        Ok(Some(mode))
    }

    /// A partner test: one of the key's 10 a minute (429 after). Others: no limit.
    pub(crate) fn take_partner_test(&self, caller: &Caller) -> ServiceResult<()> {
        if caller.actor.role != Role::Partner {
            return Ok(());
        }
        self.partner_tests
            .take(&caller.actor.key_id, self.ports.clock.now())
            .map_err(|retry_after| ServiceError::TooMany { what: "tests (10 a minute per partner key)", retry_after })
    }

    /// Raise `approval_requested` about `postback` (one per submission: the version is
    /// in the key). Already saved, so a queue error is only logged.
    pub(crate) async fn approval_requested(&self, postback: &Postback) {
        let owner = postback.owner.as_ref().map_or("?", |o| o.publisher_id.as_str());
        let what = if postback.pending_revision.is_some() { "a change to postback" } else { "postback" };
        let alert = AlertContext {
            kind: AlertKind::ApprovalRequested,
            message: format!("Partner {owner} submitted {what} {} ({}) for approval", postback.name, postback.id),
            postback_id: postback.id.clone(),
            postback_name: postback.name.clone(),
            url: String::new(),
            transaction_id: None,
            status_code: None,
            error: None,
        };
        let key = format!("{}#v{}", postback.id, postback.version);
        if let Err(e) = super::alerts::raise(self, &alert, &key).await {
            tracing::warn!(postback_id = %postback.id, error = %e, "could not raise approval_requested");
        }
    }

    /// `POST /postbacks/{id}/approve`: apply a pending revision (a new version), or
    /// approve a pending new postback. 409 when nothing waits.
    pub async fn approve_postback_by(&self, caller: &Caller, id: &str) -> ServiceResult<Saved> {
        let existing = self.get_postback(id).await?;
        let now = self.ports.clock.now();
        let approval = Approval::decided(ApprovalState::Approved, &caller.actor, now, None);
        let mut postback = match (existing.pending_revision.clone(), existing.approval.state) {
            (Some(revision), _) => {
                let mut applied = *revision;
                applied.id = existing.id.clone();
                applied.created_at = existing.created_at;
                applied.owner = existing.owner.clone();
                applied.version = existing.version;
                applied.updated_at = now;
                applied
            }
            (None, ApprovalState::Pending) => existing,
            (None, _) => return Err(ServiceError::Conflict("this postback has no pending change to approve".into())),
        };
        postback.approval = approval;
        postback.pending_revision = None;
        let summary = format!("approved postback \"{}\"", postback.name);
        only_admins_decide(caller)?;
        self.save_next_version(&mut postback, caller, AuditAction::PostbackApprove, summary).await?;
        Ok(Saved { postback, secret_set: false })
    }

    /// `POST /postbacks/{id}/reject`: drop a pending revision (the approved version
    /// stays) or reject a pending new postback; the reason is shown to the partner.
    pub async fn reject_postback_by(&self, caller: &Caller, id: &str, reason: Option<&str>) -> ServiceResult<Saved> {
        let reason = partner::reason(reason)?;
        let mut postback = self.get_postback(id).await?;
        let now = self.ports.clock.now();
        let state = match (&postback.pending_revision, postback.approval.state) {
            (Some(_), state) => state,
            (None, ApprovalState::Pending) => ApprovalState::Rejected,
            (None, _) => return Err(ServiceError::Conflict("this postback has no pending change to reject".into())),
        };
        postback.approval = Approval::decided(state, &caller.actor, now, Some(reason.clone()));
        postback.pending_revision = None;
        let summary = format!("rejected postback \"{}\": {reason}", postback.name);
        only_admins_decide(caller)?;
        self.save_next_version(&mut postback, caller, AuditAction::PostbackReject, summary).await?;
        Ok(Saved { postback, secret_set: false })
    }
}

/// Approvals and rejections are the admins' (checked as the decision is saved).
fn only_admins_decide(caller: &Caller) -> ServiceResult<()> {
    if caller.actor.role != Role::Admin {
        return Err(ServiceError::Validation(ValidationError::invalid("role", "only admins decide")));
    }
    Ok(())
}
