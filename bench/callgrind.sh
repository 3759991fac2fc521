#!/usr/bin/env bash
# User-space instructions per proxied request, with callgrind (deterministic: the same binary
# and inputs give the same count whatever else the machine does, up to a few tenths of a
# percent from timers and scheduling).
#
#   bench/callgrind.sh [CUTOVER_BIN] [LOADTEST_BIN]
#
# Runs the binary under callgrind twice, for 2,000 and 6,000 keep-alive requests through a
# 95/5 split to one loopback backend, and prints the difference divided by 4,000: start-up
# and shutdown cancel out. PIN="taskset -c 0" runs the proxy on one CPU, as the throughput
# benchmark does (one CPU: tokio's current-thread runtime). CLOSE=1 (any value) sends every request
# with `Connection: close`, so each one is a new client connection (as `proxy-bench.sh -m
# close`); those counts vary by a few hundred between runs. Needs valgrind and
# `cargo build --release` (both packages).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/cutover}
load=${2:-target/release/loadtest}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
proxy=$(port); backend=$(port); admin=$(port)
"$load" backend --listen "127.0.0.1:$backend" --name b --lifetime 10m >/dev/null 2>&1 &
cat >"$work/cutover.yaml" <<YAML
listeners:
  - addr: "127.0.0.1:$proxy"
admin:
  addr: "127.0.0.1:$admin"
state_dir: $work/state
services:
  - name: bench
    old:
      backends:
        - addr: "127.0.0.1:$backend"
    new:
      backends:
        - addr: "127.0.0.1:$backend"
    weight: 5%
YAML
total() { # requests -> instructions (Ir) of the whole run
  local out="$work/callgrind.$1"
  ${PIN:-} valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$bin" run -c "$work/cutover.yaml" 2>/dev/null &
  local pid=$!
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$admin/healthz" >/dev/null && break; sleep 0.1; done
  # Both runs last 15 s (rate = requests / 15), so the controller's once-a-second work
  # (analysis, status) is the same in both and cancels out with start-up and shutdown.
  "$load" load --url "http://127.0.0.1:$proxy/" --rate $(( $1 / 15 )) --requests "$1" --duration 60s \
    ${CLOSE:+--header "Connection: close"} >/dev/null
  kill -TERM $pid; wait $pid || true
  callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }'
}
small=$(total 2000); large=$(total 6000)
echo "instructions per request: $(( (large - small) / 4000 ))  (2000 req: $small, 6000 req: $large)"
