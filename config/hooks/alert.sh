#!/bin/sh
# alert.sh: post a one-line summary of a cutover event to a Slack-compatible webhook.
#
# Reads cutover's JSON payload on stdin and posts {"text": "..."} with the message
#   cutover: <service> <event> at step <step>, weight <weight>% — <reason>
# (" — <reason>" is left out when there is no reason). With `jq` installed the fields come
# from the payload (and a non-empty analysis.breaches list is added on a second line);
# without jq, or when the payload is missing or unreadable, from the CUTOVER_* variables.
# The text is escaped for JSON (quotes, backslashes, newlines, control characters) and for
# Slack (&, <, > become &amp; &lt; &gt;). Works with Slack incoming webhooks and the
# services that accept their format (Mattermost, Rocket.Chat, Discord's /slack endpoint).
#
# Usage (as a cutover event hook):
#   alert:
#     on: [rollback, paused, promoted, check_failed]
#     exec: ["hooks/alert.sh", "--url-file", "/etc/cutover/slack-webhook.url"]
#     timeout: 15s
# By hand:  echo '{"service":"api","event":"paused"}' | hooks/alert.sh --dry-run --url https://example.invalid/x
#
# Options (also as --name=value):
#   --url URL          the webhook (overrides --url-file and SLACK_WEBHOOK_URL). It is a
#                      secret: keep it out of config files in version control
#   --url-file FILE    read the webhook from the first line of FILE (overrides
#                      SLACK_WEBHOOK_URL)
#   --timeout SECONDS  for the whole request (default 10)
#   --no-jq            do not use jq even if installed (POSIX tools only)
#   --dry-run          print the message and the body, post nothing, exit 4 (the URL is
#                      still required and checked)
#   -h, --help         this text
#
# Adapting: change build_text for another wording, or the body for a richer format
# (Slack blocks, a Teams card). Keep the escaping: the reason text comes from the rollout
# and may contain anything.
#
# Environment:
#   From cutover: CUTOVER_SERVICE, CUTOVER_EVENT, CUTOVER_STEP, CUTOVER_WEIGHT,
#   CUTOVER_REASON, CUTOVER_RUN_ID (the fallback for the payload's fields); stdin: the JSON
#   payload {service, event, step, weight, state, reason, run_id, timestamp, analysis}.
#   SLACK_WEBHOOK_URL: the webhook, when neither --url nor --url-file is given.
#   DRY_RUN in the environment is ignored: a dry run is asked for with --dry-run only.
#
# Exit codes: 0 posted (2xx) · 1 the webhook failed or refused the message ·
#             2 usage error (no webhook URL, unreadable --url-file) · 3 curl is not
#             installed · 4 dry run: nothing was posted
set -eu

me=${0##*/}
log() { printf '%s: %s\n' "$me" "$*" >&2; }
say() { printf '%s\n' "$*"; } # echo would interpret backslashes in dash
die() { code=$1; shift; log "error: $*"; exit "$code"; }
usage() { sed -n '2,/^set -eu/{/^set -eu/d;s/^# \{0,1\}//;p;}' "$0"; }
is_uint() { case ${1:-} in '' | *[!0-9]*) return 1 ;; esac; }

url=${SLACK_WEBHOOK_URL:-} url_flag='' url_file='' timeout=10 use_jq=1
dry_run=0 # only --dry-run: a DRY_RUN variable inherited from cutover must not fake success

while [ $# -gt 0 ]; do
    case $1 in
        --*=*) opt=${1%%=*} val=${1#*=}; shift; set -- "$opt" "$val" "$@"; continue ;;
    esac
    case $1 in
        --dry-run) dry_run=1; shift; continue ;;
        --no-jq) use_jq=0; shift; continue ;;
        -h | --help) usage; exit 0 ;;
        --url | --url-file | --timeout)
            [ $# -ge 2 ] || die 2 "$1 needs a value (try --help)" ;;
        *) die 2 "unknown option '$1' (try --help)" ;;
    esac
    case $1 in
        --url) url=$2 url_flag=1 ;;
        --url-file) url_file=$2 ;;
        --timeout) timeout=$2 ;;
    esac
    shift 2
done
is_uint "$timeout" || die 2 "--timeout must be a whole number of seconds, got '$timeout'"
command -v jq >/dev/null 2>&1 || use_jq=0

# The payload, unless stdin is a terminal (someone running this by hand).
payload=''
if [ ! -t 0 ]; then payload=$(cat); fi

# field NAME FALLBACK: the payload's value as text, else FALLBACK.
field() {
    value=''
    if [ "$use_jq" = 1 ] && [ -n "$payload" ]; then
        value=$(printf '%s' "$payload" | jq -r --arg k "$1" '.[$k] // empty | tostring' 2>/dev/null) || value=''
    fi
    printf '%s' "${value:-$2}"
}

build_text() {
    service=$(field service "${CUTOVER_SERVICE:-?}")
    event=$(field event "${CUTOVER_EVENT:-?}")
    step=$(field step "${CUTOVER_STEP:-?}")
    weight=$(field weight "${CUTOVER_WEIGHT:-?}")
    reason=$(field reason "${CUTOVER_REASON:-}")
    printf 'cutover: %s %s at step %s, weight %s%%' "$service" "$event" "$step" "$weight"
    if [ -n "$reason" ]; then printf ' — %s' "$reason"; fi
    if [ "$use_jq" = 1 ] && [ -n "$payload" ]; then
        breaches=$(printf '%s' "$payload" | jq -r '
            (.analysis.breaches? // []) | if type == "array" then map(tostring) | join("; ") else tostring end
        ' 2>/dev/null) || breaches=''
        if [ -n "$breaches" ]; then printf '\nbreaches: %s' "$breaches"; fi
    fi
}

# Slack treats &, < and > as markup.
slack_escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g'; }

# stdin -> a JSON string literal, with POSIX awk. Bytes >= 0x80 (UTF-8) pass unchanged,
# which JSON allows; quotes, backslashes and control characters are escaped.
json_string() {
    LC_ALL=C awk '
        BEGIN {
            for (i = 1; i < 32; i++) esc[sprintf("%c", i)] = sprintf("\\u%04x", i)
            esc["\t"] = "\\t"; esc["\r"] = "\\r"; esc["\b"] = "\\b"; esc["\f"] = "\\f"
            esc["\""] = "\\\""; esc["\\"] = "\\\\"
            printf "\""
        }
        {
            if (NR > 1) printf "\\n"
            line = $0
            for (i = 1; i <= length(line); i++) {
                c = substr(line, i, 1)
                printf "%s", ((c in esc) ? esc[c] : c)
            }
        }
        END { printf "\"" }'
}

text=$(build_text | slack_escape)
if [ "$use_jq" = 1 ]; then
    body=$(jq -cn --arg text "$text" '{text: $text}')
else
    body="{\"text\":$(printf '%s' "$text" | json_string)}"
fi

# --url wins over --url-file, which wins over SLACK_WEBHOOK_URL.
if [ -z "$url_flag" ] && [ -n "$url_file" ]; then
    [ -r "$url_file" ] || die 2 "cannot read the webhook URL file '$url_file'"
    url=$(sed -n '1{s/^[[:space:]]*//;s/[[:space:]]*$//;p;}' "$url_file")
fi
[ -n "$url" ] || die 2 "no webhook URL: give --url, --url-file, or set SLACK_WEBHOOK_URL"
case $url in http://* | https://*) ;; *) die 2 "the webhook URL must start with http:// or https://" ;; esac
# Webhook URLs carry their secret in the path: show only scheme and host.
shown_url=$(printf '%s' "$url" | sed 's#^\([A-Za-z]*://[^/]*\)/..*#\1/...#')

if [ "$dry_run" = 1 ]; then
    log "DRY RUN: nothing is posted (exit 4)"
    say "DRY RUN: nothing was posted"
    say "message: $text"
    say "would POST to $shown_url: $body"
    exit 4
fi

command -v curl >/dev/null 2>&1 || die 3 "curl is not installed"

tmp=$(mktemp "${TMPDIR:-/tmp}/alert.XXXXXX")
response=$(mktemp "${TMPDIR:-/tmp}/alert.XXXXXX")
trap 'rm -f "$tmp" "$response"' EXIT
trap 'exit 143' TERM INT
printf '%s' "$body" >"$tmp"

# The URL goes to curl on stdin as a config line, so that `ps` does not show the secret.
escaped_url=$(printf '%s' "$url" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
code=$(printf 'url = "%s"\n' "$escaped_url" | curl -sS -K - -o "$response" -w '%{http_code}' \
    --max-time "$timeout" -H 'Content-Type: application/json' --data-binary "@$tmp") || :
case $code in
    2??)
        say "ok: posted to $shown_url ($code): $text"
        ;;
    '' | 000)
        die 1 "could not reach $shown_url within ${timeout}s"
        ;;
    *)
        die 1 "$shown_url answered $code: $(dd bs=300 count=1 <"$response" 2>/dev/null)"
        ;;
esac
