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
pub const REJECTION_REASONS: [&str; 13] = [
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

/// A route as a label value: the matched template, or `unmatched`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteLabel {
    /// `/data`.
    Data,
    /// `/statistics/{sensor}`.
    Statistics,
    /// `/healthz`.
    Healthz,
    /// `/livez`.
    Livez,
    /// `/metrics`.
    Metrics,
    /// No route matched (404).
    Unmatched,
}

impl RouteLabel {
    /// Every route, in index order.
    pub const ALL: [Self; 6] = [
        Self::Data,
        Self::Statistics,
        Self::Healthz,
        Self::Livez,
        Self::Metrics,
        Self::Unmatched,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Data => "/data",
            Self::Statistics => "/statistics/{sensor}",
            Self::Healthz => "/healthz",
            Self::Livez => "/livez",
            Self::Metrics => "/metrics",
            Self::Unmatched => "unmatched",
        }
    }
}

/// An HTTP method as a label value; `other` for methods we do not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodLabel {
    /// GET.
    Get,
    /// POST.
    Post,
    /// DELETE.
    Delete,
    /// HEAD.
    Head,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
    /// OPTIONS.
    Options,
    /// Anything else.
    Other,
}

impl MethodLabel {
    /// Every method label, in index order.
    pub const ALL: [Self; 8] = [
        Self::Get,
        Self::Post,
        Self::Delete,
        Self::Head,
        Self::Put,
        Self::Patch,
        Self::Options,
        Self::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Delete => "DELETE",
            Self::Head => "HEAD",
            Self::Put => "PUT",
            Self::Patch => "PATCH",
            Self::Options => "OPTIONS",
            Self::Other => "other",
        }
    }
}

/// The statuses the service answers with, each with a request counter registered on
/// first use and kept in a slot; other statuses go through a map.
const STATUSES: [u16; 12] = [200, 204, 400, 404, 405, 408, 409, 413, 415, 422, 500, 503];

fn status_slot(status: u16) -> Option<usize> {
    STATUSES.iter().position(|&s| s == status)
}

fn http_index(route: RouteLabel, method: MethodLabel) -> usize {
    route as usize * MethodLabel::ALL.len() + method as usize
}

const HTTP_SERIES: usize = RouteLabel::ALL.len() * MethodLabel::ALL.len();

/// The latency histogram of one (route, method): a count per bucket and the sum, in
/// atomics. A request adds to two of them; nothing is buffered between scrapes (the
/// exporter's histograms keep every sample, with a timestamp, until the next upkeep).
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
    /// Requests in flight, counted with plain atomics on the hot path and copied into the
    /// gauge when rendered.
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

        let plain = |name: &'static str| Key::from_static_name(name);
        Self {
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
    /// The counter of each (route, method, status) is registered once and kept in a slot,
    /// and the latency goes into this module's own histogram: a request costs an index
    /// computation and three atomic additions, no map lookup and no clock read.
    pub fn http_request(&self, route: RouteLabel, method: MethodLabel, status: u16, elapsed: Duration) {
        let series = http_index(route, method);
        self.latency[series].record(elapsed);
        match status_slot(status) {
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

    fn register_requests(&self, route: RouteLabel, method: MethodLabel, status: u16) -> Counter {
        let status = SharedString::from(itoa::Buffer::new().format(status).to_owned());
        let key = Key::from_parts(
            HTTP_REQUESTS,
            vec![
                Label::from_static_parts(LABEL_ROUTE, route.as_str()),
                Label::from_static_parts(LABEL_METHOD, method.as_str()),
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

    /// The in-flight counter itself, for callers that count without a guard (the HTTP
    /// service counts each request up and down exactly once).
    pub fn in_flight_counter(&self) -> Arc<AtomicI64> {
        Arc::clone(&self.in_flight_count)
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
        for route in RouteLabel::ALL {
            for method in MethodLabel::ALL {
                let labels = format!(
                    "{LABEL_ROUTE}=\"{}\",{LABEL_METHOD}=\"{}\"",
                    route.as_str(),
                    method.as_str()
                );
                self.latency[http_index(route, method)].render(&labels, out);
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

fn describe(r: &PrometheusRecorder) {
    let items: [(&'static str, Unit, &'static str); 14] = [
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
            "Requests carried by one group-commit flush to the shared store.",
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
    ];
    for (name, unit, help) in items {
        let key = name.into();
        match name {
            BODY_BYTES | STORE_DURATION | FLUSH_REQUESTS => {
                r.describe_histogram(key, Some(unit), help.into())
            }
            HTTP_IN_FLIGHT | SENSORS | BUILD_INFO | STORE_UP => {
                r.describe_gauge(key, Some(unit), help.into())
            }
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
        m.http_request(RouteLabel::Data, MethodLabel::Post, 204, Duration::from_millis(3));
        m.http_request(
            RouteLabel::Data,
            MethodLabel::Post,
            204,
            Duration::from_micros(70),
        );
        m.http_request(
            RouteLabel::Data,
            MethodLabel::Post,
            299,
            Duration::from_micros(70),
        );
        m.rejected("malformed_json");
        m.batch_accepted(10);
        let text = m.render(Some(7));
        assert!(text.contains("# HELP sensor_stats_http_requests_total"), "{text}");
        assert!(
            text.contains(r#"sensor_stats_http_requests_total{route="/data",method="POST",status="204"} 2"#)
        );
        assert!(
            text.contains(r#"sensor_stats_http_requests_total{route="/data",method="POST",status="299"} 1"#)
        );
        for line in [
            "# TYPE sensor_stats_http_request_duration_seconds histogram",
            r#"sensor_stats_http_request_duration_seconds_bucket{route="/data",method="POST",le="0.0001"} 2"#,
            r#"sensor_stats_http_request_duration_seconds_bucket{route="/data",method="POST",le="0.0025"} 2"#,
            r#"sensor_stats_http_request_duration_seconds_bucket{route="/data",method="POST",le="0.005"} 3"#,
            r#"sensor_stats_http_request_duration_seconds_bucket{route="/data",method="POST",le="10"} 3"#,
            r#"sensor_stats_http_request_duration_seconds_bucket{route="/data",method="POST",le="+Inf"} 3"#,
            r#"sensor_stats_http_request_duration_seconds_sum{route="/data",method="POST"} 0.00314"#,
            r#"sensor_stats_http_request_duration_seconds_count{route="/data",method="POST"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
        assert!(
            !text.contains(r#"method="GET",le="#),
            "no series before the first request"
        );
        assert!(text.contains(r#"sensor_stats_requests_rejected_total{reason="malformed_json"} 1"#));
        assert!(text.contains("sensor_stats_ingest_measurements_total 10"));
        assert!(text.contains("sensor_stats_sensors_tracked 7"));
        assert!(text.contains("sensor_stats_build_info{version="));
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
