//! Roles in one place: every route × every kind of key answers as the role table says;
//! the OpenAPI document lists the same roles; partners read only their own; the audit
//! trail records a full flow and never a secret.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::{router, Access, ApiKeys, RouteSet, OPENAPI_JSON, ROUTES};
use crate::domain::access::{Caller, KeySpec, Role};
use crate::domain::event::EventType;
use crate::domain::log::Outcome;
use crate::domain::postback::Owner;
use crate::ports::{Clock, LogStore, PostbackStore};
use crate::service::{App, Policy};
use crate::testing::{self, fixtures, ManualClock, MemoryAdapters, TestApp};

const ADMIN: &str = "admin-key-0123456789abcdef";
const INGEST: &str = "ingest-key-0123456789abcdef";

pub(super) struct World {
    pub app: Arc<App>,
    pub router: axum::Router,
    pub memory: MemoryAdapters,
    pub clock: Arc<ManualClock>,
    /// Every request the app sent.
    pub sender: Arc<crate::testing::ScriptedSender>,
}

fn world() -> World {
    world_with(Default::default())
}

pub(super) fn world_with(partners: crate::domain::partner::PartnerPolicy) -> World {
    let TestApp { app, memory, clock, sender } =
        testing::app(Arc::new(ManualClock::starting_now()), Policy { partners, ..testing::policy() });
    let router = router(app.clone(), ApiKeys::new(ADMIN, INGEST), RouteSet::All);
    World { app, router, memory, clock, sender }
}

pub(super) async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(k) = key {
        request = request.header("x-api-key", k);
    }
    let body = match body {
        Some(v) => {
            request = request.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let response = router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

pub(super) async fn make_key(app: &App, role: Role, publisher: Option<&str>) -> String {
    let spec = KeySpec::new(format!("{} key", role.as_str()), role, publisher.map(String::from)).unwrap();
    app.create_key(&Caller::bootstrap_admin(), spec).await.unwrap().key
}

/// The kinds of caller the matrix walks.
#[derive(Debug, Clone)]
enum Who {
    Key(Role, String),
    Unknown(String),
    Revoked(String),
    Nobody,
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "x_none").replace("{asset}", "app.js")
}

/// Every route × admin, viewer, partner, ingest (managed and bootstrap), an unknown
/// key, a revoked key and no key: 401 without a valid key, 403 for a valid key whose
/// role the route's row leaves out, anything else (never 401/403/5xx) for one it lets in.
#[tokio::test]
async fn every_route_answers_every_role_as_the_table_says() {
    let w = world();
    let revoked = make_key(&w.app, Role::Admin, None).await;
    let id = w.app.list_keys().await.unwrap()[0].id.clone();
    w.app.revoke_key(&Caller::bootstrap_admin(), &id).await.unwrap();
    w.clock.advance(Duration::from_secs(6));
    let mut callers = vec![
        Who::Key(Role::Admin, ADMIN.into()),
        Who::Key(Role::Ingest, INGEST.into()),
        Who::Unknown(crate::domain::access::new_key()),
        Who::Unknown("not-a-key".into()),
        Who::Revoked(revoked),
        Who::Nobody,
    ];
    for role in Role::ALL {
        let publisher = (role == Role::Partner).then_some("7");
        callers.push(Who::Key(role, make_key(&w.app, role, publisher).await));
    }
    let mut checked = 0;
    for (method, path, access) in ROUTES {
        let uri = concrete(path);
        let body = matches!(*method, "POST" | "PUT").then(|| json!({}));
        for who in &callers {
            let key = match who {
                Who::Key(_, k) | Who::Unknown(k) | Who::Revoked(k) => Some(k.as_str()),
                Who::Nobody => None,
            };
            let (status, answer) = call(&w.router, method, &uri, key, body.clone()).await;
            let context = format!("{method} {path} as {who:?}: {status} {answer}");
            assert!(!status.is_server_error(), "{context}");
            match (access, who) {
                (Access::Open, _) => assert!(status != 401 && status != 403, "{context}"),
                (Access::Roles(_), Who::Unknown(_) | Who::Revoked(_) | Who::Nobody) => {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{context}")
                }
                (Access::Roles(roles), Who::Key(role, _)) if roles.contains(role) => {
                    assert!(status != 401 && status != 403, "{context}")
                }
                (Access::Roles(_), Who::Key(..)) => assert_eq!(status, StatusCode::FORBIDDEN, "{context}"),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * callers.len());
}

/// What the spec's role table says, spelled out for the routes it names, against the
/// one table.
#[test]
fn the_table_gives_each_role_what_the_spec_says() {
    let may = |role: Role, method: &str, path: &str| match super::access_of(method, path).unwrap() {
        Access::Open => true,
        Access::Roles(r) => r.contains(&role),
    };
    for (method, path, _) in ROUTES {
        let admin_route = !matches!(*path, "/events" | "/health" | "/openapi.json") && !path.starts_with("/console");
        if admin_route {
            assert!(may(Role::Admin, method, path), "admin may do everything: {method} {path}");
            assert!(!may(Role::Ingest, method, path), "ingest keys: ingest routes only: {method} {path}");
        }
        // Viewer: every GET of the admin routes but the secret, POST preview, nothing else.
        let viewer = admin_route
            && ((*method == "GET" && !matches!(*path, "/postbacks/{id}/secret" | "/keys"))
                || *path == "/postbacks/{id}/preview");
        if admin_route {
            assert_eq!(may(Role::Viewer, method, path), viewer, "viewer: {method} {path}");
        }
    }
    assert!(may(Role::Ingest, "POST", "/events") && may(Role::Ingest, "GET", "/events"));
    assert!(!may(Role::Admin, "POST", "/events"), "the two bootstrap keys are different secrets");
    assert!(!may(Role::Ingest, "GET", "/me"));
    for path in ["/postbacks", "/postbacks/{id}", "/logs", "/logs/{id}", "/me"] {
        assert!(may(Role::Partner, "GET", path), "partner: GET {path}");
    }
    for (method, path) in [
        ("POST", "/postbacks"),
        ("PUT", "/postbacks/{id}"),
        ("DELETE", "/postbacks/{id}"),
        ("POST", "/postbacks/{id}/test"),
        ("POST", "/postbacks/{id}/preview"),
        ("POST", "/logs/{id}/resend"),
    ] {
        assert!(may(Role::Partner, method, path), "partner: {method} {path} (its own)");
    }
    for (method, path) in [
        ("GET", "/keys"),
        ("GET", "/audit"),
        ("POST", "/logs/replay"),
        ("GET", "/metrics"),
        ("GET", "/postbacks/{id}/secret"),
        ("POST", "/postbacks/{id}/approve"),
        ("POST", "/postbacks/{id}/reject"),
    ] {
        assert!(!may(Role::Partner, method, path), "partner: no {method} {path}");
    }
}

/// Each operation of `openapi.json` lists its roles (`x-roles`), the same as the table.
#[test]
fn the_document_lists_the_tables_roles() {
    let doc: Value = serde_json::from_str(OPENAPI_JSON).unwrap();
    for (method, path, access) in ROUTES {
        let op = &doc["paths"][path][method.to_lowercase()];
        let listed: Vec<&str> = op["x-roles"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path}: no x-roles"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let expected: Vec<&str> = match access {
            Access::Open => vec![],
            Access::Roles(roles) => roles.iter().map(|r| r.as_str()).collect(),
        };
        assert_eq!(listed, expected, "{method} {path}");
    }
}

/// A key in a query string opens nothing, except `?key=` on `GET /events` with an
/// ingest-role key (bootstrap or managed).
#[tokio::test]
async fn a_key_in_the_query_string_is_only_for_get_ingest() {
    let w = world();
    let managed_ingest = make_key(&w.app, Role::Ingest, None).await;
    let managed_admin = make_key(&w.app, Role::Admin, None).await;
    let events = "/events?type=click&transaction_id=T1&offer_id=42&publisher_id=7&key=";
    for key in [INGEST, managed_ingest.as_str()] {
        let (status, body) = call(&w.router, "GET", &format!("{events}{key}"), None, None).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    }
    for key in [ADMIN, managed_admin.as_str()] {
        let (status, _) = call(&w.router, "GET", &format!("{events}{key}"), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "an admin key in a URL is refused");
        let (status, _) = call(&w.router, "GET", &format!("/logs?key={key}"), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = call(&w.router, "GET", &format!("/me?key={key}"), None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
}

/// A thousand random keys: 401 every time, never a 5xx.
#[tokio::test]
async fn a_thousand_random_keys_get_401() {
    let w = world();
    for i in 0..1000 {
        let key = match i % 3 {
            0 => crate::domain::access::new_key(),
            1 => format!("pmk_{}", rand::random::<u64>()),
            _ => format!("{:x}{:x}", rand::random::<u128>(), rand::random::<u64>()),
        };
        let (status, _) = call(&w.router, "GET", "/postbacks", Some(&key), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{key}");
    }
}

/// `POST /keys` validation: each refusal a 400 naming the field, nothing written.
#[tokio::test]
async fn key_requests_are_validated_and_refusals_write_nothing() {
    let w = world();
    for (body, field) in [
        (json!({"name": "A", "role": "root"}), "role"),
        (json!({"name": "A", "role": "partner"}), "publisher_id"),
        (json!({"name": "A", "role": "admin", "publisher_id": "7"}), "publisher_id"),
        (json!({"name": "x".repeat(201), "role": "viewer"}), "name"),
        (json!({"name": "", "role": "viewer"}), "name"),
        (json!({"role": "viewer"}), "name"),
    ] {
        let (status, answer) = call(&w.router, "POST", "/keys", Some(ADMIN), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (_, keys) = call(&w.router, "GET", "/keys", Some(ADMIN), None).await;
    assert_eq!(keys["items"], json!([]));
    let (_, audit) = call(&w.router, "GET", "/audit", Some(ADMIN), None).await;
    assert_eq!(audit["items"], json!([]));
}

/// Keys end to end: created (shown once, `pmk_` + 43 characters), listed without the
/// key, `/me`, revoked (at once in this process), 404 for unknown ids.
#[tokio::test]
async fn keys_are_shown_once_listed_and_revoked() {
    let w = world();
    let (status, created) =
        call(&w.router, "POST", "/keys", Some(ADMIN), Some(json!({"name": "Ana (support)", "role": "viewer"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_string();
    assert!(key.starts_with("pmk_") && key.len() == 47, "{key}");
    let mut fields: Vec<&str> = created.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(fields, ["created_at", "id", "key", "name", "publisher_id", "role"]);

    let (status, me) = call(&w.router, "GET", "/me", Some(&key), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me, json!({"id": created["id"], "name": "Ana (support)", "role": "viewer", "publisher_id": null}));
    let (_, me) = call(&w.router, "GET", "/me", Some(ADMIN), None).await;
    assert_eq!(me["id"], "env:admin");
    assert_eq!(call(&w.router, "GET", "/me", Some(INGEST), None).await.0, StatusCode::FORBIDDEN);

    let (_, listed) = call(&w.router, "GET", "/keys", Some(ADMIN), None).await;
    let item = &listed["items"][0];
    assert!(item.get("key").is_none() && item.get("hash").is_none(), "{item}");
    let minute = crate::domain::access::minute_of(w.clock.now()).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(item["last_used_at"], json!(minute), "last use at minute precision");
    assert!(!listed.to_string().contains(&key));

    let path = format!("/keys/{}", created["id"].as_str().unwrap());
    assert_eq!(call(&w.router, "DELETE", &path, Some(ADMIN), None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(call(&w.router, "GET", "/me", Some(&key), None).await.0, StatusCode::UNAUTHORIZED, "at once here");
    assert_eq!(call(&w.router, "DELETE", &path, Some(ADMIN), None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(&w.router, "DELETE", "/keys/key_none", Some(ADMIN), None).await.0, StatusCode::NOT_FOUND);
}

/// Partners read only their own: another's (or the network's) postback or log entry is
/// 404 and lists leave them out; a viewer sees all, secrets redacted, and no secret.
#[tokio::test]
async fn partners_read_only_their_own() {
    let w = world();
    let owned = |id: &str, publisher: Option<&str>| {
        let mut p = fixtures::postback(id, EventType::Conversion);
        p.owner = publisher.map(|p| Owner { publisher_id: p.into() });
        p.headers.insert("X-Token".into(), "hdr-secret-value".into());
        p
    };
    for p in [owned("pb_mine", Some("7")), owned("pb_theirs", Some("8")), owned("pb_network", None)] {
        w.memory.postbacks.create(&p, &fixtures::audit(&p.id)).await.unwrap();
        let mut firing = fixtures::firing(&format!("d_{}", p.id), w.clock.now());
        firing.postback_id = p.id.clone();
        firing.event.publisher_id = Some(if p.id == "pb_theirs" { "8" } else { "7" }.into());
        let mut entry = fixtures::log_entry(&firing, Outcome::Delivered);
        entry.id = format!("log_{}", p.id);
        entry.postback_id = p.id.clone();
        entry.publisher_id = firing.event.publisher_id.clone();
        w.memory.logs.append(&[entry]).await.unwrap();
    }
    let partner = make_key(&w.app, Role::Partner, Some("7")).await;
    let viewer = make_key(&w.app, Role::Viewer, None).await;

    let (_, list) = call(&w.router, "GET", "/postbacks", Some(&partner), None).await;
    let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["pb_mine"]);
    assert_eq!(call(&w.router, "GET", "/postbacks/pb_mine", Some(&partner), None).await.0, StatusCode::OK);
    for other in ["pb_theirs", "pb_network"] {
        for suffix in ["", "/versions", "/stats"] {
            let uri = format!("/postbacks/{other}{suffix}");
            assert_eq!(call(&w.router, "GET", &uri, Some(&partner), None).await.0, StatusCode::NOT_FOUND, "{uri}");
        }
        let uri = format!("/postbacks/{other}/preview");
        assert_eq!(call(&w.router, "POST", &uri, Some(&partner), None).await.0, StatusCode::NOT_FOUND);
        let uri = format!("/logs/log_{other}");
        assert_eq!(call(&w.router, "GET", &uri, Some(&partner), None).await.0, StatusCode::NOT_FOUND);
    }
    let (_, logs) = call(&w.router, "GET", "/logs", Some(&partner), None).await;
    let ids: Vec<&str> = logs["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["log_pb_mine"]);
    assert_eq!(call(&w.router, "GET", "/logs/log_pb_mine", Some(&partner), None).await.0, StatusCode::OK);

    let (_, all) = call(&w.router, "GET", "/postbacks", Some(&viewer), None).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    assert!(!all.to_string().contains("hdr-secret-value"), "secrets redacted for viewers");
    let (_, logs) = call(&w.router, "GET", "/logs", Some(&viewer), None).await;
    assert_eq!(logs["items"].as_array().unwrap().len(), 3);
    assert_eq!(call(&w.router, "GET", "/postbacks/pb_mine/secret", Some(&viewer), None).await.0, StatusCode::FORBIDDEN);
}

fn records(audit: &Value) -> Vec<Value> {
    audit["items"].as_array().unwrap().clone()
}

/// A full flow by a managed admin key, then the trail: every change has its record with
/// the spec's fields, newest first, filters and paging work, saved versions carry
/// `changed_by`, and no record holds a key, a secret or a signature.
#[tokio::test]
async fn the_trail_records_a_full_flow_and_never_a_secret() {
    let w = world();
    let (_, created) =
        call(&w.router, "POST", "/keys", Some(ADMIN), Some(json!({"name": "Ops lead", "role": "admin"}))).await;
    let ops = created["key"].as_str().unwrap().to_string();
    let ops_id = created["id"].as_str().unwrap().to_string();
    let postback = json!({
        "name": "Affiliate A", "type": "conversion", "url": "https://aff.example/pb?tok=url-token-123&c={transaction_id}",
        "headers": {"Authorization": "Bearer header-secret-456"}, "signing": "standard-webhooks"
    });
    let (status, p) = call(&w.router, "POST", "/postbacks", Some(&ops), Some(postback.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    let first_secret = p["signing_secret"].as_str().unwrap().to_string();
    let mut changed = postback.clone();
    changed["name"] = json!("Affiliate A (EU)");
    changed["headers"]["Authorization"] = json!("[REDACTED]");
    assert_eq!(call(&w.router, "PUT", &format!("/postbacks/{id}"), Some(&ops), Some(changed)).await.0, StatusCode::OK);
    let (_, secret) = call(&w.router, "GET", &format!("/postbacks/{id}/secret"), Some(&ops), None).await;
    let (_, rotated) = call(&w.router, "POST", &format!("/postbacks/{id}/secret/rotate"), Some(&ops), None).await;
    let (status, test) = call(&w.router, "POST", &format!("/postbacks/{id}/test"), Some(&ops), None).await;
    assert_eq!(status, StatusCode::OK, "{test}");
    let log_id = test["log_id"].as_str().unwrap().to_string();
    let (status, resent) = call(&w.router, "POST", &format!("/logs/{log_id}/resend"), Some(&ops), None).await;
    assert_eq!(status, StatusCode::CREATED, "{resent}");
    let from = (w.clock.now() - chrono::Duration::hours(1)).to_rfc3339();
    let replay = json!({"from": from, "postback_id": id});
    let (status, r) =
        call(&w.router, "POST", "/logs/replay", Some(&ops), Some(json!({"from": from, "dry_run": true}))).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(call(&w.router, "POST", "/logs/replay", Some(&ops), Some(replay)).await.0, StatusCode::OK);
    assert_eq!(call(&w.router, "POST", &format!("/postbacks/{id}/resume"), Some(&ops), None).await.0, StatusCode::OK);
    let (_, versions) = call(&w.router, "GET", &format!("/postbacks/{id}/versions"), Some(&ops), None).await;
    for v in versions["items"].as_array().unwrap() {
        assert_eq!(v["changed_by"]["key_id"], json!(ops_id), "every saved version carries changed_by: {v}");
        assert_eq!(v["changed_by"]["role"], "admin");
    }
    assert_eq!(
        call(&w.router, "DELETE", &format!("/postbacks/{id}"), Some(&ops), None).await.0,
        StatusCode::NO_CONTENT
    );
    let (_, viewer) =
        call(&w.router, "POST", "/keys", Some(&ops), Some(json!({"name": "Support", "role": "viewer"}))).await;
    let viewer_key = viewer["key"].as_str().unwrap().to_string();
    let viewer_path = format!("/keys/{}", viewer["id"].as_str().unwrap());
    assert_eq!(call(&w.router, "DELETE", &viewer_path, Some(&ops), None).await.0, StatusCode::NO_CONTENT);

    let (status, audit) = call(&w.router, "GET", "/audit?limit=500", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    let all = records(&audit);
    let actions: Vec<&str> = all.iter().rev().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "key.create",
            "postback.create",
            "postback.replace",
            "postback.secret_read",
            "postback.secret_rotate",
            "postback.test",
            "log.resend",
            "logs.replay",
            "postback.resume",
            "postback.delete",
            "key.create",
            "key.revoke"
        ],
        "one record per change, none for the dry run, newest first"
    );
    for r in &all {
        let mut fields: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["action", "actor", "at", "id", "ip", "summary", "target", "version_after", "version_before"],
            "{r}"
        );
        assert!(r["summary"].as_str().is_some_and(|s| !s.is_empty()));
    }
    // The oldest record of each action.
    let by_action = |a: &str| all.iter().rev().find(|r| r["action"] == a).unwrap().clone();
    assert_eq!(by_action("postback.create")["actor"]["key_id"], json!(ops_id));
    assert_eq!(by_action("postback.create")["actor"]["name"], "Ops lead");
    assert_eq!(by_action("key.create")["actor"]["key_id"], "env:admin");
    let replace = by_action("postback.replace");
    assert_eq!((replace["version_before"].clone(), replace["version_after"].clone()), (json!(1), json!(2)));
    assert_eq!(replace["target"], json!({"kind": "postback", "id": id}));
    assert_eq!(by_action("logs.replay")["target"], json!({"kind": "postback", "id": id}));
    assert_eq!(by_action("log.resend")["target"], json!({"kind": "log", "id": log_id}));
    assert_eq!(by_action("postback.delete")["version_after"], Value::Null);

    // Never a key, a secret or a signature.
    let text = audit.to_string();
    let secrets = [
        ADMIN,
        INGEST,
        ops.as_str(),
        viewer_key.as_str(),
        first_secret.as_str(),
        secret["signing_secret"].as_str().unwrap(),
        rotated["signing_secret"].as_str().unwrap(),
        "header-secret-456",
        "url-token-123",
        "whsec_",
        "v1,",
        "pmk_",
    ];
    for s in secrets {
        assert!(!text.contains(s), "an audit record holds {s}: {text}");
    }

    // Filters and paging over HTTP.
    let (_, by_actor) = call(&w.router, "GET", &format!("/audit?actor_key_id={ops_id}"), Some(ADMIN), None).await;
    assert_eq!(records(&by_actor).len(), 11);
    let (_, tests) = call(&w.router, "GET", "/audit?action=postback.test", Some(ADMIN), None).await;
    assert_eq!(records(&tests).len(), 1);
    let (_, target) = call(&w.router, "GET", &format!("/audit?target_id={id}"), Some(ADMIN), None).await;
    assert_eq!(records(&target).len(), 8);
    let mut paged = Vec::new();
    let mut uri = "/audit?limit=5".to_string();
    loop {
        let (_, page) = call(&w.router, "GET", &uri, Some(ADMIN), None).await;
        paged.extend(records(&page));
        match page["next_cursor"].as_str() {
            Some(c) => uri = format!("/audit?limit=5&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(paged, all, "paging returns every record once, in order");
    let (status, _) = call(&w.router, "GET", "/audit?action=postback.explode", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}
