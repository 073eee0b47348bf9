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

    /// How long an HTTP/1 connection may go without a request being handled, counted from
    /// accepting it or from its last response: silent clients, clients too slow to send a
    /// request's headers and idle keep-alive connections are closed after it.
    #[arg(long, env = "SENSOR_STATS_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,

    /// Where statistics live: `memory` (this process only), `redis` (shared by every
    /// replica pointed at the same Redis) or `redis-cluster`.
    #[arg(long, env = "SENSOR_STATS_STORE", value_enum, default_value_t = StoreKind::Memory)]
    pub store: StoreKind,

    /// Redis to use with `--store redis`, e.g. `redis://:password@127.0.0.1:6379/0`
    /// (`rediss://` for TLS); with `--store redis-cluster`, seed nodes separated by commas.
    #[arg(long, env = "SENSOR_STATS_REDIS_URL")]
    pub redis_url: Option<RedisUrl>,

    /// Prefix of every Redis key, so several deployments can share one Redis.
    #[arg(long, env = "SENSOR_STATS_REDIS_KEY_PREFIX", default_value = "sensor-stats")]
    pub redis_key_prefix: String,

    /// Longest time one Redis call may take before the request is answered 503.
    #[arg(long, env = "SENSOR_STATS_REDIS_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub redis_timeout: Duration,

    /// How many Redis hashes the sensors are spread over (each its own cluster slot).
    /// Fixed for the life of a deployment's data: the first replica records it in Redis
    /// and replicas started with another value refuse to become ready.
    #[arg(long, env = "SENSOR_STATS_REDIS_BUCKETS", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..=16384))]
    pub redis_buckets: u16,

    /// After each flush, wait until this many Redis replicas (of each touched master in a
    /// cluster) confirmed it before answering; fewer in time answer 503.
    #[arg(long, env = "SENSOR_STATS_REDIS_WAIT_REPLICAS", default_value_t = 0)]
    pub redis_wait_replicas: u16,

    /// How long a successful `POST /data` with an `Idempotency-Key` is remembered: a retry
    /// with the same key and body inside this window is answered without applying it again.
    #[arg(long, env = "SENSOR_STATS_IDEMPOTENCY_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub idempotency_ttl: Duration,
}

/// Which backend holds the statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// This process's memory: fastest, lost on restart, not shared between replicas.
    Memory,
    /// A Redis 7 (or Valkey) server shared by every replica.
    Redis,
    /// A Redis Cluster shared by every replica; `--redis-url` lists seed nodes.
    RedisCluster,
}

/// A Redis URL; its `Debug` form hides the password so configuration can be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl std::str::FromStr for RedisUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.starts_with("redis://")
            || s.starts_with("rediss://")
            || s.starts_with("redis+unix://")
            || s.starts_with("unix://")
        {
            Ok(Self(s.to_owned()))
        } else {
            Err("expected a redis://, rediss:// or unix:// URL".to_owned())
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `scheme://user:password@host...` -> `scheme://***@host...`, for every node.
        let shown: Vec<String> = self
            .0
            .split(',')
            .map(|u| match (u.find("://"), u.rfind('@')) {
                (Some(scheme_end), Some(at)) if at > scheme_end => {
                    format!("{}://***{}", &u[..scheme_end], &u[at..])
                }
                _ => u.to_owned(),
            })
            .collect();
        write!(f, "{:?}", shown.join(","))
    }
}

impl Config {
    /// Checks the settings that depend on each other.
    ///
    /// # Errors
    /// A message saying which setting to add or remove.
    pub fn validate(&self) -> Result<(), String> {
        if matches!(self.store, StoreKind::Redis | StoreKind::RedisCluster) && self.redis_url.is_none() {
            return Err(
                "--store redis and redis-cluster need --redis-url (SENSOR_STATS_REDIS_URL)".to_owned(),
            );
        }
        if self.store != StoreKind::RedisCluster && self.redis_url.as_ref().is_some_and(|u| u.0.contains(','))
        {
            return Err("several --redis-url nodes need --store redis-cluster".to_owned());
        }
        if self.idempotency_ttl.is_zero() {
            return Err("--idempotency-ttl must be longer than 0s".to_owned());
        }
        if self.redis_timeout.is_zero() {
            return Err("--redis-timeout must be longer than 0s".to_owned());
        }
        Ok(())
    }
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
            store: StoreKind::Memory,
            redis_url: None,
            redis_key_prefix: "sensor-stats".into(),
            redis_timeout: Duration::from_secs(1),
            redis_buckets: 16,
            redis_wait_replicas: 0,
            idempotency_ttl: Duration::from_secs(24 * 3600),
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

    #[test]
    fn redis_store_needs_a_url_and_the_url_password_is_not_logged() {
        let c = Cli::try_parse_from(["sensor-stats", "--store", "redis"])
            .unwrap()
            .config;
        assert!(c.validate().unwrap_err().contains("--redis-url"));
        let c = Cli::try_parse_from([
            "sensor-stats",
            "--store",
            "redis",
            "--redis-url",
            "redis://:hunter2@10.0.0.1:6379/0",
        ])
        .unwrap()
        .config;
        assert!(c.validate().is_ok());
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("redis://***@10.0.0.1:6379/0"),
            "{shown}"
        );
        assert!(Cli::try_parse_from(["sensor-stats", "--redis-url", "http://x"]).is_err());
    }
}
