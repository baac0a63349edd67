#!/usr/bin/env bash
# Used space and inodes of each mount point in the arguments (default /), as ratios 0..1.
set -euo pipefail
[ $# -gt 0 ] || set -- /
echo '# HELP aami_disk_used_ratio Used fraction of the file system space.'
echo '# TYPE aami_disk_used_ratio gauge'
for mount in "$@"; do
    [ -e "$mount" ] || { echo "disk-usage: $mount does not exist" >&2; continue; }
    df -P "$mount" | awk -v m="$mount" 'NR == 2 && $2 > 0 { printf "aami_disk_used_ratio{mountpoint=\"%s\"} %.4f\n", m, $3 / $2 }'
done
echo '# HELP aami_disk_inodes_used_ratio Used fraction of the file system inodes.'
echo '# TYPE aami_disk_inodes_used_ratio gauge'
for mount in "$@"; do
    [ -e "$mount" ] || continue
    df -Pi "$mount" | awk -v m="$mount" 'NR == 2 && $2 > 0 { printf "aami_disk_inodes_used_ratio{mountpoint=\"%s\"} %.4f\n", m, $3 / $2 }'
done
