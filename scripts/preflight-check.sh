#!/usr/bin/env bash
# AAMI preflight: can this host be registered? One PASS/WARN/FAIL line per check; exit 1 on any FAIL.
#
#   preflight-check.sh --mode node --server http://config-server:8080 [--json]
set -uo pipefail

usage() {
    cat <<'USAGE'
Usage: preflight-check.sh --mode node --server URL [--json]

Checks CPU, memory and disk, the tools the bootstrap needs (curl, systemctl, tar), that
the config server answers, that ports 9100 and 9400 are free (or held by an exporter),
and which GPUs the host has. Prints one PASS, WARN or FAIL line per check (a JSON array
with --json) and exits 1 if anything failed.

Options:
  --mode node           what to check (node is the only mode)
  --server URL          the config server
  --node-exporter-port  default 9100
  --dcgm-exporter-port  default 9400
  --json                machine-readable output (needs jq or python3)
USAGE
}

MODE="" SERVER="" JSON_OUT=false NODE_PORT=9100 DCGM_PORT=9400
while [ $# -gt 0 ]; do
    case "$1" in
        --mode | --server | --node-exporter-port | --dcgm-exporter-port)
            # An option given last with no value: usage, not a loop that never ends (shift 2 fails there).
            [ $# -ge 2 ] || { usage >&2; echo "preflight-check: $1 needs a value" >&2; exit 2; }
            case "$1" in
                --mode) MODE=$2 ;;
                --server) SERVER=$2 ;;
                --node-exporter-port) NODE_PORT=$2 ;;
                --dcgm-exporter-port) DCGM_PORT=$2 ;;
            esac
            shift 2
            ;;
        --json) JSON_OUT=true; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; echo "preflight-check: unknown option $1" >&2; exit 2 ;;
    esac
done
[ "$MODE" = node ] || { usage >&2; echo "preflight-check: --mode node is required" >&2; exit 2; }
[ -n "$SERVER" ] || { usage >&2; echo "preflight-check: --server URL is required" >&2; exit 2; }
SERVER=${SERVER%/}

RESULTS=() # "STATUS<TAB>check<TAB>detail"
failed=false
result() {
    RESULTS+=("$1"$'\t'"$2"$'\t'"$3")
    [ "$1" != FAIL ] || failed=true
}

# --- resources
cores=$(nproc 2>/dev/null || echo 0)
if [ "$cores" -ge 2 ]; then result PASS cpu "$cores cores"; elif [ "$cores" -ge 1 ]; then result WARN cpu "$cores core"; else result FAIL cpu "cannot count CPUs"; fi
mem_mb=$(($(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0) / 1024))
if [ "$mem_mb" -ge 1024 ]; then result PASS memory "${mem_mb} MiB"; elif [ "$mem_mb" -ge 256 ]; then result WARN memory "${mem_mb} MiB (exporters need ~100 MiB)"; else result FAIL memory "${mem_mb} MiB"; fi
disk_mb=$(df -Pm / 2>/dev/null | awk 'NR == 2 {print $4}')
if [ "${disk_mb:-0}" -ge 1024 ]; then result PASS disk "${disk_mb} MiB free on /"; elif [ "${disk_mb:-0}" -ge 200 ]; then result WARN disk "${disk_mb} MiB free on /"; else result FAIL disk "${disk_mb:-?} MiB free on /"; fi

# --- tools
if command -v curl >/dev/null; then result PASS curl "$(command -v curl)"; else result FAIL curl "missing: the bootstrap needs curl"; fi
if command -v systemctl >/dev/null; then result PASS systemctl "$(command -v systemctl)"; else result WARN systemctl "missing: exporters will run without a service manager"; fi
if command -v tar >/dev/null; then result PASS tar "$(command -v tar)"; else result WARN tar "missing: a node_exporter tarball cannot be unpacked"; fi
if command -v jq >/dev/null || command -v python3 >/dev/null; then result PASS json "$(command -v jq || command -v python3)"; else result FAIL json "missing: the bootstrap needs jq or python3"; fi

# --- server
if command -v curl >/dev/null && status=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$SERVER/api/v1/health" 2>/dev/null); then
    case "$status" in
        200) result PASS server "$SERVER answers" ;;
        *) result FAIL server "$SERVER/api/v1/health answered HTTP $status" ;;
    esac
else
    result FAIL server "cannot reach $SERVER (is port 8080 open from this host?)"
fi

# --- ports: free, or held by the exporter that belongs there
# The page is read whole before it is searched: piping curl into `grep -q` fails at random
# under pipefail once /metrics passes the pipe buffer (curl dies of SIGPIPE).
PAGE=$(mktemp)
trap 'rm -f "$PAGE"' EXIT
port_check() { # NAME PORT PATTERN
    local status
    status=$(curl -sS --max-time 20 -o "$PAGE" -w '%{http_code}' "http://127.0.0.1:$2/metrics" 2>/dev/null) || status=none
    if [ "$status" = 200 ] && grep -q "$3" "$PAGE"; then
        result PASS "port_$2" "held by a running $1 (it will be reused)"
    elif [ "$status" = 503 ]; then
        # node_exporter answers 503 past --web.max-requests parallel scrapes: busy, not absent.
        result WARN "port_$2" "answers HTTP 503 (an exporter at its limit of parallel scrapes?); run this again"
    elif (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
        result FAIL "port_$2" "in use by something that is not $1"
    else
        result PASS "port_$2" "free"
    fi
}
port_check node_exporter "$NODE_PORT" '^node_'
port_check dcgm_exporter "$DCGM_PORT" '^DCGM_'

# --- GPUs
# Where the GPU stacks put their tools, off the PATH cloud-init and systemd give (as bootstrap.sh
# looks), and bounded as it is: nvidia-smi hangs on a GPU that fell off the bus.
PATH="$PATH:/usr/local/nvidia/bin:/usr/local/cuda/bin:/opt/rocm/bin"
nvidia_on_bus=0
for device in /sys/bus/pci/devices/*; do
    if [ "$(cat "$device/vendor" 2>/dev/null)" = 0x10de ] && [[ "$(cat "$device/class" 2>/dev/null)" == 0x03* ]]; then nvidia_on_bus=$((nvidia_on_bus + 1)); fi
done
if command -v nvidia-smi >/dev/null && gpus=$(timeout -k 5 30 nvidia-smi --query-gpu=count,name --format=csv,noheader 2>/dev/null) && [ -n "$gpus" ]; then
    result PASS gpu "NVIDIA: $(printf '%s\n' "${gpus%%$'\n'*}" | sed 's/, / x /')"
elif [ "$nvidia_on_bus" -gt 0 ] && command -v nvidia-smi >/dev/null; then
    result FAIL gpu "$nvidia_on_bus NVIDIA GPU(s) on the PCI bus, but nvidia-smi does not list them (driver and library out of step? a GPU lost?): bootstrap refuses to register this node as one without GPUs"
elif [ "$nvidia_on_bus" -gt 0 ]; then
    result WARN gpu "$nvidia_on_bus NVIDIA GPU(s) on the PCI bus, but no nvidia-smi: bootstrap would register a node without GPUs until the driver is in"
elif command -v rocm-smi >/dev/null && gpus=$(timeout -k 5 30 rocm-smi --showproductname --csv 2>/dev/null) && grep -q '^card[0-9]' <<<"$gpus"; then
    result PASS gpu "AMD: $(grep -c '^card[0-9]' <<<"$gpus") GPUs (rocm-smi)"
elif command -v nvidia-smi >/dev/null; then
    result WARN gpu "nvidia-smi is installed but lists no GPU, and the PCI bus holds none"
else
    result PASS gpu "none found: a CPU-only node"
fi

if $JSON_OUT; then
    if command -v jq >/dev/null; then
        printf '%s\n' "${RESULTS[@]}" | jq -Rn '[inputs | split("\t") | {status: .[0], check: .[1], detail: .[2]}]'
    else
        printf '%s\n' "${RESULTS[@]}" | python3 -c 'import json,sys; print(json.dumps([dict(zip(("status","check","detail"), l.rstrip("\n").split("\t"))) for l in sys.stdin], indent=2))'
    fi
else
    for line in "${RESULTS[@]}"; do
        IFS=$'\t' read -r status check detail <<<"$line"
        printf '%-4s  %-10s %s\n' "$status" "$check" "$detail"
    done
fi
$failed && exit 1
exit 0
