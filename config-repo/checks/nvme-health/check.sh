#!/usr/bin/env bash
# NVMe SMART health per controller. Without nvme-cli or NVMe devices it reports that, and succeeds.
set -euo pipefail
[ $# -eq 0 ] || { echo "nvme-health: takes no arguments, got $#" >&2; exit 1; }
echo '# HELP aami_nvme_cli_present Whether nvme-cli is installed.'
echo '# TYPE aami_nvme_cli_present gauge'
if ! command -v nvme >/dev/null; then
    echo 'aami_nvme_cli_present 0'
    exit 0
fi
echo 'aami_nvme_cli_present 1'
# Controllers nvme0 to nvme99 (not their namespaces, nvme0n1): a GPU server holds more than
# ten. One whose smart-log fails is reported as such, and the others are still read. Each
# metric's lines are written together, as the text format wants them.
ok='' smart=''
for dev in /dev/nvme[0-9] /dev/nvme[0-9][0-9]; do
    [ -e "$dev" ] || continue
    if log=$(nvme smart-log "$dev" 2>/dev/null); then
        ok+="aami_nvme_smart_log_ok{device=\"${dev##*/}\"} 1"$'\n'
        smart+=$(awk -v d="${dev##*/}" -F: '
            { key = $1; gsub(/^[ \t]+|[ \t]+$/, "", key); val = $2; gsub(/[^0-9]/, "", val) }
            key == "critical_warning" { printf "aami_nvme_critical_warning{device=\"%s\"} %d\n", d, val }
            key == "media_errors" { printf "aami_nvme_media_errors_total{device=\"%s\"} %d\n", d, val }
            key == "percentage_used" { printf "aami_nvme_percentage_used{device=\"%s\"} %d\n", d, val }' <<<"$log")$'\n'
    else
        ok+="aami_nvme_smart_log_ok{device=\"${dev##*/}\"} 0"$'\n'
    fi
done
echo '# HELP aami_nvme_smart_log_ok Whether nvme smart-log answered for the controller.'
echo '# TYPE aami_nvme_smart_log_ok gauge'
printf '%s' "$ok"
for metric in critical_warning:gauge:'NVMe SMART critical warning bits (0 is healthy).' media_errors_total:counter:'NVMe media and data integrity errors.' percentage_used:gauge:'NVMe endurance used, in percent.'; do
    IFS=: read -r name type help <<<"$metric"
    echo "# HELP aami_nvme_$name $help"
    echo "# TYPE aami_nvme_$name $type"
    grep "^aami_nvme_$name{" <<<"$smart" || true
done
