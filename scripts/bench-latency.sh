#!/usr/bin/env bash
# End-to-end latency measured from outside the collector (issue 23): a
# stand-in X API v2 filtered stream on a local socket (host/examples/
# latency_probe.rs) writes posts of ~400 bytes at each RATE, one write each,
# stamping the send time into each post's id; a reader takes the collector's
# standard output (or its file sink) as it arrives and times every line. The
# release binary runs with one track rule, the buffer on (the default for a
# live source). Prints p50 / p99 / max from outside, and the p50 of the
# collector's own /metrics end-to-end histogram beside it, and the CPU the
# collector used per post (user + system, start-up included).
#
# Before each collector run, a control runs the same measurement through a
# relay that does no work (the probe itself: read the stream, copy each post
# to stdout): its figures are this machine's floor at that moment. On a
# shared VM the floor moves (p99 at 10k posts/s 0.1 ms in a quiet hour,
# 2–4.5 ms in a noisy one); read the collector's figures beside it. Usage:
#
#   scripts/bench-latency.sh [SECONDS per rate (default 5)] [RATE …] (default 1000 10000 30000)
#   SINK=file scripts/bench-latency.sh       # the file sink, read as it grows
#   BUFFER=off scripts/bench-latency.sh      # without the disk buffer
#   RUNS=3 scripts/bench-latency.sh          # each rate several times
#   CONTROL=off scripts/bench-latency.sh     # without the relay's floor
#   HOG=2 scripts/bench-latency.sh           # with 2 busy loops running beside
#                                            # (a noisy machine, reproducibly)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
shift || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(1000 10000 30000)
cargo build --release -q -p traptor-host --bin traptor-host --example latency_probe
hogs=()
stop_hogs() { [ ${#hogs[@]} -eq 0 ] || kill "${hogs[@]}" 2>/dev/null || true; }
trap stop_hogs EXIT
for _ in $(seq "${HOG:-0}"); do
  sh -c 'while :; do :; done' &
  hogs+=($!)
done
echo "stand-in X v2 stream -> target/release/traptor-host -> ${SINK:-stdout}; $secs s per rate after a 1 s warm-up; $(nproc) cores; ${HOG:-0} busy loops beside" >&2
for rate in "${rates[@]}"; do
  for _ in $(seq "${RUNS:-1}"); do
    if [ "${CONTROL:-on}" != off ]; then
      target/release/examples/latency_probe --bin relay --rate "$rate" --seconds "$secs" --dir target/bench
    fi
    target/release/examples/latency_probe --bin target/release/traptor-host --rate "$rate" --seconds "$secs" \
      --sink "${SINK:-stdout}" --buffer "${BUFFER:-on}" --dir target/bench
  done
done
