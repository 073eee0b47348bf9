//! `Timestamp::parse` against the chrono reference: any text, the same accept or
//! reject, the same instant.

#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_stats::ingest::reference::check_timestamp;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        check_timestamp(text);
    }
});
