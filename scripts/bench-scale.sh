#!/usr/bin/env bash
# Throughput, peak memory and rule-load time as rule sets grow: replay a
# synthetic corpus → rules from a file → envelope → file sink, once per set:
#
#   track phrases   400 / 10,000 / 100,000
#   follow ids      5,000 / 100,000 / 1,000,000
#   location boxes  25 / 1,000 / 10,000
#   polygons        25 boxes (the base) / 1,000 polygons of 1,000 vertices each
#                   (one over each of the corpus' places, the rest on a world grid)
#
# Each figure is also given as a ratio to the smallest set of its kind and to
# the JSON floor (examples/floor.rs: one thread, serde_json parse + one field
# + write) measured in the same run on the same corpus. Usage:
#
#   scripts/bench-scale.sh [POSTS (default 100000)] [KIND…]    KIND: track follow locations polygons
#
# Each set runs RUNS times (environment, default 3); the run with the median
# posts/s is shown (one run on 2 cores varies by ±10 %).
#
# The larger sets add rules that (almost) never match, so every set of a kind
# attributes about the same posts: what changes is only the rules' number.
# Corpus and rule files are kept in target/bench/scale/; with RULES_ONLY=1
# the script writes the rule files and stops (bench-reload-scale.sh uses them).
set -euo pipefail
cd "$(dirname "$0")/.."
posts=${1:-100000}
shift || true
kinds=("$@")
[ ${#kinds[@]} -gt 0 ] || kinds=(track follow locations)
cargo build --release -q -p traptor-host --bin traptor-host --example floor
bin=$(pwd)/target/release/traptor-host
floor=$(pwd)/target/release/examples/floor
dir=$(pwd)/target/bench/scale
mkdir -p "$dir"
corpus="$dir/corpus-$posts.jsonl"
[ -n "${RULES_ONLY:-}" ] || [ -s "$corpus" ] || "$bin" generate --count "$posts" --seed 1 --output "$corpus"
workers=$(nproc)

/usr/bin/python3 - "$dir" <<'PY'
import json, os, random, sys
d = sys.argv[1]
TERMS = ["love", "happy", "coffee", "music", "game", "rain", "city", "news", "election", "market", "crypto",
         "rust", "python", "storm", "concert", "pizza", "movie", "launch", "deploy", "climate", "solar",
         "health", "café", "東京", "weekend", "birthday", "summer", "football", "example", "github", "tbt",
         "ai", "ramen", "vote"]
def write(name, rows):
    path = os.path.join(d, name)
    if os.path.exists(path):
        return
    with open(path + ".tmp", "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.rename(path + ".tmp", path)
def track(n):
    r = random.Random(42)
    for i in range(n):
        if i < 400:   # real words: these match
            v = " ".join(r.choice(TERMS) + ("" if r.random() < 0.5 else str(r.randrange(50)))
                         for _ in range(1 + r.randrange(3)))
        else:         # random letters, one or two terms: they (almost) never match
            v = " ".join("".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randrange(5, 11)))
                         for _ in range(1 + r.randrange(2)))
        yield {"rule_id": f"t{i}", "tag": f"tag{i % 50}", "value": v, "rule_type": "track", "orig_type": "keyword"}
def follow(n):
    for i in range(n):  # half of the synthetic user pool (5,000 users), then ids that never post
        uid = 1_000_000 + (2 * i) * 7919 if i < 2500 else 9_000_000_000 + i
        yield {"rule_id": f"f{i}", "tag": f"tag{i % 50}", "value": str(uid), "rule_type": "follow", "orig_type": "user"}
def boxes(n):
    # The 25 boxes cover the synthetic corpus' places; the rest are small
    # boxes on a world grid.
    cols = int(n ** 0.5 + 0.999)
    dx, dy = 360.0 / cols, 180.0 / cols
    places = [(-122.6, 37.3, -121.9, 37.9), (-74.1, 40.6, -73.8, 40.9), (-0.6, 51.2, 0.4, 51.7),
              (2.2, 48.8, 2.5, 48.95), (139.5, 35.5, 140.0, 35.9)]
    for i in range(n):
        if i < len(places):
            b = places[i]
        else:
            w, s = -180.0 + (i % cols) * dx, -90.0 + (i // cols) * dy
            b = (round(w, 4), round(s, 4), round(min(w + 0.5, 180.0), 4), round(min(s + 0.25, 90.0), 4))
        yield {"rule_id": f"b{i}", "tag": f"tag{i % 50}", "value": ",".join(map(str, b)), "rule_type": "locations"}
for n in (400, 10_000, 100_000):
    write(f"track-{n}.jsonl", track(n))
for n in (5000, 100_000, 1_000_000):
    write(f"follow-{n}.jsonl", follow(n))
for n in (25, 1000, 10_000):
    write(f"locations-{n}.jsonl", boxes(n))
def polygons(n, vertices=1000):
    import math
    places = [(-122.6, 37.3, -121.9, 37.9), (-74.1, 40.6, -73.8, 40.9), (-0.6, 51.2, 0.4, 51.7),
              (2.2, 48.8, 2.5, 48.95), (139.5, 35.5, 140.0, 35.9)]
    r = random.Random(28)
    cols = int(n ** 0.5 + 0.999)
    for i in range(n):
        if i < len(places):
            w, s, e, nn = places[i]
            cx, cy, rx, ry = (w + e) / 2, (s + nn) / 2, (e - w) / 2, (nn - s) / 2
        else:
            cx, cy, rx, ry = -178 + (i % cols) * 356 / cols, -80 + (i // cols) * 160 / cols, 0.3, 0.2
        pts = []
        for k in range(vertices):
            a, f = 2 * math.pi * k / vertices, 0.8 + 0.4 * r.random()
            pts.append(f"{cx + rx * f * math.cos(a):.6f} {cy + ry * f * math.sin(a):.6f}")
        pts.append(pts[0])
        yield {"rule_id": f"p{i}", "tag": f"tag{i % 50}", "value": f"POLYGON(({', '.join(pts)}))", "rule_type": "locations"}
write("polygons-1000.jsonl", polygons(1000))
PY
[ -z "${RULES_ONLY:-}" ] || exit 0

echo "corpus: $(basename "$corpus") ($(du -m "$corpus" | cut -f1) MB, $posts posts), workers: $workers, $(nproc) cores" >&2
sync # no writeback of earlier runs' output during a timed run
# The floor is timed as often as each rule set (RUNS), its median used.
floor_rate=$(for _ in $(seq "${RUNS:-3}"); do
    "$floor" "$corpus" "$dir/floor-out.jsonl" | tee /dev/stderr | sed -E 's/.*= ([0-9]+) posts\/s.*/\1/'
    rm -f "$dir/floor-out.jsonl"
    sync
done | sort -n | awk '{ r[NR] = $1 } END { print r[int((NR + 1) / 2)] }')
echo "floor (median): $floor_rate posts/s" >&2

run() { # kind size → "posts/s rss_mb load_ms compile_ms"
    local kind=$1 n=$2 file="$1-$2.jsonl"
    # The polygons' base is the 25 boxes.
    [ "$kind" != polygons ] || [ "$n" != 25 ] || file="locations-25.jsonl"
    [ "$kind" != polygons ] || kind=locations
    rm -f "$dir/out.jsonl"*
    cat > "$dir/p.toml" <<TOML
[traptor]
type = "$kind"
stats_interval_secs = 0
[source]
type = "replay"
path = "$corpus"
[rules]
type = "file"
path = "$dir/$file"
[sink]
type = "file"
path = "$dir/out.jsonl"
[pipeline]
workers = $workers
TOML
    sync # the kernel writes the previous run's gigabyte back now, not during this one
    /usr/bin/time -f "%M" -o "$dir/rss" "$bin" --pipeline "$dir/p.toml" --log-format json 2> "$dir/log.jsonl"
    /usr/bin/python3 - "$dir/log.jsonl" "$dir/rss" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
fin = [l for l in lines if l["message"] == "pipeline finished"][-1]
load = [l for l in lines if l["message"] == "rules loaded"][-1]
rss_mb = int(open(sys.argv[2]).read().split()[-1]) // 1024
print(fin["posts_per_sec"], rss_mb, load["load_ms"], load["compile_ms"], fin["matched"])
PY
}

printf "%-10s %9s %10s %9s %9s %8s %10s %8s %8s\n" kind rules "posts/s" "×smallest" "×floor" "RSS MB" "matched" load_ms compile_ms
for kind in "${kinds[@]}"; do
    case $kind in
        track) sizes=(400 10000 100000) ;;
        follow) sizes=(5000 100000 1000000) ;;
        locations) sizes=(25 1000 10000) ;;
        polygons) sizes=(25 1000) ;;
        *) echo "unknown kind $kind (track, follow, locations, polygons)" >&2; exit 2 ;;
    esac
    base=""
    for n in "${sizes[@]}"; do
        read -r rate rss load compile matched < <(for _ in $(seq "${RUNS:-3}"); do run "$kind" "$n"; done | sort -n | sed -n "$(( (${RUNS:-3} + 1) / 2 ))p")
        [ -n "$base" ] || base=$rate
        printf "%-10s %9s %10s %9.2f %9.2f %8s %10s %8s %8s\n" "$kind" "$n" "$rate" \
            "$(echo "$rate / $base" | bc -l)" "$(echo "$rate / $floor_rate" | bc -l)" "$rss" "$matched" "$load" "$compile"
    done
done
rm -f "$dir/out.jsonl"*
