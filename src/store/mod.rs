//! Where statistics live: the [`Store`] the HTTP layer calls, one backend chosen at
//! start-up (`--store`): [`MemoryStore`] in this process, or [`RedisStore`] shared by
//! every replica. Both keep the Idempotency-Key records next to the statistics, so a
//! batch and the record of its key are applied in one step.

mod idempotency;
mod memory;
mod redis;

use std::{sync::Arc, time::Duration};

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
/// except [`StoreError::ClaimLost`] (409) and [`StoreError::KeyReused`] (422).
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
/// An enum rather than a trait object: calls stay static and the in-memory backend's
/// calls box nothing. The Redis calls of the request path are boxed, so their large
/// futures (a network round trip, microseconds anyway) do not make every request's
/// future larger, in memory mode too.
#[derive(Debug, Clone)]
pub enum Store {
    /// Statistics in this process's memory.
    Memory(Arc<MemoryStore>, Arc<Claims>),
    /// Statistics in a Redis shared by every replica.
    Redis(Arc<RedisStore>),
}

impl Store {
    /// A new, empty in-memory store with the default windows (tests, benches).
    pub fn memory() -> Self {
        let defaults = Config::default();
        Self::memory_with(defaults.request_timeout, defaults.idempotency_ttl)
    }

    fn memory_with(pending_ttl: Duration, idempotency_ttl: Duration) -> Self {
        Self::Memory(
            Arc::new(MemoryStore::default()),
            Arc::new(Claims::new(pending_ttl, idempotency_ttl)),
        )
    }

    /// The backend `config` asks for. A Redis store connects in the background: it is
    /// not ready until it has reached Redis.
    ///
    /// # Errors
    /// When the Redis URL cannot be used.
    pub fn from_config(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        match config.store {
            StoreKind::Memory => Ok(Self::memory_with(config.request_timeout, config.idempotency_ttl)),
            StoreKind::Redis | StoreKind::RedisCluster => {
                let settings = RedisSettings::from_config(config)?;
                Ok(Self::Redis(Arc::new(RedisStore::new(settings, metrics)?)))
            }
        }
    }

    /// Applies every delta of `batch` in one atomic step, together with the idempotency
    /// record of `completion` when there is one. A sensor's count and sum change together.
    ///
    /// # Errors
    /// [`StoreError`] when the backend fails (never for memory, except a lost claim).
    pub async fn record_batch(
        &self,
        batch: &Batch<'_>,
        completion: Option<Completion<'_>>,
    ) -> Result<(), StoreError> {
        match self {
            Self::Memory(m, claims) => match completion {
                None => {
                    m.record_batch(batch);
                    Ok(())
                }
                Some(c) => {
                    if claims.complete(c.key, c.token, c.fingerprint, || m.record_batch(batch)) {
                        Ok(())
                    } else {
                        Err(StoreError::ClaimLost)
                    }
                }
            },
            Self::Redis(r) => Box::pin(r.record_batch(batch, completion)).await,
        }
    }

    /// Claims an Idempotency-Key for a request that just arrived.
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot be reached.
    pub async fn claim(&self, key: &str) -> Result<Claim, StoreError> {
        match self {
            Self::Memory(_, claims) => Ok(claims.claim(key)),
            Self::Redis(r) => Box::pin(r.claim(key)).await,
        }
    }

    /// Gives up a claim after the request failed, so the client may retry at once. Best
    /// effort: a claim that cannot be released expires after the request timeout.
    pub async fn release(&self, key: &str, token: &ClaimToken) {
        match self {
            Self::Memory(_, claims) => claims.release(key, token),
            Self::Redis(r) => r.release(key, token).await,
        }
    }

    /// The statistics of `sensor`; the empty summary for an unknown sensor.
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot be reached (never for memory).
    pub async fn get(&self, sensor: SensorId<'_>) -> Result<Summary, StoreError> {
        match self {
            Self::Memory(m, _) => Ok(m.get(sensor).unwrap_or_default()),
            Self::Redis(r) => Box::pin(r.get(sensor)).await,
        }
    }

    /// The statistics of `sensor` when the backend can answer without waiting (memory:
    /// always); `None` when it has to be asked over the network (then call [`Store::get`]).
    pub fn get_now(&self, sensor: SensorId<'_>) -> Option<Summary> {
        match self {
            Self::Memory(m, _) => Some(m.get(sensor).unwrap_or_default()),
            Self::Redis(_) => None,
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
            Self::Redis(r) => Box::pin(r.delete(sensor)).await,
        }
    }

    /// How many sensors the store tracks, for the `sensors tracked` gauge; `None` when
    /// the backend cannot say right now.
    pub async fn sensors_tracked(&self) -> Option<usize> {
        match self {
            Self::Memory(m, _) => Some(m.len()),
            Self::Redis(r) => r.sensors_tracked().await,
        }
    }

    /// Whether the backend can take requests (memory: always).
    pub fn is_ready(&self) -> bool {
        match self {
            Self::Memory(..) => true,
            Self::Redis(r) => r.is_ready(),
        }
    }

    /// The store's upkeep until `stop` is cancelled: expiring idempotency records in
    /// memory; watching the connection (readiness) for Redis.
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
        }
    }
}
