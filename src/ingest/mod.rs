//! Turning request bytes into domain values: JSON decoding and validation of a batch.
//! Nothing here touches shared state, so a rejected request has applied nothing.

mod decode;
mod fast;
#[cfg(any(test, feature = "fuzzing"))]
pub mod reference;

pub use decode::{DecodeError, DecodeErrorKind, MAX_DEPTH, PADDING, SCRATCH_KEEP_LIMIT, decode};
