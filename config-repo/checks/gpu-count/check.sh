#!/usr/bin/env bash
# Compares the GPUs nvidia-smi lists with the expected count (first argument; empty: unknown).
set -euo pipefail
expected=${1:-}
command -v nvidia-smi >/dev/null || { echo 'nvidia-smi not found' >&2; exit 1; }
# One line per GPU, "count, name": the count is the first field.
visible=$(nvidia-smi --query-gpu=count,name --format=csv,noheader | head -n1 | cut -d, -f1 | tr -d ' ')
visible=${visible:-0}
echo '# HELP aami_gpu_count_visible GPUs the NVIDIA driver lists.'
echo '# TYPE aami_gpu_count_visible gauge'
echo "aami_gpu_count_visible $visible"
if [ -n "$expected" ]; then
    echo '# HELP aami_gpu_count_expected GPUs the target is registered with (its gpu_count label).'
    echo '# TYPE aami_gpu_count_expected gauge'
    echo "aami_gpu_count_expected $expected"
    echo '# HELP aami_gpu_count_match 1 when the driver lists as many GPUs as expected.'
    echo '# TYPE aami_gpu_count_match gauge'
    echo "aami_gpu_count_match $((visible == expected))"
fi
