#!/usr/bin/env bash
# A 3-node garage cluster on loopback (replication factor 3, one zone per node), beside the
# single test node on 3900, for the cluster tests (tests/cluster.rs). Node i (1..3) serves S3 on
# 127.0.0.1:39i1 and RPC on 39i2, with data under $GARAGE_CLUSTER_DIR/n<i>; the test key of
# services.sh may create buckets. Writes and reads need 2 of the 3 nodes.
#
#   garage-cluster.sh start        fresh cluster (wiped), unless node 1 already serves S3
#   garage-cluster.sh stop         stops every node
#   garage-cluster.sh kill I       SIGKILLs node I
#   garage-cluster.sh start-node I starts node I again (with its data)
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/scripts/lib.sh
source deploy/scripts/services.sh

DIR="${GARAGE_CLUSTER_DIR:-$HOME/.cache/reelforge/garage-cluster}"
NODES=(1 2 3)

g() {
  "$GARAGE_BIN" -c "$DIR/n$1/garage.toml" "${@:2}"
}

start_node() {
  local i=$1 d="$DIR/n$1"
  nohup "$GARAGE_BIN" -c "$d/garage.toml" server >>"$d/garage.log" 2>&1 &
  echo $! >"$d/pid"
  for _ in $(seq 1 60); do
    if g "$i" node id -q >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "garage node $i did not start; its log:" >&2
  tail -20 "$d/garage.log" >&2
  return 1
}

case "${1:-}" in
  start)
    ensure_garage
    if port_open 3911; then exit 0; fi
    for i in "${NODES[@]}"; do [ -f "$DIR/n$i/pid" ] && kill -9 "$(cat "$DIR/n$i/pid")" 2>/dev/null || true; done
    rm -rf "$DIR"
    secret="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
    for i in "${NODES[@]}"; do
      d="$DIR/n$i"
      mkdir -p "$d/meta" "$d/data"
      cat >"$d/garage.toml" <<TOML
metadata_dir = "$d/meta"
data_dir = "$d/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:39${i}2"
rpc_public_addr = "127.0.0.1:39${i}2"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:39${i}1"
root_domain = ".s3.garage.localhost"
TOML
      chmod 600 "$d/garage.toml"
      start_node "$i"
    done
    for i in 2 3; do
      g 1 node connect "$(g "$i" node id -q)" >/dev/null
    done
    for i in "${NODES[@]}"; do
      g 1 layout assign -z "z$i" -c 1G "$(g "$i" node id -q | cut -d@ -f1)" >/dev/null
    done
    g 1 layout apply --version 1 >/dev/null
    g 1 key import --yes -n reelforge-test "$GARAGE_TEST_KEY_ID" "$GARAGE_TEST_SECRET" >/dev/null
    g 1 key allow --create-bucket reelforge-test >/dev/null
    for _ in $(seq 1 60); do
      if port_open 3911 && g 1 status >/dev/null 2>&1; then exit 0; fi
      sleep 1
    done
    echo "the garage cluster did not come up" >&2
    exit 1
    ;;
  stop)
    for i in "${NODES[@]}"; do [ -f "$DIR/n$i/pid" ] && kill "$(cat "$DIR/n$i/pid")" 2>/dev/null || true; done
    ;;
  kill)
    kill -9 "$(cat "$DIR/n$2/pid")"
    ;;
  start-node)
    start_node "$2"
    ;;
  *)
    sed -n '2,11p' "$0" >&2
    exit 2
    ;;
esac
