# Shared by the scripts in this directory (sourced, not run).
#
# log / fail: progress lines and a failing exit; free_port: a free port on
# 127.0.0.1, never one it gave before in this script; wait_port: wait until a
# port on 127.0.0.1 accepts; relay_binary: the release relay to test; $work: a
# scratch directory, and $pids: processes to kill, both cleaned up at exit.

log() { printf '==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
# The relay under test: $LOAD_RELAY, else the shipped static build when it is
# there (as after scripts/container-check.sh), else a release build made now.
relay_binary() {
  if [ -n "${LOAD_RELAY:-}" ]; then
    echo "$LOAD_RELAY"
  elif [ -x target/x86_64-unknown-linux-musl/release/ctr-relay ]; then
    echo target/x86_64-unknown-linux-musl/release/ctr-relay
  else
    log "building the relay (release)" >&2
    cargo build --release --locked --bin ctr-relay >&2
    echo target/release/ctr-relay
  fi
}
# Ports given out are remembered in $work/ports: two free_port calls in a row
# may otherwise get the same port back from the kernel.
free_port() {
  python3 - "$work/ports" <<'PY'
import socket, sys
path = sys.argv[1]
try:
    given = set(open(path).read().split())
except FileNotFoundError:
    given = set()
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = str(s.getsockname()[1]); s.close()
    if port not in given:
        break
open(path, "a").write(port + "\n")
print(port)
PY
}
# wait_port PORT SECONDS: true once something accepts connections on the port.
wait_port() {
  python3 - "$1" "$2" <<'PY'
import socket, sys, time
port, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), 0.2).close(); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
}

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if declare -f rabbitmq_cleanup >/dev/null; then rabbitmq_cleanup; fi
  rm -rf "$work"
}
trap cleanup EXIT
