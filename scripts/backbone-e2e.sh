#!/usr/bin/env bash
# `ctr-relay backbone` end to end (examples/backbone_e2e): a private RabbitMQ
# node (scripts/rabbitmq.sh, with an amqps:// listener and a dead-letter
# policy on the relay's inbox), the mock upstream, an HTTP relay for the
# reference answers, and Backbone relays started, killed and stopped by the
# driver. Prints each scenario's counts and the totals (published, answered,
# duplicates, lost, seconds). Needs root; installs Debian's rabbitmq-server
# when missing.
#
#   scripts/backbone-e2e.sh
#   BACKBONE_E2E_REQUESTS=2000 scripts/backbone-e2e.sh
#   BACKBONE_E2E_UNTIL=flood scripts/backbone-e2e.sh     # the scenarios up to that one
#   LOAD_RELAY=target/release/ctr-relay scripts/backbone-e2e.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# shellcheck source=scripts/rabbitmq.sh
source scripts/rabbitmq.sh

relay=$(relay_binary)
# The mock and the driver are light: debug builds (they reuse what the
# test build compiled), beside the release relay under test.
log "building the mock upstream and the driver"
cargo build --locked --example mock_upstream --example backbone_e2e

log "starting a private RabbitMQ node"
rabbitmq_setup
started=$(date +%s)
"$rmq/start" || fail "RabbitMQ did not start"
log "RabbitMQ up in $(($(date +%s) - started)) s (amqp port $rmq_port, amqps port $rmq_tls_port)"
rabbitmq_user
# Rejected requests go to the ctr-relay-dead exchange (declared by the driver).
rabbitmq_ctl set_policy -p / dead-letters '^ctr-relay-inbox$' \
  '{"dead-letter-exchange":"ctr-relay-dead"}' --apply-to queues >/dev/null

mkdir -p "$work/logs"
log "scenarios ($relay)"
target/debug/examples/backbone_e2e \
  --relay "$relay" --mock target/debug/examples/mock_upstream --work-dir "$work/logs" \
  --amqp-url "$amqp_url" --amqps-url "$amqps_url" --tls-ca-file "$rmq/ca.pem" \
  --broker-stop "$rmq/stop" --broker-start "$rmq/start" --broker-ctl "$rmq/ctl" \
  --requests "${BACKBONE_E2E_REQUESTS:-1000}" ${BACKBONE_E2E_UNTIL:+--until "$BACKBONE_E2E_UNTIL"} || {
  kept=$(mktemp -d /tmp/backbone-e2e-logs.XXXX)
  cp -r "$work/logs" "$work/rabbitmq/log" "$kept/" 2>/dev/null || true
  fail "the Backbone end-to-end test failed (the processes' logs are in $kept)"
}
