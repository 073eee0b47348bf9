//! `spawn_app` and `TestApp`: one real server per test, and request helpers that assert
//! the expected status.

use std::{net::SocketAddr, sync::Arc, sync::LazyLock};

use reqwest::{Method, StatusCode, header::HeaderMap};
use sensor_stats::{App, Config, state::Lifecycle, telemetry};
use serde_json::Value;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

static TRACING: LazyLock<()> = LazyLock::new(|| {
    let format = sensor_stats::config::LogFormat::Text;
    // Logs only with TEST_LOG set, so a normal run stays quiet.
    let _ = if std::env::var_os("TEST_LOG").is_some() {
        telemetry::init_with_writer("debug", format, std::io::stdout)
    } else {
        telemetry::init_with_writer("off", format, std::io::sink)
    };
});

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub lifecycle: Arc<Lifecycle>,
    stop: Option<oneshot::Sender<()>>,
    pub server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A response reduced to what tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Asserts the contract's error shape and returns (message, index).
    pub fn error(&self) -> (String, Value) {
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(ct.starts_with("application/json"), "error content-type is {ct:?}");
        let json = self.json();
        let message = json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {json}"));
        assert!(!message.is_empty());
        assert!(json.get("index").is_some(), "no index field in {json}");
        (message.to_owned(), json["index"].clone())
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    LazyLock::force(&TRACING);
    let mut config = Config {
        host: [127, 0, 0, 1].into(),
        port: 0,
        ..Config::default()
    };
    configure(&mut config);
    let listener = TcpListener::bind((config.host, 0))
        .await
        .expect("bind 127.0.0.1:0");
    let app = App::build_with_listener(config, listener).expect("app builds");
    let addr = app.local_addr();
    let lifecycle = app.lifecycle();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        lifecycle,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends `method path` with `body` and `headers`, asserts `expected`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
        expected: StatusCode,
    ) -> Reply {
        let mut req = self.client.request(method.clone(), self.url(path)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request sent");
        let reply = Reply {
            status: resp.status(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.expect("body read").to_vec(),
        };
        assert_eq!(
            reply.status,
            expected,
            "{method} {path}: body {:?}",
            String::from_utf8_lossy(&reply.body)
        );
        reply
    }

    pub async fn post_data(&self, body: impl Into<reqwest::Body>, expected: StatusCode) -> Reply {
        self.request(
            Method::POST,
            "/data",
            &[("content-type", "application/json")],
            body,
            expected,
        )
        .await
    }

    /// GET /statistics for a raw (already percent-encoded) path segment; asserts 200.
    pub async fn statistics(&self, encoded_sensor: &str) -> Value {
        self.request(
            Method::GET,
            &format!("/statistics/{encoded_sensor}"),
            &[],
            "",
            StatusCode::OK,
        )
        .await
        .json()
    }

    /// Asks the server to shut down (as SIGTERM would) without waiting.
    pub fn trigger_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// One measurement as JSON text.
pub fn measurement(sensor: &str, timestamp: &str, value: f64) -> String {
    serde_json::json!({"sensor": sensor, "timestamp": timestamp, "value": value}).to_string()
}

pub fn sample(name: &str) -> String {
    std::fs::read_to_string(format!("{}/samples/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

pub fn unknown_form() -> Value {
    serde_json::from_str(&sample("get_statistics_ex1.json")).unwrap()
}
