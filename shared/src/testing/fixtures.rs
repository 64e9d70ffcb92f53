//! Values for tests, built directly (no parsing or validation), with every optional
//! field that storage must round-trip filled in. Times are whole milliseconds so every
//! adapter can store them exactly.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::adapters::system::SystemClock;
use crate::domain::alert::AlertKind;
use crate::domain::condition::Condition;
use crate::domain::delivery::SuccessRule;
use crate::domain::event::{Event, EventType, Status};
use crate::domain::firing::Firing;
use crate::domain::library::TemplateRef;
use crate::domain::log::{LogEntry, Outcome};
use crate::domain::postback::{FireOn, HttpMethod, Postback, Scope};
use crate::ports::Clock;

/// Now on the system clock, truncated to whole milliseconds.
pub fn now() -> DateTime<Utc> {
    let now = SystemClock.now();
    DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now)
}

pub fn postback(id: &str, kind: EventType) -> Postback {
    let created = now();
    Postback {
        id: id.to_string(),
        name: format!("Postback {id}"),
        kind,
        enabled: true,
        offers: Scope::Only(vec!["o1".into(), "o2".into()]),
        publishers: Scope::All,
        fire_on: FireOn::Approved,
        rejection_reasons: Some(vec!["fraud".into()]),
        event_names: (kind == EventType::Event).then(|| vec!["deposit".into()]),
        delay_seconds: 0,
        method: HttpMethod::Post,
        url: "https://affiliate.example/pb?clickid={external_transaction_id}&amount={payout}".into(),
        headers: BTreeMap::from([("Authorization".to_string(), "Bearer {params.token}".to_string())]),
        body: Some(r#"{"lead": "{transaction_id}", "amount": "{payout}"}"#.into()),
        content_type: "application/json".into(),
        created_at: created,
        updated_at: created,
        signing: Default::default(),
        signing_secret: None,
        previous_signing_secret: None,
        version: 1,
        conditions: vec![
            condition("payout", "gte", serde_json::json!("12.50")),
            condition("country", "in", serde_json::json!(["DE", "AT"])),
            condition("sub3", "not_exists", serde_json::Value::Null),
        ],
        success_rule: Some(SuccessRule {
            body_contains: Some("status=ok".into()),
            body_not_contains: Some("error".into()),
            retry: true,
        }),
        alerts: if kind == EventType::Alert { AlertKind::ALL.to_vec() } else { Vec::new() },
        rate_limit_per_second: Some(50),
        owner: None,
        changed_by: None,
        reversal: None,
        // Stored with the rest (the stores keep the postback as JSON): a template
        // reference and a template secret, never shown but kept.
        template: Some(TemplateRef { id: "keitaro".into(), version: 1 }),
        template_secrets: vec!["pbkey1234".into()],
        approval: Default::default(),
        pending_revision: None,
    }
}

/// A condition built from its parts (panics on a bad one: fixtures are hand-written).
pub fn condition(field: &str, op: &str, value: serde_json::Value) -> Condition {
    Condition::new(field, op, Some(&value).filter(|v| !v.is_null())).expect("a fixture condition is valid")
}

/// A validated-looking event: conversions and events are `approved`, events are named
/// `deposit`.
pub fn event(kind: EventType, transaction_id: &str) -> Event {
    let mut subs: [Option<String>; 10] = Default::default();
    subs[0] = Some("s1".into());
    subs[4] = Some("s5".into());
    Event {
        kind,
        transaction_id: transaction_id.to_string(),
        event_id: None,
        offer_id: Some("o1".into()),
        publisher_id: Some("p1".into()),
        external_transaction_id: Some(format!("aff-{transaction_id}")),
        status: kind.has_status().then_some(Status::Approved),
        rejection_reason: None,
        event_name: (kind == EventType::Event).then(|| "deposit".to_string()),
        payout: kind.has_status().then(|| "1.50".to_string()),
        revenue: kind.has_status().then(|| "2.75".to_string()),
        currency: kind.has_status().then(|| "EUR".to_string()),
        subs,
        ip: Some("203.0.113.7".into()),
        user_agent: Some("Mozilla/5.0".into()),
        country: Some("DE".into()),
        timestamp: now(),
        params: BTreeMap::from([("token".to_string(), "t0k".to_string())]),
    }
}

/// A first-attempt firing of a conversion postback.
pub fn firing(delivery_id: &str, due_at: DateTime<Utc>) -> Firing {
    let event = event(EventType::Conversion, &format!("T-{delivery_id}"));
    Firing::first(delivery_id.to_string(), "pb_1".into(), event, due_at, now())
}

/// The log entry of one attempt of `firing`, with a fresh time-ordered id, fired now.
pub fn log_entry(firing: &Firing, outcome: Outcome) -> LogEntry {
    let event = &firing.event;
    let status_code = match outcome {
        Outcome::Delivered => Some(200),
        Outcome::Retrying => Some(503),
        Outcome::Failed => Some(404),
        Outcome::Skipped => None,
    };
    LogEntry {
        id: crate::domain::ids::time_ordered(now()).to_string(),
        delivery_id: firing.delivery_id.clone(),
        postback_id: firing.postback_id.clone(),
        postback_name: format!("Postback {}", firing.postback_id),
        transaction_id: event.transaction_id.clone(),
        event_id: event.event_id.clone(),
        kind: event.kind,
        offer_id: event.offer_id.clone(),
        publisher_id: event.publisher_id.clone(),
        fired_at: now(),
        attempt: firing.attempt,
        method: "POST".into(),
        url: format!("https://affiliate.example/pb?clickid={}", event.transaction_id),
        request_headers: BTreeMap::from([("Authorization".to_string(), "[REDACTED]".to_string())]),
        request_body: Some(format!(r#"{{"lead": "{}"}}"#, event.transaction_id)),
        status_code,
        response_body: status_code.map(|c| format!("status {c}")),
        error: (outcome == Outcome::Skipped).then(|| "status changed to rejected".to_string()),
        duration_ms: 42,
        outcome,
        test: false,
        postback_version: Some(1),
        next_attempt_at: None,
        resend_of: None,
        replay_of: None,
        reversal_of: None,
        firing: Some(firing.clone()),
    }
}

/// An audit record by the bootstrap admin at `now()`, of `action` on a postback.
pub fn audit_of(action: crate::domain::access::AuditAction, target_id: &str) -> crate::domain::access::AuditRecord {
    use crate::domain::access::{AuditRecord, AuditTarget, Caller, TargetKind};
    AuditRecord::new(
        &Caller::bootstrap_admin(),
        now(),
        action,
        AuditTarget { kind: TargetKind::Postback, id: Some(target_id.to_string()) },
        format!("{} {target_id}", action.as_str()),
    )
}

/// A `postback.create` record (for store calls that need one).
pub fn audit(target_id: &str) -> crate::domain::access::AuditRecord {
    audit_of(crate::domain::access::AuditAction::PostbackCreate, target_id)
}
