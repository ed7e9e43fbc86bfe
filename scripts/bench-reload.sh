#!/usr/bin/env bash
# Rule reload latency with Redis: time from PUBLISH of a `<type>:<id>` notice
# to the collector's log line "matcher swapped" (new rules in use), over 20
# changes, while the collector processes a synthetic stream.
#
#   scripts/bench-reload.sh [RULES (default 400)]
set -euo pipefail
cd "$(dirname "$0")/.."
rules=${1:-400}
cargo build --release -q -p traptor-host
bin=$(pwd)/target/release/traptor-host
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" >/dev/null 2>&1 &
rpid=$!
trap 'kill $rpid 2>/dev/null; kill $hpid 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done
python3 - "$rules" > "$dir/rules.jsonl" <<'PY'
import json, sys
for i in range(int(sys.argv[1])):
    print(json.dumps({"rule_id": f"r{i}", "value": f"word{i} coffee", "rule_type": "track"}))
PY
"$bin" rules --redis "redis://127.0.0.1:$port" import "$dir/rules.jsonl" --type track >/dev/null 2>&1
cat > "$dir/p.toml" <<TOML
[traptor]
type = "track"
stats_interval_secs = 0
[source]
type = "synthetic"
rate = 2000
[rules]
type = "redis"
url = "redis://127.0.0.1:$port"
[sink]
type = "file"
path = "out.jsonl"
TOML
"$bin" --pipeline "$dir/p.toml" --log-format json 2> "$dir/log.jsonl" &
hpid=$!
sleep 2
python3 - "$port" "$dir/log.jsonl" <<'PY'
import json, subprocess, sys, time, datetime
port, log = sys.argv[1], sys.argv[2]
def swaps():
    return [json.loads(l) for l in open(log) if '"matcher swapped"' in l]
lat = []
for i in range(20):
    subprocess.run(["redis-cli", "-p", port, "hset", "traptor-track:0:0", "value", f"changed{i} coffee"], capture_output=True, check=True)
    n = len(swaps())
    t0 = time.time()
    subprocess.run(["redis-cli", "-p", port, "publish", "traptor-notify", "track:0"], capture_output=True, check=True)
    while len(swaps()) == n:
        time.sleep(0.001)
    ts = swaps()[-1]["timestamp"]
    t1 = datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    lat.append((t1 - t0) * 1000)
lat.sort()
print(f"reload latency PUBLISH -> new matcher in use ({len(lat)} changes): "
      f"p50 {lat[len(lat)//2]:.1f} ms, max {lat[-1]:.1f} ms")
PY
