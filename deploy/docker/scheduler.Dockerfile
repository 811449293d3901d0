# syntax=docker/dockerfile:1
# The scheduler image: the one `reelforge` binary on a slim Debian 12 base (its FFmpeg 5.1
# runtime libraries are linked by the binary even though the scheduler role never decodes).
# Build from the repository root:
#   docker build -f deploy/docker/scheduler.Dockerfile -t reelforge-scheduler .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends clang libclang-dev pkg-config \
      libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev \
      libswscale-dev libswresample-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release --bin reelforge \
 && cp target/release/reelforge /usr/local/bin/reelforge

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
      libavcodec59 libavformat59 libavutil57 libavfilter8 libavdevice59 libswscale6 libswresample4 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home reelforge
COPY --from=build /usr/local/bin/reelforge /usr/local/bin/reelforge
USER 10001
ENV REELFORGE_LISTEN=0.0.0.0:8080 \
    RUST_LOG=info
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/reelforge"]
CMD ["scheduler"]
