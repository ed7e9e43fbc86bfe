#!/usr/bin/env bash
# Per-post cost of WebAssembly stages through the real pipeline: replay a
# synthetic corpus into a file sink without stages, then with one stage at a
# time, and print posts/s and the added wall-clock µs per post (2 workers on
# this machine kind share the work, so CPU µs per post is about workers × that).
#
#   scripts/bench-stages.sh [POSTS (default 100000)]
set -euo pipefail
cd "$(dirname "$0")/.."
posts=${1:-100000}
cargo build --release -q -p traptor-host
bash scripts/build-plugins.sh
bin=$(pwd)/target/release/traptor-host
dir=$(pwd)/target/bench
mkdir -p "$dir"
corpus="$dir/corpus-$posts.jsonl"
[ -s "$corpus" ] || "$bin" generate --count "$posts" --seed 1 --output "$corpus"
export TRAPTOR_CACHE_DIR="$dir/plugin-cache"
rust=$(pwd)/plugins/target/wasm32-wasip2/release

run() { # name, stage TOML (may be empty)
  cat > "$dir/stage.toml" <<TOML
[traptor]
type = "track"
stats_interval_secs = 0
[source]
type = "replay"
path = "$corpus"
[rules]
type = "file"
path = "$(pwd)/examples/rules.jsonl"
$2
[sink]
type = "file"
path = "$dir/stage-out.jsonl"
[pipeline]
batch_size = 256
TOML
  rm -f "$dir/stage-out.jsonl"
  # Warm the compiled-plugin cache, then measure.
  "$bin" --pipeline "$dir/stage.toml" --log-format json 2> "$dir/stage.log" >/dev/null
  rm -f "$dir/stage-out.jsonl"
  "$bin" --pipeline "$dir/stage.toml" --log-format json 2> "$dir/stage.log" >/dev/null
  python3 - "$dir/stage.log" "$1" "${BASE:-}" <<'PY'
import json, sys
log, name, base = sys.argv[1], sys.argv[2], sys.argv[3]
fin = [json.loads(l) for l in open(log) if '"pipeline finished"' in l][-1]
secs = float(fin["seconds"]); posts = int(fin["posts"])
per = secs / posts * 1e6
extra = f"{per - float(base):+.2f} µs/post" if base else "baseline"
print(f"{name:<22} {fin['posts_per_sec']:>8} posts/s  {per:6.2f} µs/post wall  {extra}")
with open(log + ".per", "w") as f: f.write(str(per))
PY
}

stage() { # name plugin config
  printf '[[stages]]\nname = "%s"\nplugin = "%s"\nconfig = %s\ntimeout_ms = 5000\n' "$1" "$2" "$3"
}

echo "corpus: $posts synthetic posts, $(nproc) cores, batch 256" >&2
run "no stage" ""
BASE=$(cat "$dir/stage.log.per")
export BASE
run "rust no-op (chaos)" "$(stage noop "$rust/chaos.wasm" '{ mode = "noop" }')"
run "rust lang-filter" "$(stage langs "$rust/lang_filter.wasm" '{ languages = ["en", "ja"] }')"
run "rust sentiment" "$(stage sentiment "$rust/sentiment.wasm" '{}')"
[ -f "$rust/entities.wasm" ] && run "rust entities" "$(stage entities "$rust/entities.wasm" '{}')"
run "python keywords" "$(stage keywords "$(pwd)/plugins/target/python/keywords.wasm" '{ top = 3 }')"
run "javascript emoji" "$(stage emoji "$(pwd)/plugins/target/js/emoji.wasm" '{ top = 2 }')"
