#!/usr/bin/env bash
# Runs on the lent GPU machine (through the device tool, with `.gpu` carried from
# deploy/scripts/build-cuda.sh): unpacks `gpu_check`, points the loader at the image's own CUDA 13
# libraries (the PyPI packages beside its PyTorch) and runs it: the device choice (its log line),
# every kernel against the CPU, GB/s per op, CLIP and MCVD on GPU against CPU. Output goes to
# stdout and to $OUT/gpu_check.txt; the exit status is gpu_check's.
#
#   bash deploy/scripts/gpu-run.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$(mktemp -d)}"
work=$(mktemp -d)
gunzip -c .gpu/gpu_check.gz >"$work/gpu_check"
chmod +x "$work/gpu_check"
cudalib=$(dirname "$(find / -path '*nvidia/cu13/lib/libcublas.so.13' -print -quit 2>/dev/null)")
export LD_LIBRARY_PATH="$cudalib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/nvidia-smi.txt"
echo "CUDA libraries: $cudalib"
"$work/gpu_check" "$@" 2>&1 | tee "$OUT/gpu_check.txt"
