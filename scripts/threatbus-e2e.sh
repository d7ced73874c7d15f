#!/usr/bin/env bash
# End to end against the real Threat Bus (from PyPI, in a venv under target/):
# Threat Bus with its ZeroMQ app plugin, the mock upstream, and
# `ctr-relay threatbus` subscribed to two topics at once. A second app
# (scripts/threatbus_e2e.py) injects a STIX 2.1 indicator and must receive a
# valid STIX 2.1 sighting of it; the relay's own sighting comes back to it on
# its second topic and is skipped. Then
# Threat Bus is restarted, and the relay must subscribe again and answer the
# next indicator; on SIGTERM it unsubscribes and exits 0. The relay exports
# traces to an OTLP receiver that decodes them (scripts/otlp_receiver.py):
# each indicator is a span with its provider call beneath it, and neither
# the value nor the key is in what was exported. 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

VENV=target/threatbus-venv
if [ ! -x "$VENV/bin/threatbus" ]; then
  log "installing Threat Bus into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    threatbus==2022.5.16 threatbus-zmq==2022.5.16 threatbus-inmem==2022.5.16
fi

OTLP_VENV=target/otlp-venv
if [ ! -x "$OTLP_VENV/bin/python" ] || ! "$OTLP_VENV/bin/python" -c 'import opentelemetry.proto' 2>/dev/null; then
  log "installing opentelemetry-proto into $OTLP_VENV (the OTLP receiver)"
  python3 -m venv "$OTLP_VENV"
  "$OTLP_VENV/bin/pip" install -q --disable-pip-version-check opentelemetry-proto
fi

log "building the relay and the mock upstream"
cargo build --locked --bin ctr-relay --example mock_upstream --example ctim_check
RELAY=target/debug/ctr-relay

wait_log() { # file, text, seconds
  for _ in $(seq 1 $(($3 * 10))); do
    grep -q "$2" "$1" && return 0
    sleep 0.1
  done
  return 1
}


manage=$(free_port); pub=$(free_port); sub=$(free_port)
mock_port=$(free_port); metrics_port=$(free_port); otlp_port=$(free_port)
"$OTLP_VENV/bin/python" scripts/otlp_receiver.py --port "$otlp_port" --spans "$work/spans.jsonl" &
pids+=($!)
wait_port "$otlp_port" 30 || fail "the OTLP receiver did not start"
cat >"$work/tb.yaml" <<YAML
logging: {console: true, console_verbosity: INFO}
plugins:
  backbones: {inmem: {}}
  apps:
    zmq: {host: "127.0.0.1", manage: $manage, pub: $pub, sub: $sub}
YAML

start_threatbus() {
  "$VENV/bin/threatbus" -c "$work/tb.yaml" >>"$work/threatbus.log" 2>&1 &
  tb_pid=$!
  pids+=("$tb_pid")
  wait_port "$manage" 30 || { tail -20 "$work/threatbus.log"; fail "Threat Bus did not start"; }
}

log "starting Threat Bus (manage $manage, pub $pub, sub $sub)"
start_threatbus
target/debug/examples/mock_upstream --port "$mock_port" >"$work/mock.log" 2>&1 &
pids+=($!)
wait_port "$mock_port" 30 || fail "the mock upstream did not start"

# Two topics in one subscription: indicators, and sightings (its own come
# back to it, and are counted as skipped).
log "starting ctr-relay threatbus (topics stix2/indicator and stix2/sighting)"
env -i PATH="$PATH" C1FAPP_KEY=mock-key C1FAPP_API_URL="http://127.0.0.1:$mock_port/cifapp/api/" \
  HOST=127.0.0.1 RUST_LOG=info \
  OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$otlp_port" OTEL_BSP_SCHEDULE_DELAY=100 \
  "$RELAY" threatbus --manage "tcp://127.0.0.1:$manage" --metrics-port "$metrics_port" \
  --topic stix2/indicator --topic stix2/sighting \
  >"$work/relay.log" 2>&1 &
relay_pid=$!
pids+=("$relay_pid")
wait_log "$work/relay.log" "subscribed to Threat Bus" 30 || { cat "$work/relay.log"; fail "the relay did not subscribe"; }

log "injecting an indicator; waiting for its sighting"
"$VENV/bin/python" scripts/threatbus_e2e.py --manage "tcp://127.0.0.1:$manage" --value 192.0.2.10 --ctim-check target/debug/examples/ctim_check \
  || { tail -20 "$work/relay.log"; tail -20 "$work/threatbus.log"; fail "no valid sighting"; }

for _ in $(seq 1 50); do [ -s "$work/spans.jsonl" ] && break; sleep 0.1; done
python3 - "$work/spans.jsonl" <<'PY' || fail "the traces of Threat Bus mode are not as expected"
import json, sys
spans = [json.loads(line) for line in open(sys.argv[1])]
raw = open(sys.argv[1] + ".raw", "rb").read()
messages = [s for s in spans if s["name"] == "threatbus indicator"]
assert messages, spans
calls = [s for s in spans if s["name"] == "C1fApp observe"]
children = [c for c in calls if any(c["parent_span_id"] == m["span_id"] and c["trace_id"] == m["trace_id"] for m in messages)]
assert children, spans
call = children[0]
assert call["attributes"]["observable.type"] == "ip", call
assert call["attributes"]["outcome"] == "answered", call
assert messages[0]["attributes"]["messaging.system"] == "threatbus", messages[0]
for secret in (b"192.0.2.10", b"mock-key"):
    assert secret not in raw, secret
print("==> ok: traces: %d indicator spans, %d provider calls beneath them (outcome %s); no value or key exported"
      % (len(messages), len(children), call["attributes"]["outcome"]))
PY

both="Received subscription for topic ['stix2/indicator', 'stix2/sighting']"
[ "$(grep -cF "$both" "$work/threatbus.log")" = 1 ] \
  || { grep -i subscription "$work/threatbus.log"; fail "not one subscription to both topics"; }
metric() { curl -fsS "http://127.0.0.1:$metrics_port/metrics" | sed -n "s/^ctr_relay_threatbus_events_total{event=\"$1\"} //p"; }
for _ in $(seq 1 50); do [ "$(metric skipped)" -ge 1 ] 2>/dev/null && break; sleep 0.1; done
[ "$(metric skipped)" -ge 1 ] 2>/dev/null || fail "its own sighting did not come back on stix2/sighting"
log "ok: one subscription to both topics; received $(metric received) messages, skipped $(metric skipped) (its own sightings)"

log "restarting Threat Bus"
kill -INT "$tb_pid"
for _ in $(seq 1 100); do kill -0 "$tb_pid" 2>/dev/null || break; sleep 0.1; done
kill -9 "$tb_pid" 2>/dev/null || true
subscriptions=$(grep -c "subscribed to Threat Bus" "$work/relay.log")
start_threatbus
for _ in $(seq 1 300); do
  [ "$(grep -c "subscribed to Threat Bus" "$work/relay.log")" -gt "$subscriptions" ] && break
  sleep 0.1
done
[ "$(grep -c "subscribed to Threat Bus" "$work/relay.log")" -gt "$subscriptions" ] \
  || { tail -20 "$work/relay.log"; fail "the relay did not subscribe again after the restart"; }
"$VENV/bin/python" scripts/threatbus_e2e.py --manage "tcp://127.0.0.1:$manage" --value 198.51.100.7 --ctim-check target/debug/examples/ctim_check \
  || { tail -20 "$work/relay.log"; fail "no sighting after the restart"; }

metrics=$(curl -fsS "http://127.0.0.1:$metrics_port/metrics")
echo "$metrics" | grep -E '^ctr_relay_threatbus_events_total\{event="sighting_sent"\} [1-9]' >/dev/null \
  || { echo "$metrics" | grep threatbus; fail "/metrics does not count the sightings"; }
log "ok: /metrics counts $(echo "$metrics" | sed -n 's/^ctr_relay_threatbus_events_total{event="sighting_sent"} //p') sightings sent"

log "SIGTERM"
kill -TERM "$relay_pid"
status=0
wait "$relay_pid" || status=$?
[ "$status" = 0 ] || { tail -20 "$work/relay.log"; fail "exit status $status"; }
grep -q "unsubscribed from Threat Bus" "$work/relay.log" || { tail -20 "$work/relay.log"; fail "it did not unsubscribe"; }
log "ok: unsubscribed and stopped"
log "the relay enriches indicators from the real Threat Bus"
