# The CUDA toolchain from PyPI (CUDA 13.0, the lent GPU machines' driver line), for the CUDA
# build and the kernel compile check. No GPU is needed for either. Sourced, not run; needs lib.sh.
#
#   ensure_cuda_compiler  nvcc, ptxas, cicc and the runtime headers (about 100 MB of wheels)
#   ensure_cuda_toolkit   that, plus CCCL (headers candle's kernels include), NVRTC, cuBLAS, cuRAND
#                         and the link-time stub of libcuda (the driver library: the real one is
#                         on the GPU machine)
#
# Everything lands in $CUDA_CACHE (default ~/.cache/reelforge/cuda) and is downloaded once.

CUDA_CACHE="${CUDA_CACHE:-$HOME/.cache/reelforge/cuda}"
export CUDA_ROOT="$CUDA_CACHE/nvidia/cu13"
CUDA_VERSION_PIN="13.0.*"

# _cuda_wheels NAME...: downloads and unpacks the named NVIDIA wheels (pinned to 13.0) unless
# their marker file is there.
_cuda_wheels() {
  local dl="$CUDA_CACHE/wheels" todo=()
  mkdir -p "$dl"
  for name in "$@"; do
    [ -e "$CUDA_CACHE/.have-$name" ] || todo+=("$name")
  done
  [ ${#todo[@]} -eq 0 ] && return 0
  say "downloading CUDA ${CUDA_VERSION_PIN} wheels from PyPI: ${todo[*]}"
  local specs=()
  for name in "${todo[@]}"; do
    case "$name" in
      nvidia-curand) specs+=("nvidia-curand==10.4.*") ;;
      *) specs+=("$name==$CUDA_VERSION_PIN") ;;
    esac
  done
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$dl" "${specs[@]}"
  for name in "${todo[@]}"; do
    local whl
    whl=$(ls "$dl"/"${name//-/_}"-*.whl | head -n 1)
    (cd "$CUDA_CACHE" && python3 -m zipfile -e "$whl" . )
    touch "$CUDA_CACHE/.have-$name"
  done
  chmod +x "$CUDA_ROOT"/bin/* "$CUDA_ROOT"/nvvm/bin/* 2>/dev/null || true
}

ensure_cuda_compiler() {
  _cuda_wheels nvidia-cuda-nvcc nvidia-nvvm nvidia-cuda-crt nvidia-cuda-runtime
  export PATH="$CUDA_ROOT/bin:$PATH"
}

ensure_cuda_toolkit() {
  ensure_cuda_compiler
  _cuda_wheels nvidia-cuda-cccl nvidia-cuda-nvrtc nvidia-cublas nvidia-curand
  # The linker looks for unversioned names; the binary records the versioned sonames, which the
  # GPU machine's own CUDA libraries carry.
  local lib="$CUDA_ROOT/lib"
  for so in libcudart.so.13 libnvrtc.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10; do
    # (Only when missing: a new link would make cargo rebuild cudarc and all that depends on it.)
    [ -e "$lib/${so%%.so.*}.so" ] || ln -s "$so" "$lib/${so%%.so.*}.so"
  done
  # libcuda comes with the driver, not the toolkit: link against a stub with its soname whose
  # symbols are the driver functions cudarc declares (as the toolkit's own stubs/libcuda.so).
  if [ ! -e "$lib/stubs/libcuda.so" ]; then
    local sys
    sys=$(ls -d "$HOME"/.cargo/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs 2>/dev/null | tail -n 1)
    if [ -z "$sys" ]; then
      cargo fetch --locked >/dev/null
      sys=$(ls -d "$HOME"/.cargo/registry/src/*/cudarc-0.19.*/src/driver/sys/mod.rs | tail -n 1)
    fi
    mkdir -p "$lib/stubs"
    grep -o 'pub unsafe fn cu[A-Za-z0-9_]*' "$sys" | awk '{print "void " $4 "(void) {}"}' | sort -u \
      >"$lib/stubs/libcuda.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$lib/stubs/libcuda.so" "$lib/stubs/libcuda.c"
  fi
  # Under its soname too, for programs here that link libcuda but never call it (nvrtc-check.sh).
  [ -e "$lib/stubs/libcuda.so.1" ] || ln -s libcuda.so "$lib/stubs/libcuda.so.1"
  export CUDA_HOME="$CUDA_ROOT" CUDA_PATH="$CUDA_ROOT"
}
