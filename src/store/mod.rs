//! Where statistics live: the [`Store`] the HTTP layer calls, one backend chosen at
//! start-up. Today that is the in-memory [`MemoryStore`]; backends that talk to a server
//! (Redis) add a variant here and their failure modes to [`StoreError`].

mod memory;

use std::sync::Arc;

pub use memory::MemoryStore;

use crate::domain::{Batch, SensorId, Summary};

/// Why a store operation failed.
///
/// The memory backend cannot fail, so this has no variants yet; a networked backend adds
/// its own (unavailable, timed out) and `http::error` maps them to 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {}

/// A cheap, cloneable handle to the configured backend.
///
/// An enum rather than a trait object: calls stay static and no future is boxed per call.
#[derive(Debug, Clone)]
pub enum Store {
    /// Statistics in this process's memory.
    Memory(Arc<MemoryStore>),
}

impl Store {
    /// A new, empty in-memory store.
    pub fn memory() -> Self {
        Self::Memory(Arc::new(MemoryStore::default()))
    }

    /// Applies every delta of `batch`. A sensor's count and sum change together.
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot be reached (never for memory).
    pub async fn record_batch(&self, batch: &Batch<'_>) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.record_batch(batch);
                Ok(())
            }
        }
    }

    /// The statistics of `sensor`; the empty summary for an unknown sensor.
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot be reached (never for memory).
    pub async fn get(&self, sensor: SensorId<'_>) -> Result<Summary, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.get(sensor).unwrap_or_default()),
        }
    }

    /// Forgets `sensor`; later measurements start a fresh history. Unknown sensors are fine.
    ///
    /// # Errors
    /// [`StoreError`] when the backend cannot be reached (never for memory).
    pub async fn delete(&self, sensor: SensorId<'_>) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.delete(sensor);
                Ok(())
            }
        }
    }

    /// How many sensors the store tracks, for the `sensors tracked` gauge.
    pub fn sensors_tracked(&self) -> usize {
        match self {
            Self::Memory(m) => m.len(),
        }
    }
}
