#!/usr/bin/env bash
# End-to-end latency at a steady rate: the synthetic source paced at each
# RATE (posts/s) into a file sink; prints p50 / p99 / max from the collector's
# end-to-end histogram (read by the source → written by the sink), which has
# bucket bounds 0.25, 0.5, 1, 2.5, 5, 10 … ms: p50/p99 are upper estimates,
# max is exact. Usage:
#
#   scripts/bench-latency.sh [SECONDS per rate (default 10)] [RATE …] (default 1000 10000)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(1000 10000)
cargo build --release -q -p traptor-host
bin=target/release/traptor-host
dir=target/bench
mkdir -p "$dir"
echo "rate_posts_per_s  posts  p50_ms  p99_ms  max_ms  ($(nproc) cores)"
for rate in "${rates[@]}"; do
  count=$((rate * secs))
  rm -f "$dir/latency-out.jsonl"*
  cat > "$dir/latency.toml" <<TOML
[traptor]
type = "track"
id = 0
stats_interval_secs = 0

[source]
type = "synthetic"
rate = $rate
count = $count

[rules]
type = "file"
path = "$(pwd)/examples/rules.jsonl"

[sink]
type = "file"
path = "latency-out.jsonl"
TOML
  "$bin" --pipeline "$dir/latency.toml" --log-format json 2> "$dir/latency-log.jsonl"
  python3 - "$dir/latency-log.jsonl" "$rate" <<'PY'
import json, sys
fin = [json.loads(l) for l in open(sys.argv[1]) if '"pipeline finished"' in l][-1]
print(f"{sys.argv[2]:>16}  {fin['posts']:>5}  {fin['latency_p50_ms']:>6}  {fin['latency_p99_ms']:>6}  {fin['latency_max_ms']:>6}")
PY
done
