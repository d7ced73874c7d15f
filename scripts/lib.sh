# Shared by the scripts in this directory (sourced, not run).
#
# log / fail: progress lines and a failing exit; free_port: a free port on
# 127.0.0.1; relay_binary: the release relay to test; $work: a scratch
# directory, and $pids: processes to kill, both cleaned up at exit.

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
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if declare -f rabbitmq_cleanup >/dev/null; then rabbitmq_cleanup; fi
  rm -rf "$work"
}
trap cleanup EXIT
