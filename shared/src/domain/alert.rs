//! What the postback manager says about itself to `alert` postbacks (see *Delivery
//! control → Alerts*).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{Event, EventType};

super::named_enum! {
    #[strum(serialize_all = "snake_case")]
    pub enum AlertKind {
        BreakerOpened,
        BreakerClosed,
        FiringFailed,
        /// A partner submitted a postback or a change for review.
        ApprovalRequested,
    }
}

impl AlertKind {
    /// The kind an alert postback subscribed to `alerts` is previewed and tested with:
    /// `firing_failed` when it has it (it sets every alert macro), else its first.
    pub fn sample_for(alerts: &[AlertKind]) -> AlertKind {
        if alerts.contains(&AlertKind::FiringFailed) {
            AlertKind::FiringFailed
        } else {
            alerts.first().copied().unwrap_or(AlertKind::FiringFailed)
        }
    }
}

/// One alert: the values of the alert macros.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertContext {
    pub kind: AlertKind,
    /// One readable line (`{alert_message}`).
    pub message: String,
    /// The postback the alert is about (`{alert_postback_id}`, `{alert_postback_name}`).
    pub postback_id: String,
    pub postback_name: String,
    /// The failing request's URL, secrets redacted (`{alert_url}`).
    pub url: String,
    /// `firing_failed` only: the failed firing's values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AlertContext {
    /// The event an alert firing carries: type `alert`, the failed firing's transaction
    /// id (`firing_failed`; empty otherwise), the time of the alert. Nothing else: an
    /// alert is about a postback, not about a tracker's event, so the event's other
    /// macros are refused in alert postbacks' templates.
    pub fn event(&self, at: DateTime<Utc>) -> Event {
        Event::bare(EventType::Alert, self.transaction_id.clone().unwrap_or_default(), at)
    }

    /// A plausible alert of `kind` (its postback name holds quotes, as real names may), for checking
    /// alert postbacks' templates at save time and for their preview and test.
    pub fn sample(kind: AlertKind) -> AlertContext {
        let (postback_id, postback_name, url) = (
            "pb_sample_crm",
            "CRM \"Acme\" conversions",
            "https://crm.example/postback?click=aff_click_9d8e7f&key=[REDACTED]",
        );
        let failed = kind == AlertKind::FiringFailed;
        let message = match kind {
            AlertKind::BreakerOpened => format!(
                "Breaker opened for postback {postback_name} ({postback_id}) after 10 consecutive failures; its firings are held"
            ),
            AlertKind::BreakerClosed => {
                format!("Breaker closed for postback {postback_name} ({postback_id}); held firings are being released")
            }
            AlertKind::FiringFailed => format!(
                "Firing of postback {postback_name} ({postback_id}) failed for transaction tx_5f2b9c1e7a: HTTP 400"
            ),
            AlertKind::ApprovalRequested => {
                format!("Partner 7 submitted postback {postback_name} ({postback_id}) for approval")
            }
        };
        AlertContext {
            kind,
            message,
            postback_id: postback_id.to_string(),
            postback_name: postback_name.to_string(),
            url: url.to_string(),
            transaction_id: failed.then(|| "tx_5f2b9c1e7a".to_string()),
            status_code: failed.then_some(400),
            error: failed.then(|| "HTTP 400: client error, not retried".to_string()),
        }
    }
}
