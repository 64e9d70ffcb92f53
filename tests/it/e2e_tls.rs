//! HTTPS delivery against a real TLS receiver: the server process trusts a throwaway CA
//! through `SSL_CERT_FILE` (read by the system certificate store loader, exactly as an
//! operator would add a private CA), and a receiver with a certificate from no trusted CA
//! is never delivered to.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A certificate for `localhost` and its key, signed by `ca` (or self-signed).
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn test_ca() -> TestCa {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let pem = params.clone().self_signed(&key).unwrap().pem();
    TestCa { params, key, pem }
}

fn localhost_identity(issuer: Option<&TestCa>) -> Identity {
    let params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = match issuer {
        Some(ca) => {
            let issuer = rcgen::Issuer::from_params(&ca.params, &ca.key);
            params.signed_by(&key, &issuer).unwrap()
        }
        None => params.self_signed(&key).unwrap(),
    };
    Identity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// A minimal HTTPS receiver: records each request line and answers 200.
struct TlsSink {
    port: u16,
    requests: Arc<Mutex<Vec<String>>>,
}

impl TlsSink {
    async fn start(identity: Identity) -> TlsSink {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(identity.chain, identity.key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = requests.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    // A handshake the client aborts (untrusted certificate) just ends here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    seen.lock().unwrap().push(text.lines().next().unwrap_or_default().to_string());
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nover tls\n";
                    let _ = tls.write_all(reply).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        TlsSink { port, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_postbacks_verify_the_receiver_certificate() {
    let ca = test_ca();
    let trusted = TlsSink::start(localhost_identity(Some(&ca))).await;
    let untrusted = TlsSink::start(localhost_identity(None)).await;

    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("test-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, &[("SSL_CERT_FILE", ca_file.to_str().unwrap())]).await;
    let api = server.client();

    let good = api
        .create_postback(json!({
            "name": "TLS", "type": "click",
            "url": format!("https://localhost:{}/tls?t={{transaction_id}}", trusted.port)
        }))
        .await;
    let bad = api
        .create_postback(json!({
            "name": "Self-signed", "type": "click",
            "url": format!("https://localhost:{}/nope?t={{transaction_id}}", untrusted.port)
        }))
        .await;
    let r = api.ingest(json!({"type": "click", "transaction_id": "TLS1", "offer_id": "O", "publisher_id": "P"})).await;
    assert_eq!(r.status, 202, "{}", r.body);

    let delivered = api
        .wait_logs(&format!("postback_id={good}"), 1, Duration::from_secs(20), |e| e["outcome"] == "delivered")
        .await;
    assert_eq!(delivered.len(), 1, "delivered over TLS");
    assert_eq!(delivered[0]["status_code"], 200);
    assert_eq!(delivered[0]["response_body"], "over tls\n");
    assert_eq!(trusted.requests(), vec!["GET /tls?t=TLS1 HTTP/1.1".to_string()]);

    // The self-signed receiver fails the handshake: retried as a connection error, then
    // failed; no request ever reaches it.
    let failed =
        api.wait_logs(&format!("postback_id={bad}"), 1, Duration::from_secs(20), |e| e["outcome"] == "failed").await;
    assert_eq!(failed.len(), 1, "an untrusted certificate is never delivered to");
    let error = failed[0]["error"].as_str().unwrap_or_default().to_lowercase();
    assert!(error.contains("certificate"), "the error names the certificate problem: {error}");
    assert!(failed[0]["status_code"].is_null());
    assert!(untrusted.requests().is_empty(), "no request was sent over an unverified connection");
}
