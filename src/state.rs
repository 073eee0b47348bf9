//! `AppState`: the cheap-to-clone handles every handler may use, and the lifecycle flags
//! that `app` flips at start-up and shutdown.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use crate::{metrics::Metrics, store::Store, telemetry::LogSampler};

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
    /// Longest time a `POST /data` may take, body upload included.
    pub request_timeout: Duration,
    /// Keeps rejected-request log lines to a trickle under a storm of bad requests.
    pub rejection_log: Arc<LogSampler>,
}

/// At most one "request rejected" log line per this interval; the rest are counted.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(1);

impl AppState {
    /// State over `store`, recording into `metrics`, not yet ready, with the default
    /// request timeout.
    pub fn new(store: Store, metrics: Arc<Metrics>, body_limit: usize) -> Self {
        Self {
            store,
            metrics,
            lifecycle: Arc::new(Lifecycle::default()),
            body_limit,
            request_timeout: crate::Config::default().request_timeout,
            rejection_log: Arc::new(LogSampler::new(REJECTION_LOG_INTERVAL)),
        }
    }

    /// The same state with another request timeout.
    pub fn with_request_timeout(mut self, request_timeout: Duration) -> Self {
        self.request_timeout = request_timeout;
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
