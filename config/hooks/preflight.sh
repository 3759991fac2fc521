#!/bin/sh
# preflight.sh: is the NEW pool ready to take traffic at all?
#
# Checks, in order, and reports every result before exiting:
#   1. health: every URL given with --old / --new answers 2xx. A URL without a path gets
#      --health-path appended (http://10.0.1.7:8080 -> http://10.0.1.7:8080/healthz).
#   2. capacity: every NEW server has at least the CPU count and memory of the biggest
#      OLD server. Numbers come from flags (--old-cpus, --new-mem-mb, ...) or are gathered
#      over ssh from --old-host / --new-host (`nproc`, MemTotal in /proc/meminfo).
#      A flag wins over ssh for the same side. Memory may be --mem-slack-pct below OLD's,
#      because identical machines report slightly different MemTotal across kernels.
#   3. disk: `df -Pk --disk-path` shows at least --min-free-mb free (locally, or on
#      --disk-host over ssh).
# A check runs only when its inputs are given; with no input at all it is a usage error.
#
# Usage (as a cutover `gate` hook; cwd is the config file's directory):
#   exec: ["hooks/preflight.sh",
#          "--old", "http://10.0.0.5:8080", "--new", "http://10.0.1.7:8080",
#          "--old-host", "old-1.internal", "--new-host", "new-1.internal",
#          "--disk-host", "new-1.internal", "--disk-path", "/var/lib/app", "--min-free-mb", "20480"]
#
# Options (also as --name=value):
#   --old URL / --new URL   health URL of one server of that pool; repeatable
#   --health-path PATH      appended to URLs that have no path (default /healthz, env HEALTH_PATH)
#   --host-header NAME      send `Host: NAME` (backends addressed by IP behind a vhost)
#   --insecure              do not verify TLS certificates of https:// health URLs
#   --timeout SECONDS       per health request (default 5)
#   --old-host HOST / --new-host HOST   gather CPU and memory over ssh; repeatable
#   --old-cpus N / --new-cpus N         CPU counts, instead of ssh
#   --old-mem-mb N / --new-mem-mb N     memory in MiB, instead of ssh
#   --mem-slack-pct N       NEW may have this much less memory than OLD (default 2)
#   --disk-path PATH        file system to check for free space
#   --min-free-mb N         free space needed on --disk-path (default 1024)
#   --disk-host HOST        run df on HOST over ssh instead of locally
#   --dry-run               print what would be checked and exit 4
#   -h, --help              this text
#
# Adapting: add your own checks as functions next to check_disk (open file limits, kernel
# version, a TCP port on the database) and count them in `failed` the same way.
#
# Environment:
#   From cutover: CUTOVER_SERVICE, CUTOVER_EVENT, CUTOVER_STEP, CUTOVER_WEIGHT,
#   CUTOVER_REASON, CUTOVER_RUN_ID (only logged); the JSON payload on stdin is not read.
#   SSH (default ssh) and SSH_OPTS (default "-o BatchMode=yes -o ConnectTimeout=5"):
#   how to reach --*-host servers; BatchMode means a key must work without a prompt.
#   DRY_RUN is ignored: only --dry-run asks for a dry run.
#
# Exit codes: 0 every check passed · 1 a check failed · 2 usage error · 3 a check could
#             not be performed (ssh failed, curl or df missing) · 4 dry run: nothing
#             was checked
set -eu
set -f # lists of URLs and hosts are split on spaces, never globbed

me=${0##*/}
log() { printf '%s: %s\n' "$me" "$*" >&2; }
say() { printf '%s\n' "$*"; } # echo would interpret backslashes in dash
die() { code=$1; shift; log "error: $*"; exit "$code"; }
usage() { sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"; }
is_uint() { case ${1:-} in '' | *[!0-9]*) return 1 ;; esac; }

old_urls='' new_urls='' old_hosts='' new_hosts=''
old_cpus='' new_cpus='' old_mem_mb='' new_mem_mb=''
health_path=${HEALTH_PATH:-/healthz}
host_header='' insecure=0 timeout=5 mem_slack_pct=2
disk_path='' min_free_mb=1024 disk_host=''
dry_run=0 # only --dry-run: a DRY_RUN variable inherited from cutover must not fake success
: "${SSH:=ssh}"
: "${SSH_OPTS:=-o BatchMode=yes -o ConnectTimeout=5}"

while [ $# -gt 0 ]; do
    case $1 in
        --*=*) opt=${1%%=*} val=${1#*=}; shift; set -- "$opt" "$val" "$@"; continue ;;
    esac
    case $1 in
        --dry-run) dry_run=1; shift; continue ;;
        --insecure) insecure=1; shift; continue ;;
        -h | --help) usage; exit 0 ;;
        --old | --new | --health-path | --host-header | --timeout | --old-host | --new-host | \
            --old-cpus | --new-cpus | --old-mem-mb | --new-mem-mb | --mem-slack-pct | \
            --disk-path | --min-free-mb | --disk-host)
            [ $# -ge 2 ] || die 2 "$1 needs a value (try --help)" ;;
        *) die 2 "unknown option '$1' (try --help)" ;;
    esac
    case $1 in
        --old) old_urls="$old_urls $2" ;;
        --new) new_urls="$new_urls $2" ;;
        --health-path) health_path=$2 ;;
        --host-header) host_header=$2 ;;
        --timeout) timeout=$2 ;;
        --old-host) old_hosts="$old_hosts $2" ;;
        --new-host) new_hosts="$new_hosts $2" ;;
        --old-cpus) old_cpus=$2 ;;
        --new-cpus) new_cpus=$2 ;;
        --old-mem-mb) old_mem_mb=$2 ;;
        --new-mem-mb) new_mem_mb=$2 ;;
        --mem-slack-pct) mem_slack_pct=$2 ;;
        --disk-path) disk_path=$2 ;;
        --min-free-mb) min_free_mb=$2 ;;
        --disk-host) disk_host=$2 ;;
    esac
    shift 2
done

for pair in "--timeout:$timeout" "--mem-slack-pct:$mem_slack_pct" "--min-free-mb:$min_free_mb" \
    "--old-cpus:${old_cpus:-0}" "--new-cpus:${new_cpus:-0}" \
    "--old-mem-mb:${old_mem_mb:-0}" "--new-mem-mb:${new_mem_mb:-0}"; do
    is_uint "${pair#*:}" || die 2 "${pair%%:*} must be a whole number, got '${pair#*:}'"
done
[ "$mem_slack_pct" -le 50 ] || die 2 "--mem-slack-pct is at most 50"
case $health_path in /*) ;; *) die 2 "--health-path must start with /, got '$health_path'" ;; esac
case $disk_path in *"'"*) die 2 "--disk-path must not contain a single quote" ;; esac

check_health=0 check_capacity=0 check_disk=0
[ -n "$old_urls$new_urls" ] && check_health=1
[ -n "$old_hosts$new_hosts$old_cpus$new_cpus$old_mem_mb$new_mem_mb" ] && check_capacity=1
[ -n "$disk_path" ] && check_disk=1
if [ "$check_health$check_capacity$check_disk" = 000 ]; then
    die 2 "nothing to check: give --old/--new URLs, --old-host/--new-host (or --*-cpus/--*-mem-mb), or --disk-path"
fi

# "http://h:8080" -> "http://h:8080/healthz"; a URL with a path is used as written.
health_url() {
    rest=${1#*://}
    case $rest in */*) printf '%s\n' "$1" ;; *) printf '%s%s\n' "$1" "$health_path" ;; esac
}

if [ "$dry_run" = 1 ]; then
    log "DRY RUN for ${CUTOVER_SERVICE:-<no service>} (run ${CUTOVER_RUN_ID:-none}): nothing is contacted (exit 4)"
    say "DRY RUN: nothing was checked"
    for url in $old_urls; do say "would check: OLD $(health_url "$url") answers 2xx within ${timeout}s"; done
    for url in $new_urls; do say "would check: NEW $(health_url "$url") answers 2xx within ${timeout}s"; done
    if [ -n "$old_cpus$old_mem_mb" ]; then
        say "would use OLD from flags: cpus=${old_cpus:-?} mem=${old_mem_mb:-?}MiB"
    else
        for host in $old_hosts; do say "would gather: OLD $host: $SSH $SSH_OPTS $host nproc + MemTotal"; done
    fi
    if [ -n "$new_cpus$new_mem_mb" ]; then
        say "would use NEW from flags: cpus=${new_cpus:-?} mem=${new_mem_mb:-?}MiB"
    else
        for host in $new_hosts; do say "would gather: NEW $host: $SSH $SSH_OPTS $host nproc + MemTotal"; done
    fi
    [ "$check_capacity" = 1 ] && say "would check: every NEW server has >= the CPUs of the biggest OLD one and >= its memory minus ${mem_slack_pct}%"
    if [ "$check_disk" = 1 ]; then
        say "would check: df -Pk $disk_path on ${disk_host:-this host} shows >= ${min_free_mb} MiB free"
    fi
    exit 4
fi

failed=0 unchecked=0
fail() { say "FAIL: $*"; failed=$((failed + 1)); }
cannot() { say "CANNOT CHECK: $*"; unchecked=$((unchecked + 1)); }
ok() { say "ok: $*"; }

tmp=$(mktemp "${TMPDIR:-/tmp}/preflight.XXXXXX")
trap 'rm -f "$tmp"' EXIT
trap 'exit 143' TERM INT

probe() { # pool url
    pool=$1
    url=$(health_url "$2")
    set -- -sS -o /dev/null -w '%{http_code}' --max-time "$timeout"
    if [ "$insecure" = 1 ]; then set -- "$@" --insecure; fi
    if [ -n "$host_header" ]; then set -- "$@" -H "Host: $host_header"; fi
    code=$(curl "$@" "$url" 2>"$tmp") || :
    case $code in
        2??) ok "$pool $url answered $code" ;;
        '' | 000) fail "$pool $url did not answer: $(tr '\n' ' ' <"$tmp")" ;;
        *) fail "$pool $url answered $code, expected 2xx" ;;
    esac
}

if [ "$check_health" = 1 ]; then
    if command -v curl >/dev/null 2>&1; then
        for url in $old_urls; do probe OLD "$url"; done
        for url in $new_urls; do probe NEW "$url"; done
    else
        cannot "curl is not installed; the health checks need it"
    fi
fi

# One line per server: "<pool> <name> <cpus|-> <mem_kb|->".
specs=''
gather() { # pool host
    # SSH_OPTS is a list of options on purpose.
    # shellcheck disable=SC2086
    if out=$($SSH $SSH_OPTS "$2" 'nproc && grep "^MemTotal:" /proc/meminfo' 2>"$tmp" </dev/null); then
        cpus=$(printf '%s\n' "$out" | sed -n '1p')
        mem_kb=$(printf '%s\n' "$out" | awk '/^MemTotal:/ { print $2 }')
        if is_uint "$cpus" && is_uint "$mem_kb"; then
            specs="$specs
$1 $2 $cpus $mem_kb"
            return 0
        fi
        cannot "$1 $2: unexpected answer to nproc/meminfo: $(printf '%s' "$out" | tr '\n' ' ')"
    else
        cannot "$1 $2: ssh failed: $(tr '\n' ' ' <"$tmp")"
    fi
}

mem_kb_of() { if [ -n "$1" ]; then echo $(($1 * 1024)); else echo -; fi; }

if [ "$check_capacity" = 1 ]; then
    if [ -n "$old_cpus$old_mem_mb" ]; then
        specs="$specs
OLD (flags) ${old_cpus:--} $(mem_kb_of "$old_mem_mb")"
    else
        for host in $old_hosts; do gather OLD "$host"; done
    fi
    if [ -n "$new_cpus$new_mem_mb" ]; then
        specs="$specs
NEW (flags) ${new_cpus:--} $(mem_kb_of "$new_mem_mb")"
    else
        for host in $new_hosts; do gather NEW "$host"; done
    fi
    # Compare every NEW server against the biggest OLD one, field by field.
    if result=$(printf '%s\n' "$specs" | awk -v slack="$mem_slack_pct" '
        NF != 4 { next }
        $1 == "OLD" {
            if ($3 != "-" && $3 + 0 > cpus) { cpus = $3 + 0; cpus_from = $2 }
            if ($4 != "-" && $4 + 0 > mem) { mem = $4 + 0; mem_from = $2 }
            next
        }
        { new[++n] = $0 }
        END {
            bad = 0
            if (n == 0) { print "CANNOT CHECK: no NEW server to compare"; exit 3 }
            if (cpus == 0 && mem == 0) { print "CANNOT CHECK: no OLD server to compare with"; exit 3 }
            for (i = 1; i <= n; i++) {
                split(new[i], f, " ")
                if (f[3] != "-" && cpus > 0) {
                    if (f[3] + 0 < cpus) { printf "FAIL: NEW %s has %d CPUs, OLD %s has %d\n", f[2], f[3], cpus_from, cpus; bad = 1 }
                    else printf "ok: NEW %s has %d CPUs (OLD max %d)\n", f[2], f[3], cpus
                }
                if (f[4] != "-" && mem > 0) {
                    need = mem * (100 - slack) / 100
                    if (f[4] + 0 < need) { printf "FAIL: NEW %s has %d MiB of memory, OLD %s has %d MiB (%d%% slack allowed)\n", f[2], f[4] / 1024, mem_from, mem / 1024, slack; bad = 1 }
                    else printf "ok: NEW %s has %d MiB of memory (OLD max %d MiB)\n", f[2], f[4] / 1024, mem / 1024
                }
            }
            exit bad
        }'); then
        printf '%s\n' "$result"
    else
        status=$?
        printf '%s\n' "$result"
        bad=$(printf '%s\n' "$result" | grep -c '^FAIL:' || :)
        if [ "$status" = 3 ]; then unchecked=$((unchecked + 1)); else failed=$((failed + ${bad:-1})); fi
    fi
fi

if [ "$check_disk" = 1 ]; then
    if [ -n "$disk_host" ]; then
        # shellcheck disable=SC2086
        set -- $SSH $SSH_OPTS "$disk_host" "df -Pk '$disk_path'"
    else
        set -- df -Pk "$disk_path"
    fi
    if out=$("$@" 2>"$tmp" </dev/null); then
        avail_kb=$(printf '%s\n' "$out" | awk 'NR > 1 { avail = $4 } END { print avail }')
        where="$disk_path on ${disk_host:-$(uname -n)}"
        if ! is_uint "$avail_kb"; then
            cannot "df gave no free space for $where: $(printf '%s' "$out" | tr '\n' ' ')"
        elif [ $((avail_kb / 1024)) -ge "$min_free_mb" ]; then
            ok "$where has $((avail_kb / 1024)) MiB free (need $min_free_mb)"
        else
            fail "$where has $((avail_kb / 1024)) MiB free, need $min_free_mb"
        fi
    else
        cannot "df -Pk $disk_path on ${disk_host:-this host} failed: $(tr '\n' ' ' <"$tmp")"
    fi
fi

if [ "$failed" -gt 0 ]; then
    log "$failed check(s) failed${CUTOVER_SERVICE:+ for $CUTOVER_SERVICE}"
    exit 1
fi
if [ "$unchecked" -gt 0 ]; then
    log "$unchecked check(s) could not be performed"
    exit 3
fi
log "all checks passed"
