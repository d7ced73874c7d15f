#!/usr/bin/env bash
# The arm64 image's binary, checked on an amd64 machine: cross-build
# aarch64-unknown-linux-musl (the target the Dockerfile builds on arm64
# hosts) with Debian's aarch64 cross compiler, check it is static, and run
# `ctr-relay demo` under qemu-aarch64 with its printed command. Not in CI
# (about 6 minutes); run it when the build or its dependencies change.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

target=$(scripts/rust-target.sh arm64)
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64-static >/dev/null; then
  log "installing gcc-aarch64-linux-gnu and qemu-user-static"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc-aarch64-linux-gnu qemu-user-static >/dev/null
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"
log "building $target"
CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc \
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc \
  cargo build --release --locked --target "$target" --bin ctr-relay
binary=target/$target/release/ctr-relay
readelf -l "$binary" | grep -q 'Requesting program interpreter' && fail "$binary needs a dynamic loader"
log "static: $(file -b "$binary" | cut -d, -f1-2)"

port=$(free_port)
PORT=$port HOST=127.0.0.1 qemu-aarch64-static "$binary" demo >"$work/demo.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do grep -q '^curl ' "$work/demo.log" && break; sleep 0.1; done
wait_port "$port" 20 || { cat "$work/demo.log"; fail "the arm64 demo is not listening"; }
answer=$(eval "$(grep -m1 '^curl ' "$work/demo.log")")
echo "$answer" | python3 -c '
import json, sys
data = json.load(sys.stdin)["data"]
print("==> arm64 demo answer: " + ", ".join("%d %s" % (v["count"], k) for k, v in data.items()))
assert all(data.get(k) for k in ("sightings", "indicators", "relationships", "judgements", "verdicts"))
' || fail "the arm64 binary's demo answer is incomplete"
log "the arm64 binary works"
