#!/usr/bin/env bash
# Compares the GPUs the driver lists (nvidia-smi, else rocm-smi) with the expected count:
# the first argument, a whole number, or empty when unknown. The argument is data: anything
# but digits fails the check, and it never reaches shell arithmetic.
set -euo pipefail
[ $# -le 1 ] || { echo "gpu-count: takes at most one argument (the expected count), got $#" >&2; exit 1; }
expected=${1:-}
if [ -n "$expected" ] && [[ ! "$expected" =~ ^[0-9]{1,6}$ ]]; then
    echo "gpu-count: the expected GPU count (the gpu_count label) must be a whole number, got: $(printf %q "${expected:0:80}")" >&2
    exit 1
fi
if command -v nvidia-smi >/dev/null; then
    # One line per GPU, "count, name": the count is the first field of the first line.
    listing=$(nvidia-smi --query-gpu=count,name --format=csv,noheader)
    visible=${listing%%,*}
    visible=${visible//[[:space:]]/}
elif command -v rocm-smi >/dev/null; then
    # A header line starting "device," then one "cardN,..." line per GPU.
    listing=$(rocm-smi --showproductname --csv)
    visible=$(grep -c '^card[0-9]' <<<"$listing" || true)
else
    echo 'gpu-count: neither nvidia-smi nor rocm-smi is installed' >&2
    exit 1
fi
[[ "$visible" =~ ^[0-9]{1,6}$ ]] || { echo "gpu-count: cannot read a GPU count from the driver's listing" >&2; exit 1; }
number() { # DIGITS without leading zeros, so "08" and "8" compare equal (no shell arithmetic)
    local digits=${1#"${1%%[!0]*}"}
    printf '%s' "${digits:-0}"
}
echo '# HELP aami_gpu_count_visible GPUs the driver lists.'
echo '# TYPE aami_gpu_count_visible gauge'
echo "aami_gpu_count_visible $visible"
if [ -n "$expected" ]; then
    echo '# HELP aami_gpu_count_expected GPUs the target is registered with (its gpu_count label).'
    echo '# TYPE aami_gpu_count_expected gauge'
    echo "aami_gpu_count_expected $(number "$expected")"
    echo '# HELP aami_gpu_count_match 1 when the driver lists as many GPUs as expected.'
    echo '# TYPE aami_gpu_count_match gauge'
    if [ "$(number "$visible")" = "$(number "$expected")" ]; then echo 'aami_gpu_count_match 1'; else echo 'aami_gpu_count_match 0'; fi
fi
