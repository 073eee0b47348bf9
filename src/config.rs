//! `Config`: every setting of the server, read from flags with `SENSOR_STATS_*`
//! environment fallbacks (clap), with defaults that serve on 0.0.0.0:8080.

use std::{
    net::IpAddr,
    num::{NonZeroU64, NonZeroUsize},
    path::PathBuf,
    time::Duration,
};

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

    /// File of API keys (`NAME SCOPES sha256:HEX` per line; `sensor-stats keys new` makes
    /// one). When set, every route but /healthz and /livez needs `Authorization: Bearer`.
    /// Reloaded on SIGHUP and when it changes.
    #[arg(long, env = "SENSOR_STATS_API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,

    /// Serve GET /metrics without a token even when API keys are configured.
    #[arg(long, env = "SENSOR_STATS_METRICS_PUBLIC")]
    pub metrics_public: bool,

    /// PEM certificate chain: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN). Needs --tls-key.
    /// Reloaded on SIGHUP and when it changes.
    #[arg(long, env = "SENSOR_STATS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "SENSOR_STATS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// How often the API keys and TLS files are checked for changes; `0s`: only on SIGHUP.
    #[arg(long, env = "SENSOR_STATS_RELOAD_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub reload_interval: Duration,

    /// Requests served at once; past it, requests are refused at once with 503 and
    /// `Retry-After: 1` (never /healthz, /livez, /metrics). Default: 64 per CPU core.
    #[arg(long, env = "SENSOR_STATS_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<NonZeroUsize>,

    /// Most sensors the store may track; a batch that would pass it is refused whole with
    /// 507. Default: unlimited.
    #[arg(long, env = "SENSOR_STATS_MAX_SENSORS")]
    pub max_sensors: Option<NonZeroU64>,

    /// A keep-alive connection without traffic for this long is closed. Keep it above the
    /// idle timeout of the load balancer in front (60 s for most), so the balancer closes
    /// first and never sends a request on a connection we are closing.
    #[arg(long, env = "SENSOR_STATS_IDLE_TIMEOUT", default_value = "75s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Open connections at most; past it new connections are accepted and closed at once.
    /// Default: 10000, or the open-file limit less 128 when that is lower.
    #[arg(long, env = "SENSOR_STATS_MAX_CONNECTIONS")]
    pub max_connections: Option<NonZeroUsize>,

    /// Keep the embedded store on disk in this directory (created if missing): a log of
    /// every write plus periodic snapshots, read back at start. Unset or empty: memory
    /// only, and everything is lost on restart. Not with `--store redis`.
    #[arg(long, env = "SENSOR_STATS_DATA_DIR", value_parser = parse_data_dir)]
    pub data_dir: Option<PathBuf>,

    /// With `--data-dir`: `always` answers a write only once it is fsynced (nothing
    /// acknowledged is ever lost); `interval` answers after the write and fsyncs every
    /// `--fsync-interval` (an OS crash or power loss may lose that long of writes).
    #[arg(long, env = "SENSOR_STATS_FSYNC", value_enum, default_value_t = FsyncMode::Always)]
    pub fsync: FsyncMode,

    /// With `--fsync interval`: how often the log is fsynced.
    #[arg(long, env = "SENSOR_STATS_FSYNC_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub fsync_interval: Duration,

    /// With `--data-dir`: how often the whole store is written to a snapshot (when it
    /// changed), which lets older log segments be deleted. One is also written at shutdown.
    #[arg(long, env = "SENSOR_STATS_SNAPSHOT_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub snapshot_interval: Duration,

    /// With `--data-dir`: what to do when a snapshot or the log is damaged (other than a
    /// torn last record, which is always cut). Unset: refuse to start and name the file and
    /// offset. `truncate`: keep what comes before the damage, set the rest aside, start.
    #[arg(long, env = "SENSOR_STATS_RECOVER", value_enum)]
    pub recover: Option<RecoverMode>,
}

/// Any path; an empty one (`SENSOR_STATS_DATA_DIR=`) means no data dir, so a deployment
/// can switch off the container image's default.
fn parse_data_dir(text: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(text))
}

/// When the embedded store's log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FsyncMode {
    /// Before each write is answered (group commit shares one fsync between the requests
    /// that arrive meanwhile).
    Always,
    /// Every `--fsync-interval`; writes are answered once written to the OS.
    Interval,
}

/// How start-up treats damage in the data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecoverMode {
    /// Keep what comes before the first damaged record; set the damaged files aside.
    Truncate,
}

/// The largest `--body-limit` with a data dir: a batch's log record is never larger than
/// its body, and a record must stay under the log's 1 GiB frame limit.
pub const MAX_DURABLE_BODY_LIMIT: u64 = 512 << 20;

/// Requests in flight per CPU core when `--max-in-flight` is not given.
pub const IN_FLIGHT_PER_CORE: usize = 64;
/// Open connections when `--max-connections` is not given and the open-file limit is higher.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// File descriptors kept free of connections under the open-file limit (logs, Redis,
/// the keys file, the listener).
pub const RESERVED_FDS: usize = 128;

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
    /// The data dir, `None` when unset or empty.
    pub fn data_dir(&self) -> Option<&std::path::Path> {
        self.data_dir.as_deref().filter(|p| !p.as_os_str().is_empty())
    }

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
        if self.store != StoreKind::Memory && self.data_dir().is_some() {
            return Err(
                "--data-dir (SENSOR_STATS_DATA_DIR) is for the embedded store; with --store \
                        redis or redis-cluster durability is Redis' own (AOF): give one or the other"
                    .to_owned(),
            );
        }
        if self.data_dir().is_some() && self.body_limit > MAX_DURABLE_BODY_LIMIT {
            return Err(format!(
                "--body-limit can be at most {MAX_DURABLE_BODY_LIMIT} bytes (512 MiB) with --data-dir: \
                 a batch is one log record, and a record must stay under 1 GiB"
            ));
        }
        if self.fsync_interval.is_zero() {
            return Err("--fsync-interval must be longer than 0s".to_owned());
        }
        if self.snapshot_interval.is_zero() {
            return Err("--snapshot-interval must be longer than 0s".to_owned());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("--tls-cert and --tls-key go together: give both or neither".to_owned());
        }
        if self.idle_timeout.is_zero() {
            return Err("--idle-timeout must be longer than 0s".to_owned());
        }
        Ok(())
    }

    /// `--max-in-flight`, or [`IN_FLIGHT_PER_CORE`] per core the process may use.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.map_or_else(
            || IN_FLIGHT_PER_CORE * std::thread::available_parallelism().map_or(1, NonZeroUsize::get),
            NonZeroUsize::get,
        )
    }

    /// `--max-connections`, or [`DEFAULT_MAX_CONNECTIONS`] capped by the open-file limit
    /// less [`RESERVED_FDS`].
    pub fn max_connections(&self) -> usize {
        self.max_connections.map_or_else(
            || match open_file_limit() {
                Some(fds) => DEFAULT_MAX_CONNECTIONS.min(fds.saturating_sub(RESERVED_FDS).max(1)),
                None => DEFAULT_MAX_CONNECTIONS,
            },
            NonZeroUsize::get,
        )
    }
}

/// The soft limit on open files of this process (Linux: `/proc/self/limits`); `None`
/// when unknown or unlimited.
pub fn open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_open_file_limit(&limits)
}

fn parse_open_file_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
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
            data_dir: None,
            fsync: FsyncMode::Always,
            fsync_interval: Duration::from_secs(1),
            snapshot_interval: Duration::from_secs(60),
            recover: None,
            api_keys_file: None,
            metrics_public: false,
            tls_cert: None,
            tls_key: None,
            reload_interval: Duration::from_secs(1),
            max_in_flight: None,
            max_sensors: None,
            idle_timeout: Duration::from_secs(75),
            max_connections: None,
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

    #[test]
    fn a_body_limit_past_512_mib_is_refused_with_a_data_dir_only() {
        let parse = |args: &[&str]| {
            let mut all = vec!["sensor-stats"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).unwrap().config
        };
        let big = (MAX_DURABLE_BODY_LIMIT + 1).to_string();
        let message = parse(&["--data-dir", "/data", "--body-limit", &big])
            .validate()
            .unwrap_err();
        assert!(
            message.contains("--body-limit") && message.contains("--data-dir"),
            "{message}"
        );
        let most = MAX_DURABLE_BODY_LIMIT.to_string();
        assert_eq!(
            parse(&["--data-dir", "/data", "--body-limit", &most]).validate(),
            Ok(())
        );
        assert_eq!(parse(&["--body-limit", &big]).validate(), Ok(()));
    }

    #[test]
    fn a_data_dir_with_the_redis_store_is_refused_and_durability_flags_parse() {
        let c = Cli::try_parse_from([
            "sensor-stats",
            "--store",
            "redis",
            "--redis-url",
            "redis://127.0.0.1:6379/0",
            "--data-dir",
            "/data",
        ])
        .unwrap()
        .config;
        let message = c.validate().unwrap_err();
        assert!(
            message.contains("--data-dir") && message.contains("redis"),
            "{message}"
        );
        let c = Cli::try_parse_from([
            "sensor-stats",
            "--data-dir",
            "/data",
            "--fsync",
            "interval",
            "--fsync-interval",
            "200ms",
            "--snapshot-interval",
            "5m",
            "--recover",
            "truncate",
        ])
        .unwrap()
        .config;
        assert!(c.validate().is_ok());
        assert_eq!(c.data_dir.as_deref(), Some(std::path::Path::new("/data")));
        assert_eq!(c.fsync, FsyncMode::Interval);
        assert_eq!(c.fsync_interval, Duration::from_millis(200));
        assert_eq!(c.snapshot_interval, Duration::from_secs(300));
        assert_eq!(c.recover, Some(RecoverMode::Truncate));
        assert!(Cli::try_parse_from(["sensor-stats", "--fsync", "never"]).is_err());
        // An empty value switches the data dir off (the image sets one by default).
        let c = Cli::try_parse_from([
            "sensor-stats",
            "--store",
            "redis",
            "--redis-url",
            "redis://x/0",
            "--data-dir",
            "",
        ])
        .unwrap()
        .config;
        assert_eq!(c.data_dir(), None);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn access_and_overload_flags_parse_and_validate() {
        let c = Cli::try_parse_from([
            "sensor-stats",
            "--api-keys-file",
            "/run/secrets/keys",
            "--metrics-public",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--max-in-flight",
            "4",
            "--max-sensors",
            "1000",
            "--idle-timeout",
            "5s",
            "--max-connections",
            "20",
        ])
        .unwrap()
        .config;
        assert!(c.validate().is_ok());
        assert!(c.metrics_public);
        assert_eq!(c.max_in_flight(), 4);
        assert_eq!(c.max_connections(), 20);
        assert_eq!(c.max_sensors.map(NonZeroU64::get), Some(1000));
        assert_eq!(c.idle_timeout, Duration::from_secs(5));
        let only_cert = Cli::try_parse_from(["sensor-stats", "--tls-cert", "c.pem"])
            .unwrap()
            .config;
        assert!(only_cert.validate().unwrap_err().contains("--tls-key"));
        assert!(Cli::try_parse_from(["sensor-stats", "--max-in-flight", "0"]).is_err());
        assert!(Cli::try_parse_from(["sensor-stats", "--max-sensors", "0"]).is_err());
    }

    #[test]
    fn defaults_come_from_the_cores_and_the_open_file_limit() {
        let c = Config::default();
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(c.max_in_flight(), IN_FLIGHT_PER_CORE * cores);
        let expected = open_file_limit().map_or(DEFAULT_MAX_CONNECTIONS, |fds| {
            DEFAULT_MAX_CONNECTIONS.min(fds - RESERVED_FDS)
        });
        assert_eq!(c.max_connections(), expected);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_open_file_limit(limits), Some(1024));
        assert_eq!(
            parse_open_file_limit(
                "Max open files            unlimited            unlimited            files"
            ),
            None
        );
    }
}
