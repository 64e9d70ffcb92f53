//! The template library, golden: a fixed event rendered through each template gives
//! exactly the request written here, field by field, as each platform documents it (the
//! template's `docs_url`). The expected hashes were computed apart from the code
//! (SHA-256 of `ana.lopez@example.com` and of `15551234567`).

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use postback::domain::alert::{AlertContext, AlertKind};
use postback::domain::delivery::OutboundRequest;
use postback::domain::event::{EventType, Status};
use postback::domain::library;
use postback::domain::macros::{sample_event, MacroContext};
use postback::domain::postback::CompiledPostback;
use postback::entry::http::parse::postback::spec_from_json;
use serde_json::{json, Value};

const EMAIL_SHA256: &str = "53fdd27c13c87b89296422dd99e14d02656dbcacefed01d3b53a56313adf3a98";
const PHONE_SHA256: &str = "d6736136ea896c1bfdc553e0e86e702c70d060d805696ca3e4e9e0961353860a";
const ALERT_MESSAGE: &str =
    "Firing of postback CRM \"Acme\" conversions (pb_sample_crm) failed for transaction tx_5f2b9c1e7a: HTTP 400";

fn made_from(kind: &str, id: &str, inputs: Value) -> CompiledPostback {
    let body = json!({"name": "From a template", "type": kind, "template": {"id": id, "inputs": inputs}});
    let spec = spec_from_json(&body).unwrap_or_else(|e| panic!("{id}: {e}"));
    let at = Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap();
    spec.into_postback("pb_t".into(), at, at).compile().unwrap()
}

/// The conversion every template renders: approved, payout 12.50 EUR, e-mail and phone
/// as a tracker sends them, at 2024-05-01T12:00:00.250Z.
fn render(postback: &CompiledPostback, status: Status) -> OutboundRequest {
    let mut event = sample_event(EventType::Conversion, []);
    event.transaction_id = "T-1001".into();
    event.external_transaction_id = Some("clk_abc123".into());
    event.status = Some(status);
    event.payout = Some("12.50".into());
    event.currency = Some("EUR".into());
    event.user_agent = Some("Mozilla/5.0".into());
    event.timestamp = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap() + chrono::Duration::milliseconds(250);
    event.params = [
        ("email", " Ana.Lopez@Example.COM "),
        ("phone", "15551234567"),
        ("client_id", "555.777"),
        ("ttclid", "E.C.P.abc"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let ctx = MacroContext::new(&event, "pb_t", "From a template", "d_7f3a", 1);
    postback.render(&ctx).unwrap()
}

fn render_alert(postback: &CompiledPostback) -> OutboundRequest {
    let alert = AlertContext::sample(AlertKind::FiringFailed);
    assert_eq!(alert.message, ALERT_MESSAGE);
    let event = alert.event(Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap());
    let ctx = MacroContext::new(&event, "pb_t", "Ops", "d_7f3a", 1).alert(Some(&alert));
    postback.render(&ctx).unwrap()
}

fn json_headers(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut headers: BTreeMap<String, String> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    headers.insert("Content-Type".into(), "application/json".into());
    headers
}

fn body_json(request: &OutboundRequest) -> Value {
    serde_json::from_str(request.body.as_deref().unwrap()).unwrap()
}

#[test]
fn meta_capi_sends_a_server_event_with_hashed_identifiers() {
    let p = made_from("conversion", "meta-capi", json!({"pixel_id": "1234567890", "access_token": "EAAtoken123"}));
    let r = render(&p, Status::Approved);
    assert_eq!(r.method, "POST");
    assert_eq!(r.url, "https://graph.facebook.com/v21.0/1234567890/events?access_token=EAAtoken123");
    assert_eq!(r.headers, json_headers(&[]));
    assert_eq!(
        body_json(&r),
        json!({"data": [{
            "event_name": "Purchase",
            "event_time": 1_714_564_800,
            "event_id": "d_7f3a",
            "action_source": "website",
            "user_data": {
                "em": [EMAIL_SHA256],
                "ph": [PHONE_SHA256],
                "client_ip_address": "203.0.113.7",
                "client_user_agent": "Mozilla/5.0"
            },
            "custom_data": {"currency": "EUR", "value": 12.5, "order_id": "T-1001"}
        }]})
    );
    // Optional inputs change what they name.
    let p = made_from(
        "event",
        "meta-capi",
        json!({"pixel_id": "1", "access_token": "t", "event_name": "Lead", "action_source": "system_generated"}),
    );
    let body = body_json(&render(&p, Status::Approved));
    assert_eq!(
        (body["data"][0]["event_name"].as_str(), body["data"][0]["action_source"].as_str()),
        (Some("Lead"), Some("system_generated"))
    );
}

#[test]
fn tiktok_events_sends_a_web_event_with_the_access_token_header() {
    let p =
        made_from("conversion", "tiktok-events", json!({"pixel_code": "CABCDEFGHIJ123", "access_token": "tt_token_1"}));
    let r = render(&p, Status::Approved);
    assert_eq!(r.method, "POST");
    assert_eq!(r.url, "https://business-api.tiktok.com/open_api/v1.3/event/track/");
    assert_eq!(r.headers, json_headers(&[("Access-Token", "tt_token_1")]));
    assert_eq!(
        body_json(&r),
        json!({
            "event_source": "web",
            "event_source_id": "CABCDEFGHIJ123",
            "data": [{
                "event": "CompletePayment",
                "event_time": 1_714_564_800,
                "event_id": "d_7f3a",
                "user": {
                    "email": EMAIL_SHA256,
                    "phone": PHONE_SHA256,
                    "ttclid": "E.C.P.abc",
                    "ip": "203.0.113.7",
                    "user_agent": "Mozilla/5.0"
                },
                "properties": {"currency": "EUR", "value": 12.5, "order_id": "T-1001"}
            }]
        })
    );
}

#[test]
fn ga4_mp_sends_an_event_with_timestamp_micros() {
    let p = made_from("conversion", "ga4-mp", json!({"measurement_id": "G-ABC123XYZ", "api_secret": "s3cr3tKEY_9"}));
    let r = render(&p, Status::Approved);
    assert_eq!(r.method, "POST");
    assert_eq!(r.url, "https://www.google-analytics.com/mp/collect?measurement_id=G-ABC123XYZ&api_secret=s3cr3tKEY_9");
    assert_eq!(r.headers, json_headers(&[]));
    assert_eq!(
        body_json(&r),
        json!({
            "client_id": "555.777",
            "timestamp_micros": 1_714_564_800_250_000_u64,
            "user_data": {"sha256_email_address": [EMAIL_SHA256], "sha256_phone_number": [PHONE_SHA256]},
            "events": [{"name": "purchase", "params": {"transaction_id": "d_7f3a", "value": 12.5, "currency": "EUR"}}]
        })
    );
}

#[test]
fn trackers_get_their_documented_postback_urls() {
    let tracker = "https://trk.example.com";
    #[rustfmt::skip]
    let cases: Vec<(&str, Value, Status, &str)> = vec![
        ("voluum", json!({"tracker_url": tracker}), Status::Approved,
         "https://trk.example.com/postback?cid=clk_abc123&payout=12.50&txid=T-1001&currency=EUR"),
        ("redtrack", json!({"tracker_url": tracker}), Status::Approved,
         "https://trk.example.com/postback?clickid=clk_abc123&sum=12.50"),
        ("keitaro", json!({"tracker_url": tracker, "postback_key": "a1b2c3d4"}), Status::Approved,
         "https://trk.example.com/a1b2c3d4/postback?subid=clk_abc123&status=sale&payout=12.50&currency=eur&tid=T-1001"),
        ("keitaro", json!({"tracker_url": tracker, "postback_key": "a1b2c3d4"}), Status::Pending,
         "https://trk.example.com/a1b2c3d4/postback?subid=clk_abc123&status=lead&payout=12.50&currency=eur&tid=T-1001"),
        ("binom", json!({"tracker_url": tracker, "payout_share": "0.5"}), Status::Approved,
         "https://trk.example.com/click.php?cnv_id=clk_abc123&payout=6.25&cnv_status=approved&cnv_currency=EUR"),
        ("binom", json!({"tracker_url": tracker}), Status::Approved,
         "https://trk.example.com/click.php?cnv_id=clk_abc123&payout=12.50&cnv_status=approved&cnv_currency=EUR"),
        ("everflow", json!({"tracker_url": tracker, "network_id": "42"}), Status::Approved,
         "https://trk.example.com/?nid=42&transaction_id=clk_abc123&amount=12.50&adv1=T-1001"),
        ("tune", json!({"network_id": "demo"}), Status::Approved,
         "https://demo.go2cloud.org/aff_lsr?transaction_id=clk_abc123&amount=12.50&adv_sub=T-1001"),
        ("cake", json!({"tracker_url": tracker, "offer_id": "77"}), Status::Approved,
         "https://trk.example.com/p.ashx?o=77&f=pb&r=clk_abc123&t=T-1001&p=12.50"),
        ("affise", json!({"tracker_url": tracker}), Status::Approved,
         "https://trk.example.com/postback?clickid=clk_abc123&action_id=T-1001&sum=12.50&status=1&goal=1"),
        ("affise", json!({"tracker_url": tracker, "goal": "deposit"}), Status::Rejected,
         "https://trk.example.com/postback?clickid=clk_abc123&action_id=T-1001&sum=12.50&status=3&goal=deposit"),
    ];
    for (id, inputs, status, url) in cases {
        let p = made_from("conversion", id, inputs);
        let r = render(&p, status);
        assert_eq!((r.method.as_str(), r.url.as_str()), ("GET", url), "{id}");
        assert!(r.headers.is_empty() && r.body.is_none(), "{id}: {r:?}");
    }
    // TUNE answers 200 with success=false for a refused conversion.
    let tune = made_from("conversion", "tune", json!({"network_id": "demo"}));
    assert_eq!(tune.postback.success_rule.as_ref().and_then(|r| r.body_contains.as_deref()), Some("success=true"));
}

#[test]
fn chats_get_their_incoming_message_formats() {
    let slack = made_from("alert", "slack", json!({"webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX"}));
    let r = render_alert(&slack);
    assert_eq!((r.method.as_str(), r.url.as_str()), ("POST", "https://hooks.slack.com/services/T000/B000/XXXX"));
    assert_eq!(r.headers, json_headers(&[]));
    assert_eq!(
        r.body.as_deref(),
        Some(
            r#"{"text": "Firing of postback CRM \"Acme\" conversions (pb_sample_crm) failed for transaction tx_5f2b9c1e7a: HTTP 400"}"#
        )
    );
    assert_eq!(slack.postback.alerts.len(), 3, "every alert");

    let teams = made_from("alert", "teams", json!({"webhook_url": "https://example.webhook.office.com/webhookb2/abc"}));
    let r = render_alert(&teams);
    assert_eq!(r.url, "https://example.webhook.office.com/webhookb2/abc");
    assert_eq!(
        body_json(&r),
        json!({"type": "message", "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [{"type": "TextBlock", "text": ALERT_MESSAGE, "wrap": true}]
            }
        }]})
    );

    let discord = made_from("alert", "discord", json!({"webhook_url": "https://discord.com/api/webhooks/123/abc_DEF"}));
    let r = render_alert(&discord);
    assert_eq!(r.url, "https://discord.com/api/webhooks/123/abc_DEF");
    assert_eq!(body_json(&r), json!({"content": ALERT_MESSAGE}));

    let telegram =
        made_from("alert", "telegram", json!({"bot_token": "123456:ABCdefGHIjklMNOpqrSTUvwx", "chat_id": "-1001234"}));
    let r = render_alert(&telegram);
    assert_eq!(r.url, "https://api.telegram.org/bot123456:ABCdefGHIjklMNOpqrSTUvwx/sendMessage");
    assert_eq!(body_json(&r), json!({"chat_id": "-1001234", "text": ALERT_MESSAGE}));
}

#[test]
fn every_template_renders_for_its_types_and_is_refused_for_others() {
    for template in library::all() {
        assert!(!template.summary.is_empty() && template.docs_url.starts_with("https://"), "{}", template.id);
        let other = if template.types.contains(&EventType::Alert) { "conversion" } else { "alert" };
        let inputs = json!({});
        let err =
            spec_from_json(&json!({"name": "x", "type": other, "template": {"id": template.id, "inputs": inputs}}))
                .unwrap_err();
        // Inputs are checked first (a missing one), then the type.
        assert!(err.field.starts_with("template."), "{}: {err}", template.id);
    }
    let err = spec_from_json(&json!({"name": "x", "type": "conversion",
        "template": {"id": "slack", "inputs": {"webhook_url": "https://hooks.slack.com/services/T/B/X"}}}))
    .unwrap_err();
    assert_eq!(err.field, "template.id");
    assert!(err.message.contains("for alert postbacks"), "{}", err.message);
}

#[test]
fn template_errors_name_the_field_and_nothing_else_is_read() {
    #[rustfmt::skip]
    let cases: Vec<(Value, &str)> = vec![
        (json!({"id": "meta-cap", "inputs": {}}), "template.id"),
        (json!({"inputs": {}}), "template.id"),
        (json!({"id": "meta-capi", "inputs": {"pixel_id": "12"}}), "template.inputs.access_token"),
        (json!({"id": "meta-capi", "inputs": {"pixel_id": "x12", "access_token": "t"}}), "template.inputs.pixel_id"),
        (json!({"id": "keitaro", "inputs": {"tracker_url": "ftp://trk.example.com", "postback_key": "abcd"}}), "template.inputs.tracker_url"),
        (json!({"id": "keitaro", "inputs": {"tracker_url": "https://trk.example.com/path", "postback_key": "abcd"}}), "template.inputs.tracker_url"),
        (json!({"id": "binom", "inputs": {"tracker_url": "https://t.example", "payout_share": "half"}}), "template.inputs.payout_share"),
        (json!({"id": "meta-capi", "inputs": []}), "template.inputs"),
        (json!({"id": "meta-capi", "inputs": {}, "extra": 1}), "template.extra"),
        (json!("meta-capi"), "template"),
    ];
    for (template, field) in cases {
        let err = spec_from_json(&json!({"name": "x", "type": "conversion", "template": template})).unwrap_err();
        assert_eq!(err.field, field, "{template}: {err}");
    }
}
