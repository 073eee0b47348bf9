#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoder and the timestamp parser against their slow
# references (src/ingest/reference.rs), with cargo-fuzz and libFuzzer on stable Rust.
#
#   scripts/fuzz.sh                  # both targets, 30 s each (what scripts/test.sh runs)
#   scripts/fuzz.sh 3600 decode      # one target for an hour
#
# New inputs go to a scratch corpus under fuzz/target, never into the committed seed
# corpus (fuzz/corpus); a failing input is written to fuzz/artifacts/<target>/ and the
# script fails. Reproduce one with `scripts/fuzz.sh repro <target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

# cargo-fuzz asks rustc for instrumentation flags that stable accepts only with
# RUSTC_BOOTSTRAP; no sanitizer, since the code under test has no unsafe of its own.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi
fuzz=(cargo fuzz run --sanitizer none --release --debug-assertions)

if [ "${1:-}" = repro ]; then
  exec "${fuzz[@]}" "$2" "$3"
fi

seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode timestamp)

for target in "${targets[@]}"; do
  scratch=target/corpus/$target
  log=target/fuzz-$target.log
  mkdir -p "$scratch" "artifacts/$target"
  echo "== fuzz $target for ${seconds}s (seed corpus fuzz/corpus/$target, log fuzz/$log)"
  status=0
  "${fuzz[@]}" "$target" "$scratch" "corpus/$target" -- \
    -max_total_time="$seconds" -dict="$target.dict" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$target/" -print_final_stats=1 >"$log" 2>&1 || status=$?
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)|^Done ' "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log" >&2
    echo "fuzz $target failed (exit $status): the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
