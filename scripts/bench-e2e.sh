#!/usr/bin/env bash
# End-to-end throughput: replay a synthetic corpus into a file sink and print
# posts/s and MB/s (input and output), and the ratio to the JSON floor
# (examples/floor.rs: one thread, serde_json parse + one field + write, on the
# same corpus, in the same run). Usage:
#
#   scripts/bench-e2e.sh [POSTS (default 200000)] [WORKERS (default: cores)]
#   DEDUP=local scripts/bench-e2e.sh    # with [dedup] (ids kept in the process)
#   DEDUP=redis scripts/bench-e2e.sh    # with [dedup] shared through a redis-server started here
#
# The corpus is generated once per size and kept in target/bench/.
set -euo pipefail
cd "$(dirname "$0")/.."
posts=${1:-200000}
workers=${2:-$(nproc)}
cargo build --release -q -p traptor-host --bin traptor-host --example floor
bin=target/release/traptor-host
dir=target/bench
mkdir -p "$dir"
corpus="$dir/corpus-$posts.jsonl"
[ -s "$corpus" ] || "$bin" generate --count "$posts" --seed 1 --output "$corpus"
out="$dir/out.jsonl"
rm -f "$out"*
cat > "$dir/bench.toml" <<TOML
[traptor]
type = "track"
id = 0
stats_interval_secs = 0

[source]
type = "replay"
path = "corpus-$posts.jsonl"

[rules]
type = "file"
path = "$(pwd)/examples/rules.jsonl"

[sink]
type = "file"
path = "out.jsonl"

[pipeline]
workers = $workers
batch_size = 512
TOML
case "${DEDUP:-}" in
  "") ;;
  local|redis)
    rm -f "$dir/dedup.bin"
    printf '\n[dedup]\nsnapshot = "dedup.bin"\n' >> "$dir/bench.toml"
    if [ "$DEDUP" = redis ]; then
      rport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
      redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes >/dev/null
      trap 'redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true' EXIT
      until redis-cli -p "$rport" ping >/dev/null 2>&1; do sleep 0.05; done
      printf 'redis = "redis://127.0.0.1:%s"\n' "$rport" >> "$dir/bench.toml"
    fi ;;
  *) echo "DEDUP must be local or redis" >&2; exit 64 ;;
esac
echo "corpus: $corpus ($(du -m "$corpus" | cut -f1) MB, $posts posts), workers: $workers, $(nproc) cores" >&2
sync # no writeback of earlier runs' output during a timed run
floor=$(target/release/examples/floor "$corpus" "$dir/floor-out.jsonl")
rm -f "$dir/floor-out.jsonl"
sync
start=$(date +%s.%N)
"$bin" --pipeline "$dir/bench.toml" --log-format json 2> "$dir/log.jsonl"
end=$(date +%s.%N)
python3 - "$dir/log.jsonl" "$start" "$end" "$corpus" "$out" "$floor" <<'PY'
import json, os, re, sys
log, start, end, corpus, out, floor = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
fin = [json.loads(l) for l in open(log) if '"pipeline finished"' in l][-1]
wall = end - start
posts = int(fin["posts"])
print(f"pipeline: {fin['posts_per_sec']} posts/s, in {fin['in_mib_per_sec']} MiB/s, out {fin['out_mib_per_sec']} MiB/s "
      f"({posts} posts, {fin['matched']} matched, {fin['seconds']} s inside the pipeline)")
print(f"process wall clock: {wall:.2f} s = {posts / wall:.0f} posts/s, "
      f"{os.path.getsize(corpus) / wall / 1048576:.1f} MiB/s in, {os.path.getsize(out) / wall / 1048576:.1f} MiB/s out")
rate = float(re.search(r"= (\d+) posts/s", floor).group(1))
print(f"{floor}\nratio to the floor: {int(fin['posts_per_sec']) / rate:.2f}x (pipeline), {posts / wall / rate:.2f}x (process wall clock)")
PY
