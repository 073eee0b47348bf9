//! Every metric of the service: names, label keys, bucket lists and HELP texts, the
//! Prometheus recorder that holds them, and the rendering of `/metrics`. No axum here.
//!
//! Each [`Metrics`] owns its own recorder instead of installing a global one: several
//! apps in one process (the tests) keep separate numbers, and handlers increment
//! pre-registered handles instead of looking a name up on every call.

use std::{
    fmt::Write as _,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use dashmap::DashMap;
use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder as _, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Prefix of every metric name of ours.
pub const PREFIX: &str = "sensor_stats_";

/// Counter: HTTP requests by route, method and status code.
pub const HTTP_REQUESTS: &str = "sensor_stats_http_requests_total";
/// Histogram: HTTP request latency in seconds by route and method.
pub const HTTP_DURATION: &str = "sensor_stats_http_request_duration_seconds";
/// HELP text of [`HTTP_DURATION`] (rendered by this module, not the exporter).
const HTTP_DURATION_HELP: &str = "HTTP request latency by matched route and method.";
/// Gauge: requests being served right now.
pub const HTTP_IN_FLIGHT: &str = "sensor_stats_http_requests_in_flight";
/// Counter: requests answered with a 4xx error, by reason.
pub const REJECTED: &str = "sensor_stats_requests_rejected_total";
/// Counter: measurements accepted.
pub const MEASUREMENTS: &str = "sensor_stats_ingest_measurements_total";
/// Counter: batches (POST /data requests) accepted.
pub const BATCHES: &str = "sensor_stats_ingest_batches_total";
/// Histogram: size of accepted and rejected request bodies after decompression, in bytes.
pub const BODY_BYTES: &str = "sensor_stats_ingest_body_bytes";
/// Counter: DELETE /statistics requests served.
pub const DELETES: &str = "sensor_stats_sensor_deletes_total";
/// Gauge: sensors the store tracks.
pub const SENSORS: &str = "sensor_stats_sensors_tracked";
/// Gauge (always 1): version and git revision of the running binary.
pub const BUILD_INFO: &str = "sensor_stats_build_info";
/// Histogram: latency of calls to a networked store (Redis) in seconds, by operation.
pub const STORE_DURATION: &str = "sensor_stats_store_call_duration_seconds";
/// Counter: failed store calls, by operation and kind (timeout, unavailable, server).
pub const STORE_ERRORS: &str = "sensor_stats_store_errors_total";
/// Histogram: how many requests one group-commit flush to the store carried.
pub const FLUSH_REQUESTS: &str = "sensor_stats_store_flush_requests";
/// Gauge: 1 while the store answers, 0 while it cannot be reached (memory: always 1).
pub const STORE_UP: &str = "sensor_stats_store_up";
/// Counter: `POST /data` retries answered from the idempotency record, not applied again.
pub const IDEMPOTENT_REPLAYS: &str = "sensor_stats_idempotent_replays_total";
/// Histogram: latency of one fsync of the write-ahead log (`--data-dir`), in seconds.
pub const WAL_FSYNC_DURATION: &str = "sensor_stats_wal_fsync_duration_seconds";
/// Counter: bytes written to the write-ahead log.
pub const WAL_BYTES: &str = "sensor_stats_wal_written_bytes_total";
/// Counter: log writes or fsyncs that failed (their requests were answered 503).
pub const WAL_ERRORS: &str = "sensor_stats_wal_write_errors_total";
/// Histogram: time to write one snapshot of the store, in seconds.
pub const SNAPSHOT_DURATION: &str = "sensor_stats_snapshot_duration_seconds";
/// Gauge: size of the newest snapshot, in bytes.
pub const SNAPSHOT_BYTES: &str = "sensor_stats_snapshot_size_bytes";
/// Counter: snapshots that could not be written.
pub const SNAPSHOT_FAILURES: &str = "sensor_stats_snapshot_failures_total";
/// Gauge: how long reading the data dir back took at start-up, in seconds.
pub const REPLAY_DURATION: &str = "sensor_stats_replay_duration_seconds";
/// Counter: requests refused by access control (401, 403), by reason ([`AuthFailure`]).
pub const AUTH_FAILURES: &str = "sensor_stats_auth_failures_total";
/// Counter: requests refused at once with 503 because `--max-in-flight` were in flight.
pub const SHED: &str = "sensor_stats_requests_shed_total";
/// Counter: batches refused whole (507) because they would pass `--max-sensors`.
pub const SENSOR_CAP_REFUSALS: &str = "sensor_stats_ingest_sensor_cap_refusals_total";
/// Gauge: TCP connections open (served, including TLS handshakes in progress).
pub const CONNECTIONS_OPEN: &str = "sensor_stats_connections_open";
/// Counter: connections accepted and closed at once because `--max-connections` were open.
pub const CONNECTIONS_REFUSED: &str = "sensor_stats_connections_refused_total";
/// Counter: keep-alive connections closed after `--idle-timeout` without traffic.
pub const CONNECTIONS_IDLE_CLOSED: &str = "sensor_stats_connections_idle_closed_total";
/// Counter: TLS connections that never got to HTTP, by reason ([`TlsFailure`]).
pub const TLS_HANDSHAKE_FAILURES: &str = "sensor_stats_tls_handshake_failures_total";
/// Counter: reloads of files (API keys, TLS certificate) by what and result (`ok`, `error`).
pub const RELOADS: &str = "sensor_stats_reloads_total";
/// Gauge: API keys in force (0 when access control is off).
pub const API_KEYS: &str = "sensor_stats_api_keys";

/// Label key: matched route template (`/statistics/{sensor}`) or `unmatched`.
pub const LABEL_ROUTE: &str = "route";
/// Label key: HTTP method, or `other` for methods we do not serve.
pub const LABEL_METHOD: &str = "method";
/// Label key: HTTP status code.
pub const LABEL_STATUS: &str = "status";
/// Label key: bounded rejection reason.
pub const LABEL_REASON: &str = "reason";
/// Label key: store operation ([`StoreOp`]).
pub const LABEL_OP: &str = "op";
/// Label key: kind of store failure.
pub const LABEL_KIND: &str = "kind";
/// Label key: what was reloaded (`api_keys`, `tls`).
pub const LABEL_WHAT: &str = "what";
/// Label key: outcome (`ok`, `error`).
pub const LABEL_RESULT: &str = "result";

/// Why access control refused a request, as bounded label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header (401).
    Missing,
    /// An `Authorization` header that is not `Bearer <token>` (401).
    Malformed,
    /// A token that no key has (401).
    Unknown,
    /// A known key without the route's scope (403).
    Forbidden,
}

impl AuthFailure {
    /// Every reason, in label order.
    pub const ALL: [Self; 4] = [Self::Missing, Self::Malformed, Self::Unknown, Self::Forbidden];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Forbidden => "forbidden",
        }
    }
}

/// Why a connection to the TLS port never got to HTTP, as bounded label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The client spoke plain HTTP (answered with a 400 that says to use https).
    PlainHttp,
    /// The handshake failed (no common version or cipher, an untrusted certificate...).
    Handshake,
    /// The handshake did not finish within `--header-read-timeout`.
    Timeout,
}

impl TlsFailure {
    /// Every reason, in label order.
    pub const ALL: [Self; 3] = [Self::PlainHttp, Self::Handshake, Self::Timeout];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::PlainHttp => "plain_http",
            Self::Handshake => "handshake",
            Self::Timeout => "timeout",
        }
    }
}

/// What can be reloaded, as label values.
pub const RELOAD_WHATS: [&str; 2] = ["api_keys", "tls"];

/// The calls a networked store makes, as bounded label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// One group-commit flush of batches (and their idempotency records).
    Apply,
    /// Read one sensor.
    Get,
    /// Forget one sensor.
    Delete,
    /// Claim an idempotency key when a request starts.
    Claim,
    /// Give up a claim after a failed request.
    Release,
    /// Readiness probe.
    Ping,
    /// Count tracked sensors for the gauge.
    Count,
}

impl StoreOp {
    /// Every operation, in label order.
    pub const ALL: [Self; 7] = [
        Self::Apply,
        Self::Get,
        Self::Delete,
        Self::Claim,
        Self::Release,
        Self::Ping,
        Self::Count,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Apply => "apply",
            Self::Get => "get",
            Self::Delete => "delete",
            Self::Claim => "claim",
            Self::Release => "release",
            Self::Ping => "ping",
            Self::Count => "count",
        }
    }
}

/// Every kind of store failure, as label values.
pub const STORE_ERROR_KINDS: [&str; 3] = ["timeout", "unavailable", "server"];

/// Every rejection reason the HTTP layer can report.
pub const REJECTION_REASONS: [&str; 15] = [
    "unauthorized",
    "forbidden",
    "malformed_json",
    "invalid_idempotency_key",
    "idempotency_key_in_use",
    "idempotency_key_reused",
    "invalid_measurement",
    "invalid_sensor_id",
    "unsupported_media_type",
    "too_large",
    "unreadable_body",
    "not_found",
    "method_not_allowed",
    "timeout",
    "other",
];

/// Latency buckets in seconds: 100 µs to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Body size buckets in bytes: 64 B to 16 MiB.
pub const BODY_BUCKETS: &[f64] = &[
    64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];

/// Snapshot duration buckets in seconds: 1 ms to 2 min.
pub const SNAPSHOT_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Requests per flush buckets: 1 to 1024.
pub const FLUSH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0];

/// How often histogram samples are folded into buckets when nobody scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// [`DURATION_BUCKETS`] in nanoseconds, for the HTTP latency histogram (tested equal).
const DURATION_BUCKETS_NANOS: [u64; 15] = [
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    10_000_000_000,
];

/// The route label values of HTTP metrics (the matched templates, `other`, `unmatched`),
/// in slot order.
pub const ROUTE_LABELS: [&str; 10] = [
    "/data",
    "/statistics/{sensor}",
    "/healthz",
    "/livez",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/{file}",
    "other",
    "unmatched",
];

/// The method label values of HTTP metrics, in slot order.
pub const METHOD_LABELS: [&str; 8] = [
    "GET", "POST", "DELETE", "HEAD", "PUT", "PATCH", "OPTIONS", "other",
];

/// The statuses the service answers with, each with a request counter registered on
/// first use and kept in a slot; other statuses go through a map.
const STATUSES: [u16; 15] = [
    200, 204, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 500, 503, 507,
];

const HTTP_SERIES: usize = ROUTE_LABELS.len() * METHOD_LABELS.len();

/// The slot of a (route, method) label pair; a value outside the lists counts as
/// `other`.
fn http_series(route: &str, method: &str) -> usize {
    let slot =
        |labels: &[&str], value: &str, other: usize| labels.iter().position(|l| *l == value).unwrap_or(other);
    slot(&ROUTE_LABELS, route, 8) * METHOD_LABELS.len()
        + slot(&METHOD_LABELS, method, METHOD_LABELS.len() - 1)
}

/// The latency histogram of one (route, method): a count per bucket and the sum, in
/// atomics. A request adds to two of them; nothing is buffered between scrapes (the
/// exporter's histograms keep every sample until the next upkeep).
#[derive(Default)]
struct Latency {
    /// Per bucket of [`DURATION_BUCKETS_NANOS`], then the overflow (`+Inf` only).
    buckets: [AtomicU64; DURATION_BUCKETS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Latency {
    fn record(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let slot = DURATION_BUCKETS_NANOS
            .iter()
            .position(|&bound| nanos <= bound)
            .unwrap_or(DURATION_BUCKETS_NANOS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Appends this histogram's lines (cumulative buckets, sum, count) to `out`; nothing
    /// before its first request, as for series the exporter registers on first use.
    fn render(&self, labels: &str, out: &mut String) {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return;
        }
        let mut cumulative = 0;
        for (bound, count) in DURATION_BUCKETS.iter().zip(&counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{HTTP_DURATION}_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(out, "{HTTP_DURATION}_bucket{{{labels},le=\"+Inf\"}} {total}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{HTTP_DURATION}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{HTTP_DURATION}_count{{{labels}}} {total}");
    }
}

/// The metrics of one app: its recorder and the handles the hot path uses.
pub struct Metrics {
    recorder: PrometheusRecorder,
    /// Request counters per (route, method, status slot), registered on first use.
    requests: Box<[OnceLock<Counter>]>,
    /// Request counters for statuses outside [`STATUSES`].
    other_requests: DashMap<(usize, u16), Counter, foldhash::fast::RandomState>,
    /// Latency per (route, method).
    latency: Box<[Latency]>,
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    in_flight: Gauge,
    /// Requests in flight, counted with a plain atomic on the hot path and copied into
    /// the gauge when rendered.
    in_flight_count: Arc<AtomicI64>,
    measurements: Counter,
    batches: Counter,
    body_bytes: Histogram,
    deletes: Counter,
    sensors: Gauge,
    store_duration: [Histogram; StoreOp::ALL.len()],
    flush_requests: Histogram,
    store_up: Gauge,
    replays: Counter,
    wal_fsync: Histogram,
    wal_bytes: Counter,
    wal_errors: Counter,
    snapshot_duration: Histogram,
    snapshot_bytes: Gauge,
    snapshot_failures: Counter,
    replay_duration: Gauge,
    auth_failures: [Counter; AuthFailure::ALL.len()],
    shed: Counter,
    sensor_cap_refusals: Counter,
    connections_open: Gauge,
    connections_refused: Counter,
    idle_closed: Counter,
    tls_failures: [Counter; TlsFailure::ALL.len()],
    api_keys: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Metrics {
    /// A fresh recorder with every metric described and the build info set.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(BODY_BYTES.into()), BODY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(STORE_DURATION.into()), DURATION_BUCKETS))
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(FLUSH_REQUESTS.into()), FLUSH_BUCKETS))
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Full(WAL_FSYNC_DURATION.into()), DURATION_BUCKETS)
            })
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(SNAPSHOT_DURATION.into()), SNAPSHOT_BUCKETS))
            .expect("bucket lists are non-empty constants")
            .build_recorder();
        let handle = recorder.handle();
        describe(&recorder);
        let process = metrics_process::Collector::default();
        metrics::with_local_recorder(&recorder, || process.describe());

        let build_info = recorder.register_gauge(
            &Key::from_parts(
                BUILD_INFO,
                vec![
                    Label::new("version", env!("CARGO_PKG_VERSION")),
                    Label::new("revision", env!("SENSOR_STATS_GIT_REVISION")),
                ],
            ),
            &METADATA,
        );
        build_info.set(1.0);

        // Series a dashboard divides by or rates over exist from the start at 0, so the
        // first occurrence after start-up counts in rate() and "no data" means a problem.
        for reason in REJECTION_REASONS {
            let key = Key::from_parts(REJECTED, vec![Label::from_static_parts(LABEL_REASON, reason)]);
            recorder.register_counter(&key, &METADATA).absolute(0);
        }
        for op in StoreOp::ALL {
            for kind in STORE_ERROR_KINDS {
                recorder
                    .register_counter(&store_error_key(op, kind), &METADATA)
                    .absolute(0);
            }
        }
        let store_duration = StoreOp::ALL.map(|op| {
            let key = Key::from_parts(
                STORE_DURATION,
                vec![Label::from_static_parts(LABEL_OP, op.label())],
            );
            recorder.register_histogram(&key, &METADATA)
        });
        let store_up = recorder.register_gauge(&Key::from_static_name(STORE_UP), &METADATA);
        store_up.set(1.0);
        let replays = recorder.register_counter(&Key::from_static_name(IDEMPOTENT_REPLAYS), &METADATA);
        replays.absolute(0);

        let labelled = |name: &'static str, key: &'static str, value: &'static str| {
            let counter = recorder.register_counter(
                &Key::from_parts(name, vec![Label::from_static_parts(key, value)]),
                &METADATA,
            );
            counter.absolute(0);
            counter
        };
        let auth_failures = AuthFailure::ALL.map(|r| labelled(AUTH_FAILURES, LABEL_REASON, r.label()));
        let tls_failures = TlsFailure::ALL.map(|r| labelled(TLS_HANDSHAKE_FAILURES, LABEL_REASON, r.label()));
        for what in RELOAD_WHATS {
            for result in ["ok", "error"] {
                recorder
                    .register_counter(&reload_key(what, result), &METADATA)
                    .absolute(0);
            }
        }
        let plain = |name: &'static str| Key::from_static_name(name);
        let zero = |name: &'static str| {
            let counter = recorder.register_counter(&plain(name), &METADATA);
            counter.absolute(0);
            counter
        };
        let zero_gauge = |name: &'static str| {
            let gauge = recorder.register_gauge(&plain(name), &METADATA);
            gauge.set(0.0);
            gauge
        };
        let (wal_bytes, wal_errors, snapshot_failures) =
            (zero(WAL_BYTES), zero(WAL_ERRORS), zero(SNAPSHOT_FAILURES));
        Self {
            auth_failures,
            tls_failures,
            shed: zero(SHED),
            sensor_cap_refusals: zero(SENSOR_CAP_REFUSALS),
            connections_refused: zero(CONNECTIONS_REFUSED),
            idle_closed: zero(CONNECTIONS_IDLE_CLOSED),
            connections_open: zero_gauge(CONNECTIONS_OPEN),
            api_keys: zero_gauge(API_KEYS),
            wal_fsync: recorder.register_histogram(&plain(WAL_FSYNC_DURATION), &METADATA),
            wal_bytes,
            wal_errors,
            snapshot_duration: recorder.register_histogram(&plain(SNAPSHOT_DURATION), &METADATA),
            snapshot_bytes: recorder.register_gauge(&plain(SNAPSHOT_BYTES), &METADATA),
            snapshot_failures,
            replay_duration: recorder.register_gauge(&plain(REPLAY_DURATION), &METADATA),
            in_flight: recorder.register_gauge(&plain(HTTP_IN_FLIGHT), &METADATA),
            in_flight_count: Arc::default(),
            measurements: recorder.register_counter(&plain(MEASUREMENTS), &METADATA),
            batches: recorder.register_counter(&plain(BATCHES), &METADATA),
            body_bytes: recorder.register_histogram(&plain(BODY_BYTES), &METADATA),
            deletes: recorder.register_counter(&plain(DELETES), &METADATA),
            sensors: recorder.register_gauge(&plain(SENSORS), &METADATA),
            flush_requests: recorder.register_histogram(&plain(FLUSH_REQUESTS), &METADATA),
            store_duration,
            store_up,
            replays,
            requests: (0..HTTP_SERIES * STATUSES.len())
                .map(|_| OnceLock::new())
                .collect(),
            other_requests: DashMap::default(),
            latency: (0..HTTP_SERIES).map(|_| Latency::default()).collect(),
            recorder,
            handle,
            process,
        }
    }

    /// Records one finished HTTP request.
    ///
    /// The counter of each (route, method, status) is registered once and kept in a
    /// slot, and the latency goes into this module's own histogram: a request costs a
    /// slot computation and three atomic additions, no map lookup.
    pub fn http_request(&self, route: &'static str, method: &'static str, status: u16, elapsed: Duration) {
        let series = http_series(route, method);
        self.latency[series].record(elapsed);
        match STATUSES.iter().position(|&s| s == status) {
            Some(slot) => self.requests[series * STATUSES.len() + slot]
                .get_or_init(|| self.register_requests(route, method, status))
                .increment(1),
            None => self
                .other_requests
                .entry((series, status))
                .or_insert_with(|| self.register_requests(route, method, status))
                .increment(1),
        }
    }

    fn register_requests(&self, route: &'static str, method: &'static str, status: u16) -> Counter {
        let status = SharedString::from(itoa::Buffer::new().format(status).to_owned());
        let key = Key::from_parts(
            HTTP_REQUESTS,
            vec![
                Label::from_static_parts(LABEL_ROUTE, route),
                Label::from_static_parts(LABEL_METHOD, method),
                Label::new(LABEL_STATUS, status),
            ],
        );
        self.recorder.register_counter(&key, &METADATA)
    }

    /// Counts a request as in flight until the returned guard is dropped, which also
    /// happens when the request is cancelled (client gone, drain deadline), so the gauge
    /// cannot drift upwards.
    pub fn in_flight(&self) -> InFlight {
        self.in_flight_count.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(&self.in_flight_count))
    }

    /// Counts a request rejected with a 4xx for a bounded `reason`.
    pub fn rejected(&self, reason: &'static str) {
        let key = Key::from_parts(REJECTED, vec![Label::from_static_parts(LABEL_REASON, reason)]);
        self.recorder.register_counter(&key, &METADATA).increment(1);
    }

    /// Counts an accepted batch of `measurements`.
    pub fn batch_accepted(&self, measurements: u64) {
        self.batches.increment(1);
        self.measurements.increment(measurements);
    }

    /// Records the decoded size of a request body.
    pub fn body_bytes(&self, bytes: usize) {
        self.body_bytes.record(bytes as f64);
    }

    /// Counts a served DELETE.
    pub fn deleted(&self) {
        self.deletes.increment(1);
    }

    /// Records how long one store call took.
    pub fn store_call(&self, op: StoreOp, elapsed: Duration) {
        self.store_duration[op as usize].record(elapsed.as_secs_f64());
    }

    /// Counts a failed store call of `kind` (one of [`STORE_ERROR_KINDS`]).
    pub fn store_error(&self, op: StoreOp, kind: &'static str) {
        self.recorder
            .register_counter(&store_error_key(op, kind), &METADATA)
            .increment(1);
    }

    /// Records how many requests one group-commit flush carried.
    pub fn flush(&self, requests: usize) {
        self.flush_requests.record(requests as f64);
    }

    /// Sets whether the store can be reached.
    pub fn store_up(&self, up: bool) {
        self.store_up.set(if up { 1.0 } else { 0.0 });
    }

    /// Counts a retry answered from its idempotency record.
    pub fn idempotent_replay(&self) {
        self.replays.increment(1);
    }

    /// Records one fsync of the write-ahead log.
    pub fn wal_fsync(&self, elapsed: Duration) {
        self.wal_fsync.record(elapsed.as_secs_f64());
    }

    /// Counts bytes written to the write-ahead log.
    pub fn wal_bytes(&self, bytes: usize) {
        self.wal_bytes.increment(bytes as u64);
    }

    /// Counts a failed log write or fsync.
    pub fn durable_write_error(&self) {
        self.wal_errors.increment(1);
    }

    /// Records a snapshot written in `elapsed`, `bytes` long.
    pub fn snapshot_written(&self, elapsed: Duration, bytes: u64) {
        self.snapshot_duration.record(elapsed.as_secs_f64());
        self.snapshot_bytes.set(bytes as f64);
    }

    /// Counts a snapshot that could not be written.
    pub fn snapshot_failed(&self) {
        self.snapshot_failures.increment(1);
    }

    /// Records how long reading the data dir back took.
    pub fn replay(&self, elapsed: Duration) {
        self.replay_duration.set(elapsed.as_secs_f64());
    }

    /// Counts a request refused by access control.
    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures[reason as usize].increment(1);
    }

    /// Counts a request refused because too many were in flight.
    pub fn shed(&self) {
        self.shed.increment(1);
    }

    /// Counts a batch refused because it would pass the sensor cap.
    pub fn sensor_cap_refused(&self) {
        self.sensor_cap_refusals.increment(1);
    }

    /// Counts a connection as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.connections_open.increment(1.0);
        OpenConnection(self.connections_open.clone())
    }

    /// Counts a connection closed at once because too many were open.
    pub fn connection_refused(&self) {
        self.connections_refused.increment(1);
    }

    /// Counts a keep-alive connection closed for being idle.
    pub fn connection_idle_closed(&self) {
        self.idle_closed.increment(1);
    }

    /// Counts a TLS connection that never got to HTTP.
    pub fn tls_failure(&self, reason: TlsFailure) {
        self.tls_failures[reason as usize].increment(1);
    }

    /// Counts a reload of `what` (one of [`RELOAD_WHATS`]) that succeeded or failed.
    pub fn reload(&self, what: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.recorder
            .register_counter(&reload_key(what, result), &METADATA)
            .increment(1);
    }

    /// Sets how many API keys are in force.
    pub fn api_keys(&self, keys: usize) {
        self.api_keys.set(keys as f64);
    }

    /// Folds pending histogram samples into buckets; run every [`UPKEEP_INTERVAL`].
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text exposition, with gauges sampled now.
    /// `sensors_tracked` is `None` when the store cannot say right now; the gauge then
    /// keeps its last value.
    pub fn render(&self, sensors_tracked: Option<usize>) -> String {
        if let Some(n) = sensors_tracked {
            self.sensors.set(n as f64);
        }
        self.in_flight
            .set(self.in_flight_count.load(Ordering::Relaxed) as f64);
        metrics::with_local_recorder(&self.recorder, || self.process.collect());
        let mut text = self.handle.render();
        self.render_latency(&mut text);
        text
    }

    fn render_latency(&self, out: &mut String) {
        let _ = writeln!(out, "# HELP {HTTP_DURATION} {HTTP_DURATION_HELP}");
        let _ = writeln!(out, "# TYPE {HTTP_DURATION} histogram");
        for route in ROUTE_LABELS {
            for method in METHOD_LABELS {
                let labels = format!("{LABEL_ROUTE}=\"{route}\",{LABEL_METHOD}=\"{method}\"");
                self.latency[http_series(route, method)].render(&labels, out);
            }
        }
    }
}

/// Holds one request in the in-flight gauge; see [`Metrics::in_flight`].
#[must_use = "the request stops counting as in flight when this is dropped"]
pub struct InFlight(Arc<AtomicI64>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Holds one connection in the open-connections gauge; see [`Metrics::connection_opened`].
#[must_use = "the connection stops counting as open when this is dropped"]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn store_error_key(op: StoreOp, kind: &'static str) -> Key {
    Key::from_parts(
        STORE_ERRORS,
        vec![
            Label::from_static_parts(LABEL_OP, op.label()),
            Label::from_static_parts(LABEL_KIND, kind),
        ],
    )
}

fn reload_key(what: &'static str, result: &'static str) -> Key {
    Key::from_parts(
        RELOADS,
        vec![
            Label::from_static_parts(LABEL_WHAT, what),
            Label::from_static_parts(LABEL_RESULT, result),
        ],
    )
}

fn describe(r: &PrometheusRecorder) {
    let items: [(&'static str, Unit, &'static str); 30] = [
        (
            HTTP_REQUESTS,
            Unit::Count,
            "HTTP requests by matched route, method and status code.",
        ),
        (HTTP_IN_FLIGHT, Unit::Count, "HTTP requests being served."),
        (
            REJECTED,
            Unit::Count,
            "Requests answered with a 4xx error, by reason.",
        ),
        (MEASUREMENTS, Unit::Count, "Measurements accepted by POST /data."),
        (BATCHES, Unit::Count, "Batches (POST /data requests) accepted."),
        (
            BODY_BYTES,
            Unit::Bytes,
            "Size of POST /data bodies after decompression, accepted or not.",
        ),
        (
            DELETES,
            Unit::Count,
            "DELETE /statistics/{sensor} requests served.",
        ),
        (SENSORS, Unit::Count, "Sensors with statistics in the store."),
        (
            BUILD_INFO,
            Unit::Count,
            "Always 1; labels carry the version and git revision.",
        ),
        (
            STORE_DURATION,
            Unit::Seconds,
            "Latency of calls to the shared store (Redis), by operation.",
        ),
        (
            STORE_ERRORS,
            Unit::Count,
            "Failed calls to the shared store, by operation and kind.",
        ),
        (
            FLUSH_REQUESTS,
            Unit::Count,
            "Requests carried by one group-commit flush to the store (a Redis script call, or \
             one fsync of the durable log: a group commit with --fsync always, the writes of \
             one interval with --fsync interval).",
        ),
        (
            WAL_FSYNC_DURATION,
            Unit::Seconds,
            "Latency of one fsync of the durable store's write-ahead log.",
        ),
        (
            WAL_BYTES,
            Unit::Bytes,
            "Bytes written to the write-ahead log (with --fsync interval, counted as the fsync \
             that covers them begins).",
        ),
        (
            WAL_ERRORS,
            Unit::Count,
            "Write-ahead log writes or fsyncs that failed; their requests were answered 503.",
        ),
        (
            SNAPSHOT_DURATION,
            Unit::Seconds,
            "Time to write one snapshot of the durable store.",
        ),
        (SNAPSHOT_BYTES, Unit::Bytes, "Size of the newest snapshot."),
        (
            SNAPSHOT_FAILURES,
            Unit::Count,
            "Snapshots that could not be written (the log keeps everything meanwhile).",
        ),
        (
            REPLAY_DURATION,
            Unit::Seconds,
            "Time taken at start-up to read the data dir back (snapshot and log).",
        ),
        (
            STORE_UP,
            Unit::Count,
            "1 while the store can be reached, 0 while it cannot.",
        ),
        (
            IDEMPOTENT_REPLAYS,
            Unit::Count,
            "POST /data retries answered from their Idempotency-Key record, not applied again.",
        ),
        (
            AUTH_FAILURES,
            Unit::Count,
            "Requests refused by access control: missing, malformed or unknown token (401), missing scope (403).",
        ),
        (
            SHED,
            Unit::Count,
            "Requests refused at once with 503 because --max-in-flight requests were in flight.",
        ),
        (
            SENSOR_CAP_REFUSALS,
            Unit::Count,
            "POST /data batches refused whole (507) because they would pass --max-sensors.",
        ),
        (CONNECTIONS_OPEN, Unit::Count, "TCP connections open."),
        (
            CONNECTIONS_REFUSED,
            Unit::Count,
            "Connections closed at once because --max-connections were open.",
        ),
        (
            CONNECTIONS_IDLE_CLOSED,
            Unit::Count,
            "Keep-alive connections closed after --idle-timeout without traffic.",
        ),
        (
            TLS_HANDSHAKE_FAILURES,
            Unit::Count,
            "TLS connections that never got to HTTP, by reason.",
        ),
        (
            RELOADS,
            Unit::Count,
            "Reloads of the API keys file and the TLS certificate, by result; on error the previous version stays in force.",
        ),
        (
            API_KEYS,
            Unit::Count,
            "API keys in force (0: access control off).",
        ),
    ];
    for (name, unit, help) in items {
        let key = name.into();
        match name {
            BODY_BYTES | STORE_DURATION | FLUSH_REQUESTS | WAL_FSYNC_DURATION | SNAPSHOT_DURATION => {
                r.describe_histogram(key, Some(unit), help.into())
            }
            HTTP_IN_FLIGHT | SENSORS | BUILD_INFO | STORE_UP | CONNECTIONS_OPEN | API_KEYS
            | SNAPSHOT_BYTES | REPLAY_DURATION => r.describe_gauge(key, Some(unit), help.into()),
            _ => r.describe_counter(key, Some(unit), help.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_has_the_prefix_and_a_unit_suffix() {
        for name in [
            HTTP_REQUESTS,
            REJECTED,
            MEASUREMENTS,
            BATCHES,
            DELETES,
            STORE_ERRORS,
            IDEMPOTENT_REPLAYS,
            AUTH_FAILURES,
            SHED,
            SENSOR_CAP_REFUSALS,
            CONNECTIONS_REFUSED,
            CONNECTIONS_IDLE_CLOSED,
            TLS_HANDSHAKE_FAILURES,
            RELOADS,
            WAL_BYTES,
            WAL_ERRORS,
            SNAPSHOT_FAILURES,
        ] {
            assert!(name.starts_with(PREFIX) && name.ends_with("_total"), "{name}");
        }
        assert!(HTTP_DURATION.ends_with("_seconds") && BODY_BYTES.ends_with("_bytes"));
    }

    #[test]
    fn latency_buckets_in_nanoseconds_are_the_configured_ones() {
        let from_seconds: Vec<u64> = DURATION_BUCKETS
            .iter()
            .map(|b| (b * 1e9).round() as u64)
            .collect();
        assert_eq!(from_seconds, DURATION_BUCKETS_NANOS);
    }

    #[test]
    fn a_latency_on_a_bound_counts_in_that_bucket() {
        let latency = Latency::default();
        latency.record(Duration::from_micros(100));
        latency.record(Duration::from_nanos(100_001));
        latency.record(Duration::from_secs(11));
        let mut text = String::new();
        latency.render("a=\"b\"", &mut text);
        assert!(text.contains(r#"_bucket{a="b",le="0.0001"} 1"#), "{text}");
        assert!(text.contains(r#"_bucket{a="b",le="0.00025"} 2"#), "{text}");
        assert!(text.contains(r#"_bucket{a="b",le="10"} 2"#), "{text}");
        assert!(text.contains(r#"_bucket{a="b",le="+Inf"} 3"#), "{text}");
        assert!(text.contains(r#"_count{a="b"} 3"#), "{text}");
    }

    #[test]
    fn every_route_and_method_label_has_its_own_series() {
        let mut seen = std::collections::HashSet::new();
        for route in ROUTE_LABELS {
            for method in METHOD_LABELS {
                assert!(seen.insert(http_series(route, method)), "{route} {method}");
            }
        }
        assert_eq!(seen.len(), HTTP_SERIES);
        assert!(seen.iter().all(|&s| s < HTTP_SERIES));
        assert_eq!(http_series("/nope", "BREW"), http_series("other", "other"));
    }

    #[test]
    fn a_status_without_a_slot_is_counted_too() {
        let m = Metrics::new();
        m.http_request("/data", "POST", 299, Duration::from_micros(70));
        m.http_request("/data", "POST", 299, Duration::from_micros(70));
        let text = m.render(None);
        assert!(
            text.contains(r#"sensor_stats_http_requests_total{route="/data",method="POST",status="299"} 2"#),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE sensor_stats_http_request_duration_seconds histogram")
                .count(),
            1
        );
    }

    #[test]
    fn in_flight_falls_back_when_the_guard_is_dropped_early() {
        let m = Metrics::new();
        let first = m.in_flight();
        let second = m.in_flight();
        assert!(
            m.render(Some(0))
                .contains("sensor_stats_http_requests_in_flight 2")
        );
        drop(second); // a cancelled request drops its guard without finishing
        drop(first);
        assert!(
            m.render(Some(0))
                .contains("sensor_stats_http_requests_in_flight 0")
        );
    }

    #[test]
    fn render_shows_help_buckets_and_build_info() {
        let m = Metrics::new();
        m.http_request("/data", "POST", 204, Duration::from_millis(3));
        m.rejected("malformed_json");
        m.batch_accepted(10);
        let text = m.render(Some(7));
        assert!(text.contains("# HELP sensor_stats_http_requests_total"), "{text}");
        assert!(
            text.contains(r#"sensor_stats_http_requests_total{route="/data",method="POST",status="204"} 1"#)
        );
        assert!(text.contains(
            r#"sensor_stats_http_request_duration_seconds_bucket{route="/data",method="POST",le="0.005"} 1"#
        ));
        assert!(text.contains(r#"sensor_stats_requests_rejected_total{reason="malformed_json"} 1"#));
        assert!(text.contains("sensor_stats_ingest_measurements_total 10"));
        assert!(text.contains("sensor_stats_sensors_tracked 7"));
        assert!(text.contains("sensor_stats_build_info{version="));
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
