#!/usr/bin/env bash
# The load test: 200 connections for 30 s against a 200 ms upstream, valid and
# invalid requests mixed (examples/load_test.rs). Passes when no answer was a
# 5xx or a transport error, every valid answer had all its results, every
# invalid one its error, /watchdog answered throughout, and the relay's memory
# stayed bounded without growing. 127.0.0.1 only.
#
#   scripts/load-test.sh                       # as CI runs it
#   LOAD_DURATION=10 LOAD_CONNECTIONS=100 scripts/load-test.sh
#   LOAD_RELAY=target/release/ctr-relay scripts/load-test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${LOAD_DURATION:-30}
CONNECTIONS=${LOAD_CONNECTIONS:-200}
LATENCY_MS=${LOAD_LATENCY_MS:-200}
MAX_RSS_MB=${LOAD_MAX_RSS_MB:-256}
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# The relay under test is a release build (the shipped static one when it is
# there); the mock and the load generator are light and run as debug builds.
LOAD_RELAY=$(relay_binary)
log "building the mock upstream and the load generator"
cargo build --locked --example mock_upstream --example load_test

mock_port=$(free_port)
relay_port=$(free_port)

# Each connection of the load can hold a few upstream calls; the open-file
# limit must allow them.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

target/debug/examples/mock_upstream --port "$mock_port" --latency-ms "$LATENCY_MS" \
  >"$work/mock.log" 2>&1 &
pids+=($!)
wait_port "$mock_port" 30 || fail "the mock upstream did not start"

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
env -i PORT="$relay_port" HOST=127.0.0.1 SECRET_KEY="$secret" \
  C1FAPP_API_URL="http://127.0.0.1:$mock_port/cifapp/api/" \
  CYBERSCAN_ALLOW_PRIVATE_HOSTS=true \
  "$LOAD_RELAY" serve >"$work/relay.log" 2>&1 &
relay_pid=$!
pids+=("$relay_pid")

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$relay_port/watchdog" -H 'Health-Check: ready' >/dev/null 2>&1 && break
  kill -0 "$relay_pid" 2>/dev/null || { tail -20 "$work/relay.log"; fail "the relay exited"; }
  sleep 0.1
done

log "load: $CONNECTIONS connections for $DURATION s, upstream latency $LATENCY_MS ms ($LOAD_RELAY)"
status=0
target/debug/examples/load_test \
  --relay "http://127.0.0.1:$relay_port" --relay-pid "$relay_pid" \
  --secret-key "$secret" --cyberscan-host "http://127.0.0.1:$mock_port" \
  --connections "$CONNECTIONS" --duration "$DURATION" --max-rss-mb "$MAX_RSS_MB" || status=$?

kill -0 "$relay_pid" 2>/dev/null || fail "the relay died under load"
if grep -q '"level":"ERROR"' "$work/relay.log"; then
  grep '"level":"ERROR"' "$work/relay.log" | head -5
  fail "the relay logged errors"
fi
[ "$status" = 0 ] || fail "the load test failed"
log "the relay held up under load"
