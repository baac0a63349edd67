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
echo '# HELP aami_nvme_critical_warning NVMe SMART critical warning bits (0 is healthy).'
echo '# TYPE aami_nvme_critical_warning gauge'
echo '# HELP aami_nvme_media_errors_total NVMe media and data integrity errors.'
echo '# TYPE aami_nvme_media_errors_total counter'
echo '# HELP aami_nvme_percentage_used NVMe endurance used, in percent.'
echo '# TYPE aami_nvme_percentage_used gauge'
for dev in /dev/nvme[0-9]; do
    [ -e "$dev" ] || continue
    nvme smart-log "$dev" 2>/dev/null | awk -v d="${dev##*/}" -F: '
        { key = $1; gsub(/^[ \t]+|[ \t]+$/, "", key); val = $2; gsub(/[^0-9]/, "", val) }
        key == "critical_warning" { printf "aami_nvme_critical_warning{device=\"%s\"} %d\n", d, val }
        key == "media_errors" { printf "aami_nvme_media_errors_total{device=\"%s\"} %d\n", d, val }
        key == "percentage_used" { printf "aami_nvme_percentage_used{device=\"%s\"} %d\n", d, val }'
done
