#!/usr/bin/env bash
# The image under a real Docker engine (Debian's docker.io). The Dockerfile's
# build stage pulls rust:*-bookworm, which this network cannot reach, so this
# builds the Dockerfile's final stage — taken from the Dockerfile itself, so
# the two cannot drift — around the static binary scripts/container-check.sh
# builds, with a dockerd of its own (vfs storage, no iptables, no bridge;
# socket and data in a temporary directory; stopped by its PID at the end).
# Then, with --network host (no -p publishing: there is no bridge):
#   the demo, and the curl command it prints;
#   serve with a SECRET_KEY, and an authenticated /observe against the mock;
#   the user (65532:65532, in the image and of the running process);
#   the image's HEALTHCHECK command turning the container healthy;
#   docker stop with a request in flight: it completes, exit code 0;
#   the image's size (one file: the binary).
# Needs root (dockerd). Prints what it checked. 127.0.0.1 only.
#
#   scripts/docker-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

TARGET=x86_64-unknown-linux-musl
BINARY=target/$TARGET/release/ctr-relay
IMAGE=ctr-relay-check:$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

if ! command -v dockerd >/dev/null; then
  log "installing Debian's docker.io"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
if ! rustup target list --installed | grep -qx "$TARGET" || ! command -v musl-gcc >/dev/null; then
  scripts/container-check.sh   # installs the target and musl-tools, and checks the binary
fi
log "building the static relay"
cargo build --release --locked --quiet --target "$TARGET" --bin ctr-relay
cargo build --locked --quiet --example mock_upstream --example ctim_check
MOCK=target/debug/examples/mock_upstream

# --- a daemon of our own ---------------------------------------------------
daemon=$work/docker
mkdir -p "$daemon"
export DOCKER_HOST=unix://$daemon/docker.sock DOCKER_BUILDKIT=0
dockerd --storage-driver=vfs --iptables=false --bridge=none \
  --data-root "$daemon/data" --exec-root "$daemon/exec" \
  --host "$DOCKER_HOST" --pidfile "$daemon/dockerd.pid" >"$daemon/dockerd.log" 2>&1 &
dockerd_pid=$!
stop_daemon() {
  docker ps -aq 2>/dev/null | xargs -r docker rm -f >/dev/null 2>&1 || true
  kill -TERM "$dockerd_pid" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$dockerd_pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$dockerd_pid" 2>/dev/null || true
}
unmount_daemon() {
  # dockerd leaves its network namespace mounted under its exec root.
  grep -o " $daemon/[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
}
trap 'stop_daemon; unmount_daemon; cleanup' EXIT
for _ in $(seq 1 100); do docker version >/dev/null 2>&1 && break; sleep 0.2; done
docker version >/dev/null 2>&1 || { cat "$daemon/dockerd.log"; fail "dockerd did not start"; }
log "dockerd $(docker version --format '{{.Server.Version}}') (pid $dockerd_pid), vfs storage, socket in $daemon"

# --- the final stage of the Dockerfile, around the static binary -----------
context=$work/context
mkdir -p "$context"
cp "$BINARY" "$context/ctr-relay"
awk '/^FROM /{stage=$0} stage ~ /^FROM scratch/' Dockerfile \
  | sed 's|^COPY --from=build /out/ctr-relay /ctr-relay$|COPY ctr-relay /ctr-relay|' >"$context/Dockerfile"
grep -q '^COPY ctr-relay /ctr-relay$' "$context/Dockerfile" \
  || fail "the Dockerfile's final stage no longer copies /out/ctr-relay from the build stage"
log "building $IMAGE from the Dockerfile's final stage ($(wc -l <"$context/Dockerfile") lines)"
docker build -q -t "$IMAGE" "$context" >/dev/null
size=$(docker image inspect -f '{{.Size}}' "$IMAGE")
binary_size=$(stat -c %s "$BINARY")
[ "$size" -le $((binary_size + 4096)) ] || fail "the image ($size bytes) holds more than the binary ($binary_size)"
log "image: $size bytes (the binary: $binary_size), user $(docker image inspect -f '{{.Config.User}}' "$IMAGE")"
[ "$(docker image inspect -f '{{.Config.User}}' "$IMAGE")" = 65532:65532 ] || fail "the image does not run as 65532:65532"

# --- the demo, and the command it prints -----------------------------------
port=$(free_port)
docker run -d --name demo --network host -e PORT="$port" -e HOST=127.0.0.1 "$IMAGE" demo >/dev/null
command=""
for _ in $(seq 1 100); do
  command=$(docker logs demo 2>&1 | grep -m1 '^curl ' || true)
  [ -n "$command" ] && break
  sleep 0.1
done
[ -n "$command" ] || { docker logs demo; fail "the demo printed no curl command"; }
wait_port "$port" 10 || fail "the demo in the container is not listening"
answer=$(eval "$command")
echo "$answer" | target/debug/examples/ctim_check >/dev/null || fail "the demo's answer is not valid CTIM"
counts=$(echo "$answer" | python3 -c '
import json, sys
data = json.load(sys.stdin)["data"]
print(", ".join("%d %s" % (data[k]["count"], k) for k in data))')
[ "$(echo "$answer" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["sightings"]["count"])')" = 8 ] \
  || fail "the demo answered $counts"
log "demo: its printed command answered $counts"
docker rm -f demo >/dev/null

# --- serve, with a SECRET_KEY, against the mock ----------------------------
mock_port=$(free_port)
"$MOCK" --port "$mock_port" --records 3 --latency-ms 1500 >"$work/mock.log" 2>&1 &
pids+=($!)
wait_port "$mock_port" 30 || fail "the mock upstream did not start"
port=$(free_port)
secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
docker run -d --name relay --network host \
  -e PORT="$port" -e HOST=127.0.0.1 -e SECRET_KEY="$secret" \
  -e C1FAPP_API_URL="http://127.0.0.1:$mock_port/cifapp/api/" \
  --health-interval 1s --health-start-period 0s "$IMAGE" >/dev/null
wait_port "$port" 10 || { docker logs relay; fail "serve in the container is not listening"; }
token=$(env -i SECRET_KEY="$secret" "$BINARY" jwt --c1fapp-key mock-key | sed -n "s/^JWT=//p")
observe() {
  curl -s --max-time 20 -X POST "http://127.0.0.1:$port/observe/observables" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "[{\"type\":\"ip\",\"value\":\"$1\"}]"
}
sightings() { python3 -c 'import json,sys; print(json.load(sys.stdin).get("data", {}).get("sightings", {}).get("count"))'; }
first=$(observe 198.51.100.1)
[ "$(echo "$first" | sightings)" = 3 ] || fail "an authenticated /observe answered $first"
log "serve: an authenticated /observe answered the mock's 3 sightings"

uid=$(ps -o uid= -p "$(docker inspect -f '{{.State.Pid}}' relay)" | tr -d ' ')
[ "$uid" = 65532 ] || fail "the relay runs as uid $uid"
log "the relay's process runs as uid $uid"

health=""
for _ in $(seq 1 30); do
  health=$(docker inspect -f '{{.State.Health.Status}}' relay)
  [ "$health" = healthy ] && break
  sleep 0.5
done
[ "$health" = healthy ] || { docker inspect -f '{{json .State.Health}}' relay; fail "the container is $health"; }
log "HEALTHCHECK (/ctr-relay healthcheck, every 1 s here): $health"

# --- docker stop with a request in flight ----------------------------------
observe 198.51.100.2 >"$work/in-flight.json" &
in_flight=$!
sleep 0.5
started=$(date +%s.%N)
docker stop -t 20 relay >/dev/null
stopped=$(date +%s.%N)
wait "$in_flight" || fail "the request in flight at docker stop failed"
[ "$(sightings <"$work/in-flight.json")" = 3 ] || fail "the request in flight lost its data: $(cat "$work/in-flight.json")"
code=$(docker inspect -f '{{.State.ExitCode}}' relay)
[ "$code" = 0 ] || { docker logs relay | tail -5; fail "docker stop: exit code $code"; }
log "docker stop with a request in flight: it completed with its data, exit code $code after $(python3 -c "print(round($stopped - $started, 2))") s"

log "the image works under dockerd as the README says (the build stage and -p publishing were not run)"
