# Shared by proxy-bench.sh and idle-conns.sh (sourced): loopback port checks.
# LOG_HINT names the log to read when a port never opens.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # PORT [PID that must stay alive meanwhile]
  for _ in $(seq 200); do port_open "$1" && return 0; [ -z "${2:-}" ] || kill -0 "$2" 2>/dev/null || break; sleep 0.05; done
  echo "port $1 never opened; see ${LOG_HINT:-the log}" >&2; return 1
}
wait_closed() { for _ in $(seq 200); do port_open "$1" || return 0; sleep 0.05; done; echo "port $1 still open" >&2; return 1; }
require_free() { # PORT ...: exits when one is taken
  for p in "$@"; do port_open "$p" && { echo "127.0.0.1:$p is busy" >&2; exit 2; }; done; return 0
}
