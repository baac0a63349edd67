#!/usr/bin/env bash
# AAMI dynamic checks: run the checks the config server assigns to this node and leave
# their results where Node Exporter's textfile collector reads them
# (/var/lib/node_exporter/textfile/check_<name>.prom). Runs every minute from cron.
#
# - fetches the node's checks with its node credential (from bootstrap.sh's state file);
#   when the server is unreachable it runs the last list it fetched;
# - runs a check's script only if its sha256 matches the list: a changed copy on disk is
#   fetched again, and refused when the server cannot confirm it;
# - gives each check its timeout, keeps only its stdout, writes the .prom file atomically,
#   and reports aami_check_success 0 when it fails or times out;
# - deletes the .prom files of checks that no longer apply;
# - never runs twice at once (lock), logs to syslog with the tag "aami", and sends the
#   node's heartbeat.
#
# Every path lives under $AAMI_ROOT (default /).
set -uo pipefail

ROOT=${AAMI_ROOT:-}
ROOT=${ROOT%/}
STATE_FILE="$ROOT/etc/aami/node.json"
TEXTFILE_DIR="$ROOT/var/lib/node_exporter/textfile"
CACHE_DIR="$ROOT/var/lib/aami/checks"
LOCK_FILE="$ROOT/var/lib/aami/dynamic-check.lock"

log() {
    printf '[aami] %s\n' "$*" >&2
    if command -v logger >/dev/null; then logger -t aami -- "$*" 2>/dev/null || true; fi
}

case "${1:-}" in
    -h | --help)
        sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac

if command -v jq >/dev/null; then
    JSON=jq
elif command -v python3 >/dev/null; then
    JSON=python3
else
    log "dynamic-check: jq or python3 is required"
    exit 1
fi

json_get() { # FILE KEY
    if [ "$JSON" = jq ]; then
        jq -r --arg key "$2" '.[$key] // empty | tostring' "$1"
    else
        python3 -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"
    fi
}

# One line per check: name, sha256, interval and timeout in seconds, then its arguments, tab-separated.
checks_table() {
    if [ "$JSON" = jq ]; then
        jq -r '.checks[] | [.name, .sha256, .interval_seconds, .timeout_seconds] + .args | @tsv' "$1"
    else
        python3 -c '
import json, sys
for c in json.load(open(sys.argv[1]))["checks"]:
    print("\t".join([c["name"], c["sha256"], str(c["interval_seconds"]), str(c["timeout_seconds"])] + c["args"]))' "$1"
    fi
}

mkdir -p "$CACHE_DIR" "$TEXTFILE_DIR"
exec 9>"$LOCK_FILE"
if command -v flock >/dev/null && ! flock -n 9; then
    log "dynamic-check: the previous run is still going; skipping this one"
    exit 0
fi

[ -r "$STATE_FILE" ] || {
    log "dynamic-check: $STATE_FILE is missing; run bootstrap.sh first"
    exit 1
}
SERVER=$(json_get "$STATE_FILE" server)
HEADER="$CACHE_DIR/.auth"
(umask 077 && printf 'Authorization: Bearer %s\n' "$(json_get "$STATE_FILE" node_credential)" >"$HEADER")
trap 'rm -f "$HEADER" "$CACHE_DIR"/.*.tmp' EXIT

ONLINE=true
if curl -fsS --max-time 10 -H "@$HEADER" "$SERVER/api/v1/checks/node" -o "$CACHE_DIR/.checks.json.tmp"; then
    mv "$CACHE_DIR/.checks.json.tmp" "$CACHE_DIR/checks.json"
    curl -fsS --max-time 10 -X POST -H "@$HEADER" "$SERVER/api/v1/nodes/heartbeat" -o /dev/null || log "dynamic-check: heartbeat failed"
else
    ONLINE=false
    log "dynamic-check: cannot fetch checks from $SERVER; running the last list fetched"
fi
[ -r "$CACHE_DIR/checks.json" ] || {
    log "dynamic-check: no list of checks yet"
    exit 1
}

# write_prom NAME: move the staged result into place in one rename (the collector reads *.prom only).
write_prom() {
    mv "$TEXTFILE_DIR/.check_$1.prom.tmp" "$TEXTFILE_DIR/check_$1.prom"
}

script_ok() { # NAME SHA256: the cached script exists and has the expected hash
    [ -f "$CACHE_DIR/$1.sh" ] && [ "$(sha256sum "$CACHE_DIR/$1.sh" | cut -d' ' -f1)" = "$2" ]
}

run_check() { # NAME SHA256 INTERVAL TIMEOUT ARGS...
    local name=$1 sha=$2 interval=$3 timeout=$4
    shift 4
    local now last=0 started status out="$TEXTFILE_DIR/.check_$name.prom.tmp"
    now=$(date +%s)
    [ -r "$CACHE_DIR/$name.last" ] && last=$(cat "$CACHE_DIR/$name.last")
    if [ $((now - last)) -lt "$interval" ] && [ -f "$TEXTFILE_DIR/check_$name.prom" ]; then
        return 0 # not due yet: its last result stands
    fi
    if ! script_ok "$name" "$sha" && $ONLINE; then
        curl -fsS --max-time 10 -H "@$HEADER" "$SERVER/api/v1/checks/node/$name/script" -o "$CACHE_DIR/.$name.sh.tmp" &&
            mv "$CACHE_DIR/.$name.sh.tmp" "$CACHE_DIR/$name.sh"
    fi
    if ! script_ok "$name" "$sha"; then
        log "dynamic-check: refusing to run check $name: its script does not match sha256 $sha"
        printf '# Check %s was not run: script hash mismatch.\naami_check_success{check="%s"} 0\naami_check_refused{check="%s"} 1\naami_check_last_run_timestamp_seconds{check="%s"} %s\n' \
            "$name" "$name" "$name" "$name" "$now" >"$out"
        write_prom "$name"
        return 1
    fi
    started=$(date +%s.%N)
    timeout --kill-after=5 "$timeout" bash "$CACHE_DIR/$name.sh" "$@" >"$out" 2>"$CACHE_DIR/$name.stderr"
    status=$?
    local duration timed_out=0
    duration=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
    echo "$now" >"$CACHE_DIR/$name.last"
    if [ "$status" -ne 0 ]; then
        # A failed check's own output is not trusted: only the failure is reported.
        if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then timed_out=1; fi
        log "dynamic-check: check $name failed (exit $status$([ $timed_out = 1 ] && echo ", timed out after ${timeout}s")): $(head -c 200 "$CACHE_DIR/$name.stderr" | tr '\n' ' ')"
        printf '# Check %s failed.\n' "$name" >"$out"
    fi
    printf 'aami_check_success{check="%s"} %d\naami_check_exit_code{check="%s"} %d\naami_check_timed_out{check="%s"} %d\naami_check_duration_seconds{check="%s"} %s\naami_check_last_run_timestamp_seconds{check="%s"} %s\n' \
        "$name" "$((status == 0))" "$name" "$status" "$name" "$timed_out" "$name" "$duration" "$name" "$now" >>"$out"
    write_prom "$name"
    return "$status"
}

failures=0
declare -A assigned=()
while IFS=$'\t' read -r -a fields; do
    [ "${#fields[@]}" -ge 4 ] || continue
    assigned[${fields[0]}]=1
    run_check "${fields[@]}" || failures=$((failures + 1))
done < <(checks_table "$CACHE_DIR/checks.json")

# Checks that no longer apply: their results and scripts go.
for file in "$TEXTFILE_DIR"/check_*.prom; do
    [ -e "$file" ] || continue
    name=${file##*/check_}
    name=${name%.prom}
    if [ -z "${assigned[$name]:-}" ]; then
        rm -f "$file" "$CACHE_DIR/$name.sh" "$CACHE_DIR/$name.last" "$CACHE_DIR/$name.stderr"
        log "dynamic-check: removed the results of check $name, which no longer applies"
    fi
done

[ "$failures" -eq 0 ] || log "dynamic-check: $failures check(s) failed"
exit 0
