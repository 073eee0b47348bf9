//! `ingest::decode` against the serde_json reference: any body, the same accept or
//! reject, the same index, the same folded batch.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_stats::ingest::reference::check_decode;

fuzz_target!(|body: &[u8]| check_decode(body));
