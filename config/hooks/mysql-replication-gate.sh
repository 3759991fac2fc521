#!/bin/sh
# mysql-replication-gate.sh: is the MySQL/MariaDB replica caught up with its source?
#
# Asks the replica `SHOW REPLICA STATUS\G` (MySQL 8.0.22+, MariaDB 10.5.1+) and falls back
# to `SHOW SLAVE STATUS\G` on older servers. Passes only when, for every replication
# channel:
#   - the IO thread runs   (Replica_IO_Running / Slave_IO_Running is Yes; not Connecting),
#   - the SQL thread runs  (Replica_SQL_Running / Slave_SQL_Running is Yes),
#   - the lag is known and small: Seconds_Behind_Source (or Seconds_Behind_Master) is not
#     NULL and <= --max-seconds.
# A server with no replication configured (empty status) fails: you are asking the wrong
# host. Last_IO_Error / Last_SQL_Error are printed when a thread is down.
#
# Usage (as a cutover `gate` hook, re-run every `every` until it passes or `deadline`):
#   exec: ["hooks/mysql-replication-gate.sh", "--max-seconds", "5",
#          "--defaults-extra-file", "/etc/cutover/replica.cnf", "--host", "db-new-1.internal"]
#
# Options (also as --name=value):
#   --max-seconds N     the largest acceptable lag in seconds (default 5; 0 for the final
#                       check before switching writes)
#   --channel NAME      only this replication channel (multi-source replication)
#   --connect-timeout S seconds to wait for the connection (default 5)
#   --dry-run           print the queries and exit 4 without connecting
#   -h, --help          this text
#   Passed to mysql as they are (connection options):
#   --defaults-file F, --defaults-extra-file F, --login-path NAME (MySQL only; these go first,
#   as mysql requires), --host H, --port P, --user U, --socket S, --ssl-mode M, --ssl-ca F
#   -- ARGS...          anything else for mysql
#   Do not put a password on the command line (every user sees it in `ps`): use an option
#   file (`[client]` user=... password=..., mode 0600) or `mysql_config_editor` login paths.
#
# Adapting: Seconds_Behind_Source is 0 when the IO thread is itself behind (it measures
# only the SQL thread). For the last check before writes move, also compare GTIDs, e.g.
#   SELECT GTID_SUBSET('<source @@gtid_executed>', @@gtid_executed)
# or stop writes on the source and wait with WAIT_FOR_EXECUTED_GTID_SET().
#
# Environment:
#   From cutover: CUTOVER_SERVICE, CUTOVER_EVENT, CUTOVER_STEP, CUTOVER_WEIGHT,
#   CUTOVER_REASON, CUTOVER_RUN_ID (only logged); the JSON payload on stdin is not read.
#   MYSQL: the client program (default mysql). DRY_RUN is ignored: only --dry-run asks
#   for a dry run.
#
# Exit codes: 0 caught up · 1 behind, a thread stopped, or not a replica · 2 usage error ·
#             3 could not query (client missing, connection refused, access denied) ·
#             4 dry run: nothing was checked
set -eu

me=${0##*/}
log() { printf '%s: %s\n' "$me" "$*" >&2; }
say() { printf '%s\n' "$*"; } # echo would interpret backslashes in dash
die() { code=$1; shift; log "error: $*"; exit "$code"; }
usage() { sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"; }
is_uint() { case ${1:-} in '' | *[!0-9]*) return 1 ;; esac; }
nl='
'

max_seconds=5 channel='' connect_timeout=5
defaults_opts='' conn_opts=''
dry_run=0 # only --dry-run: a DRY_RUN variable inherited from cutover must not fake success
: "${MYSQL:=mysql}"

while [ $# -gt 0 ]; do
    case $1 in
        --*=*) opt=${1%%=*} val=${1#*=}; shift; set -- "$opt" "$val" "$@"; continue ;;
    esac
    case $1 in
        --dry-run) dry_run=1; shift; continue ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        --max-seconds | --channel | --connect-timeout | --defaults-file | --defaults-extra-file | \
            --login-path | --host | --port | --user | --socket | --ssl-mode | --ssl-ca)
            [ $# -ge 2 ] || die 2 "$1 needs a value (try --help)" ;;
        -p* | --password*) die 2 "do not pass a password on the command line; use --defaults-extra-file (see --help)" ;;
        *) die 2 "unknown option '$1' (try --help; other mysql options go after --)" ;;
    esac
    case $1 in
        --max-seconds) max_seconds=$2 ;;
        --channel) channel=$2 ;;
        --connect-timeout) connect_timeout=$2 ;;
        --defaults-file | --defaults-extra-file | --login-path) defaults_opts="$defaults_opts$1=$2$nl" ;;
        *) conn_opts="$conn_opts$1=$2$nl" ;;
    esac
    shift 2
done
for arg in "$@"; do conn_opts="$conn_opts$arg$nl"; done
is_uint "$max_seconds" || die 2 "--max-seconds must be a whole number of seconds, got '$max_seconds'"
is_uint "$connect_timeout" || die 2 "--connect-timeout must be a whole number, got '$connect_timeout'"
case $channel in *"'"* | *\\*) die 2 "--channel must not contain quotes or backslashes" ;; esac

for_channel=''
[ -n "$channel" ] && for_channel=" FOR CHANNEL '$channel'"
query_new="SHOW REPLICA STATUS$for_channel\\G"
query_old="SHOW SLAVE STATUS$for_channel\\G"

# mysql's argv: option-file options first (mysql insists), then the connection options.
set -f
old_ifs=$IFS
IFS=$nl
# shellcheck disable=SC2086
set -- "$MYSQL" $defaults_opts $conn_opts "--connect-timeout=$connect_timeout"
IFS=$old_ifs
set +f

if [ "$dry_run" = 1 ]; then
    log "DRY RUN for ${CUTOVER_SERVICE:-<no service>}: nothing is contacted (exit 4)"
    say "DRY RUN: nothing was checked"
    say "would run: $* -e \"$query_new\""
    say "   and if the server does not know that syntax: $* -e \"$query_old\""
    say "would pass when, for every channel, the IO and SQL threads are running and the lag is <= ${max_seconds}s"
    exit 4
fi

command -v "$MYSQL" >/dev/null 2>&1 || die 3 "'$MYSQL' is not installed (apt install default-mysql-client, or set MYSQL)"
out=$(mktemp "${TMPDIR:-/tmp}/mysql-gate.XXXXXX")
err=$(mktemp "${TMPDIR:-/tmp}/mysql-gate.XXXXXX")
trap 'rm -f "$out" "$err"' EXIT
trap 'exit 143' TERM INT

if "$@" -e "$query_new" >"$out" 2>"$err" </dev/null; then
    :
else
    first_error=$(cat "$err")
    if "$@" -e "$query_old" >"$out" 2>"$err" </dev/null; then
        :
    else
        log "SHOW REPLICA STATUS failed: $first_error"
        log "SHOW SLAVE STATUS failed: $(cat "$err")"
        die 3 "could not read the replication status"
    fi
fi

# \G output: a "*** N. row ***" line per channel, then "Field: value" lines.
awk -v max="$max_seconds" '
    function flush() {
        if (!row) return
        name = (chan == "" ? "replication" : "channel \"" chan "\"")
        if (io != "Yes") {
            printf "FAIL: %s: IO thread is %s%s\n", name, (io == "" ? "not reported" : io), (io_err == "" ? "" : " (" io_err ")")
            bad = 1
        } else if (sql != "Yes") {
            printf "FAIL: %s: SQL thread is %s%s\n", name, (sql == "" ? "not reported" : sql), (sql_err == "" ? "" : " (" sql_err ")")
            bad = 1
        } else if (lag == "" || lag == "NULL") {
            printf "FAIL: %s: lag is unknown (Seconds_Behind is NULL)\n", name
            bad = 1
        } else if (lag + 0 > max) {
            printf "FAIL: %s: %s s behind the source, at most %d allowed\n", name, lag, max
            bad = 1
        } else {
            printf "ok: %s: %s s behind the source (max %d), IO and SQL threads running\n", name, lag, max
        }
        row = 0
    }
    /^\*+ [0-9]+\. row \*+$/ { flush(); row = 1; rows++; io = sql = lag = chan = io_err = sql_err = ""; next }
    {
        line = $0
        sub(/^[ \t]+/, "", line)
        colon = index(line, ":")
        if (colon == 0) next
        key = substr(line, 1, colon - 1)
        value = substr(line, colon + 1)
        sub(/^ /, "", value)
        if (key == "Replica_IO_Running" || key == "Slave_IO_Running") io = value
        else if (key == "Replica_SQL_Running" || key == "Slave_SQL_Running") sql = value
        else if (key == "Seconds_Behind_Source" || key == "Seconds_Behind_Master") lag = value
        else if (key == "Channel_Name" || key == "Connection_name") chan = value
        else if (key == "Last_IO_Error") io_err = value
        else if (key == "Last_SQL_Error") sql_err = value
    }
    END {
        flush()
        if (rows == 0) { print "FAIL: this server has no replication configured (empty replica status): is --host the replica?"; exit 1 }
        exit bad
    }' "$out" && status=0 || status=$?

if [ "$status" -eq 0 ]; then
    log "replica caught up${CUTOVER_SERVICE:+ for $CUTOVER_SERVICE}"
else
    log "replica not ready${CUTOVER_SERVICE:+ for $CUTOVER_SERVICE}"
fi
exit "$status"
