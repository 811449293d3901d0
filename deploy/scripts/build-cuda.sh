#!/usr/bin/env bash
# Builds the CUDA-enabled programs on this machine (no GPU needed): the toolkit comes from PyPI
# (deploy/scripts/cuda.sh), candle's kernels are compiled by nvcc for $CUDA_COMPUTE_CAP (default
# 90: H100/H200), and cudarc links libcuda at load time (the stub here, the driver there). Our
# own kernels are compiled at run time by NVRTC on the GPU.
#
#   bash deploy/scripts/build-cuda.sh           # `reelforge` and the `gpu_check` example
#
# The CPU build (the README's commands, CI) never enables the `cuda` feature. The outputs are
# copied, stripped and gzipped, to .gpu/ (ignored by git) for the device tool to carry; the GPU
# machine runs deploy/scripts/gpu-run.sh on them.
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
mkdir -p .gpu
for bin in examples/gpu_check reelforge; do
  name=$(basename "$bin")
  strip -o ".gpu/$name" "$CARGO_TARGET_DIR/debug/$bin"
  gzip -9 -f ".gpu/$name"
done
# Shared libraries the programs need that a CUDA image may lack (FFmpeg 5.1 and its codecs
# from Debian): everything ldd resolves outside the CUDA libraries and glibc.
mkdir -p .gpu/lib
for so in $(ldd "$CARGO_TARGET_DIR/debug/examples/gpu_check" "$CARGO_TARGET_DIR/debug/reelforge" \
  | awk '/=> \// {print $3}' | sort -u); do
  case "$(basename "$so")" in
    libc.so*|libm.so*|libdl.so*|librt.so*|libpthread.so*|ld-linux*|libgcc_s.so*|libstdc++.so*) ;;
    libcuda.so*|libnvrtc*|libcublas*|libcurand*|libcudart*) ;;
    *) cp -L "$so" .gpu/lib/ ;;
  esac
done
tar -C .gpu -czf .gpu/lib.tar.gz lib && rm -rf .gpu/lib
du -sh .gpu/* >&2
say "built; on the GPU machine: bash deploy/scripts/gpu-run.sh (carry .gpu)"
