# syntax=docker/dockerfile:1
# The worker image: `reelforge` built on the CUDA development image and run on the CUDA runtime
# image of the same Ubuntu release, so the FFmpeg libraries it links (Ubuntu 24.04: FFmpeg 6.1)
# are the ones installed at run time. The NVIDIA container toolkit mounts the driver and
# `nvidia-smi` (NVIDIA_DRIVER_CAPABILITIES includes utility), which the GPU gauges read.
# Build from the repository root:
#   docker build -f deploy/docker/worker.Dockerfile -t reelforge-worker .
# The image is the CUDA build (`--features cuda`: candle's CUDA backend and our NVRTC kernels,
# candle's own kernels compiled for CUDA_COMPUTE_CAP); it needs the NVIDIA container runtime
# (libcuda) to start, and `--device auto` then takes the GPU. `--build-arg FEATURES=` builds the
# CPU-only binary instead.

ARG CUDA_VERSION=13.0.0
ARG UBUNTU=ubuntu24.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS build
ARG RUST_VERSION=1.95.0
ARG FEATURES="cuda"
ARG CUDA_COMPUTE_CAP=90
ENV CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl clang libclang-dev pkg-config \
      libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev \
      libswscale-dev libswresample-dev \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
      | sh -s -- -y --profile minimal --default-toolchain "${RUST_VERSION}"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin reelforge --features "${FEATURES}" \
 && cp target/release/reelforge /usr/local/bin/reelforge

FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU} AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates ffmpeg \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home reelforge
COPY --from=build /usr/local/bin/reelforge /usr/local/bin/reelforge
USER 10001
ENV REELFORGE_WORKER_LISTEN=0.0.0.0:9090 \
    REELFORGE_SCRATCH_DIR=/scratch \
    RUST_LOG=info
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/reelforge"]
CMD ["worker"]
