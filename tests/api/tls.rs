//! HTTPS with `--tls-cert` / `--tls-key`: clients that trust a test CA (made here with
//! rcgen) speak HTTP/1.1 and HTTP/2 (ALPN); plain HTTP to the TLS port gets a clean 400;
//! an untrusting client fails its handshake and the server carries on; the certificate
//! reloads without a restart; the healthcheck subcommand's probe works over TLS.

use std::{path::PathBuf, time::Duration};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use reqwest::{StatusCode, Version};
use sensor_stats::healthcheck;

use crate::helpers::{TestApp, metric, spawn_app, spawn_app_with};

/// A CA and a server certificate it signed for `localhost` and 127.0.0.1, as PEM.
struct Pki {
    ca: String,
    cert: String,
    key: String,
}

impl Pki {
    fn new(ca_name: &str) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, ca_name);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "sensor-stats test");
        let cert = params.signed_by(&key, &issuer).unwrap();
        Self {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// The certificate files the server reads, in a temp dir, replaced atomically.
struct TlsFiles {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsFiles {
    fn new(pki: &Pki) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let files = Self {
            cert: dir.path().join("tls.crt"),
            key: dir.path().join("tls.key"),
            _dir: dir,
        };
        files.install(&pki.cert, &pki.key);
        files
    }

    fn install(&self, cert: &str, key: &str) {
        for (path, text) in [(&self.cert, cert), (&self.key, key)] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }
}

async fn tls_app(files: &TlsFiles) -> TestApp {
    let (cert, key) = (files.cert.clone(), files.key.clone());
    spawn_app_with(move |c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
        c.reload_interval = Duration::ZERO;
    })
    .await
}

/// A fresh client (no pooled connection) that trusts only `ca`.
fn client(ca: &str, http1_only: bool) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
        .timeout(Duration::from_secs(5));
    if http1_only {
        builder = builder.http1_only();
    }
    builder.build().unwrap()
}

fn https(app: &TestApp, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", app.addr.port())
}

#[tokio::test]
async fn clients_that_trust_the_ca_speak_http1_and_http2() {
    let pki = Pki::new("test CA");
    let files = TlsFiles::new(&pki);
    let app = tls_app(&files).await;

    for (http1_only, version) in [(true, Version::HTTP_11), (false, Version::HTTP_2)] {
        let client = client(&pki.ca, http1_only);
        let posted = client
            .post(https(&app, "/data"))
            .header("content-type", "application/json")
            .body(r#"[{"sensor":"tls","timestamp":"2021-11-08T21:38:09Z","value":2}]"#)
            .send()
            .await
            .unwrap();
        assert_eq!(
            (posted.status(), posted.version()),
            (StatusCode::NO_CONTENT, version)
        );
        let read = client.get(https(&app, "/statistics/tls")).send().await.unwrap();
        assert_eq!((read.status(), read.version()), (StatusCode::OK, version));
        assert!(read.json::<serde_json::Value>().await.unwrap()["count"].as_u64() >= Some(1));
    }
    let stats: serde_json::Value = client(&pki.ca, false)
        .get(https(&app, "/statistics/tls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["count"], 2);
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_a_clean_400_and_untrusting_clients_fail() {
    let pki = Pki::new("test CA");
    let files = TlsFiles::new(&pki);
    let app = tls_app(&files).await;

    // Plain HTTP: an answer the client can read, not a reset.
    let plain = app
        .client
        .post(format!("http://{}/data", app.addr))
        .body(r#"[{"sensor":"plain","timestamp":"2021-11-08T21:38:09Z","value":2}]"#)
        .send()
        .await
        .expect("a plain-HTTP client gets an answer");
    assert_eq!(plain.status(), StatusCode::BAD_REQUEST);
    let body: serde_json::Value = plain.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("https"), "{body}");
    assert!(body["index"].is_null());

    // A client that trusts another CA fails its handshake.
    let stranger = client(&Pki::new("other CA").ca, false);
    let refused = stranger.get(https(&app, "/healthz")).send().await;
    assert!(refused.is_err(), "{refused:?}");

    // The server carries on, applied nothing, and counted both.
    let trusted = client(&pki.ca, false);
    let stats: serde_json::Value = trusted
        .get(https(&app, "/statistics/plain"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["count"], 0);
    let text = trusted
        .get(https(&app, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(
            &text,
            r#"sensor_stats_tls_handshake_failures_total{reason="plain_http"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &text,
            r#"sensor_stats_tls_handshake_failures_total{reason="handshake"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn the_certificate_reloads_without_a_restart_and_a_broken_one_is_not_taken() {
    // Arrange
    let first = Pki::new("first CA");
    let second = Pki::new("second CA");
    let files = TlsFiles::new(&first);
    let app = tls_app(&files).await;
    let kept_alive = client(&first.ca, true);
    let status = kept_alive
        .get(https(&app, "/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Act: new files, then what SIGHUP does.
    files.install(&second.cert, &second.key);
    app.reloader.reload().await;

    // Assert: new connections present the new certificate...
    assert!(
        client(&first.ca, false)
            .get(https(&app, "/healthz"))
            .send()
            .await
            .is_err()
    );
    let renewed = client(&second.ca, false);
    let status = renewed
        .get(https(&app, "/healthz"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    // ...while a connection opened before keeps working (nothing was dropped).
    let status = kept_alive
        .get(https(&app, "/livez"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);

    // A key that does not match the certificate is refused; the one in force stays.
    files.install(&second.cert, &first.key);
    app.reloader.reload().await;
    let fresh = client(&second.ca, false);
    let text = fresh
        .get(https(&app, "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric(&text, r#"sensor_stats_reloads_total{what="tls",result="error"}"#),
        Some(1.0)
    );
    assert_eq!(
        metric(&text, r#"sensor_stats_reloads_total{what="tls",result="ok"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn the_healthcheck_probe_speaks_tls_to_a_tls_server() {
    let pki = Pki::new("test CA");
    let files = TlsFiles::new(&pki);
    let tls = tls_app(&files).await;
    let plain = spawn_app().await;
    let (tls_port, plain_port) = (tls.addr.port(), plain.addr.port());
    let timeout = Duration::from_secs(2);
    let results = tokio::task::spawn_blocking(move || {
        (
            healthcheck::check_tls(tls_port, timeout),
            healthcheck::check(tls_port, timeout),
            healthcheck::check_tls(plain_port, timeout),
        )
    })
    .await
    .unwrap();
    assert_eq!(results.0, Ok(()));
    assert!(
        results.1.unwrap_err().contains("400"),
        "plain probe of the TLS port"
    );
    assert!(results.2.is_err(), "TLS probe of a plain port");
}
