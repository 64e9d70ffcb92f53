//! Access against the real server: a network's team set up with managed keys, roles
//! enforced, revocation at once on the local server (one process), the audit trail with
//! the caller's address, and the records surviving a restart.

use crate::common;

use common::*;
use serde_json::{json, Value};

async fn with_key(api: &Api, key: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Reply {
    let mut req = api.http.request(method, format!("{}{}", api.base, path)).header("x-api-key", key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    api.raw(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_keys_roles_revocation_and_the_trail() {
    if local_only("a restart of the one server process (keys and records kept in DATA_DIR)") {
        return;
    }
    let mut server = Server::fresh(&[]).await;
    let api = server.client();
    use reqwest::Method;

    let r = api.post("/keys", json!({"name": "Ana (support)", "role": "viewer"})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let viewer = r.body["key"].as_str().unwrap().to_string();
    let viewer_id = r.body["id"].as_str().unwrap().to_string();
    let r = api.post("/keys", json!({"name": "Tracker", "role": "ingest"})).await;
    let tracker = r.body["key"].as_str().unwrap().to_string();

    // The viewer reads, and may not write; the managed ingest key ingests (header and ?key=).
    assert_eq!(with_key(&api, &viewer, Method::GET, "/postbacks", None).await.status, 200);
    let r = with_key(&api, &viewer, Method::POST, "/postbacks", Some(json!({"name": "x"}))).await;
    assert_eq!((r.status, r.body["error"]["code"].as_str()), (403, Some("forbidden")));
    let me = with_key(&api, &viewer, Method::GET, "/me", None).await;
    assert_eq!(me.body["role"], "viewer");
    let click = json!({"type": "click", "transaction_id": "T1", "offer_id": "42", "publisher_id": "7"});
    assert_eq!(with_key(&api, &tracker, Method::POST, "/events", Some(click)).await.status, 202);
    let r = api.ingest_get(&format!("type=click&transaction_id=T2&offer_id=42&publisher_id=7&key={tracker}")).await;
    assert_eq!(r.status, 202, "{}", r.body);

    // Revoked: refused at once on the local server (one process, its cache dropped).
    assert_eq!(api.admin(Method::DELETE, &format!("/keys/{viewer_id}"), None).await.status, 204);
    assert_eq!(with_key(&api, &viewer, Method::GET, "/postbacks", None).await.status, 401);

    // The trail: newest first, the caller's address, the bootstrap admin as env:admin.
    let audit = api.get("/audit").await;
    let items = audit.body["items"].as_array().unwrap();
    let actions: Vec<&str> = items.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["key.revoke", "key.create", "key.create"], "{}", audit.body);
    assert_eq!(items[0]["actor"]["key_id"], "env:admin");
    assert_eq!(items[0]["ip"], "127.0.0.1");
    assert!(!audit.body.to_string().contains(&viewer) && !audit.body.to_string().contains(&tracker));

    // Keys and records survive a restart; last use is kept at minute precision.
    assert!(server.terminate().success());
    server.restart().await;
    let api = server.client();
    let keys = api.get("/keys").await;
    let listed = keys.body["items"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{}", keys.body);
    assert!(listed[0]["last_used_at"].as_str().is_some_and(|t| t.ends_with(":00Z")), "{}", keys.body);
    assert_eq!(with_key(&api, &tracker, Method::GET, "/me", None).await.status, 403, "ingest keys have no /me");
    assert_eq!(api.get("/audit").await.body["items"].as_array().unwrap().len(), 3);
}
