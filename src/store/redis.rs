//! `RedisStore`: statistics in a Redis 7 (or Valkey) shared by every replica, written by
//! group commit.
//!
//! Key layout (the same in Redis Cluster, so moving there needs no migration):
//!
//! - `{<prefix>:b<n>}`: one hash per bucket, `n = xxh3(sensor) % buckets`; the field is
//!   the sensor id, the value `"<latest> <count> <sum>"` (see `redis/apply.lua`). The hash
//!   tag makes each bucket one cluster slot. A GET is one `HGET` and a DELETE one `HDEL`,
//!   both atomic, so a reader never sees a count without its sum.
//! - `<prefix>:layout`: the bucket count the data was written with; a replica configured
//!   with another count refuses to become ready rather than look sensors up in the wrong
//!   hash.
//! - `<prefix>:idem:<key>`: an Idempotency-Key record: `p:<token>` while a request holds
//!   it (expires after the request timeout), `d:<fingerprint>` once it succeeded (expires
//!   after the idempotency window).
//!
//! Writes: every `POST /data` hands its folded batch to one flusher task. While a flush is
//! in flight the next requests queue; the flusher then sends all of them in one
//! `EVALSHA` of `apply.lua`, which applies them one after another, with their
//! idempotency records, in one atomic step. Each request is answered after the flush that
//! carries it succeeded; a failed flush fails every request in it.
//!
//! Connection: one multiplexed connection (redis-rs `ConnectionManager`, created lazily so
//! the service starts while Redis is down), reconnected in the background. [`RedisStore::watch`]
//! pings every 250 ms; readiness follows the pings.

use std::{
    fmt::Write as _,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use redis::{
    ErrorKind, RedisError, ServerErrorKind,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Claim, ClaimToken, Completion, StoreError};
use crate::{
    config::Config,
    domain::{Batch, Delta, Fingerprint, SensorId, Summary, Timestamp},
    metrics::{Metrics, StoreOp},
};

/// How often the connection is probed for readiness.
const PING_INTERVAL: Duration = Duration::from_millis(250);
/// A flush stops taking queued requests past this many sensor updates, so one script
/// does not hold Redis for long (a single larger batch still goes alone).
const MAX_FLUSH_SENSORS: usize = 20_000;
/// Queued requests the flusher holds before senders wait.
const QUEUE_DEPTH: usize = 8_192;
/// Time a flush may take on top of `--redis-timeout`, per sensor update it carries
/// (the script runs about 1 µs per update; this leaves a wide margin).
const PER_UPDATE_ALLOWANCE: Duration = Duration::from_micros(10);

static APPLY: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("redis/apply.lua")));
static RELEASE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("redis/release.lua")));

/// What the Redis store needs from the configuration.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Parsed `--redis-url`.
    pub client: redis::Client,
    /// `--redis-key-prefix`.
    pub prefix: String,
    /// `--redis-buckets`.
    pub buckets: u16,
    /// `--redis-timeout`: bound of every call.
    pub timeout: Duration,
    /// How long a claim lasts: the request timeout.
    pub pending_ttl: Duration,
    /// `--idempotency-ttl`.
    pub idempotency_ttl: Duration,
    /// `--max-sensors` (0: none).
    pub max_sensors: u64,
}

impl RedisSettings {
    /// Reads the Redis settings of `config`.
    ///
    /// # Errors
    /// When there is no URL or it cannot be parsed.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let url = config
            .redis_url
            .as_ref()
            .context("--store redis needs --redis-url")?;
        let client =
            redis::Client::open(url.0.as_str()).with_context(|| format!("invalid --redis-url {url:?}"))?;
        Ok(Self {
            client,
            prefix: config.redis_key_prefix.clone(),
            buckets: config.redis_buckets,
            timeout: config.redis_timeout,
            pending_ttl: config.request_timeout,
            idempotency_ttl: config.idempotency_ttl,
            max_sensors: config.max_sensors.map_or(0, std::num::NonZeroU64::get),
        })
    }
}

/// The Redis backend. Cloning the `Arc` around it is how handlers share it.
pub struct RedisStore {
    shared: Arc<Shared>,
    flushes: mpsc::Sender<Job>,
}

/// What the handle and the flusher task share.
struct Shared {
    conn: ConnectionManager,
    bucket_keys: Vec<String>,
    prefix: String,
    timeout: Duration,
    pending_ttl: Duration,
    idempotency_ttl: Duration,
    max_sensors: u64,
    /// The last ping succeeded.
    up: AtomicBool,
    /// The data's bucket count matches ours (checked once per process).
    layout_ok: AtomicBool,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.shared.prefix)
            .field("buckets", &self.shared.bucket_keys.len())
            .finish_non_exhaustive()
    }
}

/// One request's part of a flush.
struct Job {
    updates: Vec<(Box<str>, Delta)>,
    completion: Option<(String, ClaimToken, Fingerprint)>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

impl RedisStore {
    /// A store over `settings.client`; connects lazily and starts the flusher task.
    ///
    /// # Errors
    /// When the connection manager cannot be configured.
    pub fn new(settings: RedisSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            // Calls are bounded by our own timers, which know what a call carries.
            .set_response_timeout(None)
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(settings.client, config)
            .context("cannot set up the Redis connection")?;
        let bucket_keys = (0..settings.buckets)
            .map(|n| format!("{{{}:b{n}}}", settings.prefix))
            .collect();
        metrics.store_up(false);
        let shared = Arc::new(Shared {
            conn,
            bucket_keys,
            prefix: settings.prefix,
            timeout: settings.timeout,
            pending_ttl: settings.pending_ttl,
            idempotency_ttl: settings.idempotency_ttl,
            max_sensors: settings.max_sensors,
            up: AtomicBool::new(false),
            layout_ok: AtomicBool::new(false),
            metrics,
        });
        let (flushes, queue) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run_flusher(Arc::clone(&shared), queue));
        Ok(Self { shared, flushes })
    }

    /// Hands `batch` to the flusher and waits for the flush that carries it.
    pub(super) async fn record_batch(
        &self,
        batch: &Batch<'_>,
        completion: Option<Completion<'_>>,
    ) -> Result<(), StoreError> {
        self.shared.check_layout()?;
        let updates = batch
            .deltas()
            .map(|(sensor, delta)| (Box::from(sensor.as_str()), *delta))
            .collect();
        let (reply, answer) = oneshot::channel();
        let job = Job {
            updates,
            completion: completion
                .map(|c| (self.shared.idempotency_key(c.key), c.token.clone(), c.fingerprint)),
            reply,
        };
        self.flushes
            .send(job)
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Interrupted("the flush was abandoned".into())))
    }

    pub(super) async fn get(&self, sensor: SensorId<'_>) -> Result<Summary, StoreError> {
        self.shared.check_layout()?;
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.shared.bucket_key(sensor.as_str()))
            .arg(sensor.as_str());
        let value: Option<Vec<u8>> = self
            .shared
            .call(StoreOp::Get, &cmd, self.shared.timeout)
            .await
            .map_err(unavailable)?;
        match value {
            None => Ok(Summary::default()),
            Some(bytes) => parse_summary(&bytes).ok_or_else(|| {
                StoreError::Unavailable(format!("sensor {:?} holds an unreadable value", sensor.as_str()))
            }),
        }
    }

    pub(super) async fn delete(&self, sensor: SensorId<'_>) -> Result<(), StoreError> {
        self.shared.check_layout()?;
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(self.shared.bucket_key(sensor.as_str()))
            .arg(sensor.as_str());
        let _: i64 = self
            .shared
            .call(StoreOp::Delete, &cmd, self.shared.timeout)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        self.shared.check_layout()?;
        let token = ClaimToken::new();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.shared.idempotency_key(key))
            .arg(format!("p:{}", token.0))
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(millis(self.shared.pending_ttl));
        let previous: Option<String> = self
            .shared
            .call(StoreOp::Claim, &cmd, self.shared.timeout)
            .await
            .map_err(unavailable)?;
        match previous {
            None => Ok(Claim::Claimed(token)),
            Some(p) if p.starts_with("p:") => Ok(Claim::InProgress),
            Some(d) => d
                .strip_prefix("d:")
                .and_then(Fingerprint::from_hex)
                .map(Claim::Completed)
                .ok_or_else(|| StoreError::Unavailable("unreadable idempotency record".into())),
        }
    }

    pub(super) async fn release(&self, key: &str, token: &ClaimToken) {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(RELEASE.get_hash())
            .arg(1)
            .arg(self.shared.idempotency_key(key))
            .arg(&token.0);
        let released: Result<i64, _> = self
            .shared
            .call_script(StoreOp::Release, &RELEASE, &cmd, self.shared.timeout)
            .await;
        if let Err(e) = released {
            tracing::debug!(error = %e, "could not release an idempotency claim; it expires by itself");
        }
    }

    pub(super) async fn sensors_tracked(&self) -> Option<usize> {
        if !self.is_ready() {
            return None;
        }
        let mut pipe = redis::pipe();
        for key in &self.shared.bucket_keys {
            pipe.cmd("HLEN").arg(key);
        }
        let start = Instant::now();
        let mut conn = self.shared.conn.clone();
        let result = tokio::time::timeout(self.shared.timeout, pipe.query_async::<Vec<u64>>(&mut conn)).await;
        self.shared.metrics.store_call(StoreOp::Count, start.elapsed());
        match result {
            Ok(Ok(lens)) => Some(lens.iter().sum::<u64>() as usize),
            Ok(Err(e)) => {
                self.shared.metrics.store_error(StoreOp::Count, error_kind(&e));
                None
            }
            Err(_) => {
                self.shared.metrics.store_error(StoreOp::Count, "timeout");
                None
            }
        }
    }

    pub(super) fn is_ready(&self) -> bool {
        self.shared.up.load(Ordering::Acquire) && self.shared.layout_ok.load(Ordering::Acquire)
    }

    /// Pings every [`PING_INTERVAL`] until `stop`: readiness follows, and a ping on a
    /// broken connection makes the manager reconnect. Logs each change once.
    pub(super) async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_ready: Option<bool> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let shared = &self.shared;
            let pong: Result<String, _> = shared
                .call(StoreOp::Ping, &redis::cmd("PING"), shared.timeout)
                .await;
            let up = match pong {
                Ok(_) => {
                    if !shared.layout_ok.load(Ordering::Acquire) {
                        shared.verify_layout().await;
                    }
                    true
                }
                Err(e) => {
                    if was_ready != Some(false) {
                        tracing::warn!(error = %e, "Redis cannot be reached: not ready, store routes answer 503");
                    }
                    false
                }
            };
            shared.up.store(up, Ordering::Release);
            shared.metrics.store_up(up);
            let ready = self.is_ready();
            if ready && was_ready != Some(true) {
                tracing::info!("Redis reached: ready");
            }
            was_ready = Some(ready);
        }
    }
}

/// A failed call of any kind, as seen by a caller that changed nothing (reads, claims).
#[derive(Debug)]
enum CallError {
    Redis(RedisError),
    Timeout(Duration),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redis(e) => write!(f, "{e}"),
            Self::Timeout(d) => write!(f, "no answer within {d:?}"),
        }
    }
}

fn unavailable(e: CallError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// For a write: whether Redis may have carried it out.
fn write_error(e: CallError) -> StoreError {
    match &e {
        CallError::Redis(r) if r.is_connection_refusal() => StoreError::Unavailable(e.to_string()),
        CallError::Redis(r)
            if matches!(
                r.kind(),
                ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::NoPerm
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::NoScript
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                ) | ErrorKind::AuthenticationFailed
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Interrupted(e.to_string()),
    }
}

fn error_kind(e: &RedisError) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if matches!(e.kind(), ErrorKind::Server(_) | ErrorKind::Extension) {
        "server"
    } else {
        "unavailable"
    }
}

impl Shared {
    fn check_layout(&self) -> Result<(), StoreError> {
        if self.layout_ok.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(StoreError::Unavailable("not connected to Redis yet".into()))
        }
    }

    fn bucket_key(&self, sensor: &str) -> &str {
        &self.bucket_keys[bucket_of(sensor, self.bucket_keys.len())]
    }

    fn idempotency_key(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.prefix)
    }

    /// Records the bucket count on first use, or checks it against the recorded one.
    async fn verify_layout(&self) {
        let ours = format!("v1 buckets={}", self.bucket_keys.len());
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{}:layout", self.prefix))
            .arg(&ours)
            .arg("NX")
            .arg("GET");
        match self
            .call::<Option<String>>(StoreOp::Ping, &cmd, self.timeout)
            .await
        {
            Ok(None) => self.layout_ok.store(true, Ordering::Release),
            Ok(Some(theirs)) if theirs == ours => self.layout_ok.store(true, Ordering::Release),
            Ok(Some(theirs)) => tracing::error!(
                recorded = %theirs,
                configured = %ours,
                "the data under this --redis-key-prefix was written with another --redis-buckets; \
                 not ready until the setting matches"
            ),
            Err(e) => tracing::warn!(error = %e, "could not check the Redis key layout"),
        }
    }

    /// Sends `cmd` with a deadline, recording its latency and failures.
    async fn call<T: redis::FromRedisValue>(
        &self,
        op: StoreOp,
        cmd: &redis::Cmd,
        deadline: Duration,
    ) -> Result<T, CallError> {
        let mut conn = self.conn.clone();
        self.timed(op, deadline, async move { cmd.query_async::<T>(&mut conn).await })
            .await
    }

    /// Sends an `EVALSHA` of `script`, loading the script first when Redis lost it
    /// (restart, failover) and trying once more.
    async fn call_script<T: redis::FromRedisValue>(
        &self,
        op: StoreOp,
        script: &redis::Script,
        cmd: &redis::Cmd,
        deadline: Duration,
    ) -> Result<T, CallError> {
        let mut conn = self.conn.clone();
        self.timed(op, deadline, async move {
            match cmd.query_async::<T>(&mut conn).await {
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                    script.load_async(&mut conn).await?;
                    cmd.query_async::<T>(&mut conn).await
                }
                other => other,
            }
        })
        .await
    }

    async fn timed<T>(
        &self,
        op: StoreOp,
        deadline: Duration,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CallError> {
        let start = Instant::now();
        let result = tokio::time::timeout(deadline, call).await;
        self.metrics.store_call(op, start.elapsed());
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.metrics.store_error(op, error_kind(&e));
                Err(CallError::Redis(e))
            }
            Err(_) => {
                self.metrics.store_error(op, "timeout");
                Err(CallError::Timeout(deadline))
            }
        }
    }
}

/// The bucket of `sensor`: xxh3 is specified and stable across versions and platforms,
/// so every replica, now and later, agrees.
fn bucket_of(sensor: &str, buckets: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(sensor.as_bytes()) % buckets as u64) as usize
}

/// Takes queued jobs, flushes them together, answers each; until every handle is gone.
async fn run_flusher(shared: Arc<Shared>, mut queue: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut updates = first.updates.len();
        jobs.push(first);
        while updates < MAX_FLUSH_SENSORS {
            match queue.try_recv() {
                Ok(job) => {
                    updates += job.updates.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        shared.metrics.flush(jobs.len());
        match flush(&shared, &jobs, updates).await {
            Ok((skipped, refused)) => {
                for (n, job) in jobs.drain(..).enumerate() {
                    let position = n as i64 + 1;
                    let result = if skipped.contains(&position) {
                        Err(StoreError::ClaimLost)
                    } else if refused.contains(&position) {
                        Err(StoreError::SensorCap(shared.max_sensors))
                    } else {
                        Ok(())
                    };
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                let message = e.to_string();
                let unapplied = matches!(e, StoreError::Unavailable(_));
                for job in jobs.drain(..) {
                    let error = if unapplied {
                        StoreError::Unavailable(message.clone())
                    } else {
                        StoreError::Interrupted(message.clone())
                    };
                    let _ = job.reply.send(Err(error));
                }
            }
        }
    }
}

/// One `EVALSHA` of `apply.lua` carrying `jobs`; the positions of the jobs skipped for a
/// lost claim and of those refused for the sensor cap.
async fn flush(shared: &Shared, jobs: &[Job], updates: usize) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
    let buckets = shared.bucket_keys.len();
    let idempotent = jobs.iter().filter(|j| j.completion.is_some()).count();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(APPLY.get_hash()).arg(buckets + idempotent);
    for key in &shared.bucket_keys {
        cmd.arg(key);
    }
    for job in jobs {
        if let Some((key, _, _)) = &job.completion {
            cmd.arg(key);
        }
    }
    cmd.arg(jobs.len()).arg(shared.max_sensors).arg(buckets);
    let ttl = millis(shared.idempotency_ttl);
    let mut next_idem = buckets;
    let mut sum = ryu::Buffer::new();
    let mut int = itoa::Buffer::new();
    let mut latest = String::with_capacity(29);
    for job in jobs {
        cmd.arg(job.updates.len());
        match &job.completion {
            Some((_, token, fingerprint)) => {
                next_idem += 1;
                cmd.arg(next_idem)
                    .arg(&token.0)
                    .arg(fingerprint.to_hex())
                    .arg(ttl);
            }
            None => {
                cmd.arg(0).arg("").arg("").arg(0);
            }
        }
        for (sensor, delta) in &job.updates {
            latest.clear();
            let _ = write!(latest, "{:029}", delta.latest.to_key());
            cmd.arg(bucket_of(sensor, buckets) + 1)
                .arg(sensor.as_bytes())
                .arg(int.format(delta.count))
                .arg(sum.format_finite(delta.sum))
                .arg(latest.as_str());
        }
    }
    let deadline = shared.timeout + PER_UPDATE_ALLOWANCE * u32::try_from(updates).unwrap_or(u32::MAX);
    shared
        .call_script::<(Vec<i64>, Vec<i64>)>(StoreOp::Apply, &APPLY, &cmd, deadline)
        .await
        .map_err(write_error)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Reads `"<latest> <count> <sum>"`.
fn parse_summary(bytes: &[u8]) -> Option<Summary> {
    let text = std::str::from_utf8(bytes).ok()?;
    let mut parts = text.split(' ');
    let latest = Timestamp::from_key(parts.next()?.parse().ok()?)?;
    let count = parts.next()?.parse().ok()?;
    let sum = parts.next()?.parse().ok()?;
    Some(Summary {
        last_measurement: Some(latest),
        count,
        sum,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        // Fixed values: a change of hash would move every sensor of every deployment.
        assert_eq!(bucket_of("sensor1", 16), bucket_of("sensor1", 16));
        let mut seen = [0usize; 16];
        for i in 0..1600 {
            seen[bucket_of(&format!("sensor-{i}"), 16)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }

    #[test]
    fn summary_values_round_trip() {
        let at = Timestamp::parse("2021-11-09T21:38:09.123456789+01:00").unwrap();
        for sum in [0.1, 1e-300, 2f64.powi(60) + 1.0, -0.0, 5e-324, f64::MAX] {
            let text = format!(
                "{:029} {} {}",
                at.to_key(),
                7,
                ryu::Buffer::new().format_finite(sum)
            );
            let s = parse_summary(text.as_bytes()).unwrap();
            assert_eq!(
                (s.last_measurement, s.count, s.sum.to_bits()),
                (Some(at), 7, sum.to_bits())
            );
        }
        assert_eq!(parse_summary(b"garbage"), None);
    }
}
