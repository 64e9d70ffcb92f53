//! The one HTTP router (axum). The local server serves it on 127.0.0.1; the
//! `config-api` and `ingest` Lambdas serve the same router through `lambda_http`.
//! Handlers only parse (with `parse`, the one place requests become typed values), call a
//! service, and map errors (in `error`).

mod access;
#[cfg(test)]
mod access_tests;
mod auth;
mod console;
mod error;
mod extract;
mod handlers;
#[cfg(test)]
mod openapi_tests;
pub mod parse;
#[cfg(test)]
mod partner_tests;
#[cfg(test)]
mod vocab_tests;

use std::sync::Arc;

use axum::middleware;
use axum::routing::{delete, get, post};
use axum::Router;

pub use auth::{ApiKeys, KeyRing, KEY_CACHE_TTL};
pub use error::ApiError;
pub use extract::MAX_BODY_BYTES;

use crate::domain::access::Role;
use crate::service::App;

/// Which routes a deployment serves. The local server serves all; on AWS each HTTP
/// function serves its part of the same router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteSet {
    All,
    Admin,
    Ingest,
}

#[derive(Clone)]
pub(crate) struct State {
    pub app: Arc<App>,
    pub keys: Arc<KeyRing>,
    /// What this deployment serves (`/openapi.json` documents it).
    pub routes: RouteSet,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key needed.
    Open,
    /// A key of one of these roles (401 without a valid key, 403 for another role).
    Roles(&'static [Role]),
}

const OPEN: Access = Access::Open;
const ADMIN: Access = Access::Roles(&[Role::Admin]);
/// Every GET of the admin routes: admins and viewers.
const READ: Access = Access::Roles(&[Role::Admin, Role::Viewer]);
/// Reads a partner may make too, scoped to its own (`Caller::visibility`).
const READ_OWN: Access = Access::Roles(&[Role::Admin, Role::Viewer, Role::Partner]);
/// Writes a partner may make too, on its own postbacks and log entries (the services
/// scope them by `Caller::visibility` and the partner rules).
const WRITE_OWN: Access = Access::Roles(&[Role::Admin, Role::Partner]);
const INGEST: Access = Access::Roles(&[Role::Ingest]);
/// Any valid key but ingest.
const ME: Access = Access::Roles(&[Role::Admin, Role::Viewer, Role::Partner]);

/// Every (method, path, who may call it) the router serves with `RouteSet::All`, in
/// axum's path syntax: THE table of roles. The auth layer reads it for every request,
/// `openapi.json` documents exactly these routes with their roles (`x-roles`, checked
/// by a test), and a test walks every route × every role. Add a route here, to the
/// router and to the document together.
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "/health", OPEN),
    ("GET", "/console", OPEN),
    ("GET", "/console/{asset}", OPEN),
    ("GET", "/openapi.json", OPEN),
    ("GET", "/metrics", READ),
    ("POST", "/postbacks", WRITE_OWN),
    ("GET", "/postbacks", READ_OWN),
    ("GET", "/postbacks/{id}", READ_OWN),
    ("PUT", "/postbacks/{id}", WRITE_OWN),
    ("DELETE", "/postbacks/{id}", WRITE_OWN),
    ("GET", "/postbacks/{id}/versions", READ_OWN),
    ("GET", "/postbacks/{id}/stats", READ_OWN),
    ("POST", "/postbacks/{id}/preview", READ_OWN),
    ("POST", "/postbacks/{id}/test", WRITE_OWN),
    ("GET", "/postbacks/{id}/secret", ADMIN),
    ("POST", "/postbacks/{id}/secret/rotate", ADMIN),
    ("POST", "/postbacks/{id}/resume", ADMIN),
    ("POST", "/postbacks/{id}/approve", ADMIN),
    ("POST", "/postbacks/{id}/reject", ADMIN),
    ("GET", "/logs", READ_OWN),
    ("GET", "/logs/{id}", READ_OWN),
    ("POST", "/logs/{id}/resend", WRITE_OWN),
    ("POST", "/logs/replay", ADMIN),
    ("GET", "/keys", ADMIN),
    ("POST", "/keys", ADMIN),
    ("DELETE", "/keys/{id}", ADMIN),
    ("GET", "/audit", READ),
    ("GET", "/me", ME),
    ("GET", "/templates", READ_OWN),
    ("GET", "/templates/{id}", READ_OWN),
    ("POST", "/events", INGEST),
    ("GET", "/events", INGEST),
];

/// The row of `ROUTES` for a matched route (`/console/` is `/console`).
pub fn access_of(method: &str, path: &str) -> Option<Access> {
    let path = if path == "/console/" { "/console" } else { path };
    ROUTES.iter().find(|(m, p, _)| *m == method && *p == path).map(|(_, _, a)| *a)
}

/// The OpenAPI 3.1 document of the API (`GET /openapi.json`), kept as a file. It
/// documents `ROUTES`: what the local server serves.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Routes only the local server serves (AWS: the functions' metrics are CloudWatch EMF
/// lines): the document the AWS functions serve leaves them out.
pub const LOCAL_ONLY_ROUTES: &[(&str, &str)] = &[("GET", "/metrics")];

/// The OpenAPI document a deployment serves: the whole of `OPENAPI_JSON` on the local
/// server (`RouteSet::All`); on AWS (`Admin`, `Ingest`: one API behind one API Gateway)
/// without `LOCAL_ONLY_ROUTES`.
pub fn openapi_document(routes: RouteSet) -> &'static str {
    static DEPLOYED: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if routes == RouteSet::All {
        return OPENAPI_JSON;
    }
    DEPLOYED.get_or_init(|| {
        let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(OPENAPI_JSON) else {
            return OPENAPI_JSON.to_string();
        };
        if let Some(paths) = doc.get_mut("paths").and_then(serde_json::Value::as_object_mut) {
            for (method, path) in LOCAL_ONLY_ROUTES {
                let emptied = paths.get_mut(*path).and_then(serde_json::Value::as_object_mut).is_some_and(|item| {
                    item.remove(&method.to_ascii_lowercase());
                    !item.keys().any(|k| ["get", "put", "post", "delete", "patch"].contains(&k.as_str()))
                });
                if emptied {
                    paths.remove(*path);
                }
            }
        }
        doc.to_string()
    })
}

pub fn router(app: Arc<App>, keys: ApiKeys, routes: RouteSet) -> Router {
    let ring = KeyRing::new(keys, app.ports.access.clone(), app.ports.clock.clone());
    let state = State { app, keys: Arc::new(ring), routes };

    let admin = Router::new()
        .route("/postbacks", post(handlers::create_postback).get(handlers::list_postbacks))
        .route(
            "/postbacks/{id}",
            get(handlers::get_postback).put(handlers::replace_postback).delete(handlers::delete_postback),
        )
        .route("/postbacks/{id}/versions", get(handlers::postback_versions))
        .route("/postbacks/{id}/stats", get(handlers::postback_stats))
        .route("/postbacks/{id}/preview", post(handlers::preview_postback))
        .route("/postbacks/{id}/test", post(handlers::test_postback))
        .route("/postbacks/{id}/secret", get(handlers::get_signing_secret))
        .route("/postbacks/{id}/secret/rotate", post(handlers::rotate_signing_secret))
        .route("/postbacks/{id}/resume", post(handlers::resume_postback))
        .route("/postbacks/{id}/approve", post(handlers::approve_postback))
        .route("/postbacks/{id}/reject", post(handlers::reject_postback))
        .route("/logs", get(handlers::list_logs))
        .route("/logs/{id}", get(handlers::get_log))
        .route("/logs/{id}/resend", post(handlers::resend_log))
        .route("/logs/replay", post(handlers::replay_logs))
        .route("/keys", get(access::list_keys).post(access::create_key))
        .route("/keys/{id}", delete(access::revoke_key))
        .route("/audit", get(access::list_audit))
        .route("/me", get(access::me))
        .route("/templates", get(handlers::list_templates))
        .route("/templates/{id}", get(handlers::get_template));

    let ingest = Router::new().route("/events", post(handlers::post_events).get(handlers::get_events));

    let mut router =
        Router::new().route("/health", get(handlers::health)).route("/openapi.json", get(handlers::openapi));
    if matches!(routes, RouteSet::All | RouteSet::Admin) {
        // The console's own routes are open; every data call it makes needs a key.
        router = router
            .route("/console", get(console::index))
            .route("/console/", get(console::index))
            .route("/console/{asset}", get(console::asset))
            .merge(admin);
    }
    if routes == RouteSet::All {
        // Local server only: on AWS each function's counters are its own, and they go
        // out as CloudWatch EMF lines instead (`crate::entry::lambda`).
        router = router.route("/metrics", get(handlers::metrics));
    }
    if matches!(routes, RouteSet::All | RouteSet::Ingest) {
        router = router.merge(ingest);
    }
    router
        // One auth layer over every route: the route's row of `ROUTES` decides.
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::authorize))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn(handlers::access_log))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(handlers::panic_response))
        .with_state(state)
}
