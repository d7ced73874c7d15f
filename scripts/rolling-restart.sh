#!/usr/bin/env bash
# A rolling restart under load (examples/rolling_restart.rs): a relay with 4
# workers and warm connection pools serves 50 connections of steady traffic
# against a 200 ms upstream and gets SIGTERM in the middle. Passes when every
# request it accepted was answered 200 with its data, a new connection after
# the signal was refused, and it exited 0 within its grace period. Then again
# with SHUTDOWN_DELAY_SECONDS=2 and the load following /readyz, as behind a
# Kubernetes Service: 0 refused connections and 0 failed requests. Prints the
# counts. 127.0.0.1 only.
#
#   scripts/rolling-restart.sh
#   LOAD_RELAY=target/release/ctr-relay scripts/rolling-restart.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

relay=$(relay_binary)
log "building the rolling-restart driver"
cargo build --locked --example rolling_restart
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
log "rolling restart: 50 connections, 4 workers, SIGTERM mid-run ($relay)"
target/debug/examples/rolling_restart --relay "$relay" --connections 50 --workers 4 \
  || fail "requests accepted before SIGTERM were lost, or the relay did not stop cleanly"
log "rolling restart with SHUTDOWN_DELAY_SECONDS=2: the load leaves when /readyz turns 503"
target/debug/examples/rolling_restart --relay "$relay" --connections 50 --workers 4 \
  --delay 2 --rounds 2 \
  || fail "with the delay on, a connection was refused or a request failed"
