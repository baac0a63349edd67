#!/usr/bin/env bash
# 1 when the path is a mount point, 0 when it is not (the share is not mounted).
set -euo pipefail
echo '# HELP aami_mount_present Whether the path is a mounted file system.'
echo '# TYPE aami_mount_present gauge'
for mount in "$@"; do
    if awk -v m="$mount" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; then present=1; else present=0; fi
    printf 'aami_mount_present{mountpoint="%s"} %d\n' "$mount" "$present"
done
