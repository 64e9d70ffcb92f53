//! Signing end to end: what the sink receives is verified by an independent Standard
//! Webhooks library (PyPI `standardwebhooks`, installed by `scripts/emulators.sh install`
//! into its venv; `STANDARDWEBHOOKS_PYTHON` names that venv's python, which
//! `scripts/emulators.sh env`/`run` and `scripts/test.sh` set). The URL signature is
//! recomputed by Python's own `hmac`. No secret may show in any API response or log entry.

use crate::common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(10);

/// The venv python with `standardwebhooks`; fails loudly when there is none.
fn verifier_python() -> PathBuf {
    let python = match std::env::var_os("STANDARDWEBHOOKS_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => {
            let home = std::env::var_os("EMULATOR_HOME").map(PathBuf::from).unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/postback-emulators")
            });
            home.join("venv/bin/python")
        }
    };
    let ok = Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "no python with standardwebhooks at {python:?}: run scripts/emulators.sh install (or set STANDARDWEBHOOKS_PYTHON)"
    );
    python
}

/// The receiver's checks, in Python: `Webhook(secret).verify(body, headers)` from the
/// independent library, and the URL signature recomputed with `hmac` over the URL with
/// the `s` parameter's value emptied. Prints "ok" or raises.
const VERIFY: &str = r#"
import base64, hashlib, hmac, json, sys
from standardwebhooks import Webhook
job = json.load(sys.stdin)
Webhook(job["secret"]).verify(job["body"], job["headers"])
url = job["url"]
prefix, sep, sig = url.rpartition("&s=")
assert sep, url
key = base64.b64decode(job["secret"][len("whsec_"):])
expected = hmac.new(key, (prefix + "&s=").encode(), hashlib.sha256).hexdigest()
assert hmac.compare_digest(expected, sig), (expected, sig)
print("ok")
"#;

fn verify(python: &PathBuf, secret: &str, url: &str, hit: &Hit) -> Result<(), String> {
    let job = json!({"secret": secret, "body": hit.body, "headers": hit.headers, "url": url});
    let mut child = Command::new(python)
        .args(["-c", VERIFY])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(job.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The base64 part of a `whsec_` secret (what must never show).
fn key_text(secret: &str) -> &str {
    secret.trim_start_matches("whsec_").trim_end_matches('=')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_verify_with_an_independent_library_before_and_after_rotation() {
    let python = verifier_python();
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Everything the server logs, at its most talkative, is searched for secrets below.
    let trace = dir.path().join("server.log");
    let server = Server::start_with_log(dir.path(), &[("RUST_LOG", "debug")], Some(trace.as_path())).await;
    let api = server.client();

    let created = api
        .post(
            "/postbacks",
            json!({"name": "Signed hook", "type": "click", "method": "POST", "signing": "standard-webhooks",
                   "url": sink.url("/ok/hook?t={transaction_id}&s={signature}"),
                   "body": "{\"click\": \"{transaction_id}\", \"payout\": \"{payout}\"}"}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    let first_secret = created.body["signing_secret"].as_str().unwrap().to_string();
    assert!(first_secret.starts_with("whsec_"), "the create that set it shows it whole: {}", created.body);
    let got = api.get(&format!("/postbacks/{id}/secret")).await;
    assert_eq!((got.status, got.body["signing_secret"].as_str()), (200, Some(first_secret.as_str())));

    let ingest = |tx: &'static str| {
        let api = api.clone();
        async move {
            let r =
                api.ingest(json!({"type": "click", "transaction_id": tx, "offer_id": "O", "publisher_id": "P"})).await;
            assert_eq!(r.status, 202, "{}", r.body);
        }
    };
    let url_of = |hit: &Hit| format!("http://{}{}?{}", sink.addr, hit.path, hit.query);

    ingest("T1").await;
    let hits = sink.wait_for("/ok/hook", 1, WAIT).await;
    assert_eq!(hits.len(), 1);
    let hit = &hits[0];
    assert_eq!(hit.headers["webhook-signature"].split(' ').count(), 1);
    verify(&python, &first_secret, &url_of(hit), hit).unwrap();
    // A wrong secret must not verify (the check can fail).
    let wrong = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    assert!(verify(&python, wrong, &url_of(hit), hit).is_err());

    // Rotate: the new secret, the old one's expiry 24 h on.
    let rotated = api.post(&format!("/postbacks/{id}/secret/rotate"), json!({})).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let new_secret = rotated.body["signing_secret"].as_str().unwrap().to_string();
    assert!(new_secret.starts_with("whsec_") && new_secret != first_secret);
    let expires: chrono::DateTime<chrono::Utc> = rotated.body["previous_expires_at"].as_str().unwrap().parse().unwrap();
    let in_24h = chrono::Utc::now() + chrono::Duration::hours(24);
    assert!((in_24h - expires).num_seconds().abs() < 60, "{expires}");

    ingest("T2").await;
    let hits = sink.wait_for("/ok/hook", 2, WAIT).await;
    assert_eq!(hits.len(), 2);
    let hit = &hits[1];
    assert_eq!(hit.headers["webhook-signature"].split(' ').count(), 2, "both signatures during the overlap");
    // The receiver verifies with the new secret, and one not yet updated with the old;
    // the URL signature is made with the new secret only.
    verify(&python, &new_secret, &url_of(hit), hit).unwrap();
    let old_only = verify(&python, &first_secret, &url_of(hit), hit).unwrap_err();
    assert!(old_only.contains("compare_digest") || old_only.contains("AssertionError"), "{old_only}");
    let job = json!({"secret": first_secret, "body": hit.body, "headers": hit.headers});
    let out = Command::new(&python)
        .args(["-c", "import json,sys\nfrom standardwebhooks import Webhook\nj=json.load(sys.stdin)\nWebhook(j['secret']).verify(j['body'], j['headers'])\nprint('ok')"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(job.to_string().as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok", "the old secret still verifies the headers");

    // Nothing shown anywhere holds a secret or a signature.
    let logs = api.wait_logs(&format!("postback_id={id}"), 2, WAIT, |e| e["outcome"] == "delivered").await;
    assert_eq!(logs.len(), 2);
    let mut shown = String::new();
    for path in [format!("/postbacks/{id}"), "/postbacks".to_string(), format!("/logs?postback_id={id}")] {
        let r = api.get(&path).await;
        assert_eq!(r.status, 200);
        shown.push_str(&r.body.to_string());
    }
    for entry in &logs {
        let one = api.get(&format!("/logs/{}", entry["id"].as_str().unwrap())).await;
        shown.push_str(&one.body.to_string());
        assert_eq!(entry["request_headers"]["webhook-signature"], "[REDACTED]", "{entry}");
        assert!(entry["url"].as_str().unwrap().ends_with("&s=[REDACTED]"), "{entry}");
    }
    let got: Value = api.get(&format!("/postbacks/{id}")).await.body;
    assert_eq!(got["signing_secret"], "[REDACTED]");
    for hit in sink.hits_on("/ok/hook") {
        for sig in hit.headers["webhook-signature"].split(' ') {
            assert!(!shown.contains(sig.trim_start_matches("v1,")), "a signature shows: {sig}");
        }
        let url_sig = hit.query.rsplit("&s=").next().unwrap();
        assert!(!shown.contains(url_sig), "the URL signature shows");
    }
    for secret in [&first_secret, &new_secret] {
        assert!(!shown.contains(key_text(secret)), "a secret shows in {shown}");
    }

    // Nor does the server's own trace log (debug level), which did log these requests.
    let logged = std::fs::read_to_string(&trace).unwrap();
    assert!(logged.contains("fired"), "the trace log was captured: {logged}");
    for secret in [&first_secret, &new_secret] {
        assert!(!logged.contains(key_text(secret)), "a secret shows in the server log");
    }
    for hit in sink.hits_on("/ok/hook") {
        for sig in hit.headers["webhook-signature"].split(' ') {
            assert!(!logged.contains(sig.trim_start_matches("v1,")), "a signature shows in the server log: {sig}");
        }
        assert!(!logged.contains(hit.query.rsplit("&s=").next().unwrap()), "the URL signature shows in the server log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signing_input_is_refused_and_writes_nothing() {
    let server = Server::fresh(&[]).await;
    let api = server.client();
    let base = json!({"name": "Hook", "type": "click", "url": "https://hooks.example/in?s={signature}",
                      "signing": "standard-webhooks", "signing_secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("signing", json!("hmac")), "signing"),
        (with("signing_secret", json!("whsec_short")), "signing_secret"),
        (with("signing_secret", json!("secret")), "signing_secret"),
        (with("signing_secret", json!("[REDACTED]")), "signing_secret"),
        (with("signing", json!("none")), "signing_secret"),
        (json!({"name": "Hook", "type": "click", "url": "https://hooks.example/in?s={signature}"}), "url"),
    ];
    for (body, field) in &cases {
        let r = api.post("/postbacks", body.clone()).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert_eq!(r.body["error"]["field"], *field, "{body}: {}", r.body);
    }
    assert_eq!(api.get("/postbacks").await.body["items"].as_array().unwrap().len(), 0, "nothing half-written");

    let id = api.create_postback(base.clone()).await;
    let r = api
        .admin(reqwest::Method::PUT, &format!("/postbacks/{id}"), Some(with("signing_secret", json!("whsec_!!"))))
        .await;
    assert_eq!((r.status, r.body["error"]["field"].as_str()), (400, Some("signing_secret")), "{}", r.body);
    let secret = api.get(&format!("/postbacks/{id}/secret")).await;
    assert_eq!(secret.body["signing_secret"], base["signing_secret"], "unchanged");

    for path in ["/postbacks/pb_nope/secret", "/postbacks/pb_nope/secret/rotate"] {
        let method = if path.ends_with("rotate") { reqwest::Method::POST } else { reqwest::Method::GET };
        let r = api.admin(method, path, None).await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    let unsigned =
        api.create_postback(json!({"name": "Plain", "type": "click", "url": "https://hooks.example/plain"})).await;
    for (method, path) in [
        (reqwest::Method::GET, format!("/postbacks/{unsigned}/secret")),
        (reqwest::Method::POST, format!("/postbacks/{unsigned}/secret/rotate")),
    ] {
        let r = api.admin(method, &path, None).await;
        assert_eq!(r.status, 409, "{path}: {}", r.body);
    }
    // Without the admin key: 401.
    let r = api.raw(api.http.get(format!("{}/postbacks/{id}/secret", api.base))).await;
    assert_eq!(r.status, 401);
}
