#!/bin/sh
# rollback-db.sh: put a PostgreSQL database back to its pre-migration dump.
#
# Runs
#   pg_restore --clean --if-exists --exit-on-error --single-transaction --dbname DB DUMP
# which drops every object the dump contains and recreates it from the dump, all in one
# transaction: either the whole database is back as it was, or nothing changed. Objects
# the dump does not know (a table the migration added) are left in place: drop them in a
# script of your own, or restore into a freshly created database instead.
#
# THIS DISCARDS EVERY WRITE MADE TO THAT DATABASE SINCE THE DUMP WAS TAKEN. It fits a
# migration whose NEW side changed the database (a schema migration, a data conversion)
# while the OLD side still wrote elsewhere, so that undoing it loses nothing you need.
# cutover fires `rollback` only before a passed `point_of_no_return` step (after it, a
# failing rollout pauses instead), so put the step that moves writes there.
#
# Safety: it refuses to run unless --confirm is given or cutover runs it for a rollback
# (CUTOVER_EVENT=rollback). It checks that the dump is a pg_restore archive before
# touching the database, and logs what it restores, where, and why.
#
# Usage (as a cutover event hook):
#   rollback-db:
#     on: [rollback]
#     exec: ["hooks/rollback-db.sh", "--dump", "/var/backups/app/pre-migration.dump",
#            "--dbname", "app", "--host", "db-new-1.internal", "--username", "app_owner"]
#     timeout: 30m
# By hand:  hooks/rollback-db.sh --dump FILE --dbname app --confirm
#
# Options (also as --name=value):
#   --dump FILE        the archive from `pg_dump -Fc` (custom), -Fd (directory) or -Ft (tar);
#                      a plain .sql dump is restored with psql instead
#   --dbname DB        the database to restore into: a name or a libpq connection string
#   --host H, --port P, --username U    connection, passed to pg_restore
#   --jobs N           restore with N parallel jobs (custom/directory archives); this gives
#                      up the single transaction, so a failure can leave a partial restore
#   --no-owner         do not restore object ownership (the NEW server has other roles)
#   --confirm          run even though CUTOVER_EVENT is not `rollback`
#   --dry-run          check the dump, print what would be restored, exit 4 (or 2 when a
#                      real run would refuse, 3 when the dump is unusable)
#   -h, --help         this text
#   -- ARGS...         further pg_restore arguments (e.g. --schema=app, --role=app_owner)
#   Passwords: ~/.pgpass or PGPASSFILE, never on the command line.
#
# Adapting: for MySQL, replace the restore with `mysql --defaults-extra-file=F DB < dump.sql`
# (and drop the tables first, as --clean does). Give the hook a long `timeout`: cutover
# kills the whole process group when it expires, and single-transaction makes that safe.
#
# Environment:
#   From cutover: CUTOVER_EVENT (must be `rollback` unless --confirm), CUTOVER_SERVICE,
#   CUTOVER_STEP, CUTOVER_WEIGHT, CUTOVER_REASON, CUTOVER_RUN_ID (all logged); the JSON
#   payload on stdin is not read. PG_RESTORE: the program (default pg_restore).
#   PGHOST, PGPORT, PGUSER, PGPASSFILE, ... as for any libpq program. DRY_RUN is ignored:
#   only --dry-run asks for a dry run.
#
# Exit codes: 0 restored · 1 the restore failed (the transaction rolled back) · 2 usage
#             error, or refused (no --confirm outside a rollback), also in a dry run ·
#             3 the dump cannot be used or pg_restore is missing · 4 dry run: nothing
#             was restored
set -eu

me=${0##*/}
log() { printf '%s: %s\n' "$me" "$*" >&2; }
say() { printf '%s\n' "$*"; } # echo would interpret backslashes in dash
die() { code=$1; shift; log "error: $*"; exit "$code"; }
usage() { sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"; }
is_uint() { case ${1:-} in '' | *[!0-9]*) return 1 ;; esac; }
# Connection strings may hold a password: never log one.
mask() { printf '%s' "$1" | sed -e 's/\(password=\)[^ ]*/\1***/g' -e 's#\(://[^:/@]*:\)[^@]*@#\1***@#'; }
nl='
'

dump='' dbname='' jobs=1 no_owner=0 confirm=0 conn_opts='' extra=''
dry_run=0 # only --dry-run: a DRY_RUN variable inherited from cutover must not fake success
: "${PG_RESTORE:=pg_restore}"

while [ $# -gt 0 ]; do
    case $1 in
        --*=*) opt=${1%%=*} val=${1#*=}; shift; set -- "$opt" "$val" "$@"; continue ;;
    esac
    case $1 in
        --dry-run) dry_run=1; shift; continue ;;
        --confirm) confirm=1; shift; continue ;;
        --no-owner) no_owner=1; shift; continue ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        --dump | --dbname | --host | --port | --username | --jobs)
            [ $# -ge 2 ] || die 2 "$1 needs a value (try --help)" ;;
        *) die 2 "unknown option '$1' (try --help; other pg_restore options go after --)" ;;
    esac
    case $1 in
        --dump) dump=$2 ;;
        --dbname) dbname=$2 ;;
        --jobs) jobs=$2 ;;
        *) conn_opts="$conn_opts$1=$2$nl" ;;
    esac
    shift 2
done
for arg in "$@"; do extra="$extra$arg$nl"; done
if ! is_uint "$jobs" || [ "$jobs" -lt 1 ]; then
    die 2 "--jobs must be a whole number of at least 1, got '$jobs'"
fi

event=${CUTOVER_EVENT:-}
why="service=${CUTOVER_SERVICE:-?} event=${event:-none} step=${CUTOVER_STEP:-?} weight=${CUTOVER_WEIGHT:-?}% run=${CUTOVER_RUN_ID:-none} reason=${CUTOVER_REASON:-none}"

[ -n "$dump" ] || die 2 "missing --dump FILE (try --help)"
[ -n "$dbname" ] || die 2 "missing --dbname DB (try --help)"
refusal=''
if [ "$confirm" != 1 ] && [ "$event" != rollback ]; then
    refusal="refusing to overwrite database '$(mask "$dbname")' from '$dump': this runs only for cutover's rollback event (CUTOVER_EVENT=rollback, here '${event:-unset}') or with --confirm"
fi
[ "$dry_run" = 1 ] || [ -z "$refusal" ] || die 2 "$refusal"

set -- "$PG_RESTORE" --clean --if-exists --exit-on-error
if [ "$jobs" -gt 1 ]; then set -- "$@" "--jobs=$jobs"; else set -- "$@" --single-transaction; fi
if [ "$no_owner" = 1 ]; then set -- "$@" --no-owner; fi
set -f
old_ifs=$IFS
IFS=$nl
for arg in $conn_opts $extra; do set -- "$@" "$arg"; done
IFS=$old_ifs
set +f
set -- "$@" "--dbname=$dbname" "$dump"

# Is it an archive pg_restore can read? `--list` only reads the file.
entries=''
inspect_dump() {
    if [ ! -r "$dump" ]; then
        say "cannot read '$dump'"
        return 1
    fi
    if ! command -v "$PG_RESTORE" >/dev/null 2>&1; then
        say "'$PG_RESTORE' is not installed (apt install postgresql-client, or set PG_RESTORE)"
        return 1
    fi
    if ! list=$("$PG_RESTORE" --list "$dump" 2>&1); then
        say "'$dump' is not a pg_restore archive ($list); restore a plain SQL dump with psql -f"
        return 1
    fi
    entries=$(printf '%s\n' "$list" | grep -c -v -e '^;' -e '^$' || :)
    if [ -d "$dump" ]; then
        size="directory archive"
    else
        size="$(wc -c <"$dump" | tr -d ' ') bytes"
    fi
    # shellcheck disable=SC2012 # ls is only read for the human date
    say "dump '$dump': $entries objects, $size, written $(ls -ld "$dump" | awk '{ print $6, $7, $8 }')"
}

shown=$(printf ' %s' "$@")
if [ "$dry_run" = 1 ]; then
    log "DRY RUN ($why): the database is not touched"
    say "DRY RUN: nothing was restored"
    report=$(inspect_dump) || die 3 "$report"
    say "$report"
    say "would run:$(mask "$shown")"
    [ -z "$refusal" ] || die 2 "$refusal"
    log "DRY RUN: exit 4"
    exit 4
fi

report=$(inspect_dump) || die 3 "$report"
log "$report"
log "restoring into '$(mask "$dbname")' ($why)"
log "running:$(mask "$shown")"
trap 'exit 143' TERM INT
started=$(date +%s)
status=0
"$@" </dev/null || status=$?
if [ "$status" -eq 0 ]; then
    log "restored '$(mask "$dbname")' from '$dump' in $(($(date +%s) - started))s"
    say "ok: database '$(mask "$dbname")' is back to '$dump'"
    exit 0
fi
if [ "$jobs" -gt 1 ]; then
    log "pg_restore failed (exit $status) with --jobs=$jobs: the database may be PARTLY restored; rerun by hand with --confirm"
else
    log "pg_restore failed (exit $status); the single transaction rolled back, the database is unchanged"
fi
exit 1
