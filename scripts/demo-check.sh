#!/usr/bin/env bash
# `ctr-relay demo` as a new user runs it: start it on a free port, take the
# curl command it prints, run that command, and check the answer holds
# sightings, indicators, relationships, judgements and verdicts, with
# sightings from both providers, and is a valid CTIM bundle
# (examples/ctim_check.rs). Prints the counts. 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

relay=$(relay_binary)
port=$(free_port)
log "ctr-relay demo on port $port ($relay)"
env -i PATH="$PATH" PORT="$port" "$relay" demo >"$work/demo.log" 2>&1 &
demo_pid=$!
pids+=("$demo_pid")
command=""
for _ in $(seq 1 100); do
  command=$(grep -m1 '^curl ' "$work/demo.log" || true)
  [ -n "$command" ] && break
  kill -0 "$demo_pid" 2>/dev/null || { cat "$work/demo.log"; fail "the demo exited"; }
  sleep 0.1
done
[ -n "$command" ] || { cat "$work/demo.log"; fail "the demo printed no curl command"; }
wait_port "$port" 10 || fail "the demo relay is not listening"

log "building the CTIM check (examples/ctim_check.rs)"
cargo build --locked --quiet --example ctim_check
log "running the printed command"
answer=$(eval "$command")
echo "$answer" | target/debug/examples/ctim_check || fail "the demo's answer is not valid CTIM"
echo "$answer" | python3 -c '
import json, sys
answer = json.load(sys.stdin)
assert "errors" not in answer, answer.get("errors")
data = answer["data"]
for kind in ("sightings", "indicators", "relationships", "judgements", "verdicts"):
    assert data.get(kind, {}).get("count", 0) > 0, f"no {kind}: {answer}"
    assert data[kind]["count"] == len(data[kind]["docs"]), kind
sources = sorted({doc["source"] for doc in data["sightings"]["docs"]})
assert sources == ["C1fApp", "CyberScan"], sources
assert all("(demo)" in doc["title"] for doc in data["indicators"]["docs"] if "title" in doc)
counts = ", ".join("%d %s" % (data[k]["count"], k) for k in data)
print("==> the answer: %s; sightings from %s" % (counts, " and ".join(sources)))
' || fail "the demo's answer is not what the README promises"

grep -q '"level":"ERROR"' "$work/demo.log" && { grep '"level":"ERROR"' "$work/demo.log"; fail "the demo logged errors"; }
kill -TERM "$demo_pid"
status=0
wait "$demo_pid" || status=$?
[ "$status" = 0 ] || fail "the demo exited $status on SIGTERM"
log "ctr-relay demo works as the README says"
