#!/usr/bin/env bash
# End-to-end throughput against the JSON floor, on corpora of several
# layouts (issue 23): replay a corpus → match 400-odd rules → write, timed
# from outside (the process's wall clock, start to exit), beside the floor
# (host/examples/floor.rs: one thread, serde_json parse + one field + write)
# on the same corpus, alternating floor and pipeline run by run; medians.
#
#   scripts/bench-e2e.sh [POSTS (default 100000)] [WORKERS (default: cores)]
#   SHAPES="compact spaced escaped shuffled python v2" scripts/bench-e2e.sh   # the default: all
#   RUNS=5 (default)            runs of each side per shape
#   OUT=null (default) | file   where both sides write: /dev/null keeps the
#                               disk's write-back out of the comparison (on
#                               this machine a file halves the pipeline's
#                               figure and makes it vary run to run); file
#                               measures it (the file sink, fsync at the end)
#   DEDUP=local|redis           with [dedup] (ids kept here / in a redis-server started here)
#   PROVENANCE=on (default)|off traptor.provenance in every envelope (issue 26), or not
#
# Shapes (scripts/shape.py rewrites the generator's corpus; the same posts):
#   compact  the generator's layout        spaced   ", " and ": " separators
#   escaped  non-ASCII as \uXXXX, "\/"     shuffled keys of every object in another order
#   python   json.dumps defaults (spaced + escaped)
#   v2       the posts as X v2 stream messages (attributed by matching_rules)
set -euo pipefail
cd "$(dirname "$0")/.."
posts=${1:-100000}
workers=${2:-$(nproc)}
runs=${RUNS:-5}
out_mode=${OUT:-null}
case "${PROVENANCE:-on}" in on) provenance=true ;; off) provenance=false ;; *) echo "PROVENANCE must be on or off" >&2; exit 64 ;; esac
read -r -a shapes <<< "${SHAPES:-compact spaced escaped shuffled python v2}"
cargo build --release -q -p traptor-host --bin traptor-host --example floor
bin=target/release/traptor-host
dir=target/bench
mkdir -p "$dir"
base="$dir/corpus-$posts.jsonl"
[ -s "$base" ] || "$bin" generate --count "$posts" --seed 1 --output "$base"

redis_url=""
if [ "${DEDUP:-}" = redis ]; then
  rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
  trap 'redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true' EXIT
  until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done
  redis_url="redis://127.0.0.1:$rport"
elif [ -n "${DEDUP:-}" ] && [ "$DEDUP" != local ]; then
  echo "DEDUP must be local or redis" >&2; exit 64
fi

pipeline() { # shape → the pipeline file
  local shape=$1 format=twitter_v1 sink
  [ "$shape" = v2 ] && format=x_v2
  if [ "$out_mode" = file ]; then sink=$'type = "file"\npath = "out.jsonl"'; else sink='type = "stdout"'; fi
  cat > "$dir/bench-$shape.toml" <<TOML
[traptor]
type = "track"
id = 0
stats_interval_secs = 0
provenance = ${provenance}

[source]
type = "replay"
path = "corpus-$posts-$shape.jsonl"
format = "$format"

[rules]
type = "file"
path = "$(pwd)/examples/rules.jsonl"

[sink]
$sink

[pipeline]
workers = $workers
batch_size = 512
TOML
  if [ -n "${DEDUP:-}" ]; then
    rm -f "$dir/dedup.bin"
    printf '\n[dedup]\nsnapshot = "dedup.bin"\n' >> "$dir/bench-$shape.toml"
    [ -n "$redis_url" ] && printf 'redis = "%s"\n' "$redis_url" >> "$dir/bench-$shape.toml"
  fi
  echo "$dir/bench-$shape.toml"
}

echo "$posts posts per corpus, $workers workers, $(nproc) cores, output to ${out_mode/null//dev/null}, median of $runs (floor and pipeline alternating)" >&2
printf '%-9s %7s %12s %14s %14s %7s\n' shape MB floor/s pipeline/s in-process/s ratio
for shape in "${shapes[@]}"; do
  corpus="$dir/corpus-$posts-$shape.jsonl"
  [ -s "$corpus" ] || python3 scripts/shape.py "$shape" "$base" "$corpus" 2>/dev/null
  p=$(pipeline "$shape")
  floors=() walls=() insides=()
  for _ in $(seq "$runs"); do
    rm -f "$dir/out.jsonl"* "$dir/floor-out.jsonl"
    [ "$out_mode" = file ] && sync
    if [ "$out_mode" = file ]; then f=$(target/release/examples/floor "$corpus" "$dir/floor-out.jsonl"); else f=$(target/release/examples/floor "$corpus"); fi
    floors+=("$(sed -E 's/.*= ([0-9]+) posts\/s.*/\1/' <<< "$f")")
    [ "$out_mode" = file ] && { rm -f "$dir/floor-out.jsonl"; sync; }
    start=$(date +%s.%N)
    "$bin" --pipeline "$p" --log-format json > /dev/null 2> "$dir/log.jsonl"
    end=$(date +%s.%N)
    n=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "\"pipeline finished\"" in l][-1]["posts"])' "$dir/log.jsonl")
    inside=$(python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "\"pipeline finished\"" in l][-1]["posts_per_sec"])' "$dir/log.jsonl")
    [ "$n" -eq "$posts" ] || { echo "$shape: $n of $posts posts came out" >&2; exit 1; }
    walls+=("$(python3 -c "print(round($posts / ($end - $start)))")")
    insides+=("$inside")
  done
  python3 - "$shape" "$(du -m "$corpus" | cut -f1)" "${floors[*]}" "${walls[*]}" "${insides[*]}" <<'PY'
import statistics, sys
shape, mb, floors, walls, insides = sys.argv[1], sys.argv[2], *[list(map(float, a.split())) for a in sys.argv[3:6]]
f, w, i = statistics.median(floors), statistics.median(walls), statistics.median(insides)
print(f"{shape:<9} {mb:>7} {f:>12,.0f} {w:>14,.0f} {i:>14,.0f} {w / f:>6.2f}x")
PY
done
