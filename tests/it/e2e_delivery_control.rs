//! Delivery control end to end: `conditions` decide what matches, `success_rule` what
//! counts as delivered; both round-trip through the API; bad input writes nothing.

use crate::common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_filter_matches_and_success_rules_judge_2xx_bodies() {
    let sink = Sink::start().await;
    let server = Server::fresh(&[]).await;
    let api = server.client();

    let conditions = json!([
        {"field": "payout", "op": "gte", "value": 12.5},
        {"field": "country", "op": "in", "value": ["de", "at"]},
        {"field": "params.goal", "op": "exists"}
    ]);
    let rule = json!({"body_contains": "status=ok", "body_not_contains": "error"});
    let kept = api
        .create_postback(json!({"name": "Kept", "type": "conversion", "url": sink.url("/body/status=ok/kept"),
            "conditions": conditions, "success_rule": rule}))
        .await;
    let broken = api
        .create_postback(json!({"name": "Broken", "type": "conversion", "url": sink.url("/body/status=pending/broken"),
            "success_rule": {"body_contains": "status=ok"}}))
        .await;
    let too_big = api
        .create_postback(json!({"name": "Too big", "type": "conversion", "url": sink.url("/ok/too-big"),
            "conditions": [{"field": "payout", "op": "gt", "value": "12.50"}]}))
        .await;

    // Round trip: GET shows both fields as stored (numbers as text, codes upper-cased),
    // and a PUT of what was GOT keeps them.
    let got = api.get(&format!("/postbacks/{kept}")).await;
    assert_eq!(got.status, 200);
    let stored = json!([
        {"field": "payout", "op": "gte", "value": "12.5"},
        {"field": "country", "op": "in", "value": ["DE", "AT"]},
        {"field": "params.goal", "op": "exists"}
    ]);
    assert_eq!(got.body["conditions"], stored, "{}", got.body);
    assert_eq!(
        got.body["success_rule"],
        json!({"body_contains": "status=ok", "body_not_contains": "error", "retry": false})
    );
    let put = api.admin(reqwest::Method::PUT, &format!("/postbacks/{kept}"), Some(got.body.clone())).await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!((&put.body["conditions"], &put.body["success_rule"]), (&stored, &got.body["success_rule"]));
    let listed = api.get("/postbacks?type=conversion").await;
    let in_list = listed.body["items"]
        .as_array()
        .or(listed.body.as_array())
        .unwrap()
        .iter()
        .find(|p| p["id"] == kept.as_str())
        .cloned()
        .unwrap();
    assert_eq!(in_list["conditions"], stored);

    // Preview tells whether the sample meets the conditions.
    let preview = api
        .post(
            &format!("/postbacks/{kept}/preview"),
            json!({"payout": "13", "country": "DE", "params": {"goal": "ftd"}}),
        )
        .await;
    assert_eq!((preview.status, &preview.body["conditions_met"]), (200, &json!(true)), "{}", preview.body);
    let preview = api.post(&format!("/postbacks/{kept}/preview"), json!({"payout": "12.49"})).await;
    assert_eq!(preview.body["conditions_met"], false, "{}", preview.body);

    api.ingest(json!({"type": "click", "transaction_id": "T1", "offer_id": "O1", "publisher_id": "P1",
        "country": "de", "params": {"goal": "ftd"}}))
        .await;
    let r = api.ingest(json!({"type": "conversion", "transaction_id": "T1", "payout": "12.50"})).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["matched"], 2, "{}", r.body);

    let delivered = api.wait_logs(&format!("postback_id={kept}"), 1, WAIT, |e| e["outcome"] == "delivered").await;
    assert_eq!(delivered.len(), 1, "the enriched conversion meets the conditions and the body keeps the rule");
    let failed = api.wait_logs(&format!("postback_id={broken}"), 1, WAIT, |e| e["outcome"] == "failed").await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["status_code"], 200);
    assert_eq!(failed[0]["response_body"], "status=pending");
    assert_eq!(failed[0]["error"], r#"response body does not contain "status=ok""#);
    assert_eq!(api.logs(&format!("postback_id={broken}")).await.len(), 1, "failed at once, not retried");

    api.sentinel(&sink, "conditions", 0).await;
    assert!(sink.hits_on("/ok/too-big").is_empty(), "12.50 is not > 12.50: never sent");
    assert!(api.logs(&format!("postback_id={too_big}")).await.is_empty(), "nothing logged for a non-match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_conditions_and_success_rules_are_400s_naming_the_field_and_write_nothing() {
    let server = Server::fresh(&[]).await;
    let api = server.client();
    let base = json!({"name": "P", "type": "conversion", "url": "https://aff.example/pb"});
    let id = api.create_postback(base.clone()).await;
    let with = |field: &str, value: Value| {
        let mut body = base.clone();
        body[field] = value;
        body
    };
    let cases = [
        (
            with("conditions", json!([{"field": "sub1", "op": "exists"}, {"field": "Sub3", "op": "exists"}])),
            "conditions[1].field",
        ),
        (with("conditions", json!([{"field": "payout", "op": "between", "value": 1}])), "conditions[0].op"),
        (
            with(
                "conditions",
                json!([{"field": "sub1", "op": "exists"}, {"field": "sub1", "op": "exists"}, {"field": "payout", "op": "gt", "value": "12,5"}]),
            ),
            "conditions[2].value",
        ),
        (with("success_rule", json!({"body_contains": "ok", "retries": true})), "success_rule.retries"),
        (with("success_rule", json!({"body_contains": ""})), "success_rule.body_contains"),
    ];
    for (body, field) in cases {
        let r = api.post("/postbacks", body.clone()).await;
        assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some(field)), "{}", r.body);
        let r = api.admin(reqwest::Method::PUT, &format!("/postbacks/{id}"), Some(body)).await;
        assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some(field)), "{}", r.body);
    }
    let listed = api.get("/postbacks").await;
    let items = listed.body["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "nothing created: {listed:?}", listed = listed.body);
    assert!(items[0].get("conditions").is_none() && items[0].get("success_rule").is_none(), "nothing replaced");
}
