#!/bin/sh
# dns-switch.sh: point a DNS name at the NEW servers with a dynamic update (nsupdate).
#
# Builds one RFC 2136 update that deletes the name's current records and adds the new
# ones, and sends it with `nsupdate -k KEYFILE`. One `send` is one update message, so the
# server applies the delete and the add together. Records deleted first, so that a name
# can change between address records and a CNAME:
#   --type A: A and CNAME · --type AAAA: AAAA and CNAME · --type CNAME: A, AAAA and CNAME
#
# WITHOUT --apply IT ONLY PRINTS the nsupdate script, says DRY RUN and exits 4: a step that
# forgot --apply fails instead of passing without having switched anything. With --apply
# it sends the update, then, if `dig` is installed and --server is given, asks that server
# and fails when the answer differs.
#
# A DNS switch is a point of no return: resolvers and clients cache the old answer for
# the old TTL, and cutover cannot pull them back. Lower the TTL a day ahead (at least the
# old TTL before the switch), and use this in a `run` step with `point_of_no_return: true`.
#
# Usage (as a cutover `run` step; cwd is the config file's directory):
#   exec: ["hooks/dns-switch.sh", "--apply", "--server", "ns1.example.com",
#          "--zone", "example.com", "--name", "shop.example.com",
#          "--type", "A", "--value", "203.0.113.20", "--ttl", "60",
#          "--key-file", "/etc/cutover/dns-update.key"]
# Print the update without sending it (exit 4):
#   hooks/dns-switch.sh --dry-run --name shop.example.com --value 203.0.113.20
#
# Options (also as --name=value):
#   --name FQDN        the record to change (a trailing dot is added if missing)
#   --type TYPE        A (default), AAAA or CNAME
#   --value VALUE      an address (A/AAAA, repeatable for several) or the target (CNAME)
#   --ttl SECONDS      TTL of the new records (default 60)
#   --zone ZONE        the zone to update (default: nsupdate finds it from the SOA)
#   --server HOST      the primary server to send to (default: the zone's SOA MNAME)
#   --port PORT        its port (default 53)
#   --key-file FILE    TSIG key for nsupdate -k (tsig-keygen output); needed with --apply
#   --timeout SECONDS  nsupdate -t (default 10)
#   --apply            send the update; without it, print it and exit 4 (a dry run)
#   --dry-run          print the update and exit 4, even with --apply
#   -h, --help         this text
#
# Adapting: for a DNS provider with an API, replace send_nsupdate (see the Route 53 block
# at the end of this file). Keep the key file readable only by the user running cutover.
#
# Environment:
#   From cutover: CUTOVER_SERVICE, CUTOVER_EVENT, CUTOVER_STEP, CUTOVER_WEIGHT,
#   CUTOVER_REASON, CUTOVER_RUN_ID (only logged); the JSON payload on stdin is not read.
#   NSUPDATE (default nsupdate), DIG (default dig). DRY_RUN is ignored: only --dry-run
#   (or leaving out --apply) asks for a dry run.
#
# Exit codes: 0 sent (and verified, with --server and dig) · 1 nsupdate failed or the
#             server answers something else · 2 usage error (also in a dry run: missing
#             --name or --value, --apply without --key-file) · 3 nsupdate missing or the
#             key file unreadable · 4 dry run (--dry-run, or no --apply): nothing was sent
set -eu
set -f # values are split on spaces, never globbed

me=${0##*/}
log() { printf '%s: %s\n' "$me" "$*" >&2; }
say() { printf '%s\n' "$*"; } # echo would interpret backslashes in dash
die() { code=$1; shift; log "error: $*"; exit "$code"; }
usage() { sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"; }
is_uint() { case ${1:-} in '' | *[!0-9]*) return 1 ;; esac; }
is_hostname() { case ${1:-} in '' | *[!A-Za-z0-9._-]* | *..* | .*) return 1 ;; esac; }
is_ipv4() {
    printf '%s\n' "$1" | awk -F. 'NF != 4 { exit 1 }
        { for (i = 1; i <= 4; i++) if ($i !~ /^[0-9]+$/ || $i > 255) exit 1 }'
}
is_ipv6() { case $1 in *:*) case $1 in *[!0-9A-Fa-f:.]*) return 1 ;; esac ;; *) return 1 ;; esac; }
absolute() { case $1 in *.) printf '%s\n' "$1" ;; *) printf '%s.\n' "$1" ;; esac; }

name='' type=A values='' ttl=60 zone='' server='' port=53 key_file='' timeout=10 apply=0
dry_run=0 # only --dry-run: a DRY_RUN variable inherited from cutover must not fake success
: "${NSUPDATE:=nsupdate}"
: "${DIG:=dig}"

while [ $# -gt 0 ]; do
    case $1 in
        --*=*) opt=${1%%=*} val=${1#*=}; shift; set -- "$opt" "$val" "$@"; continue ;;
    esac
    case $1 in
        --dry-run) dry_run=1; shift; continue ;;
        --apply) apply=1; shift; continue ;;
        -h | --help) usage; exit 0 ;;
        --name | --type | --value | --ttl | --zone | --server | --port | --key-file | --timeout)
            [ $# -ge 2 ] || die 2 "$1 needs a value (try --help)" ;;
        *) die 2 "unknown option '$1' (try --help)" ;;
    esac
    case $1 in
        --name) name=$2 ;;
        --type) type=$(printf '%s' "$2" | tr '[:lower:]' '[:upper:]') ;;
        --value) values="$values $2" ;;
        --ttl) ttl=$2 ;;
        --zone) zone=$2 ;;
        --server) server=$2 ;;
        --port) port=$2 ;;
        --key-file) key_file=$2 ;;
        --timeout) timeout=$2 ;;
    esac
    shift 2
done

# Check what was written, dry run or not.
is_uint "$ttl" || die 2 "--ttl must be a whole number of seconds, got '$ttl'"
is_uint "$port" || die 2 "--port must be a number, got '$port'"
is_uint "$timeout" || die 2 "--timeout must be a whole number, got '$timeout'"
[ -z "$name" ] || is_hostname "${name%.}" || die 2 "--name '$name' is not a DNS name"
[ -z "$zone" ] || is_hostname "${zone%.}" || die 2 "--zone '$zone' is not a DNS name"
[ -z "$server" ] || is_hostname "$server" || is_ipv6 "$server" || die 2 "--server '$server' is not a host name or address"
case $type in A | AAAA | CNAME) ;; *) die 2 "--type must be A, AAAA or CNAME, got '$type'" ;; esac
count=0
for value in $values; do
    count=$((count + 1))
    case $type in
        A) is_ipv4 "$value" || die 2 "--value '$value' is not an IPv4 address (for --type A)" ;;
        AAAA) is_ipv6 "$value" || die 2 "--value '$value' is not an IPv6 address (for --type AAAA)" ;;
        CNAME) is_hostname "${value%.}" || die 2 "--value '$value' is not a host name (for --type CNAME)" ;;
    esac
done
[ "$type" != CNAME ] || [ "$count" -le 1 ] || die 2 "a CNAME takes exactly one --value"

missing=''
[ -n "$name" ] || missing="$missing --name"
[ "$count" -gt 0 ] || missing="$missing --value"
[ -z "$missing" ] || die 2 "missing$missing (try --help)"
if [ "$apply" = 1 ] && [ -z "$key_file" ]; then
    die 2 "--apply needs --key-file (the TSIG key the server accepts updates with)"
fi
fqdn=$(absolute "$name")

case $type in
    A) stale="CNAME A" ;;
    AAAA) stale="CNAME AAAA" ;;
    CNAME) stale="A AAAA CNAME" ;;
esac

# The nsupdate script, one command per line.
build_script() {
    [ -z "$server" ] || say "server $server $port"
    [ -z "$zone" ] || say "zone $(absolute "$zone")"
    for rrtype in $stale; do say "update delete $fqdn $rrtype"; done
    for value in $values; do
        [ "$type" != CNAME ] || value=$(absolute "$value")
        say "update add $fqdn $ttl $type $value"
    done
    say "send"
}

if [ "$apply" != 1 ] || [ "$dry_run" = 1 ]; then
    if [ "$dry_run" = 1 ]; then
        why="--dry-run"
    else
        why="no --apply"
    fi
    log "DRY RUN ($why) for ${CUTOVER_SERVICE:-<no service>}: nothing is sent (exit 4)"
    say "# DRY RUN ($why): nothing was sent"
    say "# would run: $NSUPDATE -k ${key_file:-<the --key-file given with --apply>} -t $timeout with:"
    build_script
    exit 4
fi

[ -r "$key_file" ] || die 3 "cannot read the key file '$key_file'"
command -v "$NSUPDATE" >/dev/null 2>&1 || die 3 "'$NSUPDATE' is not installed (apt install bind9-dnsutils)"

script=$(build_script)
log "sending for ${CUTOVER_SERVICE:-?} (run ${CUTOVER_RUN_ID:-none}):"
printf '%s\n' "$script" | sed 's/^/  /' >&2

send_nsupdate() {
    printf '%s\n' "$script" | "$NSUPDATE" -k "$key_file" -t "$timeout"
}
trap 'log "interrupted: the update may or may not have been applied"; exit 143' TERM INT
status=0
send_nsupdate || status=$?
if [ "$status" -ne 0 ]; then
    say "FAIL: nsupdate exited with $status; the zone is unchanged (an update is all or nothing)"
    exit 1
fi

# Ask the server we updated whether it now answers what we sent.
if [ -z "$server" ] || ! command -v "$DIG" >/dev/null 2>&1; then
    say "ok: update sent for $fqdn ($type ${values# }); not verified (needs --server and dig)"
    exit 0
fi
expected=$(for value in $values; do
    if [ "$type" = CNAME ]; then absolute "$value"; else printf '%s\n' "$value"; fi
done | sort | tr '\n' ' ')
status=0
answer=$("$DIG" +short +time=3 +tries=2 -p "$port" "@$server" "$fqdn" "$type" 2>&1) || status=$?
answer=$(printf '%s\n' "$answer" | sort | tr '\n' ' ')
if [ "$status" -eq 0 ] && [ "$answer" = "$expected" ]; then
    say "ok: $server answers $fqdn $type ${expected% } (TTL $ttl)"
    exit 0
fi
say "FAIL: sent, but $server answers $fqdn $type with '${answer% }', expected '${expected% }'"
exit 1

# --- Alternative: AWS Route 53 instead of nsupdate -----------------------------------
# Replace the body of send_nsupdate with the lines below (needs the aws CLI, credentials
# allowed to change the zone, and ROUTE53_ZONE_ID). UPSERT replaces the record set in one
# change; `wait` returns once every Route 53 server serves it. Route 53 cannot UPSERT a
# record into another type: going from A to CNAME needs a DELETE of the A record and a
# CREATE of the CNAME in the same change batch.
#
#     records=''
#     for value in $values; do records="$records{\"Value\":\"$value\"},"; done
#     batch="{\"Comment\":\"cutover ${CUTOVER_RUN_ID:-manual}\",\"Changes\":[{\"Action\":\"UPSERT\",
#         \"ResourceRecordSet\":{\"Name\":\"$fqdn\",\"Type\":\"$type\",\"TTL\":$ttl,
#         \"ResourceRecords\":[${records%,}]}}]}"
#     change_id=$(aws route53 change-resource-record-sets --hosted-zone-id "$ROUTE53_ZONE_ID" \
#         --change-batch "$batch" --query ChangeInfo.Id --output text) || return 1
#     aws route53 wait resource-record-sets-changed --id "$change_id"
#
# Other providers work the same way: one API call that replaces the record set, then a
# wait until it is served (gcloud dns record-sets update, az network dns record-set a ...).
