//! Signing on the fakes: the Standard Webhooks headers and the `{signature}` URL macro as
//! the scripted receiver gets them, checked with HMAC computed here (not by the code
//! under test), rotation, the secret's lifecycle, and that no secret is ever shown.

use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::{spec, World};
use crate::domain::redact::REDACTED;
use crate::entry::http::parse;
use crate::service::config_api::shown;
use crate::service::{AttemptOutcome, ServiceError};
use crate::testing::Answer;

/// The Standard Webhooks spec's example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const URL: &str = "https://hooks.example/in";

fn key_of(secret: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_")).unwrap()
}

fn hmac(key: &[u8], message: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

fn expected_signature(secret: &str, id: &str, ts: &str, body: &str) -> String {
    let digest = hmac(&key_of(secret), &format!("{id}.{ts}.{body}"));
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(digest))
}

fn webhook(extra: Value) -> Value {
    let mut pb = json!({"name": "Hook", "type": "click", "method": "POST", "url": URL,
        "body": "{\"click\": \"{transaction_id}\"}", "signing": "standard-webhooks", "signing_secret": SECRET});
    for (k, v) in extra.as_object().unwrap() {
        pb[k] = v.clone();
    }
    pb
}

async fn click(w: &World, tx: &str) {
    w.ingest_one(json!({"type": "click", "transaction_id": tx, "offer_id": "O1", "publisher_id": "P1"})).await;
}

fn header<'a>(request: &'a crate::domain::delivery::OutboundRequest, name: &str) -> &'a str {
    request.headers.get(name).map(String::as_str).unwrap_or_else(|| panic!("no {name} header: {:?}", request.headers))
}

/// Every text the API or the logs could show, for grepping secrets out of.
async fn everything_shown(w: &World, id: &str) -> String {
    let mut all = serde_json::to_string(&shown(w.app.get_postback(id).await.unwrap())).unwrap();
    let list = w.app.list_postbacks(&Default::default()).await.unwrap();
    all.push_str(&serde_json::to_string(&list.into_iter().map(shown).collect::<Vec<_>>()).unwrap());
    for entry in w.logs() {
        all.push_str(&serde_json::to_string(&entry).unwrap());
    }
    all
}

#[tokio::test]
async fn a_signed_post_carries_the_standard_webhooks_headers_and_the_logs_hide_the_signature() {
    let w = World::new();
    let id = w.postback(webhook(json!({}))).await;
    click(&w, "T1").await;
    assert_eq!(w.process_one().await, AttemptOutcome::Delivered);

    let sent = &w.sender.requests()[0].request;
    let delivery_id = &w.logs()[0].delivery_id;
    assert_eq!(header(sent, "webhook-id"), delivery_id);
    assert_eq!(header(sent, "webhook-timestamp"), w.now().timestamp().to_string(), "unix seconds by the clock");
    let body = sent.body.as_deref().unwrap();
    assert_eq!(body, r#"{"click": "T1"}"#);
    assert_eq!(
        header(sent, "webhook-signature"),
        expected_signature(SECRET, delivery_id, &w.now().timestamp().to_string(), body)
    );

    let entry = &w.logs()[0];
    assert_eq!(entry.request_headers.get("webhook-signature").map(String::as_str), Some(REDACTED));
    assert_eq!(entry.request_headers.get("webhook-id"), Some(delivery_id));
    let all = everything_shown(&w, &id).await;
    let signature_value = header(sent, "webhook-signature").trim_start_matches("v1,");
    assert!(!all.contains(SECRET) && !all.contains(&SECRET[6..]) && !all.contains(signature_value), "{all}");
}

#[tokio::test]
async fn a_get_is_signed_over_an_empty_body_and_each_attempt_has_its_own_timestamp() {
    let w = World::new();
    w.sender.set_default(Answer::status(503));
    w.postback(json!({"name": "Pixel", "type": "click", "url": "https://p.example/?c={transaction_id}",
        "signing": "standard-webhooks", "signing_secret": SECRET}))
        .await;
    click(&w, "T2").await;
    assert!(matches!(w.process_one().await, AttemptOutcome::Retrying(_)));
    w.advance_ms(60_000);
    w.sender.set_default(Answer::ok());
    assert_eq!(w.process_one().await, AttemptOutcome::Delivered);

    let sent = w.sender.requests();
    assert_eq!(sent.len(), 2);
    let (first, second) = (&sent[0].request, &sent[1].request);
    assert_eq!(first.body, None);
    assert_eq!(header(first, "webhook-id"), header(second, "webhook-id"), "one id per firing, kept on retries");
    let (t1, t2) = (header(first, "webhook-timestamp"), header(second, "webhook-timestamp"));
    assert_eq!(t2.parse::<i64>().unwrap() - t1.parse::<i64>().unwrap(), 60);
    for r in [first, second] {
        let ts = header(r, "webhook-timestamp");
        assert_eq!(header(r, "webhook-signature"), expected_signature(SECRET, header(r, "webhook-id"), ts, ""));
    }
}

#[tokio::test]
async fn after_a_rotation_both_secrets_sign_new_first_for_24_hours() {
    let w = World::new();
    let id = w.postback(webhook(json!({}))).await;
    let rotated = w.app.rotate_signing_secret(&id).await.unwrap();
    let new_secret = rotated.signing_secret.clone();
    assert!(new_secret.starts_with("whsec_") && new_secret != SECRET);
    assert_eq!(key_of(&new_secret).len(), 32);
    assert_eq!(rotated.previous_expires_at, Some(w.now() + chrono::Duration::hours(24)));
    assert_eq!(w.app.signing_secret(&id).await.unwrap().signing_secret, new_secret);

    click(&w, "T3").await;
    w.process_one().await;
    let sent = &w.sender.requests()[0].request;
    let (wid, ts, body) =
        (header(sent, "webhook-id"), header(sent, "webhook-timestamp"), sent.body.as_deref().unwrap());
    let expected =
        format!("{} {}", expected_signature(&new_secret, wid, ts, body), expected_signature(SECRET, wid, ts, body));
    assert_eq!(header(sent, "webhook-signature"), expected);

    // 24 h on, the old secret no longer signs.
    w.advance_ms(24 * 3_600_000);
    click(&w, "T4").await;
    w.process_one().await;
    let sent = &w.sender.requests()[1].request;
    let (wid, ts, body) =
        (header(sent, "webhook-id"), header(sent, "webhook-timestamp"), sent.body.as_deref().unwrap());
    assert_eq!(header(sent, "webhook-signature"), expected_signature(&new_secret, wid, ts, body));

    let all = everything_shown(&w, &id).await;
    assert!(!all.contains(&new_secret[6..]) && !all.contains(&SECRET[6..]), "{all}");
}

#[tokio::test]
async fn the_signature_macro_signs_the_final_url_with_its_own_value_empty() {
    let w = World::new();
    w.postback(json!({"name": "Pixel", "type": "click", "signing": "standard-webhooks", "signing_secret": SECRET,
        "url": "https://p.example/pb?c={transaction_id}&s={signature}&n={sub1}"}))
        .await;
    w.ingest_one(
        json!({"type": "click", "transaction_id": "T 5", "offer_id": "O1", "publisher_id": "P1", "sub1": "a&b"}),
    )
    .await;
    w.process_one().await;
    let sent = &w.sender.requests()[0].request;
    let unsigned = "https://p.example/pb?c=T%205&s=&n=a%26b";
    let hex_signature = hex::encode(hmac(&key_of(SECRET), unsigned));
    assert_eq!(sent.url, format!("https://p.example/pb?c=T%205&s={hex_signature}&n=a%26b"));
    // The receiver's check: empty the parameter's value, recompute.
    assert_eq!(sent.url.replace(&hex_signature, ""), unsigned);

    let entry = &w.logs()[0];
    assert_eq!(entry.url, format!("https://p.example/pb?c=T%205&s={REDACTED}&n=a%26b"), "a short name is redacted too");
    assert!(!serde_json::to_string(entry).unwrap().contains(&hex_signature));
}

#[tokio::test]
async fn a_preview_shows_the_signing_headers_redacted() {
    let w = World::new();
    let id = w.postback(webhook(json!({"url": "https://p.example/pb?sig={signature}"}))).await;
    let preview = w.app.preview_postback(&id, w.sample(&id, None).await).await.unwrap();
    assert_eq!(preview.request.headers.get("webhook-signature").map(String::as_str), Some(REDACTED));
    assert_eq!(preview.request.headers.get("webhook-timestamp"), Some(&w.now().timestamp().to_string()));
    assert_eq!(preview.request.url, format!("https://p.example/pb?sig={REDACTED}"));
}

#[tokio::test]
async fn the_secret_is_generated_shown_once_kept_on_replace_and_dropped_when_signing_stops() {
    let w = World::new();
    let mut pb = webhook(json!({}));
    pb.as_object_mut().unwrap().remove("signing_secret");
    let saved = w.app.create_postback_saved(spec(&pb)).await.unwrap();
    assert!(saved.secret_set);
    let id = saved.postback.id.clone();
    let generated = saved.clone().shown().signing_secret.unwrap().expose().to_string();
    assert!(generated.starts_with("whsec_"));
    assert_eq!(key_of(&generated).len(), 32, "32 random bytes");
    assert_eq!(w.app.signing_secret(&id).await.unwrap().signing_secret, generated);

    // Shown elsewhere: redacted; PUT back as shown (or without it): kept, and redacted.
    let got = serde_json::to_value(shown(w.app.get_postback(&id).await.unwrap())).unwrap();
    assert_eq!(got["signing_secret"], REDACTED);
    assert_eq!(got["signing"], "standard-webhooks");
    let saved = w.app.replace_postback_saved(&id, parse::postback::spec_from_json(&got).unwrap()).await.unwrap();
    assert!(!saved.secret_set);
    assert_eq!(saved.clone().shown().signing_secret.unwrap().expose(), REDACTED);
    assert_eq!(
        w.app.replace_postback_saved(&id, spec(&pb)).await.unwrap().postback.signing_secret,
        saved.postback.signing_secret
    );
    assert_eq!(w.app.signing_secret(&id).await.unwrap().signing_secret, generated);

    // A rotation's previous secret survives a replace that keeps the secret.
    w.app.rotate_signing_secret(&id).await.unwrap();
    let kept = w.app.replace_postback_saved(&id, spec(&pb)).await.unwrap().postback;
    assert!(kept.previous_signing_secret.is_some());

    // A new secret given on replace is set at once and shown in that response.
    let mut given = pb.clone();
    given["signing_secret"] = json!(SECRET);
    let saved = w.app.replace_postback_saved(&id, spec(&given)).await.unwrap();
    assert!(saved.secret_set);
    assert_eq!(saved.postback.previous_signing_secret, None, "no overlap when the client sets one");
    assert_eq!(saved.shown().signing_secret.unwrap().expose(), SECRET);

    // Signing off: both secrets dropped, the routes say so.
    let mut off = pb.clone();
    off["signing"] = json!("none");
    let saved = w.app.replace_postback_saved(&id, spec(&off)).await.unwrap();
    assert_eq!((saved.postback.signing_secret.as_ref(), saved.postback.previous_signing_secret.as_ref()), (None, None));
    assert!(matches!(w.app.signing_secret(&id).await, Err(ServiceError::Conflict(_))));
    assert!(matches!(w.app.rotate_signing_secret(&id).await, Err(ServiceError::Conflict(_))));
    // ... and on again without one: a new one.
    let saved = w.app.replace_postback_saved(&id, spec(&pb)).await.unwrap();
    assert!(saved.secret_set);
    assert_ne!(saved.postback.signing_secret.as_ref().map(|s| s.expose()), Some(generated.as_str()));

    assert!(matches!(w.app.signing_secret("pb_nope").await, Err(ServiceError::NotFound(_))));
    assert!(matches!(w.app.rotate_signing_secret("pb_nope").await, Err(ServiceError::NotFound(_))));
}

#[tokio::test]
async fn a_new_postback_cannot_keep_a_secret_it_does_not_have() {
    let w = World::new();
    let err = w.app.create_postback_saved(spec(&webhook(json!({"signing_secret": REDACTED})))).await.unwrap_err();
    match err {
        ServiceError::Validation(e) => assert_eq!(e.field, "signing_secret"),
        other => panic!("{other:?}"),
    }
    assert!(w.app.list_postbacks(&Default::default()).await.unwrap().is_empty(), "nothing written");
}

#[test]
fn bad_signing_input_is_refused_naming_the_field() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"signing": "hmac"}), "signing"),
        (json!({"signing": true}), "signing"),
        (json!({"signing_secret": "abc"}), "signing_secret"),
        (json!({"signing_secret": 12}), "signing_secret"),
        (json!({"signing_secret": "whsec_c2hvcnQ="}), "signing_secret"),
        (json!({"signing_secret": "whsec_!!!notbase64!!!notbase64!!!notbase64"}), "signing_secret"),
        (json!({"signing": "none", "signing_secret": SECRET}), "signing_secret"),
        (json!({"signing": "none", "signing_secret": null, "url": "https://p.example/?s={signature}"}), "url"),
        (json!({"headers": {"X-Sig": "{signature}"}}), "headers.X-Sig"),
        (json!({"body": "{\"s\": \"{signature}\"}"}), "body"),
        (json!({"url": "https://p.example/?s={Signature}"}), "url"),
    ];
    for (extra, field) in cases {
        let mut pb = webhook(json!({}));
        for (k, v) in extra.as_object().unwrap() {
            pb[k] = v.clone();
        }
        let err = parse::postback::spec_from_json(&pb).expect_err(&pb.to_string());
        assert_eq!(err.field, field, "{pb}: {err:?}");
    }
    // Signing off with [REDACTED] (a GET shown and then switched off) is accepted.
    let mut off = webhook(json!({"signing": "none", "signing_secret": REDACTED}));
    off["signing"] = json!("none");
    assert!(parse::postback::spec_from_json(&off).is_ok());
}
