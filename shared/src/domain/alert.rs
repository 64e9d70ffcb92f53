//! What the postback manager says about itself to `alert` postbacks (see *Delivery
//! control → Alerts*).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    BreakerOpened,
    BreakerClosed,
    FiringFailed,
}

impl AlertKind {
    pub const ALL: [AlertKind; 3] = [AlertKind::BreakerOpened, AlertKind::BreakerClosed, AlertKind::FiringFailed];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BreakerOpened => "breaker_opened",
            AlertKind::BreakerClosed => "breaker_closed",
            AlertKind::FiringFailed => "firing_failed",
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
