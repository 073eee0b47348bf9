//! `AppState`: the cheap-to-clone handles every handler may use, and the lifecycle flags
//! that `app` flips at start-up and shutdown.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{
    access::Keyring, config::Config, limits::Limit, metrics::Metrics, store::Store, telemetry::LogSampler,
};

/// Shared by all handlers; every field is a handle, cloning is a few reference counts.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Where statistics live.
    pub store: Store,
    /// Metric handles and the `/metrics` renderer.
    pub metrics: Arc<Metrics>,
    /// Readiness and draining flags.
    pub lifecycle: Arc<Lifecycle>,
    /// Largest accepted body, in bytes.
    pub body_limit: usize,
    /// Keeps rejected-request log lines to a trickle under a storm of bad requests.
    pub rejection_log: Arc<LogSampler>,
    /// The API keys in force; `None` when access control is off (`--api-keys-file` unset).
    pub keys: Option<Arc<Keyring>>,
    /// `/metrics` needs no token even with keys (`--metrics-public`).
    pub metrics_public: bool,
    /// Requests being served, up to `--max-in-flight`.
    pub in_flight_limit: Arc<Limit>,
}

/// At most one "request rejected" log line per this interval; the rest are counted.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(1);

impl AppState {
    /// State over `store`, recording into `metrics`, not yet ready; open (no API keys),
    /// with the default in-flight limit.
    pub fn new(store: Store, metrics: Arc<Metrics>, body_limit: usize) -> Self {
        Self {
            store,
            metrics,
            lifecycle: Arc::new(Lifecycle::default()),
            body_limit,
            rejection_log: Arc::new(LogSampler::new(REJECTION_LOG_INTERVAL)),
            keys: None,
            metrics_public: false,
            in_flight_limit: Arc::new(Limit::new(Config::default().max_in_flight())),
        }
    }

    /// Requires the API keys of `keys` (`public_metrics`: except on `/metrics`).
    #[must_use]
    pub fn with_keys(mut self, keys: Arc<Keyring>, public_metrics: bool) -> Self {
        self.metrics.api_keys(keys.len());
        self.keys = Some(keys);
        self.metrics_public = public_metrics;
        self
    }

    /// Serves at most `max` requests at once (see `--max-in-flight`).
    #[must_use]
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.in_flight_limit = Arc::new(Limit::new(max));
        self
    }
}

/// Where the process is in its life: starting (not ready), serving (ready), draining.
#[derive(Debug, Default)]
pub struct Lifecycle {
    ready: AtomicBool,
    draining: AtomicBool,
}

impl Lifecycle {
    /// Whether start-up is done and shutdown has not begun (the store's readiness is
    /// checked separately).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether shutdown has begun: responses then ask clients to close the connection.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Start-up is complete.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Shutdown has begun: not ready any more, and draining.
    pub fn start_draining(&self) {
        self.ready.store(false, Ordering::Release);
        self.draining.store(true, Ordering::Release);
    }
}
