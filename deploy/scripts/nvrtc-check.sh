#!/usr/bin/env bash
# Compiles every CUDA kernel with NVRTC, through the same code path the worker uses at run time
# (`kernels::cuda::ptx`), on this machine: no GPU or driver needed (the CUDA build links libcuda;
# the loader is given the stub deploy/scripts/cuda.sh generates, which nothing here calls). Checks
# what nvcc (check-kernels.sh) cannot: that the sources need no header NVRTC lacks.
#
#   bash deploy/scripts/nvrtc-check.sh [compute_90 compute_80 …]
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/scripts/lib.sh
source deploy/scripts/cuda.sh
ensure_cuda_toolkit
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
cargo build --locked -q -p reelforge-kernels --features cuda --example nvrtc_check
LD_LIBRARY_PATH="$CUDA_ROOT/lib:$CUDA_ROOT/lib/stubs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
  "$CARGO_TARGET_DIR/debug/examples/nvrtc_check" "$@"
