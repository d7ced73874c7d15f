#!/usr/bin/env bash
# The benchmark, in one command: builds the relay and the mock upstream with
# --release, installs wrk and nginx from Debian when missing, and drives load on
# 127.0.0.1. Prints a table (also written to bench/results/) and checks the
# targets of BENCHMARKS.md.
#
#   bench/run.sh                      # every scenario, 10 s each, 60 s soak
#   BENCH_DURATION=5 BENCH_SOAK=20 bench/run.sh
#   bench/run.sh --only "10 observables, 50 ms"
#   BENCH_RELAY_ENV="WORKERS=4 RUST_LOG=warn" bench/run.sh --only "10 observables, 50 ms"
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
  echo "==> installing wrk"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi
if ! command -v nginx >/dev/null; then
  echo "==> installing nginx (the anchor: a reverse proxy to the same mock)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null
  # Debian starts it on port 80; the benchmark runs its own.
  nginx -s stop 2>/dev/null || true
fi
if ! command -v redis-server >/dev/null; then
  echo "==> installing redis-server (the scenarios with REDIS_URL)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }

echo "==> building (release)"
cargo build --release --locked --bin ctr-relay --example mock_upstream --example null_relay

exec python3 bench/bench.py "$@"
