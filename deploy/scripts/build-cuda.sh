#!/usr/bin/env bash
# Builds the CUDA-enabled programs on this machine (no GPU needed): the toolkit comes from PyPI
# (deploy/scripts/cuda.sh), candle's kernels are compiled by nvcc for $CUDA_COMPUTE_CAP (default
# 90: H100/H200), and cudarc links libcuda at load time (the stub here, the driver there). Our
# own kernels are compiled at run time by NVRTC on the GPU.
#
#   bash deploy/scripts/build-cuda.sh           # `reelforge` and the `gpu_check` example
#
# The CPU build (the README's commands, CI) never enables the `cuda` feature.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/scripts/lib.sh
ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}"
source deploy/scripts/cuda.sh
ensure_cuda_toolkit
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
say "building with --features cuda (compute capability $CUDA_COMPUTE_CAP; target dir: $CARGO_TARGET_DIR)"
cargo build --locked -p reelforge-worker --features cuda --example gpu_check
cargo build --locked -p reelforge --features cuda --bin reelforge
# What the GPU machine runs travels stripped and gzipped in .gpu/ (the device tool carries at most
# 64 MiB). `gpu_check` needs only libc, libstdc++ and the CUDA libraries, which the GPU image has;
# `reelforge` also links Debian's FFmpeg 5.1 and its codecs (about 100 MB), which a CUDA image
# lacks, so it stays here: deploy it through deploy/docker/worker.Dockerfile.
mkdir -p .gpu
strip -o .gpu/gpu_check "$CARGO_TARGET_DIR/debug/examples/gpu_check"
gzip -9 -f .gpu/gpu_check
du -sh .gpu/* >&2
say "built $CARGO_TARGET_DIR/debug/reelforge and .gpu/gpu_check.gz; on the GPU machine: bash deploy/scripts/gpu-run.sh (carry .gpu)"
