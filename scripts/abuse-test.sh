#!/usr/bin/env bash
# Hostile tenants and upstreams against the release relay
# (examples/abuse_test/): 10 MiB answers for many IPs (peak RSS, answer
# sizes), a caller who leaves (upstream calls after it left), a tenant whose
# CyberScan host stalls (the other tenant's latency), environment proxies
# with tokens naming internal hosts (proxy hits); and tenant isolation
# (isolation.rs): the pool filled by announced lengths and by real bytes, one
# machine under seven spellings, untrusted JSON (RSS above idle), the result
# cache's bound (RSS), slow readers (cut at the deadline), and every bound at
# its default at once against deploy/kubernetes.yaml's memory limit. Prints
# the figures and fails when a bound is broken. Loopback only (127.0.0.0/8).
#
#   scripts/abuse-test.sh
#   ABUSE_MAX_RSS_MB=200 scripts/abuse-test.sh
#   LOAD_RELAY=target/release/ctr-relay scripts/abuse-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

relay=$(relay_binary)
log "building the abuse-test driver"
cargo build --locked --example abuse_test
log "hostile tenants and upstreams ($relay)"
target/debug/examples/abuse_test --relay "$relay" \
  --max-rss-mb "${ABUSE_MAX_RSS_MB:-160}" --max-tenant-b-ms "${ABUSE_MAX_TENANT_B_MS:-2000}" \
  || fail "a bound was broken under abuse"
