#!/usr/bin/env bash
# What a WebAssembly stage costs, measured as a user would (issue 29): the
# release binary replays a corpus of v1.1 posts laid out as Python writes them
# (scripts/shape.py python: ", " / ": " separators, \uXXXX escapes) → 400-odd
# track rules → stages → stdout to /dev/null. Each variant is timed from
# outside (wall clock, start to exit); the variants alternate run by run and
# the figure is the median of RUNS. "start ms" is the same pipeline over 100
# posts (loading, compiling or reading back, instantiating, init); "µs/post"
# is the wall time a stage adds per post once started ((run − start) against
# no stage's). Beside it, the host's own split of the
# stage's time per post (in-process, from the run's "stage finished" log line):
# prepare (the host building the batch), lower (copying it into the guest),
# guest (the plugin's own code), lift (reading the results back, and the
# guest freeing the batch).
#
#   scripts/bench-stages.sh [POSTS (default 100000)]
#   RUNS=3 (default)      runs of each variant
#   ONLY="noop entities"  a subset of the variants (names below)
#   CORPUS=FILE FORMAT=x_v2  another corpus (any replay format), e.g. real X v2
#                         messages; POSTS is then only its label
#
# Variants: none (no stage); noop (Rust chaos, mode noop: reads nothing);
# noop-x3 (three of them in a row); noop-abi-0.1 (the same plugin built for
# ABI 0.1, tests/fixtures/plugins); noop-python, noop-js (a function called per
# post through sdk/python|js, reading nothing); call-python, call-js (the same
# components answering the whole batch at once: the call alone); noop-go,
# noop-c (plugins/go|c/noop, reading nothing); then the example plugins; and
# words-<lang>, the enricher `plugin new` writes, when scripts/bench-plugins.sh
# has built it (target/bench/words/<lang>.wasm).
set -euo pipefail
cd "$(dirname "$0")/.."
posts=${1:-100000}
runs=${RUNS:-3}
cargo build --release -q -p traptor-host
bash scripts/build-plugins.sh >/dev/null 2>&1 || bash scripts/build-plugins.sh
bin=$(pwd)/target/release/traptor-host
dir=$(pwd)/target/bench
mkdir -p "$dir"
base="$dir/corpus-$posts.jsonl"
corpus="$dir/corpus-$posts-python.jsonl"
if [ -n "${CORPUS:-}" ]; then
  corpus=$(realpath "$CORPUS")
  posts=$(wc -l < "$corpus")
else
  [ -s "$base" ] || "$bin" generate --count "$posts" --seed 1 --output "$base"
  [ -s "$corpus" ] || python3 scripts/shape.py python "$base" "$corpus"
fi
format=${FORMAT:-twitter_v1}
# The same pipelines over 100 posts: what starting costs (loading and
# compiling or reading back the components, instantiating, init), which a
# short run would otherwise spread over its posts.
small="$dir/corpus-100-$(basename "$corpus")"
head -n 100 "$corpus" > "$small"
export TRAPTOR_CACHE_DIR="$dir/plugin-cache"
rust=$(pwd)/plugins/target/wasm32-wasip2/release
py=$(pwd)/plugins/target/python
js=$(pwd)/plugins/target/js
old=$(pwd)/tests/fixtures/plugins
gop=$(pwd)/plugins/target/go
cp=$(pwd)/plugins/target/c
words=$dir/words

stage() { # name plugin config
  [ -f "$2" ] || { echo "missing $2" >&2; return 1; }
  printf '[[stages]]\nname = "%s"\nplugin = "%s"\nconfig = %s\ntimeout_ms = 5000\n' "$1" "$2" "$3"
}

# name → its [[stages]] tables
declare -A variants=(
  [none]=""
  [noop]="$(stage noop "$rust/chaos.wasm" '{ mode = "noop" }')"
  [noop-x3]="$(stage a "$rust/chaos.wasm" '{}')
$(stage b "$rust/chaos.wasm" '{}')
$(stage c "$rust/chaos.wasm" '{}')"
  [noop-abi-0.1]="$(stage old "$old/chaos-abi-0.1.wasm" '{}' 2>/dev/null || true)"
  [noop-python]="$(stage noop "$py/noop.wasm" '{}' 2>/dev/null || true)"
  [noop-js]="$(stage noop "$js/noop.wasm" '{}' 2>/dev/null || true)"
  [call-python]="$(stage noop "$py/noop.wasm" '{ walk = false }' 2>/dev/null || true)"
  [call-js]="$(stage noop "$js/noop.wasm" '{ walk = false }' 2>/dev/null || true)"
  [noop-go]="$(stage noop "$gop/noop.wasm" '{}' 2>/dev/null || true)"
  [noop-c]="$(stage noop "$cp/noop.wasm" '{}' 2>/dev/null || true)"
  [url-domains-go]="$(stage domains "$gop/url-domains.wasm" '{}' 2>/dev/null || true)"
  [script-detect-c]="$(stage script "$cp/script-detect.wasm" '{}' 2>/dev/null || true)"
  [entities]="$(stage entities "$rust/entities.wasm" '{}')"
  [lang-filter]="$(stage langs "$rust/lang_filter.wasm" '{ languages = ["en", "ja"] }')"
  [sentiment]="$(stage sentiment "$rust/sentiment.wasm" '{}')"
  [keywords-python]="$(stage keywords "$py/keywords.wasm" '{ top = 3 }')"
  [emoji-js]="$(stage emoji "$js/emoji.wasm" '{ top = 2 }')"
)
for lang in rust python js typescript go c; do
  variants[words-$lang]="$(stage words "$words/$lang.wasm" '{}' 2>/dev/null || true)"
done
order="none noop noop-x3 noop-abi-0.1 noop-python noop-js call-python call-js noop-go noop-c entities lang-filter sentiment keywords-python emoji-js url-domains-go script-detect-c"
read -r -a names <<< "${ONLY:-$order}"
[[ " ${names[*]} " == *" none "* ]] || names=(none "${names[@]}")

for name in "${names[@]}"; do
  if [ "$name" != none ] && [ -z "${variants[$name]:-}" ]; then
    echo "skipping $name: its plugin is not built" >&2
    continue
  fi
  for size in full small; do
    if [ $size = full ]; then input=$corpus toml="$dir/stages-$name.toml"; else input=$small toml="$dir/stages-$name-small.toml"; fi
    cat > "$toml" <<TOML
[traptor]
type = "track"
id = 0
stats_interval_secs = 0
[source]
type = "replay"
path = "$input"
format = "$format"
[rules]
type = "file"
path = "$(pwd)/examples/rules.jsonl"
${variants[$name]}
[sink]
type = "stdout"
TOML
  done
  # Compile the plugins into the cache before timing anything.
  "$bin" --pipeline "$dir/stages-$name.toml" --log-format json >/dev/null 2>"$dir/stages-$name.log"
done

echo "$posts posts ($(du -m "$corpus" | cut -f1) MB, $(basename "$corpus"), $format), $(nproc) cores, stdout to /dev/null, median of $runs, variants alternating" >&2
rm -f "$dir"/stages-*.times
for _ in $(seq "$runs"); do
  for name in "${names[@]}"; do
    [ -f "$dir/stages-$name.toml" ] || continue
    [ "$name" = none ] || [ -n "${variants[$name]:-}" ] || continue
    start=$(date +%s.%N)
    "$bin" --pipeline "$dir/stages-$name.toml" --log-format json >/dev/null 2>"$dir/stages-$name.log"
    end=$(date +%s.%N)
    echo "$start $end" >> "$dir/stages-$name.times"
    start=$(date +%s.%N)
    "$bin" --pipeline "$dir/stages-$name-small.toml" --log-format json >/dev/null 2>/dev/null
    end=$(date +%s.%N)
    echo "$start $end" >> "$dir/stages-$name-small.times"
  done
done

python3 - "$dir" "$posts" "${names[@]}" <<'PY'
import json, os, statistics, sys
d, posts, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def wall(name, suffix=""):
    p = f"{d}/stages-{name}{suffix}.times"
    if not os.path.exists(p):
        return None
    return statistics.median(float(b) - float(a) for a, b in (l.split() for l in open(p)))
def parts(name):
    rows = [json.loads(l) for l in open(f"{d}/stages-{name}.log") if '"stage finished"' in l]
    out = {}
    for r in rows:
        n = max(int(r.get("posts", 0)), 1)
        for k in ("prepare", "lower", "guest", "lift"):
            out[k] = out.get(k, 0.0) + float(r.get(f"{k}_ns", 0)) / n / 1000
    return out, rows
base, base0 = wall("none"), wall("none", "-small")
print(f"{'variant':<16} {'posts/s':>9} {'of none':>8} {'cost':>6} {'start ms':>9} {'µs/post':>8}   in-process µs/post: prepare lower guest lift")
for name in names:
    w = wall(name)
    if w is None:
        continue
    w0 = wall(name, "-small")
    rate = posts / w
    if name == "none":
        print(f"{name:<16} {rate:>9.0f} {'1.00':>8} {'':>6} {w0 * 1000:>9.0f} {'':>8}")
        continue
    # Added wall time per post once started: the run minus its start, against no stage's.
    added = ((w - w0) - (base - base0)) / posts * 1e6
    p, rows = parts(name)
    split = "  ".join(f"{p.get(k, 0):.3f}" for k in ("prepare", "lower", "guest", "lift"))
    print(f"{name:<16} {rate:>9.0f} {base / w:>8.2f} {1 - base / w:>5.0%} {w0 * 1000:>9.0f} {added:>+8.2f}   {split}")
PY
