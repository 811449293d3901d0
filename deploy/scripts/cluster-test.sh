#!/usr/bin/env bash
# The RabbitMQ cluster test, outside the test command (it fails on RabbitMQ 3.10; see
# tests/cluster.rs): starts the 3-node RabbitMQ cluster on loopback (deploy/scripts/
# rabbitmq-cluster.sh, about a minute the first time) beside the services of the test command,
# and runs the cluster tests, the ignored one included. About 6 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
source deploy/scripts/lib.sh
ensure_rust
source deploy/scripts/services.sh
start_rabbitmq
start_garage
say "starting the 3-node RabbitMQ and garage clusters"
bash deploy/scripts/rabbitmq-cluster.sh start
bash deploy/scripts/garage-cluster.sh start
say "running tests/cluster.rs with its ignored tests"
cargo test --locked --test cluster -- --include-ignored "$@"
