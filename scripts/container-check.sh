#!/usr/bin/env bash
# Proves the container's run-time contract without a Docker engine: the relay
# built for x86_64-unknown-linux-musl is one static binary that serves from an
# empty root filesystem (as in the FROM scratch image), as a non-root user,
# answers /watchdog, /version and an authenticated /observe against a local
# mock upstream, passes its own `healthcheck`, and stops cleanly on SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=x86_64-unknown-linux-musl
BINARY=target/$TARGET/release/ctr-relay
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# --- what the build needs -------------------------------------------------
if ! rustup target list --installed | grep -qx "$TARGET"; then
  log "installing the rustup target $TARGET"
  rustup target add "$TARGET"
fi
if ! command -v musl-gcc >/dev/null; then
  log "installing musl-tools (musl-gcc, for ring's C and assembly)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq musl-tools >/dev/null
fi
for tool in curl python3 readelf chroot file; do
  command -v "$tool" >/dev/null || fail "$tool is required"
done
CHROOT=$(command -v chroot)

log "building the static relay"
cargo build --release --locked --target "$TARGET" --bin ctr-relay
log "building the mock upstream"
cargo build --locked --example mock_upstream
MOCK=target/debug/examples/mock_upstream

# --- the binary is static -------------------------------------------------
if readelf -l "$BINARY" | grep -q 'Requesting program interpreter'; then
  fail "$BINARY needs a dynamic loader"
fi
if readelf -d "$BINARY" 2>/dev/null | grep -q '(NEEDED)'; then
  fail "$BINARY needs shared libraries: $(readelf -d "$BINARY" | grep NEEDED)"
fi
log "static: $(file -b "$BINARY" | cut -d, -f1-4)"

# --- an empty root with the binary alone ----------------------------------
root=$work/root
mkdir -p "$root"
cp "$BINARY" "$root/ctr-relay"
[ "$(find "$root" -mindepth 1 | wc -l)" = 1 ] || fail "the root holds more than the binary"

mock_port=$(free_port)
relay_port=$(free_port)

"$MOCK" --port "$mock_port" --records 3 >"$work/mock.log" 2>&1 &
pids+=($!)
wait_port "$mock_port" 30 || fail "the mock upstream did not start"

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
relay_env=(PORT="$relay_port" HOST=127.0.0.1 SECRET_KEY="$secret"
           C1FAPP_API_URL="http://127.0.0.1:$mock_port/cifapp/api/")

# The image runs as 65532:65532; so does the chroot. (A command array, not a
# function, so that `&` gives the relay's own PID for the signal below.)
if [ "$(id -u)" = 0 ]; then
  in_root=(env -i "${relay_env[@]}" "$CHROOT" --userspec=65532:65532 "$root")
else
  # Without root, an unprivileged user namespace gives chroot its privilege.
  in_root=(env -i "${relay_env[@]}" "$(command -v unshare)" --map-root-user "$CHROOT" "$root")
fi

log "starting the relay in the empty root"
"${in_root[@]}" /ctr-relay serve >"$work/relay.log" 2>&1 &
relay_pid=$!
pids+=("$relay_pid")

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$relay_port/watchdog" -H 'Health-Check: ready' >/dev/null 2>&1 && break
  kill -0 "$relay_pid" 2>/dev/null || { cat "$work/relay.log"; fail "the relay exited"; }
  sleep 0.1
done

check_json() { # name, python expression over `body`, response
  python3 -c 'import json,sys; body=json.loads(sys.argv[2]); sys.exit(0 if eval(sys.argv[1]) else 1)' "$2" "$3" \
    || fail "$1: $3"
  log "ok: $1"
}

watchdog=$(curl -fsS "http://127.0.0.1:$relay_port/watchdog" -H 'Health-Check: chroot-probe')
check_json "/watchdog" 'body == {"data": "chroot-probe"}' "$watchdog"

version=$(curl -fsS -X POST "http://127.0.0.1:$relay_port/version")
expected_version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
check_json "/version" "body == {\"version\": \"$expected_version\"}" "$version"

token=$(env -i SECRET_KEY="$secret" "$BINARY" jwt --c1fapp-key mock-key | sed -n 's/^JWT=//p')
observe=$(curl -fsS -X POST "http://127.0.0.1:$relay_port/observe/observables" \
  -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '[{"type": "ip", "value": "192.0.2.10"}]')
check_json "/observe/observables" \
  'body["data"]["sightings"]["count"] == 3 and body["data"]["verdicts"]["count"] == 1 and "errors" not in body' \
  "$observe"

"${in_root[@]}" /ctr-relay healthcheck || fail "healthcheck inside the empty root"
log "ok: ctr-relay healthcheck"

log "SIGTERM"
kill -TERM "$relay_pid"
status=0
wait "$relay_pid" || status=$?
[ "$status" = 0 ] || { cat "$work/relay.log"; fail "exit status $status after SIGTERM"; }
grep -q '"message":"stopped"' "$work/relay.log" || { cat "$work/relay.log"; fail "no clean stop logged"; }
log "ok: stopped cleanly"
log "the static binary serves from an empty root"
