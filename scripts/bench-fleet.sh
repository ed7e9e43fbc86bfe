#!/usr/bin/env bash
# Fleet takeover from outside: runs the kill -9 / SIGTERM takeover test RUNS times
# (real redis-server, stand-in X v2 stream at 200 posts/s, collectors with
# id = "auto", lease_secs = 2) and prints each run's takeover times, gap and
# duplicates as the test measured them. Needs what scripts/test.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
cargo build -q --workspace --all-targets
for i in $(seq 1 "$runs"); do
  out=$(cargo nextest run --cargo-quiet -p traptor-tests --test redis -E 'test(fills_the_gap)' --no-capture 2>&1) || {
    echo "run $i failed:"; echo "$out" | tail -40; exit 1; }
  echo "run $i: $(echo "$out" | grep -E '^takeover after kill' | sed 's/^takeover after //') |" \
    "$(echo "$out" | grep -E '^takeover after SIGTERM' | sed 's/^takeover after //') |" \
    "$(echo "$out" | grep -oE 'gap_secs=[0-9]+' | head -1) |" \
    "$(echo "$out" | grep -E '^sent ' )"
done
