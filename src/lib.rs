//! sensor-stats: an HTTP service that ingests sensor measurements and answers per-sensor
//! statistics (count, mean, latest instant).
//!
//! # Layout
//!
//! Lowest layer first; no module imports from a layer above it.
//!
//! - [`domain`]: pure types: sensor ids, timestamps (parse and print), the folded batch,
//!   the summary a reader gets.
//! - [`ingest`]: request bytes to a validated, folded batch (a single-pass reader of the
//!   plain shape, simd-json for the rest), all or nothing.
//! - [`store`]: where statistics live, behind one `Store` handle: in memory, in memory and
//!   on disk (`--data-dir`: write-ahead log and snapshots), or in a shared Redis.
//! - [`http`]: routes, handlers, the JSON error type and the middleware stack;
//!   `http::service` is the hyper service of every connection, which answers the two hot
//!   requests without the router.
//! - [`app`]: binds the listener, serves connections, runs shutdown. The only place
//!   that wires modules together.
//! - Leaves anyone may use: [`config`] (flags and env), [`telemetry`] (logs),
//!   [`metrics`] (every metric name), [`shutdown`] (signals), [`state`] (handler state),
//!   [`limits`] (in-flight and connection ceilings), [`reload`] (SIGHUP and file
//!   changes).
//! - [`access`]: API keys: the keys file, the keyring requests are checked against,
//!   `sensor-stats keys new`. [`tls`]: the rustls configuration with a reloadable
//!   certificate. Neither knows HTTP; `http::access` applies them to routes.
//! - [`healthcheck`]: the `sensor-stats healthcheck` probe used by the container.
//! - [`workload`]: deterministic request bodies for benches and the load test.
//!
//! Everything but `domain`, `ingest` and `workload` sits behind the default `server`
//! feature, so the fuzz targets (`fuzz/`) build only the code they exercise.

#[cfg(feature = "server")]
pub mod access;
#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod config;
pub mod domain;
#[cfg(feature = "server")]
pub mod healthcheck;
#[cfg(feature = "server")]
pub mod http;
pub mod ingest;
#[cfg(feature = "server")]
pub mod limits;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod reload;
#[cfg(feature = "server")]
pub mod shutdown;
#[cfg(feature = "server")]
pub mod state;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod telemetry;
#[cfg(feature = "server")]
pub mod tls;
pub mod workload;

#[cfg(feature = "server")]
pub use app::App;
#[cfg(feature = "server")]
pub use config::Config;
