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
//! Redis Cluster (`--store redis-cluster`): the same keys. A flush is split by bucket (one
//! slot each) and sent as one `EVALSHA` of `apply_bucket.lua` per bucket, all at once
//! (calls to one node share its connection, so they are pipelined). A batch is then atomic
//! per bucket, not as a whole. A request with an Idempotency-Key leaves a marker (field
//! `<key>` of the hash `{<prefix>:b<n>}:idem`, with its own expiry) in each bucket it
//! touched, in the same script, so a retry after a partial failure applies exactly the
//! missing buckets; its record `<prefix>:idem:<key>` is marked completed once every
//! bucket is in. No script creates a key: both hashes of a bucket exist from the first
//! start and move together in a reshard, so no write waits on a half-moved slot. Expired
//! markers are swept every minute, a slice at a time.
//!
//! Sensor cap (`--max-sensors`): with one Redis, `apply.lua` counts the buckets' sensors
//! and refuses a request that would pass the cap inside the same atomic script, so the
//! cap holds exactly across every replica. In a cluster no script sees every bucket: the
//! flusher first reads the count (`HLEN` of every bucket) and which of the flush's
//! sensors exist (`HMGET` per bucket), and refuses the requests that would pass the cap;
//! flushes of several replicas at the same moment can therefore together pass it by the
//! new sensors they carry.
//!
//! `--redis-wait-replicas N`: after a flush, `WAIT N` on the connection (each touched
//! master in a cluster) before answering; fewer confirmations answer 503, "may have been
//! applied".
//!
//! Connection: see `connection.rs`. [`RedisStore::watch`] pings every 250 ms (connecting a
//! cluster handle first); readiness follows the pings.

mod connection;

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
use connection::Conn;
pub use connection::Target;
use redis::{ErrorKind, RedisError, ServerErrorKind};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Claim, ClaimToken, Completion, StoreError};
use crate::{
    config::{Config, StoreKind},
    domain::{Batch, Delta, Fingerprint, SensorId, Summary, Timestamp},
    metrics::{Metrics, StoreOp},
};

/// How often expired Idempotency-Key markers are swept (cluster mode).
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often the connection is probed for readiness.
const PING_INTERVAL: Duration = Duration::from_millis(250);
/// A ping may wait this many `--redis-timeout`s: Redis runs one script at a time, and the
/// largest batch the body limit allows (about 200k new sensors in 16 MiB) holds it for
/// about a second; that is a busy Redis, not an unreachable one. A refused or broken
/// connection fails the ping at once.
const PING_PATIENCE: u32 = 3;
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
static APPLY_BUCKET: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("redis/apply_bucket.lua")));
static SWEEP: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("redis/sweep.lua")));
static COMPLETE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("redis/complete.lua")));

/// What the Redis store needs from the configuration.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Parsed `--redis-url`: one server or a cluster's seed nodes.
    pub target: Target,
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
    /// `--redis-wait-replicas`.
    pub wait_replicas: u16,
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
        let target = match config.store {
            StoreKind::RedisCluster => {
                let nodes: Vec<String> = url.0.split(',').map(|n| n.trim().to_owned()).collect();
                for node in &nodes {
                    redis::Client::open(node.as_str())
                        .with_context(|| format!("invalid node in --redis-url {url:?}"))?;
                }
                Target::Cluster(nodes)
            }
            _ => Target::Single(Box::new(
                redis::Client::open(url.0.as_str())
                    .with_context(|| format!("invalid --redis-url {url:?}"))?,
            )),
        };
        Ok(Self {
            target,
            prefix: config.redis_key_prefix.clone(),
            buckets: config.redis_buckets,
            timeout: config.redis_timeout,
            pending_ttl: config.request_timeout,
            idempotency_ttl: config.idempotency_ttl,
            wait_replicas: config.redis_wait_replicas,
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
    conn: Conn,
    bucket_keys: Vec<String>,
    prefix: String,
    timeout: Duration,
    pending_ttl: Duration,
    idempotency_ttl: Duration,
    wait_replicas: u16,
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
    completion: Option<JobCompletion>,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The idempotency record a job completes.
struct JobCompletion {
    /// The (namespaced) Idempotency-Key as the client scope sees it.
    key: String,
    /// Its record, `<prefix>:idem:<key>`.
    record: String,
    token: ClaimToken,
    fingerprint: Fingerprint,
}

impl RedisStore {
    /// A store over `settings.client`; connects lazily and starts the flusher task.
    ///
    /// # Errors
    /// When the connection manager cannot be configured.
    pub fn new(settings: RedisSettings, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let conn =
            Conn::new(settings.target, settings.timeout).context("cannot set up the Redis connection")?;
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
            wait_replicas: settings.wait_replicas,
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
            completion: completion.map(|c| JobCompletion {
                key: c.key.to_owned(),
                record: self.shared.idempotency_key(c.key),
                token: c.token.clone(),
                fingerprint: c.fingerprint,
            }),
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

    pub(super) async fn claim(self: &Arc<Self>, key: &str) -> Result<Claim, StoreError> {
        self.shared.check_layout()?;
        let token = ClaimToken::new();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.shared.idempotency_key(key))
            .arg(format!("p:{}", token.0))
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(millis(self.shared.pending_ttl));
        let previous: Option<String> = match self.shared.call(StoreOp::Claim, &cmd, self.shared.timeout).await
        {
            Ok(previous) => previous,
            Err(e) => {
                // The SET may have reached Redis: give back whatever it took, so the
                // client's retry is not answered 409 until the claim expires.
                let (store, key) = (Arc::clone(self), key.to_owned());
                tokio::spawn(async move { store.release(&key, &token).await });
                return Err(unavailable(e));
            }
        };
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

    /// Releases the claim, retrying while Redis cannot be reached, until the claim would
    /// have expired anyway: a client retrying after a 503 must not see 409 for the whole
    /// request timeout once Redis is back.
    pub(super) async fn release(&self, key: &str, token: &ClaimToken) {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(RELEASE.get_hash())
            .arg(1)
            .arg(self.shared.idempotency_key(key))
            .arg(&token.0);
        let give_up = Instant::now() + self.shared.pending_ttl;
        loop {
            let released: Result<i64, _> = self
                .shared
                .call_script(StoreOp::Release, &RELEASE, &cmd, self.shared.timeout)
                .await;
            match released {
                Ok(_) => return,
                Err(e) if Instant::now() >= give_up => {
                    tracing::debug!(error = %e, "could not release an idempotency claim; it expires by itself");
                    return;
                }
                Err(_) => tokio::time::sleep(PING_INTERVAL).await,
            }
        }
    }

    pub(super) async fn sensors_tracked(&self) -> Option<usize> {
        if !self.is_ready() {
            return None;
        }
        // One O(1) HLEN per bucket, sent together (each goes to its slot's master).
        let shared = &self.shared;
        let lens = shared
            .timed(StoreOp::Count, shared.timeout, async {
                let calls = shared.bucket_keys.iter().map(|key| {
                    let mut cmd = redis::cmd("HLEN");
                    cmd.arg(key);
                    async move { shared.conn.query::<u64>(&cmd).await }
                });
                futures_util::future::try_join_all(calls).await
            })
            .await
            .ok()?;
        Some(lens.iter().sum::<u64>() as usize)
    }

    pub(super) fn is_ready(&self) -> bool {
        self.shared.up.load(Ordering::Acquire) && self.shared.layout_ok.load(Ordering::Acquire)
    }

    /// Pings every [`PING_INTERVAL`] until `stop`: readiness follows, and a ping on a
    /// broken connection makes the manager reconnect. Logs each change once. In a
    /// cluster, sweeps expired Idempotency-Key markers every [`SWEEP_INTERVAL`].
    pub(super) async fn watch(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PING_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_ready: Option<bool> = None;
        let mut last_sweep = Instant::now();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if self.shared.conn.is_cluster() && self.is_ready() && last_sweep.elapsed() >= SWEEP_INTERVAL {
                last_sweep = Instant::now();
                self.shared.sweep_markers().await;
            }
            let shared = &self.shared;
            let patience = shared.timeout * PING_PATIENCE;
            let connected = tokio::time::timeout(patience, shared.conn.ensure_connected())
                .await
                .unwrap_or_else(|_| {
                    Err(RedisError::from(std::io::Error::from(
                        std::io::ErrorKind::TimedOut,
                    )))
                });
            if let Err(e) = connected {
                if was_ready != Some(false) {
                    tracing::warn!(error = %e, "Redis Cluster cannot be reached: not ready, store routes answer 503");
                }
                was_ready = Some(false);
                shared.up.store(false, Ordering::Release);
                shared.metrics.store_up(false);
                continue;
            }
            let pong = shared.timed(StoreOp::Ping, patience, shared.conn.ping()).await;
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

    /// Records the bucket count on first use, or checks it against the recorded one; then
    /// loads the scripts, so no request has to (a Redis that lost them, after a restart or
    /// a failover, gets them again on the first `NOSCRIPT`).
    async fn verify_layout(&self) {
        for script in [&*APPLY, &*RELEASE, &*APPLY_BUCKET, &*COMPLETE, &*SWEEP] {
            if let Err(e) = self.conn.load(script).await {
                tracing::warn!(error = %e, "could not load the store's scripts into Redis");
                return;
            }
        }
        if self.conn.is_cluster() {
            // Each bucket's marker hash exists from now on (its "" field never expires:
            // no Idempotency-Key is empty), so apply scripts never create a key.
            for key in &self.bucket_keys {
                let mut cmd = redis::cmd("HSETNX");
                cmd.arg(markers_key(key)).arg("").arg("permanent");
                if let Err(e) = self.call::<i64>(StoreOp::Ping, &cmd, self.timeout).await {
                    tracing::warn!(error = %e, "could not create the idempotency marker hashes");
                    return;
                }
            }
        }
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

    /// Forgets expired Idempotency-Key markers, bucket by bucket, a page per call.
    async fn sweep_markers(&self) {
        for key in &self.bucket_keys {
            let mut cursor = "0".to_owned();
            loop {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(SWEEP.get_hash())
                    .arg(1)
                    .arg(markers_key(key))
                    .arg(&cursor);
                match self
                    .call_script::<String>(StoreOp::Apply, &SWEEP, &cmd, self.timeout)
                    .await
                {
                    Ok(next) if next == "0" => break,
                    Ok(next) => cursor = next,
                    Err(e) => {
                        tracing::debug!(error = %e, "marker sweep stopped; next round retries");
                        return;
                    }
                }
            }
        }
    }

    /// Sends `cmd` with a deadline, recording its latency and failures.
    async fn call<T: redis::FromRedisValue>(
        &self,
        op: StoreOp,
        cmd: &redis::Cmd,
        deadline: Duration,
    ) -> Result<T, CallError> {
        self.timed(op, deadline, self.conn.query::<T>(cmd)).await
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
        self.timed(op, deadline, self.eval(script, cmd)).await
    }

    async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        match self.conn.query::<T>(cmd).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.conn.load(script).await?;
                self.conn.query::<T>(cmd).await
            }
            other => other,
        }
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
        let results = if shared.conn.is_cluster() {
            flush_cluster(&shared, &jobs).await
        } else {
            flush_single(&shared, &jobs, updates).await
        };
        for (job, result) in jobs.drain(..).zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// The hash of a bucket's Idempotency-Key markers (cluster mode), in the bucket's slot.
fn markers_key(bucket_key: &str) -> String {
    format!("{bucket_key}:idem")
}

/// The deadline of a script carrying `updates` sensor updates.
fn apply_deadline(shared: &Shared, updates: usize) -> Duration {
    shared.timeout + PER_UPDATE_ALLOWANCE * u32::try_from(updates).unwrap_or(u32::MAX)
}

/// `WAIT` for `--redis-wait-replicas` on the connection that wrote `slot_key`.
async fn wait_for_replicas(shared: &Shared, slot_key: &str) -> Result<(), StoreError> {
    if shared.wait_replicas == 0 {
        return Ok(());
    }
    let wanted = shared.wait_replicas;
    let acked = shared
        .timed(
            StoreOp::Apply,
            shared.timeout * 2,
            shared.conn.wait_replicas(slot_key, wanted, shared.timeout),
        )
        .await
        .map_err(|e| StoreError::Interrupted(e.to_string()))?;
    if acked < i64::from(wanted) {
        return Err(StoreError::Interrupted(format!(
            "only {acked} of {wanted} Redis replicas confirmed the write in time"
        )));
    }
    Ok(())
}

/// One Redis: one `EVALSHA` of `apply.lua` carrying every job, atomically.
async fn flush_single(shared: &Shared, jobs: &[Job], updates: usize) -> Vec<Result<(), StoreError>> {
    let buckets = shared.bucket_keys.len();
    let idempotent = jobs.iter().filter(|j| j.completion.is_some()).count();
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(APPLY.get_hash()).arg(buckets + idempotent);
    for key in &shared.bucket_keys {
        cmd.arg(key);
    }
    for job in jobs {
        if let Some(c) = &job.completion {
            cmd.arg(&c.record);
        }
    }
    cmd.arg(jobs.len()).arg(shared.max_sensors).arg(buckets);
    let ttl = millis(shared.idempotency_ttl);
    let mut next_idem = buckets;
    let mut enc = Encoder::default();
    for job in jobs {
        cmd.arg(job.updates.len());
        match &job.completion {
            Some(c) => {
                next_idem += 1;
                cmd.arg(next_idem)
                    .arg(&c.token.0)
                    .arg(c.fingerprint.to_hex())
                    .arg(ttl);
            }
            None => {
                cmd.arg(0).arg("").arg("").arg(0);
            }
        }
        for (sensor, delta) in &job.updates {
            cmd.arg(bucket_of(sensor, buckets) + 1).arg(sensor.as_bytes());
            enc.push(&mut cmd, delta);
        }
    }
    let applied = shared
        .call_script::<(Vec<i64>, Vec<i64>)>(StoreOp::Apply, &APPLY, &cmd, apply_deadline(shared, updates))
        .await
        .map_err(write_error);
    let (skipped, refused) = match applied {
        Ok(positions) => positions,
        Err(e) => return jobs.iter().map(|_| Err(e.clone())).collect(),
    };
    if let Err(e) = wait_for_replicas(shared, &shared.bucket_keys[0]).await {
        return jobs.iter().map(|_| Err(e.clone())).collect();
    }
    (1..=jobs.len() as i64)
        .map(|n| {
            if skipped.contains(&n) {
                Err(StoreError::ClaimLost)
            } else if refused.contains(&n) {
                Err(StoreError::SensorCap(shared.max_sensors))
            } else {
                Ok(())
            }
        })
        .collect()
}

/// Redis Cluster with a sensor cap: which jobs to refuse, judged on the count of every
/// bucket and on which of the flush's sensors exist, read just before the flush (not
/// atomic with it: see the module docs). All false without a cap.
async fn cluster_cap_check(shared: &Shared, jobs: &[Job]) -> Result<Vec<bool>, StoreError> {
    let mut refused = vec![false; jobs.len()];
    if shared.max_sensors == 0 {
        return Ok(refused);
    }
    let buckets = shared.bucket_keys.len();
    let mut fields: Vec<Vec<&str>> = vec![Vec::new(); buckets];
    for job in jobs {
        for (sensor, _) in &job.updates {
            fields[bucket_of(sensor, buckets)].push(sensor);
        }
    }
    let lens = shared.bucket_keys.iter().map(|key| {
        let mut cmd = redis::cmd("HLEN");
        cmd.arg(key);
        async move { shared.conn.query::<u64>(&cmd).await }
    });
    let lookups = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| !f.is_empty())
        .map(|(b, f)| {
            let mut cmd = redis::cmd("HMGET");
            cmd.arg(&shared.bucket_keys[b]).arg(f);
            async move {
                let values = shared.conn.query::<Vec<Option<Vec<u8>>>>(&cmd).await?;
                Ok::<_, redis::RedisError>(
                    f.iter()
                        .zip(values)
                        .filter(|(_, v)| v.is_some())
                        .map(|(s, _)| *s)
                        .collect::<Vec<_>>(),
                )
            }
        });
    let (lens, known) = shared
        .timed(StoreOp::Count, shared.timeout, async {
            futures_util::future::try_join(
                futures_util::future::try_join_all(lens),
                futures_util::future::try_join_all(lookups),
            )
            .await
        })
        .await
        .map_err(unavailable)?;
    let mut known: std::collections::HashSet<&str> = known.into_iter().flatten().collect();
    let mut tracked: u64 = lens.iter().sum();
    for (j, job) in jobs.iter().enumerate() {
        let new: Vec<&str> = job
            .updates
            .iter()
            .map(|(s, _)| &**s)
            .filter(|s| !known.contains(s))
            .collect();
        if tracked + new.len() as u64 > shared.max_sensors {
            refused[j] = true;
        } else {
            tracked += new.len() as u64;
            known.extend(new);
        }
    }
    Ok(refused)
}

/// One job's updates that fall in one bucket: (job position, updates).
type BucketPart<'a> = (usize, Vec<&'a (Box<str>, Delta)>);

/// Redis Cluster: one `EVALSHA` of `apply_bucket.lua` per touched bucket, all sent at
/// once; a job succeeds when every bucket it touched did.
async fn flush_cluster(shared: &Shared, jobs: &[Job]) -> Vec<Result<(), StoreError>> {
    let buckets = shared.bucket_keys.len();
    let refused = match cluster_cap_check(shared, jobs).await {
        Ok(refused) => refused,
        Err(e) => return jobs.iter().map(|_| Err(e.clone())).collect(),
    };
    // bucket -> the (job, updates) that fall in it, in job order.
    let mut parts: Vec<Vec<BucketPart<'_>>> = (0..buckets).map(|_| Vec::new()).collect();
    for (j, job) in jobs.iter().enumerate() {
        if refused[j] {
            continue;
        }
        for update in &job.updates {
            let part = &mut parts[bucket_of(&update.0, buckets)];
            match part.last_mut() {
                Some((last, list)) if *last == j => list.push(update),
                _ => part.push((j, vec![update])),
            }
        }
    }
    let ttl = millis(shared.idempotency_ttl);
    let calls = parts
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.is_empty())
        .map(|(b, part)| {
            let bucket_key = &shared.bucket_keys[b];
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(APPLY_BUCKET.get_hash())
                .arg(2)
                .arg(bucket_key)
                .arg(markers_key(bucket_key))
                .arg(part.len());
            let mut enc = Encoder::default();
            let mut updates = 0;
            for (j, list) in part {
                cmd.arg(list.len());
                match &jobs[*j].completion {
                    Some(c) => {
                        cmd.arg(&c.key).arg(c.fingerprint.to_hex()).arg(ttl);
                    }
                    None => {
                        cmd.arg("").arg("").arg(0);
                    }
                }
                for (sensor, delta) in list {
                    cmd.arg(sensor.as_bytes());
                    enc.push(&mut cmd, delta);
                }
                updates += list.len();
            }
            let deadline = apply_deadline(shared, updates);
            async move {
                let statuses = shared
                    .call_script::<Vec<i64>>(StoreOp::Apply, &APPLY_BUCKET, &cmd, deadline)
                    .await
                    .map_err(write_error)?;
                wait_for_replicas(shared, bucket_key).await?;
                Ok::<_, StoreError>(statuses)
            }
        });
    let touched: Vec<usize> = (0..buckets).filter(|b| !parts[*b].is_empty()).collect();
    let outcomes = futures_util::future::join_all(calls).await;

    // Fold per-bucket outcomes into per-job results.
    let mut results: Vec<Result<(), StoreError>> = refused
        .iter()
        .map(|&r| {
            if r {
                Err(StoreError::SensorCap(shared.max_sensors))
            } else {
                Ok(())
            }
        })
        .collect();
    let mut some_applied = vec![false; jobs.len()];
    for (b, outcome) in touched.iter().zip(outcomes) {
        for (n, (j, _)) in parts[*b].iter().enumerate() {
            match &outcome {
                Ok(statuses) => {
                    some_applied[*j] = true;
                    if statuses.get(n) == Some(&2) && results[*j].is_ok() {
                        results[*j] = Err(StoreError::KeyReused);
                    }
                }
                Err(e) => {
                    if !matches!(results[*j], Err(StoreError::Interrupted(_))) {
                        results[*j] = Err(e.clone());
                    }
                }
            }
        }
    }
    for (j, result) in results.iter_mut().enumerate() {
        // Part of a job in and part not: the retry with its key completes it.
        if let Err(StoreError::Unavailable(m)) = result
            && some_applied[j]
        {
            *result = Err(StoreError::Interrupted(format!(
                "applied on some shards only: {m}"
            )));
        }
    }
    // Record completed keys so retries are answered from the record.
    let completions = jobs.iter().zip(&results).filter_map(|(job, result)| {
        let c = job.completion.as_ref().filter(|_| result.is_ok())?;
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(COMPLETE.get_hash())
            .arg(1)
            .arg(&c.record)
            .arg(&c.token.0)
            .arg(c.fingerprint.to_hex())
            .arg(ttl);
        Some(async move {
            // Best effort: without it the claim expires and a retry is still applied
            // once, thanks to the per-bucket markers.
            let _ = shared
                .call_script::<Option<String>>(StoreOp::Apply, &COMPLETE, &cmd, shared.timeout)
                .await;
        })
    });
    futures_util::future::join_all(completions).await;
    results
}

/// Writes one update's count, sum and latest instant as script arguments.
#[derive(Default)]
struct Encoder {
    int: itoa::Buffer,
    float: ryu::Buffer,
    latest: String,
}

impl Encoder {
    fn push(&mut self, cmd: &mut redis::Cmd, delta: &Delta) {
        self.latest.clear();
        let _ = write!(self.latest, "{:029}", delta.latest.to_key());
        cmd.arg(self.int.format(delta.count))
            .arg(self.float.format_finite(delta.sum))
            .arg(self.latest.as_str());
    }
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
