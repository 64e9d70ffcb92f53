//! The configuration use cases on the fakes: secrets, preview, times from the clock.

use serde_json::json;

use super::{ms, spec, start, World};
use crate::domain::redact::REDACTED;
use crate::service::AttemptOutcome;

const URL: &str = "https://crm.example/leads";

fn crm() -> serde_json::Value {
    json!({"name": "CRM", "type": "event", "event_names": ["deposit"], "method": "POST", "url": format!("{URL}?token=t0p&x=1"),
           "headers": {"Authorization": "Bearer s3cr3t", "X-Source": "pm"},
           "body": "{\"lead\": \"{transaction_id}\", \"amount\": \"{payout}\", \"note\": \"{params.note}\"}"})
}

#[tokio::test]
async fn the_receiver_gets_the_secrets_and_the_logs_never_show_them() {
    let w = World::new();
    let created = w.app.create_postback(spec(&crm())).await.unwrap();
    assert_eq!((created.created_at, created.updated_at), (start(), start()), "times from the clock");
    w.ingest_one(json!({"type": "event", "transaction_id": "T4", "event_name": "deposit", "payout": 5, "params": {"note": "he said \"hi\"\n"}}))
        .await;
    assert_eq!(w.process_one().await, AttemptOutcome::Delivered);

    let sent = &w.sender.requests()[0].request;
    assert_eq!(sent.method, "POST");
    assert_eq!(sent.url, format!("{URL}?token=t0p&x=1"));
    assert_eq!(sent.headers.get("Authorization").map(String::as_str), Some("Bearer s3cr3t"));
    assert_eq!(sent.headers.get("X-Source").map(String::as_str), Some("pm"));
    let body: serde_json::Value = serde_json::from_str(sent.body.as_deref().unwrap()).unwrap();
    assert_eq!(body, json!({"lead": "T4", "amount": "5", "note": "he said \"hi\"\n"}), "JSON-escaped values");

    let entry = &w.logs()[0];
    assert_eq!(entry.request_headers.get("Authorization").map(String::as_str), Some(REDACTED));
    assert_eq!(entry.request_headers.get("X-Source").map(String::as_str), Some("pm"));
    assert_eq!(entry.url, format!("{URL}?token={REDACTED}&x=1"));
    let shown = serde_json::to_string(entry).unwrap();
    assert!(!shown.contains("s3cr3t") && !shown.contains("t0p"), "a secret in the log: {shown}");
}

#[tokio::test]
async fn a_postback_put_back_as_it_was_shown_keeps_its_secret() {
    let w = World::new();
    let id = w.postback(crm()).await;
    let shown = crate::service::config_api::shown(w.app.get_postback(&id).await.unwrap());
    assert_eq!(shown.headers["Authorization"], REDACTED);
    let mut back = crm();
    back["name"] = json!("CRM v2");
    back["headers"]["Authorization"] = json!(REDACTED);
    w.advance_ms(5_000);
    let replaced = w.app.replace_postback(&id, spec(&back)).await.unwrap();
    assert_eq!(replaced.headers["Authorization"], "Bearer s3cr3t", "the stored secret is kept");
    assert_eq!((replaced.created_at, replaced.updated_at), (start(), start() + ms(5_000)));

    let mut unknown = crm();
    unknown["headers"] = json!({"X-Api-Key": REDACTED});
    assert!(w.app.replace_postback(&id, spec(&unknown)).await.is_err(), "[REDACTED] for a header with no stored value");
}

#[tokio::test]
async fn a_preview_renders_the_sample_and_sends_nothing() {
    let w = World::new();
    let id = w
        .postback(
            json!({"name": "Pixel", "type": "click", "url": "https://p.example/?c={transaction_id}&k={params.k}"}),
        )
        .await;
    let preview = w
        .app
        .preview_postback(&id, w.sample(&id, Some(json!({"transaction_id": "PREV-1", "params": {"k": "v w"}}))).await)
        .await
        .unwrap();
    assert_eq!(preview.request.url, "https://p.example/?c=PREV-1&k=v%20w");
    assert_eq!(preview.event.timestamp, start(), "the sample is received now, by the clock");
    assert_eq!(w.sender.count(), 0);
    assert!(w.logs().is_empty() && w.queued().is_empty());
}

/// Versions: 1 on create, +1 on each replace (a client-sent `version` is ignored), each
/// attempt logs the version it rendered, the history is newest first with secrets
/// redacted, and a deleted postback has none.
#[tokio::test]
async fn replaces_count_versions_and_entries_name_the_version_they_fired() {
    let w = World::new();
    let mut body = crm();
    body["version"] = json!(41);
    let id = w.postback(body.clone()).await;
    assert_eq!(w.app.get_postback(&id).await.unwrap().version, 1, "a sent version is ignored");
    let deposit = json!({"type": "event", "transaction_id": "T1", "event_name": "deposit"});
    w.ingest_one(deposit.clone()).await;
    assert_eq!(w.process_one().await, AttemptOutcome::Delivered);

    body["name"] = json!("CRM v2");
    let v2 = w.app.replace_postback(&id, spec(&body)).await.unwrap();
    assert_eq!(v2.version, 2);
    body["name"] = json!("CRM v3");
    assert_eq!(w.app.replace_postback(&id, spec(&body)).await.unwrap().version, 3);
    w.ingest_one(json!({"type": "event", "transaction_id": "T2", "event_name": "deposit"})).await;
    assert_eq!(w.process_one().await, AttemptOutcome::Delivered);
    let fired: Vec<(String, Option<u32>)> =
        w.logs().into_iter().map(|e| (e.transaction_id, e.postback_version)).collect();
    assert_eq!(fired, [("T2".to_string(), Some(3)), ("T1".to_string(), Some(1))], "newest first");

    let versions = w.app.postback_versions(&id).await.unwrap();
    let names: Vec<(u32, &str)> = versions.iter().map(|p| (p.version, p.name.as_str())).collect();
    assert_eq!(names, [(3, "CRM v3"), (2, "CRM v2"), (1, "CRM")]);
    assert!(versions.iter().all(|p| p.headers["Authorization"] == REDACTED), "secrets redacted in every version");

    w.app.delete_postback(&id).await.unwrap();
    assert!(matches!(w.app.postback_versions(&id).await, Err(crate::service::ServiceError::NotFound(_))));
    assert!(matches!(w.app.postback_versions("pb_never").await, Err(crate::service::ServiceError::NotFound(_))));
}
