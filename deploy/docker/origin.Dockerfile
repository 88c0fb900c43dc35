# syntax=docker/dockerfile:1
# The origin (and the flashgate CLI: tokens, `flashgate check`), built from the repository root:
#   docker build -f deploy/docker/origin.Dockerfile -t flashgate-origin .
# SQL is checked against .sqlx/ at build time (no database needed); librdkafka is built from
# source by rdkafka-sys.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p flashgate-origin -p flashgate-cli \
 && cp target/release/flashgate-origin target/release/flashgate /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/flashgate-origin /usr/local/bin/flashgate /usr/local/bin/
USER 10001:10001
ENV FLASHGATE_ORIGIN_LISTEN=0.0.0.0:8081
EXPOSE 8081
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s \
  CMD curl -fsS http://127.0.0.1:8081/health || exit 1
ENTRYPOINT ["flashgate-origin"]
