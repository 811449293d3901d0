#!/usr/bin/env bash
# The README's first command: installs what is missing, builds, and runs `reelforge demo` on the
# embedded default (no services). Outputs go to ./demo-out.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/scripts/lib.sh
ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}" ffmpeg
ensure_minilm
say "building reelforge (target dir: $CARGO_TARGET_DIR)"
cargo build --locked --bin reelforge
say "running the demo"
"$CARGO_TARGET_DIR/debug/reelforge" demo --out "${DEMO_OUT:-demo-out}" "$@"
