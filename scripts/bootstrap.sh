#!/usr/bin/env bash
# AAMI node bootstrap: registers this host with an AAMI config server as a Prometheus target.
#
#   curl -fsSL $SERVER/bootstrap.sh | bash -s -- --token $TOKEN --server $SERVER
#
# Steps: collect facts, make sure Node Exporter runs (port 9100, textfile collector),
# look for a DCGM Exporter on GPU nodes (port 9400), register with the bootstrap token,
# install dynamic-check.sh with a cron entry (or a systemd timer) and run the first check.
# Re-running it on the same host updates the registration; it never duplicates it.
#
# Every path it touches on the node lives under $AAMI_ROOT (default: /), so it can be
# tried in a scratch directory.
set -euo pipefail

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

Registers this host with an AAMI config server.

Options:
  --server URL               config server, e.g. http://config-server:8080 [AAMI_SERVER]
  --token TOKEN              bootstrap token (visible in `ps`; prefer the two below)
  --token-file FILE          read the bootstrap token from FILE
                             (or set AAMI_BOOTSTRAP_TOKEN in the environment)
  --label KEY=VALUE          extra target label; repeatable (the token's labels win)
  --group GROUP_ID           register into this group (the token's group or one below it)
  --node-exporter-port PORT  Node Exporter port (default 9100) [AAMI_NODE_EXPORTER_PORT]
  --dcgm-exporter-port PORT  DCGM Exporter port (default 9400) [AAMI_DCGM_EXPORTER_PORT]
  --dry-run                  print what would be done and the JSON that would be sent
  --skip-install             do not install or start Node Exporter
  --no-checks                do not install dynamic checks
  -h, --help                 show this help

Environment: AAMI_ROOT installs under another root (default /), for tests and images.
EOF
}

# --- settings ---------------------------------------------------------------------------
setup_env() {
    SERVER=${AAMI_SERVER:-}
    TOKEN=${AAMI_BOOTSTRAP_TOKEN:-}
    TOKEN_FILE=""
    GROUP=""
    LABELS=()
    NODE_EXPORTER_PORT=${AAMI_NODE_EXPORTER_PORT:-9100}
    DCGM_EXPORTER_PORT=${AAMI_DCGM_EXPORTER_PORT:-9400}
    DRY_RUN=false
    SKIP_INSTALL=false
    NO_CHECKS=false

    while [ $# -gt 0 ]; do
        case "$1" in
            --server) SERVER=${2:?--server needs a URL}; shift 2 ;;
            --token) TOKEN=${2:?--token needs a value}; shift 2 ;;
            --token-file) TOKEN_FILE=${2:?--token-file needs a path}; shift 2 ;;
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
    [ -n "$TOKEN" ] || fatal "a bootstrap token is required: --token-file FILE, AAMI_BOOTSTRAP_TOKEN or --token"
    case "$NODE_EXPORTER_PORT$DCGM_EXPORTER_PORT" in *[!0-9]*) fatal "ports must be numbers" ;; esac
    for label in "${LABELS[@]+"${LABELS[@]}"}"; do
        [[ "$label" =~ ^[a-zA-Z_][a-zA-Z0-9_]*=.*$ ]] || fatal "--label must be KEY=VALUE with a Prometheus label name: $label"
    done

    ROOT=${AAMI_ROOT:-}
    ROOT=${ROOT%/}
    STATE_DIR="$ROOT/etc/aami"
    STATE_FILE="$STATE_DIR/node.json"
    SCRIPTS_DIR="$ROOT/opt/aami/scripts"
    TEXTFILE_DIR="$ROOT/var/lib/node_exporter/textfile"
    CRON_FILE="$ROOT/etc/cron.d/aami-dynamic-check"
    SYSTEMD_DIR="$ROOT/etc/systemd/system"
    BIN_DIR="$ROOT/usr/local/bin"
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

# The token goes to curl in a header file, never on its command line (visible in `ps`).
auth_header() {
    local file="$WORK/auth"
    (umask 077 && printf 'Authorization: Bearer %s\n' "$1" >"$file")
    printf '%s' "$file"
}

# json_get FILE KEY: a top-level or dotted field of a JSON document, empty when absent.
json_get() {
    if [ "$JSON" = jq ]; then
        jq -r --arg path "$2" 'getpath($path | split(".")) // empty | tostring' "$1"
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

download_verified() { # URL DEST: fetch URL and URL.sha256 and install DEST only if they agree
    local url=$1 dest=$2 tmp="$WORK/download" expected actual
    curl -fsS "$url" -o "$tmp" || fatal "cannot download $url"
    expected=$(curl -fsS "$url.sha256" | cut -d' ' -f1) || fatal "cannot download $url.sha256"
    actual=$(sha256sum "$tmp" | cut -d' ' -f1)
    if [ -z "$expected" ] || [ "$expected" != "$actual" ]; then fatal "checksum mismatch for $url: refusing to install it"; fi
    mkdir -p "$(dirname "$dest")"
    mv "$tmp" "$dest"
}

# metrics_answer PORT PATTERN: whether localhost:PORT/metrics serves lines matching PATTERN.
# The whole response goes to a file first: piped into `grep -q`, curl dies of SIGPIPE at the
# first match once the page passes the pipe buffer (every real 8-GPU host), and under
# pipefail the probe then says "no" at random.
metrics_answer() {
    local page="$WORK/metrics.$1"
    curl -fsS --max-time 5 -o "$page" "http://127.0.0.1:$1/metrics" 2>/dev/null || return 1
    grep -q "$2" "$page"
}

# --- 1. facts ---------------------------------------------------------------------------
collect_facts() {
    HOSTNAME_FQDN=$(hostname -f 2>/dev/null || hostname)
    HOSTNAME_FQDN=$(printf '%s' "$HOSTNAME_FQDN" | tr '[:upper:]' '[:lower:]')
    # The address this host uses to reach the server is the one Prometheus should scrape.
    IP_ADDRESS=$(curl -fsS -o /dev/null --max-time 10 -w '%{local_ip}' "$SERVER/api/v1/health" 2>/dev/null || true)
    if [ -z "$IP_ADDRESS" ]; then
        curl -fsS -o /dev/null --max-time 10 "$SERVER/api/v1/health" 2>/dev/null || fatal "cannot reach the config server at $SERVER (is it up, and is port 8080 open?)"
        IP_ADDRESS=$(hostname -I 2>/dev/null | awk '{print $1}')
    fi
    [ -n "$IP_ADDRESS" ] || fatal "cannot tell this host's IP address"
    CPU_CORES=$(nproc 2>/dev/null || grep -c ^processor /proc/cpuinfo)
    MEMORY_BYTES=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo) * 1024))
    # shellcheck source=/dev/null
    OS_NAME=$( (. /etc/os-release 2>/dev/null && printf '%s' "${PRETTY_NAME:-}") || true)
    KERNEL=$(uname -r)
    INTERFACES=$(find /sys/class/net -mindepth 1 -maxdepth 1 ! -name lo -printf '%f\n' 2>/dev/null | sort | paste -sd, - || true)

    GPU_VENDOR="" GPU_MODEL="" GPU_COUNT=0
    if command -v nvidia-smi >/dev/null; then
        local gpus
        # One line per GPU: "count, name" (e.g. "1, NVIDIA H100 80GB HBM3").
        if gpus=$(nvidia-smi --query-gpu=count,name --format=csv,noheader 2>/dev/null) && [ -n "$gpus" ]; then
            GPU_VENDOR=nvidia
            local first=${gpus%%$'\n'*}
            GPU_COUNT=$(printf '%s\n' "$first" | cut -d, -f1 | tr -d ' ')
            GPU_MODEL=$(printf '%s\n' "$first" | cut -d, -f2- | sed 's/^ *//; s/ *$//')
        else
            warn "nvidia-smi is installed but lists no GPU (driver not loaded?)"
        fi
    elif command -v rocm-smi >/dev/null; then
        local products
        if products=$(rocm-smi --showproductname --csv 2>/dev/null | tail -n +2 | grep .); then
            GPU_VENDOR=amd
            GPU_COUNT=$(printf '%s\n' "$products" | grep -c .)
            GPU_MODEL=$(printf '%s\n' "${products%%$'\n'*}" | cut -d, -f2)
        fi
    fi
    info "facts: $HOSTNAME_FQDN $IP_ADDRESS, $CPU_CORES cores, $((MEMORY_BYTES / 1024 / 1024 / 1024)) GiB, ${GPU_COUNT} GPU${GPU_MODEL:+ ($GPU_MODEL)}, interfaces ${INTERFACES:-none}"
}

# --- 2. exporters -----------------------------------------------------------------------
find_node_exporter() {
    local candidate
    for candidate in "$BIN_DIR/node_exporter" node_exporter prometheus-node-exporter /usr/bin/prometheus-node-exporter; do
        if command -v "$candidate" >/dev/null 2>&1; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}

install_node_exporter() {
    if metrics_answer "$NODE_EXPORTER_PORT" '^node_'; then
        info "node exporter: already running on :$NODE_EXPORTER_PORT, reusing it"
        return
    fi
    if $SKIP_INSTALL; then
        warn "node exporter: not running on :$NODE_EXPORTER_PORT and --skip-install given; Prometheus will find this target down"
        return
    fi
    local bin arch
    if ! bin=$(find_node_exporter); then
        arch=$(uname -m)
        case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
        info "node exporter: not installed; fetching node_exporter-linux-$arch.tar.gz from $SERVER/downloads"
        if curl -fsS -o /dev/null "$SERVER/downloads/node_exporter-linux-$arch.tar.gz.sha256" 2>/dev/null; then
            download_verified "$SERVER/downloads/node_exporter-linux-$arch.tar.gz" "$WORK/node_exporter.tar.gz"
            mkdir -p "$WORK/ne" "$BIN_DIR"
            tar -xzf "$WORK/node_exporter.tar.gz" -C "$WORK/ne"
            find "$WORK/ne" -type f -name node_exporter -exec install -m 0755 {} "$BIN_DIR/node_exporter" \;
            bin="$BIN_DIR/node_exporter"
            [ -x "$bin" ] || fatal "the node_exporter tarball from the server has no node_exporter binary"
        elif command -v apt-get >/dev/null; then
            info "node exporter: installing the distribution package prometheus-node-exporter"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-node-exporter >/dev/null || fatal "apt-get install prometheus-node-exporter failed"
            # The package starts its own service with another textfile directory: ours replaces it.
            if $HAS_SYSTEMD; then systemctl disable --now prometheus-node-exporter >/dev/null 2>&1 || true; fi
            bin=$(find_node_exporter) || fatal "prometheus-node-exporter installed but not found"
        else
            fatal "node exporter: none installed, none offered by the server (put node_exporter-linux-$arch.tar.gz in its --downloads-dir) and no apt-get"
        fi
    fi
    mkdir -p "$TEXTFILE_DIR"
    local args=("--web.listen-address=:$NODE_EXPORTER_PORT" "--collector.textfile.directory=$TEXTFILE_DIR")
    if $HAS_SYSTEMD; then
        mkdir -p "$SYSTEMD_DIR"
        cat >"$SYSTEMD_DIR/aami-node-exporter.service" <<EOF
[Unit]
Description=Prometheus Node Exporter (installed by AAMI)
After=network-online.target

[Service]
ExecStart=$bin ${args[*]}
Restart=always
DynamicUser=yes

[Install]
WantedBy=multi-user.target
EOF
        systemctl daemon-reload
        systemctl enable --now aami-node-exporter.service >/dev/null
        info "node exporter: $bin as systemd unit aami-node-exporter on :$NODE_EXPORTER_PORT"
    else
        mkdir -p "$STATE_DIR"
        nohup "$bin" "${args[@]}" >"$STATE_DIR/node_exporter.log" 2>&1 &
        echo $! >"$STATE_DIR/node_exporter.pid"
        warn "no systemd: started $bin in the background (pid $!); it will not start again after a reboot"
    fi
    local _
    for _ in $(seq 1 20); do
        metrics_answer "$NODE_EXPORTER_PORT" '^node_' && return
        sleep 0.5
    done
    fatal "node exporter did not answer on :$NODE_EXPORTER_PORT (see $STATE_DIR/node_exporter.log or journalctl -u aami-node-exporter)"
}

detect_dcgm_exporter() {
    DCGM=false
    [ "$GPU_VENDOR" = nvidia ] || return 0
    if metrics_answer "$DCGM_EXPORTER_PORT" '^DCGM_'; then
        DCGM=true
        info "dcgm exporter: running on :$DCGM_EXPORTER_PORT, registering it"
    else
        warn "dcgm exporter: none answers on :$DCGM_EXPORTER_PORT; GPU metrics (DCGM_*) need NVIDIA's dcgm-exporter there. Re-run this script once it runs."
    fi
}

# --- 3. registration --------------------------------------------------------------------
build_request() {
    local rotate=false labels_json exporters='[{"type":"node_exporter","port":'"$NODE_EXPORTER_PORT"'}]'
    [ -s "$STATE_FILE" ] && [ -n "$(json_get "$STATE_FILE" node_credential)" ] || rotate=true
    if $DCGM; then exporters='[{"type":"node_exporter","port":'"$NODE_EXPORTER_PORT"'},{"type":"dcgm_exporter","port":'"$DCGM_EXPORTER_PORT"'}]'; fi
    if [ "$JSON" = jq ]; then
        labels_json=$(printf '%s\n' "${LABELS[@]+"${LABELS[@]}"}" | jq -Rn '[inputs | select(length > 0) | capture("^(?<k>[^=]+)=(?<v>.*)$") | {(.k): .v}] | add // {}')
        jq -n --arg hostname "$HOSTNAME_FQDN" --arg ip "$IP_ADDRESS" --arg group "$GROUP" --argjson labels "$labels_json" \
            --argjson exporters "$exporters" --argjson rotate "$rotate" \
            --argjson cores "$CPU_CORES" --argjson memory "$MEMORY_BYTES" --arg os "$OS_NAME" --arg kernel "$KERNEL" \
            --arg vendor "$GPU_VENDOR" --arg model "$GPU_MODEL" --argjson count "$GPU_COUNT" --arg interfaces "$INTERFACES" \
            '{hostname: $hostname, ip_address: $ip, exporters: $exporters, labels: $labels,
              facts: ({cpu_cores: $cores, memory_bytes: $memory, os: $os, kernel: $kernel, gpu_count: $count,
                       interfaces: ($interfaces | split(",") | map(select(length > 0)))}
                      + (if $vendor != "" then {gpu_vendor: $vendor, gpu_model: $model} else {} end))}
             + (if $group != "" then {group_id: $group} else {} end)
             + (if $rotate then {rotate_credential: true} else {} end)'
    else
        python3 - "$HOSTNAME_FQDN" "$IP_ADDRESS" "$GROUP" "$exporters" "$rotate" "$CPU_CORES" "$MEMORY_BYTES" "$OS_NAME" "$KERNEL" \
            "$GPU_VENDOR" "$GPU_MODEL" "$GPU_COUNT" "$INTERFACES" "${LABELS[@]+"${LABELS[@]}"}" <<'PY'
import json, sys
(hostname, ip, group, exporters, rotate, cores, memory, os_name, kernel, vendor, model, count, interfaces), labels = sys.argv[1:14], sys.argv[14:]
facts = {"cpu_cores": int(cores), "memory_bytes": int(memory), "os": os_name, "kernel": kernel, "gpu_count": int(count),
         "interfaces": [i for i in interfaces.split(",") if i]}
if vendor:
    facts.update(gpu_vendor=vendor, gpu_model=model)
body = {"hostname": hostname, "ip_address": ip, "exporters": json.loads(exporters),
        "labels": dict(label.split("=", 1) for label in labels), "facts": facts}
if group:
    body["group_id"] = group
if rotate == "true":
    body["rotate_credential"] = True
print(json.dumps(body))
PY
    fi
}

register() {
    local request="$WORK/request.json" response="$WORK/response.json" status code message
    build_request >"$request"
    status=$(curl -sS -o "$response" -w '%{http_code}' --max-time 30 -X POST -H "@$(auth_header "$TOKEN")" \
        -H 'Content-Type: application/json' --data-binary "@$request" "$SERVER/api/v1/bootstrap/register") ||
        fatal "cannot reach the config server at $SERVER"
    case "$status" in
        200 | 201) ;;
        *)
            code=$(json_get "$response" error.code 2>/dev/null || true)
            message=$(json_get "$response" error.message 2>/dev/null || true)
            case "$code" in
                token_expired) fatal "registration refused: the bootstrap token has expired ($message)" ;;
                token_revoked) fatal "registration refused: the bootstrap token has been revoked ($message)" ;;
                token_exhausted) fatal "registration refused: the bootstrap token is used up ($message)" ;;
                unauthorized) fatal "registration refused: the bootstrap token is not valid" ;;
                *) fatal "registration failed (HTTP $status${code:+, $code}): ${message:-$(head -c 300 "$response")}" ;;
            esac
            ;;
    esac
    TARGET_ID=$(json_get "$response" target.id)
    local outcome credential
    outcome=$(json_get "$response" outcome)
    credential=$(json_get "$response" node_credential)
    [ -n "$credential" ] || credential=$(json_get "$STATE_FILE" node_credential)
    save_state "$TARGET_ID" "$credential"
    info "registered: target $TARGET_ID ($outcome) in group $(json_get "$response" target.primary_group_id)"
}

save_state() { # TARGET_ID CREDENTIAL: root-only file, written whole
    mkdir -p "$STATE_DIR"
    chmod 700 "$STATE_DIR"
    local tmp="$STATE_DIR/.node.json.tmp"
    (
        umask 077
        if [ "$JSON" = jq ]; then
            jq -n --arg server "$SERVER" --arg target "$1" --arg credential "$2" \
                '{server: $server, target_id: $target, node_credential: $credential}' >"$tmp"
        else
            python3 -c 'import json,sys; print(json.dumps({"server": sys.argv[1], "target_id": sys.argv[2], "node_credential": sys.argv[3]}))' \
                "$SERVER" "$1" "$2" >"$tmp"
        fi
    )
    mv "$tmp" "$STATE_FILE"
}

# --- 4. dynamic checks ------------------------------------------------------------------
install_checks() {
    if $NO_CHECKS; then
        info "checks: skipped (--no-checks)"
        return
    fi
    download_verified "$SERVER/scripts/dynamic-check.sh" "$SCRIPTS_DIR/dynamic-check.sh"
    chmod 0755 "$SCRIPTS_DIR/dynamic-check.sh"
    local run="$SCRIPTS_DIR/dynamic-check.sh"
    [ -z "$ROOT" ] || run="AAMI_ROOT=$ROOT $run"
    # A cron daemon that reads /etc/cron.d (cron, cronie) has created that directory.
    if [ -d "$ROOT/etc/cron.d" ]; then
        mkdir -p "$(dirname "$CRON_FILE")"
        printf '# Installed by AAMI bootstrap.sh: dynamic checks every minute.\n* * * * * root %s >/dev/null 2>&1\n' "$run" >"$CRON_FILE"
        chmod 0644 "$CRON_FILE"
        info "checks: $CRON_FILE runs dynamic-check.sh every minute"
    elif $HAS_SYSTEMD; then
        mkdir -p "$SYSTEMD_DIR"
        printf '[Unit]\nDescription=AAMI dynamic checks\n\n[Service]\nType=oneshot\nExecStart=%s\n' "$SCRIPTS_DIR/dynamic-check.sh" >"$SYSTEMD_DIR/aami-dynamic-check.service"
        printf '[Unit]\nDescription=AAMI dynamic checks every minute\n\n[Timer]\nOnCalendar=minutely\n\n[Install]\nWantedBy=timers.target\n' >"$SYSTEMD_DIR/aami-dynamic-check.timer"
        systemctl daemon-reload
        systemctl enable --now aami-dynamic-check.timer >/dev/null
        info "checks: no cron; systemd timer aami-dynamic-check.timer runs dynamic-check.sh every minute"
    else
        warn "checks: neither cron nor systemd here; run $SCRIPTS_DIR/dynamic-check.sh from your own scheduler"
    fi
    AAMI_ROOT="$ROOT" "$SCRIPTS_DIR/dynamic-check.sh" || warn "checks: the first run of dynamic-check.sh failed (see: grep aami /var/log/syslog)"
    info "checks: first run done, results in $TEXTFILE_DIR"
}

dry_run() {
    DCGM=false
    [ "$GPU_VENDOR" != nvidia ] || ! metrics_answer "$DCGM_EXPORTER_PORT" '^DCGM_' || DCGM=true
    info "dry run: nothing is installed, started or registered"
    if metrics_answer "$NODE_EXPORTER_PORT" '^node_'; then info "would reuse the node exporter on :$NODE_EXPORTER_PORT"
    elif $SKIP_INSTALL; then info "would leave the node exporter alone (--skip-install)"
    else info "would install or start a node exporter on :$NODE_EXPORTER_PORT with textfiles in $TEXTFILE_DIR"; fi
    info "would POST $SERVER/api/v1/bootstrap/register with:"
    build_request
    info "would keep the node credential in $STATE_FILE (mode 600)"
    $NO_CHECKS || info "would install $SCRIPTS_DIR/dynamic-check.sh and run it every minute"
}

main() {
    setup_env "$@"
    verify_system
    collect_facts
    if $DRY_RUN; then
        dry_run
        return
    fi
    install_node_exporter
    detect_dcgm_exporter
    register
    install_checks
    info "done: $HOSTNAME_FQDN is registered; check it with: curl $SERVER/api/v1/targets/$TARGET_ID"
}

main "$@"
