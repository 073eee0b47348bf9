//! The observability files against the real tools: every expression of the Grafana
//! dashboard must parse and return data in a real Prometheus that scrapes the real app
//! (one app with `--store redis` on a real `redis-server`, so the Store row has data
//! too, and one with a `--data-dir` that snapshots every second, for the Durable store
//! row),
//! `deploy/prometheus.yml` must pass `promtool check config`, and `grafana/check.sh` must
//! pass. Needs `prometheus`, `promtool`, `jq` and `redis-server` on PATH:
//! `scripts/test.sh` installs them. The app runs with API keys, as in production: the
//! traffic carries a token (and sends a few refused requests), and Prometheus scrapes
//! with a bearer token read from a file.

use std::{
    fmt::Write as _,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::helpers::{KeysFile, RedisServer, TestApp, measurement, sample, spawn_app_on};

/// The whole dashboard test must end well inside a minute, whatever hangs.
const TEST_BUDGET: Duration = Duration::from_secs(50);
/// Prometheus must answer `/-/ready` within this.
const READY_DEADLINE: Duration = Duration::from_secs(20);
/// The scrapes the queries need must have happened within this, once Prometheus is ready.
const SCRAPES_DEADLINE: Duration = Duration::from_secs(20);
/// Successful scrapes to wait for, 1 s apart: a rate over [`RATE_INTERVAL`] needs two.
const MIN_SCRAPES: f64 = 3.0;
/// What `$__rate_interval` becomes: Grafana would pick 4 × the 1 s scrape interval; 10 s
/// covers several scrapes with room for a late one.
const RATE_INTERVAL: &str = "10s";
const JOB: &str = "sensor-stats";
const INSTALL_HINT: &str =
    "run scripts/test.sh, which installs prometheus, promtool, jq and redis-server from Debian";

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_expression_returns_data_from_a_real_prometheus() {
    let started = Instant::now();
    tokio::time::timeout(TEST_BUDGET, dashboard_against_prometheus())
        .await
        .unwrap_or_else(|_| panic!("gave up after {TEST_BUDGET:?}: something hung"));
    let elapsed = started.elapsed();
    assert!(elapsed < TEST_BUDGET, "took {elapsed:?}");
}

async fn dashboard_against_prometheus() {
    // Arrange: the app on a shared Redis whatever SENSOR_STATS_TEST_STORE says (the memory
    // store makes no store calls and no flushes, so the Store row's latency and flush
    // panels would be NaN), a second app with a data dir (the durable store, a snapshot
    // every second) for the Durable store row, both with API keys and traffic of every
    // kind, and a Prometheus scraping both every second with its own token.
    let keys = KeysFile::new(&[
        ("traffic", "ingest,read,delete"),
        ("reader", "read"),
        ("prometheus", "metrics"),
    ]);
    let path = keys.path.clone();
    let app = spawn_app_on(Some(Arc::new(RedisServer::start())), move |c| {
        c.api_keys_file = Some(path);
    })
    .await;
    let data_dir = tempfile::tempdir().expect("temp dir");
    let (path, data) = (keys.path.clone(), data_dir.path().to_owned());
    let durable = spawn_app_on(None, move |c| {
        c.api_keys_file = Some(path);
        c.data_dir = Some(data);
        c.snapshot_interval = Duration::from_secs(1);
    })
    .await;
    let traffic = Traffic::start(&app, keys.token("traffic"), keys.token("reader"));
    let durable_traffic = Traffic::start(&durable, keys.token("traffic"), keys.token("reader"));
    let prometheus = Prometheus::start(&[&app, &durable], keys.token("prometheus")).await;
    prometheus.wait_for_scrapes(MIN_SCRAPES).await;

    // Act: every expression of every panel (and the variable query) through the HTTP API.
    let dashboard = read_dashboard();
    let mut checked = 0;
    let mut failures = Vec::new();
    for query in dashboard_queries(&dashboard) {
        checked += 1;
        if let Err(why) = prometheus.returns_data(&query.promql).await {
            failures.push(format!(
                "{}\n    expr:  {}\n    sent:  {}\n    error: {why}",
                query.origin, query.expr, query.promql
            ));
        }
    }
    let known_names = prometheus.metric_names().await;
    for (origin, name) in metric_names_used(&dashboard) {
        if !known_names.contains(&name) {
            failures.push(format!(
                "{origin}\n    uses metric {name:?}, which Prometheus never scraped from the app"
            ));
        }
    }
    // A panel passes with one series that has data; the traffic must also reach every
    // series the Store row draws, or most of that row would be checked against nothing.
    for promql in traffic_coverage() {
        if let Err(why) = prometheus.is_positive(&promql).await {
            failures.push(format!(
                "traffic coverage: the test traffic should have made this positive\n    sent:  {promql}\n    error: {why}"
            ));
        }
    }
    let rounds = traffic.stop().await;
    let durable_rounds = durable_traffic.stop().await;

    // Assert
    assert!(rounds > 0, "the traffic driver never finished a round");
    assert!(
        durable_rounds > 0,
        "the durable app's traffic driver never finished a round"
    );
    assert!(checked >= 16, "only {checked} expressions found in the dashboard");
    assert!(
        failures.is_empty(),
        "{} failures ({checked} dashboard queries and the traffic coverage) against Prometheus:\n\n{}\n\nPrometheus log:\n{}",
        failures.len(),
        failures.join("\n\n"),
        prometheus.log_tail()
    );
}

#[test]
fn deploy_prometheus_config_passes_promtool() {
    let output = run_tool(
        Command::new("promtool").args(["check", "config", "deploy/prometheus.yml"]),
        "promtool",
    );
    assert!(
        output.status.success(),
        "promtool check config failed:\n{}",
        describe(&output)
    );
}

#[test]
fn grafana_dashboards_pass_check_sh() {
    let output = run_tool(Command::new("bash").arg("grafana/check.sh"), "bash");
    assert!(
        output.status.success(),
        "grafana/check.sh failed:\n{}",
        describe(&output)
    );
}

fn run_tool(command: &mut Command, program: &str) -> Output {
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): {INSTALL_HINT}"))
}

fn describe(output: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ---------------------------------------------------------------------------- dashboard

fn read_dashboard() -> Value {
    let path = repo_path("grafana/dashboards/sensor-stats.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// One PromQL expression of the dashboard, ready to send.
struct DashboardQuery {
    /// Where it comes from, for the failure message.
    origin: String,
    /// As written in the dashboard.
    expr: String,
    /// With the Grafana variables substituted.
    promql: String,
}

/// Panels, including those nested in collapsed rows.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

fn targets(dashboard: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) else {
                continue;
            };
            let origin = format!(
                "panel {} {:?} target {}",
                panel["id"],
                panel["title"].as_str().unwrap_or("<no title>"),
                target["refId"].as_str().unwrap_or("?")
            );
            found.push((origin, expr.to_owned()));
        }
    }
    found
}

fn dashboard_queries(dashboard: &Value) -> Vec<DashboardQuery> {
    let variables = variable_names(dashboard);
    let mut queries: Vec<DashboardQuery> = targets(dashboard)
        .into_iter()
        .map(|(origin, expr)| DashboardQuery {
            promql: substitute(&expr, &variables),
            origin,
            expr,
        })
        .collect();
    // Query variables: `label_values(metric, label)` is Grafana's; ask the same in PromQL.
    for variable in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let query = match &variable["query"] {
            Value::Object(q) => q.get("query").and_then(Value::as_str),
            other => other.as_str(),
        };
        let origin = format!("variable {}", variable["name"]);
        let expr = query.unwrap_or_default().to_owned();
        let promql = label_values_as_promql(&expr)
            .unwrap_or_else(|| format!("unsupported variable query (expected label_values(...)): {expr}"));
        queries.push(DashboardQuery { origin, expr, promql });
    }
    queries
}

fn variable_names(dashboard: &Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .map(str::to_owned)
        .collect()
}

/// Replaces Grafana's variables the way a dashboard showing "All" over the last few
/// seconds would: `$__rate_interval` by [`RATE_INTERVAL`], every template variable by
/// `.*` (they are only ever used in `=~` matchers).
fn substitute(expr: &str, variables: &[String]) -> String {
    let mut out = expr.to_owned();
    for (builtin, value) in [
        ("__rate_interval", RATE_INTERVAL),
        ("__interval", "2s"),
        ("__range", "1m"),
    ] {
        out = out
            .replace(&format!("${{{builtin}}}"), value)
            .replace(&format!("${builtin}"), value);
    }
    let mut variables: Vec<&String> = variables.iter().collect();
    // Longest first, so `$instance` does not eat the start of `$instance_group`.
    variables.sort_by_key(|name| std::cmp::Reverse(name.len()));
    for name in variables {
        out = out
            .replace(&format!("${{{name}}}"), ".*")
            .replace(&format!("[[{name}]]"), ".*")
            .replace(&format!("${name}"), ".*");
    }
    out
}

fn label_values_as_promql(query: &str) -> Option<String> {
    let args = query.trim().strip_prefix("label_values(")?.strip_suffix(')')?;
    Some(match args.rsplit_once(',') {
        Some((metric, label)) => format!("count by ({}) ({})", label.trim(), metric.trim()),
        None => format!("count by ({0}) ({{{0}!=\"\"}})", args.trim()),
    })
}

/// Every name of ours (`sensor_stats_*`, `process_*`) that an expression mentions.
fn metric_names_used(dashboard: &Value) -> Vec<(String, String)> {
    let mut used = Vec::new();
    for (origin, expr) in targets(dashboard) {
        for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
            if token.starts_with("sensor_stats_") || token.starts_with("process_") {
                used.push((origin.clone(), token.to_owned()));
            }
        }
    }
    used
}

// ---------------------------------------------------------------------------- traffic

/// One request of a round and the status it must get.
struct Call {
    method: Method,
    path: &'static str,
    content_type: Option<&'static str>,
    idempotency_key: Option<String>,
    body: String,
    expected: StatusCode,
}

impl Call {
    fn new(method: Method, path: &'static str, body: &str, expected: StatusCode) -> Self {
        Self {
            method,
            path,
            content_type: None,
            idempotency_key: None,
            body: body.to_owned(),
            expected,
        }
    }

    fn json(mut self) -> Self {
        self.content_type = Some("application/json");
        self
    }

    fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = Some(content_type);
        self
    }

    fn idempotency_key(mut self, key: &str) -> Self {
        self.idempotency_key = Some(key.to_owned());
        self
    }
}

/// The requests of round `n`: every route, every kind of rejection the dashboard draws,
/// and each store operation (apply, get, delete, claim, release; ping and count run by
/// themselves).
fn round(n: u64, ex1: &str, ex2: &str) -> Vec<Call> {
    use StatusCode as S;
    let fresh = format!(
        "[{}]",
        measurement(&format!("load-{}", n % 7), "2021-11-08T21:38:09Z", n as f64)
    );
    let invalid = r#"[{"sensor":"s","timestamp":"2021-02-30T00:00:00Z","value":1}]"#;
    let key = format!("round-{n}");
    vec![
        Call::new(Method::POST, "/data", ex1, S::NO_CONTENT).json(),
        Call::new(Method::POST, "/data", ex2, S::NO_CONTENT).json(),
        Call::new(Method::POST, "/data", &fresh, S::NO_CONTENT),
        Call::new(Method::POST, "/data", "nope", S::BAD_REQUEST).json(),
        Call::new(Method::POST, "/data", invalid, S::BAD_REQUEST).json(),
        Call::new(Method::POST, "/data", "[]", S::UNSUPPORTED_MEDIA_TYPE).content_type("text/plain"),
        // Idempotency-Key: claimed and applied, replayed, reused with another body (422),
        // invalid (400), and claimed then released by a request that fails.
        Call::new(Method::POST, "/data", &fresh, S::NO_CONTENT).idempotency_key(&key),
        Call::new(Method::POST, "/data", &fresh, S::NO_CONTENT).idempotency_key(&key),
        Call::new(Method::POST, "/data", ex1, S::UNPROCESSABLE_ENTITY).idempotency_key(&key),
        Call::new(Method::POST, "/data", &fresh, S::BAD_REQUEST).idempotency_key("has space"),
        Call::new(Method::POST, "/data", invalid, S::BAD_REQUEST).idempotency_key(&format!("failing-{n}")),
        Call::new(Method::GET, "/no/such/path", "", S::NOT_FOUND),
        Call::new(Method::PUT, "/statistics/sensor0", "", S::METHOD_NOT_ALLOWED),
        Call::new(Method::GET, "/statistics/sensor0", "", S::OK),
        Call::new(Method::GET, "/statistics/never-seen", "", S::OK),
        Call::new(Method::DELETE, "/statistics/sensor1", "", S::NO_CONTENT),
        Call::new(Method::GET, "/healthz", "", S::NO_CONTENT),
        Call::new(Method::GET, "/livez", "", S::NO_CONTENT),
    ]
}

/// Totals the traffic driver makes positive: a call of each store operation, flushes,
/// replays, the idempotency rejections it provokes (not `idempotency_key_in_use`, which
/// needs a request held open mid-body), `/livez`, and the durable app's log fsyncs, log
/// bytes and snapshots.
fn traffic_coverage() -> Vec<String> {
    let mut queries: Vec<String> = ["apply", "get", "delete", "claim", "release", "ping", "count"]
        .iter()
        .map(|op| format!("sum(sensor_stats_store_call_duration_seconds_count{{op=\"{op}\"}})"))
        .collect();
    queries.extend(
        [
            "sum(sensor_stats_store_flush_requests_count)",
            "sum(sensor_stats_idempotent_replays_total)",
            r#"sum(sensor_stats_requests_rejected_total{reason="idempotency_key_reused"})"#,
            r#"sum(sensor_stats_requests_rejected_total{reason="invalid_idempotency_key"})"#,
            r#"sum(sensor_stats_http_requests_total{route="/livez"})"#,
            "sum(sensor_stats_wal_fsync_duration_seconds_count)",
            "sum(sensor_stats_wal_written_bytes_total)",
            "sum(sensor_stats_snapshot_duration_seconds_count)",
            "sum(sensor_stats_snapshot_size_bytes)",
        ]
        .map(str::to_owned),
    );
    queries
}

/// Requests of every kind, sent round after round by a background task until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Traffic {
    fn start(app: &TestApp, token: &str, read_only_token: &str) -> Self {
        let client = app.client.clone();
        let base = format!("http://{}", app.addr);
        let auth = format!("Bearer {token}");
        let read_only = format!("Bearer {read_only_token}");
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            let rounds = Arc::clone(&rounds);
            async move {
                let ex1 = sample("post_data_ex1.json");
                let ex2 = sample("post_data_ex2.json");
                while !stop.load(Ordering::Relaxed) {
                    let n = rounds.load(Ordering::Relaxed);
                    for call in round(n, &ex1, &ex2) {
                        let Call {
                            method,
                            path,
                            content_type,
                            idempotency_key,
                            body,
                            expected,
                        } = call;
                        let mut request = client
                            .request(method.clone(), format!("{base}{path}"))
                            .header("authorization", &auth)
                            .timeout(Duration::from_secs(5))
                            .body(body);
                        if let Some(ct) = content_type {
                            request = request.header("content-type", ct);
                        }
                        if let Some(key) = &idempotency_key {
                            request = request.header("idempotency-key", key);
                        }
                        let status = request
                            .send()
                            .await
                            .map_err(|e| format!("{method} {path}: {e}"))?
                            .status();
                        if status != expected {
                            return Err(format!(
                                "{method} {path} (Idempotency-Key {idempotency_key:?}): {status}, expected {expected}"
                            ));
                        }
                    }
                    // Refused by access control: no token (401), a key without the scope (403).
                    for (auth, expected) in [
                        (None, StatusCode::UNAUTHORIZED),
                        (Some(&read_only), StatusCode::FORBIDDEN),
                    ] {
                        let mut request = client
                            .delete(format!("{base}/statistics/sensor0"))
                            .timeout(Duration::from_secs(5));
                        if let Some(auth) = auth {
                            request = request.header("authorization", auth);
                        }
                        let status = request
                            .send()
                            .await
                            .map_err(|e| format!("refused DELETE: {e}"))?
                            .status();
                        if status != expected {
                            return Err(format!("refused DELETE: {status}, expected {expected}"));
                        }
                    }
                    rounds.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(())
            }
        });
        Self {
            stop,
            rounds,
            task: Some(task),
        }
    }

    /// Stops the driver and returns how many rounds it completed; panics if it failed.
    async fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let task = self.task.take().expect("stopped once");
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) => self.rounds.load(Ordering::Relaxed),
            Ok(Ok(Err(why))) => panic!("the traffic driver failed: {why}"),
            Ok(Err(join)) => panic!("the traffic driver panicked: {join}"),
            Err(_) => panic!("the traffic driver did not stop within 10 s"),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------- prometheus

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("sensor-stats-prometheus-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real `prometheus` process scraping the apps; killed (and its directory removed) on
/// drop, panics included.
struct Prometheus {
    child: Child,
    url: String,
    client: reqwest::Client,
    log: PathBuf,
    // Dropped after `drop` has killed the process, so the directory is no longer in use.
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `apps` every second with `Authorization: Bearer <token>`, the token read
    /// from a file as in deploy/prometheus.yml.
    async fn start(apps: &[&TestApp], token: &str) -> Self {
        let dir = TempDir::new();
        let config = dir.0.join("prometheus.yml");
        let token_file = dir.0.join("sensor-stats-token");
        std::fs::write(&token_file, token).expect("write the token file");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: {JOB}\n    authorization:\n      type: Bearer\n      \
                 credentials_file: {}\n    static_configs:\n      - targets: [{}]\n",
                token_file.display(),
                apps.iter()
                    .map(|app| format!("\"{}\"", app.addr))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .expect("write prometheus.yml");
        let log = dir.0.join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("create prometheus.log");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.0.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `prometheus` ({e}): {INSTALL_HINT}"));
        let mut prometheus = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client builds"),
            log,
            _dir: dir,
        };
        prometheus.wait_until_ready().await;
        prometheus
    }

    async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "prometheus exited with {status} while starting:\n{}",
                    self.log_tail()
                );
            }
            let ready = self.client.get(format!("{}/-/ready", self.url)).send().await;
            if ready.is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after {READY_DEADLINE:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_scrapes(&self, at_least: f64) {
        let deadline = Instant::now() + SCRAPES_DEADLINE;
        // The least-scraped target decides.
        let query = format!("min(sum_over_time(up{{job=\"{JOB}\"}}[1m]))");
        loop {
            let scrapes = self
                .query(&query)
                .await
                .ok()
                .and_then(|data| sample_values(&data).into_iter().next())
                .unwrap_or(0.0);
            if scrapes >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "only {scrapes} successful scrapes of the app after {SCRAPES_DEADLINE:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `/api/v1/query` now; the `data` object on success, the error otherwise.
    async fn query(&self, promql: &str) -> Result<Value, String> {
        let response = self
            .client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let http = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("HTTP {http}, body is not JSON: {e}"))?;
        if body["status"] != "success" {
            return Err(format!(
                "HTTP {http}, status {}: {} {}",
                body["status"], body["errorType"], body["error"]
            ));
        }
        Ok(body["data"].clone())
    }

    /// Ok when `promql` parses and yields at least one sample that is a number.
    async fn returns_data(&self, promql: &str) -> Result<(), String> {
        let data = self.query(promql).await?;
        let values = sample_values(&data);
        if values.is_empty() {
            return Err(format!("no data ({data})"));
        }
        if values.iter().all(|v| v.is_nan()) {
            return Err(format!("only NaN ({data})"));
        }
        Ok(())
    }

    /// Ok when `promql` yields at least one sample above 0.
    async fn is_positive(&self, promql: &str) -> Result<(), String> {
        let data = self.query(promql).await?;
        if sample_values(&data).iter().any(|v| *v > 0.0) {
            Ok(())
        } else {
            Err(format!("no sample above 0 ({data})"))
        }
    }

    async fn metric_names(&self) -> Vec<String> {
        let body: Value = self
            .client
            .get(format!("{}/api/v1/label/__name__/values", self.url))
            .send()
            .await
            .expect("label values request")
            .json()
            .await
            .expect("label values JSON");
        body["data"]
            .as_array()
            .expect("label values are an array")
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if text.trim().is_empty() {
            return "  (nothing logged at level warn or above)\n".to_owned();
        }
        let lines: Vec<&str> = text.lines().collect();
        let mut tail = String::new();
        for line in &lines[lines.len().saturating_sub(30)..] {
            let _ = writeln!(tail, "  {line}");
        }
        tail
    }
}

/// The sample values of an instant query's `data`, whatever its result type.
fn sample_values(data: &Value) -> Vec<f64> {
    let parse = |pair: &Value| pair[1].as_str().and_then(|v| v.parse::<f64>().ok());
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| parse(&s["value"]))
            .collect(),
        Some("matrix") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["values"].as_array().into_iter().flatten())
            .filter_map(parse)
            .collect(),
        Some("scalar") => parse(&data["result"]).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// A loopback port nobody listened on a moment ago.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
