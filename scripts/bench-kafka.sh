#!/usr/bin/env bash
# Kafka sink throughput into a real broker (Tansu, memory storage): the sink
# alone (host/benches/kafka_sink.rs), the whole replay -> match -> kafka run,
# and, side by side, a reference producer (confluent-kafka, i.e. librdkafka from Python; Debian's
# kcat bundles librdkafka 2.0.2, which cannot talk to Tansu) sending the same
# records with the same settings (lz4, acks=all, idempotence).
#
#   scripts/bench-kafka.sh [POSTS (default 100000)]
set -euo pipefail
cd "$(dirname "$0")/.."
posts=${1:-100000}
cargo build --release -q -p traptor-host
cargo bench -q -p traptor-host --bench kafka_sink --no-run 2>/dev/null
bin=$(pwd)/target/release/traptor-host
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'bash scripts/tansu.sh stop "$dir/broker"; rm -rf "$dir"' EXIT
bash scripts/tansu.sh start "$dir/broker" "$port"
bash scripts/tansu.sh topic "$port" traptor 4
bash scripts/tansu.sh topic "$port" reference 4
bash scripts/tansu.sh topic "$port" sink 4
printf '{"rule_id":"c","value":"coffee"}\n' > "$dir/rules.jsonl"
"$bin" generate --count "$posts" --seed 1 --output "$dir/corpus.jsonl"
# One pipeline, two sinks: a file (the exact records the Kafka sink sends, for the
# reference producer and the sink-alone bench) and Kafka.
pipeline() {
  printf '[traptor]\ntype = "track"\nstats_interval_secs = 0\n[source]\ntype = "replay"\npath = "corpus.jsonl"\n'
  printf '[rules]\ntype = "file"\npath = "rules.jsonl"\n[sink]\n%s\n' "$1"
}
pipeline $'type = "file"\npath = "records.jsonl"' > "$dir/file.toml"
"$bin" --pipeline "$dir/file.toml" 2>/dev/null
pipeline $'type = "kafka"\nbrokers = "127.0.0.1:'"$port"$'"\ncompression = "lz4"\n[sink.spool]\ndir = "spool"' > "$dir/kafka.toml"
# The sink alone, on the same records as ready-made batches.
TRAPTOR_BENCH_BROKERS="127.0.0.1:$port" TRAPTOR_BENCH_RECORDS="$dir/records.jsonl" \
  cargo bench -q -p traptor-host --bench kafka_sink -- sink | tee "$dir/sink.txt"
timer=()
[ -x /usr/bin/time ] && timer=(/usr/bin/time -f %M -o "$dir/rss")
start=$(date +%s.%N)
"${timer[@]}" "$bin" --pipeline "$dir/kafka.toml" --log-format json 2> "$dir/log.jsonl"
end=$(date +%s.%N)
[ -f "$dir/rss" ] && echo "traptor-host peak RSS: $(( $(tail -n 1 "$dir/rss") / 1024 )) MiB (max_inflight_bytes 64 MiB)"
py=$(bash scripts/tansu.sh python)
"$py" - "$dir/records.jsonl" "$port" "$start" "$end" "$dir/log.jsonl" "$dir/sink.txt" <<'PY'
import json, os, re, sys, time
from confluent_kafka import Producer
path, port, start, end, log = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
records = [l.rstrip("\n").encode() for l in open(path)]
envs = [json.loads(r) for r in records]
keys = [e["id_str"].encode() for e in envs]
# The same headers the sink sends.
hdrs = [[("traptor-type", b"track"), ("traptor-id", b"0")]
        + ([("traptor-rules", ",".join(r["rule_id"] for r in rules).encode())] if rules else [])
        for rules in (e.get("traptor", {}).get("collection_rules") or [] for e in envs)]
del envs
mb = sum(len(r) for r in records) / 1048576
fin = [json.loads(l) for l in open(log) if '"kafka sink finished"' in l][-1]
t = end - start
print(f"traptor-host replay -> match -> kafka: {len(records)/t:,.0f} posts/s, {mb/t:.1f} MiB/s "
      f"({t:.2f} s incl. start-up; delivered {fin['delivered']}, spooled {fin['spooled']})")
p = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "compression.type": "lz4", "acks": "all",
              "enable.idempotence": True, "linger.ms": 5, "queue.buffering.max.messages": 1000000})
failed = [0]
def cb(err, _msg):
    if err: failed[0] += 1
t0 = time.time()
for k, v, h in zip(keys, records, hdrs):
    while True:
        try:
            p.produce("reference", v, k, headers=h, on_delivery=cb); break
        except BufferError:
            p.poll(0.01)
    p.poll(0)
p.flush()
t1 = time.time() - t0
print(f"reference producer (confluent-kafka {__import__('confluent_kafka').version()[0]}, same records and headers): "
      f"{len(records)/t1:,.0f} posts/s, {mb/t1:.1f} MiB/s, {failed[0]} failed")
sink = float(re.search(r"alone: ([0-9.]+) posts/s", open(sys.argv[6]).read()).group(1))
print(f"ratio, sink alone / reference: {sink/(len(records)/t1):.2f}x")
print(f"ratio, whole run / reference: {(len(records)/t)/(len(records)/t1):.2f}x")
PY
