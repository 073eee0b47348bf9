#!/usr/bin/env bash
# sensor-stats against the naive server of examples/naive.rs with wrk (Debian package
# `wrk`), the alternative to scripts/loadtest.sh: each server pinned to CPU 0, `wrk -t1
# -c64` pinned to CPU 1, W1 (1000-measurement batches), W2 (one measurement) and W3
# (GET /statistics over 100 sensors), the servers alternating, ROUNDS times. Prints
# requests (W1: measurements) per server CPU-second and wrk's p99 for every run.
# sensor-stats runs at its default log level. Traffic goes only to 127.0.0.1.
#
#   scripts/wrk-compare.sh                       # 3 rounds of 8 s per cell
#   ROUNDS=2 DURATION=10 WORKLOADS="w2 w3" scripts/wrk-compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
WORKLOADS=${WORKLOADS:-w1 w2 w3}
SERVERS=${SERVERS:-sensor-stats naive}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
cargo build --release --locked --bin sensor-stats --example naive --example body >&2

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
target/release/examples/body 1000 100 1 > "$work/w1.json"
port=18089

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

run_one() { # server workload -> prints one table row
  local server=$1 workload=$2 bin pid script measurements=1
  case $server in
    sensor-stats) bin=target/release/sensor-stats ;;
    naive) bin=target/release/examples/naive ;;
  esac
  RUST_LOG= taskset -c 0 "$bin" --host 127.0.0.1 --port $port >/dev/null 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$port/healthz" && break
    sleep 0.1
  done
  case $workload in
    w1) script=scripts/wrk/post-batch.lua; measurements=1000 ;;
    w2) script=scripts/wrk/post-one.lua ;;
    w3) script=scripts/wrk/get-statistics.lua
        curl -fs -o /dev/null -H 'content-type: application/json' \
          --data-binary @"$work/w1.json" "http://127.0.0.1:$port/data" ;;
  esac
  BODY="$work/w1.json" taskset -c 1 wrk -t1 -c64 -d2 -s $script "http://127.0.0.1:$port" >/dev/null
  local before after
  before=$(cpu_ticks $pid)
  BODY="$work/w1.json" taskset -c 1 wrk -t1 -c64 -d"$DURATION" --latency -s $script \
    "http://127.0.0.1:$port" > "$work/out"
  after=$(cpu_ticks $pid)
  kill -TERM $pid; wait $pid 2>/dev/null || true
  awk -v server="$server" -v workload="$workload" -v m=$measurements \
      -v cpu="$(( after - before ))" -v dur="$DURATION" '
    / requests in / { requests = $1 }
    /^ +99%/ { p99 = $2 }
    END {
      secs = cpu / 100
      printf "| %s | %s | %.0f | %.2f | %.0f | %s |\n", workload, server, requests * m / dur, secs,
             requests * m / secs, p99
    }' "$work/out"
}

echo "| workload | server | per second (W1: measurements) | server CPU s | per server CPU-second | p99 |"
echo "|---|---|---|---|---|---|"
for round in $(seq "$ROUNDS"); do
  for w in $WORKLOADS; do
    for s in $SERVERS; do
      run_one "$s" "$w"
    done
  done
done
