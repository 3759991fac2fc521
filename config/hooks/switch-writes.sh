#!/bin/sh
# switch-writes.sh: point the application's writes at the NEW database (template).
#
# Meant for a `run` step marked `point_of_no_return: true`: once writes land on NEW, the
# OLD database falls behind, and sending traffic back would lose those writes. After that
# step passes, cutover pauses on failing analysis instead of rolling back.
#
# Three stages, each a shell command you provide (run with `sh -c`):
#   1. precheck (optional): must succeed before anything changes, e.g. the replica is fully
#      caught up:  hooks/mysql-replication-gate.sh --max-seconds 0 --host db-new-1
#   2. switch (required with --apply): the one change that moves writes, e.g.
#      ProxySQL:   mysql --defaults-extra-file=/etc/cutover/proxysql-admin.cnf -e
#                  "UPDATE mysql_servers SET hostname='db-new-1' WHERE hostgroup_id=10;
#                   LOAD MYSQL SERVERS TO RUNTIME; SAVE MYSQL SERVERS TO DISK;"
#      PgBouncer:  sed -i 's/host=db-old-1/host=db-new-1/' /etc/pgbouncer/pgbouncer.ini &&
#                  psql -p 6432 -U pgbouncer pgbouncer -c 'PAUSE app' -c 'RELOAD' -c 'RESUME app'
#      App config: consul kv put app/db/write_host db-new-1
#   3. verify (optional): proves the switch took effect, e.g. a write through the app's
#      connection path lands on NEW.
# Without --apply it only prints this plan, says DRY RUN and exits 4, so that a `run` step
# that forgot --apply fails instead of passing without having switched anything.
#
# Write the switch command so that running it twice is harmless: cutover retries a failed
# `run` hook up to `retries` times, and a timeout kills it at any point. If the switch ran
# but verify fails, the step fails and cutover rolls the traffic back, while writes may
# already go to NEW: this script says so loudly; check the write target by hand.
#
# Usage (as a cutover `run` step):
#   steps:
#     - run: switch-writes
#       point_of_no_return: true
#   hooks:
#     switch-writes:
#       exec: ["hooks/switch-writes.sh", "--apply",
#              "--precheck", "hooks/mysql-replication-gate.sh --max-seconds 0",
#              "--command", "/usr/local/sbin/proxysql-switch-writes db-new-1"]
#       timeout: 5m
#       retries: 2
#
# Options (also as --name=value):
#   --apply            perform the stages; without it, print them and exit 4 (a dry run)
#   --command CMD      the switch command (overrides SWITCH_COMMAND); required, also for
#                      a dry run
#   --precheck CMD     run first; on failure nothing changes (overrides PRECHECK_COMMAND)
#   --verify CMD       run after the switch (overrides VERIFY_COMMAND)
#   --dry-run          print the plan and exit 4, even with --apply
#   -h, --help         this text
#
# Environment:
#   From cutover: CUTOVER_SERVICE, CUTOVER_EVENT, CUTOVER_STEP, CUTOVER_WEIGHT,
#   CUTOVER_REASON, CUTOVER_RUN_ID (logged, and inherited by the commands); the JSON
#   payload on stdin is not read. SWITCH_COMMAND, PRECHECK_COMMAND, VERIFY_COMMAND: the
#   stages, as above. DRY_RUN is ignored: only --dry-run (or leaving out --apply) asks
#   for a dry run. The commands run in the current directory, which is the config file's
#   directory under cutover.
#
# Exit codes: 0 switched · 1 precheck, switch or verify failed · 2 usage error (no switch
#             command, also in a dry run) · 4 dry run (--dry-run, or no --apply): nothing
#             was changed
set -eu

me=${0##*/}
log() { printf '%s: %s\n' "$me" "$*" >&2; }
say() { printf '%s\n' "$*"; } # echo would interpret backslashes in dash
die() { code=$1; shift; log "error: $*"; exit "$code"; }
usage() { sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"; }

apply=0
switch_command=${SWITCH_COMMAND:-}
precheck_command=${PRECHECK_COMMAND:-}
verify_command=${VERIFY_COMMAND:-}
dry_run=0 # only --dry-run: a DRY_RUN variable inherited from cutover must not fake success

while [ $# -gt 0 ]; do
    case $1 in
        --*=*) opt=${1%%=*} val=${1#*=}; shift; set -- "$opt" "$val" "$@"; continue ;;
    esac
    case $1 in
        --dry-run) dry_run=1; shift; continue ;;
        --apply) apply=1; shift; continue ;;
        -h | --help) usage; exit 0 ;;
        --command | --precheck | --verify)
            [ $# -ge 2 ] || die 2 "$1 needs a value (try --help)" ;;
        *) die 2 "unknown option '$1' (try --help)" ;;
    esac
    case $1 in
        --command) switch_command=$2 ;;
        --precheck) precheck_command=$2 ;;
        --verify) verify_command=$2 ;;
    esac
    shift 2
done

[ -n "$switch_command" ] || die 2 "no switch command: give --command CMD or set SWITCH_COMMAND"

context="service=${CUTOVER_SERVICE:-?} step=${CUTOVER_STEP:-?} weight=${CUTOVER_WEIGHT:-?}% run=${CUTOVER_RUN_ID:-none}"

if [ "$apply" != 1 ] || [ "$dry_run" = 1 ]; then
    if [ "$dry_run" = 1 ]; then
        why="--dry-run"
    else
        why="no --apply; add --apply to perform it"
    fi
    log "DRY RUN ($why; $context): nothing changes (exit 4)"
    say "DRY RUN ($why): nothing was changed"
    say "1. precheck: ${precheck_command:-(none; set --precheck or PRECHECK_COMMAND to check the replica first)}"
    say "2. switch:   $switch_command"
    say "3. verify:   ${verify_command:-(none; set --verify or VERIFY_COMMAND to prove the switch)}"
    exit 4
fi

trap 'log "interrupted: the switch may be half done; check the write target"; exit 143' TERM INT

run_stage() { # name command
    log "$1: $2"
    status=0
    sh -c "$2" </dev/null || status=$?
    return "$status"
}

log "switching writes to NEW ($context)"
if [ -n "$precheck_command" ]; then
    run_stage precheck "$precheck_command" || {
        say "FAIL: precheck failed (exit $status); nothing was changed"
        exit 1
    }
fi
run_stage switch "$switch_command" || {
    say "FAIL: the switch command failed (exit $status); writes may or may not have moved: check the write target"
    exit 1
}
if [ -n "$verify_command" ]; then
    run_stage verify "$verify_command" || {
        say "FAIL: verify failed (exit $status) AFTER the switch command succeeded: writes may already go to NEW; check before traffic moves back"
        exit 1
    }
fi
say "ok: writes now go to NEW"
