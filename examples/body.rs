//! Prints a deterministic `POST /data` body (`sensor_stats::workload::batch`) to stdout,
//! for load generators that read a file (`scripts/wrk-compare.sh`):
//!
//!     target/release/examples/body <measurements> <sensors> <seed> > body.json

#![allow(missing_docs)]

use std::io::Write as _;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("three numbers: measurements sensors seed"))
        .collect();
    let [measurements, sensors, seed] = args[..] else {
        panic!("usage: body <measurements> <sensors> <seed>");
    };
    let body = sensor_stats::workload::batch(measurements, sensors, seed as u64);
    std::io::stdout()
        .write_all(body.as_bytes())
        .expect("write to stdout");
}
