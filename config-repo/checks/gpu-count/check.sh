#!/usr/bin/env bash
# Compares the GPUs nvidia-smi lists with the expected count (first argument; empty: unknown).
set -euo pipefail
expected=${1:-}
command -v nvidia-smi >/dev/null || { echo 'nvidia-smi not found' >&2; exit 1; }
visible=$(nvidia-smi --query-gpu=name --format=csv,noheader | grep -c . || true)
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
