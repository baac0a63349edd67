#!/usr/bin/env bash
# AAMI dynamic checks: run the checks the config server assigns to this node and leave
# their results where Node Exporter's textfile collector reads them
# (/var/lib/node_exporter/textfile/check_<name>.prom). Runs every minute from cron.
#
# - prints one line per check on stdout: "NAME: ran", "NAME: not due", "NAME: failed: WHY"
#   or "NAME: refused: WHY" (cron sends stdout to /dev/null; run it by hand to see them);
# - fetches the node's checks with its node credential (from bootstrap.sh's state file);
#   when the server is unreachable it runs the last list it fetched;
# - runs a check's script only if its sha256 matches the list: a changed copy on disk is
#   fetched again, and refused when the server cannot confirm it;
# - gives each check its timeout and its arguments as argv (data, never evaluated), keeps
#   only its stdout, writes the .prom file atomically, and reports aami_check_success 0
#   when it fails or times out;
# - deletes the .prom files of checks that no longer apply;
# - never runs twice at once (lock), logs to syslog with the tag "aami", and sends the
#   node's heartbeat.
#
# Every path lives under $AAMI_ROOT (default /).
set -uo pipefail
# A trace (bash -x, a likely first step when checks misbehave) would print the node credential.
case $- in *x*) set +x ;; esac
# The results are read by the node exporter, which runs as its own user: readable files,
# whatever umask the caller had (cloud-init scripts run under 077).
umask 022
# cron's PATH is /usr/bin:/bin: tools the checks need live in sbin too (nvme-cli's
# /usr/sbin/nvme, smartctl, dmidecode), and in /usr/local and the GPU stacks' own
# directories (nvidia-smi in /usr/local/nvidia/bin in NVIDIA's images, rocm-smi in
# /opt/rocm/bin; under the node's root, as bootstrap.sh looks for them). Appended, so what
# the caller put first stays first.
ROOT=${AAMI_ROOT:-}
ROOT=${ROOT%/}
export PATH="${PATH:-/usr/bin:/bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:$ROOT/usr/local/nvidia/bin:$ROOT/usr/local/cuda/bin:$ROOT/opt/rocm/bin"
STATE_FILE="$ROOT/etc/aami/node.json"
TEXTFILE_DIR="$ROOT/var/lib/node_exporter/textfile"
CACHE_DIR="$ROOT/var/lib/aami/checks"
LOCK_FILE="$ROOT/var/lib/aami/dynamic-check.lock"

log() {
    printf '[aami] %s\n' "$*" >&2
    if command -v logger >/dev/null; then logger -t aami -- "$*" 2>/dev/null || true; fi
}
# say NAME OUTCOME: the one line per check a person running this by hand reads.
say() { printf '%s: %s\n' "$1" "$2"; }

case "${1:-}" in
    -h | --help)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
esac

if [ -n "${AAMI_JSON_TOOL:-}" ]; then
    JSON=$AAMI_JSON_TOOL # jq or python3, to choose one where both exist
elif command -v jq >/dev/null; then
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

# check_records FILE: per check, NUL-terminated fields: name, sha256, interval and timeout
# in seconds, a problem ("" when none), the number of arguments, then the arguments. NUL is
# the one byte an argument cannot hold, so a label value with newlines, tabs or quotes
# arrives as exactly one argv entry; one holding a NUL byte is reported, not split.
list_of_checks() { # FILE: a JSON document whose "checks" is a list (an empty answer is not one)
    if [ "$JSON" = jq ]; then
        jq -n -e 'input | .checks | type == "array"' "$1" >/dev/null 2>&1 # -n and input: an empty file is an error, not no output
    else
        python3 -c 'import json, sys; sys.exit(0 if isinstance(json.load(open(sys.argv[1])).get("checks"), list) else 1)' "$1" 2>/dev/null
    fi
}

check_records() {
    if [ "$JSON" = jq ]; then
        jq -j 'def bad: type != "string" or (explode | any(. == 0));
            .checks[]
            | [.name, .sha256, (.interval_seconds | tostring), (.timeout_seconds | tostring)] as $head
            | (.args // []) as $args
            | if ($head | any(bad)) then ["", "", "", "", "malformed entry", "0"]
              elif ($args | type != "array") or ($args | any(bad)) then $head + ["an argument is not text or holds a NUL byte", "0"]
              else $head + ["", ($args | length | tostring)] + $args end
            | map(. + "\u0000") | add' "$1"
    else
        python3 -c '
import json, sys
def bad(v):
    return not isinstance(v, str) or "\0" in v
out = sys.stdout.buffer
for c in json.load(open(sys.argv[1]))["checks"]:
    head = [c.get("name"), c.get("sha256"), str(c.get("interval_seconds")), str(c.get("timeout_seconds"))]
    args = c.get("args") or []
    if any(bad(v) for v in head):
        record = ["", "", "", "", "malformed entry", "0"]
    elif not isinstance(args, list) or any(bad(a) for a in args):
        record = head + ["an argument is not text or holds a NUL byte", "0"]
    else:
        record = head + ["", str(len(args))] + args
    out.write(b"".join(v.encode("utf-8", "surrogateescape") + b"\0" for v in record))' "$1"
    fi
}

[ -r "$STATE_FILE" ] || {
    log "dynamic-check: $STATE_FILE is missing; run bootstrap.sh first"
    exit 1
}
SERVER=$(json_get "$STATE_FILE" server)
CREDENTIAL=$(json_get "$STATE_FILE" node_credential)
# The header on curl's stdin (printf is a builtin): the credential in no command line and no file.
authorized() { printf 'Authorization: Bearer %s\n' "$CREDENTIAL" | curl -H @- "$@"; }

# The heartbeat first, on every run, whatever comes after: a check that holds the lock for
# half an hour (a long GPU diagnostic), a textfile directory this script refuses to write, a
# list of checks it cannot fetch. Tied to them, it stopped, and the node was listed stale
# (an ephemeral one removed past its TTL) while it ran.
authorized -fsS --max-time 10 -X POST "$SERVER/api/v1/nodes/heartbeat" -o /dev/null || log "dynamic-check: heartbeat failed"

mkdir -p "$CACHE_DIR" "$TEXTFILE_DIR"
# Results and scripts are staged in these directories by this user (root): one that others can
# write would let them plant a link at a staging name, and the write would follow it (any
# file overwritten as root).
others_write() { # DIR: owned by another user, or writable by group or others
    local owner mode
    owner=$(stat -c %u "$1") && mode=$(stat -c %a "$1") || return 0
    [ "$owner" != "$(id -u)" ] || [ $((8#$mode & 8#022)) -ne 0 ]
}
for dir in "$TEXTFILE_DIR" "$CACHE_DIR"; do
    if others_write "$dir"; then
        log "dynamic-check: $dir can be written by others than $(id -un): nothing is written there (a link planted in it would be followed); chown it to $(id -un) and chmod go-w it"
        exit 1
    fi
done
exec 9>"$LOCK_FILE"
if command -v flock >/dev/null && ! flock -n 9; then
    log "dynamic-check: the previous run is still going; skipping this one"
    exit 0
fi

trap 'rm -f "$CACHE_DIR"/.*.tmp' EXIT

ONLINE=true
if authorized -fsS --max-time 10 "$SERVER/api/v1/checks/node" -o "$CACHE_DIR/.checks.json.tmp"; then
    # Only a list of checks replaces the last one: a proxy's error page answered 200 would
    # otherwise leave no list, and every check's result would be removed below.
    if list_of_checks "$CACHE_DIR/.checks.json.tmp"; then
        mv "$CACHE_DIR/.checks.json.tmp" "$CACHE_DIR/checks.json"
    else
        ONLINE=false
        log "dynamic-check: $SERVER answered something that is not a list of checks; running the last list fetched"
    fi
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
    : >"$CACHE_DIR/$1.ours"
    mv "$TEXTFILE_DIR/.check_$1.prom.tmp" "$TEXTFILE_DIR/check_$1.prom"
}

# ours NAME: check_NAME.prom is a result this script wrote (a marker in its cache; from before
# markers, the check's script or last run there), not another tool's in a shared directory.
ours() { [ -e "$CACHE_DIR/$1.ours" ] || [ -e "$CACHE_DIR/$1.sh" ] || [ -e "$CACHE_DIR/$1.last" ]; }

# refuse NAME WHY: the check is not run; its result says so.
refuse() {
    local now
    now=$(date +%s)
    log "dynamic-check: refusing to run check $1: $2"
    printf '# Check %s was not run: %s.\naami_check_success{check="%s"} 0\naami_check_refused{check="%s"} 1\naami_check_last_run_timestamp_seconds{check="%s"} %s\n' \
        "$1" "$2" "$1" "$1" "$1" "$now" >"$TEXTFILE_DIR/.check_$1.prom.tmp"
    write_prom "$1"
    say "$1" "refused: $2"
}

script_ok() { # NAME SHA256: the cached script exists and has the expected hash
    [ -f "$CACHE_DIR/$1.sh" ] && [ "$(sha256sum "$CACHE_DIR/$1.sh" | cut -d' ' -f1)" = "$2" ]
}

# The first line of a failed check's stderr, printable characters only and short: it is
# shown on a terminal and in syslog, and it may echo hostile arguments back.
failure_reason() {
    local line
    IFS= read -r line <"$1" || true
    line=$(LC_ALL=C tr -cd '[:print:]' <<<"$line")
    printf '%s' "${line:0:200}"
}

run_check() { # NAME SHA256 INTERVAL TIMEOUT ARGS...
    local name=$1 sha=$2 interval=$3 timeout=$4
    shift 4
    local now last=0 started status out="$TEXTFILE_DIR/.check_$name.prom.tmp"
    now=$(date +%s)
    [ -r "$CACHE_DIR/$name.last" ] && last=$(cat "$CACHE_DIR/$name.last")
    [[ "$last" =~ ^[0-9]{1,12}$ ]] || last=0
    # A last run "in the future" (a clock set back since) is due now, not once the clock is there again.
    if [ "$last" -le "$now" ] && [ $((now - last)) -lt "$interval" ] && [ -f "$TEXTFILE_DIR/check_$name.prom" ]; then
        say "$name" "not due (runs every ${interval}s)"
        return 0 # its last result stands
    fi
    if ! script_ok "$name" "$sha" && $ONLINE; then
        authorized -fsS --max-time 10 "$SERVER/api/v1/checks/node/$name/script" -o "$CACHE_DIR/.$name.sh.tmp" &&
            mv "$CACHE_DIR/.$name.sh.tmp" "$CACHE_DIR/$name.sh"
    fi
    if ! script_ok "$name" "$sha"; then
        refuse "$name" "hash mismatch (the script does not match sha256 $sha)"
        return 1
    fi
    started=$(date +%s.%N)
    # Not holding the lock (fd 9): a helper the check leaves running would stop every later run.
    # Nothing on stdin: the list being read is there, and a check that reads (cat, ssh) would take the rest of it.
    timeout --kill-after=5 "$timeout" bash "$CACHE_DIR/$name.sh" "$@" </dev/null 9>&- >"$out" 2>"$CACHE_DIR/$name.stderr"
    status=$?
    local duration timed_out=0 why
    duration=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
    echo "$now" >"$CACHE_DIR/$name.last"
    if [ "$status" -ne 0 ]; then
        # A failed check's own output is not trusted: only the failure is reported.
        if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
            timed_out=1
            why="timed out after ${timeout}s"
        else
            why="exit $status: $(failure_reason "$CACHE_DIR/$name.stderr")"
        fi
        log "dynamic-check: check $name failed: $why"
        printf '# Check %s failed.\n' "$name" >"$out"
        say "$name" "failed: $why"
    else
        say "$name" "ran"
        # Output without a final newline would join its last line to ours below, and the
        # node exporter refuses the whole file: the check's own success would be lost with it.
        if [ -s "$out" ] && [ -n "$(tail -c 1 "$out")" ]; then echo >>"$out"; fi
    fi
    printf 'aami_check_success{check="%s"} %d\naami_check_exit_code{check="%s"} %d\naami_check_timed_out{check="%s"} %d\naami_check_duration_seconds{check="%s"} %s\naami_check_last_run_timestamp_seconds{check="%s"} %s\n' \
        "$name" "$((status == 0))" "$name" "$status" "$name" "$timed_out" "$name" "$duration" "$name" "$now" >>"$out"
    write_prom "$name"
    return "$status"
}

field() { IFS= read -r -d '' "$1"; }
name='' sha='' interval='' timeout='' problem='' argc='' arg=''

failures=0
declare -A assigned=()
# The whole list is read before any check runs: one that cannot be read leaves every result as it is (whole=false).
whole=true
check_records "$CACHE_DIR/checks.json" >"$CACHE_DIR/.records.tmp" || whole=false
while field name && field sha && field interval && field timeout && field problem && field argc; do
    if [[ ! "$argc" =~ ^[0-9]{1,5}$ ]]; then
        whole=false
        break # the stream is not ours: stop reading it
    fi
    args=()
    for ((i = 0; i < argc; i++)); do
        field arg || {
            whole=false
            break 2
        }
        args+=("$arg")
    done
    # Names become file names, numbers reach `[ -lt ]` and timeout(1): only well-formed entries run.
    if [[ ! "$name" =~ ^[a-z0-9][a-z0-9-]{0,62}$ || ! "$sha" =~ ^[0-9a-f]{64}$ || ! "$interval" =~ ^[0-9]{1,9}$ || ! "$timeout" =~ ^[0-9]{1,9}$ ]]; then
        log "dynamic-check: ignoring a malformed entry in the list of checks"
        continue
    fi
    assigned[$name]=1
    if [ -n "$problem" ]; then
        refuse "$name" "$problem"
        failures=$((failures + 1))
        continue
    fi
    run_check "$name" "$sha" "$interval" "$timeout" "${args[@]+"${args[@]}"}" || failures=$((failures + 1))
done <"$CACHE_DIR/.records.tmp"
$whole || log "dynamic-check: the list of checks in $CACHE_DIR/checks.json could not be read whole; the results of checks not in what was read stay"

# Checks that no longer apply: their results and scripts go (only when the list was read whole).
$whole && for file in "$TEXTFILE_DIR"/check_*.prom; do
    [ -e "$file" ] || continue
    name=${file##*/check_}
    name=${name%.prom}
    if [ -z "${assigned[$name]:-}" ] && ours "$name"; then
        rm -f "$file" "$CACHE_DIR/$name.sh" "$CACHE_DIR/$name.last" "$CACHE_DIR/$name.stderr" "$CACHE_DIR/$name.ours"
        log "dynamic-check: removed the results of check $name, which no longer applies"
    fi
done

[ "$failures" -eq 0 ] || log "dynamic-check: $failures check(s) failed"
exit 0
