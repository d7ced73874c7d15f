#!/bin/sh
# The Rust target of the static binary for a Docker architecture name
# (TARGETARCH, or `dpkg --print-architecture`): amd64 or arm64.
#   scripts/rust-target.sh arm64    # aarch64-unknown-linux-musl
case "${1:-}" in
  amd64 | x86_64) echo x86_64-unknown-linux-musl ;;
  arm64 | aarch64) echo aarch64-unknown-linux-musl ;;
  *)
    echo "rust-target: unsupported architecture '${1:-}' (amd64 and arm64 are)" >&2
    exit 1
    ;;
esac
