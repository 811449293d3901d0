#!/usr/bin/env bash
# Compiles every CUDA kernel (kernels/cuda/*.cu) for Hopper (sm_90) with nvcc and assembles it
# with ptxas, with warnings as errors, and fails on register spills or stack frames: the CUDA
# sources are checked on every run of the suite, GPU or not. (At run time the worker compiles
# the same sources with NVRTC, the same front end.) Prints ptxas's resource report.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/scripts/lib.sh
source deploy/scripts/cuda.sh
ensure_cuda_compiler
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for cu in kernels/cuda/*.cu; do
  name=$(basename "$cu" .cu)
  nvcc -ptx -arch=sm_90 -std=c++17 -Werror all-warnings -o "$out/$name.ptx" "$cu"
  report=$(ptxas -arch=sm_90 -v -Werror -o "$out/$name.cubin" "$out/$name.ptx" 2>&1)
  printf '%s\n' "$report" | grep -E "Compiling|Used" | sed "s|^|$name: |"
  if printf '%s\n' "$report" | grep -E "bytes (stack frame|spill)" | grep -qv "^ *0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads"; then
    say "$name: spills or a stack frame (see above)"
    status=1
  fi
done
exit $status
