# syntax=docker/dockerfile:1
#
# docker build -t ctr-relay:0.1.0 .
# docker run -p 9090:9090 -e SECRET_KEY=... ctr-relay:0.1.0
# docker run -p 127.0.0.1:9090:9090 ctr-relay:0.1.0 demo   # a first try, offline
# docker buildx build --platform linux/amd64,linux/arm64 -t ctr-relay:0.1.0 .
#
# Stage 1 builds one fully static binary (musl, rustls with built-in roots);
# stage 2 is an empty image holding that binary alone, run as a non-root user.

# The build stage runs on the platform being built for (amd64 or arm64: the
# rust image is multi-arch), so musl-gcc is native and nothing is cross-built.
# BuildKit sets TARGETARCH; without it, the build machine's architecture.
FROM rust:1.95-bookworm AS build
ARG TARGETARCH
COPY scripts/rust-target.sh /usr/local/bin/rust-target
RUN rust-target "${TARGETARCH:-$(dpkg --print-architecture)}" > /rust-target \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$(cat /rust-target)"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY .cargo ./.cargo
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(cat /rust-target)" \
 && cargo build --release --locked --target "$target" --bin ctr-relay \
 && install -D -m 0555 "target/$target/release/ctr-relay" /out/ctr-relay

FROM scratch
COPY --from=build /out/ctr-relay /ctr-relay
# No /etc/passwd is needed for a numeric user.
USER 65532:65532
# The allocator gives freed memory back to the system after 10 ms instead of
# its default 1 s, so resident memory follows the relay's bounds (the README's
# memory sizing and scripts/abuse-test.sh assume it).
ENV HOST=0.0.0.0 PORT=9090 MIMALLOC_PURGE_DELAY=10
EXPOSE 9090
# The relay stops gracefully on SIGTERM (in-flight requests finish, bounded by
# SHUTDOWN_GRACE_SECONDS, default 30).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=5s --retries=3 \
  CMD ["/ctr-relay", "healthcheck"]
ENTRYPOINT ["/ctr-relay"]
CMD ["serve"]
