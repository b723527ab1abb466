# syntax=docker/dockerfile:1
#
# The jobwire server as a container image. Not built in CI (no Docker engine there): build it
# with `docker build -t jobwire .` or `docker compose up --build` (see docker-compose.yml).
#
# Configuration is by environment only (every flag of `jobwire serve` has a JOBWIRE_* variable;
# `docker run --rm jobwire serve --help` lists them). The image listens on 0.0.0.0, so it needs
# tokens: mount a token file (`jobwire token create --file tokens.json ...`) and point
# JOBWIRE_AUTH_TOKENS at it; jobwire refuses to serve a non-loopback address without them,
# unless JOBWIRE_INSECURE_NO_AUTH=true says so explicitly. Give it JOBWIRE_REDIS_URL too: with
# the embedded Redis each replica would have a queue of its own.

ARG RUST_VERSION=1.89
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
# protoc comes from the protoc-bin-vendored crate, so the slim image needs nothing installed.
# The cache mounts keep the crate registry and the build between image builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin jobwire \
    && install -m 0755 target/release/jobwire /usr/local/bin/jobwire

# Same Debian release as the builder, so the binary finds the glibc it was linked against.
FROM debian:${DEBIAN_RELEASE}-slim
RUN groupadd --system --gid 10001 jobwire \
    && useradd --system --uid 10001 --gid jobwire --home-dir /var/lib/jobwire --create-home \
        --shell /usr/sbin/nologin jobwire
COPY --from=builder /usr/local/bin/jobwire /usr/local/bin/jobwire
# Numeric, so orchestrators can check runAsNonRoot without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/jobwire
ENV JOBWIRE_LISTEN=0.0.0.0:50051 \
    JOBWIRE_LOG=info
EXPOSE 50051
# `jobwire health` speaks grpc.health.v1 like grpc_health_probe: exit 0 only while SERVING, so
# the container turns unhealthy while Redis is unreachable or the server drains. It checks the
# port above: change both together.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["jobwire", "health", "--addr", "127.0.0.1:50051"]
# jobwire runs as PID 1 and handles SIGTERM itself: health NOT_SERVING, workers told to drain,
# acks accepted for --drain-grace (JOBWIRE_DRAIN_GRACE, default 30s), held jobs handed back.
# Give the container longer than the grace to stop (`docker run --stop-timeout 40`, compose
# `stop_grace_period`, Kubernetes `terminationGracePeriodSeconds`), or lower the grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["jobwire"]
CMD ["serve"]
