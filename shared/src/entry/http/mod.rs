//! The one HTTP router (axum). The local server serves it on 127.0.0.1; the
//! `config-api` and `ingest` Lambdas serve the same router through `lambda_http`.
//! Handlers only parse (with `parse`, the one place requests become typed values), call a
//! service, and map errors (in `error`).

mod auth;
mod console;
mod error;
mod extract;
mod handlers;
#[cfg(test)]
mod openapi_tests;
pub mod parse;

use std::sync::Arc;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;

pub use auth::ApiKeys;
pub use error::ApiError;
pub use extract::MAX_BODY_BYTES;

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
    pub keys: Arc<ApiKeys>,
}

/// Every (method, path) the router serves with `RouteSet::All`, in axum's path syntax.
/// `openapi.json` documents exactly these (a test probes the router for each, and for
/// the methods it must refuse with 405): add a route here and to the document together.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/console"),
    ("GET", "/console/{asset}"),
    ("GET", "/openapi.json"),
    ("GET", "/metrics"),
    ("POST", "/postbacks"),
    ("GET", "/postbacks"),
    ("GET", "/postbacks/{id}"),
    ("PUT", "/postbacks/{id}"),
    ("DELETE", "/postbacks/{id}"),
    ("GET", "/postbacks/{id}/versions"),
    ("GET", "/postbacks/{id}/stats"),
    ("POST", "/postbacks/{id}/preview"),
    ("POST", "/postbacks/{id}/test"),
    ("GET", "/postbacks/{id}/secret"),
    ("POST", "/postbacks/{id}/secret/rotate"),
    ("POST", "/postbacks/{id}/resume"),
    ("GET", "/logs"),
    ("GET", "/logs/{id}"),
    ("POST", "/logs/{id}/resend"),
    ("POST", "/logs/replay"),
    ("GET", "/templates"),
    ("GET", "/templates/{id}"),
    ("POST", "/events"),
    ("GET", "/events"),
];

/// The OpenAPI 3.1 document of the API (`GET /openapi.json`), kept as a file.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub fn router(app: Arc<App>, keys: ApiKeys, routes: RouteSet) -> Router {
    let state = State { app, keys: Arc::new(keys) };

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
        .route("/logs", get(handlers::list_logs))
        .route("/logs/{id}", get(handlers::get_log))
        .route("/logs/{id}/resend", post(handlers::resend_log))
        .route("/logs/replay", post(handlers::replay_logs))
        // The spec lets every valid key but ingest read the library; admin-only until
        // per-route roles land (branch `access`).
        .route("/templates", get(handlers::list_templates))
        .route("/templates/{id}", get(handlers::get_template))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin));

    let ingest = Router::new()
        .route("/events", post(handlers::post_events).get(handlers::get_events))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_ingest));

    let mut router =
        Router::new().route("/health", get(handlers::health)).route("/openapi.json", get(handlers::openapi));
    if matches!(routes, RouteSet::All | RouteSet::Admin) {
        // The console's own routes are open; every data call it makes needs the key.
        router = router
            .route("/console", get(console::index))
            .route("/console/", get(console::index))
            .route("/console/{asset}", get(console::asset))
            .merge(admin);
    }
    if routes == RouteSet::All {
        // Local server only: on AWS each function's counters are its own, and they go
        // out as CloudWatch EMF lines instead (`crate::entry::lambda`).
        let metrics = Router::new()
            .route("/metrics", get(handlers::metrics))
            .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_admin));
        router = router.merge(metrics);
    }
    if matches!(routes, RouteSet::All | RouteSet::Ingest) {
        router = router.merge(ingest);
    }
    router
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(middleware::from_fn(handlers::access_log))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(handlers::panic_response))
        .with_state(state)
}
