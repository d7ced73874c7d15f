#!/usr/bin/env bash
# Runs each cargo-fuzz target of fuzz/ briefly: request-body parsing and both
# providers' answer mapping must never panic. Installs cargo-fuzz when missing.
#
#   scripts/fuzz.sh                    # every target, 20 s each (as CI runs it)
#   FUZZ_SECONDS=600 scripts/fuzz.sh c1fapp_answer
#
# The build is unoptimized with overflow checks and no sanitizer: the relay
# forbids unsafe code, so what fuzzing can find is a panic (an index out of
# range, an overflow, an unwrap), and a debug build finds more of those per
# build minute. A crash leaves its input in fuzz/artifacts/<target>/ and fails
# the script; the corpus grows in fuzz/corpus/<target>/, seeded from
# fuzz/seeds/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=${FUZZ_SECONDS:-20}
# shellcheck source=scripts/lib.sh
source scripts/lib.sh

if ! cargo fuzz --version >/dev/null 2>&1; then
  log "installing cargo-fuzz"
  cargo install cargo-fuzz --locked --version 0.13.2
fi
# cargo-fuzz passes -Z flags to rustc. On a stable toolchain, RUSTC_BOOTSTRAP
# lets this one build use them (the relay itself is built with plain stable).
if ! rustc --version | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(request_body c1fapp_answer cyberscan_answer)
log "building the fuzz targets"
cargo fuzz build --dev --sanitizer none
for target in "${targets[@]}"; do
  log "fuzzing $target for $SECONDS_EACH s"
  mkdir -p "fuzz/corpus/$target"
  output=$(mktemp)
  status=0
  cargo fuzz run --dev --sanitizer none "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$SECONDS_EACH" >"$output" 2>&1 || status=$?
  grep -E '^Done|panicked|^SUMMARY|^artifact_prefix|Test unit written' "$output" || true
  if [ "$status" != 0 ]; then
    tail -40 "$output"
    echo "FAIL: $target crashed (input in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  rm -f "$output"
done
log "no target panicked"
