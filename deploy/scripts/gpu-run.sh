#!/usr/bin/env bash
# Runs on the lent GPU machine (through the device tool, with `.gpu` carried from
# deploy/scripts/build-cuda.sh): unpacks the CUDA build, points the loader at the image's own
# CUDA 13 libraries (the PyPI packages beside its PyTorch) and the carried FFmpeg libraries, runs
# the kernel checks and benchmarks (the `gpu_check` example), then `reelforge demo --device cuda`
# end to end (its log names the device). Output goes to stdout and to $OUT.
#
#   bash deploy/scripts/gpu-run.sh [--quick]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$(mktemp -d)}"
work=$(mktemp -d)
for f in gpu_check reelforge; do
  gunzip -c ".gpu/$f.gz" >"$work/$f"
  chmod +x "$work/$f"
done
tar -C "$work" -xzf .gpu/lib.tar.gz
cudalib=$(dirname "$(find / -path '*nvidia/cu13/lib/libcublas.so.13' -print -quit 2>/dev/null)")
export LD_LIBRARY_PATH="$cudalib:$work/lib:${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/nvidia-smi.txt"
echo "CUDA libraries: $cudalib"
"$work/gpu_check" "$@" 2>&1 | tee "$OUT/gpu_check.txt"
# The whole demo (scheduler, worker, MCVD and CLIP on the GPU) end to end, with its device line.
(cd "$work" && timeout 300 ./reelforge demo --device cuda 2>&1) | tee "$OUT/demo.txt" | grep -E "compute device|error|ERROR|outputs|│" || true
