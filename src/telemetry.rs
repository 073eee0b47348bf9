//! Logging: builds the `tracing` subscriber (text or JSON, level from config, `RUST_LOG`
//! wins) with an injectable writer so tests can silence it.

use std::{
    io::IsTerminal as _,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tracing_subscriber::{EnvFilter, fmt::MakeWriter};

use crate::config::LogFormat;

/// Installs the global subscriber writing to stdout.
///
/// # Errors
/// When `level` is not a valid filter or a subscriber is already installed.
pub fn init(level: &str, format: LogFormat) -> anyhow::Result<()> {
    init_with_writer(level, format, std::io::stdout)
}

/// Installs the global subscriber writing to `writer`. Call it once per process.
///
/// # Errors
/// When `level` is not a valid filter or a subscriber is already installed.
pub fn init_with_writer<W>(level: &str, format: LogFormat, writer: W) -> anyhow::Result<()>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(env)?,
        _ => EnvFilter::try_new(level)?,
    };
    // Colours only on a terminal: escape codes in files and container logs are noise, and
    // formatting them costs time on every request span.
    let ansi = std::io::stdout().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    }
    .map_err(|e| anyhow::anyhow!(e))
}

/// Lets one event through per interval and counts the ones it holds back, so a storm of
/// identical events (bad requests) costs a log line a second, not one each.
#[derive(Debug)]
pub struct LogSampler {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl LogSampler {
    /// A sampler letting one event through per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event should be logged, `n` being how many were held back
    /// since the last one; `None` when it should be dropped (and is counted).
    pub fn admit(&self) -> Option<u64> {
        let now = Instant::now();
        // try_lock: under contention another thread is deciding; count this one as held back.
        if let Ok(mut last) = self.last.try_lock()
            && last.is_none_or(|at| now.duration_since(at) >= self.interval)
        {
            *last = Some(now);
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_admits_one_event_per_interval_and_counts_the_rest() {
        let sampler = LogSampler::new(Duration::from_millis(50));
        assert_eq!(sampler.admit(), Some(0));
        assert_eq!(sampler.admit(), None);
        assert_eq!(sampler.admit(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(sampler.admit(), Some(2));
    }
}
