#!/usr/bin/env bash
# AAMI uninstall: takes this node out of the fleet and removes what bootstrap.sh installed.
#
#   /opt/aami/uninstall.sh                      deregister, then remove everything AAMI installed
#   /opt/aami/uninstall.sh --deregister-only    only deregister (ephemeral nodes run this at
#                                               shutdown from aami-deregister.service)
#   /opt/aami/uninstall.sh --keep-registration  only remove (the target stays on the server)
#
# Deregistering deletes this node's target on the config server with its node credential
# (DELETE /api/v1/nodes/self: a commit authored by the node); when that fails, nothing is
# removed, so it can be run again with the credential still in place. Removing stops and deletes
# what /etc/aami/installed lists: systemd units, the cron entry, exporters bootstrap.sh
# started (never ones it found running), binaries it unpacked, the check results it wrote,
# the files bootstrap.sh and dynamic-check.sh keep in /etc/aami, /opt/aami and /var/lib/aami
# (by name: never a whole directory), and the directories it created, once empty. Packages
# it installed and exporters it reused are left, and named. bootstrap.sh installs this script
# as /opt/aami/uninstall.sh; the config server also serves it at /scripts/uninstall.sh.
#
# Every path lives under $AAMI_ROOT (default /).
set -uo pipefail

ROOT=${AAMI_ROOT:-}
ROOT=${ROOT%/}
STATE_DIR="$ROOT/etc/aami"
STATE_FILE="$STATE_DIR/node.json"
MANIFEST="$STATE_DIR/installed"
SYSTEMD_DIR="$ROOT/etc/systemd/system"
TEXTFILE_DIR="$ROOT/var/lib/node_exporter/textfile"

info() { printf '[aami] %s\n' "$*"; }
warn() { printf '[aami] WARN: %s\n' "$*" >&2; }
LEFT=()

json_get() { # FILE KEY
    if command -v jq >/dev/null; then
        jq -r --arg key "$2" '.[$key] | if . == null then empty else tostring end' "$1"
    else
        python3 -c 'import json,sys; v=json.load(open(sys.argv[1])).get(sys.argv[2]); print("" if v is None else json.dumps(v) if isinstance(v, bool) else v)' "$1" "$2"
    fi
}

# deregister: delete this node's target with its own credential. Status 1 when it is still registered.
deregister() {
    if [ ! -s "$STATE_FILE" ]; then
        info "not registered: $STATE_FILE is missing"
        return 0
    fi
    local server target credential work status
    server=$(json_get "$STATE_FILE" server)
    target=$(json_get "$STATE_FILE" target_id)
    credential=$(json_get "$STATE_FILE" node_credential)
    if [ -z "$credential" ]; then
        info "not registered: no node credential in $STATE_FILE"
        return 0
    fi
    work=$(mktemp -d)
    # The credential reaches curl in a header file, never on its command line (visible in `ps`).
    (umask 077 && printf 'Authorization: Bearer %s\n' "$credential" >"$work/auth")
    # curl's --retry covers the transient answers (429, 503) and connection failures.
    status=$(curl -sS --retry 5 --retry-max-time 60 --max-time 20 -o "$work/response" -w '%{http_code}' \
        -X DELETE -H "@$work/auth" "$server/api/v1/nodes/self" 2>"$work/error") || status="unreachable: $(head -c 200 "$work/error")"
    local reason
    reason=$(LC_ALL=C tr -cd '[:print:]' <"$work/response" 2>/dev/null | cut -c1-200)
    rm -rf "$work"
    case "$status" in
        200)
            info "deregistered: target $target is gone from $server"
            return 0
            ;;
        401)
            info "deregistered already: $server does not know this node's credential (target $target was deleted, or re-registered elsewhere)"
            return 0
            ;;
        403) warn "$server does not let this node deregister itself: $reason" ;;
        *) warn "could not deregister target $target from $server (HTTP $status${reason:+: $reason})" ;;
    esac
    warn "an admin can delete it: curl -X DELETE $server/api/v1/targets/$target -H \"Authorization: Bearer \$ADMIN\""
    return 1
}

# A manifest path must stay inside AAMI_ROOT.
safe_path() { [[ "$1" =~ ^/[A-Za-z0-9._+/-]*$ && ! "$1" =~ (^|/)\.\.(/|$) ]]; }

has_systemd() {
    command -v systemctl >/dev/null && { [ -d /run/systemd/system ] || [ -n "${AAMI_ASSUME_SYSTEMD:-}" ]; }
}

stop_unit() { # NAME
    if has_systemd; then systemctl disable --now "$1" >/dev/null 2>&1 || warn "systemctl could not stop $1"; fi
    rm -f "$SYSTEMD_DIR/$1"
    info "removed unit $1"
}

# stop_process PIDFILE BINARY: only the process bootstrap started, not whatever has its pid
# now. BINARY is its first argument, or its second or third when it is a script (interpreter first).
stop_process() {
    local pid command _
    pid=$(cat "$ROOT$1" 2>/dev/null) || return 0
    [[ "$pid" =~ ^[0-9]{1,9}$ ]] || return 0
    command=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n 1,3p)
    grep -qxF -- "$2" <<<"$command" || return 0 # gone already
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    info "stopped $2 (pid $pid)"
}

remove_installation() {
    local lines=() line kind value rest i
    [ -r "$MANIFEST" ] && mapfile -t lines <"$MANIFEST"
    # Units and processes first (the checks timer and cron entry must not run mid-removal).
    for line in "${lines[@]+"${lines[@]}"}"; do
        read -r kind value rest <<<"$line"
        case "$kind" in
            unit) [[ "$value" =~ ^aami-[a-z-]+\.(service|timer)$ ]] && stop_unit "$value" ;;
            file) [[ "$value" == */cron.d/* ]] && safe_path "$value" && rm -f "$ROOT$value" && info "removed $value" ;;
            pid) safe_path "$value" && stop_process "$value" "$rest" ;;
        esac
    done
    if has_systemd; then systemctl daemon-reload >/dev/null 2>&1 || true; fi
    for line in "${lines[@]+"${lines[@]}"}"; do
        read -r kind value rest <<<"$line"
        case "$kind" in
            file) safe_path "$value" && [ -e "$ROOT$value" ] && rm -f "$ROOT$value" && info "removed $value" ;;
            package) LEFT+=("package $value, installed by AAMI (apt-get remove $value to remove it)") ;;
            reused) LEFT+=("$value $rest: it ran before AAMI, so it stays") ;;
        esac
    done
    # The check results dynamic-check.sh wrote (its cache says which), not another tool's check_*.prom beside them.
    local file name cache="$ROOT/var/lib/aami/checks"
    for file in "$TEXTFILE_DIR"/check_*.prom "$TEXTFILE_DIR"/.check_*.prom.tmp; do
        [ -e "$file" ] || continue
        name=${file##*/}
        name=${name#.}
        name=${name#check_}
        name=${name%.tmp}
        name=${name%.prom}
        if [ -e "$cache/$name.ours" ] || [ -e "$cache/$name.sh" ] || [ -e "$cache/$name.last" ]; then rm -f "$file"; fi
    done
    # What bootstrap.sh and dynamic-check.sh write there, by name, never a whole directory:
    # whatever else lives in them is someone else's.
    rm -rf "$ROOT/var/lib/aami/checks"
    rm -f "$ROOT/var/lib/aami/dynamic-check.lock" "$ROOT/opt/aami/uninstall.sh" "$ROOT/opt/aami/scripts/dynamic-check.sh" \
        "$STATE_FILE" "$STATE_DIR/.node.json.tmp" "$STATE_DIR"/{node_exporter,dcgm-exporter}.{log,pid} "$MANIFEST"
    info "removed the check results, and AAMI's files in /etc/aami, /opt/aami and /var/lib/aami"
    # Directories bootstrap created, deepest first, when nothing else lives in them now.
    for ((i = ${#lines[@]} - 1; i >= 0; i--)); do
        read -r kind value rest <<<"${lines[i]}"
        if [ "$kind" != dir ] || ! safe_path "$value" || [ ! -d "$ROOT$value" ]; then continue; fi
        rmdir "$ROOT$value" 2>/dev/null || LEFT+=("directory $value: it holds files AAMI did not write")
    done
}

main() {
    local keep=false
    case "${1:-}" in
        --deregister-only)
            # aami-deregister.service may outlive the node's ephemeral status (a later
            # registration said otherwise): then shutting down leaves the target alone.
            if [ -s "$STATE_FILE" ] && [ "$(json_get "$STATE_FILE" ephemeral)" = false ]; then
                info "this node is not ephemeral: it stays registered"
                exit 0
            fi
            deregister
            exit
            ;;
        --keep-registration) keep=true ;;
        "") ;;
        -h | --help)
            sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "usage: uninstall.sh [--deregister-only | --keep-registration]" >&2
            exit 2
            ;;
    esac
    if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
        echo "[aami] ERROR: run uninstall.sh as root" >&2
        exit 1
    fi
    if $keep; then
        [ ! -s "$STATE_FILE" ] || LEFT+=("target $(json_get "$STATE_FILE" target_id) on $(json_get "$STATE_FILE" server) (--keep-registration)")
        # Stopping aami-deregister.service (an ephemeral node's) runs its ExecStop, this
        # script's --deregister-only: without the state file, that finds nothing to deregister.
        rm -f "$STATE_FILE"
    elif ! deregister; then
        echo "[aami] ERROR: nothing was removed; run this again when the server answers, or with --keep-registration to remove AAMI and leave the target" >&2
        exit 1
    fi
    remove_installation
    if [ ${#LEFT[@]} -eq 0 ]; then
        info "done: nothing of AAMI is left on this node"
    else
        info "done; left in place:"
        printf '[aami]   %s\n' "${LEFT[@]}"
    fi
}

main "$@"
