#!/usr/bin/env bash
# Kafka sink throughput into a real broker (Tansu, memory storage), side by side
# with a reference producer (confluent-kafka, i.e. librdkafka from Python; Debian's
# kcat bundles librdkafka 2.0.2, which cannot talk to Tansu) sending the same
# records with the same settings (lz4, acks=all, idempotence).
#
#   scripts/bench-kafka.sh [POSTS (default 100000)]
set -euo pipefail
cd "$(dirname "$0")/.."
posts=${1:-100000}
cargo build --release -q -p traptor-host
bin=$(pwd)/target/release/traptor-host
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'bash scripts/tansu.sh stop "$dir/broker"; rm -rf "$dir"' EXIT
bash scripts/tansu.sh start "$dir/broker" "$port"
bash scripts/tansu.sh topic "$port" traptor 4
bash scripts/tansu.sh topic "$port" reference 4
printf '{"rule_id":"c","value":"coffee"}\n' > "$dir/rules.jsonl"
"$bin" generate --count "$posts" --seed 1 --output "$dir/corpus.jsonl"
# The exact records the sink sends (envelopes), for the reference producer.
cat > "$dir/file.toml" <<TOML
[traptor]
type = "track"
stats_interval_secs = 0
[source]
type = "replay"
path = "corpus.jsonl"
[rules]
type = "file"
path = "rules.jsonl"
[sink]
type = "file"
path = "records.jsonl"
TOML
"$bin" --pipeline "$dir/file.toml" 2>/dev/null
cat > "$dir/kafka.toml" <<TOML
[traptor]
type = "track"
stats_interval_secs = 0
[source]
type = "replay"
path = "corpus.jsonl"
[rules]
type = "file"
path = "rules.jsonl"
[sink]
type = "kafka"
brokers = "127.0.0.1:$port"
compression = "lz4"
[sink.spool]
dir = "spool"
TOML
start=$(date +%s.%N)
"$bin" --pipeline "$dir/kafka.toml" --log-format json 2> "$dir/log.jsonl"
end=$(date +%s.%N)
py=$(bash scripts/tansu.sh python)
"$py" - "$dir/records.jsonl" "$port" "$start" "$end" "$dir/log.jsonl" <<'PY'
import json, os, sys, time
from confluent_kafka import Producer
path, port, start, end, log = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
records = [l.rstrip("\n").encode() for l in open(path)]
keys = [json.loads(r)["id_str"].encode() for r in records]
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
for k, v in zip(keys, records):
    while True:
        try:
            p.produce("reference", v, k, on_delivery=cb); break
        except BufferError:
            p.poll(0.01)
    p.poll(0)
p.flush()
t1 = time.time() - t0
print(f"reference producer (confluent-kafka {__import__('confluent_kafka').version()[0]}, same records): "
      f"{len(records)/t1:,.0f} posts/s, {mb/t1:.1f} MiB/s, {failed[0]} failed")
print(f"ratio: {(len(records)/t)/(len(records)/t1):.2f}x")
PY
