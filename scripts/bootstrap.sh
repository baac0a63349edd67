#!/usr/bin/env bash
# AAMI node bootstrap: registers this host with an AAMI config server as a Prometheus target.
#
#   curl -fsSL $SERVER/bootstrap.sh | bash -s -- --token-file /root/aami-token --server $SERVER
#
# Steps: collect facts (and this machine's identity), make sure Node Exporter runs (port
# 9100, textfile collector) and, on NVIDIA nodes, a DCGM Exporter (port 9400): reuse one that
# answers, else install one; install /opt/aami/uninstall.sh; register (enrol with the
# bootstrap token, or update with the node credential of an earlier run); install
# dynamic-check.sh with a cron entry (or a systemd timer) and run the first check.
# Re-running it on the same host updates the registration; it never duplicates it.
#
# Every path it touches on the node lives under $AAMI_ROOT (default: /), so it can be
# tried in a scratch directory. What it installs is listed in /etc/aami/installed, which
# uninstall.sh reads.
set -euo pipefail
# What it installs is read by others: the exporters run as their own users (DynamicUser) and
# read the check results' directory. Run under a strict umask (077 in cloud-init scripts), a
# directory made here was 0700 and the node exporter could not read one result: private
# files (node.json, the auth headers) set their own modes.
umask 022

# --- output -----------------------------------------------------------------------------
info() { printf '[aami] %s\n' "$*"; }
warn() { printf '[aami] WARN: %s\n' "$*" >&2; }
fatal() {
    printf '[aami] ERROR: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat <<'EOF'
Usage: bootstrap.sh --server URL (--token TOKEN | --token-file FILE) [options]

Registers this host with an AAMI config server. On a host registered before, it updates
the registration with the node credential kept in /etc/aami/node.json (no token needed).

Options:
  --server URL               config server, e.g. http://config-server:8080 [AAMI_SERVER]
  --token TOKEN              bootstrap token (visible in `ps`; prefer the two below)
  --token-file FILE          read the bootstrap token from FILE
                             (or set AAMI_BOOTSTRAP_TOKEN in the environment)
  --hostname NAME            register under NAME instead of `hostname -f` [AAMI_HOSTNAME]
  --label KEY=VALUE          this node's own label; repeatable (the token's labels win)
  --group GROUP_ID           enrol into this group (the token's group or one below it)
  --node-exporter-port PORT  Node Exporter port (default 9100) [AAMI_NODE_EXPORTER_PORT]
  --dcgm-exporter-port PORT  DCGM Exporter port (default 9400) [AAMI_DCGM_EXPORTER_PORT]
  --dry-run                  print what would be done and the JSON that would be sent
  --skip-install             do not install or start exporters (reuse running ones only)
  --no-checks                do not install dynamic checks
  -h, --help                 show this help

Environment:
  AAMI_ROOT            install under another root (default /), for tests and images
  AAMI_RETRY_SECONDS   how long to retry while the server answers 503 (502, 504 from a
                       proxy), 429 or 409 remote_conflict, or does not answer (default 300)
  AAMI_PROBE_SECONDS   how long to ask again an exporter that is busy (503) or slow to
                       answer (default 60)
  AAMI_LISTEN_ADDRESS  address the exporters it starts listen on (default: all)
EOF
}

# --- settings ---------------------------------------------------------------------------
setup_env() {
    # A trace (bash -x) would print the bootstrap token and the node credential from here on
    # (the command line before this is traced already: use --token-file).
    case $- in *x*)
        set +x
        warn "tracing (bash -x) is turned off from here: it would print the bootstrap token and the node credential"
        ;;
    esac
    SERVER=${AAMI_SERVER:-}
    # The token from the environment is taken, and taken out of it: the exporters and check
    # scripts started below inherit the environment (/proc/PID/environ, for their lifetime).
    TOKEN=${AAMI_BOOTSTRAP_TOKEN:-}
    unset AAMI_BOOTSTRAP_TOKEN
    TOKEN_FILE=""
    HOSTNAME_OVERRIDE=${AAMI_HOSTNAME:-}
    GROUP=""
    LABELS=()
    NODE_EXPORTER_PORT=${AAMI_NODE_EXPORTER_PORT:-9100}
    DCGM_EXPORTER_PORT=${AAMI_DCGM_EXPORTER_PORT:-9400}
    RETRY_SECONDS=${AAMI_RETRY_SECONDS:-300}
    PROBE_SECONDS=${AAMI_PROBE_SECONDS:-60}
    LISTEN=${AAMI_LISTEN_ADDRESS:-}
    DRY_RUN=false
    SKIP_INSTALL=false
    NO_CHECKS=false

    while [ $# -gt 0 ]; do
        case "$1" in
            --server) SERVER=${2:?--server needs a URL}; shift 2 ;;
            --token) TOKEN=${2:?--token needs a value}; shift 2 ;;
            --token-file) TOKEN_FILE=${2:?--token-file needs a path}; shift 2 ;;
            --hostname) HOSTNAME_OVERRIDE=${2:?--hostname needs a name}; shift 2 ;;
            --label) LABELS+=("${2:?--label needs KEY=VALUE}"); shift 2 ;;
            --group) GROUP=${2:?--group needs a group id}; shift 2 ;;
            --node-exporter-port) NODE_EXPORTER_PORT=${2:?--node-exporter-port needs a port}; shift 2 ;;
            --dcgm-exporter-port) DCGM_EXPORTER_PORT=${2:?--dcgm-exporter-port needs a port}; shift 2 ;;
            --dry-run) DRY_RUN=true; shift ;;
            --skip-install) SKIP_INSTALL=true; shift ;;
            --no-checks) NO_CHECKS=true; shift ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; fatal "unknown option: $1" ;;
        esac
    done

    [ -n "$SERVER" ] || fatal "--server is required (e.g. --server http://config-server:8080)"
    SERVER=${SERVER%/}
    if [ -n "$TOKEN_FILE" ]; then
        [ -r "$TOKEN_FILE" ] || fatal "cannot read the token file $TOKEN_FILE"
        TOKEN=$(tr -d '[:space:]' <"$TOKEN_FILE")
    fi
    local port
    for port in "$NODE_EXPORTER_PORT" "$DCGM_EXPORTER_PORT"; do
        # No leading zero: bash reads 09 as a bad octal number, and JSON has no such number.
        if [[ ! "$port" =~ ^[1-9][0-9]{0,4}$ ]] || [ "$port" -gt 65535 ]; then fatal "ports must be numbers from 1 to 65535: $(printable "$port")"; fi
    done
    [[ "$RETRY_SECONDS" =~ ^(0|[1-9][0-9]{0,5})$ ]] || fatal "AAMI_RETRY_SECONDS must be a number of seconds"
    [[ "$PROBE_SECONDS" =~ ^(0|[1-9][0-9]{0,5})$ ]] || fatal "AAMI_PROBE_SECONDS must be a number of seconds"
    local address='^[][0-9A-Za-z.:-]*$'
    [[ "$LISTEN" =~ $address ]] || fatal "AAMI_LISTEN_ADDRESS must be a host address"
    # Where this script asks its exporters for their pages: the address they listen on (all of them: loopback).
    case "$LISTEN" in "" | 0.0.0.0) PROBE_HOST=127.0.0.1 ;; "[::]") PROBE_HOST="[::1]" ;; *) PROBE_HOST=$LISTEN ;; esac
    # The server's rules for a node's labels, checked before anything is installed: a label it
    # refuses would otherwise leave a started exporter and no registration.
    local name value
    for label in "${LABELS[@]+"${LABELS[@]}"}"; do
        [[ "$label" =~ ^[a-zA-Z_][a-zA-Z0-9_]*= ]] || fatal "--label must be KEY=VALUE with a Prometheus label name: $(printable "$label")"
        name=${label%%=*}
        value=${label#*=}
        case "$name" in
            __* | aami_* | job | instance | hostname) fatal "--label $name: names starting with __ or aami_, and job, instance and hostname, are set by Prometheus or aami" ;;
        esac
        [ "${#name}" -le 128 ] || fatal "--label $name: a label name has at most 128 characters"
        [ "$(char_count "$value")" -le 1024 ] || fatal "--label $name: a label value has at most 1024 characters"
        if has_control "$value"; then fatal "--label $name: a label value must not hold control characters (newlines, tabs, ...)"; fi
    done
    # The server's rule for a group id, before anything is installed.
    [ -z "$GROUP" ] || [[ "$GROUP" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || fatal "--group must be a group id (1-63 lowercase letters, digits or \"-\", not starting or ending with \"-\"): $(printable "$GROUP")"
    # 64 labels at most, with the GPU facts' three.
    [ "${#LABELS[@]}" -le 61 ] || fatal "--label: at most 61 labels (the GPU facts take three of a node's 64)"
    if [ -n "$HOSTNAME_OVERRIDE" ]; then
        HOSTNAME_OVERRIDE=$(printf '%s' "$HOSTNAME_OVERRIDE" | tr '[:upper:]' '[:lower:]')
        valid_hostname "$HOSTNAME_OVERRIDE" || fatal "--hostname must be an RFC 1123 host name (letters, digits, \"-\" and \".\", at most 250 characters): $(printable "$HOSTNAME_OVERRIDE")"
    fi

    ROOT=${AAMI_ROOT:-}
    ROOT=${ROOT%/}
    # Paths end up in unit files and a cron line, which split on spaces.
    [[ "$ROOT" =~ ^[A-Za-z0-9._/+-]*$ ]] || fatal "AAMI_ROOT must be a path of letters, digits and ._/+-"
    # The GPU stacks' tools where their packages put them (nvidia-smi in /usr/local/nvidia/bin
    # in NVIDIA's images, rocm-smi in /opt/rocm/bin), off the PATH cloud-init and systemd give:
    # not found there, a GPU node was registered as one without GPUs, without a word. Appended,
    # so what the caller put first stays first; as dynamic-check.sh does.
    PATH="$PATH:$ROOT/usr/local/nvidia/bin:$ROOT/usr/local/cuda/bin:$ROOT/opt/rocm/bin"
    STATE_DIR="$ROOT/etc/aami"
    STATE_FILE="$STATE_DIR/node.json"
    MANIFEST="$STATE_DIR/installed"
    OPT_DIR="$ROOT/opt/aami"
    SCRIPTS_DIR="$OPT_DIR/scripts"
    TEXTFILE_DIR="$ROOT/var/lib/node_exporter/textfile"
    CRON_FILE="$ROOT/etc/cron.d/aami-dynamic-check"
    SYSTEMD_DIR="$ROOT/etc/systemd/system"
    BIN_DIR="$ROOT/usr/local/bin"
    ARCH=$(uname -m)
    case "$ARCH" in x86_64) ARCH=amd64 ;; aarch64) ARCH=arm64 ;; esac
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
}

# --- helpers ----------------------------------------------------------------------------
verify_system() {
    command -v curl >/dev/null || fatal "curl is required"
    if [ -n "${AAMI_JSON_TOOL:-}" ]; then
        JSON=$AAMI_JSON_TOOL # jq or python3, to choose one where both exist
    elif command -v jq >/dev/null; then
        JSON=jq
    elif command -v python3 >/dev/null; then
        JSON=python3
    else
        fatal "jq or python3 is required to build the registration request"
    fi
    if command -v systemctl >/dev/null && { [ -d /run/systemd/system ] || [ -n "${AAMI_ASSUME_SYSTEMD:-}" ]; }; then
        HAS_SYSTEMD=true
    else
        HAS_SYSTEMD=false
    fi
}

# RFC 1123, as the server checks it: dot-separated labels of letters, digits and inner "-",
# at most 250 characters (the server's limit: its file, <name>.yaml, within 255 bytes).
valid_hostname() {
    [ "${#1}" -le 250 ] && [[ "$1" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$ ]]
}

# Secrets go to curl in a header file, never on its command line (visible in `ps`).
auth_header() { # NAME SECRET
    local file="$WORK/auth.$1"
    (umask 077 && printf 'Authorization: Bearer %s\n' "$2" >"$file")
    printf '%s' "$file"
}

# json_get FILE KEY: a top-level or dotted field of a JSON document, empty when absent.
json_get() {
    if [ "$JSON" = jq ]; then
        jq -r --arg path "$2" 'getpath($path | split(".")) | if . == null then empty else tostring end' "$1"
    else
        python3 - "$1" "$2" <<'PY'
import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    value = value.get(key) if isinstance(value, dict) else None
print("" if value is None else value if isinstance(value, str) else json.dumps(value))
PY
    fi
}

# Whether TEXT holds what the server calls a control character in a label value: C0, DEL,
# C1 (U+0080-U+009F) and the line and paragraph separators U+2028 and U+2029. Byte by byte
# in UTF-8, whatever the locale.
has_control() {
    local LC_ALL=C c1=$'\xc2' separators=$'\xe2\x80'
    [[ "$1" == *[$'\x01'-$'\x1f'$'\x7f']* || "$1" == *"$c1"[$'\x80'-$'\x9f']* || "$1" == *"$separators"[$'\xa8'$'\xa9']* ]]
}

# The length of TEXT as the server counts it: in characters (Unicode code points), whatever
# the locale (bash's ${#TEXT} counts bytes in the C locale, which cloud-init often runs
# under). From the UTF-8 bytes: every byte but a continuation byte (80-BF) starts one.
char_count() {
    local LC_ALL=C
    local continuation=${1//[^$'\x80'-$'\xbf']/}
    echo $((${#1} - ${#continuation}))
}

# Text from the server shown to a person: printable characters only, and not too much.
printable() { LC_ALL=C tr -cd '[:print:]' <<<"$1" | cut -c1-"${2:-300}"; } # TEXT [MAX]

download_verified() { # URL DEST: fetch URL and URL.sha256 and install DEST only if they agree
    local url=$1 dest=$2 tmp="$WORK/download" expected actual
    curl -fsS "$url" -o "$tmp" || fatal "cannot download $url"
    expected=$(curl -fsS "$url.sha256" | cut -d' ' -f1) || fatal "cannot download $url.sha256"
    actual=$(sha256sum "$tmp" | cut -d' ' -f1)
    if [ -z "$expected" ] || [ "$expected" != "$actual" ]; then fatal "checksum mismatch for $url: refusing to install it"; fi
    make_dir "$(dirname "$dest")"
    mv "$tmp" "$dest"
}

# metrics_answer PORT PATTERN: whether PROBE_HOST:PORT/metrics serves lines matching PATTERN.
# The whole response goes to a file first: piped into `grep -q`, curl dies of SIGPIPE at the
# first match once the page passes the pipe buffer (every real 8-GPU host), and under
# pipefail the probe then says "no" at random. A busy exporter is not a missing one either:
# it may take seconds, and node_exporter answers 503 past --web.max-requests (40) parallel
# scrapes, so a 503 or a scrape that timed out (a loaded host) is asked again, for
# AAMI_PROBE_SECONDS at most. PROBED says what the port answered.
metrics_answer() {
    local page="$WORK/metrics.$1" status failed deadline=$((SECONDS + PROBE_SECONDS))
    while :; do
        failed=0
        status=$(curl -sS --max-time 20 -o "$page" -w '%{http_code}' "http://$PROBE_HOST:$1/metrics" 2>"$WORK/probe.error") || failed=$?
        if [ "$failed" -ne 0 ]; then
            PROBED=$(printable "$(<"$WORK/probe.error")")
            # 28: timed out. Anything else (refused, reset) is no exporter there.
            [ "$failed" -eq 28 ] && [ "$SECONDS" -lt "$deadline" ] || return 1
            continue
        fi
        PROBED="HTTP $status"
        case "$status" in
            200)
                grep -q "$2" "$page" && return
                PROBED="a /metrics page without $2 lines"
                return 1
                ;;
            503) [ "$SECONDS" -lt "$deadline" ] || return 1 ;;
            *) return 1 ;;
        esac
        sleep "1.$((RANDOM % 10))"
    done
}

# --- what bootstrap installed, for uninstall.sh -------------------------------------------
# One line per thing, paths relative to AAMI_ROOT: "dir PATH" (created here: removed when
# empty), "file PATH", "unit NAME", "pid PIDFILE BINARY" (a process started in the
# background), "package NAME" (left in place, named), "reused WHAT" (not ours: left running).
manifest_add() {
    [ -d "$STATE_DIR" ] || make_dir "$STATE_DIR"
    grep -qxF -- "$*" "$MANIFEST" 2>/dev/null || printf '%s\n' "$*" >>"$MANIFEST"
}
manifest_has() { grep -q -- "$1" "$MANIFEST" 2>/dev/null; }
manifest_remove() { # PATTERN (a sed regex, no "#"): the lines of something taken away again
    [ ! -f "$MANIFEST" ] || sed -i "\\#$1#d" "$MANIFEST"
}

# A cron daemon that reads /etc/cron.d (cron, cronie), installed under AAMI_ROOT.
cron_daemon() {
    local daemon
    for daemon in usr/sbin/cron usr/sbin/crond sbin/crond usr/bin/crond; do
        [ ! -x "$ROOT/$daemon" ] || return 0
    done
    return 1
}

make_dir() { # DIR: mkdir -p, remembering each directory it creates
    local dir=$1 created=()
    while [ ! -d "$dir" ]; do
        created=("$dir" "${created[@]+"${created[@]}"}")
        dir=$(dirname "$dir")
    done
    mkdir -p "$1"
    for dir in "${created[@]+"${created[@]}"}"; do manifest_add dir "${dir#"$ROOT"}"; done
}

prepare_state_dir() {
    make_dir "$STATE_DIR"
    chmod 700 "$STATE_DIR"
}

# --- 1. facts ---------------------------------------------------------------------------
# Which machine this is, whatever its name: cloned images share a host name, not this.
# Only a hash leaves the host; the raw id is never sent.
machine_identity() {
    local source raw
    for source in "$ROOT/etc/machine-id" "$ROOT/sys/class/dmi/id/product_uuid"; do
        [ -r "$source" ] || continue
        raw=$(<"$source")
        raw=${raw#"${raw%%[![:space:]]*}"}
        raw=${raw%"${raw##*[![:space:]]}"}
        # An image not booted yet holds an empty machine-id, or "uninitialized" early in boot.
        if [ -z "$raw" ] || [ "$raw" = uninitialized ]; then continue; fi
        # v2: servers once kept what nodes sent (v1, "aami-machine-id:") where readers saw it;
        # they no longer take a v1 value, which may have been read, as proof of the machine.
        MACHINE_ID=$(printf 'aami-machine-id-v2:%s' "$raw" | sha256sum | cut -d' ' -f1)
        return
    done
    fatal "cannot identify this machine: $ROOT/etc/machine-id and $ROOT/sys/class/dmi/id/product_uuid are missing or empty (systemd-machine-id-setup writes the first)"
}

# How many display or 3D controllers of VENDOR (0x10de: NVIDIA) the PCI bus holds for this
# host, whatever their driver says (sysfs; NVSwitches are bridges, not counted; GPUs bound to
# vfio-pci or pci-stub are a hypervisor's, passed to its guests).
pci_gpus() {
    local count=0 device vendor class driver
    for device in "$ROOT"/sys/bus/pci/devices/*; do
        read -r vendor 2>/dev/null <"$device/vendor" || continue
        read -r class 2>/dev/null <"$device/class" || continue
        driver=$(readlink "$device/driver" 2>/dev/null) || driver=""
        case "${driver##*/}" in vfio-pci | pci-stub) continue ;; esac
        if [ "$vendor" = "$1" ] && [[ "$class" == 0x03* ]]; then count=$((count + 1)); fi
    done
    echo "$count"
}

gpu_facts() {
    GPU_VENDOR="" GPU_MODEL="" GPU_COUNT=0
    local listing status
    if command -v nvidia-smi >/dev/null; then
        # One line per GPU: "count, name" (e.g. "1, NVIDIA H100 80GB HBM3").
        # Bounded: nvidia-smi hangs on a GPU that fell off the bus. A node that cannot tell its
        # GPUs now is not registered as CPU-only (its GPU exporter and labels would go).
        status=0
        listing=$(timeout -k 5 30 nvidia-smi --query-gpu=count,name --format=csv,noheader 2>/dev/null) || status=$?
        if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then fatal "nvidia-smi did not answer in 30 s (a GPU fallen off the bus?): not registering this node as one without GPUs; run bootstrap again once nvidia-smi answers"; fi
        if [ "$status" -eq 0 ] && [ -n "$listing" ]; then
            GPU_VENDOR=nvidia
            listing=${listing%%$'\n'*}
            GPU_COUNT=${listing%%,*}
            GPU_COUNT=${GPU_COUNT//[[:space:]]/}
            GPU_MODEL=$(sed 's/^[^,]*, *//; s/ *$//' <<<"$listing")
        else
            # A driver that does not answer on a host whose PCI bus holds NVIDIA GPUs (a driver
            # and library out of step after an update, a module that failed to build, a GPU lost
            # with an Xid error) is a sick GPU node, not one without GPUs. A re-run (at every
            # boot, on some clouds) stops, and the registration stays as it was: taken as
            # CPU-only, its GPU exporter, labels and checks would go. A first enrolment goes on
            # without them, said so: the host is watched meanwhile.
            local on_bus sick
            on_bus=$(pci_gpus 0x10de)
            sick="nvidia-smi failed (exit $status) on a host with $on_bus NVIDIA GPU(s) on its PCI bus (driver and library out of step? a GPU lost?)"
            if [ "$on_bus" -gt 0 ] && [ -n "$REGISTERED_AS" ]; then fatal "$sick: not registering this node again as one without GPUs (its registration stays as it was); run bootstrap again once nvidia-smi lists them"; fi
            if [ "$on_bus" -gt 0 ]; then
                warn "$sick: registering it as a node without GPUs for now; run bootstrap again once nvidia-smi lists them"
            else
                warn "nvidia-smi is installed but lists no GPU, and the PCI bus holds none: a node without GPUs"
            fi
        fi
    elif command -v rocm-smi >/dev/null; then
        # A "device,Card Series,..." header ("Card series" before ROCm 6), then one
        # "cardN,..." line per GPU; rocm-smi drops the commas inside values.
        status=0
        listing=$(timeout -k 5 30 rocm-smi --showproductname --csv 2>/dev/null) || status=$?
        if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then fatal "rocm-smi did not answer in 30 s: not registering this node as one without GPUs; run bootstrap again once rocm-smi answers"; fi
        if [ "$status" -eq 0 ]; then
            IFS=$'\t' read -r GPU_COUNT GPU_MODEL < <(awk -F, '
                tolower($1) == "device" { for (i = 2; i <= NF; i++) if (tolower($i) == "card series") column = i; next }
                /^card[0-9]+,/ { count++; if (model == "" && column) model = $column }
                END { printf "%d\t%s\n", count, model }' <<<"$listing")
            [ "$GPU_COUNT" = 0 ] || GPU_VENDOR=amd
        else
            warn "rocm-smi is installed but failed (exit $status): registering as a node without GPUs"
        fi
    elif [ "$(pci_gpus 0x10de)" -gt 0 ]; then
        warn "the PCI bus holds NVIDIA GPUs but nvidia-smi is not installed (the driver comes later?): registering as a node without GPUs; run bootstrap again once the driver is in"
    fi
    if [[ ! "$GPU_COUNT" =~ ^[0-9]{1,4}$ ]]; then
        warn "cannot read the GPU count from the driver's listing; registering as a CPU-only node"
        GPU_VENDOR="" GPU_MODEL="" GPU_COUNT=0
    fi
}

collect_facts() {
    HOSTNAME_FQDN=${HOSTNAME_OVERRIDE:-$(hostname -f 2>/dev/null || hostname)}
    HOSTNAME_FQDN=$(printf '%s' "$HOSTNAME_FQDN" | tr '[:upper:]' '[:lower:]')
    valid_hostname "$HOSTNAME_FQDN" || fatal "this host's name \"$(printable "$HOSTNAME_FQDN")\" is not an RFC 1123 host name of at most 250 characters: choose one with --hostname NAME"
    machine_identity
    # The address this host uses to reach the server is the one Prometheus should scrape. A
    # server that does not answer yet (restarting, or not up when a fleet first boots) is
    # waited for, as a busy one is: for AAMI_RETRY_SECONDS, with backoff.
    local started=$SECONDS delay_ms=1000 wait_ms failed tried=""
    while :; do
        failed=0
        IP_ADDRESS=$(curl -sS -o /dev/null --max-time 10 -w '%{local_ip}' "$SERVER/api/v1/health" 2>"$WORK/curl-error") || failed=$?
        [ "$failed" -ne 0 ] || break
        wait_ms=$(backoff_ms "$delay_ms")
        if curl_gives_up "$failed" || [ $(((SECONDS - started) * 1000 + wait_ms)) -gt $((RETRY_SECONDS * 1000)) ]; then
            fatal "cannot reach the config server at $SERVER (is it up, and is port 8080 open?)$tried: $(printable "$(cat "$WORK/curl-error")" 200)"
        fi
        warn "cannot reach the config server at $SERVER; retrying in $(seconds "$wait_ms")s"
        sleep "$(seconds "$wait_ms")"
        tried=" (tried for $((SECONDS - started))s)"
        delay_ms=$((delay_ms * 2 > 60000 ? 60000 : delay_ms * 2))
    done
    [ -n "$IP_ADDRESS" ] || IP_ADDRESS=$(hostname -I 2>/dev/null | awk '{print $1}')
    [ -n "$IP_ADDRESS" ] || fatal "cannot tell this host's IP address"
    # --all: nproc alone honours OMP_NUM_THREADS, which ML hosts set.
    CPU_CORES=$(nproc --all 2>/dev/null || grep -c ^processor /proc/cpuinfo)
    MEMORY_BYTES=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 1024))
    # Read as data, not sourced (that would run it as code): PRETTY_NAME="…", its quotes taken off.
    OS_NAME=$(sed -n 's/^PRETTY_NAME=//p' "$ROOT/etc/os-release" 2>/dev/null | sed -e 's/^"\(.*\)"$/\1/' -e "s/^'\(.*\)'$/\1/" | awk 'NR == 1' || true)
    KERNEL=$(uname -r)
    # Not the virtual interfaces containers make by the hundred (a Kubernetes node's cali*, veth*),
    # and at most the 64 the server keeps (more would have every registration refused): those
    # with a device first (a NIC, an InfiniBand port), so SR-IOV functions do not crowd them out.
    INTERFACES=$(find "$ROOT/sys/class/net" -mindepth 1 -maxdepth 1 ! -name lo -printf '%f\n' 2>/dev/null |
        grep -Ev '^(veth|cali|lxc|docker|br-|cni|flannel|vxlan|tunl|virbr|kube-|cilium|genev|weave|vnet|tap)' |
        while IFS= read -r name; do
            if [ -e "$ROOT/sys/class/net/$name/device" ]; then printf '0 %s\n' "$name"; else printf '1 %s\n' "$name"; fi
        done | sort | awk 'NR <= 64 { print $2 }' | sort | paste -sd, - || true)
    gpu_facts
    info "facts: $HOSTNAME_FQDN $IP_ADDRESS, $CPU_CORES cores, $((MEMORY_BYTES / 1024 / 1024 / 1024)) GiB, ${GPU_COUNT} GPU${GPU_MODEL:+ ($GPU_MODEL)}, interfaces ${INTERFACES:-none}"
    [ "$GPU_VENDOR" != amd ] || info "AMD GPUs: AAMI installs no AMD exporter; GPU metrics need AMD's device-metrics-exporter"
}

# The node credential of an earlier run against this server, if any.
load_state() {
    CREDENTIAL="" REGISTERED_AS="" DCGM_REGISTERED=""
    if [ -s "$STATE_FILE" ]; then
        if [ "$(json_get "$STATE_FILE" server)" = "$SERVER" ]; then
            CREDENTIAL=$(json_get "$STATE_FILE" node_credential)
            REGISTERED_AS=$(json_get "$STATE_FILE" target_id)
            DCGM_REGISTERED=$(json_get "$STATE_FILE" dcgm_exporter_port 2>/dev/null || true)
        else
            warn "this node was registered with $(json_get "$STATE_FILE" server); enrolling with $SERVER (the other registration stays until removed there)"
        fi
    fi
    [ -n "$TOKEN" ] || [ -n "$CREDENTIAL" ] || fatal "a bootstrap token is required: --token-file FILE, AAMI_BOOTSTRAP_TOKEN or --token"
}

# --- 2. exporters -----------------------------------------------------------------------
# An exporter that answers is ours when this script started it, else someone else's (reused).
note_running() { # WHAT PORT UNIT PIDNAME
    if manifest_has "^unit $3.service$" || manifest_has "^pid ${STATE_DIR#"$ROOT"}/$4.pid "; then
        info "$1: running on :$2 (installed by AAMI)"
    else
        info "$1: already running on :$2, reusing it"
        manifest_add reused "$1 on :$2"
    fi
}

apt_knows() { # PACKAGE: apt can install it here (its repository is configured)
    command -v apt-get >/dev/null && command -v apt-cache >/dev/null &&
        [ -n "$(apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" { print $2 }')" ]
}

# obtain_exporter BINARY TARBALL PACKAGE NAMES...: sets EXPORTER_BIN to an installed binary
# (one of NAMES on PATH, or BINARY in /usr/local/bin), else one unpacked from the server's
# downloads (checksum verified), else from the distribution's PACKAGE. Status 1 when none.
obtain_exporter() {
    local binary=$1 tarball=$2 package=$3 name found
    shift 3
    for name in "$BIN_DIR/$binary" "$@"; do
        if EXPORTER_BIN=$(command -v "$name" 2>/dev/null); then return 0; fi
    done
    if curl -fsS -o /dev/null "$SERVER/downloads/$tarball.sha256" 2>/dev/null; then
        info "$binary: installing $tarball from $SERVER/downloads"
        download_verified "$SERVER/downloads/$tarball" "$WORK/$tarball"
        mkdir -p "$WORK/unpack.$binary"
        tar -xzf "$WORK/$tarball" -C "$WORK/unpack.$binary"
        found=$(find "$WORK/unpack.$binary" -type f -name "$binary" -print -quit)
        [ -n "$found" ] || fatal "$tarball from the server has no $binary in it"
        make_dir "$BIN_DIR"
        install -m 0755 "$found" "$BIN_DIR/$binary"
        manifest_add file "${BIN_DIR#"$ROOT"}/$binary"
        EXPORTER_BIN="$BIN_DIR/$binary"
        return 0
    fi
    if apt_knows "$package"; then
        info "$binary: installing the package $package"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null || fatal "apt-get install $package failed"
        manifest_add package "$package"
        for name in "$@"; do
            if EXPORTER_BIN=$(command -v "$name" 2>/dev/null); then return 0; fi
        done
        fatal "the package $package is installed but has no $*"
    fi
    return 1
}

wait_for_exporter() { # PORT PATTERN: wait up to 30 s for the exporter to serve its metrics
    local deadline=$((SECONDS + 30))
    while [ "$SECONDS" -lt "$deadline" ]; do
        metrics_answer "$1" "$2" && return 0
        sleep 0.5
    done
    return 1
}

# systemd_word WORD: WORD as one word of an ExecStart= line, so that systemd passes it on
# exactly. systemd splits that line on blanks, takes quotes and C escapes and replaces
# %-specifiers when it loads the unit, and $VARIABLES when it starts the command: a word of
# anything but plain characters is quoted, with \ and " escaped, % and $ doubled, and control
# characters (a newline would end the line) written as \xNN.
systemd_word() {
    local LC_ALL=C word=$1 i c quoted=''
    if [[ "$word" =~ ^[A-Za-z0-9_./:=,+@-]+$ ]]; then
        printf '%s' "$word"
        return
    fi
    word=${word//\\/\\\\}
    word=${word//\"/\\\"}
    word=${word//%/%%}
    word=${word//\$/\$\$}
    for ((i = 0; i < ${#word}; i++)); do
        c=${word:i:1}
        [[ "$c" != [[:cntrl:]] ]] || printf -v c '\\x%02x' "'$c"
        quoted+=$c
    done
    printf '"%s"' "$quoted"
}

# run_exporter UNIT NAME BINARY PORT PATTERN DYNAMIC_USER ARGS...: run BINARY as the systemd
# unit UNIT, or in the background where there is no systemd; wait until it answers.
run_exporter() {
    local unit=$1 name=$2 bin=$3 port=$4 pattern=$5 dynamic_user=$6
    shift 6
    if $HAS_SYSTEMD; then
        # systemd refuses an executable path with a quote, a backslash or a control character,
        # and runs the path as written while it replaces $VARIABLES in argv[0]: no "$" either.
        [[ "$bin" == /* && "$bin" != *[\"\'\\\$[:cntrl:]]* ]] ||
            fatal "$name: systemd cannot run $bin: it needs an absolute path without quotes, backslashes, \"\$\" or control characters (install the exporter elsewhere)"
        local command word
        command=$(systemd_word "$bin")
        for word in "$@"; do command+=" $(systemd_word "$word")"; done
        make_dir "$SYSTEMD_DIR"
        cat >"$SYSTEMD_DIR/$unit.service" <<EOF
[Unit]
Description=$name (installed by AAMI)
After=network-online.target
# Never given up on: systemd's default stops a unit that failed 5 times in 10 s for good (a
# DCGM exporter started before the driver is up, a port held a moment at boot).
StartLimitIntervalSec=0

[Service]
ExecStart=$command
Restart=always
RestartSec=5
DynamicUser=$dynamic_user

[Install]
WantedBy=multi-user.target
EOF
        manifest_add unit "$unit.service"
        systemctl daemon-reload
        # Restarted, not only started: it did not answer on this port, and a unit of an earlier
        # run may be running with the arguments the unit file had then (another port).
        systemctl enable "$unit.service" >/dev/null
        systemctl restart "$unit.service"
        info "$name: $bin as systemd unit $unit on :$port"
    else
        # One of an earlier run (another port, another address) is stopped first: the pid file names only the last.
        local pid first=''
        pid=$(cat "$STATE_DIR/$name.pid" 2>/dev/null) || pid=""
        # Its first argv word, read from the file itself: a pipe into a reader that stops early can fail under pipefail.
        if [[ "$pid" =~ ^[0-9]{1,9}$ ]] && IFS= read -r -d '' first 2>/dev/null <"/proc/$pid/cmdline" && [ "$first" = "$bin" ]; then
            kill "$pid" 2>/dev/null || true
            # Gone before the new one starts: it may hold the port at another address.
            local _
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            info "$name: stopped the one an earlier run started (pid $pid)"
        fi
        # stdin from /dev/null: under `curl | bash` it is the script itself.
        nohup "$bin" "$@" </dev/null >"$STATE_DIR/$name.log" 2>&1 &
        echo $! >"$STATE_DIR/$name.pid"
        manifest_add pid "${STATE_DIR#"$ROOT"}/$name.pid" "$bin"
        warn "no systemd: started $bin in the background (pid $!); it will not start again after a reboot"
    fi
    wait_for_exporter "$port" "$pattern"
}

install_node_exporter() {
    if metrics_answer "$NODE_EXPORTER_PORT" '^node_'; then
        note_running "node exporter" "$NODE_EXPORTER_PORT" aami-node-exporter node_exporter
        return
    fi
    if $SKIP_INSTALL; then
        warn "node exporter: not running on :$NODE_EXPORTER_PORT ($PROBED) and --skip-install given; Prometheus will find this target down"
        return
    fi
    if ! obtain_exporter node_exporter "node_exporter-linux-$ARCH.tar.gz" prometheus-node-exporter node_exporter prometheus-node-exporter; then
        fatal "node exporter: none installed, none offered by the server (put node_exporter-linux-$ARCH.tar.gz in its --downloads-dir) and apt has no prometheus-node-exporter (after apt-get update?)"
    fi
    # The distribution's package starts its own service with another textfile directory: ours replaces it.
    if manifest_has '^package prometheus-node-exporter$' && $HAS_SYSTEMD; then systemctl disable --now prometheus-node-exporter >/dev/null 2>&1 || true; fi
    make_dir "$TEXTFILE_DIR"
    run_exporter aami-node-exporter node_exporter "$EXPORTER_BIN" "$NODE_EXPORTER_PORT" '^node_' yes \
        "--web.listen-address=$LISTEN:$NODE_EXPORTER_PORT" "--collector.textfile.directory=$TEXTFILE_DIR" ||
        fatal "node exporter did not answer on :$NODE_EXPORTER_PORT (see $STATE_DIR/node_exporter.log or journalctl -u aami-node-exporter)"
}

# NVIDIA's DCGM Exporter serves the DCGM_* GPU metrics; it needs the driver and DCGM, so a
# failure here is reported and the node is registered without it, unless it was registered
# with it (dcgm_kept).
setup_dcgm_exporter() {
    DCGM=false
    [ "$GPU_VENDOR" = nvidia ] || return 0
    local how="install NVIDIA's dcgm-exporter (apt-get install datacenter-gpu-manager-exporter from NVIDIA's CUDA repository, or put dcgm-exporter-linux-$ARCH.tar.gz and its .sha256 in the config server's --downloads-dir), then re-run this script"
    if metrics_answer "$DCGM_EXPORTER_PORT" '^DCGM_'; then
        note_running "dcgm exporter" "$DCGM_EXPORTER_PORT" aami-dcgm-exporter dcgm-exporter
        DCGM=true
        return
    fi
    if $SKIP_INSTALL; then
        dcgm_kept "none answers on :$DCGM_EXPORTER_PORT ($PROBED)" ||
            warn "dcgm exporter: none answers on :$DCGM_EXPORTER_PORT ($PROBED) and --skip-install given: no GPU metrics (DCGM_*) until one runs there"
        return
    fi
    if ! obtain_exporter dcgm-exporter "dcgm-exporter-linux-$ARCH.tar.gz" datacenter-gpu-manager-exporter dcgm-exporter; then
        dcgm_kept "none answers on :$DCGM_EXPORTER_PORT and none can be installed here; for GPU metrics (DCGM_*), $how" ||
            warn "dcgm exporter: none answers on :$DCGM_EXPORTER_PORT and none can be installed here; for GPU metrics (DCGM_*), $how"
        return
    fi
    # A package may start its own service on the port.
    if metrics_answer "$DCGM_EXPORTER_PORT" '^DCGM_'; then
        info "dcgm exporter: the package's service answers on :$DCGM_EXPORTER_PORT"
        DCGM=true
        return
    fi
    if run_exporter aami-dcgm-exporter dcgm-exporter "$EXPORTER_BIN" "$DCGM_EXPORTER_PORT" '^DCGM_' no --address "$LISTEN:$DCGM_EXPORTER_PORT"; then
        DCGM=true
    else
        local why="$EXPORTER_BIN started but does not answer on :$DCGM_EXPORTER_PORT (see $STATE_DIR/dcgm-exporter.log or journalctl -u aami-dcgm-exporter: DCGM and the NVIDIA driver must be installed)"
        dcgm_kept "$why" || warn "dcgm exporter: $why; registering without it"
    fi
}

# dcgm_kept WHY: a DCGM exporter this node was registered with on this port that does not
# answer now (started before the driver at boot, restarting) stays in the registration:
# Prometheus shows it down, where the target used to vanish without a word at a boot's re-run.
dcgm_kept() {
    [ -n "$DCGM_REGISTERED" ] && [ "$DCGM_REGISTERED" = "$DCGM_EXPORTER_PORT" ] || return 1
    warn "dcgm exporter: $1; it stays in this node's registration as before (Prometheus shows it down until it answers)"
    DCGM=true
}

# --- 3. registration --------------------------------------------------------------------
# build_body enrol|update: the request. Enrolment names the host; both say which machine
# this is (the server refuses a credential or a name another machine holds). GPU facts and --label
# flags are the node's own labels; the server keeps the admin's and the token's.
build_body() {
    local exporters='[{"type":"node_exporter","port":'"$NODE_EXPORTER_PORT"'}]'
    if $DCGM; then exporters='[{"type":"node_exporter","port":'"$NODE_EXPORTER_PORT"'},{"type":"dcgm_exporter","port":'"$DCGM_EXPORTER_PORT"'}]'; fi
    if [ "$JSON" = jq ]; then
        jq -n --arg mode "$1" --arg hostname "$HOSTNAME_FQDN" --arg machine "$MACHINE_ID" --arg ip "$IP_ADDRESS" --arg group "$GROUP" \
            --argjson exporters "$exporters" --argjson cores "$CPU_CORES" --argjson memory "$MEMORY_BYTES" --arg os "$OS_NAME" --arg kernel "$KERNEL" \
            --arg vendor "$GPU_VENDOR" --arg model "$GPU_MODEL" --argjson count "$GPU_COUNT" --arg interfaces "$INTERFACES" \
            '($ARGS.positional | map(index("=") as $i | {(.[:$i]): .[$i + 1:]}) | add // {}) as $flags
             | (if $vendor != "" then {gpu_vendor: $vendor, gpu_count: ($count | tostring)} + (if $model != "" then {gpu_model: $model} else {} end) else {} end) as $gpu
             | {ip_address: $ip, exporters: $exporters, labels: ($gpu + $flags),
                facts: ({cpu_cores: $cores, memory_bytes: $memory, os: $os, kernel: $kernel, gpu_count: $count,
                         interfaces: ($interfaces | split(",") | map(select(length > 0)))}
                        + (if $vendor != "" then {gpu_vendor: $vendor, gpu_model: $model} else {} end))}
             + {machine_id: $machine}
             + (if $mode == "enrol" then {hostname: $hostname} + (if $group != "" then {group_id: $group} else {} end) else {} end)' \
            --args "${LABELS[@]+"${LABELS[@]}"}"
    else
        python3 - "$1" "$HOSTNAME_FQDN" "$MACHINE_ID" "$IP_ADDRESS" "$GROUP" "$exporters" "$CPU_CORES" "$MEMORY_BYTES" "$OS_NAME" "$KERNEL" \
            "$GPU_VENDOR" "$GPU_MODEL" "$GPU_COUNT" "$INTERFACES" "${LABELS[@]+"${LABELS[@]}"}" <<'PY'
import json, sys
# A byte that is not UTF-8 becomes U+FFFD, as jq makes it: not a lone surrogate ("\udcff"), which is no text.
argv = [arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for arg in sys.argv]
(mode, hostname, machine, ip, group, exporters, cores, memory, os_name, kernel, vendor, model, count, interfaces), flags = argv[1:15], argv[15:]
facts = {"cpu_cores": int(cores), "memory_bytes": int(memory), "os": os_name, "kernel": kernel, "gpu_count": int(count),
         "interfaces": [i for i in interfaces.split(",") if i]}
labels = {}
if vendor:
    facts.update(gpu_vendor=vendor, gpu_model=model)
    labels.update(gpu_vendor=vendor, gpu_count=count)
    if model:
        labels["gpu_model"] = model
labels.update(flag.split("=", 1) for flag in flags)
body = {"ip_address": ip, "exporters": json.loads(exporters), "labels": labels, "facts": facts, "machine_id": machine}
if mode == "enrol":
    body["hostname"] = hostname
    if group:
        body["group_id"] = group
print(json.dumps(body))
PY
    fi
}

# http_call METHOD PATH AUTH_FILE [BODY_FILE]: one request; STATUS and $RESPONSE hold the answer.
# STATUS 000: no answer (refused, reset, timed out), what curl said in $CURL_ERROR. 90 s: a
# registration may wait behind the server's push to its Git remote (60 s at most).
http_call() {
    local args=(-sS -o "$RESPONSE" -w '%{http_code}' --max-time 90 -X "$1" -H "@$3")
    [ -z "${4:-}" ] || args+=(-H 'Content-Type: application/json' --data-binary "@$4")
    CURL_EXIT=0
    STATUS=$(curl "${args[@]}" "$SERVER$2" 2>"$WORK/curl-error") || CURL_EXIT=$?
    [ "$CURL_EXIT" -eq 0 ] || STATUS=000
    CURL_ERROR=$(printable "$(cat "$WORK/curl-error" 2>/dev/null)" 200)
    ! curl_gives_up "$CURL_EXIT" || fatal "cannot reach the config server at $SERVER: $CURL_ERROR"
}

# curl_gives_up EXIT: curl failed in a way waiting does not mend (an unsupported scheme, a
# malformed URL, this host's own certificate or CA file unusable), not a server that does not
# answer yet. Not a TLS handshake cut short (35: a load balancer before a server restarting)
# nor a certificate found not valid yet (60: a clock before NTP sets it): those are waited out.
curl_gives_up() { case "$1" in 1 | 3 | 58 | 77) return 0 ;; *) return 1 ;; esac; }

# backoff_ms DELAY_MS: a wait of DELAY_MS jittered (half to all of it): a fleet booting at
# once must not come back in lockstep.
backoff_ms() { echo $(($1 / 2 + RANDOM % ($1 / 2 + 1))); }

error_code() { json_get "$RESPONSE" error.code 2>/dev/null || true; }

seconds() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); } # MILLISECONDS

# api_call METHOD PATH AUTH_FILE [BODY_FILE]: http_call, retrying transient refusals (503,
# 429, 409 remote_conflict) and no answer at all (a server restarting) with jittered
# exponential backoff for AAMI_RETRY_SECONDS: a fleet booting at once must not hit a busy
# server in lockstep. GAVE_UP says how long it tried. Sent again, a registration is the same
# machine's re-enrolment (no second token use), an update the same update.
api_call() {
    local started=$SECONDS attempt=1 delay_ms=1000 wait_ms code retry_after
    GAVE_UP=""
    while :; do
        http_call "$@"
        code=$(error_code)
        case "$STATUS:$code" in
            503:* | 502:* | 504:* | 429:* | 409:remote_conflict | 000:*) ;; # 502, 504: a proxy before a server restarting
            *) return 0 ;;
        esac
        wait_ms=$(backoff_ms "$delay_ms")
        retry_after=$(json_get "$RESPONSE" error.details.retry_after_seconds 2>/dev/null || true)
        if [ "$STATUS" = 429 ] && [[ "$retry_after" =~ ^[0-9]{1,5}$ ]] && [ $((retry_after * 1000)) -gt "$wait_ms" ]; then
            wait_ms=$((retry_after * 1000))
        fi
        if [ $(((SECONDS - started) * 1000 + wait_ms)) -gt $((RETRY_SECONDS * 1000)) ]; then
            GAVE_UP=" after $attempt attempts in $((SECONDS - started))s"
            [ "$STATUS" != 000 ] || fatal "cannot reach the config server at $SERVER$GAVE_UP: $CURL_ERROR"
            return 0
        fi
        if [ "$STATUS" = 000 ]; then
            warn "no answer from the server ($CURL_ERROR); retrying in $(seconds "$wait_ms")s (attempt $((attempt + 1)))"
        else
            warn "the server refused for now (HTTP $STATUS${code:+ $code}); retrying in $(seconds "$wait_ms")s (attempt $((attempt + 1)))"
        fi
        sleep "$(seconds "$wait_ms")"
        attempt=$((attempt + 1))
        delay_ms=$((delay_ms * 2 > 60000 ? 60000 : delay_ms * 2))
    done
}

refused() { # WHAT: exit with one line saying why the server refused
    local code message
    code=$(error_code)
    message=$(json_get "$RESPONSE" error.message 2>/dev/null) || message=$(head -c 300 "$RESPONSE")
    message=$(printable "$message" 600)
    case "$code" in
        token_expired) fatal "$1 refused: the bootstrap token has expired ($message)" ;;
        token_revoked) fatal "$1 refused: the bootstrap token has been revoked ($message)" ;;
        token_exhausted) fatal "$1 refused: the bootstrap token is used up ($message)" ;;
        unauthorized) fatal "$1 refused: the bootstrap token is not valid" ;;
        hostname_taken) fatal "$message" ;; # the server's words say what to do, for each of its causes
        *) fatal "$1 failed (HTTP $STATUS${code:+, $code})$GAVE_UP: $message" ;;
    esac
}

enrol() {
    [ -n "$TOKEN" ] || fatal "the server does not accept this node's credential and no bootstrap token was given: --token-file FILE, AAMI_BOOTSTRAP_TOKEN or --token"
    build_body enrol >"$WORK/request.json"
    api_call POST /api/v1/bootstrap/register "$(auth_header token "$TOKEN")" "$WORK/request.json"
    case "$STATUS" in 200 | 201) accept_registration ;; *) refused registration ;; esac
}

update() { # status 1 when the node must enrol again: its credential is gone, or another machine's
    [ -z "$GROUP" ] || warn "--group applies at enrolment only; this node stays in its group"
    if [ -n "$REGISTERED_AS" ] && [ "$REGISTERED_AS" != "$HOSTNAME_FQDN" ]; then
        warn "this node is registered as $REGISTERED_AS and stays so; to register it as $HOSTNAME_FQDN, run $OPT_DIR/uninstall.sh --deregister-only, then this script again"
    fi
    build_body update >"$WORK/request.json" || fatal "cannot write the request to $WORK/request.json"
    api_call PUT /api/v1/nodes/self "$(auth_header node "$CREDENTIAL")" "$WORK/request.json"
    case "$STATUS:$(error_code)" in
        200:*) accept_registration ;;
        401:*) return 1 ;;
        409:hostname_taken)
            info "the node credential in $STATE_FILE was issued to another machine (a cloned disk image?)"
            return 1
            ;;
        *) refused update ;;
    esac
}

register() {
    RESPONSE="$WORK/response.json"
    if [ -n "$CREDENTIAL" ]; then
        update && return
        info "the server does not accept this node's credential (its target was deleted, or the credential replaced or another machine's): enrolling again with the bootstrap token"
    fi
    enrol
}

accept_registration() {
    local credential
    TARGET_ID=$(json_get "$RESPONSE" target.id)
    credential=$(json_get "$RESPONSE" node_credential)
    EPHEMERAL=false
    [ "$(json_get "$RESPONSE" ephemeral)" != true ] || EPHEMERAL=true
    save_state "$TARGET_ID" "${credential:-$CREDENTIAL}"
    info "registered: target $(printable "$TARGET_ID") ($(printable "$(json_get "$RESPONSE" outcome)")) in group $(printable "$(json_get "$RESPONSE" target.primary_group_id)")"
}

save_state() { # TARGET_ID CREDENTIAL: root-only file, written whole
    local tmp="$STATE_DIR/.node.json.tmp"
    # Checked step by step: this runs inside `update && ...`, where bash's errexit is off, and a
    # write that failed (a full disk) must not replace the node's credential with nothing.
    if [ -z "$1" ] || [ -z "$2" ]; then fatal "the server's answer names no target or no node credential: $STATE_FILE is left as it was; run bootstrap again"; fi
    # The credential goes in on stdin, never as an argument (visible in `ps` while it runs).
    (
        umask 077
        # The port of the DCGM exporter registered (none: ""), for the next run (dcgm_kept).
        local dcgm=""
        ! $DCGM || dcgm=$DCGM_EXPORTER_PORT
        if [ "$JSON" = jq ]; then
            printf '%s' "$2" | jq -Rn --arg server "$SERVER" --arg target "$1" --argjson ephemeral "$EPHEMERAL" --arg dcgm "$dcgm" \
                '{server: $server, target_id: $target, node_credential: input, ephemeral: $ephemeral} + (if $dcgm == "" then {} else {dcgm_exporter_port: ($dcgm | tonumber)} end)' >"$tmp"
        else
            printf '%s' "$2" | python3 -c 'import json,sys; state = {"server": sys.argv[1], "target_id": sys.argv[2], "node_credential": sys.stdin.read(), "ephemeral": sys.argv[3] == "true"}; state.update({"dcgm_exporter_port": int(sys.argv[4])} if sys.argv[4] else {}); print(json.dumps(state))' \
                "$SERVER" "$1" "$EPHEMERAL" "$dcgm" >"$tmp"
        fi
    ) || fatal "cannot write $tmp (a full disk?): $STATE_FILE is left as it was; the server has this node registered, run bootstrap again once it can be written"
    [ -s "$tmp" ] || fatal "cannot write $tmp (a full disk?): $STATE_FILE is left as it was; the server has this node registered, run bootstrap again once it can be written"
    mv "$tmp" "$STATE_FILE" || fatal "cannot put $tmp in place of $STATE_FILE"
}

# --- 4. leaving the fleet ---------------------------------------------------------------
# Like k3s, the uninstaller is put in place at install time (and before registering, so a
# half-done install can be removed too).
install_uninstaller() {
    download_verified "$SERVER/scripts/uninstall.sh" "$OPT_DIR/uninstall.sh"
    chmod 0755 "$OPT_DIR/uninstall.sh"
}

environment_line() { [ -z "$ROOT" ] || printf 'Environment=AAMI_ROOT=%s\n' "$ROOT"; }

# An ephemeral node (a spot VM, an autoscaled instance) deregisters itself when it shuts
# down cleanly: the unit is started now and does its work when it is stopped.
setup_ephemeral() {
    local unit="$SYSTEMD_DIR/aami-deregister.service"
    if ! $EPHEMERAL; then
        if [ -f "$unit" ]; then
            # Not stopped: stopping it would deregister now. Its ExecStop reads node.json,
            # which says the node is not ephemeral, and leaves the registration alone.
            systemctl disable aami-deregister.service >/dev/null 2>&1 || true
            rm -f "$unit"
            info "not ephemeral any more: removed aami-deregister.service"
        fi
        return
    fi
    if ! $HAS_SYSTEMD; then
        warn "ephemeral node without systemd: nothing deregisters it at shutdown; run $OPT_DIR/uninstall.sh --deregister-only from your shutdown hook"
        return
    fi
    make_dir "$SYSTEMD_DIR"
    cat >"$unit" <<EOF
[Unit]
Description=AAMI: deregister this ephemeral node when it shuts down
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=$OPT_DIR/uninstall.sh --deregister-only
$(environment_line)

[Install]
WantedBy=multi-user.target
EOF
    manifest_add unit aami-deregister.service
    systemctl daemon-reload
    systemctl enable --now aami-deregister.service >/dev/null
    info "ephemeral: aami-deregister.service deregisters this node when it shuts down"
}

# --- 5. dynamic checks ------------------------------------------------------------------
install_checks() {
    # dynamic-check.sh also sends the heartbeat: without it the server lists the node as stale (and removes an ephemeral one).
    local silent="the server lists this node as stale after its threshold"
    if $EPHEMERAL; then silent="the server removes this node after its token's TTL (ephemeral)"; fi
    if $NO_CHECKS; then
        info "checks: skipped (--no-checks); nothing sends this node's heartbeat either (dynamic-check.sh does): $silent"
        return
    fi
    download_verified "$SERVER/scripts/dynamic-check.sh" "$SCRIPTS_DIR/dynamic-check.sh"
    chmod 0755 "$SCRIPTS_DIR/dynamic-check.sh"
    make_dir "$ROOT/var/lib/aami"
    make_dir "$TEXTFILE_DIR"
    local run="$SCRIPTS_DIR/dynamic-check.sh"
    [ -z "$ROOT" ] || run="AAMI_ROOT=$ROOT $run"
    # Cron where a cron daemon is installed: /etc/cron.d alone says nothing (Debian's
    # e2fsprogs, an essential package, puts a file there on hosts without cron). One
    # scheduler: a re-run that chooses the other (cron installed or removed since) takes the
    # first one away, with its lines in the manifest.
    if [ -d "$ROOT/etc/cron.d" ] && cron_daemon; then
        if [ -f "$SYSTEMD_DIR/aami-dynamic-check.timer" ]; then
            ! $HAS_SYSTEMD || systemctl disable --now aami-dynamic-check.timer >/dev/null 2>&1 || true
            rm -f "$SYSTEMD_DIR/aami-dynamic-check.timer" "$SYSTEMD_DIR/aami-dynamic-check.service"
            ! $HAS_SYSTEMD || systemctl daemon-reload
            manifest_remove '^unit aami-dynamic-check\.\(timer\|service\)$'
            info "checks: cron runs them now: removed aami-dynamic-check.timer"
        fi
        printf '# Installed by AAMI bootstrap.sh: dynamic checks every minute.\n* * * * * root %s >/dev/null 2>&1\n' "$run" >"$CRON_FILE"
        chmod 0644 "$CRON_FILE"
        manifest_add file "${CRON_FILE#"$ROOT"}"
        info "checks: $CRON_FILE runs dynamic-check.sh every minute"
    elif $HAS_SYSTEMD; then
        if [ -f "$CRON_FILE" ]; then
            rm -f "$CRON_FILE"
            manifest_remove "^file ${CRON_FILE#"$ROOT"}\$"
            info "checks: no cron daemon; the systemd timer runs them now: removed $CRON_FILE"
        fi
        make_dir "$SYSTEMD_DIR"
        printf '[Unit]\nDescription=AAMI dynamic checks\n\n[Service]\nType=oneshot\nExecStart=%s\n%s\n' "$SCRIPTS_DIR/dynamic-check.sh" "$(environment_line)" >"$SYSTEMD_DIR/aami-dynamic-check.service"
        printf '[Unit]\nDescription=AAMI dynamic checks every minute\n\n[Timer]\nOnCalendar=minutely\n\n[Install]\nWantedBy=timers.target\n' >"$SYSTEMD_DIR/aami-dynamic-check.timer"
        manifest_add unit aami-dynamic-check.timer
        manifest_add unit aami-dynamic-check.service
        systemctl daemon-reload
        systemctl enable --now aami-dynamic-check.timer >/dev/null
        info "checks: no cron; systemd timer aami-dynamic-check.timer runs dynamic-check.sh every minute"
    else
        warn "checks: neither cron nor systemd here; run $SCRIPTS_DIR/dynamic-check.sh from your own scheduler (every minute): it also sends the heartbeat without which $silent"
    fi
    info "checks: first run:"
    AAMI_ROOT="$ROOT" "$SCRIPTS_DIR/dynamic-check.sh" || warn "checks: the first run of dynamic-check.sh failed (see: grep aami /var/log/syslog)"
    info "checks: results in $TEXTFILE_DIR"
    # A node exporter reused here (a distribution's package, a DaemonSet) may read another
    # textfile directory, or none: the results would reach no one, and an alert on them
    # cannot fire on series that do not exist. Told, with the remedy.
    if compgen -G "$TEXTFILE_DIR/check_*.prom" >/dev/null && ! metrics_answer "$NODE_EXPORTER_PORT" '^aami_check_success' && [[ "$PROBED" == "a /metrics page"* ]]; then
        warn "checks: the node exporter on :$NODE_EXPORTER_PORT does not read $TEXTFILE_DIR (its --collector.textfile.directory is another, or none): the check results do not reach Prometheus; start it with --collector.textfile.directory=$TEXTFILE_DIR"
    fi
}

dry_run() {
    DCGM=false
    [ "$GPU_VENDOR" != nvidia ] || ! metrics_answer "$DCGM_EXPORTER_PORT" '^DCGM_' || DCGM=true
    info "dry run: nothing is installed, started or registered"
    if metrics_answer "$NODE_EXPORTER_PORT" '^node_'; then info "would reuse the node exporter on :$NODE_EXPORTER_PORT"
    elif $SKIP_INSTALL; then info "would leave the node exporter alone (--skip-install)"
    else info "would install or start a node exporter on :$NODE_EXPORTER_PORT with textfiles in $TEXTFILE_DIR"; fi
    if [ "$GPU_VENDOR" = nvidia ]; then
        if $DCGM; then info "would reuse the dcgm exporter on :$DCGM_EXPORTER_PORT"; else info "would install or start a dcgm exporter on :$DCGM_EXPORTER_PORT"; fi
    fi
    if [ -n "$CREDENTIAL" ]; then
        info "would PUT $SERVER/api/v1/nodes/self (with this node's credential) with:"
        build_body update
    else
        info "would POST $SERVER/api/v1/bootstrap/register with:"
        build_body enrol
    fi
    info "would keep the node credential in $STATE_FILE (mode 600) and install $OPT_DIR/uninstall.sh"
    $NO_CHECKS || info "would install $SCRIPTS_DIR/dynamic-check.sh and run it every minute"
}

verify_command() {
    # The header reaches curl on its stdin (-H @-): a credential in curl's arguments is in `ps` while it runs.
    local header="jq -r '\"Authorization: Bearer \" + .node_credential' $STATE_FILE"
    [ "$JSON" = jq ] || header="python3 -c 'import json; print(\"Authorization: Bearer \" + json.load(open(\"$STATE_FILE\"))[\"node_credential\"])'"
    printf '%s | curl -s -H @- "%s/api/v1/targets?hostname=%s"' "$header" "$SERVER" "$TARGET_ID"
}

main() {
    setup_env "$@"
    verify_system
    load_state
    collect_facts
    if $DRY_RUN; then
        dry_run
        return
    fi
    prepare_state_dir
    install_uninstaller
    install_node_exporter
    setup_dcgm_exporter
    register
    setup_ephemeral
    install_checks
    info "done: $TARGET_ID is registered; verify it from this node with:"
    info "  $(verify_command)"
}

main "$@"
