//! `openapi.json` is well-formed OpenAPI 3.1 and describes exactly the router's routes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request};
use serde_json::Value;
use tower::ServiceExt;

use super::{openapi_document, router, ApiKeys, RouteSet, LOCAL_ONLY_ROUTES, OPENAPI_JSON, ROUTES};
use crate::testing::{self, ManualClock};

const ADMIN: &str = "admin-key-0123456789abcdef";
const INGEST: &str = "ingest-key-0123456789abcdef";
const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn doc() -> Value {
    serde_json::from_str(OPENAPI_JSON).unwrap()
}

fn app() -> axum::Router {
    app_for(RouteSet::All)
}

fn app_for(routes: RouteSet) -> axum::Router {
    let test = testing::app(Arc::new(ManualClock::starting_now()), testing::policy());
    router(test.app, ApiKeys::new(ADMIN, INGEST), routes)
}

fn documented() -> BTreeSet<(String, String)> {
    operations(&doc())
}

fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

fn walk_refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r);
            }
            map.values().for_each(|v| walk_refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| walk_refs(v, out)),
        _ => {}
    }
}

#[test]
fn document_is_openapi_3_1_and_every_ref_resolves() {
    let doc = doc();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."), "openapi: 3.1.x");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    let mut refs = Vec::new();
    walk_refs(&doc, &mut refs);
    assert!(refs.len() > 20, "the document uses its components");
    for r in refs {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{r}: only local refs"));
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            assert!(op["operationId"].is_string(), "{method} {path}: operationId");
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}: responses");
            for requirement in op["security"].as_array().unwrap() {
                for name in requirement.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{method} {path}: unknown security scheme {name}");
                }
            }
            // Every path parameter in the template is declared, and only those.
            let declared: BTreeSet<String> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| match p.get("$ref").and_then(Value::as_str) {
                    Some(r) => doc.pointer(r.trim_start_matches('#')).unwrap().clone(),
                    None => p.clone(),
                })
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_string())
                .collect();
            let in_template: BTreeSet<String> =
                path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).map(String::from).collect();
            assert_eq!(declared, in_template, "{method} {path}: path parameters");
        }
    }
}

#[test]
fn document_lists_exactly_the_router_table() {
    let table: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    assert_eq!(table.len(), ROUTES.len(), "no route twice in ROUTES");
    assert_eq!(documented(), table);
}

/// The log filters: every column as *is* and *is not*, the text ones as *contains*.
#[test]
fn document_spells_out_every_log_filter() {
    let doc = doc();
    let names: BTreeSet<&str> = doc["paths"]["/logs"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for column in crate::domain::log::LogColumn::ALL {
        let name = column.as_str();
        assert!(names.contains(name), "{name}");
        assert!(names.contains(format!("{name}.not").as_str()), "{name}.not");
        assert_eq!(names.contains(format!("{name}.contains").as_str()), column.is_text(), "{name}.contains");
    }
}

async fn probe(router: &axum::Router, method: &str, path: &str) -> (u16, Value) {
    let uri = path.replace("{id}", "nope");
    let key = if path == "/events" { INGEST } else { ADMIN };
    let mut request =
        Request::builder().method(Method::from_bytes(method.as_bytes()).unwrap()).uri(uri).header("x-api-key", key);
    let body = if matches!(method, "POST" | "PUT" | "PATCH") {
        request = request.header("content-type", "application/json");
        Body::from("{}")
    } else {
        Body::empty()
    };
    let response = router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Every documented operation is served (no 405, no "route not found"), and every other
/// method on a documented path is refused with 405.
#[tokio::test]
async fn router_serves_every_documented_operation_and_refuses_the_rest() {
    let router = app();
    let ops = documented();
    let paths: BTreeSet<&String> = ops.iter().map(|(_, p)| p).collect();
    for path in paths {
        for method in METHODS.map(str::to_uppercase) {
            let (status, body) = probe(&router, &method, path).await;
            if ops.contains(&(method.clone(), path.clone())) {
                assert_ne!(status, 405, "{method} {path}: {body}");
                assert_ne!(body["error"]["message"], "route not found", "{method} {path}");
                assert!(status < 500, "{method} {path}: {status} {body}");
            } else {
                assert_eq!(status, 405, "{method} {path} is not documented, so it must not be served: {body}");
            }
        }
    }
    let (status, body) = probe(&router, "GET", "/openapi.json").await;
    assert_eq!((status, body), (200, doc()), "the route serves the document");
}

/// Whether any of `routers` serves `method path` (not 405, not "route not found").
async fn served_by(routers: &[axum::Router], method: &str, path: &str) -> bool {
    for router in routers {
        let (status, body) = probe(router, method, path).await;
        if status != 405 && body["error"]["message"] != "route not found" {
            return true;
        }
    }
    false
}

/// Each deployment's `/openapi.json` documents exactly what it serves: the local server
/// the whole table; AWS (config-api and ingest behind one API Gateway, both serving the
/// same document) the table without the local-only routes (`/metrics`, answered 404
/// there), each documented operation served by one of the two functions.
#[tokio::test]
async fn each_deployment_documents_exactly_what_it_serves() {
    let all: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p, _)| (m.to_string(), p.to_string())).collect();
    let local_only: BTreeSet<(String, String)> =
        LOCAL_ONLY_ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert!(local_only.is_subset(&all));
    assert_eq!(openapi_document(RouteSet::All), OPENAPI_JSON);

    let (admin, ingest) = (app_for(RouteSet::Admin), app_for(RouteSet::Ingest));
    let (status, served) = probe(&admin, "GET", "/openapi.json").await;
    assert_eq!(status, 200);
    assert_eq!(probe(&ingest, "GET", "/openapi.json").await, (200, served.clone()), "one API, one document");
    assert_eq!(served["info"], doc()["info"]);
    let ops = operations(&served);
    assert_eq!(ops, all.difference(&local_only).cloned().collect(), "the table without the local-only routes");
    let functions = [admin, ingest];
    for (method, path) in &all {
        let served_here = served_by(&functions, method, path).await;
        assert_eq!(served_here, ops.contains(&(method.clone(), path.clone())), "{method} {path} on AWS");
    }
    // The local server serves what its document lists, /metrics included.
    let local = [app()];
    for (method, path) in &all {
        assert!(served_by(&local, method, path).await, "{method} {path} locally");
    }
}

/// The document's length bounds are the validation's: a client (or a fuzzer) that keeps
/// to the document is not refused for length, and one that does not is.
#[test]
fn document_bounds_are_the_validations_bounds() {
    use crate::domain::rules::postback::{MAX_NAME_CHARS, MAX_URL_CHARS};
    use crate::entry::http::parse::access::MAX_AUDIT_ID_CHARS;
    let d = doc();
    let input = &d["components"]["schemas"]["PostbackInput"]["properties"];
    assert_eq!(
        (input["name"]["minLength"].as_u64(), input["name"]["maxLength"].as_u64()),
        (Some(1), Some(MAX_NAME_CHARS as u64))
    );
    assert_eq!(
        (input["url"]["minLength"].as_u64(), input["url"]["maxLength"].as_u64()),
        (Some(1), Some(MAX_URL_CHARS as u64))
    );
    let audit = d["paths"]["/audit"]["get"]["parameters"].as_array().unwrap();
    for name in ["actor_key_id", "target_id"] {
        let p = audit.iter().find(|p| p["name"] == name).unwrap();
        assert_eq!(p["schema"]["maxLength"].as_u64(), Some(MAX_AUDIT_ID_CHARS as u64), "{name}");
    }
}
