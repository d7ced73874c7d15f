#!/usr/bin/env bash
# Requests per second through the Communications Backbone (a private RabbitMQ
# node, scripts/rabbitmq.sh) beside the HTTP API in the same run: 1 and 10
# observables, one and two relays, against the mock upstream. Prints a table
# (also written to bench/results/). Needs root and Debian's rabbitmq-server
# (installed when missing).
#
#   bench/backbone.sh
#   BENCH_DURATION=5 BENCH_LATENCY_MS=50 BENCH_PREFETCH=128 bench/backbone.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/rabbitmq.sh
source scripts/rabbitmq.sh

log "building (release)"
cargo build --release --locked --bin ctr-relay --example mock_upstream --example backbone_e2e

rabbitmq_setup
"$rmq/start" || fail "RabbitMQ did not start"
rabbitmq_user
mkdir -p bench/results "$work/logs"
out="bench/results/backbone-$(date +%Y%m%d-%H%M%S).txt"
target/release/examples/backbone_e2e --bench \
  --relay "${BENCH_RELAY:-target/release/ctr-relay}" --mock target/release/examples/mock_upstream \
  --work-dir "$work/logs" --amqp-url "$amqp_url" --broker-pid-file "$rmq/pid" \
  --latency-ms "${BENCH_LATENCY_MS:-0}" --bench-seconds "${BENCH_DURATION:-10}" \
  --bench-prefetch "${BENCH_PREFETCH:-32}" | tee "$out"
log "written to $out"
