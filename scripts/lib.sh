# Shared by the scripts in this directory (sourced, not run).
#
# log / fail: progress lines and a failing exit; free_port: a free port on
# 127.0.0.1; $work: a scratch directory, and $pids: processes to kill, both
# cleaned up at exit.

log() { printf '==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
