//! The load test: starts the release server on 127.0.0.1 (pinned to one core with
//! `taskset` when asked), drives each workload for a fixed time after a warm-up, checks
//! through GET that the server counted every measurement it acknowledged, and prints one
//! table. Traffic goes only to 127.0.0.1 and every run stops by itself.
//!
//! Run it with `scripts/loadtest.sh` (builds, pins server and load to separate cores).
//! `--servers sensor-stats,naive` runs every workload against sensor-stats and against
//! the naive axum server of `examples/naive.rs`, one after the other (`--rounds 2`
//! repeats the whole sequence, so the two alternate), and ends with a table of ratios
//! per server CPU-second. sensor-stats runs at its default log level (info).
//! `--stores memory,redis` runs every workload once per store; in redis mode a fresh
//! `redis-server` (AOF, `appendfsync everysec`) runs beside the load generator, on its
//! core, and the row adds Redis CPU-seconds per million measurements and requests per
//! group-commit flush. The naive server has no Redis mode and runs in memory only.
//!
//! Workloads (a fresh server each):
//! - W1: 1000-measurement batches over 100 sensors.
//! - W2: 1-measurement posts.
//! - W3: GET /statistics over 100 known sensors.
//! - W4: 90% POST of 100-measurement batches to 10 hot sensors, 10% GET of the same
//!   sensors from other connections.
//! - W5: GET /statistics over 100 sensors (4 connections) while 2 connections post
//!   100 000-measurement batches (8 MB bodies): the GET latency a large body causes.
//! - MEM: 1M sensors with 16-byte ids posted in batches of 10k; RSS growth per sensor.
//! - SOAK: W2 for the whole `--duration` with nobody scraping /metrics; RSS sampled every
//!   `--duration / 10` (histogram samples must not pile up). Not in the default set.

#![allow(missing_docs, clippy::print_stdout)]

#[path = "support/client.rs"]
mod client;

use std::{
    cell::RefCell,
    net::SocketAddr,
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
    /// The sensor-stats binary to start.
    #[arg(long, default_value = "target/release/sensor-stats")]
    server: String,
    /// The naive server binary (`examples/naive.rs`).
    #[arg(long, default_value = "target/release/examples/naive")]
    naive: String,
    /// Servers to run each workload against, comma-separated: sensor-stats,naive.
    #[arg(long, default_value = "sensor-stats", value_delimiter = ',')]
    servers: Vec<String>,
    /// How many times to run the whole sequence (the servers alternate within each).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Pin the server to this CPU with taskset (omit to leave it unpinned).
    #[arg(long)]
    server_cpu: Option<usize>,
    /// Measured time per workload.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured warm-up before each workload.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Workloads to run, comma-separated: w1,w2,w3,w4,w5,mem,soak.
    #[arg(long, default_value = "w1,w2,w3,w4,w5,mem", value_delimiter = ',')]
    workloads: Vec<String>,
    /// Stores to run each workload against, comma-separated: memory,redis.
    #[arg(long, default_value = "memory", value_delimiter = ',')]
    stores: Vec<String>,
    /// Set per workload run from `stores`.
    #[arg(skip)]
    store: String,
    /// Set per workload run from `servers`.
    #[arg(skip)]
    target: String,
}

/// A `redis-server` for one workload run, in its own temp dir; killed on drop.
struct RedisProc {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisProc {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server: {e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for RedisProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// One running server process (and its Redis in redis mode).
struct Server {
    child: Child,
    addr: SocketAddr,
    redis: Option<RedisProc>,
}

impl Server {
    async fn start(args: &Args) -> Self {
        let port = free_port();
        let redis = (args.store == "redis").then(RedisProc::start);
        let binary = if args.target == "naive" {
            &args.naive
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
        // sensor-stats at its default log level, as in production.
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null());
        if let Some(r) = &redis {
            cmd.args([
                "--store",
                "redis",
                "--redis-url",
                &format!("redis://127.0.0.1:{}/0", r.port),
            ]);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let server = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            redis,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut c) = Client::connect(server.addr).await
                && c.get("/healthz").await.0 == StatusCode::NO_CONTENT
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
        self.redis.as_ref().map_or(0.0, |r| cpu_seconds_of(r.child.id()))
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
    /// POST one of these bodies (round-robin); each carries `per_body` measurements.
    Post { bodies: Rc<Vec<Bytes>>, per_body: u64 },
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
    let mut client = Client::connect(addr).await.expect("connect");
    let mut i = 0usize;
    while Instant::now() < window.until {
        let started = Instant::now();
        let measurements = match &job {
            Job::Post { bodies, per_body } => {
                let status = client.post(bodies[i % bodies.len()].clone()).await;
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
    server: String,
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
            server: args.target.clone(),
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

/// Mean requests per group-commit flush over the run, from the server's own histogram.
async fn requests_per_flush(server: &Server) -> f64 {
    let mut c = Client::connect(server.addr).await.unwrap();
    let (_, metrics) = c.get("/metrics").await;
    let text = String::from_utf8_lossy(&metrics);
    let value = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let count = value("sensor_stats_store_flush_requests_count ");
    if count == 0.0 {
        0.0
    } else {
        value("sensor_stats_store_flush_requests_sum ") / count
    }
}

/// Adds the redis columns to a row.
async fn with_store_costs(mut row: Row, server: &Server, redis_cpu: f64) -> Row {
    if server.redis.is_some() {
        row.redis_cpu_s = redis_cpu;
        row.requests_per_flush = requests_per_flush(server).await;
    }
    row
}

async fn verify(server: &Server, sensors: &[String], acked: u64, preloaded: u64) -> String {
    let mut client = Client::connect(server.addr).await.unwrap();
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
    let job = Job::Post {
        bodies: bodies(16, per_body, sensors),
        per_body: per_body as u64,
    };
    let (tallies, acked, cpu, redis_cpu) = run_mix(args, &server, vec![(job, connections)]).await;
    let verified = verify(&server, &ids(sensors), acked, 0).await;
    let row = {
        let t = tallies[0].borrow();
        Row::from_tally(name, &connections.to_string(), &t, args, cpu, &server, verified)
    };
    with_store_costs(row, &server, redis_cpu).await
}

async fn w3(args: &Args) -> Row {
    let server = Server::start(args).await;
    let mut c = Client::connect(server.addr).await.unwrap();
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
    let server = Server::start(args).await;
    let post = Job::Post {
        bodies: bodies(16, 100, 10),
        per_body: 100,
    };
    let get = Job::Get {
        sensors: ids(10),
        paced_by: Some((Rc::default(), 9)),
    };
    let (tallies, acked, cpu, redis_cpu) = run_mix(args, &server, vec![(post, 16), (get, 4)]).await;
    let verified = verify(&server, &ids(10), acked, 0).await;
    let secs = args.duration.as_secs_f64();
    let row = {
        let (p, g) = (tallies[0].borrow(), tallies[1].borrow());
        Row {
            requests_per_s: (p.requests + g.requests) as f64 / secs,
            extra: format!(
                "GET p50 {:.2} ms, p99 {:.2} ms; {:.1}% GET",
                g.percentile(0.5),
                g.percentile(0.99),
                100.0 * g.requests as f64 / (p.requests + g.requests).max(1) as f64
            ),
            ..Row::from_tally(
                "W4 mixed: 90% POST 100x10 hot, 10% GET",
                "16+4",
                &p,
                args,
                cpu,
                &server,
                verified,
            )
        }
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

/// Posts 1M distinct 16-byte sensor ids; reports RSS growth per sensor.
async fn memory(args: &Args) -> Row {
    const SENSORS: usize = 1_000_000;
    const PER_BATCH: usize = 10_000;
    let server = Server::start(args).await;
    let mut c = Client::connect(server.addr).await.unwrap();
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
    for chunk in 0..SENSORS / PER_BATCH {
        let mut body = String::with_capacity(PER_BATCH * 80);
        body.push('[');
        for i in 0..PER_BATCH {
            if i > 0 {
                body.push(',');
            }
            let id = workload::sensor_id(1_000_000 + chunk * PER_BATCH + i);
            body.push_str(&format!(
                r#"{{"sensor":"{id}","timestamp":"2021-11-08T21:38:09Z","value":1.5}}"#
            ));
        }
        body.push(']');
        assert_eq!(c.post(Bytes::from(body)).await, StatusCode::NO_CONTENT);
    }
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
        server: args.target.clone(),
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

/// W3's GETs while 100k-measurement batches arrive on other connections.
async fn w5(args: &Args) -> Row {
    const PER_BODY: usize = 100_000;
    const SENSORS: usize = 1000;
    let server = Server::start(args).await;
    let mut c = Client::connect(server.addr).await.unwrap();
    assert_eq!(
        c.post(Bytes::from(workload::batch(1000, 100, 1))).await,
        StatusCode::NO_CONTENT
    );
    let post = Job::Post {
        bodies: bodies(2, PER_BODY, SENSORS),
        per_body: PER_BODY as u64,
    };
    let get = Job::Get {
        sensors: ids(100),
        paced_by: None,
    };
    let (tallies, acked, cpu, redis_cpu) = run_mix(args, &server, vec![(post, 2), (get, 4)]).await;
    let verified = verify(&server, &ids(SENSORS), acked, 1000).await;
    let secs = args.duration.as_secs_f64();
    let row = {
        let (p, g) = (tallies[0].borrow(), tallies[1].borrow());
        Row {
            measurements_per_s: p.measurements as f64 / secs,
            extra: format!(
                "req/s, p50, p99: GETs; POST {:.1} batches/s, p99 {:.1} ms",
                p.requests as f64 / secs,
                p.percentile(0.99)
            ),
            ..Row::from_tally(
                "W5 GET while 100k-measurement batches arrive",
                "2+4",
                &g,
                args,
                cpu,
                &server,
                verified,
            )
        }
    };
    with_store_costs(row, &server, redis_cpu).await
}

/// Requests (measurements for W1) per server CPU-second: what a core buys.
fn per_cpu_second(r: &Row, duration: Duration) -> f64 {
    let work = if r.name.starts_with("W1") {
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

fn main() {
    let mut args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let rows = local.block_on(&rt, async {
        let mut rows = Vec::new();
        for round in 1..=args.rounds {
            for w in args.workloads.clone() {
                for store in args.stores.clone() {
                    for target in args.servers.clone() {
                        // The naive server keeps its numbers in memory and has no /metrics.
                        if target == "naive" && (store != "memory" || matches!(w.as_str(), "mem" | "soak")) {
                            continue;
                        }
                        args.store = store.clone();
                        args.target = target;
                        let args = &args;
                        eprintln!(
                            "round {round}: running {w} on {} ({}) ...",
                            args.target, args.store
                        );
                        rows.push(match w.as_str() {
                            "w1" => post_workload(args, "W1 POST 1000 x 100 sensors", 1000, 100, 4).await,
                            "w2" => post_workload(args, "W2 POST 1 measurement", 1, 1, 32).await,
                            "w3" => w3(args).await,
                            "w4" => w4(args).await,
                            "w5" => w5(args).await,
                            "mem" => memory(args).await,
                            "soak" => soak(args).await,
                            other => panic!("unknown workload {other}"),
                        });
                    }
                }
            }
        }
        rows
    });
    println!(
        "\nsensor-stats: {}, naive: {} (cpu {}), {} measured after {} warm-up per workload, {} round(s)\n",
        args.server,
        args.naive,
        args.server_cpu.map_or("unpinned".into(), |c| c.to_string()),
        humantime::format_duration(args.duration),
        humantime::format_duration(args.warmup),
        args.rounds
    );
    println!(
        "| workload | server | store | conns | req/s | measurements/s | per server CPU-s | p50 ms | p99 ms | server CPU s | Redis CPU s per M meas | req/flush | peak RSS MiB | GET check | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
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
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} | {} | {} |",
            r.name,
            r.server,
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

/// sensor-stats against the naive server, per workload (memory store): the mean over the
/// rounds of the work per server CPU-second (measurements for W1, requests otherwise),
/// and of p99.
fn print_ratios(rows: &[Row], duration: Duration) {
    let mean = |server: &str, name: &str, f: &dyn Fn(&Row) -> f64| {
        let values: Vec<f64> = rows
            .iter()
            .filter(|r| r.server == server && r.name == name && r.store == "memory")
            .map(f)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    };
    let mut names: Vec<&'static str> = Vec::new();
    for r in rows {
        if !names.contains(&r.name) {
            names.push(r.name);
        }
    }
    let mut header = false;
    for name in names {
        let per_cpu = |r: &Row| per_cpu_second(r, duration);
        let p99 = |r: &Row| r.p99_ms;
        let (Some(ours), Some(naive)) = (
            mean("sensor-stats", name, &per_cpu),
            mean("naive", name, &per_cpu),
        ) else {
            continue;
        };
        if !header {
            println!(
                "\n| workload (memory store) | sensor-stats per CPU-s | naive per CPU-s | ratio | p99 ms sensor-stats / naive |"
            );
            println!("|---|---|---|---|---|");
            header = true;
        }
        println!(
            "| {name} | {ours:.0} | {naive:.0} | {:.2}x | {:.2} / {:.2} |",
            ours / naive,
            mean("sensor-stats", name, &p99).unwrap_or(0.0),
            mean("naive", name, &p99).unwrap_or(0.0)
        );
    }
}
