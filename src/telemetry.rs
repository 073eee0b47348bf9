//! Logging: builds the `tracing` subscriber (text or JSON, level from config, `RUST_LOG`
//! wins) with an injectable writer so tests can silence it.

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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
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
