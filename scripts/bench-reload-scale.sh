#!/usr/bin/env bash
# A reload of a large rule set while posts flow: does it stall the workers,
# and how much memory does the swap take? A synthetic stream paced at RATE
# posts/s runs against IDS follow ids from a rules file for 12 s; 4 s in, one
# rule is appended to the file, so the watcher re-reads, parses and compiles
# the whole set on the blocking pool and swaps it in. The same run without
# the change is the baseline. Printed for both: posts/s per second (the
# lowest second is the stall, if any), end-to-end latency p99 and max, peak
# RSS; and the reload's own load, compile and swap times.
#
#   scripts/bench-reload-scale.sh [IDS (default 1000000)] [RATE (default 50000)]
#
# Rule files come from scripts/bench-scale.sh (written there when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
ids=${1:-1000000}
rate=${2:-50000}
cargo build --release -q -p traptor-host --bin traptor-host
bin=$(pwd)/target/release/traptor-host
scale=target/bench/scale
[ -s "$scale/follow-$ids.jsonl" ] || RULES_ONLY=1 scripts/bench-scale.sh 0 follow
[ -s "$scale/follow-$ids.jsonl" ] || { echo "no rule file with $ids follow ids (bench-scale writes 5000, 100000, 1000000)" >&2; exit 64; }
dir=$(pwd)/target/bench/reload
mkdir -p "$dir"
posts=$((rate * 12))

run() { # reload? → summary line
    local reload=$1
    cp "$scale/follow-$ids.jsonl" "$dir/rules.jsonl"
    rm -f "$dir/out.jsonl"*
    cat > "$dir/p.toml" <<TOML
[traptor]
type = "follow"
stats_interval_secs = 1
[source]
type = "synthetic"
rate = $rate
count = $posts
[rules]
type = "file"
path = "$dir/rules.jsonl"
poll_interval_ms = 200
[sink]
type = "file"
path = "$dir/out.jsonl"
TOML
    sync
    /usr/bin/time -f "%M" -o "$dir/rss" "$bin" --pipeline "$dir/p.toml" --log-format json 2> "$dir/log-$reload.jsonl" &
    local pid=$!
    if [ "$reload" = reload ]; then
        sleep 4
        echo '{"rule_id": "f-new", "value": "424242", "rule_type": "follow"}' >> "$dir/rules.jsonl"
    fi
    wait "$pid"
    /usr/bin/python3 - "$dir/log-$reload.jsonl" "$dir/rss" "$reload" <<'PY'
import json, sys
log, rss, label = sys.argv[1], int(open(sys.argv[2]).read().split()[-1]) // 1024, sys.argv[3]
lines = [json.loads(l) for l in open(log) if l.startswith("{")]
rates = [int(l["posts_per_sec"]) for l in lines if l.get("message") == "throughput"][1:-1]
fin = [l for l in lines if l.get("message") == "pipeline finished"][-1]
changes = [l for l in lines if l.get("message") == "rules file changed; reloading"]
swaps = [l for l in lines if l.get("message") == "matcher swapped"]
extra = ""
if label == "reload":
    if not changes or not swaps:
        sys.exit(f"the change was not picked up: {len(changes)} reloads, {len(swaps)} swaps")
    extra = (f"; reload: read + parse {changes[-1]['load_ms']} ms, compile + swap {swaps[-1]['compile_ms']} ms")
print(f"{label:9} posts/s per second min {min(rates)} median {sorted(rates)[len(rates) // 2]} max {max(rates)}; "
      f"latency p99 {fin['latency_p99_ms']} ms, max {fin['latency_max_ms']} ms; peak RSS {rss} MB{extra}")
PY
}

echo "follow ids: $ids, paced at $rate posts/s for 12 s, $(nproc) cores" >&2
run baseline
run reload
