#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on loopback, beside the single test broker on 5672, for the cluster
# tests (tests/cluster.rs) and the cluster soak. Node i (1..3) is rf<i>@localhost, AMQP on
# 127.0.0.1:570<i>, Erlang distribution on 2570<i>, data under $RABBIT_CLUSTER_DIR/n<i>, all
# sharing a cookie of their own (so they never join the single broker).
#
#   rabbitmq-cluster.sh start        fresh cluster (wiped), unless all three nodes already answer
#   rabbitmq-cluster.sh stop         stops every node
#   rabbitmq-cluster.sh kill I       SIGKILLs node I (what a crashed machine looks like)
#   rabbitmq-cluster.sh start-node I starts node I again (it rejoins with its data)
#   rabbitmqctl through: rabbitmq-cluster.sh ctl I ARGS...
set -euo pipefail

DIR="${RABBIT_CLUSTER_DIR:-$HOME/.cache/reelforge/rabbit-cluster}"
BIN=/usr/lib/rabbitmq/bin
NODES=(1 2 3)

ctl() {
  local i=$1
  shift
  HOME="$DIR" "$BIN/rabbitmqctl" -q -n "rf$i@localhost" "$@"
}

start_node() {
  local i=$1 d="$DIR/n$1"
  mkdir -p "$d"
  echo "listeners.tcp.local = 127.0.0.1:570$i" >"$d/rabbitmq.conf"
  echo '[].' >"$d/enabled_plugins"
  HOME="$DIR" RABBITMQ_NODENAME="rf$i@localhost" RABBITMQ_NODE_PORT="570$i" RABBITMQ_DIST_PORT="2570$i" \
    RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
    RABBITMQ_MNESIA_BASE="$d/mnesia" RABBITMQ_LOG_BASE="$d/log" RABBITMQ_PID_FILE="$d/pid" \
    "$BIN/rabbitmq-server" -detached
  for _ in $(seq 1 90); do
    if ctl "$i" await_startup >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  echo "node rf$i@localhost did not start; its log:" >&2
  tail -20 "$d"/log/*.log >&2 || true
  return 1
}

running() {
  for i in "${NODES[@]}"; do ctl "$i" status >/dev/null 2>&1 || return 1; done
}

case "${1:-}" in
  start)
    if running; then exit 0; fi
    for i in "${NODES[@]}"; do ctl "$i" stop >/dev/null 2>&1 || true; done
    rm -rf "$DIR"
    mkdir -p "$DIR"
    od -An -tx1 -N20 /dev/urandom | tr -d ' \n' >"$DIR/.erlang.cookie"
    chmod 400 "$DIR/.erlang.cookie"
    for i in "${NODES[@]}"; do start_node "$i" & done
    wait
    for i in 2 3; do
      ctl "$i" stop_app
      ctl "$i" join_cluster rf1@localhost
      ctl "$i" start_app
    done
    ;;
  stop)
    for i in "${NODES[@]}"; do ctl "$i" stop >/dev/null 2>&1 || true; done
    ;;
  kill)
    # The node's OS pid, from the node itself (its pid file is not written on every start).
    pid="$(ctl "$2" eval 'os:getpid().' | tr -dc '0-9')"
    [ -n "$pid" ] || { echo "node rf$2@localhost is not running" >&2; exit 1; }
    kill -9 "$pid"
    ;;
  start-node)
    start_node "$2"
    ;;
  ctl)
    shift
    ctl "$@"
    ;;
  *)
    sed -n '2,13p' "$0" >&2
    exit 2
    ;;
esac
