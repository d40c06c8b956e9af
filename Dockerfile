# syntax=docker/dockerfile:1
# Two stages: compile in the Rust image, run from distroless (no shell, no package manager)
# as the non-root user 65532.
#   docker build -t pinot-proxy .
#   docker run --rm -p 8096:8096 -p 9091:9091 pinot-proxy
# Mount a real config over /etc/pinot-proxy/pinot-proxy.toml for a cluster; the Helm chart in
# deploy/helm/pinot-proxy does that from a ConfigMap.

FROM rust:1-slim-bookworm AS builder
WORKDIR /src
# Only what the release build reads. build.rs compiles proto/ and tests/proto/ with protox, a
# pure-Rust compiler, so no protoc is needed; ring needs the C compiler the image has.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY tests/proto ./tests/proto
# Cargo.toml declares the benchmark target; its files must exist for the manifest to load.
COPY benches ./benches
COPY src ./src
# The registry cache survives between builds (BuildKit); the binary stays in the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --bin pinot-proxy

# Debian 12 like the builder, so the binary's glibc matches; holds libgcc and the CA roots
# (/etc/ssl/certs) used for TLS to Pinot without a ca_file.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /src/target/release/pinot-proxy /usr/local/bin/pinot-proxy
COPY config/container.toml /etc/pinot-proxy/pinot-proxy.toml
# distroless's "nonroot" user; the Helm chart's runAsUser is the same.
USER 65532:65532
# 8096: gRPC and REST ([server] listen); 9091: health and metrics ([admin] listen).
EXPOSE 8096 9091
ENTRYPOINT ["/usr/local/bin/pinot-proxy"]
CMD ["--config", "/etc/pinot-proxy/pinot-proxy.toml"]
