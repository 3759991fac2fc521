#!/bin/sh
# pg-replication-gate.sh: is the PostgreSQL replica caught up with its primary?
#
# Asks the replica, with psql (PostgreSQL 10 or later):
#   SELECT pg_is_in_recovery(),
#          EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()),
#          pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()
# and passes when the server is a replica (in recovery) and the lag is <= --max-seconds.
# A NULL lag fails with a clear message: either the server is not a replica (you are
# asking the primary) or it has not replayed a single transaction since it started.
#
# The lag is "how old is the last transaction replayed": on a primary with no writes it
# grows although nothing is missing. --idle-ok accepts that case when everything received
# has been replayed (receive LSN = replay LSN). Leave it off if the primary is always busy,
# or if the replica could be disconnected without noticing (then nothing is received).
#
# Usage (as a cutover `gate` hook, re-run every `every` until it passes or `deadline`):
#   exec: ["hooks/pg-replication-gate.sh", "--max-seconds", "5",
#          "--host", "db-new-1.internal", "--username", "cutover", "--dbname", "postgres"]
#
# Options (also as --name=value):
#   --max-seconds N     the largest acceptable lag in seconds (default 5)
#   --idle-ok           a replica that replayed all it received passes, however old the
#                       last transaction is
#   --dry-run           print the query and exit 4 without connecting
#   -h, --help          this text
#   Passed to psql as they are (connection options):
#   --host H, --port P, --username U, --dbname NAME_OR_CONNINFO
#   -- ARGS...          anything else for psql
#   No password on the command line: use ~/.pgpass (mode 0600), PGPASSFILE, or a
#   passwordless method (peer, cert). The standard PG* environment variables work too.
#
# Adapting: to compare positions with the primary instead of timestamps, query the primary's
# pg_current_wal_lsn() and the replica's pg_last_wal_replay_lsn() and compare with
# pg_wal_lsn_diff().
#
# Environment:
#   From cutover: CUTOVER_SERVICE, CUTOVER_EVENT, CUTOVER_STEP, CUTOVER_WEIGHT,
#   CUTOVER_REASON, CUTOVER_RUN_ID (only logged); the JSON payload on stdin is not read.
#   PSQL: the client program (default psql). PGCONNECT_TIMEOUT: seconds to wait for the
#   connection (default 5 here). PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSFILE, PGSSLMODE...
#   as for any libpq program. DRY_RUN is ignored: only --dry-run asks for a dry run.
#
# Exit codes: 0 caught up · 1 behind, not a replica, or nothing replayed · 2 usage error ·
#             3 could not query (psql missing, connection refused, auth) · 4 dry run:
#             nothing was checked
set -eu

me=${0##*/}
log() { printf '%s: %s\n' "$me" "$*" >&2; }
say() { printf '%s\n' "$*"; } # echo would interpret backslashes in dash
die() { code=$1; shift; log "error: $*"; exit "$code"; }
usage() { sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"; }
is_uint() { case ${1:-} in '' | *[!0-9]*) return 1 ;; esac; }
nl='
'

max_seconds=5 idle_ok=0 conn_opts=''
dry_run=0 # only --dry-run: a DRY_RUN variable inherited from cutover must not fake success
: "${PSQL:=psql}"
: "${PGCONNECT_TIMEOUT:=5}"
export PGCONNECT_TIMEOUT

while [ $# -gt 0 ]; do
    case $1 in
        --*=*) opt=${1%%=*} val=${1#*=}; shift; set -- "$opt" "$val" "$@"; continue ;;
    esac
    case $1 in
        --dry-run) dry_run=1; shift; continue ;;
        --idle-ok) idle_ok=1; shift; continue ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        --max-seconds | --host | --port | --username | --dbname)
            [ $# -ge 2 ] || die 2 "$1 needs a value (try --help)" ;;
        *) die 2 "unknown option '$1' (try --help; other psql options go after --)" ;;
    esac
    case $1 in
        --max-seconds) max_seconds=$2 ;;
        *) conn_opts="$conn_opts$1=$2$nl" ;;
    esac
    shift 2
done
for arg in "$@"; do conn_opts="$conn_opts$arg$nl"; done
is_uint "$max_seconds" || die 2 "--max-seconds must be a whole number of seconds, got '$max_seconds'"

query="SELECT pg_is_in_recovery(),
       EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()),
       pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"

# -X: no ~/.psqlrc; -A -t: bare values; -F: a separator that no value contains.
set -f
old_ifs=$IFS
IFS=$nl
# shellcheck disable=SC2086
set -- "$PSQL" -X -A -t -F '|' -v ON_ERROR_STOP=1 $conn_opts
IFS=$old_ifs
set +f

if [ "$dry_run" = 1 ]; then
    log "DRY RUN for ${CUTOVER_SERVICE:-<no service>}: nothing is contacted (exit 4)"
    say "DRY RUN: nothing was checked"
    say "would run: $* -c \"$(printf '%s' "$query" | tr -s ' \n' '  ')\""
    say "would pass when the server is in recovery and the lag is <= ${max_seconds}s$([ "$idle_ok" = 1 ] && echo ', or it replayed all it received')"
    exit 4
fi

command -v "$PSQL" >/dev/null 2>&1 || die 3 "'$PSQL' is not installed (apt install postgresql-client, or set PSQL)"
err=$(mktemp "${TMPDIR:-/tmp}/pg-gate.XXXXXX")
trap 'rm -f "$err"' EXIT
trap 'exit 143' TERM INT

if answer=$("$@" -c "$query" 2>"$err" </dev/null); then
    :
else
    sed 's/^/psql: /' "$err" >&2
    die 3 "could not query the replica"
fi

old_ifs=$IFS
IFS='|'
# shellcheck disable=SC2086
set -- $answer
IFS=$old_ifs
in_recovery=${1:-} lag=${2:-} replayed_all=${3:-}
service=${CUTOVER_SERVICE:+ for $CUTOVER_SERVICE}

if [ "$in_recovery" != t ]; then
    say "FAIL: this server is not a replica (pg_is_in_recovery() is false, replay lag is NULL): point --host at the replica"
    exit 1
fi
if [ -z "$lag" ]; then
    say "FAIL: the replica has not replayed any transaction since it started (pg_last_xact_replay_timestamp() is NULL); write something on the primary, or check that it streams"
    exit 1
fi
if awk -v lag="$lag" -v max="$max_seconds" 'BEGIN { exit !(lag + 0 <= max + 0) }'; then
    say "ok: the replica is $lag s behind (max $max_seconds)"
    log "replica caught up$service"
    exit 0
fi
if [ "$idle_ok" = 1 ] && [ "$replayed_all" = t ]; then
    say "ok: the last replayed transaction is $lag s old, but the replica replayed all it received (--idle-ok)"
    log "replica caught up$service"
    exit 0
fi
say "FAIL: the replica is $lag s behind, at most $max_seconds allowed"
log "replica not ready$service"
exit 1
