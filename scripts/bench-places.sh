#!/usr/bin/env bash
# What polygon location rules cost, measured from outside on a corpus this
# project's generator did not write: Python writes v1.1 posts (json.dumps
# with its ", " / ": " separators, keys shuffled, non-ASCII as \uXXXX), every
# one with a location — half an exact point, half only a place box — spread
# over the world's cities and oceans alike. The release binary replays them
# (rules from a file, output to stdout → /dev/null) once per rule set,
# alternating, RUNS times (default 3); the wall clock of the whole process
# is taken by this script, and the rules' load time from its log (shown
# apart, and taken off the wall clock in a second column: on a short corpus
# loading 1,000 large polygons is most of the run):
#
#   boxes-25      25 boxes (the v1.1 limit)
#   countries     Natural Earth's 176 country outlines (examples/places/)
#   stars-1000    1,000 polygons of 1,000 vertices (bench-scale.sh's set)
#
# Usage: scripts/bench-places.sh [POSTS (default 100000)]
set -euo pipefail
cd "$(dirname "$0")/.."
posts=${1:-100000}
runs=${RUNS:-3}
cargo build --release -q -p traptor-host --bin traptor-host
bin=$(pwd)/target/release/traptor-host
dir=$(pwd)/target/bench/places
mkdir -p "$dir"
RULES_ONLY=1 scripts/bench-scale.sh >/dev/null
cp target/bench/scale/polygons-1000.jsonl "$dir/stars-1000.jsonl"
"$bin" rules import --geojson examples/places/countries.geojson --property NAME --print > "$dir/countries.jsonl" 2>/dev/null
/usr/bin/python3 - "$dir" "$posts" <<'PY'
import json, os, random, sys
d, n = sys.argv[1], int(sys.argv[2])
r = random.Random(2028)
boxes = []
for i in range(25):  # 25 boxes of 4° × 3° over populated latitudes
    w, s = -125 + (i % 5) * 50 + r.random() * 10, -35 + (i // 5) * 18
    boxes.append({"rule_id": f"b{i}", "value": f"{w:.4f},{s:.4f},{w + 4:.4f},{s + 3:.4f}", "rule_type": "locations"})
with open(os.path.join(d, "boxes-25.jsonl"), "w") as f:
    f.writelines(json.dumps(b) + "\n" for b in boxes)
corpus = os.path.join(d, f"corpus-{n}.jsonl")
if not os.path.exists(corpus):
    words = ["café", "東京", "hello", "ça va", "good morning", "the sea", "🌊", "Zürich", "naïve", "rain"]
    with open(corpus + ".tmp", "w") as f:
        for i in range(n):
            lng, lat = r.uniform(-180, 180), r.uniform(-60, 75)
            post = {"created_at": "Sun Dec 06 00:00:00 +0000 2026", "id": 10**17 + i, "id_str": str(10**17 + i),
                    "text": " ".join(r.choice(words) for _ in range(8)), "lang": "en",
                    "user": {"id": i % 5000, "id_str": str(i % 5000), "screen_name": f"u{i % 5000}"},
                    "entities": {"hashtags": [], "user_mentions": [], "urls": []}, "retweet_count": 0}
            if i % 2:
                post["coordinates"] = {"type": "Point", "coordinates": [lng, lat]}
            else:
                dx, dy = r.uniform(0.01, 0.5), r.uniform(0.01, 0.4)
                w, s = max(-180, lng - dx), max(-90, lat - dy)
                e, nn = min(180, lng + dx), min(90, lat + dy)
                post["place"] = {"full_name": "somewhere", "bounding_box": {"type": "Polygon",
                                 "coordinates": [[[w, s], [w, nn], [e, nn], [e, s]]]}}
            items = list(post.items())
            r.shuffle(items)
            f.write(json.dumps(dict(items)) + "\n")
    os.rename(corpus + ".tmp", corpus)
PY
corpus="$dir/corpus-$posts.jsonl"
echo "corpus: $(basename "$corpus") ($(du -m "$corpus" | cut -f1) MB, $posts posts, all with a location), $(nproc) cores, runs: $runs" >&2

run() { # rules file → "posts/s(wall) posts/s(wall − rules load) load_ms matched outside_polygon"
    cat > "$dir/p.toml" <<TOML
[traptor]
type = "locations"
stats_interval_secs = 0
[source]
type = "replay"
path = "$corpus"
[rules]
type = "file"
path = "$1"
[sink]
type = "stdout"
[pipeline]
workers = $(nproc)
TOML
    /usr/bin/python3 - "$bin" "$dir/p.toml" "$posts" <<'PY'
import json, subprocess, sys, time
binary, pipeline, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.monotonic()
p = subprocess.run([binary, "--pipeline", pipeline, "--log-format", "json"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE, check=True)
wall = time.monotonic() - t
lines = [json.loads(l) for l in p.stderr.decode().splitlines() if l.startswith("{")]
fin = [l for l in lines if l["message"] == "pipeline finished"][-1]
load = [l for l in lines if l["message"] == "rules loaded"][-1]
ready = (load['load_ms'] + load['compile_ms']) / 1000
print(f"{n / wall:.0f} {n / max(wall - ready, 1e-9):.0f} {load['load_ms'] + load['compile_ms']} {fin['matched']} {fin.get('outside_polygon', 0)}")
PY
}

sets=(boxes-25 countries stars-1000)
for s in "${sets[@]}"; do : > "$dir/$s.results"; done
for _ in $(seq "$runs"); do
    for s in "${sets[@]}"; do run "$dir/$s.jsonl" >> "$dir/$s.results"; done
done
printf "%-12s %12s %9s %18s %9s %16s %9s %16s\n" rules "posts/s wall" "×boxes" "wall−load posts/s" "×boxes" "load+compile ms" matched outside_polygon
base=""
for s in "${sets[@]}"; do
    read -r rate net load matched outside < <(sort -n "$dir/$s.results" | sed -n "$(( (runs + 1) / 2 ))p")
    [ -n "$base" ] || { base=$rate; netbase=$net; }
    printf "%-12s %12s %9.2f %18s %9.2f %16s %9s %16s\n" "$s" "$rate" "$(echo "$rate / $base" | bc -l)" "$net" \
        "$(echo "$net / $netbase" | bc -l)" "$load" "$matched" "$outside"
done
