//! Postbacks made from library templates: the secret inputs are stored and sent whole,
//! redacted wherever the postback or its requests are shown, and a postback PUT back as
//! shown keeps them; the template reference is kept.

use serde_json::json;

use super::{spec, World};
use crate::domain::library::TemplateRef;
use crate::domain::redact::REDACTED;
use crate::service::config_api::shown;
use crate::service::AttemptOutcome;

const TOKEN: &str = "EAAtoken123secret";
const HOOK: &str = "https://hooks.slack.com/services/T000/B000/XXXXsecret";

fn meta() -> serde_json::Value {
    json!({"name": "Meta pixel", "type": "conversion",
           "template": {"id": "meta-capi", "inputs": {"pixel_id": "1234567890", "access_token": TOKEN}}})
}

#[tokio::test]
async fn secret_inputs_are_sent_whole_and_shown_redacted_everywhere() {
    let w = World::new();
    let id = w.postback(meta()).await;
    let stored = w.app.get_postback(&id).await.unwrap();
    assert_eq!(stored.template, Some(TemplateRef { id: "meta-capi".into(), version: 1 }));
    assert_eq!(stored.template_secrets, [TOKEN], "stored to be redacted");
    assert!(stored.url.ends_with(&format!("access_token={TOKEN}")));

    let api = serde_json::to_value(shown(stored.clone())).unwrap();
    assert_eq!(api["url"], format!("https://graph.facebook.com/v21.0/1234567890/events?access_token={REDACTED}"));
    assert_eq!(api["template"], json!({"id": "meta-capi", "version": 1}));
    assert!(api.get("template_secrets").is_none(), "never shown: {api}");
    assert!(!api.to_string().contains(TOKEN));

    w.ingest_one(json!({"type": "conversion", "transaction_id": "T1", "payout": "3.10"})).await;
    assert_eq!(w.process_one().await, AttemptOutcome::Delivered);
    let sent = &w.sender.requests()[0].request;
    assert!(sent.url.ends_with(&format!("access_token={TOKEN}")), "the receiver gets the secret: {}", sent.url);
    let entry = &w.logs()[0];
    assert!(!serde_json::to_string(entry).unwrap().contains(TOKEN), "no log holds it: {entry:?}");

    let preview = w.app.preview_postback(&id, w.sample(&id, None).await).await.unwrap();
    assert!(!serde_json::to_string(&preview).unwrap().contains(TOKEN), "nor a preview");

    let versions = w.app.postback_versions(&id).await.unwrap();
    assert!(!serde_json::to_string(&versions).unwrap().contains(TOKEN), "nor a version");
}

#[tokio::test]
async fn a_postback_put_back_as_shown_keeps_its_secrets_and_template() {
    let w = World::new();
    let id = w
        .postback(json!({"name": "Ops", "type": "alert",
        "template": {"id": "slack", "inputs": {"webhook_url": HOOK}}}))
        .await;
    let mut body = serde_json::to_value(shown(w.app.get_postback(&id).await.unwrap())).unwrap();
    assert_eq!(body["url"], format!("https://hooks.slack.com/{REDACTED}"), "a webhook URL still reads as a URL");
    body["name"] = json!("Ops chat");
    let replaced = w.app.replace_postback(&id, spec(&body)).await.unwrap();
    assert_eq!(replaced.url, HOOK, "kept");
    assert_eq!(replaced.template, Some(TemplateRef { id: "slack".into(), version: 1 }));
    assert_eq!(replaced.template_secrets, [HOOK]);

    // Changed around a [REDACTED]: refused, nothing written.
    body["url"] = json!(format!("https://hooks.slack.com/{REDACTED}?x=1"));
    let err = w.app.replace_postback(&id, spec(&body)).await.unwrap_err();
    assert!(err.to_string().contains("url"), "{err}");
    assert_eq!(w.app.get_postback(&id).await.unwrap().version, 2);

    // Request fields given explicitly win over the template's; a secret no field holds is
    // not kept.
    let own = w
        .postback(json!({"name": "Own URL", "type": "conversion", "url": "https://receiver.example/pb",
            "template": {"id": "meta-capi", "inputs": {"pixel_id": "1", "access_token": TOKEN}}}))
        .await;
    let own = w.app.get_postback(&own).await.unwrap();
    assert_eq!(own.url, "https://receiver.example/pb");
    assert!(own.body.unwrap().contains("\"event_id\": \"{delivery_id}\""), "the rest is the template's");
    assert!(own.template_secrets.is_empty());
}
