#!/usr/bin/env bash
# Builds the release server and the load generator, then runs examples/loadtest.rs with
# the server pinned to CPU 0 and the load generator to CPU 1 (when there are 2+ CPUs).
# Extra arguments go to the load generator, e.g. --duration 20s --workloads w1,w2.
# Traffic goes only to 127.0.0.1; every workload stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin sensor-stats --example loadtest --example naive
if [ "$(nproc)" -ge 2 ]; then
  exec taskset -c 1 target/release/examples/loadtest --server-cpu 0 "$@"
else
  exec target/release/examples/loadtest "$@"
fi
