//! Pure domain types and maths: sensor ids, timestamps, per-sensor statistics and the
//! folded form of a batch. No I/O, no HTTP, no JSON, no shared state.

mod batch;
mod idempotency;
mod sensor_id;
mod statistics;
mod timestamp;

pub use batch::{Batch, Delta};
pub use idempotency::{Fingerprint, IdempotencyKey, IdempotencyKeyError, MAX_IDEMPOTENCY_KEY_LEN};
pub use sensor_id::{MAX_SENSOR_ID_BYTES, SensorId, SensorIdError};
pub use statistics::Summary;
pub use timestamp::{DateMemo, Timestamp, TimestampError, TimestampText};
