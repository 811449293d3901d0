# Starts the local services the integration tests talk to, each only if it is not already up.
# Sourced by test.sh; functions only.

# start_rabbitmq: a broker on 127.0.0.1:5672 with guest/guest.
start_rabbitmq() {
  if port_open 5672; then return 0; fi
  say "starting rabbitmq-server"
  rabbitmq-server -detached
  for _ in $(seq 1 60); do
    if port_open 5672 && rabbitmqctl -q status >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  say "rabbitmq-server did not come up on 127.0.0.1:5672"
  exit 1
}

# port_open PORT: true when something listens on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# --- garage: the S3-compatible server the storage tests run against -------------------------------
# Built once with cargo into a cache dir outside the clone, keyed by version, so CI on the same
# machine skips the ~25-minute build.
GARAGE_VERSION="${GARAGE_VERSION:-2.5.0}"
GARAGE_ROOT="${GARAGE_ROOT:-$HOME/.cache/reelforge/tools/garage-$GARAGE_VERSION}"
GARAGE_BIN="$GARAGE_ROOT/bin/garage"

# ensure_garage: builds the garage binary into $GARAGE_ROOT unless it is already there.
ensure_garage() {
  if [ -x "$GARAGE_BIN" ]; then return 0; fi
  say "building garage $GARAGE_VERSION into $GARAGE_ROOT (once; about 25 minutes on 2 cores)"
  mkdir -p "$GARAGE_ROOT"
  # Its own target dir, so a half-finished build resumes and does not mix with the workspace's.
  CARGO_TARGET_DIR="$HOME/.cache/reelforge/tools/garage-build" \
    cargo install garage --locked --version "$GARAGE_VERSION" --root "$GARAGE_ROOT"
}

# Where the test node listens (127.0.0.1) and keeps its data (wiped when it starts).
GARAGE_S3_PORT="${GARAGE_S3_PORT:-3900}"
GARAGE_RPC_PORT="${GARAGE_RPC_PORT:-3901}"
GARAGE_DATA="${GARAGE_DATA:-$HOME/.cache/reelforge/garage-data}"
# Fixed test credentials (imported into the node); worker/tests/s3.rs and the storage benchmark
# default to these. Test-only: the node listens on loopback.
GARAGE_TEST_KEY_ID="GK7265656c666f7267652d7465"
GARAGE_TEST_SECRET="7265656c666f7267652d746573742d7365637265742d6b65792d303030303031"

# start_garage: a single-node garage (sqlite metadata, replication factor 1) on
# 127.0.0.1:$GARAGE_S3_PORT with the test key allowed to create buckets. Does nothing when the
# port is already served.
start_garage() {
  ensure_garage
  if port_open "$GARAGE_S3_PORT"; then return 0; fi
  say "starting garage on 127.0.0.1:$GARAGE_S3_PORT (data: $GARAGE_DATA)"
  rm -rf "$GARAGE_DATA"
  mkdir -p "$GARAGE_DATA/meta" "$GARAGE_DATA/data"
  local conf="$GARAGE_DATA/garage.toml"
  cat >"$conf" <<TOML
metadata_dir = "$GARAGE_DATA/meta"
data_dir = "$GARAGE_DATA/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$GARAGE_RPC_PORT"
rpc_public_addr = "127.0.0.1:$GARAGE_RPC_PORT"
rpc_secret = "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$GARAGE_S3_PORT"
root_domain = ".s3.garage.localhost"
TOML
  chmod 600 "$conf"
  local g=("$GARAGE_BIN" -c "$conf")
  nohup "${g[@]}" server >"$GARAGE_DATA/garage.log" 2>&1 &
  echo $! >"$GARAGE_DATA/garage.pid"
  local node=""
  for _ in $(seq 1 60); do
    node=$("${g[@]}" node id -q 2>/dev/null | cut -d@ -f1) && [ -n "$node" ] && break
    sleep 1
  done
  if [ -z "$node" ]; then
    say "garage did not start; its log:"; tail -20 "$GARAGE_DATA/garage.log" >&2; exit 1
  fi
  "${g[@]}" layout assign -z dc1 -c 1G "$node" >/dev/null
  "${g[@]}" layout apply --version 1 >/dev/null
  "${g[@]}" key import --yes -n reelforge-test "$GARAGE_TEST_KEY_ID" "$GARAGE_TEST_SECRET" >/dev/null
  "${g[@]}" key allow --create-bucket reelforge-test >/dev/null
  for _ in $(seq 1 60); do
    if port_open "$GARAGE_S3_PORT" && "${g[@]}" status >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  say "garage did not open 127.0.0.1:$GARAGE_S3_PORT; its log:"; tail -20 "$GARAGE_DATA/garage.log" >&2
  exit 1
}
