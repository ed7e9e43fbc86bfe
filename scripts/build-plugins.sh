#!/usr/bin/env bash
# Build every example plugin from the same WIT (wit/):
#   Rust       cargo (plugins/ workspace)  → plugins/target/wasm32-wasip2/release/<name>.wasm
#   Python     componentize-py 0.25.1      → plugins/target/python/<name>.wasm
#   JavaScript componentize-js 0.23.0      → plugins/target/js/<name>.wasm
#   Go, C      traptor-host plugin build   → plugins/target/go|c/<name>.wasm
#              (it installs Go 1.27.3 and Zig 0.17.1 from PyPI into the same cache)
# The Python and JavaScript tool chains are installed once, from PyPI and npm,
# into ${TRAPTOR_TOOLS_DIR:-~/.cache/traptor/tools}/<tool>-<version> (outside the
# clone, keyed by version). A component is rebuilt only when its sources or the
# WIT changed. Idempotent; quick when warm.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
tools=${TRAPTOR_TOOLS_DIR:-$HOME/.cache/traptor/tools}
PY_VERSION=0.25.1
JS_VERSION=0.23.0
mkdir -p "$tools" plugins/target/python plugins/target/js
# Tests may call this script from several processes at once: one at a time.
exec 9>"$tools/.build-plugins.lock"
flock 9

log() { printf '  %s\n' "$*" >&2; }

# $1 = output, rest = inputs: true when the output is missing or older than an input.
stale() {
  local out=$1; shift
  [ -s "$out" ] || return 0
  [ -n "$(find "$@" -newer "$out" -type f ! -path '*/__pycache__/*' ! -path '*/node_modules/*' 2>/dev/null | head -n 1)" ]
}

log "rust plugins (cargo, wasm32-wasip2)"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
(cd plugins && cargo build --release --locked -q)

# Installs take the lock file per tool that `traptor-host plugin build` takes,
# and count only once the marker is written (after a complete install).
py="$tools/componentize-py-$PY_VERSION"
if [ ! -f "$py/.traptor-installed" ]; then
  (
    flock 8
    if [ ! -f "$py/.traptor-installed" ]; then
      log "installing componentize-py $PY_VERSION (PyPI) into $py"
      rm -rf "$py"
      python3 -m venv "$py"
      "$py/bin/pip" install -q "componentize-py==$PY_VERSION" || { rm -rf "$py"; exit 1; }
      echo "PyPI componentize-py==$PY_VERSION" > "$py/.traptor-installed"
    fi
  ) 8>"$tools/.install-componentize-py.lock"
fi
for dir in plugins/python/*/; do
  name=$(basename "$dir")
  out="plugins/target/python/$name.wasm"
  if stale "$out" "$dir" wit sdk/python; then
    log "python plugin $name (componentize-py $PY_VERSION)"
    # sdk/python: the ABI helper (traptor_stage.py) every Python stage imports.
    (cd "$dir" && "$py/bin/componentize-py" -d "$root/wit" -w plugin componentize app -p . -p "$root/sdk/python" -o "$root/$out.tmp" >/dev/null)
    mv "$out.tmp" "$out"
  fi
done

js="$tools/componentize-js-$JS_VERSION"
if [ ! -f "$js/.traptor-installed" ]; then
  (
    flock 8
    if [ ! -f "$js/.traptor-installed" ]; then
      log "installing componentize-js $JS_VERSION (npm) into $js"
      rm -rf "$js"
      mkdir -p "$js"
      npm install --prefix "$js" --no-audit --no-fund --silent "@bytecodealliance/componentize-js@$JS_VERSION" || { rm -rf "$js"; exit 1; }
      echo "npm @bytecodealliance/componentize-js@$JS_VERSION" > "$js/.traptor-installed"
    fi
  ) 8>"$tools/.install-componentize-js.lock"
fi
for dir in plugins/js/*/; do
  name=$(basename "$dir")
  out="plugins/target/js/$name.wasm"
  if stale "$out" "$dir" wit sdk/js; then
    log "javascript plugin $name (componentize-js $JS_VERSION)"
    # componentize-js wants the WIT folder inside the project: build in a copy.
    build="plugins/target/js/$name-build"
    rm -rf "$build"
    mkdir -p "$build"
    cp -r wit "$build/wit"
    find "$dir" -maxdepth 1 -name '*.js' ! -name '*.test.js' -exec cp {} "$build/" \;
    cp sdk/js/traptor_stage.js "$build/"   # the ABI helper every JavaScript stage imports
    cp "$dir/package.json" "$build/"
    # -d http fetch-event: no wasi-http import (the host does not provide it).
    (cd "$build" && "$js/node_modules/.bin/componentize-js" app.js --wit wit -n plugin -d http fetch-event -o "$root/$out.tmp" >/dev/null)
    mv "$out.tmp" "$out"
  fi
done
# Go and C: the command plugin authors run (the host's debug build, which
# scripts/test.sh has just built; TRAPTOR_HOST_BIN points at another).
host=${TRAPTOR_HOST_BIN:-$root/target/debug/traptor-host}
[ -x "$host" ] || cargo build -q -p traptor-host --bin traptor-host
for lang in go c; do
  mkdir -p "plugins/target/$lang"
  for dir in plugins/$lang/*/; do
    name=$(basename "$dir")
    out="plugins/target/$lang/$name.wasm"
    # The SDK is linked into each example (symlinks): its sources count too.
    if stale "$out" "$dir" "sdk/$lang" wit; then
      log "$lang plugin $name (traptor-host plugin build)"
      "$host" plugin build "$dir" -o "$root/$out.tmp" >/dev/null
      mv "$out.tmp" "$out"
    fi
  done
done
log "plugins built"
