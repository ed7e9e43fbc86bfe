#!/usr/bin/env bash
# What a stage costs, per plugin language (issue 27): for Rust, Python,
# JavaScript, TypeScript, Go and C, the component's size, the time to
# instantiate it (in-process, `plugin inspect`: median of 25), and — from
# outside, with scripts/bench-stages.sh (the release binary replaying a
# corpus to /dev/null, wall clock, median of RUNS, variants alternating) —
# the per-post cost of a no-op stage and of the `words` enricher that
# `plugin new` writes in that language, and the throughput of a pipeline with
# one no-op Rust stage against none.
#
#   scripts/bench-plugins.sh [POSTS (default 100000)]
#   RUNS=3, CORPUS=FILE FORMAT=x_v2   as for bench-stages.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cargo build --release -q -p traptor-host
bash scripts/build-plugins.sh >/dev/null 2>&1 || bash scripts/build-plugins.sh
bin=$root/target/release/traptor-host
words=$root/target/bench/words
mkdir -p "$words"
export TRAPTOR_CACHE_DIR=$root/target/bench/plugin-cache

# The words enricher, as `plugin new` writes it, built by `plugin build`.
for lang in rust python js typescript go c; do
  out="$words/$lang.wasm"
  if [ ! -s "$out" ] || [ "$bin" -nt "$out" ]; then
    rm -rf "$words/src-$lang"
    mkdir -p "$words/src-$lang"
    "$bin" plugin new words --lang "$lang" --kind enricher --dir "$words/src-$lang" >/dev/null 2>&1
    echo "building words ($lang)" >&2
    CARGO_TARGET_DIR=$root/target/scaffold "$bin" plugin build "$words/src-$lang/words" -o "$out" >/dev/null 2>"$words/$lang.build.log" \
      || { cat "$words/$lang.build.log" >&2; exit 1; }
  fi
done

# Size and instantiate time, per language.
inspect() { # label file
  local line
  line=$("$bin" plugin inspect "$2" 2>/dev/null | grep '^start-up:' | sed -E 's/.*instantiate ([0-9]+) µs.*/\1/')
  printf '%-12s %-28s %10s %14s\n' "$1" "$(basename "$(dirname "$2")")/$(basename "$2")" "$(stat -c %s "$2")" "$line"
}
{
  echo
  printf '%-12s %-28s %10s %14s\n' language component bytes "instantiate µs"
  inspect rust "$root/plugins/target/wasm32-wasip2/release/chaos.wasm"
  inspect python "$root/plugins/target/python/noop.wasm"
  inspect javascript "$root/plugins/target/js/noop.wasm"
  inspect go "$root/plugins/target/go/noop.wasm"
  inspect c "$root/plugins/target/c/noop.wasm"
  for lang in rust python js typescript go c; do inspect "$lang" "$words/$lang.wasm"; done
  echo
} > "$words/sizes.txt"

ONLY="noop noop-python noop-js noop-go noop-c words-rust words-python words-js words-typescript words-go words-c" \
  bash scripts/bench-stages.sh "${1:-100000}"
cat "$words/sizes.txt"
