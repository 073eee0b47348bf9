//! `Config`: every setting of the server, read from flags with `SENSOR_STATS_*`
//! environment fallbacks (clap), with defaults that serve on 0.0.0.0:8080.

use std::{net::IpAddr, time::Duration};

/// Server settings. Each flag falls back to its environment variable, then its default.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "SENSOR_STATS_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free port).
    #[arg(long, env = "SENSOR_STATS_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Largest accepted request body in bytes, on the wire and after decompression.
    #[arg(long, env = "SENSOR_STATS_BODY_LIMIT", default_value_t = 16 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=1 << 32))]
    pub body_limit: u64,

    /// Log level or filter (e.g. `info`, `sensor_stats=debug`); RUST_LOG wins when set.
    #[arg(long, env = "SENSOR_STATS_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log format: `text` for terminals, `json` for log collectors.
    #[arg(long, env = "SENSOR_STATS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// After SIGTERM, keep serving (with /healthz answering 503) this long so load
    /// balancers stop routing here before the listener closes (e.g. `5s` in Kubernetes).
    #[arg(long, env = "SENSOR_STATS_SHUTDOWN_GRACE", default_value = "0s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// After the grace period, how long in-flight requests may take before their
    /// connections are closed.
    #[arg(long, env = "SENSOR_STATS_DRAIN_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Longest time a `POST /data` may take, body upload included; answered with 408.
    #[arg(long, env = "SENSOR_STATS_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// How long a client may take to send a request's headers, counted from the
    /// connection's first byte or from accepting it (slow or silent clients are closed).
    #[arg(long, env = "SENSOR_STATS_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    /// The documented defaults, ignoring the environment.
    fn default() -> Self {
        Self {
            host: IpAddr::from([0, 0, 0, 0]),
            port: 8080,
            body_limit: 16 * 1024 * 1024,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            shutdown_grace: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn flag_defaults_match_default_impl() {
        let parsed = Cli::try_parse_from(["sensor-stats"]).unwrap().config;
        let default = Config::default();
        // The environment of the test run may set SENSOR_STATS_*; compare only when clean.
        if std::env::vars().all(|(k, _)| !k.starts_with("SENSOR_STATS_")) {
            assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
        }
    }

    #[test]
    fn durations_and_limits_parse_and_validate() {
        let c = Cli::try_parse_from([
            "sensor-stats",
            "--shutdown-grace",
            "5s",
            "--drain-timeout",
            "250ms",
            "--body-limit",
            "1024",
            "--log-format",
            "json",
        ])
        .unwrap()
        .config;
        assert_eq!(c.shutdown_grace, Duration::from_secs(5));
        assert_eq!(c.drain_timeout, Duration::from_millis(250));
        assert_eq!(c.body_limit, 1024);
        assert_eq!(c.log_format, LogFormat::Json);
        assert!(Cli::try_parse_from(["sensor-stats", "--body-limit", "0"]).is_err());
        assert!(Cli::try_parse_from(["sensor-stats", "--shutdown-grace", "soon"]).is_err());
    }
}
