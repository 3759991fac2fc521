#!/bin/sh
# replication-lag.sh: a small generic gate: pass when a lag in seconds is <= --max-seconds.
#
# Where the lag comes from, first match wins:
#   1. --lag-command CMD, or the LAG_COMMAND environment variable: run with `sh -c`; its
#      first line of output is the lag in seconds (a number; NULL or nothing = unknown).
#   2. --lag-file FILE, or LAG_FILE: the first line of that file.
#   3. the file `replication-lag.seconds` in the current directory, which is the config
#      file's directory when cutover runs the hook. This is for demos: the gate stays
#      closed until you `echo 0 > config/replication-lag.seconds`.
# An unknown lag (no output, NULL, missing file) never passes.
#
# Usage (the gate of the main example, config/cutover.yaml):
#   exec: ["hooks/replication-lag.sh", "--max-seconds", "5"]
# With a real database (the command's output must be just the number):
#   LAG_COMMAND='mysql --defaults-extra-file=/etc/cutover/replica.cnf -N -e "SELECT ..."'
#   exec: ["hooks/replication-lag.sh", "--max-seconds", "5", "--lag-command",
#          "psql -XAtc \"SELECT EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())\""]
# For MySQL or PostgreSQL, the dedicated mysql-replication-gate.sh and
# pg-replication-gate.sh check more (threads running, not a replica) and say why.
#
# Options (also as --name=value):
#   --max-seconds N    the largest acceptable lag; decimals allowed (default 5)
#   --lag-command CMD  shell command printing the lag (overrides LAG_COMMAND)
#   --lag-file FILE    file holding the lag (overrides LAG_FILE)
#   --dry-run          print where the lag would be read and exit 4
#   -h, --help         this text
#
# Environment:
#   From cutover: CUTOVER_SERVICE, CUTOVER_EVENT, CUTOVER_STEP, CUTOVER_WEIGHT,
#   CUTOVER_REASON, CUTOVER_RUN_ID (only logged); the JSON payload on stdin is not read.
#   LAG_COMMAND, LAG_FILE: see above. DRY_RUN is ignored: only --dry-run asks for a
#   dry run.
#
# Exit codes: 0 lag <= max · 1 lag above max, or unknown (NULL, empty) · 2 usage error ·
#             3 the lag could not be read (command failed, file missing, not a number) ·
#             4 dry run: nothing was read
set -eu

me=${0##*/}
log() { printf '%s: %s\n' "$me" "$*" >&2; }
say() { printf '%s\n' "$*"; } # echo would interpret backslashes in dash
die() { code=$1; shift; log "error: $*"; exit "$code"; }
usage() { sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"; }
is_number() {
    case ${1:-} in '' | . | *[!0-9.]* | *.*.*) return 1 ;; esac
}

max_seconds=5
lag_command=${LAG_COMMAND:-}
lag_file=${LAG_FILE:-replication-lag.seconds}
dry_run=0 # only --dry-run: a DRY_RUN variable inherited from cutover must not fake success

while [ $# -gt 0 ]; do
    case $1 in
        --*=*) opt=${1%%=*} val=${1#*=}; shift; set -- "$opt" "$val" "$@"; continue ;;
    esac
    case $1 in
        --dry-run) dry_run=1; shift; continue ;;
        -h | --help) usage; exit 0 ;;
        --max-seconds | --lag-command | --lag-file)
            [ $# -ge 2 ] || die 2 "$1 needs a value (try --help)" ;;
        *) die 2 "unknown option '$1' (try --help)" ;;
    esac
    case $1 in
        --max-seconds) max_seconds=$2 ;;
        --lag-command) lag_command=$2 ;;
        --lag-file) lag_file=$2 ;;
    esac
    shift 2
done
is_number "$max_seconds" || die 2 "--max-seconds must be a number of seconds, got '$max_seconds'"

if [ -n "$lag_command" ]; then lag_source="command: $lag_command"; else lag_source="file: $lag_file (in $(pwd))"; fi
if [ "$dry_run" = 1 ]; then
    log "DRY RUN for ${CUTOVER_SERVICE:-<no service>}: nothing is read or run (exit 4)"
    say "DRY RUN: nothing was read"
    say "would read the lag from $lag_source"
    say "would pass when it is a number <= $max_seconds"
    exit 4
fi

if [ -n "$lag_command" ]; then
    status=0
    output=$(sh -c "$lag_command" </dev/null) || status=$?
    [ "$status" -eq 0 ] || die 3 "the lag command failed (exit $status): $lag_command"
else
    [ -r "$lag_file" ] || die 3 "cannot read '$lag_file' in $(pwd): write the lag in seconds there (echo 0 > $lag_file), or set LAG_COMMAND"
    output=$(cat "$lag_file")
fi
lag=$(printf '%s\n' "$output" | sed -n '1{s/^[[:space:]]*//;s/[[:space:]]*$//;p;}')

case $lag in
    '' | NULL | null)
        say "FAIL: the lag is unknown ('${lag}' from $lag_source)"
        exit 1
        ;;
esac
is_number "$lag" || die 3 "'$lag' from $lag_source is not a number of seconds"
if awk -v lag="$lag" -v max="$max_seconds" 'BEGIN { exit !(lag + 0 <= max + 0) }'; then
    say "ok: lag ${lag}s <= ${max_seconds}s"
    exit 0
fi
say "FAIL: lag ${lag}s > ${max_seconds}s"
exit 1
