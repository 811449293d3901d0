#!/usr/bin/env bash
# Coverage-guided fuzzing (cargo-fuzz: libFuzzer with AddressSanitizer, on nightly) of the job
# parser (`job`: protocol::job::fuzz_one) and the media probe, frame decoder and still decoder
# (`media`: worker::media::fuzz_one). Outside the test command; the corpus it grows under
# fuzz/corpus/<target> is committed and replayed on stable by the test command
# (protocol/tests/fuzz.rs, worker/tests/media.rs).
#
#   deploy/scripts/fuzz.sh [SECONDS per target, default 600] [TARGET...; default: job media]
#
# A crash stops the run and leaves its input in fuzz/artifacts/<target>/: fix the bug, then copy
# the input into fuzz/corpus/<target>/ so the replay keeps it fixed. Building the media target
# compiles the worker crate with nightly and ASan (about 25 minutes on 2 cores, once).
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/scripts/lib.sh
ensure_rust
ensure_packages "${BUILD_PACKAGES[@]}"

SECONDS_PER_TARGET="${1:-600}"
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(job media)

if ! rustup toolchain list | grep -q '^nightly'; then
  say "installing the nightly toolchain (cargo-fuzz needs it)"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
# Its own target dir: sanitizer flags would otherwise rebuild the workspace's artifacts.
export CARGO_TARGET_DIR="$HOME/.cache/reelforge/fuzz-target"
for t in "${TARGETS[@]}"; do
  before=$(find "fuzz/corpus/$t" -type f | wc -l)
  say "fuzzing $t for ${SECONDS_PER_TARGET}s (corpus: $before inputs)"
  cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -rss_limit_mb=4096 -timeout=30 -print_final_stats=1
  say "minimising the $t corpus"
  cargo +nightly fuzz cmin --fuzz-dir fuzz "$t" "fuzz/corpus/$t"
  say "$t: corpus $before → $(find "fuzz/corpus/$t" -type f | wc -l) inputs, no crash"
done
