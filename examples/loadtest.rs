//! The load test: starts the release server on 127.0.0.1 (pinned to one core with
//! `taskset` when asked), drives each workload for a fixed time after a warm-up, checks
//! through GET that the server counted every measurement it acknowledged, and prints one
//! table. Traffic goes only to 127.0.0.1 and every run stops by itself.
//!
//! Run it with `scripts/loadtest.sh` (builds, pins server and load to separate cores).
//! `--stores memory,redis,redis-cluster` runs every workload once per store; in the redis
//! modes fresh `redis-server`s (AOF, `appendfsync everysec`; three cluster masters for
//! `redis-cluster`) run beside the load generator, on its core, and the row adds Redis
//! CPU-seconds per million measurements and requests per group-commit flush.
//!
//! A store name ending in `+keys` (`memory+keys`, `redis+keys`, ...) runs that store with
//! API keys on: the server loads a keys file of ten keys and every request of the load
//! carries the bearer token of one of them (hashed and looked up per request), so the
//! cost of keys is the ratio of two rows of one run.
//!
//! The store name `naive` runs the naive axum server of `examples/naive.rs` (serde_json,
//! one `Mutex<HashMap>`, no middleware) instead of sensor-stats, on the same core with
//! the same load: `--stores memory,naive` measures both in one run and ends with a table
//! of sensor-stats' work per server CPU-second and p99 against the naive server's, per
//! workload. sensor-stats runs at `--log-level` (default `info`, its production default).
//!
//! The store name `victoria-metrics` runs VictoriaMetrics (Debian package
//! `victoria-metrics`, `--victoria-metrics` names the binary) on the same core, for W1
//! and W2 only: the same measurements, each batch posted to its JSON import
//! (`/api/v1/import`) as one line per sensor with its values and timestamps, answered
//! 204 as ours are. Nothing is read back (no GET check); a table of every store against
//! it follows the naive server's.
//!
//! `--stores durable` runs the server with `--data-dir` (a fresh temporary directory on
//! the machine's disk, under `--data-root`) and `--fsync always`, `durable-interval` with
//! `--fsync interval`; their rows add requests per group commit and per fsync, and the
//! mean fsync time.
//!
//! Workloads (a fresh server each):
//! - W1: 1000-measurement batches over 100 sensors.
//! - W2: 1-measurement posts.
//! - W3: GET /statistics over 100 known sensors.
//! - W4: 90% POST of 100-measurement batches to 10 hot sensors, 10% GET of the same
//!   sensors from other connections.
//! - W5: big batches and reads at once: 2 connections POST 100k-measurement batches (about
//!   7 MB each) over 100 sensors, 8 others GET those sensors unpaced; the row's notes give
//!   the GETs' p50 and p99 (what a reader waits while big bodies are decoded). Not in the
//!   default set.
//! - MEM: 1M sensors with 16-byte ids posted in batches of 10k; RSS growth per sensor.
//! - SOAK: W2 for the whole `--duration` with nobody scraping /metrics; RSS sampled every
//!   `--duration / 10` (histogram samples must not pile up). Not in the default set.
//! - SNAP (durable stores only, not in the default set): 1M sensors loaded, then W1 with
//!   `--snapshot-interval 2s`, so snapshots of the whole store run back to back while W1
//!   is measured; the row gives the snapshots' time and size.

#![allow(missing_docs, clippy::print_stdout)]

#[path = "support/client.rs"]
mod client;

use std::{
    cell::RefCell,
    net::{SocketAddr, TcpListener as StdListener},
    process::{Child, Command, Stdio},
    rc::Rc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use client::{Client, free_port};
use hdrhistogram::Histogram;
use hyper::StatusCode;
use sensor_stats::workload;

#[derive(Parser, Debug)]
struct Args {
    /// The server binary to start.
    #[arg(long, default_value = "target/release/sensor-stats")]
    server: String,
    /// The naive server binary (`examples/naive.rs`), run for the store name `naive`.
    #[arg(long, default_value = "target/release/examples/naive")]
    naive: String,
    /// The VictoriaMetrics binary (Debian package `victoria-metrics`), run for the store
    /// name `victoria-metrics` (W1 and W2 only, posted to its JSON import).
    #[arg(long, default_value = "victoria-metrics")]
    victoria_metrics: String,
    /// sensor-stats' `--log-level` (its default, `info`, is what production runs).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Pin the server to this CPU with taskset (omit to leave it unpinned).
    #[arg(long)]
    server_cpu: Option<usize>,
    /// Measured time per workload.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before each workload.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Workloads to run, comma-separated: w1,w2,w3,w4,mem (and w5, soak, snap).
    #[arg(long, default_value = "w1,w2,w3,w4,mem", value_delimiter = ',')]
    workloads: Vec<String>,
    /// Stores to run each workload against, comma-separated: memory, redis,
    /// redis-cluster (three masters, no replicas), durable (`--data-dir`, `--fsync
    /// always`), durable-interval (`--fsync interval`); any of them with `+keys` to run it
    /// with API keys on; `naive` runs the naive server instead of sensor-stats, and
    /// `victoria-metrics` VictoriaMetrics (W1 and W2: the same measurements posted to its
    /// `/api/v1/import` as JSON lines, one line per sensor of a batch).
    #[arg(long, default_value = "memory", value_delimiter = ',')]
    stores: Vec<String>,
    /// Connections of W1 and W2 instead of their usual 4 and 32 (how group commit scales
    /// with concurrency).
    #[arg(long)]
    connections: Option<usize>,
    /// Where the durable stores' temporary data dirs are made (default: the system's
    /// temporary directory).
    #[arg(long)]
    data_root: Option<std::path::PathBuf>,
    /// Set per workload run from `stores`.
    #[arg(skip)]
    store: String,
}

/// The `redis-server`s of one workload run (one, or three cluster masters), in their
/// own temp dir; killed on drop.
struct RedisProc {
    children: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl RedisProc {
    fn start(masters: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cluster = masters > 1;
        let mut ports = Vec::new();
        while ports.len() < masters {
            let p = free_port();
            if !cluster || (p < 50_000 && StdListener::bind(("127.0.0.1", p + 10_000)).is_ok()) {
                ports.push(p);
            }
        }
        let children = ports
            .iter()
            .map(|port| {
                let node_dir = dir.path().join(port.to_string());
                std::fs::create_dir_all(&node_dir).unwrap();
                let mut cmd = Command::new("redis-server");
                cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
                    .args(["--appendonly", "yes", "--appendfsync", "everysec"])
                    .arg("--dir")
                    .arg(&node_dir)
                    .stdout(Stdio::null());
                if cluster {
                    cmd.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
                }
                cmd.spawn()
                    .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"))
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(10);
        for port in &ports {
            while std::net::TcpStream::connect(("127.0.0.1", *port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if cluster {
            let mut create = Command::new("redis-cli");
            create.args(["--cluster", "create"]);
            for p in &ports {
                create.arg(format!("127.0.0.1:{p}"));
            }
            let out = create
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .output()
                .expect("redis-cli runs");
            assert!(out.status.success(), "cluster create failed");
            loop {
                let ok = ports.iter().all(|p| {
                    let out = Command::new("redis-cli")
                        .args(["-p", &p.to_string(), "CLUSTER", "INFO"])
                        .output()
                        .unwrap();
                    String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok")
                });
                if ok {
                    break;
                }
                assert!(
                    Instant::now() < deadline + Duration::from_secs(20),
                    "cluster not ok"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Self {
            children,
            ports,
            _dir: dir,
        }
    }

    /// The server's `--store` and `--redis-url` arguments.
    fn server_args(&self) -> [String; 4] {
        let (store, url) = if self.ports.len() > 1 {
            let seeds: Vec<String> = self
                .ports
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}"))
                .collect();
            ("redis-cluster", seeds.join(","))
        } else {
            ("redis", format!("redis://127.0.0.1:{}/0", self.ports[0]))
        };
        ["--store".into(), store.into(), "--redis-url".into(), url]
    }

    fn cpu_seconds(&self) -> f64 {
        self.children.iter().map(|c| cpu_seconds_of(c.id())).sum()
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// User + system CPU seconds of process `pid` so far.
fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// One running server process (and its Redis in redis mode, its data dir in durable mode).
struct Server {
    child: Child,
    addr: SocketAddr,
    redis: Option<RedisProc>,
    data: Option<tempfile::TempDir>,
    /// VictoriaMetrics' storage directory (for the store `victoria-metrics`).
    victoria: Option<tempfile::TempDir>,
    _keys: Option<tempfile::NamedTempFile>,
}

/// `authorization` header value of every request, set when the store runs with `+keys`.
static BEARER: std::sync::Mutex<Option<hyper::header::HeaderValue>> = std::sync::Mutex::new(None);

fn bearer() -> Option<hyper::header::HeaderValue> {
    BEARER.lock().unwrap().clone()
}

/// Writes a keys file of ten keys with every scope and returns it with one key's token.
fn keys_file() -> (tempfile::NamedTempFile, String) {
    let scopes: Vec<String> = ["ingest", "read", "delete", "metrics"].map(String::from).to_vec();
    let mut text = String::new();
    let mut token = String::new();
    for i in 0..10 {
        let key = sensor_stats::access::generate(&format!("loadtest-{i}"), &scopes).unwrap();
        text.push_str(&key.line);
        text.push('\n');
        token = key.token;
    }
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    (file, token)
}

impl Server {
    async fn start(args: &Args) -> Self {
        Self::start_with(args, &[]).await
    }

    async fn start_with(args: &Args, extra: &[&str]) -> Self {
        let port = free_port();
        let (store, keyed) = match args.store.strip_suffix("+keys") {
            Some(store) => (store, true),
            None => (args.store.as_str(), false),
        };
        let redis = match store {
            "redis" => Some(RedisProc::start(1)),
            "redis-cluster" => Some(RedisProc::start(3)),
            _ => None,
        };
        let naive = store == "naive";
        let victoria = store == VICTORIA;
        let binary = if naive {
            &args.naive
        } else if victoria {
            &args.victoria_metrics
        } else {
            &args.server
        };
        let mut cmd = match args.server_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string(), binary]);
                c
            }
            None => Command::new(binary),
        };
        let storage = victoria.then(|| tempfile::tempdir().unwrap());
        if let Some(dir) = &storage {
            // Samples of 2021 are kept: the default retention is one month.
            cmd.arg(format!("-httpListenAddr=127.0.0.1:{port}"))
                .arg(format!("-storageDataPath={}", dir.path().display()))
                .args(["-retentionPeriod=100y", "-loggerLevel=ERROR"]);
        } else {
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
        }
        cmd.env_remove("RUST_LOG").stdout(Stdio::null());
        if !naive && !victoria {
            cmd.args(["--log-level", &args.log_level]);
        }
        if let Some(r) = &redis {
            cmd.args(r.server_args());
        }
        let data = store.starts_with("durable").then(|| match &args.data_root {
            Some(root) => tempfile::tempdir_in(root).unwrap(),
            None => tempfile::tempdir().unwrap(),
        });
        if let Some(dir) = &data {
            let fsync = if store == "durable-interval" {
                "interval"
            } else {
                "always"
            };
            cmd.arg("--data-dir").arg(dir.path()).args(["--fsync", fsync]);
        }
        let keys = keyed.then(|| {
            let (file, token) = keys_file();
            cmd.arg("--api-keys-file").arg(file.path());
            (file, token)
        });
        *BEARER.lock().unwrap() = keys
            .as_ref()
            .map(|(_, token)| hyper::header::HeaderValue::from_str(&format!("Bearer {token}")).unwrap());
        cmd.args(extra);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            redis,
            data,
            victoria: storage,
            _keys: keys.map(|(file, _)| file),
        };
        let (health, ready) = if victoria {
            ("/health", StatusCode::OK)
        } else {
            ("/healthz", StatusCode::NO_CONTENT)
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = connect(server.addr).await
                && c.get(health).await.0 == ready
            {
                return server;
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// User + system CPU seconds so far.
    fn cpu_seconds(&self) -> f64 {
        cpu_seconds_of(self.child.id())
    }

    /// Redis's CPU seconds so far (0 without Redis).
    fn redis_cpu_seconds(&self) -> f64 {
        self.redis.as_ref().map_or(0.0, RedisProc::cpu_seconds)
    }

    /// `(current RSS, peak RSS)` in bytes.
    fn rss(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let kb = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        (kb("VmRSS:"), kb("VmHWM:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection.
/// A client connection, sending the `+keys` stores' bearer token when there is one.
async fn connect(addr: SocketAddr) -> std::io::Result<Client> {
    Client::connect_with(addr, bearer()).await
}

/// What the workers of one kind saw during the measured window.
#[derive(Default)]
struct Tally {
    requests: u64,
    measurements: u64,
    latency: Option<Histogram<u64>>,
}

impl Tally {
    fn record(&mut self, started: Instant, measurements: u64) {
        let h = self.latency.get_or_insert_with(|| Histogram::new(3).unwrap());
        let _ = h.record(started.elapsed().as_micros() as u64);
        self.requests += 1;
        self.measurements += measurements;
    }

    fn percentile(&self, q: f64) -> f64 {
        self.latency
            .as_ref()
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1000.0)
    }
}

/// The kind of request a worker sends.
#[derive(Clone)]
enum Job {
    /// POST one of these bodies (round-robin) to `path`; each carries `per_body`
    /// measurements.
    Post {
        path: &'static str,
        bodies: Rc<Vec<Bytes>>,
        per_body: u64,
    },
    /// GET /statistics of one of these sensors (round-robin); with `ratio`, wait so
    /// that GETs stay at about 1 for `ratio` POSTs of `posts`.
    Get {
        sensors: Rc<Vec<String>>,
        paced_by: Option<(Rc<RefCell<Tally>>, u64)>,
    },
}

struct Window {
    measure_from: Instant,
    until: Instant,
}

/// Runs one worker until the window closes. Acknowledged measurements are counted over
/// the whole run (for the GET check), timings only inside the measured window.
async fn worker(
    addr: SocketAddr,
    job: Job,
    window: Rc<Window>,
    tally: Rc<RefCell<Tally>>,
    acked: Rc<RefCell<u64>>,
) {
    let mut client = connect(addr).await.expect("connect");
    let mut i = 0usize;
    while Instant::now() < window.until {
        let started = Instant::now();
        let measurements = match &job {
            Job::Post {
                path,
                bodies,
                per_body,
            } => {
                let status = client.post_to(path, bodies[i % bodies.len()].clone()).await;
                assert_eq!(status, StatusCode::NO_CONTENT);
                *acked.borrow_mut() += per_body;
                *per_body
            }
            Job::Get { sensors, paced_by } => {
                if let Some((posts, ratio)) = paced_by
                    && tally.borrow().requests * ratio > posts.borrow().requests
                {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                let (status, _) = client
                    .get(&format!("/statistics/{}", sensors[i % sensors.len()]))
                    .await;
                assert_eq!(status, StatusCode::OK);
                0
            }
        };
        if started >= window.measure_from {
            tally.borrow_mut().record(started, measurements);
        }
        i += 1;
    }
}

struct Row {
    name: &'static str,
    store: String,
    redis_cpu_s: f64,
    requests_per_flush: f64,
    connections: String,
    requests_per_s: f64,
    measurements_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    extra: String,
    cpu_s: f64,
    peak_rss_mib: f64,
    verified: String,
}

impl Row {
    /// A row from the tally of the workload's main kind of request.
    fn from_tally(
        name: &'static str,
        connections: &str,
        t: &Tally,
        args: &Args,
        cpu_s: f64,
        server: &Server,
        verified: String,
    ) -> Self {
        let secs = args.duration.as_secs_f64();
        Self {
            name,
            store: args.store.clone(),
            redis_cpu_s: 0.0,
            requests_per_flush: 0.0,
            connections: connections.to_owned(),
            requests_per_s: t.requests as f64 / secs,
            measurements_per_s: t.measurements as f64 / secs,
            p50_ms: t.percentile(0.5),
            p99_ms: t.percentile(0.99),
            extra: String::new(),
            cpu_s,
            peak_rss_mib: server.rss().1 as f64 / 1048576.0,
            verified,
        }
    }
}

async fn run_mix(
    args: &Args,
    server: &Server,
    groups: Vec<(Job, usize)>,
) -> (Vec<Rc<RefCell<Tally>>>, u64, f64, f64) {
    let now = Instant::now();
    let window = Rc::new(Window {
        measure_from: now + args.warmup,
        until: now + args.warmup + args.duration,
    });
    let acked = Rc::new(RefCell::new(0u64));
    let tallies: Vec<Rc<RefCell<Tally>>> = groups.iter().map(|_| Rc::default()).collect();
    // GET pacing refers to the first group's tally (the POSTs).
    let mut handles = Vec::new();
    for (g, (job, connections)) in groups.into_iter().enumerate() {
        let job = match job {
            Job::Get {
                sensors,
                paced_by: Some((_, ratio)),
            } => Job::Get {
                sensors,
                paced_by: Some((Rc::clone(&tallies[0]), ratio)),
            },
            other => other,
        };
        for _ in 0..connections {
            handles.push(tokio::task::spawn_local(worker(
                server.addr,
                job.clone(),
                Rc::clone(&window),
                Rc::clone(&tallies[g]),
                Rc::clone(&acked),
            )));
        }
    }
    tokio::time::sleep_until(window.measure_from.into()).await;
    let cpu_start = server.cpu_seconds();
    let redis_start = server.redis_cpu_seconds();
    tokio::time::sleep_until(window.until.into()).await;
    let cpu = server.cpu_seconds() - cpu_start;
    let redis_cpu = server.redis_cpu_seconds() - redis_start;
    for h in handles {
        h.await.expect("worker");
    }
    let acked = *acked.borrow();
    (tallies, acked, cpu, redis_cpu)
}

/// The server's `/metrics` text.
async fn scrape(server: &Server) -> String {
    let mut c = connect(server.addr).await.unwrap();
    let (_, metrics) = c.get("/metrics").await;
    String::from_utf8_lossy(&metrics).into_owned()
}

/// The value of the unlabelled series `name` in a scrape (0 when absent).
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// `sum / count` of histogram `name` (0 when empty).
fn mean(text: &str, name: &str) -> f64 {
    let count = metric(text, &format!("{name}_count"));
    if count == 0.0 {
        0.0
    } else {
        metric(text, &format!("{name}_sum")) / count
    }
}

/// Adds the store columns to a row: Redis CPU and requests per flush (redis); requests
/// per group commit and per fsync, mean fsync time (durable).
async fn with_store_costs(mut row: Row, server: &Server, redis_cpu: f64) -> Row {
    if server.redis.is_some() || server.data.is_some() {
        let text = scrape(server).await;
        row.redis_cpu_s = redis_cpu;
        row.requests_per_flush = mean(&text, "sensor_stats_store_flush_requests");
        if server.data.is_some() {
            let fsyncs = metric(&text, "sensor_stats_wal_fsync_duration_seconds_count");
            let requests = metric(&text, "sensor_stats_store_flush_requests_sum");
            let note = format!(
                "{:.1} req/fsync ({fsyncs:.0} fsyncs, mean {:.2} ms), log {:.0} MB",
                requests / fsyncs.max(1.0),
                mean(&text, "sensor_stats_wal_fsync_duration_seconds") * 1e3,
                metric(&text, "sensor_stats_wal_written_bytes_total") / 1e6
            );
            row.extra = if row.extra.is_empty() {
                note
            } else {
                format!("{}; {note}", row.extra)
            };
        }
    }
    row
}

async fn verify(server: &Server, sensors: &[String], acked: u64, preloaded: u64) -> String {
    let mut client = connect(server.addr).await.unwrap();
    let mut counted = 0;
    for s in sensors {
        counted += client.count(s).await;
    }
    let want = acked + preloaded;
    if counted == want {
        format!("ok ({counted})")
    } else {
        format!("MISMATCH: counted {counted}, acked {want}")
    }
}

fn bodies(n: usize, measurements: usize, sensors: usize) -> Rc<Vec<Bytes>> {
    Rc::new(
        (0..n)
            .map(|seed| Bytes::from(workload::batch(measurements, sensors, seed as u64 + 1)))
            .collect(),
    )
}

/// The store name that runs VictoriaMetrics.
const VICTORIA: &str = "victoria-metrics";

/// The bodies of [`bodies`] in VictoriaMetrics' JSON import format: one line per sensor
/// of a batch, with its values and timestamps (milliseconds) in the batch's order.
fn victoria_bodies(n: usize, measurements: usize, sensors: usize) -> Rc<Vec<Bytes>> {
    #[derive(serde::Deserialize)]
    struct Measurement {
        sensor: String,
        timestamp: String,
        value: f64,
    }
    Rc::new(
        (0..n)
            .map(|seed| {
                let batch = workload::batch(measurements, sensors, seed as u64 + 1);
                let items: Vec<Measurement> = serde_json::from_str(&batch).unwrap();
                let mut series: Vec<(String, Vec<f64>, Vec<i64>)> = Vec::new();
                for m in items {
                    let at = chrono::DateTime::parse_from_rfc3339(&m.timestamp).unwrap();
                    let i = match series.iter().position(|(s, ..)| *s == m.sensor) {
                        Some(i) => i,
                        None => {
                            series.push((m.sensor, Vec::new(), Vec::new()));
                            series.len() - 1
                        }
                    };
                    series[i].1.push(m.value);
                    series[i].2.push(at.timestamp_millis());
                }
                let lines: Vec<String> = series
                    .into_iter()
                    .map(|(sensor, values, timestamps)| {
                        serde_json::json!({
                            "metric": {"__name__": "measurement", "sensor": sensor},
                            "values": values,
                            "timestamps": timestamps,
                        })
                        .to_string()
                    })
                    .collect();
                Bytes::from(lines.join("\n") + "\n")
            })
            .collect(),
    )
}

fn ids(n: usize) -> Rc<Vec<String>> {
    Rc::new((0..n).map(workload::sensor_id).collect())
}

async fn post_workload(
    args: &Args,
    name: &'static str,
    per_body: usize,
    sensors: usize,
    connections: usize,
) -> Row {
    let server = Server::start(args).await;
    let victoria = server.victoria.is_some();
    let job = Job::Post {
        path: if victoria { "/api/v1/import" } else { "/data" },
        bodies: if victoria {
            victoria_bodies(16, per_body, sensors)
        } else {
            bodies(16, per_body, sensors)
        },
        per_body: per_body as u64,
    };
    let (tallies, acked, cpu, redis_cpu) = run_mix(args, &server, vec![(job, connections)]).await;
    let verified = if victoria {
        "not checked".to_owned()
    } else {
        verify(&server, &ids(sensors), acked, 0).await
    };
    let row = {
        let t = tallies[0].borrow();
        Row::from_tally(name, &connections.to_string(), &t, args, cpu, &server, verified)
    };
    with_store_costs(row, &server, redis_cpu).await
}

async fn w3(args: &Args) -> Row {
    let server = Server::start(args).await;
    let mut c = connect(server.addr).await.unwrap();
    assert_eq!(
        c.post(Bytes::from(workload::batch(1000, 100, 1))).await,
        StatusCode::NO_CONTENT
    );
    let job = Job::Get {
        sensors: ids(100),
        paced_by: None,
    };
    let (tallies, _, cpu, redis_cpu) = run_mix(args, &server, vec![(job, 32)]).await;
    let verified = verify(&server, &ids(100), 0, 1000).await;
    let row = {
        let t = tallies[0].borrow();
        Row::from_tally(
            "W3 GET /statistics, 100 sensors",
            "32",
            &t,
            args,
            cpu,
            &server,
            verified,
        )
    };
    with_store_costs(row, &server, redis_cpu).await
}

async fn w4(args: &Args) -> Row {
    let post = Job::Post {
        path: "/data",
        bodies: bodies(16, 100, 10),
        per_body: 100,
    };
    let get = Job::Get {
        sensors: ids(10),
        paced_by: Some((Rc::default(), 9)),
    };
    mixed(
        args,
        "W4 mixed: 90% POST 100x10 hot, 10% GET",
        (post, 16),
        (get, 4),
        10,
        |row, p, g, secs| Row {
            requests_per_s: (p.requests + g.requests) as f64 / secs,
            extra: format!(
                "GET p50 {:.2} ms, p99 {:.2} ms; {:.1}% GET",
                g.percentile(0.5),
                g.percentile(0.99),
                100.0 * g.requests as f64 / (p.requests + g.requests).max(1) as f64
            ),
            ..row
        },
    )
    .await
}

async fn w5(args: &Args) -> Row {
    let post = Job::Post {
        path: "/data",
        bodies: bodies(2, 100_000, 100),
        per_body: 100_000,
    };
    let get = Job::Get {
        sensors: ids(100),
        paced_by: None,
    };
    mixed(
        args,
        "W5 POST 100k x 100 sensors + GETs",
        (post, 2),
        (get, 8),
        100,
        |row, _, g, secs| Row {
            extra: format!(
                "GET {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                g.requests as f64 / secs,
                g.percentile(0.5),
                g.percentile(0.99),
                g.percentile(1.0)
            ),
            ..row
        },
    )
    .await
}

/// POSTs and GETs of the first `sensors` ids side by side on a fresh server: the row is
/// the POSTs', which `finish` completes from both tallies and the measured seconds.
async fn mixed(
    args: &Args,
    name: &'static str,
    (post, posters): (Job, usize),
    (get, getters): (Job, usize),
    sensors: usize,
    finish: impl FnOnce(Row, &Tally, &Tally, f64) -> Row,
) -> Row {
    let server = Server::start(args).await;
    let (tallies, acked, cpu, redis_cpu) =
        run_mix(args, &server, vec![(post, posters), (get, getters)]).await;
    let verified = verify(&server, &ids(sensors), acked, 0).await;
    let row = {
        let (p, g) = (tallies[0].borrow(), tallies[1].borrow());
        let connections = format!("{posters}+{getters}");
        let row = Row::from_tally(name, &connections, &p, args, cpu, &server, verified);
        finish(row, &p, &g, args.duration.as_secs_f64())
    };
    with_store_costs(row, &server, redis_cpu).await
}

/// W2 traffic for the whole duration, no scraper; RSS sampled ten times.
async fn soak(args: &Args) -> Row {
    let server = Rc::new(Server::start(args).await);
    let sampler = {
        let server = Rc::clone(&server);
        let every = args.duration / 10;
        let first = args.warmup;
        tokio::task::spawn_local(async move {
            tokio::time::sleep(first).await;
            let mut samples = Vec::new();
            for _ in 0..=10 {
                samples.push(server.rss().0 as f64 / 1048576.0);
                tokio::time::sleep(every).await;
            }
            samples
        })
    };
    let job = Job::Post {
        path: "/data",
        bodies: bodies(16, 1, 1),
        per_body: 1,
    };
    let (tallies, acked, cpu, _) = run_mix(args, &server, vec![(job, 32)]).await;
    let verified = verify(&server, &ids(1), acked, 0).await;
    let samples = sampler.await.expect("sampler");
    let t = tallies[0].borrow();
    Row {
        extra: format!(
            "RSS MiB every {}: {}",
            humantime::format_duration(args.duration / 10),
            samples
                .iter()
                .map(|m| format!("{m:.1}"))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        ..Row::from_tally("SOAK W2, no scraper", "32", &t, args, cpu, &server, verified)
    }
}

/// Posts `sensors` distinct 16-byte sensor ids (from `sensor-001000000` on), `per_batch`
/// to a request.
async fn fill(c: &mut Client, sensors: usize, per_batch: usize) {
    for chunk in 0..sensors / per_batch {
        let mut body = String::with_capacity(per_batch * 80);
        body.push('[');
        for i in 0..per_batch {
            if i > 0 {
                body.push(',');
            }
            let id = workload::sensor_id(1_000_000 + chunk * per_batch + i);
            body.push_str(&format!(
                r#"{{"sensor":"{id}","timestamp":"2021-11-08T21:38:09Z","value":1.5}}"#
            ));
        }
        body.push(']');
        assert_eq!(c.post(Bytes::from(body)).await, StatusCode::NO_CONTENT);
    }
}

/// 1M sensors, then W1 measured while snapshots of the whole store run back to back.
async fn snapshots_under_w1(args: &Args) -> Row {
    assert!(
        args.store.starts_with("durable"),
        "the snap workload needs --stores durable or durable-interval"
    );
    let server = Server::start_with(args, &["--snapshot-interval", "2s"]).await;
    let mut c = connect(server.addr).await.unwrap();
    fill(&mut c, 1_000_000, 10_000).await;
    // Wait for a snapshot that holds all of them before measuring.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = scrape(&server).await;
        if metric(&text, "sensor_stats_snapshot_duration_seconds_count") >= 1.0
            && metric(&text, "sensor_stats_snapshot_size_bytes") > 40e6
        {
            break;
        }
        assert!(Instant::now() < deadline, "no snapshot of the 1M sensors");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = scrape(&server).await;
    let job = Job::Post {
        path: "/data",
        bodies: bodies(16, 1000, 100),
        per_body: 1000,
    };
    let (tallies, acked, cpu, _) = run_mix(args, &server, vec![(job, 4)]).await;
    let after = scrape(&server).await;
    let verified = verify(&server, &ids(100), acked, 0).await;
    let count = |t: &str| metric(t, "sensor_stats_snapshot_duration_seconds_count");
    let sum = |t: &str| metric(t, "sensor_stats_snapshot_duration_seconds_sum");
    let snapshots = count(&after) - count(&before);
    let row = {
        let t = tallies[0].borrow();
        Row {
            extra: format!(
                "{snapshots:.0} snapshots of 1M sensors while measured (warm-up included), mean {:.2} s, {:.1} MB each",
                (sum(&after) - sum(&before)) / snapshots.max(1.0),
                metric(&after, "sensor_stats_snapshot_size_bytes") / 1e6
            ),
            ..Row::from_tally(
                "SNAP W1 during snapshots of 1M sensors",
                "4",
                &t,
                args,
                cpu,
                &server,
                verified,
            )
        }
    };
    with_store_costs(row, &server, 0.0).await
}

/// Posts 1M distinct 16-byte sensor ids; reports RSS growth per sensor.
async fn memory(args: &Args) -> Row {
    const SENSORS: usize = 1_000_000;
    const PER_BATCH: usize = 10_000;
    let server = Server::start(args).await;
    let mut c = connect(server.addr).await.unwrap();
    // Warm the allocator, the connection and the parser's per-thread buffers with a batch
    // as large as the measured ones, of 10k other sensors (they exist before the "before"
    // reading, so they do not count): per-request buffers are not per-sensor memory.
    assert_eq!(
        c.post(Bytes::from(workload::batch(PER_BATCH, PER_BATCH, 9)))
            .await,
        StatusCode::NO_CONTENT
    );
    let (before, _) = server.rss();
    let started = Instant::now();
    fill(&mut c, SENSORS, PER_BATCH).await;
    let elapsed = started.elapsed().as_secs_f64();
    // The map's old tables are freed as it grows; give the allocator a moment to return
    // them to the OS (mimalloc purges freed pages after a short delay), and nudge it with
    // one small request, so RSS shows what the sensors hold rather than garbage in waiting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        c.post(Bytes::from(workload::batch(1, 1, 1))).await,
        StatusCode::NO_CONTENT
    );
    let (after, peak) = server.rss();
    let (_, metrics) = c.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics);
    let tracked = text
        .lines()
        .find_map(|l| l.strip_prefix("sensor_stats_sensors_tracked "))
        .unwrap_or("?")
        .to_owned();
    Row {
        name: "MEM 1M sensors, 16-byte ids",
        store: args.store.clone(),
        redis_cpu_s: 0.0,
        requests_per_flush: 0.0,
        connections: "1".into(),
        requests_per_s: (SENSORS / PER_BATCH) as f64 / elapsed,
        measurements_per_s: SENSORS as f64 / elapsed,
        p50_ms: 0.0,
        p99_ms: 0.0,
        extra: format!(
            "RSS {:.1} -> {:.1} MiB: {:.1} bytes/sensor",
            before as f64 / 1048576.0,
            after as f64 / 1048576.0,
            (after - before) as f64 / SENSORS as f64
        ),
        cpu_s: 0.0,
        peak_rss_mib: peak as f64 / 1048576.0,
        verified: format!("sensors_tracked {tracked}"),
    }
}

fn main() {
    let mut args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let rows = local.block_on(&rt, async {
        let mut rows = Vec::new();
        for w in args.workloads.clone() {
            for store in args.stores.clone() {
                // The naive server has no /metrics and no data dir; VictoriaMetrics runs
                // the posting workloads only.
                if store == "naive" && matches!(w.as_str(), "mem" | "soak" | "snap")
                    || store == VICTORIA && !matches!(w.as_str(), "w1" | "w2")
                {
                    continue;
                }
                args.store = store;
                let args = &args;
                eprintln!("running {w} ({}) ...", args.store);
                rows.push(match w.as_str() {
                    "w1" => {
                        let conns = args.connections.unwrap_or(4);
                        post_workload(args, "W1 POST 1000 x 100 sensors", 1000, 100, conns).await
                    }
                    "w2" => {
                        let conns = args.connections.unwrap_or(32);
                        post_workload(args, "W2 POST 1 measurement", 1, 1, conns).await
                    }
                    "w3" => w3(args).await,
                    "w4" => w4(args).await,
                    "w5" => w5(args).await,
                    "mem" => memory(args).await,
                    "soak" => soak(args).await,
                    "snap" => snapshots_under_w1(args).await,
                    other => panic!("unknown workload {other}"),
                });
            }
        }
        rows
    });
    println!(
        "\nserver: {} (cpu {}), {} measured after {} warm-up per workload\n",
        args.server,
        args.server_cpu.map_or("unpinned".into(), |c| c.to_string()),
        humantime::format_duration(args.duration),
        humantime::format_duration(args.warmup)
    );
    println!(
        "| workload | store | conns | req/s | measurements/s | per server CPU-s | p50 ms | p99 ms | server CPU s | Redis CPU s per M meas | req/flush | peak RSS MiB | GET check | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let measured = r.measurements_per_s * args.duration.as_secs_f64();
        let redis_per_m = if r.redis_cpu_s > 0.0 && measured > 0.0 {
            format!("{:.2}", r.redis_cpu_s / measured * 1e6)
        } else {
            "-".into()
        };
        let per_flush = if r.requests_per_flush > 0.0 {
            format!("{:.1}", r.requests_per_flush)
        } else {
            "-".into()
        };
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} | {} | {} |",
            r.name,
            r.store,
            r.connections,
            r.requests_per_s,
            r.measurements_per_s,
            per_cpu_second(r, args.duration),
            r.p50_ms,
            r.p99_ms,
            r.cpu_s,
            redis_per_m,
            per_flush,
            r.peak_rss_mib,
            r.verified,
            r.extra
        );
    }
    print_ratios(&rows, args.duration);
}

/// Work per server CPU-second: measurements for POST workloads of batches (W1, W4, W5),
/// requests otherwise.
fn per_cpu_second(r: &Row, duration: Duration) -> f64 {
    let work = if r.name.starts_with("W1") || r.name.starts_with("W4") || r.name.starts_with("W5") {
        r.measurements_per_s
    } else {
        r.requests_per_s
    };
    if r.cpu_s > 0.0 {
        work * duration.as_secs_f64() / r.cpu_s
    } else {
        0.0
    }
}

/// Each store's row against the naive server's row of the same workload in this run,
/// then against VictoriaMetrics' when it ran: work per server CPU-second, work per
/// second, and p99.
fn print_ratios(rows: &[Row], duration: Duration) {
    for (baseline, label) in [("naive", "naive"), (VICTORIA, "VictoriaMetrics")] {
        let base: Vec<&Row> = rows.iter().filter(|r| r.store == baseline).collect();
        if base.is_empty() {
            continue;
        }
        println!(
            "\n| workload | store | per server CPU-s vs {label} | per second vs {label} | p99 ms ({label}) |"
        );
        println!("|---|---|---|---|---|");
        for r in rows.iter().filter(|r| r.store != baseline) {
            let Some(n) = base.iter().find(|n| n.name == r.name) else {
                continue;
            };
            let work = |r: &Row| {
                if r.name.starts_with("W1") || r.name.starts_with("W4") || r.name.starts_with("W5") {
                    r.measurements_per_s
                } else {
                    r.requests_per_s
                }
            };
            println!(
                "| {} | {} | {:.2}x | {:.2}x | {:.2} ({:.2}) |",
                r.name,
                r.store,
                per_cpu_second(r, duration) / per_cpu_second(n, duration).max(f64::MIN_POSITIVE),
                work(r) / work(n).max(f64::MIN_POSITIVE),
                r.p99_ms,
                n.p99_ms
            );
        }
    }
}
