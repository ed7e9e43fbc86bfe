#!/usr/bin/env bash
# Longer fuzzing than CI's: run the property-test fuzzers (host/src/fuzz.rs)
# with fresh seeds and many cases until SECONDS have passed.
#
#   scripts/fuzz.sh [SECONDS (default 300)] [CASES per round (default 5000)]
#
# A failure stops the loop; its seed is printed and proptest saves the
# shrunk case in host/fuzz-regressions.txt (commit that line: every later
# run replays it first).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-300}
cases=${2:-5000}
end=$(( $(date +%s) + secs ))
cargo nextest --version >/dev/null 2>&1 || { echo "cargo-nextest is needed" >&2; exit 2; }
cargo build -q --workspace --all-targets
round=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
  echo "round $round: seed $seed, $cases cases per target" >&2
  if ! TRAPTOR_FUZZ_SEED=$seed TRAPTOR_FUZZ_CASES=$cases \
      cargo nextest run --cargo-quiet --status-level fail --workspace --no-fail-fast -E 'package(traptor-host) & test(fuzz::)' >&2; then
    echo "a fuzzer failed with TRAPTOR_FUZZ_SEED=$seed (see host/fuzz-regressions.txt)" >&2
    exit 1
  fi
done
echo "no failure in $round round(s), $secs s" >&2
