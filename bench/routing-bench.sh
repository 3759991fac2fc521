#!/usr/bin/env bash
# Routing cost: cutover with 2 and with 1,000 backends per pool, and with 100 services, in one
# run of proxy-bench.sh (same layout: the proxy on CPU 0, backend and wrk on CPU 1).
#
#   bench/routing-bench.sh [-d SECONDS] [-r ROUNDS] [-n]
#
#   -n   also nginx, with the same two pool sizes (nginx-two, nginx-thousand: one upstream of
#        2 or 1,000 servers, `keepalive 2048`), as a reference for what 1,000 backends cost
#        any proxy here
#
# A second backend nginx (CPU 1) answers on 127.0.0.1:20000-20999 (BASE_PORT to change it).
#   two        one service, 2 backends per pool (ports 20000-20001), 95/5 split
#   thousand   one service, 1,000 backends per pool (ports 20000-20999), 95/5 split
#   hundred    100 services matched by path prefix /s0 ... /s99, 2 backends per pool each;
#              the load asks for /s99/, the last one to match (prefixes /sN/)
# Every proxy gets the same path (/s99/) so the three differ only in their routing.
# Prints, as proxy-bench.sh -x does, each proxy's CPU time per request.
# Needs what proxy-bench.sh needs, and `cargo build --release`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dur=10; rounds=3; base=${BASE_PORT:-20000}; with_nginx=""
while getopts "d:r:n" o; do case $o in d) dur=$OPTARG;; r) rounds=$OPTARG;; n) with_nginx=1;; *) exit 2;; esac; done
bin=$(realpath "${CUTOVER_BIN:-target/release/cutover}")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/routing-bench.XXXXXX")
backend=""
cleanup() { [ -z "$backend" ] || { kill "$backend" 2>/dev/null; wait "$backend" 2>/dev/null; }; rm -rf "$tmp"; }
trap cleanup EXIT

{
  echo "worker_processes 1; worker_rlimit_nofile 8192; daemon off; pid $tmp/backend.pid;"
  echo "error_log /dev/null crit; events { worker_connections 4096; }"
  echo "http { access_log off; keepalive_requests 1000000; server {"
  for i in $(seq 0 999); do echo "  listen 127.0.0.1:$((base + i)) backlog=4096;"; done
  echo "  location / { return 200 'hello from backend\n'; } } }"
} >"$tmp/backend.conf"
taskset -c 1 nginx -c "$tmp/backend.conf" & backend=$!

pool() { # FIRST COUNT -> a YAML list of backends
  for i in $(seq "$1" $(($1 + $2 - 1))); do printf '        - addr: "127.0.0.1:%s"\n' $((base + i)); done
}
service() { # NAME PREFIX FIRST COUNT
  printf '  - name: %s\n' "$1"
  [ -z "$2" ] || printf '    match: { path_prefix: %s }\n' "$2"
  printf '    weight: 5%%\n    old:\n      backends:\n%s\n    new:\n      backends:\n%s\n' \
    "$(pool "$3" "$4")" "$(pool "$3" "$4")"
}
config() { # NAME, then services on stdin
  printf 'listeners:\n  - addr: "127.0.0.1:18080"\nadmin:\n  addr: "127.0.0.1:19901"\n'
  printf 'state_dir: %s/state-%s\nservices:\n' "$tmp" "$1"
  cat
}
service bench "" 0 2 | config two >"$tmp/two.yaml"
service bench "" 0 1000 | config thousand >"$tmp/thousand.yaml"
for s in $(seq 0 99); do service "s$s" "/s$s/" $((2 * s)) 2; done | config hundred >"$tmp/hundred.yaml"
for c in two thousand hundred; do "$bin" validate -c "$tmp/$c.yaml" >/dev/null; done

nginx_config() { # NAME COUNT: nginx proxying to COUNT backends, 95/5 as cutover's split
  echo "worker_processes 1; worker_rlimit_nofile 16384; daemon off; pid $tmp/nginx-$1.pid;"
  echo "error_log /dev/null crit; events { worker_connections 8192; }"
  echo "http { access_log off; keepalive_requests 1000000; upstream old {"
  for i in $(seq 0 $(($2 - 1))); do echo "  server 127.0.0.1:$((base + i));"; done
  echo "  keepalive 2048; }"
  echo "  server { listen 127.0.0.1:18080 backlog=4096; location / { proxy_pass http://old;"
  echo "    proxy_http_version 1.1; proxy_set_header Connection \"\"; } } }"
}
peers=()
if [ -n "$with_nginx" ]; then
  nginx_config two 2 >"$tmp/nginx-two.conf"; nginx_config thousand 1000 >"$tmp/nginx-thousand.conf"
  peers=("nginx-two=nginx -c $tmp/nginx-two.conf" "nginx-thousand=nginx -c $tmp/nginx-thousand.conf")
fi

for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$((base + 999))") 2>/dev/null && break; sleep 0.05; done
"$here/proxy-bench.sh" -x -d "$dur" -r "$rounds" -p /s99/ \
  "two=$bin run -c $tmp/two.yaml" "thousand=$bin run -c $tmp/thousand.yaml" \
  "hundred=$bin run -c $tmp/hundred.yaml" "${peers[@]}"
