#!/usr/bin/env bash
# Per path argument (default /): 1 when it is a mount point, 0 when it is not (the share is
# not mounted); and 1 when it is mounted read-only. Arguments are data: each must be an
# absolute path without control characters, quotes or backslashes, else the check fails.
set -euo pipefail
[ $# -gt 0 ] || set -- /
path='^/[^[:cntrl:]"\\]*$'
for mount in "$@"; do
    if [ "${#mount}" -gt 4096 ] || [[ ! "$mount" =~ $path ]]; then
        echo "mount: not an absolute path without control characters, quotes or backslashes: $(printf %q "${mount:0:80}")" >&2
        exit 1
    fi
done
# /proc/mounts writes a space in a path as \040 (and a tab, newline and backslash as octal too).
options_of() { # PATH: the mount options of PATH when it is a mount point, else nothing
    MOUNT="$1" awk '{ gsub(/\\040/, " ", $2) } $2 == ENVIRON["MOUNT"] { options = $4 } END { if (options != "") print options }' /proc/mounts
}
echo '# HELP aami_mount_present Whether the path is a mounted file system.'
echo '# TYPE aami_mount_present gauge'
echo '# HELP aami_mount_read_only Whether the mounted file system is read-only.'
echo '# TYPE aami_mount_read_only gauge'
for mount in "$@"; do
    options=$(options_of "$mount")
    if [ -n "$options" ]; then
        printf 'aami_mount_present{mountpoint="%s"} 1\n' "$mount"
        case ",$options," in *,ro,*) read_only=1 ;; *) read_only=0 ;; esac
        printf 'aami_mount_read_only{mountpoint="%s"} %d\n' "$mount" "$read_only"
    else
        printf 'aami_mount_present{mountpoint="%s"} 0\n' "$mount"
    fi
done
