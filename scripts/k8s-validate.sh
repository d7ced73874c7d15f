#!/usr/bin/env bash
# deploy/kubernetes.yaml against the Kubernetes schemas, strictly (unknown
# fields refused), for 1.30 and for kubernetes-validate's newest; the
# relay's readiness probe asks /readyz and its liveness probe /watchdog,
# with SHUTDOWN_DELAY_SECONDS set; its image tags are the
# version the README builds; the README points at the file rather than
# carrying a copy. kubernetes-validate comes from PyPI, into a venv.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

VENV=target/k8s-venv
if [ ! -x "$VENV/bin/kubernetes-validate" ]; then
  log "installing kubernetes-validate into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check kubernetes-validate
fi

manifest=deploy/kubernetes.yaml
for version in 1.30.0 ""; do
  "$VENV/bin/kubernetes-validate" --strict --quiet ${version:+-k "$version"} "$manifest" \
    || fail "$manifest does not validate against Kubernetes ${version:-(newest)}"
done
kinds=$(grep -E '^kind:' "$manifest" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}')
log "ok: $manifest validates strictly against Kubernetes 1.30 and the newest schemas (${kinds%, })"

# The relay's container (the first): readiness on /readyz, liveness on
# /watchdog, and a delay before the listener closes.
relay_spec=$(awk '/^kind: Deployment/{n++} n==1' "$manifest")
probe_path() { printf '%s\n' "$relay_spec" | grep -A3 "$1:" | sed -n 's/^ *path: *//p' | head -1; }
[ "$(probe_path readinessProbe)" = /readyz ] || fail "the relay's readiness probe does not ask /readyz"
[ "$(probe_path livenessProbe)" = /watchdog ] || fail "the relay's liveness probe does not ask /watchdog"
printf '%s\n' "$relay_spec" | grep -q 'name: SHUTDOWN_DELAY_SECONDS' \
  || fail "the relay's Deployment does not set SHUTDOWN_DELAY_SECONDS"
log "ok: readiness asks /readyz, liveness /watchdog, SHUTDOWN_DELAY_SECONDS is set"

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
tags=$(sed -n 's/^ *image: *//p' "$manifest" | sort -u)
[ "$tags" = "ctr-relay:$version" ] || fail "$manifest uses $tags, the README builds ctr-relay:$version"
grep -q "docker build -t ctr-relay:$version ." README.md || fail "the README does not build ctr-relay:$version"
log "ok: the image is ctr-relay:$version, as the README builds it"

if grep -qE '^(apiVersion|kind):' README.md; then
  fail "README.md carries a copy of a manifest: point at $manifest instead"
fi
log "ok: the README points at $manifest"
