#!/usr/bin/env bash
# Used space and inodes of each path in the arguments (default /), as ratios 0..1, and
# whether the path exists at all. Arguments are data: each must be an absolute path without
# control characters, quotes or backslashes, else the check fails.
set -euo pipefail
[ $# -gt 0 ] || set -- /
path='^/[^[:cntrl:]"\\]*$'
for mount in "$@"; do
    if [ "${#mount}" -gt 4096 ] || [[ ! "$mount" =~ $path ]]; then
        echo "disk-usage: not an absolute path without control characters, quotes or backslashes: $(printf %q "${mount:0:80}")" >&2
        exit 1
    fi
done
ratio() { # METRIC DF_FLAGS PATH
    df "$2" -- "$3" | MOUNT="$3" awk -v metric="$1" 'NR == 2 && $2 > 0 { printf "%s{mountpoint=\"%s\"} %.4f\n", metric, ENVIRON["MOUNT"], $3 / $2 }'
}
echo '# HELP aami_disk_path_present Whether the path exists (a missing one has no usage figures).'
echo '# TYPE aami_disk_path_present gauge'
for mount in "$@"; do
    if [ -e "$mount" ]; then present=1; else present=0; fi
    printf 'aami_disk_path_present{mountpoint="%s"} %d\n' "$mount" "$present"
done
echo '# HELP aami_disk_used_ratio Used fraction of the file system space.'
echo '# TYPE aami_disk_used_ratio gauge'
for mount in "$@"; do
    [ ! -e "$mount" ] || ratio aami_disk_used_ratio -P "$mount"
done
echo '# HELP aami_disk_inodes_used_ratio Used fraction of the file system inodes.'
echo '# TYPE aami_disk_inodes_used_ratio gauge'
for mount in "$@"; do
    [ ! -e "$mount" ] || ratio aami_disk_inodes_used_ratio -Pi "$mount"
done
