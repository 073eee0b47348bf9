//! Turning request bytes into domain values: JSON decoding and validation of a batch.
//! Nothing here touches shared state, so a rejected request has applied nothing.

mod decode;

pub use decode::{DecodeError, DecodeErrorKind, MAX_DEPTH, PADDING, SCRATCH_KEEP_LIMIT, decode};
