#!/usr/bin/env bash
# The README's second command (and CI's): installs what is missing, starts the services the
# tests need, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/scripts/lib.sh
ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"
ensure_minilm
source deploy/scripts/services.sh
start_rabbitmq
start_garage
say "starting the 3-node garage cluster (tests/cluster.rs)"
bash deploy/scripts/garage-cluster.sh start

say "checking formatting"
cargo fmt --all -- --check
say "running the test suite (target dir: $CARGO_TARGET_DIR)"
cargo test --locked --workspace --no-fail-fast
say "compiling the CUDA kernels for sm_90 (nvcc and ptxas from PyPI; no GPU needed)"
bash deploy/scripts/check-kernels.sh
say "checking deploy/ and k8s/"
bash deploy/scripts/check-deploy.sh
say "done"
