//! Where statistics live: the [`Store`] the HTTP layer calls, one backend chosen at
//! start-up (`--store`, `--data-dir`): [`MemoryStore`] in this process, [`DurableStore`]
//! in this process and on disk, or [`RedisStore`] shared by every replica. Each keeps the
//! Idempotency-Key records next to the statistics, so a batch and the record of its key
//! are applied in one step.

mod durable;
mod idempotency;
mod memory;
mod redis;

use std::{sync::Arc, time::Duration};

pub use durable::{DurableSettings, DurableStore};
pub use memory::MemoryStore;
pub use redis::{RedisSettings, RedisStore, Target};
use tokio_util::sync::CancellationToken;

pub use self::idempotency::Claims;
use crate::{
    config::{Config, StoreKind},
    domain::{Batch, Fingerprint, SensorId, Summary},
    metrics::Metrics,
};

/// Why a store operation failed. Every variant is answered 503 with `Retry-After`,
/// except [`StoreError::ClaimLost`] (409), [`StoreError::KeyReused`] (422) and
/// [`StoreError::SensorCap`] (507).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached; nothing was applied.
    #[error("the statistics store cannot be reached ({0}); nothing was applied, retry later")]
    Unavailable(String),
    /// The store failed while carrying out a write: it may or may not have been applied.
    #[error(
        "the statistics store failed while applying the request ({0}); it may have been \
         applied: retry with the same Idempotency-Key to make sure it counts exactly once"
    )]
    Interrupted(String),
    /// The request's Idempotency-Key claim expired before it finished; nothing was applied.
    #[error(
        "the Idempotency-Key claim of this request expired before it finished (request \
         timeout); nothing was applied, retry with the same key"
    )]
    ClaimLost,
    /// Redis Cluster: a shard holds this Idempotency-Key's marker from an earlier
    /// attempt with another body.
    #[error(
        "this Idempotency-Key was already used with a different request body; the parts \
         applied under it stay, nothing of this body was applied where they are"
    )]
    KeyReused,
    /// The batch would make the store track more sensors than `--max-sensors`; nothing
    /// of it was applied.
    #[error(
        "this batch would make the store track more than {0} sensors (--max-sensors); \
         nothing was applied. Measurements of sensors already tracked are still accepted"
    )]
    SensorCap(u64),
}

/// A request's hold on an Idempotency-Key, from its headers until it is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimToken(String);

impl ClaimToken {
    fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }
}

/// What the store knows of an Idempotency-Key when a request arrives with it.
#[derive(Debug)]
pub enum Claim {
    /// Nobody holds the key: this request now does, until it completes or releases it.
    Claimed(ClaimToken),
    /// Another request with this key is being processed (on any replica).
    InProgress,
    /// A request with this key succeeded inside the window, with a body of this fingerprint.
    Completed(Fingerprint),
}

/// The idempotency record a batch completes: applied in the same step as the batch.
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// The (namespaced) Idempotency-Key.
    pub key: &'a str,
    /// The claim taken when the request arrived.
    pub token: &'a ClaimToken,
    /// The fingerprint of the body.
    pub fingerprint: Fingerprint,
}

/// A cheap, cloneable handle to the configured backend.
///
/// An enum rather than a trait object: calls stay static and no future is boxed per call.
#[derive(Debug, Clone)]
pub enum Store {
    /// Statistics in this process's memory.
    Memory(Arc<MemoryStore>, Arc<Claims>),
    /// Statistics in a Redis shared by every replica.
    Redis(Arc<RedisStore>),
    /// Statistics in this process's memory, written ahead to a log in `--data-dir`.
    Durable(Arc<DurableStore>),
}

impl Store {
    /// A new, empty in-memory store with the default windows and no sensor cap (tests,
    /// benches).
    pub fn memory() -> Self {
        let defaults = Config::default();
        Self::memory_with(defaults.request_timeout, defaults.idempotency_ttl, None)
    }

    fn memory_with(pending_ttl: Duration, idempotency_ttl: Duration, max_sensors: Option<u64>) -> Self {
        let store = match max_sensors {
            Some(max) => MemoryStore::with_max_sensors(usize::try_from(max).unwrap_or(usize::MAX)),
            None => MemoryStore::default(),
        };
        Self::Memory(
            Arc::new(store),
            Arc::new(Claims::new(pending_ttl, idempotency_ttl)),
        )
    }

    /// The backend `config` asks for. A Redis store connects in the background: it is
    /// not ready until it has reached Redis. A durable store is not ready until
    /// [`Store::start`] has read its data dir back.
    ///
    /// # Errors
    /// When the Redis URL cannot be used, or the data dir cannot be created or locked.
    pub fn from_config(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        match config.store {
            StoreKind::Memory => match DurableSettings::from_config(config) {
                Some(settings) => Ok(Self::Durable(Arc::new(DurableStore::open(settings, metrics)?))),
                None => Ok(Self::memory_with(
                    config.request_timeout,
                    config.idempotency_ttl,
                    config.max_sensors.map(std::num::NonZeroU64::get),
                )),
            },
            StoreKind::Redis | StoreKind::RedisCluster => {
                let settings = RedisSettings::from_config(config)?;
                Ok(Self::Redis(Arc::new(RedisStore::new(settings, metrics)?)))
            }
        }
    }

    /// Applies every delta of `batch` in one atomic step, together with the idempotency
    /// record of `completion` when there is one. A sensor's count and sum change together.
    /// With a data dir, it returns once the batch is in the log (fsynced with `--fsync
    /// always`) and applied. With `--max-sensors`, a batch that would pass the cap is
    /// refused whole.
    ///
    /// # Errors
    /// [`StoreError`] when the backend fails (never for memory), the claim was lost, or
    /// the batch does not fit under the sensor cap.
    pub async fn record_batch(
        &self,
        batch: &Batch<'_>,
        completion: Option<Completion<'_>>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m, claims) => {
                let apply = || {
                    m.try_record_batch(batch)
                        .map_err(|cap| StoreError::SensorCap(cap as u64))
                };
                match completion {
                    None => apply(),
                    Some(c) => claims
                        .complete(c.key, c.token, c.fingerprint, apply)
                        .unwrap_or(Err(StoreError::ClaimLost)),
                }
            }
            Self::Redis(r) => r.record_batch(batch, completion).await,
            Self::Durable(d) => d.record_batch(batch, completion).await,
        }
    }

    /// Start-up work before the store is ready: a durable store reads its data dir back
    /// (blocking work, run off the async workers). Nothing for the others.
    ///
    /// # Errors
    /// When the data dir cannot be read back (damage, I/O errors).
    pub async fn start(&self) -> anyhow::Result<()> {
        match self {
            Self::Durable(d) => {
                let d = Arc::clone(d);
                tokio::task::spawn_blocking(move || d.recover()).await?
            }
            Self::Memory(..) | Self::Redis(_) => Ok(()),
        }
    }

    /// After the drain: a durable store writes its last snapshot and closes its log.
    pub async fn shutdown(&self) {
        if let Self::Durable(d) = self {
            d.shutdown().await;
        }
    }

    /// The durable backend, when that is the one in use (tests, snapshots on demand).
    pub fn durable(&self) -> Option<&Arc<DurableStore>> {
        match self {
            Self::Durable(d) => Some(d),
            _ => None,
        }
    }

    /// Claims an Idempotency-Key for a request that just arrived.
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot be reached.
    pub async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        match self {
            Self::Memory(_, claims) => Ok(claims.claim(key)),
            Self::Redis(r) => r.claim(key).await,
            Self::Durable(d) => d.claim(key),
        }
    }

    /// Gives up a claim after the request failed, so the client may retry at once. Best
    /// effort: a claim that cannot be released expires after the request timeout.
    pub async fn release(&self, key: &str, token: &ClaimToken) {
        match self {
            Self::Memory(_, claims) => claims.release(key, token),
            Self::Redis(r) => r.release(key, token).await,
            Self::Durable(d) => d.release(key, token),
        }
    }

    /// The statistics of `sensor`; the empty summary for an unknown sensor.
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot be reached (never for memory).
    pub async fn get(&self, sensor: SensorId<'_>) -> Result<Summary, StoreError> {
        match self {
            Self::Memory(m, _) => Ok(m.get(sensor).unwrap_or_default()),
            Self::Redis(r) => r.get(sensor).await,
            Self::Durable(d) => d.get(sensor),
        }
    }

    /// Forgets `sensor`; later measurements start a fresh history. Unknown sensors are fine.
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot be reached (never for memory).
    pub async fn delete(&self, sensor: SensorId<'_>) -> Result<(), StoreError> {
        match self {
            Self::Memory(m, _) => {
                m.delete(sensor);
                Ok(())
            }
            Self::Redis(r) => r.delete(sensor).await,
            Self::Durable(d) => d.delete(sensor).await,
        }
    }

    /// How many sensors the store tracks, for the `sensors tracked` gauge; `None` when
    /// the backend cannot say right now.
    pub async fn sensors_tracked(&self) -> Option<usize> {
        match self {
            Self::Memory(m, _) => Some(m.len()),
            Self::Redis(r) => r.sensors_tracked().await,
            Self::Durable(d) => Some(d.sensors_tracked()),
        }
    }

    /// Whether the backend can take requests (memory: always; durable: once its data
    /// dir is read back).
    pub fn is_ready(&self) -> bool {
        match self {
            Self::Memory(..) => true,
            Self::Redis(r) => r.is_ready(),
            Self::Durable(d) => d.is_ready(),
        }
    }

    /// The store's upkeep until `stop` is cancelled: expiring idempotency records in
    /// memory (and periodic snapshots with a data dir); watching the connection
    /// (readiness) for Redis.
    pub async fn run_upkeep(self, stop: CancellationToken) {
        match self {
            Self::Memory(_, claims) => {
                let mut tick = tokio::time::interval(Duration::from_secs(10));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => claims.purge(),
                    }
                }
            }
            Self::Redis(r) => r.watch(stop).await,
            Self::Durable(d) => d.run_upkeep(stop).await,
        }
    }
}
