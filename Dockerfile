# Two-stage build: compile in the Rust image, run from a slim Debian image as a non-root user.
#   docker build -t pinot-proxy .
#   docker run --rm -p 8096:8096 pinot-proxy
# Mount a real config over /etc/pinot-proxy/pinot-proxy.toml for a cluster.

FROM rust:1-bookworm AS builder
WORKDIR /src
# Only what the release build reads. build.rs compiles proto/ and tests/proto/ with protox, a
# pure-Rust compiler, so no protoc is needed.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY tests/proto ./tests/proto
# Cargo.toml declares the benchmark target; its files must exist for the manifest to load.
COPY benches ./benches
COPY src ./src
RUN cargo build --release --locked --bin pinot-proxy

FROM debian:bookworm-slim
# System CA roots, for TLS to Pinot without a ca_file ([servers.tls], https REST URLs).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin pinot-proxy
COPY --from=builder /src/target/release/pinot-proxy /usr/local/bin/pinot-proxy
COPY config/container.toml /etc/pinot-proxy/pinot-proxy.toml
USER 10001:10001
EXPOSE 8096
ENTRYPOINT ["pinot-proxy"]
CMD ["--config", "/etc/pinot-proxy/pinot-proxy.toml"]
