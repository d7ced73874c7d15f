#!/usr/bin/env bash
# The supply-chain gate and the SBOM: `cargo deny check licenses bans
# sources` against deny.toml (installing cargo-deny from crates.io when
# missing), then a CycloneDX 1.5 SBOM of the release binary's crates
# (scripts/sbom.py), validated against the CycloneDX schema by
# cyclonedx-python-lib (from PyPI, into a venv). The advisories check is not
# run: it needs the RustSec advisory database, fetched from GitHub, which
# this network does not reach.
#
#   scripts/supply-chain.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

if ! cargo deny --version >/dev/null 2>&1; then
  log "installing cargo-deny (crates.io)"
  cargo install --locked -q cargo-deny
fi
log "$(cargo deny --version): licenses, bans, sources (deny.toml)"
cargo deny --locked check licenses bans sources \
  || fail "the dependency tree breaks deny.toml"

VENV=target/sbom-venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import cyclonedx, jsonschema' 2>/dev/null; then
  log "installing cyclonedx-python-lib into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'cyclonedx-python-lib[json-validation]'
fi
log "CycloneDX SBOM of the release binary (x86_64-unknown-linux-musl)"
"$VENV/bin/python" scripts/sbom.py --target x86_64-unknown-linux-musl \
  --output target/ctr-relay.cdx.json --check
