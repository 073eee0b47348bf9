//! `spawn_app` and `TestApp`: one real server per test, and request helpers that assert
//! the expected status.

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode, header::HeaderMap};
use sensor_stats::{
    App, Config,
    config::{RedisUrl, StoreKind},
    reload::Reloader,
    state::Lifecycle,
    store::Store,
    telemetry,
};
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
    /// The Redis this app uses in redis mode, kept alive as long as the app.
    #[expect(dead_code, reason = "held for its lifetime, not read")]
    redis: Option<Arc<RedisServer>>,
    /// The data dir this app uses in durable mode, removed with the app.
    #[expect(dead_code, reason = "held for its lifetime, not read")]
    data_dir: Option<tempfile::TempDir>,
    pub store: Store,
    /// The Redis Cluster this app uses in redis-cluster mode, kept alive as long as the app.
    cluster: Option<Arc<crate::cluster::RedisCluster>>,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// `https` when the app serves TLS.
    pub scheme: &'static str,
    pub lifecycle: Arc<Lifecycle>,
    /// Does what SIGHUP does: reloads the API keys and the TLS certificate.
    pub reloader: Reloader,
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

/// Whether the suite runs against Redis: `SENSOR_STATS_TEST_STORE=redis` (scripts/test.sh
/// runs the API suite once in each mode).
pub fn redis_mode() -> bool {
    std::env::var("SENSOR_STATS_TEST_STORE").is_ok_and(|v| v == "redis")
}

/// Whether the suite runs against a Redis Cluster: `SENSOR_STATS_TEST_STORE=redis-cluster`.
pub fn cluster_mode() -> bool {
    std::env::var("SENSOR_STATS_TEST_STORE").is_ok_and(|v| v == "redis-cluster")
}

/// Whether the suite runs with a data dir: `SENSOR_STATS_TEST_STORE=durable` gives every
/// memory-store app its own temporary `--data-dir`.
pub fn durable_mode() -> bool {
    std::env::var("SENSOR_STATS_TEST_STORE").is_ok_and(|v| v == "durable")
}

/// An app on 127.0.0.1:0 in the suite's store mode (its own fresh `redis-server` in redis
/// mode), ready to serve when this returns.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    if cluster_mode() {
        let cluster = Arc::new(
            tokio::task::spawn_blocking(crate::cluster::RedisCluster::start)
                .await
                .unwrap(),
        );
        let url = cluster.url();
        let mut app = spawn_app_unready(None, |c| {
            c.store = StoreKind::RedisCluster;
            c.redis_url = Some(RedisUrl(url));
            configure(c);
        })
        .await;
        app.cluster = Some(cluster);
        app.wait_ready(Duration::from_secs(15)).await;
        return app;
    }
    let redis = redis_mode().then(|| Arc::new(RedisServer::start()));
    spawn_app_on(redis, configure).await
}

/// An app using `redis` (memory store when `None`), configured by `configure`, ready.
pub async fn spawn_app_on(redis: Option<Arc<RedisServer>>, configure: impl FnOnce(&mut Config)) -> TestApp {
    let app = spawn_app_unready(redis, configure).await;
    app.wait_ready(Duration::from_secs(10)).await;
    app
}

/// Like [`spawn_app_on`], without waiting for readiness.
pub async fn spawn_app_unready(
    redis: Option<Arc<RedisServer>>,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    LazyLock::force(&TRACING);
    let mut config = Config {
        host: [127, 0, 0, 1].into(),
        port: 0,
        ..Config::default()
    };
    if let Some(r) = &redis {
        config.store = StoreKind::Redis;
        config.redis_url = Some(RedisUrl(r.url()));
    }
    let data_dir = (redis.is_none() && durable_mode()).then(|| tempfile::tempdir().expect("temp dir"));
    config.data_dir = data_dir.as_ref().map(|d| d.path().to_owned());
    configure(&mut config);
    let listener = TcpListener::bind((config.host, 0))
        .await
        .expect("bind 127.0.0.1:0");
    // With TLS, the helper's client checks readiness over https without verifying the
    // test certificate; TLS tests make their own verifying clients.
    let tls = config.tls_cert.is_some();
    let app = App::build_with_listener(config, listener).expect("app builds");
    let addr = app.local_addr();
    let lifecycle = app.lifecycle();
    let store = app.store();
    let reloader = app.reloader();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TestApp {
        redis,
        data_dir,
        store,
        cluster: None,
        addr,
        client: reqwest::Client::builder()
            .no_proxy()
            .danger_accept_invalid_certs(tls)
            .build()
            .unwrap(),
        scheme: if tls { "https" } else { "http" },
        lifecycle,
        reloader,
        stop: Some(stop),
        server: Some(server),
    }
}

impl TestApp {
    /// Waits until `/healthz` answers 204 (Redis mode connects in the background).
    pub async fn wait_ready(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(r) = self.client.get(self.url("/healthz")).send().await
                && r.status() == StatusCode::NO_CONTENT
            {
                return;
            }
            assert!(start.elapsed() < limit, "app not ready within {limit:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
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

/// `Authorization: Bearer <token>` as a header pair for [`TestApp::request`].
pub fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

/// An API keys file in its own temp dir, with a fresh token per key (made the way
/// `sensor-stats keys new` makes them), rewritten whole and atomically (rename) on demand.
pub struct KeysFile {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    tokens: HashMap<String, String>,
    lines: HashMap<String, String>,
}

impl KeysFile {
    /// A file holding `keys`: (name, comma-separated scopes).
    pub fn new(keys: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("api-keys");
        let mut file = Self {
            _dir: dir,
            path,
            tokens: HashMap::new(),
            lines: HashMap::new(),
        };
        file.write(keys);
        file
    }

    /// The token of key `name` (made on first use of the name, kept after).
    pub fn token(&self, name: &str) -> &str {
        &self.tokens[name]
    }

    /// Rewrites the file to hold exactly `keys` (tokens of names seen before are kept).
    pub fn write(&mut self, keys: &[(&str, &str)]) {
        let mut text = String::from("# test keys: NAME SCOPES sha256:HEX\n");
        for (name, scopes) in keys {
            if !self.tokens.contains_key(*name) {
                let scopes: Vec<String> = scopes.split(',').map(str::to_owned).collect();
                let key = sensor_stats::access::generate(name, &scopes).expect("key generates");
                self.tokens.insert((*name).to_owned(), key.token);
                self.lines.insert((*name).to_owned(), key.line);
            }
            let line = &self.lines[*name];
            let hash = line.rsplit(' ').next().unwrap();
            text.push_str(&format!("{name} {scopes} {hash}\n"));
        }
        self.write_raw(&text);
    }

    /// Replaces the file's contents with `text`, atomically.
    pub fn write_raw(&self, text: &str) {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write keys");
        std::fs::rename(&tmp, &self.path).expect("rename keys");
    }
}

/// Polls `probe` every 20 ms until it is true; panics after `limit` saying `what`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !probe().await {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one sample of `/metrics` text, e.g.
/// `sensor_stats_auth_failures_total{reason="missing"}`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
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

/// A real `redis-server` (Debian package) on a free loopback port, in its own temp dir,
/// killed when dropped. AOF on (`appendfsync always`) so a restart keeps what it took.
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    child: std::sync::Mutex<Option<Child>>,
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = Self {
            port: free_port(),
            dir,
            child: std::sync::Mutex::new(None),
        };
        server.run();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts (again) on the same port and data dir, and waits until it answers.
    pub fn run(&self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir.path().to_str().unwrap(),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--daemonize",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): run scripts/test.sh, which installs it from Debian")
            });
        *self.child.lock().unwrap() = Some(child);
        let start = Instant::now();
        while self.ping().is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILLs the server (as a crash would).
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// One command through `redis-cli`, its output trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn ping(&self) -> Result<(), ()> {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).map_err(|_| ())?;
        s.set_read_timeout(Some(Duration::from_millis(200))).ok();
        s.write_all(b"PING\r\n").map_err(|_| ())?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).map_err(|_| ())?;
        if &buf == b"+PONG\r\n" { Ok(()) } else { Err(()) }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
