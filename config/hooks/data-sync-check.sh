#!/bin/sh
# data-sync-check.sh: is the NEW side's copy of the files identical to the OLD side's?
#
# The final data sync check of a migration (uploads, media, a file-based store): it runs
#   rsync --dry-run --itemize-changes --archive --delete SRC DEST
# and succeeds only when rsync itemizes nothing, i.e. a real sync would change nothing:
# no file to copy, to update (size, mtime, permissions, owner, symlink) or to delete.
# Nothing is ever written: rsync only compares.
#
# Mind rsync's trailing slash: `--src /srv/uploads/` compares the *contents* of
# /srv/uploads with DEST; `--src /srv/uploads` would compare DEST/uploads instead, and never
# pass. Either side may be remote (`host:/path/`, over ssh; rsync must exist there).
# On a tree that is still written to, this check passes only once writes have stopped or
# your continuous sync (lsyncd, a cron rsync) has caught up; as a `gate`, cutover re-runs it.
#
# Usage (as a cutover `gate` hook; cwd is the config file's directory):
#   exec: ["hooks/data-sync-check.sh", "--src", "old-1.internal:/srv/uploads/",
#          "--dest", "/srv/uploads/", "--exclude", "/tmp/"]
#
# Options (also as --name=value):
#   --src SRC          what should be there (trailing slash: the directory's contents)
#   --dest DEST        the copy to check
#   --exclude PATTERN  rsync exclude pattern; repeatable (caches, sockets, lock files)
#   --checksum         compare file contents, not only size and mtime (reads every file)
#   --rsh COMMAND      remote shell for host:path (rsync -e), e.g. "ssh -i /etc/cutover/id_sync"
#   --show N           print at most N differing lines (default 50)
#   --dry-run          print the rsync command and exit 4 without running it
#   -h, --help         this text
#   -- ARGS...         further arguments for rsync, passed as they are (e.g. --no-perms)
#
# Adapting: exclude what legitimately differs (per-host caches, pid files). Add
# --no-owner --no-group if the new servers use other uids. For a database's files, use
# the replication gates instead: a running database's files never compare equal.
#
# Environment:
#   From cutover: CUTOVER_SERVICE, CUTOVER_EVENT, CUTOVER_STEP, CUTOVER_WEIGHT,
#   CUTOVER_REASON, CUTOVER_RUN_ID (only logged); the JSON payload on stdin is not read.
#   RSYNC: the rsync program (default rsync). DRY_RUN is ignored: only --dry-run asks
#   for a dry run.
#
# Exit codes: 0 no difference · 1 differences found, or files vanished during the scan
#             (rsync 24) · 2 usage error · 3 rsync failed (missing, cannot read or
#             connect) · 4 dry run: nothing was compared
set -eu
set -f # patterns are kept verbatim, never globbed by this shell

me=${0##*/}
log() { printf '%s: %s\n' "$me" "$*" >&2; }
say() { printf '%s\n' "$*"; } # echo would interpret backslashes in dash
die() { code=$1; shift; log "error: $*"; exit "$code"; }
usage() { sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"; }
is_uint() { case ${1:-} in '' | *[!0-9]*) return 1 ;; esac; }
# Prints a command so that it can be pasted into a shell.
show_cmd() {
    for arg; do
        case $arg in
            '' | *[!A-Za-z0-9_./:=@%+,-]*) printf " '%s'" "$(printf '%s' "$arg" | sed "s/'/'\\\\''/g")" ;;
            *) printf ' %s' "$arg" ;;
        esac
    done
    printf '\n'
}
nl='
'

src='' dest='' excludes='' checksum=0 rsh='' show=50 extra=''
dry_run=0 # only --dry-run: a DRY_RUN variable inherited from cutover must not fake success
: "${RSYNC:=rsync}"

while [ $# -gt 0 ]; do
    case $1 in
        --*=*) opt=${1%%=*} val=${1#*=}; shift; set -- "$opt" "$val" "$@"; continue ;;
    esac
    case $1 in
        --dry-run) dry_run=1; shift; continue ;;
        --checksum) checksum=1; shift; continue ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        --src | --dest | --exclude | --rsh | --show)
            [ $# -ge 2 ] || die 2 "$1 needs a value (try --help)" ;;
        *) die 2 "unknown option '$1' (try --help; rsync options go after --)" ;;
    esac
    case $1 in
        --src) src=$2 ;;
        --dest) dest=$2 ;;
        --exclude) excludes="$excludes$2$nl" ;;
        --rsh) rsh=$2 ;;
        --show) show=$2 ;;
    esac
    shift 2
done
for arg in "$@"; do extra="$extra$arg$nl"; done
is_uint "$show" || die 2 "--show must be a whole number, got '$show'"

missing=''
[ -n "$src" ] || missing="$missing --src"
[ -n "$dest" ] || missing="$missing --dest"
[ -z "$missing" ] || die 2 "missing$missing (try --help)"
case $src in
    */ | '') ;;
    *) log "warning: --src '$src' has no trailing slash: rsync compares '${dest%/}/${src##*/}', not the contents of '$src'" ;;
esac

# The rsync command, built as positional parameters so every argument stays whole.
set -- "$RSYNC" --dry-run --itemize-changes --archive --delete
if [ "$checksum" = 1 ]; then set -- "$@" --checksum; fi
if [ -n "$rsh" ]; then set -- "$@" --rsh="$rsh"; fi
old_ifs=$IFS
IFS=$nl
for pattern in $excludes; do set -- "$@" --exclude="$pattern"; done
for arg in $extra; do set -- "$@" "$arg"; done
IFS=$old_ifs
set -- "$@" "$src" "$dest"

if [ "$dry_run" = 1 ]; then
    log "DRY RUN for ${CUTOVER_SERVICE:-<no service>}: rsync is not run (exit 4)"
    say "DRY RUN: nothing was compared"
    printf 'would run:'
    show_cmd "$@"
    say "would pass when that prints nothing (no file to copy, update or delete)"
    exit 4
fi

command -v "$RSYNC" >/dev/null 2>&1 || die 3 "'$RSYNC' is not installed"
out=$(mktemp "${TMPDIR:-/tmp}/data-sync.XXXXXX")
err=$(mktemp "${TMPDIR:-/tmp}/data-sync.XXXXXX")
trap 'rm -f "$out" "$err"' EXIT
trap 'exit 143' TERM INT

log "comparing $src -> $dest${CUTOVER_RUN_ID:+ (run $CUTOVER_RUN_ID)}"
status=0
"$@" >"$out" 2>"$err" </dev/null || status=$?
case $status in
    0) ;;
    24) log "files vanished while rsync scanned them: the tree is still being written to" ;;
    *)
        sed 's/^/rsync: /' "$err" >&2
        die 3 "rsync exited with $status; the trees could not be compared"
        ;;
esac
[ -s "$err" ] && sed 's/^/rsync: /' "$err" >&2

count=$(wc -l <"$out" | tr -d ' ')
if [ "$count" -eq 0 ] && [ "$status" -eq 0 ]; then
    say "in sync: $src and $dest do not differ"
    exit 0
fi
say "NOT in sync: $count difference(s) between $src and $dest (rsync --itemize-changes):"
head -n "$show" "$out"
[ "$count" -le "$show" ] || say "... and $((count - show)) more"
exit 1
